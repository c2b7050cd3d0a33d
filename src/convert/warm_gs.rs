//! Ghostscript kept warm. Starting `gs` costs about 35 ms of CPU, more than rendering a text
//! page, so PDF jobs go to long-lived Ghostscript processes that read one PostScript job
//! program after another on their standard input.
//!
//! Each process runs in the sandbox like any converter (own session and process group, no
//! network, memory, file-size and CPU limits, cleared environment) with `-dSAFER` and read and
//! write permission for its own private root directory only. A job gets a subdirectory there
//! (its input and its page files), removed when the job ends. The job program runs between
//! `save` and `restore`, inside `stopped`, and reports through marker lines that carry a
//! per-job random tag, so nothing a document prints can pass for a marker. Pages are written
//! one file per page and handed over as soon as Ghostscript reports them done, so the caller
//! codes page n while page n+1 renders.
//!
//! One job at a time per process. Idle processes wait in a small pool keyed by their fixed
//! settings (device, resolution, page size); a job that finds none starts a fresh one, so a
//! slow job never holds up another. A job over its wall limit has its process group killed; a
//! job that fails is reported and its process retired; a process is recycled after
//! [`MAX_JOBS`] jobs or before it uses up its CPU budget; a process found dead is replaced
//! and the job run again. Dropping the pool asks every idle process to quit and reaps it; a
//! process whose faxd is killed ends at the end of its input, and the root directories such a
//! faxd left behind are removed when the next pool starts.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::error::ConvertError;
use super::sandbox::{self, Limits, WorkDir};

/// Jobs a process runs before it is replaced.
pub const MAX_JOBS: u32 = 500;
/// Idle processes kept: as many as conversions run at once ([`super::conversions_at_once`]),
/// so that a steady stream of PDFs never starts a process (≈ 50 ms of CPU each) for a job.
pub fn max_idle() -> usize {
    super::conversions_at_once()
}
/// Message lines kept per job.
const MAX_LINES: usize = 200;
/// Root directories are `faxd-gs-<pid of faxd>-XXXXXX`.
const ROOT_PREFIX: &str = "faxd-gs-";

/// Removes the root directories that a faxd process no longer running left behind (killed
/// before it could drop its converter).
fn sweep(parent: Option<&Path>) {
    let dir = parent
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(ROOT_PREFIX)
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let dead = !Path::new(&format!("/proc/{pid}")).exists();
        if dead && e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// What a page is rendered as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Raster {
    /// 1 bit per pixel, halftoned by Ghostscript (`pbmraw`).
    Bilevel,
    /// 8-bit grey (`pgmraw`), for dithering in faxd.
    Gray,
}

impl Raster {
    fn device(self) -> &'static str {
        match self {
            Raster::Bilevel => "pbmraw",
            Raster::Gray => "pgmraw",
        }
    }
    fn ext(self) -> &'static str {
        match self {
            Raster::Bilevel => "pbm",
            Raster::Gray => "pgm",
        }
    }
}

/// The fixed settings of a Ghostscript process: every page it renders is `width`×`height`
/// pixels at `xres`×`yres`, each PDF page fitted onto it without cropping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Setup {
    pub raster: Raster,
    pub xres: u32,
    pub yres: u32,
    pub width: u32,
    pub height: u32,
}

/// How a job ended when Ghostscript got to its end or died trying.
#[derive(Debug, Default)]
pub struct JobEnd {
    /// Payloads of the job's own marker lines (tag removed), in order, without the protocol's.
    pub markers: Vec<String>,
    /// Everything else Ghostscript printed during the job: its warnings and errors.
    pub diagnostics: Vec<String>,
    /// The PostScript error that stopped the job program, if one did.
    pub error: Option<String>,
    /// Pages rendered and handed over.
    pub pages: u32,
    /// Set when the process died during the job instead of finishing it.
    pub died: Option<ExitStatus>,
}

struct Process {
    setup: Setup,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    root: WorkDir,
    jobs: u32,
    killed: bool,
}

impl Process {
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// CPU seconds the process has used so far (from /proc; 0 if unreadable).
    fn cpu_secs(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<u64> = after
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse().ok())
            .collect();
        // SAFETY: plain query without side effects.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        f.iter().sum::<u64>() as f64 / hz
    }

    fn kill(&mut self) {
        self.killed = true;
        sandbox::kill_group(self.child.id());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if !self.killed {
            // Ask it to end; its output closing says it has.
            if let Some(mut s) = self.stdin.take() {
                let _ = s.write_all(b"quit\n").and_then(|_| s.flush());
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.lines.recv_timeout(left) {
                    Ok(_) => continue,
                    Err(_) => break,
                }
            }
        }
        self.stdin = None;
        sandbox::kill_group(self.child.id());
        let _ = self.child.wait();
    }
}

