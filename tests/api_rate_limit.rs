//! The API's rate limits over real HTTP (`[api.rate_limit]`): clients on several loopback
//! source addresses (127.0.0.x) against a real API server. A burst beyond a bucket is answered
//! 429 with Kazoo's envelope and a `Retry-After`, and passes again once that time is up; one
//! account's or one address's flood leaves the others alone; wrong passwords are cut off long
//! before good logins; `X-Forwarded-For` counts only from a trusted proxy.

mod api_common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use api_common::{Answer, Api, Tenant, test_options};
use faxd::config::{ApiSection, RateLimitSection};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Test options with these rate limits (and everything else generous).
fn limits(rl: RateLimitSection) -> ApiSection {
    ApiSection {
        rate_limit: rl,
        ..test_options()
    }
}

/// Generous buckets, to be narrowed by each test.
fn generous() -> RateLimitSection {
    RateLimitSection {
        enabled: true,
        address_burst: 10_000,
        address_per_s: 1000.0,
        account_burst: 10_000,
        account_per_s: 1000.0,
        login_burst: 1000,
        login_per_s: 100.0,
        failed_login_cost: 1,
        ..RateLimitSection::default()
    }
}

/// An HTTP client whose connections leave from the loopback address `src`.
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn from(api: &Api, src: &str) -> Self {
        let http = reqwest::Client::builder()
            .local_address(Some(src.parse().expect("address")))
            .build()
            .expect("client");
        Self {
            http,
            base: api.base.clone(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        forwarded_for: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut rb = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            rb = rb.header("X-Auth-Token", t);
        }
        if let Some(f) = forwarded_for {
            rb = rb.header("X-Forwarded-For", f);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        Api::answer(rb.send().await.expect("request")).await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.call(Method::GET, path, token, None, None).await
    }

    async fn login(&self, t: &Tenant, password: &str) -> Answer {
        let (md5, _) = faxd::auth::login_digests(&t.username, password);
        let body = json!({"data": {"credentials": md5, "account_name": t.name}});
        self.call(Method::PUT, "/v2/user_auth", None, None, Some(body))
            .await
    }
}

/// `GET /v2/about` with an `X-Forwarded-For` header.
async fn about(c: &Client, forwarded_for: String) -> Answer {
    c.call(Method::GET, "/v2/about", None, Some(&forwarded_for), None)
        .await
}

/// Sends `send` until it is answered 429 (at most `max` times); returns how many passed
/// with `ok` and the 429.
async fn until_refused<F, Fut>(max: usize, ok: StatusCode, mut send: F) -> (usize, Answer)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    for passed in 0..max {
        let r = send().await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            return (passed, r);
        }
        assert_eq!(r.status, ok, "{}", r.body);
    }
    panic!("{max} requests passed without a 429");
}

