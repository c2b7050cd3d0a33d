//! Store conformance suite: the same test functions run against the embedded (SQLite) store
//! and the CouchDB store (`FAXD_TEST_COUCH_URL`, started by `make test`).

use std::time::{Duration, Instant};

use faxd::ids::{AccountId, Db, YearMonth, new_id};
use faxd::model::{Folder, JobStatus};
use faxd::store::couch::CouchStore;
use faxd::store::sqlite::SqliteStore;
use faxd::store::{
    ByteStream, CreatedRange, ModbFilter, NewAttachment, Page, SharedStore, StoreError,
    bytes_stream, read_all,
};
use futures_util::StreamExt;
use serde_json::{Value, json};
use sha2::Digest;

async fn embedded() -> (SharedStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).await.expect("open sqlite");
    (std::sync::Arc::new(store), dir)
}

async fn couch() -> SharedStore {
    let url = std::env::var("FAXD_TEST_COUCH_URL").expect(
        "FAXD_TEST_COUCH_URL is not set: run the suite with `make test`, which starts the \
         CouchDB-API test server, or point it at a CouchDB 3",
    );
    std::sync::Arc::new(CouchStore::connect(&url).await.expect("connect couchdb"))
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _dir) = super::embedded().await;
                    super::$name(store).await;
                }
            )*
        }
        mod couchdb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let store = super::couch().await;
                    super::$name(store).await;
                }
            )*
        }
    };
}

conformance!(
    documents_have_revisions_and_conflicts,
    missing_databases_are_reported,
    attachments_round_trip_with_stub_semantics,
    attachment_of_50_mb_streams_both_ways,
    documents_are_saved_with_their_attachments_in_one_write,
    queue_views_select_and_order_jobs,
    stale_jobs_are_selected_by_state_and_age,
    queue_depth_counts_live_jobs_by_status,
    queue_listings_page_newest_first,
    faxbox_email_addresses_resolve,
    modb_listings_span_months_and_filters,
    change_feed_pushes_writes,
    concurrent_updates_never_lose_a_write,
    documents_are_listed_by_id_prefix,
);

fn gregorian_now() -> i64 {
    faxd::time::now_gregorian()
}

fn rev(doc: &Value) -> String {
    doc["_rev"].as_str().expect("_rev").to_string()
}

