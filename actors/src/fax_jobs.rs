//! fax_jobs: the outbound queue of one account (Kazoo's `fax_jobs`). Started by fax_monitor
//! through fax_jobs_sup (child id `fax_outbound_<account_id>`, which keeps it unique on the
//! node), transient; it stops itself (normally, so it is not restarted) when nothing is in
//! flight and nothing is queued.
//!
//! It joins the process group [`names::queue_group`], which ractor_cluster shares with the
//! linked nodes: this node finds its own queue there ([`crate::outbound::Env::jobs_of`]) and
//! any node sees where an account's queue runs ([`running_queues`], shown by
//! `faxd_maintenance nodes`); the queue lease in the store stays the arbiter of who may run
//! it. It has no name in ractor's registry on purpose: a node keeps a stand-in for each
//! remote member of a shared group, carrying the remote process's name, and when that
//! remote process stops, the stand-in's stop removes the name from the local registry —
//! whichever local process holds it. During a handover back to this node, the queue that
//! had just started here would lose its name and could no longer be woken.
//!
//! It starts due jobs — higher `priority` first, then earliest due, never before `send_at` —
//! with at most `max_outbound` in flight and, with `serialize_outbound_numbers`, at most one
//! per destination number. Each picked job is handed to a new fax_worker, which takes it
//! with one rev-checked `pending → processing` save carrying its lease (the `locked` state
//! of Kazoo's two-step lock and acquire is not used on this path; `locked` jobs left by
//! other nodes or set by hand go back to `pending` when a queue starts). Wake-ups are pushed:
//! fax_monitor casts `Wake` after changes to the faxes database, and so does a watch of
//! `system_config/fax` (every `Wake` reads `max_outbound` again, so a changed limit applies
//! while jobs wait), workers cast `WorkerDone`, and a timer (with a generation token) fires
//! when the earliest not-yet-due job becomes due. The bookkeeping is in [`crate::job_book`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faxd::ids::{AccountId, Db};
use faxd::model::JobStatus;
use faxd::outbound::names;
use faxd::outbound::number_lease::{self, NumberTake};
use faxd::outbound::{Job, lease};
use faxd::store::{CreatedRange, JobRow, Page, StoreError};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{debug, info, warn};

use crate::fax_worker::WorkerArgs;
use crate::job_book::{Candidate, JobBook};
use crate::outbound::Env;

/// Rows fetched from the queue view per refetch.
const FETCH: usize = 200;
/// How long a number stays blocked after a worker could not start for it (another
/// account's transmission to the same number holds the name).
const BLOCK: Duration = Duration::from_secs(1);

/// Messages of fax_jobs (remote-capable, so the queue's process group is seen by the other
/// nodes).
#[derive(ractor_cluster::RactorClusterMessage)]
pub enum JobsMsg {
    /// Jobs of this account may have become due (from fax_monitor), or the fax config
    /// changed: `max_outbound` is read again.
    Wake,
    /// A worker of this account ended, whatever the outcome.
    WorkerDone { job_id: String },
    /// The timer for the earliest not-yet-due job fired; stale generations are ignored.
    Due { generation: u64 },
}

pub struct FaxJobs;

pub struct JobsState {
    env: Arc<Env>,
    account: AccountId,
    book: JobBook,
    /// Due rows fetched, not started yet, earliest due first.
    buffer: VecDeque<JobRow>,
    /// The store may hold due jobs the buffer does not (read when the buffer drains).
    stale: bool,
    /// Earliest due time of a not-yet-due job (gregorian seconds).
    next_due: Option<i64>,
    due_generation: u64,
    /// Numbers whose worker name is held elsewhere, until when.
    blocked: HashMap<String, Instant>,
    /// A worker could not start: look again in a second.
    retry_blocked: bool,
    /// Jobs in flight on another node (a former outbound leader finishing its
    /// transmissions): they count against the limits until their document says otherwise.
    foreign: HashSet<String>,
    /// Looks at `foreign` again every heartbeat (their end is not reported to this queue).
    foreign_timer: Option<tokio::task::JoinHandle<()>>,
    /// On a cluster, until then (a leader lease after the queue started) each pass looks
    /// for other nodes' transmissions again: a former leader's take that was written just
    /// before this node took over may become visible only after this queue started.
    recount_until: Option<Instant>,
    /// Casts `Wake` when `system_config/fax` changes (an operator may raise or lower
    /// `max_outbound` while jobs wait).
    config_watch: Option<tokio::task::JoinHandle<()>>,
    /// Counts this account in `faxd_owned_accounts` while its queue runs here.
    _owned: faxd::metrics::GaugeGuard,
}

#[ractor::async_trait]
impl Actor for FaxJobs {
    type Msg = JobsMsg;
    type State = JobsState;
    type Arguments = (Arc<Env>, AccountId);

