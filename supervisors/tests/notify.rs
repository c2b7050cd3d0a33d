//! Notifications end to end on a real `faxd` node with the loopback engine: a fax sent from
//! a faxbox to a number of the same account's faxbox callflow is one outbound "sent" mail
//! and one inbound "received" mail, each to the faxbox's list, with the fax attached as PDF;
//! a fax the far end never answers with fax tones is one "error sending" mail with the
//! reason. The mail goes to the maildir (default) or through a real SMTP relay (Debian's
//! aiosmtpd) that is down at first: retried with backoff, delivered once when it is back.
//! Webhooks reach a real HTTP receiver on loopback, signed, for every step of a fax (queued,
//! sending, each page, delivered, received), a refused one again; the signature is checked
//! with Python's hmac. The delivery logs show in the API. A node killed (-9) while its relay
//! was down delivers the mail once after its restart. A relay that requires STARTTLS and AUTH
//! (aiosmtpd with a certificate of a private CA) gets the mail encrypted and authenticated;
//! one on implicit TLS refusing the password fails the delivery for good. Both stores.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::admin::{Admin, start_node, stop_node};
use common::{Couch, SENDER, poll_async};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The number of the faxbox that receives.
const DESK: &str = "+15559870001";

/// A mail parsed by Python's `email` package: headers, text body, attachments.
fn parse_eml(path: &Path) -> Value {
    let script = r#"
import sys, json, email, hashlib
from email import policy
m = email.message_from_bytes(open(sys.argv[1], 'rb').read(), policy=policy.default)
atts = []
for part in m.iter_attachments():
    data = part.get_payload(decode=True) or b''
    atts.append({"name": part.get_filename(), "type": part.get_content_type(),
                 "len": len(data), "head": data[:5].decode('latin1'),
                 "sha256": hashlib.sha256(data).hexdigest()})
body = m.get_body(preferencelist=('plain',))
print(json.dumps({"to": str(m['To']), "from": str(m['From']), "subject": str(m['Subject']),
                  "auto": str(m['Auto-Submitted']), "message_id": str(m['Message-ID']),
                  "relay": str(m.get('X-Test-Relay', '')),
                  "text": body.get_content() if body else "", "attachments": atts}))
"#;
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("parsed mail")
}

/// Every mail file under `dir` (recursively; a Maildir keeps them in `new/`), parsed.
fn mails(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if p.is_dir() {
                stack.push(p);
            } else if !name.starts_with('.') {
                out.push(parse_eml(&p));
            }
        }
    }
    out
}

/// Waits for `n` mails in `dir`.
async fn wait_mails(dir: &Path, n: usize, within: Duration) -> Vec<Value> {
    let dir = dir.to_path_buf();
    poll_async(&format!("{n} mails in {}", dir.display()), within, || {
        let dir = dir.clone();
        async move {
            let m = tokio::task::spawn_blocking(move || mails(&dir))
                .await
                .ok()?;
            (m.len() >= n).then_some(m)
        }
    })
    .await
}

fn mail_to<'a>(mails: &'a [Value], to: &str) -> Vec<&'a Value> {
    mails.iter().filter(|m| m["to"] == to).collect()
}

/// The account (which owns SENDER) gets a faxbox "Front desk" (mail lists per direction, an optional
/// webhook) and a callflow that brings DESK to it. Returns the faxbox id.
async fn faxbox(admin: &Admin, callback: Option<Value>) -> String {
    let mut notifications = json!({
        "outbound": {"email": {"send_to": ["ann@example.com"]}},
        "inbound": {"email": {"send_to": "desk@example.com"}},
    });
    if let Some(cb) = callback {
        notifications["outbound"]["callback"] = cb.clone();
        notifications["inbound"]["callback"] = cb;
    }
    let (status, v) = admin
        .call(
            reqwest::Method::PUT,
            &format!("/accounts/{}/faxboxes", admin.account),
            Some(
                json!({"name": "Front desk", "caller_id": SENDER, "caller_name": "Front Desk",
                        "notifications": notifications}),
            ),
        )
        .await;
    assert!(status == 200 || status == 201, "faxbox: {v}");
    let id = v["data"]["id"].as_str().expect("faxbox id").to_string();
    let (status, v) = admin
        .call(
            reqwest::Method::PUT,
            &format!("/accounts/{}/callflows", admin.account),
            Some(json!({"numbers": [DESK], "flow": {"module": "faxbox", "data": {"id": id}}})),
        )
        .await;
    assert!(status == 200 || status == 201, "callflow: {v}");
    id
}

