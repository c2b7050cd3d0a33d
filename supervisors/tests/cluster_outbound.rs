//! Two real `faxd` nodes on one CouchDB-API server, connected over the cluster port, with the
//! scripted media engine: exactly one of them holds the outbound leader lease, and exactly
//! one runs the queue of the account (its queue lease), so 30 faxes of one account submitted
//! through both nodes' APIs never have more than `max_outbound` (3) in flight (checked from
//! `tx_result` start and finish times in the outbox); the other node's API shows the live
//! stage and page of a fax the owner is sending; and after the owner is killed with SIGKILL
//! mid-transmission, the other node takes the account over, requeues the dead attempt and
//! completes the fax — nothing left processing or queued.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::admin::stop_node;
use common::cluster::{node_env, signal};
use common::jobs::max_overlap;
use common::*;
use faxd::ids::Db;
use faxd::outbound::docs::blank_tiff;
use faxd::store::SharedStore;
use faxd::store::couch::CouchStore;
use serde_json::{Value, json};

const NODE_A: &str = "faxd-a@127.0.0.1";
const NODE_B: &str = "faxd-b@127.0.0.1";

/// Line time per page of the scripted engine.
const PAGE_MS: u64 = 500;
/// Leader and queue lease (seconds): short, so that a takeover happens within seconds.
const LEADER_LEASE_S: u64 = 3;

async fn start(dir: &Path, env: Vec<(String, String)>) -> Node {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || Node::start(&dir, env))
        .await
        .unwrap()
}

/// `faxd sup faxd_maintenance status` of a node: its `outbound:` line.
fn outbound_line(node: &Node) -> String {
    let (code, out, err) =
        tokio::task::block_in_place(|| node.sup(&["faxd_maintenance", "status"], &[]));
    assert_eq!(code, 0, "{out}{err}");
    out.lines()
        .find(|l| l.starts_with("outbound:"))
        .unwrap_or_else(|| panic!("no outbound line in:\n{out}"))
        .to_string()
}

struct Api {
    http: reqwest::Client,
    token: String,
}

