//! `GET /v2/openapi.json`: an OpenAPI 3 document of every route, generated from the same
//! table that mounts them ([`super::endpoints`]), so it cannot drift from what is served.
//! Each operation says who may call it (`x-faxd-access`, from [`super::authz::access`]).

use actix_web::{HttpResponse, web};
use serde_json::{Map, Value, json};

use super::ApiState;

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for e in super::endpoints() {
        let params: Vec<Value> = e
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true,
                                "schema": {"type": "string"}})
            })
            .collect();
        let mut op = json!({
            "summary": e.summary,
            "operationId": format!("{}{}", e.method.as_str().to_lowercase(),
                e.path.replace(['/', '{', '}', '.'], "_")),
            "parameters": params,
            "responses": {
                "default": {"description": "Kazoo envelope: {data, status, request_id, auth_token, …}"},
                "429": {
                    "description": "Rate limit ([api.rate_limit]): Kazoo's too_many_requests envelope",
                    "headers": {"Retry-After": {"description": "seconds until a retry can pass",
                        "schema": {"type": "integer"}}},
                },
            },
        });
        // Who may call it, from the role table the server enforces.
        let access = super::authz::access(&e.method, &e.path);
        op["x-faxd-access"] = json!(access.name());
        if access != super::authz::Access::Public {
            op["security"] = json!([{"token": []}]);
        }
        let entry = paths.entry(e.path.clone()).or_insert_with(|| json!({}));
        entry[e.method.as_str().to_lowercase()] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "faxd REST API (Kazoo v2 compatible)", "version": super::envelope::VERSION},
        "components": {"securitySchemes": {
            "token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}}},
        "paths": paths,
    })
}

pub async fn openapi(_state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document().to_string())
}
