//! STARTTLS of fax_smtp: one acceptor type for the session, either rustls (TLS 1.2/1.3,
//! forward-secret AEAD suites; the default) or, with `[smtp] legacy_tls`, the system's OpenSSL
//! admitting the TLS 1.0/1.1, CBC and RSA-key-exchange suites of old scanners as well; and a
//! session's connection, plaintext or either kind of TLS.

use std::pin::Pin;
use std::task::{Context, Poll};

use openssl::pkey::PKey;
use openssl::ssl::{Ssl, SslContext, SslMethod, SslOptions, SslVersion};
use openssl::x509::X509;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::rustls::pki_types::PrivateKeyDer;

use crate::tls::{self, TlsAcceptor, TlsError};

/// The OpenSSL cipher list of `legacy_tls`, in the server's order of preference: ECDHE with
/// AEAD first (what a modern client gets), then ECDHE with AES-CBC, then RSA key exchange
/// (AES-GCM, AES-CBC). `@SECLEVEL=0`: OpenSSL 3 refuses TLS 1.0/1.1 (MD5/SHA-1 handshake
/// signatures) at any higher level. No 3DES, RC4, export, anonymous or NULL suites.
pub const LEGACY_CIPHERS: &str = "ECDHE+AESGCM:ECDHE+CHACHA20:ECDHE+AES:RSA+AESGCM:RSA+AES:!aNULL:!eNULL:!PSK:!SRP:!DSS:@SECLEVEL=0";

/// How a session turns TLS on after `220 Ready to start TLS`.
#[derive(Clone)]
pub enum StartTls {
    /// rustls: TLS 1.2 and 1.3.
    Rustls(TlsAcceptor),
    /// OpenSSL (`legacy_tls`): TLS 1.0 to 1.3, [`LEGACY_CIPHERS`].
    Legacy(SslContext),
}

impl From<TlsAcceptor> for StartTls {
    fn from(a: TlsAcceptor) -> Self {
        StartTls::Rustls(a)
    }
}

impl StartTls {
    /// The acceptor for `[smtp] tls_cert`/`tls_key` (PEM), OpenSSL when `legacy` is set.
    pub fn load(cert_path: &str, key_path: &str, legacy: bool) -> Result<Self, TlsError> {
        if legacy {
            legacy_context(cert_path, key_path).map(StartTls::Legacy)
        } else {
            tls::server_acceptor(cert_path, key_path).map(StartTls::Rustls)
        }
    }

    /// The TLS handshake on `plain`, the server side.
    pub async fn accept<S>(&self, plain: S) -> std::io::Result<Conn<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match self {
            StartTls::Rustls(a) => Ok(Conn::Rustls(Box::new(a.accept(plain).await?))),
            StartTls::Legacy(ctx) => {
                let ssl = Ssl::new(ctx).map_err(std::io::Error::other)?;
                let mut s =
                    tokio_openssl::SslStream::new(ssl, plain).map_err(std::io::Error::other)?;
                Pin::new(&mut s)
                    .accept()
                    .await
                    .map_err(std::io::Error::other)?;
                Ok(Conn::Legacy(s))
            }
        }
    }
}

/// The OpenSSL server context of `legacy_tls`: the certificate chain and key read by the PEM
/// reader of the rustls path (the same messages for missing or empty files), TLS 1.0 at least, [`LEGACY_CIPHERS`], the
/// server's cipher order, no compression and no renegotiation.
pub fn legacy_context(cert_path: &str, key_path: &str) -> Result<SslContext, TlsError> {
    let certs = tls::certificates("smtp.tls_cert", cert_path)?;
    let key = tls::private_key("smtp.tls_key", key_path)?;
    let bad_cert = |e| tls::file_error("smtp.tls_cert", cert_path, e);
    let bad_key = |e| tls::file_error("smtp.tls_key", key_path, e);
    let key = match &key {
        PrivateKeyDer::Pkcs8(k) => PKey::private_key_from_pkcs8(k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => {
            openssl::rsa::Rsa::private_key_from_der(k.secret_pkcs1_der()).and_then(PKey::from_rsa)
        }
        PrivateKeyDer::Sec1(k) => openssl::ec::EcKey::private_key_from_der(k.secret_sec1_der())
            .and_then(PKey::from_ec_key),
        _ => PKey::private_key_from_der(key.secret_der()),
    }
    .map_err(bad_key)?;
    let config = |what: &'static str| {
        move |e: openssl::error::ErrorStack| {
            TlsError::Config(format!("smtp legacy_tls {what}: {e}"))
        }
    };
    let mut b = SslContext::builder(SslMethod::tls_server()).map_err(config("context"))?;
    let mut chain = certs.iter();
    if let Some(leaf) = chain.next() {
        let leaf = X509::from_der(leaf).map_err(bad_cert)?;
        b.set_certificate(&leaf).map_err(bad_cert)?;
    }
    for c in chain {
        let c = X509::from_der(c).map_err(bad_cert)?;
        b.add_extra_chain_cert(c).map_err(bad_cert)?;
    }
    // OpenSSL checks here that the key is the certificate's.
    b.set_private_key(&key).map_err(|_| {
        TlsError::Config(format!(
            "smtp.tls_key {key_path} is not the key of smtp.tls_cert {cert_path}"
        ))
    })?;
    b.set_min_proto_version(Some(SslVersion::TLS1))
        .map_err(config("protocol versions"))?;
    b.set_cipher_list(LEGACY_CIPHERS)
        .map_err(config("cipher list"))?;
    b.set_options(
        SslOptions::NO_SSLV2
            | SslOptions::NO_SSLV3
            | SslOptions::NO_COMPRESSION
            | SslOptions::CIPHER_SERVER_PREFERENCE
            | SslOptions::NO_RENEGOTIATION,
    );
    Ok(b.build())
}

/// A session's connection: plaintext, then TLS after STARTTLS (rustls' state boxed: it is
/// large); `Upgrading` while the handshake owns the socket.
pub enum Conn<S> {
    Plain(S),
    Rustls(Box<tokio_rustls::server::TlsStream<S>>),
    Legacy(tokio_openssl::SslStream<S>),
    Upgrading,
}

impl<S> Conn<S> {
    /// The protocol version and cipher suite, for the log (`TLSv1_3 TLS13_AES_256_GCM_SHA384`,
    /// `TLSv1 AES128-SHA`).
    pub fn describe(&self) -> String {
        match self {
            Conn::Rustls(s) => {
                let c = s.get_ref().1;
                let version = c.protocol_version().map(|v| format!("{v:?}"));
                let suite = c
                    .negotiated_cipher_suite()
                    .map(|s| format!("{:?}", s.suite()));
                format!(
                    "{} {}",
                    version.unwrap_or_default(),
                    suite.unwrap_or_default()
                )
            }
            Conn::Legacy(s) => {
                let ssl = s.ssl();
                let cipher = ssl.current_cipher().map(|c| c.name()).unwrap_or("none");
                format!("{} {cipher}", ssl.version_str())
            }
            Conn::Plain(_) | Conn::Upgrading => "plaintext".into(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Conn<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Rustls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Legacy(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Upgrading => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Rustls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Legacy(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Upgrading => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Rustls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Legacy(s) => Pin::new(s).poll_flush(cx),
            Conn::Upgrading => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Rustls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Legacy(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Upgrading => Poll::Ready(Ok(())),
        }
    }
}
