//! Collection options: `{"create": [principal...], "default_acl": {...}, "schema": {...}, "realtime": bool}`,
//! and for files (sql/files.sql) `"bucket": bool, "max_file_size": bytes, "file_types": ["image/*", ...],
//! "file_refs": "allow" | "restrict"`; for accounts (sql/accounts.sql) `"on_owner_delete": "delete" |
//! "orphan" | {"transfer": "<user uuid>"}`.

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
    pub files: FileOptions,
    /// Only sessions signed in with a second factor (aal2) see the documents (sql/accounts.sql).
    pub require_aal2: bool,
    /// What a deleted owner's documents become: `"delete"` (default), `"orphan"` or
    /// `{"transfer": "<uuid>"}` (canonical; whether the user exists is SQL's check).
    pub on_owner_delete: Value,
}

/// A collection's file options. In `set_bucket` only the keys given change.
#[derive(Debug, Default)]
pub struct FileOptions {
    pub bucket: Option<bool>,
    /// Some(None): no limit of its own (the global cap).
    pub max_file_size: Option<Option<i64>>,
    /// Some(None): any type.
    pub file_types: Option<Option<Vec<String>>>,
    pub file_refs: Option<String>,
}

const FILE_KEYS: [&str; 4] = ["bucket", "max_file_size", "file_types", "file_refs"];
/// The largest file a bucket may allow (1 TiB; the column's check).
pub const MAX_FILE_SIZE: i64 = 1 << 40;

/// The file options among `m`'s keys.
pub fn parse_files(m: &serde_json::Map<String, Value>) -> Result<FileOptions, BaasError> {
    let bad = |s: String| Err(BaasError::InvalidOptions(s));
    let mut f = FileOptions::default();
    match m.get("bucket") {
        None => {}
        Some(Value::Bool(b)) => f.bucket = Some(*b),
        Some(Value::Null) => f.bucket = Some(false),
        Some(_) => return bad("bucket must be true or false".into()),
    }
    match m.get("max_file_size") {
        None => {}
        Some(Value::Null) => f.max_file_size = Some(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if (0..=MAX_FILE_SIZE).contains(&v) => f.max_file_size = Some(Some(v)),
            _ => return bad(format!("max_file_size must be a whole number of bytes from 0 to {MAX_FILE_SIZE}")),
        },
        Some(_) => return bad("max_file_size must be a number of bytes".into()),
    }
    match m.get("file_types") {
        None => {}
        Some(Value::Null) => f.file_types = Some(None),
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for i in items {
                let t = match i.as_str() {
                    Some(t) => crate::files::sniff::normalize(t).unwrap_or_default(),
                    None => return bad(format!("file_types must list content types, found {i}")),
                };
                let ok = crate::files::sniff::valid(&t)
                    || t.strip_suffix("/*").is_some_and(|p| crate::files::sniff::valid(&format!("{p}/x")));
                if !ok || t.starts_with("*/") {
                    return bad(format!("file_types: {i} is not a content type like image/png or image/*"));
                }
                if !out.contains(&t) {
                    out.push(t);
                }
            }
            if out.len() > 100 {
                return bad("file_types may list at most 100 types".into());
            }
            f.file_types = Some(Some(out));
        }
        Some(_) => return bad("file_types must be an array of content types".into()),
    }
    match m.get("file_refs") {
        None => {}
        Some(Value::Null) => f.file_refs = Some("allow".into()),
        Some(Value::String(s)) if s == "allow" || s == "restrict" => f.file_refs = Some(s.clone()),
        Some(_) => return bad("file_refs must be \"allow\" or \"restrict\"".into()),
    }
    Ok(f)
}

impl FileOptions {
    /// The keys given, canonical (set_bucket).
    pub fn given_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        if let Some(b) = self.bucket {
            m.insert("bucket".into(), json!(b));
        }
        if let Some(v) = &self.max_file_size {
            m.insert("max_file_size".into(), json!(v));
        }
        if let Some(v) = &self.file_types {
            m.insert("file_types".into(), json!(v));
        }
        if let Some(v) = &self.file_refs {
            m.insert("file_refs".into(), json!(v));
        }
        Value::Object(m)
    }
}

/// set_bucket's options: the file keys only.
pub fn parse_file_options(v: &Value) -> Result<FileOptions, BaasError> {
    let m = match v {
        Value::Object(m) => m,
        _ => return Err(BaasError::InvalidOptions("options must be a JSON object".into())),
    };
    if let Some(k) = m.keys().find(|k| !FILE_KEYS.contains(&k.as_str())) {
        return Err(BaasError::InvalidOptions(format!("unknown file option {k:?}; they are bucket, max_file_size, file_types, file_refs")));
    }
    parse_files(m)
}

