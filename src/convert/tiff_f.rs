//! Fax TIFF (TIFF Class F style) files: the writer faxd stores (1 bit, min-is-white, one strip
//! per page, exact resolution, page numbers), a bounds-checked IFD reader that survives lying
//! offsets and loops, the decoder to per-page bitmaps, output validation, and a page
//! similarity measure for comparing what was sent with what was received.

use super::ccitt::{self, Coding, FaxPage};
use super::error::ConvertError;

/// One image file directory, reduced to what faxd reads.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ifd {
    pub width: u32,
    pub height: u32,
    pub bits_per_sample: u32,
    pub samples: u32,
    pub compression: u32,
    pub photometric: u32,
    pub fill_order: u32,
    pub t4options: u32,
    pub rows_per_strip: u32,
    pub strip_offsets: Vec<u64>,
    pub strip_byte_counts: Vec<u64>,
    pub xres: Option<f64>,
    pub yres: Option<f64>,
    pub res_unit: u32,
}

impl Ifd {
    /// Resolution in dots per inch (fax defaults when absent).
    pub fn dpi(&self) -> (f32, f32) {
        let f = if self.res_unit == 3 { 2.54 } else { 1.0 };
        let x = self
            .xres
            .filter(|v| *v > 0.0)
            .map(|v| v * f)
            .unwrap_or(204.0);
        let y = self
            .yres
            .filter(|v| *v > 0.0)
            .map(|v| v * f)
            .unwrap_or(if self.height > 1500 { 196.0 } else { 98.0 });
        (x as f32, y as f32)
    }

    pub fn coding(&self) -> Option<Coding> {
        match self.compression {
            3 if self.t4options & 1 != 0 => Some(Coding::Mr),
            3 => Some(Coding::Mh),
            4 => Some(Coding::Mmr),
            _ => None,
        }
    }

    pub fn is_fax(&self) -> bool {
        self.bits_per_sample == 1 && self.samples == 1 && self.coding().is_some()
    }

    /// A bilevel page in TIFF compression 2 (CCITT RLE: MH rows, byte-aligned, no EOLs),
    /// read by faxd's decoder but never written.
    pub fn is_ccitt_rle(&self) -> bool {
        self.bits_per_sample == 1 && self.samples == 1 && self.compression == 2
    }

    /// Whether [`decode_page`] reads this page (any CCITT coding, RLE included).
    pub fn is_ccitt(&self) -> bool {
        self.is_fax() || self.is_ccitt_rle()
    }

    /// The strips' bytes, checked against the file, in MSB-first bit order.
    pub fn strips<'a>(
        &self,
        file: &'a [u8],
    ) -> Result<Vec<std::borrow::Cow<'a, [u8]>>, ConvertError> {
        if self.strip_offsets.len() != self.strip_byte_counts.len() || self.strip_offsets.is_empty()
        {
            return Err(ConvertError::malformed(
                "TIFF",
                "strip offsets and byte counts disagree",
            ));
        }
        let mut out = Vec::with_capacity(self.strip_offsets.len());
        for (&o, &n) in self.strip_offsets.iter().zip(&self.strip_byte_counts) {
            let end = o
                .checked_add(n)
                .filter(|&e| e <= file.len() as u64)
                .ok_or_else(|| {
                    ConvertError::malformed(
                        "TIFF",
                        format!("strip at {o}+{n} lies outside the {}-byte file", file.len()),
                    )
                })?;
            let bytes = &file[o as usize..end as usize];
            if self.fill_order == 2 {
                let mut v = bytes.to_vec();
                ccitt::reverse_bits(&mut v);
                out.push(std::borrow::Cow::Owned(v));
            } else {
                out.push(std::borrow::Cow::Borrowed(bytes));
            }
        }
        Ok(out)
    }

    /// Rows held by strip `i`.
    pub fn strip_rows(&self, i: usize) -> u32 {
        let rps = if self.rows_per_strip == 0 {
            self.height
        } else {
            self.rows_per_strip.min(self.height)
        };
        let start = (i as u64 * rps as u64).min(self.height as u64) as u32;
        rps.min(self.height - start)
    }
}

