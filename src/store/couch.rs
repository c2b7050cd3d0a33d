//! The `couchdb` store: CouchDB 3 over HTTP with couch_rs, Kazoo's database layout.
//!
//! Documents, views and attachments go through one reqwest client (no gzip, connect and read
//! timeouts; attachments are streamed both ways, never held in memory). Change feeds use
//! couch_rs's continuous `_changes` stream: one follower task per subscribed database feeds a
//! broadcast channel and reconnects when the feed drops. Database names are percent-encoded
//! exactly once, here (`account/xx/yy/rest` → `account%2Fxx%2Fyy%2Frest`), and a read never
//! creates a database (couch_rs's `Client::db` would, so it is not used).
//!
//! Semantics follow the embedded store (`sqlite.rs`), which is the reference: the typed queue
//! methods return the same rows in the same order, and the few places where CouchDB answers
//! differently (a missing attachment on delete, a revision for a missing document) are
//! reconciled here.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use futures_util::StreamExt;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue,
};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::{
    AccountId, Attachment, Backend, ByteStream, Change, CreatedRange, Cursor, Db, FaxboxAddress,
    JobRow, Listing, ModbFilter, ModbRow, NewAttachment, Page, Result, SmtpLogRow, Store,
    StoreError, job_row, months_in_range, views,
};
use crate::model::JobStatus;

/// Time allowed to open a TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest silence while reading a response (a view index build answers only when done).
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// `ping` answers within this, so a health check never hangs.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Pooled connections idle longer than this are not reused (servers close idle keep-alive
/// connections; node's default is 5 s, and reusing one as it closes fails the request).
const POOL_IDLE: Duration = Duration::from_secs(4);
/// Whole-request limit of the change feed client. CouchDB ends an idle continuous feed after
/// 60 s (couch_rs asks for `timeout=60000`) and the stream reconnects; this catches a feed
/// whose connection died silently.
const FEED_REQUEST_TIMEOUT_SECS: u64 = 90;
/// Capacity of each database's change channel.
const CHANGE_CAPACITY: usize = 4096;
/// Change feed reconnect delay: first and longest.
const FEED_BACKOFF_MIN: Duration = Duration::from_millis(100);
const FEED_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often an idempotent request (GET/HEAD) is retried after a dropped connection.
const READ_RETRIES: usize = 2;
/// Most months a MODB listing walks (as the embedded store).
const MODB_MONTHS: usize = 240;

/// The CouchDB store.
pub struct CouchStore {
    http: reqwest::Client,
    /// Server URL without credentials.
    base: Url,
    /// Path prefix of `base` without a trailing '/' (empty unless CouchDB sits behind a
    /// path-routing proxy).
    base_path: String,
    /// couch_rs client (its own connection pool), used for the change feeds.
    couch: couch_rs::Client,
    feeds: Mutex<HashMap<Db, Feed>>,
}

/// A subscribed database: its channel and the task following its `_changes`.
struct Feed {
    tx: broadcast::Sender<Change>,
    task: JoinHandle<()>,
}

impl Drop for CouchStore {
    fn drop(&mut self) {
        if let Ok(feeds) = self.feeds.lock() {
            for feed in feeds.values() {
                feed.task.abort();
            }
        }
    }
}

/// A JSON reply.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    body: Value,
}

impl Reply {
    fn field(&self, key: &str) -> &str {
        self.body.get(key).and_then(Value::as_str).unwrap_or("")
    }

    fn reason(&self) -> &str {
        self.field("reason")
    }

    fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// A 404 that says the database does not exist.
    fn db_missing(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
            && matches!(self.reason(), "Database does not exist." | "no_db_file")
    }

    /// A 404 that says the document (or attachment, or design document) does not exist.
    fn doc_missing(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
            && matches!(
                self.reason(),
                "missing" | "deleted" | "Document is missing attachment"
            )
    }

    fn rev(&self) -> Result<String> {
        self.body
            .get("rev")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| StoreError::Backend(format!("CouchDB reply without rev: {}", self.body)))
    }
}

/// What a 404 was about.
enum Missing {
    Db,
    Doc,
}

/// Maps a transport failure (no HTTP answer) to a store error.
fn transport(e: reqwest::Error) -> StoreError {
    if e.is_builder() || e.is_decode() || e.is_redirect() {
        StoreError::Backend(format!("CouchDB request failed: {e}"))
    } else {
        StoreError::Unavailable(format!("CouchDB unreachable: {e}"))
    }
}

/// Maps an unexpected HTTP answer to a store error.
fn unexpected(db: &Db, what: &str, r: &Reply) -> StoreError {
    let detail = format!(
        "{what}: HTTP {} {} {}",
        r.status,
        r.field("error"),
        r.reason()
    );
    match r.status.as_u16() {
        409 => StoreError::Conflict,
        404 if r.db_missing() => StoreError::NoDatabase(db.name()),
        400 | 412 | 413 | 415 => StoreError::Invalid(detail),
        502..=504 => StoreError::Unavailable(detail),
        _ => StoreError::Backend(detail),
    }
}

/// Percent-encodes one URL path segment: everything but unreserved characters, so a
/// database name's '/' becomes `%2F` (once).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (URL user info; also the Kazoo import's source URL).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits `http://user:pass@host:5984/` into the URL without credentials and the credentials.
fn split_credentials(url: &str) -> Result<(Url, Option<(String, String)>)> {
    let mut u =
        Url::parse(url.trim()).map_err(|e| StoreError::Invalid(format!("bad CouchDB URL: {e}")))?;
    if u.cannot_be_a_base() || !matches!(u.scheme(), "http" | "https") {
        return Err(StoreError::Invalid(
            "bad CouchDB URL: expected http(s)://[user:pass@]host[:port]".into(),
        ));
    }
    let user = percent_decode(u.username());
    let pass = u.password().map(percent_decode);
    let creds = if !user.is_empty() || pass.is_some() {
        Some((user, pass.unwrap_or_default()))
    } else {
        None
    };
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    Ok((u, creds))
}

/// The URL path segments of a document id (`_design/x` and `_local/x` keep their '/').
fn doc_segments(id: &str) -> Vec<&str> {
    for prefix in ["_design", "_local"] {
        if let Some(rest) = id.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) {
            return vec![prefix, rest];
        }
    }
    vec![id]
}

fn json_param(v: &Value) -> String {
    v.to_string()
}

/// A key range walked newest first: `start` (and `start_docid` for a cursor) down to `end`.
/// What of a view row a scan reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RowPart {
    Doc,
    Value,
}

struct DescRange {
    start: Value,
    start_docid: Option<String>,
    end: Value,
    /// Rows at the cursor's `created` with a greater id are dropped client-side (servers
    /// that ignore `startkey_docid`, such as PouchDB, return them).
    after: Option<Cursor>,
}

/// Builds `prefix ++ tail` as a JSON array key.
fn key(prefix: &[Value], tail: &[Value]) -> Value {
    Value::Array(prefix.iter().chain(tail).cloned().collect())
}

/// The key range of a listing whose view key ends in `created`, or `None` when the range is
/// empty. With `id_in_key`, the key ends in `[created, id]` (MODB `list_by_folder`).
fn desc_range(
    prefix: &[Value],
    range: CreatedRange,
    cursor: Option<Cursor>,
    id_in_key: bool,
) -> Option<DescRange> {
    let (start, start_docid, after, top) = match cursor {
        Some(c) if c.created <= range.to => {
            if id_in_key {
                (
                    key(prefix, &[json!(c.created), json!(c.id)]),
                    None,
                    None,
                    c.created,
                )
            } else {
                (
                    key(prefix, &[json!(c.created)]),
                    Some(c.id.clone()),
                    Some(c.clone()),
                    c.created,
                )
            }
        }
        // Everything at `range.to`, whatever the id: [.., to, {}] sorts after [.., to] and
        // after [.., to, <any id>].
        _ => (
            key(prefix, &[json!(range.to), json!({})]),
            None,
            None,
            range.to,
        ),
    };
    if range.from > top {
        return None;
    }
    Some(DescRange {
        start,
        start_docid,
        end: key(prefix, &[json!(range.from)]),
        after,
    })
}

/// Splits `limit + 1` rows into a page and its continuation key (as the embedded store).
fn paginate<T>(mut rows: Vec<T>, limit: usize, key: impl Fn(&T) -> Cursor) -> Listing<T> {
    let next = if rows.len() > limit {
        let next = key(&rows[limit]).encode();
        rows.truncate(limit);
        Some(next)
    } else {
        None
    };
    Listing {
        rows,
        next_start_key: next,
    }
}

fn io_other(e: reqwest::Error) -> io::Error {
    io::Error::other(e)
}

impl CouchStore {
    /// Connects to CouchDB at `url` (`http://[user:pass@]host:5984`) and checks that it answers
    /// as a CouchDB. [`StoreError::Unavailable`] when it cannot be reached.
    pub async fn connect(url: &str) -> Result<CouchStore> {
        let store = Self::new(url)?;
        store.ping().await?;
        Ok(store)
    }

