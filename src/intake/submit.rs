//! The intake service: how an outbound fax job is built and queued, whichever way it comes in
//! (the API's `PUT …/faxes`, e-mail to fax, a resubmit). A [`Submission`] (plain data: the
//! account, the faxbox, who sends, the job's fields, the document) goes in; the rules run here
//! — faxbox defaults, the `faxes` schema, numbers and caller texts, the owner, the time zone,
//! the reseller — and the job comes out stored (`attaching_files`, its document handed to the
//! background intake pool), or a [`SubmitError`] says why not. Nothing here knows HTTP.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::background::IntakePool;
use super::fetch::FetchPolicy;
use super::numbers::{NumberPolicy, check_texts};
use super::{Conversion, Document, DocumentTypeError, IntakeError};
use crate::accounts::{self, Account, AccountsError, Faxbox};
use crate::config::SystemConfig;
use crate::ids::{Db, new_id};
use crate::model::{Folder, JobStatus};
use crate::notify::Doorbell;
use crate::notify::progress::{self, Progress};
use crate::numbers::NumberError;
use crate::store::{SharedStore, StoreError};
use crate::timezone;

/// Why a submission is refused. Nothing is stored when one is returned, except where a
/// variant says so.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The account or faxbox is unknown (or another account's), or a number is taken.
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    /// The job's fields break the `faxes` schema: Kazoo's error map
    /// (`{"<field>": {"<rule>": {"message", …}}}`).
    #[error("the job does not match its schema: {0}")]
    Invalid(Value),
    /// A required field is missing.
    #[error("{field}: {message}")]
    Missing {
        field: &'static str,
        message: &'static str,
    },
    /// A time zone that is not in the tz database.
    #[error("{field}: unknown time zone {value}")]
    UnknownZone { field: String, value: Value },
    /// A destination or caller id refused, or a caller text.
    #[error(transparent)]
    Number(#[from] NumberError),
    /// A document that cannot be faxed (its type, or content that is not what its label
    /// says).
    #[error(transparent)]
    DocumentType(#[from] DocumentTypeError),
    /// A document problem found while storing it.
    #[error("{0}")]
    Document(String),
    /// The document could not be converted ([`Handoff::Converted`]); the jobs of the
    /// submission ended `failed` with this reason, in the outbox.
    #[error("the document could not be converted: {0}")]
    Conversion(String),
}

impl From<IntakeError> for SubmitError {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::Store(s) => SubmitError::Store(s),
            IntakeError::Document(m) => SubmitError::Document(m),
            IntakeError::Number(n) => SubmitError::Number(n),
        }
    }
}

/// Who submits a fax.
#[derive(Clone, Debug, Default)]
pub struct Sender {
    /// The submitting user (a user of the account), if a user submits — not an API key, not
    /// a mail from an unknown address.
    pub user_id: Option<String>,
    /// Whether the sender may keep the `owner_id` the job's fields (or its faxbox) name:
    /// an administrator may; a plain user's fax is always theirs.
    pub may_name_owner: bool,
}

/// One fax to queue.
#[derive(Clone, Debug)]
pub struct Submission {
    /// The account the fax is sent from.
    pub account: Account,
    /// The faxbox it is sent through: its settings fill the fields the job leaves unset.
    pub faxbox: Option<Faxbox>,
    /// The user the fax belongs to whatever the fields say (the API's `/users/{id}/faxes`).
    pub owner: Option<String>,
    pub sender: Sender,
    /// The job's public fields, as the API's `data` has them (`to_number`, `from_number`,
    /// `notifications`, `document.url`, `fax_timezone` or `timezone`, `retries`, …);
    /// private (`pvt_*`, `_*`) keys and `id` are ignored.
    pub fields: Map<String, Value>,
    /// The document, when it is given rather than named by `document.url`.
    pub document: Option<Document>,
}

/// What becomes of an e-mail's jobs after they are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handoff {
    /// Their document is converted in the background pool (the caller answers at once).
    Background,
    /// Their document is converted before the call returns: `Ok` means every job is
    /// `pending`, a conversion failure is [`SubmitError::Conversion`].
    Converted,
}

