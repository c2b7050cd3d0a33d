//! CCITT T.4 (MH, MR) and T.6 (MMR/G4) coding of 1-bit pages: encoders for what faxd writes
//! and a decoder for everything a fax TIFF may hold (G3 1-D and 2-D with or without EOL
//! alignment, G4), built on the code tables of the `fax` crate.

use fax::maps::{Mode, black, mode, white};
use fax::{BitReader, BitWriter, Bits, Color, VecWriter};

/// A 1-bit page: packed rows, most significant bit first, 1 = black.
#[derive(Clone, Debug, PartialEq)]
pub struct FaxPage {
    pub width: u32,
    pub height: u32,
    /// Horizontal resolution in dots per inch.
    pub xres: f32,
    /// Vertical resolution in lines per inch.
    pub yres: f32,
    /// Packed rows, `stride()` bytes each.
    pub data: Vec<u8>,
}

impl FaxPage {
    /// A white page.
    pub fn blank(width: u32, height: u32, xres: f32, yres: f32) -> Self {
        let stride = width.div_ceil(8) as usize;
        FaxPage {
            width,
            height,
            xres,
            yres,
            data: vec![0; stride * height as usize],
        }
    }

    pub fn stride(&self) -> usize {
        self.width.div_ceil(8) as usize
    }

    pub fn row(&self, y: u32) -> &[u8] {
        let s = self.stride();
        &self.data[y as usize * s..(y as usize + 1) * s]
    }

    pub fn is_black(&self, x: u32, y: u32) -> bool {
        let b = self.data[y as usize * self.stride() + (x / 8) as usize];
        b & (0x80 >> (x % 8)) != 0
    }

    pub fn set_black(&mut self, x: u32, y: u32) {
        let s = self.stride();
        self.data[y as usize * s + (x / 8) as usize] |= 0x80 >> (x % 8);
    }

    /// Share of black pixels, 0..1.
    pub fn ink(&self) -> f64 {
        let black: u64 = self.data.iter().map(|b| b.count_ones() as u64).sum();
        black as f64 / (self.width as f64 * self.height as f64).max(1.0)
    }

    /// Changing elements of row `y` (positions where the colour flips, starting from white).
    fn transitions(&self, y: u32, out: &mut Vec<u32>) {
        out.clear();
        let row = self.row(y);
        let mut black = false;
        let mut x = 0u32;
        while x < self.width {
            let byte = row[(x / 8) as usize];
            // Skip whole bytes of the current colour.
            if x.is_multiple_of(8) && ((byte == 0 && !black) || (byte == 0xFF && black)) {
                x += 8;
                continue;
            }
            let bit = byte & (0x80 >> (x % 8)) != 0;
            if bit != black {
                out.push(x);
                black = bit;
            }
            x += 1;
        }
    }

    fn set_row_from_transitions(&mut self, y: u32, t: &[u32]) {
        let s = self.stride();
        let w = self.width;
        let row = &mut self.data[y as usize * s..(y as usize + 1) * s];
        row.fill(0);
        let mut i = 0;
        while i < t.len() {
            let start = t[i].min(w);
            let end = t.get(i + 1).copied().unwrap_or(w).min(w);
            fill_run(row, start, end);
            i += 2;
        }
    }
}

/// Sets bits `start..end` of a packed row, whole bytes at a time in the middle.
fn fill_run(row: &mut [u8], start: u32, end: u32) {
    if start >= end {
        return;
    }
    let (sb, eb) = ((start / 8) as usize, ((end - 1) / 8) as usize);
    let head = 0xFFu8 >> (start % 8);
    let tail = 0xFFu8 << (7 - (end - 1) % 8);
    if sb == eb {
        row[sb] |= head & tail;
        return;
    }
    row[sb] |= head;
    row[sb + 1..eb].fill(0xFF);
    row[eb] |= tail;
}

/// Which CCITT coding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    /// T.4 one-dimensional (Modified Huffman), TIFF compression 3.
    Mh,
    /// T.4 two-dimensional (Modified READ), TIFF compression 3 with T4Options bit 0.
    Mr,
    /// T.6 (MMR, "G4"), TIFF compression 4.
    Mmr,
}

