//! faxd-supervisors: restart types and intensity written once (`supervisor`), the supervision
//! tree (`fax_sup`), and the `faxd` binary.

pub mod supervisor;
