//! Which node of a cluster runs the outbound queue (fax_jobs) of an account: rendezvous
//! (highest-random-weight) hashing of the account over the live members. Every node computes
//! the same owner from the same member list, with no coordination; when a node joins, only
//! the accounts it now ranks first for move (to it), and when a node leaves, only its own
//! accounts move (each to the member that ranked second). The hash is only a proposal: the
//! account's lease document ([`super::leader::owner_doc`]) decides who actually runs the
//! queue, so two nodes whose member lists differ for a moment never both schedule an
//! account — the second waits until the first hands the lease over or lets it run out.
//!
//! The members are the nodes whose heartbeat document ([`node_doc`], one per node in the
//! `faxes` database, rewritten by its lease keeper every renewal period) is live: seen to
//! change within a lease time on the reader's own monotonic clock ([`Liveness`]). So a node
//! that died or hangs (a SIGSTOP, a long GC-like pause, a lost disk) leaves the members after
//! one lease time even while its cluster link stays open, and its accounts go to the members
//! that rank next; when it comes back, they come back to it through a handover. The store,
//! not the cluster link, decides membership, so two nodes that cannot reach each other but
//! share the store still agree on the owners.
//!
//! The weight is a 64-bit FNV-1a of `node \0 account`, finished with a bit mixer so that
//! accounts that differ in a few characters spread evenly; it is fixed by this module (not
//! std's `DefaultHasher`, which may change between Rust releases), so nodes of different
//! builds agree during a rolling upgrade.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::ids::Db;
use crate::store::{SharedStore, StoreError};

/// Id prefix of the nodes' heartbeat documents.
pub const NODE_PREFIX: &str = "faxd_node_";
/// `pvt_type` of a heartbeat document.
pub const NODE_TYPE: &str = "outbound_node";

/// Id (in the `faxes` database) of the heartbeat document of `node`.
pub fn node_doc(node: &str) -> String {
    format!("{NODE_PREFIX}{node}")
}

