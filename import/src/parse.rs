//! Parse Server (on Postgres) → pgbaas. Parse Server keeps each class in a table of its
//! own ("GameScore": `objectId`, `createdAt`, `updatedAt`, `_rperm`, `_wperm` and a
//! column per field) and the field types in `_SCHEMA`; users in `_User`
//! (`_hashed_password`: bcrypt), roles in `_Role`, relations in `_Join:<field>:<class>`.

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read as _;
use std::fmt::Write as _;

/// The pgbaas id of Parse object `object_id` of `class`: the first 16 bytes of
/// SHA-256("parse:<class>:<objectId>") as a UUID (version 8, RFC 9562's custom
/// layout). The same on every run, so imports resume and pointers can be rewritten.
pub fn parse_uuid(class: &str, object_id: &str) -> String {
    let h = Sha256::digest(format!("parse:{class}:{object_id}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x80; // version 8
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 9562 variant
    let x: String = b.iter().map(|v| format!("{v:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &x[0..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
}

/// A Parse role name as a pgbaas role name (`^[a-z][a-z0-9_.-]{0,62}$`): lower case,
/// other characters as `_`, `r_` in front of one that does not start with a letter. The
/// Parse door maps `role:<Name>` in ACLs with the same rule (proxy/src/parse/convert.rs).
pub fn role_name(parse: &str) -> String {
    let mut s: String = parse.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c.to_ascii_lowercase() } else { '_' }).collect();
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        s = format!("r_{s}");
    }
    s.chars().take(63).collect()
}

/// `2026-12-04 16:20:00.123+00` / `2026-12-04T16:20:00.123+00:00` (UTC) as Parse writes times.
fn iso(t: &str) -> String {
    let t = t.replacen(' ', "T", 1);
    let main = t.split(['+', 'Z']).next().unwrap_or(&t);
    let (secs, frac) = main.split_once('.').unwrap_or((main, ""));
    let ms: String = frac.chars().chain("000".chars()).take(3).collect();
    format!("{secs}.{ms}Z")
}

#[derive(Default)]
pub struct Report {
    users: (u64, u64),
    /// With --files-from: files copied, already there.
    files: Option<(u64, u64)>,
    /// Users' identities at sign-in providers linked (authData of Apple, Google, ...).
    identities: u64,
    /// With --sessions: imported, skipped (there already, expired, or of no user).
    sessions: Option<(u64, u64)>,
    roles: u64,
    memberships: u64,
    classes: Vec<(String, String, u64, u64)>,
    widened: u64,
    unmapped: BTreeMap<String, u64>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "users: {} imported, {} already there; {} sign-in provider identities linked", self.users.0, self.users.1, self.identities)?;
        writeln!(f, "roles: {} (memberships: {})", self.roles, self.memberships)?;
        if let Some((copied, there)) = self.files {
            writeln!(f, "files: {copied} copied, {there} already there")?;
        }
        if let Some((imported, skipped)) = self.sessions {
            writeln!(f, "sessions: {imported} imported, {skipped} already there, expired or of no user")?;
        }
        for (class, collection, imported, skipped) in &self.classes {
            writeln!(f, "class {class} -> collection {collection}: {imported} objects imported, {skipped} already there")?;
        }
        if self.widened > 0 {
            writeln!(f, "ACLs widened: {} objects gave write without read; pgbaas lets writers read", self.widened)?;
        }
        for (what, n) in &self.unmapped {
            writeln!(f, "not imported: {what}: {n}")?;
        }
        Ok(())
    }
}

/// A principal of `_rperm`/`_wperm` as a pgbaas principal.
fn principal(p: &str) -> String {
    if p == "*" {
        "public".into()
    } else if let Some(r) = p.strip_prefix("role:") {
        format!("role:{}", role_name(r))
    } else {
        format!("user:{}", parse_uuid("_User", p))
    }
}

/// `_rperm`/`_wperm` (NULL: public) as pgbaas's (read, update = delete), read widened
/// to hold every writer.
fn acl(row: &Map<String, Value>, widened: &mut u64) -> (Vec<String>, Vec<String>) {
    let list = |k: &str| -> Vec<String> {
        match row.get(k) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(principal).collect(),
            _ => vec!["public".into()],
        }
    };
    let (mut read, write) = (list("_rperm"), list("_wperm"));
    let mut wider = false;
    for w in &write {
        if !read.contains(w) {
            read.push(w.clone());
            wider = true;
        }
    }
    if wider {
        *widened += 1;
    }
    (read, write)
}

