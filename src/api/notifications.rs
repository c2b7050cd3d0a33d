//! `notifications`: an account's fax mail templates, by Kazoo's teletype ids
//! (`fax_inbound_to_email`, …) or faxd's event names (`inbound_received`, …), for the
//! account's administrators. GET lists them, or shows one as it will be sent (the account's
//! own parts over the built-in ones; `custom` names the parts the account set); `Accept:
//! text/html` or `text/plain` gives that part alone. POST/PUT store the account's subject,
//! text and HTML (the parts not given fall back to the built-in ones), PATCH changes only the
//! parts given (`null`: back to the built-in part), DELETE goes back to the built-in template. A part may only use the
//! `{{name}}`s its event fills in (a typo is a 400 naming them), a subject is one line, and
//! each part has a size limit. The notifier reads the template on every delivery, so a change
//! applies to the next mail.

use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Map, Value, json};

use super::accept::named_weight;
use super::envelope::success_with;
use super::request::{account_request, json_envelope, merge_patch, param};
use super::{ApiError, ApiState, Endpoint, ep};
use crate::ids::{AccountId, Db};
use crate::notify::Event;
use crate::notify::template::{self, Template};

/// The mail templates, as Kazoo's teletype names them.
const TEMPLATES: [(&str, Event); 5] = [
    ("fax_outbound_to_email", Event::OutboundSent),
    ("fax_outbound_error_to_email", Event::OutboundFailed),
    ("fax_inbound_to_email", Event::InboundReceived),
    ("fax_inbound_error_to_email", Event::InboundFailed),
    ("fax_outbound_smtp_error_to_email", Event::SmtpError),
];

const PARTS: [&str; 3] = ["subject", "text", "html"];

/// The largest subject (characters, as RFC 5322 limits a line) and text or HTML (bytes).
const MAX_SUBJECT: usize = 998;
const MAX_BODY: usize = 256 * 1024;

pub fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    let all = "/v2/accounts/{account_id}/notifications";
    let one = "/v2/accounts/{account_id}/notifications/{notification_id}";
    vec![
        ep(M::GET, all, "The account's fax mail templates", || {
            web::get().to(list)
        }),
        ep(M::GET, one, "A fax mail template as it is sent", || {
            web::get().to(get)
        }),
        ep(M::POST, one, "Set the account's template", || {
            web::post().to(replace)
        }),
        ep(M::PUT, one, "Set the account's template", || {
            web::put().to(replace)
        }),
        ep(
            M::PATCH,
            one,
            "Change parts of the account's template",
            || web::patch().to(replace),
        ),
        ep(M::DELETE, one, "Back to the built-in template", || {
            web::delete().to(delete)
        }),
    ]
}

/// The template a path names: (Kazoo id, event).
fn named(req: &HttpRequest) -> Result<(&'static str, Event), ApiError> {
    let id = param(req, "notification_id")?;
    TEMPLATES
        .iter()
        .find(|(k, e)| *k == id || e.as_str() == id)
        .copied()
        .ok_or_else(|| ApiError::BadIdentifier(id.to_string()))
}

async fn stored(
    state: &ApiState,
    account: &AccountId,
    event: Event,
) -> Result<Option<Value>, ApiError> {
    Ok(state
        .store
        .get(&Db::Account(account.clone()), &template::override_id(event))
        .await?)
}

/// The parts an account's template document sets.
fn custom_parts(doc: Option<&Value>) -> Vec<&'static str> {
    PARTS
        .into_iter()
        .filter(|p| doc.and_then(|d| d.get(*p)).is_some_and(Value::is_string))
        .collect()
}

fn view(id: &str, event: Event, doc: Option<&Value>) -> Value {
    let Template {
        subject,
        text,
        html,
    } = template::select(event, doc).unwrap_or_default(); // every event of TEMPLATES is mailed
    json!({
        "id": id,
        "event": event.as_str(),
        "subject": subject,
        "text": text,
        "html": html,
        "custom": custom_parts(doc),
        "macros": template::names(event),
    })
}

fn answer(
    req: &HttpRequest,
    state: &ApiState,
    status: StatusCode,
    (id, event): (&str, Event),
    doc: Option<&Value>,
) -> HttpResponse {
    let mut extra = Map::new();
    if let Some(rev) = doc.and_then(|d| d.get("_rev")) {
        extra.insert("revision".into(), rev.clone());
    }
    success_with(req, &state.node, status, view(id, event, doc), extra)
}

async fn list(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let (_caller, account, _doc) = account_request(&req, &state, None).await?;
    let mut out = Vec::with_capacity(TEMPLATES.len());
    for (id, event) in TEMPLATES {
        let doc = stored(&state, &account, event).await?;
        out.push(json!({"id": id, "event": event.as_str(),
                        "custom": custom_parts(doc.as_ref())}));
    }
    Ok(super::envelope::success(&req, &state.node, json!(out)))
}

