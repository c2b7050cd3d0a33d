//! Moving a finished (`completed`/`failed`) job from the faxes database to the account MODB
//! of its creation month (`YYYYMM-<id>`, `folder: outbox`), attachments included.
//!
//! Conflict handling: an existing target document (an earlier, interrupted move of the same
//! job) is overwritten at its revision; a source document changed under us is re-read and
//! deleted at its new revision. Failed steps are retried a few times without sleeping. The
//! copy and its attachments are one atomic write, and the source is only deleted after it,
//! so a crash in between leaves both, and [`super::lease`] recovery finishes the move.

use serde_json::{Value, json};

use crate::ids::{AccountId, Db, outbox_location};
use crate::store::{NewAttachment, SharedStore, StoreError, read_all};

const ATTEMPTS: usize = 5;

/// The MODB and id a job document moves to.
pub fn target(doc: &Value) -> Result<(Db, String), StoreError> {
    let id = doc
        .get("_id")
        .and_then(Value::as_str)
        .ok_or_else(|| StoreError::Invalid("job without _id".into()))?;
    let account = doc
        .get("pvt_account_id")
        .and_then(Value::as_str)
        .and_then(|a| AccountId::parse(a).ok())
        .ok_or_else(|| StoreError::Invalid(format!("job {id} without a valid account")))?;
    let created = doc
        .get("pvt_created")
        .and_then(Value::as_i64)
        .unwrap_or_else(crate::time::now_gregorian);
    Ok(outbox_location(account, created, id))
}

/// Moves `doc` (the final job, at the faxes database's current `_rev`) to its MODB and
/// deletes it from the faxes database. Returns the MODB document id.
pub async fn move_to_modb(store: &SharedStore, doc: Value) -> Result<String, StoreError> {
    let (db, target_id) = target(&doc)?;
    let source_id = doc["_id"].as_str().unwrap_or_default().to_string();
    // The attachments go with the copy in one atomic write: a copy in the MODB is always
    // complete, so recovery may delete the source as soon as it sees one.
    let names: Vec<String> = doc
        .get("_attachments")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let mut attachments = Vec::with_capacity(names.len());
    for name in names {
        let Some(att) = store.get_attachment(&Db::Faxes, &source_id, &name).await? else {
            continue;
        };
        attachments.push(NewAttachment {
            name,
            content_type: att.content_type,
            data: read_all(att.body).await?.into(),
        });
    }
    let mut copy = doc.clone();
    if let Some(o) = copy.as_object_mut() {
        o.remove("_rev");
        o.remove("_attachments");
        o.insert("_id".into(), json!(target_id));
        o.insert("folder".into(), json!("outbox"));
        o.insert("pvt_account_db".into(), json!(db.name()));
    }
    // The notification of a sent or failed fax is written with the final document itself.
    if let Some(event) = doc
        .get("pvt_job_status")
        .and_then(Value::as_str)
        .and_then(crate::notify::outbound_event)
    {
        crate::notify::record(&mut copy, event, crate::time::now_unix());
    }
    let mut last = StoreError::Conflict;
    let mut saved = false;
    for _ in 0..ATTEMPTS {
        match store
            .save_with_attachments(&db, copy.clone(), attachments.clone())
            .await
        {
            Ok(_) => {
                saved = true;
                break;
            }
            Err(StoreError::NoDatabase(_)) => {
                store.ensure_db(&db).await?;
            }
            Err(StoreError::Conflict) => {
                // An earlier move of this job got this far: overwrite it.
                if let Some(existing) = store.get(&db, &target_id).await? {
                    copy["_rev"] = existing["_rev"].clone();
                    // Its notification may be under way or delivered: keep that state.
                    if let Some(n) = existing.get("pvt_notify") {
                        copy["pvt_notify"] = n.clone();
                    }
                } else if let Some(o) = copy.as_object_mut() {
                    o.remove("_rev");
                }
            }
            Err(e) => last = e,
        }
    }
    if !saved {
        return Err(last);
    }
    delete_source(store, &source_id, doc["_rev"].as_str().unwrap_or_default()).await?;
    Ok(target_id)
}

/// Deletes the faxes-database copy, re-reading its revision on conflict.
pub async fn delete_source(store: &SharedStore, id: &str, rev: &str) -> Result<(), StoreError> {
    let mut rev = rev.to_string();
    for _ in 0..ATTEMPTS {
        match store.delete(&Db::Faxes, id, &rev).await {
            Ok(_) | Err(StoreError::NotFound(_)) => return Ok(()),
            Err(StoreError::Conflict) => match store.get(&Db::Faxes, id).await? {
                Some(cur) => rev = cur["_rev"].as_str().unwrap_or_default().to_string(),
                None => return Ok(()),
            },
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict)
}

/// The moved copy of a job, if a move reached the MODB.
pub async fn moved_copy(store: &SharedStore, doc: &Value) -> Result<Option<Value>, StoreError> {
    let (db, id) = target(doc)?;
    match store.get(&db, &id).await {
        Ok(v) => Ok(v),
        Err(StoreError::NoDatabase(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
