//! OTP-style supervisor: the one [`Supervisor`] actor behind every supervisor in faxd.
//!
//! ractor links children to a parent and delivers their exits as supervision events, but it
//! has no restart strategies. This module adds them: per-child restart types
//! ([`Restart`]), a restart intensity ([`Intensity`], exceeding it makes the supervisor fail
//! so the failure escalates to *its* supervisor), children started in order and stopped in
//! reverse order, dynamic children ([`SupervisorMsg::StartChild`]) and recursive reports.
//!
//! A child may also restart with a [`Backoff`]: its restarts are delayed (exponentially,
//! capped) and do not count against the intensity. That is for children that fail while
//! something outside the node is away (the store): restarting them at once would only fail
//! again, and escalating would take the node down for an outage it cannot fix.
//!
//! ractor behaviour this module is built around (ractor 0.16):
//! * when an actor's task ends for any reason, ractor *kills* every child still linked to it
//!   (`Signal::Kill`: work is cancelled and `post_stop` is skipped). Graceful, ordered child
//!   shutdown therefore has to happen before that: in `post_stop` for a normal stop, and in
//!   the event handler itself before it fails the supervisor (a failing actor gets no
//!   `post_stop`).
//! * while the supervisor runs `post_stop` it handles no more events, so children exiting
//!   during shutdown are never restarted; new links to it are refused.
//! * `ActorCell::stop_and_wait` returns at once, without waiting, when the actor was already
//!   asked to stop; stopping a child here is therefore `stop` followed by `wait`.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, join_all};
use ractor::rpc::CallResult;
use ractor::{
    ACTIVE_STATES, Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

/// Time a worker child gets to stop before it is killed.
pub const DEFAULT_SHUTDOWN: Duration = Duration::from_secs(5);
/// Time a supervisor child gets to stop (it stops all its own children first).
pub const SUPERVISOR_SHUTDOWN: Duration = Duration::from_secs(60);
/// How long to wait for a killed child, or a killed supervisor, to be gone.
const KILL_WAIT: Duration = Duration::from_secs(1);
/// Timeout for asking child supervisors for their report when the request carried none.
const DEFAULT_REPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Stop reason used when a supervisor stops a child (and by [`shutdown`]); counts as normal.
const SHUTDOWN_REASON: &str = "shutdown";
/// Exit reasons that count as a normal exit (a plain `stop` has no reason at all).
const NORMAL_REASONS: [&str; 2] = ["normal", SHUTDOWN_REASON];

/// When a child is restarted after it exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Always restarted, whatever the exit.
    Permanent,
    /// Restarted only after an abnormal exit: a failure (handler error or panic) or a stop
    /// with a reason other than `normal`/`shutdown` (a kill is abnormal).
    Transient,
    /// Never restarted.
    Temporary,
}

impl Restart {
    /// Lower-case name as shown in reports: `permanent`, `transient` or `temporary`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permanent => "permanent",
            Self::Transient => "transient",
            Self::Temporary => "temporary",
        }
    }

    fn restarts_after(self, exit: &Exit) -> bool {
        match self {
            Self::Permanent => true,
            Self::Transient => matches!(exit, Exit::Abnormal(_)),
            Self::Temporary => false,
        }
    }
}

impl fmt::Display for Restart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Restart intensity: more than `max_restarts` restarts (of all children together) within
/// the sliding window `within` makes the supervisor stop its children and fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed within the window.
    pub max_restarts: u32,
    /// Length of the sliding window.
    pub within: Duration,
}

impl Intensity {
    /// `max_restarts` restarts allowed within `within`.
    pub const fn new(max_restarts: u32, within: Duration) -> Self {
        Self {
            max_restarts,
            within,
        }
    }
}

/// Delayed restarts of one child: the `n`-th consecutive restart waits `first * 2^(n-1)`,
/// at most `max`; an incarnation that ran at least `reset_after` starts the count again.
/// Such restarts are not counted against the supervisor's [`Intensity`]: the delay is the
/// rate limit, so an outage of a dependency never escalates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first restart.
    pub first: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Run this long, the child counts as healthy again.
    pub reset_after: Duration,
}

impl Backoff {
    /// Backoff from `first` up to `max`, reset after `reset_after` of healthy running.
    pub const fn new(first: Duration, max: Duration, reset_after: Duration) -> Self {
        Self {
            first,
            max,
            reset_after,
        }
    }

