//! Rate limits for log lines that can repeat in a tight loop (accept errors, refused or
//! timed-out connections): the first occurrences of an interval are logged, the rest only
//! counted, and the count is reported with the next line that is logged.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One rate-limited log site: at most `burst` lines per `interval`.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    burst: u32,
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl Throttle {
    pub const fn new(interval: Duration, burst: u32) -> Self {
        Self {
            interval,
            burst,
            state: Mutex::new(Window {
                start: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether to log this occurrence: `Some(n)` with the number of occurrences left unlogged
    /// since the last logged one, `None` to stay silent.
    pub fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Option<u64> {
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = w
            .start
            .is_none_or(|s| now.saturating_duration_since(s) >= self.interval);
        if fresh {
            w.start = Some(now);
            w.logged = 0;
        }
        if w.logged < self.burst {
            w.logged += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_a_burst_then_counts_until_the_next_interval() {
        let t = Throttle::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        assert_eq!(t.check_at(t0), Some(0));
        assert_eq!(t.check_at(t0), Some(0));
        for _ in 0..1000 {
            assert_eq!(t.check_at(t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(t.check_at(t0 + Duration::from_secs(10)), Some(1000));
        assert_eq!(t.check_at(t0 + Duration::from_secs(11)), Some(0));
        assert_eq!(t.check_at(t0 + Duration::from_secs(12)), None);
    }
}
