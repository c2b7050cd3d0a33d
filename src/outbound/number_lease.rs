//! The lease on a destination number: with `serialize_outbound_numbers`, at most one
//! transmission to a number may run at a time across the cluster, not only inside one node
//! (where the worker's registered name `fax_outbound_<number>` already guarantees it).
//!
//! One document per number in the `faxes` database, id [`doc_id`] (`faxd_number_<number>`,
//! the number as given), `pvt_type` [`NUMBER_TYPE`] so no job view or listing sees it. It
//! names the holder: the node, the job and the job's lease token (the worker incarnation
//! that takes, or took, the job), and when it was taken (`taken_ms`, unix ms, the taker's
//! clock). A worker takes the number ([`take`]) before it takes the job, and releases it
//! ([`release`]) when the attempt is over.
//!
//! A number document stays in force while the job it names is `processing` under the same
//! lease token with a live heartbeat, or for a `grace` time after it was taken (the window
//! between the take of the number and the take of the job). Afterwards it is stale — its
//! worker or node died, or the job was never taken — and the next taker overwrites it. So a
//! number is never held for longer than its job's lease, and no cleanup pass is needed.
//!
//! Every write is rev-checked. On a CouchDB cluster two rev-checked writes of one revision
//! can both succeed as conflicting revisions, so a successful save is read back with its
//! conflicts ([`crate::store::conflicts`]): the winner by content is the earliest take
//! (`taken_ms`), then the smaller job id. The loser deletes its own revision and is told
//! [`NumberTake::Busy`]; every node that sees the same revisions picks the same winner.

use std::time::Duration;

use serde_json::{Value, json};

use super::Job;
use super::lease::{lease_expired, read_job};
use crate::ids::Db;
use crate::model::JobStatus;
use crate::store::{SharedStore, StoreError, conflicts};

/// `pvt_type` of a number lease document.
pub const NUMBER_TYPE: &str = "outbound_number";

/// Id prefix of the number lease documents.
pub const DOC_PREFIX: &str = "faxd_number_";

/// How many times a take reads again after losing a rev-checked write before it reports
/// the number busy.
const ROUNDS: usize = 3;

/// Id of the lease document of `number` (the number as given, e.g. `+15551230000`).
pub fn doc_id(number: &str) -> String {
    format!("{DOC_PREFIX}{number}")
}

/// The outcome of [`take`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NumberTake {
    /// The caller holds the number (taken now, or already its own).
    Taken,
    /// Another job holds it: `job_id` on `node`.
    Busy { node: String, job_id: String },
}

/// A number lease document as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumberLease {
    pub number: String,
    /// The node whose worker took it.
    pub node: String,
    pub job_id: String,
    /// The job lease token of the worker that took it.
    pub lease: String,
    /// When it was taken, unix ms (the taker's clock).
    pub taken_ms: i64,
    pub rev: String,
}

impl NumberLease {
    pub fn from_doc(doc: &Value) -> NumberLease {
        let s = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        NumberLease {
            number: s("number"),
            node: s("node"),
            job_id: s("job_id"),
            lease: s("lease"),
            taken_ms: doc.get("taken_ms").and_then(Value::as_i64).unwrap_or(0),
            rev: s("_rev"),
        }
    }

    fn names(&self, job_id: &str, lease: &str) -> bool {
        self.job_id == job_id && self.lease == lease
    }

    fn busy(self) -> NumberTake {
        NumberTake::Busy {
            node: self.node,
            job_id: self.job_id,
        }
    }
}

/// Rank of a number lease revision among conflicting ones (the smallest wins): the
/// earliest take, then the smaller job id.
fn rank(doc: &Value) -> (i64, String) {
    let d = NumberLease::from_doc(doc);
    (d.taken_ms, d.job_id)
}

/// The winning revision of `number`'s document; losing revisions are deleted.
async fn read_doc(store: &SharedStore, number: &str) -> Result<Option<Value>, StoreError> {
    conflicts::resolve(store, &Db::Faxes, &doc_id(number), rank).await
}

/// Reads the lease of `number` (`None`: nobody holds it): its winning revision, when a
/// CouchDB cluster left conflicting ones. Stale or not: see [`take`].
pub async fn read(store: &SharedStore, number: &str) -> Result<Option<NumberLease>, StoreError> {
    Ok(read_doc(store, number)
        .await?
        .map(|d| NumberLease::from_doc(&d)))
}

