//! PNG previews of fax pages: a thumbnail and a full view, grey, with the page's aspect on
//! paper restored (normal-resolution rows are half as tall as they are wide).

use super::ccitt::FaxPage;
use super::error::ConvertError;
use super::raster::{self, Gray};

/// Which preview.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreviewSize {
    /// 216 pixels wide.
    Thumbnail,
    /// Full width (1728 pixels), square pixels.
    Full,
    /// A given width.
    Width(u32),
}

/// A rendered preview.
#[derive(Clone, Debug)]
pub struct Preview {
    pub width: u32,
    pub height: u32,
    pub png: Vec<u8>,
}

/// The page as grey pixels at `width`, square pixels on paper.
pub fn to_gray(page: &FaxPage, size: PreviewSize) -> Gray {
    let width = match size {
        PreviewSize::Thumbnail => 216,
        PreviewSize::Full => page.width,
        PreviewSize::Width(w) => w.clamp(16, 4 * page.width),
    };
    let paper_h = page.height as f64 / page.yres as f64;
    let paper_w = page.width as f64 / page.xres as f64;
    let height = ((width as f64 * paper_h / paper_w).round() as u32).max(1);
    let mut px = Vec::with_capacity((page.width * page.height) as usize);
    for y in 0..page.height {
        let row = page.row(y);
        for x in 0..page.width {
            px.push(if row[(x / 8) as usize] & (0x80 >> (x % 8)) != 0 {
                0
            } else {
                255
            });
        }
    }
    let g = Gray {
        width: page.width,
        height: page.height,
        pixels: px,
        dpi: None,
    };
    raster::resize(&g, width, height)
}

/// Renders one page to PNG.
pub fn render(page: &FaxPage, size: PreviewSize) -> Result<Preview, ConvertError> {
    let g = to_gray(page, size);
    let png = encode_png(&g)?;
    Ok(Preview {
        width: g.width,
        height: g.height,
        png,
    })
}

/// Encodes grey pixels as an 8-bit greyscale PNG.
pub fn encode_png(g: &Gray) -> Result<Vec<u8>, ConvertError> {
    use image::ImageEncoder;
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(&g.pixels, g.width, g.height, image::ExtendedColorType::L8)
        .map_err(|e| ConvertError::Io(std::io::Error::other(e)))?;
    Ok(out)
}
