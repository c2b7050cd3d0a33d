//! Seeds a store with accounts and finished outbox faxes for `rel/bench-api.sh`: the API is
//! then measured at provider scale without sending 100 000 faxes through it first.
//!
//! `cargo run --release -p faxd --example seed_faxes -- (--data-dir DIR | --couch URL)
//!  [--accounts 100] [--faxes 100000] [--days 25]`
//!
//! Run it on a stopped node (the embedded store is one process's). Each account `BenchN`
//! (realm `benchN.example.com`, user `boss` / `benchpw`, a child of the master account, any
//! caller id allowed) gets
//! `faxes / accounts` outbox faxes in its MODBs, `completed` or `failed` (final: the outbound
//! queue never picks them up), created over the last `--days` days, each with the summary a
//! finished job carries (`tx_result`, pages, delivery date). Written concurrently through the
//! `Store` trait; prints `account_name account_id` of the first account.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use serde_json::{Value, json};

use faxd::ids::{AccountId, Db, YearMonth, modb_doc_id, new_id};
use faxd::store::SharedStore;

struct Args {
    data_dir: Option<String>,
    couch: Option<String>,
    accounts: usize,
    faxes: usize,
    days: i64,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        data_dir: None,
        couch: None,
        accounts: 100,
        faxes: 100_000,
        days: 25,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--data-dir" => a.data_dir = Some(v()?),
            "--couch" => a.couch = Some(v()?),
            "--accounts" => a.accounts = v()?.parse().map_err(|e| format!("{k}: {e}"))?,
            "--faxes" => a.faxes = v()?.parse().map_err(|e| format!("{k}: {e}"))?,
            "--days" => a.days = v()?.parse().map_err(|e| format!("{k}: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.data_dir.is_none() == a.couch.is_none() {
        return Err("give one of --data-dir DIR or --couch URL".into());
    }
    if a.accounts == 0 {
        return Err("--accounts must be at least 1".into());
    }
    Ok(a)
}

/// A finished outbox fax of `account`, created at `created` (gregorian seconds).
fn outbox_fax(account: &AccountId, n: usize, created: i64) -> (Db, Value) {
    let month = YearMonth::from_gregorian(created);
    let db = Db::Modb(account.clone(), month);
    let success = !n.is_multiple_of(10);
    let (status, code, text) = if success {
        ("completed", 0, "OK")
    } else {
        ("failed", 486, "USER_BUSY")
    };
    let to = format!("+1415555{:04}", n % 10_000);
    let doc = json!({
        "_id": modb_doc_id(month, &new_id()),
        "pvt_type": "fax",
        "folder": "outbox",
        "pvt_job_status": status,
        "pvt_account_id": account.as_str(),
        "pvt_account_db": db.name(),
        "pvt_created": created,
        "pvt_modified": created + 40,
        "pvt_delivered_date": if success { json!(created + 40) } else { Value::Null },
        "pvt_pages": 1,
        "from_number": "+14155550100",
        "from_name": "Bench",
        "to_number": to,
        "to_name": "Bench remote",
        "attempts": 1,
        "retries": 3,
        "tx_result": {
            "success": success,
            "result_code": code,
            "result_text": text,
            "result_cause": if success { "NORMAL_CLEARING" } else { "USER_BUSY" },
            "pages_sent": if success { 1 } else { 0 },
            "time_elapsed": 40,
            "fax_bad_rows": 0,
            "fax_speed": 14400,
            "fax_result_text": if success { "OK" } else { "" },
        },
    });
    (db, doc)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("seed_faxes: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(a).await {
        eprintln!("seed_faxes: {e}");
        std::process::exit(1);
    }
}

async fn run(a: Args) -> Result<(), Box<dyn std::error::Error>> {
    let store: SharedStore = match (&a.data_dir, &a.couch) {
        (Some(dir), _) => {
            std::fs::create_dir_all(dir)?;
            Arc::new(faxd::store::sqlite::SqliteStore::open(std::path::Path::new(dir)).await?)
        }
        (None, Some(url)) => Arc::new(faxd::store::couch::CouchStore::connect(url).await?),
        (None, None) => return Err("give one of --data-dir DIR or --couch URL".into()),
    };
    for db in [Db::Accounts, Db::SystemConfig, Db::Faxes] {
        store.ensure_db(&db).await?;
    }
    faxd::bootstrap::ensure_master_account(&store).await?;
    let master = faxd::bootstrap::master_account(&store)
        .await?
        .ok_or("no master account")?;
    let started = Instant::now();
    let mut accounts = Vec::with_capacity(a.accounts);
    for i in 0..a.accounts {
        let id = AccountId::generate();
        let name = format!("Bench{i}");
        let mut doc = faxd::bootstrap::create_account(
            &store,
            &id,
            &name,
            &format!("bench{i}.example.com"),
            Some(&master),
            false,
        )
        .await?;
        // Submissions of the bench send from a number the account does not own.
        doc["pvt_fax_allow_any_caller_id"] = json!(true);
        store.save(&Db::Account(id.clone()), doc).await?;
        if let Some(mut listed) = store.get(&Db::Accounts, id.as_str()).await? {
            listed["pvt_fax_allow_any_caller_id"] = json!(true);
            store.save(&Db::Accounts, listed).await?;
        }
        faxd::bootstrap::create_user(&store, &id, "boss", "benchpw", "admin").await?;
        accounts.push((name, id));
    }
    let now = faxd::time::now_gregorian();
    let span = a.days.max(1) * 86_400;
    // The MODBs first (ensure_db installs the views), then the faxes, 32 writes in flight.
    let mut months = std::collections::BTreeSet::new();
    for n in 0..a.faxes {
        let (_, id) = &accounts[n % accounts.len()];
        let created = now - (n as i64 * 7_919) % span;
        months.insert((id.clone(), YearMonth::from_gregorian(created)));
    }
    for (id, month) in months {
        store.ensure_db(&Db::Modb(id, month)).await?;
    }
    let writes = futures_util::stream::iter(0..a.faxes)
        .map(|n| {
            let store = store.clone();
            let (_, id) = &accounts[n % accounts.len()];
            let created = now - (n as i64 * 7_919) % span;
            let (db, doc) = outbox_fax(id, n, created);
            async move { store.save(&db, doc).await }
        })
        .buffer_unordered(32);
    futures_util::pin_mut!(writes);
    let mut done = 0usize;
    while let Some(r) = writes.next().await {
        r?;
        done += 1;
        if done.is_multiple_of(10_000) {
            eprintln!("seed_faxes: {done} faxes ({:.0?})", started.elapsed());
        }
    }
    eprintln!(
        "seed_faxes: {} accounts, {} faxes in {:.1?}",
        a.accounts,
        a.faxes,
        started.elapsed()
    );
    let (name, id) = &accounts[0];
    println!("{name} {id}");
    Ok(())
}
