//! The hostile corpus (tests/fixtures/hostile/ plus files made here): each input ends with a
//! typed error that says what is wrong, within its limits, leaving no temporary files behind.

mod convert_support;

use std::time::{Duration, Instant};

use convert_support as s;
use faxd::convert::{ConvertConfig, ConvertError, Converter, FaxOptions};

fn zip_bomb() -> Vec<u8> {
    // A docx-shaped zip whose word/document.xml inflates to 600 MB of spaces.
    use std::io::Write;
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..600 {
        z.write_all(&chunk).unwrap();
    }
    let data = z.finish().unwrap();
    let mut out = Vec::new();
    let mut central = Vec::new();
    let mut count = 0u16;
    for (name, body, raw, method) in [
        ("[Content_Types].xml", b"<Types/>".to_vec(), 8u32, 0u16),
        ("word/document.xml", data, 600u32 << 20, 8u16),
    ] {
        let off = out.len() as u32;
        let crc = 0u32;
        let mut h = Vec::new();
        h.extend_from_slice(&method.to_le_bytes());
        h.extend_from_slice(&[0, 0, 0, 0]);
        h.extend_from_slice(&crc.to_le_bytes());
        h.extend_from_slice(&(body.len() as u32).to_le_bytes());
        h.extend_from_slice(&raw.to_le_bytes());
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&[0, 0]);
        out.extend_from_slice(b"PK\x03\x04\x14\x00\x00\x00");
        out.extend_from_slice(&h);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&body);
        central.extend_from_slice(b"PK\x01\x02\x14\x00\x14\x00\x00\x00");
        central.extend_from_slice(&h);
        central.extend_from_slice(&[0; 10]);
        central.extend_from_slice(&off.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
        count += 1;
    }
    let cd_at = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_at.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

fn big_png() -> Vec<u8> {
    // A valid PNG header claiming 50 000 × 50 000 pixels, with a tiny IDAT.
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&50_000u32.to_be_bytes());
    ihdr.extend_from_slice(&50_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[1, 0, 0, 0, 0]);
    for (kind, body) in [
        (&b"IHDR"[..], ihdr),
        (&b"IDAT"[..], vec![0x78, 0x9c, 0x03, 0, 0, 0, 0, 1]),
        (&b"IEND"[..], vec![]),
    ] {
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(&body);
        out.extend_from_slice(kind);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    out
}

fn many_pages(n: usize) -> Vec<u8> {
    let content = "BT /F1 24 Tf 72 700 Td (page) Tj ET".to_string();
    s::pdf(&vec![content; n], 612.0, 792.0, None)
}

fn lying_tiff() -> Vec<u8> {
    // IFD offset far past the end, then a second file whose strip lies outside the file.
    let mut t = b"II*\0".to_vec();
    t.extend_from_slice(&0x00FF_FFF0u32.to_le_bytes());
    t
}

fn strip_outside_tiff() -> Vec<u8> {
    let mut t = b"II*\0\x08\0\0\0".to_vec();
    let entries: [(u16, u16, u32, u32); 6] = [
        (256, 4, 1, 1728),
        (257, 4, 1, 2000),
        (258, 3, 1, 1),
        (259, 3, 1, 4),
        (273, 4, 1, 9_999_999),
        (279, 4, 1, 50_000),
    ];
    t.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, ty, c, v) in entries {
        t.extend_from_slice(&tag.to_le_bytes());
        t.extend_from_slice(&ty.to_le_bytes());
        t.extend_from_slice(&c.to_le_bytes());
        t.extend_from_slice(&v.to_le_bytes());
    }
    t.extend_from_slice(&[0; 4]);
    t
}

