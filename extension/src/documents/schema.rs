//! Optional JSON Schema per collection. Compiled validators are cached per backend by
//! the schema's text, so a write costs one validation, not a compilation.

use crate::error::BaasError;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Validators this backend has compiled; a handful of collections is the norm, so a
/// small bound keeps a pathological many-schema workload from growing memory.
const CACHE_MAX: usize = 256;

thread_local! {
    static CACHE: RefCell<HashMap<String, Rc<jsonschema::Validator>>> = RefCell::new(HashMap::new());
}

pub fn compile(schema: &Value) -> Result<jsonschema::Validator, BaasError> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err(BaasError::InvalidSchema("schema must be a JSON Schema object".into()));
    }
    // No remote or file references: a schema must be self-contained.
    jsonschema::options()
        .build(schema)
        .map_err(|e| BaasError::InvalidSchema(format!("schema is not a valid JSON Schema: {e}")))
}

pub fn validate(schema: &Value, data: &Value) -> Result<(), BaasError> {
    let key = schema.to_string();
    let validator = CACHE.with(|c| c.borrow().get(&key).cloned());
    let validator = match validator {
        Some(v) => v,
        None => {
            let v = Rc::new(compile(schema)?);
            CACHE.with(|c| {
                let mut c = c.borrow_mut();
                if c.len() >= CACHE_MAX {
                    c.clear();
                }
                c.insert(key, v.clone());
            });
            v
        }
    };
    let first = validator.iter_errors(data).next().map(|e| (e.instance_path().to_string(), e.to_string()));
    match first {
        None => Ok(()),
        Some((path, message)) => Err(BaasError::SchemaViolation {
            path: if path.is_empty() { "/".into() } else { path },
            message,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reports_the_failing_path() {
        let s = json!({"type": "object", "properties": {"title": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["title"]});
        assert!(validate(&s, &json!({"title": "x", "tags": ["a"]})).is_ok());
        match validate(&s, &json!({"title": "x", "tags": ["a", 2]})) {
            Err(BaasError::SchemaViolation { path, .. }) => assert_eq!(path, "/tags/1"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(validate(&s, &json!({})), Err(BaasError::SchemaViolation { .. })));
    }

    #[test]
    fn invalid_schemas_and_remote_refs_are_refused() {
        assert!(compile(&json!({"type": "no-such-type"})).is_err());
        assert!(compile(&json!(5)).is_err());
        assert!(compile(&json!({"$ref": "https://example.com/schema.json"})).is_err());
    }
}
