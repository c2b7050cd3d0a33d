//! A fax from the API to the far end, on the real `faxd` binary with its embedded defaults
//! (SQLite, loopback media engine): log in as the first-start admin, submit a 3-page PDF by
//! multipart, and find it `completed` in the outbox with `tx_result.success`, 3 pages and a
//! transfer rate — and the simulated far end's received image equal to the sent fax TIFF. A
//! document that cannot be converted ends `failed` with the reason, never `pending`. While a
//! fax is being transmitted, `GET /faxes/outgoing/{id}` shows the worker's live status.

mod common;

use std::time::Duration;

use common::Node;
use serde_json::{Value, json};

/// A PDF of `pages` letter pages, each with a few lines of text (Ghostscript repairs the
/// missing cross-reference table, as it does for many PDFs in the wild).
fn text_pdf(pages: usize) -> Vec<u8> {
    let mut objs = vec![
        "<</Type/Catalog/Pages 2 0 R>>".to_string(),
        format!(
            "<</Type/Pages/Kids[{}]/Count {pages}>>",
            (0..pages)
                .map(|i| format!("{} 0 R", 4 + 2 * i))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        "<</Type/Font/Subtype/Type1/BaseFont/Helvetica>>".to_string(),
    ];
    for p in 0..pages {
        let mut text = String::from("BT /F1 28 Tf 72 700 Td ");
        for line in 0..12 {
            text.push_str(&format!(
                "(Page {} line {} of the faxd test) Tj 0 -48 Td ",
                p + 1,
                line + 1
            ));
        }
        text.push_str("ET");
        objs.push(format!(
            "<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]/Resources<</Font<</F1 3 0 R>>>>/Contents {} 0 R>>",
            5 + 2 * p
        ));
        objs.push(format!(
            "<</Length {}>>stream\n{text}\nendstream",
            text.len()
        ));
    }
    let mut out = String::from("%PDF-1.4\n");
    for (i, o) in objs.iter().enumerate() {
        out.push_str(&format!("{} 0 obj{o}endobj\n", i + 1));
    }
    out.push_str("trailer<</Root 1 0 R>>\n%%EOF\n");
    out.into_bytes()
}

async fn submit(http: &reqwest::Client, url: &str, token: &str, to: &str, doc: Vec<u8>) -> Value {
    let meta = json!({"data": {"from_number": "+15551230000", "to_number": to, "retries": 1}});
    common::submit_fax(http, url, token, &meta, "application/pdf", &doc).await
}

/// `GET url` as the logged-in user, the JSON answer.
async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> Value {
    http.get(url)
        .header("X-Auth-Token", token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The outbox id (`YYYYMM-<id>`) of job `id`, if it is in the outbox.
async fn find_in_outbox(
    http: &reqwest::Client,
    faxes: &str,
    token: &str,
    id: &str,
) -> Option<String> {
    let list = get_json(http, &format!("{faxes}/outbox"), token).await;
    list["data"]
        .as_array()?
        .iter()
        .filter_map(|f| f["id"].as_str())
        .find(|x| x.ends_with(id))
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdf_submitted_by_multipart_is_delivered_page_for_page() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let node = tokio::task::spawn_blocking(move || Node::start(&path, Node::env_for(&path)))
        .await
        .unwrap();
    let api = node.url("/v2");
    let http = reqwest::Client::new();

    let (token, account) = common::sender_login(&http, &api, dir.path()).await;
    let faxes = format!("{api}/accounts/{account}/faxes");

    let job = submit(&http, &faxes, &token, "+15557654321", text_pdf(3)).await;
    let id = job["id"].as_str().unwrap().to_string();
    assert_ne!(job["status"], "failed", "{job}");

    // Completed jobs leave the queue for the outbox (`YYYYMM-<id>`).
    let outbox_id = common::poll_async("the fax in the outbox", Duration::from_secs(120), || {
        find_in_outbox(&http, &faxes, &token, &id)
    })
    .await;
    let detail = get_json(&http, &format!("{faxes}/outbox/{outbox_id}"), &token).await;
    let fax = &detail["data"];
    assert_eq!(fax["_read_only"]["status"], "completed", "{fax}");
    let tx = &fax["tx_result"];
    assert_eq!(tx["success"], true, "{tx}");
    assert_eq!(tx["transferred_pages"], 3, "{tx}");
    assert_eq!(tx["total_pages"], 3, "{tx}");
    assert!(tx["transfer_rate"].as_u64().unwrap_or(0) >= 2400, "{tx}");
    assert_eq!(tx["result_code"], 200, "{tx}");
    assert_eq!(tx["fax_result_code"], 0, "{tx}");

    // The far end received exactly the fax TIFF that was sent.
    let sent = http
        .get(format!("{faxes}/outbox/{outbox_id}/attachment?format=tiff"))
        .header("X-Auth-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    let sent = faxd::convert::tiff_f::decode_fax_tiff(&sent.bytes().await.unwrap()).unwrap();
    let spool = dir.path().join("loopback");
    let far: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("remote-"))
        })
        .collect();
    assert_eq!(far.len(), 1, "{far:?}");
    let received =
        faxd::convert::tiff_f::decode_fax_tiff(&std::fs::read(&far[0]).unwrap()).unwrap();
    assert_eq!(received.len(), 3);
    assert_eq!(sent.len(), 3);
    for (n, (s, r)) in sent.iter().zip(&received).enumerate() {
        assert_eq!((s.width, s.height), (r.width, r.height), "page {}", n + 1);
        // The sender draws the page header line (fax_identity_name) above the image and
        // keeps the page length: the image arrives shifted down by the header's rows.
        let stride = s.stride();
        let len = s.data.len();
        let shift = (0..=64usize)
            .find(|rows| r.data[rows * stride..] == s.data[..len - rows * stride])
            .unwrap_or_else(|| panic!("page {} differs from what was sent", n + 1));
        assert!(shift > 0, "page {}: no header line", n + 1);
        assert!(s.data.iter().any(|b| *b != 0), "page {} is blank", n + 1);
    }

    // A PDF that cannot be rendered ends `failed` at intake, with the reason.
    let broken =
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 9 0 R>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n";
    let job = submit(&http, &faxes, &token, "+15557654322", broken.to_vec()).await;
    assert_eq!(job["status"], "attaching_files", "{job}");
    let bad_id = job["id"].as_str().unwrap().to_string();
    let bad_outbox = common::poll_async(
        "the failed job in the outbox",
        Duration::from_secs(60),
        || find_in_outbox(&http, &faxes, &token, &bad_id),
    )
    .await;
    let bad = get_json(&http, &format!("{faxes}/outbox/{bad_outbox}"), &token).await;
    assert_eq!(bad["data"]["status"], "failed", "{bad}");
    let text = bad["data"]["tx_result"]["result_text"]
        .as_str()
        .unwrap_or("");
    assert!(!text.is_empty(), "{bad}");
    tokio::task::spawn_blocking(move || assert_eq!(node.stop_with("TERM"), 0))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_detail_shows_live_status_while_sending() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    // The scripted engine with slow pages, so the transmission can be watched.
    let node = tokio::task::spawn_blocking(move || {
        let mut env = Node::env_for(&path);
        env.push(("FAXD_MEDIA_ENGINE".into(), "script".into()));
        env.push(("FAXD_MEDIA_SCRIPT_PAGE_MS".into(), "1000".into()));
        Node::start(&path, env)
    })
    .await
    .unwrap();
    let api = node.url("/v2");
    let http = reqwest::Client::new();
    let (token, account) = common::sender_login(&http, &api, dir.path()).await;
    let faxes = format!("{api}/accounts/{account}/faxes");
    let job = submit(&http, &faxes, &token, "+15557654321", text_pdf(3)).await;
    let id = job["id"].as_str().unwrap().to_string();

    let url = format!("{faxes}/outgoing/{id}");
    let live = common::poll_async(
        "live status while sending",
        Duration::from_secs(60),
        || async {
            let r = get_json(&http, &url, &token).await;
            (r["data"]["live"]["stage"] == "send" && r["data"]["live"]["page"].as_u64() >= Some(1))
                .then(|| r["data"].clone())
        },
    )
    .await;
    assert_eq!(live["live"]["total_pages"], 3, "{live}");
    let text = live["status"].as_str().unwrap_or_default();
    assert!(text.contains("page"), "{live}");
    tokio::task::spawn_blocking(move || assert_eq!(node.stop_with("TERM"), 0))
        .await
        .unwrap();
}
