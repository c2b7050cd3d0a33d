//! `faxes` (Kazoo's `cb_faxes`): submit (JSON with `document.url`, multipart, raw PDF/TIFF),
//! `outgoing` (queued jobs; DELETE cancels), `outbox`/`inbox`/`incoming` (MODB, by folder),
//! attachments with format negotiation, resubmit/forward, `smtplog`. Every route is also
//! served under `/faxboxes/{faxbox_id}/faxes` and `/users/{user_id}/faxes`, scoped to that box
//! or owner.

use actix_web::http::header::{CONTENT_DISPOSITION, ETAG, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Map, Value, json};

use super::accept::{self, Negotiated, Wanted};
use super::envelope::{Member, success_with};
use super::listing::{
    Paging, fill_page, page_in_memory, respond_doc, respond_list, respond_rows, scan_filtered,
};
use super::request::{
    self, account_request, is_json, load_typed, media_type, param, parse_envelope, read_body,
};
use super::{ApiError, ApiState, Endpoint, ep};
use crate::accounts::{Account, Faxbox};
use crate::ids::{AccountId, Db, split_modb_doc_id};
use crate::intake::{self, Document, IntakeError, multipart, submit};
use crate::model::{Folder, JobStatus};
use crate::store::{CreatedRange, Cursor, JobRow, Listing, ModbFilter, ModbRow, Page, SmtpLogRow};
use crate::timezone;

/// The three places the fax routes are mounted.
pub const PREFIXES: [&str; 3] = [
    "/v2/accounts/{account_id}/faxes",
    "/v2/accounts/{account_id}/faxboxes/{faxbox_id}/faxes",
    "/v2/accounts/{account_id}/users/{user_id}/faxes",
];

/// How the routes of one MODB folder read in the route table.
struct FolderRoutes {
    folder: Folder,
    list: &'static str,
    one: &'static str,
    copy: &'static str,
    delete: &'static str,
    download: &'static str,
    strip: &'static str,
}

const FOLDER_ROUTES: [FolderRoutes; 2] = [
    FolderRoutes {
        folder: Folder::Outbox,
        list: "Sent and failed faxes",
        one: "A sent fax",
        copy: "Resubmit a sent fax ({\"action\":\"resubmit\"})",
        delete: "Delete a sent fax",
        download: "Download a sent fax",
        strip: "Remove a sent fax's documents",
    },
    FolderRoutes {
        folder: Folder::Inbox,
        list: "Received faxes",
        one: "A received fax",
        copy: "Forward a received fax ({\"action\":\"forward\"})",
        delete: "Delete a received fax",
        download: "Download a received fax",
        strip: "Remove a received fax's documents",
    },
];

type Req = HttpRequest;
type State = web::Data<ApiState>;

/// The routes of one folder under `base` (`…/outbox` or `…/inbox`).
fn folder_endpoints(base: &str, f: &FolderRoutes) -> [Endpoint; 6] {
    use Method as M;
    let folder = f.folder;
    let one = format!("{base}/{{fax_id}}");
    let file = format!("{one}/attachment");
    [
        ep(M::GET, base, f.list, move || {
            web::get().to(move |r: Req, s: State| list_folder(r, s, folder))
        }),
        ep(M::GET, &one, f.one, move || {
            web::get().to(move |r: Req, s: State| get_folder(r, s, folder))
        }),
        ep(M::PUT, &one, f.copy, move || {
            web::put().to(move |r: Req, s: State, b: web::Payload| copy_job(r, s, b, folder))
        }),
        ep(M::DELETE, &one, f.delete, move || {
            web::delete()
                .to(move |r: Req, s: State, b: web::Payload| delete_folder(r, s, b, folder))
        }),
        ep(M::GET, &file, f.download, move || {
            web::get().to(move |r: Req, s: State| attachment(r, s, folder))
        }),
        ep(M::DELETE, &file, f.strip, move || {
            web::delete().to(move |r: Req, s: State, b: web::Payload| strip(r, s, b, folder))
        }),
    ]
}

pub fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    let mut v = Vec::new();
    for p in PREFIXES {
        v.extend([
            ep(
                M::PUT,
                p,
                "Send a fax (JSON with document.url, multipart, or a PDF/TIFF body)",
                || web::put().to(submit),
            ),
            ep(
                M::PUT,
                &format!("{p}/outgoing"),
                "Send a fax (alias)",
                || web::put().to(submit),
            ),
            ep(M::GET, &format!("{p}/outgoing"), "Queued faxes", || {
                web::get().to(list_outgoing)
            }),
            ep(
                M::GET,
                &format!("{p}/outgoing/{{fax_id}}"),
                "A queued fax",
                || web::get().to(get_outgoing),
            ),
            ep(
                M::DELETE,
                &format!("{p}/outgoing/{{fax_id}}"),
                "Cancel a queued fax",
                || web::delete().to(cancel_outgoing),
            ),
        ]);
        for f in &FOLDER_ROUTES {
            v.extend(folder_endpoints(&format!("{p}/{}", f.folder), f));
        }
        v.extend([
            ep(
                M::GET,
                &format!("{p}/incoming"),
                "Faxes being received now on this node, with their live page",
                || web::get().to(list_incoming),
            ),
            ep(
                M::GET,
                &format!("{p}/incoming/{{fax_id}}"),
                "A fax being received now (by call id)",
                || web::get().to(get_incoming),
            ),
            ep(
                M::GET,
                &format!("{p}/smtplog"),
                "E-mail-to-fax error logs",
                || web::get().to(list_smtplog),
            ),
            ep(
                M::GET,
                &format!("{p}/smtplog/{{log_id}}"),
                "One e-mail-to-fax log",
                || web::get().to(get_smtplog),
            ),
        ]);
    }
    v
}

/// Which faxes a route sees.
#[derive(Clone, Debug)]
enum Scope {
    Account,
    Faxbox(Faxbox),
    User(String),
}

