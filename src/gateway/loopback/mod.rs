//! The `loopback` media engine (DESIGN.md §3): a virtual PSTN inside faxd. An outbound call
//! is routed by the `[loopback]` config: busy and unanswered numbers end before answer; other
//! numbers reach a simulated fax machine, and a number a local callflow owns becomes an
//! [`InboundCall`] on the [`InboundSink`], which rings until the receiving side answers or
//! refuses it (the caller then gets the refusal's cause). Answered calls run two real spandsp T.30 terminals
//! (see `session`) on tokio's blocking pool, never on the async runtime.

pub mod pstn;
pub mod session;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

use self::pstn::{Machine, Route, Unanswered};
use self::session::{Party, Session, Transport};
use super::{
    AnswerHandle, FaxCall, FaxEvent, FaxResult, Gateway, GatewayError, HangupHandle, InboundCall,
    InboundSink, NumberDirectory, OutboundFax, Refusal,
};
use crate::config::{Config, LoopbackSection};

/// Capacity of a call's event channel (a call has pages + 3 events; the line waits when the
/// reader falls this far behind).
const EVENTS: usize = 64;

/// The loopback media engine.
#[derive(Clone)]
pub struct LoopbackGateway {
    inner: Arc<Inner>,
}

struct Inner {
    config: LoopbackSection,
    spool: PathBuf,
    directory: Arc<dyn NumberDirectory>,
    inbound: Option<InboundSink>,
    /// `true` once [`LoopbackGateway::shutdown`] was called.
    closing: watch::Sender<bool>,
}

impl LoopbackGateway {
    /// An engine with its `[loopback]` settings, the directory where far ends write received
    /// faxes (created if missing), the directory of local numbers and where inbound calls go
    /// (`None`: local numbers are treated like any other number).
    pub fn new(
        config: LoopbackSection,
        spool: PathBuf,
        directory: Arc<dyn NumberDirectory>,
        inbound: Option<InboundSink>,
    ) -> Result<Self, GatewayError> {
        crate::files::create_dir_private_blocking(&spool).map_err(|e| {
            GatewayError::Unavailable(format!("cannot create {}: {e}", spool.display()))
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                spool,
                directory,
                inbound,
                closing: watch::Sender::new(false),
            }),
        })
    }

    /// The engine a node config describes (spool: `[loopback] spool_dir`, else
    /// `<data_dir>/loopback`).
    pub fn from_config(
        config: &Config,
        directory: Arc<dyn NumberDirectory>,
        inbound: Option<InboundSink>,
    ) -> Result<Self, GatewayError> {
        let spool = if config.loopback.spool_dir.as_os_str().is_empty() {
            config.node.data_dir.join("loopback")
        } else {
            config.loopback.spool_dir.clone()
        };
        Self::new(config.loopback.clone(), spool, directory, inbound)
    }

    /// Hangs up every call in progress (cause `SYSTEM_SHUTDOWN`; ringing calls end
    /// `ORIGINATOR_CANCEL`) and refuses new ones. For the owner's shutdown: a real-time call
    /// would otherwise keep its blocking thread, and the runtime, for minutes.
    pub fn shutdown(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Where the simulated far end of call `call_id` writes the fax it receives (a call to a
    /// non-local number that was answered). The file stays for inspection.
    pub fn far_end_file(&self, call_id: &str) -> PathBuf {
        self.inner.spool.join(format!("remote-{call_id}.tiff"))
    }

    /// Where an inbound call's received fax is written (also in its `Finished` result).
    pub fn inbound_file(&self, call_id: &str) -> PathBuf {
        self.inner.spool.join(format!("inbound-{call_id}.tiff"))
    }
}

/// A call id becomes part of file names: keep it to a safe alphabet.
fn valid_call_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A refused inbound call, as its caller sees it.
fn refused(r: Refusal) -> FaxResult {
    FaxResult {
        success: false,
        hangup_cause: r.cause,
        sip_code: r.sip_code,
        ..FaxResult::default()
    }
}

fn unanswered(u: Unanswered) -> FaxResult {
    FaxResult {
        success: false,
        hangup_cause: u.cause.into(),
        sip_code: u.sip_code,
        ..FaxResult::default()
    }
}

/// A hangup channel plus the handle that feeds it.
fn hangup_pair() -> (HangupHandle, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (HangupHandle(tx), rx)
}

#[async_trait]
impl Gateway for LoopbackGateway {
    fn name(&self) -> &'static str {
        "loopback"
    }

    async fn originate(&self, fax: OutboundFax) -> Result<FaxCall, GatewayError> {
        if *self.inner.closing.borrow() {
            return Err(GatewayError::Unavailable(
                "the loopback engine is shutting down".into(),
            ));
        }
        if !valid_call_id(&fax.call_id) {
            return Err(GatewayError::Refused(format!(
                "invalid call id {:?}",
                fax.call_id
            )));
        }
        // Like txfax: the document must be a readable TIFF on this node.
        let doc = fax.document.clone();
        let pages = tokio::task::spawn_blocking(move || super::tiff::count_pages(&doc))
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?
            .map_err(|e| GatewayError::Document(e.to_string()))?;
        if pages == 0 {
            return Err(GatewayError::Document(format!(
                "{} has no pages",
                fax.document.display()
            )));
        }

        let route = if self.inner.inbound.is_some() && self.inner.directory.is_local(&fax.to).await
        {
            Route::Local
        } else {
            pstn::route(&self.inner.config.numbers, &fax.to)
        };
        tracing::debug!(call_id = %fax.call_id, to_number = %fax.to, ?route, "loopback originate");

        let (events_tx, events) = mpsc::channel(EVENTS);
        let (hangup, mut hangup_rx) = hangup_pair();
        let call = FaxCall {
            call_id: fax.call_id.clone(),
            events,
            hangup,
        };
        let this = self.clone();
        // The call's life is a task of its own (ringing is async; the line runs blocking).
        tokio::spawn(async move {
            let machine = match route {
                Route::Unanswered(u) => {
                    let _ = events_tx.send(FaxEvent::Finished(unanswered(u))).await;
                    return;
                }
                Route::NoAnswer => {
                    let mut closing = this.inner.closing.subscribe();
                    let outcome = tokio::select! {
                        _ = tokio::time::sleep(fax.options.ring_timeout) => pstn::NO_ANSWER,
                        _ = hangup_rx.recv() => pstn::CANCELLED,
                        _ = closing.wait_for(|c| *c) => pstn::CANCELLED,
                    };
                    let _ = events_tx
                        .send(FaxEvent::Finished(unanswered(outcome)))
                        .await;
                    return;
                }
                Route::Machine(m) => m,
                Route::Local => Machine::Receive,
            };
            this.answer(fax, route, machine, events_tx, hangup_rx).await;
        });
        Ok(call)
    }
}

