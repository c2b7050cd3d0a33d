//! Storage: one domain-level [`Store`] trait with two backends, `embedded` (SQLite) and
//! `couchdb` (CouchDB 3 over HTTP, Kazoo's database layout).
//!
//! Documents are JSON objects with CouchDB semantics: `_id`, `_rev` (`N-<hex>`), a stale
//! `_rev` is a [`StoreError::Conflict`], attachments are listed as stubs under
//! `_attachments` and are dropped when a later save leaves them out. The queue views of
//! Kazoo's fax application are typed methods. Every write is announced on the change feed of
//! its database ([`Store::subscribe`]).

pub mod conflicts;
pub mod couch;
pub mod observed;
pub mod sqlite;
pub mod views;

use std::io;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

pub use crate::ids::{AccountId, Db, YearMonth};
use crate::model::{Folder, JobStatus};

/// A stream of attachment bytes.
pub type ByteStream =
    Pin<Box<dyn Stream<Item = std::result::Result<Bytes, io::Error>> + Send + 'static>>;

/// A shared store handle.
pub type SharedStore = Arc<dyn Store>;

/// Which backend a store is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Embedded,
    Couchdb,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Couchdb => "couchdb",
        }
    }
}

/// Storage errors. Expected outcomes (a missing document) are `Ok(None)`, not errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("document update conflict")]
    Conflict,
    #[error("database {0} does not exist")]
    NoDatabase(String),
    #[error("document {0} not found")]
    NotFound(String),
    #[error("invalid document: {0}")]
    Invalid(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store's disk (or quota) is full: nothing was written; reads still work.
    #[error("store full: {0}")]
    Full(String),
    #[error("store I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("store error: {0}")]
    Backend(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// One entry of a change feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub db: Db,
    pub id: String,
    pub rev: String,
    pub deleted: bool,
}

/// An attachment being read.
pub struct Attachment {
    pub content_type: String,
    pub length: u64,
    pub body: ByteStream,
}

/// An attachment written together with its document by [`Store::save_with_attachments`].
#[derive(Clone, Debug)]
pub struct NewAttachment {
    pub name: String,
    pub content_type: String,
    pub data: Bytes,
}

/// A row of the outbound queue views (faxes database, `pvt_type == "fax"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRow {
    pub id: String,
    pub account_id: String,
    pub faxbox_id: Option<String>,
    pub owner_id: Option<String>,
    pub status: Option<JobStatus>,
    pub to: Option<String>,
    pub from: Option<String>,
    pub from_name: Option<String>,
    pub attempts: i64,
    pub retries: i64,
    /// `pvt_created`, gregorian seconds.
    pub created: i64,
    /// `pvt_modified`, gregorian seconds.
    pub modified: i64,
    pub retry_after: i64,
    /// `pvt_job_node`.
    pub node: Option<String>,
    /// `priority`: higher starts first among an account's due jobs (default 0).
    pub priority: i64,
    /// `send_at`: not before this time, unix seconds.
    pub send_at: Option<i64>,
}

impl JobRow {
    /// A row from the value the queue listing views emit (`faxes/list_by_*`).
    pub fn from_view_value(v: &Value) -> Option<Self> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let i = |k: &str| v.get(k).and_then(Value::as_i64).unwrap_or(0);
        Some(Self {
            id: s("id")?,
            account_id: s("account_id").unwrap_or_default(),
            faxbox_id: s("faxbox_id"),
            owner_id: s("owner_id"),
            status: s("status").and_then(|st| st.parse().ok()),
            to: s("to"),
            from: s("from"),
            from_name: s("from_name"),
            attempts: i("attempts"),
            retries: i("retries"),
            created: i("created"),
            modified: i("modified"),
            retry_after: i("retry_after"),
            node: s("node"),
            priority: i("priority"),
            send_at: v.get("send_at").and_then(Value::as_i64),
        })
    }

    /// When the job becomes due: `pvt_modified + retry_after` (gregorian seconds).
    pub fn due(&self) -> i64 {
        self.modified + self.retry_after
    }

    /// When the job may run (gregorian seconds): its due time, and not before `send_at`.
    pub fn runnable_at(&self) -> i64 {
        self.send_at.map_or(self.due(), |s| {
            self.due().max(crate::time::unix_to_gregorian(s))
        })
    }
}