/// Faxes of one document to several numbers through a faxbox: what an e-mail to
/// `<number>@<faxbox address>` asks for.
#[derive(Clone, Debug)]
pub struct FaxboxSubmission {
    pub account: Account,
    pub faxbox: Faxbox,
    /// The user of the account who sent it, if the sender is one.
    pub sender_user: Option<String>,
    /// Destinations, one fax each.
    pub numbers: Vec<String>,
    pub document: Document,
    /// More job fields for every fax (e.g. `subject`), checked as the API checks them; a
    /// field set here wins over the faxbox's (a `notifications` replaces the faxbox's
    /// `notifications.outbound`).
    pub fields: Map<String, Value>,
    pub handoff: Handoff,
}

/// The intake service: the store, the live configuration, and where documents are converted.
/// Cheap to clone.
#[derive(Clone)]
pub struct IntakeService {
    pub store: SharedStore,
    pub sysconf: Arc<SystemConfig>,
    pub converter: Arc<crate::convert::Converter>,
    /// How a `document.url` is fetched.
    pub fetch: FetchPolicy,
    /// Where stored jobs are converted (and fetched) after the caller got its answer.
    pub pool: IntakePool,
    /// Rung after a stored job's `queued` webhook is recorded.
    pub notify: Doorbell,
}

/// Fills a job's unset fields from its faxbox (Kazoo's faxbox defaults): caller name and
/// number, page header, T.30 identity, zone, retries (3 when neither says), owner, outbound
/// notifications; and `faxbox_id`.
pub fn faxbox_defaults(data: &mut Map<String, Value>, faxbox: &Faxbox) {
    let pairs = [
        ("from_name", "caller_name"),
        ("fax_identity_name", "fax_header"),
        ("from_number", "caller_id"),
        ("fax_identity_number", "fax_identity"),
        ("fax_timezone", "fax_timezone"),
        ("retries", "retries"),
        ("owner_id", "owner_id"),
    ];
    for (job_key, box_key) in pairs {
        if !data.contains_key(job_key)
            && let Some(v) = faxbox.doc.get(box_key)
            && !v.is_null()
        {
            data.insert(job_key.into(), v.clone());
        }
    }
    if !data.contains_key("retries") {
        data.insert("retries".into(), json!(3));
    }
    if !data.contains_key("notifications")
        && let Some(n) = faxbox.doc.pointer("/notifications/outbound")
    {
        data.insert("notifications".into(), n.clone());
    }
    data.insert("faxbox_id".into(), json!(faxbox.id));
}

/// A time zone a job or faxbox names (`fax_timezone`), checked against the tz database;
/// `None` when it names none (absent, empty or `"inherit"`).
pub fn requested_zone(field: &str, value: Option<&Value>) -> Result<Option<String>, SubmitError> {
    let Some(v) = value else {
        return Ok(None);
    };
    let name = v.as_str().unwrap_or_default();
    if !timezone::is_set(Some(name)) {
        return Ok(None);
    }
    if timezone::parse(name).is_none() {
        return Err(SubmitError::UnknownZone {
            field: field.to_string(),
            value: v.clone(),
        });
    }
    Ok(Some(name.to_string()))
}

/// Text fields of a job that reach the media engine, mail headers or file names.
const JOB_TEXTS: [&str; 3] = ["from_name", "to_name", "fax_identity_name"];
/// T.30 identities of a job.
const JOB_IDENTITIES: [&str; 1] = ["fax_identity_number"];

impl IntakeService {
    /// How intake converts documents, with the live `store_fax_tiff`.
    pub fn conversion(&self) -> Conversion {
        Conversion {
            converter: self.converter.clone(),
            keep_tiff: self.sysconf.fax().store_fax_tiff,
        }
    }

    /// Checks a job's public fields: the `faxes` schema (defaults filled), a document
    /// (`has_document`, else `document.url`), `to_number` (E.164, not denied), `from_number`
    /// (E.164, not denied, a number of the account unless it may use any) and the caller
    /// texts. `timezone` is read as `fax_timezone`. Returns the fields, numbers normalised.
    pub async fn validate_fields(
        &self,
        account: &Account,
        mut data: Map<String, Value>,
        has_document: bool,
    ) -> Result<Map<String, Value>, SubmitError> {
        if let Some(tz) = data.remove("timezone")
            && !data.contains_key("fax_timezone")
        {
            data.insert("fax_timezone".into(), tz);
        }
        let mut doc = Value::Object(data);
        crate::schema::validate_named("faxes", &mut doc).map_err(SubmitError::Invalid)?;
        if !has_document && doc.pointer("/document/url").is_none() {
            return Err(SubmitError::Missing {
                field: "document.url",
                message: "add document url or upload a document",
            });
        }
        let Value::Object(mut m) = doc else {
            return Err(SubmitError::Invalid(json!({"data": {"type": {
                "message": "Value did not match type(s): object"}}})));
        };
        let policy = NumberPolicy::for_account(&self.sysconf.fax(), &account.doc);
        let to = m
            .get("to_number")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let to = policy.destination("to_number", &to)?;
        m.insert("to_number".into(), json!(to));
        if let Some(from) = m.get("from_number").and_then(Value::as_str) {
            let from = policy
                .caller_id(&self.store, &account.id, "from_number", from)
                .await?;
            m.insert("from_number".into(), json!(from));
        }
        check_texts(&m, &JOB_TEXTS, &JOB_IDENTITIES)?;
        Ok(m)
    }

