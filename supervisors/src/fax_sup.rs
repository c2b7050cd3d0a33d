//! fax_sup: the top of a faxd node's supervision tree (Kazoo's `fax_sup`): one-for-one, at
//! most 5 restarts in 25 s, children started in this order and stopped in reverse:
//! cluster → file_proxy → sysconf → api_server → notify → fax_requests_sup → fax_inbound →
//! fax_jobs_sup → fax_worker_sup → fax_monitor → fax_status → fax_smtp (when `[smtp] listen`
//! is set) → fax_maintenance. Later parts
//! of faxd add their children here, in the order of DESIGN.md §1. The outbound children run
//! when a media engine is available; the inbound ones (fax_requests_sup, fax_inbound) when
//! the engine delivers inbound calls (loopback).
//!
//! Children whose start reads the store (sysconf, fax_monitor, every fax_jobs) restart with
//! [`STORE_BACKOFF`]: while the store is away they are retried at growing intervals instead
//! of spending the restart intensity, so a store outage never stops the node.

use std::sync::Arc;
use std::time::Duration;

use faxd::config::MediaEngine;
use faxd::context::NodeContext;
use faxd::gateway::Gateway;
use faxd::gateway::freeswitch::FreeswitchGateway;
use faxd::gateway::loopback::LoopbackGateway;
use faxd::gateway::script::ScriptGateway;
use faxd::inbound::directory::CallflowNumbers;
use faxd::outbound::ConvertedDocuments;
use faxd_actors::api_server::ApiServer;
use faxd_actors::cluster;
use faxd_actors::fax_inbound::InboundCalls;
use faxd_actors::fax_maintenance::{FaxMaintenance, TreeReporter};
use faxd_actors::fax_smtp::{self, FaxSmtp};
use faxd_actors::file_proxy::FileProxy;
use faxd_actors::notify::Notify;
use faxd_actors::sysconf::Sysconf;
use ractor::{Actor, ActorRef, SpawnErr};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

use crate::supervisor::{
    Backoff, ChildReport, ChildSpec, Intensity, Restart, Supervisor, SupervisorArgs, SupervisorMsg,
    SupervisorReport, report, spawn_child,
};
use crate::{inbound, outbound};

/// Registered name of the top supervisor.
pub const FAX_SUP: &str = "fax_sup";

/// Inbound calls that may wait for their fax_request (the engine's sink blocks beyond).
const INBOUND_QUEUE: usize = 64;

/// fax_sup's restart intensity.
pub const INTENSITY: Intensity = Intensity::new(5, Duration::from_secs(25));

/// Restart delays of children whose start needs the store: 250 ms doubling up to 30 s,
/// reset after a minute of running.
pub const STORE_BACKOFF: Backoff = Backoff::new(
    Duration::from_millis(250),
    Duration::from_secs(30),
    Duration::from_secs(60),
);

/// The child specs of fax_sup, in start order.
pub fn children(ctx: NodeContext) -> Vec<ChildSpec> {
    let c1 = ctx.clone();
    let c2 = ctx.clone();
    let c3 = ctx.clone();
    let c4 = ctx.clone();
    let c5 = ctx.clone();
    let c6 = ctx.clone();
    let mut out = vec![
        ChildSpec::new("cluster", Restart::Permanent, move |sup| {
            cluster::spawn_node(c1.clone(), sup)
        }),
        ChildSpec::new("file_proxy", Restart::Permanent, move |sup| {
            spawn_child(Some("file_proxy".into()), FileProxy, c5.clone(), sup)
        })
        .with_shutdown(Duration::from_secs(10)),
        ChildSpec::new("sysconf", Restart::Permanent, move |sup| {
            spawn_child(Some("sysconf".into()), Sysconf, c2.clone(), sup)
        })
        .with_backoff(STORE_BACKOFF),
        ChildSpec::new("api_server", Restart::Permanent, move |sup| {
            spawn_child(Some("api_server".into()), ApiServer, c3.clone(), sup)
        })
        .with_shutdown(Duration::from_secs(15)),
        ChildSpec::new("notify", Restart::Permanent, move |sup| {
            spawn_child(Some("notify".into()), Notify, c6.clone(), sup)
        })
        .with_backoff(STORE_BACKOFF),
    ];
    let (gw, inbound_calls, engine) = gateway(&ctx);
    out.extend(engine);
    if let Some(calls) = inbound_calls {
        out.extend(inbound::children(ctx.clone(), calls));
    }
    match gw {
        Some(gw) => {
            let docs = Arc::new(ConvertedDocuments {
                store: ctx.store.clone(),
                converter: ctx.converter.clone(),
                sysconf: ctx.sysconf.clone(),
            });
            let shared = ctx.config.store.backend == faxd::store::Backend::Couchdb;
            let settings = outbound::settings(&ctx.config.outbound, shared);
            out.extend(outbound::children(ctx.clone(), gw, docs, settings));
        }
        None => tracing::warn!(
            engine = ctx.config.media.engine.as_str(),
            "no outbound media engine in this build yet: outbound faxes are not sent"
        ),
    }
    if !ctx.config.smtp.listen.is_empty() {
        let c6 = ctx.clone();
        out.push(
            ChildSpec::new("fax_smtp", Restart::Permanent, move |sup| {
                spawn_child(Some("fax_smtp".into()), FaxSmtp, c6.clone(), sup)
            })
            .with_shutdown(fax_smtp::GRACE + Duration::from_secs(2)),
        );
    }
    out.push(ChildSpec::new(
        "fax_maintenance",
        Restart::Permanent,
        move |sup| {
            let ctx = c4.clone();
            async move {
                let reporter: Arc<dyn TreeReporter> = Arc::new(Tree(sup.clone().into()));
                // Unnamed, like every remote-capable process: a peer's fax_maintenance
                // stopping would take the name off this node's registry (see
                // `faxd_actors::fax_jobs`). `faxd sup` finds it through its process group.
                spawn_child(None, FaxMaintenance, (ctx, reporter), sup).await
            }
        },
    ));
    out
}

