//! Typed server frames (spec §1.1–§1.6): what FreeSWITCH writes on an event socket, by
//! `Content-Type`, with events parsed from their plain or json serialization and URL-encoded
//! values decoded where FreeSWITCH encodes them (plain event headers and the outbound
//! `connect` reply; envelope headers and json values are never encoded).

use super::frame::{self, RawFrame};
use super::urlenc;

/// Header list in wire order with case-insensitive lookup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The first header called `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Event serialization chosen with `event <format> …` (xml is not used by faxd).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventFormat {
    Plain,
    Json,
}

impl EventFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            EventFormat::Plain => "plain",
            EventFormat::Json => "json",
        }
    }
}

/// Why a framed message cannot be read as what its `Content-Type` says.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("plain event: {0}")]
    PlainEvent(#[from] frame::FrameError),
    #[error("plain event body of {length} bytes runs past the event ({available} left)")]
    EventBodyTooLong { length: usize, available: usize },
    #[error("json event: {0}")]
    JsonEvent(String),
}

/// A FreeSWITCH event: its headers (values decoded) and optional body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub format: EventFormat,
    /// Headers in wire order for plain events, by name for json ones. The event's own
    /// `Content-Length` (the body size) is not kept. Array headers read `ARRAY::a|:b` in both
    /// formats.
    pub headers: Headers,
    pub body: Option<String>,
}

impl Event {
    /// Parses a `text/event-plain` payload: a header block with URL-encoded values, then,
    /// when it has a `Content-Length`, that many bytes of body.
    pub fn from_plain(payload: &[u8]) -> Result<Event, MessageError> {
        let (block, rest) = split_block(payload);
        let raw = frame::parse_header_block(block)?;
        let mut headers = Vec::with_capacity(raw.len());
        let mut body_len = None;
        for (name, value) in raw {
            if name.eq_ignore_ascii_case("Content-Length") {
                let len = value.trim().parse::<usize>().map_err(|_| {
                    frame::FrameError::BadContentLength(value.chars().take(40).collect())
                })?;
                body_len = Some(len);
            } else {
                headers.push((name, urlenc::decode_owned(value)));
            }
        }
        let body = match body_len {
            None => None,
            Some(len) if len > rest.len() => {
                return Err(MessageError::EventBodyTooLong {
                    length: len,
                    available: rest.len(),
                });
            }
            Some(len) => Some(String::from_utf8_lossy(&rest[..len]).into_owned()),
        };
        Ok(Event {
            format: EventFormat::Plain,
            headers: Headers(headers),
            body,
        })
    }

    /// Parses a `text/event-json` payload: one flat object, values not encoded, the body
    /// under `_body`.
    pub fn from_json(payload: &[u8]) -> Result<Event, MessageError> {
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(payload).map_err(|e| MessageError::JsonEvent(e.to_string()))?;
        let mut headers = Vec::with_capacity(object.len());
        let mut body = None;
        for (name, value) in object {
            let text = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Array(items) => {
                    let items: Vec<String> = items.into_iter().map(json_scalar).collect();
                    format!("ARRAY::{}", items.join("|:"))
                }
                serde_json::Value::Null => continue,
                other => json_scalar(other),
            };
            if name == "_body" {
                body = Some(text);
            } else if !name.eq_ignore_ascii_case("Content-Length") {
                headers.push((name, text));
            }
        }
        Ok(Event {
            format: EventFormat::Json,
            headers: Headers(headers),
            body,
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// `Event-Name`, e.g. `BACKGROUND_JOB`, `CHANNEL_HANGUP_COMPLETE`, `CUSTOM`.
    pub fn name(&self) -> Option<&str> {
        self.header("Event-Name")
    }

    /// `Event-Subclass` of CUSTOM events, e.g. `spandsp::txfaxresult`.
    pub fn subclass(&self) -> Option<&str> {
        self.header("Event-Subclass")
    }

    /// `Job-UUID` of a BACKGROUND_JOB (the one given with `bgapi`).
    pub fn job_uuid(&self) -> Option<&str> {
        self.header("Job-UUID")
    }

    /// `Unique-ID`: the channel the event is about (match calls on this, never on a channel
    /// variable: a loopback B leg carries the originate's variables too).
    pub fn unique_id(&self) -> Option<&str> {
        self.header("Unique-ID")
    }

    /// The channel variable `name` (header `variable_<name>`).
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.strip_prefix("variable_") == Some(name))
            .map(|(_, v)| v)
    }

    /// `Event-Sequence`: the order of events (timestamps repeat).
    pub fn sequence(&self) -> Option<u64> {
        self.header("Event-Sequence")?.parse().ok()
    }

    /// The body read as an api result (BACKGROUND_JOB).
    pub fn job_outcome(&self) -> ApiOutcome<'_> {
        ApiOutcome::of(self.body.as_deref().unwrap_or(""))
    }
}

