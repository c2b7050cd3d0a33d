//! faxd-supervisors: restart types and intensity written once (`supervisor`), the supervision
//! tree (`fax_sup`), node start-up and shutdown (`node`), and the `faxd` binary.

pub mod bench;
pub mod fax_sup;
pub mod gateway;
pub mod inbound;
pub mod logging;
pub mod node;
pub mod outbound;
pub mod supervisor;
