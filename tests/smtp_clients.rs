//! E-mail to fax end to end with real SMTP clients — swaks (Debian), Python's smtplib and
//! lettre — on both stores: the faxes are queued (`pending`, converted, one per number, all
//! documents of a mail in one fax), and every message, accepted or refused, shows in
//! `GET /v2/accounts/{id}/faxes/smtplog`.

#[macro_use]
mod api_common;
mod smtp_common;

use std::process::Command;
use std::time::Duration;

use api_common::{Dir, unique_number};
use faxd::store::SharedStore;
use smtp_common::{Rig, fixture_path, queued_ids};

both_backends!(
    swaks_faxes_a_pdf_and_the_log_shows_it,
    smtplib_faxes_two_pdfs_as_one_document_to_two_numbers,
    lettre_faxes_an_attachment,
    refused_mail_is_logged_with_its_reason,
);

/// Runs a client program; (exit code, stdout + stderr).
async fn run(cmd: &mut Command) -> (i32, String) {
    // The client blocks this thread; the runtime's other work (the listener) moves off it.
    let out = tokio::task::block_in_place(|| cmd.output()).expect("client program");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

async fn swaks_faxes_a_pdf_and_the_log_shows_it(store: SharedStore, dir: Dir) {
    let rig = Rig::start(store, dir).await;
    let number = unique_number();
    // swaks reads a leading '+' as an option: the number as digits (normalised to E.164).
    let address = rig.rcpt(number.trim_start_matches('+'));
    let (code, out) = run(Command::new("swaks")
        .args(["--server", &rig.addr.to_string()])
        .args(["--from", "alice@example.com", &format!("--to={address}")])
        .args([
            "--attach-type",
            "application/pdf",
            "--attach-name",
            "one.pdf",
        ])
        .args(["--attach", &format!("@{}", fixture_path("one.pdf"))])
        .args(["--body", "Please fax", "--pipeline", "--timeout", "60"]))
    .await;
    assert_eq!(code, 0, "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("queued as"))
        .unwrap_or_else(|| panic!("no queued reply: {out}"));
    let ids = queued_ids(line.trim_start_matches("<~ ").trim_start_matches("<- "));
    assert_eq!(ids.len(), 1, "{line}");
    let outgoing = rig.outgoing().await;
    let row = outgoing
        .iter()
        .find(|r| r["id"] == ids[0].as_str())
        .unwrap_or_else(|| panic!("job not listed: {outgoing:?}"));
    assert_eq!(row["status"], "pending", "{row}");
    assert_eq!(row["to"], number.as_str(), "{row}");
    let job = rig.job(&ids[0]).await;
    assert_eq!(job["pvt_pages"], 1, "{job}");
    let logs = rig.logs(1).await;
    assert_eq!(logs[0]["from"], "alice@example.com", "{logs:?}");
    assert_eq!(logs[0]["to"], address.to_lowercase(), "{logs:?}");
    assert!(logs[0]["error"].is_null(), "{logs:?}");
    // An accepted message's log names the recipient as read, like a refused one's.
    let doc = rig.smtplog_doc(logs[0]["id"].as_str().unwrap()).await;
    let domain = address.rsplit_once('@').unwrap().1.to_lowercase();
    assert_eq!(doc["faxbox_domain"], domain.as_str(), "{doc}");
    assert_eq!(
        doc["original_number"],
        number.trim_start_matches('+'),
        "{doc}"
    );
    assert_eq!(doc["translated_number"], number.as_str(), "{doc}");
    rig.stop().await;
}

async fn smtplib_faxes_two_pdfs_as_one_document_to_two_numbers(store: SharedStore, dir: Dir) {
    let rig = Rig::start(store, dir).await;
    let (n1, n2) = (unique_number(), unique_number());
    let script = r#"
import smtplib, sys
host, port, path, r1, r2 = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
raw = open(path, "rb").read()
with smtplib.SMTP(host, port, timeout=120) as s:
    s.ehlo("smtplib.example")
    assert s.has_extn("pipelining") and s.has_extn("size") and s.has_extn("8bitmime")
    code, msg = s.mail("alice@example.com", ["BODY=8BITMIME", "SIZE=%d" % len(raw)])
    assert code == 250, (code, msg)
    for r in (r1, r2):
        code, msg = s.rcpt(r)
        assert code == 250, (code, msg)
    code, msg = s.data(raw)
    print(code, msg.decode())
"#;
    let addr = rig.addr;
    let (code, out) = run(Command::new("/usr/bin/python3").args([
        "-c",
        script,
        &addr.ip().to_string(),
        &addr.port().to_string(),
        &fixture_path("two_pdfs_order.eml"),
        &rig.rcpt(&n1),
        &rig.rcpt(&n2),
    ]))
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("250 "), "{out}");
    let ids = queued_ids(out.trim());
    assert_eq!(ids.len(), 2, "{out}");
    let mut numbers = Vec::new();
    for id in &ids {
        let job = rig.job(id).await;
        // Both PDFs (one page each) in one fax, in MIME order.
        assert_eq!(job["pvt_pages"], 2, "{job}");
        assert_eq!(job["pvt_job_status"], "pending", "{job}");
        assert_eq!(job["subject"], "two documents", "{job}");
        numbers.push(job["to_number"].as_str().unwrap().to_string());
    }
    numbers.sort();
    let mut want = vec![n1, n2];
    want.sort();
    assert_eq!(numbers, want);
    let logs = rig.logs(1).await;
    assert!(logs[0]["error"].is_null(), "{logs:?}");
    rig.stop().await;
}

async fn lettre_faxes_an_attachment(store: SharedStore, dir: Dir) {
    use lettre::message::{Attachment, MultiPart, SinglePart, header::ContentType};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let rig = Rig::start(store, dir).await;
    let number = unique_number();
    let pdf = std::fs::read(fixture_path("two.pdf")).unwrap();
    let msg = Message::builder()
        .from("Bob <bob@example.com>".parse().unwrap())
        .to(rig.rcpt(&number).parse().unwrap())
        .subject("from lettre")
        .multipart(
            MultiPart::mixed()
                .singlepart(SinglePart::plain("Please fax".to_string()))
                .singlepart(
                    Attachment::new("form.pdf".into())
                        .body(pdf, ContentType::parse("application/pdf").unwrap()),
                ),
        )
        .unwrap();
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(rig.addr.ip().to_string())
        .port(rig.addr.port())
        .timeout(Some(Duration::from_secs(60)))
        .build();
    let resp = mailer.send(msg).await.expect("lettre send");
    assert_eq!(resp.code().to_string(), "250");
    let text: String = resp.message().collect::<Vec<_>>().join(" ");
    let ids = queued_ids(&format!("250 {text}"));
    assert_eq!(ids.len(), 1, "{text}");
    let job = rig.job(&ids[0]).await;
    assert_eq!(job["to_number"], number.as_str());
    assert_eq!(job["pvt_job_status"], "pending", "{job}");
    rig.stop().await;
}

async fn refused_mail_is_logged_with_its_reason(store: SharedStore, dir: Dir) {
    let rig = Rig::start(store, dir).await;
    // A sender the faxbox does not admit: swaks fails at RCPT.
    let (code, out) = run(Command::new("swaks")
        .args(["--server", &rig.addr.to_string()])
        .args([
            "--from",
            "eve@attacker.example",
            &format!("--to={}", rig.rcpt(unique_number().trim_start_matches('+'))),
        ])
        .args(["--attach-type", "application/pdf"])
        .args(["--attach", &format!("@{}", fixture_path("one.pdf"))]))
    .await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("550 5.7.1"), "{out}");
    // A zip only: refused after the data, naming what was found.
    let (code, out) = run(Command::new("swaks")
        .args(["--server", &rig.addr.to_string()])
        .args([
            "--from",
            "alice@example.com",
            &format!("--to={}", rig.rcpt(unique_number().trim_start_matches('+'))),
        ])
        .args([
            "--data",
            &format!("@{}", fixture_path("zip_only_unsupported.eml")),
        ]))
    .await;
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("554 5.6.1") && out.contains("docs.zip"),
        "{out}"
    );
    assert!(rig.outgoing().await.is_empty());
    let logs = rig.logs(2).await;
    let errors: Vec<&str> = logs.iter().filter_map(|l| l["error"].as_str()).collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("eve@attacker.example is not allowed")),
        "{logs:?}"
    );
    assert!(errors.iter().any(|e| e.contains("docs.zip")), "{logs:?}");
    rig.stop().await;
}
