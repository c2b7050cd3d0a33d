//! CCITT T.4 (MH, MR) and T.6 (MMR/G4) coding of 1-bit pages: the encoder for what faxd writes
//! and the decoder for everything a fax TIFF may hold (G3 1-D and 2-D with or without EOLs,
//! byte-aligned or not, G4).
//!
//! Both sides work on changing elements (the positions where a row flips colour), never pixel
//! by pixel: the encoder finds them 64 pixels at a time with leading-zero counts, the decoder
//! reads codes from a 64-bit bit buffer through lookup tables built at compile time from the
//! code tables of ITU-T T.4 (one lookup per code), and `check` (output validation) only tracks
//! changing elements.
//! Per page there are two change lists and the output buffer; nothing is allocated per row.

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

/// Decoding failure: where and why.
#[derive(Debug, thiserror::Error)]
#[error("CCITT data invalid at row {row}: {what}")]
pub struct DecodeError {
    pub row: u32,
    pub what: &'static str,
}

/// Reverses the bit order of every byte (TIFF FillOrder 2 ↔ 1).
pub fn reverse_bits(data: &mut [u8]) {
    for b in data {
        *b = b.reverse_bits();
    }
}

// ---------------------------------------------------------------------------------------------
// Code tables (ITU-T T.4 tables 1, 2 and 3; T.6 uses the same codes). Each entry is
// (code, length in bits), the code right-aligned.

/// White terminating codes, run lengths 0..=63.
const WHITE_TERM: [(u16, u8); 64] = [
    (0b00110101, 8),
    (0b000111, 6),
    (0b0111, 4),
    (0b1000, 4),
    (0b1011, 4),
    (0b1100, 4),
    (0b1110, 4),
    (0b1111, 4),
    (0b10011, 5),
    (0b10100, 5),
    (0b00111, 5),
    (0b01000, 5),
    (0b001000, 6),
    (0b000011, 6),
    (0b110100, 6),
    (0b110101, 6),
    (0b101010, 6),
    (0b101011, 6),
    (0b0100111, 7),
    (0b0001100, 7),
    (0b0001000, 7),
    (0b0010111, 7),
    (0b0000011, 7),
    (0b0000100, 7),
    (0b0101000, 7),
    (0b0101011, 7),
    (0b0010011, 7),
    (0b0100100, 7),
    (0b0011000, 7),
    (0b00000010, 8),
    (0b00000011, 8),
    (0b00011010, 8),
    (0b00011011, 8),
    (0b00010010, 8),
    (0b00010011, 8),
    (0b00010100, 8),
    (0b00010101, 8),
    (0b00010110, 8),
    (0b00010111, 8),
    (0b00101000, 8),
    (0b00101001, 8),
    (0b00101010, 8),
    (0b00101011, 8),
    (0b00101100, 8),
    (0b00101101, 8),
    (0b00000100, 8),
    (0b00000101, 8),
    (0b00001010, 8),
    (0b00001011, 8),
    (0b01010010, 8),
    (0b01010011, 8),
    (0b01010100, 8),
    (0b01010101, 8),
    (0b00100100, 8),
    (0b00100101, 8),
    (0b01011000, 8),
    (0b01011001, 8),
    (0b01011010, 8),
    (0b01011011, 8),
    (0b01001010, 8),
    (0b01001011, 8),
    (0b00110010, 8),
    (0b00110011, 8),
    (0b00110100, 8),
];

/// White make-up codes, run lengths 64, 128, …, 1728.
const WHITE_MAKEUP: [(u16, u8); 27] = [
    (0b11011, 5),
    (0b10010, 5),
    (0b010111, 6),
    (0b0110111, 7),
    (0b00110110, 8),
    (0b00110111, 8),
    (0b01100100, 8),
    (0b01100101, 8),
    (0b01101000, 8),
    (0b01100111, 8),
    (0b011001100, 9),
    (0b011001101, 9),
    (0b011010010, 9),
    (0b011010011, 9),
    (0b011010100, 9),
    (0b011010101, 9),
    (0b011010110, 9),
    (0b011010111, 9),
    (0b011011000, 9),
    (0b011011001, 9),
    (0b011011010, 9),
    (0b011011011, 9),
    (0b010011000, 9),
    (0b010011001, 9),
    (0b010011010, 9),
    (0b011000, 6),
    (0b010011011, 9),
];

