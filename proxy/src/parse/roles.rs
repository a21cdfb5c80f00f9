//! Parse roles (`/classes/_Role`, issue 21, docs/parse.md "Roles"): pgbaas's roles.
//! A role's objectId and name are its pgbaas name (Parse's name in pgbaas's spelling,
//! `convert::role_name`, as ACLs name it); its `users` relation is its direct members,
//! its `roles` relation the roles whose members it contains. Postgres decides what a
//! caller sees (`baas.parse_roles`: every role for the master key, the roles it holds
//! for anyone else) and who may change roles (`baas.parse_save_role`, the master key
//! only); this module reads the Parse request and answers in Parse's shape. A query's
//! `where` is checked here over that list: a caller sees few roles.

use super::convert::{self, ParseError, INCORRECT_TYPE, INVALID_JSON, INVALID_QUERY, OPERATION_FORBIDDEN};
use super::{check_params, count_wanted, page_args, select_keys, where_of, Call};
use http::StatusCode;
use serde_json::{json, Map, Value};

/// A role as `baas.parse_roles` lists it.
#[derive(Debug, Clone)]
struct Role {
    name: String,
    created: String,
    users: Vec<String>,
    roles: Vec<String>,
}

impl Role {
    fn of(v: &Value) -> Option<Role> {
        let list = |k: &str| v.get(k).and_then(Value::as_array).map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default();
        Some(Role { name: v.get("name")?.as_str()?.to_string(), created: v.get("createdAt")?.as_str()?.to_string(), users: list("users"), roles: list("roles") })
    }

    fn object(&self) -> Value {
        json!({
            "objectId": self.name, "name": self.name, "createdAt": self.created, "updatedAt": self.created,
            "users": {"__type": "Relation", "className": "_User"},
            "roles": {"__type": "Relation", "className": "_Role"},
        })
    }

    /// What a condition on `key` compares: the name, or a relation's members.
    fn values(&self, key: &str) -> Vec<&str> {
        match key {
            "users" => self.users.iter().map(String::as_str).collect(),
            "roles" => self.roles.iter().map(String::as_str).collect(),
            _ => vec![self.name.as_str()],
        }
    }
}

async fn visible(c: &Call<'_>) -> Result<Vec<Role>, ParseError> {
    let list = c.run("select baas.parse_roles()::text", &[]).await?;
    Ok(list.as_array().map(|a| a.iter().filter_map(Role::of).collect()).unwrap_or_default())
}

const KEYS: &str = "a _Role query takes objectId, name, users, roles, $relatedTo (key roles), $or and $and";

/// A condition's operand on `key`: a name (Parse's spelling is mapped as ACLs map it),
/// an objectId as it is, a pointer to a user or a role.
fn operand(key: &str, v: &Value) -> Result<String, ParseError> {
    let pointer = |class: &str| -> Result<String, ParseError> {
        match (v.get("__type").and_then(Value::as_str), v.get("className").and_then(Value::as_str), v.get("objectId").and_then(Value::as_str)) {
            (Some("Pointer"), Some(c), Some(id)) if c == class && class == "_User" => Ok(id.to_ascii_lowercase()),
            (Some("Pointer"), Some(c), Some(id)) if c == class => Ok(id.to_string()),
            _ => Err(ParseError::bad(INVALID_QUERY, format!("{key} is compared with a pointer to {class}"))),
        }
    };
    match key {
        "name" => v.as_str().map(convert::role_name).ok_or_else(|| ParseError::bad(INVALID_QUERY, "name is compared with a string")),
        "objectId" => v.as_str().map(str::to_string).ok_or_else(|| ParseError::bad(INVALID_QUERY, "objectId is compared with a string")),
        "users" => pointer("_User"),
        "roles" => pointer("_Role"),
        _ => Err(ParseError::bad(INVALID_QUERY, KEYS)),
    }
}

