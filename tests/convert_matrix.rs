//! The conversion matrix: every accepted input type (PDF; TIFF in every colour model and
//! compression faxd reads; PNG, JPEG, GIF, BMP; docx, xlsx, pptx, doc, xls, ppt, odt, ods,
//! odp, rtf; plain UTF-8 text) converted at every resolution (normal, fine, superfine) and
//! page size (letter, A4, legal), through the public `Converter` as the node uses it.
//!
//! Every page is checked the way a person would look at the fax: 1728 pixels wide, the exact
//! page length for the resolution and paper, the right resolution tags and page count, and
//! the whole source page on it. The fixtures carry a black bar 0.5 inch below the top edge
//! and one ending 0.5 inch above the bottom edge of every page; the test computes where
//! "scaled to fit without cropping, centred" puts them on the fax page and requires them
//! there, solid, with white paper around them and nothing outside the scaled source page.
//! A landscape page may be turned a quarter to fit portrait paper; either turn is accepted.
//!
//! The three CCITT codings are spread over the matrix: every resolution and every page size
//! is produced once as G4, once as G3 1-D and once as G3 2-D.

mod convert_support;

use std::fmt::Write as _;
use std::time::Instant;

use convert_support as s;
use faxd::convert::{
    Compression, ConvertConfig, Converter, Dither, FaxDocument, FaxOptions, FaxPage, Kind,
    OfficeKind, PageSize, Resolution, decode_fax_tiff,
};

const RESOLUTIONS: [Resolution; 3] = [Resolution::Normal, Resolution::Fine, Resolution::Superfine];
const SIZES: [PageSize; 3] = [PageSize::Letter, PageSize::A4, PageSize::Legal];
const CODINGS: [(Compression, &str); 3] = [
    (Compression::G4, "g4"),
    (Compression::G3, "g3-1d"),
    (Compression::G3_2d, "g3-2d"),
];

/// The nine (resolution, page size) combinations, each with the coding it is produced in.
fn matrix() -> Vec<(Resolution, PageSize, Compression, &'static str)> {
    let mut out = Vec::new();
    for (ri, res) in RESOLUTIONS.into_iter().enumerate() {
        for (si, size) in SIZES.into_iter().enumerate() {
            let (c, name) = CODINGS[(ri + si) % 3];
            out.push((res, size, c, name));
        }
    }
    out
}

/// Page lengths in rows, written out (not computed by the code under test): paper height
/// in inches × lines per inch, rounded.
fn expected_rows(res: Resolution, size: PageSize) -> u32 {
    match (size, res) {
        (PageSize::Letter, Resolution::Normal) => 1078,
        (PageSize::Letter, Resolution::Fine) => 2156,
        (PageSize::Letter, Resolution::Superfine) => 4312,
        (PageSize::A4, Resolution::Normal) => 1146,
        (PageSize::A4, Resolution::Fine) => 2292,
        (PageSize::A4, Resolution::Superfine) => 4584,
        (PageSize::Legal, Resolution::Normal) => 1372,
        (PageSize::Legal, Resolution::Fine) => 2744,
        (PageSize::Legal, Resolution::Superfine) => 5488,
    }
}

/// A black bar on a source page, inches from the page's top-left corner.
#[derive(Clone, Copy, Debug)]
struct Bar {
    x0: f64,
    y0: f64,
    x1: f64,
    y1: f64,
}

/// A source page: its size in inches (or any unit, for images: only the shape matters) and
/// the bars on it.
#[derive(Clone, Debug)]
struct Layout {
    w: f64,
    h: f64,
    bars: Vec<Bar>,
}

impl Layout {
    /// Bars 0.5 high, 0.5 from the top and bottom edges, from `x0` to `x1`.
    fn edge_bars(w: f64, h: f64, x0: f64, x1: f64) -> Self {
        Layout {
            w,
            h,
            bars: vec![
                Bar {
                    x0,
                    y0: 0.5,
                    x1,
                    y1: 1.0,
                },
                Bar {
                    x0,
                    y0: h - 1.0,
                    x1,
                    y1: h - 0.5,
                },
            ],
        }
    }

    /// The same page in other units (pixels of an image at `dpi`).
    fn scaled(&self, k: f64) -> Self {
        Layout {
            w: self.w * k,
            h: self.h * k,
            bars: self
                .bars
                .iter()
                .map(|b| Bar {
                    x0: b.x0 * k,
                    y0: b.y0 * k,
                    x1: b.x1 * k,
                    y1: b.y1 * k,
                })
                .collect(),
        }
    }
}

/// How the source page lies on the fax page.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Turn {
    Upright,
    /// A quarter turn clockwise: the source's top edge on the right.
    Clockwise,
    /// A quarter turn counter-clockwise: the source's top edge on the left.
    Counter,
}

