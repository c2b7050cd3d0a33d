//! The REST API (Kazoo v2 compatible): the HTTP server, its shared state, and the routes.
//! One file per resource; this one wires them together. Every route is listed once in
//! [`endpoints`], which both mounts it and describes it in `GET /v2/openapi.json`.

pub mod about;
pub mod accept;
pub mod accounts;
pub mod admission;
pub mod auth_cache;
pub mod authz;
pub mod callflows;
pub mod envelope;
pub mod faxboxes;
pub mod faxes;
pub mod filter;
pub mod head_guard;
pub mod listing;
pub mod monster;
pub mod notifications;
pub mod openapi;
pub mod rate_limit;
pub mod request;
pub use crate::schema;
pub mod system_configs;
pub mod token;
pub mod user_auth;
pub mod users;

use std::net::TcpListener;
use std::sync::Arc;

use actix_service::ServiceFactoryExt as _;
use actix_web::http::Method;
use actix_web::middleware::from_fn;
use actix_web::{App, Route, web};
use tokio::sync::OnceCell;

pub use envelope::{ApiError, NodeName, RequestId};

use crate::config::{ApiSection, MediaEngine, SystemConfig};
use crate::store::SharedStore;

/// What every handler may use: the store, the live config, and who this node is.
pub struct ApiState {
    pub store: SharedStore,
    pub sysconf: Arc<SystemConfig>,
    pub node: String,
    pub media: MediaEngine,
    /// When this node started (ISO-8601 UTC).
    pub started: String,
    /// The `[api]` section of the node configuration (limits, URL fetch policy, tokens).
    pub options: ApiSection,
    /// Document conversion at intake.
    pub converter: Arc<crate::convert::Converter>,
    /// Live status of jobs being transmitted on this node (set by the node; `None` in
    /// API-only setups).
    pub status: Option<Arc<dyn crate::outbound::StatusSource>>,
    /// Faxes being received on this node now (set by the node).
    pub incoming: crate::inbound::live::IncomingCalls,
    /// The media engine's nodes (FreeSWITCH), for `/healthz`.
    pub media_health: crate::gateway::MediaMonitor,
    /// Request rate limits (from `options.rate_limit`).
    pub rate_limits: rate_limit::RateLimiter,
    /// Where accepted submissions are fetched and converted after the answer.
    pub intake: crate::intake::background::IntakePool,
    /// Wakes the node's notifier after a write with a pending notification (set by the node).
    pub notify: crate::notify::Doorbell,
    /// The documents authentication reads (see [`auth_cache`]); `store` drops its entries on
    /// every write.
    pub auth_cache: Arc<auth_cache::AuthCache>,
    token_key: OnceCell<Vec<u8>>,
}

impl ApiState {
    /// How intake converts documents, with the live `store_fax_tiff`.
    pub fn conversion(&self) -> crate::intake::Conversion {
        crate::intake::Conversion {
            converter: self.converter.clone(),
            keep_tiff: self.sysconf.fax().store_fax_tiff,
        }
    }

    pub fn new(
        store: SharedStore,
        sysconf: Arc<SystemConfig>,
        node: String,
        media: MediaEngine,
        started: String,
        options: ApiSection,
        converter: Arc<crate::convert::Converter>,
    ) -> Self {
        let auth_cache = Arc::new(auth_cache::AuthCache::default());
        let store: SharedStore = Arc::new(crate::store::observed::Observed::new(
            store,
            auth_cache::Invalidates(auth_cache.clone()),
        ));
        Self {
            auth_cache,
            rate_limits: rate_limit::RateLimiter::new(&options.rate_limit),
            converter,
            status: None,
            incoming: Default::default(),
            media_health: Default::default(),
            intake: Default::default(),
            notify: Default::default(),
            store,
            sysconf,
            node,
            media,
            started,
            options,
            token_key: OnceCell::new(),
        }
    }

    /// The intake service (job building and queueing) over this node's store, config, converter
    /// and intake pool.
    pub fn intake_service(&self) -> crate::intake::submit::IntakeService {
        crate::intake::submit::IntakeService {
            store: self.store.clone(),
            sysconf: self.sysconf.clone(),
            converter: self.converter.clone(),
            fetch: crate::intake::fetch::FetchPolicy::from_config(&self.options),
            pool: self.intake.clone(),
            notify: self.notify.clone(),
        }
    }

