//! cluster: this node's ractor_cluster NodeServer (cookie-authenticated TCP between faxd nodes
//! and `faxd sup`, inside mutual TLS when `[cluster] tls_*` is set), and the client side used by `faxd sup` to run a maintenance command on a
//! running node. The NodeServer is spawned by fax_sup (permanent) under the name `cluster`;
//! a task beside it keeps the links to the configured seeds and logs members joining and
//! leaving.

use std::net::SocketAddr;
use std::time::Duration;

use faxd::config::ClusterSection;
use faxd::context::NodeContext;
use faxd::tls::{ClusterTls, TlsConnector};
use ractor::{Actor, ActorCell, ActorRef, SpawnErr};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{
    IncomingEncryptionMode, NodeEventSubscription, NodeServer, NodeServerMessage,
};
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

/// The cluster port's TLS from `[cluster]`, `None` when it is not configured.
pub fn cluster_tls(cfg: &ClusterSection) -> Result<Option<ClusterTls>, String> {
    match cfg.tls_files()? {
        Some(files) => ClusterTls::load(&files)
            .map(Some)
            .map_err(|e| e.to_string()),
        None => Ok(None),
    }
}

/// How this node opens a link to another: plain TCP, or TLS presenting its certificate
/// (the cookie handshake then runs inside TLS only).
#[derive(Clone)]
pub struct Dialer(pub Option<TlsConnector>);

impl Dialer {
    /// Opens a session with the node at `addr` (`host:port`).
    pub async fn dial(&self, node: &ActorRef<NodeServerMessage>, addr: &str) -> Result<(), String> {
        match &self.0 {
            None => ractor_cluster::client_connect(node, addr)
                .await
                .map_err(|e| e.to_string()),
            Some(connector) => {
                let name = faxd::tls::server_name(addr).map_err(|e| e.to_string())?;
                ractor_cluster::client_connect_enc(node, addr, connector.clone(), name)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
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
    let tls = cluster_tls(&ctx.config.cluster)
        .map_err(|e| SpawnErr::StartupFailed(e.to_string().into()))?;
    let (name, host) = name_and_host(ctx.node());
    // The NodeServer's own listener: an ephemeral port, announced nowhere (the door is the
    // cluster port); with TLS it accepts TLS only, like the door.
    let incoming = tls
        .as_ref()
        .map(|t| IncomingEncryptionMode::Tls(t.acceptor.clone()));
    let server =
        NodeServer::new(0, cookie, name, host, incoming, None).with_listen_addr(listen.ip());
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
        tls: tls.as_ref().map(|t| t.acceptor.clone()),
    };
    if let Err(e) = Actor::spawn_linked(None, ClusterDoor, door, node.get_cell()).await {
        node.stop(Some("cluster door failed to start".into()));
        return Err(e);
    }
    let (tx, rx) = mpsc::unbounded_channel();
    node.cast(NodeServerMessage::SubscribeToEvents {
        id: "faxd-members".into(),
        subscription: Box::new(Members(tx)),
    })
    .map_err(|e| SpawnErr::StartupFailed(format!("cluster events: {e}").into()))?;
    // Ends with the NodeServer (its subscription, the sending side, goes with it).
    let tls_on = tls.is_some();
    let dialer = Dialer(tls.map(|t| t.connector));
    tokio::spawn(keep_seeds(node.clone(), cfg.seeds.clone(), rx, dialer));
    tracing::info!(%listen, tls = tls_on, "cluster node listening");
    Ok(node.get_cell())
}

/// Name prefix of the short-lived cluster nodes of `faxd sup` (not members).
const SUP_PREFIX: &str = "faxd-sup-";

/// Backoff between dials of a seed that does not answer: 100 ms doubling to 30 s.
fn seed_backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(9))).min(Duration::from_secs(30))
}

/// A session event as the seed keeper and `faxd sup` see it: the peer's name (once known) and
/// address.
#[derive(Debug)]
enum MemberEvent {
    Up { name: Option<String>, addr: String },
    Down { name: Option<String>, addr: String },
}

struct Members(mpsc::UnboundedSender<MemberEvent>);

fn peer(ses: &NodeServerSessionInformation) -> (Option<String>, String) {
    (
        ses.peer_name.as_ref().map(|n| n.name.clone()),
        ses.peer_addr.clone(),
    )
}

impl NodeEventSubscription for Members {
    fn node_session_opened(&self, _ses: NodeServerSessionInformation) {}
    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let (name, addr) = peer(&ses);
        let _ = self.0.send(MemberEvent::Down { name, addr });
    }
    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        let (name, addr) = peer(&ses);
        let _ = self.0.send(MemberEvent::Up { name, addr });
    }
}

/// One configured seed: its addresses (resolved at each dial), the member name learned from
/// a session to it, and when to dial it next.
struct Seed {
    addr: String,
    resolved: Vec<SocketAddr>,
    name: Option<String>,
    attempt: u32,
    next: tokio::time::Instant,
}

