//! Supervision tests: real actors under real supervisors; waits poll state with a deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faxd_supervisors::supervisor::*;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort};
use tokio::time::{Instant, sleep};

/// Upper bound for anything the tests wait for.
const WAIT: Duration = Duration::from_secs(10);
/// Timeout of every request the tests make.
const RPC: Duration = Duration::from_secs(2);

/// What the test workers record: stop order (from `post_stop`) and start counts by name.
#[derive(Clone, Default)]
struct Probe {
    stopped: Arc<Mutex<Vec<String>>>,
    starts: Arc<Mutex<HashMap<String, u32>>>,
}

impl Probe {
    fn stopped(&self) -> Vec<String> {
        self.stopped.lock().expect("probe lock").clone()
    }

    fn starts(&self, name: &str) -> u32 {
        let starts = self.starts.lock().expect("probe lock");
        starts.get(name).copied().unwrap_or(0)
    }
}

struct Worker;

#[derive(Clone)]
struct WorkerArgs {
    name: String,
    probe: Probe,
    /// Async cleanup time in `post_stop`.
    cleanup: Duration,
    /// Refuse to start.
    fail_start: bool,
}

enum WorkerMsg {
    /// Replies with the incarnation number (1 for the first start).
    Ping(RpcReplyPort<u32>),
    /// The handler returns an error.
    Fail,
    /// The handler panics.
    Panic,
    /// Stops normally.
    Stop,
}

impl ractor::Message for WorkerMsg {}

struct WorkerState {
    args: WorkerArgs,
    incarnation: u32,
}

#[async_trait::async_trait]
impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<WorkerMsg>,
        args: WorkerArgs,
    ) -> Result<WorkerState, ActorProcessingErr> {
        if args.fail_start {
            return Err("refusing to start".into());
        }
        let incarnation = {
            let mut starts = args.probe.starts.lock().expect("probe lock");
            let n = starts.entry(args.name.clone()).or_default();
            *n += 1;
            *n
        };
        Ok(WorkerState { args, incarnation })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<WorkerMsg>,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        sleep(state.args.cleanup).await;
        let mut stopped = state.args.probe.stopped.lock().expect("probe lock");
        stopped.push(state.args.name.clone());
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Ping(reply) => {
                let _ = reply.send(state.incarnation);
            }
            WorkerMsg::Fail => return Err("worker asked to fail".into()),
            WorkerMsg::Panic => panic!("worker asked to panic"),
            WorkerMsg::Stop => myself.stop(None),
        }
        Ok(())
    }
}

fn worker_args(probe: &Probe, name: &str) -> WorkerArgs {
    WorkerArgs {
        name: name.to_string(),
        probe: probe.clone(),
        cleanup: Duration::ZERO,
        fail_start: false,
    }
}

/// A worker child whose id is also its registered actor name.
fn worker_spec(args: WorkerArgs, restart: Restart) -> ChildSpec {
    let name = args.name.clone();
    ChildSpec::new(name.clone(), restart, move |sup| {
        spawn_child(Some(name.clone()), Worker, args.clone(), sup)
    })
}

fn worker(probe: &Probe, name: &str, restart: Restart) -> ChildSpec {
    worker_spec(worker_args(probe, name), restart)
}

fn sup_args(name: &str, intensity: Intensity, children: Vec<ChildSpec>) -> SupervisorArgs {
    SupervisorArgs {
        name: name.to_string(),
        intensity,
        children,
    }
}

/// A supervisor child whose id is also its registered actor name.
fn sup_spec(
    name: &str,
    restart: Restart,
    intensity: Intensity,
    children: Vec<ChildSpec>,
) -> ChildSpec {
    let args = sup_args(name, intensity, children);
    let name = name.to_string();
    ChildSpec::new(name.clone(), restart, move |sup| {
        spawn_child(Some(name.clone()), Supervisor, args.clone(), sup)
    })
    .supervisor()
}

