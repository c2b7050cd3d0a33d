//! cluster: this node's ractor_cluster NodeServer (cookie-authenticated TCP between faxd nodes
//! and `faxd sup`), and the client side used by `faxd sup` to run a maintenance command on a
//! running node. The NodeServer is spawned by fax_sup (permanent) under the name `cluster`.

use std::net::SocketAddr;
use std::time::Duration;

use faxd::context::NodeContext;
use ractor::{Actor, ActorCell, ActorRef, SpawnErr};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage};
use tokio::sync::mpsc;

use crate::cluster_door::{ClusterDoor, DoorArgs, DoorLimits};
use crate::fax_maintenance::{MAINTENANCE_GROUP, MaintenanceMsg, SupReply};

/// Registered name of the NodeServer.
pub const CLUSTER: &str = "cluster";

/// Splits `faxd@host` into (name, host).
fn name_and_host(node: &str) -> (String, String) {
    match node.split_once('@') {
        Some((n, h)) => (n.to_string(), h.to_string()),
        None => (node.to_string(), "localhost".to_string()),
    }
}

/// Starts the NodeServer linked to `sup` and its door on the cluster port (see
/// [`crate::cluster_door`]), then connects to the configured seeds.
pub async fn spawn_node(ctx: NodeContext, sup: ActorCell) -> Result<ActorCell, SpawnErr> {
    let cfg = &ctx.config.cluster;
    let listen: SocketAddr = cfg.listen.parse().map_err(|e| {
        SpawnErr::StartupFailed(format!("[cluster] listen '{}': {e}", cfg.listen).into())
    })?;
    // Bound before anything starts, so that a taken port fails the start.
    let door_listener = std::net::TcpListener::bind(listen).map_err(|e| {
        SpawnErr::StartupFailed(format!("cluster cannot listen on {listen}: {e}").into())
    })?;
    let cookie = ctx
        .config
        .cookie(true)
        .map_err(|e| SpawnErr::StartupFailed(e.to_string().into()))?;
    let (name, host) = name_and_host(ctx.node());
    // The NodeServer's own listener: an ephemeral port, announced nowhere (the door is the
    // cluster port).
    let server = NodeServer::new(0, cookie, name, host, None, None).with_listen_addr(listen.ip());
    let (node, _) = Actor::spawn_linked(Some(CLUSTER.to_string()), server, (), sup).await?;
    let limits = DoorLimits {
        handshake_timeout: Duration::from_secs(cfg.handshake_timeout_s.max(1)),
        per_address: cfg.max_connections_per_address,
        total: faxd::conn_limit::fd_budget(cfg.max_connections, 0.25),
    };
    let door = DoorArgs {
        listener: door_listener,
        node: node.clone(),
        limits,
    };
    if let Err(e) = Actor::spawn_linked(None, ClusterDoor, door, node.get_cell()).await {
        node.stop(Some("cluster door failed to start".into()));
        return Err(e);
    }
    for seed in &cfg.seeds {
        if let Err(e) = ractor_cluster::client_connect(&node, seed.as_str()).await {
            tracing::warn!(%seed, error = %e, "cannot reach cluster seed");
        }
    }
    tracing::info!(%listen, "cluster node listening");
    Ok(node.get_cell())
}

/// Why a remote maintenance command could not run.
#[derive(Debug, thiserror::Error)]
pub enum SupError {
    #[error("cannot reach faxd at {addr}: {reason} (is `faxd serve` running there?)")]
    Unreachable { addr: String, reason: String },
    #[error(
        "faxd at {0} refused the cluster cookie: check [cluster] cookie / the data directory's cookie file"
    )]
    BadCookie(String),
    #[error("no answer from faxd at {0} within {1:?}")]
    Timeout(String, Duration),
    #[error("local cluster node failed: {0}")]
    Local(String),
}

#[derive(Debug)]
enum SessionEvent {
    Authenticated,
    Disconnected,
}

struct Events(mpsc::UnboundedSender<SessionEvent>);

impl NodeEventSubscription for Events {
    fn node_session_opened(&self, _ses: NodeServerSessionInformation) {}
    fn node_session_disconnected(&self, _ses: NodeServerSessionInformation) {
        let _ = self.0.send(SessionEvent::Disconnected);
    }
    fn node_session_authenticated(&self, _ses: NodeServerSessionInformation) {
        let _ = self.0.send(SessionEvent::Authenticated);
    }
}

/// Connects to the node at `addr` with `cookie`, runs `args` on its fax_maintenance, and
/// returns the reply. Everything is bounded by `timeout`.
pub async fn run_remote(
    addr: &str,
    cookie: &str,
    args: Vec<String>,
    timeout: Duration,
) -> Result<SupReply, SupError> {
    let server = NodeServer::new(
        0,
        cookie.to_string(),
        format!("faxd-sup-{}", std::process::id()),
        "localhost".to_string(),
        None,
        None,
    )
    .with_listen_addr(std::net::Ipv4Addr::LOCALHOST.into());
    let (node, handle) = Actor::spawn(None, server, ())
        .await
        .map_err(|e| SupError::Local(e.to_string()))?;
    let result = run_on(&node, addr, args, timeout).await;
    node.stop(None);
    let _ = handle.await;
    result
}

async fn run_on(
    node: &ActorRef<NodeServerMessage>,
    addr: &str,
    args: Vec<String>,
    timeout: Duration,
) -> Result<SupReply, SupError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let (tx, mut rx) = mpsc::unbounded_channel();
    node.cast(NodeServerMessage::SubscribeToEvents {
        id: "faxd-sup".into(),
        subscription: Box::new(Events(tx)),
    })
    .map_err(|e| SupError::Local(e.to_string()))?;
    ractor_cluster::client_connect(node, addr)
        .await
        .map_err(|e| SupError::Unreachable {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
    match tokio::time::timeout_at(deadline, rx.recv()).await {
        Ok(Some(SessionEvent::Authenticated)) => {}
        Ok(Some(SessionEvent::Disconnected)) | Ok(None) => {
            return Err(SupError::BadCookie(addr.to_string()));
        }
        Err(_) => return Err(SupError::Timeout(addr.to_string(), timeout)),
    }
    // The node announces its maintenance process through the process group.
    let member = loop {
        let remote = ractor::pg::get_members(&MAINTENANCE_GROUP.to_string())
            .into_iter()
            .find(|c| !c.get_id().is_local());
        if let Some(m) = remote {
            break m;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SupError::Timeout(addr.to_string(), timeout));
        }
        if let Ok(Some(SessionEvent::Disconnected)) =
            tokio::time::timeout(Duration::from_millis(20), rx.recv()).await
        {
            return Err(SupError::Unreachable {
                addr: addr.to_string(),
                reason: "connection closed".into(),
            });
        }
    };
    let target: ActorRef<MaintenanceMsg> = member.into();
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    match target
        .call(|reply| MaintenanceMsg::Run(args, reply), Some(left))
        .await
    {
        Ok(ractor::rpc::CallResult::Success(reply)) => Ok(reply),
        Ok(ractor::rpc::CallResult::Timeout) => Err(SupError::Timeout(addr.to_string(), timeout)),
        Ok(ractor::rpc::CallResult::SenderError) => Err(SupError::Unreachable {
            addr: addr.to_string(),
            reason: "the node dropped the request".into(),
        }),
        Err(e) => Err(SupError::Unreachable {
            addr: addr.to_string(),
            reason: e.to_string(),
        }),
    }
}
