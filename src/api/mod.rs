//! The REST API (Kazoo v2 compatible): the HTTP server, its shared state, and the routes.
//! One file per resource; this one wires them together.

pub mod about;
pub mod envelope;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};

pub use envelope::{ApiError, NodeName, RequestId};

use crate::config::{MediaEngine, SystemConfig};
use crate::store::SharedStore;

/// What every handler may use: the store, the live config, and who this node is.
pub struct ApiState {
    pub store: SharedStore,
    pub sysconf: Arc<SystemConfig>,
    pub node: String,
    pub media: MediaEngine,
    /// When this node started (ISO-8601 UTC).
    pub started: String,
}

/// Routes of the API, mounted on an actix `App`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(about::healthz))
        .route("/v2/about", web::get().to(about::about));
}

async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

/// Builds the HTTP server on an already bound listener (so a taken port is reported by the
/// caller before anything starts). Signals are left to the supervision tree.
pub fn server(
    state: Arc<ApiState>,
    listener: TcpListener,
    workers: usize,
) -> std::io::Result<actix_web::dev::Server> {
    let data = web::Data::from(state);
    let server = HttpServer::new(move || {
        let node = NodeName(data.node.clone());
        App::new()
            .app_data(data.clone())
            .app_data(node)
            .wrap(from_fn(envelope::request_id_middleware))
            .configure(routes)
            .default_service(web::to(not_found))
    })
    .workers(workers.max(1))
    .disable_signals()
    .shutdown_timeout(10)
    .listen(listener)?
    .run();
    Ok(server)
}
