//! Storing a release, and recovering jobs whose owner is gone: a `processing` job carries a
//! lease (`pvt_job_node`, `pvt_lease` = the worker incarnation, `pvt_heartbeat` in unix ms).
//! When the worker dies, or its node, the job is released as a failed attempt ("process
//! terminated"): back to `pending` while attempts remain, else `failed` and moved to the
//! MODB — never left `processing`. A `locked` job whose queue is gone goes back to
//! `pending` without counting an attempt.

use serde_json::{Value, json};

use super::job::Job;
use super::modb;
use super::release::{self, Decision, Outcome, Rule};
use crate::ids::Db;
use crate::model::JobStatus;
use crate::store::{SharedStore, StoreError};

/// Release rules in force.
#[derive(Clone, Debug, Default)]
pub struct ReleasePolicy {
    pub rules: Vec<Rule>,
    pub default_retry_period: u64,
}

impl ReleasePolicy {
    pub fn from_config(fax: &crate::config::FaxConfig) -> Self {
        Self {
            rules: release::parse_rules(&fax.reschedule, &fax.default_compare_field),
            default_retry_period: fax.default_retry_period,
        }
    }
}

/// Releases an attempt of the job `doc` (current revision): a retry is saved in the faxes
/// database, a final state is written straight to the MODB and the queued copy deleted.
pub async fn release(
    store: &SharedStore,
    mut doc: Value,
    outcome: &Outcome,
    started_ms: i64,
    finished_ms: i64,
    policy: &ReleasePolicy,
) -> Result<Decision, StoreError> {
    let job = Job::from_doc(&doc).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let result = release::tx_result(outcome, started_ms, finished_ms, job.created, &job.options);
    // An attempt cut short on our side (worker or node died) is retried at once unless a
    // rule says otherwise; the far end did nothing to deserve the back-off.
    let period = match outcome {
        Outcome::Failure { cause, .. } if cause == release::TERMINATED => 0,
        _ => policy.default_retry_period,
    };
    let (pages, cause) = match outcome {
        Outcome::Call(r) => (r.transferred_pages, r.hangup_cause.as_str()),
        Outcome::Failure { cause, .. } => (0, cause.as_str()),
    };
    crate::metrics::fax_finished("outbound", outcome.success(), cause, pages);
    let d = release::decide(&job, &result, outcome.success(), &policy.rules, period);
    release::apply(&mut doc, &d, result, crate::time::now_gregorian());
    if d.status.is_final() {
        modb::move_to_modb(store, doc).await?;
    } else {
        store.save(&Db::Faxes, doc).await?;
    }
    Ok(d)
}

/// Recovers a `processing` job whose worker or node is gone (read fresh, rev-checked: a job
/// that changed meanwhile is left alone). Returns the new status, `None` if nothing was done.
pub async fn recover_processing(
    store: &SharedStore,
    id: &str,
    expect_lease: Option<&str>,
    why: &str,
    policy: &ReleasePolicy,
) -> Result<Option<JobStatus>, StoreError> {
    let Some(doc) = store.get(&Db::Faxes, id).await? else {
        return Ok(None);
    };
    let Ok(job) = Job::from_doc(&doc) else {
        return Ok(None);
    };
    if job.status != JobStatus::Processing
        || expect_lease.is_some_and(|l| job.lease.as_deref() != Some(l))
    {
        return Ok(None);
    }
    // A move that reached the MODB before the node died: finish it.
    if let Some(moved) = modb::moved_copy(store, &doc).await?
        && let Some(st) = moved
            .get("pvt_job_status")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<JobStatus>().ok())
            .filter(|s| s.is_final())
    {
        modb::delete_source(store, id, &job.rev).await?;
        return Ok(Some(st));
    }
    let now = crate::time::now_unix_ms();
    let started = job.heartbeat_ms.unwrap_or(now);
    match release(store, doc, &Outcome::terminated(why), started, now, policy).await {
        Ok(d) => Ok(Some(d.status)),
        Err(StoreError::Conflict) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Puts a `locked` job back to `pending` (no attempt counted), rev-checked.
pub async fn unlock(store: &SharedStore, id: &str) -> Result<bool, StoreError> {
    let Some(mut doc) = store.get(&Db::Faxes, id).await? else {
        return Ok(false);
    };
    if doc.get("pvt_job_status").and_then(Value::as_str) != Some("locked") {
        return Ok(false);
    }
    doc["pvt_job_status"] = json!("pending");
    if let Some(o) = doc.as_object_mut() {
        o.remove("pvt_job_node");
    }
    match store.save(&Db::Faxes, doc).await {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether a processing job's lease has run out: no heartbeat within `lease_ms`.
pub fn lease_expired(job: &Job, now_ms: i64, lease_ms: i64) -> bool {
    job.heartbeat_ms.is_none_or(|h| now_ms - h > lease_ms)
}
