//! The inbound part of fax_sup (DESIGN.md §1): fax_requests_sup (dynamic, temporary children:
//! one fax_request per inbound fax call) and fax_inbound, which starts them for the calls the
//! media engine hands over, plus the [`RequestSpawner`] it uses.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use faxd::context::NodeContext;
use faxd::gateway::InboundCall;
use faxd_actors::fax_inbound::{FaxInbound, InboundCalls, RequestSpawner};
use faxd_actors::fax_request::{self, FaxRequest, RequestArgs};
use ractor::{Actor, ActorRef};

use crate::supervisor::{
    ChildSpec, Intensity, Restart, Supervisor, SupervisorArgs, SupervisorMsg, spawn_child,
    start_child,
};

/// Restart intensity of fax_requests_sup (its children are temporary: never restarted, so
/// only its own failures count).
pub const INTENSITY: Intensity = Intensity::new(100, Duration::from_secs(10));

/// How long starting a fax_request may take.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// The running fax_requests_sup (set by its start function, on every restart).
#[derive(Default)]
struct Slot(Mutex<Option<ActorRef<SupervisorMsg>>>);

/// Starts fax_request children under fax_requests_sup.
struct TreeSpawner {
    ctx: NodeContext,
    slot: Arc<Slot>,
}

#[ractor::async_trait]
impl RequestSpawner for TreeSpawner {
    async fn start_request(&self, call: InboundCall) -> Result<(), String> {
        let sup = self
            .slot
            .0
            .lock()
            .map_err(|_| "fax_requests_sup slot poisoned".to_string())?
            .clone()
            .ok_or_else(|| "fax_requests_sup is not running".to_string())?;
        let name = fax_request::name(&call.call_id);
        let args = RequestArgs {
            ctx: self.ctx.clone(),
            call: Arc::new(Mutex::new(Some(call))),
        };
        let n = name.clone();
        let spec = ChildSpec::new(name, Restart::Temporary, move |sup| {
            spawn_child(Some(n.clone()), FaxRequest, args.clone(), sup)
        });
        start_child(&sup, spec, START_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// fax_requests_sup and fax_inbound, in start order, for the engine's inbound `calls`.
pub fn children(ctx: NodeContext, calls: InboundCalls) -> Vec<ChildSpec> {
    let slot = Arc::new(Slot::default());
    let spawner: Arc<dyn RequestSpawner> = Arc::new(TreeSpawner {
        ctx,
        slot: slot.clone(),
    });
    vec![
        ChildSpec::new("fax_requests_sup", Restart::Permanent, move |parent| {
            let slot = slot.clone();
            async move {
                let (sup, _) = Actor::spawn_linked(
                    None,
                    Supervisor,
                    SupervisorArgs {
                        name: "fax_requests_sup".to_string(),
                        intensity: INTENSITY,
                        children: vec![],
                    },
                    parent,
                )
                .await?;
                if let Ok(mut s) = slot.0.lock() {
                    *s = Some(sup.clone());
                }
                Ok(sup.get_cell())
            }
        })
        .supervisor(),
        ChildSpec::new("fax_inbound", Restart::Permanent, move |sup| {
            spawn_child(None, FaxInbound, (calls.clone(), spawner.clone()), sup)
        }),
    ]
}
