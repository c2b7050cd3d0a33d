//! REST API integration tests over real HTTP, on both storage backends: the request pipeline
//! (envelope, auth, CORS, errors), tenant isolation for every resource, accounts, users,
//! faxboxes, callflows, faxes (every endpoint, the fixes over Kazoo), system_configs and the
//! OpenAPI document checked against the routes served.

#[macro_use]
mod api_common;

use std::time::Duration;

use api_common::{
    Api, Dir, PDF, Tenant, document_server, intake_done, poll, received_fax, test_options, unique,
    unique_number,
};
use faxd::ids::{AccountId, Db, YearMonth, modb_doc_id, new_id};
use faxd::store::SharedStore;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

both_backends!(
    pipeline_envelope_cors_and_errors,
    login_tokens_and_revocation,
    accounts_tree_and_isolation,
    users_crud_and_credentials,
    faxboxes_and_addresses,
    callflows_numbers_unique_system_wide,
    faxes_submit_every_way,
    faxes_queue_outbox_and_downloads,
    faxes_inbox_forward_and_smtplog,
    faxes_tenant_isolation,
    numbers_and_caller_ids_checked_where_they_enter,
    monster_ui_calls,
    openapi_matches_served_routes,
);

async fn start(store: SharedStore, dir: Dir) -> Api {
    Api::start(store, dir, test_options()).await
}

fn assert_error(a: &api_common::Answer, status: StatusCode, message: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.body["status"], "error", "{}", a.body);
    assert_eq!(a.body["error"], status.as_u16().to_string(), "{}", a.body);
    assert_eq!(a.body["message"], message, "{}", a.body);
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("application/json")
    );
    assert!(a.header("x-request-id").is_some());
    assert_eq!(
        a.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
}

