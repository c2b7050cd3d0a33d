//! The `freeswitch` media engine (DESIGN.md §3): faxes go out and come in through
//! FreeSWITCH nodes driven over the event socket (ESL).
//!
//! - Outbound: the call is placed on the connected node with the fewest calls. The node
//!   fetches the fax-ready TIFF from faxd's file proxy with `bgapi http_get {prefetch=true}`
//!   (its answer is the cached path on the node), then `bgapi originate {vars}<dial string>
//!   &txfax(<path>)`; both with a `Job-UUID` chosen up front. The call's events are read by
//!   [`call::OutboundCall`] into [`FaxEvent`]s.
//! - Inbound: the dialplan's `socket <inbound_listen> async full` hands each incoming fax
//!   call to [`socket`], which offers it to faxd as an [`InboundCall`](super::InboundCall)
//!   (still ringing: it can be refused), and on answer runs `rxfax` into the spool.
//! - Each node's connection ([`link::Node`]) and the socket listener are run by supervised
//!   actors (gateway_sup); this type only places calls through the nodes.

pub mod call;
pub mod link;
pub mod socket;
pub mod t38;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use self::call::OutboundCall;
use self::link::{LinkError, Node, NodeHealth};
use super::esl::{ApiOutcome, Originate, command};
use super::{FaxCall, Gateway, GatewayError, HangupHandle, OutboundFax};
use crate::config::FreeswitchSection;

/// Time FreeSWITCH may take to fetch the document from the file proxy.
const FETCH: Duration = Duration::from_secs(60);
/// Time to get the reply to a `bgapi` (it is queued at once).
const QUEUE: Duration = Duration::from_secs(10);
/// How long a call waits for a node to be connected.
const NODE_WAIT: Duration = Duration::from_secs(15);
/// Capacity of a call's event channel.
const EVENTS: usize = 64;

/// The FreeSWITCH media engine.
pub struct FreeswitchGateway {
    config: FreeswitchSection,
    nodes: Vec<Arc<Node>>,
    next: AtomicUsize,
}

impl FreeswitchGateway {
    /// An engine over the `[freeswitch] nodes` (not connected: each node's
    /// [`Node::run`] connects it).
    pub fn new(config: FreeswitchSection) -> Self {
        let nodes = config
            .nodes
            .iter()
            .map(|addr| Node::new(addr, &config.password))
            .collect();
        Self {
            config,
            nodes,
            next: AtomicUsize::new(0),
        }
    }

    pub fn nodes(&self) -> &[Arc<Node>] {
        &self.nodes
    }

    pub fn health(&self) -> Vec<NodeHealth> {
        self.nodes.iter().map(|n| n.health()).collect()
    }

    /// The connected node with the fewest calls (ties in turn).
    fn pick(&self) -> Option<Arc<Node>> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.nodes.len();
        (0..n)
            .map(|i| &self.nodes[(start + i) % n.max(1)])
            .filter(|node| node.connected())
            .min_by_key(|node| node.active_calls())
            .cloned()
    }

    /// A node to place a call on; while none is connected (a node reconnecting after a
    /// drop), waits up to [`NODE_WAIT`] for one rather than spend the job's attempt.
    async fn wait_for_node(&self) -> Option<Arc<Node>> {
        let deadline = tokio::time::Instant::now() + NODE_WAIT;
        loop {
            if let Some(node) = self.pick() {
                return Some(node);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The dial string of a destination.
    pub fn dial_string(&self, number: &str) -> String {
        self.config.dial_string.replace("{number}", number)
    }

    /// The originate command of a fax whose document is at `path` on the node.
    pub fn originate_command(
        &self,
        fax: &OutboundFax,
        uuid: &str,
        path: &str,
    ) -> Result<String, GatewayError> {
        let o = &fax.options;
        let mut orig = Originate::txfax(&self.dial_string(&fax.to), path)
            .var("origination_uuid", uuid)
            .var("fax_use_ecm", if o.ecm { "true" } else { "false" })
            .var("fax_enable_t38", if o.t38 { "true" } else { "false" })
            .var(
                "fax_enable_t38_request",
                if o.t38 { "true" } else { "false" },
            )
            // V.17 (14400/12000) off steps the modem down to V.29 (9600).
            .var(
                "fax_disable_v17",
                if o.max_rate < 12_000 { "true" } else { "false" },
            )
            .var("ignore_early_media", "true")
            .var(
                "originate_timeout",
                &o.ring_timeout.as_secs().max(1).to_string(),
            );
        // Empty values cannot be written (they would unset the variable): leave them out.
        for (name, value, url_decoded) in [
            ("fax_ident", &fax.fax_identity_number, true),
            ("fax_header", &fax.fax_identity_name, true),
            ("origination_caller_id_number", &fax.from_number, false),
            ("origination_caller_id_name", &fax.from_name, false),
        ] {
            let mut value = writable(value);
            // mod_spandsp URL-decodes these two before use: a `%` must arrive as `%25`.
            if url_decoded {
                value = value.replace('%', "%25");
            }
            if !value.is_empty() {
                orig = orig.var(name, &value);
            }
        }
        orig.command()
            .map_err(|e| GatewayError::Refused(format!("sip:400 {e}")))
    }

    /// Fetches the document onto `node` (`http_get`): the cached path there.
    async fn fetch(&self, node: &Node, url: &str) -> Result<String, GatewayError> {
        let cmd =
            command::http_get(url, true).map_err(|e| GatewayError::Document(e.to_string()))?;
        let event = node.bgapi(&cmd, FETCH).await.map_err(unavailable)?;
        match event.job_outcome() {
            ApiOutcome::Text(path) | ApiOutcome::Ok(path) if !path.trim().is_empty() => {
                Ok(path.trim().to_string())
            }
            ApiOutcome::Err(e) => Err(GatewayError::Unavailable(format!(
                "FreeSWITCH node {} could not fetch the document: {e}",
                node.addr()
            ))),
            _ => Err(GatewayError::Unavailable(format!(
                "FreeSWITCH node {} fetched no document",
                node.addr()
            ))),
        }
    }
}

/// A free-text value as an originate can carry it: braces (which end the variable block
/// whatever the escaping) become parentheses, `:_:` (which splits the originate) loses its
/// underscore, control characters go, outer spaces too.
fn writable(value: &str) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| match c {
            '{' => '(',
            '}' => ')',
            c => c,
        })
        .collect::<String>()
        .replace(":_:", ": :")
        .trim()
        .to_string()
}

