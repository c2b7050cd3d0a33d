//! The server side of the event socket's framing (spec §1.1–1.6): the frames FreeSWITCH
//! writes, byte for byte, and the reader of the commands a client writes.
//!
//! A command is a header block whose first line is the command itself, then `Name: value`
//! lines (taken raw, as FreeSWITCH does), then `Content-Length` bytes of body if that header
//! is present. Leading CR/LF are skipped and `\r\n\r\n` ends a block too.

use std::time::Duration;

use faxd::gateway::esl::frame::parse_header_block;
use faxd::gateway::esl::urlenc;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The 67-byte text of FreeSWITCH's goodbye notice.
pub const GOODBYE: &str = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";

/// Longest command header block accepted (FreeSWITCH: 10 MiB; nothing legitimate is near).
const MAX_BLOCK: usize = 1024 * 1024;
/// Largest command body (FreeSWITCH's `MAX_CONTENT_LENGTH`).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// `Content-Type: auth/request`, the greeting of an inbound connection.
pub fn auth_request() -> String {
    "Content-Type: auth/request\n\n".to_string()
}

/// A `command/reply` with its `Reply-Text` and extra headers.
pub fn reply(text: &str, extra: &[(&str, &str)]) -> String {
    let mut s = format!("Content-Type: command/reply\nReply-Text: {text}\n");
    for (n, v) in extra {
        s.push_str(&format!("{n}: {v}\n"));
    }
    s.push('\n');
    s
}

/// The reply to `bgapi`: `+OK Job-UUID: <uuid>` and the duplicated `Job-UUID` header.
pub fn bgapi_reply(job_uuid: &str) -> String {
    reply(
        &format!("+OK Job-UUID: {job_uuid}"),
        &[("Job-UUID", job_uuid)],
    )
}

/// An `api/response` carrying `body`.
pub fn api_response(body: &str) -> String {
    format!(
        "Content-Type: api/response\nContent-Length: {}\n\n{body}",
        body.len()
    )
}

/// The goodbye notice of an inbound connection (`exit`, wrong password).
pub fn goodbye() -> String {
    format!(
        "Content-Type: text/disconnect-notice\nContent-Length: {}\n\n{GOODBYE}",
        GOODBYE.len()
    )
}

/// The goodbye notice of an outbound socket that controlled `uuid`.
pub fn session_goodbye(uuid: &str) -> String {
    format!(
        "Content-Type: text/disconnect-notice\nControlled-Session-UUID: {uuid}\nContent-Disposition: disconnect\nContent-Length: {}\n\n{GOODBYE}",
        GOODBYE.len()
    )
}

/// The notice a lingering outbound socket gets when its channel hangs up.
pub fn linger_notice(uuid: &str, channel_name: &str) -> String {
    format!(
        "Content-Type: text/disconnect-notice\nControlled-Session-UUID: {uuid}\nContent-Disposition: linger\nChannel-Name: {channel_name}\nLinger-Time: -1\nContent-Length: 0\n\n"
    )
}

/// The plain serialization of an event (spec §1.2): `Name: <url-encoded value>` lines, no
/// header with an empty value, then `Content-Length` and the body if there is one, else a
/// blank line.
pub fn plain_payload(headers: &[(String, String)], body: Option<&str>) -> String {
    let mut s = String::with_capacity(4096);
    for (n, v) in headers {
        if v.is_empty() {
            continue;
        }
        s.push_str(n);
        s.push_str(": ");
        s.push_str(&urlenc::encode(v));
        s.push('\n');
    }
    match body {
        Some(b) => {
            s.push_str(&format!("Content-Length: {}\n\n", b.len()));
            s.push_str(b);
        }
        None => s.push('\n'),
    }
    s
}

/// The json serialization of an event: one flat object, values not URL-encoded, the body as
/// `Content-Length` and `_body` at the end.
pub fn json_payload(headers: &[(String, String)], body: Option<&str>) -> String {
    let mut m = serde_json::Map::new();
    for (n, v) in headers {
        if !v.is_empty() && !m.contains_key(n) {
            m.insert(n.clone(), serde_json::Value::String(v.clone()));
        }
    }
    if let Some(b) = body {
        m.insert(
            "Content-Length".into(),
            serde_json::Value::String(b.len().to_string()),
        );
        m.insert("_body".into(), serde_json::Value::String(b.to_string()));
    }
    serde_json::Value::Object(m).to_string()
}

/// An event payload in its envelope (`Content-Length` first).
pub fn event_envelope(payload: &str, json: bool) -> String {
    let ct = if json {
        "text/event-json"
    } else {
        "text/event-plain"
    };
    format!(
        "Content-Length: {}\nContent-Type: {ct}\n\n{payload}",
        payload.len()
    )
}

