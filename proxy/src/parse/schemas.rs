//! Parse schemas (`/schemas`, issue 21, docs/parse.md "Schemas"): `Parse.Schema` and
//! the Parse Dashboard with the master key. A class is a collection (not a file
//! bucket); pgbaas keeps no field types, so `baas.parse_schemas` shows the fields its
//! newest documents hold, typed by their values, and the class-level permissions its
//! `create` option gives. A class is made (`baas.parse_create_class`) and an empty one
//! dropped (`baas.parse_drop_class`); Postgres refuses all of it to anyone but the
//! service role, and this module says so first.

use super::convert::{self, ParseError, INCORRECT_TYPE, INVALID_CLASS_NAME, INVALID_JSON, INVALID_KEY_NAME, INVALID_QUERY, OPERATION_FORBIDDEN};
use super::Call;
use http::StatusCode;
use serde_json::{json, Map, Value};

/// Parse's code for dropping a class that still has objects.
const CLASS_NOT_EMPTY: i64 = 255;

fn master_only(c: &Call<'_>) -> Result<(), ParseError> {
    match c.master {
        true => Ok(()),
        // As Parse Server answers it.
        false => Err(ParseError::new(StatusCode::FORBIDDEN, OPERATION_FORBIDDEN, "unauthorized: master key is required")),
    }
}

/// The classes that are no collection, as their fixed fields.
fn system(class: &str) -> Option<Value> {
    let base = json!({"objectId": {"type": "String"}, "createdAt": {"type": "Date"}, "updatedAt": {"type": "Date"}, "ACL": {"type": "ACL"}});
    let clp = |create: Value, write: Value| {
        json!({"find": {"*": true}, "count": {"*": true}, "get": {"*": true}, "create": create, "update": write.clone(), "delete": write,
               "addField": {"*": true}, "protectedFields": {"*": []}})
    };
    let (extra, clp) = match class {
        "_User" => (
            json!({"username": {"type": "String"}, "password": {"type": "String"}, "email": {"type": "String"}, "emailVerified": {"type": "Boolean"}, "authData": {"type": "Object"}}),
            clp(json!({"*": true}), json!({"*": true})),
        ),
        // Only the master key (or a DBA) makes and changes roles.
        "_Role" => (
            json!({"name": {"type": "String"}, "users": {"type": "Relation", "targetClass": "_User"}, "roles": {"type": "Relation", "targetClass": "_Role"}}),
            clp(json!({}), json!({})),
        ),
        _ => return None,
    };
    let mut fields = base;
    if let (Some(f), Some(e)) = (fields.as_object_mut(), extra.as_object()) {
        f.extend(e.clone());
    }
    Some(json!({"className": class, "fields": fields, "classLevelPermissions": clp}))
}

fn not_there(class: &str) -> ParseError {
    ParseError::bad(INVALID_CLASS_NAME, format!("Class {class} does not exist."))
}

/// A schema error as Parse words it (a class is a collection here).
fn schema_error(class: &str, e: ParseError) -> ParseError {
    match e.from.as_str() {
        "collection_not_found" => not_there(class),
        "collection_exists" => ParseError::bad(INVALID_CLASS_NAME, format!("Class {class} already exists.")),
        "class_not_empty" => ParseError::bad(CLASS_NOT_EMPTY, e.message),
        _ => e,
    }
}

async fn one(c: &Call<'_>, class: &str) -> Result<Value, ParseError> {
    if let Some(s) = system(class) {
        return Ok(s);
    }
    let name = convert::collection_of(class)?;
    let list = c.run("select baas.parse_schemas($1)::text", &[&name]).await?;
    list.as_array().and_then(|a| a.first().cloned()).ok_or_else(|| not_there(class))
}

/// `GET /schemas`: every class, the system ones first.
pub(super) async fn all(c: &Call<'_>) -> Result<(StatusCode, Value), ParseError> {
    master_only(c)?;
    let list = c.run("select baas.parse_schemas()::text", &[]).await?;
    let mut results: Vec<Value> = ["_User", "_Role"].iter().filter_map(|s| system(s)).collect();
    results.extend(list.as_array().cloned().unwrap_or_default());
    Ok((StatusCode::OK, json!({"results": results})))
}

/// `GET /schemas/{class}`.
pub(super) async fn get(c: &Call<'_>, class: &str) -> Result<(StatusCode, Value), ParseError> {
    master_only(c)?;
    Ok((StatusCode::OK, one(c, class).await?))
}

