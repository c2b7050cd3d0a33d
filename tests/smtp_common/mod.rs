//! Helpers for the e-mail-to-fax tests: the real API server and the real SMTP listener
//! (fax_smtp's accept loop and store service) on one store, a tenant with a faxbox, a raw
//! SMTP client for dialogue tests, and throw-away TLS certificates made with openssl.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use faxd::config::SystemConfig;
use faxd::ids::Db;
use faxd::intake::background::IntakePool;
use faxd::intake::fetch::FetchPolicy;
use faxd::intake::submit::IntakeService;
use faxd::smtp::SessionConfig;
use faxd::smtp::extract::MimeLimits;
use faxd::smtp::listener::{self, Shutdown};
use faxd::smtp::service::SmtpService;
use faxd::store::SharedStore;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::api_common::{Api, Dir, Tenant, poll, test_options};

/// The e-mail corpus directory.
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/email")
            .join(name),
    )
    .expect("fixture")
}

pub fn fixture_path(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/email")
        .join(name)
        .display()
        .to_string()
}

/// The API and an SMTP listener on one store, with a tenant and a faxbox that admits
/// `@example.com` senders.
pub struct Rig {
    pub api: Api,
    pub admin: Tenant,
    pub faxbox_id: String,
    /// The faxbox's SMTP domain (`<8hex>.<default_smtp_domain>`).
    pub domain: String,
    pub addr: SocketAddr,
    /// The service and session settings the listener runs with (for in-memory sessions).
    pub service: Arc<SmtpService>,
    pub cfg: Arc<SessionConfig>,
    stop: Shutdown,
    task: JoinHandle<()>,
}

impl Rig {
    pub async fn start(store: SharedStore, dir: Dir) -> Rig {
        Self::start_with(store, dir, |_| {}, 50).await
    }

    pub async fn start_with(
        store: SharedStore,
        dir: Dir,
        tweak: impl FnOnce(&mut SessionConfig),
        sessions: usize,
    ) -> Rig {
        let api = Api::start(store.clone(), dir, test_options()).await;
        let admin = api.root_tenant().await;
        let caller_id = api.own_number(&admin).await;
        let fb = api
            .put(
                &format!("/v2/accounts/{}/faxboxes", admin.id),
                &admin.token,
                json!({"name": "office", "caller_id": caller_id,
                       "smtp_permission_list": ["@example.com"]}),
            )
            .await;
        assert_eq!(fb.status, StatusCode::CREATED, "{}", fb.body);
        let faxbox_id = fb.data()["id"].as_str().expect("id").to_string();
        let domain = fb.data()["smtp_email_address"]
            .as_str()
            .expect("smtp address")
            .to_string();
        let sysconf = SystemConfig::load(store.clone(), "faxd@test")
            .await
            .expect("sysconf");
        let mut cfg = SessionConfig::new("fax.test", sysconf.fax().smtp_max_msg_size);
        tweak(&mut cfg);
        let service = SmtpService {
            intake: IntakeService {
                store: store.clone(),
                sysconf,
                converter: Arc::new(faxd::convert::Converter::new(Default::default())),
                fetch: FetchPolicy::from_config(&test_options()),
                pool: IntakePool::default(),
                notify: Default::default(),
            },
            limits: MimeLimits::default(),
        };
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = socket.local_addr().expect("addr");
        let (stop, stopped) = Shutdown::new();
        let cfg = Arc::new(cfg);
        let service = Arc::new(service);
        let (c2, s2) = (cfg.clone(), service.clone());
        let task = tokio::spawn(async move {
            listener::serve(socket, c2, s2, sessions, stopped, Duration::from_secs(5))
                .await
                .expect("listener");
        });
        Rig {
            api,
            admin,
            faxbox_id,
            domain,
            addr,
            service,
            cfg,
            stop,
            task,
        }
    }

    pub async fn stop(self) {
        self.stop.trigger();
        let _ = self.task.await;
        self.api.stop().await;
    }

    /// An address of the faxbox for `number`.
    pub fn rcpt(&self, number: &str) -> String {
        format!("{number}@{}", self.domain)
    }

