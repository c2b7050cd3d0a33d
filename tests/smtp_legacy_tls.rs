//! `[smtp] legacy_tls` on a real socket: an old scanner's TLS stack (Python's smtplib on
//! Debian's OpenSSL, held to TLS 1.0 or 1.1) cannot start TLS on the default rustls listener,
//! and with `legacy_tls` it completes STARTTLS, with RSA key exchange and AES-CBC too, and
//! faxes a scan; a TLS 1.3 client still gets TLS 1.3; and bad certificate or key files stop
//! the listener's start with an error naming the setting and the file.

mod api_common;
mod smtp_common;

use faxd::config::SmtpSection;
use faxd::config::fax::FaxConfig;
use faxd::smtp::starttls::StartTls;
use smtp_common::{
    Client, RSA_KEY, Rig, fixture, fixture_path, queued_ids, test_cert_with, tls_client,
};
use tokio_rustls::rustls::ProtocolVersion;
use tokio_rustls::rustls::pki_types::ServerName;

/// An old scanner: smtplib with an SSLContext held to one old TLS version and a cipher
/// list; STARTTLS, then one message (`eml`) to `rcpt`. Prints `TLS <version> <cipher>` and
/// `DATA <code> <text>`, or `HANDSHAKE FAILED <error>` (exit 3).
const SCANNER: &str = r#"
import smtplib, ssl, sys
host, port, ca, version, ciphers, rcpt, eml = sys.argv[1:8]
ctx = ssl.create_default_context(cafile=ca)
v = {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1}[version]
ctx.minimum_version = v
ctx.maximum_version = v
ctx.set_ciphers(ciphers)
s = smtplib.SMTP(host, int(port), local_hostname="scanner.example", timeout=60)
s.ehlo()
try:
    s.starttls(context=ctx)
except (ssl.SSLError, OSError) as e:
    print("HANDSHAKE FAILED", repr(e))
    sys.exit(3)
print("TLS", s.sock.version(), s.sock.cipher()[0])
s.ehlo()
print("MAIL", *s.mail("scanner@example.com"))
print("RCPT", *s.rcpt(rcpt))
code, text = s.data(open(eml, "rb").read())
print("DATA", code, text.decode())
s.quit()
"#;

