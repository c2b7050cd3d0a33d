//! mod_spandsp's reports (spec §3): the `spandsp::{tx,rx}fax{negociate,page,}result` CUSTOM
//! events read as faxd's [`FaxEvent`]s, and a call's final [`FaxResult`] read from the
//! `fax_*` channel variables that every later event of the channel carries
//! (CHANNEL_EXECUTE_COMPLETE of txfax/rxfax, CHANNEL_HANGUP_COMPLETE).
//!
//! Values come from the event's own dash-named headers (`fax-transfer-rate`) and, where an
//! event lacks one, from the channel variable (`variable_fax_transfer_rate`). A number that
//! is absent or not a number reads as 0.

use super::message::Event;
use crate::gateway::{FaxEvent, FaxResult};

/// Which application reported: `txfax` (sending) or `rxfax` (receiving).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaxDirection {
    Tx,
    Rx,
}

/// Phase B: the T.30 session is negotiated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiation {
    pub direction: FaxDirection,
    /// Modem rate in bit/s.
    pub transfer_rate: u32,
    pub ecm: bool,
    /// `off`, `requested`, `negotiated` or `refused`.
    pub t38_status: String,
    pub local_station_id: String,
    pub remote_station_id: String,
    /// txfax only, and 0 at this point with spandsp 3 (the file is not open yet).
    pub total_pages: Option<u32>,
}

/// Phase D: one page went through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageResult {
    pub direction: FaxDirection,
    /// Pages transferred so far (this page's number).
    pub page: u32,
    /// txfax only: pages in the file.
    pub total_pages: Option<u32>,
    /// Line resolution in pixels per metre, e.g. `8040x7700`.
    pub image_resolution: String,
    /// `<width>x<length>` of the page on the line.
    pub image_pixel_size: String,
    /// Compressed bytes of the page on the line.
    pub image_size: u64,
    pub bad_rows: u32,
    pub longest_bad_row_run: u32,
    /// e.g. `T.4 2-D`, `T.6`, `T.85(L0)`.
    pub encoding_name: String,
}

/// A mod_spandsp event.
#[derive(Clone, Debug, PartialEq)]
pub enum SpandspEvent {
    Negotiated(Negotiation),
    Page(PageResult),
    /// Phase E (`spandsp::txfaxresult` / `rxfaxresult`).
    Finished {
        direction: FaxDirection,
        result: FaxResult,
    },
}

impl SpandspEvent {
    /// Reads a CUSTOM `spandsp::*` event; `None` for any other event.
    pub fn from_event(event: &Event) -> Option<SpandspEvent> {
        let sub = event.subclass()?.strip_prefix("spandsp::")?;
        let (direction, kind) = if let Some(kind) = sub.strip_prefix("tx") {
            (FaxDirection::Tx, kind)
        } else {
            (FaxDirection::Rx, sub.strip_prefix("rx")?)
        };
        let v = Values(event);
        Some(match kind {
            "faxnegociateresult" => SpandspEvent::Negotiated(Negotiation {
                direction,
                transfer_rate: v.number("transfer_rate"),
                ecm: v.text("ecm_used") == "on",
                t38_status: v.text("t38_status").to_string(),
                local_station_id: v.text("local_station_id").to_string(),
                remote_station_id: v.text("remote_station_id").to_string(),
                total_pages: v.optional_number("document_total_pages", direction),
            }),
            "faxpageresult" => SpandspEvent::Page(PageResult {
                direction,
                page: v.number("document_transferred_pages"),
                total_pages: v.optional_number("document_total_pages", direction),
                image_resolution: v.text("image_resolution").to_string(),
                image_pixel_size: v.text("image_pixel_size").to_string(),
                image_size: v.number("image_size"),
                bad_rows: v.number("bad_rows"),
                longest_bad_row_run: v.number("longest_bad_row_run"),
                encoding_name: v.text("encoding_name").to_string(),
            }),
            "faxresult" => SpandspEvent::Finished {
                direction,
                result: result_of(&v),
            },
            _ => return None,
        })
    }

    /// The same report as the engine-neutral [`FaxEvent`].
    pub fn to_fax_event(&self) -> FaxEvent {
        match self {
            SpandspEvent::Negotiated(n) => FaxEvent::Negotiated {
                transfer_rate: n.transfer_rate,
                ecm: n.ecm,
                remote_station_id: n.remote_station_id.clone(),
            },
            SpandspEvent::Page(p) => FaxEvent::Page {
                page: p.page,
                total: p.total_pages.unwrap_or(0),
                bad_rows: p.bad_rows,
            },
            SpandspEvent::Finished { result, .. } => FaxEvent::Finished(result.clone()),
        }
    }
}

/// The final result held in a channel's `fax_*` variables, from any event that carries
/// them; `None` when phase E never ran (`fax_success` unset: the application failed before
/// the fax started, e.g. a missing file, or the call was never answered).
pub fn result_from_variables(event: &Event) -> Option<FaxResult> {
    event.variable("fax_success")?;
    Some(result_of(&Values(event)))
}

