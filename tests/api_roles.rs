//! Authorization over real HTTP, on both storage backends: a plain user's token walked over
//! every route of the OpenAPI document against the role table, the account-takeover attacks
//! one by one (targets unchanged afterwards), a sibling account's token on every route of
//! another account (refused, nothing changed), authentication before any body validation,
//! `X-HTTP-Method-Override` under the same rules, and 415 answers that name the types.

#[macro_use]
mod api_common;

use api_common::{
    Answer, Api, Dir, PDF, Tenant, document_server, intake_done, plain_user, received_fax,
    test_options, unique,
};
use faxd::ids::{AccountId, Db, YearMonth, modb_doc_id, new_id};
use faxd::store::SharedStore;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

both_backends!(
    roles_plain_user_route_table,
    roles_plain_user_cannot_take_over,
    roles_sibling_refused_on_every_route,
    roles_authentication_before_body,
    roles_method_override,
    roles_document_types_and_long_ids,
);

fn assert_error(a: &Answer, status: StatusCode, message: &str, what: &str) {
    assert_eq!(a.status, status, "{what}: {}", a.body);
    assert_eq!(a.body["status"], "error", "{what}: {}", a.body);
    assert_eq!(a.body["error"], status.as_u16().to_string(), "{what}");
    assert_eq!(a.body["message"], message, "{what}: {}", a.body);
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("application/json"),
        "{what}"
    );
    assert!(a.header("x-request-id").is_some(), "{what}");
}

/// An account `A` (child of a root) with its admin, two plain users, and one of everything:
/// a faxbox, a callflow, a queued fax, a sent fax, a received fax and an SMTP log, all in
/// the faxbox and owned by the first plain user (so every fax route scope sees them).
struct World {
    api: Api,
    store: SharedStore,
    docs: String,
    root: Tenant,
    admin: Tenant,
    clerk: Tenant,
    other: Tenant,
    fb: String,
    cf: String,
    queued: String,
    outbox: String,
    inbox: String,
    log: String,
}

fn job(to: &str, owner: &str) -> Value {
    json!({"from_number": "+14155550100", "to_number": to, "owner_id": owner})
}

