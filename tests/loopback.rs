//! The loopback media engine end to end: real spandsp T.30 terminals over companded audio and
//! T.38, the virtual PSTN's special numbers, hangups, inbound calls to local numbers. No
//! mocks, no fixed sleeps: every wait has a deadline.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use faxd::config::{G711Law, LoopbackSection};
use faxd::gateway::loopback::LoopbackGateway;
use faxd::gateway::tiff::{self, Compression, FAX_WIDTH, FINE_DPI, Page};
use faxd::gateway::{
    Answer, FaxCall, FaxEvent, FaxResult, Gateway, GatewayError, InboundCall, NumberDirectory,
    OutboundFax, Refusal, TxOptions,
};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Generous: a debug-build call of a few pages takes seconds of CPU on a loaded machine.
const CALL_DEADLINE: Duration = Duration::from_secs(240);

/// Local numbers of the test's "callflows".
struct Directory(Vec<String>);

#[async_trait::async_trait]
impl NumberDirectory for Directory {
    async fn is_local(&self, number: &str) -> bool {
        self.0.iter().any(|n| n == number)
    }
}

/// A letter page at fine resolution with a pattern unique to `n`: text-like blocks and rules.
fn page(n: u32) -> Page {
    let mut p = Page::blank(FAX_WIDTH, 2200, FINE_DPI);
    for line in 0..40u32 {
        let y0 = 100 + line * 50;
        for word in 0..12u32 {
            let x0 = 100 + word * 130 + ((line * 7 + n * 13 + word * 3) % 40);
            let len = 40 + (line * 11 + word * 5 + n * 17) % 70;
            for y in y0..y0 + 22 {
                for x in x0..x0 + len {
                    if !(x + y + n).is_multiple_of(3) {
                        p.set_black(x, y);
                    }
                }
            }
        }
    }
    for x in 0..FAX_WIDTH {
        p.set_black(x, 60 + n * 4);
    }
    p
}

fn document(dir: &Path, pages: u32, compression: Compression) -> (PathBuf, Vec<Page>) {
    let pages: Vec<Page> = (1..=pages).map(page).collect();
    let path = dir.join(format!("doc-{}-{compression:?}.tiff", pages.len()));
    tiff::write_pages(&path, &pages, compression).expect("write test TIFF");
    (path, pages)
}

struct Rig {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    gateway: LoopbackGateway,
    inbound: mpsc::Receiver<InboundCall>,
}

fn rig(config: LoopbackSection, local: &[&str]) -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let (tx, rx) = mpsc::channel(4);
    let directory = Arc::new(Directory(local.iter().map(|s| s.to_string()).collect()));
    let gateway =
        LoopbackGateway::new(config, path.join("spool"), directory, Some(tx)).expect("gateway");
    Rig {
        _dir: dir,
        dir: path,
        gateway,
        inbound: rx,
    }
}

impl Rig {
    /// The next inbound call the engine hands over, within the call deadline.
    async fn next_inbound(&mut self) -> InboundCall {
        timeout(CALL_DEADLINE, self.inbound.recv())
            .await
            .expect("inbound call in time")
            .expect("inbound call")
    }
}

fn fax(call_id: &str, to: &str, document: &Path, options: TxOptions) -> OutboundFax {
    OutboundFax {
        job_id: format!("job-{call_id}"),
        call_id: call_id.into(),
        to: to.into(),
        from_number: "+15550100".into(),
        from_name: "ACME".into(),
        fax_identity_number: "+15550100".into(),
        fax_identity_name: String::new(),
        document: document.to_path_buf(),
        document_url: None,
        options,
    }
}

/// Every event of a call up to `Finished`, within the deadline.
async fn call_events(call: &mut FaxCall) -> (Vec<FaxEvent>, FaxResult) {
    collect(&mut call.events).await
}

async fn collect(rx: &mut mpsc::Receiver<FaxEvent>) -> (Vec<FaxEvent>, FaxResult) {
    let mut seen = Vec::new();
    loop {
        let e = timeout(CALL_DEADLINE, rx.recv())
            .await
            .expect("call did not finish in time")
            .expect("events closed before Finished");
        if let FaxEvent::Finished(r) = e {
            return (seen, r);
        }
        seen.push(e);
    }
}

fn pages_of(events: &[FaxEvent]) -> Vec<(u32, u32)> {
    events
        .iter()
        .filter_map(|e| match e {
            FaxEvent::Page { page, total, .. } => Some((*page, *total)),
            _ => None,
        })
        .collect()
}

