//! The media engine's [`NumberDirectory`] backed by the store: a number is local when a
//! callflow of some account owns it (its claim in the `accounts` database). A store that
//! cannot answer counts the number as local: the inbound side then refuses the call with a
//! temporary failure and the sender retries, instead of a fax for one of our users going to
//! the outside network.

use async_trait::async_trait;

use crate::gateway::NumberDirectory;
use crate::store::SharedStore;

/// Numbers owned by callflows in the store.
pub struct CallflowNumbers {
    store: SharedStore,
}

impl CallflowNumbers {
    pub fn new(store: SharedStore) -> Self {
        Self { store }
    }
}

#[async_trait]
impl NumberDirectory for CallflowNumbers {
    async fn is_local(&self, number: &str) -> bool {
        match crate::intake::numbers::number_owner(&self.store, number).await {
            Ok(owner) => owner.is_some(),
            Err(e) => {
                tracing::warn!(to_number = %number, error = %e, "number directory unreadable: treating the number as local");
                true
            }
        }
    }
}
