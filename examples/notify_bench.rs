//! Notification delivery latency (figures for the notes, nothing asserted): the time from
//! the final write of a sent fax (its MODB document with a 2-page fax TIFF and the pending
//! notification) to its mail delivered — the notifier resolving recipients, claiming the
//! delivery, rendering the PDF, building the mail and writing it (maildir) or sending it
//! (SMTP relay), then recording it — on the embedded store, one fax after another.
//!
//! `cargo run -p faxd --example notify_bench -- [faxes] [relay_port]`
//! (maildir in a temporary directory unless `relay_port` names an SMTP relay on 127.0.0.1,
//! e.g. `aiosmtpd -n -l 127.0.0.1:2525 -c aiosmtpd.handlers.Sink`).

use std::sync::Arc;
use std::time::Instant;

use faxd::config::notify::{MailTransport, NotifySection};
use faxd::ids::{AccountId, Db, YearMonth, modb_doc_id, new_id};
use faxd::notify::deliver::Notifier;
use faxd::store::sqlite::SqliteStore;
use faxd::store::{NewAttachment, SharedStore};
use serde_json::json;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let relay: Option<u16> = args.get(2).and_then(|a| a.parse().ok());
    let dir = tempfile::tempdir().expect("tempdir");
    let store: SharedStore = Arc::new(SqliteStore::open(dir.path()).await.expect("store"));
    let account = AccountId::generate();
    let month = YearMonth::now();
    let db = Db::Modb(account.clone(), month);
    store.ensure_db(&db).await.expect("modb");
    let mut cfg = NotifySection::default();
    if let Some(port) = relay {
        cfg.transport = MailTransport::Smtp;
        cfg.relay = "127.0.0.1".into();
        cfg.port = port;
    }
    let notifier = Notifier::new(store.clone(), cfg, dir.path()).expect("notifier");
    let tiff = faxd::outbound::docs::blank_tiff(2);
    let mut ms = Vec::with_capacity(n);
    let all = Instant::now();
    for _ in 0..n {
        let id = modb_doc_id(month, &new_id());
        let mut doc = json!({
            "_id": id, "pvt_type": "fax", "folder": "outbox", "pvt_job_status": "completed",
            "pvt_account_id": account.as_str(), "pvt_account_db": db.name(),
            "pvt_created": faxd::time::now_gregorian(), "pvt_modified": faxd::time::now_gregorian(),
            "from_number": "+15551230000", "from_name": "Bench", "to_number": "+15557654321",
            "pvt_pages": 2, "tx_result": {"success": true, "pages_sent": 2},
            "notifications": {"email": {"send_to": ["bench@example.com"]}},
        });
        let now = faxd::time::now_unix_ms() / 1000;
        faxd::notify::record(&mut doc, faxd::notify::Event::OutboundSent, now);
        let t = Instant::now();
        store
            .save_with_attachments(
                &db,
                doc,
                vec![NewAttachment {
                    name: "fax_file.tiff".into(),
                    content_type: "image/tiff".into(),
                    data: tiff.clone().into(),
                }],
            )
            .await
            .expect("final write");
        notifier.process(&db, &id).await.expect("deliver");
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let d = store.get(&db, &id).await.expect("read").expect("doc");
        assert_eq!(
            d["pvt_notify"]["deliveries"][0]["state"], "delivered",
            "{d}"
        );
    }
    let total = all.elapsed().as_secs_f64();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "notify_bench: {n} sent-fax mails via {}: final write → delivered p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms; {:.1} mails/s",
        if relay.is_some() {
            "SMTP relay"
        } else {
            "maildir"
        },
        pct(0.5),
        pct(0.95),
        pct(1.0),
        n as f64 / total
    );
}