async fn start_sup(
    name: &str,
    intensity: Intensity,
    children: Vec<ChildSpec>,
) -> ActorRef<SupervisorMsg> {
    let args = sup_args(name, intensity, children);
    let (sup, _join) = Actor::spawn(Some(name.to_string()), Supervisor, args)
        .await
        .expect("supervisor starts");
    sup
}

fn lenient() -> Intensity {
    Intensity::new(10, Duration::from_secs(10))
}

fn lookup<M: ractor::Message>(name: &str) -> ActorRef<M> {
    ActorRef::where_is(name).unwrap_or_else(|| panic!("{name} is not registered"))
}

async fn ping(name: &str) -> Option<u32> {
    let worker = ActorRef::<WorkerMsg>::where_is(name)?;
    match worker.call(WorkerMsg::Ping, Some(RPC)).await {
        Ok(ractor::rpc::CallResult::Success(n)) => Some(n),
        _ => None,
    }
}

fn send(name: &str, msg: WorkerMsg) {
    lookup::<WorkerMsg>(name)
        .cast(msg)
        .unwrap_or_else(|_| panic!("{name} takes messages"));
}

async fn child(sup: &ActorRef<SupervisorMsg>, id: &str) -> Option<ChildReport> {
    let report = report(sup, RPC).await.expect("report");
    report.children.into_iter().find(|c| c.id == id)
}

async fn child_ids(sup: &ActorRef<SupervisorMsg>) -> Vec<String> {
    let report = report(sup, RPC).await.expect("report");
    report.children.into_iter().map(|c| c.id).collect()
}

/// Polls `check` until it holds, failing the test after [`WAIT`].
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until child `id` of `sup` shows `restarts` restarts and answers pings again.
async fn restarted(sup: &ActorRef<SupervisorMsg>, id: &str, restarts: u32) {
    eventually(&format!("{id} restarted {restarts} times"), async || {
        let ok = child(sup, id)
            .await
            .is_some_and(|c| c.restarts == restarts && c.running);
        ok && ping(id).await.is_some()
    })
    .await;
}

fn leaf(id: &str, restart: &str, restarts: u32) -> ChildReport {
    ChildReport {
        id: id.to_string(),
        restart: restart.to_string(),
        restarts,
        running: true,
        children: Vec::new(),
    }
}

/// (1) A transient child that fails (error, then panic) is restarted in place and works
/// again; one that stops normally is not restarted and leaves the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_child_restarted_after_crash_but_not_after_normal_stop() {
    let probe = Probe::default();
    let sup = start_sup(
        "t1.sup",
        lenient(),
        vec![
            worker(&probe, "t1.first", Restart::Permanent),
            worker(&probe, "t1.crashy", Restart::Transient),
            worker(&probe, "t1.last", Restart::Permanent),
        ],
    )
    .await;
    assert_eq!(ping("t1.crashy").await, Some(1));

    send("t1.crashy", WorkerMsg::Fail);
    restarted(&sup, "t1.crashy", 1).await;
    assert_eq!(
        ping("t1.crashy").await,
        Some(2),
        "a new incarnation answers"
    );

    send("t1.crashy", WorkerMsg::Panic);
    restarted(&sup, "t1.crashy", 2).await;
    assert_eq!(ping("t1.crashy").await, Some(3));
    assert_eq!(
        child_ids(&sup).await,
        ["t1.first", "t1.crashy", "t1.last"],
        "the restarted child keeps its position"
    );

    send("t1.crashy", WorkerMsg::Stop);
    eventually("t1.crashy removed", async || {
        child(&sup, "t1.crashy").await.is_none()
    })
    .await;
    assert_eq!(
        probe.starts("t1.crashy"),
        3,
        "not restarted after a normal stop"
    );
    assert_eq!(child_ids(&sup).await, ["t1.first", "t1.last"]);
    assert_eq!(ping("t1.first").await, Some(1), "siblings untouched");
    shutdown(sup, WAIT).await.expect("shutdown");
}

