//! fax_monitor: makes sure every account with due jobs has its fax_jobs running (Kazoo's
//! `fax_monitor`), and recovers jobs whose owner is gone. Spawned by fax_sup after
//! fax_jobs_sup and fax_worker_sup, permanent; it exits with the node.
//!
//! It is a cluster singleton in effect: on a store shared by a cluster, every node runs a
//! fax_monitor, but only the one holding the outbound leader lease
//! ([`faxd::outbound::leader`]) schedules, so every fax_jobs — and with it `max_outbound` and
//! `serialize_outbound_numbers` — runs on one node. The others renew nothing; they look at
//! the lease every `renew` period (and when its document changes) and take it over once it
//! was not renewed for a lease time. A holder that cannot renew in time steps down before
//! anyone can take over: it stops its fax_jobs at once (transmissions in flight finish and
//! release normally). On the embedded store (`Settings::leader` is `None`) the node always
//! schedules. The lease rounds run in a task of their own (the lease keeper), never in the
//! monitor's handler: a long scheduling pass (hundreds of queues to start while the store is
//! slow) must not delay a renewal, or the leader would step down and take over again in a
//! loop. The keeper opens and closes the gate and tells the monitor when the lease is taken
//! (`Took`) or lost (`Lost`).
//!
//! The leader is woken by the change feed of the `faxes` database: a forwarding task hands
//! it batches of changes, one `Changed` call at a time, so bursts coalesce into one
//! scheduling pass. A slow sweep (`Settings::sweep`) is only a safety net; it also requeues
//! `processing` jobs whose lease ran out (a dead node's, or a former leader's) or that name
//! this node but have no worker here (the node restarted), and `locked` jobs whose queue is
//! gone. Every node sweeps once at start (its own leftovers); a new leader sweeps when it
//! takes the lease.
//!
//! The scheduling node's sweep also finishes stranded intakes ([`faxd::intake::resume`]):
//! jobs left in `attaching_files` longer than a fetch and a conversion can take (faxd
//! stopped mid-download) are resumed or failed with the reason. That work (network
//! fetches, conversions) runs in one task owned by the monitor, never in its handler; the
//! task is aborted when the monitor stops, and the next sweep takes the jobs up again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use faxd::ids::{AccountId, Db};
use faxd::intake::fetch::FetchPolicy;
use faxd::intake::resume::{self, Resumed};
use faxd::model::JobStatus;
use faxd::outbound::leader::{self, Claim, LEADER_DOC, Watch};
use faxd::outbound::{Job, lease};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::Notify;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::fax_jobs::JobsMsg;
use crate::outbound::{Env, LeaderLease, RPC_TIMEOUT};

/// Messages of fax_monitor (local only).
pub enum MonitorMsg {
    /// The faxes database changed (a coalesced batch); replies when scheduled.
    Changed(RpcReplyPort<()>),
    /// Safety sweep and lease recovery (periodic, and once at start).
    Sweep,
    /// The lease keeper took (or renewed after a lapse) the outbound leader lease: the gate
    /// is open, scheduling starts here.
    Took { taken: bool },
    /// The lease keeper lost the lease (why): the gate is closed, the queues stop.
    Lost(String),
}

impl ractor::Message for MonitorMsg {}

pub struct FaxMonitor;

pub struct MonitorState {
    env: Arc<Env>,
    feed: Option<JoinHandle<()>>,
    sweep: Option<JoinHandle<()>>,
    /// The lease keeper task (a cluster store only).
    keeper: Option<JoinHandle<()>>,
    /// The running pass over stranded intakes, if any (one at a time).
    intakes: Option<JoinHandle<()>>,
    leader: Leadership,
}

/// The monitor's view of the outbound leader lease (the keeper holds the protocol's state).
struct Leadership {
    /// `None`: always the leader.
    lease: Option<LeaderLease>,
    /// Scheduling here (since the keeper's last `Took`, until its `Lost` or the gate closed).
    leading: bool,
    /// Accounts whose fax_jobs this node woke while leading (stopped when it steps down;
    /// a queue also stops by itself at its next pass once the gate is closed).
    queues: HashSet<AccountId>,
}

#[ractor::async_trait]
impl Actor for FaxMonitor {
    type Msg = MonitorMsg;
    type State = MonitorState;
    type Arguments = Arc<Env>;

