//! The stand-in driven over real sockets by a minimal ESL client built on faxd's codec; its
//! frames are compared with the frames a real FreeSWITCH 1.10.12 wrote
//! (`tests/fixtures/esl/*.jsonl` of the faxd crate).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use faxd::gateway::esl::{Decoder, Event, Frame, RawFrame, SpandspEvent};
use faxd::gateway::tiff::{self, Compression, FAX_WIDTH, FINE_DPI, Page};
use faxd_fs_standin::{Config, InboundCallOptions, StandIn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- the captured frames

fn capture_3_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/esl/freeswitch-1.10.12-capture-3.jsonl")
}

/// Capture 3 as `(mode, dir, data)`.
fn capture_3() -> Vec<(String, String, String)> {
    std::fs::read_to_string(capture_3_path())
        .expect("capture 3")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            let f = |k: &str| v[k].as_str().unwrap_or("").to_string();
            (f("mode"), f("dir"), f("data"))
        })
        .collect()
}

/// The captured sofia session of capture 3 (lines 131–187: an originate through sofia to a
/// number whose inbound call runs faxd's socket, one page): the labels of the events the
/// socket got and of the events the inbound connection got, the legs named `A` and `B`.
fn captured_sofia_session() -> (Vec<String>, Vec<String>) {
    let frames = capture_3();
    let session = &frames[130..187];
    let field = |data: &str, name: &str| -> Option<String> {
        let payload = data.split_once("\n\n").map(|(_, p)| p).unwrap_or(data);
        header_of(payload, name).map(faxd::gateway::esl::urlenc::decode)
    };
    let a = "01a513ac-6560-4df5-8af5-3259239f72ee";
    let mut socket = Vec::new();
    let mut inbound = Vec::new();
    for (mode, dir, data) in session {
        if dir != "S->C" || !data.starts_with("Content-Length:") {
            continue;
        }
        let payload = data.split_once("\n\n").map(|(_, p)| p).unwrap_or("");
        let Some(name) = field(data, "Event-Name") else {
            continue;
        };
        let mut l = field(data, "Event-Subclass").unwrap_or(name);
        if let Some(app) = header_of(payload, "Application") {
            l = format!("{l}({app})");
        }
        match mode.as_str() {
            "outbound" => socket.push(l),
            _ => {
                let leg = match field(data, "Unique-ID") {
                    Some(u) if u == a => "A:",
                    Some(_) => "B:",
                    None => "",
                };
                inbound.push(format!("{leg}{l}"));
            }
        }
    }
    (socket, inbound)
}

fn fixture_frames() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/esl");
    let mut out = Vec::new();
    for f in [
        dir.join("freeswitch-1.10.12-capture.jsonl"),
        dir.join("freeswitch-1.10.12-capture-2.jsonl"),
        capture_3_path(),
    ] {
        let text = std::fs::read_to_string(f).expect("fixture");
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            out.push(v["data"].as_str().unwrap_or("").to_string());
        }
    }
    out
}

/// Header names of an event payload, up to its body, without the channel variables.
fn shape(payload: &str) -> Vec<String> {
    payload
        .split('\n')
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_string()))
        .filter(|n| !n.starts_with("variable_") && n != "Content-Length")
        .collect()
}

fn header_of<'a>(payload: &'a str, name: &str) -> Option<&'a str> {
    payload
        .split('\n')
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
}

/// Asserts a captured event of the same kind (name, subclass, application) has exactly the
/// same non-variable header names in the same order.
fn assert_captured_shape(payload: &str) {
    assert!(check_captured_shape(payload, true));
}

/// Like [`assert_captured_shape`] when such an event was captured; `false` when none was.
fn check_captured_shape(payload: &str, must_exist: bool) -> bool {
    let key = |p: &str| {
        (
            header_of(p, "Event-Name").map(str::to_string),
            header_of(p, "Event-Subclass").map(str::to_string),
            header_of(p, "Application").map(str::to_string),
        )
    };
    let mine = shape(payload);
    let k = key(payload);
    let candidates: Vec<Vec<String>> = fixture_frames()
        .iter()
        .filter(|f| f.starts_with("Content-Length:"))
        .filter_map(|f| f.split_once("\n\n").map(|(_, p)| p.to_string()))
        .filter(|p| key(p) == k)
        .map(|p| shape(&p))
        .collect();
    if candidates.is_empty() {
        assert!(!must_exist, "no captured event like {k:?}");
        return false;
    }
    assert!(
        candidates.contains(&mine),
        "{k:?} differs from every capture:\n{mine:?}\ncaptured: {:?}",
        candidates[0]
    );
    true
}

// ---------------------------------------------------------------- a minimal ESL client

struct Client {
    stream: TcpStream,
    dec: Decoder,
    /// Events in arrival order, with their raw payloads.
    events: Vec<(Event, String)>,
    /// Command replies skipped by [`Client::until_skipping_replies`].
    replies: usize,
}

enum Got {
    Frame(RawFrame),
    Closed,
}

