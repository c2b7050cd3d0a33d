//! `accounts`: create a child (`PUT /v2/accounts[/{id}]`), get, update, patch, delete,
//! `children`, `descendants`, `api_key`. Each account document lives in its own database and
//! in the `accounts` directory (the copy the API reads for tree checks and lookups).

use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Map, Value, json};

use super::listing::{Paging, page_in_memory, respond_doc, respond_list};
use super::request::{
    self, Caller, account_request, authenticate, client_fields, json_envelope, merge_patch, tree_of,
};
use super::user_auth::normalize_name;
use super::{ApiError, ApiState, Endpoint, ep};
use crate::ids::{AccountId, Db, new_id};
use crate::intake::numbers::ALLOW_ANY_CALLER_ID;
use crate::store::{SharedStore, StoreError};

pub fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    let a = "/v2/accounts/{account_id}";
    vec![
        ep(
            M::PUT,
            "/v2/accounts",
            "Create a child of the caller's account",
            || web::put().to(create_top),
        ),
        ep(
            M::GET,
            "/v2/accounts",
            "Not allowed (405), as in Kazoo",
            || web::get().to(super::method_not_allowed),
        ),
        ep(M::PUT, a, "Create a child account", || {
            web::put().to(create_child)
        }),
        ep(M::GET, a, "Get an account", || web::get().to(get)),
        ep(M::POST, a, "Replace an account's public fields", || {
            web::post().to(update)
        }),
        ep(M::PATCH, a, "Merge into an account", || {
            web::patch().to(update)
        }),
        ep(
            M::DELETE,
            a,
            "Delete an account without descendants",
            || web::delete().to(delete),
        ),
        ep(M::GET, &format!("{a}/children"), "Direct children", || {
            web::get().to(children)
        }),
        ep(
            M::GET,
            &format!("{a}/descendants"),
            "All descendants",
            || web::get().to(descendants),
        ),
        ep(
            M::GET,
            &format!("{a}/api_key"),
            "The account's API key",
            || web::get().to(api_key_get),
        ),
        ep(
            M::PUT,
            &format!("{a}/api_key"),
            "Regenerate the API key (admins)",
            || web::put().to(api_key_put),
        ),
    ]
}

pub use crate::accounts::is_reseller;

/// The nearest reseller ancestor, else the root of the tree, else the account itself.
pub async fn reseller_of(state: &ApiState, doc: &Value) -> Result<String, ApiError> {
    Ok(crate::accounts::reseller_of(&state.store, doc).await?)
}

/// What clients see of an account: public fields plus the synthesised ones.
pub fn view(doc: &Value) -> Value {
    let mut out = doc.clone();
    let b = |k: &str| doc.get(k).and_then(Value::as_bool).unwrap_or(false);
    out["superduper_admin"] = json!(b("pvt_superduper_admin"));
    out["enabled"] = json!(
        doc.get("pvt_enabled")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    );
    out["created"] = doc.get("pvt_created").cloned().unwrap_or(json!(0));
    out["is_reseller"] = json!(is_reseller(doc));
    out["billing_mode"] = json!("manual");
    out["fax_allow_any_caller_id"] = json!(b(ALLOW_ANY_CALLER_ID));
    out
}