    async fn pre_start(
        &self,
        myself: ActorRef<MonitorMsg>,
        env: Arc<Env>,
    ) -> Result<MonitorState, ActorProcessingErr> {
        let mut changes = env.ctx.store.subscribe(&Db::Faxes).await?;
        let me = myself.clone();
        let look = Arc::new(Notify::new());
        let look_now = look.clone();
        // Forwards the change feed: waits for a change, drains what else arrived, and asks
        // the monitor to schedule (one request outstanding at a time). Changes of the lease
        // document only tell a watching node to look at the lease.
        let feed = tokio::spawn(async move {
            loop {
                let mut jobs = false;
                let mut lease_doc = false;
                let mut note = |id: &str| {
                    if id == LEADER_DOC {
                        lease_doc = true;
                    } else {
                        jobs = true;
                    }
                };
                match changes.recv().await {
                    Ok(c) => note(&c.id),
                    Err(RecvError::Lagged(_)) => note(""),
                    Err(RecvError::Closed) => return,
                }
                loop {
                    match changes.try_recv() {
                        Ok(c) => note(&c.id),
                        Err(TryRecvError::Lagged(_)) => note(""),
                        Err(_) => break,
                    }
                }
                if lease_doc {
                    look_now.notify_one();
                }
                if !jobs {
                    continue;
                }
                // A slow pass (timeout) is fine: the next change asks again. Only a gone
                // monitor ends the forwarding (its restart subscribes anew).
                match me.call(MonitorMsg::Changed, Some(RPC_TIMEOUT * 6)).await {
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        let sweep = myself.send_interval(env.settings.sweep, || MonitorMsg::Sweep);
        let lease = env.settings.leader;
        let keeper = lease.map(|cfg| {
            let keeper = Keeper {
                env: env.clone(),
                cfg,
                monitor: myself.clone(),
                valid_until: None,
                watch: Watch::default(),
                holder: None,
            };
            tokio::spawn(keeper.run(look))
        });
        Ok(MonitorState {
            env,
            feed: Some(feed),
            sweep: Some(sweep),
            keeper,
            intakes: None,
            leader: Leadership {
                lease,
                leading: lease.is_none(),
                queues: HashSet::new(),
            },
        })
    }

    async fn post_start(
        &self,
        _myself: ActorRef<MonitorMsg>,
        st: &mut MonitorState,
    ) -> Result<(), ActorProcessingErr> {
        // This node's own leftovers (a restart) are recovered whoever leads; on a cluster
        // store the keeper's `Took` starts scheduling.
        st.recover().await;
        if st.leader.lease.is_none() {
            st.schedule().await;
            st.resume_stranded();
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<MonitorMsg>,
        st: &mut MonitorState,
    ) -> Result<(), ActorProcessingErr> {
        for h in [
            st.feed.take(),
            st.sweep.take(),
            st.keeper.take(),
            st.intakes.take(),
        ]
        .into_iter()
        .flatten()
        {
            h.abort();
        }
        // Hand the lease over at once rather than after it expires.
        if st.leader.lease.is_some() && st.leader.leading {
            st.step_down("node stopping");
            let me = st.env.node().to_string();
            match leader::release(&st.env.ctx.store, &me).await {
                Ok(true) => info!("released the outbound leader lease"),
                Ok(false) => {}
                Err(e) => warn!(error = %e, "could not release the outbound leader lease"),
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<MonitorMsg>,
        msg: MonitorMsg,
        st: &mut MonitorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MonitorMsg::Changed(reply) => {
                if st.leading() {
                    st.schedule().await;
                }
                let _ = reply.send(());
            }
            MonitorMsg::Sweep => {
                if st.leading() {
                    st.recover().await;
                    st.schedule().await;
                    st.resume_stranded();
                }
            }
            MonitorMsg::Took { taken } => {
                // The gate may have closed again while this message waited.
                if st.env.gate.is_open() {
                    if !st.leader.leading {
                        info!(
                            taken,
                            "holding the outbound leader lease: scheduling outbound faxes"
                        );
                    }
                    st.leader.leading = true;
                    // A former leader's jobs whose lease ran out are requeued here.
                    st.recover().await;
                    st.schedule().await;
                    st.resume_stranded();
                }
            }
            MonitorMsg::Lost(why) => st.step_down(&why),
        }
        Ok(())
    }
}

impl MonitorState {
    /// Whether this node schedules now. When the gate closed without a `Lost` yet (the
    /// lease ran out before the keeper could renew it), the queues stop here, before
    /// anything more starts.
    fn leading(&mut self) -> bool {
        if self.leader.leading && self.leader.lease.is_some() && !self.env.gate.is_open() {
            self.step_down("lease not renewed in time");
        }
        self.leader.leading
    }

    /// Stops scheduling: no fax_jobs of this node starts another transmission. Those in
    /// flight finish and release as usual.
    fn step_down(&mut self, why: &str) {
        if !self.leader.leading || self.leader.lease.is_none() {
            return;
        }
        warn!(
            why,
            "lost the outbound leader lease: stopping outbound scheduling"
        );
        self.leader.leading = false;
        self.env.gate.close();
        for account in self.leader.queues.drain() {
            if let Some(jobs) = Env::jobs_of(account.as_str()) {
                jobs.stop(Some("normal".into()));
            }
        }
    }

    /// Wakes (starting when needed) the queue of every account with pending or locked jobs.
    async fn schedule(&mut self) {
        let accounts = match self.env.ctx.store.schedule_accounts().await {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "schedule_accounts failed");
                return;
            }
        };
        for (account, _count) in accounts {
            if !self.env.settings.schedules(&account) {
                continue;
            }
            self.wake(account).await;
        }
    }

    async fn wake(&mut self, account: AccountId) {
        if self.leader.lease.is_some() {
            self.leader.queues.insert(account.clone());
        }
        if let Some(jobs) = Env::jobs_of(account.as_str())
            && jobs.cast(JobsMsg::Wake).is_ok()
        {
            return;
        }
        // Not running: starting it runs a first pass.
        match self
            .env
            .spawner
            .start_jobs(self.env.clone(), account.clone())
            .await
        {
            Ok(_) => debug!(account_id = %account, "fax_jobs started"),
            Err(e) => {
                // Lost a race with a queue that just started (or is stopping): wake it.
                if let Some(jobs) = Env::jobs_of(account.as_str()) {
                    let _ = jobs.cast(JobsMsg::Wake);
                } else {
                    warn!(account_id = %account, error = %e, "fax_jobs did not start");
                }
            }
        }
    }

    /// Starts a pass over stranded intakes unless one is still running.
    fn resume_stranded(&mut self) {
        if self.intakes.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        self.intakes = Some(tokio::spawn(resume_stranded(self.env.clone())));
    }

    /// Requeues processing jobs whose lease is gone, and unlocks orphaned locked jobs.
    async fn recover(&mut self) {
        let env = self.env.clone();
        let store = &env.ctx.store;
        let me = env.node();
        let now_ms = faxd::time::now_unix_ms();
        let lease_ms = env.settings.lease.as_millis() as i64;
        let policy = env.policy();
        let rows = match store.processing_by_node(None).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "processing_by_node failed");
                return;
            }
        };
        for row in rows {
            let Ok(account) = AccountId::parse(&row.account_id) else {
                continue;
            };
            if !env.settings.schedules(&account) {
                continue;
            }
            let Ok(Some(doc)) = store.get(&Db::Faxes, &row.id).await else {
                continue;
            };
            let Ok(job) = Job::from_doc(&doc) else {
                continue;
            };
            let mine = job.node.as_deref() == Some(me);
            let has_worker = !Env::worker_of(&job.id, &job.to_number).is_empty();
            let why = if mine && !has_worker {
                "no worker on its node"
            } else if mine && has_worker {
                // This node's live worker owns it: an expired lease here only means the store
                // was away; the worker stores its outcome (or gives up and stops) itself, and
                // a requeue now would send the fax again.
                continue;
            } else if lease::lease_expired(&job, now_ms, lease_ms) {
                "lease expired"
            } else {
                continue;
            };
            match lease::recover_processing(store, &job.id, job.lease.as_deref(), why, &policy)
                .await
            {
                Ok(Some(st)) => {
                    info!(job_id = %job.id, account_id = %account, node = ?job.node, status = %st,
                          "requeued job: {why}")
                }
                Ok(None) => {}
                Err(e) => warn!(job_id = %job.id, error = %e, "requeue failed"),
            }
        }
        // Locked jobs whose queue is gone (lock older than the lease).
        let accounts = store.schedule_accounts().await.unwrap_or_default();
        let lease_s = env.settings.lease.as_secs() as i64;
        let now = faxd::time::now_gregorian();
        for (account, _) in accounts {
            if !env.settings.schedules(&account) {
                continue;
            }
            if Env::jobs_of(account.as_str()).is_some() {
                continue;
            }
            let Ok(locked) = store.locked_jobs_by_account(&account).await else {
                continue;
            };
            for row in locked {
                let Ok(Some(doc)) = store.get(&Db::Faxes, &row.id).await else {
                    continue;
                };
                let locked_at = doc
                    .get("pvt_locked")
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or(0);
                let mine = row.node.as_deref() == Some(me);
                if (mine || now - locked_at > lease_s)
                    && let Ok(true) = lease::unlock(store, &row.id).await
                {
                    info!(job_id = %row.id, account_id = %account, "unlocked orphaned job");
                }
            }
        }
    }
}

/// The lease keeper: runs the lease protocol every `renew` (and at once when the lease
/// document changes), apart from the monitor's mailbox. It owns the gate: open until the end
/// of the lease it holds, closed when it cannot renew in time or another node holds it.
struct Keeper {
    env: Arc<Env>,
    cfg: LeaderLease,
    monitor: ActorRef<MonitorMsg>,
    /// Holding the lease (as the keeper last knew) until then, from the start of the last
    /// successful renewal; `None`: not holding it.
    valid_until: Option<Instant>,
    watch: Watch,
    /// The holder last seen (for logs).
    holder: Option<String>,
}

impl Keeper {
    async fn run(mut self, look: Arc<Notify>) {
        let mut every = tokio::time::interval(self.cfg.renew);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                // A change of the lease document: a watcher looks at once (the holder may
                // have released it); the holder renews on its own schedule.
                _ = look.notified() => {
                    if self.valid_until.is_some() {
                        continue;
                    }
                }
            }
            if !self.round().await {
                return;
            }
        }
    }

    /// One round: renew (holder) or look and maybe take over (others). False once the
    /// monitor is gone.
    async fn round(&mut self) -> bool {
        let started = Instant::now();
        let me = self.env.node().to_string();
        let outcome =
            leader::claim(&self.env.ctx.store, &me, self.cfg.lease, &mut self.watch).await;
        // The lease ran out before this round could renew it (a store slower than the lease):
        // whatever the round says now, the node may not have led in between.
        if self.valid_until.is_some_and(|u| Instant::now() >= u) {
            self.lose("lease not renewed in time".into());
        }
        match outcome {
            Ok(Claim::Held { taken }) => {
                let until = started + self.cfg.lease;
                let was_leading = self.valid_until.replace(until).is_some();
                let was_open = self.env.gate.is_open();
                self.env.gate.open_until(until);
                self.holder = Some(me);
                // The gate was closed (taken now, after a lapse, or by a worker that saw
                // another holder): scheduling starts again.
                if !was_leading || !was_open {
                    return self.monitor.cast(MonitorMsg::Took { taken }).is_ok();
                }
            }
            Ok(Claim::Other { node }) => {
                if self.valid_until.is_some() {
                    self.lose(format!("lease taken by {node}"));
                }
                if self.holder.as_deref() != Some(node.as_str()) {
                    info!(holder = %node, "outbound leader lease held by another node");
                }
                self.holder = Some(node);
            }
            Err(e) => {
                warn!(error = %e, "outbound leader lease round failed");
                // Without a renewal before the next round the lease may be gone: stop now.
                let next = Instant::now() + self.cfg.renew;
                if self.valid_until.is_some_and(|u| next >= u) {
                    self.lose("cannot renew the lease in time".into());
                }
            }
        }
        true
    }

    fn lose(&mut self, why: String) {
        self.valid_until = None;
        self.env.gate.close();
        self.watch.forget();
        let _ = self.monitor.cast(MonitorMsg::Lost(why));
    }
}

