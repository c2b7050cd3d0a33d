//! Phone numbers and the texts that travel with them: normalisation to E.164 at the edge
//! (Kazoo's default converters), the deny list of premium-rate and special-service prefixes,
//! and the checks on names and identities that reach a media engine, a mail header or a file
//! name (no control characters, bounded length).

/// A callflow number as faxd's API stores it: short extensions (fewer than 7 digits) as they
/// are, anything else in E.164; `None` for what is not a number (feature codes, `no_match`).
pub fn callflow_number(raw: &str) -> Option<String> {
    if !raw.is_empty() && raw.len() < 7 && raw.bytes().all(|b| b.is_ascii_digit()) {
        Some(raw.to_string())
    } else {
        normalize(raw)
    }
}

/// Normalises a dialled number to E.164 (`+<digits>`), or `None` when it is not a routable
/// number: `+…` is kept, 10-digit NANP gets `+1`, 11 digits starting with 1 get `+`,
/// `011…`/`00…` become `+…`, other numbers of 8 to 15 digits starting 2-9 get `+`.
/// Spaces, dashes, dots and parentheses are ignored.
pub fn normalize(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    let plus = trimmed.starts_with('+');
    let digits: String = trimmed
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .skip(usize::from(plus))
        .collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let e164 = if plus {
        digits
    } else if let Some(rest) = digits.strip_prefix("011") {
        rest.to_string()
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_string()
    } else if digits.len() == 10 && matches!(digits.as_bytes()[0], b'2'..=b'9') {
        format!("1{digits}")
    } else if (digits.len() == 11 && digits.starts_with('1'))
        || digits.len() >= 8 && matches!(digits.as_bytes()[0], b'2'..=b'9')
    {
        digits
    } else {
        return None;
    };
    (8..=15)
        .contains(&e164.len())
        .then(|| format!("+{e164}"))
        .filter(|n| !n[1..].starts_with('0'))
}

/// Why a number or a caller text is refused; `field` is the API field it came in.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("{field}: '{value}' is not a valid number (E.164 or a national number)")]
    Invalid { field: String, value: String },
    #[error("{field}: {value} is a premium-rate or special-service number (prefix {prefix})")]
    Denied {
        field: String,
        value: String,
        prefix: String,
    },
    #[error("{field}: {value} is not a number of this account")]
    NotOwned { field: String, value: String },
    #[error("{field}: control characters are not allowed")]
    ControlCharacters { field: String, value: String },
    #[error("{field}: at most {max} characters")]
    TooLong {
        field: String,
        value: String,
        max: usize,
    },
    #[error("{field}: only digits, '+' and spaces are allowed (T.30 identity)")]
    BadIdentity { field: String, value: String },
}

impl NumberError {
    /// The API field the value came in.
    pub fn field(&self) -> &str {
        match self {
            NumberError::Invalid { field, .. }
            | NumberError::Denied { field, .. }
            | NumberError::NotOwned { field, .. }
            | NumberError::ControlCharacters { field, .. }
            | NumberError::TooLong { field, .. }
            | NumberError::BadIdentity { field, .. } => field,
        }
    }

    /// The validation rule that failed (the key under the field in Kazoo's error envelope).
    pub fn rule(&self) -> &'static str {
        match self {
            NumberError::Invalid { .. } => "invalid",
            NumberError::Denied { .. } => "denied",
            NumberError::NotOwned { .. } => "not_owned",
            NumberError::ControlCharacters { .. } => "control_characters",
            NumberError::TooLong { .. } => "maxLength",
            NumberError::BadIdentity { .. } => "pattern",
        }
    }

    /// The refused value (control characters shown escaped).
    pub fn cause(&self) -> String {
        match self {
            NumberError::Invalid { value, .. }
            | NumberError::Denied { value, .. }
            | NumberError::NotOwned { value, .. }
            | NumberError::ControlCharacters { value, .. }
            | NumberError::TooLong { value, .. }
            | NumberError::BadIdentity { value, .. } => value.escape_debug().to_string(),
        }
    }

    /// The human message, without the field name.
    pub fn message(&self) -> String {
        let full = self.to_string();
        let prefix = format!("{}: ", self.field());
        full.strip_prefix(&prefix).unwrap_or(&full).to_string()
    }
}

/// The default deny list (`system_config.fax` `denied_number_prefixes`), matched against the
/// E.164 form: NANP premium rate (+1900, +1976) and N11 service codes dialled as area codes
/// (+1211 … +1911, 911 among them), UK premium and revenue-share ranges (+449, +4487, +4470),
/// Germany +49900, France +3389, Italy +39899, Spain +34803/+34806/+34807, Australia +61190,
/// and the high-cost global services (+870 Inmarsat, +881 satellite, +882/+883 international
/// networks, +979 international premium rate). Short codes (112, 911, 999, …) never
/// normalise: a number has at least 8 digits.
pub const DEFAULT_DENIED_PREFIXES: [&str; 25] = [
    "+1900", "+1976", "+1211", "+1311", "+1411", "+1511", "+1611", "+1711", "+1811", "+1911",
    "+449", "+4487", "+4470", "+49900", "+3389", "+39899", "+34803", "+34806", "+34807", "+61190",
    "+870", "+881", "+882", "+883", "+979",
];

