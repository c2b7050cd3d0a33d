//! What one fax call looks like from FreeSWITCH's events, as pure state machines: events in,
//! faxd's [`FaxEvent`]s out. [`OutboundCall`] follows a `bgapi originate … &txfax(…)` (the A
//! leg, matched on `Unique-ID` = the `origination_uuid` faxd chose, and the originate's
//! BACKGROUND_JOB); [`InboundCall`] follows the channel an outbound-mode socket controls
//! while `rxfax` runs. Orders are the ones a real FreeSWITCH 1.10.12 showed (spec §3.7):
//!
//! - answered: CHANNEL_ANSWER, BACKGROUND_JOB `+OK <uuid>`, the spandsp negotiation and page
//!   events, `spandsp::txfaxresult`, CHANNEL_EXECUTE_COMPLETE (txfax), CHANNEL_HANGUP_COMPLETE;
//! - refused (busy, rejected): CHANNEL_HANGUP_COMPLETE (with the SIP status) and then the
//!   BACKGROUND_JOB `-ERR <CAUSE>`; a call that never got a channel (no route, gateway down)
//!   has only the BACKGROUND_JOB;
//! - a missing document: no txfaxresult at all, only EXECUTE_COMPLETE's
//!   `Application-Response`, then the hang-up.
//!
//! Every path ends in exactly one [`FaxEvent::Finished`], at the first event that settles
//! the call — never by waiting for a timeout.

use super::super::esl::{ApiOutcome, Event, FaxDirection, SpandspEvent, spandsp};
use crate::gateway::{FaxEvent, FaxResult};

/// `hangup_cause` of an attempt whose FreeSWITCH node dropped its event socket mid call: the
/// call's end is unknown to faxd, so the attempt ends (and is retried) rather than waiting.
pub const NODE_LOST: &str = "MEDIA_ENGINE_LOST";

/// The SIP status FreeSWITCH answers for a hangup cause (its Q.850 → SIP table), for calls
/// whose events carry no `sip_term_status` (loopback endpoints, a BACKGROUND_JOB alone).
pub fn sip_code_of_cause(cause: &str) -> u16 {
    match cause {
        "NORMAL_CLEARING" | "SUCCESS" => 200,
        "UNALLOCATED_NUMBER" | "NO_ROUTE_TRANSIT_NET" | "NO_ROUTE_DESTINATION" => 404,
        "USER_BUSY" => 486,
        "NO_USER_RESPONSE" => 408,
        "NO_ANSWER" | "SUBSCRIBER_ABSENT" => 480,
        "CALL_REJECTED" => 603,
        "NUMBER_CHANGED" | "REDIRECTION_TO_NEW_DESTINATION" => 410,
        "DESTINATION_OUT_OF_ORDER" | "EXCHANGE_ROUTING_ERROR" => 502,
        "INVALID_NUMBER_FORMAT" => 484,
        "FACILITY_REJECTED" => 501,
        "NORMAL_UNSPECIFIED" => 480,
        "NORMAL_CIRCUIT_CONGESTION"
        | "SWITCH_CONGESTION"
        | "NETWORK_OUT_OF_ORDER"
        | "NORMAL_TEMPORARY_FAILURE"
        | "GATEWAY_DOWN"
        | "MEDIA_ENGINE_LOST" => 503,
        "RECOVERY_ON_TIMER_EXPIRE" => 504,
        "BEARERCAPABILITY_NOTAVAIL" | "INCOMPATIBLE_DESTINATION" => 488,
        "ORIGINATOR_CANCEL" => 487,
        "MANDATORY_IE_MISSING" => 400,
        _ => 500,
    }
}

/// A failed call with no fax result: the cause, its SIP code and a text.
fn failure(cause: &str, sip_code: u16, text: &str) -> FaxResult {
    FaxResult {
        success: false,
        hangup_cause: cause.to_string(),
        sip_code,
        fax_result_text: text.to_string(),
        ..FaxResult::default()
    }
}

/// What both directions track of their fax channel: the answer, mod_spandsp's result (kept
/// until the hang-up gives the call's cause and SIP status) and the application's own
/// complaint when it ended without a fax.
#[derive(Debug)]
struct FaxLeg {
    /// `txfax` or `rxfax`.
    app: &'static str,
    direction: FaxDirection,
    answered: bool,
    result: Option<FaxResult>,
    app_error: Option<String>,
    finished: bool,
}

impl FaxLeg {
    fn new(app: &'static str, direction: FaxDirection) -> Self {
        Self {
            app,
            direction,
            answered: false,
            result: None,
            app_error: None,
            finished: false,
        }
    }

    fn answer(&mut self, out: &mut Vec<FaxEvent>) {
        if !self.answered {
            self.answered = true;
            out.push(FaxEvent::Answered);
        }
    }

    fn finish(&mut self, r: FaxResult, out: &mut Vec<FaxEvent>) {
        self.finished = true;
        out.push(FaxEvent::Finished(r));
    }

