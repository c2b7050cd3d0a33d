//! The authentication cache: the documents every account request checks before its handler
//! runs (the token's revocation record, the caller's account, the user behind the token, the
//! path's account), kept in memory so that a request does not read them from the store each
//! time.
//!
//! How stale an entry can be, by where the change was written:
//! - **by this node's API** (logout, a user disabled, deleted or given a new password, an
//!   account disabled or deleted, an API key regenerated): never. Every store write of the API
//!   goes through [`Invalidating`], which drops the entries of the documents it wrote before it
//!   returns, so the very next request reads them again.
//! - **anywhere else** (another node, another process on the same data, a tool writing straight
//!   to the store): an entry of the `accounts` database (accounts, revocation records) is dropped
//!   when its change arrives on the store's change feed, which the cache drains before each
//!   lookup; whatever the feed misses (a user document, an embedded store written by another
//!   process) is read again at most [`TTL`] after it was cached.
//!
//! Only reads are cached: a request that may save an account or user document authenticates
//! against fresh reads ([`Reads::Fresh`]), so that its handler saves from the current revision.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::TryRecvError;

use crate::ids::{AccountId, Db};
use crate::model::JobStatus;
use crate::store::{
    Attachment, Backend, ByteStream, Change, CreatedRange, FaxboxAddress, JobRow, Listing,
    ModbFilter, ModbRow, NewAttachment, Page, Result, SharedStore, SmtpLogRow, Store,
};

/// The longest an entry is used after it was read: the bound on how long a change the change
/// feed does not deliver (see the module documentation) goes unseen.
pub const TTL: Duration = Duration::from_secs(2);

/// Entries kept before expired ones are pruned (and all dropped if none has expired).
const MAX_ENTRIES: usize = 20_000;

/// How a request reads the documents it authenticates with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// From the cache (read through on a miss).
    Cached,
    /// From the store, always.
    Fresh,
}

struct Entry {
    doc: Option<Value>,
    at: Instant,
}

/// The cache: documents of the `accounts` database and of account databases, by id.
pub struct AuthCache {
    entries: Mutex<HashMap<(Db, String), Entry>>,
    /// Bumped by every invalidation: a read that started before one is not cached (it may
    /// have seen the document before the write that dropped it).
    epoch: AtomicU64,
    /// The `accounts` change feed, subscribed at the first lookup; `None` until then, or
    /// after it closed (subscribed again at the next lookup).
    feed: tokio::sync::Mutex<Option<broadcast::Receiver<Change>>>,
    ttl: Duration,
}

impl Default for AuthCache {
    fn default() -> Self {
        Self::with_ttl(TTL)
    }
}

/// Whether documents of `db` are cached (and so invalidated by writes).
fn cached_db(db: &Db) -> bool {
    matches!(db, Db::Accounts | Db::Account(_))
}

impl AuthCache {
    pub fn with_ttl(ttl: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            feed: tokio::sync::Mutex::new(None),
            ttl,
        }
    }

    /// A document (`None` when missing or deleted), from the cache when `reads` allows and
    /// an entry is fresh, else from the store (and then cached).
    pub async fn get(
        &self,
        store: &SharedStore,
        db: &Db,
        id: &str,
        reads: Reads,
    ) -> Result<Option<Value>> {
        if reads == Reads::Cached {
            self.drain_feed(store).await;
            if let Some(doc) = self.lookup(db, id) {
                return Ok(doc);
            }
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let doc = store.get(db, id).await?;
        self.insert(db, id, &doc, epoch);
        Ok(doc)
    }

    fn lookup(&self, db: &Db, id: &str) -> Option<Option<Value>> {
        let entries = self.entries.lock().ok()?;
        let e = entries.get(&(db.clone(), id.to_string()))?;
        (e.at.elapsed() < self.ttl).then(|| e.doc.clone())
    }

    fn insert(&self, db: &Db, id: &str, doc: &Option<Value>, epoch: u64) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        // Checked under the lock that invalidations take too.
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, e| e.at.elapsed() < ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            (db.clone(), id.to_string()),
            Entry {
                doc: doc.clone(),
                at: Instant::now(),
            },
        );
    }

    /// Drops the entry of one document (its write just happened, or is about to).
    pub fn forget(&self, db: &Db, id: &str) {
        if !cached_db(db) {
            return;
        }
        if let Ok(mut entries) = self.entries.lock() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            entries.remove(&(db.clone(), id.to_string()));
        }
    }

    /// Drops every entry of a database (it was deleted).
    pub fn forget_db(&self, db: &Db) {
        if !cached_db(db) {
            return;
        }
        if let Ok(mut entries) = self.entries.lock() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            entries.retain(|(d, _), _| d != db);
        }
    }

    /// Drops everything (changes may have been missed).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            entries.clear();
        }
    }

    /// Applies the changes of the `accounts` feed that arrived since the last lookup. A feed
    /// that lagged or closed may have lost changes: everything is dropped (and a closed feed
    /// subscribed again). Without a feed the TTL alone bounds staleness.
    async fn drain_feed(&self, store: &SharedStore) {
        let mut feed = self.feed.lock().await;
        if feed.is_none() {
            match store.subscribe(&Db::Accounts).await {
                Ok(rx) => {
                    // Whatever was cached before the subscription may predate a change.
                    self.clear();
                    *feed = Some(rx);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "auth cache: no accounts change feed");
                    return;
                }
            }
        }
        let Some(rx) = feed.as_mut() else {
            return;
        };
        loop {
            match rx.try_recv() {
                Ok(change) => self.forget(&change.db, &change.id),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Lagged(_)) => self.clear(),
                Err(TryRecvError::Closed) => {
                    self.clear();
                    *feed = None;
                    return;
                }
            }
        }
    }
}

