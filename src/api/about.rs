//! `GET /v2/about` (what this node is) and `GET /healthz` (whether its store answers).

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::ApiState;
use super::envelope::{VERSION, success};

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
            HttpResponse::ServiceUnavailable().json(json!({
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
        Ok(Err(e)) => HttpResponse::ServiceUnavailable()
            .json(json!({"status": "unavailable", "reason": e.to_string()})),
        Err(_) => HttpResponse::ServiceUnavailable()
            .json(json!({"status": "unavailable", "reason": "store did not answer in time"})),
    }
}
