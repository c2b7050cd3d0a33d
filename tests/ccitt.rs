//! faxd's CCITT codec (`convert::ccitt`): pixel-exact round trips of many kinds of page in MH,
//! MR and MMR; decoding of what other encoders write (Ghostscript's tiffg4/tiffg3/tiffg32d,
//! libtiff's `tiffcp` in every G3/G4 flavour and both bit orders) compared pixel for pixel
//! with the bitmap they were made from; libtiff reading what faxd writes; and corrupt data,
//! which must give a `DecodeError`, never a panic or a hang.

mod convert_support;

use std::path::Path;
use std::process::Command;

use faxd::convert::ccitt::{self, Coding, FaxPage};
use faxd::convert::{decode_fax_tiff, validate_fax_tiff};

const CODINGS: [Coding; 3] = [Coding::Mh, Coding::Mr, Coding::Mmr];

/// A small deterministic generator (xorshift), so every run tests the same pages.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn page_from(width: u32, height: u32, yres: f32, black: impl Fn(u32, u32) -> bool) -> FaxPage {
    let mut p = FaxPage::blank(width, height, 204.0, yres);
    for y in 0..height {
        for x in 0..width {
            if black(x, y) {
                p.set_black(x, y);
            }
        }
    }
    p
}

/// Lines of "words" of random glyph-like blobs, like a page of text.
fn text_like(width: u32, height: u32, seed: u64) -> FaxPage {
    let mut rng = Rng(seed);
    let mut p = FaxPage::blank(width, height, 204.0, 196.0);
    let mut y = 20;
    while y + 20 < height {
        let mut x = 30 + rng.below(20) as u32;
        while x + 40 < width {
            let word = 3 + rng.below(8) as u32;
            for _ in 0..word {
                let (gw, gh) = (4 + rng.below(9) as u32, 10 + rng.below(8) as u32);
                for gy in 0..gh {
                    for gx in 0..gw {
                        if rng.below(4) != 0 && x + gx < width {
                            p.set_black(x + gx, y + gy);
                        }
                    }
                }
                x += gw + 2;
            }
            x += 8 + rng.below(10) as u32;
        }
        y += 24 + rng.below(6) as u32;
    }
    p
}

fn random_page(width: u32, height: u32, seed: u64) -> FaxPage {
    let mut rng = Rng(seed);
    let mut p = FaxPage::blank(width, height, 204.0, 98.0);
    for y in 0..height {
        for x in 0..width {
            if rng.below(3) == 0 {
                p.set_black(x, y);
            }
        }
    }
    p
}

/// Pixels that differ between two pages of the same size (padding bits ignored).
fn differing_pixels(a: &FaxPage, b: &FaxPage) -> u64 {
    assert_eq!((a.width, a.height), (b.width, b.height), "page size");
    let mut n = 0;
    for y in 0..a.height {
        for x in 0..a.width {
            n += (a.is_black(x, y) != b.is_black(x, y)) as u64;
        }
    }
    n
}

fn round_trip(p: &FaxPage, what: &str) {
    for c in CODINGS {
        let data = ccitt::encode(p, c);
        ccitt::check(&data, c, p.width, p.height)
            .unwrap_or_else(|e| panic!("{what} {c:?}: check: {e}"));
        let back = ccitt::decode(&data, c, p.width, p.height, p.xres, p.yres)
            .unwrap_or_else(|e| panic!("{what} {c:?}: decode: {e}"));
        assert_eq!(differing_pixels(&back, p), 0, "{what} {c:?}");
    }
}

