//! Signed webhooks: a JSON POST (or the callback's `method`) per fax event to a faxbox's
//! `notifications.{inbound,outbound}.callback.url`, with the header
//! `X-Faxd-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` keyed by the
//! callback's `secret`. The URL passes the same server-side-request-forgery check as a
//! document URL ([`crate::intake::fetch`]); redirects are not followed.

use std::time::Duration;

use serde_json::Value;

use crate::intake::fetch::{FetchPolicy, checked_addr};

/// The signature header's name.
pub const SIGNATURE_HEADER: &str = "X-Faxd-Signature";

/// Removes the signing secrets of the callbacks in `doc` — a faxbox's
/// (`notifications.{inbound,outbound}.callback.secret`) and a fax job's, which carries its
/// faxbox's outbound notifications as its own (`notifications.callback.secret`) — for views
/// of documents that carry them.
pub fn hide_secrets(doc: &mut Value) {
    for path in [
        "/notifications/inbound/callback",
        "/notifications/outbound/callback",
        "/notifications/callback",
    ] {
        if let Some(cb) = doc.pointer_mut(path).and_then(Value::as_object_mut) {
            cb.remove("secret");
        }
    }
}

/// A faxbox's webhook for one direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Callback {
    pub url: String,
    /// `post` (default) or `put`.
    pub method: String,
    pub secret: String,
}

impl Callback {
    /// The callback of a faxbox for `direction` (`inbound`/`outbound`), if it has a URL.
    pub fn of_faxbox(faxbox: &Value, direction: &str) -> Option<Self> {
        let cb = faxbox.pointer(&format!("/notifications/{direction}/callback"))?;
        let s = |k: &str| cb.get(k).and_then(Value::as_str).unwrap_or_default();
        let url = s("url").trim();
        if url.is_empty() {
            return None;
        }
        Some(Self {
            url: url.to_string(),
            method: match s("method").to_ascii_lowercase().as_str() {
                "put" => "put".into(),
                _ => "post".into(),
            },
            secret: s("secret").to_string(),
        })
    }
}

/// The signature header value of `body` sent at `t` (unix seconds).
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    let mac = crate::auth::hmac_sha256(secret.as_bytes(), &signed);
    format!("t={t},v1={}", hex::encode(mac))
}

/// Sends one webhook. `Err` says why it was not delivered (retried later).
pub async fn send(
    cb: &Callback,
    body: &Value,
    timeout: Duration,
    allow_private: bool,
) -> Result<u16, String> {
    let url = reqwest::Url::parse(&cb.url).map_err(|e| format!("bad webhook URL: {e}"))?;
    let policy = FetchPolicy {
        max_bytes: 0,
        timeout,
        max_redirects: 0,
        allow_private,
    };
    let addr = checked_addr(&url, &policy).await?;
    let host = url.host_str().unwrap_or_default().to_string();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .resolve(&host, addr)
        .timeout(timeout)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let t = crate::time::now_unix();
    let req = if cb.method == "put" {
        client.put(url)
    } else {
        client.post(url)
    };
    let resp = req
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature(&cb.secret, t, &bytes))
        .body(bytes)
        .send()
        .await
        .map_err(|e| format!("webhook not delivered: {e}"))?;
    let status = resp.status().as_u16();
    if resp.status().is_success() {
        Ok(status)
    } else {
        Err(format!("webhook answered HTTP {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // Key "Jefe" (RFC 4231 case 2) over "0." + its data; the value is Python's
        // hmac.new(b"Jefe", b"0.what do ya want for nothing?", hashlib.sha256).
        let sig = signature("Jefe", 0, b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "t=0,v1=37f471929915ccd2cbbe79feb84ffcff4f2bb25e15fc41c2506687331ae179cc"
        );
    }

    #[test]
    fn a_faxbox_callback_needs_a_url() {
        let b = serde_json::json!({"notifications": {"outbound": {"callback":
            {"url": "https://hooks.example.com/fax", "method": "PUT", "secret": "s"}}}});
        let cb = Callback::of_faxbox(&b, "outbound").expect("callback");
        assert_eq!(cb.method, "put");
        assert_eq!(cb.secret, "s");
        assert!(Callback::of_faxbox(&b, "inbound").is_none());
    }

    #[test]
    fn secrets_are_hidden_from_faxboxes_and_from_the_jobs_that_copy_them() {
        let mut fb = serde_json::json!({"notifications": {
            "outbound": {"callback": {"url": "https://h.example/o", "secret": "s1"}},
            "inbound": {"callback": {"url": "https://h.example/i", "secret": "s2"}}}});
        let mut job = serde_json::json!({"notifications":
            {"callback": {"url": "https://h.example/o", "secret": "s1"}}});
        hide_secrets(&mut fb);
        hide_secrets(&mut job);
        for v in [&fb, &job] {
            assert!(!v.to_string().contains("\"secret\""), "{v}");
            assert!(v.to_string().contains("https://h.example/o"), "{v}");
        }
    }
}
