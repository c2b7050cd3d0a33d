//! Node configuration (`faxd.toml`, every key overridable by a `FAXD_<SECTION>_<KEY>`
//! environment variable) and the stored, live `system_config/fax` values.

pub mod fax;
pub mod notify;
pub mod runtime;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use fax::FaxConfig;
pub use runtime::SystemConfig;

use crate::store::Backend;

/// Errors while loading the node configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("cluster cookie file {path}: {source}")]
    Cookie {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Which media engine carries the faxes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaEngine {
    Loopback,
    Freeswitch,
    /// The scripted engine (no T.30; outcomes by destination number): scheduler tests and
    /// benchmarks only.
    Script,
}

impl MediaEngine {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaEngine::Loopback => "loopback",
            MediaEngine::Freeswitch => "freeswitch",
            MediaEngine::Script => "script",
        }
    }
}

/// `[node]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// Node name, `faxd@<host>`; also the name of this node's section in system configs.
    pub name: String,
    /// Data directory: the embedded store, the cluster cookie, the admin credentials.
    pub data_dir: PathBuf,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            name: "faxd@127.0.0.1".into(),
            data_dir: PathBuf::from("./var"),
        }
    }
}

/// `[api]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    /// Address of the REST API.
    pub listen: String,
    /// HTTP worker threads.
    pub workers: usize,
    /// Largest JSON request body, bytes (Kazoo's `crossbar.max_upload_size`).
    pub max_body_bytes: u64,
    /// Largest fax document upload (multipart or raw body), bytes; larger is a 413.
    pub max_upload_bytes: u64,
    /// Largest document fetched from a `document.url`, bytes.
    pub url_max_bytes: u64,
    /// Time limit of one document URL fetch, seconds.
    pub url_timeout_s: u64,
    /// Redirects a document URL fetch may follow.
    pub url_max_redirects: usize,
    /// Allow document URLs that resolve to loopback, private or link-local addresses (off:
    /// such URLs are refused, against server-side request forgery).
    pub url_allow_private: bool,
    /// Lifetime of the tokens `user_auth` and `api_auth` issue, seconds.
    pub token_expiry_s: u64,
    /// Time a client has to send a request's head (line and headers), seconds; then 408.
    pub header_timeout_s: u64,
    /// Longest pause while a request body arrives, seconds: a body that stalls longer is cut
    /// with a 408 and the connection closed.
    pub body_timeout_s: u64,
    /// Open connections the API keeps at most (all clients together); capped further by the
    /// process's file-descriptor limit so that the rest of the node keeps descriptors.
    pub max_connections: usize,
    /// Open connections one client address may hold (0: no limit); more are answered 429 and
    /// closed at once.
    pub max_connections_per_address: usize,
    /// Request rate limits (`[api.rate_limit]`).
    pub rate_limit: RateLimitSection,
    /// Client addresses (IPs or CIDR blocks, the connection's own peer: no forwarding header
    /// counts) that may read `GET /metrics`; others get a 403.
    pub metrics_allow: Vec<String>,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8000".into(),
            workers: 2,
            max_body_bytes: 8_000_000,
            max_upload_bytes: 50 * 1024 * 1024,
            url_max_bytes: 50 * 1024 * 1024,
            url_timeout_s: 60,
            url_max_redirects: 3,
            url_allow_private: false,
            token_expiry_s: 3600,
            header_timeout_s: 10,
            body_timeout_s: 30,
            max_connections: 10_000,
            max_connections_per_address: 256,
            rate_limit: RateLimitSection::default(),
            metrics_allow: vec!["127.0.0.1".into(), "::1".into()],
        }
    }
}

