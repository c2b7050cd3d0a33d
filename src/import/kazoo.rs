//! `faxd import kazoo`: moves a Kazoo 4.x cluster into faxd's store. Per account (and its
//! descendants, by `pvt_tree`): the account, its users (with Kazoo's `pvt_md5_auth` /
//! `pvt_sha1_auth`, upgraded to faxd's record at their first login), faxboxes (both copies,
//! so their SMTP addresses keep working), callflows with `receive_fax` or `faxbox` modules
//! and their numbers, queued jobs of the `faxes` database, the fax history of the MODBs
//! with attachments; and `system_config/fax`.
//!
//! Documents keep their Kazoo ids. Each written document records the Kazoo revision it came
//! from ([`SOURCE_REV`]): a rerun compares before writing and leaves unchanged documents
//! alone, and since every document is written whole in one atomic store write (attachments
//! included), a run interrupted anywhere is completed by running it again.

use std::collections::{BTreeSet, HashSet};
use std::time::Instant;

use serde_json::{Map, Value, json};

use super::source::Source;
use super::{ImportError, Outcome, Summary};
use crate::accounts::tree_of;
use crate::auth::PasswordRecord;
use crate::config::fax::FaxConfig;
use crate::ids::{AccountId, Db, YearMonth, modb_doc_id, split_modb_doc_id};
use crate::intake::numbers::claim_id;
use crate::model::{Folder, JobStatus};
use crate::numbers::callflow_number;
use crate::store::{NewAttachment, SharedStore, StoreError};

/// Private field of an imported document: the Kazoo `_rev` it was copied from.
pub const SOURCE_REV: &str = "pvt_kazoo_rev";

const ACCOUNTS: &str = "accounts";
const USERS: &str = "users";
const FAXBOXES: &str = "faxboxes";
const CALLFLOWS: &str = "callflows";
const NUMBERS: &str = "numbers";
const QUEUED: &str = "queued faxes";
const HISTORY: &str = "fax history";
const SMTP_LOGS: &str = "smtp logs";
const CONFIG: &str = "system_config";
const OTHER: &str = "other";

/// What to import.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// These accounts and their descendants; empty: every account.
    pub accounts: Vec<AccountId>,
    /// Read and compare only; write nothing.
    pub dry_run: bool,
}

/// Progress lines go here (the binary prints them on stderr).
pub type Progress<'a> = &'a (dyn Fn(&str) + Sync);

fn s<'a>(doc: &'a Value, key: &str) -> Option<&'a str> {
    doc.get(key).and_then(Value::as_str)
}

fn id_of(doc: &Value) -> &str {
    s(doc, "_id").unwrap_or_default()
}

/// The accounts to import: `wanted` and their descendants (every account when `wanted` is
/// empty), parents before children. Documents that are not accounts are left out.
pub fn select_accounts(all: &[Value], wanted: &[AccountId]) -> Result<Vec<Value>, ImportError> {
    let accounts: Vec<&Value> = all
        .iter()
        .filter(|d| s(d, "pvt_type").is_none_or(|t| t == "account"))
        .collect();
    for w in wanted {
        if !accounts.iter().any(|d| id_of(d) == w.as_str()) {
            return Err(ImportError::UnknownAccount(w.to_string()));
        }
    }
    let mut out: Vec<Value> = accounts
        .into_iter()
        .filter(|d| {
            wanted.is_empty()
                || wanted
                    .iter()
                    .any(|w| id_of(d) == w.as_str() || tree_of(d).iter().any(|t| t == w.as_str()))
        })
        .cloned()
        .collect();
    out.sort_by_key(|d| (tree_of(d).len(), id_of(d).to_string()));
    Ok(out)
}

/// Whether a callflow's flow (at any depth) has a `receive_fax` or `faxbox` module.
pub fn has_fax_module(flow: &Value) -> bool {
    matches!(
        flow.get("module").and_then(Value::as_str),
        Some("receive_fax" | "faxbox")
    ) || flow
        .get("children")
        .and_then(Value::as_object)
        .is_some_and(|c| c.values().any(has_fax_module))
}

/// The MODB and `YYYYMM-<id>` id of a fax or SMTP log of `account`: the month of its id when
/// it has one (Kazoo's MODB ids), else of its `pvt_created` (legacy documents).
pub fn fax_place(account: &AccountId, doc: &Value) -> Result<(Db, String), String> {
    let id = id_of(doc);
    if let Some((month, _)) = split_modb_doc_id(id) {
        return Ok((Db::Modb(account.clone(), month), id.to_string()));
    }
    match doc.get("pvt_created").and_then(Value::as_i64) {
        Some(created) if created > 0 => {
            let month = YearMonth::from_gregorian(created);
            Ok((Db::Modb(account.clone(), month), modb_doc_id(month, id)))
        }
        _ => Err("no YYYYMM- id and no numeric pvt_created: cannot tell its month".into()),
    }
}

