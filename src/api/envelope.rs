//! Kazoo's response envelope, request ids, and the one error-to-HTTP mapping of the API.

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use sha2::Digest;

use crate::store::StoreError;

/// The request id header, echoed when the client sends one.
pub const REQUEST_ID: &str = "x-request-id";

/// The request id of a request, stored in its extensions by [`request_id_middleware`].
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Identity of the node shown in every envelope: base64url of a digest of the node name
/// (worked out once per name and thread: every response carries it).
pub fn node_token(node: &str) -> String {
    thread_local! {
        static LAST: std::cell::RefCell<(String, String)> = const {
            std::cell::RefCell::new((String::new(), String::new()))
        };
    }
    LAST.with_borrow_mut(|(name, token)| {
        if token.is_empty() || name != node {
            let digest = sha2::Sha256::digest(node.as_bytes());
            *token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16]);
            *name = node.to_string();
        }
        token.clone()
    })
}

/// faxd's version, as shown in envelopes and `/v2/about`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

fn request_id_of(req: &HttpRequest) -> String {
    req.extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default()
}

fn accept_client_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (!s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'))
    .then(|| s.to_string())
}

/// The node name the envelopes show, kept in the app data.
#[derive(Clone, Debug)]
pub struct NodeName(pub String);

/// Marker left on an error response by [`ApiError`]; the middleware fills in the envelope.
#[derive(Clone, Debug)]
struct ErrorParts {
    status: StatusCode,
    message: &'static str,
    data: Value,
}

/// A `503` whose envelope carries `data` (e.g. `/healthz` saying what is down).
pub fn unavailable(data: Value) -> HttpResponse {
    let mut res = HttpResponse::ServiceUnavailable().finish();
    res.extensions_mut().insert(ErrorParts {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "unavailable",
        data,
    });
    res
}

/// Assigns every request an id (the client's `X-Request-ID` when it is sane, else 32 random
/// hex), puts it on every response, errors included, and completes error envelopes.
pub async fn request_id_middleware(
    mut req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(accept_client_id)
        .unwrap_or_else(crate::ids::new_id);
    req.extensions_mut().insert(RequestId(id.clone()));
    let node = req
        .app_data::<NodeName>()
        .map(|n| n.0.clone())
        .unwrap_or_default();
    // Method tunnelling through POST: the `X-HTTP-Method-Override` header (advertised in
    // the CORS headers), else Kazoo's `?verb=`. Routing and authorization see the method the
    // request stands for.
    if req.method() == actix_web::http::Method::POST {
        match tunnelled_method(req.headers(), req.query_string()) {
            Ok(Some(verb)) => req.head_mut().method = verb,
            Ok(None) => {}
            Err(e) => {
                let res = req.error_response(e);
                return Ok(finish(res, &node, &id));
            }
        }
    }
    // A CORS preflight is answered here, for every path, known or not.
    let res = if req.method() == actix_web::http::Method::OPTIONS {
        req.into_response(HttpResponse::Ok().finish())
    } else {
        // Handler and extractor errors arrive here as responses (actix converts them), so
        // every response passes below.
        next.call(req).await?
    };
    Ok(finish(res, &node, &id))
}

