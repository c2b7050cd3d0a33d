//! gateway_sup (DESIGN.md §1): the FreeSWITCH media engine's processes under one
//! one-for-one supervisor, started before the outbound and inbound children that use the
//! engine: `fs_node_<n>` for each `[freeswitch] nodes` entry (the event socket to that node)
//! and `fs_socket` (the listener for the dialplan's incoming fax calls).

use std::sync::Arc;
use std::time::Duration;

use faxd::context::NodeContext;
use faxd::gateway::InboundSink;
use faxd::gateway::freeswitch::FreeswitchGateway;
use faxd::gateway::freeswitch::socket::SocketConfig;
use faxd_actors::freeswitch::{FsNode, FsSocket, SocketArgs};
use ractor::Actor;

use crate::supervisor::{ChildSpec, Intensity, Restart, Supervisor, SupervisorArgs, spawn_child};

/// Restart intensity of gateway_sup (its children only restart after a panic: a node that
/// drops is reconnected inside fs_node).
pub const INTENSITY: Intensity = Intensity::new(10, Duration::from_secs(30));

/// Incoming fax sockets served at once by this node.
pub const MAX_INBOUND_SOCKETS: usize = 1024;

/// gateway_sup for the FreeSWITCH engine `gw`; incoming calls go to `sink`.
pub fn children(
    ctx: &NodeContext,
    gw: Arc<FreeswitchGateway>,
    sink: InboundSink,
) -> Vec<ChildSpec> {
    let cfg = ctx.config.freeswitch.clone();
    let socket = SocketArgs {
        listen: cfg.inbound_listen.clone(),
        config: SocketConfig {
            spool: cfg.spool(&ctx.config.node.data_dir),
            max_calls: MAX_INBOUND_SOCKETS,
        },
        sink,
    };
    vec![
        ChildSpec::new("gateway_sup", Restart::Permanent, move |parent| {
            let mut specs = Vec::new();
            for (i, node) in gw.nodes().iter().enumerate() {
                let node = node.clone();
                specs.push(ChildSpec::new(
                    format!("fs_node_{i}"),
                    Restart::Permanent,
                    move |sup| spawn_child(None, FsNode, node.clone(), sup),
                ));
            }
            let socket = socket.clone();
            specs.push(ChildSpec::new(
                "fs_socket",
                Restart::Permanent,
                move |sup| spawn_child(None, FsSocket, socket.clone(), sup),
            ));
            async move {
                let (sup, _) = Actor::spawn_linked(
                    None,
                    Supervisor,
                    SupervisorArgs {
                        name: "gateway_sup".to_string(),
                        intensity: INTENSITY,
                        children: specs,
                    },
                    parent,
                )
                .await?;
                Ok(sup.get_cell())
            }
        })
        .supervisor()
        .with_shutdown(Duration::from_secs(10)),
    ]
}
