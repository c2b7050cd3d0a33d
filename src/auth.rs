//! Password storage. Kazoo clients log in with `credentials = md5("user:pass")` (or sha1);
//! faxd never stores those digests as they are: each user keeps a random salt and
//! SHA-256(salt ‖ digest) of both forms, so a leaked database does not hand out logins.

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

    /// Whether `credentials` (an md5 or sha1 login digest, hex) match, in constant time.
    pub fn verify(&self, credentials: &str) -> bool {
        let candidate = salted(&self.salt, credentials);
        let expected = match credentials.len() {
            32 => &self.md5,
            40 => &self.sha1,
            _ => return false,
        };
        candidate.len() == expected.len()
            && candidate
                .bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// A random password of `len` letters and digits.
pub fn random_password(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
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
    fn digests_match_known_values() {
        // echo -n 'user:pass' | md5sum / sha1sum
        let (md5, sha1) = login_digests("user", "pass");
        assert_eq!(md5, "21a39285884a268d6458e3fdeb08beac");
        assert_eq!(sha1, "b2619aa1529dfdc4248e6edbf3c1b2a2b014cf6d");
    }
}