/// Black terminating codes, run lengths 0..=63.
const BLACK_TERM: [(u16, u8); 64] = [
    (0b0000110111, 10),
    (0b010, 3),
    (0b11, 2),
    (0b10, 2),
    (0b011, 3),
    (0b0011, 4),
    (0b0010, 4),
    (0b00011, 5),
    (0b000101, 6),
    (0b000100, 6),
    (0b0000100, 7),
    (0b0000101, 7),
    (0b0000111, 7),
    (0b00000100, 8),
    (0b00000111, 8),
    (0b000011000, 9),
    (0b0000010111, 10),
    (0b0000011000, 10),
    (0b0000001000, 10),
    (0b00001100111, 11),
    (0b00001101000, 11),
    (0b00001101100, 11),
    (0b00000110111, 11),
    (0b00000101000, 11),
    (0b00000010111, 11),
    (0b00000011000, 11),
    (0b000011001010, 12),
    (0b000011001011, 12),
    (0b000011001100, 12),
    (0b000011001101, 12),
    (0b000001101000, 12),
    (0b000001101001, 12),
    (0b000001101010, 12),
    (0b000001101011, 12),
    (0b000011010010, 12),
    (0b000011010011, 12),
    (0b000011010100, 12),
    (0b000011010101, 12),
    (0b000011010110, 12),
    (0b000011010111, 12),
    (0b000001101100, 12),
    (0b000001101101, 12),
    (0b000011011010, 12),
    (0b000011011011, 12),
    (0b000001010100, 12),
    (0b000001010101, 12),
    (0b000001010110, 12),
    (0b000001010111, 12),
    (0b000001100100, 12),
    (0b000001100101, 12),
    (0b000001010010, 12),
    (0b000001010011, 12),
    (0b000000100100, 12),
    (0b000000110111, 12),
    (0b000000111000, 12),
    (0b000000100111, 12),
    (0b000000101000, 12),
    (0b000001011000, 12),
    (0b000001011001, 12),
    (0b000000101011, 12),
    (0b000000101100, 12),
    (0b000001011010, 12),
    (0b000001100110, 12),
    (0b000001100111, 12),
];

/// Black make-up codes, run lengths 64, 128, …, 1728.
const BLACK_MAKEUP: [(u16, u8); 27] = [
    (0b0000001111, 10),
    (0b000011001000, 12),
    (0b000011001001, 12),
    (0b000001011011, 12),
    (0b000000110011, 12),
    (0b000000110100, 12),
    (0b000000110101, 12),
    (0b0000001101100, 13),
    (0b0000001101101, 13),
    (0b0000001001010, 13),
    (0b0000001001011, 13),
    (0b0000001001100, 13),
    (0b0000001001101, 13),
    (0b0000001110010, 13),
    (0b0000001110011, 13),
    (0b0000001110100, 13),
    (0b0000001110101, 13),
    (0b0000001110110, 13),
    (0b0000001110111, 13),
    (0b0000001010010, 13),
    (0b0000001010011, 13),
    (0b0000001010100, 13),
    (0b0000001010101, 13),
    (0b0000001011010, 13),
    (0b0000001011011, 13),
    (0b0000001100100, 13),
    (0b0000001100101, 13),
];

/// Make-up codes shared by both colours, run lengths 1792, 1856, …, 2560.
const EXT_MAKEUP: [(u16, u8); 13] = [
    (0b00000001000, 11),
    (0b00000001100, 11),
    (0b00000001101, 11),
    (0b000000010010, 12),
    (0b000000010011, 12),
    (0b000000010100, 12),
    (0b000000010101, 12),
    (0b000000010110, 12),
    (0b000000010111, 12),
    (0b000000011100, 12),
    (0b000000011101, 12),
    (0b000000011110, 12),
    (0b000000011111, 12),
];

/// End of line: 11 zeros and a one.
const EOL: (u32, u32) = (1, 12);

// 2-D mode codes (T.4 table 4 / T.6 table 1).
const PASS: (u32, u32) = (0b0001, 4);
const HORIZONTAL: (u32, u32) = (0b001, 3);
/// Vertical modes by a1 − b1 + 3: VL3, VL2, VL1, V0, VR1, VR2, VR3.
const VERTICAL: [(u32, u32); 7] = [
    (0b0000010, 7),
    (0b000010, 6),
    (0b010, 3),
    (0b1, 1),
    (0b011, 3),
    (0b000011, 6),
    (0b0000011, 7),
];