impl Client {
    async fn raw(&mut self) -> Got {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(f) = self.dec.next_frame().expect("framing") {
                return Got::Frame(f);
            }
            let mut buf = [0u8; 16384];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut buf))
                .await
                .expect("no frame within the deadline")
                .unwrap_or(0);
            if n == 0 {
                return Got::Closed;
            }
            self.dec.feed(&buf[..n]);
        }
    }

    /// The next frame that is not an event (events are kept).
    async fn next_non_event(&mut self) -> Option<RawFrame> {
        loop {
            match self.raw().await {
                Got::Closed => return None,
                Got::Frame(f) if f.content_type() == Some("text/event-plain") => {
                    let payload = String::from_utf8_lossy(&f.body).into_owned();
                    let ev = Event::from_plain(&f.body).expect("event");
                    self.events.push((ev, payload));
                }
                Got::Frame(f) => return Some(f),
            }
        }
    }

    async fn send(&mut self, s: &str) {
        self.stream.write_all(s.as_bytes()).await.expect("write");
    }

    async fn cmd(&mut self, s: &str) -> RawFrame {
        self.send(s).await;
        self.next_non_event().await.expect("reply")
    }

    async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let mut c = Client {
            stream,
            dec: Decoder::default(),
            events: Vec::new(),
            replies: 0,
        };
        let hello = c.next_non_event().await.expect("greeting");
        assert_eq!(hello.content_type(), Some("auth/request"));
        c
    }

    async fn login(addr: SocketAddr) -> Client {
        Client::login_with(addr, "event plain BACKGROUND_JOB CHANNEL_ANSWER CHANNEL_HANGUP_COMPLETE CHANNEL_EXECUTE_COMPLETE CUSTOM spandsp::txfaxnegociateresult spandsp::txfaxpageresult spandsp::txfaxresult\n\n").await
    }

    async fn login_with(addr: SocketAddr, subscription: &str) -> Client {
        let mut c = Client::connect(addr).await;
        let r = c.cmd("auth ClueCon\n\n").await;
        assert_eq!(r.header("Reply-Text"), Some("+OK accepted"));
        let r = c.cmd(subscription).await;
        assert_eq!(
            r.header("Reply-Text"),
            Some("+OK event listener enabled plain")
        );
        c
    }

    /// Reads until an event matches; returns its index in `events`.
    async fn until(&mut self, pred: impl Fn(&Event) -> bool) -> usize {
        loop {
            if let Some(i) = self.events.iter().position(|(e, _)| pred(e)) {
                return i;
            }
            match self.raw().await {
                Got::Closed => panic!("closed while waiting for an event"),
                Got::Frame(f) if f.content_type() == Some("text/event-plain") => {
                    let payload = String::from_utf8_lossy(&f.body).into_owned();
                    let ev = Event::from_plain(&f.body).expect("event");
                    self.events.push((ev, payload));
                }
                Got::Frame(f) => panic!("unexpected frame {f:?}"),
            }
        }
    }

    /// [`Client::until`], counting the command replies read meanwhile.
    async fn until_skipping_replies(&mut self, pred: impl Fn(&Event) -> bool) -> usize {
        loop {
            if let Some(i) = self.events.iter().position(|(e, _)| pred(e)) {
                return i;
            }
            match self.raw().await {
                Got::Closed => panic!("closed while waiting for an event"),
                Got::Frame(f) if f.content_type() == Some("text/event-plain") => {
                    let payload = String::from_utf8_lossy(&f.body).into_owned();
                    let ev = Event::from_plain(&f.body).expect("event");
                    self.events.push((ev, payload));
                }
                Got::Frame(f) if f.content_type() == Some("command/reply") => self.replies += 1,
                Got::Frame(f) => panic!("unexpected frame {f:?}"),
            }
        }
    }

    /// Events of channel `uuid` and of job `job`, as `name[/subclass]` labels.
    fn labels(&self, uuid: &str, job: &str) -> Vec<String> {
        self.events
            .iter()
            .filter(|(e, _)| e.unique_id() == Some(uuid) || e.job_uuid() == Some(job))
            .map(|(e, _)| label(e))
            .collect()
    }
}

/// [`label`] with the application of EXECUTE events: `CHANNEL_EXECUTE(answer)`.
fn app_label(e: &Event) -> String {
    match e.header("Application") {
        Some(a) => format!("{}({a})", label(e)),
        None => label(e),
    }
}

fn label(e: &Event) -> String {
    match e.subclass() {
        Some(s) => s.to_string(),
        None => e.name().unwrap_or("").to_string(),
    }
}

// ---------------------------------------------------------------- fixtures of the tests

fn page(n: u32) -> Page {
    let mut p = Page::blank(FAX_WIDTH, 1100, FINE_DPI);
    for line in 0..20u32 {
        for x in (100 + n * 10)..(900 + line * 20) {
            p.set_black(x, 100 + line * 40);
        }
    }
    p
}

fn document(dir: &Path, pages: u32) -> PathBuf {
    let path = dir.join(format!("doc-{pages}.tiff"));
    let pages: Vec<Page> = (1..=pages).map(page).collect();
    tiff::write_pages(&path, &pages, Compression::G3).expect("write TIFF");
    path
}

async fn standin(dir: &Path, inbound: Option<SocketAddr>) -> StandIn {
    let config = Config {
        inbound_listen: inbound,
        faxd_numbers: vec!["+15559990xxx".into()],
        cache_dir: dir.join("cache"),
        spool_dir: dir.join("spool"),
        idle_timeout: Duration::from_secs(60),
        ..Config::default()
    };
    StandIn::start(config).await.expect("start")
}

/// A one-file HTTP server: `/fax/…/x.tiff` answers `body`, anything else 404.
async fn http_server(body: Vec<u8>) -> SocketAddr {
    http_server_gated(body, Arc::new(Semaphore::new(Semaphore::MAX_PERMITS))).await
}

/// [`http_server`] whose answers to `/slow/…` wait for a permit of `gate`.
async fn http_server_gated(body: Vec<u8>, gate: Arc<Semaphore>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let body = body.clone();
            let gate = gate.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&req)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                if line.contains("/slow/") {
                    let _permit = gate.acquire().await;
                }
                let resp = if line.contains("/x.tiff ") {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: image/tiff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(&body);
                    r
                } else {
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_vec()
                };
                let _ = s.write_all(&resp).await;
            });
        }
    });
    addr
}

fn originate(uuid: &str, job: &str, number: &str, path: &str, extra: &str) -> String {
    format!(
        "bgapi originate {{origination_uuid={uuid},fax_ident=+15550100,fax_header='ACME\\'s FS\\, Inc.',fax_use_ecm=true,fax_enable_t38=true,fax_enable_t38_request=false,origination_caller_id_number=+15550100,origination_caller_id_name='ACME Fax',ignore_early_media=true{extra}}}sofia/gateway/carrier/{number} &txfax({path})\nJob-UUID: {job}\n\n"
    )
}