impl Scope {
    /// Whether a fax document belongs to this scope.
    fn keeps(&self, doc: &Value) -> bool {
        let s = |k: &str| doc.get(k).and_then(Value::as_str);
        match self {
            Scope::Account => true,
            Scope::Faxbox(fb) => s("faxbox_id") == Some(fb.id.as_str()),
            Scope::User(id) => s("owner_id") == Some(id.as_str()),
        }
    }

    fn keeps_row(&self, row: &JobRow) -> bool {
        match self {
            Scope::Account => true,
            Scope::Faxbox(fb) => row.faxbox_id.as_deref() == Some(fb.id.as_str()),
            Scope::User(id) => row.owner_id.as_deref() == Some(id.as_str()),
        }
    }

    fn keeps_log(&self, row: &SmtpLogRow) -> bool {
        match self {
            Scope::Account => true,
            Scope::Faxbox(fb) => row.faxbox_id.as_deref() == Some(fb.id.as_str()),
            Scope::User(id) => row.owner_id.as_deref() == Some(id.as_str()),
        }
    }

    fn modb_filter(&self, folder: Folder) -> ModbFilter {
        match self {
            Scope::Account => ModbFilter::Folder(folder),
            Scope::Faxbox(fb) => ModbFilter::Faxbox(fb.id.clone(), folder),
            Scope::User(id) => ModbFilter::Owner(id.clone(), folder),
        }
    }
}

async fn scope_of(
    req: &HttpRequest,
    state: &ApiState,
    account: &AccountId,
) -> Result<Scope, ApiError> {
    if let Some(fb) = req.match_info().get("faxbox_id") {
        return Ok(Scope::Faxbox(
            crate::accounts::faxbox(&state.store, account, fb).await?,
        ));
    }
    if let Some(u) = req.match_info().get("user_id") {
        load_typed(&state.store, &Db::Account(account.clone()), u, "user").await?;
        return Ok(Scope::User(u.to_string()));
    }
    Ok(Scope::Account)
}

/// What clients see of a fax document.
fn view(doc: &Value) -> Value {
    let mut out = request::public(doc);
    let created = doc.get("pvt_created").cloned().unwrap_or(json!(0));
    out["created"] = created.clone();
    if let Some(st) = doc.get("pvt_job_status") {
        out["status"] = st.clone();
        out["_read_only"] = json!({"created": created, "status": st});
    } else {
        out["_read_only"] = json!({"created": created});
    }
    if let Some(d) = doc.get("pvt_delivered_date") {
        out["delivered"] = d.clone();
    }
    if let Some(p) = doc.get("pvt_pages") {
        out["pages"] = p.clone();
    }
    if let Some(n) = doc.get("pvt_notify") {
        out["_read_only"]["notifications"] = crate::notify::delivery_log(n);
    }
    // The job carries its faxbox's callback (so that its webhooks can be signed); whoever
    // may read a fax must not learn the key that authenticates the account's webhooks.
    crate::notify::webhook::hide_secrets(&mut out);
    out
}

/// What a listing's filters look at: the stored document, with the fields clients see
/// (`status`, `created`, `delivered`, `pages`) where the document has no such key.
fn filter_target(doc: &Value) -> Value {
    let mut target = doc.clone();
    if let (Value::Object(t), Value::Object(seen)) = (&mut target, view(doc)) {
        for (k, v) in seen {
            t.entry(k).or_insert(v);
        }
    }
    target
}

fn respond_fax(
    req: &HttpRequest,
    state: &ApiState,
    status: StatusCode,
    doc: &Value,
) -> HttpResponse {
    respond_view(req, state, status, doc, view(doc))
}

/// As [`respond_fax`], with the view of `doc` already made (`body`).
fn respond_view(
    req: &HttpRequest,
    state: &ApiState,
    status: StatusCode,
    doc: &Value,
    body: Value,
) -> HttpResponse {
    let mut extra = Map::new();
    if let Some(rev) = doc.get("_rev") {
        extra.insert("revision".into(), rev.clone());
    }
    if status == StatusCode::ACCEPTED {
        extra.insert("message".into(), json!("processing fax attachments"));
    }
    success_with(req, &state.node, status, body, extra)
}

fn intake_err(e: IntakeError) -> ApiError {
    e.into()
}

/// A submission as the request carries it: the job's fields, the envelope, the document.
struct Received {
    data: Map<String, Value>,
    env: request::Envelope,
    document: Option<Document>,
}

/// The job (JSON part) and the document of a multipart submission. The JSON part has the
/// cap of a JSON body (`json_limit`), whatever the cap of the whole upload.
fn document_part(
    parts: Vec<multipart::Part>,
    json_limit: u64,
) -> Result<(Option<request::Envelope>, Option<Document>), ApiError> {
    let mut env = None;
    let mut doc = None;
    for p in parts {
        let json_like = p.content_type == "application/json"
            || (p.content_type.is_empty() && p.body.first() == Some(&b'{'));
        if json_like && env.is_none() {
            if p.body.len() as u64 > json_limit {
                return Err(ApiError::TooLarge(json_limit));
            }
            env = Some(parse_envelope(&p.body)?);
        } else if doc.is_none() && !p.body.is_empty() {
            let ct = intake::effective_type(&p.content_type, &p.body)
                .map_err(ApiError::UnsupportedDocument)?;
            doc = Some(Document {
                content_type: ct,
                bytes: p.body,
            });
        }
    }
    Ok((env, doc))
}

