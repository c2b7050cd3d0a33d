//! What Monster UI needs beyond the resources: `apps_store` listing the fax app (login fails
//! without it). `storage`, `whitelabel`, `alerts` and the like are answered 404 by the router,
//! which Monster tolerates.

use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::listing::{Paging, respond_list};
use super::request::{self, account_request, param};
use super::{ApiError, ApiState, Endpoint, ep};

/// Id of the fax app in `apps_store` (stable, 32 hex).
pub const FAX_APP_ID: &str = "fa0000000000000000000000000000fa";

pub fn endpoints() -> Vec<Endpoint> {
    let a = "/v2/accounts/{account_id}";
    vec![
        ep(
            Method::GET,
            &format!("{a}/apps_store"),
            "Apps available (the fax app)",
            || web::get().to(apps_store),
        ),
        ep(
            Method::GET,
            &format!("{a}/apps_store/{{app_id}}"),
            "One app",
            || web::get().to(app),
        ),
    ]
}

fn fax_row(req: &HttpRequest, account_id: &str) -> Value {
    let app = super::user_auth::fax_app(req);
    json!({
        "id": FAX_APP_ID,
        "name": "fax",
        "i18n": {"en-US": {"label": "Fax", "description": "Send and receive faxes",
                            "extended_description": "Faxboxes, inbox and outbox"}},
        "tags": ["admin"],
        "api_url": app["api_url"],
        "source_url": "",
        "account_id": account_id,
        "users": [],
        "allowed_users": "all",
        "masqueradable": true,
        "phase": "gold",
        "extends": [],
    })
}

async fn apps_store(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let (_c, id, _a) = account_request(&req, &state, None).await?;
    let paging = Paging::from_query(&request::query(&req)?)?;
    let rows = vec![fax_row(&req, id.as_str())];
    Ok(respond_list(&req, &state, rows, None, &paging))
}

async fn app(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let (_c, id, _a) = account_request(&req, &state, None).await?;
    let app_id = param(&req, "app_id")?;
    if app_id != FAX_APP_ID {
        return Err(ApiError::BadIdentifier(app_id.to_string()));
    }
    Ok(super::envelope::success_with(
        &req,
        &state.node,
        StatusCode::OK,
        fax_row(&req, id.as_str()),
        Default::default(),
    ))
}
