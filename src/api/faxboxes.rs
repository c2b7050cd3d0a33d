//! `faxboxes`: CRUD (Kazoo's `cb_faxboxes`). A faxbox lives in its account's database and, as
//! a copy, in `faxes` (where the SMTP address lookup reads it). Its generated address is
//! `<8hex>.<default_smtp_domain>` (the account → reseller → system value); a
//! `custom_smtp_email_address` must be unique system-wide.

use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Map, Value, json};

use super::listing::{respond_account_listing, respond_doc};
use super::request::{
    self, account_request, client_fields, json_envelope, list_typed, load_typed, merge_patch, param,
};
use super::{ApiError, ApiState, Endpoint, ep};
use crate::ids::{AccountId, Db, new_id};
use crate::intake::numbers::{NumberPolicy, check_texts};
use crate::store::{SharedStore, StoreError};

pub fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    let base = "/v2/accounts/{account_id}/faxboxes";
    let one = "/v2/accounts/{account_id}/faxboxes/{faxbox_id}";
    vec![
        ep(M::GET, base, "List faxboxes", || web::get().to(list)),
        ep(M::PUT, base, "Create a faxbox", || web::put().to(create)),
        ep(M::GET, one, "Get a faxbox", || web::get().to(get)),
        ep(M::POST, one, "Replace a faxbox", || web::post().to(update)),
        ep(M::PATCH, one, "Merge into a faxbox", || {
            web::patch().to(update)
        }),
        ep(M::DELETE, one, "Delete a faxbox", || {
            web::delete().to(delete)
        }),
    ]
}

/// What clients see of a faxbox: public fields plus `smtp_email_address`.
pub fn view(doc: &Value) -> Value {
    let mut out = doc.clone();
    if let Some(a) = doc.get("pvt_smtp_email_address") {
        out["smtp_email_address"] = a.clone();
    }
    out["created"] = doc.get("pvt_created").cloned().unwrap_or(json!(0));
    out
}

/// Loads a faxbox of an account (404 for any other).
pub async fn load(store: &SharedStore, account: &AccountId, id: &str) -> Result<Value, ApiError> {
    load_typed(store, &Db::Account(account.clone()), id, "faxbox").await
}

/// Text fields of a faxbox that reach the media engine, mail headers or file names.
const FAXBOX_TEXTS: [&str; 4] = [
    "name",
    "caller_name",
    "fax_header",
    "custom_smtp_email_address",
];
/// The faxbox's T.30 identity.
const FAXBOX_IDENTITIES: [&str; 1] = ["fax_identity"];

async fn validate(
    state: &ApiState,
    account: &AccountId,
    account_doc: &Value,
    data: Map<String, Value>,
    me: Option<&str>,
) -> Result<Map<String, Value>, ApiError> {
    let mut fields = client_fields(data);
    for k in [
        "smtp_email_address",
        "created",
        "cloud_state",
        "cloud_printer_id",
    ] {
        fields.remove(k);
    }
    if let Some(Value::String(c)) = fields.get("custom_smtp_email_address") {
        let lowered = c.trim().to_lowercase();
        fields.insert("custom_smtp_email_address".into(), json!(lowered));
    }
    let mut doc = Value::Object(fields);
    super::schema::validate_named("faxbox", &mut doc).map_err(ApiError::Validation)?;
    if let Value::Object(m) = &mut doc {
        check_texts(m, &FAXBOX_TEXTS, &FAXBOX_IDENTITIES)?;
        super::faxes::requested_zone("fax_timezone", m.get("fax_timezone"))?;
        if let Some(raw) = m.get("caller_id").and_then(Value::as_str) {
            let policy = NumberPolicy::for_account(&state.sysconf.fax(), account_doc);
            let e164 = policy
                .caller_id(&state.store, account, "caller_id", raw)
                .await?;
            m.insert("caller_id".into(), json!(e164));
        }
    }
    if let Some(owner) = doc.get("owner_id").and_then(Value::as_str) {
        load_typed(&state.store, &Db::Account(account.clone()), owner, "user")
            .await
            .map_err(|_| {
                ApiError::field_cause(
                    "owner_id",
                    "not_found",
                    "owner_id is not a user of this account",
                    json!(owner),
                )
            })?;
    }
    if let Some(custom) = doc.get("custom_smtp_email_address").and_then(Value::as_str)
        && let Some(hit) = state.store.faxbox_by_email(custom).await?
        && Some(hit.faxbox_id.as_str()) != me
    {
        return Err(ApiError::field_cause(
            "custom_smtp_email_address",
            "unique",
            "email address must be unique",
            json!(custom),
        ));
    }
    match doc {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::Fault("faxbox is not an object".into())),
    }
}

/// Saves the account copy, then the `faxes` copy; reverts the account copy when the second
/// save fails.
async fn save_both(
    store: &SharedStore,
    account: &AccountId,
    doc: Value,
    previous: Option<Value>,
) -> Result<Value, ApiError> {
    let db = Db::Account(account.clone());
    let saved = store.save(&db, doc).await?;
    let id = saved["_id"].as_str().unwrap_or_default().to_string();
    let mut copy = saved.clone();
    copy["pvt_account_db"] = json!("faxes");
    match store.get(&Db::Faxes, &id).await? {
        Some(existing) => copy["_rev"] = existing["_rev"].clone(),
        None => {
            if let Some(m) = copy.as_object_mut() {
                m.remove("_rev");
            }
        }
    }
    if let Err(e) = store.save(&Db::Faxes, copy).await {
        let rev = saved["_rev"].as_str().unwrap_or_default();
        let revert = match previous {
            Some(mut p) => {
                p["_rev"] = json!(rev);
                store.save(&db, p).await.map(|_| ())
            }
            None => store.delete(&db, &id, rev).await.map(|_| ()),
        };
        if let Err(re) = revert {
            tracing::error!(faxbox_id = %id, error = %re, "could not revert faxbox after a failed copy");
        }
        return Err(e.into());
    }
    Ok(saved)
}

