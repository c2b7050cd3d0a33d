//! The sandbox every external converter runs in: its own temporary directory (removed when the
//! job ends), a cleared environment, no network (a fresh network namespace), its own process
//! group killed as a whole at the wall-time limit, and memory, file-size, CPU and core limits
//! set with setrlimit before exec. Blocking: call it from a blocking thread, never an actor.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::error::ConvertError;

/// Limits of one sandboxed run.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Wall time; the whole process group is killed when it runs out.
    pub wall: Duration,
    /// Address-space limit (RLIMIT_AS) in bytes; 0 = unlimited.
    pub memory: u64,
    /// Largest file the process may write (RLIMIT_FSIZE) in bytes; 0 = unlimited.
    pub file_size: u64,
    /// Cut the network off (a new, empty network namespace).
    pub no_network: bool,
    /// CPU-time limit (RLIMIT_CPU) in seconds; 0 = the wall limit plus 5 s. Long-lived
    /// converters that run many jobs get a larger budget and are recycled before they use it.
    pub cpu_secs: u64,
    /// Niceness added to the converter's (0 = the node's priority). Conversion is batch work:
    /// a backlog of it must not slow the API's intake nor the media engine's real-time audio,
    /// and it still gets every cycle they leave idle.
    pub nice: i32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            wall: Duration::from_secs(120),
            memory: 1 << 30,
            file_size: 64 << 20,
            no_network: true,
            cpu_secs: 0,
            nice: CONVERTER_NICE,
        }
    }
}

/// The niceness converters run at by default.
pub const CONVERTER_NICE: i32 = 10;

/// A job's private temporary directory, removed (with everything in it) when dropped.
pub struct WorkDir {
    dir: tempfile::TempDir,
}

impl WorkDir {
    /// Creates `faxd-convert-XXXXXX` under `parent` (the system temp dir when `None`), mode 0700.
    pub fn new(parent: Option<&Path>) -> Result<Self, ConvertError> {
        Self::with_prefix(parent, "faxd-convert-")
    }