/// A row of the MODB fax listings: the keys a listing is paged by, and the row as the
/// listing answers it, rendered once when the fax is written (the embedded store keeps it in
/// its listing table) so that a page is the join of its rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModbRow {
    pub id: String,
    pub created: i64,
    /// The listing's row, a JSON object: `id`, `folder`, `status`, `created`, `faxbox_id`,
    /// `owner_id`, `to`, `from` and the summary keys (`pvt_pages` and `pvt_delivered_date`
    /// named `pages` and `delivered`, as a fax's details name them); nulls left out.
    pub listing: String,
    /// The first 16 bytes of the SHA-256 of `listing` (a page's revision is made of them).
    pub digest: [u8; 16],
}

impl ModbRow {
    /// A row of its text, with the digest of it.
    pub fn of_listing(id: String, created: i64, listing: String) -> Self {
        use sha2::Digest;
        let full = sha2::Sha256::digest(listing.as_bytes());
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&full[..16]);
        Self {
            id,
            created,
            listing,
            digest,
        }
    }
}

/// A MODB fax as its listing indexes it: the row, and the keys that scope it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModbEntry {
    pub row: ModbRow,
    pub folder: Folder,
    pub faxbox_id: Option<String>,
    pub owner_id: Option<String>,
}

/// The keys of a MODB fax that its listing rows carry besides the indexed fields: what
/// Monster UI's fax app shows in its inbox and outbox tables (numbers, names, the result
/// with its pages) and the delivery date.
pub const MODB_SUMMARY_KEYS: [&str; 8] = [
    "from_number",
    "to_number",
    "from_name",
    "to_name",
    "tx_result",
    "rx_result",
    "pvt_pages",
    "pvt_delivered_date",
];

impl ModbRow {
    /// The listing key of this row.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            created: self.created,
            id: self.id.clone(),
        }
    }

    /// A row from the value a MODB listing view emits (`{id, folder, status, …, summary}`).
    pub fn from_view_value(v: &Value) -> Option<Self> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let summary = match v.get("summary") {
            Some(Value::Object(m)) => m.clone(),
            _ => serde_json::Map::new(),
        };
        Some(
            ModbEntry::new(
                s("id")?,
                s("folder"),
                s("status"),
                s("faxbox_id"),
                s("owner_id"),
                v.get("created").and_then(Value::as_i64).unwrap_or(0),
                &summary,
            )
            .row,
        )
    }
}

impl ModbEntry {
    /// The entry of these fields; `summary` holds the document's [`MODB_SUMMARY_KEYS`] (others
    /// and nulls are left out).
    fn new(
        id: String,
        folder: Option<String>,
        status: Option<String>,
        faxbox_id: Option<String>,
        owner_id: Option<String>,
        created: i64,
        summary: &serde_json::Map<String, Value>,
    ) -> Self {
        let folder = folder.and_then(|f| f.parse().ok()).unwrap_or(Folder::Inbox);
        let mut row = serde_json::Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v.filter(|v| !v.is_null()) {
                row.insert(k.to_string(), v);
            }
        };
        put("id", Some(Value::String(id.clone())));
        put("folder", Some(Value::String(folder.as_str().to_string())));
        put("status", status.map(Value::String));
        put("created", Some(Value::from(created)));
        put("faxbox_id", faxbox_id.clone().map(Value::String));
        put("owner_id", owner_id.clone().map(Value::String));
        let text = |k: &str| summary.get(k).filter(|v| v.is_string()).cloned();
        put("to", text("to_number"));
        put("from", text("from_number"));
        for k in MODB_SUMMARY_KEYS {
            let name = match k {
                "pvt_pages" => "pages",
                "pvt_delivered_date" => "delivered",
                other => other,
            };
            put(name, summary.get(k).cloned());
        }
        Self {
            row: ModbRow::of_listing(id, created, Value::Object(row).to_string()),
            folder,
            faxbox_id,
            owner_id,
        }
    }
}

