//! faxd's own FreeSWITCH engine (`faxd::gateway::freeswitch`) against the stand-in: the node
//! link connects, fetches the document with `http_get`, originates and follows the call to
//! its result, as it would with a real FreeSWITCH.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use faxd::config::FreeswitchSection;
use faxd::gateway::freeswitch::FreeswitchGateway;
use faxd::gateway::freeswitch::link::Node;
use faxd::gateway::tiff::{self, Compression, FAX_WIDTH, FINE_DPI, Page};
use faxd::gateway::{FaxEvent, FaxResult, Gateway, OutboundFax, TxOptions};
use faxd_fs_standin::{Config, StandIn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const DEADLINE: Duration = Duration::from_secs(30);

/// Waits (bounded) until the node's link is `up` or down, as its health reports it.
async fn link_state(node: &Node, up: bool) {
    let mut health = node.subscribe();
    tokio::time::timeout(DEADLINE, health.wait_for(|h| h.connected == up))
        .await
        .unwrap_or_else(|_| panic!("the link to {} never became {up}", node.addr()))
        .expect("the node is gone");
}

fn document(dir: &Path, pages: u32) -> PathBuf {
    let path = dir.join(format!("doc-{pages}.tiff"));
    let pages: Vec<Page> = (1..=pages)
        .map(|n| {
            let mut p = Page::blank(FAX_WIDTH, 1100, FINE_DPI);
            for line in 0..20u32 {
                for x in (100 + n * 10)..(900 + line * 20) {
                    p.set_black(x, 100 + line * 40);
                }
            }
            p
        })
        .collect();
    tiff::write_pages(&path, &pages, Compression::G3).expect("write TIFF");
    path
}

/// A file proxy stand-in: every GET answers `body`.
async fn file_proxy(body: Vec<u8>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: image/tiff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                r.extend_from_slice(&body);
                let _ = s.write_all(&r).await;
            });
        }
    });
    addr
}

