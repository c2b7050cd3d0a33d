//! Helpers for the API integration tests: the real API server (actix, in process) on a real
//! store (embedded SQLite or CouchDB), an HTTP client, tenants created through the API, and
//! a loopback HTTP server that serves documents for `document.url`.

#![allow(dead_code, unused_macros)]

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use faxd::api::{self, ApiState};
use faxd::auth::login_digests;
use faxd::config::{ApiSection, MediaEngine, SystemConfig};
use faxd::ids::{AccountId, Db, YearMonth, modb_doc_id, new_id};
use faxd::store::SharedStore;
use faxd::store::bytes_stream;
use faxd::store::couch::CouchStore;
use faxd::store::sqlite::SqliteStore;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs each named test `async fn name(store: SharedStore, dir: Dir)` twice: on the embedded
/// store and on the CouchDB-API server.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, dir) = crate::api_common::embedded().await;
                    super::$name(store, dir).await;
                }
            )*
        }
        mod couchdb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, dir) = crate::api_common::couch().await;
                    super::$name(store, dir).await;
                }
            )*
        }
    };
}

/// The data directory a backend's test keeps alive (the embedded store's), if any.
pub type Dir = Option<tempfile::TempDir>;

/// A one-page PDF (enough for intake; conversion is not part of these tests).
pub const PDF: &[u8] = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n";

pub async fn embedded() -> (SharedStore, Option<tempfile::TempDir>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).await.expect("open sqlite");
    (Arc::new(store), Some(dir))
}

pub async fn couch() -> (SharedStore, Option<tempfile::TempDir>) {
    let url = std::env::var("FAXD_TEST_COUCH_URL").expect(
        "FAXD_TEST_COUCH_URL is not set: run the suite with `make test`, which starts the \
         CouchDB-API test server, or point it at a CouchDB 3",
    );
    (
        Arc::new(CouchStore::connect(&url).await.expect("connect couchdb")),
        None,
    )
}

/// Options of the test servers: loopback document URLs allowed (the test document server is
/// on loopback), a 1 MB upload limit so the 413 test stays small, and no rate limits (these
/// suites log in and call the API from one address far faster than any client would;
/// `tests/api_rate_limit.rs` tests the limits).
pub fn test_options() -> ApiSection {
    ApiSection {
        listen: "127.0.0.1:0".into(),
        workers: 1,
        max_upload_bytes: 1_000_000,
        url_max_bytes: 1_000_000,
        url_allow_private: true,
        url_timeout_s: 5,
        rate_limit: faxd::config::RateLimitSection {
            enabled: false,
            ..Default::default()
        },
        ..ApiSection::default()
    }
}

/// A running API server on a store.
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub store: SharedStore,
    handle: actix_web::dev::ServerHandle,
    _dir: Option<tempfile::TempDir>,
}

/// A tenant: an account, its admin user and a token.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub user_id: String,
    pub username: String,
    pub password: String,
    pub token: String,
}

/// An answer: status, JSON body (Null when not JSON), headers.
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
}

impl Answer {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// A London number (+4420 and 8 random digits) no other test uses in practice.
pub fn unique_number() -> String {
    let digits: String = faxd::ids::new_id()
        .bytes()
        .take(8)
        .map(|b| char::from(b'0' + b % 10))
        .collect();
    format!("+4420{digits}")
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &faxd::ids::new_id()[..10])
}

impl Api {
    pub async fn start(
        store: SharedStore,
        dir: Option<tempfile::TempDir>,
        options: ApiSection,
    ) -> Self {
        faxd::bootstrap::ensure_global_dbs(&store)
            .await
            .expect("global dbs");
        let sysconf = SystemConfig::load(store.clone(), "faxd@test")
            .await
            .expect("sysconf");
        let state = Arc::new(ApiState::new(
            store.clone(),
            sysconf,
            "faxd@test".into(),
            MediaEngine::Loopback,
            faxd::time::iso8601_now(),
            options,
            Arc::new(faxd::convert::Converter::new(Default::default())),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = api::server(state, listener, 1).expect("server");
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            store,
            handle,
            _dir: dir,
        }
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }

    /// Any request; `body` is sent as JSON when given.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut rb = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            rb = rb.header("X-Auth-Token", t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("request");
        Self::answer(resp).await
    }

    pub async fn answer(resp: reqwest::Response) -> Answer {
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body").to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            body,
            headers,
            bytes,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(Method::GET, path, Some(token), None).await
    }
    pub async fn put(&self, path: &str, token: &str, data: Value) -> Answer {
        self.call(Method::PUT, path, Some(token), Some(json!({"data": data})))
            .await
    }
    pub async fn post(&self, path: &str, token: &str, data: Value) -> Answer {
        self.call(Method::POST, path, Some(token), Some(json!({"data": data})))
            .await
    }
    pub async fn patch(&self, path: &str, token: &str, data: Value) -> Answer {
        self.call(
            Method::PATCH,
            path,
            Some(token),
            Some(json!({"data": data})),
        )
        .await
    }
    pub async fn delete(&self, path: &str, token: &str) -> Answer {
        self.call(Method::DELETE, path, Some(token), Some(json!({"data": {}})))
            .await
    }

