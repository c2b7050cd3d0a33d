//! One SMTP session of fax_smtp, generic over the byte stream (a TCP socket, a TLS stream
//! after STARTTLS, or an in-memory duplex in tests). The session owns the protocol: EHLO/HELO,
//! STARTTLS, AUTH PLAIN/LOGIN, MAIL/RCPT/DATA with pipelining, RSET, limits and timeouts;
//! decisions about recipients and messages belong to a [`Backend`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::framing::{DataDecoder, Line, discard_line, take_line};
use super::reply::Reply;
use super::starttls::{Conn, StartTls};

/// Who may use AUTH, and whether mail needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// AUTH is not offered.
    Off,
    /// AUTH is offered; unauthenticated mail is judged by the faxbox rules alone.
    Optional,
    /// Every transaction needs AUTH first (`530 5.7.0`).
    Required,
}

/// Limits and behaviour of sessions (from `[smtp]` and `system_config.fax`).
#[derive(Clone)]
pub struct SessionConfig {
    /// Name in the greeting and EHLO reply.
    pub hostname: String,
    /// `smtp_max_msg_size`: advertised as SIZE, enforced on DATA.
    pub max_msg_size: u64,
    /// Longest command line, bytes (RFC 5321 asks for 512; some clients send more).
    pub max_line: usize,
    /// Recipients per transaction; beyond, `452 4.5.3`.
    pub max_recipients: usize,
    /// Error replies before `421 4.7.0` closes the session.
    pub max_errors: u32,
    /// Wait for one complete command line (RFC 5321 §4.5.3.2: at least 5 minutes).
    pub command_timeout: Duration,
    /// The whole DATA phase, up to the final dot.
    pub data_timeout: Duration,
    /// The whole session.
    pub session_timeout: Duration,
    /// STARTTLS when set.
    pub tls: Option<StartTls>,
    pub auth: AuthMode,
    /// Allow AUTH before STARTTLS (a LAN listener for scanners without TLS).
    pub auth_without_tls: bool,
}

impl SessionConfig {
    /// Defaults for tests and tools: RFC timeouts, 10 MB, no TLS, no AUTH.
    pub fn new(hostname: &str, max_msg_size: u64) -> Self {
        Self {
            hostname: hostname.to_string(),
            max_msg_size,
            max_line: 2048,
            max_recipients: 100,
            max_errors: 20,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            session_timeout: Duration::from_secs(1800),
            tls: None,
            auth: AuthMode::Off,
            auth_without_tls: false,
        }
    }
}

/// What the backend knows of the transaction when it decides.
#[derive(Clone, Debug, Default)]
pub struct Envelope {
    pub peer: Option<IpAddr>,
    pub helo: String,
    pub tls: bool,
    /// The authenticated user (as the backend named it).
    pub user: Option<String>,
    /// The reverse path, lower-cased; `Some("")` is the null sender `<>`.
    pub sender: Option<String>,
}

/// Recipient and message decisions of fax_smtp (implemented on the store in
/// [`super::service`], and by simple fakes in protocol tests).
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// A recipient accepted at RCPT, kept for DATA.
    type Rcpt: Send + Sync + Clone + 'static;

    /// Checks AUTH credentials; `Ok(Some(name))` when they are good.
    async fn authenticate(&self, user: &str, password: &str) -> Result<Option<String>, Reply>;

    /// Accepts or refuses one RCPT (`accepted`: the transaction's recipients so far).
    async fn recipient(
        &self,
        env: &Envelope,
        accepted: &[Self::Rcpt],
        address: &str,
    ) -> Result<Self::Rcpt, Reply>;

    /// Decides on a received message before the final reply: the reply is 250 only when
    /// every fax of it is queued.
    async fn deliver(&self, env: &Envelope, rcpts: &[Self::Rcpt], message: Vec<u8>) -> Reply;

    /// A message the session refused itself after DATA (too large, smuggling): for the log.
    async fn refused(&self, env: &Envelope, rcpts: &[Self::Rcpt], reply: &Reply);
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Quit,
    Closed,
    Timeout,
    TooManyErrors,
    Shutdown,
    /// A TLS ClientHello on the plaintext port.
    ImplicitTls,
    TlsFailed,
    Io,
}

/// Why reading stopped.
enum ReadErr {
    End(End),
}

/// Bytes read at a time while waiting for commands, and while receiving a message.
const IDLE_READ: usize = 1024;
const DATA_READ: usize = 32 * 1024;

