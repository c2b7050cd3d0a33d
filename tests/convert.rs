//! Document conversion end to end with the real converters (Ghostscript, LibreOffice): every
//! input type, every resolution and page size, G3/G4, TIFF→PDF without re-encoding, previews,
//! the warm LibreOffice restarting after it dies, Kazoo's command overrides and their sandbox.
//!
//! Still to write at integration, once the loopback media engine lands: the T.30 round trip.
//! Convert a document, send `FaxDocument::tiff` through a back-to-back spandsp pair, then
//! `decode_fax_tiff` both the sent and the received TIFF and require, page by page, equal
//! width and resolution and `similarity(sent, received) > 0.95`.

mod convert_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use convert_support as s;
use faxd::convert::{
    Compression, ConvertConfig, ConvertError, Converter, Dither, FaxOptions, Kind, PageSize,
    PreviewSize, Resolution, decode_fax_tiff, similarity, validate_fax_tiff,
};

fn opts(resolution: Resolution, page_size: PageSize) -> FaxOptions {
    FaxOptions {
        resolution,
        page_size,
        compression: Compression::G4,
        dither: Dither::Cluster,
    }
}

const RESOLUTIONS: [Resolution; 3] = [Resolution::Normal, Resolution::Fine, Resolution::Superfine];
const SIZES: [PageSize; 3] = [PageSize::Letter, PageSize::A4, PageSize::Legal];

/// Rows from the top of the page to the first row with more than half its width black.
fn first_bar_row(p: &faxd::convert::FaxPage) -> Option<u32> {
    (0..p.height).find(|&y| p.row(y).iter().map(|b| b.count_ones()).sum::<u32>() > p.width / 2)
}

#[test]
fn pdf_at_every_resolution_and_page_size_keeps_the_whole_page() {
    let conv = Converter::new(ConvertConfig::default());
    let letter = s::text_pdf(2, 612.0, 792.0);
    let a4 = s::text_pdf(2, 595.0, 842.0);
    for res in RESOLUTIONS {
        for size in SIZES {
            for (name, pdf) in [("letter", &letter), ("a4", &a4)] {
                let doc = conv
                    .to_fax(pdf, &opts(res, size))
                    .unwrap_or_else(|e| panic!("{name} {res:?} {size:?}: {e}"));
                assert_eq!(doc.source, Kind::Pdf);
                assert_eq!(doc.info.pages, 2);
                assert_eq!(doc.info.width, 1728);
                assert_eq!(doc.info.yres, res.lpi() as f32);
                assert_eq!(doc.info.compression, "g4");
                assert_eq!(
                    doc.info.heights,
                    vec![size.rows(res); 2],
                    "{name} {res:?} {size:?}"
                );
                // The header bar at the very top and the footer at the very bottom both survive
                // (Kazoo's fixed -g1728x2200 without fit cuts the top of A4 pages).
                let pages = decode_fax_tiff(&doc.tiff).unwrap();
                let top = first_bar_row(&pages[0]).expect("header bar rendered");
                assert!(
                    top < size.rows(res) / 5,
                    "{name} {res:?} {size:?}: header at row {top}"
                );
                let bottom = (0..pages[0].height)
                    .rev()
                    .find(|&y| pages[0].row(y).contains(&0xFF));
                assert!(bottom.is_some(), "footer rendered");
                assert!(
                    pages[0].ink() > 0.01 && pages[0].ink() < 0.3,
                    "text, not blank or black"
                );
            }
        }
    }
}

#[test]
fn g3_one_and_two_dimensional_on_request() {
    let conv = Converter::new(ConvertConfig::default());
    let pdf = s::text_pdf(1, 612.0, 792.0);
    let png = s::encode(
        &image::DynamicImage::ImageRgb8(s::screenshot(800, 1000)),
        image::ImageFormat::Png,
    );
    for (c, name) in [
        (Compression::G3, "g3-1d"),
        (Compression::G3_2d, "g3-2d"),
        (Compression::G4, "g4"),
    ] {
        let o = FaxOptions {
            compression: c,
            ..opts(Resolution::Fine, PageSize::Letter)
        };
        for input in [&pdf, &png] {
            let doc = conv.to_fax(input, &o).unwrap();
            assert_eq!(doc.info.compression, name);
            assert_eq!(decode_fax_tiff(&doc.tiff).unwrap().len(), 1);
        }
    }
}

