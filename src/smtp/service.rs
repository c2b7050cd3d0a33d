//! The store side of fax_smtp: the [`Backend`] that resolves `<number>@<faxbox address or
//! account realm>` recipients (spec §5.2), judges the sender ([`rules`]), turns a message into
//! one document ([`extract`], several parts merged page by page in MIME order) and queues one
//! fax per number through the intake service — all or nothing, before the reply to DATA —
//! and leaves a `fax_smtp_log` in the account's MODB for every message.

use serde_json::{Map, Value, json};

use super::extract::{self, MimeLimits};
use super::reply::Reply;
use super::rules::{self, SenderRules, Verdict};
use super::session::{Backend, Envelope};
use crate::accounts::{self, Account, Faxbox};
use crate::auth::login_digests;
use crate::convert::tiff_f;
use crate::ids::{AccountId, Db, YearMonth, modb_doc_id, new_id};
use crate::intake::Document;
use crate::intake::numbers::NumberPolicy;
use crate::intake::submit::{FaxboxSubmission, Handoff, IntakeService, SubmitError};
use crate::store::{SharedStore, StoreError};

/// A recipient accepted at RCPT.
#[derive(Clone, Debug)]
pub struct FaxRcpt {
    /// The address as given.
    pub address: String,
    /// The local part as given (`original_number`).
    pub original: String,
    /// The lower-cased domain (`faxbox_domain`).
    pub domain: String,
    /// The destination, E.164.
    pub number: String,
    pub account: Account,
    pub faxbox: Faxbox,
    pub owner_email: Option<String>,
    /// The sender's user in the faxbox's account, when the sender is one.
    pub sender_user: Option<String>,
}

/// fax_smtp's decisions on the store.
pub struct SmtpService {
    pub intake: IntakeService,
    pub limits: MimeLimits,
}

impl SmtpService {
    fn store(&self) -> &SharedStore {
        &self.intake.store
    }

    /// The faxbox of an account realm (spec §5.2): the sender's own faxbox when the sender is
    /// exactly one user owning exactly one faxbox, else the first faxbox whose rules admit
    /// the sender.
    async fn realm_faxbox(
        &self,
        account: &Account,
        env: &Envelope,
        sender: &str,
    ) -> Result<Option<Faxbox>, StoreError> {
        let boxes = accounts::faxboxes(self.store(), &account.id).await?;
        let users = accounts::users_by_email(self.store(), &account.id, sender).await?;
        if let [user] = users.as_slice() {
            let uid = user.get("_id").and_then(Value::as_str);
            let mut owned = boxes.iter().filter(|b| b.owner_id() == uid);
            if let (Some(one), None) = (owned.next(), owned.next()) {
                return Ok(Some(one.clone()));
            }
        }
        Ok(boxes.into_iter().find(|b| {
            let rules = SenderRules::of_faxbox(&b.doc, None);
            !rules.permissions.is_empty()
                && rules.check(sender, env.peer, false, false, &b.id) == Verdict::Allowed
        }))
    }

    async fn owner_email(&self, fb: &Faxbox) -> Result<Option<String>, StoreError> {
        let Some(owner) = fb.owner_id() else {
            return Ok(None);
        };
        Ok(accounts::user(self.store(), &fb.account, owner)
            .await?
            .and_then(|u| u.get("email").and_then(Value::as_str).map(str::to_string)))
    }

