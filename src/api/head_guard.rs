//! The client connection as faxd's HTTP servers read it. It watches the request lines as they
//! arrive: a request target of [`MAX_TARGET`] bytes or more cannot be represented by the HTTP
//! layer, which would drop the request with a bare `400` and no body. Such a request is answered
//! here instead, `414` with Kazoo's error envelope, once its head has been read (so the answer
//! is not lost to a reset), and the connection is closed.
//!
//! The scan is a small state machine over every byte read: a line that starts with an HTTP
//! method faxd serves, then a space, then [`MAX_TARGET`] bytes without white space. A body does
//! not trip it unless it holds such a line, which no document or JSON field of a fax carries.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Request targets of this many bytes or more are answered `414`: the longest URI the HTTP
/// layer represents is one byte less.
pub const MAX_TARGET: usize = 65_535;
/// Bytes of an over-long head read and dropped at most before the answer is sent anyway.
const MAX_DRAIN: usize = 1 << 20;
/// Methods faxd serves; a line starting with another word is not a request line.
const METHODS: [&[u8]; 7] = [
    b"GET", b"PUT", b"POST", b"PATCH", b"DELETE", b"HEAD", b"OPTIONS",
];

/// Where the scan stands in the bytes read so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scan {
    /// At the start of a line.
    LineStart,
    /// In the first word of a line: its bytes so far (at most 7, the longest method).
    Method([u8; 7], usize),
    /// In the request target after a method: its length so far.
    Target(usize),
    /// Elsewhere in a line.
    Other,
}

/// Scans request lines; `feed` says where an over-long one starts.
#[derive(Clone, Debug)]
pub struct LineScan {
    state: Scan,
    /// Bytes fed so far.
    pos: u64,
    /// Where the current line started.
    line_start: u64,
}

impl Default for LineScan {
    fn default() -> Self {
        Self {
            state: Scan::LineStart,
            pos: 0,
            line_start: 0,
        }
    }
}

impl LineScan {
    /// Feeds bytes read from the client. Once a request target reaches [`MAX_TARGET`]:
    /// `Some(n)`, where the first `n` bytes of `bytes` come before its line (0 when the line
    /// started in an earlier read).
    pub fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        let base = self.pos;
        for (i, &b) in bytes.iter().enumerate() {
            let at = base + i as u64;
            self.state = match self.state {
                _ if b == b'\n' => {
                    self.line_start = at + 1;
                    Scan::LineStart
                }
                Scan::LineStart | Scan::Method(..) if b.is_ascii_uppercase() => {
                    let (mut word, len) = match self.state {
                        Scan::Method(word, len) => (word, len),
                        _ => ([0u8; 7], 0),
                    };
                    if len == word.len() {
                        Scan::Other
                    } else {
                        word[len] = b;
                        Scan::Method(word, len + 1)
                    }
                }
                Scan::Method(word, len) if b == b' ' && METHODS.contains(&&word[..len]) => {
                    Scan::Target(0)
                }
                Scan::Target(len) if b > b' ' && b != 0x7f => {
                    if len + 1 >= MAX_TARGET {
                        self.pos = at + 1;
                        return Some(self.line_start.saturating_sub(base) as usize);
                    }
                    Scan::Target(len + 1)
                }
                _ => Scan::Other,
            };
        }
        self.pos = base + bytes.len() as u64;
        None
    }
}

/// What the connection is doing.
#[derive(Debug)]
enum Phase {
    /// Passing bytes both ways.
    Serving,
    /// An over-long target was seen: the rest of its head is read and dropped (`tail` holds
    /// the last bytes, to find the blank line that ends it; `drained` counts them). The HTTP
    /// layer still answers the requests before it.
    Draining { tail: [u8; 3], drained: usize },
    /// The head is read; the HTTP layer reads end-of-file, finishes what it was answering and
    /// shuts the connection down, which sends the answer.
    Drained,
    /// Sending the answer (`at` bytes of `out` are sent).
    Answering { out: Vec<u8>, at: usize },
    /// The answer is sent: writes are dropped.
    Answered,
}

/// A client connection of an HTTP server, guarded as the module says.
pub struct Guarded {
    io: TcpStream,
    scan: LineScan,
    phase: Phase,
    node: Arc<str>,
}

impl Guarded {
    pub fn new(io: TcpStream, node: Arc<str>) -> Self {
        Self {
            io,
            scan: LineScan::default(),
            phase: Phase::Serving,
            node,
        }
    }

    /// The TCP connection.
    pub fn stream(&self) -> &TcpStream {
        &self.io
    }

    /// Reads and drops the rest of the over-long head; ready when it has ended (or the
    /// client closed, or [`MAX_DRAIN`] bytes went by).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut chunk = [0u8; 8192];
        loop {
            let Phase::Draining { tail, drained } = &mut self.phase else {
                return Poll::Ready(Ok(()));
            };
            let mut buf = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
            let got = buf.filled();
            if got.is_empty() {
                return Poll::Ready(Ok(()));
            }
            *drained += got.len();
            let (ended, rest) = head_end(tail, got);
            *tail = rest;
            if ended || *drained >= MAX_DRAIN {
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// The answer from [`Phase::Draining`] or [`Phase::Drained`] on: written, then the
    /// sending side is shut.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match &mut self.phase {
                Phase::Serving | Phase::Answered => return Poll::Ready(Ok(())),
                Phase::Draining { .. } | Phase::Drained => {
                    self.phase = Phase::Answering {
                        out: too_long(&self.node).into_bytes(),
                        at: 0,
                    };
                }
                Phase::Answering { out, at } => {
                    while *at < out.len() {
                        let n = ready!(Pin::new(&mut self.io).poll_write(cx, &out[*at..]))?;
                        if n == 0 {
                            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                        }
                        *at += n;
                    }
                    self.phase = Phase::Answered;
                }
            }
        }
    }
}

