//! file_proxy: serves the cached fax documents to media engines over HTTP (replaces Kazoo's
//! `fax_file_proxy` cowboy handler): `GET /fax/<job_id>/<token>.tiff`, only for jobs a
//! fax_worker registered in the node's `FileRegistry` (`NodeContext::files`) and only to the
//! addresses in `[file_proxy] allowed`; 404 otherwise. Port: `[file_proxy] port`, else the fax
//! config's `port` (30950). Spawned by fax_sup after `cluster`, permanent; it stops the HTTP
//! server in `post_stop` and fails (so fax_sup restarts it) if the server ends by itself.

use std::net::TcpListener;

use faxd::context::NodeContext;
use faxd::gateway::file_proxy::{self, AllowList};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::http_server::RunningServer;

/// Messages of the file_proxy.
#[derive(Debug)]
pub enum FileProxyMsg {
    /// The HTTP server future finished (it never should while the actor runs).
    Exited(String),
}

impl ractor::Message for FileProxyMsg {}

pub struct FileProxy;

/// The address the file proxy listens on for this node.
pub fn listen_addr(ctx: &NodeContext) -> String {
    let cfg = &ctx.config.file_proxy;
    let port = if cfg.port == 0 {
        ctx.sysconf.fax().port
    } else {
        cfg.port
    };
    if cfg.listen_ip.contains(':') {
        format!("[{}]:{port}", cfg.listen_ip)
    } else {
        format!("{}:{port}", cfg.listen_ip)
    }
}

#[ractor::async_trait]
impl Actor for FileProxy {
    type Msg = FileProxyMsg;
    type State = RunningServer;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        let allow = AllowList::parse(&ctx.config.file_proxy.allowed)
            .map_err(|e| format!("file_proxy: allowed: {e}"))?;
        let listen = listen_addr(&ctx);
        let listener = TcpListener::bind(&listen)
            .map_err(|e| format!("file_proxy cannot listen on {listen}: {e}"))?;
        let server = file_proxy::server(ctx.files.clone(), allow, listener)?;
        let running = RunningServer::start(server, myself, FileProxyMsg::Exited);
        tracing::info!(%listen, "file_proxy listening");
        Ok(running)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            FileProxyMsg::Exited(why) => Err(why.into()),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.stop().await;
        tracing::info!("file_proxy stopped");
        Ok(())
    }
}
