//! Mutual TLS on the cluster port, on real `faxd` processes with certificates made by
//! `openssl`: two nodes link over it and `faxd sup` runs commands over it; a client without
//! TLS or with a certificate from another CA gets nothing; and what a node or `faxd sup`
//! sends first on a link is a TLS handshake, so the cookie never crosses in the clear.

mod common;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::tls::certificates;
use common::*;

const NODE_A: &str = "faxd-a@127.0.0.1";
const NODE_B: &str = "faxd-b@127.0.0.1";
const COOKIE: &str = "faxd-tls-test-cookie";

fn tls_env(certs: &(PathBuf, PathBuf, PathBuf)) -> Vec<(String, String)> {
    vec![
        (
            "FAXD_CLUSTER_TLS_CERT".into(),
            certs.0.display().to_string(),
        ),
        ("FAXD_CLUSTER_TLS_KEY".into(), certs.1.display().to_string()),
        ("FAXD_CLUSTER_TLS_CA".into(), certs.2.display().to_string()),
    ]
}

fn env(dir: &Path, name: &str, seeds: &[&str], tls: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = Node::env_for(dir);
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    env.push(("FAXD_NODE_NAME".into(), name.into()));
    env.push(("FAXD_CLUSTER_COOKIE".into(), COOKIE.into()));
    env.push((
        "FAXD_CLUSTER_SEEDS".into(),
        format!("[{}]", seeds.join(",")),
    ));
    env.extend(tls.iter().cloned());
    env
}

fn members_line(node: &Node) -> String {
    let (code, out, err) = node.sup(&["faxd_maintenance", "status"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    out.lines()
        .find(|l| l.starts_with("members:"))
        .unwrap_or_else(|| panic!("no members line in:\n{out}"))
        .to_string()
}

#[test]
fn nodes_link_and_sup_runs_over_mutual_tls_and_nothing_else_gets_in() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = certificates(tmp.path(), "cluster-ca");
    let stranger = certificates(tmp.path(), "other-ca");
    let tls = tls_env(&certs);
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let env_a = env(&dir_a, NODE_A, &[], &tls);
    let port_a = env_a
        .iter()
        .find(|(k, _)| k == "FAXD_CLUSTER_LISTEN")
        .map(|(_, v)| v.clone())
        .unwrap();
    let a = Node::start(&dir_a, env_a);
    let b = Node::start(&dir_b, env(&dir_b, NODE_B, &[&port_a], &tls));

    // B links to A over TLS, and `faxd sup` (TLS, from the same settings) sees it on both.
    poll("B linked to A over TLS", Duration::from_secs(60), || {
        members_line(&b).contains(NODE_A).then_some(())
    });
    poll("A sees B", Duration::from_secs(60), || {
        members_line(&a).contains(NODE_B).then_some(())
    });

    // A plaintext client with the right cookie gets nothing.
    let plain = [
        ("FAXD_CLUSTER_TLS_CERT", ""),
        ("FAXD_CLUSTER_TLS_KEY", ""),
        ("FAXD_CLUSTER_TLS_CA", ""),
    ];
    let (code, out, err) = a.sup(&["--timeout", "3", "faxd_maintenance", "status"], &plain);
    assert_eq!(code, 1, "a plaintext sup got in: {out}{err}");
    // Nor does one whose certificate another CA signed (it trusts A's CA, A does not trust
    // its own).
    let (cert, key) = (
        stranger.0.display().to_string(),
        stranger.1.display().to_string(),
    );
    let ca = certs.2.display().to_string();
    let foreign = [
        ("FAXD_CLUSTER_TLS_CERT", cert.as_str()),
        ("FAXD_CLUSTER_TLS_KEY", key.as_str()),
        ("FAXD_CLUSTER_TLS_CA", ca.as_str()),
    ];
    let refusals = || {
        a.stderr
            .lock()
            .unwrap()
            .matches("TLS handshake failed")
            .count()
    };
    let before = refusals();
    let (code, out, err) = a.sup(&["--timeout", "3", "faxd_maintenance", "status"], &foreign);
    assert_eq!(
        code, 1,
        "a sup with a foreign certificate got in: {out}{err}"
    );
    // A logs this refusal itself (the plaintext one above logged its own).
    poll(
        "A logs the refused handshake",
        Duration::from_secs(20),
        || (refusals() > before).then_some(()),
    );
    // Only B is a member of A's cluster.
    let line = members_line(&a);
    assert!(line.contains("1 linked"), "{line}");
    assert_eq!(a.stop_with("TERM"), 0);
    assert_eq!(b.stop_with("TERM"), 0);
}

/// The first bytes a client sends on `conn` (up to 4 KiB, or until it stops sending).
fn first_bytes(mut conn: TcpStream) -> Vec<u8> {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while got.len() < 4096 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

fn assert_tls_hello(bytes: &[u8], who: &str) {
    // A TLS record of type handshake (22), protocol major version 3.
    assert!(
        bytes.len() > 5 && bytes[0] == 0x16 && bytes[1] == 0x03,
        "{who} did not open with a TLS handshake: {:02x?}",
        &bytes[..bytes.len().min(16)]
    );
    assert!(
        !bytes.windows(COOKIE.len()).any(|w| w == COOKIE.as_bytes()),
        "{who} sent the cookie in the clear"
    );
}

#[test]
fn the_cookie_never_crosses_a_plaintext_link() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = certificates(tmp.path(), "cluster-ca");
    let tls = tls_env(&certs);
    // A listener that is not faxd, standing where the seed should be.
    let fake = TcpListener::bind("127.0.0.1:0").unwrap();
    let fake_addr = fake.local_addr().unwrap().to_string();
    let dir = tmp.path().join("a");
    std::fs::create_dir_all(&dir).unwrap();
    let a = Node::start(&dir, env(&dir, NODE_A, &[&fake_addr], &tls));
    let (conn, _) = fake.accept().expect("the node dials its seed");
    assert_tls_hello(&first_bytes(conn), "a node dialling its seed");

    // `faxd sup` pointed at the fake listener.
    let sup = std::thread::spawn({
        let env = a.env.clone();
        let addr = fake_addr.clone();
        move || {
            Command::new(FAXD)
                .args([
                    "sup",
                    "--node",
                    &addr,
                    "--timeout",
                    "3",
                    "faxd_maintenance",
                    "status",
                ])
                .env_remove("FAXD_LOG")
                .envs(env)
                .output()
                .expect("faxd sup")
        }
    });
    // The node redials its seed meanwhile: every connection until the sup gives up (its
    // handshake is never answered) must open with TLS.
    fake.set_nonblocking(true).unwrap();
    let mut seen = 0;
    poll("faxd sup to give up", Duration::from_secs(30), || {
        match fake.accept() {
            Ok((conn, _)) => {
                assert_tls_hello(&first_bytes(conn), "a client of the cluster port");
                seen += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}"),
        }
        sup.is_finished().then_some(())
    });
    assert!(seen >= 1, "faxd sup never connected");
    let out = sup.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "sup did not fail against a non-faxd listener"
    );
    assert_eq!(a.stop_with("TERM"), 0);
}
