//! The read-only context every process of a node shares: its configuration, its store, its
//! live fax config and when it started.

use std::sync::Arc;
use std::time::Instant;

use crate::config::{Config, SystemConfig};
use crate::convert::Converter;
use crate::gateway::file_proxy::FileRegistry;
use crate::store::SharedStore;

/// Shared, read-only node context (cheap to clone).
#[derive(Clone)]
pub struct NodeContext {
    pub config: Arc<Config>,
    pub store: SharedStore,
    pub sysconf: Arc<SystemConfig>,
    /// Monotonic start time, for uptime.
    pub started: Instant,
    /// Wall-clock start time, ISO-8601 UTC.
    pub started_at: String,
    /// Documents the file proxy serves: a worker registers its job's TIFF while processing.
    pub files: FileRegistry,
    /// Document conversion (with its warm LibreOffice), shared by intake and workers.
    pub converter: Arc<Converter>,
    /// The media engine's node health (set by the supervision tree when it builds the
    /// engine).
    pub media: crate::gateway::MediaMonitor,
    /// Fax calls being received on this node now (`GET /faxes/incoming`).
    pub incoming: crate::inbound::live::IncomingCalls,
    /// Wakes this node's notifier when a document with a pending notification is written.
    pub notify: crate::notify::Doorbell,
    /// The node's one intake pool: fetches and conversions after the answer, bounded for
    /// every way in (API and e-mail) together.
    pub intake: crate::intake::background::IntakePool,
}

impl NodeContext {
    pub fn new(config: Config, store: SharedStore, sysconf: Arc<SystemConfig>) -> Self {
        Self {
            converter: Arc::new(Converter::new(config.convert.clone())),
            config: Arc::new(config),
            store,
            sysconf,
            started: Instant::now(),
            started_at: crate::time::iso8601_now(),
            files: FileRegistry::default(),
            media: Default::default(),
            incoming: Default::default(),
            notify: Default::default(),
            intake: Default::default(),
        }
    }

    /// The intake service of this node (e-mail to fax and the API's store, config,
    /// converter, pool and doorbell).
    pub fn intake_service(&self) -> crate::intake::submit::IntakeService {
        crate::intake::submit::IntakeService {
            store: self.store.clone(),
            sysconf: self.sysconf.clone(),
            converter: self.converter.clone(),
            fetch: crate::intake::fetch::FetchPolicy::from_config(&self.config.api),
            pool: self.intake.clone(),
            notify: self.notify.clone(),
        }
    }

    /// The node name (`faxd@host`).
    pub fn node(&self) -> &str {
        &self.config.node.name
    }
}
