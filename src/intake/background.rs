//! Background intake: after a submission is recorded (`attaching_files`, answered 202 as
//! Kazoo answers), its document is fetched (URL mode) and converted here, in a bounded pool,
//! and the job becomes `pending` — or ends `failed` with the reason, in the outbox.
//!
//! Bounds: at most `queued` intakes wait or run (a submission beyond that waits for a slot,
//! so memory stays bounded under load), at most `fetches` URL fetches and `conversions`
//! conversions at once. An intake interrupted here (store outage, node stopped) leaves its
//! job in `attaching_files`; fax_monitor's sweep ([`super::resume`]) finishes it.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::fetch::FetchPolicy;
use super::{Conversion, IntakeError};
use crate::ids::Db;
use crate::notify::Doorbell;
use crate::store::SharedStore;

/// Intakes waiting or running at most, by default. A waiting intake holds only its job's id;
/// at a hundred conversions a second the last of them starts within about a minute and a
/// half, well inside the time after which the sweep counts a job as stranded.
pub const QUEUED: usize = 8192;
/// URL fetches at once, by default (they wait on the network, not the CPU).
pub const FETCHES: usize = 32;

/// The bounded pool that finishes intakes after the request answered.
#[derive(Clone, Debug)]
pub struct IntakePool {
    queued: Arc<Semaphore>,
    fetches: Arc<Semaphore>,
    conversions: Arc<Semaphore>,
}

impl Default for IntakePool {
    /// Two conversions per core: each intake also waits on the store (reading its original,
    /// writing the TIFF and the job) while it holds its place, so one per core left the cores
    /// partly idle under load; the warm Ghostscript pool grows to match.
    fn default() -> Self {
        Self::new(QUEUED, FETCHES, crate::convert::conversions_at_once())
    }
}

impl IntakePool {
    pub fn new(queued: usize, fetches: usize, conversions: usize) -> Self {
        Self {
            queued: Arc::new(Semaphore::new(queued.max(1))),
            fetches: Arc::new(Semaphore::new(fetches.max(1))),
            conversions: Arc::new(Semaphore::new(conversions.max(1))),
        }
    }

    /// A place in the pool (waits while it is full).
    async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.queued.clone().acquire_owned().await.ok()
    }

    /// Converts the stored original of `job` (saved `attaching_files` with it), then
    /// `pending`, or `failed` with the reason.
    pub async fn convert(
        &self,
        store: SharedStore,
        conversion: Conversion,
        job: Value,
        bell: Doorbell,
    ) {
        let Some(slot) = self.slot().await else {
            return;
        };
        let conversions = self.conversions.clone();
        // While it waits, an intake holds its job's id and nothing else (the job is in the
        // store): the work itself is boxed, so a waiting task stays a few hundred bytes.
        let id = job_id(&job);
        drop(job);
        tokio::spawn(async move {
            let _slot = slot;
            let Ok(_busy) = conversions.acquire_owned().await else {
                return;
            };
            Box::pin(async move {
                let done = match fresh(&store, &id).await {
                    Ok(Some(job)) => super::finish_intake(&store, &conversion, job).await,
                    Ok(None) => return,
                    Err(e) => Err(e),
                };
                report(&bell, &id, done);
            })
            .await;
        });
    }

    /// Fetches the `document.url` of `job` (saved `attaching_files`), stores it, then
    /// converts it as [`IntakePool::convert`] does; a fetch that fails ends the job `failed`
    /// with the reason.
    pub async fn fetch_and_convert(
        &self,
        store: SharedStore,
        conversion: Conversion,
        policy: FetchPolicy,
        job: Value,
        bell: Doorbell,
    ) {
        let Some(slot) = self.slot().await else {
            return;
        };
        let pool = self.clone();
        let id = job_id(&job);
        drop(job);
        tokio::spawn(async move {
            let _slot = slot;
            let Ok(fetching) = pool.fetches.clone().acquire_owned().await else {
                return;
            };
            Box::pin(async move {
                let job = match fresh(&store, &id).await {
                    Ok(Some(job)) => job,
                    Ok(None) => return,
                    Err(e) => return report(&bell, &id, Err(e)),
                };
                let fetched = super::resume::document_of(&job, &policy).await;
                drop(fetching);
                let stored = match fetched {
                    Ok(doc) => super::store_document(&store, &job, doc).await,
                    Err(reason) => {
                        return report(&bell, &id, super::fail_job(&store, job, &reason).await);
                    }
                };
                let job = match stored {
                    Ok(job) => job,
                    Err(e) => return report(&bell, &id, Err(e)),
                };
                let Ok(_busy) = pool.conversions.clone().acquire_owned().await else {
                    return;
                };
                report(
                    &bell,
                    &id,
                    super::finish_intake(&store, &conversion, job).await,
                );
            })
            .await;
        });
    }
}

fn job_id(job: &Value) -> String {
    job["_id"].as_str().unwrap_or_default().to_string()
}

/// The job as stored now, if it is still being taken in: one cancelled or deleted while it
/// waited for its turn is left alone.
async fn fresh(store: &SharedStore, id: &str) -> Result<Option<Value>, IntakeError> {
    let job = store.get(&Db::Faxes, id).await?;
    Ok(job.filter(super::in_intake))
}

/// Wakes the notifier for a job that failed in intake, or logs an intake that could not
/// finish (the job stays `attaching_files` for the sweep).
fn report(bell: &Doorbell, id: &str, done: Result<Value, IntakeError>) {
    match done {
        Ok(doc) => super::ring_if_notified(bell, &doc),
        Err(e) => {
            tracing::warn!(job_id = %id, error = %e, "intake not finished; the stranded-intake sweep resumes it");
        }
    }
}
