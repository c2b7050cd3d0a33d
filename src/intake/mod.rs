//! Outbound fax intake: storing a job's document and moving the job out of
//! `attaching_files`. A job becomes `pending` (runnable) only after its document is stored
//! (and, once the `convert` module is plugged in, converted) — see [`prepare_document`], the
//! one place where conversion belongs; a failure ends the job `failed` with the reason in
//! `tx_result` and moves it to the outbox ([`fail_job`]).

pub mod background;
pub mod fetch;
pub mod multipart;
pub mod numbers;
pub mod resume;
pub mod submit;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::ids::{AccountId, Db, YearMonth, modb_doc_id};
use crate::model::{Folder, JobStatus};
use crate::store::{NewAttachment, SharedStore, StoreError, bytes_stream};

/// Errors of intake.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Document(String),
    #[error(transparent)]
    Number(#[from] crate::numbers::NumberError),
}

/// A document as received or downloaded.
#[derive(Clone, Debug)]
pub struct Document {
    pub content_type: String,
    pub bytes: Bytes,
}

/// Media types accepted as fax documents (the ones `convert` handles).
pub fn accepted_type(mt: &str) -> bool {
    matches!(
        mt,
        "application/pdf"
            | "image/tiff"
            | "image/tif"
            | "image/png"
            | "image/jpeg"
            | "image/gif"
            | "application/msword"
            | "application/vnd.ms-excel"
            | "application/vnd.ms-powerpoint"
            | "application/rtf"
            | "text/plain"
    ) || mt.starts_with("application/vnd.openxmlformats-officedocument.")
        || mt.starts_with("application/vnd.oasis.opendocument.")
}

/// The file extension Kazoo uses for a media type.
pub fn extension(mt: &str) -> &'static str {
    match mt {
        "application/pdf" => "pdf",
        "image/tiff" | "image/tif" => "tiff",
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        "application/msword" => "doc",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => "docx",
        "application/vnd.ms-excel" => "xls",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => "xlsx",
        "application/vnd.ms-powerpoint" => "ppt",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation" => "pptx",
        "application/vnd.oasis.opendocument.text" => "odt",
        "application/rtf" => "rtf",
        "text/plain" => "txt",
        _ => "bin",
    }
}

/// The media type of a document from its first bytes, when they say it clearly.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"%PDF-") {
        Some("application/pdf")
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        Some("image/tiff")
    } else if bytes.starts_with(b"\x89PNG") {
        Some("image/png")
    } else if bytes.starts_with(b"\xff\xd8\xff") {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF8") {
        Some("image/gif")
    } else {
        None
    }
}

/// Why a document's type cannot be faxed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DocumentTypeError {
    /// Labelled as one recognisable type, its bytes are another.
    #[error("the document is labelled {declared} but its content is {found}")]
    Mismatch {
        declared: String,
        found: &'static str,
    },
    /// Labelled as a PDF or an image, its bytes are no format faxd recognises.
    #[error("the document is labelled {declared} but its content is not {declared}")]
    Unrecognised { declared: String },
    /// A type `convert` does not handle.
    #[error("document type '{0}' cannot be faxed")]
    NotFaxable(String),
}

impl DocumentTypeError {
    /// The type the document was labelled with.
    pub fn declared(&self) -> &str {
        match self {
            Self::Mismatch { declared, .. } | Self::Unrecognised { declared } => declared,
            Self::NotFaxable(t) => t,
        }
    }

    /// The type its bytes show, when they show one.
    pub fn found(&self) -> Option<&'static str> {
        match self {
            Self::Mismatch { found, .. } => Some(found),
            _ => None,
        }
    }
}

/// One spelling per type for the comparisons of [`effective_type`].
fn canonical(mt: &str) -> &str {
    match mt {
        "image/tif" => "image/tiff",
        "image/jpg" | "image/pjpeg" => "image/jpeg",
        other => other,
    }
}

