//! CCITT codec benchmark (`make bench`; figures for the notes, nothing asserted): CPU
//! milliseconds per page for `ccitt::encode`, `ccitt::check` (output validation) and `ccitt::decode` on
//! fine text pages (1728×2156 at 204×196, rendered by Ghostscript as raw bitmaps, as the PDF
//! pipeline does) and on a halftoned photo page, in each coding faxd writes.
//!
//! `cargo run --release -p faxd --example ccitt_bench -- DOCS_DIR [text pages]`
//! where DOCS_DIR holds `text100.pdf` and `photo.pdf` from `rel/bench_docs.py`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use faxd::convert::ccitt::{self, Coding, FaxPage};

/// Renders the first `pages` pages of a PDF to 1-bit fine pages with Ghostscript's pbmraw.
fn render(pdf: &Path, pages: u32, dir: &Path) -> Vec<FaxPage> {
    let pattern = dir.join("p%03d.pbm");
    let status = Command::new("gs")
        .args([
            "-q",
            "-dSAFER",
            "-dBATCH",
            "-dNOPAUSE",
            "-sDEVICE=pbmraw",
            "-r204x196",
            "-g1728x2156",
            "-dPDFFitPage",
            "-dFIXEDMEDIA",
            "-dFirstPage=1",
            &format!("-dLastPage={pages}"),
        ])
        .arg(format!("-sOutputFile={}", pattern.display()))
        .arg(pdf)
        .status()
        .expect("run gs");
    assert!(status.success(), "gs failed on {}", pdf.display());
    (1..=pages)
        .map(|n| dir.join(format!("p{n:03}.pbm")))
        .take_while(|p| p.exists())
        .map(|p| {
            let page = pbm(&std::fs::read(&p).expect("read pbm"));
            let _ = std::fs::remove_file(&p);
            page
        })
        .collect()
}

/// Parses a raw PBM (P4): header fields separated by whitespace, then packed rows.
fn pbm(data: &[u8]) -> FaxPage {
    let mut fields = Vec::new();
    let mut i = 2;
    while fields.len() < 2 {
        while data[i].is_ascii_whitespace() {
            i += 1;
        }
        if data[i] == b'#' {
            while data[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        while data[i].is_ascii_digit() {
            i += 1;
        }
        fields.push(
            std::str::from_utf8(&data[start..i])
                .unwrap()
                .parse::<u32>()
                .unwrap(),
        );
    }
    let (w, h) = (fields[0], fields[1]);
    let mut page = FaxPage::blank(w, h, 204.0, 196.0);
    let n = page.data.len();
    page.data.copy_from_slice(&data[i + 1..i + 1 + n]);
    page
}

/// CPU time of this thread (the machine may be shared: wall time would count other work).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Mean CPU milliseconds per call of `f` over at least `min` of CPU time (after one warm-up
/// call), the best of three such rounds.
fn per_call(min: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = thread_cpu();
        let mut n = 0u32;
        while thread_cpu() - start < min / 3 || n < 3 {
            f();
            n += 1;
        }
        best = best.min((thread_cpu() - start).as_secs_f64() * 1000.0 / n as f64);
    }
    best
}

/// Colour changes along the rows (what the codes describe), counted pixel by pixel.
fn changes(p: &FaxPage) -> u64 {
    let mut n = 0;
    for y in 0..p.height {
        let mut black = false;
        for x in 0..p.width {
            if p.is_black(x, y) != black {
                black = !black;
                n += 1;
            }
        }
    }
    n
}

fn report(label: &str, pages: &[FaxPage]) {
    let min = Duration::from_millis(
        std::env::var("CCITT_BENCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000),
    );
    let n = pages.len() as f64;
    let ink = pages.iter().map(|p| p.ink()).sum::<f64>() / n;
    let changes = pages.iter().map(changes).sum::<u64>() as f64 / n;
    println!(
        "-- {label}: {} page(s) {}x{}, {:.1}% black, {:.0} colour changes/page",
        pages.len(),
        pages[0].width,
        pages[0].height,
        ink * 100.0,
        changes
    );
    for (name, coding) in [
        ("G4 (MMR)", Coding::Mmr),
        ("G3 2-D (MR)", Coding::Mr),
        ("G3 1-D (MH)", Coding::Mh),
    ] {
        let mut encoded: Vec<Vec<u8>> = Vec::new();
        let enc = per_call(min, || {
            encoded = pages.iter().map(|p| ccitt::encode(p, coding)).collect();
        }) / n;
        let chk = per_call(min, || {
            for (p, d) in pages.iter().zip(&encoded) {
                ccitt::check(d, coding, p.width, p.height).expect("own output checks");
            }
        }) / n;
        let dec = per_call(min, || {
            for (p, d) in pages.iter().zip(&encoded) {
                let back = ccitt::decode(d, coding, p.width, p.height, p.xres, p.yres)
                    .expect("own output decodes");
                std::hint::black_box(back);
            }
        }) / n;
        let bytes = encoded.iter().map(Vec::len).sum::<usize>() as f64 / n;
        println!(
            "{name:<12} encode {enc:7.3} ms/page   check {chk:7.3} ms/page   decode {dec:7.3} ms/page   {bytes:8.0} B/page"
        );
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let docs = args
        .next()
        .expect("usage: ccitt_bench DOCS_DIR [text pages]");
    let text_pages: u32 = args.next().map(|v| v.parse().expect("pages")).unwrap_or(20);
    let tmp = std::env::temp_dir().join(format!("ccitt_bench.{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let docs = Path::new(&docs);
    let text = render(&docs.join("text100.pdf"), text_pages, &tmp);
    let photo = render(&docs.join("photo.pdf"), 1, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    report("fine text pages (text100.pdf, gs pbmraw 204x196)", &text);
    report(
        "halftoned photo page (photo.pdf, gs pbmraw 204x196)",
        &photo,
    );
}
