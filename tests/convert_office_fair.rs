//! The LibreOffice pool under load from two accounts, with real LibreOffice: text over
//! `max_text_bytes` is refused before any worker starts, and one account's slow documents
//! cannot make another account's one-page document wait for them.

use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use faxd::convert::{ConvertConfig, ConvertError, Converter, FaxDocument, Kind};

/// A zip of deflated entries with honest headers and CRCs, as Word writes them.
fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, body) in entries {
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(body).unwrap();
        let packed = z.finish().unwrap();
        let mut crc = flate2::Crc::new();
        crc.update(body);
        let mut h = Vec::new();
        h.extend_from_slice(&8u16.to_le_bytes());
        h.extend_from_slice(&[0, 0, 0, 0]);
        h.extend_from_slice(&crc.sum().to_le_bytes());
        h.extend_from_slice(&(packed.len() as u32).to_le_bytes());
        h.extend_from_slice(&(body.len() as u32).to_le_bytes());
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&[0, 0]);
        let off = out.len() as u32;
        out.extend_from_slice(b"PK\x03\x04\x14\x00\x00\x00");
        out.extend_from_slice(&h);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&packed);
        central.extend_from_slice(b"PK\x01\x02\x14\x00\x14\x00\x00\x00");
        central.extend_from_slice(&h);
        central.extend_from_slice(&[0; 10]);
        central.extend_from_slice(&off.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let n = (entries.len() as u16).to_le_bytes();
    let cd_at = (out.len() as u32).to_le_bytes();
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    out.extend_from_slice(&n);
    out.extend_from_slice(&n);
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_at);
    out.extend_from_slice(&[0, 0]);
    out
}

/// Text that compresses like prose (about 3:1), not like a run of spaces, so that only the
/// text cap, not the zip-bomb ratio check, can stop it.
fn prose(words: usize, seed: u64) -> String {
    const VOCAB: [&str; 32] = [
        "invoice",
        "account",
        "payment",
        "the",
        "of",
        "and",
        "delivery",
        "schedule",
        "total",
        "amount",
        "customer",
        "reference",
        "number",
        "please",
        "find",
        "attached",
        "order",
        "shipment",
        "terms",
        "net",
        "due",
        "within",
        "days",
        "regards",
        "contract",
        "signed",
        "copy",
        "fax",
        "page",
        "received",
        "confirm",
        "balance",
    ];
    let mut x = seed | 1;
    let mut out = String::with_capacity(words * 8);
    for i in 0..words {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(VOCAB[(x % 32) as usize]);
        out.push_str(if i % 13 == 12 { ". " } else { " " });
    }
    out
}

/// A minimal docx: paragraphs of `para_words` words each, `half_points` font size.
fn docx(paragraphs: usize, para_words: usize, half_points: u32, seed: u64) -> Vec<u8> {
    let mut body = String::new();
    for p in 0..paragraphs {
        body.push_str(&format!(
            "<w:p><w:r><w:rPr><w:sz w:val=\"{half_points}\"/></w:rPr><w:t>{}</w:t></w:r></w:p>",
            prose(
                para_words,
                seed.wrapping_mul(1_000_003).wrapping_add(p as u64)
            )
        ));
    }
    let document = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\
         <w:document xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\">\
         <w:body>{body}</w:body></w:document>"
    );
    let types = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\
        <Types xmlns=\"http://schemas.openxmlformats.org/package/2006/content-types\">\
        <Default Extension=\"rels\" ContentType=\"application/vnd.openxmlformats-package.relationships+xml\"/>\
        <Default Extension=\"xml\" ContentType=\"application/xml\"/>\
        <Override PartName=\"/word/document.xml\" ContentType=\"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml\"/>\
        </Types>";
    let rels = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\
        <Relationships xmlns=\"http://schemas.openxmlformats.org/package/2006/relationships\">\
        <Relationship Id=\"rId1\" Type=\"http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument\" Target=\"word/document.xml\"/>\
        </Relationships>";
    zip(&[
        ("[Content_Types].xml", types.as_bytes()),
        ("_rels/.rels", rels.as_bytes()),
        ("word/document.xml", document.as_bytes()),
    ])
}

