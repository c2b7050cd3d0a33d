//! The embedded store on a full file system: `faxd` runs with its data directory on a small
//! tmpfs mounted for the test (needs root, as in CI; skipped with a loud message otherwise).
//! With the disk full, a submission is answered 507 `insufficient_storage` in Kazoo's
//! envelope and leaves nothing behind, reads keep working, and the node stays up; once space
//! is freed, faxes are sent again; afterwards `faxd store check` finds the store intact.

mod common;
mod faults;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use faults::*;
use faxd::outbound::docs::blank_tiff;
use serde_json::{Value, json};

/// A tmpfs mounted on a directory, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount")
            .success();
        assert!(ok, "mount -t tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Fills the file system of `dir` with one file, to the last byte; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let block = vec![0x5au8; 4096];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    let _ = f.sync_all();
    path
}

/// A multipart submission of a TIFF: (status, envelope).
async fn submit(http: &reqwest::Client, faxes: &str, token: &str, doc: &[u8]) -> (u16, Value) {
    let meta = json!({"data": {"from_number": "+15551230000", "to_number": "+15557654321"}});
    let r = put_fax(http, faxes, token, &meta, "image/tiff", doc).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits for job `id` to be in the outbox, completed.
async fn completed(http: &reqwest::Client, faxes: &str, token: &str, id: &str) {
    let fax = poll_async("the fax completed", Duration::from_secs(120), || {
        in_outbox(http, faxes, token, id)
    })
    .await;
    assert_eq!(fax["_read_only"]["status"], "completed", "{fax}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_507_and_corrupts_nothing() {
    if !is_root() {
        eprintln!(
            "\n\n*** SKIPPED a_full_disk_answers_507_and_corrupts_nothing: mounting a tmpfs \
             needs root (CI runs as root) ***\n\n"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _tmpfs = Tmpfs::mount(&data, "24m");
    let mut env = Node::env_for(&data);
    env.push(("FAXD_MEDIA_ENGINE".into(), "script".into()));
    let path = data.clone();
    let mut node = tokio::task::spawn_blocking(move || Node::start(&path, env))
        .await
        .unwrap();
    let pid = node.child.id();
    let http = reqwest::Client::new();
    let api = node.url("/v2");
    let (token, account) = sender_login(&http, &api, &data).await;
    let faxes = format!("{api}/accounts/{account}/faxes");

    // Sending works on the tmpfs.
    let (status, body) = submit(&http, &faxes, &token, &blank_tiff(1)).await;
    assert_eq!(status, 202, "{body}");
    let first = body["data"]["id"].as_str().expect("id").to_string();
    completed(&http, &faxes, &token, &first).await;

    // The disk fills up. A fax with a 6 MB document cannot be stored: 507, in the envelope.
    let filler = fill(&data);
    let mut big = blank_tiff(1);
    big.resize(big.len() + 6 * 1024 * 1024, 0);
    for _ in 0..3 {
        let (status, env) = submit(&http, &faxes, &token, &big).await;
        assert_eq!(status, 507, "{env}");
        assert_eq!(env["status"], "error", "{env}");
        assert_eq!(env["error"], "507", "{env}");
        assert_eq!(env["message"], "insufficient_storage", "{env}");
        assert!(
            env["data"]["cause"].as_str().is_some_and(|c| !c.is_empty()),
            "{env}"
        );
    }
    // Reads still work, the node is up, and the refused faxes left nothing queued.
    let list = get_json(&http, &format!("{faxes}/outgoing"), &token)
        .await
        .expect("outgoing");
    assert_eq!(list["status"], "success", "{list}");
    assert_eq!(list["data"].as_array().map(Vec::len), Some(0), "{list}");
    assert!(node.child.try_wait().expect("try_wait").is_none());

    // Space is freed: sending works again.
    std::fs::remove_file(&filler).expect("free space");
    let (status, body) = submit(&http, &faxes, &token, &blank_tiff(2)).await;
    assert_eq!(status, 202, "{body}");
    let second = body["data"]["id"].as_str().expect("id").to_string();
    completed(&http, &faxes, &token, &second).await;
    let outbox = get_json(&http, &format!("{faxes}/outbox"), &token)
        .await
        .expect("outbox");
    assert_eq!(
        outbox["data"].as_array().map(Vec::len),
        Some(2),
        "only the two accepted faxes: {outbox}"
    );
    assert_eq!(node.child.id(), pid);
    let code = tokio::task::spawn_blocking(move || node.stop_with("TERM"))
        .await
        .unwrap();
    assert_eq!(code, 0);

    // Nothing corrupt.
    let out = Command::new(FAXD)
        .args(["store", "check"])
        .env("FAXD_NODE_DATA_DIR", &data)
        .env_remove("FAXD_LOG")
        .output()
        .expect("faxd store check");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("integrity:          ok"), "{report}");
    assert!(report.contains("bad attachments:    0"), "{report}");
}