/// A source document as faxd stores it: Kazoo's fields, `pvt_account_db` naming the target
/// database, [`SOURCE_REV`]; revision and attachment stubs dropped (attachments are copied
/// separately).
fn base(doc: &Value, db: &Db, id: &str) -> Value {
    let mut out = doc.clone();
    if let Some(m) = out.as_object_mut() {
        let rev = m.remove("_rev");
        m.remove("_attachments");
        m.insert("_id".into(), json!(id));
        m.insert("pvt_account_db".into(), json!(db.name()));
        if let Some(rev) = rev {
            m.insert(SOURCE_REV.into(), rev);
        }
    }
    out
}

/// Attachment names of a source document.
fn attachment_names(doc: &Value) -> Vec<String> {
    doc.get("_attachments")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Checks a Kazoo user's stored digests.
pub fn check_user(doc: &Value) -> Result<(), String> {
    for (key, len, what) in [("pvt_md5_auth", 32, "md5"), ("pvt_sha1_auth", 40, "sha1")] {
        if let Some(v) = doc.get(key) {
            let ok = v
                .as_str()
                .is_some_and(|d| d.len() == len && d.bytes().all(|b| b.is_ascii_hexdigit()));
            if !ok {
                return Err(format!("{key} is not an {what} hex digest"));
            }
        }
    }
    Ok(())
}

/// A user about to be rewritten keeps the faxd record it was upgraded to when that record
/// still accepts Kazoo's digests (the password did not change in Kazoo).
fn keep_upgrade(doc: &mut Value, target: Option<&Value>) {
    let Some(record) = target
        .and_then(|t| t.get("pvt_auth"))
        .and_then(|a| serde_json::from_value::<PasswordRecord>(a.clone()).ok())
    else {
        return;
    };
    let md5 = s(doc, "pvt_md5_auth").map(str::to_string);
    let sha1 = s(doc, "pvt_sha1_auth").map(str::to_string);
    if (md5.is_some() || sha1.is_some()) && record.holds_digests(md5.as_deref(), sha1.as_deref()) {
        doc["pvt_auth"] = json!(record);
        if let Some(m) = doc.as_object_mut() {
            m.remove("pvt_md5_auth");
            m.remove("pvt_sha1_auth");
        }
    }
}

/// Where a job of Kazoo's `faxes` database goes.
#[derive(Debug, PartialEq)]
pub enum JobPlace {
    /// Still to be sent: faxd's queue, same id.
    Queue(Value),
    /// Finished (a Kazoo worker crash left it in `faxes`): the outbox of its creation month.
    Outbox(Db, Value),
}

/// Maps a queued Kazoo job; `Err` says why it is not imported.
pub fn map_job(account: &AccountId, doc: &Value) -> Result<JobPlace, String> {
    let raw = s(doc, "pvt_job_status").ok_or("no pvt_job_status")?;
    let status: JobStatus = raw.parse()?;
    if status == JobStatus::Processing {
        return Err(
            "being transmitted by Kazoo (processing): run the import again once Kazoo has \
             finished it"
                .into(),
        );
    }
    if status.is_final() {
        let created = doc
            .get("pvt_created")
            .and_then(Value::as_i64)
            .ok_or("finished job without a numeric pvt_created")?;
        let month = YearMonth::from_gregorian(created);
        let db = Db::Modb(account.clone(), month);
        let id = modb_doc_id(month, id_of(doc));
        let mut out = base(doc, &db, &id);
        out["folder"] = json!(Folder::Outbox.as_str());
        if let Some(m) = out.as_object_mut() {
            m.remove("pvt_queue");
        }
        return Ok(JobPlace::Outbox(db, out));
    }
    if s(doc, "to_number").is_none_or(str::is_empty) {
        return Err("queued job without to_number".into());
    }
    let mut out = base(doc, &Db::Faxes, id_of(doc));
    out["pvt_account_db"] = json!(Db::Faxes.name());
    if status == JobStatus::Locked {
        // Kazoo's queue held it; faxd's queue takes it afresh.
        out["pvt_job_status"] = json!(JobStatus::Pending.as_str());
    }
    if let Some(m) = out.as_object_mut() {
        m.remove("pvt_queue");
        m.remove("pvt_job_node");
    }
    Ok(JobPlace::Queue(out))
}

/// Kazoo's `system_config/fax` as faxd can load it: keys faxd knows with a value of the
/// wrong type are dropped (each with its reason); other keys are kept (faxd ignores them).
pub fn clean_fax_config(doc: &Value) -> (Map<String, Value>, Vec<String>) {
    let known = FaxConfig::keys();
    let mut sections = Map::new();
    let mut dropped = Vec::new();
    for (section, values) in doc.as_object().into_iter().flatten() {
        if section.starts_with('_') || section.starts_with("pvt_") {
            continue;
        }
        let Some(values) = values.as_object() else {
            continue;
        };
        let mut kept = Map::new();
        for (k, v) in values {
            if known.contains(k)
                && let Err(e) = FaxConfig::check(k, v)
            {
                dropped.push(format!("{section}.{k}: {e}"));
                continue;
            }
            kept.insert(k.clone(), v.clone());
        }
        sections.insert(section.clone(), Value::Object(kept));
    }
    (sections, dropped)
}

/// One import run.
struct Run<'a> {
    source: &'a Source,
    store: &'a SharedStore,
    dry_run: bool,
    progress: Progress<'a>,
    summary: Summary,
    ensured: HashSet<Db>,
    /// Source documents read so far.
    docs: u64,
}

