//! `FaxConfig`: every key of the `system_config/fax` category, named verbatim, with its
//! default (the defaults also live in `priv/couchdb/schemas/system_config.fax.json`, and a test
//! keeps the two equal).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The `fax` configuration category. Unknown keys in a stored document are ignored here and
/// kept in the document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaxConfig {
    pub allow_all_addresses_when_empty: bool,
    pub allowed_content_types: Vec<Value>,
    pub default_compare_field: String,
    pub default_fax_extension: String,
    pub default_retry_count: u32,
    pub default_retry_period: u64,
    pub default_smtp_domain: String,
    pub delete_empty_faxes: bool,
    pub denied_number_prefixes: Vec<String>,
    pub denied_content_types: Vec<Value>,
    pub endpoint_timeout: u64,
    pub ensure_valid_caller_id: bool,
    pub fax_file_path: String,
    pub fax_settings: Map<String, Value>,
    pub file_cache_path: String,
    pub ignore_early_media: bool,
    pub image_min_size: String,
    pub image_size_cmd_format: String,
    pub inbound_t38_default: String,
    pub log_faxbox_errors: bool,
    pub max_inbound: u32,
    pub max_outbound: u32,
    pub max_storage_retry: u32,
    pub port: u16,
    pub report_anonymous_system_errors: bool,
    pub report_faxbox_system_errors: bool,
    pub report_smtp_errors: bool,
    pub reschedule: Map<String, Value>,
    pub serialize_outbound_numbers: bool,
    pub smtp_max_msg_size: u64,
    pub smtp_port: u16,
    pub smtp_sessions: u32,
    pub store_fax_pdf: bool,
    pub store_fax_tiff: bool,
    pub store_url_document: bool,
    pub wait_for_fax_timeout_ms: u64,
    pub workers: u32,
}

impl Default for FaxConfig {
    fn default() -> Self {
        let obj = |v: Value| match v {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        Self {
            allow_all_addresses_when_empty: false,
            allowed_content_types: vec![
                json!("application/pdf"),
                json!("image/tiff"),
                json!({"prefix": "image"}),
                json!({"prefix": "application/vnd.openxmlformats-officedocument."}),
                json!({"prefix": "application/vnd.oasis.opendocument."}),
                json!("application/msword"),
                json!("application/vnd.ms-excel"),
                json!("application/vnd.ms-powerpoint"),
            ],
            default_compare_field: "result_cause".into(),
            default_fax_extension: ".tiff".into(),
            default_retry_count: 3,
            default_retry_period: 300,
            default_smtp_domain: "fax.kazoo.io".into(),
            delete_empty_faxes: false,
            denied_number_prefixes: crate::numbers::DEFAULT_DENIED_PREFIXES
                .iter()
                .map(|p| p.to_string())
                .collect(),
            denied_content_types: vec![json!({"prefix": "image/"})],
            endpoint_timeout: 40,
            ensure_valid_caller_id: true,
            fax_file_path: "/tmp/".into(),
            fax_settings: obj(json!({
                "override_fax_identity": true,
                "override_callee_number": false
            })),
            file_cache_path: String::new(),
            ignore_early_media: false,
            image_min_size: "700x10".into(),
            image_size_cmd_format: "echo -n `identify -format \"%[fx:w]x%[fx:h]\" ~s`".into(),
            inbound_t38_default: "true".into(),
            log_faxbox_errors: true,
            max_inbound: 20,
            max_outbound: 10,
            max_storage_retry: 5,
            port: 30950,
            report_anonymous_system_errors: false,
            report_faxbox_system_errors: true,
            report_smtp_errors: true,
            reschedule: Map::new(),
            serialize_outbound_numbers: true,
            smtp_max_msg_size: 10_485_670,
            smtp_port: 19025,
            smtp_sessions: 50,
            store_fax_pdf: true,
            store_fax_tiff: true,
            store_url_document: true,
            wait_for_fax_timeout_ms: 3_600_000,
            workers: 50,
        }
    }
}

/// Errors in a stored `fax` configuration.
#[derive(Debug, thiserror::Error)]
pub enum FaxConfigError {
    #[error("unknown fax config key '{0}'")]
    UnknownKey(String),
    #[error("invalid value for fax config key '{key}': {reason}")]
    BadValue { key: String, reason: String },
}

impl FaxConfig {
    /// The config from a stored `system_config/fax` document: its `default` section, then the
    /// section named after this node on top (Kazoo's layout). Values of the wrong type are
    /// reported, never silently replaced.
    pub fn from_doc(doc: &Value, node: &str) -> Result<Self, FaxConfigError> {
        let mut merged = match serde_json::to_value(Self::default()) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        for section in ["default", node] {
            if let Some(Value::Object(values)) = doc.get(section) {
                for (k, v) in values {
                    if merged.contains_key(k) {
                        Self::check(k, v)?;
                        merged.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        serde_json::from_value(Value::Object(merged)).map_err(|e| FaxConfigError::BadValue {
            key: "?".into(),
            reason: e.to_string(),
        })
    }

    /// Checks one key/value pair against the field's type.
    pub fn check(key: &str, value: &Value) -> Result<(), FaxConfigError> {
        let mut probe = match serde_json::to_value(Self::default()) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        if !probe.contains_key(key) {
            return Err(FaxConfigError::UnknownKey(key.to_string()));
        }
        probe.insert(key.to_string(), value.clone());
        serde_json::from_value::<Self>(Value::Object(probe))
            .map(|_| ())
            .map_err(|e| FaxConfigError::BadValue {
                key: key.to_string(),
                reason: e.to_string(),
            })
    }

    /// One key's value as JSON.
    pub fn get(&self, key: &str) -> Option<Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut m)) => m.remove(key),
            _ => None,
        }
    }

