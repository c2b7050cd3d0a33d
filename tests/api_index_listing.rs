//! Fax listings over real HTTP on both storage backends, answered from the store's indexes:
//! folder (outbox/inbox) and e-mail-to-fax log pages in order across months, `next_start_key`
//! walking every row once, route scopes, and the summary keys Monster UI's fax app reads.

#[macro_use]
mod api_common;

use std::collections::HashSet;

use api_common::{Api, Dir, Tenant, test_options};
use faxd::ids::{AccountId, Db, YearMonth, modb_doc_id, new_id};
use faxd::store::SharedStore;
use reqwest::StatusCode;
use serde_json::{Value, json};

both_backends!(
    folder_pages_come_in_order_with_their_summaries,
    smtplog_pages_come_in_order_within_their_scope,
);

/// Saves a document in the account's MODB of the month of `created`; returns its id.
async fn save_in_modb(store: &SharedStore, account: &str, created: i64, mut doc: Value) -> String {
    let account = AccountId::parse(account).unwrap();
    let month = YearMonth::from_gregorian(created);
    let db = Db::Modb(account.clone(), month);
    store.ensure_db(&db).await.unwrap();
    let id = modb_doc_id(month, &new_id());
    doc["_id"] = json!(id);
    doc["pvt_account_id"] = json!(account.as_str());
    doc["pvt_created"] = json!(created);
    store.save(&db, doc).await.unwrap();
    id
}

/// Every page of `path` (which ends in `page_size=N`), following `next_start_key`.
async fn all_pages(api: &Api, t: &Tenant, path: &str, page_size: usize) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let url = match &next {
            Some(k) => format!("{path}&start_key={k}"),
            None => path.to_string(),
        };
        let r = api.get(&url, &t.token).await;
        assert_eq!(r.status, StatusCode::OK, "{url}: {}", r.body);
        let rows = r.data().as_array().unwrap().clone();
        assert_eq!(r.body["page_size"], rows.len(), "{}", r.body);
        assert!(rows.len() <= page_size, "{}", r.body);
        if let Some(k) = &next {
            assert_eq!(r.body["start_key"], k.as_str(), "{}", r.body);
        }
        pages.push(rows);
        next = r.body["next_start_key"].as_str().map(str::to_string);
        if next.is_none() {
            return pages;
        }
        assert!(pages.len() < 100, "the pages never end: {}", r.body);
    }
}