impl LoopbackGateway {
    /// The far end answered: set up both parties and run the line on the blocking pool.
    async fn answer(
        &self,
        fax: OutboundFax,
        route: Route,
        machine: Machine,
        events_tx: mpsc::Sender<FaxEvent>,
        hangup_rx: mpsc::UnboundedReceiver<String>,
    ) {
        let cfg = &self.inner.config;
        let (callee, received) = if route == Route::Local {
            let (ev_tx, ev_rx) = mpsc::channel(EVENTS);
            let (handle, rx) = hangup_pair();
            let (answer, decision) = AnswerHandle::new();
            let inbound = InboundCall {
                call_id: fax.call_id.clone(),
                to: fax.to.clone(),
                from_number: fax.from_number.clone(),
                from_name: fax.from_name.clone(),
                events: ev_rx,
                hangup: handle,
                answer,
            };
            let delivered = match &self.inner.inbound {
                Some(sink) => sink.send(inbound).await.is_ok(),
                None => false,
            };
            if !delivered {
                let _ = events_tx
                    .send(FaxEvent::Finished(unanswered(pstn::OUT_OF_ORDER)))
                    .await;
                return;
            }
            // The call rings until the receiving side decides (at most the ring timeout).
            let mut closing = self.inner.closing.subscribe();
            let answered = tokio::select! {
                d = decision => match d {
                    Ok(Ok(answer)) => Ok(answer),
                    Ok(Err(refusal)) => Err(refused(refusal)),
                    Err(_) => Err(refused(Refusal::temporary())),
                },
                _ = tokio::time::sleep(fax.options.ring_timeout) => Err(unanswered(pstn::NO_ANSWER)),
                _ = closing.wait_for(|c| *c) => Err(unanswered(pstn::CANCELLED)),
            };
            let answer = match answered {
                Ok(a) => a,
                Err(r) => {
                    tracing::debug!(call_id = %fax.call_id, cause = %r.hangup_cause, "loopback: inbound call not answered");
                    let _ = events_tx.send(FaxEvent::Finished(r)).await;
                    return;
                }
            };
            let _ = ev_tx.send(FaxEvent::Answered).await;
            let party = Party {
                ident: if answer.station_id.is_empty() {
                    fax.to.clone()
                } else {
                    answer.station_id
                },
                header: String::new(),
                ecm: true,
                max_rate: 14_400,
                events: Some(ev_tx),
                hangup: Some(rx),
            };
            (party, self.inbound_file(&fax.call_id))
        } else {
            let party = Party {
                ident: fax.to.clone(),
                header: String::new(),
                ecm: true,
                max_rate: 14_400,
                events: None,
                hangup: None,
            };
            (party, self.far_end_file(&fax.call_id))
        };
        if events_tx.send(FaxEvent::Answered).await.is_err() {
            tracing::debug!(call_id = %fax.call_id, "loopback: caller stopped listening");
        }
        let _ = std::fs::remove_file(&received);
        let session = Session {
            transport: if fax.options.t38 {
                Transport::T38
            } else {
                Transport::Audio(cfg.law)
            },
            line_time: cfg.line_time,
            max_line: Duration::from_secs(cfg.max_call_secs.max(1)),
            document: fax.document.clone(),
            received,
            far: machine,
            closing: self.inner.closing.subscribe(),
            caller: Party {
                ident: fax.fax_identity_number.clone(),
                header: fax.fax_identity_name.clone(),
                ecm: fax.options.ecm,
                max_rate: fax.options.max_rate,
                events: Some(events_tx.clone()),
                hangup: Some(hangup_rx),
            },
            callee,
        };
        if let Err(e) = tokio::task::spawn_blocking(move || session::run(session)).await {
            tracing::error!(call_id = %fax.call_id, error = %e, "loopback line failed");
            let r = FaxResult {
                hangup_cause: "NORMAL_TEMPORARY_FAILURE".into(),
                sip_code: 500,
                fax_result_code: 49,
                fax_result_text: session::completion_text(49),
                ..FaxResult::default()
            };
            let _ = events_tx.send(FaxEvent::Finished(r)).await;
        }
    }
}
