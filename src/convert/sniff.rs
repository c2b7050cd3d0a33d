//! Content sniffing: the input's type from its bytes (magic numbers, zip and OLE containers),
//! never from its name or declared MIME type; plus the zip-bomb and text-size checks for
//! Office containers.

use super::error::ConvertError;

/// What an input is, decided from its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pdf,
    Tiff,
    Png,
    Jpeg,
    Gif,
    Bmp,
    /// Office Open XML or OpenDocument (zip container); the extension LibreOffice is given.
    Office(OfficeKind),
    /// Rich Text Format.
    Rtf,
    /// Plain text (UTF-8).
    Text,
}

/// The Office family, as far as the container tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfficeKind {
    Docx,
    Xlsx,
    Pptx,
    Odt,
    Ods,
    Odp,
    Odg,
    /// Compound File Binary: doc, xls or ppt (LibreOffice tells them apart itself).
    Ole,
}

impl Kind {
    /// A short name for messages and the operator command.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pdf => "pdf",
            Kind::Tiff => "tiff",
            Kind::Png => "png",
            Kind::Jpeg => "jpeg",
            Kind::Gif => "gif",
            Kind::Bmp => "bmp",
            Kind::Rtf => "rtf",
            Kind::Text => "txt",
            Kind::Office(o) => o.extension(),
        }
    }

    /// Whether LibreOffice converts it (to PDF first).
    pub fn is_office(self) -> bool {
        matches!(self, Kind::Office(_) | Kind::Rtf | Kind::Text)
    }

    /// The MIME type Kazoo would record for it.
    pub fn mime(self) -> &'static str {
        match self {
            Kind::Pdf => "application/pdf",
            Kind::Tiff => "image/tiff",
            Kind::Png => "image/png",
            Kind::Jpeg => "image/jpeg",
            Kind::Gif => "image/gif",
            Kind::Bmp => "image/bmp",
            Kind::Rtf => "application/rtf",
            Kind::Text => "text/plain",
            Kind::Office(OfficeKind::Docx) => {
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            }
            Kind::Office(OfficeKind::Xlsx) => {
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            }
            Kind::Office(OfficeKind::Pptx) => {
                "application/vnd.openxmlformats-officedocument.presentationml.presentation"
            }
            Kind::Office(OfficeKind::Odt) => "application/vnd.oasis.opendocument.text",
            Kind::Office(OfficeKind::Ods) => "application/vnd.oasis.opendocument.spreadsheet",
            Kind::Office(OfficeKind::Odp) => "application/vnd.oasis.opendocument.presentation",
            Kind::Office(OfficeKind::Odg) => "application/vnd.oasis.opendocument.graphics",
            Kind::Office(OfficeKind::Ole) => "application/x-ole-storage",
        }
    }
}

impl OfficeKind {
    pub fn extension(self) -> &'static str {
        match self {
            OfficeKind::Docx => "docx",
            OfficeKind::Xlsx => "xlsx",
            OfficeKind::Pptx => "pptx",
            OfficeKind::Odt => "odt",
            OfficeKind::Ods => "ods",
            OfficeKind::Odp => "odp",
            OfficeKind::Odg => "odg",
            OfficeKind::Ole => "doc",
        }
    }
}

/// Decides the type of `data` from its content. PostScript, executables and unknown binary
/// data are refused with a message naming what was found.
pub fn sniff(data: &[u8]) -> Result<Kind, ConvertError> {
    if data.is_empty() {
        return Err(ConvertError::Empty);
    }
    let head = &data[..data.len().min(1024)];
    if head.starts_with(b"%!") || head.starts_with(&[0xC5, 0xD0, 0xD3, 0xC6]) {
        return Err(ConvertError::Refused(
            "PostScript is not accepted (convert it to PDF first)".into(),
        ));
    }
    if head.starts_with(b"\x7fELF") {
        return Err(ConvertError::Unsupported(
            "an executable (ELF), not a document".into(),
        ));
    }
    if head.starts_with(b"MZ") {
        return Err(ConvertError::Unsupported(
            "an executable (Windows PE), not a document".into(),
        ));
    }
    if head.starts_with(b"#!") {
        return Err(ConvertError::Unsupported("a script, not a document".into()));
    }
    // Acrobat accepts junk before the header within the first 1 KiB; so does Ghostscript.
    if find(head, b"%PDF-").is_some() {
        return Ok(Kind::Pdf);
    }
    if head.starts_with(b"II*\0") || head.starts_with(b"MM\0*") {
        return Ok(Kind::Tiff);
    }
    if head.starts_with(b"II+\0") || head.starts_with(b"MM\0+") {
        return Err(ConvertError::Unsupported("BigTIFF".into()));
    }
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(Kind::Png);
    }
    if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(Kind::Jpeg);
    }
    if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        return Ok(Kind::Gif);
    }
    if head.starts_with(b"BM") && head.len() >= 26 {
        return Ok(Kind::Bmp);
    }
    if head.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        return Ok(Kind::Office(OfficeKind::Ole));
    }
    if head.starts_with(b"{\\rtf") {
        return Ok(Kind::Rtf);
    }
    if head.starts_with(b"PK\x03\x04") {
        return zip_kind(data).map(Kind::Office);
    }
    if looks_like_text(data) {
        return Ok(Kind::Text);
    }
    Err(ConvertError::Unsupported(
        "unrecognised binary data (not PDF, TIFF, PNG, JPEG, GIF, BMP, Office or text)".into(),
    ))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn looks_like_text(data: &[u8]) -> bool {
    let sample = &data[..data.len().min(64 * 1024)];
    if sample.contains(&0) {
        return false;
    }
    // A cut in the middle of a multi-byte sequence at the sample's end is fine.
    match std::str::from_utf8(sample) {
        Ok(s) => s
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t' | '\x0c')),
        Err(e) => e.error_len().is_none() && e.valid_up_to() + 4 > sample.len(),
    }
}

