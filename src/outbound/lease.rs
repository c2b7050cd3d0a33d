//! Storing a release, and recovering jobs whose owner is gone: a `processing` job carries a
//! lease (`pvt_job_node`, `pvt_lease` = the worker incarnation, `pvt_heartbeat` in unix ms).
//! When the worker dies, or its node, the job is released as a failed attempt ("process
//! terminated"): back to `pending` while attempts remain, else `failed` and moved to the
//! MODB — never left `processing`. A `locked` job whose queue is gone goes back to
//! `pending` without counting an attempt.
//!
//! A take is one rev-checked save `pending → processing` ([`take`]). On a CouchDB cluster
//! two takes of the same revision can both succeed as conflicting revisions, so the taker
//! reads the job back with its conflicts ([`settle_take`]) before it does anything, and every
//! later read of a worker, of the lease keeper's recovery, goes through [`read_job`]. The
//! winner among conflicting revisions is, by content: a take (`processing` with a lease)
//! before anything else, then the take of the lowest revision generation (`pvt_lease_gen`,
//! the generation the take was written at, which heartbeats keep), then the smaller lease
//! token. So a later take, written on a stale branch, never beats a take that already won,
//! and heartbeats never change the winner. The losing taker deletes its revision and backs
//! off before dialling; the winner deletes the losing revisions it sees. A worker confirms
//! its lease by the same read right before dialling and at every heartbeat, so a conflict
//! that a read-back did not yet see is found before the call (or stops a losing call).

use serde_json::{Value, json};

use super::job::{Job, LEASE_GEN};
use super::modb;
use super::release::{self, Decision, Outcome, Rule};
use crate::ids::Db;
use crate::model::JobStatus;
use crate::store::{SharedStore, StoreError, conflicts};

/// The take of job `doc` (its current revision) by worker `lease` on `node` at `now_ms`:
/// the job goes straight from `pending` to `processing` in one rev-checked write.
pub fn take(doc: &Value, node: &str, lease: &str, now_ms: i64) -> Value {
    let mut taken = doc.clone();
    let rev = doc.get("_rev").and_then(Value::as_str).unwrap_or("");
    taken["pvt_job_status"] = json!("processing");
    taken["pvt_job_node"] = json!(node);
    taken["pvt_lease"] = json!(lease);
    taken["pvt_heartbeat"] = json!(now_ms);
    taken[LEASE_GEN] = json!(conflicts::generation(rev) + 1);
    taken
}

/// Rank of a job revision among conflicting ones (the smallest wins): a take first, the
/// earliest (lowest generation) take, then the smaller lease token.
fn rank(doc: &Value) -> (bool, i64, String) {
    let lease = doc.get("pvt_lease").and_then(Value::as_str);
    match (doc.get("pvt_job_status").and_then(Value::as_str), lease) {
        (Some("processing"), Some(lease)) => (
            false,
            doc.get(LEASE_GEN).and_then(Value::as_i64).unwrap_or(0),
            lease.to_string(),
        ),
        _ => (true, 0, String::new()),
    }
}

/// Reads a queued job: its winning revision when conflicting ones exist (a CouchDB
/// cluster), the losing ones deleted. `None` if it is gone.
pub async fn read_job(store: &SharedStore, id: &str) -> Result<Option<Value>, StoreError> {
    conflicts::resolve(store, &Db::Faxes, id, rank).await
}

/// After the take of job `id` by worker `lease` was saved: reads it back with its
/// conflicts. `Some(job)` (the winning revision) if the take won; `None` if another take
/// won (this take's revision is deleted: the worker backs off).
pub async fn settle_take(
    store: &SharedStore,
    id: &str,
    lease: &str,
) -> Result<Option<Value>, StoreError> {
    Ok(read_job(store, id).await?.filter(|doc| {
        doc.get("pvt_job_status").and_then(Value::as_str) == Some("processing")
            && doc.get("pvt_lease").and_then(Value::as_str) == Some(lease)
    }))
}

/// Release rules in force.
#[derive(Clone, Debug, Default)]
pub struct ReleasePolicy {
    pub rules: Vec<Rule>,
    pub default_retry_period: u64,
    /// Woken when a release ends a job (its final write carries the notification), whoever
    /// released it: the worker, or the monitor recovering a dead worker's attempt.
    pub notify: crate::notify::Doorbell,
}

impl ReleasePolicy {
    pub fn from_config(fax: &crate::config::FaxConfig) -> Self {
        Self {
            rules: release::parse_rules(&fax.reschedule, &fax.default_compare_field),
            default_retry_period: fax.default_retry_period,
            notify: Default::default(),
        }
    }
}