/// The type a document really has: what its bytes say when they say it, else the declared
/// type. A document labelled as a PDF or an image must be that (a PNG labelled PDF is
/// refused, naming both); a generic label (`application/octet-stream`, none) takes the
/// sniffed type. `Err` when the result cannot be faxed.
pub fn effective_type(declared: &str, bytes: &[u8]) -> Result<String, DocumentTypeError> {
    let declared = canonical(&declared.to_ascii_lowercase()).to_string();
    let specific = declared == "application/pdf" || declared.starts_with("image/");
    let mt = match sniff(bytes) {
        Some(found) if specific && found != declared => {
            return Err(DocumentTypeError::Mismatch { declared, found });
        }
        Some(found) => found.to_string(),
        None if specific => return Err(DocumentTypeError::Unrecognised { declared }),
        None => declared,
    };
    if accepted_type(&mt) {
        Ok(mt)
    } else {
        Err(DocumentTypeError::NotFaxable(mt))
    }
}

/// Name of the original document attachment.
pub fn original_name(content_type: &str) -> String {
    format!("original_file.{}", extension(content_type))
}

/// Stores a job's document as `original_file.<ext>`; returns the job re-read.
pub async fn store_document(
    store: &SharedStore,
    job: &Value,
    doc: Document,
) -> Result<Value, IntakeError> {
    let id = job_id(job)?;
    let rev = job.get("_rev").and_then(Value::as_str);
    store
        .put_attachment(
            &Db::Faxes,
            &id,
            rev,
            &original_name(&doc.content_type),
            &doc.content_type,
            bytes_stream(doc.bytes),
        )
        .await?;
    reread(store, &Db::Faxes, &id).await
}

/// Saves a new job together with its uploaded document in one atomic write, so that no
/// store failure (an outage, a full disk) leaves a job without its document; returns the
/// job re-read.
pub async fn save_with_document(
    store: &SharedStore,
    job: Value,
    doc: Document,
) -> Result<Value, IntakeError> {
    let attachment = NewAttachment {
        name: original_name(&doc.content_type),
        content_type: doc.content_type,
        data: doc.bytes,
    };
    let saved = store
        .save_with_attachments(&Db::Faxes, job, vec![attachment])
        .await?;
    reread(store, &Db::Faxes, &job_id(&saved)?).await
}

/// Takes back a job whose intake failed on a store error after it was saved, so that the
/// error its submitter got stays true (best effort: a job the store keeps anyway is
/// finished later by the stranded-intake sweep, [`resume`]).
pub async fn abandon(store: &SharedStore, id: &str) {
    let current = match store.get(&Db::Faxes, id).await {
        Ok(Some(doc)) => doc,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(job_id = %id, error = %e, "failed intake not taken back; the sweep finishes it");
            return;
        }
    };
    let status = current.get("pvt_job_status").and_then(Value::as_str);
    if status != Some(JobStatus::AttachingFiles.as_str()) {
        return;
    }
    let rev = current["_rev"].as_str().unwrap_or_default();
    if let Err(e) = store.delete(&Db::Faxes, id, rev).await {
        tracing::warn!(job_id = %id, error = %e, "failed intake not taken back; the sweep finishes it");
    }
}