    /// Delay before restart number `attempt` (1 for the first) of a failing streak.
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.first
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// Starts a child: given the supervisor's cell, spawns the child *linked* to it (e.g. with
/// `Actor::spawn_linked` or [`spawn_child`]) and returns the child's cell. A child that is not
/// linked to the supervisor is never seen to exit, so it is never restarted.
pub type StartFn =
    Arc<dyn Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> + Send + Sync>;

/// How to start and supervise one child.
#[derive(Clone)]
pub struct ChildSpec {
    /// Unique id of the child within its supervisor.
    pub id: String,
    /// When the child is restarted.
    pub restart: Restart,
    /// Spawns the child linked to the supervisor.
    pub start: StartFn,
    /// How long the child gets to stop before it is killed.
    pub shutdown: Duration,
    /// The child is itself a [`Supervisor`]: reports include its children.
    pub supervisor: bool,
    /// Delayed restarts outside the intensity (see [`Backoff`]); `None`: restarted at once.
    pub backoff: Option<Backoff>,
}

impl ChildSpec {
    /// A worker child with [`DEFAULT_SHUTDOWN`]; `start` receives the supervisor's cell and
    /// must spawn the child linked to it.
    pub fn new<F, Fut>(id: impl Into<String>, restart: Restart, start: F) -> Self
    where
        F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorCell, SpawnErr>> + Send + 'static,
    {
        Self {
            id: id.into(),
            restart,
            start: Arc::new(move |sup| Box::pin(start(sup))),
            shutdown: DEFAULT_SHUTDOWN,
            supervisor: false,
            backoff: None,
        }
    }

    /// Marks the child as a [`Supervisor`] and gives it [`SUPERVISOR_SHUTDOWN`] to stop
    /// (call [`with_shutdown`](Self::with_shutdown) afterwards to change that).
    pub fn supervisor(mut self) -> Self {
        self.supervisor = true;
        self.shutdown = SUPERVISOR_SHUTDOWN;
        self
    }

    /// Restarts the child after growing delays, outside the intensity (see [`Backoff`]).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Sets how long the child gets to stop before it is killed.
    pub fn with_shutdown(mut self, shutdown: Duration) -> Self {
        self.shutdown = shutdown;
        self
    }
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("supervisor", &self.supervisor)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// Spawns `handler` linked to `sup` and returns its cell: the usual body of a [`StartFn`].
pub async fn spawn_child<A: Actor>(
    name: Option<String>,
    handler: A,
    args: A::Arguments,
    sup: ActorCell,
) -> Result<ActorCell, SpawnErr> {
    let (child, _join) = A::spawn_linked(name, handler, args, sup).await?;
    Ok(child.get_cell())
}

/// Which children are restarted when one exits. Only one-for-one exists so far; the restart
/// path dispatches on it so others (one-for-all, rest-for-one) slot in there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Restart only the child that exited.
    #[default]
    OneForOne,
}

/// Start arguments of a [`Supervisor`].
#[derive(Clone, Debug)]
pub struct SupervisorArgs {
    /// Name shown in reports and logs.
    pub name: String,
    /// Restart intensity.
    pub intensity: Intensity,
    /// Initial children, started in this order and stopped in reverse order.
    pub children: Vec<ChildSpec>,
}

/// The supervisor actor. Spawn it with [`SupervisorArgs`]; as a child of another supervisor
/// use a [`ChildSpec`] marked [`supervisor`](ChildSpec::supervisor).
#[derive(Clone, Copy, Debug, Default)]
pub struct Supervisor;

/// Messages a [`Supervisor`] handles.
pub enum SupervisorMsg {
    /// Starts a dynamic child, appended after the existing ones; replies with its cell or
    /// why it could not start (including a duplicate id). Does not count as a restart.
    /// A child with this id that waits for a delayed restart ([`Backoff`]) is started now
    /// instead (its spec is kept).
    StartChild(ChildSpec, RpcReplyPort<Result<ActorCell, String>>),
    /// Stops the child with this id (waiting up to its shutdown time, then killing it) and
    /// removes it; replies whether such a child existed.
    TerminateChild(String, RpcReplyPort<bool>),
    /// Replies with a report of the children, including those of child supervisors.
    Report(RpcReplyPort<SupervisorReport>),
    /// A delayed restart is due (sent by the supervisor to itself for a child with a
    /// [`Backoff`]); `token` tells a stale timer from the current one.
    RestartDue { id: String, token: u64 },
}

impl ractor::Message for SupervisorMsg {}

impl fmt::Debug for SupervisorMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StartChild(spec, _) => write!(f, "StartChild({})", spec.id),
            Self::TerminateChild(id, _) => write!(f, "TerminateChild({id})"),
            Self::Report(_) => f.write_str("Report"),
            Self::RestartDue { id, token } => write!(f, "RestartDue({id}, {token})"),
        }
    }
}