/// Whether `role` meets `where` (a JSON object), `all` being every visible role (for
/// `$relatedTo`). Every condition is read whatever the answer, so that one the door does
/// not serve is refused whatever roles there are.
fn matches(role: &Role, where_: &Map<String, Value>, all: &[Role]) -> Result<bool, ParseError> {
    let mut all_ok = true;
    for (key, cond) in where_ {
        let ok = match key.as_str() {
            "$or" | "$and" => {
                let parts = cond.as_array().ok_or_else(|| ParseError::bad(INVALID_QUERY, format!("{key} takes an array of queries")))?;
                let mut results = Vec::with_capacity(parts.len());
                for p in parts {
                    let p = p.as_object().ok_or_else(|| ParseError::bad(INVALID_QUERY, format!("{key} takes an array of queries")))?;
                    results.push(matches(role, p, all)?);
                }
                if key == "$or" { results.iter().any(|b| *b) } else { results.iter().all(|b| *b) }
            }
            "$relatedTo" => {
                let bad = || ParseError::bad(INVALID_QUERY, "$relatedTo on _Role takes {object: a pointer to a _Role, key: \"roles\"}");
                if cond.get("key").and_then(Value::as_str) != Some("roles") {
                    return Err(bad());
                }
                let parent = operand("roles", cond.get("object").ok_or_else(bad)?).map_err(|_| bad())?;
                all.iter().any(|r| r.name == parent && r.roles.contains(&role.name))
            }
            "objectId" | "name" | "users" | "roles" => {
                let values = role.values(key);
                match cond.as_object().filter(|o| o.keys().next().is_some_and(|k| k.starts_with('$'))) {
                    None => values.contains(&operand(key, cond)?.as_str()),
                    Some(ops) => {
                        let mut ok = true;
                        for (op, arg) in ops {
                            let list = || -> Result<Vec<String>, ParseError> {
                                let a = arg.as_array().ok_or_else(|| ParseError::bad(INVALID_QUERY, format!("{op} takes an array")))?;
                                a.iter().map(|x| operand(key, x)).collect()
                            };
                            ok &= match op.as_str() {
                                "$eq" => values.contains(&operand(key, arg)?.as_str()),
                                "$ne" => !values.contains(&operand(key, arg)?.as_str()),
                                "$in" => list()?.iter().any(|x| values.contains(&x.as_str())),
                                "$nin" => !list()?.iter().any(|x| values.contains(&x.as_str())),
                                // (As in Parse on MongoDB, an empty list holds for none.)
                                "$all" => list().map(|l| !l.is_empty() && l.iter().all(|x| values.contains(&x.as_str())))?,
                                "$exists" if key == "name" || key == "objectId" => arg.as_bool() == Some(true),
                                _ => return Err(ParseError::bad(INVALID_QUERY, format!("{op} on _Role.{key} is not supported: a _Role query compares with $eq, $ne, $in, $nin and $all"))),
                            };
                        }
                        ok
                    }
                }
            }
            _ => return Err(ParseError::bad(INVALID_QUERY, KEYS)),
        };
        all_ok &= ok;
    }
    Ok(all_ok)
}

/// A role's objectId as a pgbaas role name, or None: no role has it (a name pgbaas
/// would refuse names none).
fn role_id(id: &str) -> Option<&str> {
    let mut b = id.bytes();
    let ok = id.len() <= 63
        && b.next().is_some_and(|c| c.is_ascii_lowercase())
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-'));
    ok.then_some(id)
}

/// `GET /classes/_Role`: the visible roles that meet `where`, with `order` (name,
/// createdAt, objectId), `limit`, `skip`, `count`, `keys` and `excludeKeys`.
pub(super) async fn find(c: &Call<'_>, params: &Map<String, Value>) -> Result<(StatusCode, Value), ParseError> {
    check_params(params, &["where", "order", "limit", "skip", "count", "keys", "excludeKeys"])?;
    let Value::Object(where_) = where_of(params)? else {
        return Err(ParseError::bad(INVALID_QUERY, "where must be a JSON object"));
    };
    let (limit, skip) = page_args(params)?;
    let count = count_wanted(params);
    // Checked once whatever roles there are (a caller with none gets the same 102).
    let nobody = Role { name: String::new(), created: String::new(), users: Vec::new(), roles: Vec::new() };
    matches(&nobody, &where_, &[])?;
    let all = visible(c).await?;
    let mut found = Vec::new();
    for r in &all {
        if matches(r, &where_, &all)? {
            found.push(r.clone());
        }
    }
    // Listed by creation; `order` as Parse reads it (the last key decides least).
    if let Some(order) = params.get("order").and_then(Value::as_str) {
        for key in order.split(',').rev().map(str::trim).filter(|k| !k.is_empty()) {
            let (desc, field) = key.strip_prefix('-').map_or((false, key), |f| (true, f));
            let key = match field {
                "name" | "objectId" => |r: &Role| r.name.clone(),
                "createdAt" | "updatedAt" => |r: &Role| r.created.clone(),
                _ => return Err(ParseError::bad(INVALID_QUERY, format!("a _Role query is ordered by name, objectId or createdAt, not {field}"))),
            };
            // Stable sorts, last key first: a descending key compares the other way
            // (reversing the list would also reverse the earlier keys' ties).
            found.sort_by(|a, b| if desc { key(b).cmp(&key(a)) } else { key(a).cmp(&key(b)) });
        }
    }
    let total = found.len();
    let results: Vec<Value> = found
        .iter()
        .skip(skip as usize)
        .take(limit as usize)
        .map(|r| {
            let mut o = r.object();
            select_keys(&mut o, params);
            o
        })
        .collect();
    let mut out = json!({"results": results});
    if count {
        out["count"] = json!(total);
    }
    Ok((StatusCode::OK, out))
}

