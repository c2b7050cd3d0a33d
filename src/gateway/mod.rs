//! The media engine contract (DESIGN.md §3): a [`Gateway`] originates an outbound fax call
//! with a fax-ready TIFF and streams back what happens on the line; inbound fax calls arrive
//! through an [`InboundSink`]. Implementations: `loopback` (embedded virtual PSTN with real
//! spandsp T.30 terminals), `freeswitch` (ESL), and `null` (instant success, scheduler
//! benchmark only).
//!
//! The result fields are the ones FreeSWITCH's mod_spandsp reports, so that a transmission
//! looks the same in `tx_result` whichever engine carried it.

pub mod esl;
pub mod file_proxy;
pub mod freeswitch;
pub mod loopback;
pub mod null;
pub mod script;
pub mod tiff;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// Transmission options; reschedule rules may step them down between attempts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TxOptions {
    /// Error correction mode.
    pub ecm: bool,
    /// Highest modem rate in bit/s (14400, 9600, 7200, 4800, 2400).
    pub max_rate: u32,
    /// Offer T.38 instead of audio.
    pub t38: bool,
    /// How long the call may ring before it counts as no answer (`endpoint_timeout`).
    pub ring_timeout: Duration,
}

impl Default for TxOptions {
    fn default() -> Self {
        Self {
            ecm: true,
            max_rate: 14_400,
            t38: false,
            ring_timeout: Duration::from_secs(40),
        }
    }
}

/// One outbound fax call to place.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboundFax {
    /// The job (fax document id) this call transmits.
    pub job_id: String,
    /// Call id (FreeSWITCH `origination_uuid`), 32 hex.
    pub call_id: String,
    /// Destination, E.164.
    pub to: String,
    pub from_number: String,
    pub from_name: String,
    /// TSI (`fax_ident`).
    pub fax_identity_number: String,
    /// Page header text (`fax_header`).
    pub fax_identity_name: String,
    /// The fax-ready TIFF on this node's disk.
    pub document: PathBuf,
    /// Where a remote media engine fetches the document (file proxy URL), if it needs one.
    pub document_url: Option<String>,
    pub options: TxOptions,
}

/// What the far end and the T.30 engine reported at the end of a call, with FreeSWITCH's
/// names (`fax_success`, `fax_result_code`, …) and the call's hangup cause and SIP code.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaxResult {
    pub success: bool,
    /// Hangup cause, e.g. `NORMAL_CLEARING`, `USER_BUSY`, `NO_ANSWER`.
    pub hangup_cause: String,
    /// SIP response code of the call (200 when answered).
    pub sip_code: u16,
    /// T.30 completion code (0 = OK).
    pub fax_result_code: i32,
    pub fax_result_text: String,
    pub transferred_pages: u32,
    pub total_pages: u32,
    /// Negotiated rate in bit/s.
    pub transfer_rate: u32,
    pub ecm_used: bool,
    pub t38_used: bool,
    pub remote_station_id: String,
    pub local_station_id: String,
    pub bad_rows: u32,
    pub longest_bad_row_run: u32,
    /// Line resolution in pixels per metre as mod_spandsp reports it, e.g. `"8040x7700"`
    /// (fine); empty when no page was exchanged.
    pub image_resolution: String,
    /// For receptions: the received TIFF on this node's disk.
    pub received_file: Option<PathBuf>,
}

/// Progress of a call, in order; the last event of every call is [`FaxEvent::Finished`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FaxEvent {
    /// The far end answered.
    Answered,
    /// T.30 negotiation done (FreeSWITCH `spandsp::txfaxnegociateresult`).
    Negotiated {
        transfer_rate: u32,
        ecm: bool,
        remote_station_id: String,
    },
    /// A page went through (`spandsp::txfaxpageresult`).
    Page {
        page: u32,
        total: u32,
        bad_rows: u32,
    },
    /// The call ended (`spandsp::txfaxresult` and hangup).
    Finished(FaxResult),
}

/// Errors placing a call (a busy line is not an error: it is a [`FaxResult`]).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("media engine unavailable: {0}")]
    Unavailable(String),
    #[error("originate refused: {0}")]
    Refused(String),
    #[error("bad fax document: {0}")]
    Document(String),
}

