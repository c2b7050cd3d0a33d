//! Background intake over real HTTP on both storage backends: a submission is answered as
//! soon as the job is recorded (`attaching_files`), its URL document is fetched afterwards
//! from a real loopback document server (a slow one holds the fetch while the API answers),
//! and the job becomes `pending`, or ends `failed` with the reason the API shows. A fax of a
//! faxbox with an outbound callback shows its `queued` webhook.

#[macro_use]
mod api_common;

use std::time::Duration;

use api_common::{Api, Dir, PDF, gated_document_server, intake_done, poll, test_options};
use faxd::ids::Db;
use faxd::store::SharedStore;
use reqwest::StatusCode;
use serde_json::json;

both_backends!(
    a_url_document_is_fetched_after_the_answer,
    a_url_that_cannot_be_fetched_fails_the_job_with_the_reason,
    a_queued_fax_of_a_hooked_faxbox_shows_its_queued_webhook,
);

/// A fax queued through a faxbox with an outbound callback shows its `queued` webhook (not
/// delivered yet: no notifier runs here) under `_read_only.webhooks`; one through a faxbox
/// without a callback shows none.
async fn a_queued_fax_of_a_hooked_faxbox_shows_its_queued_webhook(store: SharedStore, dir: Dir) {
    let api = Api::start(store.clone(), dir, test_options()).await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    api.allow_any_caller_id(&root, &a).await;
    let boxes = format!("/v2/accounts/{}/faxboxes", a.id);
    let mut sent = Vec::new();
    for callback in [
        Some(json!({"url": "https://hooks.example.net/fax", "secret": "whsec-1"})),
        None,
    ] {
        let mut fb = json!({"name": format!("box {}", sent.len()), "caller_id": "+14155550100"});
        if let Some(cb) = callback {
            fb["notifications"] = json!({"outbound": {"callback": cb}});
        }
        let r = api.put(&boxes, &a.token, fb).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let fb = r.data()["id"].as_str().unwrap().to_string();
        let r = api
            .send_multipart(
                &format!("{boxes}/{fb}/faxes"),
                &a.token,
                json!({"to_number": "+14155550123"}),
                PDF,
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        sent.push(r.data()["id"].as_str().unwrap().to_string());
    }
    let faxes = format!("/v2/accounts/{}/faxes", a.id);
    let r = api
        .get(&format!("{faxes}/outgoing/{}", sent[0]), &a.token)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let hooks = r.data()["_read_only"]["webhooks"].clone();
    assert_eq!(hooks.as_array().map(Vec::len), Some(1), "{}", r.body);
    assert_eq!(hooks[0]["event"], "queued", "{hooks}");
    assert_eq!(hooks[0]["state"], "pending", "{hooks}");
    assert_eq!(hooks[0]["attempts"], 0, "{hooks}");
    assert_eq!(hooks[0]["sequence"], 0, "{hooks}");
    assert!(!r.body.to_string().contains("whsec-1"), "{}", r.body);
    let r = api
        .get(&format!("{faxes}/outgoing/{}", sent[1]), &a.token)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.data()["_read_only"].get("webhooks").is_none(),
        "{}",
        r.body
    );
    api.stop().await;
}