/// (2) A temporary child that crashes is not restarted and disappears from the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_child_not_restarted() {
    let probe = Probe::default();
    let sup = start_sup(
        "t2.sup",
        lenient(),
        vec![
            worker(&probe, "t2.temp", Restart::Temporary),
            worker(&probe, "t2.other", Restart::Permanent),
        ],
    )
    .await;
    send("t2.temp", WorkerMsg::Fail);
    eventually("t2.temp removed", async || {
        child(&sup, "t2.temp").await.is_none()
    })
    .await;
    assert_eq!(probe.starts("t2.temp"), 1);
    assert_eq!(
        child(&sup, "t2.other").await,
        Some(leaf("t2.other", "permanent", 0))
    );
    shutdown(sup, WAIT).await.expect("shutdown");
}

/// (3) A permanent child that stops normally is restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_child_restarted_after_normal_stop() {
    let probe = Probe::default();
    let sup = start_sup(
        "t3.sup",
        lenient(),
        vec![worker(&probe, "t3.perm", Restart::Permanent)],
    )
    .await;
    send("t3.perm", WorkerMsg::Stop);
    restarted(&sup, "t3.perm", 1).await;
    assert_eq!(ping("t3.perm").await, Some(2));
    assert_eq!(probe.stopped(), ["t3.perm"], "it did stop normally");
    shutdown(sup, WAIT).await.expect("shutdown");
}

/// (4a) Exceeding the intensity (4 crashes, 3 allowed in 5 s) makes the supervisor stop its
/// other children (reverse order) and fail; its parent restarts it. The parent holds it as
/// transient, which restarts only after an abnormal exit, so this proves a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intensity_exceeded_fails_supervisor_and_parent_restarts_it() {
    let probe = Probe::default();
    let mid = sup_spec(
        "t4.mid",
        Restart::Transient,
        Intensity::new(3, Duration::from_secs(5)),
        vec![
            worker(&probe, "t4.a", Restart::Permanent),
            worker(&probe, "t4.b", Restart::Permanent),
            worker(&probe, "t4.crashy", Restart::Permanent),
        ],
    );
    let top = start_sup("t4.top", lenient(), vec![mid]).await;
    let old_mid = lookup::<SupervisorMsg>("t4.mid");

    for n in 1..=3 {
        send("t4.crashy", WorkerMsg::Fail);
        restarted(&old_mid, "t4.crashy", n).await;
    }
    send("t4.crashy", WorkerMsg::Fail);

    eventually("t4.mid restarted by t4.top", async || {
        child(&top, "t4.mid")
            .await
            .is_some_and(|c| c.restarts == 1 && c.running)
    })
    .await;
    assert_eq!(old_mid.get_status(), ActorStatus::Stopped);
    assert_eq!(
        probe.stopped(),
        ["t4.b", "t4.a"],
        "remaining children stopped in reverse order before failing"
    );
    let new_mid = lookup::<SupervisorMsg>("t4.mid");
    assert_ne!(new_mid.get_id(), old_mid.get_id());
    assert_eq!(
        child(&new_mid, "t4.crashy").await,
        Some(leaf("t4.crashy", "permanent", 0)),
        "a fresh supervisor with fresh children"
    );
    assert_eq!(ping("t4.crashy").await, Some(5));
    shutdown(top, WAIT).await.expect("shutdown");
}