#[test]
fn text_over_the_cap_is_refused_before_libreoffice_starts() {
    let conv = Converter::new(ConvertConfig::default());
    let cap = conv.config().max_text_bytes;
    let opts = conv.config().options();
    // The attack's shape: a docx of a few hundred kB whose document.xml inflates past the cap
    // (11 MB here) at a prose-like ratio the zip-bomb check lets through.
    let bomb = docx(20_000, 80, 22, 7);
    let text = prose(2_000_000, 3).into_bytes();
    let rtf = format!("{{\\rtf1\\ansi {}\\par}}", prose(2_000_000, 5)).into_bytes();
    assert!(text.len() as u64 > cap && rtf.len() as u64 > cap);
    for (name, data, kind) in [
        ("docx", &bomb, Kind::Office(faxd::convert::OfficeKind::Docx)),
        ("text", &text, Kind::Text),
        ("rtf", &rtf, Kind::Rtf),
    ] {
        assert_eq!(faxd::convert::sniff(data).unwrap(), kind, "{name}");
        let started = Instant::now();
        let err = conv
            .to_fax_for("acct-a", data, &opts)
            .err()
            .unwrap_or_else(|| panic!("{name}: accepted"));
        let took = started.elapsed();
        eprintln!("{name} of {} bytes: {err} ({took:?})", data.len());
        assert!(
            matches!(err, ConvertError::TextTooLarge { limit } if limit == cap),
            "{name}: {err:?}"
        );
        assert!(err.to_string().contains("max_text_bytes"), "{err}");
        assert!(took < Duration::from_secs(5), "{name}: took {took:?}");
    }
    assert_eq!(conv.office().starts(), 0, "LibreOffice never started");
    assert_eq!(conv.office().load("acct-a"), (0, 0));
}

/// One conversion's account, index and when it ended.
struct Done {
    account: &'static str,
    index: usize,
    submitted: Instant,
    ended: Instant,
    result: Result<FaxDocument, ConvertError>,
}

fn submit(
    conv: &Arc<Converter>,
    key: &'static str,
    account: &'static str,
    index: usize,
    data: Vec<u8>,
    tx: &mpsc::Sender<Done>,
) {
    let (conv, tx) = (Arc::clone(conv), tx.clone());
    std::thread::spawn(move || {
        let submitted = Instant::now();
        let result = conv.to_fax_for(key, &data, &conv.config().options());
        let _ = tx.send(Done {
            account,
            index,
            submitted,
            ended: Instant::now(),
            result,
        });
    });
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Account A queues `slow.len()` slow documents, then account B one page. `shared_key` runs
/// every job under one key (one queue, as before accounts were told apart). Returns the
/// conversions in the order they ended and the most workers A's documents held at once.
fn race(
    conv: &Arc<Converter>,
    slow: &[Vec<u8>],
    page: &[u8],
    shared_key: bool,
) -> (Vec<Done>, usize) {
    let (tx, rx) = mpsc::channel();
    let (a, b) = if shared_key { ("", "") } else { ("A", "B") };
    for (i, d) in slow.iter().enumerate() {
        submit(conv, a, "A", i, d.clone(), &tx);
    }
    // B arrives once all of A's documents are in, converting or waiting.
    wait_for("A's documents to queue", Duration::from_secs(60), || {
        let (running, waiting) = conv.office().load(a);
        running >= 1 && running + waiting == slow.len()
    });
    submit(conv, b, "B", 0, page.to_vec(), &tx);
    let mut max_a = 0;
    let mut done = Vec::new();
    while done.len() < slow.len() + 1 {
        if let Ok(d) = rx.recv_timeout(Duration::from_millis(20)) {
            done.push(d);
        }
        if !shared_key {
            max_a = max_a.max(conv.office().load(a).0);
        }
    }
    (done, max_a)
}

fn report(label: &str, done: &[Done]) -> (usize, Duration) {
    let b = done.iter().find(|d| d.account == "B").unwrap();
    let b_wait = b.ended - b.submitted;
    let a_before_b = done.iter().take_while(|d| d.account == "A").count();
    let a_times: Vec<String> = done
        .iter()
        .filter(|d| d.account == "A")
        .map(|d| format!("A{} {:.1}s", d.index, (d.ended - d.submitted).as_secs_f64()))
        .collect();
    eprintln!(
        "{label}: B's 1-page docx took {:.1}s, finishing after {a_before_b} of A's {} documents ({})",
        b_wait.as_secs_f64(),
        done.len() - 1,
        a_times.join(", ")
    );
    for d in done {
        let doc = d
            .result
            .as_ref()
            .unwrap_or_else(|e| panic!("{label}: {}{}: {e}", d.account, d.index));
        assert_eq!(doc.source, Kind::Office(faxd::convert::OfficeKind::Docx));
    }
    (a_before_b, b_wait)
}

/// Stores a fax job of `account` with `doc` as its original and converts it the way intake
/// does ([`faxd::convert::stored::faxable`]), returning its page count.
fn stored_job(account: &str, doc: Vec<u8>, conv: &Arc<Converter>) -> u32 {
    use faxd::store::{Db, SharedStore, bytes_stream, sqlite::SqliteStore};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
        store.ensure_db(&Db::Faxes).await.unwrap();
        let job = store
            .save(
                &Db::Faxes,
                serde_json::json!({"pvt_type": "fax", "pvt_account_id": account}),
            )
            .await
            .unwrap();
        let id = job["_id"].as_str().unwrap().to_string();
        store
            .put_attachment(
                &Db::Faxes,
                &id,
                job["_rev"].as_str(),
                "original_file.docx",
                "application/octet-stream",
                bytes_stream(doc),
            )
            .await
            .unwrap();
        faxd::convert::stored::faxable(&store, conv, &Db::Faxes, &id, false)
            .await
            .unwrap()
            .pages
    })
}