    async fn pre_start(
        &self,
        myself: ActorRef<JobsMsg>,
        (env, account): Self::Arguments,
    ) -> Result<JobsState, ActorProcessingErr> {
        // Left automatically when the actor stops.
        ractor::pg::join(
            names::queue_group(account.as_str()),
            vec![myself.get_cell()],
        );
        let fax = env.ctx.sysconf.fax();
        let mut st = JobsState {
            book: JobBook::new(1, fax.serialize_outbound_numbers),
            env,
            account,
            buffer: VecDeque::new(),
            stale: true,
            next_due: None,
            due_generation: 0,
            blocked: HashMap::new(),
            retry_blocked: false,
            foreign: HashSet::new(),
            foreign_timer: None,
            recount_until: None,
            config_watch: None,
            _owned: faxd::metrics::GaugeGuard::hold(&faxd::metrics::global().owned_accounts),
        };
        st.recount_until = st.env.settings.leader.map(|l| Instant::now() + l.lease);
        st.read_limit(true).await;
        st.recover().await?;
        Ok(st)
    }

    async fn post_start(
        &self,
        myself: ActorRef<JobsMsg>,
        st: &mut JobsState,
    ) -> Result<(), ActorProcessingErr> {
        let mut config = st.env.ctx.sysconf.watch();
        let me = myself.clone();
        st.config_watch = Some(tokio::spawn(async move {
            while config.changed().await.is_ok() {
                if me.cast(JobsMsg::Wake).is_err() {
                    return;
                }
            }
        }));
        st.fill(&myself).await
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<JobsMsg>,
        st: &mut JobsState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = st.foreign_timer.take() {
            t.abort();
        }
        if let Some(t) = st.config_watch.take() {
            t.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<JobsMsg>,
        msg: JobsMsg,
        st: &mut JobsState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            JobsMsg::Wake => {
                st.stale = true;
                st.read_limit(false).await;
                st.check_foreign().await;
            }
            JobsMsg::WorkerDone { job_id } => {
                st.book.finish(&job_id);
                // Its release may have queued the job again (due now or later); the Wake
                // for that write can arrive after this message.
                st.stale = true;
            }
            JobsMsg::Due { generation } => {
                if generation != st.due_generation {
                    return Ok(());
                }
                st.next_due = None;
                st.stale = true;
            }
        }
        st.fill(&myself).await
    }
}

impl JobsState {
    /// (Re)reads the account's `max_outbound` (account → reseller → system). A lower limit
    /// lets transmissions in flight finish; a higher one starts more at the next pass. When
    /// it cannot be read, the limit in force stays (at start: the system value).
    async fn read_limit(&mut self, at_start: bool) {
        match self.env.ctx.sysconf.max_outbound(&self.account).await {
            Ok(n) => self.book.max_outbound = n.max(1) as usize,
            Err(e) => {
                warn!(account_id = %self.account, error = %e, "max_outbound unreadable");
                if at_start {
                    self.book.max_outbound =
                        self.env.ctx.sysconf.fax().max_outbound.max(1) as usize;
                }
            }
        }
    }

    /// At start: locked jobs left by an earlier queue of this account on this node go back
    /// to pending; processing jobs whose worker still runs here count as in flight, and so
    /// do those of other nodes whose lease is alive (the limits are cluster-wide).
    async fn recover(&mut self) -> Result<(), StoreError> {
        let store = &self.env.ctx.store;
        let me = self.env.node().to_string();
        for row in store.locked_jobs_by_account(&self.account).await? {
            if row.node.as_deref().is_none_or(|n| n == me) && lease::unlock(store, &row.id).await? {
                info!(account_id = %self.account, job_id = %row.id, "unlocked left-over job");
            }
        }
        for row in self.processing().await? {
            let to = row.to.clone().unwrap_or_default();
            if row.node.as_deref() == Some(me.as_str()) && !Env::worker_of(&row.id, &to).is_empty()
            {
                self.book.hold(&row.id, &to);
            }
        }
        self.count_foreign().await
    }

    async fn processing(&self) -> Result<Vec<JobRow>, StoreError> {
        let rows = self
            .env
            .ctx
            .store
            .list_by_account_state(
                &self.account,
                Some(JobStatus::Processing),
                CreatedRange::all(),
                Page::first(10_000),
            )
            .await?;
        Ok(rows.rows)
    }

