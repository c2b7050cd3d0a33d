//! fax_smtp: the e-mail-to-fax SMTP listener (replaces Kazoo's `fax_smtp` gen_smtp server).
//! Spawned by fax_sup when `[smtp] listen` is set, permanent. It binds the port in
//! `pre_start` (a bad address or TLS file fails the start), runs the accept loop
//! (`faxd::smtp::listener`: one bounded task per connection, `421` beyond `smtp_sessions`;
//! a warning when `legacy_tls` is on),
//! and fails if the loop ends by itself so fax_sup restarts it; in `post_stop` it stops
//! accepting and drains the sessions.

use std::sync::Arc;
use std::time::Duration;

use faxd::context::NodeContext;
use faxd::smtp::listener::{self, Shutdown};
use faxd::smtp::service::SmtpService;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;

/// How long sessions may take to finish at shutdown.
pub const GRACE: Duration = Duration::from_secs(8);

/// Messages of fax_smtp.
#[derive(Debug)]
pub enum FaxSmtpMsg {
    /// The accept loop ended (it never should while the actor runs).
    Exited(String),
}

impl ractor::Message for FaxSmtpMsg {}

pub struct FaxSmtp;

/// The running listener.
pub struct Running {
    stop: Shutdown,
    task: Option<JoinHandle<()>>,
}

#[ractor::async_trait]
impl Actor for FaxSmtp {
    type Msg = FaxSmtpMsg;
    type State = Running;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        let smtp = &ctx.config.smtp;
        let fax = ctx.sysconf.fax();
        let cfg = faxd::smtp::session_config(smtp, &fax, ctx.node())
            .map_err(|e| format!("fax_smtp: {e}"))?;
        if smtp.legacy_tls {
            tracing::warn!(
                ciphers = faxd::smtp::starttls::LEGACY_CIPHERS,
                "fax_smtp: legacy_tls is on: STARTTLS runs on OpenSSL and admits TLS 1.0/1.1, AES-CBC and RSA key exchange for old scanners; turn it off when they are gone"
            );
        }
        let listen = smtp.listen.clone();
        let socket = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| format!("fax_smtp cannot listen on {listen}: {e}"))?;
        let service = SmtpService {
            intake: ctx.intake_service(),
            limits: faxd::smtp::mime_limits(smtp),
        };
        let (stop, stopped) = Shutdown::new();
        let sessions = fax.smtp_sessions as usize;
        let tls = cfg.tls.is_some();
        let task = tokio::spawn(async move {
            let outcome = listener::serve(
                socket,
                Arc::new(cfg),
                Arc::new(service),
                sessions,
                stopped,
                GRACE,
            )
            .await;
            let why = match outcome {
                Ok(()) => "smtp listener stopped".to_string(),
                Err(e) => format!("smtp listener failed: {e}"),
            };
            let _ = myself.cast(FaxSmtpMsg::Exited(why));
        });
        tracing::info!(%listen, sessions, tls, "fax_smtp listening");
        Ok(Running {
            stop,
            task: Some(task),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            FaxSmtpMsg::Exited(why) => Err(why.into()),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.stop.trigger();
        if let Some(task) = state.task.take() {
            let _ = task.await;
        }
        tracing::info!("fax_smtp stopped");
        Ok(())
    }
}