/// Rejects a name or realm another live account already uses (`except` = the account being
/// updated).
async fn check_unique(
    store: &SharedStore,
    name: Option<&str>,
    realm: Option<&str>,
    except: Option<&str>,
) -> Result<(), ApiError> {
    let all = store.docs_by_type(&Db::Accounts, "account").await?;
    let others = all.iter().filter(|d| {
        d.get("_id").and_then(Value::as_str) != except
            && !d
                .get("pvt_deleted")
                .and_then(Value::as_bool)
                .unwrap_or(false)
    });
    let mut errors = Map::new();
    for d in others {
        if let Some(n) = name
            && d.get("name")
                .and_then(Value::as_str)
                .is_some_and(|x| normalize_name(x) == normalize_name(n))
        {
            errors.insert(
                "name".into(),
                json!({"unique": {"message": "Account name already in use", "cause": n}}),
            );
        }
        if let Some(r) = realm
            && d.get("realm")
                .and_then(Value::as_str)
                .is_some_and(|x| x.eq_ignore_ascii_case(r))
        {
            errors.insert(
                "realm".into(),
                json!({"unique": {"message": "Account realm already in use", "cause": r}}),
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(Value::Object(errors)))
    }
}

/// Validates public account fields (schema, realm clean-up), filling defaults.
fn validate(data: Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    let mut doc = Value::Object(client_fields(data));
    if let Some(r) = doc.get("realm").and_then(Value::as_str) {
        let cleaned: String = r.chars().filter(|c| !c.is_whitespace()).collect();
        doc["realm"] = json!(cleaned.to_lowercase());
    }
    super::schema::validate_named("accounts", &mut doc).map_err(ApiError::Validation)?;
    let Value::Object(mut m) = doc else {
        return Err(ApiError::Fault("account is not an object".into()));
    };
    m.remove("enabled");
    for k in [
        "superduper_admin",
        "created",
        "is_reseller",
        "billing_mode",
        "reseller_id",
        "api_key",
        "fax_allow_any_caller_id",
    ] {
        m.remove(k);
    }
    Ok(m)
}

/// Creates an account under `parent` (its directory document), as `PUT /v2/accounts/{P}`
/// does and `crossbar_maintenance create_account`: validation, unique name and realm, the
/// account database, both copies of the document.
pub async fn create_account(
    store: &SharedStore,
    parent: Option<&Value>,
    data: Map<String, Value>,
) -> Result<Value, ApiError> {
    let enabled = data.get("enabled").and_then(Value::as_bool);
    let mut fields = validate(data)?;
    if !fields.contains_key("realm") {
        fields.insert(
            "realm".into(),
            json!(format!("{}.sip.faxd.local", &new_id()[..6])),
        );
    }
    check_unique(
        store,
        fields.get("name").and_then(Value::as_str),
        fields.get("realm").and_then(Value::as_str),
        None,
    )
    .await?;
    let id = AccountId::generate();
    let db = Db::Account(id.clone());
    let (tree, parent_enabled) = match parent {
        Some(p) => {
            let mut t = tree_of(p);
            t.push(
                p.get("_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            );
            (
                t,
                p.get("pvt_enabled")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
            )
        }
        None => (vec![], true),
    };
    let now = crate::time::now_gregorian();
    let mut doc = fields;
    let private = json!({
        "_id": id.as_str(),
        "pvt_type": "account",
        "pvt_account_id": id.as_str(),
        "pvt_account_db": db.name(),
        "pvt_tree": tree,
        "pvt_enabled": enabled.unwrap_or(parent_enabled),
        "pvt_superduper_admin": false,
        "pvt_api_key": format!("{}{}", new_id(), new_id()),
        "pvt_alphanum_name": normalize_name(doc.get("name").and_then(Value::as_str).unwrap_or_default()),
        "pvt_created": now,
        "pvt_modified": now,
    });
    if let Value::Object(p) = private {
        doc.extend(p);
    }
    let doc = Value::Object(doc);
    store.ensure_db(&db).await?;
    store.save(&db, doc.clone()).await?;
    Ok(store.save(&Db::Accounts, doc).await?)
}

async fn create_top(
    req: HttpRequest,
    state: web::Data<ApiState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let env = json_envelope(&req, payload, &state).await?;
    let caller = authenticate(&req, &state, Some(&env)).await?;
    let parent = caller.account_doc.clone();
    let saved = create_account(&state.store, Some(&parent), env.data_object()?).await?;
    Ok(respond_doc(
        &req,
        &state,
        StatusCode::CREATED,
        &view(&saved),
    ))
}

async fn create_child(
    req: HttpRequest,
    state: web::Data<ApiState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let env = json_envelope(&req, payload, &state).await?;
    let (_caller, _id, parent) = account_request(&req, &state, Some(&env)).await?;
    let saved = create_account(&state.store, Some(&parent), env.data_object()?).await?;
    Ok(respond_doc(
        &req,
        &state,
        StatusCode::CREATED,
        &view(&saved),
    ))
}

async fn get(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let (_caller, _id, doc) = account_request(&req, &state, None).await?;
    Ok(respond_doc(&req, &state, StatusCode::OK, &view(&doc)))
}

/// Whether the caller is an ancestor of the account (only ancestors may change `enabled`).
fn is_ancestor(caller: &Caller, doc: &Value) -> bool {
    tree_of(doc).iter().any(|a| a == caller.account.as_str())
        || (caller.superduper && caller.account.as_str() != doc["_id"].as_str().unwrap_or(""))
}

async fn update(
    req: HttpRequest,
    state: web::Data<ApiState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let env = json_envelope(&req, payload, &state).await?;
    let (caller, id, current) = account_request(&req, &state, Some(&env)).await?;
    let data = env.data_object()?;
    let mut public = if req.method() == Method::PATCH {
        let mut base = client_fields(current.as_object().cloned().unwrap_or_default());
        merge_patch(&mut base, client_fields(data));
        base
    } else {
        data
    };
    let enabled = public.remove("enabled").and_then(|v| v.as_bool());
    let allow_any = public.remove("fax_allow_any_caller_id");
    let fields = validate(public)?;
    check_unique(
        &state.store,
        fields.get("name").and_then(Value::as_str),
        fields.get("realm").and_then(Value::as_str),
        Some(id.as_str()),
    )
    .await?;
    let mut doc = request::private_fields(&current);
    doc.extend(fields);
    if let Some(e) = enabled
        && is_ancestor(&caller, &current)
    {
        doc.insert("pvt_enabled".into(), json!(e));
    }
    if let Some(v) = allow_any {
        set_allow_any_caller_id(&caller, &current, &mut doc, &v)?;
    }
    doc.insert("pvt_modified".into(), json!(crate::time::now_gregorian()));
    let saved = save_both(&state.store, &id, Value::Object(doc)).await?;
    Ok(respond_doc(&req, &state, StatusCode::OK, &view(&saved)))
}

/// `fax_allow_any_caller_id`: whether the account may send faxes and set faxbox caller ids
/// with numbers it does not own. Only an admin user of an ancestor account (or a superduper
/// admin) may change it, as a carrier decides it for its customer; the same value is accepted
/// from anyone (a client sending back what it read).
fn set_allow_any_caller_id(
    caller: &Caller,
    current: &Value,
    doc: &mut Map<String, Value>,
    wanted: &Value,
) -> Result<(), ApiError> {
    let want = wanted.as_bool().ok_or_else(|| {
        ApiError::field_cause(
            "fax_allow_any_caller_id",
            "type",
            "Value did not match type(s): boolean",
            wanted.clone(),
        )
    })?;
    let have = current
        .get(ALLOW_ANY_CALLER_ID)
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if want == have {
        return Ok(());
    }
    if !((is_ancestor(caller, current) || caller.superduper) && caller.admin) {
        return Err(ApiError::Forbidden);
    }
    doc.insert(ALLOW_ANY_CALLER_ID.into(), json!(want));
    Ok(())
}

/// Saves an account document to the directory (at the given `_rev`) and to its own database
/// (at that copy's current revision).
pub async fn save_both(store: &SharedStore, id: &AccountId, doc: Value) -> Result<Value, ApiError> {
    let saved = store.save(&Db::Accounts, doc.clone()).await?;
    let db = Db::Account(id.clone());
    let mut copy = doc;
    match store.get(&db, id.as_str()).await {
        Ok(Some(own)) => copy["_rev"] = own["_rev"].clone(),
        Ok(None) => {
            if let Some(m) = copy.as_object_mut() {
                m.remove("_rev");
            }
        }
        Err(StoreError::NoDatabase(_)) => return Ok(saved),
        Err(e) => return Err(e.into()),
    }
    store.save(&db, copy).await?;
    Ok(saved)
}

async fn delete(
    req: HttpRequest,
    state: web::Data<ApiState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let env = json_envelope(&req, payload, &state).await.ok();
    let (_caller, id, doc) = account_request(&req, &state, env.as_ref()).await?;
    if tree_of(&doc).is_empty() {
        return Err(ApiError::InvalidMethod);
    }
    let all = state.store.docs_by_type(&Db::Accounts, "account").await?;
    if all.iter().any(|d| {
        !d.get("pvt_deleted")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            && tree_of(d).iter().any(|a| a == id.as_str())
    }) {
        return Err(ApiError::Fault("account_has_descendants".into()));
    }
    crate::accounts::release_account_numbers(&state.store, &id).await?;
    super::faxboxes::delete_account_copies(&state.store, &id).await?;
    let mut gone = (*doc).clone();
    gone["pvt_deleted"] = json!(true);
    gone["pvt_modified"] = json!(crate::time::now_gregorian());
    state.store.save(&Db::Accounts, gone).await?;
    state.store.delete_db(&Db::Account(id.clone())).await?;
    let mut out = view(&doc);
    out["_read_only"] = json!({"deleted": true});
    Ok(respond_doc(&req, &state, StatusCode::OK, &out))
}

fn account_row(d: &Value, extra: &[&str]) -> Value {
    let mut row = json!({
        "id": d.get("_id"),
        "name": d.get("name"),
        "realm": d.get("realm"),
        "flags": d.get("flags").cloned().unwrap_or(json!([])),
    });
    for k in extra {
        if *k == "tree" {
            row["tree"] = json!(tree_of(d));
        }
    }
    row
}

async fn tree_listing(
    req: HttpRequest,
    state: web::Data<ApiState>,
    direct: bool,
) -> Result<HttpResponse, ApiError> {
    let (_caller, id, _doc) = account_request(&req, &state, None).await?;
    let paging = Paging::from_query(&request::query(&req)?)?;
    let all = state.store.docs_by_type(&Db::Accounts, "account").await?;
    let live: Vec<&Value> = all
        .iter()
        .filter(|d| {
            !d.get("pvt_deleted")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        })
        .collect();
    let rows = live
        .iter()
        .filter(|d| {
            let t = tree_of(d);
            if direct {
                t.last().map(String::as_str) == Some(id.as_str())
            } else {
                t.iter().any(|a| a == id.as_str())
            }
        })
        .filter(|d| paging.keeps(d))
        .map(|d| {
            let mut row = account_row(d, if direct { &[] } else { &["tree"] });
            if direct {
                let me = d["_id"].as_str().unwrap_or_default();
                let count = live
                    .iter()
                    .filter(|x| tree_of(x).iter().any(|a| a == me))
                    .count();
                row["descendants_count"] = json!(count);
            }
            (
                d.get("pvt_created").and_then(Value::as_i64).unwrap_or(0),
                d["_id"].as_str().unwrap_or_default().to_string(),
                row,
            )
        })
        .collect();
    let (rows, next) = page_in_memory(rows, &paging);
    Ok(respond_list(&req, &state, rows, next, &paging))
}

async fn children(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    tree_listing(req, state, true).await
}

async fn descendants(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    tree_listing(req, state, false).await
}

async fn api_key_get(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let (_caller, _id, doc) = account_request(&req, &state, None).await?;
    let key = doc.get("pvt_api_key").cloned().unwrap_or(Value::Null);
    Ok(super::envelope::success(
        &req,
        &state.node,
        json!({"api_key": key}),
    ))
}

/// Whether the caller is a user with `priv_level: admin` (an API-key token is not: it cannot
/// replace the key it was issued with, as in Kazoo).
pub fn caller_is_admin_user(caller: &Caller) -> bool {
    caller.admin && caller.owner_id().is_some()
}

async fn api_key_put(
    req: HttpRequest,
    state: web::Data<ApiState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let env = json_envelope(&req, payload, &state).await?;
    let (caller, id, doc) = account_request(&req, &state, Some(&env)).await?;
    if !caller_is_admin_user(&caller) {
        return Err(ApiError::Forbidden);
    }
    let mut doc = std::sync::Arc::unwrap_or_clone(doc);
    let key = format!("{}{}", new_id(), new_id());
    doc["pvt_api_key"] = json!(key);
    save_both(&state.store, &id, doc).await?;
    let mut res = super::envelope::success(&req, &state.node, json!({"api_key": key}));
    *res.status_mut() = StatusCode::CREATED;
    Ok(res)
}
