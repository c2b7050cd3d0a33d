//! Listing filters: the query-string filters of Kazoo's crossbar (`filter_<path>`,
//! `filter_not_<path>`, `has_key`, `key_missing`, `has_value`, `value_missing`,
//! `modified_from`, `modified_to`) and the listing order (`ascending` / `descending`), as a
//! pure predicate over stored documents.
//!
//! Semantics (crossbar 4.3): a `filter_<path>=v` keeps a document whose value at the dotted
//! `path`, read as text (a missing value reads as the empty text), equals `v`, or is a member
//! of `v` when `v` is a JSON list, or equals `v` decoded as JSON; `filter_not_<path>` keeps
//! the others (so a document without the field passes it). `has_key` needs the key present,
//! `has_value` needs a value that is not empty (`""`, `0`, `null`, `[]`, `{}`, `"0"`,
//! `"NULL"`, `"undefined"` and `false` are empty); `key_missing` and `value_missing` are their
//! negations. `modified_from`/`modified_to` bound `pvt_modified` (inclusive). Every filter
//! must pass.

use std::collections::HashMap;

use serde_json::Value;

/// One filter of a listing request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// `filter_<path>=<value>`
    Equals(Vec<String>, String),
    /// `filter_not_<path>=<value>`
    NotEquals(Vec<String>, String),
    /// `has_key=<path>`
    HasKey(Vec<String>),
    /// `key_missing=<path>`
    KeyMissing(Vec<String>),
    /// `has_value=<path>`
    HasValue(Vec<String>),
    /// `value_missing=<path>`
    ValueMissing(Vec<String>),
    /// `modified_from=<gregorian seconds>`
    ModifiedFrom(i64),
    /// `modified_to=<gregorian seconds>`
    ModifiedTo(i64),
}

/// Why a filter parameter was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("{0} is not an integer (gregorian seconds)")]
    NotGregorian(&'static str),
    #[error("{0} names no field")]
    NoPath(String),
}

impl FilterError {
    /// The query parameter the error is about.
    pub fn parameter(&self) -> &str {
        match self {
            FilterError::NotGregorian(p) => p,
            FilterError::NoPath(p) => p,
        }
    }
}

/// Listing order: Kazoo lists newest first unless `ascending=true` or `descending=false`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    #[default]
    Descending,
    Ascending,
}

impl Direction {
    pub fn from_query(q: &HashMap<String, String>) -> Self {
        let is = |k: &str, v: &str| q.get(k).is_some_and(|x| x.eq_ignore_ascii_case(v));
        if is("descending", "true") {
            Direction::Descending
        } else if is("ascending", "true") || is("descending", "false") {
            Direction::Ascending
        } else {
            Direction::Descending
        }
    }
}

/// The filters of one request (all must pass); empty when the request has none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters(Vec<Filter>);

fn path_of(param: &str, dotted: &str) -> Result<Vec<String>, FilterError> {
    if dotted.is_empty() || dotted.split('.').any(str::is_empty) {
        return Err(FilterError::NoPath(param.to_string()));
    }
    Ok(dotted.split('.').map(str::to_string).collect())
}

impl Filters {
    /// The filters named by a query string; other parameters are not filters and are ignored.
    pub fn from_query(q: &HashMap<String, String>) -> Result<Self, FilterError> {
        let mut keys: Vec<&String> = q.keys().collect();
        keys.sort();
        let mut out = Vec::new();
        for k in keys {
            let v = &q[k];
            let greg = |name: &'static str| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| FilterError::NotGregorian(name))
            };
            let f = if let Some(p) = k.strip_prefix("filter_not_") {
                Filter::NotEquals(path_of(k, p)?, v.clone())
            } else if let Some(p) = k.strip_prefix("filter_") {
                Filter::Equals(path_of(k, p)?, v.clone())
            } else {
                match k.as_str() {
                    "has_key" => Filter::HasKey(path_of(k, v)?),
                    "key_missing" => Filter::KeyMissing(path_of(k, v)?),
                    "has_value" => Filter::HasValue(path_of(k, v)?),
                    "value_missing" => Filter::ValueMissing(path_of(k, v)?),
                    "modified_from" => Filter::ModifiedFrom(greg("modified_from")?),
                    "modified_to" => Filter::ModifiedTo(greg("modified_to")?),
                    _ => continue,
                }
            };
            out.push(f);
        }
        Ok(Filters(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a stored document passes every filter.
    pub fn keeps(&self, doc: &Value) -> bool {
        self.0.iter().all(|f| passes(f, doc))
    }
}

fn lookup<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |v, k| v.as_object()?.get(k))
}

/// A value as crossbar reads it for comparison: text as is, numbers and booleans as written,
/// missing or null as the empty text; `None` for lists and objects (they equal nothing).
fn as_text(v: Option<&Value>) -> Option<String> {
    match v {
        None | Some(Value::Null) => Some(String::new()),
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::Bool(b)) => Some(b.to_string()),
        Some(Value::Array(_)) | Some(Value::Object(_)) => None,
    }
}

fn equals(doc: &Value, path: &[String], want: &str) -> bool {
    let Some(have) = as_text(lookup(doc, path)) else {
        return false;
    };
    if have == want {
        return true;
    }
    match serde_json::from_str::<Value>(want) {
        Ok(Value::Array(items)) => items.iter().any(|x| x.as_str() == Some(have.as_str())),
        Ok(Value::String(s)) => s == have,
        _ => false,
    }
}

