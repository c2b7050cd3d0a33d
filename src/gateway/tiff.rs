//! Fax-page TIFF files through the system libtiff (the library spandsp itself reads and writes
//! them with): write bilevel pages as CCITT G3/G4 TIFF-F, read any bilevel TIFF back into
//! pixels, count pages. Blocking file I/O: call from a blocking thread, never from an actor.

use std::ffi::{CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};

// libtiff is linked by spandsp-sys (pkg-config libtiff-4); named here for clarity.
#[link(name = "tiff")]
unsafe extern "C" {
    fn TIFFOpen(path: *const c_char, mode: *const c_char) -> *mut c_void;
    fn TIFFClose(t: *mut c_void);
    fn TIFFSetField(t: *mut c_void, tag: u32, ...) -> c_int;
    fn TIFFGetField(t: *mut c_void, tag: u32, ...) -> c_int;
    fn TIFFWriteScanline(t: *mut c_void, buf: *mut c_void, row: u32, sample: u16) -> c_int;
    fn TIFFReadScanline(t: *mut c_void, buf: *mut c_void, row: u32, sample: u16) -> c_int;
    fn TIFFWriteDirectory(t: *mut c_void) -> c_int;
    fn TIFFReadDirectory(t: *mut c_void) -> c_int;
    fn TIFFNumberOfDirectories(t: *mut c_void) -> u32;
}

const TAG_SUBFILETYPE: u32 = 254;
const TAG_IMAGEWIDTH: u32 = 256;
const TAG_IMAGELENGTH: u32 = 257;
const TAG_BITSPERSAMPLE: u32 = 258;
const TAG_COMPRESSION: u32 = 259;
const TAG_PHOTOMETRIC: u32 = 262;
const TAG_FILLORDER: u32 = 266;
const TAG_SAMPLESPERPIXEL: u32 = 277;
const TAG_ROWSPERSTRIP: u32 = 278;
const TAG_XRESOLUTION: u32 = 282;
const TAG_YRESOLUTION: u32 = 283;
const TAG_PLANARCONFIG: u32 = 284;
const TAG_GROUP3OPTIONS: u32 = 292;
const TAG_RESOLUTIONUNIT: u32 = 296;
const TAG_PAGENUMBER: u32 = 297;
const FILETYPE_PAGE: c_int = 2;
const PHOTOMETRIC_MINISWHITE: c_int = 0;
const FILLORDER_LSB2MSB: c_int = 2;
const RESUNIT_INCH: c_int = 2;
const T4OPTIONS_2DENCODING: u32 = 1;

/// The page resolution of a fax, in dots per inch (x is always 204).
pub const FINE_DPI: (f32, f32) = (204.0, 196.0);
/// Standard (normal) resolution.
pub const STANDARD_DPI: (f32, f32) = (204.0, 98.0);
/// The width of an ISO A4 / letter fax line.
pub const FAX_WIDTH: u32 = 1728;

/// Errors reading or writing a fax TIFF.
#[derive(Debug, thiserror::Error)]
pub enum TiffError {
    #[error("cannot open TIFF {path}")]
    Open { path: PathBuf },
    #[error("TIFF {path}: {message}")]
    Bad { path: PathBuf, message: String },
}

/// CCITT compression of a written TIFF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// T.4 2-D (Group 3).
    G3,
    /// T.6 (Group 4).
    G4,
}

/// One bilevel page: rows of packed pixels, most significant bit first, 1 = black.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    pub width: u32,
    /// Dots per inch (x, y).
    pub dpi: (f32, f32),
    pub rows: Vec<Vec<u8>>,
}

impl Page {
    /// A white page.
    pub fn blank(width: u32, height: u32, dpi: (f32, f32)) -> Self {
        Self {
            width,
            dpi,
            rows: vec![vec![0; width.div_ceil(8) as usize]; height as usize],
        }
    }

    /// Sets one pixel black (out-of-range coordinates are ignored).
    pub fn set_black(&mut self, x: u32, y: u32) {
        if x < self.width
            && let Some(row) = self.rows.get_mut(y as usize)
            && let Some(byte) = row.get_mut((x / 8) as usize)
        {
            *byte |= 0x80 >> (x % 8);
        }
    }