/// Asserts `r` is Kazoo's 429 envelope, exactly, with a `Retry-After` in whole seconds;
/// returns that.
fn assert_kazoo_429(r: &Answer, auth_token: &str) -> u64 {
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert!(r.header("x-request-id").is_some());
    let keys: BTreeSet<&str> = r
        .body
        .as_object()
        .expect("an envelope")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "auth_token",
            "data",
            "error",
            "message",
            "node",
            "request_id",
            "status",
            "timestamp",
            "version"
        ]),
        "{}",
        r.body
    );
    assert_eq!(r.body["auth_token"], auth_token);
    assert_eq!(r.body["data"], json!({"message": "too many requests"}));
    assert_eq!(r.body["error"], "429");
    assert_eq!(r.body["message"], "too_many_requests");
    assert_eq!(r.body["status"], "error");
    let retry = r.header("retry-after").expect("Retry-After");
    retry
        .parse::<u64>()
        .unwrap_or_else(|_| panic!("Retry-After in whole seconds, not {retry:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_bucket_gets_429_and_passes_again_after_retry_after() {
    let (store, dir) = api_common::embedded().await;
    let api = Api::start(
        store,
        dir,
        limits(RateLimitSection {
            address_burst: 10,
            address_per_s: 0.5,
            ..generous()
        }),
    )
    .await;
    let c = Client::from(&api, "127.0.0.2");
    let start = Instant::now();
    let (passed, refused) = until_refused(100, StatusCode::OK, || c.get("/v2/about", None)).await;
    // The burst, plus what refilled meanwhile (half a token per second).
    let refilled = (start.elapsed().as_secs_f64() * 0.5).ceil() as usize;
    assert!(
        (10..=10 + refilled).contains(&passed),
        "{passed} passed before the 429"
    );
    let retry = assert_kazoo_429(&refused, "undefined");
    // Less than one token is missing, at half a token per second.
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    // The same client keeps being refused until then, and passes once it is over.
    let refused_at = Instant::now();
    let deadline = refused_at + Duration::from_secs(retry) + Duration::from_secs(10);
    loop {
        let r = c.get("/v2/about", None).await;
        if r.status == StatusCode::OK {
            break;
        }
        assert_kazoo_429(&r, "undefined");
        assert!(Instant::now() < deadline, "still refused {retry} s later");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused_at.elapsed() <= Duration::from_secs(retry) + Duration::from_secs(10),
        "passed again within Retry-After"
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_accounts_flood_leaves_other_accounts_alone_and_leaks_nothing() {
    let (store, dir) = api_common::embedded().await;
    let api = Api::start(
        store,
        dir,
        limits(RateLimitSection {
            account_burst: 10,
            account_per_s: 0.1,
            ..generous()
        }),
    )
    .await;
    let a = api.root_tenant().await;
    let b = api.root_tenant().await;
    let c = Client::from(&api, "127.0.0.3");
    let a_path = format!("/v2/accounts/{}/faxboxes", a.id);
    let b_path = format!("/v2/accounts/{}/faxboxes", b.id);

    // Anyone can name b's account in a path: a flood of unauthenticated requests there is
    // refused 401 and does not touch b's bucket.
    let stranger = Client::from(&api, "127.0.0.4");
    for _ in 0..30 {
        let r = stranger.get(&b_path, Some("not-a-token")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    }

    let start = Instant::now();
    let (passed, refused) =
        until_refused(100, StatusCode::OK, || c.get(&a_path, Some(&a.token))).await;
    let refilled = (start.elapsed().as_secs_f64() * 0.1).ceil() as usize;
    assert!(
        (10..=10 + refilled).contains(&passed),
        "{passed} passed before the 429"
    );
    // The envelope carries the caller's own token and nothing of any tenant.
    let retry = assert_kazoo_429(&refused, &a.token);
    assert!((1..=10).contains(&retry), "Retry-After {retry}");
    let raw = String::from_utf8_lossy(&refused.bytes);
    for secret in [&b.id, &b.name, &b.token, &a.id, &a.name] {
        assert!(
            !raw.contains(secret.as_str()),
            "429 body shows {secret}: {raw}"
        );
    }

    // b, from the very same address, is served: all ten of its own burst.
    for _ in 0..10 {
        let r = c.get(&b_path, Some(&b.token)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    // a's bucket is the account's, whichever address it calls from.
    let elsewhere = Client::from(&api, "127.0.0.5");
    let r = elsewhere.get(&a_path, Some(&a.token)).await;
    assert_kazoo_429(&r, &a.token);
    // Requests without an account are not charged to a.
    let r = c.get("/v2/about", None).await;
    assert_eq!(r.status, StatusCode::OK);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_addresss_flood_leaves_other_addresses_alone() {
    let (store, dir) = api_common::embedded().await;
    let api = Api::start(
        store,
        dir,
        limits(RateLimitSection {
            address_burst: 10,
            address_per_s: 0.1,
            ..generous()
        }),
    )
    .await;
    let a = api.root_tenant().await;
    let path = format!("/v2/accounts/{}/faxboxes", a.id);
    let flood = Client::from(&api, "127.0.0.6");
    let (passed, refused) =
        until_refused(100, StatusCode::OK, || flood.get(&path, Some(&a.token))).await;
    assert!(passed >= 10, "{passed}");
    assert_kazoo_429(&refused, "undefined");
    // Another address, with the same account's token, has its own full bucket.
    let other = Client::from(&api, "127.0.0.7");
    for _ in 0..10 {
        let r = other.get(&path, Some(&a.token)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    // The flooding address is still refused.
    let r = flood.get("/v2/about", None).await;
    assert_kazoo_429(&r, "undefined");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_are_cut_off_long_before_good_logins() {
    let (store, dir) = api_common::embedded().await;
    let api = Api::start(
        store,
        dir,
        limits(RateLimitSection {
            login_burst: 30,
            login_per_s: 0.05,
            failed_login_cost: 10,
            ..generous()
        }),
    )
    .await;
    let t = api.root_tenant().await;

    // Wrong passwords: three attempts take the 30 tokens, then 429 for 20 s (one token at
    // 0.05/s), and a failure then puts the bucket 9 tokens into debt.
    let guesser = Client::from(&api, "127.0.0.8");
    let (failed, refused) = until_refused(100, StatusCode::UNAUTHORIZED, || {
        guesser.login(&t, "wrong password")
    })
    .await;
    assert_eq!(failed, 3, "wrong passwords tried before the 429");
    let retry = assert_kazoo_429(&refused, "undefined");
    assert!((15..=20).contains(&retry), "Retry-After {retry}");
    // The right password from that address waits too: the bucket is the address's.
    let r = guesser.login(&t, &t.password).await;
    assert_kazoo_429(&r, "undefined");

    // Good logins from another address: each costs one token, twenty in a row pass.
    let user = Client::from(&api, "127.0.0.9");
    for _ in 0..20 {
        let r = user.login(&t, &t.password).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }

    // Unknown API keys are guesses too (404 in Kazoo 4.3).
    let keys = Client::from(&api, "127.0.0.10");
    let (failed, refused) = until_refused(100, StatusCode::NOT_FOUND, || {
        let body = json!({"data": {"api_key": "0".repeat(64)}});
        keys.call(Method::PUT, "/v2/api_auth", None, None, Some(body))
    })
    .await;
    assert_eq!(failed, 3, "unknown API keys tried before the 429");
    assert_kazoo_429(&refused, "undefined");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_counts_only_from_a_trusted_proxy_and_limits_can_be_off() {
    let (store, dir) = api_common::embedded().await;
    let api = Api::start(
        store,
        dir,
        limits(RateLimitSection {
            address_burst: 5,
            address_per_s: 0.1,
            trusted_proxies: vec!["127.0.0.11".into()],
            ..generous()
        }),
    )
    .await;
    // Behind the trusted proxy, each forwarded client has its own bucket.
    let proxy = Client::from(&api, "127.0.0.11");
    let (passed, _) = until_refused(100, StatusCode::OK, || {
        about(&proxy, "203.0.113.1".to_string())
    })
    .await;
    assert!((5..=6).contains(&passed), "{passed}");
    for _ in 0..5 {
        let r = proxy
            .call(Method::GET, "/v2/about", None, Some("203.0.113.2"), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    // Any other peer is counted by its own address, whatever header it forges.
    let forger = Client::from(&api, "127.0.0.12");
    let mut n = 0u32;
    let (passed, _) = until_refused(100, StatusCode::OK, || {
        n += 1;
        about(&forger, format!("198.51.100.{n}"))
    })
    .await;
    assert!((5..=6).contains(&passed), "{passed}");
    api.stop().await;

    // Off: nothing is refused for its rate.
    let (store, dir) = api_common::embedded().await;
    let api = Api::start(
        store,
        dir,
        limits(RateLimitSection {
            enabled: false,
            address_burst: 1,
            address_per_s: 0.001,
            ..generous()
        }),
    )
    .await;
    let c = Client::from(&api, "127.0.0.13");
    for _ in 0..30 {
        let r = c.get("/v2/about", None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    // The API's description says every operation may answer 429 with a Retry-After.
    let r = c.get("/v2/openapi.json", None).await;
    let put = &r.body["paths"]["/v2/user_auth"]["put"];
    assert!(
        put["responses"]["429"]["headers"]["Retry-After"].is_object(),
        "{put}"
    );
    api.stop().await;
}