async fn a_url_document_is_fetched_after_the_answer(store: SharedStore, dir: Dir) {
    let api = Api::start(store.clone(), dir, test_options()).await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    api.allow_any_caller_id(&root, &a).await;
    let faxes = format!("/v2/accounts/{}/faxes", a.id);
    let (docs, open, mut arrived) = gated_document_server().await;
    let r = api
        .put(
            &faxes,
            &a.token,
            json!({"from_number": "+14155550100", "to_number": "+14155550123",
                   "document": {"url": format!("{docs}/slow.pdf")}}),
        )
        .await;
    // Answered while the document server still holds the document.
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["message"], "processing fax attachments");
    assert_eq!(r.data()["status"], "attaching_files", "{}", r.body);
    let id = r.data()["id"].as_str().unwrap().to_string();
    tokio::time::timeout(Duration::from_secs(30), arrived.wait_for(|n| *n >= 1))
        .await
        .expect("the document is fetched after the answer")
        .expect("server");
    // While the fetch waits, the job is listed and shown as attaching files.
    let r = api.get(&format!("{faxes}/outgoing/{id}"), &a.token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.data()["status"], "attaching_files", "{}", r.body);
    let r = api.get(&format!("{faxes}/outgoing"), &a.token).await;
    let row = r
        .data()
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["id"] == id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{id} not listed: {}", r.body));
    assert_eq!(row["status"], "attaching_files");
    let stored = store.get(&Db::Faxes, &id).await.unwrap().unwrap();
    assert!(stored.get("_attachments").is_none(), "{stored}");
    // The document comes in: stored, converted, queued.
    open.send(true).expect("gate");
    let done = intake_done(&api, &a, &id).await;
    assert_eq!(done["status"], "pending", "{done}");
    assert_eq!(done["pages"], 1, "{done}");
    let stored = store.get(&Db::Faxes, &id).await.unwrap().unwrap();
    let att = store
        .get_attachment(&Db::Faxes, &id, "original_file.pdf")
        .await
        .unwrap()
        .expect("original stored");
    assert_eq!(faxd::store::read_all(att.body).await.unwrap(), PDF);
    assert_eq!(stored["pvt_job_status"], "pending");
    // A multipart upload is answered once stored, and converted in the background too.
    let r = api
        .send_multipart(
            &faxes,
            &a.token,
            json!({"from_number": "+14155550100", "to_number": "+14155550124"}),
            PDF,
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let up = r.data()["id"].as_str().unwrap().to_string();
    let stored = store.get(&Db::Faxes, &up).await.unwrap().unwrap();
    assert!(
        stored["_attachments"]["original_file.pdf"].is_object(),
        "the original is stored with the job: {stored}"
    );
    assert_eq!(intake_done(&api, &a, &up).await["pages"], 1);
    api.stop().await;
}

async fn a_url_that_cannot_be_fetched_fails_the_job_with_the_reason(store: SharedStore, dir: Dir) {
    let api = Api::start(store.clone(), dir, test_options()).await;
    let root = api.root_tenant().await;
    let a = api.child_tenant(&root).await;
    api.allow_any_caller_id(&root, &a).await;
    let faxes = format!("/v2/accounts/{}/faxes", a.id);
    // A loopback port nobody listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let r = api
        .put(
            &faxes,
            &a.token,
            json!({"from_number": "+14155550100", "to_number": "+14155550125",
                   "document": {"url": format!("http://{dead}/doc.pdf")}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.data()["status"], "attaching_files", "{}", r.body);
    let id = r.data()["id"].as_str().unwrap().to_string();
    let done = intake_done(&api, &a, &id).await;
    assert_eq!(done["status"], "failed", "{done}");
    let why = done["tx_result"]["result_text"]
        .as_str()
        .unwrap_or_default();
    assert!(!why.is_empty(), "a reason: {done}");
    assert_eq!(done["tx_result"]["success"], false);
    // It notifies as a fax that failed its last attempt does (mail and webhook).
    assert_eq!(
        done["_read_only"]["notifications"]["event"], "outbound_failed",
        "{done}"
    );
    // Out of the queue: never runnable, shown in the outbox listing with its reason.
    poll(
        "the job leaves the queue",
        Duration::from_secs(30),
        || async {
            let r = api.get(&format!("{faxes}/outgoing/{id}"), &a.token).await;
            (r.status == StatusCode::NOT_FOUND).then_some(())
        },
    )
    .await;
    let list = api.get(&format!("{faxes}/outbox"), &a.token).await;
    let row = list
        .data()
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["id"] == done["id"])
        .cloned()
        .unwrap_or_else(|| panic!("not in the outbox: {}", list.body));
    assert_eq!(row["tx_result"]["result_text"], why);
    assert_eq!(row["status"], "failed");
    api.stop().await;
}