/// One child in a [`SupervisorReport`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChildReport {
    /// Child id.
    pub id: String,
    /// Restart type: `permanent`, `transient` or `temporary`.
    pub restart: String,
    /// Restarts of this child so far.
    pub restarts: u32,
    /// Whether the child is running (`false` while it waits for a delayed restart).
    pub running: bool,
    /// The child's own children, when it is a running supervisor that answered in time.
    pub children: Vec<ChildReport>,
}

/// State of a supervisor and its children, in start order.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SupervisorReport {
    /// Supervisor name.
    pub name: String,
    /// Children in start order.
    pub children: Vec<ChildReport>,
}

/// Supervisor errors.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A child could not be started (fails the supervisor's own start for initial children).
    #[error("supervisor {supervisor}: child {id:?} failed to start: {reason}")]
    ChildStart {
        /// Supervisor name.
        supervisor: String,
        /// Child id.
        id: String,
        /// Why the start failed.
        reason: String,
    },
    /// A child with this id already exists.
    #[error("supervisor {supervisor}: duplicate child id {id:?}")]
    DuplicateChild {
        /// Supervisor name.
        supervisor: String,
        /// Child id.
        id: String,
    },
    /// Too many restarts: the supervisor stopped its children and failed.
    #[error(
        "supervisor {supervisor}: more than {max_restarts} restarts within {within:?} \
         (last: child {id:?} exited: {reason})"
    )]
    IntensityExceeded {
        /// Supervisor name.
        supervisor: String,
        /// Restarts allowed.
        max_restarts: u32,
        /// Window.
        within: Duration,
        /// Child whose exit exceeded the intensity.
        id: String,
        /// How that child exited.
        reason: String,
    },
    /// A request could not be delivered or was dropped (the supervisor is gone).
    #[error("supervisor request failed: {0}")]
    Call(String),
    /// The supervisor did not answer, or did not stop, in time.
    #[error("supervisor did not respond within {0:?}")]
    Timeout(Duration),
}

/// Asks `sup` for its report, child supervisors included (each level gets half the time
/// left to ask its own child supervisors, whose reports are left out when late).
pub async fn report(
    sup: &ActorRef<SupervisorMsg>,
    timeout: Duration,
) -> Result<SupervisorReport, SupervisorError> {
    call(sup, SupervisorMsg::Report, timeout).await
}

/// Starts a dynamic child under `sup` (see [`SupervisorMsg::StartChild`]).
pub async fn start_child(
    sup: &ActorRef<SupervisorMsg>,
    spec: ChildSpec,
    timeout: Duration,
) -> Result<ActorCell, SupervisorError> {
    call(sup, |reply| SupervisorMsg::StartChild(spec, reply), timeout)
        .await?
        .map_err(SupervisorError::Call)
}

/// Stops and removes the child `id` of `sup` (see [`SupervisorMsg::TerminateChild`]).
pub async fn terminate_child(
    sup: &ActorRef<SupervisorMsg>,
    id: &str,
    timeout: Duration,
) -> Result<bool, SupervisorError> {
    let id = id.to_string();
    call(
        sup,
        |reply| SupervisorMsg::TerminateChild(id, reply),
        timeout,
    )
    .await
}

/// Stops `sup`: its children are stopped in reverse start order, each waited for up to its
/// shutdown time and then killed, and then the supervisor itself stops. A plain ractor
/// `stop` does the same; this adds the overall `timeout`, after which the supervisor and
/// whatever still runs below it are killed and [`SupervisorError::Timeout`] returned.
/// `timeout` should cover the children's shutdown times, which run one after another.
/// To stop a supervisor that is itself a child, ask its parent
/// ([`SupervisorMsg::TerminateChild`]): its parent restarts a permanent child that stops.
pub async fn shutdown(
    sup: ActorRef<SupervisorMsg>,
    timeout: Duration,
) -> Result<(), SupervisorError> {
    sup.stop(Some(SHUTDOWN_REASON.to_string()));
    if sup.wait(Some(timeout)).await.is_ok() {
        return Ok(());
    }
    warn!(supervisor = ?sup.get_name(), "shutdown timed out after {timeout:?}, killing");
    sup.kill();
    if sup.wait(Some(KILL_WAIT)).await.is_err() {
        error!(supervisor = ?sup.get_name(), "still running after kill");
    }
    Err(SupervisorError::Timeout(timeout))
}