/// The state of one session.
struct Session<S, B: Backend> {
    conn: Conn<S>,
    cfg: Arc<SessionConfig>,
    backend: Arc<B>,
    shutdown: watch::Receiver<bool>,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    session_deadline: Instant,
    errors: u32,
    env: Envelope,
    /// HELO/EHLO seen (since the start or STARTTLS).
    greeted: bool,
    /// MAIL given in this transaction.
    in_mail: bool,
    rcpts: Vec<B::Rcpt>,
    /// RCPTs refused in this transaction (for the DATA reply).
    refused_rcpts: usize,
    first_read: bool,
}

/// Runs one session to its end. `shutdown` turning `true` ends the session at its next
/// command wait with `421` (a message being received is finished first).
pub async fn run<S, B>(
    stream: S,
    peer: Option<IpAddr>,
    cfg: Arc<SessionConfig>,
    backend: Arc<B>,
    shutdown: watch::Receiver<bool>,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    B: Backend,
{
    let session_deadline = Instant::now() + cfg.session_timeout;
    let mut s = Session {
        conn: Conn::Plain(stream),
        cfg,
        backend,
        shutdown,
        inbuf: Vec::with_capacity(IDLE_READ),
        outbuf: Vec::with_capacity(512),
        session_deadline,
        errors: 0,
        env: Envelope {
            peer,
            ..Default::default()
        },
        greeted: false,
        in_mail: false,
        rcpts: Vec::new(),
        refused_rcpts: 0,
        first_read: true,
    };
    let end = s.serve().await;
    let _ = s.flush().await;
    let _ = s.conn.shutdown().await;
    end
}

/// A command's verb (upper-cased) and the rest of its line.
fn split_command(line: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    match text.split_once(' ') {
        Some((v, rest)) => (v.to_ascii_uppercase(), rest.trim_start().to_string()),
        None => (text.to_ascii_uppercase(), String::new()),
    }
}

/// A `FROM:<path> params` / `TO:<path> params` argument: the path (without brackets) and
/// the parameters. Accepts a space after the colon and a missing pair of brackets.
pub fn parse_path(arg: &str, keyword: &str) -> Option<(String, Vec<String>)> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    let (path, params) = if let Some(r) = rest.strip_prefix('<') {
        let close = r.find('>')?;
        (r[..close].to_string(), &r[close + 1..])
    } else {
        match rest.split_once(' ') {
            Some((p, more)) => (p.to_string(), more),
            None => (rest.to_string(), ""),
        }
    };
    let params = params.split_whitespace().map(str::to_string).collect();
    Some((path, params))
}

impl<S, B> Session<S, B>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    B: Backend,
{
    fn reply(&mut self, r: Reply) {
        if r.code >= 500 {
            self.errors += 1;
        }
        r.render(&mut self.outbuf);
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.outbuf.is_empty() {
            self.conn.write_all(&self.outbuf).await?;
            self.outbuf.clear();
        }
        self.conn.flush().await
    }

    /// Reads more bytes into the input buffer before `deadline`; in command waits
    /// (`idle`), a shutdown ends the session.
    async fn read_more(&mut self, deadline: Instant, idle: bool) -> Result<(), ReadErr> {
        if self.flush().await.is_err() {
            return Err(ReadErr::End(End::Io));
        }
        let deadline = deadline.min(self.session_deadline);
        // Read straight into the input buffer: an idle session holds a small buffer, a
        // message in flight a larger one.
        let before = self.inbuf.len();
        self.inbuf.reserve(if idle { IDLE_READ } else { DATA_READ });
        let mut shutdown = self.shutdown.clone();
        if idle && *shutdown.borrow() {
            return Err(ReadErr::End(End::Shutdown));
        }
        let read = tokio::time::timeout_at(deadline, self.conn.read_buf(&mut self.inbuf));
        let n = if idle {
            tokio::select! {
                r = read => r,
                _ = shutdown.changed() => return Err(ReadErr::End(End::Shutdown)),
            }
        } else {
            read.await
        };
        match n {
            Err(_) => Err(ReadErr::End(End::Timeout)),
            Ok(Err(_)) => Err(ReadErr::End(End::Io)),
            Ok(Ok(0)) => Err(ReadErr::End(End::Closed)),
            Ok(Ok(_)) => {
                if self.first_read && self.inbuf[before..].starts_with(&[0x16, 0x03]) {
                    return Err(ReadErr::End(End::ImplicitTls));
                }
                self.first_read = false;
                Ok(())
            }
        }
    }

