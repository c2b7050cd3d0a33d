//! Incoming fax calls from FreeSWITCH (outbound mode, spec §1.6): the dialplan's
//! `socket <inbound_listen> async full` connects here with a ringing channel. For each
//! connection faxd says `connect` (the answer is the channel's data), `myevents` and
//! `linger`, and offers the call to the receiving side as an [`InboundCall`]. Refused, the
//! channel is hung up with the refusal's cause before it is answered; answered, faxd sets the
//! station id and the T.38 variables ([`super::t38`]), then queues `answer`, `rxfax
//! <spool>/<uuid>.tiff` and `hangup`, and reads the reception's events until the channel's
//! CHANNEL_HANGUP_COMPLETE, when it says `exit`.
//!
//! Bounded: at most `max_calls` sockets at once (more are hung up with a temporary failure),
//! every read and write has a deadline, a frame larger than the codec's limits ends the
//! connection. A socket that closes mid call ends the call for faxd.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::{Instant, timeout, timeout_at};

use super::call::InboundCall as Tracker;
use super::link::stopped;
use super::t38;
use crate::gateway::esl::{Command, Decoder, Event, Frame, Limits, SendMsg};
use crate::gateway::{
    AnswerHandle, FaxEvent, HangupHandle, InboundCall, InboundSink, OWNER_GONE, Refusal,
};

/// Time FreeSWITCH has to answer `connect` (it waits 25 s for it itself).
const CONNECT: Duration = Duration::from_secs(10);
/// Time a write may take.
const WRITE: Duration = Duration::from_secs(5);
/// Time the receiving side has to answer or refuse a ringing call.
const DECIDE: Duration = Duration::from_secs(30);
/// Longest silence of an answered call's socket (T.30 itself gives up far sooner).
const SILENCE: Duration = Duration::from_secs(600);
/// Time to read the last frames after `exit`.
const CLOSING: Duration = Duration::from_secs(5);
/// Capacity of a call's event channel.
const EVENTS: usize = 64;

/// How the listener handles calls.
#[derive(Clone, Debug)]
pub struct SocketConfig {
    /// Where `rxfax` writes (a directory FreeSWITCH and faxd share).
    pub spool: PathBuf,
    /// Sockets served at once.
    pub max_calls: usize,
}

/// Accepts the dialplan's connections until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    config: SocketConfig,
    sink: InboundSink,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(config.max_calls.max(1)));
    let config = Arc::new(config);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "inbound socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => return,
        };
        let _ = stream.set_nodelay(true);
        let permit = slots.clone().try_acquire_owned().ok();
        let (config, sink) = (config.clone(), sink.clone());
        tokio::spawn(async move {
            let mut conn = Conn::new(stream);
            let outcome = match permit {
                Some(_permit) => conn.serve(&config, &sink).await,
                None => conn.turn_away().await,
            };
            if let Err(e) = outcome {
                tracing::debug!(%peer, error = %e, "inbound socket ended");
            }
        });
    }
}

struct Conn {
    stream: TcpStream,
    decoder: Decoder,
    buf: Vec<u8>,
}

