//! The notifier on both stores (the embedded one and CouchDB, `FAXD_TEST_COUCH_URL`): the
//! `notify/pending` index finds what is due and nothing else; an e-mail-to-fax log with
//! errors mails its sender once (maildir), the log's delivery state ends `done`; a second
//! run sends nothing again; a log without errors, or with reporting off, records nothing.

mod api_common;

use std::sync::Arc;

use faxd::config::notify::NotifySection;
use faxd::ids::{AccountId, Db, YearMonth, modb_doc_id, new_id};
use faxd::notify::deliver::Notifier;
use faxd::store::SharedStore;
use serde_json::{Value, json};

fn now() -> i64 {
    faxd::time::now_unix()
}

/// A `fax_smtp_log` as the e-mail-to-fax intake writes it, in `db`.
fn smtp_log(db: &Db, errors: Value) -> Value {
    let Db::Modb(account, month) = db else {
        panic!("a MODB")
    };
    json!({
        "_id": modb_doc_id(*month, &new_id()),
        "pvt_type": "fax_smtp_log",
        "pvt_account_id": account.as_str(),
        "pvt_account_db": db.name(),
        "pvt_created": faxd::time::now_gregorian(),
        "from": "scanner@example.com",
        "to": "+15557654321@fax.example.com",
        "original_number": "+15557654321",
        "errors": errors,
    })
}

/// A notifier whose mail goes to the maildir `<dir>/mail`.
fn maildir_notifier(store: &SharedStore, dir: &std::path::Path) -> Notifier {
    let cfg = NotifySection {
        maildir: dir.join("mail").display().to_string(),
        ..NotifySection::default()
    };
    Notifier::new(store.clone(), cfg, dir).expect("notifier")
}

/// The messages in the maildir `<dir>/mail`.
fn mails(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir.join("mail"))
        .expect("maildir")
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).expect("eml"))
        .collect()
}