async fn documents_have_revisions_and_conflicts(store: SharedStore) {
    let db = Db::Account(AccountId::generate());
    store.ensure_db(&db).await.unwrap();
    store.ensure_db(&db).await.unwrap(); // idempotent

    let created = store.save(&db, json!({"name": "first"})).await.unwrap();
    let id = created["_id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    let rev1 = rev(&created);
    assert!(rev1.starts_with("1-"), "{rev1}");

    let got = store.get(&db, &id).await.unwrap().expect("doc");
    assert_eq!(got["name"], "first");
    assert_eq!(got["_rev"], rev1.as_str());

    let mut update = got.clone();
    update["name"] = json!("second");
    let updated = store.save(&db, update.clone()).await.unwrap();
    let rev2 = rev(&updated);
    assert!(rev2.starts_with("2-"), "{rev2}");

    // The same stale revision again: conflict, and the stored doc is unchanged.
    update["name"] = json!("lost");
    assert!(matches!(
        store.save(&db, update).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store.get(&db, &id).await.unwrap().unwrap()["name"],
        "second"
    );

    // Creating over an existing id without a revision is a conflict too.
    assert!(matches!(
        store.save(&db, json!({"_id": id, "name": "dup"})).await,
        Err(StoreError::Conflict)
    ));
    // A revision for a document that does not exist is a conflict.
    assert!(matches!(
        store
            .save(&db, json!({"_id": new_id(), "_rev": "1-abc"}))
            .await,
        Err(StoreError::Conflict)
    ));

    // Explicit ids are kept.
    let named = store
        .save(&db, json!({"_id": "configs_fax", "max_outbound": 3}))
        .await
        .unwrap();
    assert_eq!(named["_id"], "configs_fax");

    // Delete needs the current revision.
    assert!(matches!(
        store.delete(&db, &id, &rev1).await,
        Err(StoreError::Conflict)
    ));
    store.delete(&db, &id, &rev2).await.unwrap();
    assert!(store.get(&db, &id).await.unwrap().is_none());
    assert!(matches!(
        store.delete(&db, &new_id(), "1-abc").await,
        Err(StoreError::NotFound(_))
    ));
    // A deleted document can be created again.
    let again = store
        .save(&db, json!({"_id": id, "name": "reborn"}))
        .await
        .unwrap();
    assert_eq!(again["name"], "reborn");

    store.delete_db(&db).await.unwrap();
}

/// `docs_with_prefix`: exactly the live documents whose id starts with the prefix, in id
/// order, with `_id` and `_rev` and no attachment stubs; a missing database is reported.
async fn documents_are_listed_by_id_prefix(store: SharedStore) {
    let db = Db::Modb(AccountId::generate(), YearMonth::now());
    assert!(matches!(
        store.docs_with_prefix(&db, "x-").await,
        Err(StoreError::NoDatabase(_))
    ));
    store.ensure_db(&db).await.unwrap();
    for id in [
        "202612-abc",
        "202612-abc-queued",
        "202612-abc-page-001-0002",
        "202612-abc-page-001-0010",
        "202612-abcd-queued",
        "202612-ab",
        "202612-abc-gone",
    ] {
        store.save(&db, json!({"_id": id, "n": id})).await.unwrap();
    }
    let gone = store.get(&db, "202612-abc-gone").await.unwrap().unwrap();
    store
        .delete(&db, "202612-abc-gone", &rev(&gone))
        .await
        .unwrap();
    let saved = store.get(&db, "202612-abc-queued").await.unwrap().unwrap();
    store
        .put_attachment(
            &db,
            "202612-abc-queued",
            Some(&rev(&saved)),
            "a.txt",
            "text/plain",
            bytes_stream(b"hi".to_vec()),
        )
        .await
        .unwrap();
    let docs = store.docs_with_prefix(&db, "202612-abc-").await.unwrap();
    let ids: Vec<&str> = docs.iter().map(|d| d["_id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "202612-abc-page-001-0002",
            "202612-abc-page-001-0010",
            "202612-abc-queued"
        ]
    );
    for d in &docs {
        assert_eq!(d["n"], d["_id"], "{d}");
        assert!(d["_rev"].as_str().is_some(), "{d}");
        assert!(d.get("_attachments").is_none(), "{d}");
    }
    assert!(
        store
            .docs_with_prefix(&db, "nothing-")
            .await
            .unwrap()
            .is_empty()
    );
}

async fn missing_databases_are_reported(store: SharedStore) {
    let db = Db::Account(AccountId::generate());
    assert!(!store.db_exists(&db).await.unwrap());
    assert!(matches!(
        store.get(&db, "x").await,
        Err(StoreError::NoDatabase(_))
    ));
    assert!(matches!(
        store.save(&db, json!({"a": 1})).await,
        Err(StoreError::NoDatabase(_))
    ));
    // Reading must not create it.
    assert!(!store.db_exists(&db).await.unwrap());
    store.ensure_db(&db).await.unwrap();
    assert!(store.db_exists(&db).await.unwrap());
    store.delete_db(&db).await.unwrap();
    assert!(!store.db_exists(&db).await.unwrap());
    store.delete_db(&db).await.unwrap(); // missing is fine
    store.ping().await.unwrap();
}

async fn attachments_round_trip_with_stub_semantics(store: SharedStore) {
    let account = AccountId::generate();
    let db = Db::Modb(account, YearMonth::now());
    store.ensure_db(&db).await.unwrap();
    let id = format!("{}-{}", YearMonth::now(), new_id());

    // No revision: the document is created to hold the attachment.
    let pdf = b"%PDF-1.4 tiny".to_vec();
    let rev1 = store
        .put_attachment(
            &db,
            &id,
            None,
            "original_file.pdf",
            "application/pdf",
            bytes_stream(pdf.clone()),
        )
        .await
        .unwrap();
    // A second attachment at the new revision.
    let tiff = vec![0x49u8, 0x49, 0x2a, 0x00, 1, 2, 3];
    let rev2 = store
        .put_attachment(
            &db,
            &id,
            Some(&rev1),
            "fax_file.tiff",
            "image/tiff",
            bytes_stream(tiff.clone()),
        )
        .await
        .unwrap();
    assert_ne!(rev1, rev2);
    // Stale revision.
    assert!(matches!(
        store
            .put_attachment(
                &db,
                &id,
                Some(&rev1),
                "x.bin",
                "application/octet-stream",
                bytes_stream(vec![1u8]),
            )
            .await,
        Err(StoreError::Conflict)
    ));

    let att = store
        .get_attachment(&db, &id, "original_file.pdf")
        .await
        .unwrap()
        .expect("attachment");
    assert_eq!(att.content_type, "application/pdf");
    assert_eq!(att.length, pdf.len() as u64);
    assert_eq!(read_all(att.body).await.unwrap(), pdf);
    assert!(
        store
            .get_attachment(&db, &id, "nope.pdf")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get_attachment(&db, &new_id(), "x")
            .await
            .unwrap()
            .is_none()
    );

    // The document lists both as stubs; saving it back with the stubs keeps them.
    let mut doc = store.get(&db, &id).await.unwrap().unwrap();
    let stubs = doc["_attachments"].as_object().expect("stubs").clone();
    assert_eq!(stubs.len(), 2);
    assert_eq!(stubs["fax_file.tiff"]["length"], tiff.len());
    assert_eq!(stubs["fax_file.tiff"]["content_type"], "image/tiff");
    doc["pvt_type"] = json!("fax");
    let saved = store.save(&db, doc).await.unwrap();
    let tiff_back = store
        .get_attachment(&db, &id, "fax_file.tiff")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read_all(tiff_back.body).await.unwrap(), tiff);

    // Removing one attachment.
    let rev4 = store
        .delete_attachment(&db, &id, &rev(&saved), "fax_file.tiff")
        .await
        .unwrap();
    let doc = store.get(&db, &id).await.unwrap().unwrap();
    assert_eq!(doc["_rev"], rev4.as_str());
    assert_eq!(doc["_attachments"].as_object().unwrap().len(), 1);
    assert!(
        store
            .get_attachment(&db, &id, "fax_file.tiff")
            .await
            .unwrap()
            .is_none()
    );

    // Saving without `_attachments` drops the rest, as CouchDB does.
    let mut bare = doc.clone();
    bare.as_object_mut().unwrap().remove("_attachments");
    store.save(&db, bare).await.unwrap();
    let doc = store.get(&db, &id).await.unwrap().unwrap();
    assert!(doc.get("_attachments").is_none(), "{doc}");
    assert!(
        store
            .get_attachment(&db, &id, "original_file.pdf")
            .await
            .unwrap()
            .is_none()
    );
    store.delete_db(&db).await.unwrap();
}

/// A deterministic pseudo-random stream of `total` bytes in 1 MiB chunks, produced lazily so
/// the upload itself is never one buffer.
fn generated_stream(total: usize, seed: u64) -> ByteStream {
    let chunk = 1 << 20;
    let chunks = total.div_ceil(chunk);
    Box::pin(futures_util::stream::iter(0..chunks).map(move |i| {
        let len = chunk.min(total - i * chunk);
        let mut x = seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut buf = Vec::with_capacity(len);
        while buf.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf.extend_from_slice(&x.to_le_bytes());
        }
        buf.truncate(len);
        Ok(bytes::Bytes::from(buf))
    }))
}

