//! JSON-schema validation of request documents (the draft-4 subset the schemas in
//! `priv/couchdb/schemas/` use), producing Kazoo's error shape
//! `{"<field.path>": {"<rule>": {"message", "target"?, "value"?}}}` and filling `default`s.
//!
//! Non-strict like Kazoo's default: a string that converts to the integer/number/boolean the
//! schema wants is converted instead of refused.
//!
//! One keyword is faxd's own: `maxBytes` on a schema's top level bounds the whole stored
//! document (compact JSON, defaults filled), unknown keys included; over it the error is
//! `{"document": {"maxBytes": {"message", "target"}}}`.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::{Map, Value, json};

/// Keeps only the public fields of client input: drops `id`, `_*` and `pvt_*` keys.
pub fn client_fields(data: Map<String, Value>) -> Map<String, Value> {
    data.into_iter()
        .filter(|(k, _)| !k.starts_with("pvt_") && !k.starts_with('_') && k != "id")
        .collect()
}

/// The schemas, embedded.
pub fn schema(name: &str) -> Option<&'static Value> {
    static SCHEMAS: OnceLock<HashMap<&'static str, Value>> = OnceLock::new();
    SCHEMAS
        .get_or_init(|| {
            let sources: [(&str, &str); 6] = [
                (
                    "accounts",
                    include_str!("../priv/couchdb/schemas/accounts.json"),
                ),
                ("users", include_str!("../priv/couchdb/schemas/users.json")),
                (
                    "callflows",
                    include_str!("../priv/couchdb/schemas/callflows.json"),
                ),
                ("faxbox", include_str!("../priv/couchdb/schemas/faxbox.json")),
                ("faxes", include_str!("../priv/couchdb/schemas/faxes.json")),
                (
                    "system_config.fax",
                    include_str!("../priv/couchdb/schemas/system_config.fax.json"),
                ),
            ];
            sources
                .into_iter()
                .filter_map(|(n, src)| match serde_json::from_str(src) {
                    Ok(v) => Some((n, v)),
                    Err(e) => {
                        tracing::error!(schema = n, error = %e, "embedded schema is not valid JSON");
                        None
                    }
                })
                .collect()
        })
        .get(name)
}

/// Validates `doc` against the named schema, filling defaults. `Err` holds the error map.
pub fn validate_named(name: &str, doc: &mut Value) -> Result<(), Value> {
    match schema(name) {
        Some(s) => validate(s, doc),
        None => Err(json!({"schema": {"not_found": {"message": format!("no schema {name}")}}})),
    }
}

