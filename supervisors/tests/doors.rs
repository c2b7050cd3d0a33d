//! Every door of a real `faxd serve` has a deadline and a bound, checked with bounded floods
//! over loopback sockets (several 127.0.0.x source addresses stand for several clients):
//! stalled request bodies are cut, one address cannot hold more than its share of
//! connections, a declared oversized upload is refused at once, the cluster port closes
//! connections that do not authenticate, and the node's log and memory stay bounded.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Connects to `dst` from the loopback address `src`.
async fn connect_from(src: &str, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(format!("{src}:0").parse().expect("address"))?;
    sock.connect(dst).await
}

/// What the server did with a connection: the status line it answered, if any, and whether
/// it closed the connection.
#[derive(Debug)]
struct Outcome {
    status: Option<u16>,
    body: String,
    closed: bool,
}

/// Reads what the server sends until it closes the connection or `within` passes.
async fn outcome(s: &mut TcpStream, within: Duration) -> Outcome {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    let closed = loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok());
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Outcome {
        status,
        body,
        closed,
    }
}

/// Reads one whole response (head and `Content-Length` body), without waiting for the close:
/// its status and body, or `None` when none arrives within `within`.
async fn answer(s: &mut TcpStream, within: Duration) -> Option<(u16, String)> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let text = String::from_utf8_lossy(&raw).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(str::to_string)
                })
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= len {
                let status = head.split_whitespace().nth(1)?.parse().ok()?;
                return Some((status, body.to_string()));
            }
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => raw.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
}

/// `GET /v2/about` from 127.0.0.1: its status, or `None` when the node does not answer in 5 s.
async fn about(api: SocketAddr) -> Option<u16> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(api))
        .await
        .ok()?
        .ok()?;
    s.write_all(b"GET /v2/about HTTP/1.1\r\nHost: faxd\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let o = outcome(&mut s, Duration::from_secs(5)).await;
    o.status
}

/// Resident memory of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// A request head announcing a 1000-byte JSON body, and its first byte.
const STALLED: &[u8] =
    b"PUT /v2/user_auth HTTP/1.1\r\nHost: faxd\r\nContent-Type: application/json\r\n\
Content-Length: 1000\r\n\r\n{";

fn node_with(extra: &[(&str, &str)], nofile: Option<(u64, u64)>) -> (tempfile::TempDir, Node) {
    let dir = tempfile::tempdir().unwrap();
    let mut env = Node::env_for(dir.path());
    for (k, v) in extra {
        env.push((k.to_string(), v.to_string()));
    }
    let node = Node::start_with_fd_limit(dir.path(), env, nofile);
    (dir, node)
}

