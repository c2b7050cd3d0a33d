//! The inbound subtree (fax_requests_sup, fax_inbound, one fax_request per call) on a real
//! store with the real loopback engine (two spandsp T.30 terminals) and the callflow number
//! directory, calls placed the way a fax_worker places them. What is not a clean reception
//! leaves no fax, no file in the spool and no process: a caller that hangs up mid-fax, and
//! a store that goes away for good during the call (storage is tried `max_storage_retry`
//! times, at growing intervals, then given up). No sleeps, only deadlines.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faxd::config::{Config, LoopbackSection, SystemConfig};
use faxd::context::NodeContext;
use faxd::gateway::loopback::LoopbackGateway;
use faxd::gateway::{FaxCall, FaxEvent, FaxResult, Gateway, OutboundFax, TxOptions};
use faxd::ids::{AccountId, Db, YearMonth, new_id};
use faxd::inbound::directory::CallflowNumbers;
use faxd::intake::numbers::claim_id;
use faxd::outbound::docs::blank_tiff;
use faxd::store::couch::CouchStore;
use faxd::store::sqlite::SqliteStore;
use faxd::store::{SharedStore, StoreError};
use faxd_supervisors::inbound;
use faxd_supervisors::supervisor::{
    Intensity, Supervisor, SupervisorArgs, SupervisorMsg, report, shutdown,
};
use ractor::{Actor, ActorRef};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

const NUMBER: &str = "+15557650000";
const DEADLINE: Duration = Duration::from_secs(120);

/// The inbound subtree with a loopback engine whose local numbers are the store's callflows,
/// and an account whose `receive_fax` callflow owns [`NUMBER`].
struct Rig {
    sup: ActorRef<SupervisorMsg>,
    gw: LoopbackGateway,
    store: SharedStore,
    spool: PathBuf,
    account: AccountId,
    doc: PathBuf,
}

impl Rig {
    /// `fax_config`: this node's section of `system_config/fax`.
    async fn start(store: SharedStore, dir: &Path, fax_config: Value) -> Rig {
        faxd::bootstrap::ensure_global_dbs(&store)
            .await
            .expect("global dbs");
        let node = format!("faxd@inbound-{}", &new_id()[..8]);
        let mut doc = store
            .get(&Db::SystemConfig, "fax")
            .await
            .expect("get config")
            .unwrap_or_else(|| json!({"_id": "fax"}));
        doc[&node] = fax_config;
        store
            .save(&Db::SystemConfig, doc)
            .await
            .expect("save config");
        let mut config = Config::default();
        config.node.name = node.clone();
        config.node.data_dir = dir.to_path_buf();
        let sysconf = SystemConfig::load(store.clone(), &node)
            .await
            .expect("sysconf");
        let ctx = NodeContext::new(config, store.clone(), sysconf);
        let (sink, calls) = mpsc::channel(8);
        let spool = dir.join("spool");
        let gw = LoopbackGateway::new(
            LoopbackSection::default(),
            spool.clone(),
            Arc::new(CallflowNumbers::new(store.clone())),
            Some(sink),
        )
        .expect("loopback engine");
        let (sup, _) = Actor::spawn(
            None,
            Supervisor,
            SupervisorArgs {
                name: "inbound_test_sup".into(),
                intensity: Intensity::new(5, Duration::from_secs(10)),
                children: inbound::children(ctx, Arc::new(Mutex::new(calls))),
            },
        )
        .await
        .expect("start the inbound subtree");

        // An account whose receive_fax callflow owns NUMBER, as the callflows API leaves it.
        let account = AccountId::generate();
        let adb = Db::Account(account.clone());
        store.ensure_db(&adb).await.expect("account db");
        let callflow = new_id();
        store
            .save(
                &adb,
                json!({"_id": callflow, "pvt_type": "callflow", "numbers": [NUMBER],
                       "flow": {"module": "receive_fax", "data": {}}}),
            )
            .await
            .expect("callflow");
        store
            .save(
                &Db::Accounts,
                json!({"_id": claim_id(NUMBER), "pvt_type": "number_claim",
                       "account_id": account.as_str(), "callflow_id": callflow,
                       "number": NUMBER}),
            )
            .await
            .expect("number claim");

        let doc = dir.join("three-pages.tiff");
        std::fs::write(&doc, blank_tiff(3)).expect("document");
        Rig {
            sup,
            gw,
            store,
            spool,
            account,
            doc,
        }
    }

    /// Places a fax call to [`NUMBER`] as a fax_worker does.
    async fn call(&self) -> FaxCall {
        let fax = OutboundFax {
            job_id: new_id(),
            call_id: new_id(),
            to: NUMBER.into(),
            from_number: "+15551230000".into(),
            from_name: "Sender".into(),
            fax_identity_number: "+15551230000".into(),
            fax_identity_name: "Sender".into(),
            document: self.doc.clone(),
            document_url: None,
            options: TxOptions::default(),
        };
        self.gw.originate(fax).await.expect("originate")
    }

    /// The fax_requests running now.
    async fn requests(&self) -> Vec<String> {
        let rep = report(&self.sup, Duration::from_secs(5))
            .await
            .expect("report");
        rep.children
            .iter()
            .filter(|c| c.id == "fax_requests_sup")
            .flat_map(|c| c.children.iter().map(|r| r.id.clone()))
            .collect()
    }

