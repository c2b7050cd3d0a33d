//! cluster_door: the cluster port's listener. It accepts connections itself (backing off when
//! accepting fails, e.g. with EMFILE, instead of retrying at once), admits at most
//! `max_connections_per_address` per address and `max_connections` in all, hands the admitted
//! ones to the NodeServer, and closes every session that has not authenticated within
//! `handshake_timeout_s`. With `[cluster] tls_*` set, each admitted connection first
//! completes mutual TLS (within the same time) and only then reaches the NodeServer, so the
//! cookie handshake never runs in the clear. It stands where Erlang's distribution listener (epmd/inet_tcp_dist)
//! stands for Kazoo. Spawned by `cluster::spawn_node`, linked to the NodeServer and never
//! restarted on its own: it ends with the NodeServer (which fax_sup restarts, permanent), and
//! its accept task is aborted however it ends.
//!
//! The NodeServer keeps a listener of its own (ractor_cluster has no way to go without one);
//! it is bound to an ephemeral port of the same address that is announced nowhere, and the
//! sessions that come through it are held to the same handshake deadline and limits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use faxd::conn_limit::{ConnLimiter, Slot};
use faxd::log_throttle::Throttle;
use faxd::tls::TlsAcceptor;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NetworkStream, NodeEventSubscription, NodeServerMessage, NodeSessionMessage};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Accept errors are logged at most this often.
static ACCEPT_ERROR_LOG: Throttle = Throttle::new(Duration::from_secs(10), 3);
/// Refused and timed-out connections are logged at most this often.
static REFUSED_LOG: Throttle = Throttle::new(Duration::from_secs(10), 5);

/// Shortest and longest pause after a failed accept.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The door's limits (from `[cluster]`).
#[derive(Clone, Debug)]
pub struct DoorLimits {
    pub handshake_timeout: Duration,
    pub per_address: usize,
    pub total: usize,
}

/// Messages of the cluster door.
pub enum DoorMsg {
    /// The accept task took a connection.
    Accepted(TcpStream, SocketAddr),
    /// The NodeServer started a session.
    Opened(NodeServerSessionInformation),
    /// A session passed the cookie handshake.
    Authenticated(ActorId),
    /// A session ended.
    Closed(ActorId),
    /// A session's handshake time is up.
    HandshakeDeadline(ActorId),
}

impl ractor::Message for DoorMsg {}

pub struct ClusterDoor;

/// The door's arguments: its bound listener, the NodeServer, the limits.
pub struct DoorArgs {
    pub listener: std::net::TcpListener,
    pub node: ActorRef<NodeServerMessage>,
    pub limits: DoorLimits,
    /// Mutual TLS (`[cluster] tls_*`): every admitted connection completes a TLS handshake
    /// within the handshake time before the NodeServer sees a byte of it.
    pub tls: Option<TlsAcceptor>,
}

struct Session {
    actor: ActorRef<NodeSessionMessage>,
    authenticated: bool,
    /// Its place among the incoming connections (outgoing sessions take none).
    _slot: Option<Slot>,
}

pub struct DoorState {
    node: ActorRef<NodeServerMessage>,
    limits: DoorLimits,
    tls: Option<TlsAcceptor>,
    limiter: ConnLimiter,
    /// Admitted connections handed to the NodeServer whose session has not opened yet, and
    /// when they were handed (a place is freed if no session opens within the handshake
    /// time).
    handed: HashMap<SocketAddr, (Slot, Instant)>,
    sessions: HashMap<ActorId, Session>,
    accept_task: AcceptTask,
}

/// The accept task, aborted (and the port closed) when the door ends however it ends.
struct AcceptTask(Option<JoinHandle<()>>);

impl Drop for AcceptTask {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Forwards the NodeServer's session events to the door.
struct Events(ActorRef<DoorMsg>);

impl NodeEventSubscription for Events {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.cast(DoorMsg::Opened(ses));
    }
    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.cast(DoorMsg::Closed(ses.actor.get_id()));
    }
    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.cast(DoorMsg::Authenticated(ses.actor.get_id()));
    }
}

