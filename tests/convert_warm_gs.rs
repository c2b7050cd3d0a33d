//! The warm Ghostscript behind PDF conversion, with real Ghostscript: one process serves many
//! documents without one document changing another's result, a dead process is replaced
//! without the caller noticing, a document that renders forever is killed at the wall limit
//! and the next one gets a fresh process, and dropping the converter leaves nothing behind.
//! Also the dither option for PDFs: Ghostscript's clustered-dot screen by default,
//! Floyd–Steinberg and threshold on request, text pixel for pixel the same with each, for
//! PDFs and for Office documents (which become PDFs first).

mod convert_support;

use std::time::{Duration, Instant};

use convert_support as s;
use faxd::convert::{
    Compression, ConvertConfig, ConvertError, Converter, Dither, FaxOptions, FaxPage, PageSize,
    Resolution, decode_fax_tiff,
};

fn opts(resolution: Resolution, dither: Dither) -> FaxOptions {
    FaxOptions {
        resolution,
        page_size: PageSize::Letter,
        compression: Compression::G4,
        dither,
    }
}

/// Whether process `pid` is gone (or a zombie about to be reaped).
fn gone(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.is_empty() || stat.contains(") Z ")
}

fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone(pid) {
        assert!(Instant::now() < deadline, "process {pid} still alive");
        std::thread::yield_now();
    }
}

/// Entries of `dir` other than the warm Ghostscript's empty root directories.
fn leftovers(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            let root = e.file_name().to_string_lossy().starts_with("faxd-gs-");
            !root || std::fs::read_dir(e.path()).unwrap().next().is_some()
        })
        .map(|e| e.path())
        .collect()
}

/// A PDF whose one page draws a form that draws a form … ten levels deep, each ten times: a
/// few hundred bytes that take Ghostscript 10^10 fills to render.
fn endless_pdf() -> Vec<u8> {
    let depth = 10;
    let mut objs: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Count 1 /Kids [3 0 R] >>".to_vec(),
        format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
             /Resources << /XObject << /F {} 0 R >> >> >>",
            5 + depth - 1
        )
        .into_bytes(),
    ];
    let page = b"q /F Do Q";
    objs.push(
        [
            format!("<< /Length {} >>\nstream\n", page.len()).as_bytes(),
            page,
            b"\nendstream",
        ]
        .concat(),
    );
    for level in 0..depth {
        let body = if level == 0 {
            "0 g 10 10 300 300 re f".to_string()
        } else {
            "q /F Do Q 1 0 0 1 0.01 0 cm ".repeat(10)
        };
        let res = if level == 0 {
            String::new()
        } else {
            format!("/Resources << /XObject << /F {} 0 R >> >> ", 5 + level - 1)
        };
        objs.push(
            format!(
                "<< /Type /XObject /Subtype /Form /BBox [0 0 612 792] {res}/Length {} >>\nstream\n{body}\nendstream",
                body.len()
            )
            .into_bytes(),
        );
    }
    s::assemble_pdf(&objs)
}