/// Jobs finished per pass over stranded intakes (the next sweep takes the rest).
const STRANDED_PER_PASS: usize = 50;

/// One pass over stranded intakes: every job in `attaching_files` for longer than an intake
/// can take is resumed (its document fetched again, stored, converted) or failed with the
/// reason.
async fn resume_stranded(env: Arc<Env>) {
    let store = &env.ctx.store;
    let policy = FetchPolicy::from_config(&env.ctx.config.api);
    let limit = resume::stranded_after(
        &policy,
        std::time::Duration::from_secs(env.ctx.config.convert.timeout_secs),
    );
    let stale_before = faxd::time::now_gregorian() - limit.as_secs() as i64;
    let rows = match store
        .stale_jobs(JobStatus::AttachingFiles, stale_before)
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            warn!(error = %e, "stranded intakes not looked at");
            return;
        }
    };
    let conversion = faxd::intake::Conversion {
        converter: env.ctx.converter.clone(),
        keep_tiff: env.ctx.sysconf.fax().store_fax_tiff,
    };
    for row in rows.into_iter().take(STRANDED_PER_PASS) {
        let scheduled = AccountId::parse(&row.account_id).is_ok_and(|a| env.settings.schedules(&a));
        if !scheduled {
            continue;
        }
        match resume::resume(store, &conversion, &policy, &row.id, stale_before).await {
            Ok(Resumed::Queued) => {
                info!(job_id = %row.id, account_id = %row.account_id,
                      "stranded intake resumed: job queued")
            }
            Ok(Resumed::Failed(reason)) => {
                info!(job_id = %row.id, account_id = %row.account_id, %reason,
                      "stranded intake ended: job failed")
            }
            Ok(Resumed::Skipped) => {}
            Err(e) => warn!(job_id = %row.id, error = %e, "stranded intake not resumed"),
        }
    }
}
