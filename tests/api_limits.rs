//! Size bounds of the REST API over real HTTP: the JSON part of a multipart fax submission has
//! the cap of a JSON body, stored documents are bounded by their schemas (unknown keys
//! included), and faxbox listings return summary rows, not whole documents.

mod api_common;

use api_common::{Api, PDF, test_options};
use faxd::config::ApiSection;
use reqwest::StatusCode;
use serde_json::json;

fn options() -> ApiSection {
    ApiSection {
        max_body_bytes: 100_000,
        max_upload_bytes: 2_000_000,
        ..test_options()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_part_of_a_submission_has_the_json_cap() {
    let (store, dir) = api_common::embedded().await;
    let api = Api::start(store, dir, options()).await;
    let a = api.root_tenant().await;
    let path = format!("/v2/accounts/{}/faxes/outgoing", a.id);
    // The caller id is a number of the account.
    let r = api
        .put(
            &format!("/v2/accounts/{}/callflows", a.id),
            &a.token,
            json!({"numbers": ["+14155550100"], "flow": {"module": "receive_fax", "data": {}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let job = |notes: usize| {
        json!({"to_number": "+14155550199", "from_number": "+14155550100",
               "notes": "n".repeat(notes)})
    };
    // Over the JSON cap, although the whole upload is under the upload cap.
    let r = api.send_multipart(&path, &a.token, job(200_000), PDF).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert_eq!(r.body["error"], "413");
    assert_eq!(r.data()["file"]["maxSize"]["target"], 100_000);
    // Under the JSON cap but over what a stored fax job may hold.
    let r = api.send_multipart(&path, &a.token, job(70_000), PDF).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.data()["document"]["maxBytes"]["target"], 65_536);
    // A job of ordinary size goes through.
    let r = api.send_multipart(&path, &a.token, job(100), PDF).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faxboxes_are_bounded_and_listed_as_summaries() {
    let (store, dir) = api_common::embedded().await;
    let api = Api::start(store, dir, options()).await;
    let a = api.root_tenant().await;
    let base = format!("/v2/accounts/{}/faxboxes", a.id);
    // A field past its maxLength, and unknown keys past the document bound: 400.
    let r = api
        .put(
            &base,
            &a.token,
            json!({"name": "Sales", "caller_name": "c".repeat(500)}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.data()["caller_name"]["maxLength"]["target"], 128);
    let r = api
        .put(
            &base,
            &a.token,
            json!({"name": "Sales", "junk": "j".repeat(90_000)}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.data()["document"]["maxBytes"]["target"], 65_536);
    let r = api
        .put(
            &base,
            &a.token,
            json!({"name": "Sales", "caller_name": "ACME Sales", "flags": ["x"],
                   "notes": "k".repeat(20_000),
                   "notifications": {"outbound": {"email": {"send_to": ["ops@example.com"]}}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.data()["id"].as_str().unwrap().to_string();
    // The listing row: Kazoo's listing keys and the addresses, not the whole document.
    let r = api.get(&base, &a.token).await;
    assert_eq!(r.status, StatusCode::OK);
    let row = &r.data()[0];
    assert_eq!(row["id"], id.as_str());
    assert_eq!(row["name"], "Sales");
    assert_eq!(row["flags"], json!(["x"]));
    assert_eq!(row["caller_name"], "ACME Sales");
    assert!(row["created"].is_i64(), "{row}");
    assert!(row["smtp_email_address"].is_string(), "{row}");
    assert!(row.get("notes").is_none(), "{row}");
    assert!(row.get("notifications").is_none(), "{row}");
    // The whole document is one GET away.
    let r = api.get(&format!("{base}/{id}"), &a.token).await;
    assert_eq!(r.data()["notes"].as_str().map(str::len), Some(20_000));
    assert!(r.data()["notifications"].is_object());
    api.stop().await;
}