async fn read_submission(
    req: &HttpRequest,
    state: &ApiState,
    payload: web::Payload,
) -> Result<Received, ApiError> {
    let mt = media_type(req);
    let multipart = mt.starts_with("multipart/");
    if !is_json(&mt) && !multipart && !intake::accepted_type(&mt) {
        return Err(ApiError::UnsupportedMediaType(mt));
    }
    let limit = if is_json(&mt) {
        state.options.max_body_bytes
    } else {
        state.options.max_upload_bytes
    };
    let body = read_body(req, payload, limit, state.body_timeout()).await?;
    let (env, document) = if is_json(&mt) {
        (parse_envelope(&body)?, None)
    } else if multipart {
        let ct = req
            .headers()
            .get(actix_web::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let boundary = multipart::boundary(ct).ok_or_else(|| {
            ApiError::field("content_type", "invalid", "multipart without a boundary")
        })?;
        let parts = multipart::parse(&body, &boundary)
            .map_err(|m| ApiError::field("multipart", "invalid", m))?;
        let (env, doc) = document_part(parts, state.options.max_body_bytes)?;
        (env.unwrap_or_default(), doc)
    } else {
        // A raw document; the job's fields come from the query string.
        let mut data = Map::new();
        for (k, v) in request::query(req)? {
            if k != "auth_token" {
                data.insert(k, json!(v));
            }
        }
        let env = request::Envelope {
            data: Value::Object(data),
            keys: Map::new(),
        };
        // The body is the document: a type it does not have is refused here, before a job
        // exists.
        let content_type =
            intake::effective_type(&mt, &body).map_err(ApiError::UnsupportedDocument)?;
        (
            env,
            Some(Document {
                content_type,
                bytes: body,
            }),
        )
    };
    let data = match &env.data {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        _ => {
            return Err(ApiError::field(
                "data",
                "type",
                "Value did not match type(s): object",
            ));
        }
    };
    Ok(Received {
        data,
        env,
        document,
    })
}

/// A time zone a request names (`fax_timezone`), checked against the tz database; `None`
/// when it names none.
pub(super) fn requested_zone(
    field: &str,
    value: Option<&Value>,
) -> Result<Option<String>, ApiError> {
    Ok(submit::requested_zone(field, value)?)
}

async fn submit(
    req: HttpRequest,
    state: web::Data<ApiState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let sub = read_submission(&req, &state, payload).await?;
    let (caller, account, account_doc) = account_request(&req, &state, Some(&sub.env)).await?;
    let scope = scope_of(&req, &state, &account).await?;
    // A plain user's fax is theirs (see `authz`), whatever owner the request names.
    let plain_user = super::authz::role(&req) == Some(super::authz::Role::User);
    let (faxbox, owner) = match scope {
        Scope::Faxbox(fb) => (Some(fb), None),
        Scope::User(u) => (None, Some(u)),
        Scope::Account => (None, None),
    };
    let submission = submit::Submission {
        account: Account {
            id: account,
            doc: std::sync::Arc::unwrap_or_clone(account_doc),
        },
        faxbox,
        owner,
        sender: submit::Sender {
            user_id: caller.owner_id().map(str::to_string),
            may_name_owner: !plain_user,
        },
        fields: sub.data,
        document: sub.document,
    };
    let done = state.intake_service().submit(submission).await?;
    Ok(respond_fax(&req, &state, StatusCode::ACCEPTED, &done))
}

fn outgoing_row(r: &JobRow) -> Value {
    json!({
        "id": r.id,
        "status": r.status.map(|s| s.as_str()),
        "to": r.to,
        "from": r.from,
        "attempts": r.attempts,
        "created": r.created,
        "faxbox_id": r.faxbox_id,
    })
}

/// A page of the queued jobs a scope lists from (a faxbox's, else the account's).
async fn outgoing_page(
    state: &ApiState,
    scope: &Scope,
    account: &AccountId,
    range: CreatedRange,
    page: Page,
) -> Result<Listing<JobRow>, ApiError> {
    Ok(match scope {
        Scope::Faxbox(fb) => {
            state
                .store
                .list_by_faxbox_state(&fb.id, None, range, page)
                .await?
        }
        _ => {
            state
                .store
                .list_by_account_state(account, None, range, page)
                .await?
        }
    })
}

fn job_key(r: &JobRow) -> Cursor {
    Cursor {
        created: r.created,
        id: r.id.clone(),
    }
}

async fn list_outgoing(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let (_c, account, _a) = account_request(&req, &state, None).await?;
    let scope = scope_of(&req, &state, &account).await?;
    let paging = Paging::from_query(&request::query(&req)?)?;
    let range = paging.plain_range();
    let in_scope = |r: &JobRow| r.account_id == account.as_str() && scope.keeps_row(r);
    let fetch = async |page| outgoing_page(&state, &scope, &account, range, page).await;
    let (rows, next) = if paging.is_filtered() {
        scan_filtered(
            &paging,
            fetch,
            async |r: &JobRow| {
                if !in_scope(r) {
                    return Ok(None);
                }
                let doc = state.store.get(&Db::Faxes, &r.id).await?;
                Ok(doc
                    .filter(|d| paging.keeps(&filter_target(d)))
                    .map(|_| outgoing_row(r)))
            },
            job_key,
        )
        .await?
    } else {
        // Rows outside the scope (another owner) are skipped.
        fill_page(
            &paging,
            fetch,
            |r: &JobRow| in_scope(r).then(|| outgoing_row(r)),
            job_key,
        )
        .await?
    };
    Ok(respond_list(&req, &state, rows, next, &paging))
}

async fn load_outgoing(
    req: &HttpRequest,
    state: &ApiState,
) -> Result<(AccountId, Value), ApiError> {
    let (_c, account, _a) = account_request(req, state, None).await?;
    let scope = scope_of(req, state, &account).await?;
    let id = param(req, "fax_id")?;
    let doc = load_typed(&state.store, &Db::Faxes, id, "fax").await?;
    if doc.get("pvt_account_id").and_then(Value::as_str) != Some(account.as_str())
        || !scope.keeps(&doc)
    {
        return Err(ApiError::BadIdentifier(id.to_string()));
    }
    Ok((account, doc))
}

async fn get_outgoing(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let (_a, doc) = load_outgoing(&req, &state).await?;
    let processing =
        doc.get("pvt_job_status").and_then(Value::as_str) == Some(JobStatus::Processing.as_str());
    let live = match (&state.status, processing) {
        (Some(source), true) => {
            let id = doc["_id"].as_str().unwrap_or_default();
            let to = doc["to_number"].as_str().unwrap_or_default();
            let node = doc.get("pvt_job_node").and_then(Value::as_str);
            source.live_status(id, to, node).await
        }
        _ => None,
    };
    let mut body = view(&doc);
    // While a worker transmits the job, `status` is its live text (as Kazoo shows it) and
    // `live` has the stage and pages.
    if let Some(live) = live {
        body["status"] = json!(live.status);
        body["live"] = json!({
            "stage": live.stage,
            "page": live.page,
            "total_pages": live.total_pages,
            "node": live.node,
        });
    }
    if crate::notify::progress::may_have_events(&doc)
        && let Ok((db, modb_id)) = crate::outbound::modb::target(&doc)
    {
        add_progress(&state, &db, &modb_id, &mut body).await?;
    }
    Ok(respond_view(&req, &state, StatusCode::OK, &doc, body))
}

/// The progress webhooks of the outbound fax whose MODB id is `modb_id`, in
/// `_read_only.webhooks` (when it has any).
async fn add_progress(
    state: &ApiState,
    db: &Db,
    modb_id: &str,
    body: &mut Value,
) -> Result<(), ApiError> {
    let hooks = crate::notify::progress::delivery_log(&state.store, db, modb_id).await?;
    if !hooks.is_empty() {
        body["_read_only"]["webhooks"] = Value::Array(hooks);
    }
    Ok(())
}

/// Cancels a queued job: `cancelled`, moved to the outbox. A job being transmitted cannot be
/// cancelled (409). A job whose intake finishes meanwhile (its revision moves on) is read
/// again and cancelled.
async fn cancel_outgoing(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let mut tries = 0;
    loop {
        tries += 1;
        let (_a, mut doc) = load_outgoing(&req, &state).await?;
        let status = doc
            .get("pvt_job_status")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<JobStatus>().ok());
        match status {
            Some(JobStatus::Processing) => {
                return Err(ApiError::ConflictWith(
                    "the fax is being transmitted and can no longer be cancelled".into(),
                ));
            }
            Some(s) if s.is_final() => {
                return Err(ApiError::ConflictWith(format!("the fax is already {s}")));
            }
            _ => {}
        }
        let intake = status == Some(JobStatus::AttachingFiles);
        let now = crate::time::now_gregorian();
        let created = doc
            .get("pvt_created")
            .and_then(Value::as_i64)
            .unwrap_or(now);
        doc["pvt_job_status"] = json!(JobStatus::Cancelled.as_str());
        doc["pvt_modified"] = json!(now);
        doc["tx_result"] = json!({
            "time_elapsed": now - created,
            "success": false,
            "result_code": 0,
            "result_text": "cancelled by the user",
        });
        // Rev-checked: if the queue locked the job meanwhile, this is a 409 and nothing
        // changes; if its intake moved it on, it is read again.
        let saved = match state.store.save(&Db::Faxes, doc).await {
            Ok(saved) => saved,
            Err(crate::store::StoreError::Conflict) if intake && tries < 5 => continue,
            Err(e) => return Err(e.into()),
        };
        // The intake no longer writes to a job that ended (stored::store_fax_file), so the
        // cancelled job moves as it was saved.
        let moved = intake::move_to_outbox(&state.store, saved)
            .await
            .map_err(intake_err)?;
        return Ok(respond_fax(&req, &state, StatusCode::OK, &moved));
    }
}

