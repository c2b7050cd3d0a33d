//! Listings: Kazoo's paging parameters (`page_size`, `start_key`, `paginate=false`,
//! `created_from`/`created_to`, the filters of [`super::filter`], `ascending`/`descending`)
//! and the envelope keys of a page (`page_size`, `start_key`, `next_start_key`).

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{Map, Value, json};

use super::envelope::{success_serialized, success_with};
use super::filter::{Direction, Filters};
use super::{ApiError, ApiState};
use crate::store::{CreatedRange, Cursor, Listing, Page};

/// Default page size (`crossbar.pagination_page_size`).
pub const PAGE_SIZE: usize = 50;
/// Largest page a client may ask for; a larger `page_size` gets pages of this size (and a
/// `next_start_key`), so no request makes the node build an unbounded answer.
pub const MAX_PAGE_SIZE: usize = 500;
/// Largest created range of MODB listings (`crossbar.maximum_range`), seconds.
pub const MAXIMUM_RANGE: i64 = 2_682_000;
/// Rows returned at most with `paginate=false`.
pub const UNPAGINATED_MAX: usize = 10_000;
/// Store rows a filtered (or oldest-first) listing reads at most for one answer. A filtered
/// page that is not full by then ends with a `next_start_key`, so paging goes on from there.
pub const FILTER_SCAN_MAX: usize = 10_000;