async fn get(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let (_caller, account, _doc) = account_request(&req, &state, None).await?;
    let which = named(&req)?;
    let doc = stored(&state, &account, which.1).await?;
    // Kazoo serves one part of a template by the media type named (the heavier of the two,
    // HTML on a tie); anything else gets the JSON envelope.
    let accept = req
        .headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let html = named_weight(accept, "text", "html").unwrap_or(0);
    let text = named_weight(accept, "text", "plain").unwrap_or(0);
    if html.max(text) > 0 {
        // Every event of TEMPLATES is mailed: it has a template.
        let t = template::select(which.1, doc.as_ref()).unwrap_or_default();
        let (mime, body) = if html >= text {
            ("text/html", t.html)
        } else {
            ("text/plain", t.text)
        };
        return Ok(HttpResponse::Ok()
            .content_type(format!("{mime}; charset=utf-8"))
            .body(body));
    }
    Ok(answer(&req, &state, StatusCode::OK, which, doc.as_ref()))
}

/// Checks the parts of a request: strings within their limits, a one-line subject, only
/// the event's `{{name}}`s. Every problem is reported at once.
fn validate(event: Event, parts: &Map<String, Value>) -> Result<(), ApiError> {
    let mut errors = Map::new();
    for (k, v) in parts {
        if !PARTS.contains(&k.as_str()) {
            errors.insert(
                k.clone(),
                json!({"not_allowed": {"message": "a template has subject, text and html only"}}),
            );
            continue;
        }
        // `null` takes the part back to the built-in one.
        if v.is_null() {
            continue;
        }
        let Some(s) = v.as_str() else {
            errors.insert(
                k.clone(),
                json!({"type": {"message": "Value did not match type(s): string", "target": "string"}}),
            );
            continue;
        };
        let (len, max) = if k == "subject" {
            (s.chars().count(), MAX_SUBJECT)
        } else {
            (s.len(), MAX_BODY)
        };
        if len > max {
            errors.insert(
                k.clone(),
                json!({"maxLength": {"message": format!("longer than {max}"), "target": max}}),
            );
        } else if k == "subject" && s.contains(['\r', '\n']) {
            errors.insert(
                k.clone(),
                json!({"pattern": {"message": "a subject is one line"}}),
            );
        } else {
            let unknown = template::unknown_names(event, s);
            if !unknown.is_empty() {
                errors.insert(
                    k.clone(),
                    json!({"unknown_macros": {
                        "message": format!("unknown {}; known: {}",
                            unknown.iter().map(|n| format!("{{{{{n}}}}}")).collect::<Vec<_>>().join(", "),
                            template::names(event).join(", ")),
                        "cause": unknown}}),
                );
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(Value::Object(errors)))
    }
}

async fn replace(
    req: HttpRequest,
    state: web::Data<ApiState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let env = json_envelope(&req, payload, &state).await?;
    let (_caller, account, _doc) = account_request(&req, &state, Some(&env)).await?;
    let which = named(&req)?;
    let mut parts = env.data_object()?;
    for k in ["id", "event", "custom", "macros"] {
        parts.remove(k);
    }
    validate(which.1, &parts)?;
    let current = stored(&state, &account, which.1).await?;
    // PUT/POST start from the built-in template, PATCH from the account's parts; a part
    // given as `null` goes back to the built-in one.
    let mut doc = Map::new();
    if req.method() == Method::PATCH
        && let Some(Value::Object(c)) = &current
    {
        doc.extend(
            PARTS
                .iter()
                .filter_map(|p| Some((p.to_string(), c.get(*p)?.clone()))),
        );
    }
    merge_patch(&mut doc, parts);
    doc.insert("_id".into(), json!(template::override_id(which.1)));
    doc.insert("pvt_type".into(), json!("notify_template"));
    doc.insert("pvt_modified".into(), json!(crate::time::now_gregorian()));
    if let Some(rev) = current.as_ref().and_then(|c| c.get("_rev")) {
        doc.insert("_rev".into(), rev.clone());
    }
    let saved = state
        .store
        .save(&Db::Account(account), Value::Object(doc))
        .await?;
    Ok(answer(&req, &state, StatusCode::OK, which, Some(&saved)))
}

async fn delete(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let (_caller, account, _doc) = account_request(&req, &state, None).await?;
    let which = named(&req)?;
    if let Some(doc) = stored(&state, &account, which.1).await? {
        state
            .store
            .delete(
                &Db::Account(account),
                &template::override_id(which.1),
                doc["_rev"].as_str().unwrap_or_default(),
            )
            .await?;
    }
    Ok(answer(&req, &state, StatusCode::OK, which, None))
}
