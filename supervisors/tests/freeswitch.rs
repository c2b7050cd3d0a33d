//! The FreeSWITCH media engine end to end: the real `faxd` binary with `[media] engine =
//! "freeswitch"` against the FreeSWITCH stand-in (`fs-standin`: the event socket in both
//! modes with the bytes a real FreeSWITCH 1.10.12 writes, and real spandsp faxes). Faxes go
//! out through `http_get` + `originate … &txfax`, come back in through faxd's inbound socket
//! (`socket … async full`) into the receiving account's inbox; busy, no answer, a hang-up
//! mid page and a refused number end the attempt with FreeSWITCH's cause; a node whose event
//! socket drops mid call ends that attempt, is reconnected, and the job is retried.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Node;
use common::admin::{Admin, start_node, stop_node};
use faxd_fs_standin::{Config as StandinConfig, InboundCallOptions, StandIn};
use serde_json::{Value, json};

/// The numbers the stand-in hands to faxd's inbound socket (as a dialplan would).
const FAXD_NUMBERS: &str = "+1555765xxxx";

struct Setup {
    dir: tempfile::TempDir,
    standin: StandIn,
    node: Node,
    admin: Admin,
}

async fn setup(line: faxd::config::LineTime) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let inbound = format!("127.0.0.1:{}", common::free_port());
    let proxy_port = common::free_port();
    let standin = StandIn::start(StandinConfig {
        inbound_listen: Some(inbound.parse().expect("addr")),
        faxd_numbers: vec![FAXD_NUMBERS.into()],
        cache_dir: dir.path().join("fs-cache"),
        spool_dir: dir.path().join("fs-far-ends"),
        line_time: line,
        ..StandinConfig::default()
    })
    .await
    .expect("stand-in");
    let nodes = format!("[\"{}\"]", standin.esl_addr());
    let proxy = format!("http://127.0.0.1:{proxy_port}");
    let port = proxy_port.to_string();
    let node = start_node(
        dir.path(),
        &[
            ("FAXD_MEDIA_ENGINE", "freeswitch"),
            ("FAXD_FREESWITCH_NODES", &nodes),
            ("FAXD_FREESWITCH_INBOUND_LISTEN", &inbound),
            ("FAXD_FILE_PROXY_PORT", &port),
            ("FAXD_FREESWITCH_FILE_PROXY_URL", &proxy),
        ],
    )
    .await;
    let admin = Admin::login(&node, dir.path()).await;
    Setup {
        dir,
        standin,
        node,
        admin,
    }
}

/// Files left in faxd's spool (rxfax's files; a fax_request removes its own).
fn spool_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("spool"))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

