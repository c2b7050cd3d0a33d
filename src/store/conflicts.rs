//! Conflicting revisions: on a CouchDB cluster two rev-checked writes of the same revision
//! can both succeed (each on the replicas its coordinator reached first); the document then
//! has several live leaf revisions and a write that "won" is not yet a lock.
//!
//! Every document that arbitrates something (the outbound leader lease, a job's take, the
//! first-start marker) is read through [`resolve`] with a rule of its own that ranks a
//! revision by its *content* — never by CouchDB's winner (highest generation, then highest
//! revision hash), because a holder keeps writing (renewals, heartbeats): under CouchDB's rule
//! the branch written most often would win, and the winner could change while both writers
//! act. A content rank does not change when a branch is renewed, so every node that sees the
//! same leaves picks the same winner, now and later.
//!
//! The reader that resolves deletes every losing leaf: the loser deletes its own revision
//! and backs off, the winner deletes the losers' (a loser that died meanwhile cannot), and a
//! third node that only reads converges the document too. A deletion that fails (the leaf was
//! deleted or extended meanwhile) is left to the next reader. Once the losers are gone the
//! winner is the only leaf, so the next write on it is an ordinary rev-checked update.

use serde_json::Value;
use tracing::{info, warn};

use super::{Db, SharedStore, StoreError};

/// Index of the winning leaf: the smallest `rank`; among equal ranks the earlier leaf (the
/// store lists its own winner first). `None` for no leaves.
pub fn pick<K: Ord>(leaves: &[Value], rank: impl Fn(&Value) -> K) -> Option<usize> {
    leaves
        .iter()
        .enumerate()
        .min_by_key(|(i, doc)| (rank(doc), *i))
        .map(|(i, _)| i)
}

/// Reads document `id` with its conflicting revisions, keeps the leaf that `rank` puts first
/// and deletes the others. Returns the winner (`None`: missing or deleted).
pub async fn resolve<K: Ord>(
    store: &SharedStore,
    db: &Db,
    id: &str,
    rank: impl Fn(&Value) -> K,
) -> Result<Option<Value>, StoreError> {
    let mut leaves = store.get_leaves(db, id).await?;
    let Some(won) = pick(&leaves, rank) else {
        return Ok(None);
    };
    let winner = leaves.swap_remove(won);
    for loser in leaves {
        let Some(rev) = loser.get("_rev").and_then(Value::as_str) else {
            continue;
        };
        match store.delete(db, id, rev).await {
            Ok(_) => info!(db = %db.name(), id, rev, winner = ?winner.get("_rev"),
                           "deleted a conflicting revision that lost"),
            Err(StoreError::Conflict | StoreError::NotFound(_)) => {}
            Err(e) => warn!(db = %db.name(), id, rev, error = %e,
                            "conflicting revision not deleted; the next reader tries again"),
        }
    }
    Ok(Some(winner))
}

/// Generation of a revision `N-hash` (0 if unreadable).
pub fn generation(rev: &str) -> i64 {
    rev.split_once('-')
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_smallest_rank_wins_and_ties_keep_the_stores_winner() {
        let leaves = vec![
            json!({"_rev": "3-f", "k": 2}),
            json!({"_rev": "2-a", "k": 1}),
            json!({"_rev": "2-b", "k": 1}),
        ];
        let k = |d: &Value| d["k"].as_i64();
        assert_eq!(pick(&leaves, k), Some(1));
        assert_eq!(pick(&leaves, |_| 0), Some(0));
        assert_eq!(pick(&[], k), None);
        assert_eq!(generation("12-abc"), 12);
        assert_eq!(generation("x"), 0);
    }
}
