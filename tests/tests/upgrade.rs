//! Versions and backups: a database made by the previous release, upgraded in place with
//! `ALTER EXTENSION pgbaas UPDATE`, and a populated database taken through
//! `pg_dump -Fc` / `pg_restore` into a fresh cluster, keep every account, session,
//! document, ACL, role, index and audit entry, and serve them through the real proxy.
//! Files come along byte for byte: a bucket with files of 0 B, 1 B and 3 MiB, a document
//! referencing one, and an unfinished tus upload that resumes after the upgrade or the
//! restore.
//!
//! The upgrade test installs the previous release into the system Postgres directories
//! for a while (tests/scripts/previous-version.sh builds it once) and puts the current
//! build back when it ends, even when it fails. Both tests therefore hold one lock, and
//! they rely on cargo running test binaries one after another: no other test binary
//! runs while this one has the old library installed. (A cluster of your own that
//! starts a backend during those seconds would load the old library too.)
mod common;

use common::request_at;
use pgbaas_testkit::{pg_bindir, workspace_root, Cluster, Proxy, DB};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The release that upgrade scripts start from (tests/scripts/previous-version.sh).
const PREVIOUS: &str = "0.15.0";
const CURRENT: &str = env!("CARGO_PKG_VERSION");
const PASSWORD: &str = "correct horse battery";

static SYSTEM_INSTALL: Mutex<()> = Mutex::new(());

// ------------------------------------------------------------------ installed files

fn pg_config(flag: &str) -> PathBuf {
    let out = Command::new(pg_bindir().join("pg_config")).arg(flag).output().expect("pg_config");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// pgbaas's files in the system directories: control file and scripts, and the library.
fn installed_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [pg_config("--sharedir").join("extension"), pg_config("--pkglibdir")] {
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "pgbaas.control" || name == "pgbaas.so" || (name.starts_with("pgbaas--") && name.ends_with(".sql")) {
                files.push(e.path());
            }
        }
    }
    files
}

/// The current build's installed files, held in memory while the previous release is
/// installed, and written back when dropped (also when the test panics).
struct CurrentInstall {
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl CurrentInstall {
    fn save() -> CurrentInstall {
        let files: Vec<_> = installed_files().into_iter().map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        }).collect();
        assert!(
            files.iter().any(|(p, _)| p.ends_with(format!("pgbaas--{CURRENT}.sql"))),
            "pgbaas {CURRENT} is not installed: run tests/scripts/build.sh first"
        );
        CurrentInstall { files }
    }

    /// Replace the installed files with the previous release's package (as its package
    /// upgrade would, the other way round).
    fn install_previous(&self) {
        let out = Command::new("bash")
            .arg(workspace_root().join("tests/scripts/previous-version.sh"))
            .envs(std::env::vars().filter(|(k, _)| k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR").map(|(k, _)| (k, String::new())))
            .output()
            .expect("run previous-version.sh");
        assert!(out.status.success(), "building pgbaas {PREVIOUS} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let pkg = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        remove_installed();
        let ext = pg_config("--sharedir").join("extension");
        let lib = pg_config("--pkglibdir");
        let old_lib = std::fs::read(under(&pkg, &lib).join("pgbaas.so")).unwrap();
        assert!(self.files.iter().all(|(_, bytes)| *bytes != old_lib), "the package in {} holds the current library", pkg.display());
        for (dir, to) in [(under(&pkg, &ext), &ext), (under(&pkg, &lib), &lib)] {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                put(&to.join(e.file_name()), &std::fs::read(e.path()).unwrap());
            }
        }
    }
}

impl Drop for CurrentInstall {
    fn drop(&mut self) {
        remove_installed();
        for (p, bytes) in &self.files {
            put(p, bytes);
        }
    }
}

/// `dir` (absolute) inside the package root `pkg`.
fn under(pkg: &Path, dir: &Path) -> PathBuf {
    pkg.join(dir.strip_prefix("/").unwrap())
}

fn remove_installed() {
    for p in installed_files() {
        if let Err(e) = std::fs::remove_file(&p) {
            as_root(&["rm", "-f"], &[&p], e);
        }
    }
}

/// Write by rename, so a backend loading the library meanwhile sees one whole file.
fn put(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("pgbaas-tmp");
    if let Err(e) = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path)) {
        let mine = std::env::temp_dir().join(format!("pgbaas-upgrade-{}.tmp", std::process::id()));
        std::fs::write(&mine, bytes).unwrap();
        as_root(&["install", "-m", "0644"], &[&mine, path], e);
        let _ = std::fs::remove_file(&mine);
    }
}

/// Not root: the system directories are root's, so do as `cargo pgrx install --sudo` does.
fn as_root(cmd: &[&str], paths: &[&Path], why: std::io::Error) {
    let ok = Command::new("sudo").arg("-n").args(cmd).args(paths).status().is_ok_and(|s| s.success());
    assert!(ok, "{cmd:?} {paths:?}: {why}; sudo -n failed too (run as root or with passwordless sudo)");
}

// ------------------------------------------------------------------ the data set

struct Account {
    email: String,
    id: String,
    access: String,
    refresh: String,
}

struct Doc {
    collection: String,
    id: String,
    data: Value,
    acl: Value,
    version: i64,
    /// Who may read it: account names, "anon", "service".
    readers: Vec<&'static str>,
}

struct Fixture {
    accounts: BTreeMap<&'static str, Account>,
    docs: Vec<Doc>,
    service_token: String,
    /// Documents in collection `bulk` (btree index on `n`, gin on `tags`).
    bulk: i64,
}