async fn notify_smtp_errors(store: SharedStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let account = AccountId::generate();
    let db = Db::Modb(account, YearMonth::now());
    store.ensure_db(&db).await.expect("modb");

    let mut with_errors = smtp_log(&db, json!(["no faxable attachment", "invalid number"]));
    assert!(faxd::notify::record_smtp_error(
        &mut with_errors,
        true,
        now()
    ));
    let mut later = smtp_log(&db, json!(["not allowed"]));
    assert!(faxd::notify::record_smtp_error(
        &mut later,
        true,
        now() + 3600
    ));
    let mut clean = smtp_log(&db, json!([]));
    assert!(!faxd::notify::record_smtp_error(&mut clean, true, now()));
    let mut off = smtp_log(&db, json!(["invalid number"]));
    assert!(!faxd::notify::record_smtp_error(&mut off, false, now()));
    for doc in [&with_errors, &later, &clean, &off] {
        store.save(&db, doc.clone()).await.expect("save log");
    }
    let id = with_errors["_id"].as_str().unwrap().to_string();
    assert_eq!(
        store.notify_due(&db, now(), 10).await.unwrap(),
        std::slice::from_ref(&id)
    );
    let notifier = maildir_notifier(&store, dir.path());
    // A missing database has nothing due, and delivering it is no error.
    let other = Db::Modb(AccountId::generate(), YearMonth::now());
    assert_eq!(notifier.run_db(&other).await.expect("missing db"), None);

    let next = notifier.run_db(&db).await.expect("run");
    assert_eq!(next, None);
    let got = mails(dir.path());
    assert_eq!(got.len(), 1, "{got:?}");
    let eml = &got[0];
    assert!(eml.contains("To: scanner@example.com\r\n"), "{eml}");
    assert!(eml.contains("Subject: Error Sending Fax\r\n"), "{eml}");
    assert!(eml.contains("Auto-Submitted: auto-generated\r\n"), "{eml}");
    assert!(eml.contains("no faxable attachment"), "{eml}");

    let doc: Value = store.get(&db, &id).await.unwrap().expect("log");
    assert_eq!(doc["pvt_notify"]["state"], "done", "{doc}");
    assert_eq!(doc["pvt_notify"]["deliveries"][0]["state"], "delivered");
    assert_eq!(doc["pvt_notify"]["deliveries"][0]["attempts"], 1);
    // Nothing is due any more, and a second run sends nothing.
    assert!(store.notify_due(&db, now(), 10).await.unwrap().is_empty());
    notifier.run_db(&db).await.expect("run again");
    assert_eq!(mails(dir.path()).len(), 1);
    // The later one is due later.
    let later_id = later["_id"].as_str().unwrap().to_string();
    assert_eq!(
        store.notify_due(&db, now() + 3600, 10).await.unwrap(),
        [later_id]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_errors_mail_the_sender_once_embedded() {
    let (store, _dir) = api_common::embedded().await;
    notify_smtp_errors(Arc::clone(&store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_errors_mail_the_sender_once_couchdb() {
    let (store, _dir) = api_common::couch().await;
    notify_smtp_errors(store).await;
}

/// A reception that failed (no page arrived) is recorded with its notification by the same
/// code fax_request runs ([`faxd::inbound::failure_doc`]); the notifier mails the receiver's
/// list once, with the reason, and no fax is attached (there is none).
async fn notify_inbound_failure(store: SharedStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let account = AccountId::generate();
    let receiver = faxd::inbound::Receiver {
        account: account.clone(),
        callflow_id: new_id(),
        owner_id: None,
        faxbox_id: None,
        notify: vec!["desk@example.com".into()],
        station_id: "+15557650000".into(),
        t38: false,
        max_inbound: None,
    };
    let call = faxd::inbound::CallInfo {
        call_id: new_id(),
        to: "+15557650000".into(),
        from_number: "+14155550100".into(),
        from_name: "Front Desk".into(),
    };
    let result = faxd::gateway::FaxResult {
        success: false,
        hangup_cause: "NORMAL_CLEARING".into(),
        sip_code: 200,
        fax_result_code: 49,
        fax_result_text: "The call dropped prematurely".into(),
        ..Default::default()
    };
    let now_g = faxd::time::now_gregorian();
    let (db, id) = faxd::inbound::fax_location(&account, now_g);
    let started = faxd::time::now_unix_ms() - 30_000;
    let doc = faxd::inbound::failure_doc(
        &receiver,
        &call,
        &result,
        &db,
        &id,
        "faxd@test",
        started,
        started + 30_000,
        now_g,
    );
    faxd::inbound::store_fax(&store, &db, &doc, &[])
        .await
        .expect("failure recorded");
    assert_eq!(
        store.notify_due(&db, now(), 10).await.unwrap(),
        std::slice::from_ref(&id)
    );

    let notifier = maildir_notifier(&store, dir.path());
    notifier.run_db(&db).await.expect("run");
    notifier.run_db(&db).await.expect("run again");
    let got = mails(dir.path());
    assert_eq!(got.len(), 1, "{got:?}");
    let eml = &got[0];
    assert!(eml.contains("To: desk@example.com\r\n"), "{eml}");
    assert!(
        eml.contains("Subject: Error receiving fax from Front Desk (+14155550100)\r\n"),
        "{eml}"
    );
    assert!(eml.contains("The call dropped prematurely"), "{eml}");
    assert!(!eml.contains("Content-Disposition: attachment"), "{eml}");
    let stored: Value = store.get(&db, &id).await.unwrap().expect("record");
    assert_eq!(stored["pvt_type"], "fax_inbound_error");
    assert_eq!(stored["pvt_notify"]["state"], "done", "{stored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reception_mails_the_receiver_once_embedded() {
    let (store, _dir) = api_common::embedded().await;
    notify_inbound_failure(Arc::clone(&store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reception_mails_the_receiver_once_couchdb() {
    let (store, _dir) = api_common::couch().await;
    notify_inbound_failure(store).await;
}

/// An account's own template (`notify_template_<event>` in its database) replaces the
/// built-in parts it has; the others stay built in.
async fn account_template_overrides(store: SharedStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let account = AccountId::generate();
    let adb = Db::Account(account.clone());
    store.ensure_db(&adb).await.expect("account db");
    store
        .save(
            &adb,
            json!({"_id": "notify_template_smtp_error",
                   "subject": "Acme fax gateway: mail to {{to}} refused\r\nBcc: x@evil.example",
                   "text": "Acme could not fax your mail.\nReason: {{error}}\n"}),
        )
        .await
        .expect("template");
    let db = Db::Modb(account, YearMonth::now());
    store.ensure_db(&db).await.expect("modb");
    let mut log = smtp_log(&db, json!(["invalid number"]));
    assert!(faxd::notify::record_smtp_error(&mut log, true, now()));
    store.save(&db, log).await.expect("log");
    maildir_notifier(&store, dir.path())
        .run_db(&db)
        .await
        .expect("run");
    let got = mails(dir.path());
    assert_eq!(got.len(), 1, "{got:?}");
    let eml = &got[0];
    assert!(
        eml.contains("Subject: Acme fax gateway: mail to +15557654321@fax.example.com refused"),
        "{eml}"
    );
    // The line break of the stored subject never becomes a header of its own.
    assert!(!eml.contains("\r\nBcc:"), "{eml}");
    assert!(
        eml.contains("Acme could not fax your mail.\r\nReason: invalid number"),
        "{eml}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_template_replaces_the_built_in_one_embedded() {
    let (store, _dir) = api_common::embedded().await;
    account_template_overrides(Arc::clone(&store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_template_replaces_the_built_in_one_couchdb() {
    let (store, _dir) = api_common::couch().await;
    account_template_overrides(store).await;
}

/// The progress webhooks of an outbound fax (`queued`, `sending`, `page`): a job of a faxbox
/// without an outbound callback records none; one of a faxbox with a callback records each
/// event once as a `fax_event` document of the fax's MODB (a repeat is no second event),
/// found by the `notify/pending` index and resolved to the webhook only — never a mail, even
/// with the faxbox's e-mail lists set. Fax listings never show them.
async fn progress_events(store: SharedStore) {
    use faxd::notify::progress::{self, Progress};
    let dir = tempfile::tempdir().expect("tempdir");
    let account = AccountId::generate();
    let adb = Db::Account(account.clone());
    store.ensure_db(&adb).await.expect("account db");
    let emails = json!({"send_to": ["ann@example.com"]});
    for (id, callback) in [
        ("box-plain", Value::Null),
        // A closed port: every try fails, and is retried later.
        (
            "box-hooked",
            json!({"url": "http://127.0.0.1:1/fax-events", "secret": "s"}),
        ),
    ] {
        let mut outbound = json!({"email": emails});
        if !callback.is_null() {
            outbound["callback"] = callback;
        }
        store
            .save(
                &adb,
                json!({"_id": id, "pvt_type": "faxbox",
                       "notifications": {"outbound": outbound, "email": emails}}),
            )
            .await
            .expect("faxbox");
    }
    let job = |faxbox: &str| {
        json!({"_id": new_id(), "pvt_type": "fax", "pvt_account_id": account.as_str(),
               "pvt_created": faxd::time::now_gregorian(), "faxbox_id": faxbox,
               "to_number": "+15557654321", "from_number": "+15551230000"})
    };
    let bell = faxd::notify::Doorbell::default();
    let mut rung = bell.listen();
    let db = Db::Modb(account.clone(), YearMonth::now());
    let events_of = |job: &Value| {
        let store = store.clone();
        let prefix = modb_doc_id(YearMonth::now(), job["_id"].as_str().unwrap()) + "-";
        let db = db.clone();
        async move {
            match store.docs_with_prefix(&db, &prefix).await {
                Ok(d) => d,
                Err(faxd::store::StoreError::NoDatabase(_)) => Vec::new(),
                Err(e) => panic!("{e}"),
            }
        }
    };

    let plain = job("box-plain");
    progress::announce(&store, &bell, &plain, Progress::Queued).await;
    assert!(events_of(&plain).await.is_empty());
    assert!(rung.try_recv().is_err(), "nothing recorded, nothing rung");

    let hooked = job("box-hooked");
    let steps = [
        Progress::Queued,
        Progress::Sending { attempt: 1 },
        Progress::Page {
            attempt: 1,
            page: 1,
            total: 2,
        },
    ];
    for _ in 0..2 {
        for p in steps {
            progress::announce(&store, &bell, &hooked, p).await;
        }
    }
    // Rung once per event written; a repeated announcement writes nothing and rings nothing.
    let mut rings = Vec::new();
    while let Ok(d) = rung.try_recv() {
        rings.push(d);
    }
    assert_eq!(rings, vec![db.clone(); 3]);
    let docs = events_of(&hooked).await;
    assert_eq!(docs.len(), 3, "{docs:?}");
    for d in &docs {
        assert_eq!(d["pvt_type"], "fax_event", "{d}");
        assert_eq!(d["fax_id"], hooked["_id"], "{d}");
        assert_eq!(d["pvt_notify"]["state"], "pending", "{d}");
    }
    let mut due = store.notify_due(&db, now(), 10).await.unwrap();
    due.sort();
    let mut ids: Vec<String> = docs
        .iter()
        .map(|d| d["_id"].as_str().unwrap().into())
        .collect();
    ids.sort();
    assert_eq!(due, ids);
    // Fax listings never show them.
    let listed = store
        .modb_list(
            &account,
            &faxd::store::ModbFilter::Folder(faxd::model::Folder::Outbox),
            faxd::store::CreatedRange::all(),
            faxd::store::Page::first(50),
        )
        .await
        .expect("outbox");
    assert!(listed.rows.is_empty(), "{:?}", listed.rows.len());

    let cfg = NotifySection {
        maildir: dir.path().join("mail").display().to_string(),
        webhook_allow_private: true,
        ..NotifySection::default()
    };
    let notifier = Notifier::new(store.clone(), cfg, dir.path()).expect("notifier");
    notifier.run_db(&db).await.expect("run");
    let modb_id = modb_doc_id(YearMonth::now(), hooked["_id"].as_str().unwrap());
    let log = progress::delivery_log(&store, &db, &modb_id)
        .await
        .expect("log");
    let events: Vec<&str> = log.iter().map(|w| w["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["queued", "sending", "page"], "{log:?}");
    for w in &log {
        assert_eq!(w["channel"], "webhook", "{w}");
        assert_eq!(w["state"], "pending", "{w}");
        assert_eq!(w["attempts"], 1, "{w}");
        assert!(w["last_error"].as_str().is_some(), "{w}");
    }
    assert_eq!(log[2]["page"], 1);
    assert_eq!(log[2]["total_pages"], 2);
    // Only the webhook: no mail to the faxbox's lists.
    for d in events_of(&hooked).await {
        let deliveries = d["pvt_notify"]["deliveries"].as_array().unwrap().clone();
        assert_eq!(deliveries.len(), 1, "{d}");
    }
    assert!(!dir.path().join("mail").exists() || mails(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_webhooks_are_recorded_once_for_hooked_faxboxes_embedded() {
    let (store, _dir) = api_common::embedded().await;
    progress_events(Arc::clone(&store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_webhooks_are_recorded_once_for_hooked_faxboxes_couchdb() {
    let (store, _dir) = api_common::couch().await;
    progress_events(store).await;
}

/// An account's templates through the API (`/notifications`, Kazoo's teletype ids): listed,
/// shown as they will be sent, set part by part with every mistake refused (unknown
/// `{{name}}`, a subject with a line break, a non-string) and nothing stored then, served
/// as one part by `Accept`, used by the next mail, and deleted back to the built-in one.
async fn templates_through_the_api(store: SharedStore, dir: Option<tempfile::TempDir>) {
    use api_common::{Api, test_options};
    use faxd::notify::Event;
    use faxd::notify::template::builtin;
    use reqwest::StatusCode;

    let api = Api::start(store.clone(), dir, test_options()).await;
    let root = api.root_tenant().await;
    let t = api.child_tenant(&root).await;
    let base = format!("/v2/accounts/{}/notifications", t.id);
    let one = format!("{base}/fax_outbound_smtp_error_to_email");

    let l = api.get(&base, &t.token).await;
    assert_eq!(l.status, StatusCode::OK, "{}", l.body);
    let ids: Vec<&str> = l
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 5, "{ids:?}");
    assert!(ids.contains(&"fax_inbound_to_email"), "{ids:?}");
    assert!(
        l.data()
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["custom"] == json!([]))
    );

    let built_in = builtin(Event::SmtpError).expect("mailed");
    let g = api.get(&one, &t.token).await;
    assert_eq!(g.status, StatusCode::OK, "{}", g.body);
    assert_eq!(g.data()["subject"], built_in.subject);
    assert_eq!(g.data()["event"], "smtp_error");
    // faxd's own event name names the same template.
    assert_eq!(
        api.get(&format!("{base}/smtp_error"), &t.token)
            .await
            .data(),
        g.data()
    );
    let none = api
        .get(&format!("{base}/voicemail_to_email"), &t.token)
        .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND, "{}", none.body);

    // Mistakes, all reported at once; nothing is stored.
    let bad = api
        .put(
            &one,
            &t.token,
            json!({"subject": "Refused: {{To}}", "text": 5, "footer": "x"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert_eq!(
        bad.data()["subject"]["unknown_macros"]["cause"],
        json!(["To"]),
        "{}",
        bad.body
    );
    assert!(bad.data()["text"]["type"].is_object(), "{}", bad.body);
    assert!(bad.data()["footer"].is_object(), "{}", bad.body);
    let bad = api
        .put(
            &one,
            &t.token,
            json!({"subject": "Refused\r\nBcc: x@evil.example"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert!(bad.data()["subject"]["pattern"].is_object(), "{}", bad.body);
    assert_eq!(api.get(&one, &t.token).await.data()["custom"], json!([]));

    // A subject, then (PATCH) the text: each part the account sets, the others built in.
    let s = api
        .put(
            &one,
            &t.token,
            json!({"subject": "Acme: mail to {{to}} refused"}),
        )
        .await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.body);
    assert_eq!(s.data()["custom"], json!(["subject"]));
    assert_eq!(s.data()["text"], built_in.text);
    let p = api
        .patch(
            &one,
            &t.token,
            json!({"text": "Acme could not fax it: {{error}}\n"}),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(p.data()["custom"], json!(["subject", "text"]));
    assert_eq!(p.data()["subject"], "Acme: mail to {{to}} refused");

    // One part by Accept, as Kazoo serves it.
    let r = api
        .http
        .get(format!("{}{one}", api.base))
        .header("X-Auth-Token", &t.token)
        .header("Accept", "text/plain")
        .send()
        .await
        .expect("get text");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(
        r.text().await.unwrap(),
        "Acme could not fax it: {{error}}\n"
    );

    // The next mail of the account uses them.
    let tmp = tempfile::tempdir().expect("tempdir");
    let account = AccountId::parse(&t.id).expect("account id");
    let db = Db::Modb(account, YearMonth::now());
    store.ensure_db(&db).await.expect("modb");
    let mut log = smtp_log(&db, json!(["invalid number"]));
    assert!(faxd::notify::record_smtp_error(&mut log, true, now()));
    store.save(&db, log).await.expect("log");
    maildir_notifier(&store, tmp.path())
        .run_db(&db)
        .await
        .expect("run");
    let got = mails(tmp.path());
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].contains("Subject: Acme: mail to +15557654321@fax.example.com refused"),
        "{}",
        got[0]
    );
    assert!(
        got[0].contains("Acme could not fax it: invalid number"),
        "{}",
        got[0]
    );

    // PATCH with `null` takes one part back to the built-in one.
    let n = api.patch(&one, &t.token, json!({"text": null})).await;
    assert_eq!(n.status, StatusCode::OK, "{}", n.body);
    assert_eq!(n.data()["custom"], json!(["subject"]));
    assert_eq!(n.data()["text"], built_in.text);

    // Deleted: built in again (and deleting again is no error).
    let d = api.delete(&one, &t.token).await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.body);
    assert_eq!(d.data()["subject"], built_in.subject);
    assert_eq!(api.get(&one, &t.token).await.data()["custom"], json!([]));
    assert_eq!(api.delete(&one, &t.token).await.status, StatusCode::OK);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_templates_through_the_api_embedded() {
    let (store, dir) = api_common::embedded().await;
    templates_through_the_api(store, dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_templates_through_the_api_couchdb() {
    let (store, dir) = api_common::couch().await;
    templates_through_the_api(store, dir).await;
}
