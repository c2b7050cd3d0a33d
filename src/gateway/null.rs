//! The `null` media engine: every call is answered and "sends" every page instantly, without
//! T.30 or a line. Only for the scheduler benchmark, where the engine must cost nothing.

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{FaxCall, FaxEvent, FaxResult, Gateway, GatewayError, HangupHandle, OutboundFax};

/// The null engine; `pages` is what every call reports as sent.
#[derive(Clone, Debug)]
pub struct NullGateway {
    pages: u32,
}

impl NullGateway {
    /// A null engine reporting `pages` pages per call (1 if 0).
    pub fn new(pages: u32) -> Self {
        Self {
            pages: pages.max(1),
        }
    }
}

impl Default for NullGateway {
    fn default() -> Self {
        Self::new(1)
    }
}

#[async_trait]
impl Gateway for NullGateway {
    fn name(&self) -> &'static str {
        "null"
    }

    async fn originate(&self, fax: OutboundFax) -> Result<FaxCall, GatewayError> {
        let n = self.pages;
        let mut events = vec![
            FaxEvent::Answered,
            FaxEvent::Negotiated {
                transfer_rate: 14_400,
                ecm: fax.options.ecm,
                remote_station_id: fax.to.clone(),
            },
        ];
        events.extend((1..=n).map(|page| FaxEvent::Page {
            page,
            total: n,
            bad_rows: 0,
        }));
        events.push(FaxEvent::Finished(FaxResult {
            success: true,
            hangup_cause: "NORMAL_CLEARING".into(),
            sip_code: 200,
            fax_result_code: 0,
            fax_result_text: "OK".into(),
            transferred_pages: n,
            total_pages: n,
            transfer_rate: 14_400,
            ecm_used: fax.options.ecm,
            t38_used: fax.options.t38,
            remote_station_id: fax.to.clone(),
            local_station_id: fax.fax_identity_number.clone(),
            image_resolution: "8040x7700".into(),
            ..FaxResult::default()
        }));
        // Everything fits in the channel at once: no task, no waiting.
        let (tx, rx) = mpsc::channel(events.len());
        for e in events {
            let _ = tx.try_send(e);
        }
        let (hangup, _) = mpsc::unbounded_channel();
        Ok(FaxCall {
            call_id: fax.call_id,
            events: rx,
            hangup: HangupHandle(hangup),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::TxOptions;

    #[tokio::test]
    async fn succeeds_at_once() {
        let g = NullGateway::new(3);
        let mut call = g
            .originate(OutboundFax {
                job_id: "j".into(),
                call_id: "c".into(),
                to: "+15550100".into(),
                from_number: String::new(),
                from_name: String::new(),
                fax_identity_number: "+15550199".into(),
                fax_identity_name: String::new(),
                document: "/nonexistent".into(),
                document_url: None,
                options: TxOptions::default(),
            })
            .await
            .unwrap();
        let mut last = None;
        let mut pages = 0;
        while let Some(e) = call.events.recv().await {
            if matches!(e, FaxEvent::Page { .. }) {
                pages += 1;
            }
            last = Some(e);
        }
        assert_eq!(pages, 3);
        match last {
            Some(FaxEvent::Finished(r)) => {
                assert!(r.success);
                assert_eq!(r.transferred_pages, 3);
            }
            other => panic!("{other:?}"),
        }
    }
}
