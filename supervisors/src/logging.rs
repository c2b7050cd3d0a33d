//! Logging of the `faxd` binary: tracing to stderr, filtered by `FAXD_LOG` or `[log] level`,
//! with repeated lines rate-limited per call site so that no loop (an accept loop failing
//! with EMFILE, a flood of refused connections) can fill the disk with logs.
//!
//! Rate-limited: warnings and errors from any code, and every line of other crates (ractor's
//! per-connection lines). faxd's own info and debug lines are left alone (one per job or
//! call is their purpose); faxd's sites that can repeat in a loop use
//! [`faxd::log_throttle::Throttle`] themselves.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::subscriber::Interest;
use tracing::{Level, Metadata};
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Lines one call site may log per [`INTERVAL`].
pub const BURST: u32 = 20;
/// The rate-limit window.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Installs the subscriber (a second call does nothing).
pub fn init(level: &str) {
    let filter = EnvFilter::try_from_env("FAXD_LOG")
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let repeats = RepeatLimit::new(BURST, INTERVAL);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // The level filter outside: held-back lines are only those that would have shown.
        .with_filter(repeats)
        .with_filter(filter);
    let _ = tracing_subscriber::registry()
        .with(KnownNoise)
        .with(layer)
        .try_init();
}

/// Drops the lines that report nothing an operator can act on. One so far: ractor_cluster
/// warns "received an unknown child actor exit event" on every linked node each time a
/// remote-capable process of another node stops (its link session stops its local stand-in,
/// then is told of that stop) — with every account's queue in a process group, that would be
/// a warning per queue stop per node.
pub struct KnownNoise;

impl KnownNoise {
    fn is_noise(target: &str, level: &Level, message: &str) -> bool {
        target == "ractor_cluster::node::node_session"
            && *level == Level::WARN
            && message.contains("received an unknown child actor exit event")
    }
}

impl<S: tracing::Subscriber> Layer<S> for KnownNoise {
    fn event_enabled(&self, event: &tracing::Event<'_>, _cx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if meta.target() != "ractor_cluster::node::node_session" {
            return true;
        }
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{v:?}");
                }
            }
        }
        let mut m = Message(String::new());
        event.record(&mut m);
        !Self::is_noise(meta.target(), meta.level(), &m.0)
    }
}

/// A per-layer filter letting each call site log at most `burst` lines per `interval`; what
/// it holds back is counted and reported once the site logs again in a later window.
pub struct RepeatLimit {
    burst: u32,
    interval: Duration,
    /// Keyed by [`site_key`].
    sites: Mutex<HashMap<u64, Window>>,
}

struct Window {
    start: Instant,
    logged: u32,
    held_back: u64,
}

impl RepeatLimit {
    pub fn new(burst: u32, interval: Duration) -> Self {
        Self {
            burst,
            interval,
            sites: Mutex::new(HashMap::new()),
        }
    }

    fn limited(meta: &Metadata<'_>) -> bool {
        *meta.level() <= Level::WARN || !meta.target().starts_with("faxd")
    }

    /// Whether the site may log now; also returns how many lines were held back in the
    /// window that just ended (to be reported).
    fn admit(&self, site: u64, now: Instant) -> (bool, u64) {
        let mut sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        let w = sites.entry(site).or_insert(Window {
            start: now,
            logged: 0,
            held_back: 0,
        });
        let mut report = 0;
        if now.saturating_duration_since(w.start) >= self.interval {
            report = std::mem::take(&mut w.held_back);
            w.start = now;
            w.logged = 0;
        }
        if w.logged < self.burst {
            w.logged += 1;
            (true, report)
        } else {
            w.held_back += 1;
            (false, report)
        }
    }
}

/// A call site: where the line is written (records bridged from the `log` crate have no
/// static metadata of their own, so the address of the metadata cannot serve).
fn site_key(meta: &Metadata<'_>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        meta.target(),
        meta.file(),
        meta.line(),
        meta.level().as_str(),
    )
        .hash(&mut h);
    h.finish()
}

// The decision is made in `enabled` (asked once per event, with `Interest::sometimes`), not in
// `event_enabled`: a per-layer filter that refuses in `event_enabled` leaves tracing's
// per-thread filter state unbalanced.
impl<S> Filter<S> for RepeatLimit {
    fn enabled(&self, meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        if !meta.is_event() || !Self::limited(meta) {
            return true;
        }
        let (pass, held_back) = self.admit(site_key(meta), Instant::now());
        if held_back > 0 {
            // Written beside the subscriber (not through it): a filter must not log.
            eprintln!(
                "{}  WARN faxd::logging: {held_back} more lines from {} ({}:{}) were not logged in {} s",
                faxd::time::iso8601_now(),
                meta.target(),
                meta.file().unwrap_or("?"),
                meta.line().unwrap_or(0),
                self.interval.as_secs(),
            );
        }
        pass
    }

    fn callsite_enabled(&self, _meta: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_sessions_stop_notices_are_dropped_and_nothing_else() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Count(Arc<AtomicUsize>);
        impl<S: tracing::Subscriber> Layer<S> for Count {
            fn on_event(&self, _e: &tracing::Event<'_>, _cx: Context<'_, S>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let seen = Arc::new(AtomicUsize::new(0));
        let sub = tracing_subscriber::registry()
            .with(KnownNoise)
            .with(Count(seen.clone()));
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(target: "ractor_cluster::node::node_session",
                "NodeSession Some(\"faxd-a\") received an unknown child actor exit event from 0.97 - 'Some(\"remote\")'");
            assert_eq!(seen.load(Ordering::SeqCst), 0, "the notice was logged");
            tracing::warn!(target: "ractor_cluster::node::node_session",
                "Control message received on unauthenticated NodeSession");
            tracing::warn!("received an unknown child actor exit event");
        });
        assert_eq!(seen.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_site_logs_its_burst_then_is_held_back_until_the_next_window() {
        let f = RepeatLimit::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let passed = (0..1000).filter(|_| f.admit(1, t0).0).count();
        assert_eq!(passed, 3);
        // Another site has its own window.
        assert_eq!(f.admit(2, t0), (true, 0));
        assert_eq!(f.admit(1, t0 + Duration::from_secs(10)), (true, 997));
        assert_eq!(f.admit(1, t0 + Duration::from_secs(11)), (true, 0));
    }
}