async fn folder_pages_come_in_order_with_their_summaries(store: SharedStore, dir: Dir) {
    let api = Api::start(store.clone(), dir, test_options()).await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    let acc = format!("/v2/accounts/{}", a.id);
    let fb = api
        .put(&format!("{acc}/faxboxes"), &a.token, json!({"name": "Box"}))
        .await;
    let fb = fb.data()["id"].as_str().unwrap().to_string();
    let now = faxd::time::now_gregorian();
    // 23 outbox faxes over 26 days (two months' MODBs whatever the date), two of them
    // created in the same second; every third in the faxbox; every fifth failed.
    let mut expected: Vec<(i64, String)> = Vec::new();
    let mut docs = std::collections::HashMap::new();
    for k in 0..23i64 {
        let created = if k == 7 {
            now - 6 * 100_000
        } else {
            now - k * 100_000
        };
        let failed = k % 5 == 0;
        let mut doc = json!({
            "pvt_type": "fax", "folder": "outbox",
            "pvt_job_status": if failed { "failed" } else { "completed" },
            "from_number": "+14155550100", "to_number": format!("+1415555{:04}", k),
            "from_name": "Sender", "pvt_pages": 2, "description": "not in a row",
            "tx_result": {"success": !failed, "result_code": if failed { 486 } else { 0 },
                          "result_text": if failed { "USER_BUSY" } else { "OK" }, "pages_sent": 2},
        });
        if !failed {
            doc["pvt_delivered_date"] = json!(created + 30);
        }
        if k % 3 == 0 {
            doc["faxbox_id"] = json!(fb);
        }
        let id = save_in_modb(&store, &a.id, created, doc.clone()).await;
        expected.push((created, id.clone()));
        docs.insert(id, doc);
    }
    // Not in the outbox listing: an inbox fax, a deleted outbox fax, another account's fax.
    let inbox = save_in_modb(
        &store,
        &a.id,
        now - 5,
        json!({"pvt_type": "fax", "folder": "inbox", "from_number": "+14155550999",
               "rx_result": {"success": true, "total_pages": 1}}),
    )
    .await;
    save_in_modb(
        &store,
        &a.id,
        now - 3,
        json!({"pvt_type": "fax", "folder": "outbox", "pvt_deleted": true}),
    )
    .await;
    let b = api.child_tenant(&root).await;
    save_in_modb(
        &store,
        &b.id,
        now - 3,
        json!({"pvt_type": "fax", "folder": "outbox"}),
    )
    .await;
    expected.sort_by(|x, y| (y.0, &y.1).cmp(&(x.0, &x.1)));

    let pages = all_pages(&api, &a, &format!("{acc}/faxes/outbox?page_size=5"), 5).await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [5, 5, 5, 5, 3]);
    let rows: Vec<Value> = pages.into_iter().flatten().collect();
    let got: Vec<(i64, String)> = rows
        .iter()
        .map(|r| {
            (
                r["created"].as_i64().unwrap(),
                r["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, expected, "newest first, ties by id, every fax once");
    for row in &rows {
        let doc = &docs[row["id"].as_str().unwrap()];
        let what = row.to_string();
        assert_eq!(row["folder"], "outbox", "{what}");
        assert_eq!(row["status"], doc["pvt_job_status"], "{what}");
        assert_eq!(row["from_number"], doc["from_number"], "{what}");
        assert_eq!(row["to_number"], doc["to_number"], "{what}");
        assert_eq!(row["to"], doc["to_number"], "{what}");
        assert_eq!(row["from_name"], "Sender", "{what}");
        assert_eq!(row["tx_result"], doc["tx_result"], "{what}");
        assert_eq!(row["pages"], 2, "{what}");
        assert_eq!(
            row.get("delivered"),
            doc.get("pvt_delivered_date"),
            "{what}"
        );
        assert_eq!(row.get("faxbox_id"), doc.get("faxbox_id"), "{what}");
        // Keys the fax does not have are absent, not null; the rest of the document is in
        // its details, not in the row.
        for k in ["to_name", "rx_result", "owner_id", "description"] {
            assert!(row.get(k).is_none(), "{k} in {what}");
        }
    }
    // The whole outbox at once (Monster UI's paginate=false), and a created window.
    let r = api
        .get(&format!("{acc}/faxes/outbox?paginate=false"), &a.token)
        .await;
    assert_eq!(r.data().as_array().unwrap().len(), 23, "{}", r.body);
    assert!(r.body.get("next_start_key").is_none());
    let r = api
        .get(
            &format!(
                "{acc}/faxes/outbox?created_from={}&created_to={}",
                now - 250_000,
                now
            ),
            &a.token,
        )
        .await;
    let ids: Vec<&str> = r
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = expected[..3].iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids, want);
    // A faxbox's outbox: its faxes only, in order, paged.
    let pages = all_pages(
        &api,
        &a,
        &format!("{acc}/faxboxes/{fb}/faxes/outbox?page_size=3"),
        3,
    )
    .await;
    let ids: Vec<String> = pages
        .into_iter()
        .flatten()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = expected
        .iter()
        .filter(|(_, id)| docs[id].get("faxbox_id").is_some())
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(want.len(), 8);
    assert_eq!(ids, want);
    // The inbox has its one fax, with the receive result.
    let r = api
        .get(&format!("{acc}/faxes/inbox?page_size=5"), &a.token)
        .await;
    assert_eq!(r.data().as_array().unwrap().len(), 1, "{}", r.body);
    assert_eq!(r.data()[0]["id"], inbox.as_str());
    assert_eq!(r.data()[0]["rx_result"]["total_pages"], 1);
    assert_eq!(r.data()[0]["from_number"], "+14155550999");
    // A key from another listing is refused, not misread.
    let r = api
        .get(&format!("{acc}/faxes/outbox?start_key=nonsense!"), &a.token)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    api.stop().await;
}

async fn smtplog_pages_come_in_order_within_their_scope(store: SharedStore, dir: Dir) {
    let api = Api::start(store.clone(), dir, test_options()).await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    let acc = format!("/v2/accounts/{}", a.id);
    let fb = api
        .put(&format!("{acc}/faxboxes"), &a.token, json!({"name": "Box"}))
        .await;
    let fb = fb.data()["id"].as_str().unwrap().to_string();
    let now = faxd::time::now_gregorian();
    let mut expected = Vec::new();
    let mut of_box = HashSet::new();
    for k in 0..11i64 {
        let mut doc = json!({
            "pvt_type": "fax_smtp_log", "from": format!("sender{k}@example.com"),
            "to": "4155550100@fax.example.com", "errors": [format!("error {k}"), "later"],
        });
        if k % 2 == 0 {
            doc["faxbox_id"] = json!(fb);
        }
        let created = now - k * 200_000;
        let id = save_in_modb(&store, &a.id, created, doc).await;
        if k % 2 == 0 {
            of_box.insert(id.clone());
        }
        expected.push((created, id, k));
    }
    // A fax is not a log.
    save_in_modb(
        &store,
        &a.id,
        now,
        json!({"pvt_type": "fax", "folder": "inbox"}),
    )
    .await;
    let pages = all_pages(&api, &a, &format!("{acc}/faxes/smtplog?page_size=4"), 4).await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [4, 4, 3]);
    let rows: Vec<Value> = pages.into_iter().flatten().collect();
    assert_eq!(rows.len(), expected.len());
    for (row, (created, id, k)) in rows.iter().zip(&expected) {
        assert_eq!(row["id"], id.as_str(), "{row}");
        assert_eq!(row["created"], *created, "{row}");
        assert_eq!(row["from"], format!("sender{k}@example.com"), "{row}");
        assert_eq!(row["to"], "4155550100@fax.example.com", "{row}");
        assert_eq!(row["error"], format!("error {k}"), "{row}");
    }
    // A faxbox's logs only, paged.
    let pages = all_pages(
        &api,
        &a,
        &format!("{acc}/faxboxes/{fb}/faxes/smtplog?page_size=2"),
        2,
    )
    .await;
    let ids: Vec<String> = pages
        .into_iter()
        .flatten()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = expected
        .iter()
        .filter(|(_, id, _)| of_box.contains(id))
        .map(|(_, id, _)| id.clone())
        .collect();
    assert_eq!(want.len(), 6);
    assert_eq!(ids, want);
    // Filters read the logs themselves, within the scope, and pages come back full.
    let ids_of = |pages: Vec<Vec<Value>>| -> Vec<String> {
        pages
            .into_iter()
            .flatten()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    let outside: Vec<String> = expected
        .iter()
        .filter(|(_, id, _)| !of_box.contains(id))
        .map(|(_, id, _)| id.clone())
        .collect();
    let pages = all_pages(
        &api,
        &a,
        &format!("{acc}/faxes/smtplog?page_size=2&filter_not_faxbox_id={fb}"),
        2,
    )
    .await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(ids_of(pages), outside);
    let one = |k: i64| expected[k as usize].1.clone();
    let pages = all_pages(
        &api,
        &a,
        &format!("{acc}/faxboxes/{fb}/faxes/smtplog?page_size=2&filter_from=sender4@example.com"),
        2,
    )
    .await;
    assert_eq!(ids_of(pages), vec![one(4)]);
    let pages = all_pages(
        &api,
        &a,
        &format!("{acc}/faxboxes/{fb}/faxes/smtplog?page_size=2&filter_from=sender3@example.com"),
        2,
    )
    .await;
    assert!(ids_of(pages).is_empty(), "a log of another faxbox");
    api.stop().await;
}