/// The pool of warm Ghostscript processes.
pub struct WarmGs {
    parent: Option<PathBuf>,
    limits: Limits,
    idle: Mutex<Vec<Process>>,
    starts: AtomicU32,
    seq: AtomicU64,
    max_jobs: u32,
}

fn tool_failed(detail: impl Into<String>) -> ConvertError {
    ConvertError::ToolFailed {
        tool: "ghostscript".into(),
        detail: detail.into(),
    }
}

/// A PostScript string literal of `p`.
pub fn ps_string(p: &Path) -> String {
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

/// A tag no document can guess: 64 bits from the standard library's per-process random keys,
/// mixed with a counter and the clock.
fn random_tag(n: u64) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", h.finish())
}

/// Removes a job's directory when the job ends, however it ends.
struct JobDir(PathBuf);

impl Drop for JobDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

enum Attempt {
    Done(JobEnd, Process),
    /// The process was dead before the job started: try once more with a fresh one.
    Stale,
}

impl WarmGs {
    /// A pool whose processes keep their root directories under `parent` (the system temp
    /// dir when `None`). `limits.wall` is the limit of one job; the CPU budget of a process
    /// is set from it.
    pub fn new(parent: Option<PathBuf>, limits: Limits) -> Self {
        sweep(parent.as_deref());
        let wall = limits.wall.as_secs().max(1);
        let limits = Limits {
            cpu_secs: wall.saturating_mul(2).saturating_add(5),
            ..limits
        };
        WarmGs {
            parent,
            limits,
            idle: Mutex::new(Vec::new()),
            starts: AtomicU32::new(0),
            seq: AtomicU64::new(0),
            max_jobs: MAX_JOBS,
        }
    }

    /// Replaces processes after `n` jobs instead of [`MAX_JOBS`].
    pub fn with_max_jobs(mut self, n: u32) -> Self {
        self.max_jobs = n.max(1);
        self
    }

    /// How many Ghostscript processes were started so far.
    pub fn starts(&self) -> u32 {
        self.starts.load(Ordering::Relaxed)
    }

    /// Process ids (and process groups) of the idle processes.
    pub fn idle_pids(&self) -> Vec<u32> {
        self.idle
            .lock()
            .map(|v| v.iter().map(|p| p.child.id()).collect())
            .unwrap_or_default()
    }

    /// Quits and reaps every idle process.
    pub fn stop(&self) {
        let all: Vec<Process> = match self.idle.lock() {
            Ok(mut v) => v.drain(..).collect(),
            Err(_) => return,
        };
        drop(all);
    }

