//! `script`: a deterministic media engine for scheduler tests and the scheduler benchmark
//! (the issue's `null` engine, extended with scripted outcomes). No T.30: each call plays a
//! [`Script`] chosen by the destination number — the loopback engine's virtual-PSTN
//! defaults, or a per-number override — and reports FreeSWITCH-shaped results.
//!
//! Default numbers: `+15550001xxx` busy (USER_BUSY, SIP 486), `+15550002xxx` no answer
//! (NO_ANSWER, 480), `+15550003xxx` hangs up after page 1 (T.30 code 49), `+15550004xxx`
//! answers without fax tones (T.30 code 2), `+15550005xxx` answers and never finishes,
//! `+15550006xxx` refuses the originate; anything else receives every page.
//!
//! Like a real engine, a call stays up until it ends or is hung up: dropping every
//! [`HangupHandle`] of it does not end it. Hangups are logged as the far end saw them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{FaxCall, FaxEvent, FaxResult, Gateway, GatewayError, HangupHandle, OutboundFax};

/// What the far end does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Script {
    /// Answers and receives every page.
    Receive,
    /// Busy (USER_BUSY, SIP 486).
    Busy,
    /// Rings out (NO_ANSWER, SIP 480).
    NoAnswer,
    /// Answers, then hangs up after this many pages (T.30 code 49).
    HangupAfter(u32),
    /// Answers but never sends fax tones (T.30 code 2).
    NoFax,
    /// Answers and never finishes (only a hangup ends it).
    Never,
    /// Refuses the originate.
    Refuse,
}

impl Script {
    /// The default script of a number.
    pub fn for_number(number: &str) -> Script {
        match number.get(..9) {
            Some("+15550001") => Script::Busy,
            Some("+15550002") => Script::NoAnswer,
            Some("+15550003") => Script::HangupAfter(1),
            Some("+15550004") => Script::NoFax,
            Some("+15550005") => Script::Never,
            Some("+15550006") => Script::Refuse,
            _ => Script::Receive,
        }
    }
}

/// One originated call, as the engine saw it.
#[derive(Clone, Debug)]
pub struct Originated {
    pub fax: OutboundFax,
    /// Unix ms.
    pub at_ms: i64,
}

/// A call hung up from faxd's side, as the far end saw it.
#[derive(Clone, Debug)]
pub struct HungUp {
    pub call_id: String,
    pub to: String,
    pub cause: String,
    /// Pages the far end had received when the line dropped.
    pub pages: u32,
}

/// The scripted engine.
pub struct ScriptGateway {
    /// Line time per page (zero: instant, as the benchmark's null engine).
    pub page_time: Duration,
    overrides: Mutex<HashMap<String, Script>>,
    log: Option<Mutex<Vec<Originated>>>,
    hangups: Arc<Mutex<Vec<HungUp>>>,
}

