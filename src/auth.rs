//! Password storage. Kazoo clients log in with `credentials = md5("user:pass")` (or sha1);
//! faxd never stores those digests as they are: each user keeps a random salt and
//! SHA-256(salt ‖ digest) of both forms, so a leaked database does not hand out logins.
//!
//! Users imported from Kazoo arrive with Kazoo's bare digests (`pvt_md5_auth`,
//! `pvt_sha1_auth`): [`legacy_matches`] checks a login against them, and
//! [`PasswordRecord::from_digests`] turns them into faxd's record at the first login.

use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// The stored form of a user's password (`pvt_auth` on the user document).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordRecord {
    pub salt: String,
    /// SHA-256(salt ‖ md5("user:pass") as lowercase hex), hex.
    pub md5: String,
    /// SHA-256(salt ‖ sha1("user:pass") as lowercase hex), hex.
    pub sha1: String,
}

/// `md5("user:pass")` and `sha1("user:pass")` in lowercase hex, as clients send them. Kazoo
/// lower-cases the username first.
pub fn login_digests(username: &str, password: &str) -> (String, String) {
    let joined = format!("{}:{}", username.to_lowercase(), password);
    let md5 = hex::encode(md5::Md5::digest(joined.as_bytes()));
    let sha1 = hex::encode(sha1::Sha1::digest(joined.as_bytes()));
    (md5, sha1)
}

fn salted(salt: &str, digest: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(salt.as_bytes());
    h.update(digest.to_ascii_lowercase().as_bytes());
    hex::encode(h.finalize())
}

impl PasswordRecord {
    /// The record for a username and password.
    pub fn new(username: &str, password: &str) -> Self {
        let salt = crate::ids::new_id();
        let (md5, sha1) = login_digests(username, password);
        Self {
            md5: salted(&salt, &md5),
            sha1: salted(&salt, &sha1),
            salt,
        }
    }

    /// The record for login digests already computed (Kazoo's `pvt_md5_auth` and
    /// `pvt_sha1_auth`): both forms keep working. A missing or malformed digest leaves that
    /// form unusable; `None` when neither is a digest.
    pub fn from_digests(md5: Option<&str>, sha1: Option<&str>) -> Option<Self> {
        let md5 = md5.filter(|d| is_hex_len(d, 32));
        let sha1 = sha1.filter(|d| is_hex_len(d, 40));
        if md5.is_none() && sha1.is_none() {
            return None;
        }
        let salt = crate::ids::new_id();
        Some(Self {
            md5: md5.map(|d| salted(&salt, d)).unwrap_or_default(),
            sha1: sha1.map(|d| salted(&salt, d)).unwrap_or_default(),
            salt,
        })
    }

    /// Whether this record accepts exactly the given digests (each one that is present).
    pub fn holds_digests(&self, md5: Option<&str>, sha1: Option<&str>) -> bool {
        md5.is_none_or(|d| self.verify(d)) && sha1.is_none_or(|d| self.verify(d))
    }

    /// Whether `credentials` (an md5 or sha1 login digest, hex) match, in constant time.
    pub fn verify(&self, credentials: &str) -> bool {
        let candidate = salted(&self.salt, credentials);
        let expected = match credentials.len() {
            32 => &self.md5,
            40 => &self.sha1,
            _ => return false,
        };
        same(&candidate, expected)
    }
}

/// Constant-time equality of two byte strings (false when the lengths differ): secrets
/// (login digests, file tokens) are compared without telling how much of them matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn same(a: &str, b: &str) -> bool {
    constant_time_eq(a.as_bytes(), b.as_bytes())
}

fn is_hex_len(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `credentials` match a Kazoo user's bare digests: md5 (32 hex) against
/// `pvt_md5_auth`, sha1 (40 hex) against `pvt_sha1_auth`, case-insensitively, in constant
/// time.
pub fn legacy_matches(md5: Option<&str>, sha1: Option<&str>, credentials: &str) -> bool {
    let stored = match credentials.len() {
        32 => md5,
        40 => sha1,
        _ => None,
    };
    stored.is_some_and(|s| same(&s.to_ascii_lowercase(), &credentials.to_ascii_lowercase()))
}

/// A random password of `len` letters and digits.
pub fn random_password(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&sha2::Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = sha2::Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let inner = inner.finalize();
    let mut outer = sha2::Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_verify_both_digest_forms_only() {
        let rec = PasswordRecord::new("Admin", "s3cret");
        let (md5, sha1) = login_digests("admin", "s3cret");
        assert!(rec.verify(&md5));
        assert!(rec.verify(&md5.to_uppercase()));
        assert!(rec.verify(&sha1));
        let (wrong, _) = login_digests("admin", "guess");
        assert!(!rec.verify(&wrong));
        assert!(!rec.verify("short"));
        assert!(!rec.md5.contains(&md5));
        assert_ne!(
            PasswordRecord::new("a", "b").salt,
            PasswordRecord::new("a", "b").salt
        );
        let p = random_password(20);
        assert_eq!(p.len(), 20);
        assert!(p.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn kazoo_digests_log_in_and_become_a_record() {
        let (md5, sha1) = login_digests("fax", "kazoo-pass");
        assert!(legacy_matches(Some(&md5), Some(&sha1), &md5));
        assert!(legacy_matches(
            Some(&md5),
            Some(&sha1),
            &sha1.to_uppercase()
        ));
        let (wrong, wrong_sha) = login_digests("fax", "other");
        assert!(!legacy_matches(Some(&md5), Some(&sha1), &wrong));
        assert!(!legacy_matches(Some(&md5), Some(&sha1), &wrong_sha));
        assert!(!legacy_matches(None, Some(&sha1), &md5));
        assert!(!legacy_matches(Some(&md5), Some(&sha1), ""));

        let rec = PasswordRecord::from_digests(Some(&md5), Some(&sha1)).unwrap();
        assert!(rec.verify(&md5) && rec.verify(&sha1));
        assert!(!rec.verify(&wrong));
        assert!(rec.holds_digests(Some(&md5), Some(&sha1)));
        assert!(!rec.holds_digests(Some(&wrong), Some(&sha1)));
        // The record of a password and the record of its digests accept the same logins.
        let direct = PasswordRecord::new("fax", "kazoo-pass");
        assert!(direct.holds_digests(Some(&md5), Some(&sha1)));

        let md5_only = PasswordRecord::from_digests(Some(&md5), None).unwrap();
        assert!(md5_only.verify(&md5));
        assert!(!md5_only.verify(&sha1));
        assert!(PasswordRecord::from_digests(Some("not hex"), None).is_none());
    }

    #[test]
    fn digests_match_known_values() {
        // echo -n 'user:pass' | md5sum / sha1sum
        let (md5, sha1) = login_digests("user", "pass");
        assert_eq!(md5, "21a39285884a268d6458e3fdeb08beac");
        assert_eq!(sha1, "b2619aa1529dfdc4248e6edbf3c1b2a2b014cf6d");
    }
}
