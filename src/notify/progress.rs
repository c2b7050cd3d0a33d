//! Progress webhooks of an outbound fax: `queued` (intake stored the job), `sending` (the call
//! of an attempt is placed), `page` (a page of that call went through).
//!
//! Each event is a small document of its own (`pvt_type: "fax_event"`, so no fax listing
//! shows it) in the account MODB the finished fax moves to, with an id made of the fax's MODB
//! id and the event (`<YYYYMM-job id>-queued`, `-sending-<attempt>`, `-page-<attempt>-<page>`,
//! numbers zero-padded): a repeated write is a conflict, never a second event. The document
//! carries its pending notification ([`super::record`]) from its first write, so the
//! notifier's claim, retry and expiry deliver it exactly as they deliver the others — to the
//! faxbox's outbound webhook only, never by mail. Nothing is written for a fax whose faxbox
//! has no outbound callback. A write that fails is logged; it never fails the fax.
//!
//! Deliveries are not ordered (each retries on its own); every webhook of an outbound fax
//! carries a `sequence` that orders its events: `queued` is 0, attempt `a` starts at
//! `a × 10000` (`sending`), its pages follow (`+ page`), and the final `delivered`/`failed`
//! after `n` attempts is `n × 10000 + 9999`.

use serde_json::{Value, json};

use super::webhook::Callback;
use super::{Doorbell, Event, record};
use crate::ids::{AccountId, Db, outbox_location};
use crate::store::{SharedStore, StoreError};

/// The `pvt_type` of a progress event document.
pub const PVT_TYPE: &str = "fax_event";

/// Sequence numbers per attempt.
const PER_ATTEMPT: i64 = 10_000;

/// A step of an outbound fax that its webhook announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Intake stored the job.
    Queued,
    /// The call of attempt `attempt` (1, 2, …) is placed.
    Sending { attempt: u32 },
    /// Page `page` of `total` (0: not known) of attempt `attempt` went through.
    Page { attempt: u32, page: u32, total: u32 },
}

impl Progress {
    /// The notification event.
    pub fn event(self) -> Event {
        match self {
            Progress::Queued => Event::OutboundQueued,
            Progress::Sending { .. } => Event::OutboundSending,
            Progress::Page { .. } => Event::OutboundPage,
        }
    }

    /// The end of the event document's id (after the fax's MODB id and a `-`).
    fn id_suffix(self) -> String {
        match self {
            Progress::Queued => "queued".into(),
            Progress::Sending { attempt } => format!("sending-{attempt:03}"),
            Progress::Page { attempt, page, .. } => format!("page-{attempt:03}-{page:04}"),
        }
    }

    /// Where the event falls among the fax's events (see the module notes).
    pub fn sequence(self) -> i64 {
        match self {
            Progress::Queued => 0,
            Progress::Sending { attempt } => i64::from(attempt) * PER_ATTEMPT,
            Progress::Page { attempt, page, .. } => {
                i64::from(attempt) * PER_ATTEMPT + i64::from(page).clamp(1, PER_ATTEMPT - 2)
            }
        }
    }
}

/// The sequence of the final event (`delivered`/`failed`) of a fax after `attempts` attempts:
/// after every progress event of it.
pub fn final_sequence(attempts: i64) -> i64 {
    attempts.max(0) * PER_ATTEMPT + PER_ATTEMPT - 1
}

/// An outbound fax whose faxbox has an outbound webhook: where its progress events go and
/// what they say of it (read once from the job).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watched {
    db: Db,
    /// The fax's id in the MODB (`YYYYMM-<job id>`): its events' ids start with it.
    modb_id: String,
    /// The job's id (`faxes/outgoing/<id>`).
    job_id: String,
    account_id: AccountId,
    faxbox_id: String,
    from_number: Option<String>,
    to_number: Option<String>,
}

/// Whether a fax (job or MODB document) can have progress events: only one sent from a
/// faxbox ([`Watched::of_job`] announces nothing for the others), so a read of its events is
/// needed for no other.
pub fn may_have_events(fax: &Value) -> bool {
    fax.get("faxbox_id")
        .and_then(Value::as_str)
        .is_some_and(|b| !b.is_empty())
}