    /// A store for `url` without contacting the server (every call reports
    /// [`StoreError::Unavailable`] while it is down).
    pub fn new(url: &str) -> Result<CouchStore> {
        let (base, creds) = split_credentials(url)?;
        let mut headers = HeaderMap::new();
        if let Some((user, pass)) = &creds {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            let mut value = HeaderValue::from_str(&format!("Basic {token}"))
                .map_err(|e| StoreError::Invalid(format!("bad CouchDB credentials: {e}")))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .no_gzip()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| StoreError::Backend(format!("HTTP client: {e}")))?;
        let couch = couch_rs::Client::new_with_timeout(
            base.as_str(),
            creds.as_ref().map(|(u, _)| u.as_str()),
            creds.as_ref().map(|(_, p)| p.as_str()),
            Some(FEED_REQUEST_TIMEOUT_SECS),
        )
        .map_err(|e| StoreError::Backend(format!("couch_rs client: {e}")))?;
        let base_path = base.path().trim_end_matches('/').to_string();
        Ok(CouchStore {
            http,
            base,
            base_path,
            couch,
            feeds: Mutex::new(HashMap::new()),
        })
    }

    /// The server URL (without credentials).
    pub fn url(&self) -> &Url {
        &self.base
    }

    /// A URL from path segments (each encoded once).
    fn url_of(&self, segments: &[&str]) -> Url {
        let mut path = self.base_path.clone();
        for s in segments {
            path.push('/');
            path.push_str(&encode_segment(s));
        }
        if path.is_empty() {
            path.push('/');
        }
        let mut u = self.base.clone();
        u.set_path(&path);
        u
    }

    fn db_url(&self, db: &Db) -> Url {
        self.url_of(&[&db.name()])
    }

    fn doc_url(&self, db: &Db, id: &str) -> Url {
        let name = db.name();
        let mut segments = vec![name.as_str()];
        segments.extend(doc_segments(id));
        self.url_of(&segments)
    }

    fn attachment_url(&self, db: &Db, id: &str, att: &str) -> Url {
        let name = db.name();
        let mut segments = vec![name.as_str()];
        segments.extend(doc_segments(id));
        segments.push(att);
        self.url_of(&segments)
    }

