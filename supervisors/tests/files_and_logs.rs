//! Files and logs of the real `faxd` binary: the data directory is the owner's only (0700,
//! also when it existed wider), the SQLite file and its -wal/-shm are 0600, a fax being sent
//! waits in `<data_dir>/fax_cache` as a 0600 file with a random name (never
//! `/tmp/<job_id>.tiff`); secrets never reach the log: `faxd sup … create_account … <password>`
//! is logged masked (and takes the password from standard input when it is `-`), and a failed
//! login is logged with its account, user and client address but without the credentials.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{Node, poll, poll_async};
use serde_json::{Value, json};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_store_and_cached_fax_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("var");
    // An installation that left the data directory readable by everyone.
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = data.clone();
    let node = tokio::task::spawn_blocking(move || Node::start(&path, Node::env_for(&path)))
        .await
        .unwrap();
    let api = node.url("/v2");
    let http = reqwest::Client::new();
    let (token, account) = common::sender_login(&http, &api, &data).await;

    assert_eq!(mode(&data), 0o700, "data directory");
    for f in [
        "faxd.sqlite",
        "faxd.sqlite-wal",
        "faxd.sqlite-shm",
        "admin-credentials",
    ] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }

    // A fax to a number that rings without answer: its fax-ready TIFF waits in the cache
    // while the call rings (the ring timeout is 40 s).
    let faxes = format!("{api}/accounts/{account}/faxes");
    let meta = json!({"data": {"from_number": "+15551230000", "to_number": "+15550002123",
                               "retries": 1}});
    let tiff = faxd::outbound::docs::blank_tiff(1);
    let job = common::submit_fax(&http, &faxes, &token, &meta, "image/tiff", &tiff).await;
    let job_id = job["id"].as_str().unwrap().to_string();
    let cache = data.join("fax_cache");
    let cached = poll_async("the fax file in the cache", Duration::from_secs(30), || {
        let cache = cache.clone();
        async move {
            std::fs::read_dir(&cache)
                .ok()?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "tiff"))
        }
    })
    .await;
    assert_eq!(mode(&cache), 0o700, "fax cache directory");
    assert_eq!(mode(&cached), 0o600, "{}", cached.display());
    // `<job_id>-<128 random bits>.tiff`: the job id alone does not find it.
    let stem = cached.file_stem().unwrap().to_str().unwrap().to_string();
    let random = stem
        .strip_prefix(&format!("{job_id}-"))
        .unwrap_or_else(|| panic!("{stem}"));
    assert_eq!(random.len(), 32, "{stem}");
    assert!(random.bytes().all(|b| b.is_ascii_hexdigit()), "{stem}");
    assert!(
        !Path::new(&format!("/tmp/{job_id}.tiff")).exists(),
        "the fax was cached in /tmp"
    );
    assert!(std::fs::read(&cached).unwrap().starts_with(b"II*\0"));
}

#[test]
fn secrets_never_reach_the_log_and_failed_logins_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Node::env_for(dir.path()));
    let logged = |what: &str, needle: &str| {
        poll(what, Duration::from_secs(10), || {
            let log = node.stderr.lock().unwrap().clone();
            log.contains(needle).then_some(log)
        })
    };

    // An account created with `faxd sup`: done, and the password is masked in the log.
    let password = "Sup3r-Secret-pw-7781";
    let (code, out, err) = node.sup(
        &[
            "crossbar_maintenance",
            "create_account",
            "Acme",
            "acme.example.com",
            "boss",
            password,
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let log = logged("the sup command in the log", "create_account Acme");
    let line = log
        .lines()
        .find(|l| l.contains("create_account Acme"))
        .unwrap();
    assert!(line.contains("boss ********"), "{line}");
    // A mistyped command: refused, its password neither logged nor echoed.
    let (code, _, err) = node.sup(
        &[
            "crossbar_maintenance",
            "create_account",
            "Acme2",
            "b.example.com",
            "boss",
            password,
            "x",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("unknown command") && !err.contains(password),
        "{err}"
    );
    logged("the mistyped command in the log", "create_account Acme2");
    // A secret-looking config value.
    node.sup(
        &["kapps_config", "set", "fax", "smtp_password", password],
        &[],
    );
    logged("the config command in the log", "smtp_password ********");
    // The new account's admin logs in with that password.
    let (md5, _) = faxd::auth::login_digests("boss", password);
    let login = |body: Value| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let r = reqwest::Client::new()
                .put(node.url("/v2/user_auth"))
                .json(&body)
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        })
    };
    assert_eq!(
        login(json!({"data": {"credentials": md5, "account_name": "Acme"}})),
        201
    );

    // The password as `-` comes from standard input (out of the process list).
    let piped = "Piped-pw-from-stdin-4410";
    let mut cmd = std::process::Command::new(common::FAXD);
    cmd.args([
        "sup",
        "crossbar_maintenance",
        "create_account",
        "Beta",
        "beta.example.com",
    ])
    .args(["boss", "-"])
    .env_remove("FAXD_LOG")
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    for (k, v) in &node.env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{piped}").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{:?}", out);
    let (md5_piped, _) = faxd::auth::login_digests("boss", piped);
    assert_eq!(
        login(json!({"data": {"credentials": md5_piped, "account_name": "Beta"}})),
        201
    );

    // A failed login: logged with account, user and client, never the credentials.
    let (wrong, _) = faxd::auth::login_digests("boss", "guessed-password-1");
    assert_eq!(
        login(
            json!({"data": {"credentials": wrong, "account_name": "Acme\nforged line",
                              "username": "boss"}})
        ),
        401
    );
    let log = logged("the failed login in the log", "login failed");
    let line = log.lines().find(|l| l.contains("login failed")).unwrap();
    assert!(line.contains("user_auth"), "{line}");
    assert!(
        line.contains(r#"account_name="Acme\nforged line""#),
        "{line}"
    );
    assert!(line.contains("\"boss\""), "{line}");
    assert!(
        line.contains("127.0.0.1:"),
        "client address missing: {line}"
    );
    assert!(!log.lines().any(|l| l.starts_with("forged line")), "{log}");
    let bad_key = "k".repeat(64);
    let status = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            reqwest::Client::new()
                .put(node.url("/v2/api_auth"))
                .json(&json!({"data": {"api_key": bad_key}}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    assert_ne!(status, 201);
    let log = logged("the failed api_auth in the log", "api_auth");

    // Nothing secret anywhere in what the node wrote.
    let all = format!("{log}{}", node.stdout.lock().unwrap());
    for secret in [
        password,
        piped,
        "guessed-password-1",
        &wrong,
        &md5,
        &bad_key,
    ] {
        assert!(!all.contains(secret), "{secret} in the log");
    }
}
