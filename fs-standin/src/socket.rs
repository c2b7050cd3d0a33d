//! Outbound mode: the stand-in as the dialplan's `socket <addr> async full` (spec §1.6). A
//! call to a faxd number becomes a B leg whose channel connects to faxd's inbound socket,
//! waits for `connect`, answers it with the bare CHANNEL_DATA and then runs the applications
//! faxd's `sendmsg` queues, one after the other (async socket: `+OK` means queued).
//!
//! `rxfax` receives from the other leg's `txfax` (or from the simulated sender of a
//! [`place_inbound_call`](crate::StandIn::place_inbound_call)) through one spandsp session.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::call::{FaxReporter, Leg, Pages, RxFaxRequest};
use crate::frames::{self, CommandReader};
use crate::server::{self, SessionCtx};
use crate::templates::{self, Fill, Kind};
use crate::{BusItem, ChannelHandle, Shared};

/// Who calls and whom: the B leg's caller profile.
pub(crate) struct BSpec {
    pub from: String,
    pub from_name: String,
    pub to: String,
    pub channel_name: String,
    /// The originating call's `{…}` variables (a loopback B leg carries them too).
    pub originate: Vec<(String, String)>,
    /// The A leg's uuid, when a stand-in call originated this one.
    pub other_leg: Option<String>,
}

/// From the B leg to the side that sends the fax.
pub(crate) enum ToA {
    Answered,
    RxFax(RxFaxRequest),
    Hangup(String),
}

/// From the sending side to the B leg.
pub(crate) enum ToB {
    Hangup(String),
}

/// What the B leg's channel is asked to do, in order.
#[derive(Debug)]
pub(crate) enum AppRequest {
    Execute {
        app: String,
        arg: String,
        event_uuid: String,
    },
    /// `sendmsg` with `call-command: hangup`.
    Hangup(String),
    /// Hung up from elsewhere: the other leg, `uuid_kill`, the socket closing.
    Kill(String),
}

