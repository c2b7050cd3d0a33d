//! Kazoo 4.3 conformance of the fax API over real HTTP, on both storage backends: how
//! `fax_timezone` is chosen (request, faxbox, user, account, `"inherit"` deferring), download
//! file names in local time, and the status codes and error bodies of the fax routes
//! (matching `cb_faxes`/`cb_faxboxes`, or differing as the README lists).

#[macro_use]
mod api_common;

use api_common::{Api, Dir, PDF, Tenant, received_fax, test_options};
use faxd::ids::{AccountId, Db, YearMonth};
use faxd::store::SharedStore;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

both_backends!(
    fax_timezone_chain_and_file_names,
    fax_status_codes_and_errors
);

/// 2024-07-01 12:00:00 UTC in gregorian seconds.
const SUMMER_NOON_UTC: i64 = 63_887_054_400;

fn assert_error(a: &api_common::Answer, status: StatusCode, message: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.body["status"], "error", "{}", a.body);
    assert_eq!(a.body["error"], status.as_u16().to_string(), "{}", a.body);
    assert_eq!(a.body["message"], message, "{}", a.body);
}

/// Submits a fax and waits for its intake (the answer comes before the conversion), so the
/// queue the test reads next holds it.
async fn send(api: &Api, path: &str, t: &Tenant, data: Value) -> api_common::Answer {
    let r = api.send_multipart(path, &t.token, data, PDF).await;
    if r.status.is_success()
        && let Some(id) = r.data()["id"].as_str()
    {
        api_common::intake_done(api, t, id).await;
    }
    r
}

fn job(extra: Value) -> Value {
    let mut j = json!({"from_number": "+14155550100", "to_number": "+14155550160"});
    for (k, v) in extra.as_object().unwrap() {
        j[k] = v.clone();
    }
    j
}

async fn user(api: &Api, t: &Tenant, name: &str, timezone: Option<&str>) -> String {
    let mut u = json!({"first_name": name, "last_name": "Zone"});
    if let Some(z) = timezone {
        u["timezone"] = json!(z);
    }
    let r = api
        .put(&format!("/v2/accounts/{}/users", t.id), &t.token, u)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.data()["id"].as_str().unwrap().to_string()
}

/// The file name a download of an inbox fax answers with.
async fn file_name(api: &Api, t: &Tenant, fax: &str, query: &str) -> api_common::Answer {
    api.get(
        &format!(
            "/v2/accounts/{}/faxes/inbox/{fax}/attachment?format=tiff{query}",
            t.id
        ),
        &t.token,
    )
    .await
}

fn disposition(a: &api_common::Answer) -> String {
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.header("content-disposition")
        .expect("content-disposition")
}