    /// The next command line (answering over-long ones with `500 5.5.2`).
    async fn read_line(&mut self) -> Result<Vec<u8>, ReadErr> {
        let deadline = Instant::now() + self.cfg.command_timeout;
        loop {
            match take_line(&mut self.inbuf, self.cfg.max_line) {
                Line::Complete(l) => return Ok(l),
                Line::TooLong => {
                    self.reply(Reply::line_too_long());
                    while !discard_line(&mut self.inbuf) {
                        self.read_more(deadline, true).await?;
                    }
                    self.check_errors()?;
                }
                Line::Partial => self.read_more(deadline, true).await?,
            }
        }
    }

    fn check_errors(&mut self) -> Result<(), ReadErr> {
        if self.errors >= self.cfg.max_errors {
            Err(ReadErr::End(End::TooManyErrors))
        } else {
            Ok(())
        }
    }

    fn reset_transaction(&mut self) {
        self.in_mail = false;
        self.env.sender = None;
        self.rcpts.clear();
        self.refused_rcpts = 0;
    }

    async fn serve(&mut self) -> End {
        self.reply(Reply::greeting(&self.cfg.hostname));
        loop {
            let line = match self.read_line().await {
                Ok(l) => l,
                Err(ReadErr::End(end)) => return self.closing(end),
            };
            match self.command(&line).await {
                Ok(None) => {}
                Ok(Some(end)) => return end,
                Err(ReadErr::End(end)) => return self.closing(end),
            }
            if let Err(ReadErr::End(end)) = self.check_errors() {
                return self.closing(end);
            }
        }
    }

    /// The last words of a session that ends without QUIT.
    fn closing(&mut self, end: End) -> End {
        match end {
            End::Timeout => self.reply(Reply::timeout(&self.cfg.hostname)),
            End::TooManyErrors => self.reply(Reply::too_many_errors()),
            End::Shutdown => self.reply(Reply::shutting_down(&self.cfg.hostname)),
            End::ImplicitTls => tracing::info!(
                peer = ?self.env.peer,
                "smtp: a TLS ClientHello arrived on the STARTTLS port (client set to implicit TLS); closed"
            ),
            _ => {}
        }
        end
    }

    async fn command(&mut self, line: &[u8]) -> Result<Option<End>, ReadErr> {
        let (verb, arg) = split_command(line);
        match verb.as_str() {
            "EHLO" | "HELO" => self.helo(&verb, &arg),
            "MAIL" => self.mail(&arg),
            "RCPT" => self.rcpt(&arg).await?,
            "DATA" => return self.data().await.map(|_| None),
            "RSET" => {
                self.reset_transaction();
                self.reply(Reply::ok());
            }
            "NOOP" => self.reply(Reply::ok()),
            "QUIT" => {
                self.reply(Reply::bye());
                return Ok(Some(End::Quit));
            }
            "VRFY" => self.reply(Reply::vrfy()),
            "STARTTLS" => return self.starttls(&arg).await,
            "AUTH" => return self.auth(&arg).await.map(|_| None),
            "BDAT" => self.reply(Reply::not_implemented("BDAT (CHUNKING)")),
            "EXPN" | "TURN" | "ETRN" | "HELP" => self.reply(Reply::not_implemented(&verb)),
            _ => self.reply(Reply::unrecognised(&verb)),
        }
        Ok(None)
    }