async fn list_folder(
    req: HttpRequest,
    state: web::Data<ApiState>,
    folder: Folder,
) -> Result<HttpResponse, ApiError> {
    let (_c, account, _a) = account_request(&req, &state, None).await?;
    let scope = scope_of(&req, &state, &account).await?;
    let paging = Paging::from_query(&request::query(&req)?)?;
    let range = paging.modb_range()?;
    if paging.is_filtered() {
        let filter = scope.modb_filter(folder);
        let (rows, next) = scan_filtered(
            &paging,
            async |page| {
                Ok(state
                    .store
                    .modb_list(&account, &filter, range, page)
                    .await?)
            },
            async |r: &ModbRow| {
                let Some((month, _)) = split_modb_doc_id(&r.id) else {
                    return Ok(None);
                };
                let doc = state
                    .store
                    .get(&Db::Modb(account.clone(), month), &r.id)
                    .await?;
                // Rows look the same filtered or not: the index's row.
                Ok(doc
                    .filter(|d| paging.keeps(&filter_target(d)))
                    .and_then(|_| serde_json::from_str(&r.listing).ok()))
            },
            ModbRow::cursor,
        )
        .await?;
        return Ok(respond_list(&req, &state, rows, next, &paging));
    }
    let listing = state
        .store
        .modb_list(&account, &scope.modb_filter(folder), range, paging.page())
        .await?;
    // The index rows are the answer's rows: no document is read, no row parsed.
    let rows: Vec<&str> = listing.rows.iter().map(|r| r.listing.as_str()).collect();
    let digests: Vec<[u8; 16]> = listing.rows.iter().map(|r| r.digest).collect();
    Ok(respond_rows(
        &req,
        &state,
        &rows,
        Some(&digests),
        listing.next_start_key,
        &paging,
    ))
}

/// Loads a fax of a folder in the account's MODBs, within the route's scope.
async fn load_folder(
    req: &HttpRequest,
    state: &ApiState,
    folder: Folder,
    env: Option<&request::Envelope>,
) -> Result<(AccountId, Db, Value), ApiError> {
    let (_c, account, db, doc) = load_folder_as(req, state, folder, env).await?;
    Ok((account, db, doc))
}

