//! Outbound jobs written straight into a store, around the API (accounts with their
//! `max_outbound`, jobs as intake leaves them), and the transmission times of finished ones.

use faxd::ids::{AccountId, Db, new_id};
use faxd::outbound::docs::{FAX_FILE, blank_tiff};
use faxd::store::{SharedStore, bytes_stream};
use serde_json::{Value, json};

/// An account as the outbound engine sees it: with `max_outbound` in its fax config when
/// given (the account database is then created), else on the system default.
pub async fn new_account(store: &SharedStore, max_outbound: Option<u32>) -> AccountId {
    let a = AccountId::generate();
    if let Some(n) = max_outbound {
        let db = Db::Account(a.clone());
        store.ensure_db(&db).await.expect("account db");
        store
            .save(&db, json!({"_id": "configs_fax", "max_outbound": n}))
            .await
            .expect("account config");
    }
    a
}

/// Submits a job of `pages` pages to `to` as the API does: the document with its fax TIFF
/// attached, then `pending`. `fields` go over the defaults (no attempt yet, `retries` 1, sent
/// from +14155550100 "Test"); a field given as `null` is left out of the document.
pub async fn submit(
    store: &SharedStore,
    account: &AccountId,
    to: &str,
    pages: u32,
    fields: Value,
) -> String {
    let tiff = (FAX_FILE, "image/tiff", blank_tiff(pages));
    submit_file(store, account, to, tiff, fields).await
}

/// Like [`submit`], with the job's one attachment given as (name, content type, bytes).
pub async fn submit_file(
    store: &SharedStore,
    account: &AccountId,
    to: &str,
    (name, content_type, bytes): (&str, &str, Vec<u8>),
    fields: Value,
) -> String {
    let id = new_id();
    let rev = store
        .put_attachment(
            &Db::Faxes,
            &id,
            None,
            name,
            content_type,
            bytes_stream(bytes),
        )
        .await
        .expect("attachment");
    let mut doc = store.get(&Db::Faxes, &id).await.expect("get").expect("doc");
    let now = faxd::time::now_gregorian();
    let mut all = json!({
        "pvt_type": "fax", "pvt_job_status": "pending", "pvt_account_id": account.as_str(),
        "pvt_account_db": "faxes", "pvt_created": now, "pvt_modified": now,
        "to_number": to, "from_number": "+14155550100", "from_name": "Test",
        "retries": 1, "attempts": 0,
    });
    let all = all.as_object_mut().expect("object");
    for (k, v) in fields.as_object().expect("fields are an object") {
        if v.is_null() {
            all.remove(k);
        } else {
            all.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in all.iter() {
        doc[k] = v.clone();
    }
    doc["_rev"] = json!(rev);
    store.save(&Db::Faxes, doc).await.expect("submit");
    id
}

/// `[started, finished)` of a fax's last attempt (unix ms), from its `tx_result`.
pub fn interval(doc: &Value) -> (i64, i64) {
    let r = &doc["tx_result"];
    (
        r["started"].as_i64().expect("tx_result.started"),
        r["finished"].as_i64().expect("tx_result.finished"),
    )
}

/// The most `[started, finished)` intervals open at one instant (an end and a start at the
/// same time do not overlap).
pub fn max_overlap(intervals: &[(i64, i64)]) -> usize {
    let mut edges: Vec<(i64, i32)> = intervals
        .iter()
        .flat_map(|&(s, f)| [(s, 1), (f, -1)])
        .collect();
    // At equal times a finish (-1) sorts before a start (+1).
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}