/// `[api.rate_limit]`: token buckets, as Kazoo's crossbar keeps them (`kz_buckets`). Every
/// request takes a token from its client address's bucket and, once its token is verified,
/// one from its account's bucket; a request finding a bucket empty is answered 429 with a
/// `Retry-After`. `user_auth` and `api_auth` attempts also draw on a per-address login
/// bucket: an attempt needs one token, and a failed one costs `failed_login_cost` in all,
/// so password guessing is cut off long before ordinary logins are. The
/// defaults are far above what a provider's integration or Monster UI sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSection {
    /// Off: no request is ever refused for its rate (connection limits still apply).
    pub enabled: bool,
    /// Tokens of a client address's bucket (the largest burst from one address).
    pub address_burst: u32,
    /// Tokens a client address's bucket regains per second (its sustained request rate).
    pub address_per_s: f64,
    /// Tokens of an account's bucket (requests of all its tokens, from any address).
    pub account_burst: u32,
    /// Tokens an account's bucket regains per second.
    pub account_per_s: f64,
    /// Tokens of a client address's login bucket (`user_auth`, `api_auth`).
    pub login_burst: u32,
    /// Tokens a login bucket regains per second.
    pub login_per_s: f64,
    /// Tokens a failed login (wrong credentials or API key) costs; a successful one costs 1.
    pub failed_login_cost: u32,
    /// Buckets kept at most (idle ones are dropped first), bounding the memory a flood from
    /// many addresses can take.
    pub max_buckets: usize,
    /// Reverse proxies (IPs or CIDR blocks) whose `X-Forwarded-For` names the client. A
    /// request from any other peer is counted under the peer's address: the header is
    /// trivially forged.
    pub trusted_proxies: Vec<String>,
}

impl Default for RateLimitSection {
    fn default() -> Self {
        Self {
            enabled: true,
            address_burst: 1000,
            address_per_s: 100.0,
            account_burst: 500,
            account_per_s: 50.0,
            login_burst: 60,
            login_per_s: 1.0,
            failed_login_cost: 20,
            max_buckets: 100_000,
            trusted_proxies: vec![],
        }
    }
}

impl RateLimitSection {
    /// Checks the values against each other; the error names the key.
    pub fn check(&self) -> Result<(), String> {
        let rates = [
            ("address", self.address_burst, self.address_per_s),
            ("account", self.account_burst, self.account_per_s),
            ("login", self.login_burst, self.login_per_s),
        ];
        for (name, burst, per_s) in rates {
            if burst == 0 {
                return Err(format!("api.rate_limit.{name}_burst must be at least 1"));
            }
            if !(per_s.is_finite() && per_s > 0.0) {
                return Err(format!(
                    "api.rate_limit.{name}_per_s must be a positive number, not {per_s}"
                ));
            }
        }
        if self.failed_login_cost == 0 {
            return Err("api.rate_limit.failed_login_cost must be at least 1".into());
        }
        if self.max_buckets == 0 {
            return Err("api.rate_limit.max_buckets must be at least 1".into());
        }
        crate::netblock::AllowList::parse(&self.trusted_proxies)
            .map_err(|e| format!("api.rate_limit.trusted_proxies: {e}"))?;
        Ok(())
    }
}

/// `[store]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// `embedded` (SQLite in the data directory) or `couchdb`.
    pub backend: Backend,
    /// CouchDB URL (with credentials if needed) for the `couchdb` backend.
    pub couch_url: String,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            backend: Backend::Embedded,
            couch_url: "http://127.0.0.1:5984".into(),
        }
    }
}

/// `[media]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaSection {
    pub engine: MediaEngine,
    /// Line time per page of the `script` engine, in milliseconds (0: instant).
    pub script_page_ms: u64,
}

impl Default for MediaSection {
    fn default() -> Self {
        Self {
            engine: MediaEngine::Loopback,
            script_page_ms: 0,
        }
    }
}