async fn call<T: Send + 'static>(
    sup: &ActorRef<SupervisorMsg>,
    msg: impl FnOnce(RpcReplyPort<T>) -> SupervisorMsg,
    timeout: Duration,
) -> Result<T, SupervisorError> {
    match sup.call(msg, Some(timeout)).await {
        Ok(CallResult::Success(reply)) => Ok(reply),
        Ok(CallResult::Timeout) => Err(SupervisorError::Timeout(timeout)),
        Ok(CallResult::SenderError) => Err(SupervisorError::Call("request dropped".into())),
        Err(err) => Err(SupervisorError::Call(err.to_string())),
    }
}

/// How a child exited, as far as restarting is concerned.
enum Exit {
    Normal,
    Abnormal(String),
}

impl Exit {
    fn stopped(reason: Option<String>) -> Self {
        match reason {
            Some(r) if !NORMAL_REASONS.contains(&r.as_str()) => Self::Abnormal(r),
            _ => Self::Normal,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Normal => "normal".into(),
            Self::Abnormal(reason) => reason.clone(),
        }
    }
}

struct Child {
    spec: ChildSpec,
    /// The running incarnation (`None` between its exit and a successful restart).
    cell: Option<ActorCell>,
    restarts: u32,
    /// When the running incarnation started.
    since: Instant,
    /// Consecutive delayed restarts of the current failing streak ([`Backoff`]).
    streak: u32,
    /// Token of the delayed restart this child waits for, if any.
    pending: Option<u64>,
}

/// Internal state of a [`Supervisor`].
pub struct SupervisorState {
    name: String,
    strategy: Strategy,
    intensity: Intensity,
    /// Times of recent restarts, oldest first, never more than `max_restarts + 1`.
    restart_times: VecDeque<Instant>,
    /// Children in start order.
    children: Vec<Child>,
    /// Last token handed to a delayed restart.
    tokens: u64,
}

impl SupervisorState {
    /// Starts a new child and appends it.
    async fn start_new(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        spec: ChildSpec,
    ) -> Result<ActorCell, SupervisorError> {
        if let Some(idx) = self
            .children
            .iter()
            .position(|c| c.spec.id == spec.id && c.pending.is_some())
        {
            return self.start_waiting(myself, idx).await;
        }
        if self.children.iter().any(|c| c.spec.id == spec.id) {
            return Err(SupervisorError::DuplicateChild {
                supervisor: self.name.clone(),
                id: spec.id,
            });
        }
        let started = (spec.start)(myself.get_cell()).await;
        let cell = started.map_err(|err| SupervisorError::ChildStart {
            supervisor: self.name.clone(),
            id: spec.id.clone(),
            reason: spawn_reason(err),
        })?;
        debug!(supervisor = %self.name, child = %spec.id, "started");
        self.children.push(Child {
            spec,
            cell: Some(cell.clone()),
            restarts: 0,
            since: Instant::now(),
            streak: 0,
            pending: None,
        });
        Ok(cell)
    }

    /// Starts child `idx`, which waits for a delayed restart, now: asking for it again is a
    /// sign that what it waits for may be back. When it still does not start, its delayed
    /// restart stays armed.
    async fn start_waiting(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        idx: usize,
    ) -> Result<ActorCell, SupervisorError> {
        let child = &mut self.children[idx];
        let started = (child.spec.start)(myself.get_cell()).await;
        let cell = started.map_err(|err| SupervisorError::ChildStart {
            supervisor: self.name.clone(),
            id: child.spec.id.clone(),
            reason: spawn_reason(err),
        })?;
        child.pending = None;
        child.restarts += 1;
        child.cell = Some(cell.clone());
        child.since = Instant::now();
        info!(supervisor = %self.name, child = %child.spec.id, "started early, before its delayed restart");
        Ok(cell)
    }