/// A row of the e-mail-to-fax log listing (MODB `faxes/smtp_log`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SmtpLogRow {
    pub id: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// The first of the log's `errors`.
    pub error: Option<Value>,
    pub created: i64,
    pub faxbox_id: Option<String>,
    pub owner_id: Option<String>,
}

impl SmtpLogRow {
    /// The listing key of this row.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            created: self.created,
            id: self.id.clone(),
        }
    }

    /// A row from a log document; `None` unless it is a live `fax_smtp_log`.
    pub fn from_doc(doc: &Value) -> Option<Self> {
        if !live_of_type(doc, "fax_smtp_log") {
            return None;
        }
        let s = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_string);
        Some(Self {
            id: s("_id")?,
            from: s("from"),
            to: s("to"),
            error: doc.pointer("/errors/0").cloned(),
            created: doc.get("pvt_created").and_then(Value::as_i64).unwrap_or(0),
            faxbox_id: s("faxbox_id"),
            owner_id: s("owner_id"),
        })
    }

    /// A row from the value the `smtp_log` view emits.
    pub fn from_view_value(v: &Value) -> Option<Self> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Some(Self {
            id: s("id")?,
            from: s("from"),
            to: s("to"),
            error: v.get("error").filter(|e| !e.is_null()).cloned(),
            created: v.get("created").and_then(Value::as_i64).unwrap_or(0),
            faxbox_id: s("faxbox_id"),
            owner_id: s("owner_id"),
        })
    }
}

/// A created-time range in gregorian seconds, both ends inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreatedRange {
    pub from: i64,
    pub to: i64,
}

impl CreatedRange {
    pub fn all() -> Self {
        Self {
            from: 0,
            to: i64::MAX / 2,
        }
    }
}

/// Paging for listings: at most `limit` rows, starting at an opaque `start_key` returned as
/// `next_start_key` by the previous page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    pub limit: usize,
    pub start_key: Option<String>,
}

impl Page {
    pub fn first(limit: usize) -> Self {
        Self {
            limit,
            start_key: None,
        }
    }
}

/// A page of a listing.
#[derive(Clone, Debug, PartialEq)]
pub struct Listing<T> {
    pub rows: Vec<T>,
    pub next_start_key: Option<String>,
}

/// Which MODB listing: by folder, by faxbox within a folder, or by owner within a folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModbFilter {
    Folder(Folder),
    Faxbox(String, Folder),
    Owner(String, Folder),
}

/// Where a faxbox's SMTP address points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaxboxAddress {
    pub account_id: AccountId,
    pub faxbox_id: String,
}

/// Position in a listing, encoded into the opaque `start_key`: newest first, so a page
/// continues with rows strictly older than (created, id) in that order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub created: i64,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(&(self.created, &self.id)).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    pub fn decode(key: &str) -> Result<Self> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(key)
            .map_err(|_| StoreError::Invalid(format!("bad start_key '{key}'")))?;
        let (created, id): (i64, String) = serde_json::from_slice(&bytes)
            .map_err(|_| StoreError::Invalid(format!("bad start_key '{key}'")))?;
        Ok(Self { created, id })
    }
}

