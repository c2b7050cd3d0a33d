//! In-process rasterising: grey images scaled to fit a fax page without cropping (area
//! averaging down, bilinear up, separate x and y scales for 204×98/196/392), centred, then
//! made 1-bit by a clustered-dot screen, Floyd–Steinberg or a threshold.

use super::Dither;
use super::ccitt::FaxPage;

/// An 8-bit grey image (0 = black, 255 = white) with its resolution if known.
#[derive(Clone, Debug)]
pub struct Gray {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
    /// Dots per inch across and down, when the file says.
    pub dpi: Option<(f32, f32)>,
}

/// Weights of source samples for each destination sample along one axis.
fn axis_weights(src: u32, dst: u32) -> Vec<(u32, Vec<f32>)> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|d| {
            if scale >= 1.0 {
                // Area average over [d*scale, (d+1)*scale).
                let a = d as f64 * scale;
                let b = ((d + 1) as f64 * scale).min(src as f64);
                let first = a.floor() as u32;
                let last = (b.ceil() as u32).min(src).max(first + 1);
                let w: Vec<f32> = (first..last)
                    .map(|s| {
                        let lo = (s as f64).max(a);
                        let hi = ((s + 1) as f64).min(b);
                        (hi - lo).max(0.0) as f32
                    })
                    .collect();
                let sum: f32 = w.iter().sum::<f32>().max(1e-6);
                (first, w.into_iter().map(|v| v / sum).collect())
            } else {
                let c = ((d as f64 + 0.5) * scale - 0.5).max(0.0);
                let i = (c.floor() as u32).min(src - 1);
                let f = (c - i as f64) as f32;
                if i + 1 < src {
                    (i, vec![1.0 - f, f])
                } else {
                    (i, vec![1.0])
                }
            }
        })
        .collect()
}

/// Resamples to `w`×`h`.
pub fn resize(img: &Gray, w: u32, h: u32) -> Gray {
    let w = w.max(1);
    let h = h.max(1);
    let xw = axis_weights(img.width, w);
    let mut tmp = vec![0f32; (w * img.height) as usize];
    for y in 0..img.height as usize {
        let row = &img.pixels[y * img.width as usize..(y + 1) * img.width as usize];
        for (x, (first, ws)) in xw.iter().enumerate() {
            let mut acc = 0f32;
            for (k, wt) in ws.iter().enumerate() {
                acc += row[*first as usize + k] as f32 * wt;
            }
            tmp[y * w as usize + x] = acc;
        }
    }
    let yw = axis_weights(img.height, h);
    let mut out = vec![0u8; (w * h) as usize];
    for (y, (first, ws)) in yw.iter().enumerate() {
        for x in 0..w as usize {
            let mut acc = 0f32;
            for (k, wt) in ws.iter().enumerate() {
                acc += tmp[(*first as usize + k) * w as usize + x] * wt;
            }
            out[y * w as usize + x] = acc.round().clamp(0.0, 255.0) as u8;
        }
    }
    Gray {
        width: w,
        height: h,
        pixels: out,
        dpi: None,
    }
}

/// The 8×8 threshold tile of a 45° clustered-dot screen (two dots per tile), with a tone curve
/// that keeps mid-greys from going too dark.
fn cluster_tile() -> [[u8; 8]; 8] {
    let mut cells: Vec<(f64, usize, usize)> = Vec::with_capacity(64);
    for y in 0..8 {
        for x in 0..8 {
            let u = (x as f64 + 0.5) / 8.0;
            let v = (y as f64 + 0.5) / 8.0;
            let a = std::f64::consts::PI * 2.0 * (u + v) / 2.0 * 2.0;
            let b = std::f64::consts::PI * 2.0 * (u - v) / 2.0 * 2.0;
            let spot = a.cos() + b.cos();
            cells.push((spot, x, y));
        }
    }
    cells.sort_by(|p, q| q.0.total_cmp(&p.0).then(p.1.cmp(&q.1)).then(p.2.cmp(&q.2)));
    let mut t = [[0u8; 8]; 8];
    for (rank, (_, x, y)) in cells.iter().enumerate() {
        let level = (rank as f64 + 0.5) / 64.0;
        // Dot gain correction: a slightly lighter response than linear.
        let level = level.powf(1.25);
        t[*y][*x] = (level * 255.0).round().clamp(1.0, 254.0) as u8;
    }
    t
}

