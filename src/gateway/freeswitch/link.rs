//! The event socket to one FreeSWITCH node (inbound mode: faxd connects to the node's
//! `mod_event_socket`). A [`Node`] is shared by the gateway (which places calls through it)
//! and by the supervised actor that runs its connection loop ([`Node::run`]): connect,
//! `auth`, subscribe, then one reply per command in order, events routed to the calls and
//! `bgapi` jobs waiting for them, an `api status` heartbeat, and on any failure a reconnect
//! with backoff.
//!
//! Every socket operation has a deadline: a node that stops answering (the heartbeat goes
//! unanswered) is dropped like a node that closed the socket. When the link drops, every call
//! placed through it ends at once for faxd (its event channel closes), and the calls'
//! channels are killed on the node as soon as the link is back, so a retried job is never
//! transmitted twice at the same time.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, timeout};

use super::super::esl::{Command, Decoder, Event, EventFormat, Frame, Limits, Reply};

/// Time to connect, and to get each reply of the handshake.
const HANDSHAKE: Duration = Duration::from_secs(5);
/// Time a write may take.
const WRITE: Duration = Duration::from_secs(5);
/// An `api status` is sent this often; the node is dropped when one is not answered within
/// another period.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// Reconnect delays: 100 ms doubling up to 5 s.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What the node connection subscribes to (spec §1.3): job results, the call's life, and
/// mod_spandsp's reports of the sending side.
pub const SUBSCRIPTION: [&str; 4] = [
    "BACKGROUND_JOB",
    "CHANNEL_ANSWER",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_EXECUTE_COMPLETE",
];
pub const SPANDSP_TX: [&str; 3] = [
    "spandsp::txfaxnegociateresult",
    "spandsp::txfaxpageresult",
    "spandsp::txfaxresult",
];

/// Why a command through the link failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("FreeSWITCH node {0} is not connected")]
    NotConnected(String),
    #[error("FreeSWITCH node {0}: no answer in time")]
    Timeout(String),
    #[error("FreeSWITCH node {0}: connection lost")]
    Lost(String),
    #[error("FreeSWITCH node {node}: {text}")]
    Refused { node: String, text: String },
    #[error("cannot encode the command: {0}")]
    Encode(String),
}

/// A node's health, for `faxd_maintenance status` and `/healthz`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodeHealth {
    pub node: String,
    pub connected: bool,
    /// Unix ms of the last connect or disconnect.
    pub since_ms: i64,
    /// Why the last connection ended or failed (empty if none did).
    pub last_error: String,
    /// Calls in progress through this node.
    pub calls: usize,
    pub reconnects: u64,
}

/// A command waiting for its reply.
type ReplyTx = oneshot::Sender<Reply>;

struct Outgoing {
    bytes: Vec<u8>,
    reply: ReplyTx,
}

/// Where a BACKGROUND_JOB goes.
enum JobRoute {
    /// Someone awaits it ([`Node::bgapi`]).
    Waiter(oneshot::Sender<Event>),
    /// It is the originate of a call: the call's event channel gets it.
    Call(String),
}

#[derive(Default)]
struct Routes {
    writer: Option<mpsc::UnboundedSender<Outgoing>>,
    calls: HashMap<String, mpsc::UnboundedSender<Event>>,
    jobs: HashMap<String, JobRoute>,
    /// Channels of calls faxd gave up when the link dropped: killed after reconnecting.
    orphans: Vec<String>,
}

/// One FreeSWITCH node.
pub struct Node {
    addr: String,
    password: String,
    routes: Mutex<Routes>,
    health: watch::Sender<NodeHealth>,
}