/// The storage contract every backend implements, and the conformance suite checks.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// Answers when the store is reachable and usable.
    async fn ping(&self) -> Result<()>;

    /// Creates a database if it does not exist (and installs its design documents).
    async fn ensure_db(&self, db: &Db) -> Result<()>;

    /// Whether a database exists.
    async fn db_exists(&self, db: &Db) -> Result<bool>;

    /// Deletes a database and everything in it. Missing databases are not an error.
    async fn delete_db(&self, db: &Db) -> Result<()>;

    /// Reads a document; `None` if it is missing or deleted.
    async fn get(&self, db: &Db, id: &str) -> Result<Option<Value>>;

    /// Every live leaf revision of a document, each a whole document with its `_rev`: first
    /// the one [`Store::get`] returns (CouchDB's winner), then the revisions in conflict with
    /// it (CouchDB's `_conflicts`: on a CouchDB cluster two rev-checked writes of the same
    /// revision can both succeed). Empty if the document is missing or deleted. A store that
    /// never keeps conflicting revisions (the embedded store) returns at most one. A losing
    /// revision is removed with [`Store::delete`] at its `_rev`; [`conflicts`] arbitrates.
    async fn get_leaves(&self, db: &Db, id: &str) -> Result<Vec<Value>>;

    /// Creates or updates a document. A document without `_id` gets a new random id. An
    /// existing document needs its current `_rev`, else [`StoreError::Conflict`]. Returns the
    /// saved document with its new `_id`/`_rev`.
    async fn save(&self, db: &Db, doc: Value) -> Result<Value>;

    /// Like [`Store::save`], and stores `attachments` (replacing same-named ones) in the same
    /// atomic write: one new revision, all or nothing, so no reader ever sees the document
    /// without them. Existing attachments neither given nor listed as stubs are dropped.
    async fn save_with_attachments(
        &self,
        db: &Db,
        doc: Value,
        attachments: Vec<NewAttachment>,
    ) -> Result<Value>;

    /// Deletes a document at a revision.
    async fn delete(&self, db: &Db, id: &str, rev: &str) -> Result<String>;

    /// Stores (or replaces) an attachment, streamed. `rev` is the document's current revision,
    /// or `None` to create an empty document holding it. Returns the new revision.
    async fn put_attachment(
        &self,
        db: &Db,
        id: &str,
        rev: Option<&str>,
        name: &str,
        content_type: &str,
        body: ByteStream,
    ) -> Result<String>;

    /// Opens an attachment for streaming; `None` if the document or attachment is missing.
    async fn get_attachment(&self, db: &Db, id: &str, name: &str) -> Result<Option<Attachment>>;

    /// Removes an attachment; returns the new revision.
    async fn delete_attachment(&self, db: &Db, id: &str, rev: &str, name: &str) -> Result<String>;

    /// A document as stored: its revision and its JSON text without `_id`, `_rev` and
    /// `_attachments` (`None` when missing or deleted). For reads that render the text
    /// themselves rather than walk a parsed document.
    async fn get_text(&self, db: &Db, id: &str) -> Result<Option<(String, String)>> {
        Ok(self.get(db, id).await?.map(|doc| {
            let mut doc = match doc {
                Value::Object(m) => m,
                _ => serde_json::Map::new(),
            };
            let rev = match doc.remove("_rev") {
                Some(Value::String(r)) => r,
                _ => String::new(),
            };
            doc.remove("_id");
            doc.remove("_attachments");
            (rev, Value::Object(doc).to_string())
        }))
    }

    /// Accounts with pending or locked jobs, with their job count (`faxes/schedule_accounts`).
    async fn schedule_accounts(&self) -> Result<Vec<(AccountId, u64)>>;

    /// The accounts of [`Store::schedule_accounts`], in order, without counting their jobs:
    /// what the scheduler asks at every change of the queue, so a store may answer it
    /// without visiting every waiting job.
    async fn accounts_with_work(&self) -> Result<Vec<AccountId>> {
        Ok(self
            .schedule_accounts()
            .await?
            .into_iter()
            .map(|(a, _)| a)
            .collect())
    }

    /// How many queued jobs each status has, over every account (`faxes/queue_depth`), in
    /// status order; statuses without jobs are left out.
    async fn queue_depth(&self) -> Result<Vec<(String, u64)>>;

    /// An account's pending jobs, oldest due time first (`faxes/jobs_by_account`).
    async fn jobs_by_account(&self, account: &AccountId, limit: usize) -> Result<Vec<JobRow>>;

    /// An account's locked jobs (`faxes/locked_jobs_by_account`).
    async fn locked_jobs_by_account(&self, account: &AccountId) -> Result<Vec<JobRow>>;

    /// Jobs being processed, by `pvt_job_node`; `None` lists every node
    /// (`faxes/processing_by_node`).
    async fn processing_by_node(&self, node: Option<&str>) -> Result<Vec<JobRow>>;

    /// Jobs of every account in `status` whose `pvt_modified` (gregorian seconds) is at or
    /// before `modified_before`, oldest first (`faxes/jobs_by_state`): for sweeps that
    /// finish what a crash interrupted, such as a stranded `attaching_files` intake.
    async fn stale_jobs(&self, status: JobStatus, modified_before: i64) -> Result<Vec<JobRow>>;

    /// An account's queued jobs, optionally of one status, newest first
    /// (`faxes/list_by_account_state`, and `list_by_account` without a status).
    async fn list_by_account_state(
        &self,
        account: &AccountId,
        status: Option<JobStatus>,
        range: CreatedRange,
        page: Page,
    ) -> Result<Listing<JobRow>>;

    /// A faxbox's queued jobs, optionally of one status, newest first
    /// (`faxes/list_by_faxbox_state`, and `list_by_faxbox` without a status).
    async fn list_by_faxbox_state(
        &self,
        faxbox_id: &str,
        status: Option<JobStatus>,
        range: CreatedRange,
        page: Page,
    ) -> Result<Listing<JobRow>>;

    /// The faxbox that owns an SMTP address or domain (`faxbox/email_address` in the faxes
    /// database: generated `pvt_smtp_email_address` and `custom_smtp_email_address`).
    async fn faxbox_by_email(&self, address: &str) -> Result<Option<FaxboxAddress>>;

    /// Faxes of an account's MODBs, newest first, across the months the range covers
    /// (`faxes/list_by_folder`, `list_by_faxbox`, `list_by_ownerid`).
    async fn modb_list(
        &self,
        account: &AccountId,
        filter: &ModbFilter,
        range: CreatedRange,
        page: Page,
    ) -> Result<Listing<ModbRow>>;

    /// The account's e-mail-to-fax logs in its MODBs, newest first, across the months the
    /// range covers (`faxes/smtp_log`).
    async fn smtp_logs(
        &self,
        account: &AccountId,
        range: CreatedRange,
        page: Page,
    ) -> Result<Listing<SmtpLogRow>>;

    /// Ids of the documents of `db` (an account MODB) with notifications to deliver
    /// (`pvt_notify.state == "pending"`) that are due at `due_by` (unix seconds,
    /// `pvt_notify.next_at`), soonest first, at most `limit` (`notify/pending`). A missing
    /// database has none.
    async fn notify_due(&self, db: &Db, due_by: i64, limit: usize) -> Result<Vec<String>>;

    /// Every live document of a database whose `pvt_type` is `pvt_type`, in id order, each with
    /// its `_id` and `_rev` (no attachment stubs). For the account-level listings of the API
    /// (users, callflows, faxboxes) and the `accounts` directory; an absent database is
    /// [`StoreError::NoDatabase`].
    async fn docs_by_type(&self, db: &Db, pvt_type: &str) -> Result<Vec<Value>>;

    /// Every live document of a database whose id starts with `prefix`, in id order, each
    /// with its `_id` and `_rev` (no attachment stubs): a range of the primary index, for
    /// the small documents that hang off another by id (a fax's progress events). An absent
    /// database is [`StoreError::NoDatabase`].
    async fn docs_with_prefix(&self, db: &Db, prefix: &str) -> Result<Vec<Value>>;

    /// Subscribes to the change feed of a database: every later write to it is delivered.
    async fn subscribe(&self, db: &Db) -> Result<broadcast::Receiver<Change>>;
}