// ---------------------------------------------------------------------------------------------
// Decoding tables, indexed by the next 12 (white) or 13 (black) bits, the longest code of the
// colour: every index that starts with a code holds `run << 4 | code length`; 0 means no code
// starts there. Built at compile time from the tables above.

/// Run value of the EOL entry: an EOL where a run code was expected.
const EOL_RUN: u32 = 0xFFF;

/// Fills every index of a `bits`-wide table that starts with `code` (of `len` bits).
const fn fill(table: &mut [u16], bits: u8, code: u16, len: u8, entry: u16) {
    let start = (code as usize) << (bits - len);
    let mut i = 0;
    while i < 1 << (bits - len) {
        table[start + i] = entry;
        i += 1;
    }
}

/// The `i`th code of a colour (0..104): terminating, then make-up, then shared make-up.
const fn nth_code(black: bool, i: usize) -> (u16, u8, u16) {
    let (term, makeup) = if black {
        (&BLACK_TERM, &BLACK_MAKEUP)
    } else {
        (&WHITE_TERM, &WHITE_MAKEUP)
    };
    if i < 64 {
        (term[i].0, term[i].1, i as u16)
    } else if i < 91 {
        let m = i - 64;
        (makeup[m].0, makeup[m].1, 64 * (m as u16 + 1))
    } else {
        let m = i - 91;
        (EXT_MAKEUP[m].0, EXT_MAKEUP[m].1, 1792 + 64 * m as u16)
    }
}

const fn run_table<const N: usize>(black: bool, bits: u8) -> [u16; N] {
    let mut t = [0u16; N];
    fill(
        &mut t,
        bits,
        EOL.0 as u16,
        EOL.1 as u8,
        ((EOL_RUN as u16) << 4) | EOL.1 as u16,
    );
    let mut i = 0;
    while i < 104 {
        let (code, len, run) = nth_code(black, i);
        fill(&mut t, bits, code, len, (run << 4) | len as u16);
        i += 1;
    }
    t
}

static WHITE_RUNS: [u16; 4096] = run_table::<4096>(false, 12);
static BLACK_RUNS: [u16; 8192] = run_table::<8192>(true, 13);

/// 2-D mode by the next 7 bits: `kind << 3 | length`, kind as below, 0 = invalid.
const M_PASS: u8 = 1;
const M_HORIZONTAL: u8 = 2;
/// Vertical modes are kinds 3..=9: a1 − b1 = kind − 6.
const M_V0: u8 = 6;
const M_EXTENSION: u8 = 10;
const M_EOL: u8 = 11;

const fn mode_table() -> [u8; 128] {
    let mut t = [0u8; 128];
    let mut m = [0u16; 128];
    fill(
        &mut m,
        7,
        PASS.0 as u16,
        PASS.1 as u8,
        ((M_PASS as u16) << 3) | 4,
    );
    fill(
        &mut m,
        7,
        HORIZONTAL.0 as u16,
        HORIZONTAL.1 as u8,
        ((M_HORIZONTAL as u16) << 3) | 3,
    );
    let mut d = 0;
    while d < 7 {
        let (code, len) = VERTICAL[d];
        fill(
            &mut m,
            7,
            code as u16,
            len as u8,
            (((3 + d) as u16) << 3) | len as u16,
        );
        d += 1;
    }
    // 0000001 xxx: extension (uncompressed mode); 0000000: an EOL (or EOFB).
    fill(&mut m, 7, 1, 7, ((M_EXTENSION as u16) << 3) | 7);
    fill(&mut m, 7, 0, 7, ((M_EOL as u16) << 3) | 7);
    let mut i = 0;
    while i < 128 {
        t[i] = m[i] as u8;
        i += 1;
    }
    t
}

static MODES: [u8; 128] = mode_table();

// ---------------------------------------------------------------------------------------------
// Decoding.

