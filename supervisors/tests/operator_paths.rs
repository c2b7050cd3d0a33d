//! Paths an operator meets, on the real `faxd` binary with its loopback media engine (two
//! real spandsp T.30 terminals per call), driven through the v2 API: a reschedule rule's
//! step-down reaches the T.30 engine (the next attempt negotiates without ECM, at 9600 bit/s,
//! over audio instead of T.38, as spandsp reports it); the outgoing detail shows the page
//! spandsp is sending; raising `max_outbound` while faxes are queued takes effect at once and
//! is never exceeded; one number faxed from two accounts gets one transmission at a time; a
//! fax to a number another account's `receive_fax` callflow owns lands in that account's
//! inbox (fax_request), on the embedded store and on CouchDB, and a number whose callflow
//! receives no faxes refuses the call.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::admin::{Admin, start_node, stop_node};
use common::jobs::{interval, max_overlap};
use serde_json::{Value, json};

/// A fax number that reaches an answering fax machine of the virtual PSTN.
fn answering(n: u32) -> String {
    format!("+1415555{n:04}")
}

fn now_ms() -> i64 {
    faxd::time::now_unix_ms()
}

/// Files the simulated far ends wrote (one per answered call to a non-local number).
fn far_end_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("loopback"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("remote-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A `+15550003xxx` far end receives page 1 and hangs up (T.30 code 49). The `dropped` rule
/// steps the next attempt down; what spandsp negotiated on each attempt is in `tx_result`.
/// One job asks for T.38, the other runs over G.711 audio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_down_reaches_the_t30_engine_on_the_next_attempt() {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path(), &[]).await;
    let admin = Admin::login(&node, dir.path()).await;
    // retry-after leaves the first attempt's result readable for a few seconds.
    admin
        .patch_fax_config(json!({"default": {"reschedule": {"dropped": {
            "compare-field": "fax_result_code", "compare-values": [49], "retry-after": 4,
            "then": {"ecm": false, "max_rate": 9600, "t38": false}}}}}))
        .await;
    let a = admin.account.clone();
    let t38_job = admin
        .submit(
            &a,
            "+15550003101",
            2,
            json!({"retries": 2, "tx_options": {"t38": true}}),
        )
        .await;
    let audio_job = admin
        .submit(&a, "+15550003102", 2, json!({"retries": 2}))
        .await;

    // Both jobs run at once. Between its attempts a job is pending again with the first
    // attempt's result (for `retry-after` seconds): record it for each.
    let mut firsts: Vec<Option<Value>> = vec![None, None];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while firsts.iter().any(Option::is_none) {
        for (id, seen) in [&t38_job, &audio_job].into_iter().zip(firsts.iter_mut()) {
            if seen.is_none()
                && let Some(job) = admin.queued(&a, id).await
                && job["attempts"] == 1
                && job["_read_only"]["status"] == "pending"
            {
                *seen = Some(job);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "first attempts' results not seen: {firsts:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for ((id, t38), first) in [(&t38_job, true), (&audio_job, false)]
        .into_iter()
        .zip(firsts.into_iter().flatten())
    {
        let tx = &first["tx_result"];
        assert_eq!(tx["fax_result_code"], 49, "{first}");
        assert_eq!(tx["transferred_pages"], 1, "{first}");
        assert_eq!(tx["ecm_used"], true, "spandsp negotiated ECM first: {tx}");
        assert_eq!(tx["transfer_rate"], 14_400, "V.17 first: {tx}");
        assert_eq!(tx["t38_used"], t38, "{tx}");
        assert_eq!(first["reschedule_rule"], "dropped", "{first}");
        assert_eq!(
            first["tx_options"],
            json!({"ecm": false, "max_rate": 9600, "t38": false}),
            "{first}"
        );

        let last = admin.final_doc(&a, id, Duration::from_secs(60)).await;
        assert_eq!(last["attempts"], 2, "{last}");
        assert_eq!(last["_read_only"]["status"], "failed", "{last}");
        let tx = &last["tx_result"];
        assert_eq!(tx["fax_result_code"], 49, "{last}");
        assert_eq!(tx["transferred_pages"], 1, "the second attempt ran: {tx}");
        assert_eq!(
            tx["ecm_used"], false,
            "spandsp negotiated without ECM: {tx}"
        );
        assert_eq!(tx["transfer_rate"], 9600, "V.29 at 9600: {tx}");
        assert_eq!(tx["t38_used"], false, "stepped down to audio: {tx}");
        assert!(interval(&last).0 > interval(&first).1, "{first} {last}");
    }
    // Four answered calls, each far end kept page 1.
    assert_eq!(far_end_files(dir.path()).len(), 4);
    stop_node(node).await;
    eprintln!("step-down test: {:?}", started.elapsed());
}

/// In real line time a 3-page fax takes long enough to watch: the outgoing detail shows the
/// send stage and the pages spandsp confirmed, page by page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_detail_shows_the_page_spandsp_is_sending() {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path(), &[("FAXD_LOOPBACK_LINE_TIME", "realtime")]).await;
    let admin = Admin::login(&node, dir.path()).await;
    let a = admin.account.clone();
    let id = admin.submit(&a, &answering(1), 3, json!({})).await;

    let live = |page: u64| {
        let (admin, a, id) = (&admin, &a, &id);
        async move {
            common::poll_async(
                &format!("live page {page}"),
                Duration::from_secs(60),
                || async move {
                    let job = admin.queued(a, id).await?;
                    let l = &job["live"];
                    (l["stage"] == "send" && l["page"].as_u64() >= Some(page)).then_some(job)
                },
            )
            .await
        }
    };
    let first = live(1).await;
    assert_eq!(first["live"]["total_pages"], 3, "{first}");
    assert_eq!(first["_read_only"]["status"], "processing", "{first}");
    let text = first["status"].as_str().unwrap_or_default();
    assert!(text.contains("of 3"), "live status text: {first}");
    // Still on the line: the far end has not finished receiving.
    assert!(first.get("tx_result").is_none(), "{first}");
    let second = live(2).await;
    assert!(second["live"]["page"].as_u64() >= Some(2), "{second}");
    let last = admin.final_doc(&a, &id, Duration::from_secs(60)).await;
    assert_eq!(last["tx_result"]["transferred_pages"], 3, "{last}");
    // In real time the call lasted as long as a fax line needs (seconds, not milliseconds).
    let (s, f) = interval(&last);
    assert!(f - s >= 5_000, "{} ms on the line", f - s);
    stop_node(node).await;
    eprintln!("live page test: {:?}", started.elapsed());
}

/// Five faxes queued at `max_outbound` 1; while the first is on the line (real line time)
/// the operator raises the limit to 3 through `system_configs/fax`. More transmissions start
/// at once — before the first one ends — and never more than 3 run together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_max_outbound_takes_effect_while_faxes_are_queued() {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path(), &[("FAXD_LOOPBACK_LINE_TIME", "realtime")]).await;
    let admin = Admin::login(&node, dir.path()).await;
    admin
        .patch_fax_config(json!({"default": {"max_outbound": 1}}))
        .await;
    let a = admin.account.clone();
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(admin.submit(&a, &answering(100 + n), 1, json!({})).await);
    }
    // One transmission on the line, the others waiting.
    common::poll_async("a fax on the line", Duration::from_secs(60), || async {
        let mut sending = 0;
        for id in &ids {
            let job = admin.queued(&a, id).await?;
            if job["live"]["stage"] == "send" || job["live"]["stage"] == "negotiate" {
                sending += 1;
            }
        }
        (sending == 1).then_some(())
    })
    .await;
    let before = now_ms();
    admin
        .patch_fax_config(json!({"default": {"max_outbound": 3}}))
        .await;

    let mut iv = Vec::new();
    for id in &ids {
        let doc = admin.final_doc(&a, id, Duration::from_secs(90)).await;
        assert_eq!(doc["_read_only"]["status"], "completed", "{doc}");
        iv.push(interval(&doc));
    }
    iv.sort();
    let early: Vec<_> = iv.iter().copied().filter(|i| i.0 < before).collect();
    assert_eq!(early.len(), 1, "at max_outbound 1 one fax started: {iv:?}");
    let peak = max_overlap(&iv);
    assert_eq!(peak, 3, "the raised limit is used and not exceeded: {iv:?}");
    // The change applied at once, not when the first transmission ended.
    assert!(
        iv[1].0 < early[0].1 && iv[2].0 < early[0].1,
        "no new transmission while the first was on the line: {iv:?}"
    );
    stop_node(node).await;
    eprintln!("max_outbound test: {:?}", started.elapsed());
}

/// Two accounts fax the same number, all four jobs due at the same second (`send_at`), with
/// `serialize_outbound_numbers` on: the calls to that number never overlap and all complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_number_from_two_accounts_gets_one_transmission_at_a_time() {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path(), &[]).await;
    let admin = Admin::login(&node, dir.path()).await;
    admin
        .patch_fax_config(json!({"default": {"serialize_outbound_numbers": true}}))
        .await;
    let first = admin.account.clone();
    let second = admin.child_account("second tenant").await;
    let to = answering(200);
    let at = now_ms() / 1000 + 5;
    let mut jobs = Vec::new();
    for account in [&first, &second, &first, &second] {
        let id = admin.submit(account, &to, 2, json!({"send_at": at})).await;
        jobs.push((account.clone(), id));
    }
    assert!(
        now_ms() < at * 1000,
        "submitting took too long for the test"
    );
    let mut iv = Vec::new();
    for (account, id) in &jobs {
        let doc = admin.final_doc(account, id, Duration::from_secs(60)).await;
        assert_eq!(doc["_read_only"]["status"], "completed", "{doc}");
        assert_eq!(doc["tx_result"]["transferred_pages"], 2, "{doc}");
        iv.push(interval(&doc));
    }
    assert!(
        iv.iter().all(|i| i.0 >= at * 1000),
        "send_at honoured: {iv:?}"
    );
    iv.sort();
    for w in iv.windows(2) {
        assert!(w[1].0 >= w[0].1, "two transmissions to {to} at once: {w:?}");
    }
    // The account that found the number taken tried again within seconds (the safety sweep
    // runs once a minute).
    let done = iv.iter().map(|i| i.1).max().unwrap_or(0);
    assert!(
        done - at * 1000 < 20_000,
        "the four calls took {} ms after send_at: {iv:?}",
        done - at * 1000
    );
    assert_eq!(far_end_files(dir.path()).len(), 4);
    stop_node(node).await;
    eprintln!("two accounts test: {:?}", started.elapsed());
}

