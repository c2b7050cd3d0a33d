//! Crash safety of the embedded store: `faxd` is killed with SIGKILL in the middle of a burst
//! of acknowledged writes (documents with attachments); afterwards the store is consistent,
//! every acknowledged write is there, and a node starts on it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use faxd::ids::Db;
use faxd::store::Store;
use faxd::store::sqlite::SqliteStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_write_burst_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(FAXD)
        .args([
            "store",
            "bench",
            "--docs",
            "1000000",
            "--attachment-bytes",
            "20000",
            "--print-acks",
        ])
        .env("FAXD_NODE_DATA_DIR", dir.path())
        .env_remove("FAXD_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn faxd store bench");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let db_name = first
        .strip_prefix("bench db ")
        .expect("bench db line")
        .to_string();
    let mut acked = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let id = line.split_whitespace().nth(1).unwrap().to_string();
        acked.push(id);
        if acked.len() == 300 {
            break;
        }
    }
    // Still writing: kill it without warning.
    assert!(child.try_wait().unwrap().is_none(), "bench ended early");
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());
    // Acks already in the pipe were acknowledged too.
    for line in lines {
        match line {
            Ok(l) if l.starts_with("ack ") => {
                acked.push(l.split_whitespace().nth(1).unwrap().to_string())
            }
            _ => break,
        }
    }

    // `faxd store check` finds the file consistent.
    let out = Command::new(FAXD)
        .args(["store", "check"])
        .env("FAXD_NODE_DATA_DIR", dir.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("integrity:          ok"), "{report}");

    // Every acknowledged document is there with its whole attachment.
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let db = Db::parse(&db_name).unwrap();
    for id in &acked {
        let doc = store.get(&db, id).await.unwrap();
        let doc = doc.unwrap_or_else(|| panic!("acknowledged document {id} lost"));
        assert_eq!(doc["pvt_type"], "bench");
        let att = store
            .get_attachment(&db, id, "payload.bin")
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("attachment of {id} lost"));
        let body = faxd::store::read_all(att.body).await.unwrap();
        assert_eq!(body.len(), 20000);
        assert!(body.iter().all(|b| *b == 0x5a));
    }
    assert!(store.check().await.unwrap().ok());
    drop(store);

    // A node starts on the store and reports healthy.
    let node = tokio::task::spawn_blocking({
        let path = dir.path().to_path_buf();
        move || {
            let node = Node::start(&path, Node::env_for(&path));
            let (status, _, _) = http_get(&node.url("/healthz")).unwrap();
            assert_eq!(status, 200);
            node.stop_with("TERM")
        }
    });
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(120), node)
            .await
            .unwrap()
            .unwrap(),
        0
    );
}