#[test]
fn structured_and_random_pages_round_trip_pixel_exact_in_every_coding() {
    for width in [1, 7, 8, 13, 63, 64, 65, 1727, 1728, 1731, 2432] {
        let h = 24;
        round_trip(
            &FaxPage::blank(width, h, 204.0, 196.0),
            &format!("white {width}"),
        );
        round_trip(
            &page_from(width, h, 196.0, |_, _| true),
            &format!("black {width}"),
        );
        round_trip(
            &page_from(width, h, 196.0, |x, y| (x + y) % 2 == 0),
            &format!("checkerboard {width}"),
        );
        round_trip(
            &page_from(width, h, 98.0, |x, _| x % 2 == 1),
            &format!("stripes {width}"),
        );
        round_trip(
            &page_from(width, h, 98.0, |x, y| x == y || x + 1 == width || x == 0),
            &format!("lines {width}"),
        );
        round_trip(
            &random_page(width, h, width as u64 + 1),
            &format!("random {width}"),
        );
    }
    for (width, seed) in [(1728, 1), (2432, 2), (1731, 3)] {
        round_trip(&text_like(width, 400, seed), &format!("text-like {width}"));
    }
    // Runs longer than the longest make-up code (2560) in one row.
    round_trip(
        &page_from(6000, 6, 196.0, |x, y| y % 2 == 0 && x > 10),
        "6000 wide",
    );
    round_trip(
        &page_from(6000, 6, 196.0, |x, y| {
            y % 3 == 0 && !(2600..2700).contains(&x)
        }),
        "6000 wide, white gap",
    );
}

#[test]
fn output_sizes_are_those_of_a_fax_coder() {
    // A blank fine A4 page: G4 codes a blank row in one bit.
    let blank = FaxPage::blank(1728, 2292, 204.0, 196.0);
    assert!(ccitt::encode(&blank, Coding::Mmr).len() < 300);
    // 2-D coding of smooth shapes (letters, rules) is smaller than 1-D.
    let text = page_from(1728, 600, 196.0, |x, y| {
        let (gx, gy) = (x % 24, y % 40);
        gy < 30 && (gx < 3 || gy < 3 || gx + gy / 2 == 20)
    });
    let mh = ccitt::encode(&text, Coding::Mh).len();
    let mr = ccitt::encode(&text, Coding::Mr).len();
    let mmr = ccitt::encode(&text, Coding::Mmr).len();
    assert!(mmr < mr && mr < mh, "mh {mh} mr {mr} mmr {mmr}");
}

// ---------------------------------------------------------------------------------------------
// Data from other encoders.

