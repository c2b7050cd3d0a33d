//! `faxd outbound bench`: the scheduler benchmark (numbers for the notes, not asserted). The
//! outbound subtree runs on the configured store with the scripted engine at zero line time
//! (the `null` engine) over many accounts:
//!
//! 1. memory — the subtree starts with its engine held shut (every originate waits) and the
//!    RSS of the process is taken; then jobs are submitted round robin over A accounts until
//!    every account's queue has filled its `max_outbound` slots (the engine holds those
//!    calls): RSS per transmission in flight; then the rest of the N jobs, which stay queued
//!    behind them: RSS growth per queued job. The engine then opens and the jobs drain;
//! 2. throughput — N more jobs queued over the A accounts, then a fresh subtree starts:
//!    jobs/s until every job is in its MODB, store writes per job (counted by a wrapping
//!    store, by kind), and the CPU time of the process per job;
//! 3. dispatch latency — with the engine idle, jobs submitted one at a time: time from the
//!    `pending` write being acknowledged to the media engine's originate (p50/p99).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use faxd::config::{Config, SystemConfig};
use faxd::context::NodeContext;
use faxd::gateway::script::ScriptGateway;
use faxd::gateway::{FaxCall, Gateway, GatewayError, OutboundFax};
use faxd::ids::{AccountId, Db, new_id};
use faxd::model::JobStatus;
use faxd::outbound::StoredTiff;
use faxd::outbound::docs::{FAX_FILE, blank_tiff};
use faxd::store::{
    Attachment, Backend, ByteStream, Change, CreatedRange, FaxboxAddress, JobRow, Listing,
    ModbFilter, ModbRow, NewAttachment, Page, Result, SharedStore, SmtpLogRow, Store, bytes_stream,
};
use faxd_actors::outbound::Settings;
use ractor::Actor;
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};

use crate::outbound;
use crate::supervisor::{Intensity, Supervisor, SupervisorArgs, shutdown};

/// Kinds of store writes, as counted by [`CountingStore`].
#[derive(Clone, Copy)]
enum Write {
    Save,
    SaveWithAttachments,
    Delete,
    PutAttachment,
    DeleteAttachment,
}

const WRITE_KINDS: [(&str, Write); 5] = [
    ("save", Write::Save),
    ("save with attachments", Write::SaveWithAttachments),
    ("delete", Write::Delete),
    ("attachment put", Write::PutAttachment),
    ("attachment delete", Write::DeleteAttachment),
];

/// A store that counts writes by kind: every call that writes counts once (each is one
/// atomic store operation: one SQLite transaction, one CouchDB request).
pub struct CountingStore {
    inner: SharedStore,
    writes: [AtomicU64; 5],
}

impl CountingStore {
    fn new(inner: SharedStore) -> Self {
        Self {
            inner,
            writes: Default::default(),
        }
    }

    fn count(&self, kind: Write) {
        self.writes[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.writes[i].load(Ordering::Relaxed))
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
        self.count(Write::Save);
        self.inner.save(db, doc).await
    }
    /// One atomic store operation (one SQLite transaction, one CouchDB PUT): one write.
    async fn save_with_attachments(
        &self,
        db: &Db,
        doc: Value,
        attachments: Vec<NewAttachment>,
    ) -> Result<Value> {
        self.count(Write::SaveWithAttachments);
        self.inner.save_with_attachments(db, doc, attachments).await
    }
    async fn delete(&self, db: &Db, id: &str, rev: &str) -> Result<String> {
        self.count(Write::Delete);
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
        self.count(Write::PutAttachment);
        self.inner
            .put_attachment(db, id, rev, name, content_type, body)
            .await
    }
    async fn get_attachment(&self, db: &Db, id: &str, name: &str) -> Result<Option<Attachment>> {
        self.inner.get_attachment(db, id, name).await
    }
    async fn delete_attachment(&self, db: &Db, id: &str, rev: &str, name: &str) -> Result<String> {
        self.count(Write::DeleteAttachment);
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
    async fn stale_jobs(&self, status: JobStatus, modified_before: i64) -> Result<Vec<JobRow>> {
        self.inner.stale_jobs(status, modified_before).await
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
    async fn smtp_logs(
        &self,
        account: &AccountId,
        range: CreatedRange,
        page: Page,
    ) -> Result<Listing<SmtpLogRow>> {
        self.inner.smtp_logs(account, range, page).await
    }
    async fn notify_due(&self, db: &Db, due_by: i64, limit: usize) -> Result<Vec<String>> {
        self.inner.notify_due(db, due_by, limit).await
    }
    async fn docs_by_type(&self, db: &Db, pvt_type: &str) -> Result<Vec<Value>> {
        self.inner.docs_by_type(db, pvt_type).await
    }
    async fn subscribe(&self, db: &Db) -> Result<broadcast::Receiver<Change>> {
        self.inner.subscribe(db).await
    }
}

/// A media engine whose originates wait until it is opened (the memory phase: queued jobs
/// stay queued while the queues' slots are held).
struct Gated {
    inner: Arc<ScriptGateway>,
    open: AtomicBool,
    opened: Notify,
    waiting: AtomicUsize,
}

impl Gated {
    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.opened.notify_waiters();
    }
}

#[async_trait]
impl Gateway for Gated {
    fn name(&self) -> &'static str {
        "null (held)"
    }