/// Parses the IFD chain of a TIFF: at most `max_pages` directories, each offset checked,
/// loops refused.
pub(crate) fn read_ifds(file: &[u8], max_pages: u32) -> Result<Vec<Ifd>, ConvertError> {
    let bad = |d: String| ConvertError::malformed("TIFF", d);
    if file.len() < 8 {
        return Err(bad("shorter than its header".into()));
    }
    let le = match &file[..4] {
        b"II*\0" => true,
        b"MM\0*" => false,
        _ => return Err(bad("no TIFF header".into())),
    };
    let u16at = |i: u64| -> Result<u32, ConvertError> {
        let i = i as usize;
        let b = file
            .get(i..i + 2)
            .ok_or_else(|| bad(format!("offset {i} beyond the end")))?;
        Ok(if le {
            u16::from_le_bytes([b[0], b[1]])
        } else {
            u16::from_be_bytes([b[0], b[1]])
        } as u32)
    };
    let u32at = |i: u64| -> Result<u64, ConvertError> {
        let i = i as usize;
        let b = file
            .get(i..i + 4)
            .ok_or_else(|| bad(format!("offset {i} beyond the end")))?;
        let a = [b[0], b[1], b[2], b[3]];
        Ok(if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        } as u64)
    };
    let mut next = u32at(4)?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    while next != 0 {
        if !seen.insert(next) {
            return Err(bad(format!("IFD chain loops back to offset {next}")));
        }
        if out.len() as u32 >= max_pages {
            return Err(ConvertError::TooManyPages {
                pages: out.len() as u64 + 1,
                limit: max_pages,
            });
        }
        let count = u16at(next)? as u64;
        let mut ifd = Ifd {
            bits_per_sample: 1,
            samples: 1,
            fill_order: 1,
            res_unit: 2,
            ..Ifd::default()
        };
        for e in 0..count {
            let at = next + 2 + e * 12;
            let tag = u16at(at)?;
            let typ = u16at(at + 2)?;
            let n = u32at(at + 4)?;
            let size = match typ {
                1 | 2 | 6 | 7 => 1u64,
                3 | 8 => 2,
                4 | 9 | 11 => 4,
                5 | 10 | 12 => 8,
                _ => continue,
            };
            let total = size
                .checked_mul(n)
                .ok_or_else(|| bad("tag value size overflows".into()))?;
            if total > file.len() as u64 {
                return Err(bad(format!(
                    "tag {tag} claims {n} values, more than the file holds"
                )));
            }
            let base = if total <= 4 { at + 8 } else { u32at(at + 8)? };
            let ints = |max: u64| -> Result<Vec<u64>, ConvertError> {
                (0..n.min(max))
                    .map(|k| match typ {
                        3 => u16at(base + k * 2).map(|v| v as u64),
                        4 => u32at(base + k * 4),
                        1 => file
                            .get((base + k) as usize)
                            .map(|v| *v as u64)
                            .ok_or_else(|| bad("value beyond the end".into())),
                        _ => Ok(0),
                    })
                    .collect()
            };
            let first = || -> Result<u32, ConvertError> {
                Ok(ints(1)?.first().copied().unwrap_or(0) as u32)
            };
            let rational = || -> Result<Option<f64>, ConvertError> {
                if typ != 5 {
                    return Ok(Some(first()? as f64));
                }
                let (a, b) = (u32at(base)?, u32at(base + 4)?);
                Ok(if b == 0 {
                    None
                } else {
                    Some(a as f64 / b as f64)
                })
            };
            match tag {
                256 => ifd.width = first()?,
                257 => ifd.height = first()?,
                258 => ifd.bits_per_sample = first()?,
                259 => ifd.compression = first()?,
                262 => ifd.photometric = first()?,
                266 => ifd.fill_order = first()?,
                273 => ifd.strip_offsets = ints(1 << 20)?,
                277 => ifd.samples = first()?,
                278 => ifd.rows_per_strip = first()?,
                279 => ifd.strip_byte_counts = ints(1 << 20)?,
                282 => ifd.xres = rational()?,
                283 => ifd.yres = rational()?,
                292 => ifd.t4options = first()?,
                296 => ifd.res_unit = first()?,
                _ => {}
            }
        }
        if ifd.width == 0 || ifd.height == 0 {
            return Err(bad(format!(
                "page {} has no width or height",
                out.len() + 1
            )));
        }
        out.push(ifd);
        next = u32at(next + 2 + count * 12)?;
    }
    if out.is_empty() {
        return Err(bad("no pages".into()));
    }
    Ok(out)
}