/// Files an inbound call left in the loopback spool (a fax_request removes its file).
fn spool_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("loopback"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("inbound-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Account A faxes 2 pages to a number account B's `receive_fax` callflow owns: the loopback
/// engine hands the call to a fax_request, which answers, receives it on a spandsp terminal
/// and stores it in B's inbox. A's job completes; B's inbox lists the fax with its numbers and
/// page count; the received TIFF downloads with the pages sent (and as PDF); nothing is left in
/// the spool. A faxbox callflow's fax is the box's, an owned receive_fax callflow's the user's.
/// A fax to a number nobody owns still reaches the simulated remote machine, and a
/// number whose callflow has no fax module refuses the call (the sender's job fails with
/// the refusal).
async fn fax_to_another_account(extra: &[(&str, &str)]) {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path(), extra).await;
    let admin = Admin::login(&node, dir.path()).await;
    let a = admin.account.clone();
    let b = admin.child_account("receiver").await;
    let to = "+15557650000";
    common::own_number(&admin.http, &admin.api, &admin.token, &b, to).await;

    let id = admin.submit(&a, to, 2, json!({})).await;
    let sent = admin.final_doc(&a, &id, Duration::from_secs(90)).await;
    assert_eq!(sent["_read_only"]["status"], "completed", "{sent}");
    assert_eq!(sent["tx_result"]["transferred_pages"], 2, "{sent}");
    // Nothing configured: the receiver's station id is the dialled number.
    assert_eq!(sent["tx_result"]["remote_station_id"], to, "{sent}");
    let inbox = common::poll_async("the fax in B's inbox", Duration::from_secs(30), || async {
        let list = admin.inbox(&b).await;
        (!list.is_empty()).then_some(list)
    })
    .await;
    let lag = now_ms() - interval(&sent).1;
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    let row = &inbox[0];
    let fax_id = row["id"].as_str().expect("fax id").to_string();
    assert_eq!(row["from_number"], "+15551230000", "{row}");
    assert_eq!(row["to_number"], to, "{row}");
    let fax = admin
        .get(&format!("/accounts/{b}/faxes/inbox/{fax_id}"))
        .await;
    assert_eq!(fax["folder"], "inbox", "{fax}");
    assert_eq!(fax["source_type"], "incoming_fax", "{fax}");
    let rx = &fax["rx_result"];
    assert_eq!(rx["success"], true, "{fax}");
    assert_eq!(rx["transferred_pages"], 2, "{fax}");
    assert_eq!(rx["result_cause"], "NORMAL_CLEARING", "{fax}");
    assert_eq!(rx["fax_result_code"], 0, "{fax}");
    assert_eq!(rx["fax_result_text"], "OK", "{fax}");
    assert_eq!(rx["remote_station_id"], "+15551230000", "{fax}");
    assert!(
        admin.inbox(&a).await.is_empty(),
        "the sender's inbox stays empty"
    );

    let base = format!("/accounts/{b}/faxes/inbox/{fax_id}/attachment");
    let (status, ct, tiff) = admin.download(&format!("{base}?format=tiff")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&tiff));
    assert_eq!(ct, "image/tiff");
    let file = dir.path().join("downloaded.tiff");
    std::fs::write(&file, &tiff).expect("write download");
    assert_eq!(faxd::gateway::tiff::count_pages(&file).expect("a TIFF"), 2);
    let (status, ct, pdf) = admin.download(&format!("{base}?format=pdf")).await;
    assert_eq!(status, 200);
    assert_eq!(ct, "application/pdf");
    assert!(pdf.starts_with(b"%PDF-"), "a PDF");
    let (_, _, original) = admin.download(&format!("{base}?format=original")).await;
    assert_eq!(original, tiff, "the received TIFF is the original");

    common::poll_async("an empty spool", Duration::from_secs(10), || async {
        spool_files(dir.path()).is_empty().then_some(())
    })
    .await;
    assert!(
        far_end_files(dir.path()).is_empty(),
        "the call to B never left the node"
    );

    // A number of a faxbox callflow: the fax is the box's, with the box's notify list.
    let (status, v) = admin
        .call(
            reqwest::Method::PUT,
            &format!("/accounts/{b}/faxboxes"),
            Some(
                json!({"name": "Front desk", "fax_identity": "+15557659999", "notifications": {
                "inbound": {"email": {"send_to": ["desk@example.com"]}}}}),
            ),
        )
        .await;
    assert!(status == 200 || status == 201, "faxbox: {v}");
    let faxbox = v["data"]["id"].as_str().expect("faxbox id").to_string();
    let boxed = "+15557650002";
    let (status, v) = admin
        .call(
            reqwest::Method::PUT,
            &format!("/accounts/{b}/callflows"),
            Some(json!({"numbers": [boxed], "flow": {"module": "faxbox", "data": {"id": faxbox}}})),
        )
        .await;
    assert!(status == 200 || status == 201, "faxbox callflow: {v}");
    let id = admin.submit(&a, boxed, 1, json!({})).await;
    let doc = admin.final_doc(&a, &id, Duration::from_secs(90)).await;
    assert_eq!(doc["_read_only"]["status"], "completed", "{doc}");
    // The box answers with its own station id.
    assert_eq!(
        doc["tx_result"]["remote_station_id"], "+15557659999",
        "{doc}"
    );
    let row = common::poll_async("the faxbox's fax", Duration::from_secs(30), || async {
        admin
            .inbox(&b)
            .await
            .into_iter()
            .find(|r| r["to_number"] == boxed)
    })
    .await;
    let fax_id = row["id"].as_str().expect("fax id");
    let fax = admin
        .get(&format!("/accounts/{b}/faxes/inbox/{fax_id}"))
        .await;
    assert_eq!(fax["faxbox_id"], faxbox.as_str(), "{fax}");
    assert_eq!(
        fax["notifications"]["email"]["send_to"],
        json!(["desk@example.com"]),
        "{fax}"
    );
    assert_eq!(fax["rx_result"]["transferred_pages"], 1, "{fax}");
    assert_eq!(
        fax["rx_result"]["local_station_id"], "+15557659999",
        "{fax}"
    );
    let boxed_list = admin
        .get(&format!("/accounts/{b}/faxboxes/{faxbox}/faxes/inbox"))
        .await;
    assert!(
        boxed_list.as_array().is_some_and(|l| l.len() == 1),
        "the box lists its fax: {boxed_list}"
    );

    // A receive_fax callflow with an owner: the fax is the user's, and the user is told.
    let (status, v) = admin
        .call(
            reqwest::Method::PUT,
            &format!("/accounts/{b}/users"),
            Some(json!({"first_name": "Ann", "last_name": "Receiver",
                        "email": "ann@example.com"})),
        )
        .await;
    assert!(status == 200 || status == 201, "user: {v}");
    let ann = v["data"]["id"].as_str().expect("user id").to_string();
    let owned = "+15557650003";
    let (status, v) = admin
        .call(
            reqwest::Method::PUT,
            &format!("/accounts/{b}/callflows"),
            Some(json!({"numbers": [owned],
                        "flow": {"module": "receive_fax", "data": {"owner_id": ann}}})),
        )
        .await;
    assert!(status == 200 || status == 201, "owned callflow: {v}");
    let id = admin.submit(&a, owned, 1, json!({})).await;
    let doc = admin.final_doc(&a, &id, Duration::from_secs(90)).await;
    assert_eq!(doc["_read_only"]["status"], "completed", "{doc}");
    let mine = common::poll_async("the user's fax", Duration::from_secs(30), || async {
        let list = admin
            .get(&format!("/accounts/{b}/users/{ann}/faxes/inbox"))
            .await;
        list.as_array().filter(|l| !l.is_empty()).cloned()
    })
    .await;
    assert_eq!(mine.len(), 1, "only the user's own fax: {mine:?}");
    let fax_id = mine[0]["id"].as_str().expect("fax id");
    let fax = admin
        .get(&format!("/accounts/{b}/faxes/inbox/{fax_id}"))
        .await;
    assert_eq!(fax["owner_id"], ann.as_str(), "{fax}");
    assert_eq!(fax["to_number"], owned, "{fax}");
    assert!(fax.get("faxbox_id").is_none(), "{fax}");
    assert_eq!(
        fax["notifications"]["email"]["send_to"],
        json!(["ann@example.com"]),
        "{fax}"
    );

    // A number nobody owns reaches the simulated remote machine, as before.
    let remote = admin.submit(&a, &answering(300), 1, json!({})).await;
    let doc = admin.final_doc(&a, &remote, Duration::from_secs(90)).await;
    assert_eq!(doc["_read_only"]["status"], "completed", "{doc}");
    assert_eq!(far_end_files(dir.path()).len(), 1);
    assert_eq!(admin.inbox(&b).await.len(), 3, "B received nothing more");

    // A number whose callflow receives no faxes refuses the call before answering.
    let voice = "+15557650001";
    let (status, v) = admin
        .call(
            reqwest::Method::PUT,
            &format!("/accounts/{b}/callflows"),
            Some(json!({"numbers": [voice], "flow": {"module": "voicemail", "data": {}}})),
        )
        .await;
    assert!(status == 200 || status == 201, "voice callflow: {v}");
    let refused = admin.submit(&a, voice, 1, json!({})).await;
    let doc = admin.final_doc(&a, &refused, Duration::from_secs(90)).await;
    assert_eq!(doc["_read_only"]["status"], "failed", "{doc}");
    assert_eq!(
        doc["tx_result"]["result_cause"], "INCOMPATIBLE_DESTINATION",
        "{doc}"
    );
    assert_eq!(doc["tx_result"]["result_code"], 488, "{doc}");
    assert_eq!(admin.inbox(&b).await.len(), 3, "B received nothing more");
    assert!(spool_files(dir.path()).is_empty());

    stop_node(node).await;
    eprintln!(
        "inbound test: {:?} (the fax was listed in the inbox {lag} ms after the sender's call ended)",
        started.elapsed(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fax_to_another_accounts_number_lands_in_its_inbox() {
    fax_to_another_account(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fax_to_another_accounts_number_lands_in_its_inbox_on_couchdb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let couch = common::Couch::start(dir.path());
    fax_to_another_account(&[
        ("FAXD_STORE_BACKEND", "couchdb"),
        ("FAXD_STORE_COUCH_URL", &couch.url),
    ])
    .await;
    drop(couch);
}