    /// Logs in with md5 credentials and an account name.
    pub async fn login(&self, account_name: &str, username: &str, password: &str) -> Answer {
        let (md5, _) = login_digests(username, password);
        self.call(
            Method::PUT,
            "/v2/user_auth",
            Some("undefined"),
            Some(json!({"data": {"credentials": md5, "account_name": account_name}})),
        )
        .await
    }

    /// A new root tenant (a superduper account outside any other test's tree) with an admin.
    pub async fn root_tenant(&self) -> Tenant {
        let id = AccountId::generate();
        let name = unique("root");
        faxd::bootstrap::create_account(
            &self.store,
            &id,
            &name,
            &format!("{name}.test"),
            None,
            true,
        )
        .await
        .expect("root account");
        let password = unique("pw");
        let user = faxd::bootstrap::create_user(&self.store, &id, "admin", &password, "admin")
            .await
            .expect("admin user");
        let a = self.login(&name, "admin", &password).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        Tenant {
            id: id.to_string(),
            name,
            user_id: user["_id"].as_str().expect("id").to_string(),
            username: "admin".into(),
            password,
            token: a.body["auth_token"].as_str().expect("token").to_string(),
        }
    }

    /// A child account of `parent` created through the API, with an admin user, logged in.
    pub async fn child_tenant(&self, parent: &Tenant) -> Tenant {
        let name = unique("acct");
        let a = self
            .put(
                &format!("/v2/accounts/{}", parent.id),
                &parent.token,
                json!({"name": name}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        let id = a.data()["id"].as_str().expect("id").to_string();
        let password = unique("pw");
        let u = self
            .put(
                &format!("/v2/accounts/{id}/users"),
                &parent.token,
                json!({"first_name": "Ada", "last_name": "Admin", "username": "boss",
                       "password": password, "priv_level": "admin"}),
            )
            .await;
        assert_eq!(u.status, StatusCode::CREATED, "{}", u.body);
        let login = self.login(&name, "boss", &password).await;
        assert_eq!(login.status, StatusCode::CREATED, "{}", login.body);
        Tenant {
            id,
            name,
            user_id: u.data()["id"].as_str().expect("id").to_string(),
            username: "boss".into(),
            password,
            token: login.body["auth_token"]
                .as_str()
                .expect("token")
                .to_string(),
        }
    }

    /// Lets `account` use any caller id: `admin` (an admin of an ancestor account) sets the
    /// account's `fax_allow_any_caller_id`.
    pub async fn allow_any_caller_id(&self, admin: &Tenant, account: &Tenant) {
        let a = self
            .patch(
                &format!("/v2/accounts/{}", account.id),
                &admin.token,
                json!({"fax_allow_any_caller_id": true}),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.data()["fax_allow_any_caller_id"], true, "{}", a.body);
    }

    /// A new number (E.164, unique in practice) owned by `t` through a callflow.
    pub async fn own_number(&self, t: &Tenant) -> String {
        let number = unique_number();
        let a = self
            .put(
                &format!("/v2/accounts/{}/callflows", t.id),
                &t.token,
                json!({"numbers": [number], "flow": {"module": "receive_fax"}}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        number
    }

    /// Sends a fax by multipart (JSON part + PDF part) to `path`.
    pub async fn send_multipart(&self, path: &str, token: &str, data: Value, pdf: &[u8]) -> Answer {
        let boundary = "faxdTestBoundary7e3";
        let mut body = Vec::new();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"json\"\r\nContent-Type: application/json\r\n\r\n{}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"doc.pdf\"\r\nContent-Type: application/pdf\r\n\r\n",
                json!({"data": data})
            )
            .as_bytes(),
        );
        body.extend_from_slice(pdf);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let resp = self
            .http
            .put(format!("{}{path}", self.base))
            .header("X-Auth-Token", token)
            .header(
                "Content-Type",
                format!("multipart/mixed; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .expect("multipart request");
        Self::answer(resp).await
    }
}

/// Polls `f` until it returns `Some` or the deadline passes.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback HTTP/1.1 server for document URLs: `/doc.pdf` (the PDF), `/redirect` (302 to
/// `/doc.pdf`), `/loop` (302 to itself), `/big` (2 MB), `/missing` (404).
pub async fn document_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&got)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (head, body): (String, Vec<u8>) = match path.as_str() {
                    "/doc.pdf" => (
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/pdf\r\nContent-Length: {}\r\n",
                            PDF.len()
                        ),
                        PDF.to_vec(),
                    ),
                    "/redirect" => (
                        "HTTP/1.1 302 Found\r\nLocation: /doc.pdf\r\nContent-Length: 0\r\n".into(),
                        vec![],
                    ),
                    "/loop" => (
                        "HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 0\r\n".into(),
                        vec![],
                    ),
                    "/big" => {
                        let mut b = PDF.to_vec();
                        b.resize(2_000_000, b' ');
                        (
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/pdf\r\nContent-Length: {}\r\n",
                                b.len()
                            ),
                            b,
                        )
                    }
                    _ => (
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n".into(),
                        vec![],
                    ),
                };
                let _ = sock
                    .write_all(format!("{head}Connection: close\r\n\r\n").as_bytes())
                    .await;
                let _ = sock.write_all(&body).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

/// A loopback document server that holds every request until `open` is sent `true`, then
/// answers the PDF: a slow document source, under the test's control. Also counts the
/// requests that arrived (so a test knows the fetch has started).
pub async fn gated_document_server() -> (
    String,
    tokio::sync::watch::Sender<bool>,
    tokio::sync::watch::Receiver<usize>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (open, gate) = tokio::sync::watch::channel(false);
    let (count_tx, arrived) = tokio::sync::watch::channel(0usize);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut gate = gate.clone();
            count_tx.send_modify(|n| *n += 1);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                if gate.wait_for(|open| *open).await.is_err() {
                    return;
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/pdf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    PDF.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(PDF).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (format!("http://{addr}"), open, arrived)
}

/// The fax `id` of account `t` once its intake is over: the queued job (`pending`), or,
/// when the intake failed, its copy in the outbox (`failed`, with the reason).
pub async fn intake_done(api: &Api, t: &Tenant, id: &str) -> Value {
    let faxes = format!("/v2/accounts/{}/faxes", t.id);
    poll(
        &format!("the intake of {id}"),
        Duration::from_secs(60),
        || async {
            let r = api.get(&format!("{faxes}/outgoing/{id}"), &t.token).await;
            if r.status == StatusCode::OK {
                let status = r.data()["status"].as_str().unwrap_or_default();
                return (status != "attaching_files").then(|| r.data().clone());
            }
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
            let list = api
                .get(&format!("{faxes}/outbox?paginate=false"), &t.token)
                .await;
            let oid = list
                .data()
                .as_array()?
                .iter()
                .filter_map(|row| row["id"].as_str())
                .find(|x| x.ends_with(id))?
                .to_string();
            let r = api.get(&format!("{faxes}/outbox/{oid}"), &t.token).await;
            (r.status == StatusCode::OK).then(|| r.data().clone())
        },
    )
    .await
}

/// A one-page fax TIFF as a receiving fax machine writes it (G4, fine, a few black rows).
pub fn received_tiff() -> Vec<u8> {
    use faxd::convert::ccitt::{Coding, FaxPage};
    let mut page = FaxPage::blank(1728, 2200, 204.0, 196.0);
    let stride = page.stride();
    for row in 200..240 {
        for byte in 20..180 {
            page.data[row * stride + byte] = 0xff;
        }
    }
    faxd::convert::tiff_f::write_fax_tiff(&[page], Coding::Mmr)
}

/// Writes an inbound fax as the receiving side stores it (MODB, `received_file_<id>.tiff`).
pub async fn received_fax(
    store: &SharedStore,
    account: &str,
    faxbox: Option<&str>,
    owner: Option<&str>,
) -> String {
    let account = AccountId::parse(account).unwrap();
    let month = YearMonth::now();
    let db = Db::Modb(account.clone(), month);
    store.ensure_db(&db).await.unwrap();
    let id = modb_doc_id(month, &new_id());
    let mut doc = json!({
        "_id": id, "pvt_type": "fax", "folder": "inbox", "from_number": "+14155550999",
        "to_number": "+14155550100", "description": "fax document received", "source_type": "incoming_fax",
        "rx_result": {"success": true, "total_pages": 1}, "pvt_account_id": account.as_str(),
        "pvt_created": faxd::time::now_gregorian(), "media_type": "tiff",
    });
    if let Some(f) = faxbox {
        doc["faxbox_id"] = json!(f);
    }
    if let Some(o) = owner {
        doc["owner_id"] = json!(o);
    }
    let saved = store.save(&db, doc).await.unwrap();
    store
        .put_attachment(
            &db,
            &id,
            saved["_rev"].as_str(),
            &format!("received_file_{id}.tiff"),
            "image/tiff",
            bytes_stream(received_tiff()),
        )
        .await
        .unwrap();
    id
}

/// A plain user (`priv_level: user`) created by `admin` in its account, logged in: the same
/// account, another identity.
pub async fn plain_user(api: &Api, admin: &Tenant, username: &str) -> Tenant {
    let password = unique("pw");
    let u = api
        .put(
            &format!("/v2/accounts/{}/users", admin.id),
            &admin.token,
            json!({"first_name": "Pat", "last_name": "Plain", "username": username,
                   "password": password, "priv_level": "user"}),
        )
        .await;
    assert_eq!(u.status, StatusCode::CREATED, "{}", u.body);
    let login = api.login(&admin.name, username, &password).await;
    assert_eq!(login.status, StatusCode::CREATED, "{}", login.body);
    Tenant {
        id: admin.id.clone(),
        name: admin.name.clone(),
        user_id: u.data()["id"].as_str().expect("id").to_string(),
        username: username.to_string(),
        password,
        token: login.body["auth_token"]
            .as_str()
            .expect("token")
            .to_string(),
    }
}
