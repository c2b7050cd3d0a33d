//! Authentication endpoints: `PUT /v2/user_auth` (md5/sha1 login digests with an account
//! name, realm or phone number), `PUT /v2/api_auth`, `GET`/`DELETE /v2/token_auth` (the
//! DELETE really revokes) and `POST`/`GET /v2/auth/tokeninfo`. Login ignores any token the
//! request carries (Monster sends `X-Auth-Token: undefined`).

use actix_web::http::{Method, StatusCode};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde_json::{Map, Value, json};

use super::admission::LocalAddr;
use super::envelope::{AuthToken, success, success_with};
use super::request::{self, Caller, authenticate, check_token, json_envelope, live_account};
use super::token::{self, Claims};
use super::{ApiError, ApiState, Endpoint, ep};
use crate::ids::{AccountId, Db};

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        ep(
            Method::PUT,
            "/v2/user_auth",
            "Log in with credentials",
            || web::put().to(user_auth),
        ),
        ep(
            Method::PUT,
            "/v2/api_auth",
            "Log in with an account API key",
            || web::put().to(api_auth),
        ),
        ep(
            Method::GET,
            "/v2/token_auth",
            "Describe the token in use",
            || web::get().to(token_get),
        ),
        ep(
            Method::DELETE,
            "/v2/token_auth",
            "Revoke the token in use",
            || web::delete().to(token_delete),
        ),
        ep(Method::POST, "/v2/auth/tokeninfo", "Check a token", || {
            web::post().to(tokeninfo)
        }),
        ep(
            Method::GET,
            "/v2/auth/tokeninfo",
            "Check a token (?token=)",
            || web::get().to(tokeninfo),
        ),
    ]
}