    /// Number of black pixels.
    pub fn black_pixels(&self) -> u64 {
        self.rows
            .iter()
            .flatten()
            .map(|b| u64::from(b.count_ones()))
            .sum()
    }
}

/// An open libtiff handle, closed on drop.
struct Handle {
    raw: *mut c_void,
    path: PathBuf,
}

impl Handle {
    fn open(path: &Path, mode: &std::ffi::CStr) -> Result<Self, TiffError> {
        let c_path =
            CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| TiffError::Open {
                path: path.to_path_buf(),
            })?;
        // SAFETY: both strings are NUL-terminated and outlive the call.
        let raw = unsafe { TIFFOpen(c_path.as_ptr(), mode.as_ptr()) };
        if raw.is_null() {
            return Err(TiffError::Open {
                path: path.to_path_buf(),
            });
        }
        Ok(Self {
            raw,
            path: path.to_path_buf(),
        })
    }

    fn bad(&self, message: impl Into<String>) -> TiffError {
        TiffError::Bad {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    fn set_int(&self, tag: u32, value: c_int) -> Result<(), TiffError> {
        // SAFETY: integer tags take one C int (uint16 and uint32 values promote to int).
        if unsafe { TIFFSetField(self.raw, tag, value) } != 1 {
            return Err(self.bad(format!("cannot set tag {tag}")));
        }
        Ok(())
    }

    fn set_f64(&self, tag: u32, value: f64) -> Result<(), TiffError> {
        // SAFETY: rational tags take one double (float promotes to double).
        if unsafe { TIFFSetField(self.raw, tag, value) } != 1 {
            return Err(self.bad(format!("cannot set tag {tag}")));
        }
        Ok(())
    }

    fn get_u32(&self, tag: u32) -> Option<u32> {
        let mut v: u32 = 0;
        // SAFETY: width and length are uint32 tags, read through a uint32 pointer.
        (unsafe { TIFFGetField(self.raw, tag, &mut v as *mut u32) } == 1).then_some(v)
    }

    fn get_u16(&self, tag: u32) -> Option<u16> {
        let mut v: u16 = 0;
        // SAFETY: bits-per-sample is a uint16 tag, read through a uint16 pointer.
        (unsafe { TIFFGetField(self.raw, tag, &mut v as *mut u16) } == 1).then_some(v)
    }

    fn get_f32(&self, tag: u32) -> Option<f32> {
        let mut v: f32 = 0.0;
        // SAFETY: resolutions are float tags, read through a float pointer.
        (unsafe { TIFFGetField(self.raw, tag, &mut v as *mut f32) } == 1).then_some(v)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: `raw` came from TIFFOpen and is closed once.
        unsafe { TIFFClose(self.raw) }
    }
}

/// Writes `pages` as a multi-page TIFF-F (bilevel, min-is-white, LSB-first fill order as fax
/// software expects, resolution in inches).
pub fn write_pages(path: &Path, pages: &[Page], compression: Compression) -> Result<(), TiffError> {
    let t = Handle::open(path, c"w")?;
    let total = pages.len() as c_int;
    for (n, page) in pages.iter().enumerate() {
        let bytes = page.width.div_ceil(8) as usize;
        t.set_int(TAG_SUBFILETYPE, FILETYPE_PAGE)?;
        t.set_int(TAG_IMAGEWIDTH, page.width as c_int)?;
        t.set_int(TAG_IMAGELENGTH, page.rows.len() as c_int)?;
        t.set_int(TAG_BITSPERSAMPLE, 1)?;
        t.set_int(TAG_SAMPLESPERPIXEL, 1)?;
        t.set_int(TAG_PLANARCONFIG, 1)?;
        t.set_int(TAG_PHOTOMETRIC, PHOTOMETRIC_MINISWHITE)?;
        t.set_int(TAG_FILLORDER, FILLORDER_LSB2MSB)?;
        match compression {
            Compression::G3 => {
                t.set_int(TAG_COMPRESSION, 3)?;
                t.set_int(TAG_GROUP3OPTIONS, T4OPTIONS_2DENCODING as c_int)?;
            }
            Compression::G4 => t.set_int(TAG_COMPRESSION, 4)?,
        }
        t.set_int(TAG_ROWSPERSTRIP, page.rows.len().max(1) as c_int)?;
        t.set_int(TAG_RESOLUTIONUNIT, RESUNIT_INCH)?;
        t.set_f64(TAG_XRESOLUTION, f64::from(page.dpi.0))?;
        t.set_f64(TAG_YRESOLUTION, f64::from(page.dpi.1))?;
        // SAFETY: PAGENUMBER takes two uint16 values, promoted to int.
        if unsafe { TIFFSetField(t.raw, TAG_PAGENUMBER, n as c_int, total) } != 1 {
            return Err(t.bad("cannot set the page number"));
        }
        for (r, row) in page.rows.iter().enumerate() {
            if row.len() < bytes {
                return Err(t.bad(format!("page {} row {r} is too short", n + 1)));
            }
            let mut buf = row.clone();
            // SAFETY: `buf` holds at least one scanline of `bytes` bytes.
            if unsafe { TIFFWriteScanline(t.raw, buf.as_mut_ptr().cast(), r as u32, 0) } != 1 {
                return Err(t.bad(format!("cannot write page {} row {r}", n + 1)));
            }
        }
        // SAFETY: an open handle in write mode.
        if unsafe { TIFFWriteDirectory(t.raw) } != 1 {
            return Err(t.bad(format!("cannot write page {}", n + 1)));
        }
    }
    Ok(())
}

/// Reads every page of a bilevel TIFF into pixels (1 = black), whatever its compression.
pub fn read_pages(path: &Path) -> Result<Vec<Page>, TiffError> {
    let t = Handle::open(path, c"r")?;
    let mut pages = Vec::new();
    loop {
        let n = pages.len() + 1;
        let width = t
            .get_u32(TAG_IMAGEWIDTH)
            .ok_or_else(|| t.bad(format!("page {n} has no width")))?;
        let height = t
            .get_u32(TAG_IMAGELENGTH)
            .ok_or_else(|| t.bad(format!("page {n} has no length")))?;
        let bits = t.get_u16(TAG_BITSPERSAMPLE).unwrap_or(1);
        if bits != 1 {
            return Err(t.bad(format!("page {n} is not bilevel ({bits} bits per sample)")));
        }
        let dpi = (
            t.get_f32(TAG_XRESOLUTION).unwrap_or(0.0),
            t.get_f32(TAG_YRESOLUTION).unwrap_or(0.0),
        );
        let bytes = width.div_ceil(8) as usize;
        let mut rows = Vec::with_capacity(height as usize);
        for r in 0..height {
            // Generous slack: libtiff may write up to its own scanline size.
            let mut row = vec![0u8; bytes + 8];
            // SAFETY: `row` is at least one scanline long.
            if unsafe { TIFFReadScanline(t.raw, row.as_mut_ptr().cast(), r, 0) } != 1 {
                return Err(t.bad(format!("cannot read page {n} row {r}")));
            }
            row.truncate(bytes);
            rows.push(row);
        }
        pages.push(Page { width, dpi, rows });
        // SAFETY: an open handle in read mode.
        if unsafe { TIFFReadDirectory(t.raw) } != 1 {
            break;
        }
    }
    Ok(pages)
}

/// The number of pages (directories) in a TIFF; an error if it cannot be opened.
pub fn count_pages(path: &Path) -> Result<u32, TiffError> {
    let t = Handle::open(path, c"r")?;
    // SAFETY: an open handle.
    Ok(unsafe { TIFFNumberOfDirectories(t.raw) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_round_trip_in_g3_and_g4() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Page::blank(FAX_WIDTH, 120, FINE_DPI);
        let mut b = Page::blank(FAX_WIDTH, 80, FINE_DPI);
        for i in 0..100 {
            a.set_black(i * 17 % FAX_WIDTH, i);
            b.set_black(FAX_WIDTH - 1 - i, i % 80);
        }
        for c in [Compression::G3, Compression::G4] {
            let path = dir.path().join(format!("{c:?}.tiff"));
            write_pages(&path, &[a.clone(), b.clone()], c).unwrap();
            assert_eq!(count_pages(&path).unwrap(), 2);
            let back = read_pages(&path).unwrap();
            assert_eq!(back, vec![a.clone(), b.clone()]);
        }
        assert!(matches!(
            read_pages(&dir.path().join("missing.tiff")),
            Err(TiffError::Open { .. })
        ));
    }
}