const NAMES: [&str; 4] = ["alice", "bob", "carol", "dave"];

/// Fill a database through SQL as a DBA, with calls that exist in every release since
/// the previous one (the upgrade test runs this against the previous release).
fn fill(db: &mut postgres::Client) -> Fixture {
    let mut accounts = BTreeMap::new();
    for name in NAMES {
        let email = format!("{name}@example.com");
        let r: Value = db.query_one("select baas.signup($1, $2)", &[&email, &PASSWORD]).unwrap().get(0);
        accounts.insert(name, Account {
            email,
            id: r["user"]["id"].as_str().unwrap().into(),
            access: r["access_token"].as_str().unwrap().into(),
            refresh: r["refresh_token"].as_str().unwrap().into(),
        });
    }
    let id = |n: &str| accounts[n].id.clone();
    // staff: bob, and (nested) the admins; admins: carol.
    db.batch_execute("select baas.create_role('staff'); select baas.create_role('admins');").unwrap();
    db.execute("select baas.add_role_member('staff', $1::text::uuid)", &[&id("bob")]).unwrap();
    db.execute("select baas.add_role_member('admins', $1::text::uuid)", &[&id("carol")]).unwrap();
    db.batch_execute("select baas.add_role_to_role('staff', 'admins')").unwrap();
    db.batch_execute(
        r#"select baas.create_collection('notes');
           select baas.create_collection('club', '{"create": ["role:staff"], "default_acl": {"read": ["role:staff"]}}');
           select baas.create_collection('bulk');
           select baas.create_index('bulk', 'n');
           select baas.create_index('bulk', 'tags', 'gin');"#,
    )
    .unwrap();
    // From 0.3.0 indexes are built in the background: wait, so that the rows compared
    // below do not change under the comparison (0.2.0 has no state: null).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while db
        .query_one("select exists (select from baas.indexes i where to_jsonb(i) ->> 'state' = 'building')", &[])
        .unwrap()
        .get::<_, bool>(0)
    {
        assert!(std::time::Instant::now() < deadline, "index builds did not finish");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let service_token: String =
        db.query_one("select baas.create_service_token('upgrade-test', '1 day') ->> 'token'", &[]).unwrap().get(0);

    let bob = format!("user:{}", id("bob"));
    let shapes: Vec<(Value, Vec<&'static str>)> = vec![
        (json!({}), vec!["alice"]),
        (json!({"read": [bob]}), vec!["alice", "bob"]),
        (json!({"read": ["role:staff"], "update": ["role:admins"]}), vec!["alice", "bob", "carol"]),
        (json!({"read": ["role:admins"]}), vec!["alice", "carol"]),
        (json!({"read": ["authenticated"]}), vec!["alice", "bob", "carol", "dave"]),
        (json!({"read": ["public"]}), vec!["alice", "bob", "carol", "dave", "anon"]),
    ];
    let mut docs = Vec::new();
    for (i, (acl, mut readers)) in shapes.into_iter().enumerate() {
        let data = json!({"i": i, "text": format!("note {i}"), "nested": {"k": [i, "é"]}});
        let doc: Value = db
            .query_one(
                "select * from baas.as_user($1::text::uuid,
                   format('select baas.create_document(%L, %L::jsonb, %L::jsonb)', 'notes', $2::text, $3::text))",
                &[&id("alice"), &data.to_string(), &acl.to_string()],
            )
            .unwrap()
            .get(0);
        readers.push("service");
        docs.push(Doc {
            collection: "notes".into(),
            id: doc["id"].as_str().unwrap().into(),
            data,
            acl: doc["acl"].clone(),
            version: doc["version"].as_i64().unwrap(),
            readers,
        });
    }
    // A document changed twice (version 3) and one bob made in the club (default ACL).
    let d = &mut docs[2];
    for n in [1, 2] {
        let patched: Value = db
            .query_one(
                "select * from baas.as_user($1::text::uuid,
                   format('select baas.patch_document(%L, %L, %L::jsonb)', 'notes', $2::text, $3::text))",
                &[&id("alice"), &d.id, &json!({"rev": n}).to_string()],
            )
            .unwrap()
            .get(0);
        d.data = patched["data"].clone();
        d.version = patched["version"].as_i64().unwrap();
    }
    assert_eq!(d.version, 3);
    let club: Value = db
        .query_one(
            "select * from baas.as_user($1::text::uuid, 'select baas.create_document(''club'', ''{\"x\": 1}'')')",
            &[&id("bob")],
        )
        .unwrap()
        .get(0);
    docs.push(Doc {
        collection: "club".into(),
        id: club["id"].as_str().unwrap().into(),
        data: json!({"x": 1}),
        acl: club["acl"].clone(),
        version: 1,
        // bob, the staff (carol, through admins), the service; not alice.
        readers: vec!["bob", "carol", "service"],
    });
    // Enough rows that the planner prefers the indexes, written as a DBA would load them.
    let bulk = 5000i64;
    db.execute(
        "insert into baas.documents (collection_id, id, owner, data, acl_read)
         select c.id, baas.uuid7(), $1::text::uuid, jsonb_build_object('n', g, 'tags', jsonb_build_array('t' || (g % 50))), '{public}'
           from baas.collections c, generate_series(1, $2::bigint) g where c.name = 'bulk'",
        &[&id("alice"), &bulk],
    )
    .unwrap();
    // One more audit entry kind: a failed login.
    let _ = db.query_one("select baas.login($1, 'wrong password!')", &[&accounts["dave"].email]);
    db.batch_execute("analyze baas.documents").unwrap();
    Fixture { accounts, docs, service_token, bulk }
}