#[test]
fn images_of_every_format_fit_every_page() {
    let conv = Converter::new(ConvertConfig::default());
    let shot = image::DynamicImage::ImageRgb8(s::screenshot(1275, 1650));
    let inputs = [
        (Kind::Png, s::encode(&shot, image::ImageFormat::Png)),
        (Kind::Jpeg, s::encode(&shot, image::ImageFormat::Jpeg)),
        (Kind::Gif, s::encode(&shot, image::ImageFormat::Gif)),
        (Kind::Bmp, s::encode(&shot, image::ImageFormat::Bmp)),
    ];
    for (kind, data) in &inputs {
        for res in RESOLUTIONS {
            for size in SIZES {
                let doc = conv
                    .to_fax(data, &opts(res, size))
                    .unwrap_or_else(|e| panic!("{kind:?} {res:?} {size:?}: {e}"));
                assert_eq!(doc.source, *kind);
                assert_eq!(doc.info.pages, 1);
                assert_eq!(doc.info.heights, vec![size.rows(res)]);
                let page = &decode_fax_tiff(&doc.tiff).unwrap()[0];
                assert!(page.ink() > 0.02, "{kind:?}: content rendered");
            }
        }
    }
    // A wide landscape image fits by width, centred, nothing cropped: ink on both sides.
    let wide = image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
        3000,
        500,
        image::Rgb([0, 0, 0]),
    ));
    let doc = conv
        .to_fax(
            &s::encode(&wide, image::ImageFormat::Png),
            &opts(Resolution::Fine, PageSize::A4),
        )
        .unwrap();
    let p = &decode_fax_tiff(&doc.tiff).unwrap()[0];
    let mid = p.height / 2;
    assert!(p.is_black(0, mid) && p.is_black(1727, mid));
    assert!(
        !p.is_black(864, 0) && !p.is_black(864, p.height - 1),
        "letterboxed, not stretched"
    );
}

fn colour_tiff(pages: u32) -> Vec<u8> {
    use tiff::encoder::{Compression, TiffEncoder, colortype};
    let mut out = std::io::Cursor::new(Vec::new());
    let mut enc = TiffEncoder::new(&mut out)
        .unwrap()
        .with_compression(Compression::Lzw);
    for n in 0..pages {
        let img = s::screenshot(850 + n * 10, 1100);
        enc.write_image::<colortype::RGB8>(img.width(), img.height(), img.as_raw())
            .unwrap();
    }
    out.into_inner()
}

#[test]
fn tiffs_colour_multi_page_and_foreign_fax_geometry_are_normalised() {
    let conv = Converter::new(ConvertConfig::default());
    let doc = conv
        .to_fax(&colour_tiff(3), &opts(Resolution::Fine, PageSize::Letter))
        .unwrap();
    assert_eq!(doc.source, Kind::Tiff);
    assert_eq!(doc.info.pages, 3);
    assert_eq!(doc.info.heights, vec![2156; 3]);
    // A fax TIFF at normal resolution re-rendered at fine: same page on paper.
    let normal = conv
        .to_fax(
            &s::text_pdf(1, 612.0, 792.0),
            &opts(Resolution::Normal, PageSize::Letter),
        )
        .unwrap();
    let fine = conv
        .to_fax(&normal.tiff, &opts(Resolution::Fine, PageSize::Letter))
        .unwrap();
    assert_eq!(fine.info.yres, 196.0);
    let a = &decode_fax_tiff(&normal.tiff).unwrap()[0];
    let b = &decode_fax_tiff(&fine.tiff).unwrap()[0];
    assert!(similarity(a, b) > 0.85, "{}", similarity(a, b));
    // Already right: kept pixel for pixel.
    let same = conv
        .to_fax(&normal.tiff, &opts(Resolution::Normal, PageSize::Letter))
        .unwrap();
    assert_eq!(
        decode_fax_tiff(&same.tiff).unwrap(),
        decode_fax_tiff(&normal.tiff).unwrap()
    );
}