impl Node {
    pub fn new(addr: &str, password: &str) -> Arc<Self> {
        Arc::new(Self {
            addr: addr.to_string(),
            password: password.to_string(),
            routes: Mutex::new(Routes::default()),
            health: watch::Sender::new(NodeHealth {
                node: addr.to_string(),
                since_ms: crate::time::now_unix_ms(),
                ..NodeHealth::default()
            }),
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn routes(&self) -> MutexGuard<'_, Routes> {
        // Plain maps: a panic elsewhere cannot leave them half-written.
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn health(&self) -> NodeHealth {
        let mut h = self.health.borrow().clone();
        h.calls = self.routes().calls.len();
        h
    }

    /// Watches connects and disconnects.
    pub fn subscribe(&self) -> watch::Receiver<NodeHealth> {
        self.health.subscribe()
    }

    pub fn connected(&self) -> bool {
        self.health.borrow().connected
    }

    /// Calls in progress through this node.
    pub fn active_calls(&self) -> usize {
        self.routes().calls.len()
    }

    /// Sends a command and waits for its reply (`command/reply`, or `api/response` read as a
    /// reply whose text is the body).
    pub async fn command(&self, cmd: &Command, wait: Duration) -> Result<Reply, LinkError> {
        let bytes = cmd.encode().map_err(|e| LinkError::Encode(e.to_string()))?;
        let writer = self
            .routes()
            .writer
            .clone()
            .ok_or_else(|| LinkError::NotConnected(self.addr.clone()))?;
        let (tx, rx) = oneshot::channel();
        writer
            .send(Outgoing { bytes, reply: tx })
            .map_err(|_| LinkError::NotConnected(self.addr.clone()))?;
        match timeout(wait, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(LinkError::Lost(self.addr.clone())),
            Err(_) => Err(LinkError::Timeout(self.addr.clone())),
        }
    }

    /// Runs `bgapi <command>` and waits for its BACKGROUND_JOB.
    pub async fn bgapi(&self, command: &str, wait: Duration) -> Result<Event, LinkError> {
        let job = new_uuid();
        let (tx, rx) = oneshot::channel();
        self.routes().jobs.insert(job.clone(), JobRoute::Waiter(tx));
        let result = async {
            self.send_bgapi(command, &job, wait).await?;
            match timeout(wait, rx).await {
                Ok(Ok(event)) => Ok(event),
                Ok(Err(_)) => Err(LinkError::Lost(self.addr.clone())),
                Err(_) => Err(LinkError::Timeout(self.addr.clone())),
            }
        }
        .await;
        self.routes().jobs.remove(&job);
        result
    }

    /// Sends `bgapi <command>` with `job` as its `Job-UUID`; Ok once FreeSWITCH took it.
    pub async fn send_bgapi(
        &self,
        command: &str,
        job: &str,
        wait: Duration,
    ) -> Result<(), LinkError> {
        let cmd = Command::BgApi {
            command: command.to_string(),
            job_uuid: job.to_string(),
        };
        let reply = self.command(&cmd, wait).await?;
        match reply.error() {
            Some(text) => Err(LinkError::Refused {
                node: self.addr.clone(),
                text: text.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Routes the events of channel `uuid`, and the BACKGROUND_JOB of `job`, to the returned
    /// receiver until [`Node::release_call`]. `None` if the node is not connected. The
    /// receiver closes when the link drops.
    pub fn register_call(&self, uuid: &str, job: &str) -> Option<mpsc::UnboundedReceiver<Event>> {
        let mut r = self.routes();
        r.writer.as_ref()?;
        let (tx, rx) = mpsc::unbounded_channel();
        r.calls.insert(uuid.to_string(), tx);
        r.jobs
            .insert(job.to_string(), JobRoute::Call(uuid.to_string()));
        Some(rx)
    }

    /// Stops routing a call's events (it ended).
    pub fn release_call(&self, uuid: &str, job: &str) {
        let mut r = self.routes();
        r.calls.remove(uuid);
        r.jobs.remove(job);
    }

    /// Asks the node to hang channel `uuid` up (fire and forget; an unknown channel is fine).
    pub fn kill(self: &Arc<Self>, uuid: &str, cause: &str) {
        let this = self.clone();
        let cmd = format!("uuid_kill {uuid} {cause}");
        tokio::spawn(async move {
            if let Err(e) = this.send_bgapi(&cmd, &new_uuid(), HANDSHAKE).await {
                tracing::debug!(node = %this.addr, error = %e, "uuid_kill not sent");
            }
        });
    }

    fn set_health(&self, connected: bool, error: &str, reconnect: bool) {
        self.health.send_modify(|h| {
            h.connected = connected;
            h.since_ms = crate::time::now_unix_ms();
            if !error.is_empty() {
                h.last_error = error.to_string();
            }
            if reconnect {
                h.reconnects += 1;
            }
        });
    }

    /// The connection loop: runs until `stop` turns true (then says `exit`).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut delay = BACKOFF_MIN;
        let mut first = true;
        loop {
            if *stop.borrow() {
                return;
            }
            let started = Instant::now();
            let outcome = self.session(&mut stop, !first).await;
            first = false;
            self.drop_link();
            match outcome {
                Ok(()) => {
                    self.set_health(false, "stopped", false);
                    return;
                }
                Err(e) => {
                    tracing::warn!(node = %self.addr, error = %e, "FreeSWITCH event socket down");
                    self.set_health(false, &e, false);
                }
            }
            // A connection that lived a while starts the backoff over.
            if started.elapsed() > Duration::from_secs(30) {
                delay = BACKOFF_MIN;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopped(&mut stop) => return,
            }
            delay = (delay * 2).min(BACKOFF_MAX);
        }
    }

    /// Forgets the connection: waiters fail, calls end (their channels close) and are
    /// remembered for killing after the reconnect.
    fn drop_link(&self) {
        let mut r = self.routes();
        r.writer = None;
        let calls: Vec<String> = r.calls.drain().map(|(uuid, _)| uuid).collect();
        r.orphans.extend(calls);
        r.jobs.clear();
    }

    /// One connection, from connect to loss (Err) or stop (Ok).
    async fn session(
        &self,
        stop: &mut watch::Receiver<bool>,
        reconnect: bool,
    ) -> Result<(), String> {
        let mut stream = timeout(HANDSHAKE, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| format!("connect to {}: timed out", self.addr))?
            .map_err(|e| format!("connect to {}: {e}", self.addr))?;
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            decoder: Decoder::new(Limits::default()),
            buf: vec![0u8; 64 * 1024],
        };
        match conn.next(&mut stream, HANDSHAKE).await? {
            Frame::AuthRequest => {}
            Frame::RudeRejection(text) => {
                return Err(format!("refused by the node's ACL: {}", text.trim()));
            }
            other => return Err(format!("unexpected greeting: {}", frame_kind(&other))),
        }
        write(
            &mut stream,
            &Command::Auth {
                password: self.password.clone(),
            },
        )
        .await?;
        let reply = conn.reply(&mut stream).await?;
        if !reply.is_ok() {
            return Err(format!("authentication refused: {}", reply.text));
        }
        write(
            &mut stream,
            &Command::Events {
                format: EventFormat::Plain,
                names: SUBSCRIPTION.iter().map(|s| s.to_string()).collect(),
                custom: SPANDSP_TX.iter().map(|s| s.to_string()).collect(),
            },
        )
        .await?;
        let reply = conn.reply(&mut stream).await?;
        if !reply.is_ok() {
            return Err(format!("subscription refused: {}", reply.text));
        }

        let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
        let orphans = {
            let mut r = self.routes();
            r.writer = Some(tx.clone());
            std::mem::take(&mut r.orphans)
        };
        self.set_health(true, "", reconnect);
        tracing::info!(node = %self.addr, "FreeSWITCH event socket up");
        // Channels of calls faxd gave up while the link was down must not go on.
        for uuid in orphans {
            let (reply, _) = oneshot::channel();
            let cmd = Command::BgApi {
                command: format!("uuid_kill {uuid} NORMAL_TEMPORARY_FAILURE"),
                job_uuid: new_uuid(),
            };
            if let Ok(bytes) = cmd.encode() {
                let _ = tx.send(Outgoing { bytes, reply });
            }
        }

        let mut waiting: VecDeque<ReplyTx> = VecDeque::new();
        let mut ticker = tokio::time::interval(HEARTBEAT);
        ticker.tick().await;
        let mut heartbeat: Option<(Instant, oneshot::Receiver<Reply>)> = None;
        loop {
            tokio::select! {
                read = stream.read(&mut conn.buf) => {
                    let n = read.map_err(|e| format!("read: {e}"))?;
                    if n == 0 {
                        return Err("the node closed the event socket".into());
                    }
                    conn.decoder.feed(&conn.buf[..n]);
                    while let Some(frame) = conn.decode()? {
                        self.dispatch(frame, &mut waiting)?;
                    }
                }
                Some(out) = rx.recv() => {
                    write_bytes(&mut stream, &out.bytes).await?;
                    waiting.push_back(out.reply);
                }
                _ = ticker.tick() => {
                    if let Some((sent, _)) = &heartbeat
                        && sent.elapsed() >= HEARTBEAT
                    {
                        return Err(format!("no answer to the heartbeat for {} s", sent.elapsed().as_secs()));
                    }
                    let (reply, answered) = oneshot::channel();
                    let bytes = Command::Api { command: "status".into() }
                        .encode()
                        .map_err(|e| e.to_string())?;
                    write_bytes(&mut stream, &bytes).await?;
                    waiting.push_back(reply);
                    heartbeat = Some((Instant::now(), answered));
                }
                _ = stopped(stop) => {
                    let _ = write(&mut stream, &Command::Exit).await;
                    return Ok(());
                }
            }
            if let Some((_, answered)) = &mut heartbeat
                && !matches!(
                    answered.try_recv(),
                    Err(oneshot::error::TryRecvError::Empty)
                )
            {
                heartbeat = None;
            }
        }
    }

    fn dispatch(&self, frame: Frame, waiting: &mut VecDeque<ReplyTx>) -> Result<(), String> {
        match frame {
            Frame::CommandReply(reply) => {
                if let Some(w) = waiting.pop_front() {
                    let _ = w.send(reply);
                }
            }
            Frame::ApiResponse(body) => {
                if let Some(w) = waiting.pop_front() {
                    let _ = w.send(Reply {
                        text: body,
                        headers: Default::default(),
                    });
                }
            }
            Frame::Event(event) => self.route(event),
            Frame::DisconnectNotice(n) if !n.lingers() => {
                return Err("the node said goodbye".into());
            }
            _ => {}
        }
        Ok(())
    }

    fn route(&self, event: Event) {
        let mut r = self.routes();
        if event.name() == Some("BACKGROUND_JOB") {
            let Some(job) = event.job_uuid() else { return };
            match r.jobs.remove(job) {
                Some(JobRoute::Waiter(w)) => {
                    let _ = w.send(event);
                }
                Some(JobRoute::Call(uuid)) => {
                    if let Some(call) = r.calls.get(&uuid) {
                        let _ = call.send(event);
                    }
                }
                None => {}
            }
            return;
        }
        if let Some(uuid) = event.unique_id()
            && let Some(call) = r.calls.get(uuid)
        {
            let _ = call.send(event);
        }
    }
}

/// Reads frames with a deadline.
struct Conn {
    decoder: Decoder,
    buf: Vec<u8>,
}

impl Conn {
    fn decode(&mut self) -> Result<Option<Frame>, String> {
        match self.decoder.next_frame() {
            Ok(Some(raw)) => Frame::parse(raw).map(Some).map_err(|e| e.to_string()),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn next(&mut self, stream: &mut TcpStream, wait: Duration) -> Result<Frame, String> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(frame) = self.decode()? {
                return Ok(frame);
            }
            let n = tokio::time::timeout_at(deadline, stream.read(&mut self.buf))
                .await
                .map_err(|_| "no answer in time".to_string())?
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("the node closed the event socket".into());
            }
            self.decoder.feed(&self.buf[..n]);
        }
    }

    /// The next command reply (events before it are skipped: none are subscribed yet).
    async fn reply(&mut self, stream: &mut TcpStream) -> Result<Reply, String> {
        loop {
            match self.next(stream, HANDSHAKE).await? {
                Frame::CommandReply(r) => return Ok(r),
                Frame::DisconnectNotice(_) => return Err("the node closed the event socket".into()),
                _ => {}
            }
        }
    }
}

fn frame_kind(f: &Frame) -> &'static str {
    match f {
        Frame::AuthRequest => "auth/request",
        Frame::CommandReply(_) => "command/reply",
        Frame::ApiResponse(_) => "api/response",
        Frame::Event(_) => "event",
        Frame::ConnectReply(_) => "connect reply",
        Frame::DisconnectNotice(_) => "disconnect notice",
        Frame::RudeRejection(_) => "rude rejection",
        Frame::Log(_) => "log",
        Frame::Unknown(_) => "unknown frame",
    }
}

async fn write(stream: &mut TcpStream, cmd: &Command) -> Result<(), String> {
    let bytes = cmd.encode().map_err(|e| e.to_string())?;
    write_bytes(stream, &bytes).await
}

async fn write_bytes(stream: &mut TcpStream, bytes: &[u8]) -> Result<(), String> {
    timeout(WRITE, stream.write_all(bytes))
        .await
        .map_err(|_| "write: timed out".to_string())?
        .map_err(|e| format!("write: {e}"))
}

/// A random UUID in FreeSWITCH's textual form (8-4-4-4-12 hex).
pub fn new_uuid() -> String {
    dashed(&crate::ids::new_id())
}

/// `0123…` (32 hex) as `01234567-89ab-…`; other ids are returned as they are.
pub fn dashed(id: &str) -> String {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!(
            "{}-{}-{}-{}-{}",
            &id[..8],
            &id[8..12],
            &id[12..16],
            &id[16..20],
            &id[20..]
        )
    } else {
        id.to_string()
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