/// `GET /classes/_Role/{id}`: one visible role, else 101.
pub(super) async fn get(c: &Call<'_>, id: &str, params: &Map<String, Value>) -> Result<(StatusCode, Value), ParseError> {
    check_params(params, &["keys", "excludeKeys"])?;
    let id = role_id(id).ok_or_else(ParseError::not_found)?;
    let role = visible(c).await?.into_iter().find(|r| r.name == id).ok_or_else(ParseError::not_found)?;
    let mut o = role.object();
    select_keys(&mut o, params);
    Ok((StatusCode::OK, o))
}

/// Members to add and remove, from `AddRelation`/`RemoveRelation` (or a `Batch` of
/// them, as the SDK sends an add and a remove in one save) of pointers to `class`.
fn relation_ops(key: &str, v: &Value, class: &str, add: &mut Vec<String>, remove: &mut Vec<String>) -> Result<(), ParseError> {
    let bad = || ParseError::bad(INCORRECT_TYPE, format!("{key}: a role's {key} change with AddRelation or RemoveRelation of pointers to {class}"));
    let ops: Vec<&Value> = match v.get("__op").and_then(Value::as_str) {
        Some("Batch") => v.get("ops").and_then(Value::as_array).ok_or_else(bad)?.iter().collect(),
        Some(_) => vec![v],
        None => return Err(bad()),
    };
    for op in ops {
        let into = match op.get("__op").and_then(Value::as_str) {
            Some("AddRelation") => &mut *add,
            Some("RemoveRelation") => &mut *remove,
            _ => return Err(bad()),
        };
        for p in op.get("objects").and_then(Value::as_array).ok_or_else(bad)? {
            let id = operand(key, p).map_err(|_| bad())?;
            // A role no name of pgbaas could be: no such role (101).
            if class == "_Role" && role_id(&id).is_none() {
                return Err(ParseError::not_found());
            }
            into.push(id);
        }
    }
    Ok(())
}

/// `POST /classes/_Role` (`new Parse.Role(name, acl).save()`) and `PUT
/// /classes/_Role/{id}` (`role.getUsers().add(user); role.save()`): with the master key.
/// A role has no ACL of its own in pgbaas (who sees it is pgbaas's rule): an ACL sent
/// is accepted and not kept.
pub(super) async fn save(c: &Call<'_>, id: Option<&str>, body: &Map<String, Value>) -> Result<(StatusCode, Value), ParseError> {
    let (mut users_add, mut users_remove, mut roles_add, mut roles_remove) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut name: Option<String> = None;
    for (k, v) in body {
        match k.as_str() {
            "name" => name = Some(v.as_str().filter(|s| !s.trim().is_empty()).map(convert::role_name).ok_or_else(|| ParseError::bad(INCORRECT_TYPE, "a role's name is a string"))?),
            "ACL" => {}
            "users" => relation_ops(k, v, "_User", &mut users_add, &mut users_remove)?,
            "roles" => relation_ops(k, v, "_Role", &mut roles_add, &mut roles_remove)?,
            _ => return Err(ParseError::bad(INVALID_JSON, format!("a role holds name, ACL, users and roles in pgbaas, not {k}"))),
        }
    }
    // A user's objectId is a uuid; anything else names no user (101).
    let uuids = |ids: Vec<String>| -> Result<Vec<String>, ParseError> { ids.iter().map(|i| convert::object_id(i)).collect() };
    let (users_add, users_remove) = (uuids(users_add)?, uuids(users_remove)?);
    let (name, is_new) = match (id, name) {
        (None, Some(n)) => (n, true),
        (None, None) => return Err(ParseError::bad(convert::MISSING_REQUIRED_FIELD, "a role needs a name")),
        (Some(id), Some(n)) if n != id => {
            return Err(ParseError::bad(OPERATION_FORBIDDEN, "A role's name can only be set before it has been saved."));
        }
        (Some(id), _) => (role_id(id).ok_or_else(ParseError::not_found)?.to_string(), false),
    };
    let out = c
        .run(
            "select baas.parse_save_role($1, $2::text::boolean, $3::text[]::uuid[], $4::text[]::uuid[], $5, $6)::text",
            &[&name, &is_new.to_string(), &users_add, &users_remove, &roles_add, &roles_remove],
        )
        .await?;
    Ok(if is_new {
        (StatusCode::CREATED, json!({"objectId": out["objectId"], "createdAt": out["createdAt"]}))
    } else {
        (StatusCode::OK, json!({"updatedAt": out["createdAt"]}))
    })
}

