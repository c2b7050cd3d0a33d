//! Accounts, their faxboxes and their numbers, as every way in (API, e-mail to fax, inbound
//! calls) needs them: live account and faxbox documents, the reseller of an account, the zone
//! a user or account works in, and which account owns a number (claims made for callflows,
//! unique across the system). Errors are domain errors ([`AccountsError`]); the API maps them
//! to its envelope once.

use serde_json::{Value, json};

use crate::auth::PasswordRecord;
use crate::ids::{AccountId, Db};
use crate::store::{SharedStore, StoreError};
use crate::timezone;

/// What an accounts rule can refuse.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The account is missing or deleted.
    #[error("account {0} not found")]
    AccountNotFound(String),
    /// The faxbox is not a live faxbox of the account.
    #[error("faxbox {0} not found")]
    FaxboxNotFound(String),
    /// A number is claimed already: by another callflow of the same account (its id and
    /// name), or by another account.
    #[error("{}", claimed_message(.number, .callflow.as_ref()))]
    NumberClaimed {
        number: String,
        callflow: Option<(String, String)>,
    },
}

fn claimed_message(number: &str, callflow: Option<&(String, String)>) -> String {
    match callflow {
        Some((id, name)) => format!("{number} exists in callflow {id} ({name})"),
        None => format!("{number} is already in use"),
    }
}

