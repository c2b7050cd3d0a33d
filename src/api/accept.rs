//! Content negotiation for fax downloads: reads an `Accept` header with its q-values
//! (RFC 9110 §12.5.1) and says which rendition of a fax the client wants.

/// A rendition a fax download can be served as, chosen by `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    Pdf,
    Tiff,
}

/// What the `Accept` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    /// This rendition, and no other may stand in for it.
    Exactly(Wanted),
    /// Any type: the configured default format, with fallbacks.
    Default,
    /// Neither PDF nor TIFF is acceptable (406).
    Nothing,
}

/// One media range of an `Accept` header with its weight (0–1000, q × 1000).
struct Range<'a> {
    kind: &'a str,
    sub: &'a str,
    q: u16,
}

fn parse_q(v: &str) -> Option<u16> {
    // qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut milli: u16 = match int {
        "0" => 0,
        "1" => 1000,
        _ => return None,
    };
    for (i, b) in frac.bytes().enumerate() {
        milli += u16::from(b - b'0') * [100, 10, 1][i];
    }
    (milli <= 1000).then_some(milli)
}

fn ranges(accept: &str) -> impl Iterator<Item = Range<'_>> {
    accept.split(',').filter_map(|item| {
        let mut parts = item.split(';');
        let (kind, sub) = parts.next()?.trim().split_once('/')?;
        let mut q = 1000;
        for p in parts {
            if let Some((k, v)) = p.split_once('=')
                && k.trim().eq_ignore_ascii_case("q")
            {
                // A malformed weight makes the whole range unusable rather than preferred.
                q = parse_q(v.trim())?;
            }
        }
        Some(Range {
            kind: kind.trim(),
            sub: sub.trim(),
            q,
        })
    })
}

/// The weight `accept` gives to `kind/sub`: that of the most specific matching range
/// (`kind/sub`, then `kind/*`, then `*/*`), with its specificity; `None` when no range matches.
fn weight(accept: &str, kind: &str, sub: &str) -> Option<(u8, u16)> {
    let mut best: Option<(u8, u16)> = None;
    for r in ranges(accept) {
        let specificity = if r.kind.eq_ignore_ascii_case(kind) && r.sub.eq_ignore_ascii_case(sub) {
            2
        } else if r.kind.eq_ignore_ascii_case(kind) && r.sub == "*" {
            1
        } else if r.kind == "*" && r.sub == "*" {
            0
        } else {
            continue;
        };
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, r.q));
        }
    }
    best
}

/// The weight (0–1000) `accept` gives `kind/sub` when it names that type outright (not
/// through a wildcard).
pub fn named_weight(accept: &str, kind: &str, sub: &str) -> Option<u16> {
    weight(accept, kind, sub).and_then(|(specificity, q)| (specificity == 2).then_some(q))
}

/// Reads an `Accept` header (absent or without a media range: `*/*`). A type named outright (`application/pdf`,
/// `application/*`, `image/tiff`, `image/*`) with a weight above zero wins over the wildcard
/// unless the wildcard weighs more; between PDF and TIFF the heavier wins, PDF on a tie.
pub fn negotiate(accept: Option<&str>) -> Negotiated {
    // A header with no media range in it says nothing: serve the default.
    let Some(accept) = accept.filter(|a| ranges(a).next().is_some()) else {
        return Negotiated::Default;
    };
    let any = ranges(accept)
        .filter(|r| r.kind == "*" && r.sub == "*")
        .map(|r| r.q)
        .max()
        .unwrap_or(0);
    let named = |kind, sub| match weight(accept, kind, sub) {
        Some((s, q)) if s > 0 => q,
        _ => 0,
    };
    let pdf = named("application", "pdf");
    let tiff = named("image", "tiff");
    let (best, q) = if tiff > pdf {
        (Wanted::Tiff, tiff)
    } else {
        (Wanted::Pdf, pdf)
    };
    if q > 0 && q >= any {
        Negotiated::Exactly(best)
    } else if any > 0 {
        Negotiated::Default
    } else {
        Negotiated::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_empty_and_wildcard_ask_for_the_default() {
        assert_eq!(negotiate(None), Negotiated::Default);
        assert_eq!(negotiate(Some("  ")), Negotiated::Default);
        assert_eq!(negotiate(Some("*/*")), Negotiated::Default);
        // A browser's navigation header.
        assert_eq!(
            negotiate(Some(
                "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
            )),
            Negotiated::Default
        );
    }

    #[test]
    fn a_named_type_is_served_exactly() {
        assert_eq!(
            negotiate(Some("image/tiff")),
            Negotiated::Exactly(Wanted::Tiff)
        );
        assert_eq!(
            negotiate(Some("Application/PDF")),
            Negotiated::Exactly(Wanted::Pdf)
        );
        assert_eq!(
            negotiate(Some("image/*")),
            Negotiated::Exactly(Wanted::Tiff)
        );
        assert_eq!(
            negotiate(Some("application/*;q=0.5")),
            Negotiated::Exactly(Wanted::Pdf)
        );
    }

    #[test]
    fn q_values_decide_between_pdf_and_tiff() {
        assert_eq!(
            negotiate(Some("application/pdf;q=0.2, image/tiff;q=0.9")),
            Negotiated::Exactly(Wanted::Tiff)
        );
        assert_eq!(
            negotiate(Some("image/tiff;q=0.5, application/pdf")),
            Negotiated::Exactly(Wanted::Pdf)
        );
        // q=0 means "not acceptable", however early it comes.
        assert_eq!(
            negotiate(Some("application/pdf;q=0, image/tiff;q=0.1")),
            Negotiated::Exactly(Wanted::Tiff)
        );
        // A tie goes to PDF.
        assert_eq!(
            negotiate(Some("image/tiff;q=0.7, application/pdf;q=0.7")),
            Negotiated::Exactly(Wanted::Pdf)
        );
        // The specific range outweighs the broad one of the same type.
        assert_eq!(
            negotiate(Some("image/*;q=1, image/tiff;q=0, application/pdf;q=0.3")),
            Negotiated::Exactly(Wanted::Pdf)
        );
    }

    #[test]
    fn a_heavier_wildcard_leaves_the_choice_to_the_server() {
        assert_eq!(
            negotiate(Some("image/tiff;q=0.1, */*")),
            Negotiated::Default
        );
        assert_eq!(
            negotiate(Some("image/tiff, */*;q=0.1")),
            Negotiated::Exactly(Wanted::Tiff)
        );
    }

    #[test]
    fn nothing_we_serve_is_not_acceptable() {
        assert_eq!(negotiate(Some("text/html")), Negotiated::Nothing);
        assert_eq!(
            negotiate(Some("application/pdf;q=0, image/tiff;q=0")),
            Negotiated::Nothing
        );
        assert_eq!(negotiate(Some("*/*;q=0")), Negotiated::Nothing);
    }

    #[test]
    fn malformed_weights_drop_their_range() {
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("1.5"), None);
        assert_eq!(parse_q("0.1234"), None);
        assert_eq!(parse_q("abc"), None);
        assert_eq!(
            negotiate(Some("application/pdf;q=high, image/tiff;q=0.4")),
            Negotiated::Exactly(Wanted::Tiff)
        );
        assert_eq!(negotiate(Some("garbage")), Negotiated::Default);
    }
}