    /// Reads an event of the fax channel (already matched to it).
    fn on_channel_event(&mut self, e: &Event, out: &mut Vec<FaxEvent>, no_fax: &str) {
        match e.name() {
            Some("CHANNEL_ANSWER") => self.answer(out),
            Some("CUSTOM") => match SpandspEvent::from_event(e) {
                Some(SpandspEvent::Finished { direction, result })
                    if direction == self.direction =>
                {
                    self.result = Some(result)
                }
                Some(ev @ (SpandspEvent::Negotiated(_) | SpandspEvent::Page(_))) => {
                    // Fax tones mean the call was answered, whatever came first.
                    self.answer(out);
                    out.push(ev.to_fax_event());
                }
                _ => {}
            },
            Some("CHANNEL_EXECUTE_COMPLETE") => {
                if let Some((app, response)) = spandsp::application_response(e)
                    && app == self.app
                    && self.result.is_none()
                    && spandsp::result_from_variables(e).is_none()
                    && !response.is_empty()
                    && response != "_none_"
                {
                    self.app_error = Some(response.to_string());
                }
            }
            Some("CHANNEL_HANGUP_COMPLETE") => {
                let r = self.final_result(e, no_fax);
                self.finish(r, out);
            }
            _ => {}
        }
    }

    /// The call's result at its CHANNEL_HANGUP_COMPLETE; `no_fax` names an answered call
    /// that ended before any fax.
    fn final_result(&mut self, e: &Event, no_fax: &str) -> FaxResult {
        let cause = e
            .header("Hangup-Cause")
            .or_else(|| e.variable("hangup_cause"))
            .unwrap_or("NORMAL_CLEARING")
            .to_string();
        let answered = self.answered
            || e.header("Caller-Channel-Answered-Time")
                .and_then(|t| t.parse::<u64>().ok())
                .is_some_and(|t| t > 0);
        let sip_code = e
            .variable("sip_term_status")
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(if answered {
                200
            } else {
                sip_code_of_cause(&cause)
            });
        let mut r = match self
            .result
            .take()
            .or_else(|| spandsp::result_from_variables(e))
        {
            Some(r) => r,
            None => {
                let text = match self.app_error.take() {
                    Some(text) => text,
                    None if answered => no_fax.to_string(),
                    None => format!("the call was not answered: {cause}"),
                };
                failure(&cause, sip_code, &text)
            }
        };
        r.hangup_cause = cause;
        r.sip_code = sip_code;
        r
    }

    /// The events stopped (link or socket lost) before the hang-up: the fax's own result if
    /// it was over, else `unknown`.
    fn lost(&mut self, unknown: FaxResult) -> Vec<FaxEvent> {
        let mut out = Vec::new();
        if !self.finished {
            let r = self.result.take().unwrap_or(unknown);
            self.finish(r, &mut out);
        }
        out
    }
}

/// An outbound fax call (`txfax` on the A leg).
#[derive(Debug)]
pub struct OutboundCall {
    uuid: String,
    job_uuid: String,
    leg: FaxLeg,
}

impl OutboundCall {
    /// A call whose A leg is `uuid` (`origination_uuid`), placed by the `bgapi` `job_uuid`.
    pub fn new(uuid: &str, job_uuid: &str) -> Self {
        Self {
            uuid: uuid.to_string(),
            job_uuid: job_uuid.to_string(),
            leg: FaxLeg::new("txfax", FaxDirection::Tx),
        }
    }

    /// Whether the call's last event ([`FaxEvent::Finished`]) was given.
    pub fn finished(&self) -> bool {
        self.leg.finished
    }

    /// Whether an event belongs to this call (its A leg or its originate job).
    pub fn wants(&self, e: &Event) -> bool {
        match e.name() {
            Some("BACKGROUND_JOB") => e.job_uuid() == Some(self.job_uuid.as_str()),
            _ => e.unique_id() == Some(self.uuid.as_str()),
        }
    }

    /// Reads one event; returns what faxd learns from it.
    pub fn on_event(&mut self, e: &Event) -> Vec<FaxEvent> {
        let mut out = Vec::new();
        if self.leg.finished || !self.wants(e) {
            return out;
        }
        if e.name() != Some("BACKGROUND_JOB") {
            self.leg
                .on_channel_event(e, &mut out, "the call ended before the fax started");
            return out;
        }
        match e.job_outcome() {
            // `+OK <uuid>`: the far end answered (CHANNEL_ANSWER may come before it).
            ApiOutcome::Ok(_) => self.leg.answer(&mut out),
            // Nothing on the channel settled it first: the originate's answer does.
            ApiOutcome::Err(cause) | ApiOutcome::Text(cause) => {
                let cause = match cause.trim() {
                    "" => "NORMAL_TEMPORARY_FAILURE",
                    c => c,
                };
                let r = failure(
                    cause,
                    sip_code_of_cause(cause),
                    &format!("originate failed: {cause}"),
                );
                self.leg.finish(r, &mut out);
            }
        }
        out
    }

