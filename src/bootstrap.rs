//! First start: the global databases, the master account and its admin user.
//!
//! On an empty store faxd creates the master account (superduper admin, as in Kazoo), an
//! `admin` user with a random password, records the master account id in
//! `system_config/accounts`, and hands the credentials back so the binary can print them
//! once and write them to `<data_dir>/admin-credentials` (mode 0600).
//!
//! Nodes of a cluster that start together on an empty store race for the first-start
//! marker (`system_config/accounts`). Its saves are rev-checked, and on a CouchDB cluster,
//! where two of them can both succeed as conflicting revisions, read back with their
//! conflicts: the revision naming the smallest master account id wins on every node; the
//! losers remove their account and their revision and use the winner's.

use serde_json::{Value, json};

use crate::auth::{PasswordRecord, login_digests, random_password};
use crate::ids::{AccountId, Db, new_id};
use crate::store::{SharedStore, StoreError, conflicts};

/// `system_config` document that names the master account (Kazoo: `accounts`).
pub const ACCOUNTS_CONFIG: &str = "accounts";

/// Credentials of the admin user created at first start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminCredentials {
    pub account_id: AccountId,
    pub account_name: String,
    pub realm: String,
    pub username: String,
    pub password: String,
}

impl AdminCredentials {
    /// A fresh master account's credentials (new id, random password).
    fn new_master() -> Self {
        AdminCredentials {
            account_id: AccountId::generate(),
            account_name: "master".into(),
            realm: "master.faxd.local".into(),
            username: "admin".into(),
            password: random_password(20),
        }
    }

    /// The file form: `key=value` lines, including the `credentials` digest that
    /// `PUT /v2/user_auth` takes.
    pub fn to_file(&self) -> String {
        let (md5, _) = login_digests(&self.username, &self.password);
        format!(
            "# faxd admin credentials, created at first start. Keep this file private.\n\
             account_id={}\naccount_name={}\nrealm={}\nusername={}\npassword={}\ncredentials={}\n",
            self.account_id, self.account_name, self.realm, self.username, self.password, md5
        )
    }
}

/// The global databases every node needs.
pub const GLOBAL_DBS: [Db; 3] = [Db::Faxes, Db::Accounts, Db::SystemConfig];

/// Creates the global databases (and their design documents) if missing.
pub async fn ensure_global_dbs(store: &SharedStore) -> Result<(), StoreError> {
    for db in GLOBAL_DBS {
        store.ensure_db(&db).await?;
    }
    Ok(())
}

/// The master account id, if one exists.
pub async fn master_account(store: &SharedStore) -> Result<Option<AccountId>, StoreError> {
    let doc = read_marker(store).await?;
    Ok(doc.as_ref().and_then(master_of))
}

/// The first-start marker: its winning revision when first starts left conflicting ones
/// (the losing ones are deleted).
async fn read_marker(store: &SharedStore) -> Result<Option<Value>, StoreError> {
    // A revision naming a master beats one without; then the smaller account id.
    let rank = |doc: &Value| {
        let master = master_of(doc);
        (master.is_none(), master.map(|m| m.to_string()))
    };
    conflicts::resolve(store, &Db::SystemConfig, ACCOUNTS_CONFIG, rank).await
}

/// After this node's marker naming `creds`' account was saved: reads it back with its
/// conflicts. `Some(creds)` if it won; else this node's account is removed and the winner's
/// is used (`None`).
async fn confirm_marker(
    store: &SharedStore,
    creds: AdminCredentials,
) -> Result<Option<AdminCredentials>, StoreError> {
    let master = master_account(store).await?;
    if master.as_ref() == Some(&creds.account_id) {
        return Ok(Some(creds));
    }
    discard_account(store, &creds.account_id).await;
    Ok(None)
}

