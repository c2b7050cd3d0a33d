//! What the outbound processes (fax_monitor, fax_jobs, fax_worker) share: the node context,
//! the media engine, the document source, the engine settings, and the [`Spawner`] through
//! which they start each other under their supervisors (implemented by `faxd-supervisors`,
//! which owns the tree). Also the live-status lookup the API uses ([`WorkerStatus`]).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faxd::context::NodeContext;
use faxd::gateway::Gateway;
use faxd::ids::AccountId;
use faxd::outbound::lease::ReleasePolicy;
use faxd::outbound::{DocumentSource, LiveStatus, StatusSource, names};
use ractor::ActorRef;

use crate::fax_jobs::JobsMsg;
use crate::fax_worker::{WorkerArgs, WorkerMsg};
use crate::stage::Timeouts;

/// Timeout of every RPC between outbound processes and their supervisors.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// Engine settings (node-level; the `system_config.fax` keys come from the live config).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Stage timeouts of a worker.
    pub timeouts: Timeouts,
    /// How often a worker renews the lease of its job.
    pub heartbeat: Duration,
    /// A processing job whose heartbeat is older than this is requeued by fax_monitor.
    pub lease: Duration,
    /// fax_monitor's safety sweep (the change feed does the real work).
    pub sweep: Duration,
    /// Where workers put the fax-ready TIFF (see [`Env::file_cache`] when `None`).
    pub file_cache: Option<PathBuf>,
    /// Only these accounts are scheduled (tests and benchmarks sharing a store); `None`:
    /// every account.
    pub accounts: Option<HashSet<AccountId>>,
    /// The outbound leader lease (a store shared by a cluster): only its holder schedules.
    /// `None`: this node always schedules (the embedded store is single-node; tests and
    /// benchmarks that partition a shared store by `accounts`).
    pub leader: Option<LeaderLease>,
    /// Faults to inject (test builds only; empty otherwise).
    pub faults: Faults,
}

/// Faults the engine injects into itself, so that tests can drive the paths a crash takes.
/// The fields exist only with the `fault-injection` feature, which only the test builds of
/// faxd-supervisors enable; no configuration key reaches them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// A worker panics when the far end reports this page of a job's first attempt.
    #[cfg(feature = "fault-injection")]
    pub panic_at_page_of_first_attempt: Option<u32>,
}

/// Timing of the outbound leader lease ([`faxd::outbound::leader`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderLease {
    /// The holder renews it this often; the others look this often.
    pub renew: Duration,
    /// Not renewed for this long (as a watcher sees it), it is taken over.
    pub lease: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            timeouts: Timeouts::default(),
            heartbeat: Duration::from_secs(30),
            lease: Duration::from_secs(120),
            sweep: Duration::from_secs(60),
            file_cache: None,
            accounts: None,
            leader: None,
            faults: Faults::default(),
        }
    }
}

impl Settings {
    pub fn schedules(&self, account: &AccountId) -> bool {
        self.accounts.as_ref().is_none_or(|a| a.contains(account))
    }
}

/// Starts outbound processes under their supervisors.
#[ractor::async_trait]
pub trait Spawner: Send + Sync + 'static {
    /// Starts the fax_jobs of `account` under fax_jobs_sup (transient).
    async fn start_jobs(
        &self,
        env: Arc<Env>,
        account: AccountId,
    ) -> Result<ActorRef<JobsMsg>, String>;
    /// Starts a fax_worker under fax_worker_sup (transient).
    async fn start_worker(&self, args: WorkerArgs) -> Result<ActorRef<WorkerMsg>, String>;
}

/// Everything the outbound processes share (read-only but for the [`LeaderGate`]).
pub struct Env {
    pub ctx: NodeContext,
    pub gateway: Arc<dyn Gateway>,
    pub docs: Arc<dyn DocumentSource>,
    pub settings: Settings,
    pub spawner: Arc<dyn Spawner>,
    /// Whether this node holds the outbound leader lease (the cluster-wide duties of
    /// fax_monitor: lease recovery, stranded intakes).
    pub gate: LeaderGate,
    /// The accounts whose queue this node may run now (their queue leases).
    pub owners: OwnerGates,
}

/// The accounts whose outbound queue (fax_jobs) this node may run now, each open until the
/// end of the queue lease this node holds on it ([`faxd::outbound::owner`]), kept by
/// fax_monitor's lease keeper. fax_jobs looks before starting each job and a worker before
/// its take, so a node whose lease on an account ran out (a long pause, a store it cannot
/// reach) starts nothing more for it even before its keeper notices.
#[derive(Debug, Default)]
pub struct OwnerGates(Mutex<HashMap<AccountId, Instant>>);

impl OwnerGates {
    /// Open for `account` until `until` (the end of the lease just taken or renewed).
    pub fn open_until(&self, account: &AccountId, until: Instant) {
        if let Ok(mut g) = self.0.lock() {
            g.insert(account.clone(), until);
        }
    }

    pub fn close(&self, account: &AccountId) {
        if let Ok(mut g) = self.0.lock() {
            g.remove(account);
        }
    }