impl ScriptGateway {
    /// An engine with `page_time` per page; `record` keeps a log of every originate.
    pub fn new(page_time: Duration, record: bool) -> Arc<Self> {
        Arc::new(Self {
            page_time,
            overrides: Mutex::new(HashMap::new()),
            log: record.then(|| Mutex::new(Vec::new())),
            hangups: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Makes `number` play `script` from the next call on.
    pub fn script(&self, number: &str, script: Script) {
        if let Ok(mut m) = self.overrides.lock() {
            m.insert(number.to_string(), script);
        }
    }

    /// The calls placed so far (empty unless recording).
    pub fn originated(&self) -> Vec<Originated> {
        self.log
            .as_ref()
            .and_then(|l| l.lock().ok().map(|v| v.clone()))
            .unwrap_or_default()
    }

    /// The calls hung up by faxd so far (always recorded).
    pub fn hangups(&self) -> Vec<HungUp> {
        self.hangups.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn script_of(&self, number: &str) -> Script {
        self.overrides
            .lock()
            .ok()
            .and_then(|m| m.get(number).cloned())
            .unwrap_or_else(|| Script::for_number(number))
    }
}

fn ended(cause: &str, sip: u16, code: i32, text: &str) -> FaxResult {
    FaxResult {
        success: false,
        hangup_cause: cause.into(),
        sip_code: sip,
        fax_result_code: code,
        fax_result_text: text.into(),
        ..Default::default()
    }
}

#[async_trait]
impl Gateway for ScriptGateway {
    fn name(&self) -> &'static str {
        "script"
    }

    async fn originate(&self, fax: OutboundFax) -> Result<FaxCall, GatewayError> {
        let script = self.script_of(&fax.to);
        if script == Script::Refuse {
            return Err(GatewayError::Refused("sip:503 scripted refusal".into()));
        }
        if let Some(log) = &self.log
            && let Ok(mut l) = log.lock()
        {
            l.push(Originated {
                fax: fax.clone(),
                at_ms: crate::time::now_unix_ms(),
            });
        }
        let pages = tokio::fs::read(&fax.document)
            .await
            .ok()
            .and_then(|d| crate::outbound::docs::tiff_pages(&d))
            .unwrap_or(1);
        let (tx, rx) = mpsc::channel(8);
        let (hang_tx, mut hang_rx) = mpsc::unbounded_channel::<String>();
        let page_time = self.page_time;
        let rate = fax.options.max_rate;
        let ecm = fax.options.ecm;
        let hangups = self.hangups.clone();
        let (call_id, to) = (fax.call_id.clone(), fax.to.clone());
        // The engine's own task plays the call (a real engine's call runs on its side too).
        tokio::spawn(async move {
            let received = std::sync::atomic::AtomicU32::new(0);
            let play = async {
                let answered = |r: FaxResult| FaxResult { sip_code: 200, ..r };
                let result = match script {
                    Script::Busy => ended("USER_BUSY", 486, 0, ""),
                    Script::NoAnswer => ended("NO_ANSWER", 480, 0, ""),
                    Script::Refuse => unreachable_refuse(),
                    Script::NoFax => {
                        let _ = tx.send(FaxEvent::Answered).await;
                        tokio::time::sleep(page_time).await;
                        answered(ended("NORMAL_CLEARING", 200, 2, "No fax tones"))
                    }
                    Script::Never => {
                        let _ = tx.send(FaxEvent::Answered).await;
                        std::future::pending::<()>().await;
                        return;
                    }
                    Script::Receive | Script::HangupAfter(_) => {
                        let _ = tx.send(FaxEvent::Answered).await;
                        let _ = tx
                            .send(FaxEvent::Negotiated {
                                transfer_rate: rate,
                                ecm,
                                remote_station_id: "SCRIPT".into(),
                            })
                            .await;
                        let stop_after = match script {
                            Script::HangupAfter(n) => n.min(pages),
                            _ => pages,
                        };
                        for page in 1..=stop_after {
                            if !page_time.is_zero() {
                                tokio::time::sleep(page_time).await;
                            }
                            received.store(page, std::sync::atomic::Ordering::Relaxed);
                            let _ = tx
                                .send(FaxEvent::Page {
                                    page,
                                    total: pages,
                                    bad_rows: 0,
                                })
                                .await;
                        }
                        let mut r = if stop_after == pages {
                            FaxResult {
                                success: true,
                                hangup_cause: "NORMAL_CLEARING".into(),
                                sip_code: 200,
                                fax_result_text: "OK".into(),
                                ..Default::default()
                            }
                        } else {
                            answered(ended(
                                "NORMAL_CLEARING",
                                200,
                                49,
                                "The call dropped prematurely",
                            ))
                        };
                        r.transferred_pages = stop_after;
                        r.total_pages = pages;
                        r.transfer_rate = rate;
                        r.ecm_used = ecm;
                        r.remote_station_id = "SCRIPT".into();
                        r
                    }
                };
                let _ = tx.send(FaxEvent::Finished(result)).await;
            };
            // Only a hangup request ends the call early; handles all dropped do not.
            let hangup = async {
                match hang_rx.recv().await {
                    Some(cause) => cause,
                    None => std::future::pending().await,
                }
            };
            let cause = tokio::select! {
                _ = play => None,
                cause = hangup => Some(cause),
            };
            if let Some(cause) = cause {
                if let Ok(mut h) = hangups.lock() {
                    h.push(HungUp {
                        call_id,
                        to,
                        cause: cause.clone(),
                        pages: received.load(std::sync::atomic::Ordering::Relaxed),
                    });
                }
                let _ = tx
                    .send(FaxEvent::Finished(ended(&cause, 200, 0, "hung up")))
                    .await;
            }
        });
        Ok(FaxCall {
            call_id: fax.call_id.clone(),
            events: rx,
            hangup: HangupHandle(hang_tx),
        })
    }
}

fn unreachable_refuse() -> FaxResult {
    ended("CALL_REJECTED", 503, 0, "refused")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::TxOptions;

    fn fax(to: &str, doc: &std::path::Path) -> OutboundFax {
        OutboundFax {
            job_id: "j".into(),
            call_id: "c".into(),
            to: to.into(),
            from_number: "+1".into(),
            from_name: "f".into(),
            fax_identity_number: "+1".into(),
            fax_identity_name: "f".into(),
            document: doc.to_path_buf(),
            document_url: None,
            options: TxOptions::default(),
        }
    }

    async fn last(mut call: FaxCall) -> (Vec<FaxEvent>, FaxResult) {
        let mut seen = vec![];
        while let Some(e) = call.events.recv().await {
            if let FaxEvent::Finished(r) = e {
                return (seen, r);
            }
            seen.push(e);
        }
        panic!("no Finished event");
    }

    #[tokio::test]
    async fn scripts_follow_the_virtual_pstn_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let doc = dir.path().join("d.tiff");
        std::fs::write(&doc, crate::outbound::docs::blank_tiff(3)).unwrap();
        let gw = ScriptGateway::new(Duration::ZERO, true);
        let (ev, r) = last(gw.originate(fax("+14155550100", &doc)).await.unwrap()).await;
        assert!(r.success);
        assert_eq!((r.transferred_pages, r.total_pages), (3, 3));
        assert_eq!(
            ev.iter()
                .filter(|e| matches!(e, FaxEvent::Page { .. }))
                .count(),
            3
        );
        let (_, r) = last(gw.originate(fax("+15550001000", &doc)).await.unwrap()).await;
        assert_eq!((r.hangup_cause.as_str(), r.sip_code), ("USER_BUSY", 486));
        let (_, r) = last(gw.originate(fax("+15550003000", &doc)).await.unwrap()).await;
        assert_eq!((r.fax_result_code, r.transferred_pages), (49, 1));
        assert!(gw.originate(fax("+15550006000", &doc)).await.is_err());
        let call = gw.originate(fax("+15550005000", &doc)).await.unwrap();
        call.hangup.hangup("JOB_TIMEOUT");
        let (_, r) = last(call).await;
        assert_eq!(r.hangup_cause, "JOB_TIMEOUT");
        gw.script("+14155550100", Script::Busy);
        let (_, r) = last(gw.originate(fax("+14155550100", &doc)).await.unwrap()).await;
        assert!(!r.success);
        assert_eq!(gw.originated().len(), 5);
    }
}