    /// Every key's name.
    pub fn keys() -> Vec<String> {
        match serde_json::to_value(Self::default()) {
            Ok(Value::Object(m)) => m.keys().cloned().collect(),
            _ => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = include_str!("../../priv/couchdb/schemas/system_config.fax.json");

    #[test]
    fn every_default_matches_the_schema() {
        let schema: Value = serde_json::from_str(SCHEMA).unwrap();
        let props = schema["properties"].as_object().unwrap();
        let defaults = serde_json::to_value(FaxConfig::default()).unwrap();
        let defaults = defaults.as_object().unwrap();
        let mut schema_keys: Vec<&String> = props.keys().collect();
        let mut config_keys: Vec<&String> = defaults.keys().collect();
        schema_keys.sort();
        config_keys.sort();
        assert_eq!(schema_keys, config_keys, "schema and FaxConfig keys differ");
        for (key, value) in defaults {
            assert_eq!(
                props[key].get("default"),
                Some(value),
                "default of '{key}' differs between FaxConfig and the schema"
            );
        }
    }

    #[test]
    fn stored_sections_override_defaults() {
        let doc = json!({
            "_id": "fax",
            "default": {"max_outbound": 4, "smtp_port": 2525, "some_unknown": 1},
            "faxd@node1": {"max_outbound": 7}
        });
        let c = FaxConfig::from_doc(&doc, "faxd@node2").unwrap();
        assert_eq!(c.max_outbound, 4);
        assert_eq!(c.smtp_port, 2525);
        assert_eq!(c.endpoint_timeout, 40);
        let c = FaxConfig::from_doc(&doc, "faxd@node1").unwrap();
        assert_eq!(c.max_outbound, 7);
        let bad = json!({"default": {"max_outbound": "many"}});
        assert!(matches!(
            FaxConfig::from_doc(&bad, "n"),
            Err(FaxConfigError::BadValue { .. })
        ));
        assert!(matches!(
            FaxConfig::check("nope", &json!(1)),
            Err(FaxConfigError::UnknownKey(_))
        ));
        assert_eq!(c.get("smtp_port"), Some(json!(2525)));
    }
}
