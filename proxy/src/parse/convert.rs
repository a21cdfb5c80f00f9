//! Parse's shapes onto pgbaas's and back (issue 21, docs/parse.md): ACLs, objects,
//! update operations, `where` and the error codes. Pure functions: no permission
//! decision is made here. An ACL becomes the document's ACL, which Postgres enforces; a
//! `where` becomes a filter of the query language, which runs under row-level security.

use crate::errors::ApiError;
use http::StatusCode;
use serde_json::{json, Map, Value};

/// A Parse error: HTTP status, Parse's numeric code, message.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub status: StatusCode,
    pub code: i64,
    pub message: String,
    /// The pgbaas code it was made from ('' for the door's own).
    pub from: String,
    /// Seconds for Retry-After (a 429).
    pub retry_after: Option<u64>,
}

// Parse's error codes (Parse.Error in the SDKs) that the door answers with.
pub const OTHER_CAUSE: i64 = -1;
pub const INTERNAL_SERVER_ERROR: i64 = 1;
pub const OBJECT_NOT_FOUND: i64 = 101;
pub const INVALID_QUERY: i64 = 102;
pub const INVALID_CLASS_NAME: i64 = 103;
pub const MISSING_OBJECT_ID: i64 = 104;
pub const INVALID_KEY_NAME: i64 = 105;
pub const INVALID_JSON: i64 = 107;
pub const INCORRECT_TYPE: i64 = 111;
pub const OPERATION_FORBIDDEN: i64 = 119;
pub const SCRIPT_FAILED: i64 = 141;
pub const INVALID_EMAIL_ADDRESS: i64 = 125;
pub const INVALID_ACL: i64 = 123;
pub const DUPLICATE_VALUE: i64 = 137;
pub const VALIDATION_ERROR: i64 = 142;
pub const REQUEST_LIMIT_EXCEEDED: i64 = 155;
pub const USERNAME_MISSING: i64 = 200;
pub const PASSWORD_MISSING: i64 = 201;
pub const USERNAME_TAKEN: i64 = 202;
pub const EMAIL_TAKEN: i64 = 203;
pub const EMAIL_MISSING: i64 = 204;
pub const SESSION_MISSING: i64 = 206;
pub const MISSING_REQUIRED_FIELD: i64 = 135;
pub const CHANGED_IMMUTABLE_FIELD: i64 = 136;
pub const INVALID_SESSION_TOKEN: i64 = 209;
pub const UNSUPPORTED_SERVICE: i64 = 252;
pub const ACCOUNT_ALREADY_LINKED: i64 = 208;

impl ParseError {
    pub fn new(status: StatusCode, code: i64, message: impl Into<String>) -> Self {
        ParseError { status, code, message: message.into(), from: String::new(), retry_after: None }
    }
    pub fn bad(code: i64, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, OBJECT_NOT_FOUND, "Object not found.")
    }
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({"code": self.code, "error": self.message})).unwrap_or_default()
    }

    /// A pgbaas error (a house code from Postgres or the proxy) as Parse words it.
    pub fn from_api(e: &ApiError) -> ParseError {
        let m = e.message.clone();
        let (status, code, message) = match e.code.as_str() {
            "document_not_found" | "not_found" => (StatusCode::NOT_FOUND, OBJECT_NOT_FOUND, "Object not found.".to_string()),
            // A write the ACL refuses: Parse answers as if the object were not there.
            "forbidden" if e.message.starts_with("you may read this document") => {
                (StatusCode::NOT_FOUND, OBJECT_NOT_FOUND, "Object not found.".to_string())
            }
            // Parse Server answers 119 with HTTP 400.
            "forbidden" | "permission_denied" => (StatusCode::BAD_REQUEST, OPERATION_FORBIDDEN, m),
            // A class without its collection: as Parse Server with allowClientClassCreation off.
            "collection_not_found" => (StatusCode::BAD_REQUEST, OPERATION_FORBIDDEN, "Permission denied: the class does not exist".to_string()),
            "invalid_session_token" | "invalid_token" => (StatusCode::BAD_REQUEST, INVALID_SESSION_TOKEN, "Invalid session token".to_string()),
            "not_authenticated" => (StatusCode::BAD_REQUEST, INVALID_SESSION_TOKEN, "Invalid session token".to_string()),
            "invalid_credentials" => (StatusCode::NOT_FOUND, OBJECT_NOT_FOUND, "Invalid username/password.".to_string()),
            "username_taken" => (StatusCode::BAD_REQUEST, USERNAME_TAKEN, "Account already exists for this username.".to_string()),
            "email_taken" => (StatusCode::BAD_REQUEST, EMAIL_TAKEN, "Account already exists for this email address.".to_string()),
            "username_missing" | "username_invalid" => (StatusCode::BAD_REQUEST, USERNAME_MISSING, m),
            "email_missing" => (StatusCode::BAD_REQUEST, EMAIL_MISSING, m),
            "not_own_user" => (StatusCode::BAD_REQUEST, SESSION_MISSING, m),
            // As Parse Server with enableAnonymousUsers off.
            "anonymous_sign_in_disabled" => (StatusCode::BAD_REQUEST, UNSUPPORTED_SERVICE, "This authentication method is unsupported.".to_string()),
            "not_anonymous" => (StatusCode::BAD_REQUEST, VALIDATION_ERROR, m),
            // authData of an OpenID Connect provider (sql/oidc.sql): Parse Server's auth
            // adapters answer 101 for a token that does not verify, 252 for a provider it
            // does not have, 208 for an identity another account holds.
            "invalid_id_token" | "id_token_reused" => (StatusCode::NOT_FOUND, OBJECT_NOT_FOUND, m),
            "provider_not_found" => (StatusCode::BAD_REQUEST, UNSUPPORTED_SERVICE, "This authentication method is unsupported.".to_string()),
            "identity_taken" | "identity_link_required" => (StatusCode::BAD_REQUEST, ACCOUNT_ALREADY_LINKED, m),
            "aal2_required" | "last_sign_in_method" => (StatusCode::BAD_REQUEST, VALIDATION_ERROR, m),
            "installation_incomplete" => (StatusCode::BAD_REQUEST, MISSING_REQUIRED_FIELD, m),
            "installation_id_changed" => (StatusCode::BAD_REQUEST, CHANGED_IMMUTABLE_FIELD, m),
            "password_missing" => (StatusCode::BAD_REQUEST, PASSWORD_MISSING, m),
            "invalid_email" => (StatusCode::BAD_REQUEST, INVALID_EMAIL_ADDRESS, m),
            "weak_password" | "password_too_long" | "mfa_required" | "account_suspended" | "email_not_verified" => {
                (StatusCode::BAD_REQUEST, VALIDATION_ERROR, m)
            }
            "too_many_attempts" | "rate_limited" | "too_many_requests" | "too_many_concurrent_requests" => (StatusCode::TOO_MANY_REQUESTS, REQUEST_LIMIT_EXCEEDED, m),
            "invalid_query" | "query_too_complex" | "response_too_large" | "query_timeout" => (StatusCode::BAD_REQUEST, INVALID_QUERY, m),
            "invalid_json" | "invalid_request" | "payload_too_large" => (e.status, INVALID_JSON, m),
            "invalid_data" | "schema_violation" => (StatusCode::BAD_REQUEST, VALIDATION_ERROR, m),
            "invalid_acl" | "unknown_principal" | "invalid_principal" => (StatusCode::BAD_REQUEST, INVALID_ACL, m),
            "document_exists" | "unique_violation" | "conflict" | "role_exists" => (StatusCode::BAD_REQUEST, DUPLICATE_VALUE, m),
            // A role or a user a role's change names (roles.rs).
            "role_not_found" | "user_not_found" | "invalid_role_name" => (StatusCode::NOT_FOUND, OBJECT_NOT_FOUND, m),
            "session_not_found" => (StatusCode::NOT_FOUND, OBJECT_NOT_FOUND, "Object not found.".to_string()),
            "role_cycle" => (StatusCode::BAD_REQUEST, VALIDATION_ERROR, m),
            "operator_type_mismatch" | "invalid_operator" => (StatusCode::BAD_REQUEST, INCORRECT_TYPE, m),
            _ if e.status.is_server_error() => (e.status, INTERNAL_SERVER_ERROR, m),
            _ => (e.status, OTHER_CAUSE, m),
        };
        ParseError { status, code, message, from: e.code.clone(), retry_after: e.retry_after }
    }
}