    /// Longest pause allowed while a request body arrives.
    pub fn body_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.options.body_timeout_s.max(1))
    }

    /// The cluster's token signing key (read once from the store).
    pub async fn token_key(&self) -> Result<Vec<u8>, ApiError> {
        self.token_key
            .get_or_try_init(|| token::load_or_create_key(&self.store))
            .await
            .cloned()
            .map_err(ApiError::from)
    }
}

/// One route: method, path (actix syntax, which is also OpenAPI's), a summary, the handler.
pub struct Endpoint {
    pub method: Method,
    pub path: String,
    pub summary: &'static str,
    pub route: Box<dyn Fn() -> Route + Send + Sync>,
}

fn ep(
    method: Method,
    path: &str,
    summary: &'static str,
    route: impl Fn() -> Route + Send + Sync + 'static,
) -> Endpoint {
    Endpoint {
        method,
        path: path.to_string(),
        summary,
        route: Box::new(route),
    }
}

/// Every route of the API.
pub fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    let mut v = vec![
        ep(M::GET, "/healthz", "Whether the store answers", || {
            web::get().to(about::healthz)
        }),
        ep(
            M::GET,
            "/metrics",
            "The node's counters (Prometheus text)",
            || web::get().to(about::metrics),
        ),
        ep(M::GET, "/v2/about", "What this node is", || {
            web::get().to(about::about)
        }),
        ep(M::GET, "/v2/openapi.json", "This document", || {
            web::get().to(openapi::openapi)
        }),
    ];
    v.extend(user_auth::endpoints());
    v.extend(accounts::endpoints());
    v.extend(users::endpoints());
    v.extend(faxboxes::endpoints());
    v.extend(callflows::endpoints());
    v.extend(faxes::endpoints());
    v.extend(notifications::endpoints());
    v.extend(system_configs::endpoints());
    v.extend(monster::endpoints());
    v
}

/// Routes of the API, mounted on an actix `App`: one resource per path, its methods, and a
/// 405 for the others. Every resource passes through [`authz::guard`] (authentication and the
/// role table) before its handler runs.
///
/// actix tries the resources in the order they are mounted, each with a path pattern with
/// parameters costing a regular-expression match; no two of these patterns match the same
/// path, so the order only decides the cost: paths without parameters first (a string
/// comparison each), then the account's own fax routes (the busiest) in one scope (one
/// match of its prefix, then their own short patterns), then the others.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let mut paths: Vec<String> = Vec::new();
    let all = endpoints();
    for e in &all {
        if !paths.contains(&e.path) {
            paths.push(e.path.clone());
        }
    }
    // A stable sort: within each rank, the order of `endpoints`.
    paths.sort_by_key(|p| route_rank(p));
    let mut faxes = Some(web::scope(FAX_SCOPE));
    for path in paths {
        let mut resource = match path.strip_prefix(FAX_SCOPE) {
            Some(rest) if route_rank(&path) == 1 => web::resource(rest),
            _ => web::resource(path.as_str()),
        };
        let served: Vec<&Endpoint> = all.iter().filter(|e| e.path == path).collect();
        for e in &served {
            resource = resource.route((e.route)());
        }
        let rules = std::rc::Rc::new(authz::Rules::new(&path, served.iter().map(|e| &e.method)));
        let resource = resource
            .default_service(web::to(method_not_allowed))
            .wrap(from_fn(move |req, next| {
                authz::guard(rules.clone(), req, next)
            }));
        match route_rank(&path) {
            0 => {
                cfg.service(resource);
            }
            1 => faxes = faxes.take().map(|f| f.service(resource)),
            _ => {
                // The scope goes right after the paths without parameters.
                if let Some(f) = faxes.take() {
                    cfg.service(f);
                }
                cfg.service(resource);
            }
        }
    }
    if let Some(f) = faxes.take() {
        cfg.service(f);
    }
}

/// The prefix of the account's own fax routes.
const FAX_SCOPE: &str = "/v2/accounts/{account_id}/faxes";

/// Where a path is mounted (lower first), see [`routes`].
fn route_rank(path: &str) -> u8 {
    if !path.contains('{') {
        0
    } else if path == FAX_SCOPE || path.starts_with(&format!("{FAX_SCOPE}/")) {
        1
    } else {
        2
    }
}

async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

async fn method_not_allowed() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::InvalidMethod)
}

