//! PDF in and out. In: a warm Ghostscript ([`super::warm_gs`]) renders each page with
//! fit-to-page on fixed media at the fax geometry, under -dSAFER in the sandbox, after a job
//! program of ours has counted the pages and measured them, so that a PDF over the page or
//! page-size limit is refused before anything is rendered. Pages come out as raw 1-bit
//! bitmaps halftoned by Ghostscript's own screen (a clustered-dot round screen at fax
//! resolutions), or as 8-bit grey when faxd dithers itself (Floyd–Steinberg, threshold); faxd
//! codes them (G4, G3 1-D or 2-D) page by page while the next page renders. Out: a fax TIFF is
//! wrapped into a PDF with its CCITT strips unchanged (CCITTFaxDecode), no re-encoding.

use super::Dither;
use super::ccitt::{Coding, FaxPage};
use super::error::ConvertError;
use super::raster::{self, Gray};
use super::tiff_f::{self, EncodedPage};
use super::warm_gs::{Raster, Setup, WarmGs};

/// What a PDF conversion asks for.
#[derive(Clone, Debug)]
pub struct PdfJob {
    pub coding: Coding,
    pub dither: Dither,
    pub xres: u32,
    pub yres: u32,
    pub width: u32,
    pub height: u32,
    pub max_pages: u32,
    pub max_page_inches: u32,
}

/// The job program: count the pages and measure every MediaBox (reporting `PAGES n` and, for
/// a page over the limit, `TOOBIG page width height` in points), then render every page
/// unless refused.
fn program(job: &PdfJob) -> String {
    format!(
        "FaxdIn (r) file runpdfbegin\n\
         pdfpagecount dup FaxdTag (PAGES ) print = flush\n\
         {max} gt {{ FaxdTag (REFUSED) = flush }} {{\n\
           /FaxdFits true def\n\
           1 1 pdfpagecount {{ dup pdfgetpage /MediaBox pget {{ aload pop 3 -1 roll sub abs \
             3 1 roll sub abs 2 copy max {maxpt} gt {{ FaxdTag (TOOBIG ) print 3 -1 roll =only \
             ( ) print =only ( ) print = flush /FaxdFits false def exit }} {{ pop pop }} ifelse \
           }} if pop }} for\n\
           FaxdFits {{ 1 1 pdfpagecount {{ pdfgetpage FaxdShow }} for }} if\n\
         }} ifelse\n\
         runpdfend",
        max = job.max_pages,
        maxpt = job.max_page_inches as u64 * 72,
    )
}