impl Watched {
    /// The job document `job` (as queued), when its faxbox has an outbound callback; `None`
    /// when it has no faxbox, or the faxbox no callback (nothing is announced then).
    pub async fn of_job(store: &SharedStore, job: &Value) -> Result<Option<Self>, StoreError> {
        let s = |k: &str| {
            job.get(k)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let (Some(faxbox_id), Some(job_id)) = (s("faxbox_id"), s("_id")) else {
            return Ok(None);
        };
        let Some(account_id) = s("pvt_account_id").and_then(|a| AccountId::parse(&a).ok()) else {
            return Ok(None);
        };
        let faxbox = match store
            .get(&Db::Account(account_id.clone()), &faxbox_id)
            .await
        {
            Ok(b) => b,
            Err(StoreError::NoDatabase(_)) => None,
            Err(e) => return Err(e),
        };
        let hooked = faxbox.is_some_and(|b| {
            !crate::accounts::is_deleted(&b) && Callback::of_faxbox(&b, "outbound").is_some()
        });
        if !hooked {
            return Ok(None);
        }
        let created = job
            .get("pvt_created")
            .and_then(Value::as_i64)
            .unwrap_or_else(crate::time::now_gregorian);
        let (db, modb_id) = outbox_location(account_id.clone(), created, &job_id);
        Ok(Some(Self {
            db,
            modb_id,
            job_id,
            account_id,
            faxbox_id,
            from_number: s("from_number"),
            to_number: s("to_number"),
        }))
    }

    /// The MODB the events go to.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The event document of `p`, its notification pending from `now_unix`.
    pub fn doc(&self, p: Progress, now_unix: i64) -> Value {
        let mut doc = json!({
            "_id": format!("{}-{}", self.modb_id, p.id_suffix()),
            "pvt_type": PVT_TYPE,
            "pvt_account_id": self.account_id.as_str(),
            "pvt_account_db": self.db.name(),
            "pvt_created": crate::time::now_gregorian(),
            "fax_id": self.job_id,
            "job_id": self.job_id,
            "faxbox_id": self.faxbox_id,
            "sequence": p.sequence(),
        });
        for (k, v) in [
            ("from_number", &self.from_number),
            ("to_number", &self.to_number),
        ] {
            if let Some(v) = v {
                doc[k] = json!(v);
            }
        }
        match p {
            Progress::Queued => {}
            Progress::Sending { attempt } => doc["attempt"] = json!(attempt),
            Progress::Page {
                attempt,
                page,
                total,
            } => {
                doc["attempt"] = json!(attempt);
                doc["page"] = json!(page);
                if total > 0 {
                    doc["total_pages"] = json!(total);
                }
            }
        }
        record(&mut doc, p.event(), now_unix);
        doc
    }

    /// Writes the event document of `p` and rings `bell`. An event already written (a
    /// repeat) is left as it is; a failure is logged, never returned.
    pub async fn announce(&self, store: &SharedStore, bell: &Doorbell, p: Progress) {
        match self.write(store, p).await {
            Ok(true) => bell.ring(&self.db),
            Ok(false) => {}
            Err(e) => tracing::warn!(job_id = %self.job_id, faxbox_id = %self.faxbox_id,
                event = p.event().webhook_name(), error = %e, "progress webhook not recorded"),
        }
    }

    /// `true` when written now, `false` when it was already.
    async fn write(&self, store: &SharedStore, p: Progress) -> Result<bool, StoreError> {
        let doc = self.doc(p, crate::time::now_unix());
        let mut created_db = false;
        loop {
            match store.save(&self.db, doc.clone()).await {
                Ok(_) => return Ok(true),
                Err(StoreError::Conflict) => return Ok(false),
                Err(StoreError::NoDatabase(_)) if !created_db => {
                    store.ensure_db(&self.db).await?;
                    created_db = true;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Announces `p` of the job document `job` when its faxbox has an outbound callback (one
/// faxbox read); what fails is logged. For a writer with one event of a job (intake).
pub async fn announce(store: &SharedStore, bell: &Doorbell, job: &Value, p: Progress) {
    match Watched::of_job(store, job).await {
        Ok(Some(w)) => w.announce(store, bell, p).await,
        Ok(None) => {}
        Err(e) => tracing::warn!(job_id = %job["_id"], error = %e,
            "progress webhook not recorded: the faxbox was not read"),
    }
}

/// The progress webhooks of the fax whose MODB id is `modb_id`, as the API shows them
/// (`_read_only.webhooks`), in sequence order: each event with its delivery's state,
/// attempts and log. A missing MODB has none.
pub async fn delivery_log(
    store: &SharedStore,
    db: &Db,
    modb_id: &str,
) -> Result<Vec<Value>, StoreError> {
    let docs = match store.docs_with_prefix(db, &format!("{modb_id}-")).await {
        Ok(d) => d,
        Err(StoreError::NoDatabase(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out: Vec<(i64, Value)> = docs
        .iter()
        .filter(|d| d.get("pvt_type").and_then(Value::as_str) == Some(PVT_TYPE))
        .filter_map(|d| {
            let n = d.get("pvt_notify")?;
            let event = n
                .get("event")
                .and_then(Value::as_str)
                .and_then(Event::parse)?;
            let log = super::delivery_log(n);
            let mut entry = log["deliveries"]
                .as_array()
                .and_then(|ds| ds.iter().find(|x| x["channel"] == "webhook"))
                .cloned()
                .unwrap_or_else(|| json!({"state": n.get("state"), "attempts": 0, "log": []}));
            entry["event"] = json!(event.webhook_name());
            for k in ["attempt", "page", "total_pages", "sequence"] {
                if let Some(v) = d.get(k) {
                    entry[k] = v.clone();
                }
            }
            let seq = d.get("sequence").and_then(Value::as_i64).unwrap_or(0);
            Some((seq, entry))
        })
        .collect();
    out.sort_by_key(|(seq, _)| *seq);
    Ok(out.into_iter().map(|(_, e)| e).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched() -> Watched {
        let account = AccountId::generate();
        let (db, modb_id) = outbox_location(account.clone(), 63_900_000_000, "abc");
        Watched {
            db,
            modb_id,
            job_id: "abc".into(),
            account_id: account,
            faxbox_id: "box".into(),
            from_number: Some("+15551230000".into()),
            to_number: None,
        }
    }

    #[test]
    fn event_ids_sort_and_sequences_order_a_fax() {
        let w = watched();
        let q = w.doc(Progress::Queued, 5);
        let id = q["_id"].as_str().expect("id");
        assert!(id.ends_with("-abc-queued"), "{id}");
        assert_eq!(q["pvt_type"], PVT_TYPE);
        assert_eq!(q["fax_id"], "abc");
        assert_eq!(q["pvt_notify"]["event"], "outbound_queued");
        assert_eq!(q["pvt_notify"]["state"], "pending");
        assert!(q.get("to_number").is_none());
        let p = |attempt, page| Progress::Page {
            attempt,
            page,
            total: 12,
        };
        assert!(w.doc(p(1, 2), 5)["_id"].as_str() < w.doc(p(1, 10), 5)["_id"].as_str());
        assert_eq!(w.doc(p(1, 10), 5)["total_pages"], 12);
        let order = [
            Progress::Queued.sequence(),
            Progress::Sending { attempt: 1 }.sequence(),
            p(1, 1).sequence(),
            p(1, 12).sequence(),
            Progress::Sending { attempt: 2 }.sequence(),
            p(2, 1).sequence(),
            final_sequence(2),
        ];
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        assert!(p(1, 50_000).sequence() < final_sequence(1));
        for e in [Event::OutboundQueued, Event::OutboundPage] {
            assert!(!e.mailed());
            assert_eq!(e.direction(), "outbound");
        }
    }
}