    /// The account's queued jobs (`GET …/faxes/outgoing`).
    pub async fn outgoing(&self) -> Vec<Value> {
        let a = self
            .api
            .get(
                &format!("/v2/accounts/{}/faxes/outgoing", self.admin.id),
                &self.admin.token,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        a.data().as_array().cloned().unwrap_or_default()
    }

    /// The account's e-mail-to-fax logs (`GET …/faxes/smtplog`).
    pub async fn smtplog(&self) -> Vec<Value> {
        let a = self
            .api
            .get(
                &format!("/v2/accounts/{}/faxes/smtplog", self.admin.id),
                &self.admin.token,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        a.data().as_array().cloned().unwrap_or_default()
    }

    /// A job as stored in the queue.
    pub async fn job(&self, id: &str) -> Value {
        self.api
            .store
            .get(&Db::Faxes, id)
            .await
            .expect("store")
            .unwrap_or(Value::Null)
    }

    /// One e-mail-to-fax log document (`GET …/faxes/smtplog/{id}`).
    pub async fn smtplog_doc(&self, id: &str) -> Value {
        let a = self
            .api
            .get(
                &format!("/v2/accounts/{}/faxes/smtplog/{id}", self.admin.id),
                &self.admin.token,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        a.data().clone()
    }

    /// Waits for `n` log rows and returns them (newest first).
    pub async fn logs(&self, n: usize) -> Vec<Value> {
        poll("smtp logs", Duration::from_secs(20), || async {
            let rows = self.smtplog().await;
            (rows.len() >= n).then_some(rows)
        })
        .await
    }
}

/// The job ids of a `250 2.0.0 queued as <id> …` reply.
pub fn queued_ids(reply: &str) -> Vec<String> {
    reply
        .lines()
        .last()
        .and_then(|l| l.split("queued as ").nth(1))
        .map(|ids| ids.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// A raw SMTP client over any stream: writes bytes, reads one (multi-line) reply at a time.
pub struct Client<S> {
    reader: BufReader<tokio::io::ReadHalf<S>>,
    writer: tokio::io::WriteHalf<S>,
}

impl Client<TcpStream> {
    pub async fn connect(addr: SocketAddr) -> (Client<TcpStream>, String) {
        let s = TcpStream::connect(addr).await.expect("connect");
        let mut c = Client::over(s);
        let greeting = c.reply().await;
        (c, greeting)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub fn over(stream: S) -> Client<S> {
        let (r, w) = tokio::io::split(stream);
        Client {
            reader: BufReader::new(r),
            writer: w,
        }
    }

    /// The stream back (for a TLS handshake after STARTTLS).
    pub fn into_inner(self) -> S {
        self.reader.into_inner().unsplit(self.writer)
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
        self.writer.flush().await.expect("flush");
    }

    /// One reply (all its lines), or "" when the server closed the connection.
    pub async fn reply(&mut self) -> String {
        let mut out = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(60), self.reader.read_line(&mut line))
                .await
                .expect("reply within 60 s")
                .unwrap_or(0);
            if n == 0 {
                return out;
            }
            out.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return out;
            }
        }
    }

    /// Sends a command line and returns its reply.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// MAIL, RCPT and DATA for one recipient; the reply to DATA.
    pub async fn begin(&mut self, from: &str, to: &str) -> String {
        self.cmd(&format!("MAIL FROM:<{from}>")).await;
        self.cmd(&format!("RCPT TO:<{to}>")).await;
        self.cmd("DATA").await
    }

    /// Whether the server closed the connection (nothing more to read).
    pub async fn closed(&mut self) -> bool {
        self.reply().await.is_empty()
    }
}

/// `openssl req` key arguments: P-256, or RSA 2048 (what RSA key exchange needs).
pub const EC_KEY: &[&str] = &[
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];
pub const RSA_KEY: &[&str] = &["-newkey", "rsa:2048", "-nodes"];

/// A test CA and a certificate it signed for 127.0.0.1/localhost, written into `dir`:
/// (CA certificate, server certificate chain, server key), PEM paths. P-256 keys.
pub fn test_cert(dir: &Path) -> (String, String, String) {
    test_cert_with(dir, EC_KEY)
}

/// [`test_cert`] with keys made by `key_args` ([`EC_KEY`], [`RSA_KEY`]).
pub fn test_cert_with(dir: &Path, key_args: &[&str]) -> (String, String, String) {
    let p = |n: &str| dir.join(n).display().to_string();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mut a = vec!["req", "-x509", "-days", "1", "-subj", "/CN=faxd test CA"];
    a.extend(key_args);
    let (ca, ca_key) = (p("ca.pem"), p("ca.key"));
    a.extend(["-keyout", &ca_key, "-out", &ca]);
    run(&a);
    let (csr, key, cert) = (p("leaf.csr"), p("key.pem"), p("cert.pem"));
    let mut b = vec!["req", "-subj", "/CN=localhost"];
    b.extend(key_args);
    b.extend(["-keyout", &key, "-out", &csr]);
    run(&b);
    let ext = p("leaf.ext");
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    let serial = p("ca.srl");
    run(&[
        "x509",
        "-req",
        "-days",
        "1",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAserial",
        &serial,
        "-CAcreateserial",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    (ca, cert, key)
}

/// A TLS client configuration that trusts the test CA.
pub fn tls_client(ca_pem: &str) -> tokio_rustls::TlsConnector {
    let roots = faxd::tls::roots("test ca", ca_pem).expect("ca");
    let cfg = tokio_rustls::rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}
