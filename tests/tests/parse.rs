//! The Parse door end to end (issue 21, docs/parse.md): the official Parse JavaScript
//! SDK (npm `parse`, pinned in tests/parse-sdk) driving the real proxy's `/parse` over
//! real HTTP, and the REST style with `X-Parse-*` headers; Parse's error shapes; ACLs set
//! through the SDK checked against what `baas.as_user` sees in SQL, and ACLs set in SQL
//! checked against what the SDK's users get.

mod common;
use common::*;
use pgbaas_testkit::Proxy;
use serde_json::{json, Value};
use std::sync::OnceLock;

const APP_ID: &str = "parse-test-app";
const MASTER_KEY: &str = "parse-test-master-key-0123456789";

/// A proxy with the Parse door on (the shared cluster), and the GameScore class's
/// collection, set up as Parse's defaults are: anyone may create, objects without an
/// ACL are public.
fn door() -> &'static Proxy {
    static DOOR: OnceLock<Proxy> = OnceLock::new();
    DOOR.get_or_init(|| {
        admin()
            .batch_execute(
                r#"select baas.create_collection(c, '{"create": ["public"],
                     "default_acl": {"read": ["public"], "update": ["public"], "delete": ["public"]}}')
                     from unnest(array['gamescore', 'post', 'comment']) c;
                   select baas.create_collection('parse_files', '{"bucket": true, "create": ["authenticated"],
                     "default_acl": {"read": ["public"]}}');
                   create schema api;
                   grant usage on schema api to baas_anon, baas_user, baas_service;
                   select baas.expose_schema('api');
                   create function api.hello(name text) returns text language sql immutable as $$select 'hello ' || name$$;
                   create function api.whoami() returns uuid language sql stable as 'select baas.uid()';
                   create function api.boom() returns integer language plpgsql as $$begin raise exception 'it broke'; end$$;
                   update baas.settings set email_from = 'Test App <noreply@pgbaas.test>', app_url = 'testapp://auth', anonymous_sign_in = true;"#,
            )
            .unwrap();
        let dir = std::env::temp_dir().join(format!("pgbaas-parse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key_file = dir.join("master-key");
        std::fs::write(&key_file, format!("{MASTER_KEY}\n")).unwrap();
        let url = env().cluster.authenticator_url().unwrap();
        Proxy::start(&url, &["--pool-size", "4", "--parse-app-id", APP_ID, "--parse-master-key-file", key_file.to_str().unwrap(), "--parse-live-recheck-secs", "2", "--oidc-refetch-floor-secs", "1"])
            .expect("start the proxy with the Parse door")
    })
}

/// Tests that sign in anonymously hold this while `rest_anonymous_auth_data` turns the
/// setting off for a moment.
fn anonymous_sign_in() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn parse_url() -> String {
    format!("{}/parse", door().base())
}

/// Run SDK scenarios (tests/parse-sdk/scenarios.js); their JSON fact lines.
fn sdk(scenarios: &[&str]) -> Vec<Value> {
    sdk_env(scenarios, &[])
}

/// As `sdk`, with more environment for the scenarios.
fn sdk_env(scenarios: &[&str], extra: &[(&str, String)]) -> Vec<Value> {
    let dir = pgbaas_testkit::workspace_root().join("tests/parse-sdk");
    assert!(dir.join("node_modules/parse/package.json").exists(), "the Parse SDK is not installed: run tests/scripts/install-deps.sh");
    let out = std::process::Command::new("node")
        .current_dir(&dir)
        .arg("scenarios.js")
        .args(scenarios)
        .env("PARSE_SERVER_URL", parse_url())
        .env("PARSE_APP_ID", APP_ID)
        .env("PARSE_MASTER_KEY", MASTER_KEY)
        .env("PARSE_RUN", format!("{}-{}", std::process::id(), scenarios.join("-")))
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "SDK scenarios {scenarios:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let facts: Vec<Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(facts.len(), scenarios.len(), "one line per scenario: {stdout}");
    facts
}

/// Run SDK scenarios against `url` (a Parse server) as peer `peer`; their fact lines.
fn sdk_at(url: &str, peer: &str, app: &str, master: &str, scenarios: &[&str]) -> Vec<Value> {
    let dir = pgbaas_testkit::workspace_root().join("tests/parse-sdk");
    let out = std::process::Command::new("node")
        .current_dir(&dir)
        .arg("scenarios.js")
        .args(scenarios)
        .env("PARSE_SERVER_URL", url)
        .env("PARSE_APP_ID", app)
        .env("PARSE_MASTER_KEY", master)
        .env("PARSE_PEER", peer)
        .env("PARSE_RUN", format!("{}-{peer}", std::process::id()))
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "SDK scenarios {scenarios:?} against {peer} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Parse Server 9 (bench/parse, the benchmark's peer) on the test cluster, database
/// `parse`, with GameScore, Post and Comment created by the master key and open to
/// everyone, as a Parse app would have them.
struct ParseServer {
    child: std::process::Child,
    url: String,
}

impl Drop for ParseServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_server() -> ParseServer {
    use std::io::{BufRead, BufReader};
    let dir = pgbaas_testkit::workspace_root().join("bench/parse");
    assert!(dir.join("node_modules/parse-server").exists(), "Parse Server is not installed: run tests/scripts/install-deps.sh");
    let mut db = admin();
    db.batch_execute("create role parse login password 'parse'").unwrap();
    db.batch_execute("create database parse owner parse").unwrap();
    // Parse Server answers geo queries with PostGIS (tests/scripts/install-deps.sh).
    let mut parse_db = postgres::Client::connect(&env().cluster.url("postgres", "parse"), postgres::NoTls).expect("database parse");
    parse_db.batch_execute("create extension postgis").expect("create extension postgis (tests/scripts/install-deps.sh installs it)");
    let port = pgbaas_testkit::free_port();
    let files = std::env::temp_dir().join(format!("pgbaas-parse-server-files-{}", std::process::id()));
    let mut child = std::process::Command::new("node")
        .arg("server.js")
        .current_dir(&dir)
        .env("PARSE_DATABASE_URI", format!("postgres://parse:parse@127.0.0.1:{}/parse", env().cluster.port))
        .env("PARSE_PORT", port.to_string())
        .env("PARSE_APP_ID", "peerapp")
        .env("PARSE_MASTER_KEY", "peermaster")
        .env("PARSE_FILES_DIR", &files)
        .env("PARSE_WORKERS", "1")
        .env("PARSE_LIVE_QUERY", "GameScore")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start Parse Server");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("parse-server ready") {
                let _ = tx.send(());
            }
        }
    });
    let server = ParseServer { child, url: format!("http://127.0.0.1:{port}/parse") };
    rx.recv_timeout(std::time::Duration::from_secs(60)).expect("Parse Server did not start within 60 s");
    let open = json!({"find": {"*": true}, "count": {"*": true}, "get": {"*": true}, "create": {"*": true},
                      "update": {"*": true}, "delete": {"*": true}, "addField": {"*": true}, "protectedFields": {"*": []}});
    for class in ["GameScore", "Post", "Comment"] {
        let r = request_at(&server.url.replace("/parse", ""), "POST", &format!("/parse/schemas/{class}"), None,
            &[("X-Parse-Application-Id", "peerapp"), ("X-Parse-Master-Key", "peermaster")],
            Some(&json!({"className": class, "classLevelPermissions": open}).to_string()));
        assert_eq!(r.status, 200, "creating {class} on Parse Server: {}", r.body);
    }
    server
}

