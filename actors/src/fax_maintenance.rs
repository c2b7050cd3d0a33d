//! fax_maintenance: answers `faxd sup …` commands sent over the cluster (Kazoo's `sup`
//! maintenance modules). It joins the process group `faxd_maintenance`, through which
//! `faxd sup` finds it. Spawned by fax_sup, permanent, last child; it exits with the node.

use std::sync::Arc;

use faxd::context::NodeContext;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use crate::maintenance::{Command, parse, redact_url, redacted, uptime};

/// Process group the maintenance process joins.
pub const MAINTENANCE_GROUP: &str = "faxd_maintenance";

/// The answer to a command: printed by `faxd sup`, which exits 1 unless `ok`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupReply {
    pub ok: bool,
    pub output: String,
}

/// Messages of fax_maintenance (remote-capable).
#[derive(RactorClusterMessage)]
pub enum MaintenanceMsg {
    /// Run `module function args…` and reply with its output.
    #[rpc]
    Run(Vec<String>, RpcReplyPort<SupReply>),
}

/// Supplies the supervision tree for `faxd_maintenance status` (implemented by the
/// supervisors crate, which owns the tree).
#[ractor::async_trait]
pub trait TreeReporter: Send + Sync + 'static {
    /// The tree as text, one child per line with its restart type and count.
    async fn render_tree(&self) -> Result<String, String>;
}

pub struct FaxMaintenance;

pub struct FaxMaintenanceState {
    ctx: NodeContext,
    tree: Arc<dyn TreeReporter>,
}

#[ractor::async_trait]
impl Actor for FaxMaintenance {
    type Msg = MaintenanceMsg;
    type State = FaxMaintenanceState;
    type Arguments = (NodeContext, Arc<dyn TreeReporter>);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (ctx, tree): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(MAINTENANCE_GROUP.to_string(), vec![myself.get_cell()]);
        Ok(FaxMaintenanceState { ctx, tree })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MaintenanceMsg::Run(args, reply) => {
                tracing::info!(command = %redacted(&args), "sup command");
                let answer = match parse(&args) {
                    Ok(cmd) => run(state, cmd).await,
                    Err(e) => SupReply {
                        ok: false,
                        output: e,
                    },
                };
                let _ = reply.send(answer);
                Ok(())
            }
        }
    }
}

fn fail(output: impl Into<String>) -> SupReply {
    SupReply {
        ok: false,
        output: output.into(),
    }
}

fn done(output: impl Into<String>) -> SupReply {
    SupReply {
        ok: true,
        output: output.into(),
    }
}

async fn run(state: &FaxMaintenanceState, cmd: Command) -> SupReply {
    let ctx = &state.ctx;
    if let Some(answer) = crate::job_commands::run(&ctx.store, &cmd).await {
        return match answer {
            Ok(out) => done(out),
            Err(e) => fail(e),
        };
    }
    match cmd {
        Command::Status => {
            let store = match ctx.config.store.backend {
                faxd::store::Backend::Embedded => format!(
                    "embedded ({})",
                    ctx.config.node.data_dir.join("faxd.sqlite").display()
                ),
                faxd::store::Backend::Couchdb => {
                    format!("couchdb ({})", redact_url(&ctx.config.store.couch_url))
                }
            };
            let outbound = outbound_leader(ctx).await;
            let tree = match state.tree.render_tree().await {
                Ok(t) => t,
                Err(e) => format!("(supervision tree unavailable: {e})"),
            };
            let mut media = ctx.config.media.engine.as_str().to_string();
            for h in ctx.media.nodes().unwrap_or_default() {
                let since = uptime(std::time::Duration::from_millis(
                    (faxd::time::now_unix_ms() - h.since_ms).max(0) as u64,
                ));
                media.push_str(&format!(
                    "\n  {} {} for {}, calls {}, reconnects {}{}",
                    h.node,
                    if h.connected { "connected" } else { "down" },
                    since,
                    h.calls,
                    h.reconnects,
                    if h.connected || h.last_error.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", h.last_error)
                    }
                ));
            }
            let members = crate::cluster::members().await;
            let cluster = if members.is_empty() {
                "no other node linked".to_string()
            } else {
                format!("{} linked: {}", members.len(), members.join(", "))
            };
            done(format!(
                "node:     {}\nversion:  {}\nuptime:   {}\nstore:    {}\nmedia:    {}\noutbound: {}\nmembers:  {}\n\nsupervision tree:\n{}",
                ctx.node(),
                faxd::api::envelope::VERSION,
                uptime(ctx.started.elapsed()),
                store,
                media,
                outbound,
                cluster,
                tree
            ))
        }
        Command::Nodes => match nodes(ctx).await {
            Ok(out) => done(out),
            Err(e) => fail(format!("failed to read the store: {e}")),
        },
        Command::ConfigGet { category, key } if category == "fax" => {
            match ctx.sysconf.get_key(&key) {
                Ok(v) => done(v.to_string()),
                Err(e) => fail(e.to_string()),
            }
        }
        Command::ConfigSet {
            category,
            key,
            value,
        } if category == "fax" => match ctx.sysconf.set_key(&key, value).await {
            Ok(v) => done(v.to_string()),
            Err(e) => fail(e.to_string()),
        },
        Command::CreateAccount {
            name,
            realm,
            username,
            password,
        } => create_account(ctx, &name, &realm, &username, &password).await,
        Command::ConfigGet { category, .. } | Command::ConfigSet { category, .. } => fail(format!(
            "config category '{category}' is not managed by faxd (known: fax)"
        )),
        Command::PendingJobs
        | Command::ActiveJobs
        | Command::AccountJobs { .. }
        | Command::FaxboxJobs { .. }
        | Command::RestartJob { .. }
        | Command::UpdateJob { .. } => fail("job command not handled"),
    }
}

