//! Seeds are kept, not dialled once: a node whose seed starts after it links up as soon as
//! the seed is there, loses it when the seed stops, and links up again when it is back —
//! each visible in `faxd_maintenance status` (`members:` line) and logged as a member
//! joining and leaving.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const NODE_A: &str = "faxd-a@127.0.0.1";
const NODE_B: &str = "faxd-b@127.0.0.1";

fn env(dir: &Path, name: &str, seeds: &[&str]) -> Vec<(String, String)> {
    let mut env = Node::env_for(dir);
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    env.push(("FAXD_NODE_NAME".into(), name.into()));
    env.push(("FAXD_CLUSTER_COOKIE".into(), "faxd-seeds-test".into()));
    env.push((
        "FAXD_CLUSTER_SEEDS".into(),
        format!("[{}]", seeds.join(",")),
    ));
    env
}

/// The `members:` line of a node's `faxd_maintenance status`.
fn cluster_line(node: &Node) -> String {
    let (code, out, err) = node.sup(&["faxd_maintenance", "status"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    out.lines()
        .find(|l| l.starts_with("members:"))
        .unwrap_or_else(|| panic!("no members line in:\n{out}"))
        .to_string()
}

fn wait_for_line(node: &Node, what: &str, want: impl Fn(&str) -> bool) -> String {
    poll(what, Duration::from_secs(60), || {
        let line = cluster_line(node);
        want(&line).then_some(line)
    })
}

#[test]
fn a_seed_that_starts_later_stops_and_comes_back_is_linked_each_time() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let env_a = env(&dir_a, NODE_A, &[]);
    let seed = env_a
        .iter()
        .find(|(k, _)| k == "FAXD_CLUSTER_LISTEN")
        .map(|(_, v)| v.clone())
        .unwrap();
    // B starts first: its seed is not there yet.
    let b = Node::start(&dir_b, env(&dir_b, NODE_B, &[&seed]));
    let line = cluster_line(&b);
    assert!(line.contains("no other node linked"), "{line}");

    // A comes up: B links to it without being restarted.
    let a = Node::start(&dir_a, env_a.clone());
    wait_for_line(&b, "B linked to A", |l| l.contains(NODE_A));
    wait_for_line(&a, "A sees B", |l| l.contains(NODE_B));

    // A stops: B sees it leave.
    assert_eq!(a.stop_with("TERM"), 0);
    wait_for_line(&b, "A gone from B", |l| !l.contains(NODE_A));

    // A is back on the same address: B links again.
    let a = Node::start(&dir_a, env_a);
    let line = wait_for_line(&b, "B linked to A again", |l| l.contains(NODE_A));
    assert!(line.contains("1 linked"), "{line}");
    let log = b.stderr.lock().unwrap().clone();
    assert_eq!(log.matches("cluster member joined").count(), 2, "{log}");
    assert!(log.contains("cluster member left"), "{log}");
    assert_eq!(a.stop_with("TERM"), 0);
    assert_eq!(b.stop_with("TERM"), 0);
}
