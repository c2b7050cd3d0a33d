//! Live status of a transmission (stage, "sending page 2 of 3"), and the trait through which
//! the API reads it without naming actor types.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// What a worker reports about the job it is transmitting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveStatus {
    pub job_id: String,
    /// `acquire`, `prepare`, `originate`, `negotiate`, `send`, `release`.
    pub stage: String,
    /// Human text, e.g. `"sending page 2 of 3"`.
    pub status: String,
    /// Pages sent so far.
    pub page: u32,
    /// Pages of the document (0 until known).
    pub total_pages: u32,
    /// Node running the worker.
    pub node: String,
}

/// Live status lookup (implemented in `faxd-actors` by asking the job's worker, on this node
/// or, over the cluster, on the node the job names).
#[async_trait]
pub trait StatusSource: Send + Sync + 'static {
    /// The status of a job being transmitted, `None` if no reachable worker runs it (the
    /// caller then shows the stored state). `to_number` (the doc's `to_number`) lets the
    /// lookup find number-named workers; `node` (the doc's `pvt_job_node`) is where to ask
    /// when the worker is not on this node.
    async fn live_status(
        &self,
        job_id: &str,
        to_number: &str,
        node: Option<&str>,
    ) -> Option<LiveStatus>;
}
