//! The event socket's command side, for both modes: the inbound listener (faxd connects,
//! `auth`, `event`, `api`, `bgapi`, ...) and the connection an outbound socket serves once
//! `connect` was answered (`myevents`, `linger`, `getvar`, `sendmsg`, ...). One command is
//! answered at a time, in order; events are written between replies (spec §1.1).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, oneshot};

use crate::call::{self, JobReply, Leg};
use crate::frames::{self, ClientCommand, CommandReader};
use crate::socket::AppRequest;
use crate::{BusItem, Shared};

/// Longest a write may block (a client that stopped reading is dropped).
const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// The events `myevents` subscribes (spec §1.3).
const SESSION_EVENTS: &[&str] = &[
    "CHANNEL_ANSWER",
    "CHANNEL_APPLICATION",
    "CHANNEL_BRIDGE",
    "CHANNEL_CREATE",
    "CHANNEL_DATA",
    "CHANNEL_DESTROY",
    "CHANNEL_EXECUTE",
    "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_ORIGINATE",
    "CHANNEL_UUID",
    "CHANNEL_OUTGOING",
    "CHANNEL_PARK",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_STATE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_UNPARK",
    "DETECTED_SPEECH",
    "DTMF",
    "NOTALK",
    "TALK",
];

/// The channel an outbound socket controls.
pub(crate) struct SessionCtx {
    pub uuid: String,
    pub channel_name: String,
    pub leg: Arc<Mutex<Leg>>,
    pub apps: tokio::sync::mpsc::UnboundedSender<AppRequest>,
    /// Whether the channel already hung up (its `Gone` may predate this connection's
    /// subscription to the events).
    pub hung_up: tokio::sync::watch::Receiver<bool>,
}

/// Accepts inbound connections until the stand-in shuts down; a pause closes the listener
/// and binds the same address again when it ends.
pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, addr: SocketAddr) {
    enum Next {
        Accepted(std::io::Result<tokio::net::TcpStream>),
        Pause(Option<std::time::Instant>),
        Stop,
    }
    let mut listener = listener;
    let mut pause = shared.pause.subscribe();
    let mut closing = shared.closing.subscribe();
    loop {
        let next = tokio::select! {
            r = listener.accept() => Next::Accepted(r.map(|(s, _)| s)),
            r = pause.changed() => match r {
                Ok(()) => Next::Pause(*pause.borrow_and_update()),
                Err(_) => Next::Stop,
            },
            _ = crate::until_true(&mut closing) => Next::Stop,
        };
        match next {
            Next::Accepted(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let hello = frames::auth_request();
                    if write_deadline(&mut write, hello.as_bytes()).await.is_ok() {
                        serve(shared, CommandReader::new(read), write, None).await;
                    }
                });
            }
            Next::Accepted(Err(e)) => {
                tracing::warn!(error = %e, "fs-standin: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Next::Pause(Some(until)) => {
                drop(listener);
                tokio::time::sleep_until(until.into()).await;
                match rebind(addr).await {
                    Some(l) => listener = l,
                    None => {
                        tracing::error!(%addr, "fs-standin: cannot listen again after the pause");
                        return;
                    }
                }
            }
            Next::Pause(None) => {}
            Next::Stop => return,
        }
    }
}

async fn rebind(addr: SocketAddr) -> Option<TcpListener> {
    for _ in 0..250 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return Some(l);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

async fn write_deadline<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_DEADLINE, w.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "write deadline",
        )),
    }
}

/// What a connection listens to.
#[derive(Default)]
struct Subscription {
    all: bool,
    names: HashSet<String>,
    customs: HashSet<String>,
    json: bool,
    /// `myevents`: only this channel's events.
    uuid: Option<String>,
    /// `filter` pairs (header, value).
    filters: Vec<(String, String)>,
}

