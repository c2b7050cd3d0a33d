//! fax_monitor: makes sure every account with due jobs has its fax_jobs running (Kazoo's
//! `fax_monitor`), and recovers jobs whose owner is gone. Spawned by fax_sup after
//! fax_jobs_sup and fax_worker_sup, permanent; it exits with the node.
//!
//! On a store shared by a cluster the accounts' queues are spread over the nodes
//! ([`faxd::outbound::owner`]): each account with work is proposed to one member by
//! rendezvous hashing over the members (the nodes whose heartbeat the lease keeper sees
//! live), and a node runs an account's fax_jobs only while it
//! holds the account's queue lease (a document per account, the same protocol as the leader
//! lease: [`faxd::outbound::leader::claim_at`]). So `max_outbound` and
//! `serialize_outbound_numbers`, which fax_jobs enforces per account, hold cluster-wide: an
//! account's queue runs on one node at a time, and a queue that starts after a handover
//! counts the transmissions its predecessor still runs. When the members change, every node
//! computes the new owners: a node hands over each account it no longer ranks first for
//! (its queue stops, the lease is released at once; transmissions in flight finish here
//! under their job leases), and the new owner takes the released lease at its next look. A
//! node that died or paused keeps its leases until they run out (a watcher takes one only
//! after seeing it unchanged for a whole lease time), so a paused node that comes back has
//! stepped down before anyone took over. Accounts without work are let go.
//!
//! The cluster-wide duties run once in the cluster, on the holder of the outbound leader
//! lease ([`faxd::outbound::leader`]): requeueing `processing` jobs whose lease ran out (a
//! dead node's) and finishing stranded intakes. On the embedded store (`Settings::leader` is
//! `None`) the node schedules every account and does every duty.
//!
//! The lease rounds (the leader's and the accounts') run in a task of their own (the lease
//! keeper), never in the monitor's handler: a long scheduling pass must not delay a renewal.
//! The keeper opens and closes the gates ([`crate::outbound::LeaderGate`],
//! [`crate::outbound::OwnerGates`]) and tells the monitor when a lease is taken or lost.
//!
//! The monitor is woken by the change feed of the `faxes` database: a forwarding task hands
//! it batches of changes, one `Changed` call at a time, so bursts coalesce into one
//! scheduling pass; changes of lease documents only make the keeper look. A slow sweep
//! (`Settings::sweep`) is only a safety net; on the leader it also requeues `processing`
//! jobs whose lease ran out or that name this node but have no worker here (the node
//! restarted), and `locked` jobs whose queue is gone. Every node sweeps once at start (its
//! own leftovers); a new leader sweeps when it takes the lease.
//!
//! The leader's sweep also finishes stranded intakes ([`faxd::intake::resume`]): jobs left
//! in `attaching_files` longer than a fetch and a conversion can take (faxd stopped
//! mid-download) are resumed or failed with the reason. That work (network fetches,
//! conversions) runs in one task owned by the monitor, never in its handler; the task is
//! aborted when the monitor stops, and the next sweep takes the jobs up again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use faxd::ids::{AccountId, Db};
use faxd::intake::fetch::FetchPolicy;
use faxd::intake::resume::{self, Resumed};
use faxd::model::JobStatus;
use faxd::outbound::leader::{self, Claim, LEADER_DOC, OWNER_PREFIX, Watch};
use faxd::outbound::{Job, lease, owner};
use futures_util::StreamExt;
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
    /// The lease keeper took (or renewed after a lapse) the outbound leader lease: the
    /// cluster-wide duties run here.
    Took { taken: bool },
    /// The lease keeper lost the leader lease (why).
    Lost(String),
    /// The lease keeper took the queue lease of an account: its queue starts here.
    Owned(AccountId),
    /// The lease keeper lost the queue lease of an account (why): its queue stops here.
    Disowned(AccountId, String),
    /// The members (live heartbeats) changed: the queues are spread again.
    Members,
}

impl ractor::Message for MonitorMsg {}