/// The API's store: every write to an account or the `accounts` database drops the cached
/// entries of what it wrote (before and after the write, so no lookup in between keeps an
/// old version); everything else passes straight to the store.
pub struct Invalidating {
    inner: SharedStore,
    cache: Arc<AuthCache>,
}

impl Invalidating {
    pub fn new(inner: SharedStore, cache: Arc<AuthCache>) -> Self {
        Self { inner, cache }
    }

    async fn around<T>(
        &self,
        db: &Db,
        id: &str,
        write: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.cache.forget(db, id);
        let out = write.await;
        self.cache.forget(db, id);
        out
    }
}

fn doc_id(doc: &Value) -> Option<String> {
    doc.get("_id").and_then(Value::as_str).map(str::to_string)
}

#[async_trait]
impl Store for Invalidating {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }

    async fn ensure_db(&self, db: &Db) -> Result<()> {
        self.inner.ensure_db(db).await
    }

    async fn db_exists(&self, db: &Db) -> Result<bool> {
        self.inner.db_exists(db).await
    }

    async fn delete_db(&self, db: &Db) -> Result<()> {
        self.cache.forget_db(db);
        let out = self.inner.delete_db(db).await;
        self.cache.forget_db(db);
        out
    }

    async fn get(&self, db: &Db, id: &str) -> Result<Option<Value>> {
        self.inner.get(db, id).await
    }

    async fn save(&self, db: &Db, doc: Value) -> Result<Value> {
        match doc_id(&doc) {
            Some(id) => self.around(db, &id, self.inner.save(db, doc)).await,
            // A new document: nothing cached under its id yet.
            None => self.inner.save(db, doc).await,
        }
    }

    async fn save_with_attachments(
        &self,
        db: &Db,
        doc: Value,
        attachments: Vec<NewAttachment>,
    ) -> Result<Value> {
        match doc_id(&doc) {
            Some(id) => {
                let write = self.inner.save_with_attachments(db, doc, attachments);
                self.around(db, &id, write).await
            }
            None => self.inner.save_with_attachments(db, doc, attachments).await,
        }
    }

    async fn delete(&self, db: &Db, id: &str, rev: &str) -> Result<String> {
        self.around(db, id, self.inner.delete(db, id, rev)).await
    }

    async fn put_attachment(
        &self,
        db: &Db,
        id: &str,
        rev: Option<&str>,
        name: &str,
        content_type: &str,
        body: ByteStream,
    ) -> Result<String> {
        let write = self
            .inner
            .put_attachment(db, id, rev, name, content_type, body);
        self.around(db, id, write).await
    }

    async fn get_attachment(&self, db: &Db, id: &str, name: &str) -> Result<Option<Attachment>> {
        self.inner.get_attachment(db, id, name).await
    }

    async fn delete_attachment(&self, db: &Db, id: &str, rev: &str, name: &str) -> Result<String> {
        self.around(db, id, self.inner.delete_attachment(db, id, rev, name))
            .await
    }

    async fn schedule_accounts(&self) -> Result<Vec<(AccountId, u64)>> {
        self.inner.schedule_accounts().await
    }

    async fn jobs_by_account(&self, account: &AccountId, limit: usize) -> Result<Vec<JobRow>> {
        self.inner.jobs_by_account(account, limit).await
    }

    async fn locked_jobs_by_account(&self, account: &AccountId) -> Result<Vec<JobRow>> {
        self.inner.locked_jobs_by_account(account).await
    }

    async fn processing_by_node(&self, node: Option<&str>) -> Result<Vec<JobRow>> {
        self.inner.processing_by_node(node).await
    }

    async fn stale_jobs(&self, status: JobStatus, modified_before: i64) -> Result<Vec<JobRow>> {
        self.inner.stale_jobs(status, modified_before).await
    }

    async fn list_by_account_state(
        &self,
        account: &AccountId,
        status: Option<JobStatus>,
        range: CreatedRange,
        page: Page,
    ) -> Result<Listing<JobRow>> {
        self.inner
            .list_by_account_state(account, status, range, page)
            .await
    }

    async fn list_by_faxbox_state(
        &self,
        faxbox_id: &str,
        status: Option<JobStatus>,
        range: CreatedRange,
        page: Page,
    ) -> Result<Listing<JobRow>> {
        self.inner
            .list_by_faxbox_state(faxbox_id, status, range, page)
            .await
    }

    async fn faxbox_by_email(&self, address: &str) -> Result<Option<FaxboxAddress>> {
        self.inner.faxbox_by_email(address).await
    }

    async fn modb_list(
        &self,
        account: &AccountId,
        filter: &ModbFilter,
        range: CreatedRange,
        page: Page,
    ) -> Result<Listing<ModbRow>> {
        self.inner.modb_list(account, filter, range, page).await
    }

    async fn smtp_logs(
        &self,
        account: &AccountId,
        range: CreatedRange,
        page: Page,
    ) -> Result<Listing<SmtpLogRow>> {
        self.inner.smtp_logs(account, range, page).await
    }

    async fn docs_by_type(&self, db: &Db, pvt_type: &str) -> Result<Vec<Value>> {
        self.inner.docs_by_type(db, pvt_type).await
    }

    async fn subscribe(&self, db: &Db) -> Result<broadcast::Receiver<Change>> {
        self.inner.subscribe(db).await
    }
}