/// Accepts connections on `listener` and gives each to `take` until it returns `false`.
/// After a failed accept (EMFILE when the descriptor table is full) it waits, 10 ms doubling
/// up to 1 s, instead of retrying at once, and logs at most three lines per 10 s.
pub async fn accept_with_backoff(
    listener: &TcpListener,
    mut take: impl FnMut(TcpStream, SocketAddr) -> bool,
) {
    let mut backoff = Duration::ZERO;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff = Duration::ZERO;
                if !take(stream, peer) {
                    return;
                }
            }
            Err(e) => {
                backoff = (backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                if let Some(unlogged) = ACCEPT_ERROR_LOG.check() {
                    tracing::warn!(error = %e, retry_in = ?backoff, unlogged,
                        "cluster port cannot accept a connection");
                }
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, door: ActorRef<DoorMsg>) {
    accept_with_backoff(&listener, |stream, peer| {
        door.cast(DoorMsg::Accepted(stream, peer)).is_ok()
    })
    .await;
}

#[ractor::async_trait]
impl Actor for ClusterDoor {
    type Msg = DoorMsg;
    type State = DoorState;
    type Arguments = DoorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: DoorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        args.listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(args.listener)?;
        args.node.cast(NodeServerMessage::SubscribeToEvents {
            id: "cluster_door".into(),
            subscription: Box::new(Events(myself.clone())),
        })?;
        let accept_task = tokio::spawn(accept_loop(listener, myself));
        Ok(DoorState {
            node: args.node,
            tls: args.tls,
            limiter: ConnLimiter::new(args.limits.per_address, args.limits.total),
            limits: args.limits,
            handed: HashMap::new(),
            sessions: HashMap::new(),
            accept_task: AcceptTask(Some(accept_task)),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DoorMsg::Accepted(stream, peer) => state.accepted(stream, peer),
            DoorMsg::Opened(ses) => state.opened(&myself, ses),
            DoorMsg::Authenticated(id) => {
                if let Some(s) = state.sessions.get_mut(&id) {
                    s.authenticated = true;
                }
            }
            DoorMsg::Closed(id) => {
                state.sessions.remove(&id);
            }
            DoorMsg::HandshakeDeadline(id) => {
                if let Some(s) = state.sessions.get(&id)
                    && !s.authenticated
                {
                    if let Some(unlogged) = REFUSED_LOG.check() {
                        tracing::warn!(unlogged, timeout = ?state.limits.handshake_timeout,
                            "cluster connection closed: no handshake in time");
                    }
                    s.actor.stop(Some("cluster handshake timed out".into()));
                    state.sessions.remove(&id);
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(task) = state.accept_task.0.take() {
            task.abort();
            let _ = task.await;
        }
        let _ = state.node.cast(NodeServerMessage::UnsubscribeToEvents(
            "cluster_door".into(),
        ));
        Ok(())
    }
}

impl DoorState {
    fn accepted(&mut self, stream: TcpStream, peer: SocketAddr) {
        let now = Instant::now();
        let stale = self.limits.handshake_timeout;
        self.handed
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < stale);
        let slot = match self.limiter.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                if let Some(unlogged) = REFUSED_LOG.check() {
                    tracing::warn!(peer = %peer.ip(), reason = ?why, unlogged,
                        "cluster connection refused: too many connections");
                }
                return;
            }
        };
        let Ok(local) = stream.local_addr() else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let Some(acceptor) = self.tls.clone() else {
            let opened = NodeServerMessage::ConnectionOpened {
                stream: Box::new(NetworkStream::Raw {
                    peer_addr: peer,
                    local_addr: local,
                    stream,
                }),
                is_server: true,
            };
            if self.node.cast(opened).is_ok() {
                self.handed.insert(peer, (slot, now));
            }
            return;
        };
        // The TLS handshake runs in a task of its own (bounded by the handshake time and
        // by the connection limits, whose place it holds in `handed`), never in the door.
        self.handed.insert(peer, (slot, now));
        let node = self.node.clone();
        let deadline = self.limits.handshake_timeout;
        tokio::spawn(async move {
            match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let _ = node.cast(NodeServerMessage::ConnectionOpened {
                        stream: Box::new(NetworkStream::TlsServer {
                            peer_addr: peer,
                            local_addr: local,
                            stream,
                        }),
                        is_server: true,
                    });
                }
                Ok(Err(e)) => {
                    if let Some(unlogged) = REFUSED_LOG.check() {
                        tracing::warn!(peer = %peer.ip(), error = %e, unlogged,
                            "cluster connection refused: TLS handshake failed");
                    }
                }
                Err(_) => {
                    if let Some(unlogged) = REFUSED_LOG.check() {
                        tracing::warn!(peer = %peer.ip(), timeout = ?deadline, unlogged,
                            "cluster connection closed: no TLS handshake in time");
                    }
                }
            }
        });
    }

    fn opened(&mut self, myself: &ActorRef<DoorMsg>, ses: NodeServerSessionInformation) {
        let peer: Option<SocketAddr> = ses.peer_addr.parse().ok();
        let mut slot = peer.and_then(|p| self.handed.remove(&p)).map(|(s, _)| s);
        if slot.is_none() && ses.is_server {
            // Came through the NodeServer's own listener: the same limits apply.
            match peer.map(|p| self.limiter.admit(p.ip())) {
                Some(Ok(s)) => slot = Some(s),
                _ => {
                    if let Some(unlogged) = REFUSED_LOG.check() {
                        tracing::warn!(peer = %ses.peer_addr, unlogged,
                            "cluster connection refused: too many connections");
                    }
                    ses.actor.stop(Some("too many cluster connections".into()));
                    return;
                }
            }
        }
        let id = ses.actor.get_id();
        self.sessions.insert(
            id,
            Session {
                actor: ses.actor,
                authenticated: false,
                _slot: slot,
            },
        );
        myself.send_after(self.limits.handshake_timeout, move || {
            DoorMsg::HandshakeDeadline(id)
        });
    }
}
