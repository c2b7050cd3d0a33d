//! Helpers for tests that run the real `faxd` binary: free loopback ports, a node in a
//! temporary data directory, polling with deadlines.

#![allow(dead_code)]

pub mod admin;
pub mod cluster;
pub mod jobs;
pub mod tls;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const FAXD: &str = env!("CARGO_BIN_EXE_faxd");

/// A free TCP port on 127.0.0.1 for a node to listen on.
///
/// A port that is bound and released can be taken again before the node binds it: by another
/// port-0 bind or as the source port of any outgoing connection, both of which the kernel
/// picks from its ephemeral range. So the port comes from below that range (never handed out
/// by the kernel), is not one this test process gave out before, and binds right now.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32_768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    // Start at a point that differs between processes (test binaries run one after another,
    // but a node of an earlier one may still be closing its ports).
    let span = u32::from(high - low);
    let mut at = (std::process::id().wrapping_mul(7919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0))
        % span;
    for _ in 0..span {
        let port = low + at as u16;
        at = (at + 1) % span;
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port below the ephemeral range {low}..{high}");
}

/// Polls `f` until it returns `Some` or the deadline passes.
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A private CouchDB-API test server (tests/couchdb/server.js) for one test: the test can
/// stop it, and nodes scheduling every account of it see only that test's jobs.
pub struct Couch {
    pub child: Child,
    pub url: String,
}

impl Couch {
    pub fn start(dir: &Path) -> Couch {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/couchdb/server.js");
        let port_file = dir.join("couch-url");
        let child = Command::new("node")
            .arg(&script)
            .args(["--host", "127.0.0.1", "--port", "0", "--port-file"])
            .arg(&port_file)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node tests/couchdb/server.js (run through `make test`)");
        let url = poll("CouchDB-API test server", Duration::from_secs(30), || {
            std::fs::read_to_string(&port_file)
                .ok()
                .filter(|s| !s.is_empty())
        });
        Couch { child, url }
    }
}

impl Drop for Couch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `faxd serve` with its own data directory and ports.
pub struct Node {
    pub child: Child,
    pub data_dir: PathBuf,
    pub api: String,
    pub cluster: String,
    pub env: Vec<(String, String)>,
    pub stdout: Arc<Mutex<String>>,
    /// Everything the node logged (stderr), also echoed to the test's stderr.
    pub stderr: Arc<Mutex<String>>,
}

impl Node {
    /// Environment for a node using `data_dir`, with fresh ports.
    pub fn env_for(data_dir: &Path) -> Vec<(String, String)> {
        vec![
            ("FAXD_NODE_DATA_DIR".into(), data_dir.display().to_string()),
            (
                "FAXD_API_LISTEN".into(),
                format!("127.0.0.1:{}", free_port()),
            ),
            (
                "FAXD_CLUSTER_LISTEN".into(),
                format!("127.0.0.1:{}", free_port()),
            ),
            ("FAXD_FILE_PROXY_PORT".into(), free_port().to_string()),
            ("FAXD_LOG_LEVEL".into(), "info".into()),
        ]
    }

    /// Starts `faxd serve` with `env` and waits until `/healthz` answers 200.
    pub fn start(data_dir: &Path, env: Vec<(String, String)>) -> Node {
        Self::start_with_fd_limit(data_dir, env, None)
    }

    /// Like [`Node::start`], with `RLIMIT_NOFILE` set to `nofile` (soft, hard) in the child
    /// before it runs faxd.
    pub fn start_with_fd_limit(
        data_dir: &Path,
        env: Vec<(String, String)>,
        nofile: Option<(u64, u64)>,
    ) -> Node {
        let mut cmd = Command::new(FAXD);
        if let Some((soft, hard)) = nofile {
            use std::os::unix::process::CommandExt;
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: setrlimit is async-signal-safe and only reads `lim`, copied into the
            // closure; nothing is allocated between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        cmd.arg("serve")
            .env_remove("FAXD_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn faxd serve");
        let stdout = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("stdout");
        let sink = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        let err = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[faxd] {line}");
                if let Ok(mut s) = log.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let mut node = Node {
            child,
            data_dir: data_dir.to_path_buf(),
            api: get("FAXD_API_LISTEN"),
            cluster: get("FAXD_CLUSTER_LISTEN"),
            env,
            stdout,
            stderr,
        };
        node.wait_healthy();
        node
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.api, path)
    }