/// Decodes a fax TIFF (G3 1-D/2-D or G4, either bit order, any strip layout) into one 1-bit
/// bitmap per page, with the page's resolution. This is what a received page is compared with.
pub fn decode_fax_tiff(file: &[u8]) -> Result<Vec<FaxPage>, ConvertError> {
    decode_fax_tiff_limited(file, u32::MAX)
}

pub(crate) fn decode_fax_tiff_limited(
    file: &[u8],
    max_pages: u32,
) -> Result<Vec<FaxPage>, ConvertError> {
    let ifds = read_ifds(file, max_pages)?;
    ifds.iter()
        .enumerate()
        .map(|(i, ifd)| decode_page(file, ifd, i + 1))
        .collect()
}

pub(crate) fn decode_page(file: &[u8], ifd: &Ifd, n: usize) -> Result<FaxPage, ConvertError> {
    // `None`: CCITT RLE (compression 2).
    let coding = ifd.coding().filter(|_| ifd.is_fax());
    if !ifd.is_ccitt() {
        return Err(ConvertError::Unsupported(format!(
            "page {n} is not CCITT bilevel (compression {}, {} bits × {} samples)",
            ifd.compression, ifd.bits_per_sample, ifd.samples
        )));
    }
    // Fax pages are at most A3 at 400 dpi across and a few metres long.
    if ifd.width > 8192 || ifd.height > 32_768 {
        return Err(ConvertError::TooManyPixels {
            width: ifd.width as u64,
            height: ifd.height as u64,
            limit: 8192 * 32_768,
        });
    }
    let (xres, yres) = ifd.dpi();
    let strips = ifd.strips(file)?;
    let mut page = FaxPage::blank(ifd.width, ifd.height, xres, yres);
    let stride = page.stride();
    let mut row0 = 0usize;
    for (i, s) in strips.iter().enumerate() {
        let rows = ifd.strip_rows(i);
        if rows == 0 {
            break;
        }
        let part = match coding {
            Some(coding) => ccitt::decode(s, coding, ifd.width, rows, xres, yres),
            None => ccitt::decode_rle(s, ifd.width, rows, xres, yres),
        }
        .map_err(|e| ConvertError::malformed("fax TIFF", format!("page {n}: {e}")))?;
        page.data[row0 * stride..(row0 + rows as usize) * stride].copy_from_slice(&part.data);
        row0 += rows as usize;
    }
    if ifd.photometric == 1 {
        for b in &mut page.data {
            *b = !*b;
        }
        // Clear padding bits beyond the width.
        let pad = (stride * 8) as u32 - ifd.width;
        if pad > 0 {
            let mask = 0xFFu8 << pad;
            for y in 0..page.height as usize {
                page.data[y * stride + stride - 1] &= mask;
            }
        }
    }
    Ok(page)
}

/// Checks that every strip of a page decodes to its rows (no bitmap is built).
pub(crate) fn check_page(file: &[u8], ifd: &Ifd, n: usize) -> Result<(), ConvertError> {
    let coding = ifd
        .coding()
        .filter(|_| ifd.is_fax())
        .ok_or_else(|| ConvertError::Invalid(format!("page {n} is not CCITT 1-bit")))?;
    for (i, s) in ifd.strips(file)?.iter().enumerate() {
        let rows = ifd.strip_rows(i);
        if rows == 0 {
            break;
        }
        ccitt::check(s, coding, ifd.width, rows)
            .map_err(|e| ConvertError::malformed("fax TIFF", format!("page {n}: {e}")))?;
    }
    Ok(())
}