/// Whether `held` still holds its number at `now_ms`: taken less than `grace` ago, or its
/// job is `processing` under the same lease token with a heartbeat within `job_lease`.
async fn in_force(
    store: &SharedStore,
    held: &NumberLease,
    now_ms: i64,
    grace: Duration,
    job_lease: Duration,
) -> Result<bool, StoreError> {
    if now_ms - held.taken_ms < grace.as_millis() as i64 {
        return Ok(true);
    }
    if held.job_id.is_empty() {
        return Ok(false);
    }
    let Some(doc) = read_job(store, &held.job_id).await? else {
        return Ok(false);
    };
    Ok(Job::from_doc(&doc).is_ok_and(|job| {
        job.status == JobStatus::Processing
            && job.lease.as_deref() == Some(held.lease.as_str())
            && !lease_expired(&job, now_ms, job_lease.as_millis() as i64)
    }))
}

/// Takes destination `number` for job `job_id`, run by the worker with lease token
/// `lease_token` on `node`: creates its lease document, or overwrites a stale one (see the
/// module doc; `grace` is how long a take stands without its job being taken, `job_lease`
/// the job lease time). A number already held by this job and token is [`NumberTake::Taken`]
/// again. Rev-checked and read back with its conflicts: a lost race is
/// [`NumberTake::Busy`], naming the winner.
pub async fn take(
    store: &SharedStore,
    number: &str,
    node: &str,
    job_id: &str,
    lease_token: &str,
    grace: Duration,
    job_lease: Duration,
) -> Result<NumberTake, StoreError> {
    if number.is_empty() {
        return Err(StoreError::Invalid("no destination number to lease".into()));
    }
    let mut last = None;
    for _ in 0..ROUNDS {
        let now_ms = crate::time::now_unix_ms();
        let mut doc = match read_doc(store, number).await? {
            None => json!({"_id": doc_id(number)}),
            Some(doc) => {
                let held = NumberLease::from_doc(&doc);
                if held.names(job_id, lease_token) {
                    return Ok(NumberTake::Taken);
                }
                if in_force(store, &held, now_ms, grace, job_lease).await? {
                    return Ok(held.busy());
                }
                tracing::info!(number, stale_job = %held.job_id, stale_node = %held.node,
                               job_id, "taking over a stale number lease");
                last = Some(held);
                doc
            }
        };
        doc["pvt_type"] = json!(NUMBER_TYPE);
        doc["number"] = json!(number);
        doc["node"] = json!(node);
        doc["job_id"] = json!(job_id);
        doc["lease"] = json!(lease_token);
        doc["taken_ms"] = json!(now_ms);
        match store.save(&Db::Faxes, doc).await {
            Ok(_) => return confirm(store, number, job_id, lease_token).await,
            // Someone wrote first (took it, or released it): look again.
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    // Still contended after every round: whoever is there now holds it.
    Ok(match read(store, number).await? {
        Some(held) if held.names(job_id, lease_token) => NumberTake::Taken,
        Some(held) => held.busy(),
        None => last.map_or(
            NumberTake::Busy {
                node: String::new(),
                job_id: String::new(),
            },
            NumberLease::busy,
        ),
    })
}

/// Whether job `job_id` under `lease_token` holds `number`: reads its lease with its
/// conflicts, as [`take`] does after its save. [`NumberTake::Taken`] only if the winning
/// revision names this job and token; otherwise this take's revision (if any) is deleted and
/// the winner reported (`Busy` with empty names: nobody holds it). On a CouchDB cluster a
/// conflicting take may reach a node only after the read-back of [`take`]; a worker calls
/// this again right before it dials, so it does not call a number another take won.
pub async fn confirm(
    store: &SharedStore,
    number: &str,
    job_id: &str,
    lease_token: &str,
) -> Result<NumberTake, StoreError> {
    match read(store, number).await? {
        Some(held) if held.names(job_id, lease_token) => Ok(NumberTake::Taken),
        Some(held) => Ok(held.busy()),
        // Released by someone else between the save and the read (cannot be ours).
        None => Ok(NumberTake::Busy {
            node: String::new(),
            job_id: String::new(),
        }),
    }
}

/// Releases `number` held by job `job_id` under `lease_token`: deletes its lease document
/// if it still names them. `Ok(false)` if it names another job (or another attempt of this
/// one), is gone, or changed meanwhile.
pub async fn release(
    store: &SharedStore,
    number: &str,
    job_id: &str,
    lease_token: &str,
) -> Result<bool, StoreError> {
    let Some(held) = read(store, number).await? else {
        return Ok(false);
    };
    if !held.names(job_id, lease_token) {
        return Ok(false);
    }
    match store.delete(&Db::Faxes, &doc_id(number), &held.rev).await {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict | StoreError::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AccountId, new_id};
    use crate::outbound::lease;

    const LONG: Duration = Duration::from_secs(60);

    /// A destination number no other test uses.
    fn fresh_number() -> String {
        let n = u64::from_str_radix(&new_id()[..12], 16).unwrap() % 10_000_000_000;
        format!("+1{n:010}")
    }

    /// A pending job to `number`, saved.
    async fn pending_job(store: &SharedStore, number: &str) -> Value {
        let doc = json!({"_id": new_id(), "pvt_type": "fax", "pvt_job_status": "pending",
                         "pvt_account_id": AccountId::generate().as_str(),
                         "to_number": number});
        store.save(&Db::Faxes, doc).await.unwrap()
    }

    /// Job `job` taken by worker `token` on `node` with a heartbeat at `beat_ms`.
    async fn taken_job(store: &SharedStore, job: &Value, node: &str, token: &str, beat_ms: i64) {
        store
            .save(&Db::Faxes, lease::take(job, node, token, beat_ms))
            .await
            .unwrap();
    }

    fn id(doc: &Value) -> &str {
        doc["_id"].as_str().unwrap()
    }

    fn busy(node: &str, job_id: &str) -> NumberTake {
        NumberTake::Busy {
            node: node.into(),
            job_id: job_id.into(),
        }
    }

    /// One node takes a number, another is told who holds it, a re-take by the holder is
    /// idempotent, a release by anyone but the holder does nothing, the holder's release
    /// frees it. A lease whose job is not running and whose grace is over is taken over; one
    /// whose job runs under its token with a live heartbeat is not, until the heartbeat
    /// stops. The lease documents stay out of the job views.
    async fn number_lease_protocol(store: SharedStore) {
        crate::bootstrap::ensure_global_dbs(&store).await.unwrap();
        let number = fresh_number();
        let a = pending_job(&store, &number).await;
        let b = pending_job(&store, &number).await;
        let (ja, jb) = (id(&a), id(&b));

        // Take, busy, idempotent re-take (within the grace: a's job is not taken yet).
        let t = |node: &'static str, job: &str, token: &'static str| {
            let (store, number, job) = (store.clone(), number.clone(), job.to_string());
            async move {
                take(&store, &number, node, &job, token, LONG, LONG)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(t("n-a", ja, "tok-a").await, NumberTake::Taken);
        assert_eq!(t("n-b", jb, "tok-b").await, busy("n-a", ja));
        assert_eq!(t("n-a", ja, "tok-a").await, NumberTake::Taken);
        // Another attempt of the same job (another worker token) is not the holder.
        assert_eq!(t("n-a", ja, "tok-a2").await, busy("n-a", ja));
        let held = read(&store, &number).await.unwrap().unwrap();
        assert_eq!(
            (
                held.number.as_str(),
                held.node.as_str(),
                held.job_id.as_str()
            ),
            (number.as_str(), "n-a", ja)
        );
        assert_eq!(held.lease, "tok-a");
        let doc = store
            .get(&Db::Faxes, &doc_id(&number))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(doc["pvt_type"], NUMBER_TYPE);

        // Not a job: no queue view or type listing shows it.
        let rows = store.processing_by_node(None).await.unwrap();
        assert!(rows.iter().all(|r| r.id != doc_id(&number)));
        let docs = store.docs_by_type(&Db::Faxes, "fax").await.unwrap();
        assert!(docs.iter().all(|d| d["_id"] != doc_id(&number).as_str()));
        assert_eq!(
            store
                .docs_by_type(&Db::Faxes, NUMBER_TYPE)
                .await
                .unwrap()
                .iter()
                .filter(|d| d["_id"] == doc_id(&number).as_str())
                .count(),
            1
        );

        // Release by a non-holder (other job, other token of the holding job): nothing.
        assert!(!release(&store, &number, jb, "tok-b").await.unwrap());
        assert!(!release(&store, &number, ja, "tok-b").await.unwrap());
        assert_eq!(read(&store, &number).await.unwrap().unwrap().job_id, ja);
        // The holder's release frees it; a second release finds nothing.
        assert!(release(&store, &number, ja, "tok-a").await.unwrap());
        assert_eq!(read(&store, &number).await.unwrap(), None);
        assert!(!release(&store, &number, ja, "tok-a").await.unwrap());

        // Free again (the document was deleted): b takes it.
        assert_eq!(t("n-b", jb, "tok-b").await, NumberTake::Taken);

        // Stale: b's job was never taken and the grace is over (zero): a takes over.
        let stale = |node: &'static str, job: &str, token: &'static str| {
            let (store, number, job) = (store.clone(), number.clone(), job.to_string());
            async move {
                take(&store, &number, node, &job, token, Duration::ZERO, LONG)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(stale("n-a", ja, "tok-a").await, NumberTake::Taken);
        assert_eq!(read(&store, &number).await.unwrap().unwrap().job_id, ja);

        // a's job runs under tok-a with a live heartbeat: in force even without a grace.
        let now = crate::time::now_unix_ms();
        taken_job(&store, &a, "n-a", "tok-a", now).await;
        assert_eq!(stale("n-b", jb, "tok-b").await, busy("n-a", ja));
        // ... but its heartbeat stopped longer than the job lease ago: b takes over.
        let current = store.get(&Db::Faxes, ja).await.unwrap().unwrap();
        let mut beat = current.clone();
        beat["pvt_heartbeat"] = json!(now - 5_000);
        store.save(&Db::Faxes, beat).await.unwrap();
        assert_eq!(stale("n-b", jb, "tok-b").await, busy("n-a", ja)); // lease 60 s
        assert_eq!(
            take(
                &store,
                &number,
                "n-b",
                jb,
                "tok-b",
                Duration::ZERO,
                Duration::from_secs(1)
            )
            .await
            .unwrap(),
            NumberTake::Taken
        );
        let held = read(&store, &number).await.unwrap().unwrap();
        assert_eq!((held.node.as_str(), held.job_id.as_str()), ("n-b", jb));

        // A job processing under another token than the lease names: stale.
        taken_job(&store, &b, "n-b", "tok-b-other", now).await;
        assert_eq!(stale("n-a", ja, "tok-a").await, NumberTake::Taken);
        assert!(release(&store, &number, ja, "tok-a").await.unwrap());
    }

    #[tokio::test]
    async fn number_lease_on_the_embedded_store() {
        let (store, _dir) = crate::store::sqlite::test_store().await;
        number_lease_protocol(store).await;
    }

    #[tokio::test]
    async fn number_lease_on_couchdb() {
        let store = crate::store::couch::test_server().await;
        number_lease_protocol(std::sync::Arc::new(store)).await;
    }

    /// The lease of `number` as a worker saves it.
    fn taken_by(parent: &Value, number: &str, node: &str, job: &str, taken_ms: i64) -> Value {
        let mut doc = parent.clone();
        doc["_id"] = json!(doc_id(number));
        doc["pvt_type"] = json!(NUMBER_TYPE);
        doc["number"] = json!(number);
        doc["node"] = json!(node);
        doc["job_id"] = json!(job);
        doc["lease"] = json!(format!("tok-{node}"));
        doc["taken_ms"] = json!(taken_ms);
        doc
    }

    /// Two nodes both took the same number: two rev-checked writes that a CouchDB cluster
    /// accepted as conflicting revisions (written here with `new_edits: false`) — two
    /// creations, or two take-overs of one stale revision. However the two read back,
    /// exactly one holds the number (the earlier take; at the same time the smaller job id),
    /// although CouchDB's own winner is the other: the loser is told busy, naming the
    /// winner, and its revision is gone. Later takes agree.
    #[tokio::test]
    async fn conflicting_takes_of_a_number_leave_one_holder_on_couchdb() {
        let couch = std::sync::Arc::new(crate::store::couch::test_server().await);
        let store: SharedStore = couch.clone();
        crate::bootstrap::ensure_global_dbs(&store).await.unwrap();
        let db = Db::Faxes;
        let (high, low) = ("f".repeat(32), "0".repeat(32));
        for (stale_parent, loser_reads_first) in
            [(false, true), (false, false), (true, true), (true, false)]
        {
            let number = fresh_number();
            let now = crate::time::now_unix_ms();
            let parent = if stale_parent {
                // A stale lease: its job does not exist, taken long ago.
                let old = taken_by(&json!({}), &number, "n-old", "gone", now - 600_000);
                Some(store.save(&db, old).await.unwrap())
            } else {
                None
            };
            let parent_rev = parent.as_ref().map(|p| p["_rev"].as_str().unwrap());
            let base = parent.clone().unwrap_or_else(|| json!({}));
            // The winner: the earlier take (stale parent), or the smaller job id at the
            // same time (two creations). CouchDB's own winner is the loser's (higher hash).
            let (win_job, lose_job) = ("job-1".to_string(), "job-2".to_string());
            let win_ms = if stale_parent { now - 5 } else { now };
            let rev_lose = couch
                .write_replicated(
                    &db,
                    parent_rev,
                    &high,
                    taken_by(&base, &number, "n-lose", &lose_job, now),
                )
                .await
                .unwrap();
            let rev_win = couch
                .write_replicated(
                    &db,
                    parent_rev,
                    &low,
                    taken_by(&base, &number, "n-win", &win_job, win_ms),
                )
                .await
                .unwrap();
            let case = format!("stale parent {stale_parent}, loser first {loser_reads_first}");
            assert_eq!(
                store.get_leaves(&db, &doc_id(&number)).await.unwrap().len(),
                2,
                "{case}"
            );
            assert_eq!(
                store.get(&db, &doc_id(&number)).await.unwrap().unwrap()["job_id"],
                lose_job.as_str(),
                "{case}: CouchDB's own winner is the loser's revision"
            );

            let settle_lose = || confirm(&store, &number, &lose_job, "tok-n-lose");
            let settle_win = || confirm(&store, &number, &win_job, "tok-n-win");
            let (lose, win) = if loser_reads_first {
                let lose = settle_lose().await.unwrap();
                (lose, settle_win().await.unwrap())
            } else {
                let win = settle_win().await.unwrap();
                (settle_lose().await.unwrap(), win)
            };
            assert_eq!(win, NumberTake::Taken, "{case}");
            assert_eq!(lose, busy("n-win", &win_job), "{case}");
            let leaves = store.get_leaves(&db, &doc_id(&number)).await.unwrap();
            assert_eq!(leaves.len(), 1, "{case}: {leaves:?}");
            assert_eq!(leaves[0]["_rev"], rev_win.as_str(), "{case}");
            assert_ne!(leaves[0]["_rev"], rev_lose.as_str(), "{case}");

            // Later: the holder's re-take is idempotent, the loser's is busy (within the
            // grace), and only the holder releases it.
            assert_eq!(
                take(&store, &number, "n-win", &win_job, "tok-n-win", LONG, LONG)
                    .await
                    .unwrap(),
                NumberTake::Taken
            );
            assert_eq!(
                take(
                    &store,
                    &number,
                    "n-lose",
                    &lose_job,
                    "tok-n-lose",
                    LONG,
                    LONG
                )
                .await
                .unwrap(),
                busy("n-win", &win_job)
            );
            assert!(
                !release(&store, &number, &lose_job, "tok-n-lose")
                    .await
                    .unwrap()
            );
            assert!(
                release(&store, &number, &win_job, "tok-n-win")
                    .await
                    .unwrap()
            );
            assert!(
                store
                    .get_leaves(&db, &doc_id(&number))
                    .await
                    .unwrap()
                    .is_empty()
            );
        }

        // A take whose read-back saw no conflict yet (Taken), and an earlier take on the
        // same revision that reaches this node afterwards: the confirmation before dialling
        // tells the later taker the number is busy, and its revision is gone.
        let number = fresh_number();
        let late = take(
            &store, &number, "n-late", "job-late", "tok-late", LONG, LONG,
        );
        assert_eq!(late.await.unwrap(), NumberTake::Taken);
        assert_eq!(
            confirm(&store, &number, "job-late", "tok-late")
                .await
                .unwrap(),
            NumberTake::Taken
        );
        let now = crate::time::now_unix_ms();
        let early = taken_by(&json!({}), &number, "n-early", "job-early", now - 1_000);
        let rev_early = couch
            .write_replicated(&db, None, &low, early)
            .await
            .unwrap();
        assert_eq!(
            store.get_leaves(&db, &doc_id(&number)).await.unwrap().len(),
            2
        );
        assert_eq!(
            confirm(&store, &number, "job-late", "tok-late")
                .await
                .unwrap(),
            busy("n-early", "job-early")
        );
        let leaves = store.get_leaves(&db, &doc_id(&number)).await.unwrap();
        assert_eq!(leaves.len(), 1, "{leaves:?}");
        assert_eq!(leaves[0]["_rev"], rev_early.as_str());
        assert!(
            release(&store, &number, "job-early", "tok-n-early")
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_take_needs_a_number() {
        let (store, _dir) = crate::store::sqlite::test_store().await;
        let taken = take(&store, "", "n", "j", "t", LONG, LONG).await;
        assert!(matches!(taken, Err(StoreError::Invalid(_))), "{taken:?}");
    }
}
