//! A FreeSWITCH 1.10.12 stand-in for faxd's tests: the event socket (ESL) in both modes, with
//! the bytes a real FreeSWITCH writes (`spec/freeswitch-esl.md`, the captured frames in
//! `tests/fixtures/esl/`) and real faxes: every answered call runs faxd's loopback engine
//! (two spandsp T.30 terminals, `faxd::gateway::loopback::session`).
//!
//! - Inbound mode ([`server`]): faxd connects to [`StandIn::esl_addr`], authenticates,
//!   subscribes, fetches documents with `http_get` and places faxes with `bgapi originate
//!   {…}sofia/gateway/<gw>/<number> &txfax(<path>)`. The number decides the far end: the
//!   `[loopback] numbers` rules (busy, no answer, hang-up after page 1, no fax tones), the
//!   T.38-refusing numbers, or a *faxd number*, which the stand-in hands to faxd's inbound
//!   socket like the dialplan's `socket <addr> async full`.
//! - Outbound mode ([`socket`]): the stand-in connects to faxd's `inbound_listen` address,
//!   answers `connect` with the bare CHANNEL_DATA, and runs what faxd's `sendmsg` asks
//!   (`answer`, `set`, `rxfax`, `hangup`, ...). A call from an `originate` to a faxd number
//!   connects both legs through one spandsp session; [`StandIn::place_inbound_call`]
//!   simulates a carrier's call with a TIFF to send.
//!
//! Test hooks: [`StandIn::drop_connections`], [`StandIn::pause_listener`],
//! [`StandIn::originates`].

pub mod call;
pub mod frames;
pub mod server;
pub mod socket;
pub mod templates;
pub mod vars;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faxd::config::{G711Law, LineBehaviour, LineTime, LoopbackSection, NumberRule};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub use call::{InboundCallOptions, InboundCallOutcome, OriginateRecord};

/// Everything the stand-in needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address of the ESL listener (port 0: any free port, see [`StandIn::esl_addr`]).
    pub esl_listen: SocketAddr,
    /// The `auth` password (FreeSWITCH's default `ClueCon`).
    pub password: String,
    /// faxd's inbound socket (its `inbound_listen`): where calls to faxd numbers go.
    pub inbound_listen: Option<SocketAddr>,
    /// Numbers served by faxd (`x` = any digit, as the `[loopback] numbers` patterns).
    pub faxd_numbers: Vec<String>,
    /// The special numbers of the virtual PSTN, first match wins (see
    /// [`default_numbers`]).
    pub numbers: Vec<NumberRule>,
    /// Numbers whose far end refuses a T.38 re-INVITE: the call goes on over audio.
    pub t38_refused: Vec<String>,
    pub line_time: LineTime,
    pub law: G711Law,
    /// Where `http_get` caches what it fetched.
    pub cache_dir: PathBuf,
    /// Where simulated far ends write the faxes they receive (`remote-<uuid>.tiff`).
    pub spool_dir: PathBuf,
    /// Longest line time of one call in seconds.
    pub max_call_secs: u64,
    /// A client that writes nothing for this long is disconnected.
    pub idle_timeout: Duration,
    /// How long an outbound socket waits for faxd's `connect` (FreeSWITCH: 25 s).
    pub connect_timeout: Duration,
    /// `FreeSWITCH-Hostname` and `FreeSWITCH-Switchname` of every event.
    pub hostname: String,
}

/// The default special numbers: faxd's `[loopback] numbers` (`+15550001xxx` busy,
/// `+15550002xxx` no answer, `+15550003xxx` hang-up after page 1, `+15550004xxx` no fax
/// tones).
pub fn default_numbers() -> Vec<NumberRule> {
    LoopbackSection::default().numbers
}

impl Default for Config {
    fn default() -> Self {
        let tmp = std::env::temp_dir().join(format!("faxd-fs-standin-{}", std::process::id()));
        Self {
            esl_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            password: "ClueCon".into(),
            inbound_listen: None,
            faxd_numbers: Vec::new(),
            numbers: default_numbers(),
            t38_refused: vec!["+15550007xxx".into()],
            line_time: LineTime::Accelerated,
            law: G711Law::Ulaw,
            cache_dir: tmp.join("httpcache"),
            spool_dir: tmp.join("spool"),
            max_call_secs: 3600,
            idle_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(25),
            hostname: "vm".into(),
        }
    }
}

/// Whether `number` matches one of `patterns`.
pub fn matches_any(patterns: &[String], number: &str) -> bool {
    patterns
        .iter()
        .any(|p| faxd::gateway::loopback::pstn::matches(p, number))
}

/// One event on its way to the connections (each renders it in its own format).
#[derive(Debug)]
pub(crate) enum BusItem {
    Event {
        name: String,
        subclass: Option<String>,
        unique_id: Option<String>,
        headers: Vec<(String, String)>,
        body: Option<String>,
    },
    /// The channel `uuid` is gone (after its CHANNEL_HANGUP_COMPLETE): its controlling
    /// socket gets its linger or goodbye notice.
    Gone { uuid: String },
}

/// A URL in `http_get`'s cache.
pub(crate) enum HttpEntry {
    Ready(PathBuf),
    /// Being fetched; becomes `Some(path or None)` when done.
    Downloading(watch::Receiver<Option<Option<String>>>),
}

/// A channel the stand-in can reach by uuid (`uuid_kill`, `sendmsg <uuid>`).
#[derive(Clone)]
pub(crate) struct ChannelHandle {
    pub hangup: mpsc::UnboundedSender<String>,
    /// The B leg's application queue (outbound-socket channels only).
    pub apps: Option<mpsc::UnboundedSender<socket::AppRequest>>,
}

