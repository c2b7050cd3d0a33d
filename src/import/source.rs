//! A read-only reader of a Kazoo 4.x CouchDB over HTTP: the list of databases, every
//! document of a database (paged `_all_docs`), one document, one attachment. It never writes
//! and never creates a database.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use serde_json::Value;

use super::ImportError;
use crate::store::couch::percent_decode;

/// Rows per `_all_docs` page.
const PAGE: usize = 500;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// The Kazoo CouchDB being imported from.
pub struct Source {
    http: reqwest::Client,
    /// Server URL without credentials.
    base: Url,
}

impl Source {
    /// A reader for `http(s)://[user:pass@]host:port[/prefix]`.
    pub fn new(url: &str) -> Result<Source, ImportError> {
        let mut base = Url::parse(url.trim()).map_err(|e| ImportError::Url(e.to_string()))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(ImportError::Url(
                "expected http(s)://[user:pass@]host[:port]".into(),
            ));
        }
        let mut headers = HeaderMap::new();
        if !base.username().is_empty() || base.password().is_some() {
            let user = percent_decode(base.username());
            let pass = percent_decode(base.password().unwrap_or(""));
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            let mut value = HeaderValue::from_str(&format!("Basic {token}"))
                .map_err(|e| ImportError::Url(format!("bad credentials: {e}")))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
            let _ = base.set_username("");
            let _ = base.set_password(None);
        }
        base.set_query(None);
        base.set_fragment(None);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| ImportError::Url(format!("HTTP client: {e}")))?;
        Ok(Source { http, base })
    }

    /// The server URL without credentials (for messages).
    pub fn url(&self) -> &Url {
        &self.base
    }

    /// A URL from path segments, each percent-encoded once (`account/xx/…` → `account%2Fxx…`).
    fn url_of(&self, segments: &[&str]) -> Url {
        let mut u = self.base.clone();
        if let Ok(mut path) = u.path_segments_mut() {
            path.pop_if_empty();
            for s in segments {
                path.push(s);
            }
        }
        u
    }

    fn fail(&self, what: &str, reason: impl std::fmt::Display) -> ImportError {
        ImportError::Source {
            url: format!("{}{what}", self.base),
            reason: reason.to_string(),
        }
    }

    /// GETs JSON; `None` on 404.
    async fn get_json(&self, url: Url, what: &str) -> Result<Option<Value>, ImportError> {
        let res = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| self.fail(what, e))?;
        if res.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !res.status().is_success() {
            let status = res.status();
            let body = res.text().await.unwrap_or_default();
            return Err(self.fail(what, format!("{status}: {}", body.trim())));
        }
        res.json().await.map(Some).map_err(|e| self.fail(what, e))
    }

    /// Answers when the server is a CouchDB that lets us read.
    pub async fn ping(&self) -> Result<(), ImportError> {
        self.all_dbs().await.map(|_| ())
    }

    /// Every database name (decoded: `account/xx/yy/rest`).
    pub async fn all_dbs(&self) -> Result<Vec<String>, ImportError> {
        let v = self
            .get_json(self.url_of(&["_all_dbs"]), "_all_dbs")
            .await?
            .ok_or_else(|| self.fail("_all_dbs", "not found: is this a CouchDB?"))?;
        let names = v
            .as_array()
            .ok_or_else(|| self.fail("_all_dbs", "not a list"))?;
        Ok(names
            .iter()
            .filter_map(Value::as_str)
            .map(|n| n.replace("%2F", "/").replace("%2f", "/"))
            .collect())
    }

    /// Every document of a database (design documents left out), in id order; an absent
    /// database has none.
    pub async fn all_docs(&self, db: &str) -> Result<Vec<Value>, ImportError> {
        let mut out = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let mut url = self.url_of(&[db, "_all_docs"]);
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("include_docs", "true");
                q.append_pair("limit", &PAGE.to_string());
                if let Some(s) = &start {
                    q.append_pair("startkey", &Value::String(s.clone()).to_string());
                    q.append_pair("skip", "1");
                }
            }
            let Some(page) = self.get_json(url, &format!("{db}/_all_docs")).await? else {
                return Ok(out);
            };
            let rows = page
                .get("rows")
                .and_then(Value::as_array)
                .ok_or_else(|| self.fail(db, "_all_docs without rows"))?;
            for row in rows {
                if let Some(doc) = row.get("doc").filter(|d| d.is_object())
                    && !doc
                        .get("_id")
                        .and_then(Value::as_str)
                        .is_some_and(|id| id.starts_with('_'))
                {
                    out.push(doc.clone());
                }
            }
            match rows
                .last()
                .and_then(|r| r.get("id"))
                .and_then(Value::as_str)
            {
                Some(last) if rows.len() >= PAGE => start = Some(last.to_string()),
                _ => return Ok(out),
            }
        }
    }

    /// One document, `None` when missing.
    pub async fn doc(&self, db: &str, id: &str) -> Result<Option<Value>, ImportError> {
        self.get_json(self.url_of(&[db, id]), &format!("{db}/{id}"))
            .await
    }

    /// One attachment's content type and bytes, `None` when missing.
    pub async fn attachment(
        &self,
        db: &str,
        id: &str,
        name: &str,
    ) -> Result<Option<(String, Bytes)>, ImportError> {
        let what = format!("{db}/{id}/{name}");
        let res = self
            .http
            .get(self.url_of(&[db, id, name]))
            .send()
            .await
            .map_err(|e| self.fail(&what, e))?;
        if res.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !res.status().is_success() {
            return Err(self.fail(&what, res.status()));
        }
        let ct = res
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_string();
        let data = res.bytes().await.map_err(|e| self.fail(&what, e))?;
        Ok(Some((ct, data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_database_names_once_and_drop_credentials() {
        let s = Source::new("http://kazoo:p%40ss@127.0.0.1:5984/").unwrap();
        assert_eq!(s.url().as_str(), "http://127.0.0.1:5984/");
        let u = s.url_of(&[
            "account/ab/cd/ef0123456789abcdef0123456789-202611",
            "_all_docs",
        ]);
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:5984/account%2Fab%2Fcd%2Fef0123456789abcdef0123456789-202611/_all_docs"
        );
        let behind_proxy = Source::new("https://h/couch").unwrap();
        assert_eq!(
            behind_proxy.url_of(&["faxes"]).as_str(),
            "https://h/couch/faxes"
        );
        assert_eq!(percent_decode("p%40ss"), "p@ss");
        assert_eq!(percent_decode("a%4"), "a%4");
        assert!(Source::new("ftp://h/").is_err());
        assert!(Source::new("not a url").is_err());
    }
}
