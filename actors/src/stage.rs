//! The fax_worker stage machine, pure: `acquire → prepare → originate → negotiate → send →
//! release`. [`Machine::step`] maps an input (a store or gateway outcome, a timer) to the
//! actions the actor performs; it holds no runtime. Every stage that waits — on the document
//! conversion or on the far end — arms a timer carrying `(stage, generation)`; a timer whose
//! token is not the current one is stale and ignored, so a stale timer never kills a healthy
//! stage. Status queries are not inputs: reading the status never touches a timer.
//!
//! The job's lease is confirmed (one rev-checked write) between prepare and originate, so a
//! worker whose job was requeued while it prepared stops without dialling; a lease found lost
//! later hangs the call up and stops without releasing (the job is someone else's).

use std::time::Duration;

use faxd::gateway::{FaxEvent, FaxResult};
use faxd::outbound::release::Outcome;
use serde::{Deserialize, Serialize};

/// Stage of a transmission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// Taking the pending job (one rev-checked `pending → processing` save with the lease).
    Acquire,
    /// Fetching (converting) the fax-ready TIFF, then confirming the lease.
    Prepare,
    /// Placing the call.
    Originate,
    /// Call up, waiting for T.30 negotiation.
    Negotiate,
    /// Pages going through.
    Send,
    /// Storing the outcome.
    Release,
    /// Finished; the worker stops.
    Done,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Acquire => "acquire",
            Stage::Prepare => "prepare",
            Stage::Originate => "originate",
            Stage::Negotiate => "negotiate",
            Stage::Send => "send",
            Stage::Release => "release",
            Stage::Done => "done",
        }
    }

    /// Stages with a call on the line.
    pub fn on_line(self) -> bool {
        matches!(self, Stage::Originate | Stage::Negotiate | Stage::Send)
    }
}

/// Stage timeouts (Kazoo: originate 2 min, negotiate 2 min, 5 min per page; Kazoo has no
/// limit on fetching and converting the document, faxd gives it 5 min).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub prepare: Duration,
    pub originate: Duration,
    pub negotiate: Duration,
    pub per_page: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            prepare: Duration::from_secs(300),
            originate: Duration::from_secs(120),
            negotiate: Duration::from_secs(120),
            per_page: Duration::from_secs(300),
        }
    }
}

/// What happened.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// The worker started.
    Start,
    /// The job is ours (`processing` with our lease).
    Acquired,
    /// The job is `processing` under our own lease: an earlier incarnation of this worker
    /// died mid-attempt.
    Recovered,
    /// The job cannot be taken (missing, not pending and due, lost the race).
    NotAvailable(String),
    /// The take went out but the store went away before it answered: whether the job is
    /// ours is read again once the store is back (no call meanwhile).
    AcquireDeferred(String),
    /// The TIFF is on disk.
    Prepared { pages: u32 },
    /// No faxable document.
    PrepareFailed(String),
    /// The document could not be read because the store is away: read again after a
    /// growing wait (the prepare timeout does not run meanwhile); not an attempt of the fax.
    PrepareDeferred(String),
    /// The job is still ours: its lease was renewed by a rev-checked write just now.
    LeaseConfirmed,
    /// The job is no longer ours (requeued, taken by another worker, gone), or its lease
    /// could not be confirmed: nothing more may be done for it.
    LeaseLost(String),
    /// The store is away while the lease is confirmed: no call yet; the confirmation is
    /// tried again (the heartbeat keeps the lease), so a store blip neither dials without a
    /// lease nor drops an attempt the job never made.
    ConfirmDeferred(String),
    /// The media engine accepted the call.
    Originated,
    /// The media engine refused the call.
    OriginateFailed { sip_code: u16, text: String },
    /// A call event.
    Event(FaxEvent),
    /// The call's event stream ended without a result.
    EventsClosed,
    /// A stage timer fired.
    Timeout { stage: Stage, generation: u64 },
    /// The outcome is stored.
    Released,
    /// The outcome could not be stored (lease recovery will requeue the job).
    ReleaseFailed(String),
    /// The store is away (unreachable, full): the outcome is kept and stored when it is
    /// back, so a fax that went through is not sent again after an outage.
    ReleaseDeferred(String),
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Acquire,
    /// Starts producing the fax-ready TIFF in the background; the result is an input.
    Prepare,
    /// Stops a prepare still running (timed out, lease lost).
    AbortPrepare,
    /// Renews the lease with a rev-checked write before dialling.
    ConfirmLease,
    Originate,
    /// Arms a timer that delivers `Input::Timeout { stage, generation }` after `after`.
    ArmTimer {
        stage: Stage,
        generation: u64,
        after: Duration,
    },
    /// Hangs up the call with a cause.
    Hangup(&'static str),
    /// Stores the outcome of this attempt.
    Release(Outcome),
    /// Stores the outcome of the dead incarnation's attempt.
    ReleaseRecovered,
    /// Cleans up (temp file, queue notification) and stops.
    Stop,
    /// Records a progress webhook of the attempt (the faxbox's `sending`, `page`); it never
    /// yields an input, and its failure changes nothing of the transmission.
    Announce(Milestone),
}