pub struct FaxMonitor;

pub struct MonitorState {
    env: Arc<Env>,
    feed: Option<JoinHandle<()>>,
    sweep: Option<JoinHandle<()>>,
    /// The lease keeper task (a cluster store only).
    keeper: Option<JoinHandle<()>>,
    /// Tells the keeper to finish its round and end (the node stops).
    keeper_stop: tokio::sync::watch::Sender<bool>,
    /// Forwards membership changes (a cluster store only).
    members: Option<JoinHandle<()>>,
    /// The members as the keeper last saw them (`None` until its first look).
    live: tokio::sync::watch::Receiver<Option<Vec<String>>>,
    /// The running pass over stranded intakes, if any (one at a time).
    intakes: Option<JoinHandle<()>>,
    leader: Leadership,
    /// The accounts whose queue lease this node wants (it ranks first for them and they have
    /// work); the keeper takes, renews and releases leases to match.
    wanted: Arc<Mutex<HashSet<AccountId>>>,
    /// Makes the keeper look at the wanted accounts now.
    look_owners: Arc<Notify>,
}

/// The monitor's view of the outbound leader lease (the keeper holds the protocol's state).
struct Leadership {
    /// `None`: always the leader.
    lease: Option<LeaderLease>,
    /// Doing the cluster-wide duties here (since the keeper's last `Took`, until its `Lost`
    /// or the gate closed).
    leading: bool,
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
        let look_owners = Arc::new(Notify::new());
        let owners_now = look_owners.clone();
        // Forwards the change feed: waits for a change, drains what else arrived, and asks
        // the monitor to schedule (one request outstanding at a time). Changes of lease
        // documents only tell the keeper to look.
        let feed = tokio::spawn(async move {
            loop {
                let mut jobs = false;
                let mut lease_doc = false;
                let mut owner_doc = false;
                let mut note = |id: &str| {
                    if id == LEADER_DOC {
                        lease_doc = true;
                    } else if id.starts_with(OWNER_PREFIX) {
                        owner_doc = true;
                    } else if id.starts_with(owner::NODE_PREFIX) {
                        // Heartbeats: the keeper reads them on its own schedule.
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
                if owner_doc {
                    owners_now.notify_one();
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
        let wanted = Arc::new(Mutex::new(HashSet::new()));
        let (live_tx, live) = tokio::sync::watch::channel(None);
        let (keeper_stop, stop_rx) = tokio::sync::watch::channel(false);
        let keeper = lease.map(|cfg| {
            let keeper = Keeper {
                env: env.clone(),
                cfg,
                monitor: myself.clone(),
                valid_until: None,
                watch: Watch::default(),
                holder: None,
                wanted: wanted.clone(),
                accounts: HashMap::new(),
                heartbeat_rev: None,
                liveness: owner::Liveness::default(),
                live: live_tx,
            };
            tokio::spawn(keeper.run(look, look_owners.clone(), stop_rx))
        });
        let members = lease.map(|_| {
            let mut watch = live.clone();
            let me = myself.clone();
            tokio::spawn(async move {
                while watch.changed().await.is_ok() {
                    if me.cast(MonitorMsg::Members).is_err() {
                        return;
                    }
                }
            })
        });
        Ok(MonitorState {
            env,
            feed: Some(feed),
            sweep: Some(sweep),
            keeper,
            keeper_stop,
            members,
            live,
            intakes: None,
            leader: Leadership {
                lease,
                leading: lease.is_none(),
            },
            wanted,
            look_owners,
        })
    }

    async fn post_start(
        &self,
        _myself: ActorRef<MonitorMsg>,
        st: &mut MonitorState,
    ) -> Result<(), ActorProcessingErr> {
        // This node's own leftovers (a restart) are recovered whoever leads.
        st.recover().await;
        st.schedule().await;
        if st.leader.lease.is_none() {
            st.resume_stranded();
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<MonitorMsg>,
        st: &mut MonitorState,
    ) -> Result<(), ActorProcessingErr> {
        // The keeper ends after the round it is in (bounded) and releases every queue lease
        // it holds, one taken in that round included: none is left behind by a stopped node.
        let owned = st.env.owners.owned();
        let _ = st.keeper_stop.send(true);
        let mut released = false;
        if let Some(mut keeper) = st.keeper.take() {
            if tokio::time::timeout(RPC_TIMEOUT, &mut keeper).await.is_ok() {
                released = true;
            } else {
                keeper.abort();
                warn!("lease keeper did not end in time; leases it took last run out");
            }
        }
        for h in [
            st.feed.take(),
            st.sweep.take(),
            st.members.take(),
            st.intakes.take(),
        ]
        .into_iter()
        .flatten()
        {
            h.abort();
        }
        if st.leader.lease.is_none() {
            return Ok(());
        }
        // Hand the leases over at once rather than after they expire: the queues stop
        // first (transmissions in flight finish and release as usual).
        let me = st.env.node().to_string();
        if let Err(e) = owner::leave(&st.env.ctx.store, &me).await {
            warn!(error = %e, "could not remove this node's heartbeat; it runs out");
        }
        for account in owned.into_iter().chain(st.env.owners.owned()) {
            st.env.owners.close(&account);
            if let Some(jobs) = Env::jobs_of(account.as_str()) {
                jobs.stop(Some("normal".into()));
            }
            if released {
                continue;
            }
            let doc = leader::owner_doc(account.as_str());
            if let Err(e) = leader::release_at(&st.env.ctx.store, &doc, &me).await {
                warn!(account_id = %account, error = %e, "could not release the queue lease");
            }
        }
        if st.leader.leading {
            st.step_down("node stopping");
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
                st.schedule().await;
                let _ = reply.send(());
            }
            MonitorMsg::Sweep => {
                if st.leading() {
                    st.recover().await;
                    st.resume_stranded();
                }
                st.schedule().await;
            }
            MonitorMsg::Took { taken } => {
                // The gate may have closed again while this message waited.
                if st.env.gate.is_open() {
                    if !st.leader.leading {
                        info!(
                            taken,
                            "holding the outbound leader lease: lease recovery and stranded \
                             intakes run here"
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
            MonitorMsg::Owned(account) => {
                if st.env.owns(&account) {
                    st.wake(account).await;
                }
            }
            MonitorMsg::Disowned(account, why) => {
                warn!(account_id = %account, why, "lost the account's queue lease: its queue stops here");
                if let Some(jobs) = Env::jobs_of(account.as_str()) {
                    jobs.stop(Some("normal".into()));
                }
            }
            MonitorMsg::Members => st.schedule().await,
        }
        Ok(())
    }
}

impl MonitorState {
    /// Whether this node does the cluster-wide duties now.
    fn leading(&mut self) -> bool {
        if self.leader.leading && self.leader.lease.is_some() && !self.env.gate.is_open() {
            self.step_down("lease not renewed in time");
        }
        self.leader.leading
    }

    /// Stops the cluster-wide duties here (the queues depend on their own leases).
    fn step_down(&mut self, why: &str) {
        if !self.leader.leading || self.leader.lease.is_none() {
            return;
        }
        warn!(why, "lost the outbound leader lease");
        self.leader.leading = false;
        self.env.gate.close();
    }

    /// Wakes (starting when needed) the queue of every account with pending or locked jobs
    /// that this node owns; on a cluster, first spreads the accounts over the members.
    async fn schedule(&mut self) {
        let accounts = match self.env.ctx.store.accounts_with_work().await {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "listing the accounts with queued jobs failed");
                return;
            }
        };
        let accounts: Vec<AccountId> = accounts
            .into_iter()
            .filter(|a| self.env.settings.schedules(a))
            .collect();
        if self.leader.lease.is_none() {
            for account in accounts {
                self.wake(account).await;
            }
            return;
        }
        for account in self.spread(accounts) {
            self.wake(account).await;
        }
    }

    /// Decides which accounts with work this node wants (it ranks first for them among the
    /// members), hands over those it no longer wants, lets idle ones go, and returns the
    /// wanted accounts whose lease it holds (their queues are woken).
    fn spread(&mut self, accounts: Vec<AccountId>) -> Vec<AccountId> {
        let me = self.env.node().to_string();
        // Before the keeper's first look this node knows no members: it wants nothing yet.
        let Some(members) = self.live.borrow().clone() else {
            return vec![];
        };
        // Work: queued jobs, and queues running here (transmissions in flight, a due timer).
        let mut work: HashSet<AccountId> = accounts.into_iter().collect();
        let running: Vec<AccountId> = match self.wanted.lock() {
            Ok(w) => w.iter().cloned().collect(),
            Err(_) => vec![],
        };
        work.extend(
            running
                .into_iter()
                .chain(self.env.owners.owned())
                .filter(|a| Env::jobs_of(a.as_str()).is_some()),
        );
        let mut wake = Vec::new();
        let mut handover = Vec::new();
        let mut changed = false;
        if let Ok(mut wanted) = self.wanted.lock() {
            for account in &work {
                let owner = owner::owner_of(account.as_str(), &members).unwrap_or(&me);
                if owner == me {
                    changed |= wanted.insert(account.clone());
                    if self.env.owns(account) {
                        wake.push(account.clone());
                    }
                } else if wanted.remove(account) || self.env.owns(account) {
                    handover.push((account.clone(), owner.to_string()));
                    changed = true;
                }
            }
            let before = wanted.len();
            wanted.retain(|a| work.contains(a));
            changed |= wanted.len() != before;
        }
        for (account, to) in handover {
            info!(account_id = %account, to = %to, "handing the account's queue over");
            self.env.owners.close(&account);
            if let Some(jobs) = Env::jobs_of(account.as_str()) {
                jobs.stop(Some("normal".into()));
            }
        }
        if changed {
            self.look_owners.notify_one();
        }
        wake
    }

    async fn wake(&mut self, account: AccountId) {
        if !self.env.owns(&account) {
            return;
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
        let accounts = store.accounts_with_work().await.unwrap_or_default();
        let lease_s = env.settings.lease.as_secs() as i64;
        let now = faxd::time::now_gregorian();
        for account in accounts {
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

/// The lease keeper: runs the lease protocol every `renew` (and at once when a lease
/// document changes, or the wanted accounts do), apart from the monitor's mailbox. It owns
/// the gates: the leader gate and each account's queue gate are open until the end of the
/// lease held, closed when it cannot renew in time or another node holds it.
struct Keeper {
    env: Arc<Env>,
    cfg: LeaderLease,
    monitor: ActorRef<MonitorMsg>,
    /// Holding the leader lease (as the keeper last knew) until then, from the start of the
    /// last successful renewal; `None`: not holding it.
    valid_until: Option<Instant>,
    watch: Watch,
    /// The holder last seen (for logs).
    holder: Option<String>,
    /// The accounts the monitor wants (shared with it).
    wanted: Arc<Mutex<HashSet<AccountId>>>,
    /// The queue leases this keeper takes, renews or watches.
    accounts: HashMap<AccountId, QueueLease>,
    /// The revision of this node's heartbeat last written.
    heartbeat_rev: Option<String>,
    liveness: owner::Liveness,
    /// The members, for the monitor.
    live: tokio::sync::watch::Sender<Option<Vec<String>>>,
}

/// The keeper's state of one account's queue lease.
#[derive(Default)]
struct QueueLease {
    /// Held until then (as for the leader lease); `None`: not held.
    valid_until: Option<Instant>,
    /// The lease document as last written by this node (renewed from it).
    doc: Option<serde_json::Value>,
    watch: Watch,
    /// The other holder last seen (for logs).
    holder: Option<String>,
}

impl Keeper {
    async fn run(
        mut self,
        look: Arc<Notify>,
        look_owners: Arc<Notify>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut every = tokio::time::interval(self.cfg.renew);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *stop.borrow() {
                break;
            }
            // Every `renew`: all leases are renewed (or looked at). A change of the leader
            // document: a watcher looks at once (the holder may have released it). A change
            // of a queue lease or of the wanted accounts: the accounts not held are looked
            // at (holders renew on their own schedule).
            let (leader, renew) = tokio::select! {
                _ = every.tick() => (true, true),
                _ = look.notified() => (self.valid_until.is_none(), false),
                _ = look_owners.notified() => (false, false),
                _ = stop.changed() => break,
            };
            if renew {
                self.heartbeat().await;
            }
            if leader && !self.round().await {
                break;
            }
            if !self.accounts_round(renew).await {
                break;
            }
        }
        self.release_all().await;
    }

    /// On the way out: every queue lease this keeper took is released — also one taken in
    /// its last round whose gate never opened (a take slower than the lease), which the
    /// monitor's list of open gates does not show.
    async fn release_all(&mut self) {
        let me = self.env.node().to_string();
        let store = self.env.ctx.store.clone();
        let held: Vec<AccountId> = self
            .accounts
            .drain()
            .filter(|(_, h)| h.valid_until.is_some() || h.doc.is_some())
            .map(|(a, _)| a)
            .collect();
        for account in &held {
            self.env.owners.close(account);
        }
        futures_util::stream::iter(held)
            .for_each_concurrent(KEEPER_CONCURRENCY, |account| {
                let (store, me) = (store.clone(), me.clone());
                async move {
                    let doc = leader::owner_doc(account.as_str());
                    if let Err(e) = leader::release_at(&store, &doc, &me).await {
                        warn!(account_id = %account, error = %e, "could not release the queue lease; it runs out");
                    }
                }
            })
            .await;
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
                // The gate was closed (taken now, or after a lapse): the duties start again.
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

    /// Writes this node's heartbeat and looks at the others': the members.
    async fn heartbeat(&mut self) {
        let store = &self.env.ctx.store;
        let me = self.env.node().to_string();
        if let Err(e) = owner::heartbeat(store, &me, &mut self.heartbeat_rev).await {
            warn!(error = %e, "heartbeat not written");
        }
        let docs = match owner::heartbeats(store).await {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "heartbeats unreadable: members kept as they were");
                return;
            }
        };
        let members = self.liveness.members(
            &me,
            &docs,
            self.cfg.lease,
            Instant::now(),
            faxd::time::now_unix_ms(),
        );
        self.live.send_if_modified(|cur| {
            if cur.as_ref() == Some(&members) {
                return false;
            }
            info!(members = ?members, "outbound members changed");
            *cur = Some(members);
            true
        });
    }

    fn lose(&mut self, why: String) {
        self.valid_until = None;
        self.env.gate.close();
        self.watch.forget();
        let _ = self.monitor.cast(MonitorMsg::Lost(why));
    }

    /// The queue leases: released for accounts no longer wanted; renewed (`renew`) or taken
    /// for wanted ones. False once the monitor is gone.
    async fn accounts_round(&mut self, renew: bool) -> bool {
        let wanted: HashSet<AccountId> = match self.wanted.lock() {
            Ok(w) => w.clone(),
            Err(_) => return false,
        };
        let me = self.env.node().to_string();
        let store = self.env.ctx.store.clone();
        let gone: Vec<AccountId> = self
            .accounts
            .keys()
            .filter(|a| !wanted.contains(*a))
            .cloned()
            .collect();
        for account in gone {
            let Some(held) = self.accounts.remove(&account) else {
                continue;
            };
            if held.valid_until.is_none() {
                continue;
            }
            // The monitor stopped its queue (a handover) or it went idle: let it go now, so
            // the next owner need not wait for the lease to run out.
            self.env.owners.close(&account);
            let doc = leader::owner_doc(account.as_str());
            match leader::release_at(&store, &doc, &me).await {
                Ok(_) => debug!(account_id = %account, "released the account's queue lease"),
                Err(e) => {
                    warn!(account_id = %account, error = %e, "queue lease not released; it runs out")
                }
            }
        }
        // Renewals and looks run side by side (a few at a time): a round over many accounts
        // must end well within the lease.
        let cfg = self.cfg;
        let rounds: Vec<(AccountId, QueueLease)> = wanted
            .into_iter()
            .filter_map(|account| {
                let held = self.accounts.remove(&account).unwrap_or_default();
                if !renew && held.valid_until.is_some() {
                    self.accounts.insert(account, held);
                    return None;
                }
                Some((account, held))
            })
            .collect();
        let outcomes: Vec<_> = futures_util::stream::iter(rounds)
            .map(|(account, mut held)| {
                let store = store.clone();
                let me = me.clone();
                async move {
                    let started = Instant::now();
                    let outcome = queue_round(&store, &account, &me, cfg.lease, &mut held).await;
                    (account, held, started, outcome)
                }
            })
            .buffer_unordered(KEEPER_CONCURRENCY)
            .collect()
            .await;
        // Every outcome is recorded before the monitor hears of any: a lease taken in this
        // round must be known here even when the monitor is gone (stopping), so the keeper
        // releases it on its way out.
        let mut tell = Vec::new();
        for (account, mut held, started, outcome) in outcomes {
            let mut lost = None;
            if held.valid_until.is_some_and(|u| Instant::now() >= u) {
                lost = Some("lease not renewed in time".to_string());
            }
            let mut took = false;
            match outcome {
                Ok(Claim::Held { taken }) => {
                    let until = started + self.cfg.lease;
                    let was = held.valid_until.replace(until).is_some();
                    let was_open = self.env.owners.is_open(&account);
                    self.env.owners.open_until(&account, until);
                    if !was || !was_open || lost.take().is_some() {
                        if taken {
                            info!(account_id = %account, "took the account's queue lease");
                        }
                        took = true;
                    }
                    held.holder = None;
                }
                Ok(Claim::Other { node }) => {
                    if held.valid_until.is_some() {
                        lost = Some(format!("lease taken by {node}"));
                    }
                    if held.holder.as_deref() != Some(node.as_str()) {
                        debug!(account_id = %account, holder = %node, "queue lease held by another node");
                    }
                    held.holder = Some(node);
                }
                Err(e) => {
                    warn!(account_id = %account, error = %e, "queue lease round failed");
                    let next = Instant::now() + self.cfg.renew;
                    if held.valid_until.is_some_and(|u| next >= u) {
                        lost = Some("cannot renew the lease in time".into());
                    }
                }
            }
            if lost.is_some() {
                held.valid_until = None;
                held.doc = None;
                held.watch.forget();
                self.env.owners.close(&account);
            }
            self.accounts.insert(account.clone(), held);
            if let Some(why) = lost {
                tell.push(MonitorMsg::Disowned(account.clone(), why));
            }
            if took {
                tell.push(MonitorMsg::Owned(account));
            }
        }
        tell.into_iter().all(|m| self.monitor.cast(m).is_ok())
    }
}

/// Queue-lease rounds the keeper runs at once.
const KEEPER_CONCURRENCY: usize = 8;

/// One round on an account's queue lease: a held lease is renewed from the revision last
/// written (one write); otherwise, or when that revision is gone, the full claim (read, and
/// take or renew with a read-back) runs.
async fn queue_round(
    store: &faxd::store::SharedStore,
    account: &AccountId,
    me: &str,
    lease: std::time::Duration,
    held: &mut QueueLease,
) -> Result<Claim, faxd::store::StoreError> {
    if held.valid_until.is_some()
        && let Some(doc) = held.doc.take()
        && let Some(renewed) = leader::renew_at(store, &doc, me, lease).await?
    {
        held.doc = Some(renewed);
        return Ok(Claim::Held { taken: false });
    }
    let id = leader::owner_doc(account.as_str());
    let (claim, doc) = leader::claim_doc_at(store, &id, me, lease, &mut held.watch).await?;
    held.doc = doc;
    Ok(claim)
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
