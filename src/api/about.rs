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

pub async fn healthz(state: web::Data<ApiState>) -> HttpResponse {
    match tokio::time::timeout(HEALTH_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => HttpResponse::Ok()
            .json(json!({"status": "ok", "storage": state.store.backend().as_str()})),
        Ok(Err(e)) => HttpResponse::ServiceUnavailable()
            .json(json!({"status": "unavailable", "reason": e.to_string()})),
        Err(_) => HttpResponse::ServiceUnavailable()
            .json(json!({"status": "unavailable", "reason": "store did not answer in time"})),
    }
}