impl Conn {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            decoder: Decoder::new(Limits::default()),
            buf: vec![0u8; 16 * 1024],
        }
    }

    async fn send(&mut self, cmd: &Command) -> Result<(), String> {
        let bytes = cmd.encode().map_err(|e| e.to_string())?;
        timeout(WRITE, self.stream.write_all(&bytes))
            .await
            .map_err(|_| "write timed out".to_string())?
            .map_err(|e| format!("write: {e}"))
    }

    /// The next frame before `deadline`; `None` when FreeSWITCH closed the socket.
    async fn next(&mut self, deadline: Instant) -> Result<Option<Frame>, String> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(raw)) => return Frame::parse(raw).map(Some).map_err(|e| e.to_string()),
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            let n = timeout_at(deadline, self.stream.read(&mut self.buf))
                .await
                .map_err(|_| "FreeSWITCH went silent".to_string())?
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Ok(None);
            }
            self.decoder.feed(&self.buf[..n]);
        }
    }

    /// The channel's data (the reply to `connect`).
    async fn connect(&mut self) -> Result<Event, String> {
        self.send(&Command::Connect).await?;
        let deadline = Instant::now() + CONNECT;
        loop {
            match self.next(deadline).await? {
                Some(Frame::ConnectReply(r)) => return Ok(r.channel),
                Some(_) => continue,
                None => return Err("closed before the channel data".into()),
            }
        }
    }

    /// Too many calls: hang the channel up with a temporary failure (the caller retries).
    async fn turn_away(&mut self) -> Result<(), String> {
        self.connect().await?;
        tracing::warn!("inbound socket: too many calls at once; refused with a temporary failure");
        self.send(&hangup(OWNER_GONE)).await?;
        self.send(&Command::Exit).await
    }

    async fn serve(&mut self, config: &SocketConfig, sink: &InboundSink) -> Result<(), String> {
        let channel = self.connect().await?;
        let Some(offer) = Offer::of(&channel) else {
            self.send(&hangup("NORMAL_TEMPORARY_FAILURE")).await?;
            self.send(&Command::Exit).await?;
            return Err("the channel data has no usable Unique-ID".into());
        };
        self.send(&Command::MyEvents {
            uuid: None,
            format: None,
        })
        .await?;
        self.send(&Command::Linger { seconds: None }).await?;

        let (events_tx, events) = mpsc::channel(EVENTS);
        let (hangup_tx, mut hangups) = mpsc::unbounded_channel::<String>();
        let (answer, mut decision) = AnswerHandle::new();
        let call = InboundCall {
            call_id: offer.uuid.clone(),
            to: offer.to.clone(),
            from_number: offer.from_number.clone(),
            from_name: offer.from_name.clone(),
            events,
            hangup: HangupHandle(hangup_tx),
            answer,
        };
        tracing::info!(call_id = %offer.uuid, to_number = %offer.to, from_number = %offer.from_number,
                       "incoming fax call");
        if sink.try_send(call).is_err() {
            tracing::warn!(call_id = %offer.uuid, "inbound calls are not being taken: refused with a temporary failure");
            self.send(&hangup(OWNER_GONE)).await?;
            return self.finish().await;
        }

        let file = config.spool.join(format!("{}.tiff", offer.uuid));
        let mut tracker = Tracker::new(&offer.uuid);
        let mut decided = false;
        let mut decide_by = Some(Instant::now() + DECIDE);
        let mut hangups_open = true;
        loop {
            let silence = Instant::now() + SILENCE;
            tokio::select! {
                frame = self.next(silence) => {
                    let frame = match frame {
                        Ok(f) => f,
                        Err(e) => {
                            forward(&events_tx, tracker.on_closed(&e), &file).await;
                            return Err(e);
                        }
                    };
                    let out = match frame {
                        Some(Frame::Event(e)) => tracker.on_event(&e),
                        Some(Frame::DisconnectNotice(n)) if !n.lingers() => {
                            tracker.on_closed("FreeSWITCH closed the call's socket")
                        }
                        Some(_) => Vec::new(),
                        None => tracker.on_closed("the call's socket closed"),
                    };
                    let done = forward(&events_tx, out, &file).await;
                    if done {
                        return self.finish().await;
                    }
                    if tracker.finished() {
                        return Ok(());
                    }
                }
                d = &mut decision, if !decided => {
                    decided = true;
                    decide_by = None;
                    match d {
                        Ok(Ok(answer)) => {
                            for cmd in receive(&offer, &answer, &file) {
                                self.send(&cmd).await?;
                            }
                        }
                        Ok(Err(refusal)) => self.refuse(&refusal).await?,
                        Err(_) => self.refuse(&Refusal::temporary()).await?,
                    }
                }
                _ = sleep_until(decide_by), if !decided => {
                    decided = true;
                    decide_by = None;
                    tracing::warn!(call_id = %offer.uuid, "nobody answered the incoming call in time");
                    self.refuse(&Refusal::temporary()).await?;
                }
                cause = hangups.recv(), if hangups_open => match cause {
                    Some(cause) => self.send(&hangup(&cause)).await?,
                    None => hangups_open = false,
                },
            }
        }
    }

    async fn refuse(&mut self, r: &Refusal) -> Result<(), String> {
        self.send(&hangup(&r.cause)).await
    }

    /// `exit`, then reads until FreeSWITCH closes (bounded).
    async fn finish(&mut self) -> Result<(), String> {
        self.send(&Command::Exit).await?;
        let deadline = Instant::now() + CLOSING;
        while let Ok(Some(_)) = self.next(deadline).await {}
        Ok(())
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Passes the call's events on; `true` once the last one (Finished) went. The received
/// file is named in the result only when rxfax left one.
async fn forward(
    tx: &mpsc::Sender<FaxEvent>,
    events: Vec<FaxEvent>,
    file: &std::path::Path,
) -> bool {
    let mut done = false;
    for e in events {
        let e = match e {
            FaxEvent::Finished(mut r) => {
                done = true;
                if tokio::fs::metadata(file).await.is_ok_and(|m| m.is_file()) {
                    r.received_file = Some(file.to_path_buf());
                }
                FaxEvent::Finished(r)
            }
            other => other,
        };
        let _ = tx.send(e).await;
    }
    done
}

/// The ringing call as the channel data describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    pub uuid: String,
    /// The dialled number, E.164 when it reads as one.
    pub to: String,
    pub from_number: String,
    pub from_name: String,
    pub carrier: t38::Carrier,
}

