//! Document conversion (DESIGN.md §4): any accepted document to a fax-ready TIFF, a fax TIFF
//! to PDF and PNG previews. Types come from content sniffing; PDF goes through a warm
//! Ghostscript (pages rendered there, coded to CCITT here), Office files through a pool of
//! warm LibreOffice workers shared fairly between accounts ([`office`]) and then
//! Ghostscript, images and TIFFs are handled in-process; every external converter runs
//! sandboxed and every output is validated.
//!
//! Everything here blocks: call [`Converter::to_fax`] and friends from a blocking thread, or
//! the `*_async` wrappers, which move the work to tokio's blocking pool.

pub mod ccitt;
pub mod cli;
pub mod error;
pub mod fair;
pub mod images;
pub mod kazoo;
pub mod office;
pub mod pdf;
pub mod preview;
pub mod raster;
pub mod sandbox;
pub mod sniff;
pub mod stored;
pub mod tiff_f;
pub mod warm_gs;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use ccitt::{Coding, FaxPage};
pub use error::ConvertError;
pub use preview::{Preview, PreviewSize};
pub use sniff::{Kind, OfficeKind, sniff};
pub use tiff_f::{FaxTiffInfo, decode_fax_tiff, inspect_fax_tiff, similarity, validate_fax_tiff};

/// How many conversions the intake runs at once: two per core (each also waits on the store
/// while it holds its place). The warm Ghostscript pool keeps as many processes idle.
pub fn conversions_at_once() -> usize {
    2 * std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Vertical resolution of a fax page (horizontal is always 204 dpi, 1728 pixels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resolution {
    /// 204×98
    Normal,
    /// 204×196
    Fine,
    /// 204×392
    Superfine,
}

impl Resolution {
    pub fn lpi(self) -> u32 {
        match self {
            Resolution::Normal => 98,
            Resolution::Fine => 196,
            Resolution::Superfine => 392,
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "normal" | "standard" => Some(Resolution::Normal),
            "fine" => Some(Resolution::Fine),
            "superfine" => Some(Resolution::Superfine),
            _ => None,
        }
    }
}

/// Paper size of the fax pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PageSize {
    Letter,
    A4,
    Legal,
}

impl PageSize {
    /// Page height in inches.
    pub fn height_in(self) -> f64 {
        match self {
            PageSize::Letter => 11.0,
            PageSize::A4 => 297.0 / 25.4,
            PageSize::Legal => 14.0,
        }
    }
    /// Page height in rows at `res`.
    pub fn rows(self, res: Resolution) -> u32 {
        (self.height_in() * res.lpi() as f64).round() as u32
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "letter" => Some(PageSize::Letter),
            "a4" => Some(PageSize::A4),
            "legal" => Some(PageSize::Legal),
            _ => None,
        }
    }
}

/// CCITT coding of the stored TIFF.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// T.6 (MMR), the default: smallest.
    G4,
    /// T.4 one-dimensional (MH).
    G3,
    /// T.4 two-dimensional (MR).
    G3_2d,
}

impl Compression {
    pub fn coding(self) -> Coding {
        match self {
            Compression::G4 => Coding::Mmr,
            Compression::G3 => Coding::Mh,
            Compression::G3_2d => Coding::Mr,
        }
    }
}

/// How grey and colour become black and white.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dither {
    /// 45° clustered-dot screen: photos stay small and print-like (default).
    Cluster,
    /// Error diffusion: the most detail, about three times the bytes.
    FloydSteinberg,
    /// Plain threshold: text only, no shading.
    Threshold,
}

/// What a conversion produces.
#[derive(Clone, Debug, PartialEq)]
pub struct FaxOptions {
    pub resolution: Resolution,
    pub page_size: PageSize,
    pub compression: Compression,
    pub dither: Dither,
}