/// Encodes a page. MH and MR rows start with an EOL whose fill bits end it on a byte boundary
/// (T4Options bit 2); MR rows are all coded one-dimensionally, which T.4 permits.
pub fn encode(page: &FaxPage, coding: Coding) -> Vec<u8> {
    match coding {
        Coding::Mmr => encode_g4(page),
        Coding::Mh | Coding::Mr => encode_g3(page, coding == Coding::Mr),
    }
}

fn encode_g4(page: &FaxPage) -> Vec<u8> {
    let mut enc = fax::encoder::Encoder::new(VecWriter::with_capacity(page.data.len()));
    for y in 0..page.height {
        let row = page.row(y);
        let pels = (0..page.width).map(|x| {
            if row[(x / 8) as usize] & (0x80 >> (x % 8)) != 0 {
                Color::Black
            } else {
                Color::White
            }
        });
        // VecWriter never fails.
        let _ = enc.encode_line(pels, page.width as u16);
    }
    match enc.finish() {
        Ok(w) => w.finish(),
        Err(never) => match never {},
    }
}

struct G3Writer {
    out: VecWriter,
    bits: u64,
}

impl G3Writer {
    fn put(&mut self, b: Bits) {
        self.bits += b.len as u64;
        let _ = self.out.write(b);
    }
    fn run(&mut self, mut n: u32, black_run: bool) {
        let enc = |v: u16| {
            if black_run {
                black::encode(v)
            } else {
                white::encode(v)
            }
        };
        while n >= 2560 {
            if let Some(b) = enc(2560) {
                self.put(b);
            }
            n -= 2560;
        }
        if n >= 64 {
            if let Some(b) = enc((n & !63) as u16) {
                self.put(b);
            }
            n &= 63;
        }
        if let Some(b) = enc(n as u16) {
            self.put(b);
        }
    }
}

fn encode_g3(page: &FaxPage, mr: bool) -> Vec<u8> {
    let mut w = G3Writer {
        out: VecWriter::with_capacity(page.data.len() / 4),
        bits: 0,
    };
    let mut t = Vec::new();
    for y in 0..page.height {
        // Fill so that the EOL (12 bits, + tag bit for MR) ends on a byte boundary.
        let eol_len = if mr { 13 } else { 12 };
        let pad = (8 - ((w.bits + eol_len) % 8)) % 8;
        if pad > 0 {
            w.put(Bits {
                data: 0,
                len: pad as u8,
            });
        }
        w.put(Bits { data: 1, len: 12 });
        if mr {
            w.put(Bits { data: 1, len: 1 });
        }
        page.transitions(y, &mut t);
        let mut pos = 0u32;
        let mut black_run = false;
        for &x in t.iter().chain(std::iter::once(&page.width)) {
            w.run(x - pos, black_run);
            pos = x;
            black_run = !black_run;
        }
    }
    w.out.finish()
}

/// Decoding failure: where and why.
#[derive(Debug, thiserror::Error)]
#[error("CCITT data invalid at row {row}: {what}")]
pub struct DecodeError {
    pub row: u32,
    pub what: &'static str,
}

/// A bit reader over a byte slice (most significant bit first) for the `fax` code tables.
struct SliceBits<'a> {
    data: &'a [u8],
    /// Position in bits.
    pos: usize,
}

impl BitReader for SliceBits<'_> {
    type Error = ();

    fn peek(&self, bits: u8) -> Option<u16> {
        if bits > 16 || self.pos + bits as usize > self.data.len() * 8 {
            return None;
        }
        if bits == 0 {
            return Some(0);
        }
        let i = self.pos / 8;
        let word = match self.data.get(i..i + 4) {
            Some(w) => u32::from_be_bytes([w[0], w[1], w[2], w[3]]),
            None => {
                let b = |k: usize| self.data.get(i + k).copied().unwrap_or(0) as u32;
                (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3)
            }
        };
        let shifted = word << (self.pos % 8);
        Some((shifted >> (32 - bits as u32)) as u16)
    }

    fn consume(&mut self, bits: u8) -> Result<(), ()> {
        self.pos += bits as usize;
        Ok(())
    }

    fn bits_to_byte_boundary(&self) -> u8 {
        ((8 - self.pos % 8) % 8) as u8
    }
}

