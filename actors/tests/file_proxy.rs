//! The file_proxy actor on a real socket: it serves a job's registered TIFF only while the job
//! is registered, only with the right token, once, only to allowed addresses; everything else is
//! 404.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use faxd::config::{Config, SystemConfig};
use faxd::context::NodeContext;
use faxd::gateway::file_proxy::FileRegistry;
use faxd::store::sqlite::SqliteStore;
use faxd_actors::file_proxy::{FileProxy, listen_addr};
use ractor::Actor;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, Option<String>, Vec<u8>) {
    let r = tokio::time::timeout(Duration::from_secs(20), client.get(url).send())
        .await
        .expect("answer in time")
        .expect("request");
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, ctype, r.bytes().await.expect("body").to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_registered_jobs_to_allowed_addresses_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.node.data_dir = dir.path().to_path_buf();
    config.file_proxy.port = free_port();
    config.file_proxy.allowed = vec!["127.0.0.1/32".into()];
    let store: faxd::store::SharedStore = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    faxd::bootstrap::ensure_global_dbs(&store).await.unwrap();
    let sysconf = SystemConfig::load(store.clone(), &config.node.name)
        .await
        .unwrap();
    let ctx = NodeContext::new(config, store, sysconf);
    let base = format!("http://{}", listen_addr(&ctx));
    let (actor, handle) = Actor::spawn(None, FileProxy, ctx.clone()).await.unwrap();

    let cached = dir.path().join("job1.tiff");
    std::fs::write(&cached, b"II*\0 fake tiff bytes").unwrap();
    let token = ctx.files.register("job1", cached.clone());
    let url = format!("{base}{}", FileRegistry::url_path("job1", &token));

    // The right URL from an address that is not allowed: 404, and the token is not spent.
    let stranger = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    assert_eq!(get(&stranger, &url).await.0, 404);

    let allowed = reqwest::Client::new();
    let (status, ctype, body) = get(&allowed, &url).await;
    assert_eq!(status, 200);
    assert_eq!(ctype.as_deref(), Some("image/tiff"));
    assert_eq!(body, std::fs::read(&cached).unwrap());
    // The token serves one fetch.
    assert_eq!(get(&allowed, &url).await.0, 404);

    // Wrong token, unknown job, other paths: 404.
    let wrong = format!("{base}{}", FileRegistry::url_path("job1", "0123"));
    assert_eq!(get(&allowed, &wrong).await.0, 404);
    let other = format!("{base}{}", FileRegistry::url_path("job2", &token));
    assert_eq!(get(&allowed, &other).await.0, 404);
    assert_eq!(get(&allowed, &format!("{base}/fax/job1.tiff")).await.0, 404);
    assert_eq!(
        get(&allowed, &format!("{base}/fax/job1/{token}")).await.0,
        404
    );

    // Once the worker unregisters the job (it finished), the file is no longer served, not
    // even under a token that was never used.
    let token = ctx.files.register("job1", cached.clone());
    let url = format!("{base}{}", FileRegistry::url_path("job1", &token));
    ctx.files.unregister("job1");
    assert_eq!(get(&allowed, &url).await.0, 404);

    actor.stop(None);
    tokio::time::timeout(Duration::from_secs(20), handle)
        .await
        .expect("stopped in time")
        .unwrap();
    assert!(allowed.get(&url).send().await.is_err(), "still listening");
}