    fn start(&self, setup: Setup) -> Result<Process, ConvertError> {
        let prefix = format!("{ROOT_PREFIX}{}-", std::process::id());
        let root = WorkDir::with_prefix(self.parent.as_deref(), &prefix)?;
        let dir = root.path().display().to_string();
        let mut cmd = Command::new("gs");
        cmd.args([
            "-q",
            "-dSAFER",
            "-dNOPAUSE",
            "-dNOPROMPT",
            "-dPDFFitPage",
            "-dFIXEDMEDIA",
            "-dTextAlphaBits=1",
            "-dGraphicsAlphaBits=1",
        ])
        .arg(format!("-r{}x{}", setup.xres, setup.yres))
        .arg(format!("-g{}x{}", setup.width, setup.height))
        .arg(format!("-sDEVICE={}", setup.raster.device()))
        .arg(format!("-sOutputFile={dir}/idle.{}", setup.raster.ext()))
        .arg(format!("--permit-file-read={dir}/"))
        .arg(format!("--permit-file-write={dir}/"));
        // No input file on the command line: Ghostscript's interactive executive reads standard
        // input a statement at a time (`-` would read it to its end before running anything).
        sandbox::confine(&mut cmd, &self.limits, root.path());
        // Standard output and error share one pipe, so Ghostscript's messages arrive in order
        // between a job's markers.
        let (reader, writer) = std::io::pipe()?;
        cmd.stdin(Stdio::piped())
            .stdout(writer.try_clone()?)
            .stderr(writer);
        let spawned = cmd.spawn();
        drop(cmd); // closes our copies of the pipe's write end
        let mut child = spawned.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ConvertError::ToolMissing {
                    tool: "ghostscript".into(),
                    detail: "not installed (rel/deps.sh installs it)".into(),
                }
            } else {
                tool_failed(format!("cannot start: {e}"))
            }
        })?;
        self.starts.fetch_add(1, Ordering::Relaxed);
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Ok(Process {
            setup,
            child,
            stdin,
            lines,
            root,
            jobs: 0,
            killed: false,
        })
    }

    fn take_idle(&self, setup: Setup) -> Option<Process> {
        let mut idle = self.idle.lock().ok()?;
        let i = idle.iter().position(|p| p.setup == setup)?;
        Some(idle.remove(i))
    }

    fn put_back(&self, mut p: Process) {
        let budget = self.limits.cpu_secs as f64;
        let wall = self.limits.wall.as_secs_f64();
        if p.jobs >= self.max_jobs || p.cpu_secs() + wall + 5.0 >= budget || !p.alive() {
            return; // dropped: quits and is reaped
        }
        let evicted = match self.idle.lock() {
            Ok(mut idle) => {
                idle.push(p);
                if idle.len() > max_idle() {
                    Some(idle.remove(0))
                } else {
                    None
                }
            }
            Err(_) => None,
        };
        drop(evicted);
    }

    /// Runs one job: `input` becomes the file whose path the program finds in `FaxdIn`;
    /// `program` is PostScript that may call `FaxdTag` (prints the job's marker tag and a
    /// space, to be followed by the payload and a newline) and `FaxdShow` (renders a PDF page
    /// dictionary and reports it done). Each page file is passed to `on_page` (page number
    /// from 1, its bytes) as soon as it is complete. The job is killed at `limits.wall`.
    pub fn run(
        &self,
        setup: Setup,
        input: &[u8],
        program: &str,
        on_page: &mut dyn FnMut(u32, Vec<u8>) -> Result<(), ConvertError>,
    ) -> Result<JobEnd, ConvertError> {
        for _ in 0..2 {
            let p = match self.take_idle(setup) {
                Some(mut p) => {
                    if p.alive() {
                        p
                    } else {
                        drop(p);
                        self.start(setup)?
                    }
                }
                None => self.start(setup)?,
            };
            match self.attempt(p, input, program, on_page)? {
                Attempt::Done(end, p) => {
                    if end.died.is_none() && end.error.is_none() {
                        self.put_back(p);
                    }
                    return Ok(end);
                }
                Attempt::Stale => continue,
            }
        }
        Err(tool_failed(
            "Ghostscript exited before it could take the job",
        ))
    }

    fn attempt(
        &self,
        mut p: Process,
        input: &[u8],
        program: &str,
        on_page: &mut dyn FnMut(u32, Vec<u8>) -> Result<(), ConvertError>,
    ) -> Result<Attempt, ConvertError> {
        let started = Instant::now();
        let deadline = started + self.limits.wall;
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let tag = format!("FAXD-{}", random_tag(n));
        let dir = p.root.path().join(format!("job-{n}"));
        std::fs::create_dir(&dir)?;
        let dir = JobDir(dir);
        let input_path = dir.0.join("in.pdf");
        std::fs::write(&input_path, input)?;
        let ext = p.setup.raster.ext();
        let out = dir.0.join(format!("p%09d.{ext}"));
        let job = format!(
            "/FaxdTag {{ ({tag} ) print }} bind def\n\
             /FaxdSave save def\n\
             /FaxdShow {{ pdfshowpage FaxdTag (PAGE) = flush }} bind def\n\
             /FaxdIn {input} def\n\
             FaxdTag (START) = flush\n\
             {{ << /OutputFile {out} >> setpagedevice\n{program}\n}} stopped\n\
             {{ FaxdTag (ERROR ) print $error /errorname get =only (\\n) print flush }} if\n\
             clear cleardictstack FaxdSave restore\n\
             (%stderr) (w) file flushfile ({tag} DONE) = flush\n",
            input = ps_string(&input_path),
            out = ps_string(&out),
        );
        p.jobs += 1;
        let sent = match p.stdin.as_mut() {
            Some(s) => s.write_all(job.as_bytes()).and_then(|_| s.flush()).is_ok(),
            None => false,
        };
        let mut end = JobEnd::default();
        let mut started_job = false;
        let prefix = format!("{tag} ");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match p.lines.recv_timeout(left) {
                Ok(l) => l,
                Err(RecvTimeoutError::Timeout) => {
                    // Killed and reaped before the job directory goes.
                    p.kill();
                    drop(p);
                    return Err(ConvertError::Timeout {
                        tool: "ghostscript".into(),
                        limit: self.limits.wall,
                    });
                }
                Err(RecvTimeoutError::Disconnected) => {
                    p.stdin = None;
                    let status = p.child.wait()?;
                    if !started_job || !sent {
                        return Ok(Attempt::Stale);
                    }
                    end.died = Some(status);
                    return Ok(Attempt::Done(end, p));
                }
            };
            let Some(payload) = line.strip_prefix(&prefix) else {
                // A document that makes Ghostscript warn without end costs no memory.
                if started_job && !line.trim().is_empty() && end.diagnostics.len() < MAX_LINES {
                    end.diagnostics.push(line);
                }
                continue;
            };
            match payload {
                "START" => started_job = true,
                "DONE" => break,
                "PAGE" => {
                    end.pages += 1;
                    if let Err(e) = take_page(&dir.0, ext, end.pages, on_page) {
                        p.kill();
                        drop(p);
                        return Err(e);
                    }
                }
                _ => match payload.strip_prefix("ERROR ") {
                    Some(e) => end.error = Some(e.to_string()),
                    None => end.markers.push(payload.to_string()),
                },
            }
        }
        Ok(Attempt::Done(end, p))
    }
}