/// `[cluster]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// Address the cluster node listens on (other nodes and `faxd sup` connect here).
    pub listen: String,
    /// Shared secret of the cluster. Empty: read `<data_dir>/cookie`, created at first start.
    pub cookie: String,
    /// Other nodes to connect to at start (`host:port`).
    pub seeds: Vec<String>,
    /// Time an incoming cluster connection has to authenticate (cookie handshake), seconds;
    /// then it is closed.
    pub handshake_timeout_s: u64,
    /// Open incoming cluster connections at most (all peers together); capped further by the
    /// process's file-descriptor limit.
    pub max_connections: usize,
    /// Open incoming cluster connections one address may hold.
    pub max_connections_per_address: usize,
    /// Mutual TLS on the cluster port when all three are set (PEM files): this node's
    /// certificate chain and key, and the CA that signs every node's (and `faxd sup`'s)
    /// certificate. Empty: plaintext (keep the port on a private network).
    pub tls_cert: String,
    pub tls_key: String,
    pub tls_ca: String,
}

impl ClusterSection {
    /// The TLS files, when TLS is configured; an error when only some are set.
    pub fn tls_files(&self) -> Result<Option<crate::tls::ClusterFiles<'_>>, String> {
        let set = [&self.tls_cert, &self.tls_key, &self.tls_ca]
            .iter()
            .filter(|s| !s.is_empty())
            .count();
        match set {
            0 => Ok(None),
            3 => Ok(Some(crate::tls::ClusterFiles {
                cert: &self.tls_cert,
                key: &self.tls_key,
                ca: &self.tls_ca,
            })),
            _ => Err("cluster.tls_cert, tls_key and tls_ca are set together or not at all".into()),
        }
    }
}

impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:4370".into(),
            cookie: String::new(),
            seeds: vec![],
            handshake_timeout_s: 10,
            max_connections: 256,
            max_connections_per_address: 16,
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_ca: String::new(),
        }
    }
}

/// `[loopback]`: the embedded media engine's virtual PSTN (DESIGN.md §3). A dialled number
/// is matched against `numbers` in order (`x` matches any digit, other characters match
/// themselves, lengths must be equal); a number no rule matches reaches a fax machine that
/// answers and receives. A number owned by a local callflow becomes an inbound fax instead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoopbackSection {
    /// `accelerated` (line time runs as fast as the CPU allows) or `realtime` (20 ms of audio
    /// every 20 ms, like a real line).
    pub line_time: LineTime,
    /// G.711 companding applied both ways on the audio path: `ulaw` (PCMU) or `alaw` (PCMA).
    pub law: G711Law,
    /// Where the simulated far ends write the faxes they receive; empty: `<data_dir>/loopback`.
    pub spool_dir: PathBuf,
    /// Longest line time of one call in seconds, a guard against a call that never ends.
    pub max_call_secs: u64,
    /// The virtual PSTN's special numbers, first match wins.
    pub numbers: Vec<NumberRule>,
}

impl Default for LoopbackSection {
    fn default() -> Self {
        let rule = |pattern: &str, behaviour, pages| NumberRule {
            pattern: pattern.into(),
            behaviour,
            pages,
        };
        Self {
            line_time: LineTime::Accelerated,
            law: G711Law::Ulaw,
            spool_dir: PathBuf::new(),
            max_call_secs: 3600,
            numbers: vec![
                rule("+15550001xxx", LineBehaviour::Busy, 0),
                rule("+15550002xxx", LineBehaviour::NoAnswer, 0),
                rule("+15550003xxx", LineBehaviour::HangupAfterPages, 1),
                rule("+15550004xxx", LineBehaviour::NoFaxTones, 0),
            ],
        }
    }
}

/// How fast simulated line time runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineTime {
    Accelerated,
    Realtime,
}

/// G.711 law of the simulated audio path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum G711Law {
    Ulaw,
    Alaw,
}

/// One special number (pattern) of the virtual PSTN.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberRule {
    /// E.164 pattern, `x` = any digit, e.g. `+15550001xxx`.
    pub pattern: String,
    pub behaviour: LineBehaviour,
    /// For `hangup_after_pages`: pages received before the far end hangs up.
    #[serde(default)]
    pub pages: u32,
}