/// The differential test: the same SDK scenarios, with the same assertions, pass against
/// Parse Server on the same Postgres, so both answer them alike (the few deliberate
/// differences are asserted per peer in scenarios.js and listed in docs/parse.md).
#[test]
fn sdk_scenarios_agree_with_parse_server() {
    door();
    let peer = parse_server();
    // Not "transactions": Parse Server 9 on Postgres dropped the connection on the batch
    // whose operation fails (`fetch failed`) in one of four runs, so no stable answer to
    // compare with; the door's side is sdk_transactional_batches_are_all_or_none.
    let scenarios = ["users", "userSave", "userDelete", "userQueries", "anonymous", "objects", "acls", "queries", "includes", "subqueries", "relations", "liveQuery", "files", "geo"];
    let facts = sdk_at(&peer.url, "parse-server", "peerapp", "peermaster", &scenarios);
    assert_eq!(facts.len(), scenarios.len(), "{facts:?}");

    // The way out: pgbaas-import brings what the app wrote to Parse Server into pgbaas;
    // the same SDK then signs its users in with their old passwords and reads their
    // objects, pointers, ACLs and files through the door.
    let parse_db = format!("postgres://parse:parse@127.0.0.1:{}/parse", env().cluster.port);
    let import_with = |extra: &[&str]| {
        let bin = pgbaas_testkit::proxy_bin().with_file_name("pgbaas-import");
        let out = std::process::Command::new(&bin)
            .args(["parse", "--from", &parse_db])
            .args(["--to", &env().cluster.url("postgres", pgbaas_testkit::DB)])
            .args(extra)
            .output()
            .expect("run pgbaas-import");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "pgbaas-import failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
        text
    };
    let import = || import_with(&[]);
    // A user who signs in with Apple on Parse Server (authData as Parse Server keeps it;
    // its adapter needs Apple's real keys, so set here), and a provider pgbaas lacks.
    let mut parse = postgres::Client::connect(&parse_db, postgres::NoTls).expect("Parse Server's database");
    let apple_sub = format!("005678.apple.{}", std::process::id());
    let apple_user: String = parse
        .query_one(
            r#"update "_User" set "authData" = jsonb_build_object('apple', jsonb_build_object('id', $1::text, 'token', 'old'),
                                                                  'twitter', jsonb_build_object('id', 'tw-1', 'auth_token', 'x'))
                where "objectId" = (select "objectId" from "_User" where "_hashed_password" is not null order by "createdAt" limit 1)
            returning "username""#,
            &[&apple_sub],
        )
        .expect("a Parse user with a password")
        .get(0);
    idps();
    // Files' bytes from the running Parse Server (its own files adapter serves them).
    let (from, to) = (format!("{}/files/peerapp", peer.url), format!("{}/files/{APP_ID}", parse_url()));
    // A dry run first: it writes nothing and fetches nothing (here from a port where no
    // one listens, which a fetch would report).
    let nowhere = format!("http://127.0.0.1:{}/files/peerapp", pgbaas_testkit::free_port());
    let dry = import_with(&["--files-from", &nowhere, "--files-url", &to, "--dry-run"]);
    assert!(dry.contains("files: 1 copied, 0 already there") && dry.contains("dry run: nothing was written"), "{dry}");
    assert!(!dry.contains("could not be read"), "{dry}");
    let first = import_with(&["--files-from", &from, "--files-url", &to]);
    drop(peer);
    assert!(first.contains("files: 1 copied, 0 already there"), "{first}");
    assert!(!first.contains("file contents"), "{first}");
    assert!(first.contains("class GameScore -> collection gamescore: "), "{first}");
    assert!(first.contains(", 0 already there"), "a first import skips nothing: {first}");
    assert!(first.contains("not imported: sessions"), "what it could not map is said: {first}");
    assert!(first.contains("; 1 sign-in provider identities linked"), "{first}");
    assert!(first.contains("not imported: users' authData of a provider pgbaas lacks (baas.set_oidc_provider, then import again): 1"), "{first}");
    // The user signs in with Apple through the door, as the imported account.
    let by_apple = rest("POST", "/users", &[APP], Some(&json!({"authData": {"apple": {"id": apple_sub, "token": id_token("apple", &apple_sub, json!({}))}}}).to_string()));
    assert_eq!((by_apple.status, by_apple.body["username"].as_str()), (200, Some(apple_user.as_str())), "{}", by_apple.body);
    // Run again: everything is there, nothing is doubled.
    let again = import();
    assert!(again.contains("users: 0 imported"), "{again}");
    assert!(again.contains("; 0 sign-in provider identities linked"), "{again}");
    assert!(again.contains(" 0 objects imported"), "{again}");
    let docs_before: i64 = admin().query_one("select count(*) from baas.documents", &[]).unwrap().get(0);
    import();
    let docs_after: i64 = admin().query_one("select count(*) from baas.documents", &[]).unwrap().get(0);
    assert_eq!(docs_before, docs_after);
    // --sessions: a user signed in on Parse Server is still signed in through the door,
    // with the same token.
    let live = parse
        .query_one(
            r#"select s."sessionToken", u."username" from "_Session" s join "_User" u on s."user" = u."objectId"
                where s."expiresAt" > now() and s."sessionToken" like 'r:%' order by s."createdAt" desc limit 1"#,
            &[],
        )
        .expect("a live Parse Server session");
    let (token, username): (String, String) = (live.get(0), live.get(1));
    let me = |token: &str| rest("GET", "/users/me", &[APP, ("X-Parse-Session-Token", token)], None);
    assert_eq!(me(&token).body["code"], 209, "not before --sessions");
    let with = import_with(&["--sessions"]);
    let n: u64 = with.lines().find_map(|l| l.strip_prefix("sessions: ")?.split(' ').next()?.parse().ok()).expect("a sessions line");
    assert!(n >= 1, "{with}");
    let r = me(&token);
    assert_eq!((r.status, r.body["username"].as_str()), (200, Some(username.as_str())), "{}", r.body);
    assert!(import_with(&["--sessions"]).contains("sessions: 0 imported"), "a second run imports no session twice");
    // And it ends as pgbaas sessions do.
    let r = rest("POST", "/logout", &[APP, ("X-Parse-Session-Token", &token)], Some("{}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(me(&token).body["code"], 209);
    // Ended, then purged by housekeeping: a later run does not bring the token back.
    admin()
        .batch_execute("update baas.sessions set revoked_at = now() - interval '3 days' where revoked_at is not null; select baas.purge_sessions()")
        .unwrap();
    import_with(&["--sessions"]);
    assert_eq!(me(&token).body["code"], 209, "an ended session stays ended");
    // Only what a password sign-in would admit: not a suspended account. DBAs only.
    let mut db = admin();
    let suspended: String = db
        .query_one("select baas.create_user($1, 'pw-susp-secret-1') ->> 'id'", &[&format!("import-suspended-{}@example.com", std::process::id())])
        .unwrap()
        .get(0);
    db.execute("select baas.suspend_user($1::text::uuid)", &[&suspended]).unwrap();
    let v: Value = db
        .query_one("select baas.parse_import_sessions(jsonb_build_array(jsonb_build_object('user_id', $1::text, 'token', 'r:a-suspended-users-token')))", &[&suspended])
        .unwrap()
        .get(0);
    assert_eq!(v, json!({"imported": 0, "skipped": 1}));
    let err = db.batch_execute("set role baas_service; select baas.parse_import_sessions('[]')").unwrap_err();
    assert_eq!(err.code(), Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{err}");
    db.batch_execute("reset role").unwrap();
    // Nor users (they carry sign-in identities): DBAs only.
    let err = db.batch_execute("set role baas_service; select baas.parse_import_users('[]')").unwrap_err();
    assert_eq!(err.code(), Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{err}");
    db.batch_execute("reset role").unwrap();
    // An identity reaches only an account the import made: a row naming an account
    // already there (a skipped row) links nothing to it.
    let there: String = db.query_one("select baas.create_user($1, 'pw-there-secret-1') ->> 'id'", &[&format!("import-there-{}@example.com", std::process::id())]).unwrap().get(0);
    let v: Value = db
        .query_one(
            "select baas.parse_import_users(jsonb_build_array(jsonb_build_object('id', $1::text, 'username', 'x-there',
                 'identities', jsonb_build_array(jsonb_build_object('provider', 'google', 'subject', 'not-theirs')))))",
            &[&there],
        )
        .unwrap()
        .get(0);
    assert_eq!(v, json!({"imported": 0, "skipped": 1, "identities": {"linked": 0, "no_provider": 0, "taken": 0}}));
    let n: i64 = db.query_one("select count(*) from baas.identities where subject = 'not-theirs'", &[]).unwrap().get(0);
    assert_eq!(n, 0);
    let run = format!("{}-parse-server", std::process::id());
    let dir = pgbaas_testkit::workspace_root().join("tests/parse-sdk");
    let _anonymous = anonymous_sign_in();
    let out = std::process::Command::new("node")
        .current_dir(&dir)
        .args(["scenarios.js", "imported"])
        .env("PARSE_SERVER_URL", parse_url())
        .env("PARSE_APP_ID", APP_ID)
        .env("PARSE_MASTER_KEY", MASTER_KEY)
        .env("PARSE_IMPORTED_RUN", &run)
        .output()
        .expect("run node");
    assert!(out.status.success(), "the imported data through the door:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// Parse session tokens are pgbaas sessions: a DBA's sign-out, a suspension and a new
/// password set through pgbaas's own API end them at once.
#[test]
fn parse_sessions_end_with_the_account_s_sessions() {
    let signup = |name: &str| -> (String, String) {
        let r = rest("POST", "/users", &[APP], Some(&json!({"username": name, "password": "session-pass-1", "email": format!("{name}@example.com")}).to_string()));
        assert_eq!(r.status, 201, "{}", r.body);
        (r.body["objectId"].as_str().unwrap().to_string(), r.body["sessionToken"].as_str().unwrap().to_string())
    };
    let alive = |t: &str| rest("GET", "/users/me", &[APP, ("X-Parse-Session-Token", t)], None).status == 200;
    let pid = std::process::id();
    let mut db = admin();
    let (id, token) = signup(&format!("out-{pid}"));
    assert!(alive(&token));
    db.execute("select baas.sign_out_user($1::text::uuid)", &[&id]).unwrap();
    assert!(!alive(&token), "sign_out_user ends Parse sessions");
    let (id, token) = signup(&format!("susp-{pid}"));
    db.execute("select baas.suspend_user($1::text::uuid)", &[&id]).unwrap();
    assert!(!alive(&token), "suspension ends Parse sessions");
    let r = rest("POST", "/login", &[APP], Some(&json!({"username": format!("susp-{pid}"), "password": "session-pass-1"}).to_string()));
    assert_eq!((r.status, r.body["code"].as_i64()), (400, Some(142)), "a suspended account cannot sign in: {}", r.body);
    // Parse's password reset and verification requests are pgbaas's mails (queued: this
    // proxy has no SMTP server), answered {} for unknown addresses too.
    let (_, _) = signup(&format!("mail-{pid}"));
    for (path, template) in [("/requestPasswordReset", "reset_password"), ("/verificationEmailRequest", "verify_email")] {
        let before: i64 = db.query_one("select count(*) from baas.email_outbox where to_address = $1", &[&format!("mail-{pid}@example.com")]).unwrap().get(0);
        let r = rest("POST", path, &[APP], Some(&json!({"email": format!("mail-{pid}@example.com")}).to_string()));
        assert_eq!((r.status, r.body.clone()), (200, json!({})), "{path}");
        let row = db
            .query_one(
                "select count(*), (select template from baas.email_outbox where to_address = $1 order by id desc limit 1)
                   from baas.email_outbox where to_address = $1",
                &[&format!("mail-{pid}@example.com")],
            )
            .unwrap();
        let (after, last): (i64, Option<String>) = (row.get(0), row.get(1));
        assert_eq!((after, last.as_deref()), (before + 1, Some(template)), "{path} queued its mail");
        let r = rest("POST", path, &[APP], Some(r#"{"email": "nobody-at-all@example.com"}"#));
        assert_eq!((r.status, r.body.clone()), (200, json!({})), "{path}: an unknown address is not told apart");
    }
    let r = rest("POST", "/requestPasswordReset", &[APP], Some("{}"));
    assert_eq!(r.body["code"].as_i64(), Some(204), "{}", r.body);
    // A new password through /v1 (the same account, by its email).
    let (_, token) = signup(&format!("pw-{pid}"));
    let r = request_at(&door().base(), "POST", "/v1/auth/login", None, &[], Some(&json!({"email": format!("pw-{pid}@example.com"), "password": "session-pass-1"}).to_string()));
    assert_eq!(r.status, 200, "{}", r.body);
    let access = r.body["access_token"].as_str().unwrap().to_string();
    let r = request_at(&door().base(), "PATCH", "/v1/auth/user", Some(&access), &[], Some(r#"{"password": "session-pass-2", "current_password": "session-pass-1"}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!alive(&token), "a new password ends Parse sessions");
    let r = rest("GET", "/login", &[APP], None);
    assert_eq!(r.body["code"].as_i64(), Some(200), "{}", r.body);
    let r = rest("POST", "/login", &[APP], Some(&json!({"username": format!("pw-{pid}"), "password": "session-pass-2"}).to_string()));
    assert_eq!(r.status, 200, "the new password signs in: {}", r.body);
}

/// A LiveQuery WebSocket to the door, and its next JSON message.
fn live_socket() -> tungstenite::WebSocket<std::net::TcpStream> {
    use tungstenite::client::IntoClientRequest;
    let port = door().port;
    let req = format!("ws://127.0.0.1:{port}/parse").into_client_request().unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    tungstenite::client(req, tcp).expect("a LiveQuery WebSocket at the mount").0
}

fn live_next(ws: &mut tungstenite::WebSocket<std::net::TcpStream>) -> Value {
    loop {
        match ws.read().expect("a message") {
            tungstenite::Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => continue,
            other => panic!("expected a JSON message, got {other:?}"),
        }
    }
}

fn live_send(ws: &mut tungstenite::WebSocket<std::net::TcpStream>, v: Value) {
    ws.send(tungstenite::Message::text(v.to_string())).unwrap();
}

/// LiveQuery and the session behind it, at the wire: an ended session's token is refused
/// at connect without closing the socket (the SDK would reconnect with it forever), and
/// a connection whose session merely expires (no announcement) ends within the session
/// recheck (2 s here), with 209.
#[test]
fn live_queries_end_with_their_session_even_when_it_only_expires() {
    let pid = std::process::id();
    let r = rest("POST", "/users", &[APP], Some(&json!({"username": format!("live-{pid}"), "password": "live-pass-1"}).to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let (user, token) = (r.body["objectId"].as_str().unwrap().to_string(), r.body["sessionToken"].as_str().unwrap().to_string());

    let mut ws = live_socket();
    live_send(&mut ws, json!({"op": "connect", "applicationId": APP_ID, "sessionToken": "r:not-a-session"}));
    let e = live_next(&mut ws);
    assert_eq!((e["op"].as_str(), e["code"].as_i64(), e["reconnect"].as_bool()), (Some("error"), Some(209), Some(false)), "{e}");
    live_send(&mut ws, json!({"op": "subscribe", "requestId": 1, "query": {"className": "GameScore", "where": {}}}));
    let e = live_next(&mut ws);
    assert_eq!((e["code"].as_i64(), e["requestId"].as_i64()), (Some(2), Some(1)), "still open, and not connected: {e}");

    let mut ws = live_socket();
    live_send(&mut ws, json!({"op": "connect", "applicationId": APP_ID, "sessionToken": token}));
    let c = live_next(&mut ws);
    assert_eq!(c["op"], "connected", "{c}");
    live_send(&mut ws, json!({"op": "subscribe", "requestId": 7, "query": {"className": "GameScore", "where": {"tag": format!("live-{pid}")}}}));
    assert_eq!(live_next(&mut ws)["op"], "subscribed");
    // Past a recheck the connection goes on while the session lives.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let r = rest("POST", "/classes/GameScore", &[APP, ("X-Parse-Session-Token", &token)], Some(&json!({"tag": format!("live-{pid}"), "score": 1}).to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let ev = live_next(&mut ws);
    assert_eq!((ev["op"].as_str(), ev["requestId"].as_i64(), ev["object"]["score"].as_i64()), (Some("create"), Some(7), Some(1)), "{ev}");
    // The session expires: nothing is announced, the recheck finds it.
    let n = admin().execute("update baas.sessions set expires_at = now() where user_id = $1::text::uuid", &[&user]).unwrap();
    assert!(n >= 1);
    let started = std::time::Instant::now();
    let e = live_next(&mut ws);
    assert_eq!((e["op"].as_str(), e["code"].as_i64(), e["reconnect"].as_bool()), (Some("error"), Some(209), Some(false)), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "within the recheck: {:?}", started.elapsed());
    // The socket stays open for the client to close (a close would make the SDK reconnect
    // with the dead session): nothing more comes, not even a public object its
    // subscription matched, and the client's close is answered.
    let r = rest("POST", "/classes/GameScore", &[APP, ("X-Parse-Master-Key", MASTER_KEY)], Some(&json!({"tag": format!("live-{pid}"), "score": 2}).to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    ws.get_mut().set_read_timeout(Some(std::time::Duration::from_millis(1500))).unwrap();
    match ws.read() {
        Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
        other => panic!("the connection should stay open and quiet after the session ended: {other:?}"),
    }
    ws.get_mut().set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(_)) => break,
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("the server answers the client's close: {e}"),
        }
    }
}

/// An answer read as bytes (file downloads), with its body as JSON when it is.
struct Bin {
    status: u16,
    bytes: Vec<u8>,
    body: Value,
    headers: Vec<(String, String)>,
}

impl Bin {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
    }
}

fn request_bytes_at(base: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Bin {
    use std::io::Read;
    let mut req = ureq::request(method, &format!("{base}{path}"));
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = if method == "GET" { req.call() } else { req.send_bytes(body) };
    let resp = match result {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: transport error {e}"),
    };
    let status = resp.status();
    let headers = resp.headers_names().into_iter().map(|n| (n.clone(), resp.header(&n).unwrap_or("").to_string())).collect();
    let mut bytes = Vec::new();
    resp.into_reader().read_to_end(&mut bytes).unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Bin { status, bytes, body, headers }
}

/// Parse Files are pgbaas files: uploaded raw (REST style) into the bucket as the
/// caller, served at their URL with their bytes and type, and — unlike Parse Server —
/// under their ACL: a file made private is read only with its owner's session token,
/// and deleted only by who may.
#[test]
fn parse_files_are_pgbaas_files_under_their_acls() {
    let pid = std::process::id();
    let signup = |n: &str| {
        let r = rest("POST", "/users", &[APP], Some(&json!({"username": format!("{n}-{pid}"), "password": "files-pass-1"}).to_string()));
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["sessionToken"].as_str().unwrap().to_string()
    };
    let (a, b) = (signup("files-a"), signup("files-b"));
    let png: Vec<u8> = [&b"\x89PNG\r\n\x1a\n"[..], &[0u8, 0, 0, 13], b"IHDR", &[0u8, 0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0], &[0x1f, 0x15, 0xc4, 0x89]].concat();
    let base = door().base();
    let upload = |token: Option<&str>, name: &str| {
        let mut h = vec![APP, ("Content-Type", "image/png")];
        if let Some(t) = token {
            h.push(("X-Parse-Session-Token", t));
        }
        request_bytes_at(&base, "POST", &format!("/parse/files/{name}"), &h, &png)
    };
    let r = upload(None, "anon.png");
    assert_eq!(r.body["code"], 130, "the bucket's create rule: signed-in users only: {}", r.body);
    let r = upload(Some(&a), "dot.png");
    assert_eq!(r.status, 201, "{}", r.body);
    let (name, url) = (r.body["name"].as_str().unwrap().to_string(), r.body["url"].as_str().unwrap().to_string());
    assert!(name.ends_with("_dot.png"), "{name}");
    assert_eq!(url, format!("{base}/parse/files/{APP_ID}/{name}"));
    let path = url.strip_prefix(&base).unwrap().to_string();
    let get = |token: Option<&str>| {
        let h: Vec<(&str, &str)> = token.map(|t| vec![("X-Parse-Session-Token", t)]).unwrap_or_default();
        request_bytes_at(&base, "GET", &path, &h, &[])
    };
    let r = get(None);
    assert_eq!(r.status, 200, "the bucket's files are public by default here");
    assert_eq!(r.bytes, png);
    assert_eq!(r.header("content-type").as_deref(), Some("image/png"));
    // The file is a document of the bucket, owned by its uploader; made private in SQL.
    let id = &name[..36];
    let n = admin().execute("update baas.documents set acl_read = '{}' where id = $1::text::uuid", &[&id]).unwrap();
    assert_eq!(n, 1);
    assert_eq!(get(None).status, 404, "private: not for an anonymous caller");
    assert_eq!(get(Some(&b)).status, 404, "nor for another user");
    let r = get(Some(&a));
    assert_eq!((r.status, r.bytes == png), (200, true), "its owner's session token reads it");
    let r = get(Some("r:not-a-session"));
    assert_eq!((r.status, r.body["code"].as_i64()), (400, Some(209)), "an unknown session token is refused as everywhere in the door");
    // Deleting: only who may.
    let del = |t: &str| rest("DELETE", &format!("/files/{name}"), &[APP, ("X-Parse-Session-Token", t)], None);
    assert_eq!(del(&b).body["code"], 101, "another user cannot see it to delete it");
    assert_eq!(del(&a).status, 200);
    assert_eq!(get(Some(&a)).status, 404, "gone");
    // A name Parse refuses.
    let r = upload(Some(&a), "bad*name.png");
    assert_eq!(r.body["code"], 122, "{}", r.body);
    // With the application id in a header the body is the file, even a JSON file that
    // looks like the JavaScript SDK's upload (Parse Server's rule).
    let json_file = br#"{"base64": "aGk="}"#;
    let r = request_bytes_at(&base, "POST", "/parse/files/data.json", &[APP, ("X-Parse-Session-Token", &a), ("Content-Type", "application/json")], json_file);
    assert_eq!(r.status, 201, "{}", r.body);
    let kept = r.body["url"].as_str().unwrap().strip_prefix(&base).unwrap().to_string();
    assert_eq!(request_bytes_at(&base, "GET", &kept, &[], &[]).bytes, json_file, "stored as sent");
    // A File on an object keeps this server's URL for its name, not the one sent.
    let r = rest("POST", "/classes/GameScore", &[APP, ("X-Parse-Session-Token", &a)],
        Some(&json!({"tag": format!("file-url-{pid}"), "f": {"__type": "File", "name": "x_a.png", "url": "https://evil.example/steal"}}).to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let r = rest("GET", &format!("/classes/GameScore/{}", r.body["objectId"].as_str().unwrap()), &[APP, ("X-Parse-Session-Token", &a)], None);
    assert_eq!(r.body["f"]["url"], format!("{base}/parse/files/{APP_ID}/x_a.png"), "{}", r.body);
}

/// A REST request with Parse's headers.
fn rest(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Resp {
    request_at(&door().base(), method, &format!("/parse{path}"), None, headers, body)
}

const APP: (&str, &str) = ("X-Parse-Application-Id", APP_ID);

#[test]
fn sdk_users_sign_up_sign_in_and_out_with_revocable_sessions() {
    let facts = sdk(&["users"]);
    let user = facts[0]["user"].as_str().unwrap();
    // The account is a pgbaas account: one session ended by logout, one alive.
    let mut db = admin();
    let row = db
        .query_one(
            "select count(*) filter (where s.revoked_at is null), count(*) filter (where s.revoked_reason = 'logout'),
                    (select username from baas.parse_usernames where user_id = $1::text::uuid)
               from baas.sessions s where s.user_id = $1::text::uuid",
            &[&user],
        )
        .unwrap();
    let (live, ended, username): (i64, i64, String) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((live, ended), (0, 1), "signUp and logIn made two sessions (failed sign-ins none); the logIn replaced the first, logOut ended the second");
    let replaced: i64 = db
        .query_one("select count(*) from baas.sessions where user_id = $1::text::uuid and revoked_reason = 'replaced'", &[&user])
        .unwrap()
        .get(0);
    assert_eq!(replaced, 1);
    assert!(username.starts_with("alice-"), "{username}");
}

#[test]
fn sdk_relations_add_remove_and_query() {
    sdk(&["relations"]);
}

/// LiveQuery (Parse's WebSocket protocol at the mount): the SDK's subscriptions get
/// create/enter/update/leave/delete for what their session may read and their query
/// matches (another user's and an anonymous client's never hear of an object only its
/// owner reads), by objectId with selected keys, until unsubscribe; the master key
/// hears everything; a wrong application id is refused; a signed-out session's live
/// query ends.
#[test]
fn sdk_live_queries_follow_acls_and_sessions() {
    let facts = sdk(&["liveQuery"]);
    assert_eq!(facts[0]["events"], 10, "{facts:?}");
}

/// Parse.File through the SDK: saved by a signed-in user into the bucket, served at its
/// URL (fetch, `getData`), kept on an object and read back as a File; a name Parse
/// refuses and an anonymous upload are refused with Parse's codes.
#[test]
fn sdk_files_are_saved_served_and_kept_on_objects() {
    sdk(&["files"]);
}

#[test]
fn sdk_subqueries_run_as_the_caller() {
    sdk(&["subqueries"]);
}

#[test]
fn sdk_transactional_batches_are_all_or_none() {
    sdk(&["transactions"]);
}

#[test]
fn sdk_includes_fill_only_readable_pointers() {
    sdk(&["includes"]);
}

#[test]
fn sdk_cloud_functions_are_exposed_sql_functions() {
    sdk(&["functions"]);
}

/// `user.destroy()`: a user deletes its own account (and so its sessions); another
/// user's answers 206 (as from Parse Server) and leaves it.
#[test]
fn sdk_users_delete_their_own_account_only() {
    sdk(&["userDelete"]);
}

/// `Parse.AnonymousUtils`: an anonymous account that signs up keeping its id, objects
/// and session; in SQL it is a pgbaas anonymous account until then, and the old
/// anonymous id signs nobody in as it afterwards.
#[test]
fn sdk_anonymous_users_sign_up_keeping_their_id() {
    let facts = {
        let _anonymous = anonymous_sign_in();
        sdk(&["anonymous"])
    };
    let (user, fresh) = (facts[0]["user"].as_str().unwrap(), facts[0]["fresh"].as_str().unwrap());
    let row = |id: &str| -> (bool, Option<String>, i64, bool) {
        let r = admin()
            .query_one(
                "select u.is_anonymous, (select p.username from baas.parse_usernames p where p.user_id = u.id),
                        (select count(*) from baas.parse_auth_data a where a.user_id = u.id), u.password_hash is not null
                   from baas.users u where u.id = $1::text::uuid",
                &[&id],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };
    let (anonymous, name, links, password) = row(user);
    assert_eq!((anonymous, name.unwrap_or_default().starts_with("anon-"), links, password), (false, true, 0, true), "signed up: a full account without authData");
    let (anonymous, name, links, password) = row(fresh);
    assert_eq!((anonymous, name.map(|n| n.len()), links, password), (true, Some(32), 1, false), "a new anonymous account with a random username");
}

/// Anonymous sign-in follows the `anonymous_sign_in` setting (Parse error 252 when off,
/// as Parse Server with anonymous users disabled), and other providers are refused.
#[test]
fn rest_anonymous_auth_data() {
    let body = |auth: Value| Some(json!({"authData": auth}).to_string());
    let id = format!("anon-rest-{}", std::process::id());
    let r = rest("POST", "/users", &[APP], body(json!({"anonymous": {"id": id}})).as_deref());
    assert_eq!(r.status, 201, "{}", r.body);
    let token = r.body["sessionToken"].as_str().unwrap().to_string();
    assert!(token.starts_with("r:"), "{}", r.body);
    assert_eq!(r.body["authData"], json!({"anonymous": {"id": id}}), "{}", r.body);
    let again = rest("POST", "/users", &[APP], body(json!({"anonymous": {"id": id}})).as_deref());
    assert_eq!((again.status, again.body["objectId"].clone()), (200, r.body["objectId"].clone()), "{}", again.body);
    // The user reads itself.
    let who = r.body["objectId"].as_str().unwrap();
    let me = rest("GET", "/users/me", &[APP, ("X-Parse-Session-Token", &token)], None);
    assert_eq!(me.body["objectId"], json!(who), "{}", me.body);
    for (auth, code) in [
        (json!({"facebook": {"id": "1", "access_token": "x"}}), 252),
        (json!({"anonymous": {"id": 5}}), 107),
        (json!({"anonymous": {"id": ""}}), 107),
        (json!("x"), 107),
    ] {
        let r = rest("POST", "/users", &[APP], body(auth.clone()).as_deref());
        assert_eq!((r.status, r.body["code"].as_i64()), (400, Some(code)), "{auth}: {}", r.body);
    }
    let off = {
        let _anonymous = anonymous_sign_in();
        admin().batch_execute("update baas.settings set anonymous_sign_in = false").unwrap();
        let off = rest("POST", "/users", &[APP], body(json!({"anonymous": {"id": format!("{id}-2")}})).as_deref());
        admin().batch_execute("update baas.settings set anonymous_sign_in = true").unwrap();
        off
    };
    assert_eq!((off.status, off.body["code"].as_i64()), (400, Some(252)), "{}", off.body);
    // A link left on an account that became a full one some other way (as
    // baas.upgrade_account does) signs nobody in: the id makes a new account.
    let stale = format!("{id}-stale");
    let first = rest("POST", "/users", &[APP], body(json!({"anonymous": {"id": stale}})).as_deref());
    assert_eq!(first.status, 201, "{}", first.body);
    admin().execute("update baas.users set is_anonymous = false where id = $1::text::uuid", &[&first.body["objectId"].as_str().unwrap()]).unwrap();
    let second = rest("POST", "/users", &[APP], body(json!({"anonymous": {"id": stale}})).as_deref());
    assert_eq!(second.status, 201, "{}", second.body);
    assert_ne!(second.body["objectId"], first.body["objectId"], "not the full account, without its password");
    // Signing up an anonymous account with a username taken answers 202 and changes nothing.
    let taken = format!("taken-{}", std::process::id());
    assert_eq!(rest("POST", "/users", &[APP], Some(&json!({"username": taken, "password": "taken-pass-1"}).to_string())).status, 201);
    let up = rest("PUT", &format!("/users/{who}"), &[APP, ("X-Parse-Session-Token", &token)],
                  Some(&json!({"username": taken, "password": "anon-pass-12", "authData": {"anonymous": null}}).to_string()));
    assert_eq!((up.status, up.body["code"].as_i64()), (400, Some(202)), "{}", up.body);
    let still: bool = admin().query_one("select is_anonymous from baas.users where id = $1::text::uuid", &[&who]).unwrap().get(0);
    assert!(still, "a refused sign-up leaves the account anonymous");
    // The master key sets no password.
    let m = rest("PUT", &format!("/users/{who}"), &[APP, ("X-Parse-Master-Key", MASTER_KEY)], Some(&json!({"password": "anon-pass-12"}).to_string()));
    assert_eq!((m.status, m.body["code"].as_i64()), (400, Some(142)), "{}", m.body);
    // The SDK's signUp sends only what changed: a password alone keeps the username.
    let name = rest("GET", "/users/me", &[APP, ("X-Parse-Session-Token", &token)], None).body["username"].clone();
    let up = rest("PUT", &format!("/users/{who}"), &[APP, ("X-Parse-Session-Token", &token)],
                  Some(&json!({"password": "anon-pass-12", "authData": {"anonymous": null}}).to_string()));
    assert_eq!(up.status, 200, "{}", up.body);
    let me = rest("GET", "/users/me", &[APP, ("X-Parse-Session-Token", &token)], None);
    assert_eq!((me.body["username"].clone(), me.body.get("authData").cloned()), (name.clone(), None), "the same session, username kept: {}", me.body);
    let login = rest("POST", "/login", &[APP], Some(&json!({"username": name, "password": "anon-pass-12"}).to_string()));
    assert_eq!((login.status, login.body["objectId"].as_str()), (200, Some(who)), "{}", login.body);
    // Now a full account: its password is not changed here.
    let again = rest("PUT", &format!("/users/{who}"), &[APP, ("X-Parse-Session-Token", &token)], Some(&json!({"password": "another-pass-3"}).to_string()));
    assert_eq!((again.status, again.body["code"].as_i64()), (400, Some(142)), "{}", again.body);
    // Linking a provider pgbaas has not configured is refused.
    let link = rest("PUT", &format!("/users/{who}"), &[APP, ("X-Parse-Session-Token", &token)],
                    Some(&json!({"authData": {"facebook": {"id": "a", "token": "t"}}}).to_string()));
    assert_eq!(link.body["code"].as_i64(), Some(252), "{}", link.body);
}

#[test]
fn sdk_users_save_their_own_fields() {
    let facts = sdk(&["userSave"]);
    let user = facts[0]["user"].as_str().unwrap();
    let data: Value = admin().query_one("select data from baas.users where id = $1::text::uuid", &[&user]).unwrap().get(0);
    assert_eq!(data, json!({"nick": "changed", "visits": 3}), "the Parse user's fields are the account's data");
}

/// Users: only your own object (or any with the master key); installations for push;
/// Parse Config.
#[test]
fn rest_users_installations_and_config() {
    let pid = std::process::id();
    let signup = |name: &str| -> (String, String) {
        let r = rest("POST", "/users", &[APP], Some(&json!({"username": name, "password": "users-pass-1"}).to_string()));
        assert_eq!(r.status, 201, "{}", r.body);
        (r.body["objectId"].as_str().unwrap().to_string(), r.body["sessionToken"].as_str().unwrap().to_string())
    };
    let (ann, ann_t) = signup(&format!("ann-{pid}"));
    let (ben, ben_t) = signup(&format!("ben-{pid}"));
    let master = ("X-Parse-Master-Key", MASTER_KEY);
    // Reading and changing users.
    let r = rest("GET", &format!("/users/{ann}"), &[APP, ("X-Parse-Session-Token", &ann_t)], None);
    assert_eq!((r.status, r.body["username"].as_str()), (200, Some(&format!("ann-{pid}")[..])), "{}", r.body);
    let r = rest("GET", &format!("/users/{ann}"), &[APP, ("X-Parse-Session-Token", &ben_t)], None);
    assert_eq!((r.status, r.body["code"].as_i64()), (404, Some(101)), "another user's account is not shown: {}", r.body);
    let r = rest("PUT", &format!("/users/{ann}"), &[APP, ("X-Parse-Session-Token", &ben_t)], Some(r#"{"nick": "hacked"}"#));
    assert_eq!((r.status, r.body["code"].as_i64()), (400, Some(206)), "{}", r.body);
    let r = rest("PUT", &format!("/users/{ann}"), &[APP, master], Some(r#"{"nick": "by master"}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = rest("GET", &format!("/users/{ann}"), &[APP, master], None);
    assert_eq!(r.body["nick"], "by master");
    let r = rest("PUT", &format!("/users/{ann}"), &[APP, ("X-Parse-Session-Token", &ann_t)], Some(r#"{"password": "new-password-1"}"#));
    assert_eq!((r.status, r.body["code"].as_i64()), (400, Some(142)), "{}", r.body);
    let r = rest("PUT", &format!("/users/{ann}"), &[APP, ("X-Parse-Session-Token", &ann_t)], Some(&json!({"username": format!("ben-{pid}")}).to_string()));
    assert_eq!((r.status, r.body["code"].as_i64()), (400, Some(202)), "{}", r.body);
    // Installations: any client saves its own; only the master key lists them.
    let iid = format!("inst-{pid}");
    let body = json!({"installationId": iid, "deviceType": "android", "deviceToken": "tok-1", "channels": ["news"], "appVersion": "1.0"}).to_string();
    let r = rest("POST", "/installations", &[APP, ("X-Parse-Session-Token", &ann_t)], Some(&body));
    assert_eq!(r.status, 201, "{}", r.body);
    let oid = r.body["objectId"].as_str().unwrap().to_string();
    let r = rest("POST", "/installations", &[APP, ("X-Parse-Session-Token", &ann_t)], Some(&json!({"installationId": iid, "deviceType": "android", "channels": ["news", "sport"]}).to_string()));
    assert_eq!(r.status, 200, "the same installationId updates: {}", r.body);
    let r = rest("PUT", &format!("/installations/{oid}"), &[APP, ("X-Parse-Session-Token", &ann_t)], Some(r#"{"deviceToken": "tok-2", "channels": {"__op": "AddUnique", "objects": ["news", "games"]}}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = rest("PUT", &format!("/installations/{oid}"), &[APP, ("X-Parse-Session-Token", &ann_t)], Some(r#"{"channels": {"__op": "Remove", "objects": ["games"]}}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    // Nobody else moves ann's pushes: neither by installationId nor by objectId.
    for (who, headers) in [("anonymous", vec![APP]), ("ben", vec![APP, ("X-Parse-Session-Token", ben_t.as_str())])] {
        let r = rest("POST", "/installations", &headers, Some(&json!({"installationId": iid, "deviceType": "android", "deviceToken": "stolen"}).to_string()));
        assert_eq!((r.status, r.body["code"].as_i64()), (404, Some(101)), "{who}: {}", r.body);
        let r = rest("PUT", &format!("/installations/{oid}"), &headers, Some(r#"{"deviceToken": "stolen"}"#));
        assert_eq!((r.status, r.body["code"].as_i64()), (404, Some(101)), "{who}: {}", r.body);
    }
    let r = rest("GET", "/installations", &[APP, ("X-Parse-Session-Token", &ann_t)], None);
    assert_eq!((r.status, r.body["code"].as_i64()), (400, Some(119)), "{}", r.body);
    let r = rest("GET", &format!("/installations/{oid}"), &[APP, master], None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.body["deviceToken"].as_str(), r.body["channels"].clone(), r.body["appVersion"].as_str()), (Some("tok-2"), json!(["news", "sport"]), Some("1.0")));
    // Config: a secret keeps its master_only when its value changes.
    assert_eq!(r.body["user"]["objectId"], ann.as_str(), "linked to the user who saved it");
    let r = rest("GET", "/classes/_Installation?limit=1", &[APP, master], None);
    assert_eq!((r.status, r.body["results"].as_array().map(Vec::len)), (200, Some(1)), "the SDK's class path: {}", r.body);
    let r = rest("GET", "/installations?where=%7B%7D", &[APP, master], None);
    assert_eq!(r.body["code"].as_i64(), Some(102), "a where the door would ignore is refused: {}", r.body);
    for (body, code) in [
        (r#"{"deviceType": "ios"}"#, 135),
        (r#"{"installationId": "bad id!", "deviceType": "ios"}"#, 107),
        (r#"{"installationId": "x1", "deviceType": "ios", "channels": "news"}"#, 107),
        (r#"{"installationId": 5, "deviceType": "ios"}"#, 107),
        (r#"{"installationId": "x2", "deviceType": {}}"#, 107),
        (r#"{"installationId": "x3", "deviceType": "ios", "badge": {"__op": "Increment", "amount": 1}}"#, 107),
        (r#"{"installationId": "x4", "deviceType": "ios", "$x": 1}"#, 107),
    ] {
        let r = rest("POST", "/installations", &[APP], Some(body));
        assert_eq!((r.status, r.body["code"].as_i64()), (400, Some(code)), "{body}: {}", r.body);
    }
    let r = rest("PUT", &format!("/installations/{oid}"), &[APP], Some(r#"{"installationId": "another"}"#));
    assert_eq!(r.body["code"].as_i64(), Some(136), "{}", r.body);
    // Parse Config: the master key sets, everyone reads (but master-only parameters).
    let r = rest("PUT", "/config", &[APP, ("X-Parse-Session-Token", &ben_t)], Some(r#"{"params": {"a": 1}}"#));
    assert_eq!(r.body["code"].as_i64(), Some(119), "{}", r.body);
    let r = rest("PUT", "/config", &[APP, master], Some(r#"{"params": {"welcome": "hi", "limits": {"n": 3}, "secret": "s"}, "masterKeyOnly": {"secret": true}}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = rest("GET", "/config", &[APP], None);
    assert_eq!(r.body, json!({"params": {"welcome": "hi", "limits": {"n": 3}}}));
    let r = rest("GET", "/config", &[APP, master], None);
    assert_eq!(r.body["params"]["secret"], "s");
    assert_eq!(r.body["masterKeyOnly"], json!({"secret": true}));
    let r = rest("PUT", "/config", &[APP, master], Some(r#"{"params": {"welcome": null, "secret": "s2"}}"#));
    assert_eq!(r.status, 200);
    assert_eq!(rest("GET", "/config", &[APP], None).body, json!({"params": {"limits": {"n": 3}}}), "the secret stays secret");
    // A user's data cannot pose as its username or email in the Parse view.
    admin().execute("update baas.users set data = data || '{\"username\": \"admin\", \"email\": \"ceo@example.com\"}' where id = $1::text::uuid", &[&ann]).unwrap();
    let r = rest("GET", &format!("/users/{ann}"), &[APP, master], None);
    assert_eq!((r.body["username"].as_str(), r.body.get("email")), (Some(&format!("ann-{pid}")[..]), None), "{}", r.body);
    // Pointers to users stay pointers under include (users are no collection).
    let r = rest("POST", "/classes/GameScore", &[APP, ("X-Parse-Session-Token", &ann_t)], Some(&json!({"by": {"__type": "Pointer", "className": "_User", "objectId": ann}}).to_string()));
    let gid = r.body["objectId"].as_str().unwrap().to_string();
    let r = rest("GET", &format!("/classes/GameScore/{gid}?include=by"), &[APP, ("X-Parse-Session-Token", &ann_t)], None);
    assert_eq!(r.body["by"]["objectId"], ann.as_str(), "{}", r.body);
    // As deep as documents may be nested: read back, never a 500.
    let deep = format!("{{\"deep\": {}1{}}}", "[".repeat(126), "]".repeat(126));
    let r = rest("POST", "/classes/GameScore", &[APP], Some(&deep));
    assert_eq!(r.status, 201, "{}", r.body);
    let did = r.body["objectId"].as_str().unwrap().to_string();
    let r = rest("GET", &format!("/classes/GameScore/{did}"), &[APP], None);
    assert_eq!(r.status, 200, "{}", r.body);
    let _ = ben;
}

#[test]
fn sdk_objects_round_trip_with_every_field_operation() {
    sdk(&["objects"]);
}

#[test]
fn sdk_queries_give_the_objects_parse_would() {
    let facts = sdk(&["queries"]);
    // The same objects are documents: pgbaas's own query language finds them too.
    let tag = facts[0]["tag"].as_str().unwrap();
    let n: i64 = admin().query_one("select baas.count('gamescore', jsonb_build_object('tag', $1::text))", &[&tag]).unwrap().get(0);
    assert_eq!(n, 10);
}

/// `new Parse.Query(Parse.User)`: a user finds only itself; the master key finds any
/// account by username, email or objectId and deletes one, which is gone in SQL too.
#[test]
fn sdk_user_queries_show_a_user_itself_and_any_to_the_master_key() {
    let f = &sdk(&["userQueries"])[0];
    let (ann, ben) = (f["ann"].as_str().unwrap(), f["ben"].as_str().unwrap());
    let mut db = admin();
    let count = |db: &mut postgres::Client, id: &str| -> i64 { db.query_one("select count(*) from baas.users where id = $1::text::uuid", &[&id]).unwrap().get(0) };
    assert_eq!((count(&mut db, ann), count(&mut db, ben)), (1, 0), "the master key deleted ben's account, not ann's");
    // What the door does not serve for users is refused, not answered wrong.
    let master = [APP, ("X-Parse-Master-Key", MASTER_KEY)];
    for (path, code) in [
        ("/users?where=%7B%22username%22%3A%7B%22%24regex%22%3A%22x%22%7D%7D", 102), // {"username":{"$regex":"x"}}: names by equality or $in
        ("/users?order=nick&where=%7B%22username%22%3A%22x%22%7D", 102), // order by a data field
        ("/users?include=x", 102),
        ("/users?limit=1001", 102),
    ] {
        let r = rest("GET", path, &master, None);
        assert_eq!((r.status, r.body["code"].as_i64()), (400, Some(code)), "{path}: {}", r.body);
    }
    let r = rest("DELETE", &format!("/users/{ben}"), &master, None);
    assert_eq!((r.status, r.body["code"].as_i64()), (404, Some(101)), "an account already gone: {}", r.body);
    // The deletion is audited as the service role's.
    let audited: i64 = db
        .query_one("select count(*) from baas.audit_log where action = 'user.delete' and user_id = $1::text::uuid and actor_role = 'baas_service'", &[&ben])
        .unwrap()
        .get(0);
    assert_eq!(audited, 1);
    // By email (pgbaas keeps emails in lower case; an equality in any case finds it).
    let email = format!("uq-{}@example.com", std::process::id());
    let r = rest("POST", "/users", &[APP], Some(&json!({"username": format!("uq-mail-{}", std::process::id()), "password": "pw-uq-mail-secret", "email": email}).to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["objectId"].as_str().unwrap().to_string();
    let where_ = json!({"email": email.to_ascii_uppercase()}).to_string().replace('"', "%22").replace('{', "%7B").replace('}', "%7D").replace(':', "%3A").replace('@', "%40");
    let r = rest("GET", &format!("/users?where={where_}"), &master, None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["results"].as_array().map(|a| a.iter().map(|u| u["objectId"].clone()).collect::<Vec<_>>()), Some(vec![json!(id)]));
    // Every account a page at a time, with the count of all.
    // (Other tests make accounts meanwhile: the count lies between two counts in SQL.)
    let users = |db: &mut postgres::Client| -> i64 { db.query_one("select count(*) from baas.users", &[]).unwrap().get(0) };
    let before = users(&mut db);
    let r = rest("GET", "/classes/_User?limit=1&count=1", &master, None);
    let after = users(&mut db);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["results"].as_array().unwrap().len(), 1, "{}", r.body);
    let n = r.body["count"].as_i64().unwrap();
    assert!(before <= n && n <= after, "{before} <= {n} <= {after}");
}

/// A query parameter's value, percent-encoded.
fn enc(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// `_Session` (`new Parse.Query(Parse.Session)`, `session.destroy()`): a user lists the
/// devices it is signed in on and signs one out; nobody else's. The master key lists and
/// ends any account's.
#[test]
fn rest_sessions_are_a_user_s_own_devices() {
    let pid = std::process::id();
    let name = format!("sess-{pid}");
    let body = json!({"username": name, "password": "pw-sess-secret"}).to_string();
    let r = rest("POST", "/users", &[APP, ("X-Parse-Installation-Id", "dev-a")], Some(&body));
    assert_eq!(r.status, 201, "{}", r.body);
    let (a, user) = (r.body["sessionToken"].as_str().unwrap().to_string(), r.body["objectId"].as_str().unwrap().to_string());
    let r = rest("POST", "/login", &[APP, ("X-Parse-Installation-Id", "dev-b")], Some(&body));
    assert_eq!(r.status, 200, "{}", r.body);
    let b = r.body["sessionToken"].as_str().unwrap().to_string();
    let as_a = [APP, ("X-Parse-Session-Token", a.as_str())];
    let r = rest("GET", "/sessions?order=installationId", &as_a, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let list = r.body["results"].as_array().unwrap().clone();
    assert_eq!(list.iter().map(|s| s["installationId"].clone()).collect::<Vec<_>>(), vec![json!("dev-a"), json!("dev-b")]);
    assert_eq!(list[0]["sessionToken"], json!(a), "the current session shows its token");
    assert!(list[1].get("sessionToken").is_none(), "another's token is never shown (pgbaas keeps only its hash)");
    assert_eq!(list[1]["user"], json!({"__type": "Pointer", "className": "_User", "objectId": user}));
    let other = list[1]["objectId"].as_str().unwrap().to_string();
    let r = rest("GET", "/classes/_Session?where=%7B%22installationId%22%3A%22dev-b%22%7D&count=1", &as_a, None);
    assert_eq!((r.status, r.body["count"].as_i64()), (200, Some(1)), "{}", r.body);
    let r = rest("GET", &format!("/classes/_Session/{other}"), &as_a, None);
    assert_eq!((r.status, r.body["installationId"].as_str()), (200, Some("dev-b")), "{}", r.body);
    // Another user sees none of them and ends none of them.
    let r = rest("POST", "/users", &[APP], Some(&json!({"username": format!("sess-other-{pid}"), "password": "pw-other-secret"}).to_string()));
    let c = r.body["sessionToken"].as_str().unwrap().to_string();
    let as_c = [APP, ("X-Parse-Session-Token", c.as_str())];
    let r = rest("GET", &format!("/classes/_Session/{other}"), &as_c, None);
    assert_eq!((r.status, r.body["code"].as_i64()), (404, Some(101)), "{}", r.body);
    let r = rest("DELETE", &format!("/classes/_Session/{other}"), &as_c, None);
    assert_eq!((r.status, r.body["code"].as_i64()), (404, Some(101)), "{}", r.body);
    let me = |t: &str| rest("GET", "/users/me", &[APP, ("X-Parse-Session-Token", t)], None).status;
    assert_eq!(me(&b), 200, "still signed in on dev-b");
    // A signs dev-b out.
    let r = rest("DELETE", &format!("/classes/_Session/{other}"), &as_a, None);
    assert_eq!((r.status, r.body.clone()), (200, json!({})));
    assert_eq!((me(&b), me(&a)), (400, 200), "dev-b's session ended, dev-a's goes on");
    let r = rest("GET", "/sessions", &as_a, None);
    assert_eq!(r.body["results"].as_array().map(Vec::len), Some(1));
    // Without a session: refused.
    let r = rest("GET", "/sessions", &[APP], None);
    assert_eq!((r.status, r.body["code"].as_i64()), (400, Some(209)), "{}", r.body);
    // The master key: any account's sessions, by user or by id, and ends any of them.
    let master = [APP, ("X-Parse-Master-Key", MASTER_KEY)];
    let r = rest("POST", "/login", &[APP, ("X-Parse-Installation-Id", "dev-c")], Some(&body));
    let c2 = r.body["sessionToken"].as_str().unwrap().to_string();
    let of_user = |u: &str| {
        let w = json!({"user": {"__type": "Pointer", "className": "_User", "objectId": u}}).to_string();
        format!("/classes/_Session?order=installationId&count=1&where={}", enc(&w))
    };
    let r = rest("GET", &of_user(&user), &master, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let devices: Vec<Value> = r.body["results"].as_array().unwrap().iter().map(|s| s["installationId"].clone()).collect();
    assert_eq!((devices, r.body["count"].clone()), (vec![json!("dev-a"), json!("dev-c")], json!(2)), "{}", r.body);
    assert!(r.body["results"].as_array().unwrap().iter().all(|s| s.get("sessionToken").is_none() && s["user"]["objectId"] == json!(user)));
    let dev_c = r.body["results"][1]["objectId"].as_str().unwrap().to_string();
    let w = json!({"user": {"$in": [{"__type": "Pointer", "className": "_User", "objectId": user}, {"__type": "Pointer", "className": "_User", "objectId": "not-a-uuid"}]}, "installationId": "dev-c"}).to_string();
    let r = rest("GET", &format!("/sessions?where={}", enc(&w)), &master, None);
    assert_eq!(r.body["results"].as_array().map(|l| l.iter().map(|s| s["objectId"].clone()).collect::<Vec<_>>()), Some(vec![json!(dev_c)]), "{}", r.body);
    let r = rest("GET", &format!("/classes/_Session/{dev_c}"), &master, None);
    assert_eq!((r.status, r.body["installationId"].as_str()), (200, Some("dev-c")), "{}", r.body);
    let r = rest("GET", "/sessions?limit=1000", &master, None);
    assert!(r.body["results"].as_array().unwrap().iter().any(|s| s["objectId"] == json!(dev_c)), "every account's live sessions");
    assert_eq!(me(&c2), 200);
    let r = rest("DELETE", &format!("/classes/_Session/{dev_c}"), &master, None);
    assert_eq!((r.status, r.body.clone()), (200, json!({})));
    assert_eq!((me(&c2), me(&a)), (400, 200), "the master key ended dev-c's session, and only it");
    let r = rest("DELETE", &format!("/classes/_Session/{dev_c}"), &master, None);
    assert_eq!((r.status, r.body["code"].as_i64()), (404, Some(101)), "an ended session: {}", r.body);
    let r = rest("GET", &format!("/classes/_Session/{dev_c}"), &master, None);
    assert_eq!((r.status, r.body["code"].as_i64()), (404, Some(101)), "{}", r.body);
    let r = rest("GET", &format!("/sessions?where={}", enc(r#"{"user": "x"}"#)), &master, None);
    assert_eq!((r.status, r.body["code"].as_i64()), (400, Some(102)), "{}", r.body);
    let audited: i64 = admin()
        .query_one("select count(*) from baas.audit_log where action = 'user.sign_out' and details ->> 'session' = $1", &[&dev_c])
        .unwrap()
        .get(0);
    assert_eq!(audited, 1, "the master key's sign-out is audited");
    let r = rest("GET", "/sessions?where=%7B%22objectId%22%3A%7B%22%24gt%22%3A%22a%22%7D%7D", &as_a, None);
    assert_eq!((r.status, r.body["code"].as_i64()), (400, Some(102)), "{}", r.body);
}

/// `Parse.Schema`: classes are collections, seen, made and dropped (when empty) with the
/// master key only.
#[test]
fn sdk_schemas_are_collections() {
    let f = &sdk(&["schemas"])[0];
    let collection = f["collection"].as_str().unwrap();
    let gone: i64 = admin().query_one("select count(*) from baas.collections where name = $1", &[&collection]).unwrap().get(0);
    assert_eq!(gone, 0, "the dropped class's collection is gone");
    let master = [APP, ("X-Parse-Master-Key", MASTER_KEY)];
    let anonymous: &[(&str, &str)] = &[APP];
    let cases: Vec<(&str, &str, &[(&str, &str)], Option<&str>, u16, i64)> = vec![
        ("GET", "/schemas", anonymous, None, 403, 119),
        ("POST", "/schemas/Sneaky", anonymous, Some("{}"), 403, 119),
        ("GET", "/schemas/NoSuchClass", &master, None, 400, 103),
        ("POST", "/schemas/Req", &master, Some(r#"{"fields": {"title": {"type": "String", "required": true}}}"#), 400, 102),
        ("POST", "/schemas/Typo", &master, Some(r#"{"fields": {"title": {"type": "Strin"}}}"#), 400, 111),
        ("POST", "/schemas/Closed", &master, Some(r#"{"classLevelPermissions": {"find": {}}}"#), 400, 107),
        ("DELETE", "/schemas/_User", &master, None, 400, 119),
        ("POST", "/schemas/Bad-Name", &master, Some("{}"), 400, 103),
        ("POST", "/schemas/A", &master, Some(r#"{"className": "B"}"#), 400, 103),
        ("POST", "/schemas/Locked", &master, Some(r#"{"classLevelPermissions": {"find": {"requiresAuthentication": true}}}"#), 400, 107),
        ("PUT", "/schemas/GameScore", &master, Some(r#"{"fields": {"score": {"__op": "Delete"}}}"#), 400, 102),
    ];
    for (method, path, headers, body, status, code) in cases {
        let r = rest(method, path, headers, body);
        assert_eq!((r.status, r.body["code"].as_i64()), (status, Some(code)), "{method} {path}: {}", r.body);
    }
    let r = rest("DELETE", "/schemas/NoSuchClass", &master, None);
    assert_eq!((r.status, r.body.clone()), (200, json!({})), "as Parse Server: a class that is not there is dropped");
    let locked: i64 = admin()
        .query_one("select count(*) from baas.collections where name in ('sneaky', 'locked', 'a', 'b', 'req', 'typo', 'closed')", &[])
        .unwrap()
        .get(0);
    assert_eq!(locked, 0, "no refused schema change made a collection");
    // The classes the door serves, GameScore among them, with who may create.
    let r = rest("GET", "/schemas/GameScore", &master, None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["className"], "gamescore");
    assert_eq!(r.body["fields"]["objectId"], json!({"type": "String"}));
    assert_eq!(r.body["classLevelPermissions"]["create"], json!({"*": true}), "GameScore's create option is public");
    assert_eq!(r.body["classLevelPermissions"]["find"], json!({"*": true}));
    // Parse Server's own default class-level permissions are taken as they are.
    let cls = format!("Dflt{}", std::process::id());
    let body = json!({"classLevelPermissions": {"find": {"*": true}, "count": {"*": true}, "get": {"*": true}, "create": {"*": true},
                      "update": {"*": true}, "delete": {"*": true}, "addField": {"*": true}, "protectedFields": {"*": []}}});
    let r = rest("POST", &format!("/schemas/{cls}"), &master, Some(&body.to_string()));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["classLevelPermissions"], body["classLevelPermissions"], "shown back as sent");
    let r = rest("DELETE", &format!("/schemas/{cls}"), &master, None);
    assert_eq!(r.status, 200, "{}", r.body);
}

/// `Parse.Role`: roles made and changed with the master key are pgbaas's roles, an ACL
/// naming one is what its members read in SQL too, and what a client may not do is
/// refused with Parse's codes.
#[test]
fn sdk_roles_are_pgbaas_roles() {
    let f = &sdk(&["roles"])[0];
    let (doc, alice, bob, editors, chiefs) = (f["doc"].as_str().unwrap(), f["alice"].as_str().unwrap(), f["bob"].as_str().unwrap(), f["editors"].as_str().unwrap(), f["chiefs"].as_str().unwrap());
    let mut db = admin();
    // In SQL: editors is a pgbaas role with no member left and no child role (chiefs was
    // dropped), named as ACLs name it.
    let roles: Value = db.query_one("select baas.list_roles()", &[]).unwrap().get(0);
    let mine = roles.as_array().unwrap().iter().find(|r| r["name"] == editors).expect("editors in baas.list_roles()");
    assert_eq!((mine["members"].clone(), mine["roles"].clone()), (json!([]), json!([])));
    assert!(!roles.as_array().unwrap().iter().any(|r| r["name"] == chiefs), "chiefs was deleted");
    let acl: Value = db.query_one("select baas.get_acl('gamescore', $1)", &[&doc]).unwrap().get(0);
    assert_eq!(acl["read"], json!([format!("role:{editors}")]));
    // What baas.as_user sees agrees with what the SDK saw: neither reads it now; alice
    // does again once a DBA puts her back in SQL, and the door shows her the role.
    let reads = |db: &mut postgres::Client, who: &str| -> i64 {
        db.query_one("select count(*) from baas.as_user($1::text::uuid, format('select id from baas.documents where id = %L', $2::text))", &[&who, &doc])
            .unwrap()
            .get(0)
    };
    assert_eq!((reads(&mut db, alice), reads(&mut db, bob)), (0, 0));
    db.execute("select baas.add_role_member($1, $2::text::uuid)", &[&editors, &alice]).unwrap();
    assert_eq!(reads(&mut db, alice), 1);
    let run = format!("{}-roles", std::process::id());
    let login = rest("POST", "/login", &[APP], Some(&json!({"username": format!("role-alice-{run}"), "password": "pw-role-alice-secret"}).to_string()));
    assert_eq!(login.status, 200, "{}", login.body);
    let token = login.body["sessionToken"].as_str().unwrap().to_string();
    let as_alice = [APP, ("X-Parse-Session-Token", token.as_str())];
    let found = rest("GET", "/classes/_Role", &as_alice, None);
    assert_eq!(found.status, 200, "{}", found.body);
    let names: Vec<&str> = found.body["results"].as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, vec![editors]);
    assert_eq!(found.body["results"][0]["users"], json!({"__type": "Relation", "className": "_User"}));
    // What the door does not serve, or a client may not do, is answered in Parse's words.
    let master = [APP, ("X-Parse-Master-Key", MASTER_KEY)];
    let cases: Vec<(&str, String, &[(&str, &str)], Option<String>, u16, i64)> = vec![
        ("GET", "/classes/_Role?where=%7B%22score%22%3A1%7D".to_string(), &as_alice, None, 400, 102),
        ("GET", "/classes/_Role?where=%7B%22name%22%3A%7B%22%24regex%22%3A%22%5Ee%22%7D%7D".to_string(), &as_alice, None, 400, 102),
        ("PUT", format!("/classes/_Role/{editors}"), &as_alice, Some(json!({"users": {"__op": "RemoveRelation", "objects": [{"__type": "Pointer", "className": "_User", "objectId": alice}]}}).to_string()), 400, 119),
        ("DELETE", format!("/classes/_Role/{editors}"), &as_alice, None, 400, 119),
        ("PUT", format!("/classes/_Role/{editors}"), &master, Some(json!({"name": "Other"}).to_string()), 400, 119),
        ("PUT", format!("/classes/_Role/{editors}"), &master, Some(json!({"score": 1}).to_string()), 400, 107),
        ("PUT", format!("/classes/_Role/{editors}"), &master, Some(json!({"users": {"__op": "AddRelation", "objects": [{"__type": "Pointer", "className": "_User", "objectId": "0190f4d2-8a1b-7c3d-9e4f-000000000009"}]}}).to_string()), 404, 101),
        ("PUT", format!("/classes/_Role/{editors}"), &master, Some(json!({"roles": {"__op": "AddRelation", "objects": [{"__type": "Pointer", "className": "_Role", "objectId": editors}]}}).to_string()), 400, 142),
        ("DELETE", "/classes/_Role/no-such-role".to_string(), &master, None, 404, 101),
        ("DELETE", "/classes/_Role/Not%20A%20Name".to_string(), &master, None, 404, 101),
        ("GET", format!("/classes/_Role/{}", editors.to_ascii_uppercase()), &master, None, 404, 101),
        ("PUT", format!("/classes/_Role/{editors}"), &master, Some(json!({"roles": {"__op": "AddRelation", "objects": [{"__type": "Pointer", "className": "_Role", "objectId": "Bad Name"}]}}).to_string()), 404, 101),
        ("GET", "/classes/_Role?where=%5B1%5D".to_string(), &as_alice, None, 400, 102),
        ("POST", "/classes/_Role".to_string(), &master, Some(json!({"ACL": {}}).to_string()), 400, 135),
    ];
    let anonymous: &[(&str, &str)] = &[APP];
    let none = rest("GET", "/classes/_Role?where=%7B%22score%22%3A1%7D", anonymous, None);
    assert_eq!((none.status, none.body["code"].as_i64()), (400, Some(102)), "a caller holding no role is refused the same: {}", none.body);
    for (method, path, headers, body, status, code) in cases {
        let r = rest(method, &path, headers, body.as_deref());
        assert_eq!((r.status, r.body["code"].as_i64()), (status, Some(code)), "{method} {path}: {}", r.body);
    }
    // Nothing of those went through: alice is still its one member.
    let roles: Value = db.query_one("select baas.list_roles()", &[]).unwrap().get(0);
    let mine = roles.as_array().unwrap().iter().find(|r| r["name"] == editors).unwrap();
    assert_eq!((mine["members"].clone(), mine["roles"].clone()), (json!([alice]), json!([])));
}

/// Geo queries: `near`, `withinKilometers`/`withinMiles`, `withinGeoBox`,
/// `withinPolygon`, inside `$or`/`$and`/`$nor`, `polygonContains` on Polygon fields, and
/// in LiveQuery, as the SDK's users see them (and Parse Server, in the differential).
#[test]
fn sdk_geo_queries_find_places_by_distance_box_and_polygon() {
    sdk(&["geo"]);
}

#[test]
fn acls_set_through_the_sdk_are_what_sql_sees_and_back() {
    let facts = sdk(&["acls"]);
    let f = &facts[0];
    let (object, alice, bob, carol) = (f["object"].as_str().unwrap(), f["alice"].as_str().unwrap(), f["bob"].as_str().unwrap(), f["carol"].as_str().unwrap());
    let mut db = admin();
    // The ACL the SDK set last (alice read and write, public read) is the document's.
    let acl: Value = db.query_one("select baas.get_acl('gamescore', $1)", &[&object]).unwrap().get(0);
    let sorted = |v: &Value| {
        let mut a: Vec<String> = v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect();
        a.sort();
        a
    };
    assert_eq!(sorted(&acl["read"]), vec!["public".to_string(), format!("user:{alice}")]);
    assert_eq!(sorted(&acl["update"]), vec![format!("user:{alice}")]);
    assert_eq!(sorted(&acl["delete"]), vec![format!("user:{alice}")]);
    // What each of them may do in SQL, as_user: everyone reads, only alice writes.
    let reads = |db: &mut postgres::Client, who: Option<&str>| -> i64 {
        db.query_one(
            "select count(*) from baas.as_user($1::text::uuid, format('select id from baas.documents where id = %L', $2::text))",
            &[&who, &object],
        )
        .unwrap()
        .get(0)
    };
    // Whether a patch goes through, rolled back either way.
    db.batch_execute(
        "create or replace function public.parse_test_can_write(id text) returns text language plpgsql as $$
         begin
             perform baas.patch_document('gamescore', id, '{\"touched\": true}');
             raise exception 'went through';
         exception when others then
             return case when sqlerrm = 'went through' then 'wrote' when sqlstate = '42501' then 'forbidden' else sqlerrm end;
         end $$",
    )
    .unwrap();
    let writes = |db: &mut postgres::Client, who: &str| -> String {
        let v: Value = db
            .query_one("select baas.as_user($1::text::uuid, format('select public.parse_test_can_write(%L)', $2::text))", &[&who, &object])
            .unwrap()
            .get(0);
        v.as_str().unwrap_or("").to_string()
    };
    for who in [Some(alice), Some(bob), Some(carol), None] {
        assert_eq!(reads(&mut db, who), 1, "{who:?} reads the public object in SQL");
    }
    assert_eq!(writes(&mut db, alice), "wrote");
    assert_eq!((writes(&mut db, bob), writes(&mut db, carol)), ("forbidden".into(), "forbidden".into()), "only alice may write it in SQL, as through the SDK");

    // And back: an ACL set in SQL is what Parse clients get.
    db.execute(
        "select baas.set_acl('gamescore', $1, jsonb_build_object('read', jsonb_build_array('user:' || $2::text),
                'update', jsonb_build_array('user:' || $2::text), 'delete', jsonb_build_array('user:' || $2::text)))",
        &[&object, &bob],
    )
    .unwrap();
    let token = |name: &str| -> String {
        let r = rest("POST", "/login", &[APP], Some(&json!({"username": name, "password": format!("pw-{}-secret", name.split('-').next().unwrap())}).to_string()));
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["sessionToken"].as_str().unwrap().to_string()
    };
    let run = format!("{}-acls", std::process::id());
    let bob_token = token(&format!("bob-{run}"));
    let carol_token = token(&format!("carol-{run}"));
    let as_bob = rest("GET", &format!("/classes/GameScore/{object}"), &[APP, ("X-Parse-Session-Token", &bob_token)], None);
    assert_eq!(as_bob.status, 200, "{}", as_bob.body);
    assert_eq!(as_bob.body["ACL"], json!({bob: {"read": true, "write": true}}), "the SQL ACL as Parse shows it");
    let as_carol = rest("GET", &format!("/classes/GameScore/{object}"), &[APP, ("X-Parse-Session-Token", &carol_token)], None);
    assert_eq!((as_carol.status, as_carol.body.clone()), (404, json!({"code": 101, "error": "Object not found."})));
}

#[test]
fn rest_style_requests_and_parse_errors() {
    // No or a wrong application id: Parse Server's 403.
    for headers in [vec![], vec![("X-Parse-Application-Id", "someone-else")]] {
        let r = rest("GET", "/classes/GameScore", &headers, None);
        assert_eq!(r.status, 403, "{}", r.body);
        assert_eq!(r.body["error"], "unauthorized");
    }
    // A wrong master key is refused, never taken for a user.
    let r = rest("GET", "/classes/GameScore", &[APP, ("X-Parse-Master-Key", "guess")], None);
    assert_eq!(r.status, 403, "{}", r.body);
    // Sign up and create with headers, read with a query string.
    let name = format!("rest-{}", std::process::id());
    let r = rest("POST", "/users", &[APP], Some(&json!({"username": name, "password": "rest-password-1", "email": format!("{name}@example.com")}).to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let token = r.body["sessionToken"].as_str().unwrap().to_string();
    let auth = [APP, ("X-Parse-Session-Token", token.as_str()), ("X-Parse-REST-API-Key", "anything")];
    let r = rest("POST", "/classes/GameScore", &auth, Some(r#"{"score": 7, "rest": true, "ACL": {"*": {"read": true}}}"#));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["objectId"].as_str().unwrap().to_string();
    assert!(r.body["createdAt"].as_str().unwrap().ends_with('Z'));
    let where_ = "%7B%22rest%22%3Atrue%2C%22score%22%3A%7B%22%24gte%22%3A7%7D%7D"; // {"rest":true,"score":{"$gte":7}}
    let r = rest("GET", &format!("/classes/GameScore?where={where_}&count=1&limit=5"), &auth, None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["results"].as_array().unwrap().iter().any(|o| o["objectId"] == id.as_str()));
    assert!(r.body["count"].as_i64().unwrap() >= 1);
    // The JavaScript SDK's style by hand: text/plain, everything in the body.
    let body = json!({"_method": "GET", "_ApplicationId": APP_ID, "_SessionToken": token, "where": {"rest": true}, "limit": 1}).to_string();
    let r = rest("POST", "/classes/GameScore", &[("Content-Type", "text/plain")], Some(&body));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["results"].as_array().unwrap().len(), 1);
    // Parse's error shapes and codes.
    let cases: Vec<(&str, String, Option<String>, u16, i64)> = vec![
        ("GET", format!("/classes/GameScore/{}", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"), None, 404, 101),
        ("GET", "/classes/GameScore/not-an-id".into(), None, 404, 101),
        ("POST", "/classes/Game-Score".into(), Some("{}".into()), 400, 103),
        ("POST", "/classes/NoSuchClass".into(), Some("{}".into()), 400, 119),
        ("POST", "/classes/GameScore".into(), Some("[1]".into()), 400, 107),
        ("POST", "/classes/GameScore".into(), Some("{\"a\": ".into()), 400, 107),
        ("POST", "/classes/GameScore".into(), Some(r#"{"ACL": {"alice": {"read": true}}}"#.into()), 400, 123),
        ("POST", "/classes/GameScore".into(), Some(r#"{"$bad": 1}"#.into()), 400, 105),
        ("GET", "/classes/GameScore?where=%7B%22a%22%3A%7B%22%24bogus%22%3A1%7D%7D".into(), None, 400, 102),
        ("GET", "/classes/GameScore?where=nope".into(), None, 400, 107),
        ("GET", "/classes/GameScore?limit=5000".into(), None, 400, 102),
        ("POST", "/users".into(), Some(json!({"username": name, "password": "another-pass-1"}).to_string()), 400, 202),
        ("POST", "/users".into(), Some(json!({"username": "x-no-password"}).to_string()), 400, 201),
        ("POST", "/users".into(), Some(json!({"password": "no-username-1"}).to_string()), 400, 200),
        ("POST", "/users".into(), Some(json!({"username": format!("{name}-2"), "password": "rest-password-1", "email": format!("{name}@example.com")}).to_string()), 400, 203),
        ("POST", "/login".into(), Some(json!({"username": name, "password": "wrong-password"}).to_string()), 404, 101),
        ("GET", "/users/me".into(), None, 400, 209),
        ("POST", "/classes/GameScore".into(), Some(r#"{"ACL": {"*": {"write": true}}}"#.into()), 400, 123),
        ("POST", "/classes/GameScore".into(), Some(r#"{"_private": 1}"#.into()), 400, 105),
        ("POST", "/batch".into(), Some(json!({"requests": [{"method": "POST", "path": "/parse/login", "body": {"username": name, "password": "x"}}]}).to_string()), 400, 107),
        ("POST", "/batch".into(), Some(r#"{"requests": [{"method": "PATCH", "path": "/parse/classes/GameScore"}]}"#.into()), 400, 107),
        ("POST", "/batch".into(), Some(r#"{"requests": {}}"#.into()), 400, 107),
        ("POST", "/batch".into(), Some(r#"{"requests": [{"method": "POST", "path": "/parse/classes/_User", "body": {"username": "b", "password": "batched-pass-1"}}]}"#.into()), 400, 107),
    ];
    for (method, path, body, status, code) in cases {
        let r = rest(method, &path, &[APP], body.as_deref());
        assert_eq!((r.status, r.body["code"].as_i64()), (status, Some(code)), "{method} {path}: {}", r.body);
        assert!(r.body["error"].as_str().is_some_and(|m| !m.is_empty()), "{method} {path}: {}", r.body);
    }
    // Logging out without a session is nothing to end: {} as in Parse Server.
    let r = rest("POST", "/logout", &[APP], Some("{}"));
    assert_eq!((r.status, r.body.clone()), (200, json!({})));
    // The JavaScript SDK's _MasterKey: the right one reads everything, a wrong one nothing.
    let private = rest("POST", "/classes/GameScore", &auth, Some(r#"{"secret": true, "ACL": {}}"#));
    assert_eq!(private.status, 201, "{}", private.body);
    let pid = private.body["objectId"].as_str().unwrap().to_string();
    let js = |key: &str| {
        let body = json!({"_method": "GET", "_ApplicationId": APP_ID, "_MasterKey": key}).to_string();
        rest("POST", &format!("/classes/GameScore/{pid}"), &[("Content-Type", "text/plain")], Some(&body))
    };
    assert_eq!(js(MASTER_KEY).body["secret"], true);
    assert_eq!(js("wrong-key").status, 403);
    // Numbers beyond a double (pgbaas keeps them exactly) never break an answer.
    let big = rest("POST", "/classes/GameScore", &auth, Some(r#"{"n": 1.7e308}"#));
    let bid = big.body["objectId"].as_str().unwrap().to_string();
    let inc = rest("PUT", &format!("/classes/GameScore/{bid}"), &auth, Some(r#"{"n": {"__op": "Increment", "amount": 1.7e308}}"#));
    assert_eq!((inc.status, inc.body["n"].as_f64()), (200, Some(f64::MAX)), "{}", inc.body);
    let got = rest("GET", &format!("/classes/GameScore/{bid}"), &auth, None);
    assert_eq!(got.status, 200, "{}", got.body);
    let stored: String = admin().query_one("select data ->> 'n' from baas.documents where id = $1::text::uuid", &[&bid]).unwrap().get(0);
    assert_eq!(stored.parse::<f64>().map(f64::is_infinite), Ok(true), "stored exactly: {stored}");
    // A session token that is not one: 209, not an anonymous answer.
    let r = rest("GET", "/classes/GameScore", &[APP, ("X-Parse-Session-Token", "r:forged")], None);
    assert_eq!((r.status, r.body["code"].as_i64()), (400, Some(209)), "{}", r.body);
    // Sign-ins from two installations are two live sessions; a third from the first
    // installation replaces its earlier one (Parse Server's rule).
    let login = |installation: &str| -> String {
        let r = rest("POST", "/login", &[APP, ("X-Parse-Installation-Id", installation)], Some(&json!({"username": name, "password": "rest-password-1"}).to_string()));
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["sessionToken"].as_str().unwrap().to_string()
    };
    let (phone, tablet) = (login("0b8c2a54-6a9c-4f0e-9d6e-1f2a3b4c5d6e"), login("7d1e9f20-1b2c-4d3e-8f4a-5b6c7d8e9f00"));
    let me = |t: &str| rest("GET", "/users/me", &[APP, ("X-Parse-Session-Token", t)], None).status;
    assert_eq!((me(&phone), me(&tablet)), (200, 200));
    let phone2 = login("0b8c2a54-6a9c-4f0e-9d6e-1f2a3b4c5d6e");
    assert_eq!((me(&phone), me(&tablet), me(&phone2)), (400, 200, 200));
    // Logging out ends that session only, at once, for every door.
    assert_eq!(rest("POST", "/logout", &[APP, ("X-Parse-Session-Token", tablet.as_str())], Some("{}")).status, 200);
    assert_eq!((me(&tablet), me(&phone2)), (400, 200));
    let r = rest("POST", "/logout", &auth, Some("{}"));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = rest("GET", "/users/me", &auth, None);
    assert_eq!((r.status, r.body["code"].as_i64()), (400, Some(209)), "{}", r.body);
    // pgbaas's own routes are where they were.
    assert_eq!(request_at(&door().base(), "GET", "/healthz", None, &[], None).status, 200);
}


/// Sign in with Apple and Google for Parse apps: pgbaas's OpenID Connect providers
/// (docs/oidc.md) named `apple` and `google`, their presets' issuers, their keys served
/// by the test kit's key server (the real endpoints are not reachable from here).
struct Idps {
    server: pgbaas_testkit::oidc::OidcServer,
    kid: String,
}

fn idps() -> &'static Idps {
    static IDPS: OnceLock<Idps> = OnceLock::new();
    IDPS.get_or_init(|| {
        door();
        let server = pgbaas_testkit::oidc::OidcServer::start();
        let kid = server.add_key(pgbaas_testkit::oidc::Alg::Rs256);
        let jwks = server.jwks_url();
        let mut db = admin();
        for (name, client) in [("apple", "com.example.app"), ("google", "1234-ios.apps.googleusercontent.com")] {
            let options = json!({"preset": name, "client_ids": [client], "jwks_url": jwks, "nonce": "optional"});
            db.execute("select baas.set_oidc_provider($1, $2::text::jsonb)", &[&name, &options.to_string()]).unwrap();
        }
        Idps { server, kid }
    })
}

/// An ID token of `provider` for `sub` (fresh each call: tokens are used once).
fn id_token(provider: &str, sub: &str, extra: Value) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let (iss, aud) = match provider {
        "apple" => ("https://appleid.apple.com", "com.example.app"),
        _ => ("https://accounts.google.com", "1234-ios.apps.googleusercontent.com"),
    };
    let mut claims = json!({"iss": iss, "aud": aud, "sub": sub, "iat": now, "exp": now + 600,
                            "jti": format!("{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::SeqCst))});
    if let (Some(c), Value::Object(e)) = (claims.as_object_mut(), extra) {
        c.extend(e);
    }
    idps().server.mint(&idps().kid, &claims)
}

/// `authData` of Apple and Google: sign up and in (the token verified in Postgres, its
/// `sub` the authData's id), link and unlink on a signed-in account, an anonymous one
/// becoming a full one, and each refusal with Parse's code and nothing changed.
#[test]
fn rest_auth_data_signs_in_and_links_apple_and_google() {
    let pid = std::process::id();
    let body = |auth: Value| Some(json!({"authData": auth}).to_string());
    let apple_sub = format!("001234.apple.{pid}");
    let identities = |sub: &str| -> i64 {
        admin().query_one("select count(*) from baas.identities where subject = $1", &[&sub]).unwrap().get(0)
    };
    // The first sign-in makes the account (201), with a random username; Parse's apple
    // form ({id, token}).
    let first = rest("POST", "/users", &[APP], body(json!({"apple": {"id": apple_sub, "token": id_token("apple", &apple_sub, json!({}))}})).as_deref());
    assert_eq!(first.status, 201, "{}", first.body);
    let who = first.body["objectId"].as_str().unwrap().to_string();
    let token = first.body["sessionToken"].as_str().unwrap().to_string();
    assert!(token.starts_with("r:"), "{}", first.body);
    assert_eq!(first.body["authData"], json!({"apple": {"id": apple_sub}}), "{}", first.body);
    assert_eq!(first.body["username"].as_str().map(str::len), Some(32), "{}", first.body);
    let me = rest("GET", "/users/me", &[APP, ("X-Parse-Session-Token", &token)], None);
    assert_eq!((me.status, me.body["objectId"].as_str()), (200, Some(who.as_str())), "{}", me.body);
    // Again, a new token: the same account (200).
    let again = rest("POST", "/users", &[APP], body(json!({"apple": {"id": apple_sub, "token": id_token("apple", &apple_sub, json!({}))}})).as_deref());
    assert_eq!((again.status, again.body["objectId"].as_str()), (200, Some(who.as_str())), "{}", again.body);
    // Refusals: nothing made, Parse's codes.
    let used = id_token("apple", &apple_sub, json!({}));
    assert_eq!(rest("POST", "/users", &[APP], body(json!({"apple": {"id": apple_sub, "token": used}})).as_deref()).status, 200);
    let other = format!("002345.apple.{pid}");
    for (auth, status, code, says) in [
        (json!({"apple": {"id": apple_sub, "token": used}}), 404, 101, "used"),
        (json!({"apple": {"id": other, "token": id_token("apple", &apple_sub, json!({}))}}), 404, 101, "another subject"),
        (json!({"apple": {"id": other, "token": id_token("apple", &other, json!({"aud": "com.other.app"}))}}), 404, 101, "aud"),
        (json!({"apple": {"id": other, "token": id_token("google", &other, json!({}))}}), 404, 101, "iss"),
        (json!({"apple": {"id": other}}), 400, 107, "id_token or token"),
        (json!({"apple": {"id": 5, "token": "x"}}), 400, 107, "id_token or token"),
        (json!({"twitter": {"id": other, "token": "x"}}), 400, 252, "unsupported"),
        (json!({"apple": {"id": other, "token": "x"}, "google": {"id": other, "id_token": "x"}}), 400, 252, "one authData provider"),
    ] {
        let r = rest("POST", "/users", &[APP], body(auth.clone()).as_deref());
        assert_eq!((r.status, r.body["code"].as_i64()), (status, Some(code)), "{auth}: {}", r.body);
        assert!(r.body["error"].as_str().unwrap_or("").contains(says), "{auth}: {}", r.body);
    }
    assert_eq!(identities(&other), 0, "no identity made by a refused sign-in");

    // Linking Google to an account with a password (Google's form, {id, id_token}); the
    // SDK sends back what it holds beside the new entry.
    let name = format!("oidc-link-{pid}");
    let made = rest("POST", "/users", &[APP], Some(&json!({"username": name, "password": "link-pass-123"}).to_string()));
    assert_eq!(made.status, 201, "{}", made.body);
    let (uid, utoken) = (made.body["objectId"].as_str().unwrap().to_string(), made.body["sessionToken"].as_str().unwrap().to_string());
    let as_user = [APP, ("X-Parse-Session-Token", utoken.as_str())];
    let google_sub = format!("10987654321{pid}");
    let link = rest("PUT", &format!("/users/{uid}"), &as_user,
                    Some(&json!({"authData": {"google": {"id": google_sub, "id_token": id_token("google", &google_sub, json!({}))}}, "nick": "linked"}).to_string()));
    assert_eq!(link.status, 200, "{}", link.body);
    assert!(link.body["updatedAt"].is_string(), "{}", link.body);
    let me = rest("GET", "/users/me", &as_user, None);
    assert_eq!((me.body["authData"].clone(), me.body["nick"].clone()), (json!({"google": {"id": google_sub}}), json!("linked")), "{}", me.body);
    // Google signs in to that account now.
    let by_google = rest("POST", "/users", &[APP], body(json!({"google": {"id": google_sub, "id_token": id_token("google", &google_sub, json!({}))}})).as_deref());
    assert_eq!((by_google.status, by_google.body["objectId"].as_str()), (200, Some(uid.as_str())), "{}", by_google.body);
    // Another Google account replaces it (Parse keeps one entry per provider): the old
    // one no longer signs in here.
    let google_2 = format!("{google_sub}-2");
    let swap = rest("PUT", &format!("/users/{uid}"), &as_user,
                    Some(&json!({"authData": {"google": {"id": google_2, "id_token": id_token("google", &google_2, json!({}))}}}).to_string()));
    assert_eq!(swap.status, 200, "{}", swap.body);
    assert_eq!((identities(&google_sub), identities(&google_2)), (0, 1));
    assert_eq!(rest("GET", "/users/me", &as_user, None).body["authData"], json!({"google": {"id": google_2}}));
    // The same identity on another account: 208, and neither account changes.
    let taken = rest("PUT", &format!("/users/{who}"), &[APP, ("X-Parse-Session-Token", &token)],
                     Some(&json!({"authData": {"apple": {"id": apple_sub}, "google": {"id": google_2, "id_token": id_token("google", &google_2, json!({}))}}, "nick": "x"}).to_string()));
    assert_eq!((taken.status, taken.body["code"].as_i64()), (400, Some(208)), "{}", taken.body);
    let me = rest("GET", "/users/me", &[APP, ("X-Parse-Session-Token", &token)], None);
    assert_eq!((me.body["authData"].clone(), me.body.get("nick").cloned()), (json!({"apple": {"id": apple_sub}}), None), "a refused link saves nothing: {}", me.body);
    // A token for another subject than the entry's id links nothing.
    let wrong = rest("PUT", &format!("/users/{uid}"), &as_user,
                     Some(&json!({"authData": {"apple": {"id": other, "token": id_token("apple", &format!("{other}-x"), json!({}))}}}).to_string()));
    assert_eq!((wrong.status, wrong.body["code"].as_i64()), (404, Some(101)), "{}", wrong.body);
    // Another user's authData: refused as Parse refuses changing another user.
    let theirs = rest("PUT", &format!("/users/{who}"), &as_user,
                      Some(&json!({"authData": {"google": null}}).to_string()));
    assert_eq!(theirs.status, 400, "{}", theirs.body);
    // Unlinking: null. The account keeps its password; Google no longer signs in to it.
    let unlink = rest("PUT", &format!("/users/{uid}"), &as_user, Some(&json!({"authData": {"google": null}}).to_string()));
    assert_eq!(unlink.status, 200, "{}", unlink.body);
    assert_eq!(rest("GET", "/users/me", &as_user, None).body.get("authData"), None);
    assert_eq!(identities(&google_2), 0);
    // Apple is the only way into the first account: it cannot be unlinked (142).
    let last = rest("PUT", &format!("/users/{who}"), &[APP, ("X-Parse-Session-Token", &token)], Some(&json!({"authData": {"apple": null}}).to_string()));
    assert_eq!((last.status, last.body["code"].as_i64()), (400, Some(142)), "{}", last.body);
    assert_eq!(identities(&apple_sub), 1);

    // An anonymous account linking Apple becomes a full account with the same id and
    // session, and loses its anonymous authData.
    let _anonymous = anonymous_sign_in();
    let anon = rest("POST", "/users", &[APP], body(json!({"anonymous": {"id": format!("oidc-anon-{pid}")}})).as_deref());
    assert_eq!(anon.status, 201, "{}", anon.body);
    let (aid, atoken) = (anon.body["objectId"].as_str().unwrap().to_string(), anon.body["sessionToken"].as_str().unwrap().to_string());
    let anon_sub = format!("003456.apple.{pid}");
    let up = rest("PUT", &format!("/users/{aid}"), &[APP, ("X-Parse-Session-Token", &atoken)],
                  Some(&json!({"authData": {"anonymous": {"id": format!("oidc-anon-{pid}")}, "apple": {"id": anon_sub, "token": id_token("apple", &anon_sub, json!({}))}}}).to_string()));
    assert_eq!(up.status, 200, "{}", up.body);
    let me = rest("GET", "/users/me", &[APP, ("X-Parse-Session-Token", &atoken)], None);
    assert_eq!((me.status, me.body["authData"].clone()), (200, json!({"apple": {"id": anon_sub}})), "{}", me.body);
    let anonymous: bool = admin().query_one("select is_anonymous from baas.users where id = $1::text::uuid", &[&aid]).unwrap().get(0);
    assert!(!anonymous);
    let back = rest("POST", "/users", &[APP], body(json!({"apple": {"id": anon_sub, "token": id_token("apple", &anon_sub, json!({}))}})).as_deref());
    assert_eq!((back.status, back.body["objectId"].as_str()), (200, Some(aid.as_str())), "{}", back.body);
    // Its only way in moves from Apple to Google in one save (links first, then unlinks).
    let google_3 = format!("30987654321{pid}");
    let moved = rest("PUT", &format!("/users/{aid}"), &[APP, ("X-Parse-Session-Token", &atoken)],
                     Some(&json!({"authData": {"apple": null, "google": {"id": google_3, "id_token": id_token("google", &google_3, json!({}))}}}).to_string()));
    assert_eq!(moved.status, 200, "{}", moved.body);
    assert_eq!((identities(&anon_sub), identities(&google_3)), (0, 1));

    // A key the provider rotated in: the door fetches the keys again (past the refetch
    // floor, 1 s here) and signs in.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let rotated = idps().server.add_key(pgbaas_testkit::oidc::Alg::Es256);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let fresh = idps().server.mint(&rotated, &json!({"iss": "https://appleid.apple.com", "aud": "com.example.app", "sub": apple_sub, "iat": now, "exp": now + 600, "jti": format!("rot-{pid}")}));
    let r = rest("POST", "/users", &[APP], body(json!({"apple": {"id": apple_sub, "token": fresh}})).as_deref());
    assert_eq!((r.status, r.body["objectId"].as_str()), (200, Some(who.as_str())), "{}", r.body);
}

/// The SDK's own calls: `Parse.User.logInWith`, `linkWith`, `_unlinkFrom`, `_isLinked`.
#[test]
fn sdk_log_in_with_apple_and_link_google() {
    let pid = std::process::id();
    let apple = format!("004567.apple.{pid}");
    let google = format!("20987654321{pid}");
    let tokens = json!({
        "apple": [{"id": apple, "token": id_token("apple", &apple, json!({}))}, {"id": apple, "token": id_token("apple", &apple, json!({}))}],
        "google": {"id": google, "id_token": id_token("google", &google, json!({}))},
    });
    let facts = sdk_env(&["authData"], &[("PARSE_OIDC_TOKENS", tokens.to_string())]);
    let user = facts[0]["user"].as_str().unwrap();
    let rows: Vec<(String, String)> = admin()
        .query("select provider, subject from baas.identities where user_id = $1::text::uuid order by provider", &[&user])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, vec![("apple".to_string(), apple)], "Apple linked, Google unlinked again");
}