/// Lower-case alphanumerics of an account name (Kazoo's normalisation for name lookups and
/// uniqueness).
pub fn normalize_name(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Accounts matching a login locator.
async fn locate_accounts(
    state: &ApiState,
    data: &Map<String, Value>,
) -> Result<Vec<Value>, ApiError> {
    let s = |k: &str| {
        data.get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    if let Some(number) = s("phone_number") {
        let Some(e164) = crate::numbers::normalize(number) else {
            return Ok(vec![]);
        };
        let Some(owner) = super::callflows::number_owner(&state.store, &e164).await? else {
            return Ok(vec![]);
        };
        return Ok(live_account(state, &owner.0).await?.into_iter().collect());
    }
    let accounts = state.store.docs_by_type(&Db::Accounts, "account").await?;
    let live = accounts.into_iter().filter(|d| {
        !d.get("pvt_deleted")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    });
    if let Some(realm) = s("account_realm").or_else(|| s("realm")) {
        let realm = realm.to_lowercase();
        return Ok(live
            .filter(|d| {
                d.get("realm")
                    .and_then(Value::as_str)
                    .is_some_and(|r| r.to_lowercase() == realm)
            })
            .collect());
    }
    if let Some(name) = s("account_name") {
        let want = normalize_name(name);
        return Ok(live
            .filter(|d| {
                d.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| normalize_name(n) == want)
            })
            .collect());
    }
    Ok(vec![])
}

/// Finds the enabled, live user of an account whose credentials match (a Kazoo user's bare
/// digests upgraded on the way: [`crate::accounts::user_by_credentials`]).
async fn match_user(
    state: &ApiState,
    account: &AccountId,
    credentials: &str,
) -> Result<Option<Value>, ApiError> {
    Ok(crate::accounts::user_by_credentials(&state.store, account, credentials).await?)
}

fn account_enabled(doc: &Value) -> Result<(), ApiError> {
    if doc.get("pvt_enabled").and_then(Value::as_bool) == Some(false) {
        return Err(ApiError::field(
            "account",
            "disabled",
            "account is disabled",
        ));
    }
    Ok(())
}

/// The fax app row Monster's app list needs. It has no `source_url`: Monster loads an app
/// from wherever a present `source_url` points (even `""`), and the fax app is served with
/// Monster itself.
pub fn fax_app(req: &HttpRequest) -> Value {
    let conn = req.connection_info();
    // A request without a Host header is answered with the address it came in on.
    let host = match (
        req.headers().contains_key("host"),
        req.conn_data::<LocalAddr>(),
    ) {
        (false, Some(LocalAddr(local))) => local.to_string(),
        _ => conn.host().to_string(),
    };
    json!({
        "id": super::monster::FAX_APP_ID,
        "name": "fax",
        "api_url": format!("{}://{}/v2/", conn.scheme(), host),
        "label": "Fax",
    })
}

/// The `data` of a login/token answer (Kazoo's `response_auth` fields).
pub async fn auth_data(
    req: &HttpRequest,
    state: &ApiState,
    account_doc: &Value,
    owner_id: Option<&str>,
) -> Result<Value, ApiError> {
    let account_id = account_doc
        .get("_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut language = account_doc
        .get("language")
        .and_then(Value::as_str)
        .unwrap_or("en-US")
        .to_string();
    if let (Some(owner), Ok(account)) = (owner_id, AccountId::parse(account_id))
        && let Some(user) = state.store.get(&Db::Account(account), owner).await?
        && let Some(l) = user.get("language").and_then(Value::as_str)
    {
        language = l.to_string();
    }
    let tree = request::tree_of(account_doc);
    let mut data = json!({
        "account_id": account_id,
        "language": language,
        "apps": [fax_app(req)],
        "reseller_id": super::accounts::reseller_of(state, account_doc).await?,
        "is_reseller": super::accounts::is_reseller(account_doc),
        "is_master_account": tree.is_empty(),
        "capabilities": {},
    });
    if let Some(name) = account_doc.get("name").filter(|n| !n.is_null()) {
        data["account_name"] = name.clone();
    }
    if let Some(o) = owner_id {
        data["owner_id"] = json!(o);
    }
    Ok(data)
}

async fn issue(
    req: &HttpRequest,
    state: &ApiState,
    account_doc: &Value,
    owner_id: Option<&str>,
    method: &str,
) -> Result<HttpResponse, ApiError> {
    let account_id = account_doc
        .get("_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut claims = token::new_claims(account_id, owner_id, method, state.options.token_expiry_s);
    let key = state.token_key().await?;
    let user = match (owner_id, AccountId::parse(account_id)) {
        (Some(o), Ok(a)) => state.store.get(&Db::Account(a), o).await?,
        _ => None,
    };
    let secret =
        request::identity_secret(user.as_ref(), account_doc).ok_or(ApiError::InvalidCredentials)?;
    claims.identity = token::identity_sig(&key, &secret);
    let tok = token::sign(&key, &claims);
    req.extensions_mut().insert(AuthToken(tok));
    let data = auth_data(req, state, account_doc, owner_id).await?;
    Ok(success_with(
        req,
        &state.node,
        StatusCode::CREATED,
        data,
        Map::new(),
    ))
}

async fn user_auth(
    req: HttpRequest,
    state: web::Data<ApiState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let env = json_envelope(&req, payload, &state).await?;
    let data = env.data_object()?;
    let credentials = match data.get("credentials") {
        Some(Value::String(c)) if !c.is_empty() && c.len() <= 64 => c.to_ascii_lowercase(),
        Some(_) => {
            return Err(ApiError::field(
                "credentials",
                "type",
                "credentials must be md5 or sha1 of \"username:password\", in hex",
            ));
        }
        None => {
            return Err(ApiError::Validation(json!({"credentials": {"required": {
                "message": "Field is required but missing", "value": "credentials"}}})));
        }
    };
    let accounts = locate_accounts(&state, &data).await?;
    for account in &accounts {
        let Some(id) = account
            .get("_id")
            .and_then(Value::as_str)
            .and_then(|s| AccountId::parse(s).ok())
        else {
            continue;
        };
        if let Some(user) = match_user(&state, &id, &credentials).await? {
            account_enabled(account)?;
            let owner = user.get("_id").and_then(Value::as_str);
            return issue(&req, &state, account, owner, "cb_user_auth").await;
        }
    }
    log_failed_login(&req, "user_auth", &data, accounts.len());
    Err(ApiError::InvalidCredentials)
}

/// Logs a failed login: the method, the account locator and user name as the client gave
/// them (debug-escaped: no forged log lines), how many accounts matched, and the client's
/// address. Never the credentials, password or API key. A digest login does not carry the
/// user name (`credentials` hashes it with the password): `user` is then `-`.
fn log_failed_login(req: &HttpRequest, method: &str, data: &Map<String, Value>, matched: usize) {
    let field = |k: &str| {
        data.get(k)
            .and_then(Value::as_str)
            .map(|v| v.chars().take(128).collect::<String>())
    };
    let account = ["account_name", "account_realm", "realm", "phone_number"]
        .iter()
        .find_map(|k| field(k).map(|v| format!("{k}={v:?}")))
        .unwrap_or_else(|| "-".into());
    let user = field("username").map_or_else(|| "-".into(), |u| format!("{u:?}"));
    let client = req
        .peer_addr()
        .map_or_else(|| "unknown".into(), |a| a.to_string());
    tracing::warn!(
        method,
        user = %user,
        account = %account,
        accounts_matched = matched,
        client = %client,
        "login failed"
    );
}

async fn api_auth(
    req: HttpRequest,
    state: web::Data<ApiState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let env = json_envelope(&req, payload, &state).await?;
    let data = env.data_object()?;
    let key = match data.get("api_key") {
        Some(Value::String(k)) if k.len() == 64 => k.clone(),
        Some(v) => {
            return Err(ApiError::Validation(json!({"api_key": {"minLength": {
                "message": "String must be at least 64 characters", "target": 64, "value": v}}})));
        }
        None => {
            return Err(ApiError::Validation(json!({"api_key": {"required": {
                "message": "Field is required but missing", "value": "api_key"}}})));
        }
    };
    let accounts = state.store.docs_by_type(&Db::Accounts, "account").await?;
    let found = accounts.into_iter().find(|d| {
        !d.get("pvt_deleted")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            && d.get("pvt_api_key").and_then(Value::as_str) == Some(key.as_str())
    });
    match found {
        Some(account) => {
            account_enabled(&account)?;
            issue(&req, &state, &account, None, "cb_api_auth").await
        }
        None => {
            log_failed_login(&req, "api_auth", &Map::new(), 0);
            Err(ApiError::BadIdentifier("api_key".into()))
        }
    }
}

async fn describe(req: &HttpRequest, state: &ApiState, caller: &Caller) -> Result<Value, ApiError> {
    let mut data = auth_data(req, state, &caller.account_doc, caller.owner_id()).await?;
    let claims: &Claims = &caller.claims;
    data["method"] = json!(claims.method);
    data["exp"] = json!(claims.exp);
    data["iss"] = json!(claims.iss);
    Ok(data)
}

async fn token_get(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&req, &state, None).await?;
    let data = describe(&req, &state, &caller).await?;
    Ok(success(&req, &state.node, data))
}

async fn token_delete(
    req: HttpRequest,
    state: web::Data<ApiState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let env = json_envelope(&req, payload, &state).await.ok();
    let caller = authenticate(&req, &state, env.as_ref()).await?;
    token::revoke(&state.store, &caller.claims).await?;
    Ok(success(&req, &state.node, Value::Null))
}

async fn tokeninfo(
    req: HttpRequest,
    state: web::Data<ApiState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let from_body = if req.method() == Method::POST {
        let env = json_envelope(&req, payload, &state).await?;
        env.data
            .get("token")
            .and_then(Value::as_str)
            .map(str::to_string)
    } else {
        None
    };
    let token = from_body
        .or_else(|| {
            request::query(&req)
                .ok()
                .and_then(|q| q.get("token").cloned())
        })
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::NotFound)?;
    let caller = check_token(&state, &token).await?;
    req.extensions_mut().insert(AuthToken(token));
    let data = describe(&req, &state, &caller).await?;
    Ok(success(&req, &state.node, data))
}