/// As [`load_folder`], with the caller.
async fn load_folder_as(
    req: &HttpRequest,
    state: &ApiState,
    folder: Folder,
    env: Option<&request::Envelope>,
) -> Result<(request::Caller, AccountId, Db, Value), ApiError> {
    let (caller, account, _a) = account_request(req, state, env).await?;
    let scope = scope_of(req, state, &account).await?;
    let id = param(req, "fax_id")?;
    let db = modb_of(&account, id)?;
    let doc = load_typed(&state.store, &db, id, "fax").await?;
    if !shown_in(&doc, folder, &scope) {
        return Err(ApiError::BadIdentifier(id.to_string()));
    }
    Ok((caller, account, db, doc))
}

/// The account's monthly database that holds a fax-side document (`YYYYMM-…` id); an id that
/// is empty, too long or not of that form names nothing.
fn modb_of(account: &AccountId, id: &str) -> Result<Db, ApiError> {
    let missing = || ApiError::BadIdentifier(id.to_string());
    if id.is_empty() || id.len() > request::MAX_DOC_ID {
        return Err(missing());
    }
    let (month, _) = split_modb_doc_id(id).ok_or_else(missing)?;
    Ok(Db::Modb(account.clone(), month))
}

/// Whether a fax document (or its [`StoredFax::facts`]) is in `folder` (no folder: the inbox)
/// and in the request's scope.
fn shown_in(doc: &Value, folder: Folder, scope: &Scope) -> bool {
    let doc_folder = doc
        .get("folder")
        .and_then(Value::as_str)
        .and_then(|f| f.parse::<Folder>().ok())
        .unwrap_or(Folder::Inbox);
    doc_folder == folder && scope.keeps(doc)
}

async fn get_folder(
    req: HttpRequest,
    state: web::Data<ApiState>,
    folder: Folder,
) -> Result<HttpResponse, ApiError> {
    let (_c, account, _a) = account_request(&req, &state, None).await?;
    let scope = scope_of(&req, &state, &account).await?;
    let id = param(&req, "fax_id")?;
    let missing = || ApiError::BadIdentifier(id.to_string());
    let db = modb_of(&account, id)?;
    let (rev, body) = match state.store.get_text(&db, id).await {
        Ok(Some(found)) => found,
        Ok(None) | Err(crate::store::StoreError::NoDatabase(_)) => return Err(missing()),
        Err(e) => return Err(e.into()),
    };
    let stored = StoredFax::parse(&body)
        .map_err(|e| ApiError::Fault(format!("fax {id} is stored as unreadable JSON: {e}")))?;
    let facts = stored.facts();
    if !crate::accounts::is_live(&facts, "fax") || !shown_in(&facts, folder, &scope) {
        return Err(missing());
    }
    let webhooks = if folder == Folder::Outbox && crate::notify::progress::may_have_events(&facts) {
        crate::notify::progress::delivery_log(&state.store, &db, id).await?
    } else {
        Vec::new()
    };
    let data = stored.view(id, webhooks);
    let mut extra = Map::new();
    extra.insert("revision".into(), Value::String(rev));
    Ok(super::envelope::success_serialized(
        &req,
        &state.node,
        StatusCode::OK,
        Some(data),
        extra,
    ))
}

/// A fax document as stored, split at its top level into the JSON text of each field, so
/// that its view ([`view`]) is written without parsing the fields it shows unchanged: they
/// were written by this serialiser, so their text is what a parse and a serialise would give.
struct StoredFax<'a> {
    /// The top-level fields in stored order; a key borrows the stored text unless it has
    /// escapes.
    fields: Vec<(std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue)>,
}

/// The top-level fields of a stored JSON object, for [`StoredFax`].
struct TopLevel<'a>(Vec<(std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue)>);

impl<'de> serde::Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct Key<'k>(#[serde(borrow)] std::borrow::Cow<'k, str>);
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = TopLevel<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<Self::Value, M::Error> {
                let mut fields = Vec::with_capacity(32);
                while let Some((Key(k), v)) =
                    m.next_entry::<Key<'de>, &'de serde_json::value::RawValue>()?
                {
                    fields.push((k, v));
                }
                Ok(TopLevel(fields))
            }
        }
        d.deserialize_map(Fields)
    }
}

impl<'a> StoredFax<'a> {
    fn parse(body: &'a str) -> serde_json::Result<Self> {
        let TopLevel(fields) = serde_json::from_str(body)?;
        Ok(Self { fields })
    }

    /// The stored text of one field.
    fn raw(&self, key: &str) -> Option<&'a serde_json::value::RawValue> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// The value of one field (parsed).
    fn value(&self, key: &str) -> Option<Value> {
        self.raw(key)
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
    }

    /// The fields the rules read: type, deletion, folder and scope.
    fn facts(&self) -> Value {
        let mut m = Map::new();
        for k in ["pvt_type", "pvt_deleted", "folder", "faxbox_id", "owner_id"] {
            if let Some(v) = self.value(k) {
                m.insert(k.to_string(), v);
            }
        }
        Value::Object(m)
    }

