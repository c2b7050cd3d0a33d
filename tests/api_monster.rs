//! What Monster UI 4.3 and its fax app read, over real HTTP on both backends: the app list
//! of a login or a resumed session has no `source_url` (Monster loads an app from any
//! `source_url` it is given, even `""`, and the page stays blank), the first-use
//! walkthrough's billing reads answer as Kazoo answers an account without billing, a busy
//! fax says why it failed, and no fax, faxbox, account, user or callflow answer carries an
//! optional key without a value.

#[macro_use]
mod api_common;

use api_common::{Api, Dir, PDF, Tenant, intake_done, plain_user, test_options, unique_number};
use faxd::gateway::FaxResult;
use faxd::ids::{AccountId, Db, YearMonth, modb_doc_id, new_id};
use faxd::outbound::lease::{ReleasePolicy, release};
use faxd::outbound::release::Outcome;
use faxd::store::SharedStore;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

both_backends!(
    logins_list_the_fax_app_without_a_source_url,
    walkthrough_billing_reads_answer_as_without_billing,
    a_busy_fax_says_why_it_failed,
    answers_leave_out_optional_keys_without_a_value,
);

/// Paths (`a.b[0].c`) of every `""` or `null` in `v`.
fn empty_values(v: &Value) -> Vec<String> {
    fn walk(v: &Value, path: String, out: &mut Vec<String>) {
        match v {
            Value::Null => out.push(path),
            Value::String(s) if s.is_empty() => out.push(path),
            Value::Object(m) => {
                for (k, x) in m {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(x, p, out);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, String::new(), &mut out);
    out
}

#[track_caller]
fn assert_no_empty_values(a: &api_common::Answer, what: &str) {
    assert!(a.status.is_success(), "{what}: {} {}", a.status, a.body);
    let empty = empty_values(a.data());
    assert!(empty.is_empty(), "{what}: empty {empty:?} in {}", a.body);
}

/// The app list of a login/session answer, checked as Monster reads it.
#[track_caller]
fn assert_apps(a: &api_common::Answer, what: &str) {
    let apps = a.data()["apps"].as_array().expect("apps");
    let fax = apps
        .iter()
        .find(|x| x["name"] == "fax")
        .unwrap_or_else(|| panic!("{what}: no fax app in {}", a.body));
    assert!(fax["api_url"].as_str().unwrap().ends_with("/v2/"), "{what}");
    assert_eq!(fax["label"], "Fax", "{what}");
    for app in apps {
        assert!(
            app.get("source_url").is_none(),
            "{what}: Monster would load the app from {}",
            app["source_url"]
        );
    }
    assert_no_empty_values(a, what);
}

async fn logins_list_the_fax_app_without_a_source_url(store: SharedStore, dir: Dir) {
    let api = Api::start(store, dir, test_options()).await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    let login = api.login(&a.name, &a.username, &a.password).await;
    assert_eq!(login.status, StatusCode::CREATED, "{}", login.body);
    assert_apps(&login, "PUT /v2/user_auth");
    assert_eq!(login.data()["account_name"], a.name.as_str());
    // Session resume from Monster's cookie: no X-Auth-Token worth reading.
    let resume = api
        .call(
            Method::POST,
            "/v2/auth/tokeninfo",
            Some("undefined"),
            Some(json!({"data": {"token": a.token}})),
        )
        .await;
    assert_eq!(resume.status, StatusCode::OK, "{}", resume.body);
    assert_apps(&resume, "POST /v2/auth/tokeninfo");
    let by_query = api
        .call(
            Method::GET,
            &format!("/v2/auth/tokeninfo?token={}", a.token),
            None,
            None,
        )
        .await;
    assert_apps(&by_query, "GET /v2/auth/tokeninfo");
    let described = api.get("/v2/token_auth", &a.token).await;
    assert_apps(&described, "GET /v2/token_auth");
    // The app store lists the same app, without a source_url either.
    let acc = format!("/v2/accounts/{}", a.id);
    let store_list = api.get(&format!("{acc}/apps_store"), &a.token).await;
    assert_no_empty_values(&store_list, "apps_store");
    let row = &store_list.data()[0];
    assert_eq!(row["name"], "fax");
    assert!(row.get("source_url").is_none(), "{}", store_list.body);
    let one = api
        .get(
            &format!("{acc}/apps_store/{}", faxd::api::monster::FAX_APP_ID),
            &a.token,
        )
        .await;
    assert_no_empty_values(&one, "apps_store/{id}");
    assert!(one.data().get("source_url").is_none(), "{}", one.body);
    api.stop().await;
}

async fn walkthrough_billing_reads_answer_as_without_billing(store: SharedStore, dir: Dir) {
    let api = Api::start(store, dir, test_options()).await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    let other = api.child_tenant(&root).await;
    let clerk = plain_user(&api, &a, "clerk").await;
    let total = format!("/v2/accounts/{}/ledgers/total", a.id);
    let limits = format!("/v2/accounts/{}/limits", a.id);
    // The account's admin, a plain user of it and an admin of its parent all read them.
    for t in [&a, &clerk, &root] {
        let r = api.get(&format!("{total}?_=1700000000000"), &t.token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["status"], "success");
        assert_eq!(r.data()["amount"].as_f64(), Some(0.0), "{}", r.body);
        assert_eq!(r.data().as_object().unwrap().len(), 1, "{}", r.body);
        let r = api.get(&limits, &t.token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(
            r.data(),
            &json!({"id": "limits", "allow_prepay": true}),
            "{}",
            r.body
        );
    }
    // Another account's token: refused as everywhere under /v2/accounts/{A}; no token: 401.
    for path in [&total, &limits] {
        let r = api.get(path, &other.token).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        assert_eq!(r.body["message"], "forbidden");
        assert!(r.data().get("amount").is_none());
        let r = api.call(Method::GET, path, None, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    }
    api.stop().await;
}

/// A fax job submitted by `t` to `to`, as stored in the queue once its intake is done.
async fn submit(api: &Api, t: &Tenant, to: &str, extra: Value) -> Value {
    let mut data = json!({"from_number": "+14155550100", "to_number": to, "retries": 1});
    if let (Value::Object(d), Value::Object(e)) = (&mut data, extra) {
        d.extend(e);
    }
    let r = api
        .send_multipart(&format!("/v2/accounts/{}/faxes", t.id), &t.token, data, PDF)
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let id = r.data()["id"].as_str().unwrap().to_string();
    assert_eq!(intake_done(api, t, &id).await["status"], "pending");
    api.store.get(&Db::Faxes, &id).await.unwrap().unwrap()
}

/// The outbox id of a finished job `job_id` of account `t`, from the listing Monster reads.
async fn outbox_id(api: &Api, t: &Tenant, job_id: &str) -> String {
    let r = api
        .get(
            &format!("/v2/accounts/{}/faxes/outbox?paginate=false", t.id),
            &t.token,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.data()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|row| row["id"].as_str())
        .find(|id| id.ends_with(job_id))
        .unwrap_or_else(|| panic!("{job_id} not in the outbox: {}", r.body))
        .to_string()
}

async fn a_busy_fax_says_why_it_failed(store: SharedStore, dir: Dir) {
    let api = Api::start(store.clone(), dir, test_options()).await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    api.allow_any_caller_id(&root, &a).await;
    let job = submit(&api, &a, &unique_number(), json!({})).await;
    let job_id = job["_id"].as_str().unwrap().to_string();
    // The far end is busy: the call is never answered, T.30 never starts.
    let busy = Outcome::Call(FaxResult {
        success: false,
        hangup_cause: "USER_BUSY".into(),
        sip_code: 486,
        ..FaxResult::default()
    });
    let d = release(&store, job, &busy, 1, 2, &ReleasePolicy::default())
        .await
        .unwrap();
    assert_eq!(d.status.as_str(), "failed");
    let id = outbox_id(&api, &a, &job_id).await;
    // The outbox row (the FAILED badge's tooltip) and the details both say why.
    let list = api
        .get(
            &format!("/v2/accounts/{}/faxes/outbox?paginate=false", a.id),
            &a.token,
        )
        .await;
    let row = list
        .data()
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap()
        .clone();
    let one = api
        .get(
            &format!("/v2/accounts/{}/faxes/outbox/{id}", a.id),
            &a.token,
        )
        .await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.body);
    for (what, fax) in [("row", &row), ("details", one.data())] {
        let tx = &fax["tx_result"];
        assert_eq!(tx["success"], false, "{what}: {fax}");
        assert_eq!(tx["result_text"], "USER_BUSY", "{what}: {fax}");
        assert_eq!(tx["result_cause"], "USER_BUSY", "{what}: {fax}");
        assert_eq!(tx["result_code"], 486, "{what}: {fax}");
        // The engine's own text stays as it gave it (nothing: no T.30 exchange).
        assert_eq!(tx["fax_result_text"], "", "{what}: {fax}");
        for k in ["remote_station_id", "local_station_id", "image_resolution"] {
            assert!(tx.get(k).is_none(), "{what}: {k} in {fax}");
        }
    }
    // A call that did reach T.30 keeps the engine's text.
    let job = submit(&api, &a, &unique_number(), json!({})).await;
    let job_id = job["_id"].as_str().unwrap().to_string();
    let dropped = Outcome::Call(FaxResult {
        success: false,
        hangup_cause: "NORMAL_CLEARING".into(),
        sip_code: 200,
        fax_result_code: 49,
        fax_result_text: "The call dropped prematurely".into(),
        remote_station_id: "+14155550150".into(),
        ..FaxResult::default()
    });
    release(&store, job, &dropped, 1, 2, &ReleasePolicy::default())
        .await
        .unwrap();
    let id = outbox_id(&api, &a, &job_id).await;
    let one = api
        .get(
            &format!("/v2/accounts/{}/faxes/outbox/{id}", a.id),
            &a.token,
        )
        .await;
    let tx = &one.data()["tx_result"];
    assert_eq!(
        tx["result_text"], "The call dropped prematurely",
        "{}",
        one.body
    );
    assert_eq!(tx["result_cause"], "NORMAL_CLEARING");
    assert_eq!(tx["remote_station_id"], "+14155550150");
    api.stop().await;
}

async fn answers_leave_out_optional_keys_without_a_value(store: SharedStore, dir: Dir) {
    let api = Api::start(store.clone(), dir, test_options()).await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    api.allow_any_caller_id(&root, &a).await;
    let acc = format!("/v2/accounts/{}", a.id);
    let mut answers = Vec::new();
    // The account and admin a first start (or `root_tenant`) creates without the API.
    answers.push((
        "GET bootstrap account",
        api.get(&format!("/v2/accounts/{}", root.id), &root.token)
            .await,
    ));
    answers.push((
        "GET bootstrap admin",
        api.get(
            &format!("/v2/accounts/{}/users/{}", root.id, root.user_id),
            &root.token,
        )
        .await,
    ));
    // Accounts: the document, a child made with a name only, the listings.
    answers.push(("GET account", api.get(&acc, &a.token).await));
    let child = api
        .put(&acc, &a.token, json!({"name": api_common::unique("kid")}))
        .await;
    answers.push(("PUT child account", child));
    answers.push((
        "children",
        api.get(&format!("{acc}/children"), &a.token).await,
    ));
    answers.push((
        "descendants",
        api.get(&format!("{acc}/descendants"), &a.token).await,
    ));
    // Users: one made with the fields Monster's user form requires.
    let user = api
        .put(
            &format!("{acc}/users"),
            &a.token,
            json!({"first_name": "Pat", "last_name": "Plain", "username": "pat",
                   "password": "secret-pw-1"}),
        )
        .await;
    let user_id = user.data()["id"].as_str().unwrap_or_default().to_string();
    answers.push(("PUT user", user));
    answers.push((
        "GET user",
        api.get(&format!("{acc}/users/{user_id}"), &a.token).await,
    ));
    answers.push(("users", api.get(&format!("{acc}/users"), &a.token).await));
    // Faxboxes: one with a name only.
    let fb = api
        .put(
            &format!("{acc}/faxboxes"),
            &a.token,
            json!({"name": "Front"}),
        )
        .await;
    let fb_id = fb.data()["id"].as_str().unwrap_or_default().to_string();
    answers.push(("PUT faxbox", fb));
    answers.push((
        "GET faxbox",
        api.get(&format!("{acc}/faxboxes/{fb_id}"), &a.token).await,
    ));
    answers.push((
        "faxboxes",
        api.get(&format!("{acc}/faxboxes?paginate=false"), &a.token)
            .await,
    ));
    // Callflows: a number to a faxbox, without a name.
    let cf = api
        .put(
            &format!("{acc}/callflows"),
            &a.token,
            json!({"numbers": [unique_number()],
                   "flow": {"module": "faxbox", "data": {"id": fb_id}}}),
        )
        .await;
    let cf_id = cf.data()["id"].as_str().unwrap_or_default().to_string();
    answers.push(("PUT callflow", cf));
    answers.push((
        "GET callflow",
        api.get(&format!("{acc}/callflows/{cf_id}"), &a.token).await,
    ));
    answers.push((
        "callflows",
        api.get(&format!("{acc}/callflows"), &a.token).await,
    ));
    // Faxes: a queued job without a name or a faxbox, then the same job sent.
    let job = submit(&api, &a, &unique_number(), json!({})).await;
    let job_id = job["_id"].as_str().unwrap().to_string();
    answers.push((
        "GET queued fax",
        api.get(&format!("{acc}/faxes/outgoing/{job_id}"), &a.token)
            .await,
    ));
    answers.push((
        "queued faxes",
        api.get(&format!("{acc}/faxes/outgoing"), &a.token).await,
    ));
    let sent = Outcome::Call(FaxResult {
        success: true,
        hangup_cause: "NORMAL_CLEARING".into(),
        sip_code: 200,
        fax_result_text: "OK".into(),
        transferred_pages: 1,
        total_pages: 1,
        transfer_rate: 14_400,
        ..FaxResult::default()
    });
    release(&store, job, &sent, 1, 2, &ReleasePolicy::default())
        .await
        .unwrap();
    let out_id = outbox_id(&api, &a, &job_id).await;
    answers.push((
        "GET outbox fax",
        api.get(&format!("{acc}/faxes/outbox/{out_id}"), &a.token)
            .await,
    ));
    answers.push((
        "outbox",
        api.get(&format!("{acc}/faxes/outbox?paginate=false"), &a.token)
            .await,
    ));
    // A fax received from a caller without a name, stored as the receiving side stores it.
    let account = AccountId::parse(&a.id).unwrap();
    let now = faxd::time::now_gregorian();
    let db = Db::Modb(account.clone(), YearMonth::now());
    store.ensure_db(&db).await.unwrap();
    let in_id = modb_doc_id(YearMonth::now(), &new_id());
    let receiver = faxd::inbound::Receiver {
        account,
        callflow_id: cf_id.clone(),
        owner_id: None,
        faxbox_id: Some(fb_id.clone()),
        notify: vec![],
        station_id: "+14155550100".into(),
        t38: false,
        max_inbound: None,
    };
    let call = faxd::inbound::CallInfo {
        call_id: new_id(),
        to: "+14155550100".into(),
        from_number: "+14155550999".into(),
        from_name: String::new(),
    };
    let received = FaxResult {
        success: true,
        hangup_cause: "NORMAL_CLEARING".into(),
        sip_code: 200,
        fax_result_text: "OK".into(),
        transferred_pages: 1,
        total_pages: 1,
        ..FaxResult::default()
    };
    let doc = faxd::inbound::inbox_doc(
        &receiver,
        &call,
        &received,
        &db,
        &in_id,
        1000,
        "faxd@test",
        1,
        2,
        now,
    );
    store.save(&db, doc).await.unwrap();
    answers.push((
        "GET inbox fax",
        api.get(&format!("{acc}/faxes/inbox/{in_id}"), &a.token)
            .await,
    ));
    answers.push((
        "inbox",
        api.get(&format!("{acc}/faxes/inbox?paginate=false"), &a.token)
            .await,
    ));
    for (what, answer) in &answers {
        assert_no_empty_values(answer, what);
    }
    api.stop().await;
}