/// Submits a 2-page fax from the faxbox to `to`; the job id.
async fn send(admin: &Admin, faxbox: &str, to: &str) -> String {
    let tiff = faxd::outbound::docs::blank_tiff(2);
    let job = common::submit_fax(
        &admin.http,
        &format!(
            "{}/accounts/{}/faxboxes/{faxbox}/faxes",
            admin.api, admin.account
        ),
        &admin.token,
        &json!({"data": {"to_number": to, "retries": 1}}),
        "image/tiff",
        &tiff,
    )
    .await;
    job["id"].as_str().expect("job id").to_string()
}

/// Waits until the outbox copy of job `id` says its notification is done; that copy.
async fn notified(admin: &Admin, id: &str) -> Value {
    let doc = admin
        .final_doc(&admin.account, id, Duration::from_secs(180))
        .await;
    let outbox_id = doc["id"].as_str().expect("outbox id").to_string();
    poll_async(
        "the notification done",
        Duration::from_secs(120),
        || async {
            let d = admin
                .get(&format!(
                    "/accounts/{}/faxes/outbox/{outbox_id}",
                    admin.account
                ))
                .await;
            (d["_read_only"]["notifications"]["state"] == "done").then_some(d)
        },
    )
    .await
}

async fn maildir_run(extra: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), extra).await;
    let admin = Admin::login(&node, dir.path()).await;
    let box_id = faxbox(&admin, None).await;
    let maildir = dir.path().join("mail");

    let id = send(&admin, &box_id, DESK).await;
    let got = wait_mails(&maildir, 2, Duration::from_secs(180)).await;
    let sent = mail_to(&got, "ann@example.com");
    assert_eq!(sent.len(), 1, "{got:?}");
    let sent = sent[0];
    assert_eq!(
        sent["subject"],
        format!("Fax has been sent to {DESK}"),
        "{sent}"
    );
    assert_eq!(sent["auto"], "auto-generated");
    assert!(
        sent["text"].as_str().unwrap().contains("Pages: 2"),
        "{sent}"
    );
    let att = &sent["attachments"][0];
    assert_eq!(att["type"], "application/pdf", "{sent}");
    assert_eq!(att["head"], "%PDF-", "{sent}");
    assert!(
        att["name"].as_str().unwrap().ends_with(".pdf")
            && att["name"].as_str().unwrap().starts_with("front_desk_"),
        "{sent}"
    );
    let rcvd = mail_to(&got, "desk@example.com");
    assert_eq!(rcvd.len(), 1, "{got:?}");
    assert_eq!(
        rcvd[0]["subject"],
        format!("New fax from Front Desk ({SENDER})"),
        "{}",
        rcvd[0]
    );
    assert_eq!(rcvd[0]["attachments"][0]["type"], "application/pdf");

    // The delivery log of the sent fax.
    let doc = notified(&admin, &id).await;
    let n = &doc["_read_only"]["notifications"];
    assert_eq!(n["event"], "outbound_sent", "{n}");
    let d = &n["deliveries"][0];
    assert_eq!(d["channel"], "email");
    assert_eq!(d["state"], "delivered", "{n}");
    assert_eq!(d["attempts"], 1, "{n}");
    assert_eq!(d["to"], json!(["ann@example.com"]));
    // Kazoo's fields are unchanged beside it.
    assert_eq!(doc["_read_only"]["status"], "completed");
    // A faxbox without a callback records no progress webhooks.
    assert!(doc["_read_only"].get("webhooks").is_none(), "{doc}");

    // A number that never gives fax tones: failed after the last attempt, one error mail.
    let bad = send(&admin, &box_id, "+15550004001").await;
    let got = wait_mails(&maildir, 3, Duration::from_secs(180)).await;
    let errs: Vec<_> = mail_to(&got, "ann@example.com")
        .into_iter()
        .filter(|m| {
            m["subject"]
                .as_str()
                .unwrap()
                .starts_with("Error sending Fax")
        })
        .collect();
    assert_eq!(errs.len(), 1, "{got:?}");
    assert_eq!(errs[0]["subject"], "Error sending Fax to +15550004001");
    assert!(
        errs[0]["text"].as_str().unwrap().contains("Reason: "),
        "{}",
        errs[0]
    );
    let doc = notified(&admin, &bad).await;
    assert_eq!(
        doc["_read_only"]["notifications"]["event"],
        "outbound_failed"
    );
    stop_node(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_received_and_failed_faxes_mail_the_faxbox_lists_through_the_maildir() {
    maildir_run(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_received_and_failed_faxes_mail_the_faxbox_lists_on_couchdb() {
    let dir = tempfile::tempdir().unwrap();
    let couch = Couch::start(dir.path());
    let url = couch.url.clone();
    maildir_run(&[
        ("FAXD_STORE_BACKEND", "couchdb"),
        ("FAXD_STORE_COUCH_URL", &url),
    ])
    .await;
    drop(couch);
}

/// Debian's aiosmtpd with its Maildir handler on 127.0.0.1:`port`.
struct Relay(Child);

impl Relay {
    fn start(port: u16, maildir: &Path) -> Relay {
        let child = Command::new("aiosmtpd")
            .args(["-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("aiosmtpd (python3-aiosmtpd)");
        common::poll("aiosmtpd listening", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Relay(child)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_is_down_gets_the_mail_once_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let port_s = port.to_string();
    let node = start_node(
        dir.path(),
        &[
            ("FAXD_NOTIFY_TRANSPORT", "smtp"),
            ("FAXD_NOTIFY_RELAY", "127.0.0.1"),
            ("FAXD_NOTIFY_PORT", &port_s),
            ("FAXD_NOTIFY_RETRY_MIN", "1"),
            ("FAXD_NOTIFY_RETRY_MAX", "2"),
        ],
    )
    .await;
    let admin = Admin::login(&node, dir.path()).await;
    let box_id = faxbox(&admin, None).await;
    // To a plain fax machine: only the "sent" mail.
    let id = send(&admin, &box_id, "+15557654321").await;
    let doc = admin
        .final_doc(&admin.account, &id, Duration::from_secs(180))
        .await;
    let outbox = format!(
        "/accounts/{}/faxes/outbox/{}",
        admin.account,
        doc["id"].as_str().unwrap()
    );
    // Nothing listens: attempts with the error, still pending.
    let failing = poll_async("two failed attempts", Duration::from_secs(60), || async {
        let d = admin.get(&outbox).await;
        let del = d["_read_only"]["notifications"]["deliveries"][0].clone();
        (del["attempts"].as_u64().unwrap_or(0) >= 2).then_some(d)
    })
    .await;
    let n = &failing["_read_only"]["notifications"];
    assert_eq!(n["state"], "pending", "{n}");
    assert!(n["deliveries"][0]["last_error"].as_str().is_some(), "{n}");

    let inbox = dir.path().join("relay");
    let _relay = Relay::start(port, &inbox);
    let got = wait_mails(&inbox, 1, Duration::from_secs(60)).await;
    let doc = poll_async("delivered", Duration::from_secs(60), || async {
        let d = admin.get(&outbox).await;
        (d["_read_only"]["notifications"]["state"] == "done").then_some(d)
    })
    .await;
    assert_eq!(
        doc["_read_only"]["notifications"]["deliveries"][0]["state"],
        "delivered"
    );
    // Exactly one message arrived, to the list, with the fax as the API serves it.
    let again = mails(&inbox);
    assert_eq!(again.len(), 1, "{again:?}");
    let m = &got[0];
    assert_eq!(m["to"], "ann@example.com");
    assert_eq!(m["auto"], "auto-generated");
    let (status, ct, pdf) = admin
        .download(&format!("{outbox}/attachment?format=pdf"))
        .await;
    assert_eq!((status, ct.as_str()), (200, "application/pdf"));
    use sha2::Digest;
    assert_eq!(
        m["attachments"][0]["sha256"],
        hex::encode(sha2::Sha256::digest(&pdf)),
        "{m}"
    );
    stop_node(node).await;
}

/// A webhook receiver on 127.0.0.1: records each request (headers, body, the status it was
/// answered), answers 200 — or 500 to as many first requests as `refuse` says.
#[derive(Clone, Default)]
struct Hooks(Arc<Mutex<Vec<Hook>>>, Arc<AtomicUsize>);

/// One webhook request: its headers (lowercase names), body, and the status answered.
type Hook = (HashMap<String, String>, Vec<u8>, u16);

impl Hooks {
    /// A receiver that answers 500 to its first `n` requests.
    fn refusing(n: usize) -> Hooks {
        Hooks(Arc::default(), Arc::new(AtomicUsize::new(n)))
    }

    fn got(&self) -> Vec<Hook> {
        self.0.lock().unwrap().clone()
    }

    async fn serve(self) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let hooks = self.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = s.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let headers: HashMap<String, String> = head
                            .lines()
                            .skip(1)
                            .filter_map(|l| l.split_once(':'))
                            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                            .collect();
                        let len: usize = headers
                            .get("content-length")
                            .and_then(|l| l.parse().ok())
                            .unwrap_or(0);
                        if buf.len() < end + 4 + len {
                            continue;
                        }
                        let body = buf[end + 4..end + 4 + len].to_vec();
                        let refuse = hooks
                            .1
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                        let (status, reply): (u16, &[u8]) = if refuse {
                            (500, b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        } else {
                            (200, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        };
                        hooks.0.lock().unwrap().push((headers, body, status));
                        let _ = s.write_all(reply).await;
                        return;
                    }
                });
            }
        });
        port
    }
}

/// Checks `X-Faxd-Signature` with Python's hmac: `v1` = HMAC-SHA256 of "<t>.<body>".
fn signature_valid(header: &str, secret: &str, body: &[u8]) -> bool {
    let script = r#"
import sys, hmac, hashlib
hdr, secret, body = sys.argv[1], sys.argv[2], open(sys.argv[3], 'rb').read()
parts = dict(p.split('=', 1) for p in hdr.split(','))
mac = hmac.new(secret.encode(), parts['t'].encode() + b'.' + body, hashlib.sha256).hexdigest()
sys.exit(0 if hmac.compare_digest(mac, parts['v1']) else 1)
"#;
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), body).unwrap();
    Command::new("/usr/bin/python3")
        .args(["-c", script, header, secret])
        .arg(f.path())
        .status()
        .expect("python3")
        .success()
}