impl Offer {
    /// Reads the CHANNEL_DATA; `None` without a Unique-ID fit for a file name.
    pub fn of(channel: &Event) -> Option<Offer> {
        let uuid = channel.unique_id()?.to_string();
        let safe = !uuid.is_empty()
            && uuid.len() <= 64
            && uuid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !safe {
            return None;
        }
        let dialled = channel
            .variable("sip_req_user")
            .or_else(|| channel.header("Caller-Destination-Number"))
            .unwrap_or("")
            .to_string();
        let to = crate::numbers::normalize(&dialled).unwrap_or(dialled);
        Some(Offer {
            uuid,
            to,
            from_number: channel
                .header("Caller-Caller-ID-Number")
                .unwrap_or("")
                .to_string(),
            from_name: channel
                .header("Caller-Caller-ID-Name")
                .unwrap_or("")
                .to_string(),
            carrier: t38::Carrier::parse(channel.variable("faxd_carrier_fax_option")),
        })
    }
}

fn hangup(cause: &str) -> Command {
    Command::SendMsg {
        uuid: None,
        msg: SendMsg::Hangup {
            cause: cause.to_string(),
        },
    }
}

fn execute(app: &str, arg: Option<String>, event_uuid: Option<&str>) -> Command {
    Command::SendMsg {
        uuid: None,
        msg: SendMsg::Execute {
            app: app.to_string(),
            arg,
            event_uuid: event_uuid.map(str::to_string),
            event_lock: true,
        },
    }
}

/// The commands that receive an answered call into `file`: the station id and T.38
/// variables, `answer`, `rxfax`, `hangup`.
pub fn receive(
    offer: &Offer,
    answer: &crate::gateway::Answer,
    file: &std::path::Path,
) -> Vec<Command> {
    let mut cmds = Vec::new();
    let station = if answer.station_id.trim().is_empty() {
        offer.to.clone()
    } else {
        answer.station_id.clone()
    };
    if !station.is_empty() {
        cmds.push(execute("set", Some(format!("fax_ident={station}")), None));
    }
    for (name, value) in t38::decide(offer.carrier, answer.t38).variables() {
        cmds.push(execute("set", Some(format!("{name}={value}")), None));
    }
    cmds.push(execute("answer", None, None));
    cmds.push(execute(
        "rxfax",
        Some(file.display().to_string()),
        Some(&offer.uuid),
    ));
    cmds.push(execute("hangup", Some("NORMAL_CLEARING".into()), None));
    cmds
}
