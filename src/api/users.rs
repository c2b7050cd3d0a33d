//! `users`: CRUD in an account. The password is write-only: stored as a salted record of its
//! login digests (`pvt_auth`), never returned; usernames are lower-cased and unique in the
//! account.

use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Map, Value, json};

use super::authz::Role;
use super::listing::{respond_account_doc, respond_account_listing, respond_doc};
use super::request::{
    self, account_request, client_fields, json_envelope, list_typed, load_typed, merge_patch, param,
};
use super::{ApiError, ApiState, Endpoint, ep};
use crate::auth::PasswordRecord;
use crate::ids::{AccountId, Db, new_id};
use crate::store::SharedStore;

pub fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    let base = "/v2/accounts/{account_id}/users";
    let one = "/v2/accounts/{account_id}/users/{user_id}";
    vec![
        ep(M::GET, base, "List users", || web::get().to(list)),
        ep(M::PUT, base, "Create a user", || web::put().to(create)),
        ep(M::GET, one, "Get a user", || {
            web::get().to(|r: HttpRequest, s: web::Data<ApiState>| {
                respond_account_doc(r, s, "user_id", "user")
            })
        }),
        ep(M::POST, one, "Replace a user", || web::post().to(update)),
        ep(M::PATCH, one, "Merge into a user", || {
            web::patch().to(update)
        }),
        ep(M::DELETE, one, "Delete a user", || web::delete().to(delete)),
    ]
}

fn row(d: &Value) -> Value {
    let mut r = json!({"id": d.get("_id")});
    for k in [
        "username",
        "email",
        "first_name",
        "last_name",
        "priv_level",
        "timezone",
        "flags",
        "presence_id",
        "feature_level",
    ] {
        if let Some(v) = d.get(k) {
            r[k] = v.clone();
        }
    }
    r
}

/// Validates user fields and computes credentials. `current` is the stored user on updates.
async fn prepare(
    store: &SharedStore,
    account: &AccountId,
    data: Map<String, Value>,
    current: Option<&Value>,
) -> Result<Value, ApiError> {
    let mut fields = client_fields(data);
    let password = match fields.remove("password") {
        Some(Value::String(p)) if !p.is_empty() => Some(p),
        Some(_) => {
            return Err(ApiError::field(
                "password",
                "type",
                "Value did not match type(s): string",
            ));
        }
        None => None,
    };
    fields.remove("credentials");
    if let Some(Value::String(u)) = fields.get("username") {
        let lowered = u.to_lowercase();
        fields.insert("username".into(), json!(lowered));
    }
    let mut doc = Value::Object(fields);
    super::schema::validate_named("users", &mut doc).map_err(ApiError::Validation)?;
    let old_username = current
        .and_then(|c| c.get("username"))
        .and_then(Value::as_str);
    let mut username = doc
        .get("username")
        .and_then(Value::as_str)
        .map(str::to_string);
    if username.is_none() && password.is_some() {
        let generated = format!("user_{}", &new_id()[..16]);
        doc["username"] = json!(generated);
        username = Some(generated);
    }
    if let Some(u) = &username {
        if password.is_none() && old_username != Some(u.as_str()) {
            return Err(ApiError::field(
                "password",
                "required",
                "The password must be provided when creating / updating the user name",
            ));
        }
        let others = list_typed(store, &Db::Account(account.clone()), "user").await?;
        let me = current.and_then(|c| c.get("_id"));
        if others
            .iter()
            .any(|o| o.get("_id") != me && o.get("username").and_then(Value::as_str) == Some(u))
        {
            return Err(ApiError::field_cause(
                "username",
                "unique",
                "Username must be unique within account",
                json!(u),
            ));
        }
    }
    let mut out = match current {
        Some(c) => request::private_fields(c),
        None => Map::new(),
    };
    if let Value::Object(m) = doc {
        out.extend(m);
    }
    // New or removed credentials also end a Kazoo import's bare digests (they would
    // still log in with the old password).
    match (&username, &password) {
        (Some(u), Some(p)) => {
            out.insert("pvt_auth".into(), json!(PasswordRecord::new(u, p)));
            out.remove("pvt_md5_auth");
            out.remove("pvt_sha1_auth");
        }
        (None, _) => {
            out.remove("pvt_auth");
            out.remove("pvt_md5_auth");
            out.remove("pvt_sha1_auth");
        }
        _ => {}
    }
    Ok(Value::Object(out))
}

