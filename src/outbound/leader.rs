//! The outbound leader lease: which node of a cluster runs outbound scheduling (fax_monitor's
//! passes, and so every fax_jobs), so that `max_outbound` and `serialize_outbound_numbers`
//! hold cluster-wide. One document in the `faxes` database ([`LEADER_DOC`], `pvt_type`
//! `outbound_leader`, so no job view or listing sees it) names the holder; every save is
//! rev-checked, so on one CouchDB node (or the embedded store) two nodes can never both take
//! it.
//!
//! On a CouchDB cluster two rev-checked saves can both succeed as conflicting revisions, so
//! a save is not yet the lease: the document is always read with its conflicts
//! ([`crate::store::conflicts`]), and a node holds the lease only if the winning revision
//! names it, read back after its own save. The winner among conflicting revisions is, by
//! content: a held lease before a released one, then the earliest take (`taken_ms`, which a
//! renewal keeps), then the smaller node name. Every node computes the same winner, and
//! renewals do not change it. The loser deletes its own revision and reports the winner
//! ([`Claim::Other`]), so its keeper never opens the gate (or closes it at that renewal);
//! the winner deletes the losing revisions it sees, so the document converges to one leaf
//! even if the loser died.
//!
//! Expiry does not trust clocks across nodes: a watcher takes the lease only after it has
//! seen the same revision for a whole lease time on its own monotonic clock ([`Watch`]); the
//! holder counts its own validity from the moment it started its last successful renewal,
//! so it always steps down before anyone else can take over. The wall-clock times in the
//! document are for operators (`faxd_maintenance status`).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::ids::Db;
use crate::store::{SharedStore, StoreError, conflicts};

/// Id of the lease document in the `faxes` database.
pub const LEADER_DOC: &str = "faxd_outbound_leader";
/// `pvt_type` of the lease document.
pub const LEADER_TYPE: &str = "outbound_leader";
/// Id prefix of the lease of one account's outbound queue ([`owner_doc`]).
pub const OWNER_PREFIX: &str = "faxd_owner_";
/// `pvt_type` of an account's queue lease.
pub const OWNER_TYPE: &str = "outbound_owner";

/// Id (in the `faxes` database) of the lease on the outbound queue of `account`: the same
/// protocol as the leader lease, one document per account ([`crate::outbound::owner`]).
pub fn owner_doc(account: &str) -> String {
    format!("{OWNER_PREFIX}{account}")
}

/// The `pvt_type` a lease document `id` is written with.
fn lease_type(id: &str) -> &'static str {
    if id.starts_with(OWNER_PREFIX) {
        OWNER_TYPE
    } else {
        LEADER_TYPE
    }
}

/// The lease document as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseDoc {
    /// Holder (empty: released).
    pub node: String,
    pub rev: String,
    /// When the holder took it, unix ms (its clock).
    pub taken_ms: i64,
    /// Last renewal, unix ms (its clock).
    pub renewed_ms: i64,
    /// Renewed-at plus lease time, unix ms (its clock).
    pub expires_ms: i64,
}

impl LeaseDoc {
    fn from_doc(doc: &Value) -> LeaseDoc {
        let s = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let i = |k: &str| doc.get(k).and_then(Value::as_i64).unwrap_or(0);
        LeaseDoc {
            node: s("node"),
            rev: s("_rev"),
            taken_ms: i("taken_ms"),
            renewed_ms: i("renewed_ms"),
            expires_ms: i("expires_ms"),
        }
    }
}

/// Rank of a lease revision among conflicting ones (the smallest wins): held before
/// released, then the earliest take, then the node name.
fn rank(doc: &Value) -> (bool, i64, String) {
    let d = LeaseDoc::from_doc(doc);
    (d.node.is_empty(), d.taken_ms, d.node)
}

/// The winning revision of lease document `id`; losing revisions are deleted.
async fn read_doc(store: &SharedStore, id: &str) -> Result<Option<Value>, StoreError> {
    conflicts::resolve(store, &Db::Faxes, id, rank).await
}

/// Reads the leader lease document (`None`: no node ever took it): its winning revision,
/// when a CouchDB cluster left conflicting ones.
pub async fn read(store: &SharedStore) -> Result<Option<LeaseDoc>, StoreError> {
    read_at(store, LEADER_DOC).await
}

