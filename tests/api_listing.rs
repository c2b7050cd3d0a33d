//! Listing filters and order over real HTTP, on both storage backends: Kazoo's
//! `filter_<path>`, `filter_not_<path>`, list values, `has_key`/`key_missing`,
//! `has_value`/`value_missing`, `modified_from`/`modified_to` and `ascending` on the queued
//! (`outgoing`) and MODB (`inbox`) fax listings and an account listing, with full pages.

#[macro_use]
mod api_common;

use api_common::{Api, Dir, PDF, test_options};
use faxd::ids::{AccountId, Db, YearMonth, modb_doc_id, new_id};
use faxd::store::SharedStore;
use reqwest::StatusCode;
use serde_json::{Value, json};

both_backends!(outgoing_filters_and_full_pages, inbox_filters_and_order);

fn ids(r: &api_common::Answer) -> Vec<String> {
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.data()
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| v["id"].as_str().expect("id").to_string())
        .collect()
}

/// Every row of a listing, page after page, and the size of each page.
async fn all_pages(api: &Api, token: &str, path: &str) -> (Vec<String>, Vec<usize>) {
    let mut out = Vec::new();
    let mut sizes = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let url = match &next {
            Some(k) => format!("{path}&start_key={k}"),
            None => path.to_string(),
        };
        let r = api.get(&url, token).await;
        let page = ids(&r);
        assert_eq!(r.body["page_size"], json!(page.len()), "{}", r.body);
        sizes.push(page.len());
        out.extend(page);
        match r.body["next_start_key"].as_str() {
            Some(k) => next = Some(k.to_string()),
            None => return (out, sizes),
        }
    }
}