/// JSON text from Postgres as a value. pgbaas keeps numbers exactly, so a stored number
/// may lie beyond a double (SQL, `/v1`, or `Increment`s adding up); Parse's clients have
/// no such numbers: those show as the largest double of their sign.
/// Without serde_json's 128-level limit: a document may be nested as deep as the
/// extension takes (128 levels), and the answer wraps it in more (`data`, an include).
pub fn from_db_text(text: &str) -> Result<Value, serde_json::Error> {
    let parse = |t: &str| -> Result<Value, serde_json::Error> {
        use serde::Deserialize;
        let mut de = serde_json::Deserializer::from_str(t);
        de.disable_recursion_limit();
        let v = Value::deserialize(&mut de)?;
        de.end()?;
        Ok(v)
    };
    match parse(text) {
        Ok(v) => Ok(v),
        Err(e) if e.to_string().contains("number out of range") => parse(&clamp_numbers(text)),
        Err(e) => Err(e),
    }
}

/// `text` with each number token beyond a double written as ±f64::MAX.
fn clamp_numbers(text: &str) -> String {
    let b = text.as_bytes();
    let (mut out, mut i, mut in_string) = (String::with_capacity(text.len()), 0, false);
    while i < b.len() {
        let c = b[i];
        if in_string {
            if c == b'\\' && i + 1 < b.len() {
                out.push_str(&text[i..i + 2]);
                i += 2;
                continue;
            }
            in_string = c != b'"';
        } else if c == b'"' {
            in_string = true;
        } else if c == b'-' || c.is_ascii_digit() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b"+-.eE".contains(&b[i])) {
                i += 1;
            }
            let token = &text[start..i];
            match token.parse::<f64>() {
                Ok(f) if f.is_infinite() => out.push_str(if f < 0.0 { "-1.7976931348623157e308" } else { "1.7976931348623157e308" }),
                _ => out.push_str(token),
            }
            continue;
        }
        out.push(c as char);
        i += 1;
    }
    out
}

/// A list page's text (`baas._list_documents_text`: `{"items": [documents], "next", "count"?}`)
/// as Parse's `results` text, written without parsing any object's data: each object is
/// its `data` text with objectId, createdAt, updatedAt and ACL added at its end. None
/// when a data object names one of those fields itself (its own would come first and be
/// shadowed: the caller takes the slower, exact path), or the page cannot be read so.
/// Also: how many objects, and whether the page was cut (`next` set).
pub struct TextPage {
    pub body: String,
    pub items: usize,
    pub next: bool,
}

pub fn parse_page_text(text: &str) -> Option<TextPage> {
    #[derive(serde::Deserialize)]
    struct Item<'a> {
        #[serde(borrow)]
        id: &'a str,
        #[serde(borrow)]
        created_at: &'a str,
        #[serde(borrow)]
        updated_at: &'a str,
        #[serde(borrow)]
        data: &'a serde_json::value::RawValue,
        acl: Value,
    }
    #[derive(serde::Deserialize)]
    struct Page<'a> {
        #[serde(borrow)]
        items: Vec<Item<'a>>,
        #[serde(default)]
        next: Option<Value>,
        #[serde(default)]
        count: Option<Value>,
    }
    let page: Page = serde_json::from_str(text).ok()?;
    let mut body = String::with_capacity(text.len() + 64 * page.items.len());
    body.push_str("{\"results\":[");
    for (i, it) in page.items.iter().enumerate() {
        let data = it.data.get().trim();
        if !data.starts_with('{') || RESERVED.iter().any(|k| data.contains(&format!("\"{k}\""))) || data.contains("\"Relation\"") {
            return None;
        }
        if i > 0 {
            body.push(',');
        }
        let inner = data[1..data.len() - 1].trim();
        body.push('{');
        body.push_str(inner);
        if !inner.is_empty() {
            body.push(',');
        }
        body.push_str("\"objectId\":");
        body.push_str(&Value::String(it.id.to_string()).to_string());
        body.push_str(&format!(",\"createdAt\":\"{}\",\"updatedAt\":\"{}\",\"ACL\":", parse_date(it.created_at), parse_date(it.updated_at)));
        body.push_str(&acl_from_baas(&it.acl).to_string());
        body.push('}');
    }
    body.push(']');
    if let Some(c) = &page.count {
        body.push_str(",\"count\":");
        body.push_str(&c.to_string());
    }
    body.push('}');
    Some(TextPage { body, items: page.items.len(), next: page.next.is_some_and(|n| !n.is_null()) })
}

/// A Parse class name (`^[A-Za-z][A-Za-z0-9_]*$`, Parse's rule) and the pgbaas
/// collection it is: the name in lower case (collection names are lower case), so
/// classes differing only in case share one collection.
pub fn collection_of(class: &str) -> Result<String, ParseError> {
    let ok = class.len() <= 63
        && class.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && class.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        return Err(ParseError::bad(INVALID_CLASS_NAME, format!("Invalid classname: {class}, classnames can only have alphanumeric characters and _, and must start with an alpha character ")));
    }
    Ok(class.to_ascii_lowercase())
}

/// A Parse role name as a pgbaas role name (`^[a-z][a-z0-9_.-]{0,62}$`): lower case,
/// other characters as `_`, `r_` in front of one that does not start with a letter; ACLs
/// show the pgbaas name. pgbaas-import maps `_Role` names with the same rule
/// (import/src/parse.rs, `role_name`), so imported ACLs and the door's agree.
pub fn role_name(parse: &str) -> String {
    let mut s: String = parse.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c.to_ascii_lowercase() } else { '_' }).collect();
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        s = format!("r_{s}");
    }
    s.chars().take(63).collect()
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| if [8, 13, 18, 23].contains(&i) { b == b'-' } else { b.is_ascii_hexdigit() })
}

/// A Parse object id (a document id): a UUID here; anything else names no object.
pub fn object_id(id: &str) -> Result<String, ParseError> {
    if is_uuid(id) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(ParseError::not_found())
    }
}

/// A Parse ACL (`{"*": {"read": true}, "<userId>": {"read": true, "write": true},
/// "role:Name": {...}}`) as a pgbaas ACL: read → `read`; write → `update` and `delete`.
/// `*` is `public`, a user id `user:<id>`, `role:Name` the pgbaas role of that name.
pub fn acl_to_baas(acl: &Value) -> Result<Value, ParseError> {
    let bad = |m: String| ParseError::bad(INVALID_ACL, m);
    let Some(entries) = acl.as_object() else {
        return Err(bad("ACL must be a JSON object".into()));
    };
    let (mut read, mut write) = (Vec::new(), Vec::new());
    for (who, perms) in entries {
        let principal = if who == "*" {
            "public".to_string()
        } else if let Some(role) = who.strip_prefix("role:") {
            format!("role:{}", role_name(role))
        } else if is_uuid(who) {
            format!("user:{}", who.to_ascii_lowercase())
        } else {
            return Err(bad(format!("ACL names {who:?}, which is neither *, a user's objectId nor role:<name>")));
        };
        let Some(p) = perms.as_object() else {
            return Err(bad(format!("ACL entry of {who:?} must be an object")));
        };
        for (k, v) in p {
            match (k.as_str(), v) {
                ("read", Value::Bool(true)) => read.push(principal.clone()),
                ("write", Value::Bool(true)) => write.push(principal.clone()),
                ("read" | "write", Value::Bool(false)) => {}
                _ => return Err(bad(format!("ACL entry of {who:?}: {k} must be true or false"))),
            }
        }
    }
    // pgbaas lets whoever may write a document read it too (acl_read holds everyone of
    // acl_update and acl_delete): a write-only entry would quietly become read and write.
    if let Some(p) = write.iter().find(|p| !read.contains(p)) {
        let who = acl_from_baas(&json!({"read": [p]})).as_object().and_then(|m| m.keys().next().cloned()).unwrap_or_default();
        return Err(bad(format!("ACL gives {who:?} write access without read access; pgbaas lets writers read, so give read too (docs/parse.md)")));
    }
    Ok(json!({"read": read, "update": write, "delete": write}))
}

