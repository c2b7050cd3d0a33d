//! Store outages degrade, never kill: a real `faxd` on the `couchdb` backend reaches its
//! CouchDB-API test server through a TCP proxy inside the test. 100 accounts have queued
//! jobs (200 in all, one transmission at a time per account), 10 are being transmitted,
//! and the proxy is cut for five minutes (`FAXD_TEST_OUTAGE_SECS` shortens it for local
//! runs). Meanwhile the same process stays up, `/healthz` answers 503 and every submission
//! is answered 503 with `Retry-After` and the cause in Kazoo's envelope — never a 500, and
//! nothing of it is stored. Once the link is back, every one of the 200 jobs completes:
//! none lost, none left in the queue, no supervisor escalated (`faxd_maintenance status`),
//! the faxd process id unchanged. A node started while
//! the store is unreachable waits for it instead of exiting.

mod common;
mod faults;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::jobs::{new_account, submit};
use common::*;
use faults::*;
use faxd::ids::{AccountId, Db};
use faxd::model::JobStatus;
use faxd::outbound::docs::blank_tiff;
use faxd::outbound::modb;
use faxd::store::couch::CouchStore;
use faxd::store::{CreatedRange, Page, SharedStore};
use serde_json::{Value, json};

/// The outage the suite runs: five minutes.
const OUTAGE_SECS: u64 = 300;
/// Accounts with queued jobs, and how many of them transmit when the store goes away.
const ACCOUNTS: usize = 100;
const IN_FLIGHT: usize = 10;

