//! The API on the real `faxd` binary: `faxd sup crossbar_maintenance create_account` creates an
//! account with an admin user who can then log in over HTTP; a duplicate name is refused.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::Node;

/// A blocking HTTP/1.1 request with a JSON body: (status, body).
fn send(url: &str, method: &str, body: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_at(rest.find('/').expect("path"));
    let mut s = std::net::TcpStream::connect(host).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nX-Auth-Token: undefined\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, body.to_string())
}

#[test]
fn sup_creates_an_account_whose_admin_can_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Node::env_for(dir.path()));
    let (code, out, err) = node.sup(
        &[
            "crossbar_maintenance",
            "create_account",
            "Acme Fax",
            "acme.example.com",
            "boss",
            "s3cret",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("created new account '"), "{out}");
    assert!(out.contains("in db 'account%2F"), "{out}");
    assert!(out.contains("created new account admin user '"), "{out}");
    let (md5, _) = faxd::auth::login_digests("boss", "s3cret");
    let (status, body) = send(
        &node.url("/v2/user_auth"),
        "PUT",
        &format!(r#"{{"data":{{"credentials":"{md5}","account_name":"acme fax"}}}}"#),
    );
    assert_eq!(status, 201, "{body}");
    assert!(body.contains("\"auth_token\""), "{body}");
    // Same name again: refused with the validation error.
    let (code, out, err) = node.sup(
        &[
            "crossbar_maintenance",
            "create_account",
            "ACME fax",
            "other.example.com",
            "x",
            "y",
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains("Account name already in use"),
        "{out}{err}"
    );
    assert_eq!(node.stop_with("TERM"), 0);
}