/// Whether a document is soft-deleted.
pub fn is_deleted(doc: &Value) -> bool {
    doc.get("pvt_deleted")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// A live (not deleted) document of one `pvt_type` in `db`; `None` when missing, deleted, of
/// another type, or when the database does not exist.
pub async fn live_doc(
    store: &SharedStore,
    db: &Db,
    id: &str,
    pvt_type: &str,
) -> Result<Option<Value>, StoreError> {
    let doc = match store.get(db, id).await {
        Ok(d) => d,
        Err(StoreError::NoDatabase(_)) => None,
        Err(e) => return Err(e),
    };
    Ok(doc.filter(|d| is_live(d, pvt_type)))
}

/// Whether `doc` is of `pvt_type` and not deleted (what [`live_doc`] keeps).
pub fn is_live(doc: &Value, pvt_type: &str) -> bool {
    doc.get("pvt_type").and_then(Value::as_str) == Some(pvt_type) && !is_deleted(doc)
}

/// An account's directory document, `None` when missing or deleted.
pub async fn live_account(
    store: &SharedStore,
    id: &AccountId,
) -> Result<Option<Value>, StoreError> {
    live_doc(store, &Db::Accounts, id.as_str(), "account").await
}

/// The ancestors of an account (`pvt_tree`, root first).
pub fn tree_of(doc: &Value) -> Vec<String> {
    strings_at(doc, "pvt_tree")
}

/// The strings of an array field of a document (none when it is absent or not an array).
fn strings_at(doc: &Value, key: &str) -> Vec<String> {
    doc.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A live account: its id and its directory document.
#[derive(Clone, Debug)]
pub struct Account {
    pub id: AccountId,
    pub doc: Value,
}

/// The live account `id`; [`AccountsError::AccountNotFound`] when missing or deleted.
pub async fn account(store: &SharedStore, id: &AccountId) -> Result<Account, AccountsError> {
    live_account(store, id)
        .await?
        .map(|doc| Account {
            id: id.clone(),
            doc,
        })
        .ok_or_else(|| AccountsError::AccountNotFound(id.to_string()))
}

/// Whether an account is a reseller (or the master/superduper account).
pub fn is_reseller(doc: &Value) -> bool {
    let flag = |k: &str| doc.get(k).and_then(Value::as_bool).unwrap_or(false);
    flag("pvt_reseller") || flag("pvt_superduper_admin")
}

/// The reseller of an account (its directory document): the nearest reseller ancestor, else
/// the root of its tree, else the account itself.
pub async fn reseller_of(store: &SharedStore, doc: &Value) -> Result<String, StoreError> {
    let tree = tree_of(doc);
    for id in tree.iter().rev() {
        if let Ok(a) = AccountId::parse(id)
            && let Some(d) = live_account(store, &a).await?
            && is_reseller(&d)
        {
            return Ok(id.clone());
        }
    }
    Ok(tree
        .first()
        .cloned()
        .or_else(|| doc.get("_id").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default())
}

/// The zone of a user of an account, else of the account, else of its nearest ancestor that
/// names one (Kazoo's `kzd_user:timezone` then `kzd_accounts:timezone`; `"inherit"` defers
/// to the next level), else [`timezone::DEFAULT_TIMEZONE`].
pub async fn zone_of(
    store: &SharedStore,
    account: &AccountId,
    account_doc: &Value,
    user_id: Option<&str>,
) -> Result<String, StoreError> {
    let tz = |d: &Value| {
        d.get("timezone")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let mut levels: Vec<Option<String>> = Vec::new();
    if let Some(u) = user_id
        && let Some(user) = store.get(&Db::Account(account.clone()), u).await?
        && user.get("pvt_type").and_then(Value::as_str) == Some("user")
    {
        levels.push(tz(&user));
    }
    levels.push(tz(account_doc));
    if !levels.iter().any(|l| timezone::is_set(l.as_deref())) {
        for parent in tree_of(account_doc).iter().rev() {
            let Ok(pid) = AccountId::parse(parent) else {
                continue;
            };
            let z = live_account(store, &pid).await?.as_ref().and_then(tz);
            let found = timezone::is_set(z.as_deref());
            levels.push(z);
            if found {
                break;
            }
        }
    }
    Ok(timezone::pick(levels.iter().map(Option::as_deref)).to_string())
}

/// A faxbox of an account: its id, its account and its document (the account's copy).
#[derive(Clone, Debug)]
pub struct Faxbox {
    pub id: String,
    pub account: AccountId,
    pub doc: Value,
}

impl Faxbox {
    /// The user the faxbox belongs to (`owner_id`), if it names one.
    pub fn owner_id(&self) -> Option<&str> {
        self.doc
            .get("owner_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// Its generated address (`<8hex>.<default_smtp_domain>`).
    pub fn smtp_address(&self) -> Option<&str> {
        self.doc
            .get("pvt_smtp_email_address")
            .and_then(Value::as_str)
    }

    /// Its `custom_smtp_email_address`, if set.
    pub fn custom_address(&self) -> Option<&str> {
        self.doc
            .get("custom_smtp_email_address")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// The live faxbox `id` of `account`; [`AccountsError::FaxboxNotFound`] for any other.
pub async fn faxbox(
    store: &SharedStore,
    account: &AccountId,
    id: &str,
) -> Result<Faxbox, AccountsError> {
    if id.is_empty() || id.len() > crate::ids::MAX_DOC_ID {
        return Err(AccountsError::FaxboxNotFound(id.to_string()));
    }
    live_doc(store, &Db::Account(account.clone()), id, "faxbox")
        .await?
        .map(|doc| Faxbox {
            id: id.to_string(),
            account: account.clone(),
            doc,
        })
        .ok_or_else(|| AccountsError::FaxboxNotFound(id.to_string()))
}

/// The faxbox a mail domain names (`<number>@<domain>`): its generated `smtp_email_address`
/// (`<8hex>.<default_smtp_domain>`) or its `custom_smtp_email_address`, case-insensitive, in
/// a live account. `None` when no live faxbox has it.
pub async fn faxbox_by_address(
    store: &SharedStore,
    domain: &str,
) -> Result<Option<Faxbox>, StoreError> {
    let Some(hit) = store.faxbox_by_email(domain).await? else {
        return Ok(None);
    };
    if live_account(store, &hit.account_id).await?.is_none() {
        return Ok(None);
    }
    match faxbox(store, &hit.account_id, &hit.faxbox_id).await {
        Ok(fb) => Ok(Some(fb)),
        Err(AccountsError::Store(e)) => Err(e),
        Err(_) => Ok(None),
    }
}

/// The live account whose `realm` is `realm` (exact, case-insensitive). A realm that two live
/// accounts claim names neither: mail or a login for it must not reach the wrong tenant.
pub async fn account_by_realm(
    store: &SharedStore,
    realm: &str,
) -> Result<Option<Account>, StoreError> {
    let realm = realm.trim();
    let mut hits = live_docs(store, &Db::Accounts, "account")
        .await?
        .into_iter()
        .filter(|d| {
            d.get("realm")
                .and_then(Value::as_str)
                .is_some_and(|r| r.trim().eq_ignore_ascii_case(realm))
        });
    let (Some(doc), None) = (hits.next(), hits.next()) else {
        return Ok(None);
    };
    let Some(id) = doc
        .get("_id")
        .and_then(Value::as_str)
        .and_then(|i| AccountId::parse(i).ok())
    else {
        return Ok(None);
    };
    Ok(Some(Account { id, doc }))
}

/// The live faxboxes of an account.
pub async fn faxboxes(store: &SharedStore, account: &AccountId) -> Result<Vec<Faxbox>, StoreError> {
    Ok(live_docs(store, &Db::Account(account.clone()), "faxbox")
        .await?
        .into_iter()
        .filter_map(|doc| {
            let id = doc.get("_id").and_then(Value::as_str)?.to_string();
            Some(Faxbox {
                id,
                account: account.clone(),
                doc,
            })
        })
        .collect())
}

/// The live users of an account whose `email` is `address`, case-insensitive: who a mail's
/// sender is (Kazoo's `users/list_by_email`).
pub async fn users_by_email(
    store: &SharedStore,
    account: &AccountId,
    address: &str,
) -> Result<Vec<Value>, StoreError> {
    let address = address.trim();
    Ok(live_docs(store, &Db::Account(account.clone()), "user")
        .await?
        .into_iter()
        .filter(|u| {
            u.get("email")
                .and_then(Value::as_str)
                .is_some_and(|e| e.trim().eq_ignore_ascii_case(address))
        })
        .collect())
}

/// A live user of an account.
pub async fn user(
    store: &SharedStore,
    account: &AccountId,
    id: &str,
) -> Result<Option<Value>, StoreError> {
    live_doc(store, &Db::Account(account.clone()), id, "user").await
}

/// `pvt_type` of a number claim.
const CLAIM_TYPE: &str = "number_claim";

/// Id of the document in `accounts` that claims a number (E.164) for a callflow.
pub fn claim_id(number: &str) -> String {
    format!("number-{number}")
}

/// The account and callflow that own a number (E.164), if any: how an inbound call finds its
/// callflow and how a caller id proves to be the account's.
pub async fn number_owner(
    store: &SharedStore,
    number: &str,
) -> Result<Option<(AccountId, String)>, StoreError> {
    let Some(doc) = store.get(&Db::Accounts, &claim_id(number)).await? else {
        return Ok(None);
    };
    let account = doc
        .get("account_id")
        .and_then(Value::as_str)
        .and_then(|a| AccountId::parse(a).ok());
    let callflow = doc.get("callflow_id").and_then(Value::as_str);
    Ok(account.zip(callflow.map(str::to_string)))
}

/// The numbers a callflow document lists.
pub fn numbers_of(doc: &Value) -> Vec<String> {
    strings_at(doc, "numbers")
}

/// Claims numbers (E.164) for a callflow of an account. Each claim is a document created
/// without a revision, so two concurrent claims of one number cannot both win. A number the
/// callflow holds already is kept; on a clash the numbers claimed here are released and the
/// answer is [`AccountsError::NumberClaimed`].
pub async fn claim_numbers(
    store: &SharedStore,
    account: &AccountId,
    callflow_id: &str,
    numbers: &[String],
) -> Result<(), AccountsError> {
    let mut claimed = Vec::new();
    for n in numbers {
        let doc = json!({"_id": claim_id(n), "pvt_type": CLAIM_TYPE,
                         "account_id": account.as_str(), "callflow_id": callflow_id, "number": n});
        match store.save(&Db::Accounts, doc).await {
            Ok(_) => claimed.push(n.clone()),
            Err(StoreError::Conflict) => {
                let owner = number_owner(store, n).await?;
                if owner.as_ref().map(|(a, c)| (a, c.as_str())) == Some((account, callflow_id)) {
                    continue;
                }
                release_numbers(store, &claimed, callflow_id).await?;
                let callflow = match owner {
                    Some((a, c)) if &a == account => {
                        let name = store
                            .get(&Db::Account(a), &c)
                            .await?
                            .and_then(|d| d.get("name").and_then(Value::as_str).map(str::to_string))
                            .unwrap_or_default();
                        Some((c, name))
                    }
                    _ => None,
                };
                return Err(AccountsError::NumberClaimed {
                    number: n.clone(),
                    callflow,
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Releases the numbers a callflow claimed (a claim of another callflow is left alone).
pub async fn release_numbers(
    store: &SharedStore,
    numbers: &[String],
    callflow_id: &str,
) -> Result<(), StoreError> {
    for n in numbers {
        if let Some(doc) = store.get(&Db::Accounts, &claim_id(n)).await?
            && doc.get("callflow_id").and_then(Value::as_str) == Some(callflow_id)
            && let Some(rev) = doc.get("_rev").and_then(Value::as_str)
        {
            match store.delete(&Db::Accounts, &claim_id(n), rev).await {
                Ok(_) | Err(StoreError::NotFound(_)) | Err(StoreError::Conflict) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// The enabled, live user of an account whose login `credentials` (hex md5 or sha1 of
/// `"username:password"`) match. A user imported from Kazoo that still has only Kazoo's bare
/// digests is upgraded to faxd's record on the way (rev-checked; when another login upgraded
/// the user meanwhile, that upgrade stands if it accepts the same credentials).
pub async fn user_by_credentials(
    store: &SharedStore,
    account: &AccountId,
    credentials: &str,
) -> Result<Option<Value>, StoreError> {
    let db = Db::Account(account.clone());
    let enabled = |u: &Value| u.get("enabled").and_then(Value::as_bool).unwrap_or(true);
    for user in live_docs(store, &db, "user").await? {
        if !enabled(&user) {
            continue;
        }
        match password_record(&user) {
            Some(rec) if rec.verify(credentials) => return Ok(Some(user)),
            Some(_) => {}
            None => {
                let (md5, sha1) = legacy_digests(&user);
                if crate::auth::legacy_matches(md5, sha1, credentials) {
                    return upgrade_legacy(store, &db, user, credentials).await;
                }
            }
        }
    }
    Ok(None)
}

fn password_record(user: &Value) -> Option<PasswordRecord> {
    user.get("pvt_auth")
        .and_then(|a| serde_json::from_value::<PasswordRecord>(a.clone()).ok())
}

/// Kazoo's bare login digests of a user document.
pub fn legacy_digests(user: &Value) -> (Option<&str>, Option<&str>) {
    (
        user.get("pvt_md5_auth").and_then(Value::as_str),
        user.get("pvt_sha1_auth").and_then(Value::as_str),
    )
}

/// Replaces a Kazoo user's bare digests with faxd's record of both (so md5 and sha1 logins
/// keep working). `None`: the credentials no longer match.
async fn upgrade_legacy(
    store: &SharedStore,
    db: &Db,
    mut user: Value,
    credentials: &str,
) -> Result<Option<Value>, StoreError> {
    for _ in 0..3 {
        if user.get("pvt_auth").is_some() {
            let ok = password_record(&user).is_some_and(|rec| rec.verify(credentials));
            return Ok(ok.then_some(user));
        }
        let (md5, sha1) = legacy_digests(&user);
        let Some(record) = PasswordRecord::from_digests(md5, sha1) else {
            return Ok(None);
        };
        user["pvt_auth"] = json!(record);
        if let Some(m) = user.as_object_mut() {
            m.remove("pvt_md5_auth");
            m.remove("pvt_sha1_auth");
        }
        match store.save(db, user.clone()).await {
            Ok(saved) => {
                let id = saved.get("_id").and_then(Value::as_str).unwrap_or_default();
                tracing::info!(user_id = %id, "user's Kazoo credentials upgraded to faxd's record");
                return Ok(Some(saved));
            }
            Err(StoreError::Conflict) => {
                let id = user
                    .get("_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                match store.get(db, &id).await? {
                    Some(u) => user = u,
                    None => return Ok(None),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// The live documents of one `pvt_type` in a database (none when it does not exist).
pub async fn live_docs(
    store: &SharedStore,
    db: &Db,
    pvt_type: &str,
) -> Result<Vec<Value>, StoreError> {
    match store.docs_by_type(db, pvt_type).await {
        Ok(docs) => Ok(docs.into_iter().filter(|d| !is_deleted(d)).collect()),
        Err(StoreError::NoDatabase(_)) => Ok(vec![]),
        Err(e) => Err(e),
    }
}

/// Releases every number of an account's callflows (account deletion).
pub async fn release_account_numbers(
    store: &SharedStore,
    account: &AccountId,
) -> Result<(), StoreError> {
    for cf in live_docs(store, &Db::Account(account.clone()), "callflow").await? {
        let id = cf["_id"].as_str().unwrap_or_default().to_string();
        release_numbers(store, &numbers_of(&cf), &id).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::sqlite::SqliteStore;
    use std::sync::Arc;

    async fn store_with(account: &AccountId) -> (SharedStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).await.unwrap();
        for db in [Db::Accounts, Db::Faxes, Db::Account(account.clone())] {
            s.ensure_db(&db).await.unwrap();
        }
        (Arc::new(s), dir)
    }

    #[tokio::test]
    async fn a_number_has_one_callflow_and_a_clash_names_the_holder() {
        let acme = AccountId::generate();
        let other = AccountId::generate();
        let (store, _d) = store_with(&acme).await;
        store
            .save(
                &Db::Account(acme.clone()),
                json!({"_id": "cf1", "pvt_type": "callflow", "name": "Main"}),
            )
            .await
            .unwrap();
        let n = vec!["+15550001111".to_string()];
        claim_numbers(&store, &acme, "cf1", &n).await.unwrap();
        // Claiming again for the same callflow keeps it.
        claim_numbers(&store, &acme, "cf1", &n).await.unwrap();
        assert_eq!(
            number_owner(&store, &n[0]).await.unwrap(),
            Some((acme.clone(), "cf1".to_string()))
        );

        // Another callflow of the account: named, and its own new claims are released.
        let both = vec!["+15550002222".to_string(), n[0].clone()];
        let e = claim_numbers(&store, &acme, "cf2", &both)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "+15550001111 exists in callflow cf1 (Main)");
        assert_eq!(number_owner(&store, &both[0]).await.unwrap(), None);

        // Another account learns nothing about the holder.
        let e = claim_numbers(&store, &other, "cf9", &n).await.unwrap_err();
        assert_eq!(e.to_string(), "+15550001111 is already in use");

        // Released only by its own callflow.
        release_numbers(&store, &n, "cf2").await.unwrap();
        assert!(number_owner(&store, &n[0]).await.unwrap().is_some());
        release_numbers(&store, &n, "cf1").await.unwrap();
        assert_eq!(number_owner(&store, &n[0]).await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_reseller_is_the_nearest_reseller_ancestor_else_the_root() {
        let root = AccountId::generate();
        let mid = AccountId::generate();
        let leaf = AccountId::generate();
        let (store, _d) = store_with(&leaf).await;
        let save = async |id: &AccountId, tree: Vec<&AccountId>, reseller: bool| {
            let tree: Vec<&str> = tree.iter().map(|a| a.as_str()).collect();
            store
                .save(
                    &Db::Accounts,
                    json!({"_id": id.as_str(), "pvt_type": "account", "pvt_tree": tree,
                           "pvt_reseller": reseller, "realm": format!("{}.test", &id.as_str()[..6])}),
                )
                .await
                .unwrap()
        };
        save(&root, vec![], false).await;
        let m = save(&mid, vec![&root], false).await;
        let l = save(&leaf, vec![&root, &mid], false).await;
        assert_eq!(reseller_of(&store, &l).await.unwrap(), root.as_str());
        assert_eq!(reseller_of(&store, &m).await.unwrap(), root.as_str());
        let mut m = m;
        m["pvt_reseller"] = json!(true);
        store.save(&Db::Accounts, m).await.unwrap();
        assert_eq!(reseller_of(&store, &l).await.unwrap(), mid.as_str());

        let realm = format!("{}.TEST", &leaf.as_str()[..6].to_uppercase());
        let found = account_by_realm(&store, &realm).await.unwrap().unwrap();
        assert_eq!(found.id, leaf);
        assert!(
            account_by_realm(&store, "nope.test")
                .await
                .unwrap()
                .is_none()
        );
        // A realm two live accounts claim names neither.
        let twin = AccountId::generate();
        store
            .save(
                &Db::Accounts,
                json!({"_id": twin.as_str(), "pvt_type": "account", "realm": realm.to_lowercase()}),
            )
            .await
            .unwrap();
        assert!(account_by_realm(&store, &realm).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn users_are_found_by_email_and_deleted_ones_are_not() {
        let acme = AccountId::generate();
        let (store, _d) = store_with(&acme).await;
        let db = Db::Account(acme.clone());
        for (id, email, deleted) in [
            ("u1", "Ann@Acme.test", false),
            ("u2", "bob@acme.test", false),
            ("u3", "ann@acme.test", true),
        ] {
            store
                .save(
                    &db,
                    json!({"_id": id, "pvt_type": "user", "email": email, "pvt_deleted": deleted}),
                )
                .await
                .unwrap();
        }
        let found = users_by_email(&store, &acme, "ann@acme.TEST")
            .await
            .unwrap();
        let ids: Vec<&str> = found.iter().map(|u| u["_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["u1"]);
    }
}