    fn helo(&mut self, verb: &str, arg: &str) {
        if arg.is_empty() {
            return self.reply(Reply::syntax("HELO/EHLO needs a host name"));
        }
        self.reset_transaction();
        self.greeted = true;
        self.env.helo = arg.chars().take(255).collect();
        let host = self.cfg.hostname.clone();
        if verb == "HELO" {
            return self.reply(Reply::new(250, None, host));
        }
        let mut lines = vec![
            format!("{host} greets {}", self.env.helo),
            format!("SIZE {}", self.cfg.max_msg_size),
            "PIPELINING".into(),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if self.cfg.tls.is_some() && !self.env.tls {
            lines.push("STARTTLS".into());
        }
        if self.auth_offered() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        self.reply(Reply {
            code: 250,
            enhanced: None,
            lines,
        });
    }

    fn auth_offered(&self) -> bool {
        self.cfg.auth != AuthMode::Off && (self.env.tls || self.cfg.auth_without_tls)
    }

    fn mail(&mut self, arg: &str) {
        if !self.greeted {
            return self.reply(Reply::bad_sequence("send HELO or EHLO first"));
        }
        if self.in_mail {
            return self.reply(Reply::bad_sequence("nested MAIL command"));
        }
        if self.cfg.auth == AuthMode::Required && self.env.user.is_none() {
            return self.reply(Reply::auth_required());
        }
        let Some((path, params)) = parse_path(arg, "FROM:") else {
            return self.reply(Reply::syntax("syntax: MAIL FROM:<address>"));
        };
        if !path.is_ascii() {
            return self.reply(Reply::non_ascii_address());
        }
        for p in &params {
            let (k, v) = p.split_once('=').unwrap_or((p.as_str(), ""));
            match k.to_ascii_uppercase().as_str() {
                "SIZE" => match v.parse::<u64>() {
                    Ok(n) if n > self.cfg.max_msg_size => {
                        return self.reply(Reply::size_exceeded(self.cfg.max_msg_size));
                    }
                    Ok(_) => {}
                    Err(_) => return self.reply(Reply::syntax("bad SIZE parameter")),
                },
                "BODY" if v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME") => {}
                // RFC 4954: the submitter's identity; faxd relies on its own AUTH.
                "AUTH" => {}
                _ => return self.reply(Reply::unknown_parameter(p)),
            }
        }
        // A source route (`@a,@b:user@c`) is reduced to its mailbox.
        let path = match path.rsplit_once(':') {
            Some((route, mailbox)) if route.starts_with('@') => mailbox.to_string(),
            _ => path,
        };
        self.in_mail = true;
        self.env.sender = Some(path.to_ascii_lowercase());
        self.reply(Reply::sender_ok());
    }

    async fn rcpt(&mut self, arg: &str) -> Result<(), ReadErr> {
        if !self.in_mail {
            self.reply(Reply::bad_sequence("need MAIL before RCPT"));
            return Ok(());
        }
        let Some((path, params)) = parse_path(arg, "TO:") else {
            self.reply(Reply::syntax("syntax: RCPT TO:<address>"));
            return Ok(());
        };
        if let Some(p) = params.first() {
            self.reply(Reply::unknown_parameter(p));
            return Ok(());
        }
        if !path.is_ascii() {
            self.reply(Reply::non_ascii_address());
            return Ok(());
        }
        if self.rcpts.len() >= self.cfg.max_recipients {
            self.reply(Reply::too_many_recipients());
            return Ok(());
        }
        if self.env.sender.as_deref() == Some("") {
            self.refused_rcpts += 1;
            self.reply(Reply::null_sender());
            return Ok(());
        }
        match self.backend.recipient(&self.env, &self.rcpts, &path).await {
            Ok(r) => {
                self.rcpts.push(r);
                self.reply(Reply::recipient_ok(&path));
            }
            Err(reply) => {
                self.refused_rcpts += 1;
                self.reply(reply);
            }
        }
        Ok(())
    }

    async fn data(&mut self) -> Result<(), ReadErr> {
        if !self.in_mail {
            self.reply(Reply::bad_sequence("need MAIL before DATA"));
            return Ok(());
        }
        if self.rcpts.is_empty() {
            let r = if self.refused_rcpts > 0 {
                Reply::no_valid_recipients()
            } else {
                Reply::bad_sequence("need RCPT before DATA")
            };
            self.reply(r);
            return Ok(());
        }
        self.reply(Reply::start_data());
        let deadline = Instant::now() + self.cfg.data_timeout;
        let max = usize::try_from(self.cfg.max_msg_size).unwrap_or(usize::MAX);
        let mut decoder = DataDecoder::new(max);
        let decoded = loop {
            let (n, done) = decoder.feed(&self.inbuf);
            self.inbuf.drain(..n);
            if let Some(d) = done {
                break d;
            }
            self.read_more(deadline, false).await?;
        };
        let rcpts = std::mem::take(&mut self.rcpts);
        let env = self.env.clone();
        let reply = if decoded.overflow {
            let r = Reply::size_exceeded(self.cfg.max_msg_size);
            self.backend.refused(&env, &rcpts, &r).await;
            r
        } else if decoded.smuggling {
            let r = Reply::smuggling();
            self.backend.refused(&env, &rcpts, &r).await;
            r
        } else {
            self.backend.deliver(&env, &rcpts, decoded.message).await
        };
        self.reset_transaction();
        // The buffers of a large message are not kept by an idle session.
        self.inbuf.shrink_to(IDLE_READ);
        // A refused message is the client's answer, not a protocol error: it does not count
        // towards the error limit.
        reply.render(&mut self.outbuf);
        Ok(())
    }

    async fn starttls(&mut self, arg: &str) -> Result<Option<End>, ReadErr> {
        let Some(tls) = self.cfg.tls.clone() else {
            self.reply(Reply::tls_unavailable());
            return Ok(None);
        };
        if self.env.tls {
            self.reply(Reply::bad_sequence("TLS already active"));
            return Ok(None);
        }
        if !arg.is_empty() {
            self.reply(Reply::syntax("STARTTLS takes no parameters"));
            return Ok(None);
        }
        self.reply(Reply::tls_ready());
        if self.flush().await.is_err() {
            return Ok(Some(End::Io));
        }
        // Plaintext sent after STARTTLS is never executed inside TLS (RFC 3207 §4.1).
        self.inbuf.clear();
        let Conn::Plain(plain) = std::mem::replace(&mut self.conn, Conn::Upgrading) else {
            return Ok(Some(End::TlsFailed));
        };
        let deadline = Instant::now() + self.cfg.command_timeout;
        match tokio::time::timeout_at(deadline, tls.accept(plain)).await {
            Ok(Ok(tls)) => {
                tracing::debug!(peer = ?self.env.peer, tls = %tls.describe(), "smtp: TLS on");
                self.conn = tls;
                self.env.tls = true;
                self.env.user = None;
                self.greeted = false;
                self.reset_transaction();
                Ok(None)
            }
            Ok(Err(e)) => {
                tracing::info!(peer = ?self.env.peer, error = %e, "smtp: TLS handshake failed");
                Ok(Some(End::TlsFailed))
            }
            Err(_) => Ok(Some(End::Timeout)),
        }
    }

    /// One base64 line of an AUTH exchange (`*` cancels).
    async fn auth_line(&mut self, prompt: &str) -> Result<Option<String>, ReadErr> {
        self.reply(Reply::auth_challenge(prompt));
        let line = self.read_line().await?;
        if line == b"*" {
            return Ok(None);
        }
        Ok(decode_b64(&line))
    }

    async fn auth(&mut self, arg: &str) -> Result<(), ReadErr> {
        if self.cfg.auth == AuthMode::Off {
            self.reply(Reply::not_implemented("AUTH"));
            return Ok(());
        }
        if !self.env.tls && !self.cfg.auth_without_tls {
            self.reply(Reply::auth_needs_tls());
            return Ok(());
        }
        if self.env.user.is_some() || self.in_mail {
            self.reply(Reply::bad_sequence(
                "already authenticated or inside a transaction",
            ));
            return Ok(());
        }
        let mut words = arg.split_whitespace();
        let mech = words.next().unwrap_or_default().to_ascii_uppercase();
        let initial = words.next().map(str::to_string);
        let creds = match mech.as_str() {
            "PLAIN" => {
                let ir = match initial {
                    Some(i) if i == "=" => Some(String::new()),
                    Some(i) => decode_b64(i.as_bytes()),
                    None => self.auth_line("").await?,
                };
                ir.and_then(|s| {
                    let mut parts = s.split('\0');
                    let _authzid = parts.next()?;
                    let user = parts.next()?.to_string();
                    let pass = parts.next()?.to_string();
                    Some((user, pass))
                })
            }
            "LOGIN" => {
                let user = match initial {
                    Some(i) => decode_b64(i.as_bytes()),
                    None => self.auth_line("VXNlcm5hbWU6").await?,
                };
                match user {
                    Some(u) => self.auth_line("UGFzc3dvcmQ6").await?.map(|p| (u, p)),
                    None => None,
                }
            }
            _ => {
                self.reply(Reply::auth_mechanism());
                return Ok(());
            }
        };
        let Some((user, pass)) = creds else {
            self.reply(Reply::auth_cancelled());
            return Ok(());
        };
        match self.backend.authenticate(&user, &pass).await {
            Ok(Some(name)) => {
                self.env.user = Some(name);
                self.reply(Reply::auth_ok());
            }
            Ok(None) => self.reply(Reply::auth_failed()),
            Err(r) => self.reply(r),
        }
        Ok(())
    }
}

fn decode_b64(line: &[u8]) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(line.trim_ascii())
        .ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_params() {
        assert_eq!(
            parse_path("FROM:<a@b.c> SIZE=10 BODY=8BITMIME", "FROM:"),
            Some((
                "a@b.c".into(),
                vec!["SIZE=10".into(), "BODY=8BITMIME".into()]
            ))
        );
        assert_eq!(
            parse_path("from: <a@b>", "FROM:"),
            Some(("a@b".into(), vec![]))
        );
        assert_eq!(parse_path("to:x@y", "TO:"), Some(("x@y".into(), vec![])));
        assert_eq!(
            parse_path("FROM:<>", "FROM:"),
            Some((String::new(), vec![]))
        );
        assert_eq!(parse_path("FRM:<a>", "FROM:"), None);
        assert_eq!(parse_path("FROM:<a", "FROM:"), None);
    }
}
