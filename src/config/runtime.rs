//! Live `system_config/fax` values: loaded from the store at start, reloaded when the stored
//! document changes (so running processes pick up `faxd sup kapps_config set` without a
//! restart), and the account → reseller → system cascade of the per-account keys.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::watch;

use super::fax::{FaxConfig, FaxConfigError};
use crate::ids::{AccountId, Db};
use crate::store::{SharedStore, StoreError};

/// Id of the fax category document in `system_config`.
pub const FAX_CATEGORY: &str = "fax";
/// Id of an account's fax config document in its account database.
pub const ACCOUNT_FAX_CONFIG: &str = "configs_fax";
/// The keys an account (or its reseller) may override.
pub const ACCOUNT_KEYS: [&str; 3] = ["max_outbound", "default_smtp_domain", "log_faxbox_errors"];

/// Errors reading or changing the stored configuration.
#[derive(Debug, thiserror::Error)]
pub enum SystemConfigError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fax(#[from] FaxConfigError),
    #[error("the stored fax config kept changing; gave up after {0} attempts")]
    Contended(u32),
}

/// The live fax configuration of this node.
pub struct SystemConfig {
    store: SharedStore,
    node: String,
    tx: watch::Sender<Arc<FaxConfig>>,
}

impl SystemConfig {
    /// Loads the stored `system_config/fax` (defaults when absent).
    pub async fn load(store: SharedStore, node: &str) -> Result<Arc<Self>, SystemConfigError> {
        let (tx, _) = watch::channel(Arc::new(FaxConfig::default()));
        let this = Arc::new(Self {
            store,
            node: node.to_string(),
            tx,
        });
        this.reload().await?;
        Ok(this)
    }

    /// The current values.
    pub fn fax(&self) -> Arc<FaxConfig> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every new set of values.
    pub fn watch(&self) -> watch::Receiver<Arc<FaxConfig>> {
        self.tx.subscribe()
    }

    /// Re-reads the stored document. A document with a bad value is reported and the values
    /// in force are kept.
    pub async fn reload(&self) -> Result<(), SystemConfigError> {
        let doc = self
            .store
            .get(&Db::SystemConfig, FAX_CATEGORY)
            .await?
            .unwrap_or_else(|| json!({}));
        let fax = FaxConfig::from_doc(&doc, &self.node)?;
        self.tx.send_if_modified(|cur| {
            if **cur == fax {
                false
            } else {
                *cur = Arc::new(fax);
                true
            }
        });
        Ok(())
    }

    /// The effective value of one key on this node.
    pub fn get_key(&self, key: &str) -> Result<Value, SystemConfigError> {
        self.fax()
            .get(key)
            .ok_or_else(|| FaxConfigError::UnknownKey(key.to_string()).into())
    }