/// Why an application ended, from its CHANNEL_EXECUTE_COMPLETE: `Application` and
/// `Application-Response` (e.g. `txfax`, `Cannot send non-existant fax file`).
pub fn application_response(event: &Event) -> Option<(&str, &str)> {
    if event.name() != Some("CHANNEL_EXECUTE_COMPLETE") {
        return None;
    }
    Some((
        event.header("Application")?,
        event.header("Application-Response").unwrap_or(""),
    ))
}

fn result_of(v: &Values<'_>) -> FaxResult {
    let event = v.0;
    let hangup_cause = event
        .header("Hangup-Cause")
        .or_else(|| event.variable("hangup_cause"))
        .unwrap_or("")
        .to_string();
    FaxResult {
        success: v.text("success") == "1",
        hangup_cause,
        sip_code: sip_code(event),
        fax_result_code: v.text("result_code").parse().unwrap_or(0),
        fax_result_text: v.text("result_text").to_string(),
        transferred_pages: v.number("document_transferred_pages"),
        total_pages: v.number("document_total_pages"),
        transfer_rate: v.number("transfer_rate"),
        ecm_used: v.text("ecm_used") == "on",
        t38_used: v.text("t38_status") == "negotiated",
        remote_station_id: v.text("remote_station_id").to_string(),
        local_station_id: v.text("local_station_id").to_string(),
        bad_rows: v.number("bad_rows"),
        longest_bad_row_run: v.number("longest_bad_row_run"),
        image_resolution: v.text("image_resolution").to_string(),
        received_file: None,
    }
}

/// The SIP status that ended the call (`sip_term_status`, set by sofia); for endpoints
/// without SIP (loopback) 200 once the channel was answered, else 0.
fn sip_code(event: &Event) -> u16 {
    if let Some(code) = event
        .variable("sip_term_status")
        .and_then(|s| s.parse().ok())
    {
        return code;
    }
    let answered = event
        .header("Caller-Channel-Answered-Time")
        .and_then(|t| t.parse::<u64>().ok())
        .is_some_and(|t| t > 0);
    if answered { 200 } else { 0 }
}

/// Reads `fax-<name>` (dashes) or else `variable_fax_<name>` from an event.
struct Values<'a>(&'a Event);

impl Values<'_> {
    fn text(&self, name: &str) -> &str {
        let dashed = format!("fax-{}", name.replace('_', "-"));
        self.0
            .header(&dashed)
            .or_else(|| self.0.variable(&format!("fax_{name}")))
            .unwrap_or("")
    }

    fn number<T: std::str::FromStr + Default>(&self, name: &str) -> T {
        self.text(name).trim().parse().unwrap_or_default()
    }

    /// A count reported by txfax only.
    fn optional_number(&self, name: &str, direction: FaxDirection) -> Option<u32> {
        if direction == FaxDirection::Rx {
            return None;
        }
        self.text(name).trim().parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(lines: &str) -> Event {
        match Event::from_plain(lines.as_bytes()) {
            Ok(e) => e,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_missing_file_ends_txfax_without_a_result() {
        // Spec §3.7: only the EXECUTE_COMPLETE tells, in `Application-Response`.
        let e = plain(
            "Event-Name: CHANNEL_EXECUTE_COMPLETE\nUnique-ID: u1\nApplication: txfax\nApplication-Response: Cannot%20send%20non-existant%20fax%20file\nvariable_fax_filename: /nonexistent.tif\n\n",
        );
        assert_eq!(
            application_response(&e),
            Some(("txfax", "Cannot send non-existant fax file"))
        );
        assert_eq!(result_from_variables(&e), None);
        assert_eq!(SpandspEvent::from_event(&e), None);
    }

    #[test]
    fn a_call_dropped_mid_fax_is_a_failed_result_with_code_49() {
        let e = plain(
            "Event-Subclass: spandsp%3A%3Atxfaxresult\nEvent-Name: CUSTOM\nUnique-ID: u1\nCaller-Channel-Answered-Time: 1795695716827958\nHangup-Cause: NORMAL_CLEARING\nvariable_fax_success: 0\nfax-success: 0\nfax-result-code: 49\nfax-result-text: The%20call%20dropped%20prematurely\nfax-document-transferred-pages: 1\nfax-document-total-pages: 3\nfax-t38-status: negotiated\n\n",
        );
        let Some(SpandspEvent::Finished { direction, result }) = SpandspEvent::from_event(&e)
        else {
            panic!("not a result")
        };
        assert_eq!(direction, FaxDirection::Tx);
        assert!(!result.success);
        assert_eq!(result.fax_result_code, 49);
        assert_eq!(result.fax_result_text, "The call dropped prematurely");
        assert_eq!((result.transferred_pages, result.total_pages), (1, 3));
        assert!(result.t38_used);
        assert_eq!(result.sip_code, 200);
    }

    #[test]
    fn other_subclasses_are_not_fax_events() {
        for sub in [
            "spandsp%3A%3Atxfaxsomething",
            "other%3A%3Arxfaxresult",
            "spandsp%3A%3Afaxresult",
        ] {
            let e = plain(&format!("Event-Subclass: {sub}\nEvent-Name: CUSTOM\n\n"));
            assert_eq!(SpandspEvent::from_event(&e), None, "{sub}");
        }
    }
}