/// Completes a response: the error envelope (for every error, ours or actix's), the request
/// id and the CORS headers.
fn finish(mut res: ServiceResponse<BoxBody>, node: &str, id: &str) -> ServiceResponse<BoxBody> {
    let parts = res.response().extensions().get::<ErrorParts>().cloned();
    let status = res.status();
    let parts = match parts {
        Some(p) => Some(p),
        // An error actix produced by itself (no ApiError): give it the envelope too.
        None if status.is_client_error() || status.is_server_error() => Some(ErrorParts {
            status,
            message: "error",
            data: json!({"message": status.canonical_reason().unwrap_or("error").to_lowercase()}),
        }),
        None => None,
    };
    if let Some(p) = parts {
        let body = error_envelope(res.request(), node, &p);
        res = res.map_body(|_, _| BoxBody::new(body));
        res.headers_mut().insert(
            actix_web::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    let header = HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("invalid"));
    let headers = res.headers_mut();
    headers.insert(HeaderName::from_static(REQUEST_ID), header);
    for (name, value) in CORS_HEADERS {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    res
}

/// Header naming the method a POST stands for.
pub const METHOD_OVERRIDE: &str = "x-http-method-override";

/// The method a POST stands for: `X-HTTP-Method-Override` first, then a `verb=` query
/// parameter (Kazoo's tunnelling), case-insensitive. An override header naming no method the
/// API serves is a 405, so a client never has its request run as something it did not mean.
fn tunnelled_method(
    headers: &actix_web::http::header::HeaderMap,
    query: &str,
) -> Result<Option<actix_web::http::Method>, ApiError> {
    use actix_web::http::Method;
    let named = |v: &str| match v.trim().to_ascii_uppercase().as_str() {
        "GET" => Some(Method::GET),
        "POST" => Some(Method::POST),
        "PUT" => Some(Method::PUT),
        "PATCH" => Some(Method::PATCH),
        "DELETE" => Some(Method::DELETE),
        _ => None,
    };
    if let Some(h) = headers.get(METHOD_OVERRIDE) {
        let v = h.to_str().map_err(|_| ApiError::InvalidMethod)?;
        return named(v).map(Some).ok_or(ApiError::InvalidMethod);
    }
    Ok(query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        if k != "verb" {
            return None;
        }
        named(v).filter(|m| *m != Method::GET && *m != Method::POST)
    }))
}

/// CORS headers put on every response (errors and preflights included), Kazoo's values.
const CORS_HEADERS: [(&str, &str); 5] = [
    ("access-control-allow-origin", "*"),
    (
        "access-control-allow-methods",
        "GET, POST, PUT, DELETE, OPTIONS, HEAD, PATCH",
    ),
    (
        "access-control-allow-headers",
        "content-type, depth, user-agent, x-http-method-override, x-file-size, \
         x-requested-with, if-modified-since, x-file-name, cache-control, x-auth-token, \
         x-kazoo-cluster-id, if-match",
    ),
    (
        "access-control-expose-headers",
        "content-type, x-auth-token, x-request-id, x-kazoo-cluster-id, location, etag",
    ),
    ("access-control-max-age", "86400"),
];

/// The token a request used or obtained, shown as `auth_token` in its envelope. Handlers
/// put it in the request's extensions.
#[derive(Clone, Debug)]
pub struct AuthToken(pub String);

fn auth_token_of(req: &HttpRequest) -> Option<String> {
    req.extensions().get::<AuthToken>().map(|t| t.0.clone())
}

fn error_envelope(req: &HttpRequest, node: &str, p: &ErrorParts) -> String {
    let mut env = base(req, node);
    env.insert("status".into(), json!("error"));
    env.insert("error".into(), json!(p.status.as_u16().to_string()));
    env.insert("message".into(), json!(p.message));
    env.insert("data".into(), p.data.clone());
    let token = auth_token_of(req).unwrap_or_else(|| "undefined".into());
    env.insert("auth_token".into(), json!(token));
    Value::Object(env).to_string()
}

/// Builds the envelope around `data` for a successful response.
pub fn success(req: &HttpRequest, node: &str, data: Value) -> HttpResponse {
    success_with(req, node, StatusCode::OK, data, Map::new())
}

/// A successful response with a status and extra top-level envelope keys (`revision`,
/// `page_size`, `next_start_key`, …).
pub fn success_with(
    req: &HttpRequest,
    node: &str,
    status: StatusCode,
    data: Value,
    extra: Map<String, Value>,
) -> HttpResponse {
    let data = (!data.is_null()).then(|| data.to_string());
    success_serialized(req, node, status, data, extra)
}

