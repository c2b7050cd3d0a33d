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
use crate::notify::Doorbell;
use crate::store::SharedStore;

/// Intakes waiting or running at most, by default.
pub const QUEUED: usize = 4096;
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
        tokio::spawn(async move {
            let _slot = slot;
            let id = job["_id"].as_str().unwrap_or_default().to_string();
            let Ok(_busy) = conversions.acquire_owned().await else {
                return;
            };
            report(
                &bell,
                &id,
                super::finish_intake(&store, &conversion, job).await,
            );
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
        tokio::spawn(async move {
            let _slot = slot;
            let id = job["_id"].as_str().unwrap_or_default().to_string();
            let fetched = {
                let Ok(_busy) = pool.fetches.clone().acquire_owned().await else {
                    return;
                };
                super::resume::document_of(&job, &policy).await
            };
            let stored = match fetched {
                Ok(doc) => super::store_document(&store, &job, doc).await,
                Err(reason) => {
                    report(&bell, &id, super::fail_job(&store, job, &reason).await);
                    return;
                }
            };
            let job = match stored {
                Ok(job) => job,
                Err(e) => {
                    report(&bell, &id, Err(e));
                    return;
                }
            };
            let Ok(_busy) = pool.conversions.clone().acquire_owned().await else {
                return;
            };
            report(
                &bell,
                &id,
                super::finish_intake(&store, &conversion, job).await,
            );
        });
    }
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
