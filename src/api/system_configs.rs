//! `system_configs/fax` for superduper admins: GET (the stored document, its `default`
//! section completed with the defaults), POST/PUT (replace, each section validated against
//! `system_config.fax`), PATCH (merge), DELETE. Every node applies a change live.

use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Map, Value, json};

use super::envelope::success_with;
use super::request::{authenticate, json_envelope, merge_patch, param};
use super::{ApiError, ApiState, Endpoint, ep};
use crate::config::FaxConfig;
use crate::config::runtime::FAX_CATEGORY;
use crate::ids::Db;

pub fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    let one = "/v2/system_configs/{config_id}";
    vec![
        ep(
            M::GET,
            "/v2/system_configs",
            "Configuration categories",
            || web::get().to(list),
        ),
        ep(M::GET, one, "A configuration category", || {
            web::get().to(get)
        }),
        ep(M::POST, one, "Replace a category (validated)", || {
            web::post().to(replace)
        }),
        ep(M::PUT, one, "Replace a category (validated)", || {
            web::put().to(replace)
        }),
        ep(M::PATCH, one, "Merge into a category (validated)", || {
            web::patch().to(replace)
        }),
        ep(
            M::DELETE,
            one,
            "Delete a category (back to defaults)",
            || web::delete().to(delete),
        ),
    ]
}

async fn superduper(
    req: &HttpRequest,
    state: &ApiState,
    env: Option<&super::request::Envelope>,
) -> Result<(), ApiError> {
    let caller = authenticate(req, state, env).await?;
    if !caller.superduper {
        return Err(ApiError::Forbidden);
    }
    Ok(())
}

fn category(req: &HttpRequest) -> Result<&str, ApiError> {
    let id = param(req, "config_id")?;
    if id != FAX_CATEGORY {
        return Err(ApiError::BadIdentifier(id.to_string()));
    }
    Ok(id)
}

/// Public sections of a stored config document.
fn sections(doc: &Value) -> Map<String, Value> {
    doc.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !k.starts_with('_') && !k.starts_with("pvt_") && *k != "id")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn answer(req: &HttpRequest, state: &ApiState, doc: &Value, status: StatusCode) -> HttpResponse {
    let mut data = sections(doc);
    let defaults = serde_json::to_value(FaxConfig::default()).unwrap_or(json!({}));
    let mut default = defaults.as_object().cloned().unwrap_or_default();
    if let Some(Value::Object(stored)) = data.get("default") {
        default.extend(stored.clone());
    }
    data.insert("default".into(), Value::Object(default));
    data.insert("id".into(), json!(FAX_CATEGORY));
    let mut extra = Map::new();
    if let Some(rev) = doc.get("_rev") {
        extra.insert("revision".into(), rev.clone());
    }
    success_with(req, &state.node, status, Value::Object(data), extra)
}

async fn list(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    superduper(&req, &state, None).await?;
    Ok(super::envelope::success(
        &req,
        &state.node,
        json!([FAX_CATEGORY]),
    ))
}

async fn get(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    superduper(&req, &state, None).await?;
    category(&req)?;
    let doc = state
        .store
        .get(&Db::SystemConfig, FAX_CATEGORY)
        .await?
        .unwrap_or_else(|| json!({"_id": FAX_CATEGORY}));
    Ok(answer(&req, &state, &doc, StatusCode::OK))
}

/// Validates every section of a fax config against the schema and the typed config.
fn validate(sections: &Map<String, Value>, node: &str) -> Result<(), ApiError> {
    let mut errors = Map::new();
    for (name, section) in sections {
        let mut probe = section.clone();
        if !probe.is_object() {
            errors.insert(name.clone(), json!({"type": {"message": "Value did not match type(s): object", "target": "object"}}));
            continue;
        }
        if let Err(Value::Object(e)) =
            super::schema::validate_named("system_config.fax", &mut probe)
        {
            for (field, rules) in e {
                errors.insert(format!("{name}.{field}"), rules);
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(Value::Object(errors)));
    }
    let doc = Value::Object(sections.clone());
    FaxConfig::from_doc(&doc, node)
        .map_err(|e| ApiError::field("default", "invalid", e.to_string()))?;
    Ok(())
}

async fn replace(
    req: HttpRequest,
    state: web::Data<ApiState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let env = json_envelope(&req, payload, &state).await?;
    superduper(&req, &state, Some(&env)).await?;
    category(&req)?;
    let current = state.store.get(&Db::SystemConfig, FAX_CATEGORY).await?;
    let mut new_sections = env.data_object()?;
    new_sections.remove("id");
    if req.method() == Method::PATCH {
        let mut base = current.as_ref().map(sections).unwrap_or_default();
        merge_patch(&mut base, new_sections);
        new_sections = base;
    }
    if !new_sections.contains_key("default") {
        new_sections.insert("default".into(), json!({}));
    }
    validate(&new_sections, &state.node)?;
    let mut doc = new_sections;
    doc.insert("_id".into(), json!(FAX_CATEGORY));
    if let Some(rev) = current.as_ref().and_then(|c| c.get("_rev")) {
        doc.insert("_rev".into(), rev.clone());
    }
    let saved = state
        .store
        .save(&Db::SystemConfig, Value::Object(doc))
        .await?;
    state
        .sysconf
        .reload()
        .await
        .map_err(|e| ApiError::Fault(e.to_string()))?;
    Ok(answer(&req, &state, &saved, StatusCode::OK))
}

async fn delete(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    superduper(&req, &state, None).await?;
    category(&req)?;
    let doc = state
        .store
        .get(&Db::SystemConfig, FAX_CATEGORY)
        .await?
        .ok_or_else(|| ApiError::BadIdentifier(FAX_CATEGORY.into()))?;
    state
        .store
        .delete(
            &Db::SystemConfig,
            FAX_CATEGORY,
            doc["_rev"].as_str().unwrap_or_default(),
        )
        .await?;
    state
        .sysconf
        .reload()
        .await
        .map_err(|e| ApiError::Fault(e.to_string()))?;
    Ok(answer(&req, &state, &json!({}), StatusCode::OK))
}
