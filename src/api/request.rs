//! The request pipeline shared by every resource: reading the body within a limit, the JSON
//! envelope (`{"data": …, "auth_token", "action", …}`), query parameters, authentication
//! (token from `X-Auth-Token`, `?auth_token=` or the envelope) and authorization over the
//! account tree (a token acts on its own account and its descendants only).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpMessage, HttpRequest, web};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};

use super::auth_cache::Reads;
use super::envelope::AuthToken;
use super::token::{self, Claims};
use super::{ApiError, ApiState};
use crate::ids::{AccountId, Db};

/// Reads a request body, refusing more than `limit` bytes with a 413 (at once when the
/// declared `Content-Length` is over it) and a body that stalls longer than `idle` with a
/// 408. Either way the body is left unread and the server closes the connection.
///
/// Any body stream will do: a handler's `web::Payload` or a middleware's `dev::Payload`
/// (a middleware that reads the body must read it through here, or it is a door without a
/// deadline).
pub async fn read_body<S>(
    req: &HttpRequest,
    mut payload: S,
    limit: u64,
    idle: Duration,
) -> Result<Bytes, ApiError>
where
    S: futures_util::Stream<Item = Result<Bytes, actix_web::error::PayloadError>> + Unpin,
{
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::TooLarge(limit));
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(64 * 1024) as usize);
    loop {
        let chunk = match tokio::time::timeout(idle, payload.next()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(_) => return Err(ApiError::BodyTimeout(idle.as_secs().max(1))),
        };
        let chunk = chunk.map_err(|e| ApiError::field("body", "invalid", e.to_string()))?;
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(ApiError::TooLarge(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// The media type of a request (lower-cased, parameters dropped); empty when absent.
pub fn media_type(req: &HttpRequest) -> String {
    req.headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// Whether a media type is read as JSON: Kazoo's (a missing type counts as JSON), and the
/// form type `curl -d` sends by default (its body must still be JSON).
pub fn is_json(mt: &str) -> bool {
    matches!(
        mt,
        "" | "application/json" | "application/x-json" | "application/x-www-form-urlencoded"
    )
}

/// A parsed request envelope.
#[derive(Clone, Debug, Default)]
pub struct Envelope {
    /// `data`, `{}` when absent.
    pub data: Value,
    /// Other top-level keys, normalised (lower-case, `-` → `_`).
    pub keys: Map<String, Value>,
}

impl Envelope {
    pub fn action(&self) -> Option<&str> {
        self.keys.get("action").and_then(Value::as_str)
    }

    /// `data` as an object (an error when it is something else).
    pub fn data_object(&self) -> Result<Map<String, Value>, ApiError> {
        match &self.data {
            Value::Object(m) => Ok(m.clone()),
            _ => Err(ApiError::field(
                "data",
                "type",
                "Value did not match type(s): object",
            )),
        }
    }
}

/// Parses a JSON envelope; an empty body is `{"data": {}}`.
pub fn parse_envelope(body: &[u8]) -> Result<Envelope, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Envelope {
            data: json!({}),
            keys: Map::new(),
        });
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::Validation(json!({"json": {"invalid": {
            "message": format!("{e}"), "target": "body"}}}))
    })?;
    let Value::Object(top) = v else {
        return Err(ApiError::Validation(json!({"json": {"invalid": {
            "message": "the request body must be a JSON object {\"data\": {...}}",
            "target": "body"}}})));
    };
    let mut env = Envelope {
        data: json!({}),
        keys: Map::new(),
    };
    for (k, v) in top {
        let k = k.to_ascii_lowercase().replace('-', "_");
        if k == "data" {
            env.data = if v.is_null() { json!({}) } else { v };
        } else {
            env.keys.insert(k, v);
        }
    }
    Ok(env)
}

/// Reads and parses a JSON request body (415 for a non-JSON content type).
pub async fn json_envelope(
    req: &HttpRequest,
    payload: web::Payload,
    state: &ApiState,
) -> Result<Envelope, ApiError> {
    let mt = media_type(req);
    let body = read_body(
        req,
        payload,
        state.options.max_body_bytes,
        state.body_timeout(),
    )
    .await?;
    if !is_json(&mt) && !body.is_empty() {
        return Err(ApiError::UnsupportedMediaType(mt));
    }
    parse_envelope(&body)
}