fn tool(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Parses a raw PBM (P4), possibly several concatenated.
fn read_pbm(data: &[u8]) -> Vec<FaxPage> {
    let mut pages = Vec::new();
    let mut i = 0;
    while i + 2 < data.len() && &data[i..i + 2] == b"P4" {
        i += 2;
        let mut fields = Vec::new();
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
        i += 1;
        let mut p = FaxPage::blank(fields[0], fields[1], 204.0, 196.0);
        let n = p.data.len();
        p.data.copy_from_slice(&data[i..i + n]);
        i += n;
        pages.push(p);
    }
    pages
}

fn write_pbm(path: &Path, p: &FaxPage) {
    let mut out = format!("P4\n{} {}\n", p.width, p.height).into_bytes();
    out.extend_from_slice(&p.data);
    std::fs::write(path, out).unwrap();
}

fn gs(pdf: &Path, device: &str, out: &Path, height: u32) {
    tool(Command::new("gs").args([
        "-q",
        "-dSAFER",
        "-dBATCH",
        "-dNOPAUSE",
        &format!("-sDEVICE={device}"),
        "-r204x196",
        &format!("-g1728x{height}"),
        "-dPDFFitPage",
        "-dFIXEDMEDIA",
        &format!("-sOutputFile={}", out.display()),
        &pdf.display().to_string(),
    ]));
}

#[test]
fn ghostscript_g3_and_g4_tiffs_decode_to_the_bitmap_gs_renders() {
    let dir = tempfile::tempdir().unwrap();
    let pdf = dir.path().join("in.pdf");
    // Two text pages and a photo page (halftoned by gs: many short runs).
    let mut pages = vec![
        convert_support::text_page(612.0, 792.0, 1),
        convert_support::text_page(612.0, 792.0, 2),
    ];
    pages.push("q 540 0 0 702 36 45 cm /Im1 Do Q".to_string());
    let photo = convert_support::photo_pixels(200, 260);
    std::fs::write(
        &pdf,
        convert_support::pdf(&pages, 612.0, 792.0, Some((200, 260, &photo))),
    )
    .unwrap();
    let pbm = dir.path().join("ref.pbm");
    gs(&pdf, "pbmraw", &pbm, 2156);
    let want = read_pbm(&std::fs::read(&pbm).unwrap());
    assert_eq!(want.len(), 3);
    assert!(want[2].ink() > 0.1, "the photo page is halftoned");
    for (device, compression) in [("tiffg4", "g4"), ("tiffg3", "g3-1d"), ("tiffg32d", "g3-2d")] {
        let tif = dir.path().join(format!("{device}.tif"));
        gs(&pdf, device, &tif, 2156);
        let file = std::fs::read(&tif).unwrap();
        let info =
            validate_fax_tiff(&file, Some(196.0), 10).unwrap_or_else(|e| panic!("{device}: {e}"));
        assert_eq!(info.compression, compression);
        let got = decode_fax_tiff(&file).unwrap_or_else(|e| panic!("{device}: {e}"));
        assert_eq!(got.len(), 3, "{device}");
        for (n, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(differing_pixels(g, w), 0, "{device} page {}", n + 1);
        }
    }
}

#[test]
fn libtiff_g3_and_g4_in_both_bit_orders_decode_to_the_original_bitmap() {
    let dir = tempfile::tempdir().unwrap();
    let pages = [
        ("text", text_like(1728, 700, 5)),
        ("random", random_page(1731, 120, 6)),
        ("wide", text_like(2432, 300, 7)),
    ];
    for (name, page) in &pages {
        let pbm = dir.path().join(format!("{name}.pbm"));
        write_pbm(&pbm, page);
        let raw = dir.path().join(format!("{name}.tif"));
        tool(Command::new("ppm2tiff").arg(&pbm).arg(&raw));
        for opts in ["g4", "g3", "g3:1d:fill", "g3:2d", "g3:2d:fill"] {
            for order in ["msb2lsb", "lsb2msb"] {
                let tif = dir.path().join(format!("{name}-{opts}-{order}.tif"));
                tool(
                    Command::new("tiffcp")
                        .args(["-c", opts, "-f", order, "-r", "64"])
                        .arg(&raw)
                        .arg(&tif),
                );
                let got = decode_fax_tiff(&std::fs::read(&tif).unwrap())
                    .unwrap_or_else(|e| panic!("{name} {opts} {order}: {e}"));
                assert_eq!(got.len(), 1);
                assert_eq!(differing_pixels(&got[0], page), 0, "{name} {opts} {order}");
            }
        }
    }
}

#[test]
fn libtiff_reads_what_faxd_writes() {
    // libtiff decodes faxd's file and re-encodes it in another coding; faxd's decoder (checked
    // against libtiff's encoder above) must then see the original pixels.
    let dir = tempfile::tempdir().unwrap();
    let page = text_like(1728, 500, 11);
    let mut normal = random_page(1728, 40, 12);
    normal.yres = 98.0;
    for coding in CODINGS {
        for (name, p) in [("text", &page), ("random", &normal)] {
            let ours = dir.path().join(format!("{name}-{coding:?}.tif"));
            std::fs::write(
                &ours,
                faxd::convert::tiff_f::write_fax_tiff(std::slice::from_ref(p), coding),
            )
            .unwrap();
            for to in ["g4", "g3:2d"] {
                let theirs = dir.path().join(format!("{name}-{coding:?}-{to}.tif"));
                tool(
                    Command::new("tiffcp")
                        .args(["-c", to])
                        .arg(&ours)
                        .arg(&theirs),
                );
                let got = decode_fax_tiff(&std::fs::read(&theirs).unwrap()).unwrap();
                assert_eq!(differing_pixels(&got[0], p), 0, "{name} {coding:?} -> {to}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Corrupt data.

#[test]
fn truncated_data_is_an_error_for_check_and_missing_rows_stay_white_in_decode() {
    let page = text_like(1728, 300, 21);
    for c in CODINGS {
        let data = ccitt::encode(&page, c);
        for cut in [1, data.len() / 3, data.len() / 2, data.len() * 9 / 10] {
            let err =
                ccitt::check(&data[..cut], c, 1728, 300).expect_err(&format!("{c:?} cut at {cut}"));
            assert!(err.row < 300, "{c:?}: {err}");
            // decode never panics (it leaves rows missing at the end white).
            if let Ok(p) = ccitt::decode(&data[..cut], c, 1728, 300, 204.0, 196.0) {
                assert_eq!(p.height, 300);
            }
        }
        // Lying height: more rows declared than coded.
        let err = ccitt::check(&data, c, 1728, 301).unwrap_err();
        assert_eq!(err.row, 300, "{c:?}");
        assert!(
            err.to_string().contains("ends before the last row"),
            "{err}"
        );
        let p = ccitt::decode(&data, c, 1728, 301, 204.0, 196.0).unwrap();
        assert_eq!(&p.data[..page.data.len()], &page.data[..]);
        assert!(p.row(300).iter().all(|&b| b == 0));
    }
}

#[test]
fn rows_of_the_wrong_length_are_errors() {
    let page = page_from(1728, 20, 196.0, |x, y| (x / 50 + y) % 3 == 0);
    for c in CODINGS {
        let data = ccitt::encode(&page, c);
        // Declared narrower than coded: a run goes past the end of the row.
        assert!(ccitt::check(&data, c, 1690, 20).is_err(), "{c:?}");
        // Declared wider: the row ends early (MH/MR see the next EOL inside the row).
        assert!(ccitt::check(&data, c, 1760, 20).is_err(), "{c:?}");
    }
    // An EOL in the middle of a G4 row.
    let mut w = BitSink::default();
    w.put(0b001, 3); // horizontal
    w.put(0b10011, 5); // white 8
    w.put(0b000011, 6); // …then an EOL where the black run should be
    w.put(0b000000000001, 12);
    let e = ccitt::check(&w.bytes(), Coding::Mmr, 1728, 1).unwrap_err();
    assert!(e.to_string().contains("EOL"), "{e}");
    // An MH row of 8 white pixels on a 1728-pixel page, then the next EOL.
    let mut w = BitSink::default();
    w.put(1, 12);
    w.put(0b10011, 5); // white 8
    w.put(0b010, 3); // black 1
    w.put(1, 12);
    let e = ccitt::check(&w.bytes(), Coding::Mh, 1728, 2).unwrap_err();
    assert!(e.to_string().contains("row too short"), "{e}");
}

#[derive(Default)]
struct BitSink {
    bits: Vec<bool>,
}

impl BitSink {
    fn put(&mut self, code: u32, len: u32) {
        for i in (0..len).rev() {
            self.bits.push(code >> i & 1 == 1);
        }
    }
    fn bytes(&self) -> Vec<u8> {
        self.bits
            .chunks(8)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0u8, |b, (i, &on)| b | ((on as u8) << (7 - i)))
            })
            .collect()
    }
}

#[test]
fn random_bytes_are_errors() {
    let mut rng = Rng(0x5eed);
    for c in CODINGS {
        for len in [0usize, 1, 3, 100, 5000] {
            let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            assert!(
                ccitt::check(&junk, c, 1728, 50).is_err(),
                "{c:?} {len} random bytes"
            );
        }
    }
}

/// Mutated valid streams (bit flips, overwritten, inserted and deleted bytes) never panic or
/// hang, and most of them are reported as invalid.
#[test]
fn fuzzed_streams_never_panic() {
    let mut rng = Rng(42);
    let pages = [text_like(1728, 120, 31), random_page(1731, 12, 32)];
    for c in CODINGS {
        let mut errors = 0;
        let mut total = 0;
        for page in &pages {
            let data = ccitt::encode(page, c);
            for _ in 0..300 {
                let mut m = data.clone();
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(m.len() as u64) as usize;
                    match rng.below(4) {
                        0 => m[i] ^= 1 << rng.below(8),
                        1 => m[i] = rng.next() as u8,
                        2 => m.insert(i, rng.next() as u8),
                        _ => {
                            m.remove(i);
                        }
                    }
                }
                total += 1;
                let checked = ccitt::check(&m, c, page.width, page.height);
                let decoded = ccitt::decode(&m, c, page.width, page.height, 204.0, 196.0);
                if let Ok(p) = &decoded {
                    assert_eq!((p.width, p.height), (page.width, page.height));
                }
                if checked.is_err() {
                    errors += 1;
                } else {
                    // check accepting means every row decodes.
                    assert!(decoded.is_ok(), "{c:?}: check passed, decode failed");
                }
            }
        }
        assert!(
            errors * 2 > total,
            "{c:?}: only {errors} of {total} flagged"
        );
    }
}