/// One entry of a zip central directory.
#[derive(Debug)]
pub(crate) struct ZipEntry {
    pub name: String,
    /// Compression method (0 stored, 8 deflate).
    pub method: u16,
    pub compressed: u64,
    pub uncompressed: u64,
    /// Offset of the entry's local header.
    pub offset: u64,
}

/// Reads the central directory of a zip archive (no zip64, which no Office file needs).
pub(crate) fn zip_entries(data: &[u8]) -> Result<Vec<ZipEntry>, ConvertError> {
    let bad = |d: &str| ConvertError::malformed("zip container", d);
    let min = 22;
    if data.len() < min {
        return Err(bad("too short"));
    }
    let from = data.len().saturating_sub(min + 65_535);
    let eocd = (from..=data.len() - min)
        .rev()
        .find(|&i| data[i..].starts_with(b"PK\x05\x06"))
        .ok_or_else(|| bad("no end-of-central-directory record"))?;
    let u16at = |i: usize| -> Result<u64, ConvertError> {
        data.get(i..i + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as u64)
            .ok_or_else(|| bad("truncated"))
    };
    let u32at = |i: usize| -> Result<u64, ConvertError> {
        data.get(i..i + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64)
            .ok_or_else(|| bad("truncated"))
    };
    let count = u16at(eocd + 10)?;
    let mut pos = u32at(eocd + 16)? as usize;
    if count == 0xFFFF || pos == 0xFFFF_FFFF {
        return Err(ConvertError::Unsupported("zip64 archive".into()));
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        if data.get(pos..pos + 4) != Some(b"PK\x01\x02") {
            return Err(bad("central directory entry missing"));
        }
        let method = u16at(pos + 10)? as u16;
        let compressed = u32at(pos + 20)?;
        let uncompressed = u32at(pos + 24)?;
        let name_len = u16at(pos + 28)? as usize;
        let extra = u16at(pos + 30)? as usize;
        let comment = u16at(pos + 32)? as usize;
        let offset = u32at(pos + 42)?;
        let name = data
            .get(pos + 46..pos + 46 + name_len)
            .ok_or_else(|| bad("truncated name"))?;
        out.push(ZipEntry {
            name: String::from_utf8_lossy(name).into_owned(),
            method,
            compressed,
            uncompressed,
            offset,
        });
        pos += 46 + name_len + extra + comment;
    }
    Ok(out)
}

fn zip_kind(data: &[u8]) -> Result<OfficeKind, ConvertError> {
    let entries = zip_entries(data)?;
    let has = |prefix: &str| entries.iter().any(|e| e.name.starts_with(prefix));
    if has("word/") {
        return Ok(OfficeKind::Docx);
    }
    if has("xl/") {
        return Ok(OfficeKind::Xlsx);
    }
    if has("ppt/") {
        return Ok(OfficeKind::Pptx);
    }
    // OpenDocument: the first entry is an uncompressed `mimetype` holding the type.
    if data.len() > 38 + 8 && &data[30..38] == b"mimetype" {
        let rest = &data[38..data.len().min(38 + 80)];
        let t = String::from_utf8_lossy(rest);
        for (needle, kind) in [
            ("opendocument.text", OfficeKind::Odt),
            ("opendocument.spreadsheet", OfficeKind::Ods),
            ("opendocument.presentation", OfficeKind::Odp),
            ("opendocument.graphics", OfficeKind::Odg),
        ] {
            if t.contains(needle) {
                return Ok(kind);
            }
        }
    }
    Err(ConvertError::Unsupported(
        "a zip archive that is not an Office or OpenDocument file".into(),
    ))
}