/// Who schedules outbound faxes: the holder of the cluster's outbound leader lease on a
/// shared store; this node on the embedded (single-node) store.
async fn outbound_leader(ctx: &NodeContext) -> String {
    use faxd::outbound::leader;
    match ctx.config.store.backend {
        faxd::store::Backend::Embedded => {
            format!("leader {} (embedded store: single node)", ctx.node())
        }
        faxd::store::Backend::Couchdb => match leader::read(&ctx.store).await {
            Ok(doc) => format!(
                "leader lease {}",
                leader::describe(doc.as_ref(), ctx.node(), faxd::time::now_unix_ms())
            ),
            Err(e) => format!("leader lease unreadable: {e}"),
        },
    }
}

/// `faxd_maintenance nodes`: this node and the linked members, with the accounts whose
/// outbound queue each owns (ownership documents, the arbiter; on the embedded single-node
/// store this node owns every account with queued work or a running queue), the queues each
/// runs (the process groups of fax_jobs, shared over the cluster) and the transmissions
/// each runs.
async fn nodes(ctx: &NodeContext) -> Result<String, faxd::store::StoreError> {
    use crate::maintenance::{OwnerRow, RunRow, render_nodes};
    use faxd::ids::Db;
    let store = &ctx.store;
    let me = ctx.node();
    let members = crate::cluster::members().await;
    let queued: Vec<String> = store
        .schedule_accounts()
        .await?
        .into_iter()
        .map(|(a, _)| a.as_str().to_string())
        .collect();
    let mut owners: Vec<OwnerRow> = store
        .docs_by_type(&Db::Faxes, "outbound_owner")
        .await?
        .iter()
        .filter_map(OwnerRow::from_doc)
        .collect();
    let queues = crate::fax_jobs::running_queues(me);
    if owners.is_empty() && ctx.config.store.backend == faxd::store::Backend::Embedded {
        let mut here: Vec<&String> = queued.iter().chain(queues.iter().map(|(_, a)| a)).collect();
        here.sort();
        here.dedup();
        owners = here
            .into_iter()
            .map(|a| OwnerRow {
                account_id: a.clone(),
                node: me.to_string(),
                expires_ms: i64::MAX,
            })
            .collect();
    }
    let runs: Vec<RunRow> = store
        .processing_by_node(None)
        .await?
        .into_iter()
        .map(|r| RunRow {
            node: r.node.unwrap_or_default(),
            job_id: r.id,
            to: r.to.unwrap_or_default(),
        })
        .collect();
    Ok(render_nodes(
        me,
        &members,
        &owners,
        &queues,
        &runs,
        &queued,
        faxd::time::now_unix_ms(),
    ))
}

/// `crossbar_maintenance create_account`: the API's account creation under the master account,
/// then an admin user (Kazoo's output lines).
async fn create_account(
    ctx: &NodeContext,
    name: &str,
    realm: &str,
    username: &str,
    password: &str,
) -> SupReply {
    use serde_json::{Map, Value, json};
    let store = &ctx.store;
    let master = match faxd::bootstrap::master_account(store).await {
        Ok(Some(m)) => m,
        Ok(None) => return fail("no master account: start the node once to create it"),
        Err(e) => return fail(format!("failed to read the master account: {e}")),
    };
    let parent = match store.get(&faxd::ids::Db::Accounts, master.as_str()).await {
        Ok(Some(p)) => p,
        Ok(None) => return fail(format!("master account {master} is missing")),
        Err(e) => return fail(format!("failed to read the master account: {e}")),
    };
    let mut data = Map::new();
    data.insert("name".into(), json!(name));
    data.insert("realm".into(), json!(realm));
    let account = match faxd::api::accounts::create_account(store, Some(&parent), data).await {
        Ok(a) => a,
        Err(e) => return fail(format!("failed to create '{name}': {}", e.report())),
    };
    let id = account["_id"].as_str().unwrap_or_default().to_string();
    let Ok(account_id) = faxd::ids::AccountId::parse(&id) else {
        return fail(format!("created account has a bad id '{id}'"));
    };
    let db = account["pvt_account_db"]
        .as_str()
        .unwrap_or_default()
        .replace('/', "%2F");
    let mut user = Map::new();
    for (k, v) in [
        ("first_name", "Account"),
        ("last_name", "Admin"),
        ("priv_level", "admin"),
        ("username", username),
        ("password", password),
    ] {
        user.insert(k.into(), Value::String(v.to_string()));
    }
    match faxd::api::users::create_user(store, &account_id, user).await {
        Ok(u) => done(format!(
            "created new account '{id}' in db '{db}'\ncreated new account admin user '{}'",
            u["_id"].as_str().unwrap_or_default()
        )),
        Err(e) => fail(format!(
            "created new account '{id}' in db '{db}'\nfailed to create the admin user: {}",
            e.report()
        )),
    }
}