/// Writes this node's heartbeat (one rev-checked update; `rev` is the revision it last
/// wrote, kept by the caller). A conflict (the document was written meanwhile by a former
/// run of this node) is settled by reading the current revision and writing again.
pub async fn heartbeat(
    store: &SharedStore,
    me: &str,
    rev: &mut Option<String>,
) -> Result<(), StoreError> {
    let id = node_doc(me);
    for _ in 0..2 {
        let mut doc = json!({
            "_id": id, "pvt_type": NODE_TYPE, "node": me,
            "renewed_ms": crate::time::now_unix_ms(),
        });
        if let Some(r) = rev.as_ref() {
            doc["_rev"] = json!(r);
        }
        match store.save(&Db::Faxes, doc).await {
            Ok(saved) => {
                *rev = saved
                    .get("_rev")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                return Ok(());
            }
            Err(StoreError::Conflict) => {
                *rev = store
                    .get(&Db::Faxes, &id)
                    .await?
                    .and_then(|d| d.get("_rev").and_then(Value::as_str).map(str::to_string));
            }
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict)
}

/// Removes this node's heartbeat (a clean stop): the others drop it from the members at
/// their next look instead of a lease time later.
pub async fn leave(store: &SharedStore, me: &str) -> Result<(), StoreError> {
    let id = node_doc(me);
    if let Some(doc) = store.get(&Db::Faxes, &id).await?
        && let Some(rev) = doc.get("_rev").and_then(Value::as_str)
    {
        match store.delete(&Db::Faxes, &id, rev).await {
            Ok(_) | Err(StoreError::Conflict | StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Which heartbeats are live, as one node sees them over time.
#[derive(Debug, Default)]
pub struct Liveness {
    /// Node → (revision last seen, since when it has been seen unchanged).
    seen: HashMap<String, (String, Instant)>,
}

impl Liveness {
    /// The members after reading `docs` (the heartbeat documents) at `now` (`now_ms`: the
    /// wall clock, unix ms): `me`, and every node whose heartbeat revision changed less than
    /// `lease` ago as this reader saw it. A heartbeat seen for the first time counts as live
    /// unless its own `renewed_ms` is already older than `lease` by this reader's clock (a
    /// node that died before this one started need not wait out a lease; a live node whose
    /// clock is far behind becomes a member at its next renewal). Sorted.
    pub fn members(
        &mut self,
        me: &str,
        docs: &[Value],
        lease: Duration,
        now: Instant,
        now_ms: i64,
    ) -> Vec<String> {
        let mut members = vec![me.to_string()];
        let mut present = std::collections::HashSet::new();
        for doc in docs {
            let (Some(node), Some(rev)) = (
                doc.get("node").and_then(Value::as_str),
                doc.get("_rev").and_then(Value::as_str),
            ) else {
                continue;
            };
            present.insert(node.to_string());
            if node == me {
                continue;
            }
            let since = match self.seen.get(node) {
                Some((r, since)) if r == rev => *since,
                Some(_) => now,
                None => {
                    let renewed = doc.get("renewed_ms").and_then(Value::as_i64).unwrap_or(0);
                    let age = u64::try_from(now_ms.saturating_sub(renewed)).unwrap_or(0);
                    if Duration::from_millis(age) > lease {
                        now.checked_sub(lease).unwrap_or(now)
                    } else {
                        now
                    }
                }
            };
            self.seen.insert(node.to_string(), (rev.to_string(), since));
            if now.saturating_duration_since(since) < lease {
                members.push(node.to_string());
            }
        }
        self.seen.retain(|n, _| present.contains(n));
        members.sort();
        members.dedup();
        members
    }
}

/// Reads every node's heartbeat document.
pub async fn heartbeats(store: &SharedStore) -> Result<Vec<Value>, StoreError> {
    store.docs_with_prefix(&Db::Faxes, NODE_PREFIX).await
}

/// The weight of `node` for `account`.
pub fn weight(node: &str, account: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain([0u8]).chain(account.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Finaliser (splitmix64's): every input bit reaches every output bit.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The member that should run `account`'s queue: the highest weight (ties, which a 64-bit
/// hash makes vanishingly rare, go to the smaller name). `None` for no members.
pub fn owner_of<'a, S: AsRef<str>>(account: &str, members: &'a [S]) -> Option<&'a str> {
    members.iter().map(AsRef::as_ref).max_by(|a, b| {
        weight(a, account)
            .cmp(&weight(b, account))
            .then_with(|| b.cmp(a))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{:032x}", i * 7919 + 1)).collect()
    }

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_heartbeat_that_stops_changing_leaves_the_members_after_a_lease_time() {
        let lease = Duration::from_secs(3);
        let t0 = Instant::now();
        let ms0 = 1_800_000_000_000i64;
        let doc = |node: &str, rev: &str, renewed: i64| json!({"node": node, "_rev": rev, "renewed_ms": renewed});
        let mut l = Liveness::default();
        let docs = [
            doc("a", "1-x", ms0),
            doc("b", "1-y", ms0),
            doc("c", "5-z", ms0),
        ];
        assert_eq!(l.members("a", &docs, lease, t0, ms0), ["a", "b", "c"]);
        // b renews, c does not.
        let docs = [
            doc("a", "2-x", ms0),
            doc("b", "2-y", ms0 + 2000),
            doc("c", "5-z", ms0),
        ];
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(
            l.members("a", &docs, lease, t1, ms0 + 2000),
            ["a", "b", "c"]
        );
        let t2 = t0 + Duration::from_secs(3);
        assert_eq!(l.members("a", &docs, lease, t2, ms0 + 3000), ["a", "b"]);
        // c comes back (a new revision): a member again at once.
        let docs = [doc("b", "2-y", ms0 + 2000), doc("c", "6-z", ms0 + 3000)];
        assert_eq!(
            l.members("a", &docs, lease, t2, ms0 + 3000),
            ["a", "b", "c"]
        );
        // b left cleanly (its document is gone).
        let docs = [doc("c", "7-z", ms0 + 3000)];
        assert_eq!(l.members("a", &docs, lease, t2, ms0 + 3000), ["a", "c"]);
    }

    #[test]
    fn a_heartbeat_already_old_at_first_sight_is_not_a_member() {
        let lease = Duration::from_secs(3);
        let t0 = Instant::now() + Duration::from_secs(60);
        let now_ms = 1_800_000_000_000i64;
        let old = json!({"node": "dead", "_rev": "9-d", "renewed_ms": now_ms - 60_000});
        let fresh = json!({"node": "b", "_rev": "1-b", "renewed_ms": now_ms - 1_000});
        let mut l = Liveness::default();
        let docs = [old.clone(), fresh];
        assert_eq!(l.members("a", &docs, lease, t0, now_ms), ["a", "b"]);
        // Once it writes again (a node whose clock was behind), it is a member.
        let renewed = json!({"node": "dead", "_rev": "10-d", "renewed_ms": now_ms - 60_000});
        assert_eq!(l.members("a", &[renewed], lease, t0, now_ms), ["a", "dead"]);
    }

    #[tokio::test]
    async fn heartbeats_are_written_read_and_removed_on_the_embedded_store() {
        let (store, _dir) = crate::store::sqlite::test_store().await;
        let (mut ra, mut rb) = (None, None);
        heartbeat(&store, "faxd@a", &mut ra).await.unwrap();
        heartbeat(&store, "faxd@b", &mut rb).await.unwrap();
        let first = ra.clone();
        heartbeat(&store, "faxd@a", &mut ra).await.unwrap();
        assert_ne!(ra, first, "a heartbeat is a new revision");
        // A restarted node does not know its last revision: it still writes.
        let mut fresh = None;
        heartbeat(&store, "faxd@a", &mut fresh).await.unwrap();
        let docs = heartbeats(&store).await.unwrap();
        let nodes: Vec<&str> = docs.iter().filter_map(|d| d["node"].as_str()).collect();
        assert_eq!(nodes, ["faxd@a", "faxd@b"]);
        // Not a job: no queue view or listing sees it.
        assert!(store.processing_by_node(None).await.unwrap().is_empty());
        assert!(
            store
                .docs_by_type(&Db::Faxes, "fax")
                .await
                .unwrap()
                .is_empty()
        );
        leave(&store, "faxd@b").await.unwrap();
        let docs = heartbeats(&store).await.unwrap();
        assert_eq!(docs.len(), 1);
    }

    #[test]
    fn every_node_agrees_whatever_the_order_of_its_member_list() {
        let a = nodes(&["faxd@a", "faxd@b", "faxd@c"]);
        let b = nodes(&["faxd@c", "faxd@a", "faxd@b"]);
        for acc in accounts(200) {
            assert_eq!(owner_of(&acc, &a), owner_of(&acc, &b));
        }
        assert_eq!(owner_of::<String>("x", &[]), None);
        assert_eq!(owner_of("x", &nodes(&["faxd@only"])), Some("faxd@only"));
    }

    #[test]
    fn accounts_spread_over_the_members() {
        let members = nodes(&["faxd@a", "faxd@b", "faxd@c"]);
        let all = accounts(3000);
        for m in &members {
            let mine = all
                .iter()
                .filter(|acc| owner_of(acc, &members) == Some(m.as_str()))
                .count();
            // 1000 expected each; a fair hash stays well within ±10 %.
            assert!((900..=1100).contains(&mine), "{m} owns {mine} of 3000");
        }
        // Fifty accounts (the cluster test's size) land on all three nodes.
        let fifty = accounts(50);
        for m in &members {
            assert!(
                fifty
                    .iter()
                    .any(|a| owner_of(a, &members) == Some(m.as_str()))
            );
        }
    }

    #[test]
    fn a_join_moves_only_accounts_to_the_new_node_and_a_leave_only_the_leavers() {
        let two = nodes(&["faxd@a", "faxd@b"]);
        let three = nodes(&["faxd@a", "faxd@b", "faxd@c"]);
        let all = accounts(3000);
        let mut moved = 0;
        for acc in &all {
            let before = owner_of(acc, &two).unwrap();
            let after = owner_of(acc, &three).unwrap();
            if before != after {
                assert_eq!(after, "faxd@c", "{acc} moved between old members");
                moved += 1;
            }
        }
        // About a third moves to the new node, no more.
        assert!((900..=1100).contains(&moved), "{moved} of 3000 moved");
        // The reverse (c leaves): only c's accounts move.
        for acc in &all {
            let before = owner_of(acc, &three).unwrap();
            let after = owner_of(acc, &two).unwrap();
            if before != "faxd@c" {
                assert_eq!(before, after);
            }
        }
    }
}