/// Most-significant-bit-first reader with a 64-bit buffer. Past the end of the data it reads
/// zeros, which no code consists of, and `overrun` tells when that happened.
#[derive(Clone, Copy)]
struct BitReader<'a> {
    data: &'a [u8],
    /// Next byte to load (it may pass the end while zeros are loaded).
    next: usize,
    /// Unread bits, left-aligned; bits below the top `n` are either zero or the data's next bits.
    buf: u64,
    n: u32,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader {
            data,
            next: 0,
            buf: 0,
            n: 0,
        }
    }

    /// Makes at least 16 bits available (every code is at most 13 bits long).
    #[inline(always)]
    fn ensure(&mut self) {
        if self.n < 16 {
            self.refill();
        }
    }

    #[inline(always)]
    fn refill(&mut self) {
        if let Some(chunk) = self.data.get(self.next..self.next + 8) {
            let word = u64::from_be_bytes(chunk.try_into().unwrap_or([0; 8]));
            self.buf |= word >> self.n;
            let take = (63 - self.n) >> 3;
            self.next += take as usize;
            self.n += take << 3;
        } else {
            self.refill_tail();
        }
    }

    #[cold]
    fn refill_tail(&mut self) {
        while self.n < 56 {
            let byte = self.data.get(self.next).copied().unwrap_or(0);
            self.buf |= (byte as u64) << (56 - self.n);
            self.next += 1;
            self.n += 8;
        }
    }

    #[inline(always)]
    fn consume(&mut self, bits: u32) {
        self.buf <<= bits;
        self.n -= bits;
    }

    /// Bits read so far.
    fn position(&self) -> usize {
        self.next * 8 - self.n as usize
    }

    /// True once more bits were consumed than the data holds.
    fn overrun(&self) -> bool {
        self.position() > self.data.len() * 8
    }

    /// True if nothing but zero bits is left.
    fn rest_is_zero(&self) -> bool {
        let p = self.position();
        let i = p / 8;
        match self.data.get(i) {
            None => true,
            Some(&b) => b & (0xFF >> (p % 8)) == 0 && self.data[i + 1..].iter().all(|&b| b == 0),
        }
    }

    /// Skips fill zeros and an EOL if the next 11 bits are zeros. `Some(true)` if an EOL was
    /// consumed, `Some(false)` if none is next, `None` if the data ends in zeros.
    fn eol(&mut self) -> Option<bool> {
        self.ensure();
        if self.buf >> 53 != 0 {
            return Some(false);
        }
        loop {
            self.refill();
            let zeros = self.buf.leading_zeros();
            if zeros < self.n {
                self.consume(zeros + 1);
                return if self.overrun() { None } else { Some(true) };
            }
            let n = self.n;
            self.consume(n);
            if self.position() >= self.data.len() * 8 {
                return None;
            }
        }
    }

    /// A run of one colour: make-up codes and a terminating code, summed.
    #[inline(always)]
    fn run<const BLACK_RUN: bool>(&mut self, width: i32) -> Result<i32, &'static str> {
        let mut total = 0i32;
        loop {
            self.ensure();
            let e = if BLACK_RUN {
                BLACK_RUNS[(self.buf >> 51) as usize]
            } else {
                WHITE_RUNS[(self.buf >> 52) as usize]
            };
            let len = (e & 15) as u32;
            let run = (e >> 4) as i32;
            if len == 0 {
                return Err(if BLACK_RUN {
                    "invalid black run code"
                } else {
                    "invalid white run code"
                });
            }
            if run == EOL_RUN as i32 {
                return Err("EOL inside a row (row too short)");
            }
            self.consume(len);
            total += run;
            if run < 64 {
                return Ok(total);
            }
            if total > width {
                return Err("run longer than the row");
            }
        }
    }

    /// One 1-D (MH) row into `cur`; returns how many changing elements it has.
    fn row_1d(&mut self, cur: &mut [i32], width: i32) -> Result<usize, &'static str> {
        // A copy the optimiser keeps in registers, written back when the row is done.
        let mut r = *self;
        let mut n = 0usize;
        let mut a0 = 0i32;
        // White and black runs alternate, a white one first.
        loop {
            a0 += r.run::<false>(width)?;
            if a0 >= width {
                break;
            }
            *cur.get_mut(n).ok_or(TOO_MANY)? = a0;
            n += 1;
            a0 += r.run::<true>(width)?;
            if a0 >= width {
                break;
            }
            *cur.get_mut(n).ok_or(TOO_MANY)? = a0;
            n += 1;
        }
        if a0 > width {
            return Err("row longer than the page width");
        }
        *self = r;
        Ok(n)
    }

    /// One 2-D (MR/MMR) row into `cur`, against the reference row's changing elements;
    /// returns how many changing elements it has.
    fn row_2d(&mut self, refl: &[i32], cur: &mut [i32], width: i32) -> Result<usize, &'static str> {
        let mut r = *self;
        let mut n = 0usize;
        // Beyond the reference row's last change, changes are imaginary ones at `width`.
        let at = |k: usize| refl.get(k).copied().unwrap_or(width);
        let mut a0 = -1i32;
        let mut black = false;
        // b1 = refl[k]: the first change right of a0 to the colour opposite a0's, so k is even
        // while a0 is white. Changes of that colour before k are at or left of a0.
        let mut k = 0usize;
        while a0 < width {
            r.ensure();
            let mut b1 = at(k);
            while b1 <= a0 {
                k += 2;
                b1 = at(k);
            }
            let e = MODES[(r.buf >> 57) as usize];
            r.consume((e & 7) as u32);
            let kind = e >> 3;
            if kind.wrapping_sub(3) < 7 {
                // Vertical: a1 = b1 + (kind − 6), the common case, with few branches.
                let a1 = b1 + kind as i32 - M_V0 as i32;
                if a1 < a0.max(0) || a1 > width {
                    return Err("vertical mode outside the row");
                }
                *cur.get_mut(n).ok_or(TOO_MANY)? = a1;
                n += (a1 < width) as usize;
                a0 = a1;
                black = !black;
                // After VL the reference change just left of b1, which has the new
                // opposite colour, may lie right of a1.
                if kind < M_V0 && k > 0 && at(k - 1) > a0 {
                    k -= 1;
                } else {
                    k += 1;
                }
                continue;
            }
            match kind {
                M_HORIZONTAL => {
                    let start = a0.max(0);
                    let (r1, r2) = if black {
                        (r.run::<true>(width)?, r.run::<false>(width)?)
                    } else {
                        (r.run::<false>(width)?, r.run::<true>(width)?)
                    };
                    let a1 = start + r1;
                    let a2 = a1 + r2;
                    if a2 > width {
                        return Err("row longer than the page width");
                    }
                    if a1 < width {
                        *cur.get_mut(n).ok_or(TOO_MANY)? = a1;
                        n += 1;
                    }
                    if a2 < width {
                        *cur.get_mut(n).ok_or(TOO_MANY)? = a2;
                        n += 1;
                    }
                    a0 = a2;
                }
                M_PASS => {
                    a0 = at(k + 1);
                    k += 2;
                }
                M_EXTENSION => return Err("uncompressed mode (extension code) is not supported"),
                M_EOL => return Err("EOL inside a row (row too short)"),
                _ => return Err("invalid 2-D mode code"),
            }
        }
        *self = r;
        Ok(n)
    }
}

