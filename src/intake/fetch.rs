//! Fetching a job's `document.url`: http/https only; every address the host resolves to must
//! be public (loopback, private, link-local, unique-local, multicast and unspecified addresses
//! are refused unless the policy allows them — server-side request forgery); the connection
//! goes to the address that was checked; a size limit, a time limit and a bounded number of
//! redirects, each re-checked.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use reqwest::Url;

use super::Document;

/// What a fetch may do.
#[derive(Clone, Debug)]
pub struct FetchPolicy {
    pub max_bytes: u64,
    pub timeout: Duration,
    pub max_redirects: usize,
    pub allow_private: bool,
}

impl FetchPolicy {
    /// The policy of the `[api]` section's `url_*` settings.
    pub fn from_config(api: &crate::config::ApiSection) -> Self {
        Self {
            max_bytes: api.url_max_bytes,
            timeout: Duration::from_secs(api.url_timeout_s.max(1)),
            max_redirects: api.url_max_redirects,
            allow_private: api.url_allow_private,
        }
    }
}

/// Whether an address is reachable only inside a host or a private network.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // CGNAT 100.64/10
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link local fe80::/10
                || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 to anything
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        }
    }
}

/// Resolves a URL's host and checks its addresses.
pub(crate) async fn checked_addr(url: &Url, policy: &FetchPolicy) -> Result<SocketAddr, String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "document URL scheme '{}' is not allowed (http or https only)",
            url.scheme()
        ));
    }
    let host = url.host_str().ok_or("document URL has no host")?;
    let port = url
        .port_or_known_default()
        .ok_or("document URL has no port")?;
    let host_for_lookup = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host_for_lookup, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let first = *addrs
        .first()
        .ok_or_else(|| format!("{host} has no address"))?;
    if !policy.allow_private && addrs.iter().any(|a| is_internal(a.ip())) {
        return Err(format!(
            "document URL host {host} resolves to an internal address; refused"
        ));
    }
    Ok(first)
}

/// Fetches a document (GET, or POST with `body`). The content type comes from the response,
/// else the URL's extension, else the first bytes.
pub async fn fetch(
    url: &str,
    post_body: Option<String>,
    policy: &FetchPolicy,
) -> Result<Document, String> {
    let work = async {
        let mut url = Url::parse(url).map_err(|e| format!("bad document URL: {e}"))?;
        let mut redirects = 0;
        loop {
            let addr = checked_addr(&url, policy).await?;
            let host = url.host_str().unwrap_or_default().to_string();
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .resolve(&host, addr)
                .timeout(policy.timeout)
                .build()
                .map_err(|e| format!("HTTP client: {e}"))?;
            let req = match &post_body {
                Some(b) => client.post(url.clone()).body(b.clone()),
                None => client.get(url.clone()),
            };
            let resp = req
                .send()
                .await
                .map_err(|e| format!("could not fetch the document: {e}"))?;
            let status = resp.status();
            if status.is_redirection() {
                redirects += 1;
                if redirects > policy.max_redirects {
                    return Err(format!(
                        "too many redirects (more than {})",
                        policy.max_redirects
                    ));
                }
                let loc = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or("redirect without a Location")?;
                url = url.join(loc).map_err(|e| format!("bad redirect: {e}"))?;
                continue;
            }
            if !status.is_success() {
                return Err(format!("document URL answered HTTP {}", status.as_u16()));
            }
            if let Some(len) = resp.content_length()
                && len > policy.max_bytes
            {
                return Err(format!(
                    "document is larger than {} bytes",
                    policy.max_bytes
                ));
            }
            let header_type = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| {
                    v.split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase()
                })
                .filter(|v| !v.is_empty() && v != "application/octet-stream");
            let mut buf = BytesMut::new();
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| format!("document download failed: {e}"))?;
                if (buf.len() + chunk.len()) as u64 > policy.max_bytes {
                    return Err(format!(
                        "document is larger than {} bytes",
                        policy.max_bytes
                    ));
                }
                buf.extend_from_slice(&chunk);
            }
            let bytes = buf.freeze();
            let by_ext = match url
                .path()
                .rsplit('.')
                .next()
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("pdf") => Some("application/pdf".to_string()),
                Some("tif") | Some("tiff") => Some("image/tiff".to_string()),
                _ => None,
            };
            let content_type = header_type
                .or(by_ext)
                .or_else(|| super::sniff(&bytes).map(str::to_string))
                .unwrap_or_else(|| "application/octet-stream".into());
            return Ok(Document {
                content_type,
                bytes,
            });
        }
    };
    tokio::time::timeout(policy.timeout, work)
        .await
        .map_err(|_| format!("document download took longer than {:?}", policy.timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(a.parse().unwrap()), "{a}");
        }
        for a in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_internal(a.parse().unwrap()), "{a}");
        }
    }

    #[tokio::test]
    async fn refuses_bad_schemes_and_internal_hosts() {
        let p = FetchPolicy {
            max_bytes: 10,
            timeout: Duration::from_secs(2),
            max_redirects: 1,
            allow_private: false,
        };
        assert!(
            fetch("file:///etc/passwd", None, &p)
                .await
                .unwrap_err()
                .contains("scheme")
        );
        assert!(
            fetch("ftp://x/y", None, &p)
                .await
                .unwrap_err()
                .contains("scheme")
        );
        let e = fetch("http://127.0.0.1:9/doc.pdf", None, &p)
            .await
            .unwrap_err();
        assert!(e.contains("internal"), "{e}");
        let e = fetch("http://localhost:9/doc.pdf", None, &p)
            .await
            .unwrap_err();
        assert!(e.contains("internal"), "{e}");
    }
}
