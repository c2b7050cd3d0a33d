//! Per-account fair scheduling of the LibreOffice workers: jobs wait in one queue per account
//! and a free worker goes to the waiting account that holds the fewest workers, ties broken by
//! the account served longest ago. One account never holds more than `max(1, N − 1)` of the N
//! workers, so while one account's slow documents run, a worker is always left for another
//! account's document (with the default of two workers: one each). Pure bookkeeping, no
//! threads or clocks: [`super::office::Office`] drives it under a mutex.

use std::collections::{HashMap, VecDeque};

/// A submitted job's place in the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket(u64);

#[derive(Debug, Default)]
struct Account {
    waiting: VecDeque<Ticket>,
    running: usize,
    /// Value of the scheduler's serve counter when this account last got a worker.
    last_served: u64,
}

/// The scheduler's state: which worker runs whose job, who waits, who was granted a worker.
#[derive(Debug)]
pub struct FairQueue {
    /// Busy workers hold the account they run for.
    workers: Vec<Option<String>>,
    cap: usize,
    accounts: HashMap<String, Account>,
    /// Tickets given a worker and not yet collected with [`FairQueue::take`].
    granted: HashMap<Ticket, usize>,
    next_ticket: u64,
    served: u64,
}

impl FairQueue {
    /// A scheduler for `workers` workers (at least one).
    pub fn new(workers: usize) -> Self {
        let n = workers.max(1);
        FairQueue {
            workers: vec![None; n],
            cap: (n - 1).max(1),
            accounts: HashMap::new(),
            granted: HashMap::new(),
            next_ticket: 0,
            served: 0,
        }
    }

    /// How many workers one account may hold at once.
    pub fn per_account_cap(&self) -> usize {
        self.cap
    }

    /// Queues a job of `account` and hands out whatever workers are free.
    pub fn submit(&mut self, account: &str) -> Ticket {
        let t = Ticket(self.next_ticket);
        self.next_ticket += 1;
        self.accounts
            .entry(account.to_string())
            .or_default()
            .waiting
            .push_back(t);
        self.dispatch();
        t
    }

    /// The worker granted to `ticket`, once (None while it still waits).
    pub fn take(&mut self, ticket: Ticket) -> Option<usize> {
        self.granted.remove(&ticket)
    }

    /// Worker `worker` finished its job: it is free again and goes to the next job.
    pub fn finish(&mut self, worker: usize) {
        let Some(account) = self.workers.get_mut(worker).and_then(Option::take) else {
            return;
        };
        if let Some(a) = self.accounts.get_mut(&account) {
            a.running = a.running.saturating_sub(1);
            if a.running == 0 && a.waiting.is_empty() {
                self.accounts.remove(&account);
            }
        }
        self.dispatch();
    }

    /// Jobs of `account` running and waiting.
    pub fn load(&self, account: &str) -> (usize, usize) {
        self.accounts
            .get(account)
            .map(|a| (a.running, a.waiting.len()))
            .unwrap_or((0, 0))
    }

    fn dispatch(&mut self) {
        while let Some(worker) = self.workers.iter().position(Option::is_none) {
            let cap = self.cap;
            let Some(name) = self
                .accounts
                .iter()
                .filter(|(_, a)| !a.waiting.is_empty() && a.running < cap)
                .min_by(|(n1, a1), (n2, a2)| {
                    (a1.running, a1.last_served, n1.as_str()).cmp(&(
                        a2.running,
                        a2.last_served,
                        n2.as_str(),
                    ))
                })
                .map(|(n, _)| n.clone())
            else {
                return;
            };
            self.served += 1;
            let Some(a) = self.accounts.get_mut(&name) else {
                return;
            };
            let Some(ticket) = a.waiting.pop_front() else {
                return;
            };
            a.running += 1;
            a.last_served = self.served;
            self.workers[worker] = Some(name);
            self.granted.insert(ticket, worker);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_account_leaves_a_worker_for_another() {
        let mut q = FairQueue::new(2);
        assert_eq!(q.per_account_cap(), 1);
        let a: Vec<Ticket> = (0..4).map(|_| q.submit("A")).collect();
        assert_eq!(q.take(a[0]), Some(0));
        assert_eq!(q.take(a[1]), None, "A may not hold both workers");
        assert_eq!(q.load("A"), (1, 3));
        let b = q.submit("B");
        assert_eq!(q.take(b), Some(1), "B runs at once beside A");
        // A's next job starts when A's first ends, not when B's ends.
        q.finish(0);
        assert_eq!(q.take(a[1]), Some(0));
        q.finish(1);
        assert_eq!(q.take(a[2]), None);
        assert_eq!(q.load("B"), (0, 0));
    }

    #[test]
    fn a_free_worker_goes_to_the_account_served_longest_ago() {
        let mut q = FairQueue::new(3);
        assert_eq!(q.per_account_cap(), 2);
        let a: Vec<Ticket> = (0..5).map(|_| q.submit("A")).collect();
        assert_eq!((q.take(a[0]), q.take(a[1])), (Some(0), Some(1)));
        let b1 = q.submit("B");
        let b2 = q.submit("B");
        let c = q.submit("C");
        assert_eq!(q.take(b1), Some(2));
        // Worker 0 frees: A (1 running) and B (1 running) lose to C (none running).
        q.finish(0);
        assert_eq!(q.take(c), Some(0));
        // Worker 1 frees (A now runs 0): A and B both hold one or none; A has none.
        q.finish(1);
        assert_eq!(q.take(a[2]), Some(1));
        assert_eq!(q.take(b2), None);
        // Worker 0 frees (C done): A and B each hold one; B was served before A's last job.
        q.finish(0);
        assert_eq!(q.take(b2), Some(0));
    }

    #[test]
    fn a_single_worker_alternates_between_accounts() {
        let mut q = FairQueue::new(1);
        let a: Vec<Ticket> = (0..3).map(|_| q.submit("A")).collect();
        let b = q.submit("B");
        assert_eq!(q.take(a[0]), Some(0));
        q.finish(0);
        assert_eq!(q.take(b), Some(0), "B goes before A's second job");
        q.finish(0);
        assert_eq!(q.take(a[1]), Some(0));
        q.finish(0);
        assert_eq!(q.take(a[2]), Some(0));
        q.finish(0);
        assert_eq!(q.load("A"), (0, 0));
        // Finishing an idle worker changes nothing.
        q.finish(0);
        q.finish(7);
    }

    #[test]
    fn an_account_alone_keeps_its_order_and_a_cap() {
        let mut q = FairQueue::new(4);
        let a: Vec<Ticket> = (0..6).map(|_| q.submit("A")).collect();
        let got: Vec<Option<usize>> = a.iter().map(|t| q.take(*t)).collect();
        assert_eq!(got, vec![Some(0), Some(1), Some(2), None, None, None]);
        q.finish(1);
        assert_eq!(q.take(a[3]), Some(1));
        assert_eq!(q.take(a[4]), None);
    }
}
