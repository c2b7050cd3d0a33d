//! The e-mail corpus (tests/fixtures/email, shapes of Gmail, Outlook, Apple Mail, scanners,
//! forwards, S/MIME, PGP, bounces) through fax_smtp's document extraction: which documents a
//! message yields, in which order, byte for byte — or which SMTP reply refuses it; and hostile
//! messages (MIME bombs, deep nesting, header floods) refused with clear replies, quickly.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use faxd::smtp::extract::{MimeError, MimeLimits, extract};
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/email")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap()
}

#[test]
fn every_corpus_message_gets_its_expected_outcome() {
    let expected: Value = serde_json::from_slice(&read("expected.json")).unwrap();
    let one = read("one.pdf");
    let two = read("two.pdf");
    let scan = read("scan.tif");
    let limits = MimeLimits::default();
    let mut checked = 0;
    for (file, want) in expected.as_object().unwrap() {
        let raw = read(file);
        let reply = want["reply"].as_str().unwrap();
        let outcome = extract(&raw, &limits);
        checked += 1;
        match reply {
            "any" => {}
            "250" => {
                let got = outcome.unwrap_or_else(|e| panic!("{file}: refused: {e}"));
                let names: Vec<String> = got
                    .documents
                    .iter()
                    .map(|d| d.name.clone().unwrap_or_default())
                    .collect();
                let want_names: Vec<String> = want["documents"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect();
                assert_eq!(names, want_names, "{file}: documents");
                for d in &got.documents {
                    let name = d.name.as_deref().unwrap_or_default().to_lowercase();
                    let source = if name.ends_with(".tif") {
                        Some(&scan)
                    } else if name.contains("form") {
                        Some(&two)
                    } else if name.ends_with(".pdf") {
                        Some(&one)
                    } else {
                        None
                    };
                    if let Some(src) = source {
                        assert!(d.bytes == *src, "{file}: {name} is not byte-identical");
                    }
                }
            }
            refusal => {
                let err = match outcome {
                    Ok(e) => panic!("{file}: accepted {:?}, want {refusal}", e.documents.len()),
                    Err(e) => e,
                };
                assert!(
                    err.reply().summary().starts_with(refusal),
                    "{file}: {} (want {refusal})",
                    err.reply().summary()
                );
            }
        }
    }
    assert!(checked >= 20, "only {checked} corpus files");
}

#[test]
fn refusals_name_what_was_found() {
    let err = extract(&read("zip_only_unsupported.eml"), &MimeLimits::default()).unwrap_err();
    assert!(err.to_string().contains("docs.zip"), "{err}");
    let err = extract(
        &read("iphone_jpeg_thumbnail_only.eml"),
        &MimeLimits::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("60x60"), "{err}");
    let err = extract(&read("smime_opaque_signed_pdf.eml"), &MimeLimits::default()).unwrap_err();
    assert!(err.to_string().contains("detached"), "{err}");
}

fn timed(raw: &[u8]) -> (Result<usize, MimeError>, Duration) {
    let t = Instant::now();
    let r = extract(raw, &MimeLimits::default()).map(|e| e.documents.len());
    (r, t.elapsed())
}

#[test]
fn ten_thousand_parts_are_refused() {
    let mut raw =
        String::from("From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n");
    for i in 0..10_000 {
        raw.push_str(&format!(
            "--b\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n"
        ));
    }
    raw.push_str("--b--\r\n");
    let (r, took) = timed(raw.as_bytes());
    let err = r.unwrap_err();
    assert_eq!(err, MimeError::TooManyParts(500));
    assert_eq!(err.reply().summary().get(..9), Some("554 5.6.0"));
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn twenty_thousand_levels_are_refused_without_a_stack_overflow() {
    let depth = 20_000;
    let mut raw = String::from("From: a@example.com\r\n");
    for i in 0..depth {
        raw.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"
        ));
    }
    raw.push_str("Content-Type: application/pdf\r\n\r\n%PDF-1.4\r\n");
    let (r, _) = timed(raw.as_bytes());
    let err = r.unwrap_err();
    assert!(
        matches!(err, MimeError::TooDeep(_) | MimeError::TooManyParts(_)),
        "{err:?}"
    );
    // Just over the depth limit, with few parts: the depth rule itself answers.
    let mut raw = String::from("From: a@example.com\r\n");
    for i in 0..30 {
        raw.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=c{i}\r\n\r\n--c{i}\r\n"
        ));
    }
    raw.push_str("Content-Type: application/pdf\r\n\r\n%PDF-1.4\r\n");
    assert_eq!(timed(raw.as_bytes()).0.unwrap_err(), MimeError::TooDeep(20));
}

#[test]
fn a_header_flood_is_refused_as_too_large() {
    let mut raw = String::from("From: a@example.com\r\n");
    for i in 0..20_000 {
        raw.push_str(&format!("X-Flood-{i}: {}\r\n", "y".repeat(40)));
    }
    raw.push_str("Content-Type: application/pdf\r\n\r\n%PDF-1.4\r\n");
    let err = timed(raw.as_bytes()).0.unwrap_err();
    assert_eq!(err, MimeError::HeadersTooLarge(100 * 1024));
    assert_eq!(err.reply().summary().get(..9), Some("552 5.3.4"));
}

#[test]
fn garbage_never_panics() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let seeds = [read("gmail_pdf.eml"), read("outlook_tnef_winmail.eml")];
    for round in 0..300 {
        let mut raw = seeds[round % 2].clone();
        for _ in 0..rng.random_range(1..40) {
            let at = rng.random_range(0..raw.len());
            raw[at] = rng.random();
        }
        let cut = rng.random_range(0..raw.len());
        raw.truncate(cut.max(1));
        let _ = extract(&raw, &MimeLimits::default());
    }
}
