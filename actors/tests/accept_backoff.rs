//! The cluster door's accept loop on a real loopback listener whose process has no free file
//! descriptor (EMFILE): it waits between attempts instead of spinning, and takes the waiting
//! connections once descriptors are free again. Its own test binary, since it lowers the
//! process's descriptor limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use faxd_actors::cluster_door::accept_with_backoff;

/// The lowest free descriptor number: with the limit set to it, no new descriptor fits.
fn lowest_free_fd() -> u64 {
    // SAFETY: dup of stdin returns a new descriptor we close at once.
    unsafe {
        let fd = libc::dup(0);
        assert!(fd >= 0);
        libc::close(fd);
        fd as u64
    }
}

fn set_soft_fd_limit(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = n;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

/// CPU time of this process (user + system), from getrusage.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_descriptor_table_makes_accept_wait_not_spin() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Connections the kernel completes into the backlog before the table is full.
    let clients: Vec<std::net::TcpStream> = (0..5)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let taken = Arc::new(AtomicUsize::new(0));
    let counter = taken.clone();
    // No descriptor left: every accept fails with EMFILE.
    let reserve = lowest_free_fd();
    set_soft_fd_limit(reserve);
    let cpu0 = cpu_time();
    let wall = Duration::from_secs(2);
    let accepted = tokio::time::timeout(
        wall,
        accept_with_backoff(&listener, |_s, _p| {
            counter.fetch_add(1, Ordering::SeqCst);
            true
        }),
    )
    .await;
    let spent = cpu_time() - cpu0;
    assert!(accepted.is_err(), "the loop runs until stopped");
    assert_eq!(taken.load(Ordering::SeqCst), 0, "nothing can be accepted");
    // A loop retrying at once burns a whole core for the two seconds.
    assert!(
        spent < Duration::from_millis(500),
        "accept loop spent {spent:?} of CPU in {wall:?} of EMFILE"
    );
    // Descriptors free again: the waiting connections are taken within the longest pause.
    set_soft_fd_limit(reserve + 64);
    let start = Instant::now();
    let counter = taken.clone();
    let done = tokio::time::timeout(
        Duration::from_secs(10),
        accept_with_backoff(&listener, |_s, _p| {
            counter.fetch_add(1, Ordering::SeqCst) + 1 < clients.len()
        }),
    )
    .await;
    assert!(done.is_ok(), "connections were not accepted after EMFILE");
    assert_eq!(taken.load(Ordering::SeqCst), clients.len());
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}