    /// Counts the account's transmissions running on other nodes under a live lease (they
    /// hold slots until their documents say they ended).
    async fn count_foreign(&mut self) -> Result<(), StoreError> {
        let me = self.env.node().to_string();
        for row in self.processing().await? {
            if row.node.as_deref() == Some(me.as_str()) || self.book.contains(&row.id) {
                continue;
            }
            let to = row.to.clone().unwrap_or_default();
            if self.foreign_alive(&row.id).await && self.book.hold(&row.id, &to) {
                info!(account_id = %self.account, job_id = %row.id, node = ?row.node,
                      "counting another node's transmission");
                self.foreign.insert(row.id);
            }
        }
        Ok(())
    }

    /// Whether job `id` is processing on another node under a live lease.
    async fn foreign_alive(&self, id: &str) -> bool {
        let Ok(Some(doc)) = self.env.ctx.store.get(&Db::Faxes, id).await else {
            return false;
        };
        let lease_ms = self.env.settings.lease.as_millis() as i64;
        Job::from_doc(&doc).is_ok_and(|job| {
            job.status == JobStatus::Processing
                && job.node.as_deref() != Some(self.env.node())
                && !lease::lease_expired(&job, faxd::time::now_unix_ms(), lease_ms)
        })
    }

    /// Frees the slots of other nodes' transmissions that ended (or were requeued).
    async fn check_foreign(&mut self) {
        if self.foreign.is_empty() {
            return;
        }
        let ids: Vec<String> = self.foreign.iter().cloned().collect();
        for id in ids {
            if !self.foreign_alive(&id).await {
                self.foreign.remove(&id);
                self.book.finish(&id);
            }
        }
        if self.foreign.is_empty()
            && let Some(t) = self.foreign_timer.take()
        {
            t.abort();
        }
    }

