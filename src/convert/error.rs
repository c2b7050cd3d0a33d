//! Conversion errors: one typed variant per thing that can be wrong with an input, a limit or
//! a converter, each with a message an operator (and a job's `tx_result`) can act on.

use std::time::Duration;

/// Why a conversion did not produce a document.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("the file is empty")]
    Empty,
    #[error("unsupported input: {0}")]
    Unsupported(String),
    #[error("refused input: {0}")]
    Refused(String),
    #[error("malformed {kind}: {detail}")]
    Malformed { kind: &'static str, detail: String },
    #[error("the PDF is password-protected")]
    Encrypted,
    #[error("too many pages: {pages} (the limit is {limit})")]
    TooManyPages { pages: u64, limit: u32 },
    #[error("page {page} is {width_in:.0}×{height_in:.0} inches (the limit is {limit_in} inches)")]
    PageTooLarge {
        page: u32,
        width_in: f64,
        height_in: f64,
        limit_in: u32,
    },
    #[error("image of {width}×{height} pixels exceeds the limit of {limit} pixels per page")]
    TooManyPixels { width: u64, height: u64, limit: u64 },
    #[error("archive expands to more than {limit_mb} MB (a zip bomb?)")]
    ZipBomb { limit_mb: u64 },
    #[error(
        "the document's text is more than {limit} bytes (max_text_bytes); split it or send it as PDF"
    )]
    TextTooLarge { limit: u64 },
    #[error("input of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("{tool} did not finish within {limit:?} and was killed")]
    Timeout { tool: String, limit: Duration },
    #[error("{tool} failed: {detail}")]
    ToolFailed { tool: String, detail: String },
    #[error("{tool} is not available: {detail}")]
    ToolMissing { tool: String, detail: String },
    #[error("output validation failed: {0}")]
    Invalid(String),
    #[error("conversion I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl ConvertError {
    pub(crate) fn malformed(kind: &'static str, detail: impl std::fmt::Display) -> Self {
        ConvertError::Malformed {
            kind,
            detail: detail.to_string(),
        }
    }
}
