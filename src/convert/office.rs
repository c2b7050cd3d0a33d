//! LibreOffice, kept warm: a pool of long-lived converter processes (faxd's UNO helper
//! `priv/convert/office_server.py` and the headless soffice it starts), each with its own
//! private profile directory, in its own sandboxed process group. A worker runs one job at a
//! time; a job over its time limit kills the worker's group, and a dead worker is started
//! again by the next job it gets. Workers start on first use or all at once with
//! [`Office::warm_up`]; dropping the pool stops and reaps every one.
//!
//! Jobs are scheduled fairly between accounts ([`super::fair`]): each account's jobs wait in
//! its own queue, a free worker goes to the waiting account holding the fewest workers (then
//! the one served longest ago), and no account holds more than `max(1, N − 1)` of the N
//! workers. With the default two workers one account's slow documents occupy one worker and
//! another account's document starts on the other at once; with one worker, accounts take
//! turns job by job.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::error::ConvertError;
use super::fair::FairQueue;
use super::sandbox::{self, Limits};

const HELPER: &str = include_str!("../../priv/convert/office_server.py");

/// Numbers the UNO pipes of every worker of every pool in this process.
static PIPES: AtomicU32 = AtomicU32::new(0);

struct Running {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        sandbox::kill_group(self.child.id());
        let _ = self.child.wait();
    }
}

/// One warm converter process and its private directory (profile and helper).
struct Worker {
    dir: PathBuf,
    running: Mutex<Option<Running>>,
    /// Sockets that appeared in /tmp while this worker started, removed at stop.
    sockets: Mutex<Vec<PathBuf>>,
}

/// The pool of warm LibreOffice converters.
pub struct Office {
    dir: PathBuf,
    limits: Limits,
    startup: Duration,
    workers: Vec<Worker>,
    queue: Mutex<FairQueue>,
    freed: Condvar,
    starts: AtomicU32,
}

/// The socket files soffice makes in /tmp whatever its TMPDIR (its UNO pipe and its
/// single-instance pipe, named after a hash of the profile).
fn osl_pipes() -> Vec<PathBuf> {
    std::fs::read_dir("/tmp")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("OSL_PIPE_"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

fn tool_failed(detail: impl Into<String>) -> ConvertError {
    ConvertError::ToolFailed {
        tool: "libreoffice".into(),
        detail: detail.into(),
    }
}

/// Gives the worker back to the scheduler when the job ends, however it ends.
struct Lease<'a> {
    office: &'a Office,
    worker: usize,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Ok(mut q) = self.office.queue.lock() {
            q.finish(self.worker);
        }
        self.office.freed.notify_all();
    }
}

impl Office {
    /// A pool of `workers` converters (at least one) whose profiles and helper live in `dir`
    /// (created, private to faxd; worker i uses `dir/w<i>`).
    pub fn new(dir: PathBuf, limits: Limits, workers: usize) -> Self {
        let n = workers.max(1);
        Office {
            workers: (0..n)
                .map(|i| Worker {
                    dir: dir.join(format!("w{i}")),
                    running: Mutex::new(None),
                    sockets: Mutex::new(Vec::new()),
                })
                .collect(),
            dir,
            limits,
            startup: Duration::from_secs(90),
            queue: Mutex::new(FairQueue::new(n)),
            freed: Condvar::new(),
            starts: AtomicU32::new(0),
        }
    }

    /// How many workers the pool has.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// How many times a converter process was started (restarts included, all workers).
    pub fn starts(&self) -> u32 {
        self.starts.load(Ordering::Relaxed)
    }

    /// The process id (process group) of the first running worker, if any.
    pub fn pid(&self) -> Option<u32> {
        self.pids().into_iter().flatten().next()
    }

    /// The process id of each worker's converter, `None` where it is not running.
    pub fn pids(&self) -> Vec<Option<u32>> {
        self.workers
            .iter()
            .map(|w| w.running.lock().ok()?.as_ref().map(|r| r.child.id()))
            .collect()
    }

    /// Jobs of `account` converting now and waiting for a worker.
    pub fn load(&self, account: &str) -> (usize, usize) {
        self.queue.lock().map(|q| q.load(account)).unwrap_or((0, 0))
    }