/// [`success_with`] for `data` already serialised (a listing serialises its page once, for
/// its revision digest and the answer alike); `None` leaves `data` out.
pub fn success_serialized(
    req: &HttpRequest,
    node: &str,
    status: StatusCode,
    data: Option<String>,
    extra: Map<String, Value>,
) -> HttpResponse {
    let mut env = base(req, node);
    env.insert("status".into(), json!("success"));
    if let Some(token) = auth_token_of(req) {
        env.insert("auth_token".into(), json!(token));
    }
    env.extend(extra);
    // An extra `data` wins, as it would in the map.
    let data = env.remove("data").map(|d| d.to_string()).or(data);
    // `data` first, then the other keys in order, written straight into the body.
    let mut body: Vec<u8> = Vec::with_capacity(data.as_ref().map_or(0, String::len) + 320);
    let data = data.as_deref().map(|d| ("data", Member::Text(d)));
    write_object(
        &mut body,
        data.into_iter()
            .chain(env.iter().map(|(k, v)| (k.as_str(), Member::Value(v)))),
    );
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body)
}

/// The value of one member of an object written by [`write_object`].
pub(crate) enum Member<'a> {
    /// JSON text, copied as it is (it must be valid JSON: stored or serialised text).
    Text(&'a str),
    /// A value, serialised.
    Value(&'a Value),
}

/// Writes a JSON object of `members`, in their order, into `out`: a response body made of
/// stored JSON text and values without building a `Value` of the whole.
pub(crate) fn write_object<'a>(
    out: &mut Vec<u8>,
    members: impl IntoIterator<Item = (&'a str, Member<'a>)>,
) {
    out.push(b'{');
    for (n, (k, v)) in members.into_iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, k);
        out.push(b':');
        match v {
            Member::Text(text) => out.extend_from_slice(text.as_bytes()),
            Member::Value(v) => {
                let _ = serde_json::to_writer(&mut *out, v);
            }
        }
    }
    out.push(b'}');
}

fn base(req: &HttpRequest, node: &str) -> Map<String, Value> {
    let mut env = Map::new();
    env.insert("request_id".into(), json!(request_id_of(req)));
    env.insert("node".into(), json!(node_token(node)));
    env.insert("version".into(), json!(VERSION));
    env.insert("timestamp".into(), json!(crate::time::iso8601_now()));
    env
}

/// `Retry-After` (seconds) on a 503: the store is away, a retry soon may succeed.
pub const RETRY_AFTER_SECS: u64 = 5;

/// API errors, mapped once to HTTP status, Kazoo's `message` and `data`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("bad identifier")]
    BadIdentifier(String),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    InvalidMethod,
    #[error("conflicting documents")]
    Conflict,
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("forbidden")]
    Forbidden,
    /// 403 with Kazoo's `cause`: what the caller may not do.
    #[error("forbidden: {0}")]
    ForbiddenCause(String),
    #[error("validation error")]
    Validation(Value),
    #[error("datastore unreachable")]
    DatastoreUnreachable(String),
    #[error("datastore fault")]
    DatastoreFault(String),
    /// The store's disk is full: 507, nothing was written.
    #[error("insufficient storage")]
    InsufficientStorage(String),
    #[error("{0}")]
    Fault(String),
    /// A business rule failed on a field: 400 `data.<field>.<rule>`.
    #[error("validation error")]
    Field {
        field: String,
        rule: &'static str,
        message: String,
        cause: Option<Value>,
    },
    #[error("payload too large")]
    TooLarge(u64),
    /// The request body stalled longer than the limit (seconds): 408, connection closed.
    #[error("request timeout")]
    BodyTimeout(u64),
    #[error("unsupported media type")]
    UnsupportedMediaType(String),
    /// A document whose content cannot be faxed or is not what its label says: 415.
    #[error("unsupported document: {0}")]
    UnsupportedDocument(crate::intake::DocumentTypeError),
    #[error("not acceptable")]
    NotAcceptable(String),
    #[error("conflict: {0}")]
    ConflictWith(String),
    /// A rate limit's bucket is empty: 429, with `Retry-After` (seconds).
    #[error("too many requests")]
    TooManyRequests(u64),
}

impl ApiError {
    /// A 400 on one field and rule, as Kazoo's business validations answer.
    pub fn field(field: &str, rule: &'static str, message: impl Into<String>) -> Self {
        ApiError::Field {
            field: field.to_string(),
            rule,
            message: message.into(),
            cause: None,
        }
    }

    /// As [`ApiError::field`], with a `cause`.
    pub fn field_cause(
        field: &str,
        rule: &'static str,
        message: impl Into<String>,
        cause: Value,
    ) -> Self {
        ApiError::Field {
            field: field.to_string(),
            rule,
            message: message.into(),
            cause: Some(cause),
        }
    }
}