/// A row can only have more changing elements than pixels if its codes are nonsense.
const TOO_MANY: &str = "more colour changes than pixels in the row";

/// Decodes `height` rows of `width` pixels. `coding` gives the scheme; `data` must be in
/// most-significant-bit-first order (reverse FillOrder=2 data first). Rows missing at the end
/// of the data (it ends, or RTC/EOFB comes early) are left white; garbage is an error.
pub fn decode(
    data: &[u8],
    coding: Coding,
    width: u32,
    height: u32,
    xres: f32,
    yres: f32,
) -> Result<FaxPage, DecodeError> {
    let mut page = FaxPage::blank(width, height, xres, yres);
    let stride = page.stride();
    let mut rows = page.data.chunks_exact_mut(stride.max(1));
    decode_rows(data, coding, width, height, |_, changes| {
        if let Some(row) = rows.next() {
            fill_changes(row, changes, width);
        }
    })?;
    Ok(page)
}

/// Decodes TIFF compression 2 ("CCITT RLE"): Modified Huffman rows without EOLs, each row
/// starting on a byte boundary. Missing rows are left white, as in `decode`.
pub fn decode_rle(
    data: &[u8],
    width: u32,
    height: u32,
    xres: f32,
    yres: f32,
) -> Result<FaxPage, DecodeError> {
    let mut page = FaxPage::blank(width, height, xres, yres);
    if height == 0 {
        return Ok(page);
    }
    if width == 0 || width > 1 << 24 {
        return Err(DecodeError {
            row: 0,
            what: "page width out of range",
        });
    }
    let stride = page.stride();
    let mut r = BitReader::new(data);
    let mut current = vec![0i32; width as usize + 1];
    for (y, row) in page.data.chunks_exact_mut(stride).enumerate() {
        let err = |what| DecodeError {
            row: y as u32,
            what,
        };
        r.ensure();
        let skip = ((8 - r.position() % 8) % 8) as u32;
        r.consume(skip);
        if r.position() >= data.len() * 8 {
            break;
        }
        let len = r.row_1d(&mut current, width as i32).map_err(err)?;
        if r.overrun() {
            return Err(err("the data ends inside the row"));
        }
        fill_changes(row, &current[..len], width);
    }
    Ok(page)
}

