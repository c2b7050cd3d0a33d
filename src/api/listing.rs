//! Listings: Kazoo's paging parameters (`page_size`, `start_key`, `paginate=false`,
//! `created_from`/`created_to`, `filter_<field>`) and the envelope keys of a page
//! (`page_size`, `start_key`, `next_start_key`).

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{Map, Value, json};

use super::envelope::success_with;
use super::{ApiError, ApiState};
use crate::store::{CreatedRange, Cursor, Page};

/// Default page size (`crossbar.pagination_page_size`).
pub const PAGE_SIZE: usize = 50;
/// Largest page a client may ask for; a larger `page_size` gets pages of this size (and a
/// `next_start_key`), so no request makes the node build an unbounded answer.
pub const MAX_PAGE_SIZE: usize = 500;
/// Largest created range of MODB listings (`crossbar.maximum_range`), seconds.
pub const MAXIMUM_RANGE: i64 = 2_682_000;
/// Rows returned at most with `paginate=false`.
pub const UNPAGINATED_MAX: usize = 10_000;

/// Paging asked for by a request.
#[derive(Clone, Debug, PartialEq)]
pub struct Paging {
    pub paginate: bool,
    pub page_size: usize,
    pub start_key: Option<String>,
    pub created_from: Option<i64>,
    pub created_to: Option<i64>,
    /// `filter_<dotted.path>=<value>` pairs.
    pub filters: Vec<(String, String)>,
}

impl Paging {
    pub fn from_query(q: &HashMap<String, String>) -> Result<Self, ApiError> {
        let paginate = q.get("paginate").map(|v| v != "false").unwrap_or(true);
        let page_size = q
            .get("page_size")
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(PAGE_SIZE)
            .min(MAX_PAGE_SIZE);
        let greg = |k: &str| -> Result<Option<i64>, ApiError> {
            match q.get(k) {
                None => Ok(None),
                Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                    ApiError::field(
                        k,
                        "type",
                        "Value did not match type(s): integer (gregorian seconds)",
                    )
                }),
            }
        };
        let start_key = q.get("start_key").filter(|k| !k.is_empty()).cloned();
        if let Some(k) = &start_key {
            Cursor::decode(k).map_err(|_| {
                ApiError::field(
                    "start_key",
                    "invalid",
                    "start_key is not a key this server gave",
                )
            })?;
        }
        let mut filters: Vec<(String, String)> = q
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("filter_")
                    .map(|p| (p.to_string(), v.clone()))
            })
            .collect();
        filters.sort();
        Ok(Self {
            paginate,
            page_size,
            start_key,
            created_from: greg("created_from")?,
            created_to: greg("created_to")?,
            filters,
        })
    }

    /// The store page this asks for.
    pub fn page(&self) -> Page {
        Page {
            limit: if self.paginate {
                self.page_size
            } else {
                UNPAGINATED_MAX
            },
            start_key: self.start_key.clone(),
        }
    }

    /// The created range of a time-ranged (MODB) listing: default the last
    /// [`MAXIMUM_RANGE`] seconds; a wider range is a 400 `created_from.date_range`.
    pub fn modb_range(&self) -> Result<CreatedRange, ApiError> {
        let now = crate::time::now_gregorian();
        let to = self.created_to.unwrap_or(now);
        let from = self.created_from.unwrap_or(to - MAXIMUM_RANGE);
        if to < from {
            return Err(ApiError::field(
                "created_to",
                "date_range",
                "created_to is before created_from",
            ));
        }
        if to - from > MAXIMUM_RANGE {
            return Err(ApiError::field_cause(
                "created_from",
                "date_range",
                format!("created_from is more than {MAXIMUM_RANGE} seconds from created_to"),
                json!(from),
            ));
        }
        Ok(CreatedRange { from, to })
    }

    /// The created range of an ordinary listing (no bounds unless asked).
    pub fn plain_range(&self) -> CreatedRange {
        let all = CreatedRange::all();
        CreatedRange {
            from: self.created_from.unwrap_or(all.from),
            to: self.created_to.unwrap_or(all.to),
        }
    }

    /// Whether a full document passes the `filter_*` parameters.
    pub fn keeps(&self, doc: &Value) -> bool {
        self.filters.iter().all(|(path, want)| {
            let ptr = format!("/{}", path.replace('.', "/"));
            match doc.pointer(&ptr) {
                Some(Value::String(s)) => s == want,
                Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(want)),
                Some(other) => *other == serde_json::from_str::<Value>(want).unwrap_or(Value::Null),
                None => false,
            }
        })
    }
}

/// Pages an in-memory list newest first (by `created`, then id), as the store pages views.
pub fn page_in_memory(
    mut rows: Vec<(i64, String, Value)>,
    paging: &Paging,
) -> (Vec<Value>, Option<String>) {
    rows.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
    let start = paging
        .start_key
        .as_deref()
        .and_then(|k| Cursor::decode(k).ok());
    let range = paging.plain_range();
    let mut it = rows
        .into_iter()
        .filter(|(c, _, _)| *c >= range.from && *c <= range.to)
        .filter(|(c, id, _)| match &start {
            Some(cur) => (*c, id.as_str()) <= (cur.created, cur.id.as_str()),
            None => true,
        });
    let limit = paging.page().limit;
    let mut out = Vec::new();
    for (c, id, v) in it.by_ref() {
        if out.len() == limit {
            return (
                out,
                Some(
                    Cursor {
                        created: c,
                        id: id.clone(),
                    }
                    .encode(),
                ),
            );
        }
        out.push(v);
    }
    (out, None)
}

