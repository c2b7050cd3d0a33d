//! fax_worker: transmits one job (Kazoo's `fax_worker`). Spawned by fax_jobs through
//! fax_worker_sup, transient (a crashed worker is restarted with the same lease and releases
//! the dead attempt: the job goes back to `pending`, the attempt counts); registered as
//! `fax_outbound_<e164>` (serialize_outbound_numbers) or `fax_outbound_<job_id>`. It exits
//! when the attempt is released, or at once when the job is not available or no longer ours.
//!
//! `handle` is a thin dispatcher: messages become [`Input`]s of the pure stage machine
//! ([`crate::stage`]), whose [`Action`]s are performed here; an action's result is the next
//! input. Timers carry `(stage, generation)`; status queries only read.
//!
//! The take is owner-checked: on a cluster the job is taken only while this node holds the
//! queue lease of the job's account, and the take is undone (no attempt counted) if, once
//! written, that lease names another node — so a paused former owner never starts a
//! transmission the new owner cannot count. The document is prepared in a task of its own, so heartbeats keep
//! the lease alive however long a conversion takes; the lease is confirmed by a rev-checked
//! write right before dialling. The call is owned by a [`CallGuard`] in the state: when the
//! worker ends in any way, a panic included, the call is hung up.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use faxd::gateway::file_proxy::FileRegistry;
use faxd::gateway::{CallGuard, FaxEvent, GatewayError, OutboundFax};
use faxd::ids::{AccountId, Db};
use faxd::model::JobStatus;
use faxd::notify::progress::{Progress, Watched};
use faxd::outbound::docs::DocumentError;
use faxd::outbound::job::LEASE_GEN;
use faxd::outbound::leader;
use faxd::outbound::lease::{self, ReleasePolicy};
use faxd::outbound::number_lease::{self, NumberTake};
use faxd::outbound::release::Outcome;
use faxd::outbound::{Job, LiveStatus};
use faxd::store::StoreError;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::fax_jobs::JobsMsg;
use crate::outbound::Env;
use crate::stage::{Action, Input, Machine, Milestone, Stage};

/// Messages of a fax_worker (local only).
pub enum WorkerMsg {
    /// Begin (sent once by `post_start`).
    Start,
    /// The document task ended: the fax-ready TIFF's page count, or why there is none.
    Prepared(Result<u32, String>),
    /// The document task could not read the job's document because the store is away: read
    /// again once it may be back (not an attempt of the fax).
    PrepareDeferred(String),
    /// An event of the call, forwarded from the media engine.
    Event(FaxEvent),
    /// The call's event stream closed.
    EventsClosed,
    /// A stage timer fired; stale tokens are ignored by the stage machine.
    Timeout { stage: Stage, generation: u64 },
    /// Renew the job's lease (periodic).
    Heartbeat,
    /// Live status; never touches a timer.
    Status(RpcReplyPort<LiveStatus>),
}

impl ractor::Message for WorkerMsg {}

/// Start arguments of a worker (cloned by the supervisor for restarts).
#[derive(Clone)]
pub struct WorkerArgs {
    pub env: Arc<Env>,
    pub job_id: String,
    pub account_id: String,
    pub to_number: String,
    /// This transmission's lease token (the same across restarts of the worker).
    pub lease: String,
}

pub struct FaxWorker;

pub struct WorkerState {
    args: WorkerArgs,
    machine: Machine,
    policy: ReleasePolicy,
    job: Option<Job>,
    file: PathBuf,
    /// The call, once placed; dropping it hangs up.
    call: Option<CallGuard>,
    /// Where the attempt's progress webhooks go, when the job's faxbox has an outbound
    /// callback (read once the job is ours).
    progress: Option<Watched>,
    /// Produces the fax-ready TIFF (stage prepare).
    prepare: Option<Task>,
    events: Option<Task>,
    heartbeat: Option<Task>,
    started_ms: i64,
    finished: bool,
    cleaned: bool,
    /// The take was written but its answer was lost to a store outage: if the job is found
    /// `processing` under this worker's lease, the take is ours (not an earlier incarnation's).
    take_unsure: bool,
    /// Counts this transmission in `faxd_transmissions_in_flight` while the worker lives.
    _in_flight: faxd::metrics::GaugeGuard,
}

