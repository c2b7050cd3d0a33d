//! The header sets of the stand-in's events, taken from frames a real FreeSWITCH 1.10.12
//! wrote (`tests/fixtures/esl/*.jsonl` of the faxd crate): each event the stand-in writes
//! has the same header names in the same order as the captured event of its kind, with the
//! call's own values. A template is split into three runs: the head (event and channel
//! headers), the channel variables (`variable_*`) and the tail (the event's own headers:
//! `fax-*`, `Application*`, ...).

use std::collections::HashMap;
use std::sync::OnceLock;

use faxd::gateway::esl::urlenc;

const CAPTURE_1: &str = include_str!("../../tests/fixtures/esl/freeswitch-1.10.12-capture.jsonl");
const CAPTURE_2: &str = include_str!("../../tests/fixtures/esl/freeswitch-1.10.12-capture-2.jsonl");
/// The outbound-mode rxfax sessions (sofia and loopback legs, faxd's own socket).
const CAPTURE_3: &str = include_str!("../../tests/fixtures/esl/freeswitch-1.10.12-capture-3.jsonl");

/// Channel variables the captured calls got from their `originate {…}` block: in an event
/// they are replaced, at the position of the first one, by the variables of the call's own
/// `{…}` block.
const CAPTURED_ORIGINATE_VARS: &[&str] = &[
    "origination_uuid",
    "fax_ident",
    "fax_header",
    "fax_verbose",
    "origination_caller_id_number",
];

/// Captured variables that belong to the captured channel (its loopback pairing, its SIP
/// dialog, its last application): an event carries them only when the stand-in's channel
/// set them itself.
fn leg_specific(name: &str) -> bool {
    name.starts_with("sip_")
        || name.starts_with("rtp_")
        || matches!(
            name,
            "other_loopback_leg_uuid"
                | "loopback_leg"
                | "pre_transfer_caller_id_number"
                | "channel_cid_flipped"
                | "is_loopback"
                | "socket_host"
                | "current_application"
                | "current_application_data"
                | "current_application_response"
                | "last_app"
                | "last_arg"
                | "caller_id"
                | "endpoint_disposition"
                | "local_media_ip"
                | "local_media_port"
                | "advertised_media_ip"
                | "sofia_profile_name"
                | "sofia_profile_url"
                | "recovery_profile_name"
                | "current_loop"
                | "total_loops"
                | "answer_stamp"
        )
}

/// The kinds of events the stand-in writes, each with the captured frame it copies
/// (`(file, line)`, 1-based). Both legs copy the sofia session of capture 3 (lines 131–187:
/// an originate through sofia to a number whose inbound call runs faxd's socket): the A leg
/// is a sofia outbound channel, the B leg a sofia inbound one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A leg (txfax) answered.
    AnswerA,
    BackgroundJob,
    TxNegotiate,
    TxPage,
    TxResult,
    /// CHANNEL_EXECUTE_COMPLETE of the A leg's txfax.
    ExecuteCompleteA,
    /// CHANNEL_HANGUP_COMPLETE of an answered A leg.
    HangupCompleteA,
    /// CHANNEL_HANGUP_COMPLETE of an A leg that was never answered (SIP leg refused).
    HangupCompleteUnanswered,
    /// The bare CHANNEL_DATA of an outbound socket's `connect`.
    ChannelData,
    /// The socket's channel parks when it runs its first queued message.
    Park,
    /// B leg (the socket's channel) application start / end.
    ExecuteB,
    ExecuteCompleteB,
    /// CHANNEL_EXECUTE_COMPLETE of the B leg's rxfax (carries the fax variables).
    ExecuteCompleteRx,
    AnswerB,
    RxNegotiate,
    RxPage,
    RxResult,
    HangupB,
    Unpark,
    /// CHANNEL_EXECUTE_COMPLETE of the `socket` application itself, at hang-up.
    ExecuteCompleteSocket,
    /// CHANNEL_STATE to CS_HANGUP, then to CS_REPORTING.
    StateHangup,
    StateReporting,
    HangupCompleteB,
}

