//! fax_worker: transmits one job (Kazoo's `fax_worker`). Spawned by fax_jobs through
//! fax_worker_sup, transient (a crashed worker is restarted with the same lease and releases
//! the dead attempt: the job goes back to `pending`, the attempt counts); registered as
//! `fax_outbound_<e164>` (serialize_outbound_numbers) or `fax_outbound_<job_id>`. It exits
//! when the attempt is released, or at once when the job is not available.
//!
//! `handle` is a thin dispatcher: messages become [`Input`]s of the pure stage machine
//! ([`crate::stage`]), whose [`Action`]s are performed here; an action's result is the next
//! input. Timers carry `(stage, generation)`; status queries only read.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use faxd::gateway::{FaxEvent, GatewayError, HangupHandle, OutboundFax};
use faxd::ids::Db;
use faxd::model::JobStatus;
use faxd::outbound::lease::{self, ReleasePolicy};
use faxd::outbound::release::Outcome;
use faxd::outbound::{Job, LiveStatus};
use faxd::store::StoreError;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::json;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::fax_jobs::JobsMsg;
use crate::outbound::Env;
use crate::stage::{Action, Input, Machine, Stage};

/// Messages of a fax_worker (local only).
pub enum WorkerMsg {
    /// Begin (sent once by `post_start`).
    Start,
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
    hangup: Option<HangupHandle>,
    events: Option<JoinHandle<()>>,
    heartbeat: Option<JoinHandle<()>>,
    started_ms: i64,
    finished: bool,
    cleaned: bool,
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
            hangup: None,
            events: None,
            heartbeat: None,
            started_ms: faxd::time::now_unix_ms(),
            finished: false,
            cleaned: false,
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
            WorkerMsg::Event(e) => Input::Event(e),
            WorkerMsg::EventsClosed => Input::EventsClosed,
            WorkerMsg::Timeout { stage, generation } => Input::Timeout { stage, generation },
            WorkerMsg::Heartbeat => {
                st.renew_lease().await;
                return Ok(());
            }
            WorkerMsg::Status(reply) => {
                let _ = reply.send(st.live());
                return Ok(());
            }
        };
        st.drive(&myself, input).await;
        Ok(())
    }

    /// A stop before the attempt was released (node shutdown): release it as a failed
    /// attempt, so the job is retried, not left `processing`.
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
            if let Some(h) = &st.hangup {
                h.hangup("NORMAL_CLEARING");
            }
            let outcome = Outcome::terminated("worker stopped");
            st.release(outcome).await;
        }
        st.cleanup().await;
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
            Action::Prepare => Some(self.prepare().await),
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
                if let Some(h) = &self.hangup {
                    h.hangup(cause);
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
        }
    }

    async fn acquire(&mut self, myself: &ActorRef<WorkerMsg>) -> Input {
        let env = &self.args.env;
        let store = &env.ctx.store;
        let doc = match store.get(&Db::Faxes, &self.args.job_id).await {
            Ok(Some(doc)) => doc,
            Ok(None) => return Input::NotAvailable("not_found".into()),
            Err(e) => return Input::NotAvailable(format!("store: {e}")),
        };
        let job = match Job::from_doc(&doc) {
            Ok(j) => j,
            Err(e) => return Input::NotAvailable(e.to_string()),
        };
        if job.status == JobStatus::Processing && job.lease.as_deref() == Some(&self.args.lease) {
            warn!(job_id = %job.id, "restarted worker: releasing the interrupted attempt");
            self.job = Some(job);
            return Input::Recovered;
        }
        // The queue's row may be stale: the document decides.
        if job.status != JobStatus::Pending || job.runnable_at() > faxd::time::now_gregorian() {
            return Input::NotAvailable("job_not_available".into());
        }
        // Lock and acquire in one rev-checked write: the job goes straight from `pending` to
        // `processing` under this worker's lease; a concurrent taker gets a conflict.
        let mut doc = doc;
        let now = faxd::time::now_unix_ms();
        doc["pvt_job_status"] = json!("processing");
        doc["pvt_job_node"] = json!(env.node());
        doc["pvt_lease"] = json!(self.args.lease);
        doc["pvt_heartbeat"] = json!(now);
        match store.save(&Db::Faxes, doc).await {
            Ok(_) => {
                debug!(job_id = %job.id, "acquired");
                self.job = Some(job);
                let every = env.settings.heartbeat;
                self.heartbeat = Some(myself.send_interval(every, || WorkerMsg::Heartbeat));
                Input::Acquired
            }
            Err(StoreError::Conflict) => Input::NotAvailable("lost the job to another".into()),
            Err(e) => Input::NotAvailable(format!("store: {e}")),
        }
    }

    async fn prepare(&mut self) -> Input {
        let env = &self.args.env;
        if let Some(dir) = self.file.parent()
            && let Err(e) = faxd::files::create_dir_private(dir).await
        {
            return Input::PrepareFailed(format!("file cache {}: {e}", dir.display()));
        }
        match env.docs.faxable(&self.args.job_id, &self.file).await {
            Ok(pages) => Input::Prepared { pages },
            Err(e) => Input::PrepareFailed(e.to_string()),
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
        let fax = OutboundFax {
            job_id: job.id.clone(),
            call_id: faxd::ids::new_id(),
            to: job.to_number.clone(),
            from_number: job.from_number.clone(),
            from_name: job.from_name.clone(),
            fax_identity_number: job.identity_number.clone(),
            fax_identity_name: job.identity_name.clone(),
            document: self.file.clone(),
            document_url: None,
            options,
        };
        self.started_ms = faxd::time::now_unix_ms();
        match env.gateway.originate(fax).await {
            Ok(mut call) => {
                self.hangup = Some(call.hangup.clone());
                let me = myself.clone();
                self.events = Some(tokio::spawn(async move {
                    while let Some(e) = call.events.recv().await {
                        if me.cast(WorkerMsg::Event(e)).is_err() {
                            return;
                        }
                    }
                    let _ = me.cast(WorkerMsg::EventsClosed);
                }));
                Input::Originated
            }
            Err(e) => {
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
    async fn release(&mut self, outcome: Outcome) -> Input {
        let env = &self.args.env;
        let store = &env.ctx.store;
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        for _ in 0..3 {
            let doc = match store.get(&Db::Faxes, &self.args.job_id).await {
                Ok(Some(doc)) => doc,
                Ok(None) => return Input::ReleaseFailed("job vanished".into()),
                Err(e) => return Input::ReleaseFailed(e.to_string()),
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
                Err(e) => {
                    warn!(job_id = %self.args.job_id, error = %e, "release failed");
                    return Input::ReleaseFailed(e.to_string());
                }
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
            Err(e) => Input::ReleaseFailed(e.to_string()),
        }
    }

    async fn renew_lease(&mut self) {
        let store = &self.args.env.ctx.store;
        let Ok(Some(mut doc)) = store.get(&Db::Faxes, &self.args.job_id).await else {
            return;
        };
        if doc.get("pvt_lease").and_then(|l| l.as_str()) != Some(self.args.lease.as_str()) {
            // Someone requeued the job: our attempt no longer counts. Hang up; the stage
            // machine releases nothing because the lease check in release fails.
            if let Some(h) = &self.hangup {
                h.hangup("LEASE_LOST");
            }
            return;
        }
        doc["pvt_heartbeat"] = json!(faxd::time::now_unix_ms());
        if let Err(e) = store.save(&Db::Faxes, doc).await {
            debug!(job_id = %self.args.job_id, error = %e, "heartbeat not saved");
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
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        if let Some(h) = self.events.take() {
            h.abort();
        }
        self.remove_files().await;
        self.hangup = None;
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

/// `sip:503 …` → 503.
fn sip_code_of(text: &str) -> Option<u16> {
    let rest = text.split("sip:").nth(1)?;
    rest.get(..3)?.parse().ok()
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
