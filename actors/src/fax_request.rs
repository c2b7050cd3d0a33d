//! fax_request: receives one inbound fax call (Kazoo's `fax_request`). Started by
//! fax_inbound under fax_requests_sup for each call the media engine hands over, temporary
//! (never restarted: the call is gone with it), registered as `fax_request_<call_id>`.
//!
//! It looks up who receives the dialled number ([`faxd::inbound::resolve`]) and refuses the
//! ringing call when nobody does (unknown number, a callflow without a fax module, a store
//! that cannot answer); otherwise it answers and follows the call's events. On the result it
//! stores the fax in the receiver's MODB inbox — the received TIFF as
//! `received_file_<id>.tiff` and its PDF (the TIFF's own CCITT data, not re-encoded) as
//! `pdf_file.pdf` — retrying storage up to `max_storage_retry` times, then exits. A reception
//! without pages or that failed is not stored. It also exits when the call's events stop
//! without a result (the call vanished) or when nothing happens on the line for
//! `[outbound] page_timeout` twice in a row (hung up after the first); stopped between
//! storage attempts (node shutdown) it makes one last attempt. The received file leaves the
//! spool whichever way it ends; the call is owned by a [`CallGuard`], so an exit
//! before the result hangs it up.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faxd::context::NodeContext;
use faxd::gateway::{Answer, AnswerHandle, CallGuard, FaxEvent, FaxResult, InboundCall, Refusal};
use faxd::ids::Db;
use faxd::inbound::live::Incoming;
use faxd::inbound::{self, CallInfo, Receiver, Verdict};
use faxd::store::NewAttachment;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::Value;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

/// The registered name of the fax_request of a call.
pub fn name(call_id: &str) -> String {
    format!("fax_request_{call_id}")
}

/// Messages of a fax_request (local only).
pub enum RequestMsg {
    /// Begin (sent once by `post_start`).
    Start,
    /// An event of the call.
    Event(FaxEvent),
    /// The call's event stream closed.
    EventsClosed,
    /// Nothing happened on the line for a while; stale generations are ignored.
    Idle { generation: u64 },
    /// Storage attempt number `attempt` (1-based).
    Store { attempt: u32 },
}

impl ractor::Message for RequestMsg {}

/// Start arguments: the node context and the call (taken once; the supervisor never restarts
/// a temporary child).
#[derive(Clone)]
pub struct RequestArgs {
    pub ctx: NodeContext,
    pub call: Arc<Mutex<Option<InboundCall>>>,
}

pub struct FaxRequest;

/// A received fax on its way to the store.
struct Storing {
    /// Attempts allowed (`max_storage_retry`, read when the fax arrived).
    attempts: u32,
    db: Db,
    doc: Value,
    attachments: Vec<NewAttachment>,
}

pub struct RequestState {
    ctx: NodeContext,
    info: CallInfo,
    answer: AnswerHandle,
    /// Events until the request takes them over in `Start`.
    events: Option<tokio::sync::mpsc::Receiver<FaxEvent>>,
    guard: CallGuard,
    forward: Option<Task>,
    receiver: Option<Receiver>,
    /// The received file in the spool, once the result names it.
    file: Option<PathBuf>,
    storing: Option<Storing>,
    idle: Duration,
    generation: u64,
    hung_up: bool,
    finished: bool,
    answered_ms: i64,
    /// The call is in the node's list of incoming calls.
    live: bool,
}