    /// Applies the restart policy to the exit of `cell`; an error fails the supervisor.
    async fn child_exited(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        cell: &ActorCell,
        exit: Exit,
    ) -> Result<(), SupervisorError> {
        let id = cell.get_id();
        // Unknown cells are children already removed or replaced (stale events).
        let Some(idx) = self
            .children
            .iter()
            .position(|c| c.cell.as_ref().is_some_and(|c| c.get_id() == id))
        else {
            return Ok(());
        };
        let child = &mut self.children[idx];
        child.cell = None;
        if !child.spec.restart.restarts_after(&exit) {
            let (sup, id) = (&self.name, &child.spec.id);
            info!(supervisor = %sup, child = %id, "exited ({}), not restarted", exit.describe());
            self.children.remove(idx);
            return Ok(());
        }
        if let Some(backoff) = child.spec.backoff {
            if child.since.elapsed() >= backoff.reset_after {
                child.streak = 0;
            }
            self.schedule_restart(myself, idx, backoff, &exit.describe());
            return Ok(());
        }
        match self.strategy {
            Strategy::OneForOne => self.restart(myself, idx, exit).await,
        }
    }

    /// Arms the next delayed restart of child `idx`.
    fn schedule_restart(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        idx: usize,
        backoff: Backoff,
        reason: &str,
    ) {
        self.tokens += 1;
        let token = self.tokens;
        let child = &mut self.children[idx];
        child.streak = child.streak.saturating_add(1);
        child.pending = Some(token);
        let delay = backoff.delay(child.streak);
        let id = child.spec.id.clone();
        // One warning per failing streak: an outage must not flood the log with one line
        // per child and attempt.
        if child.streak == 1 {
            warn!(supervisor = %self.name, child = %id, "restart in {delay:?} after: {reason}");
        } else {
            debug!(supervisor = %self.name, child = %id, attempt = child.streak,
                   "restart in {delay:?} after: {reason}");
        }
        myself.send_after(delay, move || SupervisorMsg::RestartDue { id, token });
    }

    /// A delayed restart is due: starts the child, or arms the next, longer delay when it
    /// does not start. Stale tokens (the child was removed or restarted since) are ignored.
    async fn restart_due(&mut self, myself: &ActorRef<SupervisorMsg>, id: &str, token: u64) {
        let Some(idx) = self
            .children
            .iter()
            .position(|c| c.spec.id == id && c.pending == Some(token))
        else {
            return;
        };
        let child = &mut self.children[idx];
        child.pending = None;
        let Some(backoff) = child.spec.backoff else {
            return;
        };
        child.restarts += 1;
        match (child.spec.start)(myself.get_cell()).await {
            Ok(cell) => {
                let child = &mut self.children[idx];
                info!(supervisor = %self.name, child = %id, restarts = child.restarts, "restarted");
                child.cell = Some(cell);
                child.since = Instant::now();
            }
            Err(err) => {
                let reason = format!("restart failed: {}", spawn_reason(err));
                self.schedule_restart(myself, idx, backoff, &reason);
            }
        }
    }

    /// Restarts child `idx` in place, retrying failed starts until it runs or the
    /// intensity is exceeded (then all children are stopped and the error returned).
    async fn restart(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        idx: usize,
        exit: Exit,
    ) -> Result<(), SupervisorError> {
        let mut reason = exit.describe();
        loop {
            if !self.note_restart() {
                let err = SupervisorError::IntensityExceeded {
                    supervisor: self.name.clone(),
                    max_restarts: self.intensity.max_restarts,
                    within: self.intensity.within,
                    id: self.children[idx].spec.id.clone(),
                    reason,
                };
                error!("{err}; stopping children");
                self.stop_all().await;
                return Err(err);
            }
            let child = &mut self.children[idx];
            child.restarts += 1;
            let (sup, id, n) = (&self.name, &child.spec.id, child.restarts);
            warn!(supervisor = %sup, child = %id, "restart #{n} after: {reason}");
            match (child.spec.start)(myself.get_cell()).await {
                Ok(cell) => {
                    child.cell = Some(cell);
                    child.since = Instant::now();
                    return Ok(());
                }
                Err(err) => reason = format!("restart failed: {}", spawn_reason(err)),
            }
        }
    }

