//! Delayed restarts ([`Backoff`]): children that cannot start while a dependency is away are
//! retried at growing, capped intervals, never spend the supervisor's restart intensity, and
//! run again once the dependency is back. Real actors under a real supervisor; waits poll
//! with a deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faxd_supervisors::supervisor::*;
use ractor::{Actor, ActorProcessingErr, ActorRef, ActorStatus};
use tokio::time::{Instant, sleep};

const RPC: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(20);

/// A stand-in for the store: children refuse to start while it is down.
#[derive(Clone, Default)]
struct Dependency {
    down: Arc<AtomicBool>,
    /// Start attempts, by child name, with their time.
    attempts: Arc<Mutex<Vec<(String, Instant)>>>,
}

impl Dependency {
    fn attempts_of(&self, name: &str) -> Vec<Instant> {
        self.attempts
            .lock()
            .expect("attempts lock")
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, t)| *t)
            .collect()
    }
}

struct Bound;

enum BoundMsg {
    /// The handler fails, as a process does when its store call errors.
    Fail,
}

impl ractor::Message for BoundMsg {}

#[async_trait::async_trait]
impl Actor for Bound {
    type Msg = BoundMsg;
    type State = ();
    type Arguments = (String, Dependency);

    async fn pre_start(
        &self,
        _myself: ActorRef<BoundMsg>,
        (name, dep): (String, Dependency),
    ) -> Result<(), ActorProcessingErr> {
        dep.attempts
            .lock()
            .expect("attempts lock")
            .push((name, Instant::now()));
        if dep.down.load(Ordering::SeqCst) {
            return Err("store unavailable: connection refused".into());
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<BoundMsg>,
        msg: BoundMsg,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            BoundMsg::Fail => Err("store unavailable: connection refused".into()),
        }
    }
}

fn bound_spec(name: &str, dep: &Dependency, restart: Restart, backoff: Backoff) -> ChildSpec {
    let (n, d) = (name.to_string(), dep.clone());
    ChildSpec::new(name, restart, move |sup| {
        spawn_child(Some(n.clone()), Bound, (n.clone(), d.clone()), sup)
    })
    .with_backoff(backoff)
}

fn lookup(name: &str) -> Option<ActorRef<BoundMsg>> {
    ractor::registry::where_is(name).map(Into::into)
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(10)).await;
    }
}

