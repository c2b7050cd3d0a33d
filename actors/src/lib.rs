//! faxd-actors: one module per long-lived process of a faxd node (ractor actors). Pure logic
//! lives in sibling modules with unit tests; the supervision tree that starts these is in
//! `faxd-supervisors`.

pub mod api_server;
pub mod cluster;
pub mod cluster_door;
pub mod fax_inbound;
pub mod fax_jobs;
pub mod fax_maintenance;
pub mod fax_monitor;
pub mod fax_request;
pub mod fax_smtp;
pub mod fax_status;
pub mod fax_worker;
pub mod file_proxy;
pub mod freeswitch;
pub mod http_server;
pub mod job_book;
pub mod job_commands;
pub mod maintenance;
pub mod notify;
pub mod outbound;
pub mod stage;
pub mod sysconf;