    /// Builds the job of a submission without storing anything: every rule is checked, so a
    /// caller with several faxes to queue can check them all before it stores one.
    pub async fn prepare(&self, sub: Submission) -> Result<PreparedJob, SubmitError> {
        let Submission {
            account,
            faxbox,
            owner,
            sender,
            fields,
            document,
        } = sub;
        let mut data = crate::schema::client_fields(fields);
        data.remove("ui_metadata");
        if let Some(fb) = &faxbox {
            faxbox_defaults(&mut data, fb);
        }
        let mut fields = self
            .validate_fields(&account, data, document.is_some())
            .await?;
        match owner {
            Some(u) => {
                fields.insert("owner_id".into(), json!(u));
            }
            None if !sender.may_name_owner || !fields.contains_key("owner_id") => {
                if let Some(o) = sender.user_id {
                    fields.insert("owner_id".into(), json!(o));
                }
            }
            None => {}
        }
        // fax_timezone: the job's, else the faxbox's (a default above), else its owner's
        // (faxbox) or the fax owner's, else the account's (and up its tree).
        if requested_zone("fax_timezone", fields.get("fax_timezone"))?.is_none() {
            let user = match &faxbox {
                Some(fb) => fb.owner_id(),
                None => fields.get("owner_id").and_then(Value::as_str),
            }
            .map(str::to_string);
            let zone =
                accounts::zone_of(&self.store, &account.id, &account.doc, user.as_deref()).await?;
            fields.insert("fax_timezone".into(), json!(zone));
        }
        let now = crate::time::now_gregorian();
        let mut job = Value::Object(fields);
        job["_id"] = json!(new_id());
        job["pvt_type"] = json!("fax");
        job["pvt_job_status"] = json!(JobStatus::AttachingFiles.as_str());
        job["pvt_created"] = json!(now);
        job["pvt_modified"] = json!(now);
        job["attempts"] = json!(0);
        job["pvt_account_id"] = json!(account.id.as_str());
        job["pvt_account_db"] = json!("faxes");
        job["pvt_reseller_id"] = json!(accounts::reseller_of(&self.store, &account.doc).await?);
        Ok(PreparedJob { job, document })
    }

    /// Queues one fax: [`prepare`](Self::prepare), then the job is stored (`attaching_files`)
    /// with its document in one write, or, in URL mode, alone; the background pool fetches and
    /// converts the document (→ `pending`, or `failed` with the reason in the outbox). A
    /// given document whose type cannot be faxed is stored as a job that ends `failed` (the
    /// API checks the type before it calls). Returns the stored job.
    pub async fn submit(&self, sub: Submission) -> Result<Value, SubmitError> {
        let prepared = self.prepare(sub).await?;
        self.enqueue(prepared).await
    }

    /// Records the `queued` webhook of a job just stored, if its faxbox has an outbound
    /// callback ([`progress`]); a failure is logged, the job stays queued.
    async fn announce_queued(&self, job: &Value) {
        progress::announce(&self.store, &self.notify, job, Progress::Queued).await;
    }

    /// Stores a prepared job and hands it to the background pool (see [`submit`](Self::submit)).
    pub async fn enqueue(&self, prepared: PreparedJob) -> Result<Value, SubmitError> {
        let PreparedJob { job, document } = prepared;
        let Some(mut doc) = document else {
            let saved = self.store.save(&Db::Faxes, job).await?;
            self.announce_queued(&saved).await;
            self.pool
                .fetch_and_convert(
                    self.store.clone(),
                    self.conversion(),
                    self.fetch.clone(),
                    saved.clone(),
                    self.notify.clone(),
                )
                .await;
            return Ok(saved);
        };
        match super::effective_type(&doc.content_type, &doc.bytes) {
            Err(reason) => {
                let saved = self.store.save(&Db::Faxes, job).await?;
                self.announce_queued(&saved).await;
                let failed = super::fail_job(&self.store, saved, &reason.to_string()).await?;
                super::ring_if_notified(&self.notify, &failed);
                Ok(failed)
            }
            Ok(ct) => {
                doc.content_type = ct;
                let saved = super::save_with_document(&self.store, job, doc).await?;
                self.announce_queued(&saved).await;
                self.pool
                    .convert(
                        self.store.clone(),
                        self.conversion(),
                        saved.clone(),
                        self.notify.clone(),
                    )
                    .await;
                Ok(saved)
            }
        }
    }