fn outage() -> Duration {
    let secs = std::env::var("FAXD_TEST_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(OUTAGE_SECS);
    Duration::from_secs(secs)
}

/// Queues a job to `to` as intake leaves it (fax TIFF attached, `pending`), due `due_in`
/// seconds from now; `age` makes it older than its account's other jobs (it goes first).
async fn queue_job(
    store: &SharedStore,
    account: &AccountId,
    to: &str,
    pages: u32,
    due_in: i64,
    age: i64,
) -> String {
    let created = faxd::time::now_gregorian() - age;
    let fields = json!({
        "pvt_created": created, "pvt_modified": created, "retry_after": due_in + age,
        "retries": 5, "from_name": null,
    });
    submit(store, account, to, pages, fields).await
}

/// The job's final copy in its MODB, once it left the queue.
async fn final_copy(store: &SharedStore, account: &AccountId, id: &str) -> Option<Value> {
    if store.get(&Db::Faxes, id).await.ok()?.is_some() {
        return None;
    }
    let probe = json!({"_id": id, "pvt_account_id": account.as_str(),
                       "pvt_created": faxd::time::now_gregorian()});
    modb::moved_copy(store, &probe).await.ok()?
}

/// A submission through the API during the outage: (status, Retry-After, envelope).
async fn submit_during_outage(
    http: &reqwest::Client,
    faxes: &str,
    token: &str,
) -> (u16, Option<String>, Value) {
    let meta = json!({"data": {"from_number": "+15551230000", "to_number": "+15557654000"}});
    let r = put_fax(http, faxes, token, &meta, "image/tiff", &blank_tiff(1)).await;
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let envelope = r.json().await.unwrap_or(Value::Null);
    (status, retry, envelope)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_minute_store_outage_loses_no_job_and_keeps_the_node_up() {
    let dir = tempfile::tempdir().unwrap();
    let couch = Couch::start(dir.path());
    let proxy = Proxy::start(
        couch
            .url
            .trim_start_matches("http://")
            .trim_end_matches('/'),
    )
    .await;
    let mut env = Node::env_for(dir.path());
    for (k, v) in [
        ("FAXD_STORE_BACKEND", "couchdb".to_string()),
        ("FAXD_STORE_COUCH_URL", format!("http://{}", proxy.addr)),
        ("FAXD_MEDIA_ENGINE", "script".into()),
        ("FAXD_MEDIA_SCRIPT_PAGE_MS", "1000".into()),
        ("FAXD_OUTBOUND_LEADER_RENEW", "1".into()),
        ("FAXD_OUTBOUND_LEADER_LEASE", "3".into()),
        ("FAXD_OUTBOUND_HEARTBEAT", "1".into()),
        ("FAXD_OUTBOUND_LEASE", "10".into()),
        ("FAXD_OUTBOUND_SWEEP", "2".into()),
    ] {
        env.push((k.into(), v));
    }
    let path = dir.path().to_path_buf();
    let mut node = tokio::task::spawn_blocking(move || Node::start(&path, env))
        .await
        .unwrap();
    let pid = node.child.id();
    let http = reqwest::Client::new();
    let api = node.url("/v2");
    // The API's faxes are sent from a number of the account's own, so the answers during
    // the outage come from saving the fax, not from looking the number up.
    let (token, admin) = sender_login(&http, &api, dir.path()).await;
    let faxes = format!("{api}/accounts/{admin}/faxes");

    // The test's own view of the store, not through the proxy.
    let store: SharedStore = Arc::new(CouchStore::connect(&couch.url).await.expect("couch"));
    let mut accounts = Vec::new();
    for _ in 0..ACCOUNTS {
        accounts.push(new_account(&store, Some(1)).await);
    }
    // Each account sends to a number of its own (a number takes one call at a time). The
    // later accounts' jobs are due in a minute, queued through the outage; then the first
    // accounts get a long fax (in flight when the store goes) and a short one, due now.
    let mut jobs: Vec<(AccountId, String)> = Vec::new();
    for (n, a) in accounts.iter().enumerate().skip(IN_FLIGHT) {
        let to = format!("+1555765{n:04}");
        for _ in 0..2 {
            jobs.push((a.clone(), queue_job(&store, a, &to, 1, 60, 0).await));
        }
    }
    for (n, a) in accounts.iter().enumerate().take(IN_FLIGHT) {
        let to = format!("+1555765{n:04}");
        jobs.push((a.clone(), queue_job(&store, a, &to, 20, 0, 1).await));
        jobs.push((a.clone(), queue_job(&store, a, &to, 1, 0, 0).await));
    }
    let ours: HashSet<String> = accounts.iter().map(|a| a.to_string()).collect();

    // Ten transmissions under way: the store goes away.
    poll_async("10 jobs in flight", Duration::from_secs(120), || async {
        let rows = store.processing_by_node(None).await.ok()?;
        let n = rows.iter().filter(|r| ours.contains(&r.account_id)).count();
        (n == IN_FLIGHT).then_some(())
    })
    .await;
    proxy.cut();
    let cut_at = Instant::now();
    let outage = outage();

    // Through the outage: the node stays, says it is unhealthy, and refuses writes with 503.
    let mut probes = 0;
    let mut answers = Vec::new();
    while cut_at.elapsed() < outage {
        assert!(
            node.child.try_wait().expect("try_wait").is_none(),
            "faxd exited during the store outage"
        );
        let health = node.url("/healthz");
        if let Some((status, _, _)) = tokio::task::block_in_place(|| http_get(&health)) {
            // The first seconds may still see a cached answer; after that it must be 503.
            if cut_at.elapsed() > Duration::from_secs(15) {
                assert_eq!(status, 503, "/healthz during the outage");
            }
        }
        if cut_at.elapsed() > Duration::from_secs(5) {
            answers.push(submit_during_outage(&http, &faxes, &token).await);
            probes += 1;
        }
        // Probes are paced through the outage, which is the fault under test.
        let left = outage.saturating_sub(cut_at.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(10))).await;
    }
    assert!(probes >= 1 || outage < Duration::from_secs(10));
    for (status, retry, envelope) in &answers {
        assert_eq!(*status, 503, "submission during the outage: {envelope}");
        assert!(retry.is_some(), "503 without Retry-After: {envelope}");
        assert_eq!(envelope["error"], "503", "{envelope}");
        assert_eq!(envelope["status"], "error", "{envelope}");
        assert!(
            envelope["data"]["cause"]
                .as_str()
                .is_some_and(|c| !c.is_empty()),
            "503 without its cause: {envelope}"
        );
    }
    assert!(
        node.child.try_wait().expect("try_wait").is_none(),
        "faxd exited during the store outage"
    );

    // The store is back: every job completes; nothing is lost or left behind.
    proxy.restore();
    let back = Instant::now();
    let log_from = node.stderr.lock().map(|l| l.len()).unwrap_or(0);
    let mut finals = Vec::new();
    for (account, id) in &jobs {
        let doc = poll_async(
            "every job final after the outage",
            Duration::from_secs(240).saturating_sub(back.elapsed()),
            || final_copy(&store, account, id),
        )
        .await;
        finals.push(doc);
    }
    let recovered_in = back.elapsed();
    let completed = finals
        .iter()
        .filter(|d| d["pvt_job_status"] == JobStatus::Completed.as_str())
        .count();
    let retried = finals
        .iter()
        .filter(|d| d["attempts"].as_i64().unwrap_or(0) > 1)
        .count();
    eprintln!(
        "outage {outage:?}: {} jobs, {completed} completed, {retried} sent more than once, \
         all final {recovered_in:?} after the store came back; {} submissions answered 503",
        jobs.len(),
        answers.len()
    );
    for d in &finals {
        assert_eq!(d["pvt_job_status"], "completed", "{d}");
    }
    // Once the store is back the node takes the leader lease and keeps it while it starts
    // a hundred queues (a long scheduling pass must not delay a renewal).
    let since_back = node
        .stderr
        .lock()
        .map(|l| l[log_from..].to_string())
        .unwrap_or_default();
    assert!(
        !since_back.contains("lost the outbound leader lease"),
        "the leader stepped down after the store came back"
    );
    // A fax that went through while the store was away is recorded once it is back, not sent
    // again.
    assert_eq!(retried, 0, "faxes sent more than once");
    for a in &accounts {
        let left = store
            .list_by_account_state(a, None, CreatedRange::all(), Page::first(10))
            .await
            .expect("queue");
        assert!(left.rows.is_empty(), "left in the queue: {:?}", left.rows);
    }
    // The submissions refused during the outage left nothing behind.
    let admin_id = AccountId::parse(&admin).expect("admin account");
    let queued = store
        .list_by_account_state(&admin_id, None, CreatedRange::all(), Page::first(10))
        .await
        .expect("admin queue");
    assert!(
        queued.rows.is_empty(),
        "refused submission stored: {queued:?}"
    );
    let outbox = get_json(&http, &format!("{faxes}/outbox"), &token)
        .await
        .expect("outbox");
    assert_eq!(outbox["data"].as_array().map(Vec::len), Some(0), "{outbox}");

    // No supervisor gave up: every child of fax_sup shows no restart (a store-bound child
    // waits out the outage under its own supervisor, without escalating).
    let (code, status, err) =
        tokio::task::block_in_place(|| node.sup(&["faxd_maintenance", "status"], &[]));
    assert_eq!(code, 0, "{status}{err}");
    let top: Vec<&str> = status
        .lines()
        .filter(|l| l.starts_with("├── ") || l.starts_with("└── "))
        .collect();
    assert!(top.iter().any(|l| l.contains("fax_jobs_sup")), "{status}");
    for line in &top {
        assert!(line.ends_with("restarts 0"), "escalated: {line}\n{status}");
    }

    // The same process throughout, healthy again.
    assert_eq!(node.child.id(), pid);
    assert!(node.child.try_wait().expect("try_wait").is_none());
    let (status, _, _) = http_get(&node.url("/healthz")).expect("healthz");
    assert_eq!(status, 200);
    tokio::task::spawn_blocking(move || assert_eq!(node.stop_with("TERM"), 0))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_while_the_store_is_away_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let couch = Couch::start(dir.path());
    let proxy = Proxy::start(
        couch
            .url
            .trim_start_matches("http://")
            .trim_end_matches('/'),
    )
    .await;
    proxy.cut();
    let mut env = Node::env_for(dir.path());
    env.push(("FAXD_STORE_BACKEND".into(), "couchdb".into()));
    env.push((
        "FAXD_STORE_COUCH_URL".into(),
        format!("http://{}", proxy.addr),
    ));
    // Starting waits for /healthz 200 and fails if faxd exits meanwhile.
    let path = dir.path().to_path_buf();
    let starting = tokio::task::spawn_blocking(move || Node::start(&path, env));
    // faxd keeps trying the store (three connections at least), then the store comes back.
    poll_async("faxd retrying the store", Duration::from_secs(30), || {
        let n = proxy.accepted.load(std::sync::atomic::Ordering::SeqCst);
        async move { (n >= 3).then_some(()) }
    })
    .await;
    assert!(!starting.is_finished(), "faxd started without its store");
    proxy.restore();
    let node = starting
        .await
        .expect("faxd started once the store was back");
    let (status, _, _) = http_get(&node.url("/healthz")).expect("healthz");
    assert_eq!(status, 200);
    tokio::task::spawn_blocking(move || assert_eq!(node.stop_with("TERM"), 0))
        .await
        .unwrap();
}
