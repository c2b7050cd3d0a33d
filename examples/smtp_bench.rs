//! E-mail-to-fax benchmark (figures for the notes, nothing asserted): how many messages with
//! a 100 KB PDF fax_smtp accepts per second — each one parsed, converted (Ghostscript) and
//! queued before its 250, on the embedded store — and how much memory an SMTP session holds
//! (resident set growth per open idle session, and per session with a message in flight).
//!
//! `cargo run --release -p faxd --example smtp_bench -- [clients] [messages per client] [idle sessions]`

#[path = "../tests/api_common/mod.rs"]
mod api_common;
#[path = "../tests/smtp_common/mod.rs"]
mod smtp_common;

use std::time::Instant;

use faxd::smtp::framing::dot_stuff;
use smtp_common::{Client, Rig};

/// A valid one-page PDF of about `size` bytes: a page whose content stream draws lines of
/// text until the size is reached.
fn pdf_of_size(size: usize) -> Vec<u8> {
    let mut content = String::new();
    let mut y = 760;
    while content.len() < size {
        content.push_str(&format!(
            "BT /F1 9 Tf 40 {y} Td (faxd smtp benchmark line {} of the hundred kilobyte document) Tj ET\n",
            content.len()
        ));
        y = if y < 40 { 760 } else { y - 11 };
    }
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_string(),
        format!("<< /Length {} >>\nstream\n{content}endstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

fn message(pdf: &[u8], to: &str) -> Vec<u8> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(pdf);
    let mut m = format!(
        "From: alice@example.com\r\nTo: {to}\r\nSubject: bench\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=bb\r\n\r\n--bb\r\nContent-Type: text/plain\r\n\r\nPlease fax\r\n\
         --bb\r\nContent-Type: application/pdf; name=doc.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    );
    for line in b64.as_bytes().chunks(76) {
        m.push_str(std::str::from_utf8(line).unwrap_or_default());
        m.push_str("\r\n");
    }
    m.push_str("--bb--\r\n");
    dot_stuff(m.as_bytes())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map(|pages| pages * 4)
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let clients = args.first().copied().unwrap_or(4);
    let per_client = args.get(1).copied().unwrap_or(10);
    let idle = args.get(2).copied().unwrap_or(400);
    let (store, dir) = api_common::embedded().await;
    let rig = Rig::start_with(store, dir, |_| {}, idle + clients + 8).await;
    let pdf = pdf_of_size(100 * 1024);
    println!("document: {} bytes of PDF", pdf.len());

    // Warm-up: the first conversion starts Ghostscript.
    send(&rig, &pdf, 1).await;

    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let to = rig.rcpt(&api_common::unique_number());
        let data = message(&pdf, &to);
        let addr = rig.addr;
        tasks.push(tokio::spawn(async move {
            let (mut c, _) = Client::connect(addr).await;
            c.cmd("EHLO bench").await;
            let mut ok = 0;
            for _ in 0..per_client {
                c.cmd("MAIL FROM:<alice@example.com>").await;
                c.cmd(&format!("RCPT TO:<{to}>")).await;
                c.cmd("DATA").await;
                c.send(&data).await;
                if c.reply().await.starts_with("250") {
                    ok += 1;
                }
            }
            c.cmd("QUIT").await;
            ok
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap_or(0);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "accepted {accepted}/{} messages in {secs:.2} s with {clients} clients: {:.1} messages/s",
        clients * per_client,
        accepted as f64 / secs
    );

    // Memory: idle sessions after EHLO.
    let before = rss_kib();
    let mut held = Vec::new();
    for _ in 0..idle {
        let (mut c, _) = Client::connect(rig.addr).await;
        c.cmd("EHLO idle").await;
        held.push(c);
    }
    let after = rss_kib();
    println!(
        "{idle} idle sessions: RSS +{} KiB, {:.1} KiB per session (client sockets included)",
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / idle as f64
    );
    drop(held);
    rig.stop().await;
}

async fn send(rig: &Rig, pdf: &[u8], n: usize) {
    let to = rig.rcpt(&api_common::unique_number());
    let data = message(pdf, &to);
    let (mut c, _) = Client::connect(rig.addr).await;
    c.cmd("EHLO warm").await;
    for _ in 0..n {
        c.cmd("MAIL FROM:<alice@example.com>").await;
        c.cmd(&format!("RCPT TO:<{to}>")).await;
        c.cmd("DATA").await;
        c.send(&data).await;
        let r = c.reply().await;
        assert!(r.starts_with("250"), "{r}");
    }
}
