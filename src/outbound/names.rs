//! The one naming module of the outbound processes: every registered name is built here.

/// Supervisor child id of an account's job queue (`fax_outbound_<account_id>`); the queue
/// itself is found through [`queue_group`].
pub fn fax_jobs(account: &str) -> String {
    format!("fax_outbound_{account}")
}

/// Process group every node's fax_jobs of an account joins (`faxd_outbound_queue:<account_id>`):
/// ractor_cluster shares the groups with the linked nodes, so any node sees where an
/// account's queue runs. The account's queue lease in the store stays the arbiter; the
/// group shows the processes.
pub fn queue_group(account: &str) -> String {
    format!("{QUEUE_GROUP_PREFIX}{account}")
}

/// Prefix of [`queue_group`].
pub const QUEUE_GROUP_PREFIX: &str = "faxd_outbound_queue:";

/// The account of a [`queue_group`] name (`None`: another group).
pub fn account_of_queue_group(group: &str) -> Option<&str> {
    group
        .strip_prefix(QUEUE_GROUP_PREFIX)
        .filter(|a| !a.is_empty())
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
        assert_eq!(
            super::account_of_queue_group(&super::queue_group("ab")),
            Some("ab")
        );
        assert_eq!(super::account_of_queue_group("faxd_outbound_queue:"), None);
        assert_eq!(super::account_of_queue_group("fax_outbound_ab"), None);
        assert_eq!(super::fax_worker(true, "+1555", "j"), "fax_outbound_+1555");
        assert_eq!(super::fax_worker(false, "+1555", "j"), "fax_outbound_j");
    }
}