/// Whether the blank line ending a head is in `tail` (the last bytes seen) followed by
/// `got`; and the new tail.
fn head_end(tail: &[u8; 3], got: &[u8]) -> (bool, [u8; 3]) {
    let edge: Vec<u8> = tail
        .iter()
        .chain(&got[..got.len().min(3)])
        .copied()
        .collect();
    let ended =
        edge.windows(4).any(|w| w == b"\r\n\r\n") || got.windows(4).any(|w| w == b"\r\n\r\n");
    let joined: Vec<u8> = tail
        .iter()
        .chain(&got[got.len().saturating_sub(3)..])
        .copied()
        .collect();
    let mut rest = [0u8; 3];
    rest.copy_from_slice(&joined[joined.len() - 3..]);
    (ended, rest)
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match this.phase {
                Phase::Drained | Phase::Answering { .. } | Phase::Answered => {
                    return Poll::Ready(Ok(()));
                }
                Phase::Draining { .. } => {
                    ready!(this.poll_drain(cx))?;
                    this.phase = Phase::Drained;
                }
                Phase::Serving => {
                    let before = buf.filled().len();
                    ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
                    let Some(keep) = this.scan.feed(&buf.filled()[before..]) else {
                        return Poll::Ready(Ok(()));
                    };
                    tracing::debug!("request target of {MAX_TARGET} bytes or more refused");
                    // The HTTP layer gets the requests before the over-long line, not the line.
                    let (ended, tail) = head_end(&[0; 3], &buf.filled()[before + keep..]);
                    buf.set_filled(before + keep);
                    this.phase = if ended {
                        Phase::Drained
                    } else {
                        Phase::Draining { tail, drained: 0 }
                    };
                    if keep > 0 {
                        return Poll::Ready(Ok(()));
                    }
                }
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.phase {
            Phase::Answering { .. } | Phase::Answered => Poll::Ready(Ok(buf.len())),
            _ => Pin::new(&mut self.io).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The answers of the requests before the over-long one are out: now its own.
        ready!(self.poll_answer(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Drop for Guarded {
    /// Should the HTTP layer drop the connection without shutting it down, the answer still
    /// goes out if the socket takes it at once.
    fn drop(&mut self) {
        let out = match &self.phase {
            Phase::Draining { .. } | Phase::Drained => too_long(&self.node).into_bytes(),
            Phase::Answering { out, at } => out[*at..].to_vec(),
            Phase::Serving | Phase::Answered => return,
        };
        let _ = self.io.try_write(&out);
    }
}

/// The raw HTTP answer to an over-long request target: `414`, Kazoo's error envelope.
fn too_long(node: &str) -> String {
    super::admission::raw_error(
        node,
        "414 URI Too Long",
        "uri_too_long",
        &format!("the request target is {MAX_TARGET} bytes or longer"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(len: usize) -> Vec<u8> {
        let mut line = b"GET /v2/accounts/".to_vec();
        line.resize(line.len() + len, b'a');
        line
    }

    #[test]
    fn a_request_target_at_the_limit_is_seen_across_reads() {
        let line = target(MAX_TARGET);
        let mut scan = LineScan::default();
        let (a, b) = line.split_at(30_000);
        assert_eq!(scan.feed(a), None);
        // The line started in the earlier read.
        assert_eq!(scan.feed(b), Some(0));
    }

    #[test]
    fn a_target_one_byte_short_of_the_limit_passes() {
        // "/v2/accounts/" is 13 bytes of the target.
        let mut line = target(MAX_TARGET - 14);
        line.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(LineScan::default().feed(&line), None);
    }

    #[test]
    fn long_lines_that_are_not_request_lines_pass() {
        let mut scan = LineScan::default();
        // Base64 in a JSON body, a long word after an unknown first word, a header line.
        let mut body = b"{\"document\":\"".to_vec();
        body.resize(200_000, b'A');
        assert_eq!(scan.feed(&body), None);
        let mut words = b"\nDATA ".to_vec();
        words.resize(200_000, b'x');
        assert_eq!(scan.feed(&words), None);
        let mut header = b"\nX-Long: ".to_vec();
        header.resize(200_000, b'y');
        assert_eq!(scan.feed(&header), None);
        // A line of a later request on the same connection is watched as the first is; the
        // bytes before it are counted.
        let later = target(MAX_TARGET);
        assert_eq!(
            scan.feed(&[b"\r\n\r\n".as_slice(), &later].concat()),
            Some(4)
        );
    }

    #[test]
    fn the_blank_line_ending_a_head_is_found_across_reads() {
        assert_eq!(head_end(&[0; 3], b"a\r\n\r\nb"), (true, *b"\r\nb"));
        let (ended, tail) = head_end(&[0; 3], b"aaaa\r\n\r");
        assert!(!ended);
        assert_eq!(head_end(&tail, b"\nrest"), (true, *b"est"));
        assert_eq!(head_end(&[0; 3], b"x"), (false, [0, 0, b'x']));
    }

    #[test]
    fn the_answer_is_kazoos_envelope_with_414() {
        let answer = too_long("faxd@127.0.0.1");
        assert!(
            answer.starts_with("HTTP/1.1 414 URI Too Long\r\n"),
            "{answer}"
        );
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "414");
        assert_eq!(v["status"], "error");
        assert_eq!(v["message"], "uri_too_long");
    }
}
