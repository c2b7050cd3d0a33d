//! api_server: runs the REST API (Kazoo's crossbar, for the fax resources) on actix-web.
//! Spawned by fax_sup, permanent; it stops the HTTP server gracefully in `post_stop`, and
//! fails (so fax_sup restarts it) if the server ends by itself.

use std::net::TcpListener;
use std::sync::Arc;

use faxd::api::{self, ApiState};
use faxd::context::NodeContext;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::http_server::RunningServer;

/// Messages of the api_server.
#[derive(Debug)]
pub enum ApiServerMsg {
    /// The HTTP server future finished (it never should while the actor runs).
    Exited(String),
}

impl ractor::Message for ApiServerMsg {}

pub struct ApiServer;

#[ractor::async_trait]
impl Actor for ApiServer {
    type Msg = ApiServerMsg;
    type State = RunningServer;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        let listen = ctx.config.api.listen.clone();
        let listener = TcpListener::bind(&listen)
            .map_err(|e| format!("api_server cannot listen on {listen}: {e}"))?;
        let mut state = ApiState::new(
            ctx.store.clone(),
            ctx.sysconf.clone(),
            ctx.node().to_string(),
            ctx.config.media.engine,
            ctx.started_at.clone(),
            ctx.config.api.clone(),
            ctx.converter.clone(),
        );
        state.status = Some(Arc::new(crate::outbound::WorkerStatus));
        state.incoming = ctx.incoming.clone();
        state.notify = ctx.notify.clone();
        state.intake = ctx.intake.clone();
        state.media_health = ctx.media.clone();
        let state = Arc::new(state);
        let server = api::server(state, listener, ctx.config.api.workers)?;
        let running = RunningServer::start(server, myself, ApiServerMsg::Exited);
        tracing::info!(%listen, "api_server listening");
        Ok(running)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ApiServerMsg::Exited(why) => Err(why.into()),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.stop().await;
        tracing::info!("api_server stopped");
        Ok(())
    }
}