async fn sha256_of(mut s: ByteStream) -> (u64, String) {
    let mut h = sha2::Sha256::new();
    let mut n = 0u64;
    let mut max_chunk = 0usize;
    while let Some(c) = s.next().await {
        let c = c.expect("chunk");
        n += c.len() as u64;
        max_chunk = max_chunk.max(c.len());
        h.update(&c);
    }
    // Streamed, not delivered as one buffer.
    assert!(max_chunk < 16 << 20, "largest chunk {max_chunk} bytes");
    (n, hex::encode(h.finalize()))
}

async fn documents_are_saved_with_their_attachments_in_one_write(store: SharedStore) {
    let account = AccountId::generate();
    let db = Db::Modb(account, YearMonth::now());
    store.ensure_db(&db).await.unwrap();
    let id = format!("{}-{}", YearMonth::now(), new_id());
    let mut feed = store.subscribe(&db).await.unwrap();
    let tiff: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let pdf = b"%PDF-1.4 tiny".to_vec();
    let att = |name: &str, ct: &str, data: &[u8]| NewAttachment {
        name: name.into(),
        content_type: ct.into(),
        data: data.to_vec().into(),
    };
    let saved = store
        .save_with_attachments(
            &db,
            json!({"_id": id, "pvt_type": "fax", "folder": "outbox"}),
            vec![
                att("fax_file.tiff", "image/tiff", &tiff),
                att("original_file.pdf", "application/pdf", &pdf),
            ],
        )
        .await
        .unwrap();
    let rev1 = saved["_rev"].as_str().unwrap().to_string();
    assert!(rev1.starts_with("1-"), "one write, one revision: {rev1}");
    assert_eq!(saved["_attachments"]["fax_file.tiff"]["stub"], json!(true));
    // One change announced, for the revision holding both attachments.
    let change = tokio::time::timeout(Duration::from_secs(10), feed.recv())
        .await
        .expect("a change within 10 s")
        .unwrap();
    assert_eq!(
        (change.id.as_str(), change.rev.as_str()),
        (id.as_str(), rev1.as_str())
    );

    let doc = store.get(&db, &id).await.unwrap().expect("saved document");
    assert_eq!(doc["_rev"], json!(rev1));
    assert_eq!(doc["folder"], json!("outbox"));
    assert_eq!(
        doc["_attachments"]["fax_file.tiff"]["length"],
        json!(tiff.len())
    );
    for (name, ct, data) in [
        ("fax_file.tiff", "image/tiff", &tiff),
        ("original_file.pdf", "application/pdf", &pdf),
    ] {
        let got = store
            .get_attachment(&db, &id, name)
            .await
            .unwrap()
            .expect(name);
        assert_eq!(got.content_type, ct);
        assert_eq!(read_all(got.body).await.unwrap(), *data, "{name}");
    }

    // A stale revision writes nothing, attachments included.
    assert!(matches!(
        store
            .save_with_attachments(
                &db,
                json!({"_id": id, "_rev": "1-00000000000000000000000000000000"}),
                vec![att("other.bin", "application/octet-stream", b"x")],
            )
            .await,
        Err(StoreError::Conflict)
    ));
    assert!(
        store
            .get_attachment(&db, &id, "other.bin")
            .await
            .unwrap()
            .is_none()
    );

    // An update keeps the stubs it lists, replaces the attachment it gives, drops the rest.
    let mut doc = store.get(&db, &id).await.unwrap().unwrap();
    doc["_attachments"]
        .as_object_mut()
        .unwrap()
        .remove("original_file.pdf");
    doc["note"] = json!("second");
    let saved = store
        .save_with_attachments(
            &db,
            doc,
            vec![att("fax_file.tiff", "image/tiff", b"II*\0 replaced")],
        )
        .await
        .unwrap();
    assert!(saved["_rev"].as_str().unwrap().starts_with("2-"));
    let got = store
        .get_attachment(&db, &id, "fax_file.tiff")
        .await
        .unwrap()
        .expect("replaced attachment");
    assert_eq!(read_all(got.body).await.unwrap(), b"II*\0 replaced");
    assert!(
        store
            .get_attachment(&db, &id, "original_file.pdf")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.get(&db, &id).await.unwrap().unwrap()["note"],
        json!("second")
    );

    // A missing database is reported, not created.
    let gone = Db::Modb(AccountId::generate(), YearMonth::now());
    assert!(matches!(
        store
            .save_with_attachments(&gone, json!({"_id": "x"}), vec![att("a", "b/c", b"1")])
            .await,
        Err(StoreError::NoDatabase(_))
    ));
    store.delete_db(&db).await.unwrap();
}