/// The `[convert]` section of `faxd.toml`: defaults of the conversion, the sandbox's limits,
/// and Kazoo's `kazoo_convert` command keys as overrides (empty = faxd's built-in pipeline).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConvertConfig {
    pub resolution: Resolution,
    pub page_size: PageSize,
    pub compression: Compression,
    pub dither: Dither,
    /// Wall time per external converter run, seconds (Kazoo's `convert_command_timeout`).
    pub timeout_secs: u64,
    /// Most pages a document may have.
    pub max_pages: u32,
    /// Most pixels an input image page may have.
    pub max_pixels: u64,
    /// Largest page side of a PDF, inches.
    pub max_page_inches: u32,
    /// Largest input, bytes.
    pub max_input_bytes: u64,
    /// Most bytes an Office (zip) container may expand to.
    pub max_unzipped_bytes: u64,
    /// Most bytes of text LibreOffice is given to lay out: the inflated text parts (XML and
    /// other non-binary entries) of an Office/OpenDocument container, or a whole text or RTF
    /// input. Checked before LibreOffice starts on the document.
    pub max_text_bytes: u64,
    /// Address-space limit of Ghostscript and override commands, MiB.
    pub memory_mb: u64,
    /// Address-space limit of LibreOffice, MiB.
    pub office_memory_mb: u64,
    /// Warm LibreOffice workers (each its own process, profile and sandbox; 0 counts as 1),
    /// shared fairly between accounts: one account holds at most all but one of them.
    pub office_workers: u32,
    /// Largest file a converter may write, MiB.
    pub max_output_mb: u64,
    /// Where job directories and the LibreOffice profile live (empty: the system temp dir).
    pub work_dir: String,
    /// Allow Office and OpenDocument input (Kazoo's `enable_openoffice`).
    pub enable_openoffice: bool,
    pub convert_pdf_command: String,
    pub convert_image_command: String,
    pub convert_tiff_command: String,
    pub convert_openoffice_command: String,
    pub validate_tiff_command: String,
    pub validate_pdf_command: String,
}

impl Default for ConvertConfig {
    fn default() -> Self {
        ConvertConfig {
            resolution: Resolution::Fine,
            page_size: PageSize::Letter,
            compression: Compression::G4,
            dither: Dither::Cluster,
            timeout_secs: 120,
            max_pages: 350,
            max_pixels: 100_000_000,
            max_page_inches: 100,
            max_input_bytes: 100 << 20,
            max_unzipped_bytes: 512 << 20,
            // A fax has at most `max_pages` (350) pages; a dense page of text is about 3-5 kB
            // of characters and, with WordprocessingML's run markup, some 20-30 kB of XML, so
            // 350 pages fit in 10 MB (a real 300-page docx has a few MB of document.xml).
            // More text cannot become a fax within the page limit. LibreOffice lays out 1 MB
            // of text in some 3-5 s on a busy core, so the cap also bounds how long one
            // document can hold a worker (well within `timeout_secs`).
            max_text_bytes: 10 << 20,
            memory_mb: 1024,
            office_memory_mb: 4096,
            office_workers: 2,
            max_output_mb: 256,
            work_dir: String::new(),
            enable_openoffice: true,
            convert_pdf_command: String::new(),
            convert_image_command: String::new(),
            convert_tiff_command: String::new(),
            convert_openoffice_command: String::new(),
            validate_tiff_command: String::new(),
            validate_pdf_command: String::new(),
        }
    }
}

impl ConvertConfig {
    pub fn options(&self) -> FaxOptions {
        FaxOptions {
            resolution: self.resolution,
            page_size: self.page_size,
            compression: self.compression,
            dither: self.dither,
        }
    }

    pub(crate) fn limits(&self) -> sandbox::Limits {
        sandbox::Limits {
            wall: Duration::from_secs(self.timeout_secs.max(1)),
            memory: self.memory_mb << 20,
            file_size: self.max_output_mb << 20,
            no_network: true,
            cpu_secs: 0,
            nice: sandbox::CONVERTER_NICE,
        }
    }