/// Keeps this node linked to its seeds: dials every seed until a session to it is up, again
/// with backoff while it does not answer (it may start after this node), and again after its
/// session drops; a seed that dialled this node first counts as linked. Logs every member
/// that joins or leaves.
async fn keep_seeds(
    node: ActorRef<NodeServerMessage>,
    seeds: Vec<String>,
    mut events: mpsc::UnboundedReceiver<MemberEvent>,
    dialer: Dialer,
) {
    let now = tokio::time::Instant::now();
    let mut seeds: Vec<Seed> = seeds
        .into_iter()
        .map(|addr| Seed {
            addr,
            resolved: vec![],
            name: None,
            attempt: 0,
            next: now,
        })
        .collect();
    // Member name → open sessions with it.
    let mut members: std::collections::HashMap<String, usize> = Default::default();
    let gauge = &faxd::metrics::global().cluster_members;
    gauge.store(1, std::sync::atomic::Ordering::Relaxed);
    loop {
        let now = tokio::time::Instant::now();
        for seed in seeds.iter_mut() {
            let linked = seed
                .name
                .as_ref()
                .is_some_and(|n| members.get(n).is_some_and(|c| *c > 0));
            if linked || seed.next > now {
                continue;
            }
            seed.attempt = seed.attempt.saturating_add(1);
            seed.next = now + seed_backoff(seed.attempt);
            if let Ok(addrs) = tokio::net::lookup_host(seed.addr.as_str()).await {
                seed.resolved = addrs.collect();
            }
            if let Err(e) = dialer.dial(&node, seed.addr.as_str()).await
                && (seed.attempt == 1 || seed.attempt % 10 == 0)
            {
                tracing::warn!(seed = %seed.addr, error = %e, retry_in = ?seed_backoff(seed.attempt),
                               "cannot reach cluster seed");
            }
        }
        let wake = seeds
            .iter()
            .map(|s| s.next)
            .min()
            .unwrap_or(now + Duration::from_secs(3600));
        let event = tokio::select! {
            e = events.recv() => match e {
                Some(e) => e,
                None => return,
            },
            _ = tokio::time::sleep_until(wake) => continue,
        };
        let (up, name, addr) = match event {
            MemberEvent::Up { name, addr } => (true, name, addr),
            MemberEvent::Down { name, addr } => (false, name, addr),
        };
        let Some(name) = name else { continue };
        if name.starts_with(SUP_PREFIX) {
            continue;
        }
        // The seed this session went to: learn its member name.
        let seed = seeds.iter_mut().find(|s| {
            s.addr == addr
                || addr
                    .parse::<SocketAddr>()
                    .is_ok_and(|a| s.resolved.contains(&a))
        });
        if let Some(seed) = seed {
            seed.name = Some(name.clone());
        }
        let count = members.entry(name.clone()).or_insert(0);
        if up {
            *count += 1;
            if *count == 1 {
                tracing::info!(member = %name, %addr, "cluster member joined");
            }
            for s in seeds
                .iter_mut()
                .filter(|s| s.name.as_deref() == Some(name.as_str()))
            {
                s.attempt = 0;
            }
        } else {
            *count = count.saturating_sub(1);
            if *count == 0 {
                members.remove(&name);
                tracing::warn!(member = %name, %addr, "cluster member left");
                // Its seed is dialled again at once, then with backoff.
                for s in seeds
                    .iter_mut()
                    .filter(|s| s.name.as_deref() == Some(name.as_str()))
                {
                    s.next = tokio::time::Instant::now();
                }
            }
        }
        let seen = i64::try_from(members.len()).unwrap_or(i64::MAX);
        gauge.store(seen.saturating_add(1), std::sync::atomic::Ordering::Relaxed);
    }
}

/// The cluster members this node has a session with (names; `faxd sup` clients left out),
/// sorted.
pub async fn members() -> Vec<String> {
    let Some(cell) = ractor::registry::where_is(CLUSTER) else {
        return vec![];
    };
    let node: ActorRef<NodeServerMessage> = cell.into();
    let Ok(sessions) = ractor::call_t!(node, NodeServerMessage::GetSessions, 2000) else {
        return vec![];
    };
    let mut names: Vec<String> = sessions
        .values()
        .filter_map(|s| s.peer_name.as_ref().map(|n| n.name.clone()))
        .filter(|n| !n.starts_with(SUP_PREFIX))
        .collect();
    names.sort();
    names.dedup();
    names
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

/// Connects to the node at `addr` with `cookie`, runs `args` on its fax_maintenance, and
/// returns the reply. Everything is bounded by `timeout`.
pub async fn run_remote(
    addr: &str,
    cookie: &str,
    dialer: &Dialer,
    args: Vec<String>,
    timeout: Duration,
) -> Result<SupReply, SupError> {
    let server = NodeServer::new(
        0,
        cookie.to_string(),
        format!("{SUP_PREFIX}{}", std::process::id()),
        "localhost".to_string(),
        None,
        None,
    )
    .with_listen_addr(std::net::Ipv4Addr::LOCALHOST.into());
    let (node, handle) = Actor::spawn(None, server, ())
        .await
        .map_err(|e| SupError::Local(e.to_string()))?;
    let result = run_on(&node, addr, dialer, args, timeout).await;
    node.stop(None);
    let _ = handle.await;
    result
}

async fn run_on(
    node: &ActorRef<NodeServerMessage>,
    addr: &str,
    dialer: &Dialer,
    args: Vec<String>,
    timeout: Duration,
) -> Result<SupReply, SupError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let (tx, mut rx) = mpsc::unbounded_channel();
    node.cast(NodeServerMessage::SubscribeToEvents {
        id: "faxd-sup".into(),
        subscription: Box::new(Members(tx)),
    })
    .map_err(|e| SupError::Local(e.to_string()))?;
    dialer
        .dial(node, addr)
        .await
        .map_err(|reason| SupError::Unreachable {
            addr: addr.to_string(),
            reason,
        })?;
    match tokio::time::timeout_at(deadline, rx.recv()).await {
        Ok(Some(MemberEvent::Up { .. })) => {}
        Ok(Some(MemberEvent::Down { .. })) | Ok(None) => {
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
        if let Ok(Some(MemberEvent::Down { .. })) =
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