async fn run_fax(to: &str, pages: u32) -> (Vec<FaxEvent>, FaxResult, StandIn) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let doc = document(dir.path(), pages);
    let proxy = file_proxy(std::fs::read(&doc).unwrap()).await;
    let s = StandIn::start(Config {
        cache_dir: dir.path().join("cache"),
        spool_dir: dir.path().join("spool"),
        ..Config::default()
    })
    .await
    .unwrap();
    let gw = FreeswitchGateway::new(FreeswitchSection {
        nodes: vec![s.esl_addr().to_string()],
        file_proxy_url: format!("http://{proxy}"),
        ..FreeswitchSection::default()
    });
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    for n in gw.nodes() {
        tokio::spawn(n.clone().run(stop.clone()));
    }
    // The node link is up once it authenticated and subscribed.
    for n in gw.nodes() {
        link_state(n, true).await;
    }
    let fax = OutboundFax {
        job_id: "job1".into(),
        call_id: "0123456789abcdef0123456789abcdef".into(),
        to: to.into(),
        from_number: "+15550100".into(),
        from_name: "ACME Fax".into(),
        fax_identity_number: "+15550100".into(),
        fax_identity_name: "ACME's FS, Inc.".into(),
        document: doc.clone(),
        document_url: Some(format!("http://{proxy}/fax/job1/token.tiff")),
        options: TxOptions {
            ring_timeout: Duration::from_secs(1),
            ..TxOptions::default()
        },
    };
    let mut call = tokio::time::timeout(DEADLINE, gw.originate(fax))
        .await
        .expect("originate in time")
        .expect("originate");
    let mut events = Vec::new();
    let result = loop {
        match tokio::time::timeout(DEADLINE, call.events.recv())
            .await
            .expect("events in time")
        {
            Some(FaxEvent::Finished(r)) => break r,
            Some(e) => events.push(e),
            None => panic!("the call ended without a result"),
        }
    };
    let _ = stop_tx.send(true);
    (events, result, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faxd_sends_a_fax_through_the_standin() {
    let (events, result, s) = run_fax("+14155550100", 2).await;
    assert!(result.success, "{result:?}");
    assert_eq!(result.transferred_pages, 2);
    assert_eq!(result.hangup_cause, "NORMAL_CLEARING");
    assert!(events.contains(&FaxEvent::Answered), "{events:?}");
    let pages: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            FaxEvent::Page { page, .. } => Some(*page),
            _ => None,
        })
        .collect();
    assert_eq!(pages, [1, 2]);
    // What the far side got from faxd's originate.
    let o = s.originates();
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].uuid, "01234567-89ab-cdef-0123-456789abcdef");
    assert!(
        o[0].vars
            .contains(&("fax_header".into(), "ACME's FS, Inc.".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faxd_sees_busy_and_no_answer_as_freeswitch_reports_them() {
    let (_, busy, _) = run_fax("+15550001234", 1).await;
    assert!(!busy.success);
    assert_eq!(busy.hangup_cause, "USER_BUSY", "{busy:?}");
    let (_, none, _) = run_fax("+15550002000", 1).await;
    assert_eq!(none.hangup_cause, "NO_ANSWER", "{none:?}");
    let (_, cut, _) = run_fax("+15550003123", 3).await;
    assert_eq!(cut.fax_result_code, 49, "{cut:?}");
    assert_eq!(cut.transferred_pages, 1);
}

/// faxd's inbound socket (`faxd::gateway::freeswitch::socket`) takes the stand-in's carrier
/// call: offered, answered, received into its spool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faxd_receives_a_carrier_call_from_the_standin() {
    use faxd::gateway::Answer;
    use faxd::gateway::freeswitch::socket::{SocketConfig, serve};

    let dir = tempfile::tempdir().unwrap();
    let doc = document(dir.path(), 2);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let faxd_addr = listener.local_addr().unwrap();
    let spool = dir.path().join("faxd-spool");
    std::fs::create_dir_all(&spool).unwrap();
    let (sink, mut calls) = tokio::sync::mpsc::channel(4);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(serve(
        listener,
        SocketConfig {
            spool: spool.clone(),
            max_calls: 4,
        },
        sink,
        stop,
    ));
    let s = StandIn::start(Config {
        inbound_listen: Some(faxd_addr),
        cache_dir: dir.path().join("cache"),
        spool_dir: dir.path().join("spool"),
        ..Config::default()
    })
    .await
    .unwrap();
    let outcome = s.place_inbound_call(
        "+14155550199",
        "+15559990123",
        doc,
        faxd_fs_standin::InboundCallOptions::default(),
    );
    let mut call = tokio::time::timeout(DEADLINE, calls.recv())
        .await
        .expect("faxd is offered the call")
        .expect("a call");
    assert_eq!(call.to, "+15559990123");
    assert_eq!(call.from_number, "+14155550199");
    assert!(call.answer.accept(Answer {
        station_id: "+15559990123".into(),
        t38: false,
    }));
    let result = loop {
        match tokio::time::timeout(DEADLINE, call.events.recv())
            .await
            .expect("events in time")
        {
            Some(FaxEvent::Finished(r)) => break r,
            Some(_) => {}
            None => panic!("the call ended without a result"),
        }
    };
    assert!(result.success, "{result:?}");
    assert_eq!(result.transferred_pages, 2);
    assert_eq!(result.remote_station_id, "+14155550199");
    let sent = tokio::time::timeout(DEADLINE, outcome)
        .await
        .unwrap()
        .unwrap();
    assert!(sent.result.success, "{:?}", sent.result);
    let file = result.received_file.clone().expect("received file");
    assert_eq!(tiff::count_pages(&file).unwrap(), 2);
    let _ = stop_tx.send(true);
}

/// A fax faxd sends to one of its own numbers goes out through the stand-in and comes back
/// on faxd's inbound socket: one spandsp session between the two legs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faxd_sends_a_fax_to_itself_through_the_standin() {
    use faxd::gateway::Answer;
    use faxd::gateway::freeswitch::socket::{SocketConfig, serve};

    let dir = tempfile::tempdir().unwrap();
    let doc = document(dir.path(), 2);
    let proxy = file_proxy(std::fs::read(&doc).unwrap()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let faxd_addr = listener.local_addr().unwrap();
    let spool = dir.path().join("faxd-spool");
    std::fs::create_dir_all(&spool).unwrap();
    let (sink, mut calls) = tokio::sync::mpsc::channel(4);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(serve(
        listener,
        SocketConfig {
            spool,
            max_calls: 4,
        },
        sink,
        stop.clone(),
    ));
    let s = StandIn::start(Config {
        inbound_listen: Some(faxd_addr),
        faxd_numbers: vec!["+15559990xxx".into()],
        cache_dir: dir.path().join("cache"),
        spool_dir: dir.path().join("spool"),
        ..Config::default()
    })
    .await
    .unwrap();
    let gw = FreeswitchGateway::new(FreeswitchSection {
        nodes: vec![s.esl_addr().to_string()],
        file_proxy_url: format!("http://{proxy}"),
        ..FreeswitchSection::default()
    });
    for n in gw.nodes() {
        tokio::spawn(n.clone().run(stop.clone()));
    }
    for n in gw.nodes() {
        link_state(n, true).await;
    }
    let fax = OutboundFax {
        job_id: "job2".into(),
        call_id: "fedcba9876543210fedcba9876543210".into(),
        to: "+15559990123".into(),
        from_number: "+15550100".into(),
        from_name: "ACME Fax".into(),
        fax_identity_number: "+15550100".into(),
        fax_identity_name: "ACME".into(),
        document: doc.clone(),
        document_url: Some(format!("http://{proxy}/fax/job2/token.tiff")),
        options: TxOptions::default(),
    };
    let mut out = tokio::time::timeout(DEADLINE, gw.originate(fax))
        .await
        .unwrap()
        .unwrap();
    let mut incoming = tokio::time::timeout(DEADLINE, calls.recv())
        .await
        .expect("faxd is offered its own call")
        .expect("a call");
    assert_eq!(incoming.to, "+15559990123");
    assert_eq!(incoming.from_number, "+15550100");
    assert!(incoming.answer.accept(Answer {
        station_id: "+15559990123".into(),
        t38: false,
    }));
    let finished = |mut rx: tokio::sync::mpsc::Receiver<FaxEvent>| async move {
        loop {
            match tokio::time::timeout(DEADLINE, rx.recv())
                .await
                .expect("events in time")
            {
                Some(FaxEvent::Finished(r)) => return r,
                Some(_) => {}
                None => panic!("the call ended without a result"),
            }
        }
    };
    let (sent, received) = tokio::join!(
        finished(std::mem::replace(
            &mut out.events,
            tokio::sync::mpsc::channel(1).1
        )),
        finished(std::mem::replace(
            &mut incoming.events,
            tokio::sync::mpsc::channel(1).1
        )),
    );
    assert!(sent.success, "{sent:?}");
    assert_eq!(sent.transferred_pages, 2);
    assert_eq!(sent.remote_station_id, "+15559990123");
    assert!(received.success, "{received:?}");
    assert_eq!(received.remote_station_id, "+15550100");
    let file = received.received_file.expect("received file");
    assert_eq!(tiff::count_pages(&file).unwrap(), 2);
    let _ = stop_tx.send(true);
}

/// faxd's node link reconnects after the stand-in drops every connection, and after a pause
/// of its listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faxd_reconnects_after_drops_and_pauses() {
    let dir = tempfile::tempdir().unwrap();
    let s = StandIn::start(Config {
        cache_dir: dir.path().join("cache"),
        spool_dir: dir.path().join("spool"),
        ..Config::default()
    })
    .await
    .unwrap();
    let gw = FreeswitchGateway::new(FreeswitchSection {
        nodes: vec![s.esl_addr().to_string()],
        ..FreeswitchSection::default()
    });
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let node = gw.nodes()[0].clone();
    tokio::spawn(node.clone().run(stop));
    link_state(&node, true).await;
    s.pause_listener(Duration::from_millis(1500));
    s.drop_connections();
    link_state(&node, false).await;
    link_state(&node, true).await;
    let _ = stop_tx.send(true);
}
