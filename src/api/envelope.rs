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

/// Identity of the node shown in every envelope: base64url of a digest of the node name.
pub fn node_token(node: &str) -> String {
    let digest = sha2::Sha256::digest(node.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
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
    // Kazoo's method tunnelling: `POST …?verb=PUT|PATCH|DELETE`.
    if req.method() == actix_web::http::Method::POST
        && let Some(verb) = tunnelled_verb(req.query_string())
    {
        req.head_mut().method = verb;
    }
    // A CORS preflight is answered here, for every path, known or not.
    let mut res = if req.method() == actix_web::http::Method::OPTIONS {
        req.into_response(HttpResponse::Ok().finish())
    } else {
        // Handler and extractor errors arrive here as responses (actix converts them), so
        // every response passes below.
        next.call(req).await?
    };
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
        let body = error_envelope(res.request(), &node, &p);
        res = res.map_body(|_, _| BoxBody::new(body));
        res.headers_mut().insert(
            actix_web::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    let header = HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("invalid"));
    let headers = res.headers_mut();
    headers.insert(HeaderName::from_static(REQUEST_ID), header);
    for (name, value) in CORS_HEADERS {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    Ok(res)
}

/// The method a `verb=` query parameter asks a POST to stand for.
fn tunnelled_verb(query: &str) -> Option<actix_web::http::Method> {
    use actix_web::http::Method;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        if k != "verb" {
            return None;
        }
        match v.to_ascii_uppercase().as_str() {
            "PUT" => Some(Method::PUT),
            "PATCH" => Some(Method::PATCH),
            "DELETE" => Some(Method::DELETE),
            _ => None,
        }
    })
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
    let mut env = base(req, node);
    env.insert("status".into(), json!("success"));
    if !data.is_null() {
        env.insert("data".into(), data);
    }
    if let Some(token) = auth_token_of(req) {
        env.insert("auth_token".into(), json!(token));
    }
    env.extend(extra);
    HttpResponse::build(status)
        .content_type("application/json")
        .body(Value::Object(env).to_string())
}

fn base(req: &HttpRequest, node: &str) -> Map<String, Value> {
    let mut env = Map::new();
    env.insert("request_id".into(), json!(request_id_of(req)));
    env.insert("node".into(), json!(node_token(node)));
    env.insert("version".into(), json!(VERSION));
    env.insert("timestamp".into(), json!(crate::time::iso8601_now()));
    env
}

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
    #[error("validation error")]
    Validation(Value),
    #[error("datastore unreachable")]
    DatastoreUnreachable(String),
    #[error("datastore fault")]
    DatastoreFault(String),
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
    #[error("not acceptable")]
    NotAcceptable(String),
    #[error("conflict: {0}")]
    ConflictWith(String),
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
                json!({"message": "bad identifier", "cause": id}),
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
            ApiError::Validation(data) => {
                (StatusCode::BAD_REQUEST, "validation error", data.clone())
            }
            ApiError::DatastoreUnreachable(cause) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "datastore_unreachable",
                json!({"message": "datastore unreachable", "cause": cause}),
            ),
            ApiError::DatastoreFault(cause) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "datastore_fault",
                json!({"message": "datastore fault", "cause": cause}),
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
            ApiError::NotAcceptable(msg) => (
                StatusCode::NOT_ACCEPTABLE,
                "not_acceptable",
                json!({"message": msg}),
            ),
            ApiError::ConflictWith(msg) => {
                (StatusCode::CONFLICT, "conflict", json!({"message": msg}))
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.parts().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, message, data) = self.parts();
        let mut res = HttpResponse::build(status)
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

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => ApiError::Conflict,
            StoreError::NotFound(id) => ApiError::BadIdentifier(id),
            StoreError::NoDatabase(db) => ApiError::BadIdentifier(db),
            StoreError::Unavailable(c) => ApiError::DatastoreUnreachable(c),
            other => ApiError::DatastoreFault(other.to_string()),
        }
    }
}