/// One field's value as Parse's JSON (stored as the door stores it), or None when the
/// type is not imported (counted in `unmapped`).
fn value(ty: &Value, v: &Value, unmapped: &mut BTreeMap<String, u64>) -> Option<Value> {
    if v.is_null() {
        return None;
    }
    let t = ty.get("type").and_then(Value::as_str).unwrap_or("");
    Some(match t {
        "Date" => json!({"__type": "Date", "iso": iso(v.as_str()?)}),
        "Pointer" => {
            let target = ty.get("targetClass").and_then(Value::as_str)?;
            json!({"__type": "Pointer", "className": target, "objectId": parse_uuid(target, v.as_str()?)})
        }
        "GeoPoint" | "Polygon" => match geo_value(t, v) {
            Some(g) => g,
            None => {
                *unmapped.entry(format!("unreadable {t} values")).or_default() += 1;
                return None;
            }
        },
        "File" => {
            *unmapped.entry("file contents (the File fields keep their names; --files-from copies the bytes)".into()).or_default() += 1;
            json!({"__type": "File", "name": v.as_str()?})
        }
        "String" | "Number" | "Boolean" | "Object" | "Array" | "Bytes" => v.clone(),
        other => {
            *unmapped.entry(format!("fields of type {other}")).or_default() += 1;
            return None;
        }
    })
}

/// A GeoPoint or Polygon column's text as Parse's JSON: `point(longitude, latitude)`
/// prints as "(lng,lat)", a polygon as "((lng,lat),(lng,lat),…)"; Parse's coordinates
/// are [latitude, longitude].
fn geo_value(t: &str, v: &Value) -> Option<Value> {
    // In range (Postgres's point also holds NaN and infinities, which are no place).
    let pair = |p: &str| -> Option<(f64, f64)> {
        let (lng, lat) = p.trim_matches(|c| c == '(' || c == ')').split_once(',')?;
        let (lat, lng) = (lat.trim().parse::<f64>().ok()?, lng.trim().parse::<f64>().ok()?);
        ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lng)).then_some((lat, lng))
    };
    let s = v.as_str()?.trim();
    if t == "GeoPoint" {
        let (lat, lng) = pair(s)?;
        return Some(json!({"__type": "GeoPoint", "latitude": lat, "longitude": lng}));
    }
    let inner = s.strip_prefix("((")?.strip_suffix("))")?;
    let coords = inner.split("),(").map(|p| pair(p).map(|(lat, lng)| json!([lat, lng]))).collect::<Option<Vec<_>>>()?;
    Some(json!({"__type": "Polygon", "coordinates": coords}))
}

/// A row's fields (per `_SCHEMA`) as an object's data.
fn data(fields: &Map<String, Value>, row: &Map<String, Value>, skip: &[&str], unmapped: &mut BTreeMap<String, u64>) -> Value {
    let mut out = Map::new();
    for (name, ty) in fields {
        if skip.contains(&name.as_str()) || name.starts_with('_') || ["objectId", "createdAt", "updatedAt", "ACL"].contains(&name.as_str()) {
            continue;
        }
        if ty.get("type").and_then(Value::as_str) == Some("Relation") {
            continue; // from the join tables (`relations`, below)
        }
        if let Some(v) = row.get(name).and_then(|v| value(ty, v, unmapped)) {
            out.insert(name.clone(), v);
        }
    }
    Value::Object(out)
}

/// Where Parse Server serves its files (`--files-from`: `<its server URL>/files/<app id>`),
/// where the Parse door serves them (`--files-url`: `<the door's server URL>/files/<app
/// id>`, the URL objects keep, as the door writes it), and the bucket the door keeps them
/// in (`--files-bucket`, the door's `parse_files_bucket`).
pub struct Files {
    pub from: String,
    pub to: String,
    pub bucket: String,
}

const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn file_url(prefix: &str, name: &str) -> String {
    // `.` and `..` as a whole segment would be resolved away by the HTTP client.
    let segment = match name {
        "." => "%2E".to_string(),
        ".." => "%2E%2E".to_string(),
        _ => percent_encoding::utf8_percent_encode(name, SEGMENT).to_string(),
    };
    format!("{prefix}/{segment}")
}

/// The largest file copied (the door's own uploads stop at `parse_file_max_bytes`; a
/// larger one is said, not read into memory).
const MAX_FILE_BYTES: u64 = 1 << 30;