pub(crate) struct Shared {
    pub config: Config,
    pub core_uuid: String,
    seq: AtomicU64,
    pub bus: broadcast::Sender<Arc<BusItem>>,
    /// Bumped by [`StandIn::drop_connections`].
    pub drop_generation: watch::Sender<u64>,
    pub pause: watch::Sender<Option<Instant>>,
    pub channels: Mutex<HashMap<String, ChannelHandle>>,
    pub originates: Mutex<Vec<OriginateRecord>>,
    pub http_cache: Mutex<HashMap<String, HttpEntry>>,
    pub http: reqwest::Client,
    pub started: Instant,
    pub sessions_total: AtomicU64,
    pub closing: watch::Sender<bool>,
}

impl Shared {
    pub fn next_sequence(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn publish(&self, item: BusItem) {
        let _ = self.bus.send(Arc::new(item));
    }

    pub fn channel(&self, uuid: &str) -> Option<ChannelHandle> {
        self.channels.lock().ok()?.get(uuid).cloned()
    }

    pub fn add_channel(&self, uuid: &str, h: ChannelHandle) {
        if let Ok(mut m) = self.channels.lock() {
            m.insert(uuid.to_string(), h);
        }
        self.sessions_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn remove_channel(&self, uuid: &str) {
        if let Ok(mut m) = self.channels.lock() {
            m.remove(uuid);
        }
    }

    pub fn active_channels(&self) -> usize {
        self.channels.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// Resolves once the flag is true (or its sender is gone).
pub(crate) async fn until_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|c| *c).await;
}

/// A random version-4 UUID in FreeSWITCH's lowercase form.
pub fn new_uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h = |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut s = format!(
        "{}-{}-{}-{}-{}",
        h(0..4),
        h(4..6),
        h(6..8),
        h(8..10),
        h(10..16)
    );
    // Version 4, variant 10.
    s.replace_range(14..15, "4");
    let v = ["8", "9", "a", "b"][(b[8] & 3) as usize];
    s.replace_range(19..20, v);
    s
}

/// A running stand-in. Cloning shares it; it stops with [`StandIn::shutdown`] (or when the
/// runtime ends).
#[derive(Clone)]
pub struct StandIn {
    shared: Arc<Shared>,
    esl_addr: SocketAddr,
}

impl StandIn {
    /// Binds the ESL listener and starts serving.
    pub async fn start(config: Config) -> std::io::Result<StandIn> {
        std::fs::create_dir_all(&config.cache_dir)?;
        std::fs::create_dir_all(&config.spool_dir)?;
        let listener = tokio::net::TcpListener::bind(config.esl_listen).await?;
        let esl_addr = listener.local_addr()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared {
            config,
            core_uuid: new_uuid(),
            seq: AtomicU64::new(0),
            bus: broadcast::channel(4096).0,
            drop_generation: watch::Sender::new(0),
            pause: watch::Sender::new(None),
            channels: Mutex::new(HashMap::new()),
            originates: Mutex::new(Vec::new()),
            http_cache: Mutex::new(HashMap::new()),
            http,
            started: Instant::now(),
            sessions_total: AtomicU64::new(0),
            closing: watch::Sender::new(false),
        });
        tokio::spawn(server::accept_loop(shared.clone(), listener, esl_addr));
        Ok(StandIn { shared, esl_addr })
    }

    /// Where faxd connects (inbound mode).
    pub fn esl_addr(&self) -> SocketAddr {
        self.esl_addr
    }

    /// The `Core-UUID` of every event.
    pub fn core_uuid(&self) -> &str {
        &self.shared.core_uuid
    }

    /// Closes every ESL connection at once, without a goodbye (a FreeSWITCH whose sockets
    /// died); calls in progress go on.
    pub fn drop_connections(&self) {
        self.shared.drop_generation.send_modify(|g| *g += 1);
    }

    /// Closes the listener for `d` (connections are refused), then listens again on the same
    /// address.
    pub fn pause_listener(&self, d: Duration) {
        self.shared.pause.send_replace(Some(Instant::now() + d));
    }

    /// Every `originate` received so far, parsed.
    pub fn originates(&self) -> Vec<OriginateRecord> {
        self.shared
            .originates
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Channels up right now.
    pub fn active_channels(&self) -> usize {
        self.shared.active_channels()
    }

    /// Simulates a carrier's call from `from` to `to` carrying the fax in `tiff`: the
    /// stand-in connects to faxd's inbound socket (`Config::inbound_listen`) and a simulated
    /// fax machine sends the document once faxd runs `rxfax`. The receiver gets the sender's
    /// outcome.
    pub fn place_inbound_call(
        &self,
        from: &str,
        to: &str,
        tiff: PathBuf,
        options: InboundCallOptions,
    ) -> oneshot::Receiver<InboundCallOutcome> {
        call::place_inbound_call(self.shared.clone(), from, to, tiff, options)
    }

    /// Stops listening and hangs up every call (`SYSTEM_SHUTDOWN`).
    pub fn shutdown(&self) {
        self.shared.closing.send_replace(true);
        let handles: Vec<ChannelHandle> = self
            .shared
            .channels
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        for h in handles {
            let _ = h.hangup.send("SYSTEM_SHUTDOWN".into());
        }
        self.drop_connections();
    }
}

/// A `[loopback] numbers` rule (`x` = any digit), for callers that build a [`Config`].
pub fn rule(pattern: &str, behaviour: LineBehaviour, pages: u32) -> NumberRule {
    NumberRule {
        pattern: pattern.into(),
        behaviour,
        pages,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids_look_like_freeswitch_ones() {
        let u = super::new_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(u.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
    }
}
