//! The faxable documents of a received e-mail: parsed with mail-parser, checked against
//! MIME limits (parts, depth, header bytes) before anything is walked, then walked in MIME
//! order without recursion. Every PDF, TIFF, Office document or large enough image is kept
//! whatever its disposition (Apple Mail's inline PDFs, octet-stream parts sniffed by their
//! bytes, forwarded `message/rfc822`, a single-part PDF body, files inside an Outlook
//! `winmail.dat`); signatures, text bodies and small images (logos) are skipped; encrypted
//! and opaque-signed mail, bounces and auto-replies are refused with a reason.

use mail_parser::{HeaderName, Message, MessageParser, MimeHeaders, PartType};

use super::tnef;
use crate::intake;

/// Limits of the MIME walk.
#[derive(Clone, Debug)]
pub struct MimeLimits {
    /// Parts in the whole message, nested messages included.
    pub max_parts: usize,
    /// Nesting levels (multipart and message/rfc822).
    pub max_depth: usize,
    /// Header bytes of any one part.
    pub max_header_bytes: usize,
    /// Images smaller than this in both sides are skipped (logos, signatures).
    pub min_image_px: u32,
}

impl Default for MimeLimits {
    fn default() -> Self {
        Self {
            max_parts: 500,
            max_depth: 20,
            max_header_bytes: 100 * 1024,
            min_image_px: 200,
        }
    }
}

/// One document to fax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// The media type its bytes have (see [`intake::effective_type`]).
    pub content_type: String,
    /// The attachment's file name, cleaned for display.
    pub name: Option<String>,
    pub bytes: Vec<u8>,
}

/// What a message holds for fax.
#[derive(Clone, Debug, Default)]
pub struct Extracted {
    /// The documents, in MIME order.
    pub documents: Vec<Document>,
    /// Parts that were not faxed, described (`"logo.png: image smaller than 200x200"`).
    pub skipped: Vec<String>,
    pub subject: Option<String>,
}

/// Why a message cannot be faxed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MimeError {
    #[error("the message could not be parsed as MIME")]
    Undecodable,
    #[error("the message has more than {0} MIME parts")]
    TooManyParts(usize),
    #[error("the message nests MIME parts deeper than {0} levels")]
    TooDeep(usize),
    #[error("a MIME header section is larger than {0} bytes")]
    HeadersTooLarge(usize),
    #[error("bounces, delivery reports and auto-replies are never faxed")]
    AutoReply,
    #[error("encrypted mail cannot be faxed ({0}); send the document unencrypted")]
    Encrypted(&'static str),
    #[error(
        "opaque-signed S/MIME (smime.p7m) cannot be faxed: send the message with a clear-text (detached) signature, or unsigned"
    )]
    OpaqueSigned,
    #[error("no faxable document (PDF, TIFF, Office file or image) found{0}")]
    NoDocument(String),
}

/// `type/subtype` of a part, lower-case (`text/plain` when absent, as RFC 2045 says).
fn part_type<'x>(part: &mail_parser::MessagePart<'x>) -> String {
    match part.content_type() {
        Some(ct) => {
            format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default()).to_ascii_lowercase()
        }
        None => "text/plain".into(),
    }
}

/// A file name safe to show: no control characters or path separators, at most 100 chars.
pub fn clean_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '/' || c == '\\' { '_' } else { c })
        .take(100)
        .collect();
    cleaned.trim().to_string()
}

/// Counts parts and checks header sizes of a message and the messages nested in it.
fn check_limits(root: &Message<'_>, limits: &MimeLimits) -> Result<(), MimeError> {
    let mut parts = 0usize;
    let mut stack: Vec<&Message<'_>> = vec![root];
    while let Some(m) = stack.pop() {
        parts += m.parts.len();
        if parts > limits.max_parts {
            return Err(MimeError::TooManyParts(limits.max_parts));
        }
        for p in &m.parts {
            let header = p.offset_body.saturating_sub(p.offset_header) as usize;
            if header > limits.max_header_bytes {
                return Err(MimeError::HeadersTooLarge(limits.max_header_bytes));
            }
            if let PartType::Message(inner) = &p.body {
                stack.push(inner);
            }
        }
    }
    Ok(())
}