async fn fax_timezone_chain_and_file_names(store: SharedStore, dir: Dir) {
    let api = Api::start(store.clone(), dir, test_options()).await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    api.allow_any_caller_id(&root, &a).await;
    let acc = format!("/v2/accounts/{}", a.id);
    let r = api
        .patch(&acc, &a.token, json!({"timezone": "Asia/Tokyo"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let paris = user(&api, &a, "Paris", Some("Europe/Paris")).await;
    let inherits = user(&api, &a, "Inherit", Some("inherit")).await;
    let fax_zone = async |r: api_common::Answer| {
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        let id = r.data()["id"].as_str().unwrap().to_string();
        let got = api
            .get(&format!("{acc}/faxes/outgoing/{id}"), &a.token)
            .await;
        got.data()["fax_timezone"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    // The request's zone wins (fax_timezone, or Kazoo's `timezone` alias).
    let r = send(
        &api,
        &format!("{acc}/faxes"),
        &a,
        job(json!({"fax_timezone": "America/New_York"})),
    )
    .await;
    assert_eq!(fax_zone(r).await, "America/New_York");
    let r = send(
        &api,
        &format!("{acc}/faxes"),
        &a,
        job(json!({"timezone": "Europe/Lisbon"})),
    )
    .await;
    assert_eq!(fax_zone(r).await, "Europe/Lisbon");
    // Else the owner's; "inherit" defers to the next level.
    let r = send(
        &api,
        &format!("{acc}/users/{paris}/faxes"),
        &a,
        job(json!({"fax_timezone": "inherit"})),
    )
    .await;
    assert_eq!(fax_zone(r).await, "Europe/Paris");
    let r = send(
        &api,
        &format!("{acc}/users/{inherits}/faxes"),
        &a,
        job(json!({})),
    )
    .await;
    assert_eq!(fax_zone(r).await, "Asia/Tokyo");
    // The caller (an admin without a zone): the account's.
    let r = send(&api, &format!("{acc}/faxes"), &a, job(json!({}))).await;
    assert_eq!(fax_zone(r).await, "Asia/Tokyo");
    // A faxbox: its zone, else its owner's.
    let fb = api
        .put(
            &format!("{acc}/faxboxes"),
            &a.token,
            json!({"name": "Zoned", "fax_timezone": "inherit", "owner_id": paris}),
        )
        .await;
    assert_eq!(fb.status, StatusCode::CREATED, "{}", fb.body);
    let fb = fb.data()["id"].as_str().unwrap().to_string();
    let r = send(
        &api,
        &format!("{acc}/faxboxes/{fb}/faxes"),
        &a,
        job(json!({})),
    )
    .await;
    assert_eq!(fax_zone(r).await, "Europe/Paris");
    let r = api
        .post(
            &format!("{acc}/faxboxes/{fb}"),
            &a.token,
            json!({"name": "Zoned", "fax_timezone": "America/Chicago"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = send(
        &api,
        &format!("{acc}/faxboxes/{fb}/faxes"),
        &a,
        job(json!({})),
    )
    .await;
    assert_eq!(fax_zone(r).await, "America/Chicago");
    // A faxbox refuses a zone the tz database does not know.
    let r = api
        .post(
            &format!("{acc}/faxboxes/{fb}"),
            &a.token,
            json!({"name": "Zoned", "fax_timezone": "Mars/Olympus"}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "validation error");
    assert_eq!(
        r.data()["fax_timezone"]["invalid"]["cause"],
        "Mars/Olympus",
        "{}",
        r.body
    );
    let r = api.get(&format!("{acc}/faxboxes/{fb}"), &a.token).await;
    assert_eq!(r.data()["fax_timezone"], "America/Chicago", "{}", r.body);
    // An account that inherits: its parent's zone.
    let r = api
        .patch(
            &format!("/v2/accounts/{}", root.id),
            &root.token,
            json!({"timezone": "Australia/Sydney"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = api
        .patch(&acc, &a.token, json!({"timezone": "inherit"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = send(&api, &format!("{acc}/faxes"), &a, job(json!({}))).await;
    assert_eq!(fax_zone(r).await, "Australia/Sydney");
    // A zone the tz database does not know is refused, naming the field; nothing is queued.
    let before = api
        .get(&format!("{acc}/faxes/outgoing?paginate=false"), &a.token)
        .await;
    let r = send(
        &api,
        &format!("{acc}/faxes"),
        &a,
        job(json!({"fax_timezone": "Mars/Olympus"})),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "validation error");
    assert_eq!(
        r.data()["fax_timezone"]["invalid"]["cause"],
        "Mars/Olympus",
        "{}",
        r.body
    );
    let after = api
        .get(&format!("{acc}/faxes/outgoing?paginate=false"), &a.token)
        .await;
    assert_eq!(before.data(), after.data());

    // Download file names: local time of pvt_created in the caller's zone (user, then
    // account, as Kazoo), or the zone the request names.
    let fax = received_fax(&store, &a.id, None, None).await;
    let db = Db::Modb(AccountId::parse(&a.id).unwrap(), YearMonth::now());
    let mut doc = store.get(&db, &fax).await.unwrap().unwrap();
    doc["pvt_created"] = json!(SUMMER_NOON_UTC);
    store.save(&db, doc).await.unwrap();
    let name = |zone_stamp: &str| format!("attachment; filename=fax_document_{zone_stamp}.tiff");
    // The account inherits from the root: Sydney, UTC+10 in July.
    assert_eq!(
        disposition(&file_name(&api, &a, &fax, "").await),
        name("2024-07-01_22-00-00")
    );
    let r = api
        .patch(&acc, &a.token, json!({"timezone": "Europe/Paris"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        disposition(&file_name(&api, &a, &fax, "").await),
        name("2024-07-01_14-00-00")
    );
    // The caller's own zone comes before the account's.
    let r = api
        .patch(
            &format!("{acc}/users/{}", a.user_id),
            &a.token,
            json!({"timezone": "America/Los_Angeles"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        disposition(&file_name(&api, &a, &fax, "").await),
        name("2024-07-01_05-00-00")
    );
    assert_eq!(
        disposition(&file_name(&api, &a, &fax, "&fax_timezone=Asia/Kolkata").await),
        name("2024-07-01_17-30-00")
    );
    let r = file_name(&api, &a, &fax, "&fax_timezone=Nowhere/Special").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "validation error");
    assert!(
        r.data()["fax_timezone"]["invalid"].is_object(),
        "{}",
        r.body
    );
    api.stop().await;
}

async fn fax_status_codes_and_errors(store: SharedStore, dir: Dir) {
    let api = Api::start(store.clone(), dir, test_options()).await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    api.allow_any_caller_id(&root, &a).await;
    let acc = format!("/v2/accounts/{}", a.id);

    // PUT /faxes: 202 with Kazoo's message.
    let r = send(&api, &format!("{acc}/faxes"), &a, job(json!({}))).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["message"], "processing fax attachments");
    let queued = r.data()["id"].as_str().unwrap().to_string();
    let r = send(&api, &format!("{acc}/faxes/outgoing"), &a, job(json!({}))).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    // No document: 400 document.url.required, Kazoo's text.
    let r = api
        .put(&format!("{acc}/faxes"), &a.token, job(json!({})))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "validation error");
    assert_eq!(
        r.data()["document.url"]["required"]["message"],
        "add document url or upload a document",
        "{}",
        r.body
    );
    // Unknown ids: 404 bad_identifier with the id as cause.
    for path in [
        format!("{acc}/faxes/outgoing/0123456789abcdef0123456789abcdef"),
        format!("{acc}/faxes/outbox/202407-0123456789abcdef0123456789abcdef"),
        format!("{acc}/faxes/inbox/202407-0123456789abcdef0123456789abcdef/attachment"),
        format!("{acc}/faxes/smtplog/202407-0123456789abcdef0123456789abcdef"),
        format!("{acc}/faxboxes/0123456789abcdef0123456789abcdef"),
    ] {
        let r = api.get(&path, &a.token).await;
        assert_error(&r, StatusCode::NOT_FOUND, "bad_identifier");
        assert_eq!(r.data()["message"], "bad identifier", "{path}");
        assert!(
            r.data()["cause"].as_str().unwrap().starts_with("20")
                || r.data()["cause"].as_str().unwrap().starts_with("0123"),
            "{}",
            r.body
        );
    }
    // Methods Kazoo does not allow on these routes: 405 invalid_method.
    for (m, path) in [
        (Method::POST, format!("{acc}/faxes/outgoing/{queued}")),
        (Method::PUT, format!("{acc}/faxes/outgoing/{queued}")),
        (Method::POST, format!("{acc}/faxes/inbox")),
        (Method::DELETE, format!("{acc}/faxes/smtplog")),
        (Method::GET, format!("{acc}/faxes")),
        (Method::DELETE, format!("{acc}/faxes/outbox")),
        (Method::PUT, format!("{acc}/faxes/incoming")),
    ] {
        let r = api
            .call(m.clone(), &path, Some(&a.token), Some(json!({"data": {}})))
            .await;
        assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, "invalid_method");
        assert_eq!(r.data()["message"], "method not allowed", "{m} {path}");
    }
    // An inbox fax read as an outbox fax: 404 (Kazoo: 500 "document is not in folder").
    let inbox = received_fax(&store, &a.id, None, None).await;
    let r = api
        .get(&format!("{acc}/faxes/outbox/{inbox}"), &a.token)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "bad_identifier");
    // Forward without / with a wrong action: 400 on `action` (Kazoo: 500).
    let r = api
        .call(
            Method::PUT,
            &format!("{acc}/faxes/inbox/{inbox}"),
            Some(&a.token),
            Some(json!({"data": {}})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "validation error");
    assert!(r.data()["action"]["required"].is_object(), "{}", r.body);
    let r = api
        .call(
            Method::PUT,
            &format!("{acc}/faxes/inbox/{inbox}"),
            Some(&a.token),
            Some(json!({"action": "resubmit", "data": {}})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "validation error");
    assert_eq!(
        r.data()["action"]["enum"]["cause"],
        "resubmit",
        "{}",
        r.body
    );
    // Forward: 201 (a PUT that creates), the new queued job.
    let r = api
        .call(
            Method::PUT,
            &format!("{acc}/faxes/inbox/{inbox}"),
            Some(&a.token),
            Some(json!({"action": "forward", "data": {"to_number": "+14155550161"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.data()["to_number"], "+14155550161");
    // DELETE of a fax: 200 with the document, then 404.
    let r = api
        .delete(&format!("{acc}/faxes/inbox/{inbox}"), &a.token)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.data()["id"], inbox.as_str());
    let r = api
        .get(&format!("{acc}/faxes/inbox/{inbox}"), &a.token)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "bad_identifier");
    // Faxboxes: PUT 201; a custom address used twice is 400 unique with Kazoo's text.
    let address = format!("{}@example.net", api_common::unique("box"));
    let r = api
        .put(
            &format!("{acc}/faxboxes"),
            &a.token,
            json!({"name": "One", "custom_smtp_email_address": address}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = api
        .put(
            &format!("{acc}/faxboxes"),
            &a.token,
            json!({"name": "Two", "custom_smtp_email_address": address}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "validation error");
    assert_eq!(
        r.data()["custom_smtp_email_address"]["unique"]["message"],
        "email address must be unique",
        "{}",
        r.body
    );
    // A schema violation: 400 with the field and rule.
    let r = api
        .put(
            &format!("{acc}/faxboxes"),
            &a.token,
            json!({"name": "Three", "retries": 99}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "validation error");
    assert!(r.data()["retries"].is_object(), "{}", r.body);
    // user_auth: wrong password is 401 invalid_credentials.
    let r = api.login(&a.name, &a.username, "wrong-password").await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert_eq!(r.data()["message"], "invalid credentials", "{}", r.body);
    // No token: 401.
    let r = api
        .call(Method::GET, &format!("{acc}/faxes/outgoing"), None, None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    api.stop().await;
}