/// A new revision string `N-<32 hex>` following `prev`.
pub fn next_rev(prev: Option<&str>, body: &[u8]) -> String {
    use sha2::Digest;
    let n = prev
        .and_then(|r| r.split_once('-'))
        .and_then(|(n, _)| n.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    let mut h = sha2::Sha256::new();
    h.update(prev.unwrap_or("").as_bytes());
    h.update(body);
    h.update(crate::ids::new_id().as_bytes());
    let digest = h.finalize();
    format!("{n}-{}", hex::encode(&digest[..16]))
}

/// Reads a `pvt_*`/user field of a job document into a [`JobRow`]. `None` unless the
/// document is a live fax (`pvt_type == "fax"`, not `pvt_deleted`).
pub fn job_row(doc: &Value) -> Option<JobRow> {
    if !live_of_type(doc, "fax") {
        return None;
    }
    let s = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_string);
    let i = |k: &str| doc.get(k).and_then(Value::as_i64).unwrap_or(0);
    Some(JobRow {
        id: s("_id")?,
        account_id: s("pvt_account_id").unwrap_or_default(),
        faxbox_id: s("faxbox_id"),
        owner_id: s("owner_id"),
        status: s("pvt_job_status").and_then(|st| st.parse().ok()),
        to: s("to_number"),
        from: s("from_number"),
        from_name: s("from_name"),
        attempts: i("attempts"),
        retries: i("retries"),
        created: i("pvt_created"),
        modified: i("pvt_modified"),
        retry_after: i("retry_after"),
        node: s("pvt_job_node"),
        priority: i("priority"),
        send_at: doc.get("send_at").and_then(Value::as_i64),
    })
}