/// Where the source page lands on a fax page: scaled to fit, centred.
struct Placement {
    turn: Turn,
    scale: f64,
    ox: f64,
    oy: f64,
    src_w: f64,
    src_h: f64,
    yres: f64,
}

const XRES: f64 = 204.0;

impl Placement {
    fn new(layout: &Layout, page: &FaxPage, turn: Turn) -> Self {
        let fw = page.width as f64 / XRES;
        let fh = page.height as f64 / page.yres as f64;
        let (w, h) = match turn {
            Turn::Upright => (layout.w, layout.h),
            _ => (layout.h, layout.w),
        };
        let scale = (fw / w).min(fh / h);
        Placement {
            turn,
            scale,
            ox: (fw - w * scale) / 2.0,
            oy: (fh - h * scale) / 2.0,
            src_w: layout.w,
            src_h: layout.h,
            yres: page.yres as f64,
        }
    }

    /// A source rectangle as fax pixels (x0, y0, x1, y1), fractional.
    fn rect(&self, x0: f64, y0: f64, x1: f64, y1: f64) -> [f64; 4] {
        let pt = |x: f64, y: f64| {
            let (u, v) = match self.turn {
                Turn::Upright => (x, y),
                Turn::Clockwise => (self.src_h - y, x),
                Turn::Counter => (y, self.src_w - x),
            };
            (
                (self.ox + u * self.scale) * XRES,
                (self.oy + v * self.scale) * self.yres,
            )
        };
        let (ax, ay) = pt(x0, y0);
        let (bx, by) = pt(x1, y1);
        [ax.min(bx), ay.min(by), ax.max(bx), ay.max(by)]
    }
}

/// Black pixels and all pixels in the pixel rectangle, clamped to the page.
fn count(page: &FaxPage, r: [f64; 4]) -> (u64, u64) {
    let x0 = r[0].round().clamp(0.0, page.width as f64) as u32;
    let x1 = r[2].round().clamp(0.0, page.width as f64) as u32;
    let y0 = r[1].round().clamp(0.0, page.height as f64) as u32;
    let y1 = r[3].round().clamp(0.0, page.height as f64) as u32;
    if x0 >= x1 || y0 >= y1 {
        return (0, 0);
    }
    let (b0, b1) = ((x0 / 8) as usize, ((x1 - 1) / 8) as usize);
    let first = 0xFFu8 >> (x0 % 8);
    let last = 0xFFu8 << (7 - (x1 - 1) % 8);
    let mut black = 0u64;
    for y in y0..y1 {
        let row = page.row(y);
        for (i, &b) in row.iter().enumerate().take(b1 + 1).skip(b0) {
            let mut m = 0xFFu8;
            if i == b0 {
                m &= first;
            }
            if i == b1 {
                m &= last;
            }
            black += (b & m).count_ones() as u64;
        }
    }
    (black, (x1 - x0) as u64 * (y1 - y0) as u64)
}

fn grow(r: [f64; 4], dx: f64, dy: f64) -> [f64; 4] {
    [r[0] - dx, r[1] - dy, r[2] + dx, r[3] + dy]
}

/// Checks one fax page against the source layout placed with `turn`; `tol` is how far (in
/// inches on the fax page) an edge may be from where it is computed to be.
fn check_placed(page: &FaxPage, layout: &Layout, turn: Turn, tol: f64) -> Result<(), String> {
    let p = Placement::new(layout, page, turn);
    let (tx, ty) = (tol * XRES, tol * p.yres);
    // White paper around each bar: a band this wide just outside its tolerance.
    let (bx, by) = (0.12 * XRES, 0.12 * p.yres);
    let mut bars_black = 0u64;
    for (i, b) in layout.bars.iter().enumerate() {
        let r = p.rect(b.x0, b.y0, b.x1, b.y1);
        let (k, n) = count(page, grow(r, -tx, -ty));
        // Solid black; a dark colour comes out screened, mostly black.
        if n == 0 || (k as f64) < 0.8 * n as f64 {
            return Err(format!(
                "bar {i} at rows {:.0}..{:.0}, columns {:.0}..{:.0}: only {k} of {n} pixels black",
                r[1], r[3], r[0], r[2]
            ));
        }
        let near = grow(r, tx, ty);
        let (k_near, n_near) = count(page, near);
        let (k_band, n_band) = count(page, grow(near, bx, by));
        let (k, n) = (k_band - k_near, n_band - n_near);
        if (k as f64) > 0.03 * n as f64 {
            return Err(format!(
                "bar {i} at rows {:.0}..{:.0}, columns {:.0}..{:.0}: {k} of {n} pixels black in \
                 the paper around it (moved, or stretched)",
                r[1], r[3], r[0], r[2]
            ));
        }
        bars_black += k_near;
    }
    // Nothing outside the source page as placed, and something printed on it besides the bars.
    let content = p.rect(0.0, 0.0, layout.w, layout.h);
    let (k_in, n_in) = count(page, grow(content, tx, ty));
    let (k_all, n_all) = count(page, [0.0, 0.0, page.width as f64, page.height as f64]);
    let (k_out, n_out) = (k_all - k_in, n_all - n_in);
    if (k_out as f64) > 0.001 * n_out as f64 {
        return Err(format!(
            "{k_out} black pixels outside the placed page (rows {:.0}..{:.0}, columns {:.0}..{:.0})",
            content[1], content[3], content[0], content[2]
        ));
    }
    let text = k_in - bars_black;
    if (text as f64) < 0.0005 * n_in as f64 {
        return Err(format!(
            "only {text} black pixels besides the bars: the page's text is missing"
        ));
    }
    Ok(())
}