    /// Sends a request with an optional JSON body and reads the (small) JSON reply. GET and
    /// HEAD are retried when a pooled connection turns out to be dead.
    async fn request(&self, method: Method, url: Url, body: Option<&Value>) -> Result<Reply> {
        let idempotent = method == Method::GET || method == Method::HEAD;
        let _timer = crate::metrics::store_timer(if idempotent {
            crate::metrics::StoreOp::Read
        } else {
            crate::metrics::StoreOp::Write
        });
        let payload = match body {
            Some(b) => Some(
                serde_json::to_vec(b)
                    .map_err(|e| StoreError::Invalid(format!("unserialisable document: {e}")))?,
            ),
            None => None,
        };
        let mut attempt = 0;
        loop {
            let mut rb = self
                .http
                .request(method.clone(), url.clone())
                .header(ACCEPT, "application/json");
            if let Some(p) = &payload {
                rb = rb.header(CONTENT_TYPE, "application/json").body(p.clone());
            }
            let result = async {
                let resp = rb.send().await?;
                let status = resp.status();
                let bytes = resp.bytes().await?;
                Ok::<_, reqwest::Error>((status, bytes))
            }
            .await;
            match result {
                Ok((status, bytes)) => {
                    let body = if bytes.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                            Value::String(String::from_utf8_lossy(&bytes).into_owned())
                        })
                    };
                    return Ok(Reply { status, body });
                }
                Err(e)
                    if idempotent
                        && attempt < READ_RETRIES
                        && !e.is_connect()
                        && !e.is_timeout()
                        && !e.is_builder() =>
                {
                    attempt += 1;
                    tracing::debug!(%method, path = url.path(), error = %e, attempt,
                        "CouchDB request failed on a reused connection; retrying");
                }
                Err(e) => return Err(transport(e)),
            }
        }
    }

    /// Reads a document with query parameters (`rev`, `conflicts`); `None` if it is missing.
    async fn get_with(&self, db: &Db, id: &str, query: &[(&str, &str)]) -> Result<Option<Value>> {
        let mut url = self.doc_url(db, id);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let reply = self.request(Method::GET, url, None).await?;
        if reply.ok() {
            return match reply.body {
                Value::Object(_) => Ok(Some(reply.body)),
                other => Err(StoreError::Backend(format!(
                    "document {id} is not a JSON object: {other}"
                ))),
            };
        }
        if reply.status == StatusCode::NOT_FOUND {
            return match self.classify_404(db, &reply).await? {
                Missing::Db => Err(StoreError::NoDatabase(db.name())),
                Missing::Doc => Ok(None),
            };
        }
        Err(unexpected(db, "read document", &reply))
    }

    /// Test support: stores `doc` as a child of revision `parent` (`None`: a first revision)
    /// with the revision `<generation + 1>-<hash>`, as a replica of another CouchDB node
    /// would have accepted a concurrent write (`_bulk_docs` with `new_edits: false`): the
    /// document then has conflicting leaves when `parent` already has a child (or the
    /// document a first revision). Returns the new revision.
    #[cfg(test)]
    pub(crate) async fn write_replicated(
        &self,
        db: &Db,
        parent: Option<&str>,
        hash: &str,
        mut doc: Value,
    ) -> Result<String> {
        let (generation, mut ids) = match parent {
            None => (0, vec![]),
            Some(p) => p
                .split_once('-')
                .and_then(|(n, h)| Some((n.parse::<u64>().ok()?, vec![json!(h)])))
                .ok_or_else(|| StoreError::Invalid(format!("bad revision {p}")))?,
        };
        ids.insert(0, json!(hash));
        let rev = format!("{}-{hash}", generation + 1);
        doc["_rev"] = json!(rev);
        doc["_revisions"] = json!({"start": generation + 1, "ids": ids});
        let body = json!({"new_edits": false, "docs": [doc]});
        let url = self.url_of(&[&db.name(), "_bulk_docs"]);
        let reply = self.request(Method::POST, url, Some(&body)).await?;
        let failed = reply
            .body
            .as_array()
            .is_none_or(|rows| rows.iter().any(|r| r.get("error").is_some()));
        if !reply.ok() || failed {
            return Err(unexpected(db, "replicated write", &reply));
        }
        Ok(rev)
    }

    /// Decides what a 404 was about, asking the server when the reason is not conclusive.
    async fn classify_404(&self, db: &Db, reply: &Reply) -> Result<Missing> {
        if reply.db_missing() {
            Ok(Missing::Db)
        } else if reply.doc_missing() || self.db_exists(db).await? {
            Ok(Missing::Doc)
        } else {
            Ok(Missing::Db)
        }
    }

    /// Installs (or updates) the design documents of `db`; a design document whose content is
    /// already current is not written.
    async fn install_design_docs(&self, db: &Db) -> Result<()> {
        for wanted in views::design_docs(db) {
            let Some(id) = wanted.get("_id").and_then(Value::as_str) else {
                continue;
            };
            let url = self.doc_url(db, id);
            let mut done = false;
            for _ in 0..5 {
                let current = self.request(Method::GET, url.clone(), None).await?;
                let mut doc = wanted.clone();
                if current.ok() {
                    let mut have = current.body.clone();
                    let rev = have.as_object_mut().and_then(|m| m.remove("_rev"));
                    if have == wanted {
                        done = true;
                        break;
                    }
                    if let (Some(rev), Some(m)) = (rev, doc.as_object_mut()) {
                        m.insert("_rev".into(), rev);
                    }
                } else if current.status != StatusCode::NOT_FOUND || current.db_missing() {
                    return Err(unexpected(db, "read design document", &current));
                }
                let put = self.request(Method::PUT, url.clone(), Some(&doc)).await?;
                if put.ok() {
                    tracing::info!(db = %db, design = id, "installed CouchDB design document");
                    done = true;
                    break;
                }
                if put.status != StatusCode::CONFLICT {
                    return Err(unexpected(db, "write design document", &put));
                }
                // Someone else (another node booting) wrote it meanwhile: compare again.
                tracing::debug!(db = %db, design = id, "design document changed concurrently; retrying");
            }
            if !done {
                return Err(StoreError::Conflict);
            }
        }
        Ok(())
    }

    /// The documents `_all_docs` lists with `params` (`include_docs`; design documents
    /// included), without attachment stubs; an absent database is [`StoreError::NoDatabase`].
    async fn all_docs(&self, db: &Db, params: &[(&str, String)]) -> Result<Vec<Value>> {
        let mut url = self.url_of(&[&db.name(), "_all_docs"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("include_docs", "true");
            for (k, v) in params {
                q.append_pair(k, v);
            }
        }
        let reply = self.request(Method::GET, url, None).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Err(StoreError::NoDatabase(db.name()));
        }
        if !reply.ok() {
            return Err(unexpected(db, "list documents", &reply));
        }
        let Some(Value::Array(rows)) = reply.body.get("rows") else {
            return Err(StoreError::Backend("_all_docs: reply without rows".into()));
        };
        Ok(rows
            .iter()
            .filter_map(|row| row.get("doc"))
            .filter(|doc| doc.is_object())
            .map(|doc| {
                let mut doc = doc.clone();
                if let Some(m) = doc.as_object_mut() {
                    m.remove("_attachments");
                }
                doc
            })
            .collect())
    }

    /// Queries a view; `None` when the database does not exist. A missing design document is
    /// installed and the query retried once.
    async fn view(
        &self,
        db: &Db,
        design: &str,
        view: &str,
        params: &[(&str, String)],
    ) -> Result<Option<Vec<Value>>> {
        for attempt in 0..2 {
            let mut url = self.url_of(&[&db.name(), "_design", design, "_view", view]);
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
            }
            let reply = self.request(Method::GET, url, None).await?;
            if reply.ok() {
                let rows = match reply.body.get("rows") {
                    Some(Value::Array(rows)) => rows.clone(),
                    _ => {
                        return Err(StoreError::Backend(format!(
                            "view {design}/{view}: reply without rows"
                        )));
                    }
                };
                return Ok(Some(rows));
            }
            if reply.status == StatusCode::NOT_FOUND {
                match self.classify_404(db, &reply).await? {
                    Missing::Db => return Ok(None),
                    Missing::Doc if attempt == 0 => {
                        tracing::warn!(db = %db, design, view,
                            "view missing; installing the design documents");
                        self.install_design_docs(db).await?;
                        continue;
                    }
                    Missing::Doc => {}
                }
            }
            return Err(unexpected(db, &format!("view {design}/{view}"), &reply));
        }
        Err(StoreError::Backend(format!(
            "view {design}/{view} unavailable"
        )))
    }

    /// A view's rows with their documents (`include_docs`).
    async fn view_docs(
        &self,
        db: &Db,
        design: &str,
        view: &str,
        mut params: Vec<(&str, String)>,
    ) -> Result<Vec<Value>> {
        params.push(("include_docs", "true".into()));
        let rows = self
            .view(db, design, view, &params)
            .await?
            .unwrap_or_default();
        Ok(rows
            .into_iter()
            .filter_map(|mut row| row.get_mut("doc").map(Value::take))
            .filter(Value::is_object)
            .collect())
    }

    /// A page of `limit` rows over the `faxes` design's `view` in the account's MODBs, newest
    /// month first (months without a database are skipped): keys start with `prefix`,
    /// created within `range`, from `cursor` on; the next key is the first row left out.
    #[allow(clippy::too_many_arguments)]
    async fn modb_view_page<T>(
        &self,
        account: &AccountId,
        view: &str,
        prefix: &[Value],
        id_in_key: bool,
        range: CreatedRange,
        cursor: Option<Cursor>,
        limit: usize,
        convert: impl Fn(&Value) -> Option<T>,
        position: impl Fn(&T) -> (i64, &str),
    ) -> Result<Listing<T>> {
        let want = limit.saturating_add(1);
        let mut rows: Vec<T> = Vec::new();
        if let Some(r) = desc_range(prefix, range, cursor, id_in_key) {
            let existing = self.account_modbs(account).await;
            for month in months_in_range(range, MODB_MONTHS) {
                let db = Db::Modb(account.clone(), month);
                if let Some(names) = &existing
                    && !names.contains(&db.name())
                {
                    continue;
                }
                let left = want - rows.len();
                let got = self
                    .scan_desc(
                        &db,
                        "faxes",
                        view,
                        &r,
                        left,
                        RowPart::Value,
                        &convert,
                        &position,
                    )
                    .await?;
                rows.extend(got.unwrap_or_default());
                if rows.len() >= want {
                    break;
                }
            }
        }
        Ok(paginate(rows, limit, |t| {
            let (created, id) = position(t);
            Cursor {
                created,
                id: id.to_string(),
            }
        }))
    }

    /// Walks a view newest first from `r.start` to `r.end`, collecting up to `want` rows that
    /// `convert` accepts, given each row's document (`RowPart::Doc`, `include_docs`) or only
    /// the value the view emits (`RowPart::Value`: the index alone, no document read).
    /// `None` when the database does not exist.
    #[allow(clippy::too_many_arguments)]
    async fn scan_desc<T>(
        &self,
        db: &Db,
        design: &str,
        view: &str,
        r: &DescRange,
        want: usize,
        part: RowPart,
        convert: impl Fn(&Value) -> Option<T>,
        position: impl Fn(&T) -> (i64, &str),
    ) -> Result<Option<Vec<T>>> {
        let mut out: Vec<T> = Vec::new();
        let mut skip = 0usize;
        while out.len() < want {
            let batch = want - out.len();
            let mut params: Vec<(&str, String)> = vec![
                ("descending", "true".into()),
                ("include_docs", (part == RowPart::Doc).to_string()),
                ("startkey", json_param(&r.start)),
                ("endkey", json_param(&r.end)),
                ("limit", batch.to_string()),
            ];
            if let Some(docid) = &r.start_docid {
                params.push(("startkey_docid", docid.clone()));
            }
            if skip > 0 {
                params.push(("skip", skip.to_string()));
            }
            let Some(rows) = self.view(db, design, view, &params).await? else {
                return Ok(if skip == 0 { None } else { Some(out) });
            };
            let got = rows.len();
            skip += got;
            for row in &rows {
                let item = match part {
                    RowPart::Doc => row.get("doc"),
                    RowPart::Value => row.get("value"),
                };
                let Some(item) = item.and_then(&convert) else {
                    continue;
                };
                if let Some(c) = &r.after {
                    let (created, id) = position(&item);
                    if created > c.created || (created == c.created && id > c.id.as_str()) {
                        continue;
                    }
                }
                out.push(item);
            }
            if got < batch {
                break;
            }
        }
        out.truncate(want);
        Ok(Some(out))
    }

    /// A queued-jobs listing of the faxes database (`list_by_*` views keyed `[.., created]`).
    async fn list_jobs(
        &self,
        view: &str,
        prefix: Vec<Value>,
        range: CreatedRange,
        page: &Page,
    ) -> Result<Listing<JobRow>> {
        let cursor = page.start_key.as_deref().map(Cursor::decode).transpose()?;
        let want = page.limit.saturating_add(1);
        let rows = match desc_range(&prefix, range, cursor, false) {
            Some(r) => self
                .scan_desc(
                    &Db::Faxes,
                    "faxes",
                    view,
                    &r,
                    want,
                    RowPart::Value,
                    JobRow::from_view_value,
                    |j: &JobRow| (j.created, j.id.as_str()),
                )
                .await?
                .unwrap_or_default(),
            None => Vec::new(),
        };
        Ok(paginate(rows, page.limit, |r| Cursor {
            created: r.created,
            id: r.id.clone(),
        }))
    }

    /// Names of the account's MODBs, when the server lists databases (CouchDB 3 lets only
    /// admins do that by default; `None` then, and each month is asked for in turn).
    async fn account_modbs(&self, account: &AccountId) -> Option<HashSet<String>> {
        let prefix = format!("{}-", account.db_name());
        let mut url = self.url_of(&["_all_dbs"]);
        url.query_pairs_mut()
            .append_pair("startkey", &json_param(&json!(prefix)))
            .append_pair("endkey", &json_param(&json!(format!("{prefix}\u{fff0}"))));
        match self.request(Method::GET, url, None).await {
            Ok(reply) if reply.ok() => reply.body.as_array().map(|names| {
                names
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|n| n.starts_with(&prefix))
                    .map(str::to_string)
                    .collect()
            }),
            Ok(reply) => {
                tracing::debug!(status = %reply.status, "cannot list databases; probing each month");
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot list databases; probing each month");
                None
            }
        }
    }

    /// The current update sequence of a database, `None` if it does not exist.
    async fn update_seq(&self, db: &Db) -> Result<Option<Value>> {
        let reply = self.request(Method::GET, self.db_url(db), None).await?;
        if reply.ok() {
            Ok(reply.body.get("update_seq").cloned())
        } else if reply.status == StatusCode::NOT_FOUND {
            Ok(None)
        } else {
            Err(unexpected(db, "read database info", &reply))
        }
    }
}

