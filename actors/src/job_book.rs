//! fax_jobs' bookkeeping, pure: which jobs of an account are in flight, which destination
//! numbers are busy, how many slots are free under `max_outbound`, and which due jobs to
//! start next (higher `priority` first, then earliest due; with `serialize_outbound_numbers`
//! at most one job per number).

use std::collections::{HashMap, HashSet};

/// A due job that could start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub number: String,
    pub priority: i64,
    /// When it became runnable (gregorian seconds).
    pub runnable_at: i64,
}

/// The jobs in flight of one account.
#[derive(Clone, Debug, Default)]
pub struct JobBook {
    pub max_outbound: usize,
    pub serialize: bool,
    /// Job id → destination number.
    in_flight: HashMap<String, String>,
    /// Numbers with a transmission in flight (when serializing).
    numbers: HashSet<String>,
}

impl JobBook {
    pub fn new(max_outbound: usize, serialize: bool) -> Self {
        Self {
            max_outbound,
            serialize,
            ..Default::default()
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub fn free(&self) -> usize {
        self.max_outbound.saturating_sub(self.in_flight.len())
    }

    pub fn contains(&self, id: &str) -> bool {
        self.in_flight.contains_key(id)
    }

    pub fn number_busy(&self, number: &str) -> bool {
        self.serialize && self.numbers.contains(number)
    }

    /// Records a started job; false (and nothing recorded) if no slot or the number is busy.
    pub fn start(&mut self, id: &str, number: &str) -> bool {
        if self.free() == 0 || self.number_busy(number) || self.contains(id) {
            return false;
        }
        self.in_flight.insert(id.to_string(), number.to_string());
        if self.serialize {
            self.numbers.insert(number.to_string());
        }
        true
    }

    /// Records a transmission that is already running elsewhere (another node's), whatever
    /// the limits: it holds a slot (and its number) until finished. False if recorded.
    pub fn hold(&mut self, id: &str, number: &str) -> bool {
        if self.contains(id) {
            return false;
        }
        self.in_flight.insert(id.to_string(), number.to_string());
        if self.serialize {
            self.numbers.insert(number.to_string());
        }
        true
    }

    /// Records a finished job; returns whether it was in flight.
    pub fn finish(&mut self, id: &str) -> bool {
        match self.in_flight.remove(id) {
            Some(number) => {
                self.numbers.remove(&number);
                true
            }
            None => false,
        }
    }

    /// The candidates to start now, in start order: at most the free slots, one per number
    /// when serializing, never one already in flight or whose number is `blocked`.
    pub fn pick(
        &self,
        mut candidates: Vec<Candidate>,
        blocked: &HashSet<String>,
    ) -> Vec<Candidate> {
        candidates.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(a.runnable_at.cmp(&b.runnable_at))
                .then(a.id.cmp(&b.id))
        });
        let mut taken: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        for c in candidates {
            if out.len() >= self.free() {
                break;
            }
            if self.contains(&c.id) || blocked.contains(&c.number) {
                continue;
            }
            if self.serialize && (self.numbers.contains(&c.number) || taken.contains(&c.number)) {
                continue;
            }
            taken.insert(c.number.clone());
            out.push(c);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, number: &str, priority: i64, at: i64) -> Candidate {
        Candidate {
            id: id.into(),
            number: number.into(),
            priority,
            runnable_at: at,
        }
    }

    #[test]
    fn never_more_than_max_outbound() {
        let mut b = JobBook::new(2, false);
        assert!(b.start("a", "1"));
        let picked = b.pick(vec![c("b", "2", 0, 1), c("c", "3", 0, 2)], &HashSet::new());
        assert_eq!(picked.len(), 1);
        assert!(b.start("b", "2"));
        assert!(!b.start("c", "3"));
        assert_eq!(b.free(), 0);
        assert!(b.finish("a"));
        assert!(!b.finish("a"));
        assert_eq!(b.free(), 1);
    }

    #[test]
    fn one_per_number_when_serializing() {
        let mut b = JobBook::new(10, true);
        let picked = b.pick(
            vec![c("a", "1", 0, 1), c("b", "1", 0, 2), c("c", "2", 0, 3)],
            &HashSet::new(),
        );
        let ids: Vec<_> = picked.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert!(b.start("a", "1"));
        assert!(!b.start("b", "1"));
        assert!(b.pick(vec![c("b", "1", 0, 2)], &HashSet::new()).is_empty());
        b.finish("a");
        assert!(b.start("b", "1"));
        // Without serialization the same number runs in parallel.
        let mut p = JobBook::new(10, false);
        assert!(p.start("a", "1") && p.start("b", "1"));
    }

    #[test]
    fn priority_then_due_order_and_blocked_numbers() {
        let b = JobBook::new(3, true);
        let blocked: HashSet<String> = ["9".to_string()].into();
        let picked = b.pick(
            vec![
                c("late", "1", 0, 50),
                c("early", "2", 0, 10),
                c("urgent", "3", 5, 99),
                c("blocked", "9", 9, 0),
            ],
            &blocked,
        );
        let ids: Vec<_> = picked.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["urgent", "early", "late"]);
    }

    #[test]
    fn other_nodes_transmissions_hold_slots_beyond_the_limit() {
        let mut b = JobBook::new(2, true);
        assert!(b.start("a", "1") && b.start("b", "2"));
        // Found running elsewhere after the book filled up: held all the same.
        assert!(b.hold("x", "3"));
        assert!(!b.hold("x", "3"));
        assert_eq!(b.in_flight(), 3);
        assert!(b.number_busy("3"));
        b.finish("a");
        assert_eq!(b.free(), 0, "the foreign one still counts");
        b.finish("x");
        assert_eq!(b.free(), 1);
        assert!(!b.number_busy("3"));
    }
}
