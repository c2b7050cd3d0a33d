//! PDF in and out. In: Ghostscript renders a PDF straight to a fax TIFF (`tiffg4`, `tiffg3`
//! or `tiffg32d`) with fit-to-page on fixed media, under -dSAFER in the sandbox, after a
//! PostScript prologue of ours has counted the pages and measured them, so that a PDF over
//! the page or page-size limit is refused before anything is rendered. Out: a fax TIFF is
//! wrapped into a PDF with its CCITT strips unchanged (CCITTFaxDecode), no re-encoding.

use std::path::Path;
use std::process::Command;

use super::ccitt::Coding;
use super::error::ConvertError;
use super::sandbox::{self, Limits};
use super::tiff_f;

/// Ghostscript's fax device for a coding.
pub fn gs_device(coding: Coding) -> &'static str {
    match coding {
        Coding::Mmr => "tiffg4",
        Coding::Mh => "tiffg3",
        Coding::Mr => "tiffg32d",
    }
}

fn ps_string(p: &Path) -> String {
    let mut s = String::from("(");
    for c in p.to_string_lossy().chars() {
        match c {
            '(' | ')' | '\\' => {
                s.push('\\');
                s.push(c);
            }
            _ => s.push(c),
        }
    }
    s.push(')');
    s
}

/// What Ghostscript is asked to do.
pub struct GsJob<'a> {
    pub input: &'a Path,
    pub output: &'a Path,
    pub coding: Coding,
    pub xres: u32,
    pub yres: u32,
    pub width: u32,
    pub height: u32,
    pub max_pages: u32,
    pub max_page_inches: u32,
}

/// Renders `job.input` to a multi-page fax TIFF at `job.output`; returns the page count.
pub fn render(job: &GsJob, limits: &Limits, workdir: &Path) -> Result<u32, ConvertError> {
    let prologue = format!(
        "/FaxdIn {input} (r) file def FaxdIn runpdfbegin \
         pdfpagecount dup (FAXD-PAGES ) print = flush {max} gt {{ quit }} if \
         1 1 pdfpagecount {{ dup pdfgetpage /MediaBox pget {{ aload pop 3 -1 roll sub abs \
         3 1 roll sub abs 2 copy max {maxpt} gt {{ (FAXD-TOOBIG ) print 3 -1 roll =only \
         ( ) print =only ( ) print = flush quit }} {{ pop pop }} ifelse }} if pop }} for runpdfend",
        input = ps_string(job.input),
        max = job.max_pages,
        maxpt = job.max_page_inches * 72,
    );
    let mut cmd = Command::new("gs");
    cmd.args([
        "-q",
        "-dSAFER",
        "-dBATCH",
        "-dNOPAUSE",
        "-dNOPROMPT",
        "-dPDFFitPage",
        "-dFIXEDMEDIA",
        "-dTextAlphaBits=1",
        "-dGraphicsAlphaBits=1",
    ])
    .arg(format!("-r{}x{}", job.xres, job.yres))
    .arg(format!("-g{}x{}", job.width, job.height))
    .arg("-dFirstPage=1")
    .arg(format!("-dLastPage={}", job.max_pages))
    .arg(format!("-sDEVICE={}", gs_device(job.coding)))
    .arg(format!("-sOutputFile={}", job.output.display()))
    .arg(format!("--permit-file-read={}", job.input.display()))
    .arg("-c")
    .arg(prologue)
    .arg("-f")
    .arg(job.input);
    let out = sandbox::run("ghostscript", cmd, limits, workdir)?;
    let all = format!("{}\n{}", out.stdout, out.stderr);
    let mut pages: Option<u64> = None;
    for line in out.stdout.lines() {
        if let Some(n) = line.strip_prefix("FAXD-PAGES ") {
            pages = n.trim().parse().ok();
        }
        if let Some(rest) = line.strip_prefix("FAXD-TOOBIG ") {
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
    let lower = all.to_ascii_lowercase();
    if lower.contains("password") {
        return Err(ConvertError::Encrypted);
    }
    if let Some(p) = pages
        && p > job.max_pages as u64
    {
        return Err(ConvertError::TooManyPages {
            pages: p,
            limit: job.max_pages,
        });
    }
    if !out.status.success() || pages.is_none() {
        // Ghostscript's own words, without its stack dumps and banner noise.
        let detail: Vec<&str> = all
            .lines()
            .map(|l| l.trim().trim_start_matches("****").trim())
            .filter(|l| {
                !l.is_empty()
                    && !l.starts_with("FAXD-")
                    && !l.contains("stack")
                    && !l.starts_with("Current allocation")
                    && !l.starts_with("Last OS error")
                    && !l.starts_with("--")
                    && !l.starts_with("Output may be incorrect")
            })
            .take(2)
            .collect();
        let detail = if detail.is_empty() {
            format!("Ghostscript exited with {}", out.status)
        } else {
            detail.join(" / ")
        };
        if out.status.code().is_none() {
            return Err(ConvertError::ToolFailed {
                tool: "ghostscript".into(),
                detail: format!("killed by {} ({detail})", out.status),
            });
        }
        return Err(ConvertError::malformed("PDF", detail));
    }
    match pages {
        Some(0) => Err(ConvertError::malformed("PDF", "it has no pages")),
        Some(p) => Ok(p as u32),
        None => Err(ConvertError::malformed("PDF", "no page count")),
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