#[test]
fn one_account_cannot_make_another_wait_for_its_documents() {
    // A's documents: about 1 MB of 2-point text each (several seconds of LibreOffice layout,
    // a few dense pages for Ghostscript); B's: one short paragraph.
    let slow: Vec<Vec<u8>> = (0..3).map(|i| docx(1_400, 100, 4, 11 + i)).collect();
    let page = docx(1, 40, 24, 99);

    // Before: one LibreOffice and one queue for everyone.
    let single = Arc::new(Converter::new(ConvertConfig {
        office_workers: 1,
        ..ConvertConfig::default()
    }));
    single.office().warm_up().expect("LibreOffice starts");
    let (before, _) = race(&single, &slow, &page, true);
    let (a_before_b_single, b_wait_single) = report("one queue", &before);
    drop(single);
    // B queued behind every document A sent first.
    assert!(
        a_before_b_single >= 2,
        "the slow documents are not slow: B overtook {} of 3",
        3 - a_before_b_single
    );

    // After: the default pool of two, fair between accounts.
    let conv = Arc::new(Converter::new(ConvertConfig::default()));
    assert_eq!(conv.office().workers(), 2);
    conv.office().warm_up().expect("LibreOffice starts");
    assert_eq!(conv.office().starts(), 2);
    let (after, max_a) = race(&conv, &slow, &page, false);
    let (a_before_b, b_wait) = report("fair pool", &after);
    assert_eq!(
        a_before_b, 0,
        "B waited for A's documents ({b_wait:?}, one queue: {b_wait_single:?})"
    );
    assert_eq!(max_a, 1, "A may hold all workers but one");
    // B started at once: its one page took well under any of A's documents, each of which
    // had a worker to itself from the moment it started.
    let a_fastest = after
        .iter()
        .filter(|d| d.account == "A")
        .map(|d| d.ended - d.submitted)
        .min()
        .unwrap();
    assert!(
        b_wait * 2 < a_fastest,
        "B {b_wait:?}, A at best {a_fastest:?}"
    );
    assert!(b_wait < b_wait_single, "{b_wait:?} vs {b_wait_single:?}");

    // A dead worker is replaced by the next job it gets; dropping the pool reaps them all.
    let pids: Vec<u32> = conv.office().pids().into_iter().flatten().collect();
    assert_eq!(pids.len(), 2, "both workers warm");
    faxd::convert::sandbox::kill_group(pids[1]);
    // A's slow document, a stored fax job of account A converted as intake and the outbound
    // worker do, holds worker 0 in A's queue; so C's document gets the killed worker 1.
    let stored = {
        let conv = Arc::clone(&conv);
        let doc = slow[0].clone();
        std::thread::spawn(move || stored_job("acct-stored", doc, &conv))
    };
    wait_for("the stored job to convert", Duration::from_secs(60), || {
        conv.office().load("acct-stored") == (1, 0)
    });
    let (tx, rx) = mpsc::channel();
    submit(&conv, "C", "C", 0, page.clone(), &tx);
    let mut results: Vec<Done> = vec![rx.recv_timeout(Duration::from_secs(300)).expect("done")];
    let pages = stored.join().expect("stored job thread");
    assert!(pages >= 1, "{pages}");
    // The death may be noticed by the job that finds it; the next one on it must work.
    for d in &mut results {
        if let Err(ConvertError::ToolFailed { .. }) = d.result {
            d.result = conv.to_fax_for("C", &page, &conv.config().options());
        }
        assert!(d.result.is_ok(), "{:?}", d.result.as_ref().err());
    }
    assert_eq!(
        conv.office().starts(),
        3,
        "the killed worker was started again"
    );
    let now: Vec<u32> = conv.office().pids().into_iter().flatten().collect();
    assert!(now.contains(&pids[0]) && !now.contains(&pids[1]), "{now:?}");
    drop(conv);
    for pid in now.into_iter().chain(pids) {
        // SAFETY: signal 0 only asks whether any process of the group still exists.
        let group_alive = || unsafe { libc::kill(-(pid as i32), 0) } == 0;
        wait_for(
            "every worker's process group to end",
            Duration::from_secs(30),
            || !group_alive(),
        );
    }
}