impl ApiError {
    /// The error as Kazoo reports it (`error`, `message`, `data`), for non-HTTP callers such as
    /// maintenance commands.
    pub fn report(&self) -> Value {
        let (status, message, data) = self.parts();
        json!({"error": status.as_u16().to_string(), "message": message, "data": data})
    }

    fn parts(&self) -> (StatusCode, &'static str, Value) {
        match self {
            ApiError::BadIdentifier(id) => (
                StatusCode::NOT_FOUND,
                "bad_identifier",
                json!({"message": "bad identifier", "cause": clipped(id)}),
            ),
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                json!({"message": "not found"}),
            ),
            ApiError::InvalidMethod => (
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_method",
                json!({"message": "method not allowed"}),
            ),
            ApiError::Conflict => (
                StatusCode::CONFLICT,
                "datastore_conflict",
                json!({"message": "conflicting documents"}),
            ),
            ApiError::InvalidCredentials => (
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                json!({"message": "invalid credentials"}),
            ),
            ApiError::Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                json!({"message": "forbidden"}),
            ),
            ApiError::ForbiddenCause(cause) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                json!({"message": "forbidden", "cause": cause}),
            ),
            ApiError::Validation(data) => {
                (StatusCode::BAD_REQUEST, "validation error", data.clone())
            }
            ApiError::DatastoreUnreachable(cause) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "datastore_unreachable",
                json!({"message": "datastore timeout", "cause": cause}),
            ),
            ApiError::DatastoreFault(cause) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "datastore_fault",
                json!({"message": "datastore fatal error", "cause": cause}),
            ),
            ApiError::InsufficientStorage(cause) => (
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                json!({"message": "the datastore is full; nothing was written", "cause": cause}),
            ),
            ApiError::Fault(msg) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "unspecified_fault",
                json!({"message": msg}),
            ),
            ApiError::Field {
                field,
                rule,
                message,
                cause,
            } => {
                let mut detail = json!({"message": message});
                if let Some(c) = cause {
                    detail["cause"] = c.clone();
                }
                let mut data = Map::new();
                data.insert(field.clone(), json!({ *rule: detail }));
                (
                    StatusCode::BAD_REQUEST,
                    "validation error",
                    Value::Object(data),
                )
            }
            ApiError::TooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                json!({"file": {"maxSize": {
                    "message": format!("Payload or Files must not be more than {limit} bytes"),
                    "target": limit,
                }}}),
            ),
            ApiError::BodyTimeout(secs) => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                json!({"message": format!("the request body stalled for more than {secs} s")}),
            ),
            ApiError::UnsupportedMediaType(ct) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                json!({"message": format!("content type '{ct}' is not accepted here"), "cause": ct}),
            ),
            ApiError::UnsupportedDocument(e) => {
                let mut data = json!({"message": e.to_string(), "cause": e.declared()});
                if let Some(found) = e.found() {
                    data["found"] = json!(found);
                }
                (
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    data,
                )
            }
            ApiError::NotAcceptable(msg) => (
                StatusCode::NOT_ACCEPTABLE,
                "not_acceptable",
                json!({"message": msg}),
            ),
            ApiError::ConflictWith(msg) => {
                (StatusCode::CONFLICT, "conflict", json!({"message": msg}))
            }
            // Kazoo's `cb_context:add_system_error(too_many_requests)`, word for word.
            ApiError::TooManyRequests(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                json!({"message": "too many requests"}),
            ),
        }
    }
}

/// An identifier echoed in an error, cut to a sane length (a client may send a 100 kB id).
fn clipped(id: &str) -> String {
    const MAX: usize = 128;
    match id.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &id[..at]),
        None => id.to_string(),
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.parts().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, message, data) = self.parts();
        let mut builder = HttpResponse::build(status);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // The store is away: say when to try again rather than leave clients guessing.
            builder.insert_header((
                actix_web::http::header::RETRY_AFTER,
                RETRY_AFTER_SECS.to_string(),
            ));
        }
        if let ApiError::TooManyRequests(secs) = self {
            builder.insert_header((actix_web::http::header::RETRY_AFTER, secs.to_string()));
        }
        let mut res = builder
            .content_type("application/json")
            .body(data.to_string());
        res.extensions_mut().insert(ErrorParts {
            status,
            message,
            data,
        });
        res
    }
}