/// Places `img` (already at its final size) centred on a white `width`×`height` page and makes
/// it 1-bit.
pub fn to_bilevel(
    img: &Gray,
    width: u32,
    height: u32,
    xres: f32,
    yres: f32,
    dither: Dither,
) -> FaxPage {
    let mut page = FaxPage::blank(width, height, xres, yres);
    let ox = (width.saturating_sub(img.width)) / 2;
    let oy = (height.saturating_sub(img.height)) / 2;
    let tile = cluster_tile();
    let w = img.width.min(width) as usize;
    let h = img.height.min(height) as usize;
    let mut err_cur = vec![0f32; w + 2];
    let mut err_next = vec![0f32; w + 2];
    for y in 0..h {
        let row = &img.pixels[y * img.width as usize..y * img.width as usize + w];
        for x in 0..w {
            let v = row[x];
            let black = match dither {
                Dither::Threshold => v < 150,
                Dither::Cluster => {
                    if v == 0 || v == 255 {
                        v == 0
                    } else {
                        v < tile[(y + oy as usize) % 8][(x + ox as usize) % 8]
                    }
                }
                Dither::FloydSteinberg => {
                    let want = v as f32 + err_cur[x + 1];
                    let black = want < 128.0;
                    let e = want - if black { 0.0 } else { 255.0 };
                    err_cur[x + 2] += e * 7.0 / 16.0;
                    err_next[x] += e * 3.0 / 16.0;
                    err_next[x + 1] += e * 5.0 / 16.0;
                    err_next[x + 2] += e / 16.0;
                    black
                }
            };
            if black {
                page.set_black(ox + x as u32, oy + y as u32);
            }
        }
        if dither == Dither::FloydSteinberg {
            std::mem::swap(&mut err_cur, &mut err_next);
            err_next.iter_mut().for_each(|e| *e = 0.0);
        }
    }
    page
}

/// The size an image takes on a `page_w`×`page_h` pixel page at `xres`×`yres`: as large as
/// fits without cropping, keeping its aspect on paper (square source pixels unless the file
/// gives a resolution).
pub fn fit(img: &Gray, page_w: u32, page_h: u32, xres: f32, yres: f32) -> (u32, u32) {
    let (dx, dy) = img.dpi.unwrap_or((1.0, 1.0));
    let w_in = img.width as f64 / dx as f64;
    let h_in = img.height as f64 / dy as f64;
    let page_w_in = page_w as f64 / xres as f64;
    let page_h_in = page_h as f64 / yres as f64;
    let s = (page_w_in / w_in).min(page_h_in / h_in);
    let w = ((w_in * s * xres as f64).round() as u32).clamp(1, page_w);
    let h = ((h_in * s * yres as f64).round() as u32).clamp(1, page_h);
    (w, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_without_cropping_and_keeps_aspect() {
        let img = Gray {
            width: 1000,
            height: 500,
            pixels: vec![128; 500_000],
            dpi: None,
        };
        assert_eq!(fit(&img, 1728, 2156, 204.0, 196.0), (1728, 830));
        // Normal resolution halves the rows.
        assert_eq!(fit(&img, 1728, 1078, 204.0, 98.0), (1728, 415));
        let tall = Gray {
            width: 100,
            height: 1000,
            pixels: vec![0; 100_000],
            dpi: None,
        };
        let (w, h) = fit(&tall, 1728, 2156, 204.0, 196.0);
        assert_eq!(h, 2156);
        assert!(w < 300);
    }

    #[test]
    fn screens_keep_mid_grey_near_half_ink() {
        let img = Gray {
            width: 256,
            height: 256,
            pixels: vec![128; 65536],
            dpi: None,
        };
        for d in [Dither::Cluster, Dither::FloydSteinberg] {
            let p = to_bilevel(&img, 256, 256, 204.0, 196.0, d);
            let ink = p.ink();
            assert!((0.3..0.7).contains(&ink), "{d:?}: {ink}");
        }
        let p = to_bilevel(&img, 256, 256, 204.0, 196.0, Dither::Threshold);
        assert_eq!(p.ink(), 1.0);
        let r = resize(&img, 64, 512);
        assert_eq!((r.width, r.height), (64, 512));
        assert!(r.pixels.iter().all(|&v| v == 128));
    }
}