impl World {
    async fn new(store: SharedStore, dir: Dir) -> Self {
        let api = Api::start(store.clone(), dir, test_options()).await;
        let docs = document_server().await;
        let root = api.root_tenant().await;
        let admin = api.child_tenant(&root).await;
        // The jobs send from a fixed caller id this account does not own.
        api.allow_any_caller_id(&root, &admin).await;
        let clerk = plain_user(&api, &admin, "clerk").await;
        let other = plain_user(&api, &admin, "other").await;
        let acc = format!("/v2/accounts/{}", admin.id);
        let r = api
            .put(
                &format!("{acc}/faxboxes"),
                &admin.token,
                json!({"name": "Front desk"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let fb = r.data()["id"].as_str().expect("faxbox id").to_string();
        let digits: String = new_id()
            .chars()
            .filter(char::is_ascii_digit)
            .chain("0000000".chars())
            .take(7)
            .collect();
        let r = api
            .put(
                &format!("{acc}/callflows"),
                &admin.token,
                json!({"name": "Fax line", "numbers": [format!("+1415{digits}")],
                       "flow": {"module": "faxbox", "data": {"id": fb}}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let cf = r.data()["id"].as_str().expect("callflow id").to_string();
        let mut w = World {
            api,
            store,
            docs,
            root,
            admin,
            clerk,
            other,
            fb,
            cf,
            queued: String::new(),
            outbox: String::new(),
            inbox: String::new(),
            log: String::new(),
        };
        w.queued = w.new_queued().await;
        w.outbox = w.new_outbox().await;
        w.inbox = w.new_inbox().await;
        w.log = w.new_smtplog().await;
        w
    }

    fn acc(&self) -> String {
        format!("/v2/accounts/{}", self.admin.id)
    }

    async fn new_queued(&self) -> String {
        let r = self
            .api
            .send_multipart(
                &format!("{}/faxboxes/{}/faxes", self.acc(), self.fb),
                &self.admin.token,
                job("+14155550140", &self.clerk.user_id),
                PDF,
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        let id = r.data()["id"].as_str().expect("job id").to_string();
        // Queued: its background intake is over (the store is compared before and after).
        assert_eq!(
            intake_done(&self.api, &self.admin, &id).await["status"],
            "pending"
        );
        id
    }

    async fn new_outbox(&self) -> String {
        let queued = self.new_queued().await;
        let r = self
            .api
            .delete(
                &format!("{}/faxes/outgoing/{queued}", self.acc()),
                &self.admin.token,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.data()["id"].as_str().expect("outbox id").to_string()
    }

    async fn new_inbox(&self) -> String {
        received_fax(
            &self.store,
            &self.admin.id,
            Some(&self.fb),
            Some(&self.clerk.user_id),
        )
        .await
    }

    async fn new_smtplog(&self) -> String {
        let month = YearMonth::now();
        let db = Db::Modb(AccountId::parse(&self.admin.id).expect("id"), month);
        self.store.ensure_db(&db).await.expect("modb");
        let id = modb_doc_id(month, &new_id());
        self.store
            .save(
                &db,
                json!({"_id": id, "pvt_type": "fax_smtp_log", "from": "bob@example.com",
                       "to": "4155550100@fax.example.com", "errors": ["no fax number"],
                       "faxbox_id": self.fb, "owner_id": self.clerk.user_id,
                       "pvt_account_id": self.admin.id,
                       "pvt_created": faxd::time::now_gregorian()}),
            )
            .await
            .expect("smtp log");
        id
    }

    /// A fresh fax for a route that consumes it (cancel, delete, strip), else the shared one.
    async fn fax_for(&self, method: &str, path: &str) -> String {
        let destructive = method == "delete";
        if path.contains("/outgoing/") {
            if destructive {
                self.new_queued().await
            } else {
                self.queued.clone()
            }
        } else if path.contains("/outbox/") {
            if destructive {
                self.new_outbox().await
            } else {
                self.outbox.clone()
            }
        } else if destructive {
            self.new_inbox().await
        } else {
            self.inbox.clone()
        }
    }

    /// `path` (an OpenAPI template) with this world's ids; `{user_id}` is `user`.
    async fn url(&self, method: &str, path: &str, user: &str) -> String {
        let mut url = path
            .replace("{account_id}", &self.admin.id)
            .replace("{user_id}", user)
            .replace("{faxbox_id}", &self.fb)
            .replace("{callflow_id}", &self.cf)
            .replace("{log_id}", &self.log)
            .replace("{app_id}", faxd::api::monster::FAX_APP_ID)
            .replace("{config_id}", "fax")
            .replace("{notification_id}", "fax_inbound_to_email");
        if url.contains("{fax_id}") {
            let fax = self.fax_for(method, path).await;
            url = url.replace("{fax_id}", &fax);
        }
        url
    }

    /// A request body that the route accepts from someone allowed to call it.
    fn body(&self, method: &str, path: &str) -> Value {
        let fax = json!({"to_number": "+14155550150", "from_number": "+14155550100",
                         "document": {"url": format!("{}/doc.pdf", self.docs)}});
        match method {
            "put" if path.ends_with("/faxes") || path.ends_with("/outgoing") => {
                json!({"data": fax})
            }
            "put" if path.contains("/outbox/") => json!({"action": "resubmit", "data": {}}),
            "put" if path.contains("/inbox/") => {
                json!({"action": "forward", "data": {"to_number": "+14155550151"}})
            }
            "post" if path.ends_with("/users/{user_id}") => json!({"data": {
                "first_name": "Pat", "last_name": "Plain", "username": self.clerk.username,
                "priv_level": "user"}}),
            "patch" if path.ends_with("/users/{user_id}") => {
                json!({"data": {"first_name": "Patricia"}})
            }
            _ => json!({"data": {}}),
        }
    }
}

/// The role table of the issue, written here independently of the product: whether a plain
/// user of account `{account_id}` may call `method path` (`on_self`: `{user_id}` is them).
fn plain_user_may(method: &str, path: &str, on_self: bool) -> bool {
    let Some(p) = path.strip_prefix("/v2/accounts/{account_id}") else {
        // Of the rest only token_auth: not system_configs, not PUT /v2/accounts (a child).
        return path == "/v2/token_auth";
    };
    let read = method == "get";
    if p.is_empty() {
        return read;
    }
    if p.starts_with("/apps_store") {
        return true;
    }
    if p == "/ledgers/total" || p == "/limits" {
        return read;
    }
    if p.starts_with("/users/{user_id}/faxes") {
        return on_self;
    }
    if p == "/users/{user_id}" {
        return on_self && method != "delete";
    }
    if p.starts_with("/faxes") || p.starts_with("/faxboxes/{faxbox_id}/faxes") {
        return true;
    }
    if p == "/faxboxes" || p == "/faxboxes/{faxbox_id}" {
        return read;
    }
    false // users, callflows, api_key, children, descendants
}

/// The routes anyone may call without a token: status, the spec, logins, token checks
/// (`/metrics` is kept to the `[api] metrics_allow` addresses instead).
const PUBLIC: [&str; 7] = [
    "/healthz",
    "/metrics",
    "/v2/about",
    "/v2/openapi.json",
    "/v2/user_auth",
    "/v2/api_auth",
    "/v2/auth/tokeninfo",
];

/// Every (path, method) of the OpenAPI document but the public ones.
async fn secured_routes(api: &Api) -> Vec<(String, String)> {
    let doc = api.call(Method::GET, "/v2/openapi.json", None, None).await;
    assert_eq!(doc.status, StatusCode::OK);
    let mut out = Vec::new();
    for (path, methods) in doc.body["paths"].as_object().expect("paths") {
        for (method, op) in methods.as_object().expect("methods") {
            let public = PUBLIC.contains(&path.as_str());
            // The document agrees with what is enforced.
            assert_eq!(
                op.get("security").is_none(),
                public || path == "/v2/accounts" && method == "get",
                "{method} {path}"
            );
            assert!(op["x-faxd-access"].is_string(), "{method} {path}");
            if !public {
                out.push((path.clone(), method.clone()));
            }
        }
    }
    assert!(out.len() > 100, "only {} secured routes", out.len());
    out
}

fn method_of(m: &str) -> Method {
    Method::from_bytes(m.to_uppercase().as_bytes()).expect("method")
}

async fn roles_plain_user_route_table(store: SharedStore, dir: Dir) {
    let w = World::new(store, dir).await;
    let (mut allowed, mut forbidden) = (0, 0);
    for (path, method) in secured_routes(&w.api).await {
        // Revoking the token is checked last; listing all accounts is a 405 for everyone.
        if path == "/v2/token_auth" && method == "delete" {
            continue;
        }
        if path == "/v2/accounts" && method == "get" {
            let a = w.api.get("/v2/accounts", &w.clerk.token).await;
            assert_error(&a, StatusCode::METHOD_NOT_ALLOWED, "invalid_method", &path);
            continue;
        }
        let users: Vec<(&str, bool)> = if path.contains("{user_id}") {
            vec![(&w.clerk.user_id, true), (&w.other.user_id, false)]
        } else {
            vec![(&w.clerk.user_id, true)]
        };
        for (user, on_self) in users {
            let url = w.url(&method, &path, user).await;
            let body = w.body(&method, &path);
            let a = w
                .api
                .call(method_of(&method), &url, Some(&w.clerk.token), Some(body))
                .await;
            let what = format!("{method} {path} (self: {on_self})");
            assert!(
                !a.status.is_server_error(),
                "{what}: {} {}",
                a.status,
                a.body
            );
            if plain_user_may(&method, &path, on_self) {
                // No fax is being received in this world: a live call's route, once the user
                // is let through, finds none.
                let no_live_call =
                    path.contains("/faxes/incoming/") && a.status == StatusCode::NOT_FOUND;
                assert!(
                    a.status.is_success() || no_live_call,
                    "{what}: {} {}",
                    a.status,
                    a.body
                );
                allowed += 1;
            } else {
                assert_error(&a, StatusCode::FORBIDDEN, "forbidden", &what);
                forbidden += 1;
            }
        }
    }
    assert!(allowed > 50 && forbidden > 40, "{allowed} / {forbidden}");
    // The token still works; revoking it is a user's right too.
    let r = w.api.delete("/v2/token_auth", &w.clerk.token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = w.api.get(&w.acc(), &w.clerk.token).await;
    assert_error(
        &r,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "revoked",
    );
    w.api.stop().await;
}

async fn roles_plain_user_cannot_take_over(store: SharedStore, dir: Dir) {
    let w = World::new(store, dir).await;
    let api = &w.api;
    let acc = w.acc();
    let t = &w.clerk.token;
    let me = format!("{acc}/users/{}", w.clerk.user_id);
    let boss = format!("{acc}/users/{}", w.admin.user_id);
    let forbidden =
        |a: &Answer, what: &str| assert_error(a, StatusCode::FORBIDDEN, "forbidden", what);

    // Promote oneself, by PATCH or by a whole-document POST; disable oneself.
    let a = api.patch(&me, t, json!({"priv_level": "admin"})).await;
    forbidden(&a, "PATCH self priv_level");
    assert!(
        a.data()["cause"]
            .as_str()
            .unwrap_or("")
            .contains("priv_level")
    );
    let a = api
        .post(
            &me,
            t,
            json!({"first_name": "Pat", "last_name": "Plain", "username": "clerk",
                   "priv_level": "admin"}),
        )
        .await;
    forbidden(&a, "POST self priv_level");
    let a = api.patch(&me, t, json!({"enabled": false})).await;
    forbidden(&a, "PATCH self enabled");
    let mine = api.get(&me, &w.admin.token).await;
    assert_eq!(mine.data()["priv_level"], "user");
    // What a user may do to their own document, with the current values sent back.
    let a = api
        .patch(
            &me,
            t,
            json!({"first_name": "Patricia", "priv_level": "user"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.data()["first_name"], "Patricia");

    // A fax a plain user sends is theirs, whoever the request names as owner.
    let a = api
        .put(
            &format!("{acc}/faxes"),
            t,
            json!({"to_number": "+14155550170", "from_number": "+14155550100",
                   "owner_id": w.other.user_id,
                   "document": {"url": format!("{}/doc.pdf", w.docs)}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    assert_eq!(a.data()["owner_id"], w.clerk.user_id.as_str());

    // The admin's password, the admin's account, a new admin.
    let a = api.patch(&boss, t, json!({"password": "owned"})).await;
    forbidden(&a, "PATCH admin password");
    let a = api.delete(&boss, t).await;
    forbidden(&a, "DELETE admin");
    let a = api
        .put(
            &format!("{acc}/users"),
            t,
            json!({"first_name": "Evil", "last_name": "Twin", "username": "evil",
                   "password": "evil", "priv_level": "admin"}),
        )
        .await;
    forbidden(&a, "PUT admin user");
    let login = api
        .login(&w.admin.name, &w.admin.username, &w.admin.password)
        .await;
    assert_eq!(
        login.status,
        StatusCode::CREATED,
        "admin locked out: {}",
        login.body
    );
    let users = api.get(&format!("{acc}/users"), &w.admin.token).await;
    assert_eq!(
        users.data().as_array().map(Vec::len),
        Some(3),
        "{}",
        users.body
    );

    // The account: its key, its name, a child account, its faxbox.
    let a = api.get(&format!("{acc}/api_key"), t).await;
    forbidden(&a, "GET api_key");
    assert!(!a.bytes.windows(8).any(|x| x == b"\"api_key"), "{}", a.body);
    let taken = unique("stolen");
    let a = api.post(&acc, t, json!({"name": taken})).await;
    forbidden(&a, "POST account");
    let a = api.patch(&acc, t, json!({"name": taken})).await;
    forbidden(&a, "PATCH account");
    let a = api.put(&acc, t, json!({"name": unique("child")})).await;
    forbidden(&a, "PUT child account");
    let a = api
        .put("/v2/accounts", t, json!({"name": unique("child")}))
        .await;
    forbidden(&a, "PUT /v2/accounts");
    let a = api.delete(&format!("{acc}/faxboxes/{}", w.fb), t).await;
    forbidden(&a, "DELETE faxbox");
    let a = api.get(&acc, &w.admin.token).await;
    assert_eq!(a.data()["name"], w.admin.name.as_str());
    let login = api
        .login(&w.admin.name, &w.admin.username, &w.admin.password)
        .await;
    assert_eq!(login.status, StatusCode::CREATED, "account renamed");
    let kids = api.get(&format!("{acc}/children"), &w.admin.token).await;
    assert_eq!(kids.data(), &json!([]));
    let fb = api
        .get(&format!("{acc}/faxboxes/{}", w.fb), &w.admin.token)
        .await;
    assert_eq!(fb.status, StatusCode::OK);

    // The faxbox's webhook signing secret: its admin reads it back, a plain user does not.
    let secret = unique("whsec");
    let a = api
        .patch(
            &format!("{acc}/faxboxes/{}", w.fb),
            &w.admin.token,
            json!({"notifications": {"outbound": {"callback":
                {"url": "https://hooks.example.net/fax", "secret": secret}}}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let mine = api
        .get(&format!("{acc}/faxboxes/{}", w.fb), &w.admin.token)
        .await;
    assert_eq!(
        mine.data()["notifications"]["outbound"]["callback"]["secret"],
        secret.as_str()
    );
    let theirs = api.get(&format!("{acc}/faxboxes/{}", w.fb), t).await;
    assert_eq!(theirs.status, StatusCode::OK, "{}", theirs.body);
    assert_eq!(
        theirs.data()["notifications"]["outbound"]["callback"]["url"],
        "https://hooks.example.net/fax"
    );
    assert!(
        !theirs.body.to_string().contains(&secret),
        "{}",
        theirs.body
    );

    // A plain user of the superduper root reaches neither system configs nor child accounts;
    // its admin does.
    let root_user = plain_user(api, &w.root, "rootclerk").await;
    let a = api.get("/v2/system_configs/fax", &root_user.token).await;
    forbidden(&a, "plain user system_configs");
    let a = api.get(&acc, &root_user.token).await;
    forbidden(&a, "plain user of an ancestor");
    assert_eq!(api.get(&acc, &w.root.token).await.status, StatusCode::OK);

    // An API-key token acts as the account's admin, but cannot replace its own key.
    let key = api.get(&format!("{acc}/api_key"), &w.admin.token).await;
    let key = key.data()["api_key"].as_str().expect("key").to_string();
    let a = api
        .call(
            Method::PUT,
            "/v2/api_auth",
            None,
            Some(json!({"data": {"api_key": key}})),
        )
        .await;
    let api_token = a.body["auth_token"]
        .as_str()
        .expect("api token")
        .to_string();
    let a = api.get(&format!("{acc}/users"), &api_token).await;
    assert_eq!(a.status, StatusCode::OK);
    let a = api
        .put(&format!("{acc}/api_key"), &api_token, json!({}))
        .await;
    forbidden(&a, "api token regenerates its key");
    w.api.stop().await;
}

/// Every document an attacker might change, as stored.
async fn snapshot(w: &World) -> Vec<Value> {
    let account = AccountId::parse(&w.admin.id).expect("id");
    let acc_db = Db::Account(account.clone());
    let modb = Db::Modb(account, YearMonth::now());
    let mut out = Vec::new();
    for (db, id) in [
        (Db::Accounts, w.admin.id.clone()),
        (acc_db.clone(), w.admin.user_id.clone()),
        (acc_db.clone(), w.clerk.user_id.clone()),
        (acc_db.clone(), w.fb.clone()),
        (acc_db, w.cf.clone()),
        (Db::Faxes, w.fb.clone()),
        (Db::Faxes, w.queued.clone()),
        (modb.clone(), w.outbox.clone()),
        (modb.clone(), w.inbox.clone()),
        (modb, w.log.clone()),
    ] {
        let doc = w.store.get(&db, &id).await.expect("store");
        assert!(doc.is_some(), "{id} missing");
        out.push(json!({"id": id, "doc": doc}));
    }
    out
}

async fn roles_sibling_refused_on_every_route(store: SharedStore, dir: Dir) {
    let w = World::new(store, dir).await;
    let sibling = w.api.child_tenant(&w.root).await;
    let before = snapshot(&w).await;
    let mut tried = 0;
    for (path, method) in secured_routes(&w.api).await {
        if !path.starts_with("/v2/accounts/{account_id}") {
            continue;
        }
        // The shared fixtures only: every attempt must leave them as they are.
        let url = path
            .replace("{account_id}", &w.admin.id)
            .replace("{user_id}", &w.clerk.user_id)
            .replace("{faxbox_id}", &w.fb)
            .replace("{callflow_id}", &w.cf)
            .replace("{log_id}", &w.log)
            .replace("{app_id}", faxd::api::monster::FAX_APP_ID)
            .replace("{notification_id}", "fax_inbound_to_email")
            .replace(
                "{fax_id}",
                if path.contains("/outgoing/") {
                    &w.queued
                } else if path.contains("/outbox/") {
                    &w.outbox
                } else {
                    &w.inbox
                },
            );
        let a = w
            .api
            .call(
                method_of(&method),
                &url,
                Some(&sibling.token),
                Some(w.body(&method, &path)),
            )
            .await;
        let what = format!("sibling {method} {path}");
        assert_error(&a, StatusCode::FORBIDDEN, "forbidden", &what);
        assert!(
            !a.bytes.windows(4).any(|x| x == b"%PDF" || x == b"II*\0"),
            "{what}"
        );
        tried += 1;
    }
    assert!(tried > 80, "{tried}");
    assert_eq!(snapshot(&w).await, before, "a sibling changed something");
    // The sibling's own listings show nothing of A.
    for list in [
        "faxes/outgoing",
        "faxes/outbox",
        "faxes/inbox",
        "faxes/smtplog",
        "faxboxes",
    ] {
        let r = w
            .api
            .get(
                &format!("/v2/accounts/{}/{list}", sibling.id),
                &sibling.token,
            )
            .await;
        assert_eq!(r.data(), &json!([]), "{list}");
    }
    w.api.stop().await;
}

async fn roles_authentication_before_body(store: SharedStore, dir: Dir) {
    let w = World::new(store, dir).await;
    let before = snapshot(&w).await;
    for (path, method) in secured_routes(&w.api).await {
        let url = w.url("get", &path, &w.clerk.user_id).await;
        // A body that fails every parser: without a token the answer is still 401.
        let r = w
            .api
            .http
            .request(method_of(&method), format!("{}{url}", w.api.base))
            .header("Content-Type", "application/json")
            .body("{\"data\": {")
            .send()
            .await
            .expect("request");
        let a = Api::answer(r).await;
        let what = format!("no token {method} {path}");
        if path == "/v2/accounts" && method == "get" {
            assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{what}");
            continue;
        }
        assert_error(&a, StatusCode::UNAUTHORIZED, "invalid_credentials", &what);
        assert_eq!(a.body["auth_token"], "undefined", "{what}");
    }
    // The reported case: resubmit without a token and without an action.
    let a = w
        .api
        .call(
            Method::PUT,
            &format!("{}/faxes/outbox/{}", w.acc(), w.outbox),
            None,
            Some(json!({"data": {}})),
        )
        .await;
    assert_error(
        &a,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "resubmit",
    );
    // Neither a content type nobody takes nor an upload past the limit comes before the 401.
    let cases: [(&str, &str, Vec<u8>, &str); 2] = [
        ("users", "text/csv", b"a,b".to_vec(), "text/csv"),
        (
            "faxes",
            "application/pdf",
            vec![b'%'; 2_000_000],
            "2 MB upload",
        ),
    ];
    for (resource, content_type, body, what) in cases {
        let r = w
            .api
            .http
            .put(format!("{}{}/{resource}", w.api.base, w.acc()))
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        let a = Api::answer(r).await;
        assert_error(&a, StatusCode::UNAUTHORIZED, "invalid_credentials", what);
    }
    // A bad token is as good as none, whatever the body.
    let a = w
        .api
        .call(
            Method::PUT,
            &format!("{}/users", w.acc()),
            Some("forged.token"),
            Some(json!({"data": {"first_name": 5}})),
        )
        .await;
    assert_error(
        &a,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "bad token",
    );
    assert_eq!(snapshot(&w).await, before);
    // The token may still travel in the envelope; the body reaches the handler intact.
    let a = w
        .api
        .call(
            Method::PUT,
            &format!("{}/faxes/outbox/{}", w.acc(), w.outbox),
            None,
            Some(json!({"auth_token": w.clerk.token, "action": "resubmit", "data": {}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["auth_token"], w.clerk.token.as_str());
    w.api.stop().await;
}

async fn override_call(w: &World, url: &str, token: &str, verb: &str, data: Value) -> Answer {
    let r = w
        .api
        .http
        .post(format!("{}{url}", w.api.base))
        .header("X-Auth-Token", token)
        .header("X-HTTP-Method-Override", verb)
        .json(&json!({"data": data}))
        .send()
        .await
        .expect("request");
    Api::answer(r).await
}

async fn roles_method_override(store: SharedStore, dir: Dir) {
    let w = World::new(store, dir).await;
    let acc = w.acc();
    let me = format!("{acc}/users/{}", w.clerk.user_id);
    let boss = format!("{acc}/users/{}", w.admin.user_id);
    // Advertised, and honoured: POST + PATCH merges (a POST would have replaced the whole
    // document and failed on the missing last_name).
    let a = w.api.call(Method::OPTIONS, &me, None, None).await;
    assert!(
        a.header("access-control-allow-headers")
            .unwrap_or_default()
            .contains("x-http-method-override")
    );
    let a = override_call(
        &w,
        &me,
        &w.clerk.token,
        "patch",
        json!({"first_name": "Over"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.data()["first_name"], "Over");
    assert_eq!(a.data()["last_name"], "Plain");
    // Authorization applies to the method the request stands for.
    let a = override_call(
        &w,
        &me,
        &w.clerk.token,
        "PATCH",
        json!({"priv_level": "admin"}),
    )
    .await;
    assert_error(
        &a,
        StatusCode::FORBIDDEN,
        "forbidden",
        "override PATCH priv_level",
    );
    let a = override_call(&w, &boss, &w.clerk.token, "DELETE", json!({})).await;
    assert_error(
        &a,
        StatusCode::FORBIDDEN,
        "forbidden",
        "override DELETE admin",
    );
    let a = override_call(
        &w,
        &format!("{acc}/faxboxes/{}", w.fb),
        &w.clerk.token,
        "DELETE",
        json!({}),
    )
    .await;
    assert_error(
        &a,
        StatusCode::FORBIDDEN,
        "forbidden",
        "override DELETE faxbox",
    );
    assert_eq!(
        w.api.get(&boss, &w.admin.token).await.status,
        StatusCode::OK
    );
    assert_eq!(
        w.api.get(&me, &w.admin.token).await.data()["priv_level"],
        "user"
    );
    // An admin's override DELETE deletes.
    let a = override_call(
        &w,
        &format!("{acc}/faxboxes/{}", w.fb),
        &w.admin.token,
        "DELETE",
        json!({}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = w
        .api
        .get(&format!("{acc}/faxboxes/{}", w.fb), &w.admin.token)
        .await;
    assert_error(
        &a,
        StatusCode::NOT_FOUND,
        "bad_identifier",
        "deleted faxbox",
    );
    // A method the API does not serve is refused, not run as a POST.
    let a = override_call(&w, &me, &w.admin.token, "TRACE", json!({"first_name": "X"})).await;
    assert_error(
        &a,
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_method",
        "TRACE",
    );
    assert_eq!(
        w.api.get(&me, &w.admin.token).await.data()["first_name"],
        "Over"
    );
    w.api.stop().await;
}

/// A PNG's first bytes.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0";

async fn roles_document_types_and_long_ids(store: SharedStore, dir: Dir) {
    let w = World::new(store, dir).await;
    let acc = w.acc();
    let outgoing = format!("{acc}/faxes/outgoing");
    let count = |a: Answer| a.data().as_array().map(Vec::len).unwrap_or(usize::MAX);
    let queued_before = count(w.api.get(&outgoing, &w.admin.token).await);
    // A PNG labelled as a PDF, in a multipart part and as a raw body: 415 naming both types.
    let a = w
        .api
        .send_multipart(
            &format!("{acc}/faxes"),
            &w.admin.token,
            job("+14155550160", &w.clerk.user_id),
            PNG,
        )
        .await;
    assert_error(
        &a,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "multipart PNG as PDF",
    );
    assert_eq!(
        a.data()["message"],
        "the document is labelled application/pdf but its content is image/png"
    );
    assert_eq!(a.data()["cause"], "application/pdf");
    assert_eq!(a.data()["found"], "image/png");
    let r = w
        .api
        .http
        .put(format!(
            "{}{acc}/faxes?to_number=%2B14155550161",
            w.api.base
        ))
        .header("X-Auth-Token", &w.admin.token)
        .header("Content-Type", "application/pdf")
        .body(PNG.to_vec())
        .send()
        .await
        .expect("request");
    let a = Api::answer(r).await;
    assert_error(
        &a,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "raw PNG as PDF",
    );
    assert_eq!(a.data()["found"], "image/png");
    // A request content type the API does not take: its message names that type.
    let r = w
        .api
        .http
        .put(format!("{}{acc}/faxes", w.api.base))
        .header("X-Auth-Token", &w.admin.token)
        .header("Content-Type", "text/html")
        .body("<html></html>")
        .send()
        .await
        .expect("request");
    let a = Api::answer(r).await;
    assert_error(
        &a,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "text/html",
    );
    assert_eq!(
        a.data()["message"],
        "content type 'text/html' is not accepted here"
    );
    assert_eq!(
        count(w.api.get(&outgoing, &w.admin.token).await),
        queued_before
    );
    // Ids of 60 000, 100 000 and 200 000 characters: a JSON error envelope wherever they sit,
    // the id not echoed whole. (Client libraries refuse such URLs, so the requests go out by
    // hand.) A request target the HTTP layer cannot hold (65 535 bytes or more) is 414.
    for len in [60_000, 100_000, 200_000] {
        let long = "7".repeat(len);
        for path in [
            format!("/v2/accounts/{long}"),
            format!("{acc}/faxes/outbox/{long}"),
            format!("{acc}/faxes/outgoing/{long}"),
            format!("{acc}/users/{long}"),
            format!("{acc}/faxboxes/{long}"),
        ] {
            let (status, content_type, body) = raw_get(&w.api.base, &path, &w.admin.token).await;
            check_long_id_answer(len, &path, status, content_type, &body);
        }
    }
    // On a kept-alive connection, after a request that was served: the same answer.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = w.api.base.trim_start_matches("http://").to_string();
        let mut sock = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let token = &w.admin.token;
        let first = format!("GET {acc} HTTP/1.1\r\nHost: {addr}\r\nX-Auth-Token: {token}\r\n\r\n");
        let path = format!("{acc}/faxes/outbox/{}", "7".repeat(100_000));
        let second =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nX-Auth-Token: {token}\r\n\r\n");
        sock.write_all(first.as_bytes()).await.expect("write");
        sock.write_all(second.as_bytes()).await.expect("write");
        let mut got = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            sock.read_to_end(&mut got),
        )
        .await
        .expect("the connection is closed after the answer")
        .expect("read");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:.300}");
        let at = text
            .find("HTTP/1.1 414 URI Too Long\r\n")
            .expect("a 414 after the 200");
        let second = &got[at..];
        let split = second.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let body: Value = serde_json::from_slice(&second[split + 4..]).expect("JSON body");
        assert_eq!(body["error"], "414");
    }
    w.api.stop().await;
}

/// Checks the answer to a GET whose path holds an id of `len` characters.
fn check_long_id_answer(
    len: usize,
    path: &str,
    status: u16,
    content_type: Option<String>,
    body: &[u8],
) {
    if len >= 65_535 {
        assert_eq!(status, 414, "{path:.80}");
    }
    assert!((400..500).contains(&status), "{path:.80} -> {status}");
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "{path:.80}"
    );
    let body: Value = serde_json::from_slice(body).expect("JSON body");
    assert_eq!(body["status"], "error", "{path:.80}");
    assert_eq!(body["error"], status.to_string(), "{path:.80}");
    assert!(body.to_string().len() < 2_000, "the id is echoed whole");
}

/// A GET written on a plain socket: status, `Content-Type`, body.
async fn raw_get(base: &str, path: &str, token: &str) -> (u16, Option<String>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nX-Auth-Token: {token}\r\nConnection: close\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    sock.read_to_end(&mut got).await.expect("read");
    let split = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&got[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let content_type = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-type")
            .then(|| v.trim().to_string())
    });
    (status, content_type, got[split + 4..].to_vec())
}