/// A step of the attempt that the fax's webhook announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Milestone {
    /// The call is placed.
    Dialled,
    /// A page went through (`total` 0 when not known).
    Page { page: u32, total: u32 },
}

/// The machine's state.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    pub stage: Stage,
    /// Token of the timer currently armed.
    pub generation: u64,
    /// Pages sent.
    pub page: u32,
    pub total_pages: u32,
    pub timeouts: Timeouts,
    /// Why the job was not available, if it was not.
    pub not_available: Option<String>,
    /// The outcome being stored (`None` in a recovered worker's release).
    pending: Option<Outcome>,
    /// Deferred tries of the lease confirmation or of the release so far.
    deferred: u32,
    /// The document is ready and the lease is being confirmed: a prepare-stage timer now
    /// means "confirm again".
    confirming: bool,
    /// The document's read met a store that was away: a prepare-stage timer now means
    /// "prepare again".
    preparing_again: bool,
}

/// First wait before storing an outcome again while the store is away; it doubles up to
/// [`RELEASE_RETRY_MAX`].
pub const RELEASE_RETRY_FIRST: Duration = Duration::from_millis(250);
pub const RELEASE_RETRY_MAX: Duration = Duration::from_secs(5);
/// Deferred tries before the worker gives the outcome up to lease recovery (about an hour
/// of outage at the longest wait).
pub const RELEASE_RETRY_LIMIT: u32 = 720;

impl Machine {
    pub fn new(timeouts: Timeouts) -> Self {
        Self {
            stage: Stage::Acquire,
            generation: 0,
            page: 0,
            total_pages: 0,
            timeouts,
            not_available: None,
            pending: None,
            deferred: 0,
            confirming: false,
            preparing_again: false,
        }
    }

    fn arm(&mut self, stage: Stage, after: Duration) -> Action {
        self.stage = stage;
        self.generation += 1;
        Action::ArmTimer {
            stage,
            generation: self.generation,
            after,
        }
    }

    fn release(&mut self, outcome: Outcome) -> Vec<Action> {
        self.stage = Stage::Release;
        self.generation += 1; // disarms every timer
        self.pending = Some(outcome.clone());
        vec![Action::Release(outcome)]
    }

    /// The wait before the next try of a deferred confirmation or release.
    fn release_backoff(&self) -> Duration {
        let doubled = RELEASE_RETRY_FIRST.saturating_mul(1 << self.deferred.min(8));
        doubled.min(RELEASE_RETRY_MAX)
    }