async fn attachment_of_50_mb_streams_both_ways(store: SharedStore) {
    let db = Db::Account(AccountId::generate());
    store.ensure_db(&db).await.unwrap();
    let total = 50 * 1024 * 1024;
    let (_, expected) = sha256_of(generated_stream(total, 7)).await;
    let id = new_id();
    let started = Instant::now();
    store
        .put_attachment(
            &db,
            &id,
            None,
            "original_file.tiff",
            "image/tiff",
            generated_stream(total, 7),
        )
        .await
        .unwrap();
    let put = started.elapsed();
    let att = store
        .get_attachment(&db, &id, "original_file.tiff")
        .await
        .unwrap()
        .expect("attachment");
    assert_eq!(att.length, total as u64);
    let (len, digest) = sha256_of(att.body).await;
    eprintln!(
        "{:?}: 50 MB attachment put {:?}, put+get {:?}",
        store.backend(),
        put,
        started.elapsed()
    );
    assert_eq!(len, total as u64);
    assert_eq!(digest, expected);
    store.delete_db(&db).await.unwrap();
}

/// A queued fax document as the API will write it.
fn job(account: &AccountId, status: &str, modified: i64, retry_after: i64) -> Value {
    json!({
        "_id": new_id(),
        "pvt_type": "fax",
        "pvt_account_id": account.as_str(),
        "pvt_account_db": "faxes",
        "pvt_job_status": status,
        "pvt_created": modified - 10,
        "pvt_modified": modified,
        "retry_after": retry_after,
        "attempts": 0,
        "retries": 3,
        "to_number": "+15551230000",
        "from_number": "+15557650000",
    })
}