/// Refuses a zip container whose entries expand beyond `limit` bytes in total or by a ratio
/// no document has (a zip bomb), from the central directory and before anything inflates it;
/// then refuses one whose text is more than `text_limit` bytes. Text is every entry that is
/// not binary media (images, fonts, embedded objects): what LibreOffice parses and lays out.
/// Its size is measured by inflating it (up to the limit), not taken from the headers, which
/// the sender writes.
pub(crate) fn check_zip_bomb(data: &[u8], limit: u64, text_limit: u64) -> Result<(), ConvertError> {
    let entries = zip_entries(data)?;
    let mut total: u64 = 0;
    for e in &entries {
        total = total.saturating_add(e.uncompressed);
        let ratio_bomb =
            e.uncompressed > 10 * 1024 * 1024 && e.uncompressed / e.compressed.max(1) > 200;
        if total > limit || ratio_bomb {
            return Err(ConvertError::ZipBomb {
                limit_mb: limit / (1024 * 1024),
            });
        }
    }
    let mut text: u64 = 0;
    for e in &entries {
        let budget = text_limit.saturating_sub(text);
        text = text.saturating_add(text_size(data, e, budget)?);
        if text > text_limit {
            return Err(ConvertError::TextTooLarge { limit: text_limit });
        }
    }
    Ok(())
}

/// The inflated size of entry `e` if it is text, reading at most `budget + 1` bytes of it
/// (0 for binary media, and for methods LibreOffice cannot read either).
fn text_size(data: &[u8], e: &ZipEntry, budget: u64) -> Result<u64, ConvertError> {
    use std::io::Read;
    let bad = |d: &str| ConvertError::malformed("zip container", d);
    let at = e.offset as usize;
    if data.get(at..at + 4) != Some(b"PK\x03\x04") {
        return Err(bad("local header missing"));
    }
    let le16 = |i: usize| {
        data.get(i..i + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
            .ok_or_else(|| bad("truncated"))
    };
    let start = at + 30 + le16(at + 26)? + le16(at + 28)?;
    let end = start.saturating_add(e.compressed as usize).min(data.len());
    let raw = data.get(start..end).unwrap_or_default();
    let mut reader: Box<dyn Read + '_> = match e.method {
        0 => Box::new(raw),
        8 => Box::new(flate2::read::DeflateDecoder::new(raw)),
        _ => return Ok(0),
    };
    let mut head = vec![0u8; 4096];
    let mut got = 0;
    while got < head.len() {
        match reader.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            // A broken stream: count what inflated so far; LibreOffice refuses the rest.
            Err(_) => break,
        }
    }
    head.truncate(got);
    if !is_text(&head) {
        return Ok(0);
    }
    let rest = std::io::copy(
        &mut reader.take(budget.saturating_sub(got as u64) + 1),
        &mut std::io::sink(),
    )
    .unwrap_or(0);
    Ok(got as u64 + rest)
}

