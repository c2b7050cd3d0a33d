//! Test documents made on the fly for the conversion tests: text and photo PDFs written by
//! hand (base-14 fonts, ruled tables, an image), images in every accepted format, TIFFs.
#![allow(dead_code)]

use std::path::PathBuf;

/// Writes a PDF from page content streams (`w`×`h` points), with Helvetica as /F1 and,
/// if given, a grey image as /Im1.
pub fn pdf(pages: &[String], w: f64, h: f64, image: Option<(u32, u32, &[u8])>) -> Vec<u8> {
    let mut objs: Vec<Vec<u8>> = Vec::new();
    objs.push(b"<< /Type /Catalog /Pages 2 0 R >>".to_vec());
    let n = pages.len();
    let first_page = 5; // 1 catalog, 2 pages, 3 font, 4 image (or null)
    let kids: Vec<String> = (0..n)
        .map(|i| format!("{} 0 R", first_page + 2 * i))
        .collect();
    objs.push(format!("<< /Type /Pages /Count {n} /Kids [{}] >>", kids.join(" ")).into_bytes());
    objs.push(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec());
    match image {
        Some((iw, ih, px)) => {
            let mut o = format!(
                "<< /Type /XObject /Subtype /Image /Width {iw} /Height {ih} /ColorSpace /DeviceGray /BitsPerComponent 8 /Length {} >>\nstream\n",
                px.len()
            )
            .into_bytes();
            o.extend_from_slice(px);
            o.extend_from_slice(b"\nendstream");
            objs.push(o);
        }
        None => objs.push(b"null".to_vec()),
    }
    for (i, content) in pages.iter().enumerate() {
        let cid = first_page + 2 * i + 1;
        objs.push(format!("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w} {h}] /Contents {cid} 0 R /Resources << /Font << /F1 3 0 R >> /XObject << /Im1 4 0 R >> >> >>").into_bytes());
        let mut s = format!("<< /Length {} >>\nstream\n", content.len()).into_bytes();
        s.extend_from_slice(content.as_bytes());
        s.extend_from_slice(b"\nendstream");
        objs.push(s);
    }
    assemble_pdf(&objs)
}

/// A PDF file of numbered objects (object 1 the catalog), with a classic xref table.
pub fn assemble_pdf(objs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offs = Vec::new();
    for (i, o) in objs.iter().enumerate() {
        offs.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(o);
        out.extend_from_slice(b"\nendobj\n");
    }
    let x = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objs.len() + 1).as_bytes());
    for o in offs {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{x}\n%%EOF\n",
            objs.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// A text page: a black header bar at the very top, a title, body text at 10 and 7 pt, a
/// ruled table and a footer line at the very bottom.
pub fn text_page(w: f64, h: f64, n: usize) -> String {
    let mut s = String::new();
    s.push_str(&format!("0 g 0 {} {w} 18 re f\n", h - 18.0));
    s.push_str(&format!(
        "BT /F1 20 Tf 54 {} Td (Invoice {n}: fax test page) Tj ET\n",
        h - 60.0
    ));
    for i in 0..30 {
        let size = if i % 5 == 4 { 7 } else { 10 };
        s.push_str(&format!(
            "BT /F1 {size} Tf 54 {} Td (Line {i}: The quick brown fox jumps over the lazy dog 0123456789.) Tj ET\n",
            h - 90.0 - i as f64 * 14.0
        ));
    }
    for r in 0..6 {
        let y = h - 540.0 - r as f64 * 20.0;
        s.push_str(&format!("0.8 w 54 {y} m {} {y} l S\n", w - 54.0));
    }
    s.push_str(&format!("0 g 0 0 {w} 12 re f\n"));
    s
}

/// A photo-like grey image: smooth gradients, rings and a face-sized dark disc.
pub fn photo_pixels(w: u32, h: u32) -> Vec<u8> {
    let mut px = Vec::with_capacity((w * h) as usize);
    for y in 0..h {
        for x in 0..w {
            let fx = x as f64 / w as f64;
            let fy = y as f64 / h as f64;
            let d = ((fx - 0.5).powi(2) + (fy - 0.4).powi(2)).sqrt();
            let ring = (d * 40.0).sin() * 0.15;
            let disc = if d < 0.15 { -0.5 } else { 0.0 };
            let v = (0.25 + 0.6 * fx * (1.0 - fy) + ring + disc).clamp(0.0, 1.0);
            px.push((v * 255.0) as u8);
        }
    }
    px
}

pub fn photo_pdf() -> Vec<u8> {
    let (iw, ih) = (400, 520);
    let px = photo_pixels(iw, ih);
    let content = "q 540 0 0 702 36 45 cm /Im1 Do Q\n".to_string();
    pdf(&[content], 612.0, 792.0, Some((iw, ih, &px)))
}

pub fn text_pdf(pages: usize, w: f64, h: f64) -> Vec<u8> {
    let p: Vec<String> = (1..=pages).map(|n| text_page(w, h, n)).collect();
    pdf(&p, w, h, None)
}

/// A screenshot-like RGB image with text-like bars and a bar chart.
pub fn screenshot(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let bar = (y / 12) % 3 == 0 && x > 40 && x < w - 40 && (x / 9) % 4 != 0;
        let chart =
            y > h / 2 && x > 100 && x < w - 100 && ((x / 60) % 2 == 0) && y > h / 2 + (x % 200);
        if bar {
            image::Rgb([20, 20, 20])
        } else if chart {
            image::Rgb([200, 40, 40])
        } else {
            image::Rgb([250, 250, 250])
        }
    })
}

pub fn encode(img: &image::DynamicImage, fmt: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, fmt).expect("encode test image");
    out.into_inner()
}

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// Where tests keep artefacts a human may look at (`target/test-artefacts/convert`).
pub fn artefacts() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artefacts/convert");
    std::fs::create_dir_all(&p).expect("artefact dir");
    p
}