#[ractor::async_trait]
impl Actor for FaxWorker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<WorkerMsg>,
        args: WorkerArgs,
    ) -> Result<WorkerState, ActorProcessingErr> {
        // An unguessable name (the cache may be shared with other users: `file_cache_path`),
        // prefixed by the job so that a later attempt removes what a killed one left.
        let file = args.env.file_cache().join(faxd::files::unguessable_name(
            &cache_prefix(&args.job_id),
            ".tiff",
        ));
        Ok(WorkerState {
            machine: Machine::new(args.env.settings.timeouts),
            policy: args.env.policy(),
            job: None,
            file,
            call: None,
            progress: None,
            prepare: None,
            events: None,
            heartbeat: None,
            started_ms: faxd::time::now_unix_ms(),
            finished: false,
            cleaned: false,
            take_unsure: false,
            _in_flight: faxd::metrics::GaugeGuard::hold(&faxd::metrics::global().in_flight),
            args,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<WorkerMsg>,
        _st: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        myself.cast(WorkerMsg::Start)?;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        st: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        let input = match msg {
            WorkerMsg::Start => Input::Start,
            WorkerMsg::Prepared(Ok(pages)) => Input::Prepared { pages },
            WorkerMsg::Prepared(Err(why)) => Input::PrepareFailed(why),
            WorkerMsg::PrepareDeferred(why) => Input::PrepareDeferred(why),
            WorkerMsg::Event(e) => {
                if let FaxEvent::Finished(_) = e
                    && let Some(call) = &mut st.call
                {
                    call.ended();
                }
                #[cfg(feature = "fault-injection")]
                st.inject_panic(&e);
                Input::Event(e)
            }
            WorkerMsg::EventsClosed => Input::EventsClosed,
            WorkerMsg::Timeout { stage, generation } => Input::Timeout { stage, generation },
            WorkerMsg::Heartbeat => match st.renew_lease().await {
                Some(lost) => lost,
                None => return Ok(()),
            },
            WorkerMsg::Status(reply) => {
                let _ = reply.send(st.live());
                return Ok(());
            }
        };
        st.drive(&myself, input).await;
        Ok(())
    }

    /// A stop before the attempt was released (node shutdown): hang up, release it as a
    /// failed attempt, so the job is retried, not left `processing`. (A panic skips this;
    /// then the [`CallGuard`] hangs up and the restarted worker releases the attempt.)
    async fn post_stop(
        &self,
        _myself: ActorRef<WorkerMsg>,
        st: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        if !st.finished
            && matches!(
                st.machine.stage,
                Stage::Prepare | Stage::Originate | Stage::Negotiate | Stage::Send
            )
        {
            if let Some(call) = &mut st.call {
                call.hangup("NORMAL_CLEARING");
            }
            let outcome = Outcome::terminated("worker stopped");
            st.release(outcome).await;
        }
        st.cleanup().await;
        // The attempt is over (a panic skips this: the restarted worker goes on under the
        // same lease token, so the number stays its own).
        if st.args.env.leases_numbers() {
            let a = &st.args;
            let store = &a.env.ctx.store;
            if let Err(e) = number_lease::release(store, &a.to_number, &a.job_id, &a.lease).await {
                debug!(job_id = %a.job_id, error = %e, "number lease not released; it lapses");
            }
        }
        st.notify_done();
        Ok(())
    }
}

impl WorkerState {
    /// Runs inputs through the stage machine until no action yields another input.
    async fn drive(&mut self, myself: &ActorRef<WorkerMsg>, first: Input) {
        let mut inputs = VecDeque::from([first]);
        while let Some(input) = inputs.pop_front() {
            for action in self.machine.step(input) {
                if let Some(next) = self.perform(myself, action).await {
                    inputs.push_back(next);
                }
            }
        }
    }

    async fn perform(&mut self, myself: &ActorRef<WorkerMsg>, action: Action) -> Option<Input> {
        match action {
            Action::Acquire => Some(self.acquire(myself).await),
            Action::Prepare => {
                self.start_prepare(myself);
                None
            }
            Action::AbortPrepare => {
                self.prepare = None;
                None
            }
            Action::ConfirmLease => Some(self.confirm_lease().await),
            Action::Originate => Some(self.originate(myself).await),
            Action::ArmTimer {
                stage,
                generation,
                after,
            } => {
                myself.send_after(after, move || WorkerMsg::Timeout { stage, generation });
                None
            }
            Action::Hangup(cause) => {
                if let Some(call) = &mut self.call {
                    call.hangup(cause);
                }
                None
            }
            // The call is over: the document leaves the cache before the job is final.
            Action::Release(outcome) => {
                self.remove_files().await;
                Some(self.release(outcome).await)
            }
            Action::ReleaseRecovered => {
                self.remove_files().await;
                Some(self.release_recovered().await)
            }
            Action::Stop => {
                self.cleanup().await;
                myself.stop(None);
                None
            }
            Action::Announce(milestone) => {
                self.announce(milestone).await;
                None
            }
        }
    }

    async fn acquire(&mut self, myself: &ActorRef<WorkerMsg>) -> Input {
        let env = &self.args.env;
        let store = &env.ctx.store;
        let doc = match lease::read_job(store, &self.args.job_id).await {
            Ok(Some(doc)) => doc,
            Ok(None) => return Input::NotAvailable("not_found".into()),
            Err(e) if self.take_unsure => return Input::AcquireDeferred(e.to_string()),
            Err(e) => return Input::NotAvailable(format!("store: {e}")),
        };
        let job = match Job::from_doc(&doc) {
            Ok(j) => j,
            Err(e) => return Input::NotAvailable(e.to_string()),
        };
        let take_unsure = std::mem::take(&mut self.take_unsure);
        if job.status == JobStatus::Processing && job.lease.as_deref() == Some(&self.args.lease) {
            if take_unsure {
                // This worker's own take, whose answer the outage swallowed.
                let before = untaken(&doc);
                return self.after_take(myself, job, before).await;
            }
            warn!(job_id = %job.id, "restarted worker: releasing the interrupted attempt");
            self.job = Some(job);
            return Input::Recovered;
        }
        // The queue's row may be stale: the document decides.
        if job.status != JobStatus::Pending || job.runnable_at() > faxd::time::now_gregorian() {
            return Input::NotAvailable("job_not_available".into());
        }
        // The queue looked at the gate when it picked the job; the node may have lost the
        // account's queue lease since (a pause between the pick and this take).
        if !self.owns_account() {
            return Input::NotAvailable("not the account's queue owner".into());
        }
        // Lock and acquire in one rev-checked write: the job goes straight from `pending` to
        // `processing` under this worker's lease; a concurrent taker gets a conflict (or, on
        // a CouchDB cluster, a conflicting revision that the read-back settles).
        let now = faxd::time::now_unix_ms();
        let taken = lease::take(&doc, env.node(), &self.args.lease, now);
        match store.save(&Db::Faxes, taken).await {
            Ok(_) => self.after_take(myself, job, doc).await,
            Err(StoreError::Conflict) => Input::NotAvailable("lost the job to another".into()),
            // The take may have been written: which it was is read once the store is back.
            Err(e @ (StoreError::Unavailable(_) | StoreError::Full(_) | StoreError::Io(_))) => {
                debug!(job_id = %job.id, error = %e, "take unanswered: store away");
                self.take_unsure = true;
                Input::AcquireDeferred(e.to_string())
            }
            Err(e) => Input::NotAvailable(format!("store: {e}")),
        }
    }

    /// The take is written (`before` is the job as it was): the job is ours if the take won
    /// over any conflicting one (a CouchDB cluster) and this node still leads.
    async fn after_take(&mut self, myself: &ActorRef<WorkerMsg>, job: Job, before: Value) -> Input {
        let store = &self.args.env.ctx.store;
        let saved = match lease::settle_take(store, &self.args.job_id, &self.args.lease).await {
            Ok(Some(won)) => won,
            Ok(None) => {
                info!(job_id = %job.id, "another take of the job won: backing off");
                return Input::NotAvailable("lost the job to a conflicting take".into());
            }
            Err(e) => {
                // Nothing is known yet: the take stays, and is looked at again.
                self.take_unsure = true;
                return Input::AcquireDeferred(format!("take not read back: {e}"));
            }
        };
        let saved = &saved;
        match self.still_owner().await {
            Ok(()) => {}
            Err(NotOwner::Unreadable(why)) => {
                // Nothing is known yet: the take stays, and is looked at again.
                self.take_unsure = true;
                return Input::AcquireDeferred(why);
            }
            Err(NotOwner::Other(why)) => {
                // This node starts nothing more for the account until its lease keeper holds
                // the account's lease again (it reopens the gate then); the queue stops at its
                // next pass.
                if let Ok(account) = AccountId::parse(&self.args.account_id) {
                    self.args.env.owners.close(&account);
                }
                return self.undo_take(before, saved, why).await;
            }
        }
        // The number's lease (a cluster): still this transmission's now that the job is
        // taken (a take deferred by a store outage may come after the number's grace).
        if self.args.env.leases_numbers() {
            let store = &self.args.env.ctx.store;
            let a = &self.args;
            match number_lease::confirm(store, &a.to_number, &a.job_id, &a.lease).await {
                Ok(NumberTake::Taken) => {}
                Ok(NumberTake::Busy { node, .. }) => {
                    let why = format!("number {} held by a transmission on {node:?}", a.to_number);
                    return self.undo_take(before, saved, why).await;
                }
                Err(e) => {
                    self.take_unsure = true;
                    return Input::AcquireDeferred(format!("number lease unreadable: {e}"));
                }
            }
        }
        debug!(job_id = %job.id, "acquired");
        let due_ms = faxd::time::gregorian_to_unix(job.runnable_at()).saturating_mul(1000);
        let waited = faxd::time::now_unix_ms().saturating_sub(due_ms).max(0);
        faxd::metrics::global()
            .dispatch_latency
            .observe(std::time::Duration::from_millis(waited.unsigned_abs()));
        self.progress = match Watched::of_job(store, saved).await {
            Ok(w) => w,
            Err(e) => {
                warn!(job_id = %job.id, error = %e, "faxbox not read: no progress webhooks");
                None
            }
        };
        self.job = Some(job);
        let every = self.args.env.settings.heartbeat;
        self.heartbeat = Some(Task(myself.send_interval(every, || WorkerMsg::Heartbeat)));
        Input::Acquired
    }

    /// Whether this node may start the job's account now (its queue lease).
    fn owns_account(&self) -> bool {
        AccountId::parse(&self.args.account_id).is_ok_and(|a| self.args.env.owns(&a))
    }

    /// On a cluster, whether the account's queue lease still names this node now that the
    /// take is written. A node that takes the account over after this read sees the job
    /// `processing` and counts it; one that took it over before makes this worker undo the
    /// take.
    async fn still_owner(&self) -> Result<(), NotOwner> {
        let env = &self.args.env;
        if env.settings.leader.is_none() {
            return Ok(());
        }
        let doc = leader::owner_doc(&self.args.account_id);
        match leader::read_at(&env.ctx.store, &doc).await {
            Ok(Some(lease)) if lease.node == env.node() => Ok(()),
            Ok(Some(lease)) => Err(NotOwner::Other(format!(
                "the account's queue is now owned by {:?}",
                lease.node
            ))),
            Ok(None) => Err(NotOwner::Other("no owner of the account's queue".into())),
            Err(e) => Err(NotOwner::Unreadable(format!(
                "the account's queue lease unreadable: {e}"
            ))),
        }
    }

    /// Puts a job taken without the account's queue (or without its number) back as it was (`pending`, no attempt counted),
    /// rev-checked against the take. If that fails the job stays `processing` under this
    /// worker's lease with no worker, and lease recovery requeues it.
    async fn undo_take(&mut self, before: Value, saved: &Value, why: String) -> Input {
        let mut doc = before;
        doc["_rev"] = saved["_rev"].clone();
        match self.args.env.ctx.store.save(&Db::Faxes, doc).await {
            Ok(_) => {
                info!(job_id = %self.args.job_id, why, "take undone")
            }
            Err(e) => warn!(job_id = %self.args.job_id, why, error = %e,
                            "take not undone; lease recovery will requeue the job"),
        }
        Input::NotAvailable(why)
    }

    /// Records the progress webhook of a milestone of this attempt (when the faxbox has an
    /// outbound callback); a failure is logged by [`Watched::announce`].
    async fn announce(&self, milestone: Milestone) {
        let (Some(watched), Some(job)) = (&self.progress, &self.job) else {
            return;
        };
        let attempt = job.attempts.saturating_add(1);
        let p = match milestone {
            Milestone::Dialled => Progress::Sending { attempt },
            Milestone::Page { page, total } => Progress::Page {
                attempt,
                page,
                total,
            },
        };
        let ctx = &self.args.env.ctx;
        watched.announce(&ctx.store, &ctx.notify, p).await;
    }

    /// Produces the fax-ready TIFF in a task of the worker's own (a conversion may take
    /// long; the worker keeps answering heartbeats, status queries and its timer). The task
    /// is aborted by `AbortPrepare` and at cleanup.
    fn start_prepare(&mut self, myself: &ActorRef<WorkerMsg>) {
        let docs = self.args.env.docs.clone();
        let job_id = self.args.job_id.clone();
        let file = self.file.clone();
        let me = myself.clone();
        self.prepare = Some(Task(tokio::spawn(async move {
            let result = async {
                if let Some(dir) = file.parent() {
                    faxd::files::create_dir_private(dir)
                        .await
                        .map_err(|e| format!("file cache {}: {e}", dir.display()))?;
                }
                Ok(docs.faxable(&job_id, &file).await)
            };
            let msg = match result.await {
                Err(why) => WorkerMsg::Prepared(Err(why)),
                Ok(Ok(pages)) => WorkerMsg::Prepared(Ok(pages)),
                // A store that is away is no fault of the document.
                Ok(Err(DocumentError::Store(
                    e @ (StoreError::Unavailable(_) | StoreError::Full(_) | StoreError::Io(_)),
                ))) => WorkerMsg::PrepareDeferred(e.to_string()),
                Ok(Err(e)) => WorkerMsg::Prepared(Err(e.to_string())),
            };
            let _ = me.cast(msg);
        })));
    }

    /// Whether `doc` is our processing job.
    fn holds(&self, doc: &Value) -> bool {
        doc.get("pvt_lease").and_then(Value::as_str) == Some(self.args.lease.as_str())
            && doc.get("pvt_job_status").and_then(Value::as_str) == Some("processing")
    }

    /// Right before dialling: renews the lease with a rev-checked write. A job requeued or
    /// taken by another worker meanwhile, or a store that cannot confirm, means no call.
    async fn confirm_lease(&mut self) -> Input {
        let store = &self.args.env.ctx.store;
        for _ in 0..3 {
            let mut doc = match lease::read_job(store, &self.args.job_id).await {
                Ok(Some(doc)) => doc,
                Ok(None) => return Input::LeaseLost("job gone".into()),
                Err(e) => return self.confirm_error(e),
            };
            if !self.holds(&doc) {
                return Input::LeaseLost("job requeued or taken by another worker".into());
            }
            doc["pvt_heartbeat"] = json!(faxd::time::now_unix_ms());
            match store.save(&Db::Faxes, doc).await {
                Ok(_) => return Input::LeaseConfirmed,
                Err(StoreError::Conflict) => continue,
                Err(e) => return self.confirm_error(e),
            }
        }
        Input::LeaseLost("lease not confirmed: conflicts".into())
    }

    /// A store error while confirming the lease: while the store is away the confirmation
    /// waits for it (no call meanwhile); any other error means no call at all.
    fn confirm_error(&self, e: StoreError) -> Input {
        match e {
            StoreError::Unavailable(_) | StoreError::Full(_) | StoreError::Io(_) => {
                debug!(job_id = %self.args.job_id, error = %e, "lease confirmation deferred: store away");
                Input::ConfirmDeferred(e.to_string())
            }
            e => Input::LeaseLost(format!("store: {e}")),
        }
    }

    async fn originate(&mut self, myself: &ActorRef<WorkerMsg>) -> Input {
        let Some(job) = &self.job else {
            return Input::OriginateFailed {
                sip_code: 500,
                text: "no job".into(),
            };
        };
        if let Some(text) = job.unsendable() {
            return Input::OriginateFailed {
                sip_code: 400,
                text,
            };
        }
        let env = &self.args.env;
        let mut options = job.options.clone();
        options.ring_timeout =
            std::time::Duration::from_secs(env.ctx.sysconf.fax().endpoint_timeout);
        // A remote engine fetches the document from the file proxy, under a token of this
        // attempt's own (served until the call's guard is dropped).
        let files = &env.ctx.files;
        let document_url = env.gateway.document_base_url().map(|base| {
            let token = files.register(&job.id, self.file.clone());
            format!("{base}{}", FileRegistry::url_path(&job.id, &token))
        });
        let serving = document_url.is_some();
        let fax = OutboundFax {
            job_id: job.id.clone(),
            call_id: faxd::ids::new_id(),
            to: job.to_number.clone(),
            from_number: job.from_number.clone(),
            from_name: job.from_name.clone(),
            fax_identity_number: job.identity_number.clone(),
            fax_identity_name: job.identity_name.clone(),
            document: self.file.clone(),
            document_url,
            options,
        };
        self.started_ms = faxd::time::now_unix_ms();
        let job_id = job.id.clone();
        match env.gateway.originate(fax).await {
            Ok(call) => {
                let guard = CallGuard::new(call.hangup);
                self.call = Some(if serving {
                    guard.serving(files.clone(), &job_id)
                } else {
                    guard
                });
                let mut events = call.events;
                let me = myself.clone();
                self.events = Some(Task(tokio::spawn(async move {
                    while let Some(e) = events.recv().await {
                        if me.cast(WorkerMsg::Event(e)).is_err() {
                            return;
                        }
                    }
                    let _ = me.cast(WorkerMsg::EventsClosed);
                })));
                Input::Originated
            }
            Err(e) => {
                if serving {
                    files.unregister(&job_id);
                }
                let sip_code = match &e {
                    GatewayError::Refused(text) => sip_code_of(text).unwrap_or(500),
                    GatewayError::Unavailable(_) => 503,
                    GatewayError::Document(_) => 0,
                };
                Input::OriginateFailed {
                    sip_code,
                    text: e.to_string(),
                }
            }
        }
    }

    /// Stores the outcome, if the job is still ours.
    /// While the store is away the outcome is deferred, not dropped (the heartbeat keeps the
    /// lease as soon as the store answers again, so lease recovery does not send it twice).
    async fn release(&mut self, outcome: Outcome) -> Input {
        let input = self.try_release(outcome).await;
        if !matches!(input, Input::ReleaseDeferred(_)) {
            self.heartbeat = None;
        }
        input
    }

    async fn try_release(&mut self, outcome: Outcome) -> Input {
        let env = &self.args.env;
        let store = &env.ctx.store;
        for _ in 0..3 {
            let doc = match lease::read_job(store, &self.args.job_id).await {
                Ok(Some(doc)) => doc,
                Ok(None) => return Input::ReleaseFailed("job vanished".into()),
                Err(e) => return release_error(&self.args.job_id, e),
            };
            if doc.get("pvt_lease").and_then(|l| l.as_str()) != Some(self.args.lease.as_str()) {
                return Input::ReleaseFailed("lease lost".into());
            }
            let now = faxd::time::now_unix_ms();
            match lease::release(store, doc, &outcome, self.started_ms, now, &self.policy).await {
                Ok(d) => {
                    info!(job_id = %self.args.job_id, to_number = %self.args.to_number,
                          status = %d.status, attempts = d.attempts, "released");
                    self.finished = true;
                    return Input::Released;
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return release_error(&self.args.job_id, e),
            }
        }
        Input::ReleaseFailed("conflicts".into())
    }

    async fn release_recovered(&mut self) -> Input {
        let env = &self.args.env;
        match lease::recover_processing(
            &env.ctx.store,
            &self.args.job_id,
            Some(&self.args.lease),
            "worker restarted",
            &self.policy,
        )
        .await
        {
            Ok(_) => {
                self.finished = true;
                Input::Released
            }
            Err(e) => release_error(&self.args.job_id, e),
        }
    }

    /// Renews the lease (heartbeat). A job requeued or gone meanwhile is no longer ours:
    /// the stage machine stops the worker (hanging up a call). A store error is not a loss.
    async fn renew_lease(&mut self) -> Option<Input> {
        let store = &self.args.env.ctx.store;
        let mut doc = match lease::read_job(store, &self.args.job_id).await {
            Ok(Some(doc)) => doc,
            Ok(None) => return Some(Input::LeaseLost("job gone".into())),
            Err(e) => {
                debug!(job_id = %self.args.job_id, error = %e, "heartbeat not read");
                return None;
            }
        };
        if !self.holds(&doc) {
            warn!(job_id = %self.args.job_id, "lease lost: the job was requeued");
            return Some(Input::LeaseLost("job requeued".into()));
        }
        doc["pvt_heartbeat"] = json!(faxd::time::now_unix_ms());
        if let Err(e) = store.save(&Db::Faxes, doc).await {
            debug!(job_id = %self.args.job_id, error = %e, "heartbeat not saved");
        }
        None
    }

    /// Fault injection: panics at the configured page of a job's first attempt.
    #[cfg(feature = "fault-injection")]
    fn inject_panic(&self, e: &FaxEvent) {
        let at = self.args.env.settings.faults.panic_at_page_of_first_attempt;
        if let FaxEvent::Page { page, .. } = e
            && at == Some(*page)
            && self.job.as_ref().is_some_and(|j| j.attempts == 0)
        {
            panic!("fault injection: worker panics at page {page}");
        }
    }

    /// Removes the job's fax file from the cache, and any an earlier, killed attempt left.
    async fn remove_files(&self) {
        let _ = tokio::fs::remove_file(&self.file).await;
        if let Some(dir) = self.file.parent() {
            faxd::files::remove_with_prefix(dir, &cache_prefix(&self.args.job_id)).await;
        }
    }

    /// Removes the temp file and stops helper tasks (once).
    async fn cleanup(&mut self) {
        if self.cleaned {
            return;
        }
        self.cleaned = true;
        (self.heartbeat, self.prepare, self.events) = (None, None, None);
        self.remove_files().await;
        // A call not ended by now (the engine lost it, the lease was lost) is hung up.
        self.call = None;
    }

    /// Tells the account's queue that this worker ended. Sent from `post_stop`, when the
    /// worker's name is already free, so the next transmission to the number can start.
    fn notify_done(&self) {
        if let Some(jobs) = Env::jobs_of(&self.args.account_id) {
            let _ = jobs.cast(JobsMsg::WorkerDone {
                job_id: self.args.job_id.clone(),
            });
        }
    }

    fn live(&self) -> LiveStatus {
        LiveStatus {
            job_id: self.args.job_id.clone(),
            stage: self.machine.stage.as_str().into(),
            status: self.machine.status_text(),
            page: self.machine.page,
            total_pages: self.machine.total_pages,
            node: self.args.env.node().to_string(),
        }
    }
}

/// A helper task of the worker (heartbeat timer, document preparation, call events),
/// aborted when dropped: a worker that ends in any way, a panic included, leaves none behind.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `sip:503 …` → 503.
fn sip_code_of(text: &str) -> Option<u16> {
    let rest = text.split("sip:").nth(1)?;
    rest.get(..3)?.parse().ok()
}

/// Why a take may not go on.
enum NotOwner {
    /// Another node owns the account's queue, or none does.
    Other(String),
    /// The queue lease cannot be read (the store is away).
    Unreadable(String),
}

/// A taken job as it was before the take: `pending`, without this worker's lease.
fn untaken(taken: &Value) -> Value {
    let mut doc = taken.clone();
    doc["pvt_job_status"] = json!("pending");
    if let Some(o) = doc.as_object_mut() {
        for k in ["pvt_job_node", "pvt_lease", "pvt_heartbeat", LEASE_GEN] {
            o.remove(k);
        }
    }
    doc
}

/// A store error while storing an outcome: deferred while the store is away (it comes back),
/// failed otherwise.
fn release_error(job_id: &str, e: StoreError) -> Input {
    match e {
        StoreError::Unavailable(_) | StoreError::Full(_) | StoreError::Io(_) => {
            debug!(%job_id, error = %e, "release deferred: store away");
            Input::ReleaseDeferred(e.to_string())
        }
        e => {
            warn!(%job_id, error = %e, "release failed");
            Input::ReleaseFailed(e.to_string())
        }
    }
}

/// Start of the names of a job's files in the fax cache.
fn cache_prefix(job_id: &str) -> String {
    format!("{job_id}-")
}

#[cfg(test)]
mod tests {
    #[test]
    fn sip_codes_parse() {
        assert_eq!(super::sip_code_of("sip:503 busy"), Some(503));
        assert_eq!(super::sip_code_of("nope"), None);
    }
}
