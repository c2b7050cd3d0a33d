//! `faxd import kazoo` against a Kazoo-shaped CouchDB (the CouchDB-API test server loaded
//! with Kazoo 4.3 documents: the `accounts` directory, account databases
//! `account%2Fxx%2Fyy%2F…`, MODBs `…-YYYYMM`, the `faxes` queue, `system_config`): after the
//! import the Kazoo credentials log in through a real node's API, every imported fax
//! downloads with the same bytes, reruns change nothing, a killed run completes on the next
//! one without duplicates, and what is left out is reported with its reason. Both target
//! stores (embedded SQLite and CouchDB).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use common::*;
use faxd::ids::{AccountId, Db, YearMonth};
use serde_json::{Value, json};

const MASTER: &str = "00000000000000000000000000000aaa";
const PARENT: &str = "1111111111111111111111111111aaaa";
const CHILD: &str = "2222222222222222222222222222bbbb";
const ALICE: &str = "a11ce000000000000000000000000001";
const BAD_USER: &str = "a11ce000000000000000000000000002";
const BOB: &str = "b0b00000000000000000000000000001";
const FAXBOX: &str = "fb000000000000000000000000000001";
const CF_FAX: &str = "cf000000000000000000000000000001";
const CF_VOICE: &str = "cf000000000000000000000000000002";
const CF_RECEIVE: &str = "cf000000000000000000000000000003";
const JOB: &str = "10b00000000000000000000000000001";
const JOB_BUSY: &str = "10b00000000000000000000000000002";
const JOB_OTHER: &str = "10b00000000000000000000000000003";