/// A pgbaas ACL as Parse shows it. `write` where a principal may both update and
/// delete. Principals Parse has no word for (`authenticated`, `followers:…`) keep their
/// pgbaas names.
pub fn acl_from_baas(acl: &Value) -> Value {
    let list = |k: &str| -> Vec<String> {
        acl.get(k).and_then(Value::as_array).map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default()
    };
    let (read, update, delete) = (list("read"), list("update"), list("delete"));
    let name = |p: &str| -> String {
        if p == "public" {
            "*".to_string()
        } else if let Some(u) = p.strip_prefix("user:") {
            u.to_string()
        } else {
            p.to_string()
        }
    };
    let mut out = Map::new();
    for p in &read {
        let mut e = Map::new();
        e.insert("read".into(), Value::Bool(true));
        if update.contains(p) && delete.contains(p) {
            e.insert("write".into(), Value::Bool(true));
        }
        out.insert(name(p), Value::Object(e));
    }
    for p in update.iter().filter(|p| delete.contains(p) && !read.contains(p)) {
        out.insert(name(p), json!({"write": true}));
    }
    Value::Object(out)
}

/// `2026-12-04T16:20:00.123456+00:00` (a document's time, the proxy's connections run in
/// UTC) as Parse writes times: `2026-12-04T16:20:00.123Z`.
pub fn parse_date(t: &str) -> String {
    // The instant in UTC, whatever the session's TimeZone wrote it in.
    if let Ok(us) = pgbaas_query::parse::instant(t) {
        let text = pgbaas_query::parse::instant_text(us.div_euclid(1000) * 1000);
        if let Some(ms) = text.get(..23) {
            return format!("{ms}Z");
        }
    }
    let (main, _zone) = match t.rfind(['+', 'Z']) {
        Some(i) if i > 10 => (&t[..i], &t[i..]),
        _ => (t, ""),
    };
    let (secs, frac) = main.split_once('.').unwrap_or((main, ""));
    let mut ms: String = frac.chars().take(3).collect();
    while ms.len() < 3 {
        ms.push('0');
    }
    format!("{secs}.{ms}Z")
}

/// Fields of an object Parse sets itself; a body may carry them (the SDK sends what it
/// holds) but they are not data.
const RESERVED: &[&str] = &["objectId", "createdAt", "updatedAt", "ACL", "className"];

/// A pgbaas document as a Parse object: its data, then objectId, createdAt, updatedAt
/// and the ACL (when the document carries one).
pub fn object_from_doc(doc: &Value) -> Value {
    let mut out = match doc.get("data") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    for k in RESERVED {
        out.remove(*k);
    }
    out.values_mut().for_each(shown_relation);
    if let Some(id) = doc.get("id") {
        out.insert("objectId".into(), id.clone());
    }
    for (from, to) in [("created_at", "createdAt"), ("updated_at", "updatedAt")] {
        if let Some(t) = doc.get(from).and_then(Value::as_str) {
            out.insert(to.into(), Value::String(parse_date(t)));
        }
    }
    if let Some(acl) = doc.get("acl") {
        out.insert("ACL".into(), acl_from_baas(acl));
    }
    Value::Object(out)
}

fn check_key(k: &str) -> Result<(), ParseError> {
    let ok = k.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && k.len() <= 128;
    if ok {
        Ok(())
    } else {
        Err(ParseError::bad(INVALID_KEY_NAME, format!("Invalid field name: {k}.")))
    }
}

/// A value as it is stored: Parse's typed values (`Date`, `Pointer`, `GeoPoint`, `File`,
/// `Bytes`, `Polygon`) keep their `__type` shape, so pgbaas's API and SQL read them as
/// the JSON the SDKs use. An operation (`__op`) where a value belongs is refused.
fn stored_value(v: &Value) -> Result<Value, ParseError> {
    if let Some(op) = v.get("__op") {
        return Err(ParseError::bad(INVALID_JSON, format!("the operation {op} is only allowed in an update of a field")));
    }
    Ok(v.clone())
}

/// The pointers of an `AddRelation`/`RemoveRelation`: their one class and their ids.
/// A relation is kept in the object's own data, `{"__type": "Relation", "className",
/// "objects": {"<id>": true, …}}`, so whoever may read the object may read its
/// relation's ids (and only the objects among them they may read themselves), and
/// whoever may write it may change it: the document's ACL decides, as for every other
/// field. Members are keys (not an array) so that adding and removing in one save are
/// `$set` and `$unset` of different paths.
fn relation_members(k: &str, v: &Value) -> Result<(String, Vec<Value>), ParseError> {
    let bad = || ParseError::bad(INCORRECT_TYPE, format!("{k}: a relation operation takes pointers of one class"));
    let items = v.get("objects").and_then(Value::as_array).ok_or_else(bad)?;
    let mut class: Option<String> = None;
    let mut ids = Vec::with_capacity(items.len());
    for p in items {
        if p.get("__type").and_then(Value::as_str) != Some("Pointer") {
            return Err(bad());
        }
        let c = p.get("className").and_then(Value::as_str).ok_or_else(bad)?;
        if class.as_deref().is_some_and(|x| x != c) {
            return Err(bad());
        }
        class = Some(c.to_string());
        let id = p.get("objectId").and_then(Value::as_str).ok_or_else(bad)?;
        ids.push(Value::String(object_id(id).map_err(|_| bad())?));
    }
    Ok((class.ok_or_else(bad)?, ids))
}

/// A relation field as Parse shows it: its class, without the ids.
fn shown_relation(v: &mut Value) {
    if v.get("__type").and_then(Value::as_str) == Some("Relation") {
        if let Some(m) = v.as_object_mut() {
            m.remove("objects");
        }
    }
}

/// A create body: the object's fields (data), its ACL if one was sent.
pub fn create_body(body: &Map<String, Value>) -> Result<(Value, Option<Value>), ParseError> {
    let mut data = Map::new();
    let mut acl = None;
    for (k, v) in body {
        match k.as_str() {
            "ACL" => acl = Some(acl_to_baas(v)?),
            "objectId" | "createdAt" | "updatedAt" | "className" => {}
            _ => {
                check_key(k)?;
                // Delete in a create means "not set"; other operations apply to nothing.
                match v.get("__op").and_then(Value::as_str) {
                    Some("Delete") => {}
                    Some("Increment") => {
                        data.insert(k.clone(), v.get("amount").cloned().unwrap_or(json!(1)));
                    }
                    Some("Add" | "AddUnique") => {
                        data.insert(k.clone(), v.get("objects").cloned().unwrap_or(json!([])));
                    }
                    Some("Remove") => {
                        data.insert(k.clone(), json!([]));
                    }
                    Some("AddRelation") => {
                        let (class, ids) = relation_members(k, v)?;
                        let members: Map<String, Value> = ids.iter().filter_map(Value::as_str).map(|id| (id.to_string(), Value::Bool(true))).collect();
                        data.insert(k.clone(), json!({"__type": "Relation", "className": class, "objects": members}));
                    }
                    Some(_) => return Err(ParseError::bad(INVALID_JSON, format!("unsupported operation on {k}"))),
                    None => {
                        data.insert(k.clone(), stored_value(v)?);
                    }
                }
            }
        }
    }
    Ok((Value::Object(data), acl))
}

