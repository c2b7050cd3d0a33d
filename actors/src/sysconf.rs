//! sysconf: keeps this node's live `system_config/fax` values current. It follows the
//! `system_config` change feed and reloads when the `fax` document changes, so
//! `faxd sup kapps_config set …` (from any node) takes effect without a restart. Spawned by
//! fax_sup, permanent; it fails when the feed closes so that it is restarted and resubscribes.

use faxd::config::runtime::FAX_CATEGORY;
use faxd::context::NodeContext;
use faxd::ids::Db;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

/// Messages of sysconf.
#[derive(Debug)]
pub enum SysconfMsg {
    /// A document of `system_config` changed (`None`: changes were missed; reload anyway).
    Changed(Option<String>),
    /// The change feed ended.
    FeedClosed,
}

impl ractor::Message for SysconfMsg {}

pub struct Sysconf;

pub struct SysconfState {
    ctx: NodeContext,
    forwarder: JoinHandle<()>,
}

#[ractor::async_trait]
impl Actor for Sysconf {
    type Msg = SysconfMsg;
    type State = SysconfState;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut feed = ctx.store.subscribe(&Db::SystemConfig).await?;
        // Changes made while we were not subscribed (e.g. during a restart).
        ctx.sysconf.reload().await?;
        let forwarder = tokio::spawn(async move {
            loop {
                let msg = match feed.recv().await {
                    Ok(change) => SysconfMsg::Changed(Some(change.id)),
                    Err(RecvError::Lagged(_)) => SysconfMsg::Changed(None),
                    Err(RecvError::Closed) => SysconfMsg::FeedClosed,
                };
                let closed = matches!(msg, SysconfMsg::FeedClosed);
                if myself.cast(msg).is_err() || closed {
                    break;
                }
            }
        });
        Ok(SysconfState { ctx, forwarder })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SysconfMsg::Changed(Some(id)) if id != FAX_CATEGORY => Ok(()),
            SysconfMsg::Changed(_) => {
                if let Err(e) = state.ctx.sysconf.reload().await {
                    // A bad stored value keeps the values in force; say so loudly.
                    tracing::error!(error = %e, "stored fax config not applied");
                } else {
                    tracing::info!("fax config reloaded");
                }
                Ok(())
            }
            SysconfMsg::FeedClosed => Err("system_config change feed closed".into()),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.forwarder.abort();
        Ok(())
    }
}