/// Writes pages as a fax TIFF: little-endian, 1 bit, min-is-white, FillOrder 1, one strip per
/// page, NewSubfileType page, PageNumber n/N, exact resolution in dpi, CleanFaxData.
pub fn write_fax_tiff(pages: &[FaxPage], coding: Coding) -> Vec<u8> {
    let encoded: Vec<EncodedPage> = pages
        .iter()
        .map(|p| EncodedPage::encode(p, coding))
        .collect();
    write_encoded_fax_tiff(&encoded, coding)
}

/// One page already CCITT-coded: what a fax TIFF strip holds, with its geometry. Lets a
/// multi-page document be coded page by page as it is rendered, without keeping the bitmaps.
#[derive(Clone, Debug)]
pub struct EncodedPage {
    pub width: u32,
    pub height: u32,
    pub xres: f32,
    pub yres: f32,
    pub data: Vec<u8>,
}

impl EncodedPage {
    pub fn encode(page: &FaxPage, coding: Coding) -> Self {
        EncodedPage {
            width: page.width,
            height: page.height,
            xres: page.xres,
            yres: page.yres,
            data: ccitt::encode(page, coding),
        }
    }
}

/// [`write_fax_tiff`] for pages coded with `coding` beforehand.
pub fn write_encoded_fax_tiff(pages: &[EncodedPage], coding: Coding) -> Vec<u8> {
    let mut out: Vec<u8> =
        Vec::with_capacity(8 + pages.iter().map(|p| p.data.len() + 256).sum::<usize>());
    out.extend_from_slice(b"II*\0\0\0\0\0");
    let mut link_at = 4usize;
    let total = pages.len() as u32;
    for (n, page) in pages.iter().enumerate() {
        let data = &page.data;
        let strip_at = out.len() as u32;
        out.extend_from_slice(data);
        if out.len() % 2 == 1 {
            out.push(0);
        }
        // Two rationals after the IFD.
        let mut entries: Vec<(u16, u16, u32, u32)> = vec![
            (254, 4, 1, 2),
            (256, 4, 1, page.width),
            (257, 4, 1, page.height),
            (258, 3, 1, 1),
            (259, 3, 1, if coding == Coding::Mmr { 4 } else { 3 }),
            (262, 3, 1, 0),
            (266, 3, 1, 1),
            (273, 4, 1, strip_at),
            (277, 3, 1, 1),
            (278, 4, 1, page.height),
            (279, 4, 1, data.len() as u32),
            (282, 5, 1, 0),
            (283, 5, 1, 0),
        ];
        match coding {
            Coding::Mmr => entries.push((293, 4, 1, 0)),
            Coding::Mh => entries.push((292, 4, 1, 4)),
            Coding::Mr => entries.push((292, 4, 1, 5)),
        }
        entries.push((296, 3, 1, 2));
        entries.push((297, 3, 2, (n as u32) | (total << 16)));
        entries.push((327, 3, 1, 0));
        entries.sort_by_key(|e| e.0);
        let ifd_at = out.len();
        let rational_at = (ifd_at + 2 + entries.len() * 12 + 4) as u32;
        out[link_at..link_at + 4].copy_from_slice(&(ifd_at as u32).to_le_bytes());
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        for (tag, typ, count, value) in &entries {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&typ.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            let v = match *tag {
                282 => rational_at,
                283 => rational_at + 8,
                _ => *value,
            };
            if *typ == 3 && *count == 1 {
                out.extend_from_slice(&(v as u16).to_le_bytes());
                out.extend_from_slice(&[0, 0]);
            } else {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        link_at = out.len();
        out.extend_from_slice(&[0, 0, 0, 0]);
        for r in [page.xres, page.yres] {
            out.extend_from_slice(&((r * 100.0).round() as u32).to_le_bytes());
            out.extend_from_slice(&100u32.to_le_bytes());
        }
    }
    out
}

/// What validation found in a fax TIFF.
#[derive(Clone, Debug, PartialEq)]
pub struct FaxTiffInfo {
    pub pages: u32,
    pub width: u32,
    /// Height of each page in rows.
    pub heights: Vec<u32>,
    pub xres: f32,
    pub yres: f32,
    /// "g4", "g3-1d" or "g3-2d".
    pub compression: &'static str,
    pub bytes: u64,
}

/// Reads what a fax TIFF declares (pages, width, resolution, coding) without decoding it:
/// the cheap check for a received fax before it is wrapped into a PDF.
pub fn inspect_fax_tiff(file: &[u8], max_pages: u32) -> Result<FaxTiffInfo, ConvertError> {
    let ifds = read_ifds(file, max_pages)?;
    if let Some((i, ifd)) = ifds.iter().enumerate().find(|(_, i)| !i.is_fax()) {
        return Err(ConvertError::Unsupported(format!(
            "page {} is not CCITT 1-bit (compression {})",
            i + 1,
            ifd.compression
        )));
    }
    let first = &ifds[0];
    let (xres, yres) = first.dpi();
    Ok(FaxTiffInfo {
        pages: ifds.len() as u32,
        width: first.width,
        heights: ifds.iter().map(|i| i.height).collect(),
        xres,
        yres,
        compression: match first.coding() {
            Some(Coding::Mmr) => "g4",
            Some(Coding::Mr) => "g3-2d",
            _ => "g3-1d",
        },
        bytes: file.len() as u64,
    })
}

/// Checks that `file` is a fax TIFF faxd can send: every page CCITT 1-bit, 1728 pixels wide,
/// at resolution `yres` (when given) × 204 dpi, decodable to the last row, 1..=`max_pages`
/// pages.
pub fn validate_fax_tiff(
    file: &[u8],
    yres: Option<f32>,
    max_pages: u32,
) -> Result<FaxTiffInfo, ConvertError> {
    let inv = ConvertError::Invalid;
    let ifds = read_ifds(file, max_pages).map_err(|e| inv(e.to_string()))?;
    let mut heights = Vec::with_capacity(ifds.len());
    let first = &ifds[0];
    for (i, ifd) in ifds.iter().enumerate() {
        let n = i + 1;
        if !ifd.is_fax() {
            return Err(inv(format!(
                "page {n} is not CCITT 1-bit (compression {})",
                ifd.compression
            )));
        }
        if ifd.width != 1728 {
            return Err(inv(format!(
                "page {n} is {} pixels wide, not 1728",
                ifd.width
            )));
        }
        let (x, y) = ifd.dpi();
        if (x - 204.0).abs() > 1.0 {
            return Err(inv(format!("page {n} has {x} dpi across, not 204")));
        }
        if let Some(want) = yres
            && (y - want).abs() > 1.0
        {
            return Err(inv(format!("page {n} has {y} lines per inch, not {want}")));
        }
        check_page(file, ifd, n).map_err(|e| inv(e.to_string()))?;
        heights.push(ifd.height);
    }
    let (xres, yres) = first.dpi();
    Ok(FaxTiffInfo {
        pages: ifds.len() as u32,
        width: first.width,
        heights,
        xres,
        yres,
        compression: match first.coding() {
            Some(Coding::Mmr) => "g4",
            Some(Coding::Mr) => "g3-2d",
            _ => "g3-1d",
        },
        bytes: file.len() as u64,
    })
}

/// How alike two pages look, 0..1: 1 − the share of differing pixels in 8×8 blocks, after
/// resampling `b` onto `a`'s grid (so pages of different heights or resolutions compare by
/// position on paper). Robust to the single-pixel noise a line adds.
pub fn similarity(a: &FaxPage, b: &FaxPage) -> f64 {
    const B: u32 = 8;
    let bw = a.width.div_ceil(B);
    let bh = a.height.div_ceil(B);
    let mut diff = 0.0f64;
    let mut cells = 0.0f64;
    for by in 0..bh {
        for bx in 0..bw {
            let (mut ka, mut kb, mut n) = (0u32, 0u32, 0u32);
            for y in by * B..((by + 1) * B).min(a.height) {
                let yb = ((y as f64 + 0.5) * b.height as f64 / a.height as f64) as u32;
                for x in bx * B..((bx + 1) * B).min(a.width) {
                    let xb = ((x as f64 + 0.5) * b.width as f64 / a.width as f64) as u32;
                    ka += a.is_black(x, y) as u32;
                    if xb < b.width && yb < b.height {
                        kb += b.is_black(xb, yb) as u32;
                    }
                    n += 1;
                }
            }
            if ka > 0 || kb > 0 {
                diff += (ka as f64 - kb as f64).abs() / n as f64;
                cells += 1.0;
            }
        }
    }
    if cells == 0.0 {
        1.0
    } else {
        1.0 - diff / cells
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(h: u32) -> FaxPage {
        let mut p = FaxPage::blank(1728, h, 204.0, 196.0);
        for y in 10..h - 10 {
            for x in (100 + y % 50)..(300 + y % 50) {
                p.set_black(x, y);
            }
        }
        p
    }

    #[test]
    fn written_tiffs_validate_and_decode_back() {
        let pages = vec![page(200), page(150)];
        for c in [Coding::Mmr, Coding::Mh, Coding::Mr] {
            let file = write_fax_tiff(&pages, c);
            let info = validate_fax_tiff(&file, Some(196.0), 10).unwrap();
            assert_eq!(info.pages, 2);
            assert_eq!(info.heights, vec![200, 150]);
            let back = decode_fax_tiff(&file).unwrap();
            assert_eq!(back, pages);
            assert!((similarity(&back[0], &pages[0]) - 1.0).abs() < 1e-9);
        }
        let file = write_fax_tiff(&pages, Coding::Mmr);
        assert!(validate_fax_tiff(&file, Some(98.0), 10).is_err());
        assert!(
            matches!(validate_fax_tiff(&file, None, 1), Err(ConvertError::Invalid(m)) if m.contains("too many pages"))
        );
    }

    #[test]
    fn lying_ifds_are_errors() {
        let mut file = write_fax_tiff(&[page(100)], Coding::Mmr);
        // Point the first IFD's next-link back at itself.
        let ifd = u32::from_le_bytes([file[4], file[5], file[6], file[7]]) as usize;
        let n = u16::from_le_bytes([file[ifd], file[ifd + 1]]) as usize;
        let link = ifd + 2 + n * 12;
        let ifd_bytes = (ifd as u32).to_le_bytes();
        file[link..link + 4].copy_from_slice(&ifd_bytes);
        assert!(
            matches!(decode_fax_tiff(&file), Err(ConvertError::Malformed { detail, .. }) if detail.contains("loops"))
        );
        let mut file = write_fax_tiff(&[page(100)], Coding::Mmr);
        file[4..8].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
        assert!(matches!(
            decode_fax_tiff(&file),
            Err(ConvertError::Malformed { .. })
        ));
    }

    #[test]
    fn similarity_tells_pages_apart() {
        let a = page(300);
        let mut b = FaxPage::blank(1728, 300, 204.0, 196.0);
        for y in 0..300 {
            for x in 1000..1300 {
                b.set_black(x, y);
            }
        }
        assert!(similarity(&a, &b) < 0.2);
        // The same page at half the vertical resolution still matches.
        let mut half = FaxPage::blank(1728, 150, 204.0, 98.0);
        for y in 0..150 {
            for x in 0..1728 {
                if a.is_black(x, y * 2) {
                    half.set_black(x, y);
                }
            }
        }
        assert!(similarity(&a, &half) > 0.9, "{}", similarity(&a, &half));
    }
}