    /// Queues one fax of `document` to each number through a faxbox — the e-mail-to-fax
    /// entry point. All or nothing: the document's type and every number are checked before
    /// anything is stored, and when storing one job fails the ones stored before it are
    /// taken back. Returns the jobs, in the order of `numbers`.
    ///
    /// A caller outside the API (fax_smtp) resolves the faxbox first
    /// ([`accounts::faxbox_by_address`] for `<number>@<faxbox address>`, then
    /// [`accounts::account`] for its account), then calls this with the sender's user (if
    /// the mail's sender is a user of the account), the numbers and the document; the
    /// faxbox's owner stays the faxes' owner when it has one. With [`Handoff::Converted`] the
    /// answer waits for the conversion, so `Ok` means every fax is queued to be sent.
    pub async fn submit_faxbox(&self, sub: FaxboxSubmission) -> Result<Vec<Value>, SubmitError> {
        let FaxboxSubmission {
            account,
            faxbox,
            sender_user,
            numbers,
            mut document,
            fields,
            handoff,
        } = sub;
        document.content_type = super::effective_type(&document.content_type, &document.bytes)?;
        let mut jobs = Vec::with_capacity(numbers.len());
        for n in &numbers {
            let mut data = fields.clone();
            data.insert("to_number".into(), json!(n));
            let sub = Submission {
                account: account.clone(),
                faxbox: Some(faxbox.clone()),
                owner: None,
                sender: Sender {
                    user_id: sender_user.clone(),
                    may_name_owner: true,
                },
                fields: data,
                // Shared bytes: the document is checked once and stored with each job below.
                document: Some(document.clone()),
            };
            jobs.push(self.prepare(sub).await?.job);
        }
        let mut saved: Vec<Value> = Vec::with_capacity(jobs.len());
        for job in jobs {
            match super::save_with_document(&self.store, job, document.clone()).await {
                Ok(j) => saved.push(j),
                Err(e) => {
                    for j in &saved {
                        super::abandon(&self.store, j["_id"].as_str().unwrap_or_default()).await;
                    }
                    return Err(e.into());
                }
            }
        }
        for j in &saved {
            self.announce_queued(j).await;
        }
        match handoff {
            Handoff::Background => {
                for j in &saved {
                    self.pool
                        .convert(
                            self.store.clone(),
                            self.conversion(),
                            j.clone(),
                            self.notify.clone(),
                        )
                        .await;
                }
                Ok(saved)
            }
            Handoff::Converted => self.convert_all(saved).await,
        }
    }