    /// Stores one key in the `default` section of `system_config/fax` (validated), then
    /// reloads. Returns the value now in force.
    pub async fn set_key(&self, key: &str, value: Value) -> Result<Value, SystemConfigError> {
        FaxConfig::check(key, &value)?;
        const ATTEMPTS: u32 = 10;
        for _ in 0..ATTEMPTS {
            let mut doc = self
                .store
                .get(&Db::SystemConfig, FAX_CATEGORY)
                .await?
                .unwrap_or_else(|| json!({"_id": FAX_CATEGORY}));
            if !doc.get("default").is_some_and(Value::is_object) {
                doc["default"] = json!({});
            }
            doc["default"][key] = value.clone();
            match self.store.save(&Db::SystemConfig, doc).await {
                Ok(_) => {
                    self.reload().await?;
                    return self.get_key(key);
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(SystemConfigError::Contended(ATTEMPTS))
    }

    /// A per-account key through the cascade: the account's `configs_fax`, then its reseller's,
    /// then the system value.
    pub async fn account_value(
        &self,
        account: &AccountId,
        key: &str,
    ) -> Result<Value, SystemConfigError> {
        if let Some(v) = self.account_override(account, key).await? {
            return Ok(v);
        }
        if let Some(reseller) = self.reseller_of(account).await?
            && reseller != *account
            && let Some(v) = self.account_override(&reseller, key).await?
        {
            return Ok(v);
        }
        self.get_key(key)
    }

    /// `max_outbound` for an account.
    pub async fn max_outbound(&self, account: &AccountId) -> Result<u32, SystemConfigError> {
        let v = self.account_value(account, "max_outbound").await?;
        Ok(v.as_u64()
            .map(|n| n.min(u32::MAX as u64) as u32)
            .unwrap_or(self.fax().max_outbound))
    }

    /// `default_smtp_domain` for an account.
    pub async fn default_smtp_domain(
        &self,
        account: &AccountId,
    ) -> Result<String, SystemConfigError> {
        let v = self.account_value(account, "default_smtp_domain").await?;
        Ok(v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| self.fax().default_smtp_domain.clone()))
    }

    /// `log_faxbox_errors` for an account.
    pub async fn log_faxbox_errors(&self, account: &AccountId) -> Result<bool, SystemConfigError> {
        let v = self.account_value(account, "log_faxbox_errors").await?;
        Ok(v.as_bool().unwrap_or(self.fax().log_faxbox_errors))
    }

    async fn account_override(
        &self,
        account: &AccountId,
        key: &str,
    ) -> Result<Option<Value>, SystemConfigError> {
        let db = Db::Account(account.clone());
        let doc = match self.store.get(&db, ACCOUNT_FAX_CONFIG).await {
            Ok(d) => d,
            Err(StoreError::NoDatabase(_)) => None,
            Err(e) => return Err(e.into()),
        };
        match doc.and_then(|d| d.get(key).cloned()) {
            Some(v) if !v.is_null() => {
                FaxConfig::check(key, &v)?;
                Ok(Some(v))
            }
            _ => Ok(None),
        }
    }

    async fn reseller_of(&self, account: &AccountId) -> Result<Option<AccountId>, StoreError> {
        let doc = match self.store.get(&Db::Accounts, account.as_str()).await {
            Ok(d) => d,
            Err(StoreError::NoDatabase(_)) => None,
            Err(e) => return Err(e),
        };
        Ok(doc
            .and_then(|d| d.get("pvt_reseller_id").cloned())
            .and_then(|v| v.as_str().and_then(|s| AccountId::parse(s).ok())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::sqlite::SqliteStore;

    async fn store() -> (SharedStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).await.unwrap();
        for db in [Db::SystemConfig, Db::Accounts] {
            s.ensure_db(&db).await.unwrap();
        }
        (Arc::new(s), dir)
    }

    #[tokio::test]
    async fn set_key_is_validated_stored_and_live() {
        let (store, _d) = store().await;
        let cfg = SystemConfig::load(store.clone(), "faxd@a").await.unwrap();
        let mut rx = cfg.watch();
        assert_eq!(cfg.fax().max_outbound, 10);
        assert_eq!(
            cfg.set_key("max_outbound", json!(25)).await.unwrap(),
            json!(25)
        );
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().max_outbound, 25);
        let doc = store.get(&Db::SystemConfig, "fax").await.unwrap().unwrap();
        assert_eq!(doc["default"]["max_outbound"], 25);
        assert!(cfg.set_key("max_outbound", json!("x")).await.is_err());
        assert!(cfg.set_key("no_such_key", json!(1)).await.is_err());
        // Another node (or `sup`) writes the document: a reload picks it up.
        let other = SystemConfig::load(store.clone(), "faxd@b").await.unwrap();
        other.set_key("smtp_port", json!(2626)).await.unwrap();
        cfg.reload().await.unwrap();
        assert_eq!(cfg.fax().smtp_port, 2626);
    }

    #[tokio::test]
    async fn account_reseller_system_cascade() {
        let (store, _d) = store().await;
        let cfg = SystemConfig::load(store.clone(), "faxd@a").await.unwrap();
        let reseller = AccountId::generate();
        let account = AccountId::generate();
        let other = AccountId::generate();
        for a in [&reseller, &account] {
            store.ensure_db(&Db::Account(a.clone())).await.unwrap();
        }
        store
            .save(
                &Db::Accounts,
                json!({"_id": account.as_str(), "pvt_reseller_id": reseller.as_str()}),
            )
            .await
            .unwrap();
        assert_eq!(cfg.max_outbound(&account).await.unwrap(), 10);
        store
            .save(
                &Db::Account(reseller.clone()),
                json!({"_id": "configs_fax", "max_outbound": 4, "default_smtp_domain": "fax.reseller.example"}),
            )
            .await
            .unwrap();
        assert_eq!(cfg.max_outbound(&account).await.unwrap(), 4);
        store
            .save(
                &Db::Account(account.clone()),
                json!({"_id": "configs_fax", "max_outbound": 2}),
            )
            .await
            .unwrap();
        assert_eq!(cfg.max_outbound(&account).await.unwrap(), 2);
        assert_eq!(
            cfg.default_smtp_domain(&account).await.unwrap(),
            "fax.reseller.example"
        );
        assert!(cfg.log_faxbox_errors(&account).await.unwrap());
        // An account without any config of its own, nor a database: system values.
        assert_eq!(cfg.max_outbound(&other).await.unwrap(), 10);
        cfg.set_key("max_outbound", json!(6)).await.unwrap();
        assert_eq!(cfg.max_outbound(&other).await.unwrap(), 6);
        assert_eq!(cfg.max_outbound(&account).await.unwrap(), 2);
    }
}
