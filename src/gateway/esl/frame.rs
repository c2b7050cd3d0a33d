//! ESL framing (spec §1.1): a frame is a header block of `Name: value` lines ended by an
//! empty line, then exactly `Content-Length` bytes of body when that header is present.
//! [`Decoder`] is incremental: feed it bytes as they arrive, take complete frames out.
//!
//! Like FreeSWITCH's own reader, the block ends at two `\n` with nothing but `\r` between
//! them (so `\r\n\r\n` ends it too) and CR/LF bytes before a frame are skipped. Header values
//! are kept raw here: which values are URL-encoded depends on the frame type
//! ([`message`](super::message) decodes them).
//!
//! Memory is bounded by [`Limits`]: a header block that grows past its limit without ending,
//! or a `Content-Length` above the body limit, is a [`FrameError`] as soon as it is seen (not
//! after buffering it). Framing cannot resynchronise after an error, so the decoder stays
//! failed and drops its buffer; the connection has to be closed.

/// Size bounds of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest header block, in bytes, blank line included.
    pub max_header_block: usize,
    /// Largest `Content-Length` accepted.
    pub max_body: usize,
}

impl Default for Limits {
    /// 256 KiB of headers (an envelope is under 200 bytes; the bare CHANNEL_DATA reply of the
    /// outbound `connect` is a few KiB and grows with the channel's variables) and 16 MiB of
    /// body (the bound FreeSWITCH puts on the bodies it reads; a busy node's `show channels`
    /// fits many times).
    fn default() -> Self {
        Self {
            max_header_block: 256 * 1024,
            max_body: 16 * 1024 * 1024,
        }
    }
}

/// Why the byte stream cannot be framed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("ESL header block longer than {limit} bytes")]
    HeaderBlockTooLong { limit: usize },
    #[error("ESL frame body of {length} bytes is over the {limit}-byte limit")]
    BodyTooLong { length: u64, limit: usize },
    #[error("ESL Content-Length is not a byte count: {0:?}")]
    BadContentLength(String),
    #[error("ESL header line without a colon: {0:?}")]
    BadHeaderLine(String),
}

/// One frame as framed: header lines in wire order (values raw) and the body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawFrame {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawFrame {
    /// The first header called `name` (ASCII case-insensitive, as FreeSWITCH compares).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header("Content-Type")
    }
}

#[derive(Debug)]
enum State {
    /// Looking for the end of a header block.
    Headers,
    /// Header block read; waiting for `len` bytes of body.
    Body {
        headers: Vec<(String, String)>,
        len: usize,
    },
}

/// Incremental frame decoder. Call [`Decoder::feed`] with whatever the socket returned, then
/// [`Decoder::next_frame`] until it answers `Ok(None)`. Bytes that belong to no complete frame
/// yet stay buffered: at most one frame's worth plus the last chunk fed.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    start: usize,
    /// Where the search for the end of the header block resumes.
    scan: usize,
    /// Whether the header block has started (leading CR/LF are skipped until then).
    in_block: bool,
    /// A `\n` was seen and nothing but `\r` since.
    after_newline: bool,
    state: State,
    failed: Option<FrameError>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Decoder {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            buf: Vec::new(),
            start: 0,
            scan: 0,
            in_block: false,
            after_newline: false,
            state: State::Headers,
            failed: None,
        }
    }

    /// Appends received bytes (ignored once the decoder has failed).
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scan -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that are not part of a returned frame yet.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether everything fed has been read and stopped between frames (nothing but CR/LF
    /// after the last frame): where a closed connection is a clean end, not a cut frame.
    pub fn at_frame_boundary(&self) -> bool {
        matches!(self.state, State::Headers) && !self.in_block && self.scan == self.buf.len()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed. After an error every
    /// call returns that error again.
    pub fn next_frame(&mut self) -> Result<Option<RawFrame>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.step() {
            Ok(frame) => Ok(frame),
            Err(e) => {
                self.failed = Some(e.clone());
                self.buf = Vec::new();
                self.start = 0;
                self.scan = 0;
                self.state = State::Headers;
                Err(e)
            }
        }
    }

    fn step(&mut self) -> Result<Option<RawFrame>, FrameError> {
        if let State::Headers = self.state {
            let Some(end) = self.find_block_end()? else {
                return Ok(None);
            };
            let headers = parse_header_block(&self.buf[self.start..end])?;
            self.start = end;
            self.scan = end;
            self.in_block = false;
            self.after_newline = false;
            let len = content_length(&headers)?;
            if len > self.limits.max_body as u64 {
                return Err(FrameError::BodyTooLong {
                    length: len,
                    limit: self.limits.max_body,
                });
            }
            if len == 0 {
                return Ok(Some(RawFrame {
                    headers,
                    body: Vec::new(),
                }));
            }
            // `len` fits in usize: it is at most `max_body`.
            self.state = State::Body {
                headers,
                len: len as usize,
            };
        }
        let State::Body { len, .. } = self.state else {
            return Ok(None);
        };
        if self.buf.len() - self.start < len {
            return Ok(None);
        }
        let State::Body { headers, .. } = std::mem::replace(&mut self.state, State::Headers) else {
            return Ok(None);
        };
        let body = self.buf[self.start..self.start + len].to_vec();
        self.start += len;
        self.scan = self.start;
        Ok(Some(RawFrame { headers, body }))
    }

    /// Scans for the end of the header block; returns the offset just past it.
    fn find_block_end(&mut self) -> Result<Option<usize>, FrameError> {
        let mut i = self.scan;
        while i < self.buf.len() {
            let b = self.buf[i];
            i += 1;
            if !self.in_block {
                if b == b'\r' || b == b'\n' {
                    self.start = i;
                    continue;
                }
                self.in_block = true;
            }
            match b {
                b'\n' if self.after_newline => {
                    self.scan = i;
                    self.check_block_len(i)?;
                    return Ok(Some(i));
                }
                b'\n' => self.after_newline = true,
                b'\r' => {}
                _ => self.after_newline = false,
            }
        }
        self.scan = i;
        self.check_block_len(i)?;
        Ok(None)
    }

    fn check_block_len(&self, end: usize) -> Result<(), FrameError> {
        if end - self.start > self.limits.max_header_block {
            return Err(FrameError::HeaderBlockTooLong {
                limit: self.limits.max_header_block,
            });
        }
        Ok(())
    }
}