/// Releases an attempt of the job `doc` (current revision): a retry is saved in the faxes
/// database, a final state is written straight to the MODB and the queued copy deleted.
pub async fn release(
    store: &SharedStore,
    mut doc: Value,
    outcome: &Outcome,
    started_ms: i64,
    finished_ms: i64,
    policy: &ReleasePolicy,
) -> Result<Decision, StoreError> {
    let job = Job::from_doc(&doc).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let result = release::tx_result(outcome, started_ms, finished_ms, job.created, &job.options);
    // An attempt cut short on our side (worker or node died) is retried at once unless a
    // rule says otherwise; the far end did nothing to deserve the back-off.
    let period = match outcome {
        Outcome::Failure { cause, .. } if cause == release::TERMINATED => 0,
        _ => policy.default_retry_period,
    };
    let (pages, cause) = match outcome {
        Outcome::Call(r) => (r.transferred_pages, r.hangup_cause.as_str()),
        Outcome::Failure { cause, .. } => (0, cause.as_str()),
    };
    crate::metrics::fax_finished("outbound", outcome.success(), cause, pages);
    let d = release::decide(&job, &result, outcome.success(), &policy.rules, period);
    release::apply(&mut doc, &d, result, crate::time::now_gregorian());
    if d.status.is_final() {
        let (modb, _) = modb::target(&doc)?;
        modb::move_to_modb(store, doc).await?;
        policy.notify.ring(&modb);
    } else {
        store.save(&Db::Faxes, doc).await?;
    }
    Ok(d)
}

