//! Delivering the pending notifications of one document, durably.
//!
//! A document with `pvt_notify.state == "pending"` gets its deliveries resolved on first
//! sight (the e-mail recipients, the faxbox's webhook) and written back as
//! `pvt_notify.deliveries` — which is also the delivery log the API shows. Each delivery due
//! now is then **claimed before it is attempted**: one rev-checked write raises its
//! `attempts`, sets its next try (`next_at`, backoff doubling from `retry_min` to
//! `retry_max`) and logs "sending". Only the writer whose claim succeeds sends; a conflict
//! means another notifier (or node) got there or the document changed, and the document is
//! read again. After the attempt a second rev-checked write records the result (delivered,
//! failed for good, or the error before the next try), re-read and re-applied on conflict.
//!
//! So two notifiers never send the same delivery at once, and nothing is sent twice in a
//! row: a crash between the send and the result leaves the claim, and the delivery is tried
//! once more only after its backoff — at least once, never lost. The mail keeps its
//! Message-ID and maildir name across tries, so such a repeat replaces or is recognisable.
//! A notification not delivered within `expire` of its event is given up (`expired`).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::Event;
use super::mail::{MailError, MailFile, Mailer, build};
use super::template::{self, Values};
use super::webhook::{self, Callback};
use crate::config::notify::NotifySection;
use crate::fax_format::{self, Format, pick_attachment};
use crate::ids::{AccountId, Db, YearMonth};
use crate::store::{SharedStore, StoreError, read_all};
use crate::time::now_unix;

/// How many rev conflicts in a row one step tolerates before it leaves the document to the
/// next wake-up.
const CONFLICTS: usize = 8;

/// Documents delivered per run of a database.
const BATCH: usize = 100;

/// Delivers notifications of one node.
pub struct Notifier {
    pub store: SharedStore,
    pub cfg: NotifySection,
    pub mailer: Mailer,
}

/// The result of one attempt.
enum Attempt {
    Delivered(String),
    /// Retrying cannot help (an address that does not parse, a relay's 5xx).
    Failed(String),
    Retry(String),
}

impl Notifier {
    /// Builds the notifier `[notify]` describes.
    pub fn new(
        store: SharedStore,
        cfg: NotifySection,
        data_dir: &std::path::Path,
    ) -> Result<Self, MailError> {
        let mailer = Mailer::from_config(&cfg, data_dir)?;
        Ok(Self { store, cfg, mailer })
    }

    /// The maildir, when that is the transport.
    pub fn maildir(&self) -> Option<PathBuf> {
        match &self.mailer {
            Mailer::Maildir(d) => Some(d.clone()),
            Mailer::Smtp(_) => None,
        }
    }

    fn backoff(&self, attempts: i64) -> i64 {
        let min = self.cfg.retry_min.max(1) as i64;
        let shift = (attempts - 1).clamp(0, 20) as u32;
        min.saturating_mul(1i64 << shift)
            .min(self.cfg.retry_max.max(1) as i64)
    }