impl Kind {
    fn source(self) -> (u8, usize) {
        match self {
            Kind::AnswerA => (3, 162),
            Kind::BackgroundJob => (3, 163),
            Kind::TxNegotiate => (3, 167),
            Kind::TxPage => (3, 170),
            Kind::TxResult => (3, 173),
            Kind::ExecuteCompleteA => (1, 33),
            Kind::HangupCompleteA => (3, 174),
            Kind::HangupCompleteUnanswered => (2, 177),
            Kind::ChannelData => (3, 134),
            Kind::Park => (3, 153),
            Kind::ExecuteB => (3, 154),
            Kind::ExecuteCompleteB => (3, 155),
            Kind::AnswerB => (3, 164),
            Kind::ExecuteCompleteRx => (3, 175),
            Kind::RxNegotiate => (3, 168),
            Kind::RxPage => (3, 169),
            Kind::RxResult => (3, 171),
            Kind::HangupB => (3, 177),
            Kind::Unpark => (3, 179),
            Kind::ExecuteCompleteSocket => (3, 180),
            Kind::StateHangup => (3, 181),
            Kind::StateReporting => (3, 182),
            Kind::HangupCompleteB => (3, 183),
        }
    }

    const ALL: [Kind; 23] = [
        Kind::AnswerA,
        Kind::BackgroundJob,
        Kind::TxNegotiate,
        Kind::TxPage,
        Kind::TxResult,
        Kind::ExecuteCompleteA,
        Kind::HangupCompleteA,
        Kind::HangupCompleteUnanswered,
        Kind::ChannelData,
        Kind::Park,
        Kind::ExecuteB,
        Kind::ExecuteCompleteB,
        Kind::ExecuteCompleteRx,
        Kind::AnswerB,
        Kind::RxNegotiate,
        Kind::RxPage,
        Kind::RxResult,
        Kind::HangupB,
        Kind::Unpark,
        Kind::ExecuteCompleteSocket,
        Kind::StateHangup,
        Kind::StateReporting,
        Kind::HangupCompleteB,
    ];

    /// Events of a channel that has hung up: they keep the captured call state.
    pub fn after_hangup(self) -> bool {
        matches!(
            self,
            Kind::HangupCompleteA
                | Kind::HangupCompleteUnanswered
                | Kind::StateHangup
                | Kind::StateReporting
                | Kind::HangupCompleteB
        )
    }
}

/// One captured event, decoded.
#[derive(Clone, Debug, Default)]
pub struct Template {
    pub head: Vec<(String, String)>,
    /// Variable names without the `variable_` prefix, with the captured values.
    pub vars: Vec<(String, String)>,
    pub tail: Vec<(String, String)>,
}

/// The raw frames of a capture file (`data` of each line), in order.
pub fn capture_frames(file: u8) -> Vec<String> {
    let text = match file {
        1 => CAPTURE_1,
        2 => CAPTURE_2,
        _ => CAPTURE_3,
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("data").and_then(|d| d.as_str()).map(str::to_string))
        .collect()
}

/// The headers of a plain event payload (URL-decoded), up to its body.
pub fn payload_headers(payload: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in payload.split('\n') {
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name == "Content-Length" {
            break;
        }
        out.push((
            name.to_string(),
            urlenc::decode(value.trim_start_matches(' ')),
        ));
    }
    out
}

/// The event payload of a captured frame: after the envelope, or the whole frame when it has
/// none (the bare CHANNEL_DATA).
pub fn frame_payload(frame: &str) -> &str {
    if frame.starts_with("Content-Length:") || frame.starts_with("Content-Type:") {
        frame.split_once("\n\n").map(|(_, p)| p).unwrap_or("")
    } else {
        frame
    }
}

fn parse(frame: &str) -> Template {
    let headers = payload_headers(frame_payload(frame));
    let first = headers.iter().position(|(n, _)| n.starts_with("variable_"));
    let last = headers
        .iter()
        .rposition(|(n, _)| n.starts_with("variable_"));
    let mut t = Template::default();
    match (first, last) {
        (Some(f), Some(l)) => {
            t.head = headers[..f].to_vec();
            t.vars = headers[f..=l]
                .iter()
                .map(|(n, v)| (n["variable_".len()..].to_string(), v.clone()))
                .collect();
            t.tail = headers[l + 1..].to_vec();
        }
        _ => t.head = headers,
    }
    // The CHANNEL_DATA reply's four appended headers are written by the socket itself.
    t.tail.retain(|(n, _)| {
        !matches!(
            n.as_str(),
            "Content-Type" | "Reply-Text" | "Socket-Mode" | "Control"
        )
    });
    t
}

/// The template of `kind`.
pub fn get(kind: Kind) -> &'static Template {
    static ALL: OnceLock<HashMap<Kind, Template>> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        let files = [capture_frames(1), capture_frames(2), capture_frames(3)];
        Kind::ALL
            .iter()
            .map(|&k| {
                let (file, line) = k.source();
                let frame = files[(file - 1) as usize]
                    .get(line - 1)
                    .map(String::as_str)
                    .unwrap_or("");
                (k, parse(frame))
            })
            .collect()
    });
    static EMPTY: Template = Template {
        head: Vec::new(),
        vars: Vec::new(),
        tail: Vec::new(),
    };
    all.get(&kind).unwrap_or(&EMPTY)
}

