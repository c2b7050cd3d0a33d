//! CouchDB design documents (from `priv/couchdb/views/`) and which database gets which.
//!
//! The files are embedded in the binary. `ensure_db` of the `couchdb` store installs the
//! design documents of a database and rewrites one only when its content differs, so booting
//! twice writes nothing. Every fax view skips documents that are not `pvt_type == "fax"` or are
//! `pvt_deleted`; the MODB views read a missing `folder` as `"inbox"`.

use serde_json::Value;

use crate::ids::Db;

/// `faxes` database, `_design/faxes`: the outbound queue views.
pub const FAXES_FAXES: &str = include_str!("../../priv/couchdb/views/faxes.faxes.json");
/// `faxes` database, `_design/faxbox`: the faxbox copies (SMTP address lookup).
pub const FAXES_FAXBOX: &str = include_str!("../../priv/couchdb/views/faxes.faxbox.json");
/// Account database, `_design/faxbox`.
pub const ACCOUNT_FAXBOX: &str = include_str!("../../priv/couchdb/views/account.faxbox.json");
/// Account MODB, `_design/faxes`: the fax listings by folder, faxbox and owner.
pub const MODB_FAXES: &str = include_str!("../../priv/couchdb/views/modb.faxes.json");
/// Account MODB, `_design/notify`: documents with notifications to deliver, by due time.
pub const MODB_NOTIFY: &str = include_str!("../../priv/couchdb/views/modb.notify.json");

/// The design documents (sources, as embedded) a database gets.
pub fn design_sources(db: &Db) -> &'static [(&'static str, &'static str)] {
    match db {
        Db::Faxes => &[
            ("faxes.faxes.json", FAXES_FAXES),
            ("faxes.faxbox.json", FAXES_FAXBOX),
        ],
        Db::Account(_) => &[("account.faxbox.json", ACCOUNT_FAXBOX)],
        Db::Modb(_, _) => &[
            ("modb.faxes.json", MODB_FAXES),
            ("modb.notify.json", MODB_NOTIFY),
        ],
        Db::Accounts | Db::SystemConfig => &[],
    }
}

/// The design documents a database gets, parsed (each with its `_id`, no `_rev`).
pub fn design_docs(db: &Db) -> Vec<Value> {
    design_sources(db)
        .iter()
        .filter_map(|(file, src)| match serde_json::from_str::<Value>(src) {
            Ok(doc) => Some(doc),
            Err(e) => {
                tracing::error!(file, error = %e, "embedded design document is not valid JSON");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AccountId, YearMonth};

    fn views_of(doc: &Value) -> Vec<String> {
        doc["views"]
            .as_object()
            .expect("views")
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn every_embedded_design_document_parses() {
        let a = AccountId::generate();
        let dbs = [
            Db::Faxes,
            Db::Account(a.clone()),
            Db::Modb(a, YearMonth::now()),
        ];
        for db in &dbs {
            let sources = design_sources(db);
            let docs = design_docs(db);
            assert_eq!(docs.len(), sources.len(), "{db}");
            for doc in &docs {
                let id = doc["_id"].as_str().expect("_id");
                assert!(id.starts_with("_design/"), "{id}");
                assert!(doc.get("_rev").is_none());
                assert_eq!(doc["language"], "javascript");
                for (name, view) in doc["views"].as_object().expect("views") {
                    let map = view["map"].as_str().expect("map");
                    assert!(map.starts_with("function (doc) {"), "{id}/{name}");
                    // Plain ES5 for any CouchDB JavaScript engine.
                    for modern in ["=>", "let ", "const ", "`"] {
                        assert!(!map.contains(modern), "{id}/{name} uses {modern}");
                    }
                }
            }
        }
        assert!(design_docs(&Db::Accounts).is_empty());
        assert!(design_docs(&Db::SystemConfig).is_empty());
    }

    #[test]
    fn databases_get_the_views_kazoo_uses() {
        let faxes = design_docs(&Db::Faxes);
        assert_eq!(faxes[0]["_id"], "_design/faxes");
        assert_eq!(
            views_of(&faxes[0]),
            [
                "crossbar_listing",
                "jobs",
                "jobs_by_account",
                "jobs_by_state",
                "list_by_account",
                "list_by_account_state",
                "list_by_faxbox",
                "list_by_faxbox_state",
                "list_by_owner",
                "locked_jobs_by_account",
                "processing_by_node",
                "queue_depth",
                "schedule_accounts",
            ]
        );
        assert_eq!(faxes[0]["views"]["schedule_accounts"]["reduce"], "_sum");
        assert_eq!(faxes[1]["_id"], "_design/faxbox");
        assert_eq!(
            views_of(&faxes[1]),
            ["crossbar_listing", "email_address", "email_permissions"]
        );
        assert_eq!(faxes[1]["views"]["email_permissions"]["reduce"], "_count");

        let a = AccountId::generate();
        let account = design_docs(&Db::Account(a.clone()));
        assert_eq!(account.len(), 1);
        assert_eq!(account[0]["_id"], "_design/faxbox");
        assert_eq!(
            views_of(&account[0]),
            [
                "crossbar_listing",
                "email_address",
                "email_permissions",
                "list_by_ownerid"
            ]
        );
        assert!(account[0]["views"]["email_permissions"]["reduce"].is_null());

        let modb = design_docs(&Db::Modb(a, YearMonth::now()));
        assert_eq!(modb.len(), 2);
        assert_eq!(modb[1]["_id"], "_design/notify");
        assert_eq!(views_of(&modb[1]), ["pending"]);
        assert_eq!(modb[0]["_id"], "_design/faxes");
        assert_eq!(
            views_of(&modb[0]),
            [
                "crossbar_listing",
                "list_by_faxbox",
                "list_by_folder",
                "list_by_ownerid",
                "smtp_log"
            ]
        );
    }
}