/// (4b) The failure escalates further when the parent's own intensity is exceeded: the
/// parent (0 restarts allowed) fails too, and the grandparent restarts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intensity_failure_escalates_up_the_tree() {
    let probe = Probe::default();
    let mid = sup_spec(
        "t4b.mid",
        Restart::Permanent,
        Intensity::new(3, Duration::from_secs(5)),
        vec![worker(&probe, "t4b.crashy", Restart::Permanent)],
    );
    let top = sup_spec(
        "t4b.top",
        Restart::Transient,
        Intensity::new(0, Duration::from_secs(5)),
        vec![mid],
    );
    let root = start_sup("t4b.root", lenient(), vec![top]).await;
    let old_top = lookup::<SupervisorMsg>("t4b.top");
    let old_mid = lookup::<SupervisorMsg>("t4b.mid");

    for n in 1..=3 {
        send("t4b.crashy", WorkerMsg::Fail);
        restarted(&old_mid, "t4b.crashy", n).await;
    }
    send("t4b.crashy", WorkerMsg::Fail);

    eventually("t4b.top restarted by t4b.root", async || {
        child(&root, "t4b.top")
            .await
            .is_some_and(|c| c.restarts == 1 && c.running)
    })
    .await;
    assert_eq!(old_top.get_status(), ActorStatus::Stopped);
    assert_eq!(old_mid.get_status(), ActorStatus::Stopped);
    let new_top = lookup::<SupervisorMsg>("t4b.top");
    assert_eq!(
        child(&new_top, "t4b.mid").await.map(|c| c.restarts),
        Some(0),
        "the restarted parent starts a fresh child supervisor"
    );
    shutdown(root, WAIT).await.expect("shutdown");
}

/// (5) `shutdown` stops children in reverse start order, waiting for each (the middle one
/// has a slow cleanup), and returns only when all have stopped; nothing is restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_children_in_reverse_order_and_waits() {
    let probe = Probe::default();
    let slow = WorkerArgs {
        cleanup: Duration::from_millis(300),
        ..worker_args(&probe, "t5.two")
    };
    let sup = start_sup(
        "t5.sup",
        lenient(),
        vec![
            worker(&probe, "t5.one", Restart::Permanent),
            worker_spec(slow, Restart::Permanent),
            worker(&probe, "t5.three", Restart::Permanent),
        ],
    )
    .await;
    let cells: Vec<ActorCell> = ["t5.one", "t5.two", "t5.three"]
        .iter()
        .map(|name| lookup::<WorkerMsg>(name).get_cell())
        .collect();

    shutdown(sup.clone(), WAIT).await.expect("shutdown");

    assert_eq!(probe.stopped(), ["t5.three", "t5.two", "t5.one"]);
    assert_eq!(sup.get_status(), ActorStatus::Stopped);
    for cell in &cells {
        assert_eq!(cell.get_status(), ActorStatus::Stopped, "{cell:?}");
    }
    for name in ["t5.one", "t5.two", "t5.three"] {
        assert_eq!(probe.starts(name), 1, "{name} was not restarted");
    }
}

/// (5b) A plain ractor stop of a supervisor also stops the whole tree in reverse order,
/// nested supervisors included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ractor_stop_stops_nested_tree_in_reverse_order() {
    let probe = Probe::default();
    let slow = WorkerArgs {
        cleanup: Duration::from_millis(200),
        ..worker_args(&probe, "t5b.w3")
    };
    let mid = sup_spec(
        "t5b.mid",
        Restart::Permanent,
        lenient(),
        vec![
            worker(&probe, "t5b.w2", Restart::Permanent),
            worker_spec(slow, Restart::Permanent),
        ],
    );
    let root = start_sup(
        "t5b.root",
        lenient(),
        vec![
            worker(&probe, "t5b.w1", Restart::Permanent),
            mid,
            worker(&probe, "t5b.w4", Restart::Permanent),
        ],
    )
    .await;

    root.stop_and_wait(None, Some(WAIT))
        .await
        .expect("root stops");

    assert_eq!(probe.stopped(), ["t5b.w4", "t5b.w3", "t5b.w2", "t5b.w1"]);
    assert!(ActorRef::<SupervisorMsg>::where_is("t5b.mid").is_none());
}