async fn queue_views_select_and_order_jobs(store: SharedStore) {
    store.ensure_db(&Db::Faxes).await.unwrap();
    let a = AccountId::generate();
    let b = AccountId::generate();
    let t = gregorian_now();
    // Node names unique to this run: the CouchDB server may hold jobs of earlier runs.
    let node1 = format!("faxd@{}", &new_id()[..12]);
    let node2 = format!("faxd@{}", &new_id()[..12]);
    // Account a: three pending with different due times, one locked, one processing on
    // node1, one completed, one deleted pending, and a faxbox (not a fax).
    let p_late = job(&a, "pending", t, 600); // due t+600
    let p_early = job(&a, "pending", t + 100, 0); // due t+100
    let p_mid = job(&a, "pending", t - 100, 300); // due t+200
    let locked = job(&a, "locked", t, 0);
    let mut processing = job(&a, "processing", t, 0);
    processing["pvt_job_node"] = json!(node1);
    let completed = job(&a, "completed", t, 0);
    let mut deleted = job(&a, "pending", t - 1000, 0);
    deleted["pvt_deleted"] = json!(true);
    let faxbox = json!({"_id": new_id(), "pvt_type": "faxbox", "pvt_account_id": a.as_str(), "pvt_job_status": "pending"});
    let mut b_processing = job(&b, "processing", t, 0);
    b_processing["pvt_job_node"] = json!(node2);
    let b_pending = job(&b, "pending", t, 0);
    for doc in [
        &p_late,
        &p_early,
        &p_mid,
        &locked,
        &processing,
        &completed,
        &deleted,
        &faxbox,
        &b_processing,
        &b_pending,
    ] {
        store.save(&Db::Faxes, doc.clone()).await.unwrap();
    }
    let id = |d: &Value| d["_id"].as_str().unwrap().to_string();

    let sched = store.schedule_accounts().await.unwrap();
    let count = |acc: &AccountId| sched.iter().find(|(x, _)| x == acc).map(|(_, n)| *n);
    assert_eq!(count(&a), Some(4), "{sched:?}"); // 3 pending + 1 locked
    assert_eq!(count(&b), Some(1));
    // The scheduler's question: the same accounts, in order, without the counts.
    let mut accounts: Vec<AccountId> = sched.iter().map(|(a, _)| a.clone()).collect();
    accounts.sort();
    assert_eq!(store.accounts_with_work().await.unwrap(), accounts);

    let due = store.jobs_by_account(&a, 10).await.unwrap();
    let ids: Vec<String> = due.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, vec![id(&p_early), id(&p_mid), id(&p_late)]);
    assert_eq!(due[0].due(), t + 100);
    assert_eq!(due[1].retry_after, 300);
    assert_eq!(due[0].status, Some(JobStatus::Pending));
    assert_eq!(due[0].to.as_deref(), Some("+15551230000"));
    assert_eq!(store.jobs_by_account(&a, 1).await.unwrap().len(), 1);

    let locked_rows = store.locked_jobs_by_account(&a).await.unwrap();
    assert_eq!(locked_rows.len(), 1);
    assert_eq!(locked_rows[0].id, id(&locked));

    let on_node1 = store.processing_by_node(Some(&node1)).await.unwrap();
    assert_eq!(
        on_node1.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec![id(&processing)]
    );
    assert_eq!(on_node1[0].node.as_deref(), Some(node1.as_str()));
    let all = store.processing_by_node(None).await.unwrap();
    assert!(all.iter().any(|r| r.id == id(&processing)));
    assert!(all.iter().any(|r| r.id == id(&b_processing)));

    // Moving a job out of pending takes it out of the due list at once.
    let mut doc = store.get(&Db::Faxes, &id(&p_early)).await.unwrap().unwrap();
    doc["pvt_job_status"] = json!("locked");
    store.save(&Db::Faxes, doc).await.unwrap();
    let due = store.jobs_by_account(&a, 10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!(store.locked_jobs_by_account(&a).await.unwrap().len(), 2);
}

async fn stale_jobs_are_selected_by_state_and_age(store: SharedStore) {
    store.ensure_db(&Db::Faxes).await.unwrap();
    let a = AccountId::generate();
    let b = AccountId::generate();
    let t = gregorian_now();
    // Attaching for long (two accounts), attaching since just now, pending for long, and a
    // deleted attaching job.
    let old_a = job(&a, "attaching_files", t - 500, 0);
    let older_b = job(&b, "attaching_files", t - 900, 0);
    let fresh = job(&a, "attaching_files", t, 0);
    let pending = job(&a, "pending", t - 900, 0);
    let mut deleted = job(&a, "attaching_files", t - 900, 0);
    deleted["pvt_deleted"] = json!(true);
    for doc in [&old_a, &older_b, &fresh, &pending, &deleted] {
        store.save(&Db::Faxes, doc.clone()).await.unwrap();
    }
    let ours = [&old_a, &older_b, &fresh, &pending, &deleted]
        .map(|d| d["_id"].as_str().unwrap().to_string());
    // The CouchDB server may hold jobs of other runs: look at this test's only.
    let stale = store
        .stale_jobs(JobStatus::AttachingFiles, t - 60)
        .await
        .unwrap();
    let ids: Vec<String> = stale
        .iter()
        .filter(|r| ours.contains(&r.id))
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(ids, vec![ours[1].clone(), ours[0].clone()], "oldest first");
    let row = stale.iter().find(|r| r.id == ours[0]).unwrap();
    assert_eq!(row.account_id, a.as_str());
    assert_eq!(row.modified, t - 500);
    // The limit is inclusive; a later limit takes in the fresh one.
    let at = store
        .stale_jobs(JobStatus::AttachingFiles, t - 500)
        .await
        .unwrap();
    assert!(at.iter().any(|r| r.id == ours[0]));
    let all = store
        .stale_jobs(JobStatus::AttachingFiles, t)
        .await
        .unwrap();
    assert!(all.iter().any(|r| r.id == ours[2]));
    assert!(!all.iter().any(|r| r.id == ours[3] || r.id == ours[4]));
    let pend = store.stale_jobs(JobStatus::Pending, t).await.unwrap();
    assert!(pend.iter().any(|r| r.id == ours[3]));
}

