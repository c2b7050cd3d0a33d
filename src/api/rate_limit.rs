//! The API's request rate limits (Kazoo crossbar's token buckets, `[api.rate_limit]`): who a
//! request is counted against, and the middleware that charges it. Every request pays one
//! token from its client address's bucket; a login (`PUT /v2/user_auth`, `PUT /v2/api_auth`)
//! also takes one from the address's login bucket, and a failed one `failed_login_cost` in
//! all; an authenticated request pays one token from its account's bucket
//! ([`RateLimiter::charge_account`], called by [`super::authz`]). An empty bucket is a 429
//! with Kazoo's `too_many_requests` envelope and a `Retry-After` in whole seconds. The
//! buckets themselves are [`crate::ratelimit`].

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web;

use super::{ApiError, ApiState};
use crate::config::RateLimitSection;
use crate::ids::AccountId;
use crate::log_throttle::Throttle;
use crate::netblock::AllowList;
use crate::ratelimit::{Buckets, Key, Rate, Rates};

/// Refused requests are logged at most this often.
static REFUSED_LOG: Throttle = Throttle::new(Duration::from_secs(10), 5);

/// The node's buckets and how to find a request's client.
#[derive(Debug)]
pub struct RateLimiter {
    enabled: bool,
    failed_login_cost: f64,
    proxies: AllowList,
    buckets: Mutex<Buckets>,
}

impl RateLimiter {
    /// The limiter of a (checked, see [`RateLimitSection::check`]) configuration. Trusted
    /// proxies that do not parse are not trusted.
    pub fn new(cfg: &RateLimitSection) -> Self {
        let rate = |burst: u32, per_sec: f64| Rate {
            burst: f64::from(burst.max(1)),
            per_sec,
        };
        let rates = Rates {
            address: rate(cfg.address_burst, cfg.address_per_s),
            login: rate(cfg.login_burst, cfg.login_per_s),
            account: rate(cfg.account_burst, cfg.account_per_s),
        };
        let proxies = AllowList::parse(&cfg.trusted_proxies).unwrap_or_else(|e| {
            tracing::error!(error = %e, "api.rate_limit.trusted_proxies: no proxy is trusted");
            AllowList::default()
        });
        Self {
            enabled: cfg.enabled,
            failed_login_cost: f64::from(cfg.failed_login_cost.max(1)),
            proxies,
            buckets: Mutex::new(Buckets::new(rates, cfg.max_buckets, Instant::now())),
        }
    }

    /// Whether requests are limited at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn take(&self, key: Key, cost: f64) -> Result<(), ApiError> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets
            .take(key.clone(), cost, Instant::now())
            .map_err(|r| {
                drop(buckets);
                let secs = r.retry_after_secs();
                if let Some(unlogged) = REFUSED_LOG.check() {
                    tracing::warn!(bucket = ?key, retry_after = secs, unlogged,
                    "API request refused: rate limit");
                }
                ApiError::TooManyRequests(secs)
            })
    }

    fn charge(&self, key: Key, tokens: f64) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets.charge(key, tokens, Instant::now());
    }

    /// Charges one request to the account a verified token speaks for (not the account of the
    /// path, which anyone can name: a flood of refused requests must not lock a tenant out).
    pub fn charge_account(&self, account: &AccountId) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        self.take(Key::Account(account.as_str().to_string()), 1.0)
    }

    /// The address a request is counted under: the peer's, unless the peer is a trusted
    /// proxy; then the rightmost `X-Forwarded-For` hop that is not itself a trusted proxy
    /// (hops further left were written by the client and prove nothing).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer;
        if !self.proxies.allows(client) {
            return client;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.into_iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                break;
            };
            client = ip;
            if !self.proxies.allows(ip) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`192.0.2.1:4711`,
/// `[2001:db8::1]:4711`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