/// A dialable number for `field`: normalised to E.164 and not under a denied prefix
/// (`denied` entries may be written with or without `+`, spaces ignored).
pub fn dialable<S: AsRef<str>>(
    field: &str,
    raw: &str,
    denied: &[S],
) -> Result<String, NumberError> {
    no_control(field, raw)?;
    let e164 = normalize(raw).ok_or_else(|| NumberError::Invalid {
        field: field.to_string(),
        value: raw.to_string(),
    })?;
    for p in denied {
        let digits: String = p.as_ref().chars().filter(char::is_ascii_digit).collect();
        if !digits.is_empty() && e164[1..].starts_with(&digits) {
            return Err(NumberError::Denied {
                field: field.to_string(),
                value: e164.clone(),
                prefix: format!("+{digits}"),
            });
        }
    }
    Ok(e164)
}

/// Rejects control characters (C0, DEL, C1) and the Unicode line and paragraph separators:
/// none may reach an originate command, a mail header or a file name.
pub fn no_control(field: &str, value: &str) -> Result<(), NumberError> {
    if value
        .chars()
        .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
    {
        return Err(NumberError::ControlCharacters {
            field: field.to_string(),
            value: value.to_string(),
        });
    }
    Ok(())
}

/// A caller text (name, page header): no control characters, at most `max` characters.
pub fn caller_text(field: &str, value: &str, max: usize) -> Result<(), NumberError> {
    no_control(field, value)?;
    if value.chars().count() > max {
        return Err(NumberError::TooLong {
            field: field.to_string(),
            value: value.to_string(),
            max,
        });
    }
    Ok(())
}

/// Longest caller name or page header accepted.
pub const MAX_CALLER_TEXT: usize = 128;
/// Longest T.30 identity (TSI/CSI): 20 characters.
pub const MAX_IDENTITY: usize = 20;

/// A T.30 identity (`fax_identity`, `fax_identity_number`): at most 20 of digits, `+` and
/// spaces (the characters T.30 allows in a TSI).
pub fn fax_identity(field: &str, value: &str) -> Result<(), NumberError> {
    caller_text(field, value, MAX_IDENTITY)?;
    if !value
        .chars()
        .all(|c| c.is_ascii_digit() || c == '+' || c == ' ')
    {
        return Err(NumberError::BadIdentity {
            field: field.to_string(),
            value: value.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_kazoo() {
        assert_eq!(normalize("+14155550100").as_deref(), Some("+14155550100"));
        assert_eq!(normalize("4155550100").as_deref(), Some("+14155550100"));
        assert_eq!(
            normalize("1 (415) 555-0100").as_deref(),
            Some("+14155550100")
        );
        assert_eq!(
            normalize("011442079460000").as_deref(),
            Some("+442079460000")
        );
        assert_eq!(
            normalize("00442079460000").as_deref(),
            Some("+442079460000")
        );
        assert_eq!(normalize("100"), None);
        assert_eq!(normalize("abc"), None);
        assert_eq!(normalize(""), None);
        assert_eq!(normalize("+1415\r\nX-Evil: y"), None);
        assert_eq!(normalize("ACME CORP"), None);
        assert_eq!(normalize("911"), None);
    }

    #[test]
    fn deny_list_matches_e164_prefixes() {
        let denied = DEFAULT_DENIED_PREFIXES;
        assert_eq!(
            dialable("to_number", "(415) 555-0100", &denied).as_deref(),
            Ok("+14155550100")
        );
        let e = dialable("to_number", "1-900-555-0100", &denied).unwrap_err();
        assert_eq!(e.rule(), "denied");
        assert_eq!(e.field(), "to_number");
        assert!(e.message().contains("+1900"), "{e}");
        // 911 as an area code and 911 as a short code are both refused.
        assert_eq!(
            dialable("to_number", "9115550100", &denied)
                .unwrap_err()
                .rule(),
            "denied"
        );
        assert_eq!(
            dialable("to_number", "911", &denied).unwrap_err().rule(),
            "invalid"
        );
        // Entries may be written without '+' or with spaces.
        assert_eq!(
            dialable("to_number", "+442079460000", &["44 20"])
                .unwrap_err()
                .rule(),
            "denied"
        );
        let e = dialable("from_number", "+1415\r\nX-Evil: y", &denied).unwrap_err();
        assert_eq!(e.rule(), "control_characters");
        assert_eq!(e.cause(), "+1415\\r\\nX-Evil: y");
    }

    #[test]
    fn caller_texts_and_identities() {
        assert!(caller_text("from_name", "ACME, Inc.", MAX_CALLER_TEXT).is_ok());
        assert_eq!(
            caller_text("from_name", "A\u{0}B", 128).unwrap_err().rule(),
            "control_characters"
        );
        assert_eq!(
            caller_text("fax_header", "A\u{2028}B", 128)
                .unwrap_err()
                .rule(),
            "control_characters"
        );
        assert_eq!(
            caller_text("fax_header", &"é".repeat(129), 128)
                .unwrap_err()
                .rule(),
            "maxLength"
        );
        assert!(fax_identity("fax_identity", "+1 415 555 0100").is_ok());
        assert_eq!(
            fax_identity("fax_identity", "ACME}{x=y")
                .unwrap_err()
                .rule(),
            "pattern"
        );
        assert_eq!(
            fax_identity("fax_identity", &"1".repeat(21))
                .unwrap_err()
                .rule(),
            "maxLength"
        );
    }
}