#[test]
fn one_warm_ghostscript_serves_many_documents_and_none_changes_another() {
    let work = tempfile::tempdir().unwrap();
    let cfg = ConvertConfig {
        work_dir: work.path().display().to_string(),
        ..ConvertConfig::default()
    };
    let text = s::text_pdf(2, 612.0, 792.0);
    let a4 = s::text_pdf(1, 595.0, 842.0);
    let photo = s::photo_pdf();
    let fine = opts(Resolution::Fine, Dither::Cluster);
    // What a converter that never ran anything else makes of the text PDF.
    let fresh = Converter::new(cfg.clone()).to_fax(&text, &fine).unwrap();

    let conv = Converter::new(cfg);
    let first = conv.to_fax(&text, &fine).unwrap();
    assert_eq!(first.tiff, fresh.tiff);
    // Others in between, refused ones included.
    let many = s::pdf(
        &vec!["BT /F1 9 Tf 72 700 Td (p) Tj ET".to_string(); 400],
        612.0,
        792.0,
        None,
    );
    let password = std::fs::read(s::fixture("hostile/password.pdf")).unwrap();
    conv.to_fax(&photo, &fine).unwrap();
    conv.to_fax(&a4, &fine).unwrap();
    let refused = conv.to_fax(&many, &fine).unwrap_err();
    assert!(
        matches!(refused, ConvertError::TooManyPages { pages: 400, .. }),
        "{refused}"
    );
    let refused = conv.to_fax(&password, &fine).unwrap_err();
    assert!(matches!(refused, ConvertError::Encrypted), "{refused}");
    let again = conv.to_fax(&text, &fine).unwrap();
    assert_eq!(
        again.tiff, first.tiff,
        "same document, same fax, whatever ran before"
    );
    assert_eq!(again.info.pages, 2);
    assert_eq!(
        conv.ghostscript().starts(),
        1,
        "one process for all of them"
    );
    assert!(leftovers(work.path()).is_empty());

    // Other settings (resolution, grey or bilevel rendering) have their own processes; as
    // many wait idle as conversions run at once, the longest idle ones quit.
    let mut settings = 1;
    for resolution in [Resolution::Normal, Resolution::Fine, Resolution::Superfine] {
        for dither in [Dither::Cluster, Dither::FloydSteinberg] {
            if (resolution, dither) != (Resolution::Fine, Dither::Cluster) {
                conv.to_fax(&text, &opts(resolution, dither)).unwrap();
                settings += 1;
            }
        }
    }
    assert_eq!(conv.ghostscript().starts(), settings);
    let idle = conv.ghostscript().idle_pids();
    // (On 2 cores 4 are kept of 6: the oldest 2 quit.)
    let kept = faxd::convert::warm_gs::max_idle().min(settings as usize);
    assert_eq!(idle.len(), kept);

    // Dropping the converter quits and reaps them and removes their directories.
    drop(conv);
    for pid in idle {
        assert!(gone(pid), "ghostscript {pid} outlived the converter");
    }
    let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "left {left:?}");
}

#[test]
fn a_dead_warm_ghostscript_is_replaced_without_the_caller_noticing() {
    let conv = Converter::new(ConvertConfig::default());
    let pdf = s::text_pdf(1, 612.0, 792.0);
    let fine = opts(Resolution::Fine, Dither::Cluster);
    let before = conv.to_fax(&pdf, &fine).unwrap();
    let pid = conv.ghostscript().idle_pids()[0];
    // SAFETY: signals the Ghostscript process this converter started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_gone(pid);
    let after = conv
        .to_fax(&pdf, &fine)
        .expect("a fresh Ghostscript takes the job");
    assert_eq!(after.tiff, before.tiff);
    assert_eq!(conv.ghostscript().starts(), 2);
}

#[test]
fn a_pdf_that_renders_forever_is_killed_at_the_wall_limit_and_the_next_job_gets_a_fresh_ghostscript()
 {
    let work = tempfile::tempdir().unwrap();
    let conv = Converter::new(ConvertConfig {
        timeout_secs: 1,
        work_dir: work.path().display().to_string(),
        ..ConvertConfig::default()
    });
    let fine = opts(Resolution::Fine, Dither::Cluster);
    let text = s::text_pdf(1, 612.0, 792.0);
    conv.to_fax(&text, &fine).unwrap();
    let warm = conv.ghostscript().idle_pids()[0];
    let err = conv.to_fax(&endless_pdf(), &fine).unwrap_err();
    assert!(
        matches!(err, ConvertError::Timeout { ref tool, .. } if tool == "ghostscript"),
        "{err}"
    );
    assert!(
        gone(warm),
        "the process group of the job is killed and reaped"
    );
    assert!(conv.ghostscript().idle_pids().is_empty());
    assert!(
        leftovers(work.path()).is_empty(),
        "the job's files are removed"
    );
    let doc = conv.to_fax(&text, &fine).expect("the next job runs");
    assert_eq!(doc.info.pages, 1);
    assert_eq!(conv.ghostscript().starts(), 2);
}

/// Black pixels and black/white edges (right and down neighbours) inside a rectangle.
fn ink_and_edges(p: &FaxPage, x0: u32, y0: u32, x1: u32, y1: u32) -> (f64, f64) {
    let (mut black, mut edges) = (0u64, 0u64);
    for y in y0..y1 {
        for x in x0..x1 {
            let b = p.is_black(x, y);
            black += b as u64;
            edges += (b != p.is_black(x + 1, y)) as u64 + (b != p.is_black(x, y + 1)) as u64;
        }
    }
    let n = ((x1 - x0) * (y1 - y0)) as f64;
    (black as f64 / n, edges as f64 / n)
}