    fn work_parent(&self) -> Option<PathBuf> {
        (!self.work_dir.is_empty()).then(|| PathBuf::from(&self.work_dir))
    }
}

/// A fax-ready document.
#[derive(Clone, Debug)]
pub struct FaxDocument {
    /// The TIFF bytes (1728 px wide, CCITT, one strip per page).
    pub tiff: Vec<u8>,
    /// What validation found: pages, resolution, compression, size.
    pub info: FaxTiffInfo,
    /// What the input was.
    pub source: Kind,
    /// Wall time of the conversion.
    pub elapsed: Duration,
}

/// The conversion service: configuration plus the warm LibreOffice and Ghostscript processes.
/// Cheap to share (`Arc`); dropping it stops and reaps them.
pub struct Converter {
    cfg: ConvertConfig,
    office: office::Office,
    gs: warm_gs::WarmGs,
}

impl Converter {
    pub fn new(cfg: ConvertConfig) -> Self {
        let base = cfg.work_parent().unwrap_or_else(std::env::temp_dir);
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = base.join(format!("faxd-office-{}-{seq}", std::process::id()));
        let limits = sandbox::Limits {
            memory: cfg.office_memory_mb << 20,
            ..cfg.limits()
        };
        Converter {
            office: office::Office::new(dir, limits, cfg.office_workers as usize),
            gs: warm_gs::WarmGs::new(cfg.work_parent(), cfg.limits()),
            cfg,
        }
    }

    pub fn config(&self) -> &ConvertConfig {
        &self.cfg
    }

    /// The pool of warm LibreOffice converters (to start it early, or to inspect it).
    pub fn office(&self) -> &office::Office {
        &self.office
    }

    /// The warm Ghostscript processes that render PDFs.
    pub fn ghostscript(&self) -> &warm_gs::WarmGs {
        &self.gs
    }

    /// Converts any accepted document to a validated fax TIFF, with no account: its
    /// LibreOffice jobs share one queue ([`Converter::to_fax_for`] names the account).
    pub fn to_fax(&self, input: &[u8], opts: &FaxOptions) -> Result<FaxDocument, ConvertError> {
        self.to_fax_for("", input, opts)
    }

    /// Converts any accepted document of `account` to a validated fax TIFF; its LibreOffice
    /// step waits in the account's queue (see [`office`] for the fairness rule).
    pub fn to_fax_for(
        &self,
        account: &str,
        input: &[u8],
        opts: &FaxOptions,
    ) -> Result<FaxDocument, ConvertError> {
        let started = Instant::now();
        if input.len() as u64 > self.cfg.max_input_bytes {
            return Err(ConvertError::TooLarge {
                size: input.len() as u64,
                limit: self.cfg.max_input_bytes,
            });
        }
        let kind = sniff(input)?;
        let coding = opts.compression.coding();
        let yres = opts.resolution.lpi() as f32;
        let height = opts.page_size.rows(opts.resolution);
        let (tiff, strict) = match kind {
            Kind::Pdf => (
                self.pdf_to_fax(input, opts)?,
                self.cfg.convert_pdf_command.is_empty(),
            ),
            k if k.is_office() => {
                if !self.cfg.enable_openoffice {
                    return Err(ConvertError::Refused(
                        "Office documents are disabled (enable_openoffice = false)".into(),
                    ));
                }
                let pdf = self.office_to_pdf_for(account, input, k)?;
                (
                    self.pdf_to_fax(&pdf, opts)?,
                    self.cfg.convert_pdf_command.is_empty(),
                )
            }
            k if !self.cfg.convert_image_command.is_empty() => (
                kazoo::run_override(
                    &self.cfg,
                    &self.cfg.convert_image_command,
                    input,
                    k.name(),
                    "tiff",
                )?,
                false,
            ),
            Kind::Tiff => {
                let pages = images::decode_tiff(input, self.cfg.max_pages, self.cfg.max_pixels)?;
                let out: Vec<FaxPage> = pages
                    .into_iter()
                    .map(|p| page_to_fax(p, height, yres, opts.dither))
                    .collect();
                (tiff_f::write_fax_tiff(&out, coding), true)
            }
            _ => {
                let img = images::decode_image(input, self.cfg.max_pixels)?;
                let page = page_to_fax(images::InputPage::Gray(img), height, yres, opts.dither);
                (tiff_f::write_fax_tiff(&[page], coding), true)
            }
        };
        let info = if strict {
            validate_fax_tiff(&tiff, Some(yres), self.cfg.max_pages)?
        } else {
            validate_fax_tiff(&tiff, None, self.cfg.max_pages)?
        };
        if !self.cfg.validate_tiff_command.is_empty() {
            kazoo::run_validate(&self.cfg, &self.cfg.validate_tiff_command, &tiff, "tiff")?;
        }
        let elapsed = started.elapsed();
        crate::metrics::global().conversion.observe(elapsed);
        Ok(FaxDocument {
            tiff,
            info,
            source: kind,
            elapsed,
        })
    }