impl Subscription {
    fn wants(
        &self,
        name: &str,
        subclass: Option<&str>,
        unique_id: Option<&str>,
        headers: &[(String, String)],
    ) -> bool {
        let subscribed = self.all
            || self.names.contains(name)
            || (name == "CUSTOM" && subclass.is_some_and(|s| self.customs.contains(s)));
        if !subscribed {
            return false;
        }
        if let Some(u) = &self.uuid
            && name != "BACKGROUND_JOB"
            && unique_id != Some(u.as_str())
        {
            return false;
        }
        if self.filters.is_empty() {
            return true;
        }
        self.filters.iter().any(|(h, v)| {
            headers
                .iter()
                .any(|(n, x)| n.eq_ignore_ascii_case(h) && x.eq_ignore_ascii_case(v))
        })
    }
}

enum Flow {
    Continue,
    Close,
}

struct Conn<W> {
    shared: Arc<Shared>,
    write: W,
    authed: bool,
    subs: Subscription,
    session: Option<SessionCtx>,
    linger: bool,
    /// The controlled channel hung up while lingering.
    gone: bool,
}

/// Serves one connection until it ends.
pub(crate) async fn serve<R, W>(
    shared: Arc<Shared>,
    mut reader: CommandReader<R>,
    write: W,
    session: Option<SessionCtx>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut bus = shared.bus.subscribe();
    let mut drops = shared.drop_generation.subscribe();
    drops.borrow_and_update();
    let idle = shared.config.idle_timeout;
    let already_gone = session
        .as_ref()
        .filter(|s| *s.hung_up.borrow())
        .map(|s| s.uuid.clone());
    let mut c = Conn {
        shared,
        write,
        authed: session.is_some(),
        subs: Subscription::default(),
        session,
        linger: false,
        gone: false,
    };
    if let Some(uuid) = already_gone
        && !matches!(c.deliver(&BusItem::Gone { uuid }).await, Ok(Flow::Continue))
    {
        return;
    }
    loop {
        tokio::select! {
            _ = drops.changed() => return,
            cmd = reader.next(idle) => match cmd {
                Ok(cmd) => match c.command(cmd).await {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Close) | Err(_) => return,
                },
                Err(e) => {
                    tracing::debug!(error = %e, "fs-standin: connection ends");
                    return;
                }
            },
            item = bus.recv() => match item {
                Ok(item) => match c.deliver(&item).await {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Close) | Err(_) => return,
                },
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "fs-standin: a slow connection missed events");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

impl<W: AsyncWrite + Unpin> Conn<W> {
    async fn send(&mut self, s: &str) -> std::io::Result<()> {
        write_deadline(&mut self.write, s.as_bytes()).await
    }

    async fn reply(&mut self, text: &str) -> std::io::Result<Flow> {
        self.send(&frames::reply(text, &[])).await?;
        Ok(Flow::Continue)
    }

    async fn deliver(&mut self, item: &BusItem) -> std::io::Result<Flow> {
        match item {
            BusItem::Event {
                name,
                subclass,
                unique_id,
                headers,
                body,
            } => {
                if self.authed
                    && self
                        .subs
                        .wants(name, subclass.as_deref(), unique_id.as_deref(), headers)
                {
                    let payload = if self.subs.json {
                        frames::json_payload(headers, body.as_deref())
                    } else {
                        frames::plain_payload(headers, body.as_deref())
                    };
                    self.send(&frames::event_envelope(&payload, self.subs.json))
                        .await?;
                }
                Ok(Flow::Continue)
            }
            BusItem::Gone { uuid } => {
                let Some(s) = &self.session else {
                    return Ok(Flow::Continue);
                };
                if &s.uuid != uuid {
                    return Ok(Flow::Continue);
                }
                if self.linger {
                    let notice = frames::linger_notice(&s.uuid, &s.channel_name);
                    self.gone = true;
                    self.send(&notice).await?;
                    Ok(Flow::Continue)
                } else {
                    let bye = frames::session_goodbye(&s.uuid);
                    self.send(&bye).await?;
                    let _ = self.write.shutdown().await;
                    Ok(Flow::Close)
                }
            }
        }
    }

    async fn goodbye(&mut self) -> std::io::Result<Flow> {
        self.send(&frames::reply("+OK bye", &[])).await?;
        let bye = match &self.session {
            Some(s) => frames::session_goodbye(&s.uuid),
            None => frames::goodbye(),
        };
        self.send(&bye).await?;
        let _ = self.write.shutdown().await;
        Ok(Flow::Close)
    }

    async fn command(&mut self, cmd: ClientCommand) -> std::io::Result<Flow> {
        let line = cmd.line.trim().to_string();
        let (word, rest) = match line.split_once(' ') {
            Some((w, r)) => (w.to_string(), r.trim().to_string()),
            None => (line.clone(), String::new()),
        };
        if !self.authed {
            return match word.as_str() {
                "auth" => {
                    if rest == self.shared.config.password {
                        self.authed = true;
                        self.reply("+OK accepted").await
                    } else {
                        self.send(&frames::reply("-ERR invalid", &[])).await?;
                        self.send(&frames::goodbye()).await?;
                        let _ = self.write.shutdown().await;
                        Ok(Flow::Close)
                    }
                }
                "exit" | "..." => self.goodbye().await,
                _ => self.reply("-ERR command not found").await,
            };
        }
        match word.as_str() {
            "exit" | "..." => self.goodbye().await,
            "auth" => self.reply("+OK accepted").await,
            "event" => {
                let mut words = rest.split_whitespace().peekable();
                let mut format = "plain";
                if let Some(&f) = words.peek()
                    && matches!(f, "plain" | "json" | "xml")
                {
                    format = f;
                    words.next();
                }
                let words: Vec<&str> = words.collect();
                if words.is_empty() {
                    return self.reply("-ERR no keywords supplied").await;
                }
                self.subs.json = format == "json";
                let mut custom = false;
                // Event names are matched without regard to case, as `switch_name_event`
                // does; subclass names are taken as written.
                for w in words {
                    let upper = w.to_ascii_uppercase();
                    if custom {
                        self.subs.customs.insert(w.to_string());
                    } else if upper == "CUSTOM" {
                        custom = true;
                    } else if upper == "ALL" {
                        self.subs.all = true;
                    } else {
                        self.subs.names.insert(upper);
                    }
                }
                self.reply(&format!("+OK event listener enabled {format}"))
                    .await
            }
            "nixevent" => {
                for w in rest.split_whitespace() {
                    self.subs.names.remove(&w.to_ascii_uppercase());
                    self.subs.customs.remove(w);
                }
                self.reply("+OK events nixed").await
            }
            "noevents" => {
                self.subs = Subscription {
                    uuid: self.subs.uuid.take(),
                    ..Subscription::default()
                };
                self.reply("+OK no longer listening for events").await
            }
            "myevents" => {
                let uuid = match &self.session {
                    Some(s) => Some(s.uuid.clone()),
                    None => rest.split_whitespace().next().map(str::to_string),
                };
                let Some(uuid) = uuid else {
                    return self.reply("-ERR invalid uuid").await;
                };
                if self.session.is_some() && rest == "json" {
                    self.subs.json = true;
                }
                for e in SESSION_EVENTS {
                    self.subs.names.insert(e.to_string());
                }
                self.subs.uuid = Some(uuid);
                self.reply("+OK Events Enabled").await
            }
            "filter" => self.filter(&rest).await,
            "linger" => {
                if self.session.is_none() {
                    return self.reply("-ERR not controlling a session").await;
                }
                self.linger = true;
                match rest.parse::<u64>() {
                    Ok(n) => self.reply(&format!("+OK will linger {n} seconds")).await,
                    Err(_) => self.reply("+OK will linger").await,
                }
            }
            "nolinger" => {
                if self.session.is_none() {
                    return self.reply("-ERR not controlling a session").await;
                }
                self.linger = false;
                self.reply("+OK will not linger").await
            }
            "getvar" => {
                let value = self.session.as_ref().and_then(|s| {
                    s.leg
                        .lock()
                        .ok()
                        .and_then(|l| l.var(&rest).map(str::to_string))
                });
                if self.session.is_none() {
                    return self.reply("-ERR not controlling a session").await;
                }
                self.reply(&value.unwrap_or_default()).await
            }
            "resume" => self.reply("+OK").await,
            "divert_events" => {
                if rest == "on" {
                    self.reply("+OK events diverted").await
                } else {
                    self.reply("+OK events not diverted").await
                }
            }
            "nolog" => self.reply("+OK no longer logging").await,
            "log" => self.reply("+OK log level 7 [7]").await,
            "sendmsg" => self.sendmsg(&rest, &cmd).await,
            "api" => {
                let (c, arg) = split_api(&rest);
                let body = match c.as_str() {
                    "originate" => {
                        let (tx, rx) = oneshot::channel();
                        tokio::spawn(call::originate(
                            self.shared.clone(),
                            arg.clone(),
                            JobReply::Api(tx),
                        ));
                        rx.await.unwrap_or_else(|_| "-ERR no reply\n".into())
                    }
                    _ => run_api(&self.shared, &c, &arg).await,
                };
                self.send(&frames::api_response(&body)).await?;
                Ok(Flow::Continue)
            }
            "bgapi" => {
                let (c, arg) = split_api(&rest);
                let job = cmd
                    .header("Job-UUID")
                    .map(str::to_string)
                    .filter(|j| !j.is_empty())
                    .unwrap_or_else(crate::new_uuid);
                self.send(&frames::bgapi_reply(&job)).await?;
                let shared = self.shared.clone();
                if c == "originate" {
                    tokio::spawn(call::originate(
                        shared,
                        arg.clone(),
                        JobReply::Background { job_uuid: job, arg },
                    ));
                } else if c == "http_get" {
                    // The cache is consulted in command order (who downloads, who is told
                    // `download`), the answers come when they are ready.
                    let step = http_get_begin(&shared, &arg);
                    tokio::spawn(async move {
                        let body = http_get_end(&shared, step).await;
                        call::background_job(&shared, &job, &c, &arg, &body);
                    });
                } else {
                    tokio::spawn(async move {
                        let body = run_api(&shared, &c, &arg).await;
                        call::background_job(&shared, &job, &c, &arg, &body);
                    });
                }
                Ok(Flow::Continue)
            }
            _ => self.reply("-ERR command not found").await,
        }
    }

    async fn filter(&mut self, rest: &str) -> std::io::Result<Flow> {
        let words: Vec<&str> = rest.split_whitespace().collect();
        match words.as_slice() {
            ["delete", "all"] => {
                self.subs.filters.clear();
                self.reply("+OK filter deleted. [all][]").await
            }
            ["delete", h] => {
                self.subs.filters.retain(|(n, _)| n != h);
                self.reply(&format!("+OK filter deleted. [{h}][]")).await
            }
            ["delete", h, v @ ..] => {
                let v = v.join(" ");
                self.subs.filters.retain(|(n, x)| !(n == h && *x == v));
                self.reply(&format!("+OK filter deleted. [{h}][{v}]")).await
            }
            ["add", h, v @ ..] | [h, v @ ..] if !v.is_empty() => {
                let v = v.join(" ");
                self.subs.filters.push((h.to_string(), v.clone()));
                self.reply(&format!("+OK filter added. [{h}]=[{v}]")).await
            }
            _ => self.reply("-ERR invalid syntax").await,
        }
    }

    async fn sendmsg(&mut self, rest: &str, cmd: &ClientCommand) -> std::io::Result<Flow> {
        let target = if rest.is_empty() {
            cmd.header("session-id").unwrap_or("").to_string()
        } else {
            rest.to_string()
        };
        let apps = match (&self.session, target.as_str()) {
            (Some(s), "") => Some(s.apps.clone()),
            (Some(s), t) if t == s.uuid => Some(s.apps.clone()),
            (_, t) => self.shared.channel(t).and_then(|h| h.apps),
        };
        let target = if target.is_empty() {
            self.session
                .as_ref()
                .map(|s| s.uuid.clone())
                .unwrap_or_default()
        } else {
            target
        };
        let Some(apps) = apps.filter(|_| !self.gone) else {
            // A channel without a socket (an originated A leg) can still be hung up.
            if cmd.header("call-command") == Some("hangup")
                && let Some(h) = self.shared.channel(&target)
            {
                let cause = cmd
                    .header("hangup-cause")
                    .filter(|c| !c.is_empty())
                    .unwrap_or("NORMAL_CLEARING");
                let _ = h.hangup.send(cause.to_string());
                return self.reply("+OK").await;
            }
            return self
                .reply(&format!("-ERR invalid session id [{target}]"))
                .await;
        };
        let req = match cmd.header("call-command").unwrap_or("") {
            "execute" => {
                let arg = match cmd.header("execute-app-arg") {
                    Some(a) => a.to_string(),
                    None => cmd.body.clone(),
                };
                AppRequest::Execute {
                    app: cmd.header("execute-app-name").unwrap_or("").to_string(),
                    arg,
                    event_uuid: cmd.header("event-uuid").unwrap_or("").to_string(),
                }
            }
            "hangup" => AppRequest::Hangup(
                cmd.header("hangup-cause")
                    .filter(|c| !c.is_empty())
                    .unwrap_or("NORMAL_CLEARING")
                    .to_string(),
            ),
            _ => return self.reply("+OK").await,
        };
        if apps.send(req).is_err() {
            return self
                .reply(&format!("-ERR invalid session id [{target}]"))
                .await;
        }
        self.reply("+OK").await
    }
}

fn split_api(rest: &str) -> (String, String) {
    match rest.split_once(' ') {
        Some((c, a)) => (c.to_string(), a.trim().to_string()),
        None => (rest.to_string(), String::new()),
    }
}

/// The output of an `api` command other than `originate`.
pub(crate) async fn run_api(shared: &Arc<Shared>, cmd: &str, arg: &str) -> String {
    match cmd {
        "status" => status(shared),
        "hostname" => shared.config.hostname.clone(),
        "http_get" => http_get_end(shared, http_get_begin(shared, arg)).await,
        "uuid_kill" => {
            let mut words = arg.split_whitespace();
            let uuid = words.next().unwrap_or("");
            let cause = words.next().unwrap_or("NORMAL_CLEARING");
            match shared.channel(uuid) {
                Some(h) if h.hangup.send(cause.to_string()).is_ok() => "+OK\n".into(),
                _ => "-ERR No such channel!\n".into(),
            }
        }
        _ => format!("-ERR {cmd} Command not found!\n"),
    }
}

fn status(shared: &Shared) -> String {
    let up = shared.started.elapsed();
    let s = up.as_secs();
    let total = shared
        .sessions_total
        .load(std::sync::atomic::Ordering::Relaxed);
    let now = shared.active_channels();
    format!(
        "UP 0 years, {} days, {} hours, {} minutes, {} seconds, {} milliseconds, {} microseconds\n\
FreeSWITCH (Version 1.10.12-release  64bit) is ready\n\
{total} session(s) since startup\n\
{now} session(s) - peak {now}, last 5min {now} \n\
0 session(s) per Sec out of max 30, peak 0, last 5min 0 \n\
100 session(s) max\n\
min idle cpu 0.00/83.33\n\
Current Stack Size/Max 240K/8192K\n",
        s / 86_400,
        s / 3600 % 24,
        s / 60 % 60,
        s % 60,
        up.subsec_millis(),
        up.subsec_micros() % 1000,
    )
}

const HTTP_GET_FAILED: &str = "-ERR http_get Command not found!\n";

/// The first half of mod_http_cache's `http_get`, taken in command order: what the cache
/// says about the URL (and the claim of its download).
pub(crate) enum HttpStep {
    Answer(String),
    Wait(tokio::sync::watch::Receiver<Option<Option<String>>>),
    Fetch {
        url: String,
        done: tokio::sync::watch::Sender<Option<Option<String>>>,
        n: usize,
    },
}

/// mod_http_cache's `http_get [{…}]<url>`: the path of the cached copy (no newline; a cache
/// hit answers the same path). A failed fetch answers as FreeSWITCH's event socket reports any
/// failing API; a `{prefetch=true}` request for a URL still downloading answers `download`,
/// one without prefetch waits for that download (spec §2.2, capture 2 lines 180–190).
pub(crate) fn http_get_begin(shared: &Shared, arg: &str) -> HttpStep {
    use crate::HttpEntry;
    let (opts, url) = match arg.strip_prefix('{') {
        Some(rest) => rest.split_once('}').unwrap_or(("", "")),
        None => ("", arg),
    };
    let url = url.trim();
    let prefetch = opts
        .split(',')
        .any(|o| o.trim().eq_ignore_ascii_case("prefetch=true"));
    if url.is_empty() {
        return HttpStep::Answer(HTTP_GET_FAILED.into());
    }
    let Ok(mut cache) = shared.http_cache.lock() else {
        return HttpStep::Answer(HTTP_GET_FAILED.into());
    };
    match cache.get(url) {
        Some(HttpEntry::Ready(p)) if p.is_file() => {
            HttpStep::Answer(p.to_string_lossy().into_owned())
        }
        Some(HttpEntry::Downloading(_)) if prefetch => HttpStep::Answer("download".into()),
        Some(HttpEntry::Downloading(rx)) => HttpStep::Wait(rx.clone()),
        _ => {
            let done = tokio::sync::watch::Sender::new(None::<Option<String>>);
            cache.insert(url.to_string(), HttpEntry::Downloading(done.subscribe()));
            HttpStep::Fetch {
                url: url.to_string(),
                done,
                n: cache.len(),
            }
        }
    }
}

/// The second half of `http_get`: the answer.
pub(crate) async fn http_get_end(shared: &Shared, step: HttpStep) -> String {
    use crate::HttpEntry;
    let (url, done, n) = match step {
        HttpStep::Answer(a) => return a,
        HttpStep::Wait(mut rx) => {
            let got = rx
                .wait_for(|r| r.is_some())
                .await
                .ok()
                .and_then(|r| r.clone().flatten());
            return got.unwrap_or_else(|| HTTP_GET_FAILED.into());
        }
        HttpStep::Fetch { url, done, n } => (url, done, n),
    };
    let got = fetch(shared, &url, n).await;
    if let Ok(mut cache) = shared.http_cache.lock() {
        match &got {
            Some(p) => cache.insert(url.clone(), HttpEntry::Ready(p.into())),
            None => cache.remove(&url),
        };
    }
    done.send_replace(Some(got.clone()));
    got.unwrap_or_else(|| HTTP_GET_FAILED.into())
}

/// Downloads `url` into the cache; the path, or `None` on any failure.
async fn fetch(shared: &Shared, url: &str, n: usize) -> Option<String> {
    let resp = match shared.http.get(url).send().await {
        Ok(r) if r.status().as_u16() == 200 => r,
        Ok(r) => {
            tracing::debug!(url, status = %r.status(), "fs-standin: http_get failed");
            return None;
        }
        Err(e) => {
            tracing::debug!(url, error = %e, "fs-standin: http_get failed");
            return None;
        }
    };
    let bytes = resp.bytes().await.ok()?;
    let ext = url
        .rsplit('/')
        .next()
        .and_then(|f| f.rsplit_once('.'))
        .map(|(_, e)| e)
        .filter(|e| !e.is_empty() && e.len() <= 5 && e.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or("bin");
    let dir = shared.config.cache_dir.join(format!("{:02}", n % 100));
    let path = dir.join(format!("{}.{ext}", crate::new_uuid()));
    tokio::fs::create_dir_all(&dir).await.ok()?;
    tokio::fs::write(&path, &bytes).await.ok()?;
    Some(path.to_string_lossy().into_owned())
}