/// `GET /v2/accounts/{account_id}/<resource>`: the account's live documents of one
/// `pvt_type`, filtered and paged as Kazoo pages them, each shown through `row`.
pub async fn respond_account_listing(
    req: &HttpRequest,
    state: &ApiState,
    pvt_type: &str,
    row: impl Fn(&Value) -> Value,
) -> Result<HttpResponse, ApiError> {
    let (_c, id, _a) = super::request::account_request(req, state, None).await?;
    let paging = Paging::from_query(&super::request::query(req)?)?;
    let rows = super::request::list_typed(&state.store, &crate::ids::Db::Account(id), pvt_type)
        .await?
        .iter()
        .filter(|d| paging.keeps(d))
        .map(|d| super::request::sort_key(d, row(d)))
        .collect();
    let (rows, next) = page_in_memory(rows, &paging);
    Ok(respond_list(req, state, rows, next, &paging))
}

/// `GET /v2/accounts/{account_id}/<resource>/{<param>}`: one live document of the account
/// of type `pvt_type`, as it is stored.
pub async fn respond_account_doc(
    req: HttpRequest,
    state: actix_web::web::Data<ApiState>,
    param: &str,
    pvt_type: &str,
) -> Result<HttpResponse, ApiError> {
    let (_c, id, _a) = super::request::account_request(&req, &state, None).await?;
    let doc = super::request::load_typed(
        &state.store,
        &crate::ids::Db::Account(id),
        super::request::param(&req, param)?,
        pvt_type,
    )
    .await?;
    Ok(respond_doc(&req, &state, StatusCode::OK, &doc))
}

/// A summary row without its keys that have no value: Kazoo's listing views emit only what
/// a document has, and clients tell "absent" from `null`.
fn without_nulls(row: Value) -> Value {
    match row {
        Value::Object(m) => Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).collect()),
        other => other,
    }
}

/// Answers a listing page.
pub fn respond_list(
    req: &HttpRequest,
    state: &ApiState,
    rows: Vec<Value>,
    next_start_key: Option<String>,
    paging: &Paging,
) -> HttpResponse {
    let rows: Vec<Value> = rows.into_iter().map(without_nulls).collect();
    let mut extra = Map::new();
    if paging.paginate {
        extra.insert("page_size".into(), json!(rows.len()));
        if let Some(k) = &paging.start_key {
            extra.insert("start_key".into(), json!(k));
        }
        if let Some(k) = next_start_key {
            extra.insert("next_start_key".into(), json!(k));
        }
    }
    let data = Value::Array(rows);
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(data.to_string().as_bytes()));
    extra.insert("revision".into(), json!(&digest[..32]));
    success_with(req, &state.node, StatusCode::OK, data, extra)
}

/// Answers one document (public fields), with its revision.
pub fn respond_doc(
    req: &HttpRequest,
    state: &ApiState,
    status: StatusCode,
    doc: &Value,
) -> HttpResponse {
    let mut extra = Map::new();
    if let Some(rev) = doc.get("_rev") {
        extra.insert("revision".into(), rev.clone());
    }
    let mut res = success_with(req, &state.node, status, super::request::public(doc), extra);
    if let Some(rev) = doc.get("_rev").and_then(Value::as_str)
        && let Ok(v) = actix_web::http::header::HeaderValue::from_str(&format!("\"{rev}\""))
    {
        res.headers_mut().insert(actix_web::http::header::ETAG, v);
    }
    if status == StatusCode::CREATED
        && let Some(id) = doc.get("_id").and_then(Value::as_str)
        && let Ok(v) = actix_web::http::header::HeaderValue::from_str(&format!(
            "{}/{}",
            req.path().trim_end_matches('/'),
            id
        ))
    {
        res.headers_mut()
            .insert(actix_web::http::header::LOCATION, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_in_memory_newest_first() {
        let rows: Vec<(i64, String, Value)> =
            (0..5).map(|i| (i, format!("id{i}"), json!(i))).collect();
        let mut q = HashMap::new();
        q.insert("page_size".to_string(), "2".to_string());
        let mut p = Paging::from_query(&q).unwrap();
        let (page, next) = page_in_memory(rows.clone(), &p);
        assert_eq!(page, vec![json!(4), json!(3)]);
        p.start_key = next;
        let (page, next) = page_in_memory(rows.clone(), &p);
        assert_eq!(page, vec![json!(2), json!(1)]);
        p.start_key = next;
        let (page, next) = page_in_memory(rows, &p);
        assert_eq!((page, next), (vec![json!(0)], None));
    }

    #[test]
    fn page_size_is_capped() {
        let mut q = HashMap::new();
        q.insert("page_size".to_string(), "100000000".to_string());
        assert_eq!(Paging::from_query(&q).unwrap().page_size, MAX_PAGE_SIZE);
        q.insert("page_size".to_string(), "7".to_string());
        assert_eq!(Paging::from_query(&q).unwrap().page_size, 7);
    }
}