/// `queue_depth` counts live fax jobs by status; deleted jobs and other types are left out.
/// The CouchDB server is shared with this binary's other tests, which add and remove jobs
/// meanwhile: the count is compared as a difference around this test's own writes, and a
/// measurement disturbed by another test is taken again (a wrong count never matches).
async fn queue_depth_counts_live_jobs_by_status(store: SharedStore) {
    store.ensure_db(&Db::Faxes).await.unwrap();
    let depth = async || -> std::collections::HashMap<String, u64> {
        store.queue_depth().await.unwrap().into_iter().collect()
    };
    let mut seen = Vec::new();
    for _attempt in 0..5 {
        let a = AccountId::generate();
        let t = gregorian_now();
        let mut deleted = job(&a, "pending", t, 0);
        deleted["pvt_deleted"] = json!(true);
        let other = json!({"_id": new_id(), "pvt_type": "faxbox", "pvt_job_status": "pending"});
        let docs = [
            job(&a, "pending", t, 0),
            job(&a, "pending", t, 0),
            job(&a, "processing", t, 0),
            job(&a, "attaching_files", t, 0),
            deleted,
            other,
        ];
        let before = depth().await;
        let mut saved = Vec::new();
        for d in &docs {
            saved.push(store.save(&Db::Faxes, d.clone()).await.unwrap());
        }
        let after = depth().await;
        for d in saved {
            store
                .delete(&Db::Faxes, d["_id"].as_str().unwrap(), &rev(&d))
                .await
                .unwrap();
        }
        let delta = |s: &str| {
            after.get(s).copied().unwrap_or(0) as i64 - before.get(s).copied().unwrap_or(0) as i64
        };
        let got = [
            delta("pending"),
            delta("processing"),
            delta("attaching_files"),
            delta("completed"),
        ];
        if got == [2, 1, 1, 0] {
            return;
        }
        seen.push(got);
    }
    panic!("queue_depth never counted this test's jobs right: {seen:?} (want [2, 1, 1, 0])");
}

