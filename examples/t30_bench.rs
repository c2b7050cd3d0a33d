//! T.30 loopback benchmark (`make bench`; figures for the notes, nothing asserted): CPU
//! seconds per page over audio and T.38, with and without ECM, and how many real-time calls
//! the machine's cores sustain.
//!
//! `cargo run --release -p faxd --example t30_bench -- [pages] [concurrent realtime calls]`

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faxd::config::{LineTime, LoopbackSection};
use faxd::gateway::loopback::LoopbackGateway;
use faxd::gateway::tiff::{self, Compression, FAX_WIDTH, FINE_DPI, Page};
use faxd::gateway::{FaxEvent, FaxResult, Gateway, NoLocalNumbers, OutboundFax, TxOptions};

/// A letter page at fine resolution that looks like a page of text (about 40 lines of
/// words), so it compresses like a real business letter.
fn text_page(n: u32) -> Page {
    let mut p = Page::blank(FAX_WIDTH, 2200, FINE_DPI);
    let mut seed = 0x9e37_79b9_u32.wrapping_mul(n + 1);
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for line in 0..44u32 {
        let y0 = 150 + line * 46;
        let mut x = 120;
        while x < FAX_WIDTH - 160 {
            let word = 20 + rnd() % 90;
            for cx in (x..x + word).step_by(11) {
                // A "glyph": a few strokes in a 9×24 cell.
                let g = rnd();
                for y in y0..y0 + 24 {
                    for dx in 0..9 {
                        let stroke = (g >> (((y - y0) / 3 + dx) % 31)) & 1 == 1;
                        if stroke && (dx == 0 || dx == 8 || (y - y0) % 8 == 0) {
                            p.set_black(cx + dx, y);
                        }
                    }
                }
            }
            x += word + 14;
        }
    }
    p
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u = unsafe { std::mem::zeroed::<libc::rusage>() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn fax(call_id: String, document: &Path, options: TxOptions) -> OutboundFax {
    OutboundFax {
        job_id: call_id.clone(),
        call_id,
        to: "+14155550123".into(),
        from_number: "+15550100".into(),
        from_name: "bench".into(),
        fax_identity_number: "+15550100".into(),
        fax_identity_name: "faxd bench".into(),
        document: document.to_path_buf(),
        document_url: None,
        options,
    }
}

async fn call(g: &LoopbackGateway, f: OutboundFax) -> FaxResult {
    let mut c = match g.originate(f).await {
        Ok(c) => c,
        Err(e) => panic!("originate: {e}"),
    };
    while let Some(e) = c.events.recv().await {
        if let FaxEvent::Finished(r) = e {
            return r;
        }
    }
    panic!("call ended without a result");
}

fn gateway(dir: &Path, line_time: LineTime) -> LoopbackGateway {
    let config = LoopbackSection {
        line_time,
        ..LoopbackSection::default()
    };
    match LoopbackGateway::new(config, dir.join("spool"), Arc::new(NoLocalNumbers), None) {
        Ok(g) => g,
        Err(e) => panic!("gateway: {e}"),
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let pages: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let concurrent: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(40);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir: PathBuf = std::env::temp_dir().join(format!("faxd-t30-bench-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("{}: {e}", dir.display());
    }
    let doc = dir.join("doc.tiff");
    let sent: Vec<Page> = (1..=pages).map(text_page).collect();
    if let Err(e) = tiff::write_pages(&doc, &sent, Compression::G4) {
        panic!("{e}");
    }
    let size = std::fs::metadata(&doc).map_or(0, |m| m.len());
    println!(
        "== T.30 loopback: {pages}-page letter at fine resolution, G4 file {} KB, {cores} cores",
        size / 1024
    );

    // 1. CPU per page, one call at a time, accelerated line time.
    let g = gateway(&dir, LineTime::Accelerated);
    for (name, t38, ecm) in [
        ("audio (G.711 u-law), ECM", false, true),
        ("audio (G.711 u-law), no ECM", false, false),
        ("T.38, ECM", true, true),
        ("T.38, no ECM", true, false),
    ] {
        let options = TxOptions {
            t38,
            ecm,
            ..TxOptions::default()
        };
        let (cpu0, wall0) = (cpu_seconds(), Instant::now());
        let r = call(&g, fax(format!("cpu{t38}{ecm}"), &doc, options)).await;
        let (cpu, wall) = (cpu_seconds() - cpu0, wall0.elapsed().as_secs_f64());
        println!(
            "-- {name:<28} {:>6.3} CPU s/page  ({:.2} s CPU, {:.2} s wall, result {} {}, {} pages at {} bit/s)",
            cpu / f64::from(pages),
            cpu,
            wall,
            r.fax_result_code,
            r.fax_result_text,
            r.transferred_pages,
            r.transfer_rate
        );
    }

    // 2. Throughput with every core busy: `cores * 4` accelerated calls at once.
    let n = cores * 4;
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let g = g.clone();
            let f = fax(format!("acc{i}"), &doc, TxOptions::default());
            tokio::spawn(async move { call(&g, f).await })
        })
        .collect();
    let mut ok = 0;
    for c in calls {
        if c.await.is_ok_and(|r| r.success) {
            ok += 1;
        }
    }
    let wall = wall0.elapsed().as_secs_f64();
    println!(
        "-- {n} accelerated audio calls at once: {ok} ok, {:.1} pages/s on {cores} cores ({:.1} s wall, {:.1} s CPU)",
        f64::from(pages) * ok as f64 / wall,
        wall,
        cpu_seconds() - cpu0
    );

    // 3. Real-time calls at once: CPU load per call and what the cores sustain.
    let g = gateway(&dir, LineTime::Realtime);
    let one = TxOptions::default();
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    let calls: Vec<_> = (0..concurrent)
        .map(|i| {
            let g = g.clone();
            let f = fax(format!("rt{i}"), &doc, one.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let r = call(&g, f).await;
                (r, started.elapsed())
            })
        })
        .collect();
    let mut ok = 0;
    let mut longest = Duration::ZERO;
    for c in calls {
        if let Ok((r, took)) = c.await {
            ok += usize::from(r.success);
            longest = longest.max(took);
        }
    }
    let wall = wall0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let load = cpu / wall / concurrent as f64;
    println!(
        "-- {concurrent} real-time audio calls at once: {ok} ok, line time {:.1} s ({:.1} s/page), \
         {:.1} s CPU in {:.1} s => {:.2}% of a core per call => about {:.0} concurrent calls on {cores} cores",
        longest.as_secs_f64(),
        longest.as_secs_f64() / f64::from(pages),
        cpu,
        wall,
        load * 100.0,
        cores as f64 / load
    );
    let _ = std::fs::remove_dir_all(&dir);
}