/// What the far end of a special number does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineBehaviour {
    /// Answers and receives like a fax machine.
    Answer,
    /// `USER_BUSY`, SIP 486.
    Busy,
    /// Rings until the call's ring timeout (`endpoint_timeout`): `NO_ANSWER`, SIP 480.
    NoAnswer,
    /// Answers, receives `pages` pages, then hangs up (T.30 code 49 on the sender).
    HangupAfterPages,
    /// Answers but never sends fax tones (T.30 code 2 after T0 expires).
    NoFaxTones,
}

/// `[freeswitch]`: the FreeSWITCH media engine (`[media] engine = "freeswitch"`, DESIGN.md
/// §3, `rel/freeswitch/README.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FreeswitchSection {
    /// The event socket (`host:port`, inbound mode) of each FreeSWITCH node; calls spread
    /// over the nodes that are connected.
    pub nodes: Vec<String>,
    /// Event socket password (`event_socket.conf.xml`).
    pub password: String,
    /// Endpoint of an outbound fax call; `{number}` is replaced by the E.164 destination.
    pub dial_string: String,
    /// Where the dialplan's `socket` application connects with incoming fax calls.
    pub inbound_listen: String,
    /// Where `rxfax` writes received faxes, on a disk FreeSWITCH and faxd share (same host or
    /// volume); empty: `<data_dir>/spool`.
    pub spool_dir: PathBuf,
    /// faxd's file proxy as FreeSWITCH reaches it (`http_get` fetches the fax document from
    /// `<file_proxy_url>/fax/<job>/<token>.tiff`).
    pub file_proxy_url: String,
}

impl Default for FreeswitchSection {
    fn default() -> Self {
        Self {
            nodes: vec!["127.0.0.1:8021".into()],
            password: "ClueCon".into(),
            dial_string: "sofia/gateway/carrier/{number}".into(),
            inbound_listen: "127.0.0.1:8084".into(),
            spool_dir: PathBuf::new(),
            file_proxy_url: "http://127.0.0.1:30950".into(),
        }
    }
}

impl FreeswitchSection {
    /// The spool directory in force.
    pub fn spool(&self, data_dir: &Path) -> PathBuf {
        if self.spool_dir.as_os_str().is_empty() {
            data_dir.join("spool")
        } else {
            self.spool_dir.clone()
        }
    }
}

/// `[file_proxy]`: the HTTP server media engines fetch fax documents from
/// (`GET /fax/<job_id>/<token>.tiff`, port = the fax config's `port`, 30950).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileProxySection {
    /// Address the file proxy binds.
    pub listen_ip: String,
    /// Port; 0 = the fax config's `port` (`system_config.fax.port`, 30950). Set it to run
    /// several nodes on one host.
    pub port: u16,
    /// Client addresses or CIDR blocks allowed to fetch (e.g. the FreeSWITCH hosts); every
    /// other client gets 404.
    pub allowed: Vec<String>,
}

impl Default for FileProxySection {
    fn default() -> Self {
        Self {
            listen_ip: "127.0.0.1".into(),
            port: 0,
            allowed: vec!["127.0.0.1/32".into(), "::1/128".into()],
        }
    }
}

/// `[outbound]`: timing of the outbound engine (seconds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundSection {
    /// The fax-ready document must be fetched (and converted) within this.
    pub prepare_timeout: u64,
    /// A call must be set up within this (Kazoo: 2 min).
    pub originate_timeout: u64,
    /// T.30 negotiation must finish within this after the call is up (Kazoo: 2 min).
    pub negotiate_timeout: u64,
    /// Each page must go through within this (Kazoo: 5 min).
    pub page_timeout: u64,
    /// A worker renews the lease of its job this often.
    pub heartbeat: u64,
    /// A processing job whose lease was not renewed for this long is requeued.
    pub lease: u64,
    /// fax_monitor's safety sweep (the change feed does the real work).
    pub sweep: u64,
    /// On a shared (CouchDB) store, one node of the cluster schedules outbound faxes: it
    /// renews its leader lease this often (seconds)…
    pub leader_renew: u64,
    /// …and another node takes the lease over when it was not renewed for this long.
    pub leader_lease: u64,
}