/// Follows one database's `_changes` forever, feeding `tx`. Reconnects (resuming at the last
/// sequence seen) whenever the feed drops; a missing database is waited for.
async fn follow(
    couch: couch_rs::Client,
    db: Db,
    path: String,
    mut since: Option<Value>,
    tx: broadcast::Sender<Change>,
) {
    let mut backoff = FEED_BACKOFF_MIN;
    let mut db_missing = false;
    loop {
        let database = couch_rs::database::Database::new(path.clone(), couch.clone());
        let mut stream = database.changes(since.clone());
        stream.set_infinite(true);
        let mut failure = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    backoff = FEED_BACKOFF_MIN;
                    if db_missing {
                        tracing::info!(db = %db, "change feed: database exists now");
                        db_missing = false;
                    }
                    since = Some(event.seq.clone());
                    if event.id.starts_with("_design/") {
                        continue;
                    }
                    let Some(rev) = event.changes.first().map(|c| c.rev.clone()) else {
                        continue;
                    };
                    let _ = tx.send(Change {
                        db: db.clone(),
                        id: event.id,
                        rev,
                        deleted: event.deleted,
                    });
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(seq) = stream.last_seq() {
            since = Some(seq.clone());
        }
        match failure {
            Some(e) if e.status() == Some(StatusCode::NOT_FOUND) => {
                // Gone (or not created yet): when it appears, every change in it is new.
                since = None;
                if !db_missing {
                    tracing::warn!(db = %db, "change feed: database does not exist; waiting for it");
                    db_missing = true;
                }
            }
            Some(e) => {
                tracing::warn!(db = %db, error = %e, retry_in = ?backoff,
                    "change feed dropped; reconnecting");
            }
            None => {
                tracing::warn!(db = %db, retry_in = ?backoff, "change feed ended; reconnecting");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(FEED_BACKOFF_MAX);
    }
}

/// Wraps an upload so that a failure of the caller's stream is reported as that I/O error
/// rather than as a failed HTTP request.
fn watch_upload(
    body: ByteStream,
    slot: Arc<Mutex<Option<io::Error>>>,
) -> impl futures_util::Stream<Item = std::result::Result<bytes::Bytes, io::Error>> + Send + 'static
{
    body.map(move |chunk| match chunk {
        Ok(b) => Ok(b),
        Err(e) => {
            let copy = io::Error::new(e.kind(), e.to_string());
            if let Ok(mut s) = slot.lock() {
                *s = Some(e);
            }
            Err(copy)
        }
    })
}

#[async_trait]
impl Store for CouchStore {
    fn backend(&self) -> Backend {
        Backend::Couchdb
    }

    async fn ping(&self) -> Result<()> {
        let resp = self
            .http
            .get(self.url_of(&[]))
            .header(ACCEPT, "application/json")
            .timeout(PING_TIMEOUT)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(format!("CouchDB unreachable: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(StoreError::Unavailable(format!(
                "CouchDB answered {status}"
            )));
        }
        let body: Value = resp
            .json()
            .await
            .map_err(|e| StoreError::Unavailable(format!("CouchDB unreadable: {e}")))?;
        if body.get("couchdb").is_none() {
            return Err(StoreError::Backend(format!(
                "{} does not answer as a CouchDB",
                self.base
            )));
        }
        Ok(())
    }

    async fn ensure_db(&self, db: &Db) -> Result<()> {
        let reply = self.request(Method::PUT, self.db_url(db), None).await?;
        match reply.status {
            StatusCode::CREATED | StatusCode::ACCEPTED => {
                tracing::info!(db = %db, "created CouchDB database");
            }
            StatusCode::PRECONDITION_FAILED => {}
            _ => return Err(unexpected(db, "create database", &reply)),
        }
        self.install_design_docs(db).await
    }

    async fn db_exists(&self, db: &Db) -> Result<bool> {
        let reply = self.request(Method::HEAD, self.db_url(db), None).await?;
        match reply.status {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(unexpected(db, "check database", &reply)),
        }
    }

    async fn delete_db(&self, db: &Db) -> Result<()> {
        let reply = self.request(Method::DELETE, self.db_url(db), None).await?;
        if reply.ok() || reply.status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(unexpected(db, "delete database", &reply))
        }
    }

    async fn get(&self, db: &Db, id: &str) -> Result<Option<Value>> {
        self.get_with(db, id, &[]).await
    }

    /// `GET ?conflicts=true` names the losing leaves; each is read at its revision (one
    /// request more per conflict, none when there is none). A conflict removed meanwhile is
    /// left out.
    async fn get_leaves(&self, db: &Db, id: &str) -> Result<Vec<Value>> {
        let Some(mut winner) = self.get_with(db, id, &[("conflicts", "true")]).await? else {
            return Ok(Vec::new());
        };
        let conflicts = match winner.as_object_mut().and_then(|o| o.remove("_conflicts")) {
            Some(Value::Array(revs)) => revs,
            _ => Vec::new(),
        };
        let mut leaves = vec![winner];
        for rev in conflicts.iter().filter_map(Value::as_str) {
            if let Some(doc) = self.get_with(db, id, &[("rev", rev)]).await?
                && doc.get("_deleted").and_then(Value::as_bool) != Some(true)
            {
                leaves.push(doc);
            }
        }
        Ok(leaves)
    }

    async fn save(&self, db: &Db, doc: Value) -> Result<Value> {
        self.save_with_attachments(db, doc, Vec::new()).await
    }

    /// One PUT of the document with the new attachments inline (base64), which CouchDB
    /// stores as one revision.
    async fn save_with_attachments(
        &self,
        db: &Db,
        doc: Value,
        attachments: Vec<NewAttachment>,
    ) -> Result<Value> {
        let Value::Object(mut doc) = doc else {
            return Err(StoreError::Invalid(
                "a document must be a JSON object".into(),
            ));
        };
        let id = match doc.get("_id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            None => crate::ids::new_id(),
            Some(other) => return Err(StoreError::Invalid(format!("bad _id {other}"))),
        };
        match doc.get("_rev") {
            Some(Value::String(_)) => {}
            None | Some(Value::Null) => {
                doc.remove("_rev");
            }
            Some(other) => return Err(StoreError::Invalid(format!("bad _rev {other}"))),
        }
        if let Some(Value::Object(atts)) = doc.get("_attachments")
            && atts.values().any(|a| a.get("data").is_some())
        {
            return Err(StoreError::Invalid(
                "inline attachment data is not supported; store attachments separately".into(),
            ));
        }
        if id.starts_with('_') && !id.starts_with("_design/") {
            return Err(StoreError::Invalid(format!("reserved document id '{id}'")));
        }
        doc.insert("_id".into(), Value::String(id.clone()));
        let mut stubs = Vec::with_capacity(attachments.len());
        if !attachments.is_empty() {
            let atts = doc
                .entry("_attachments")
                .or_insert_with(|| Value::Object(Map::new()));
            if !atts.is_object() {
                *atts = Value::Object(Map::new());
            }
            for a in attachments {
                if a.name.is_empty() || a.name.starts_with('_') {
                    return Err(StoreError::Invalid(format!(
                        "bad attachment name '{}'",
                        a.name
                    )));
                }
                let data = base64::engine::general_purpose::STANDARD.encode(&a.data);
                atts[a.name.as_str()] = json!({"content_type": a.content_type, "data": data});
                stubs.push((
                    a.name,
                    json!({"content_type": a.content_type, "length": a.data.len(), "stub": true}),
                ));
            }
        }
        let body = Value::Object(doc);
        let reply = self
            .request(Method::PUT, self.doc_url(db, &id), Some(&body))
            .await?;
        if reply.ok() {
            let rev = reply.rev()?;
            let Value::Object(mut doc) = body else {
                return Err(StoreError::Backend("document vanished".into()));
            };
            doc.insert("_rev".into(), Value::String(rev));
            for (name, stub) in stubs {
                doc["_attachments"][name.as_str()] = stub;
            }
            return Ok(Value::Object(doc));
        }
        if reply.status == StatusCode::NOT_FOUND {
            return match self.classify_404(db, &reply).await? {
                Missing::Db => Err(StoreError::NoDatabase(db.name())),
                // A revision of a document that does not exist.
                Missing::Doc => Err(StoreError::Conflict),
            };
        }
        Err(unexpected(db, "save document", &reply))
    }

    async fn delete(&self, db: &Db, id: &str, rev: &str) -> Result<String> {
        let mut url = self.doc_url(db, id);
        url.query_pairs_mut().append_pair("rev", rev);
        let reply = self.request(Method::DELETE, url, None).await?;
        if reply.ok() {
            return reply.rev();
        }
        match reply.status {
            StatusCode::NOT_FOUND => match self.classify_404(db, &reply).await? {
                Missing::Db => Err(StoreError::NoDatabase(db.name())),
                Missing::Doc => Err(StoreError::NotFound(id.to_string())),
            },
            // A stale revision of a live document is a conflict; of a deleted one, not found.
            StatusCode::CONFLICT => match self.get(db, id).await? {
                Some(_) => Err(StoreError::Conflict),
                None => Err(StoreError::NotFound(id.to_string())),
            },
            _ => Err(unexpected(db, "delete document", &reply)),
        }
    }

    async fn put_attachment(
        &self,
        db: &Db,
        id: &str,
        rev: Option<&str>,
        name: &str,
        content_type: &str,
        body: ByteStream,
    ) -> Result<String> {
        if name.is_empty() || name.starts_with('_') {
            return Err(StoreError::Invalid(format!("bad attachment name '{name}'")));
        }
        let ct = HeaderValue::from_str(content_type)
            .map_err(|_| StoreError::Invalid(format!("bad content type '{content_type}'")))?;
        let mut url = self.attachment_url(db, id, name);
        if let Some(rev) = rev {
            url.query_pairs_mut().append_pair("rev", rev);
        }
        let upload_error = Arc::new(Mutex::new(None));
        let stream = watch_upload(body, upload_error.clone());
        let sent = self
            .http
            .put(url)
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, ct)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await;
        let taken = upload_error.lock().ok().and_then(|mut s| s.take());
        if let Some(e) = taken {
            return Err(StoreError::Io(e));
        }
        let resp = sent.map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        let reply = Reply {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        };
        if reply.ok() {
            return reply.rev();
        }
        match reply.status {
            StatusCode::CONFLICT => Err(StoreError::Conflict),
            StatusCode::NOT_FOUND => match self.classify_404(db, &reply).await? {
                Missing::Db => Err(StoreError::NoDatabase(db.name())),
                // A revision of a document that does not exist.
                Missing::Doc => Err(StoreError::Conflict),
            },
            _ => Err(unexpected(db, "store attachment", &reply)),
        }
    }

    async fn get_attachment(&self, db: &Db, id: &str, name: &str) -> Result<Option<Attachment>> {
        let url = self.attachment_url(db, id, name);
        let mut attempt = 0;
        let resp = loop {
            match self.http.get(url.clone()).send().await {
                Ok(resp) => break resp,
                Err(e)
                    if attempt < READ_RETRIES
                        && !e.is_connect()
                        && !e.is_timeout()
                        && !e.is_builder() =>
                {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "attachment request failed; retrying");
                }
                Err(e) => return Err(transport(e)),
            }
        };
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.map_err(transport)?;
            let reply = Reply {
                status,
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            if status == StatusCode::NOT_FOUND {
                return match self.classify_404(db, &reply).await? {
                    Missing::Db => Err(StoreError::NoDatabase(db.name())),
                    Missing::Doc => Ok(None),
                };
            }
            return Err(unexpected(db, "read attachment", &reply));
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_string();
        let header_length = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let length = match header_length {
            Some(n) => n,
            // Sent chunked: the stub knows the length.
            None => self
                .get(db, id)
                .await?
                .and_then(|doc| doc["_attachments"][name]["length"].as_u64())
                .unwrap_or(0),
        };
        Ok(Some(Attachment {
            content_type,
            length,
            body: Box::pin(resp.bytes_stream().map(|chunk| chunk.map_err(io_other))),
        }))
    }

    async fn delete_attachment(&self, db: &Db, id: &str, rev: &str, name: &str) -> Result<String> {
        // CouchDB (and servers imitating it) disagree on a missing attachment or document;
        // check first, the DELETE itself is still revision-checked.
        let Some(doc) = self.get(db, id).await? else {
            return Err(StoreError::Conflict);
        };
        if doc.get("_rev").and_then(Value::as_str) != Some(rev) {
            return Err(StoreError::Conflict);
        }
        if doc.get("_attachments").and_then(|a| a.get(name)).is_none() {
            return Err(StoreError::NotFound(format!("{id}/{name}")));
        }
        let mut url = self.attachment_url(db, id, name);
        url.query_pairs_mut().append_pair("rev", rev);
        let reply = self.request(Method::DELETE, url, None).await?;
        if reply.ok() {
            return reply.rev();
        }
        match reply.status {
            StatusCode::NOT_FOUND if reply.db_missing() => Err(StoreError::NoDatabase(db.name())),
            StatusCode::NOT_FOUND => Err(StoreError::NotFound(format!("{id}/{name}"))),
            _ => Err(unexpected(db, "delete attachment", &reply)),
        }
    }

    async fn schedule_accounts(&self) -> Result<Vec<(AccountId, u64)>> {
        let params = [("group", "true".to_string()), ("reduce", "true".into())];
        let rows = self
            .view(&Db::Faxes, "faxes", "schedule_accounts", &params)
            .await?
            .unwrap_or_default();
        let mut out: Vec<(AccountId, u64)> = rows
            .iter()
            .filter_map(|row| {
                let account = AccountId::parse(row.get("key")?.as_str()?).ok()?;
                let count = row.get("value")?.as_f64()?;
                (count >= 1.0).then_some((account, count as u64))
            })
            .collect();
        out.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        Ok(out)
    }

    async fn queue_depth(&self) -> Result<Vec<(String, u64)>> {
        let params = [("group", "true".to_string()), ("reduce", "true".into())];
        let rows = self
            .view(&Db::Faxes, "faxes", "queue_depth", &params)
            .await?
            .unwrap_or_default();
        Ok(rows
            .iter()
            .filter_map(|row| {
                let status = row.get("key")?.as_str()?.to_string();
                let count = row.get("value")?.as_u64()?;
                (count > 0).then_some((status, count))
            })
            .collect())
    }

    async fn jobs_by_account(&self, account: &AccountId, limit: usize) -> Result<Vec<JobRow>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let a = account.as_str();
        let params = vec![
            ("startkey", json_param(&json!([a]))),
            ("endkey", json_param(&json!([a, {}]))),
            ("limit", limit.to_string()),
        ];
        let docs = self
            .view_docs(&Db::Faxes, "faxes", "jobs_by_account", params)
            .await?;
        Ok(docs.iter().filter_map(job_row).collect())
    }

    async fn locked_jobs_by_account(&self, account: &AccountId) -> Result<Vec<JobRow>> {
        let params = vec![("key", json_param(&json!(account.as_str())))];
        let docs = self
            .view_docs(&Db::Faxes, "faxes", "locked_jobs_by_account", params)
            .await?;
        let mut rows: Vec<JobRow> = docs.iter().filter_map(job_row).collect();
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(rows)
    }

    async fn processing_by_node(&self, node: Option<&str>) -> Result<Vec<JobRow>> {
        let params = match node {
            Some(n) => vec![("key", json_param(&json!(n)))],
            None => Vec::new(),
        };
        let docs = self
            .view_docs(&Db::Faxes, "faxes", "processing_by_node", params)
            .await?;
        let mut rows: Vec<JobRow> = docs.iter().filter_map(job_row).collect();
        // Byte order, nodeless first (as SQLite's ORDER BY), not CouchDB's ICU collation.
        rows.sort_by(|a, b| (&a.node, &a.id).cmp(&(&b.node, &b.id)));
        Ok(rows)
    }

    async fn stale_jobs(&self, status: JobStatus, modified_before: i64) -> Result<Vec<JobRow>> {
        let params = vec![
            ("startkey", json_param(&json!([status.as_str()]))),
            (
                "endkey",
                json_param(&json!([status.as_str(), modified_before])),
            ),
        ];
        let docs = self
            .view_docs(&Db::Faxes, "faxes", "jobs_by_state", params)
            .await?;
        let mut rows: Vec<JobRow> = docs.iter().filter_map(job_row).collect();
        rows.sort_by(|a, b| (a.modified, &a.id).cmp(&(b.modified, &b.id)));
        Ok(rows)
    }

    async fn list_by_account_state(
        &self,
        account: &AccountId,
        status: Option<JobStatus>,
        range: CreatedRange,
        page: Page,
    ) -> Result<Listing<JobRow>> {
        let a = json!(account.as_str());
        match status {
            Some(s) => {
                self.list_jobs(
                    "list_by_account_state",
                    vec![a, json!(s.as_str())],
                    range,
                    &page,
                )
                .await
            }
            None => {
                self.list_jobs("list_by_account", vec![a], range, &page)
                    .await
            }
        }
    }

    async fn list_by_faxbox_state(
        &self,
        faxbox_id: &str,
        status: Option<JobStatus>,
        range: CreatedRange,
        page: Page,
    ) -> Result<Listing<JobRow>> {
        let b = json!(faxbox_id);
        match status {
            Some(s) => {
                self.list_jobs(
                    "list_by_faxbox_state",
                    vec![b, json!(s.as_str())],
                    range,
                    &page,
                )
                .await
            }
            None => {
                self.list_jobs("list_by_faxbox", vec![b], range, &page)
                    .await
            }
        }
    }

    async fn faxbox_by_email(&self, address: &str) -> Result<Option<FaxboxAddress>> {
        let address = address.trim().to_ascii_lowercase();
        let params = [
            ("key", json_param(&json!(address))),
            ("limit", "1".to_string()),
        ];
        let rows = self
            .view(&Db::Faxes, "faxbox", "email_address", &params)
            .await?
            .unwrap_or_default();
        Ok(rows.first().and_then(|row| {
            let account = row.get("value")?.as_str()?;
            Some(FaxboxAddress {
                account_id: AccountId::parse(account).ok()?,
                faxbox_id: row.get("id")?.as_str()?.to_string(),
            })
        }))
    }

    async fn modb_list(
        &self,
        account: &AccountId,
        filter: &ModbFilter,
        range: CreatedRange,
        page: Page,
    ) -> Result<Listing<ModbRow>> {
        let cursor = page.start_key.as_deref().map(Cursor::decode).transpose()?;
        let (view, prefix, id_in_key) = match filter {
            ModbFilter::Folder(f) => ("list_by_folder", vec![json!(f.as_str())], true),
            ModbFilter::Faxbox(b, f) => {
                ("list_by_faxbox", vec![json!(b), json!(f.as_str())], false)
            }
            ModbFilter::Owner(o, f) => {
                ("list_by_ownerid", vec![json!(o), json!(f.as_str())], false)
            }
        };
        self.modb_view_page(
            account,
            view,
            &prefix,
            id_in_key,
            range,
            cursor,
            page.limit,
            ModbRow::from_view_value,
            |m: &ModbRow| (m.created, m.id.as_str()),
        )
        .await
    }

    async fn smtp_logs(
        &self,
        account: &AccountId,
        range: CreatedRange,
        page: Page,
    ) -> Result<Listing<SmtpLogRow>> {
        let cursor = page.start_key.as_deref().map(Cursor::decode).transpose()?;
        self.modb_view_page(
            account,
            "smtp_log",
            &[],
            true,
            range,
            cursor,
            page.limit,
            SmtpLogRow::from_view_value,
            |m: &SmtpLogRow| (m.created, m.id.as_str()),
        )
        .await
    }

    async fn notify_due(&self, db: &Db, due_by: i64, limit: usize) -> Result<Vec<String>> {
        let params = [("endkey", due_by.to_string()), ("limit", limit.to_string())];
        let rows = self
            .view(db, "notify", "pending", &params)
            .await?
            .unwrap_or_default();
        Ok(rows
            .iter()
            .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_string))
            .collect())
    }

    async fn docs_by_type(&self, db: &Db, pvt_type: &str) -> Result<Vec<Value>> {
        let docs = self.all_docs(db, &[]).await?;
        Ok(docs
            .into_iter()
            .filter(|doc| doc.get("pvt_type").and_then(Value::as_str) == Some(pvt_type))
            .collect())
    }

    async fn docs_with_prefix(&self, db: &Db, prefix: &str) -> Result<Vec<Value>> {
        // JSON-encoded keys; U+FFF0 sorts after every character an id here is made of.
        let start = Value::String(prefix.to_string()).to_string();
        let end = Value::String(format!("{prefix}\u{fff0}")).to_string();
        self.all_docs(db, &[("startkey", start), ("endkey", end)])
            .await
    }

    async fn subscribe(&self, db: &Db) -> Result<broadcast::Receiver<Change>> {
        {
            let feeds = self
                .feeds
                .lock()
                .map_err(|_| StoreError::Backend("feed lock poisoned".into()))?;
            if let Some(feed) = feeds.get(db)
                && !feed.task.is_finished()
            {
                return Ok(feed.tx.subscribe());
            }
        }
        // Start after the current sequence, so that every write after this call returns is
        // delivered even if the feed connects a little later.
        let since = self.update_seq(db).await?;
        let mut feeds = self
            .feeds
            .lock()
            .map_err(|_| StoreError::Backend("feed lock poisoned".into()))?;
        if let Some(feed) = feeds.get(db)
            && !feed.task.is_finished()
        {
            return Ok(feed.tx.subscribe());
        }
        let (tx, rx) = broadcast::channel(CHANGE_CAPACITY);
        // couch_rs replaces the URL path: give it the whole path, prefix included.
        let path = format!("{}/{}", self.base_path, encode_segment(&db.name()));
        let task = tokio::spawn(follow(
            self.couch.clone(),
            db.clone(),
            path,
            since,
            tx.clone(),
        ));
        tracing::debug!(db = %db, "following CouchDB changes");
        feeds.insert(db.clone(), Feed { tx, task });
        Ok(rx)
    }
}