/// An update body as one operator patch (docs/operators.md), applied on the locked row:
/// a plain value is `$set`; `Delete` `$unset`; `Increment` `$inc`; `Add` `$push`;
/// `AddUnique` `$addToSet`; `Remove` `$pull`. Also the ACL, if one was sent, and the
/// fields an operation changed (Parse answers their new values).
pub fn update_body(body: &Map<String, Value>) -> Result<(Value, Option<Value>, Vec<String>), ParseError> {
    let mut ops: Map<String, Value> = Map::new();
    let mut acl = None;
    let mut changed = Vec::new();
    let mut put = |op: &str, k: &str, v: Value| {
        ops.entry(op.to_string()).or_insert_with(|| Value::Object(Map::new())).as_object_mut().map(|m| m.insert(k.to_string(), v));
    };
    // A `Batch` of operations on one field (the SDK's relation add and remove together)
    // is its operations, one after another.
    let mut flat: Vec<(&String, &Value)> = Vec::new();
    for (k, v) in body {
        match (v.get("__op").and_then(Value::as_str), v.get("ops").and_then(Value::as_array)) {
            (Some("Batch"), Some(list))
                if list.iter().all(|o| matches!(o.get("__op").and_then(Value::as_str), Some("AddRelation" | "RemoveRelation"))) =>
            {
                flat.extend(list.iter().map(|o| (k, o)))
            }
            (Some("Batch"), _) => return Err(ParseError::bad(INVALID_JSON, format!("{k}: a Batch operation holds AddRelation and RemoveRelation operations"))),
            _ => flat.push((k, v)),
        }
    }
    for (k, v) in flat {
        match k.as_str() {
            "ACL" => acl = Some(acl_to_baas(v)?),
            "objectId" | "createdAt" | "updatedAt" | "className" => {}
            _ => {
                check_key(k)?;
                let objects = || -> Result<Value, ParseError> {
                    match v.get("objects") {
                        Some(Value::Array(a)) => Ok(Value::Array(a.clone())),
                        _ => Err(ParseError::bad(INVALID_JSON, "objects to add must be an array")),
                    }
                };
                match v.get("__op").and_then(Value::as_str) {
                    None => put("$set", k, stored_value(v)?),
                    Some("Delete") => put("$unset", k, Value::Bool(true)),
                    Some("Increment") => {
                        let amount = v.get("amount").cloned().unwrap_or(json!(1));
                        if !amount.is_number() {
                            return Err(ParseError::bad(INVALID_JSON, "incrementing must provide a number"));
                        }
                        put("$inc", k, amount);
                        changed.push(k.clone());
                    }
                    Some("Add") => {
                        put("$push", k, json!({"$each": objects()?}));
                        changed.push(k.clone());
                    }
                    Some("AddUnique") => {
                        put("$addToSet", k, json!({"$each": objects()?}));
                        changed.push(k.clone());
                    }
                    Some("Remove") => {
                        put("$pull", k, json!({"$in": objects()?}));
                        changed.push(k.clone());
                    }
                    Some("AddRelation") => {
                        let (class, ids) = relation_members(k, v)?;
                        put("$set", &format!("{k}.__type"), json!("Relation"));
                        put("$set", &format!("{k}.className"), json!(class));
                        for id in ids.iter().filter_map(Value::as_str) {
                            put("$set", &format!("{k}.objects.{id}"), Value::Bool(true));
                        }
                    }
                    Some("RemoveRelation") => {
                        let (_, ids) = relation_members(k, v)?;
                        for id in ids.iter().filter_map(Value::as_str) {
                            put("$unset", &format!("{k}.objects.{id}"), Value::Bool(true));
                        }
                    }
                    Some(other) => return Err(ParseError::bad(INVALID_JSON, format!("the operation {other} is not supported"))),
                }
            }
        }
    }
    Ok((Value::Object(ops), acl, changed))
}

/// Fields pgbaas's filter cannot address as data: objectId and the ACL are columns
/// (the door answers objectId queries itself); createdAt and updatedAt are the query
/// language's `$created_at` and `$updated_at`.
const SYSTEM: &[&str] = &["objectId", "ACL"];

/// Parse's `where` as a filter of pgbaas's query language (docs/query.md).
pub fn filter_of(w: &Value) -> Result<Value, ParseError> {
    let bad = |m: String| ParseError::bad(INVALID_QUERY, m);
    let Some(m) = w.as_object() else {
        return Err(bad("where must be a JSON object".into()));
    };
    let mut all = Vec::new();
    for (k, v) in m {
        match k.as_str() {
            "$or" | "$and" | "$nor" => {
                let Some(list) = v.as_array().filter(|a| !a.is_empty()) else {
                    return Err(bad(format!("{k} must be a non-empty array")));
                };
                let parts = list.iter().map(filter_of).collect::<Result<Vec<_>, _>>()?;
                all.push(match k.as_str() {
                    "$or" => json!({"$or": parts}),
                    "$and" => json!({"$and": parts}),
                    _ => json!({"$not": {"$or": parts}}),
                });
            }
            _ if k.starts_with('$') => return Err(bad(format!("Invalid key {k} for find"))),
            "createdAt" | "updatedAt" => all.push(time_filter(k, v)?),
            _ if SYSTEM.contains(&k.as_str()) => {
                return Err(bad(format!("queries on {k} are not supported by pgbaas's Parse door yet (docs/parse.md)")));
            }
            _ => {
                if k.split('.').any(|p| p.is_empty()) {
                    return Err(bad(format!("Invalid key name: {k}")));
                }
                all.push(field_filter(k, v)?);
            }
        }
    }
    Ok(match all.len() {
        1 => all.pop().unwrap_or_else(|| json!({})),
        0 => json!({}),
        _ => json!({"$and": all}),
    })
}

