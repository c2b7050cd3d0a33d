//! An actix-web server owned by an actor (api_server, file_proxy): started in `pre_start`,
//! its end reported to the actor as a message (so the actor fails and is restarted), and
//! stopped gracefully, waited for, in `post_stop`.

use actix_web::dev::{Server, ServerHandle};
use ractor::ActorRef;
use tokio::task::JoinHandle;

/// A running HTTP server and the task driving it.
pub struct RunningServer {
    handle: ServerHandle,
    task: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// Drives `server`; when it ends (it never should while the actor runs), `exited` with the
    /// reason is sent to `owner`.
    pub fn start<M: ractor::Message>(
        server: Server,
        owner: ActorRef<M>,
        exited: fn(String) -> M,
    ) -> Self {
        let handle = server.handle();
        let task = tokio::spawn(async move {
            let outcome = match server.await {
                Ok(()) => "HTTP server stopped".to_string(),
                Err(e) => format!("HTTP server failed: {e}"),
            };
            let _ = owner.cast(exited(outcome));
        });
        Self {
            handle,
            task: Some(task),
        }
    }

    /// Stops the server gracefully and waits for its task.
    pub async fn stop(&mut self) {
        self.handle.stop(true).await;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}