async fn pipeline_envelope_cors_and_errors(store: SharedStore, dir: Dir) {
    let api = start(store, dir).await;
    // Success envelope.
    let a = api.call(Method::GET, "/v2/about", None, None).await;
    assert_eq!(a.status, StatusCode::OK);
    for k in [
        "data",
        "status",
        "request_id",
        "timestamp",
        "version",
        "node",
    ] {
        assert!(a.body.get(k).is_some(), "{k} in {}", a.body);
    }
    assert_eq!(
        a.header("x-request-id").unwrap(),
        a.body["request_id"].as_str().unwrap()
    );
    // A client request id is echoed.
    let r = api
        .http
        .get(format!("{}/v2/about", api.base))
        .header("X-Request-Id", "client-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "client-abc-123");
    // No token: 401 with Kazoo's shape.
    let t = api.root_tenant().await;
    let a = api
        .call(Method::GET, &format!("/v2/accounts/{}", t.id), None, None)
        .await;
    assert_error(&a, StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert_eq!(a.body["auth_token"], "undefined");
    assert_eq!(a.data()["message"], "invalid credentials");
    // Unknown path: 404 with envelope and CORS; preflight on any path.
    let a = api.get("/v2/nope/nothing", &t.token).await;
    assert_error(&a, StatusCode::NOT_FOUND, "not_found");
    let a = api
        .call(Method::OPTIONS, "/v2/accounts/whatever/storage", None, None)
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert!(
        a.header("access-control-allow-headers")
            .unwrap()
            .contains("x-auth-token")
    );
    assert!(
        a.header("access-control-allow-methods")
            .unwrap()
            .contains("DELETE")
    );
    assert!(a.header("x-request-id").is_some());
    // 405 for a verb the resource does not have; GET /v2/accounts is 405 as in Kazoo.
    let a = api.call(Method::DELETE, "/v2/user_auth", None, None).await;
    assert_error(&a, StatusCode::METHOD_NOT_ALLOWED, "invalid_method");
    let a = api.get("/v2/accounts", &t.token).await;
    assert_error(&a, StatusCode::METHOD_NOT_ALLOWED, "invalid_method");
    // Malformed JSON, schema errors with data.<field>.<rule>.message, several at once.
    let r = api
        .http
        .put(format!("{}/v2/accounts/{}/users", api.base, t.id))
        .header("X-Auth-Token", &t.token)
        .header("Content-Type", "application/json")
        .body("{\"data\": {")
        .send()
        .await
        .unwrap();
    let a = Api::answer(r).await;
    assert_error(&a, StatusCode::BAD_REQUEST, "validation error");
    assert!(a.data()["json"]["invalid"]["message"].is_string());
    let a = api
        .put(
            &format!("/v2/accounts/{}/users", t.id),
            &t.token,
            json!({"first_name": 123, "priv_level": "god"}),
        )
        .await;
    assert_error(&a, StatusCode::BAD_REQUEST, "validation error");
    assert_eq!(
        a.data()["first_name"]["type"]["message"],
        "Value did not match type(s): string"
    );
    assert_eq!(
        a.data()["last_name"]["required"]["message"],
        "Field is required but missing"
    );
    assert!(a.data()["priv_level"]["enum"]["message"].is_string());
    // Unsupported request type: 415 with a JSON body.
    let r = api
        .http
        .put(format!("{}/v2/accounts/{}/users", api.base, t.id))
        .header("X-Auth-Token", &t.token)
        .header("Content-Type", "text/csv")
        .body("a,b")
        .send()
        .await
        .unwrap();
    let a = Api::answer(r).await;
    assert_error(
        &a,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    // `curl -d` sends a form content type with a JSON body: read as JSON.
    let r = api
        .http
        .put(format!("{}/v2/accounts/{}/faxboxes", api.base, t.id))
        .header("X-Auth-Token", &t.token)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(r#"{"data":{"name":"From curl"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // Method tunnelling: POST ?verb=PATCH.
    let r = api
        .call(
            Method::POST,
            &format!("/v2/accounts/{}?verb=patch", t.id),
            Some(&t.token),
            Some(json!({"data": {"language": "fr-fr"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.data()["language"], "fr-fr");
    assert_eq!(r.data()["name"], t.name.as_str());
    // Malformed and missing account ids in the path.
    let a = api.get("/v2/accounts/short", &t.token).await;
    assert_error(&a, StatusCode::NOT_FOUND, "bad_identifier");
    let a = api
        .get(&format!("/v2/accounts/{}", new_id()), &t.token)
        .await;
    assert_error(&a, StatusCode::NOT_FOUND, "bad_identifier");
    // The token is echoed in success envelopes.
    let a = api.get(&format!("/v2/accounts/{}", t.id), &t.token).await;
    assert_eq!(a.body["auth_token"], t.token.as_str());
    assert!(a.body["revision"].is_string());
    api.stop().await;
}

async fn login_tokens_and_revocation(store: SharedStore, dir: Dir) {
    let api = start(store, dir).await;
    let t = api.root_tenant().await;
    // md5 and sha1, by name and by realm; a bogus X-Auth-Token is ignored.
    let (md5, sha1) = faxd::auth::login_digests("admin", &t.password);
    for (creds, locator) in [
        (md5.clone(), json!({"account_name": t.name.to_uppercase()})),
        (
            sha1.clone(),
            json!({"account_realm": format!("{}.TEST", t.name)}),
        ),
    ] {
        let mut data = locator;
        data["credentials"] = json!(creds);
        let a = api
            .call(
                Method::PUT,
                "/v2/user_auth",
                Some("garbage.token"),
                Some(json!({"data": data})),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        assert_eq!(a.data()["account_id"], t.id.as_str());
        assert_eq!(a.data()["owner_id"], t.user_id.as_str());
        assert!(
            a.data()["apps"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["name"] == "fax")
        );
        assert!(a.body["auth_token"].as_str().unwrap().len() > 40);
    }
    // Wrong password, unknown account, missing credentials.
    let a = api.login(&t.name, "admin", "wrong").await;
    assert_error(&a, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let a = api.login(&unique("nobody"), "admin", &t.password).await;
    assert_error(&a, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let a = api
        .call(
            Method::PUT,
            "/v2/user_auth",
            None,
            Some(json!({"data": {"account_name": t.name}})),
        )
        .await;
    assert_error(&a, StatusCode::BAD_REQUEST, "validation error");
    assert!(a.data()["credentials"]["required"].is_object());
    // token_auth and tokeninfo describe the token; ?auth_token= works too.
    let a = api.get("/v2/token_auth", &t.token).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.data()["account_id"], t.id.as_str());
    let a = api
        .call(
            Method::GET,
            &format!("/v2/accounts/{}?auth_token={}", t.id, t.token),
            None,
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let a = api
        .call(
            Method::POST,
            "/v2/auth/tokeninfo",
            Some("undefined"),
            Some(json!({"data": {"token": t.token}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.data()["owner_id"], t.user_id.as_str());
    let a = api
        .call(
            Method::POST,
            "/v2/auth/tokeninfo",
            None,
            Some(json!({"data": {"token": "x.y"}})),
        )
        .await;
    assert_error(&a, StatusCode::UNAUTHORIZED, "invalid_credentials");
    // A tampered token is refused.
    let mut forged = t.token.clone();
    forged.insert(5, 'A');
    let a = api.get(&format!("/v2/accounts/{}", t.id), &forged).await;
    assert_error(&a, StatusCode::UNAUTHORIZED, "invalid_credentials");
    // api_auth with the account's api_key.
    let key = api
        .get(&format!("/v2/accounts/{}/api_key", t.id), &t.token)
        .await;
    let key = key.data()["api_key"].as_str().unwrap().to_string();
    assert_eq!(key.len(), 64);
    let a = api
        .call(
            Method::PUT,
            "/v2/api_auth",
            Some("undefined"),
            Some(json!({"data": {"api_key": key}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let api_token = a.body["auth_token"].as_str().unwrap().to_string();
    assert!(a.data().get("owner_id").is_none());
    let a = api
        .call(
            Method::PUT,
            "/v2/api_auth",
            None,
            Some(json!({"data": {"api_key": "0".repeat(64)}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    // An api-key token may not regenerate the key (admins only).
    let a = api
        .put(
            &format!("/v2/accounts/{}/api_key", t.id),
            &api_token,
            json!({}),
        )
        .await;
    assert_error(&a, StatusCode::FORBIDDEN, "forbidden");
    // DELETE /v2/token_auth really revokes.
    let a = api.delete("/v2/token_auth", &api_token).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body.get("data").is_none());
    let a = api.get(&format!("/v2/accounts/{}", t.id), &api_token).await;
    assert_error(&a, StatusCode::UNAUTHORIZED, "invalid_credentials");
    // Regenerating the key (an admin may) voids the tokens issued with the old one.
    let a = api
        .call(
            Method::PUT,
            "/v2/api_auth",
            None,
            Some(json!({"data": {"api_key": key}})),
        )
        .await;
    let api_token2 = a.body["auth_token"].as_str().unwrap().to_string();
    assert_eq!(
        api.get("/v2/token_auth", &api_token2).await.status,
        StatusCode::OK
    );
    let a = api
        .put(
            &format!("/v2/accounts/{}/api_key", t.id),
            &t.token,
            json!({}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_ne!(a.data()["api_key"], key.as_str());
    let a = api.get("/v2/token_auth", &api_token2).await;
    assert_error(&a, StatusCode::UNAUTHORIZED, "invalid_credentials");
    // The other token still works.
    assert_eq!(
        api.get(&format!("/v2/accounts/{}", t.id), &t.token)
            .await
            .status,
        StatusCode::OK
    );
    api.stop().await;
}

async fn accounts_tree_and_isolation(store: SharedStore, dir: Dir) {
    let api = start(store, dir).await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    let b = api.child_tenant(&root).await;
    // A grandchild, created by a through PUT /v2/accounts (child of the caller).
    let gname = unique("grand");
    let g = api
        .put(
            "/v2/accounts",
            &a.token,
            json!({"name": gname, "realm": format!("{gname}.example.com")}),
        )
        .await;
    assert_eq!(g.status, StatusCode::CREATED, "{}", g.body);
    let gid = g.data()["id"].as_str().unwrap().to_string();
    assert_eq!(g.header("location").unwrap(), format!("/v2/accounts/{gid}"));
    assert!(g.data().get("pvt_tree").is_none() && g.data().get("pvt_api_key").is_none());
    assert_eq!(g.data()["enabled"], true);
    assert!(g.data()["created"].as_i64().unwrap() > 63_000_000_000);
    // Ancestors reach down; nobody reaches up or sideways.
    assert_eq!(
        api.get(&format!("/v2/accounts/{gid}"), &root.token)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        api.get(&format!("/v2/accounts/{gid}"), &a.token)
            .await
            .status,
        StatusCode::OK
    );
    for (path, tok) in [
        (format!("/v2/accounts/{gid}"), &b.token),
        (format!("/v2/accounts/{}", root.id), &a.token),
        (format!("/v2/accounts/{}", b.id), &a.token),
        (format!("/v2/accounts/{}/children", root.id), &a.token),
        (format!("/v2/accounts/{}/api_key", b.id), &a.token),
        (format!("/v2/accounts/{}/users", b.id), &a.token),
    ] {
        let r = api.get(&path, tok).await;
        assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
        assert!(r.data().get("name").is_none());
    }
    let r = api
        .put(
            &format!("/v2/accounts/{}", b.id),
            &a.token,
            json!({"name": unique("x")}),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    // Name and realm are unique system-wide.
    let r = api
        .put(
            "/v2/accounts",
            &b.token,
            json!({"name": gname.to_uppercase()}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "validation error");
    assert!(r.data()["name"]["unique"].is_object());
    let r = api
        .put(
            "/v2/accounts",
            &b.token,
            json!({"name": unique("n"), "realm": format!("{gname}.EXAMPLE.com")}),
        )
        .await;
    assert!(r.data()["realm"]["unique"].is_object(), "{}", r.body);
    // children / descendants.
    let r = api
        .get(&format!("/v2/accounts/{}/children", root.id), &root.token)
        .await;
    let ids: Vec<&str> = r
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&a.id.as_str())
            && ids.contains(&b.id.as_str())
            && !ids.contains(&gid.as_str())
    );
    let r = api
        .get(
            &format!("/v2/accounts/{}/descendants?page_size=2", root.id),
            &root.token,
        )
        .await;
    assert_eq!(r.data().as_array().unwrap().len(), 2);
    assert_eq!(r.body["page_size"], 2);
    let next = r.body["next_start_key"].as_str().unwrap().to_string();
    let r2 = api
        .get(
            &format!(
                "/v2/accounts/{}/descendants?page_size=2&start_key={next}",
                root.id
            ),
            &root.token,
        )
        .await;
    assert_eq!(r2.data().as_array().unwrap().len(), 1);
    assert!(r2.body.get("next_start_key").is_none());
    let r = api
        .get(
            &format!("/v2/accounts/{}/descendants?paginate=false", root.id),
            &root.token,
        )
        .await;
    assert_eq!(r.data().as_array().unwrap().len(), 3);
    assert!(r.body.get("page_size").is_none());
    // POST replaces, PATCH merges (null removes), both validate.
    let r = api
        .patch(
            &format!("/v2/accounts/{gid}"),
            &a.token,
            json!({"timezone": "Europe/Paris", "ui_restrictions": {"x": 1}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.data()["name"], gname.as_str());
    assert_eq!(r.data()["ui_restrictions"]["x"], 1);
    let r = api
        .patch(
            &format!("/v2/accounts/{gid}"),
            &a.token,
            json!({"ui_restrictions": null}),
        )
        .await;
    assert!(r.data().get("ui_restrictions").is_none());
    let r = api
        .post(
            &format!("/v2/accounts/{gid}"),
            &a.token,
            json!({"realm": "x"}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "validation error");
    assert!(r.data()["name"]["required"].is_object());
    assert!(r.data()["realm"]["minLength"].is_object());
    // Only an ancestor may disable an account.
    let r = api
        .patch(
            &format!("/v2/accounts/{gid}"),
            &a.token,
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(r.data()["enabled"], false);
    // Delete: not with descendants, then the leaf.
    let r = api
        .delete(&format!("/v2/accounts/{}", a.id), &root.token)
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.data()["message"], "account_has_descendants");
    let r = api.delete(&format!("/v2/accounts/{gid}"), &a.token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        api.get(&format!("/v2/accounts/{gid}"), &a.token)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // The root (no parent) cannot be deleted.
    let r = api
        .delete(&format!("/v2/accounts/{}", root.id), &root.token)
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    api.stop().await;
}

async fn users_crud_and_credentials(store: SharedStore, dir: Dir) {
    let api = start(store, dir).await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    let b = api.child_tenant(&root).await;
    let base = format!("/v2/accounts/{}/users", a.id);
    let r = api
        .put(
            &base,
            &a.token,
            json!({"first_name": "Jo", "last_name": "Doe", "username": "JDoe@Example.com",
            "password": "s3cret!", "email": "jdoe@example.com", "timezone": "Europe/Berlin",
            "fax_settings": {"fax_header": "ACME"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let uid = r.data()["id"].as_str().unwrap().to_string();
    assert_eq!(r.data()["username"], "jdoe@example.com");
    assert_eq!(r.data()["priv_level"], "user");
    assert_eq!(r.data()["enabled"], true);
    assert!(r.data().get("password").is_none());
    assert!(!r.bytes.windows(7).any(|w| w == b"s3cret!"));
    // The stored document has no password either.
    let stored = api
        .store
        .get(&Db::Account(AccountId::parse(&a.id).unwrap()), &uid)
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.to_string().contains("s3cret!"));
    // Login as the new user (username case does not matter).
    let l = api.login(&a.name, "JDOE@example.com", "s3cret!").await;
    assert_eq!(l.status, StatusCode::CREATED, "{}", l.body);
    // Unique username, password required with a new username.
    let r = api.put(&base, &a.token, json!({"first_name": "X", "last_name": "Y", "username": "jdoe@example.com", "password": "p"})).await;
    assert_eq!(
        r.data()["username"]["unique"]["message"],
        "Username must be unique within account"
    );
    let r = api
        .put(
            &base,
            &a.token,
            json!({"first_name": "X", "last_name": "Y", "username": "other"}),
        )
        .await;
    assert!(r.data()["password"]["required"].is_object(), "{}", r.body);
    // The same username in another account is fine.
    let r = api.put(&format!("/v2/accounts/{}/users", b.id), &b.token, json!({"first_name": "X", "last_name": "Y", "username": "jdoe@example.com", "password": "p"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    // List, get, patch (password kept), post.
    let r = api.get(&base, &a.token).await;
    assert_eq!(r.data().as_array().unwrap().len(), 2);
    let r = api
        .patch(
            &format!("{base}/{uid}"),
            &a.token,
            json!({"email": "new@example.com"}),
        )
        .await;
    assert_eq!(r.data()["email"], "new@example.com");
    assert_eq!(
        api.login(&a.name, "jdoe@example.com", "s3cret!")
            .await
            .status,
        StatusCode::CREATED
    );
    // Changing the password: old one stops working.
    let r = api
        .patch(
            &format!("{base}/{uid}"),
            &a.token,
            json!({"password": "n3w"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        api.login(&a.name, "jdoe@example.com", "s3cret!")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.login(&a.name, "jdoe@example.com", "n3w").await.status,
        StatusCode::CREATED
    );
    // Disabled users cannot log in.
    api.patch(
        &format!("{base}/{uid}"),
        &a.token,
        json!({"enabled": false}),
    )
    .await;
    assert_eq!(
        api.login(&a.name, "jdoe@example.com", "n3w").await.status,
        StatusCode::UNAUTHORIZED
    );
    // Guessing a user id of account a from account b: 404 under b, 403 under a.
    let r = api
        .get(&format!("/v2/accounts/{}/users/{uid}", b.id), &b.token)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "bad_identifier");
    let r = api.get(&format!("{base}/{uid}"), &b.token).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = api.delete(&format!("{base}/{uid}"), &b.token).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    // Soft delete.
    let r = api.delete(&format!("{base}/{uid}"), &a.token).await;
    assert_eq!(r.data()["_read_only"]["deleted"], true);
    assert_eq!(
        api.get(&format!("{base}/{uid}"), &a.token).await.status,
        StatusCode::NOT_FOUND
    );
    api.stop().await;
}

async fn faxboxes_and_addresses(store: SharedStore, dir: Dir) {
    let api = start(store, dir).await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    api.allow_any_caller_id(&root, &a).await;
    let b = api.child_tenant(&root).await;
    let base = format!("/v2/accounts/{}/faxboxes", a.id);
    let custom = format!("{}.fax.example.com", unique("c"));
    let r = api
        .put(&base, &a.token, json!({"name": "Sales", "caller_id": "+14155550100", "custom_smtp_email_address": custom.to_uppercase(),
            "owner_id": a.user_id, "notifications": {"outbound": {"email": {"send_to": ["ops@example.com"]}}}}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let fb = r.data()["id"].as_str().unwrap().to_string();
    let smtp = r.data()["smtp_email_address"].as_str().unwrap().to_string();
    let (hexpart, domain) = smtp.split_once('.').unwrap();
    assert_eq!(hexpart.len(), 8);
    assert_eq!(domain, "fax.kazoo.io");
    assert_eq!(r.data()["custom_smtp_email_address"], custom.as_str());
    assert_eq!(r.data()["retries"], 3);
    // Both addresses resolve through the faxes-database copy.
    for addr in [&smtp, &custom] {
        let hit = api
            .store
            .faxbox_by_email(addr)
            .await
            .unwrap()
            .expect("resolves");
        assert_eq!(hit.faxbox_id, fb);
    }
    // Custom address unique system-wide; owner must be a user of the account.
    let r = api
        .put(
            &format!("/v2/accounts/{}/faxboxes", b.id),
            &b.token,
            json!({"name": "X", "custom_smtp_email_address": custom}),
        )
        .await;
    assert_eq!(
        r.data()["custom_smtp_email_address"]["unique"]["message"],
        "email address must be unique"
    );
    let r = api
        .put(
            &format!("/v2/accounts/{}/faxboxes", b.id),
            &b.token,
            json!({"name": "X", "owner_id": a.user_id}),
        )
        .await;
    assert!(r.data()["owner_id"]["not_found"].is_object(), "{}", r.body);
    let r = api.put(&base, &a.token, json!({"retries": 9})).await;
    assert!(r.data()["name"]["required"].is_object() && r.data()["retries"]["maximum"].is_object());
    // Update keeps its own address; list; isolation; delete removes both copies.
    let r = api
        .patch(
            &format!("{base}/{fb}"),
            &a.token,
            json!({"name": "Sales 2"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.data()["smtp_email_address"], smtp.as_str());
    let r = api.get(&format!("{base}?paginate=false"), &a.token).await;
    assert_eq!(r.data()[0]["name"], "Sales 2");
    assert_eq!(
        api.get(&format!("/v2/accounts/{}/faxboxes/{fb}", b.id), &b.token)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get(&format!("{base}/{fb}"), &b.token).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.get(&format!("/v2/accounts/{}/faxboxes", b.id), &b.token)
            .await
            .data()
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let r = api.delete(&format!("{base}/{fb}"), &a.token).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(api.store.faxbox_by_email(&smtp).await.unwrap().is_none());
    assert!(api.store.get(&Db::Faxes, &fb).await.unwrap().is_none());
    api.stop().await;
}

async fn callflows_numbers_unique_system_wide(store: SharedStore, dir: Dir) {
    let api = start(store, dir).await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    let b = api.child_tenant(&root).await;
    let fb = api
        .put(
            &format!("/v2/accounts/{}/faxboxes", a.id),
            &a.token,
            json!({"name": "In"}),
        )
        .await;
    let fb = fb.data()["id"].as_str().unwrap().to_string();
    let fbb = api
        .put(
            &format!("/v2/accounts/{}/faxboxes", b.id),
            &b.token,
            json!({"name": "In"}),
        )
        .await;
    let fbb = fbb.data()["id"].as_str().unwrap().to_string();
    // A unique number per run (the CouchDB server is shared between tests).
    let digits: String = new_id()
        .chars()
        .filter(char::is_ascii_digit)
        .chain("0000000".chars())
        .take(7)
        .collect();
    let local = format!("415{digits}");
    let e164 = format!("+1{local}");
    let base = format!("/v2/accounts/{}/callflows", a.id);
    let r = api
        .put(
            &base,
            &a.token,
            json!({"name": "Fax line", "numbers": [local],
            "flow": {"module": "faxbox", "data": {"id": fb, "media": {"fax_option": true}}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let cf = r.data()["id"].as_str().unwrap().to_string();
    assert_eq!(r.data()["numbers"], json!([e164]));
    // The same number in another account: 400 numbers.unique, without the other's details.
    let r = api
        .put(
            &format!("/v2/accounts/{}/callflows", b.id),
            &b.token,
            json!({"numbers": [e164], "flow": {"module": "faxbox", "data": {"id": fbb}}}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "validation error");
    assert_eq!(r.data()["numbers"]["unique"]["cause"], e164.as_str());
    assert!(!r.body.to_string().contains(&cf));
    // Same account: Kazoo's message.
    let r = api
        .put(
            &base,
            &a.token,
            json!({"numbers": [e164], "flow": {"module": "faxbox", "data": {"id": fb}}}),
        )
        .await;
    assert_eq!(
        r.data()["numbers"]["unique"]["message"],
        format!("{e164} exists in callflow {cf} (Fax line)")
    );
    // Fax modules must point into the account.
    let r = api
        .put(
            &format!("/v2/accounts/{}/callflows", b.id),
            &b.token,
            json!({"numbers": ["+442079460123"], "flow": {"module": "faxbox", "data": {"id": fb}}}),
        )
        .await;
    assert!(
        r.data()["flow.data.id"]["not_found"].is_object(),
        "{}",
        r.body
    );
    let r = api.put(&format!("/v2/accounts/{}/callflows", b.id), &b.token, json!({"numbers": ["100"], "flow": {"module": "receive_fax", "data": {"owner_id": a.user_id}}})).await;
    assert!(
        r.data()["flow.data.owner_id"]["not_found"].is_object(),
        "{}",
        r.body
    );
    let r = api
        .put(
            &base,
            &a.token,
            json!({"flow": {"module": "receive_fax", "data": {}}}),
        )
        .await;
    assert!(r.data()["numbers"]["required"].is_object(), "{}", r.body);
    // Login by phone number finds the account.
    let (md5, _) = faxd::auth::login_digests("boss", &a.password);
    let l = api
        .call(
            Method::PUT,
            "/v2/user_auth",
            None,
            Some(json!({"data": {"credentials": md5, "phone_number": e164}})),
        )
        .await;
    assert_eq!(l.status, StatusCode::CREATED, "{}", l.body);
    // Releasing the number (update) lets b take it.
    let r = api
        .patch(
            &format!("{base}/{cf}"),
            &a.token,
            json!({"numbers": ["+14155550000"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = api
        .put(
            &format!("/v2/accounts/{}/callflows", b.id),
            &b.token,
            json!({"numbers": [e164], "flow": {"module": "faxbox", "data": {"id": fbb}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let list = api.get(&base, &a.token).await;
    assert_eq!(list.data()[0]["modules"], json!(["faxbox"]));
    assert_eq!(
        api.get(&format!("{base}/{cf}"), &b.token).await.status,
        StatusCode::FORBIDDEN
    );
    let r = api.delete(&format!("{base}/{cf}"), &a.token).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        api.get(&format!("{base}/{cf}"), &a.token).await.status,
        StatusCode::NOT_FOUND
    );
    api.stop().await;
}

fn job(to: &str) -> Value {
    json!({"from_number": "+14155550100", "to_number": to, "from_name": "ACME"})
}

async fn faxes_submit_every_way(store: SharedStore, dir: Dir) {
    let api = start(store.clone(), dir).await;
    let docs = document_server().await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    api.allow_any_caller_id(&root, &a).await;
    let faxes = format!("/v2/accounts/{}/faxes", a.id);
    // Multipart: stored as original_file.pdf with the job (answered `attaching_files`, as
    // Kazoo answers), then converted in the background: pending.
    let r = api
        .send_multipart(&faxes, &a.token, job("4155550199"), PDF)
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["message"], "processing fax attachments");
    assert_eq!(r.data()["to_number"], "+14155550199");
    let id = r.data()["id"].as_str().unwrap().to_string();
    assert!(
        ["attaching_files", "pending"].contains(&r.data()["status"].as_str().unwrap()),
        "{}",
        r.body
    );
    assert_eq!(intake_done(&api, &a, &id).await["status"], "pending");
    let stored = store.get(&Db::Faxes, &id).await.unwrap().unwrap();
    assert_eq!(stored["pvt_job_status"], "pending");
    assert_eq!(stored["pvt_pages"], 1, "converted: {stored}");
    assert_eq!(
        stored["_attachments"]["original_file.pdf"]["content_type"],
        "application/pdf"
    );
    let att = store
        .get_attachment(&Db::Faxes, &id, "original_file.pdf")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(faxd::store::read_all(att.body).await.unwrap(), PDF);
    // Raw PDF body with the fields in the query string; /outgoing alias.
    let r = api
        .http
        .put(format!(
            "{}{faxes}/outgoing?to_number=%2B14155550198&from_number=%2B14155550100",
            api.base
        ))
        .header("X-Auth-Token", &a.token)
        .header("Content-Type", "application/pdf")
        .body(PDF.to_vec())
        .send()
        .await
        .unwrap();
    let r = Api::answer(r).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let raw = r.data()["id"].as_str().unwrap().to_string();
    assert_eq!(intake_done(&api, &a, &raw).await["status"], "pending");
    // By URL (through a redirect) from the loopback document server (allowed in this config):
    // recorded first, fetched after the answer.
    let mut j = job("+14155550197");
    j["document"] = json!({"url": format!("{docs}/redirect")});
    let r = api.put(&faxes, &a.token, j).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.data()["status"], "attaching_files", "{}", r.body);
    let uid = r.data()["id"].as_str().unwrap().to_string();
    assert_eq!(intake_done(&api, &a, &uid).await["status"], "pending");
    let stored = store.get(&Db::Faxes, &uid).await.unwrap().unwrap();
    assert!(stored["_attachments"]["original_file.pdf"].is_object());
    // URL failures end the job failed, with the reason, in the outbox (never runnable).
    for (path, why) in [
        ("/missing", "HTTP 404"),
        ("/loop", "too many redirects"),
        ("/big", "larger than"),
    ] {
        let mut j = job("+14155550196");
        j["document"] = json!({"url": format!("{docs}{path}")});
        let r = api.put(&faxes, &a.token, j).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        assert_eq!(r.data()["status"], "attaching_files", "{}", r.body);
        let done = intake_done(&api, &a, r.data()["id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "failed", "{done}");
        assert!(
            done["tx_result"]["result_text"]
                .as_str()
                .unwrap()
                .contains(why),
            "{done}"
        );
        assert!(
            done["id"].as_str().unwrap().contains('-'),
            "moved to the outbox"
        );
    }
    // SSRF: a server with the default policy refuses loopback URLs.
    let strict = Api::start(
        store.clone(),
        None,
        faxd::config::ApiSection {
            url_allow_private: false,
            ..test_options()
        },
    )
    .await;
    let mut j = job("+14155550195");
    j["document"] = json!({"url": format!("{docs}/doc.pdf")});
    let r = strict.put(&faxes, &a.token, j).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let done = intake_done(&strict, &a, r.data()["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["tx_result"]["result_text"]
            .as_str()
            .unwrap()
            .contains("internal address"),
        "{done}"
    );
    strict.stop().await;
    // Only http/https URLs (schema).
    let mut j = job("+14155550195");
    j["document"] = json!({"url": "file:///etc/passwd"});
    let r = api.put(&faxes, &a.token, j).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "validation error");
    assert!(r.data()["document.url"]["pattern"].is_object());
    // No document at all; bad number; missing fields.
    let r = api.put(&faxes, &a.token, job("+14155550195")).await;
    assert_eq!(
        r.data()["document.url"]["required"]["message"],
        "add document url or upload a document"
    );
    let mut j = job("12");
    j["document"] = json!({"url": format!("{docs}/doc.pdf")});
    let r = api.put(&faxes, &a.token, j).await;
    assert!(r.data()["to_number"]["invalid"].is_object(), "{}", r.body);
    let r = api
        .put(
            &faxes,
            &a.token,
            json!({"document": {"url": "http://x/y.pdf"}}),
        )
        .await;
    assert!(
        r.data()["to_number"]["required"].is_object()
            && r.data()["from_number"]["required"].is_object()
    );
    // 413 past the upload limit, 415 for unknown types (raw or as the multipart document).
    let big = vec![b'x'; 1_200_000];
    let r = api
        .send_multipart(&faxes, &a.token, job("+14155550195"), &big)
        .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert!(
        r.data()["file"]["maxSize"]["message"]
            .as_str()
            .unwrap()
            .contains("1000000")
    );
    let r = api
        .http
        .put(format!("{}{faxes}", api.base))
        .header("X-Auth-Token", &a.token)
        .header("Content-Type", "application/x-msdownload")
        .body("MZ")
        .send()
        .await
        .unwrap();
    assert_error(
        &Api::answer(r).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let r = api
        .send_multipart(
            &faxes,
            &a.token,
            job("+14155550195"),
            b"MZ\x90\x00 not a document",
        )
        .await;
    assert_error(
        &r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    // Through a faxbox: its defaults fill the job.
    let fb = api
        .put(&format!("/v2/accounts/{}/faxboxes", a.id), &a.token, json!({"name": "Box", "caller_id": "+14155550111", "caller_name": "Box Co", "fax_header": "BOX HEADER", "retries": 2}))
        .await;
    let fb = fb.data()["id"].as_str().unwrap().to_string();
    let r = api
        .send_multipart(
            &format!("/v2/accounts/{}/faxboxes/{fb}/faxes", a.id),
            &a.token,
            json!({"to_number": "+14155550190"}),
            PDF,
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.data()["from_number"], "+14155550111");
    assert_eq!(r.data()["fax_identity_name"], "BOX HEADER");
    assert_eq!(r.data()["retries"], 2);
    assert_eq!(r.data()["faxbox_id"], fb.as_str());
    api.stop().await;
}

async fn faxes_queue_outbox_and_downloads(store: SharedStore, dir: Dir) {
    let api = start(store.clone(), dir).await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    api.allow_any_caller_id(&root, &a).await;
    let acc = format!("/v2/accounts/{}", a.id);
    let fb = api
        .put(&format!("{acc}/faxboxes"), &a.token, json!({"name": "Box"}))
        .await;
    let fb = fb.data()["id"].as_str().unwrap().to_string();
    let u = api
        .put(
            &format!("{acc}/users"),
            &a.token,
            json!({"first_name": "U", "last_name": "Ser"}),
        )
        .await;
    let uid = u.data()["id"].as_str().unwrap().to_string();
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = api
            .send_multipart(
                &format!("{acc}/faxes"),
                &a.token,
                job(&format!("+1415555012{i}")),
                PDF,
            )
            .await;
        ids.push(r.data()["id"].as_str().unwrap().to_string());
    }
    let r = api
        .send_multipart(
            &format!("{acc}/faxboxes/{fb}/faxes"),
            &a.token,
            job("+14155550130"),
            PDF,
        )
        .await;
    let box_job = r.data()["id"].as_str().unwrap().to_string();
    let r = api
        .send_multipart(
            &format!("{acc}/users/{uid}/faxes"),
            &a.token,
            job("+14155550131"),
            PDF,
        )
        .await;
    let user_job = r.data()["id"].as_str().unwrap().to_string();
    assert_eq!(r.data()["owner_id"], uid.as_str());
    for id in ids.iter().chain([&box_job, &user_job]) {
        assert_eq!(intake_done(&api, &a, id).await["status"], "pending");
    }
    // outgoing: account-wide, paged; faxbox-nested sees only the box's job (Kazoo's was empty).
    let r = api
        .get(&format!("{acc}/faxes/outgoing?page_size=3"), &a.token)
        .await;
    assert_eq!(r.data().as_array().unwrap().len(), 3);
    assert!(r.body["next_start_key"].is_string());
    let row = &r.data()[0];
    for k in ["id", "status", "to", "from", "attempts", "created"] {
        assert!(row.get(k).is_some(), "{k} in {row}");
    }
    let r = api
        .get(&format!("{acc}/faxes/outgoing?paginate=false"), &a.token)
        .await;
    assert_eq!(r.data().as_array().unwrap().len(), 5);
    let r = api
        .get(&format!("{acc}/faxboxes/{fb}/faxes/outgoing"), &a.token)
        .await;
    let got: Vec<&str> = r
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![box_job.as_str()]);
    let r = api
        .get(&format!("{acc}/users/{uid}/faxes/outgoing"), &a.token)
        .await;
    let got: Vec<&str> = r
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![user_job.as_str()]);
    // Pages of the user's jobs, one at a time, while other owners' jobs are interleaved.
    let r = api
        .send_multipart(
            &format!("{acc}/users/{uid}/faxes"),
            &a.token,
            job("+14155550132"),
            PDF,
        )
        .await;
    let user_job2 = r.data()["id"].as_str().unwrap().to_string();
    for i in 0..2 {
        let to = format!("+1415555015{i}");
        api.send_multipart(&format!("{acc}/faxes"), &a.token, job(&to), PDF)
            .await;
    }
    let mut seen = Vec::new();
    let mut key: Option<String> = None;
    for _ in 0..10 {
        let q = key
            .as_ref()
            .map(|k| format!("&start_key={k}"))
            .unwrap_or_default();
        let r = api
            .get(
                &format!("{acc}/users/{uid}/faxes/outgoing?page_size=1{q}"),
                &a.token,
            )
            .await;
        let rows = r.data().as_array().unwrap();
        assert!(rows.len() <= 1, "{}", r.body);
        seen.extend(rows.iter().map(|x| x["id"].as_str().unwrap().to_string()));
        key = r.body["next_start_key"].as_str().map(str::to_string);
        if key.is_none() {
            break;
        }
        assert_eq!(
            rows.len(),
            1,
            "a page with more to come is full: {}",
            r.body
        );
    }
    assert!(key.is_none(), "paging ends");
    seen.sort();
    let mut want = vec![user_job.clone(), user_job2];
    want.sort();
    assert_eq!(seen, want);
    // Detail, and scope: the box route does not show other jobs.
    let r = api
        .get(&format!("{acc}/faxes/outgoing/{}", ids[0]), &a.token)
        .await;
    assert_eq!(r.data()["status"], "pending");
    assert_eq!(
        api.get(
            &format!("{acc}/faxboxes/{fb}/faxes/outgoing/{}", ids[0]),
            &a.token
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    // Cancel: cancelled, kept in the outbox; a second cancel is 404 (no longer queued).
    let mut outbox_ids = Vec::new();
    for id in &ids {
        let r = api
            .delete(&format!("{acc}/faxes/outgoing/{id}"), &a.token)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.data()["status"], "cancelled");
        assert_eq!(r.data()["folder"], "outbox");
        outbox_ids.push(r.data()["id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        api.delete(&format!("{acc}/faxes/outgoing/{}", ids[0]), &a.token)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // A job being transmitted cannot be cancelled.
    let mut busy = store.get(&Db::Faxes, &box_job).await.unwrap().unwrap();
    busy["pvt_job_status"] = json!("processing");
    store.save(&Db::Faxes, busy).await.unwrap();
    let r = api
        .delete(&format!("{acc}/faxes/outgoing/{box_job}"), &a.token)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    // Outbox listing (paged, gregorian created), detail with _read_only.
    let r = api
        .get(&format!("{acc}/faxes/outbox?page_size=2"), &a.token)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.data().as_array().unwrap().len(), 2);
    let next = r.body["next_start_key"].as_str().unwrap().to_string();
    assert!(r.data()[0]["created"].as_i64().unwrap() > 63_000_000_000);
    assert!(r.data()[0]["tx_result"].is_object());
    let r2 = api
        .get(
            &format!("{acc}/faxes/outbox?page_size=2&start_key={next}"),
            &a.token,
        )
        .await;
    assert_eq!(r2.data().as_array().unwrap().len(), 1);
    let now = faxd::time::now_gregorian();
    let r = api
        .get(
            &format!(
                "{acc}/faxes/outbox?created_from={}&created_to={now}",
                now - 3_000_000
            ),
            &a.token,
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "validation error");
    assert!(r.data()["created_from"]["date_range"].is_object());
    let r = api
        .get(
            &format!(
                "{acc}/faxes/outbox?created_from={}&created_to={}",
                now - 86_400,
                now + 10
            ),
            &a.token,
        )
        .await;
    assert_eq!(r.data().as_array().unwrap().len(), 3);
    let oid = &outbox_ids[0];
    let r = api
        .get(&format!("{acc}/faxes/outbox/{oid}"), &a.token)
        .await;
    assert_eq!(r.data()["_read_only"]["status"], "cancelled");
    assert_eq!(
        api.get(&format!("{acc}/faxes/inbox/{oid}"), &a.token)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Downloads: Accept and ?format, Kazoo's filenames, ?auth_token= in the query.
    let url = format!(
        "{}{acc}/faxes/outbox/{oid}/attachment?auth_token={}",
        api.base, a.token
    );
    let r = api
        .http
        .get(&url)
        .header("Accept", "application/pdf")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/pdf");
    let cd = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cd.starts_with("attachment; filename=fax_document_") && cd.ends_with(".pdf"),
        "{cd}"
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), PDF);
    let r = api
        .http
        .get(format!("{url}&format=original&disposition=inline"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("inline")
    );
    // The fax-ready TIFF made at intake.
    let r = api
        .http
        .get(&url)
        .header("Accept", "image/tiff")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/tiff");
    let tiff = r.bytes().await.unwrap();
    let pages = faxd::convert::tiff_f::decode_fax_tiff(&tiff).expect("a fax TIFF");
    assert_eq!((pages.len(), pages[0].width), (1, 1728));
    let r = Api::answer(
        api.http
            .get(format!("{url}&format=gif"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "validation error");
    let r = api
        .http
        .get(&url)
        .header("Accept", "*/*")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Resubmit: a new pending job with the document.
    let r = api
        .call(Method::PUT, &format!("{acc}/faxes/outbox/{oid}"), Some(&a.token),
              Some(json!({"action": "resubmit", "data": {"to_number": "+14155550177", "ui_metadata": {"ui": "monster-ui"}}})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.data()["status"], "pending");
    assert_eq!(r.data()["to_number"], "+14155550177");
    assert!(r.data().get("tx_result").is_none());
    let new = r.data()["id"].as_str().unwrap().to_string();
    assert_eq!(new.len(), 32);
    let stored = store.get(&Db::Faxes, &new).await.unwrap().unwrap();
    assert!(stored["_attachments"]["original_file.pdf"].is_object());
    let r = api
        .put(&format!("{acc}/faxes/outbox/{oid}"), &a.token, json!({}))
        .await;
    assert!(r.data()["action"]["required"].is_object());
    // Strip the attachments, then delete (soft).
    let r = api
        .delete(&format!("{acc}/faxes/outbox/{oid}/attachment"), &a.token)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = api.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = api
        .delete(&format!("{acc}/faxes/outbox/{oid}"), &a.token)
        .await;
    assert_eq!(r.data()["_read_only"]["deleted"], true);
    assert_eq!(
        api.get(&format!("{acc}/faxes/outbox/{oid}"), &a.token)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = api
        .get(&format!("{acc}/faxes/outbox?paginate=false"), &a.token)
        .await;
    assert_eq!(r.data().as_array().unwrap().len(), 2);
    api.stop().await;
}

async fn faxes_inbox_forward_and_smtplog(store: SharedStore, dir: Dir) {
    let api = start(store.clone(), dir).await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    api.allow_any_caller_id(&root, &a).await;
    let acc = format!("/v2/accounts/{}", a.id);
    let fb = api
        .put(&format!("{acc}/faxboxes"), &a.token, json!({"name": "Box"}))
        .await;
    let fb = fb.data()["id"].as_str().unwrap().to_string();
    let in1 = received_fax(&store, &a.id, Some(&fb), None).await;
    let in2 = received_fax(&store, &a.id, None, Some(&a.user_id)).await;
    let r = api
        .get(&format!("{acc}/faxes/inbox?paginate=false"), &a.token)
        .await;
    assert_eq!(r.data().as_array().unwrap().len(), 2);
    assert_eq!(r.data()[0]["rx_result"]["success"], true);
    // `incoming` lists the calls being received now: none here (stored faxes are the inbox).
    let r = api.get(&format!("{acc}/faxes/incoming"), &a.token).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.data().as_array().unwrap().len(), 0);
    let r = api
        .get(&format!("{acc}/faxboxes/{fb}/faxes/inbox"), &a.token)
        .await;
    assert_eq!(r.data().as_array().unwrap().len(), 1);
    assert_eq!(r.data()[0]["id"], in1.as_str());
    let r = api
        .get(&format!("{acc}/users/{}/faxes/inbox", a.user_id), &a.token)
        .await;
    assert_eq!(r.data()[0]["id"], in2.as_str());
    assert_eq!(
        api.get(
            &format!("{acc}/users/{}/faxes/inbox/{in1}", a.user_id),
            &a.token
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    // Inbox download: Accept decides between the received TIFF and a PDF, q-values included.
    let url = format!("{}{acc}/faxes/inbox/{in1}/attachment", api.base);
    let download = |accept: &'static str| {
        api.http
            .get(&url)
            .header("X-Auth-Token", &a.token)
            .header("Accept", accept)
            .send()
    };
    let r = download("application/pdf;q=0.1, image/tiff;q=0.9")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/tiff");
    // q=0 refuses a type even when it is named first.
    let r = download("application/pdf;q=0, image/*").await.unwrap();
    assert_eq!(r.headers()["content-type"], "image/tiff");
    let r = Api::answer(download("text/html, application/json").await.unwrap()).await;
    assert_error(&r, StatusCode::NOT_ACCEPTABLE, "not_acceptable");
    let r = download("image/tiff").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/tiff");
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .ends_with(".tiff")
    );
    // PDF of a received fax: its TIFF wrapped without re-encoding, then kept as pdf_file.pdf.
    for _ in 0..2 {
        let r = api
            .http
            .get(&url)
            .header("X-Auth-Token", &a.token)
            .header("Accept", "application/pdf")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "application/pdf");
        let body = r.bytes().await.unwrap();
        assert!(body.starts_with(b"%PDF-"), "not a PDF");
    }
    let month_db = Db::Modb(AccountId::parse(&a.id).unwrap(), YearMonth::now());
    let kept = store.get(&month_db, &in1).await.unwrap().unwrap();
    assert!(kept["_attachments"].get("pdf_file.pdf").is_some(), "{kept}");
    // Any type (a browser's Accept): the configured default format, PDF.
    let r = download("text/html,application/xhtml+xml,*/*;q=0.8")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/pdf");
    // Forward works (Kazoo's was broken): a pending job with the received image as its original.
    let r = api
        .call(
            Method::PUT,
            &format!("{acc}/faxes/inbox/{in1}"),
            Some(&a.token),
            Some(json!({"action": "forward", "data": {"to_number": "+14155550188"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.data()["status"], "pending");
    assert_eq!(r.data()["to_number"], "+14155550188");
    assert_eq!(r.data()["from_number"], "+14155550100");
    assert!(r.data().get("rx_result").is_none());
    let new = r.data()["id"].as_str().unwrap();
    let stored = store.get(&Db::Faxes, new).await.unwrap().unwrap();
    assert_eq!(
        stored["_attachments"]["original_file.tiff"]["content_type"],
        "image/tiff"
    );
    let r = api
        .call(
            Method::PUT,
            &format!("{acc}/faxes/inbox/{in1}"),
            Some(&a.token),
            Some(json!({"action": "resubmit", "data": {}})),
        )
        .await;
    assert!(r.data()["action"]["enum"].is_object(), "{}", r.body);
    let r = api
        .delete(&format!("{acc}/faxes/inbox/{in2}"), &a.token)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        api.get(&format!("{acc}/faxes/inbox/{in2}"), &a.token)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // SMTP logs.
    let account = AccountId::parse(&a.id).unwrap();
    let month = YearMonth::now();
    let db = Db::Modb(account.clone(), month);
    let log_id = modb_doc_id(month, &new_id());
    store
        .save(&db, json!({"_id": log_id, "pvt_type": "fax_smtp_log", "from": "bob@example.com", "to": "4155550100@x.fax.kazoo.io",
                         "errors": ["no fax number"], "account_id": a.id, "pvt_account_id": a.id, "pvt_created": faxd::time::now_gregorian()}))
        .await
        .unwrap();
    let r = api.get(&format!("{acc}/faxes/smtplog"), &a.token).await;
    assert_eq!(r.data().as_array().unwrap().len(), 1);
    assert_eq!(r.data()[0]["error"], "no fax number");
    let r = api
        .get(&format!("{acc}/faxes/smtplog/{log_id}"), &a.token)
        .await;
    assert_eq!(r.data()["errors"], json!(["no fax number"]));
    assert_eq!(
        api.get(&format!("{acc}/faxes/smtplog/{in1}"), &a.token)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    api.stop().await;
}

async fn faxes_tenant_isolation(store: SharedStore, dir: Dir) {
    let api = start(store.clone(), dir).await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    api.allow_any_caller_id(&root, &a).await;
    let b = api.child_tenant(&root).await;
    let acc_a = format!("/v2/accounts/{}", a.id);
    let acc_b = format!("/v2/accounts/{}", b.id);
    let r = api
        .send_multipart(
            &format!("{acc_a}/faxes"),
            &a.token,
            job("+14155550140"),
            PDF,
        )
        .await;
    let queued = r.data()["id"].as_str().unwrap().to_string();
    let r = api
        .send_multipart(
            &format!("{acc_a}/faxes"),
            &a.token,
            job("+14155550141"),
            PDF,
        )
        .await;
    let to_cancel = r.data()["id"].as_str().unwrap().to_string();
    let outbox = api
        .delete(&format!("{acc_a}/faxes/outgoing/{to_cancel}"), &a.token)
        .await;
    let outbox = outbox.data()["id"].as_str().unwrap().to_string();
    let inbox = received_fax(&store, &a.id, None, None).await;
    let fb_a = api
        .put(&format!("{acc_a}/faxboxes"), &a.token, json!({"name": "A"}))
        .await;
    let fb_a = fb_a.data()["id"].as_str().unwrap().to_string();
    // b's token on a's account: 403 everywhere, no data.
    for path in [
        format!("{acc_a}/faxes/outgoing"),
        format!("{acc_a}/faxes/outgoing/{queued}"),
        format!("{acc_a}/faxes/outbox"),
        format!("{acc_a}/faxes/outbox/{outbox}"),
        format!("{acc_a}/faxes/outbox/{outbox}/attachment"),
        format!("{acc_a}/faxes/inbox/{inbox}/attachment"),
        format!("{acc_a}/faxes/smtplog"),
        format!("{acc_a}/faxboxes/{fb_a}/faxes/outgoing"),
    ] {
        let r = api.get(&path, &b.token).await;
        assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
        assert!(!r.bytes.windows(4).any(|w| w == b"%PDF"));
    }
    let r = api
        .send_multipart(
            &format!("{acc_a}/faxes"),
            &b.token,
            job("+14155550142"),
            PDF,
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = api
        .delete(&format!("{acc_a}/faxes/outgoing/{queued}"), &b.token)
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    // a's ids guessed under b's own account: 404, and b's listings stay empty.
    for path in [
        format!("{acc_b}/faxes/outgoing/{queued}"),
        format!("{acc_b}/faxes/outbox/{outbox}"),
        format!("{acc_b}/faxes/outbox/{outbox}/attachment"),
        format!("{acc_b}/faxes/inbox/{inbox}"),
        format!("{acc_b}/faxes/inbox/{inbox}/attachment"),
        format!("{acc_b}/faxboxes/{fb_a}/faxes/outgoing"),
    ] {
        let r = api.get(&path, &b.token).await;
        assert_error(&r, StatusCode::NOT_FOUND, "bad_identifier");
    }
    let r = api
        .delete(&format!("{acc_b}/faxes/outgoing/{queued}"), &b.token)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "bad_identifier");
    let r = api
        .call(
            Method::PUT,
            &format!("{acc_b}/faxes/outbox/{outbox}"),
            Some(&b.token),
            Some(json!({"action": "resubmit", "data": {}})),
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "bad_identifier");
    for list in ["outgoing", "outbox", "inbox"] {
        let r = api.get(&format!("{acc_b}/faxes/{list}"), &b.token).await;
        assert_eq!(r.data(), &json!([]), "{list}");
    }
    // The parent sees into its child.
    let r = api
        .get(&format!("{acc_a}/faxes/outgoing/{queued}"), &root.token)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // The job is untouched (its intake ends `pending`).
    assert_eq!(intake_done(&api, &a, &queued).await["status"], "pending");
    let doc = store.get(&Db::Faxes, &queued).await.unwrap().unwrap();
    assert_eq!(doc["pvt_job_status"], "pending");
    api.stop().await;
}

async fn monster_ui_calls(store: SharedStore, dir: Dir) {
    let api = start(store, dir).await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    let acc = format!("/v2/accounts/{}", a.id);
    let r = api
        .get(&format!("{acc}/apps_store?_=1700000000000"), &a.token)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let row = &r.data()[0];
    assert_eq!(row["name"], "fax");
    assert_eq!(row["i18n"]["en-US"]["label"], "Fax");
    for k in [
        "id",
        "allowed_users",
        "users",
        "masqueradable",
        "tags",
        "api_url",
    ] {
        assert!(row.get(k).is_some(), "{k}");
    }
    let r = api.get(&format!("{acc}/storage"), &a.token).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = api.get("/v2/whitelabel/fax.example.com", "undefined").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // GET with a Content-Type header, DELETE with a JSON body, `_` ignored.
    let r = api
        .http
        .get(format!("{}{acc}/faxboxes?paginate=false&_=1", api.base))
        .header("X-Auth-Token", &a.token)
        .header("Content-Type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = api
        .get(&format!("{acc}/users/{}", a.user_id), &a.token)
        .await;
    assert_eq!(r.data()["priv_level"], "admin");
    let r = api.get(&acc, &a.token).await;
    assert!(r.data()["created"].is_i64());
    api.stop().await;
}

async fn openapi_matches_served_routes(store: SharedStore, dir: Dir) {
    let api = start(store, dir).await;
    let root = api.root_tenant().await;
    let r = api.call(Method::GET, "/v2/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["openapi"], "3.0.3");
    let paths = r.body["paths"].as_object().unwrap();
    let mut ops = 0;
    for (path, methods) in paths {
        for (method, op) in methods.as_object().unwrap() {
            ops += 1;
            assert!(op["summary"].is_string());
            // Fill the parameters with ids that exist or not; the router must reach a handler.
            let url = path
                .replace("{account_id}", &root.id)
                .replace("{fax_id}", "202601-00000000000000000000000000000000")
                .replace("{log_id}", "202601-00000000000000000000000000000000")
                .split('/')
                .map(|s| {
                    if s.starts_with('{') {
                        "00000000000000000000000000000000"
                    } else {
                        s
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let a = api
                .call(
                    m,
                    &format!("{url}?token=x"),
                    Some(&root.token),
                    Some(json!({"data": {}})),
                )
                .await;
            assert!(
                !a.status.is_server_error(),
                "{method} {path} -> {} {}",
                a.status,
                a.body
            );
            let routed = !(a.status == StatusCode::NOT_FOUND && a.body["message"] == "not_found");
            // Two 405s are answers of their handlers, as in Kazoo: listing all accounts and
            // deleting a root account.
            let by_design = (path == "/v2/accounts" && method == "get")
                || (path == "/v2/accounts/{account_id}" && method == "delete");
            let allowed = a.body["message"] != "invalid_method" || by_design;
            assert!(
                routed && allowed,
                "{method} {path} -> {} {}",
                a.status,
                a.body
            );
        }
    }
    assert_eq!(ops, faxd::api::endpoints().len());
    // Something not in the document is not served.
    let a = api
        .get(
            &format!("/v2/accounts/{}/conferences", root.id),
            &root.token,
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_configs_fax_for_superduper_admins() {
    // Embedded only: the CouchDB test server is shared with other suites that read system
    // config.
    let (store, dir) = api_common::embedded().await;
    let api = start(store, dir).await;
    let root = api.root_tenant().await;
    let child = api.child_tenant(&root).await;
    let r = api.get("/v2/system_configs/fax", &child.token).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = api.get("/v2/system_configs/fax", &root.token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.data()["default"]["max_outbound"], 10);
    assert_eq!(r.data()["id"], "fax");
    let r = api
        .post(
            "/v2/system_configs/fax",
            &root.token,
            json!({"default": {"max_outbound": "many"}}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "validation error");
    assert!(
        r.data()["default.max_outbound"]["type"].is_object(),
        "{}",
        r.body
    );
    let r = api
        .post(
            "/v2/system_configs/fax",
            &root.token,
            json!({"default": {"max_outbound": 20}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.data()["default"]["max_outbound"], 20);
    let r = api
        .patch(
            "/v2/system_configs/fax",
            &root.token,
            json!({"default": {"default_smtp_domain": "fax.example.net"}}),
        )
        .await;
    assert_eq!(r.data()["default"]["max_outbound"], 20);
    assert_eq!(
        r.data()["default"]["default_smtp_domain"],
        "fax.example.net"
    );
    // Live: a new faxbox gets the new domain.
    let fb = poll("new smtp domain", Duration::from_secs(5), || async {
        let r = api
            .put(
                &format!("/v2/accounts/{}/faxboxes", child.id),
                &child.token,
                json!({"name": unique("b")}),
            )
            .await;
        let a = r.data()["smtp_email_address"].as_str()?.to_string();
        a.ends_with(".fax.example.net").then_some(a)
    })
    .await;
    assert!(fb.ends_with("fax.example.net"));
    assert_eq!(
        api.get("/v2/system_configs/crossbar.auth_keys", &root.token)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = api.delete("/v2/system_configs/fax", &root.token).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api.get("/v2/system_configs/fax", &root.token).await;
    assert_eq!(r.data()["default"]["max_outbound"], 10);
    api.stop().await;
}

/// Asserts a 400 naming `field` and `rule` in Kazoo's validation envelope.
fn assert_refused(a: &api_common::Answer, field: &str, rule: &str) {
    assert_error(a, StatusCode::BAD_REQUEST, "validation error");
    assert!(
        a.data()[field][rule]["message"].is_string(),
        "expected data.{field}.{rule}: {}",
        a.body
    );
}

async fn numbers_and_caller_ids_checked_where_they_enter(store: SharedStore, dir: Dir) {
    let api = start(store.clone(), dir).await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    let b = api.child_tenant(&root).await;
    let mine = api.own_number(&a).await;
    let theirs = api.own_number(&b).await;
    let acc = format!("/v2/accounts/{}", a.id);
    let faxes = format!("{acc}/faxes");
    let send = |data: Value| api.send_multipart(&faxes, &a.token, data, PDF);
    let ok =
        |from: &str, to: &str| json!({"from_number": from, "to_number": to, "from_name": "ACME"});

    // The attacks: every one a 400 on its field, nothing queued.
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            ok("+1415\r\nX-Evil: y", "+14155550199"),
            "from_number",
            "control_characters",
        ),
        (ok("ACME CORP", "+14155550199"), "from_number", "invalid"),
        (ok("911", "+14155550199"), "from_number", "invalid"),
        (ok(&theirs, "+14155550199"), "from_number", "not_owned"),
        (ok(&mine, "911"), "to_number", "invalid"),
        (ok(&mine, "1-900-555-0100"), "to_number", "denied"),
        (ok(&mine, "+19765550100"), "to_number", "denied"),
        (ok(&mine, "+19115550100"), "to_number", "denied"),
        (
            ok(&mine, "+1415\r\n5550199"),
            "to_number",
            "control_characters",
        ),
        (ok("+19005550100", "+14155550199"), "from_number", "denied"),
    ];
    for (data, field, rule) in &cases {
        let r = send(data.clone()).await;
        assert_refused(&r, field, rule);
    }
    let r = send(ok("+1415\r\nX-Evil: y", "+14155550199")).await;
    assert_eq!(
        r.data()["from_number"]["control_characters"]["cause"],
        "+1415\\r\\nX-Evil: y"
    );
    let mut j = ok(&mine, "+14155550199");
    j["from_name"] = json!("ACME\r\nBcc: x@example.com");
    assert_refused(&send(j).await, "from_name", "control_characters");
    let mut j = ok(&mine, "+14155550199");
    j["fax_identity_name"] = json!("HEADER\u{0}");
    assert_refused(&send(j).await, "fax_identity_name", "control_characters");
    let mut j = ok(&mine, "+14155550199");
    j["fax_identity_number"] = json!("1},origination=x");
    assert_refused(&send(j).await, "fax_identity_number", "pattern");
    let mut j = ok(&mine, "+14155550199");
    j["from_name"] = json!("x".repeat(129));
    assert_refused(&send(j).await, "from_name", "maxLength");
    let r = api.get(&format!("{faxes}/outgoing"), &a.token).await;
    assert_eq!(r.data(), &json!([]), "a refused fax was queued");

    // An owned number in a national form is accepted, as E.164.
    let national = mine.replacen("+44", "0044 ", 1);
    let r = send(ok(&national, "(415) 555-0199")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.data()["from_number"], mine.as_str());
    assert_eq!(r.data()["to_number"], "+14155550199");
    let queued = r.data()["id"].as_str().unwrap().to_string();

    // Faxboxes: caller_id owned and E.164, texts clean, identity T.30.
    let boxes = format!("{acc}/faxboxes");
    let fb = |extra: Value| {
        let mut d = json!({"name": unique("box")});
        for (k, v) in extra.as_object().unwrap() {
            d[k] = v.clone();
        }
        d
    };
    for (extra, field, rule) in [
        (json!({"caller_id": theirs}), "caller_id", "not_owned"),
        (
            json!({"caller_id": "+1415\r\nX: y"}),
            "caller_id",
            "control_characters",
        ),
        (json!({"caller_id": "ACME CORP"}), "caller_id", "invalid"),
        (json!({"caller_id": "+19005550100"}), "caller_id", "denied"),
        (
            json!({"fax_header": "ACME\nX-Evil: y"}),
            "fax_header",
            "control_characters",
        ),
        (
            json!({"caller_name": "ACME\u{7f}"}),
            "caller_name",
            "control_characters",
        ),
        (
            json!({"fax_identity": "ACME,x=y"}),
            "fax_identity",
            "pattern",
        ),
        (
            json!({"fax_header": "h".repeat(129)}),
            "fax_header",
            "maxLength",
        ),
    ] {
        let r = api.put(&boxes, &a.token, fb(extra)).await;
        assert_refused(&r, field, rule);
    }
    let r = api
        .put(
            &boxes,
            &a.token,
            fb(json!({"caller_id": national, "fax_identity": "+44 20 1234"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.data()["caller_id"], mine.as_str());
    let box_id = r.data()["id"].as_str().unwrap().to_string();
    let r = api
        .patch(
            &format!("{boxes}/{box_id}"),
            &a.token,
            json!({"caller_id": theirs}),
        )
        .await;
    assert_refused(&r, "caller_id", "not_owned");
    let r = api.get(&format!("{boxes}/{box_id}"), &a.token).await;
    assert_eq!(
        r.data()["caller_id"],
        mine.as_str(),
        "a refused update changed the box"
    );

    // Resubmit: the copy is checked like a new fax.
    let r = api
        .delete(&format!("{faxes}/outgoing/{queued}"), &a.token)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let sent = r.data()["id"].as_str().unwrap().to_string();
    let sent_url = format!("{faxes}/outbox/{sent}");
    let resubmit = |data: Value| {
        api.call(
            Method::PUT,
            &sent_url,
            Some(&a.token),
            Some(json!({"action": "resubmit", "data": data})),
        )
    };
    assert_refused(
        &resubmit(json!({"from_number": theirs})).await,
        "from_number",
        "not_owned",
    );
    assert_refused(
        &resubmit(json!({"to_number": "+19005550100"})).await,
        "to_number",
        "denied",
    );
    assert_refused(
        &resubmit(json!({"from_name": "x\r\ny"})).await,
        "from_name",
        "control_characters",
    );
    let r = resubmit(json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.data()["from_number"], mine.as_str());
    // Forward: a fax received on a number the account does not own cannot be sent on with
    // that number; with an owned one it can.
    let inbox = received_fax(&store, &a.id, None, None).await;
    let inbox_url = format!("{faxes}/inbox/{inbox}");
    let forward = |data: Value| {
        api.call(
            Method::PUT,
            &inbox_url,
            Some(&a.token),
            Some(json!({"action": "forward", "data": data})),
        )
    };
    assert_refused(
        &forward(json!({"to_number": "+14155550188"})).await,
        "from_number",
        "not_owned",
    );
    assert_refused(
        &forward(json!({"to_number": "+19765550100", "from_number": mine})).await,
        "to_number",
        "denied",
    );
    let r = forward(json!({"to_number": "+14155550188", "from_number": mine})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    // Any caller id: only an ancestor's admin may allow it; then another number is accepted
    // (never a denied one).
    let r = api
        .patch(&acc, &a.token, json!({"fax_allow_any_caller_id": true}))
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = api.get(&acc, &a.token).await;
    assert_eq!(r.data()["fax_allow_any_caller_id"], false);
    let r = api
        .patch(&acc, &root.token, json!({"fax_allow_any_caller_id": "yes"}))
        .await;
    assert_refused(&r, "fax_allow_any_caller_id", "type");
    // Sending back what it read is no change, and allowed.
    let r = api
        .patch(&acc, &a.token, json!({"fax_allow_any_caller_id": false}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    api.allow_any_caller_id(&root, &a).await;
    let r = send(ok(&theirs, "+14155550199")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let r = send(ok(&unique_number(), "+14155550199")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_refused(
        &send(ok("+19005550100", "+14155550199")).await,
        "from_number",
        "denied",
    );
    assert_refused(
        &send(ok("ACME CORP", "+14155550199")).await,
        "from_number",
        "invalid",
    );
    // b is still held to its own numbers.
    let r = api
        .send_multipart(
            &format!("/v2/accounts/{}/faxes", b.id),
            &b.token,
            ok(&mine, "+14155550199"),
            PDF,
        )
        .await;
    assert_refused(&r, "from_number", "not_owned");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_number_prefixes_are_configurable() {
    // Embedded only: the CouchDB test server's system config is shared with other suites.
    let (store, dir) = api_common::embedded().await;
    let api = start(store, dir).await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    let from = api.own_number(&a).await;
    let faxes = format!("/v2/accounts/{}/faxes", a.id);
    let job = |to: &str| json!({"from_number": from, "to_number": to});
    let r = api.get("/v2/system_configs/fax", &root.token).await;
    let defaults = r.data()["default"]["denied_number_prefixes"].clone();
    for p in ["+1900", "+1976", "+1911", "+449", "+979"] {
        assert!(
            defaults.as_array().unwrap().contains(&json!(p)),
            "{p} not in {defaults}"
        );
    }
    let r = api
        .send_multipart(&faxes, &a.token, job("+33 1 23 45 67 89"), PDF)
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let r = api
        .patch(
            "/v2/system_configs/fax",
            &root.token,
            json!({"default": {"denied_number_prefixes": ["+33 1"]}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let refused = poll("the new deny list", Duration::from_secs(5), || async {
        let r = api
            .send_multipart(&faxes, &a.token, job("+33 1 23 45 67 89"), PDF)
            .await;
        (r.status == StatusCode::BAD_REQUEST).then_some(r)
    })
    .await;
    assert_refused(&refused, "to_number", "denied");
    assert!(
        refused.data()["to_number"]["denied"]["message"]
            .as_str()
            .unwrap()
            .contains("+331"),
        "{}",
        refused.body
    );
    // The operator's list replaces the default one.
    let r = api
        .send_multipart(&faxes, &a.token, job("+19005550100"), PDF)
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    // ensure_valid_caller_id off: any well-formed caller id, system-wide.
    let foreign = json!({"from_number": unique_number(), "to_number": "+14155550199"});
    let r = api
        .send_multipart(&faxes, &a.token, foreign.clone(), PDF)
        .await;
    assert_refused(&r, "from_number", "not_owned");
    let r = api
        .patch(
            "/v2/system_configs/fax",
            &root.token,
            json!({"default": {"ensure_valid_caller_id": false}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    poll(
        "ensure_valid_caller_id off",
        Duration::from_secs(5),
        || async {
            let r = api
                .send_multipart(&faxes, &a.token, foreign.clone(), PDF)
                .await;
            (r.status == StatusCode::ACCEPTED).then_some(())
        },
    )
    .await;
    let r = api
        .send_multipart(
            &faxes,
            &a.token,
            json!({"from_number": "ACME CORP", "to_number": "+14155550199"}),
            PDF,
        )
        .await;
    assert_refused(&r, "from_number", "invalid");
    api.stop().await;
}

#[allow(dead_code)]
fn _tenant_is_used(t: Tenant) -> String {
    t.username
}
