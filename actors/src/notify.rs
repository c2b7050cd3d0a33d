//! notify: delivers this node's notifications (Kazoo's notification path through teletype,
//! done here without AMQP). Spawned by fax_sup, permanent; it holds nothing that a restart
//! could lose — pending notifications live in their documents (`pvt_notify`), and a restart
//! sweeps them up again.
//!
//! It wakes when a writer rings the node's [`Doorbell`](faxd::notify::Doorbell) (outbound
//! final write, inbound fax stored, a progress webhook of an outbound fax recorded), when a retry of a database falls due (one timer per
//! database, carrying its due time as a token so a superseded timer does nothing), and on a
//! slow sweep (`[notify] sweep`) over every account's recent MODBs for what a crashed node
//! left. The delivery logic is [`faxd::notify::deliver`]. Each database is delivered by a task
//! of its own, at most [`DELIVERIES`] at once and one per database, so a slow relay or
//! webhook holds up neither the mailbox nor the other databases; the tasks are aborted when
//! notify stops (what they had not recorded is sent again later: at least once).

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use faxd::context::NodeContext;
use faxd::ids::Db;
use faxd::notify::deliver::Notifier;
use futures_util::FutureExt as _;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{info, warn};

/// Messages of notify (local only).
pub enum NotifyMsg {
    /// A document with a pending notification was written to this database.
    Ring(Db),
    /// A retry in this database falls due at this time (unix seconds): the timer's token.
    Due(Db, i64),
    /// The safety sweep.
    Sweep,
    /// A delivery task of this database ended: its next due time, or why it failed.
    Ran(Db, Result<Option<i64>, String>),
}

/// Databases delivered at once.
pub const DELIVERIES: usize = 8;

impl ractor::Message for NotifyMsg {}

/// When each database is next due, and whether a timer stands for it.
#[derive(Default)]
pub struct Wakeups(HashMap<Db, i64>);

impl Wakeups {
    /// Notes that `db` is due at `at`; `true` when a timer must be set (nothing earlier is
    /// already armed).
    pub fn arm(&mut self, db: &Db, at: i64) -> bool {
        match self.0.get(db) {
            Some(t) if *t <= at => false,
            _ => {
                self.0.insert(db.clone(), at);
                true
            }
        }
    }

    /// A timer fired: `true` when it is the one armed for `db` (not superseded).
    pub fn fire(&mut self, db: &Db, at: i64) -> bool {
        if self.0.get(db) == Some(&at) {
            self.0.remove(db);
            true
        } else {
            false
        }
    }
}

pub struct Notify;

pub struct NotifyState {
    notifier: Arc<Notifier>,
    wakeups: Wakeups,
    tasks: Vec<JoinHandle<()>>,
    /// The delivery tasks running (one per database in `running`).
    deliveries: JoinSet<()>,
    running: HashSet<Db>,
    /// Databases rung while their task ran, or waiting for a free place: run (again) next,
    /// in order, each once.
    waiting: VecDeque<Db>,
    queued: HashSet<Db>,
}

