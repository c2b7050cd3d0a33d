//! What Monster UI needs beyond the resources: `apps_store` listing the fax app (login fails
//! without it), and the two billing reads of Monster's first-use walkthrough,
//! `ledgers/total` and `limits`, answered as Kazoo answers an account without billing (a 404
//! there pops an error dialog over the fax app). `storage`, `whitelabel`, `alerts` and the
//! like are answered 404 by the router, which Monster tolerates.

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
        ep(
            Method::GET,
            &format!("{a}/ledgers/total"),
            "Ledger balance (faxd keeps no ledgers: 0)",
            || web::get().to(ledgers_total),
        ),
        ep(
            Method::GET,
            &format!("{a}/limits"),
            "Call limits (faxd keeps none: Kazoo's defaults)",
            || web::get().to(limits),
        ),
    ]
}

/// `GET …/ledgers/total`: the balance of the account's ledgers in currency units. faxd
/// records no ledger entries, so it is zero, which is what Kazoo reports for an account
/// that never had a ledger.
async fn ledgers_total(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    account_request(&req, &state, None).await?;
    Ok(super::envelope::success(
        &req,
        &state.node,
        json!({"amount": 0.0}),
    ))
}

/// `GET …/limits`: what Kazoo answers for an account without a `limits` document (faxd
/// keeps none): the document's fixed id and the schema default `allow_prepay: true`.
async fn limits(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    account_request(&req, &state, None).await?;
    Ok(super::envelope::success(
        &req,
        &state.node,
        json!({"id": "limits", "allow_prepay": true}),
    ))
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