#[test]
fn office_documents_convert_with_a_warm_libreoffice_that_restarts_when_it_dies() {
    let conv = Converter::new(ConvertConfig::default());
    let o = opts(Resolution::Fine, PageSize::A4);
    let mut cold = None;
    for name in [
        "office/doc.docx",
        "office/doc.odt",
        "office/doc.doc",
        "office/sheet.xlsx",
        "office/sheet.ods",
        "office/sheet.xls",
        "office/slides.pptx",
        "office/slides.odp",
    ] {
        let data = std::fs::read(s::fixture(name)).unwrap();
        let started = Instant::now();
        let doc = conv
            .to_fax(&data, &o)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        if cold.is_none() {
            cold = Some(started.elapsed());
        }
        assert!(doc.source.is_office(), "{name}");
        assert!(doc.info.pages >= 1, "{name}");
        assert!(
            decode_fax_tiff(&doc.tiff).unwrap()[0].ink() > 0.0005,
            "{name} has content"
        );
    }
    let rtf =
        br"{\rtf1\ansi{\fonttbl\f0\fswiss Helvetica;}\f0\fs24 Invoice 42\par Hello from RTF.\par}";
    assert_eq!(conv.to_fax(rtf, &o).unwrap().source, Kind::Rtf);
    let started = Instant::now();
    let doc = conv
        .to_fax("Dear customer,\nplease find the invoice.\n".as_bytes(), &o)
        .unwrap();
    let warm = started.elapsed();
    assert_eq!(doc.source, Kind::Text);
    // Other resolutions and page sizes (every type at every combination: convert_matrix.rs).
    let docx = std::fs::read(s::fixture("office/doc.docx")).unwrap();
    for (res, size) in [
        (Resolution::Normal, PageSize::Letter),
        (Resolution::Superfine, PageSize::Legal),
    ] {
        let doc = conv.to_fax(&docx, &opts(res, size)).unwrap();
        assert_eq!(doc.info.heights, vec![size.rows(res)]);
    }
    assert_eq!(conv.office().starts(), 1, "one long-lived converter");
    eprintln!("office: first document {cold:?}, warm text document {warm:?}");
    // Kill the converter's whole process group: the next document restarts it.
    let pid = conv.office().pid().expect("running");
    faxd::convert::sandbox::kill_group(pid);
    let data = std::fs::read(s::fixture("office/doc.docx")).unwrap();
    let doc = match conv.to_fax(&data, &o) {
        Ok(d) => d,
        // The death may be noticed by this job; the one after must work.
        Err(ConvertError::ToolFailed { .. }) => conv.to_fax(&data, &o).unwrap(),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(doc.info.pages, 1);
    assert_eq!(conv.office().starts(), 2);
    conv.office().stop();
    assert!(conv.office().pid().is_none());
}

fn spandsp_like(tiff_g4: &[u8]) -> Vec<u8> {
    // G3 2-D, LSB-first fill order, 128-row strips: how spandsp stores a received fax.
    let pages = decode_fax_tiff(tiff_g4).unwrap();
    let mut out: Vec<u8> = b"II*\0\0\0\0\0".to_vec();
    let mut link = 4usize;
    for p in &pages {
        let mut offsets = Vec::new();
        let mut counts = Vec::new();
        let mut y = 0;
        while y < p.height {
            let rows = 128.min(p.height - y);
            let mut part = faxd::convert::FaxPage::blank(p.width, rows, p.xres, p.yres);
            part.data.copy_from_slice(
                &p.data[y as usize * p.stride()..(y + rows) as usize * p.stride()],
            );
            let mut data = faxd::convert::ccitt::encode(&part, faxd::convert::Coding::Mr);
            faxd::convert::ccitt::reverse_bits(&mut data);
            offsets.push(out.len() as u32);
            counts.push(data.len() as u32);
            out.extend_from_slice(&data);
            y += rows;
        }
        let arr_at = out.len() as u32;
        for v in offsets.iter().chain(&counts) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let n = offsets.len() as u32;
        let res_at = out.len() as u32;
        for r in [204u32, p.yres as u32] {
            out.extend_from_slice(&r.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
        }
        let entries: [(u16, u16, u32, u32); 12] = [
            (256, 4, 1, p.width),
            (257, 4, 1, p.height),
            (258, 3, 1, 1),
            (259, 3, 1, 3),
            (262, 3, 1, 0),
            (266, 3, 1, 2),
            (273, 4, n, arr_at),
            (278, 4, 1, 128),
            (279, 4, n, arr_at + 4 * n),
            (282, 5, 1, res_at),
            (283, 5, 1, res_at + 8),
            (292, 4, 1, 5),
        ];
        let ifd = out.len();
        out[link..link + 4].copy_from_slice(&(ifd as u32).to_le_bytes());
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        for (t, ty, c, v) in entries {
            out.extend_from_slice(&t.to_le_bytes());
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&c.to_le_bytes());
            if ty == 3 && c == 1 {
                out.extend_from_slice(&(v as u16).to_le_bytes());
                out.extend_from_slice(&[0, 0]);
            } else if c == 1 && ty == 4 || ty == 5 || c > 1 {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        link = out.len();
        out.extend_from_slice(&[0; 4]);
    }
    out
}

#[test]
fn fax_tiff_to_pdf_wraps_g3_and_g4_unchanged_and_ghostscript_reads_it_back() {
    let conv = Converter::new(ConvertConfig::default());
    let sent = conv
        .to_fax(
            &s::text_pdf(2, 612.0, 792.0),
            &opts(Resolution::Fine, PageSize::Letter),
        )
        .unwrap();
    let g3 = spandsp_like(&sent.tiff);
    let original = decode_fax_tiff(&sent.tiff).unwrap();
    assert_eq!(
        decode_fax_tiff(&g3).unwrap(),
        original,
        "the G3 LSB multi-strip file holds the same pages"
    );
    for (name, tiff) in [("g4", &sent.tiff), ("g3-2d lsb strips", &g3)] {
        let pdf = conv.fax_to_pdf(tiff).unwrap();
        // The CCITT bytes are in the PDF as they were (bit order aside).
        assert!(
            pdf.len() < tiff.len() * 11 / 10 + 16_384,
            "{name}: wrapped, not re-encoded"
        );
        // Render it back with Ghostscript at the fax geometry and compare page by page.
        let back = conv
            .to_fax(&pdf, &opts(Resolution::Fine, PageSize::Letter))
            .unwrap();
        let pages = decode_fax_tiff(&back.tiff).unwrap();
        assert_eq!(pages.len(), 2);
        for (a, b) in original.iter().zip(&pages) {
            let sim = similarity(a, b);
            assert!(sim > 0.9, "{name}: similarity {sim}");
        }
    }
}

#[test]
fn previews_thumbnail_and_full_with_paper_aspect() {
    let conv = Converter::new(ConvertConfig::default());
    let doc = conv
        .to_fax(
            &s::text_pdf(2, 612.0, 792.0),
            &opts(Resolution::Normal, PageSize::Letter),
        )
        .unwrap();
    let thumbs = conv.previews(&doc.tiff, PreviewSize::Thumbnail).unwrap();
    assert_eq!(thumbs.len(), 2);
    assert_eq!((thumbs[0].width, thumbs[0].height), (216, 281));
    let full = conv.previews(&doc.tiff, PreviewSize::Full).unwrap();
    assert_eq!(full[0].width, 1728);
    let img = image::load_from_memory(&full[0].png).unwrap();
    assert_eq!(
        img.height(),
        2244,
        "normal rows doubled back to paper aspect"
    );
}

#[test]
fn kazoo_command_overrides_run_sandboxed_and_are_killed_at_their_limit() {
    let cfg = ConvertConfig {
        convert_pdf_command: "gs -q -r204x196 -g1728x2156 -dPDFFitPage -dNOPAUSE -dBATCH -dSAFER -sDEVICE=tiffg4 -sOutputFile=$TO -- $FROM".into(),
        validate_tiff_command: "test -s $FILE".into(),
        ..ConvertConfig::default()
    };
    let conv = Converter::new(cfg);
    let doc = conv
        .to_fax(
            &s::text_pdf(1, 612.0, 792.0),
            &opts(Resolution::Fine, PageSize::Letter),
        )
        .unwrap();
    assert_eq!(doc.info.pages, 1);
    let hang = Converter::new(ConvertConfig {
        convert_pdf_command: "sleep 60 & sleep 60; cp $FROM $TO".into(),
        timeout_secs: 1,
        ..ConvertConfig::default()
    });
    let started = Instant::now();
    let err = hang
        .to_fax(
            &s::text_pdf(1, 612.0, 792.0),
            &opts(Resolution::Fine, PageSize::Letter),
        )
        .unwrap_err();
    assert!(matches!(err, ConvertError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_wrappers_run_off_the_runtime() {
    let conv = Arc::new(Converter::new(ConvertConfig::default()));
    let pdf = s::text_pdf(3, 612.0, 792.0);
    // A timer task keeps ticking while both worker threads have a conversion to drive: a
    // conversion that ran on a worker thread would stall it for the conversion's whole length.
    let ticks = Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let ticker = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            let mut iv = tokio::time::interval(Duration::from_millis(10));
            loop {
                iv.tick().await;
                ticks.lock().unwrap().push(Instant::now());
            }
        }
    });
    let started = Instant::now();
    let (a, b) = tokio::join!(
        tokio::spawn({
            let conv = conv.clone();
            let pdf = pdf.clone();
            async move {
                conv.to_fax_async(pdf, opts(Resolution::Fine, PageSize::Letter))
                    .await
            }
        }),
        tokio::spawn({
            let conv = conv.clone();
            async move {
                conv.to_fax_async(pdf, opts(Resolution::Normal, PageSize::A4))
                    .await
            }
        })
    );
    let ended = Instant::now();
    ticker.abort();
    let mut at: Vec<Instant> = ticks
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|t| *t > started && *t < ended)
        .collect();
    at.insert(0, started);
    at.push(ended);
    let longest = at.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    let took = ended - started;
    assert!(
        longest < took / 2,
        "the runtime stalled for {longest:?} of the {took:?} the conversions took"
    );
    assert_eq!(a.unwrap().unwrap().info.pages, 3);
    let b = b.unwrap().unwrap();
    assert_eq!(b.info.heights[0], 1146);
    let pdf_out = conv.fax_to_pdf_async(b.tiff.clone()).await.unwrap();
    assert!(pdf_out.starts_with(b"%PDF-"));
    assert!(validate_fax_tiff(&b.tiff, Some(98.0), 350).is_ok());
}