/// (6) StartChild appends a dynamic child that shows in the report; duplicates are refused;
/// TerminateChild stops and removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_children() {
    let probe = Probe::default();
    let sup = start_sup(
        "t6.sup",
        lenient(),
        vec![worker(&probe, "t6.static", Restart::Permanent)],
    )
    .await;

    let cell = start_child(&sup, worker(&probe, "t6.dyn", Restart::Temporary), RPC)
        .await
        .expect("dynamic child starts");
    assert_eq!(cell.get_name().as_deref(), Some("t6.dyn"));
    assert_eq!(ping("t6.dyn").await, Some(1));
    assert_eq!(
        report(&sup, RPC).await.expect("report"),
        SupervisorReport {
            name: "t6.sup".into(),
            children: vec![
                leaf("t6.static", "permanent", 0),
                leaf("t6.dyn", "temporary", 0),
            ],
        }
    );

    let dup = start_child(&sup, worker(&probe, "t6.dyn", Restart::Temporary), RPC).await;
    assert!(
        matches!(&dup, Err(SupervisorError::Call(msg)) if msg.contains("duplicate")),
        "{dup:?}"
    );

    assert!(
        terminate_child(&sup, "t6.dyn", RPC)
            .await
            .expect("terminate")
    );
    assert_eq!(cell.get_status(), ActorStatus::Stopped);
    assert_eq!(probe.stopped(), ["t6.dyn"]);
    assert_eq!(child_ids(&sup).await, ["t6.static"]);
    assert!(
        !terminate_child(&sup, "t6.nope", RPC)
            .await
            .expect("terminate")
    );
    shutdown(sup, WAIT).await.expect("shutdown");
}

/// (7) A report includes the children of child supervisors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_report_shows_grandchildren() {
    let probe = Probe::default();
    let mid = sup_spec(
        "t7.mid",
        Restart::Permanent,
        lenient(),
        vec![
            worker(&probe, "t7.g1", Restart::Transient),
            worker(&probe, "t7.g2", Restart::Temporary),
        ],
    );
    let root = start_sup(
        "t7.root",
        lenient(),
        vec![worker(&probe, "t7.w1", Restart::Permanent), mid],
    )
    .await;
    send("t7.g1", WorkerMsg::Fail);
    let mid = lookup::<SupervisorMsg>("t7.mid");
    restarted(&mid, "t7.g1", 1).await;

    assert_eq!(
        report(&root, RPC).await.expect("report"),
        SupervisorReport {
            name: "t7.root".into(),
            children: vec![
                leaf("t7.w1", "permanent", 0),
                ChildReport {
                    children: vec![leaf("t7.g1", "transient", 1), leaf("t7.g2", "temporary", 0),],
                    ..leaf("t7.mid", "permanent", 0)
                },
            ],
        }
    );
    shutdown(root, WAIT).await.expect("shutdown");
}

/// (8) A child that fails to start fails the supervisor's start, naming the child; the
/// children started before it are stopped, those after it never start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_child_start_fails_supervisor_start() {
    let probe = Probe::default();
    let bad = WorkerArgs {
        fail_start: true,
        ..worker_args(&probe, "t8.bad")
    };
    let args = sup_args(
        "t8.sup",
        lenient(),
        vec![
            worker(&probe, "t8.first", Restart::Permanent),
            worker_spec(bad, Restart::Permanent),
            worker(&probe, "t8.never", Restart::Permanent),
        ],
    );
    let err = Actor::spawn(Some("t8.sup".into()), Supervisor, args)
        .await
        .map(|_| ())
        .expect_err("supervisor must not start");
    let msg = err.to_string();
    assert!(
        msg.contains("\"t8.bad\"") && msg.contains("refusing to start"),
        "{msg}"
    );
    assert_eq!(probe.stopped(), ["t8.first"]);
    assert_eq!(probe.starts("t8.never"), 0);
    assert!(ActorRef::<SupervisorMsg>::where_is("t8.sup").is_none());
}