    async fn resolve(
        &self,
        env: &Envelope,
        address: &str,
    ) -> Result<FaxRcpt, (Reply, Option<Log>)> {
        let sender = env.sender.clone().unwrap_or_default();
        // The domain first: mail for another domain is a relay attempt, whatever its local
        // part says.
        let (local, domain) = rules::split_address(address).map_err(|r| (r, None))?;
        let store_err = |r: StoreError| {
            tracing::warn!(error = %r, "smtp: store error while resolving a recipient");
            (Reply::local_error(), None)
        };
        let (account, faxbox) = match accounts::faxbox_by_address(self.store(), &domain)
            .await
            .map_err(store_err)?
        {
            Some(fb) => {
                let account = match accounts::account(self.store(), &fb.account).await {
                    Ok(a) => a,
                    Err(accounts::AccountsError::Store(e)) => return Err(store_err(e)),
                    Err(_) => return Err((Reply::relay_denied(&domain), None)),
                };
                (account, fb)
            }
            None => {
                let Some(account) = accounts::account_by_realm(self.store(), &domain)
                    .await
                    .map_err(store_err)?
                else {
                    return Err((Reply::relay_denied(&domain), None));
                };
                match self
                    .realm_faxbox(&account, env, &sender)
                    .await
                    .map_err(store_err)?
                {
                    Some(fb) => (account, fb),
                    None => {
                        let text =
                            format!("no faxbox of realm {domain} accepts mail from {sender}");
                        let log = Log::new(&account, None, env, address).error(&text);
                        return Err((Reply::not_allowed(&text), Some(log)));
                    }
                }
            }
        };
        let owner_email = self.owner_email(&faxbox).await.map_err(store_err)?;
        let log = Log::to_faxbox(
            (&account, &faxbox),
            env,
            (address, local, &domain),
            owner_email.as_deref(),
        );
        let in_account = env
            .user
            .as_deref()
            .and_then(|u| u.split_once('/'))
            .is_some_and(|(a, _)| a == account.id.as_str());
        let allow_all = self.intake.sysconf.fax().allow_all_addresses_when_empty;
        let verdict = SenderRules::of_faxbox(&faxbox.doc, owner_email.clone())
            .check(&sender, env.peer, in_account, allow_all, &faxbox.id);
        if let Verdict::Refused(why) = verdict {
            return Err((Reply::not_allowed(&why), Some(log.error(&why))));
        }
        let number = match rules::fax_number(local) {
            Ok(n) => n,
            Err(r) => {
                let text = r.text().to_string();
                return Err((r, Some(log.error(&text))));
            }
        };
        let policy = NumberPolicy::for_account(&self.intake.sysconf.fax(), &account.doc);
        let number = match policy.destination("to_number", &number) {
            Ok(n) => n,
            Err(e) => {
                let text = format!("fax number {local} is invalid: {}", e.message());
                return Err((Reply::invalid_number(&text), Some(log.error(&text))));
            }
        };
        let sender_user = match accounts::users_by_email(self.store(), &account.id, &sender).await {
            Ok(users) if users.len() == 1 => users[0]
                .get("_id")
                .and_then(Value::as_str)
                .map(str::to_string),
            Ok(_) => None,
            Err(e) => return Err(store_err(e)),
        };
        Ok(FaxRcpt {
            address: address.to_string(),
            original: local.to_string(),
            domain: domain.clone(),
            number,
            account,
            faxbox,
            owner_email,
            sender_user,
        })
    }

    /// One document of the message: the only part as it is, or every part converted to fax
    /// pages and joined in MIME order.
    async fn document(
        &self,
        account: &AccountId,
        docs: Vec<extract::Document>,
    ) -> Result<Document, String> {
        if docs.len() == 1 {
            let d = docs.into_iter().next().ok_or("no document")?;
            return Ok(Document {
                content_type: d.content_type,
                bytes: d.bytes.into(),
            });
        }
        let converter = &self.intake.converter;
        let opts = converter.config().options();
        let mut pages = Vec::new();
        for d in docs {
            let label = d.name.clone().unwrap_or(d.content_type.clone());
            let fax = converter
                .to_fax_async_for(account.as_str().to_string(), d.bytes, opts.clone())
                .await
                .map_err(|e| format!("{label}: {e}"))?;
            pages.extend(tiff_f::decode_fax_tiff(&fax.tiff).map_err(|e| format!("{label}: {e}"))?);
            if pages.len() > converter.config().max_pages as usize {
                return Err(format!(
                    "more than {} pages in all",
                    converter.config().max_pages
                ));
            }
        }
        let tiff = tiff_f::write_fax_tiff(&pages, opts.compression.coding());
        Ok(Document {
            content_type: "image/tiff".into(),
            bytes: tiff.into(),
        })
    }

    async fn deliver_to(&self, rcpts: &[FaxRcpt], message: Vec<u8>, log: &mut Log) -> Reply {
        let first = &rcpts[0];
        let extracted = match extract::extract(&message, &self.limits) {
            Ok(e) => e,
            Err(e) => {
                log.push_error(&e.to_string());
                return e.reply();
            }
        };
        drop(message);
        if !extracted.skipped.is_empty() {
            log.set("skipped", json!(extracted.skipped));
        }
        let names: Vec<Value> = extracted
            .documents
            .iter()
            .map(|d| json!(d.name.clone().unwrap_or_default()))
            .collect();
        log.set("filename", names.first().cloned().unwrap_or(Value::Null));
        log.set("documents", Value::Array(names));
        log.set(
            "content_type",
            json!(extracted.documents.first().map(|d| d.content_type.clone())),
        );
        let document = match self.document(&first.account.id, extracted.documents).await {
            Ok(d) => d,
            Err(why) => {
                let reply = Reply::conversion_failed(&why);
                log.push_error(reply.text());
                return reply;
            }
        };
        let mut numbers: Vec<String> = Vec::new();
        for r in rcpts {
            if !numbers.contains(&r.number) {
                numbers.push(r.number.clone());
            }
        }
        let mut fields = Map::new();
        if let Some(s) = &extracted.subject {
            fields.insert("subject".into(), json!(s));
        }
        let sub = FaxboxSubmission {
            account: first.account.clone(),
            faxbox: first.faxbox.clone(),
            sender_user: first.sender_user.clone(),
            numbers,
            document,
            fields,
            handoff: Handoff::Converted,
        };
        match self.intake.submit_faxbox(sub).await {
            Ok(jobs) => {
                let ids: Vec<String> = jobs
                    .iter()
                    .filter_map(|j| j.get("_id").and_then(Value::as_str).map(str::to_string))
                    .collect();
                log.set("faxdoc_ids", json!(ids));
                log.set("faxdoc_id", json!(ids.first()));
                log.set("faxdoc_db", json!("faxes"));
                Reply::queued(&ids)
            }
            Err(e) => {
                let reply = submit_reply(&e);
                log.push_error(reply.text());
                reply
            }
        }
    }
}

