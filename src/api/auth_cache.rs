//! The authentication cache: the documents every account request checks before its handler
//! runs (the token's revocation record, the caller's account, the user behind the token, the
//! path's account), kept in memory so that a request does not read them from the store each
//! time.
//!
//! How stale an entry can be, by where the change was written:
//! - **by this node's API** (logout, a user disabled, deleted or given a new password, an
//!   account disabled or deleted, an API key regenerated): never. Every store write of the API
//!   goes through [`Invalidates`], which drops the entries of the documents it wrote before it
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

use serde_json::Value;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::TryRecvError;

use crate::ids::Db;
use crate::store::observed::{Write, WriteObserver};
use crate::store::{Change, Result, SharedStore};

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
    /// The `accounts` change feed, subscribed at the first lookup.
    feed: tokio::sync::Mutex<Feed>,
    ttl: Duration,
}

/// The change feed as the cache holds it.
#[derive(Default)]
struct Feed {
    /// `None` before the first lookup, after the feed closed, or while subscribing fails.
    rx: Option<broadcast::Receiver<Change>>,
    /// After a failed subscription: not tried again before this (backing off).
    retry_at: Option<Instant>,
    /// The next wait after a failed subscription.
    backoff: Duration,
}

/// The first and the longest wait before subscribing again after a failure.
const RESUBSCRIBE_MIN: Duration = Duration::from_millis(500);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(30);

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
            feed: tokio::sync::Mutex::new(Feed::default()),
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
    /// subscribed again, backing off while that fails). Without a feed the TTL alone bounds
    /// staleness. A lookup that finds another one draining does not wait for it: that one is
    /// applying the same changes at this moment.
    async fn drain_feed(&self, store: &SharedStore) {
        let Ok(mut feed) = self.feed.try_lock() else {
            return;
        };
        if feed.rx.is_none() {
            if feed.retry_at.is_some_and(|t| Instant::now() < t) {
                return;
            }
            match store.subscribe(&Db::Accounts).await {
                Ok(rx) => {
                    // Whatever was cached before the subscription may predate a change.
                    self.clear();
                    *feed = Feed {
                        rx: Some(rx),
                        ..Feed::default()
                    };
                }
                Err(e) => {
                    let wait = feed.backoff.max(RESUBSCRIBE_MIN);
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64,
                                   "auth cache: no accounts change feed");
                    feed.retry_at = Some(Instant::now() + wait);
                    feed.backoff = (wait * 2).min(RESUBSCRIBE_MAX);
                    return;
                }
            }
        }
        let Some(rx) = feed.rx.as_mut() else {
            return;
        };
        loop {
            match rx.try_recv() {
                Ok(change) => self.forget(&change.db, &change.id),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Lagged(_)) => self.clear(),
                Err(TryRecvError::Closed) => {
                    self.clear();
                    feed.rx = None;
                    return;
                }
            }
        }
    }
}

/// What the API's store ([`crate::store::observed::Observed`]) tells the cache: every write to
/// an account or the `accounts` database drops the entries of what it wrote, before and after
/// the write, so no lookup in between keeps an old version.
pub struct Invalidates(pub Arc<AuthCache>);

impl WriteObserver for Invalidates {
    fn before(&self, write: &Write<'_>) {
        self.forget(write);
    }

    fn after(&self, write: &Write<'_>) {
        self.forget(write);
    }
}

impl Invalidates {
    fn forget(&self, write: &Write<'_>) {
        match *write {
            Write::Save { db, id: Some(id) }
            | Write::SaveWithAttachments { db, id: Some(id) }
            | Write::Delete { db, id }
            | Write::PutAttachment { db, id }
            | Write::DeleteAttachment { db, id } => self.0.forget(db, id),
            // A new document: nothing is cached under an id it has not got yet.
            Write::Save { id: None, .. } | Write::SaveWithAttachments { id: None, .. } => {}
            Write::DeleteDb { db } => self.0.forget_db(db),
        }
    }
}
