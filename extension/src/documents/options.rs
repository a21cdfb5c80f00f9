//! Collection options: `{"create": [principal...], "default_acl": {...}, "schema": {...}, "realtime": bool}`.

use crate::documents::acl::{self, Acl};
use crate::documents::schema;
use crate::error::BaasError;
use serde_json::{json, Value};
use std::collections::BTreeSet;

#[derive(Debug)]
pub struct Options {
    pub create: BTreeSet<String>,
    pub default_acl: Acl,
    pub schema: Option<Value>,
    /// Whether the collection's changes are captured for live feeds (default true).
    pub realtime: bool,
}

pub fn parse(v: &Value) -> Result<Options, BaasError> {
    let m = match v {
        Value::Null => {
            return Ok(Options { create: ["authenticated".to_string()].into(), default_acl: Acl::default(), schema: None, realtime: true })
        }
        Value::Object(m) => m,
        _ => return Err(BaasError::InvalidOptions("options must be a JSON object".into())),
    };
    if let Some(k) = m.keys().find(|k| !["create", "default_acl", "schema", "realtime"].contains(&k.as_str())) {
        return Err(BaasError::InvalidOptions(format!("unknown option {k:?}; options are create, default_acl, schema, realtime")));
    }
    let create = match m.get("create") {
        None | Some(Value::Null) => ["authenticated".to_string()].into(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => acl::principal(s).map_err(|e| BaasError::InvalidOptions(format!("create: {e}"))),
                other => Err(BaasError::InvalidOptions(format!("create must list principals, found {other}"))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(BaasError::InvalidOptions("create must be an array of principals".into())),
    };
    let default_acl = match m.get("default_acl") {
        None | Some(Value::Null) => Acl::default(),
        Some(v) => Acl::parse(v).map_err(|e| BaasError::InvalidOptions(format!("default_acl: {e}")))?,
    };
    let schema = match m.get("schema") {
        None | Some(Value::Null) => None,
        Some(s) => {
            schema::compile(s)?;
            Some(s.clone())
        }
    };
    let realtime = match m.get("realtime") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(BaasError::InvalidOptions("realtime must be true or false".into())),
    };
    Ok(Options { create, default_acl, schema, realtime })
}

impl Options {
    pub fn to_json(&self) -> Value {
        json!({"create": self.create, "default_acl": self.default_acl.to_json(), "schema": self.schema, "realtime": self.realtime})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let o = parse(&json!({})).unwrap();
        assert_eq!(
            o.to_json(),
            json!({"create": ["authenticated"], "default_acl": {"read": [], "update": [], "delete": []}, "schema": null, "realtime": true})
        );
        assert_eq!(parse(&json!({"realtime": false})).unwrap().realtime, false);
    }

    #[test]
    fn errors_name_the_option() {
        assert_eq!(parse(&json!({"creat": []})).unwrap_err().code(), "invalid_options");
        assert_eq!(parse(&json!({"create": ["nobody"]})).unwrap_err().code(), "invalid_options");
        assert_eq!(parse(&json!({"default_acl": {"read": 1}})).unwrap_err().code(), "invalid_options");
        assert_eq!(parse(&json!({"schema": {"type": 12}})).unwrap_err().code(), "invalid_schema");
        assert_eq!(parse(&json!([1])).unwrap_err().code(), "invalid_options");
        assert_eq!(parse(&json!({"realtime": "no"})).unwrap_err().code(), "invalid_options");
    }
}
