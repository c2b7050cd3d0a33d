//! The URL encoding of plain-format event values (spec §1.2), both ways: faxd decodes what
//! FreeSWITCH sends, and the FreeSWITCH stand-in encodes exactly as FreeSWITCH does.

/// Bytes FreeSWITCH escapes besides controls and non-ASCII: CR, LF, space and
/// `" # % & + : ; < = > ? @ [ \ ] ^ ` { | }`.
const UNSAFE: &[u8] = b"\r\n \"#%&+:;<=>?@[\\]^`{|}";

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` (either case) to its byte; a `%` not followed by two hex digits stays as
/// is. Bytes that do not form UTF-8 are replaced (U+FFFD).
pub fn decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex_value),
                bytes.get(i + 2).copied().and_then(hex_value),
            )
        {
            out.push((hi << 4) | lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// [`decode`] that keeps the string when there is nothing to decode.
pub fn decode_owned(s: String) -> String {
    if s.contains('%') { decode(&s) } else { s }
}

/// Encodes as FreeSWITCH's plain serializer does: controls, bytes above 0x7E and the unsafe
/// set become `%XX` (uppercase), except a `%` already followed by two uppercase hex digits,
/// which is copied (so such a value does not survive a round trip, in FreeSWITCH either).
pub fn encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let upper_hex = |b: Option<&u8>| matches!(b, Some(b'0'..=b'9' | b'A'..=b'F'));
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        let keep_percent = b == b'%' && upper_hex(bytes.get(i + 1)) && upper_hex(bytes.get(i + 2));
        if !keep_percent && (!(0x20..=0x7e).contains(&b) || UNSAFE.contains(&b)) {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        } else {
            out.push(b as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples_encode_and_decode() {
        for (plain, wire) in [
            ("2024-05-01 10:00:00", "2024-05-01%2010%3A00%3A00"),
            ("::1", "%3A%3A1"),
            ("spandsp::txfaxresult", "spandsp%3A%3Atxfaxresult"),
            ("+1 555 0199", "%2B1%20555%200199"),
            ("+OK\n", "%2BOK%0A"),
            ("ACME's FS, Inc.", "ACME's%20FS,%20Inc."),
            ("Société", "Soci%C3%A9t%C3%A9"),
            ("a!$'()*,-./_~z", "a!$'()*,-./_~z"),
        ] {
            assert_eq!(encode(plain), wire, "{plain:?}");
            assert_eq!(decode(wire), plain, "{wire:?}");
        }
    }

    #[test]
    fn decoding_accepts_lowercase_and_leaves_broken_escapes() {
        assert_eq!(decode("%3a%2b"), ":+");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(decode("%FF"), "\u{FFFD}");
    }

    #[test]
    fn an_uppercase_escape_already_in_a_value_is_copied() {
        assert_eq!(encode("%41%4a"), "%41%254a");
    }
}
