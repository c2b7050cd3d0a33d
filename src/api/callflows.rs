//! `callflows`: CRUD with `numbers` (normalised to E.164, unique across the whole system) and
//! a `flow` whose fax modules are checked: `faxbox` (`data.id`, a faxbox of the account) and
//! `receive_fax` (`data.owner_id`, a user of the account).
//!
//! System-wide uniqueness: each number is claimed for its callflow ([`accounts::claim_numbers`]),
//! so two concurrent claims cannot both win.

use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Map, Value, json};

use super::listing::{respond_account_doc, respond_account_listing, respond_doc};
use super::request::{
    self, account_request, client_fields, json_envelope, load_typed, merge_patch, param,
};
use super::{ApiError, ApiState, Endpoint, ep};
use crate::accounts::{self, numbers_of};
use crate::ids::{AccountId, Db, new_id};
use crate::store::SharedStore;

pub fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    let base = "/v2/accounts/{account_id}/callflows";
    let one = "/v2/accounts/{account_id}/callflows/{callflow_id}";
    vec![
        ep(M::GET, base, "List callflows", || web::get().to(list)),
        ep(M::PUT, base, "Create a callflow", || web::put().to(create)),
        ep(M::GET, one, "Get a callflow", || {
            web::get().to(|r: HttpRequest, s: web::Data<ApiState>| {
                respond_account_doc(r, s, "callflow_id", "callflow")
            })
        }),
        ep(M::POST, one, "Replace a callflow", || {
            web::post().to(update)
        }),
        ep(M::PATCH, one, "Merge into a callflow", || {
            web::patch().to(update)
        }),
        ep(M::DELETE, one, "Delete a callflow", || {
            web::delete().to(delete)
        }),
    ]
}

/// The account and callflow that own a number (E.164), if any: how an inbound call finds its
/// callflow.
pub async fn number_owner(
    store: &SharedStore,
    number: &str,
) -> Result<Option<(AccountId, String)>, ApiError> {
    Ok(accounts::number_owner(store, number).await?)
}

/// Claims numbers for a callflow; on a clash answers 400 `numbers.unique`.
async fn claim(
    store: &SharedStore,
    account: &AccountId,
    callflow_id: &str,
    numbers: &[String],
) -> Result<(), ApiError> {
    Ok(accounts::claim_numbers(store, account, callflow_id, numbers).await?)
}

/// Releases numbers claimed by a callflow.
async fn release(
    store: &SharedStore,
    numbers: &[String],
    callflow_id: &str,
) -> Result<(), ApiError> {
    Ok(accounts::release_numbers(store, numbers, callflow_id).await?)
}

/// Checks the fax modules of a flow (and its children) against the account.
fn check_flow<'a>(
    store: &'a SharedStore,
    account: &'a AccountId,
    flow: &'a Value,
    path: String,
) -> futures_util::future::BoxFuture<'a, Result<(), ApiError>> {
    Box::pin(async move {
        let module = flow
            .get("module")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let data = flow.get("data").cloned().unwrap_or(json!({}));
        let db = Db::Account(account.clone());
        match module {
            "faxbox" => {
                let id = data
                    .get("id")
                    .or_else(|| data.get("faxbox_id"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ApiError::field(
                            &format!("{path}.data.id"),
                            "required",
                            "faxbox module needs data.id",
                        )
                    })?;
                load_typed(store, &db, id, "faxbox").await.map_err(|_| {
                    ApiError::field_cause(
                        &format!("{path}.data.id"),
                        "not_found",
                        "data.id is not a faxbox of this account",
                        json!(id),
                    )
                })?;
            }
            "receive_fax" => {
                if let Some(owner) = data.get("owner_id").and_then(Value::as_str) {
                    load_typed(store, &db, owner, "user").await.map_err(|_| {
                        ApiError::field_cause(
                            &format!("{path}.data.owner_id"),
                            "not_found",
                            "data.owner_id is not a user of this account",
                            json!(owner),
                        )
                    })?;
                }
            }
            _ => {}
        }
        if let Some(children) = flow.get("children").and_then(Value::as_object) {
            for (branch, child) in children {
                check_flow(store, account, child, format!("{path}.children.{branch}")).await?;
            }
        }
        Ok(())
    })
}

async fn validate(
    store: &SharedStore,
    account: &AccountId,
    data: Map<String, Value>,
) -> Result<Value, ApiError> {
    let mut doc = Value::Object(client_fields(data));
    super::schema::validate_named("callflows", &mut doc).map_err(ApiError::Validation)?;
    let mut numbers = Vec::new();
    for n in numbers_of(&doc) {
        let norm = crate::numbers::callflow_number(&n).ok_or_else(|| {
            ApiError::field_cause(
                "numbers",
                "invalid",
                format!("{n} is not a valid number"),
                json!(n),
            )
        })?;
        if !numbers.contains(&norm) {
            numbers.push(norm);
        }
    }
    let patterns = doc
        .get("patterns")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if numbers.is_empty() && patterns == 0 {
        return Err(ApiError::field(
            "numbers",
            "required",
            "Callflows must be assigned at least one number or pattern",
        ));
    }
    doc["numbers"] = json!(numbers);
    let flow = doc.get("flow").cloned().unwrap_or(json!({}));
    check_flow(store, account, &flow, "flow".into()).await?;
    Ok(doc)
}

