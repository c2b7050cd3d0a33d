//! The authentication cache over real HTTP, on both storage backends: what this node's API
//! revokes or disables is refused on the very next request even right after the cache was
//! warmed, tenants stay apart with warm entries, and a change written straight to the store
//! (as another node or a tool would) is seen within the documented bound
//! (`faxd::api::auth_cache::TTL`).

#[macro_use]
mod api_common;

use std::time::Duration;

use api_common::{Api, Dir, Tenant, plain_user, poll, test_options};
use faxd::api::auth_cache::TTL;
use faxd::ids::{AccountId, Db};
use faxd::store::SharedStore;
use reqwest::StatusCode;
use serde_json::json;

both_backends!(
    cache_revocation_is_immediate,
    cache_keeps_tenants_apart,
    cache_sees_store_writes_within_bound,
);

/// Reads the account's fax outbox with `t`'s token twice (the second answer comes from the
/// cache when it works) and checks both succeed.
async fn warm(api: &Api, t: &Tenant, account: &str) {
    for _ in 0..2 {
        let a = api
            .get(&format!("/v2/accounts/{account}/faxes/outbox"), &t.token)
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
}

async fn refused(api: &Api, t: &Tenant, account: &str, what: &str) {
    let a = api
        .get(&format!("/v2/accounts/{account}/faxes/outbox"), &t.token)
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{what}: {}", a.body);
}

async fn cache_revocation_is_immediate(store: SharedStore, dir: Dir) {
    let api = Api::start(store, dir, test_options()).await;
    let root = api.root_tenant().await;
    let admin = api.child_tenant(&root).await;
    let acc = admin.id.clone();

    // Logout: the token's next request is refused.
    let session = plain_user(&api, &admin, "leaver").await;
    warm(&api, &session, &acc).await;
    let out = api.delete("/v2/token_auth", &session.token).await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.body);
    refused(&api, &session, &acc, "logged out").await;

    // A user disabled by an admin.
    let clerk = plain_user(&api, &admin, "clerk").await;
    warm(&api, &clerk, &acc).await;
    let user = format!("/v2/accounts/{acc}/users/{}", clerk.user_id);
    let off = api
        .patch(&user, &admin.token, json!({"enabled": false}))
        .await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.body);
    refused(&api, &clerk, &acc, "disabled user").await;

    // A user deleted.
    let temp = plain_user(&api, &admin, "temp").await;
    warm(&api, &temp, &acc).await;
    let gone = api
        .delete(
            &format!("/v2/accounts/{acc}/users/{}", temp.user_id),
            &admin.token,
        )
        .await;
    assert_eq!(gone.status, StatusCode::OK, "{}", gone.body);
    refused(&api, &temp, &acc, "deleted user").await;

    // A password changed by its user voids the tokens issued before.
    let mover = plain_user(&api, &admin, "mover").await;
    warm(&api, &mover, &acc).await;
    let pw = api
        .patch(
            &format!("/v2/accounts/{acc}/users/{}", mover.user_id),
            &mover.token,
            json!({"password": "a-new-secret-9"}),
        )
        .await;
    assert_eq!(pw.status, StatusCode::OK, "{}", pw.body);
    refused(&api, &mover, &acc, "password changed").await;

    // The account disabled by an admin of its parent: its admin's token is refused, and the
    // parent's still works on it.
    warm(&api, &admin, &acc).await;
    let off = api
        .patch(
            &format!("/v2/accounts/{acc}"),
            &root.token,
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.body);
    refused(&api, &admin, &acc, "disabled account").await;
    warm(&api, &root, &acc).await;
    api.stop().await;
}

async fn cache_keeps_tenants_apart(store: SharedStore, dir: Dir) {
    let api = Api::start(store, dir, test_options()).await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    let b = api.child_tenant(&root).await;
    let clerk = plain_user(&api, &a, "clerk").await;
    // Every identity and both accounts cached.
    warm(&api, &a, &a.id).await;
    warm(&api, &b, &b.id).await;
    warm(&api, &clerk, &a.id).await;
    for _ in 0..2 {
        for (who, t, other) in [("a", &a, &b.id), ("b", &b, &a.id), ("clerk", &clerk, &b.id)] {
            for path in [
                format!("/v2/accounts/{other}"),
                format!("/v2/accounts/{other}/faxes/outbox"),
                format!("/v2/accounts/{other}/users"),
            ] {
                let r = api.get(&path, &t.token).await;
                assert_eq!(
                    r.status,
                    StatusCode::FORBIDDEN,
                    "{who} on {path}: {}",
                    r.body
                );
            }
        }
        // A plain user stays a plain user with warm entries: the admin-only users listing.
        let r = api
            .get(&format!("/v2/accounts/{}/users", a.id), &clerk.token)
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    }
    api.stop().await;
}

/// Writes straight to the store (not through this node's API): the change is seen within
/// the cache's bound (polled until then, from the write).
async fn cache_sees_store_writes_within_bound(store: SharedStore, dir: Dir) {
    let api = Api::start(store.clone(), dir, test_options()).await;
    let root = api.root_tenant().await;
    let admin = api.child_tenant(&root).await;
    let clerk = plain_user(&api, &admin, "clerk").await;
    let acc = AccountId::parse(&admin.id).expect("id");
    let bound = TTL + Duration::from_secs(3);

    // A user deleted by another writer.
    warm(&api, &clerk, &admin.id).await;
    let db = Db::Account(acc.clone());
    let user = store.get(&db, &clerk.user_id).await.unwrap().expect("user");
    let rev = user["_rev"].as_str().expect("rev").to_string();
    store.delete(&db, &clerk.user_id, &rev).await.unwrap();
    poll("the deleted user's token refused", bound, || async {
        let a = api
            .get(
                &format!("/v2/accounts/{}/faxes/outbox", admin.id),
                &clerk.token,
            )
            .await;
        (a.status == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;

    // The account disabled by another writer.
    warm(&api, &admin, &admin.id).await;
    let mut doc = store
        .get(&Db::Accounts, acc.as_str())
        .await
        .unwrap()
        .expect("account");
    doc["pvt_enabled"] = json!(false);
    store.save(&Db::Accounts, doc).await.unwrap();
    poll("the disabled account's token refused", bound, || async {
        let a = api
            .get(
                &format!("/v2/accounts/{}/faxes/outbox", admin.id),
                &admin.token,
            )
            .await;
        (a.status == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    api.stop().await;
}