/// The faxable documents of `raw` (a whole RFC 5322 message).
pub fn extract(raw: &[u8], limits: &MimeLimits) -> Result<Extracted, MimeError> {
    let msg = MessageParser::default()
        .parse(raw)
        .ok_or(MimeError::Undecodable)?;
    if msg.parts.is_empty() {
        return Err(MimeError::Undecodable);
    }
    check_limits(&msg, limits)?;
    if let Some(v) = msg.header_raw(HeaderName::AutoSubmitted)
        && !v.trim().eq_ignore_ascii_case("no")
    {
        return Err(MimeError::AutoReply);
    }
    if part_type(&msg.parts[0]) == "multipart/report" {
        return Err(MimeError::AutoReply);
    }
    let mut out = Extracted {
        subject: msg.subject().map(|s| s.chars().take(200).collect()),
        ..Default::default()
    };
    // (message, part id, depth, inside a multipart/report)
    let mut stack: Vec<(&Message<'_>, u32, usize, bool)> = vec![(&msg, 0, 0, false)];
    while let Some((m, id, depth, in_report)) = stack.pop() {
        if depth > limits.max_depth {
            return Err(MimeError::TooDeep(limits.max_depth));
        }
        let Some(part) = m.parts.get(id as usize) else {
            continue;
        };
        let ct = part_type(part);
        let name = part.attachment_name().map(clean_name);
        let label = name.clone().unwrap_or_else(|| ct.clone());
        match &part.body {
            PartType::Multipart(children) => {
                if ct == "multipart/encrypted" {
                    return Err(MimeError::Encrypted("PGP/MIME"));
                }
                let report = in_report || ct == "multipart/report";
                for c in children.iter().rev() {
                    stack.push((m, *c, depth + 1, report));
                }
            }
            PartType::Message(inner) => {
                if in_report {
                    out.skipped
                        .push(format!("{label}: returned message of a report"));
                } else if !inner.parts.is_empty() {
                    stack.push((inner, 0, depth + 1, false));
                }
            }
            PartType::Text(_) | PartType::Html(_) => {
                if part.is_encoding_problem {
                    out.skipped
                        .push(format!("{label}: damaged part (missing MIME boundary?)"));
                }
            }
            PartType::Binary(bytes) | PartType::InlineBinary(bytes) => {
                leaf(&ct, part, name, bytes, limits, &mut out)?;
            }
        }
    }
    if out.documents.is_empty() {
        let found = if out.skipped.is_empty() {
            String::new()
        } else {
            format!(" (found: {})", out.skipped.join("; "))
        };
        return Err(MimeError::NoDocument(found));
    }
    Ok(out)
}

/// Classifies one non-text leaf part.
fn leaf(
    ct: &str,
    part: &mail_parser::MessagePart<'_>,
    name: Option<String>,
    bytes: &[u8],
    limits: &MimeLimits,
    out: &mut Extracted,
) -> Result<(), MimeError> {
    let label = name.clone().unwrap_or_else(|| ct.to_string());
    match ct {
        "application/pkcs7-mime" | "application/x-pkcs7-mime" => {
            let enveloped = part
                .content_type()
                .and_then(|c| c.attribute("smime-type"))
                .is_some_and(|t| t.eq_ignore_ascii_case("enveloped-data"));
            return Err(if enveloped {
                MimeError::Encrypted("S/MIME")
            } else {
                MimeError::OpaqueSigned
            });
        }
        "application/pkcs7-signature"
        | "application/x-pkcs7-signature"
        | "application/pgp-signature"
        | "application/pgp-encrypted" => {
            out.skipped.push(format!("{label}: signature"));
            return Ok(());
        }
        "application/ms-tnef" | "application/vnd.ms-tnef" => {
            let files = tnef::attachments(bytes);
            let before = out.documents.len();
            for f in files {
                let fname = f.title.as_deref().map(clean_name);
                consider("application/octet-stream", fname, f.data, limits, out);
            }
            if out.documents.len() == before {
                out.skipped.push(format!(
                    "{label}: Outlook rich text (winmail.dat) without a faxable file; send the message as HTML or plain text"
                ));
            }
            return Ok(());
        }
        _ => {}
    }
    if part.is_encoding_problem {
        out.skipped
            .push(format!("{label}: damaged part (missing MIME boundary?)"));
        return Ok(());
    }
    consider(ct, name, bytes.to_vec(), limits, out);
    Ok(())
}

/// Keeps a document when its bytes can be faxed (an image only when large enough).
fn consider(
    declared: &str,
    name: Option<String>,
    bytes: Vec<u8>,
    limits: &MimeLimits,
    out: &mut Extracted,
) {
    let label = name.clone().unwrap_or_else(|| declared.to_string());
    if bytes.is_empty() {
        out.skipped.push(format!("{label}: empty"));
        return;
    }
    let content_type = match intake::effective_type(declared, &bytes) {
        Ok(t) if t == "text/plain" => {
            out.skipped.push(format!("{label}: text"));
            return;
        }
        Ok(t) => t,
        Err(e) => {
            out.skipped.push(format!("{label}: {e}"));
            return;
        }
    };
    if content_type.starts_with("image/") && content_type != "image/tiff" {
        match image_size(&bytes) {
            Some((w, h)) if w >= limits.min_image_px && h >= limits.min_image_px => {}
            Some((w, h)) => {
                out.skipped.push(format!(
                    "{label}: image of {w}x{h} px, smaller than {0}x{0} (logo or signature)",
                    limits.min_image_px
                ));
                return;
            }
            None => {
                out.skipped.push(format!("{label}: unreadable image"));
                return;
            }
        }
    }
    out.documents.push(Document {
        content_type,
        name,
        bytes,
    });
}

/// Pixel size of an image from its header (no decoding of the pixels).
fn image_size(bytes: &[u8]) -> Option<(u32, u32)> {
    image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()?
        .into_dimensions()
        .ok()
}

impl MimeError {
    /// The SMTP reply for this refusal.
    pub fn reply(&self) -> super::reply::Reply {
        use super::reply::Reply;
        let text = self.to_string();
        match self {
            MimeError::Undecodable | MimeError::TooManyParts(_) | MimeError::TooDeep(_) => {
                Reply::undecodable(&text)
            }
            MimeError::HeadersTooLarge(_) => Reply::new(552, Some("5.3.4"), text),
            MimeError::AutoReply => Reply::policy(&text),
            MimeError::Encrypted(_) => Reply::encrypted(&text),
            MimeError::OpaqueSigned | MimeError::NoDocument(_) => Reply::no_document(&text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PDF: &[u8] = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n";

    fn b64(data: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    #[test]
    fn single_part_pdf_body_is_a_document() {
        let raw = format!(
            "From: a@b\r\nTo: 1@c\r\nContent-Type: application/pdf; name=\"x.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            b64(PDF)
        );
        let e = extract(raw.as_bytes(), &MimeLimits::default()).unwrap();
        assert_eq!(e.documents.len(), 1);
        assert_eq!(e.documents[0].bytes, PDF);
        assert_eq!(e.documents[0].name.as_deref(), Some("x.pdf"));
    }

    #[test]
    fn text_only_is_refused_with_a_reason() {
        let raw = b"From: a@b\r\nSubject: hi\r\n\r\nJust text\r\n";
        let err = extract(raw, &MimeLimits::default()).unwrap_err();
        assert!(matches!(err, MimeError::NoDocument(_)));
        assert_eq!(err.reply().code, 554);
        assert_eq!(err.reply().enhanced, Some("5.6.1"));
    }

    #[test]
    fn auto_replies_are_refused() {
        let raw = format!(
            "From: a@b\r\nAuto-Submitted: auto-replied\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            b64(PDF)
        );
        assert_eq!(
            extract(raw.as_bytes(), &MimeLimits::default()).unwrap_err(),
            MimeError::AutoReply
        );
    }

    #[test]
    fn names_are_cleaned() {
        assert_eq!(clean_name("../../etc/passwd\r\n"), ".._.._etc_passwd");
        assert_eq!(clean_name(&"x".repeat(500)).len(), 100);
    }
}