/// Test support: the CouchDB named by `FAXD_TEST_COUCH_URL` (the CouchDB-API test server).
#[cfg(test)]
pub(crate) async fn test_server() -> CouchStore {
    let url = std::env::var("FAXD_TEST_COUCH_URL").expect(
        "FAXD_TEST_COUCH_URL is not set: run the suite with `make test`, which starts the \
         CouchDB-API test server, or point it at a CouchDB 3",
    );
    CouchStore::connect(&url).await.expect("connect")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_encoded_once() {
        assert_eq!(
            encode_segment("account/ab/cd/0123-202611"),
            "account%2Fab%2Fcd%2F0123-202611"
        );
        assert_eq!(encode_segment("faxes"), "faxes");
        assert_eq!(encode_segment("a b+c?d#e%f"), "a%20b%2Bc%3Fd%23e%25f");
        let store = CouchStore::new("http://127.0.0.1:5984").unwrap();
        let a = AccountId::parse("0123456789abcdef0123456789abcdef").unwrap();
        let modb = Db::Modb(a.clone(), crate::ids::YearMonth::new(2026, 11).unwrap());
        assert_eq!(
            store.doc_url(&modb, "202611-abc").as_str(),
            "http://127.0.0.1:5984/account%2F01%2F23%2F456789abcdef0123456789abcdef-202611/202611-abc"
        );
        assert_eq!(
            store.doc_url(&Db::Faxes, "_design/faxes").as_str(),
            "http://127.0.0.1:5984/faxes/_design/faxes"
        );
        assert_eq!(
            store
                .attachment_url(&Db::Account(a), "x/y", "fax file.tiff")
                .as_str(),
            "http://127.0.0.1:5984/account%2F01%2F23%2F456789abcdef0123456789abcdef/x%2Fy/fax%20file.tiff"
        );
        assert_eq!(store.url_of(&[]).as_str(), "http://127.0.0.1:5984/");
    }

    #[test]
    fn credentials_leave_the_url() {
        let (u, creds) = split_credentials("http://admin:p%40ss@db.example:5984/").unwrap();
        assert_eq!(u.as_str(), "http://db.example:5984/");
        assert_eq!(creds, Some(("admin".into(), "p@ss".into())));
        let (u, creds) = split_credentials("https://db.example/couch/").unwrap();
        assert_eq!(u.as_str(), "https://db.example/couch/");
        assert_eq!(creds, None);
        assert!(split_credentials("not a url").is_err());
        assert!(split_credentials("ftp://x/").is_err());
        let store = CouchStore::new("https://u:p@db.example/couch/").unwrap();
        assert_eq!(
            store.db_url(&Db::Faxes).as_str(),
            "https://db.example/couch/faxes"
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }

    #[test]
    fn listing_ranges_start_at_the_cursor_or_the_range_top() {
        let range = CreatedRange { from: 100, to: 200 };
        let prefix = [json!("acct")];
        let r = desc_range(&prefix, range, None, false).unwrap();
        assert_eq!(r.start, json!(["acct", 200, {}]));
        assert_eq!(r.end, json!(["acct", 100]));
        assert!(r.start_docid.is_none() && r.after.is_none());

        let c = Cursor {
            created: 150,
            id: "b".into(),
        };
        let r = desc_range(&prefix, range, Some(c.clone()), false).unwrap();
        assert_eq!(r.start, json!(["acct", 150]));
        assert_eq!(r.start_docid.as_deref(), Some("b"));
        assert_eq!(r.after, Some(c.clone()));

        let r = desc_range(&prefix, range, Some(c), true).unwrap();
        assert_eq!(r.start, json!(["acct", 150, "b"]));
        assert!(r.start_docid.is_none() && r.after.is_none());

        // A cursor above the range: the range top.
        let high = Cursor {
            created: 900,
            id: "z".into(),
        };
        let r = desc_range(&prefix, range, Some(high), false).unwrap();
        assert_eq!(r.start, json!(["acct", 200, {}]));
        // Empty ranges query nothing.
        assert!(desc_range(&prefix, CreatedRange { from: 5, to: 4 }, None, false).is_none());
        let low = Cursor {
            created: 50,
            id: "a".into(),
        };
        assert!(desc_range(&prefix, range, Some(low), false).is_none());
    }

    #[test]
    fn document_ids_map_to_path_segments() {
        assert_eq!(doc_segments("_design/faxes"), vec!["_design", "faxes"]);
        assert_eq!(doc_segments("_local/x/y"), vec!["_local", "x/y"]);
        assert_eq!(doc_segments("_designer"), vec!["_designer"]);
        assert_eq!(doc_segments("202611-abc"), vec!["202611-abc"]);
    }

    #[test]
    fn pages_split_with_the_next_key() {
        let rows = vec![(3, "c"), (2, "b"), (1, "a")];
        let l = paginate(rows.clone(), 2, |r| Cursor {
            created: r.0,
            id: r.1.to_string(),
        });
        assert_eq!(l.rows, vec![(3, "c"), (2, "b")]);
        let next = Cursor::decode(l.next_start_key.as_deref().unwrap()).unwrap();
        assert_eq!((next.created, next.id.as_str()), (1, "a"));
        let l = paginate(rows, 3, |r| Cursor {
            created: r.0,
            id: r.1.to_string(),
        });
        assert!(l.next_start_key.is_none());
    }

    #[tokio::test]
    async fn an_unreachable_server_is_unavailable() {
        // Port 9 (discard) on loopback: nothing listens there in a test environment.
        let store = CouchStore::new("http://127.0.0.1:9").unwrap();
        assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.get(&Db::Faxes, "x").await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            CouchStore::connect("http://127.0.0.1:9").await,
            Err(StoreError::Unavailable(_))
        ));
    }

    // ---- against a server (FAXD_TEST_COUCH_URL, set by `make test`): fail without one ----

    use crate::ids::{YearMonth, new_id};
    use crate::model::Folder;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{bytes_stream, read_all};

    async fn server() -> CouchStore {
        super::test_server().await
    }

    /// Conflicting leaves made as a CouchDB cluster makes them: `get_leaves` lists the
    /// winner (what `get` returns) and the conflict; a losing leaf can be deleted at its
    /// revision, after which the document is an ordinary one again.
    #[tokio::test]
    async fn conflicting_revisions_are_listed_and_deleted_like_couchdb_3() {
        let store = server().await;
        let db = Db::Account(AccountId::generate());
        store.ensure_db(&db).await.unwrap();
        let doc = store.save(&db, json!({"v": 0})).await.unwrap();
        let id = doc["_id"].as_str().unwrap().to_string();
        let parent = doc["_rev"].as_str().unwrap().to_string();
        assert_eq!(store.get_leaves(&db, &id).await.unwrap(), vec![doc.clone()]);
        let (low, high) = ("0".repeat(32), "f".repeat(32));
        let mut a = doc.clone();
        a["v"] = json!("a");
        let rev_a = store
            .write_replicated(&db, Some(&parent), &low, a)
            .await
            .unwrap();
        let mut b = doc.clone();
        b["v"] = json!("b");
        let rev_b = store
            .write_replicated(&db, Some(&parent), &high, b)
            .await
            .unwrap();
        // CouchDB's winner: same generation, higher hash.
        let leaves = store.get_leaves(&db, &id).await.unwrap();
        let revs: Vec<&str> = leaves.iter().map(|d| d["_rev"].as_str().unwrap()).collect();
        assert_eq!(revs, vec![rev_b.as_str(), rev_a.as_str()]);
        assert_eq!(leaves[1]["v"], "a");
        assert!(leaves.iter().all(|d| d.get("_conflicts").is_none()));
        assert_eq!(store.get(&db, &id).await.unwrap().unwrap()["v"], "b");
        // The parent is no leaf: writing on it conflicts.
        let mut stale = doc.clone();
        stale["v"] = json!("stale");
        assert!(matches!(
            store.save(&db, stale).await,
            Err(StoreError::Conflict)
        ));
        // Deleting the winning leaf leaves the other one, alone.
        store.delete(&db, &id, &rev_b).await.unwrap();
        let leaves = store.get_leaves(&db, &id).await.unwrap();
        assert_eq!(leaves.len(), 1);
        assert_eq!(leaves[0]["_rev"], rev_a.as_str());
        let mut next = leaves[0].clone();
        next["v"] = json!("a2");
        store.save(&db, next).await.unwrap();
        assert!(matches!(
            store.delete(&db, &id, &rev_b).await,
            Err(StoreError::Conflict)
        ));
        store.delete_db(&db).await.unwrap();
        assert!(matches!(
            store.get_leaves(&db, &id).await,
            Err(StoreError::NoDatabase(_))
        ));
    }

    async fn design_revs(store: &CouchStore, db: &Db) -> Vec<String> {
        let mut revs = Vec::new();
        for doc in views::design_docs(db) {
            let id = doc["_id"].as_str().unwrap();
            let got = store.get(db, id).await.unwrap().expect("design doc");
            revs.push(got["_rev"].as_str().unwrap().to_string());
        }
        revs
    }

    #[tokio::test]
    async fn design_documents_are_written_only_when_they_differ() {
        let store = server().await;
        let db = Db::Modb(AccountId::generate(), YearMonth::now());
        store.ensure_db(&db).await.unwrap();
        let first = design_revs(&store, &db).await;
        store.ensure_db(&db).await.unwrap();
        assert_eq!(design_revs(&store, &db).await, first, "second boot wrote");
        // An outdated design document is replaced.
        let mut old = store.get(&db, "_design/faxes").await.unwrap().unwrap();
        old["views"] = json!({"stale": {"map": "function (doc) { emit(doc._id, null); }"}});
        store.save(&db, old).await.unwrap();
        store.ensure_db(&db).await.unwrap();
        let now = store.get(&db, "_design/faxes").await.unwrap().unwrap();
        assert!(now["views"].get("list_by_folder").is_some());
        assert!(now["views"].get("stale").is_none());
        // A database created by someone else, without design documents: views install them.
        let bare = Db::Modb(AccountId::generate(), YearMonth::now());
        let reply = store
            .request(Method::PUT, store.db_url(&bare), None)
            .await
            .unwrap();
        assert!(reply.ok(), "{reply:?}");
        let a = bare.account().unwrap().clone();
        let id = format!("{}-{}", YearMonth::now(), new_id());
        store
            .save(
                &bare,
                json!({"_id": id, "pvt_type": "fax", "pvt_created": crate::time::now_gregorian()}),
            )
            .await
            .unwrap();
        let l = store
            .modb_list(
                &a,
                &ModbFilter::Folder(Folder::Inbox),
                CreatedRange::all(),
                Page::first(10),
            )
            .await
            .unwrap();
        assert_eq!(l.rows.len(), 1);
        for d in [db, bare] {
            store.delete_db(&d).await.unwrap();
        }
    }

    #[tokio::test]
    async fn attachment_edge_cases_match_the_embedded_store() {
        let store = server().await;
        let db = Db::Account(AccountId::generate());
        store.ensure_db(&db).await.unwrap();
        let doc = store.save(&db, json!({"a": 1})).await.unwrap();
        let id = doc["_id"].as_str().unwrap().to_string();
        let rev1 = doc["_rev"].as_str().unwrap().to_string();
        let rev2 = store
            .put_attachment(
                &db,
                &id,
                Some(&rev1),
                "a b/c.pdf",
                "application/pdf",
                bytes_stream(&b"x"[..]),
            )
            .await
            .unwrap();
        let att = store
            .get_attachment(&db, &id, "a b/c.pdf")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read_all(att.body).await.unwrap(), b"x");
        // Missing attachment at the current revision: not found; stale revision: conflict;
        // missing document: conflict (as the embedded store).
        assert!(matches!(
            store.delete_attachment(&db, &id, &rev2, "nope").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.delete_attachment(&db, &id, &rev1, "a b/c.pdf").await,
            Err(StoreError::Conflict)
        ));
        assert!(matches!(
            store.delete_attachment(&db, &new_id(), "1-abc", "x").await,
            Err(StoreError::Conflict)
        ));
        assert!(matches!(
            store
                .put_attachment(
                    &db,
                    &id,
                    None,
                    "_bad",
                    "text/plain",
                    bytes_stream(&b"x"[..])
                )
                .await,
            Err(StoreError::Invalid(_))
        ));
        // A failing upload stream is reported as the I/O error it is.
        let failing: ByteStream = Box::pin(futures_util::stream::iter(vec![
            Ok(bytes::Bytes::from_static(b"part")),
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "client went away",
            )),
        ]));
        assert!(matches!(
            store
                .put_attachment(
                    &db,
                    &id,
                    Some(&rev2),
                    "f.bin",
                    "application/octet-stream",
                    failing
                )
                .await,
            Err(StoreError::Io(_))
        ));
        assert!(
            store
                .get_attachment(&db, &id, "f.bin")
                .await
                .unwrap()
                .is_none()
        );
        let missing = Db::Account(AccountId::generate());
        assert!(matches!(
            store.get_attachment(&missing, "x", "y").await,
            Err(StoreError::NoDatabase(_))
        ));
        assert!(matches!(
            store
                .put_attachment(
                    &missing,
                    "x",
                    None,
                    "y",
                    "text/plain",
                    bytes_stream(&b"x"[..])
                )
                .await,
            Err(StoreError::NoDatabase(_))
        ));
        assert!(!store.db_exists(&missing).await.unwrap());
        store.delete_db(&db).await.unwrap();
    }

    #[tokio::test]
    async fn a_feed_subscribed_before_its_database_exists_sees_it_appear() {
        let store = server().await;
        let db = Db::Account(AccountId::generate());
        let mut feed = store.subscribe(&db).await.unwrap();
        assert!(
            !store.db_exists(&db).await.unwrap(),
            "subscribe created the db"
        );
        store.ensure_db(&db).await.unwrap();
        let saved = store.save(&db, json!({"x": 1})).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let c = tokio::time::timeout_at(deadline, feed.recv())
                .await
                .expect("change within 15 s")
                .unwrap();
            assert!(!c.id.starts_with("_design/"));
            if c.id == saved["_id"] {
                break;
            }
        }
        store.delete_db(&db).await.unwrap();
    }

    /// A TCP proxy whose connections can all be cut at once; counts the connections it took.
    async fn cutting_proxy(
        target: String,
    ) -> (
        String,
        tokio::sync::watch::Sender<u64>,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut_tx, cut_rx) = tokio::sync::watch::channel(0u64);
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let target = target.clone();
                let mut cut = cut_rx.clone();
                cut.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        (format!("http://{addr}"), cut_tx, accepted)
    }

    async fn wait_for(feed: &mut broadcast::Receiver<Change>, ids: &mut HashSet<String>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !ids.is_empty() {
            let c = tokio::time::timeout_at(deadline, feed.recv())
                .await
                .unwrap_or_else(|_| panic!("{} changes never arrived", ids.len()))
                .unwrap();
            ids.remove(&c.id);
        }
    }

    #[tokio::test]
    async fn a_dropped_feed_reconnects_without_losing_changes() {
        let direct = server().await;
        let target = direct.url().host_str().unwrap().to_string()
            + ":"
            + &direct.url().port_or_known_default().unwrap().to_string();
        let (proxy_url, cut, accepted) = cutting_proxy(target).await;
        let via_proxy = CouchStore::connect(&proxy_url).await.unwrap();
        let db = Db::Account(AccountId::generate());
        direct.ensure_db(&db).await.unwrap();
        let mut feed = via_proxy.subscribe(&db).await.unwrap();
        let before = accepted.load(std::sync::atomic::Ordering::SeqCst);
        for round in 0..3u64 {
            // The feed is live: a marker written now arrives.
            let marker = direct.save(&db, json!({"marker": round})).await.unwrap();
            let mut ids = HashSet::from([marker["_id"].as_str().unwrap().to_string()]);
            wait_for(&mut feed, &mut ids).await;
            // Cut every proxied connection (the feed among them) and write while it is down.
            cut.send(round + 1).unwrap();
            for i in 0..3 {
                let d = direct
                    .save(&db, json!({"round": round, "i": i}))
                    .await
                    .unwrap();
                ids.insert(d["_id"].as_str().unwrap().to_string());
            }
            wait_for(&mut feed, &mut ids).await;
        }
        // The follower reconnected after each cut.
        let reconnects = accepted.load(std::sync::atomic::Ordering::SeqCst) - before;
        assert!(reconnects >= 3, "{reconnects} new connections");
        direct.delete_db(&db).await.unwrap();
    }

    fn fax(account: &AccountId, id: &str, status: &str, created: i64, faxbox: bool) -> Value {
        let mut doc = json!({
            "_id": id, "pvt_type": "fax", "pvt_account_id": account.as_str(),
            "pvt_job_status": status, "pvt_created": created, "pvt_modified": created + 5,
            "retry_after": (created % 3) * 10, "to_number": "+15550100",
            "from_number": "+15550200", "attempts": 0, "retries": 3,
        });
        if faxbox {
            doc["faxbox_id"] = json!(format!("fb-{}", account.as_str()));
        }
        doc
    }

    /// Every page of a listing, each with its continuation key.
    async fn all_pages<T: Clone>(
        limit: usize,
        mut list: impl AsyncFnMut(Page) -> Result<Listing<T>>,
    ) -> Vec<(Vec<T>, Option<String>)> {
        let mut pages = Vec::new();
        let mut page = Page::first(limit);
        for _ in 0..200 {
            let l = list(page.clone()).await.unwrap();
            pages.push((l.rows.clone(), l.next_start_key.clone()));
            match l.next_start_key {
                Some(k) => page.start_key = Some(k),
                None => return pages,
            }
        }
        panic!("paging does not end");
    }

    #[tokio::test]
    async fn typed_queries_return_what_the_embedded_store_returns() {
        let couch = server().await;
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteStore::open(dir.path()).await.unwrap();
        let stores: [&dyn Store; 2] = [&sqlite, &couch];
        let a = AccountId::generate();
        let t = crate::time::now_gregorian();
        let statuses = [
            "pending",
            "failed",
            "locked",
            "pending",
            "processing",
            "completed",
        ];
        // Created times with many ties, so pages end inside a run of equal keys.
        let mut docs = Vec::new();
        for i in 0..23i64 {
            let id = new_id();
            let mut d = fax(
                &a,
                &id,
                statuses[i as usize % statuses.len()],
                t - (i % 4),
                i % 3 != 0,
            );
            if i % 5 == 0 {
                d["pvt_job_node"] = json!(format!("node{}", i % 2));
            }
            docs.push(d);
        }
        let this = YearMonth::now();
        let last = this.prev();
        let mut modb_docs = Vec::new();
        for (m, t0) in [
            (this, this.start_gregorian() + 100),
            (last, last.start_gregorian() + 100),
        ] {
            for i in 0..9i64 {
                let mut d = json!({"_id": format!("{m}-{}", new_id()), "pvt_type": "fax",
                    "pvt_created": t0 + (i % 2), "owner_id": "u1"});
                if i % 3 != 0 {
                    d["folder"] = json!("outbox");
                    d["faxbox_id"] = json!("fb1");
                }
                modb_docs.push((Db::Modb(a.clone(), m), d));
            }
        }
        for store in stores {
            store.ensure_db(&Db::Faxes).await.unwrap();
            for d in &docs {
                store.save(&Db::Faxes, d.clone()).await.unwrap();
            }
            for m in [this, last] {
                store.ensure_db(&Db::Modb(a.clone(), m)).await.unwrap();
            }
            for (db, d) in &modb_docs {
                store.save(db, d.clone()).await.unwrap();
            }
        }
        let mine = |rows: Vec<JobRow>| -> Vec<JobRow> {
            rows.into_iter()
                .filter(|r| r.account_id == a.as_str())
                .collect()
        };
        let ranges = [
            CreatedRange::all(),
            CreatedRange {
                from: t - 2,
                to: t - 1,
            },
            CreatedRange {
                from: t - 1,
                to: t - 1,
            },
            CreatedRange { from: t, to: t - 3 },
        ];
        let all_rows = sqlite
            .list_by_account_state(&a, None, CreatedRange::all(), Page::first(100))
            .await
            .unwrap();
        assert_eq!(all_rows.rows.len(), docs.len());
        let inbox = sqlite
            .modb_list(
                &a,
                &ModbFilter::Folder(Folder::Inbox),
                CreatedRange::all(),
                Page::first(100),
            )
            .await
            .unwrap();
        assert_eq!(inbox.rows.len(), 6);
        let mut results: Vec<Vec<String>> = Vec::new();
        for store in stores {
            let mut out: Vec<String> = Vec::new();
            let sched: Vec<_> = store
                .schedule_accounts()
                .await
                .unwrap()
                .into_iter()
                .filter(|(x, _)| x == &a)
                .collect();
            out.push(format!("{sched:?}"));
            for limit in [1, 4, 100] {
                out.push(format!(
                    "{:?}",
                    store.jobs_by_account(&a, limit).await.unwrap()
                ));
            }
            out.push(format!(
                "{:?}",
                store.locked_jobs_by_account(&a).await.unwrap()
            ));
            out.push(format!(
                "{:?}",
                mine(store.processing_by_node(None).await.unwrap())
            ));
            out.push(format!(
                "{:?}",
                mine(store.processing_by_node(Some("node0")).await.unwrap())
            ));
            let faxbox = format!("fb-{}", a.as_str());
            for status in [None, Some(JobStatus::Pending), Some(JobStatus::Failed)] {
                for range in ranges {
                    for limit in [1, 2, 3, 5, 50] {
                        let by_account = all_pages(limit, async |p| {
                            store.list_by_account_state(&a, status, range, p).await
                        })
                        .await;
                        out.push(format!(
                            "account {status:?} {range:?} {limit}: {by_account:?}"
                        ));
                        let by_box = all_pages(limit, async |p| {
                            store.list_by_faxbox_state(&faxbox, status, range, p).await
                        })
                        .await;
                        out.push(format!("faxbox {status:?} {range:?} {limit}: {by_box:?}"));
                    }
                }
            }
            let filters = [
                ModbFilter::Folder(Folder::Inbox),
                ModbFilter::Folder(Folder::Outbox),
                ModbFilter::Faxbox("fb1".into(), Folder::Outbox),
                ModbFilter::Owner("u1".into(), Folder::Inbox),
                ModbFilter::Owner("u1".into(), Folder::Outbox),
            ];
            let modb_ranges = [
                CreatedRange::all(),
                CreatedRange {
                    from: this.start_gregorian(),
                    to: this.start_gregorian() + 100,
                },
            ];
            for filter in &filters {
                for range in modb_ranges {
                    for limit in [1, 2, 4, 50] {
                        let pages =
                            all_pages(limit, async |p| store.modb_list(&a, filter, range, p).await)
                                .await;
                        out.push(format!("modb {filter:?} {range:?} {limit}: {pages:?}"));
                    }
                }
            }
            results.push(out);
        }
        assert_eq!(results[0].len(), results[1].len());
        for (embedded, couchdb) in results[0].iter().zip(&results[1]) {
            assert_eq!(embedded, couchdb);
        }
        for d in &docs {
            if let Some(cur) = couch
                .get(&Db::Faxes, d["_id"].as_str().unwrap())
                .await
                .unwrap()
            {
                couch
                    .delete(
                        &Db::Faxes,
                        cur["_id"].as_str().unwrap(),
                        cur["_rev"].as_str().unwrap(),
                    )
                    .await
                    .unwrap();
            }
        }
        for m in [this, last] {
            couch.delete_db(&Db::Modb(a.clone(), m)).await.unwrap();
        }
    }
}