    fn start(&self, w: &Worker) -> Result<Running, ConvertError> {
        std::fs::create_dir_all(&w.dir)?;
        let script = w.dir.join("office_server.py");
        std::fs::write(&script, HELPER)?;
        let profile = w.dir.join("profile");
        self.starts.fetch_add(1, Ordering::Relaxed);
        let pipe = format!(
            "faxd_{}_{}",
            std::process::id(),
            PIPES.fetch_add(1, Ordering::Relaxed)
        );
        let python = ["/usr/bin/python3", "python3"]
            .into_iter()
            .find(|p| !p.starts_with('/') || Path::new(p).exists())
            .unwrap_or("python3");
        let before = osl_pipes();
        let mut cmd = Command::new(python);
        cmd.arg(&script).arg(&profile).arg(&pipe);
        sandbox::confine(&mut cmd, &self.limits, &w.dir);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().map_err(|e| ConvertError::ToolMissing {
            tool: "libreoffice".into(),
            detail: format!("cannot start python3 with the UNO helper: {e}"),
        })?;
        let stdin = child.stdin.take().ok_or_else(|| tool_failed("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| tool_failed("no stdout"))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let mut running = Running {
            child,
            stdin,
            lines,
        };
        let first = recv(&running.lines, self.startup).map_err(|e| match e {
            RecvTimeoutError::Timeout => ConvertError::Timeout { tool: "libreoffice start".into(), limit: self.startup },
            RecvTimeoutError::Disconnected => ConvertError::ToolMissing {
                tool: "libreoffice".into(),
                detail: "the UNO helper exited at start (are libreoffice-*-nogui and python3-uno installed?)".into(),
            },
        })?;
        let v: serde_json::Value =
            serde_json::from_str(&first).map_err(|_| tool_failed(first.clone()))?;
        if v["ready"] != true {
            let _ = running.child.kill();
            return Err(ConvertError::ToolMissing {
                tool: "libreoffice".into(),
                detail: v["error"].as_str().unwrap_or("not ready").to_string(),
            });
        }
        if let Ok(mut mine) = w.sockets.lock() {
            mine.extend(osl_pipes().into_iter().filter(|p| !before.contains(p)));
        }
        Ok(running)
    }

    /// Starts every worker that is not running now (in parallel), so that the first
    /// documents do not pay LibreOffice's start-up.
    pub fn warm_up(&self) -> Result<(), ConvertError> {
        std::thread::scope(|s| {
            let started: Vec<_> = self
                .workers
                .iter()
                .map(|w| {
                    s.spawn(move || {
                        let mut guard =
                            w.running.lock().map_err(|_| tool_failed("lock poisoned"))?;
                        self.ensure(w, &mut guard)
                    })
                })
                .collect();
            // The scope waits for every start, also after the first failure.
            started.into_iter().try_for_each(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(tool_failed("start panicked")))
            })
        })
    }

    fn ensure(&self, w: &Worker, guard: &mut Option<Running>) -> Result<(), ConvertError> {
        let alive = match guard.as_mut() {
            Some(r) => matches!(r.child.try_wait(), Ok(None)),
            None => false,
        };
        if !alive {
            *guard = None;
            *guard = Some(self.start(w)?);
        }
        Ok(())
    }

    /// Waits in `account`'s queue until the scheduler gives this job a worker.
    fn lease(&self, account: &str) -> Result<Lease<'_>, ConvertError> {
        let poisoned = |_| tool_failed("scheduler lock poisoned");
        let mut q: MutexGuard<'_, FairQueue> = self.queue.lock().map_err(poisoned)?;
        let ticket = q.submit(account);
        // Granting may have handed workers to jobs that already sleep.
        self.freed.notify_all();
        loop {
            if let Some(worker) = q.take(ticket) {
                return Ok(Lease {
                    office: self,
                    worker,
                });
            }
            q = self.freed.wait(q).map_err(poisoned)?;
        }
    }

    /// Converts `input` to PDF at `output` within `limit` on a worker given to `account`'s
    /// job by the fair scheduler. `text` marks plain UTF-8 text.
    pub fn to_pdf(
        &self,
        account: &str,
        input: &Path,
        output: &Path,
        text: bool,
        limit: Duration,
    ) -> Result<(), ConvertError> {
        let lease = self.lease(account)?;
        let w = &self.workers[lease.worker];
        let mut guard = w.running.lock().map_err(|_| tool_failed("lock poisoned"))?;
        self.ensure(w, &mut guard)?;
        let req = serde_json::json!({"in": input, "out": output, "text": text}).to_string();
        let result = {
            let r = guard.as_mut().ok_or_else(|| tool_failed("not running"))?;
            // Drop any stale line from an earlier, abandoned job.
            while r.lines.try_recv().is_ok() {}
            if writeln!(r.stdin, "{req}")
                .and_then(|_| r.stdin.flush())
                .is_err()
            {
                Err(RecvTimeoutError::Disconnected)
            } else {
                recv(&r.lines, limit)
            }
        };
        match result {
            Ok(line) => {
                let v: serde_json::Value =
                    serde_json::from_str(&line).map_err(|_| tool_failed(line.clone()))?;
                if v["ok"] == true {
                    let len = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
                    if len == 0 {
                        return Err(tool_failed("it wrote no PDF"));
                    }
                    Ok(())
                } else {
                    Err(ConvertError::malformed(
                        "office document",
                        v["error"]
                            .as_str()
                            .unwrap_or("LibreOffice cannot convert it"),
                    ))
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                *guard = None; // kills the whole group; the next job restarts it
                Err(ConvertError::Timeout {
                    tool: "libreoffice".into(),
                    limit,
                })
            }
            Err(RecvTimeoutError::Disconnected) => {
                *guard = None;
                Err(tool_failed(
                    "the converter died during the job; it restarts for the next one",
                ))
            }
        }
    }

    /// Stops every worker and removes their profiles and pipes.
    pub fn stop(&self) {
        for w in &self.workers {
            if let Ok(mut g) = w.running.lock() {
                *g = None;
            }
            if let Ok(mut mine) = w.sockets.lock() {
                for p in mine.drain(..) {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        if self.starts() > 0 {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for Office {
    fn drop(&mut self) {
        self.stop();
    }
}

fn recv(rx: &Receiver<String>, limit: Duration) -> Result<String, RecvTimeoutError> {
    rx.recv_timeout(limit)
}