    /// Resubmits (outbox) or forwards (inbox) a stored fax of `account`: a new job with the
    /// same document and the source's fields, `overrides` (public fields) merged in and
    /// checked as a submission's; `resubmitting` until its document is copied, then converted
    /// before the answer (→ `pending`, or `failed` with the reason). A forwarded fax is sent
    /// from the number it came in on unless `overrides` names one. Returns the new job.
    pub async fn copy(
        &self,
        account: &Account,
        source_db: &Db,
        source: &Value,
        folder: Folder,
        overrides: Map<String, Value>,
    ) -> Result<Value, SubmitError> {
        let mut base: Map<String, Value> = source
            .as_object()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
            .collect();
        if folder == Folder::Inbox {
            // The number the fax came in on sends it on, unless the request says otherwise.
            let our_number = base.get("to_number").cloned();
            base.remove("to_number");
            base.remove("from_name");
            base.remove("name");
            if let Some(n) = our_number {
                base.insert("from_number".into(), n);
            }
        }
        let mut overrides = crate::schema::client_fields(overrides);
        overrides.remove("ui_metadata");
        overrides.remove("action");
        let mut public = crate::schema::client_fields(base.clone());
        public.extend(overrides);
        let fields = self.validate_fields(account, public, true).await?;
        let now = crate::time::now_gregorian();
        let mut job: Map<String, Value> = base
            .into_iter()
            .filter(|(k, _)| k.starts_with("pvt_"))
            .collect();
        job.extend(fields);
        let new = new_id();
        job.insert("_id".into(), json!(new));
        job.insert("pvt_type".into(), json!("fax"));
        job.insert(
            "pvt_job_status".into(),
            json!(JobStatus::Resubmitting.as_str()),
        );
        job.insert("pvt_created".into(), json!(now));
        job.insert("pvt_modified".into(), json!(now));
        job.insert("pvt_account_id".into(), json!(account.id.as_str()));
        job.insert("pvt_account_db".into(), json!("faxes"));
        job.insert("attempts".into(), json!(0));
        let saved = self.store.save(&Db::Faxes, Value::Object(job)).await?;
        self.announce_queued(&saved).await;
        let source_id = source["_id"].as_str().unwrap_or_default();
        let mut rev = saved["_rev"].as_str().map(str::to_string);
        for name in super::attachment_names(source) {
            let target = if name.starts_with("received_file_") {
                "original_file.tiff".to_string()
            } else if name.starts_with("original_file")
                || name == "fax_file.tiff"
                || name == "pdf_file.pdf"
            {
                name.clone()
            } else {
                continue;
            };
            if let Some(r) = super::copy_attachment(
                &self.store,
                (source_db, source_id, &name),
                (&Db::Faxes, &new, rev.as_deref(), &target),
            )
            .await?
            {
                rev = Some(r);
            }
        }
        let job = self
            .store
            .get(&Db::Faxes, &new)
            .await?
            .filter(|d| !accounts::is_deleted(d))
            .ok_or(StoreError::NotFound(new))?;
        let done = super::finish_intake(&self.store, &self.conversion(), job).await?;
        super::ring_if_notified(&self.notify, &done);
        Ok(done)
    }

    /// Converts stored jobs one after the other; when one fails, the rest end `failed` with
    /// the same reason (the document is the same) and the answer is the failure.
    async fn convert_all(&self, saved: Vec<Value>) -> Result<Vec<Value>, SubmitError> {
        let conversion = self.conversion();
        let mut done = Vec::with_capacity(saved.len());
        let mut failure: Option<String> = None;
        for job in saved {
            if let Some(reason) = &failure {
                let failed = super::fail_job(&self.store, job, reason).await?;
                super::ring_if_notified(&self.notify, &failed);
                continue;
            }
            let j = super::finish_intake(&self.store, &conversion, job).await?;
            super::ring_if_notified(&self.notify, &j);
            if j.get("pvt_job_status").and_then(Value::as_str) == Some(JobStatus::Failed.as_str()) {
                failure = Some(
                    j.pointer("/tx_result/result_text")
                        .and_then(Value::as_str)
                        .unwrap_or("document could not be prepared")
                        .to_string(),
                );
            }
            done.push(j);
        }
        match failure {
            Some(reason) => Err(SubmitError::Conversion(reason)),
            None => Ok(done),
        }
    }
}

/// Fields a copy (resubmit/forward) never carries over.
const NOT_COPIED: [&str; 20] = [
    "_id",
    "_rev",
    "_attachments",
    "tx_result",
    "rx_result",
    "retry_after",
    "pvt_job_node",
    "pvt_queue",
    "pvt_delivered_date",
    "folder",
    "pvt_deleted",
    "reschedule_rule",
    "previous_status",
    "call_id",
    "cdr_doc_id",
    "source_type",
    "description",
    "media_type",
    "timestamp",
    "pvt_pages",
];

/// A job built by [`IntakeService::prepare`], not stored yet.
#[derive(Clone, Debug)]
pub struct PreparedJob {
    /// The job document (`attaching_files`, with its `_id`).
    pub job: Value,
    pub document: Option<Document>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::AccountId;
    use crate::store::Store;
    use crate::store::sqlite::SqliteStore;

    /// A store with one account (a user and a faxbox in it) and the service over it.
    struct World {
        service: IntakeService,
        account: Account,
        faxbox: Faxbox,
        _dir: tempfile::TempDir,
    }