async fn running(sup: &ActorRef<SupervisorMsg>, id: &str) -> bool {
    report(sup, RPC)
        .await
        .expect("report")
        .children
        .iter()
        .any(|c| c.id == id && c.running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_backs_off_and_never_exhausts_the_intensity() {
    let dep = Dependency::default();
    let backoff = Backoff::new(
        Duration::from_millis(20),
        Duration::from_millis(160),
        Duration::from_secs(60),
    );
    // One restart in ten seconds: a single immediate restart loop would exceed it.
    let (sup, handle) = Actor::spawn(
        Some("backoff_sup_a".into()),
        Supervisor,
        SupervisorArgs {
            name: "backoff_sup_a".into(),
            intensity: Intensity::new(1, Duration::from_secs(10)),
            children: vec![bound_spec(
                "backoff_child_a",
                &dep,
                Restart::Permanent,
                backoff,
            )],
        },
    )
    .await
    .expect("supervisor starts");

    // The store goes away and the child fails.
    dep.down.store(true, Ordering::SeqCst);
    lookup("backoff_child_a")
        .expect("child runs")
        .cast(BoundMsg::Fail)
        .expect("cast");
    // Twelve failed restarts: far beyond the intensity, spread out by the backoff.
    eventually("twelve restart attempts", async || {
        dep.attempts_of("backoff_child_a").len() >= 13
    })
    .await;
    assert_eq!(sup.get_status(), ActorStatus::Running, "supervisor gave up");
    assert!(!running(&sup, "backoff_child_a").await);

    // Delays double from 20 ms and stay at the 160 ms cap (attempt 0 is the first start).
    let times = dep.attempts_of("backoff_child_a");
    let gaps: Vec<Duration> = times[1..].windows(2).map(|w| w[1] - w[0]).collect();
    for (i, gap) in gaps.iter().enumerate() {
        let want = backoff.delay(i as u32 + 2);
        assert!(
            *gap >= want,
            "gap {i} was {gap:?}, less than the backoff {want:?}: {gaps:?}"
        );
    }
    assert!(
        gaps.iter()
            .rev()
            .take(5)
            .all(|g| *g < Duration::from_millis(160) * 10),
        "capped delays grew past the cap: {gaps:?}"
    );

    // The store is back: the child runs again at its next attempt, the supervisor intact.
    dep.down.store(false, Ordering::SeqCst);
    eventually("child running again", async || {
        running(&sup, "backoff_child_a").await
    })
    .await;
    let rep = report(&sup, RPC).await.expect("report");
    assert!(rep.children[0].restarts >= 12, "{rep:?}");
    assert!(lookup("backoff_child_a").is_some());

    shutdown(sup, Duration::from_secs(10))
        .await
        .expect("shutdown");
    handle.await.expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_dynamic_children_failing_together_keep_their_supervisor() {
    let dep = Dependency::default();
    let backoff = Backoff::new(
        Duration::from_millis(10),
        Duration::from_millis(80),
        Duration::from_secs(60),
    );
    let (sup, handle) = Actor::spawn(
        Some("backoff_sup_b".into()),
        Supervisor,
        SupervisorArgs {
            name: "backoff_sup_b".into(),
            intensity: Intensity::new(5, Duration::from_secs(10)),
            children: vec![],
        },
    )
    .await
    .expect("supervisor starts");
    let names: Vec<String> = (0..100).map(|i| format!("backoff_queue_{i}")).collect();
    for n in &names {
        start_child(&sup, bound_spec(n, &dep, Restart::Transient, backoff), RPC)
            .await
            .expect("child starts");
    }

    // All hundred fail at once while the store is away, and keep failing their restarts.
    dep.down.store(true, Ordering::SeqCst);
    for n in &names {
        lookup(n)
            .expect("child runs")
            .cast(BoundMsg::Fail)
            .expect("cast");
    }
    eventually("every child retried three times", async || {
        names.iter().all(|n| dep.attempts_of(n).len() >= 4)
    })
    .await;
    assert_eq!(sup.get_status(), ActorStatus::Running, "supervisor gave up");

    // Back: every one of them runs again; none was dropped.
    dep.down.store(false, Ordering::SeqCst);
    eventually("all hundred running again", async || {
        let rep = report(&sup, RPC).await.expect("report");
        rep.children.len() == 100 && rep.children.iter().all(|c| c.running)
    })
    .await;
    for n in &names {
        assert!(lookup(n).is_some(), "{n} not registered again");
    }

    shutdown(sup, Duration::from_secs(30))
        .await
        .expect("shutdown");
    handle.await.expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_removed_while_waiting_is_not_started_again() {
    let dep = Dependency::default();
    let backoff = Backoff::new(
        Duration::from_millis(300),
        Duration::from_millis(300),
        Duration::from_secs(60),
    );
    let (sup, handle) = Actor::spawn(
        None,
        Supervisor,
        SupervisorArgs {
            name: "backoff_sup_c".into(),
            intensity: Intensity::new(1, Duration::from_secs(10)),
            children: vec![],
        },
    )
    .await
    .expect("supervisor starts");
    start_child(
        &sup,
        bound_spec("backoff_child_c", &dep, Restart::Transient, backoff),
        RPC,
    )
    .await
    .expect("child starts");
    lookup("backoff_child_c")
        .expect("child runs")
        .cast(BoundMsg::Fail)
        .expect("cast");
    eventually("child gone", async || lookup("backoff_child_c").is_none()).await;
    // While it waits for its restart, the operator removes it.
    assert!(
        terminate_child(&sup, "backoff_child_c", RPC)
            .await
            .expect("terminate")
    );
    // Well past the delay, it was not started again (the timer was stale).
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(900) {
        assert!(
            lookup("backoff_child_c").is_none(),
            "removed child restarted"
        );
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(dep.attempts_of("backoff_child_c").len(), 1);
    shutdown(sup, Duration::from_secs(10))
        .await
        .expect("shutdown");
    handle.await.expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_a_waiting_child_starts_it_at_once() {
    let dep = Dependency::default();
    // A long delay: the child would wait a minute for its restart.
    let backoff = Backoff::new(
        Duration::from_secs(60),
        Duration::from_secs(60),
        Duration::from_secs(60),
    );
    let (sup, handle) = Actor::spawn(
        None,
        Supervisor,
        SupervisorArgs {
            name: "backoff_sup_d".into(),
            intensity: Intensity::new(1, Duration::from_secs(10)),
            children: vec![],
        },
    )
    .await
    .expect("supervisor starts");
    let spec = || bound_spec("backoff_child_d", &dep, Restart::Transient, backoff);
    start_child(&sup, spec(), RPC).await.expect("child starts");
    dep.down.store(true, Ordering::SeqCst);
    lookup("backoff_child_d")
        .expect("child runs")
        .cast(BoundMsg::Fail)
        .expect("cast");
    eventually("child gone", async || lookup("backoff_child_d").is_none()).await;
    // Still away: asking for it fails, and it keeps waiting.
    assert!(start_child(&sup, spec(), RPC).await.is_err());
    assert!(lookup("backoff_child_d").is_none());
    // Back: asking for it starts it now, well before its delay is over.
    dep.down.store(false, Ordering::SeqCst);
    start_child(&sup, spec(), RPC)
        .await
        .expect("waiting child started on request");
    assert!(lookup("backoff_child_d").is_some());
    let rep = report(&sup, RPC).await.expect("report");
    assert_eq!(rep.children.len(), 1, "{rep:?}");
    assert!(rep.children[0].running);
    shutdown(sup, Duration::from_secs(10))
        .await
        .expect("shutdown");
    handle.await.expect("join");
}

#[test]
fn delays_double_and_stop_at_the_cap() {
    let b = Backoff::new(
        Duration::from_millis(250),
        Duration::from_secs(30),
        Duration::from_secs(60),
    );
    let got: Vec<u128> = (1..=10).map(|n| b.delay(n).as_millis()).collect();
    assert_eq!(
        got,
        [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
    );
    assert_eq!(b.delay(u32::MAX), Duration::from_secs(30));
}