#[ractor::async_trait]
impl Actor for FaxRequest {
    type Msg = RequestMsg;
    type State = RequestState;
    type Arguments = RequestArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<RequestMsg>,
        args: RequestArgs,
    ) -> Result<RequestState, ActorProcessingErr> {
        let call = args
            .call
            .lock()
            .map_err(|_| "inbound call slot poisoned")?
            .take()
            .ok_or("the inbound call was already taken")?;
        let idle = Duration::from_secs(args.ctx.config.outbound.page_timeout.max(1));
        Ok(RequestState {
            info: CallInfo {
                call_id: call.call_id,
                to: call.to,
                from_number: call.from_number,
                from_name: call.from_name,
            },
            answer: call.answer,
            events: Some(call.events),
            guard: CallGuard::new(call.hangup),
            forward: None,
            receiver: None,
            file: None,
            storing: None,
            idle,
            generation: 0,
            hung_up: false,
            finished: false,
            answered_ms: 0,
            live: false,
            ctx: args.ctx,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<RequestMsg>,
        _st: &mut RequestState,
    ) -> Result<(), ActorProcessingErr> {
        myself.cast(RequestMsg::Start)?;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RequestMsg>,
        msg: RequestMsg,
        st: &mut RequestState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RequestMsg::Start => st.start(&myself).await,
            RequestMsg::Event(FaxEvent::Finished(result)) => {
                st.guard.ended();
                st.finished = true;
                st.finish(&myself, result).await;
            }
            RequestMsg::Event(e) => {
                debug!(call_id = %st.info.call_id, event = ?e, "fax_request: line event");
                st.ctx.incoming.update(&st.info.call_id, |c| match &e {
                    FaxEvent::Negotiated {
                        transfer_rate,
                        remote_station_id,
                        ..
                    } => {
                        c.status = "negotiated".into();
                        c.transfer_rate = *transfer_rate;
                        c.remote_station_id = remote_station_id.clone();
                    }
                    FaxEvent::Page { page, .. } => {
                        c.status = "receiving".into();
                        c.page = *page;
                    }
                    _ => {}
                });
                st.arm_idle(&myself);
            }
            RequestMsg::EventsClosed => {
                if !st.finished {
                    warn!(call_id = %st.info.call_id, to_number = %st.info.to,
                          "inbound call vanished before its result");
                    myself.stop(None);
                }
            }
            RequestMsg::Idle { generation } if generation == st.generation => {
                if st.hung_up {
                    warn!(call_id = %st.info.call_id, "inbound call gave no result after its hangup");
                    myself.stop(None);
                } else {
                    warn!(call_id = %st.info.call_id, idle = ?st.idle, "nothing on the line: hanging up");
                    st.guard.hangup("RECOVERY_ON_TIMER_EXPIRE");
                    st.hung_up = true;
                    st.arm_idle(&myself);
                }
            }
            RequestMsg::Idle { .. } => {}
            RequestMsg::Store { attempt } => st.store(&myself, attempt).await,
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<RequestMsg>,
        st: &mut RequestState,
    ) -> Result<(), ActorProcessingErr> {
        st.forward = None;
        if st.live {
            st.ctx.incoming.remove(&st.info.call_id);
        }
        // Stopped between storage attempts (the node is shutting down): one last attempt
        // before the received file goes.
        if let Some(s) = st.storing.take() {
            let fax_id = s.doc["_id"].as_str().unwrap_or_default();
            match inbound::store_fax(&st.ctx.store, &s.db, &s.doc, &s.attachments).await {
                Ok(()) => {
                    st.ctx.notify.ring(&s.db);
                    info!(call_id = %st.info.call_id, fax_id = %fax_id,
                          "fax stored in the inbox on the way out")
                }
                Err(e) => {
                    let kept = keep_unstored(&st.ctx, &s).await;
                    error!(call_id = %st.info.call_id, fax_id = %fax_id, error = %e,
                           kept = %kept, "stopped before the received fax could be stored")
                }
            }
        }
        if let Some(file) = st.file.take() {
            remove(&file).await;
        }
        Ok(())
    }
}

impl RequestState {
    /// Refuses the call when nobody receives its number; else answers and follows it.
    async fn start(&mut self, myself: &ActorRef<RequestMsg>) {
        let info = &self.info;
        let system = &self.ctx.sysconf.fax().fax_settings;
        let receiver = match inbound::resolve(&self.ctx.store, &info.to, system).await {
            Ok(r) => r,
            Err(e) => {
                let refusal = e.refusal();
                info!(call_id = %info.call_id, to_number = %info.to, cause = %refusal.cause,
                      reason = %e, "inbound fax call refused");
                self.answer.refuse(refusal);
                self.guard.ended();
                myself.stop(None);
                return;
            }
        };
        let limit = receiver
            .max_inbound
            .unwrap_or(self.ctx.sysconf.fax().max_inbound);
        let live = Incoming {
            id: info.call_id.clone(),
            account: Some(receiver.account.clone()),
            faxbox_id: receiver.faxbox_id.clone(),
            owner_id: receiver.owner_id.clone(),
            from_number: info.from_number.clone(),
            from_name: info.from_name.clone(),
            to_number: info.to.clone(),
            status: "answered".into(),
            page: 0,
            transfer_rate: 0,
            remote_station_id: String::new(),
            created: faxd::time::now_gregorian(),
        };
        if !self.ctx.incoming.enter(live, limit) {
            info!(call_id = %info.call_id, to_number = %info.to, account_id = %receiver.account,
                  limit, "inbound fax call refused: the account is receiving its limit of faxes");
            self.answer.refuse(Refusal {
                cause: "USER_BUSY".into(),
                sip_code: 486,
            });
            self.guard.ended();
            myself.stop(None);
            return;
        }
        self.live = true;
        let answer = Answer {
            station_id: receiver.station_id.clone(),
            t38: receiver.t38,
        };
        if !self.answer.accept(answer) {
            debug!(call_id = %info.call_id, "the caller gave up before the answer");
            self.guard.ended();
            myself.stop(None);
            return;
        }
        info!(call_id = %info.call_id, to_number = %info.to, from_number = %info.from_number,
              account_id = %receiver.account, faxbox_id = ?receiver.faxbox_id,
              owner_id = ?receiver.owner_id, station_id = %receiver.station_id, "receiving a fax");
        self.receiver = Some(receiver);
        self.answered_ms = faxd::time::now_unix_ms();
        if let Some(mut events) = self.events.take() {
            let me = myself.clone();
            self.forward = Some(Task(tokio::spawn(async move {
                while let Some(e) = events.recv().await {
                    if me.cast(RequestMsg::Event(e)).is_err() {
                        return;
                    }
                }
                let _ = me.cast(RequestMsg::EventsClosed);
            })));
        }
        self.arm_idle(myself);
    }

    fn arm_idle(&mut self, myself: &ActorRef<RequestMsg>) {
        self.generation += 1;
        let generation = self.generation;
        myself.send_after(self.idle, move || RequestMsg::Idle { generation });
    }

    /// The call ended: store what arrived, or say why nothing did.
    async fn finish(&mut self, myself: &ActorRef<RequestMsg>, result: FaxResult) {
        self.generation += 1; // no idle timer after the result
        self.file = result.received_file.clone();
        let finished_ms = faxd::time::now_unix_ms();
        let Some(receiver) = self.receiver.clone() else {
            myself.stop(None);
            return;
        };
        let verdict = inbound::verdict(&result);
        let received = match &verdict {
            Verdict::Received { pages } => *pages,
            Verdict::Failed { .. } => 0,
        };
        faxd::metrics::fax_finished("inbound", received > 0, &result.hangup_cause, received);
        let pages = match verdict {
            Verdict::Received { pages } => pages,
            Verdict::Failed { text } => {
                let rx = Value::Object(inbound::rx_result(&result, self.answered_ms, finished_ms))
                    .to_string();
                warn!(call_id = %self.info.call_id, to_number = %self.info.to,
                      from_number = %self.info.from_number, account_id = %receiver.account,
                      reason = %text, rx_result = %rx, "inbound fax not received");
                // The failure is recorded (one attempt) with its notification.
                let now = faxd::time::now_gregorian();
                let (db, id) = inbound::fax_location(&receiver.account, now);
                let doc = inbound::failure_doc(
                    &receiver,
                    &self.info,
                    &result,
                    &db,
                    &id,
                    self.ctx.node(),
                    self.answered_ms,
                    finished_ms,
                    now,
                );
                match inbound::store_fax(&self.ctx.store, &db, &doc, &[]).await {
                    Ok(()) => self.ctx.notify.ring(&db),
                    Err(e) => warn!(call_id = %self.info.call_id, error = %e,
                                    "failed reception not recorded"),
                }
                myself.stop(None);
                return;
            }
        };
        let Some(file) = self.file.clone() else {
            error!(call_id = %self.info.call_id, pages, "inbound fax received without a file");
            myself.stop(None);
            return;
        };
        let tiff = match tokio::fs::read(&file).await {
            Ok(t) => t,
            Err(e) => {
                error!(call_id = %self.info.call_id, file = %file.display(), error = %e,
                       "received fax unreadable");
                myself.stop(None);
                return;
            }
        };
        let now = faxd::time::now_gregorian();
        let (db, fax_id) = inbound::fax_location(&receiver.account, now);
        let doc = inbound::inbox_doc(
            &receiver,
            &self.info,
            &result,
            &db,
            &fax_id,
            tiff.len() as u64,
            self.ctx.node(),
            self.answered_ms,
            finished_ms,
            now,
        );
        let mut attachments = vec![NewAttachment {
            name: inbound::tiff_attachment(&fax_id),
            content_type: "image/tiff".into(),
            data: tiff.clone().into(),
        }];
        // The PDF wraps the received CCITT data as it is (no re-encoding), on the blocking pool.
        match tokio::task::spawn_blocking(move || faxd::convert::pdf::fax_tiff_to_pdf(&tiff)).await
        {
            Ok(Ok(pdf)) => attachments.push(NewAttachment {
                name: "pdf_file.pdf".into(),
                content_type: "application/pdf".into(),
                data: pdf.into(),
            }),
            Ok(Err(e)) => {
                warn!(call_id = %self.info.call_id, error = %e, "no PDF of the received fax")
            }
            Err(e) => warn!(call_id = %self.info.call_id, error = %e, "PDF task failed"),
        }
        self.storing = Some(Storing {
            attempts: self.ctx.sysconf.fax().max_storage_retry.max(1),
            db,
            doc,
            attachments,
        });
        self.store(myself, 1).await;
    }

    /// Storage attempt `attempt`; a failure is tried again later, up to `max_storage_retry`
    /// attempts.
    async fn store(&mut self, myself: &ActorRef<RequestMsg>, attempt: u32) {
        let Some(s) = self.storing.take() else {
            return;
        };
        let fax_id = s.doc["_id"].as_str().unwrap_or_default().to_string();
        match inbound::store_fax(&self.ctx.store, &s.db, &s.doc, &s.attachments).await {
            Ok(()) => {
                self.ctx.notify.ring(&s.db);
                info!(call_id = %self.info.call_id, fax_id = %fax_id, db = %s.db,
                      pages = %s.doc["pvt_pages"], from_number = %self.info.from_number,
                      to_number = %self.info.to, "fax received and stored in the inbox");
                myself.stop(None);
            }
            Err(e) => match inbound::store_retry_delay(attempt, s.attempts) {
                Some(after) => {
                    warn!(call_id = %self.info.call_id, fax_id = %fax_id, attempt, error = %e,
                          ?after, "storing the received fax failed: trying again");
                    let next = attempt + 1;
                    self.storing = Some(s);
                    myself.send_after(after, move || RequestMsg::Store { attempt: next });
                }
                None => {
                    let kept = keep_unstored(&self.ctx, &s).await;
                    error!(call_id = %self.info.call_id, fax_id = %fax_id, attempt, error = %e,
                           from_number = %self.info.from_number, to_number = %self.info.to,
                           kept = %kept, "storing the received fax failed for good");
                    myself.stop(None);
                }
            },
        }
    }
}

/// A received fax the store would not take is kept under `<data_dir>/unstored/<fax_id>/`
/// (private): its inbox document (`doc.json`, with the database it belongs in) and every
/// attachment by its name, so an operator can put it in the store later. Returns where it
/// is, or why it could not be kept.
async fn keep_unstored(ctx: &NodeContext, s: &Storing) -> String {
    let fax_id = s.doc["_id"].as_str().unwrap_or("unnamed");
    // Ids are hex; anything else never reaches a path.
    if fax_id.is_empty()
        || !fax_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return format!("not kept: the fax id {fax_id:?} is not a file name");
    }
    let dir = ctx.config.node.data_dir.join("unstored").join(fax_id);
    let kept = async {
        faxd::files::create_dir_private(&dir).await?;
        let doc = serde_json::json!({"db": s.db.name(), "doc": s.doc});
        let mut files: Vec<(String, Vec<u8>)> = vec![("doc.json".into(), doc.to_string().into())];
        for a in &s.attachments {
            files.push((a.name.clone(), a.data.to_vec()));
        }
        for (name, data) in files {
            if name.contains('/') || name.starts_with('.') {
                continue;
            }
            let mut f = faxd::files::create_private(&dir.join(&name)).await?;
            tokio::io::AsyncWriteExt::write_all(&mut f, &data).await?;
            f.sync_all().await?;
        }
        std::io::Result::Ok(())
    };
    match kept.await {
        Ok(()) => format!("kept in {}", dir.display()),
        Err(e) => format!("not kept in {}: {e}", dir.display()),
    }
}

async fn remove(file: &PathBuf) {
    match tokio::fs::remove_file(file).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(file = %file.display(), error = %e, "received fax not removed"),
    }
}

/// A helper task of the request (the call's events), aborted when dropped.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}