async fn queue_listings_page_newest_first(store: SharedStore) {
    store.ensure_db(&Db::Faxes).await.unwrap();
    let a = AccountId::generate();
    let faxbox = new_id();
    let t = gregorian_now();
    let mut ids = Vec::new();
    for i in 0..7i64 {
        let mut doc = job(&a, if i % 2 == 0 { "pending" } else { "failed" }, t, 0);
        doc["pvt_created"] = json!(t - 1000 + i * 10);
        if i < 5 {
            doc["faxbox_id"] = json!(faxbox);
        }
        ids.push(doc["_id"].as_str().unwrap().to_string());
        store.save(&Db::Faxes, doc).await.unwrap();
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();

    // Page through all of the account's jobs, 3 at a time.
    let mut seen = Vec::new();
    let mut page = Page::first(3);
    loop {
        let listing = store
            .list_by_account_state(&a, None, CreatedRange::all(), page.clone())
            .await
            .unwrap();
        assert!(listing.rows.len() <= 3);
        seen.extend(listing.rows.iter().map(|r| r.id.clone()));
        match listing.next_start_key {
            Some(k) => page.start_key = Some(k),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);

    // By status.
    let pending = store
        .list_by_account_state(
            &a,
            Some(JobStatus::Pending),
            CreatedRange::all(),
            Page::first(50),
        )
        .await
        .unwrap();
    assert_eq!(pending.rows.len(), 4);
    assert!(pending.next_start_key.is_none());
    assert!(
        pending
            .rows
            .iter()
            .all(|r| r.status == Some(JobStatus::Pending))
    );

    // Created range: only the 3 oldest.
    let range = CreatedRange {
        from: t - 1000,
        to: t - 1000 + 20,
    };
    let old = store
        .list_by_account_state(&a, None, range, Page::first(50))
        .await
        .unwrap();
    assert_eq!(
        old.rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec![ids[2].clone(), ids[1].clone(), ids[0].clone()]
    );

    // By faxbox, with and without status.
    let boxed = store
        .list_by_faxbox_state(&faxbox, None, CreatedRange::all(), Page::first(50))
        .await
        .unwrap();
    assert_eq!(boxed.rows.len(), 5);
    let boxed_failed = store
        .list_by_faxbox_state(
            &faxbox,
            Some(JobStatus::Failed),
            CreatedRange::all(),
            Page::first(50),
        )
        .await
        .unwrap();
    assert_eq!(
        boxed_failed
            .rows
            .iter()
            .map(|r| r.id.clone())
            .collect::<Vec<_>>(),
        vec![ids[3].clone(), ids[1].clone()]
    );
    assert!(matches!(
        store
            .list_by_account_state(
                &a,
                None,
                CreatedRange::all(),
                Page {
                    limit: 5,
                    start_key: Some("not-a-key!".into())
                }
            )
            .await,
        Err(StoreError::Invalid(_))
    ));
}

async fn faxbox_email_addresses_resolve(store: SharedStore) {
    store.ensure_db(&Db::Faxes).await.unwrap();
    let a = AccountId::generate();
    let box_id = new_id();
    let generated = format!("{}.fax.example.net", &new_id()[..8]);
    let custom = format!("fax-{}.customer.example", &new_id()[..6]);
    store
        .save(
            &Db::Faxes,
            json!({
                "_id": box_id,
                "pvt_type": "faxbox",
                "pvt_account_id": a.as_str(),
                "pvt_smtp_email_address": generated,
                "custom_smtp_email_address": custom,
                "name": "front desk",
            }),
        )
        .await
        .unwrap();
    for address in [generated.clone(), custom.to_uppercase()] {
        let found = store
            .faxbox_by_email(&address)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{address} not found"));
        assert_eq!(found.account_id, a);
        assert_eq!(found.faxbox_id, box_id);
    }
    assert!(
        store
            .faxbox_by_email("nobody.fax.example.net")
            .await
            .unwrap()
            .is_none()
    );
}

async fn modb_listings_span_months_and_filters(store: SharedStore) {
    let a = AccountId::generate();
    let this = YearMonth::now();
    let last = this.prev();
    let t_this = this.start_gregorian() + 60;
    let t_last = last.start_gregorian() + 60;
    for m in [this, last] {
        store.ensure_db(&Db::Modb(a.clone(), m)).await.unwrap();
    }
    let mut expected_outbox = Vec::new();
    let mut expected_inbox = Vec::new();
    // Two months, each with 3 outbox faxes (two from faxbox "fb1", owner "u1") and 2 inbox
    // faxes (one without a folder field), plus a non-fax doc and a deleted fax.
    for (m, t0) in [(last, t_last), (this, t_this)] {
        let db = Db::Modb(a.clone(), m);
        for i in 0..3i64 {
            let id = format!("{m}-{}", new_id());
            let mut doc = json!({"_id": id, "pvt_type": "fax", "folder": "outbox",
                "pvt_created": t0 + i, "to_number": "+15550100", "from_number": "+15550200",
                "pvt_job_status": "completed"});
            if i < 2 {
                doc["faxbox_id"] = json!("fb1");
                doc["owner_id"] = json!("u1");
            }
            store.save(&db, doc).await.unwrap();
            expected_outbox.push(id);
        }
        for i in 0..2i64 {
            let id = format!("{m}-{}", new_id());
            let mut doc = json!({"_id": id, "pvt_type": "fax", "pvt_created": t0 + 10 + i});
            if i == 0 {
                doc["folder"] = json!("inbox");
            }
            store.save(&db, doc).await.unwrap();
            expected_inbox.push(id);
        }
        store
            .save(
                &db,
                json!({"_id": format!("{m}-{}", new_id()), "pvt_type": "fax_smtp_log", "pvt_created": t0}),
            )
            .await
            .unwrap();
        store
            .save(
                &db,
                json!({"_id": format!("{m}-{}", new_id()), "pvt_type": "fax", "folder": "outbox",
                    "pvt_deleted": true, "pvt_created": t0}),
            )
            .await
            .unwrap();
    }
    expected_outbox.reverse();
    expected_inbox.reverse();
    let everything = CreatedRange {
        from: t_last - 3600,
        to: faxd::time::now_gregorian() + 3600,
    };

    // Page through the outbox 4 at a time across both months.
    let mut seen = Vec::new();
    let mut page = Page::first(4);
    loop {
        let l = store
            .modb_list(
                &a,
                &ModbFilter::Folder(Folder::Outbox),
                everything,
                page.clone(),
            )
            .await
            .unwrap();
        seen.extend(l.rows.iter().map(|r| r.id.clone()));
        assert!(l.rows.iter().all(|r| listed(r)["folder"] == "outbox"));
        match l.next_start_key {
            Some(k) => page.start_key = Some(k),
            None => break,
        }
    }
    assert_eq!(seen, expected_outbox);

    let inbox = store
        .modb_list(
            &a,
            &ModbFilter::Folder(Folder::Inbox),
            everything,
            Page::first(50),
        )
        .await
        .unwrap();
    assert_eq!(
        inbox.rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        expected_inbox
    );
    let by_box = store
        .modb_list(
            &a,
            &ModbFilter::Faxbox("fb1".into(), Folder::Outbox),
            everything,
            Page::first(50),
        )
        .await
        .unwrap();
    assert_eq!(by_box.rows.len(), 4);
    assert!(by_box.rows.iter().all(|r| listed(r)["faxbox_id"] == "fb1"));
    let by_owner_inbox = store
        .modb_list(
            &a,
            &ModbFilter::Owner("u1".into(), Folder::Inbox),
            everything,
            Page::first(50),
        )
        .await
        .unwrap();
    assert!(by_owner_inbox.rows.is_empty());

    // Only this month.
    let recent = CreatedRange {
        from: this.start_gregorian(),
        to: faxd::time::now_gregorian() + 3600,
    };
    let l = store
        .modb_list(
            &a,
            &ModbFilter::Folder(Folder::Outbox),
            recent,
            Page::first(50),
        )
        .await
        .unwrap();
    assert_eq!(l.rows.len(), 3);
    assert!(l.rows.iter().all(|r| r.id.starts_with(&this.to_string())));
    for m in [this, last] {
        store.delete_db(&Db::Modb(a.clone(), m)).await.unwrap();
    }
}

async fn change_feed_pushes_writes(store: SharedStore) {
    let db = Db::Account(AccountId::generate());
    store.ensure_db(&db).await.unwrap();
    let mut feed = store.subscribe(&db).await.unwrap();
    let mut worst = Duration::ZERO;
    for i in 0..5 {
        let written = Instant::now();
        let saved = store.save(&db, json!({"n": i})).await.unwrap();
        let id = saved["_id"].as_str().unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let change = tokio::time::timeout(left, feed.recv())
                .await
                .unwrap_or_else(|_| panic!("no change for {id} within 5 s"))
                .expect("feed open");
            if change.id == id {
                assert_eq!(change.db, db);
                assert_eq!(change.rev, saved["_rev"].as_str().unwrap());
                assert!(!change.deleted);
                worst = worst.max(written.elapsed());
                break;
            }
        }
    }
    eprintln!(
        "{:?}: worst write-to-feed latency {worst:?}",
        store.backend()
    );
    // Deletions are announced too.
    let doc = store.save(&db, json!({"n": "gone"})).await.unwrap();
    let id = doc["_id"].as_str().unwrap().to_string();
    store.delete(&db, &id, &rev(&doc)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let c = tokio::time::timeout(left, feed.recv())
            .await
            .expect("deletion announced")
            .unwrap();
        if c.id == id && c.deleted {
            break;
        }
    }
    store.delete_db(&db).await.unwrap();
}

async fn concurrent_updates_never_lose_a_write(store: SharedStore) {
    let db = Db::Account(AccountId::generate());
    store.ensure_db(&db).await.unwrap();
    let doc = store
        .save(&db, json!({"_id": "counter", "n": 0}))
        .await
        .unwrap();
    assert_eq!(doc["n"], 0);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut wins = 0u64;
            let mut conflicts = 0u64;
            while wins < 5 {
                let mut d = store.get(&db, "counter").await.unwrap().unwrap();
                d["n"] = json!(d["n"].as_u64().unwrap() + 1);
                match store.save(&db, d).await {
                    Ok(_) => wins += 1,
                    Err(StoreError::Conflict) => conflicts += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            (wins, conflicts)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap().0;
    }
    // Each task stops after its fifth accepted write: 40 accepted increments in all, so a lost
    // update (a write accepted over a stale revision) shows as a counter below 40.
    let d = store.get(&db, "counter").await.unwrap().unwrap();
    assert_eq!(d["n"].as_u64().unwrap(), 40, "{total} writes accepted");
    store.delete_db(&db).await.unwrap();
}

/// A listing row as clients get it.
fn listed(r: &faxd::store::ModbRow) -> serde_json::Value {
    serde_json::from_str(&r.listing).expect("a listing row is a JSON object")
}
