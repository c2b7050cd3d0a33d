//! Outbound engine end to end on a real store (embedded SQLite and the CouchDB API): the
//! outbound subtree (fax_jobs_sup, fax_worker_sup, fax_monitor) with the scripted media
//! engine. The same test functions run on both backends; no sleeps, only deadlines. Faults
//! (a slow conversion, a panicking worker, a lease lost mid-call) are injected through real
//! parts: an operator's convert command, the test-only fault hook, fax_monitor's requeue.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use faxd::config::{Config, SystemConfig};
use faxd::context::NodeContext;
use faxd::convert::{ConvertConfig, Converter};
use faxd::gateway::OWNER_GONE;
use faxd::gateway::script::{Script, ScriptGateway};
use faxd::ids::{AccountId, Db, new_id};
use faxd::outbound::StatusSource;
use faxd::outbound::docs::blank_tiff;
use faxd::outbound::modb;
use faxd::outbound::{ConvertedDocuments, DocumentSource, StoredTiff};
use faxd::store::couch::CouchStore;
use faxd::store::sqlite::SqliteStore;
use faxd::store::{SharedStore, StoreError};
use faxd_actors::outbound::{Env, Faults, LeaderLease, Settings, WorkerStatus};
use faxd_actors::stage::Timeouts;
use faxd_supervisors::outbound;
use faxd_supervisors::supervisor::{
    Intensity, Supervisor, SupervisorArgs, SupervisorMsg, shutdown,
};
use ractor::{Actor, ActorRef};
use serde_json::{Value, json};

use common::jobs::{self, interval, max_overlap, submit};

async fn embedded() -> (SharedStore, Option<tempfile::TempDir>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).await.expect("open sqlite");
    (Arc::new(store), Some(dir))
}

async fn couch() -> (SharedStore, Option<tempfile::TempDir>) {
    let url = std::env::var("FAXD_TEST_COUCH_URL")
        .expect("FAXD_TEST_COUCH_URL is not set: run the suite with `make test`");
    let store = CouchStore::connect(&url).await.expect("connect couchdb");
    (Arc::new(store), None)
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _dir) = super::embedded().await;
                    super::$name(store).await;
                }
            )*
        }
        mod couchdb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _dir) = super::couch().await;
                    super::$name(store).await;
                }
            )*
        }
    };
}

both_backends!(
    busy_number_is_tried_retries_times_then_fails,
    step_down_rule_changes_the_next_attempt,
    max_outbound_bounds_concurrency_and_other_accounts_run,
    one_transmission_per_number_at_a_time,
    killed_worker_is_retried_and_completes,
    stage_timeout_fails_the_attempt_and_live_status_reads,
    send_at_and_priority_order_the_queue,
    maintenance_job_commands_print_and_change_jobs,
    job_without_a_number_fails_visibly,
    a_prepare_slower_than_the_lease_sends_once,
    a_panicking_worker_hangs_up_and_the_job_completes_once,
    a_lease_lost_mid_call_hangs_up_and_the_job_completes_once,
    a_former_owner_does_not_take_jobs_once_another_node_owns_the_account,
    cancel_racing_a_take_ends_each_job_once,
);

/// What a test changes in the engine.
struct Opts {
    timeouts: Timeouts,
    /// Job lease (the heartbeat is 1 s).
    lease: Duration,
    sweep: Duration,
    /// An operator's `convert_pdf_command`: documents are converted from their original
    /// (`ConvertedDocuments`) instead of read as stored TIFFs.
    convert_pdf_command: Option<String>,
    faults: Faults,
    /// Schedule only while holding the outbound leader lease (a cluster's shared store).
    leader: Option<LeaderLease>,
}

impl Opts {
    fn new(timeouts: Timeouts) -> Opts {
        Opts {
            timeouts,
            lease: Duration::from_secs(30),
            sweep: Duration::from_secs(60),
            convert_pdf_command: None,
            faults: Faults::default(),
            leader: None,
        }
    }
}

/// A running outbound subtree for some accounts.
struct Engine {
    sup: ActorRef<SupervisorMsg>,
    gw: Arc<ScriptGateway>,
    node: String,
    _cache: tempfile::TempDir,
}

impl Engine {
    async fn start(
        store: SharedStore,
        accounts: &[&AccountId],
        fax_config: Value,
        page_time: Duration,
        timeouts: Timeouts,
    ) -> Engine {
        Self::start_with(store, accounts, fax_config, page_time, Opts::new(timeouts)).await
    }