    /// A take or a lease confirmation met a store that is away: tried again at `stage` after
    /// a growing wait; after [`RELEASE_RETRY_LIMIT`] tries the worker stops without a call
    /// and lease recovery requeues the job once the store is back.
    fn defer(&mut self, stage: Stage, why: String) -> Vec<Action> {
        if self.deferred < RELEASE_RETRY_LIMIT {
            let after = self.release_backoff();
            self.deferred += 1;
            return vec![self.arm(stage, after)];
        }
        self.stage = Stage::Done;
        self.generation += 1;
        self.not_available = Some(why);
        vec![Action::Stop]
    }

    /// The transition function.
    pub fn step(&mut self, input: Input) -> Vec<Action> {
        use Stage::*;
        match (self.stage, input) {
            (Acquire, Input::Start) => vec![Action::Acquire],
            (Acquire, Input::AcquireDeferred(why)) => self.defer(Acquire, why),
            (
                Acquire,
                Input::Timeout {
                    stage: Acquire,
                    generation,
                },
            ) if generation == self.generation => vec![Action::Acquire],
            (Acquire, Input::Acquired) => {
                self.deferred = 0;
                let t = self.timeouts.prepare;
                vec![self.arm(Prepare, t), Action::Prepare]
            }
            (Acquire, Input::Recovered) => {
                self.stage = Release;
                vec![Action::ReleaseRecovered]
            }
            (Acquire, Input::NotAvailable(why)) => {
                self.stage = Done;
                self.not_available = Some(why);
                vec![Action::Stop]
            }
            (Prepare, Input::Prepared { pages }) => {
                self.total_pages = pages;
                self.deferred = 0;
                self.generation += 1; // the prepare timer is done
                self.confirming = true;
                vec![Action::ConfirmLease]
            }
            (Prepare, Input::LeaseConfirmed) => {
                self.confirming = false;
                self.deferred = 0;
                let t = self.timeouts.originate;
                vec![self.arm(Originate, t), Action::Originate]
            }
            (Prepare, Input::ConfirmDeferred(why)) if self.confirming => self.defer(Prepare, why),
            (Prepare, Input::PrepareDeferred(why)) if !self.confirming => {
                self.preparing_again = true;
                self.defer(Prepare, why)
            }
            (
                Prepare,
                Input::Timeout {
                    stage: Prepare,
                    generation,
                },
            ) if self.preparing_again && generation == self.generation => {
                self.preparing_again = false;
                let t = self.timeouts.prepare;
                vec![self.arm(Prepare, t), Action::Prepare]
            }
            (
                Prepare,
                Input::Timeout {
                    stage: Prepare,
                    generation,
                },
            ) if self.confirming && generation == self.generation => vec![Action::ConfirmLease],
            (Prepare, Input::LeaseLost(why)) => {
                self.stage = Done;
                self.generation += 1;
                self.not_available = Some(why);
                vec![Action::AbortPrepare, Action::Stop]
            }
            (Originate | Negotiate | Send, Input::LeaseLost(why)) => {
                self.stage = Done;
                self.generation += 1;
                self.not_available = Some(why);
                vec![Action::Hangup("LEASE_LOST"), Action::Stop]
            }
            (Prepare, Input::PrepareFailed(text)) => self.release(Outcome::Failure {
                sip_code: 0,
                cause: "BAD_FILE".into(),
                text,
            }),
            (Originate, Input::Originated) => {
                let t = self.timeouts.negotiate;
                vec![self.arm(Negotiate, t), Action::Announce(Milestone::Dialled)]
            }
            (Originate, Input::OriginateFailed { sip_code, text }) => {
                self.release(Outcome::Failure {
                    sip_code,
                    cause: "ORIGINATE_FAILED".into(),
                    text,
                })
            }
            (Originate | Negotiate | Send, Input::Event(FaxEvent::Finished(result))) => {
                self.finished(result)
            }
            (Negotiate | Send, Input::Event(FaxEvent::Answered)) => vec![],
            (Negotiate, Input::Event(FaxEvent::Negotiated { .. })) => {
                let t = self.timeouts.per_page;
                vec![self.arm(Send, t)]
            }
            (Negotiate | Send, Input::Event(FaxEvent::Page { page, total, .. })) => {
                self.page = page;
                if total > 0 {
                    self.total_pages = total;
                }
                let t = self.timeouts.per_page;
                let total = self.total_pages;
                vec![
                    self.arm(Send, t),
                    Action::Announce(Milestone::Page { page, total }),
                ]
            }
            (Originate | Negotiate | Send, Input::EventsClosed) => {
                self.release(Outcome::terminated("media engine lost the call"))
            }
            (
                Prepare,
                Input::Timeout {
                    stage: Prepare,
                    generation,
                },
            ) if generation == self.generation => {
                let mut out = vec![Action::AbortPrepare];
                out.extend(self.release(Outcome::timeout("prepare")));
                out
            }
            (
                stage,
                Input::Timeout {
                    stage: s,
                    generation,
                },
            ) if stage.on_line() && s == stage && generation == self.generation => {
                let mut out = vec![Action::Hangup("JOB_TIMEOUT")];
                out.extend(self.release(Outcome::timeout(stage.as_str())));
                out
            }
            (Release, Input::Released | Input::ReleaseFailed(_)) => {
                self.stage = Done;
                self.pending = None;
                vec![Action::Stop]
            }
            (Release, Input::ReleaseDeferred(_)) if self.deferred < RELEASE_RETRY_LIMIT => {
                let after = self.release_backoff();
                self.deferred += 1;
                vec![self.arm(Release, after)]
            }
            (Release, Input::ReleaseDeferred(_)) => {
                // Lease recovery requeues the job once the store is back.
                self.stage = Done;
                self.pending = None;
                vec![Action::Stop]
            }
            (
                Release,
                Input::Timeout {
                    stage: Release,
                    generation,
                },
            ) if generation == self.generation => {
                self.generation += 1;
                match &self.pending {
                    Some(outcome) => vec![Action::Release(outcome.clone())],
                    None => vec![Action::ReleaseRecovered],
                }
            }
            // Anything else is late or stale: a timer of an earlier stage or generation,
            // call events after the result, events out of order. Nothing to do.
            (_, _) => vec![],
        }
    }

