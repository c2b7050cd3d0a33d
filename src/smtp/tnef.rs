//! The files inside an Outlook `winmail.dat` (TNEF, MS-OXTNEF): just enough of the format to
//! take out each attachment's title and data; every length is bounds-checked, so a damaged
//! stream yields what was readable up to the damage.

/// TNEF stream signature (little-endian `0x223E9F78`).
const SIGNATURE: u32 = 0x223E_9F78;
/// Starts an attachment.
const ATT_ATTACH_RENDDATA: u32 = 0x0006_9002;
/// The attachment's (short) title.
const ATT_ATTACH_TITLE: u32 = 0x0001_8010;
/// The attachment's bytes.
const ATT_ATTACH_DATA: u32 = 0x0006_800F;

/// One file of a TNEF stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TnefFile {
    pub title: Option<String>,
    pub data: Vec<u8>,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The attachments of a TNEF stream, in order (empty when it is not TNEF).
pub fn attachments(stream: &[u8]) -> Vec<TnefFile> {
    let mut out: Vec<TnefFile> = Vec::new();
    if u32_at(stream, 0) != Some(SIGNATURE) {
        return out;
    }
    // signature (4) + legacy key (2)
    let mut at = 6;
    while at + 9 <= stream.len() {
        let Some(id) = u32_at(stream, at + 1) else {
            break;
        };
        let Some(len) = u32_at(stream, at + 5) else {
            break;
        };
        let start = at + 9;
        let Some(end) = start.checked_add(len as usize) else {
            break;
        };
        let Some(data) = stream.get(start..end) else {
            break;
        };
        match id {
            ATT_ATTACH_RENDDATA => out.push(TnefFile::default()),
            ATT_ATTACH_TITLE => {
                if let Some(f) = out.last_mut() {
                    let text = data.split(|&b| b == 0).next().unwrap_or_default();
                    f.title = Some(String::from_utf8_lossy(text).into_owned());
                }
            }
            ATT_ATTACH_DATA => {
                if let Some(f) = out.last_mut() {
                    f.data = data.to_vec();
                }
            }
            _ => {}
        }
        // data + 2-byte checksum
        at = end + 2;
    }
    out.retain(|f| !f.data.is_empty());
    out
}

/// Builds a TNEF stream holding `files` (for tests).
#[cfg(test)]
pub fn build(files: &[(&str, &[u8])]) -> Vec<u8> {
    fn attr(out: &mut Vec<u8>, level: u8, id: u32, data: &[u8]) {
        out.push(level);
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        let sum = data.iter().fold(0u16, |s, &b| s.wrapping_add(u16::from(b)));
        out.extend_from_slice(&sum.to_le_bytes());
    }
    let mut out = SIGNATURE.to_le_bytes().to_vec();
    out.extend_from_slice(&0x0001u16.to_le_bytes());
    // attTnefVersion, then one message attribute as Outlook writes it.
    attr(&mut out, 1, 0x0008_9006, &0x0001_0000u32.to_le_bytes());
    for (title, data) in files {
        attr(&mut out, 2, ATT_ATTACH_RENDDATA, &[0u8; 14]);
        let mut t = title.as_bytes().to_vec();
        t.push(0);
        attr(&mut out, 2, ATT_ATTACH_TITLE, &t);
        attr(&mut out, 2, ATT_ATTACH_DATA, data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let s = build(&[("CONTRA~1.PDF", b"%PDF-1.4 x"), ("b.txt", b"hello")]);
        let files = attachments(&s);
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].title.as_deref(), Some("CONTRA~1.PDF"));
        assert_eq!(files[0].data, b"%PDF-1.4 x");
        // Cut anywhere: never panics, keeps what was whole.
        for cut in 0..s.len() {
            let _ = attachments(&s[..cut]);
        }
        assert!(attachments(b"not tnef").is_empty());
    }
}
