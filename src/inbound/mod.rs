//! Inbound faxes (Kazoo's `fax_request` rules, spec §4): which callflow module receives a
//! dialled number, who owns the fax, what a reception's result means, and the inbox document
//! with its `rx_result`. The decisions are pure functions ([`fax_module`], [`verdict`],
//! [`rx_result`], [`inbox_doc`], [`store_retry_delay`]); [`resolve`] and [`store_fax`] are the
//! store reads and the write they need. fax_request (in `faxd-actors`) performs them.
//!
//! Differences from Kazoo (spec §9.2): the fax id's month and the document's name both use
//! UTC; `rx_result` uses `tx_result`'s names (SIP code `result_code`, hangup cause
//! `result_cause`, T.30 `fax_result_code`/`fax_result_text`) and a reception without pages is
//! a failure with that text; storage is retried a bounded number of times.

pub mod directory;
pub mod live;

use serde_json::{Map, Value, json};

use crate::accounts::live_doc;
use crate::gateway::{FaxResult, Refusal};
use crate::ids::{AccountId, Db, YearMonth, modb_doc_id};
use crate::store::{NewAttachment, SharedStore, StoreError};

/// Text of a reception that ended well but brought no page.
pub const NO_PAGES: &str = "no pages received";

/// The fax module a callflow runs for a call, found depth-first (children in key order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaxModule {
    /// `receive_fax`, with its `data.owner_id` if any.
    ReceiveFax { owner_id: Option<String> },
    /// `faxbox`, with its `data.id` (or `data.faxbox_id`).
    Faxbox { id: String },
}

/// The first `receive_fax` or `faxbox` module of a flow.
pub fn fax_module(flow: &Value) -> Option<FaxModule> {
    let data = flow.get("data");
    let text = |k: &str| {
        data.and_then(|d| d.get(k))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    match flow.get("module").and_then(Value::as_str) {
        Some("receive_fax") => {
            return Some(FaxModule::ReceiveFax {
                owner_id: text("owner_id"),
            });
        }
        Some("faxbox") => {
            if let Some(id) = text("id").or_else(|| text("faxbox_id")) {
                return Some(FaxModule::Faxbox { id });
            }
        }
        _ => {}
    }
    flow.get("children")
        .and_then(Value::as_object)
        .and_then(|c| c.values().find_map(fax_module))
}

/// Who receives a call to a number: the account, the callflow, the fax's owner and faxbox,
/// and whom to notify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receiver {
    pub account: AccountId,
    pub callflow_id: String,
    pub owner_id: Option<String>,
    pub faxbox_id: Option<String>,
    /// E-mail addresses to tell about the fax (`notifications.email.send_to`).
    pub notify: Vec<String>,
    /// The station id (CSI) the call is answered with.
    pub station_id: String,
    /// The faxbox asks for T.38 (`media.fax_option`: `true` or `"auto"`).
    pub t38: bool,
    /// The account's own inbound limit (`max_inbound` of its document), if it has one.
    pub max_inbound: Option<u32>,
}

/// Whether a faxbox receives over T.38 when the call allows it (`media.fax_option`).
pub fn receives_t38(faxbox: &Value) -> bool {
    match faxbox.pointer("/media/fax_option") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.as_str(), "auto" | "true"),
        _ => false,
    }
}