fn row(d: &Value) -> Value {
    let mut modules = Vec::new();
    collect_modules(d.get("flow").unwrap_or(&Value::Null), &mut modules);
    json!({
        "id": d.get("_id"),
        "name": d.get("name"),
        "type": d.get("type"),
        "numbers": d.get("numbers").cloned().unwrap_or(json!([])),
        "patterns": d.get("patterns").cloned().unwrap_or(json!([])),
        "featurecode": d.get("featurecode").cloned().unwrap_or(json!(false)),
        "owner_id": d.get("owner_id"),
        "modules": modules,
        "flags": d.get("flags").cloned().unwrap_or(json!([])),
    })
}

fn collect_modules(flow: &Value, out: &mut Vec<String>) {
    if let Some(m) = flow.get("module").and_then(Value::as_str)
        && !out.iter().any(|x| x == m)
    {
        out.push(m.to_string());
    }
    if let Some(children) = flow.get("children").and_then(Value::as_object) {
        for c in children.values() {
            collect_modules(c, out);
        }
    }
}

async fn list(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    respond_account_listing(&req, &state, "callflow", row).await
}

async fn create(
    req: HttpRequest,
    state: web::Data<ApiState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let env = json_envelope(&req, payload, &state).await?;
    let (_c, id, _a) = account_request(&req, &state, Some(&env)).await?;
    let mut doc = validate(&state.store, &id, env.data_object()?).await?;
    let cf_id = new_id();
    claim(&state.store, &id, &cf_id, &numbers_of(&doc)).await?;
    let now = crate::time::now_gregorian();
    doc["_id"] = json!(cf_id);
    doc["pvt_type"] = json!("callflow");
    doc["pvt_account_id"] = json!(id.as_str());
    doc["pvt_account_db"] = json!(Db::Account(id.clone()).name());
    doc["pvt_created"] = json!(now);
    doc["pvt_modified"] = json!(now);
    match state.store.save(&Db::Account(id), doc.clone()).await {
        Ok(saved) => Ok(respond_doc(&req, &state, StatusCode::CREATED, &saved)),
        Err(e) => {
            release(&state.store, &numbers_of(&doc), &cf_id).await?;
            Err(e.into())
        }
    }
}

async fn update(
    req: HttpRequest,
    state: web::Data<ApiState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let env = json_envelope(&req, payload, &state).await?;
    let (_c, id, _a) = account_request(&req, &state, Some(&env)).await?;
    let db = Db::Account(id.clone());
    let cf_id = param(&req, "callflow_id")?;
    let current = load_typed(&state.store, &db, cf_id, "callflow").await?;
    let mut data = env.data_object()?;
    if req.method() == Method::PATCH {
        let mut base = client_fields(current.as_object().cloned().unwrap_or_default());
        merge_patch(&mut base, client_fields(data));
        data = base;
    }
    let fields = validate(&state.store, &id, data).await?;
    let new_numbers = numbers_of(&fields);
    let old_numbers = numbers_of(&current);
    let added: Vec<String> = new_numbers
        .iter()
        .filter(|n| !old_numbers.contains(n))
        .cloned()
        .collect();
    let removed: Vec<String> = old_numbers
        .iter()
        .filter(|n| !new_numbers.contains(n))
        .cloned()
        .collect();
    claim(&state.store, &id, cf_id, &added).await?;
    let mut doc = request::private_fields(&current);
    if let Value::Object(m) = fields {
        doc.extend(m);
    }
    doc.insert("pvt_modified".into(), json!(crate::time::now_gregorian()));
    match state.store.save(&db, Value::Object(doc)).await {
        Ok(saved) => {
            release(&state.store, &removed, cf_id).await?;
            Ok(respond_doc(&req, &state, StatusCode::OK, &saved))
        }
        Err(e) => {
            release(&state.store, &added, cf_id).await?;
            Err(e.into())
        }
    }
}

async fn delete(
    req: HttpRequest,
    state: web::Data<ApiState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let env = json_envelope(&req, payload, &state).await.ok();
    let (_c, id, _a) = account_request(&req, &state, env.as_ref()).await?;
    let db = Db::Account(id);
    let cf_id = param(&req, "callflow_id")?;
    let mut doc = load_typed(&state.store, &db, cf_id, "callflow").await?;
    doc["pvt_deleted"] = json!(true);
    doc["pvt_modified"] = json!(crate::time::now_gregorian());
    let mut saved = state.store.save(&db, doc).await?;
    release(&state.store, &numbers_of(&saved), cf_id).await?;
    saved["_read_only"] = json!({"deleted": true});
    Ok(respond_doc(&req, &state, StatusCode::OK, &saved))
}