/// What identifies one webhook of a fax: the event and its page (0 when none).
fn event_key(v: &Value) -> (String, u64) {
    (
        v["event"].as_str().unwrap_or_default().to_string(),
        v["page"].as_u64().unwrap_or(0),
    )
}

/// A fax of 2 pages from a faxbox with webhooks to DESK (the faxbox itself, through its
/// callflow): its receiver refuses the first request (500). Every event reaches it signed —
/// queued, sending, page 1, page 2, delivered, and the inbound received — each answered 200
/// exactly once, the refused one tried again; the progress events name the job, carry the
/// attempt and pages, and their sequences order them. The API shows each delivery's log.
async fn webhook_run(extra: &[(&str, &str)]) {
    let hooks = Hooks::refusing(1);
    let port = hooks.clone().serve().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = vec![
        ("FAXD_NOTIFY_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("FAXD_NOTIFY_RETRY_MIN", "1"),
        ("FAXD_NOTIFY_RETRY_MAX", "2"),
    ];
    env.extend_from_slice(extra);
    let node = start_node(dir.path(), &env).await;
    let admin = Admin::login(&node, dir.path()).await;
    let secret = "s3cret-of-the-desk";
    let box_id = faxbox(
        &admin,
        Some(
            json!({"url": format!("http://127.0.0.1:{port}/fax-events"), "method": "post",
                    "secret": secret}),
        ),
    )
    .await;
    let id = send(&admin, &box_id, DESK).await;
    let want: Vec<(String, u64)> = [
        ("queued", 0),
        ("sending", 0),
        ("page", 1),
        ("page", 2),
        ("delivered", 0),
        ("received", 0),
    ]
    .into_iter()
    .map(|(e, p)| (e.to_string(), p))
    .collect();
    let got = poll_async(
        "every webhook of the fax answered 200",
        Duration::from_secs(180),
        || async {
            let h = hooks.got();
            let ok: Vec<(String, u64)> = h
                .iter()
                .filter(|(_, _, status)| *status == 200)
                .filter_map(|(_, body, _)| serde_json::from_slice::<Value>(body).ok())
                .map(|v| event_key(&v))
                .collect();
            want.iter().all(|k| ok.contains(k)).then_some(h)
        },
    )
    .await;
    let mut answered: HashMap<(String, u64), Vec<u16>> = HashMap::new();
    let mut bodies: HashMap<(String, u64), Value> = HashMap::new();
    for (headers, body, status) in &got {
        let sig = headers.get("x-faxd-signature").expect("signature header");
        assert!(signature_valid(sig, secret, body), "bad signature {sig}");
        assert!(!signature_valid(sig, "another secret", body));
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["faxbox_id"], box_id.as_str(), "{v}");
        answered.entry(event_key(&v)).or_default().push(*status);
        bodies.insert(event_key(&v), v);
    }
    // Each event once, the refused one once more; nothing else.
    let refused: Vec<_> = answered
        .iter()
        .filter(|(_, s)| s.contains(&500))
        .map(|(k, s)| (k.clone(), s.clone()))
        .collect();
    assert_eq!(refused.len(), 1, "{answered:?}");
    let (retried, statuses) = &refused[0];
    assert_eq!(statuses, &[500, 200], "{answered:?}");
    let mut keys: Vec<_> = answered.keys().cloned().collect();
    keys.sort();
    let mut expected = want.clone();
    expected.sort();
    assert_eq!(keys, expected);
    for (k, s) in &answered {
        if k != retried {
            assert_eq!(s, &[200], "{k:?}");
        }
    }
    // The progress events name the queued job; the final one its outbox copy.
    let body = |e: &str, p: u64| bodies[&(e.to_string(), p)].clone();
    let seq = |v: &Value| v["sequence"].as_i64().expect("sequence");
    for v in [
        body("queued", 0),
        body("sending", 0),
        body("page", 1),
        body("page", 2),
    ] {
        assert_eq!(v["fax_id"], id.as_str(), "{v}");
        assert_eq!(v["job_id"], id.as_str(), "{v}");
        assert_eq!(v["to_number"], DESK, "{v}");
        assert_eq!(v["account_id"], admin.account.as_str(), "{v}");
    }
    for v in [body("sending", 0), body("page", 1), body("page", 2)] {
        assert_eq!(v["attempt"], 1, "{v}");
    }
    assert_eq!(body("page", 2)["total_pages"], 2);
    let delivered = body("delivered", 0);
    assert_eq!(delivered["job_id"], id.as_str(), "{delivered}");
    assert!(
        delivered["fax_id"]
            .as_str()
            .unwrap()
            .ends_with(&format!("-{id}")),
        "{delivered}"
    );
    assert_eq!(delivered["attempt"], 1, "{delivered}");
    let order = [
        seq(&body("queued", 0)),
        seq(&body("sending", 0)),
        seq(&body("page", 1)),
        seq(&body("page", 2)),
        seq(&delivered),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");

    let doc = notified(&admin, &id).await;
    let dels = doc["_read_only"]["notifications"]["deliveries"]
        .as_array()
        .unwrap()
        .clone();
    let hook = dels
        .iter()
        .find(|d| d["channel"] == "webhook")
        .expect("webhook delivery");
    assert_eq!(hook["state"], "delivered", "{hook}");
    assert_eq!(
        hook["log"].as_array().unwrap().last().unwrap()["result"],
        "HTTP 200"
    );
    // The progress webhooks, in order, each delivered; the refused one after two attempts.
    let outbox = format!(
        "/accounts/{}/faxes/outbox/{}",
        admin.account,
        doc["id"].as_str().unwrap()
    );
    let doc = poll_async(
        "the progress webhooks delivered",
        Duration::from_secs(60),
        || async {
            let d = admin.get(&outbox).await;
            let all = d["_read_only"]["webhooks"].as_array()?.clone();
            (all.len() == 4 && all.iter().all(|w| w["state"] == "delivered")).then_some(d)
        },
    )
    .await;
    let progress = doc["_read_only"]["webhooks"].as_array().unwrap();
    let listed: Vec<(String, u64)> = progress.iter().map(event_key).collect();
    assert_eq!(listed, want[..4], "{progress:?}");
    for w in progress {
        let results: Vec<&str> = w["log"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["result"].as_str())
            .filter(|r| *r != "sending")
            .collect();
        if &event_key(w) == retried {
            assert_eq!(w["attempts"], 2, "{w}");
            assert_eq!(results, ["webhook answered HTTP 500", "HTTP 200"], "{w}");
        } else {
            assert_eq!(w["attempts"], 1, "{w}");
            assert_eq!(results, ["HTTP 200"], "{w}");
        }
    }
    // The secret never shows in a log.
    assert!(!doc["_read_only"].to_string().contains(secret));
    stop_node(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faxbox_webhooks_tell_every_step_signed_retried_and_logged() {
    webhook_run(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faxbox_webhooks_tell_every_step_signed_retried_and_logged_on_couchdb() {
    let dir = tempfile::tempdir().unwrap();
    let couch = Couch::start(dir.path());
    let url = couch.url.clone();
    webhook_run(&[
        ("FAXD_STORE_BACKEND", "couchdb"),
        ("FAXD_STORE_COUCH_URL", &url),
    ])
    .await;
    drop(couch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_while_its_relay_was_down_delivers_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port().to_string();
    let env = [
        ("FAXD_NOTIFY_TRANSPORT", "smtp"),
        ("FAXD_NOTIFY_RELAY", "127.0.0.1"),
        ("FAXD_NOTIFY_PORT", port.as_str()),
        ("FAXD_NOTIFY_RETRY_MIN", "1"),
        ("FAXD_NOTIFY_RETRY_MAX", "2"),
    ];
    let node = start_node(dir.path(), &env).await;
    let admin = Admin::login(&node, dir.path()).await;
    let box_id = faxbox(&admin, None).await;
    let id = send(&admin, &box_id, "+15557654321").await;
    let doc = admin
        .final_doc(&admin.account, &id, Duration::from_secs(180))
        .await;
    let outbox = format!(
        "/accounts/{}/faxes/outbox/{}",
        admin.account,
        doc["id"].as_str().unwrap()
    );
    poll_async("a failed attempt", Duration::from_secs(60), || async {
        let d = admin.get(&outbox).await;
        let del = &d["_read_only"]["notifications"]["deliveries"][0];
        (del["attempts"].as_u64().unwrap_or(0) >= 1 && del["last_error"].is_string()).then_some(())
    })
    .await;
    // kill -9: nothing of the notifier's memory survives.
    tokio::task::spawn_blocking(move || node.stop_with("KILL"))
        .await
        .unwrap();

    let inbox = dir.path().join("relay");
    let _relay = Relay::start(port.parse().unwrap(), &inbox);
    let node = start_node(dir.path(), &env).await;
    // The account already owns its number: log in only.
    let http = reqwest::Client::new();
    let api = node.url("/v2");
    let (token, account) = common::admin_login(&http, &api, dir.path()).await;
    let admin = Admin {
        http,
        api,
        token,
        account,
    };
    let got = wait_mails(&inbox, 1, Duration::from_secs(180)).await;
    assert_eq!(got[0]["to"], "ann@example.com");
    assert_eq!(got[0]["subject"], "Fax has been sent to +15557654321");
    let d = poll_async("delivered", Duration::from_secs(60), || async {
        let d = admin.get(&outbox).await;
        (d["_read_only"]["notifications"]["state"] == "done").then_some(d)
    })
    .await;
    assert_eq!(
        d["_read_only"]["notifications"]["deliveries"][0]["state"],
        "delivered"
    );
    assert_eq!(mails(&inbox).len(), 1);
    stop_node(node).await;
}

/// An aiosmtpd relay (Debian's python3-aiosmtpd) with TLS and AUTH, as a mail provider runs
/// it: `starttls` mode requires STARTTLS before anything, `tls` mode is TLS from the first
/// byte (port 465 style); both require AUTH with the given login. Each message lands in the
/// maildir with a header saying how it arrived (`tls=yes auth=<login>`).
const SECURE_RELAY: &str = r#"
import sys, ssl, mailbox, signal
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
mode, port, cert, key, maildir, user, password = sys.argv[1:8]
box = mailbox.Maildir(maildir, create=True)
class Handler:
    async def handle_DATA(self, server, session, envelope):
        tls = session.ssl is not None or server.transport.get_extra_info('ssl_object') is not None
        login = session.login_data.decode() if session.authenticated and session.login_data else ''
        head = f"X-Test-Relay: tls={'yes' if tls else 'no'} auth={login}\r\n".encode()
        box.add(head + envelope.original_content)
        return '250 OK queued'
def authenticate(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == user.encode() \
        and auth_data.password == password.encode()
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
common = dict(hostname='127.0.0.1', port=int(port), authenticator=authenticate,
              auth_required=True)
if mode == 'starttls':
    c = Controller(Handler(), tls_context=ctx, require_starttls=True, **common)
else:
    c = Controller(Handler(), ssl_context=ctx, auth_require_tls=False, **common)
c.start()
print('ready', flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
c.stop()
"#;

/// Starts [`SECURE_RELAY`] in `mode` on `port` with a certificate of a CA of its own;
/// returns the relay and the CA's PEM path (what faxd's `tls_ca` trusts).
fn secure_relay(dir: &Path, mode: &str, port: u16, password: &str) -> (Relay, PathBuf) {
    let (cert, key, ca) = common::tls::certificates(dir, "relay-ca");
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", SECURE_RELAY, mode, &port.to_string()])
        .args([&cert, &key, &dir.join("relay")])
        .args(["faxd", password])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 with aiosmtpd");
    let mut ready = String::new();
    let out = child.stdout.take().expect("relay stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut ready).unwrap();
    assert_eq!(ready.trim(), "ready", "the relay did not start");
    (Relay(child), ca)
}

fn secure_env(port: &str, tls: &str, ca: &Path, password: &str) -> Vec<(String, String)> {
    [
        ("FAXD_NOTIFY_TRANSPORT", "smtp"),
        ("FAXD_NOTIFY_RELAY", "127.0.0.1"),
        ("FAXD_NOTIFY_PORT", port),
        ("FAXD_NOTIFY_TLS", tls),
        ("FAXD_NOTIFY_TLS_CA", &ca.display().to_string()),
        ("FAXD_NOTIFY_USERNAME", "faxd"),
        ("FAXD_NOTIFY_PASSWORD", password),
        ("FAXD_NOTIFY_RETRY_MIN", "1"),
        ("FAXD_NOTIFY_RETRY_MAX", "2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_requiring_starttls_and_auth_gets_the_mail_encrypted_and_authenticated() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let (_relay, ca) = secure_relay(dir.path(), "starttls", port, "relay-secret");
    let env = secure_env(&port.to_string(), "starttls", &ca, "relay-secret");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let node = start_node(dir.path(), &env).await;
    let admin = Admin::login(&node, dir.path()).await;
    let box_id = faxbox(&admin, None).await;
    let id = send(&admin, &box_id, "+15557654321").await;
    let got = wait_mails(&dir.path().join("relay"), 1, Duration::from_secs(180)).await;
    assert_eq!(got[0]["relay"], "tls=yes auth=faxd", "{}", got[0]);
    assert_eq!(got[0]["to"], "ann@example.com");
    assert_eq!(got[0]["subject"], "Fax has been sent to +15557654321");
    let doc = notified(&admin, &id).await;
    let d = &doc["_read_only"]["notifications"]["deliveries"][0];
    assert_eq!(d["state"], "delivered", "{d}");
    assert_eq!(d["attempts"], 1, "{d}");
    stop_node(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_on_implicit_tls_refusing_the_password_fails_the_delivery_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let (_relay, ca) = secure_relay(dir.path(), "tls", port, "relay-secret");
    let env = secure_env(&port.to_string(), "tls", &ca, "wrong-password");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let node = start_node(dir.path(), &env).await;
    let admin = Admin::login(&node, dir.path()).await;
    let box_id = faxbox(&admin, None).await;
    let id = send(&admin, &box_id, "+15557654321").await;
    // 535 is permanent: failed after one attempt, not retried, nothing delivered.
    let doc = notified(&admin, &id).await;
    let d = &doc["_read_only"]["notifications"]["deliveries"][0];
    assert_eq!(d["state"], "failed", "{d}");
    assert_eq!(d["attempts"], 1, "{d}");
    assert!(d["last_error"].as_str().unwrap().contains("535"), "{d}");
    assert!(mails(&dir.path().join("relay")).is_empty());
    stop_node(node).await;
}