/// Whether a request is a login attempt.
fn is_login(req: &ServiceRequest) -> bool {
    req.method() == Method::PUT && matches!(req.path(), "/v2/user_auth" | "/v2/api_auth")
}

/// Whether a login answer says the credentials or the API key were wrong.
fn login_failed(status: StatusCode) -> bool {
    matches!(status, StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND)
}

/// The middleware on the whole API (inside the envelope middleware, so a 429 gets the
/// envelope, the request id and CORS): charges the client address, and the login bucket for a
/// login attempt. A request whose peer address is unknown (in-process tests) is not limited.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<ApiState>>().cloned();
    let (Some(state), Some(peer)) = (state, req.peer_addr()) else {
        return next.call(req).await;
    };
    let limits = &state.rate_limits;
    if !limits.enabled() {
        return next.call(req).await;
    }
    let client = Key::client(limits.client(peer.ip(), req.headers()));
    if let Err(e) = limits.take(Key::Address(client), 1.0) {
        return Ok(req.error_response(e));
    }
    if !is_login(&req) {
        return next.call(req).await;
    }
    // A login needs one token to be tried; a failed one then pays the rest of its price,
    // into debt if need be (a burst of parallel guesses is paid for afterwards).
    let login = Key::Login(client);
    if let Err(e) = limits.take(login.clone(), 1.0) {
        return Ok(req.error_response(e));
    }
    let res = next.call(req).await?;
    if login_failed(res.status()) {
        limits.charge(login, limits.failed_login_cost - 1.0);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn limiter(proxies: &[&str]) -> RateLimiter {
        RateLimiter::new(&RateLimitSection {
            trusted_proxies: proxies.iter().map(|s| s.to_string()).collect(),
            ..RateLimitSection::default()
        })
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        // No trusted proxy: the header is ignored, whatever it says.
        let l = limiter(&[]);
        assert_eq!(
            l.client(ip("198.51.100.7"), &xff(&["203.0.113.1"])),
            ip("198.51.100.7")
        );
        // Behind the proxy: the rightmost hop the proxies did not write; what the client
        // wrote to the left of it is not believed.
        let l = limiter(&["10.0.0.0/8"]);
        assert_eq!(
            l.client(ip("10.0.0.2"), &xff(&["1.1.1.1, 203.0.113.9"])),
            ip("203.0.113.9")
        );
        assert_eq!(
            l.client(ip("10.0.0.2"), &xff(&["1.1.1.1", "203.0.113.9, 10.0.0.5"])),
            ip("203.0.113.9"),
            "a chain of trusted proxies, over two header lines"
        );
        assert_eq!(
            l.client(ip("10.0.0.2"), &xff(&["[2001:db8::5]:4711"])),
            ip("2001:db8::5")
        );
        // No header, or garbage: the proxy itself (or the last good hop).
        assert_eq!(l.client(ip("10.0.0.2"), &xff(&[])), ip("10.0.0.2"));
        assert_eq!(
            l.client(ip("10.0.0.2"), &xff(&["203.0.113.9, nonsense"])),
            ip("10.0.0.2")
        );
        // A peer outside the proxy list is never replaced.
        assert_eq!(
            l.client(ip("192.0.2.1"), &xff(&["203.0.113.9"])),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn a_disabled_limiter_never_refuses_an_account() {
        let l = RateLimiter::new(&RateLimitSection {
            enabled: false,
            account_burst: 1,
            ..RateLimitSection::default()
        });
        let a = AccountId::parse("0123456789abcdef0123456789abcdef").unwrap();
        for _ in 0..10 {
            l.charge_account(&a).unwrap();
        }
        let l = RateLimiter::new(&RateLimitSection {
            account_burst: 1,
            account_per_s: 0.5,
            ..RateLimitSection::default()
        });
        l.charge_account(&a).unwrap();
        match l.charge_account(&a) {
            Err(ApiError::TooManyRequests(secs)) => assert_eq!(secs, 2),
            other => panic!("{other:?}"),
        }
    }
}