/// A condition on `createdAt`/`updatedAt` as one on the document's time. Parse clients
/// see those times to the millisecond (`parse_date`) while Postgres keeps microseconds,
/// so each comparison is of the time as shown: `createdAt > X` holds for a document
/// created at X plus 0.4 ms only if Parse Server would say so, which has the
/// milliseconds alone. With `ms(t)` the shown time, for any instant X:
/// `ms(t) > X` ⟺ `t ≥ floor(X) + 1 ms`, `ms(t) ≥ X` ⟺ `t ≥ ceil(X)`,
/// `ms(t) < X` ⟺ `t < ceil(X)`, `ms(t) ≤ X` ⟺ `t < floor(X) + 1 ms`, and `ms(t) = X`
/// only for X on a millisecond, as `X ≤ t < X + 1 ms`. Each is one range on the column.
fn time_filter(k: &str, v: &Value) -> Result<Value, ParseError> {
    let bad = |m: String| ParseError::bad(INVALID_QUERY, m);
    let field = if k == "createdAt" { "$created_at" } else { "$updated_at" };
    const MS: i64 = 1000;
    let instant = |v: &Value| -> Result<i64, ParseError> {
        let iso = match v {
            Value::Object(o) if o.get("__type").and_then(Value::as_str) == Some("Date") => o.get("iso").and_then(Value::as_str),
            Value::String(s) => Some(s.as_str()),
            _ => None,
        };
        let Some(iso) = iso else { return Err(bad(format!("a query on {k} compares with a Date"))) };
        pgbaas_query::parse::instant(iso).map_err(|m| bad(format!("bad Date in a query on {k}: {m}")))
    };
    let floor = |x: i64| x.div_euclid(MS) * MS;
    let ceil = |x: i64| floor(x) + if x.rem_euclid(MS) == 0 { 0 } else { MS };
    let at = |x: i64| Value::String(pgbaas_query::parse::instant_text(x));
    // A bound past the last instant the language takes (9999-12-31T23:59:59.999999Z):
    // `t ≥` it holds for nothing, `t <` it for everything.
    let last = pgbaas_query::parse::instant("9999-12-31T23:59:59.999999Z").unwrap_or(i64::MAX);
    let ge = |b: i64| if b > last { json!({"$not": {}}) } else { json!({field: {"$gte": at(b)}}) };
    let lt = |b: i64| if b > last { json!({}) } else { json!({field: {"$lt": at(b)}}) };
    let eq = |x: i64| {
        if x.rem_euclid(MS) == 0 {
            json!({"$and": [ge(x), lt(x + MS)]})
        } else {
            // No time shown to the millisecond equals it.
            json!({"$not": {}})
        }
    };
    let ops = match v.as_object() {
        Some(o) if !o.is_empty() && o.keys().all(|x| x.starts_with('$')) => o,
        _ => return Ok(eq(instant(v)?)),
    };
    let mut parts = Vec::new();
    for (op, arg) in ops {
        parts.push(match op.as_str() {
            "$gt" => ge(floor(instant(arg)?) + MS),
            "$gte" => ge(ceil(instant(arg)?)),
            "$lt" => lt(ceil(instant(arg)?)),
            "$lte" => lt(floor(instant(arg)?) + MS),
            "$eq" => eq(instant(arg)?),
            "$ne" => json!({"$not": eq(instant(arg)?)}),
            // containedIn / notContainedIn: each time as an equality (two bounds each: at
            // most 100 of them keep the filter within its 16 KiB).
            "$in" | "$nin" => {
                let list = arg.as_array().filter(|a| a.len() <= 100).ok_or_else(|| bad(format!("{op} on {k} takes an array of at most 100 Dates")))?;
                let parts = list.iter().map(|x| instant(x).map(eq)).collect::<Result<Vec<_>, _>>()?;
                // An empty list: $in holds for nothing, $nin for everything.
                let any = if parts.is_empty() { json!({"$not": {}}) } else { json!({"$or": parts}) };
                if op == "$in" { any } else { json!({"$not": any}) }
            }
            // Every object has both times.
            "$exists" => match arg {
                Value::Bool(true) => json!({}),
                Value::Bool(false) => json!({"$not": {}}),
                _ => return Err(bad(format!("bad $exists on {k}: true or false"))),
            },
            _ => return Err(bad(format!("the operator {op} on {k} is not supported by pgbaas's Parse door (it takes $lt $lte $gt $gte $eq $ne $in $nin $exists; docs/parse.md)"))),
        });
    }
    Ok(if parts.len() == 1 { parts.pop().unwrap_or_else(|| json!({})) } else { json!({"$and": parts}) })
}

/// A comparison operand: a Date compares by its ISO text (which sorts as time: Parse
/// writes every Date in one format), a number or string as itself.
fn comparable(k: &str, v: &Value) -> Result<(String, Value), String> {
    match v {
        Value::Object(o) if o.get("__type").and_then(Value::as_str) == Some("Date") => match o.get("iso") {
            Some(Value::String(s)) => Ok((format!("{k}.iso"), Value::String(s.clone()))),
            _ => Err(format!("a Date in a query on {k} needs its iso text")),
        },
        Value::Number(_) | Value::String(_) => Ok((k.to_string(), v.clone())),
        _ => Err(format!("a comparison on {k} takes a number, a string or a Date")),
    }
}

fn field_filter(k: &str, v: &Value) -> Result<Value, ParseError> {
    let bad = |m: String| ParseError::bad(INVALID_QUERY, m);
    let ops = match v.as_object() {
        Some(o) if !o.is_empty() && o.keys().all(|x| x.starts_with('$')) => o,
        // Equality, as Parse Server on Postgres compiles it for a field that is not an
        // array: one condition a btree index on the field serves. (Matching arrays that
        // hold the value too would be an $or that no index serves: containsAll is that.)
        _ => return Ok(json!({k: {"$eq": v}})),
    };
    let mut parts = Vec::new();
    if ops.keys().any(|op| super::geo::GEO_OPS.contains(&op.as_str())) {
        parts.extend(super::geo::filter(k, ops)?);
    }
    for (op, arg) in ops {
        let part = match op.as_str() {
            _ if super::geo::GEO_OPS.contains(&op.as_str()) => continue,
            "$lt" | "$lte" | "$gt" | "$gte" => {
                let (path, operand) = comparable(k, arg).map_err(bad)?;
                json!({path: {op.clone(): operand}})
            }
            "$ne" => json!({k: {"$ne": arg}}),
            "$in" | "$containedIn" => {
                if !arg.is_array() {
                    return Err(bad(format!("bad {op}: an array is needed")));
                }
                json!({k: {"$in": arg}})
            }
            "$nin" | "$notContainedIn" => {
                if !arg.is_array() {
                    return Err(bad(format!("bad {op}: an array is needed")));
                }
                json!({k: {"$nin": arg}})
            }
            "$exists" => match arg {
                Value::Bool(b) => json!({k: {"$exists": b}}),
                _ => return Err(bad(format!("bad $exists on {k}: true or false"))),
            },
            // containedBy: an array field whose every element is in the list.
            "$containedBy" => {
                if !arg.is_array() {
                    return Err(bad(format!("bad {op}: an array is needed")));
                }
                json!({k: {"$subset": arg}})
            }
            "$all" => {
                let Some(list) = arg.as_array() else {
                    return Err(bad(format!("bad $all on {k}: an array is needed")));
                };
                if list.is_empty() {
                    json!({k: {"$exists": true}})
                } else {
                    json!({"$and": list.iter().map(|x| json!({k: {"$contains": x}})).collect::<Vec<_>>()})
                }
            }
            "$eq" => json!({k: {"$eq": arg}}),
            "$regex" => regex_filter(k, arg, ops.get("$options")).map_err(bad)?,
            "$options" if ops.contains_key("$regex") => continue,
            "$options" => return Err(bad(format!("$options on {k} goes with $regex"))),
            _ => return Err(bad(format!("the operator {op} (on {k}) is not supported by pgbaas's Parse door yet (docs/parse.md)"))),
        };
        parts.push(part);
    }
    Ok(if parts.len() == 1 { parts.pop().unwrap_or_else(|| json!({})) } else { json!({"$and": parts}) })
}

