//! The outbound fax engine's core (no actors): job documents as typed values, the release
//! rules of Kazoo's `fax_worker:release_job` (plus the step-down rules faxd adds), moving
//! finished jobs to the account MODB, lease recovery, the cluster's outbound leader lease, the
//! per-account queue leases spread by rendezvous hashing ([`owner`]), the cluster-wide lease
//! on a destination number ([`number_lease`]), the one naming module of the outbound
//! processes, and the small traits the engine is plugged together with — [`DocumentSource`]
//! (where a worker gets the fax-ready TIFF) and [`StatusSource`] (live status for the API).

pub mod docs;
pub mod job;
pub mod leader;
pub mod lease;
pub mod modb;
pub mod names;
pub mod number_lease;
pub mod owner;
pub mod release;
pub mod status;

pub use docs::{ConvertedDocuments, DocumentError, DocumentSource, StoredTiff};
pub use job::{Job, JobError};
pub use status::{LiveStatus, StatusSource};