/// The id a Parse file gets in pgbaas (as objects': SHA-256 of `parse:_File:<name>`),
/// and its name without Parse Server's random prefix (32 hex digits and `_`).
/// Parse Server 9 puts a directory in front (`dir/sub/<32 hex>_x.png`): the last part
/// is the name. One the files API would refuse (`.`, `..`, empty) is `file`.
fn file_target(parse_name: &str) -> (String, String) {
    let last = parse_name.rsplit('/').next().unwrap_or(parse_name);
    let original = match last.split_once('_') {
        Some((prefix, rest)) if prefix.len() == 32 && prefix.bytes().all(|b| b.is_ascii_hexdigit()) && !rest.is_empty() => rest,
        _ => last,
    };
    let original = if original.trim().is_empty() || original == "." || original == ".." { "file" } else { original };
    (parse_uuid("_File", parse_name), original.to_string())
}

/// A name the door made (`<file id>_<name>`): such a file is in pgbaas already.
fn door_name(name: &str) -> bool {
    name.get(..37).is_some_and(|p| p.ends_with('_') && p[..36].chars().enumerate().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() }))
}

/// Every Parse `File` in `v` named and located as the door names the copy (`<file
/// id>_<name>` under `to`), each wanted once in `wanted` (Parse name -> id, name).
fn rename_files(v: &mut Value, to: &str, wanted: &mut BTreeMap<String, (String, String)>) {
    match v {
        Value::Object(m) if m.get("__type").and_then(Value::as_str) == Some("File") => {
            let Some(name) = m.get("name").and_then(Value::as_str).map(str::to_string) else { return };
            if door_name(&name) {
                return;
            }
            let (id, original) = file_target(&name);
            let stored = format!("{id}_{original}");
            m.insert("url".into(), Value::String(file_url(to, &stored)));
            m.insert("name".into(), Value::String(stored));
            wanted.insert(name, (id, original));
        }
        Value::Object(m) => m.values_mut().for_each(|x| rename_files(x, to, wanted)),
        Value::Array(a) => a.iter_mut().for_each(|x| rename_files(x, to, wanted)),
        _ => {}
    }
}

fn holds_file(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.get("__type").and_then(Value::as_str) == Some("File") || m.values().any(holds_file),
        Value::Array(a) => a.iter().any(holds_file),
        _ => false,
    }
}

/// Copy the wanted files' bytes from Parse Server into the bucket, under their ids (so a
/// run again finds them there). (copied, already there); what could not be read is said.
/// A dry run fetches nothing: the files it would copy are counted as copied.
fn copy_files(tx: &mut postgres::Transaction, files: &Files, wanted: &BTreeMap<String, (String, String)>, unmapped: &mut BTreeMap<String, u64>, dry_run: bool) -> Result<(u64, u64)> {
    let bucket: bool = tx
        .query_one("select exists (select from baas.collections c where c.name = $1 and c.bucket)", &[&files.bucket])?
        .get(0);
    if !bucket && !wanted.is_empty() {
        anyhow::bail!(
            "the bucket {:?} does not exist: create it as docs/parse.md says (baas.create_collection with \"bucket\": true), or name another with --files-bucket",
            files.bucket
        );
    }
    let agent = ureq::AgentBuilder::new().timeout_connect(std::time::Duration::from_secs(10)).timeout_read(std::time::Duration::from_secs(60)).redirects(0).build();
    let (mut copied, mut there) = (0, 0);
    // A file that cannot be read or stored is said and skipped (its File keeps the new
    // name, so a later run can bring it): one bad file must not undo the whole import.
    let mut skip = |why: String| *unmapped.entry(why).or_default() += 1;
    for (name, (id, original)) in wanted {
        let exists: bool = tx.query_one("select exists (select from baas.documents d where d.id = $1::text::uuid)", &[id])?.get(0);
        if exists {
            there += 1;
            continue;
        }
        if dry_run {
            copied += 1;
            continue;
        }
        let url = file_url(&files.from, name);
        let resp = match agent.get(&url).call() {
            // Only the file itself: a redirect or an empty answer is no file's bytes.
            Ok(r) if r.status() == 200 => r,
            Ok(r) => {
                skip(format!("files Parse Server answered {} for (not 200)", r.status()));
                continue;
            }
            Err(ureq::Error::Status(status, _)) => {
                skip(format!("files Parse Server answered {status} for"));
                continue;
            }
            Err(e) => {
                skip(format!("files that could not be read from Parse Server ({})", e.kind()));
                continue;
            }
        };
        // Parse Server sends the type its name suggests (`false` when none); the bucket's
        // sniffing decides when that is no type or not what the bytes are.
        let declared = resp.header("content-type").filter(|t| t.contains('/')).map(str::to_string);
        let mut bytes = Vec::new();
        if let Err(e) = resp.into_reader().take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes) {
            skip(format!("files that could not be read from Parse Server ({})", e.kind()));
            continue;
        }
        if bytes.len() as u64 > MAX_FILE_BYTES {
            skip(format!("files larger than {MAX_FILE_BYTES} bytes (upload them with /v1's resumable uploads)"));
            continue;
        }
        // The door's own upload: the bucket's types, sizes and default ACL apply (a DBA
        // may create in any bucket). Parse's files have no owner and no ACL of their own.
        let mut stored = false;
        let mut refusal = String::new();
        for content_type in [declared.as_deref(), None].into_iter().take(if declared.is_some() { 2 } else { 1 }) {
            let mut sp = tx.transaction()?;
            match sp.query_one("select baas.upload_file($1, $2, $3, $4, '{}', null, $5::text::uuid)", &[&files.bucket, original, &content_type, &bytes, id]) {
                Ok(_) => {
                    sp.commit()?;
                    stored = true;
                    break;
                }
                Err(e) => {
                    refusal = e.as_db_error().map(|d| d.detail().unwrap_or(d.code().code()).to_string()).unwrap_or_else(|| e.to_string());
                    sp.rollback()?;
                }
            }
        }
        if stored {
            copied += 1;
        } else {
            skip(format!("files the bucket {} refused ({refusal})", files.bucket));
        }
    }
    Ok((copied, there))
}

