//! `GET /metrics` on the real `faxd` binary with its loopback media engine: after a fax is
//! sent, the page counts its pages, its result and cause, one dispatch and its conversion;
//! a fax scheduled for tomorrow shows in the queue depth; no transmission is left in flight;
//! and an address outside `[api] metrics_allow` gets a 403.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::admin::{Admin, start_node, stop_node};
use serde_json::json;

/// The samples of a text-format page: series (name with its labels, as written) → value.
fn samples(page: &str) -> HashMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(http: &reqwest::Client, url: &str) -> (u16, String, String) {
    let r = http.get(url).send().await.expect("GET /metrics");
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, ctype, r.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_sent_fax_and_the_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path(), &[]).await;
    let admin = Admin::login(&node, dir.path()).await;
    let url = node.url("/metrics");

    let (status, ctype, before) = scrape(&admin.http, &url).await;
    assert_eq!(status, 200, "{before}");
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let before = samples(&before);
    assert_eq!(
        before.get("faxd_dispatch_latency_seconds_count"),
        Some(&0.0)
    );
    assert!(
        !before.keys().any(|k| k.starts_with("faxd_pages_total")),
        "{before:?}"
    );

    // One 2-page fax to an answering machine of the loopback PSTN, sent to the end.
    let id = admin
        .submit(&admin.account, "+14155550001", 2, json!({}))
        .await;
    let done = admin
        .final_doc(&admin.account, &id, Duration::from_secs(120))
        .await;
    let result = &done["tx_result"];
    assert_eq!(result["success"], true, "{done}");
    let cause = result["result_cause"]
        .as_str()
        .expect("result_cause")
        .to_string();

    // And one scheduled for tomorrow: it waits in the queue.
    let tomorrow = faxd::time::now_unix() + 86_400;
    admin
        .submit(
            &admin.account,
            "+14155550002",
            1,
            json!({"send_at": tomorrow}),
        )
        .await;

    let page = common::poll_async(
        "the sent fax in /metrics",
        Duration::from_secs(30),
        || async {
            let (_, _, page) = scrape(&admin.http, &url).await;
            let s = samples(&page);
            (s.get("faxd_transmissions_in_flight") == Some(&0.0)
                && s.get("faxd_queue_jobs{status=\"pending\"}") == Some(&1.0))
            .then_some(s)
        },
    )
    .await;
    let success = format!(
        "faxd_results_total{{direction=\"outbound\",result=\"success\",cause=\"{cause}\"}}"
    );
    assert_eq!(page.get(&success), Some(&1.0), "{page:?}");
    assert_eq!(
        page.get("faxd_pages_total{direction=\"outbound\"}"),
        Some(&2.0),
        "{page:?}"
    );
    assert_eq!(page.get("faxd_dispatch_latency_seconds_count"), Some(&1.0));
    // Both documents were converted at intake.
    assert!(
        page.get("faxd_conversion_seconds_count")
            .is_some_and(|n| *n >= 2.0),
        "{page:?}"
    );
    assert!(
        page.get("faxd_store_request_seconds_count{op=\"write\"}")
            .is_some_and(|n| *n > 0.0),
        "{page:?}"
    );
    assert!(page.contains_key(&format!(
        "faxd_info{{node=\"{}\",version=\"{}\"}}",
        admin_node_name(&admin).await,
        env!("CARGO_PKG_VERSION")
    )));
    stop_node(node).await;
}

/// The node's name as `/v2/about` reports it.
async fn admin_node_name(admin: &Admin) -> String {
    let about: serde_json::Value = admin
        .http
        .get(format!("{}/about", admin.api))
        .send()
        .await
        .expect("about")
        .json()
        .await
        .expect("about json");
    about["data"]["node"].as_str().expect("node").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_refused_outside_the_allowed_addresses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(
        dir.path(),
        &[("FAXD_API_METRICS_ALLOW", "[\"10.0.0.0/8\"]")],
    )
    .await;
    let http = reqwest::Client::new();
    let (status, _, body) = scrape(&http, &node.url("/metrics")).await;
    assert_eq!(status, 403, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("Kazoo envelope");
    assert_eq!(v["error"], "403", "{v}");
    assert!(!body.contains("faxd_"), "{body}");
    stop_node(node).await;
}
