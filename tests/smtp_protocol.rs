//! fax_smtp's SMTP dialogue on a real socket, against the real listener and store service
//! (embedded store): extensions, pipelining, sequence errors, sizes, line limits, smuggling,
//! RSET, relay and null-sender refusals, recipient caps, unadvertised extensions, timeouts,
//! the session cap, STARTTLS (with pipelined plaintext discarded), AUTH, and a TLS
//! ClientHello on the plaintext port. Every refused message leaves nothing queued.

mod api_common;
mod smtp_common;

use std::time::Duration;

use faxd::smtp::AuthMode;
use faxd::smtp::framing::dot_stuff;
use smtp_common::{Client, Rig, fixture, queued_ids, test_cert, tls_client};

async fn rig() -> Rig {
    let (store, dir) = api_common::embedded().await;
    Rig::start(store, dir).await
}

async fn rig_with(tweak: impl FnOnce(&mut faxd::smtp::SessionConfig), sessions: usize) -> Rig {
    let (store, dir) = api_common::embedded().await;
    Rig::start_with(store, dir, tweak, sessions).await
}

fn code(reply: &str) -> &str {
    reply.get(..3).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ehlo_advertises_and_a_helo_only_scanner_sends_a_fax() {
    let rig = rig().await;
    let (mut c, greeting) = Client::connect(rig.addr).await;
    assert!(greeting.starts_with("220 fax.test "), "{greeting}");
    let ehlo = c.cmd("EHLO client.example").await;
    for ext in [
        "SIZE 10485670",
        "PIPELINING",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(ehlo.contains(ext), "{ext} missing: {ehlo}");
    }
    assert!(
        !ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert_eq!(c.cmd("QUIT").await.get(..9), Some("221 2.0.0"));

    // HELO only, lower-case verbs, a space after the colon (scanners do this).
    let (mut c, _) = Client::connect(rig.addr).await;
    assert_eq!(code(&c.cmd("HELO [192.168.1.21]").await), "250");
    assert_eq!(
        code(&c.cmd("mail from: <scanner@example.com>").await),
        "250"
    );
    let to = rig.rcpt(&api_common::unique_number());
    assert_eq!(code(&c.cmd(&format!("rcpt to: <{to}>")).await), "250");
    assert_eq!(code(&c.cmd("data").await), "354");
    c.send(&dot_stuff(&fixture("scanner_tiff_uppercase.eml")))
        .await;
    let done = c.reply().await;
    assert!(done.starts_with("250 2.0.0 queued as "), "{done}");
    let ids = queued_ids(&done);
    assert_eq!(ids.len(), 1);
    let job = rig.job(&ids[0]).await;
    assert_eq!(job["pvt_job_status"], "pending", "{job}");
    assert_eq!(job["faxbox_id"], rig.faxbox_id.as_str());
    assert_eq!(job["pvt_pages"], 1, "{job}");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_envelope_is_answered_in_order_one_fax_per_number() {
    let rig = rig().await;
    let (mut c, _) = Client::connect(rig.addr).await;
    c.cmd("EHLO client.example").await;
    let (n1, n2) = (api_common::unique_number(), api_common::unique_number());
    let batch = format!(
        "MAIL FROM:<alice@example.com>\r\nRCPT TO:<{}>\r\nRCPT TO:<someone@gmail.example>\r\nRCPT TO:<{}>\r\nRCPT TO:<{}>\r\nDATA\r\n",
        rig.rcpt(&n1),
        rig.rcpt(&n2),
        rig.rcpt(&n1),
    );
    c.send(batch.as_bytes()).await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(c.reply().await);
    }
    let got: Vec<&str> = codes.iter().map(|r| code(r)).collect();
    assert_eq!(got, ["250", "250", "550", "250", "250", "354"], "{codes:?}");
    assert!(codes[2].contains("5.7.1"), "{}", codes[2]);
    c.send(&dot_stuff(&fixture("gmail_pdf.eml"))).await;
    let done = c.reply().await;
    let ids = queued_ids(&done);
    // The same number twice is one fax.
    assert_eq!(ids.len(), 2, "{done}");
    let mut numbers = Vec::new();
    for id in &ids {
        numbers.push(rig.job(id).await["to_number"].as_str().unwrap().to_string());
    }
    numbers.sort();
    let mut want = vec![n1, n2];
    want.sort();
    assert_eq!(numbers, want);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_errors_relay_null_sender_and_unadvertised_extensions() {
    let rig = rig_with(|c| c.max_recipients = 2, 50).await;
    let (mut c, _) = Client::connect(rig.addr).await;
    assert!(
        c.cmd("MAIL FROM:<a@example.com>")
            .await
            .starts_with("503 5.5.1")
    );
    c.cmd("EHLO x").await;
    assert!(c.cmd("RCPT TO:<1@x>").await.starts_with("503 5.5.1"));
    assert!(c.cmd("DATA").await.starts_with("503 5.5.1"));
    assert!(
        c.cmd("MAIL FROM:<a@example.com> BODY=BINARYMIME")
            .await
            .starts_with("555 5.5.4")
    );
    assert!(
        c.cmd("MAIL FROM:<a@example.com> SMTPUTF8")
            .await
            .starts_with("555 5.5.4")
    );
    assert!(
        c.cmd("MAIL FROM:<a@example.com> SIZE=999999999")
            .await
            .starts_with("552 5.3.4")
    );
    assert!(
        c.cmd("MAIL FROM:<a@example.com>")
            .await
            .starts_with("250 2.1.0")
    );
    assert!(
        c.cmd("MAIL FROM:<b@example.com>")
            .await
            .starts_with("503 5.5.1")
    );
    let to = rig.rcpt(&api_common::unique_number());
    assert!(
        c.cmd(&format!("RCPT TO:<{to}> NOTIFY=SUCCESS"))
            .await
            .starts_with("555 5.5.4")
    );
    assert!(
        c.cmd("RCPT TO:<@relay.example:15551234567@gmail.example>")
            .await
            .starts_with("550 5.7.1")
    );
    assert!(
        c.cmd("RCPT TO:<15551234567%gmail.example@x>")
            .await
            .starts_with("550 5.7.1")
    );
    assert!(
        c.cmd("RCPT TO:<15551234567@gmail.example>")
            .await
            .starts_with("550 5.7.1")
    );
    assert!(
        c.cmd(&format!("RCPT TO:<{to}>"))
            .await
            .starts_with("250 2.1.5")
    );
    let to2 = rig.rcpt(&api_common::unique_number());
    assert!(
        c.cmd(&format!("RCPT TO:<{to2}>"))
            .await
            .starts_with("250 2.1.5")
    );
    let to3 = rig.rcpt(&api_common::unique_number());
    assert!(
        c.cmd(&format!("RCPT TO:<{to3}>"))
            .await
            .starts_with("452 4.5.3")
    );
    assert!(c.cmd("BDAT 10 LAST").await.starts_with("502 5.5.1"));
    assert!(c.cmd("XYZZY").await.starts_with("500 5.5.2"));
    assert!(c.cmd("VRFY someone").await.starts_with("252"));
    // RSET clears the envelope: DATA now needs MAIL again, and a new MAIL is fine.
    assert!(c.cmd("RSET").await.starts_with("250 2.0.0"));
    assert!(c.cmd("DATA").await.starts_with("503 5.5.1"));
    // The null sender (a bounce) never gets a fax.
    assert!(c.cmd("MAIL FROM:<>").await.starts_with("250"));
    assert!(
        c.cmd(&format!("RCPT TO:<{to}>"))
            .await
            .starts_with("550 5.7.1")
    );
    // All recipients refused: DATA is refused, no 354.
    assert!(c.cmd("DATA").await.starts_with("554 5.5.1"));
    assert!(c.cmd("QUIT").await.starts_with("221"));
    assert!(rig.outgoing().await.is_empty());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_data_and_long_lines_are_refused_and_the_session_goes_on() {
    let rig = rig_with(|c| c.max_msg_size = 20_000, 50).await;
    let (mut c, _) = Client::connect(rig.addr).await;
    c.cmd("EHLO x").await;
    let long = format!("NOOP {}", "x".repeat(5000));
    assert!(c.cmd(&long).await.starts_with("500 5.5.2"));
    assert!(c.cmd("NOOP").await.starts_with("250"));
    let to = rig.rcpt(&api_common::unique_number());
    assert!(c.begin("alice@example.com", &to).await.starts_with("354"));
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    for _ in 0..600 {
        big.extend_from_slice(
            b"0123456789012345678901234567890123456789012345678901234567890123456789\r\n",
        );
    }
    c.send(&dot_stuff(&big)).await;
    assert!(c.reply().await.starts_with("552 5.3.4"));
    assert!(c.cmd("NOOP").await.starts_with("250"));
    assert!(rig.outgoing().await.is_empty());
    let logs = rig.logs(1).await;
    assert!(
        logs[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("maximum size"),
        "{logs:?}"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggled_commands_never_make_a_second_message() {
    let rig = rig().await;
    for shape in [&b"\n.\n"[..], b"\r\n.\n", b"\n.\r\n", b"\r.\r", b"\r.\r\n"] {
        let (mut c, _) = Client::connect(rig.addr).await;
        c.cmd("EHLO x").await;
        let n = api_common::unique_number();
        assert!(
            c.begin("alice@example.com", &rig.rcpt(&n))
                .await
                .starts_with("354")
        );
        let mut data = fixture("gmail_pdf.eml");
        data.extend_from_slice(shape);
        data.extend_from_slice(
            format!(
                "MAIL FROM:<alice@example.com>\r\nRCPT TO:<{}>\r\nDATA\r\nSubject: smuggled\r\n\r\n",
                rig.rcpt(&n)
            )
            .as_bytes(),
        );
        // Sent as an attacker would: not dot-stuffed, then the real end of data.
        data.extend_from_slice(b"\r\n.\r\n");
        c.send(&data).await;
        let reply = c.reply().await;
        assert!(reply.starts_with("554 5.5.2"), "{shape:?}: {reply}");
        // Nothing else was answered: the next reply is the one to this NOOP.
        assert!(c.cmd("NOOP").await.starts_with("250 2.0.0"), "{shape:?}");
    }
    assert!(rig.outgoing().await.is_empty());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_gets_421_at_the_deadline() {
    let rig = rig_with(|c| c.command_timeout = Duration::from_millis(1500), 50).await;
    let (c, _) = Client::connect(rig.addr).await;
    let (r, mut w) = tokio::io::split(c.into_inner());
    // One byte every 200 ms, each well within any per-read timer: the line deadline ends it.
    let started = std::time::Instant::now();
    let trickle = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for b in b"NOOP NOOP NOOP NOOP NOOP NOOP NOOP NOOP NOOP NOOP" {
            if w.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut c = Client::over(tokio::io::join(r, tokio::io::sink()));
    let reply = c.reply().await;
    assert!(reply.starts_with("421 4.4.2"), "{reply}");
    // At the line deadline (1.5 s), not when the 10 s trickle ends and a per-read timer
    // would finally fire.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(8),
        "{took:?}"
    );
    trickle.abort();
    assert!(c.closed().await);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_beyond_the_cap_get_421() {
    let rig = rig_with(|_| {}, 1).await;
    let (mut first, g) = Client::connect(rig.addr).await;
    assert!(g.starts_with("220"));
    let (mut second, g2) = Client::connect(rig.addr).await;
    assert!(g2.starts_with("421 4.3.2"), "{g2}");
    assert!(second.closed().await);
    assert!(first.cmd("QUIT").await.starts_with("221"));
    // The slot is free again.
    let third = api_common::poll("a free session", Duration::from_secs(10), || async {
        let (_c, g) = Client::connect(rig.addr).await;
        g.starts_with("220").then_some(g)
    })
    .await;
    assert!(third.starts_with("220"));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_hello_on_the_plaintext_port_is_closed() {
    let rig = rig().await;
    let (mut c, _) = Client::connect(rig.addr).await;
    c.send(&[
        0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03,
    ])
    .await;
    assert!(c.closed().await);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_discards_pipelined_plaintext_and_auth_works_only_inside_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_cert(dir.path());
    let acceptor = faxd::tls::server_acceptor(&cert, &key).unwrap();
    let rig = rig_with(
        move |c| {
            c.tls = Some(acceptor.into());
            c.auth = AuthMode::Optional;
        },
        50,
    )
    .await;
    // A user of the account to log in as (user@realm).
    let realm = format!("{}.test", rig.admin.name);
    let login = format!("{}@{realm}", rig.admin.username);
    let (mut c, _) = Client::connect(rig.addr).await;
    let ehlo = c.cmd("EHLO x").await;
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert!(
        c.cmd("AUTH PLAIN AGZvbwBiYXI=")
            .await
            .starts_with("538 5.7.11")
    );
    // STARTTLS with a command behind it in the same write: that command is dropped.
    c.send(b"STARTTLS\r\nRSET\r\n").await;
    assert!(c.reply().await.starts_with("220 2.0.0"));
    let tcp = c.into_inner();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tls_client(&ca).connect(name, tcp).await.expect("handshake");
    let mut c = Client::over(tls);
    let ehlo = c.cmd("EHLO x").await;
    assert!(
        ehlo.starts_with("250-fax.test"),
        "first reply in TLS is EHLO's: {ehlo}"
    );
    assert!(
        ehlo.contains("AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    assert!(c.cmd("STARTTLS").await.starts_with("503"));
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let bad = b64(&format!("\0{login}\0wrong"));
    assert!(
        c.cmd(&format!("AUTH PLAIN {bad}"))
            .await
            .starts_with("535 5.7.8")
    );
    assert!(c.cmd("AUTH LOGIN").await.starts_with("334 VXNlcm5hbWU6"));
    assert!(c.cmd("*").await.starts_with("501 5.5.2"));
    assert!(c.cmd("AUTH CRAM-MD5").await.starts_with("504 5.5.4"));
    // LOGIN with the user name on the AUTH line (.NET, HP scanners), then the password.
    assert!(
        c.cmd(&format!("AUTH LOGIN {}", b64(&login)))
            .await
            .starts_with("334 UGFzc3dvcmQ6")
    );
    assert!(
        c.cmd(&b64(&rig.admin.password))
            .await
            .starts_with("235 2.7.0")
    );
    assert!(c.cmd("AUTH PLAIN x").await.starts_with("503"));
    // Authenticated in the faxbox's account: a sender outside the permission list may fax.
    assert!(
        c.cmd("MAIL FROM:<boss@elsewhere.example>")
            .await
            .starts_with("250")
    );
    let to = rig.rcpt(&api_common::unique_number());
    assert!(
        c.cmd(&format!("RCPT TO:<{to}>")).await.starts_with("250"),
        "authenticated sender"
    );
    assert!(c.cmd("QUIT").await.starts_with("221"));
    // A fresh session with PLAIN and the initial response.
    let (mut c, _) = Client::connect(rig.addr).await;
    c.cmd("EHLO x").await;
    c.send(b"STARTTLS\r\n").await;
    c.reply().await;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tls_client(&ca).connect(name, c.into_inner()).await.unwrap();
    let mut c = Client::over(tls);
    c.cmd("EHLO x").await;
    let good = b64(&format!("\0{login}\0{}", rig.admin.password));
    assert!(
        c.cmd(&format!("AUTH PLAIN {good}"))
            .await
            .starts_with("235")
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_senders_and_messages_are_logged_and_nothing_is_queued() {
    let rig = rig().await;
    let (mut c, _) = Client::connect(rig.addr).await;
    c.cmd("EHLO x").await;
    // Not in the permission list (and not a substring trick).
    c.cmd("MAIL FROM:<mallory@example.com.attacker.example>")
        .await;
    let r = c
        .cmd(&format!(
            "RCPT TO:<{}>",
            rig.rcpt(&api_common::unique_number())
        ))
        .await;
    assert!(
        r.starts_with("550 5.7.1") && r.contains("not allowed"),
        "{r}"
    );
    c.cmd("RSET").await;
    // An invalid number.
    c.cmd("MAIL FROM:<alice@example.com>").await;
    let r = c.cmd(&format!("RCPT TO:<{}>", rig.rcpt("12"))).await;
    assert!(r.starts_with("550 5.1.1"), "{r}");
    // No document in the mail.
    let r = c
        .cmd(&format!(
            "RCPT TO:<{}>",
            rig.rcpt(&api_common::unique_number())
        ))
        .await;
    assert!(r.starts_with("250"), "{r}");
    c.cmd("DATA").await;
    c.send(&dot_stuff(&fixture("no_attachment.eml"))).await;
    let r = c.reply().await;
    assert!(r.starts_with("554 5.6.1"), "{r}");
    // Encrypted mail.
    let to = rig.rcpt(&api_common::unique_number());
    assert!(c.begin("alice@example.com", &to).await.starts_with("354"));
    c.send(&dot_stuff(&fixture("smime_encrypted_pdf.eml")))
        .await;
    assert!(c.reply().await.starts_with("554 5.7.4"));
    assert!(rig.outgoing().await.is_empty());
    let logs = rig.logs(4).await;
    let errors: Vec<String> = logs
        .iter()
        .map(|l| l["error"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("mallory@example.com.attacker.example is not allowed")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("fax number 12 is invalid")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("no faxable document")),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.contains("encrypted")), "{errors:?}");
    for l in &logs {
        let doc = rig.smtplog_doc(l["id"].as_str().unwrap()).await;
        assert_eq!(doc["faxbox_id"], rig.faxbox_id.as_str(), "{doc}");
        assert_eq!(doc["from"], l["from"], "{doc}");
        assert!(!doc["errors"].as_array().unwrap().is_empty(), "{doc}");
    }
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_mail_gets_clear_replies_and_nothing_is_queued() {
    let rig = rig().await;
    let (mut c, _) = Client::connect(rig.addr).await;
    c.cmd("EHLO x").await;
    let mut bomb = String::from(
        "From: alice@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n",
    );
    for i in 0..10_000 {
        bomb.push_str(&format!(
            "--b\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4 part {i}\r\n"
        ));
    }
    bomb.push_str("--b--\r\n");
    let mut flood = String::from("From: alice@example.com\r\n");
    for i in 0..5_000 {
        flood.push_str(&format!("X-Flood-{i}: {}\r\n", "y".repeat(30)));
    }
    flood.push_str("Content-Type: application/pdf\r\n\r\n%PDF-1.4\r\n");
    let invalid_utf8 =
        b"From: alice@example.com\r\nSubject: \xff\xfe\xc3\x28\r\n\r\n\xff\xff\r\n".to_vec();
    for (data, want) in [
        (bomb.into_bytes(), "554 5.6.0"),
        (flood.into_bytes(), "552 5.3.4"),
        (invalid_utf8, "554 5.6.1"),
    ] {
        let to = rig.rcpt(&api_common::unique_number());
        assert!(c.begin("alice@example.com", &to).await.starts_with("354"));
        c.send(&dot_stuff(&data)).await;
        let r = c.reply().await;
        assert!(r.starts_with(want), "{r} (want {want})");
    }
    assert!(c.cmd("NOOP").await.starts_with("250"));
    assert!(rig.outgoing().await.is_empty());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_runs_over_an_in_memory_stream() {
    let rig = rig().await;
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (_stop, stopped) = faxd::smtp::listener::Shutdown::new();
    let session = tokio::spawn(faxd::smtp::session::run(
        server,
        None,
        rig.cfg.clone(),
        rig.service.clone(),
        stopped,
    ));
    let mut c = Client::over(client);
    assert!(c.reply().await.starts_with("220"));
    // The whole transaction in one write, message included.
    let to = rig.rcpt(&api_common::unique_number());
    let mut batch =
        format!("EHLO mem\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<{to}>\r\nDATA\r\n")
            .into_bytes();
    batch.extend_from_slice(&dot_stuff(&fixture("apple_inline_pdf.eml")));
    batch.extend_from_slice(b"QUIT\r\n");
    c.send(&batch).await;
    let replies = [
        c.reply().await,
        c.reply().await,
        c.reply().await,
        c.reply().await,
    ];
    assert!(replies[0].starts_with("250-"), "{replies:?}");
    assert!(replies[3].starts_with("354"), "{replies:?}");
    let done = c.reply().await;
    assert!(done.starts_with("250 2.0.0 queued as"), "{done}");
    assert!(c.reply().await.starts_with("221"));
    assert_eq!(session.await.unwrap(), faxd::smtp::End::Quit);
    assert_eq!(
        rig.job(&queued_ids(&done)[0]).await["pvt_job_status"],
        "pending"
    );
    rig.stop().await;
}

/// Mail to `<number>@<account realm>` (spec §5.2): a sender who is the one user owning one
/// faxbox of the account faxes from that faxbox, as its owner; a sender no faxbox of the
/// realm admits is refused at RCPT, the refusal logged, nothing queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_to_the_account_realm_uses_the_senders_own_faxbox() {
    let rig = rig().await;
    let account = rig
        .api
        .get(&format!("/v2/accounts/{}", rig.admin.id), &rig.admin.token)
        .await;
    let realm = account.data()["realm"].as_str().expect("realm").to_string();
    let user = rig
        .api
        .put(
            &format!("/v2/accounts/{}/users", rig.admin.id),
            &rig.admin.token,
            serde_json::json!({"first_name": "Bob", "last_name": "Sender",
                               "username": api_common::unique("bob"),
                               "password": api_common::unique("pw"),
                               "email": "bob@corp.example", "priv_level": "user"}),
        )
        .await;
    assert_eq!(user.status.as_u16(), 201, "{}", user.body);
    let bob = user.data()["id"].as_str().expect("user id").to_string();
    let caller_id = rig.api.own_number(&rig.admin).await;
    let fb = rig
        .api
        .put(
            &format!("/v2/accounts/{}/faxboxes", rig.admin.id),
            &rig.admin.token,
            serde_json::json!({"name": "bob's box", "caller_id": caller_id, "owner_id": bob}),
        )
        .await;
    assert_eq!(fb.status.as_u16(), 201, "{}", fb.body);
    let bobs_box = fb.data()["id"].as_str().expect("faxbox id").to_string();

    let number = api_common::unique_number();
    let digits = number.trim_start_matches('+');
    let (mut c, _) = Client::connect(rig.addr).await;
    c.cmd("EHLO client.example").await;
    assert_eq!(code(&c.cmd("MAIL FROM:<bob@corp.example>").await), "250");
    let rcpt = c.cmd(&format!("RCPT TO:<{digits}@{realm}>")).await;
    assert_eq!(code(&rcpt), "250", "{rcpt}");
    assert_eq!(code(&c.cmd("DATA").await), "354");
    c.send(&dot_stuff(&fixture("gmail_pdf.eml"))).await;
    let done = c.reply().await;
    let ids = queued_ids(&done);
    assert_eq!(ids.len(), 1, "{done}");
    let job = rig.job(&ids[0]).await;
    assert_eq!(job["faxbox_id"], bobs_box.as_str(), "{job}");
    assert_eq!(job["owner_id"], bob.as_str(), "{job}");
    assert_eq!(job["to_number"], number.as_str(), "{job}");

    // A sender no faxbox of the realm admits.
    let queued_before = rig.outgoing().await.len();
    assert_eq!(code(&c.cmd("RSET").await), "250");
    assert_eq!(code(&c.cmd("MAIL FROM:<eve@elsewhere.test>").await), "250");
    let other = api_common::unique_number();
    let refused = c
        .cmd(&format!(
            "RCPT TO:<{}@{realm}>",
            other.trim_start_matches('+')
        ))
        .await;
    assert!(refused.starts_with("550 5.7.1"), "{refused}");
    assert!(refused.contains("no faxbox of realm"), "{refused}");
    let logs = rig.logs(2).await;
    assert!(
        logs.iter().any(|l| l["from"] == "eve@elsewhere.test"
            && l["error"]
                .as_str()
                .is_some_and(|e| e.contains("no faxbox of realm"))),
        "{logs:?}"
    );
    assert_eq!(
        rig.outgoing().await.len(),
        queued_before,
        "a refused RCPT queued a fax"
    );
    rig.stop().await;
}
