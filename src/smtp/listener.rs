//! The accept loop of fax_smtp: each connection becomes a session task, at most
//! `smtp_sessions` at once (a connection beyond gets `421 4.3.2` and is closed at once);
//! at shutdown the loop stops accepting, idle sessions are told `421` and sessions in the
//! middle of a message finish it, within a grace period.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::reply::Reply;
use super::session::{self, Backend, SessionConfig};

/// Where the loop is told to stop.
#[derive(Clone)]
pub struct Shutdown(watch::Sender<bool>);

impl Shutdown {
    pub fn new() -> (Self, watch::Receiver<bool>) {
        let (tx, rx) = watch::channel(false);
        (Self(tx), rx)
    }
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

/// Accepts connections until `stop` turns `true`, then drains the sessions (at most
/// `grace`; the rest are cut). Returns the error that ended accepting, if any.
pub async fn serve<B: Backend>(
    listener: TcpListener,
    cfg: Arc<SessionConfig>,
    backend: Arc<B>,
    max_sessions: usize,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) -> Result<(), std::io::Error> {
    let permits = Arc::new(Semaphore::new(max_sessions.max(1)));
    let mut sessions = JoinSet::new();
    let busy = {
        let mut out = Vec::new();
        Reply::too_busy(&cfg.hostname).render(&mut out);
        out
    };
    let outcome = loop {
        tokio::select! {
            _ = stop.changed() => break Ok(()),
            // Reap finished sessions so the set does not grow.
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    // Out of descriptors and the like: wait a moment, keep serving.
                    Err(e) if is_transient(&e) => {
                        tracing::warn!(error = %e, "smtp: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(e) => break Err(e),
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    // Never waits: the reply fits the socket buffer of a new connection.
                    let _ = stream.try_write(&busy);
                    tracing::info!(%peer, "smtp: too many sessions, 421");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let cfg = cfg.clone();
                let backend = backend.clone();
                let stop = stop.clone();
                sessions.spawn(async move {
                    let end = session::run(stream, Some(peer.ip()), cfg, backend, stop).await;
                    tracing::debug!(%peer, ?end, "smtp: session ended");
                    drop(permit);
                });
            }
        }
    };
    drop(listener);
    let drained = tokio::time::timeout(grace, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = sessions.len(),
            "smtp: sessions still running at the end of the shutdown grace; cut"
        );
        sessions.abort_all();
    }
    outcome
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::ECONNABORTED)
    )
}