impl Api {
    async fn get(&self, url: &str) -> Value {
        self.http
            .get(url)
            .header("X-Auth-Token", &self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Submits a fax TIFF of `pages` pages by multipart; returns the job id.
    async fn submit(
        &self,
        faxes: &str,
        to: &str,
        pages: u32,
        retries: u32,
        send_at: Option<i64>,
    ) -> String {
        let mut meta =
            json!({"data": {"from_number": "+15551230000", "to_number": to, "retries": retries}});
        if let Some(at) = send_at {
            meta["data"]["send_at"] = json!(at);
        }
        let data = common::submit_fax(
            &self.http,
            faxes,
            &self.token,
            &meta,
            "image/tiff",
            &blank_tiff(pages),
        )
        .await;
        assert_ne!(data["status"], "failed", "{data}");
        data["id"].as_str().expect("job id").to_string()
    }

    /// The outbox document of job `id`, once it is there.
    async fn in_outbox(&self, faxes: &str, id: &str) -> Option<Value> {
        let list = self.get(&format!("{faxes}/outbox")).await;
        let outbox_id = list["data"]
            .as_array()?
            .iter()
            .filter_map(|f| f["id"].as_str())
            .find(|x| x.ends_with(id))?
            .to_string();
        let detail = self.get(&format!("{faxes}/outbox/{outbox_id}")).await;
        Some(detail["data"].clone())
    }
}

/// Node a (started first, so it takes the free lease) and node b on a private CouchDB, an
/// API session of the master account, and `max_outbound` set for the cluster.
struct Cluster {
    _root: tempfile::TempDir,
    couch: Couch,
    store: SharedStore,
    a: Option<Node>,
    b: Option<Node>,
    api: Api,
    faxes_a: String,
    faxes_b: String,
    account: String,
}

impl Cluster {
    async fn start(job_lease: u64, max_outbound: u32) -> Cluster {
        let root = tempfile::tempdir().unwrap();
        let (dir_a, dir_b) = (root.path().join("a"), root.path().join("b"));
        std::fs::create_dir_all(&dir_a).unwrap();
        std::fs::create_dir_all(&dir_b).unwrap();
        let couch = Couch::start(root.path());
        let store: SharedStore = Arc::new(CouchStore::connect(&couch.url).await.unwrap());
        let (page, lease) = (PAGE_MS, LEADER_LEASE_S);
        let env_a = node_env(&dir_a, NODE_A, &couch.url, &[], page, lease, job_lease);
        let a = start(&dir_a, env_a).await;
        let seed = a.cluster.clone();
        let env_b = node_env(&dir_b, NODE_B, &couch.url, &[&seed], page, lease, job_lease);
        let b = start(&dir_b, env_b).await;

        // Exactly one node holds the outbound lease, and both say which.
        let (line_a, line_b) =
            common::poll_async("one lease holder", Duration::from_secs(30), || async {
                let (la, lb) = (outbound_line(&a), outbound_line(&b));
                (la.contains("(this node)") != lb.contains("(this node)")).then_some((la, lb))
            })
            .await;
        let a_holds = format!("leader lease {NODE_A} (this node),");
        assert!(
            line_a.contains(&a_holds),
            "the first node takes the free lease: {line_a}"
        );
        assert!(
            line_b.contains(&format!("leader lease {NODE_A},")),
            "{line_b}"
        );

        // max_outbound for the cluster (system default, read by the leader's queues).
        let max = max_outbound.to_string();
        let (code, out, err) = tokio::task::block_in_place(|| {
            a.sup(&["kapps_config", "set", "fax", "max_outbound", &max], &[])
        });
        assert_eq!(code, 0, "{out}{err}");

        // A fresh connection per request: a kept-alive one may be closed by the node just as
        // the next request goes out on it (the uploads are not safe to retry).
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let (token, account) = sender_login(&http, &a.url("/v2"), &dir_a).await;
        Cluster {
            account: account.to_string(),
            faxes_a: a.url(&format!("/v2/accounts/{account}/faxes")),
            faxes_b: b.url(&format!("/v2/accounts/{account}/faxes")),
            api: Api { http, token },
            _root: root,
            couch,
            store,
            a: Some(a),
            b: Some(b),
        }
    }

    /// Submits `n` faxes of `pages` pages, alternately through each node, to be sent
    /// tomorrow; then an operator makes them all due now (in the store, as `send_at` cannot
    /// be changed through the API), so they queue up behind the limit at once.
    async fn submit_due_together(&self, n: usize, pages: u32) -> Vec<String> {
        let tomorrow = faxd::time::now_unix() + 86_400;
        let mut ids = Vec::new();
        for i in 0..n {
            let faxes = if i % 2 == 0 {
                &self.faxes_a
            } else {
                &self.faxes_b
            };
            let to = format!("+1555777{i:04}");
            ids.push(self.api.submit(faxes, &to, pages, 1, Some(tomorrow)).await);
        }
        for id in &ids {
            loop {
                // Converted in the background after the answer.
                let mut doc = common::poll_async(
                    &format!("the intake of {id}"),
                    Duration::from_secs(60),
                    || async {
                        let doc = self.store.get(&Db::Faxes, id).await.unwrap();
                        let doc = doc.expect("queued job");
                        (doc["pvt_job_status"] != "attaching_files").then_some(doc)
                    },
                )
                .await;
                assert_eq!(doc["pvt_job_status"], "pending", "{doc}");
                doc["send_at"] = json!(faxd::time::now_unix());
                match self.store.save(&Db::Faxes, doc).await {
                    Ok(_) => break,
                    Err(faxd::store::StoreError::Conflict) => continue,
                    Err(e) => panic!("save: {e}"),
                }
            }
        }
        ids
    }

    /// Waits until every job is completed in the outbox; their `[started, finished)` times.
    async fn completed(&self, ids: &[String]) -> Vec<(i64, i64)> {
        let mut intervals = Vec::new();
        for id in ids {
            let fax =
                common::poll_async("every fax in the outbox", Duration::from_secs(120), || {
                    self.api.in_outbox(&self.faxes_b, id)
                })
                .await;
            assert_eq!(fax["_read_only"]["status"], "completed", "{fax}");
            let tx = &fax["tx_result"];
            assert_eq!(tx["success"], true, "{tx}");
            let (s, f) = (tx["started"].as_i64(), tx["finished"].as_i64());
            intervals.push((s.expect("started"), f.expect("finished")));
        }
        intervals
    }

    /// The node holding the queue lease of the test's account, once one does.
    async fn owner(&self) -> String {
        let doc = faxd::outbound::leader::owner_doc(&self.account);
        common::poll_async(
            "an owner of the account's queue",
            Duration::from_secs(60),
            || async {
                let lease = faxd::outbound::leader::read_at(&self.store, &doc)
                    .await
                    .unwrap()?;
                (!lease.node.is_empty()).then_some(lease.node)
            },
        )
        .await
    }

    /// The node named `name`, and the other one (with the other's faxes URL).
    fn by_name(&self, name: &str) -> (&Node, &Node, &str) {
        let (a, b) = (self.a.as_ref().unwrap(), self.b.as_ref().unwrap());
        if name == NODE_A {
            (a, b, &self.faxes_b)
        } else {
            (b, a, &self.faxes_a)
        }
    }

    /// Nothing left processing, locked or pending.
    async fn assert_drained(&self) {
        assert!(
            self.store
                .processing_by_node(None)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(self.store.schedule_accounts().await.unwrap().is_empty());
    }

    async fn stop(mut self) {
        for node in [self.a.take(), self.b.take()].into_iter().flatten() {
            stop_node(node).await;
        }
        drop(self.couch);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_outbound_scheduler() {
    let c = Cluster::start(2, 3).await;
    let (api, faxes_b) = (&c.api, &c.faxes_b);

    // 30 faxes of one account through both nodes: never more than 3 in flight.
    let ids = c.submit_due_together(30, 2).await;
    let most = max_overlap(&c.completed(&ids).await);
    eprintln!("at most {most} of 30 transmissions at once");
    assert!(most <= 3, "{most} transmissions at once, max_outbound is 3");
    assert!(most > 1, "the queued faxes ran one at a time");

    // A long fax on the account's owner: the other node's API shows its live stage and page.
    let owner = c.owner().await;
    let (_, _, other_faxes) = c.by_name(&owner);
    let other_faxes = other_faxes.to_string();
    let survivor = if owner == NODE_A { NODE_B } else { NODE_A };
    let id = api.submit(faxes_b, "+15557770999", 8, 3, None).await;
    let url = format!("{other_faxes}/outgoing/{id}");
    let live = common::poll_async(
        "live status through the other node",
        Duration::from_secs(60),
        || async {
            let r = api.get(&url).await;
            let live = &r["data"]["live"];
            (live["stage"] == "send" && live["page"].as_u64() >= Some(1)).then(|| r["data"].clone())
        },
    )
    .await;
    assert_eq!(live["live"]["node"], owner.as_str(), "{live}");
    assert_eq!(live["live"]["total_pages"], 8, "{live}");
    assert!(
        live["status"].as_str().unwrap_or_default().contains("page"),
        "{live}"
    );

    // Kill the owner mid-transmission: the other node takes the account over and the fax
    // completes after a retry.
    let mut c = c;
    let dead = if owner == NODE_A {
        c.a.take()
    } else {
        c.b.take()
    }
    .unwrap();
    let code = tokio::task::spawn_blocking(move || dead.stop_with("KILL"))
        .await
        .unwrap();
    assert_ne!(code, 0);
    let doc = c
        .store
        .get(&Db::Faxes, &id)
        .await
        .expect("get")
        .expect("job still queued");
    assert_eq!(
        doc["pvt_job_status"], "processing",
        "killed mid-transmission"
    );
    assert_eq!(doc["pvt_job_node"], owner.as_str());
    common::poll_async(
        "the survivor to take the account's queue",
        Duration::from_secs(60),
        || async { (c.owner().await == survivor).then_some(()) },
    )
    .await;
    let faxes = if survivor == NODE_A {
        &c.faxes_a
    } else {
        &c.faxes_b
    };
    let fax = common::poll_async(
        "the fax completed by the survivor",
        Duration::from_secs(120),
        || c.api.in_outbox(faxes, &id),
    )
    .await;
    assert_eq!(fax["_read_only"]["status"], "completed", "{fax}");
    assert_eq!(
        fax["attempts"], 2,
        "the attempt cut by the kill counts: {fax}"
    );
    assert_eq!(fax["tx_result"]["transferred_pages"], 8, "{fax}");
    c.assert_drained().await;
    c.stop().await;
}

/// An account's owner that stops renewing while alive (here: paused with SIGSTOP) loses the
/// account to the other node; when it resumes it starts nothing more on its lapsed lease,
/// its transmissions in flight finish, and the new owner counts them against
/// `max_outbound` until they do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_hands_over_without_exceeding_the_limit() {
    // Jobs keep their lease through the pause: only the queue lease runs out.
    let c = Cluster::start(120, 2).await;
    let ids = c.submit_due_together(8, 4).await;
    let owner = c.owner().await;
    let (paused, _, _) = c.by_name(&owner);
    common::poll_async(
        "the owner transmitting",
        Duration::from_secs(60),
        || async {
            let rows = c.store.processing_by_node(Some(&owner)).await.unwrap();
            (rows.len() == 2).then_some(())
        },
    )
    .await;
    signal(paused, "STOP");
    common::poll_async(
        "the other node to take the account over",
        Duration::from_secs(60),
        || async { (c.owner().await != owner).then_some(()) },
    )
    .await;
    signal(paused, "CONT");
    let most = max_overlap(&c.completed(&ids).await);
    eprintln!("at most {most} of 8 transmissions at once across the handover");
    assert!(most <= 2, "{most} transmissions at once, max_outbound is 2");
    c.assert_drained().await;
    c.stop().await;
}
