//! fax_status: answers, for the API of any node of the cluster, what this node's fax_workers
//! are doing (stage, "sending page 2 of 3"). It joins the process group
//! `faxd_outbound_status:<node>`, so a node reading a job whose `pvt_job_node` names another
//! node finds the one to ask. Spawned by fax_sup with the outbound processes, permanent.

use faxd::outbound::LiveStatus;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::outbound::WorkerStatus;

/// How long a live-status question may take (a worker or a remote node); the API then shows
/// the stored state.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// Process group of the fax_status of `node`.
pub fn group(node: &str) -> String {
    format!("{GROUP_PREFIX}{node}")
}

const GROUP_PREFIX: &str = "faxd_outbound_status:";

/// The linked nodes' names by the id this node gives their processes, read from their
/// fax_status groups (every node runs one).
pub fn node_names() -> std::collections::HashMap<u64, String> {
    ractor::pg::which_groups()
        .into_iter()
        .filter_map(|g| {
            let node = g.strip_prefix(GROUP_PREFIX)?.to_string();
            let remote = ractor::pg::get_members(&g)
                .into_iter()
                .find(|c| !c.get_id().is_local())?;
            Some((remote.get_id().node(), node))
        })
        .collect()
}

/// Which transmission is asked about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusQuery {
    pub job_id: String,
    pub to_number: String,
}

/// Messages of fax_status (remote-capable).
#[derive(RactorClusterMessage)]
pub enum StatusMsg {
    /// The live status of a job transmitted on this node, `None` if no worker runs it.
    #[rpc]
    Query(StatusQuery, RpcReplyPort<Option<LiveStatus>>),
}

pub struct FaxStatus;

#[ractor::async_trait]
impl Actor for FaxStatus {
    type Msg = StatusMsg;
    type State = ();
    /// This node's name.
    type Arguments = String;

    async fn pre_start(
        &self,
        myself: ActorRef<StatusMsg>,
        node: String,
    ) -> Result<(), ActorProcessingErr> {
        ractor::pg::join(group(&node), vec![myself.get_cell()]);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<StatusMsg>,
        msg: StatusMsg,
        _st: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            // Answered off the actor, so one slow worker does not hold up other questions.
            StatusMsg::Query(q, reply) => {
                tokio::spawn(async move {
                    let st = WorkerStatus::local(&q.job_id, &q.to_number, ASK_TIMEOUT / 2).await;
                    let _ = reply.send(st);
                });
            }
        }
        Ok(())
    }
}

/// Asks the fax_status of `node` (another node of the cluster) about a job; `None` when the
/// node is not connected, has no worker for it, or does not answer within [`ASK_TIMEOUT`].
pub async fn ask(node: &str, job_id: &str, to_number: &str) -> Option<LiveStatus> {
    let member = ractor::pg::get_members(&group(node))
        .into_iter()
        .find(|c| !c.get_id().is_local())?;
    let target: ActorRef<StatusMsg> = member.into();
    let q = StatusQuery {
        job_id: job_id.to_string(),
        to_number: to_number.to_string(),
    };
    match target
        .call(|reply| StatusMsg::Query(q, reply), Some(ASK_TIMEOUT))
        .await
    {
        Ok(ractor::rpc::CallResult::Success(st)) => st.filter(|s| s.job_id == job_id),
        _ => None,
    }
}