impl Default for OutboundSection {
    fn default() -> Self {
        Self {
            prepare_timeout: 300,
            originate_timeout: 120,
            negotiate_timeout: 120,
            page_timeout: 300,
            heartbeat: 30,
            lease: 120,
            sweep: 60,
            leader_renew: 5,
            leader_lease: 15,
        }
    }
}

/// `[log]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// tracing filter, e.g. `info` or `faxd=debug,info`.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

/// `[smtp]`: the e-mail-to-fax listener (fax_smtp). Off while `listen` is empty. The message
/// size cap and the session cap are the fax config's `smtp_max_msg_size` and
/// `smtp_sessions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpSection {
    /// `ip:port` to listen on; empty = no SMTP listener.
    pub listen: String,
    /// Name in the greeting and EHLO reply; empty = the host part of the node name.
    pub hostname: String,
    /// PEM certificate chain and private key: STARTTLS is offered when both are set.
    pub tls_cert: String,
    pub tls_key: String,
    /// STARTTLS for old scanners: OpenSSL instead of rustls, TLS 1.0 and 1.1, AES-CBC and
    /// RSA key exchange admitted beside TLS 1.2/1.3 (needs `tls_cert`/`tls_key`).
    pub legacy_tls: bool,
    /// `off`, `optional` (AUTH PLAIN/LOGIN against faxd users, `user@realm`), `required`.
    pub auth: crate::smtp::AuthMode,
    /// Allow AUTH without TLS (a LAN listener for scanners that cannot do TLS).
    pub auth_without_tls: bool,
    /// Longest command line, bytes.
    pub max_line: usize,
    /// Recipients per message.
    pub max_recipients: usize,
    /// Error replies before the session is closed with 421.
    pub max_errors: u32,
    /// Seconds to wait for a command line (RFC 5321 §4.5.3.2: 5 minutes).
    pub command_timeout_s: u64,
    /// Seconds for the whole DATA phase.
    pub data_timeout_s: u64,
    /// Seconds a session may last.
    pub session_timeout_s: u64,
    /// MIME parts per message, nested messages included.
    pub max_parts: usize,
    /// MIME nesting levels.
    pub max_depth: usize,
    /// Header bytes of one MIME part.
    pub max_header_bytes: usize,
    /// Images smaller than this many pixels in both sides are not faxed (logos).
    pub min_image_px: u32,
}

impl Default for SmtpSection {
    fn default() -> Self {
        Self {
            listen: String::new(),
            hostname: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            legacy_tls: false,
            auth: crate::smtp::AuthMode::Off,
            auth_without_tls: false,
            max_line: 2048,
            max_recipients: 100,
            max_errors: 20,
            command_timeout_s: 300,
            data_timeout_s: 600,
            session_timeout_s: 1800,
            max_parts: 500,
            max_depth: 20,
            max_header_bytes: 100 * 1024,
            min_image_px: 200,
        }
    }
}

/// The node configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeSection,
    pub api: ApiSection,
    pub store: StoreSection,
    pub media: MediaSection,
    pub cluster: ClusterSection,
    pub loopback: LoopbackSection,
    pub freeswitch: FreeswitchSection,
    pub file_proxy: FileProxySection,
    pub outbound: OutboundSection,
    pub log: LogSection,
    pub convert: crate::convert::ConvertConfig,
    pub smtp: SmtpSection,
    pub notify: notify::NotifySection,
}

