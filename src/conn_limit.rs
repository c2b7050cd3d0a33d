//! Connection limits shared by faxd's listeners (the API, the file proxy, the cluster port):
//! open connections counted per client address and in total, and the process's
//! file-descriptor limit, raised at start and shared out so that no listener can take every
//! descriptor the node needs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Descriptors kept back for everything that is not a client connection (store files,
/// SQLite, converters' pipes, log files, the runtime).
pub const RESERVED_FDS: u64 = 64;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit now in force.
/// Call once at start.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
    }
    Ok(lim.rlim_cur)
}

/// The soft `RLIMIT_NOFILE` in force (a large number when it cannot be read).
pub fn fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return u64::from(u32::MAX);
    }
    lim.rlim_cur
}

/// The connections a listener may hold: `wanted`, but at most `share` (a fraction) of the
/// descriptors above [`RESERVED_FDS`], and at least one.
pub fn fd_budget(wanted: usize, share: f64) -> usize {
    let usable = fd_limit().saturating_sub(RESERVED_FDS) as f64 * share;
    wanted.min(usable as usize).max(1)
}

/// Open connections, per client address and in total, with a limit on each.
#[derive(Clone, Debug)]
pub struct ConnLimiter {
    inner: Arc<Mutex<Counts>>,
    per_address: usize,
    total: usize,
}

#[derive(Debug, Default)]
struct Counts {
    by_address: HashMap<IpAddr, usize>,
    total: usize,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The client address already holds its share.
    PerAddress,
    /// The listener holds all the connections it may.
    Total,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Slot {
    inner: Arc<Mutex<Counts>>,
    addr: IpAddr,
}

impl ConnLimiter {
    /// `per_address` 0 means no per-address limit; `total` 0 means no total limit.
    pub fn new(per_address: usize, total: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Counts::default())),
            per_address: if per_address == 0 {
                usize::MAX
            } else {
                per_address
            },
            total: if total == 0 { usize::MAX } else { total },
        }
    }

    /// Admits a connection from `addr`, or says why not.
    pub fn admit(&self, addr: IpAddr) -> Result<Slot, Refused> {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= self.total {
            return Err(Refused::Total);
        }
        let n = c.by_address.entry(addr).or_insert(0);
        if *n >= self.per_address {
            return Err(Refused::PerAddress);
        }
        *n += 1;
        c.total += 1;
        Ok(Slot {
            inner: self.inner.clone(),
            addr,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_address.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                c.by_address.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_address_and_in_total_and_frees_on_drop() {
        let l = ConnLimiter::new(2, 3);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let a1 = l.admit(a).unwrap();
        let _a2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).unwrap_err(), Refused::PerAddress);
        let _b1 = l.admit(b).unwrap();
        assert_eq!(l.admit(b).unwrap_err(), Refused::Total);
        drop(a1);
        assert_eq!(l.open(), 2);
        assert!(l.admit(a).is_ok());
    }

    #[test]
    fn fd_budget_leaves_the_reserve() {
        let limit = raise_fd_limit().unwrap();
        assert_eq!(fd_limit(), limit);
        let all = fd_budget(usize::MAX, 1.0) as u64;
        assert_eq!(all, limit.saturating_sub(RESERVED_FDS).max(1));
        assert_eq!(fd_budget(5, 1.0), 5);
    }
}