    /// Files left in the spool by inbound calls.
    fn spool_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.spool)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("inbound-"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The faxes in the account's MODB of this month.
    async fn inbox(&self) -> usize {
        let db = Db::Modb(self.account.clone(), YearMonth::now());
        match self.store.docs_by_type(&db, "fax").await {
            Ok(docs) => docs.len(),
            Err(StoreError::NoDatabase(_)) => 0,
            Err(e) => panic!("inbox: {e}"),
        }
    }

    async fn stop(self) {
        self.gw.shutdown();
        shutdown(self.sup, Duration::from_secs(10))
            .await
            .expect("shutdown");
    }
}

/// The caller's events until `stop` says so; `None` if the call finished first.
async fn until(call: &mut FaxCall, stop: impl Fn(&FaxEvent) -> bool) -> Option<FaxResult> {
    loop {
        let e = tokio::time::timeout(DEADLINE, call.events.recv())
            .await
            .expect("caller event in time")
            .expect("caller events open");
        if let FaxEvent::Finished(r) = e {
            return Some(r);
        }
        if stop(&e) {
            return None;
        }
    }
}

async fn finished(call: &mut FaxCall) -> FaxResult {
    until(call, |_| false).await.expect("finished")
}

/// The sender hangs up after page 1 of 3: the reception failed (T.30 49), so no fax is
/// stored, the partial file leaves the spool and the fax_request ends.
async fn a_caller_hanging_up_mid_fax_leaves_nothing(store: SharedStore, dir: &Path) {
    let rig = Rig::start(store, dir, json!({})).await;
    let mut call = rig.call().await;
    assert!(
        until(&mut call, |e| matches!(e, FaxEvent::Page { page: 1, .. }))
            .await
            .is_none(),
        "page 1 went through"
    );
    assert_eq!(rig.requests().await.len(), 1, "one fax_request per call");
    call.hangup.hangup("NORMAL_CLEARING");
    let r = finished(&mut call).await;
    assert!(!r.success, "{r:?}");
    assert_eq!(r.fax_result_code, 49, "{r:?}");
    common::poll_async("the fax_request to end", DEADLINE, || async {
        rig.requests().await.is_empty().then_some(())
    })
    .await;
    assert!(rig.spool_files().is_empty(), "{:?}", rig.spool_files());
    assert_eq!(rig.inbox().await, 0, "a failed reception is not stored");

    // The next call to the number is received whole and stored.
    let mut call = rig.call().await;
    let r = finished(&mut call).await;
    assert!(r.success, "{r:?}");
    common::poll_async("the fax in the inbox", DEADLINE, || async {
        (rig.inbox().await == 1).then_some(())
    })
    .await;
    common::poll_async("the fax_request to end", DEADLINE, || async {
        rig.requests().await.is_empty().then_some(())
    })
    .await;
    assert!(rig.spool_files().is_empty());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_hanging_up_mid_fax_leaves_nothing_embedded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).await.expect("sqlite");
    a_caller_hanging_up_mid_fax_leaves_nothing(Arc::new(store), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_hanging_up_mid_fax_leaves_nothing_couchdb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let couch = common::Couch::start(dir.path());
    let store = CouchStore::connect(&couch.url).await.expect("couchdb");
    a_caller_hanging_up_mid_fax_leaves_nothing(Arc::new(store), dir.path()).await;
    drop(couch);
}

/// CouchDB goes away once the call is answered: the fax is received, its storage fails
/// `max_storage_retry` (here 3) times, 1 and 2 s apart, then the fax_request gives up and
/// ends, with nothing left in the spool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_is_given_up_after_a_bounded_number_of_attempts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut couch = common::Couch::start(dir.path());
    let store = CouchStore::connect(&couch.url).await.expect("couchdb");
    let rig = Rig::start(Arc::new(store), dir.path(), json!({"max_storage_retry": 3})).await;
    let mut call = rig.call().await;
    assert!(
        until(&mut call, |e| matches!(e, FaxEvent::Answered))
            .await
            .is_none(),
        "answered"
    );
    couch.child.kill().expect("stop CouchDB");
    couch.child.wait().expect("CouchDB stopped");
    let r = finished(&mut call).await;
    assert!(r.success, "the sender's side went well: {r:?}");
    let ended = Instant::now();
    assert_eq!(rig.requests().await.len(), 1, "storing");
    common::poll_async("the fax_request to give up", DEADLINE, || async {
        rig.requests().await.is_empty().then_some(())
    })
    .await;
    let took = ended.elapsed();
    let waits: u64 = (1..=3)
        .filter_map(|a| faxd::inbound::store_retry_delay(a, 3))
        .map(|d| d.as_secs())
        .sum();
    assert_eq!(waits, 3, "1 s, then 2 s");
    assert!(
        took >= Duration::from_millis(waits * 1000 - 500) && took < Duration::from_secs(waits + 30),
        "gave up after {took:?}"
    );
    assert!(rig.spool_files().is_empty(), "{:?}", rig.spool_files());
    // Nothing is lost: the fax the store would not take is kept for the operator, private.
    let kept: Vec<_> = std::fs::read_dir(dir.path().join("unstored"))
        .expect("unstored faxes")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let fax_dir = &kept[0];
    let fax_id = fax_dir.file_name().unwrap().to_str().unwrap().to_string();
    let doc: Value =
        serde_json::from_slice(&std::fs::read(fax_dir.join("doc.json")).expect("doc.json"))
            .expect("JSON");
    assert_eq!(doc["doc"]["_id"], fax_id.as_str());
    assert!(doc["db"].as_str().is_some_and(|d| !d.is_empty()), "{doc}");
    let tiff = fax_dir.join(format!("received_file_{fax_id}.tiff"));
    assert_eq!(faxd::gateway::tiff::count_pages(&tiff).expect("a TIFF"), 3);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(fax_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
    eprintln!("storage given up {took:?} after the call ended");
    rig.stop().await;
}