/// A call in progress.
pub struct FaxCall {
    pub call_id: String,
    /// Events of the call; closes after [`FaxEvent::Finished`].
    pub events: mpsc::Receiver<FaxEvent>,
    /// Hangs the call up early (timeouts, cancellation). Dropping it does not hang up: the
    /// placer owns the call through a [`CallGuard`], which does.
    pub hangup: HangupHandle,
}

/// Hangup cause of a call whose owner went away without ending it (a worker that panicked
/// or stopped): a temporary failure, so the far end and the logs tell it from a timeout.
pub const OWNER_GONE: &str = "NORMAL_TEMPORARY_FAILURE";

/// Owns a call for whoever placed it: dropping the guard hangs the call up with
/// [`OWNER_GONE`] unless the call already ended, and stops serving the call's document
/// through the file proxy. A worker keeps it in its state, so a panic (which skips the
/// actor's `post_stop`) still leaves no call up and no document served.
#[derive(Debug)]
pub struct CallGuard {
    hangup: HangupHandle,
    ended: bool,
    served: Option<(file_proxy::FileRegistry, String)>,
}

impl CallGuard {
    pub fn new(hangup: HangupHandle) -> Self {
        Self {
            hangup,
            ended: false,
            served: None,
        }
    }

    /// Also unregisters `job_id`'s document from `files` when dropped.
    pub fn serving(mut self, files: file_proxy::FileRegistry, job_id: &str) -> Self {
        self.served = Some((files, job_id.to_string()));
        self
    }

    /// Hangs the call up now with `cause`.
    pub fn hangup(&mut self, cause: &str) {
        self.hangup.hangup(cause);
        self.ended = true;
    }

    /// The call ended by itself (its result arrived): dropping no longer hangs up.
    pub fn ended(&mut self) {
        self.ended = true;
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.ended {
            self.hangup.hangup(OWNER_GONE);
        }
        if let Some((files, job_id)) = self.served.take() {
            files.unregister(&job_id);
        }
    }
}

/// Asks the engine to end a call.
#[derive(Clone, Debug)]
pub struct HangupHandle(pub mpsc::UnboundedSender<String>);

impl HangupHandle {
    /// Requests a hangup with a cause (e.g. `"NORMAL_CLEARING"`); no-op if already ended.
    pub fn hangup(&self, cause: &str) {
        let _ = self.0.send(cause.to_string());
    }
}

/// An inbound fax call handed to faxd (loopback: a number owned by a local callflow;
/// freeswitch: a call routed to the outbound-socket listener). It rings until its receiver
/// decides through [`InboundCall::answer`]: answered, the reception runs and its events
/// arrive; refused, the caller gets the refusal's cause. A call dropped undecided is refused
/// with [`OWNER_GONE`].
pub struct InboundCall {
    pub call_id: String,
    /// The called number (DID), E.164.
    pub to: String,
    pub from_number: String,
    pub from_name: String,
    /// Events of the reception (after the answer); `Finished` carries `received_file`.
    pub events: mpsc::Receiver<FaxEvent>,
    pub hangup: HangupHandle,
    /// Answers or refuses the ringing call.
    pub answer: AnswerHandle,
}

/// Why an inbound call is not answered: the hangup cause and SIP code the caller sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub cause: String,
    pub sip_code: u16,
}

impl Refusal {
    /// Nobody receives faxes on the dialled number: `UNALLOCATED_NUMBER` / 404.
    pub fn unallocated() -> Self {
        Self {
            cause: "UNALLOCATED_NUMBER".into(),
            sip_code: 404,
        }
    }

    /// The number's callflow does not receive faxes: `INCOMPATIBLE_DESTINATION` / 488.
    pub fn incompatible() -> Self {
        Self {
            cause: "INCOMPATIBLE_DESTINATION".into(),
            sip_code: 488,
        }
    }

    /// The receiving side cannot take the call now (its store is away): a temporary failure,
    /// `NORMAL_TEMPORARY_FAILURE` / 503, so the sender retries.
    pub fn temporary() -> Self {
        Self {
            cause: OWNER_GONE.into(),
            sip_code: 503,
        }
    }
}

/// How an inbound call is answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// The receiving terminal's station id (CSI, FreeSWITCH `fax_ident`); empty: the dialled
    /// number.
    pub station_id: String,
    /// The receiver's T.38 preference (faxbox `media.fax_option`); the engine combines it
    /// with the carrier's (FreeSWITCH: [`freeswitch::t38`]).
    pub t38: bool,
}

