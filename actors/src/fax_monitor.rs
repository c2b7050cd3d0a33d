//! fax_monitor: makes sure every account with due jobs has its fax_jobs running (Kazoo's
//! `fax_monitor`), and recovers jobs whose owner is gone. Spawned by fax_sup after
//! fax_jobs_sup and fax_worker_sup, permanent; it exits with the node.
//!
//! It is woken by the change feed of the `faxes` database: a forwarding task hands it
//! batches of changes, one `Changed` call at a time, so bursts coalesce into one scheduling
//! pass. A slow sweep (`Settings::sweep`) is only a safety net; it also requeues
//! `processing` jobs whose lease ran out (or that name this node but have no worker here —
//! the node restarted) and `locked` jobs whose queue is gone. The first sweep runs at start.

use std::sync::Arc;

use faxd::ids::{AccountId, Db};
use faxd::outbound::{Job, lease};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::fax_jobs::JobsMsg;
use crate::outbound::{Env, RPC_TIMEOUT};

/// Messages of fax_monitor (local only).
pub enum MonitorMsg {
    /// The faxes database changed (a coalesced batch); replies when scheduled.
    Changed(RpcReplyPort<()>),
    /// Safety sweep and lease recovery (periodic, and once at start).
    Sweep,
}

impl ractor::Message for MonitorMsg {}

pub struct FaxMonitor;

pub struct MonitorState {
    env: Arc<Env>,
    feed: Option<JoinHandle<()>>,
    sweep: Option<JoinHandle<()>>,
}

#[ractor::async_trait]
impl Actor for FaxMonitor {
    type Msg = MonitorMsg;
    type State = MonitorState;
    type Arguments = Arc<Env>;

    async fn pre_start(
        &self,
        myself: ActorRef<MonitorMsg>,
        env: Arc<Env>,
    ) -> Result<MonitorState, ActorProcessingErr> {
        let mut changes = env.ctx.store.subscribe(&Db::Faxes).await?;
        let me = myself.clone();
        // Forwards the change feed: waits for a change, drains what else arrived, and asks
        // the monitor to schedule (one request outstanding at a time).
        let feed = tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
                while let Ok(_) | Err(TryRecvError::Lagged(_)) = changes.try_recv() {}
                // A slow pass (timeout) is fine: the next change asks again. Only a gone
                // monitor ends the forwarding (its restart subscribes anew).
                match me.call(MonitorMsg::Changed, Some(RPC_TIMEOUT * 6)).await {
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        let sweep = myself.send_interval(env.settings.sweep, || MonitorMsg::Sweep);
        Ok(MonitorState {
            env,
            feed: Some(feed),
            sweep: Some(sweep),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<MonitorMsg>,
        _st: &mut MonitorState,
    ) -> Result<(), ActorProcessingErr> {
        myself.cast(MonitorMsg::Sweep)?;
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<MonitorMsg>,
        st: &mut MonitorState,
    ) -> Result<(), ActorProcessingErr> {
        for h in [st.feed.take(), st.sweep.take()].into_iter().flatten() {
            h.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<MonitorMsg>,
        msg: MonitorMsg,
        st: &mut MonitorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MonitorMsg::Changed(reply) => {
                st.schedule().await;
                let _ = reply.send(());
            }
            MonitorMsg::Sweep => {
                st.recover().await;
                st.schedule().await;
            }
        }
        Ok(())
    }
}

impl MonitorState {
    /// Wakes (starting when needed) the queue of every account with pending or locked jobs.
    async fn schedule(&mut self) {
        let accounts = match self.env.ctx.store.schedule_accounts().await {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "schedule_accounts failed");
                return;
            }
        };
        for (account, _count) in accounts {
            if !self.env.settings.schedules(&account) {
                continue;
            }
            self.wake(account).await;
        }
    }

    async fn wake(&self, account: AccountId) {
        if let Some(jobs) = Env::jobs_of(account.as_str())
            && jobs.cast(JobsMsg::Wake).is_ok()
        {
            return;
        }
        // Not running: starting it runs a first pass.
        match self
            .env
            .spawner
            .start_jobs(self.env.clone(), account.clone())
            .await
        {
            Ok(_) => debug!(account_id = %account, "fax_jobs started"),
            Err(e) => {
                // Lost a race with a queue that just started (or is stopping): wake it.
                if let Some(jobs) = Env::jobs_of(account.as_str()) {
                    let _ = jobs.cast(JobsMsg::Wake);
                } else {
                    warn!(account_id = %account, error = %e, "fax_jobs did not start");
                }
            }
        }
    }

    /// Requeues processing jobs whose lease is gone, and unlocks orphaned locked jobs.
    async fn recover(&mut self) {
        let env = self.env.clone();
        let store = &env.ctx.store;
        let me = env.node();
        let now_ms = faxd::time::now_unix_ms();
        let lease_ms = env.settings.lease.as_millis() as i64;
        let policy = env.policy();
        let rows = match store.processing_by_node(None).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "processing_by_node failed");
                return;
            }
        };
        for row in rows {
            let Ok(account) = AccountId::parse(&row.account_id) else {
                continue;
            };
            if !env.settings.schedules(&account) {
                continue;
            }
            let Ok(Some(doc)) = store.get(&Db::Faxes, &row.id).await else {
                continue;
            };
            let Ok(job) = Job::from_doc(&doc) else {
                continue;
            };
            let mine_without_worker = job.node.as_deref() == Some(me)
                && Env::worker_of(&job.id, &job.to_number).is_empty();
            let why = if mine_without_worker {
                "no worker on its node"
            } else if lease::lease_expired(&job, now_ms, lease_ms) {
                "lease expired"
            } else {
                continue;
            };
            match lease::recover_processing(store, &job.id, job.lease.as_deref(), why, &policy)
                .await
            {
                Ok(Some(st)) => {
                    info!(job_id = %job.id, account_id = %account, node = ?job.node, status = %st,
                          "requeued job: {why}")
                }
                Ok(None) => {}
                Err(e) => warn!(job_id = %job.id, error = %e, "requeue failed"),
            }
        }
        // Locked jobs whose queue is gone (lock older than the lease).
        let accounts = store.schedule_accounts().await.unwrap_or_default();
        let lease_s = env.settings.lease.as_secs() as i64;
        let now = faxd::time::now_gregorian();
        for (account, _) in accounts {
            if !env.settings.schedules(&account) {
                continue;
            }
            if Env::jobs_of(account.as_str()).is_some() {
                continue;
            }
            let Ok(locked) = store.locked_jobs_by_account(&account).await else {
                continue;
            };
            for row in locked {
                let Ok(Some(doc)) = store.get(&Db::Faxes, &row.id).await else {
                    continue;
                };
                let locked_at = doc
                    .get("pvt_locked")
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or(0);
                let mine = row.node.as_deref() == Some(me);
                if (mine || now - locked_at > lease_s)
                    && let Ok(true) = lease::unlock(store, &row.id).await
                {
                    info!(job_id = %row.id, account_id = %account, "unlocked orphaned job");
                }
            }
        }
    }
}