/// The SMTP reply for a refused submission.
fn submit_reply(e: &SubmitError) -> Reply {
    match e {
        SubmitError::Store(_) | SubmitError::Accounts(accounts::AccountsError::Store(_)) => {
            tracing::warn!(error = %e, "smtp: store error while queueing");
            Reply::local_error()
        }
        SubmitError::Conversion(why) | SubmitError::Document(why) => Reply::conversion_failed(why),
        SubmitError::DocumentType(t) => Reply::no_document(&t.to_string()),
        SubmitError::Number(n) => Reply::invalid_number(&n.message()),
        other => Reply::policy(&other.to_string()),
    }
}

/// A `fax_smtp_log` document being built (spec §2.7, plus faxd's `status`, `reply` and
/// `report_error` — whether the sender is to get an error mail).
pub struct Log {
    account: AccountId,
    doc: Map<String, Value>,
    errors: Vec<Value>,
    /// The faxbox's `report_smtp_errors`, when it says.
    report: Option<bool>,
}

impl Log {
    fn new(account: &Account, faxbox: Option<&Faxbox>, env: &Envelope, to: &str) -> Self {
        let mut doc = Map::new();
        doc.insert("to".into(), json!(to.to_ascii_lowercase()));
        doc.insert("from".into(), json!(env.sender.clone().unwrap_or_default()));
        doc.insert("account_id".into(), json!(account.id.as_str()));
        if let Some(ip) = env.peer {
            doc.insert("peer".into(), json!(ip.to_string()));
        }
        doc.insert("helo".into(), json!(env.helo));
        if let Some(fb) = faxbox {
            doc.insert("faxbox_id".into(), json!(fb.id));
            for (k, f) in [("faxbox_name", "name"), ("faxbox_timezone", "fax_timezone")] {
                if let Some(v) = fb.doc.get(f).filter(|v| !v.is_null()) {
                    doc.insert(k.into(), v.clone());
                }
            }
            if let Some(o) = fb.owner_id() {
                doc.insert("faxbox_owner_id".into(), json!(o));
                doc.insert("owner_id".into(), json!(o));
            }
        }
        Self {
            account: account.id.clone(),
            doc,
            errors: Vec::new(),
            report: faxbox
                .and_then(|fb| fb.doc.get("report_smtp_errors"))
                .and_then(Value::as_bool),
        }
    }

    /// The log of mail to a resolved faxbox: the recipient (`address`, its local part and
    /// domain as read) and the faxbox's owner. Every log of such mail starts here.
    fn to_faxbox(
        (account, faxbox): (&Account, &Faxbox),
        env: &Envelope,
        (address, local, domain): (&str, &str, &str),
        owner_email: Option<&str>,
    ) -> Self {
        let mut log = Log::new(account, Some(faxbox), env, address);
        log.set("original_number", json!(local));
        log.set("faxbox_domain", json!(domain));
        if let Some(e) = owner_email {
            log.set("faxbox_owner_email", json!(e));
        }
        log
    }

    fn set(&mut self, key: &str, v: Value) {
        if !v.is_null() {
            self.doc.insert(key.into(), v);
        }
    }

    fn push_error(&mut self, e: &str) {
        self.errors.push(json!(e));
    }

    fn error(mut self, e: &str) -> Self {
        self.push_error(e);
        self
    }