/// Parses a raw PBM (`P4`) or PGM (`P5`, maxval 255) as Ghostscript writes them: magic,
/// width, height (and maxval), with comments, then the samples.
fn parse_pnm(mut data: Vec<u8>) -> Result<(u8, u32, u32, Vec<u8>), String> {
    let magic = match data.get(..2) {
        Some(b"P4") => 4u8,
        Some(b"P5") => 5u8,
        _ => return Err("not a raw PBM/PGM".into()),
    };
    let mut pos = 2;
    let mut fields = Vec::new();
    let want = if magic == 4 { 2 } else { 3 };
    while fields.len() < want {
        while pos < data.len() && data[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if data.get(pos) == Some(&b'#') {
            while pos < data.len() && data[pos] != b'\n' {
                pos += 1;
            }
            continue;
        }
        let start = pos;
        while pos < data.len() && data[pos].is_ascii_digit() {
            pos += 1;
        }
        let v: u32 = std::str::from_utf8(&data[start..pos])
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or("bad header")?;
        fields.push(v);
    }
    pos += 1; // the single whitespace before the samples
    let (w, h) = (fields[0], fields[1]);
    if magic == 5 && fields[2] != 255 {
        return Err(format!("maxval {}", fields[2]));
    }
    let row = if magic == 4 { w.div_ceil(8) } else { w } as usize;
    let need = row * h as usize;
    if data.len() < pos + need {
        return Err(format!(
            "{} of {need} bytes of samples",
            data.len() - pos.min(data.len())
        ));
    }
    data.drain(..pos);
    data.truncate(need);
    Ok((magic, w, h, data))
}

/// Ghostscript's own words from a job's messages, without stack dumps and banner noise.
fn gs_words(lines: &[String]) -> Option<String> {
    let words: Vec<&str> = lines
        .iter()
        .map(|l| l.trim().trim_start_matches("****").trim())
        .filter(|l| {
            !l.is_empty()
                && !l.contains("stack")
                && !l.starts_with("GPL Ghostscript")
                && !l.starts_with("Current allocation")
                && !l.starts_with("Last OS error")
                && !l.starts_with("--")
                && !l.starts_with("Output may be incorrect")
        })
        .take(2)
        .collect();
    (!words.is_empty()).then(|| words.join(" / "))
}

/// Renders a PDF to a multi-page fax TIFF with the warm Ghostscript.
pub fn render(gs: &WarmGs, pdf: &[u8], job: &PdfJob) -> Result<Vec<u8>, ConvertError> {
    let setup = Setup {
        raster: match job.dither {
            Dither::Cluster => Raster::Bilevel,
            Dither::FloydSteinberg | Dither::Threshold => Raster::Gray,
        },
        xres: job.xres,
        yres: job.yres,
        width: job.width,
        height: job.height,
    };
    let (xres, yres) = (job.xres as f32, job.yres as f32);
    let mut pages: Vec<EncodedPage> = Vec::new();
    let mut on_page = |n: u32, data: Vec<u8>| -> Result<(), ConvertError> {
        let bad = |d: String| ConvertError::ToolFailed {
            tool: "ghostscript".into(),
            detail: format!("page {n}: {d}"),
        };
        let (magic, w, h, samples) = parse_pnm(data).map_err(bad)?;
        if (w, h) != (job.width, job.height) {
            return Err(bad(format!(
                "{w}×{h} pixels, not {}×{}",
                job.width, job.height
            )));
        }
        let page = if magic == 4 {
            FaxPage {
                width: w,
                height: h,
                xres,
                yres,
                data: samples,
            }
        } else {
            let g = Gray {
                width: w,
                height: h,
                pixels: samples,
                dpi: None,
            };
            raster::to_bilevel(&g, w, h, xres, yres, job.dither)
        };
        pages.push(EncodedPage::encode(&page, job.coding));
        Ok(())
    };
    let end = gs.run(setup, pdf, &program(job), &mut on_page)?;
    let mut count: Option<u64> = None;
    for m in &end.markers {
        if let Some(n) = m.strip_prefix("PAGES ") {
            count = n.trim().parse().ok();
        }
        if let Some(rest) = m.strip_prefix("TOOBIG ") {
            let v: Vec<f64> = rest
                .split_whitespace()
                .filter_map(|t| t.parse().ok())
                .collect();
            if v.len() == 3 {
                return Err(ConvertError::PageTooLarge {
                    page: v[0] as u32,
                    width_in: v[1] / 72.0,
                    height_in: v[2] / 72.0,
                    limit_in: job.max_page_inches,
                });
            }
        }
    }
    if end
        .diagnostics
        .iter()
        .any(|l| l.to_ascii_lowercase().contains("password"))
    {
        return Err(ConvertError::Encrypted);
    }
    if let Some(p) = count
        && p > job.max_pages as u64
    {
        return Err(ConvertError::TooManyPages {
            pages: p,
            limit: job.max_pages,
        });
    }
    let words = gs_words(&end.diagnostics);
    if let Some(status) = end.died {
        let detail = words.unwrap_or_else(|| format!("Ghostscript exited with {status}"));
        if status.code().is_none() {
            return Err(ConvertError::ToolFailed {
                tool: "ghostscript".into(),
                detail: format!("killed by {status} ({detail})"),
            });
        }
        return Err(ConvertError::malformed("PDF", detail));
    }
    if let Some(e) = &end.error {
        let detail = words.unwrap_or_else(|| format!("Ghostscript error /{e}"));
        return Err(ConvertError::malformed("PDF", detail));
    }
    match count {
        None => Err(ConvertError::malformed("PDF", "no page count")),
        Some(0) => Err(ConvertError::malformed(
            "PDF",
            words.unwrap_or_else(|| "it has no pages".into()),
        )),
        Some(p) if p != end.pages as u64 || pages.len() as u64 != p => Err(
            ConvertError::malformed("PDF", format!("{} of its {p} pages rendered", end.pages)),
        ),
        Some(_) => Ok(tiff_f::write_encoded_fax_tiff(&pages, job.coding)),
    }
}

/// Wraps a fax TIFF into a PDF: one page per TIFF page, sized from its resolution, each strip
/// an image with its CCITT data as it was stored (bit order fixed for FillOrder 2).
pub fn fax_tiff_to_pdf(file: &[u8]) -> Result<Vec<u8>, ConvertError> {
    let ifds = tiff_f::read_ifds(file, 10_000)?;
    let mut w = PdfWriter::default();
    let catalog = w.reserve();
    let pages_id = w.reserve();
    let mut kids = Vec::new();
    for (n, ifd) in ifds.iter().enumerate() {
        let coding = ifd.coding().filter(|_| ifd.is_fax()).ok_or_else(|| {
            ConvertError::Unsupported(format!(
                "page {} is not a CCITT fax page (compression {})",
                n + 1,
                ifd.compression
            ))
        })?;
        let (xres, yres) = ifd.dpi();
        let pw = ifd.width as f64 * 72.0 / xres as f64;
        let ph = ifd.height as f64 * 72.0 / yres as f64;
        let strips = ifd.strips(file)?;
        let mut content = String::new();
        let mut xobjects = String::new();
        let mut row0 = 0u32;
        for (i, strip) in strips.iter().enumerate() {
            let rows = ifd.strip_rows(i);
            if rows == 0 {
                break;
            }
            let k = match coding {
                Coding::Mmr => -1,
                Coding::Mh => 0,
                Coding::Mr => 1,
            };
            let eol = if coding == Coding::Mmr {
                ""
            } else {
                " /EndOfLine true"
            };
            let decode = if ifd.photometric == 1 {
                " /Decode [1 0]"
            } else {
                ""
            };
            let dict = format!(
                "<< /Type /XObject /Subtype /Image /Width {} /Height {rows} /BitsPerComponent 1 \
                 /ColorSpace /DeviceGray /Filter /CCITTFaxDecode /DecodeParms << /K {k} /Columns {} \
                 /Rows {rows}{eol} /BlackIs1 false >>{decode} /Length {} >>",
                ifd.width,
                ifd.width,
                strip.len()
            );
            let id = w.stream(&dict, strip);
            xobjects.push_str(&format!("/S{i} {id} 0 R "));
            let sh = rows as f64 * 72.0 / yres as f64;
            let y = ph - (row0 + rows) as f64 * 72.0 / yres as f64;
            content.push_str(&format!("q {pw:.4} 0 0 {sh:.4} 0 {y:.4} cm /S{i} Do Q\n"));
            row0 += rows;
        }
        let cid = w.stream(
            &format!("<< /Length {} >>", content.len()),
            content.as_bytes(),
        );
        let page = w.object(format!(
            "<< /Type /Page /Parent {pages_id} 0 R /MediaBox [0 0 {pw:.4} {ph:.4}] \
             /Resources << /XObject << {xobjects}>> >> /Contents {cid} 0 R >>"
        ));
        kids.push(page);
    }
    let kids_s: Vec<String> = kids.iter().map(|k| format!("{k} 0 R")).collect();
    w.set(
        pages_id,
        format!(
            "<< /Type /Pages /Count {} /Kids [{}] >>",
            kids.len(),
            kids_s.join(" ")
        ),
    );
    w.set(catalog, "<< /Type /Catalog /Pages 2 0 R >>".into());
    Ok(w.finish(catalog))
}

/// A minimal PDF writer: numbered objects, a classic xref table.
#[derive(Default)]
struct PdfWriter {
    objects: Vec<Option<Vec<u8>>>,
}

impl PdfWriter {
    fn reserve(&mut self) -> usize {
        self.objects.push(None);
        self.objects.len()
    }
    fn set(&mut self, id: usize, body: String) {
        self.objects[id - 1] = Some(body.into_bytes());
    }
    fn object(&mut self, body: String) -> usize {
        self.objects.push(Some(body.into_bytes()));
        self.objects.len()
    }
    fn stream(&mut self, dict: &str, data: &[u8]) -> usize {
        let mut b = Vec::with_capacity(dict.len() + data.len() + 32);
        b.extend_from_slice(dict.as_bytes());
        b.extend_from_slice(b"\nstream\n");
        b.extend_from_slice(data);
        b.extend_from_slice(b"\nendstream");
        self.objects.push(Some(b));
        self.objects.len()
    }
    fn finish(self, root: usize) -> Vec<u8> {
        let mut out = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
        let mut offsets = Vec::with_capacity(self.objects.len());
        for (i, o) in self.objects.iter().enumerate() {
            offsets.push(out.len());
            out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
            out.extend_from_slice(o.as_deref().unwrap_or(b"null"));
            out.extend_from_slice(b"\nendobj\n");
        }
        let xref = out.len();
        out.extend_from_slice(
            format!("xref\n0 {}\n0000000000 65535 f \n", offsets.len() + 1).as_bytes(),
        );
        for o in offsets {
            out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
        }
        out.extend_from_slice(
            format!(
                "trailer\n<< /Size {} /Root {root} 0 R >>\nstartxref\n{xref}\n%%EOF\n",
                self.objects.len() + 1
            )
            .as_bytes(),
        );
        out
    }
}
