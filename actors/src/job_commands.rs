//! The outbound-queue maintenance commands of spec §7.1 (`faxd sup fax_maintenance …`),
//! run by fax_maintenance against the store: the job tables, `restart_job`, `update_job`.

use faxd::ids::{AccountId, Db};
use faxd::model::JobStatus;
use faxd::store::{CreatedRange, JobRow, Page, SharedStore, StoreError};
use serde_json::json;

use crate::maintenance::{Command, gregorian_date, table};

const LIST_LIMIT: usize = 1000;

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

fn status(r: &JobRow) -> String {
    r.status.map(|s| s.to_string()).unwrap_or_default()
}

fn err(e: StoreError) -> String {
    e.to_string()
}

/// Runs a job command; `None` if `cmd` is not one.
pub async fn run(store: &SharedStore, cmd: &Command) -> Option<Result<String, String>> {
    Some(match cmd {
        Command::PendingJobs => pending_jobs(store).await,
        Command::ActiveJobs => active_jobs(store).await,
        Command::AccountJobs { account, state } => account_jobs(store, account, *state).await,
        Command::FaxboxJobs { faxbox, state } => faxbox_jobs(store, faxbox, *state).await,
        Command::RestartJob { job } => restart_job(store, job).await,
        Command::UpdateJob { job, state } => update_job(store, job, *state).await,
        _ => return None,
    })
}

async fn pending_jobs(store: &SharedStore) -> Result<String, String> {
    let mut rows = Vec::new();
    for (account, _) in store.schedule_accounts().await.map_err(err)? {
        rows.extend(
            store
                .jobs_by_account(&account, LIST_LIMIT)
                .await
                .map_err(err)?,
        );
        rows.extend(store.locked_jobs_by_account(&account).await.map_err(err)?);
    }
    rows.sort_by_key(|r| (r.due(), r.id.clone()));
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                gregorian_date(r.due()),
                r.account_id.clone(),
                opt(&r.faxbox_id),
                opt(&r.from),
                opt(&r.to),
                format!("{}/{}", r.attempts, r.retries),
            ]
        })
        .collect();
    Ok(table(
        &["Job", "Date", "Account", "Faxbox", "From", "To", "Tries"],
        &rows,
    ))
}

async fn active_jobs(store: &SharedStore) -> Result<String, String> {
    let rows: Vec<Vec<String>> = store
        .processing_by_node(None)
        .await
        .map_err(err)?
        .iter()
        .map(|r| {
            vec![
                opt(&r.node),
                r.id.clone(),
                gregorian_date(r.modified),
                r.account_id.clone(),
                opt(&r.faxbox_id),
                opt(&r.from),
                opt(&r.to),
            ]
        })
        .collect();
    Ok(table(
        &["Node", "Job", "Date", "Account", "FaxBox", "From", "To"],
        &rows,
    ))
}

fn listing(rows: &[JobRow]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                gregorian_date(r.created),
                status(r),
                r.account_id.clone(),
                opt(&r.faxbox_id),
                opt(&r.from),
                opt(&r.to),
            ]
        })
        .collect();
    table(
        &["Job", "Date", "State", "Account", "Faxbox", "From", "To"],
        &rows,
    )
}

async fn account_jobs(
    store: &SharedStore,
    account: &str,
    state: JobStatus,
) -> Result<String, String> {
    let account = AccountId::parse(account).map_err(|e| e.to_string())?;
    let l = store
        .list_by_account_state(
            &account,
            Some(state),
            CreatedRange::all(),
            Page::first(LIST_LIMIT),
        )
        .await
        .map_err(err)?;
    Ok(listing(&l.rows))
}

async fn faxbox_jobs(
    store: &SharedStore,
    faxbox: &str,
    state: JobStatus,
) -> Result<String, String> {
    let l = store
        .list_by_faxbox_state(
            faxbox,
            Some(state),
            CreatedRange::all(),
            Page::first(LIST_LIMIT),
        )
        .await
        .map_err(err)?;
    Ok(listing(&l.rows))
}

/// Back to `pending`, due now (faxd also clears `retry_after` and any lease, so a worker
/// still holding the job cannot release over it). A no-op for a pending job.
async fn restart_job(store: &SharedStore, job: &str) -> Result<String, String> {
    let mut doc = store
        .get(&Db::Faxes, job)
        .await
        .map_err(err)?
        .ok_or_else(|| format!("job {job} not found"))?;
    if doc.get("pvt_job_status").and_then(|s| s.as_str()) == Some("pending") {
        return Ok(String::new());
    }
    doc["pvt_job_status"] = json!("pending");
    doc["pvt_modified"] = json!(faxd::time::now_gregorian());
    doc["retry_after"] = json!(0);
    if let Some(o) = doc.as_object_mut() {
        for k in ["pvt_lease", "pvt_heartbeat", "pvt_queue", "pvt_job_node"] {
            o.remove(k);
        }
    }
    store.save(&Db::Faxes, doc).await.map_err(err)?;
    Ok(String::new())
}

async fn update_job(store: &SharedStore, job: &str, state: JobStatus) -> Result<String, String> {
    let mut doc = store
        .get(&Db::Faxes, job)
        .await
        .map_err(err)?
        .ok_or_else(|| format!("job {job} not found"))?;
    if doc.get("pvt_job_status").and_then(|s| s.as_str()) == Some(state.as_str()) {
        return Err(format!("job {job} is already {state}"));
    }
    doc["pvt_job_status"] = json!(state.as_str());
    doc["pvt_modified"] = json!(faxd::time::now_gregorian());
    store.save(&Db::Faxes, doc).await.map_err(err)?;
    Ok("ok".into())
}
