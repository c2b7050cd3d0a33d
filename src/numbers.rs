//! Phone numbers: normalisation to E.164 at the edge (Kazoo's default converters).

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

#[cfg(test)]
mod tests {
    use super::normalize;

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
    }
}