/// Recovers a `processing` job whose worker or node is gone (read fresh, rev-checked: a job
/// that changed meanwhile is left alone). Returns the new status, `None` if nothing was done.
pub async fn recover_processing(
    store: &SharedStore,
    id: &str,
    expect_lease: Option<&str>,
    why: &str,
    policy: &ReleasePolicy,
) -> Result<Option<JobStatus>, StoreError> {
    let Some(doc) = read_job(store, id).await? else {
        return Ok(None);
    };
    let Ok(job) = Job::from_doc(&doc) else {
        return Ok(None);
    };
    if job.status != JobStatus::Processing
        || expect_lease.is_some_and(|l| job.lease.as_deref() != Some(l))
    {
        return Ok(None);
    }
    // A move that reached the MODB before the node died: finish it.
    if let Some(moved) = modb::moved_copy(store, &doc).await?
        && let Some(st) = moved
            .get("pvt_job_status")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<JobStatus>().ok())
            .filter(|s| s.is_final())
    {
        modb::delete_source(store, id, &job.rev).await?;
        return Ok(Some(st));
    }
    let now = crate::time::now_unix_ms();
    let started = job.heartbeat_ms.unwrap_or(now);
    match release(store, doc, &Outcome::terminated(why), started, now, policy).await {
        Ok(d) => Ok(Some(d.status)),
        Err(StoreError::Conflict) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Puts a `locked` job back to `pending` (no attempt counted), rev-checked.
pub async fn unlock(store: &SharedStore, id: &str) -> Result<bool, StoreError> {
    let Some(mut doc) = store.get(&Db::Faxes, id).await? else {
        return Ok(false);
    };
    if doc.get("pvt_job_status").and_then(Value::as_str) != Some("locked") {
        return Ok(false);
    }
    doc["pvt_job_status"] = json!("pending");
    if let Some(o) = doc.as_object_mut() {
        o.remove("pvt_job_node");
    }
    match store.save(&Db::Faxes, doc).await {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether a processing job's lease has run out: no heartbeat within `lease_ms`.
pub fn lease_expired(job: &Job, now_ms: i64, lease_ms: i64) -> bool {
    job.heartbeat_ms.is_none_or(|h| now_ms - h > lease_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AccountId, new_id};

    /// A queued job with the fields a take looks at.
    fn pending_job() -> Value {
        json!({"_id": new_id(), "pvt_type": "fax", "pvt_job_status": "pending",
               "pvt_account_id": AccountId::generate().as_str(), "to_number": "+15550001111"})
    }

    #[test]
    fn a_take_beats_other_revisions_then_the_earliest_take_then_the_smaller_lease() {
        let parent = json!({"_id": "j", "_rev": "4-p", "pvt_job_status": "pending"});
        let take_b = take(&parent, "n2", "b", 1);
        assert_eq!(take_b[LEASE_GEN], 5);
        assert_eq!(take_b["pvt_job_status"], "processing");
        let leaves = vec![
            json!({"_rev": "6-x", "pvt_job_status": "pending"}),
            take_b,
            take(&parent, "n1", "a", 2),
            // Written on a branch two revisions later: later than the others.
            take(&json!({"_rev": "6-q"}), "n0", "0", 3),
        ];
        assert_eq!(conflicts::pick(&leaves, rank), Some(2));
        assert_eq!(conflicts::pick(&leaves[..1], rank), Some(0));
        assert_eq!(
            conflicts::pick(&[leaves[0].clone(), leaves[3].clone()], rank),
            Some(1)
        );
    }

    #[tokio::test]
    async fn a_take_on_the_embedded_store_is_its_own_winner() {
        let (store, _dir) = crate::store::sqlite::test_store().await;
        let job = store.save(&Db::Faxes, pending_job()).await.unwrap();
        let id = job["_id"].as_str().unwrap();
        let saved = store
            .save(&Db::Faxes, take(&job, "n1", "l1", 1))
            .await
            .unwrap();
        assert_eq!(settle_take(&store, id, "l1").await.unwrap(), Some(saved));
        assert_eq!(settle_take(&store, id, "l2").await.unwrap(), None);
    }

    /// Two nodes both took the same pending job: two takes of one revision that a CouchDB
    /// cluster accepted as conflicting revisions (written here with `new_edits: false`).
    /// However they read back, exactly one take wins (the smaller lease, although CouchDB's
    /// own winner is the other), the loser backs off and its revision is gone. Later, a take
    /// written on a stale branch never beats the take that won, even after heartbeats.
    #[tokio::test]
    async fn conflicting_takes_of_a_job_leave_one_runner_on_couchdb() {
        let couch = std::sync::Arc::new(crate::store::couch::test_server().await);
        let store: SharedStore = couch.clone();
        crate::bootstrap::ensure_global_dbs(&store).await.unwrap();
        let db = Db::Faxes;
        for winner_reads_first in [false, true] {
            let job = store.save(&db, pending_job()).await.unwrap();
            let id = job["_id"].as_str().unwrap();
            let parent = job["_rev"].as_str().unwrap();
            let now = crate::time::now_unix_ms();
            let (high, low) = ("f".repeat(32), "0".repeat(32));
            let rev_a = couch
                .write_replicated(&db, Some(parent), &low, take(&job, "n-a", "lease-a", now))
                .await
                .unwrap();
            let rev_b = couch
                .write_replicated(&db, Some(parent), &high, take(&job, "n-b", "lease-b", now))
                .await
                .unwrap();
            assert_eq!(store.get_leaves(&db, id).await.unwrap().len(), 2);
            assert_eq!(
                store.get(&db, id).await.unwrap().unwrap()["pvt_lease"],
                "lease-b"
            );

            let (a, b) = if winner_reads_first {
                let a = settle_take(&store, id, "lease-a").await.unwrap();
                (a, settle_take(&store, id, "lease-b").await.unwrap())
            } else {
                let b = settle_take(&store, id, "lease-b").await.unwrap();
                (settle_take(&store, id, "lease-a").await.unwrap(), b)
            };
            assert_eq!(b, None, "the losing take backs off");
            let won = a.expect("the winning take runs");
            assert_eq!(won["_rev"], rev_a.as_str());
            let leaves = store.get_leaves(&db, id).await.unwrap();
            assert_eq!(leaves.len(), 1, "{leaves:?}");
            assert_eq!(leaves[0]["pvt_lease"], "lease-a");

            // The winner heartbeats; a take written on the loser's stale branch (one
            // generation later, smaller lease, CouchDB's own winner) still loses.
            let mut beat = won.clone();
            beat["pvt_heartbeat"] = json!(now + 1);
            store.save(&db, beat).await.unwrap();
            let stale = take(&json!({"_rev": rev_b}), "n-c", "lease-0", now + 2);
            let mut stale_doc = job.clone();
            for k in [
                "pvt_job_status",
                "pvt_job_node",
                "pvt_lease",
                "pvt_heartbeat",
                LEASE_GEN,
            ] {
                stale_doc[k] = stale[k].clone();
            }
            couch
                .write_replicated(&db, Some(&rev_b), &high, stale_doc)
                .await
                .unwrap();
            assert_eq!(
                store.get(&db, id).await.unwrap().unwrap()["pvt_lease"],
                "lease-0"
            );
            assert_eq!(settle_take(&store, id, "lease-0").await.unwrap(), None);
            let current = read_job(&store, id).await.unwrap().unwrap();
            assert_eq!(current["pvt_lease"], "lease-a");
            assert_eq!(current["pvt_heartbeat"], now + 1);
            assert_eq!(store.get_leaves(&db, id).await.unwrap().len(), 1);
            store
                .delete(&db, id, current["_rev"].as_str().unwrap())
                .await
                .unwrap();
        }
    }
}
