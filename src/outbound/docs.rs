//! Where a worker gets the fax-ready TIFF of a job: the [`DocumentSource`] trait (the
//! converter plugs in here) and [`StoredTiff`], which takes the stored `fax_file.tiff`
//! attachment as it is.

use std::path::Path;

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::ids::Db;
use crate::store::SharedStore;

/// Why no faxable document could be produced (recorded on the job as a bad-file failure).
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("no faxable document: {0}")]
    Missing(String),
    #[error("document conversion failed: {0}")]
    Conversion(String),
    #[error("cannot write the fax file: {0}")]
    Io(#[from] std::io::Error),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// Produces the fax-ready TIFF of a job at `dest` (a new file, mode 0600), returning its page
/// count.
#[async_trait]
pub trait DocumentSource: Send + Sync + 'static {
    async fn faxable(&self, job_id: &str, dest: &Path) -> Result<u32, DocumentError>;
}

/// Attachment name of the stored fax-ready TIFF.
pub const FAX_FILE: &str = crate::convert::stored::FAX_FILE;

/// The production source: the stored `fax_file.tiff`, else the job's original document
/// converted (and kept as `fax_file.tiff` when `store_fax_tiff` is on).
pub struct ConvertedDocuments {
    pub store: SharedStore,
    pub converter: std::sync::Arc<crate::convert::Converter>,
    pub sysconf: std::sync::Arc<crate::config::SystemConfig>,
}

#[async_trait]
impl DocumentSource for ConvertedDocuments {
    async fn faxable(&self, job_id: &str, dest: &Path) -> Result<u32, DocumentError> {
        use crate::convert::stored::{self, DocumentError as Stored};
        let keep = self.sysconf.fax().store_fax_tiff;
        let doc = stored::faxable(&self.store, &self.converter, &Db::Faxes, job_id, keep)
            .await
            .map_err(|e| match e {
                Stored::Missing(m) => DocumentError::Missing(m),
                Stored::Convert(c) => DocumentError::Conversion(c.to_string()),
                Stored::Store(s) => DocumentError::Store(s),
            })?;
        let part = part_of(dest);
        let mut file = crate::files::create_private(&part).await?;
        file.write_all(&doc.tiff).await?;
        file.flush().await?;
        tokio::fs::rename(&part, dest).await?;
        Ok(doc.pages)
    }
}

/// Where a cached document is written before it is renamed to `dest`, so the fax file never
/// exists half-written (a reader of the cache finds it whole or not at all).
fn part_of(dest: &Path) -> std::path::PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

/// Reads the job's stored `fax_file.tiff` as it is (no conversion).
pub struct StoredTiff {
    pub store: SharedStore,
}

#[async_trait]
impl DocumentSource for StoredTiff {
    async fn faxable(&self, job_id: &str, dest: &Path) -> Result<u32, DocumentError> {
        let att = self
            .store
            .get_attachment(&Db::Faxes, job_id, FAX_FILE)
            .await?
            .ok_or_else(|| DocumentError::Missing(format!("job {job_id} has no {FAX_FILE}")))?;
        let part = part_of(dest);
        let mut file = crate::files::create_private(&part).await?;
        let mut head = Vec::new();
        let mut body = att.body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            if head.len() < 1 << 20 {
                head.extend_from_slice(&chunk);
            }
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        tokio::fs::rename(&part, dest).await?;
        Ok(tiff_pages(&head).unwrap_or(1))
    }
}

/// Counts the pages (IFDs) of a TIFF held in `data`; `None` if it is not a TIFF or the
/// chain leaves the buffer.
pub fn tiff_pages(data: &[u8]) -> Option<u32> {
    let le = match data.get(0..4)? {
        [b'I', b'I', 42, 0] => true,
        [b'M', b'M', 0, 42] => false,
        _ => return None,
    };
    let u16_at = |o: usize| {
        let b = data.get(o..o + 2)?;
        Some(if le {
            u16::from_le_bytes([b[0], b[1]])
        } else {
            u16::from_be_bytes([b[0], b[1]])
        })
    };
    let u32_at = |o: usize| {
        let b = data.get(o..o + 4)?;
        let a = [b[0], b[1], b[2], b[3]];
        Some(if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    };
    let mut off = u32_at(4)? as usize;
    let mut pages = 0;
    while off != 0 && pages < 10_000 {
        let n = u16_at(off)? as usize;
        pages += 1;
        off = u32_at(off + 2 + n * 12)? as usize;
    }
    Some(pages)
}

/// A fax TIFF (G4, fine, 1728 px) of `pages` white pages, each with its own black bar (tests
/// and benchmarks).
pub fn blank_tiff(pages: u32) -> Vec<u8> {
    use crate::convert::ccitt::{Coding, FaxPage};
    let pages: Vec<FaxPage> = (0..pages)
        .map(|n| {
            let mut page = FaxPage::blank(1728, 2200, 204.0, 196.0);
            let stride = page.stride();
            // A bar per page, so pages differ.
            for row in 100 + n as usize * 10..110 + n as usize * 10 {
                page.data[row * stride..(row + 1) * stride].fill(0xff);
            }
            page
        })
        .collect();
    crate::convert::tiff_f::write_fax_tiff(&pages, Coding::Mmr)
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_pages() {
        for n in [1, 3, 7] {
            assert_eq!(super::tiff_pages(&super::blank_tiff(n)), Some(n));
        }
        assert_eq!(super::tiff_pages(b"%PDF"), None);
    }
}
