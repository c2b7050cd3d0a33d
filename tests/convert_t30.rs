//! Converted documents go through the T.30 engine: a 3-page text PDF converted by faxd (fine
//! and normal resolution, G4 and G3) is sent over the loopback engine's two real spandsp
//! terminals, and the far end's received pages equal the sent ones bit for bit.

#[path = "convert_support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use faxd::config::LoopbackSection;
use faxd::convert::ccitt::FaxPage;
use faxd::convert::tiff_f::decode_fax_tiff;
use faxd::convert::{Compression, ConvertConfig, Converter, FaxOptions, PageSize, Resolution};
use faxd::gateway::loopback::LoopbackGateway;
use faxd::gateway::{FaxEvent, Gateway, NoLocalNumbers, OutboundFax, TxOptions};

async fn round_trip(resolution: Resolution, compression: Compression, t38: bool) {
    let dir = tempfile::tempdir().unwrap();
    let converter = Converter::new(ConvertConfig::default());
    let opts = FaxOptions {
        resolution,
        page_size: PageSize::Letter,
        compression,
        ..ConvertConfig::default().options()
    };
    let pdf = support::text_pdf(3, 612.0, 792.0);
    let doc = tokio::task::spawn_blocking(move || converter.to_fax(&pdf, &opts))
        .await
        .unwrap()
        .expect("convert");
    assert_eq!(doc.info.pages, 3);
    let sent_path = dir.path().join("sent.tiff");
    std::fs::write(&sent_path, &doc.tiff).unwrap();
    let sent: Vec<FaxPage> = decode_fax_tiff(&doc.tiff).unwrap();

    let gateway = LoopbackGateway::new(
        LoopbackSection::default(),
        dir.path().join("spool"),
        Arc::new(NoLocalNumbers),
        None,
    )
    .unwrap();
    let call_id = faxd::ids::new_id();
    let mut call = gateway
        .originate(OutboundFax {
            job_id: "t30-round-trip".into(),
            call_id: call_id.clone(),
            to: "+15557654321".into(),
            from_number: "+15551230000".into(),
            from_name: "faxd".into(),
            fax_identity_number: "+15551230000".into(),
            // No header line: spandsp would draw it over the top of each page.
            fax_identity_name: String::new(),
            document: sent_path,
            document_url: None,
            options: TxOptions {
                t38,
                ..TxOptions::default()
            },
        })
        .await
        .expect("originate");
    let result = tokio::time::timeout(Duration::from_secs(240), async {
        loop {
            match call.events.recv().await {
                Some(FaxEvent::Finished(r)) => break r,
                Some(_) => {}
                None => panic!("call ended without a result"),
            }
        }
    })
    .await
    .expect("call finished in time");
    assert!(result.success, "{result:?}");
    assert_eq!((result.transferred_pages, result.total_pages), (3, 3));
    assert_eq!(result.fax_result_code, 0);

    let received = std::fs::read(gateway.far_end_file(&call_id)).unwrap();
    let received = decode_fax_tiff(&received).expect("far end wrote a fax TIFF");
    assert_eq!(received.len(), sent.len());
    for (n, (s, r)) in sent.iter().zip(&received).enumerate() {
        assert_eq!((r.width, r.height), (s.width, s.height), "page {}", n + 1);
        assert!(
            (r.yres - s.yres).abs() < 2.0,
            "page {}: resolution {} vs {}",
            n + 1,
            r.yres,
            s.yres
        );
        assert!(s.data.iter().any(|b| *b != 0), "page {} is blank", n + 1);
        assert!(r.data == s.data, "page {} differs after T.30", n + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fine_g4_pdf_survives_t30_over_audio() {
    round_trip(Resolution::Fine, Compression::G4, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_g3_pdf_survives_t30_over_t38() {
    round_trip(Resolution::Normal, Compression::G3_2d, true).await;
}
