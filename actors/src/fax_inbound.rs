//! fax_inbound: takes the inbound fax calls the media engine hands over (its
//! [`InboundSink`](faxd::gateway::InboundSink)) and starts one fax_request per call under
//! fax_requests_sup. Spawned by fax_sup, permanent; it holds no call itself, so a restart loses
//! none: the calls wait in the engine's channel. A call whose fax_request cannot be started
//! is dropped undecided, which the engine reports to the caller as a temporary failure.

use std::sync::Arc;

use faxd::gateway::InboundCall;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tracing::warn;

/// Starts a fax_request for a call (implemented by the supervision tree).
#[ractor::async_trait]
pub trait RequestSpawner: Send + Sync + 'static {
    async fn start_request(&self, call: InboundCall) -> Result<(), String>;
}

/// The engine's inbound channel, shared across restarts of fax_inbound.
pub type InboundCalls = Arc<Mutex<mpsc::Receiver<InboundCall>>>;

/// Messages of fax_inbound (local only).
pub enum InboundMsg {
    /// A call arrived.
    Call(InboundCall),
}

impl ractor::Message for InboundMsg {}

pub struct FaxInbound;

pub struct InboundState {
    spawner: Arc<dyn RequestSpawner>,
    reader: Option<Reader>,
}

#[ractor::async_trait]
impl Actor for FaxInbound {
    type Msg = InboundMsg;
    type State = InboundState;
    type Arguments = (InboundCalls, Arc<dyn RequestSpawner>);

    async fn pre_start(
        &self,
        myself: ActorRef<InboundMsg>,
        (calls, spawner): Self::Arguments,
    ) -> Result<InboundState, ActorProcessingErr> {
        // The reader only forwards: starting children is the handler's business.
        let reader = tokio::spawn(async move {
            let mut rx = calls.lock().await;
            while let Some(call) = rx.recv().await {
                if myself.cast(InboundMsg::Call(call)).is_err() {
                    return;
                }
            }
        });
        Ok(InboundState {
            spawner,
            reader: Some(Reader(reader)),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<InboundMsg>,
        msg: InboundMsg,
        st: &mut InboundState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            InboundMsg::Call(call) => {
                let (call_id, to) = (call.call_id.clone(), call.to.clone());
                if let Err(e) = st.spawner.start_request(call).await {
                    warn!(call_id = %call_id, to_number = %to, error = %e,
                          "no fax_request for the inbound call: refused");
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<InboundMsg>,
        st: &mut InboundState,
    ) -> Result<(), ActorProcessingErr> {
        st.reader = None;
        Ok(())
    }
}

/// The channel reader, aborted when dropped (so a restarted fax_inbound can take the channel).
struct Reader(JoinHandle<()>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.abort();
    }
}
