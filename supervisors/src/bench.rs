//! `faxd outbound bench`: the scheduler benchmark (numbers for the notes, not asserted). The
//! outbound subtree runs on the configured store with the scripted engine at zero line time
//! (the `null` engine) over many accounts:
//!
//! 1. throughput — N jobs queued over A accounts, then the engine starts: jobs/s until every
//!    job is in its MODB, store writes per job (counted by a wrapping store), and the RSS
//!    growth of the process while they are queued, per job;
//! 2. dispatch latency — with the engine idle, jobs submitted one at a time: time from the
//!    `pending` write being acknowledged to the media engine's originate (p50/p99).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use faxd::config::{Config, SystemConfig};
use faxd::context::NodeContext;
use faxd::gateway::script::ScriptGateway;
use faxd::ids::{AccountId, Db, new_id};
use faxd::model::JobStatus;
use faxd::outbound::StoredTiff;
use faxd::outbound::docs::{FAX_FILE, blank_tiff};
use faxd::store::{
    Attachment, Backend, ByteStream, Change, CreatedRange, FaxboxAddress, JobRow, Listing,
    ModbFilter, ModbRow, NewAttachment, Page, Result, SharedStore, Store, bytes_stream,
};
use faxd_actors::outbound::Settings;
use ractor::Actor;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::outbound;
use crate::supervisor::{Intensity, Supervisor, SupervisorArgs, shutdown};

/// A store that counts writes (saves, deletes, attachment puts and deletes).
pub struct CountingStore {
    inner: SharedStore,
    writes: AtomicU64,
}

