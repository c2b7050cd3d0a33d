//! Image input in-process: PNG, JPEG, GIF and BMP through the `image` crate and TIFF (any
//! compression, colour, grey or bilevel, multi-page) through the `tiff` crate and faxd's CCITT
//! decoder, each checked against the pixel limit from its header before it is decoded.

use std::io::Cursor;

use super::ccitt::FaxPage;
use super::error::ConvertError;
use super::raster::Gray;
use super::tiff_f;

/// A decoded input page: grey pixels, or a bilevel fax page kept as it is.
pub enum InputPage {
    Gray(Gray),
    Bilevel(FaxPage),
}

fn check_pixels(w: u64, h: u64, limit: u64) -> Result<(), ConvertError> {
    if w.saturating_mul(h) > limit || w == 0 || h == 0 {
        return Err(ConvertError::TooManyPixels {
            width: w,
            height: h,
            limit,
        });
    }
    Ok(())
}

/// Decodes PNG, JPEG, GIF (first frame) or BMP to grey; transparency becomes white.
pub fn decode_image(data: &[u8], max_pixels: u64) -> Result<Gray, ConvertError> {
    let bad = |e: image::ImageError| match e {
        image::ImageError::Limits(l) => {
            ConvertError::Refused(format!("image exceeds a decoding limit: {l}"))
        }
        e => ConvertError::malformed("image", e),
    };
    let reader = || {
        image::ImageReader::new(Cursor::new(data))
            .with_guessed_format()
            .map_err(ConvertError::Io)
    };
    let (w, h) = reader()?.into_dimensions().map_err(bad)?;
    check_pixels(w as u64, h as u64, max_pixels)?;
    let mut r = reader()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(64 << 20));
    r.limits(limits);
    let img = r.decode().map_err(bad)?;
    let la = img.to_luma_alpha8();
    let pixels = la
        .pixels()
        .map(|p| {
            let [l, a] = p.0;
            // Composite over white.
            ((l as u32 * a as u32 + 255 * (255 - a as u32)) / 255) as u8
        })
        .collect();
    Ok(Gray {
        width: w,
        height: h,
        pixels,
        dpi: None,
    })
}

/// Decodes every page of a TIFF: CCITT pages with faxd's decoder, others with the `tiff` crate.
pub fn decode_tiff(
    data: &[u8],
    max_pages: u32,
    max_pixels: u64,
) -> Result<Vec<InputPage>, ConvertError> {
    let ifds = tiff_f::read_ifds(data, max_pages)?;
    for ifd in &ifds {
        check_pixels(ifd.width as u64, ifd.height as u64, max_pixels)?;
    }
    if ifds.iter().all(|i| i.is_ccitt()) {
        return ifds
            .iter()
            .enumerate()
            .map(|(n, ifd)| tiff_f::decode_page(data, ifd, n + 1).map(InputPage::Bilevel))
            .collect();
    }
    let bad = |e: tiff::TiffError| match e {
        tiff::TiffError::UnsupportedError(u) => ConvertError::Unsupported(format!("TIFF: {u}")),
        other => ConvertError::malformed("TIFF", other),
    };
    let mut dec = tiff::decoder::Decoder::new(Cursor::new(data)).map_err(bad)?;
    let mut limits = tiff::decoder::Limits::default();
    limits.decoding_buffer_size = (max_pixels as usize).saturating_mul(8);
    dec = dec.with_limits(limits);
    let mut pages = Vec::new();
    for (n, ifd) in ifds.iter().enumerate() {
        if n > 0 {
            dec.next_image().map_err(bad)?;
        }
        if ifd.is_ccitt() {
            pages.push(InputPage::Bilevel(tiff_f::decode_page(data, ifd, n + 1)?));
            continue;
        }
        let (w, h) = dec.dimensions().map_err(bad)?;
        let ct = dec.colortype().map_err(bad)?;
        let img = dec.read_image().map_err(bad)?;
        let dpi = Some(ifd.dpi()).filter(|_| ifd.xres.is_some() && ifd.yres.is_some());
        pages.push(InputPage::Gray(Gray {
            width: w,
            height: h,
            pixels: to_gray(img, ct, w, h)?,
            dpi,
        }));
    }
    Ok(pages)
}

fn to_gray(
    img: tiff::decoder::DecodingResult,
    ct: tiff::ColorType,
    w: u32,
    h: u32,
) -> Result<Vec<u8>, ConvertError> {
    use tiff::ColorType as C;
    use tiff::decoder::DecodingResult as D;
    let n = (w as usize) * (h as usize);
    let unsupported = || ConvertError::Unsupported(format!("TIFF colour type {ct:?}"));
    let v8: Vec<u8> = match img {
        D::U8(v) => v,
        D::U16(v) => v.into_iter().map(|x| (x >> 8) as u8).collect(),
        _ => return Err(unsupported()),
    };
    let luma =
        |r: u8, g: u8, b: u8| ((r as u32 * 299 + g as u32 * 587 + b as u32 * 114) / 1000) as u8;
    let px: Vec<u8> = match ct {
        C::Gray(1) => {
            let stride = (w as usize).div_ceil(8);
            let mut out = Vec::with_capacity(n);
            for y in 0..h as usize {
                for x in 0..w as usize {
                    let bit = v8
                        .get(y * stride + x / 8)
                        .map(|b| b & (0x80 >> (x % 8)) != 0)
                        .unwrap_or(false);
                    out.push(if bit { 255 } else { 0 });
                }
            }
            out
        }
        C::Gray(_) => v8,
        C::GrayA(_) => v8
            .chunks_exact(2)
            .map(|p| ((p[0] as u32 * p[1] as u32 + 255 * (255 - p[1] as u32)) / 255) as u8)
            .collect(),
        C::RGB(_) => v8.chunks_exact(3).map(|p| luma(p[0], p[1], p[2])).collect(),
        // The decoder leaves JPEG's YCbCr unconverted: Y is the grey value.
        C::YCbCr(_) => v8.chunks_exact(3).map(|p| p[0]).collect(),
        C::RGBA(_) => v8
            .chunks_exact(4)
            .map(|p| {
                let l = luma(p[0], p[1], p[2]) as u32;
                ((l * p[3] as u32 + 255 * (255 - p[3] as u32)) / 255) as u8
            })
            .collect(),
        C::CMYK(_) => v8
            .chunks_exact(4)
            .map(|p| {
                let k = 255 - p[3] as u32;
                let r = (255 - p[0] as u32) * k / 255;
                let g = (255 - p[1] as u32) * k / 255;
                let b = (255 - p[2] as u32) * k / 255;
                luma(r as u8, g as u8, b as u8)
            })
            .collect(),
        _ => return Err(unsupported()),
    };
    if px.len() < n {
        return Err(ConvertError::malformed(
            "TIFF",
            "fewer pixels than its size says",
        ));
    }
    // WhiteIsZero needs nothing here: the decoder has already turned it into BlackIsZero.
    let mut px = px;
    px.truncate(n);
    Ok(px)
}