/// The decision on a ringing inbound call; sent once.
#[derive(Debug)]
pub struct AnswerHandle(Option<oneshot::Sender<Result<Answer, Refusal>>>);

impl AnswerHandle {
    /// A handle and the receiver the engine waits on.
    pub fn new() -> (Self, oneshot::Receiver<Result<Answer, Refusal>>) {
        let (tx, rx) = oneshot::channel();
        (Self(Some(tx)), rx)
    }

    /// Answers the call; `false` if it no longer rings (the caller gave up).
    pub fn accept(&mut self, answer: Answer) -> bool {
        self.0.take().is_some_and(|tx| tx.send(Ok(answer)).is_ok())
    }

    /// Refuses the call with `refusal`.
    pub fn refuse(&mut self, refusal: Refusal) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(Err(refusal));
        }
    }
}

/// Where a gateway delivers inbound calls.
pub type InboundSink = mpsc::Sender<InboundCall>;

/// Decides whether a number is served by this system (a callflow owns it), so the loopback
/// engine can turn an outbound call to it into an inbound one.
#[async_trait]
pub trait NumberDirectory: Send + Sync + 'static {
    async fn is_local(&self, number: &str) -> bool;
}

/// A directory without local numbers: every number is remote (until inbound faxes are
/// delivered to callflows, and for tools and tests).
pub struct NoLocalNumbers;

#[async_trait]
impl NumberDirectory for NoLocalNumbers {
    async fn is_local(&self, _number: &str) -> bool {
        false
    }
}

/// The health of a media engine's nodes, for `faxd_maintenance status` and `/healthz`.
pub trait MediaHealth: Send + Sync + 'static {
    fn nodes(&self) -> Vec<freeswitch::link::NodeHealth>;
}

/// Where a node's supervision tree puts its media engine's health (empty: an engine
/// without remote nodes). Cheap to clone.
#[derive(Clone, Default)]
pub struct MediaMonitor(std::sync::Arc<std::sync::RwLock<Option<std::sync::Arc<dyn MediaHealth>>>>);

impl MediaMonitor {
    pub fn set(&self, health: std::sync::Arc<dyn MediaHealth>) {
        if let Ok(mut slot) = self.0.write() {
            *slot = Some(health);
        }
    }

    /// The engine's nodes; `None` when the engine has none (loopback, script).
    pub fn nodes(&self) -> Option<Vec<freeswitch::link::NodeHealth>> {
        let slot = self.0.read().ok()?;
        slot.as_ref().map(|h| h.nodes())
    }
}

/// A media engine.
#[async_trait]
pub trait Gateway: Send + Sync + 'static {
    /// `loopback`, `freeswitch` or `null`.
    fn name(&self) -> &'static str;

    /// Where a remote media engine fetches documents: the file proxy's base URL as the
    /// engine reaches it (`<base>/fax/<job>/<token>.tiff`). `None`: the engine reads the
    /// TIFF from this node's disk ([`OutboundFax::document`]).
    fn document_base_url(&self) -> Option<String> {
        None
    }

    /// Places an outbound fax call. Returns once the call is set up; progress and the
    /// result arrive as events.
    async fn originate(&self, fax: OutboundFax) -> Result<FaxCall, GatewayError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> (CallGuard, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (CallGuard::new(HangupHandle(tx)), rx)
    }

    #[test]
    fn dropping_a_call_guard_hangs_up_and_stops_serving_the_document() {
        let files = file_proxy::FileRegistry::default();
        files.register("job1", PathBuf::from("/tmp/job1.tiff"));
        let (g, mut rx) = guard();
        let g = g.serving(files.clone(), "job1");
        drop(g);
        assert_eq!(rx.try_recv().ok().as_deref(), Some(OWNER_GONE));
        assert!(files.is_empty());

        // A call hung up on purpose, or ended by itself, is not hung up again.
        let (mut g, mut rx) = guard();
        g.hangup("JOB_TIMEOUT");
        drop(g);
        assert_eq!(rx.try_recv().ok().as_deref(), Some("JOB_TIMEOUT"));
        assert!(rx.try_recv().is_err());
        let (mut g, mut rx) = guard();
        g.ended();
        drop(g);
        assert!(rx.try_recv().is_err());
    }
}