impl CountingStore {
    fn count(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl Store for CountingStore {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
    async fn ensure_db(&self, db: &Db) -> Result<()> {
        self.inner.ensure_db(db).await
    }
    async fn db_exists(&self, db: &Db) -> Result<bool> {
        self.inner.db_exists(db).await
    }
    async fn delete_db(&self, db: &Db) -> Result<()> {
        self.inner.delete_db(db).await
    }
    async fn get(&self, db: &Db, id: &str) -> Result<Option<Value>> {
        self.inner.get(db, id).await
    }
    async fn save(&self, db: &Db, doc: Value) -> Result<Value> {
        self.count();
        self.inner.save(db, doc).await
    }
    /// One atomic store operation (one SQLite transaction, one CouchDB PUT): one write.
    async fn save_with_attachments(
        &self,
        db: &Db,
        doc: Value,
        attachments: Vec<NewAttachment>,
    ) -> Result<Value> {
        self.count();
        self.inner.save_with_attachments(db, doc, attachments).await
    }
    async fn delete(&self, db: &Db, id: &str, rev: &str) -> Result<String> {
        self.count();
        self.inner.delete(db, id, rev).await
    }
    async fn put_attachment(
        &self,
        db: &Db,
        id: &str,
        rev: Option<&str>,
        name: &str,
        content_type: &str,
        body: ByteStream,
    ) -> Result<String> {
        self.count();
        self.inner
            .put_attachment(db, id, rev, name, content_type, body)
            .await
    }
    async fn get_attachment(&self, db: &Db, id: &str, name: &str) -> Result<Option<Attachment>> {
        self.inner.get_attachment(db, id, name).await
    }
    async fn delete_attachment(&self, db: &Db, id: &str, rev: &str, name: &str) -> Result<String> {
        self.count();
        self.inner.delete_attachment(db, id, rev, name).await
    }
    async fn schedule_accounts(&self) -> Result<Vec<(AccountId, u64)>> {
        self.inner.schedule_accounts().await
    }
    async fn jobs_by_account(&self, account: &AccountId, limit: usize) -> Result<Vec<JobRow>> {
        self.inner.jobs_by_account(account, limit).await
    }
    async fn locked_jobs_by_account(&self, account: &AccountId) -> Result<Vec<JobRow>> {
        self.inner.locked_jobs_by_account(account).await
    }
    async fn processing_by_node(&self, node: Option<&str>) -> Result<Vec<JobRow>> {
        self.inner.processing_by_node(node).await
    }
    async fn list_by_account_state(
        &self,
        account: &AccountId,
        status: Option<JobStatus>,
        range: CreatedRange,
        page: Page,
    ) -> Result<Listing<JobRow>> {
        self.inner
            .list_by_account_state(account, status, range, page)
            .await
    }
    async fn list_by_faxbox_state(
        &self,
        faxbox_id: &str,
        status: Option<JobStatus>,
        range: CreatedRange,
        page: Page,
    ) -> Result<Listing<JobRow>> {
        self.inner
            .list_by_faxbox_state(faxbox_id, status, range, page)
            .await
    }
    async fn faxbox_by_email(&self, address: &str) -> Result<Option<FaxboxAddress>> {
        self.inner.faxbox_by_email(address).await
    }
    async fn modb_list(
        &self,
        account: &AccountId,
        filter: &ModbFilter,
        range: CreatedRange,
        page: Page,
    ) -> Result<Listing<ModbRow>> {
        self.inner.modb_list(account, filter, range, page).await
    }
    async fn docs_by_type(&self, db: &Db, pvt_type: &str) -> Result<Vec<Value>> {
        self.inner.docs_by_type(db, pvt_type).await
    }
    async fn subscribe(&self, db: &Db) -> Result<broadcast::Receiver<Change>> {
        self.inner.subscribe(db).await
    }
}

/// Resident set size of this process in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

async fn submit(store: &SharedStore, account: &AccountId, to: &str, tiff: &[u8]) -> Result<String> {
    let id = new_id();
    let rev = store
        .put_attachment(
            &Db::Faxes,
            &id,
            None,
            FAX_FILE,
            "image/tiff",
            bytes_stream(tiff.to_vec()),
        )
        .await?;
    let mut doc = store
        .get(&Db::Faxes, &id)
        .await?
        .unwrap_or_else(|| json!({"_id": id}));
    let now = faxd::time::now_gregorian();
    for (k, v) in [
        ("_rev", json!(rev)),
        ("pvt_type", json!("fax")),
        ("pvt_job_status", json!("pending")),
        ("pvt_account_id", json!(account.as_str())),
        ("pvt_created", json!(now)),
        ("pvt_modified", json!(now)),
        ("to_number", json!(to)),
        ("from_number", json!("+14155550100")),
        ("retries", json!(1)),
    ] {
        doc[k] = v;
    }
    store.save(&Db::Faxes, doc).await?;
    Ok(id)
}

async fn wait_drained(store: &SharedStore, accounts: &[AccountId], within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let left: Vec<_> = match store.schedule_accounts().await {
            Ok(a) => a
                .into_iter()
                .filter(|(a, _)| accounts.contains(a))
                .collect(),
            Err(_) => vec![],
        };
        let busy = store
            .processing_by_node(None)
            .await
            .map(|r| {
                r.iter()
                    .any(|r| accounts.iter().any(|a| a.as_str() == r.account_id))
            })
            .unwrap_or(false);
        if left.is_empty() && !busy {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the benchmark on `store` and prints the figures.
pub async fn run(
    config: Config,
    store: SharedStore,
    jobs: usize,
    accounts: usize,
    latency_jobs: usize,
) -> std::result::Result<(), String> {
    let e = |e: faxd::store::StoreError| e.to_string();
    faxd::bootstrap::ensure_global_dbs(&store)
        .await
        .map_err(e)?;
    let counting = Arc::new(CountingStore {
        inner: store.clone(),
        writes: AtomicU64::new(0),
    });
    let shared: SharedStore = counting.clone();
    let accts: Vec<AccountId> = (0..accounts.max(1))
        .map(|_| AccountId::generate())
        .collect();
    let tiff = blank_tiff(1);
    println!(
        "backend {}: {jobs} jobs over {} accounts, max_outbound 10 each, null engine",
        store.backend().as_str(),
        accts.len()
    );

    // 1. Throughput.
    let t0 = Instant::now();
    for i in 0..jobs {
        let a = &accts[i % accts.len()];
        submit(&store, a, &format!("+1510{:07}", i), &tiff)
            .await
            .map_err(e)?;
    }
    println!(
        "  queued in {:.1} s ({:.0} submissions/s)",
        t0.elapsed().as_secs_f64(),
        jobs as f64 / t0.elapsed().as_secs_f64().max(1e-9)
    );
    let mut cfg = config.clone();
    cfg.node.name = format!("faxd-bench-{}@127.0.0.1", new_id());
    let sysconf = SystemConfig::load(shared.clone(), &cfg.node.name)
        .await
        .map_err(|e| e.to_string())?;
    let ctx = NodeContext::new(cfg, shared.clone(), sysconf);
    let cache = std::env::temp_dir().join(format!("faxd-bench-{}", new_id()));
    let settings = Settings {
        file_cache: Some(cache.clone()),
        accounts: Some(accts.iter().cloned().collect()),
        ..Settings::default()
    };
    let rss_before = rss_kib();
    let writes_before = counting.writes.load(Ordering::Relaxed);
    let gw = ScriptGateway::new(Duration::ZERO, false);
    let docs = Arc::new(StoredTiff {
        store: shared.clone(),
    });
    let t1 = Instant::now();
    let (sup, _) = Actor::spawn(
        None,
        Supervisor,
        SupervisorArgs {
            name: "bench".into(),
            intensity: Intensity::new(5, Duration::from_secs(10)),
            children: outbound::children(ctx.clone(), gw, docs.clone(), settings.clone()),
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    // Sample RSS while the queue drains.
    let mut rss_peak = rss_before;
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        rss_peak = rss_peak.max(rss_kib());
        if wait_drained(&shared, &accts, Duration::from_millis(0)).await {
            break;
        }
        if Instant::now() > deadline {
            return Err("jobs did not drain within 30 min".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = t1.elapsed().as_secs_f64();
    let writes = counting.writes.load(Ordering::Relaxed) - writes_before;
    println!(
        "  drained in {secs:.2} s: {:.0} jobs/s; {:.2} store writes per job \
         (lock, acquire, MODB copy + its attachment, delete); RSS growth {:.2} KiB per queued job \
         (peak {} KiB, before {} KiB)",
        jobs as f64 / secs.max(1e-9),
        writes as f64 / jobs.max(1) as f64,
        rss_peak.saturating_sub(rss_before) as f64 / jobs.max(1) as f64,
        rss_peak,
        rss_before
    );
    shutdown(sup, Duration::from_secs(60))
        .await
        .map_err(|e| e.to_string())?;

    // 2. Dispatch latency with an idle engine.
    let gw = ScriptGateway::new(Duration::ZERO, true);
    let (sup, _) = Actor::spawn(
        None,
        Supervisor,
        SupervisorArgs {
            name: "bench-latency".into(),
            intensity: Intensity::new(5, Duration::from_secs(10)),
            children: outbound::children(ctx, gw.clone(), docs, settings),
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut submitted = std::collections::HashMap::new();
    for i in 0..latency_jobs {
        let a = &accts[i % accts.len()];
        let id = submit(&store, a, &format!("+1520{:07}", i), &tiff)
            .await
            .map_err(e)?;
        submitted.insert(id, faxd::time::now_unix_ms());
        // One at a time: wait for its originate so the queue is idle for the next.
        let deadline = Instant::now() + Duration::from_secs(10);
        while gw.originated().len() <= i && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    wait_drained(&shared, &accts, Duration::from_secs(60)).await;
    let mut lat: Vec<i64> = gw
        .originated()
        .iter()
        .filter_map(|o| submitted.get(&o.fax.job_id).map(|s| o.at_ms - s))
        .collect();
    lat.sort();
    println!(
        "  dispatch latency (pending -> originate) over {} jobs: p50 {} ms, p99 {} ms, max {} ms",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0)
    );
    shutdown(sup, Duration::from_secs(60))
        .await
        .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(cache);
    Ok(())
}