/// `DELETE /classes/_Role/{id}`: with the master key (`baas.drop_role`: the role leaves
/// every ACL it was in).
pub(super) async fn delete(c: &Call<'_>, id: &str) -> Result<(StatusCode, Value), ParseError> {
    let id = role_id(id).ok_or_else(ParseError::not_found)?;
    c.run("select baas.parse_delete_role($1)::text", &[&id]).await?;
    Ok((StatusCode::OK, json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str, users: &[&str], roles: &[&str]) -> Role {
        Role { name: name.into(), created: format!("2026-12-05T00:00:0{}.000Z", name.len() % 10), users: users.iter().map(|s| s.to_string()).collect(), roles: roles.iter().map(|s| s.to_string()).collect() }
    }

    fn hit(r: &Role, w: Value, all: &[Role]) -> bool {
        matches(r, w.as_object().unwrap(), all).unwrap()
    }

    const U: &str = "0190f4d2-8a1b-7c3d-9e4f-000000000001";

    #[test]
    fn role_queries_match_as_parse_reads_them() {
        let admins = role("admins", &[U], &[]);
        let mods = role("moderators", &[], &["admins"]);
        let all = [admins.clone(), mods.clone()];
        let me = json!({"__type": "Pointer", "className": "_User", "objectId": U.to_ascii_uppercase()});
        assert!(hit(&admins, json!({"users": me}), &all), "equalTo(users, user)");
        assert!(!hit(&mods, json!({"users": me}), &all), "members are direct, as Parse's users relation");
        assert!(hit(&admins, json!({"name": "Admins"}), &all), "a Parse name in pgbaas's spelling");
        assert!(hit(&mods, json!({"name": {"$in": ["Moderators", "x"]}}), &all));
        assert!(hit(&mods, json!({"name": {"$ne": "admins"}}), &all));
        assert!(!hit(&mods, json!({"$relatedTo": {"object": {"__type": "Pointer", "className": "_Role", "objectId": "moderators"}, "key": "roles"}}), &all));
        assert!(hit(&admins, json!({"$relatedTo": {"object": {"__type": "Pointer", "className": "_Role", "objectId": "moderators"}, "key": "roles"}}), &all));
        assert!(hit(&admins, json!({"$or": [{"name": "x"}, {"objectId": "admins"}]}), &all));
        assert!(!hit(&admins, json!({"$and": [{"name": "admins"}, {"roles": {"__type": "Pointer", "className": "_Role", "objectId": "x"}}]}), &all));
    }

    #[test]
    fn role_queries_outside_what_is_served_are_refused() {
        let r = role("admins", &[], &[]);
        for w in [
            json!({"score": 1}),
            json!({"name": {"$regex": "^a"}}),
            json!({"users": {"__type": "Pointer", "className": "Other", "objectId": U}}),
            json!({"users": "x"}),
            json!({"$relatedTo": {"object": {"__type": "Pointer", "className": "_Role", "objectId": "a"}, "key": "users"}}),
            json!({"$or": {}}),
            json!({"name": {"$in": "admins"}}),
            json!({"name": "x", "score": 1}),
        ] {
            let e = matches(&r, w.as_object().unwrap(), &[]).unwrap_err();
            assert_eq!(e.code, INVALID_QUERY, "{w}: {}", e.message);
        }
    }

    #[test]
    fn role_ids_are_pgbaas_role_names() {
        for ok in ["admins", "r_1st", "a.b-c_d", &"a".repeat(63)] {
            assert_eq!(role_id(ok), Some(ok));
        }
        for bad in ["", "Admins", "1st", "a b", "ä", &"a".repeat(64)] {
            assert_eq!(role_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn role_saves_read_relation_operations() {
        let (mut add, mut remove) = (Vec::new(), Vec::new());
        let p = |id: &str| json!({"__type": "Pointer", "className": "_User", "objectId": id});
        relation_ops("users", &json!({"__op": "Batch", "ops": [{"__op": "AddRelation", "objects": [p(U)]}, {"__op": "RemoveRelation", "objects": [p("b")]}]}), "_User", &mut add, &mut remove).unwrap();
        assert_eq!((add, remove), (vec![U.to_string()], vec!["b".to_string()]));
        for bad in [json!({"__op": "Add", "objects": [p(U)]}), json!([p(U)]), json!({"__op": "AddRelation", "objects": [{"__type": "Pointer", "className": "_Role", "objectId": "a"}]})] {
            let e = relation_ops("users", &bad, "_User", &mut Vec::new(), &mut Vec::new()).unwrap_err();
            assert_eq!(e.code, INCORRECT_TYPE, "{bad}");
        }
    }
}
