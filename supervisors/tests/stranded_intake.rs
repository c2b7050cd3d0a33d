//! No job stays in `attaching_files`: `faxd` is killed with SIGKILL while two submissions
//! (answered 202 once recorded) are downloading their `document.url` from a loopback server (loopback allowed by
//! `FAXD_API_URL_ALLOW_PRIVATE`, as a test set-up only), which leaves both jobs in
//! `attaching_files`. A new `faxd` on the same data directory finds them once they are older
//! than an intake can take (fetch + conversion time limits): the job whose document can
//! still be fetched is fetched again and sent (`completed`); the one whose URL now answers
//! 404 ends `failed` with that reason — neither lost, neither left behind.

mod common;
mod faults;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use faults::*;
use serde_json::{Value, json};

/// Submits a fax whose document is at `url`; the answer (or the error when the node dies).
async fn submit_url(
    http: reqwest::Client,
    faxes: String,
    token: String,
    url: String,
) -> Result<reqwest::StatusCode, reqwest::Error> {
    let body = json!({"data": {
        "from_number": "+15551230000",
        "to_number": "+15557654321",
        "retries": 1,
        "document": {"url": url, "method": "get"},
    }});
    let r = http
        .put(&faxes)
        .header("X-Auth-Token", token)
        .json(&body)
        .send()
        .await?;
    Ok(r.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_a_download_cut_by_kill_9_are_resumed_or_failed_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let docs = DocServer::start(faxd::outbound::docs::blank_tiff(1), "image/tiff");
    let mut env = Node::env_for(dir.path());
    for (k, v) in [
        ("FAXD_API_URL_ALLOW_PRIVATE", "true"),
        // An intake may take 2 s of download and 3 s of conversion: older is stranded.
        ("FAXD_API_URL_TIMEOUT_S", "2"),
        ("FAXD_CONVERT_TIMEOUT_SECS", "3"),
        ("FAXD_OUTBOUND_SWEEP", "1"),
        ("FAXD_MEDIA_ENGINE", "script"),
    ] {
        env.push((k.into(), v.into()));
    }
    let path = dir.path().to_path_buf();
    let env1 = env.clone();
    let node = tokio::task::spawn_blocking(move || Node::start(&path, env1))
        .await
        .unwrap();
    let api = node.url("/v2");
    let http = reqwest::Client::new();
    let (token, account) = sender_login(&http, &api, dir.path()).await;
    let faxes = format!("{api}/accounts/{account}/faxes");

    // Two submissions whose downloads stall half way.
    let good = format!("{}/doc/fax.tiff", docs.base);
    let gone = format!("{}/gone/fax.tiff", docs.base);
    let mut pending = Vec::new();
    for url in [&good, &gone] {
        pending.push(tokio::spawn(submit_url(
            http.clone(),
            faxes.clone(),
            token.clone(),
            url.clone(),
        )));
    }
    poll_async("both downloads stalled", Duration::from_secs(30), || {
        let n = docs.stalled.load(Ordering::SeqCst);
        async move { (n == 2).then_some(()) }
    })
    .await;
    let outgoing = format!("{faxes}/outgoing");
    let ids: Vec<String> = poll_async(
        "two jobs in attaching_files",
        Duration::from_secs(30),
        || async {
            let list = get_json(&http, &outgoing, &token).await?;
            let ids: Vec<String> = list["data"]
                .as_array()?
                .iter()
                .filter(|j| j["status"] == "attaching_files")
                .filter_map(|j| j["id"].as_str().map(str::to_string))
                .collect();
            (ids.len() == 2).then_some(ids)
        },
    )
    .await;

    // faxd dies mid-download.
    let pid = node.child.id();
    let code = tokio::task::spawn_blocking(move || node.stop_with("KILL"))
        .await
        .unwrap();
    assert_ne!(code, 0, "faxd {pid} was not killed");
    // Each submission was answered once its job was recorded (202, `attaching_files`),
    // before its download: the kill cuts the background intake, not a request.
    for p in pending {
        let answer = p.await.unwrap();
        assert!(
            matches!(answer, Ok(s) if s == reqwest::StatusCode::ACCEPTED),
            "submission answered {answer:?}"
        );
    }

    // A new faxd on the same data directory.
    let path = dir.path().to_path_buf();
    let node = tokio::task::spawn_blocking(move || Node::start(&path, env))
        .await
        .unwrap();
    let api = node.url("/v2");
    let (token, account2) = admin_login(&http, &api, dir.path()).await;
    assert_eq!(account, account2);
    let faxes = format!("{api}/accounts/{account}/faxes");

    // Both leave attaching_files: one sent, one failed with the reason.
    let mut finals: Vec<Value> = Vec::new();
    for id in &ids {
        let fax = poll_async(
            "the job in the outbox after the restart",
            Duration::from_secs(90),
            || in_outbox(&http, &faxes, &token, id),
        )
        .await;
        finals.push(fax);
    }
    let url_of = |f: &Value| f["document"]["url"].as_str().unwrap_or("").to_string();
    let sent = finals.iter().find(|f| url_of(f) == good).expect("good job");
    let failed = finals.iter().find(|f| url_of(f) == gone).expect("gone job");
    assert_eq!(sent["_read_only"]["status"], "completed", "{sent}");
    assert_eq!(sent["tx_result"]["success"], true, "{sent}");
    assert_eq!(failed["_read_only"]["status"], "failed", "{failed}");
    let reason = failed["tx_result"]["result_text"].as_str().unwrap_or("");
    assert!(reason.contains("404"), "reason: {reason}: {failed}");
    // The document was fetched again after the restart (the first download never ended).
    assert_eq!(docs.count("/doc/fax.tiff"), 2);
    assert_eq!(docs.count("/gone/fax.tiff"), 2);

    // Nothing is left in the queue.
    let list = get_json(&http, &format!("{faxes}/outgoing"), &token)
        .await
        .expect("outgoing");
    assert_eq!(list["data"].as_array().map(Vec::len), Some(0), "{list}");
    tokio::task::spawn_blocking(move || assert_eq!(node.stop_with("TERM"), 0))
        .await
        .unwrap();
}