/// The fax settings in force for a receiver (spec §4.2): the system `fax_settings`, under the
/// account's `fax_settings`, under the owner's `fax_settings`, under a faxbox's own
/// `fax_identity` / `caller_id` / `fax_header`.
pub fn fax_settings(
    system: &Map<String, Value>,
    account: Option<&Value>,
    owner: Option<&Value>,
    faxbox: Option<&Value>,
) -> Map<String, Value> {
    let mut out = system.clone();
    for doc in [account, owner].into_iter().flatten() {
        if let Some(m) = doc.get("fax_settings").and_then(Value::as_object) {
            out.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    if let Some(b) = faxbox {
        for k in ["fax_identity", "caller_id", "fax_header"] {
            if let Some(v) = b
                .get(k)
                .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
            {
                out.insert(k.into(), v.clone());
            }
        }
    }
    out
}

/// The station id (CSI) a receiver answers with (`Fax-Identity-Number`): with
/// `override_fax_identity` (default true) the first of `fax_identity` and `caller_id` that is
/// a valid T.30 identity, else the dialled number; without it the dialled number.
pub fn station_id(dialled: &str, settings: &Map<String, Value>) -> String {
    let overridden = settings
        .get("override_fax_identity")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    if overridden {
        for k in ["fax_identity", "caller_id"] {
            if let Some(id) = settings.get(k).and_then(Value::as_str)
                && !id.is_empty()
                && crate::numbers::fax_identity(k, id).is_ok()
            {
                return id.to_string();
            }
        }
    }
    dialled.to_string()
}

/// Why a call to a number is not received.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No live callflow owns the number.
    #[error("no callflow owns {0}")]
    Unallocated(String),
    /// The number's callflow has no fax module (or its faxbox is gone).
    #[error("callflow {callflow_id} of {number} does not receive faxes: {why}")]
    NotFax {
        number: String,
        callflow_id: String,
        why: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ResolveError {
    /// What the caller is told.
    pub fn refusal(&self) -> Refusal {
        match self {
            ResolveError::Unallocated(_) => Refusal::unallocated(),
            ResolveError::NotFax { .. } => Refusal::incompatible(),
            ResolveError::Store(_) => Refusal::temporary(),
        }
    }
}

/// The notification list (spec §4.2): a faxbox's owner's e-mail and its
/// `notifications.inbound.email.send_to` (else `notifications.email.send_to`); for a
/// `receive_fax` owner, the user's e-mail. Case-insensitively de-duplicated, in order.
pub fn notify_list(owner: Option<&Value>, faxbox: Option<&Value>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |a: String| {
        if !out.iter().any(|x| x.eq_ignore_ascii_case(&a)) {
            out.push(a);
        }
    };
    for a in crate::notify::deliver::addresses(owner.and_then(|u| u.get("email"))) {
        push(a);
    }
    if let Some(b) = faxbox {
        let inbound =
            crate::notify::deliver::addresses(b.pointer("/notifications/inbound/email/send_to"));
        let list = if inbound.is_empty() {
            crate::notify::deliver::addresses(b.pointer("/notifications/email/send_to"))
        } else {
            inbound
        };
        for a in list {
            push(a);
        }
    }
    out
}

/// Who receives a call to `number` (E.164): the callflow that owns it, its fax module, the
/// faxbox and owner behind that, and the station id it answers with (`system_settings`: the
/// system `fax_settings`).
pub async fn resolve(
    store: &SharedStore,
    number: &str,
    system_settings: &Map<String, Value>,
) -> Result<Receiver, ResolveError> {
    let Some((account, callflow_id)) = crate::intake::numbers::number_owner(store, number).await?
    else {
        return Err(ResolveError::Unallocated(number.to_string()));
    };
    let db = Db::Account(account.clone());
    let Some(callflow) = live_doc(store, &db, &callflow_id, "callflow").await? else {
        return Err(ResolveError::Unallocated(number.to_string()));
    };
    let not_fax = |why: &str| ResolveError::NotFax {
        number: number.to_string(),
        callflow_id: callflow_id.clone(),
        why: why.to_string(),
    };
    let module = fax_module(callflow.get("flow").unwrap_or(&Value::Null))
        .ok_or_else(|| not_fax("no receive_fax or faxbox module"))?;
    let (owner_id, faxbox) = match module {
        FaxModule::ReceiveFax { owner_id } => (owner_id, None),
        FaxModule::Faxbox { id } => {
            let boxdoc = live_doc(store, &db, &id, "faxbox")
                .await?
                .ok_or_else(|| not_fax(&format!("faxbox {id} is gone")))?;
            let owner = boxdoc
                .get("owner_id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            (owner, Some(boxdoc))
        }
    };
    let owner = match &owner_id {
        Some(id) => live_doc(store, &db, id, "user").await?,
        None => None,
    };
    let account_doc = live_doc(store, &db, account.as_str(), "account").await?;
    let settings = fax_settings(
        system_settings,
        account_doc.as_ref(),
        owner.as_ref(),
        faxbox.as_ref(),
    );
    let t38 = faxbox.as_ref().is_some_and(receives_t38);
    let max_inbound = account_doc
        .as_ref()
        .and_then(|a| a.get("max_inbound"))
        .and_then(Value::as_u64)
        .map(|n| n.min(u32::MAX as u64) as u32);
    Ok(Receiver {
        t38,
        max_inbound,
        station_id: station_id(number, &settings),
        notify: notify_list(owner.as_ref(), faxbox.as_ref()),
        faxbox_id: faxbox
            .as_ref()
            .and_then(|b| b.get("_id").and_then(Value::as_str).map(str::to_string)),
        owner_id,
        callflow_id,
        account,
    })
}

/// What a reception's result means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Pages arrived: the fax is stored.
    Received { pages: u32 },
    /// Nothing to store, and why.
    Failed { text: String },
}

/// Success with at least one page is a fax; success without pages is a failure
/// ([`NO_PAGES`]); anything else fails with the T.30 text, else the hangup cause.
pub fn verdict(r: &FaxResult) -> Verdict {
    if r.success && r.transferred_pages > 0 {
        return Verdict::Received {
            pages: r.transferred_pages,
        };
    }
    let text = if r.success {
        NO_PAGES.to_string()
    } else if !r.fax_result_text.is_empty() {
        r.fax_result_text.clone()
    } else if !r.hangup_cause.is_empty() {
        r.hangup_cause.clone()
    } else {
        "the call ended without a fax".to_string()
    };
    Verdict::Failed { text }
}

/// The `rx_result` of a reception (same names as `tx_result`): `success` is false for a
/// reception without pages, and `result_text` then says so.
pub fn rx_result(r: &FaxResult, started_ms: i64, finished_ms: i64) -> Map<String, Value> {
    let (success, text) = match verdict(r) {
        Verdict::Received { .. } => (true, r.fax_result_text.clone()),
        Verdict::Failed { text } => (false, text),
    };
    let mut m = Map::new();
    m.insert("success".into(), json!(success));
    m.insert("started".into(), json!(started_ms));
    m.insert("finished".into(), json!(finished_ms));
    m.insert(
        "time_elapsed".into(),
        json!((finished_ms - started_ms).max(0) / 1000),
    );
    crate::outbound::release::call_fields(&mut m, r, &text);
    m
}

/// The call a fax came in on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallInfo {
    pub call_id: String,
    /// The dialled number.
    pub to: String,
    pub from_number: String,
    pub from_name: String,
}

/// Where a received fax is kept: the account's MODB of the receipt month (UTC) and the
/// document id `YYYYMM-<32 hex>`.
pub fn fax_location(account: &AccountId, received_gregorian: i64) -> (Db, String) {
    let month = YearMonth::from_gregorian(received_gregorian);
    (
        Db::Modb(account.clone(), month),
        modb_doc_id(month, &crate::ids::new_id()),
    )
}

/// The name of the received TIFF attachment of fax `fax_id`.
pub fn tiff_attachment(fax_id: &str) -> String {
    format!("received_file_{fax_id}.tiff")
}

/// The inbox document of a received fax (spec §2.2, inbound fields), without attachments.
#[allow(clippy::too_many_arguments)]
pub fn inbox_doc(
    receiver: &Receiver,
    call: &CallInfo,
    result: &FaxResult,
    db: &Db,
    fax_id: &str,
    size: u64,
    node: &str,
    started_ms: i64,
    finished_ms: i64,
    now_gregorian: i64,
) -> Value {
    let at = chrono::DateTime::from_timestamp(crate::time::gregorian_to_unix(now_gregorian), 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default();
    let mut doc = json!({
        "_id": fax_id,
        "name": format!("fax message received at {at} UTC"),
        "description": "fax document received",
        "source_type": "incoming_fax",
        "folder": "inbox",
        "media_type": "tiff",
        "to_number": call.to,
        "from_number": call.from_number,
        "call_id": call.call_id,
        "timestamp": now_gregorian,
        "rx_result": rx_result(result, started_ms, finished_ms),
        "notifications": {"email": {"send_to": receiver.notify}},
        "pvt_type": "fax",
        "pvt_account_id": receiver.account.as_str(),
        "pvt_account_db": db.name(),
        "pvt_created": now_gregorian,
        "pvt_modified": now_gregorian,
        "pvt_job_node": node,
        "pvt_pages": result.transferred_pages,
        "pvt_size": size,
        "pvt_callflow_id": receiver.callflow_id,
    });
    // A caller without a name has none, rather than an empty one.
    if !call.from_name.is_empty() {
        doc["from_name"] = json!(call.from_name);
    }
    if let Some(o) = &receiver.owner_id {
        doc["owner_id"] = json!(o);
    }
    if let Some(b) = &receiver.faxbox_id {
        doc["faxbox_id"] = json!(b);
    }
    let event = match verdict(result) {
        Verdict::Received { .. } => crate::notify::Event::InboundReceived,
        Verdict::Failed { .. } => crate::notify::Event::InboundFailed,
    };
    crate::notify::record(
        &mut doc,
        event,
        crate::time::gregorian_to_unix(now_gregorian),
    );
    doc
}

/// The record of a reception that brought no fax (`pvt_type: "fax_inbound_error"` in the
/// MODB, not listed as a fax): what the call was and why it failed, with its pending
/// notification.
#[allow(clippy::too_many_arguments)]
pub fn failure_doc(
    receiver: &Receiver,
    call: &CallInfo,
    result: &FaxResult,
    db: &Db,
    fax_id: &str,
    node: &str,
    started_ms: i64,
    finished_ms: i64,
    now_gregorian: i64,
) -> Value {
    let mut doc = inbox_doc(
        receiver,
        call,
        result,
        db,
        fax_id,
        0,
        node,
        started_ms,
        finished_ms,
        now_gregorian,
    );
    doc["pvt_type"] = json!("fax_inbound_error");
    doc["description"] = json!("fax reception failed");
    if let Some(o) = doc.as_object_mut() {
        o.remove("folder");
        o.remove("media_type");
    }
    doc
}

/// The wait before storage attempt `attempt` + 1 (1 s doubling up to 16 s), or `None` once
/// `attempts` attempts were made (`system_config.fax.max_storage_retry`; at least one).
pub fn store_retry_delay(attempt: u32, attempts: u32) -> Option<std::time::Duration> {
    (attempt < attempts)
        .then(|| std::time::Duration::from_secs(1u64 << attempt.saturating_sub(1).min(4)))
}

/// One attempt to store a received fax: the document and its attachments in one atomic write,
/// creating the MODB if needed. A document already there with the TIFF is an earlier attempt
/// whose answer was lost: success, not a second copy.
pub async fn store_fax(
    store: &SharedStore,
    db: &Db,
    doc: &Value,
    attachments: &[NewAttachment],
) -> Result<(), StoreError> {
    let id = doc["_id"].as_str().unwrap_or_default().to_string();
    let mut created_db = false;
    loop {
        match store
            .save_with_attachments(db, doc.clone(), attachments.to_vec())
            .await
        {
            Ok(_) => return Ok(()),
            Err(StoreError::NoDatabase(_)) if !created_db => {
                store.ensure_db(db).await?;
                created_db = true;
            }
            Err(StoreError::Conflict) => {
                let stored = store.get(db, &id).await?;
                let has = |name: &str| {
                    stored
                        .as_ref()
                        .and_then(|d| d.pointer(&format!("/_attachments/{name}")))
                        .is_some()
                };
                return if attachments.iter().all(|a| has(&a.name)) {
                    Ok(())
                } else {
                    Err(StoreError::Conflict)
                };
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> AccountId {
        AccountId::parse("0123456789abcdef0123456789abcdef").unwrap()
    }

    fn received(pages: u32) -> FaxResult {
        FaxResult {
            success: true,
            hangup_cause: "NORMAL_CLEARING".into(),
            sip_code: 200,
            fax_result_code: 0,
            fax_result_text: "OK".into(),
            transferred_pages: pages,
            total_pages: pages,
            transfer_rate: 14_400,
            ecm_used: true,
            remote_station_id: "+15551230000".into(),
            local_station_id: "+15557654321".into(),
            image_resolution: "8040x7700".into(),
            ..FaxResult::default()
        }
    }

    #[test]
    fn the_first_fax_module_of_a_flow_receives() {
        let flow = json!({"module": "user", "data": {},
            "children": {"_": {"module": "faxbox", "data": {"id": "box1"}}}});
        assert_eq!(
            fax_module(&flow),
            Some(FaxModule::Faxbox { id: "box1".into() })
        );
        let flow = json!({"module": "faxbox", "data": {"faxbox_id": "box2"}});
        assert_eq!(
            fax_module(&flow),
            Some(FaxModule::Faxbox { id: "box2".into() })
        );
        let flow = json!({"module": "receive_fax", "data": {"owner_id": "u1"}});
        assert_eq!(
            fax_module(&flow),
            Some(FaxModule::ReceiveFax {
                owner_id: Some("u1".into())
            })
        );
        assert_eq!(
            fax_module(&json!({"module": "receive_fax"})),
            Some(FaxModule::ReceiveFax { owner_id: None })
        );
        // A faxbox module without an id receives nothing; a voice flow neither.
        assert_eq!(fax_module(&json!({"module": "faxbox", "data": {}})), None);
        assert_eq!(fax_module(&json!({"module": "voicemail"})), None);
        assert_eq!(fax_module(&Value::Null), None);
    }

    #[test]
    fn the_station_id_follows_the_settings_in_force() {
        let system = json!({"override_fax_identity": true, "override_callee_number": false});
        let system = system.as_object().unwrap();
        let dialled = "+15557654321";
        // Nothing set: the dialled number.
        let s = fax_settings(system, None, None, None);
        assert_eq!(station_id(dialled, &s), dialled);
        // The account's caller id, the owner's identity over it, a faxbox's over both.
        let account = json!({"fax_settings": {"caller_id": "+15550000001"}});
        let owner = json!({"fax_settings": {"fax_identity": "+1 555 000 0002"}});
        let faxbox = json!({"fax_identity": "+15550000003", "caller_id": ""});
        let s = fax_settings(system, Some(&account), None, None);
        assert_eq!(station_id(dialled, &s), "+15550000001");
        let s = fax_settings(system, Some(&account), Some(&owner), None);
        assert_eq!(station_id(dialled, &s), "+1 555 000 0002");
        let s = fax_settings(system, Some(&account), Some(&owner), Some(&faxbox));
        assert_eq!(station_id(dialled, &s), "+15550000003");
        // Not a T.30 identity: the next candidate.
        let owner = json!({"fax_settings": {"fax_identity": "ACME Sales"}});
        let s = fax_settings(system, Some(&account), Some(&owner), None);
        assert_eq!(station_id(dialled, &s), "+15550000001");
        // override_fax_identity off (the account says so): the dialled number.
        let account = json!({"fax_settings": {"override_fax_identity": false,
                                               "fax_identity": "+15550000001"}});
        let s = fax_settings(system, Some(&account), None, None);
        assert_eq!(station_id(dialled, &s), dialled);
    }

    #[test]
    fn zero_pages_is_a_failure_and_failures_keep_their_real_text() {
        assert_eq!(verdict(&received(2)), Verdict::Received { pages: 2 });
        assert_eq!(
            verdict(&received(0)),
            Verdict::Failed {
                text: NO_PAGES.into()
            }
        );
        let dropped = FaxResult {
            fax_result_code: 49,
            fax_result_text: "The call dropped prematurely".into(),
            transferred_pages: 1,
            ..received(1)
        };
        let dropped = FaxResult {
            success: false,
            ..dropped
        };
        assert_eq!(
            verdict(&dropped),
            Verdict::Failed {
                text: "The call dropped prematurely".into()
            }
        );
        let cancelled = FaxResult {
            hangup_cause: "ORIGINATOR_CANCEL".into(),
            ..FaxResult::default()
        };
        assert_eq!(
            verdict(&cancelled),
            Verdict::Failed {
                text: "ORIGINATOR_CANCEL".into()
            }
        );
    }

    #[test]
    fn rx_result_has_one_meaning_per_key() {
        let r = rx_result(&received(3), 1_000, 9_500);
        assert_eq!(r["success"], true);
        assert_eq!(r["result_code"], 200);
        assert_eq!(r["result_cause"], "NORMAL_CLEARING");
        assert_eq!(r["result_text"], "OK");
        assert_eq!(r["fax_result_code"], 0);
        assert_eq!(r["transferred_pages"], 3);
        assert_eq!(r["remote_station_id"], "+15551230000");
        assert_eq!(r["time_elapsed"], 8);
        let none = rx_result(&received(0), 0, 0);
        assert_eq!(none["success"], false);
        assert_eq!(none["result_text"], NO_PAGES);
        // The T.30 engine's own words stay next to it.
        assert_eq!(none["fax_result_text"], "OK");
    }

    #[test]
    fn notify_list_takes_the_owner_and_the_box_inbound_list_once() {
        let owner = json!({"email": "Ann@example.com"});
        let faxbox = json!({"notifications": {
            "inbound": {"email": {"send_to": ["ann@example.com", "desk@example.com"]}},
            "email": {"send_to": "ignored@example.com"}}});
        assert_eq!(
            notify_list(Some(&owner), Some(&faxbox)),
            vec!["Ann@example.com", "desk@example.com"]
        );
        let faxbox = json!({"notifications": {"email": {"send_to": "all@example.com"}}});
        assert_eq!(notify_list(None, Some(&faxbox)), vec!["all@example.com"]);
        assert_eq!(notify_list(Some(&owner), None), vec!["Ann@example.com"]);
        assert!(notify_list(None, None).is_empty());
    }

    #[test]
    fn the_inbox_document_carries_the_call_and_its_owner() {
        let receiver = Receiver {
            account: account(),
            callflow_id: "cf1".into(),
            owner_id: Some("u1".into()),
            faxbox_id: Some("box1".into()),
            notify: vec!["ann@example.com".into()],
            station_id: "+15557654321".into(),
            t38: false,
            max_inbound: None,
        };
        let call = CallInfo {
            call_id: "c1".into(),
            to: "+15557654321".into(),
            from_number: "+15551230000".into(),
            from_name: "Front desk".into(),
        };
        // 2026-12-04 10:20:30 UTC
        let now = crate::time::unix_to_gregorian(1_796_379_630);
        let (db, id) = fax_location(&account(), now);
        assert_eq!(db, Db::Modb(account(), YearMonth::new(2026, 12).unwrap()));
        assert!(id.starts_with("202612-") && id.len() == 7 + 32, "{id}");
        let doc = inbox_doc(
            &receiver,
            &call,
            &received(2),
            &db,
            &id,
            1234,
            "n1",
            0,
            0,
            now,
        );
        assert_eq!(doc["_id"], id);
        assert_eq!(doc["folder"], "inbox");
        assert_eq!(
            doc["name"],
            "fax message received at 2026-12-04 10:20:30 UTC"
        );
        assert_eq!(doc["to_number"], "+15557654321");
        assert_eq!(doc["from_number"], "+15551230000");
        assert_eq!(doc["from_name"], "Front desk");
        assert_eq!(doc["owner_id"], "u1");
        assert_eq!(doc["faxbox_id"], "box1");
        assert_eq!(doc["pvt_type"], "fax");
        assert_eq!(doc["pvt_account_db"], db.name());
        assert_eq!(doc["pvt_pages"], 2);
        assert_eq!(doc["rx_result"]["success"], true);
        assert_eq!(
            doc["notifications"]["email"]["send_to"],
            json!(["ann@example.com"])
        );
        assert!(
            doc.get("pvt_job_status").is_none(),
            "inbound docs have none"
        );
        assert_eq!(
            tiff_attachment(&id),
            format!("received_file_{id}.tiff"),
            "Kazoo's name, not its README's"
        );
    }

    #[test]
    fn storage_is_retried_a_bounded_number_of_times() {
        let delays: Vec<_> = (1..=6).map(|a| store_retry_delay(a, 5)).collect();
        assert_eq!(
            delays,
            vec![
                Some(std::time::Duration::from_secs(1)),
                Some(std::time::Duration::from_secs(2)),
                Some(std::time::Duration::from_secs(4)),
                Some(std::time::Duration::from_secs(8)),
                None,
                None,
            ]
        );
        assert_eq!(store_retry_delay(1, 1), None, "one attempt, no retry");
        assert_eq!(
            store_retry_delay(9, 12),
            Some(std::time::Duration::from_secs(16)),
            "the wait stops growing"
        );
    }
}
