//! Notification templates: the built-in ones from `priv/templates/` (subject, text and HTML
//! per event), or an account's own stored in its database as `notify_template_<event>`
//! (`subject`, `text`, `html`). `{{name}}` is replaced by a value; HTML values are escaped,
//! a subject never carries a line break, and text line endings are normalised to CRLF.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Event;

/// A template: subject, plain text, HTML (empty by default).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Template {
    pub subject: String,
    pub text: String,
    pub html: String,
}

macro_rules! builtin {
    ($name:literal) => {
        (
            include_str!(concat!("../../priv/templates/", $name, ".subject.txt")),
            include_str!(concat!("../../priv/templates/", $name, ".text.txt")),
            include_str!(concat!("../../priv/templates/", $name, ".html")),
        )
    };
}

/// The built-in template of an event; `None` for an event that is not mailed.
pub fn builtin(event: Event) -> Option<Template> {
    let (s, t, h) = match event {
        Event::OutboundSent => builtin!("outbound_sent"),
        Event::OutboundFailed => builtin!("outbound_failed"),
        Event::InboundReceived => builtin!("inbound_received"),
        Event::InboundFailed => builtin!("inbound_failed"),
        Event::SmtpError => builtin!("smtp_error"),
        Event::OutboundQueued | Event::OutboundSending | Event::OutboundPage => return None,
    };
    Some(Template {
        subject: s.trim().to_string(),
        text: t.to_string(),
        html: h.to_string(),
    })
}

/// The id of an account's own template of an event in its account database.
pub fn override_id(event: Event) -> String {
    format!("notify_template_{}", event.as_str())
}

/// The template of an event: the account's (`override_doc`, each part it has) over the
/// built-in one; `None` for an event that is not mailed.
pub fn select(event: Event, override_doc: Option<&Value>) -> Option<Template> {
    let mut t = builtin(event)?;
    if let Some(doc) = override_doc {
        let part = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_string);
        if let Some(s) = part("subject") {
            t.subject = s;
        }
        if let Some(s) = part("text") {
            t.text = s;
        }
        if let Some(s) = part("html") {
            t.html = s;
        }
    }
    Some(t)
}

/// The values a template may use.
pub type Values = BTreeMap<&'static str, String>;

/// The names every event's template may use as `{{name}}`.
const COMMON_NAMES: [&str; 9] = [
    "date",
    "fax_id",
    "faxbox_name",
    "caller_id",
    "callee_id",
    "pages",
    "attempts",
    "remote_station_id",
    "error",
];

/// The `{{name}}`s an event's template may use (what [`super::deliver::values`] fills in).
pub fn names(event: Event) -> Vec<&'static str> {
    let mut v = COMMON_NAMES.to_vec();
    if event == Event::SmtpError {
        v.extend(["to", "number", "errors"]);
    }
    v
}

/// The `{{name}}`s of `src` that `event` does not fill in (each once, in order).
pub fn unknown_names(event: Event, src: &str) -> Vec<String> {
    let known = names(event);
    let mut out: Vec<String> = Vec::new();
    let mut rest = src;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            break;
        };
        let name = after[..close].trim();
        if !known.contains(&name) && !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
        rest = &after[close + 2..];
    }
    out
}

/// A template filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Template {
    pub fn render(&self, values: &Values) -> Rendered {
        Rendered {
            subject: header_safe(&fill(&self.subject, values, |v| v.to_string())),
            text: crlf(&fill(&self.text, values, |v| v.to_string())),
            html: crlf(&fill(&self.html, values, html_escape)),
        }
    }
}

/// Replaces each `{{name}}` by its value (through `esc`); unknown names become empty.
fn fill(src: &str, values: &Values, esc: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        match after.find("}}") {
            Some(close) => {
                let name = after[..close].trim();
                if let Some(v) = values.get(name) {
                    out.push_str(&esc(v));
                }
                rest = &after[close + 2..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// A header value from user data: control characters (CR and LF included) become spaces.
pub fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// Every line ending (CRLF, bare LF, bare CR) as CRLF.
pub fn crlf(s: &str) -> String {
    let unified = s.replace("\r\n", "\n").replace('\r', "\n");
    unified.replace('\n', "\r\n")
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_has_all_three_parts_and_they_fill_in() {
        for e in Event::MAILED {
            let t = builtin(e).expect("a mailed event's template");
            assert!(!t.subject.is_empty() && !t.text.is_empty(), "{e:?}");
            assert!(t.html.contains("<html>"), "{e:?}");
        }
        let mut v = Values::new();
        v.insert("callee_id", "+1555\r\nBcc: x@y <b>".into());
        let r = builtin(Event::OutboundSent).expect("built in").render(&v);
        assert_eq!(r.subject, "Fax has been sent to +1555  Bcc: x@y <b>");
        // HTML values are escaped; every line ending of a part is CRLF.
        assert!(r.html.contains("Bcc: x@y &lt;b&gt;"), "{}", r.html);
        assert!(!r.html.contains("x@y <b>"), "{}", r.html);
        for part in [&r.text, &r.html] {
            assert!(!part.replace("\r\n", "").contains(['\r', '\n']), "{part}");
        }
    }

    #[test]
    fn the_names_a_template_may_use_are_the_ones_filled_in() {
        let doc = serde_json::json!({"_id": "f", "errors": ["x"], "to": "1@x"});
        for e in Event::MAILED {
            let filled: Vec<&str> = super::super::deliver::values(e, &doc, None)
                .keys()
                .copied()
                .collect();
            let mut named = names(e);
            named.sort_unstable();
            assert_eq!(filled, named, "{e:?}");
        }
        assert_eq!(
            unknown_names(
                Event::OutboundSent,
                "{{ pages }} {{nope}} {{nope}} {{errors}}"
            ),
            ["nope", "errors"]
        );
    }

    #[test]
    fn an_account_template_replaces_the_parts_it_has() {
        let doc = serde_json::json!({"subject": "Sent {{callee_id}} {{nope}}"});
        let t = select(Event::OutboundSent, Some(&doc)).expect("mailed");
        assert_eq!(t.text, builtin(Event::OutboundSent).expect("built in").text);
        let mut v = Values::new();
        v.insert("callee_id", "+1".into());
        assert_eq!(t.render(&v).subject, "Sent +1");
        assert_eq!(fill("a {{x", &v, |s| s.to_string()), "a {{x");
    }
}
