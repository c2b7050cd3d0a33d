//! The body of `faxd convert IN OUT [--resolution R] [--page-size P] [--format F]`: the same
//! pipeline as fax intake, from the shell; prints pages, size and time. With `--repeat N` it
//! converts N times in one process (warm converters) and adds the CPU time per run of faxd
//! and of the converter processes it started and reaped (the warm Ghostscript included).

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{ConvertConfig, Converter, Kind, PageSize, PreviewSize, Resolution, sniff};

/// Arguments of the operator command.
#[derive(Clone, Debug)]
pub struct ConvertArgs {
    pub input: PathBuf,
    pub output: PathBuf,
    pub resolution: Option<String>,
    pub page_size: Option<String>,
    /// `tiff` (default), `pdf` or `png`.
    pub format: Option<String>,
    /// Convert this many times in one process (1 = once); later runs show warm timings.
    pub repeat: u32,
}

/// Runs the command; returns the lines to print (one per run).
pub fn run(args: &ConvertArgs, cfg: ConvertConfig) -> Result<String, String> {
    let runs = args.repeat.max(1);
    let cpu_before = cpu_secs();
    let started = Instant::now();
    let conv = Converter::new(cfg);
    let mut lines = Vec::new();
    for _ in 0..runs {
        lines.push(run_once(args, &conv)?);
    }
    conv.office().stop();
    // Stops and reaps the warm Ghostscript, so that its CPU time is counted below.
    drop(conv);
    if runs > 1 {
        let cpu = cpu_secs() - cpu_before;
        lines.push(format!(
            "{runs} runs: {:.1} ms CPU per run (faxd and the converters it reaped), {:.1} ms wall per run",
            cpu * 1000.0 / runs as f64,
            started.elapsed().as_secs_f64() * 1000.0 / runs as f64
        ));
    }
    Ok(lines.join("\n"))
}

/// User and system CPU seconds of this process and of its reaped children.
fn cpu_secs() -> f64 {
    let mut total = 0.0;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: getrusage fills the zeroed struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(who, &mut u) } == 0 {
            for t in [u.ru_utime, u.ru_stime] {
                total += t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            }
        }
    }
    total
}

fn run_once(args: &ConvertArgs, conv: &Converter) -> Result<String, String> {
    let started = Instant::now();
    let cfg = conv.config();
    let mut opts = cfg.options();
    if let Some(r) = &args.resolution {
        opts.resolution = Resolution::parse(r)
            .ok_or_else(|| format!("--resolution {r}: use normal, fine or superfine"))?;
    }
    if let Some(p) = &args.page_size {
        opts.page_size = PageSize::parse(p)
            .ok_or_else(|| format!("--page-size {p}: use letter, a4 or legal"))?;
    }
    let format = args.format.clone().unwrap_or_else(|| "tiff".into());
    let input = std::fs::read(&args.input).map_err(|e| format!("{}: {e}", args.input.display()))?;
    let kind = sniff(&input).map_err(|e| e.to_string())?;
    // A fax TIFF is wrapped or previewed as it is; anything else is converted (and validated).
    let as_is = (kind == Kind::Tiff && format != "tiff")
        .then(|| super::inspect_fax_tiff(&input, cfg.max_pages).ok())
        .flatten();
    let (fax_tiff, info) = match as_is {
        Some(info) => (input, info),
        None => {
            let doc = conv.to_fax(&input, &opts).map_err(|e| e.to_string())?;
            (doc.tiff, doc.info)
        }
    };
    let written: u64 = match format.as_str() {
        "tiff" | "tif" => write(&args.output, &fax_tiff)?,
        "pdf" => write(
            &args.output,
            &conv.fax_to_pdf(&fax_tiff).map_err(|e| e.to_string())?,
        )?,
        "png" => {
            let previews = conv
                .previews(&fax_tiff, PreviewSize::Full)
                .map_err(|e| e.to_string())?;
            let mut total = 0;
            for (i, p) in previews.iter().enumerate() {
                let path = if previews.len() == 1 {
                    args.output.clone()
                } else {
                    numbered(&args.output, i + 1)
                };
                total += write(&path, &p.png)?;
            }
            total
        }
        other => return Err(format!("--format {other}: use tiff, pdf or png")),
    };
    Ok(format!(
        "{} ({}) -> {} ({format}): {} page{}, {} bytes, {:.0} bytes/page, {}x{} dpi, {}, {:.3} s",
        args.input.display(),
        kind.name(),
        args.output.display(),
        info.pages,
        if info.pages == 1 { "" } else { "s" },
        written,
        written as f64 / info.pages.max(1) as f64,
        info.xres,
        info.yres,
        info.compression,
        started.elapsed().as_secs_f64()
    ))
}

fn write(path: &Path, data: &[u8]) -> Result<u64, String> {
    std::fs::write(path, data).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(data.len() as u64)
}

fn numbered(path: &Path, n: usize) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "page".into());
    let ext = path
        .extension()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "png".into());
    path.with_file_name(format!("{stem}-{n}.{ext}"))
}