/// Validates `doc` against `schema`, filling defaults. `Err` holds the error map.
pub fn validate(schema: &Value, doc: &mut Value) -> Result<(), Value> {
    let mut errors = Map::new();
    check(schema, doc, "", &mut errors);
    if let Some(max) = schema.get("maxBytes").and_then(Value::as_u64) {
        let size = serde_json::to_vec(doc)
            .map(|b| b.len() as u64)
            .unwrap_or(u64::MAX);
        if size > max {
            add(
                &mut errors,
                "",
                "maxBytes",
                json!({"message": format!("Document must not be more than {max} bytes"),
                       "target": max, "value": size}),
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Value::Object(errors))
    }
}

fn add(errors: &mut Map<String, Value>, path: &str, rule: &str, detail: Value) {
    let key = if path.is_empty() {
        "document".to_string()
    } else {
        path.to_string()
    };
    let entry = errors.entry(key).or_insert_with(|| json!({}));
    if let Some(m) = entry.as_object_mut() {
        m.insert(rule.to_string(), detail);
    }
}

fn join(path: &str, key: &str) -> String {
    let key = key.replace('.', "%2E");
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn matches_type(t: &str, v: &Value) -> bool {
    match t {
        "number" => v.is_number(),
        "any" => true,
        other => type_name(v) == other,
    }
}

/// Non-strict conversion of a string to the wanted scalar type.
fn coerce(t: &str, v: &Value) -> Option<Value> {
    let s = v.as_str()?;
    match t {
        "integer" => s.trim().parse::<i64>().ok().map(Value::from),
        "number" => s.trim().parse::<f64>().ok().map(Value::from),
        "boolean" => match s.trim() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        _ => None,
    }
}

fn regex_matches(pattern: &str, s: &str) -> Option<bool> {
    static CACHE: OnceLock<Mutex<HashMap<String, regex::Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut cache = cache.lock().ok()?;
    if !cache.contains_key(pattern) {
        let re = regex::Regex::new(pattern).ok()?;
        cache.insert(pattern.to_string(), re);
    }
    cache.get(pattern).map(|re| re.is_match(s))
}

fn check(schema: &Value, v: &mut Value, path: &str, errors: &mut Map<String, Value>) {
    let Some(schema) = schema.as_object() else {
        return;
    };
    // type
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !types.is_empty() && !types.iter().any(|t| matches_type(t, v)) {
            match types.iter().find_map(|t| coerce(t, v)) {
                Some(c) => *v = c,
                None => {
                    add(
                        errors,
                        path,
                        "type",
                        json!({
                            "message": format!("Value did not match type(s): {}", types.join(", ")),
                            "target": types.join(","),
                            "value": v.clone(),
                        }),
                    );
                    return;
                }
            }
        }
    }
    if let Some(Value::Array(options)) = schema.get("enum")
        && !options.contains(v)
    {
        add(
            errors,
            path,
            "enum",
            json!({"message": "Value not found in enumerated list of values",
                   "target": options, "value": v.clone()}),
        );
    }
    match v {
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                add(
                    errors,
                    path,
                    "minLength",
                    json!({"message": format!("String must be at least {min} characters"),
                           "target": min, "value": s.clone()}),
                );
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                add(
                    errors,
                    path,
                    "maxLength",
                    json!({"message": format!("String must not be more than {max} characters"),
                           "target": max, "value": s.clone()}),
                );
            }
            if let Some(p) = schema.get("pattern").and_then(Value::as_str)
                && regex_matches(p, s) == Some(false)
            {
                add(
                    errors,
                    path,
                    "pattern",
                    json!({"message": format!("Failed to match pattern '{p}'"),
                           "target": p, "value": s.clone()}),
                );
            }
            if schema.get("format").and_then(Value::as_str) == Some("email") {
                let ok = s
                    .split_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.contains('@'));
                if !ok {
                    add(
                        errors,
                        path,
                        "wrong_format",
                        json!({"message": "Field is not in the correct format",
                               "format": "email", "value": s.clone()}),
                    );
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && x < min
            {
                add(
                    errors,
                    path,
                    "minimum",
                    json!({"message": format!("Value must be at least {min}"),
                           "target": schema["minimum"], "value": n.clone()}),
                );
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && x > max
            {
                add(
                    errors,
                    path,
                    "maximum",
                    json!({"message": format!("Value must be at most {max}"),
                           "target": schema["maximum"], "value": n.clone()}),
                );
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && n < min
            {
                add(
                    errors,
                    path,
                    "minItems",
                    json!({"message": format!("The list must have at least {min} items"),
                           "target": min, "value": items.clone()}),
                );
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && n > max
            {
                add(
                    errors,
                    path,
                    "maxItems",
                    json!({"message": format!("The list is more than {max} items"),
                           "target": max, "value": items.clone()}),
                );
            }
            if schema.get("uniqueItems").and_then(Value::as_bool) == Some(true) {
                let dup = items
                    .iter()
                    .enumerate()
                    .any(|(i, a)| items[i + 1..].contains(a));
                if dup {
                    add(
                        errors,
                        path,
                        "uniqueItems",
                        json!({"message": "List of items is not unique", "value": items.clone()}),
                    );
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    check(item_schema, item, &join(path, &i.to_string()), errors);
                }
            }
        }
        Value::Object(obj) => check_object(schema, obj, path, errors),
        _ => {}
    }
}

fn check_object(
    schema: &Map<String, Value>,
    obj: &mut Map<String, Value>,
    path: &str,
    errors: &mut Map<String, Value>,
) {
    let props = schema.get("properties").and_then(Value::as_object);
    if let Some(props) = props {
        for (key, prop) in props {
            if !obj.contains_key(key)
                && let Some(d) = prop.get("default")
            {
                obj.insert(key.clone(), d.clone());
            }
        }
    }
    if let Some(Value::Array(required)) = schema.get("required") {
        for key in required.iter().filter_map(Value::as_str) {
            if !obj.contains_key(key) {
                add(
                    errors,
                    &join(path, key),
                    "required",
                    json!({"message": "Field is required but missing", "value": key}),
                );
            }
        }
    }
    for (key, value) in obj.iter_mut() {
        match props.and_then(|p| p.get(key)) {
            Some(prop) => check(prop, value, &join(path, key), errors),
            None => match schema.get("additionalProperties") {
                Some(Value::Bool(false)) => add(
                    errors,
                    &join(path, key),
                    "additionalProperties",
                    json!({"message": "Field is not allowed"}),
                ),
                Some(extra @ Value::Object(_)) => check(extra, value, &join(path, key), errors),
                _ => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_kazoo_shape_and_defaults_fill() {
        let s = json!({"type": "object", "required": ["first_name"], "properties": {
            "first_name": {"type": "string", "minLength": 1},
            "priv_level": {"type": "string", "enum": ["user", "admin"], "default": "user"},
            "retries": {"type": "integer", "minimum": 0, "maximum": 4},
            "caller_id": {"type": "object", "properties": {
                "number": {"type": "string", "pattern": "^\\+?[0-9]+$"}}}
        }});
        let mut doc = json!({"retries": "3"});
        let e = validate(&s, &mut doc).unwrap_err();
        assert_eq!(
            e["first_name"]["required"]["message"],
            "Field is required but missing"
        );
        assert_eq!(doc["retries"], 3);
        assert_eq!(doc["priv_level"], "user");
        let mut doc = json!({"first_name": 123, "retries": 9, "caller_id": {"number": "x"}});
        let e = validate(&s, &mut doc).unwrap_err();
        assert_eq!(e["first_name"]["type"]["target"], "string");
        assert_eq!(e["retries"]["maximum"]["target"], 4);
        assert!(e["caller_id.number"]["pattern"].is_object());
        let mut ok = json!({"first_name": "a"});
        assert!(validate(&s, &mut ok).is_ok());
    }

    #[test]
    fn max_bytes_bounds_the_whole_document_unknown_keys_included() {
        let s = json!({"type": "object", "maxBytes": 100, "properties": {
            "name": {"type": "string", "maxLength": 10}}});
        let mut ok = json!({"name": "a", "extra": "x".repeat(50)});
        assert!(validate(&s, &mut ok).is_ok());
        let mut big = json!({"name": "a", "extra": "x".repeat(200)});
        let e = validate(&s, &mut big).unwrap_err();
        assert_eq!(e["document"]["maxBytes"]["target"], 100);
    }

    #[test]
    fn shipped_schemas_bound_every_string_and_list() {
        fn walk(name: &str, path: &str, s: &Value) {
            match s.get("type").and_then(Value::as_str) {
                Some("string") if s.get("enum").is_none() => assert!(
                    s.get("maxLength").is_some(),
                    "{name}: {path} is an unbounded string"
                ),
                Some("array") => assert!(
                    s.get("maxItems").is_some(),
                    "{name}: {path} is an unbounded list"
                ),
                _ => {}
            }
            if let Some(p) = s.get("properties").and_then(Value::as_object) {
                for (k, v) in p {
                    walk(name, &format!("{path}.{k}"), v);
                }
            }
            if let Some(i) = s.get("items") {
                walk(name, &format!("{path}[]"), i);
            }
        }
        for n in ["accounts", "users", "callflows", "faxbox", "faxes"] {
            let s = schema(n).unwrap();
            assert!(s.get("maxBytes").and_then(Value::as_u64).is_some(), "{n}");
            walk(n, n, s);
        }
    }

    #[test]
    fn shipped_schemas_parse() {
        for n in [
            "accounts",
            "users",
            "callflows",
            "faxbox",
            "faxes",
            "system_config.fax",
        ] {
            assert!(schema(n).is_some(), "{n}");
        }
    }
}