    async fn start_with(
        store: SharedStore,
        accounts: &[&AccountId],
        fax_config: Value,
        page_time: Duration,
        opts: Opts,
    ) -> Engine {
        faxd::bootstrap::ensure_global_dbs(&store)
            .await
            .expect("global dbs");
        let node = format!("faxd-test-{}@127.0.0.1", new_id());
        // This node's own section of system_config/fax (the store may be shared).
        loop {
            let mut doc = store
                .get(&Db::SystemConfig, "fax")
                .await
                .expect("get config")
                .unwrap_or_else(|| json!({"_id": "fax"}));
            doc[&node] = fax_config.clone();
            match store.save(&Db::SystemConfig, doc).await {
                Ok(_) => break,
                Err(StoreError::Conflict) => continue,
                Err(e) => panic!("save config: {e}"),
            }
        }
        let mut config = Config::default();
        config.node.name = node.clone();
        let sysconf = SystemConfig::load(store.clone(), &node)
            .await
            .expect("sysconf");
        let docs: Arc<dyn DocumentSource> = match opts.convert_pdf_command {
            Some(command) => Arc::new(ConvertedDocuments {
                store: store.clone(),
                converter: Arc::new(Converter::new(ConvertConfig {
                    convert_pdf_command: command,
                    ..ConvertConfig::default()
                })),
                sysconf: sysconf.clone(),
            }),
            None => Arc::new(StoredTiff {
                store: store.clone(),
            }),
        };
        let ctx = NodeContext::new(config, store.clone(), sysconf);
        let gw = ScriptGateway::new(page_time, true);
        let cache = tempfile::tempdir().expect("cache dir");
        let settings = Settings {
            timeouts: opts.timeouts,
            heartbeat: Duration::from_secs(1),
            lease: opts.lease,
            sweep: opts.sweep,
            file_cache: Some(cache.path().to_path_buf()),
            accounts: Some(accounts.iter().map(|a| (*a).clone()).collect()),
            leader: opts.leader,
            faults: opts.faults,
        };
        let (sup, _) = Actor::spawn(
            None,
            Supervisor,
            SupervisorArgs {
                name: "outbound_test".into(),
                intensity: Intensity::new(5, Duration::from_secs(10)),
                children: outbound::children(ctx, gw.clone(), docs, settings),
            },
        )
        .await
        .expect("start outbound tree");
        Engine {
            sup,
            gw,
            node,
            _cache: cache,
        }
    }

    async fn stop(self) {
        shutdown(self.sup, Duration::from_secs(30))
            .await
            .expect("shutdown");
    }
}

/// [`jobs::new_account`] on a store with the global databases (as a node's first start
/// leaves it).
async fn new_account(store: &SharedStore, max_outbound: Option<u32>) -> AccountId {
    faxd::bootstrap::ensure_global_dbs(store)
        .await
        .expect("global dbs");
    jobs::new_account(store, max_outbound).await
}

