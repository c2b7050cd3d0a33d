//! Starting and stopping a faxd node: open the store (waiting for it while it is
//! unreachable), first-start bootstrap, live config, then fax_sup; SIGINT/SIGTERM stop the
//! tree in reverse order.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use faxd::bootstrap;
use faxd::config::runtime::SystemConfigError;
use faxd::config::{Config, SystemConfig, write_private};
use faxd::context::NodeContext;
use faxd::store::couch::CouchStore;
use faxd::store::sqlite::SqliteStore;
use faxd::store::{Backend, SharedStore, StoreError};

use crate::fax_sup;
use crate::supervisor;

/// Errors that stop a node from starting or end it.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("store: {0}")]
    Store(#[from] faxd::store::StoreError),
    #[error("config: {0}")]
    Config(#[from] faxd::config::ConfigError),
    #[error("fax config: {0}")]
    SystemConfig(#[from] faxd::config::runtime::SystemConfigError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("supervision tree failed to start: {0}")]
    Start(String),
    #[error("supervision tree stopped: {0}")]
    TreeDied(String),
}

/// Opens the configured store.
pub async fn open_store(config: &Config) -> Result<SharedStore, NodeError> {
    Ok(match config.store.backend {
        Backend::Embedded => Arc::new(SqliteStore::open(&config.node.data_dir).await?),
        Backend::Couchdb => Arc::new(CouchStore::connect(&config.store.couch_url).await?),
    })
}

/// Runs a node until SIGINT/SIGTERM (then stops it in order and returns `Ok`) or until the
/// tree gives up (returns the error).
pub async fn serve(config: Config) -> Result<(), NodeError> {
    // The data directory holds the store, the cookie, the admin credentials and cached fax
    // documents: the owner's only (0700), also when it existed before.
    faxd::files::private_dir(&config.node.data_dir).map_err(|source| NodeError::Write {
        path: config.node.data_dir.display().to_string(),
        source,
    })?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| NodeError::Start(format!("cannot watch SIGTERM: {e}")))?;
    // The store may be away when the node starts: wait for it (growing delays) rather than
    // exit; SIGINT/SIGTERM end the wait.
    let mut attempt = 0;
    let (store, sysconf) = loop {
        attempt += 1;
        match boot_store(&config).await {
            Ok(ready) => break ready,
            Err(
                NodeError::Store(StoreError::Unavailable(why))
                | NodeError::SystemConfig(SystemConfigError::Store(StoreError::Unavailable(why))),
            ) => {
                let delay = fax_sup::STORE_BACKOFF.delay(attempt);
                tracing::warn!(%why, retry_in = ?delay, "store unavailable at start; waiting for it");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                    _ = term.recv() => return Ok(()),
                }
            }
            Err(e) => return Err(e),
        }
    };
    let ctx = NodeContext::new(config, store, sysconf);
    let (sup, mut handle) = fax_sup::start(ctx.clone())
        .await
        .map_err(|e| NodeError::Start(e.to_string()))?;
    tracing::info!(node = %ctx.node(), api = %ctx.config.api.listen, "faxd started");

    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        res = &mut handle => {
            let why = match res {
                Ok(()) => "fax_sup exited".to_string(),
                Err(e) => format!("fax_sup task failed: {e}"),
            };
            return Err(NodeError::TreeDied(why));
        }
    }
    if let Err(e) = supervisor::shutdown(sup, Duration::from_secs(60)).await {
        tracing::error!(error = %e, "shutdown did not complete cleanly");
    }
    let _ = handle.await;
    tracing::info!("faxd stopped");
    Ok(())
}

/// Opens the store and prepares what the node needs from it before the tree starts: the
/// global databases, the master account on a first start, and the live fax config.
async fn boot_store(config: &Config) -> Result<(SharedStore, Arc<SystemConfig>), NodeError> {
    let store = open_store(config).await?;
    bootstrap::ensure_global_dbs(&store).await?;
    if let Some(creds) = bootstrap::ensure_master_account(&store).await? {
        let path = config.node.data_dir.join("admin-credentials");
        write_private(&path, creds.to_file().as_bytes()).map_err(|source| NodeError::Write {
            path: path.display().to_string(),
            source,
        })?;
        announce_credentials(&creds, &path);
    }
    let sysconf = SystemConfig::load(store.clone(), &config.node.name).await?;
    Ok((store, sysconf))
}

fn announce_credentials(creds: &bootstrap::AdminCredentials, path: &Path) {
    println!(
        "\n  faxd created the master account and its admin user (shown once):\n\
         \n    account   {} ({})\n    username  {}\n    password  {}\n\
         \n  Saved to {} (mode 0600).\n",
        creds.account_name,
        creds.account_id,
        creds.username,
        creds.password,
        path.display()
    );
}
