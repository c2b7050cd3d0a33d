//! SMTP framing without I/O: splitting command lines out of a receive buffer (with a length
//! cap) and decoding DATA (dot-unstuffing, the strict `CRLF . CRLF` end, a size cap, and
//! detection of the bare-CR/LF dot lines that SMTP smuggling relies on). The session feeds
//! bytes in; nothing here reads a socket, so the rules are tested on generated input.

/// What [`take_line`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete command line (without its line end; a trailing CR is removed).
    Complete(Vec<u8>),
    /// The buffer holds more than `max` bytes without a line end: the caller answers
    /// "line too long" and discards up to the next line end ([`discard_line`]).
    TooLong,
    /// No complete line yet.
    Partial,
}

/// Takes one command line (ended by LF, with or without CR) off the front of `buf`.
pub fn take_line(buf: &mut Vec<u8>, max: usize) -> Line {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) if i + 1 > max => {
            buf.drain(..=i);
            Line::TooLong
        }
        Some(i) => {
            let mut line: Vec<u8> = buf.drain(..=i).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            Line::Complete(line)
        }
        None if buf.len() > max => Line::TooLong,
        None => Line::Partial,
    }
}

/// After [`Line::TooLong`] without a line end in the buffer: drops the buffered bytes and
/// reports whether the line end was reached (`false`: keep discarding what arrives next).
pub fn discard_line(buf: &mut Vec<u8>) -> bool {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) => {
            buf.drain(..=i);
            true
        }
        None => {
            buf.clear();
            false
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a line (after CRLF, or at the start of the data).
    LineStart,
    /// Inside a line.
    Mid,
    /// After a CR inside a line.
    Cr,
    /// A `.` at the start of a line.
    Dot,
    /// `.` then CR at the start of a line.
    DotCr,
    /// After a bare LF or bare CR (a line end only for lenient parsers).
    BareStart,
    /// A `.` after a bare line end.
    BareDot,
}

/// Decodes the DATA of one message.
#[derive(Debug)]
pub struct DataDecoder {
    out: Vec<u8>,
    state: State,
    max: usize,
    received: u64,
    overflow: bool,
    smuggling: bool,
    bare_line_ends: bool,
}

/// The decoded message when the end of data was seen.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The message, dot-unstuffed, without the final `.` line (empty when it was too large).
    pub message: Vec<u8>,
    /// The DATA bytes received (before unstuffing).
    pub received: u64,
    /// More than `max` bytes came: the message was discarded.
    pub overflow: bool,
    /// A dot line after a bare CR or LF (`\n.\n`, `\r.\r`, `\r\n.\n`…): what a lenient
    /// server would take as the end of data. Such messages are refused.
    pub smuggling: bool,
    /// A bare CR or LF appeared somewhere.
    pub bare_line_ends: bool,
}

impl DataDecoder {
    pub fn new(max: usize) -> Self {
        Self {
            out: Vec::new(),
            state: State::LineStart,
            max,
            received: 0,
            overflow: false,
            smuggling: false,
            bare_line_ends: false,
        }
    }

    fn push(&mut self, b: u8) {
        if self.out.len() < self.max {
            self.out.push(b);
        } else {
            self.overflow = true;
        }
    }

    /// Feeds received bytes; returns how many were consumed and, when the end of data was
    /// among them, the decoded message (the bytes after it are the next commands).
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<Decoded>) {
        for (i, &b) in input.iter().enumerate() {
            self.received += 1;
            if self.step(b) {
                let message = if self.overflow {
                    Vec::new()
                } else {
                    std::mem::take(&mut self.out)
                };
                return (
                    i + 1,
                    Some(Decoded {
                        message,
                        received: self.received,
                        overflow: self.overflow,
                        smuggling: self.smuggling,
                        bare_line_ends: self.bare_line_ends,
                    }),
                );
            }
        }
        (input.len(), None)
    }

    /// One byte; `true` at the end of data.
    fn step(&mut self, b: u8) -> bool {
        use State::*;
        match (self.state, b) {
            (LineStart, b'.') => self.state = Dot,
            (LineStart | Mid | BareStart, b'\r') => {
                self.push(b);
                self.state = Cr;
            }
            (LineStart | Mid | BareStart | BareDot, b'\n') => {
                if self.state == BareDot {
                    self.smuggling = true;
                }
                self.bare_line_ends = true;
                self.push(b);
                self.state = BareStart;
            }
            (BareStart, b'.') => {
                self.push(b);
                self.state = BareDot;
            }
            (BareDot, b'\r') => {
                self.smuggling = true;
                self.push(b);
                self.state = Cr;
            }
            (Cr, b'\n') => {
                self.push(b);
                self.state = LineStart;
            }
            (Cr, b'\r') => {
                self.bare_line_ends = true;
                self.push(b);
            }
            (Cr, b'.') => {
                // A bare CR, then a dot.
                self.bare_line_ends = true;
                self.push(b);
                self.state = BareDot;
            }
            (Cr, _) => {
                self.bare_line_ends = true;
                self.push(b);
                self.state = Mid;
            }
            (Dot, b'\r') => self.state = DotCr,
            (Dot, b'\n') => {
                // `CRLF . LF`: a lenient end of data.
                self.smuggling = true;
                self.bare_line_ends = true;
                self.push(b);
                self.state = BareStart;
            }
            (Dot, _) => {
                // The first dot of a line is removed (RFC 5321 §4.5.2).
                self.push(b);
                self.state = Mid;
            }
            (DotCr, b'\n') => return true,
            (DotCr, b'\r') => {
                // `. CR CR`: the first CR is bare.
                self.bare_line_ends = true;
                self.push(b'\r');
                self.push(b);
                self.state = Cr;
            }
            (DotCr, _) => {
                self.bare_line_ends = true;
                self.push(b'\r');
                self.push(b);
                self.state = Mid;
            }
            (_, _) => {
                self.push(b);
                self.state = Mid;
            }
        }
        false
    }
}