/// Waits until the job has left the faxes database and sits in its MODB; returns it.
async fn wait_final(store: &SharedStore, account: &AccountId, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    let probe = json!({"_id": id, "pvt_account_id": account.as_str(),
                       "pvt_created": faxd::time::now_gregorian()});
    loop {
        let queued = store.get(&Db::Faxes, id).await.expect("get queued");
        if queued.is_none()
            && let Some(doc) = modb::moved_copy(store, &probe).await.expect("modb")
        {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} not final within {within:?}; queued doc: {queued:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn unique_number(prefix: &str) -> String {
    let n: u32 = rand_digits();
    format!("{prefix}{n:03}")
}

fn rand_digits() -> u32 {
    u32::from_str_radix(&new_id()[..6], 16).unwrap_or(0) % 1000
}

async fn nothing_left_queued(store: &SharedStore, account: &AccountId) {
    use faxd::store::{CreatedRange, Page};
    let rows = store
        .list_by_account_state(account, None, CreatedRange::all(), Page::first(1000))
        .await
        .expect("list");
    assert!(
        rows.rows.is_empty(),
        "left in the faxes db: {:?}",
        rows.rows
    );
}

async fn busy_number_is_tried_retries_times_then_fails(store: SharedStore) {
    let account = new_account(&store, None).await;
    let engine = Engine::start(
        store.clone(),
        &[&account],
        json!({"reschedule": {"busy": {"attempt": "any", "compare-field": "result_cause",
              "compare-values": ["USER_BUSY"], "retry-after": 2}}}),
        Duration::ZERO,
        Timeouts::default(),
    )
    .await;
    // A busy number from a prefix of its own (the default script of +15550001xxx is busy).
    let to = format!("+1555{:07}", rand_digits() + 9_000_000);
    engine.gw.script(&to, Script::Busy);
    let id = submit(&store, &account, &to, 1, json!({"retries": 3})).await;
    let doc = wait_final(&store, &account, &id, Duration::from_secs(30)).await;
    assert_eq!(doc["pvt_job_status"], "failed");
    assert_eq!(doc["folder"], "outbox");
    assert_eq!(doc["attempts"], 3);
    assert_eq!(doc["retries"], 3, "the rule has no new-retry-count");
    assert_eq!(doc["reschedule_rule"], "busy");
    assert_eq!(doc["tx_result"]["result_cause"], "USER_BUSY");
    assert_eq!(doc["tx_result"]["result_code"], 486);
    // Never answered: the cause is what the user reads as the reason.
    assert_eq!(doc["tx_result"]["result_text"], "USER_BUSY");
    let calls: Vec<_> = engine
        .gw
        .originated()
        .into_iter()
        .filter(|c| c.fax.to == to)
        .collect();
    assert_eq!(calls.len(), 3, "exactly 3 attempts");
    for w in calls.windows(2) {
        // Released at second s (pvt_modified), due at s + 2: at least one second later.
        assert!(
            w[1].at_ms - w[0].at_ms >= 1_000,
            "retry_after not honoured: {} ms apart",
            w[1].at_ms - w[0].at_ms
        );
    }
    nothing_left_queued(&store, &account).await;
    engine.stop().await;
}

async fn step_down_rule_changes_the_next_attempt(store: SharedStore) {
    let account = new_account(&store, None).await;
    let engine = Engine::start(
        store.clone(),
        &[&account],
        json!({"reschedule": {"dropped": {"compare-field": "fax_result_code",
              "compare-values": [49], "retry-after": 1,
              "then": {"ecm": false, "max_rate": 9600}}}}),
        Duration::ZERO,
        Timeouts::default(),
    )
    .await;
    let to = unique_number("+15550003");
    let id = submit(&store, &account, &to, 2, json!({"retries": 2})).await;
    let doc = wait_final(&store, &account, &id, Duration::from_secs(30)).await;
    assert_eq!(doc["pvt_job_status"], "failed");
    assert_eq!(doc["tx_result"]["fax_result_code"], 49);
    let calls: Vec<_> = engine
        .gw
        .originated()
        .into_iter()
        .filter(|c| c.fax.to == to)
        .collect();
    assert_eq!(calls.len(), 2);
    assert!(calls[0].fax.options.ecm);
    assert_eq!(calls[0].fax.options.max_rate, 14_400);
    assert!(!calls[1].fax.options.ecm, "ECM stepped down");
    assert_eq!(calls[1].fax.options.max_rate, 9600);
    assert_eq!(doc["tx_result"]["options"]["ecm"], false);
    engine.stop().await;
}

async fn max_outbound_bounds_concurrency_and_other_accounts_run(store: SharedStore) {
    let busy = new_account(&store, Some(10)).await;
    let other = new_account(&store, Some(10)).await;
    // Numbers of this run only (worker names are per process; both backends run at once).
    let base = 2_000_000 + rand_digits() * 100;
    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(
            submit(
                &store,
                &busy,
                &format!("+1415{:07}", base + i),
                2,
                json!({}),
            )
            .await,
        );
    }
    let mut others = Vec::new();
    for i in 0..5 {
        others.push(
            submit(
                &store,
                &other,
                &format!("+1416{:07}", base + i),
                2,
                json!({}),
            )
            .await,
        );
    }
    // Everything is queued before the engine starts: both accounts compete from the start.
    let engine = Engine::start(
        store.clone(),
        &[&busy, &other],
        json!({}),
        Duration::from_millis(40),
        Timeouts::default(),
    )
    .await;
    let mut busy_iv = Vec::new();
    for id in &ids {
        let doc = wait_final(&store, &busy, id, Duration::from_secs(60)).await;
        assert_eq!(doc["pvt_job_status"], "completed", "{doc}");
        assert_eq!(doc["tx_result"]["transferred_pages"], 2);
        busy_iv.push(interval(&doc));
    }
    let mut other_iv = Vec::new();
    for id in &others {
        let doc = wait_final(&store, &other, id, Duration::from_secs(60)).await;
        other_iv.push(interval(&doc));
    }
    let peak = max_overlap(&busy_iv);
    assert!(peak <= 10, "{peak} in flight for max_outbound 10");
    assert!(peak >= 2, "jobs ran one by one ({peak})");
    let busy_end = busy_iv.iter().map(|i| i.1).max().unwrap_or(0);
    let other_end = other_iv.iter().map(|i| i.1).max().unwrap_or(0);
    assert!(
        other_end < busy_end,
        "the other account waited for the busy one's backlog"
    );
    let mut busy_starts: Vec<i64> = busy_iv.iter().map(|i| i.0).collect();
    busy_starts.sort();
    let other_last_start = other_iv.iter().map(|i| i.0).max().unwrap_or(0);
    assert!(
        other_last_start <= busy_starts[busy_starts.len() / 2],
        "the other account's jobs started late"
    );
    nothing_left_queued(&store, &busy).await;
    engine.stop().await;
}

async fn one_transmission_per_number_at_a_time(store: SharedStore) {
    let account = new_account(&store, Some(10)).await;
    let engine = Engine::start(
        store.clone(),
        &[&account],
        json!({"serialize_outbound_numbers": true}),
        Duration::from_millis(10),
        Timeouts::default(),
    )
    .await;
    let to = format!("+1417{:07}", rand_digits() + 3_000_000);
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(submit(&store, &account, &to, 1, json!({})).await);
    }
    let mut iv = Vec::new();
    for id in &ids {
        let doc = wait_final(&store, &account, id, Duration::from_secs(60)).await;
        assert_eq!(doc["pvt_job_status"], "completed");
        iv.push(interval(&doc));
    }
    iv.sort();
    for w in iv.windows(2) {
        assert!(
            w[1].0 >= w[0].1,
            "two transmissions to {to} overlapped: {w:?}"
        );
    }
    engine.stop().await;
}

async fn killed_worker_is_retried_and_completes(store: SharedStore) {
    let account = new_account(&store, None).await;
    let engine = Engine::start(
        store.clone(),
        &[&account],
        json!({"default_retry_period": 1}),
        Duration::from_millis(300),
        Timeouts::default(),
    )
    .await;
    let to = format!("+1418{:07}", rand_digits() + 4_000_000);
    let id = submit(&store, &account, &to, 3, json!({"retries": 3})).await;
    // Wait for page 1 to go through, then kill the worker mid-page.
    let status = WorkerStatus;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = status.live_status(&id, &to, None).await
            && st.stage == "send"
            && st.page >= 1
        {
            assert_eq!(st.status, "sending page 2 of 3");
            break;
        }
        assert!(Instant::now() < deadline, "worker never reached page 1");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let worker = Env::worker_of(&id, &to).pop().expect("worker");
    worker.kill();
    let doc = wait_final(&store, &account, &id, Duration::from_secs(30)).await;
    assert_eq!(doc["pvt_job_status"], "completed", "{doc}");
    assert_eq!(doc["attempts"], 2, "the killed attempt counts");
    let calls = engine
        .gw
        .originated()
        .into_iter()
        .filter(|c| c.fax.to == to)
        .count();
    assert_eq!(calls, 2);
    nothing_left_queued(&store, &account).await;
    // The temp file is gone.
    assert!(
        std::fs::read_dir(engine._cache.path())
            .expect("cache")
            .next()
            .is_none()
    );
    engine.stop().await;
}

async fn stage_timeout_fails_the_attempt_and_live_status_reads(store: SharedStore) {
    let account = new_account(&store, None).await;
    let engine = Engine::start(
        store.clone(),
        &[&account],
        json!({}),
        Duration::ZERO,
        Timeouts {
            prepare: Duration::from_secs(5),
            originate: Duration::from_secs(5),
            negotiate: Duration::from_millis(600),
            per_page: Duration::from_secs(5),
        },
    )
    .await;
    let to = unique_number("+15550005");
    let id = submit(&store, &account, &to, 1, json!({})).await;
    // Status queries during the stage never disarm its timer.
    let status = WorkerStatus;
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.get(&Db::Faxes, &id).await.expect("get").is_some() {
        if let Some(st) = status.live_status(&id, &to, None).await {
            seen.insert(st.stage);
        }
        assert!(Instant::now() < deadline, "timeout never fired");
    }
    assert!(seen.contains("negotiate"), "{seen:?}");
    let doc = wait_final(&store, &account, &id, Duration::from_secs(10)).await;
    assert_eq!(doc["pvt_job_status"], "failed");
    assert_eq!(
        doc["tx_result"]["result_text"],
        "fax job timed out - negotiate"
    );
    engine.stop().await;
}

async fn send_at_and_priority_order_the_queue(store: SharedStore) {
    let account = new_account(&store, Some(1)).await;
    let base = rand_digits() + 5_000_000;
    let low = submit(
        &store,
        &account,
        &format!("+1419{base:07}"),
        1,
        json!({"priority": 0}),
    )
    .await;
    let high = submit(
        &store,
        &account,
        &format!("+1419{:07}", base + 1),
        1,
        json!({"priority": 5}),
    )
    .await;
    let not_before = faxd::time::now_unix() + 2;
    let later = submit(
        &store,
        &account,
        &format!("+1419{:07}", base + 2),
        1,
        json!({"priority": 9, "send_at": not_before}),
    )
    .await;
    let engine = Engine::start(
        store.clone(),
        &[&account],
        json!({}),
        Duration::ZERO,
        Timeouts::default(),
    )
    .await;
    for id in [&low, &high, &later] {
        let doc = wait_final(&store, &account, id, Duration::from_secs(30)).await;
        assert_eq!(doc["pvt_job_status"], "completed");
    }
    let order: Vec<String> = engine
        .gw
        .originated()
        .into_iter()
        .map(|o| o.fax.job_id)
        .collect();
    assert_eq!(
        order,
        [high.clone(), low, later.clone()],
        "priority first, send_at honoured"
    );
    let at = engine
        .gw
        .originated()
        .into_iter()
        .find(|o| o.fax.job_id == later)
        .map(|o| o.at_ms)
        .unwrap_or(0);
    assert!(
        at >= not_before * 1000,
        "sent {} ms before send_at",
        not_before * 1000 - at
    );
    engine.stop().await;
}

async fn maintenance_job_commands_print_and_change_jobs(store: SharedStore) {
    use faxd_actors::job_commands::run;
    use faxd_actors::maintenance::parse;
    let account = new_account(&store, None).await;
    let faxbox = new_id();
    let to = format!("+1420{:07}", rand_digits() + 6_000_000);
    let id = submit(
        &store,
        &account,
        &to,
        1,
        json!({"faxbox_id": faxbox, "retries": 2}),
    )
    .await;
    let cmd = |s: String| {
        parse(&s.split_whitespace().map(str::to_string).collect::<Vec<_>>()).expect("parse")
    };
    let out = run(&store, &cmd("fax_maintenance pending_jobs".into()))
        .await
        .expect("job command")
        .expect("ok");
    assert!(out.starts_with("Job"), "{out}");
    let line = out.lines().find(|l| l.contains(&id)).expect("job listed");
    assert!(
        line.contains(&to) && line.contains(account.as_str()) && line.ends_with("0/2"),
        "{line}"
    );
    let out = run(
        &store,
        &cmd(format!("fax_maintenance account_jobs {account}")),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(out.contains(&id) && out.contains("pending"), "{out}");
    let out = run(
        &store,
        &cmd(format!("fax_maintenance faxbox_jobs {faxbox} pending")),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(out.contains(&id), "{out}");
    assert_eq!(
        run(
            &store,
            &cmd(format!("fax_maintenance update_job {id} failed"))
        )
        .await
        .unwrap(),
        Ok("ok".into())
    );
    let again = run(
        &store,
        &cmd(format!("fax_maintenance update_job {id} failed")),
    )
    .await
    .unwrap();
    assert!(again.unwrap_err().contains("already failed"));
    let out = run(
        &store,
        &cmd(format!("fax_maintenance account_jobs {account} failed")),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(out.contains(&id), "{out}");
    run(&store, &cmd(format!("fax_maintenance restart_job {id}")))
        .await
        .unwrap()
        .unwrap();
    let doc = store.get(&Db::Faxes, &id).await.unwrap().unwrap();
    assert_eq!(doc["pvt_job_status"], "pending");
    assert_eq!(doc["retry_after"], 0);
    let out = run(&store, &cmd("fax_maintenance active_jobs".into()))
        .await
        .unwrap()
        .unwrap();
    assert!(!out.contains(&id));
    // Clean up: this job must not be picked up by another test's engine (shared store).
    let doc = store.get(&Db::Faxes, &id).await.unwrap().unwrap();
    store
        .delete(&Db::Faxes, &id, doc["_rev"].as_str().unwrap())
        .await
        .unwrap();
}

/// Kazoo silently deleted jobs whose number it could not reconcile; faxd fails them with a
/// cause, in the outbox, like any other failure.
async fn job_without_a_number_fails_visibly(store: SharedStore) {
    let account = new_account(&store, None).await;
    let engine = Engine::start(
        store.clone(),
        &[&account],
        json!({}),
        Duration::ZERO,
        Timeouts::default(),
    )
    .await;
    let id = submit(&store, &account, "", 1, json!({})).await;
    let doc = wait_final(&store, &account, &id, Duration::from_secs(30)).await;
    assert_eq!(doc["pvt_job_status"], "failed");
    assert_eq!(doc["tx_result"]["result_code"], 400);
    assert_eq!(doc["tx_result"]["result_text"], "invalid fax number: ");
    assert!(engine.gw.originated().iter().all(|o| o.fax.job_id != id));
    // A job written into the store around the API with a header-injecting caller id never
    // reaches the media engine either.
    let to = unique_number("+1418555");
    let id = submit(
        &store,
        &account,
        &to,
        1,
        json!({"from_number": "+1415\r\nX-Evil: y"}),
    )
    .await;
    let doc = wait_final(&store, &account, &id, Duration::from_secs(30)).await;
    assert_eq!(doc["pvt_job_status"], "failed");
    let why = doc["tx_result"]["result_text"].as_str().unwrap();
    assert!(why.starts_with("invalid caller data: from_number"), "{why}");
    assert!(engine.gw.originated().iter().all(|o| o.fax.job_id != id));
    engine.stop().await;
}

/// Submits a job whose document is only its original (a PDF), as an upload that was not
/// converted at intake: the worker converts it when it prepares the transmission.
async fn submit_original(store: &SharedStore, account: &AccountId, to: &str) -> String {
    let pdf = (
        "original_file.pdf",
        "application/pdf",
        b"%PDF-1.4\n%%EOF\n".to_vec(),
    );
    jobs::submit_file(store, account, to, pdf, json!({"retries": 3})).await
}

/// Calls the engine placed to `to`.
fn calls_to(engine: &Engine, to: &str) -> Vec<faxd::gateway::script::Originated> {
    engine
        .gw
        .originated()
        .into_iter()
        .filter(|c| c.fax.to == to)
        .collect()
}

/// An engine for `account` whose conversions take 5 s and produce `tiff`: longer than its
/// job lease (3 s, fax_monitor sweeping every second).
async fn slow_prepare_engine(
    store: &SharedStore,
    account: &AccountId,
    tiff: &Path,
    fax_config: Value,
) -> Engine {
    Engine::start_with(
        store.clone(),
        &[account],
        fax_config,
        Duration::from_millis(50),
        Opts {
            lease: Duration::from_secs(3),
            sweep: Duration::from_secs(1),
            convert_pdf_command: Some(format!("sleep 5 && cp '{}' \"$TO\"", tiff.display())),
            ..Opts::new(Timeouts::default())
        },
    )
    .await
}

/// A conversion that takes longer than the job lease (5 s against 3 s, fax_monitor sweeping
/// every second) neither loses the fax nor sends it twice, with and without number
/// serialisation: the worker keeps the lease alive while it converts, and dials once.
async fn a_prepare_slower_than_the_lease_sends_once(store: SharedStore) {
    let tiff_dir = tempfile::tempdir().expect("tempdir");
    let tiff = tiff_dir.path().join("converted.tiff");
    std::fs::write(&tiff, blank_tiff(2)).expect("tiff");
    for serialize in [true, false] {
        let account = new_account(&store, None).await;
        let config = json!({"serialize_outbound_numbers": serialize, "store_fax_tiff": false});
        let engine = slow_prepare_engine(&store, &account, &tiff, config).await;
        let to = format!("+1421{:07}", rand_digits() + 7_000_000);
        let id = submit_original(&store, &account, &to).await;
        let doc = wait_final(&store, &account, &id, Duration::from_secs(60)).await;
        assert_eq!(
            doc["pvt_job_status"], "completed",
            "serialize {serialize}: {doc}"
        );
        assert_eq!(doc["attempts"], 1, "serialize {serialize}: {doc}");
        assert_eq!(doc["tx_result"]["transferred_pages"], 2, "{doc}");
        assert_eq!(
            calls_to(&engine, &to).len(),
            1,
            "serialize {serialize}: exactly one transmission"
        );
        nothing_left_queued(&store, &account).await;
        engine.stop().await;
    }
}

/// A worker that panics mid-page (fault hook, first attempt only) leaves no call up: the far
/// end sees the line dropped before the last page. The attempt counts, the job is retried
/// and completes once.
async fn a_panicking_worker_hangs_up_and_the_job_completes_once(store: SharedStore) {
    let account = new_account(&store, None).await;
    let engine = Engine::start_with(
        store.clone(),
        &[&account],
        json!({}),
        Duration::from_millis(300),
        Opts {
            faults: Faults {
                panic_at_page_of_first_attempt: Some(1),
            },
            ..Opts::new(Timeouts::default())
        },
    )
    .await;
    let to = format!("+1422{:07}", rand_digits() + 8_000_000);
    let id = submit(&store, &account, &to, 4, json!({"retries": 3})).await;
    let doc = wait_final(&store, &account, &id, Duration::from_secs(60)).await;
    assert_eq!(doc["pvt_job_status"], "completed", "{doc}");
    assert_eq!(
        doc["attempts"], 2,
        "the attempt cut by the panic counts: {doc}"
    );
    assert_eq!(doc["tx_result"]["transferred_pages"], 4, "{doc}");
    first_call_hung_up(&engine, &to, OWNER_GONE, 4);
    nothing_left_queued(&store, &account).await;
    engine.stop().await;
}

/// Two calls went to `to`: the first was hung up with `cause` before the far end had all
/// `pages`, the second was not hung up.
fn first_call_hung_up(engine: &Engine, to: &str, cause: &str, pages: u32) {
    let calls = calls_to(engine, to);
    assert_eq!(calls.len(), 2, "one retry");
    let hangups: Vec<_> = engine
        .gw
        .hangups()
        .into_iter()
        .filter(|h| h.to == to)
        .collect();
    assert_eq!(hangups.len(), 1, "{hangups:?}");
    assert_eq!(hangups[0].call_id, calls[0].fax.call_id, "the first call");
    assert_eq!(hangups[0].cause, cause);
    assert!(
        hangups[0].pages < pages,
        "the far end got the whole fax before the hangup: {hangups:?}"
    );
}

/// A job whose lease is found expired while its worker is alive (its node could not renew
/// in time) is requeued by fax_monitor's recovery: the worker sees at its next heartbeat
/// that the job is no longer its own, hangs up and stops without releasing; the requeue
/// counted the attempt, and the job completes once on the next one.
async fn a_lease_lost_mid_call_hangs_up_and_the_job_completes_once(store: SharedStore) {
    let account = new_account(&store, None).await;
    let engine = Engine::start(
        store.clone(),
        &[&account],
        json!({}),
        Duration::from_millis(300),
        Timeouts::default(),
    )
    .await;
    let to = format!("+1423{:07}", rand_digits() + 9_000_000);
    let id = submit(&store, &account, &to, 6, json!({"retries": 3})).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let lease = loop {
        if let Some(st) = WorkerStatus.live_status(&id, &to, None).await
            && st.stage == "send"
        {
            let doc = store.get(&Db::Faxes, &id).await.expect("get").expect("doc");
            break doc["pvt_lease"].as_str().expect("lease").to_string();
        }
        assert!(Instant::now() < deadline, "never sending");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // What fax_monitor does with a lease it finds expired.
    let requeued = faxd::outbound::lease::recover_processing(
        &store,
        &id,
        Some(&lease),
        "lease expired",
        &faxd::outbound::lease::ReleasePolicy::default(),
    )
    .await
    .expect("requeue");
    assert_eq!(requeued, Some(faxd::model::JobStatus::Pending));
    let doc = wait_final(&store, &account, &id, Duration::from_secs(60)).await;
    assert_eq!(doc["pvt_job_status"], "completed", "{doc}");
    assert_eq!(doc["attempts"], 2, "{doc}");
    first_call_hung_up(&engine, &to, "LEASE_LOST", 6);
    nothing_left_queued(&store, &account).await;
    engine.stop().await;
}

/// The handover race of a paused queue owner: this node still believes it owns an
/// account's queue (its gate is open until the queue lease runs out) while another node has
/// already taken that lease over. A job that becomes due then is picked by this node's queue,
/// but its worker undoes the take once it sees the lease names another node: no call, no
/// attempt counted, the job left `pending` for the new owner.
async fn a_former_owner_does_not_take_jobs_once_another_node_owns_the_account(store: SharedStore) {
    use faxd::outbound::leader;
    faxd::bootstrap::ensure_global_dbs(&store)
        .await
        .expect("global dbs");
    let account = new_account(&store, None).await;
    let owner_doc = leader::owner_doc(account.as_str());
    // Renewed every 20 s, valid 60 s: the node keeps believing it owns the queue for the
    // whole test.
    let engine = Engine::start_with(
        store.clone(),
        &[&account],
        json!({}),
        Duration::ZERO,
        Opts {
            leader: Some(LeaderLease {
                renew: Duration::from_secs(20),
                lease: Duration::from_secs(60),
            }),
            ..Opts::new(Timeouts::default())
        },
    )
    .await;
    // A fax for tomorrow gives the account work: the node takes its queue lease.
    let later = format!("+1424{:07}", rand_digits() + 1_000_000);
    let tomorrow = faxd::time::now_unix() + 86_400;
    let waiting = submit(&store, &account, &later, 1, json!({"send_at": tomorrow})).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lease = loop {
        if let Some(doc) = store.get(&Db::Faxes, &owner_doc).await.expect("get")
            && doc["node"] == engine.node.as_str()
        {
            break doc;
        }
        assert!(
            Instant::now() < deadline,
            "the engine never took the queue lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Another node takes the queue lease over (what its lease keeper writes).
    lease["node"] = json!("faxd-other@127.0.0.1");
    store.save(&Db::Faxes, lease).await.expect("take over");

    let to = format!("+1424{:07}", rand_digits() + 1_000_000);
    let id = submit(&store, &account, &to, 1, json!({})).await;
    let submitted = store.get(&Db::Faxes, &id).await.expect("get").expect("job");
    let generation = |doc: &Value| {
        doc["_rev"]
            .as_str()
            .and_then(|r| r.split('-').next()?.parse::<u32>().ok())
    };
    let before = generation(&submitted).expect("rev");
    // The take and its undo are two writes; then the job is as it was.
    let deadline = Instant::now() + Duration::from_secs(20);
    let doc = loop {
        let doc = store.get(&Db::Faxes, &id).await.expect("get");
        let Some(doc) = doc else {
            panic!("the job left the queue: the former owner sent it");
        };
        if generation(&doc).is_some_and(|g| g >= before + 2) && doc["pvt_job_status"] == "pending" {
            break doc;
        }
        assert!(Instant::now() < deadline, "the take was not undone: {doc}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(doc["attempts"], 0, "{doc}");
    assert!(doc.get("pvt_lease").is_none(), "{doc}");
    assert!(
        calls_to(&engine, &to).is_empty(),
        "the former owner dialled"
    );
    // Clean up: the jobs and the lease are no other test's business.
    for job in [&id, &waiting] {
        let doc = store.get(&Db::Faxes, job).await.expect("get").expect("job");
        store
            .delete(&Db::Faxes, job, doc["_rev"].as_str().expect("rev"))
            .await
            .expect("delete job");
    }
    assert!(
        leader::release_at(&store, &owner_doc, "faxd-other@127.0.0.1")
            .await
            .expect("release")
    );
    engine.stop().await;
}

/// What a user's cancel got.
#[derive(Debug, PartialEq)]
enum Cancel {
    Cancelled,
    /// Refused: the job was already being transmitted (or done).
    TooLate,
}

/// Cancels a queued job as the API's DELETE does (rev-checked write of `cancelled`, then
/// the move to the outbox); a conflict is answered by reading the job again.
async fn cancel(store: &SharedStore, id: &str) -> Cancel {
    loop {
        let Some(mut doc) = store.get(&Db::Faxes, id).await.expect("get") else {
            return Cancel::TooLate;
        };
        if doc["pvt_job_status"] != "pending" {
            return Cancel::TooLate;
        }
        doc["pvt_job_status"] = json!("cancelled");
        match store.save(&Db::Faxes, doc).await {
            Ok(saved) => {
                faxd::intake::move_to_outbox(store, saved)
                    .await
                    .expect("move to outbox");
                return Cancel::Cancelled;
            }
            Err(StoreError::Conflict) => continue,
            Err(e) => panic!("cancel: {e}"),
        }
    }
}

/// Users cancel 30 queued faxes while the queue takes them: each cancel and each take is a
/// rev-checked write on the same document, so every job ends exactly once — cancelled and
/// never dialled, or sent once — and none is lost.
async fn cancel_racing_a_take_ends_each_job_once(store: SharedStore) {
    let account = new_account(&store, Some(5)).await;
    let base = 3_000_000 + rand_digits() * 100;
    let mut ids = Vec::new();
    for i in 0..30 {
        let to = format!("+1425{:07}", base + i);
        ids.push((submit(&store, &account, &to, 1, json!({})).await, to));
    }
    let engine = Engine::start(
        store.clone(),
        &[&account],
        json!({}),
        Duration::from_millis(20),
        Timeouts::default(),
    )
    .await;
    let mut answers = Vec::new();
    for (id, _) in &ids {
        answers.push(cancel(&store, id).await);
    }
    let mut cancelled = 0;
    for ((id, to), answer) in ids.iter().zip(answers) {
        let doc = wait_final(&store, &account, id, Duration::from_secs(60)).await;
        let calls = calls_to(&engine, to).len();
        match answer {
            Cancel::Cancelled => {
                cancelled += 1;
                assert_eq!(doc["pvt_job_status"], "cancelled", "{doc}");
                assert_eq!(calls, 0, "a cancelled fax was dialled: {doc}");
            }
            Cancel::TooLate => {
                assert_eq!(doc["pvt_job_status"], "completed", "{doc}");
                assert_eq!(calls, 1, "{doc}");
            }
        }
    }
    eprintln!("{cancelled} of 30 cancelled, the others sent once");
    nothing_left_queued(&store, &account).await;
    engine.stop().await;
}

/// Two nodes both took a job: a CouchDB cluster accepted both takes as conflicting
/// revisions (made here with `new_edits: false` while this node's worker converts the
/// document). The other take wins (same generation, smaller lease token) although CouchDB's
/// own winner may be this node's, so this node's worker backs off before dialling and its
/// revision is deleted. The other node is dead: once its lease runs out the job is requeued
/// and sent, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn couchdb_a_conflicting_take_that_wins_means_no_call_here() {
    let (store, _dir) = couch().await;
    let url = std::env::var("FAXD_TEST_COUCH_URL").expect("FAXD_TEST_COUCH_URL");
    let tiff_dir = tempfile::tempdir().expect("tempdir");
    let tiff = tiff_dir.path().join("converted.tiff");
    std::fs::write(&tiff, blank_tiff(2)).expect("tiff");
    let account = new_account(&store, None).await;
    let engine =
        slow_prepare_engine(&store, &account, &tiff, json!({"store_fax_tiff": false})).await;
    let to = format!("+1425{:07}", rand_digits() + 5_000_000);
    let id = submit_original(&store, &account, &to).await;
    // This node's take, while it converts.
    let deadline = Instant::now() + Duration::from_secs(20);
    let ours = loop {
        let doc = store.get(&Db::Faxes, &id).await.expect("get").expect("doc");
        if doc["pvt_job_status"] == "processing" {
            break doc;
        }
        assert!(Instant::now() < deadline, "never taken: {doc}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // The other node's take of the same revision, as a replica accepted it.
    let http = reqwest::Client::new();
    let doc_url = format!("{url}/faxes/{id}");
    let revs: Value = http
        .get(format!("{doc_url}?revs=true"))
        .send()
        .await
        .expect("revs")
        .json()
        .await
        .expect("revs json");
    let start = revs["_revisions"]["start"].as_i64().expect("start");
    let parent = revs["_revisions"]["ids"][1]
        .as_str()
        .expect("parent")
        .to_string();
    let ghost_rev = format!("{start}-{}", "0".repeat(32));
    let mut ghost = ours.clone();
    ghost["_rev"] = json!(ghost_rev);
    ghost["_revisions"] = json!({"start": start, "ids": ["0".repeat(32), parent]});
    ghost["pvt_job_node"] = json!("faxd-ghost@127.0.0.1");
    ghost["pvt_lease"] = json!("0000-ghost");
    ghost["pvt_heartbeat"] = json!(faxd::time::now_unix_ms());
    ghost["_attachments"] = json!({"original_file.pdf": {"content_type": "application/pdf",
        "data": "JVBERi0xLjQKJSVFT0YK"}});
    let reply = http
        .post(format!("{url}/faxes/_bulk_docs"))
        .json(&json!({"new_edits": false, "docs": [ghost]}))
        .send()
        .await
        .expect("bulk_docs");
    assert!(reply.status().is_success(), "{:?}", reply.text().await);
    // This node's worker finds the other take before it dials: its revision goes.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leaves = store.get_leaves(&Db::Faxes, &id).await.expect("leaves");
        if leaves.len() == 1 {
            assert_eq!(leaves[0]["_rev"], ghost_rev.as_str(), "{leaves:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "conflict never settled: {leaves:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Requeued once the dead node's lease ran out, then sent by this node: one call.
    let doc = wait_final(&store, &account, &id, Duration::from_secs(60)).await;
    assert_eq!(doc["pvt_job_status"], "completed", "{doc}");
    assert_eq!(doc["attempts"], 2, "the dead node's attempt counted: {doc}");
    assert_eq!(calls_to(&engine, &to).len(), 1, "exactly one transmission");
    assert!(engine.gw.hangups().iter().all(|h| h.to != to));
    nothing_left_queued(&store, &account).await;
    engine.stop().await;
}