#[ractor::async_trait]
impl Actor for Notify {
    type Msg = NotifyMsg;
    type State = NotifyState;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<NotifyMsg>,
        ctx: NodeContext,
    ) -> Result<NotifyState, ActorProcessingErr> {
        let cfg = ctx.config.notify.clone();
        let sweep = Duration::from_secs(cfg.sweep.max(1));
        let notifier = Notifier::new(ctx.store.clone(), cfg, &ctx.config.node.data_dir)?;
        if let Some(dir) = notifier.maildir() {
            info!(maildir = %dir.display(), "notification mail goes to the maildir");
        }
        let mut bell = ctx.notify.listen();
        let me = myself.clone();
        // Forwards the doorbell; a lagging receiver only means a sweep is due.
        let forward = tokio::spawn(async move {
            loop {
                let msg = match bell.recv().await {
                    Ok(db) => NotifyMsg::Ring(db),
                    Err(RecvError::Lagged(_)) => NotifyMsg::Sweep,
                    Err(RecvError::Closed) => return,
                };
                if me.cast(msg).is_err() {
                    return;
                }
            }
        });
        let interval = myself.send_interval(sweep, || NotifyMsg::Sweep);
        // What a previous run left.
        let _ = myself.cast(NotifyMsg::Sweep);
        Ok(NotifyState {
            notifier: Arc::new(notifier),
            wakeups: Wakeups::default(),
            tasks: vec![forward, interval],
            deliveries: JoinSet::new(),
            running: HashSet::new(),
            waiting: VecDeque::new(),
            queued: HashSet::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<NotifyMsg>,
        msg: NotifyMsg,
        st: &mut NotifyState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NotifyMsg::Ring(db) => st.run(&myself, db),
            NotifyMsg::Due(db, at) => {
                if st.wakeups.fire(&db, at) {
                    st.run(&myself, db);
                }
            }
            NotifyMsg::Sweep => match st.notifier.sweep_dbs().await {
                Ok(dbs) => {
                    for db in dbs {
                        st.run(&myself, db);
                    }
                }
                Err(e) => warn!(error = %e, "notification sweep: accounts not listed"),
            },
            NotifyMsg::Ran(db, result) => {
                st.running.remove(&db);
                st.ran(&myself, &db, result);
                // Reap the finished task, then start what waits, as far as places allow.
                while st.deliveries.try_join_next().is_some() {}
                st.start_waiting(&myself);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<NotifyMsg>,
        st: &mut NotifyState,
    ) -> Result<(), ActorProcessingErr> {
        for t in st.tasks.drain(..) {
            t.abort();
        }
        st.deliveries.shutdown().await;
        Ok(())
    }
}

impl NotifyState {
    /// Delivers what is due in `db` in a task of its own, unless one runs for it already or
    /// every place is taken (then it runs when a task ends).
    fn run(&mut self, myself: &ActorRef<NotifyMsg>, db: Db) {
        if self.running.contains(&db) || self.running.len() >= DELIVERIES {
            if self.queued.insert(db.clone()) {
                self.waiting.push_back(db);
            }
            return;
        }
        self.running.insert(db.clone());
        let notifier = self.notifier.clone();
        let me = myself.clone();
        self.deliveries.spawn(async move {
            // A panic is reported like an error, so the database is never left `running`.
            let result = match AssertUnwindSafe(notifier.run_db(&db)).catch_unwind().await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("the delivery task panicked".to_string()),
            };
            let _ = me.cast(NotifyMsg::Ran(db, result));
        });
    }

    /// Starts waiting databases while places are free (one whose task still runs waits on).
    fn start_waiting(&mut self, myself: &ActorRef<NotifyMsg>) {
        let mut later = VecDeque::new();
        while self.running.len() < DELIVERIES {
            let Some(db) = self.waiting.pop_front() else {
                break;
            };
            if self.running.contains(&db) {
                later.push_back(db);
                continue;
            }
            self.queued.remove(&db);
            self.run(myself, db);
        }
        later.append(&mut self.waiting);
        self.waiting = later;
    }

    /// A delivery of `db` ended: arm the timer of its next retry. A run that failed (the
    /// store did not answer) is run again after the first retry delay, not left to the sweep.
    fn ran(&mut self, myself: &ActorRef<NotifyMsg>, db: &Db, result: Result<Option<i64>, String>) {
        let now = faxd::time::now_unix();
        let at = match result {
            Ok(Some(at)) => at,
            Ok(None) => return,
            Err(e) => {
                let at = now + self.notifier.cfg.retry_min.max(1) as i64;
                warn!(db = %db, error = %e, retry_at = at, "notifications not delivered now");
                at
            }
        };
        if self.wakeups.arm(db, at) {
            let wait = Duration::from_secs((at - now).max(0) as u64);
            let db = db.clone();
            myself.send_after(wait, move || NotifyMsg::Due(db, at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faxd::ids::{AccountId, YearMonth};

    #[test]
    fn only_the_earliest_timer_of_a_database_counts() {
        let db = Db::Modb(AccountId::generate(), YearMonth::now());
        let mut w = Wakeups::default();
        assert!(w.arm(&db, 100));
        assert!(!w.arm(&db, 150));
        assert!(w.arm(&db, 50));
        assert!(!w.fire(&db, 100));
        assert!(w.fire(&db, 50));
        assert!(!w.fire(&db, 50));
        assert!(w.arm(&db, 150));
    }
}
