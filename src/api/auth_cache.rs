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

use super::request::Caller;
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
    /// Shared with every request that uses it: nothing is copied on a hit.
    doc: Option<Arc<Value>>,
    at: Instant,
}

/// A token verified against the documents of the cache, as of `epoch`.
struct CallerEntry {
    caller: Caller,
    epoch: u64,
    at: Instant,
}

/// The cache: documents of the `accounts` database and of account databases, by id, and the
/// callers that tokens were verified as.
pub struct AuthCache {
    entries: Mutex<HashMap<(Db, String), Entry>>,
    /// Verified tokens. An entry holds only while no entry of `entries` has been dropped since
    /// it was made (the epoch is unchanged) and for [`TTL`] at most: exactly as long as every
    /// document its verification read would still be served from the cache.
    callers: Mutex<HashMap<String, CallerEntry>>,
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
            callers: Mutex::new(HashMap::new()),
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
    ) -> Result<Option<Arc<Value>>> {
        if reads == Reads::Cached {
            self.drain_feed(store).await;
            if let Some(doc) = self.lookup(db, id) {
                return Ok(doc);
            }
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let doc = store.get(db, id).await?.map(Arc::new);
        self.insert(db, id, &doc, epoch);
        Ok(doc)
    }

    /// The epoch that [`AuthCache::keep_caller`] is given: read before the first document of
    /// a verification.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The caller `token` was verified as, while every document that verification read is
    /// unchanged in the cache (see [`AuthCache::callers`]). Whether the token has expired
    /// since is the caller's to check.
    pub async fn caller(&self, store: &SharedStore, token: &str) -> Option<Caller> {
        self.drain_feed(store).await;
        let callers = self.callers.lock().ok()?;
        let e = callers.get(token)?;
        (e.epoch == self.epoch.load(Ordering::Acquire) && e.at.elapsed() < self.ttl)
            .then(|| e.caller.clone())
    }

    /// Keeps a caller verified since `epoch` ([`AuthCache::epoch`]) from the cached documents
    /// `read`; it holds until the oldest of them would be read again.
    pub fn keep_caller(&self, token: &str, caller: &Caller, epoch: u64, read: &[(Db, String)]) {
        let oldest = {
            let Ok(entries) = self.entries.lock() else {
                return;
            };
            let mut oldest = Instant::now();
            for key in read {
                match entries.get(key) {
                    Some(e) => oldest = oldest.min(e.at),
                    // Not cached (a read raced an invalidation): nothing to keep.
                    None => return,
                }
            }
            oldest
        };
        let Ok(mut callers) = self.callers.lock() else {
            return;
        };
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if callers.len() >= MAX_ENTRIES {
            let (ttl, now) = (self.ttl, self.epoch.load(Ordering::Acquire));
            callers.retain(|_, e| e.epoch == now && e.at.elapsed() < ttl);
            if callers.len() >= MAX_ENTRIES {
                callers.clear();
            }
        }
        callers.insert(
            token.to_string(),
            CallerEntry {
                caller: caller.clone(),
                epoch,
                at: oldest,
            },
        );
    }

    fn lookup(&self, db: &Db, id: &str) -> Option<Option<Arc<Value>>> {
        let entries = self.entries.lock().ok()?;
        let e = entries.get(&(db.clone(), id.to_string()))?;
        (e.at.elapsed() < self.ttl).then(|| e.doc.clone())
    }

    fn insert(&self, db: &Db, id: &str, doc: &Option<Arc<Value>>, epoch: u64) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::AccountId;
    use serde_json::json;

    fn caller(account: &AccountId) -> Caller {
        Caller::from(crate::api::request::Verified {
            token: "t".into(),
            claims: crate::api::token::Claims {
                jti: "j".into(),
                account_id: account.as_str().into(),
                owner_id: None,
                method: "cb_api_auth".into(),
                exp: i64::MAX,
                iss: "faxd".into(),
                identity: String::new(),
            },
            account: account.clone(),
            account_doc: Arc::new(json!({})),
            superduper: false,
            admin: true,
        })
    }

    #[tokio::test]
    async fn a_verified_caller_lasts_only_while_the_documents_it_was_read_from_are_unchanged() {
        let (store, _dir) = crate::store::sqlite::test_store().await;
        let cache = AuthCache::default();
        let a = AccountId::generate();
        store
            .save(
                &Db::Accounts,
                json!({"_id": a.as_str(), "pvt_type": "account"}),
            )
            .await
            .expect("save");
        let read = [(Db::Accounts, a.as_str().to_string())];
        let read_account = async || {
            cache
                .get(&store, &Db::Accounts, a.as_str(), Reads::Cached)
                .await
                .expect("read");
        };

        // Documents never read through the cache: nothing is kept.
        let epoch = cache.epoch();
        cache.keep_caller("t", &caller(&a), epoch, &read);
        assert!(cache.caller(&store, "t").await.is_none());

        // Read, then kept: served until any cached document is dropped.
        let epoch = cache.epoch();
        read_account().await;
        cache.keep_caller("t", &caller(&a), epoch, &read);
        assert_eq!(
            cache.caller(&store, "t").await.map(|c| c.account.clone()),
            Some(a.clone())
        );
        assert!(cache.caller(&store, "other token").await.is_none());
        cache.forget(&Db::Accounts, "some other document");
        assert!(cache.caller(&store, "t").await.is_none());

        // A verification that raced an invalidation is not kept.
        let epoch = cache.epoch();
        read_account().await;
        cache.forget(&Db::Accounts, "x");
        read_account().await;
        cache.keep_caller("t", &caller(&a), epoch, &read);
        assert!(cache.caller(&store, "t").await.is_none());
    }
}
