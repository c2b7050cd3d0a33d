//! E-mail to fax (Kazoo's `fax_smtp`, DESIGN.md §1): the SMTP protocol of a session
//! ([`session`], generic over its stream, with its framing in [`framing`] and one reply table
//! in [`reply`]), the accept loop ([`listener`]) and STARTTLS ([`starttls`]: rustls, or
//! OpenSSL for old scanners with `legacy_tls`), the faxable
//! documents of a message ([`extract`], [`tnef`]), the recipient and sender rules
//! ([`rules`]), and the store side that queues the faxes ([`service`]). The listener process
//! is `faxd-actors`' `fax_smtp`.

pub mod extract;
pub mod framing;
pub mod listener;
pub mod reply;
pub mod rules;
pub mod service;
pub mod session;
pub mod starttls;
pub mod tnef;

use std::time::Duration;

pub use reply::Reply;
pub use session::{AuthMode, Backend, End, Envelope, SessionConfig};

use crate::config::SmtpSection;
use crate::config::fax::FaxConfig;

/// Why the SMTP configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SmtpConfigError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("[smtp] legacy_tls needs tls_cert and tls_key")]
    LegacyWithoutTls,
    #[error("[smtp] tls_cert and tls_key must be set together")]
    HalfTls,
}

/// The session settings of a listener: `[smtp]`, the fax config's `smtp_max_msg_size`, and
/// the host name (`[smtp] hostname`, else the host part of the node name).
pub fn session_config(
    smtp: &SmtpSection,
    fax: &FaxConfig,
    node_name: &str,
) -> Result<SessionConfig, SmtpConfigError> {
    let tls = match (smtp.tls_cert.is_empty(), smtp.tls_key.is_empty()) {
        (true, true) if smtp.legacy_tls => return Err(SmtpConfigError::LegacyWithoutTls),
        (true, true) => None,
        (false, false) => Some(starttls::StartTls::load(
            &smtp.tls_cert,
            &smtp.tls_key,
            smtp.legacy_tls,
        )?),
        _ => return Err(SmtpConfigError::HalfTls),
    };
    let hostname = if smtp.hostname.is_empty() {
        node_name
            .rsplit_once('@')
            .map(|(_, h)| h)
            .unwrap_or(node_name)
            .to_string()
    } else {
        smtp.hostname.clone()
    };
    Ok(SessionConfig {
        hostname,
        max_msg_size: fax.smtp_max_msg_size,
        max_line: smtp.max_line.max(512),
        max_recipients: smtp.max_recipients.max(1),
        max_errors: smtp.max_errors.max(1),
        command_timeout: Duration::from_secs(smtp.command_timeout_s.max(1)),
        data_timeout: Duration::from_secs(smtp.data_timeout_s.max(1)),
        session_timeout: Duration::from_secs(smtp.session_timeout_s.max(1)),
        tls,
        auth: smtp.auth,
        auth_without_tls: smtp.auth_without_tls,
    })
}

/// The MIME limits of `[smtp]`.
pub fn mime_limits(smtp: &SmtpSection) -> extract::MimeLimits {
    extract::MimeLimits {
        max_parts: smtp.max_parts,
        max_depth: smtp.max_depth,
        max_header_bytes: smtp.max_header_bytes,
        min_image_px: smtp.min_image_px,
    }
}