/// Builds the HTTP server on an already bound listener (so a taken port is reported by the
/// caller before anything starts). Signals are left to the supervision tree.
///
/// Every door has a deadline and a bound: the request head must arrive within
/// `header_timeout_s`, a body may not stall longer than `body_timeout_s` (see
/// [`request::read_body`]), a client address holds at most `max_connections_per_address`
/// connections, and the server holds at most `max_connections`, but never more than half of
/// the descriptors the process may open.
pub fn server(
    state: Arc<ApiState>,
    listener: TcpListener,
    workers: usize,
) -> std::io::Result<actix_web::dev::Server> {
    let opts = state.options.clone();
    let workers = workers.max(1);
    let total = crate::conn_limit::fd_budget(opts.max_connections, 0.5);
    let limiter = crate::conn_limit::ConnLimiter::new(opts.max_connections_per_address, total);
    let node: Arc<str> = Arc::from(state.node.as_str());
    let data = web::Data::from(state);
    let header_timeout = std::time::Duration::from_secs(opts.header_timeout_s.max(1));
    let local = listener.local_addr()?;
    // Built from actix-web's parts rather than `HttpServer`, so that the connection the HTTP
    // layer reads is the guarded one (see [`head_guard`]).
    let server = actix_server::Server::build()
        .workers(workers)
        .max_concurrent_connections(total.div_ceil(workers))
        .disable_signals()
        .shutdown_timeout(10)
        .listen("faxd-api", listener, move || {
            let limiter = limiter.clone();
            let node = node.clone();
            let guard_node = node.clone();
            // Idle keep-alive connections are kept 75 s (actix closes them after 5 s by
            // default), so clients that pool connections rarely reuse one the server is
            // closing at that moment.
            let h1 = actix_http::HttpService::build()
                .client_request_timeout(header_timeout)
                // A closing connection gets a second to flush its last answer (as actix-web's
                // own server does).
                .client_disconnect_timeout(std::time::Duration::from_secs(1))
                .local_addr(local)
                .keep_alive(std::time::Duration::from_secs(75))
                .on_connect_ext(move |io: &head_guard::Guarded, ext| {
                    admission::on_connect(&limiter, &node, io.stream(), ext)
                })
                .h1(actix_service::map_config(app(data.clone()), |_| {
                    actix_web::dev::AppConfig::default()
                }));
            actix_service::fn_service(move |io: tokio::net::TcpStream| {
                let peer = io.peer_addr().ok();
                std::future::ready(Ok::<_, actix_http::error::DispatchError>((
                    head_guard::Guarded::new(io, guard_node.clone()),
                    peer,
                )))
            })
            .and_then(h1)
        })?
        .run();
    Ok(server)
}

/// The actix application of the API (also used in-process by tests).
pub fn app(
    data: web::Data<ApiState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<actix_web::body::BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let node = NodeName(data.node.clone());
    App::new()
        .app_data(data)
        .app_data(node)
        .app_data(web::PayloadConfig::new(usize::MAX))
        // Inside the envelope middleware (wrapped last, so outermost): a 429 gets the
        // envelope, and the rate limit sees the method a POST stands for.
        .wrap(from_fn(rate_limit::middleware))
        .wrap(from_fn(envelope::request_id_middleware))
        .configure(routes)
        .default_service(web::to(not_found))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two patterns match a common path when they have as many segments and, at each, the
    /// same text or a parameter on either side.
    fn overlap(a: &str, b: &str) -> bool {
        let (sa, sb): (Vec<&str>, Vec<&str>) = (a.split('/').collect(), b.split('/').collect());
        sa.len() == sb.len()
            && sa
                .iter()
                .zip(&sb)
                .all(|(x, y)| x == y || x.starts_with('{') || y.starts_with('{'))
    }

    #[test]
    fn no_two_routes_match_one_path_so_their_order_is_free() {
        let mut paths: Vec<String> = endpoints().into_iter().map(|e| e.path).collect();
        paths.sort();
        paths.dedup();
        assert!(paths.len() > 50);
        for (i, a) in paths.iter().enumerate() {
            for b in &paths[i + 1..] {
                assert!(!overlap(a, b), "{a} and {b} match a common path");
            }
        }
        assert!(overlap("/v2/accounts/{a}/x", "/v2/accounts/b/{c}"));
        assert_eq!(route_rank("/v2/about"), 0);
        assert_eq!(
            route_rank("/v2/accounts/{account_id}/faxes/outbox/{fax_id}"),
            1
        );
        assert_eq!(route_rank("/v2/accounts/{account_id}/users/{user_id}"), 2);
    }
}