/// Reads lease document `id` (the leader's or an account's), as [`read`].
pub async fn read_at(store: &SharedStore, id: &str) -> Result<Option<LeaseDoc>, StoreError> {
    Ok(read_doc(store, id).await?.map(|d| LeaseDoc::from_doc(&d)))
}

/// After a save of lease `id` by `me` succeeded: reads it back with its conflicts. `me`
/// holds it only if the winning revision names it (returned, for [`renew_at`]); otherwise its
/// own revision is deleted and the winner reported.
async fn confirm(
    store: &SharedStore,
    id: &str,
    me: &str,
    taken: bool,
) -> Result<(Claim, Option<Value>), StoreError> {
    let doc = read_doc(store, id).await?;
    let node = doc
        .as_ref()
        .map(|d| LeaseDoc::from_doc(d).node)
        .unwrap_or_default();
    if node == me {
        Ok((Claim::Held { taken }, doc))
    } else {
        Ok((Claim::Other { node }, None))
    }
}

/// What a node sees of another holder: the revision and since when (its own clock) it has
/// seen it unchanged.
#[derive(Clone, Debug, Default)]
pub struct Watch {
    seen: Option<(String, Instant)>,
}

impl Watch {
    /// Records `rev` as seen at `now`; returns how long it has been unchanged.
    pub fn observe(&mut self, rev: &str, now: Instant) -> Duration {
        match &self.seen {
            Some((r, since)) if r == rev => now.saturating_duration_since(*since),
            _ => {
                self.seen = Some((rev.to_string(), now));
                Duration::ZERO
            }
        }
    }

    pub fn forget(&mut self) {
        self.seen = None;
    }
}

/// The outcome of one [`claim`] round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This node holds the lease (taken or renewed now).
    Held { taken: bool },
    /// Another node holds it (`node`), not expired as far as this node can tell.
    Other { node: String },
}

/// One round of the lease protocol for node `me`: renew the lease if it is ours, take it if
/// it is free, released, or unchanged for `lease` (as seen by `watch`), else report the
/// holder. Every write is rev-checked and read back with its conflicts: losing a race, or
/// a conflict on a CouchDB cluster, reports the winner.
pub async fn claim(
    store: &SharedStore,
    me: &str,
    lease: Duration,
    watch: &mut Watch,
) -> Result<Claim, StoreError> {
    claim_at(store, LEADER_DOC, me, lease, watch).await
}

/// One round of the lease protocol on lease document `id` (the leader's, or an account's
/// [`owner_doc`]), as [`claim`].
pub async fn claim_at(
    store: &SharedStore,
    id: &str,
    me: &str,
    lease: Duration,
    watch: &mut Watch,
) -> Result<Claim, StoreError> {
    Ok(claim_doc_at(store, id, me, lease, watch).await?.0)
}

/// As [`claim_at`], also returning the lease document as held (for [`renew_at`]) when `me`
/// holds it.
pub async fn claim_doc_at(
    store: &SharedStore,
    id: &str,
    me: &str,
    lease: Duration,
    watch: &mut Watch,
) -> Result<(Claim, Option<Value>), StoreError> {
    let now_ms = crate::time::now_unix_ms();
    let lease_ms = lease.as_millis() as i64;
    let current = read_doc(store, id).await?;
    let (doc, taken) = match current {
        None => {
            let mut doc = json!({"_id": id, "taken_ms": now_ms});
            if let Some(account) = id.strip_prefix(OWNER_PREFIX) {
                doc["account_id"] = json!(account);
            }
            (doc, true)
        }
        Some(doc) => {
            let held = LeaseDoc::from_doc(&doc);
            if held.node == me {
                (doc, false)
            } else if held.node.is_empty() || watch.observe(&held.rev, Instant::now()) >= lease {
                let mut doc = doc;
                doc["taken_ms"] = json!(now_ms);
                (doc, true)
            } else {
                return Ok((Claim::Other { node: held.node }, None));
            }
        }
    };
    let mut doc = doc;
    doc["pvt_type"] = json!(lease_type(id));
    doc["node"] = json!(me);
    doc["renewed_ms"] = json!(now_ms);
    doc["expires_ms"] = json!(now_ms + lease_ms);
    match store.save(&Db::Faxes, doc).await {
        Ok(_) => {
            watch.forget();
            confirm(store, id, me, taken).await
        }
        Err(StoreError::Conflict) => {
            // Someone else wrote first (took it, or renewed just now): they hold it.
            let node = read_at(store, id)
                .await?
                .map(|d| d.node)
                .unwrap_or_default();
            Ok((Claim::Other { node }, None))
        }
        Err(e) => Err(e),
    }
}