/// Paging asked for by a request.
#[derive(Clone, Debug, PartialEq)]
pub struct Paging {
    pub paginate: bool,
    pub page_size: usize,
    pub start_key: Option<String>,
    pub created_from: Option<i64>,
    pub created_to: Option<i64>,
    /// The request's filters (`filter_*`, `has_key`, `modified_from`, …).
    pub filters: Filters,
    /// Listing order (newest first unless asked otherwise).
    pub direction: Direction,
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
        let filters = Filters::from_query(q).map_err(|e| {
            let p = e.parameter().to_string();
            ApiError::field(&p, "invalid", e.to_string())
        })?;
        Ok(Self {
            paginate,
            page_size,
            start_key,
            created_from: greg("created_from")?,
            created_to: greg("created_to")?,
            filters,
            direction: Direction::from_query(q),
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

    /// Whether a full document passes the request's filters.
    pub fn keeps(&self, doc: &Value) -> bool {
        self.filters.keeps(doc)
    }

    /// Whether this listing must read and filter rows itself rather than take a store page
    /// as it comes: any filter, or the oldest-first order (store listings run newest first).
    pub fn is_filtered(&self) -> bool {
        !self.filters.is_empty() || self.direction == Direction::Ascending
    }
}

/// Pages an in-memory list by `created`, then id: newest first as the store pages views, or
/// oldest first when asked (`ascending=true`).
pub fn page_in_memory(
    mut rows: Vec<(i64, String, Value)>,
    paging: &Paging,
) -> (Vec<Value>, Option<String>) {
    let ascending = paging.direction == Direction::Ascending;
    rows.sort_by(|a, b| {
        let order = (b.0, &b.1).cmp(&(a.0, &a.1));
        if ascending { order.reverse() } else { order }
    });
    let start = paging
        .start_key
        .as_deref()
        .and_then(|k| Cursor::decode(k).ok());
    let range = paging.plain_range();
    let mut it = rows
        .into_iter()
        .filter(|(c, _, _)| *c >= range.from && *c <= range.to)
        .filter(|(c, id, _)| match &start {
            Some(cur) if ascending => (*c, id.as_str()) >= (cur.created, cur.id.as_str()),
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

/// Store rows asked for per store page while a filtered listing scans.
const FILTER_BATCH: usize = 200;

/// A filtered (or oldest-first) listing over a store listing that runs newest first: reads
/// store pages from the request's `start_key`, keeps the rows `row` answers (`None`: out of
/// scope or filtered out), and stops once the page is full (Kazoo's pages come back full
/// whatever the filters drop) or after [`FILTER_SCAN_MAX`] rows, answering then the key to
/// go on from. Oldest first, the newest [`FILTER_SCAN_MAX`] rows of the range are ordered.
pub async fn scan_filtered<R>(
    paging: &Paging,
    mut fetch: impl AsyncFnMut(Page) -> Result<Listing<R>, ApiError>,
    mut row: impl AsyncFnMut(&R) -> Result<Option<Value>, ApiError>,
    key: impl Fn(&R) -> Cursor,
) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let ascending = paging.direction == Direction::Ascending;
    let want = paging.page().limit;
    let mut page = Page {
        limit: FILTER_BATCH,
        start_key: if ascending {
            None
        } else {
            paging.start_key.clone()
        },
    };
    let mut kept = Vec::new();
    let mut scanned = 0usize;
    let full = |kept: &Vec<(i64, String, Value)>, scanned: usize| {
        scanned >= FILTER_SCAN_MAX || (!ascending && kept.len() > want)
    };
    let resume = 'scan: loop {
        let listing = fetch(page.clone()).await?;
        for r in &listing.rows {
            if full(&kept, scanned) {
                break 'scan Some(key(r).encode());
            }
            scanned += 1;
            if let Some(v) = row(r).await? {
                let k = key(r);
                kept.push((k.created, k.id, v));
            }
        }
        match listing.next_start_key {
            None => break None,
            Some(k) if full(&kept, scanned) => break Some(k),
            Some(k) => page.start_key = Some(k),
        }
    };
    let (rows, next) = page_in_memory(kept, paging);
    Ok((rows, if ascending { next } else { next.or(resume) }))
}

/// An unfiltered page over a store listing that runs newest first, some of whose rows are
/// out of the request's scope (`row` answers `None`): reads store pages of the request's size
/// from its `start_key` until the page is full; the key to go on from is the first row not
/// returned.
pub async fn fill_page<R>(
    paging: &Paging,
    mut fetch: impl AsyncFnMut(Page) -> Result<Listing<R>, ApiError>,
    row: impl Fn(&R) -> Option<Value>,
    key: impl Fn(&R) -> Cursor,
) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let want = paging.page().limit;
    let mut page = paging.page();
    let mut rows = Vec::new();
    loop {
        let listing = fetch(page.clone()).await?;
        for r in &listing.rows {
            let Some(v) = row(r) else { continue };
            if rows.len() == want {
                return Ok((rows, Some(key(r).encode())));
            }
            rows.push(v);
        }
        match listing.next_start_key {
            Some(k) if rows.len() < want => page.start_key = Some(k),
            next => return Ok((rows, next)),
        }
    }
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
    let rows: Vec<String> = rows
        .into_iter()
        .map(|r| without_nulls(r).to_string())
        .collect();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    respond_rows(req, state, &rows, None, next_start_key, paging)
}

/// Answers a listing page whose rows are JSON objects already serialised (as listing
/// indexes keep them): `data` is their join, never parsed again. `digests`, when the rows
/// carry one each (a digest of the row's text made when it was written), make the page's
/// revision without hashing the whole page; else the page's text is hashed.
pub fn respond_rows(
    req: &HttpRequest,
    state: &ApiState,
    rows: &[&str],
    digests: Option<&[[u8; 16]]>,
    next_start_key: Option<String>,
    paging: &Paging,
) -> HttpResponse {
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
    let mut data = String::with_capacity(2 + rows.iter().map(|r| r.len() + 1).sum::<usize>());
    data.push('[');
    for (n, r) in rows.iter().enumerate() {
        if n > 0 {
            data.push(',');
        }
        data.push_str(r);
    }
    data.push(']');
    use sha2::Digest;
    let digest = match digests {
        Some(d) => hex::encode(sha2::Sha256::digest(d.as_flattened())),
        None => hex::encode(sha2::Sha256::digest(data.as_bytes())),
    };
    extra.insert("revision".into(), json!(&digest[..32]));
    success_serialized(req, &state.node, StatusCode::OK, Some(data), extra)
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
    fn pages_in_memory_oldest_first_when_asked() {
        let rows: Vec<(i64, String, Value)> =
            (0..5).map(|i| (i, format!("id{i}"), json!(i))).collect();
        let q: HashMap<String, String> = [("page_size", "2"), ("ascending", "true")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut p = Paging::from_query(&q).unwrap();
        let mut seen = Vec::new();
        loop {
            let (page, next) = page_in_memory(rows.clone(), &p);
            seen.extend(page);
            match next {
                Some(k) => p.start_key = Some(k),
                None => break,
            }
        }
        assert_eq!(seen, (0..5).map(|i| json!(i)).collect::<Vec<_>>());
    }

    #[test]
    fn bad_filter_parameters_are_a_400_on_the_parameter() {
        let q = HashMap::from([("modified_to".to_string(), "soon".to_string())]);
        match Paging::from_query(&q) {
            Err(ApiError::Field { field, rule, .. }) => {
                assert_eq!((field.as_str(), rule), ("modified_to", "invalid"))
            }
            other => panic!("{other:?}"),
        }
    }

    /// A store listing over rows kept newest first, paged by cursor as the stores page.
    fn store_pages(rows: &[(i64, String)], page: Page) -> Listing<(i64, String)> {
        let start = page.start_key.map(|k| Cursor::decode(&k).unwrap());
        let mut it = rows.iter().filter(|(c, id)| match &start {
            Some(s) => (*c, id.as_str()) <= (s.created, s.id.as_str()),
            None => true,
        });
        let out: Vec<_> = it.by_ref().take(page.limit).cloned().collect();
        let next = it.next().map(|(c, id)| {
            Cursor {
                created: *c,
                id: id.clone(),
            }
            .encode()
        });
        Listing {
            rows: out,
            next_start_key: next,
        }
    }

    async fn scan(
        rows: &[(i64, String)],
        paging: &Paging,
        keep: impl Fn(i64) -> bool,
    ) -> (Vec<Value>, Option<String>) {
        scan_filtered(
            paging,
            async |page| Ok(store_pages(rows, page)),
            async |r: &(i64, String)| Ok(keep(r.0).then(|| json!(r.0))),
            |r: &(i64, String)| Cursor {
                created: r.0,
                id: r.1.clone(),
            },
        )
        .await
        .unwrap()
    }

    fn rows(n: i64) -> Vec<(i64, String)> {
        (0..n).rev().map(|i| (i, format!("id{i:06}"))).collect()
    }

    #[tokio::test]
    async fn filtered_pages_come_back_full() {
        let rows = rows(1000);
        let q = HashMap::from([("page_size".to_string(), "3".to_string())]);
        let mut p = Paging::from_query(&q).unwrap();
        let mut seen = Vec::new();
        loop {
            let (page, next) = scan(&rows, &p, |c| c % 100 == 7).await;
            if next.is_some() {
                assert_eq!(page.len(), 3, "a page that is not the last is full");
            }
            seen.extend(page);
            match next {
                Some(k) => p.start_key = Some(k),
                None => break,
            }
        }
        let want: Vec<Value> = (0..10).rev().map(|i| json!(i * 100 + 7)).collect();
        assert_eq!(seen, want);
    }

    #[tokio::test]
    async fn a_scan_stops_at_its_bound_and_goes_on_from_there() {
        let n = FILTER_SCAN_MAX as i64 + 50;
        let rows = rows(n);
        let mut p = Paging::from_query(&HashMap::new()).unwrap();
        // Only the oldest row passes: the first answer stops after the bound with a key.
        let (page, next) = scan(&rows, &p, |c| c == 0).await;
        assert!(page.is_empty());
        let next = next.expect("a key to go on from");
        assert_eq!(
            Cursor::decode(&next).unwrap().created,
            n - 1 - FILTER_SCAN_MAX as i64
        );
        p.start_key = Some(next);
        let (page, next) = scan(&rows, &p, |c| c == 0).await;
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