impl super::MediaHealth for FreeswitchGateway {
    fn nodes(&self) -> Vec<NodeHealth> {
        self.health()
    }
}

fn unavailable(e: LinkError) -> GatewayError {
    GatewayError::Unavailable(e.to_string())
}

#[async_trait]
impl Gateway for FreeswitchGateway {
    fn name(&self) -> &'static str {
        "freeswitch"
    }

    fn document_base_url(&self) -> Option<String> {
        Some(self.config.file_proxy_url.trim_end_matches('/').to_string())
    }

    async fn originate(&self, fax: OutboundFax) -> Result<FaxCall, GatewayError> {
        let url = fax.document_url.clone().ok_or_else(|| {
            GatewayError::Document(
                "the FreeSWITCH engine needs the document's file proxy URL".into(),
            )
        })?;
        let node = self.wait_for_node().await.ok_or_else(|| {
            GatewayError::Unavailable(format!(
                "no FreeSWITCH node connected (of {})",
                self.config.nodes.join(", ")
            ))
        })?;
        let path = self.fetch(&node, &url).await?;
        let uuid = link::dashed(&fax.call_id);
        let command = self.originate_command(&fax, &uuid, &path)?;
        let job = link::new_uuid();
        let mut feed = node.register_call(&uuid, &job).ok_or_else(|| {
            GatewayError::Unavailable(format!("FreeSWITCH node {} is not connected", node.addr()))
        })?;
        tracing::debug!(call_id = %fax.call_id, node = %node.addr(), to_number = %fax.to, "originate");
        if let Err(e) = node.send_bgapi(&command, &job, QUEUE).await {
            node.release_call(&uuid, &job);
            return Err(match e {
                LinkError::Refused { text, .. } => GatewayError::Refused(text),
                other => unavailable(other),
            });
        }

        let (events_tx, events) = mpsc::channel(EVENTS);
        let (hangup_tx, mut hangup_rx) = mpsc::unbounded_channel::<String>();
        let call = FaxCall {
            call_id: fax.call_id.clone(),
            events,
            hangup: HangupHandle(hangup_tx),
        };
        let node2 = node.clone();
        tokio::spawn(async move {
            let mut tracker = OutboundCall::new(&uuid, &job);
            let mut hangups_open = true;
            while !tracker.finished() {
                let out = tokio::select! {
                    e = feed.recv() => match e {
                        Some(e) => tracker.on_event(&e),
                        None => tracker.on_link_lost(&format!(
                            "the event socket to FreeSWITCH node {} was lost mid call",
                            node2.addr()
                        )),
                    },
                    cause = hangup_rx.recv(), if hangups_open => {
                        match cause {
                            Some(cause) => node2.kill(&uuid, &cause),
                            None => hangups_open = false,
                        }
                        continue;
                    }
                };
                for e in out {
                    if events_tx.send(e).await.is_err() {
                        // Nobody reads the call any more: end it on the node.
                        node2.kill(&uuid, super::OWNER_GONE);
                        node2.release_call(&uuid, &job);
                        return;
                    }
                }
            }
            node2.release_call(&uuid, &job);
        });
        Ok(call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::TxOptions;

    fn fax(header: &str, from_name: &str) -> OutboundFax {
        OutboundFax {
            job_id: "j1".into(),
            call_id: "0123456789abcdef0123456789abcdef".into(),
            to: "+15550199".into(),
            from_number: "+15550100".into(),
            from_name: from_name.into(),
            fax_identity_number: "+15550100".into(),
            fax_identity_name: header.into(),
            document: "/tmp/x.tiff".into(),
            document_url: None,
            options: TxOptions::default(),
        }
    }

    #[test]
    fn the_originate_carries_the_job_as_freeswitch_reads_it() {
        let gw = FreeswitchGateway::new(FreeswitchSection::default());
        let uuid = link::dashed("0123456789abcdef0123456789abcdef");
        assert_eq!(uuid, "01234567-89ab-cdef-0123-456789abcdef");
        let cmd = gw
            .originate_command(&fax("100% {draft} a:_:b", ""), &uuid, "/cache/x.tiff")
            .expect("command");
        assert!(
            cmd.starts_with("originate {origination_uuid=01234567-89ab-cdef-0123-456789abcdef,"),
            "{cmd}"
        );
        assert!(
            cmd.ends_with("}sofia/gateway/carrier/+15550199 &txfax(/cache/x.tiff)"),
            "{cmd}"
        );
        // mod_spandsp URL-decodes the header; braces and `:_:` cannot be carried.
        assert!(cmd.contains("fax_header='100%25 (draft) a: :b'"), "{cmd}");
        assert!(cmd.contains("fax_enable_t38=false"), "{cmd}");
        assert!(cmd.contains("originate_timeout=40"), "{cmd}");
        // An empty caller name is left out rather than unsetting the variable.
        assert!(!cmd.contains("origination_caller_id_name"), "{cmd}");
    }
}