#[test]
fn pdf_photos_take_each_dither_and_text_stays_crisp() {
    let conv = Converter::new(ConvertConfig::default());
    let photo = s::photo_pdf();
    let page = |d: Dither| {
        let doc = conv.to_fax(&photo, &opts(Resolution::Fine, d)).unwrap();
        assert_eq!(
            doc.info.heights,
            vec![PageSize::Letter.rows(Resolution::Fine)]
        );
        decode_fax_tiff(&doc.tiff).unwrap().remove(0)
    };
    // A light-to-mid grey part of the photo (top right), away from the dark disc.
    let area = |p: &FaxPage| ink_and_edges(p, 1250, 350, 1550, 650);
    let (c_ink, c_edges) = area(&page(Dither::Cluster));
    let (f_ink, f_edges) = area(&page(Dither::FloydSteinberg));
    let (t_ink, t_edges) = area(&page(Dither::Threshold));
    eprintln!(
        "ink/edges per pixel: cluster {c_ink:.3}/{c_edges:.3}, floyd-steinberg \
         {f_ink:.3}/{f_edges:.3}, threshold {t_ink:.3}/{t_edges:.3}"
    );
    // Both halftones keep the tone of the grey …
    assert!((0.2..0.8).contains(&c_ink), "cluster ink {c_ink}");
    assert!(
        (f_ink - c_ink).abs() < 0.12,
        "same tone: {f_ink} vs {c_ink}"
    );
    // … clustered dots have few edges for their ink, dispersed dots many, a threshold almost
    // none (it draws solid areas, no shading).
    assert!(
        f_edges > 1.5 * c_edges,
        "dispersed {f_edges} vs clustered {c_edges}"
    );
    assert!(
        t_edges < 0.3 * c_edges,
        "threshold {t_edges} vs clustered {c_edges}"
    );

    // Text has no grey in it (no anti-aliasing): every dither gives the same pixels.
    let text = s::text_pdf(1, 612.0, 792.0);
    let pages: Vec<FaxPage> = [Dither::Cluster, Dither::FloydSteinberg, Dither::Threshold]
        .into_iter()
        .map(|d| {
            let doc = conv.to_fax(&text, &opts(Resolution::Fine, d)).unwrap();
            decode_fax_tiff(&doc.tiff).unwrap().remove(0)
        })
        .collect();
    assert!(pages[0].ink() > 0.01);
    assert_eq!(pages[1], pages[0], "floyd-steinberg text");
    assert_eq!(pages[2], pages[0], "threshold text");
}

#[test]
fn directories_left_by_a_killed_faxd_are_removed_at_the_next_start() {
    let work = tempfile::tempdir().unwrap();
    // A process that has exited (and is reaped): its pid names no running faxd.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = work.path().join(format!("faxd-gs-{dead}-Ab12Cd"));
    std::fs::create_dir_all(stale.join("job-7")).unwrap();
    std::fs::write(stale.join("job-7/in.pdf"), b"%PDF-1.4").unwrap();
    // One of a faxd that is still running stays.
    let live = work
        .path()
        .join(format!("faxd-gs-{}-Ef34Gh", std::process::id()));
    std::fs::create_dir_all(&live).unwrap();
    let _conv = Converter::new(ConvertConfig {
        work_dir: work.path().display().to_string(),
        ..ConvertConfig::default()
    });
    assert!(!stale.exists(), "the dead faxd's directory is removed");
    assert!(live.exists(), "a running faxd's directory is kept");
}

#[test]
fn office_documents_take_the_dither_option_through_their_pdf() {
    let conv = Converter::new(ConvertConfig::default());
    let text = b"Fax cover sheet\n\nTo: Accounts\nFrom: Reception\n\nThree pages follow.\n";
    let pages: Vec<FaxPage> = [Dither::Cluster, Dither::FloydSteinberg, Dither::Threshold]
        .into_iter()
        .map(|d| {
            let doc = conv
                .to_fax(text, &opts(Resolution::Fine, d))
                .unwrap_or_else(|e| panic!("{d:?}: {e}"));
            decode_fax_tiff(&doc.tiff).unwrap().remove(0)
        })
        .collect();
    conv.office().stop();
    assert!(pages[0].ink() > 0.001, "the text is on the page");
    assert_eq!(pages[1], pages[0], "floyd-steinberg text");
    assert_eq!(pages[2], pages[0], "threshold text");
}
