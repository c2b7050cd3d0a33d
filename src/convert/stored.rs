//! Fax documents in the store: the fax-ready TIFF of a fax document, taken from its
//! `fax_file.tiff` attachment or converted from its `original_file.*` attachment (and then
//! kept as `fax_file.tiff` when `store_fax_tiff` is on), as Kazoo's fetch order does for the
//! faxable form (spec §2.5). Used at API intake and by the outbound worker.

use std::sync::Arc;

use serde_json::Value;

use super::{ConvertError, Converter, FaxOptions, PageSize, Resolution};
use crate::ids::Db;
use crate::model::JobStatus;
use crate::store::{SharedStore, StoreError, bytes_stream, read_all};

/// Attachment name of the fax-ready TIFF.
pub const FAX_FILE: &str = "fax_file.tiff";
/// Prefix of the attachment holding the document as submitted.
pub const ORIGINAL_PREFIX: &str = "original_file";

/// Why a fax document has no fax-ready form.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("the fax has no document ({0})")]
    Missing(String),
    #[error("the document cannot be faxed: {0}")]
    Convert(#[from] ConvertError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// A fax-ready TIFF and its page count.
#[derive(Clone, Debug)]
pub struct Faxable {
    pub tiff: Vec<u8>,
    pub pages: u32,
}

/// Conversion options of a fax document: its own `resolution` / `page_size` fields when
/// present and valid, else the converter's defaults.
pub fn options_for(doc: &Value, converter: &Converter) -> FaxOptions {
    let mut opts = converter.config().options();
    if let Some(r) = doc
        .get("resolution")
        .and_then(Value::as_str)
        .and_then(Resolution::parse)
    {
        opts.resolution = r;
    }
    if let Some(p) = doc
        .get("page_size")
        .and_then(Value::as_str)
        .and_then(PageSize::parse)
    {
        opts.page_size = p;
    }
    opts
}

/// The name of the document's `original_file.*` attachment, if any.
pub fn original_name(doc: &Value) -> Option<String> {
    doc.get("_attachments")?
        .as_object()?
        .keys()
        .find(|k| k.starts_with(ORIGINAL_PREFIX))
        .cloned()
}

/// The fax-ready TIFF of document `id` in `db`: the stored `fax_file.tiff`, else the
/// converted original (stored as `fax_file.tiff` when `keep`), converted in the queue of the
/// document's `pvt_account_id`.
pub async fn faxable(
    store: &SharedStore,
    converter: &Arc<Converter>,
    db: &Db,
    id: &str,
    keep: bool,
) -> Result<Faxable, DocumentError> {
    if let Some(att) = store.get_attachment(db, id, FAX_FILE).await? {
        let tiff = read_all(att.body).await?;
        let info = super::tiff_f::validate_fax_tiff(&tiff, None, converter.config().max_pages)?;
        return Ok(Faxable {
            pages: info.pages,
            tiff,
        });
    }
    let doc = store
        .get(db, id)
        .await?
        .ok_or_else(|| DocumentError::Missing(format!("document {id} not found")))?;
    let name = original_name(&doc)
        .ok_or_else(|| DocumentError::Missing(format!("{id} has no {ORIGINAL_PREFIX}.*")))?;
    let att = store
        .get_attachment(db, id, &name)
        .await?
        .ok_or_else(|| DocumentError::Missing(format!("{id}/{name} vanished")))?;
    let input = read_all(att.body).await?;
    let opts = options_for(&doc, converter);
    // The job's account is its fairness key for the LibreOffice workers.
    let account = doc
        .get("pvt_account_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let conv = converter.clone();
    let converted = tokio::task::spawn_blocking(move || conv.to_fax_for(&account, &input, &opts))
        .await
        .map_err(|e| ConvertError::Io(std::io::Error::other(e.to_string())))??;
    let out = Faxable {
        pages: converted.info.pages,
        tiff: converted.tiff,
    };
    if keep {
        store_fax_file(store, db, id, &out.tiff).await?;
    }
    Ok(out)
}

/// Stores `fax_file.tiff` on a document, retrying when its revision moves underneath. A
/// document that is gone (a job cancelled meanwhile) is [`StoreError::NotFound`]: nothing is
/// created. A job that ended meanwhile (cancelled while its intake converted) is left as it
/// is: it is on its way to the outbox, and a write now would race its move.
pub async fn store_fax_file(
    store: &SharedStore,
    db: &Db,
    id: &str,
    tiff: &[u8],
) -> Result<String, StoreError> {
    let mut last = StoreError::Conflict;
    for _ in 0..5 {
        let doc = store
            .get(db, id)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        let rev = doc.get("_rev").and_then(Value::as_str).map(str::to_string);
        let ended = doc
            .get("pvt_job_status")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<JobStatus>().ok())
            .is_some_and(|s| s.is_final());
        if ended {
            return Ok(rev.unwrap_or_default());
        }
        match store
            .put_attachment(
                db,
                id,
                rev.as_deref(),
                FAX_FILE,
                "image/tiff",
                bytes_stream(tiff.to_vec()),
            )
            .await
        {
            Ok(rev) => return Ok(rev),
            Err(StoreError::Conflict) => last = StoreError::Conflict,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use serde_json::json;

    fn png() -> Vec<u8> {
        let mut img = image::GrayImage::from_pixel(850, 1100, image::Luma([255u8]));
        for y in 100..300 {
            for x in 100..700 {
                img.put_pixel(x, y, image::Luma([0u8]));
            }
        }
        let mut out = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageLuma8(img)
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    #[tokio::test]
    async fn a_job_that_ended_gets_no_fax_file() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
        store.ensure_db(&Db::Faxes).await.unwrap();
        for (id, status, stored) in [("j1", "attaching_files", true), ("j2", "cancelled", false)] {
            let saved = store
                .save(&Db::Faxes, json!({"_id": id, "pvt_job_status": status}))
                .await
                .unwrap();
            let rev = store_fax_file(&store, &Db::Faxes, id, b"II*\0")
                .await
                .unwrap();
            let att = store
                .get_attachment(&Db::Faxes, id, FAX_FILE)
                .await
                .unwrap();
            assert_eq!(att.is_some(), stored, "{status}");
            // A cancelled job keeps the revision it was saved with (its move is not raced).
            assert_eq!(rev == saved["_rev"].as_str().unwrap(), !stored, "{status}");
        }
    }

    #[tokio::test]
    async fn converts_the_original_once_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
        store.ensure_db(&Db::Faxes).await.unwrap();
        let converter = Arc::new(Converter::new(super::super::ConvertConfig::default()));
        let doc = store
            .save(&Db::Faxes, json!({"pvt_type": "fax", "page_size": "a4"}))
            .await
            .unwrap();
        let id = doc["_id"].as_str().unwrap().to_string();
        assert!(matches!(
            faxable(&store, &converter, &Db::Faxes, &id, true).await,
            Err(DocumentError::Missing(_))
        ));
        store
            .put_attachment(
                &Db::Faxes,
                &id,
                doc["_rev"].as_str(),
                "original_file.png",
                "image/png",
                bytes_stream(png()),
            )
            .await
            .unwrap();
        let first = faxable(&store, &converter, &Db::Faxes, &id, true)
            .await
            .unwrap();
        assert_eq!(first.pages, 1);
        let pages = super::super::tiff_f::decode_fax_tiff(&first.tiff).unwrap();
        assert_eq!(pages[0].width, 1728);
        // A4 at fine resolution: 11.69 in × 196 lpi.
        assert!(
            (2280..=2300).contains(&pages[0].height),
            "{}",
            pages[0].height
        );
        let kept = store
            .get_attachment(&Db::Faxes, &id, FAX_FILE)
            .await
            .unwrap()
            .expect("fax_file.tiff kept");
        assert_eq!(read_all(kept.body).await.unwrap(), first.tiff);
        let again = faxable(&store, &converter, &Db::Faxes, &id, true)
            .await
            .unwrap();
        assert_eq!(again.tiff, first.tiff);
    }

    #[tokio::test]
    async fn unfaxable_originals_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
        store.ensure_db(&Db::Faxes).await.unwrap();
        let converter = Arc::new(Converter::new(super::super::ConvertConfig::default()));
        let rev = store
            .put_attachment(
                &Db::Faxes,
                "job1",
                None,
                "original_file.pdf",
                "application/pdf",
                bytes_stream(b"MZ\x90\x00 not a document".to_vec()),
            )
            .await
            .unwrap();
        assert!(rev.starts_with("1-"));
        let err = faxable(&store, &converter, &Db::Faxes, "job1", true)
            .await
            .unwrap_err();
        assert!(matches!(err, DocumentError::Convert(_)), "{err}");
        assert!(
            store
                .get_attachment(&Db::Faxes, "job1", FAX_FILE)
                .await
                .unwrap()
                .is_none()
        );
    }
}
