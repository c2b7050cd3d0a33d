//! Auth tokens: signed (HMAC-SHA256 with a key every node reads from the store), expiring,
//! and revocable (a revoked token's id is recorded in the store until it would have expired).
//!
//! Wire form: `base64url(claims JSON) "." base64url(signature)`. Clients treat it as opaque.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use crate::auth::hmac_sha256;
use crate::ids::{Db, new_id};
use crate::store::{SharedStore, StoreError};

/// `system_config` document holding the token signing key.
pub const KEY_DOC: &str = "crossbar.auth_keys";
/// Prefix of the revocation records in the `accounts` database.
const REVOKED_PREFIX: &str = "revoked_token-";
/// `pvt_type` of a revocation record.
const REVOKED_TYPE: &str = "revoked_token";

/// What a token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Token id (for revocation).
    pub jti: String,
    pub account_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    /// `cb_user_auth` or `cb_api_auth`.
    pub method: String,
    /// Expiry, unix seconds.
    pub exp: i64,
    pub iss: String,
    /// Signature of the identity's current secret (the user's password salt, or the account's
    /// API key for API tokens): changing the password or regenerating the key voids the
    /// tokens issued before.
    #[serde(default)]
    pub identity: String,
}

/// The identity signature of a secret.
pub fn identity_sig(key: &[u8], secret: &str) -> String {
    hex::encode(&hmac_sha256(key, secret.as_bytes())[..16])
}

/// Why a token was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("bad signature")]
    Signature,
    #[error("token expired")]
    Expired,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// Signs claims into a token.
pub fn sign(key: &[u8], claims: &Claims) -> String {
    let payload = b64().encode(serde_json::to_vec(claims).unwrap_or_default());
    let sig = b64().encode(hmac_sha256(key, payload.as_bytes()));
    format!("{payload}.{sig}")
}

/// Checks a token's signature and expiry (`now` in unix seconds) and returns its claims.
pub fn verify(key: &[u8], token: &str, now: i64) -> Result<Claims, TokenError> {
    let (payload, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let sig = b64().decode(sig).map_err(|_| TokenError::Malformed)?;
    let expected = hmac_sha256(key, payload.as_bytes());
    if sig.len() != expected.len()
        || sig
            .iter()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            != 0
    {
        return Err(TokenError::Signature);
    }
    let bytes = b64().decode(payload).map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// New claims for an account (and user), valid `lifetime_s` from now.
pub fn new_claims(
    account_id: &str,
    owner_id: Option<&str>,
    method: &str,
    lifetime_s: u64,
) -> Claims {
    Claims {
        jti: new_id(),
        account_id: account_id.to_string(),
        owner_id: owner_id.map(str::to_string),
        method: method.to_string(),
        exp: chrono::Utc::now().timestamp() + lifetime_s as i64,
        iss: "faxd".into(),
        identity: String::new(),
    }
}

/// The signing key shared by the cluster: read from `system_config`, created on first use
/// (a concurrent creator wins and everybody reads its key).
pub async fn load_or_create_key(store: &SharedStore) -> Result<Vec<u8>, StoreError> {
    for _ in 0..3 {
        if let Some(doc) = store.get(&Db::SystemConfig, KEY_DOC).await?
            && let Some(k) = doc.get("pvt_signing_key").and_then(Value::as_str)
            && let Ok(key) = hex::decode(k)
            && key.len() >= 32
        {
            return Ok(key);
        }
        let key = format!("{}{}", new_id(), new_id());
        match store
            .save(
                &Db::SystemConfig,
                json!({"_id": KEY_DOC, "pvt_signing_key": key}),
            )
            .await
        {
            Ok(_) | Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Backend("token signing key unavailable".into()))
}

/// Records a token as revoked (until it expires).
pub async fn revoke(store: &SharedStore, claims: &Claims) -> Result<(), StoreError> {
    let doc = json!({
        "_id": revocation_id(claims),
        "pvt_type": REVOKED_TYPE,
        "exp": claims.exp,
    });
    match store.save(&Db::Accounts, doc).await {
        Ok(_) | Err(StoreError::Conflict) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The id of a token's revocation record in the `accounts` database (present once revoked).
pub fn revocation_id(claims: &Claims) -> String {
    format!("{REVOKED_PREFIX}{}", claims.jti)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_expire() {
        let key = b"0123456789abcdef0123456789abcdef";
        let claims = new_claims("a", Some("u"), "cb_user_auth", 60);
        let t = sign(key, &claims);
        assert_eq!(
            verify(key, &t, chrono::Utc::now().timestamp()),
            Ok(claims.clone())
        );
        assert_eq!(verify(key, &t, claims.exp), Err(TokenError::Expired));
        assert_eq!(verify(b"other key", &t, 0), Err(TokenError::Signature));
        assert_eq!(verify(key, "undefined", 0), Err(TokenError::Malformed));
        let (p, s) = t.split_once('.').unwrap();
        let forged = format!("{}x.{s}", p);
        assert!(verify(key, &forged, 0).is_err());
        // RFC 4231 test case 2
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