fn assert_same_image(sent: &[Page], received: &Path) {
    let got = tiff::read_pages(received).expect("read received TIFF");
    assert_eq!(got.len(), sent.len(), "page count");
    for (i, (s, r)) in sent.iter().zip(&got).enumerate() {
        assert_eq!(r.width, s.width, "page {} width", i + 1);
        assert_eq!(r.rows.len(), s.rows.len(), "page {} length", i + 1);
        assert!(r.rows == s.rows, "page {} pixels differ", i + 1);
        assert!(s.black_pixels() > 10_000);
    }
}

async fn send_and_check(
    config: LoopbackSection,
    options: TxOptions,
    pages: u32,
    compression: Compression,
) -> FaxResult {
    let r = rig(config, &[]);
    let (doc, sent) = document(&r.dir, pages, compression);
    let mut call = r
        .gateway
        .originate(fax("c1", "+14155550123", &doc, options.clone()))
        .await
        .expect("originate");
    let (events, result) = call_events(&mut call).await;
    assert!(
        matches!(events.first(), Some(FaxEvent::Answered)),
        "{events:?}"
    );
    assert!(
        matches!(events.get(1), Some(FaxEvent::Negotiated { transfer_rate, .. }) if *transfer_rate > 0),
        "{events:?}"
    );
    let expected: Vec<(u32, u32)> = (1..=pages).map(|p| (p, pages)).collect();
    assert_eq!(pages_of(&events), expected);
    assert!(result.success, "{result:?}");
    assert_eq!(result.fax_result_code, 0);
    assert_eq!(result.fax_result_text, "OK");
    assert_eq!(result.hangup_cause, "NORMAL_CLEARING");
    assert_eq!(result.sip_code, 200);
    assert_eq!(result.transferred_pages, pages);
    assert_eq!(result.total_pages, pages);
    assert_eq!(result.ecm_used, options.ecm);
    assert_eq!(result.t38_used, options.t38);
    assert_eq!(result.remote_station_id, "+14155550123");
    assert_eq!(result.local_station_id, "+15550100");
    assert_eq!(result.bad_rows, 0);
    assert_eq!(result.image_resolution, "8040x7700");
    eprintln!("{options:?} -> {result:?}");
    assert_same_image(&sent, &r.gateway.far_end_file("c1"));
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_ecm_three_pages_arrive_equal() {
    let r = send_and_check(
        LoopbackSection::default(),
        TxOptions::default(),
        3,
        Compression::G4,
    )
    .await;
    assert_eq!(r.transfer_rate, 14_400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_alaw_without_ecm_at_9600() {
    let config = LoopbackSection {
        law: G711Law::Alaw,
        ..LoopbackSection::default()
    };
    let options = TxOptions {
        ecm: false,
        max_rate: 9_600,
        ..TxOptions::default()
    };
    let r = send_and_check(config, options, 2, Compression::G3).await;
    assert_eq!(r.transfer_rate, 9_600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t38_with_ecm() {
    let options = TxOptions {
        t38: true,
        ..TxOptions::default()
    };
    send_and_check(LoopbackSection::default(), options, 2, Compression::G4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t38_without_ecm() {
    let options = TxOptions {
        t38: true,
        ecm: false,
        ..TxOptions::default()
    };
    send_and_check(LoopbackSection::default(), options, 2, Compression::G3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_number() {
    let r = rig(LoopbackSection::default(), &[]);
    let (doc, _) = document(&r.dir, 1, Compression::G4);
    let mut call = r
        .gateway
        .originate(fax("b1", "+15550001234", &doc, TxOptions::default()))
        .await
        .unwrap();
    let (events, result) = call_events(&mut call).await;
    assert!(events.is_empty(), "{events:?}");
    assert!(!result.success);
    assert_eq!(result.hangup_cause, "USER_BUSY");
    assert_eq!(result.sip_code, 486);
    assert_eq!(result.transferred_pages, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_after_the_ring_timeout() {
    let r = rig(LoopbackSection::default(), &[]);
    let (doc, _) = document(&r.dir, 1, Compression::G4);
    let ring = Duration::from_millis(300);
    let options = TxOptions {
        ring_timeout: ring,
        ..TxOptions::default()
    };
    let started = std::time::Instant::now();
    let mut call = r
        .gateway
        .originate(fax("n1", "+15550002000", &doc, options))
        .await
        .unwrap();
    let (events, result) = call_events(&mut call).await;
    assert!(started.elapsed() >= ring);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(result.hangup_cause, "NO_ANSWER");
    assert_eq!(result.sip_code, 480);
    assert!(!result.success);

    // Hanging up while it rings cancels the call.
    let options = TxOptions {
        ring_timeout: Duration::from_secs(3600),
        ..TxOptions::default()
    };
    let mut call = r
        .gateway
        .originate(fax("n2", "+15550002001", &doc, options))
        .await
        .unwrap();
    call.hangup.hangup("NORMAL_CLEARING");
    let (_, result) = call_events(&mut call).await;
    assert_eq!(result.hangup_cause, "ORIGINATOR_CANCEL");
    assert_eq!(result.sip_code, 487);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_end_hangs_up_after_page_one() {
    let r = rig(LoopbackSection::default(), &[]);
    let (doc, sent) = document(&r.dir, 3, Compression::G4);
    let mut call = r
        .gateway
        .originate(fax("h1", "+15550003123", &doc, TxOptions::default()))
        .await
        .unwrap();
    let (events, result) = call_events(&mut call).await;
    assert_eq!(pages_of(&events), vec![(1, 3)]);
    assert!(!result.success);
    assert_eq!(result.fax_result_code, 49, "{result:?}");
    assert_eq!(result.fax_result_text, "The call dropped prematurely");
    assert_eq!(result.transferred_pages, 1);
    assert_eq!(result.total_pages, 3);
    // The far end kept the page it had.
    let got = tiff::read_pages(&r.gateway.far_end_file("h1")).unwrap();
    assert_eq!(got.first().map(|p| &p.rows), Some(&sent[0].rows));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_end_without_fax_tones() {
    let r = rig(LoopbackSection::default(), &[]);
    let (doc, _) = document(&r.dir, 1, Compression::G4);
    for t38 in [false, true] {
        let options = TxOptions {
            t38,
            ..TxOptions::default()
        };
        let mut call = r
            .gateway
            .originate(fax(&format!("s{t38}"), "+15550004123", &doc, options))
            .await
            .unwrap();
        let (events, result) = call_events(&mut call).await;
        assert_eq!(events, vec![FaxEvent::Answered]);
        assert!(!result.success);
        assert_eq!(result.fax_result_code, 2, "{result:?}");
        assert_eq!(
            result.fax_result_text,
            "Timed out waiting for initial communication"
        );
        assert_eq!(result.transferred_pages, 0);
        assert_eq!(result.t38_used, t38);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hangup_mid_call_ends_with_a_result() {
    let r = rig(LoopbackSection::default(), &[]);
    let (doc, _) = document(&r.dir, 3, Compression::G4);
    let mut call = r
        .gateway
        .originate(fax("m1", "+14155550199", &doc, TxOptions::default()))
        .await
        .unwrap();
    // Hang up as soon as page 1 is through.
    loop {
        let e = timeout(CALL_DEADLINE, call.events.recv())
            .await
            .expect("deadline")
            .expect("event");
        if matches!(e, FaxEvent::Page { page: 1, .. }) {
            call.hangup.hangup("NORMAL_CLEARING");
            break;
        }
        assert!(!matches!(e, FaxEvent::Finished(_)), "{e:?}");
    }
    let (events, result) = call_events(&mut call).await;
    assert!(pages_of(&events).len() <= 1, "{events:?}");
    assert!(!result.success);
    assert_eq!(result.fax_result_code, 49, "{result:?}");
    assert_eq!(result.hangup_cause, "NORMAL_CLEARING");
    assert!((1..=2).contains(&result.transferred_pages), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_number_becomes_an_inbound_call() {
    let mut r = rig(LoopbackSection::default(), &["+15558675309"]);
    let (doc, sent) = document(&r.dir, 2, Compression::G4);
    let mut call = r
        .gateway
        .originate(fax("i1", "+15558675309", &doc, TxOptions::default()))
        .await
        .unwrap();
    let mut inbound = r.next_inbound().await;
    assert_eq!(inbound.call_id, "i1");
    assert_eq!(inbound.to, "+15558675309");
    assert_eq!(inbound.from_number, "+15550100");
    let csi = "+1 555 867 5309";
    assert!(
        inbound.answer.accept(Answer {
            station_id: csi.into(),
            t38: false,
        }),
        "the call still rings"
    );
    let (tx_events, rx_events) = tokio::join!(call_events(&mut call), collect(&mut inbound.events));
    let (tx_events, tx) = tx_events;
    let (rx_events, rx) = rx_events;
    assert!(tx.success, "{tx:?}");
    assert_eq!(tx.transferred_pages, 2);
    assert_eq!(pages_of(&tx_events), vec![(1, 2), (2, 2)]);
    assert!(matches!(rx_events.first(), Some(FaxEvent::Answered)));
    assert!(
        rx_events.iter().any(
            |e| matches!(e, FaxEvent::Negotiated { remote_station_id, .. } if remote_station_id == "+15550100")
        ),
        "{rx_events:?}"
    );
    assert_eq!(pages_of(&rx_events), vec![(1, 1), (2, 2)]);
    assert!(rx.success, "{rx:?}");
    assert_eq!(rx.transferred_pages, 2);
    assert_eq!(rx.remote_station_id, "+15550100");
    // The receiver answered with its own station id (CSI); the sender saw it.
    assert_eq!(rx.local_station_id, csi);
    assert_eq!(tx.remote_station_id, csi);
    let file = rx.received_file.expect("received file");
    assert_eq!(file, r.gateway.inbound_file("i1"));
    assert_same_image(&sent, &file);
}

/// The receiving side refuses a ringing inbound call (nobody receives faxes on the number):
/// the caller gets the refusal's cause and SIP code, nothing is received; a call dropped
/// undecided is a temporary failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_inbound_call_fails_for_its_caller_with_the_refusal() {
    let mut r = rig(LoopbackSection::default(), &["+15558675311"]);
    let (doc, _) = document(&r.dir, 1, Compression::G4);
    let mut call = r
        .gateway
        .originate(fax("i3", "+15558675311", &doc, TxOptions::default()))
        .await
        .unwrap();
    let mut inbound = r.next_inbound().await;
    inbound.answer.refuse(Refusal::unallocated());
    let (events, tx) = call_events(&mut call).await;
    assert!(!tx.success, "{tx:?}");
    assert_eq!(tx.hangup_cause, "UNALLOCATED_NUMBER");
    assert_eq!(tx.sip_code, 404);
    assert_eq!(tx.transferred_pages, 0);
    assert!(
        !events.iter().any(|e| matches!(e, FaxEvent::Answered)),
        "{events:?}"
    );
    let (rx_events, _) = timeout(CALL_DEADLINE, async {
        let mut v = Vec::new();
        while let Some(e) = inbound.events.recv().await {
            v.push(e);
        }
        (v, ())
    })
    .await
    .expect("the refused call's events close");
    assert!(rx_events.is_empty(), "{rx_events:?}");
    assert!(!r.gateway.inbound_file("i3").exists());

    let mut call = r
        .gateway
        .originate(fax("i4", "+15558675311", &doc, TxOptions::default()))
        .await
        .unwrap();
    let inbound = r.next_inbound().await;
    drop(inbound);
    let (_, tx) = call_events(&mut call).await;
    assert_eq!(tx.hangup_cause, "NORMAL_TEMPORARY_FAILURE", "{tx:?}");
    assert_eq!(tx.sip_code, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_documents_and_bad_call_ids_are_refused() {
    let r = rig(LoopbackSection::default(), &[]);
    let missing = r.dir.join("missing.tiff");
    let err = r
        .gateway
        .originate(fax("x1", "+14155550123", &missing, TxOptions::default()))
        .await
        .err();
    assert!(matches!(err, Some(GatewayError::Document(_))), "{err:?}");
    let (doc, _) = document(&r.dir, 1, Compression::G4);
    let err = r
        .gateway
        .originate(fax("../x", "+14155550123", &doc, TxOptions::default()))
        .await
        .err();
    assert!(matches!(err, Some(GatewayError::Refused(_))), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_header_line_is_drawn_above_the_image() {
    let r = rig(LoopbackSection::default(), &[]);
    let (doc, sent) = document(&r.dir, 1, Compression::G4);
    let mut f = fax("hd1", "+14155550123", &doc, TxOptions::default());
    f.fax_identity_name = "ACME Fax".into();
    let mut call = r.gateway.originate(f).await.unwrap();
    let (_, result) = call_events(&mut call).await;
    assert!(result.success, "{result:?}");
    let got = tiff::read_pages(&r.gateway.far_end_file("hd1")).unwrap();
    assert_eq!(got.len(), 1);
    // spandsp draws a 32-row header line above the image and keeps the page length (the
    // image's last 32 rows fall off the bottom), as FreeSWITCH's txfax does with fax_header.
    let (rows, orig) = (&got[0].rows, &sent[0].rows);
    assert_eq!(rows.len(), orig.len());
    let (header, image) = rows.split_at(32);
    assert!(header.iter().flatten().any(|b| *b != 0), "header is blank");
    assert!(image == &orig[..orig.len() - 32], "image changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_line_time_runs_at_the_speed_of_a_line() {
    // Accelerated: 60 s of line time until T0 expires pass in moments.
    let r = rig(LoopbackSection::default(), &[]);
    let (doc, _) = document(&r.dir, 1, Compression::G4);
    let started = std::time::Instant::now();
    let mut call = r
        .gateway
        .originate(fax("rt0", "+15550004000", &doc, TxOptions::default()))
        .await
        .unwrap();
    let (_, result) = call_events(&mut call).await;
    assert_eq!(result.fax_result_code, 2);
    let accelerated = started.elapsed();

    // Real time: a call limited to 2 s of line time lasts 2 s of wall time.
    let config = LoopbackSection {
        line_time: faxd::config::LineTime::Realtime,
        max_call_secs: 2,
        ..LoopbackSection::default()
    };
    let r = rig(config, &[]);
    let started = std::time::Instant::now();
    let mut call = r
        .gateway
        .originate(fax("rt1", "+15550004000", &doc, TxOptions::default()))
        .await
        .unwrap();
    let (_, result) = call_events(&mut call).await;
    let realtime = started.elapsed();
    assert_eq!(result.hangup_cause, "ALLOTTED_TIMEOUT");
    assert_eq!(result.fax_result_code, 49, "{result:?}");
    assert!(realtime >= Duration::from_millis(1900), "{realtime:?}");
    assert!(realtime < Duration::from_secs(30), "{realtime:?}");
    assert!(accelerated < realtime, "{accelerated:?} vs {realtime:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiving_side_of_an_inbound_call_can_hang_up() {
    let mut r = rig(LoopbackSection::default(), &["+15558675310"]);
    let (doc, _) = document(&r.dir, 3, Compression::G4);
    let mut call = r
        .gateway
        .originate(fax("i2", "+15558675310", &doc, TxOptions::default()))
        .await
        .unwrap();
    let mut inbound = r.next_inbound().await;
    assert!(inbound.answer.accept(Answer::default()));
    // The receiver (fax_request) hangs up once page 1 is in.
    loop {
        let e = timeout(CALL_DEADLINE, inbound.events.recv())
            .await
            .expect("deadline")
            .expect("event");
        if matches!(e, FaxEvent::Page { page: 1, .. }) {
            inbound.hangup.hangup("NORMAL_CLEARING");
            break;
        }
    }
    let ((_, tx), (_, rx)) = tokio::join!(call_events(&mut call), collect(&mut inbound.events));
    assert_eq!(tx.fax_result_code, 49, "{tx:?}");
    assert_eq!(rx.fax_result_code, 49, "{rx:?}");
    assert!(!tx.success && !rx.success);
    assert!(rx.transferred_pages >= 1, "{rx:?}");
    assert!(rx.received_file.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hangs_up_calls_in_progress_and_refuses_new_ones() {
    let config = LoopbackSection {
        line_time: faxd::config::LineTime::Realtime,
        ..LoopbackSection::default()
    };
    let r = rig(config, &[]);
    let (doc, _) = document(&r.dir, 2, Compression::G4);
    let mut call = r
        .gateway
        .originate(fax("sd1", "+14155550123", &doc, TxOptions::default()))
        .await
        .unwrap();
    let e = timeout(CALL_DEADLINE, call.events.recv()).await.unwrap();
    assert_eq!(e, Some(FaxEvent::Answered));
    let started = std::time::Instant::now();
    r.gateway.shutdown();
    let (_, result) = call_events(&mut call).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(result.hangup_cause, "SYSTEM_SHUTDOWN");
    assert_eq!(result.fax_result_code, 49, "{result:?}");
    let err = r
        .gateway
        .originate(fax("sd2", "+14155550123", &doc, TxOptions::default()))
        .await
        .err();
    assert!(matches!(err, Some(GatewayError::Unavailable(_))), "{err:?}");
}
