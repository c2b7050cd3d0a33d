//! Numbers and caller texts where they enter (API submissions, faxboxes, resubmit and
//! forward): destinations and caller ids in E.164 outside the deny list, a caller id that is
//! a number of the account (owned through its callflows, unless the account may use any),
//! and names, page headers and T.30 identities without control characters and bounded.

use serde_json::{Map, Value};

use crate::config::FaxConfig;
use crate::ids::AccountId;
use crate::numbers::{self, MAX_CALLER_TEXT, NumberError};
use crate::store::SharedStore;

use super::IntakeError;

/// Account field (private; an ancestor account's admin sets it through the public
/// `fax_allow_any_caller_id`) that lets an account use any caller id, as a carrier allows a
/// customer that proved its numbers elsewhere.
pub const ALLOW_ANY_CALLER_ID: &str = "pvt_fax_allow_any_caller_id";

/// What the account's numbers must satisfy.
#[derive(Clone, Debug)]
pub struct NumberPolicy {
    /// E.164 prefixes refused (`denied_number_prefixes`).
    pub denied: Vec<String>,
    /// Caller ids must be numbers of the account (`ensure_valid_caller_id`, unless the account
    /// has [`ALLOW_ANY_CALLER_ID`]).
    pub owned_caller_id: bool,
}

impl NumberPolicy {
    /// The policy for an account (its directory document) under the live `fax` config.
    pub fn for_account(fax: &FaxConfig, account_doc: &Value) -> Self {
        let allow_any = account_doc
            .get(ALLOW_ANY_CALLER_ID)
            .and_then(Value::as_bool)
            .unwrap_or(false);
        NumberPolicy {
            denied: fax.denied_number_prefixes.clone(),
            owned_caller_id: fax.ensure_valid_caller_id && !allow_any,
        }
    }

    /// A destination number: E.164, not denied.
    pub fn destination(&self, field: &str, raw: &str) -> Result<String, NumberError> {
        numbers::dialable(field, raw, &self.denied)
    }

    /// A caller id of `account`: E.164, not denied, and (when required) owned by the account.
    pub async fn caller_id(
        &self,
        store: &SharedStore,
        account: &AccountId,
        field: &str,
        raw: &str,
    ) -> Result<String, IntakeError> {
        let e164 = numbers::dialable(field, raw, &self.denied)?;
        if self.owned_caller_id {
            let owner = number_owner(store, &e164).await?;
            if owner.as_ref().map(|(a, _)| a) != Some(account) {
                return Err(NumberError::NotOwned {
                    field: field.to_string(),
                    value: e164,
                }
                .into());
            }
        }
        Ok(e164)
    }
}

pub use crate::accounts::{claim_id, number_owner};

/// Checks the caller texts of a document: `texts` are names and headers (no control
/// characters, at most [`MAX_CALLER_TEXT`]), `identities` T.30 identities. Absent or
/// non-string fields are the schema's business.
pub fn check_texts(
    doc: &Map<String, Value>,
    texts: &[&str],
    identities: &[&str],
) -> Result<(), NumberError> {
    for field in texts {
        if let Some(Value::String(s)) = doc.get(*field) {
            numbers::caller_text(field, s, MAX_CALLER_TEXT)?;
        }
    }
    for field in identities {
        if let Some(Value::String(s)) = doc.get(*field) {
            numbers::fax_identity(field, s)?;
        }
    }
    Ok(())
}
