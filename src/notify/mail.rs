//! Notification mail: a message built with lettre's `Message::builder()` (never raw data
//! through `send_raw`), text and HTML alternatives, the fax as a base64 attachment,
//! `Auto-Submitted: auto-generated`, a Message-ID fixed per delivery (a resend after a
//! crash is recognisable as the same message), and two transports: a maildir (one `.eml`
//! per message, written atomically) and an SMTP relay (plain, STARTTLS or TLS, optional AUTH)
//! with an empty reverse path so that bounces never loop back into faxd.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::template::{Rendered, header_safe};
use crate::config::notify::{MailTransport, NotifySection, RelayTls};

/// Why a mail was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The message itself is wrong (an address that does not parse): retrying cannot help.
    #[error("invalid message: {0}")]
    Invalid(String),
    /// The relay or the disk said no, or did not answer: worth retrying.
    #[error("not delivered: {0}")]
    Transient(String),
}

/// A file that goes with the mail.
#[derive(Clone, Debug)]
pub struct MailFile {
    pub name: String,
    pub content_type: String,
    pub data: Vec<u8>,
}

/// Builds the message of one delivery.
pub fn build(
    from: &str,
    to: &[String],
    message_id: &str,
    body: &Rendered,
    file: Option<&MailFile>,
) -> Result<Message, MailError> {
    let from: Mailbox = header_safe(from)
        .parse()
        .map_err(|e| MailError::Invalid(format!("from address: {e}")))?;
    let mut rcpts = Vec::with_capacity(to.len());
    let mut b = Message::builder()
        .from(from)
        .subject(header_safe(&body.subject))
        .message_id(Some(format!("<{}>", header_safe(message_id))))
        .header(AutoSubmitted);
    for addr in to {
        let mbox: Mailbox = header_safe(addr)
            .parse()
            .map_err(|e| MailError::Invalid(format!("recipient '{addr}': {e}")))?;
        rcpts.push(mbox.email.clone());
        b = b.to(mbox);
    }
    // Empty reverse path (`MAIL FROM:<>`): a notification never gets bounces.
    let envelope = lettre::address::Envelope::new(None, rcpts)
        .map_err(|e| MailError::Invalid(e.to_string()))?;
    let b = b.envelope(envelope);
    let alternative = MultiPart::alternative()
        .singlepart(SinglePart::plain(body.text.clone()))
        .singlepart(SinglePart::html(body.html.clone()));
    let msg = match file {
        Some(f) => {
            let ct = ContentType::parse(&f.content_type)
                .unwrap_or_else(|_| ContentType::parse("application/octet-stream").expect("mime"));
            let att = Attachment::new(header_safe(&f.name)).body(f.data.clone(), ct);
            b.multipart(MultiPart::mixed().multipart(alternative).singlepart(att))
        }
        None => b.multipart(alternative),
    };
    msg.map_err(|e| MailError::Invalid(e.to_string()))
}

/// The `Auto-Submitted: auto-generated` header (RFC 3834).
#[derive(Clone, Debug)]
struct AutoSubmitted;

impl lettre::message::header::Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".into())
    }
}

/// Where mail goes.
pub enum Mailer {
    Maildir(PathBuf),
    Smtp(Box<AsyncSmtpTransport<Tokio1Executor>>),
}

impl Mailer {
    /// The transport `[notify]` asks for.
    pub fn from_config(cfg: &NotifySection, data_dir: &Path) -> Result<Self, MailError> {
        match cfg.transport {
            MailTransport::Maildir => Ok(Mailer::Maildir(cfg.maildir(data_dir))),
            MailTransport::Smtp => {
                let tls_params = || {
                    let invalid =
                        |e: String| MailError::Invalid(format!("TLS for {}: {e}", cfg.relay));
                    let mut b = TlsParameters::builder(cfg.relay.clone());
                    if !cfg.tls_ca.is_empty() {
                        let pem = std::fs::read(&cfg.tls_ca)
                            .map_err(|e| invalid(format!("tls_ca {}: {e}", cfg.tls_ca)))?;
                        if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                            return Err(invalid(format!(
                                "tls_ca {}: no PEM certificate",
                                cfg.tls_ca
                            )));
                        }
                        let ca = Certificate::from_pem(&pem)
                            .map_err(|e| invalid(format!("tls_ca {}: {e}", cfg.tls_ca)))?;
                        b = b.add_root_certificate(ca);
                    }
                    b.build().map_err(|e| invalid(e.to_string()))
                };
                let tls = match cfg.tls {
                    RelayTls::None => Tls::None,
                    RelayTls::Starttls => Tls::Required(tls_params()?),
                    RelayTls::Tls => Tls::Wrapper(tls_params()?),
                };
                let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.relay)
                    .port(cfg.port)
                    .tls(tls)
                    .timeout(Some(Duration::from_secs(cfg.timeout.max(1))));
                if !cfg.username.is_empty() {
                    b = b.credentials(Credentials::new(cfg.username.clone(), cfg.password.clone()));
                }
                Ok(Mailer::Smtp(Box::new(b.build())))
            }
        }
    }

    /// Delivers a message. `key` names it in the maildir: the same delivery writes the same
    /// file, so a repeat replaces rather than duplicates.
    pub async fn send(&self, msg: &Message, key: &str) -> Result<(), MailError> {
        match self {
            Mailer::Maildir(dir) => write_eml(dir, key, &msg.formatted()).await,
            Mailer::Smtp(t) => t.send(msg.clone()).await.map(|_| ()).map_err(|e| {
                if e.is_permanent() {
                    MailError::Invalid(e.to_string())
                } else {
                    MailError::Transient(e.to_string())
                }
            }),
        }
    }
}

/// Writes `<dir>/<key>.eml` atomically: a hidden temporary file, synced, then renamed.
async fn write_eml(dir: &Path, key: &str, data: &[u8]) -> Result<(), MailError> {
    let io = |e: std::io::Error| MailError::Transient(format!("maildir {}: {e}", dir.display()));
    let safe: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    crate::files::create_dir_private(dir).await.map_err(io)?;
    let tmp = dir.join(format!(".{safe}.tmp"));
    let path = dir.join(format!("{safe}.eml"));
    let data = data.to_vec();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })
    .await
    .map_err(|e| MailError::Transient(e.to_string()))?
    .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_carries_its_parts_and_no_injected_headers() {
        let body = Rendered {
            subject: "Fax sent\r\nBcc: evil@example.com".into(),
            text: "line\r\n.\r\nMAIL FROM:<x>\r\n".into(),
            html: "<p>x</p>".into(),
        };
        let file = MailFile {
            name: "fax.pdf".into(),
            content_type: "application/pdf".into(),
            data: b"%PDF-1.4 data".to_vec(),
        };
        let msg = build(
            "faxd <no-reply@faxd.invalid>",
            &["ann@example.com".into()],
            "d1@faxd",
            &body,
            Some(&file),
        )
        .expect("message");
        let raw = String::from_utf8_lossy(&msg.formatted()).to_string();
        assert!(raw.contains("Auto-Submitted: auto-generated\r\n"), "{raw}");
        assert!(raw.contains("Message-ID: <d1@faxd>\r\n"), "{raw}");
        assert!(raw.contains("To: ann@example.com\r\n"), "{raw}");
        assert!(!raw.contains("\r\nBcc:"), "{raw}");
        assert!(raw.contains("filename=\"fax.pdf\""), "{raw}");
        assert!(build("x", &["not an address".into()], "d", &body, None).is_err());
    }
}
