//! Imports from other fax platforms into faxd's store (`faxd import …`): the errors and the
//! run summary they share. [`kazoo`] moves a Kazoo 4.x cluster over.

pub mod kazoo;
pub mod source;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::store::StoreError;

/// Why an import stopped. A document that cannot be imported is not an error: it is
/// [`Summary::skip`]ped with its reason and the run goes on.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("bad source URL: {0}")]
    Url(String),
    #[error("reading {url}: {reason}")]
    Source { url: String, reason: String },
    #[error("account {0} is not in the source's accounts database")]
    UnknownAccount(String),
    #[error("'{0}' is not an account id (32 hex characters)")]
    BadAccountId(String),
    #[error("writing to faxd's store: {0}")]
    Store(#[from] StoreError),
}

/// What happened to one imported document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Unchanged,
    Updated,
    Created,
}

impl Outcome {
    /// The combined outcome of a document written in several places (the strongest).
    pub fn and(self, other: Outcome) -> Outcome {
        self.max(other)
    }
}

/// Counts of one kind of document.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub skipped: u64,
}

/// One document left out, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub kind: &'static str,
    /// Where it is in the source: `<db>/<id>`.
    pub at: String,
    pub reason: String,
}

/// Counts per kind and the skipped documents of a run.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub counts: BTreeMap<&'static str, Counts>,
    pub skipped: Vec<Skipped>,
    /// Documents of types that are not fax data (devices, CDRs, voicemail boxes …), by type:
    /// counted, not listed one by one.
    pub ignored: BTreeMap<String, u64>,
    pub dry_run: bool,
}

impl Summary {
    pub fn record(&mut self, kind: &'static str, outcome: Outcome) {
        let c = self.counts.entry(kind).or_default();
        match outcome {
            Outcome::Created => c.created += 1,
            Outcome::Updated => c.updated += 1,
            Outcome::Unchanged => c.unchanged += 1,
        }
    }

    pub fn skip(&mut self, kind: &'static str, at: String, reason: impl Into<String>) {
        self.counts.entry(kind).or_default().skipped += 1;
        self.skipped.push(Skipped {
            kind,
            at,
            reason: reason.into(),
        });
    }

    pub fn ignore(&mut self, pvt_type: &str) {
        *self.ignored.entry(pvt_type.to_string()).or_default() += 1;
    }

    /// Documents created or updated (or that would be, in a dry run).
    pub fn changed(&self) -> u64 {
        self.counts.values().map(|c| c.created + c.updated).sum()
    }

    /// Documents read from the source: imported, unchanged or skipped.
    pub fn seen(&self) -> u64 {
        self.counts
            .values()
            .map(|c| c.created + c.updated + c.unchanged + c.skipped)
            .sum()
    }

    /// The table printed at the end of a run.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let (new, upd) = if self.dry_run {
            ("would create", "would update")
        } else {
            ("created", "updated")
        };
        let _ = writeln!(
            out,
            "{:<16} {:>12} {:>12} {:>10} {:>8}",
            "kind", new, upd, "unchanged", "skipped"
        );
        for (kind, c) in &self.counts {
            let _ = writeln!(
                out,
                "{kind:<16} {:>12} {:>12} {:>10} {:>8}",
                c.created, c.updated, c.unchanged, c.skipped
            );
        }
        if self.changed() == 0 {
            let _ = writeln!(out, "nothing changed");
        }
        if !self.ignored.is_empty() {
            let types: Vec<String> = self
                .ignored
                .iter()
                .map(|(t, n)| format!("{t} ({n})"))
                .collect();
            let _ = writeln!(out, "not fax data, left in Kazoo: {}", types.join(", "));
        }
        for s in &self.skipped {
            let _ = writeln!(out, "skipped {} {}: {}", s.kind, s.at, s.reason);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_and_reports_skips() {
        let mut s = Summary::default();
        s.record("users", Outcome::Created);
        s.record("users", Outcome::Unchanged);
        s.skip("callflows", "account/x/cf".into(), "no fax elements");
        assert_eq!(s.changed(), 1);
        assert_eq!(s.seen(), 3);
        let text = s.render();
        assert!(text.contains("users"), "{text}");
        assert!(
            text.contains("skipped callflows account/x/cf: no fax elements"),
            "{text}"
        );
        assert!(!text.contains("nothing changed"));
        let mut again = Summary::default();
        again.record("users", Outcome::Unchanged);
        assert!(again.render().contains("nothing changed"));
        assert_eq!(Outcome::Unchanged.and(Outcome::Created), Outcome::Created);
    }
}
