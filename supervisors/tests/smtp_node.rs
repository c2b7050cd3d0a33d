//! E-mail to fax on the real `faxd` binary, on both stores: fax_smtp runs under fax_sup
//! (`[smtp] listen`), a faxbox is made through the API, swaks mails it a message with two PDFs
//! to one number, and the fax goes all the way through the loopback engine: `completed` in the
//! outbox with both pages sent; the message shows in `GET …/faxes/smtplog`, and a refused
//! one too, with its reason.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Couch, Node, SENDER, free_port};
use serde_json::{Value, json};

fn corpus(name: &str) -> String {
    format!(
        "{}/../tests/fixtures/email/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> Value {
    http.get(url)
        .header("X-Auth-Token", token)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON")
}

async fn mail_to_fax_end_to_end(env: Vec<(String, String)>, dir: &std::path::Path) {
    let path = dir.to_path_buf();
    let smtp = format!("127.0.0.1:{}", free_port());
    let mut env = env;
    env.push(("FAXD_SMTP_LISTEN".into(), smtp.clone()));
    let node = tokio::task::spawn_blocking(move || Node::start(&path, env))
        .await
        .expect("start");
    let api = node.url("/v2");
    let http = reqwest::Client::new();
    let (token, account) = common::sender_login(&http, &api, dir).await;
    let fb: Value = http
        .put(format!("{api}/accounts/{account}/faxboxes"))
        .header("X-Auth-Token", &token)
        .json(&json!({"data": {"name": "mail", "caller_id": SENDER,
                               "smtp_permission_list": ["alice@example.com"]}}))
        .send()
        .await
        .expect("faxbox")
        .json()
        .await
        .expect("JSON");
    let domain = fb["data"]["smtp_email_address"]
        .as_str()
        .unwrap_or_else(|| panic!("{fb}"))
        .to_string();
    // swaks reads a leading '+' as an option: the number as digits (normalised to E.164).
    let to = format!("15557654000@{domain}");

    // The corpus message with two one-page PDFs, replayed as it is.
    let out = tokio::task::spawn_blocking({
        let smtp = smtp.clone();
        let to = to.clone();
        move || {
            Command::new("swaks")
                .args([
                    "--server",
                    &smtp,
                    "--from",
                    "alice@example.com",
                    &format!("--to={to}"),
                ])
                .args(["--data", &format!("@{}", corpus("two_pdfs_order.eml"))])
                .args(["--timeout", "120"])
                .output()
                .expect("swaks")
        }
    })
    .await
    .expect("swaks ran");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    let id = text
        .lines()
        .find_map(|l| l.split("queued as ").nth(1))
        .unwrap_or_else(|| panic!("{text}"))
        .trim()
        .to_string();

    // Sent through the loopback engine: completed in the outbox, both pages.
    let faxes = format!("{api}/accounts/{account}/faxes");
    let outbox_id = common::poll_async(
        "the mailed fax in the outbox",
        Duration::from_secs(180),
        || async {
            let list = get_json(&http, &format!("{faxes}/outbox"), &token).await;
            list["data"]
                .as_array()?
                .iter()
                .filter_map(|f| f["id"].as_str())
                .find(|x| x.ends_with(&id))
                .map(str::to_string)
        },
    )
    .await;
    let fax = get_json(&http, &format!("{faxes}/outbox/{outbox_id}"), &token).await;
    let data = &fax["data"];
    assert_eq!(data["_read_only"]["status"], "completed", "{fax}");
    assert_eq!(data["tx_result"]["transferred_pages"], 2, "{fax}");
    assert_eq!(data["to_number"], "+15557654000", "{fax}");
    assert_eq!(data["from_number"], SENDER, "{fax}");

    // A sender the faxbox does not admit.
    let refused = tokio::task::spawn_blocking(move || {
        Command::new("swaks")
            .args([
                "--server",
                &smtp,
                "--from",
                "mallory@example.com",
                &format!("--to={to}"),
            ])
            .args(["--data", &format!("@{}", corpus("gmail_pdf.eml"))])
            .output()
            .expect("swaks")
    })
    .await
    .expect("swaks ran");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stdout).contains("550 5.7.1"));

    let logs = common::poll_async("two smtp logs", Duration::from_secs(30), || async {
        let l = get_json(&http, &format!("{faxes}/smtplog"), &token).await;
        let rows = l["data"].as_array().cloned().unwrap_or_default();
        (rows.len() >= 2).then_some(rows)
    })
    .await;
    assert!(
        logs.iter()
            .any(|l| l["from"] == "alice@example.com" && l["error"].is_null()),
        "{logs:?}"
    );
    assert!(
        logs.iter().any(|l| l["from"] == "mallory@example.com"
            && l["error"]
                .as_str()
                .is_some_and(|e| e.contains("not allowed"))),
        "{logs:?}"
    );
    // The refused sender gets one error mail (the node's maildir transport), saying why.
    let mail_dir = dir.join("mail");
    let to_mallory = |f: &std::path::PathBuf| {
        std::fs::read_to_string(f).is_ok_and(|m| {
            m.lines()
                .any(|l| l.eq_ignore_ascii_case("To: mallory@example.com"))
        })
    };
    let mails = common::poll_async(
        "the error mail to the sender",
        Duration::from_secs(90),
        || {
            let mail_dir = mail_dir.clone();
            async move {
                let found: Vec<std::path::PathBuf> = std::fs::read_dir(&mail_dir)
                    .ok()?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .filter(to_mallory)
                    .collect();
                (!found.is_empty()).then_some(found)
            }
        },
    )
    .await;
    // Once the log says its notification is done, nothing more can be sent for it: still
    // exactly one mail then.
    let refused_log = logs
        .iter()
        .find(|l| l["from"] == "mallory@example.com")
        .and_then(|l| l["id"].as_str())
        .expect("the refused message's log")
        .to_string();
    common::poll_async(
        "the error mail recorded as delivered",
        Duration::from_secs(60),
        || async {
            let d = get_json(&http, &format!("{faxes}/smtplog/{refused_log}"), &token).await;
            let n = &d["data"]["_read_only"]["notifications"];
            (n["state"] == "done" && n["deliveries"][0]["state"] == "delivered").then_some(())
        },
    )
    .await;
    let again: Vec<_> = std::fs::read_dir(&mail_dir)
        .expect("maildir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .filter(to_mallory)
        .collect();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(again, mails, "a second error mail");
    let mail = std::fs::read_to_string(&mails[0]).expect("mail");
    assert!(mail.contains("Auto-Submitted: auto-generated"), "{mail}");
    tokio::task::spawn_blocking(move || assert_eq!(node.stop_with("TERM"), 0))
        .await
        .expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_to_fax_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let env = Node::env_for(dir.path());
    mail_to_fax_end_to_end(env, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_to_fax_on_couchdb() {
    let dir = tempfile::tempdir().unwrap();
    let couch = Couch::start(dir.path());
    let mut env = Node::env_for(dir.path());
    env.push(("FAXD_STORE_BACKEND".into(), "couchdb".into()));
    env.push(("FAXD_STORE_COUCH_URL".into(), couch.url.clone()));
    mail_to_fax_end_to_end(env, dir.path()).await;
    drop(couch);
}
