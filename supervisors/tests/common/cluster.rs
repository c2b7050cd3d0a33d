//! Nodes of a test cluster: real `faxd` nodes on one CouchDB-API server, joined over the
//! cluster port, sending with the scripted media engine.

use std::path::Path;

use super::Node;

/// Environment of the cluster node `name` with its data in `dir`, on the CouchDB-API server
/// `couch`, joining through `seeds` (none for the first node). The scripted engine takes
/// `page_ms` a page; the outbound leader and queue leases last `leader_lease` seconds
/// (renewed every second), so a takeover happens within seconds; a processing job is
/// requeued after `job_lease` seconds without a heartbeat (sent every second).
pub fn node_env(
    dir: &Path,
    name: &str,
    couch: &str,
    seeds: &[&str],
    page_ms: u64,
    leader_lease: u64,
    job_lease: u64,
) -> Vec<(String, String)> {
    let mut env = Node::env_for(dir);
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    for (k, v) in [
        ("FAXD_NODE_NAME", name.to_string()),
        ("FAXD_STORE_BACKEND", "couchdb".into()),
        ("FAXD_STORE_COUCH_URL", couch.to_string()),
        ("FAXD_CLUSTER_COOKIE", "faxd-cluster-test".into()),
        ("FAXD_CLUSTER_SEEDS", format!("[{}]", seeds.join(","))),
        ("FAXD_MEDIA_ENGINE", "script".into()),
        ("FAXD_MEDIA_SCRIPT_PAGE_MS", page_ms.to_string()),
        ("FAXD_OUTBOUND_LEADER_RENEW", "1".into()),
        ("FAXD_OUTBOUND_LEADER_LEASE", leader_lease.to_string()),
        ("FAXD_OUTBOUND_HEARTBEAT", "1".into()),
        ("FAXD_OUTBOUND_LEASE", job_lease.to_string()),
        ("FAXD_OUTBOUND_SWEEP", "1".into()),
    ] {
        set_env(&mut env, k, v);
    }
    env
}

/// Sets `key` to `value` in a node's environment, replacing what it had.
pub fn set_env(env: &mut Vec<(String, String)>, key: &str, value: String) {
    env.retain(|(k, _)| k != key);
    env.push((key.into(), value));
}

/// Sends `signal` to a running node without waiting for it to exit.
pub fn signal(node: &Node, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &node.child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{signal}");
}
