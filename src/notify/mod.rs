//! Notifications: e-mail (maildir or SMTP relay) and signed webhooks for the events of a fax
//! — outbound sent or failed for good, inbound received or failed, an e-mail-to-fax error —
//! and the progress of an outbound fax (queued, sending, each page: webhooks only,
//! [`progress`]).
//!
//! Durability: the event's own document write carries the pending notification
//! (`pvt_notify`, [`record`]), so no crash can separate the two. The notifier finds pending
//! ones through the `notify/pending` index of the account MODBs ([`crate::store::Store::notify_due`]),
//! woken by the [`Doorbell`] that the writer rings after its write (a slow sweep catches what a
//! crashed node left). Each delivery is claimed before it is attempted (see [`deliver`]).

pub mod deliver;
pub mod mail;
pub mod progress;
pub mod template;
pub mod webhook;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::ids::Db;

/// The events that notify. The progress of an outbound fax (queued, sending, a page) goes
/// to its faxbox's webhook only, never by mail ([`progress`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    OutboundSent,
    OutboundFailed,
    InboundReceived,
    InboundFailed,
    SmtpError,
    OutboundQueued,
    OutboundSending,
    OutboundPage,
}

impl Event {
    pub const ALL: [Event; 8] = [
        Event::OutboundSent,
        Event::OutboundFailed,
        Event::InboundReceived,
        Event::InboundFailed,
        Event::SmtpError,
        Event::OutboundQueued,
        Event::OutboundSending,
        Event::OutboundPage,
    ];

    /// The events that are mailed (each has its templates).
    pub const MAILED: [Event; 5] = [
        Event::OutboundSent,
        Event::OutboundFailed,
        Event::InboundReceived,
        Event::InboundFailed,
        Event::SmtpError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::OutboundSent => "outbound_sent",
            Event::OutboundFailed => "outbound_failed",
            Event::InboundReceived => "inbound_received",
            Event::InboundFailed => "inbound_failed",
            Event::SmtpError => "smtp_error",
            Event::OutboundQueued => "outbound_queued",
            Event::OutboundSending => "outbound_sending",
            Event::OutboundPage => "outbound_page",
        }
    }

    /// Whether the event is mailed (else it is a webhook only).
    pub fn mailed(self) -> bool {
        Self::MAILED.contains(&self)
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// Which side of a faxbox's `notifications` the event reads.
    pub fn direction(self) -> &'static str {
        match self {
            Event::InboundReceived | Event::InboundFailed => "inbound",
            Event::OutboundSent
            | Event::OutboundFailed
            | Event::SmtpError
            | Event::OutboundQueued
            | Event::OutboundSending
            | Event::OutboundPage => "outbound",
        }
    }

    /// The webhook event name (`queued`, `sending`, `page`, `delivered`, `failed`,
    /// `received`).
    pub fn webhook_name(self) -> &'static str {
        match self {
            Event::OutboundQueued => "queued",
            Event::OutboundSending => "sending",
            Event::OutboundPage => "page",
            Event::OutboundSent => "delivered",
            Event::OutboundFailed | Event::InboundFailed | Event::SmtpError => "failed",
            Event::InboundReceived => "received",
        }
    }

    /// Whether the fax document goes with the mail.
    pub fn attaches_fax(self) -> bool {
        matches!(
            self,
            Event::OutboundSent | Event::OutboundFailed | Event::InboundReceived
        )
    }
}

/// Adds the pending notification of `event` to the document that records the event
/// (`pvt_notify`): written with it, delivered later by the notifier.
pub fn record(doc: &mut Value, event: Event, now_unix: i64) {
    doc["pvt_notify"] = json!({
        "event": event.as_str(),
        "state": "pending",
        "created": now_unix,
        "next_at": now_unix,
    });
}

/// Records the error mail to the sender on an e-mail-to-fax log (`fax_smtp_log`, spec §5.6)
/// before it is written: when the log carries errors, names its sender (`from`) and
/// `report_smtp_errors` (the faxbox's `report_smtp_errors`, else the fax config's) is on.
/// Returns whether it did; the writer then rings the [`Doorbell`] with the log's MODB.
pub fn record_smtp_error(log: &mut Value, report_smtp_errors: bool, now_unix: i64) -> bool {
    let has_errors = log
        .get("errors")
        .and_then(Value::as_array)
        .is_some_and(|e| !e.is_empty());
    let has_sender = log
        .get("from")
        .and_then(Value::as_str)
        .is_some_and(|f| f.contains('@'));
    if report_smtp_errors && has_errors && has_sender {
        record(log, Event::SmtpError, now_unix);
        true
    } else {
        false
    }
}

/// The event of a final outbound job status (`completed` → sent, `failed` → failed for
/// good); other statuses notify nothing.
pub fn outbound_event(status: &str) -> Option<Event> {
    match status {
        "completed" => Some(Event::OutboundSent),
        "failed" => Some(Event::OutboundFailed),
        _ => None,
    }
}

/// The delivery log of a document's notification as the API shows it
/// (`_read_only.notifications`): the event, its state and each delivery with its attempts.
pub fn delivery_log(pvt_notify: &Value) -> Value {
    let deliveries: Vec<Value> = pvt_notify
        .get("deliveries")
        .and_then(Value::as_array)
        .map(|ds| {
            ds.iter()
                .map(|d| {
                    let mut out = serde_json::Map::new();
                    for k in [
                        "channel",
                        "to",
                        "url",
                        "event",
                        "state",
                        "attempts",
                        "last_error",
                        "delivered_at",
                        "log",
                    ] {
                        if let Some(v) = d.get(k) {
                            out.insert(k.into(), v.clone());
                        }
                    }
                    Value::Object(out)
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "event": pvt_notify.get("event"),
        "state": pvt_notify.get("state"),
        "deliveries": deliveries,
    })
}

/// Wakes the notifier of this node right after a document with a pending notification was
/// written to `db` (cheap to clone; ringing without a listener does nothing).
#[derive(Clone, Debug)]
pub struct Doorbell(broadcast::Sender<Db>);

impl Default for Doorbell {
    fn default() -> Self {
        Self(broadcast::channel(1024).0)
    }
}

impl Doorbell {
    /// Says that `db` has a notification to deliver.
    pub fn ring(&self, db: &Db) {
        let _ = self.0.send(db.clone());
    }

    /// The notifier's side.
    pub fn listen(&self) -> broadcast::Receiver<Db> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_round_trip_and_final_statuses_map() {
        for e in Event::ALL {
            assert_eq!(Event::parse(e.as_str()), Some(e));
        }
        assert_eq!(outbound_event("completed"), Some(Event::OutboundSent));
        assert_eq!(outbound_event("failed"), Some(Event::OutboundFailed));
        assert_eq!(outbound_event("cancelled"), None);
        let mut doc = json!({"_id": "x"});
        record(&mut doc, Event::InboundReceived, 100);
        assert_eq!(doc["pvt_notify"]["state"], "pending");
        assert_eq!(doc["pvt_notify"]["next_at"], 100);
        assert_eq!(doc["pvt_notify"]["event"], "inbound_received");
    }
}