    fn pdf_to_fax(&self, pdf: &[u8], opts: &FaxOptions) -> Result<Vec<u8>, ConvertError> {
        if !self.cfg.convert_pdf_command.is_empty() {
            return kazoo::run_override(
                &self.cfg,
                &self.cfg.convert_pdf_command,
                pdf,
                "pdf",
                "tiff",
            );
        }
        let job = pdf::PdfJob {
            coding: opts.compression.coding(),
            dither: opts.dither,
            xres: 204,
            yres: opts.resolution.lpi(),
            width: 1728,
            height: opts.page_size.rows(opts.resolution),
            max_pages: self.cfg.max_pages,
            max_page_inches: self.cfg.max_page_inches,
        };
        pdf::render(&self.gs, pdf, &job)
    }

    /// Converts an Office, OpenDocument, RTF or text document to PDF with the warm LibreOffice
    /// (or the `convert_openoffice_command` override), with no account.
    pub fn office_to_pdf(&self, input: &[u8], kind: Kind) -> Result<Vec<u8>, ConvertError> {
        self.office_to_pdf_for("", input, kind)
    }

    /// [`Converter::office_to_pdf`] for `account`'s document. A zip container over
    /// `max_unzipped_bytes`, or text over `max_text_bytes`, is refused before any converter
    /// starts on it.
    pub fn office_to_pdf_for(
        &self,
        account: &str,
        input: &[u8],
        kind: Kind,
    ) -> Result<Vec<u8>, ConvertError> {
        match kind {
            Kind::Office(OfficeKind::Ole) => {}
            Kind::Office(_) => {
                sniff::check_zip_bomb(input, self.cfg.max_unzipped_bytes, self.cfg.max_text_bytes)?
            }
            Kind::Text | Kind::Rtf if input.len() as u64 > self.cfg.max_text_bytes => {
                return Err(ConvertError::TextTooLarge {
                    limit: self.cfg.max_text_bytes,
                });
            }
            _ => {}
        }
        if !self.cfg.convert_openoffice_command.is_empty() {
            return kazoo::run_override(
                &self.cfg,
                &self.cfg.convert_openoffice_command,
                input,
                kind.name(),
                "pdf",
            );
        }
        let wd = sandbox::WorkDir::new(self.cfg.work_parent().as_deref())?;
        let inp = wd.join(&format!("in.{}", kind.name()));
        let out = wd.join("out.pdf");
        std::fs::write(&inp, input)?;
        self.office.to_pdf(
            account,
            &inp,
            &out,
            kind == Kind::Text,
            Duration::from_secs(self.cfg.timeout_secs.max(1)),
        )?;
        Ok(std::fs::read(&out)?)
    }

