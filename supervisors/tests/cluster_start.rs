//! Nodes of a cluster start together (after every reboot): three real `faxd` processes
//! started at the same moment on an empty CouchDB-API server all come up, ten times in a
//! row, and the store ends with one master account — the one whose admin credentials one
//! node (and only one) wrote to its data directory.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use faxd::ids::Db;
use faxd::store::SharedStore;
use faxd::store::couch::CouchStore;

const ROUNDS: usize = 10;
const NODES: usize = 3;

/// Environments of `NODES` cluster nodes on `couch`, each seeded with the others.
fn cluster_envs(dirs: &[PathBuf], couch: &str) -> Vec<Vec<(String, String)>> {
    let mut envs: Vec<Vec<(String, String)>> = dirs.iter().map(|d| Node::env_for(d)).collect();
    let listen: Vec<String> = envs
        .iter()
        .map(|e| {
            e.iter()
                .find(|(k, _)| k == "FAXD_CLUSTER_LISTEN")
                .map(|(_, v)| v.clone())
                .expect("cluster listen")
        })
        .collect();
    for (n, env) in envs.iter_mut().enumerate() {
        let seeds: Vec<String> = (0..NODES)
            .filter(|&m| m != n)
            .map(|m| format!("\"{}\"", listen[m]))
            .collect();
        for (k, v) in [
            ("FAXD_NODE_NAME", format!("faxd-{n}@127.0.0.1")),
            ("FAXD_STORE_BACKEND", "couchdb".into()),
            ("FAXD_STORE_COUCH_URL", couch.to_string()),
            ("FAXD_CLUSTER_COOKIE", "faxd-cluster-test".into()),
            ("FAXD_CLUSTER_SEEDS", format!("[{}]", seeds.join(","))),
        ] {
            env.push((k.into(), v));
        }
    }
    envs
}

fn credentials_file(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("admin-credentials")).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_started_at_once_on_an_empty_store_all_come_up_with_one_master() {
    for round in 0..ROUNDS {
        let tmp = tempfile::tempdir().unwrap();
        let couch = Couch::start(tmp.path());
        let dirs: Vec<PathBuf> = (0..NODES)
            .map(|n| {
                let d = tmp.path().join(format!("node{n}"));
                std::fs::create_dir_all(&d).unwrap();
                d
            })
            .collect();
        let envs = cluster_envs(&dirs, &couch.url);
        // All three at the same moment: each start waits for its node's /healthz (and fails
        // the test if the process exits first).
        let starts: Vec<_> = dirs
            .iter()
            .cloned()
            .zip(envs)
            .map(|(dir, env)| std::thread::spawn(move || Node::start(&dir, env)))
            .collect();
        let nodes: Vec<Node> = tokio::task::block_in_place(|| {
            starts
                .into_iter()
                .enumerate()
                .map(|(n, t)| {
                    t.join()
                        .unwrap_or_else(|_| panic!("round {round}: node {n} did not come up"))
                })
                .collect()
        });

        // One node announced the admin; its account is the store's only master account.
        let written: Vec<String> = dirs.iter().filter_map(|d| credentials_file(d)).collect();
        assert_eq!(
            written.len(),
            1,
            "round {round}: admin credentials written by {} nodes",
            written.len()
        );
        let announced = written[0]
            .lines()
            .find_map(|l| l.strip_prefix("account_id="))
            .expect("account_id in admin-credentials")
            .to_string();
        let store: SharedStore = Arc::new(CouchStore::connect(&couch.url).await.expect("couch"));
        let master = faxd::bootstrap::master_account(&store)
            .await
            .expect("read master")
            .expect("a master account");
        assert_eq!(master.as_str(), announced, "round {round}");
        let accounts = store
            .docs_by_type(&Db::Accounts, "account")
            .await
            .expect("accounts");
        let ids: Vec<&str> = accounts.iter().filter_map(|d| d["_id"].as_str()).collect();
        assert_eq!(ids, vec![announced.as_str()], "round {round}: accounts");

        // And every node serves the API with it: the announced admin logs in on each.
        let http = reqwest::Client::new();
        let creds_dir = dirs
            .iter()
            .find(|d| credentials_file(d).is_some())
            .expect("credentials dir");
        for node in &nodes {
            let (token, account) = admin_login(&http, &node.url("/v2"), creds_dir).await;
            assert!(!token.is_empty());
            assert_eq!(account, announced, "round {round}");
        }
        // Idle keep-alive connections would hold each node's graceful stop.
        drop(http);
        for node in nodes {
            tokio::task::block_in_place(|| assert_eq!(node.stop_with("TERM"), 0));
        }
    }
}
