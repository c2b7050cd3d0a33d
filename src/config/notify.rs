//! `[notify]`: how faxd delivers its notifications — e-mail through a maildir or an SMTP
//! relay, signed webhooks — and how long it keeps retrying one.

use serde::{Deserialize, Serialize};

/// Where notification mail goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailTransport {
    /// One `.eml` file per message in `<data_dir>/mail/` (or `maildir`).
    Maildir,
    /// An SMTP relay (`relay`, `port`, `tls`, `username`/`password`).
    Smtp,
}

/// How the SMTP relay connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayTls {
    /// Plain SMTP (a relay on the same host or a trusted network).
    None,
    /// STARTTLS, required: no fallback to plain text.
    Starttls,
    /// Implicit TLS from the first byte (port 465).
    Tls,
}

/// `[notify]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifySection {
    /// `maildir` or `smtp`.
    pub transport: MailTransport,
    /// Directory of the maildir transport; empty: `<data_dir>/mail`.
    pub maildir: String,
    /// Host name of the SMTP relay.
    pub relay: String,
    /// Port of the SMTP relay.
    pub port: u16,
    /// `none`, `starttls` or `tls`.
    pub tls: RelayTls,
    /// A PEM file of CA certificates trusted for the relay besides the system's (a relay
    /// with a certificate of a private CA); empty: the system's roots only.
    pub tls_ca: String,
    /// Credentials for the relay (AUTH PLAIN/LOGIN); empty username: no AUTH.
    pub username: String,
    pub password: String,
    /// The `From:` of notification mail.
    pub from: String,
    /// One delivery attempt (SMTP session or webhook request) must finish within this
    /// (seconds).
    pub timeout: u64,
    /// First retry delay (seconds), doubling per attempt up to `retry_max`.
    pub retry_min: u64,
    pub retry_max: u64,
    /// A notification not delivered this long after its event is given up (seconds).
    pub expire: u64,
    /// Safety sweep for notifications a crashed node left pending (seconds); the main path
    /// is a direct wake-up when the event is written.
    pub sweep: u64,
    /// Webhook URLs may point at private and loopback addresses (tests, closed networks).
    pub webhook_allow_private: bool,
}

impl Default for NotifySection {
    fn default() -> Self {
        Self {
            transport: MailTransport::Maildir,
            maildir: String::new(),
            relay: "127.0.0.1".into(),
            port: 25,
            tls: RelayTls::None,
            tls_ca: String::new(),
            username: String::new(),
            password: String::new(),
            from: "faxd <no-reply@faxd.invalid>".into(),
            timeout: 30,
            retry_min: 5,
            retry_max: 900,
            expire: 2 * 86_400,
            sweep: 60,
            webhook_allow_private: false,
        }
    }
}

impl NotifySection {
    /// The maildir transport's directory.
    pub fn maildir(&self, data_dir: &std::path::Path) -> std::path::PathBuf {
        if self.maildir.is_empty() {
            data_dir.join("mail")
        } else {
            std::path::PathBuf::from(&self.maildir)
        }
    }
}