    async fn world() -> World {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).await.unwrap();
        let id = AccountId::generate();
        for db in [
            Db::SystemConfig,
            Db::Accounts,
            Db::Faxes,
            Db::Account(id.clone()),
        ] {
            s.ensure_db(&db).await.unwrap();
        }
        let store: SharedStore = Arc::new(s);
        let doc = store
            .save(
                &Db::Accounts,
                json!({"_id": id.as_str(), "pvt_type": "account", "name": "acme",
                       "timezone": "Europe/Paris", "pvt_tree": []}),
            )
            .await
            .unwrap();
        let db = Db::Account(id.clone());
        for (uid, tz) in [("alice", "America/New_York"), ("bob", "Asia/Tokyo")] {
            store
                .save(&db, json!({"_id": uid, "pvt_type": "user", "timezone": tz}))
                .await
                .unwrap();
        }
        let fb = json!({"_id": "box1", "pvt_type": "faxbox", "name": "Sales",
                        "caller_name": "Acme Sales", "fax_header": "ACME",
                        "fax_identity": "+33 1 23 45 67 89", "owner_id": "alice",
                        "caller_id": "+15557770000", "retries": 2,
                        "notifications": {"outbound": {"email": {"send_to": ["a@acme.test"]}}},
                        "pvt_account_id": id.as_str(),
                        "pvt_smtp_email_address": "0a1b2c3d.fax.acme.test",
                        "custom_smtp_email_address": "fax.acme.test"});
        let saved = store.save(&db, fb.clone()).await.unwrap();
        let mut copy = fb;
        copy["pvt_account_db"] = json!("faxes");
        store.save(&Db::Faxes, copy).await.unwrap();
        accounts::claim_numbers(&store, &id, "cf1", &["+15557770000".to_string()])
            .await
            .unwrap();
        let sysconf = SystemConfig::load(store.clone(), "faxd@test")
            .await
            .unwrap();
        let converter = Arc::new(crate::convert::Converter::new(
            crate::convert::ConvertConfig::default(),
        ));
        World {
            service: IntakeService {
                store,
                sysconf,
                converter,
                fetch: FetchPolicy {
                    max_bytes: 1 << 20,
                    timeout: std::time::Duration::from_secs(5),
                    max_redirects: 1,
                    allow_private: false,
                },
                pool: IntakePool::new(16, 1, 1),
                notify: Default::default(),
            },
            account: Account { id, doc },
            faxbox: Faxbox {
                id: "box1".into(),
                account: AccountId::generate(),
                doc: saved,
            },
            _dir: dir,
        }
    }

    fn png(blank: bool) -> Document {
        let mut img = image::GrayImage::from_pixel(400, 500, image::Luma([255u8]));
        if !blank {
            for x in 50..350 {
                img.put_pixel(x, 100, image::Luma([0u8]));
            }
        }
        let mut out = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageLuma8(img)
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        Document {
            content_type: "image/png".into(),
            bytes: out.into_inner().into(),
        }
    }

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    async fn queued(w: &World) -> Vec<Value> {
        w.service
            .store
            .docs_by_type(&Db::Faxes, "fax")
            .await
            .unwrap()
    }

    #[test]
    fn faxbox_settings_fill_only_what_the_job_leaves_unset() {
        let fb = Faxbox {
            id: "box1".into(),
            account: AccountId::generate(),
            doc: json!({"caller_name": "Box", "caller_id": "+15551230000",
                        "fax_header": "HDR", "fax_identity": "+1 555",
                        "owner_id": "u1", "fax_timezone": null,
                        "notifications": {"outbound": {"email": {"send_to": ["x@y.test"]}}}}),
        };
        let mut job = fields(json!({"from_name": "Mine", "to_number": "+15550001111"}));
        faxbox_defaults(&mut job, &fb);
        assert_eq!(job["from_name"], "Mine", "the job's own value stays");
        assert_eq!(job["from_number"], "+15551230000");
        assert_eq!(job["fax_identity_name"], "HDR");
        assert_eq!(job["fax_identity_number"], "+1 555");
        assert_eq!(job["owner_id"], "u1");
        assert_eq!(job["retries"], 3, "neither names retries: Kazoo's 3");
        assert!(
            !job.contains_key("fax_timezone"),
            "a null setting is no setting"
        );
        assert_eq!(job["notifications"]["email"]["send_to"][0], "x@y.test");
        assert_eq!(job["faxbox_id"], "box1");
    }

    #[tokio::test]
    async fn a_faxbox_submission_carries_the_faxbox_settings_and_owner_zone() {
        let w = world().await;
        let job = w
            .service
            .submit(Submission {
                account: w.account.clone(),
                faxbox: Some(w.faxbox.clone()),
                owner: None,
                sender: Sender {
                    user_id: Some("bob".into()),
                    may_name_owner: true,
                },
                fields: fields(json!({"to_number": "+1 (555) 000-1111"})),
                document: Some(png(false)),
            })
            .await
            .unwrap();
        assert_eq!(job["to_number"], "+15550001111", "normalised to E.164");
        assert_eq!(job["from_name"], "Acme Sales");
        assert_eq!(job["fax_identity_name"], "ACME");
        assert_eq!(job["from_number"], "+15557770000");
        assert_eq!(job["retries"], 2);
        assert_eq!(
            job["owner_id"], "alice",
            "the faxbox's owner, not the sender"
        );
        assert_eq!(
            job["fax_timezone"], "America/New_York",
            "the faxbox owner's zone"
        );
        assert_eq!(job["faxbox_id"], "box1");
        assert_eq!(job["pvt_job_status"], "attaching_files");
        assert_eq!(job["pvt_reseller_id"], w.account.id.as_str());
        assert!(job["_attachments"]["original_file.png"].is_object());
    }

    #[tokio::test]
    async fn a_plain_user_owns_the_fax_and_an_invalid_number_stores_nothing() {
        let w = world().await;
        let sub = |to: &str, may_name_owner| Submission {
            account: w.account.clone(),
            faxbox: None,
            owner: None,
            sender: Sender {
                user_id: Some("bob".into()),
                may_name_owner,
            },
            fields: fields(
                json!({"to_number": to, "owner_id": "alice", "from_number": "+15557770000",
                                  "document": {"url": "http://127.0.0.1:9/x.pdf"}}),
            ),
            document: None,
        };
        let p = w.service.prepare(sub("+15550001111", false)).await.unwrap();
        assert_eq!(
            p.job["owner_id"], "bob",
            "a plain user cannot name another owner"
        );
        assert_eq!(p.job["fax_timezone"], "Asia/Tokyo", "the fax owner's zone");
        let p = w.service.prepare(sub("+15550001111", true)).await.unwrap();
        assert_eq!(p.job["owner_id"], "alice", "an admin may");
        assert_eq!(p.job["fax_timezone"], "America/New_York");

        let e = w.service.submit(sub("12", true)).await.unwrap_err();
        assert!(
            matches!(&e, SubmitError::Number(NumberError::Invalid { field, value })
                         if field == "to_number" && value == "12"),
            "{e:?}"
        );
        assert!(queued(&w).await.is_empty(), "nothing stored");
    }

    #[tokio::test]
    async fn refusals_are_domain_errors() {
        let w = world().await;
        let base = |f: Value| Submission {
            account: w.account.clone(),
            faxbox: None,
            owner: None,
            sender: Sender::default(),
            fields: {
                let mut m = fields(f);
                m.insert("from_number".into(), json!("+15557770000"));
                m
            },
            document: None,
        };
        let e = w
            .service
            .submit(base(json!({"to_number": "+15550001111"})))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                SubmitError::Missing {
                    field: "document.url",
                    ..
                }
            ),
            "{e:?}"
        );
        let e = w
            .service
            .submit(base(
                json!({"to_number": "+15550001111", "fax_timezone": "Mars/Base",
                                "document": {"url": "http://x.test/a.pdf"}}),
            ))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, SubmitError::UnknownZone { value, .. } if value == "Mars/Base"),
            "{e:?}"
        );
        let e = w
            .service
            .submit(base(
                json!({"to_number": 5, "document": {"url": "http://x.test/a.pdf"}}),
            ))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, SubmitError::Invalid(m) if m.get("to_number").is_some()),
            "{e:?}"
        );
        assert!(queued(&w).await.is_empty(), "nothing stored");
    }

    fn to_numbers(w: &World, numbers: &[&str], document: Document) -> FaxboxSubmission {
        FaxboxSubmission {
            account: w.account.clone(),
            faxbox: w.faxbox.clone(),
            sender_user: Some("bob".into()),
            numbers: numbers.iter().map(|n| n.to_string()).collect(),
            document,
            fields: fields(json!({"subject": "Quote"})),
            handoff: Handoff::Converted,
        }
    }

    #[tokio::test]
    async fn one_fax_per_number_all_or_nothing() {
        let w = world().await;
        let e = w
            .service
            .submit_faxbox(to_numbers(
                &w,
                &["+15550001111", "not-a-number"],
                png(false),
            ))
            .await
            .unwrap_err();
        assert!(matches!(e, SubmitError::Number(_)), "{e:?}");
        assert!(
            queued(&w).await.is_empty(),
            "the valid number was not queued either"
        );

        let mut pdf_labelled = png(false);
        pdf_labelled.content_type = "application/pdf".into();
        let e = w
            .service
            .submit_faxbox(to_numbers(&w, &["+15550001111"], pdf_labelled))
            .await
            .unwrap_err();
        assert!(matches!(e, SubmitError::DocumentType(_)), "{e:?}");
        assert!(queued(&w).await.is_empty());

        let jobs = w
            .service
            .submit_faxbox(to_numbers(
                &w,
                &["+15550001111", "+15550002222"],
                png(false),
            ))
            .await
            .unwrap();
        let to: Vec<&str> = jobs
            .iter()
            .map(|j| j["to_number"].as_str().unwrap())
            .collect();
        assert_eq!(to, ["+15550001111", "+15550002222"]);
        for j in &jobs {
            assert_eq!(
                j["pvt_job_status"], "pending",
                "converted before the answer"
            );
            assert_eq!(j["pvt_pages"], 1);
            assert_eq!(j["owner_id"], "alice");
            assert_eq!(j["subject"], "Quote");
        }
        assert_eq!(queued(&w).await.len(), 2);
    }

    #[tokio::test]
    async fn a_document_that_does_not_convert_fails_every_fax_of_the_message() {
        let w = world().await;
        let broken = Document {
            content_type: "image/png".into(),
            bytes: bytes::Bytes::from_static(b"\x89PNG\r\n\x1a\nnot really a png"),
        };
        let e = w
            .service
            .submit_faxbox(to_numbers(&w, &["+15550001111", "+15550002222"], broken))
            .await
            .unwrap_err();
        assert!(matches!(e, SubmitError::Conversion(_)), "{e:?}");
        assert!(queued(&w).await.is_empty(), "no job left queued");
    }

    #[tokio::test]
    async fn a_resubmit_copies_the_fax_and_its_document_with_the_changes_asked() {
        let w = world().await;
        let sub = to_numbers(&w, &["+15550001111"], png(false));
        let jobs = w.service.submit_faxbox(sub).await.unwrap();
        // The fax ends (as a sent fax would) in the outbox, document included.
        let sent = super::super::fail_job(&w.service.store, jobs[0].clone(), "busy")
            .await
            .unwrap();
        let month = crate::ids::split_modb_doc_id(sent["_id"].as_str().unwrap())
            .unwrap()
            .0;
        let db = Db::Modb(w.account.id.clone(), month);
        let copy = w
            .service
            .copy(
                &w.account,
                &db,
                &sent,
                Folder::Outbox,
                fields(json!({"to_number": "+1 555 000 3333", "action": "resubmit"})),
            )
            .await
            .unwrap();
        assert_ne!(copy["_id"], jobs[0]["_id"]);
        assert_eq!(copy["to_number"], "+15550003333");
        assert_eq!(copy["from_number"], "+15557770000");
        assert_eq!(copy["subject"], "Quote");
        assert_eq!(copy["faxbox_id"], "box1");
        assert_eq!(copy["pvt_job_status"], "pending");
        assert_eq!(copy["pvt_pages"], 1);
        assert!(
            copy.get("tx_result").is_none(),
            "the old result stays behind"
        );
        assert!(copy.get("action").is_none());
        assert!(copy["_attachments"]["original_file.png"].is_object());

        let e = w
            .service
            .copy(
                &w.account,
                &db,
                &sent,
                Folder::Outbox,
                fields(json!({"to_number": "+1900"})),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, SubmitError::Number(_)), "{e:?}");
    }

    #[tokio::test]
    async fn a_faxbox_is_found_by_either_address() {
        let w = world().await;
        let store = &w.service.store;
        for a in ["0A1B2C3D.fax.acme.test", "fax.acme.test"] {
            let fb = accounts::faxbox_by_address(store, a)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(fb.id, "box1", "{a}");
            assert_eq!(fb.account, w.account.id);
            assert_eq!(fb.owner_id(), Some("alice"));
        }
        assert!(
            accounts::faxbox_by_address(store, "acme.test")
                .await
                .unwrap()
                .is_none()
        );
        let e = accounts::faxbox(store, &w.account.id, "box2")
            .await
            .unwrap_err();
        assert!(matches!(e, AccountsError::FaxboxNotFound(id) if id == "box2"));
    }
}