    /// Writes the log to the account's MODB of this month (a store failure is logged, never
    /// turned into a different SMTP reply). A refusal is marked for a mail to its sender
    /// (`report_error`) when the faxbox asks for it, else when `report_smtp_errors` (the
    /// system's) does.
    async fn write(
        mut self,
        store: &SharedStore,
        notify: &crate::notify::Doorbell,
        reply: &Reply,
        report_smtp_errors: bool,
    ) {
        let report_errors = self.report.unwrap_or(report_smtp_errors);
        let month = YearMonth::now();
        let db = Db::Modb(self.account.clone(), month);
        let now = crate::time::now_gregorian();
        let failed = !self.errors.is_empty();
        self.doc
            .insert("_id".into(), json!(modb_doc_id(month, &new_id())));
        self.doc.insert("pvt_type".into(), json!("fax_smtp_log"));
        self.doc.insert(
            "status".into(),
            json!(if failed { "refused" } else { "accepted" }),
        );
        self.doc.insert("reply".into(), json!(reply.summary()));
        self.doc.insert("errors".into(), Value::Array(self.errors));
        self.doc
            .insert("report_error".into(), json!(failed && report_errors));
        self.doc.insert("timestamp".into(), json!(now));
        self.doc
            .insert("pvt_account_id".into(), json!(self.account.as_str()));
        self.doc.insert("pvt_account_db".into(), json!(db.name()));
        self.doc.insert("pvt_created".into(), json!(now));
        self.doc.insert("pvt_modified".into(), json!(now));
        let mut doc = Value::Object(self.doc);
        // The error mail is recorded in the log's own write, so it is never lost nor sent
        // for a log that was not written.
        let mail = crate::notify::record_smtp_error(
            &mut doc,
            failed && report_errors,
            crate::time::now_unix(),
        );
        let written = async {
            store.ensure_db(&db).await?;
            store.save(&db, doc).await
        };
        match written.await {
            Ok(_) if mail => notify.ring(&db),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(account_id = %self.account, error = %e, "smtp: fax_smtp_log not written");
            }
        }
    }
}

impl SmtpService {
    fn report_smtp_errors(&self) -> bool {
        self.intake.sysconf.fax().report_smtp_errors
    }

    fn log_for(&self, env: &Envelope, rcpts: &[FaxRcpt]) -> Option<Log> {
        let first = rcpts.first()?;
        let mut log = Log::to_faxbox(
            (&first.account, &first.faxbox),
            env,
            (&first.address, &first.original, &first.domain),
            first.owner_email.as_deref(),
        );
        log.set("translated_number", json!(first.number));
        if rcpts.len() > 1 {
            log.set(
                "recipients",
                json!(rcpts.iter().map(|r| r.address.clone()).collect::<Vec<_>>()),
            );
        }
        Some(log)
    }
}

#[async_trait::async_trait]
impl Backend for SmtpService {
    type Rcpt = FaxRcpt;

    async fn authenticate(&self, user: &str, password: &str) -> Result<Option<String>, Reply> {
        let Some((name, realm)) = user.rsplit_once('@') else {
            return Ok(None);
        };
        let busy = || Reply::new(454, Some("4.7.0"), "temporary authentication failure");
        let account = match accounts::account_by_realm(self.store(), realm).await {
            Ok(Some(a)) => a,
            Ok(None) => return Ok(None),
            Err(_) => return Err(busy()),
        };
        // The digest names the user: the same login as `user_auth` with `credentials`.
        let (md5, _) = login_digests(name, password);
        match accounts::user_by_credentials(self.store(), &account.id, &md5).await {
            Ok(Some(u)) => Ok(u
                .get("_id")
                .and_then(Value::as_str)
                .map(|id| format!("{}/{id}", account.id))),
            Ok(None) => Ok(None),
            Err(_) => Err(busy()),
        }
    }

    async fn recipient(
        &self,
        env: &Envelope,
        accepted: &[FaxRcpt],
        address: &str,
    ) -> Result<FaxRcpt, Reply> {
        match self.resolve(env, address).await {
            Ok(r) => {
                if let Some(first) = accepted.first()
                    && first.faxbox.id != r.faxbox.id
                {
                    return Err(Reply::too_many_recipients_for_box());
                }
                Ok(r)
            }
            Err((reply, log)) => {
                if let Some(log) = log {
                    log.write(
                        self.store(),
                        &self.intake.notify,
                        &reply,
                        self.report_smtp_errors(),
                    )
                    .await;
                }
                Err(reply)
            }
        }
    }

    async fn deliver(&self, env: &Envelope, rcpts: &[FaxRcpt], message: Vec<u8>) -> Reply {
        let Some(mut log) = self.log_for(env, rcpts) else {
            return Reply::no_valid_recipients();
        };
        let reply = self.deliver_to(rcpts, message, &mut log).await;
        log.write(
            self.store(),
            &self.intake.notify,
            &reply,
            self.report_smtp_errors(),
        )
        .await;
        reply
    }

    async fn refused(&self, env: &Envelope, rcpts: &[FaxRcpt], reply: &Reply) {
        if let Some(log) = self.log_for(env, rcpts) {
            log.error(reply.text())
                .write(
                    self.store(),
                    &self.intake.notify,
                    reply,
                    self.report_smtp_errors(),
                )
                .await;
        }
    }
}