/// A refused number or caller text: 400 `data.<field>.<rule>` with the value as `cause`.
impl From<crate::numbers::NumberError> for ApiError {
    fn from(e: crate::numbers::NumberError) -> Self {
        ApiError::field_cause(e.field(), e.rule(), e.message(), json!(e.cause()))
    }
}

/// Intake's errors, as the intake service's ([`crate::intake::submit::SubmitError`]).
impl From<crate::intake::IntakeError> for ApiError {
    fn from(e: crate::intake::IntakeError) -> Self {
        crate::intake::submit::SubmitError::from(e).into()
    }
}

/// The accounts rules' refusals: an unknown account or faxbox as a bad identifier, a number
/// another callflow holds as `numbers.unique`.
impl From<crate::accounts::AccountsError> for ApiError {
    fn from(e: crate::accounts::AccountsError) -> Self {
        use crate::accounts::AccountsError;
        match e {
            AccountsError::Store(s) => s.into(),
            AccountsError::AccountNotFound(id) | AccountsError::FaxboxNotFound(id) => {
                ApiError::BadIdentifier(id)
            }
            AccountsError::NumberClaimed { ref number, .. } => {
                let cause = json!(number);
                ApiError::field_cause("numbers", "unique", e.to_string(), cause)
            }
        }
    }
}

/// The intake service's refusals, as the API answers them: schema errors and refused fields
/// as 400 validation errors, a document that cannot be faxed as 415, a store error as the
/// store maps.
impl From<crate::intake::submit::SubmitError> for ApiError {
    fn from(e: crate::intake::submit::SubmitError) -> Self {
        use crate::intake::submit::SubmitError;
        match e {
            SubmitError::Store(s) => s.into(),
            SubmitError::Accounts(a) => a.into(),
            SubmitError::Invalid(data) => ApiError::Validation(data),
            SubmitError::Missing { field, message } => ApiError::field(field, "required", message),
            SubmitError::UnknownZone { field, value } => ApiError::field_cause(
                &field,
                "invalid",
                "unknown time zone (an IANA name such as Europe/Paris)",
                value,
            ),
            SubmitError::Number(n) => n.into(),
            SubmitError::DocumentType(d) => ApiError::UnsupportedDocument(d),
            SubmitError::Document(m) | SubmitError::Conversion(m) => ApiError::Fault(m),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => ApiError::Conflict,
            StoreError::NotFound(id) => ApiError::BadIdentifier(id),
            StoreError::NoDatabase(db) => ApiError::BadIdentifier(db),
            StoreError::Unavailable(c) => ApiError::DatastoreUnreachable(c),
            StoreError::Full(c) => ApiError::InsufficientStorage(c),
            StoreError::Io(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                ) =>
            {
                ApiError::InsufficientStorage(e.to_string())
            }
            other => ApiError::DatastoreFault(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_outages_map_to_503_with_retry_after_and_a_full_disk_to_507() {
        let res =
            ApiError::from(StoreError::Unavailable("connection refused".into())).error_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            res.headers()
                .get(actix_web::http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("5")
        );

        for full in [
            StoreError::Full("database or disk is full".into()),
            StoreError::Io(std::io::Error::from(std::io::ErrorKind::StorageFull)),
        ] {
            let err = ApiError::from(full);
            let res = err.error_response();
            assert_eq!(res.status(), StatusCode::INSUFFICIENT_STORAGE);
            assert!(
                res.headers()
                    .get(actix_web::http::header::RETRY_AFTER)
                    .is_none()
            );
            assert_eq!(err.report()["message"], "insufficient_storage");
        }

        let res = ApiError::from(StoreError::Conflict).error_response();
        assert_eq!(res.status(), StatusCode::CONFLICT);
        assert!(
            res.headers()
                .get(actix_web::http::header::RETRY_AFTER)
                .is_none()
        );
    }
}