/// Whether an entry's first bytes are text (UTF-8 or UTF-16 markup, RTF, HTML, plain text)
/// rather than binary media, which always has zero bytes early on (image and font headers,
/// OLE and zip structures) but not in a UTF-16 pattern.
fn is_text(head: &[u8]) -> bool {
    if !head.contains(&0) {
        return true;
    }
    if head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]) {
        return true;
    }
    // UTF-16 without a byte-order mark: markup is ASCII, so one byte of each pair is zero.
    let sample = &head[..head.len().min(64)];
    let zero_at = |parity: usize| sample.iter().skip(parity).step_by(2).all(|&b| b == 0);
    sample.len() >= 8 && (zero_at(0) || zero_at(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_decide_not_names() {
        assert_eq!(sniff(b"%PDF-1.7\n").unwrap(), Kind::Pdf);
        assert_eq!(sniff(b"\n\n junk %PDF-1.4").unwrap(), Kind::Pdf);
        assert_eq!(sniff(b"II*\0\x08\0\0\0").unwrap(), Kind::Tiff);
        assert_eq!(sniff(b"MM\0*\0\0\0\x08").unwrap(), Kind::Tiff);
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n....").unwrap(), Kind::Png);
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]).unwrap(), Kind::Jpeg);
        assert_eq!(sniff(b"GIF89a..").unwrap(), Kind::Gif);
        assert_eq!(sniff(b"{\\rtf1\\ansi hello}").unwrap(), Kind::Rtf);
        assert_eq!(
            sniff("Dear sir,\nthe invoice — €12\n".as_bytes()).unwrap(),
            Kind::Text
        );
        assert!(matches!(sniff(b""), Err(ConvertError::Empty)));
        assert!(matches!(
            sniff(b"%!PS-Adobe-3.0"),
            Err(ConvertError::Refused(_))
        ));
        assert!(
            matches!(sniff(b"\x7fELF\x02\x01"), Err(ConvertError::Unsupported(m)) if m.contains("executable"))
        );
        assert!(matches!(
            sniff(&[0u8, 1, 2, 3, 0, 0]),
            Err(ConvertError::Unsupported(_))
        ));
        let ole = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1, 0, 0];
        assert_eq!(sniff(&ole).unwrap(), Kind::Office(OfficeKind::Ole));
    }

    /// A zip of `(name, body)` entries, each stored or deflated, with honest headers unless
    /// `declared` overrides the uncompressed size written in them.
    fn zip(entries: &[(&str, &[u8], bool, Option<u32>)]) -> Vec<u8> {
        use std::io::Write;
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, body, deflate, declared) in entries {
            let packed = if *deflate {
                let mut z =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
                z.write_all(body).unwrap();
                z.finish().unwrap()
            } else {
                body.to_vec()
            };
            let mut crc = flate2::Crc::new();
            crc.update(body);
            let mut h = Vec::new();
            h.extend_from_slice(&(if *deflate { 8u16 } else { 0 }).to_le_bytes());
            h.extend_from_slice(&[0, 0, 0, 0]);
            h.extend_from_slice(&crc.sum().to_le_bytes());
            h.extend_from_slice(&(packed.len() as u32).to_le_bytes());
            h.extend_from_slice(&declared.unwrap_or(body.len() as u32).to_le_bytes());
            h.extend_from_slice(&(name.len() as u16).to_le_bytes());
            h.extend_from_slice(&[0, 0]);
            let off = out.len() as u32;
            out.extend_from_slice(b"PK\x03\x04\x14\x00\x00\x00");
            out.extend_from_slice(&h);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&packed);
            central.extend_from_slice(b"PK\x01\x02\x14\x00\x14\x00\x00\x00");
            central.extend_from_slice(&h);
            central.extend_from_slice(&[0; 10]);
            central.extend_from_slice(&off.to_le_bytes());
            central.extend_from_slice(name.as_bytes());
        }
        let n = (entries.len() as u16).to_le_bytes();
        let cd_at = (out.len() as u32).to_le_bytes();
        out.extend_from_slice(&central);
        out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
        out.extend_from_slice(&n);
        out.extend_from_slice(&n);
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&cd_at);
        out.extend_from_slice(&[0, 0]);
        out
    }

    #[test]
    fn text_parts_are_measured_by_inflating_them() {
        let text = "<w:p><w:r><w:t>lorem ipsum</w:t></w:r></w:p>".repeat(30_000);
        let doc = text.as_bytes();
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.resize(3 << 20, 7);
        let utf16: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let ok = |z: &[u8], cap: u64| check_zip_bomb(z, 512 << 20, cap);
        let honest = zip(&[
            ("[Content_Types].xml", b"<Types/>", false, None),
            ("word/document.xml", doc, true, None),
        ]);
        assert!(ok(&honest, 2 << 20).is_ok());
        assert!(matches!(
            ok(&honest, 1 << 20),
            Err(ConvertError::TextTooLarge { limit }) if limit == 1 << 20
        ));
        // The headers claim 100 bytes: the inflated size counts.
        let lying = zip(&[("word/document.xml", doc, true, Some(100))]);
        assert!(matches!(
            ok(&lying, 1 << 20),
            Err(ConvertError::TextTooLarge { .. })
        ));
        // Text hidden under an image's name, or as UTF-16, is still text.
        let renamed = zip(&[("word/media/image1.png", doc, true, None)]);
        assert!(matches!(
            ok(&renamed, 1 << 20),
            Err(ConvertError::TextTooLarge { .. })
        ));
        let wide = zip(&[("word/document.xml", &utf16[2..], true, None)]);
        assert!(matches!(
            ok(&wide, 2 << 20),
            Err(ConvertError::TextTooLarge { .. })
        ));
        // Pictures are not text: 3 MB of PNG under a 1 MB text cap passes.
        let pictures = zip(&[
            ("word/document.xml", b"<w:document/>", true, None),
            ("word/media/image1.png", &png, false, None),
        ]);
        assert!(ok(&pictures, 1 << 20).is_ok());
        assert!(matches!(
            check_zip_bomb(&pictures, 2 << 20, 1 << 20),
            Err(ConvertError::ZipBomb { .. })
        ));
    }
}