fn json_scalar(v: serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Splits at the blank line ending a header block: (block, what follows). Without a blank
/// line the whole payload is the block.
fn split_block(payload: &[u8]) -> (&[u8], &[u8]) {
    let mut after_newline = false;
    for (i, &b) in payload.iter().enumerate() {
        match b {
            b'\n' if after_newline => return (&payload[..i + 1], &payload[i + 1..]),
            b'\n' => after_newline = true,
            b'\r' => {}
            _ => after_newline = false,
        }
    }
    (payload, &[])
}

/// What an api command answered (an `api/response` body or a BACKGROUND_JOB body):
/// FreeSWITCH commands report failure as text starting with `-ERR` (or `-USAGE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiOutcome<'a> {
    /// `+OK <rest>`: the rest, e.g. the uuid of an answered originate.
    Ok(&'a str),
    /// `-ERR <rest>` or `-<rest>`: e.g. `USER_BUSY`, `http_get Command not found!`,
    /// `USAGE: <call url> …`.
    Err(&'a str),
    /// Any other output, e.g. the cached path `http_get` answers or a variable's value.
    Text(&'a str),
}

impl<'a> ApiOutcome<'a> {
    pub fn of(body: &'a str) -> Self {
        let line = body.strip_suffix('\n').unwrap_or(body);
        if let Some(rest) = line.strip_prefix("+OK") {
            ApiOutcome::Ok(rest.trim_start_matches(' '))
        } else if let Some(rest) = line.strip_prefix("-ERR") {
            ApiOutcome::Err(rest.trim_start_matches(' '))
        } else if let Some(rest) = line.strip_prefix('-') {
            ApiOutcome::Err(rest)
        } else {
            ApiOutcome::Text(body)
        }
    }
}

/// `command/reply`: the answer to every command except `api` (and the outbound `connect`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// `Reply-Text`, e.g. `+OK accepted`, `-ERR invalid`, or a `getvar` value.
    pub text: String,
    /// Every header of the reply (`Job-UUID` after `bgapi`, `Allowed-*` after `userauth`).
    pub headers: Headers,
}

impl Reply {
    pub fn is_ok(&self) -> bool {
        self.text.starts_with("+OK")
    }

    /// The error text after `-ERR `, if the command failed.
    pub fn error(&self) -> Option<&str> {
        self.text
            .strip_prefix("-ERR")
            .map(|rest| rest.trim_start_matches(' '))
    }

    /// `Job-UUID` of a `bgapi` reply.
    pub fn job_uuid(&self) -> Option<&str> {
        self.headers.get("Job-UUID")
    }
}

/// The reply to `connect` on an outbound socket: the controlled channel's CHANNEL_DATA,
/// written without envelope, and the socket's mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectReply {
    /// The channel data (Event-Name `CHANNEL_DATA`), `Unique-ID` and `variable_*` included.
    pub channel: Event,
    /// Decoded `Reply-Text` (`+OK\n`).
    pub reply_text: String,
    /// `Socket-Mode`: `async` or `static`.
    pub socket_mode: Option<String>,
    /// `Control`: `full` or `single-channel`.
    pub control: Option<String>,
}

/// `Content-Disposition` of a disconnect notice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// The connection is closing.
    Disconnect,
    /// The channel hung up; the socket lingers for the remaining events until `exit`.
    Linger,
    Other(String),
}

/// `text/disconnect-notice`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisconnectNotice {
    /// `None` on an inbound connection's goodbye (no header).
    pub disposition: Option<Disposition>,
    pub controlled_session_uuid: Option<String>,
    pub channel_name: Option<String>,
    /// `Linger-Time` in seconds, -1 = until `exit`.
    pub linger_time: Option<i64>,
    pub text: String,
}

impl DisconnectNotice {
    /// Whether the server keeps the connection open (a linger notice).
    pub fn lingers(&self) -> bool {
        self.disposition == Some(Disposition::Linger)
    }
}

/// `log/data`, after `log <level>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub level: Option<u8>,
    pub headers: Headers,
    pub text: String,
}

/// A server frame by type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// `auth/request`: the greeting of an inbound connection.
    AuthRequest,
    CommandReply(Reply),
    /// `api/response`: the command's output.
    ApiResponse(String),
    Event(Event),
    ConnectReply(ConnectReply),
    DisconnectNotice(DisconnectNotice),
    /// `text/rude-rejection`: the address is refused (then the server closes).
    RudeRejection(String),
    Log(LogLine),
    /// A content type faxd does not know (e.g. `text/event-xml`), kept as framed.
    Unknown(RawFrame),
}