/// Fields of a faxbox listing row: Kazoo's `faxbox/crossbar_listing` value (`id`, `name`,
/// `created`, `flags`), the exposed addresses, and the short settings a faxbox picker shows.
/// Whole documents (notifications, permission lists, unknown keys) come from `GET` of one.
const ROW_FIELDS: [&str; 11] = [
    "name",
    "created",
    "flags",
    "smtp_email_address",
    "custom_smtp_email_address",
    "caller_name",
    "caller_id",
    "fax_header",
    "fax_identity",
    "owner_id",
    "retries",
];

fn row(d: &Value) -> Value {
    let full = view(d);
    let mut row = Map::new();
    row.insert("id".into(), d.get("_id").cloned().unwrap_or(Value::Null));
    for k in ROW_FIELDS {
        if let Some(v) = full.get(k) {
            row.insert(k.into(), v.clone());
        }
    }
    Value::Object(row)
}

async fn list(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    respond_account_listing(&req, &state, "faxbox", row).await
}

async fn create(
    req: HttpRequest,
    state: web::Data<ApiState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let env = json_envelope(&req, payload, &state).await?;
    let (_c, id, account) = account_request(&req, &state, Some(&env)).await?;
    let fields = validate(&state, &id, &account, env.data_object()?, None).await?;
    let domain = state
        .sysconf
        .default_smtp_domain(&id)
        .await
        .map_err(|e| ApiError::Fault(e.to_string()))?;
    let now = crate::time::now_gregorian();
    let mut doc = Value::Object(fields);
    doc["_id"] = json!(new_id());
    doc["pvt_type"] = json!("faxbox");
    doc["pvt_account_id"] = json!(id.as_str());
    doc["pvt_account_db"] = json!(Db::Account(id.clone()).name());
    doc["pvt_reseller_id"] = json!(super::accounts::reseller_of(&state, &account).await?);
    doc["pvt_smtp_email_address"] = json!(format!("{}.{}", &new_id()[..8], domain));
    doc["pvt_created"] = json!(now);
    doc["pvt_modified"] = json!(now);
    let saved = save_both(&state.store, &id, doc, None).await?;
    Ok(respond_doc(
        &req,
        &state,
        StatusCode::CREATED,
        &view(&saved),
    ))
}

async fn get(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let (caller, id, _a) = account_request(&req, &state, None).await?;
    let doc = load(&state.store, &id, param(&req, "faxbox_id")?).await?;
    let mut out = view(&doc);
    // The webhook signing secrets are for the administrators who set them.
    if !(caller.admin || caller.superduper) {
        crate::notify::webhook::hide_secrets(&mut out);
    }
    Ok(respond_doc(&req, &state, StatusCode::OK, &out))
}

async fn update(
    req: HttpRequest,
    state: web::Data<ApiState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let env = json_envelope(&req, payload, &state).await?;
    let (_c, id, account) = account_request(&req, &state, Some(&env)).await?;
    let fb = param(&req, "faxbox_id")?;
    let current = load(&state.store, &id, fb).await?;
    let mut data = env.data_object()?;
    if req.method() == Method::PATCH {
        let mut base = client_fields(current.as_object().cloned().unwrap_or_default());
        merge_patch(&mut base, client_fields(data));
        data = base;
    }
    let fields = validate(&state, &id, &account, data, Some(fb)).await?;
    let mut doc = request::private_fields(&current);
    doc.remove("_attachments");
    doc.extend(fields);
    doc.insert("pvt_modified".into(), json!(crate::time::now_gregorian()));
    let saved = save_both(&state.store, &id, Value::Object(doc), Some(current)).await?;
    Ok(respond_doc(&req, &state, StatusCode::OK, &view(&saved)))
}

async fn delete(
    req: HttpRequest,
    state: web::Data<ApiState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let env = json_envelope(&req, payload, &state).await.ok();
    let (_c, id, _a) = account_request(&req, &state, env.as_ref()).await?;
    let fb = param(&req, "faxbox_id")?;
    let doc = load(&state.store, &id, fb).await?;
    let rev = doc["_rev"].as_str().unwrap_or_default();
    state
        .store
        .delete(&Db::Account(id.clone()), fb, rev)
        .await?;
    if let Some(copy) = state.store.get(&Db::Faxes, fb).await?
        && copy.get("pvt_account_id").and_then(Value::as_str) == Some(id.as_str())
    {
        let rev = copy["_rev"].as_str().unwrap_or_default();
        match state.store.delete(&Db::Faxes, fb, rev).await {
            Ok(_) | Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut out = view(&doc);
    out["_read_only"] = json!({"deleted": true});
    Ok(respond_doc(&req, &state, StatusCode::OK, &out))
}

/// Removes the `faxes` copies of an account's faxboxes (account deletion).
pub async fn delete_account_copies(
    store: &SharedStore,
    account: &AccountId,
) -> Result<(), ApiError> {
    for fb in list_typed(store, &Db::Account(account.clone()), "faxbox").await? {
        let Some(id) = fb.get("_id").and_then(Value::as_str) else {
            continue;
        };
        if let Some(copy) = store.get(&Db::Faxes, id).await?
            && let Some(rev) = copy.get("_rev").and_then(Value::as_str)
        {
            match store.delete(&Db::Faxes, id, rev).await {
                Ok(_) | Err(StoreError::NotFound(_)) | Err(StoreError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}
