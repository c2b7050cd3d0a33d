//! faxd core library: configuration, identifiers, the data model, storage and the HTTP API.
//! The long-lived processes live in `faxd-actors`; the supervision tree and the binary in
//! `faxd-supervisors`.

pub mod accounts;
pub mod api;
pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod conn_limit;
pub mod context;
pub mod convert;
pub mod fax_format;
pub mod files;
pub mod gateway;
pub mod ids;
pub mod import;
pub mod inbound;
pub mod intake;
pub mod log_throttle;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod netblock;
pub mod notify;
pub mod numbers;
pub mod outbound;
pub mod ratelimit;
pub mod schema;
pub mod smtp;
pub mod store;
pub mod time;
pub mod timezone;
pub mod tls;