/// The media engine outbound faxes go through, the channel its inbound fax calls arrive on
/// (if it delivers any), and the engine's own processes (gateway_sup, FreeSWITCH only). The
/// loopback engine turns a call to a number a callflow owns into an inbound call.
fn gateway(
    ctx: &NodeContext,
) -> (
    Option<Arc<dyn Gateway>>,
    Option<InboundCalls>,
    Vec<ChildSpec>,
) {
    match ctx.config.media.engine {
        MediaEngine::Script => (
            Some(ScriptGateway::new(
                Duration::from_millis(ctx.config.media.script_page_ms),
                false,
            )),
            None,
            vec![],
        ),
        MediaEngine::Loopback => {
            let (sink, calls) = mpsc::channel(INBOUND_QUEUE);
            let directory = Arc::new(CallflowNumbers::new(ctx.store.clone()));
            match LoopbackGateway::from_config(&ctx.config, directory, Some(sink)) {
                Ok(gw) => (
                    Some(Arc::new(gw)),
                    Some(Arc::new(Mutex::new(calls))),
                    vec![],
                ),
                Err(e) => {
                    tracing::error!(error = %e, "loopback media engine unavailable");
                    (None, None, vec![])
                }
            }
        }
        MediaEngine::Freeswitch => {
            let (sink, calls) = mpsc::channel(INBOUND_QUEUE);
            let gw = Arc::new(FreeswitchGateway::new(ctx.config.freeswitch.clone()));
            ctx.media.set(gw.clone());
            let engine = crate::gateway::children(ctx, gw.clone(), sink);
            (Some(gw), Some(Arc::new(Mutex::new(calls))), engine)
        }
    }
}

/// Starts fax_sup (unlinked: it is the root; the binary watches its handle).
pub async fn start(
    ctx: NodeContext,
) -> Result<(ActorRef<SupervisorMsg>, JoinHandle<()>), SpawnErr> {
    Actor::spawn(
        Some(FAX_SUP.to_string()),
        Supervisor,
        SupervisorArgs {
            name: FAX_SUP.to_string(),
            intensity: INTENSITY,
            children: children(ctx),
        },
    )
    .await
}

/// Renders fax_sup's tree for `faxd sup faxd_maintenance status`.
struct Tree(ActorRef<SupervisorMsg>);

#[ractor::async_trait]
impl TreeReporter for Tree {
    async fn render_tree(&self) -> Result<String, String> {
        let rep = report(&self.0, Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())?;
        Ok(render(&rep))
    }
}

/// The tree as text:
/// ```text
/// fax_sup (one_for_one, 5 restarts / 25s)
/// ├── cluster          permanent  running  restarts 0
/// └── fax_maintenance  permanent  running  restarts 0
/// ```
pub fn render(rep: &SupervisorReport) -> String {
    let mut out = format!(
        "{} (one_for_one, {} restarts / {}s)\n",
        rep.name,
        INTENSITY.max_restarts,
        INTENSITY.within.as_secs()
    );
    render_children(&rep.children, "", &mut out);
    out
}

fn render_children(children: &[ChildReport], prefix: &str, out: &mut String) {
    let width = children.iter().map(|c| c.id.len()).max().unwrap_or(0);
    for (i, c) in children.iter().enumerate() {
        let last = i + 1 == children.len();
        out.push_str(&format!(
            "{prefix}{} {:<width$}  {:<9}  {:<7}  restarts {}\n",
            if last { "└──" } else { "├──" },
            c.id,
            c.restart,
            if c.running { "running" } else { "stopped" },
            c.restarts,
        ));
        let deeper = format!("{prefix}{}", if last { "    " } else { "│   " });
        render_children(&c.children, &deeper, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_nested_tree() {
        let rep = SupervisorReport {
            name: "fax_sup".into(),
            children: vec![
                ChildReport {
                    id: "cluster".into(),
                    restart: "permanent".into(),
                    restarts: 0,
                    running: true,
                    children: vec![],
                },
                ChildReport {
                    id: "fax_jobs_sup".into(),
                    restart: "permanent".into(),
                    restarts: 2,
                    running: true,
                    children: vec![ChildReport {
                        id: "fax_outbound_x".into(),
                        restart: "transient".into(),
                        restarts: 1,
                        running: false,
                        children: vec![],
                    }],
                },
            ],
        };
        let text = render(&rep);
        assert_eq!(
            text,
            "fax_sup (one_for_one, 5 restarts / 25s)\n\
             ├── cluster       permanent  running  restarts 0\n\
             └── fax_jobs_sup  permanent  running  restarts 2\n    \
             └── fax_outbound_x  transient  stopped  restarts 1\n"
        );
    }
}