/// Who may create, from Parse's `classLevelPermissions.create` (`*`,
/// `requiresAuthentication`, a user's objectId, `role:Name`), as pgbaas principals.
fn creators(clp: Option<&Value>) -> Result<Vec<String>, ParseError> {
    let bad = |m: String| ParseError::bad(INVALID_JSON, m);
    let Some(clp) = clp else { return Ok(vec!["public".into()]) };
    let clp = clp.as_object().ok_or_else(|| bad("classLevelPermissions must be an object".into()))?;
    let open = |v: &Value| v == &json!({"*": true});
    for (k, v) in clp {
        let ok = match k.as_str() {
            "create" => true,
            // Anyone may, each object's ACL deciding: what pgbaas does.
            "find" | "count" | "get" | "update" | "delete" | "addField" => open(v),
            // Nothing hidden (Parse Server's default is {"*": []}).
            "protectedFields" => v.as_object().is_some_and(|o| o.values().all(|l| l.as_array().is_some_and(Vec::is_empty))),
            _ => false,
        };
        if !ok {
            return Err(bad(format!(
                "classLevelPermissions.{k}: pgbaas decides reads, updates and deletes by each object's ACL, keeps no field list and hides no field; only create is a class's (docs/parse.md)"
            )));
        }
    }
    let Some(create) = clp.get("create") else { return Ok(vec!["public".into()]) };
    let create = create.as_object().ok_or_else(|| bad("classLevelPermissions.create must be an object".into()))?;
    let mut out = Vec::new();
    for (who, allowed) in create {
        match allowed {
            Value::Bool(true) => {}
            Value::Bool(false) => continue,
            _ => return Err(bad(format!("classLevelPermissions.create.{who} must be true or false"))),
        }
        out.push(match who.as_str() {
            "*" => "public".to_string(),
            "requiresAuthentication" => "authenticated".to_string(),
            w if w.starts_with("role:") => format!("role:{}", convert::role_name(&w[5..])),
            w => format!("user:{}", convert::object_id(w).map_err(|_| bad(format!("classLevelPermissions.create names {w:?}, which is neither *, requiresAuthentication, a user's objectId nor role:<name>")))?),
        });
    }
    Ok(out)
}

/// Parse's field types.
const TYPES: &[&str] = &["String", "Number", "Boolean", "Date", "Object", "Array", "GeoPoint", "File", "Pointer", "Relation", "Bytes", "Polygon"];

/// The field types a schema change names: accepted (pgbaas keeps none; documents hold
/// what they hold), but checked to be Parse's types and names. What pgbaas would not
/// enforce — a required field, a default value — and deleting a field are refused.
fn check_fields(fields: Option<&Value>) -> Result<(), ParseError> {
    let Some(fields) = fields else { return Ok(()) };
    let fields = fields.as_object().ok_or_else(|| ParseError::bad(INVALID_JSON, "fields must be an object"))?;
    for (k, v) in fields {
        let mut b = k.bytes();
        if !(b.next().is_some_and(|c| c.is_ascii_alphabetic()) && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')) {
            return Err(ParseError::bad(INVALID_KEY_NAME, format!("invalid field name: {k}")));
        }
        if v.get("__op").is_some() {
            return Err(ParseError::bad(INVALID_QUERY, format!("fields.{k}: pgbaas keeps no field list to delete from; unset the field on the objects instead (docs/parse.md)")));
        }
        if !v.get("type").and_then(Value::as_str).is_some_and(|t| TYPES.contains(&t)) {
            return Err(ParseError::bad(INCORRECT_TYPE, format!("fields.{k}: invalid field type (Parse's types: {})", TYPES.join(", "))));
        }
        if v.get("required") == Some(&Value::Bool(true)) || v.get("defaultValue").is_some() {
            return Err(ParseError::bad(INVALID_QUERY, format!("fields.{k}: pgbaas does not enforce required fields or default values; a collection's JSON schema does (docs/parse.md)")));
        }
    }
    Ok(())
}

fn body_class<'a>(class: Option<&'a str>, body: &'a Map<String, Value>) -> Result<&'a str, ParseError> {
    let named = body.get("className").and_then(Value::as_str);
    match (class, named) {
        (Some(a), Some(b)) if a != b => Err(ParseError::bad(INVALID_CLASS_NAME, format!("Class name mismatch between {b} and {a}."))),
        (Some(a), _) => Ok(a),
        (None, Some(b)) => Ok(b),
        (None, None) => Err(ParseError::bad(convert::MISSING_REQUIRED_FIELD, "POST /schemas needs a className.")),
    }
}

fn only(body: &Map<String, Value>, allowed: &[&str]) -> Result<(), ParseError> {
    match body.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ParseError::bad(INVALID_JSON, format!("a schema change takes {}, not {k}", allowed.join(", ")))),
        None => Ok(()),
    }
}

/// `POST /schemas[/{class}]` (`schema.save()`): a new class.
pub(super) async fn create(c: &Call<'_>, class: Option<&str>, body: &Map<String, Value>) -> Result<(StatusCode, Value), ParseError> {
    master_only(c)?;
    only(body, &["className", "fields", "classLevelPermissions", "indexes"])?;
    let class = body_class(class, body)?;
    if system(class).is_some() {
        return Err(ParseError::bad(INVALID_CLASS_NAME, format!("Class {class} already exists.")));
    }
    let name = convert::collection_of(class)?;
    check_fields(body.get("fields"))?;
    if body.get("indexes").is_some_and(|i| i.as_object().is_none_or(|o| !o.is_empty())) {
        return Err(ParseError::bad(INVALID_QUERY, "indexes are made in SQL (baas.create_index, docs/query.md)"));
    }
    let who = creators(body.get("classLevelPermissions"))?;
    let schema = c.run("select baas.parse_create_class($1, $2)::text", &[&name, &who]).await.map_err(|e| schema_error(class, e))?;
    Ok((StatusCode::OK, schema))
}