impl Config {
    /// Loads the embedded defaults, then `path` if given, then `FAXD_*` variables from the
    /// process environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly.
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let defaults = toml::Value::try_from(Config::default())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let mut value = defaults.clone();
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let file: toml::Value = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            merge(&mut value, file);
            // Validate the file alone first so unknown keys are reported against the file.
            value
                .clone()
                .try_into::<Config>()
                .map_err(|e| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
        }
        // `FAXD_LOG` (log filter) and `FAXD_TEST_*` (test suite) are not settings.
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| {
                k.starts_with("FAXD_") && k != "FAXD_LOG" && !k.starts_with("FAXD_TEST_")
            })
            .collect();
        apply_env(&mut value, &defaults, &mut Vec::new(), &env)?;
        let config = value
            .try_into::<Config>()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config
            .api
            .rate_limit
            .check()
            .map_err(ConfigError::Invalid)?;
        config.cluster.tls_files().map_err(ConfigError::Invalid)?;
        crate::netblock::AllowList::parse(&config.api.metrics_allow)
            .map_err(|e| ConfigError::Invalid(format!("api.metrics_allow: {e}")))?;
        Ok(config)
    }

    /// The cluster cookie: the configured one, else `<data_dir>/cookie`, created (mode 0600)
    /// with a random value when missing.
    pub fn cookie(&self, create: bool) -> Result<String, ConfigError> {
        if !self.cluster.cookie.is_empty() {
            return Ok(self.cluster.cookie.clone());
        }
        let path = self.node.data_dir.join("cookie");
        match std::fs::read_to_string(&path) {
            Ok(c) if !c.trim().is_empty() => return Ok(c.trim().to_string()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ConfigError::Cookie { path, source }),
        }
        if !create {
            return Err(ConfigError::Invalid(format!(
                "no cluster cookie: set [cluster] cookie or start the node once to create {}",
                path.display()
            )));
        }
        let cookie = crate::ids::new_id();
        write_private(&path, cookie.as_bytes()).map_err(|source| ConfigError::Cookie {
            path: path.clone(),
            source,
        })?;
        Ok(cookie)
    }

    /// The example/default configuration as TOML (what `rel/dev.toml` holds).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

/// Writes a file readable by its owner only (mode 0600), atomically.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_table() && v.is_table() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Applies `FAXD_<SECTION>_<KEY>` overrides for every leaf of the defaults. A variable for a
/// string key is taken verbatim; for other keys it is parsed as a TOML value.
fn apply_env(
    value: &mut toml::Value,
    defaults: &toml::Value,
    path: &mut Vec<String>,
    env: &[(String, String)],
) -> Result<(), ConfigError> {
    let toml::Value::Table(table) = defaults else {
        return Ok(());
    };
    for (key, default) in table {
        path.push(key.clone());
        if default.is_table() {
            if let Some(sub) = value.get_mut(key) {
                apply_env(sub, default, path, env)?;
            }
        } else {
            let var = format!("FAXD_{}", path.join("_").to_ascii_uppercase());
            if let Some((_, raw)) = env.iter().find(|(k, _)| *k == var) {
                let parsed = if default.is_str() {
                    toml::Value::String(raw.clone())
                } else {
                    toml::from_str::<toml::Table>(&format!("v = {raw}"))
                        .ok()
                        .and_then(|mut t| t.remove("v"))
                        .unwrap_or_else(|| toml::Value::String(raw.clone()))
                };
                if let Some(toml::Value::Table(t)) = Some(&mut *value) {
                    t.insert(key.clone(), parsed);
                }
            }
        }
        path.pop();
    }
    // Catch misspelt variables rather than ignoring them.
    if path.is_empty() {
        let known = leaf_vars(defaults, &mut Vec::new());
        for (k, _) in env {
            if !known.contains(k) {
                return Err(ConfigError::Env {
                    var: k.clone(),
                    message: format!("unknown setting; known: {}", known.join(", ")),
                });
            }
        }
    }
    Ok(())
}

