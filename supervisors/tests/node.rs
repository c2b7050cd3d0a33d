//! The `faxd` binary end to end: `serve` with the embedded defaults answers `/v2/about` and
//! `/healthz`, creates the admin credentials once, stops in order on SIGTERM/SIGINT with exit
//! 0; `faxd sup` runs maintenance commands over the cluster and refuses a wrong cookie.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use serde_json::Value;

#[test]
fn serve_answers_about_and_health_then_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let env = Node::env_for(dir.path());
    let node = Node::start(dir.path(), env.clone());

    let (status, headers, body) = http_get(&node.url("/v2/about")).expect("about");
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    let request_id = header(&headers, "x-request-id")
        .expect("X-Request-Id")
        .to_string();
    assert_eq!(request_id.len(), 32);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success");
    assert_eq!(v["request_id"], request_id.as_str());
    assert_eq!(v["data"]["storage"], "embedded");
    assert_eq!(v["data"]["media"], "loopback");
    assert_eq!(v["data"]["node"], "faxd@127.0.0.1");
    assert_eq!(v["data"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["data"]["started"].as_str().unwrap().ends_with('Z'));
    for key in ["node", "version", "timestamp"] {
        assert!(v[key].is_string(), "envelope lacks {key}: {v}");
    }

    // A client's request id is echoed; errors carry one too, in Kazoo's error envelope.
    let (_, headers, _) = http_request(
        "GET",
        &node.url("/v2/about"),
        &[("X-Request-ID", "client-chosen-id-1")],
    )
    .unwrap();
    assert_eq!(header(&headers, "x-request-id"), Some("client-chosen-id-1"));
    let (status, headers, body) = http_get(&node.url("/v2/no/such/thing")).unwrap();
    assert_eq!(status, 404);
    assert!(header(&headers, "x-request-id").is_some());
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "error");
    assert_eq!(v["error"], "404");
    assert_eq!(v["message"], "not_found");
    assert!(v["request_id"].is_string());

    let (status, _, body) = http_get(&node.url("/healthz")).unwrap();
    assert_eq!(status, 200, "{body}");

    // First start: credentials printed once and saved privately.
    let creds_path = dir.path().join("admin-credentials");
    let creds = std::fs::read_to_string(&creds_path).unwrap();
    let mode = std::fs::metadata(&creds_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let password = creds
        .lines()
        .find_map(|l| l.strip_prefix("password="))
        .unwrap()
        .to_string();
    assert!(password.len() >= 16);
    let printed = poll("credentials on stdout", Duration::from_secs(10), || {
        let out = node.stdout.lock().unwrap().clone();
        out.contains(&password).then_some(out)
    });
    assert!(printed.contains("admin"));

    assert_eq!(node.stop_with("TERM"), 0);

    // Second start on the same store: no new credentials; SIGINT stops it too.
    let node = Node::start(dir.path(), env);
    let (status, _, _) = http_get(&node.url("/v2/about")).unwrap();
    assert_eq!(status, 200);
    assert_eq!(std::fs::read_to_string(&creds_path).unwrap(), creds);
    assert!(!node.stdout.lock().unwrap().contains("password"));
    assert_eq!(node.stop_with("INT"), 0);
}

#[test]
fn sup_reports_status_and_changes_config_live() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Node::env_for(dir.path()));

    let (code, out, err) = node.sup(&["faxd_maintenance", "status"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("node:     faxd@127.0.0.1"), "{out}");
    assert!(out.contains("store:    embedded"), "{out}");
    assert!(out.contains("uptime:"), "{out}");
    assert!(
        out.contains("outbound: leader faxd@127.0.0.1 (embedded store: single node)"),
        "{out}"
    );
    for child in [
        "cluster",
        "file_proxy",
        "sysconf",
        "api_server",
        "notify",
        "fax_requests_sup",
        "fax_inbound",
        "fax_maintenance",
    ] {
        let line = out
            .lines()
            .find(|l| l.contains(child))
            .unwrap_or_else(|| panic!("{child} missing from:\n{out}"));
        assert!(
            line.contains("permanent") && line.contains("running"),
            "{line}"
        );
        assert!(line.ends_with("restarts 0"), "{line}");
    }
    assert!(
        out.contains("fax_sup (one_for_one, 5 restarts / 25s)"),
        "{out}"
    );

    let (code, out, _) = node.sup(&["kapps_config", "get", "fax", "max_outbound"], &[]);
    assert_eq!((code, out.trim()), (0, "10"));
    let (code, out, err) = node.sup(&["kapps_config", "set", "fax", "max_outbound", "20"], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "20");
    let (code, out, _) = node.sup(&["kapps_config", "get", "fax", "max_outbound"], &[]);
    assert_eq!((code, out.trim()), (0, "20"));
    // Bad values and keys are refused with a reason.
    let (code, _, err) = node.sup(
        &["kapps_config", "set", "fax", "max_outbound", "\"lots\""],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("max_outbound"), "{err}");
    let (code, _, err) = node.sup(&["kapps_config", "get", "fax", "no_such_key"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("no_such_key"), "{err}");
    let (code, _, err) = node.sup(&["bogus_module", "x"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown command"), "{err}");

    // A wrong cookie is refused clearly.
    let (code, _, err) = node.sup(
        &["faxd_maintenance", "status"],
        &[("FAXD_CLUSTER_COOKIE", "not-the-cookie")],
    );
    assert_eq!(code, 1);
    assert!(err.contains("cookie"), "{err}");
    drop(node);

    // The stored value survives a restart (it lives in system_config/fax).
    let env = Node::env_for(dir.path());
    let node = Node::start(dir.path(), env);
    let (code, out, _) = node.sup(&["kapps_config", "get", "fax", "max_outbound"], &[]);
    assert_eq!((code, out.trim()), (0, "20"));
    let cluster = node.cluster.clone();
    assert_eq!(node.stop_with("TERM"), 0);

    // Nobody listening: a clear error.
    let out = std::process::Command::new(FAXD)
        .args(["sup", "--node", &cluster, "faxd_maintenance", "status"])
        .env("FAXD_NODE_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach"), "{err}");
}