    /// The JSON text of [`view`] of this document (`id` its id), with `webhooks` (when any)
    /// under `_read_only`.
    fn view(&self, id: &str, webhooks: Vec<Value>) -> String {
        let raw = |key| self.raw(key).map(serde_json::value::RawValue::get);
        let created = raw("pvt_created").unwrap_or("0");
        let status = raw("pvt_job_status");
        // What the view makes rather than copies, made first so that the members borrow it.
        let id = Value::String(id.to_string());
        let notified = self
            .value("pvt_notify")
            .map(|n| crate::notify::delivery_log(&n));
        let webhooks = (!webhooks.is_empty()).then_some(Value::Array(webhooks));
        // `_read_only`, its members in key order.
        let mut read_only = Vec::with_capacity(64);
        super::envelope::write_object(
            &mut read_only,
            [("created", Member::Text(created))]
                .into_iter()
                .chain(
                    notified
                        .as_ref()
                        .map(|n| ("notifications", Member::Value(n))),
                )
                .chain(status.map(|st| ("status", Member::Text(st))))
                .chain(webhooks.as_ref().map(|w| ("webhooks", Member::Value(w)))),
        );
        let read_only = String::from_utf8(read_only).unwrap_or_default();
        // The faxbox's callback secret never shows (see `view`).
        let notifications = self.raw("notifications").map(|_| {
            let mut holder = json!({"notifications": self.value("notifications")});
            crate::notify::webhook::hide_secrets(&mut holder);
            holder["notifications"].take()
        });

        // The members in the order they are set (a later one replaces an earlier one of the
        // same key), written sorted by key as a `Value` object would be.
        let mut out: Vec<(&str, Member)> = Vec::with_capacity(self.fields.len() + 8);
        out.push(("id", Member::Value(&id)));
        for (k, raw) in &self.fields {
            if k.starts_with("pvt_") || k.starts_with('_') {
                continue;
            }
            out.push((k.as_ref(), Member::Text(raw.get())));
        }
        out.push(("created", Member::Text(created)));
        if let Some(st) = status {
            out.push(("status", Member::Text(st)));
        }
        if let Some(d) = raw("pvt_delivered_date") {
            out.push(("delivered", Member::Text(d)));
        }
        if let Some(p) = raw("pvt_pages") {
            out.push(("pages", Member::Text(p)));
        }
        out.push(("_read_only", Member::Text(&read_only)));
        if let Some(n) = &notifications {
            out.push(("notifications", Member::Value(n)));
        }
        // Stable: members of one key stay in the order they were set; the last one is kept.
        out.sort_by(|a, b| a.0.cmp(b.0));
        out.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(later, kept);
            }
            same
        });
        let mut text: Vec<u8> =
            Vec::with_capacity(self.fields.iter().map(|(_, r)| r.get().len() + 24).sum());
        super::envelope::write_object(&mut text, out);
        // Raw values are text of a `str`, the rest serde_json's own output: UTF-8 throughout.
        String::from_utf8(text).unwrap_or_default()
    }
}

async fn delete_folder(
    req: HttpRequest,
    state: web::Data<ApiState>,
    payload: web::Payload,
    folder: Folder,
) -> Result<HttpResponse, ApiError> {
    let env = request::json_envelope(&req, payload, &state).await.ok();
    let (_a, db, mut doc) = load_folder(&req, &state, folder, env.as_ref()).await?;
    doc["pvt_deleted"] = json!(true);
    doc["pvt_modified"] = json!(crate::time::now_gregorian());
    let mut saved = state.store.save(&db, doc).await?;
    let mut out = view(&saved);
    out["_read_only"]["deleted"] = json!(true);
    saved["_read_only"] = out["_read_only"].clone();
    Ok(respond_doc(&req, &state, StatusCode::OK, &out))
}

pub use crate::fax_format::{Format, pick_attachment};

/// The configured default download format (`system_config/kazoo_convert`
/// `fax.attachment_format`, default `pdf`).
async fn default_format(state: &ApiState) -> Format {
    crate::fax_format::configured(&state.store).await
}

async fn attachment(
    req: HttpRequest,
    state: web::Data<ApiState>,
    folder: Folder,
) -> Result<HttpResponse, ApiError> {
    let (caller, _a, db, doc) = load_folder_as(&req, &state, folder, None).await?;
    let q = request::query(&req)?;
    // The file name's zone: `?fax_timezone=`, else the caller's (user, then account).
    let zone = match requested_zone(
        "fax_timezone",
        q.get("fax_timezone").map(|z| json!(z)).as_ref(),
    )? {
        Some(z) => z,
        None => {
            crate::accounts::zone_of(
                &state.store,
                &caller.account,
                &caller.account_doc,
                caller.owner_id(),
            )
            .await?
        }
    };
    let accept = req
        .headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let (format, strict) = match q.get("format") {
        Some(f) => (
            Format::parse(f).ok_or_else(|| {
                ApiError::field_cause(
                    "format",
                    "enum",
                    "format must be pdf, tiff or original",
                    json!(f),
                )
            })?,
            true,
        ),
        None => match accept::negotiate(accept) {
            Negotiated::Exactly(Wanted::Pdf) => (Format::Pdf, true),
            Negotiated::Exactly(Wanted::Tiff) => (Format::Tiff, true),
            Negotiated::Default => (default_format(&state).await, false),
            Negotiated::Nothing => {
                return Err(ApiError::NotAcceptable(
                    "a fax downloads as application/pdf or image/tiff (or ?format=original)".into(),
                ));
            }
        },
    };
    let id = doc["_id"].as_str().unwrap_or_default().to_string();
    if format == Format::Pdf
        && pick_attachment(&doc, Format::Pdf, true).is_none()
        && let Some(pdf) = render_pdf(&state, &db, &doc).await?
    {
        return Ok(download(&doc, &q, &zone, "application/pdf").body(pdf));
    }
    let name = pick_attachment(&doc, format, strict).ok_or_else(|| {
        if intake::attachment_names(&doc).is_empty() {
            ApiError::BadIdentifier(format!("{id}: no document attached"))
        } else {
            ApiError::NotAcceptable(
                format!("this fax has no {format:?} rendition (yet); try ?format=original",)
                    .to_lowercase(),
            )
        }
    })?;
    let att = state
        .store
        .get_attachment(&db, &id, &name)
        .await?
        .ok_or_else(|| ApiError::BadIdentifier(format!("{id}/{name}")))?;
    let mut res = download(&doc, &q, &zone, &att.content_type);
    res.no_chunking(att.length);
    Ok(res.streaming(att.body))
}