/// Paints a row's black runs from its changing elements (white first; an odd last change
/// runs black to the end of the row).
fn fill_changes(row: &mut [u8], changes: &[i32], width: u32) {
    let mut pairs = changes.chunks_exact(2);
    for p in &mut pairs {
        fill_run(row, p[0] as u32, p[1] as u32);
    }
    if let [start] = pairs.remainder() {
        fill_run(row, *start as u32, width);
    }
}

/// Checks that all `height` rows of `width` pixels are in the data and decode, without
/// building the bitmap (output validation): unlike `decode`, missing rows are an error.
pub fn check(data: &[u8], coding: Coding, width: u32, height: u32) -> Result<(), DecodeError> {
    let rows = decode_rows(data, coding, width, height, |_, _| {})?;
    if rows < height {
        return Err(DecodeError {
            row: rows,
            what: "the data ends before the last row",
        });
    }
    Ok(())
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

/// Decodes rows, handing each row's changing elements to `row`; returns how many rows the
/// data held (up to `height`).
fn decode_rows(
    data: &[u8],
    coding: Coding,
    width: u32,
    height: u32,
    mut row: impl FnMut(u32, &[i32]),
) -> Result<u32, DecodeError> {
    if height == 0 {
        return Ok(0);
    }
    if width == 0 || width > 1 << 24 {
        return Err(DecodeError {
            row: 0,
            what: "page width out of range",
        });
    }
    let width = width as i32;
    let mut r = BitReader::new(data);
    // Change lists: a row has at most `width` of them, plus a slot the vertical mode writes
    // before it knows whether a1 is a change or the end of the row.
    let mut reference = vec![0i32; width as usize + 1];
    let mut current = vec![0i32; width as usize + 1];
    let mut ref_len = 0usize;
    for y in 0..height {
        let err = |what| DecodeError { row: y, what };
        let two_d = match coding {
            Coding::Mmr => {
                r.ensure();
                // Eleven zeros: the EOFB, or fill up to the end.
                if r.buf >> 53 == 0 {
                    if r.buf >> 52 == 1 || r.rest_is_zero() {
                        return Ok(y);
                    }
                    return Err(err("EOL inside a row (row too short)"));
                }
                true
            }
            Coding::Mh | Coding::Mr => {
                let had_eol = match r.eol() {
                    Some(e) => e,
                    None => return Ok(y),
                };
                r.ensure();
                let mr = coding == Coding::Mr;
                // After an EOL (and the tag bit), eleven zeros are the next EOL of the RTC.
                let after = if mr { r.buf << 1 } else { r.buf };
                if had_eol && after >> 53 == 0 {
                    return Ok(y);
                }
                if !had_eol && r.rest_is_zero() {
                    return Ok(y);
                }
                if mr {
                    let tag = r.buf >> 63;
                    r.consume(1);
                    tag == 0
                } else {
                    false
                }
            }
        };
        let len = if two_d {
            r.row_2d(&reference[..ref_len], &mut current, width)
        } else {
            r.row_1d(&mut current, width)
        }
        .map_err(err)?;
        if r.overrun() {
            return Err(err("the data ends inside the row"));
        }
        row(y, &current[..len]);
        std::mem::swap(&mut reference, &mut current);
        ref_len = len;
    }
    Ok(height)
}

// ---------------------------------------------------------------------------------------------
// Encoding.

/// Most-significant-bit-first writer with a 64-bit accumulator.
struct BitWriter {
    out: Vec<u8>,
    /// Pending bits, left-aligned; fewer than 32 between calls.
    acc: u64,
    n: u32,
}

impl BitWriter {
    #[inline(always)]
    fn put(&mut self, (code, len): (u32, u32)) {
        self.acc |= (code as u64) << (64 - self.n - len);
        self.n += len;
        if self.n >= 32 {
            self.out
                .extend_from_slice(&((self.acc >> 32) as u32).to_be_bytes());
            self.acc <<= 32;
            self.n -= 32;
        }
    }

    fn bits(&self) -> usize {
        self.out.len() * 8 + self.n as usize
    }

    /// An EOL preceded by the fill that makes it end on a byte boundary (TIFF T4Options bit 2).
    fn eol_aligned(&mut self) {
        let pad = (8 - (self.bits() + 12) % 8) % 8;
        if pad > 0 {
            self.put((0, pad as u32));
        }
        self.put(EOL);
    }

    #[inline(always)]
    fn run(&mut self, mut n: i32, black: bool) {
        let (term, makeup) = if black {
            (&BLACK_TERM, &BLACK_MAKEUP)
        } else {
            (&WHITE_TERM, &WHITE_MAKEUP)
        };
        let code = |(c, l): (u16, u8)| (c as u32, l as u32);
        if n >= 64 {
            while n > 2560 + 63 {
                self.put(code(EXT_MAKEUP[12]));
                n -= 2560;
            }
            let m = (n / 64) as usize;
            self.put(code(if m <= 27 {
                makeup[m - 1]
            } else {
                EXT_MAKEUP[m - 28]
            }));
            n %= 64;
        }
        self.put(code(term[n as usize]));
    }

    fn row_1d(&mut self, cur: &[i32], width: i32) {
        let mut pos = 0;
        let mut black = false;
        for &c in cur {
            self.run(c - pos, black);
            pos = c;
            black = !black;
        }
        self.run(width - pos, black);
    }

    fn row_2d(&mut self, refl: &[i32], cur: &[i32], width: i32) {
        let at_ref = |k: usize| refl.get(k).copied().unwrap_or(width);
        let at_cur = |j: usize| cur.get(j).copied().unwrap_or(width);
        let mut a0 = -1i32;
        let mut black = false;
        // b1 = refl[k] as in the decoder; a1 = cur[j], the first change right of a0.
        let mut k = 0usize;
        let mut j = 0usize;
        while a0 < width {
            let mut b1 = at_ref(k);
            while b1 <= a0 {
                k += 2;
                b1 = at_ref(k);
            }
            let a1 = at_cur(j);
            let b2 = at_ref(k + 1);
            if b2 < a1 {
                self.put(PASS);
                a0 = b2;
                k += 2;
            } else if (a1 - b1).abs() <= 3 {
                self.put(VERTICAL[(a1 - b1 + 3) as usize]);
                a0 = a1;
                j += 1;
                black = !black;
                // As in the decoder: only after VL can the change left of b1 be right of a1.
                if a1 < b1 && k > 0 && at_ref(k - 1) > a0 {
                    k -= 1;
                } else {
                    k += 1;
                }
            } else {
                let a2 = at_cur(j + 1);
                self.put(HORIZONTAL);
                self.run(a1 - a0.max(0), black);
                self.run(a2 - a1, !black);
                a0 = a2;
                j += 2;
            }
        }
    }

    fn finish(mut self) -> Vec<u8> {
        let bytes = self.n.div_ceil(8);
        for i in 0..bytes {
            self.out.push((self.acc >> (56 - 8 * i)) as u8);
        }
        self.out
    }
}

/// The changing elements of a packed row (positions where the colour flips, starting from
/// white), found 64 pixels at a time; returns how many. Pixels at or beyond `width` are
/// ignored. `out` needs one entry per bit of the row rounded up to 64, plus one.
fn row_changes(row: &[u8], width: i32, out: &mut [i32]) -> usize {
    let mut n = 0usize;
    let mut prev = 0u64;
    let mut base = 0i32;
    let mut push = |word: u64, prev: u64, base: i32, n: &mut usize| {
        let mut d = word ^ ((word >> 1) | (prev << 63));
        while d != 0 {
            let z = d.leading_zeros();
            out[*n] = base + z as i32;
            *n += 1;
            d ^= (1u64 << 63) >> z;
        }
    };
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        let word = u64::from_be_bytes(c.try_into().unwrap_or([0; 8]));
        // A word all of the previous pixel's colour has no changes.
        if word != prev.wrapping_neg() {
            push(word, prev, base, &mut n);
        }
        prev = word & 1;
        base += 64;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        push(u64::from_be_bytes(last), prev, base, &mut n);
    }
    while n > 0 && out[n - 1] >= width {
        n -= 1;
    }
    n
}