    fn finished(&mut self, result: FaxResult) -> Vec<Action> {
        self.page = self.page.max(result.transferred_pages);
        if result.total_pages > 0 {
            self.total_pages = result.total_pages;
        }
        self.release(Outcome::Call(result))
    }

    /// Human status text of the current stage.
    pub fn status_text(&self) -> String {
        match self.stage {
            Stage::Acquire => "acquiring job".into(),
            Stage::Prepare => "fetching document to send".into(),
            Stage::Originate => "dialing".into(),
            Stage::Negotiate => "negotiating".into(),
            Stage::Send => {
                let total = self.total_pages.max(1);
                format!("sending page {} of {}", (self.page + 1).min(total), total)
            }
            Stage::Release => "releasing".into(),
            Stage::Done => "done".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> Machine {
        Machine::new(Timeouts::default())
    }

    /// Drives `rounds` deferrals of a step while the store is away: each `away` input arms a
    /// timer of `stage`; a stale one does nothing, the current one yields `again`. Returns the
    /// waits.
    fn while_away(
        m: &mut Machine,
        rounds: usize,
        away: impl Fn() -> Input,
        stage: Stage,
        again: &[Action],
    ) -> Vec<Duration> {
        let mut waits = Vec::new();
        for _ in 0..rounds {
            let a = m.step(away());
            let [
                Action::ArmTimer {
                    stage: armed,
                    generation,
                    after,
                },
            ] = a[..]
            else {
                panic!("{a:?}");
            };
            assert_eq!(armed, stage);
            waits.push(after);
            assert_eq!(
                m.step(Input::Timeout {
                    stage,
                    generation: generation - 1
                }),
                []
            );
            assert_eq!(m.step(Input::Timeout { stage, generation }), again);
        }
        waits
    }

    /// After [`RELEASE_RETRY_LIMIT`] deferrals (`already` of them made) the worker stops
    /// (lease recovery has the job).
    fn gives_up_at_the_limit(m: &mut Machine, already: u32, away: impl Fn() -> Input) {
        for _ in already..RELEASE_RETRY_LIMIT {
            assert!(matches!(m.step(away())[..], [Action::ArmTimer { .. }]));
        }
        assert_eq!(m.step(away()), [Action::Stop]);
        assert_eq!(m.stage, Stage::Done);
    }

    #[test]
    fn an_outcome_waits_for_the_store_and_is_stored_once_it_is_back() {
        let mut m = m();
        to_send(&mut m);
        let result = FaxResult {
            success: true,
            ..FaxResult::default()
        };
        let a = m.step(Input::Event(FaxEvent::Finished(result.clone())));
        let release = [Action::Release(Outcome::Call(result.clone()))];
        assert_eq!(a, release);
        // The store is away: a timer, growing, then the same outcome again.
        let away = || Input::ReleaseDeferred("store unavailable".into());
        let waits = while_away(&mut m, 6, away, Stage::Release, &release);
        assert_eq!(waits[0], RELEASE_RETRY_FIRST);
        assert!(waits.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*waits.last().unwrap(), RELEASE_RETRY_MAX);
        assert_eq!(m.step(Input::Released), [Action::Stop]);
        assert_eq!(m.stage, Stage::Done);
    }

    #[test]
    fn a_recovered_release_is_deferred_too_and_gives_up_at_the_limit() {
        let mut m = m();
        m.step(Input::Start);
        assert_eq!(m.step(Input::Recovered), [Action::ReleaseRecovered]);
        let away = || Input::ReleaseDeferred("x".into());
        while_away(&mut m, 1, away, Stage::Release, &[Action::ReleaseRecovered]);
        gives_up_at_the_limit(&mut m, 1, away);
    }

    fn prepared() -> Machine {
        let mut m = m();
        m.step(Input::Start);
        m.step(Input::Acquired);
        assert_eq!(m.step(Input::Prepared { pages: 1 }), [Action::ConfirmLease]);
        m
    }

    #[test]
    fn a_document_read_that_meets_a_store_outage_is_read_again_not_charged() {
        let mut m = m();
        m.step(Input::Start);
        let first = m.step(Input::Acquired);
        let [
            Action::ArmTimer {
                generation: prepare_timer,
                ..
            },
            Action::Prepare,
        ] = first[..]
        else {
            panic!("{first:?}");
        };
        // The store goes away while the document is read, for longer than the prepare
        // timeout: each read is deferred, the old prepare timeout is stale, nothing is
        // released (no attempt is spent on an outage).
        let mut waited = Duration::ZERO;
        let mut round = 0;
        while waited <= Timeouts::default().prepare {
            round += 1;
            let a = m.step(Input::PrepareDeferred("store unavailable".into()));
            let [
                Action::ArmTimer {
                    stage: Stage::Prepare,
                    generation,
                    after,
                },
            ] = a[..]
            else {
                panic!("round {round}: {a:?}");
            };
            waited += after;
            assert_eq!(
                m.step(Input::Timeout {
                    stage: Stage::Prepare,
                    generation: prepare_timer
                }),
                [],
                "the first prepare timeout no longer counts"
            );
            let again = m.step(Input::Timeout {
                stage: Stage::Prepare,
                generation,
            });
            assert!(
                matches!(again[..], [Action::ArmTimer { stage: Stage::Prepare, after, .. }, Action::Prepare]
                    if after == Timeouts::default().prepare),
                "{again:?}"
            );
        }
        // The store is back: the document is read, the lease confirmed, the call goes out.
        assert_eq!(m.step(Input::Prepared { pages: 3 }), [Action::ConfirmLease]);
        let a = m.step(Input::LeaseConfirmed);
        assert!(
            matches!(
                a[..],
                [
                    Action::ArmTimer {
                        stage: Stage::Originate,
                        ..
                    },
                    Action::Originate
                ]
            ),
            "{a:?}"
        );
        // A document that is really missing still fails the attempt.
        let mut other = Machine::new(Timeouts::default());
        other.step(Input::Start);
        other.step(Input::Acquired);
        let a = other.step(Input::PrepareFailed("no faxable document".into()));
        assert!(
            matches!(a[..], [Action::Release(Outcome::Failure { .. })]),
            "{a:?}"
        );
    }

    #[test]
    fn a_lease_confirmation_waits_for_the_store_and_never_dials_without_it() {
        let mut m = prepared();
        // The store is away: no call, the confirmation is tried again after a wait.
        let away = || Input::ConfirmDeferred("store unavailable".into());
        let waits = while_away(&mut m, 12, away, Stage::Prepare, &[Action::ConfirmLease]);
        assert_eq!(waits[0], RELEASE_RETRY_FIRST);
        assert_eq!(*waits.last().unwrap(), RELEASE_RETRY_MAX);
        // The store is back and the job still ours: the call goes out, once.
        let a = m.step(Input::LeaseConfirmed);
        assert!(
            matches!(
                a[..],
                [
                    Action::ArmTimer {
                        stage: Stage::Originate,
                        ..
                    },
                    Action::Originate
                ]
            ),
            "{a:?}"
        );
        // Had the job been requeued meanwhile, the worker would stop without dialling.
        let mut m = prepared();
        m.step(away());
        assert_eq!(
            m.step(Input::LeaseLost("job requeued".into())),
            [Action::AbortPrepare, Action::Stop]
        );
        // Away too long: no call either.
        gives_up_at_the_limit(&mut prepared(), 0, away);
    }

    #[test]
    fn a_take_left_unanswered_is_looked_at_again_until_the_store_is_back() {
        let mut m = m();
        assert_eq!(m.step(Input::Start), [Action::Acquire]);
        let away = || Input::AcquireDeferred("store unavailable".into());
        while_away(&mut m, 3, away, Stage::Acquire, &[Action::Acquire]);
        // The take had landed: the job is ours, prepared and sent as any other.
        let a = m.step(Input::Acquired);
        assert!(
            matches!(
                a[..],
                [
                    Action::ArmTimer {
                        stage: Stage::Prepare,
                        ..
                    },
                    Action::Prepare
                ]
            ),
            "{a:?}"
        );
        let mut m = self::m();
        m.step(Input::Start);
        gives_up_at_the_limit(&mut m, 0, away);
    }

    fn to_send(m: &mut Machine) -> u64 {
        m.step(Input::Start);
        m.step(Input::Acquired);
        m.step(Input::Prepared { pages: 3 });
        m.step(Input::LeaseConfirmed);
        m.step(Input::Originated);
        let a = m.step(Input::Event(FaxEvent::Negotiated {
            transfer_rate: 14_400,
            ecm: true,
            remote_station_id: String::new(),
        }));
        match a[..] {
            [
                Action::ArmTimer {
                    stage: Stage::Send,
                    generation,
                    after,
                },
            ] => {
                assert_eq!(after, Duration::from_secs(300));
                generation
            }
            _ => panic!("{a:?}"),
        }
    }

    #[test]
    fn happy_path_runs_every_stage_in_order() {
        let mut m = m();
        assert_eq!(m.step(Input::Start), [Action::Acquire]);
        let a = m.step(Input::Acquired);
        assert!(matches!(
            a[..],
            [
                Action::ArmTimer {
                    stage: Stage::Prepare,
                    ..
                },
                Action::Prepare
            ]
        ));
        assert_eq!(m.step(Input::Prepared { pages: 3 }), [Action::ConfirmLease]);
        assert_eq!(m.stage, Stage::Prepare);
        let a = m.step(Input::LeaseConfirmed);
        assert_eq!(a.len(), 2);
        assert_eq!(a[1], Action::Originate);
        assert_eq!(m.stage, Stage::Originate);
        m.step(Input::Originated);
        assert_eq!(m.stage, Stage::Negotiate);
        to_send(&mut Machine::new(Timeouts::default()));
        let mut m = Machine::new(Timeouts::default());
        to_send(&mut m);
        assert_eq!(m.status_text(), "sending page 1 of 3");
        let a = m.step(Input::Event(FaxEvent::Page {
            page: 1,
            total: 3,
            bad_rows: 0,
        }));
        assert_eq!(
            a[1],
            Action::Announce(Milestone::Page { page: 1, total: 3 })
        );
        assert_eq!(m.status_text(), "sending page 2 of 3");
        let r = FaxResult {
            success: true,
            transferred_pages: 3,
            total_pages: 3,
            ..Default::default()
        };
        let a = m.step(Input::Event(FaxEvent::Finished(r.clone())));
        assert_eq!(a, [Action::Release(Outcome::Call(r))]);
        assert_eq!(m.step(Input::EventsClosed), []);
        assert_eq!(m.step(Input::Released), [Action::Stop]);
        assert_eq!(m.stage, Stage::Done);
    }

    #[test]
    fn stale_timers_never_kill_a_healthy_stage() {
        let mut m = m();
        let g = to_send(&mut m);
        m.step(Input::Event(FaxEvent::Page {
            page: 1,
            total: 3,
            bad_rows: 0,
        }));
        // The timer armed before page 1 fires late: ignored.
        assert_eq!(
            m.step(Input::Timeout {
                stage: Stage::Send,
                generation: g
            }),
            []
        );
        // A timer of an earlier stage: ignored.
        assert_eq!(
            m.step(Input::Timeout {
                stage: Stage::Originate,
                generation: 1
            }),
            []
        );
        assert_eq!(m.stage, Stage::Send);
        // The current one fires: hang up and release a timeout.
        let cur = m.generation;
        let a = m.step(Input::Timeout {
            stage: Stage::Send,
            generation: cur,
        });
        assert_eq!(
            a,
            [
                Action::Hangup("JOB_TIMEOUT"),
                Action::Release(Outcome::timeout("send"))
            ]
        );
        // The call's own end after the hangup changes nothing.
        assert_eq!(
            m.step(Input::Event(FaxEvent::Finished(FaxResult::default()))),
            []
        );
    }

    #[test]
    fn each_stage_has_its_own_timeout() {
        let t = Timeouts {
            prepare: Duration::from_secs(4),
            originate: Duration::from_secs(1),
            negotiate: Duration::from_secs(2),
            per_page: Duration::from_secs(3),
        };
        let mut m = Machine::new(t);
        m.step(Input::Start);
        let a = m.step(Input::Acquired);
        assert!(
            matches!(a[0], Action::ArmTimer { stage: Stage::Prepare, after, .. } if after == t.prepare)
        );
        m.step(Input::Prepared { pages: 1 });
        let a = m.step(Input::LeaseConfirmed);
        assert!(
            matches!(a[0], Action::ArmTimer { stage: Stage::Originate, after, .. } if after == t.originate)
        );
        let a = m.step(Input::Originated);
        assert!(
            matches!(a[0], Action::ArmTimer { stage: Stage::Negotiate, after, .. } if after == t.negotiate)
        );
        assert_eq!(a[1], Action::Announce(Milestone::Dialled));
        let g = m.generation;
        let a = m.step(Input::Timeout {
            stage: Stage::Negotiate,
            generation: g,
        });
        assert_eq!(a[1], Action::Release(Outcome::timeout("negotiate")));
    }

    #[test]
    fn failures_release_or_stop() {
        let mut m = m();
        m.step(Input::Start);
        assert_eq!(
            m.step(Input::NotAvailable("not_found".into())),
            [Action::Stop]
        );
        assert_eq!(m.not_available.as_deref(), Some("not_found"));

        let mut m = Machine::new(Timeouts::default());
        m.step(Input::Start);
        assert_eq!(m.step(Input::Recovered), [Action::ReleaseRecovered]);
        assert_eq!(m.step(Input::ReleaseFailed("x".into())), [Action::Stop]);

        let mut m = Machine::new(Timeouts::default());
        m.step(Input::Start);
        m.step(Input::Acquired);
        let a = m.step(Input::PrepareFailed("no tiff".into()));
        assert!(matches!(
            &a[0],
            Action::Release(Outcome::Failure { sip_code: 0, .. })
        ));

        let mut m = Machine::new(Timeouts::default());
        m.step(Input::Start);
        m.step(Input::Acquired);
        m.step(Input::Prepared { pages: 1 });
        m.step(Input::LeaseConfirmed);
        let a = m.step(Input::OriginateFailed {
            sip_code: 503,
            text: "no".into(),
        });
        assert!(matches!(
            &a[0],
            Action::Release(Outcome::Failure { sip_code: 503, .. })
        ));
        assert_eq!(m.step(Input::Event(FaxEvent::Answered)), []);
    }

    #[test]
    fn a_slow_prepare_times_out_only_on_its_own_timer() {
        let mut m = m();
        m.step(Input::Start);
        let a = m.step(Input::Acquired);
        let Action::ArmTimer { generation, .. } = a[0] else {
            panic!("{a:?}")
        };
        // A timer of another stage or generation changes nothing.
        for (stage, g) in [
            (Stage::Originate, generation),
            (Stage::Prepare, generation + 1),
        ] {
            assert_eq!(
                m.step(Input::Timeout {
                    stage,
                    generation: g
                }),
                []
            );
        }
        assert_eq!(
            m.step(Input::Timeout {
                stage: Stage::Prepare,
                generation
            }),
            [
                Action::AbortPrepare,
                Action::Release(Outcome::timeout("prepare"))
            ]
        );
        // The conversion finishing late is ignored.
        assert_eq!(m.step(Input::Prepared { pages: 1 }), []);

        // A prepare that finished disarms its timer.
        let mut m = Machine::new(Timeouts::default());
        m.step(Input::Start);
        m.step(Input::Acquired);
        let g = m.generation;
        m.step(Input::Prepared { pages: 1 });
        assert_eq!(
            m.step(Input::Timeout {
                stage: Stage::Prepare,
                generation: g
            }),
            []
        );
    }

    #[test]
    fn a_lost_lease_stops_without_dialling_or_releasing() {
        // Lost while preparing or at the check before originate: no call, no release.
        for lose_after_prepare in [false, true] {
            let mut m = m();
            m.step(Input::Start);
            m.step(Input::Acquired);
            if lose_after_prepare {
                m.step(Input::Prepared { pages: 2 });
            }
            let a = m.step(Input::LeaseLost("requeued".into()));
            assert_eq!(a, [Action::AbortPrepare, Action::Stop]);
            assert_eq!(m.stage, Stage::Done);
            assert_eq!(m.step(Input::LeaseConfirmed), []);
            assert_eq!(m.step(Input::Prepared { pages: 2 }), []);
        }
        // Lost on the line: hang up and stop; the call's end releases nothing.
        let mut m = m();
        to_send(&mut m);
        assert_eq!(
            m.step(Input::LeaseLost("requeued".into())),
            [Action::Hangup("LEASE_LOST"), Action::Stop]
        );
        assert_eq!(
            m.step(Input::Event(FaxEvent::Finished(FaxResult::default()))),
            []
        );
    }
}
