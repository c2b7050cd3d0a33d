//! Certificates for TLS tests, made by Debian's `openssl`: a CA and a certificate it signs
//! for 127.0.0.1 (server and client use).

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA in `dir/<ca>.pem` and a certificate it signs for 127.0.0.1 (server and client use):
/// returns (cert, key, ca) paths.
pub fn certificates(dir: &Path, ca: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let subj = format!("/CN={ca}");
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    let (ca_key, ca_pem) = (format!("{ca}.key"), format!("{ca}.pem"));
    args.extend([
        "-keyout", &ca_key, "-out", &ca_pem, "-days", "2", "-subj", &subj,
    ]);
    openssl(dir, &args);
    let (key, csr, pem) = (
        format!("{ca}-node.key"),
        format!("{ca}-node.csr"),
        format!("{ca}-node.pem"),
    );
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=faxd-node"]);
    openssl(dir, &args);
    let ext = format!("{ca}.ext");
    std::fs::write(
        dir.join(&ext),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
         extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
    (dir.join(pem), dir.join(key), dir.join(ca_pem))
}