    /// Records a restart now; false when that exceeds the intensity.
    fn note_restart(&mut self) -> bool {
        let now = Instant::now();
        while self
            .restart_times
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.intensity.within)
        {
            self.restart_times.pop_front();
        }
        self.restart_times.push_back(now);
        self.restart_times.len() <= self.intensity.max_restarts as usize
    }

    /// Stops and removes child `id`; false when there is none.
    async fn terminate(&mut self, id: &str) -> bool {
        let Some(idx) = self.children.iter().position(|c| c.spec.id == id) else {
            return false;
        };
        // Removed first, so its exit event is unknown and ignored.
        let child = self.children.remove(idx);
        if let Some(cell) = child.cell {
            stop_child(&self.name, &child.spec, cell).await;
        }
        true
    }

    /// Stops and removes all children, last started first.
    async fn stop_all(&mut self) {
        while let Some(child) = self.children.pop() {
            if let Some(cell) = child.cell {
                stop_child(&self.name, &child.spec, cell).await;
            }
        }
    }

    /// Replies with the report; child supervisors are asked from a task, in parallel, so
    /// that a slow one does not hold up this supervisor's own event handling.
    fn report(&self, reply: RpcReplyPort<SupervisorReport>) {
        let name = self.name.clone();
        let mut nested = Vec::new();
        let mut children = Vec::with_capacity(self.children.len());
        for (idx, child) in self.children.iter().enumerate() {
            let running = child
                .cell
                .as_ref()
                .is_some_and(|c| ACTIVE_STATES.contains(&c.get_status()));
            if let (true, true, Some(cell)) = (child.spec.supervisor, running, &child.cell) {
                nested.push((idx, ActorRef::<SupervisorMsg>::from(cell.clone())));
            }
            children.push(ChildReport {
                id: child.spec.id.clone(),
                restart: child.spec.restart.as_str().to_string(),
                restarts: child.restarts,
                running,
                children: Vec::new(),
            });
        }
        if nested.is_empty() {
            let _ = reply.send(SupervisorReport { name, children });
            return;
        }
        let timeout = reply
            .get_timeout()
            .map_or(DEFAULT_REPORT_TIMEOUT, |t| t / 2);
        tokio::spawn(async move {
            let answers = join_all(nested.iter().map(|(_, sup)| report(sup, timeout))).await;
            for ((idx, _), answer) in nested.iter().zip(answers) {
                match answer {
                    Ok(sub) => children[*idx].children = sub.children,
                    Err(err) => {
                        debug!(supervisor = %name, "no report from {}: {err}", children[*idx].id)
                    }
                }
            }
            let _ = reply.send(SupervisorReport { name, children });
        });
    }
}

/// Asks a child to stop, waits up to its shutdown time, then kills it.
async fn stop_child(supervisor: &str, spec: &ChildSpec, cell: ActorCell) {
    cell.stop(Some(SHUTDOWN_REASON.to_string()));
    if cell.wait(Some(spec.shutdown)).await.is_ok() {
        debug!(supervisor, child = %spec.id, "stopped");
        return;
    }
    warn!(supervisor, child = %spec.id, "did not stop within {:?}, killing", spec.shutdown);
    cell.kill();
    if cell.wait(Some(KILL_WAIT)).await.is_err() {
        error!(supervisor, child = %spec.id, "still running after kill");
    }
}

/// The message inside a spawn error, without ractor's "panicked during startup" wrapping.
fn spawn_reason(err: SpawnErr) -> String {
    match err {
        SpawnErr::StartupFailed(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

#[async_trait::async_trait]
impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut state = SupervisorState {
            name: args.name,
            strategy: Strategy::default(),
            intensity: args.intensity,
            restart_times: VecDeque::new(),
            children: Vec::with_capacity(args.children.len()),
            tokens: 0,
        };
        for spec in args.children {
            if let Err(err) = state.start_new(&myself, spec).await {
                // ractor would kill the ones already started; stop them properly instead.
                state.stop_all().await;
                return Err(err.into());
            }
        }
        Ok(state)
    }

    /// Runs on every normal stop (not on failure or kill): stops children in reverse order.
    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        state.stop_all().await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // A dropped reply port only means the caller gave up; nothing to do about it.
        match msg {
            SupervisorMsg::StartChild(spec, reply) => {
                let started = state.start_new(&myself, spec).await;
                let _ = reply.send(started.map_err(|err| err.to_string()));
            }
            SupervisorMsg::TerminateChild(id, reply) => {
                let found = state.terminate(&id).await;
                let _ = reply.send(found);
            }
            SupervisorMsg::Report(reply) => state.report(reply),
            SupervisorMsg::RestartDue { id, token } => state.restart_due(&myself, &id, token).await,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, exit) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Exit::Abnormal(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, Exit::stopped(reason)),
            _ => return Ok(()),
        };
        Ok(state.child_exited(&myself, &cell, exit).await?)
    }
}