struct Reader<'a> {
    r: SliceBits<'a>,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Reader {
            r: SliceBits { data, pos: 0 },
        }
    }
    fn peek(&self, n: u8) -> Option<u16> {
        self.r.peek(n)
    }
    fn consume(&mut self, n: u8) {
        let _ = self.r.consume(n);
    }
    /// Skips fill zeros and an EOL if one is next; true if it consumed an EOL.
    fn eol(&mut self) -> bool {
        if self.peek(11) != Some(0) {
            return false;
        }
        while self.peek(1) == Some(0) {
            self.consume(1);
        }
        if self.peek(1) == Some(1) {
            self.consume(1);
            true
        } else {
            false
        }
    }
    fn run(&mut self, black_run: bool) -> Option<u32> {
        let mut sum = 0u32;
        loop {
            let n = if black_run {
                black::decode(&mut self.r)?
            } else {
                white::decode(&mut self.r)?
            };
            sum = sum.checked_add(n as u32)?;
            if n < 64 {
                return Some(sum);
            }
        }
    }
}

/// Decodes `height` rows of `width` pixels. `coding` gives the scheme; `data` must be in
/// most-significant-bit-first order (reverse FillOrder=2 data first). Rows missing at the end
/// of the data are left white; garbage is an error.
pub fn decode(
    data: &[u8],
    coding: Coding,
    width: u32,
    height: u32,
    xres: f32,
    yres: f32,
) -> Result<FaxPage, DecodeError> {
    let mut page = FaxPage::blank(width, height, xres, yres);
    decode_rows(data, coding, width, height, |y, t| {
        page.set_row_from_transitions(y, t)
    })?;
    Ok(page)
}

/// Checks that `height` rows of `width` pixels decode, without building the bitmap (output
/// validation).
pub fn check(data: &[u8], coding: Coding, width: u32, height: u32) -> Result<(), DecodeError> {
    decode_rows(data, coding, width, height, |_, _| {})
}

fn decode_rows(
    data: &[u8],
    coding: Coding,
    width: u32,
    height: u32,
    mut row: impl FnMut(u32, &[u32]),
) -> Result<(), DecodeError> {
    // The code tables look ahead up to 13 bits; zeros after the end let the last code decode.
    let mut padded = Vec::with_capacity(data.len() + 4);
    padded.extend_from_slice(data);
    padded.extend_from_slice(&[0; 4]);
    let mut r = Reader::new(&padded);
    let mut reference: Vec<u32> = Vec::new();
    let mut current: Vec<u32> = Vec::new();
    for y in 0..height {
        current.clear();
        let two_d = match coding {
            Coding::Mmr => true,
            Coding::Mh | Coding::Mr => {
                let had_eol = r.eol();
                if had_eol && r.peek(12) == Some(1) {
                    // RTC: consecutive EOLs end the page.
                    break;
                }
                if coding == Coding::Mr {
                    match r.peek(1) {
                        Some(tag) => {
                            r.consume(1);
                            tag == 0
                        }
                        None => break,
                    }
                } else {
                    false
                }
            }
        };
        if r.peek(16).is_none() {
            break;
        }
        if two_d {
            if coding == Coding::Mmr && r.peek(12) == Some(1) {
                break; // EOFB
            }
            decode_2d(&mut r, &reference, &mut current, width).ok_or(DecodeError {
                row: y,
                what: "bad 2-D code",
            })?;
        } else {
            decode_1d(&mut r, &mut current, width).ok_or(DecodeError {
                row: y,
                what: "bad 1-D code",
            })?;
        }
        row(y, &current);
        std::mem::swap(&mut reference, &mut current);
    }
    Ok(())
}