fn body(c: &Client, i: usize) -> &str {
    c.events[i].0.body.as_deref().unwrap_or("")
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_page_fax_looks_like_freeswitch() {
    let dir = tempfile::tempdir().unwrap();
    let doc = document(dir.path(), 1);
    let bytes = std::fs::read(&doc).unwrap();
    let http = http_server(bytes.clone()).await;
    let s = standin(dir.path(), None).await;
    let mut c = Client::login(s.esl_addr()).await;

    let status = c.cmd("api status\n\n").await;
    assert_eq!(status.content_type(), Some("api/response"));
    let text = String::from_utf8_lossy(&status.body).into_owned();
    assert!(text.starts_with("UP 0 years, 0 days, "), "{text}");
    assert!(text.contains("FreeSWITCH (Version 1.10.12-release  64bit) is ready\n"));
    assert!(text.ends_with("Current Stack Size/Max 240K/8192K\n"));
    let unknown = c.cmd("api nosuchcmd\n\n").await;
    assert_eq!(unknown.body, b"-ERR nosuchcmd Command not found!\n");
    let linger = c.cmd("linger\n\n").await;
    assert_eq!(
        linger.header("Reply-Text"),
        Some("-ERR not controlling a session")
    );

    // http_get fetches into the cache; a 404 answers as FreeSWITCH does.
    let r = c
        .cmd(&format!(
            "bgapi http_get {{prefetch=true}}http://{http}/fax/j1/x.tiff\nJob-UUID: 11111111-0000-4000-8000-000000000001\n\n"
        ))
        .await;
    assert_eq!(
        r.header("Reply-Text"),
        Some("+OK Job-UUID: 11111111-0000-4000-8000-000000000001")
    );
    assert_eq!(
        r.header("Job-UUID"),
        Some("11111111-0000-4000-8000-000000000001")
    );
    let i = c
        .until(|e| e.job_uuid() == Some("11111111-0000-4000-8000-000000000001"))
        .await;
    assert_captured_shape(&c.events[i].1);
    let cached = body(&c, i).to_string();
    assert!(!cached.ends_with('\n'));
    assert_eq!(std::fs::read(&cached).unwrap(), bytes);
    c.cmd(&format!(
        "bgapi http_get {{prefetch=true}}http://{http}/fax/j1/missing.tiff\nJob-UUID: 11111111-0000-4000-8000-000000000002\n\n"
    ))
    .await;
    let i = c
        .until(|e| e.job_uuid() == Some("11111111-0000-4000-8000-000000000002"))
        .await;
    assert_eq!(body(&c, i), "-ERR http_get Command not found!\n");

    // The fax.
    let uuid = "5771ef3b-cff5-417a-a6e9-1e2f08578755";
    let job = "afb6c398-1ebe-4ec3-b6ae-2a39d338737a";
    let r = c
        .cmd(&originate(
            uuid,
            job,
            "+14155550100",
            &cached,
            ",originate_timeout=20",
        ))
        .await;
    assert_eq!(r.header("Job-UUID"), Some(job));
    let end = c
        .until(|e| e.name() == Some("CHANNEL_HANGUP_COMPLETE") && e.unique_id() == Some(uuid))
        .await;
    assert_eq!(
        c.labels(uuid, job),
        [
            "CHANNEL_ANSWER",
            "BACKGROUND_JOB",
            "spandsp::txfaxnegociateresult",
            "spandsp::txfaxpageresult",
            "spandsp::txfaxresult",
            "CHANNEL_EXECUTE_COMPLETE",
            "CHANNEL_HANGUP_COMPLETE",
        ]
    );
    for (e, payload) in &c.events {
        if std::env::var_os("STANDIN_DUMP").is_some() {
            eprintln!("-----\n{payload}");
        }
        if e.unique_id() == Some(uuid) || e.job_uuid() == Some(job) {
            assert_captured_shape(payload);
            assert!(!payload.contains(": \n"), "empty header in {payload}");
        }
    }
    let job_ev = c
        .events
        .iter()
        .find(|(e, _)| e.job_uuid() == Some(job))
        .unwrap();
    assert_eq!(job_ev.0.body.as_deref(), Some(&*format!("+OK {uuid}\n")));
    assert_eq!(job_ev.0.header("Job-Command"), Some("originate"));
    let neg = c
        .events
        .iter()
        .find(|(e, _)| e.subclass() == Some("spandsp::txfaxnegociateresult"))
        .unwrap();
    assert_eq!(neg.0.header("fax-document-total-pages"), Some("0"));
    assert_eq!(neg.0.header("fax-local-station-id"), Some("+15550100"));
    assert_eq!(neg.0.variable("fax_header"), Some("ACME's FS, Inc."));
    let result = c
        .events
        .iter()
        .find(|(e, _)| e.subclass() == Some("spandsp::txfaxresult"))
        .unwrap();
    assert!(
        result
            .1
            .starts_with("Event-Subclass: spandsp%3A%3Atxfaxresult\n")
    );
    match SpandspEvent::from_event(&result.0) {
        Some(SpandspEvent::Finished { result: r, .. }) => {
            assert!(r.success, "{r:?}");
            assert_eq!(r.transferred_pages, 1);
            assert_eq!(r.remote_station_id, "+14155550100");
        }
        other => panic!("not a result: {other:?}"),
    }
    let hc = &c.events[end].0;
    assert_eq!(hc.header("Hangup-Cause"), Some("NORMAL_CLEARING"));
    assert_eq!(hc.variable("fax_result_code"), Some("0"));
    assert_eq!(hc.variable("fax_success"), Some("1"));
    let exec = c
        .events
        .iter()
        .find(|(e, _)| e.name() == Some("CHANNEL_EXECUTE_COMPLETE"))
        .unwrap();
    assert_eq!(exec.0.header("Application"), Some("txfax"));

    // What the far side got.
    let o = s.originates();
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].number, "+14155550100");
    assert_eq!(o[0].job_uuid, job);
    assert!(
        o[0].vars
            .contains(&("fax_header".into(), "ACME's FS, Inc.".into()))
    );
    assert!(
        o[0].vars
            .contains(&("origination_caller_id_name".into(), "ACME Fax".into()))
    );
    assert_eq!(
        tiff::count_pages(&dir.path().join("spool").join(format!("remote-{uuid}.tiff"))).unwrap(),
        1
    );

    let bye = c.cmd("exit\n\n").await;
    assert_eq!(bye.header("Reply-Text"), Some("+OK bye"));
    let notice = c.next_non_event().await.expect("goodbye");
    assert_eq!(notice.content_type(), Some("text/disconnect-notice"));
    assert_eq!(notice.body.len(), 67);
    assert!(c.next_non_event().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_no_answer_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let doc = document(dir.path(), 1);
    let doc = doc.to_string_lossy().into_owned();
    let s = standin(dir.path(), None).await;
    let mut c = Client::login(s.esl_addr()).await;

    // Busy: HANGUP_COMPLETE (486) before the job's -ERR USER_BUSY.
    let (u, j) = (
        "00000000-0000-4000-8000-0000000000b1",
        "00000000-0000-4000-8000-0000000000c1",
    );
    c.cmd(&originate(u, j, "+15550001234", &doc, "")).await;
    let i = c.until(|e| e.job_uuid() == Some(j)).await;
    assert_eq!(body(&c, i), "-ERR USER_BUSY\n");
    assert_eq!(
        c.labels(u, j),
        ["CHANNEL_HANGUP_COMPLETE", "BACKGROUND_JOB"]
    );
    let hc = &c
        .events
        .iter()
        .find(|(e, _)| e.unique_id() == Some(u))
        .unwrap();
    assert_captured_shape(&hc.1);
    assert_eq!(hc.0.header("Hangup-Cause"), Some("USER_BUSY"));
    assert_eq!(hc.0.variable("sip_term_status"), Some("486"));
    assert_eq!(hc.0.variable("sip_invite_failure_status"), Some("486"));

    // No answer: after the originate's ring time.
    let (u, j) = (
        "00000000-0000-4000-8000-0000000000b2",
        "00000000-0000-4000-8000-0000000000c2",
    );
    c.cmd(&originate(
        u,
        j,
        "+15550002000",
        &doc,
        ",originate_timeout=1",
    ))
    .await;
    let i = c.until(|e| e.job_uuid() == Some(j)).await;
    assert_eq!(body(&c, i), "-ERR NO_ANSWER\n");
    assert_eq!(
        c.labels(u, j),
        ["CHANNEL_HANGUP_COMPLETE", "BACKGROUND_JOB"]
    );

    // Missing file: no txfaxresult, EXECUTE_COMPLETE with the response, then hang-up.
    let (u, j) = (
        "00000000-0000-4000-8000-0000000000b3",
        "00000000-0000-4000-8000-0000000000c3",
    );
    c.cmd(&originate(u, j, "+14155550100", "/nonexistent/x.tiff", ""))
        .await;
    let i = c
        .until(|e| e.name() == Some("CHANNEL_HANGUP_COMPLETE") && e.unique_id() == Some(u))
        .await;
    assert_eq!(
        c.labels(u, j),
        [
            "CHANNEL_ANSWER",
            "BACKGROUND_JOB",
            "CHANNEL_EXECUTE_COMPLETE",
            "CHANNEL_HANGUP_COMPLETE"
        ]
    );
    let exec = c
        .events
        .iter()
        .find(|(e, _)| e.unique_id() == Some(u) && e.name() == Some("CHANNEL_EXECUTE_COMPLETE"))
        .unwrap();
    assert!(
        exec.1
            .contains("\nApplication-Response: Cannot%20send%20non-existant%20fax%20file\n")
    );
    assert_eq!(c.events[i].0.variable("fax_result_code"), None);

    // uuid_kill of a channel that does not exist.
    c.cmd("bgapi uuid_kill 00000000-0000-4000-8000-0000000000ff\nJob-UUID: 00000000-0000-4000-8000-0000000000c4\n\n")
        .await;
    let i = c
        .until(|e| e.job_uuid() == Some("00000000-0000-4000-8000-0000000000c4"))
        .await;
    assert_eq!(body(&c, i), "-ERR No such channel!\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_ups_mid_fax_end_with_49() {
    let dir = tempfile::tempdir().unwrap();
    let doc = document(dir.path(), 3);
    let doc = doc.to_string_lossy().into_owned();
    let s = standin(dir.path(), None).await;
    let mut c = Client::login(s.esl_addr()).await;

    // The far end hangs up after page 1.
    let (u, j) = (
        "00000000-0000-4000-8000-0000000000d1",
        "00000000-0000-4000-8000-0000000000e1",
    );
    c.cmd(&originate(u, j, "+15550003123", &doc, "")).await;
    let i = c
        .until(|e| e.subclass() == Some("spandsp::txfaxresult") && e.unique_id() == Some(u))
        .await;
    assert_eq!(c.events[i].0.header("fax-result-code"), Some("49"));
    assert_eq!(
        c.events[i].0.header("fax-result-text"),
        Some("The call dropped prematurely")
    );
    assert_eq!(
        c.events[i].0.header("fax-document-transferred-pages"),
        Some("1")
    );

    // uuid_kill during the fax (a long document: the kill lands long before its end).
    let long = document(dir.path(), 12);
    let doc = long.to_string_lossy().into_owned();
    let (u, j) = (
        "00000000-0000-4000-8000-0000000000d2",
        "00000000-0000-4000-8000-0000000000e2",
    );
    c.cmd(&originate(u, j, "+14155550100", &doc, "")).await;
    c.until(|e| e.subclass() == Some("spandsp::txfaxnegociateresult") && e.unique_id() == Some(u))
        .await;
    c.cmd(&format!(
        "bgapi uuid_kill {u} USER_BUSY\nJob-UUID: 00000000-0000-4000-8000-0000000000e3\n\n"
    ))
    .await;
    let i = c
        .until(|e| e.subclass() == Some("spandsp::txfaxresult") && e.unique_id() == Some(u))
        .await;
    assert_eq!(c.events[i].0.header("fax-result-code"), Some("49"));
    let k = c
        .until(|e| e.job_uuid() == Some("00000000-0000-4000-8000-0000000000e3"))
        .await;
    assert_eq!(body(&c, k), "+OK\n");
    let h = c
        .until(|e| e.name() == Some("CHANNEL_HANGUP_COMPLETE") && e.unique_id() == Some(u))
        .await;
    assert_eq!(c.events[h].0.header("Hangup-Cause"), Some("USER_BUSY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_drop_and_pause() {
    let dir = tempfile::tempdir().unwrap();
    let s = standin(dir.path(), None).await;
    let mut c = Client::connect(s.esl_addr()).await;
    let r = c.cmd("auth nope\n\n").await;
    assert_eq!(r.header("Reply-Text"), Some("-ERR invalid"));
    let n = c.next_non_event().await.expect("notice");
    assert_eq!(n.content_type(), Some("text/disconnect-notice"));
    assert!(c.next_non_event().await.is_none());

    // Garbage gets disconnected.
    let mut g = Client::connect(s.esl_addr()).await;
    g.send("auth ClueCon\n\n").await;
    g.next_non_event().await.expect("reply");
    g.send("sendmsg\nthis line has no colon\n\n").await;
    assert!(g.next_non_event().await.is_none());

    // So does a header block that never ends, and bytes that are not text.
    let mut g = Client::connect(s.esl_addr()).await;
    let junk = vec![b'x'; 1024 * 1024 + 10];
    let _ = g.stream.write_all(&junk).await;
    assert!(g.next_non_event().await.is_none());
    let mut g = Client::connect(s.esl_addr()).await;
    g.send("auth ClueCon\n\n").await;
    g.next_non_event().await.expect("reply");
    let _ = g.stream.write_all(b"api \xff\xfe status\n\n").await;
    assert!(g.next_non_event().await.is_none());

    // Every connection dropped at once, without a goodbye.
    let mut a = Client::login(s.esl_addr()).await;
    let mut b = Client::login(s.esl_addr()).await;
    s.drop_connections();
    assert!(a.next_non_event().await.is_none());
    assert!(b.next_non_event().await.is_none());

    // Refused while paused, accepted again afterwards.
    s.pause_listener(Duration::from_millis(600));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if TcpStream::connect(s.esl_addr()).await.is_err() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never refused");
        tokio::task::yield_now().await;
    }
    loop {
        if let Ok(mut st) = TcpStream::connect(s.esl_addr()).await {
            let mut buf = [0u8; 64];
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), st.read(&mut buf)).await
                && n > 0
            {
                assert!(buf[..n].starts_with(b"Content-Type: auth/request\n\n"));
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never listened again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Plays faxd's inbound socket for one call the way faxd does in capture 3 (`connect`,
/// `myevents`, the rx events, `linger`, then `set`, `set`, `set`, `answer`, `rxfax`,
/// `hangup` queued at once, `exit` after the linger notice). Returns the channel's uuid and
/// the labels of the events the socket got.
async fn play_faxd(listener: &TcpListener, rx_path: &Path) -> (String, Vec<String>) {
    let (stream, _) = tokio::time::timeout(DEADLINE, listener.accept())
        .await
        .expect("the stand-in connects")
        .unwrap();
    let mut c = Client {
        stream,
        dec: Decoder::default(),
        events: Vec::new(),
        replies: 0,
    };
    c.send("connect\n\n").await;
    let data = c.next_non_event().await.expect("CHANNEL_DATA");
    if std::env::var_os("STANDIN_DUMP").is_some() {
        for (n, v) in &data.headers {
            eprintln!("{n}: {v}");
        }
    }
    let payload_names: Vec<String> = data.headers.iter().map(|(n, _)| n.clone()).collect();
    let strip = |names: Vec<String>| -> Vec<String> {
        names
            .into_iter()
            .filter(|n| !n.starts_with("variable_"))
            .collect()
    };
    // The same header names as one of the captured CHANNEL_DATA replies.
    let captured: Vec<Vec<String>> = fixture_frames()
        .into_iter()
        .filter(|f| f.starts_with("Event-Name: CHANNEL_DATA"))
        .map(|f| strip(shape(&f)))
        .collect();
    assert!(captured.contains(&strip(payload_names.clone())));
    assert_eq!(
        &payload_names[payload_names.len() - 4..],
        ["Content-Type", "Reply-Text", "Socket-Mode", "Control"]
    );
    let Ok(Frame::ConnectReply(reply)) = Frame::parse(data) else {
        panic!("not a connect reply");
    };
    assert_eq!(reply.reply_text, "+OK\n");
    let uuid = reply.channel.unique_id().unwrap().to_string();
    assert_eq!(reply.channel.variable("sip_req_user"), Some("+15559990123"));
    assert_eq!(
        c.cmd("myevents\n\n").await.header("Reply-Text"),
        Some("+OK Events Enabled")
    );
    let r = c
        .cmd("event plain CUSTOM spandsp::rxfaxnegociateresult spandsp::rxfaxpageresult spandsp::rxfaxresult\n\n")
        .await;
    assert_eq!(
        r.header("Reply-Text"),
        Some("+OK event listener enabled plain")
    );
    assert_eq!(
        c.cmd("linger\n\n").await.header("Reply-Text"),
        Some("+OK will linger")
    );
    assert_eq!(
        c.cmd("getvar uuid\n\n").await.header("Reply-Text"),
        Some(&*uuid)
    );
    let rx = rx_path.to_string_lossy().into_owned();
    let mut queued = String::new();
    for (app, arg, id) in [
        ("set", "fax_ident=+15559990123", "e1"),
        ("set", "fax_enable_t38=false", "e2"),
        ("set", "fax_enable_t38_request=false", "e3"),
        ("answer", "", "e4"),
        ("rxfax", rx.as_str(), uuid.as_str()),
        ("hangup", "NORMAL_CLEARING", "e6"),
    ] {
        queued.push_str(&format!(
            "sendmsg\ncall-command: execute\nexecute-app-name: {app}\n"
        ));
        if !arg.is_empty() {
            queued.push_str(&format!("execute-app-arg: {arg}\n"));
        }
        queued.push_str(&format!("event-uuid: {id}\nevent-lock: true\n\n"));
    }
    c.send(&queued).await;
    c.until_skipping_replies(|e| e.name() == Some("CHANNEL_HANGUP_COMPLETE"))
        .await;
    let notice = loop {
        let f = c.next_non_event().await.expect("frame");
        match f.content_type() {
            Some("text/disconnect-notice") => break f,
            Some("command/reply") => c.replies += 1,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(c.replies, 6, "one +OK per queued sendmsg");
    assert_eq!(notice.header("Content-Disposition"), Some("linger"));
    assert_eq!(notice.header("Controlled-Session-UUID"), Some(&*uuid));
    let bye = c.cmd("exit\n\n").await;
    assert_eq!(bye.header("Reply-Text"), Some("+OK bye"));
    let last = c.next_non_event().await.expect("goodbye");
    assert_eq!(last.header("Content-Disposition"), Some("disconnect"));
    assert_eq!(last.body.len(), 67);
    assert!(c.next_non_event().await.is_none());
    for (e, payload) in &c.events {
        if std::env::var_os("STANDIN_DUMP").is_some() {
            eprintln!("-----\n{payload}");
        }
        assert_captured_shape(payload);
        assert_eq!(e.unique_id(), Some(&*uuid));
    }
    let labels = c
        .events
        .iter()
        .map(|(e, _)| {
            let l = label(e);
            match e.header("Application") {
                Some(a) => format!("{l}({a})"),
                None => l,
            }
        })
        .collect();
    (uuid, labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_socket_receives_a_carrier_call() {
    let dir = tempfile::tempdir().unwrap();
    let doc = document(dir.path(), 1);
    let faxd = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let s = standin(dir.path(), Some(faxd.local_addr().unwrap())).await;
    let call = s.place_inbound_call(
        "+14155550199",
        "+15559990123",
        doc,
        InboundCallOptions::default(),
    );
    let rx_path = dir.path().join("rx.tiff");
    let (uuid, labels) = play_faxd(&faxd, &rx_path).await;
    let outcome = tokio::time::timeout(DEADLINE, call).await.unwrap().unwrap();
    assert!(outcome.result.success, "{:?}", outcome.result);
    assert_eq!(outcome.uuid.as_deref(), Some(&*uuid));
    assert_eq!(tiff::count_pages(&rx_path).unwrap(), 1);
    // The socket's events, in the order FreeSWITCH wrote them in capture 3.
    assert_eq!(labels, captured_sofia_session().0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_originate_to_a_faxd_number_reaches_faxd() {
    let dir = tempfile::tempdir().unwrap();
    let doc = document(dir.path(), 1);
    let faxd = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let s = standin(dir.path(), Some(faxd.local_addr().unwrap())).await;
    // Subscribed as the inbound connection of capture 3's sofia session.
    let subscription = capture_3()[128].2.clone();
    assert!(subscription.starts_with("event plain "));
    let mut c = Client::login_with(s.esl_addr(), &subscription).await;
    let (u, j) = (
        "00000000-0000-4000-8000-0000000000f1",
        "00000000-0000-4000-8000-0000000000f2",
    );
    c.cmd(&originate(
        u,
        j,
        "+15559990123",
        &doc.to_string_lossy(),
        ",originate_timeout=20",
    ))
    .await;
    let rx_path = dir.path().join("rx.tiff");
    let (b, b_labels) = play_faxd(&faxd, &rx_path).await;
    let (socket, inbound) = captured_sofia_session();
    assert_eq!(b_labels, socket);
    c.until(|e| e.name() == Some("CHANNEL_HANGUP_COMPLETE") && e.unique_id() == Some(u))
        .await;
    let i = c
        .events
        .iter()
        .position(|(e, _)| e.subclass() == Some("spandsp::txfaxresult"))
        .unwrap();
    assert_eq!(c.events[i].0.header("fax-result-code"), Some("0"));
    assert_eq!(
        c.events[i].0.header("fax-remote-station-id"),
        Some("+15559990123")
    );
    // Both legs' events on the inbound connection, in the captured order.
    let got: Vec<String> = c
        .events
        .iter()
        .filter_map(|(e, _)| {
            let leg = match e.unique_id() {
                Some(x) if x == u => "A:",
                Some(x) if x == b => "B:",
                _ if e.job_uuid() == Some(j) => "",
                _ => return None,
            };
            Some(format!("{leg}{}", label(e)))
        })
        .collect();
    assert_eq!(got, inbound);
    for (e, payload) in &c.events {
        if e.unique_id() == Some(u) || e.unique_id() == Some(&*b) {
            assert_captured_shape(payload);
        }
    }
    assert_eq!(tiff::count_pages(&rx_path).unwrap(), 1);
}

/// Labels of the events of one captured conversation of capture 3 (`lines`, 1-based and
/// inclusive): those the socket got, and those the inbound connection got (legs `A` = the
/// originate's uuid, `B` = the other channel).
fn captured_labels(lines: std::ops::RangeInclusive<usize>) -> (Vec<String>, Vec<String>) {
    let frames = capture_3();
    let (from, to) = (*lines.start() - 1, *lines.end());
    let a = frames[from..to]
        .iter()
        .find_map(|(_, dir, d)| {
            (dir == "C->S" && d.starts_with("bgapi originate {origination_uuid="))
                .then(|| d["bgapi originate {origination_uuid=".len()..][..36].to_string())
        })
        .unwrap_or_default();
    let mut socket = Vec::new();
    let mut inbound = Vec::new();
    for (mode, dir, data) in &frames[from..to] {
        if dir != "S->C" || !data.starts_with("Content-Length:") {
            continue;
        }
        let payload = data.split_once("\n\n").map(|(_, p)| p).unwrap_or("");
        let field = |n: &str| header_of(payload, n).map(faxd::gateway::esl::urlenc::decode);
        let Some(name) = field("Event-Name") else {
            continue;
        };
        let mut l = field("Event-Subclass").unwrap_or(name);
        if let Some(app) = field("Application") {
            l = format!("{l}({app})");
        }
        if mode == "outbound" {
            socket.push(l);
        } else {
            let leg = match field("Unique-ID") {
                Some(u) if u == a => "A:",
                Some(_) => "B:",
                None => "",
            };
            inbound.push(format!("{leg}{l}"));
        }
    }
    (socket, inbound)
}

/// Accepts the stand-in's socket and does `connect`, `myevents`, `linger`.
async fn faxd_socket(listener: &TcpListener) -> (Client, String) {
    let (stream, _) = tokio::time::timeout(DEADLINE, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut f = Client {
        stream,
        dec: Decoder::default(),
        events: Vec::new(),
        replies: 0,
    };
    f.send("connect\n\n").await;
    let data = f.next_non_event().await.expect("CHANNEL_DATA");
    let uuid = data.header("Unique-ID").unwrap().to_string();
    f.cmd("myevents\n\n").await;
    f.cmd("linger\n\n").await;
    (f, uuid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faxd_refusing_the_call_fails_the_originate_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let doc = document(dir.path(), 1);
    let faxd = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let s = standin(dir.path(), Some(faxd.local_addr().unwrap())).await;
    let subscription = capture_3()[386].2.clone();
    let mut c = Client::login_with(s.esl_addr(), &subscription).await;
    let (u, j) = (
        "00000000-0000-4000-8000-0000000000a1",
        "00000000-0000-4000-8000-0000000000a2",
    );
    c.cmd(&originate(u, j, "+15559990124", &doc.to_string_lossy(), ""))
        .await;
    let (mut f, b) = faxd_socket(&faxd).await;
    // Capture 3 lines 385–412: `sendmsg` hangup UNALLOCATED_NUMBER before answering.
    let r = f
        .cmd("sendmsg\ncall-command: hangup\nhangup-cause: UNALLOCATED_NUMBER\n\n")
        .await;
    assert_eq!(r.header("Reply-Text"), Some("+OK"));
    let i = c.until(|e| e.job_uuid() == Some(j)).await;
    assert_eq!(body(&c, i), "-ERR UNALLOCATED_NUMBER\n");
    f.until(|e| e.name() == Some("CHANNEL_HANGUP_COMPLETE"))
        .await;
    let notice = f.next_non_event().await.expect("linger notice");
    assert_eq!(notice.header("Content-Disposition"), Some("linger"));
    let (socket, inbound) = captured_labels(385..=412);
    let got: Vec<String> = f.events.iter().map(|(e, _)| app_label(e)).collect();
    assert_eq!(got, socket);
    let got: Vec<String> = c
        .events
        .iter()
        .map(|(e, _)| {
            let leg = match e.unique_id() {
                Some(x) if x == u => "A:",
                Some(x) if x == b => "B:",
                _ => "",
            };
            format!("{leg}{}", label(e))
        })
        .collect();
    assert_eq!(got, inbound);
    for (e, payload) in &f.events {
        assert_eq!(
            e.header("Hangup-Cause").unwrap_or("UNALLOCATED_NUMBER"),
            "UNALLOCATED_NUMBER"
        );
        assert_captured_shape(payload);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_sender_mid_fax_ends_the_receiving_socket_with_49() {
    let dir = tempfile::tempdir().unwrap();
    let doc = document(dir.path(), 12);
    let faxd = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let s = standin(dir.path(), Some(faxd.local_addr().unwrap())).await;
    let subscription = capture_3()[193].2.clone();
    let mut c = Client::login_with(s.esl_addr(), &subscription).await;
    let (u, j) = (
        "00000000-0000-4000-8000-0000000000a3",
        "00000000-0000-4000-8000-0000000000a4",
    );
    c.cmd(&originate(u, j, "+15559990125", &doc.to_string_lossy(), ""))
        .await;
    let (mut f, _b) = faxd_socket(&faxd).await;
    f.cmd("event plain CUSTOM spandsp::rxfaxnegociateresult spandsp::rxfaxpageresult spandsp::rxfaxresult\n\n")
        .await;
    let rx = dir.path().join("rx.tiff");
    let mut queued = String::new();
    for (app, arg) in [
        ("set", "fax_ident=+15559990125"),
        ("answer", ""),
        ("rxfax", &*rx.to_string_lossy()),
        ("hangup", "NORMAL_CLEARING"),
    ] {
        queued.push_str(&format!(
            "sendmsg\ncall-command: execute\nexecute-app-name: {app}\n"
        ));
        if !arg.is_empty() {
            queued.push_str(&format!("execute-app-arg: {arg}\n"));
        }
        queued.push_str("event-lock: true\n\n");
    }
    f.send(&queued).await;
    // Capture 3 lines 191–255: `api uuid_kill <A>` after the first page.
    c.until(|e| e.subclass() == Some("spandsp::txfaxpageresult"))
        .await;
    let r = c.cmd(&format!("api uuid_kill {u}\n\n")).await;
    assert_eq!(r.body, b"+OK\n");
    c.until(|e| e.name() == Some("CHANNEL_HANGUP_COMPLETE") && e.unique_id() == Some(u))
        .await;
    f.until_skipping_replies(|e| e.name() == Some("CHANNEL_HANGUP_COMPLETE"))
        .await;
    let (socket, inbound) = captured_labels(191..=255);
    // Pages the receiver got before the kill took effect: one in the capture.
    let mut got: Vec<String> = f
        .events
        .iter()
        .map(|(e, _)| match e.header("Application") {
            Some(a) => format!("{}({a})", label(e)),
            None => label(e),
        })
        .collect();
    got.dedup_by(|a, b| a == b && a == "spandsp::rxfaxpageresult");
    let captured_apps: Vec<String> = socket
        .into_iter()
        .filter(|l| !l.contains("(set)"))
        .collect();
    let got: Vec<String> = got.into_iter().filter(|l| !l.contains("(set)")).collect();
    assert_eq!(got, captured_apps);
    let rx_result = f
        .events
        .iter()
        .find(|(e, _)| e.subclass() == Some("spandsp::rxfaxresult"))
        .unwrap();
    assert_eq!(rx_result.0.header("fax-result-code"), Some("49"));
    assert_eq!(rx_result.0.header("Hangup-Cause"), Some("NORMAL_CLEARING"));
    let tx_result = c
        .events
        .iter()
        .find(|(e, _)| e.subclass() == Some("spandsp::txfaxresult"))
        .unwrap();
    assert_eq!(tx_result.0.header("fax-result-code"), Some("49"));
    // The sender's own events in the captured order (the receiver's hang-up races them).
    let a_only = |v: Vec<String>| -> Vec<String> {
        v.into_iter().filter(|l| !l.starts_with("B:")).collect()
    };
    let got: Vec<String> = c
        .events
        .iter()
        .filter(|(e, _)| e.unique_id() == Some(u) || e.job_uuid() == Some(j))
        .map(|(e, _)| {
            let leg = if e.unique_id() == Some(u) { "A:" } else { "" };
            format!("{leg}{}", label(e))
        })
        .collect();
    let mut captured = a_only(inbound);
    captured.dedup_by(|a, b| a == b && a == "A:spandsp::txfaxpageresult");
    let mut got = got;
    got.dedup_by(|a, b| a == b && a == "A:spandsp::txfaxpageresult");
    assert_eq!(got, captured);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t38_requests_json_events_and_a_dropped_socket() {
    let dir = tempfile::tempdir().unwrap();
    let doc = document(dir.path(), 1);
    let doc = doc.to_string_lossy().into_owned();
    let s = standin(dir.path(), None).await;
    let mut c = Client::login(s.esl_addr()).await;

    // With the T.38 request on: negotiated, unless the far end refuses the re-INVITE.
    for (number, status, u) in [
        (
            "+14155550100",
            "negotiated",
            "00000000-0000-4000-8000-000000000101",
        ),
        (
            "+15550007123",
            "off",
            "00000000-0000-4000-8000-000000000102",
        ),
    ] {
        let j = format!("{u}-job");
        c.cmd(&originate(u, &j, number, &doc, "").replace(
            "fax_enable_t38_request=false",
            "fax_enable_t38_request=true",
        ))
        .await;
        let i = c
            .until(|e| e.subclass() == Some("spandsp::txfaxresult") && e.unique_id() == Some(u))
            .await;
        let r = &c.events[i].0;
        assert_eq!(r.header("fax-result-code"), Some("0"), "{number}");
        assert_eq!(r.header("fax-t38-status"), Some(status), "{number}");
        let o = s.originates();
        let rec = o.iter().find(|o| o.uuid == u).unwrap();
        assert!(
            rec.vars
                .contains(&("fax_enable_t38_request".into(), "true".into()))
        );
    }

    // `api originate` answers when the call is answered.
    let r = c
        .cmd(&format!(
            "api originate {{origination_uuid=00000000-0000-4000-8000-000000000103}}sofia/gateway/carrier/+14155550100 &txfax({doc})\n\n"
        ))
        .await;
    assert_eq!(r.body, b"+OK 00000000-0000-4000-8000-000000000103\n");

    // json events.
    let mut j = Client::connect(s.esl_addr()).await;
    j.cmd("auth ClueCon\n\n").await;
    let r = j.cmd("event json BACKGROUND_JOB\n\n").await;
    assert_eq!(
        r.header("Reply-Text"),
        Some("+OK event listener enabled json")
    );
    j.send("bgapi status\nJob-UUID: 00000000-0000-4000-8000-000000000104\n\n")
        .await;
    let reply = j.next_non_event().await.unwrap();
    assert_eq!(reply.content_type(), Some("command/reply"));
    let Got::Frame(ev) = j.raw().await else {
        panic!("closed");
    };
    assert_eq!(ev.content_type(), Some("text/event-json"));
    let v: serde_json::Value = serde_json::from_slice(&ev.body).unwrap();
    assert_eq!(v["Event-Name"], "BACKGROUND_JOB");
    assert_eq!(v["Job-Command"], "status");
    assert!(v.get("Job-Command-Arg").is_none());
    assert!(v["_body"].as_str().unwrap().starts_with("UP "));

    // The event socket dies mid call: the call goes on and ends; a new connection works.
    let (u, jb) = (
        "00000000-0000-4000-8000-000000000105",
        "00000000-0000-4000-8000-000000000106",
    );
    c.cmd(&originate(
        u,
        jb,
        "+15550002000",
        &doc,
        ",originate_timeout=1",
    ))
    .await;
    s.drop_connections();
    assert!(c.next_non_event().await.is_none());
    assert!(j.next_non_event().await.is_none());
    let mut c = Client::login(s.esl_addr()).await;
    let i = c.until(|e| e.job_uuid() == Some(jb)).await;
    assert_eq!(body(&c, i), "-ERR NO_ANSWER\n");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while s.active_channels() > 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_fax_tones_and_faxd_never_answering() {
    let dir = tempfile::tempdir().unwrap();
    let doc = document(dir.path(), 1);
    let doc = doc.to_string_lossy().into_owned();
    let faxd = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let s = standin(dir.path(), Some(faxd.local_addr().unwrap())).await;
    let mut c = Client::login(s.esl_addr()).await;

    // Answered, but no fax tones: the sender gives up (T0).
    let (u, j) = (
        "00000000-0000-4000-8000-000000000201",
        "00000000-0000-4000-8000-000000000202",
    );
    c.cmd(&originate(u, j, "+15550004123", &doc, "")).await;
    let i = c
        .until(|e| e.subclass() == Some("spandsp::txfaxresult") && e.unique_id() == Some(u))
        .await;
    let code = c.events[i].0.header("fax-result-code").unwrap().to_string();
    assert_ne!(code, "0");
    assert_eq!(
        c.events[i].0.header("fax-document-transferred-pages"),
        Some("0")
    );
    assert!(
        c.events
            .iter()
            .all(|(e, _)| e.subclass() != Some("spandsp::txfaxnegociateresult"))
    );

    // faxd accepts the socket but never sends `connect`: ring until the originate's timeout,
    // then the socket is closed.
    let (u, j) = (
        "00000000-0000-4000-8000-000000000203",
        "00000000-0000-4000-8000-000000000204",
    );
    c.cmd(&originate(
        u,
        j,
        "+15559990125",
        &doc,
        ",originate_timeout=1",
    ))
    .await;
    let (mut sock, _) = tokio::time::timeout(DEADLINE, faxd.accept())
        .await
        .unwrap()
        .unwrap();
    let i = c.until(|e| e.job_uuid() == Some(j)).await;
    assert_eq!(body(&c, i), "-ERR NO_ANSWER\n");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(DEADLINE, sock.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "FreeSWITCH writes nothing before `connect`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_http_gets_share_one_download() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = b"II*\0not really a tiff".to_vec();
    let gate = Arc::new(Semaphore::new(0));
    let http = http_server_gated(bytes.clone(), gate.clone()).await;
    let s = standin(dir.path(), None).await;
    let mut c = Client::login(s.esl_addr()).await;
    let url = format!("http://{http}/slow/x.tiff");
    let jobs = [
        "00000000-0000-4000-8000-000000000301",
        "00000000-0000-4000-8000-000000000302",
        "00000000-0000-4000-8000-000000000303",
    ];
    // As captured: two prefetches and a plain get, written before any reply is read.
    c.send(&format!(
        "bgapi http_get {{prefetch=true}}{url}\nJob-UUID: {}\n\nbgapi http_get {{prefetch=true}}{url}\nJob-UUID: {}\n\nbgapi http_get {url}\nJob-UUID: {}\n\n",
        jobs[0], jobs[1], jobs[2]
    ))
    .await;
    // The second prefetch answers at once: the URL is still downloading.
    let i = c
        .until_skipping_replies(|e| e.job_uuid() == Some(jobs[1]))
        .await;
    assert_eq!(body(&c, i), "download");
    gate.add_permits(1);
    let a = c
        .until_skipping_replies(|e| e.job_uuid() == Some(jobs[0]))
        .await;
    let b = c
        .until_skipping_replies(|e| e.job_uuid() == Some(jobs[2]))
        .await;
    let path = body(&c, a).to_string();
    assert_eq!(body(&c, b), path);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(c.replies, 3);
    // A cache hit answers the same path.
    let r = c.cmd(&format!("api http_get {url}\n\n")).await;
    assert_eq!(String::from_utf8_lossy(&r.body), path);
}