/// Runs a call to faxd: connects to its inbound socket, serves the connection and the
/// channel until both end. Returns the B leg's uuid once it had one. (Boxed: the socket's
/// commands can originate calls, which can reach this again.)
pub(crate) fn run_b_leg(
    shared: Arc<Shared>,
    spec: BSpec,
    to_a: mpsc::UnboundedSender<ToA>,
    to_b: mpsc::UnboundedReceiver<ToB>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send>> {
    Box::pin(b_leg(shared, spec, to_a, to_b))
}

async fn b_leg(
    shared: Arc<Shared>,
    spec: BSpec,
    to_a: mpsc::UnboundedSender<ToA>,
    mut to_b: mpsc::UnboundedReceiver<ToB>,
) -> Option<String> {
    let Some(addr) = shared.config.inbound_listen else {
        let _ = to_a.send(ToA::Hangup("DESTINATION_OUT_OF_ORDER".into()));
        return None;
    };
    let stream = match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await
    {
        Ok(Ok(s)) => s,
        _ => {
            tracing::debug!(%addr, "fs-standin: faxd's inbound socket does not answer");
            let _ = to_a.send(ToA::Hangup("DESTINATION_OUT_OF_ORDER".into()));
            return None;
        }
    };
    let uuid = crate::new_uuid();
    let mut leg = Leg::new(
        &uuid,
        &spec.channel_name,
        &spec.from,
        &spec.from_name,
        &spec.to,
        spec.originate,
    );
    leg.set("direction", "inbound");
    leg.set(
        "session_id",
        &shared
            .sessions_total
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_add(1)
            .to_string(),
    );
    if let Some(a) = &spec.other_leg {
        leg.set("other_loopback_leg_uuid", a);
        leg.set("loopback_leg", "B");
    }
    // The SIP side of a call from the carrier.
    let carrier = "127.0.0.1";
    leg.set("sip_from_user", &spec.from);
    leg.set("sip_from_uri", &format!("{}@{carrier}", spec.from));
    leg.set("sip_from_host", carrier);
    leg.set("sip_call_id", &crate::new_uuid());
    leg.set("sip_network_ip", carrier);
    leg.set("sip_req_user", &spec.to);
    leg.set("sip_req_uri", &format!("{}@{carrier}", spec.to));
    leg.set("sip_req_host", carrier);
    leg.set("sip_to_user", &spec.to);
    leg.set("sip_to_uri", &format!("{}@{carrier}", spec.to));
    leg.set("sip_to_host", carrier);
    leg.set("sofia_profile_name", "external");
    leg.set("socket_host", &addr.ip().to_string());
    leg.set("current_application_data", &format!("{addr} async full"));
    leg.set("current_application", "socket");
    let channel_name = spec.channel_name.clone();
    let leg = Arc::new(Mutex::new(leg));

    let (apps_tx, apps_rx) = mpsc::unbounded_channel();
    let (hang_tx, hang_rx) = mpsc::unbounded_channel();
    shared.add_channel(
        &uuid,
        ChannelHandle {
            hangup: hang_tx,
            apps: Some(apps_tx.clone()),
        },
    );
    let hung_up = tokio::sync::watch::Sender::new(false);
    let mut gone = hung_up.subscribe();
    let exec = Executor {
        shared: shared.clone(),
        leg: leg.clone(),
        to_a,
        answered: false,
        parked: false,
        pending: VecDeque::new(),
        hung_up,
        socket_uuid: crate::new_uuid(),
        socket_arg: format!("{addr} async full"),
    };
    let executor = tokio::spawn(exec.run(apps_rx, hang_rx));
    {
        let apps = apps_tx.clone();
        tokio::spawn(async move {
            while let Some(ToB::Hangup(c)) = to_b.recv().await {
                let _ = apps.send(AppRequest::Kill(c));
            }
        });
    }

    let (read, mut write) = stream.into_split();
    let mut reader = CommandReader::new(read);
    // FreeSWITCH writes nothing and waits for `connect`.
    // (A channel that hangs up meanwhile closes the socket.)
    let first = tokio::select! {
        r = reader.next(shared.config.connect_timeout) => r,
        _ = crate::until_true(&mut gone) => Err(frames::ReadError::Closed),
    };
    match first {
        Ok(c) if c.line.trim() == "connect" => {
            let data = channel_data(&shared, &leg);
            let ok =
                tokio::time::timeout(Duration::from_secs(10), write.write_all(data.as_bytes()))
                    .await
                    .map(|r| r.is_ok())
                    .unwrap_or(false);
            if ok {
                let ctx = SessionCtx {
                    uuid: uuid.clone(),
                    channel_name,
                    leg: leg.clone(),
                    apps: apps_tx.clone(),
                    hung_up: gone,
                };
                server::serve(shared.clone(), reader, write, Some(ctx)).await;
            }
        }
        _ => {
            tracing::debug!(%uuid, "fs-standin: no `connect` from faxd");
        }
    }
    // The socket is gone: the channel hangs up (no `resume`).
    let _ = apps_tx.send(AppRequest::Kill("NORMAL_CLEARING".into()));
    drop(apps_tx);
    let _ = executor.await;
    Some(uuid)
}

/// The bare CHANNEL_DATA reply to `connect` with its four appended headers.
fn channel_data(shared: &Shared, leg: &Mutex<Leg>) -> String {
    let Ok(leg) = leg.lock() else {
        return String::new();
    };
    let mut ev = crate::call::standard_headers(shared);
    ev.push(("Channel-State", "CS_EXECUTE".into()));
    let mut headers = templates::render(
        Kind::ChannelData,
        &Fill {
            event: &ev,
            channel: &leg.channel,
            vars: &leg.vars,
            originate: &leg.originate,
        },
    );
    for (n, v) in [
        ("Content-Type", "command/reply"),
        ("Reply-Text", "+OK\n"),
        ("Socket-Mode", "async"),
        ("Control", "full"),
    ] {
        headers.push((n.to_string(), v.to_string()));
    }
    frames::plain_payload(&headers, None)
}

/// The B leg's channel: runs the queued applications in order, writing the events capture 3
/// shows (PARK at the first queued message; at hang-up HANGUP, UNPARK, the `socket`
/// application's EXECUTE_COMPLETE, two CHANNEL_STATE and HANGUP_COMPLETE).
struct Executor {
    shared: Arc<Shared>,
    leg: Arc<Mutex<Leg>>,
    to_a: mpsc::UnboundedSender<ToA>,
    answered: bool,
    parked: bool,
    pending: VecDeque<AppRequest>,
    /// Set once the channel hung up.
    hung_up: tokio::sync::watch::Sender<bool>,
    /// `Application-UUID` and `-Data` of the `socket` application.
    socket_uuid: String,
    socket_arg: String,
}

impl Executor {
    fn with_leg<T>(&self, f: impl FnOnce(&mut Leg) -> T) -> Option<T> {
        self.leg.lock().ok().map(|mut l| f(&mut l))
    }

    fn emit(&self, kind: Kind, event: &[(&str, String)]) {
        let shared = self.shared.clone();
        self.with_leg(|l| l.emit(&shared, kind, event));
    }

    fn park(&mut self) {
        if !self.parked {
            self.parked = true;
            self.emit(Kind::Park, &[]);
        }
    }

    async fn run(
        mut self,
        mut apps: mpsc::UnboundedReceiver<AppRequest>,
        mut hang: mpsc::UnboundedReceiver<String>,
    ) {
        loop {
            let req = match self.pending.pop_front() {
                Some(r) => r,
                None => tokio::select! {
                    r = apps.recv() => match r {
                        Some(r) => r,
                        None => AppRequest::Kill("NORMAL_CLEARING".into()),
                    },
                    Some(c) = hang.recv() => AppRequest::Kill(c),
                },
            };
            let cause = match req {
                AppRequest::Hangup(cause) => {
                    self.park();
                    self.begin_hangup(&cause);
                    cause
                }
                AppRequest::Kill(cause) => {
                    self.begin_hangup(&cause);
                    cause
                }
                AppRequest::Execute {
                    app,
                    arg,
                    event_uuid,
                } => {
                    self.park();
                    match self
                        .execute(&app, &arg, &event_uuid, &mut apps, &mut hang)
                        .await
                    {
                        Some(cause) => cause,
                        None => continue,
                    }
                }
            };
            self.finish_hangup(&cause);
            return;
        }
    }

    fn answer(&mut self) {
        if self.answered {
            return;
        }
        self.answered = true;
        self.with_leg(|l| l.mark_answered());
        self.emit(Kind::AnswerB, &[]);
        let _ = self.to_a.send(ToA::Answered);
    }

    /// Runs one application; `Some(cause)` when the channel hung up meanwhile (CHANNEL_HANGUP
    /// already written).
    async fn execute(
        &mut self,
        app: &str,
        arg: &str,
        event_uuid: &str,
        apps: &mut mpsc::UnboundedReceiver<AppRequest>,
        hang: &mut mpsc::UnboundedReceiver<String>,
    ) -> Option<String> {
        self.with_leg(|l| {
            l.set("current_application", app);
            l.set("current_application_data", arg);
        });
        let start = [
            ("Application", app.to_string()),
            ("Application-Data", arg.to_string()),
            ("Application-UUID", event_uuid.to_string()),
        ];
        self.emit(Kind::ExecuteB, &start);
        let mut then_hangup = None;
        let mut kind = Kind::ExecuteCompleteB;
        match app {
            "answer" | "pre_answer" => self.answer(),
            "set" | "export" => {
                if let Some((n, v)) = arg.split_once('=') {
                    self.with_leg(|l| l.set(n.trim(), v));
                }
            }
            "hangup" => {
                let cause = if arg.trim().is_empty() {
                    "NORMAL_CLEARING".to_string()
                } else {
                    arg.trim().to_string()
                };
                self.begin_hangup(&cause);
                then_hangup = Some(cause);
            }
            "rxfax" => {
                kind = Kind::ExecuteCompleteRx;
                self.answer();
                then_hangup = self.rxfax(arg, apps, hang).await;
            }
            _ => {}
        }
        self.emit(
            kind,
            &[
                ("Application", app.to_string()),
                ("Application-Data", arg.to_string()),
                ("Application-Response", "_none_".to_string()),
                ("Application-UUID", event_uuid.to_string()),
            ],
        );
        then_hangup
    }

    /// Receives the fax of the other side into `path`; returns the cause of a hang-up that
    /// came meanwhile.
    async fn rxfax(
        &mut self,
        path: &str,
        apps: &mut mpsc::UnboundedReceiver<AppRequest>,
        hang: &mut mpsc::UnboundedReceiver<String>,
    ) -> Option<String> {
        let (ident, ecm) = self
            .with_leg(|l| {
                (
                    l.var("fax_ident")
                        .unwrap_or("SpanDSP Fax Ident")
                        .to_string(),
                    !matches!(l.var("fax_use_ecm"), Some("false" | "0" | "off" | "no")),
                )
            })
            .unwrap_or_default();
        let (fax_hang_tx, fax_hang_rx) = mpsc::unbounded_channel();
        let (events_tx, mut events_rx) = oneshot::channel();
        let (line_tx, line_rx) = oneshot::channel();
        let req = RxFaxRequest {
            path: PathBuf::from(path),
            ident: ident.clone(),
            ecm,
            hangup: fax_hang_rx,
            events: events_tx,
            line: line_tx,
        };
        let mut rep = FaxReporter {
            tx: false,
            t38_status: "off".into(),
            local_ident: ident,
            pages: Pages::default(),
            ecm,
            rate: 0,
            last_page: 0,
        };
        self.with_leg(|l| rep.started(l, path, ecm, false));
        if self.to_a.send(ToA::RxFax(req)).is_err() {
            return None;
        }
        // Wait for the sender to start the line.
        let mut events = loop {
            let stop = tokio::select! {
                e = &mut events_rx => match e {
                    Ok(e) => break e,
                    Err(_) => return None,
                },
                Some(c) = hang.recv() => c,
                r = apps.recv() => match r {
                    Some(AppRequest::Hangup(c) | AppRequest::Kill(c)) => c,
                    Some(other) => {
                        self.pending.push_back(other);
                        continue;
                    }
                    None => "NORMAL_CLEARING".into(),
                },
            };
            self.begin_hangup(&stop);
            return Some(stop);
        };
        if let Ok((pages, t38_status)) = line_rx.await {
            rep.pages = pages;
            rep.t38_status = t38_status;
        }
        let mut hangup: Option<String> = None;
        loop {
            let stop = tokio::select! {
                e = events.recv() => match e {
                    Some(e) => {
                        let shared = self.shared.clone();
                        self.with_leg(|l| rep.report(&shared, l, &e));
                        continue;
                    }
                    None => break,
                },
                Some(c) = hang.recv(), if hangup.is_none() => c,
                r = apps.recv(), if hangup.is_none() => match r {
                    Some(AppRequest::Hangup(c) | AppRequest::Kill(c)) => c,
                    Some(other) => {
                        self.pending.push_back(other);
                        continue;
                    }
                    None => "NORMAL_CLEARING".into(),
                },
            };
            // Hung up mid-fax: CHANNEL_HANGUP now, the result (49) when the line drops.
            self.begin_hangup(&stop);
            let _ = fax_hang_tx.send(stop.clone());
            hangup = Some(stop);
        }
        hangup
    }

    /// CHANNEL_HANGUP (once).
    fn begin_hangup(&mut self, cause: &str) {
        let first = self
            .with_leg(|l| {
                let first = !l.channel.contains_key("Hangup-Cause");
                l.begin_hangup(cause);
                first
            })
            .unwrap_or(false);
        if first {
            self.emit(Kind::HangupB, &[]);
        }
    }

    /// The rest of the hang-up: UNPARK, the socket application's end, the state changes and
    /// HANGUP_COMPLETE; then the socket gets its notice. Queued applications are dropped.
    fn finish_hangup(&mut self, cause: &str) {
        self.begin_hangup(cause);
        self.pending.clear();
        if self.parked {
            self.emit(Kind::Unpark, &[]);
        }
        self.emit(
            Kind::ExecuteCompleteSocket,
            &[
                ("Application", "socket".to_string()),
                ("Application-Data", self.socket_arg.clone()),
                ("Application-Response", "_none_".to_string()),
                ("Application-UUID", self.socket_uuid.clone()),
            ],
        );
        self.emit(Kind::StateHangup, &[]);
        self.emit(Kind::StateReporting, &[]);
        let shared = self.shared.clone();
        let uuid = self
            .with_leg(|l| {
                l.set("last_app", "socket");
                l.set("last_arg", &self.socket_arg);
                l.mark_hangup(cause);
                l.emit(&shared, Kind::HangupCompleteB, &[]);
                l.uuid.clone()
            })
            .unwrap_or_default();
        shared.publish(BusItem::Gone { uuid: uuid.clone() });
        self.hung_up.send_replace(true);
        shared.remove_channel(&uuid);
        let _ = self.to_a.send(ToA::Hangup(cause.to_string()));
    }
}