/// Renews lease document `id` that `me` holds, from `held` (the revision `me` last wrote, as
/// returned by the store): one rev-checked write, no read. `Ok(Some(doc))`: renewed (the new
/// revision, for the next renewal); `Ok(None)`: the document changed since (run [`claim_at`]
/// to see who holds it now).
///
/// No read-back is needed: on a CouchDB cluster a revision that conflicts with this renewal
/// can only be a take written on top of the same parent, and a take is always later than
/// `me`'s own (`taken_ms`, which a renewal keeps), so `me`'s branch wins by [`rank`] and the
/// taker's own read-back makes it back off and delete its revision.
pub async fn renew_at(
    store: &SharedStore,
    held: &Value,
    me: &str,
    lease: Duration,
) -> Result<Option<Value>, StoreError> {
    if held.get("node").and_then(Value::as_str) != Some(me) {
        return Ok(None);
    }
    let now_ms = crate::time::now_unix_ms();
    let mut doc = held.clone();
    doc["renewed_ms"] = json!(now_ms);
    doc["expires_ms"] = json!(now_ms + lease.as_millis() as i64);
    match store.save(&Db::Faxes, doc).await {
        Ok(saved) => Ok(Some(saved)),
        Err(StoreError::Conflict) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Gives the lease up (node shutdown), so another node takes over at once. Only if `me`
/// still holds it; a lost race is not an error.
pub async fn release(store: &SharedStore, me: &str) -> Result<bool, StoreError> {
    release_at(store, LEADER_DOC, me).await
}

/// Gives lease document `id` up, as [`release`].
pub async fn release_at(store: &SharedStore, id: &str, me: &str) -> Result<bool, StoreError> {
    let Some(mut doc) = read_doc(store, id).await? else {
        return Ok(false);
    };
    if doc.get("node").and_then(Value::as_str) != Some(me) {
        return Ok(false);
    }
    doc["node"] = json!("");
    doc["expires_ms"] = json!(crate::time::now_unix_ms());
    match store.save(&Db::Faxes, doc).await {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict) => Ok(false),
        Err(e) => Err(e),
    }
}

/// One line for `faxd_maintenance status`: who holds the outbound lease.
pub fn describe(doc: Option<&LeaseDoc>, me: &str, now_ms: i64) -> String {
    match doc {
        None => "no node has taken it yet".to_string(),
        Some(d) if d.node.is_empty() => "released, no holder".to_string(),
        Some(d) => {
            let who = if d.node == me {
                format!("{} (this node)", d.node)
            } else {
                d.node.clone()
            };
            let left = d.expires_ms - now_ms;
            let state = if left >= 0 {
                format!("expires in {:.1}s", left as f64 / 1000.0)
            } else {
                format!("expired {:.1}s ago", -left as f64 / 1000.0)
            };
            format!(
                "{who}, renewed {:.1}s ago, {state}",
                (now_ms - d.renewed_ms).max(0) as f64 / 1000.0
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watcher_counts_from_the_first_sight_of_a_revision() {
        let mut w = Watch::default();
        let t0 = Instant::now();
        assert_eq!(w.observe("1-a", t0), Duration::ZERO);
        assert_eq!(
            w.observe("1-a", t0 + Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        // A renewal restarts the count.
        assert_eq!(
            w.observe("2-b", t0 + Duration::from_secs(4)),
            Duration::ZERO
        );
        assert_eq!(
            w.observe("2-b", t0 + Duration::from_secs(5)),
            Duration::from_secs(1)
        );
        w.forget();
        assert_eq!(
            w.observe("2-b", t0 + Duration::from_secs(9)),
            Duration::ZERO
        );
    }

    #[test]
    fn describes_the_holder() {
        let d = LeaseDoc {
            node: "faxd@a".into(),
            rev: "3-x".into(),
            taken_ms: 0,
            renewed_ms: 10_000,
            expires_ms: 25_000,
        };
        assert_eq!(
            describe(Some(&d), "faxd@a", 12_000),
            "faxd@a (this node), renewed 2.0s ago, expires in 13.0s"
        );
        assert_eq!(
            describe(Some(&d), "faxd@b", 26_000),
            "faxd@a, renewed 16.0s ago, expired 1.0s ago"
        );
        assert_eq!(describe(None, "faxd@b", 0), "no node has taken it yet");
    }

    /// Polls `claim` for `me` until it holds the lease.
    async fn take(store: &SharedStore, me: &str, lease: Duration, w: &mut Watch) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Claim::Held { taken } = claim(store, me, lease, w).await.unwrap() {
                return taken;
            }
            assert!(Instant::now() < deadline, "{me} never took the lease");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Two nodes on one real store: one holds, the other takes over only after a lease time
    /// without renewal, the former holder then sees it lost; a release hands over at once;
    /// the lease document stays out of the job views.
    async fn lease_protocol(store: SharedStore) {
        crate::bootstrap::ensure_global_dbs(&store).await.unwrap();
        let run = crate::ids::new_id();
        let (a, b) = (format!("a-{run}"), format!("b-{run}"));
        let lease = Duration::from_millis(300);
        let (mut wa, mut wb) = (Watch::default(), Watch::default());

        assert!(take(&store, &a, lease, &mut wa).await);
        let other_a = Claim::Other { node: a.clone() };
        assert_eq!(claim(&store, &b, lease, &mut wb).await.unwrap(), other_a);
        assert_eq!(
            claim(&store, &a, lease, &mut wa).await.unwrap(),
            Claim::Held { taken: false }
        );
        // a renewed: b starts counting again.
        assert_eq!(claim(&store, &b, lease, &mut wb).await.unwrap(), other_a);

        // a stops renewing: b takes over once it has seen the same revision for `lease`.
        assert!(take(&store, &b, lease, &mut wb).await);
        assert_eq!(
            claim(&store, &a, lease, &mut wa).await.unwrap(),
            Claim::Other { node: b.clone() }
        );
        assert_eq!(read(&store).await.unwrap().unwrap().node, b);

        // b releases (shutdown): a takes it at once; a release by a non-holder does nothing.
        assert!(!release(&store, &a).await.unwrap());
        assert!(release(&store, &b).await.unwrap());
        assert_eq!(read(&store).await.unwrap().unwrap().node, "");
        assert_eq!(
            claim(&store, &a, lease, &mut wa).await.unwrap(),
            Claim::Held { taken: true }
        );
        assert!(release(&store, &a).await.unwrap());

        // Not a job: no queue view or type listing shows it.
        let rows = store.processing_by_node(None).await.unwrap();
        assert!(rows.iter().all(|r| r.id != LEADER_DOC));
        let docs = store.docs_by_type(&Db::Faxes, "fax").await.unwrap();
        assert!(docs.iter().all(|d| d["_id"] != LEADER_DOC));
    }

    #[tokio::test]
    async fn lease_protocol_on_the_embedded_store() {
        let (store, _dir) = crate::store::sqlite::test_store().await;
        lease_protocol(store).await;
    }

    /// The CouchDB tests share the server's lease document: one at a time.
    static COUCH_LEASE: std::sync::LazyLock<tokio::sync::Mutex<()>> =
        std::sync::LazyLock::new(|| tokio::sync::Mutex::new(()));

    #[tokio::test]
    async fn lease_protocol_on_couchdb() {
        let _one = COUCH_LEASE.lock().await;
        let store = crate::store::couch::test_server().await;
        lease_protocol(std::sync::Arc::new(store)).await;
    }

    /// The lease as `node` saves it when taking it from `parent` at `taken_ms`.
    fn taken_by(parent: &Value, node: &str, taken_ms: i64) -> Value {
        let mut doc = parent.clone();
        doc["pvt_type"] = json!(LEADER_TYPE);
        doc["node"] = json!(node);
        doc["taken_ms"] = json!(taken_ms);
        doc["renewed_ms"] = json!(taken_ms);
        doc["expires_ms"] = json!(taken_ms + 30_000);
        doc
    }

    /// When the nodes look after their saves.
    #[derive(Clone, Copy, Debug)]
    enum ReadBack {
        LoserFirst,
        WinnerFirst,
        /// Neither read back; both find the conflict at their next round.
        NextRound,
    }

    /// Two nodes both took the released lease: two saves of the same revision that a CouchDB
    /// cluster accepted as conflicting revisions (written here with `new_edits: false`).
    /// However they read back, exactly one holds it, the other reports that holder and its
    /// revision is gone; the winner is the earlier take, not CouchDB's own winner.
    #[tokio::test]
    async fn conflicting_takes_of_the_lease_leave_one_holder_on_couchdb() {
        let _one = COUCH_LEASE.lock().await;
        let couch = std::sync::Arc::new(crate::store::couch::test_server().await);
        let store: SharedStore = couch.clone();
        crate::bootstrap::ensure_global_dbs(&store).await.unwrap();
        let lease = Duration::from_secs(30);
        for order in [
            ReadBack::LoserFirst,
            ReadBack::WinnerFirst,
            ReadBack::NextRound,
        ] {
            let run = crate::ids::new_id();
            let (a, b) = (format!("a-{run}"), format!("b-{run}"));
            // Released: the revision both nodes save on.
            let short = Duration::from_millis(300);
            take(&store, &a, short, &mut Watch::default()).await;
            assert!(release(&store, &a).await.unwrap());
            let parent = store.get(&Db::Faxes, LEADER_DOC).await.unwrap().unwrap();
            let parent_rev = parent["_rev"].as_str().unwrap();
            let now = crate::time::now_unix_ms();
            // b took it 5 ms before a; CouchDB's own winner is a's (higher revision hash).
            let (rev_a, rev_b) = (
                couch
                    .write_replicated(&Db::Faxes, Some(parent_rev), &"f".repeat(32), {
                        taken_by(&parent, &a, now)
                    })
                    .await
                    .unwrap(),
                couch
                    .write_replicated(&Db::Faxes, Some(parent_rev), &"0".repeat(32), {
                        taken_by(&parent, &b, now - 5)
                    })
                    .await
                    .unwrap(),
            );
            assert_eq!(
                store
                    .get_leaves(&Db::Faxes, LEADER_DOC)
                    .await
                    .unwrap()
                    .len(),
                2
            );
            assert_eq!(
                store.get(&Db::Faxes, LEADER_DOC).await.unwrap().unwrap()["node"],
                a.as_str()
            );

            let (mut wa, mut wb) = (Watch::default(), Watch::default());
            let other_b = Claim::Other { node: b.clone() };
            let held = Claim::Held { taken: true };
            match order {
                ReadBack::LoserFirst => {
                    assert_eq!(
                        confirm(&store, LEADER_DOC, &a, true).await.unwrap().0,
                        other_b,
                        "{order:?}"
                    );
                    assert_eq!(
                        confirm(&store, LEADER_DOC, &b, true).await.unwrap().0,
                        held,
                        "{order:?}"
                    );
                }
                ReadBack::WinnerFirst => {
                    assert_eq!(
                        confirm(&store, LEADER_DOC, &b, true).await.unwrap().0,
                        held,
                        "{order:?}"
                    );
                    assert_eq!(
                        confirm(&store, LEADER_DOC, &a, true).await.unwrap().0,
                        other_b,
                        "{order:?}"
                    );
                }
                ReadBack::NextRound => {
                    assert_eq!(claim(&store, &a, lease, &mut wa).await.unwrap(), other_b);
                }
            }
            // a's revision is gone: one leaf, b's (renewed or as written).
            let leaves = store.get_leaves(&Db::Faxes, LEADER_DOC).await.unwrap();
            assert_eq!(leaves.len(), 1, "{order:?}: {leaves:?}");
            assert_eq!(leaves[0]["node"], b.as_str());
            assert_ne!(leaves[0]["_rev"], rev_a.as_str());
            assert_eq!(leaves[0]["_rev"], rev_b.as_str());
            // Later rounds agree: b renews, a watches b.
            assert_eq!(
                claim(&store, &b, lease, &mut wb).await.unwrap(),
                Claim::Held { taken: false }
            );
            assert_eq!(claim(&store, &a, lease, &mut wa).await.unwrap(), other_b);
            assert_eq!(read(&store).await.unwrap().unwrap().node, b);
            assert!(release(&store, &b).await.unwrap());
        }
    }
}
