//! The FreeSWITCH media engine's processes (DESIGN.md §1, gateway_sup): `fs_node` runs the
//! event socket to one node (connect, subscribe, reconnect with backoff: [`Node::run`]), and
//! `fs_socket` accepts the incoming fax calls the dialplan's `socket` application hands over
//! ([`socket::serve`]). Both own a task that should never end while they run: if it does
//! (a panic), the actor fails and gateway_sup restarts it. Stopping the actor stops the task
//! (`fs_node` says `exit` to its node).

use std::sync::Arc;

use faxd::gateway::InboundSink;
use faxd::gateway::freeswitch::link::Node;
use faxd::gateway::freeswitch::socket::{self, SocketConfig};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Messages of both actors.
#[derive(Debug)]
pub enum EngineMsg {
    /// The owned task ended (it never should while the actor runs).
    Exited(String),
}

impl ractor::Message for EngineMsg {}

/// A task with its stop signal: stopped (and waited for, bounded) in `post_stop`.
pub struct Running {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    fn start<F>(myself: ActorRef<EngineMsg>, what: &'static str, run: F) -> Self
    where
        F: FnOnce(watch::Receiver<bool>) -> JoinHandle<()>,
    {
        let (stop, stopped) = watch::channel(false);
        let inner = run(stopped);
        let task = tokio::spawn(async move {
            let why = match inner.await {
                Ok(()) => format!("{what} ended"),
                Err(e) => format!("{what} failed: {e}"),
            };
            let _ = myself.cast(EngineMsg::Exited(why));
        });
        Self {
            stop,
            task: Some(task),
        }
    }

    /// The owned task ended: a failure (the actor is restarted) unless it was told to stop.
    fn exited(&self, msg: EngineMsg) -> Result<(), ActorProcessingErr> {
        match msg {
            EngineMsg::Exited(why) if !*self.stop.borrow() => Err(why.into()),
            EngineMsg::Exited(_) => Ok(()),
        }
    }

    async fn stop(&mut self) {
        self.stop.send_replace(true);
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(std::time::Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

/// `fs_node_<n>`: the event socket to one FreeSWITCH node.
pub struct FsNode;

#[ractor::async_trait]
impl Actor for FsNode {
    type Msg = EngineMsg;
    type State = (Running, Arc<Node>);
    type Arguments = Arc<Node>;

    async fn pre_start(
        &self,
        myself: ActorRef<EngineMsg>,
        node: Arc<Node>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let n = node.clone();
        let running = Running::start(myself, "event socket loop", move |stop| {
            tokio::spawn(n.run(stop))
        });
        Ok((running, node))
    }

    async fn handle(
        &self,
        _myself: ActorRef<EngineMsg>,
        msg: EngineMsg,
        (running, _): &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        running.exited(msg)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<EngineMsg>,
        (running, node): &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        running.stop.send_replace(true);
        // Let the loop say `exit` before it is cut.
        let mut health = node.subscribe();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            health.wait_for(|h| !h.connected),
        )
        .await;
        running.stop().await;
        Ok(())
    }
}

/// What `fs_socket` needs.
#[derive(Clone)]
pub struct SocketArgs {
    pub listen: String,
    pub config: SocketConfig,
    pub sink: InboundSink,
}

/// `fs_socket`: the listener for the dialplan's `socket` connections.
pub struct FsSocket;

#[ractor::async_trait]
impl Actor for FsSocket {
    type Msg = EngineMsg;
    type State = Running;
    type Arguments = SocketArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<EngineMsg>,
        args: SocketArgs,
    ) -> Result<Running, ActorProcessingErr> {
        // Not private: FreeSWITCH's user writes here (rel/freeswitch/README.md).
        tokio::fs::create_dir_all(&args.config.spool)
            .await
            .map_err(|e| format!("cannot create {}: {e}", args.config.spool.display()))?;
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .map_err(|e| format!("fs_socket cannot listen on {}: {e}", args.listen))?;
        tracing::info!(listen = %args.listen, spool = %args.config.spool.display(),
                       "listening for FreeSWITCH's incoming fax calls");
        Ok(Running::start(
            myself,
            "inbound socket listener",
            move |stop| tokio::spawn(socket::serve(listener, args.config, args.sink, stop)),
        ))
    }

    async fn handle(
        &self,
        _myself: ActorRef<EngineMsg>,
        msg: EngineMsg,
        running: &mut Running,
    ) -> Result<(), ActorProcessingErr> {
        running.exited(msg)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<EngineMsg>,
        running: &mut Running,
    ) -> Result<(), ActorProcessingErr> {
        running.stop().await;
        Ok(())
    }
}
