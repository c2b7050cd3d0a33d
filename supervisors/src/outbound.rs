//! The outbound part of fax_sup (DESIGN.md §1): fax_jobs_sup and fax_worker_sup (dynamic,
//! transient children), fax_monitor and fax_status, plus the [`Spawner`] the outbound actors use to
//! start their children under these supervisors.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use faxd::config::OutboundSection;
use faxd::context::NodeContext;
use faxd::gateway::Gateway;
use faxd::ids::AccountId;
use faxd::outbound::{DocumentSource, names};
use faxd_actors::fax_jobs::{FaxJobs, JobsMsg};
use faxd_actors::fax_monitor::FaxMonitor;
use faxd_actors::fax_status::FaxStatus;
use faxd_actors::fax_worker::{FaxWorker, WorkerArgs, WorkerMsg};
use faxd_actors::outbound::{Env, Faults, LeaderGate, LeaderLease, RPC_TIMEOUT, Settings, Spawner};
use faxd_actors::stage::Timeouts;
use ractor::{Actor, ActorRef};

use crate::fax_sup::STORE_BACKOFF;
use crate::supervisor::{
    ChildSpec, Intensity, Restart, Supervisor, SupervisorArgs, SupervisorMsg, spawn_child,
    start_child,
};

/// Restart intensity of fax_jobs_sup and fax_worker_sup: one child per account or per
/// transmission, so a burst of failures of single jobs must not take the node down.
pub const DYNAMIC_INTENSITY: Intensity = Intensity::new(100, Duration::from_secs(10));

/// The running dynamic supervisors (set by their start functions, on every restart).
#[derive(Default)]
struct Slots {
    jobs: Mutex<Option<ActorRef<SupervisorMsg>>>,
    workers: Mutex<Option<ActorRef<SupervisorMsg>>>,
}

fn get(
    slot: &Mutex<Option<ActorRef<SupervisorMsg>>>,
    what: &str,
) -> Result<ActorRef<SupervisorMsg>, String> {
    slot.lock()
        .map_err(|_| format!("{what} slot poisoned"))?
        .clone()
        .ok_or_else(|| format!("{what} is not running"))
}

/// Starts fax_jobs and fax_worker children under the tree's supervisors.
struct TreeSpawner(Arc<Slots>);

#[ractor::async_trait]
impl Spawner for TreeSpawner {
    async fn start_jobs(
        &self,
        env: Arc<Env>,
        account: AccountId,
    ) -> Result<ActorRef<JobsMsg>, String> {
        let sup = get(&self.0.jobs, "fax_jobs_sup")?;
        let name = names::fax_jobs(account.as_str());
        // Its start reads the store: restarts wait out a store outage (STORE_BACKOFF). No
        // registered name: it is found through its process group (`Env::jobs_of`); see
        // `faxd_actors::fax_jobs` for why.
        let spec = ChildSpec::new(name, Restart::Transient, move |sup| {
            spawn_child(None, FaxJobs, (env.clone(), account.clone()), sup)
        })
        .with_backoff(STORE_BACKOFF);
        let cell = start_child(&sup, spec, RPC_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        Ok(cell.into())
    }

    async fn start_worker(&self, args: WorkerArgs) -> Result<ActorRef<WorkerMsg>, String> {
        let sup = get(&self.0.workers, "fax_worker_sup")?;
        let serialize =
            args.env.ctx.sysconf.fax().serialize_outbound_numbers && !args.to_number.is_empty();
        let name = names::fax_worker(serialize, &args.to_number, &args.job_id);
        let spec = ChildSpec::new(
            names::worker_child(&args.job_id),
            Restart::Transient,
            move |sup| spawn_child(Some(name.clone()), FaxWorker, args.clone(), sup),
        );
        let cell = start_child(&sup, spec, RPC_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        Ok(cell.into())
    }
}

fn dynamic_sup(
    id: &'static str,
    slots: Arc<Slots>,
    pick: fn(&Slots) -> &Mutex<Option<ActorRef<SupervisorMsg>>>,
) -> ChildSpec {
    ChildSpec::new(id, Restart::Permanent, move |parent| {
        let slots = slots.clone();
        async move {
            let (sup, _) = Actor::spawn_linked(
                None,
                Supervisor,
                SupervisorArgs {
                    name: id.to_string(),
                    intensity: DYNAMIC_INTENSITY,
                    children: vec![],
                },
                parent,
            )
            .await?;
            if let Ok(mut slot) = pick(&slots).lock() {
                *slot = Some(sup.clone());
            }
            Ok(sup.get_cell())
        }
    })
    .supervisor()
}

/// Engine settings from the node configuration's `[outbound]` section. On a store shared by
/// a cluster (`shared_store`) only the holder of the outbound leader lease schedules.
pub fn settings(c: &OutboundSection, shared_store: bool) -> Settings {
    let s = Duration::from_secs;
    Settings {
        timeouts: Timeouts {
            prepare: s(c.prepare_timeout),
            originate: s(c.originate_timeout),
            negotiate: s(c.negotiate_timeout),
            per_page: s(c.page_timeout),
        },
        heartbeat: s(c.heartbeat.max(1)),
        lease: s(c.lease.max(2 * c.heartbeat.max(1))),
        sweep: s(c.sweep.max(1)),
        file_cache: None,
        accounts: None,
        leader: shared_store.then(|| {
            let renew = c.leader_renew.max(1);
            LeaderLease {
                renew: s(renew),
                lease: s(c.leader_lease.max(2 * renew)),
            }
        }),
        faults: Faults::default(),
    }
}

/// fax_jobs_sup, fax_worker_sup, fax_monitor and fax_status, in start order.
pub fn children(
    ctx: NodeContext,
    gateway: Arc<dyn Gateway>,
    docs: Arc<dyn DocumentSource>,
    settings: Settings,
) -> Vec<ChildSpec> {
    let slots = Arc::new(Slots::default());
    let node = ctx.node().to_string();
    let env = Arc::new(Env {
        ctx,
        gateway,
        docs,
        gate: LeaderGate::new(&settings),
        owners: Default::default(),
        settings,
        spawner: Arc::new(TreeSpawner(slots.clone())),
    });
    vec![
        dynamic_sup("fax_jobs_sup", slots.clone(), |s| &s.jobs),
        dynamic_sup("fax_worker_sup", slots, |s| &s.workers),
        ChildSpec::new("fax_monitor", Restart::Permanent, move |sup| {
            spawn_child(None, FaxMonitor, env.clone(), sup)
        })
        .with_backoff(STORE_BACKOFF),
        ChildSpec::new("fax_status", Restart::Permanent, move |sup| {
            spawn_child(None, FaxStatus, node.clone(), sup)
        }),
    ]
}