fn md5_sha1(user: &str, pass: &str) -> (String, String) {
    faxd::auth::login_digests(user, pass)
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn gregorian(month: YearMonth, day: i64) -> i64 {
    month.start_gregorian() + day * 86_400 + 3_600
}

fn db_name(account: &str) -> String {
    AccountId::parse(account).unwrap().db_name()
}

/// Kazoo documents, by database. Attachments inline (base64), as CouchDB takes them.
struct Kazoo {
    dbs: Vec<(String, Vec<Value>)>,
    /// (account, fax id as faxd serves it, folder, attachment name, bytes)
    faxes: Vec<(String, String, &'static str, String, Vec<u8>)>,
}

fn att(content_type: &str, data: &[u8]) -> Value {
    json!({"content_type": content_type, "data": b64(data)})
}

/// A fax of a MODB with one attachment; recorded in `faxes` for the download check.
fn modb_fax(
    kz: &mut Kazoo,
    account: &str,
    month: YearMonth,
    n: usize,
    folder: &'static str,
    size: usize,
) -> Value {
    let id = format!("{month}-{:032x}", (n as u128) * 7919 + 1);
    let bytes: Vec<u8> = (0..size).map(|i| ((i * 31 + n * 7) % 251) as u8).collect();
    let (name, ct) = if folder == "inbox" {
        (format!("received_file_{n}.tiff"), "image/tiff")
    } else {
        ("original_file.pdf".to_string(), "application/pdf")
    };
    kz.faxes.push((
        account.to_string(),
        id.clone(),
        folder,
        name.clone(),
        bytes.clone(),
    ));
    json!({
        "_id": id, "pvt_type": "fax", "folder": folder,
        "from_number": "+14155557000", "to_number": "+14155550100",
        "faxbox_id": FAXBOX, "owner_id": ALICE, "media_type": "tiff",
        "pvt_account_id": account, "pvt_account_db": format!("{}-{month}", db_name(account)).replace('/', "%2F"),
        "pvt_created": gregorian(month, (n % 27) as i64), "pvt_modified": gregorian(month, (n % 27) as i64),
        "rx_result": {"success": true, "total_pages": 1},
        "_attachments": {name: att(ct, &bytes)},
    })
}

/// The data set of the functional tests: a Kazoo master, the imported parent account and
/// its child; users, a faxbox, three callflows (one without fax), queued jobs, fax history
/// in two months, a legacy fax in the account database, a malformed document, a device and
/// a CDR, and `system_config/fax` with one bad value.
fn kazoo_data() -> Kazoo {
    let nov = YearMonth::new(2026, 11).unwrap();
    let oct = YearMonth::new(2026, 10).unwrap();
    let mut kz = Kazoo {
        dbs: vec![],
        faxes: vec![],
    };
    let account = |id: &str, name: &str, realm: &str, tree: &[&str]| {
        json!({"_id": id, "pvt_type": "account", "name": name, "realm": realm,
               "pvt_tree": tree, "pvt_enabled": true, "timezone": "America/New_York",
               "pvt_account_id": id, "pvt_account_db": db_name(id).replace('/', "%2F"),
               "pvt_created": gregorian(oct, 1), "pvt_modified": gregorian(oct, 1),
               "pvt_superduper_admin": id == MASTER})
    };
    let m = account(MASTER, "Kazoo Master", "master.kazoo.example", &[]);
    let p = account(PARENT, "Acme Fax", "acme.kazoo.example", &[MASTER]);
    let c = account(
        CHILD,
        "Acme Branch",
        "branch.kazoo.example",
        &[MASTER, PARENT],
    );
    kz.dbs
        .push(("accounts".into(), vec![m.clone(), p.clone(), c.clone()]));

    let (a_md5, a_sha1) = md5_sha1("alice", "kazoo-secret");
    let (b_md5, _) = md5_sha1("bob", "branch-secret");
    let (m_md5, m_sha1) = md5_sha1("root", "master-secret");
    let tiff = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiff/jpeg-gray.tif"),
    )
    .unwrap();
    let parent_db = vec![
        p.clone(),
        json!({"_id": ALICE, "pvt_type": "user", "username": "alice", "first_name": "Alice",
               "last_name": "Admin", "priv_level": "admin", "enabled": true,
               "email": "alice@acme.example", "pvt_md5_auth": a_md5, "pvt_sha1_auth": a_sha1}),
        json!({"_id": BAD_USER, "pvt_type": "user", "username": "broken", "first_name": "B",
               "last_name": "Roken", "pvt_md5_auth": "not-a-digest"}),
        json!({"_id": FAXBOX, "pvt_type": "faxbox", "name": "Front desk",
               "caller_id": "+14155550100", "caller_name": "Acme", "owner_id": ALICE,
               "pvt_smtp_email_address": "1a2b3c4d.fax.kazoo.io",
               "custom_smtp_email_address": "Fax.Acme.Example", "retries": 3,
               "smtp_permission_list": ["alice@acme.example"],
               "pvt_account_id": PARENT, "pvt_created": gregorian(oct, 2)}),
        json!({"_id": CF_FAX, "pvt_type": "callflow", "name": "Fax line",
               "numbers": ["4155550100"], "flow": {"module": "faxbox", "data": {"id": FAXBOX}, "children": {}}}),
        json!({"_id": CF_VOICE, "pvt_type": "callflow", "name": "Voice line",
               "numbers": ["4155550199"], "flow": {"module": "voicemail", "data": {}, "children": {}}}),
        json!({"_id": CF_RECEIVE, "pvt_type": "callflow", "name": "Alice fax",
               "numbers": ["+14155550101", "*97"],
               "flow": {"module": "user", "data": {"id": ALICE},
                        "children": {"_": {"module": "receive_fax", "data": {"owner_id": ALICE}}}}}),
        json!({"_id": "dev00000000000000000000000000001", "pvt_type": "device", "name": "desk phone"}),
        // Legacy faxes kept in the account database: one dated, one not.
        json!({"_id": "legacy0000000000000000000000001", "pvt_type": "fax", "folder": "inbox",
               "pvt_created": gregorian(oct, 12), "from_number": "+14155557001",
               "_attachments": {"received_file_legacy.tiff": att("image/tiff", &tiff)}}),
        json!({"_id": "legacy0000000000000000000000002", "pvt_type": "fax",
               "pvt_created": "yesterday"}),
    ];
    kz.faxes.push((
        PARENT.into(),
        format!("{oct}-legacy0000000000000000000000001"),
        "inbox",
        "received_file_legacy.tiff".into(),
        tiff.clone(),
    ));
    kz.dbs.push((db_name(PARENT), parent_db));
    kz.dbs.push((
        db_name(MASTER),
        vec![
            m,
            json!({"_id": "b0b00000000000000000000000000009", "pvt_type": "user", "username": "root",
               "first_name": "R", "last_name": "Oot", "pvt_md5_auth": m_md5, "pvt_sha1_auth": m_sha1}),
        ],
    ));
    kz.dbs.push((
        db_name(CHILD),
        vec![
            c,
            json!({"_id": BOB, "pvt_type": "user", "username": "bob", "first_name": "Bob",
               "last_name": "Branch", "pvt_md5_auth": b_md5}),
        ],
    ));
    let mut nov_docs =
        vec![json!({"_id": format!("{nov}-cdr1"), "pvt_type": "cdr", "call_id": "x"})];
    for n in 0..3 {
        let f = modb_fax(&mut kz, PARENT, nov, n, "inbox", 3000 + n * 100);
        nov_docs.push(f);
    }
    nov_docs.push(modb_fax(&mut kz, PARENT, nov, 10, "outbox", 5000));
    nov_docs.push(
        json!({"_id": format!("{nov}-smtplog1"), "pvt_type": "fax_smtp_log",
        "from": "x@y.example", "to": "1a2b3c4d.fax.kazoo.io", "errors": ["no attachment"],
        "pvt_created": gregorian(nov, 3)}),
    );
    kz.dbs
        .push((format!("{}-{nov}", db_name(PARENT)), nov_docs));
    let oct_fax = modb_fax(&mut kz, PARENT, oct, 20, "inbox", 4000);
    kz.dbs
        .push((format!("{}-{oct}", db_name(PARENT)), vec![oct_fax]));
    let child_fax = modb_fax(&mut kz, CHILD, nov, 30, "inbox", 2000);
    kz.dbs
        .push((format!("{}-{nov}", db_name(CHILD)), vec![child_fax]));

    let job = |id: &str, account: &str, status: &str| {
        json!({"_id": id, "pvt_type": "fax", "pvt_job_status": status,
               "pvt_account_id": account, "pvt_account_db": "faxes",
               "from_number": "+14155550100", "to_number": "+14155550222",
               "retries": 1, "attempts": 0, "faxbox_id": FAXBOX,
               "pvt_created": gregorian(nov, 20), "pvt_modified": gregorian(nov, 20),
               "_attachments": {"fax_file.tiff": att("image/tiff", &tiff)}})
    };
    kz.dbs.push((
        "faxes".into(),
        vec![
            job(JOB, PARENT, "pending"),
            job(JOB_BUSY, PARENT, "processing"),
            job(JOB_OTHER, MASTER, "pending"),
            json!({"_id": FAXBOX, "pvt_type": "faxbox", "pvt_account_id": PARENT,
                   "pvt_account_db": "faxes", "name": "Front desk"}),
        ],
    ));
    kz.dbs.push((
        "system_config".into(),
        vec![
            json!({"_id": "fax", "default": {"max_outbound": 4, "default_retry_count": "three",
                      "default_smtp_domain": "fax.acme.example"}}),
        ],
    ));
    kz
}

/// Loads documents into the Kazoo CouchDB (one `_bulk_docs` per database).
async fn load_kazoo(http: &reqwest::Client, url: &str, kz: &Kazoo) {
    for (db, docs) in &kz.dbs {
        let enc = db.replace('/', "%2F");
        let r = http.put(format!("{url}/{enc}")).send().await.unwrap();
        assert!(
            r.status().is_success() || r.status().as_u16() == 412,
            "create {db}: {}",
            r.status()
        );
        for chunk in docs.chunks(200) {
            let r = http
                .post(format!("{url}/{enc}/_bulk_docs"))
                .json(&json!({"docs": chunk}))
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            assert!(status.is_success(), "{db}: {body}");
            assert!(
                body.as_array()
                    .unwrap()
                    .iter()
                    .all(|row| row.get("error").is_none()),
                "{db}: {body}"
            );
        }
    }
}

/// A faxd configuration file for the import command (its API address unused).
fn write_config(dir: &Path, couch: Option<&str>) -> PathBuf {
    write_config_at(
        dir,
        couch,
        &format!("127.0.0.1:{}", free_port()),
        "faxd.toml",
    )
}

/// A configuration file named `name` whose node API is `api`.
fn write_config_at(dir: &Path, couch: Option<&str>, api: &str, name: &str) -> PathBuf {
    let data = dir.join("data");
    let store = match couch {
        Some(url) => format!("backend = \"couchdb\"\ncouch_url = \"{url}\"\n"),
        None => "backend = \"embedded\"\n".into(),
    };
    let text = format!(
        "[node]\ndata_dir = \"{}\"\n\n[api]\nlisten = \"{api}\"\n\n[store]\n{store}",
        data.display()
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `faxd import kazoo`; (exit code, stdout, stderr).
fn import(config: &Path, from: &str, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(FAXD)
        .args(["import", "kazoo", "--config"])
        .arg(config)
        .args(["--from", from])
        .args(extra)
        .env_remove("FAXD_LOG")
        .output()
        .expect("faxd import kazoo");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn import_async(config: &Path, from: &str, extra: &[&str]) -> (i32, String, String) {
    let (config, from) = (config.to_path_buf(), from.to_string());
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        import(&config, &from, &extra)
    })
    .await
    .unwrap()
}

/// The summary row of a kind: (created, updated, unchanged, skipped).
fn row(summary: &str, kind: &str) -> (u64, u64, u64, u64) {
    let line = summary
        .lines()
        .find(|l| l.starts_with(kind) && l[kind.len()..].starts_with("  "))
        .unwrap_or_else(|| panic!("no '{kind}' row in:\n{summary}"));
    let n: Vec<u64> = line[kind.len()..]
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    (n[0], n[1], n[2], n[3])
}

async fn login(http: &reqwest::Client, api: &str, data: Value) -> (u16, Value) {
    let r = http
        .put(format!("{api}/user_auth"))
        .json(&json!({ "data": data }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The first run: what was created and what was skipped, with reasons.
/// `taken`: numbers another faxd account already routes (skipped).
fn check_first_summary(out: &str, taken: u64) {
    assert_eq!(row(out, "accounts"), (2, 0, 0, 0), "{out}");
    assert_eq!(row(out, "users"), (2, 0, 0, 1), "{out}");
    assert_eq!(row(out, "faxboxes"), (1, 0, 0, 0), "{out}");
    assert_eq!(row(out, "callflows"), (2, 0, 0, 1), "{out}");
    assert_eq!(row(out, "numbers"), (2 - taken, 0, 0, 1 + taken), "{out}");
    // One pending job queued, the one Kazoo is transmitting left out.
    assert_eq!(row(out, "queued faxes"), (1, 0, 0, 1), "{out}");
    // 5 MODB faxes of the parent, 1 of the child, the dated legacy fax; the undated one
    // is skipped.
    assert_eq!(row(out, "fax history"), (7, 0, 0, 1), "{out}");
    assert_eq!(row(out, "smtp logs"), (1, 0, 0, 0), "{out}");
    assert_eq!(row(out, "system_config"), (1, 0, 0, 1), "{out}");
    for (what, why) in [
        (CF_VOICE, "no receive_fax or faxbox module"),
        (BAD_USER, "pvt_md5_auth is not an md5 hex digest"),
        ("legacy0000000000000000000000002", "cannot tell its month"),
        (JOB_BUSY, "being transmitted by Kazoo (processing)"),
        ("*97", "not a dialable number"),
        ("default.default_retry_count", "key left out"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("skipped") && l.contains(what) && l.contains(why)),
            "no skip line for {what} ({why}) in:\n{out}"
        );
    }
    assert!(
        out.contains("not fax data, left in Kazoo: cdr (1), device (1)"),
        "{out}"
    );
    // Not selected: the master account and its job.
    assert!(!out.contains(MASTER) && !out.contains(JOB_OTHER), "{out}");
}

/// Through a real node: Kazoo credentials log in (md5 and sha1, the child's md5-only user,
/// by name and by an imported number), every fax downloads with its bytes, the faxbox keeps
/// its SMTP addresses, the queued job is in faxd's hands.
async fn check_through_api(node: &Node, kz: &Kazoo) {
    let http = reqwest::Client::new();
    let api = node.url("/v2");
    let (a_md5, a_sha1) = md5_sha1("alice", "kazoo-secret");
    let (status, body) = login(
        &http,
        &api,
        json!({"credentials": a_md5, "account_name": "Acme Fax"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["data"]["owner_id"], ALICE);
    let token = body["auth_token"].as_str().unwrap().to_string();
    // After the upgrade to faxd's record both forms still work, by realm and by number.
    let (status, body) = login(
        &http,
        &api,
        json!({"credentials": a_sha1, "method": "sha", "account_realm": "acme.kazoo.example"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = login(
        &http,
        &api,
        json!({"credentials": a_md5, "phone_number": "4155550100"}),
    )
    .await;
    assert_eq!(
        status, 201,
        "the imported number routes to the account: {body}"
    );
    let (wrong, _) = md5_sha1("alice", "guess");
    let (status, _) = login(
        &http,
        &api,
        json!({"credentials": wrong, "account_name": "Acme Fax"}),
    )
    .await;
    assert_eq!(status, 401);
    // An admin sets bob's password before bob ever logged in: his Kazoo password stops
    // working, the new one works.
    let r = http
        .patch(format!("{api}/accounts/{CHILD}/users/{BOB}"))
        .header("X-Auth-Token", &token)
        .json(&json!({"data": {"username": "bob", "password": "faxd-secret"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let (b_md5, _) = md5_sha1("bob", "branch-secret");
    let (status, _) = login(
        &http,
        &api,
        json!({"credentials": b_md5, "account_name": "Acme Branch"}),
    )
    .await;
    assert_eq!(status, 401, "the Kazoo password still works after a change");
    let (b_new, _) = md5_sha1("bob", "faxd-secret");
    let (status, body) = login(
        &http,
        &api,
        json!({"credentials": b_new, "account_name": "Acme Branch"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // The master account was not selected.
    let (m_md5, _) = md5_sha1("root", "master-secret");
    let (status, _) = login(
        &http,
        &api,
        json!({"credentials": m_md5, "account_name": "Kazoo Master"}),
    )
    .await;
    assert_eq!(status, 401);

    let get = |path: String| {
        let http = http.clone();
        let token = token.clone();
        async move {
            let r = http
                .get(path)
                .header("X-Auth-Token", token)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.bytes().await.unwrap().to_vec())
        }
    };
    for (account, id, folder, name, bytes) in &kz.faxes {
        let (status, body) = get(format!(
            "{api}/accounts/{account}/faxes/{folder}/{id}/attachment?format=original"
        ))
        .await;
        assert_eq!(
            status,
            200,
            "{folder}/{id}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(
            &body, bytes,
            "{folder}/{id} ({name}) downloads with other bytes"
        );
    }
    let (status, body) = get(format!("{api}/accounts/{PARENT}/faxboxes/{FAXBOX}")).await;
    assert_eq!(status, 200);
    let fb: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(fb["data"]["smtp_email_address"], "1a2b3c4d.fax.kazoo.io");
    assert_eq!(fb["data"]["custom_smtp_email_address"], "fax.acme.example");

    let nov = YearMonth::new(2026, 11).unwrap();
    let queued = format!("{api}/accounts/{PARENT}/faxes/outgoing/{JOB}");
    let moved = format!("{api}/accounts/{PARENT}/faxes/outbox/{nov}-{JOB}");
    poll_async(
        "the imported job queued or in the outbox",
        Duration::from_secs(10),
        || async {
            (get(queued.clone()).await.0 == 200 || get(moved.clone()).await.0 == 200).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kazoo_import_into_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let kazoo_dir = dir.path().join("kazoo");
    std::fs::create_dir_all(&kazoo_dir).unwrap();
    let kazoo = Couch::start(&kazoo_dir);
    let http = reqwest::Client::new();
    let kz = kazoo_data();
    load_kazoo(&http, &kazoo.url, &kz).await;
    let config = write_config(dir.path(), None);

    // A dry run reports the same and writes nothing.
    let (code, dry, err) =
        import_async(&config, &kazoo.url, &["--account", PARENT, "--dry-run"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(row(&dry, "accounts"), (2, 0, 0, 0), "{dry}");
    let (code, out, err) = import_async(&config, &kazoo.url, &["--account", PARENT]).await;
    assert_eq!(code, 0, "{err}");
    eprintln!("{err}{out}");
    check_first_summary(&out, 0);
    assert!(err.contains("[1/2] account Acme Fax"), "progress: {err}");
    let (code, again, err) = import_async(&config, &kazoo.url, &["--account", PARENT]).await;
    assert_eq!(code, 0, "{err}");
    assert!(again.contains("nothing changed"), "second run:\n{again}");

    let data = dir.path().join("data");
    let node = admin::start_node(&data, &[]).await;
    check_through_api(&node, &kz).await;
    // While the node runs on the embedded store, the import refuses to open it.
    let running = write_config_at(dir.path(), None, &node.api, "running.toml");
    let (code, out, err) = import_async(&running, &kazoo.url, &["--account", PARENT]).await;
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("stop the node before importing"), "{err}");
    admin::stop_node(node).await;

    // The first login upgraded alice to faxd's record; a rerun keeps it.
    let (code, third, err) = import_async(&config, &kazoo.url, &["--account", PARENT]).await;
    assert_eq!(code, 0, "{err}");
    assert!(third.contains("nothing changed"), "after logins:\n{third}");
    let store = faxd::store::sqlite::SqliteStore::open(&data).await.unwrap();
    use faxd::store::Store as _;
    let alice = store
        .get(&Db::Account(AccountId::parse(PARENT).unwrap()), ALICE)
        .await
        .unwrap()
        .unwrap();
    assert!(alice.get("pvt_auth").is_some(), "{alice}");
    assert!(alice.get("pvt_md5_auth").is_none() && alice.get("pvt_sha1_auth").is_none());
    // bob's password was set in faxd: Kazoo's digest is gone from his document.
    let bob = store
        .get(&Db::Account(AccountId::parse(CHILD).unwrap()), BOB)
        .await
        .unwrap()
        .unwrap();
    assert!(
        bob.get("pvt_auth").is_some() && bob.get("pvt_md5_auth").is_none(),
        "{bob}"
    );
    let fax = store.get(&Db::SystemConfig, "fax").await.unwrap().unwrap();
    assert_eq!(fax["default"]["max_outbound"], 4);
    assert!(fax["default"].get("default_retry_count").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kazoo_import_into_couchdb() {
    let dir = tempfile::tempdir().unwrap();
    let (kazoo_dir, target_dir) = (dir.path().join("kazoo"), dir.path().join("target"));
    std::fs::create_dir_all(&kazoo_dir).unwrap();
    std::fs::create_dir_all(&target_dir).unwrap();
    let kazoo = Couch::start(&kazoo_dir);
    let target = Couch::start(&target_dir);
    let http = reqwest::Client::new();
    let kz = kazoo_data();
    load_kazoo(&http, &kazoo.url, &kz).await;
    let config = write_config(dir.path(), Some(&target.url));
    // faxd already routes +14155550101 to an account of its own.
    for (path, body) in [
        ("accounts".to_string(), None),
        (
            "accounts/number-+14155550101".to_string(),
            Some(
                json!({"pvt_type": "number_claim", "account_id": "f".repeat(32),
                        "callflow_id": "c".repeat(32), "number": "+14155550101"}),
            ),
        ),
    ] {
        let req = http.put(format!("{}/{path}", target.url));
        let r = match body {
            Some(b) => req.json(&b),
            None => req,
        }
        .send()
        .await
        .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }

    let (code, out, err) = import_async(&config, &kazoo.url, &["--account", PARENT]).await;
    assert_eq!(code, 0, "{err}");
    check_first_summary(&out, 1);
    assert!(
        out.lines().any(|l| l.starts_with("skipped numbers")
            && l.contains("+14155550101")
            && l.contains(&format!(
                "already routes to callflow {} of account {}",
                "c".repeat(32),
                "f".repeat(32)
            ))),
        "{out}"
    );
    let (code, again, err) = import_async(&config, &kazoo.url, &["--account", PARENT]).await;
    assert_eq!(code, 0, "{err}");
    assert!(again.contains("nothing changed"), "second run:\n{again}");

    // Kazoo's layout in the target: the faxbox copy in `faxes`, the MODB of the legacy fax.
    let faxes_copy: Value = http
        .get(format!("{}/faxes/{FAXBOX}", target.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(faxes_copy["pvt_account_db"], "faxes", "{faxes_copy}");

    let data = dir.path().join("data");
    let node = admin::start_node(
        &data,
        &[
            ("FAXD_STORE_BACKEND", "couchdb"),
            ("FAXD_STORE_COUCH_URL", &target.url),
        ],
    )
    .await;
    check_through_api(&node, &kz).await;
    let (code, third, err) = import_async(&config, &kazoo.url, &["--account", PARENT]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        third.contains("nothing changed"),
        "with the node running:\n{third}"
    );
    admin::stop_node(node).await;

    // The speed into CouchDB: a generated set of two more accounts.
    let gen_set = generated(2, 150, 8192);
    load_kazoo(&http, &kazoo.url, &gen_set).await;
    let ids: Vec<String> = (0..2u128)
        .map(|a| format!("{:032x}", 0xacc0_0000u128 + a))
        .collect();
    let (code, out, err) = import_async(
        &config,
        &kazoo.url,
        &["--account", &ids[0], "--account", &ids[1]],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(row(&out, "fax history"), (300, 0, 0, 0), "{out}");
    let done = err
        .lines()
        .find(|l| l.starts_with("done:"))
        .unwrap_or_default();
    eprintln!("import speed (CouchDB store, 8 KiB attachments): {done}");
}

/// A generated data set: `accounts` accounts, each with `per_account` inbox faxes of
/// `size` bytes in one month.
fn generated(accounts: usize, per_account: usize, size: usize) -> Kazoo {
    let nov = YearMonth::new(2026, 11).unwrap();
    let mut kz = Kazoo {
        dbs: vec![],
        faxes: vec![],
    };
    let mut directory = vec![];
    for a in 0..accounts {
        let id = format!("{:032x}", 0xacc0_0000u128 + a as u128);
        let doc = json!({"_id": id, "pvt_type": "account", "name": format!("Gen {a}"),
                         "realm": format!("gen{a}.kazoo.example"), "pvt_tree": []});
        directory.push(doc.clone());
        let (md5, sha1) = md5_sha1("user", &format!("pw{a}"));
        kz.dbs.push((
            db_name(&id),
            vec![
                doc,
                json!({"_id": format!("{:032x}", 0x5e40_0000u128 + a as u128), "pvt_type": "user",
                       "username": "user", "first_name": "U", "last_name": "Ser",
                       "pvt_md5_auth": md5, "pvt_sha1_auth": sha1}),
            ],
        ));
        let docs: Vec<Value> = (0..per_account)
            .map(|n| modb_fax(&mut kz, &id, nov, a * 100_000 + n, "inbox", size))
            .collect();
        kz.dbs.push((format!("{}-{nov}", db_name(&id)), docs));
    }
    kz.dbs.insert(0, ("accounts".into(), directory));
    kz
}

fn fax_total(out: &str) -> u64 {
    let (c, u, n, _) = row(out, "fax history");
    c + u + n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kazoo_import_killed_part_way_completes_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let kazoo_dir = dir.path().join("kazoo");
    std::fs::create_dir_all(&kazoo_dir).unwrap();
    let kazoo = Couch::start(&kazoo_dir);
    let http = reqwest::Client::new();
    let (accounts, per_account) = (4, 200);
    let kz = generated(accounts, per_account, 8192);
    load_kazoo(&http, &kazoo.url, &kz).await;
    let total = (accounts * per_account) as u64;

    // A clean run into its own store: the speed.
    let clean_dir = dir.path().join("clean");
    std::fs::create_dir_all(&clean_dir).unwrap();
    let clean = write_config(&clean_dir, None);
    let (code, out, err) = import_async(&clean, &kazoo.url, &[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(row(&out, "fax history"), (total, 0, 0, 0), "{out}");
    let done = err
        .lines()
        .find(|l| l.starts_with("done:"))
        .unwrap_or_default();
    eprintln!("import speed (embedded store, 8 KiB attachments): {done}");

    // Killed (SIGKILL) once it has read 200 documents, then run again.
    let config = write_config(dir.path(), None);
    let mut child = Command::new(FAXD)
        .args(["import", "kazoo", "--config"])
        .arg(&config)
        .args(["--from", &kazoo.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let killed = tokio::task::spawn_blocking(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("documents read") {
                let _ = child.kill();
                let status = child.wait().unwrap();
                return Some(status);
            }
        }
        child.wait().ok()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        !killed.success(),
        "the import finished before it could be killed"
    );

    let (code, out, err) = import_async(&config, &kazoo.url, &[]).await;
    assert_eq!(code, 0, "{err}");
    let (created, updated, unchanged, skipped) = row(&out, "fax history");
    assert_eq!(skipped, 0, "{out}");
    assert_eq!(created + updated + unchanged, total, "{out}");
    assert!(unchanged > 0, "the killed run wrote nothing:\n{out}");
    assert!(created > 0, "the killed run was not part-way:\n{out}");
    let (code, again, err) = import_async(&config, &kazoo.url, &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(again.contains("nothing changed"), "{again}");
    assert_eq!(fax_total(&again), total);

    // Exactly the source's faxes, each once, with its bytes.
    let store = faxd::store::sqlite::SqliteStore::open(&dir.path().join("data"))
        .await
        .unwrap();
    use faxd::store::Store as _;
    let nov = YearMonth::new(2026, 11).unwrap();
    let mut stored = 0;
    for a in 0..accounts {
        let id = AccountId::parse(&format!("{:032x}", 0xacc0_0000u128 + a as u128)).unwrap();
        stored += store
            .docs_by_type(&Db::Modb(id, nov), "fax")
            .await
            .unwrap()
            .len();
    }
    assert_eq!(stored as u64, total);
    for (account, id, _, name, bytes) in kz.faxes.iter().step_by(97) {
        let db = Db::Modb(AccountId::parse(account).unwrap(), nov);
        let att = store.get_attachment(&db, id, name).await.unwrap().unwrap();
        assert_eq!(&faxd::store::read_all(att.body).await.unwrap(), bytes);
    }
}