/// Runs [`SCANNER`] against the rig; (exit code, stdout + stderr).
async fn scanner(rig: &Rig, ca: &str, version: &str, ciphers: &str, rcpt: &str) -> (i32, String) {
    let out = tokio::process::Command::new("python3")
        .args(["-c", SCANNER, "127.0.0.1"])
        .arg(rig.addr.port().to_string())
        .args([ca, version, ciphers, rcpt])
        .arg(fixture_path("scanner_tiff_uppercase.eml"))
        .output()
        .await
        .expect("python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The `DATA` reply the scanner printed, as the server sent it.
fn data_reply(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("DATA "))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no DATA reply: {out}"))
}

/// A listener with STARTTLS from an RSA certificate, on OpenSSL when `legacy`.
async fn rig(legacy: bool) -> (Rig, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_cert_with(dir.path(), RSA_KEY);
    let tls = StartTls::load(&cert, &key, legacy).expect("TLS files");
    let (store, data) = api_common::embedded().await;
    let rig = Rig::start_with(store, data, move |c| c.tls = Some(tls), 50).await;
    (rig, ca, dir)
}

/// Asserts a queued fax of the scan: one page, pending, in the rig's faxbox.
async fn assert_queued(rig: &Rig, reply: &str) {
    assert!(reply.starts_with("250 2.0.0 queued as "), "{reply}");
    let ids = queued_ids(reply);
    assert_eq!(ids.len(), 1, "{reply}");
    let job = rig.job(&ids[0]).await;
    assert_eq!(job["pvt_job_status"], "pending", "{job}");
    assert_eq!(job["faxbox_id"], rig.faxbox_id.as_str(), "{job}");
    assert_eq!(job["pvt_pages"], 1, "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_legacy_tls_an_old_scanner_cannot_start_tls_and_nothing_is_queued() {
    let (rig, ca, _dir) = rig(false).await;
    let rcpt = rig.rcpt(&api_common::unique_number());
    // Any TLS 1.0 or 1.1 suite, RSA key exchange alone: all refused by the rustls listener.
    for (version, ciphers) in [
        ("1.0", "DEFAULT:@SECLEVEL=0"),
        ("1.1", "DEFAULT:@SECLEVEL=0"),
        ("1.0", "AES128-SHA:@SECLEVEL=0"),
    ] {
        let (code, out) = scanner(&rig, &ca, version, ciphers, &rcpt).await;
        assert_eq!(code, 3, "TLS {version} {ciphers}: {out}");
        assert!(
            out.contains("HANDSHAKE FAILED SSLError") && out.contains("ALERT"),
            "TLS {version} {ciphers}: {out}"
        );
    }
    assert!(rig.outgoing().await.is_empty());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_legacy_tls_an_old_scanner_faxes_and_tls_1_3_still_works() {
    let (rig, ca, _dir) = rig(true).await;
    // The oldest common scanner: TLS 1.0, RSA key exchange, AES-CBC, SHA-1.
    let rcpt = rig.rcpt(&api_common::unique_number());
    let (code, out) = scanner(&rig, &ca, "1.0", "AES128-SHA:@SECLEVEL=0", &rcpt).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("TLS TLSv1 AES128-SHA\n"), "{out}");
    assert!(out.contains("RCPT 250 "), "{out}");
    assert_queued(&rig, &data_reply(&out)).await;

    // TLS 1.0 and 1.1 with whatever the client prefers (ECDHE, AES-CBC).
    for (version, name) in [("1.0", "TLSv1 "), ("1.1", "TLSv1.1 ")] {
        let rcpt = rig.rcpt(&api_common::unique_number());
        let (code, out) = scanner(&rig, &ca, version, "DEFAULT:@SECLEVEL=0", &rcpt).await;
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(&format!("TLS {name}ECDHE-RSA-AES")), "{out}");
        assert_queued(&rig, &data_reply(&out)).await;
    }

    // A modern client on the same listener still gets TLS 1.3.
    let (mut c, _) = Client::connect(rig.addr).await;
    assert!(c.cmd("EHLO x").await.contains("STARTTLS"));
    assert!(c.cmd("STARTTLS").await.starts_with("220 2.0.0"));
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tls_client(&ca)
        .connect(name, c.into_inner())
        .await
        .expect("TLS 1.3 handshake");
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_3)
    );
    let mut c = Client::over(tls);
    let ehlo = c.cmd("EHLO x").await;
    assert!(
        ehlo.starts_with("250-fax.test") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    let to = rig.rcpt(&api_common::unique_number());
    assert!(c.begin("scanner@example.com", &to).await.starts_with("354"));
    c.send(&faxd::smtp::framing::dot_stuff(&fixture(
        "scanner_tiff_uppercase.eml",
    )))
    .await;
    assert_queued(&rig, &c.reply().await).await;
    assert_eq!(rig.outgoing().await.len(), 4);
    rig.stop().await;
}

#[test]
fn legacy_tls_with_bad_files_stops_the_start_naming_the_setting_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, key) = test_cert_with(dir.path(), RSA_KEY);
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (_, _, other_key) = test_cert_with(&other, RSA_KEY);
    let start = |cert: &str, key: &str| {
        let smtp = SmtpSection {
            listen: "127.0.0.1:0".into(),
            tls_cert: cert.into(),
            tls_key: key.into(),
            legacy_tls: true,
            ..Default::default()
        };
        faxd::smtp::session_config(&smtp, &FaxConfig::default(), "faxd@fax.test")
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert_eq!(start(&cert, &key), Ok(()));
    let e = start("/nonexistent/cert.pem", &key).unwrap_err();
    assert!(
        e.starts_with("smtp.tls_cert /nonexistent/cert.pem: "),
        "{e}"
    );
    let e = start(&cert, "/nonexistent/key.pem").unwrap_err();
    assert!(e.starts_with("smtp.tls_key /nonexistent/key.pem: "), "{e}");
    // A certificate where the key should be.
    let e = start(&cert, &cert).unwrap_err();
    assert!(e.starts_with(&format!("smtp.tls_key {cert}: ")), "{e}");
    // Another certificate's key.
    let e = start(&cert, &other_key).unwrap_err();
    assert_eq!(
        e,
        format!("TLS: smtp.tls_key {other_key} is not the key of smtp.tls_cert {cert}")
    );
    // legacy_tls alone does not turn TLS on.
    assert_eq!(
        start("", "").unwrap_err(),
        "[smtp] legacy_tls needs tls_cert and tls_key"
    );
}