/// Lines the node has logged so far.
fn log_lines(node: &Node) -> usize {
    node.stderr.lock().map(|s| s.lines().count()).unwrap_or(0)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_are_cut_and_one_address_gets_only_its_share() {
    let per_address = 20;
    let (_dir, node) = node_with(
        &[
            ("FAXD_API_BODY_TIMEOUT_S", "1"),
            ("FAXD_API_MAX_CONNECTIONS_PER_ADDRESS", "20"),
        ],
        None,
    );
    let api = addr(&node.api);
    let pid = node.child.id();
    let rss_before = rss_kib(pid);
    let log_before = log_lines(&node);

    // 200 connections from one address, each sending 1 byte of a 1000-byte body.
    let started = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..200 {
        let mut s = connect_from("127.0.0.2", api).await.expect("connect");
        let _ = s.write_all(STALLED).await;
        conns.push(s);
    }
    // Another client is served meanwhile.
    assert_eq!(about(api).await, Some(200), "/v2/about during the flood");
    let rss_peak = rss_kib(pid);

    let mut refused = 0;
    let mut timed_out = 0;
    for s in &mut conns {
        let o = outcome(s, Duration::from_secs(20)).await;
        assert!(
            o.closed,
            "a flood connection is still open after 20 s: {o:?}"
        );
        match o.status {
            Some(408) => {
                assert!(o.body.contains("\"request_timeout\""), "{}", o.body);
                assert!(o.body.contains("\"status\":\"error\""), "{}", o.body);
                timed_out += 1;
            }
            Some(429) => {
                assert!(o.body.contains("\"too_many_requests\""), "{}", o.body);
                refused += 1;
            }
            // Refused before the request was read: the close may come as a reset.
            None => refused += 1,
            Some(other) => panic!("unexpected answer {other}: {}", o.body),
        }
    }
    let cut_after = started.elapsed();
    assert_eq!(
        timed_out, per_address,
        "admitted connections end with a 408"
    );
    assert_eq!(refused, 200 - per_address);
    assert!(cut_after < Duration::from_secs(15), "{cut_after:?}");
    assert_eq!(about(api).await, Some(200), "/v2/about after the flood");

    // Memory comes back down once the connections are gone.
    let rss_after = common::poll("RSS to settle", Duration::from_secs(30), || {
        let r = rss_kib(pid);
        (r < rss_before + 32 * 1024).then_some(r)
    });
    let log_after = log_lines(&node);
    eprintln!(
        "RSS KiB before {rss_before}, flood {rss_peak}, after {rss_after}; \
         log lines during the flood {}",
        log_after - log_before
    );
    assert!(
        rss_peak < rss_before + 64 * 1024,
        "{rss_before} → {rss_peak}"
    );
    assert!(
        log_after - log_before < 40,
        "{} log lines",
        log_after - log_before
    );
}

/// Creates an account with `faxd sup` and logs its admin in: (account id, token).
async fn tenant(node: &Node, api: SocketAddr) -> (String, String) {
    let (code, out, err) = node.sup(
        &[
            "crossbar_maintenance",
            "create_account",
            "Doors",
            "doors.example.com",
            "boss",
            "s3cret",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (md5, _) = faxd::auth::login_digests("boss", "s3cret");
    let body = format!(r#"{{"data":{{"credentials":"{md5}","account_name":"Doors"}}}}"#);
    let mut s = TcpStream::connect(api).await.unwrap();
    let req = format!(
        "PUT /v2/user_auth HTTP/1.1\r\nHost: faxd\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let (status, body) = answer(&mut s, Duration::from_secs(10))
        .await
        .expect("login");
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    (
        v["data"]["account_id"].as_str().unwrap().to_string(),
        v["auth_token"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_oversized_body_is_refused_at_once() {
    let (_dir, node) = node_with(
        &[
            ("FAXD_API_MAX_UPLOAD_BYTES", "1000000"),
            ("FAXD_API_BODY_TIMEOUT_S", "1"),
        ],
        None,
    );
    let api = addr(&node.api);
    let (account, token) = tenant(&node, api).await;
    let cases = [
        (
            format!("/v2/accounts/{account}/faxes/outgoing"),
            "multipart/mixed; boundary=x",
            60_000_000u64,
            1_000_000u64,
        ),
        (
            format!("/v2/accounts/{account}/faxboxes"),
            "application/json",
            9_000_000,
            8_000_000,
        ),
    ];
    for (path, ct, declared, limit) in cases {
        let mut s = TcpStream::connect(api).await.unwrap();
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: faxd\r\nX-Auth-Token: {token}\r\nContent-Type: {ct}\r\n\
             Content-Length: {declared}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        // Nothing of the body is sent: the answer must not wait for it.
        let t0 = Instant::now();
        let (status, body) = answer(&mut s, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("{path}: no answer without the body"));
        assert_eq!(status, 413, "{path}: {body}");
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "{path}: {:?}",
            t0.elapsed()
        );
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON envelope");
        assert_eq!(v["status"], "error");
        assert_eq!(v["error"], "413");
        assert_eq!(v["data"]["file"]["maxSize"]["target"], limit, "{path}");
    }
    // A stalled JSON body on a route that needs a token, sent without the token header (so
    // the token could be in the body): cut at the deadline too.
    let mut s = TcpStream::connect(api).await.unwrap();
    let head = format!(
        "PUT /v2/accounts/{account}/faxboxes HTTP/1.1\r\nHost: faxd\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (status, body) = answer(&mut s, Duration::from_secs(15))
        .await
        .expect("a stalled body without a token header is never answered");
    assert_eq!(status, 408, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_over_the_fd_limit_does_not_stop_the_node() {
    // 30 addresses × 16 connections with stalled bodies, against a node that may open 200
    // descriptors in all.
    let (_dir, node) = node_with(
        &[
            ("FAXD_API_BODY_TIMEOUT_S", "2"),
            ("FAXD_API_MAX_CONNECTIONS_PER_ADDRESS", "16"),
        ],
        Some((200, 200)),
    );
    let api = addr(&node.api);
    let log_before = log_lines(&node);
    let mut conns = Vec::new();
    for a in 2..32 {
        for _ in 0..16 {
            if let Ok(mut s) = connect_from(&format!("127.0.0.{a}"), api).await {
                let _ = s.write_all(STALLED).await;
                conns.push(s);
            }
        }
    }
    assert!(conns.len() > 200, "only {} connections", conns.len());
    // The node answers (the flood drains at the body deadline), and keeps answering.
    let t0 = Instant::now();
    loop {
        if about(api).await == Some(200) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "/v2/about never answered"
        );
    }
    // Every flood connection gets an end; none is held.
    for s in &mut conns {
        let o = outcome(s, Duration::from_secs(60)).await;
        assert!(o.closed, "{o:?}");
        assert!(matches!(o.status, None | Some(408) | Some(429)), "{o:?}");
    }
    assert_eq!(about(api).await, Some(200));
    assert!(node.child.id() > 0);
    let lines = log_lines(&node) - log_before;
    assert!(lines < 60, "{lines} log lines");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_port_bounds_idle_connections_and_still_takes_sup() {
    let (_dir, node) = node_with(
        &[
            ("FAXD_CLUSTER_HANDSHAKE_TIMEOUT_S", "4"),
            ("FAXD_CLUSTER_MAX_CONNECTIONS_PER_ADDRESS", "100"),
        ],
        Some((2000, 2000)),
    );
    let cluster = addr(&node.cluster);
    let log_before = log_lines(&node);
    let mut conns = Vec::new();
    for a in ["127.0.0.2", "127.0.0.3"] {
        for _ in 0..150 {
            conns.push(connect_from(a, cluster).await.expect("connect"));
        }
    }
    // Idle connections: the over-limit ones are closed at once, the admitted ones (200
    // sessions, each of which ends with a warning from ractor_cluster) at the handshake
    // deadline.
    let t0 = Instant::now();
    let mut still_open_after_first_pass = 0;
    for s in &mut conns {
        let o = outcome(s, Duration::from_millis(5)).await;
        if !o.closed {
            still_open_after_first_pass += 1;
        }
    }
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "first pass too slow to count"
    );
    assert_eq!(
        still_open_after_first_pass, 200,
        "open connections before the handshake deadline: 100 per address"
    );
    for s in &mut conns {
        let o = outcome(s, Duration::from_secs(15)).await;
        assert!(
            o.closed,
            "an unauthenticated cluster connection is still open"
        );
    }
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    // A real peer (`faxd sup`, cookie handshake) still gets through the same door.
    let (code, out, err) = node.sup(&["faxd_maintenance", "status"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    // 300 connections, 200 sessions closed: a few lines, not one or more per connection.
    let lines = log_lines(&node) - log_before;
    assert!(lines < 60, "{lines} log lines for 300 connections");
}

#[test]
fn the_node_raises_its_soft_fd_limit_to_the_hard_one() {
    let (_dir, node) = node_with(&[], Some((256, 4096)));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", node.child.id())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files")
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect::<Vec<_>>();
    assert_eq!(open_files, ["4096", "4096"], "{limits}");
}
