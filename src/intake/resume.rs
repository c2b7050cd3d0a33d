//! Stranded intakes: a job that stayed in `attaching_files` longer than an intake can take
//! (faxd stopped while its document was fetched, stored or converted) is finished here, by
//! fax_monitor's sweep on the node that schedules: resumed when its document can still be
//! had, else ended `failed` with the reason. Claiming is a rev-checked save, so a job is
//! resumed by one sweeper at a time, and a job that keeps interrupting its intake ends
//! `failed` after [`MAX_RESUMES`] tries instead of looping.

use std::time::Duration;

use serde_json::{Value, json};

use super::fetch::{self, FetchPolicy};
use super::{Conversion, Document, IntakeError};
use crate::ids::Db;
use crate::model::JobStatus;
use crate::store::{SharedStore, StoreError};

/// Resumes of one job's intake before it ends `failed`.
pub const MAX_RESUMES: i64 = 3;

/// Field counting the resumes of a job's intake.
const RESUMES: &str = "pvt_intake_resumes";

/// How long an intake may take before its job counts as stranded: the fetch time limit
/// plus the conversion time limit (the two slow steps of an intake).
pub fn stranded_after(fetch: &FetchPolicy, convert_timeout: Duration) -> Duration {
    (fetch.timeout + convert_timeout).max(Duration::from_secs(1))
}

/// What became of a stranded job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resumed {
    /// Its document is stored and converted: the job is `pending`.
    Queued,
    /// It ended `failed` (moved to the outbox) with this reason.
    Failed(String),
    /// Someone else finished or claimed it first; nothing done.
    Skipped,
}

/// Finishes the intake of job `id` if it is still in `attaching_files` and was last
/// modified at or before `stale_before` (gregorian seconds).
pub async fn resume(
    store: &SharedStore,
    conversion: &Conversion,
    policy: &FetchPolicy,
    id: &str,
    stale_before: i64,
) -> Result<Resumed, IntakeError> {
    let Some(mut job) = store.get(&Db::Faxes, id).await? else {
        return Ok(Resumed::Skipped);
    };
    let status = job.get("pvt_job_status").and_then(Value::as_str);
    let modified = job.get("pvt_modified").and_then(Value::as_i64).unwrap_or(0);
    if status != Some(JobStatus::AttachingFiles.as_str()) || modified > stale_before {
        return Ok(Resumed::Skipped);
    }
    // Claim: the next sweep (here or on another node) sees a fresh job and leaves it.
    let tries = job.get(RESUMES).and_then(Value::as_i64).unwrap_or(0) + 1;
    job[RESUMES] = json!(tries);
    job["pvt_modified"] = json!(crate::time::now_gregorian());
    let job = match store.save(&Db::Faxes, job).await {
        Ok(j) => j,
        Err(StoreError::Conflict) => return Ok(Resumed::Skipped),
        Err(e) => return Err(e.into()),
    };
    if tries > MAX_RESUMES {
        let reason = format!("document intake was interrupted {MAX_RESUMES} times; giving up");
        return fail(store, job, &reason).await;
    }
    let has_original = super::attachment_names(&job)
        .iter()
        .any(|n| n.starts_with("original_file") || n == "fax_file.tiff");
    let job = if has_original {
        job
    } else {
        match document_of(&job, policy).await {
            Ok(doc) => super::store_document(store, &job, doc).await?,
            Err(reason) => return fail(store, job, &reason).await,
        }
    };
    let done = super::finish_intake(store, conversion, job).await?;
    Ok(match done.get("pvt_job_status").and_then(Value::as_str) {
        Some(s) if s == JobStatus::Pending.as_str() => Resumed::Queued,
        _ => Resumed::Failed(
            done.pointer("/tx_result/result_text")
                .and_then(Value::as_str)
                .unwrap_or("document could not be prepared")
                .to_string(),
        ),
    })
}

/// The job's document fetched again from its `document.url`, checked as at submission.
pub(crate) async fn document_of(job: &Value, policy: &FetchPolicy) -> Result<Document, String> {
    let Some(url) = job.pointer("/document/url").and_then(Value::as_str) else {
        return Err("the document upload was interrupted; submit the fax again".into());
    };
    let post =
        (job.pointer("/document/method").and_then(Value::as_str) == Some("post")).then(|| {
            job.pointer("/document/content")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        });
    let mut doc = fetch::fetch(url, post, policy).await?;
    doc.content_type =
        super::effective_type(&doc.content_type, &doc.bytes).map_err(|e| e.to_string())?;
    Ok(doc)
}

async fn fail(store: &SharedStore, job: Value, reason: &str) -> Result<Resumed, IntakeError> {
    super::fail_job(store, job, reason).await?;
    Ok(Resumed::Failed(reason.to_string()))
}