/// Query parameters (the last value of a repeated key wins). Bad encoding is a 400.
pub fn query(req: &HttpRequest) -> Result<HashMap<String, String>, ApiError> {
    web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::field("query_string", "invalid", e.to_string()))
}

/// A path parameter.
pub fn param<'a>(req: &'a HttpRequest, name: &str) -> Result<&'a str, ApiError> {
    req.match_info().get(name).ok_or(ApiError::NotFound)
}

/// The token a request carries: `X-Auth-Token`, then `?auth_token=`, then the envelope.
pub fn token_of(req: &HttpRequest, env: Option<&Envelope>) -> Option<String> {
    let header = req
        .headers()
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let query = || query(req).ok().and_then(|q| q.get("auth_token").cloned());
    let envelope = || {
        env.and_then(|e| e.keys.get("auth_token"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    header
        .or_else(query)
        .or_else(envelope)
        .filter(|t| !t.is_empty())
}

/// Who is calling: a verified token and its account. Shared, not copied: a request hands it
/// from the authentication cache to the guard to its handler.
#[derive(Clone, Debug)]
pub struct Caller(Arc<Verified>);

impl std::ops::Deref for Caller {
    type Target = Verified;
    fn deref(&self) -> &Verified {
        &self.0
    }
}

impl From<Verified> for Caller {
    fn from(v: Verified) -> Self {
        Self(Arc::new(v))
    }
}

/// What a [`Caller`] is: the token, what it claims, and what its verification found.
#[derive(Debug)]
pub struct Verified {
    pub token: String,
    pub claims: Claims,
    pub account: AccountId,
    /// The auth account's document (from `accounts`), shared with the authentication cache.
    pub account_doc: Arc<Value>,
    pub superduper: bool,
    /// Whether the token speaks for an administrator of its account: a user with
    /// `priv_level: admin`, or the account's API key (which only admins can read).
    pub admin: bool,
}

impl Verified {
    pub fn owner_id(&self) -> Option<&str> {
        self.claims.owner_id.as_deref()
    }
}

/// Checks a token: signature, expiry, revocation, and that its account still exists, all
/// read from the store.
pub async fn check_token(state: &ApiState, token: &str) -> Result<Caller, ApiError> {
    check_token_with(state, token, Reads::Fresh).await
}

/// [`check_token`], reading the revocation record, the account and the user as `reads` says
/// (see [`super::auth_cache`] for how stale a cached one may be).
pub async fn check_token_with(
    state: &ApiState,
    token: &str,
    reads: Reads,
) -> Result<Caller, ApiError> {
    let now = chrono::Utc::now().timestamp();
    if reads == Reads::Cached
        && let Some(caller) = state.auth_cache.caller(&state.store, token).await
        && caller.claims.exp > now
    {
        return Ok(caller);
    }
    let epoch = state.auth_cache.epoch();
    let key = state.token_key().await?;
    let claims = token::verify(&key, token, now).map_err(|_| ApiError::InvalidCredentials)?;
    let revoked = token::revocation_id(&claims);
    if state
        .auth_cache
        .get(&state.store, &Db::Accounts, &revoked, reads)
        .await?
        .is_some()
    {
        return Err(ApiError::InvalidCredentials);
    }
    let account = AccountId::parse(&claims.account_id).map_err(|_| ApiError::InvalidCredentials)?;
    let doc = live_account_with(state, &account, reads)
        .await?
        .ok_or(ApiError::InvalidCredentials)?;
    if doc.get("pvt_enabled").and_then(Value::as_bool) == Some(false) {
        return Err(ApiError::InvalidCredentials);
    }
    let Some(admin) = identity_holds(state, &key, &claims, &account, &doc, reads).await? else {
        return Err(ApiError::InvalidCredentials);
    };
    let superduper = doc
        .get("pvt_superduper_admin")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let caller = Caller::from(Verified {
        token: token.to_string(),
        claims,
        account,
        account_doc: doc,
        superduper,
        admin,
    });
    if reads == Reads::Cached {
        let mut read = vec![
            (Db::Accounts, revoked),
            (Db::Accounts, caller.account.as_str().to_string()),
        ];
        if let Some(owner) = caller.owner_id() {
            read.push((Db::Account(caller.account.clone()), owner.to_string()));
        }
        state.auth_cache.keep_caller(token, &caller, epoch, &read);
    }
    Ok(caller)
}

/// The secret a token's identity is bound to: the user's password salt (a live, enabled
/// user), or the account's API key.
pub fn identity_secret(user: Option<&Value>, account_doc: &Value) -> Option<String> {
    match user {
        Some(u) => {
            let usable =
                !is_deleted(u) && u.get("enabled").and_then(Value::as_bool).unwrap_or(true);
            usable
                .then(|| {
                    u.pointer("/pvt_auth/salt")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .flatten()
        }
        None => account_doc
            .get("pvt_api_key")
            .and_then(Value::as_str)
            .map(str::to_string),
    }
}

/// Whether a token's identity still holds; `Some(admin)` when it does, `admin` telling
/// whether it speaks for an administrator of its account.
async fn identity_holds(
    state: &ApiState,
    key: &[u8],
    claims: &Claims,
    account: &AccountId,
    account_doc: &Value,
    reads: Reads,
) -> Result<Option<bool>, ApiError> {
    let user = match &claims.owner_id {
        Some(owner) => match state
            .auth_cache
            .get(&state.store, &Db::Account(account.clone()), owner, reads)
            .await?
        {
            Some(u) => Some(u),
            None => return Ok(None),
        },
        None => None,
    };
    let holds = identity_secret(user.as_deref(), account_doc)
        .is_some_and(|secret| token::identity_sig(key, &secret) == claims.identity);
    let admin = match &user {
        Some(u) => u.get("priv_level").and_then(Value::as_str) == Some("admin"),
        None => true,
    };
    Ok(holds.then_some(admin))
}

/// Authenticates a request (401 without a valid token) and records its token for the
/// response envelope. The caller [`super::authz::guard`] verified is reused.
pub async fn authenticate(
    req: &HttpRequest,
    state: &ApiState,
    env: Option<&Envelope>,
) -> Result<Caller, ApiError> {
    if let Some(caller) = req.extensions().get::<Caller>() {
        return Ok(caller.clone());
    }
    let token = token_of(req, env).ok_or(ApiError::InvalidCredentials)?;
    let caller = check_token(state, &token).await?;
    req.extensions_mut().insert(AuthToken(token));
    Ok(caller)
}

/// An account's directory document, `None` when missing or deleted.
pub async fn live_account(state: &ApiState, id: &AccountId) -> Result<Option<Value>, ApiError> {
    Ok(live_account_with(state, id, Reads::Fresh)
        .await?
        .map(Arc::unwrap_or_clone))
}

/// [`live_account`], read as `reads` says.
pub async fn live_account_with(
    state: &ApiState,
    id: &AccountId,
    reads: Reads,
) -> Result<Option<Arc<Value>>, ApiError> {
    let doc = state
        .auth_cache
        .get(&state.store, &Db::Accounts, id.as_str(), reads)
        .await?;
    Ok(doc
        .filter(|d| d.get("pvt_type").and_then(Value::as_str) == Some("account") && !is_deleted(d)))
}

pub use crate::accounts::{is_deleted, tree_of};

/// Whether `caller` may act on the account whose directory document is `doc`.
pub fn may_access(caller: &Caller, id: &AccountId, doc: &Value) -> bool {
    caller.superduper
        || &caller.account == id
        || tree_of(doc).iter().any(|a| a == caller.account.as_str())
}

/// Resolves `/accounts/{account_id}` for a caller: 404 for a malformed or missing account,
/// 403 for one outside the caller's tree. Returns the id and its directory document (the one
/// [`super::authz::guard`] resolved, when it did).
pub async fn target_account(
    req: &HttpRequest,
    state: &ApiState,
    caller: &Caller,
) -> Result<(AccountId, Arc<Value>), ApiError> {
    if let Some(t) = req.extensions().get::<super::authz::Target>() {
        return Ok((t.id.clone(), t.doc.clone()));
    }
    resolve_account(req, state, caller, Reads::Fresh).await
}

/// [`target_account`] from the store (or the authentication cache, as `reads` says).
pub async fn resolve_account(
    req: &HttpRequest,
    state: &ApiState,
    caller: &Caller,
    reads: Reads,
) -> Result<(AccountId, Arc<Value>), ApiError> {
    let raw = param(req, "account_id")?;
    let id = AccountId::parse(raw)
        .map_err(|_| ApiError::BadIdentifier(format!("invalid account_id '{raw}'")))?;
    let doc = live_account_with(state, &id, reads)
        .await?
        .ok_or_else(|| ApiError::BadIdentifier(id.to_string()))?;
    if !may_access(caller, &id, &doc) {
        return Err(ApiError::Forbidden);
    }
    Ok((id, doc))
}

/// Authenticates and resolves the account of the path in one step (the usual start of a
/// handler under `/v2/accounts/{account_id}/…`).
pub async fn account_request(
    req: &HttpRequest,
    state: &ApiState,
    env: Option<&Envelope>,
) -> Result<(Caller, AccountId, Arc<Value>), ApiError> {
    let caller = authenticate(req, state, env).await?;
    let (id, doc) = target_account(req, state, &caller).await?;
    Ok((caller, id, doc))
}

/// Removes what clients never see: `_id`, `_rev`, `_attachments`, top-level `pvt_*`; adds
/// `id`.
pub fn public(doc: &Value) -> Value {
    let Some(m) = doc.as_object() else {
        return doc.clone();
    };
    let mut out = Map::new();
    if let Some(id) = m.get("_id") {
        out.insert("id".into(), id.clone());
    }
    for (k, v) in m {
        if k.starts_with("pvt_") || (k.starts_with('_') && k != "_read_only") {
            continue;
        }
        out.insert(k.clone(), v.clone());
    }
    Value::Object(out)
}

pub use crate::schema::client_fields;

/// The private fields of a stored document (`_id`, `_rev`, `pvt_*`, `_attachments`).
pub fn private_fields(doc: &Value) -> Map<String, Value> {
    doc.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.starts_with("pvt_") || k.starts_with('_'))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// PATCH semantics: merges `patch` into `base`; `null` removes a key.
pub fn merge_patch(base: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                base.remove(&k);
            }
            Value::Object(p) => match base.get_mut(&k) {
                Some(Value::Object(b)) => merge_patch(b, p),
                _ => {
                    base.insert(k, Value::Object(p));
                }
            },
            v => {
                base.insert(k, v);
            }
        }
    }
}

pub use crate::ids::MAX_DOC_ID;

/// Loads a live document of one `pvt_type`; anything else (missing, deleted, other type, a
/// guessed id from another account's database, an absurdly long id) is 404
/// `bad_identifier`.
pub async fn load_typed(
    store: &crate::store::SharedStore,
    db: &Db,
    id: &str,
    pvt_type: &str,
) -> Result<Value, ApiError> {
    if id.is_empty() || id.len() > MAX_DOC_ID {
        return Err(ApiError::BadIdentifier(id.to_string()));
    }
    crate::accounts::live_doc(store, db, id, pvt_type)
        .await?
        .ok_or_else(|| ApiError::BadIdentifier(id.to_string()))
}

/// The live documents of one `pvt_type` in a database (none when it does not exist).
pub async fn list_typed(
    store: &crate::store::SharedStore,
    db: &Db,
    pvt_type: &str,
) -> Result<Vec<Value>, ApiError> {
    Ok(crate::accounts::live_docs(store, db, pvt_type).await?)
}

/// `(created, id, row)` of a document, for in-memory paging.
pub fn sort_key(doc: &Value, row: Value) -> (i64, String, Value) {
    (
        doc.get("pvt_created").and_then(Value::as_i64).unwrap_or(0),
        doc.get("_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        row,
    )
}
