//! A node on the `couchdb` backend, against its own CouchDB-API test server: it installs the
//! design documents, reports `storage: couchdb`, applies a `system_config/fax` change written
//! by someone else without a restart, and `/healthz` turns 503 when CouchDB goes away.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn couchdb_node_installs_views_follows_config_and_reports_health() {
    let dir = tempfile::tempdir().unwrap();
    let mut couch = Couch::start(dir.path());
    let couch_url = couch.url.clone();
    let mut env = Node::env_for(dir.path());
    env.push(("FAXD_STORE_BACKEND".into(), "couchdb".into()));
    env.push(("FAXD_STORE_COUCH_URL".into(), couch_url.clone()));
    let path = dir.path().to_path_buf();
    let node = tokio::task::spawn_blocking(move || Node::start(&path, env))
        .await
        .unwrap();

    let (status, _, body) = http_get(&node.url("/v2/about")).unwrap();
    assert_eq!(status, 200);
    let about: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(about["data"]["storage"], "couchdb");

    // Kazoo's layout and design documents.
    let http = reqwest::Client::new();
    let dbs: Vec<String> = http
        .get(format!("{couch_url}/_all_dbs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for db in ["faxes", "accounts", "system_config"] {
        assert!(dbs.contains(&db.to_string()), "{db} missing: {dbs:?}");
    }
    assert!(
        dbs.iter().any(|d| d.starts_with("account/")),
        "master account db missing: {dbs:?}"
    );
    let design: Value = http
        .get(format!("{couch_url}/faxes/_design/faxes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for view in ["jobs_by_account", "schedule_accounts", "processing_by_node"] {
        assert!(design["views"][view]["map"].is_string(), "{view}: {design}");
    }

    // Another node (here: a plain HTTP client) changes system_config/fax: this node applies
    // it without a restart.
    let get_max = |node: &Node| {
        let (code, out, err) = node.sup(&["kapps_config", "get", "fax", "max_outbound"], &[]);
        assert_eq!(code, 0, "{err}");
        out.trim().to_string()
    };
    assert_eq!(tokio::task::block_in_place(|| get_max(&node)), "10");
    let url = format!("{couch_url}/system_config/fax");
    let current: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    let mut doc = json!({"_id": "fax", "default": {"max_outbound": 33}});
    if let Some(rev) = current.get("_rev") {
        doc["_rev"] = rev.clone();
    }
    let put = http.put(&url).json(&doc).send().await.unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());
    tokio::task::block_in_place(|| {
        poll(
            "max_outbound 33 on the node",
            Duration::from_secs(10),
            || (get_max(&node) == "33").then_some(()),
        )
    });

    // CouchDB goes away: /healthz says so.
    let _ = couch.child.kill();
    let _ = couch.child.wait();
    let health = node.url("/healthz");
    tokio::task::block_in_place(|| {
        poll("/healthz 503", Duration::from_secs(30), || {
            match http_get(&health) {
                Some((503, _, body)) => Some(body),
                _ => None,
            }
        })
    });
    drop(node);
}