    async fn originate(&self, fax: OutboundFax) -> std::result::Result<FaxCall, GatewayError> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        loop {
            let opened = self.opened.notified();
            if self.open.load(Ordering::SeqCst) {
                break;
            }
            opened.await;
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        self.inner.originate(fax).await
    }
}

/// CPU time (user + system) of this process so far, in ms.
fn cpu_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the 12th, stime 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // The kernel reports in clock ticks (USER_HZ, 100 on Linux).
    ticks * 10
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

/// Starts the outbound subtree (fax_jobs_sup, fax_worker_sup, fax_monitor) under a
/// supervisor of its own.
async fn start_subtree(
    name: &str,
    ctx: &NodeContext,
    gw: Arc<dyn Gateway>,
    docs: Arc<StoredTiff>,
    settings: &Settings,
) -> std::result::Result<ractor::ActorRef<crate::supervisor::SupervisorMsg>, String> {
    let (sup, _) = Actor::spawn(
        None,
        Supervisor,
        SupervisorArgs {
            name: name.into(),
            intensity: Intensity::new(5, Duration::from_secs(10)),
            children: outbound::children(ctx.clone(), gw, docs, settings.clone()),
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(sup)
}

/// Submits `jobs` jobs round-robin over `accts` (numbers `prefix` + index).
async fn queue(
    store: &SharedStore,
    accts: &[AccountId],
    jobs: usize,
    prefix: &str,
    tiff: &[u8],
) -> std::result::Result<f64, String> {
    let t0 = Instant::now();
    for i in 0..jobs {
        let a = &accts[i % accts.len()];
        submit(store, a, &format!("{prefix}{i:07}"), tiff)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// Waits (polling, within 30 min) until every job of `accts` is out of the faxes database.
async fn drain(shared: &SharedStore, accts: &[AccountId]) -> std::result::Result<(), String> {
    if wait_drained(shared, accts, Duration::from_secs(1800)).await {
        Ok(())
    } else {
        Err("jobs did not drain within 30 min".into())
    }
}

/// Runs the benchmark on `store` and prints the figures.
pub async fn run(
    config: Config,
    store: SharedStore,
    jobs: usize,
    accounts: usize,
    latency_jobs: usize,
    file_cache: Option<std::path::PathBuf>,
) -> std::result::Result<(), String> {
    let e = |e: faxd::store::StoreError| e.to_string();
    faxd::bootstrap::ensure_global_dbs(&store)
        .await
        .map_err(e)?;
    let counting = Arc::new(CountingStore::new(store.clone()));
    let shared: SharedStore = counting.clone();
    let accts: Vec<AccountId> = (0..accounts.max(1))
        .map(|_| AccountId::generate())
        .collect();
    let tiff = blank_tiff(1);
    let mut cfg = config.clone();
    cfg.node.name = format!("faxd-bench-{}@127.0.0.1", new_id());
    let sysconf = SystemConfig::load(shared.clone(), &cfg.node.name)
        .await
        .map_err(|e| e.to_string())?;
    let max_outbound = sysconf.fax().max_outbound.max(1) as usize;
    let ctx = NodeContext::new(cfg, shared.clone(), sysconf);
    let cache = file_cache
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("faxd-bench-{}", new_id()));
    let settings = Settings {
        file_cache: Some(cache.clone()),
        accounts: Some(accts.iter().cloned().collect()),
        ..Settings::default()
    };
    let docs = Arc::new(StoredTiff {
        store: shared.clone(),
    });
    println!(
        "backend {}: {jobs} jobs over {} accounts, max_outbound {max_outbound} each, null engine, \
         file cache {}",
        store.backend().as_str(),
        accts.len(),
        cache.display()
    );

    // 1. Memory per queued job: the engine holds every call, so jobs stay queued.
    let gated = Arc::new(Gated {
        inner: ScriptGateway::new(Duration::ZERO, false),
        open: AtomicBool::new(false),
        opened: Notify::new(),
        waiting: AtomicUsize::new(0),
    });
    // The held calls must not time out while the queue fills.
    let mut held = settings.clone();
    held.timeouts.originate = Duration::from_secs(3600);
    let sup = start_subtree("bench-memory", &ctx, gated.clone(), docs.clone(), &held).await?;
    let rss_before = rss_kib();
    // First enough jobs to fill every account's slots (round robin), held in flight...
    let in_flight = jobs.min(accts.len() * max_outbound);
    let t0 = Instant::now();
    queue(&store, &accts, in_flight, "+1530", &tiff).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while gated.waiting.load(Ordering::SeqCst) < in_flight {
        if Instant::now() > deadline {
            return Err("the queues did not fill their slots within 5 min".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_in_flight = rss_kib();
    // ...then the rest, which stay queued behind them.
    let queued = jobs - in_flight;
    queue(&store, &accts, queued, "+1540", &tiff).await?;
    let secs = t0.elapsed().as_secs_f64();
    let rss_queued = rss_kib();
    println!(
        "  memory: {jobs} jobs submitted in {secs:.1} s ({:.0} submissions/s) with the engine held",
        jobs as f64 / secs.max(1e-9)
    );
    println!(
        "  RSS {rss_before} KiB idle; {rss_in_flight} KiB with {in_flight} calls held in flight \
         ({:.1} KiB per transmission); {rss_queued} KiB with {queued} more jobs queued behind \
         them: {:.2} KiB per queued job",
        rss_in_flight.saturating_sub(rss_before) as f64 / in_flight.max(1) as f64,
        rss_queued.saturating_sub(rss_in_flight) as f64 / queued.max(1) as f64,
    );
    gated.open();
    drain(&shared, &accts).await?;
    shutdown(sup, Duration::from_secs(60))
        .await
        .map_err(|e| e.to_string())?;

    // 2. Throughput: queue first, then a fresh subtree drains the queue.
    let secs = queue(&store, &accts, jobs, "+1510", &tiff).await?;
    println!(
        "  throughput: {jobs} jobs queued in {secs:.1} s ({:.0} submissions/s)",
        jobs as f64 / secs.max(1e-9)
    );
    let writes_before = counting.snapshot();
    let rss_before = rss_kib();
    let cpu_before = cpu_ms();
    let gw = ScriptGateway::new(Duration::ZERO, false);
    let t1 = Instant::now();
    let sup = start_subtree("bench", &ctx, gw, docs.clone(), &settings).await?;
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
    let cpu = cpu_ms() - cpu_before;
    let writes: Vec<u64> = counting
        .snapshot()
        .iter()
        .zip(writes_before)
        .map(|(a, b)| a - b)
        .collect();
    let per_job = |n: u64| n as f64 / jobs.max(1) as f64;
    let breakdown: Vec<String> = WRITE_KINDS
        .iter()
        .zip(&writes)
        .filter(|(_, n)| **n > 0)
        .map(|((name, _), n)| format!("{name} {:.2}", per_job(*n)))
        .collect();
    println!(
        "  drained in {secs:.2} s: {:.0} jobs/s; {:.1} ms CPU per job; {:.2} store writes per job \
         ({}); RSS peak while draining {} KiB ({} KiB before)",
        jobs as f64 / secs.max(1e-9),
        cpu as f64 / jobs.max(1) as f64,
        per_job(writes.iter().sum()),
        breakdown.join(", "),
        rss_peak,
        rss_before
    );
    shutdown(sup, Duration::from_secs(60))
        .await
        .map_err(|e| e.to_string())?;

    // 3. Dispatch latency with an idle engine.
    let gw = ScriptGateway::new(Duration::ZERO, true);
    let sup = start_subtree("bench-latency", &ctx, gw.clone(), docs, &settings).await?;
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