    /// The event socket to the call's node was lost: the call ends now for faxd.
    pub fn on_link_lost(&mut self, why: &str) -> Vec<FaxEvent> {
        self.leg.lost(failure(NODE_LOST, 503, why))
    }
}

/// An inbound fax call (`rxfax` on the channel an outbound-mode socket controls).
#[derive(Debug)]
pub struct InboundCall {
    uuid: String,
    leg: FaxLeg,
}

impl InboundCall {
    pub fn new(uuid: &str) -> Self {
        Self {
            uuid: uuid.to_string(),
            leg: FaxLeg::new("rxfax", FaxDirection::Rx),
        }
    }

    pub fn finished(&self) -> bool {
        self.leg.finished
    }

    /// Reads one event of the channel; returns what faxd learns from it.
    pub fn on_event(&mut self, e: &Event) -> Vec<FaxEvent> {
        let mut out = Vec::new();
        if !self.leg.finished && e.unique_id() == Some(self.uuid.as_str()) {
            self.leg
                .on_channel_event(e, &mut out, "the call ended before a fax was received");
        }
        out
    }

    /// The socket closed (the channel is gone, or FreeSWITCH died) before the hang-up event.
    pub fn on_closed(&mut self, why: &str) -> Vec<FaxEvent> {
        let unknown = if self.leg.answered {
            failure(NODE_LOST, 503, why)
        } else {
            failure("ORIGINATOR_CANCEL", 487, why)
        };
        self.leg.lost(unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(lines: &str) -> Event {
        Event::from_plain(lines.as_bytes()).expect("event")
    }

    #[test]
    fn busy_ends_at_the_hangup_with_the_sip_status() {
        let mut c = OutboundCall::new("u1", "j1");
        let out = c.on_event(&ev(
            "Event-Name: CHANNEL_HANGUP_COMPLETE\nUnique-ID: u1\nHangup-Cause: USER_BUSY\nvariable_sip_term_status: 486\n\n",
        ));
        let [FaxEvent::Finished(r)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!((r.hangup_cause.as_str(), r.sip_code), ("USER_BUSY", 486));
        assert!(!r.success);
        // The BACKGROUND_JOB that follows changes nothing.
        assert!(
            c.on_event(&ev(
                "Event-Name: BACKGROUND_JOB\nJob-UUID: j1\nContent-Length: 15\n\n-ERR USER_BUSY\n"
            ))
            .is_empty()
        );
    }

    #[test]
    fn an_originate_error_alone_ends_the_call() {
        let mut c = OutboundCall::new("u1", "j1");
        let out = c.on_event(&ev(
            "Event-Name: BACKGROUND_JOB\nJob-UUID: j1\nContent-Length: 26\n\n-ERR NO_ROUTE_DESTINATION\n",
        ));
        let [FaxEvent::Finished(r)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(r.hangup_cause, "NO_ROUTE_DESTINATION");
        assert_eq!(r.sip_code, 404);
        // Another job's answer is not this call's.
        let mut c = OutboundCall::new("u1", "j1");
        assert!(
            c.on_event(&ev(
                "Event-Name: BACKGROUND_JOB\nJob-UUID: j2\nContent-Length: 15\n\n-ERR USER_BUSY\n"
            ))
            .is_empty()
        );
    }

    #[test]
    fn a_missing_file_ends_with_the_application_response() {
        let mut c = OutboundCall::new("u1", "j1");
        assert_eq!(
            c.on_event(&ev("Event-Name: CHANNEL_ANSWER\nUnique-ID: u1\n\n")),
            vec![FaxEvent::Answered]
        );
        c.on_event(&ev("Event-Name: CHANNEL_EXECUTE_COMPLETE\nUnique-ID: u1\nApplication: txfax\nApplication-Response: Cannot%20send%20non-existant%20fax%20file\n\n"));
        let out = c.on_event(&ev(
            "Event-Name: CHANNEL_HANGUP_COMPLETE\nUnique-ID: u1\nHangup-Cause: NORMAL_CLEARING\n\n",
        ));
        let [FaxEvent::Finished(r)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(r.fax_result_text, "Cannot send non-existant fax file");
        assert_eq!(r.sip_code, 200);
        assert!(!r.success);
    }

    #[test]
    fn a_lost_link_ends_the_call_once() {
        let mut c = OutboundCall::new("u1", "j1");
        c.on_event(&ev("Event-Name: CHANNEL_ANSWER\nUnique-ID: u1\n\n"));
        let out = c.on_link_lost("node gone");
        let [FaxEvent::Finished(r)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(r.hangup_cause, NODE_LOST);
        assert!(c.on_link_lost("again").is_empty());
        assert!(
            c.on_event(&ev(
                "Event-Name: CHANNEL_HANGUP_COMPLETE\nUnique-ID: u1\n\n"
            ))
            .is_empty()
        );
    }
}