    /// Delivers what is due in `db` now. Returns the earliest later time (unix seconds) a
    /// notification of `db` is due, if any.
    pub async fn run_db(&self, db: &Db) -> Result<Option<i64>, StoreError> {
        let ids = match self.store.notify_due(db, now_unix(), BATCH).await {
            Ok(ids) => ids,
            Err(StoreError::NoDatabase(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        // A full batch may have left more due (a long fax's page webhooks): due again now.
        let mut next: Option<i64> = (ids.len() >= BATCH).then(now_unix);
        for id in ids {
            if let Some(t) = self.process(db, &id).await? {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        Ok(next)
    }

    /// The MODBs a sweep looks at: this month's and last month's of every account.
    pub async fn sweep_dbs(&self) -> Result<Vec<Db>, StoreError> {
        let accounts = match self.store.docs_by_type(&Db::Accounts, "account").await {
            Ok(a) => a,
            Err(StoreError::NoDatabase(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let now = YearMonth::now();
        let mut out = Vec::new();
        for a in accounts {
            let Some(id) = a
                .get("_id")
                .and_then(Value::as_str)
                .and_then(|s| AccountId::parse(s).ok())
            else {
                continue;
            };
            out.push(Db::Modb(id.clone(), now));
            out.push(Db::Modb(id, now.prev()));
        }
        Ok(out)
    }

    /// Delivers the due notifications of document `id` in `db`. Returns when it is next due.
    pub async fn process(&self, db: &Db, id: &str) -> Result<Option<i64>, StoreError> {
        for _ in 0..CONFLICTS {
            let Some(mut doc) = self.store.get(db, id).await? else {
                return Ok(None);
            };
            if doc.pointer("/pvt_notify/state").and_then(Value::as_str) != Some("pending") {
                return Ok(None);
            }
            let now = now_unix();
            if doc.pointer("/pvt_notify/deliveries").is_none() {
                let deliveries = self.resolve(db, &doc).await?;
                doc["pvt_notify"]["deliveries"] = Value::Array(deliveries);
            }
            let created = doc
                .pointer("/pvt_notify/created")
                .and_then(Value::as_i64)
                .unwrap_or(now);
            let expired = now >= created + self.cfg.expire as i64;
            let mut claimed: Vec<(String, i64)> = Vec::new();
            if let Some(ds) = doc
                .pointer_mut("/pvt_notify/deliveries")
                .and_then(Value::as_array_mut)
            {
                for d in ds.iter_mut() {
                    if d["state"] != "pending" || d["next_at"].as_i64().unwrap_or(0) > now {
                        continue;
                    }
                    if expired {
                        d["state"] = json!("expired");
                        log(d, now, "expired: not delivered in time");
                        continue;
                    }
                    let attempts = d["attempts"].as_i64().unwrap_or(0) + 1;
                    d["attempts"] = json!(attempts);
                    d["next_at"] = json!(now + self.backoff(attempts));
                    log(d, now, "sending");
                    claimed.push((d["id"].as_str().unwrap_or_default().to_string(), attempts));
                }
            }
            let next = summarize(&mut doc);
            let saved = match self.store.save(db, doc).await {
                Ok(s) => s,
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            };
            if claimed.is_empty() {
                return Ok(next);
            }
            let mut results = Vec::with_capacity(claimed.len());
            for (did, attempts) in claimed {
                let d = saved
                    .pointer("/pvt_notify/deliveries")
                    .and_then(Value::as_array)
                    .and_then(|ds| ds.iter().find(|d| d["id"] == did.as_str()))
                    .cloned()
                    .unwrap_or(Value::Null);
                let result = self.attempt(db, &saved, &d).await;
                match &result {
                    Attempt::Delivered(_) => tracing::info!(fax_id = %id, delivery = %did,
                        channel = %d["channel"], "notification delivered"),
                    Attempt::Failed(e) | Attempt::Retry(e) => tracing::warn!(fax_id = %id,
                        delivery = %did, attempts, error = %e, "notification not delivered"),
                }
                results.push((did, attempts, result));
            }
            return self.record_results(db, id, results).await;
        }
        tracing::warn!(fax_id = %id, "notification left for later: the document kept changing");
        Ok(Some(now_unix() + 1))
    }

    /// Writes the results of claimed attempts (rev-checked, re-read on conflict); an attempt
    /// whose claim was superseded (another try started meanwhile) records nothing.
    async fn record_results(
        &self,
        db: &Db,
        id: &str,
        results: Vec<(String, i64, Attempt)>,
    ) -> Result<Option<i64>, StoreError> {
        for _ in 0..CONFLICTS {
            let Some(mut doc) = self.store.get(db, id).await? else {
                return Ok(None);
            };
            let now = now_unix();
            if let Some(ds) = doc
                .pointer_mut("/pvt_notify/deliveries")
                .and_then(Value::as_array_mut)
            {
                for (did, attempts, result) in &results {
                    let Some(d) = ds.iter_mut().find(|d| d["id"] == did.as_str()) else {
                        continue;
                    };
                    if d["attempts"].as_i64() != Some(*attempts) || d["state"] != "pending" {
                        continue;
                    }
                    match result {
                        Attempt::Delivered(what) => {
                            d["state"] = json!("delivered");
                            d["delivered_at"] = json!(now);
                            log(d, now, what);
                        }
                        Attempt::Failed(e) => {
                            d["state"] = json!("failed");
                            d["last_error"] = json!(e);
                            log(d, now, e);
                        }
                        Attempt::Retry(e) => {
                            d["last_error"] = json!(e);
                            log(d, now, e);
                        }
                    }
                }
            }
            let next = summarize(&mut doc);
            match self.store.save(db, doc).await {
                Ok(_) => return Ok(next),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(Some(now_unix() + 1))
    }

    /// The deliveries of a document's event: one e-mail to its recipients (if any, and if
    /// the event is mailed), one webhook (if its faxbox has a callback).
    async fn resolve(&self, db: &Db, doc: &Value) -> Result<Vec<Value>, StoreError> {
        let Some(event) = event_of(doc) else {
            return Ok(Vec::new());
        };
        let faxbox = self.account_doc(db, doc.get("faxbox_id"), "faxbox").await?;
        let to = if event.mailed() {
            let owner_id = doc
                .get("owner_id")
                .or_else(|| doc.get("faxdoc_owner_id"))
                .or_else(|| faxbox.as_ref().and_then(|b| b.get("owner_id")));
            let owner = self.account_doc(db, owner_id, "user").await?;
            recipients(event, doc, faxbox.as_ref(), owner.as_ref())
        } else {
            Vec::new()
        };
        let base = doc["_id"].as_str().unwrap_or_default();
        let now = now_unix();
        let mut out = Vec::new();
        if !to.is_empty() {
            out.push(
                json!({"id": format!("{base}-email"), "channel": "email", "to": to,
                            "state": "pending", "attempts": 0, "next_at": now, "log": []}),
            );
        }
        if let Some(cb) = faxbox
            .as_ref()
            .and_then(|b| Callback::of_faxbox(b, event.direction()))
        {
            out.push(
                json!({"id": format!("{base}-webhook"), "channel": "webhook",
                            "url": cb.url, "method": cb.method, "event": event.webhook_name(),
                            "state": "pending", "attempts": 0, "next_at": now, "log": []}),
            );
        }
        Ok(out)
    }

    /// A live document of one type (faxbox, user) in the fax's account database, by id.
    async fn account_doc(
        &self,
        db: &Db,
        id: Option<&Value>,
        pvt_type: &str,
    ) -> Result<Option<Value>, StoreError> {
        let (Db::Modb(account, _), Some(id)) = (db, id.and_then(Value::as_str)) else {
            return Ok(None);
        };
        crate::accounts::live_doc(&self.store, &Db::Account(account.clone()), id, pvt_type).await
    }

    async fn attempt(&self, db: &Db, doc: &Value, d: &Value) -> Attempt {
        let timeout = Duration::from_secs(self.cfg.timeout.max(1));
        match d["channel"].as_str() {
            Some("email") => {
                match tokio::time::timeout(timeout * 2, self.email(db, doc, d)).await {
                    Ok(Ok(())) => Attempt::Delivered("delivered".into()),
                    Ok(Err(MailError::Invalid(e))) => Attempt::Failed(e),
                    Ok(Err(MailError::Transient(e))) => Attempt::Retry(e),
                    Err(_) => Attempt::Retry("mail delivery timed out".into()),
                }
            }
            Some("webhook") => {
                // The secret is read from the faxbox now: it is never copied into the log.
                let faxbox = self.account_doc(db, doc.get("faxbox_id"), "faxbox").await;
                let direction = event_of(doc).map_or("outbound", Event::direction);
                let secret = match faxbox {
                    Ok(Some(b)) => Callback::of_faxbox(&b, direction).map(|c| c.secret),
                    Ok(None) => None,
                    Err(e) => return Attempt::Retry(e.to_string()),
                };
                // Never a request signed with an empty key: the callback was taken away.
                let Some(secret) = secret else {
                    return Attempt::Failed("the faxbox or its callback is gone".into());
                };
                let cb = Callback {
                    url: d["url"].as_str().unwrap_or_default().to_string(),
                    method: d["method"].as_str().unwrap_or("post").to_string(),
                    secret,
                };
                let body = webhook_body(doc, d["event"].as_str().unwrap_or("failed"));
                match webhook::send(&cb, &body, timeout, self.cfg.webhook_allow_private).await {
                    Ok(status) => Attempt::Delivered(format!("HTTP {status}")),
                    Err(e) => Attempt::Retry(e),
                }
            }
            _ => Attempt::Failed("unknown delivery channel".into()),
        }
    }

    async fn email(&self, db: &Db, doc: &Value, d: &Value) -> Result<(), MailError> {
        let event = event_of(doc).ok_or_else(|| MailError::Invalid("no event".into()))?;
        let store_err = |e: StoreError| MailError::Transient(e.to_string());
        let custom = match db {
            Db::Modb(account, _) => match self
                .store
                .get(&Db::Account(account.clone()), &template::override_id(event))
                .await
            {
                Ok(d) => d,
                Err(StoreError::NoDatabase(_)) => None,
                Err(e) => return Err(store_err(e)),
            },
            _ => None,
        };
        let faxbox = self
            .account_doc(db, doc.get("faxbox_id"), "faxbox")
            .await
            .map_err(store_err)?;
        let values = values(event, doc, faxbox.as_ref());
        let body = template::select(event, custom.as_ref())
            .ok_or_else(|| MailError::Invalid(format!("{} is not mailed", event.as_str())))?
            .render(&values);
        let file = if event.attaches_fax() {
            self.fax_file(db, doc).await.map_err(store_err)?
        } else {
            None
        };
        let to: Vec<String> = d["to"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let did = d["id"].as_str().unwrap_or_default();
        let msg = build(
            &self.cfg.from,
            &to,
            &format!("{did}@faxd"),
            &body,
            file.as_ref(),
        )?;
        self.mailer.send(&msg, did).await
    }

    /// The fax in the configured `attachment_format` (a PDF made from the TIFF when none is
    /// stored), named `<caller id>_<date>.<ext>`.
    async fn fax_file(&self, db: &Db, doc: &Value) -> Result<Option<MailFile>, StoreError> {
        let format = fax_format::configured(&self.store).await;
        let id = doc["_id"].as_str().unwrap_or_default();
        let stem = file_stem(doc);
        if format == Format::Pdf && pick_attachment(doc, Format::Pdf, true).is_none() {
            match fax_format::render_pdf(&self.store, db, doc).await {
                Ok(Some(pdf)) => {
                    return Ok(Some(MailFile {
                        name: format!("{stem}.pdf"),
                        content_type: "application/pdf".into(),
                        data: pdf,
                    }));
                }
                Ok(None) => {}
                Err(fax_format::RenderError::Store(e)) => return Err(e),
                Err(e) => tracing::warn!(fax_id = %id, error = %e, "no PDF for the mail"),
            }
        }
        let Some(name) = pick_attachment(doc, format, false) else {
            return Ok(None);
        };
        let Some(att) = self.store.get_attachment(db, id, &name).await? else {
            return Ok(None);
        };
        let ext = match att.content_type.as_str() {
            "application/pdf" => "pdf".to_string(),
            "image/tiff" => "tiff".to_string(),
            _ => name
                .rsplit_once('.')
                .map_or("bin".into(), |(_, e)| e.to_string()),
        };
        Ok(Some(MailFile {
            name: format!("{stem}.{ext}"),
            content_type: att.content_type,
            data: read_all(att.body).await?,
        }))
    }
}

/// Appends to a delivery's log.
fn log(d: &mut Value, at: i64, result: &str) {
    let attempt = d["attempts"].clone();
    if let Some(l) = d.get_mut("log").and_then(Value::as_array_mut) {
        l.push(json!({"at": at, "attempt": attempt, "result": result}));
    }
}

/// Sets `pvt_notify.next_at` to the earliest pending delivery, or `state: "done"` when none
/// is left. Returns that time.
fn summarize(doc: &mut Value) -> Option<i64> {
    let next = doc
        .pointer("/pvt_notify/deliveries")
        .and_then(Value::as_array)
        .and_then(|ds| {
            ds.iter()
                .filter(|d| d["state"] == "pending")
                .filter_map(|d| d["next_at"].as_i64())
                .min()
        });
    match next {
        Some(t) => doc["pvt_notify"]["next_at"] = json!(t),
        None => {
            doc["pvt_notify"]["state"] = json!("done");
            if let Some(o) = doc["pvt_notify"].as_object_mut() {
                o.remove("next_at");
            }
        }
    }
    next
}

fn event_of(doc: &Value) -> Option<Event> {
    doc.pointer("/pvt_notify/event")
        .and_then(Value::as_str)
        .and_then(Event::parse)
}

/// Addresses of a `send_to` (a string or a list), trimmed, empty ones left out.
pub fn addresses(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() => vec![s.trim().to_string()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// Who gets the mail (spec §3.7, §4.4, §5.6): the first list found of the fax's own
/// `notifications.email.send_to` (`fax_notifications` too), the faxbox's per-direction list,
/// its general list, the owner's e-mail; for an e-mail-to-fax error, the sender.
/// De-duplicated (case-insensitively) and sorted.
pub fn recipients(
    event: Event,
    doc: &Value,
    faxbox: Option<&Value>,
    owner: Option<&Value>,
) -> Vec<String> {
    let mut list = if event == Event::SmtpError {
        addresses(doc.get("from"))
    } else {
        [
            doc.pointer("/notifications/email/send_to"),
            doc.pointer("/fax_notifications/email/send_to"),
            faxbox.and_then(|b| {
                b.pointer(&format!(
                    "/notifications/{}/email/send_to",
                    event.direction()
                ))
            }),
            faxbox.and_then(|b| b.pointer("/notifications/email/send_to")),
            owner.and_then(|u| u.get("email")),
        ]
        .into_iter()
        .map(addresses)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
    };
    list.sort_by_key(|a| a.to_ascii_lowercase());
    list.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    list
}

fn s<'a>(doc: &'a Value, k: &str) -> &'a str {
    doc.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn name_number(name: &str, number: &str) -> String {
    match (name.trim(), number.trim()) {
        ("", n) => n.to_string(),
        (m, "") => m.to_string(),
        (m, n) if m == n => n.to_string(),
        (m, n) => format!("{m} ({n})"),
    }
}

/// The result block of a fax (`tx_result` or `rx_result`).
fn result_of(doc: &Value) -> &Value {
    doc.get("tx_result")
        .or_else(|| doc.get("rx_result"))
        .unwrap_or(&Value::Null)
}

/// The values the templates of an event use.
pub fn values(event: Event, doc: &Value, faxbox: Option<&Value>) -> Values {
    let mut v = Values::new();
    let r = result_of(doc);
    let when = doc
        .get("pvt_modified")
        .or_else(|| doc.get("pvt_created"))
        .and_then(Value::as_i64)
        .map(crate::time::gregorian_to_unix)
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default();
    v.insert("date", when);
    v.insert("fax_id", s(doc, "_id").to_string());
    v.insert(
        "faxbox_name",
        faxbox.map(|b| s(b, "name").to_string()).unwrap_or_default(),
    );
    v.insert(
        "caller_id",
        name_number(s(doc, "from_name"), s(doc, "from_number")),
    );
    v.insert(
        "callee_id",
        name_number(s(doc, "to_name"), s(doc, "to_number")),
    );
    let pages = doc
        .get("pvt_pages")
        .or_else(|| r.get("pages_sent"))
        .cloned()
        .unwrap_or(json!(0));
    v.insert("pages", pages.to_string().trim_matches('"').to_string());
    v.insert(
        "attempts",
        doc.get("attempts").cloned().unwrap_or(json!(1)).to_string(),
    );
    v.insert(
        "remote_station_id",
        r.get("remote_station_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    );
    let error = match event {
        Event::SmtpError => doc
            .pointer("/errors/0")
            .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
            .unwrap_or_default(),
        _ => r
            .get("result_text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    };
    v.insert("error", error);
    if event == Event::SmtpError {
        v.insert("to", s(doc, "to").to_string());
        v.insert(
            "number",
            doc.get("translated_number")
                .or_else(|| doc.get("original_number"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        );
        let errors: Vec<String> = doc
            .get("errors")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        v.insert("errors", errors.join("\n"));
    }
    v
}

/// The attachment's name: `<caller-id name or number>_<date>`, lowercased, whitespace → `_`,
/// `:` → `-` (spec §3.7).
fn file_stem(doc: &Value) -> String {
    let who = [s(doc, "from_name"), s(doc, "from_number")]
        .into_iter()
        .find(|x| !x.trim().is_empty())
        .unwrap_or("fax");
    let when = doc
        .get("pvt_created")
        .and_then(Value::as_i64)
        .map(crate::time::gregorian_to_unix)
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|t| t.format("%Y-%m-%d_%H:%M:%S").to_string())
        .unwrap_or_default();
    format!("{who}_{when}")
        .to_lowercase()
        .chars()
        .map(|c| match c {
            c if c.is_whitespace() => '_',
            ':' => '-',
            '/' | '\\' | '"' => '_',
            c => c,
        })
        .collect()
}

/// The JSON of a webhook: the event, the fax it is about (`fax_id`: a progress event's
/// fax, else the document's own id; `job_id`: the queued job's id, the same for every event
/// of an outbound fax), its numbers and state; for an outbound fax the `attempt`, `page` and
/// `total_pages` known and the `sequence` that orders its events ([`super::progress`]);
/// `occurred_at` (when the event happened) and `timestamp` (when this try was sent), unix
/// seconds.
pub fn webhook_body(doc: &Value, event: &str) -> Value {
    let r = result_of(doc);
    let mut m = Map::new();
    m.insert("event".into(), json!(event));
    let progress = doc.get("pvt_type").and_then(Value::as_str) == Some(super::progress::PVT_TYPE);
    let fax_id = if progress {
        doc.get("fax_id")
    } else {
        doc.get("_id")
    };
    if let Some(id) = fax_id {
        m.insert("fax_id".into(), id.clone());
    }
    for k in [
        "job_id",
        "pvt_account_id",
        "faxbox_id",
        "from_number",
        "to_number",
        "folder",
        "pvt_job_status",
        "attempt",
        "page",
        "total_pages",
        "sequence",
    ] {
        if let Some(v) = doc.get(k) {
            m.insert(k.trim_start_matches("pvt_").into(), v.clone());
        }
    }
    let last = event_of(doc).is_some_and(|e| {
        matches!(e, Event::OutboundSent | Event::OutboundFailed)
            && doc.get("folder").and_then(Value::as_str) == Some("outbox")
    });
    if last {
        let attempts = doc.get("attempts").and_then(Value::as_i64).unwrap_or(0);
        if let Some((_, job)) = crate::ids::split_modb_doc_id(s(doc, "_id")) {
            m.insert("job_id".into(), json!(job));
        }
        m.insert("attempt".into(), json!(attempts));
        m.insert(
            "sequence".into(),
            json!(super::progress::final_sequence(attempts)),
        );
    }
    if let Some(p) = doc.get("pvt_pages") {
        m.insert("pages".into(), p.clone());
        m.entry("total_pages").or_insert_with(|| p.clone());
    }
    if let Some(t) = r.get("result_text") {
        m.insert("result_text".into(), t.clone());
    }
    if let Some(e) = doc.get("errors") {
        m.insert("errors".into(), e.clone());
    }
    if let Some(t) = doc.pointer("/pvt_notify/created") {
        m.insert("occurred_at".into(), t.clone());
    }
    m.insert("timestamp".into(), json!(now_unix()));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_take_the_first_list_found() {
        let fax =
            json!({"notifications": {"email": {"send_to": ["b@x.com", "A@x.com", "a@x.com"]}}});
        let faxbox = json!({"notifications": {"outbound": {"email": {"send_to": "box@x.com"}}}});
        let owner = json!({"email": "owner@x.com"});
        assert_eq!(
            recipients(Event::OutboundSent, &fax, Some(&faxbox), Some(&owner)),
            ["A@x.com", "b@x.com"]
        );
        assert_eq!(
            recipients(
                Event::OutboundFailed,
                &json!({}),
                Some(&faxbox),
                Some(&owner)
            ),
            ["box@x.com"]
        );
        assert_eq!(
            recipients(
                Event::InboundReceived,
                &json!({}),
                Some(&faxbox),
                Some(&owner)
            ),
            ["owner@x.com"]
        );
        assert_eq!(
            recipients(
                Event::SmtpError,
                &json!({"from": "s@x.com"}),
                Some(&faxbox),
                None
            ),
            ["s@x.com"]
        );
    }

    #[test]
    fn the_file_name_follows_kazoo() {
        let doc = json!({"from_name": "ACME Corp", "pvt_created": 63_900_000_000i64});
        let stem = file_stem(&doc);
        assert!(stem.starts_with("acme_corp_"), "{stem}");
        assert!(!stem.contains(':') && !stem.contains(' '), "{stem}");
    }
}