/// `PUT /schemas/{class}` (`schema.update()`): fields to add are accepted as they are
/// (documents hold what they hold); the class must exist.
pub(super) async fn update(c: &Call<'_>, class: &str, body: &Map<String, Value>) -> Result<(StatusCode, Value), ParseError> {
    master_only(c)?;
    only(body, &["className", "fields", "classLevelPermissions", "indexes"])?;
    body_class(Some(class), body)?;
    check_fields(body.get("fields"))?;
    if body.contains_key("classLevelPermissions") || body.get("indexes").is_some_and(|i| i.as_object().is_none_or(|o| !o.is_empty())) {
        return Err(ParseError::bad(INVALID_QUERY, "a class's create permission and indexes change in SQL (baas.create_collection's options, baas.create_index); docs/parse.md"));
    }
    Ok((StatusCode::OK, one(c, class).await?))
}

/// `DELETE /schemas/{class}` (`schema.delete()`): an empty class's collection goes.
pub(super) async fn delete(c: &Call<'_>, class: &str) -> Result<(StatusCode, Value), ParseError> {
    master_only(c)?;
    if system(class).is_some() {
        return Err(ParseError::bad(OPERATION_FORBIDDEN, format!("{class} is a system class and cannot be dropped.")));
    }
    let name = convert::collection_of(class)?;
    match c.run("select baas.parse_drop_class($1)::text", &[&name]).await {
        // As Parse Server: dropping a class that is not there is done.
        Err(e) if e.from == "collection_not_found" => Ok((StatusCode::OK, json!({}))),
        Err(e) => Err(schema_error(class, e)),
        Ok(_) => Ok((StatusCode::OK, json!({}))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_level_permissions_become_who_may_create() {
        let u = "0190f4d2-8a1b-7c3d-9e4f-000000000001";
        assert_eq!(creators(None).unwrap(), vec!["public"], "Parse's default: anyone creates");
        let clp = json!({"find": {"*": true}, "create": {"requiresAuthentication": true, "role:Power Users": true, u: true, "*": false}});
        let mut got = creators(Some(&clp)).unwrap();
        got.sort();
        assert_eq!(got, vec!["authenticated".to_string(), "role:power_users".into(), format!("user:{u}")]);
        let parse_default = json!({"find": {"*": true}, "count": {"*": true}, "get": {"*": true}, "create": {"*": true}, "update": {"*": true},
                                   "delete": {"*": true}, "addField": {"*": true}, "protectedFields": {"*": []}});
        assert_eq!(creators(Some(&parse_default)).unwrap(), vec!["public"], "Parse Server's default CLP");
        for bad in [json!([]), json!({"create": {"someone": true}}), json!({"find": {"requiresAuthentication": true}}), json!({"create": []}),
                    json!({"find": {}}), json!({"addField": {}}), json!({"protectedFields": {"*": ["email"]}}), json!({"create": {"*": "yes"}}),
                    json!({"readUserFields": ["owner"]})] {
            assert_eq!(creators(Some(&bad)).unwrap_err().code, INVALID_JSON, "{bad}");
        }
    }

    #[test]
    fn schema_changes_take_types_and_refuse_what_is_not_kept() {
        assert!(check_fields(Some(&json!({"name": {"type": "String"}, "n": {"type": "Number", "required": false}, "p": {"type": "Pointer", "targetClass": "A"}}))).is_ok());
        assert_eq!(check_fields(Some(&json!({"name": {"__op": "Delete"}}))).unwrap_err().code, INVALID_QUERY);
        assert_eq!(check_fields(Some(&json!({"name": "String"}))).unwrap_err().code, INCORRECT_TYPE);
        assert_eq!(check_fields(Some(&json!({"name": {"type": "Strin"}}))).unwrap_err().code, INCORRECT_TYPE);
        assert_eq!(check_fields(Some(&json!({"1name": {"type": "String"}}))).unwrap_err().code, INVALID_KEY_NAME);
        assert_eq!(check_fields(Some(&json!({"name": {"type": "String", "required": true}}))).unwrap_err().code, INVALID_QUERY);
        assert_eq!(check_fields(Some(&json!({"name": {"type": "String", "defaultValue": "x"}}))).unwrap_err().code, INVALID_QUERY);
        assert_eq!(check_fields(Some(&json!([]))).unwrap_err().code, INVALID_JSON);
        let b = json!({"className": "A"});
        assert_eq!(body_class(Some("B"), b.as_object().unwrap()).unwrap_err().code, INVALID_CLASS_NAME);
        assert_eq!(system("_Role").unwrap()["fields"]["users"]["targetClass"], "_User");
    }
}