/// Dot-stuffs a message for sending (the client side of [`DataDecoder`]); for tests and the
/// bench client. Bare line ends are left as they are.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 8);
    let mut at_start = true;
    let mut prev_cr = false;
    for &b in message {
        if at_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_start = prev_cr && b == b'\n';
        prev_cr = b == b'\r';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn decode_all(input: &[u8], max: usize) -> Option<(usize, Decoded)> {
        let mut d = DataDecoder::new(max);
        let (n, done) = d.feed(input);
        done.map(|x| (n, x))
    }

    #[test]
    fn lines_and_caps() {
        let mut buf = b"EHLO a\r\nNOOP\nQU".to_vec();
        assert_eq!(take_line(&mut buf, 64), Line::Complete(b"EHLO a".to_vec()));
        assert_eq!(take_line(&mut buf, 64), Line::Complete(b"NOOP".to_vec()));
        assert_eq!(take_line(&mut buf, 64), Line::Partial);
        let mut buf = vec![b'x'; 100];
        assert_eq!(take_line(&mut buf, 64), Line::TooLong);
        assert!(!discard_line(&mut buf));
        let mut buf = b"xxxx\r\nNOOP\r\n".to_vec();
        assert_eq!(take_line(&mut buf, 3), Line::TooLong);
        assert_eq!(take_line(&mut buf, 64), Line::Complete(b"NOOP".to_vec()));
    }

    #[test]
    fn unstuffs_and_ends_only_on_crlf_dot_crlf() {
        let (n, d) = decode_all(b"a\r\n..b\r\n.c\r\n.\r\nQUIT\r\n", 100).unwrap();
        assert_eq!(d.message, b"a\r\n.b\r\nc\r\n");
        assert_eq!(n, 15);
        assert!(!d.smuggling && !d.bare_line_ends);
        // The empty message.
        let (_, d) = decode_all(b".\r\n", 100).unwrap();
        assert!(d.message.is_empty());
    }

    #[test]
    fn smuggling_shapes_are_flagged_never_ended() {
        for shape in [
            &b"x\n.\nMAIL FROM:<a@b>\r\n"[..],
            b"x\r\n.\nMAIL FROM:<a@b>\r\n",
            b"x\n.\r\nMAIL FROM:<a@b>\r\n",
            b"x\r.\rMAIL FROM:<a@b>\r\n",
            b"x\r.\r\nMAIL FROM:<a@b>\r\n",
        ] {
            let mut input = shape.to_vec();
            input.extend_from_slice(b"tail\r\n.\r\n");
            let (n, d) = decode_all(&input, 1000).unwrap();
            assert_eq!(n, input.len(), "{shape:?}: ended early");
            assert!(d.smuggling, "{shape:?} not flagged");
            assert!(d.bare_line_ends);
        }
        // A bare LF inside a line is only noted.
        let (_, d) = decode_all(b"a\nb\r\n.\r\n", 100).unwrap();
        assert!(d.bare_line_ends && !d.smuggling);
    }

    #[test]
    fn overflow_keeps_reading_to_the_end() {
        let (n, d) = decode_all(b"0123456789\r\n.\r\nNOOP\r\n", 4).unwrap();
        assert_eq!(n, 15);
        assert!(d.overflow);
        assert!(d.message.is_empty());
    }

    /// Property: for any message (random bytes, CR/LF/dot heavy), stuffing then decoding in
    /// random chunk sizes gives the message back (with a final CRLF), ends exactly at the
    /// terminator, and flags smuggling only when the message has a dot after a bare line end.
    #[test]
    fn stuff_then_decode_round_trips_in_any_chunking() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let alphabet = [b'\r', b'\n', b'.', b'a', b'M', b' '];
        for _ in 0..5000 {
            let len = rng.random_range(0..60);
            let msg: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            // Only CRLF line ends, so the round trip is exact.
            let mut clean = Vec::new();
            for &b in &msg {
                match b {
                    b'\r' | b'\n' => clean.extend_from_slice(b"\r\n"),
                    b => clean.push(b),
                }
            }
            let mut wire = dot_stuff(&clean);
            let end = wire.len();
            wire.extend_from_slice(b"RSET\r\n");
            let mut d = DataDecoder::new(1 << 20);
            let mut pos = 0;
            let result = loop {
                let step = rng.random_range(1..8).min(wire.len() - pos);
                let (n, done) = d.feed(&wire[pos..pos + step]);
                pos += n;
                if let Some(done) = done {
                    break done;
                }
                assert!(pos < end, "no end of data in {wire:?}");
            };
            assert_eq!(pos, end);
            let mut expected = clean.clone();
            if !expected.ends_with(b"\r\n") {
                expected.extend_from_slice(b"\r\n");
            }
            assert_eq!(result.message, expected);
            assert!(!result.smuggling && !result.bare_line_ends);
        }
    }

    /// Property: arbitrary bytes never end DATA except at a `CRLF . CRLF` (or at the very
    /// start `. CRLF`), so no bare line end can split a message in two.
    #[test]
    fn random_bytes_end_only_at_the_strict_terminator() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet = [b'\r', b'\n', b'.', b'x'];
        for _ in 0..20000 {
            let len = rng.random_range(0..40);
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            let mut d = DataDecoder::new(1 << 16);
            let (n, done) = d.feed(&input);
            if done.is_some() {
                let seen = &input[..n];
                assert!(
                    seen == b".\r\n" || seen.ends_with(b"\r\n.\r\n"),
                    "ended at {seen:?}"
                );
            }
        }
    }
}