fn is_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => true,
        Some(Value::Bool(true)) => false,
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::String(s)) => matches!(s.as_str(), "" | "0" | "NULL" | "undefined"),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
    }
}

fn passes(f: &Filter, doc: &Value) -> bool {
    let modified = || doc.get("pvt_modified").and_then(Value::as_i64);
    match f {
        Filter::Equals(p, v) => equals(doc, p, v),
        Filter::NotEquals(p, v) => !equals(doc, p, v),
        Filter::HasKey(p) => lookup(doc, p).is_some(),
        Filter::KeyMissing(p) => lookup(doc, p).is_none(),
        Filter::HasValue(p) => !is_empty(lookup(doc, p)),
        Filter::ValueMissing(p) => is_empty(lookup(doc, p)),
        Filter::ModifiedFrom(t) => modified().is_some_and(|m| m >= *t),
        Filter::ModifiedTo(t) => modified().is_some_and(|m| m <= *t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filters(pairs: &[(&str, &str)]) -> Filters {
        let q = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Filters::from_query(&q).expect("filters")
    }

    fn doc() -> Value {
        json!({
            "to_number": "+14155550100", "attempts": 2, "retries": 0, "urgent": false,
            "tx_result": {"success": true, "result_text": ""},
            "notifications": {"email": {"send_to": ["a@example.net"]}},
            "note": null, "pvt_modified": 1000,
        })
    }

    #[test]
    fn equals_reads_values_as_text_and_json_lists() {
        let d = doc();
        assert!(filters(&[("filter_to_number", "+14155550100")]).keeps(&d));
        assert!(!filters(&[("filter_to_number", "+14155550101")]).keeps(&d));
        assert!(filters(&[("filter_attempts", "2")]).keeps(&d));
        assert!(filters(&[("filter_tx_result.success", "true")]).keeps(&d));
        assert!(filters(&[("filter_to_number", r#"["+1999","+14155550100"]"#)]).keeps(&d));
        assert!(!filters(&[("filter_to_number", r#"["+1999"]"#)]).keeps(&d));
        assert!(filters(&[("filter_to_number", r#""+14155550100""#)]).keeps(&d));
        // A missing field reads as the empty text.
        assert!(!filters(&[("filter_nothing", "x")]).keeps(&d));
        assert!(filters(&[("filter_nothing", "")]).keeps(&d));
        // Lists and objects equal nothing.
        assert!(!filters(&[("filter_tx_result", "x")]).keeps(&d));
    }

    #[test]
    fn not_is_a_negation_not_a_field_named_not() {
        let d = doc();
        assert!(!filters(&[("filter_not_to_number", "+14155550100")]).keeps(&d));
        assert!(filters(&[("filter_not_to_number", "+14155550101")]).keeps(&d));
        assert!(filters(&[("filter_not_missing_field", "x")]).keeps(&d));
        assert!(!filters(&[("filter_not_attempts", r#"["1","2"]"#)]).keeps(&d));
    }

    #[test]
    fn key_and_value_presence() {
        let d = doc();
        assert!(filters(&[("has_key", "tx_result.result_text")]).keeps(&d));
        assert!(filters(&[("has_key", "note")]).keeps(&d));
        assert!(!filters(&[("has_key", "tx_result.nope")]).keeps(&d));
        assert!(filters(&[("key_missing", "nope")]).keeps(&d));
        assert!(!filters(&[("key_missing", "to_number")]).keeps(&d));
        assert!(filters(&[("has_value", "notifications.email.send_to")]).keeps(&d));
        for empty in ["tx_result.result_text", "retries", "note", "urgent", "nope"] {
            assert!(!filters(&[("has_value", empty)]).keeps(&d), "{empty}");
            assert!(filters(&[("value_missing", empty)]).keeps(&d), "{empty}");
        }
        assert!(!filters(&[("value_missing", "attempts")]).keeps(&d));
    }

    #[test]
    fn modified_bounds_are_inclusive_and_all_filters_must_pass() {
        let d = doc();
        assert!(filters(&[("modified_from", "1000"), ("modified_to", "1000")]).keeps(&d));
        assert!(!filters(&[("modified_from", "1001")]).keeps(&d));
        assert!(!filters(&[("modified_to", "999")]).keeps(&d));
        assert!(!filters(&[("modified_from", "0")]).keeps(&json!({})));
        assert!(!filters(&[("filter_attempts", "2"), ("filter_not_attempts", "2")]).keeps(&d));
        assert!(filters(&[("page_size", "2"), ("auth_token", "x")]).is_empty());
    }

    #[test]
    fn bad_parameters_are_refused() {
        let q = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        assert_eq!(
            Filters::from_query(&q("modified_from", "yesterday")),
            Err(FilterError::NotGregorian("modified_from"))
        );
        assert!(Filters::from_query(&q("has_key", "")).is_err());
        assert!(Filters::from_query(&q("filter_", "x")).is_err());
        assert!(Filters::from_query(&q("filter_a..b", "x")).is_err());
    }

    #[test]
    fn direction_defaults_to_newest_first() {
        let q = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        assert_eq!(
            Direction::from_query(&HashMap::new()),
            Direction::Descending
        );
        assert_eq!(
            Direction::from_query(&q("ascending", "true")),
            Direction::Ascending
        );
        assert_eq!(
            Direction::from_query(&q("descending", "false")),
            Direction::Ascending
        );
        assert_eq!(
            Direction::from_query(&q("ascending", "false")),
            Direction::Descending
        );
    }
}