/// Hands over page `n`: the first page file left in the job directory in name order (the
/// device numbers its files in page order, earlier pages are already taken, and files after
/// it may still be being written).
fn take_page(
    dir: &Path,
    ext: &str,
    n: u32,
    on_page: &mut dyn FnMut(u32, Vec<u8>) -> Result<(), ConvertError>,
) -> Result<(), ConvertError> {
    let file = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .min()
        .ok_or_else(|| tool_failed(format!("page {n} reported but no page file written")))?;
    let data = std::fs::read(&file)?;
    std::fs::remove_file(&file)?;
    on_page(n, data)
}

impl Drop for WarmGs {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETUP: Setup = Setup {
        raster: Raster::Bilevel,
        xres: 204,
        yres: 98,
        width: 1728,
        height: 1078,
    };

    fn markers(gs: &WarmGs, program: &str) -> JobEnd {
        let mut no_pages = |_: u32, _: Vec<u8>| -> Result<(), ConvertError> { Ok(()) };
        gs.run(SETUP, b"%PDF-1.4\n", program, &mut no_pages)
            .unwrap()
    }

    #[test]
    fn jobs_leave_no_state_behind_and_processes_are_recycled() {
        let gs = WarmGs::new(None, Limits::default()).with_max_jobs(3);
        // A job's definitions, even in userdict, are undone by the restore after it.
        let end = markers(&gs, "userdict /FaxdLeak 42 put FaxdTag (SET) = flush");
        assert_eq!(end.markers, ["SET"]);
        let end = markers(
            &gs,
            "FaxdTag userdict /FaxdLeak known { (LEAKED) } { (CLEAN) } ifelse = flush",
        );
        assert_eq!(end.markers, ["CLEAN"]);
        assert_eq!(gs.starts(), 1);
        // The third job is the process's last; the fourth starts a new one.
        markers(&gs, "");
        assert!(gs.idle_pids().is_empty());
        markers(&gs, "");
        assert_eq!(gs.starts(), 2);
        // A PostScript error is reported with its name and retires the process.
        let end = markers(&gs, "1 0 div");
        assert_eq!(end.error.as_deref(), Some("undefinedresult"));
        assert!(gs.idle_pids().is_empty());
        let end = markers(&gs, "FaxdTag (AFTER) = flush");
        assert_eq!(end.markers, ["AFTER"]);
        assert_eq!(gs.starts(), 3);
        // The input is where the program is told it is, inside the process's own directory.
        let end = markers(
            &gs,
            "FaxdTag FaxdIn (r) file 8 string readstring pop print (\n) print flush",
        );
        assert_eq!(end.markers, ["%PDF-1.4"]);
        // Nothing outside it.
        let end = markers(&gs, "(/etc/passwd) (r) file");
        assert_eq!(end.error.as_deref(), Some("invalidfileaccess"));
    }
}
