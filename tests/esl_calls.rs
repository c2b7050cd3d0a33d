//! The FreeSWITCH engine's call tracker read the captured calls of a real FreeSWITCH 1.10.12
//! (`tests/fixtures/esl/`): every `bgapi originate … &txfax(…)` in the captures is followed
//! through the frames FreeSWITCH wrote after it, and must end exactly once, with what the
//! frames say (pages, cause, SIP status), at the event that settles it.

mod esl_captures;

use esl_captures::{FIRST, SECOND, capture};
use faxd::gateway::esl::{Decoder, Frame};
use faxd::gateway::freeswitch::call::OutboundCall;
use faxd::gateway::{FaxEvent, FaxResult};

/// A captured originate: its channel uuid, job uuid and what the tracker made of it.
struct Followed {
    dial: String,
    events: Vec<FaxEvent>,
}

fn between<'a>(s: &'a str, start: &str, ends: &[char]) -> Option<&'a str> {
    let rest = &s[s.find(start)? + start.len()..];
    let end = rest.find(ends).unwrap_or(rest.len());
    Some(&rest[..end])
}

fn follow(name: &str) -> Vec<Followed> {
    let frames = capture(name);
    let mut out = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        if !(f.client && f.data.starts_with("bgapi originate {") && f.data.contains("&txfax(")) {
            continue;
        }
        let uuid = between(&f.data, "origination_uuid=", &[',', '}']).expect("uuid");
        let job = between(&f.data, "Job-UUID: ", &['\n']).expect("job uuid");
        let dial = between(&f.data, "}", &[' '])
            .expect("dial string")
            .to_string();
        let mut tracker = OutboundCall::new(uuid, job);
        let mut decoder = Decoder::default();
        for later in frames[i + 1..].iter().filter(|f| !f.client) {
            decoder.feed(later.data.as_bytes());
        }
        let mut events = Vec::new();
        while let Some(raw) = decoder.next_frame().expect("frames") {
            if let Frame::Event(e) = Frame::parse(raw).expect("frame") {
                events.extend(tracker.on_event(&e));
            }
        }
        out.push(Followed { dial, events });
    }
    out
}

fn result(f: &Followed) -> &FaxResult {
    let finished: Vec<&FaxResult> = f
        .events
        .iter()
        .filter_map(|e| match e {
            FaxEvent::Finished(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 1, "{}: {:?}", f.dial, f.events);
    assert!(
        matches!(f.events.last(), Some(FaxEvent::Finished(_))),
        "{}: nothing after the end",
        f.dial
    );
    finished[0]
}

#[test]
fn every_captured_fax_call_ends_once_with_what_freeswitch_reported() {
    let calls: Vec<Followed> = [FIRST, SECOND].iter().flat_map(|n| follow(n)).collect();
    assert_eq!(calls.len(), 4, "captured txfax originates");
    let sent: Vec<&Followed> = calls
        .iter()
        .filter(|c| c.dial == "loopback/rxfax/default")
        .collect();
    assert_eq!(sent.len(), 2);
    for c in sent {
        let r = result(c);
        assert!(r.success, "{r:?}");
        assert!(
            r.transferred_pages > 0 && r.transferred_pages == r.total_pages,
            "{r:?}"
        );
        assert_eq!(
            (r.hangup_cause.as_str(), r.sip_code),
            ("NORMAL_CLEARING", 200)
        );
        assert_eq!(r.fax_result_code, 0);
        assert_eq!(r.transfer_rate, 14_400);
        // Answered first, then negotiation, then the pages in order.
        assert_eq!(
            c.events.first(),
            Some(&FaxEvent::Answered),
            "{:?}",
            c.events
        );
        assert!(matches!(
            c.events[1],
            FaxEvent::Negotiated {
                transfer_rate: 14_400,
                ..
            }
        ));
        let pages: Vec<u32> = c
            .events
            .iter()
            .filter_map(|e| match e {
                FaxEvent::Page { page, .. } => Some(*page),
                _ => None,
            })
            .collect();
        assert_eq!(pages, (1..=r.total_pages).collect::<Vec<_>>());
    }
    // Loopback busy: the hang-up (no SIP leg) settles it before the BACKGROUND_JOB.
    let busy = calls
        .iter()
        .find(|c| c.dial == "loopback/busy/default")
        .expect("loopback busy");
    let r = result(busy);
    assert_eq!((r.hangup_cause.as_str(), r.sip_code), ("USER_BUSY", 486));
    assert!(!busy.events.contains(&FaxEvent::Answered));
    // SIP busy: the far end's 486 as sofia reported it.
    let sip = calls
        .iter()
        .find(|c| c.dial.starts_with("sofia/"))
        .expect("sofia busy");
    let r = result(sip);
    assert_eq!((r.hangup_cause.as_str(), r.sip_code), ("USER_BUSY", 486));
    assert!(!r.success);
}
