//! The real `faxd` binary with the scripted media engine: a node killed with SIGKILL in the
//! middle of a transmission and started again completes the job (the dead attempt counts),
//! and the `fax_maintenance` job tables and `faxd_maintenance nodes` show it while it runs.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::jobs::submit;
use common::*;
use faxd::ids::{AccountId, Db};
use faxd::outbound::modb;
use faxd::store::SharedStore;
use faxd::store::sqlite::SqliteStore;
use serde_json::{Value, json};

async fn status_of(store: &SharedStore, id: &str) -> Option<String> {
    store
        .get(&Db::Faxes, id)
        .await
        .expect("get")
        .and_then(|d| d["pvt_job_status"].as_str().map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_transmission_then_restart_completes_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(SqliteStore::open(dir.path()).await.expect("store"));
    faxd::bootstrap::ensure_global_dbs(&store)
        .await
        .expect("dbs");
    let account = AccountId::generate();
    let to = "+14195550123";
    // Three pages, `retries` 3, neither a caller name nor `pvt_account_db`.
    let fields = json!({"retries": 3, "from_name": null, "pvt_account_db": null});
    let id = submit(&store, &account, to, 3, fields).await;

    let mut env = Node::env_for(dir.path());
    env.push(("FAXD_MEDIA_ENGINE".into(), "script".into()));
    env.push(("FAXD_MEDIA_SCRIPT_PAGE_MS".into(), "1500".into()));
    let node = Node::start(dir.path(), env.clone());

    // The job is being transmitted (3 pages of 1.5 s each).
    let deadline = Instant::now() + Duration::from_secs(30);
    while status_of(&store, &id).await.as_deref() != Some("processing") {
        assert!(Instant::now() < deadline, "job never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, out, err) = node.sup(&["fax_maintenance", "active_jobs"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("Node"), "{out}");
    assert!(out.contains(&id) && out.contains(to), "{out}");
    // The node list shows it as this node's transmission.
    let (code, out, err) = node.sup(&["faxd_maintenance", "nodes"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("nodes: 1 (this node "), "{out}");
    let mine = out.lines().nth(1).unwrap_or_default();
    assert!(
        mine.contains("(this node): ") && mine.ends_with(", 1 transmission"),
        "{out}"
    );
    assert!(out.contains(&format!("jobs: {id} ({to})")), "{out}");
    let code = node.stop_with("KILL");
    assert_ne!(code, 0);
    let doc = store.get(&Db::Faxes, &id).await.unwrap().unwrap();
    assert_eq!(
        doc["pvt_job_status"], "processing",
        "killed mid-transmission"
    );

    // Start again on the same data: the orphaned attempt is released, the job runs again.
    let node = Node::start(dir.path(), env);
    let probe = json!({"_id": id, "pvt_account_id": account.as_str(),
                       "pvt_created": faxd::time::now_gregorian()});
    let deadline = Instant::now() + Duration::from_secs(60);
    let done: Value = loop {
        if store.get(&Db::Faxes, &id).await.unwrap().is_none()
            && let Some(d) = modb::moved_copy(&store, &probe).await.unwrap()
        {
            break d;
        }
        assert!(Instant::now() < deadline, "job not completed after restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["pvt_job_status"], "completed", "{done}");
    assert_eq!(done["attempts"], 2, "the attempt cut by the kill counts");
    assert_eq!(done["tx_result"]["transferred_pages"], 3);
    assert_eq!(done["folder"], "outbox");
    let (code, out, _) = node.sup(&["fax_maintenance", "pending_jobs"], &[]);
    assert_eq!(code, 0);
    assert!(!out.contains(&id), "{out}");
    assert!(store.processing_by_node(None).await.unwrap().is_empty());
    assert_eq!(node.stop_with("TERM"), 0);
}