    /// Starts as many due jobs as the limits allow; stops the queue when it is idle.
    async fn fill(&mut self, myself: &ActorRef<JobsMsg>) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        self.blocked.retain(|_, until| *until > now);
        if !self.env.owns(&self.account) {
            // This node no longer holds the account's queue lease: start nothing more.
            debug!(account_id = %self.account, "not the account's queue owner; stopping");
            myself.stop(Some("normal".into()));
            return Ok(());
        }
        if self.recount_until.is_some_and(|until| now < until) {
            self.count_foreign().await?;
        }
        if !self.foreign.is_empty() && self.foreign_timer.is_none() {
            let every = self.env.settings.heartbeat;
            self.foreign_timer = Some(myself.send_interval(every, || JobsMsg::Wake));
        }
        for _ in 0..64 {
            if self.book.free() == 0 || !self.env.owns(&self.account) {
                break;
            }
            // The buffer holds the earliest-due rows; newer jobs queue behind them, so the
            // store is read again only once the buffer is drained (one query per up to
            // FETCH jobs, whatever the rate of wake-ups).
            if self.buffer.is_empty() && self.stale {
                self.refetch(myself).await?;
            }
            if self.buffer.is_empty() {
                break;
            }
            if !self.start_some().await? {
                break;
            }
        }
        // Rows whose number is blocked wait in the buffer: look again once the block ended
        // (a whole second later than it, as the due timer counts whole seconds), and again
        // after that while the number stays taken.
        if self.retry_blocked || (!self.blocked.is_empty() && !self.buffer.is_empty()) {
            self.retry_blocked = false;
            let after = faxd::time::now_gregorian() + 1 + BLOCK.as_secs() as i64;
            self.arm_due(myself, Some(after));
        }
        if self.book.in_flight() == 0 && self.buffer.is_empty() && self.next_due.is_none() {
            debug!(account_id = %self.account, "idle; stopping");
            myself.stop(Some("normal".into()));
        }
        Ok(())
    }

    /// Re-reads the account's pending jobs: due ones into the buffer, the earliest future
    /// one arms the due timer.
    async fn refetch(&mut self, myself: &ActorRef<JobsMsg>) -> Result<(), StoreError> {
        let rows = self
            .env
            .ctx
            .store
            .jobs_by_account(&self.account, FETCH)
            .await?;
        // A full page: more may wait behind it.
        self.stale = rows.len() >= FETCH;
        let now = faxd::time::now_gregorian();
        self.buffer.clear();
        let mut next: Option<i64> = None;
        for row in rows {
            if self.book.contains(&row.id) {
                continue;
            }
            let at = row.runnable_at();
            if at <= now {
                self.buffer.push_back(row);
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        self.arm_due(myself, next);
        Ok(())
    }

    fn arm_due(&mut self, myself: &ActorRef<JobsMsg>, at: Option<i64>) {
        let earlier = match (at, self.next_due) {
            (Some(a), Some(cur)) => a < cur,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !earlier {
            return;
        }
        let Some(at) = at else { return };
        self.next_due = Some(at);
        self.due_generation += 1;
        let generation = self.due_generation;
        let now_ms = faxd::time::now_unix_ms() + faxd::time::GREGORIAN_UNIX_OFFSET * 1000;
        let wait = (at * 1000 - now_ms).max(0) as u64 + 5;
        myself.send_after(Duration::from_millis(wait), move || JobsMsg::Due {
            generation,
        });
    }

    /// Picks the best buffered rows (priority, then due time; one per number when
    /// serializing) for the free slots and starts their workers. Returns whether any row
    /// was consumed.
    async fn start_some(&mut self) -> Result<bool, StoreError> {
        let candidates: Vec<Candidate> = self
            .buffer
            .iter()
            .map(|r| Candidate {
                id: r.id.clone(),
                number: r.to.clone().unwrap_or_default(),
                priority: r.priority,
                runnable_at: r.runnable_at(),
            })
            .collect();
        let blocked: HashSet<String> = self.blocked.keys().cloned().collect();
        let picked = self.book.pick(candidates, &blocked);
        if picked.is_empty() {
            return Ok(false);
        }
        let ids: HashSet<&str> = picked.iter().map(|c| c.id.as_str()).collect();
        self.buffer.retain(|r| !ids.contains(r.id.as_str()));
        for c in &picked {
            self.start(c).await;
        }
        Ok(true)
    }

    /// Starts the worker of a picked job, which takes it (rev-checked, so a stale row or a
    /// job another queue took ends that worker at once). The slot is held until the worker's
    /// `WorkerDone`.
    async fn start(&mut self, c: &Candidate) {
        let lease = faxd::ids::new_id();
        let leased = self.env.leases_numbers() && !c.number.is_empty();
        if leased && !self.take_number(c, &lease).await {
            return;
        }
        let args = WorkerArgs {
            env: self.env.clone(),
            job_id: c.id.clone(),
            account_id: self.account.to_string(),
            to_number: c.number.clone(),
            lease: lease.clone(),
        };
        self.book.start(&c.id, &c.number);
        if let Err(e) = self.env.spawner.start_worker(args).await {
            self.book.finish(&c.id);
            warn!(account_id = %self.account, job_id = %c.id, to_number = %c.number,
                  error = %e, "worker did not start; job stays pending");
            self.block(&c.number);
            if leased {
                let store = &self.env.ctx.store;
                if let Err(e) = number_lease::release(store, &c.number, &c.id, &lease).await {
                    debug!(to_number = %c.number, error = %e, "number lease not released; it lapses");
                }
            }
        }
    }

    /// On a cluster, takes the lease of the job's number for the worker about to start
    /// (`lease` is its job-lease token). A number another node's transmission holds is
    /// blocked for a while, like one whose worker name is taken on this node.
    async fn take_number(&mut self, c: &Candidate, lease: &str) -> bool {
        let env = &self.env;
        let grace = env
            .settings
            .heartbeat
            .max(std::time::Duration::from_secs(1));
        let taken = number_lease::take(
            &env.ctx.store,
            &c.number,
            env.node(),
            &c.id,
            lease,
            grace,
            env.settings.lease,
        )
        .await;
        match taken {
            Ok(NumberTake::Taken) => true,
            Ok(NumberTake::Busy { node, job_id }) => {
                debug!(account_id = %self.account, job_id = %c.id, to_number = %c.number,
                       holder = %node, holder_job = %job_id, "number busy elsewhere; job waits");
                self.block(&c.number);
                false
            }
            Err(e) => {
                warn!(account_id = %self.account, job_id = %c.id, to_number = %c.number,
                      error = %e, "number lease not taken; job waits");
                self.block(&c.number);
                false
            }
        }
    }

    /// Keeps `number` out of the picks for a while (looked at again after it).
    fn block(&mut self, number: &str) {
        self.blocked
            .insert(number.to_string(), Instant::now() + BLOCK);
        self.retry_blocked = true;
    }
}

/// The accounts' queues running in the cluster as this node sees them through the process
/// groups ([`names::queue_group`]): `(node, account)` pairs, sorted. A remote member is named
/// by its node's fax_status group ([`crate::fax_status::node_names`]); one whose node is not
/// (yet) known that way shows as `node #<id>`.
pub fn running_queues(me: &str) -> Vec<(String, String)> {
    let names = crate::fax_status::node_names();
    let mut out: Vec<(String, String)> = ractor::pg::which_groups()
        .into_iter()
        .filter_map(|group| {
            let account = names::account_of_queue_group(&group)?.to_string();
            Some((group, account))
        })
        .flat_map(|(group, account)| {
            ractor::pg::get_members(&group)
                .into_iter()
                .map(|cell| {
                    let id = cell.get_id();
                    let node = if id.is_local() {
                        me.to_string()
                    } else {
                        names
                            .get(&id.node())
                            .cloned()
                            .unwrap_or_else(|| format!("node #{}", id.node()))
                    };
                    (node, account.clone())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}