/// What fills a template: values by header name for the head and tail, the channel's
/// variables, and the variables of its `originate {…}` block.
pub struct Fill<'a> {
    /// Header values for this event (take precedence over `channel`).
    pub event: &'a [(&'a str, String)],
    /// The channel's header values (`Unique-ID`, `Caller-*`, ...).
    pub channel: &'a HashMap<String, String>,
    /// The channel's variables (name without prefix), in the order they were set.
    pub vars: &'a [(String, String)],
    /// The variables of the call's `{…}` block, in order.
    pub originate: &'a [(String, String)],
}

/// The headers of an event of `kind` filled with `fill`. Empty values are left out, as
/// FreeSWITCH never writes a header without a value; a tail header without a value in
/// `fill.event` is left out too; a channel variable the template has but the channel has not
/// keeps the captured value unless it is a `fax_*` one (those exist only once mod_spandsp
/// set them).
pub fn render(kind: Kind, fill: &Fill<'_>) -> Vec<(String, String)> {
    let t = get(kind);
    let event = |name: &str| {
        fill.event
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    };
    let mut out: Vec<(String, String)> = Vec::new();
    // `Hangup-Cause` is there once the channel has one, right after `Answer-State` (and
    // first of all in HANGUP_COMPLETE), whatever the captured channel had.
    let cause = event("Hangup-Cause").or_else(|| fill.channel.get("Hangup-Cause").cloned());
    let has_cause = t.head.iter().any(|(n, _)| n == "Hangup-Cause");
    for (name, value) in &t.head {
        if name == "Hangup-Cause" {
            out.push((name.clone(), cause.clone().unwrap_or_default()));
            continue;
        }
        let v = event(name)
            .or_else(|| fill.channel.get(name).cloned())
            .unwrap_or_else(|| value.clone());
        out.push((name.clone(), v));
        if name == "Answer-State"
            && !has_cause
            && let Some(c) = &cause
        {
            out.push(("Hangup-Cause".into(), c.clone()));
        }
    }
    let leg_var = |name: &str| {
        fill.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut originate_done = false;
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in &t.vars {
        seen.push(name);
        if CAPTURED_ORIGINATE_VARS.contains(&name.as_str())
            && !fill.vars.iter().any(|(n, _)| n == name)
        {
            if !originate_done {
                originate_done = true;
                for (n, v) in fill.originate {
                    out.push((format!("variable_{n}"), v.clone()));
                }
            }
            continue;
        }
        if fill.originate.iter().any(|(n, _)| n == name) {
            continue;
        }
        let v = match leg_var(name) {
            Some(v) => v,
            None if name.starts_with("fax_") || leg_specific(name) => continue,
            None => value.clone(),
        };
        out.push((format!("variable_{name}"), v));
    }
    if !originate_done && !t.vars.is_empty() {
        for (n, v) in fill.originate {
            out.push((format!("variable_{n}"), v.clone()));
        }
    }
    if !t.vars.is_empty() {
        // Variables the channel got that the captured channel did not have (`set` by the
        // controlling socket, ...), in the order they were set.
        for (n, v) in fill.vars {
            if !seen.contains(&n.as_str()) && !fill.originate.iter().any(|(o, _)| o == n) {
                out.push((format!("variable_{n}"), v.clone()));
            }
        }
    }
    // The captured EXECUTE of `answer` had no argument: every application event takes the
    // header order of the captured rxfax EXECUTE_COMPLETE (`Application`, `-Data`,
    // `-Response`, `-UUID`).
    let tail = match kind {
        Kind::ExecuteB | Kind::ExecuteCompleteB => &get(Kind::ExecuteCompleteRx).tail,
        _ => &t.tail,
    };
    for (name, _) in tail {
        if let Some(v) = event(name) {
            out.push((name.clone(), v));
        }
    }
    out.retain(|(_, v)| !v.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_is_found() {
        for k in Kind::ALL {
            let t = get(k);
            assert!(!t.head.is_empty(), "{k:?}");
            assert!(t.head.iter().any(|(n, _)| n == "Event-Name"), "{k:?}");
        }
        assert_eq!(get(Kind::TxResult).head[0].0, "Event-Subclass");
        assert!(get(Kind::ChannelData).tail.is_empty());
    }
}