#[test]
fn every_hostile_input_ends_in_a_typed_error_within_its_limits_leaving_nothing_behind() {
    let work = tempfile::tempdir().unwrap();
    let cfg = ConvertConfig {
        work_dir: work.path().display().to_string(),
        timeout_secs: 30,
        ..ConvertConfig::default()
    };
    let conv = Converter::new(cfg);
    let opts: FaxOptions = conv.config().options();
    let text = s::text_pdf(3, 612.0, 792.0);
    let mut truncated = text[..text.len() / 3].to_vec();
    truncated.extend_from_slice(b"\n");
    let mut garbage_pdf = b"%PDF-1.4\n".to_vec();
    garbage_pdf.extend((0..20_000u32).map(|i| (i.wrapping_mul(2654435761) >> 7) as u8));
    let mut elf = b"\x7fELF\x02\x01\x01\0".to_vec();
    elf.extend_from_slice(&[0u8; 200]);
    let huge_page = s::pdf(
        &["0 g 0 0 14400 14400 re f".to_string()],
        14400.0,
        14400.0,
        None,
    );
    let ps = b"%!PS-Adobe-3.0\n(/etc/passwd) (r) file 100 string readstring pop print\nshowpage\n"
        .to_vec();
    type Check = fn(&ConvertError) -> bool;
    let cases: Vec<(&str, Vec<u8>, Check, Duration)> = vec![
        (
            "zero-byte file",
            vec![],
            |e| matches!(e, ConvertError::Empty),
            Duration::from_secs(1),
        ),
        (
            "truncated PDF",
            truncated,
            |e| matches!(e, ConvertError::Malformed { .. }),
            Duration::from_secs(10),
        ),
        (
            "malformed PDF",
            garbage_pdf,
            |e| matches!(e, ConvertError::Malformed { .. }),
            Duration::from_secs(10),
        ),
        (
            "10 000-page PDF",
            many_pages(10_000),
            |e| {
                matches!(
                    e,
                    ConvertError::TooManyPages {
                        pages: 10_000,
                        limit: 350
                    }
                )
            },
            Duration::from_secs(10),
        ),
        (
            "200×200 inch page",
            huge_page,
            |e| matches!(e, ConvertError::PageTooLarge { .. }),
            Duration::from_secs(10),
        ),
        (
            "50 000 × 50 000 PNG",
            big_png(),
            |e| matches!(e, ConvertError::TooManyPixels { width: 50_000, .. }),
            Duration::from_secs(1),
        ),
        (
            "TIFF with an IFD beyond the end",
            lying_tiff(),
            |e| matches!(e, ConvertError::Malformed { .. }),
            Duration::from_secs(1),
        ),
        (
            "TIFF with a strip outside the file",
            strip_outside_tiff(),
            |e| matches!(e, ConvertError::Malformed { .. }),
            Duration::from_secs(1),
        ),
        (
            "executable renamed .pdf",
            elf,
            |e| matches!(e, ConvertError::Unsupported(_)),
            Duration::from_secs(1),
        ),
        (
            "PostScript with file operators",
            ps,
            |e| matches!(e, ConvertError::Refused(_)),
            Duration::from_secs(1),
        ),
        (
            "password-protected PDF",
            std::fs::read(s::fixture("hostile/password.pdf")).unwrap(),
            |e| matches!(e, ConvertError::Encrypted),
            Duration::from_secs(10),
        ),
        (
            "docx zip bomb",
            zip_bomb(),
            |e| matches!(e, ConvertError::ZipBomb { .. }),
            Duration::from_secs(2),
        ),
    ];
    let dir = s::artefacts().join("hostile");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, data, check, limit) in cases {
        // Keep the generated corpus under target/ for inspection.
        let file = dir.join(format!("{}.bin", name.replace([' ', '×', '.'], "_")));
        if data.len() < 64 * 1024 && name != "password-protected PDF" {
            let _ = std::fs::write(&file, &data);
        }
        let started = Instant::now();
        let err = conv
            .to_fax(&data, &opts)
            .err()
            .unwrap_or_else(|| panic!("{name}: accepted"));
        let took = started.elapsed();
        eprintln!("{name}: {err} ({took:?})");
        assert!(check(&err), "{name}: wrong error: {err:?}");
        assert!(!err.to_string().is_empty());
        assert!(took < limit, "{name}: took {took:?}");
        // Only the warm Ghostscript's own root directory may remain, with no job in it.
        let left: Vec<_> = std::fs::read_dir(work.path())
            .unwrap()
            .flatten()
            .filter(|e| {
                let warm_root = e.file_name().to_string_lossy().starts_with("faxd-gs-");
                !warm_root || std::fs::read_dir(e.path()).unwrap().next().is_some()
            })
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "{name}: left {left:?}");
    }
    // Dropping the converter stops the warm Ghostscript and removes its directory.
    drop(conv);
    let left: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "after the converter: left {left:?}");
}
