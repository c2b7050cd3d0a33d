//! The one naming module of the outbound processes: every registered name is built here.

/// Registered name of an account's job queue (`fax_outbound_<account_id>`).
pub fn fax_jobs(account: &str) -> String {
    format!("fax_outbound_{account}")
}

/// Registered name of a worker: by destination number when `serialize_outbound_numbers` is
/// on (so a second transmission to that number cannot start on this node), else by job.
pub fn fax_worker(serialize: bool, to_number: &str, job_id: &str) -> String {
    if serialize {
        format!("fax_outbound_{to_number}")
    } else {
        format!("fax_outbound_{job_id}")
    }
}

/// Supervisor child id of a worker (unique per job).
pub fn worker_child(job_id: &str) -> String {
    format!("fax_worker_{job_id}")
}

/// The names under which the worker of a job may be registered (both schemes).
pub fn worker_candidates(to_number: &str, job_id: &str) -> [String; 2] {
    [
        fax_worker(false, to_number, job_id),
        fax_worker(true, to_number, job_id),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_follow_kazoo() {
        assert_eq!(super::fax_jobs("ab"), "fax_outbound_ab");
        assert_eq!(super::fax_worker(true, "+1555", "j"), "fax_outbound_+1555");
        assert_eq!(super::fax_worker(false, "+1555", "j"), "fax_outbound_j");
    }
}