    /// Wraps a fax TIFF into a PDF without re-encoding (or runs `convert_tiff_command`).
    pub fn fax_to_pdf(&self, tiff: &[u8]) -> Result<Vec<u8>, ConvertError> {
        if !self.cfg.convert_tiff_command.is_empty() {
            return kazoo::run_override(
                &self.cfg,
                &self.cfg.convert_tiff_command,
                tiff,
                "tiff",
                "pdf",
            );
        }
        pdf::fax_tiff_to_pdf(tiff)
    }

    /// PNG previews of every page of a fax TIFF.
    pub fn previews(&self, tiff: &[u8], size: PreviewSize) -> Result<Vec<Preview>, ConvertError> {
        let pages = tiff_f::decode_fax_tiff_limited(tiff, self.cfg.max_pages)?;
        pages.iter().map(|p| preview::render(p, size)).collect()
    }

    /// [`Converter::to_fax`] on tokio's blocking pool.
    pub async fn to_fax_async(
        self: &Arc<Self>,
        input: Vec<u8>,
        opts: FaxOptions,
    ) -> Result<FaxDocument, ConvertError> {
        self.to_fax_async_for(String::new(), input, opts).await
    }

    /// [`Converter::to_fax_for`] on tokio's blocking pool.
    pub async fn to_fax_async_for(
        self: &Arc<Self>,
        account: String,
        input: Vec<u8>,
        opts: FaxOptions,
    ) -> Result<FaxDocument, ConvertError> {
        let me = Arc::clone(self);
        blocking(move || me.to_fax_for(&account, &input, &opts)).await
    }

    /// [`Converter::fax_to_pdf`] on tokio's blocking pool.
    pub async fn fax_to_pdf_async(
        self: &Arc<Self>,
        tiff: Vec<u8>,
    ) -> Result<Vec<u8>, ConvertError> {
        let me = Arc::clone(self);
        blocking(move || me.fax_to_pdf(&tiff)).await
    }

    /// [`Converter::previews`] on tokio's blocking pool.
    pub async fn previews_async(
        self: &Arc<Self>,
        tiff: Vec<u8>,
        size: PreviewSize,
    ) -> Result<Vec<Preview>, ConvertError> {
        let me = Arc::clone(self);
        blocking(move || me.previews(&tiff, size)).await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ConvertError> + Send + 'static,
) -> Result<T, ConvertError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ConvertError::ToolFailed {
            tool: "converter thread".into(),
            detail: e.to_string(),
        })?
}

/// Fits one decoded input page onto a fax page. A bilevel page already at 1728 × 204 dpi and
/// the target resolution is kept pixel for pixel (cut to the page length if longer).
fn page_to_fax(p: images::InputPage, height: u32, yres: f32, dither: Dither) -> FaxPage {
    use raster::Gray;
    let (gray, bilevel) = match p {
        images::InputPage::Bilevel(fp) => {
            // A fax page already at the asked geometry is kept pixel for pixel; any other
            // length is fitted like every other page, so the result is always as long as the
            // page size asked for (shorter pages centred unscaled, longer ones scaled down).
            if fp.width == 1728
                && (fp.xres - 204.0).abs() < 1.0
                && (fp.yres - yres).abs() < 1.0
                && fp.height == height
            {
                let mut fp = fp;
                fp.xres = 204.0;
                fp.yres = yres;
                return fp;
            }
            let mut px = Vec::with_capacity((fp.width * fp.height) as usize);
            for y in 0..fp.height {
                for x in 0..fp.width {
                    px.push(if fp.is_black(x, y) { 0 } else { 255 });
                }
            }
            (
                Gray {
                    width: fp.width,
                    height: fp.height,
                    pixels: px,
                    dpi: Some((fp.xres, fp.yres)),
                },
                true,
            )
        }
        images::InputPage::Gray(g) => (g, false),
    };
    let (w, h) = raster::fit(&gray, 1728, height, 204.0, yres);
    let scaled = raster::resize(&gray, w, h);
    let dither = if bilevel { Dither::Threshold } else { dither };
    raster::to_bilevel(&scaled, 1728, height, 204.0, yres, dither)
}
