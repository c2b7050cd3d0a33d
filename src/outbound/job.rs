//! An outbound fax job document (faxes database) read into typed fields once, at the edge.

use serde_json::{Value, json};

use crate::gateway::TxOptions;
use crate::ids::AccountId;
use crate::model::JobStatus;

/// A taken job's field: the revision generation its take was written at (heartbeats keep
/// it); ranks conflicting takes ([`super::lease::settle_take`]).
pub const LEASE_GEN: &str = "pvt_lease_gen";

/// Why a document is not a usable job.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JobError {
    #[error("document is not an outbound fax job: {0}")]
    NotAJob(String),
}

/// The fields of a job document the engine acts on.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: String,
    pub rev: String,
    pub account: AccountId,
    pub status: JobStatus,
    pub to_number: String,
    pub to_name: String,
    pub from_number: String,
    pub from_name: String,
    pub identity_number: String,
    pub identity_name: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// Total attempts allowed (Kazoo's `retries`; missing = 1).
    pub retries: u32,
    /// `pvt_created`, gregorian seconds.
    pub created: i64,
    /// `pvt_modified + retry_after`, gregorian seconds.
    pub due: i64,
    pub faxbox_id: Option<String>,
    /// Options of the next attempt (`tx_options`, stepped down by rules).
    pub options: TxOptions,
    /// Higher runs first among due jobs of an account (default 0).
    pub priority: i64,
    /// Not before this time, gregorian seconds (`send_at`, unix seconds in the doc).
    pub send_at: Option<i64>,
    /// `pvt_job_node`.
    pub node: Option<String>,
    /// `pvt_lease`: the worker incarnation holding a processing job.
    pub lease: Option<String>,
    /// `pvt_heartbeat`, unix ms.
    pub heartbeat_ms: Option<i64>,
}