async fn receive_fax_number(admin: &Admin, account: &str, number: &str) {
    let (status, v) = admin
        .call(
            reqwest::Method::PUT,
            &format!("/accounts/{account}/callflows"),
            Some(json!({"numbers": [number], "flow": {"module": "receive_fax", "data": {}}})),
        )
        .await;
    assert!(status == 200 || status == 201, "callflow: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fax_goes_out_through_freeswitch_and_comes_back_in_to_the_receiving_account() {
    let s = setup(faxd::config::LineTime::Accelerated).await;
    let admin = &s.admin;
    let a = admin.account.clone();
    let b = admin.child_account("receiver").await;
    let to = "+15557650000";
    common::own_number(&admin.http, &admin.api, &admin.token, &b, to).await;

    let header = "ACME's FS, Inc. {draft}";
    let id = admin
        .submit(&a, to, 2, json!({"fax_identity_name": header}))
        .await;
    let sent = admin.final_doc(&a, &id, Duration::from_secs(90)).await;
    assert_eq!(sent["_read_only"]["status"], "completed", "{sent}");
    let tx = &sent["tx_result"];
    assert_eq!(tx["success"], true, "{sent}");
    assert_eq!(tx["transferred_pages"], 2, "{sent}");
    assert_eq!(tx["result_code"], 200, "{sent}");
    assert_eq!(tx["result_cause"], "NORMAL_CLEARING", "{sent}");
    assert_eq!(tx["remote_station_id"], to, "{sent}");

    // What FreeSWITCH was asked: the document through http_get, then one originate.
    let origs = s.standin.originates();
    assert_eq!(origs.len(), 1, "{origs:?}");
    let o = &origs[0];
    assert_eq!(o.dial, format!("sofia/gateway/carrier/{to}"));
    assert_eq!(o.app, "txfax");
    assert!(
        o.app_arg
            .starts_with(&s.dir.path().join("fs-cache").display().to_string()),
        "txfax reads the node's cached copy: {o:?}"
    );
    let var = |name: &str| {
        o.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    // The header's quote, comma and space arrive intact; braces become parentheses.
    assert_eq!(var("fax_header"), Some("ACME's FS, Inc. (draft)"), "{o:?}");
    assert_eq!(var("origination_caller_id_number"), Some("+15551230000"));
    assert_eq!(var("fax_use_ecm"), Some("true"));
    assert_eq!(var("ignore_early_media"), Some("true"));
    assert_eq!(var("origination_uuid"), Some(o.uuid.as_str()));

    let inbox = common::poll_async("the fax in B's inbox", Duration::from_secs(30), || async {
        let list = admin.inbox(&b).await;
        (!list.is_empty()).then_some(list)
    })
    .await;
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    let fax_id = inbox[0]["id"].as_str().expect("fax id").to_string();
    let fax = admin
        .get(&format!("/accounts/{b}/faxes/inbox/{fax_id}"))
        .await;
    assert_eq!(fax["from_number"], "+15551230000", "{fax}");
    assert_eq!(fax["to_number"], to, "{fax}");
    let rx = &fax["rx_result"];
    assert_eq!(rx["success"], true, "{fax}");
    assert_eq!(rx["transferred_pages"], 2, "{fax}");
    assert_eq!(rx["local_station_id"], to, "{fax}");
    let (status, _, tiff) = admin
        .download(&format!(
            "/accounts/{b}/faxes/inbox/{fax_id}/attachment?format=tiff"
        ))
        .await;
    assert_eq!(status, 200);
    let file = s.dir.path().join("received.tiff");
    std::fs::write(&file, &tiff).expect("write");
    assert_eq!(faxd::gateway::tiff::count_pages(&file).expect("a TIFF"), 2);
    common::poll_async("an empty spool", Duration::from_secs(10), || async {
        spool_files(s.dir.path()).is_empty().then_some(())
    })
    .await;
    assert!(
        admin
            .get(&format!("/accounts/{b}/faxes/incoming"))
            .await
            .as_array()
            .is_some_and(|l| l.is_empty())
    );
    stop_node(s.node).await;
    s.standin.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_ends_the_attempt_with_the_cause_freeswitch_reports() {
    let s = setup(faxd::config::LineTime::Accelerated).await;
    let admin = &s.admin;
    let a = admin.account.clone();
    admin
        .patch_fax_config(json!({"default": {"endpoint_timeout": 2}}))
        .await;
    // A faxd number nobody receives: faxd refuses the ringing call.
    let unknown = "+15557659999";
    let cases = [
        ("+15550001000", "USER_BUSY", 486),
        ("+15550002000", "NO_ANSWER", 480),
        (unknown, "UNALLOCATED_NUMBER", 404),
    ];
    for (to, cause, code) in cases {
        let id = admin.submit(&a, to, 1, json!({})).await;
        let doc = admin.final_doc(&a, &id, Duration::from_secs(60)).await;
        assert_eq!(doc["_read_only"]["status"], "failed", "{to}: {doc}");
        assert_eq!(doc["tx_result"]["result_cause"], cause, "{to}: {doc}");
        assert_eq!(doc["tx_result"]["result_code"], code, "{to}: {doc}");
        assert_eq!(doc["tx_result"]["transferred_pages"], 0, "{to}: {doc}");
    }
    // T.38 asked for: negotiated by a far end that takes it, over audio by one that refuses
    // the re-INVITE (the fax goes through either way).
    for (to, t38) in [("+14155550111", true), ("+15550007000", false)] {
        let id = admin
            .submit(&a, to, 1, json!({"tx_options": {"t38": true}}))
            .await;
        let doc = admin.final_doc(&a, &id, Duration::from_secs(60)).await;
        assert_eq!(doc["_read_only"]["status"], "completed", "{to}: {doc}");
        assert_eq!(doc["tx_result"]["t38_used"], t38, "{to}: {doc}");
    }
    let asked = s
        .standin
        .originates()
        .into_iter()
        .filter(|o| o.number == "+15550007000")
        .flat_map(|o| o.vars)
        .filter(|(n, _)| n.starts_with("fax_enable_t38"))
        .collect::<Vec<_>>();
    assert_eq!(
        asked,
        [
            ("fax_enable_t38".to_string(), "true".to_string()),
            ("fax_enable_t38_request".to_string(), "true".to_string())
        ]
    );
    // Answered, then the far end hangs up after page 1 of 2: T.30 code 49.
    let id = admin.submit(&a, "+15550003000", 2, json!({})).await;
    let doc = admin.final_doc(&a, &id, Duration::from_secs(60)).await;
    assert_eq!(doc["_read_only"]["status"], "failed", "{doc}");
    assert_eq!(doc["tx_result"]["fax_result_code"], 49, "{doc}");
    assert_eq!(doc["tx_result"]["transferred_pages"], 1, "{doc}");
    assert_eq!(doc["tx_result"]["result_code"], 200, "{doc}");
    assert!(spool_files(s.dir.path()).is_empty());
    stop_node(s.node).await;
    s.standin.shutdown();
}

/// The event socket drops in the middle of a (real-time) call and the node refuses
/// connections for a while: the attempt ends at once with `MEDIA_ENGINE_LOST`, `/healthz`
/// says no node is connected, faxd reconnects by itself, kills the abandoned channel, and
/// the retry completes the fax.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_lost_mid_call_ends_the_attempt_and_the_retry_sends_the_fax() {
    let s = setup(faxd::config::LineTime::Realtime).await;
    let admin = &s.admin;
    let a = admin.account.clone();
    admin
        .patch_fax_config(json!({"default": {"reschedule": {
            "lost node": {"attempt": 1, "compare-field": "result_cause",
                          "compare-values": ["MEDIA_ENGINE_LOST"], "retry-after": 1}}}}))
        .await;
    let id = admin
        .submit(&a, "+14155550123", 1, json!({"retries": 2}))
        .await;
    common::poll_async("the call on the line", Duration::from_secs(30), || async {
        (s.standin.active_channels() > 0).then_some(())
    })
    .await;
    s.standin.pause_listener(Duration::from_secs(3));
    s.standin.drop_connections();
    let health = s.node.url("/healthz");
    let down = common::poll_async("healthz 503", Duration::from_secs(10), || {
        let health = health.clone();
        async move {
            let r = reqwest::get(&health).await.ok()?;
            (r.status().as_u16() == 503).then_some(())?;
            r.json::<Value>().await.ok().map(|v| v["data"].clone())
        }
    })
    .await;
    assert_eq!(down["reason"], "no FreeSWITCH node connected", "{down}");
    assert_eq!(down["media"][0]["connected"], false, "{down}");
    // The abandoned channel is killed once the link is back (not left sending beside the
    // retry).
    common::poll_async("the first call ended", Duration::from_secs(30), || async {
        (s.standin.active_channels() == 0 || s.standin.originates().len() > 1).then_some(())
    })
    .await;
    let doc = admin.final_doc(&a, &id, Duration::from_secs(120)).await;
    assert_eq!(doc["_read_only"]["status"], "completed", "{doc}");
    assert_eq!(doc["attempts"], 2, "{doc}");
    let origs = s.standin.originates();
    assert_eq!(origs.len(), 2, "{origs:?}");
    let up = reqwest::get(&health).await.expect("healthz");
    assert_eq!(up.status().as_u16(), 200);
    stop_node(s.node).await;
    s.standin.shutdown();
}

/// A carrier's call to a receive_fax number: listed live in `faxes/incoming` while it runs
/// (real time), a second call meanwhile gets a busy signal (the account's `max_inbound` is
/// 1), the fax is stored and leaves `faxes/incoming`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_call_is_listed_live_then_stored() {
    let s = setup(faxd::config::LineTime::Realtime).await;
    let admin = &s.admin;
    let b = admin.child_account("receiver").await;
    let number = "+15557650042";
    receive_fax_number(admin, &b, number).await;
    // B receives one fax at a time.
    let (status, v) = admin
        .call(
            reqwest::Method::PATCH,
            &format!("/accounts/{b}"),
            Some(json!({"max_inbound": 1})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let tiff = s.dir.path().join("send.tiff");
    std::fs::write(&tiff, faxd::outbound::docs::blank_tiff(1)).expect("tiff");
    let outcome = s.standin.place_inbound_call(
        "+14155550100",
        number,
        tiff,
        InboundCallOptions {
            ident: "+14155550100".into(),
            ..InboundCallOptions::default()
        },
    );
    let live = common::poll_async(
        "the call in faxes/incoming",
        Duration::from_secs(40),
        || async {
            let list = admin.get(&format!("/accounts/{b}/faxes/incoming")).await;
            list.as_array()?
                .iter()
                .find(|c| c["status"] == "negotiated")
                .cloned()
        },
    )
    .await;
    assert_eq!(live["to_number"], number, "{live}");
    assert_eq!(live["from_number"], "+14155550100", "{live}");
    assert_eq!(live["remote_station_id"], "+14155550100", "{live}");
    assert!(
        live["transfer_rate"].as_u64().unwrap_or(0) >= 9600,
        "{live}"
    );
    // A second call while B receives its limit: busy, before any answer.
    let tiff2 = s.dir.path().join("send2.tiff");
    std::fs::write(&tiff2, faxd::outbound::docs::blank_tiff(1)).expect("tiff");
    let second =
        s.standin
            .place_inbound_call("+14155550101", number, tiff2, InboundCallOptions::default());
    let second = tokio::time::timeout(Duration::from_secs(30), second)
        .await
        .expect("the second call ends")
        .expect("an outcome");
    assert!(!second.result.success, "{:?}", second.result);
    assert_eq!(
        second.result.hangup_cause, "USER_BUSY",
        "{:?}",
        second.result
    );
    let outcome = tokio::time::timeout(Duration::from_secs(120), outcome)
        .await
        .expect("the call ends")
        .expect("an outcome");
    assert!(outcome.result.success, "{:?}", outcome.result);
    let inbox = common::poll_async("the fax in the inbox", Duration::from_secs(30), || async {
        let list = admin.inbox(&b).await;
        (!list.is_empty()).then_some(list)
    })
    .await;
    assert_eq!(inbox[0]["to_number"], number);
    let list = admin.get(&format!("/accounts/{b}/faxes/incoming")).await;
    assert_eq!(list, json!([]), "the call left faxes/incoming");
    stop_node(s.node).await;
    s.standin.shutdown();
}