/// The PDF of a fax that has none stored: its fax TIFF (sent or received) wrapped as PDF
/// without re-encoding, kept as `pdf_file.pdf` when `store_fax_pdf` is on. `None` when the
/// fax has no TIFF either.
async fn render_pdf(state: &ApiState, db: &Db, doc: &Value) -> Result<Option<Vec<u8>>, ApiError> {
    let Some(pdf) = crate::fax_format::render_pdf(&state.store, db, doc)
        .await
        .map_err(|e| match e {
            crate::fax_format::RenderError::Store(e) => ApiError::from(e),
            e => ApiError::Fault(e.to_string()),
        })?
    else {
        return Ok(None);
    };
    let id = doc["_id"].as_str().unwrap_or_default().to_string();
    if state.sysconf.fax().store_fax_pdf {
        let rev = doc.get("_rev").and_then(Value::as_str);
        // Best effort: a concurrent change only means the PDF is rendered again next time.
        if let Err(e) = state
            .store
            .put_attachment(
                db,
                &id,
                rev,
                "pdf_file.pdf",
                "application/pdf",
                crate::store::bytes_stream(pdf.clone()),
            )
            .await
        {
            tracing::debug!(error = %e, fax_id = %id, "pdf_file.pdf not kept");
        }
    }
    Ok(Some(pdf))
}

/// A download response builder with Kazoo's headers: content type, `Content-Disposition`
/// (`?disposition=inline|attachment`, filename `fax_document_<created, local time in
/// zone>.<ext>`) and the document's revision as ETag.
fn download(
    doc: &Value,
    q: &std::collections::HashMap<String, String>,
    zone: &str,
    content_type: &str,
) -> actix_web::HttpResponseBuilder {
    let disposition = match q.get("disposition").map(String::as_str) {
        Some("inline") => "inline",
        _ => "attachment",
    };
    let created = doc.get("pvt_created").and_then(Value::as_i64).unwrap_or(0);
    let filename = format!(
        "fax_document_{}.{}",
        timezone::file_stamp(created, zone),
        intake::extension(content_type)
    );
    let mut res = HttpResponse::Ok();
    res.content_type(content_type);
    if let Ok(v) = HeaderValue::from_str(&format!("{disposition}; filename={filename}")) {
        res.insert_header((CONTENT_DISPOSITION, v));
    }
    if let Some(rev) = doc.get("_rev").and_then(Value::as_str)
        && let Ok(v) = HeaderValue::from_str(&format!("\"{rev}\""))
    {
        res.insert_header((ETAG, v));
    }
    res
}

async fn strip(
    req: HttpRequest,
    state: web::Data<ApiState>,
    payload: web::Payload,
    folder: Folder,
) -> Result<HttpResponse, ApiError> {
    let env = request::json_envelope(&req, payload, &state).await.ok();
    let (_a, db, doc) = load_folder(&req, &state, folder, env.as_ref()).await?;
    let id = doc["_id"].as_str().unwrap_or_default().to_string();
    let mut rev = doc["_rev"].as_str().unwrap_or_default().to_string();
    for name in intake::attachment_names(&doc) {
        rev = state.store.delete_attachment(&db, &id, &rev, &name).await?;
    }
    let doc = load_typed(&state.store, &db, &id, "fax").await?;
    Ok(respond_fax(&req, &state, StatusCode::OK, &doc))
}

/// Resubmit (outbox) or forward (inbox): the request's `action` checked here, the copy made
/// by the intake service ([`submit::IntakeService::copy`]).
async fn copy_job(
    req: HttpRequest,
    state: web::Data<ApiState>,
    payload: web::Payload,
    folder: Folder,
) -> Result<HttpResponse, ApiError> {
    let env = request::json_envelope(&req, payload, &state).await?;
    let wanted = match folder {
        Folder::Outbox => "resubmit",
        Folder::Inbox => "forward",
    };
    let action = env
        .action()
        .or_else(|| env.data.get("action").and_then(Value::as_str))
        .map(str::to_string);
    match action.as_deref() {
        None => {
            return Err(ApiError::field(
                "action",
                "required",
                format!("action required: use \"{wanted}\""),
            ));
        }
        Some(a) if a != wanted => {
            return Err(ApiError::field_cause(
                "action",
                "enum",
                format!("invalid action: use \"{wanted}\""),
                json!(a),
            ));
        }
        Some(_) => {}
    }
    let (account, db, source) = load_folder(&req, &state, folder, Some(&env)).await?;
    let account = crate::accounts::account(&state.store, &account).await?;
    let done = state
        .intake_service()
        .copy(&account, &db, &source, folder, env.data_object()?)
        .await?;
    Ok(respond_fax(&req, &state, StatusCode::CREATED, &done))
}

async fn list_smtplog(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let (_c, account, _a) = account_request(&req, &state, None).await?;
    let scope = scope_of(&req, &state, &account).await?;
    let paging = Paging::from_query(&request::query(&req)?)?;
    let range = paging.modb_range()?;
    let fetch = async |page| Ok(state.store.smtp_logs(&account, range, page).await?);
    let row = |r: &SmtpLogRow| json!({"id": r.id, "from": r.from, "to": r.to, "error": r.error, "created": r.created});
    let (rows, next) = if paging.is_filtered() {
        // Filters read each log of the scope, as the folder listings read each fax.
        scan_filtered(
            &paging,
            fetch,
            async |r: &SmtpLogRow| {
                let Some((month, _)) = split_modb_doc_id(&r.id) else {
                    return Ok(None);
                };
                if !scope.keeps_log(r) {
                    return Ok(None);
                }
                let doc = state
                    .store
                    .get(&Db::Modb(account.clone(), month), &r.id)
                    .await?;
                Ok(doc.filter(|d| paging.keeps(d)).map(|_| row(r)))
            },
            SmtpLogRow::cursor,
        )
        .await?
    } else {
        // Rows of another faxbox or owner are skipped.
        fill_page(
            &paging,
            fetch,
            |r| scope.keeps_log(r).then(|| row(r)),
            SmtpLogRow::cursor,
        )
        .await?
    };
    Ok(respond_list(&req, &state, rows, next, &paging))
}