pub fn parse(v: &Value) -> Result<Options, BaasError> {
    let m = match v {
        Value::Null => {
            return Ok(Options {
                create: ["authenticated".to_string()].into(),
                default_acl: Acl::default(),
                schema: None,
                realtime: true,
                files: FileOptions::default(),
                require_aal2: false,
                on_owner_delete: json!("delete"),
            })
        }
        Value::Object(m) => m,
        _ => return Err(BaasError::InvalidOptions("options must be a JSON object".into())),
    };
    if let Some(k) = m
        .keys()
        .find(|k| !["create", "default_acl", "schema", "realtime", "require_aal2", "on_owner_delete"].contains(&k.as_str()) && !FILE_KEYS.contains(&k.as_str()))
    {
        return Err(BaasError::InvalidOptions(format!(
            "unknown option {k:?}; options are create, default_acl, schema, realtime, bucket, max_file_size, file_types, file_refs, require_aal2, on_owner_delete"
        )));
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
    let files = parse_files(m)?;
    let require_aal2 = match m.get("require_aal2") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(BaasError::InvalidOptions("require_aal2 must be true or false".into())),
    };
    let on_owner_delete = match m.get("on_owner_delete") {
        None | Some(Value::Null) => json!("delete"),
        Some(v) => owner_delete(v)?,
    };
    Ok(Options { create, default_acl, schema, realtime, files, require_aal2, on_owner_delete })
}

/// `on_owner_delete`, canonical: `"delete"`, `"orphan"` or `{"transfer": "<uuid>"}`
/// (hyphenated, lower case).
pub fn owner_delete(v: &Value) -> Result<Value, BaasError> {
    let bad = || {
        BaasError::InvalidOptions(
            "on_owner_delete must be \"delete\", \"orphan\" or {\"transfer\": \"<user id>\"}".into(),
        )
    };
    match v {
        Value::String(s) if s == "delete" || s == "orphan" => Ok(v.clone()),
        Value::Object(o) if o.len() == 1 => {
            let id = o.get("transfer").and_then(Value::as_str).ok_or_else(bad)?;
            let u = uuid::Uuid::parse_str(id).map_err(|_| bad())?;
            Ok(json!({"transfer": u.hyphenated().to_string()}))
        }
        _ => Err(bad()),
    }
}

impl Options {
    pub fn to_json(&self) -> Value {
        let f = &self.files;
        json!({"create": self.create, "default_acl": self.default_acl.to_json(), "schema": self.schema, "realtime": self.realtime,
               "bucket": f.bucket.unwrap_or(false), "max_file_size": f.max_file_size.flatten(),
               "file_types": f.file_types.clone().flatten(), "file_refs": f.file_refs.as_deref().unwrap_or("allow"), "require_aal2": self.require_aal2,
               "on_owner_delete": self.on_owner_delete})
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
            json!({"create": ["authenticated"], "default_acl": {"read": [], "update": [], "delete": []}, "schema": null, "realtime": true,
                   "bucket": false, "max_file_size": null, "file_types": null, "file_refs": "allow", "require_aal2": false, "on_owner_delete": "delete"})
        );
        let heir = "0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B";
        assert_eq!(
            parse(&json!({"on_owner_delete": {"transfer": heir}})).unwrap().to_json()["on_owner_delete"],
            json!({"transfer": heir.to_lowercase()})
        );
        assert_eq!(parse(&json!({"on_owner_delete": "orphan"})).unwrap().to_json()["on_owner_delete"], json!("orphan"));
        assert_eq!(parse(&json!({"realtime": false})).unwrap().realtime, false);
        assert!(parse(&json!({"require_aal2": true})).unwrap().require_aal2);
        assert_eq!(parse(&json!({"require_aal2": "yes"})).unwrap_err().code(), "invalid_options");
    }

    #[test]
    fn errors_name_the_option() {
        assert_eq!(parse(&json!({"creat": []})).unwrap_err().code(), "invalid_options");
        assert_eq!(parse(&json!({"create": ["nobody"]})).unwrap_err().code(), "invalid_options");
        assert_eq!(parse(&json!({"default_acl": {"read": 1}})).unwrap_err().code(), "invalid_options");
        assert_eq!(parse(&json!({"schema": {"type": 12}})).unwrap_err().code(), "invalid_schema");
        assert_eq!(parse(&json!([1])).unwrap_err().code(), "invalid_options");
        assert_eq!(parse(&json!({"realtime": "no"})).unwrap_err().code(), "invalid_options");
        assert_eq!(parse(&json!({"bucket": 1})).unwrap_err().code(), "invalid_options");
        assert_eq!(parse(&json!({"max_file_size": -1})).unwrap_err().code(), "invalid_options");
        assert_eq!(parse(&json!({"max_file_size": 1.5})).unwrap_err().code(), "invalid_options");
        assert_eq!(parse(&json!({"file_types": ["png"]})).unwrap_err().code(), "invalid_options");
        assert_eq!(parse(&json!({"file_types": ["*/*"]})).unwrap_err().code(), "invalid_options");
        assert_eq!(parse(&json!({"file_refs": "block"})).unwrap_err().code(), "invalid_options");
        for bad in [json!("keep"), json!({"transfer": "nope"}), json!({"transfer": 1}), json!({"heir": "x"}), json!(["orphan"])] {
            assert_eq!(parse(&json!({"on_owner_delete": bad})).unwrap_err().code(), "invalid_options", "{bad}");
        }
        assert_eq!(parse_file_options(&json!({"realtime": true})).unwrap_err().code(), "invalid_options");
    }

    #[test]
    fn file_options() {
        let o = parse(&json!({"bucket": true, "max_file_size": 1000, "file_types": ["IMAGE/*", "application/pdf"], "file_refs": "restrict"}))
            .unwrap();
        assert_eq!(o.to_json()["file_types"], json!(["image/*", "application/pdf"]));
        assert_eq!(o.to_json()["bucket"], json!(true));
        let f = parse_file_options(&json!({"max_file_size": null})).unwrap();
        assert_eq!(f.given_json(), json!({"max_file_size": null}));
    }
}