/// Whether `doc` is a live (not soft-deleted) document of `pvt_type`.
fn live_of_type(doc: &Value, pvt_type: &str) -> bool {
    doc.get("pvt_type").and_then(Value::as_str) == Some(pvt_type)
        && !doc
            .get("pvt_deleted")
            .and_then(Value::as_bool)
            .unwrap_or(false)
}

/// Reads a MODB fax document into its [`ModbEntry`] (missing folder = inbox); `None` for
/// anything but a live fax.
pub fn modb_entry(doc: &Value) -> Option<ModbEntry> {
    if !live_of_type(doc, "fax") {
        return None;
    }
    let s = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_string);
    let summary: serde_json::Map<String, Value> = MODB_SUMMARY_KEYS
        .iter()
        .filter_map(|k| doc.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
    Some(ModbEntry::new(
        s("_id")?,
        s("folder"),
        s("pvt_job_status"),
        s("faxbox_id"),
        s("owner_id"),
        doc.get("pvt_created").and_then(Value::as_i64).unwrap_or(0),
        &summary,
    ))
}

/// Wraps bytes already in memory as a [`ByteStream`].
pub fn bytes_stream(data: impl Into<Bytes>) -> ByteStream {
    let data: Bytes = data.into();
    Box::pin(futures_util::stream::once(async move { Ok(data) }))
}

/// Reads a whole attachment into memory (for small attachments and tests).
pub async fn read_all(mut body: ByteStream) -> Result<Vec<u8>> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// The months (newest first) that a created range touches, bounded to `max` months.
pub fn months_in_range(range: CreatedRange, max: usize) -> Vec<YearMonth> {
    let now = crate::time::now_gregorian();
    let newest = YearMonth::from_gregorian(range.to.min(now + 86_400 * 31));
    let oldest = YearMonth::from_gregorian(range.from.max(now - 86_400 * 366 * 10));
    let mut out = Vec::new();
    let mut m = newest;
    while m >= oldest && out.len() < max {
        out.push(m);
        m = m.prev();
    }
    out
}