/// A Parse `$regex` as one of the query language's text conditions. The SDKs write
/// `startsWith`, `endsWith` and `contains` as a quoted literal (`\Q…\E`, a `\E` inside
/// written `\E\\E\Q`) with `^` before or `$` after; `matches` sends the app's own
/// pattern. A pattern that is such a literal (quoted, plain characters, or escaped
/// punctuation) between optional anchors becomes `$prefix`/`$suffix`/`$substring` (or
/// `$eq` with both anchors), `i` their ASCII-folding forms: those can use the indexes a
/// text comparison can. Any other pattern is the query language's `$regex` (`$iregex`
/// with `i`), which Postgres and the live feeds answer alike for what it takes (ASCII
/// `\d \w \s`, no back-references, look-around or word boundaries: 102 names the part);
/// `\Q…\E` in it is quoted text, as Parse Server reads it.
fn regex_filter(k: &str, pattern: &Value, options: Option<&Value>) -> Result<Value, String> {
    let Value::String(p) = pattern else {
        return Err(format!("bad $regex on {k}: a string is needed"));
    };
    let options = match options {
        None => "",
        Some(Value::String(o)) => o.as_str(),
        Some(_) => return Err(format!("bad $options on {k}: a string is needed")),
    };
    let mut fold = false;
    let mut multiline = false;
    let mut extended = false;
    for c in options.chars() {
        match c {
            'i' => fold = true,
            'm' => multiline = true,
            'x' => extended = true,
            // `s` (dot matches newline) is how pgbaas always reads `.`.
            's' => {}
            _ => return Err(format!("bad $options on {k}: {options:?} (pgbaas takes i, m, s and x)")),
        }
    }
    let spaced;
    let p = if extended {
        spaced = remove_white_space(p);
        spaced.as_str()
    } else {
        p.as_str()
    };
    let unsupported = || general_regex(k, p, fold, multiline);
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    let anchored_start = chars.first() == Some(&'^');
    if anchored_start {
        i = 1;
    }
    let mut lit = String::new();
    let mut anchored_end = false;
    while i < chars.len() {
        match chars[i] {
            '\\' if chars.get(i + 1) == Some(&'Q') => {
                // Quoted up to the next \E, or to the end.
                i += 2;
                while i < chars.len() && !(chars[i] == '\\' && chars.get(i + 1) == Some(&'E')) {
                    lit.push(chars[i]);
                    i += 1;
                }
                i += 2;
            }
            '\\' => match chars.get(i + 1) {
                Some(&c) if c.is_ascii_punctuation() => {
                    lit.push(c);
                    i += 2;
                }
                _ => return unsupported(),
            },
            '$' if i + 1 == chars.len() => {
                anchored_end = true;
                i += 1;
            }
            '.' | '^' | '$' | '|' | '?' | '*' | '+' | '(' | ')' | '[' | ']' | '{' | '}' => return unsupported(),
            c => {
                lit.push(c);
                i += 1;
            }
        }
    }
    if multiline && (anchored_start || anchored_end) {
        // Line anchors: the query language's $options "m".
        return unsupported();
    }
    if fold && lit.chars().any(|c| !c.is_ascii() && (c.to_lowercase().ne(c.to_uppercase()))) {
        return Err(format!(
            "$regex on {k}: case-insensitive matching folds ASCII letters only in pgbaas, and {lit:?} has others (docs/parse.md)"
        ));
    }
    let op = match (anchored_start, anchored_end, fold) {
        (true, true, false) => return Ok(json!({k: {"$eq": lit}})),
        (true, true, true) => return unsupported(),
        (true, false, _) => "prefix",
        (false, true, _) => "suffix",
        (false, false, _) => "substring",
    };
    Ok(json!({k: {format!("${}{op}", if fold { "i" } else { "" }): lit}}))
}

/// Any other pattern as `$regex`/`$iregex`, checked here so that 102 names the field.
fn general_regex(k: &str, p: &str, fold: bool, multiline: bool) -> Result<Value, String> {
    use pgbaas_query::pattern::{expand_quotes, has_anchor, Pattern};
    let source = expand_quotes(p);
    let op = if fold { "$iregex" } else { "$regex" };
    let checked = Pattern::with_lines(k, "$regex", &source, fold, multiline).map_err(|e| format!("{} (docs/parse.md)", e.message))?;
    if multiline && has_anchor(&checked.canonical) {
        return Ok(json!({k: {op: source, "$options": "m"}}));
    }
    Ok(json!({k: {op: source}}))
}

/// The `x` option as Parse Server on Postgres reads it (its `removeWhiteSpace`): `#`
/// comments to the end of a line and unescaped whitespace taken out, then the pattern
/// trimmed. JavaScript's regular expressions spelled out: its `.` stops at any line
/// terminator, its `^` (with `m`) starts after any, and its `\s` and `trim()` are the
/// set `JS_SPACE`.
fn remove_white_space(p: &str) -> String {
    use std::sync::LazyLock;
    const JS_SPACE: &str = r"[\t\n\x0B\x0C\r \u{A0}\u{1680}\u{2000}-\u{200A}\u{2028}\u{2029}\u{202F}\u{205F}\u{3000}\u{FEFF}]";
    static STEPS: LazyLock<Vec<(regex::Regex, &'static str)>> = LazyLock::new(|| {
        [
            (r"([^\\])#[^\n\r\u{2028}\u{2029}]*\n".to_string(), "$1"),
            (r"(\A|[\n\r\u{2028}\u{2029}])#[^\n\r\u{2028}\u{2029}]*\n".to_string(), "$1"),
            (format!(r"([^\\]){JS_SPACE}+"), "$1"),
            (format!(r"\A{JS_SPACE}+"), ""),
        ]
        .into_iter()
        .filter_map(|(re, with)| regex::Regex::new(&re).ok().map(|r| (r, with)))
        .collect()
    });
    let mut s = p.to_string();
    if !s.ends_with('\n') {
        s.push('\n');
    }
    for (re, with) in STEPS.iter() {
        s = re.replace_all(&s, *with).into_owned();
    }
    let is_js_space = |c: char| matches!(c, '\t' | '\n' | '\u{B}' | '\u{C}' | '\r' | ' ' | '\u{A0}' | '\u{1680}' | '\u{2000}'..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}' | '\u{FEFF}');
    s.trim_matches(is_js_space).to_string()
}

/// Parse's `order` (`score,-name`, system fields by their Parse names) as pgbaas's.
pub fn order_of(order: &str) -> Result<String, ParseError> {
    let mut out = Vec::new();
    for part in order.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (desc, name) = match part.strip_prefix('-') {
            Some(n) => (true, n),
            None => (false, part),
        };
        let name = match name {
            "createdAt" => "created_at",
            "updatedAt" => "updated_at",
            "objectId" => "id",
            n => {
                check_key(n.split('.').next().unwrap_or(n)).map_err(|e| ParseError::bad(INVALID_QUERY, e.message))?;
                n
            }
        };
        out.push(if desc { format!("-{name}") } else { name.to_string() });
    }
    Ok(out.join(","))
}