/// Checks one fax page against the source layout: upright, or (for a landscape source) a
/// quarter turn either way. Returns how it was placed.
fn check_page(page: &FaxPage, layout: &Layout, tol: f64) -> Result<Turn, String> {
    let turns: &[Turn] = if layout.w > layout.h {
        &[Turn::Upright, Turn::Clockwise, Turn::Counter]
    } else {
        &[Turn::Upright]
    };
    let mut why = Vec::new();
    for &t in turns {
        match check_placed(page, layout, t, tol) {
            Ok(()) => return Ok(t),
            Err(e) => why.push(format!("{t:?}: {e}")),
        }
    }
    Err(why.join("; "))
}

/// What a fixture should become.
struct Expect<'a> {
    name: &'a str,
    kind: Kind,
    pages: u32,
    /// The source page with its bars; `None` for plain text (checked separately).
    layout: Option<Layout>,
    tol: f64,
}

/// Converts `input` at every combination and checks every page; returns what went wrong
/// (empty when all is well).
/// For debugging: `FAXD_MATRIX_ONLY=<text>` runs only the inputs whose name contains it, and
/// `FAXD_MATRIX_TIMES=1` prints how long each conversion and its check took.
fn run_matrix(conv: &Converter, input: &[u8], want: &Expect) -> Vec<String> {
    let mut failures = Vec::new();
    if let Ok(only) = std::env::var("FAXD_MATRIX_ONLY")
        && !want.name.contains(&only)
    {
        return failures;
    }
    for (res, size, compression, coding) in matrix() {
        let label = format!("{} {res:?} {size:?} {coding}", want.name);
        let opts = FaxOptions {
            resolution: res,
            page_size: size,
            compression,
            dither: Dither::Cluster,
        };
        let doc = match conv.to_fax(input, &opts) {
            Ok(d) => d,
            Err(e) => {
                failures.push(format!("{label}: conversion failed: {e}"));
                continue;
            }
        };
        let t = Instant::now();
        let checked = check_doc(&doc, res, size, coding, want);
        if std::env::var("FAXD_MATRIX_TIMES").is_ok() {
            eprintln!(
                "{label}: converted in {:.2}s, checked in {:.2}s",
                doc.elapsed.as_secs_f64(),
                t.elapsed().as_secs_f64()
            );
        }
        if let Err(e) = checked {
            if failures.is_empty() {
                keep_pages(&doc, &label);
            }
            failures.push(format!("{label}: {e}"));
        }
    }
    failures
}

/// Keeps the pages of a failed conversion as PNGs for a person to look at
/// (`target/test-artefacts/convert/matrix/`).
fn keep_pages(doc: &FaxDocument, label: &str) {
    let dir = s::artefacts().join("matrix");
    let _ = std::fs::create_dir_all(&dir);
    let stem: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    for (n, p) in decode_fax_tiff(&doc.tiff)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let img = image::GrayImage::from_fn(p.width, p.height, |x, y| {
            image::Luma([if p.is_black(x, y) { 0 } else { 255 }])
        });
        let _ = img.save(dir.join(format!("{stem}-p{}.png", n + 1)));
    }
}

fn check_doc(
    doc: &FaxDocument,
    res: Resolution,
    size: PageSize,
    coding: &str,
    want: &Expect,
) -> Result<(), String> {
    let rows = expected_rows(res, size);
    let mut e = String::new();
    if doc.source != want.kind {
        let _ = write!(e, "read as {:?}, not {:?}; ", doc.source, want.kind);
    }
    let info = &doc.info;
    if info.width != 1728 {
        let _ = write!(e, "{} pixels wide; ", info.width);
    }
    if info.xres != 204.0 || info.yres != res.lpi() as f32 {
        let _ = write!(e, "resolution tags {}×{}; ", info.xres, info.yres);
    }
    if info.compression != coding {
        let _ = write!(e, "coded {}; ", info.compression);
    }
    if info.pages != want.pages {
        let _ = write!(e, "{} pages, not {}; ", info.pages, want.pages);
    }
    if info.heights.iter().any(|&h| h != rows) {
        let _ = write!(e, "page lengths {:?}, not {rows} each; ", info.heights);
    }
    let pages = decode_fax_tiff(&doc.tiff).map_err(|err| format!("{e}undecodable: {err}"))?;
    if pages.len() as u32 != info.pages {
        let _ = write!(
            e,
            "{} pages decoded, {} declared; ",
            pages.len(),
            info.pages
        );
    }
    for (n, page) in pages.iter().enumerate() {
        if page.width != 1728 || page.height != rows {
            let _ = write!(
                e,
                "page {} decodes to {}×{}; ",
                n + 1,
                page.width,
                page.height
            );
            continue;
        }
        let check = match &want.layout {
            Some(l) => check_page(page, l, want.tol).map(|_| ()),
            None => check_text_page(page, n == 0),
        };
        if let Err(why) = check {
            let _ = write!(e, "page {}: {why}; ", n + 1);
        }
    }
    if e.is_empty() { Ok(()) } else { Err(e) }
}