    fn wait_healthy(&mut self) {
        let url = self.url("/healthz");
        let child = &mut self.child;
        poll("faxd /healthz", Duration::from_secs(60), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("faxd exited during start: {status}");
            }
            match http_get(&url) {
                Some((200, _, _)) => Some(()),
                _ => None,
            }
        });
    }

    /// Sends a signal and waits for the exit code.
    pub fn stop_with(mut self, signal: &str) -> i32 {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{signal} {pid}");
        let child = &mut self.child;
        let status = poll("faxd to exit", Duration::from_secs(60), || {
            child.try_wait().ok().flatten()
        });
        status.code().unwrap_or(-1)
    }

    /// Runs `faxd sup <args>` against this node; returns (exit code, stdout, stderr).
    pub fn sup(&self, args: &[&str], extra_env: &[(&str, &str)]) -> (i32, String, String) {
        let mut cmd = Command::new(FAXD);
        cmd.arg("sup").args(args).env_remove("FAXD_LOG");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("faxd sup");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (status, headers with lower-cased names, body)
pub type Reply = (u16, Vec<(String, String)>, String);

/// A minimal blocking HTTP/1.1 GET over a real socket: (status, headers lower-cased, body).
pub fn http_get(url: &str) -> Option<Reply> {
    http_request("GET", url, &[])
}

pub fn http_request(method: &str, url: &str, headers: &[(&str, &str)]) -> Option<Reply> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((status, headers, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Polls (async) until `f` gives `Some`, or fails after `timeout`.
pub async fn poll_async<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The number the tests' faxes are sent from; [`sender_login`] makes it the admin account's.
pub const SENDER: &str = "+15551230000";

/// A line of the first-start admin's credentials file in the data directory `dir`.
pub fn admin_credential(dir: &Path, key: &str) -> String {
    std::fs::read_to_string(dir.join("admin-credentials"))
        .expect("admin-credentials")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("{key} missing from admin-credentials"))
}

/// Logs in as the first-start admin of the node in `dir`: (token, account id).
pub async fn admin_login(http: &reqwest::Client, api: &str, dir: &Path) -> (String, String) {
    let login: serde_json::Value = http
        .put(format!("{api}/user_auth"))
        .json(&serde_json::json!({"data": {
            "credentials": admin_credential(dir, "credentials"),
            "account_name": admin_credential(dir, "account_name"),
        }}))
        .send()
        .await
        .expect("user_auth")
        .json()
        .await
        .expect("user_auth JSON");
    (
        login["auth_token"].as_str().expect("token").to_string(),
        login["data"]["account_id"]
            .as_str()
            .expect("account")
            .to_string(),
    )
}

/// [`admin_login`], then the account takes [`SENDER`] (a receive_fax callflow), so its faxes
/// may be sent from that number.
pub async fn sender_login(http: &reqwest::Client, api: &str, dir: &Path) -> (String, String) {
    let (token, account) = admin_login(http, api, dir).await;
    own_number(http, api, &token, &account, SENDER).await;
    (token, account)
}

/// Gives `account` the number `e164` through a callflow, so it may send faxes from it (a
/// caller id must be a number of the account).
pub async fn own_number(http: &reqwest::Client, api: &str, token: &str, account: &str, e164: &str) {
    let r = http
        .put(format!("{api}/accounts/{account}/callflows"))
        .header("X-Auth-Token", token)
        .json(&serde_json::json!({"data": {"numbers": [e164], "flow": {"module": "receive_fax"}}}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert!(
        status.is_success(),
        "{status}: {}",
        r.text().await.unwrap_or_default()
    );
}

/// Sends a fax submission as the logged-in user: `PUT url` with a multipart body (the JSON
/// `meta`, then `doc` as `content_type`), whatever the answer.
pub async fn put_fax(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    meta: &serde_json::Value,
    content_type: &str,
    doc: &[u8],
) -> reqwest::Response {
    let boundary = "faxd-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Type: application/json\r\n\r\n{meta}\r\n--{boundary}\r\nContent-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(doc);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    http.put(url)
        .header("X-Auth-Token", token)
        .header(
            "Content-Type",
            format!("multipart/mixed; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .expect("the API answers")
}

/// Submits a fax as [`put_fax`] does; checks the answer is a success and returns its `data`.
pub async fn submit_fax(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    meta: &serde_json::Value,
    content_type: &str,
    doc: &[u8],
) -> serde_json::Value {
    let r = put_fax(http, url, token, meta, content_type, doc).await;
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(status.is_success(), "{status}: {v}");
    v["data"].clone()
}
