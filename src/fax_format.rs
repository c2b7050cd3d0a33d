//! Which stored attachment of a fax serves a download format (PDF, TIFF, original), the
//! configured default (`kazoo_convert` `fax.attachment_format`), and the PDF of a fax that
//! has only its TIFF: shared by the API's downloads and the notification mail.

use serde_json::Value;

use crate::ids::Db;
use crate::store::{SharedStore, StoreError};

/// Download formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Pdf,
    Tiff,
    Original,
}

impl Format {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "pdf" => Some(Format::Pdf),
            "tiff" | "tif" => Some(Format::Tiff),
            "original" => Some(Format::Original),
            _ => None,
        }
    }
}

/// The configured default download format (`system_config/kazoo_convert`
/// `fax.attachment_format`, default `pdf`).
pub async fn configured(store: &SharedStore) -> Format {
    let doc = store
        .get(&Db::SystemConfig, "kazoo_convert")
        .await
        .ok()
        .flatten();
    doc.as_ref()
        .and_then(|d| {
            d.pointer("/default/fax/attachment_format")
                .or_else(|| d.pointer("/default/attachment_format"))
        })
        .and_then(Value::as_str)
        .and_then(Format::parse)
        .unwrap_or(Format::Pdf)
}

/// Picks the attachment that serves a format. `strict`: the client asked for this format
/// explicitly (`?format=` or `Accept`), so no other format may stand in.
pub fn pick_attachment(doc: &Value, format: Format, strict: bool) -> Option<String> {
    let names = crate::intake::attachment_names(doc);
    let ct_of = |n: &str| {
        doc.pointer(&format!(
            "/_attachments/{}/content_type",
            n.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
    };
    let find = |pred: &dyn Fn(&str) -> bool| names.iter().find(|n| pred(n)).cloned();
    let original = || {
        find(&|n| n.starts_with("original_file"))
            .or_else(|| find(&|n| n.starts_with("received_file_")))
    };
    let by_type = |ct: &str| find(&|n| ct_of(n) == ct);
    let chosen = match format {
        Format::Pdf => find(&|n| n == "pdf_file.pdf").or_else(|| by_type("application/pdf")),
        Format::Tiff => find(&|n| n == "fax_file.tiff").or_else(|| by_type("image/tiff")),
        Format::Original => original(),
    };
    if strict {
        chosen
    } else {
        chosen.or_else(original).or_else(|| names.first().cloned())
    }
}

/// Why a fax's PDF could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot render the fax as PDF: {0}")]
    Convert(String),
}

/// The fax TIFF (sent or received) of `doc` in `db` wrapped as PDF without re-encoding, on
/// the blocking pool. `None` when the fax has no TIFF.
pub async fn render_pdf(
    store: &SharedStore,
    db: &Db,
    doc: &Value,
) -> Result<Option<Vec<u8>>, RenderError> {
    let Some(name) = pick_attachment(doc, Format::Tiff, true) else {
        return Ok(None);
    };
    let id = doc["_id"].as_str().unwrap_or_default().to_string();
    let Some(att) = store.get_attachment(db, &id, &name).await? else {
        return Ok(None);
    };
    let tiff = crate::store::read_all(att.body).await?;
    let pdf = tokio::task::spawn_blocking(move || crate::convert::pdf::fax_tiff_to_pdf(&tiff))
        .await
        .map_err(|e| RenderError::Convert(e.to_string()))?
        .map_err(|e| RenderError::Convert(e.to_string()))?;
    Ok(Some(pdf))
}