/// Plain text has no bars; its first line is a row of full blocks. The page keeps white
/// margins on all four sides, the block row is the first thing printed, near the top, and
/// a full first page is printed down to near the bottom.
fn check_text_page(page: &FaxPage, full: bool) -> Result<(), String> {
    let (w, h) = (page.width as f64, page.height as f64);
    let yres = page.yres as f64;
    let m = 0.3;
    let inside = [m * XRES, m * yres, w - m * XRES, h - m * yres];
    let (k_in, _) = count(page, inside);
    let (k_all, _) = count(page, [0.0, 0.0, w, h]);
    if k_all != k_in {
        return Err(format!(
            "{} black pixels within 0.3 inch of the paper's edge",
            k_all - k_in
        ));
    }
    let inked = |y: u32| page.row(y).iter().any(|&b| b != 0);
    let first = (0..page.height).find(|&y| inked(y)).ok_or("blank page")?;
    let last = (0..page.height).rev().find(|&y| inked(y)).unwrap_or(first);
    if first as f64 > 0.2 * h {
        return Err(format!("first ink at row {first} of {h}"));
    }
    if full {
        let bar = (first..first + (0.2 * yres) as u32)
            .any(|y| count(page, [0.0, y as f64, w, y as f64 + 1.0]).0 as f64 > 0.25 * w);
        if !bar {
            return Err(format!(
                "no row of blocks at the top (first ink row {first})"
            ));
        }
        if (last as f64) < 0.8 * h {
            return Err(format!(
                "a full page printed only down to row {last} of {h}"
            ));
        }
    }
    Ok(())
}

