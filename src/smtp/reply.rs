//! The SMTP reply table of fax_smtp: every reply the listener sends, with its basic code
//! (RFC 5321) and enhanced status code (RFC 3463), in one place. Multi-line replies (EHLO)
//! are rendered by [`Reply::render`].

use std::fmt::Write as _;

/// One SMTP reply: code, enhanced code (none for 220/221 greeting lines, HELO/EHLO and 3xx),
/// and its text lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<&'static str>,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, enhanced: Option<&'static str>, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced,
            lines: vec![text.into()],
        }
    }

    /// The first text line (for logs and the SMTP log document).
    pub fn text(&self) -> &str {
        self.lines.first().map(String::as_str).unwrap_or_default()
    }

    /// `550 5.7.1 text` — the form a log or an error mail shows.
    pub fn summary(&self) -> String {
        match self.enhanced {
            Some(e) => format!("{} {e} {}", self.code, self.text()),
            None => format!("{} {}", self.code, self.text()),
        }
    }

    /// The reply on the wire: CRLF-terminated lines, `-` after the code on all but the last.
    /// Control characters in the text are replaced (a reply never carries a line break of
    /// its own).
    pub fn render(&self, out: &mut Vec<u8>) {
        let n = self.lines.len().max(1);
        for i in 0..n {
            let sep = if i + 1 == n { ' ' } else { '-' };
            let text: String = self
                .lines
                .get(i)
                .map(|l| {
                    l.chars()
                        .map(|c| if c.is_control() { ' ' } else { c })
                        .collect()
                })
                .unwrap_or_default();
            let mut line = String::new();
            let _ = write!(line, "{}{sep}", self.code);
            if let Some(e) = self.enhanced {
                let _ = write!(line, "{e} ");
            }
            line.push_str(&text);
            // Reply lines are capped at 512 octets (RFC 5321 §4.5.3.1.5).
            let mut cut = line.len().min(510);
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            out.extend_from_slice(&line.as_bytes()[..cut]);
            out.extend_from_slice(b"\r\n");
        }
    }

    // ---- connection ----
    pub fn greeting(host: &str) -> Self {
        Self::new(220, None, format!("{host} ESMTP faxd e-mail to fax"))
    }
    pub fn too_busy(host: &str) -> Self {
        Self::new(
            421,
            Some("4.3.2"),
            format!("{host} too busy, try again later"),
        )
    }
    pub fn timeout(host: &str) -> Self {
        Self::new(
            421,
            Some("4.4.2"),
            format!("{host} timeout, closing connection"),
        )
    }
    pub fn too_many_errors() -> Self {
        Self::new(421, Some("4.7.0"), "too many errors, closing connection")
    }
    pub fn shutting_down(host: &str) -> Self {
        Self::new(
            421,
            Some("4.3.2"),
            format!("{host} shutting down, try again later"),
        )
    }
    pub fn bye() -> Self {
        Self::new(221, Some("2.0.0"), "bye")
    }

    // ---- generic ----
    pub fn ok() -> Self {
        Self::new(250, Some("2.0.0"), "OK")
    }
    pub fn unrecognised(verb: &str) -> Self {
        let verb: String = verb.chars().take(16).collect();
        Self::new(
            500,
            Some("5.5.2"),
            format!("command not recognised: {verb}"),
        )
    }
    pub fn line_too_long() -> Self {
        Self::new(500, Some("5.5.2"), "line too long")
    }
    pub fn not_implemented(what: &str) -> Self {
        Self::new(502, Some("5.5.1"), format!("{what} not implemented"))
    }
    pub fn bad_sequence(text: &str) -> Self {
        Self::new(503, Some("5.5.1"), text)
    }
    pub fn syntax(text: &str) -> Self {
        Self::new(501, Some("5.5.4"), text)
    }
    pub fn vrfy() -> Self {
        Self::new(252, Some("2.0.0"), "cannot verify, send some mail")
    }
    pub fn unknown_parameter(p: &str) -> Self {
        let p: String = p.chars().take(32).collect();
        Self::new(555, Some("5.5.4"), format!("unsupported parameter {p}"))
    }
    pub fn local_error() -> Self {
        Self::new(451, Some("4.3.0"), "local error, try again later")
    }

    // ---- TLS / AUTH ----
    pub fn tls_ready() -> Self {
        Self::new(220, Some("2.0.0"), "ready to start TLS")
    }
    pub fn tls_unavailable() -> Self {
        Self::new(454, Some("4.7.0"), "TLS not available")
    }
    pub fn auth_ok() -> Self {
        Self::new(235, Some("2.7.0"), "authentication succeeded")
    }
    pub fn auth_challenge(b64: &str) -> Self {
        Self::new(334, None, b64)
    }
    pub fn auth_failed() -> Self {
        Self::new(535, Some("5.7.8"), "authentication credentials invalid")
    }
    pub fn auth_needs_tls() -> Self {
        Self::new(
            538,
            Some("5.7.11"),
            "encryption required for authentication",
        )
    }
    pub fn auth_mechanism() -> Self {
        Self::new(504, Some("5.5.4"), "unrecognised authentication mechanism")
    }
    pub fn auth_cancelled() -> Self {
        Self::new(501, Some("5.5.2"), "authentication cancelled or not base64")
    }
    pub fn auth_required() -> Self {
        Self::new(530, Some("5.7.0"), "authentication required")
    }

    // ---- envelope ----
    pub fn sender_ok() -> Self {
        Self::new(250, Some("2.1.0"), "sender OK")
    }
    pub fn recipient_ok(number: &str) -> Self {
        Self::new(250, Some("2.1.5"), format!("fax to {number} OK"))
    }
    pub fn bad_address(text: &str) -> Self {
        Self::new(553, Some("5.1.3"), text)
    }
    pub fn size_exceeded(limit: u64) -> Self {
        Self::new(
            552,
            Some("5.3.4"),
            format!("message exceeds the maximum size of {limit} bytes"),
        )
    }
    pub fn too_many_recipients() -> Self {
        Self::new(
            452,
            Some("4.5.3"),
            "too many recipients, send the rest later",
        )
    }
    pub fn too_many_recipients_for_box() -> Self {
        Self::new(
            452,
            Some("4.5.3"),
            "recipients of another faxbox: send them in another message",
        )
    }
    pub fn relay_denied(domain: &str) -> Self {
        Self::new(
            550,
            Some("5.7.1"),
            format!("relaying denied: {domain} is no fax domain here"),
        )
    }
    pub fn null_sender() -> Self {
        Self::new(
            550,
            Some("5.7.1"),
            "mail from the null sender (a bounce) is never faxed",
        )
    }
    pub fn not_allowed(text: &str) -> Self {
        Self::new(550, Some("5.7.1"), text)
    }
    pub fn no_mailbox(text: &str) -> Self {
        Self::new(550, Some("5.1.1"), text)
    }
    pub fn non_ascii_address() -> Self {
        Self::new(553, Some("5.6.7"), "non-ASCII address without SMTPUTF8")
    }

    // ---- data ----
    pub fn start_data() -> Self {
        Self::new(354, None, "end data with <CR><LF>.<CR><LF>")
    }
    pub fn no_valid_recipients() -> Self {
        Self::new(554, Some("5.5.1"), "no valid recipients")
    }
    pub fn queued(ids: &[String]) -> Self {
        Self::new(250, Some("2.0.0"), format!("queued as {}", ids.join(" ")))
    }
    pub fn smuggling() -> Self {
        Self::new(
            554,
            Some("5.5.2"),
            "bare CR or LF before a dot line: message refused (SMTP smuggling)",
        )
    }
    pub fn undecodable(text: &str) -> Self {
        Self::new(554, Some("5.6.0"), text)
    }
    pub fn no_document(text: &str) -> Self {
        Self::new(554, Some("5.6.1"), text)
    }
    pub fn encrypted(text: &str) -> Self {
        Self::new(554, Some("5.7.4"), text)
    }
    pub fn policy(text: &str) -> Self {
        Self::new(554, Some("5.7.1"), text)
    }
    pub fn invalid_number(text: &str) -> Self {
        Self::new(550, Some("5.1.1"), text)
    }
    pub fn conversion_failed(text: &str) -> Self {
        Self::new(
            554,
            Some("5.6.1"),
            format!("the document cannot be faxed: {text}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_codes_and_multiline() {
        let mut out = Vec::new();
        Reply::size_exceeded(10).render(&mut out);
        assert_eq!(
            out,
            b"552 5.3.4 message exceeds the maximum size of 10 bytes\r\n"
        );
        let mut out = Vec::new();
        Reply {
            code: 250,
            enhanced: None,
            lines: vec!["host".into(), "SIZE 5".into()],
        }
        .render(&mut out);
        assert_eq!(out, b"250-host\r\n250 SIZE 5\r\n");
        let mut out = Vec::new();
        Reply::not_allowed("a\r\nMAIL FROM").render(&mut out);
        assert_eq!(out, b"550 5.7.1 a  MAIL FROM\r\n");
    }
}