/// Creates the master account and admin user when the store has none. Returns the new
/// credentials, or `None` when a master account already exists.
pub async fn ensure_master_account(
    store: &SharedStore,
) -> Result<Option<AdminCredentials>, StoreError> {
    if master_account(store).await?.is_some() {
        return Ok(None);
    }
    let creds = AdminCredentials::new_master();
    create_master_candidate(store, &creds).await?;
    // Last: the marker that the store is initialised. A crash before this point leaves an
    // unreferenced account and the next start creates a fresh one. Nodes of a cluster that
    // start together on an empty store each get this far: the marker is written rev-checked
    // and read back, so exactly one wins; the others remove the account they made and use
    // the winner's.
    for _ in 0..MARKER_ATTEMPTS {
        let mut doc = read_marker(store)
            .await?
            .unwrap_or_else(|| json!({"_id": ACCOUNTS_CONFIG}));
        if master_of(&doc).is_some() {
            discard_account(store, &creds.account_id).await;
            return Ok(None);
        }
        if !doc.get("default").is_some_and(Value::is_object) {
            doc["default"] = json!({});
        }
        doc["default"]["master_account_id"] = json!(creds.account_id.as_str());
        match store.save(&Db::SystemConfig, doc).await {
            Ok(_) => return confirm_marker(store, creds).await,
            // Another node wrote it meanwhile: read it again.
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict)
}

/// The account and admin user a first start makes before it writes the marker.
async fn create_master_candidate(
    store: &SharedStore,
    creds: &AdminCredentials,
) -> Result<(), StoreError> {
    create_account(
        store,
        &creds.account_id,
        &creds.account_name,
        &creds.realm,
        None,
        true,
    )
    .await?;
    create_user(
        store,
        &creds.account_id,
        &creds.username,
        &creds.password,
        "admin",
    )
    .await?;
    Ok(())
}

/// Rev-checked writes of the first-start marker before giving up (each conflict means another
/// node wrote it; the next read normally finds its master account).
const MARKER_ATTEMPTS: usize = 10;

/// The master account a `system_config/accounts` document names.
fn master_of(doc: &Value) -> Option<AccountId> {
    doc.pointer("/default/master_account_id")
        .and_then(Value::as_str)
        .and_then(|s| AccountId::parse(s).ok())
}

/// Removes an account made by a first start that lost the race for the marker (best effort:
/// what is left is an unreferenced account nobody can log in to).
async fn discard_account(store: &SharedStore, id: &AccountId) {
    if let Ok(Some(doc)) = store.get(&Db::Accounts, id.as_str()).await
        && let Some(rev) = doc.get("_rev").and_then(Value::as_str)
        && let Err(e) = store.delete(&Db::Accounts, id.as_str(), rev).await
    {
        tracing::warn!(account_id = %id, error = %e, "could not remove the spare first-start account");
    }
    if let Err(e) = store.delete_db(&Db::Account(id.clone())).await {
        tracing::warn!(account_id = %id, error = %e, "could not remove the spare first-start account database");
    }
}

/// Creates an account: its database and its document (in the account database and in
/// `accounts`). `parent` is the parent account; the master has none.
pub async fn create_account(
    store: &SharedStore,
    id: &AccountId,
    name: &str,
    realm: &str,
    parent: Option<&AccountId>,
    superduper: bool,
) -> Result<Value, StoreError> {
    let db = Db::Account(id.clone());
    store.ensure_db(&db).await?;
    let now = crate::time::now_gregorian();
    let tree: Vec<String> = match parent {
        Some(p) => {
            let parent_doc = store.get(&Db::Accounts, p.as_str()).await?;
            let mut tree: Vec<String> = parent_doc
                .as_ref()
                .and_then(|d| d.get("pvt_tree"))
                .and_then(|t| serde_json::from_value(t.clone()).ok())
                .unwrap_or_default();
            tree.push(p.to_string());
            tree
        }
        None => vec![],
    };
    let doc = json!({
        "_id": id.as_str(),
        "name": name,
        "realm": realm,
        "timezone": "UTC",
        "pvt_type": "account",
        "pvt_account_id": id.as_str(),
        "pvt_account_db": db.name(),
        "pvt_tree": tree,
        "pvt_enabled": true,
        "pvt_superduper_admin": superduper,
        "pvt_api_key": format!("{}{}", new_id(), new_id()),
        "pvt_created": now,
        "pvt_modified": now,
    });
    let saved = store.save(&db, doc.clone()).await?;
    store.save(&Db::Accounts, doc).await?;
    Ok(saved)
}

/// Creates a user in an account, named "Account Admin" as the maintenance command names the
/// admin of a new account (the users schema wants both names, non-empty).
pub async fn create_user(
    store: &SharedStore,
    account: &AccountId,
    username: &str,
    password: &str,
    priv_level: &str,
) -> Result<Value, StoreError> {
    let now = crate::time::now_gregorian();
    let record = PasswordRecord::new(username, password);
    let doc = json!({
        "_id": new_id(),
        "username": username.to_lowercase(),
        "first_name": "Account",
        "last_name": "Admin",
        "priv_level": priv_level,
        "enabled": true,
        "timezone": "UTC",
        "pvt_type": "user",
        "pvt_auth": record,
        "pvt_account_id": account.as_str(),
        "pvt_account_db": Db::Account(account.clone()).name(),
        "pvt_created": now,
        "pvt_modified": now,
    });
    store.save(&Db::Account(account.clone()), doc).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn first_starts_racing_on_one_store_leave_one_master() {
        let (store, _dir) = crate::store::sqlite::test_store().await;
        let starts: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { ensure_master_account(&store).await })
            })
            .collect();
        let mut created = Vec::new();
        for s in starts {
            if let Some(c) = s.await.unwrap().expect("no first start fails") {
                created.push(c);
            }
        }
        assert_eq!(created.len(), 1, "one node announces the admin");
        let master = master_account(&store).await.unwrap();
        assert_eq!(master, Some(created[0].account_id.clone()));
        // Only the winner's account is left.
        let accounts = store.docs_by_type(&Db::Accounts, "account").await.unwrap();
        let ids: Vec<&str> = accounts.iter().filter_map(|d| d["_id"].as_str()).collect();
        assert_eq!(ids, vec![created[0].account_id.as_str()]);
    }

    /// Two nodes' first starts both saved the marker: first revisions that a CouchDB
    /// cluster accepted as conflicting ones (written here with `new_edits: false`). However
    /// they read back, one master account is left (the smaller id, not CouchDB's own
    /// winner), the other node's account and marker revision are gone.
    #[tokio::test]
    async fn conflicting_first_start_markers_leave_one_master_on_couchdb() {
        let couch = Arc::new(crate::store::couch::test_server().await);
        let store: SharedStore = couch.clone();
        ensure_global_dbs(&store).await.unwrap();
        // No other test of this process uses the marker; what the server had is put back.
        let db = Db::SystemConfig;
        let prior = store.get(&db, ACCOUNTS_CONFIG).await.unwrap();
        for leaf in store.get_leaves(&db, ACCOUNTS_CONFIG).await.unwrap() {
            store
                .delete(&db, ACCOUNTS_CONFIG, leaf["_rev"].as_str().unwrap())
                .await
                .unwrap();
        }
        for (round, winner_reads_first) in [false, true].into_iter().enumerate() {
            let mut both = [
                AdminCredentials::new_master(),
                AdminCredentials::new_master(),
            ];
            both.sort_by(|x, y| x.account_id.as_str().cmp(y.account_id.as_str()));
            let [win, lose] = both;
            for c in [&win, &lose] {
                create_master_candidate(&store, c).await.unwrap();
            }
            // CouchDB's own winner is the loser's revision (higher hash).
            for (c, hash) in [
                (&lose, format!("f{round:031x}")),
                (&win, format!("0{round:031x}")),
            ] {
                let marker = json!({"_id": ACCOUNTS_CONFIG,
                                    "default": {"master_account_id": c.account_id.as_str()}});
                couch
                    .write_replicated(&db, None, &hash, marker)
                    .await
                    .unwrap();
            }
            assert_eq!(
                store.get_leaves(&db, ACCOUNTS_CONFIG).await.unwrap().len(),
                2
            );
            let seen = store.get(&db, ACCOUNTS_CONFIG).await.unwrap().unwrap();
            assert_eq!(master_of(&seen).as_ref(), Some(&lose.account_id));

            let (w, l) = if winner_reads_first {
                let w = confirm_marker(&store, win.clone()).await.unwrap();
                (w, confirm_marker(&store, lose.clone()).await.unwrap())
            } else {
                let l = confirm_marker(&store, lose.clone()).await.unwrap();
                (confirm_marker(&store, win.clone()).await.unwrap(), l)
            };
            assert_eq!(w.as_ref(), Some(&win), "the winner announces its admin");
            assert_eq!(l, None, "the loser uses the winner's master");
            let leaves = store.get_leaves(&db, ACCOUNTS_CONFIG).await.unwrap();
            assert_eq!(leaves.len(), 1, "{leaves:?}");
            assert_eq!(master_of(&leaves[0]).as_ref(), Some(&win.account_id));
            assert_eq!(
                master_account(&store).await.unwrap(),
                Some(win.account_id.clone())
            );
            assert_eq!(ensure_master_account(&store).await.unwrap(), None);
            assert!(
                store
                    .get(&Db::Accounts, lose.account_id.as_str())
                    .await
                    .unwrap()
                    .is_none()
            );
            assert!(
                !store
                    .db_exists(&Db::Account(lose.account_id.clone()))
                    .await
                    .unwrap()
            );
            assert!(
                store
                    .get(&Db::Accounts, win.account_id.as_str())
                    .await
                    .unwrap()
                    .is_some()
            );

            store
                .delete(&db, ACCOUNTS_CONFIG, leaves[0]["_rev"].as_str().unwrap())
                .await
                .unwrap();
            discard_account(&store, &win.account_id).await;
        }
        if let Some(mut doc) = prior
            && let Some(o) = doc.as_object_mut()
        {
            o.remove("_rev");
            store.save(&db, doc).await.unwrap();
        }
    }

    #[tokio::test]
    async fn first_start_creates_master_once() {
        let (store, dir) = crate::store::sqlite::test_store().await;
        let creds = ensure_master_account(&store)
            .await
            .unwrap()
            .expect("created");
        assert_eq!(
            master_account(&store).await.unwrap(),
            Some(creds.account_id.clone())
        );
        assert!(ensure_master_account(&store).await.unwrap().is_none());
        let account = store
            .get(&Db::Accounts, creds.account_id.as_str())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(account["pvt_superduper_admin"], true);
        let file = creds.to_file();
        assert!(file.contains(&format!("password={}", creds.password)));
        let (md5, _) = login_digests("admin", &creds.password);
        assert!(file.contains(&md5));
        // The password itself is nowhere in the store's files (database and WAL).
        let mut raw = Vec::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                raw.extend(std::fs::read(&path).unwrap());
            }
        }
        assert!(
            raw.windows(8).any(|w| w == b"pvt_auth"),
            "store files not read"
        );
        assert!(
            !raw.windows(creds.password.len())
                .any(|w| w == creds.password.as_bytes())
        );
    }
}
