//! Node metrics for `GET /metrics`, in the Prometheus text exposition format (0.0.4).
//!
//! One registry per process ([`global`]): counters, gauges and histograms kept in atomics,
//! written from hot paths (dispatch, workers, conversion, store calls) and read only when
//! the page is rendered. Nothing in the node decides anything from these values; they are
//! for operators. The per-attempt counters with labels (directions, results, hangup causes)
//! live in small maps behind a mutex; per-call series (store calls) are fixed atomics.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Bucket bounds (seconds) for latencies from a millisecond to a minute.
const LATENCY_BOUNDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// A distribution of durations: cumulative buckets, a sum and a count.
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), plus one for `+Inf`.
    buckets: Vec<AtomicU64>,
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn latency() -> Self {
        Self {
            bounds: &LATENCY_BOUNDS,
            buckets: (0..=LATENCY_BOUNDS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let le = match self.bounds.get(i) {
                Some(bound) => bound.to_string(),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Counters keyed by a tuple of label values.
#[derive(Default)]
pub struct Counters(Mutex<BTreeMap<Vec<String>, u64>>);

impl Counters {
    /// Adds `n` to the series with these label values.
    pub fn add(&self, labels: &[&str], n: u64) {
        let key = labels.iter().map(|s| s.to_string()).collect();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(key).or_insert(0) += n;
    }

    fn snapshot(&self) -> Vec<(Vec<String>, u64)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// Everything this node counts.
pub struct Metrics {
    /// From the moment a job became due (created, or its retry time) to its worker starting.
    pub dispatch_latency: Histogram,
    /// Documents converted to fax TIFF (intake and workers).
    pub conversion: Histogram,
    /// Store calls that read.
    pub store_reads: Histogram,
    /// Store calls that write.
    pub store_writes: Histogram,
    /// Outbound transmissions running on this node now.
    pub in_flight: AtomicI64,
    /// Accounts whose outbound queue (fax_jobs) runs on this node now.
    pub owned_accounts: AtomicI64,
    /// Cluster members this node sees, itself included (0 when not clustered).
    pub cluster_members: AtomicI64,
    /// Pages transferred, by direction (`outbound`, `inbound`).
    pub pages: Counters,
    /// Finished attempts, by direction, result (`success`, `failure`) and cause.
    pub results: Counters,
}

/// The process's registry.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        dispatch_latency: Histogram::latency(),
        conversion: Histogram::latency(),
        store_reads: Histogram::latency(),
        store_writes: Histogram::latency(),
        in_flight: AtomicI64::new(0),
        owned_accounts: AtomicI64::new(0),
        cluster_members: AtomicI64::new(0),
        pages: Counters::default(),
        results: Counters::default(),
    })
}

/// Counts a finished fax attempt: its result, its cause and the pages it moved.
pub fn fax_finished(direction: &str, success: bool, cause: &str, pages: u32) {
    let m = global();
    let result = if success { "success" } else { "failure" };
    let cause = if cause.is_empty() { "UNKNOWN" } else { cause };
    m.results.add(&[direction, result, cause], 1);
    if pages > 0 {
        m.pages.add(&[direction], u64::from(pages));
    }
}

/// A store call's kind, for `faxd_store_request_seconds{op}`.
#[derive(Clone, Copy, Debug)]
pub enum StoreOp {
    Read,
    Write,
}

/// Times a store call: `let _t = metrics::store_timer(StoreOp::Read);`, recorded when
/// dropped. Two fixed histograms: no lock and no allocation on the store's path.
pub fn store_timer(op: StoreOp) -> Timer {
    let m = global();
    Timer {
        hist: match op {
            StoreOp::Read => &m.store_reads,
            StoreOp::Write => &m.store_writes,
        },
        start: std::time::Instant::now(),
    }
}

/// Records the time from its creation to its drop into a histogram.
pub struct Timer {
    hist: &'static Histogram,
    start: std::time::Instant,
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.hist.observe(self.start.elapsed());
    }
}

/// Counts one unit of a gauge up for as long as it lives (a transmission in flight, an
/// owned account).
pub struct GaugeGuard(&'static AtomicI64);

impl GaugeGuard {
    pub fn hold(gauge: &'static AtomicI64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A label value as the text format wants it (`\`, `"` and newlines escaped).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(names: &[&str], values: &[String]) -> String {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect::<Vec<_>>()
        .join(",")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// What is read from elsewhere when the page is rendered.
pub struct Scrape<'a> {
    pub node: &'a str,
    pub version: &'a str,
    /// Queued jobs by status, cluster-wide (from the store).
    pub queue: &'a [(String, u64)],
}

impl Metrics {
    /// The page, in the text exposition format.
    pub fn render(&self, scrape: &Scrape<'_>) -> String {
        let mut out = String::with_capacity(8192);
        header(
            &mut out,
            "faxd_info",
            "gauge",
            "This node: name and version.",
        );
        let info = labels(
            &["node", "version"],
            &[scrape.node.to_string(), scrape.version.to_string()],
        );
        let _ = writeln!(out, "faxd_info{{{info}}} 1");

        header(
            &mut out,
            "faxd_queue_jobs",
            "gauge",
            "Jobs in the outbound queue by status (the whole cluster's queue).",
        );
        for (status, n) in scrape.queue {
            let l = labels(&["status"], std::slice::from_ref(status));
            let _ = writeln!(out, "faxd_queue_jobs{{{l}}} {n}");
        }

        for (name, help, gauge) in [
            (
                "faxd_transmissions_in_flight",
                "Outbound transmissions running on this node.",
                &self.in_flight,
            ),
            (
                "faxd_owned_accounts",
                "Accounts whose outbound queue runs on this node.",
                &self.owned_accounts,
            ),
            (
                "faxd_cluster_members",
                "Cluster members this node sees, itself included (0: not clustered).",
                &self.cluster_members,
            ),
        ] {
            header(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {}", gauge.load(Ordering::Relaxed));
        }

        header(
            &mut out,
            "faxd_pages_total",
            "counter",
            "Fax pages transferred, by direction.",
        );
        for (l, n) in self.pages.snapshot() {
            let _ = writeln!(
                out,
                "faxd_pages_total{{{}}} {n}",
                labels(&["direction"], &l)
            );
        }
        header(
            &mut out,
            "faxd_results_total",
            "counter",
            "Finished fax attempts by direction, result and cause.",
        );
        for (l, n) in self.results.snapshot() {
            let _ = writeln!(
                out,
                "faxd_results_total{{{}}} {n}",
                labels(&["direction", "result", "cause"], &l)
            );
        }

        header(
            &mut out,
            "faxd_dispatch_latency_seconds",
            "histogram",
            "From a job becoming due to its transmission starting.",
        );
        self.dispatch_latency
            .render(&mut out, "faxd_dispatch_latency_seconds", "");
        header(
            &mut out,
            "faxd_conversion_seconds",
            "histogram",
            "Document conversions to fax TIFF.",
        );
        self.conversion
            .render(&mut out, "faxd_conversion_seconds", "");
        header(
            &mut out,
            "faxd_store_request_seconds",
            "histogram",
            "Store calls by operation.",
        );
        for (op, h) in [("read", &self.store_reads), ("write", &self.store_writes)] {
            h.render(
                &mut out,
                "faxd_store_request_seconds",
                &labels(&["op"], &[op.to_string()]),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_sum_in_seconds() {
        let h = Histogram::latency();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(120));
        let mut out = String::new();
        h.render(&mut out, "x", "op=\"read\"");
        assert!(
            out.contains("x_bucket{op=\"read\",le=\"0.001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{op=\"read\",le=\"0.025\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("x_bucket{op=\"read\",le=\"60\"} 2\n"), "{out}");
        assert!(
            out.contains("x_bucket{op=\"read\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_sum{op=\"read\"} 120.0205\n"), "{out}");
        assert!(out.contains("x_count{op=\"read\"} 3\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        let c = Counters::default();
        c.add(&["outbound", "failure", "say \"no\"\nnow"], 2);
        c.add(&["outbound", "failure", "say \"no\"\nnow"], 1);
        let l = labels(&["direction", "result", "cause"], &c.snapshot()[0].0);
        assert_eq!(
            l,
            "direction=\"outbound\",result=\"failure\",cause=\"say \\\"no\\\"\\nnow\""
        );
        assert_eq!(c.snapshot()[0].1, 3);
    }

    #[test]
    fn gauge_guard_counts_while_held() {
        static G: AtomicI64 = AtomicI64::new(0);
        let a = GaugeGuard::hold(&G);
        let b = GaugeGuard::hold(&G);
        assert_eq!(G.load(Ordering::Relaxed), 2);
        drop(a);
        assert_eq!(G.load(Ordering::Relaxed), 1);
        drop(b);
        assert_eq!(G.load(Ordering::Relaxed), 0);
    }
}