fn s(doc: &Value, k: &str) -> Option<String> {
    doc.get(k)
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

fn i(doc: &Value, k: &str) -> Option<i64> {
    doc.get(k).and_then(Value::as_i64)
}

impl Job {
    /// Reads a faxes-database job document.
    pub fn from_doc(doc: &Value) -> Result<Job, JobError> {
        let id = s(doc, "_id").ok_or_else(|| JobError::NotAJob("no _id".into()))?;
        let bad = |why: &str| JobError::NotAJob(format!("{id}: {why}"));
        if doc.get("pvt_type").and_then(Value::as_str) != Some("fax") {
            return Err(bad("pvt_type is not fax"));
        }
        let rev = s(doc, "_rev").unwrap_or_default();
        let account = s(doc, "pvt_account_id")
            .and_then(|a| AccountId::parse(&a).ok())
            .ok_or_else(|| bad("no valid pvt_account_id"))?;
        let status = s(doc, "pvt_job_status")
            .and_then(|st| st.parse().ok())
            .ok_or_else(|| bad("no valid pvt_job_status"))?;
        let to_number = s(doc, "to_number").unwrap_or_default();
        let from_number = s(doc, "from_number").unwrap_or_default();
        let from_name = s(doc, "from_name").unwrap_or_else(|| from_number.clone());
        let mut options = TxOptions::default();
        if let Some(o) = doc.get("tx_options") {
            if let Some(v) = o.get("ecm").and_then(Value::as_bool) {
                options.ecm = v;
            }
            if let Some(v) = o.get("max_rate").and_then(Value::as_u64) {
                options.max_rate = v.min(u32::MAX as u64) as u32;
            }
            if let Some(v) = o.get("t38").and_then(Value::as_bool) {
                options.t38 = v;
            }
        }
        let clamp = |v: i64| v.clamp(0, u32::MAX as i64) as u32;
        Ok(Job {
            rev,
            account,
            status,
            to_name: s(doc, "to_name").unwrap_or_else(|| to_number.clone()),
            identity_number: s(doc, "fax_identity_number").unwrap_or_else(|| from_number.clone()),
            identity_name: s(doc, "fax_identity_name").unwrap_or_else(|| from_name.clone()),
            to_number,
            from_number,
            from_name,
            attempts: clamp(i(doc, "attempts").unwrap_or(0)),
            retries: clamp(i(doc, "retries").unwrap_or(1)),
            created: i(doc, "pvt_created").unwrap_or(0),
            due: i(doc, "pvt_modified").unwrap_or(0) + i(doc, "retry_after").unwrap_or(0),
            faxbox_id: s(doc, "faxbox_id"),
            options,
            priority: i(doc, "priority").unwrap_or(0),
            send_at: i(doc, "send_at").map(crate::time::unix_to_gregorian),
            node: s(doc, "pvt_job_node"),
            lease: s(doc, "pvt_lease"),
            heartbeat_ms: i(doc, "pvt_heartbeat"),
            id,
        })
    }

    /// Why the job must not reach a media engine, if so: a destination that is not E.164, or
    /// control characters in a number, name or identity (they would end up in an originate
    /// command). The API refuses both at submission; this guards jobs written by other means.
    pub fn unsendable(&self) -> Option<String> {
        if crate::numbers::normalize(&self.to_number).as_deref() != Some(self.to_number.as_str()) {
            return Some(format!(
                "invalid fax number: {}",
                self.to_number.escape_debug()
            ));
        }
        [
            ("to_name", &self.to_name),
            ("from_number", &self.from_number),
            ("from_name", &self.from_name),
            ("fax_identity_number", &self.identity_number),
            ("fax_identity_name", &self.identity_name),
        ]
        .into_iter()
        .find_map(|(field, v)| {
            crate::numbers::no_control(field, v)
                .err()
                .map(|e| format!("invalid caller data: {e}"))
        })
    }

    /// When the job may run: its due time, and not before `send_at`.
    pub fn runnable_at(&self) -> i64 {
        self.due.max(self.send_at.unwrap_or(i64::MIN))
    }
}

/// The `tx_options` object for a set of options.
pub fn options_json(o: &TxOptions) -> Value {
    json!({"ecm": o.ecm, "max_rate": o.max_rate, "t38": o.t38})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_job_with_defaults() {
        let a = AccountId::generate();
        let doc = json!({"_id": "j1", "_rev": "1-a", "pvt_type": "fax",
            "pvt_account_id": a.as_str(), "pvt_job_status": "pending",
            "to_number": "+15551230000", "from_number": "+15550000000",
            "pvt_created": 10, "pvt_modified": 20, "retry_after": 5,
            "tx_options": {"ecm": false}, "send_at": 1_700_000_000});
        let j = Job::from_doc(&doc).unwrap();
        assert_eq!(j.retries, 1);
        assert_eq!(j.attempts, 0);
        assert_eq!(j.due, 25);
        assert!(!j.options.ecm);
        assert_eq!(j.options.max_rate, 14_400);
        assert_eq!(j.identity_number, "+15550000000");
        assert_eq!(j.to_name, "+15551230000");
        assert_eq!(
            j.runnable_at(),
            crate::time::unix_to_gregorian(1_700_000_000)
        );
        assert!(Job::from_doc(&json!({"_id": "x", "pvt_type": "fax"})).is_err());
        assert!(Job::from_doc(&json!({"pvt_type": "fax"})).is_err());
    }

    #[test]
    fn jobs_with_bad_numbers_or_texts_are_unsendable() {
        let a = AccountId::generate();
        let job = |extra: Value| {
            let mut doc = json!({"_id": "j1", "pvt_type": "fax", "pvt_account_id": a.as_str(),
                "pvt_job_status": "pending", "to_number": "+15551230000",
                "from_number": "+15550000000"});
            for (k, v) in extra.as_object().unwrap() {
                doc[k] = v.clone();
            }
            Job::from_doc(&doc).unwrap()
        };
        assert_eq!(job(json!({})).unsendable(), None);
        assert_eq!(
            job(json!({"to_number": "911"})).unsendable().as_deref(),
            Some("invalid fax number: 911")
        );
        assert_eq!(
            job(json!({"to_number": "+1415\r\n"}))
                .unsendable()
                .as_deref(),
            Some("invalid fax number: +1415\\r\\n")
        );
        let why = job(json!({"from_number": "+1415\r\nX-Evil: y"}))
            .unsendable()
            .unwrap();
        assert!(why.starts_with("invalid caller data: from_number"), "{why}");
        let why = job(json!({"fax_identity_name": "A\u{0}"}))
            .unsendable()
            .unwrap();
        assert!(why.contains("fax_identity_name"), "{why}");
    }
}