/// Encodes a page. MH and MR rows start with an EOL that ends on a byte boundary (T4Options
/// bit 2); MR codes every K-th row one-dimensionally (K = 4 above 150 lines per inch, else 2,
/// as T.4 recommends); MMR ends with an EOFB.
pub fn encode(page: &FaxPage, coding: Coding) -> Vec<u8> {
    let width = page.width as i32;
    let mut w = BitWriter {
        out: Vec::with_capacity(page.data.len() / 8 + 64),
        acc: 0,
        n: 0,
    };
    let changes = page.stride().div_ceil(8) * 64 + 1;
    let mut reference = vec![0i32; changes];
    let mut current = vec![0i32; changes];
    let mut ref_len = 0usize;
    let k = if page.yres > 150.0 { 4 } else { 2 };
    for y in 0..page.height {
        let len = row_changes(page.row(y), width, &mut current);
        let (refl, cur) = (&reference[..ref_len], &current[..len]);
        match coding {
            Coding::Mmr => w.row_2d(refl, cur, width),
            Coding::Mh => {
                w.eol_aligned();
                w.row_1d(cur, width);
            }
            Coding::Mr => {
                w.eol_aligned();
                if y % k == 0 {
                    w.put((1, 1));
                    w.row_1d(cur, width);
                } else {
                    w.put((0, 1));
                    w.row_2d(refl, cur, width);
                }
            }
        }
        std::mem::swap(&mut reference, &mut current);
        ref_len = len;
    }
    if coding == Coding::Mmr {
        w.put(EOL);
        w.put(EOL);
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(width: u32) -> FaxPage {
        let mut p = FaxPage::blank(width, 64, 204.0, 196.0);
        for y in 0..64 {
            for x in 0..width {
                let on = (x / 7 + y / 3) % 5 == 0 || (x + 28 > width && y % 2 == 0) || x == 0;
                if on {
                    p.set_black(x, y);
                }
            }
        }
        p
    }

    #[test]
    fn every_coding_round_trips_pixel_exact() {
        for width in [1728, 1731, 13] {
            let p = sample(width);
            for c in [Coding::Mh, Coding::Mr, Coding::Mmr] {
                let data = encode(&p, c);
                check(&data, c, p.width, p.height).unwrap();
                let back = decode(&data, c, p.width, p.height, 204.0, 196.0).unwrap();
                assert_eq!(back, p, "{c:?} width {width}");
            }
        }
    }

    /// Every code of both colours decodes to its run length whatever bits follow it, and no
    /// code is a prefix of another of the same colour.
    #[test]
    fn run_code_tables_are_prefix_free_and_decode_every_code() {
        for black in [false, true] {
            let codes: Vec<_> = (0..104).map(|i| nth_code(black, i)).collect();
            for (i, &(c, l, _)) in codes.iter().enumerate() {
                for (j, &(d, m, _)) in codes.iter().enumerate() {
                    if i != j && m >= l {
                        assert_ne!(d >> (m - l), c, "code {i} is a prefix of code {j}");
                    }
                }
            }
            // A make-up code is followed by the terminating code for 0 of the same colour.
            let (zero, zero_len, _) = nth_code(black, 0);
            for (code, len, run) in codes {
                let (code, len) = if run < 64 {
                    (code as u64, len as u32)
                } else {
                    (
                        ((code as u64) << zero_len) | zero as u64,
                        (len + zero_len) as u32,
                    )
                };
                for tail in [0u64, u64::MAX, 0x5555_5555_5555_5555] {
                    let bits = (code << (64 - len)) | (tail >> len);
                    let bytes = bits.to_be_bytes();
                    let mut r = BitReader::new(&bytes);
                    let got = if black {
                        r.run::<true>(4000)
                    } else {
                        r.run::<false>(4000)
                    };
                    assert_eq!(got, Ok(run as i32), "black={black} {run}");
                    assert_eq!(r.position(), len as usize);
                }
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let junk: Vec<u8> = (0..4000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for c in [Coding::Mh, Coding::Mr, Coding::Mmr] {
            assert!(check(&junk, c, 1728, 100).is_err(), "{c:?}");
            let _ = decode(&junk, c, 1728, 100, 204.0, 196.0);
        }
    }
}
