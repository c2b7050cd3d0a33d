//! LibreOffice, kept warm: one long-lived converter process (faxd's UNO helper
//! `priv/convert/office_server.py` and the headless soffice it starts, with a private
//! profile) in its own sandboxed process group. Jobs go one at a time; a job over its time
//! limit kills the group, and a dead converter is restarted for the next job.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use super::error::ConvertError;
use super::sandbox::{self, Limits};

const HELPER: &str = include_str!("../../priv/convert/office_server.py");

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

/// The warm LibreOffice converter.
pub struct Office {
    dir: PathBuf,
    limits: Limits,
    startup: Duration,
    running: Mutex<Option<Running>>,
    starts: std::sync::atomic::AtomicU32,
    /// Sockets soffice created in /tmp (its pipe directory is fixed), removed at stop.
    sockets: Mutex<Vec<PathBuf>>,
}

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

impl Office {
    /// A converter whose profile and helper live in `dir` (created, private to faxd).
    pub fn new(dir: PathBuf, limits: Limits) -> Self {
        Office {
            dir,
            limits,
            startup: Duration::from_secs(90),
            running: Mutex::new(None),
            starts: std::sync::atomic::AtomicU32::new(0),
            sockets: Mutex::new(Vec::new()),
        }
    }

    /// How many times the converter process was started (restarts included).
    pub fn starts(&self) -> u32 {
        self.starts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The process id of the running converter (its process group), if any.
    pub fn pid(&self) -> Option<u32> {
        self.running.lock().ok()?.as_ref().map(|r| r.child.id())
    }

    fn start(&self) -> Result<Running, ConvertError> {
        std::fs::create_dir_all(&self.dir)?;
        let script = self.dir.join("office_server.py");
        std::fs::write(&script, HELPER)?;
        let profile = self.dir.join("profile");
        let n = self
            .starts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pipe = format!("faxd_{}_{}", std::process::id(), n);
        let python = ["/usr/bin/python3", "python3"]
            .into_iter()
            .find(|p| !p.starts_with('/') || Path::new(p).exists())
            .unwrap_or("python3");
        let before = osl_pipes();
        let mut cmd = Command::new(python);
        cmd.arg(&script).arg(&profile).arg(&pipe);
        sandbox::confine(&mut cmd, &self.limits, &self.dir);
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
        if let Ok(mut mine) = self.sockets.lock() {
            mine.extend(osl_pipes().into_iter().filter(|p| !before.contains(p)));
        }
        Ok(running)
    }

    /// Starts the converter now if it is not running (so the first document does not pay
    /// LibreOffice's start-up).
    pub fn warm_up(&self) -> Result<(), ConvertError> {
        let mut guard = self
            .running
            .lock()
            .map_err(|_| tool_failed("lock poisoned"))?;
        self.ensure(&mut guard)
    }

    fn ensure(&self, guard: &mut Option<Running>) -> Result<(), ConvertError> {
        let alive = match guard.as_mut() {
            Some(r) => matches!(r.child.try_wait(), Ok(None)),
            None => false,
        };
        if !alive {
            *guard = None;
            *guard = Some(self.start()?);
        }
        Ok(())
    }

    /// Converts `input` to PDF at `output` within `limit`. `text` marks plain UTF-8 text.
    pub fn to_pdf(
        &self,
        input: &Path,
        output: &Path,
        text: bool,
        limit: Duration,
    ) -> Result<(), ConvertError> {
        let mut guard = self
            .running
            .lock()
            .map_err(|_| tool_failed("lock poisoned"))?;
        self.ensure(&mut guard)?;
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

    /// Stops the converter and removes its profile and pipe.
    pub fn stop(&self) {
        if let Ok(mut g) = self.running.lock() {
            *g = None;
        }
        if self.starts() > 0 {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        if let Ok(mut mine) = self.sockets.lock() {
            for p in mine.drain(..) {
                let _ = std::fs::remove_file(p);
            }
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