/// `keys=a,b.c` as pgbaas's `fields` (top-level data fields; the system fields always
/// come).
pub fn fields_of(keys: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for k in keys.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        let top = k.split('.').next().unwrap_or(k).to_string();
        if !SYSTEM.contains(&top.as_str()) && !out.contains(&top) {
            out.push(top);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acls_map_both_ways_without_loss() {
        let u = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        let parse = json!({"*": {"read": true}, u: {"read": true, "write": true}, "role:admins": {"read": true, "write": true}});
        let baas = acl_to_baas(&parse).unwrap();
        let mut read: Vec<&str> = baas["read"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        read.sort();
        assert_eq!(read, vec!["public", "role:admins", &format!("user:{u}")[..]]);
        let mut write: Vec<&str> = baas["update"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        write.sort();
        assert_eq!(write, vec!["role:admins", &format!("user:{u}")[..]]);
        assert_eq!(baas["update"], baas["delete"]);
        assert_eq!(acl_from_baas(&baas), parse);
        let named = acl_to_baas(&json!({"role:Power Users": {"read": true}})).unwrap();
        assert_eq!(named["read"], json!(["role:power_users"]), "Parse role names in pgbaas's spelling");
        assert!(acl_to_baas(&json!({"alice": {"read": true}})).is_err(), "a user id that is not a uuid");
        assert!(acl_to_baas(&json!({"*": {"read": "yes"}})).is_err());
        assert!(acl_to_baas(&json!({"*": {"write": true}})).is_err(), "write without read would become read and write");
        assert!(acl_to_baas(&json!([])).is_err());
    }

    #[test]
    fn numbers_beyond_a_double_read_as_the_largest_one() {
        let v = from_db_text(r#"{"a": 3.4e308, "b": "3.4e308 \" 1e999", "c": [-1e400, 2, 1e-400]}"#).unwrap();
        assert_eq!(v["a"].as_f64(), Some(f64::MAX));
        assert_eq!(v["b"], "3.4e308 \" 1e999");
        assert_eq!(v["c"][0].as_f64(), Some(-f64::MAX));
        assert_eq!(v["c"][1], 2);
        assert!(from_db_text("{\"a\": ").is_err());
        let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
        assert!(from_db_text(&deep).is_ok(), "deeper than serde_json's default limit");
    }

    #[test]
    fn pages_are_rewritten_as_text_exactly_as_object_by_object() {
        let page = json!({"items": [
            {"id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "collection": "c", "owner": null, "version": 1,
             "created_at": "2026-12-04T16:20:00.123456+00:00", "updated_at": "2026-12-04T16:21:00+00:00",
             "data": {"a": 1, "s": "x\"y", "n": {"b": [1, 2]}}, "acl": {"read": ["public"], "update": [], "delete": []}},
            {"id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", "collection": "c", "owner": null, "version": 1,
             "created_at": "2026-12-04T16:20:00+00:00", "updated_at": "2026-12-04T16:20:00+00:00",
             "data": {}, "acl": {"read": [], "update": [], "delete": []}}], "next": null, "count": 7});
        let t = parse_page_text(&page.to_string()).unwrap();
        let fast: Value = serde_json::from_str(&t.body).unwrap();
        let slow: Vec<Value> = page["items"].as_array().unwrap().iter().map(object_from_doc).collect();
        assert_eq!(fast, json!({"results": slow, "count": 7}));
        assert_eq!((t.items, t.next), (2, false));
        // A document naming a Parse field itself takes the exact path.
        let own = json!({"items": [{"id": "x", "created_at": "t", "updated_at": "t", "data": {"objectId": 1}, "acl": {}}]});
        assert!(parse_page_text(&own.to_string()).is_none());
    }

    #[test]
    fn parse_dates_have_milliseconds_and_z() {
        assert_eq!(parse_date("2026-12-04T16:20:00.123456+00:00"), "2026-12-04T16:20:00.123Z");
        assert_eq!(parse_date("2026-12-04T16:20:00+00:00"), "2026-12-04T16:20:00.000Z");
        assert_eq!(parse_date("2026-12-04T16:20:00.1+00:00"), "2026-12-04T16:20:00.100Z");
        // Whatever the server's TimeZone: the instant, in UTC.
        assert_eq!(parse_date("2026-12-04T17:20:00.123999+01:00"), "2026-12-04T16:20:00.123Z");
        assert_eq!(parse_date("2026-12-04T11:20:00-05:00"), "2026-12-04T16:20:00.000Z");
    }

    #[test]
    fn updates_become_one_operator_patch() {
        let body = json!({"score": {"__op": "Increment", "amount": 2}, "name": "x", "gone": {"__op": "Delete"},
                          "tags": {"__op": "AddUnique", "objects": ["a"]}, "updatedAt": "whatever"});
        let (patch, acl, changed) = update_body(body.as_object().unwrap()).unwrap();
        assert_eq!(patch, json!({"$inc": {"score": 2}, "$set": {"name": "x"}, "$unset": {"gone": true}, "$addToSet": {"tags": {"$each": ["a"]}}}));
        assert!(acl.is_none());
        assert_eq!(changed, vec!["score", "tags"]);
        assert!(update_body(json!({"a": {"__op": "Frobnicate"}}).as_object().unwrap()).is_err());
        assert!(update_body(json!({"$set": 1}).as_object().unwrap()).is_err(), "a key that is not a Parse field name");
    }

    #[test]
    fn relations_are_kept_in_their_object() {
        let (a, b, c) = ("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5a", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c");
        let ptr = |id: &str| json!({"__type": "Pointer", "className": "Post", "objectId": id});
        let (data, _) = create_body(json!({"likes": {"__op": "AddRelation", "objects": [ptr(a), ptr(b), ptr(a)]}}).as_object().unwrap()).unwrap();
        assert_eq!(data, json!({"likes": {"__type": "Relation", "className": "Post", "objects": {a: true, b: true}}}));
        // The SDK's add and remove in one save: different paths, so one operator patch takes both.
        let (patch, _, _) = update_body(json!({"likes": {"__op": "Batch", "ops": [
            {"__op": "AddRelation", "objects": [ptr(c)]}, {"__op": "RemoveRelation", "objects": [ptr(a)]}]}}).as_object().unwrap()).unwrap();
        assert_eq!(patch, json!({"$set": {"likes.__type": "Relation", "likes.className": "Post", format!("likes.objects.{c}"): true},
                                 "$unset": {format!("likes.objects.{a}"): true}}));
        for bad in [
            json!({"likes": {"__op": "AddRelation", "objects": [ptr(a), {"__type": "Pointer", "className": "Other", "objectId": b}]}}),
            json!({"likes": {"__op": "AddRelation", "objects": [ptr("not-a-uuid")]}}),
            json!({"likes": {"__op": "AddRelation", "objects": {}}}),
        ] {
            assert_eq!(update_body(bad.as_object().unwrap()).unwrap_err().code, INCORRECT_TYPE, "{bad}");
        }
        assert!(update_body(json!({"likes": {"__op": "Batch", "ops": [1]}}).as_object().unwrap()).is_err());
        let shown = object_from_doc(&json!({"id": "i", "data": {"likes": {"__type": "Relation", "className": "Post", "objects": {a: true}}}}));
        assert_eq!(shown["likes"], json!({"__type": "Relation", "className": "Post"}), "the ids are not shown");
        assert_eq!(filter_of(&json!({"likes": ptr(a)})).unwrap(), json!({"likes": {"$eq": ptr(a)}}), "pointer equality stays one indexable condition");
    }

    #[test]
    fn wheres_become_filters() {
        assert_eq!(filter_of(&json!({"n": {"$gte": 2, "$lt": 5}})).unwrap(), json!({"$and": [{"n": {"$gte": 2}}, {"n": {"$lt": 5}}]}));
        assert_eq!(filter_of(&json!({"d": {"$gt": {"__type": "Date", "iso": "2026-01-01T00:00:00.000Z"}}})).unwrap(),
                   json!({"d.iso": {"$gt": "2026-01-01T00:00:00.000Z"}}));
        assert_eq!(filter_of(&json!({"$nor": [{"a": {"$exists": true}}]})).unwrap(), json!({"$not": {"$or": [{"a": {"$exists": true}}]}}));
        assert_eq!(filter_of(&json!({"a": 1})).unwrap(), json!({"a": {"$eq": 1}}));
        assert_eq!(filter_of(&json!({"a": {"$all": [1, 2]}})).unwrap(), json!({"$and": [{"a": {"$contains": 1}}, {"a": {"$contains": 2}}]}));
        // Times compare as Parse shows them, to the millisecond.
        let d = |iso: &str| json!({"__type": "Date", "iso": iso});
        assert_eq!(filter_of(&json!({"createdAt": {"$gt": d("2026-12-04T10:00:00.123Z")}})).unwrap(),
                   json!({"$created_at": {"$gte": "2026-12-04T10:00:00.124000Z"}}));
        assert_eq!(filter_of(&json!({"updatedAt": {"$lte": d("2026-12-04T11:00:00.123+01:00")}})).unwrap(),
                   json!({"$updated_at": {"$lt": "2026-12-04T10:00:00.124000Z"}}));
        assert_eq!(filter_of(&json!({"createdAt": {"$gte": d("2026-12-04T10:00:00.1234Z"), "$lt": d("2026-12-04T10:00:00.1234Z")}})).unwrap(),
                   json!({"$and": [{"$created_at": {"$gte": "2026-12-04T10:00:00.124000Z"}}, {"$created_at": {"$lt": "2026-12-04T10:00:00.124000Z"}}]}));
        assert_eq!(filter_of(&json!({"createdAt": d("2026-12-04T10:00:00.123Z")})).unwrap(),
                   json!({"$and": [{"$created_at": {"$gte": "2026-12-04T10:00:00.123000Z"}}, {"$created_at": {"$lt": "2026-12-04T10:00:00.124000Z"}}]}));
        assert_eq!(filter_of(&json!({"createdAt": {"$ne": d("2026-12-04T10:00:00.1234Z")}})).unwrap(), json!({"$not": {"$not": {}}}));
        // At the end of year 9999 a bound past the last instant holds for all or nothing.
        assert_eq!(filter_of(&json!({"createdAt": {"$lte": d("9999-12-31T23:59:59.999Z")}})).unwrap(), json!({}));
        assert_eq!(filter_of(&json!({"createdAt": {"$gt": d("9999-12-31T23:59:59.999Z")}})).unwrap(), json!({"$not": {}}));
        assert_eq!(filter_of(&json!({"createdAt": d("9999-12-31T23:59:59.999Z")})).unwrap(),
                   json!({"$and": [{"$created_at": {"$gte": "9999-12-31T23:59:59.999000Z"}}, {}]}));
        for w in [json!({"createdAt": {"$gte": d("9999-12-31T23:59:59.9995Z"), "$lt": d("0001-01-01T00:00:00Z")}})] {
            pgbaas_query::parse::parse(&filter_of(&w).unwrap()).unwrap();
        }
        let one = json!({"$and": [{"$created_at": {"$gte": "2026-12-04T10:00:00.123000Z"}}, {"$created_at": {"$lt": "2026-12-04T10:00:00.124000Z"}}]});
        assert_eq!(filter_of(&json!({"createdAt": {"$in": [d("2026-12-04T10:00:00.123Z"), d("2026-12-04T10:00:00.1234Z")]}})).unwrap(),
                   json!({"$or": [one, {"$not": {}}]}));
        assert_eq!(filter_of(&json!({"createdAt": {"$nin": [d("2026-12-04T10:00:00.123Z")]}})).unwrap(), json!({"$not": {"$or": [one]}}));
        assert_eq!(filter_of(&json!({"createdAt": {"$in": []}})).unwrap(), json!({"$not": {}}));
        assert_eq!(filter_of(&json!({"createdAt": {"$nin": []}})).unwrap(), json!({"$not": {"$not": {}}}));
        for w in [json!({"createdAt": {"$in": d("2026-12-04T10:00:00Z")}}), json!({"createdAt": {"$in": vec![d("2026-12-04T10:00:00Z"); 101]}}), json!({"createdAt": {"$gt": 5}}),
                  json!({"updatedAt": {"$gt": d("yesterday")}})] {
            assert_eq!(filter_of(&w).unwrap_err().code, INVALID_QUERY, "{w}");
        }
        // The SDKs' startsWith, endsWith, contains and simple matches.
        let q = |s: &str| format!("\\Q{}\\E", s.replace("\\E", "\\E\\\\E\\Q"));
        assert_eq!(filter_of(&json!({"a": {"$regex": format!("^{}", q("Ab.c"))}})).unwrap(), json!({"a": {"$prefix": "Ab.c"}}));
        assert_eq!(filter_of(&json!({"a": {"$regex": format!("{}$", q("x\\Ey"))}})).unwrap(), json!({"a": {"$suffix": "x\\Ey"}}));
        assert_eq!(filter_of(&json!({"a": {"$regex": q("b"), "$options": "i"}})).unwrap(), json!({"a": {"$isubstring": "b"}}));
        assert_eq!(filter_of(&json!({"a": {"$regex": "^hello world$"}})).unwrap(), json!({"a": {"$eq": "hello world"}}));
        assert_eq!(filter_of(&json!({"a": {"$regex": "a\\.b", "$options": "ms"}})).unwrap(), json!({"a": {"$substring": "a.b"}}));
        assert_eq!(filter_of(&json!({"a": {"$regex": ""}})).unwrap(), json!({"a": {"$substring": ""}}));
        // Other patterns: the query language's $regex, quoted parts expanded.
        assert_eq!(filter_of(&json!({"a": {"$regex": "a.*b"}})).unwrap(), json!({"a": {"$regex": "a.*b"}}));
        assert_eq!(filter_of(&json!({"a": {"$regex": "^x$", "$options": "i"}})).unwrap(), json!({"a": {"$iregex": "^x$"}}));
        assert_eq!(filter_of(&json!({"a": {"$regex": format!("^{}\\d", q("a.b"))}})).unwrap(), json!({"a": {"$regex": "^a\\.b\\d"}}));
        assert_eq!(filter_of(&json!({"a": {"$regex": "x[^y]", "$options": "m"}})).unwrap(), json!({"a": {"$regex": "x[^y]"}}));
        // Line anchors (m): the query language's $options "m".
        assert_eq!(filter_of(&json!({"a": {"$regex": "^x", "$options": "m"}})).unwrap(), json!({"a": {"$regex": "^x", "$options": "m"}}));
        assert_eq!(filter_of(&json!({"a": {"$regex": "x.$", "$options": "im"}})).unwrap(), json!({"a": {"$iregex": "x.$", "$options": "m"}}));
        // x: whitespace and comments out, as Parse Server does.
        assert_eq!(filter_of(&json!({"a": {"$regex": "^a b # the rest\n c\\ d$", "$options": "x"}})).unwrap(), json!({"a": {"$regex": "^abc\\ d$"}}), "an escaped space stays");
        assert_eq!(filter_of(&json!({"a": {"$regex": " hello ", "$options": "x"}})).unwrap(), json!({"a": {"$substring": "hello"}}));
        assert_eq!(remove_white_space("# all comment\na\tb\n"), "ab");
        assert_eq!(remove_white_space("\r#a\n#b\n"), "", "a comment line after any line terminator, as JavaScript's ^ with m");
        assert_eq!(remove_white_space("\u{FEFF}a\u{85}"), "a\u{85}", "JavaScript's whitespace, not Rust's");
        for f in [json!({"a": {"$regex": "^x", "$options": "m"}}), json!({"a": {"$regex": "x.$", "$options": "im"}})] {
            pgbaas_query::parse::parse(&filter_of(&f).unwrap()).unwrap();
        }
        for (w, says) in [
            (json!({"a": {"$regex": "\\bx"}}), "a.$regex: word boundaries"),
            (json!({"a": {"$regex": "(x)\\1"}}), "backreferences"),
            (json!({"a": {"$regex": "x(", "$options": "i"}}), "unclosed group"),
            (json!({"a": {"$regex": "x", "$options": "g"}}), "options"),
            (json!({"a": {"$regex": "É", "$options": "i"}}), "ASCII"),
            (json!({"a": {"$regex": "[É]", "$options": "i"}}), "ASCII"),
            (json!({"a": {"$options": "i"}}), "goes with"),
            (json!({"a": {"$regex": 1}}), "string"),
        ] {
            let e = filter_of(&w).unwrap_err();
            assert_eq!(e.code, INVALID_QUERY, "{w}");
            assert!(e.message.contains(says), "{w}: {}", e.message);
        }
        for bad in [json!({"objectId": "x"}), json!({"$where": 1}), json!([]), json!({"a": {"$in": 1}})] {
            let e = filter_of(&bad).unwrap_err();
            assert_eq!(e.code, INVALID_QUERY, "{bad}");
        }
    }

    #[test]
    fn orders_and_keys_use_pgbaas_names() {
        assert_eq!(order_of("-createdAt,score,objectId").unwrap(), "-created_at,score,id");
        assert!(order_of("a;drop").is_err());
        assert_eq!(fields_of("a,b.c,objectId,a"), vec!["a", "b"]);
    }

    #[test]
    fn class_names_are_parse_names_in_lower_case() {
        assert_eq!(collection_of("GameScore").unwrap(), "gamescore");
        for bad in ["_User", "1a", "a-b", "", "Ä"] {
            assert_eq!(collection_of(bad).unwrap_err().code, INVALID_CLASS_NAME, "{bad}");
        }
    }
}
