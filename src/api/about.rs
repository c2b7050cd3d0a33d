//! `GET /v2/about` (what this node is), `GET /healthz` (whether its store answers) and
//! `GET /metrics` (the node's counters, for Prometheus).

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::envelope::{VERSION, success, unavailable};
use super::{ApiError, ApiState};

/// How long `/healthz` waits for the store.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn about(req: HttpRequest, state: web::Data<ApiState>) -> HttpResponse {
    success(
        &req,
        &state.node,
        json!({
            "version": VERSION,
            "node": state.node,
            "storage": state.store.backend().as_str(),
            "media": state.media.as_str(),
            "started": state.started,
        }),
    )
}

/// `200` when the store answers and, with the FreeSWITCH engine, at least one node is
/// connected; each node's state is listed under `media`.
pub async fn healthz(state: web::Data<ApiState>) -> HttpResponse {
    let nodes = state.media_health.nodes();
    let media = nodes.as_ref().map(|n| json!(n));
    match tokio::time::timeout(HEALTH_TIMEOUT, state.store.ping()).await {
        Ok(Ok(()))
            if nodes
                .as_ref()
                .is_some_and(|n| !n.iter().any(|h| h.connected)) =>
        {
            unavailable(json!({
                "status": "unavailable",
                "reason": "no FreeSWITCH node connected",
                "storage": state.store.backend().as_str(),
                "media": media,
            }))
        }
        Ok(Ok(())) => {
            let mut body = json!({"status": "ok", "storage": state.store.backend().as_str()});
            if let Some(m) = media {
                body["media"] = m;
            }
            HttpResponse::Ok().json(body)
        }
        Ok(Err(e)) => unavailable(json!({"status": "unavailable", "reason": e.to_string()})),
        Err(_) => {
            unavailable(json!({"status": "unavailable", "reason": "store did not answer in time"}))
        }
    }
}

/// `GET /metrics`: the Prometheus text page, to the addresses in `[api] metrics_allow`
/// (the connection's peer, never a forwarding header). The queue depth is read from the
/// store; when the store does not answer in time the page is served without it.
pub async fn metrics(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let allowed = crate::netblock::AllowList::parse(&state.options.metrics_allow)
        .is_ok_and(|list| req.peer_addr().is_some_and(|p| list.allows(p.ip())));
    if !allowed {
        return Err(ApiError::ForbiddenCause(
            "metrics are served to the addresses in [api] metrics_allow".into(),
        ));
    }
    let queue = match tokio::time::timeout(HEALTH_TIMEOUT, state.store.queue_depth()).await {
        Ok(Ok(q)) => q,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: queue depth not read");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!("metrics: the store did not answer the queue depth in time");
            Vec::new()
        }
    };
    let page = crate::metrics::global().render(&crate::metrics::Scrape {
        node: &state.node,
        version: VERSION,
        queue: &queue,
    });
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(page))
}
