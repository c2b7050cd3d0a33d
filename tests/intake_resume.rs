//! The stranded-intake rules of `faxd::intake::resume` on the real embedded store: a job
//! still within its intake time is left alone, an interrupted upload ends `failed` with the
//! reason, a job whose intake keeps being interrupted gives up after `MAX_RESUMES`, and a
//! job someone already moved on is skipped.

use std::sync::Arc;
use std::time::Duration;

use faxd::convert::{ConvertConfig, Converter};
use faxd::ids::{AccountId, Db, YearMonth, modb_doc_id, new_id};
use faxd::intake::Conversion;
use faxd::intake::fetch::FetchPolicy;
use faxd::intake::resume::{MAX_RESUMES, Resumed, resume};
use faxd::store::SharedStore;
use faxd::store::sqlite::SqliteStore;
use serde_json::{Value, json};

fn policy() -> FetchPolicy {
    FetchPolicy {
        max_bytes: 1 << 20,
        timeout: Duration::from_secs(2),
        max_redirects: 0,
        allow_private: true,
    }
}

/// A job left in `attaching_files` `age` seconds ago: (id, creation time).
async fn stranded(
    store: &SharedStore,
    account: &AccountId,
    age: i64,
    extra: Value,
) -> (String, i64) {
    let now = faxd::time::now_gregorian();
    let id = new_id();
    let mut doc = json!({
        "_id": id, "pvt_type": "fax", "pvt_job_status": "attaching_files",
        "pvt_account_id": account.as_str(), "pvt_account_db": "faxes",
        "pvt_created": now - age, "pvt_modified": now - age,
        "to_number": "+15557654321", "attempts": 0, "retries": 1,
    });
    if let (Some(d), Some(e)) = (doc.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            d.insert(k.clone(), v.clone());
        }
    }
    store.save(&Db::Faxes, doc).await.expect("save");
    (id, now - age)
}

/// The outbox copy (in the MODB of its creation month) of a job created at `created`.
async fn outbox(store: &SharedStore, account: &AccountId, id: &str, created: i64) -> Option<Value> {
    let month = YearMonth::from_gregorian(created);
    let db = Db::Modb(account.clone(), month);
    store.get(&db, &modb_doc_id(month, id)).await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stranded_jobs_are_finished_by_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(SqliteStore::open(dir.path()).await.expect("store"));
    store.ensure_db(&Db::Faxes).await.unwrap();
    let conversion = Conversion {
        converter: Arc::new(Converter::new(ConvertConfig::default())),
        keep_tiff: true,
    };
    let account = AccountId::generate();
    let now = faxd::time::now_gregorian();
    let cutoff = now - 60;

    // Still within its intake time: left alone.
    let (fresh, _) = stranded(&store, &account, 10, json!({})).await;
    let r = resume(&store, &conversion, &policy(), &fresh, cutoff).await;
    assert_eq!(r.unwrap(), Resumed::Skipped);
    let doc = store.get(&Db::Faxes, &fresh).await.unwrap().unwrap();
    assert_eq!(doc["pvt_job_status"], "attaching_files");

    // An upload cut short (no document, no URL): failed, with the reason, in the outbox.
    let (upload, upload_created) = stranded(&store, &account, 600, json!({})).await;
    let r = resume(&store, &conversion, &policy(), &upload, cutoff)
        .await
        .unwrap();
    let Resumed::Failed(reason) = r else {
        panic!("{r:?}")
    };
    assert!(reason.contains("upload was interrupted"), "{reason}");
    assert!(store.get(&Db::Faxes, &upload).await.unwrap().is_none());
    let out = outbox(&store, &account, &upload, upload_created)
        .await
        .expect("in the outbox");
    assert_eq!(out["pvt_job_status"], "failed");
    assert_eq!(out["tx_result"]["result_text"], reason.as_str());

    // Interrupted MAX_RESUMES times already: it gives up rather than fetch again.
    let url = "http://127.0.0.1:9/never-fetched.pdf";
    let (looping, _) = stranded(
        &store,
        &account,
        600,
        json!({"document": {"url": url}, "pvt_intake_resumes": MAX_RESUMES}),
    )
    .await;
    let r = resume(&store, &conversion, &policy(), &looping, cutoff)
        .await
        .unwrap();
    let Resumed::Failed(reason) = r else {
        panic!("{r:?}")
    };
    assert!(reason.contains("interrupted 3 times"), "{reason}");

    // A job that moved on since the sweep listed it (now pending): skipped, untouched.
    let (moved, _) = stranded(&store, &account, 600, json!({})).await;
    let mut doc = store.get(&Db::Faxes, &moved).await.unwrap().unwrap();
    doc["pvt_job_status"] = json!("pending");
    let saved = store.save(&Db::Faxes, doc).await.unwrap();
    let r = resume(&store, &conversion, &policy(), &moved, cutoff).await;
    assert_eq!(r.unwrap(), Resumed::Skipped);
    let doc = store.get(&Db::Faxes, &moved).await.unwrap().unwrap();
    assert_eq!(doc["_rev"], saved["_rev"]);
}