async fn outgoing_filters_and_full_pages(store: SharedStore, dir: Dir) {
    let api = Api::start(store, dir, test_options()).await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    api.allow_any_caller_id(&root, &a).await;
    let acc = format!("/v2/accounts/{}", a.id);
    // Nine queued faxes; every third is "Keep" and has a to_name.
    let mut keep = Vec::new();
    let mut all = Vec::new();
    for i in 0..9 {
        let mut job =
            json!({"from_number": "+14155550100", "to_number": format!("+1415555014{i}")});
        if i % 3 == 0 {
            job["from_name"] = json!("Keep");
            job["to_name"] = json!("Bob");
        } else {
            job["from_name"] = json!("Other");
        }
        let r = api
            .send_multipart(&format!("{acc}/faxes"), &a.token, job, PDF)
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        let id = r.data()["id"].as_str().unwrap().to_string();
        // The answer comes before the conversion: the fax is `pending` once its intake is in.
        api_common::intake_done(&api, &a, &id).await;
        if i % 3 == 0 {
            keep.push(id.clone());
        }
        all.push(id);
    }
    let newest_first = ids(&api
        .get(&format!("{acc}/faxes/outgoing?paginate=false"), &a.token)
        .await);
    assert_eq!(newest_first.len(), 9);
    let kept_in_order: Vec<String> = newest_first
        .iter()
        .filter(|id| keep.contains(id))
        .cloned()
        .collect();

    // filter_not_<field> is a negation (it once read as a field `not_to_number`).
    let r = api
        .get(
            &format!("{acc}/faxes/outgoing?paginate=false&filter_not_to_number=%2B14155550140"),
            &a.token,
        )
        .await;
    let got = ids(&r);
    assert_eq!(got.len(), 8, "{}", r.body);
    assert!(!got.contains(&all[0]));

    // Pages come back full: 3 kept rows in pages of 2 → [2, 1], newest first.
    let (got, sizes) = all_pages(
        &api,
        &a.token,
        &format!("{acc}/faxes/outgoing?page_size=2&filter_from_name=Keep"),
    )
    .await;
    assert_eq!(sizes, vec![2, 1]);
    assert_eq!(got, kept_in_order);

    // has_key / key_missing, has_value / value_missing on the stored job.
    let (got, _) = all_pages(
        &api,
        &a.token,
        &format!("{acc}/faxes/outgoing?has_key=to_name"),
    )
    .await;
    assert_eq!(got, kept_in_order);
    let (got, _) = all_pages(
        &api,
        &a.token,
        &format!("{acc}/faxes/outgoing?key_missing=to_name"),
    )
    .await;
    assert_eq!(got.len(), 6);
    assert!(got.iter().all(|id| !keep.contains(id)));
    let (got, _) = all_pages(
        &api,
        &a.token,
        &format!("{acc}/faxes/outgoing?value_missing=to_name"),
    )
    .await;
    assert_eq!(got.len(), 6);
    let (got, _) = all_pages(
        &api,
        &a.token,
        &format!("{acc}/faxes/outgoing?has_value=to_name"),
    )
    .await;
    assert_eq!(got, kept_in_order);

    // A JSON list value: any of the numbers.
    let list = "%5B%22%2B14155550141%22%2C%22%2B14155550143%22%5D";
    let (got, _) = all_pages(
        &api,
        &a.token,
        &format!("{acc}/faxes/outgoing?filter_to_number={list}"),
    )
    .await;
    let mut want = vec![all[1].clone(), all[3].clone()];
    want.sort();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    assert_eq!(got_sorted, want);

    // The fields clients see (status) filter too.
    let (got, _) = all_pages(
        &api,
        &a.token,
        &format!("{acc}/faxes/outgoing?filter_status=pending"),
    )
    .await;
    assert_eq!(got.len(), 9);

    // modified_from/modified_to bound pvt_modified.
    let now = faxd::time::now_gregorian();
    let (got, _) = all_pages(
        &api,
        &a.token,
        &format!("{acc}/faxes/outgoing?modified_from={}", now + 3600),
    )
    .await;
    assert!(got.is_empty());
    let (got, _) = all_pages(
        &api,
        &a.token,
        &format!(
            "{acc}/faxes/outgoing?modified_from={}&modified_to={}",
            now - 3600,
            now + 3600
        ),
    )
    .await;
    assert_eq!(got.len(), 9);

    // Oldest first, paged.
    let (got, sizes) = all_pages(
        &api,
        &a.token,
        &format!("{acc}/faxes/outgoing?page_size=4&ascending=true"),
    )
    .await;
    assert_eq!(sizes, vec![4, 4, 1]);
    let mut oldest_first = newest_first.clone();
    oldest_first.reverse();
    assert_eq!(got, oldest_first);

    // A bad bound is a 400 naming the parameter; nothing is listed.
    let r = api
        .get(
            &format!("{acc}/faxes/outgoing?modified_from=yesterday"),
            &a.token,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(
        r.data()["modified_from"]["invalid"].is_object(),
        "{}",
        r.body
    );

    // The same filters on an account listing (users).
    for name in ["Ann", "Ben", "Cat"] {
        let r = api
            .put(
                &format!("{acc}/users"),
                &a.token,
                json!({"first_name": name, "last_name": "Tester"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let r = api
        .get(
            &format!(
                "{acc}/users?paginate=false&filter_last_name=Tester&filter_not_first_name=Ben"
            ),
            &a.token,
        )
        .await;
    let mut names: Vec<String> = r
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["first_name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, vec!["Ann", "Cat"], "{}", r.body);
    api.stop().await;
}

/// Stores a received fax in the account's MODB with `fields` over a plain inbox document.
async fn inbox_doc(store: &SharedStore, account: &str, created: i64, fields: Value) -> String {
    let account = AccountId::parse(account).unwrap();
    let month = YearMonth::now();
    let db = Db::Modb(account.clone(), month);
    store.ensure_db(&db).await.unwrap();
    let id = modb_doc_id(month, &new_id());
    let mut doc = json!({
        "_id": id, "pvt_type": "fax", "folder": "inbox", "from_number": "+14155550999",
        "to_number": "+14155550100", "rx_result": {"success": true, "total_pages": 1},
        "pvt_account_id": account.as_str(), "pvt_created": created, "pvt_modified": created,
    });
    for (k, v) in fields.as_object().unwrap() {
        doc[k] = v.clone();
    }
    store.save(&db, doc).await.unwrap();
    id
}

async fn inbox_filters_and_order(store: SharedStore, dir: Dir) {
    let api = Api::start(store.clone(), dir, test_options()).await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    let acc = format!("/v2/accounts/{}", a.id);
    let now = faxd::time::now_gregorian();
    // Twelve received faxes a minute apart (index 0 the oldest); every fourth failed, with a
    // result text; the others succeeded with an empty one.
    let mut ids_by_age = Vec::new();
    for i in 0..12i64 {
        let failed = i % 4 == 1;
        let fields = json!({
            "from_number": format!("+1415555020{}", i % 10),
            "rx_result": {"success": !failed, "result_text": if failed { "no carrier" } else { "" }},
        });
        ids_by_age.push(inbox_doc(&store, &a.id, now - 3600 + i * 60, fields).await);
    }
    let newest_first: Vec<String> = ids_by_age.iter().rev().cloned().collect();
    let failed: Vec<String> = newest_first
        .iter()
        .filter(|id| {
            let i = ids_by_age.iter().position(|x| x == *id).unwrap();
            i % 4 == 1
        })
        .cloned()
        .collect();
    assert_eq!(failed.len(), 3);

    let (got, _) = all_pages(&api, &a.token, &format!("{acc}/faxes/inbox?page_size=50")).await;
    assert_eq!(got, newest_first);

    // A nested boolean: full pages of 2 for 3 rows.
    let (got, sizes) = all_pages(
        &api,
        &a.token,
        &format!("{acc}/faxes/inbox?page_size=2&filter_rx_result.success=false"),
    )
    .await;
    assert_eq!(sizes, vec![2, 1]);
    assert_eq!(got, failed);
    let (got, _) = all_pages(
        &api,
        &a.token,
        &format!("{acc}/faxes/inbox?page_size=5&filter_not_rx_result.success=false"),
    )
    .await;
    assert_eq!(got.len(), 9);
    assert!(got.iter().all(|id| !failed.contains(id)));
    let (got, _) = all_pages(
        &api,
        &a.token,
        &format!("{acc}/faxes/inbox?page_size=5&has_value=rx_result.result_text"),
    )
    .await;
    assert_eq!(got, failed);
    let (got, _) = all_pages(
        &api,
        &a.token,
        &format!("{acc}/faxes/inbox?page_size=5&value_missing=rx_result.result_text"),
    )
    .await;
    assert_eq!(got.len(), 9);
    // Oldest first, with a filter, paged.
    let (got, sizes) = all_pages(
        &api,
        &a.token,
        &format!(
            "{acc}/faxes/inbox?page_size=4&descending=false&filter_not_rx_result.success=false"
        ),
    )
    .await;
    assert_eq!(sizes, vec![4, 4, 1]);
    let want: Vec<String> = ids_by_age
        .iter()
        .filter(|id| !failed.contains(id))
        .cloned()
        .collect();
    assert_eq!(got, want);
    // modified_to: the older half.
    let (got, _) = all_pages(
        &api,
        &a.token,
        &format!(
            "{acc}/faxes/inbox?page_size=50&modified_to={}",
            now - 3600 + 5 * 60
        ),
    )
    .await;
    assert_eq!(
        got,
        ids_by_age[..6].iter().rev().cloned().collect::<Vec<_>>()
    );
    api.stop().await;
}