fn fail_with(what: &str, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{what}: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The Office fixtures (tests/fixtures/office/matrix, made by its make.sh): the letter
/// Writer document with two pages, the A4 workbook with two sheets, the 16:9 deck with two
/// slides, each in every format faxd accepts for it; bars as described there.
fn office_fixtures() -> Vec<(Expect<'static>, Vec<u8>)> {
    let writer = Layout::edge_bars(8.5, 11.0, 0.5, 8.0);
    // The workbook's bars are its first and last rows (twenty rows of 0.5 inch from the
    // 0.5 inch top margin), seven 1-inch columns from the left margin.
    let calc = Layout {
        w: 8.2681,
        h: 11.6929,
        bars: vec![
            Bar {
                x0: 0.5,
                y0: 0.5,
                x1: 7.5,
                y1: 1.0,
            },
            Bar {
                x0: 0.5,
                y0: 10.0,
                x1: 7.5,
                y1: 10.5,
            },
        ],
    };
    let impress = Layout::edge_bars(10.0, 5.625, 0.5, 9.5);
    let read = |name: &str| {
        let data = std::fs::read(s::fixture(&format!("office/matrix/{name}")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        if name.ends_with(".gz") {
            use std::io::Read;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&data[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        } else {
            data
        }
    };
    let ole = Kind::Office(OfficeKind::Ole);
    [
        ("bars.docx", Kind::Office(OfficeKind::Docx), &writer),
        ("bars.doc", ole, &writer),
        ("bars.odt", Kind::Office(OfficeKind::Odt), &writer),
        ("bars.rtf", Kind::Rtf, &writer),
        ("bars.xlsx", Kind::Office(OfficeKind::Xlsx), &calc),
        ("bars.xls", ole, &calc),
        ("bars.ods", Kind::Office(OfficeKind::Ods), &calc),
        ("bars.pptx", Kind::Office(OfficeKind::Pptx), &impress),
        ("bars.ppt.gz", ole, &impress),
        ("bars.odp", Kind::Office(OfficeKind::Odp), &impress),
    ]
    .into_iter()
    .map(|(name, kind, layout)| {
        (
            Expect {
                name,
                kind,
                pages: 2,
                layout: Some(layout.clone()),
                tol: 0.05,
            },
            read(name),
        )
    })
    .collect()
}

/// Plain UTF-8 text, long enough for two pages, beginning with a row of full blocks.
fn text_note() -> Vec<u8> {
    let mut t = "█".repeat(40);
    t.push('\n');
    for i in 1..=80 {
        let _ = writeln!(
            t,
            "Line {i:02}: Grüße aus Köln, naïve café, Ελληνικά — 0123456789"
        );
    }
    t.into_bytes()
}

#[test]
fn office_documents_and_text_at_every_resolution_and_page_size_keep_every_page_whole() {
    let conv = Converter::new(ConvertConfig::default());
    let started = Instant::now();
    conv.office().warm_up().expect("LibreOffice starts");
    let warm = started.elapsed();
    let mut failures = Vec::new();
    let mut times = Vec::new();
    for (want, data) in office_fixtures() {
        let t = Instant::now();
        failures.extend(run_matrix(&conv, &data, &want));
        times.push(format!("{} {:.1}s", want.name, t.elapsed().as_secs_f64()));
    }
    let t = Instant::now();
    let note = Expect {
        name: "note.txt",
        kind: Kind::Text,
        pages: 2,
        layout: None,
        tol: 0.0,
    };
    failures.extend(run_matrix(&conv, &text_note(), &note));
    times.push(format!("note.txt {:.1}s", t.elapsed().as_secs_f64()));
    assert_eq!(
        conv.office().starts() as usize,
        conv.office().workers(),
        "the warm LibreOffice workers last the whole matrix"
    );
    eprintln!(
        "office matrix: LibreOffice start {:.1}s, 99 conversions in {:.1}s ({})",
        warm.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        times.join(", ")
    );
    conv.office().stop();
    fail_with("office matrix", failures);
}

/// A bars page drawn as an image: white paper, `layout`'s bars in `bar` colour, and
/// text-like strokes with a red chart between them. `layout` is in pixels.
fn bars_image(layout: &Layout, bar: [u8; 3]) -> image::RgbImage {
    let (w, h) = (layout.w.round() as u32, layout.h.round() as u32);
    let inside = |b: &Bar, x: u32, y: u32| {
        let (x, y) = (x as f64 + 0.5, y as f64 + 0.5);
        x >= b.x0 && x < b.x1 && y >= b.y0 && y < b.y1
    };
    let top = layout.bars[0].y1;
    let bottom = layout.bars[1].y0;
    let (gap, left, right) = (bottom - top, layout.bars[0].x0, layout.bars[0].x1);
    image::RgbImage::from_fn(w, h, |x, y| {
        if layout.bars.iter().any(|b| inside(b, x, y)) {
            return image::Rgb(bar);
        }
        let (fx, fy) = (x as f64, y as f64);
        let in_body = fy > top + gap * 0.2 && fy < bottom - gap * 0.2 && fx > left && fx < right;
        let line =
            in_body && (((fy - top) / (gap * 0.04)) as u32).is_multiple_of(3) && (x / 7) % 5 != 0;
        let chart = in_body
            && fy > top + gap * 0.6
            && (((fx - left) / (gap * 0.1)) as u32).is_multiple_of(2);
        if line {
            image::Rgb([25, 25, 25])
        } else if chart {
            image::Rgb([200, 30, 30])
        } else {
            image::Rgb([255, 255, 255])
        }
    })
}

#[test]
fn images_at_every_resolution_and_page_size_keep_the_whole_picture() {
    let conv = Converter::new(ConvertConfig::default());
    let started = Instant::now();
    // A letter page scanned at 75 pixels per inch, and a landscape one.
    let portrait = Layout::edge_bars(8.5, 11.0, 0.5, 8.0).scaled(75.0);
    let landscape = Layout::edge_bars(11.0, 8.5, 0.5, 10.5).scaled(75.0);
    let page = image::DynamicImage::ImageRgb8(bars_image(&portrait, [0, 0, 0]));
    let wide = image::DynamicImage::ImageRgb8(bars_image(&landscape, [10, 20, 90]));
    // Grey and alpha: the paper is transparent, and must come out white.
    let clear = image::DynamicImage::ImageRgba8(image::RgbaImage::from_fn(
        page.width(),
        page.height(),
        |x, y| {
            let image::Rgb([r, g, b]) = page.as_rgb8().unwrap().get_pixel(x, y).to_owned();
            if (r, g, b) == (255, 255, 255) {
                image::Rgba([0, 0, 0, 0])
            } else {
                image::Rgba([r, g, b, 255])
            }
        },
    ));
    use image::ImageFormat as F;
    let inputs = [
        (
            "png rgb",
            Kind::Png,
            s::encode(&page, F::Png),
            &portrait,
            0.05,
        ),
        (
            "png landscape",
            Kind::Png,
            s::encode(&wide, F::Png),
            &landscape,
            0.05,
        ),
        (
            "png alpha",
            Kind::Png,
            s::encode(&clear, F::Png),
            &portrait,
            0.05,
        ),
        (
            "jpeg",
            Kind::Jpeg,
            s::encode(&page, F::Jpeg),
            &portrait,
            0.08,
        ),
        ("gif", Kind::Gif, s::encode(&page, F::Gif), &portrait, 0.05),
        ("bmp", Kind::Bmp, s::encode(&page, F::Bmp), &portrait, 0.05),
    ];
    let mut failures = Vec::new();
    for (name, kind, data, layout, tol) in inputs {
        let want = Expect {
            name,
            kind,
            pages: 1,
            layout: Some(layout.clone()),
            tol,
        };
        failures.extend(run_matrix(&conv, &data, &want));
    }
    eprintln!(
        "image matrix: 54 conversions in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    fail_with("image matrix", failures);
}

/// A PDF of `pages` bars pages of `w`×`h` inches, with lines of text between the bars.
fn bars_pdf(pages: usize, w: f64, h: f64) -> Vec<u8> {
    let (wp, hp) = (w * 72.0, h * 72.0);
    let content: Vec<String> = (1..=pages)
        .map(|n| {
            let mut c = format!(
                "0 g 36 {} {} 36 re f 36 36 {} 36 re f\n",
                hp - 72.0,
                wp - 72.0,
                wp - 72.0
            );
            c.push_str(&format!(
                "BT /F1 28 Tf 72 {} Td (FAXD page {n}) Tj ET\n",
                hp - 150.0
            ));
            for i in 0..12 {
                c.push_str(&format!(
                    "BT /F1 11 Tf 72 {} Td (Line {i}: the quick brown fox jumps over the lazy dog.) Tj ET\n",
                    hp - 190.0 - i as f64 * 16.0
                ));
            }
            c
        })
        .collect();
    s::pdf(&content, wp, hp, None)
}

/// Runs Ghostscript (which writes TIFF with libtiff) on `pdf` with `args`; the TIFF it wrote.
fn gs_tiff(pdf: &[u8], args: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.pdf");
    let output = dir.path().join("out.tif");
    std::fs::write(&input, pdf).unwrap();
    let out = std::process::Command::new("gs")
        .args(["-q", "-dSAFER", "-dBATCH", "-dNOPAUSE"])
        .args(args)
        .arg(format!("-sOutputFile={}", output.display()))
        .arg(&input)
        .output()
        .expect("Ghostscript runs");
    assert!(
        out.status.success(),
        "gs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&output).unwrap()
}

/// An RGBA TIFF (Deflate) with transparent paper, written by the tiff crate.
fn rgba_deflate_tiff(layout: &Layout) -> Vec<u8> {
    use tiff::encoder::{Compression, Rational, TiffEncoder, colortype};
    use tiff::tags::ResolutionUnit;
    let img = bars_image(layout, [0, 0, 0]);
    let mut px = Vec::with_capacity((img.width() * img.height() * 4) as usize);
    for p in img.pixels() {
        let a = if p.0 == [255, 255, 255] { 0 } else { 255 };
        px.extend_from_slice(&[p.0[0], p.0[1], p.0[2], a]);
    }
    let mut out = std::io::Cursor::new(Vec::new());
    let mut enc = TiffEncoder::new(&mut out)
        .unwrap()
        .with_compression(Compression::Deflate(Default::default()));
    let mut im = enc
        .new_image::<colortype::RGBA8>(img.width(), img.height())
        .unwrap();
    im.resolution_unit(ResolutionUnit::Centimeter);
    im.x_resolution(Rational { n: 40, d: 1 });
    im.y_resolution(Rational { n: 40, d: 1 });
    im.write_data(&px).unwrap();
    out.into_inner()
}
/// One TIFF input of the matrix.
struct TiffInput {
    name: &'static str,
    data: Vec<u8>,
    layout: Layout,
    pages: u32,
    tol: f64,
}

/// Source pages of the TIFF and PDF inputs: letter, A4, legal and A5, bars at 0.5 inch.
fn letter() -> Layout {
    Layout::edge_bars(8.5, 11.0, 0.5, 8.0)
}
fn a4() -> Layout {
    Layout::edge_bars(8.27, 11.69, 0.5, 7.77)
}
fn legal() -> Layout {
    Layout::edge_bars(8.5, 14.0, 0.5, 8.0)
}
fn a5() -> Layout {
    Layout::edge_bars(5.83, 8.27, 0.5, 5.33)
}

/// A TIFF rendered by Ghostscript from a bars PDF of `layout`'s size.
fn gs_input(name: &'static str, layout: Layout, pages: u32, args: &[&str]) -> TiffInput {
    let pdf = bars_pdf(pages as usize, layout.w, layout.h);
    TiffInput {
        name,
        data: gs_tiff(&pdf, args),
        layout,
        pages,
        tol: 0.05,
    }
}

/// Converts every input at every combination; fails with the full list of what went wrong.
fn tiff_matrix(what: &str, inputs: Vec<TiffInput>) {
    let conv = Converter::new(ConvertConfig::default());
    let started = Instant::now();
    let mut failures = Vec::new();
    for t in &inputs {
        let want = Expect {
            name: t.name,
            kind: Kind::Tiff,
            pages: t.pages,
            layout: Some(t.layout.clone()),
            tol: t.tol,
        };
        failures.extend(run_matrix(&conv, &t.data, &want));
    }
    eprintln!(
        "{what}: {} inputs × 9 in {:.1}s",
        inputs.len(),
        started.elapsed().as_secs_f64()
    );
    fail_with(what, failures);
}

#[test]
fn tiffs_in_every_colour_model_and_compression_at_every_resolution_and_page_size() {
    let letter2 = |name, args: &[&str]| gs_input(name, letter(), 2, args);
    let mut inputs = vec![
        letter2("rgb uncompressed 100 dpi", &["-sDEVICE=tiff24nc", "-r100"]),
        gs_input("rgb 16-bit 60 dpi", a4(), 2, &["-sDEVICE=tiff48nc", "-r60"]),
        // Non-square pixels: the page must keep its shape on paper.
        gs_input(
            "grey lzw 150x75 dpi",
            a4(),
            2,
            &["-sDEVICE=tiffgray", "-sCompression=lzw", "-r150x75"],
        ),
        gs_input(
            "grey packbits 120 dpi",
            legal(),
            1,
            &["-sDEVICE=tiffgray", "-sCompression=pack", "-r120"],
        ),
        gs_input(
            "cmyk lzw 72 dpi",
            a5(),
            1,
            &["-sDEVICE=tiff32nc", "-sCompression=lzw", "-r72"],
        ),
        // CCITT pages that are not fax pages (other widths and resolutions). AdjustWidth=0
        // keeps Ghostscript from widening a 1700-pixel page to 1728.
        letter2(
            "g3 1-d 200 dpi",
            &["-sDEVICE=tiffg3", "-dAdjustWidth=0", "-r200"],
        ),
        gs_input(
            "g3 2-d 200x100 dpi",
            a4(),
            2,
            &["-sDEVICE=tiffg32d", "-r200x100"],
        ),
        gs_input("g4 300 dpi", legal(), 1, &["-sDEVICE=tiffg4", "-r300"]),
        TiffInput {
            name: "rgba deflate 40 dpcm",
            data: rgba_deflate_tiff(&letter().scaled(101.6)),
            layout: letter(),
            pages: 1,
            tol: 0.05,
        },
    ];
    // JPEG-compressed TIFFs as libtiff writes them (tests/fixtures/tiff/make.sh): letter,
    // two pages at 50 dpi; JPEG blocks there are 0.16 inch, so edges get more latitude.
    for (name, file) in [("jpeg rgb", "jpeg-rgb.tif"), ("jpeg grey", "jpeg-gray.tif")] {
        inputs.push(TiffInput {
            name,
            data: std::fs::read(s::fixture(&format!("tiff/{file}"))).unwrap(),
            layout: letter(),
            pages: 2,
            tol: 0.12,
        });
    }
    tiff_matrix("tiff matrix", inputs);
}

/// 1-bit TIFFs compressed otherwise than CCITT (uncompressed, LZW, PackBits), as scanners
/// and Ghostscript write them: WhiteIsZero, so 0 bits are paper. Black must stay black.
#[test]
fn bilevel_tiffs_without_ccitt_compression_stay_black_on_white() {
    let inputs = vec![
        gs_input(
            "bilevel uncompressed 100 dpi",
            letter(),
            2,
            &["-sDEVICE=tifflzw", "-sCompression=none", "-r100"],
        ),
        gs_input(
            "bilevel lzw 150 dpi",
            letter(),
            2,
            &["-sDEVICE=tifflzw", "-r150"],
        ),
        gs_input(
            "bilevel packbits 200 dpi",
            a4(),
            2,
            &["-sDEVICE=tiffpack", "-r200"],
        ),
    ];
    tiff_matrix("bilevel tiff matrix", inputs);
}

/// JPEG-compressed colour TIFF in YCbCr, libtiff's default for JPEG (`tiffcp -c jpeg`).
#[test]
fn jpeg_tiffs_in_ycbcr_as_libtiff_writes_them_are_read() {
    let inputs = vec![TiffInput {
        name: "jpeg ycbcr",
        data: std::fs::read(s::fixture("tiff/jpeg-ycbcr.tif")).unwrap(),
        layout: letter(),
        pages: 2,
        tol: 0.12,
    }];
    tiff_matrix("ycbcr tiff matrix", inputs);
}

/// TIFF compression 2 (CCITT modified Huffman run lengths, byte-aligned rows, no EOLs).
#[test]
fn tiffs_in_ccitt_rle_compression_are_read() {
    let inputs = vec![gs_input(
        "bilevel ccitt rle 100 dpi",
        a5(),
        1,
        &["-sDEVICE=tiffcrle", "-r100"],
    )];
    tiff_matrix("ccitt rle tiff matrix", inputs);
}

/// Where a source page's bars are on a fax page of `rows` rows at `yres` after scaling to
/// fit: the layout of a fax TIFF rendered from it, in inches of the fax page.
fn on_fax_page(src: &Layout, rows: u32, yres: f32) -> Layout {
    let page = FaxPage::blank(1728, rows, XRES as f32, yres);
    let p = Placement::new(src, &page, Turn::Upright);
    let inches = |r: [f64; 4]| Bar {
        x0: r[0] / XRES,
        y0: r[1] / yres as f64,
        x1: r[2] / XRES,
        y1: r[3] / yres as f64,
    };
    Layout {
        w: 1728.0 / XRES,
        h: rows as f64 / yres as f64,
        bars: src
            .bars
            .iter()
            .map(|b| inches(p.rect(b.x0, b.y0, b.x1, b.y1)))
            .collect(),
    }
}

/// Fax TIFFs as another fax machine or Ghostscript writes them (1728 wide, 204 dpi, a fax
/// resolution): at the same resolution the pages may be kept pixel for pixel, but every
/// page of the result is still as long as the page size asked for.
#[test]
fn fax_tiffs_come_out_at_the_requested_page_length() {
    let fax = |name, src: Layout, res: Resolution, rows: u32, device: &str| {
        let pdf = bars_pdf(1, src.w, src.h);
        let args = [
            device,
            &format!("-r204x{}", res.lpi()),
            &format!("-g1728x{rows}"),
            "-dPDFFitPage",
            "-dFIXEDMEDIA",
        ];
        TiffInput {
            name,
            data: gs_tiff(&pdf, &args),
            layout: on_fax_page(&src, rows, res.lpi() as f32),
            pages: 1,
            tol: 0.05,
        }
    };
    let inputs = vec![
        fax(
            "fax g4 letter fine",
            letter(),
            Resolution::Fine,
            2156,
            "-sDEVICE=tiffg4",
        ),
        fax(
            "fax g3 a4 normal",
            a4(),
            Resolution::Normal,
            1146,
            "-sDEVICE=tiffg3",
        ),
        fax(
            "fax g3-2d legal superfine",
            legal(),
            Resolution::Superfine,
            5488,
            "-sDEVICE=tiffg32d",
        ),
    ];
    tiff_matrix("fax tiff matrix", inputs);
}

#[test]
fn pdfs_of_every_page_shape_at_every_resolution_and_page_size_keep_the_whole_page() {
    let conv = Converter::new(ConvertConfig::default());
    let started = Instant::now();
    let shapes = [
        ("pdf letter", letter()),
        ("pdf a4", a4()),
        ("pdf legal", legal()),
        ("pdf a5", a5()),
        ("pdf landscape", Layout::edge_bars(11.0, 8.5, 0.5, 10.5)),
    ];
    let mut failures = Vec::new();
    for (name, layout) in &shapes {
        let want = Expect {
            name,
            kind: Kind::Pdf,
            pages: 3,
            layout: Some(layout.clone()),
            tol: 0.05,
        };
        failures.extend(run_matrix(&conv, &bars_pdf(3, layout.w, layout.h), &want));
    }
    eprintln!(
        "pdf matrix: {} shapes × 9 in {:.1}s",
        shapes.len(),
        started.elapsed().as_secs_f64()
    );
    fail_with("pdf matrix", failures);
}

/// The page checks above can fail: Kazoo's own PDF command (fixed letter geometry at
/// 204×196, no fit to page) cuts an A4 page, and the check says so.
#[test]
fn the_whole_page_check_catches_kazoos_cropped_a4() {
    let kazoo = Converter::new(ConvertConfig {
        convert_pdf_command: "gs -q -r204x196 -g1728x2156 -dNOPAUSE -dBATCH -dSAFER \
                              -sDEVICE=tiffg4 -sOutputFile=$TO -- $FROM"
            .into(),
        ..ConvertConfig::default()
    });
    let opts = FaxOptions {
        resolution: Resolution::Fine,
        page_size: PageSize::Letter,
        compression: Compression::G4,
        dither: Dither::Cluster,
    };
    let doc = kazoo.to_fax(&bars_pdf(1, 8.27, 11.69), &opts).unwrap();
    let page = &decode_fax_tiff(&doc.tiff).unwrap()[0];
    let err = check_page(page, &a4(), 0.05).expect_err("Kazoo's command crops A4");
    assert!(err.contains("bar 0"), "{err}");
    // faxd's own pipeline keeps it whole.
    let conv = Converter::new(ConvertConfig::default());
    let doc = conv.to_fax(&bars_pdf(1, 8.27, 11.69), &opts).unwrap();
    let page = &decode_fax_tiff(&doc.tiff).unwrap()[0];
    assert_eq!(check_page(page, &a4(), 0.05), Ok(Turn::Upright));
}