fn job_id(job: &Value) -> Result<String, IntakeError> {
    job.get("_id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| IntakeError::Document("job without _id".into()))
}

async fn reread(store: &SharedStore, db: &Db, id: &str) -> Result<Value, IntakeError> {
    store
        .get(db, id)
        .await?
        .ok_or_else(|| IntakeError::Store(StoreError::NotFound(id.to_string())))
}

/// The attachment names of a document.
pub fn attachment_names(doc: &Value) -> Vec<String> {
    doc.get("_attachments")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// How intake turns a stored original into a fax-ready document.
#[derive(Clone)]
pub struct Conversion {
    pub converter: std::sync::Arc<crate::convert::Converter>,
    /// Keep the converted TIFF as `fax_file.tiff` (`store_fax_tiff`); the worker converts
    /// again otherwise.
    pub keep_tiff: bool,
}

/// Converts the job's original document (or validates its `fax_file.tiff`) before the job
/// becomes runnable, and records `pvt_pages` / `pvt_size`. An `Err(Document)` ends the job
/// `failed` with the conversion error as `tx_result.result_text`.
pub async fn prepare_document(
    store: &SharedStore,
    conversion: &Conversion,
    job: Value,
) -> Result<Value, IntakeError> {
    use crate::convert::stored::{self, DocumentError};
    if !attachment_names(&job)
        .iter()
        .any(|n| n.starts_with("original_file") || n == "fax_file.tiff")
    {
        return Err(IntakeError::Document(
            "no document attached to the job".into(),
        ));
    }
    let id = job_id(&job)?;
    let faxable = stored::faxable(
        store,
        &conversion.converter,
        &Db::Faxes,
        &id,
        conversion.keep_tiff,
    )
    .await
    .map_err(|e| match e {
        DocumentError::Store(s) => IntakeError::Store(s),
        other => IntakeError::Document(other.to_string()),
    })?;
    let mut job = reread(store, &Db::Faxes, &id).await?;
    job["pvt_pages"] = json!(faxable.pages);
    job["pvt_size"] = json!(faxable.tiff.len());
    Ok(job)
}

/// Finishes intake: runs [`prepare_document`], then `attaching_files`/`resubmitting` →
/// `pending` (rev-checked). On a document error the job ends `failed`.
pub async fn finish_intake(
    store: &SharedStore,
    conversion: &Conversion,
    job: Value,
) -> Result<Value, IntakeError> {
    match prepare_document(store, conversion, job.clone()).await {
        // Cancelled (or finished by the sweep) while its document was prepared: left as is.
        Ok(job) if !in_intake(&job) => Ok(job),
        Ok(mut job) => {
            job["pvt_job_status"] = json!(JobStatus::Pending.as_str());
            job["pvt_modified"] = json!(crate::time::now_gregorian());
            Ok(store.save(&Db::Faxes, job).await?)
        }
        Err(IntakeError::Document(reason)) => {
            let current = reread(store, &Db::Faxes, &job_id(&job)?).await?;
            if !in_intake(&current) {
                return Ok(current);
            }
            fail_job(store, current, &reason).await
        }
        Err(e) => Err(e),
    }
}

/// Whether a job is still being taken in (`attaching_files` or `resubmitting`): only then
/// may its intake decide its status.
pub(crate) fn in_intake(job: &Value) -> bool {
    let status = job.get("pvt_job_status").and_then(Value::as_str);
    status == Some(JobStatus::AttachingFiles.as_str())
        || status == Some(JobStatus::Resubmitting.as_str())
}

/// Ends a job `failed` with a synthetic `tx_result` (Kazoo's "bad file" shape) and moves it to
/// the outbox, carrying the `outbound_failed` notification (mail and webhook, as for a fax
/// that failed its last attempt). The caller rings the notifier when it can; otherwise the
/// notifier's sweep finds it.
pub async fn fail_job(
    store: &SharedStore,
    mut job: Value,
    reason: &str,
) -> Result<Value, IntakeError> {
    let created = job.get("pvt_created").and_then(Value::as_i64).unwrap_or(0);
    let now = crate::time::now_gregorian();
    job["pvt_job_status"] = json!(JobStatus::Failed.as_str());
    job["pvt_modified"] = json!(now);
    job["tx_result"] = json!({
        "time_elapsed": now - created,
        "result_code": 0,
        "result_text": reason,
        "success": false,
        "pages_sent": 0,
    });
    crate::notify::record(
        &mut job,
        crate::notify::Event::OutboundFailed,
        crate::time::now_unix(),
    );
    move_to_outbox(store, job).await
}

/// Rings the notifier when `doc` (a job that intake just ended) carries a pending
/// notification: a fax failed before its first attempt.
pub fn ring_if_notified(bell: &crate::notify::Doorbell, doc: &Value) {
    if doc.pointer("/pvt_notify/state").and_then(Value::as_str) == Some("pending")
        && let Ok((db, _)) = crate::outbound::modb::target(doc)
    {
        bell.ring(&db);
    }
}

/// Moves a job in a final state from `faxes` to its account's MODB of its creation month, as
/// `YYYYMM-<id>` with `folder: outbox`, attachments included. Returns the outbox document.
pub async fn move_to_outbox(store: &SharedStore, job: Value) -> Result<Value, IntakeError> {
    let id = job_id(&job)?;
    let account = job
        .get("pvt_account_id")
        .and_then(Value::as_str)
        .and_then(|a| AccountId::parse(a).ok())
        .ok_or_else(|| IntakeError::Document("job without account".into()))?;
    let created = job.get("pvt_created").and_then(Value::as_i64).unwrap_or(0);
    let month = YearMonth::from_gregorian(created);
    let modb = Db::Modb(account, month);
    store.ensure_db(&modb).await?;
    let new_id = modb_doc_id(month, &id);
    let mut copy = job.clone();
    if let Some(m) = copy.as_object_mut() {
        m.remove("_rev");
        m.remove("_attachments");
        m.remove("pvt_queue");
    }
    copy["_id"] = json!(new_id);
    copy["folder"] = json!(Folder::Outbox.as_str());
    copy["pvt_account_db"] = json!(modb.name());
    let saved = match store.get(&modb, &new_id).await? {
        // A move that stopped half way: finish it.
        Some(existing) => {
            copy["_rev"] = existing["_rev"].clone();
            store.save(&modb, copy).await?
        }
        None => store.save(&modb, copy).await?,
    };
    let mut rev = saved["_rev"].as_str().unwrap_or_default().to_string();
    for name in attachment_names(&job) {
        if let Some(att) = store.get_attachment(&Db::Faxes, &id, &name).await? {
            rev = store
                .put_attachment(
                    &modb,
                    &new_id,
                    Some(&rev),
                    &name,
                    &att.content_type,
                    att.body,
                )
                .await?;
        }
    }
    let moved = reread(store, &modb, &new_id).await?;
    let current = reread(store, &Db::Faxes, &id).await?;
    store
        .delete(
            &Db::Faxes,
            &id,
            current["_rev"].as_str().unwrap_or_default(),
        )
        .await?;
    Ok(moved)
}

/// Copies one attachment between documents; returns the target's new revision.
pub async fn copy_attachment(
    store: &SharedStore,
    from: (&Db, &str, &str),
    to: (&Db, &str, Option<&str>, &str),
) -> Result<Option<String>, IntakeError> {
    let Some(att) = store.get_attachment(from.0, from.1, from.2).await? else {
        return Ok(None);
    };
    Ok(Some(
        store
            .put_attachment(to.0, to.1, to.2, to.3, &att.content_type, att.body)
            .await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_names() {
        assert!(accepted_type("application/pdf"));
        assert!(accepted_type(
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        ));
        assert!(!accepted_type("application/x-msdownload"));
        assert_eq!(original_name("application/pdf"), "original_file.pdf");
        assert_eq!(original_name("image/tiff"), "original_file.tiff");
        assert_eq!(sniff(b"%PDF-1.4"), Some("application/pdf"));
        assert_eq!(sniff(b"II*\0"), Some("image/tiff"));
        assert_eq!(sniff(b"hello"), None);
        assert_eq!(
            effective_type("application/octet-stream", b"%PDF-1.7").unwrap(),
            "application/pdf"
        );
        assert!(effective_type("application/pdf", b"MZ").is_err());
        assert!(effective_type("application/x-msdownload", b"MZ").is_err());
        assert_eq!(
            effective_type("application/pdf", b"\x89PNG\r\n"),
            Err(DocumentTypeError::Mismatch {
                declared: "application/pdf".into(),
                found: "image/png"
            })
        );
        assert_eq!(effective_type("image/tif", b"II*\0").unwrap(), "image/tiff");
        assert_eq!(
            effective_type("image/jpg", b"\xff\xd8\xff").unwrap(),
            "image/jpeg"
        );
        assert_eq!(
            effective_type("application/msword", b"\xd0\xcf").unwrap(),
            "application/msword"
        );
    }
}