impl Frame {
    /// Types a framed message. The only error is an event whose payload is not what its
    /// content type says; the stream itself stays usable.
    pub fn parse(raw: RawFrame) -> Result<Frame, MessageError> {
        let text = |body: &[u8]| String::from_utf8_lossy(body).into_owned();
        let content_type = raw.content_type().unwrap_or("").to_string();
        let frame = match content_type.as_str() {
            "auth/request" => Frame::AuthRequest,
            "command/reply" if raw.header("Event-Name").is_some() => {
                Frame::ConnectReply(connect_reply(raw))
            }
            "command/reply" => Frame::CommandReply(Reply {
                text: raw.header("Reply-Text").unwrap_or("").to_string(),
                headers: Headers(raw.headers),
            }),
            "api/response" => Frame::ApiResponse(text(&raw.body)),
            "text/event-plain" => Frame::Event(Event::from_plain(&raw.body)?),
            "text/event-json" => Frame::Event(Event::from_json(&raw.body)?),
            "text/disconnect-notice" => Frame::DisconnectNotice(DisconnectNotice {
                disposition: raw.header("Content-Disposition").map(|d| match d {
                    "disconnect" => Disposition::Disconnect,
                    "linger" => Disposition::Linger,
                    other => Disposition::Other(other.to_string()),
                }),
                controlled_session_uuid: raw.header("Controlled-Session-UUID").map(str::to_string),
                channel_name: raw.header("Channel-Name").map(str::to_string),
                linger_time: raw
                    .header("Linger-Time")
                    .and_then(|t| t.trim().parse().ok()),
                text: text(&raw.body),
            }),
            "text/rude-rejection" => Frame::RudeRejection(text(&raw.body)),
            "log/data" => Frame::Log(LogLine {
                level: raw.header("Log-Level").and_then(|l| l.trim().parse().ok()),
                text: text(&raw.body),
                headers: Headers(raw.headers),
            }),
            _ => Frame::Unknown(raw),
        };
        Ok(frame)
    }
}

/// The bare CHANNEL_DATA of the outbound `connect` reply: every value URL-encoded, the
/// reply's own four headers appended at the end.
fn connect_reply(raw: RawFrame) -> ConnectReply {
    let mut channel = Vec::with_capacity(raw.headers.len());
    let mut reply_text = String::new();
    let mut socket_mode = None;
    let mut control = None;
    for (name, value) in raw.headers {
        let value = urlenc::decode_owned(value);
        match name.as_str() {
            "Content-Type" => {}
            "Reply-Text" => reply_text = value,
            "Socket-Mode" => socket_mode = Some(value),
            "Control" => control = Some(value),
            _ => channel.push((name, value)),
        }
    }
    ConnectReply {
        channel: Event {
            format: EventFormat::Plain,
            headers: Headers(channel),
            body: None,
        },
        reply_text,
        socket_mode,
        control,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_frame(wire: &[u8]) -> Frame {
        let mut d = frame::Decoder::default();
        d.feed(wire);
        let raw = match d.next_frame() {
            Ok(Some(raw)) => raw,
            other => panic!("no frame: {other:?}"),
        };
        match Frame::parse(raw) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_plain_event_has_decoded_headers_and_its_body() {
        let inner = "Event-Name: BACKGROUND_JOB\nJob-UUID: j1\nJob-Command-Arg: a%20b%2Cc\nContent-Length: 15\n\n-ERR USER_BUSY\n";
        let wire = format!(
            "Content-Length: {}\nContent-Type: text/event-plain\n\n{inner}",
            inner.len()
        );
        let Frame::Event(e) = one_frame(wire.as_bytes()) else {
            panic!("not an event");
        };
        assert_eq!(e.name(), Some("BACKGROUND_JOB"));
        assert_eq!(e.job_uuid(), Some("j1"));
        assert_eq!(e.header("Job-Command-Arg"), Some("a b,c"));
        assert_eq!(e.header("Content-Length"), None);
        assert_eq!(e.job_outcome(), ApiOutcome::Err("USER_BUSY"));
    }

    #[test]
    fn a_body_longer_than_the_event_is_an_error() {
        assert!(matches!(
            Event::from_plain(b"Event-Name: X\nContent-Length: 9\n\nabc"),
            Err(MessageError::EventBodyTooLong {
                length: 9,
                available: 3
            })
        ));
        assert!(Event::from_json(b"[1]").is_err());
        assert!(Event::from_json(b"{\"a\":").is_err());
    }

    #[test]
    fn json_arrays_read_like_plain_arrays() {
        let e = Event::from_json(br#"{"Event-Name":"X","list":["a","b",3],"n":7,"_body":"hi"}"#)
            .expect("json");
        assert_eq!(e.header("list"), Some("ARRAY::a|:b|:3"));
        assert_eq!(e.header("n"), Some("7"));
        assert_eq!(e.body.as_deref(), Some("hi"));
    }

    #[test]
    fn api_outcomes() {
        assert_eq!(ApiOutcome::of("+OK abc\n"), ApiOutcome::Ok("abc"));
        assert_eq!(ApiOutcome::of("+OK\n"), ApiOutcome::Ok(""));
        assert_eq!(
            ApiOutcome::of("-ERR NO_ANSWER\n"),
            ApiOutcome::Err("NO_ANSWER")
        );
        assert_eq!(ApiOutcome::of("-USAGE: x\n"), ApiOutcome::Err("USAGE: x"));
        assert_eq!(
            ApiOutcome::of("/tmp/a.tiff"),
            ApiOutcome::Text("/tmp/a.tiff")
        );
    }

    #[test]
    fn unknown_content_types_are_kept() {
        assert!(matches!(
            one_frame(b"Content-Type: text/event-xml\nContent-Length: 2\n\n<>"),
            Frame::Unknown(raw) if raw.body == b"<>"
        ));
    }
}