fn decode_1d(r: &mut Reader, cur: &mut Vec<u32>, width: u32) -> Option<()> {
    let mut a0 = 0u32;
    let mut black_run = false;
    while a0 < width {
        let n = r.run(black_run)?;
        a0 = a0.checked_add(n)?;
        if a0 > width {
            return None;
        }
        if a0 < width {
            cur.push(a0);
        }
        black_run = !black_run;
    }
    Some(())
}

/// b1: the first changing element on the reference line right of `a0` (or at 0 at the start
/// of a row) whose colour is opposite to `black`; b2 the next one. `hint` carries the scan
/// position from one call to the next within a row, so a row costs O(changes), not O(n²).
fn b1b2(reference: &[u32], a0: i64, black: bool, width: u32, hint: &mut usize) -> (u32, u32) {
    let mut k = (*hint).min(reference.len());
    while k > 0 && reference[k - 1] as i64 > a0 {
        k -= 1;
    }
    // Element k of the reference changes to black when k is even, to white when odd.
    while k < reference.len() {
        let pos = reference[k] as i64;
        let to_black = k.is_multiple_of(2);
        if pos > a0 && to_black != black {
            break;
        }
        k += 1;
    }
    *hint = k;
    let b1 = reference.get(k).copied().unwrap_or(width);
    let b2 = reference.get(k + 1).copied().unwrap_or(width);
    (b1, b2)
}

fn decode_2d(r: &mut Reader, reference: &[u32], cur: &mut Vec<u32>, width: u32) -> Option<()> {
    let mut a0: i64 = -1;
    let mut black = false;
    let mut hint = 0usize;
    while a0 < width as i64 {
        let m = mode::decode(&mut r.r)?;
        match m {
            Mode::Pass => {
                let (_, b2) = b1b2(reference, a0, black, width, &mut hint);
                a0 = b2 as i64;
            }
            Mode::Horizontal => {
                let start = a0.max(0) as u32;
                let r1 = r.run(black)?;
                let r2 = r.run(!black)?;
                let a1 = start.checked_add(r1)?;
                let a2 = a1.checked_add(r2)?;
                if a2 > width {
                    return None;
                }
                if a1 < width {
                    cur.push(a1);
                }
                if a2 < width {
                    cur.push(a2);
                }
                a0 = a2 as i64;
            }
            Mode::Vertical(d) => {
                let (b1, _) = b1b2(reference, a0, black, width, &mut hint);
                let a1 = b1 as i64 + d as i64;
                if a1 < 0 || a1 > width as i64 || a1 < a0 {
                    return None;
                }
                if a1 < width as i64 {
                    cur.push(a1 as u32);
                }
                a0 = a1;
                black = !black;
            }
            Mode::Extension | Mode::EOF => return None,
        }
    }
    Some(())
}

/// Reverses the bit order of every byte (TIFF FillOrder 2 ↔ 1).
pub fn reverse_bits(data: &mut [u8]) {
    for b in data {
        *b = b.reverse_bits();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FaxPage {
        let mut p = FaxPage::blank(1728, 64, 204.0, 196.0);
        for y in 0..64 {
            for x in 0..1728 {
                let on = (x / 7 + y / 3) % 5 == 0 || (x > 1700 && y % 2 == 0) || x == 0;
                if on {
                    p.set_black(x, y);
                }
            }
        }
        p
    }

    #[test]
    fn every_coding_round_trips_pixel_exact() {
        let p = sample();
        for c in [Coding::Mh, Coding::Mr, Coding::Mmr] {
            let data = encode(&p, c);
            let back = decode(&data, c, p.width, p.height, 204.0, 196.0).unwrap();
            assert_eq!(back, p, "{c:?}");
        }
        let white = FaxPage::blank(1728, 10, 204.0, 98.0);
        let back = decode(
            &encode(&white, Coding::Mmr),
            Coding::Mmr,
            1728,
            10,
            204.0,
            98.0,
        );
        assert_eq!(back.unwrap(), white);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let junk: Vec<u8> = (0..4000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for c in [Coding::Mh, Coding::Mr, Coding::Mmr] {
            let _ = decode(&junk, c, 1728, 100, 204.0, 196.0);
        }
    }
}