/// How a document is compared and written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Rewritten when the Kazoo revision moved.
    Mirror,
    /// A user: like `Mirror`, keeping an upgraded faxd record that still fits.
    User,
    /// Written once, never overwritten (a queued job belongs to faxd's queue once imported).
    CreateOnly,
}

impl<'a> Run<'a> {
    async fn ensure(&mut self, db: &Db) -> Result<(), ImportError> {
        if !self.dry_run && !self.ensured.contains(db) {
            self.store.ensure_db(db).await?;
            self.ensured.insert(db.clone());
        }
        Ok(())
    }

    async fn target(&self, db: &Db, id: &str) -> Result<Option<Value>, ImportError> {
        match self.store.get(db, id).await {
            Ok(d) => Ok(d),
            Err(StoreError::NoDatabase(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes `doc` to `db` unless the stored copy came from the same Kazoo revision (and
    /// has its attachments). Attachments are read from `src` (`<db>`, `<id>`) by name.
    async fn put(
        &mut self,
        kind: &'static str,
        db: &Db,
        mut doc: Value,
        src: (&str, &str),
        names: &[String],
        mode: Mode,
    ) -> Result<Outcome, ImportError> {
        self.ensure(db).await?;
        let id = id_of(&doc).to_string();
        let target = self.target(db, &id).await?;
        if let Some(t) = &target {
            let same_rev =
                doc.get(SOURCE_REV).is_some() && t.get(SOURCE_REV) == doc.get(SOURCE_REV);
            let has_all = names.iter().all(|n| {
                t.pointer(&format!(
                    "/_attachments/{}",
                    n.replace('~', "~0").replace('/', "~1")
                ))
                .is_some()
            });
            if mode == Mode::CreateOnly || (same_rev && has_all) {
                return Ok(Outcome::Unchanged);
            }
        }
        let outcome = if target.is_some() {
            Outcome::Updated
        } else {
            Outcome::Created
        };
        if mode == Mode::User {
            keep_upgrade(&mut doc, target.as_ref());
        }
        if self.dry_run {
            return Ok(outcome);
        }
        let mut attachments = Vec::with_capacity(names.len());
        for name in names {
            match self.source.attachment(src.0, src.1, name).await? {
                Some((content_type, data)) => attachments.push(NewAttachment {
                    name: name.clone(),
                    content_type,
                    data,
                }),
                None => self.summary.skip(
                    kind,
                    format!("{}/{}/{name}", src.0, src.1),
                    "attachment listed but missing in Kazoo",
                ),
            }
        }
        let mut rev = target.as_ref().and_then(|t| t.get("_rev").cloned());
        for attempt in 0..2 {
            let mut d = doc.clone();
            if let Some(r) = &rev {
                d["_rev"] = r.clone();
            }
            match self
                .store
                .save_with_attachments(db, d, attachments.clone())
                .await
            {
                Ok(_) => return Ok(outcome),
                // Someone (a login upgrading the user, the node) wrote it meanwhile.
                Err(StoreError::Conflict) if attempt == 0 => {
                    rev = self
                        .target(db, &id)
                        .await?
                        .and_then(|t| t.get("_rev").cloned());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }

    fn tick(&mut self) {
        self.docs += 1;
        if self.docs.is_multiple_of(200) {
            (self.progress)(&format!("  … {} documents read", self.docs));
        }
    }

    async fn account(&mut self, doc: &Value) -> Result<Option<AccountId>, ImportError> {
        self.tick();
        let at = format!("accounts/{}", id_of(doc));
        let Ok(account) = AccountId::parse(id_of(doc)) else {
            self.summary
                .skip(ACCOUNTS, at, "the id is not an account id (32 hex)");
            return Ok(None);
        };
        if doc.get("pvt_deleted").and_then(Value::as_bool) == Some(true) {
            self.summary.skip(ACCOUNTS, at, "deleted in Kazoo");
            return Ok(None);
        }
        let own = Db::Account(account.clone());
        let mut mapped = base(doc, &own, account.as_str());
        mapped["pvt_type"] = json!("account");
        mapped["pvt_account_id"] = json!(account.as_str());
        let a = self
            .put(
                ACCOUNTS,
                &own,
                mapped.clone(),
                ("accounts", id_of(doc)),
                &[],
                Mode::Mirror,
            )
            .await?;
        let b = self
            .put(
                ACCOUNTS,
                &Db::Accounts,
                mapped,
                ("accounts", id_of(doc)),
                &[],
                Mode::Mirror,
            )
            .await?;
        self.summary.record(ACCOUNTS, a.and(b));
        Ok(Some(account))
    }

    async fn account_db(&mut self, account: &AccountId) -> Result<(), ImportError> {
        let src_db = account.db_name();
        let mut docs = self.source.all_docs(&src_db).await?;
        // Users and faxboxes before the callflows that name them.
        let rank = |d: &Value| match s(d, "pvt_type") {
            Some("user") => 0,
            Some("faxbox") => 1,
            Some("callflow") => 2,
            _ => 3,
        };
        docs.sort_by_key(|d| rank(d));
        let own = Db::Account(account.clone());
        for doc in &docs {
            let id = id_of(doc).to_string();
            let at = format!("{src_db}/{id}");
            let pvt_type = s(doc, "pvt_type").unwrap_or("").to_string();
            if id == account.as_str() {
                continue;
            }
            self.tick();
            let deleted = doc.get("pvt_deleted").and_then(Value::as_bool) == Some(true);
            match pvt_type.as_str() {
                "user" | "faxbox" | "callflow" | "fax" if deleted => {
                    let kind = match pvt_type.as_str() {
                        "user" => USERS,
                        "faxbox" => FAXBOXES,
                        "callflow" => CALLFLOWS,
                        _ => HISTORY,
                    };
                    self.summary.skip(kind, at, "deleted in Kazoo");
                }
                "user" => match check_user(doc) {
                    Ok(()) => {
                        let mut mapped = base(doc, &own, &id);
                        mapped["pvt_account_id"] = json!(account.as_str());
                        let o = self
                            .put(USERS, &own, mapped, (&src_db, &id), &[], Mode::User)
                            .await?;
                        self.summary.record(USERS, o);
                    }
                    Err(why) => self.summary.skip(USERS, at, why),
                },
                "faxbox" => self.faxbox(account, doc, &src_db).await?,
                "callflow" => self.callflow(account, doc, &src_db).await?,
                "fax" => self.fax(account, doc, &src_db).await?,
                "" => self.summary.skip(OTHER, at, "no pvt_type"),
                other => self.summary.ignore(other),
            }
        }
        Ok(())
    }

    async fn faxbox(
        &mut self,
        account: &AccountId,
        doc: &Value,
        src_db: &str,
    ) -> Result<(), ImportError> {
        let id = id_of(doc).to_string();
        let own = Db::Account(account.clone());
        let mut mapped = base(doc, &own, &id);
        mapped["pvt_account_id"] = json!(account.as_str());
        if let Some(custom) = s(doc, "custom_smtp_email_address") {
            let lowered = custom.trim().to_lowercase();
            let owner = match self.store.faxbox_by_email(&lowered).await {
                Ok(o) => o,
                Err(StoreError::NoDatabase(_)) => None,
                Err(e) => return Err(e.into()),
            };
            match owner {
                Some(hit) if hit.faxbox_id != id => {
                    self.summary.skip(
                        FAXBOXES,
                        format!("{src_db}/{id}"),
                        format!(
                            "custom_smtp_email_address {lowered} already belongs to faxbox {} \
                             of account {}: imported without it",
                            hit.faxbox_id, hit.account_id
                        ),
                    );
                    if let Some(m) = mapped.as_object_mut() {
                        m.remove("custom_smtp_email_address");
                    }
                }
                _ => mapped["custom_smtp_email_address"] = json!(lowered),
            }
        }
        let a = self
            .put(
                FAXBOXES,
                &own,
                mapped.clone(),
                (src_db, &id),
                &[],
                Mode::Mirror,
            )
            .await?;
        // The `faxes` copy is where SMTP addresses are looked up.
        let mut copy = mapped;
        copy["pvt_account_db"] = json!(Db::Faxes.name());
        let b = self
            .put(FAXBOXES, &Db::Faxes, copy, (src_db, &id), &[], Mode::Mirror)
            .await?;
        self.summary.record(FAXBOXES, a.and(b));
        Ok(())
    }

    async fn callflow(
        &mut self,
        account: &AccountId,
        doc: &Value,
        src_db: &str,
    ) -> Result<(), ImportError> {
        let id = id_of(doc).to_string();
        let at = format!("{src_db}/{id}");
        let Some(flow) = doc.get("flow").filter(|f| f.is_object()) else {
            self.summary.skip(CALLFLOWS, at, "flow is not an object");
            return Ok(());
        };
        if !has_fax_module(flow) {
            self.summary.skip(
                CALLFLOWS,
                at,
                "no receive_fax or faxbox module: not fax routing",
            );
            return Ok(());
        }
        let raw: Vec<String> = match doc.get("numbers") {
            None => vec![],
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(_) => {
                self.summary
                    .skip(CALLFLOWS, at, "numbers is not a list of strings");
                return Ok(());
            }
        };
        let mut numbers: Vec<String> = Vec::new();
        for n in &raw {
            let Some(norm) = callflow_number(n) else {
                self.summary.skip(
                    NUMBERS,
                    format!("{at} {n}"),
                    "not a dialable number or extension",
                );
                continue;
            };
            if numbers.contains(&norm) {
                continue;
            }
            match self.target(&Db::Accounts, &claim_id(&norm)).await? {
                Some(c)
                    if s(&c, "account_id") != Some(account.as_str())
                        || s(&c, "callflow_id") != Some(id.as_str()) =>
                {
                    self.summary.skip(
                        NUMBERS,
                        format!("{at} {norm}"),
                        format!(
                            "already routes to callflow {} of account {} in faxd",
                            s(&c, "callflow_id").unwrap_or("?"),
                            s(&c, "account_id").unwrap_or("?")
                        ),
                    );
                }
                _ => numbers.push(norm),
            }
        }
        let own = Db::Account(account.clone());
        let previous = self.target(&own, &id).await?;
        let mut mapped = base(doc, &own, &id);
        mapped["pvt_account_id"] = json!(account.as_str());
        mapped["numbers"] = json!(numbers);
        let o = self
            .put(CALLFLOWS, &own, mapped, (src_db, &id), &[], Mode::Mirror)
            .await?;
        self.summary.record(CALLFLOWS, o);
        for n in &numbers {
            let o = self.claim(account, &id, n).await?;
            self.summary.record(NUMBERS, o);
        }
        // Numbers the Kazoo callflow no longer has stop routing to it.
        let before: BTreeSet<String> = previous
            .as_ref()
            .map(crate::accounts::numbers_of)
            .unwrap_or_default()
            .into_iter()
            .collect();
        for gone in before.iter().filter(|n| !numbers.contains(n)) {
            self.release(&id, gone).await?;
        }
        Ok(())
    }

    /// The claim of `number` for the callflow, as the callflows API writes it.
    async fn claim(
        &mut self,
        account: &AccountId,
        callflow: &str,
        number: &str,
    ) -> Result<Outcome, ImportError> {
        let id = claim_id(number);
        if self.target(&Db::Accounts, &id).await?.is_some() {
            return Ok(Outcome::Unchanged);
        }
        if !self.dry_run {
            let doc = json!({"_id": id, "pvt_type": "number_claim", "account_id": account.as_str(),
                             "callflow_id": callflow, "number": number});
            match self.store.save(&Db::Accounts, doc).await {
                Ok(_) | Err(StoreError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Outcome::Created)
    }

    async fn release(&mut self, callflow: &str, number: &str) -> Result<(), ImportError> {
        if self.dry_run {
            return Ok(());
        }
        if let Some(c) = self.target(&Db::Accounts, &claim_id(number)).await?
            && s(&c, "callflow_id") == Some(callflow)
            && let Some(rev) = s(&c, "_rev")
        {
            match self
                .store
                .delete(&Db::Accounts, &claim_id(number), rev)
                .await
            {
                Ok(_) | Err(StoreError::NotFound(_)) | Err(StoreError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// A fax (or SMTP log) of an account, from a MODB or (legacy) the account database.
    async fn fax(
        &mut self,
        account: &AccountId,
        doc: &Value,
        src_db: &str,
    ) -> Result<(), ImportError> {
        let kind = if s(doc, "pvt_type") == Some("fax_smtp_log") {
            SMTP_LOGS
        } else {
            HISTORY
        };
        let src_id = id_of(doc).to_string();
        let at = format!("{src_db}/{src_id}");
        if doc.get("pvt_deleted").and_then(Value::as_bool) == Some(true) {
            self.summary.skip(kind, at, "deleted in Kazoo");
            return Ok(());
        }
        let (db, id) = match fax_place(account, doc) {
            Ok(p) => p,
            Err(why) => {
                self.summary.skip(kind, at, why);
                return Ok(());
            }
        };
        let mut mapped = base(doc, &db, &id);
        mapped["pvt_account_id"] = json!(account.as_str());
        let names = attachment_names(doc);
        let o = self
            .put(kind, &db, mapped, (src_db, &src_id), &names, Mode::Mirror)
            .await?;
        self.summary.record(kind, o);
        Ok(())
    }

    async fn modbs(&mut self, account: &AccountId, all_dbs: &[String]) -> Result<(), ImportError> {
        let prefix = format!("{}-", account.db_name());
        let mut modbs: Vec<&String> = all_dbs
            .iter()
            .filter(|d| {
                d.strip_prefix(&prefix)
                    .is_some_and(|m| YearMonth::parse(m).is_ok())
            })
            .collect();
        modbs.sort();
        for db in modbs {
            let docs = self.source.all_docs(db).await?;
            (self.progress)(&format!("  {db}: {} documents", docs.len()));
            for doc in &docs {
                self.tick();
                match s(doc, "pvt_type") {
                    Some("fax" | "fax_smtp_log") => self.fax(account, doc, db).await?,
                    Some(other) => self.summary.ignore(other),
                    None => self
                        .summary
                        .skip(OTHER, format!("{db}/{}", id_of(doc)), "no pvt_type"),
                }
            }
        }
        Ok(())
    }

    async fn jobs(&mut self, account: &AccountId, jobs: &[&Value]) -> Result<(), ImportError> {
        for doc in jobs {
            self.tick();
            let at = format!("faxes/{}", id_of(doc));
            match map_job(account, doc) {
                Err(why) => self.summary.skip(QUEUED, at, why),
                Ok(JobPlace::Queue(job)) => {
                    // Sent by faxd after an earlier import: never queue it again.
                    let created = doc.get("pvt_created").and_then(Value::as_i64).unwrap_or(0);
                    let month = YearMonth::from_gregorian(created);
                    let done = self
                        .target(
                            &Db::Modb(account.clone(), month),
                            &modb_doc_id(month, id_of(doc)),
                        )
                        .await?;
                    if done.is_some() {
                        self.summary.record(QUEUED, Outcome::Unchanged);
                        continue;
                    }
                    let names = attachment_names(doc);
                    let o = self
                        .put(
                            QUEUED,
                            &Db::Faxes,
                            job,
                            ("faxes", id_of(doc)),
                            &names,
                            Mode::CreateOnly,
                        )
                        .await?;
                    self.summary.record(QUEUED, o);
                }
                Ok(JobPlace::Outbox(db, moved)) => {
                    let names = attachment_names(doc);
                    let o = self
                        .put(
                            HISTORY,
                            &db,
                            moved,
                            ("faxes", id_of(doc)),
                            &names,
                            Mode::Mirror,
                        )
                        .await?;
                    self.summary.record(HISTORY, o);
                }
            }
        }
        Ok(())
    }

    async fn fax_config(&mut self) -> Result<(), ImportError> {
        let Some(src) = self.source.doc("system_config", "fax").await? else {
            return Ok(());
        };
        self.tick();
        let (sections, dropped) = clean_fax_config(&src);
        for why in dropped {
            self.summary.skip(
                CONFIG,
                "system_config/fax".into(),
                format!("{why}: key left out"),
            );
        }
        self.ensure(&Db::SystemConfig).await?;
        let target = self.target(&Db::SystemConfig, "fax").await?;
        let mut merged = target.clone().unwrap_or_else(|| json!({"_id": "fax"}));
        for (section, values) in sections {
            if !merged.get(&section).is_some_and(Value::is_object) {
                merged[&section] = json!({});
            }
            for (k, v) in values.as_object().into_iter().flatten() {
                merged[&section][k] = v.clone();
            }
        }
        if target.as_ref() == Some(&merged) {
            self.summary.record(CONFIG, Outcome::Unchanged);
            return Ok(());
        }
        let outcome = if target.is_some() {
            Outcome::Updated
        } else {
            Outcome::Created
        };
        if !self.dry_run {
            self.store.save(&Db::SystemConfig, merged).await?;
        }
        self.summary.record(CONFIG, outcome);
        Ok(())
    }
}

/// Imports from `source` into `store`. Progress lines go to `progress`; the summary is
/// returned (also when nothing changed).
pub async fn run(
    source: &Source,
    store: &SharedStore,
    options: &Options,
    progress: Progress<'_>,
) -> Result<Summary, ImportError> {
    let started = Instant::now();
    let all_dbs = source.all_dbs().await?;
    let directory = source.all_docs("accounts").await?;
    let accounts = select_accounts(&directory, &options.accounts)?;
    progress(&format!(
        "importing {} account(s) from {}{}",
        accounts.len(),
        source.url(),
        if options.dry_run { " (dry run)" } else { "" }
    ));
    let mut run = Run {
        source,
        store,
        dry_run: options.dry_run,
        progress,
        summary: Summary {
            dry_run: options.dry_run,
            ..Summary::default()
        },
        ensured: HashSet::new(),
        docs: 0,
    };
    if !options.dry_run {
        crate::bootstrap::ensure_global_dbs(store).await?;
    }
    run.fax_config().await?;
    let queue = source.all_docs("faxes").await?;
    let total = accounts.len();
    for (i, doc) in accounts.iter().enumerate() {
        progress(&format!(
            "[{}/{total}] account {} ({})",
            i + 1,
            s(doc, "name").unwrap_or("?"),
            id_of(doc)
        ));
        let Some(account) = run.account(doc).await? else {
            continue;
        };
        run.account_db(&account).await?;
        let jobs: Vec<&Value> = queue
            .iter()
            .filter(|d| {
                s(d, "pvt_type") == Some("fax") && s(d, "pvt_account_id") == Some(account.as_str())
            })
            .collect();
        run.jobs(&account, &jobs).await?;
        run.modbs(&account, &all_dbs).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    progress(&format!(
        "done: {} documents in {secs:.2} s ({:.0} docs/s)",
        run.docs,
        run.docs as f64 / secs.max(1e-6)
    ));
    Ok(run.summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1a2b3c4d5e6f708192a3b4c5d6e7f809";
    const B: &str = "2a2b3c4d5e6f708192a3b4c5d6e7f809";
    const C: &str = "3a2b3c4d5e6f708192a3b4c5d6e7f809";

    #[test]
    fn accounts_are_selected_with_descendants_parents_first() {
        let all = vec![
            json!({"_id": C, "pvt_type": "account", "pvt_tree": [A, B]}),
            json!({"_id": A, "pvt_type": "account", "pvt_tree": []}),
            json!({"_id": B, "pvt_type": "account", "pvt_tree": [A]}),
        ];
        let ids = |v: Vec<Value>| v.iter().map(|d| id_of(d).to_string()).collect::<Vec<_>>();
        assert_eq!(ids(select_accounts(&all, &[]).unwrap()), [A, B, C]);
        let b = AccountId::parse(B).unwrap();
        assert_eq!(ids(select_accounts(&all, &[b]).unwrap()), [B, C]);
        let unknown = AccountId::parse(&"f".repeat(32)).unwrap();
        assert!(matches!(
            select_accounts(&all, &[unknown]),
            Err(ImportError::UnknownAccount(_))
        ));
    }

    #[test]
    fn only_fax_callflows_and_real_numbers_move() {
        let fax =
            json!({"module": "user", "children": {"_": {"module": "faxbox", "data": {"id": "x"}}}});
        assert!(has_fax_module(&fax));
        assert!(has_fax_module(&json!({"module": "receive_fax"})));
        assert!(!has_fax_module(
            &json!({"module": "voicemail", "children": {}})
        ));
        assert_eq!(
            callflow_number("4155550100").as_deref(),
            Some("+14155550100")
        );
        assert_eq!(
            callflow_number("+442071234567").as_deref(),
            Some("+442071234567")
        );
        assert_eq!(callflow_number("100").as_deref(), Some("100"));
        assert_eq!(callflow_number("*97"), None);
        assert_eq!(callflow_number("no_match"), None);
    }

    #[test]
    fn faxes_land_in_the_month_of_their_id_or_creation() {
        let a = AccountId::parse(A).unwrap();
        let (db, id) = fax_place(&a, &json!({"_id": "202611-abc"})).unwrap();
        assert_eq!(db, Db::Modb(a.clone(), YearMonth::new(2026, 11).unwrap()));
        assert_eq!(id, "202611-abc");
        let nov = YearMonth::new(2026, 11).unwrap().start_gregorian() + 3600;
        let (db, id) = fax_place(&a, &json!({"_id": "legacy1", "pvt_created": nov})).unwrap();
        assert_eq!(db.name(), format!("{}-202611", a.db_name()));
        assert_eq!(id, "202611-legacy1");
        assert!(fax_place(&a, &json!({"_id": "x", "pvt_created": "yesterday"})).is_err());
    }

    #[test]
    fn jobs_are_requeued_moved_or_refused() {
        let a = AccountId::parse(A).unwrap();
        let nov = YearMonth::new(2026, 11).unwrap().start_gregorian();
        let job = |st: &str| {
            json!({"_id": "j1", "_rev": "3-x", "pvt_type": "fax", "pvt_job_status": st,
                   "to_number": "+14155550100", "pvt_created": nov, "pvt_queue": "q",
                   "pvt_job_node": "fax@k1"})
        };
        let JobPlace::Queue(q) = map_job(&a, &job("locked")).unwrap() else {
            panic!("locked stays queued")
        };
        assert_eq!(q["pvt_job_status"], "pending");
        assert_eq!(q["pvt_account_db"], "faxes");
        assert_eq!(q[SOURCE_REV], "3-x");
        assert!(q.get("pvt_queue").is_none() && q.get("pvt_job_node").is_none());
        let JobPlace::Outbox(db, done) = map_job(&a, &job("failed")).unwrap() else {
            panic!("failed goes to the outbox")
        };
        assert_eq!(db, Db::Modb(a.clone(), YearMonth::new(2026, 11).unwrap()));
        assert_eq!(done["_id"], "202611-j1");
        assert_eq!(done["folder"], "outbox");
        assert!(
            map_job(&a, &job("processing"))
                .unwrap_err()
                .contains("processing")
        );
        assert!(map_job(&a, &job("bogus")).is_err());
        let mut no_to = job("pending");
        no_to["to_number"] = json!("");
        assert!(map_job(&a, &no_to).is_err());
    }

    #[test]
    fn users_keep_digests_and_an_upgrade_that_still_fits() {
        let (md5, sha1) = crate::auth::login_digests("fax", "pw");
        let user = json!({"_id": "u", "pvt_md5_auth": md5, "pvt_sha1_auth": sha1});
        assert!(check_user(&user).is_ok());
        assert!(check_user(&json!({"pvt_md5_auth": "zz"})).is_err());
        assert!(check_user(&json!({"pvt_sha1_auth": 5})).is_err());

        let upgraded = json!({"pvt_auth": PasswordRecord::from_digests(Some(&md5), Some(&sha1))});
        let mut doc = user.clone();
        keep_upgrade(&mut doc, Some(&upgraded));
        assert!(doc.get("pvt_auth").is_some() && doc.get("pvt_md5_auth").is_none());
        // The password changed in Kazoo: Kazoo's digests win.
        let other = json!({"pvt_auth": PasswordRecord::new("fax", "new")});
        let mut doc = user.clone();
        keep_upgrade(&mut doc, Some(&other));
        assert_eq!(doc, user);
    }

    #[test]
    fn fax_config_keeps_good_values_and_drops_bad_ones() {
        let (sections, dropped) = clean_fax_config(&json!({
            "_id": "fax", "_rev": "1-a",
            "default": {"max_outbound": 7, "default_retry_count": "three", "kazoo_only_key": 1},
            "fax@kz1.example.com": {"max_outbound": 2}
        }));
        assert_eq!(sections["default"]["max_outbound"], 7);
        assert_eq!(sections["default"]["kazoo_only_key"], 1);
        assert!(sections["default"].get("default_retry_count").is_none());
        assert_eq!(sections["fax@kz1.example.com"]["max_outbound"], 2);
        assert!(sections.get("_id").is_none());
        assert_eq!(dropped.len(), 1);
        assert!(
            dropped[0].starts_with("default.default_retry_count"),
            "{dropped:?}"
        );
    }
}