    pub fn is_open(&self, account: &AccountId) -> bool {
        self.0
            .lock()
            .map(|g| g.get(account).is_some_and(|until| Instant::now() < *until))
            .unwrap_or(false)
    }

    /// The accounts open now, sorted.
    pub fn owned(&self) -> Vec<AccountId> {
        let now = Instant::now();
        let mut v: Vec<AccountId> = self
            .0
            .lock()
            .map(|g| {
                g.iter()
                    .filter(|(_, until)| now < **until)
                    .map(|(a, _)| a.clone())
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        v
    }
}

/// Whether this node may start transmissions now: opened by fax_monitor until the end of
/// the leader lease it holds, closed when it steps down (or by a worker that found the lease
/// held by another node after taking a job). fax_jobs looks before taking each
/// job, so a node whose lease ran out (a long pause, a store it cannot reach) starts nothing
/// more even before its fax_monitor notices.
#[derive(Debug)]
pub struct LeaderGate(Mutex<Option<Instant>>);

impl LeaderGate {
    /// A gate for `settings`: closed until the lease is taken, or open for good when this
    /// node always schedules (`settings.leader` is `None`).
    pub fn new(settings: &Settings) -> Self {
        let always = settings.leader.is_none().then(|| Instant::now() + FOREVER);
        LeaderGate(Mutex::new(always))
    }

    /// Open until `until` (the end of the lease just taken or renewed).
    pub fn open_until(&self, until: Instant) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(until);
        }
    }

    pub fn close(&self) {
        if let Ok(mut g) = self.0.lock() {
            *g = None;
        }
    }

    pub fn is_open(&self) -> bool {
        self.0
            .lock()
            .map(|g| g.is_some_and(|until| Instant::now() < until))
            .unwrap_or(false)
    }
}

/// "For good" for an always-open gate (far enough, and no overflow on any platform).
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Env {
    pub fn node(&self) -> &str {
        self.ctx.node()
    }

    /// Whether transmissions lease their destination number in the store (a cluster with
    /// `serialize_outbound_numbers`): one call per number across the cluster.
    pub fn leases_numbers(&self) -> bool {
        self.settings.leader.is_some() && self.ctx.sysconf.fax().serialize_outbound_numbers
    }

    /// Whether this node may start transmissions of `account` now: always without a cluster
    /// store, else while it holds the account's queue lease.
    pub fn owns(&self, account: &AccountId) -> bool {
        self.settings.leader.is_none() || self.owners.is_open(account)
    }

    /// Where workers put fax-ready TIFFs: the node's setting, else `file_cache_path`, else
    /// (the default, empty) `<data_dir>/fax_cache`.
    pub fn file_cache(&self) -> PathBuf {
        if let Some(dir) = &self.settings.file_cache {
            return dir.clone();
        }
        let configured = self.ctx.sysconf.fax().file_cache_path.clone();
        if configured.is_empty() {
            self.ctx.config.node.data_dir.join("fax_cache")
        } else {
            PathBuf::from(configured)
        }
    }

    pub fn policy(&self) -> ReleasePolicy {
        ReleasePolicy {
            notify: self.ctx.notify.clone(),
            ..ReleasePolicy::from_config(&self.ctx.sysconf.fax())
        }
    }

    /// The running fax_jobs of an account on this node: the local member of the account's
    /// process group (fax_jobs has no registered name, see [`crate::fax_jobs`]).
    pub fn jobs_of(account: &str) -> Option<ActorRef<JobsMsg>> {
        ractor::pg::get_local_members(&names::queue_group(account))
            .into_iter()
            .next()
            .map(Into::into)
    }

    /// The running worker of a job on this node (by either naming scheme).
    pub fn worker_of(job_id: &str, to_number: &str) -> Vec<ActorRef<WorkerMsg>> {
        names::worker_candidates(to_number, job_id)
            .into_iter()
            .filter_map(ractor::registry::where_is)
            .map(Into::into)
            .collect()
    }
}

/// Live status: the [`StatusSource`] the API gets. It asks the job's worker on this node,
/// else, over the cluster, the fax_status process of the node the job names
/// ([`crate::fax_status`]), bounded by [`crate::fax_status::ASK_TIMEOUT`].
pub struct WorkerStatus;

impl WorkerStatus {
    /// The status from a worker of this node, if it answers within `timeout`.
    pub async fn local(job_id: &str, to_number: &str, timeout: Duration) -> Option<LiveStatus> {
        for w in Env::worker_of(job_id, to_number) {
            if let Ok(ractor::rpc::CallResult::Success(st)) =
                w.call(WorkerMsg::Status, Some(timeout)).await
                && st.job_id == job_id
            {
                return Some(st);
            }
        }
        None
    }
}

#[ractor::async_trait]
impl StatusSource for WorkerStatus {
    async fn live_status(
        &self,
        job_id: &str,
        to_number: &str,
        node: Option<&str>,
    ) -> Option<LiveStatus> {
        if let Some(st) = Self::local(job_id, to_number, RPC_TIMEOUT).await {
            return Some(st);
        }
        crate::fax_status::ask(node?, job_id, to_number).await
    }
}