// ------------------------------------------------------------------ rows of every table

/// Every row of every table in schema baas, as JSON, per table.
fn rows(db: &mut postgres::Client) -> BTreeMap<String, Vec<Value>> {
    let tables: Vec<String> = db
        .query("select c.relname::text from pg_class c where c.relnamespace = 'baas'::regnamespace and c.relkind = 'r' order by 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    tables
        .into_iter()
        .map(|t| {
            let rows = db
                .query(&format!("select to_jsonb(t) from baas.{} t", quote_ident(&t)), &[])
                .unwrap()
                .iter()
                .map(|r| r.get::<_, Value>(0))
                .collect();
            (t, rows)
        })
        .collect()
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Every row of `before` is in `after`, compared on the columns it had (a new release
/// may add columns); `after` may hold more rows only in `may_grow` tables.
fn assert_rows_kept(before: &BTreeMap<String, Vec<Value>>, after: &BTreeMap<String, Vec<Value>>, may_grow: &[&str], skip: &[&str]) {
    let mut problems = Vec::new();
    for (table, old) in before {
        if skip.contains(&table.as_str()) {
            continue;
        }
        let Some(new) = after.get(table) else {
            problems.push(format!("table baas.{table} is gone"));
            continue;
        };
        let project = |row: &Value, like: &Value| -> String {
            let keys = like.as_object().unwrap();
            let o: serde_json::Map<String, Value> = row.as_object().unwrap().iter().filter(|(k, _)| keys.contains_key(*k)).map(|(k, v)| (k.clone(), v.clone())).collect();
            Value::Object(o).to_string()
        };
        let Some(shape) = old.first() else { continue };
        let new_rows: BTreeSet<String> = new.iter().map(|r| project(r, shape)).collect();
        let missing: Vec<String> = old.iter().map(|r| r.to_string()).filter(|r| !new_rows.contains(r)).collect();
        if !missing.is_empty() {
            problems.push(format!("baas.{table}: {} of {} rows missing or changed, e.g. {}", missing.len(), old.len(), missing[0]));
        }
        if new.len() != old.len() && !may_grow.contains(&table.as_str()) {
            problems.push(format!("baas.{table}: {} rows before, {} after", old.len(), new.len()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ------------------------------------------------------------------ checks through the proxy

fn call(base: &str, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> common::Resp {
    let body = body.map(|b| b.to_string());
    let r = request_at(base, method, path, token, &[], body.as_deref());
    assert!(r.status < 500, "{method} {path} gave {}: {}", r.status, r.body);
    r
}

/// What a user of the upgraded or restored database notices: every account signs in,
/// its earlier tokens still work, every document reads back with its ACL for exactly
/// its readers, roles and collection options still apply, and new writes work.
fn check_through_proxy(cluster: &Cluster, fx: &Fixture, extra_collections: &[&str]) {
    let proxy = Proxy::start(&cluster.authenticator_url().unwrap(), &[]).expect("proxy");
    let base = proxy.base();
    let b = base.as_str();

    let mut tokens: BTreeMap<&str, Option<String>> = BTreeMap::new();
    for (name, a) in &fx.accounts {
        // Tokens issued before: the signing keys and sessions came along.
        let me = call(b, "GET", "/v1/auth/user", Some(&a.access), None);
        assert_eq!(me.status, 200, "{name}'s earlier access token: {}", me.body);
        assert_eq!(me.body["id"], a.id.as_str());
        let refreshed = call(b, "POST", "/v1/auth/refresh", None, Some(json!({"refresh_token": a.refresh})));
        assert_eq!(refreshed.status, 200, "{name}'s earlier refresh token: {}", refreshed.body);
        // The password hash came along.
        let login = call(b, "POST", "/v1/auth/login", None, Some(json!({"email": a.email, "password": PASSWORD})));
        assert_eq!(login.status, 200, "{name} signs in: {}", login.body);
        assert_eq!(login.body["user"]["id"], a.id.as_str());
        let wrong = call(b, "POST", "/v1/auth/login", None, Some(json!({"email": a.email, "password": "not the password"})));
        assert_eq!(wrong.status, 401);
        tokens.insert(name, Some(login.body["access_token"].as_str().unwrap().to_string()));
    }
    tokens.insert("anon", None);
    tokens.insert("service", Some(fx.service_token.clone()));

    for d in &fx.docs {
        let path = format!("/v1/collections/{}/documents/{}", d.collection, d.id);
        for (who, token) in &tokens {
            let r = call(b, "GET", &path, token.as_deref(), None);
            if d.readers.contains(who) {
                assert_eq!(r.status, 200, "{who} reads {path}: {}", r.body);
                assert_eq!(r.body["data"], d.data, "{path}");
                assert_eq!(r.body["acl"], d.acl, "{path}");
                assert_eq!(r.body["version"], d.version, "{path}");
                assert_eq!(r.header("etag"), Some(format!("\"{}\"", d.version).as_str()));
            } else {
                assert_eq!(r.status, 404, "{who} must not see {path}: {}", r.body);
            }
        }
    }
    // A whole collection's count (from the read entries for users and anonymous, issue
    // 20) is the number of documents the caller's list shows (the documents' policy).
    for c in ["notes", "club"] {
        for (who, token) in &tokens {
            let list = call(b, "GET", &format!("/v1/collections/{c}/documents?limit=1000"), token.as_deref(), None);
            let want = list.body["items"].as_array().map_or(0, |a| a.len());
            let at_least = fx.docs.iter().filter(|d| d.collection == c && d.readers.contains(who)).count();
            assert!(want >= at_least, "{who} lists {c}: {}", list.body);
            let r = call(b, "GET", &format!("/v1/collections/{c}/documents?count=true&limit=0"), token.as_deref(), None);
            assert_eq!(r.status, 200, "{who} counts {c}: {}", r.body);
            assert_eq!(r.body["count"], want, "{who} counts {c}");
        }
    }
    let r = call(b, "GET", "/v1/collections/bulk/documents?count=true&limit=0", tokens["bob"].as_deref(), None);
    assert_eq!(r.body["count"], fx.bulk, "bob counts every public document of bulk");

    // Update rights through the nested role: carol (admins) may, bob (staff) may not.
    let staff_doc = &fx.docs[2];
    let path = format!("/v1/collections/notes/documents/{}", staff_doc.id);
    let etag = format!("\"{}\"", staff_doc.version);
    let r = request_at(b, "PATCH", &path, tokens["bob"].as_deref(), &[("If-Match", etag.as_str())], Some(r#"{"data": {"by": "bob"}}"#));
    assert_eq!(r.status, 403, "{}", r.body);
    let r = request_at(b, "PATCH", &path, tokens["carol"].as_deref(), &[("If-Match", etag.as_str())], Some(r#"{"data": {"by": "carol"}}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["version"], staff_doc.version + 1);
    let r = call(b, "GET", &format!("{path}/acl"), tokens["alice"].as_deref(), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, staff_doc.acl);

    // The club's options: only staff create, and their documents are read by staff.
    let r = call(b, "POST", "/v1/collections/club/documents", tokens["dave"].as_deref(), Some(json!({"data": {}})));
    assert_eq!(r.status, 403, "{}", r.body);
    let r = call(b, "POST", "/v1/collections/club/documents", tokens["carol"].as_deref(), Some(json!({"data": {"y": 2}})));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["acl"]["read"], json!(["role:staff"]));

    // Lists and counts over the indexed collection, as a user.
    let w = percent(&json!({"n": {"$gte": fx.bulk - 9}}).to_string());
    let r = call(b, "GET", &format!("/v1/collections/bulk/documents?where={w}&order=-n&count=true&limit=3"), tokens["dave"].as_deref(), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["count"], 10);
    assert_eq!(r.body["items"][0]["data"]["n"], fx.bulk);
    let w = percent(&json!({"tags": {"$contains": "t7"}}).to_string());
    let r = call(b, "GET", &format!("/v1/collections/bulk/documents?where={w}&count=true&limit=1"), tokens["anon"].as_deref(), None);
    assert_eq!(r.body["count"], fx.bulk / 50);

    // The service token, and new accounts and documents.
    let r = call(b, "GET", "/v1/collections", Some(&fx.service_token), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let names: BTreeSet<&str> = r.body["items"].as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
    let mut want = BTreeSet::from(["bulk", "club", "notes"]);
    want.extend(extra_collections.iter().copied());
    assert_eq!(names, want);
    let r = call(b, "POST", "/v1/auth/signup", None, Some(json!({"email": "erin@example.com", "password": PASSWORD})));
    assert_eq!(r.status, 201, "{}", r.body);
    let erin = r.body["access_token"].as_str().unwrap().to_string();
    let r = call(b, "POST", "/v1/collections/notes/documents", Some(&erin), Some(json!({"data": {"new": true}, "acl": {"read": ["role:admins"]}})));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let r = call(b, "GET", &format!("/v1/collections/notes/documents/{id}"), tokens["carol"].as_deref(), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(b, "GET", &format!("/v1/collections/notes/documents/{id}"), tokens["bob"].as_deref(), None);
    assert_eq!(r.status, 404, "{}", r.body);
    let r = call(b, "POST", "/v1/collections", Some(&fx.service_token), Some(json!({"name": "later"})));
    assert_eq!(r.status, 201, "{}", r.body);
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|c| if c.is_ascii_alphanumeric() || b"-._~".contains(&c) { (c as char).to_string() } else { format!("%{c:02X}") })
        .collect()
}

/// The plans a user's lists get on `bulk`: the collection's partial indexes.
fn assert_indexes_drive_plans(db: &mut postgres::Client, user: &str) {
    let cid: i32 = db.query_one("select id from baas.collections where name = 'bulk'", &[]).unwrap().get(0);
    for (filter, order) in [(json!({"n": 77}), None), (json!({"n": {"$gt": 4900}}), Some("n")), (json!({"tags": {"$contains": "t7"}}), None)] {
        let q: Value = db.query_one("select baas._compile_query($1, $2, null)", &[&filter, &order]).unwrap().get(0);
        let sql = format!(
            "select 1 from baas.documents d where d.collection_id = {cid} and {} order by {} limit 20",
            q["where"].as_str().unwrap(),
            q["order"].as_str().unwrap()
        );
        let mut tx = db.transaction().unwrap();
        tx.execute("select set_config('baas.claims', $1, true)", &[&json!({"sub": user, "role": "baas_user"}).to_string()]).unwrap();
        tx.batch_execute("set local role baas_user").unwrap();
        tx.batch_execute(&format!("prepare p(jsonb) as {sql}")).unwrap();
        let params = q["params"].to_string().replace('\'', "''");
        let plan: Vec<String> = tx.query(&format!("explain execute p('{params}')"), &[]).unwrap().iter().map(|r| r.get(0)).collect();
        tx.rollback().unwrap();
        db.batch_execute("deallocate all").unwrap();
        let plan = plan.join("\n");
        assert!(plan.contains(&format!("documents_c{cid}_")), "{filter} should use a partial index of bulk:\n{plan}");
    }
}

/// Whether both counting copies of `bulk` are trusted (marked complete): its btree
/// index on `n`'s entries, and its read entries (a whole-collection count, issue 20).
fn counting_ready(db: &mut postgres::Client) -> bool {
    db.query_one(
        "select baas._btree_index_id(c.id, 'n') is not null and baas._read_entries_ready(c.id) from baas.collections c where c.name = 'bulk'",
        &[],
    )
    .unwrap()
    .get(0)
}

// ------------------------------------------------------------------ schema comparison

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn tool(cluster: &Cluster, bin: &str) -> Command {
    let mut c = Command::new(pg_bindir().join(bin));
    c.args(["-h", "127.0.0.1", "-p", &cluster.port.to_string(), "-U", "postgres"]);
    c
}

/// The extension's objects in `db` as SQL: `pg_dump --schema-only` in binary-upgrade
/// mode (the plain mode leaves out extension members, printing only CREATE EXTENSION),
/// without what differs between any two databases.
fn schema(cluster: &Cluster, db: &str) -> String {
    let text = run(tool(cluster, "pg_dump").args(["--schema-only", "--binary-upgrade", "-d", db]));
    let mut out = Vec::new();
    for line in text.lines() {
        // OIDs, transaction ids, sequence positions, psql's per-dump \restrict key.
        let varies = ["binary_upgrade_set_next_", "UPDATE pg_catalog.pg_class", "SET relfrozenxid", "pg_catalog.setval("];
        if line.is_empty() || line.starts_with("--") || line.starts_with("\\restrict") || line.starts_with("\\unrestrict")
            || line.starts_with("WHERE oid = ") || varies.iter().any(|v| line.contains(v))
        {
            continue;
        }
        if line.contains("binary_upgrade_create_empty_extension") {
            // Carries the OIDs of the configuration tables: compared by name in config_tables().
            out.push("SELECT pg_catalog.binary_upgrade_create_empty_extension(…);".to_string());
            continue;
        }
        out.push(line.to_string());
    }
    out.join("\n") + "\n"
}

/// Tables (and sequences) whose rows pg_dump includes, with their filters.
fn config_tables(db: &mut postgres::Client) -> Vec<(String, String)> {
    db.query(
        "select c::regclass::text, f from pg_extension e, unnest(e.extconfig, e.extcondition) as x(c, f)
          where e.extname = 'pgbaas' order by 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn diff(a: &str, b: &str, a_name: &str, b_name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("pgbaas-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (pa, pb) = (dir.join(a_name), dir.join(b_name));
    std::fs::write(&pa, a).unwrap();
    std::fs::write(&pb, b).unwrap();
    let out = Command::new("diff").arg("-u").arg(&pa).arg(&pb).output().expect("diff");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ------------------------------------------------------------------ the tests

#[test]
fn a_database_of_the_previous_release_upgrades_in_place_and_keeps_everything() {
    let _lock = SYSTEM_INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let current = CurrentInstall::save();
    current.install_previous();
    // Fill `pgbaas` under the previous release; `empty` is the schema comparison's.
    let cluster = Cluster::temporary().expect("cluster");
    let mut db = cluster.connect("postgres", DB).unwrap();
    let version: String = db.query_one("select extversion from pg_extension where extname = 'pgbaas'", &[]).unwrap().get(0);
    assert_eq!(version, PREVIOUS);
    db.batch_execute("create database empty").unwrap();
    cluster.connect("postgres", "empty").unwrap().batch_execute("create extension pgbaas").unwrap();
    // A DBA's view on baas.settings: an update only adds columns to it, so the view stays.
    db.batch_execute("create database dependent").unwrap();
    cluster
        .connect("postgres", "dependent")
        .unwrap()
        .batch_execute("create extension pgbaas; create view public.token_ttls as select access_token_ttl from baas.settings")
        .unwrap();
    let fx = fill(&mut db);
    // Files made under the previous release, and an unfinished upload.
    let files = fill_files(&cluster, &fx);
    let before = rows(&mut db);
    drop(db);

    // The package upgrade: new files (and library) in place, then ALTER EXTENSION.
    drop(current);
    // In between, new connections load the new library under the previous version's
    // SQL: every C function that SQL names must be there, and sign-in keeps working.
    let mut db = cluster.connect("postgres", DB).unwrap();
    let symbols: Vec<String> = db
        .query("select distinct prosrc from pg_proc where probin = '$libdir/pgbaas' order by 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(symbols.len() > 10, "{symbols:?}");
    let exported = run(Command::new("nm").args(["-D", "--defined-only"]).arg(pg_config("--pkglibdir").join("pgbaas.so")));
    let exported: BTreeSet<&str> = exported.lines().filter_map(|l| l.split_whitespace().nth(2)).collect();
    let missing: Vec<&String> = symbols.iter().filter(|s| !exported.contains(s.as_str())).collect();
    assert!(missing.is_empty(), "the new library lacks C functions that {PREVIOUS}'s SQL calls: {missing:?}");
    let mut tx = db.transaction().unwrap(); // rolled back: the rows compared below stay as filled
    let login: Value = tx.query_one("select baas.login($1, $2)", &[&fx.accounts["bob"].email, &PASSWORD]).unwrap().get(0);
    assert_eq!(login["user"]["id"], fx.accounts["bob"].id.as_str());
    // Counts too: the new library's filterless count must not name SQL objects the
    // previous version lacks (baas.read_entries, 0.11.0); it counts the documents.
    let bob = json!({"sub": fx.accounts["bob"].id, "role": "baas_user"}).to_string();
    tx.execute("select set_config('baas.claims', $1, true)", &[&bob]).unwrap();
    tx.batch_execute("set local role baas_user").unwrap();
    let n: i64 = tx.query_one("select baas.count('bulk')", &[]).unwrap().get(0);
    assert_eq!(n, fx.bulk, "bob counts the public documents of bulk with the new library under {PREVIOUS}'s SQL");
    tx.rollback().unwrap();
    drop(db);
    for name in [DB, "empty"] {
        let mut db = cluster.connect("postgres", name).unwrap();
        // The update tells listening proxies to retire their older connections.
        db.batch_execute("listen baas_extension").unwrap();
        db.batch_execute("alter extension pgbaas update").unwrap_or_else(|e| panic!("ALTER EXTENSION pgbaas UPDATE in {name}: {e:?}"));
        use postgres::fallible_iterator::FallibleIterator;
        let note = db.notifications().timeout_iter(std::time::Duration::from_secs(10)).next().unwrap();
        assert_eq!(note.map(|n| n.payload().to_string()), Some(CURRENT.to_string()), "the update did not notify baas_extension");
        let version: String = db.query_one("select extversion from pg_extension where extname = 'pgbaas'", &[]).unwrap().get(0);
        assert_eq!(version, CURRENT);
    }
    let mut dependent = cluster.connect("postgres", "dependent").unwrap();
    dependent.batch_execute("alter extension pgbaas update").expect("a view on baas.settings does not stop the update");
    let ttl: i64 = dependent.query_one("select count(*) from public.token_ttls", &[]).unwrap().get(0);
    assert_eq!(ttl, 1, "the view still reads the settings row");
    drop(dependent);
    let mut db = cluster.connect("postgres", DB).unwrap();
    // Every row kept; an update may add settings and collection columns (compared on the old
    // ones) and the live feed's state row, made by the update.
    assert_rows_kept(&before, &rows(&mut db), &[], &[]);
    // The upgraded schema is exactly a fresh install's, roles included.
    let roles = || -> String {
        let text = run(tool(&cluster, "pg_dumpall").arg("--roles-only"));
        text.lines().filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict")).collect::<Vec<_>>().join("\n")
    };
    let roles_before = roles();
    db.batch_execute("create database fresh").unwrap();
    let mut fresh = cluster.connect("postgres", "fresh").unwrap();
    fresh.batch_execute("create extension pgbaas").unwrap();
    let roles_after = roles();
    assert!(roles_before == roles_after, "a fresh install changed the cluster's roles:\n{}", diff(&roles_before, &roles_after, "upgraded.roles", "fresh.roles"));
    let mut empty = cluster.connect("postgres", "empty").unwrap();
    assert_eq!(config_tables(&mut empty), config_tables(&mut fresh), "tables pg_dump includes rows of");
    assert_eq!(config_tables(&mut db), config_tables(&mut fresh), "tables pg_dump includes rows of");
    let (upgraded, fresh) = (schema(&cluster, "empty"), schema(&cluster, "fresh"));
    assert!(upgraded == fresh, "the upgraded schema differs from a fresh install's (- upgraded, + fresh):\n{}", diff(&upgraded, &fresh, "upgraded.sql", "fresh.sql"));
    assert!(counting_ready(&mut db), "the index entries stay ready for counting");
    assert_indexes_drive_plans(&mut db, &fx.accounts["dave"].id);
    let lints: Vec<Value> = db.query("select to_jsonb(l) from baas.security_lints() l", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert!(lints.is_empty(), "security lints after the upgrade: {lints:#?}");
    check_through_proxy(&cluster, &fx, &[FILES_BUCKET]);
    // The files come along byte for byte, and the upload resumes across the upgrade.
    check_files(&cluster, &fx, &files);
}

#[test]
fn a_dump_restored_into_a_fresh_cluster_keeps_every_row_and_works() {
    let _lock = SYSTEM_INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let source = Cluster::temporary().expect("cluster");
    let mut db = source.connect("postgres", DB).unwrap();
    let fx = fill(&mut db);
    let files = fill_files(&source, &fx);
    let before = rows(&mut db);
    let dump = std::env::temp_dir().join(format!("pgbaas-upgrade-test-{}.dump", std::process::id()));
    run(tool(&source, "pg_dump").args(["-Fc", "-d", DB, "-f"]).arg(&dump));
    drop(db);
    drop(source);

    // A fresh server: no pgbaas roles, an empty database; a plain pg_restore.
    let target = Cluster::temporary_with(false).expect("cluster");
    let roles: i64 = target.connect("postgres", DB).unwrap().query_one("select count(*) from pg_roles where rolname like 'baas%'", &[]).unwrap().get(0);
    assert_eq!(roles, 0);
    run(tool(&target, "pg_restore").args(["--exit-on-error", "-d", DB]).arg(&dump));
    let _ = std::fs::remove_file(&dump);
    let mut db = target.connect("postgres", DB).unwrap();
    // index_entries, read_entries and their ready marks are derived, and rebuilt below; CREATE EXTENSION
    // on restore makes one signing key of its own, and a live-feed message secret of its
    // own (never dumped: a restored copy must not accept messages under the source's).
    // The live feed's event log is not dumped and its state row names the source's slot
    // (docs/realtime.md): the files fixture ran a proxy on the source, which captured.
    assert_rows_kept(
        &before,
        &rows(&mut db),
        &["_signing_keys"],
        &["index_entries", "_index_entries_ready", "read_entries", "_read_entries_ready", "_realtime_secret", "realtime_events", "_realtime_state"],
    );
    // pg_dump leaves out indexes made on an extension's tables: baas.restore_indexes()
    // makes them again from baas.indexes, with their counting entries.
    assert!(!counting_ready(&mut db), "restored index entries are not trusted before a rebuild");
    let made: i32 = db.query_one("select baas.restore_indexes()", &[]).unwrap().get(0);
    assert_eq!(made, 2);
    assert!(counting_ready(&mut db));
    let made: i32 = db.query_one("select baas.restore_indexes()", &[]).unwrap().get(0);
    assert_eq!(made, 0, "a second run finds nothing missing");
    db.batch_execute("analyze").unwrap();
    assert_indexes_drive_plans(&mut db, &fx.accounts["dave"].id);
    let lints: Vec<Value> = db.query("select to_jsonb(l) from baas.security_lints() l", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert!(lints.is_empty(), "security lints after the restore: {lints:#?}");
    check_through_proxy(&target, &fx, &[FILES_BUCKET]);
    check_files(&target, &fx, &files);
}

// ------------------------------------------------------------------ files

const FILES_BUCKET: &str = "media";
const MIB: usize = 1 << 20;

struct StoredFile {
    id: String,
    name: String,
    bytes: Vec<u8>,
    /// The file JSON the upload answered (metadata and ACL as set).
    meta: Value,
    /// Who may read it: account names and "anon".
    readers: Vec<&'static str>,
}

struct FilesFixture {
    files: Vec<StoredFile>,
    /// (collection, document id) of the document referencing files[2].
    referrer: (String, String),
    /// Path of the unfinished tus upload, its whole bytes and where it stopped.
    upload: String,
    upload_bytes: Vec<u8>,
    upload_offset: usize,
}

fn sha_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// Deterministic bytes that no magic number matches.
fn file_bytes(seed: u8, n: usize) -> Vec<u8> {
    let mut x = 0x2545_F491_4F6C_DD1Du64 ^ seed as u64;
    (0..n)
        .map(|i| {
            if i == 0 {
                return b'~';
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn send_bytes(base: &str, method: &str, path: &str, token: Option<&str>, headers: &[(&str, &str)], body: &[u8]) -> common::Resp {
    let mut req = ureq::request(method, &format!("{base}{path}"));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let resp = match req.send_bytes(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let status = resp.status();
    let headers = resp.headers_names().into_iter().map(|n| (n.clone(), resp.header(&n).unwrap_or("").to_string())).collect();
    let text = resp.into_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    assert!(status < 500, "{method} {path} gave {status}: {body}");
    common::Resp { status, body, headers }
}

fn get_bytes(base: &str, path: &str, token: Option<&str>) -> (u16, Vec<u8>) {
    let mut req = ureq::get(&format!("{base}{path}"));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {path}: {e}"),
    };
    let status = resp.status();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).unwrap();
    (status, body)
}

/// A bucket with three files of alice's (0 B private, 1 B read by bob, 3 MiB public), a
/// note referencing the big one, and a tus upload stopped after 1 MiB + 5 bytes; made
/// over HTTP through a proxy of its own, as an app would.
fn fill_files(cluster: &Cluster, fx: &Fixture) -> FilesFixture {
    let proxy = Proxy::start(&cluster.authenticator_url().unwrap(), &[]).expect("proxy");
    let b = proxy.base();
    let r = call(&b, "POST", "/v1/collections", Some(&fx.service_token), Some(json!({"name": FILES_BUCKET, "options": {"bucket": true}})));
    assert_eq!(r.status, 201, "{}", r.body);
    let alice = fx.accounts["alice"].access.as_str();
    let bob = format!("user:{}", fx.accounts["bob"].id);
    let shapes: Vec<(&str, Vec<u8>, Value, Vec<&'static str>)> = vec![
        ("empty.bin", Vec::new(), json!({}), vec!["alice"]),
        ("one byte.bin", b"~".to_vec(), json!({"read": [bob]}), vec!["alice", "bob"]),
        ("big – é.bin", file_bytes(3, 3 * MIB), json!({"read": ["public"]}), vec!["alice", "bob", "carol", "dave", "anon"]),
    ];
    let mut files = Vec::new();
    for (name, bytes, acl, readers) in shapes {
        let path = format!("/v1/collections/{FILES_BUCKET}/files?name={}", percent(name));
        let r = send_bytes(&b, "POST", &path, Some(alice), &[("Content-Type", "application/octet-stream")], &bytes);
        assert_eq!(r.status, 201, "{name}: {}", r.body);
        let id = r.body["id"].as_str().unwrap().to_string();
        let r = call(&b, "PUT", &format!("/v1/files/{id}/acl"), Some(alice), Some(acl));
        assert_eq!(r.status, 200, "{}", r.body);
        let meta = call(&b, "GET", &format!("/v1/files/{id}/meta"), Some(alice), None).body;
        assert_eq!(meta["sha256"], sha_hex(&bytes).as_str());
        files.push(StoredFile { id, name: name.to_string(), bytes, meta, readers });
    }
    let r = call(&b, "POST", "/v1/collections/notes/documents", Some(alice), Some(json!({"data": {"attachment": {"$file": files[2].id}}})));
    assert_eq!(r.status, 201, "{}", r.body);
    let referrer = ("notes".to_string(), r.body["id"].as_str().unwrap().to_string());
    let upload_bytes = file_bytes(4, 3 * MIB);
    let meta = format!("bucket {},filename {}", b64std(FILES_BUCKET.as_bytes()), b64std(b"resumed.bin"));
    let len = upload_bytes.len().to_string();
    let r = send_bytes(&b, "POST", "/v1/uploads", Some(alice), &[("Tus-Resumable", "1.0.0"), ("Upload-Length", &len), ("Upload-Metadata", &meta)], b"");
    assert_eq!(r.status, 201, "{:?}", r.headers);
    let loc = r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("location")).map(|(_, v)| v.clone()).unwrap();
    let upload = loc[loc.find("/v1/").unwrap()..].to_string();
    let upload_offset = MIB + 5;
    let r = send_bytes(
        &b,
        "PATCH",
        &upload,
        Some(alice),
        &[("Tus-Resumable", "1.0.0"), ("Content-Type", "application/offset+octet-stream"), ("Upload-Offset", "0")],
        &upload_bytes[..upload_offset],
    );
    assert_eq!(r.status, 204, "{}", r.body);
    FilesFixture { files, referrer, upload, upload_bytes, upload_offset }
}

fn b64std(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Every file byte-identical (over HTTP and in the chunk rows), with its metadata, ACL
/// and reference; the unfinished upload resumes and finishes.
fn check_files(cluster: &Cluster, fx: &Fixture, ffx: &FilesFixture) {
    let proxy = Proxy::start(&cluster.authenticator_url().unwrap(), &[]).expect("proxy");
    let b = proxy.base();
    let mut db = cluster.connect("postgres", DB).unwrap();
    let alice = fx.accounts["alice"].access.as_str();
    let mut tokens: BTreeMap<&str, Option<String>> = BTreeMap::new();
    for (name, a) in &fx.accounts {
        let login = call(&b, "POST", "/v1/auth/login", None, Some(json!({"email": a.email, "password": PASSWORD})));
        tokens.insert(name, Some(login.body["access_token"].as_str().unwrap().to_string()));
    }
    tokens.insert("anon", None);
    for f in &ffx.files {
        let sha = sha_hex(&f.bytes);
        let (status, body) = get_bytes(&b, &format!("/v1/files/{}", f.id), Some(alice));
        assert_eq!(status, 200, "{}", f.name);
        assert_eq!((body.len(), sha_hex(&body)), (f.bytes.len(), sha.clone()), "{}: the HTTP download", f.name);
        let stored: String = db
            .query_one(
                "select encode(sha256(coalesce(string_agg(c.data, ''::bytea order by c.off), ''::bytea)), 'hex')
                   from baas.documents d left join baas._file_chunks c on c.blob_id = d.blob_id where d.id = $1::text::uuid",
                &[&f.id],
            )
            .unwrap()
            .get(0);
        assert_eq!(stored, sha, "{}: the chunk rows", f.name);
        let meta = call(&b, "GET", &format!("/v1/files/{}/meta", f.id), Some(alice), None);
        assert_eq!(meta.status, 200);
        assert_eq!(meta.body, f.meta, "{}: metadata and ACL", f.name);
        for (who, token) in &tokens {
            let (status, _) = get_bytes(&b, &format!("/v1/files/{}", f.id), token.as_deref());
            let want = if f.readers.contains(who) { 200 } else { 404 };
            assert_eq!(status, want, "{who} reads {}", f.name);
        }
    }
    let refs: i64 = db
        .query_one(
            "select count(*) from baas._file_refs where document_id = $1::text::uuid and file_id = $2::text::uuid",
            &[&ffx.referrer.1, &ffx.files[2].id],
        )
        .unwrap()
        .get(0);
    assert_eq!(refs, 1, "the reference of {}/{}", ffx.referrer.0, ffx.referrer.1);
    // The upload goes on where it stopped.
    let r = send_bytes(&b, "HEAD", &ffx.upload, Some(alice), &[("Tus-Resumable", "1.0.0")], b"");
    assert_eq!(r.status, 200, "HEAD {}", ffx.upload);
    let off = r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("upload-offset")).map(|(_, v)| v.clone());
    assert_eq!(off, Some(ffx.upload_offset.to_string()));
    let at = ffx.upload_offset.to_string();
    let r = send_bytes(
        &b,
        "PATCH",
        &ffx.upload,
        Some(alice),
        &[("Tus-Resumable", "1.0.0"), ("Content-Type", "application/offset+octet-stream"), ("Upload-Offset", &at)],
        &ffx.upload_bytes[ffx.upload_offset..],
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let id = r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("pgbaas-file-id")).map(|(_, v)| v.clone()).expect("Pgbaas-File-Id");
    let (status, body) = get_bytes(&b, &format!("/v1/files/{id}"), Some(alice));
    assert_eq!((status, sha_hex(&body)), (200, sha_hex(&ffx.upload_bytes)), "the resumed upload");
}