/// One command a client wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientCommand {
    /// The first line (`auth ClueCon`, `sendmsg`, ...).
    pub line: String,
    /// The following header lines, raw.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl ClientCommand {
    /// A header (case-insensitive, as `switch_event_get_header`).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why no command could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed")]
    Closed,
    #[error("no complete command within {0:?}")]
    Timeout(Duration),
    #[error("malformed command: {0}")]
    Garbage(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads commands from a client; bytes after a command stay buffered for the next one.
pub struct CommandReader<R> {
    io: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> CommandReader<R> {
    pub fn new(io: R) -> Self {
        Self {
            io,
            buf: Vec::new(),
        }
    }

    async fn fill(&mut self) -> Result<(), ReadError> {
        let mut chunk = [0u8; 8192];
        let n = self.io.read(&mut chunk).await?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// The next command, within `deadline`. Not cancel-safe across a partial command only in
    /// the sense that bytes read stay buffered: calling it again resumes.
    pub async fn next(&mut self, deadline: Duration) -> Result<ClientCommand, ReadError> {
        match tokio::time::timeout(deadline, self.next_inner()).await {
            Ok(r) => r,
            Err(_) => Err(ReadError::Timeout(deadline)),
        }
    }

    async fn next_inner(&mut self) -> Result<ClientCommand, ReadError> {
        loop {
            let skip = self
                .buf
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
                .unwrap_or(self.buf.len());
            self.buf.drain(..skip);
            // Nothing is taken out of the buffer before the whole command is in it, so a
            // read cancelled by `select!` loses nothing.
            if let Some(end) = block_end(&self.buf) {
                let mut cmd = parse_block(&self.buf[..end])?;
                let len = match cmd.header("Content-Length") {
                    Some(len) => len
                        .trim()
                        .parse::<usize>()
                        .map_err(|_| ReadError::Garbage(format!("Content-Length {len:?}")))?,
                    None => 0,
                };
                if len > MAX_BODY {
                    return Err(ReadError::Garbage(format!("body of {len} bytes")));
                }
                if self.buf.len() >= end + len {
                    let taken: Vec<u8> = self.buf.drain(..end + len).collect();
                    cmd.body = String::from_utf8_lossy(&taken[end..]).into_owned();
                    return Ok(cmd);
                }
            } else if self.buf.len() > MAX_BLOCK {
                return Err(ReadError::Garbage("header block too long".into()));
            }
            self.fill().await?;
        }
    }
}

/// Offset just past the blank line ending a header block: two `\n` with only `\r` between.
fn block_end(buf: &[u8]) -> Option<usize> {
    let mut after_newline = false;
    for (i, &b) in buf.iter().enumerate() {
        match b {
            b'\n' if after_newline => return Some(i + 1),
            b'\n' => after_newline = true,
            b'\r' => {}
            _ => after_newline = false,
        }
    }
    None
}

fn parse_block(block: &[u8]) -> Result<ClientCommand, ReadError> {
    let text = std::str::from_utf8(block)
        .map_err(|_| ReadError::Garbage("command is not UTF-8".into()))?;
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let line = first.trim_end_matches('\r').to_string();
    if line.is_empty() || line.bytes().any(|b| b < 0x20 && b != b'\t') {
        return Err(ReadError::Garbage(format!("command line {line:?}")));
    }
    let headers =
        parse_header_block(rest.as_bytes()).map_err(|e| ReadError::Garbage(e.to_string()))?;
    Ok(ClientCommand {
        line,
        headers,
        body: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_as_captured() {
        assert_eq!(goodbye().len(), 124);
        assert_eq!(GOODBYE.len(), 67);
        assert_eq!(
            bgapi_reply("afb6c398-1ebe-4ec3-b6ae-2a39d338737a"),
            "Content-Type: command/reply\nReply-Text: +OK Job-UUID: afb6c398-1ebe-4ec3-b6ae-2a39d338737a\nJob-UUID: afb6c398-1ebe-4ec3-b6ae-2a39d338737a\n\n"
        );
        assert_eq!(
            api_response("-ERR nosuchcmd Command not found!\n"),
            "Content-Type: api/response\nContent-Length: 34\n\n-ERR nosuchcmd Command not found!\n"
        );
    }

    #[tokio::test]
    async fn commands_are_read_with_headers_and_bodies() {
        let input: &[u8] = b"\r\nauth ClueCon\n\nsendmsg\r\ncall-command: execute\r\ncontent-length: 3\r\n\r\nabcapi status\n\n";
        let mut r = CommandReader::new(input);
        let d = Duration::from_secs(1);
        assert_eq!(r.next(d).await.unwrap().line, "auth ClueCon");
        let c = r.next(d).await.unwrap();
        assert_eq!(c.line, "sendmsg");
        assert_eq!(c.header("Call-Command"), Some("execute"));
        assert_eq!(c.body, "abc");
        assert_eq!(r.next(d).await.unwrap().line, "api status");
        assert!(matches!(r.next(d).await, Err(ReadError::Closed)));
        let mut g = CommandReader::new(&b"x\nno colon here\n\n"[..]);
        assert!(matches!(g.next(d).await, Err(ReadError::Garbage(_))));
    }
}