async fn list(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    respond_account_listing(&req, &state, "user", row).await
}

async fn create(
    req: HttpRequest,
    state: web::Data<ApiState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let env = json_envelope(&req, payload, &state).await?;
    let (_c, id, _a) = account_request(&req, &state, Some(&env)).await?;
    let saved = create_user(&state.store, &id, env.data_object()?).await?;
    Ok(respond_doc(&req, &state, StatusCode::CREATED, &saved))
}

/// Creates a user in an account with the API's validation (as `PUT …/users` and
/// `crossbar_maintenance create_account` do).
pub async fn create_user(
    store: &SharedStore,
    id: &AccountId,
    data: Map<String, Value>,
) -> Result<Value, ApiError> {
    let mut doc = prepare(store, id, data, None).await?;
    let now = crate::time::now_gregorian();
    doc["_id"] = json!(new_id());
    doc["pvt_type"] = json!("user");
    doc["pvt_account_id"] = json!(id.as_str());
    doc["pvt_account_db"] = json!(Db::Account(id.clone()).name());
    doc["pvt_created"] = json!(now);
    doc["pvt_modified"] = json!(now);
    Ok(store.save(&Db::Account(id.clone()), doc).await?)
}

async fn update(
    req: HttpRequest,
    state: web::Data<ApiState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let env = json_envelope(&req, payload, &state).await?;
    let (_c, id, _a) = account_request(&req, &state, Some(&env)).await?;
    let db = Db::Account(id.clone());
    let current = load_typed(&state.store, &db, param(&req, "user_id")?, "user").await?;
    let mut data = env.data_object()?;
    if req.method() == Method::PATCH {
        let mut base = client_fields(current.as_object().cloned().unwrap_or_default());
        merge_patch(&mut base, client_fields(data));
        data = base;
    }
    if super::authz::role(&req) != Some(Role::Admin) {
        keeps_privileges(&current, &data)?;
    }
    let mut doc = prepare(&state.store, &id, data, Some(&current)).await?;
    doc["pvt_modified"] = json!(crate::time::now_gregorian());
    let saved = state.store.save(&db, doc).await?;
    Ok(respond_doc(&req, &state, StatusCode::OK, &saved))
}

/// A plain user editing their own document may not change what only admins decide: their
/// `priv_level` (default `user`) and `enabled` (default `true`). Sending the current values
/// back, as Monster does with the whole document, is fine.
fn keeps_privileges(current: &Value, data: &Map<String, Value>) -> Result<(), ApiError> {
    let level = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("user").to_string();
    let enabled = |v: Option<&Value>| v.and_then(Value::as_bool).unwrap_or(true);
    if level(data.get("priv_level")) != level(current.get("priv_level")) {
        return Err(ApiError::ForbiddenCause(
            "only an account admin may change priv_level".into(),
        ));
    }
    if enabled(data.get("enabled")) != enabled(current.get("enabled")) {
        return Err(ApiError::ForbiddenCause(
            "only an account admin may enable or disable a user".into(),
        ));
    }
    Ok(())
}

async fn delete(
    req: HttpRequest,
    state: web::Data<ApiState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let env = json_envelope(&req, payload, &state).await.ok();
    let (_c, id, _a) = account_request(&req, &state, env.as_ref()).await?;
    let db = Db::Account(id);
    let mut doc = load_typed(&state.store, &db, param(&req, "user_id")?, "user").await?;
    doc["pvt_deleted"] = json!(true);
    doc["pvt_modified"] = json!(crate::time::now_gregorian());
    let mut saved = state.store.save(&db, doc).await?;
    saved["_read_only"] = json!({"deleted": true});
    Ok(respond_doc(&req, &state, StatusCode::OK, &saved))
}