fn leaf_vars(defaults: &toml::Value, path: &mut Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    if let toml::Value::Table(t) = defaults {
        for (k, v) in t {
            path.push(k.clone());
            if v.is_table() {
                out.extend(leaf_vars(v, path));
            } else {
                out.push(format!("FAXD_{}", path.join("_").to_ascii_uppercase()));
            }
            path.pop();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_embedded_setup() {
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(c.api.listen, "127.0.0.1:8000");
        assert_eq!(c.store.backend, Backend::Embedded);
        assert_eq!(c.media.engine, MediaEngine::Loopback);
        assert_eq!(c.node.data_dir, PathBuf::from("./var"));
    }

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.toml");
        std::fs::write(
            &path,
            "[store]\nbackend = \"couchdb\"\ncouch_url = \"http://db:5984\"\n[api]\nworkers = 4\n",
        )
        .unwrap();
        let c = Config::load_with_env(
            Some(&path),
            env(&[
                ("FAXD_API_LISTEN", "0.0.0.0:9000"),
                ("FAXD_API_WORKERS", "8"),
                ("FAXD_CLUSTER_COOKIE", "12345"),
                ("FAXD_CLUSTER_SEEDS", "[\"10.0.0.2:4370\"]"),
            ]),
        )
        .unwrap();
        assert_eq!(c.store.backend, Backend::Couchdb);
        assert_eq!(c.store.couch_url, "http://db:5984");
        assert_eq!(c.api.listen, "0.0.0.0:9000");
        assert_eq!(c.api.workers, 8);
        assert_eq!(c.cluster.cookie, "12345");
        assert_eq!(c.cluster.seeds, vec!["10.0.0.2:4370".to_string()]);
    }

    #[test]
    fn mistakes_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.toml");
        std::fs::write(&path, "[api]\nlisten_addr = \"x\"\n").unwrap();
        let err = Config::load_with_env(Some(&path), env(&[])).unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");
        let err = Config::load_with_env(None, env(&[("FAXD_API_LISTN", "x")])).unwrap_err();
        // The log filter and the test suite's variables are not settings.
        Config::load_with_env(
            None,
            env(&[
                ("FAXD_LOG", "debug"),
                ("FAXD_TEST_COUCH_URL", "http://x"),
                ("FAXD_LOG_LEVEL", "warn"),
            ]),
        )
        .map(|c| assert_eq!(c.log.level, "warn"))
        .unwrap();
        assert!(err.to_string().contains("FAXD_API_LISTN"), "{err}");
        let err = Config::load_with_env(None, env(&[("FAXD_STORE_BACKEND", "mysql")])).unwrap_err();
        assert!(err.to_string().contains("mysql"), "{err}");
    }

    #[test]
    fn loopback_and_file_proxy_defaults_and_overrides() {
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(c.loopback.line_time, LineTime::Accelerated);
        assert_eq!(c.loopback.law, G711Law::Ulaw);
        let patterns: Vec<(&str, LineBehaviour)> = c
            .loopback
            .numbers
            .iter()
            .map(|r| (r.pattern.as_str(), r.behaviour))
            .collect();
        assert_eq!(
            patterns,
            vec![
                ("+15550001xxx", LineBehaviour::Busy),
                ("+15550002xxx", LineBehaviour::NoAnswer),
                ("+15550003xxx", LineBehaviour::HangupAfterPages),
                ("+15550004xxx", LineBehaviour::NoFaxTones),
            ]
        );
        assert_eq!(c.loopback.numbers[2].pages, 1);
        assert_eq!(c.file_proxy.port, 0);
        assert_eq!(c.file_proxy.allowed, vec!["127.0.0.1/32", "::1/128"]);

        let c = Config::load_with_env(
            None,
            env(&[
                ("FAXD_LOOPBACK_LINE_TIME", "realtime"),
                (
                    "FAXD_LOOPBACK_NUMBERS",
                    r#"[{pattern = "+1666xxx", behaviour = "busy"}]"#,
                ),
                ("FAXD_FILE_PROXY_ALLOWED", r#"["10.0.0.0/8"]"#),
                ("FAXD_FILE_PROXY_PORT", "31000"),
            ]),
        )
        .unwrap();
        assert_eq!(c.loopback.line_time, LineTime::Realtime);
        assert_eq!(c.loopback.numbers.len(), 1);
        assert_eq!(c.loopback.numbers[0].behaviour, LineBehaviour::Busy);
        assert_eq!(c.file_proxy.allowed, vec!["10.0.0.0/8"]);
        assert_eq!(c.file_proxy.port, 31000);
    }

    #[test]
    fn cookie_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::default();
        c.node.data_dir = dir.path().to_path_buf();
        assert!(c.cookie(false).is_err());
        let first = c.cookie(true).unwrap();
        assert_eq!(c.cookie(false).unwrap(), first);
        let mode = std::fs::metadata(dir.path().join("cookie"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn rate_limits_are_on_by_default_and_checked() {
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert!(c.api.rate_limit.enabled);
        assert_eq!(c.api.rate_limit.address_burst, 1000);
        assert_eq!(c.api.rate_limit.failed_login_cost, 20);
        assert!(c.api.rate_limit.trusted_proxies.is_empty());
        let c = Config::load_with_env(
            None,
            env(&[
                ("FAXD_API_RATE_LIMIT_ENABLED", "false"),
                ("FAXD_API_RATE_LIMIT_LOGIN_PER_S", "0.25"),
                ("FAXD_API_RATE_LIMIT_TRUSTED_PROXIES", r#"["10.0.0.0/8"]"#),
            ]),
        )
        .unwrap();
        assert!(!c.api.rate_limit.enabled);
        assert_eq!(c.api.rate_limit.login_per_s, 0.25);
        assert_eq!(c.api.rate_limit.trusted_proxies, vec!["10.0.0.0/8"]);
        for (var, value, names) in [
            (
                "FAXD_API_RATE_LIMIT_TRUSTED_PROXIES",
                r#"["proxy.lan"]"#,
                "trusted_proxies",
            ),
            ("FAXD_API_RATE_LIMIT_ACCOUNT_PER_S", "0", "account_per_s"),
            (
                "FAXD_API_RATE_LIMIT_FAILED_LOGIN_COST",
                "0",
                "failed_login_cost",
            ),
            ("FAXD_API_RATE_LIMIT_ADDRESS_BURST", "0", "address_burst"),
        ] {
            let err = Config::load_with_env(None, env(&[(var, value)])).unwrap_err();
            assert!(err.to_string().contains(names), "{var}: {err}");
        }
    }

    #[test]
    fn cluster_tls_and_metrics_addresses_are_checked() {
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert!(c.cluster.tls_files().unwrap().is_none());
        assert_eq!(c.api.metrics_allow, vec!["127.0.0.1", "::1"]);
        let c = Config::load_with_env(
            None,
            env(&[
                ("FAXD_CLUSTER_TLS_CERT", "/etc/faxd/node.pem"),
                ("FAXD_CLUSTER_TLS_KEY", "/etc/faxd/node.key"),
                ("FAXD_CLUSTER_TLS_CA", "/etc/faxd/ca.pem"),
            ]),
        )
        .unwrap();
        let files = c.cluster.tls_files().unwrap().expect("tls on");
        assert_eq!(
            (files.cert, files.ca),
            ("/etc/faxd/node.pem", "/etc/faxd/ca.pem")
        );
        let err =
            Config::load_with_env(None, env(&[("FAXD_CLUSTER_TLS_CERT", "/x.pem")])).unwrap_err();
        assert!(err.to_string().contains("set together"), "{err}");
        let err = Config::load_with_env(None, env(&[("FAXD_API_METRICS_ALLOW", r#"["lan"]"#)]))
            .unwrap_err();
        assert!(err.to_string().contains("api.metrics_allow"), "{err}");
    }

    #[test]
    fn shipped_examples_load() {
        for name in [
            "dev.toml",
            "couchdb.toml",
            "cluster/fax1.toml",
            "cluster/fax2.toml",
            "cluster/fax3.toml",
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("rel").join(name);
            Config::load_with_env(Some(&path), env(&[])).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