/// The calls of the account (and route scope) being received on this node now. Kazoo
/// answered the inbox here ("live receive tracking was never built"); received faxes are in
/// `faxes/inbox`.
async fn live_calls(req: &HttpRequest, state: &ApiState) -> Result<Vec<Value>, ApiError> {
    let (_c, account, _a) = account_request(req, state, None).await?;
    let scope = scope_of(req, state, &account).await?;
    Ok(state
        .incoming
        .of_account(&account)
        .into_iter()
        .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
        .filter(|v| scope.keeps(v))
        .collect())
}

async fn list_incoming(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let paging = Paging::from_query(&request::query(&req)?)?;
    let rows = live_calls(&req, &state)
        .await?
        .into_iter()
        .filter(|v| paging.keeps(v))
        .map(|v| {
            let created = v["created"].as_i64().unwrap_or(0);
            let id = v["id"].as_str().unwrap_or_default().to_string();
            (created, id, v)
        })
        .collect();
    let (rows, next) = page_in_memory(rows, &paging);
    Ok(respond_list(&req, &state, rows, next, &paging))
}

async fn get_incoming(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let id = param(&req, "fax_id")?.to_string();
    let call = live_calls(&req, &state)
        .await?
        .into_iter()
        .find(|c| c["id"] == id.as_str())
        .ok_or(ApiError::BadIdentifier(id))?;
    Ok(respond_doc(&req, &state, StatusCode::OK, &call))
}

async fn get_smtplog(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let (_c, account, _a) = account_request(&req, &state, None).await?;
    let scope = scope_of(&req, &state, &account).await?;
    let id = param(&req, "log_id")?;
    let doc = load_typed(&state.store, &modb_of(&account, id)?, id, "fax_smtp_log").await?;
    if !scope.keeps(&doc) {
        return Err(ApiError::BadIdentifier(id.to_string()));
    }
    let mut out = doc.clone();
    out["created"] = doc.get("pvt_created").cloned().unwrap_or(json!(0));
    // The error mail to the sender, when one was due: its delivery log, as a fax shows its own.
    if let Some(n) = doc.get("pvt_notify") {
        out["_read_only"] = json!({"notifications": crate::notify::delivery_log(n)});
    }
    Ok(respond_doc(&req, &state, StatusCode::OK, &out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fax_view_from_the_stored_text_equals_the_view_of_the_parsed_document() {
        let stored = json!({
            "pvt_type": "fax", "folder": "outbox", "pvt_job_status": "completed",
            "pvt_created": 63_900_000_000i64, "pvt_modified": 63_900_000_040i64,
            "pvt_delivered_date": 63_900_000_040i64, "pvt_pages": 2, "pvt_account_id": "a",
            "to_number": "+14155550100", "to_name": "Zoë \"quoted\" \u{1F4E0}",
            "tx_result": {"success": true, "result_code": 0, "fax_speed": 14400.5,
                          "nested": [1, {"b": null}, "x"]},
            "notifications": {"email": {"send_to": ["a@b"]},
                              "callback": {"url": "https://h/x", "secret": "s3cret"}},
            "pvt_notify": {"event": "outbound_sent", "state": "done", "deliveries": []},
            "_read_only": {"stale": true}, "retries": 3, "faxbox_id": "fb", "id": "own id",
            // Stored keys that the view sets itself.
            "status": "stored", "pages": 9, "created": 1, "delivered": "stored",
            // A key with escapes is unescaped, not borrowed.
            "a \"quoted\" key\n": 1,
        });
        let body = stored.to_string();
        let mut doc = stored.clone();
        doc["_id"] = json!("202612-abc");
        doc["_rev"] = json!("3-xyz");
        let parsed = StoredFax::parse(&body).expect("parses");
        assert_eq!(
            parsed.view("202612-abc", Vec::new()),
            view(&doc).to_string()
        );
        assert!(!parsed.view("202612-abc", Vec::new()).contains("s3cret"));
        // Webhooks join the read-only part.
        let mut with = view(&doc);
        with["_read_only"]["webhooks"] = json!([{"event": "queued"}]);
        assert_eq!(
            parsed.view("202612-abc", vec![json!({"event": "queued"})]),
            with.to_string()
        );
        // A document without the optional parts.
        let bare = json!({"pvt_type": "fax"});
        let mut bare_doc = bare.clone();
        bare_doc["_id"] = json!("x");
        assert_eq!(
            StoredFax::parse(&bare.to_string())
                .unwrap()
                .view("x", Vec::new()),
            view(&bare_doc).to_string()
        );
    }

    #[test]
    fn a_fax_view_never_shows_webhook_secrets() {
        let doc = json!({
            "_id": "202612-abc", "pvt_created": 1, "pvt_job_status": "completed",
            "notifications": {
                "outbound": {"callback": {"url": "https://hooks.example/fax", "method": "post",
                                          "secret": "s3cr3t"},
                             "email": {"send_to": ["a@example.com"]}},
                "inbound": {"callback": {"url": "https://hooks.example/in", "secret": "x"}}
            }
        });
        let v = view(&doc);
        assert!(!v.to_string().contains("s3cr3t"), "{v}");
        assert!(
            v.pointer("/notifications/inbound/callback/secret")
                .is_none(),
            "{v}"
        );
        assert_eq!(
            v["notifications"]["outbound"]["callback"]["url"],
            "https://hooks.example/fax"
        );
        assert_eq!(
            v["notifications"]["outbound"]["email"]["send_to"][0],
            "a@example.com"
        );
    }
}