    /// Creates `<prefix>XXXXXX` under `parent` (the system temp dir when `None`), mode 0700.
    pub fn with_prefix(parent: Option<&Path>, prefix: &str) -> Result<Self, ConvertError> {
        let mut b = tempfile::Builder::new();
        b.prefix(prefix);
        let dir = match parent {
            Some(p) => {
                std::fs::create_dir_all(p)?;
                b.tempdir_in(p)?
            }
            None => b.tempdir()?,
        };
        Ok(WorkDir { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// What a finished run left behind.
#[derive(Debug)]
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Sets the limits and the process group of a command that is about to be spawned. The child
/// becomes the leader of a new session (so of a new process group) and loses the network.
pub fn confine(cmd: &mut Command, limits: &Limits, workdir: &Path) {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    cmd.env_clear()
        .env("PATH", path)
        .env("HOME", workdir)
        .env("TMPDIR", workdir)
        .env("LANG", "C.UTF-8")
        .current_dir(workdir);
    let limits = limits.clone();
    // SAFETY: the closure runs in the child between fork and exec and only makes
    // async-signal-safe system calls (setsid, setrlimit, setpriority, unshare, prctl); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let set = |res, v: u64| {
                let lim = libc::rlimit {
                    rlim_cur: v as libc::rlim_t,
                    rlim_max: v as libc::rlim_t,
                };
                libc::setrlimit(res, &lim)
            };
            if limits.memory > 0 && set(libc::RLIMIT_AS, limits.memory) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if limits.file_size > 0 && set(libc::RLIMIT_FSIZE, limits.file_size) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let cpu = match limits.cpu_secs {
                0 => limits.wall.as_secs().saturating_add(5),
                n => n,
            };
            if set(libc::RLIMIT_CPU, cpu) < 0 || set(libc::RLIMIT_CORE, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if limits.nice != 0 {
                // Relative to the node's own niceness; a refusal (a limit on raising it) leaves
                // the converter at the node's priority, which only costs speed.
                let now = libc::getpriority(libc::PRIO_PROCESS, 0);
                libc::setpriority(libc::PRIO_PROCESS, 0, now.saturating_add(limits.nice));
            }
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            if limits.no_network
                && libc::unshare(libc::CLONE_NEWNET) < 0
                && libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Kills every process of the group led by `pid`.
pub fn kill_group(pid: u32) {
    // SAFETY: plain system call; a stale group id only yields ESRCH.
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
    }
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if buf.len() < 64 * 1024 {
                        buf.extend_from_slice(&chunk[..n]);
                    }
                }
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `cmd` confined in `workdir` with `limits`, waits for it (killing its whole process
/// group at the wall-time limit) and returns its exit status and output. `tool` names it in
/// errors. A non-zero exit status is not an error here: callers decide.
pub fn run(
    tool: &str,
    cmd: Command,
    limits: &Limits,
    workdir: &Path,
) -> Result<RunOutput, ConvertError> {
    run_env(tool, cmd, &[], limits, workdir)
}

/// As [`run`], with variables added to the cleared environment.
pub fn run_env(
    tool: &str,
    mut cmd: Command,
    env: &[(&str, &Path)],
    limits: &Limits,
    workdir: &Path,
) -> Result<RunOutput, ConvertError> {
    confine(&mut cmd, limits, workdir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child: Child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ConvertError::ToolMissing {
                tool: tool.into(),
                detail: "not installed (rel/deps.sh installs it)".into(),
            }
        } else {
            ConvertError::ToolFailed {
                tool: tool.into(),
                detail: format!("cannot start: {e}"),
            }
        }
    })?;
    let pid = child.id();
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send(());
        status
    });
    let timed_out = rx.recv_timeout(limits.wall).is_err();
    // Whether it finished or not, nothing of the job may outlive it.
    kill_group(pid);
    let status = waiter.join().map_err(|_| ConvertError::ToolFailed {
        tool: tool.into(),
        detail: "waiter thread panicked".into(),
    })??;
    let stdout = out.and_then(|h| h.join().ok()).unwrap_or_default();
    let stderr = err.and_then(|h| h.join().ok()).unwrap_or_default();
    if timed_out {
        return Err(ConvertError::Timeout {
            tool: tool.into(),
            limit: limits.wall,
        });
    }
    Ok(RunOutput {
        status,
        stdout,
        stderr,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hanging_converter_is_killed_with_its_children_at_the_limit() {
        let wd = WorkDir::new(None).unwrap();
        let mut cmd = Command::new("/bin/sh");
        // The child shell starts a grandchild that would outlive a plain kill.
        cmd.arg("-c").arg("sleep 30 & echo $! > grandchild; wait");
        let limits = Limits {
            wall: Duration::from_millis(500),
            ..Limits::default()
        };
        let started = Instant::now();
        let err = run("hang", cmd, &limits, wd.path()).unwrap_err();
        assert!(matches!(err, ConvertError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let gc: i32 = std::fs::read_to_string(wd.join("grandchild"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild is gone (or a zombie about to be reaped by init) within a deadline.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{gc}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "grandchild {gc} survived: {stat}"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn the_memory_limit_stops_a_greedy_converter() {
        let wd = WorkDir::new(None).unwrap();
        let greedy =
            "awk 'BEGIN { s = \"x\"; while (length(s) < 50000000) s = s s; print length(s) }'";
        let limits = Limits {
            memory: 24 << 20,
            ..Limits::default()
        };
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(greedy);
        let out = run("awk", cmd, &limits, wd.path()).unwrap();
        assert!(
            !out.status.success(),
            "64 MB under a 24 MB limit: {}",
            out.stdout
        );
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(greedy);
        let roomy = Limits {
            memory: 1 << 30,
            ..Limits::default()
        };
        let out = run("awk", cmd, &roomy, wd.path()).unwrap();
        assert_eq!(out.stdout.trim(), "67108864");
    }

    #[test]
    fn a_converter_runs_below_the_nodes_priority() {
        fn nice_of(stat: &str) -> i32 {
            // Field 19 of /proc/<pid>/stat, the 17th after the command's closing parenthesis.
            let after = &stat[stat.rfind(')').expect("stat has a command") + 1..];
            after.split_whitespace().nth(16).unwrap().parse().unwrap()
        }
        let node = nice_of(&std::fs::read_to_string("/proc/self/stat").unwrap());
        let wd = WorkDir::new(None).unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg("cat /proc/self/stat");
        let out = run("cat", cmd, &Limits::default(), wd.path()).unwrap();
        assert_eq!(nice_of(&out.stdout), (node + CONVERTER_NICE).min(19));
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg("cat /proc/self/stat");
        let same = Limits {
            nice: 0,
            ..Limits::default()
        };
        let out = run("cat", cmd, &same, wd.path()).unwrap();
        assert_eq!(nice_of(&out.stdout), node);
    }

    #[test]
    fn no_network_no_big_files_and_a_clean_environment() {
        let wd = WorkDir::new(None).unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(
            "cat /proc/net/dev | grep -c ':' ; env | grep -c FAXD_SECRET_PROBE; \
             head -c 2000000 /dev/zero > big 2>/dev/null; echo size=$(stat -c %s big)",
        );
        let limits = Limits {
            file_size: 1_000_000,
            ..Limits::default()
        };
        // SAFETY: tests set a variable only this test reads.
        unsafe { std::env::set_var("FAXD_SECRET_PROBE", "x") };
        let out = run("sh", cmd, &limits, wd.path()).unwrap();
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines[0], "1", "only the loopback interface: {}", out.stdout);
        assert_eq!(lines[1], "0", "the environment is cleared");
        assert_eq!(lines[2], "size=1000000", "file size capped");
        let path = wd.path().to_path_buf();
        drop(wd);
        assert!(!path.exists(), "the work directory is removed");
    }
}