/// Splits a header block into `(name, value)` pairs: lines end with `\n` (a `\r` before it
/// is dropped), blank lines are skipped, the value starts after the first colon and the run
/// of spaces following it.
pub fn parse_header_block(block: &[u8]) -> Result<Vec<(String, String)>, FrameError> {
    let mut headers = Vec::new();
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(|&b| b == b'\r') {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(FrameError::BadHeaderLine(
                String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned(),
            ));
        };
        let name = String::from_utf8_lossy(&line[..colon]).into_owned();
        let mut value = &line[colon + 1..];
        while let [b' ', rest @ ..] = value {
            value = rest;
        }
        headers.push((name, String::from_utf8_lossy(value).into_owned()));
    }
    Ok(headers)
}

/// The `Content-Length` of a header list (0 when absent).
fn content_length(headers: &[(String, String)]) -> Result<u64, FrameError> {
    let Some((_, v)) = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
    else {
        return Ok(0);
    };
    let digits = v.trim_end();
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FrameError::BadContentLength(v.chars().take(40).collect()));
    }
    digits
        .parse()
        .map_err(|_| FrameError::BadContentLength(v.chars().take(40).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(bytes: &[u8]) -> Result<Vec<RawFrame>, FrameError> {
        let mut d = Decoder::default();
        d.feed(bytes);
        let mut out = Vec::new();
        while let Some(f) = d.next_frame()? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn frames_with_and_without_body_follow_each_other() {
        let wire = b"Content-Type: command/reply\nReply-Text: +OK bye\n\nContent-Type: text/disconnect-notice\nContent-Length: 5\n\nbye.\nContent-Type: auth/request\n\n";
        let f = all(wire).expect("frames");
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].header("reply-text"), Some("+OK bye"));
        assert!(f[0].body.is_empty());
        assert_eq!(f[1].body, b"bye.\n");
        assert_eq!(f[2].content_type(), Some("auth/request"));
    }

    #[test]
    fn crlf_blocks_and_leading_line_breaks_are_accepted() {
        let f = all(b"\r\n\n\rContent-Type: api/response\r\nContent-Length: 2\r\n\r\nokX: y\n\n")
            .expect("frames");
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].header("Content-Type"), Some("api/response"));
        assert_eq!(f[0].body, b"ok");
        assert_eq!(f[1].header("X"), Some("y"));
    }

    #[test]
    fn only_the_first_run_of_spaces_after_the_colon_is_skipped() {
        let f = all(b"A:   a b \nB:\nC:x:y\n\n").expect("frames");
        assert_eq!(
            f[0].headers,
            vec![
                ("A".into(), "a b ".into()),
                ("B".into(), String::new()),
                ("C".into(), "x:y".into())
            ]
        );
    }

    #[test]
    fn an_endless_header_block_fails_at_the_limit_and_frees_its_buffer() {
        let mut d = Decoder::new(Limits {
            max_header_block: 64,
            max_body: 1024,
        });
        for _ in 0..10 {
            d.feed(b"Name: value\n");
            match d.next_frame() {
                Ok(None) => assert!(d.buffered() <= 64 + 12),
                Err(e) => {
                    assert_eq!(e, FrameError::HeaderBlockTooLong { limit: 64 });
                    assert_eq!(d.buffered(), 0);
                    d.feed(b"\n\n");
                    assert_eq!(d.next_frame(), Err(e));
                    return;
                }
                Ok(Some(f)) => panic!("unexpected frame {f:?}"),
            }
        }
        panic!("the limit was never enforced");
    }

    #[test]
    fn a_body_over_the_limit_fails_before_it_is_buffered() {
        let mut d = Decoder::new(Limits {
            max_header_block: 64,
            max_body: 10,
        });
        d.feed(b"Content-Length: 11\n\n");
        assert_eq!(
            d.next_frame(),
            Err(FrameError::BodyTooLong {
                length: 11,
                limit: 10
            })
        );
        for bad in ["-1", "", "12a", "99999999999999999999999"] {
            let wire = format!("Content-Length: {bad}\n\n");
            assert!(
                matches!(all(wire.as_bytes()), Err(FrameError::BadContentLength(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            all(b"no colon here\n\n"),
            Err(FrameError::BadHeaderLine(_))
        ));
    }

    #[test]
    fn a_stream_cut_inside_a_frame_is_not_at_a_boundary() {
        let mut d = Decoder::default();
        d.feed(b"\n\n");
        assert_eq!(d.next_frame(), Ok(None));
        assert!(d.at_frame_boundary());
        d.feed(b"Content-Length: 3\n\nab");
        assert_eq!(d.next_frame(), Ok(None));
        assert!(!d.at_frame_boundary());
        d.feed(b"c");
        assert_eq!(
            d.next_frame().ok().flatten().map(|f| f.body),
            Some(b"abc".to_vec())
        );
        assert!(d.at_frame_boundary());
    }
}
