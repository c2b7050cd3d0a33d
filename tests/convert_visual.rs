//! The visual check: one fine page of a text PDF and one of a photo are converted, rendered
//! back to PNG and compared with checked-in references (tests/fixtures/visual/) within a
//! tolerance. The PNGs are kept under target/test-artefacts/convert/visual/ for a human to
//! look at. `FAXD_BLESS=1` rewrites the references after a deliberate change.

mod convert_support;

use convert_support as s;
use faxd::convert::preview::{self, PreviewSize};
use faxd::convert::raster::Gray;
use faxd::convert::{
    Compression, ConvertConfig, Converter, Dither, FaxOptions, PageSize, Resolution,
    decode_fax_tiff,
};

/// Mean absolute grey difference (0..255) of two same-sized images.
fn mean_diff(a: &Gray, b: &image::GrayImage) -> f64 {
    assert_eq!(
        (a.width, a.height),
        (b.width(), b.height()),
        "preview size changed"
    );
    let sum: u64 = a
        .pixels
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| (*x as i32 - *y as i32).unsigned_abs() as u64)
        .sum();
    sum as f64 / a.pixels.len() as f64
}

fn check(name: &str, input: &[u8], width: u32, tolerance: f64) {
    let conv = Converter::new(ConvertConfig::default());
    let opts = FaxOptions {
        resolution: Resolution::Fine,
        page_size: PageSize::Letter,
        compression: Compression::G4,
        dither: Dither::Cluster,
    };
    let doc = conv.to_fax(input, &opts).expect("converts");
    let page = &decode_fax_tiff(&doc.tiff).expect("decodes")[0];
    let dir = s::artefacts().join("visual");
    std::fs::create_dir_all(&dir).unwrap();
    let full = preview::render(page, PreviewSize::Full).unwrap();
    std::fs::write(dir.join(format!("{name}-full.png")), &full.png).unwrap();
    // Compare scaled down: text lines and halftone tones, not single dots.
    let small = preview::to_gray(page, PreviewSize::Width(width));
    let small_png = preview::encode_png(&small).unwrap();
    std::fs::write(dir.join(format!("{name}-{width}.png")), &small_png).unwrap();
    let reference = s::fixture(&format!("visual/{name}-{width}.png"));
    if std::env::var("FAXD_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&reference, &small_png).unwrap();
    }
    let want = image::load_from_memory(&std::fs::read(&reference).expect("reference PNG"))
        .unwrap()
        .to_luma8();
    let d = mean_diff(&small, &want);
    eprintln!("{name}: mean grey difference {d:.2} (tolerance {tolerance})");
    assert!(
        d <= tolerance,
        "{name}: differs from the reference by {d:.2}"
    );
}

#[test]
fn a_fine_text_page_matches_its_reference() {
    check("text", &s::text_pdf(1, 612.0, 792.0), 432, 4.0);
}

#[test]
fn a_fine_photo_page_matches_its_reference() {
    check("photo", &s::photo_pdf(), 216, 6.0);
}