fn table(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn import(src: &mut postgres::Client, dst: &mut postgres::Client, dry_run: bool, sessions: bool, files: Option<&Files>) -> Result<Report> {
    let mut r = Report::default();
    // Parse names of the files the objects hold -> the copy's id and name.
    let mut wanted: BTreeMap<String, (String, String)> = BTreeMap::new();
    src.batch_execute("set timezone = 'UTC'")?;
    let schemas: Vec<(String, Value)> = src
        .query(r#"select "className"::text, "schema" from "_SCHEMA" order by "className""#, &[])
        .context("reading _SCHEMA (is --from a Parse Server database?)")?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let fields_of = |class: &str| -> Map<String, Value> {
        schemas.iter().find(|(c, _)| c == class).and_then(|(_, s)| s.get("fields")?.as_object().cloned()).unwrap_or_default()
    };
    let mut tx = dst.transaction()?;
    // As a restore: rows keep their times (sql/documents.sql, the guard trigger).
    tx.batch_execute("set local row_security = off")?;

    // Users.
    let user_fields = fields_of("_User");
    let rows = src.query(r#"select to_jsonb(u) from "_User" u order by "objectId""#, &[]).context("reading _User")?;
    let mut batch = Vec::new();
    for row in &rows {
        let u: Value = row.get(0);
        let Some(u) = u.as_object() else { continue };
        let Some(oid) = u.get("objectId").and_then(Value::as_str) else { continue };
        let Some(username) = u.get("username").and_then(Value::as_str) else {
            *r.unmapped.entry("users without a username".into()).or_default() += 1;
            continue;
        };
        // An anonymous user keeps its anonymous id (the SDK signs in again with it);
        // other providers are not mapped.
        let auth = u.get("authData").and_then(Value::as_object);
        let anonymous = auth.and_then(|a| a.get("anonymous")).filter(|a| !a.is_null());
        // Linked only to an account with neither email nor password (what an anonymous
        // Parse user is) and by an id baas.parse_auth_data takes.
        let linkable = |id: &str| (1..=256).contains(&id.chars().count()) && !id.chars().any(char::is_control);
        let plain = u.get("email").is_none_or(Value::is_null) && u.get("_hashed_password").is_none_or(Value::is_null);
        let anonymous_id = anonymous.and_then(|a| a.get("id")).and_then(Value::as_str).filter(|id| plain && linkable(id));
        if anonymous.is_some() && anonymous_id.is_none() {
            *r.unmapped.entry("users' anonymous authData on an account with a password or email, or with an unusable id".into()).or_default() += 1;
        }
        // Other providers' ids (Apple's, Google's `sub`): identities at pgbaas's provider
        // of the same name (docs/oidc.md), so the user signs in with it as before.
        let mut identities = Vec::new();
        for (provider, entry) in auth.into_iter().flatten().filter(|(k, v)| *k != "anonymous" && !v.is_null()) {
            match entry.get("id").and_then(Value::as_str) {
                Some(id) if (1..=255).contains(&id.chars().count()) => identities.push(json!({"provider": provider, "subject": id})),
                _ => *r.unmapped.entry(format!("users' authData.{provider} without a usable id")).or_default() += 1,
            }
        }
        let mut user_data = data(&user_fields, u, &["username", "email", "emailVerified", "password", "authData"], &mut r.unmapped);
        if let Some(f) = files {
            rename_files(&mut user_data, &f.to, &mut wanted);
        }
        // A user who also signs in with a provider is a full account (its anonymous id is
        // not kept), as the door makes an anonymous account that links one.
        let anonymous_id = if identities.is_empty() {
            anonymous_id
        } else {
            if anonymous_id.is_some() {
                *r.unmapped.entry("users' anonymous authData beside a sign-in provider's (the account is a full one)".into()).or_default() += 1;
            }
            None
        };
        batch.push(json!({
            "anonymous_id": anonymous_id,
            "identities": identities,
            "id": parse_uuid("_User", oid), "username": username, "email": u.get("email"),
            "password_hash": u.get("_hashed_password"), "email_verified": u.get("emailVerified") == Some(&json!(true)),
            "data": user_data,
            "created_at": u.get("createdAt"), "updated_at": u.get("updatedAt"),
        }));
    }
    for chunk in batch.chunks(500) {
        let v: Value = tx.query_one("select baas.parse_import_users($1)", &[&Value::Array(chunk.to_vec())])?.get(0);
        r.users.0 += v["imported"].as_u64().unwrap_or(0);
        r.users.1 += v["skipped"].as_u64().unwrap_or(0);
        r.identities += v["identities"]["linked"].as_u64().unwrap_or(0);
        for (key, what) in [
            ("no_provider", "users' authData of a provider pgbaas lacks (baas.set_oidc_provider, then import again)"),
            ("taken", "users' authData whose identity another account holds"),
        ] {
            let n = v["identities"][key].as_u64().unwrap_or(0);
            if n > 0 {
                *r.unmapped.entry(what.into()).or_default() += n;
            }
        }
    }

    // Roles, their users and their child roles (Parse: a child role's users have the role).
    let has_roles: bool = src.query_one(r#"select to_regclass('"_Role"') is not null"#, &[])?.get(0);
    let roles = if has_roles { src.query(r#"select "objectId", "name" from "_Role" order by "objectId""#, &[]).context("reading _Role")? } else { Vec::new() };
    let mut role_ids = BTreeMap::new();
    for row in &roles {
        let (oid, name): (String, String) = (row.get(0), row.get(1));
        let mapped = role_name(&name);
        tx.execute("insert into baas.roles (name) values ($1) on conflict do nothing", &[&mapped])?;
        role_ids.insert(oid, mapped);
        r.roles += 1;
    }
    for (join, users) in [("_Join:users:_Role", true), ("_Join:roles:_Role", false)] {
        let exists: bool = src.query_one("select to_regclass($1) is not null", &[&table(join)])?.get(0);
        if !exists {
            continue;
        }
        let links = src.query(&format!(r#"select "owningId", "relatedId" from {} order by 1, 2"#, table(join)), &[]).with_context(|| format!("reading {join}"))?;
        for row in &links {
            let (owning, related): (String, String) = (row.get(0), row.get(1));
            let Some(role) = role_ids.get(&owning) else { continue };
            let n = if users {
                tx.execute(
                    "insert into baas.role_members (role, user_id) select $1, u.id from baas.users u where u.id = $2::text::uuid on conflict do nothing",
                    &[role, &parse_uuid("_User", &related)],
                )?
            } else {
                match role_ids.get(&related) {
                    Some(child) if child != role => tx.execute("insert into baas.role_roles (role, member_role) values ($1, $2) on conflict do nothing", &[role, child])?,
                    _ => 0,
                }
            };
            r.memberships += n;
        }
    }

    // Classes: a collection each (as the door names them), then the objects.
    for (class, schema) in &schemas {
        if class.starts_with('_') {
            if !["_User", "_Role", "_Session", "_Installation", "_Hooks", "_GlobalConfig", "_JobStatus", "_JobSchedule", "_PushStatus", "_Audience", "_Idempotency", "_GraphQLConfig"].contains(&class.as_str()) {
                *r.unmapped.entry(format!("system class {class}")).or_default() += 1;
            }
            continue;
        }
        let collection = class.to_ascii_lowercase();
        let ok = collection.len() <= 63 && collection.starts_with(|c: char| c.is_ascii_lowercase()) && collection.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            *r.unmapped.entry(format!("class {class} (its name is no collection name)")).or_default() += 1;
            continue;
        }
        // Who may create: the class-level permission; objects without an ACL are public (Parse's default).
        let create: Vec<String> = match schema.pointer("/classLevelPermissions/create").and_then(Value::as_object) {
            None => vec!["public".into()],
            Some(c) => c
                .iter()
                .filter(|(_, v)| **v == json!(true))
                .map(|(k, _)| if k == "requiresAuthentication" { "authenticated".to_string() } else { principal(k) })
                .collect(),
        };
        let options = json!({"create": create, "default_acl": {"read": ["public"], "update": ["public"], "delete": ["public"]}});
        tx.execute(
            "select baas.create_collection($1, $2) where not exists (select from baas.collections c where c.name = $1)",
            &[&collection, &options],
        )?;
        let fields = fields_of(class);
        // Relations ("_Join:<field>:<class>": owningId, relatedId) as the door keeps them:
        // in the owning object's data, {"__type": "Relation", "className", "objects": {id: true}}.
        let mut relations: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for (field, ty) in &fields {
            if ty.get("type").and_then(Value::as_str) != Some("Relation") {
                continue;
            }
            let Some(target) = ty.get("targetClass").and_then(Value::as_str) else { continue };
            let join = format!("_Join:{field}:{class}");
            let exists: bool = src.query_one("select to_regclass($1) is not null", &[&table(&join)])?.get(0);
            if !exists {
                continue; // a relation nobody has written to
            }
            let links = src.query(&format!(r#"select "owningId", "relatedId" from {} order by 1, 2"#, table(&join)), &[]).with_context(|| format!("reading {join}"))?;
            for row in &links {
                let (owning, related): (String, String) = (row.get(0), row.get(1));
                let entry = relations.entry(owning).or_default().entry(field.clone()).or_insert_with(|| json!({"__type": "Relation", "className": target, "objects": {}}));
                if let Some(members) = entry.get_mut("objects").and_then(Value::as_object_mut) {
                    members.insert(parse_uuid(target, &related), Value::Bool(true));
                }
            }
        }
        let exists: bool = src.query_one("select to_regclass($1) is not null", &[&table(class)])?.get(0);
        if !exists {
            *r.unmapped.entry(format!("class {class} (in _SCHEMA, but its table is missing)")).or_default() += 1;
            continue;
        }
        let rows = src.query(&format!("select to_jsonb(t) from {} t order by \"objectId\"", table(class)), &[]).with_context(|| format!("reading class {class}"))?;
        let (mut imported, mut skipped) = (0, 0);
        for row in &rows {
            let o: Value = row.get(0);
            let Some(o) = o.as_object() else { continue };
            let Some(oid) = o.get("objectId").and_then(Value::as_str) else { continue };
            let (read, write) = acl(o, &mut r.widened);
            let mut d = data(&fields, o, &[], &mut r.unmapped);
            if let Some(f) = files {
                rename_files(&mut d, &f.to, &mut wanted);
            }
            if let (Some(rels), Some(m)) = (relations.get(oid), d.as_object_mut()) {
                m.extend(rels.clone());
            }
            let n = tx.execute(
                "insert into baas.documents (collection_id, id, owner, data, acl_read, acl_update, acl_delete, created_at, updated_at, version)
                 select c.id, $2::text::uuid, null, $3, $4, $5, $5, coalesce($6::text::timestamptz, now()), coalesce($7::text::timestamptz, now()), 1
                   from baas.collections c where c.name = $1
                 on conflict do nothing",
                &[&collection, &parse_uuid(class, oid), &d, &read, &write, &o.get("createdAt").and_then(Value::as_str), &o.get("updatedAt").and_then(Value::as_str)],
            )?;
            if n == 1 {
                imported += 1;
            } else {
                skipped += 1;
                // Already there (an earlier run, perhaps without --files-from): its File
                // fields take the copies' names.
                if files.is_some() {
                    let with_files: Map<String, Value> = d.as_object().into_iter().flatten().filter(|(_, v)| holds_file(v)).map(|(k, v)| (k.clone(), v.clone())).collect();
                    if !with_files.is_empty() {
                        tx.execute(
                            "update baas.documents d set data = d.data || $3 from baas.collections c
                              where c.name = $1 and d.collection_id = c.id and d.id = $2::text::uuid and not d.data @> $3",
                            &[&collection, &parse_uuid(class, oid), &Value::Object(with_files)],
                        )?;
                    }
                }
                // Already there (an earlier run): its relations may have grown since.
                if let Some(rels) = relations.get(oid) {
                    let rels = Value::Object(rels.clone());
                    tx.execute(
                        "update baas.documents d set data = d.data || $3 from baas.collections c
                          where c.name = $1 and d.collection_id = c.id and d.id = $2::text::uuid and not d.data @> $3",
                        &[&collection, &parse_uuid(class, oid), &rels],
                    )?;
                }
            }
        }
        r.classes.push((class.clone(), collection, imported, skipped));
    }
    if let Some(files) = files {
        // Not as a restore: the documents' guard fills each file's size, type and sha256
        // from its upload only when row_security is on (a DBA still bypasses the policies).
        tx.batch_execute("set local row_security = on")?;
        r.files = Some(copy_files(&mut tx, files, &wanted, &mut r.unmapped, dry_run)?);
        tx.batch_execute("set local row_security = off")?;
        r.unmapped.retain(|k, _| !k.starts_with("file contents"));
    }
    let has_sessions: bool = src.query_one(r#"select to_regclass('"_Session"') is not null"#, &[])?.get(0);
    if has_sessions && sessions {
        // Live revocable sessions keep their tokens: signed-in app users stay signed in.
        let rows = src
            .query(
                r#"select "sessionToken", "user"::text, "expiresAt"::text, "installationId" from "_Session"
                    where "sessionToken" like 'r:%' and ("expiresAt" is null or "expiresAt" > now()) order by "objectId""#,
                &[],
            )
            .context("reading _Session")?;
        let mut batch = Vec::new();
        let mut unusable = 0u64;
        for row in &rows {
            let (token, user, expires, installation): (Option<String>, Option<String>, Option<String>, Option<String>) = (row.get(0), row.get(1), row.get(2), row.get(3));
            // (A pointer column holds the objectId on Postgres; "_User$<id>" on MongoDB.)
            let user = user.map(|u| u.strip_prefix("_User$").map(str::to_string).unwrap_or(u));
            let (Some(token), Some(user)) = (token, user) else {
                unusable += 1;
                continue;
            };
            batch.push(json!({"user_id": parse_uuid("_User", &user), "token": token, "expires_at": expires, "installation_id": installation}));
        }
        let mut counts = (0, unusable);
        for chunk in batch.chunks(500) {
            let v: Value = tx.query_one("select baas.parse_import_sessions($1)", &[&Value::Array(chunk.to_vec())])?.get(0);
            counts.0 += v["imported"].as_u64().unwrap_or(0);
            counts.1 += v["skipped"].as_u64().unwrap_or(0);
        }
        r.sessions = Some(counts);
        let rest: i64 = src.query_one(r#"select count(*) from "_Session" where "sessionToken" not like 'r:%'"#, &[])?.get(0);
        if rest > 0 {
            r.unmapped.insert("sessions with legacy (not revocable) tokens".into(), rest as u64);
        }
    } else if has_sessions {
        let n: i64 = src.query_one(r#"select count(*) from "_Session""#, &[])?.get(0);
        if n > 0 {
            r.unmapped.insert("sessions (users sign in again; their passwords work; --sessions keeps them signed in)".into(), n as u64);
        }
    }
    // The counting entries of every index and collection, as after a restore.
    tx.batch_execute("select baas.rebuild_index_entries()")?;
    if dry_run {
        tx.rollback()?;
        let mut note = String::new();
        let _ = writeln!(note, "(dry run: nothing was written)");
        r.unmapped.insert(note.trim().to_string(), 0);
    } else {
        tx.commit()?;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_renamed_as_the_door_names_them_once_each() {
        let parse_name = "0123456789abcdef0123456789abcdef_photo 1.jpg";
        let (id, original) = file_target(parse_name);
        assert_eq!((id.len(), original.as_str()), (36, "photo 1.jpg"));
        assert_eq!(file_target("tfss-legacy.png").1, "tfss-legacy.png", "no Parse Server prefix: the whole name");
        assert_eq!(file_target("dir/sub/0123456789abcdef0123456789abcdef_x.png").1, "x.png", "Parse Server 9's directories");
        assert_eq!(file_target("..").1, "file");
        assert_eq!(file_url("http://h/files/app", ".."), "http://h/files/app/%2E%2E");
        assert_eq!(file_url("http://h/files/app", "a b/c"), "http://h/files/app/a%20b%2Fc");
        let mut d = json!({
            "a": {"__type": "File", "name": parse_name, "url": "http://old/files/app/x"},
            "list": [{"__type": "File", "name": parse_name}, {"__type": "File", "name": format!("{id}_kept.txt")}],
            "other": {"name": parse_name},
        });
        let mut wanted = BTreeMap::new();
        rename_files(&mut d, "https://api.example/parse/files/app", &mut wanted);
        let door = format!("{id}_photo 1.jpg");
        assert_eq!(d["a"], json!({"__type": "File", "name": door, "url": format!("https://api.example/parse/files/app/{id}_photo%201.jpg")}), "as the door writes it");
        assert_eq!(d["list"][0]["name"], json!(door));
        assert_eq!(d["list"][1], json!({"__type": "File", "name": format!("{id}_kept.txt")}), "a door name stays");
        assert_eq!(d["other"]["name"], json!(parse_name), "not a File");
        assert_eq!(wanted.len(), 1);
        assert!(door_name(&door) && !door_name(parse_name) && !door_name("x"));
    }

    #[test]
    fn ids_are_stable_uuids_per_class() {
        let a = parse_uuid("GameScore", "xWMyZ4YEGZ");
        assert_eq!(a, parse_uuid("GameScore", "xWMyZ4YEGZ"));
        assert_ne!(a, parse_uuid("Post", "xWMyZ4YEGZ"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8", "version 8: {a}");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "RFC 9562 variant: {a}");
    }

    #[test]
    fn geo_columns_read_as_parse_s_json() {
        let mut un = BTreeMap::new();
        let gp = value(&json!({"type": "GeoPoint"}), &json!("(2.3522,48.8566)"), &mut un).unwrap();
        assert_eq!(gp, json!({"__type": "GeoPoint", "latitude": 48.8566, "longitude": 2.3522}));
        let poly = value(&json!({"type": "Polygon"}), &json!("((-5,42),(-5,51),(8,51),(-5,42))"), &mut un).unwrap();
        assert_eq!(poly, json!({"__type": "Polygon", "coordinates": [[42.0, -5.0], [51.0, -5.0], [51.0, 8.0], [42.0, -5.0]]}));
        assert!(un.is_empty(), "{un:?}");
        assert_eq!(value(&json!({"type": "Polygon"}), &json!("(1,2)"), &mut un), None);
        assert_eq!(value(&json!({"type": "GeoPoint"}), &json!("(x,2)"), &mut un), None);
        assert_eq!(value(&json!({"type": "GeoPoint"}), &json!("(NaN,2)"), &mut un), None);
        assert_eq!(value(&json!({"type": "GeoPoint"}), &json!("(2,91)"), &mut un), None);
        assert_eq!((un.get("unreadable Polygon values"), un.get("unreadable GeoPoint values")), (Some(&1), Some(&3)), "counted, not dropped unsaid");
    }

    #[test]
    fn role_names_fit_pgbaas() {
        assert_eq!(role_name("Admin"), "admin");
        assert_eq!(role_name("Power Users"), "power_users");
        assert_eq!(role_name("1st"), "r_1st");
    }

    #[test]
    fn times_and_acls() {
        assert_eq!(iso("2026-12-04T16:20:00.123456+00:00"), "2026-12-04T16:20:00.123Z");
        assert_eq!(iso("2026-12-04T16:20:00+00:00"), "2026-12-04T16:20:00.000Z");
        let mut w = 0;
        let row = json!({"_rperm": ["u1"], "_wperm": ["role:Mods", "u1"]});
        let (read, write) = acl(row.as_object().unwrap(), &mut w);
        assert_eq!(write, vec!["role:mods".to_string(), format!("user:{}", parse_uuid("_User", "u1"))]);
        assert!(read.contains(&"role:mods".to_string()) && w == 1, "writers read too, counted");
        let (read, write) = acl(json!({}).as_object().unwrap(), &mut w);
        assert_eq!((read, write), (vec!["public".to_string()], vec!["public".to_string()]));
    }
}
