//! TLS from PEM files: certificate chains, private keys and CA roots read with errors that
//! name the setting and the file, fax_smtp's STARTTLS server, and the mutual-TLS
//! configuration of the cluster port
//! (every node and `faxd sup` present a certificate signed by the cluster's CA, and check
//! the other side's against it). rustls with the aws-lc-rs provider already in the tree.

use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use tokio_rustls::rustls::pki_types::ServerName;
pub use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file named by setting `setting` is unreadable or holds nothing usable.
    #[error("{setting} {path}: {reason}")]
    File {
        setting: &'static str,
        path: String,
        reason: String,
    },
    #[error("TLS: {0}")]
    Config(String),
}

/// A [`TlsError::File`] for the file `path` of setting `setting`.
pub(crate) fn file_error(setting: &'static str, path: &str, reason: impl ToString) -> TlsError {
    TlsError::File {
        setting,
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

/// The certificate chain in the PEM file `path` (setting `setting`), leaf first.
pub fn certificates(
    setting: &'static str,
    path: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error(setting, path, e))?;
    if certs.is_empty() {
        return Err(file_error(setting, path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The private key in the PEM file `path` (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(setting: &'static str, path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(setting, path, e))
}

/// The trusted roots in the PEM file `path`.
pub fn roots(setting: &'static str, path: &str) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(setting, path)? {
        store.add(cert).map_err(|e| file_error(setting, path, e))?;
    }
    Ok(store)
}

/// The server name to check a peer's certificate against: the host of `host:port` (an IP
/// address or a DNS name).
pub fn server_name(addr: &str) -> Result<ServerName<'static>, TlsError> {
    // A port follows a bracketed IPv6 address or a host without colons; a bare IPv6
    // address (`::1`) has none.
    let host = match addr.rsplit_once(':') {
        Some((h, port))
            if port.parse::<u16>().is_ok() && (h.ends_with(']') || !h.contains(':')) =>
        {
            h
        }
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| TlsError::Config(format!("{addr}: not a host name or address: {e}")))
}

/// A TLS server without client certificates, from a chain and key in PEM files (STARTTLS of
/// fax_smtp: `[smtp] tls_cert`, `tls_key`). TLS 1.2 and 1.3 with rustls' default
/// (forward-secret) cipher suites.
pub fn server_acceptor(cert_path: &str, key_path: &str) -> Result<TlsAcceptor, TlsError> {
    let certs = certificates("smtp.tls_cert", cert_path)?;
    let key = private_key("smtp.tls_key", key_path)?;
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(format!("smtp.tls_cert/tls_key: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The PEM files of the cluster's TLS (`[cluster] tls_cert`, `tls_key`, `tls_ca`).
#[derive(Clone, Debug)]
pub struct ClusterFiles<'a> {
    pub cert: &'a str,
    pub key: &'a str,
    pub ca: &'a str,
}

/// Both sides of the cluster port's mutual TLS.
#[derive(Clone)]
pub struct ClusterTls {
    /// Accepts nodes and `faxd sup` clients whose certificate the CA signed.
    pub acceptor: TlsAcceptor,
    /// Dials other nodes, presenting this node's certificate.
    pub connector: TlsConnector,
}

impl ClusterTls {
    pub fn load(files: &ClusterFiles<'_>) -> Result<Self, TlsError> {
        let certs = certificates("cluster.tls_cert", files.cert)?;
        let key = private_key("cluster.tls_key", files.key)?;
        let roots = Arc::new(roots("cluster.tls_ca", files.ca)?);
        let verifier = WebPkiClientVerifier::builder(roots.clone())
            .build()
            .map_err(|e| TlsError::Config(format!("cluster client verifier: {e}")))?;
        let server = ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| TlsError::Config(format!("cluster.tls_cert/tls_key: {e}")))?;
        let client = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| TlsError::Config(format!("cluster.tls_cert/tls_key: {e}")))?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_host_part() {
        assert_eq!(
            server_name("127.0.0.1:4370").unwrap(),
            ServerName::try_from("127.0.0.1").unwrap()
        );
        assert_eq!(
            server_name("[::1]:4370").unwrap(),
            ServerName::try_from("::1").unwrap()
        );
        assert_eq!(
            server_name("fax1.example.net:4370").unwrap(),
            ServerName::try_from("fax1.example.net").unwrap()
        );
        assert_eq!(
            server_name("::1").unwrap(),
            ServerName::try_from("::1").unwrap()
        );
        assert!(server_name("bad host:1").is_err());
    }

    #[test]
    fn missing_and_empty_files_name_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem\n").unwrap();
        let e = certificates("cluster.tls_cert", empty.to_str().unwrap()).unwrap_err();
        assert!(e.to_string().starts_with("cluster.tls_cert "), "{e}");
        assert!(e.to_string().contains("no certificate"), "{e}");
        let e = private_key("cluster.tls_key", "/nonexistent/key.pem").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cluster.tls_key /nonexistent/key.pem"),
            "{e}"
        );
    }
}
