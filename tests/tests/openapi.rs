//! Issue 19, package B (describe): the OpenAPI 3.1 document at /v1/openapi.json, made
//! by the proxy from its route table. A standard validator accepts it, it lists every
//! route of the table, a client generated from it by a standard generator signs up and
//! creates a document, and schemathesis, run from it against the live proxy, finds no
//! server error and no answer breaking its own schema.
//!
//! The tools are those tests/scripts/install-deps.sh installs into /opt/pgbaas-venv.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VENV: &str = "/opt/pgbaas-venv/bin";

fn tool(name: &str) -> PathBuf {
    let p = Path::new(VENV).join(name);
    assert!(p.exists(), "{} is missing: run tests/scripts/install-deps.sh", p.display());
    p
}

/// A fresh directory under the system's temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> TempDir {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let p = std::env::temp_dir().join(format!("pgbaas-openapi-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&p).expect("temp dir");
    TempDir(p)
}

/// The live document, and the same text written to `dir/openapi.json`.
fn document(dir: &Path) -> (Value, PathBuf) {
    let r = ureq::get(&format!("{}/v1/openapi.json", base())).call().expect("GET /v1/openapi.json");
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let text = r.into_string().unwrap();
    let path = dir.join("openapi.json");
    std::fs::write(&path, &text).unwrap();
    (serde_json::from_str(&text).expect("the document is JSON"), path)
}

/// The schemathesis runs one at a time: run in parallel they share the proxy's pool of
/// three connections (503s that are no fault) and their caps would add up.
static FUZZ: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn fuzz_lock() -> std::sync::MutexGuard<'static, ()> {
    FUZZ.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run `cmd` to its end, at most `limit`; its status and output (stdout then stderr).
/// The tool runs in its own process group, killed whole on overrun or a failed test
/// (openapi-python-client's post-hooks, schemathesis's workers outlive their parent).
fn run(mut cmd: Command, limit: Duration) -> (bool, String) {
    use std::os::unix::process::CommandExt;
    let dir = tempdir();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("start the tool");
    // Killed when the test fails or overruns (a Drop guard).
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            // The group's id is the child's pid (process_group(0)).
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.0.id())]).stderr(Stdio::null()).status();
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let deadline = Instant::now() + limit;
    let mut child = Kill(child);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(child); // the group too: hooks left behind by a finished tool
    let text = format!("{}\n{}", std::fs::read_to_string(&out).unwrap_or_default(), std::fs::read_to_string(&err).unwrap_or_default());
    match status {
        Some(s) => (s.success(), text),
        None => panic!("{cmd:?} ran longer than {limit:?}:\n{text}"),
    }
}

/// The route names of the table, read from its source: a listing of the table that
/// does not come from the proxy, to hold the document against.
fn table_names() -> Vec<String> {
    let src = std::fs::read_to_string(pgbaas_testkit::workspace_root().join("proxy/src/routes/mod.rs")).unwrap();
    let table = &src[src.find("pub static ROUTES").unwrap()..];
    let table = &table[..table.find("\n];").unwrap()];
    let mut names: Vec<String> = table.match_indices("r(\"").map(|(i, _)| table[i + 3..].split('"').next().unwrap().to_string()).collect();
    names.sort();
    names
}

#[test]
fn the_document_is_valid_openapi_3_1_and_lists_every_route() {
    let dir = tempdir();
    let (doc, path) = document(dir.path());
    assert_eq!(doc["openapi"], "3.1.0");
    let (ok, out) = run(
        {
            let mut c = Command::new(tool("openapi-spec-validator"));
            c.arg(&path);
            c
        },
        Duration::from_secs(120),
    );
    assert!(ok, "openapi-spec-validator refused the document:\n{out}");

    let mut ids = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ids.push(op["operationId"].as_str().unwrap().to_string());
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}");
        }
    }
    ids.sort();
    let names = table_names();
    assert!(names.len() > 90, "the table's names were read: {names:?}");
    assert_eq!(ids, names, "one operation per route of the table, named as the route");

    // Path parameters are typed; bodies, errors and auth schemes are described.
    let doc_get = &doc["paths"]["/v1/files/{id}"]["get"];
    assert_eq!(doc_get["parameters"][0]["schema"]["format"], "uuid");
    let create = &doc["paths"]["/v1/collections/{collection}/documents"]["post"];
    assert_eq!(create["requestBody"]["content"]["application/json"]["schema"]["required"], json!(["data"]));
    assert_eq!(create["responses"]["404"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Error");
    let err = &doc["components"]["schemas"]["Error"]["properties"]["error"];
    assert_eq!(err["required"], json!(["code", "message"]));
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!((schemes["user_token"]["scheme"].as_str(), schemes["service_token"]["scheme"].as_str()), (Some("bearer"), Some("bearer")));
    // Served to anyone, whatever token is sent: it holds nothing private.
    let r = call("GET", "/v1/openapi.json", Some("not-a-token"), None);
    assert_eq!((r.status, &r.body), (200, &doc));
}

#[test]
fn a_generated_python_client_signs_up_and_creates_a_document() {
    let dir = tempdir();
    let (_, path) = document(dir.path());
    let pkg = dir.path().join("pgbaas_client");
    let mut gen = Command::new(tool("openapi-python-client"));
    gen.args(["generate", "--meta", "none", "--path"]).arg(&path).arg("--output-path").arg(&pkg).current_dir(dir.path());
    let (ok, out) = run(gen, Duration::from_secs(90));
    assert!(ok && pkg.join("api").is_dir(), "openapi-python-client failed:\n{out}");
    // It drops an operation it cannot express with only a warning ("will not be
    // generated"; exit 0): every operation must have its module, but these.
    const NOT_GENERATED: &[&str] = &[
        "tus_patch", // an application/offset+octet-stream body, which it has no type for
    ];
    let mut modules = Vec::new();
    for tag in std::fs::read_dir(pkg.join("api")).unwrap() {
        let tag = tag.unwrap().path();
        if tag.is_dir() {
            for f in std::fs::read_dir(&tag).unwrap() {
                let name = f.unwrap().file_name().to_string_lossy().into_owned();
                if let Some(m) = name.strip_suffix(".py") {
                    modules.push(m.to_string());
                }
            }
        }
    }
    let missing: Vec<String> = table_names().into_iter().filter(|n| !modules.contains(n) && !NOT_GENERATED.contains(&n.as_str())).collect();
    assert!(missing.is_empty(), "operations the generator dropped: {missing:?}\n{out}");

    let c = collection("openapi_client", json!({}));
    let email = email("openapi-client");
    // The generated client's own functions and models, nothing hand-made.
    let script = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
from pgbaas_client import Client, AuthenticatedClient
from pgbaas_client.api.auth import signup
from pgbaas_client.api.collections import create_document
from pgbaas_client.models import SignupBody, CreateDocumentBody, CreateDocumentBodyData

base, collection, email = sys.argv[2], sys.argv[3], sys.argv[4]
anon = Client(base_url=base)
r = signup.sync_detailed(client=anon, body=SignupBody(email=email, password="correct horse battery"))
assert r.status_code == 201, (r.status_code, r.content)
session = json.loads(r.content)
user = AuthenticatedClient(base_url=base, token=session["access_token"])
data = CreateDocumentBodyData.from_dict({"title": "from the generated client", "n": 7})
r = create_document.sync_detailed(collection, client=user, body=CreateDocumentBody(data=data))
assert r.status_code == 201, (r.status_code, r.content)
doc = json.loads(r.content)
print(json.dumps({"user": session["user"]["id"], "token": session["access_token"], "doc": doc["id"]}))
"#;
    let mut py = Command::new(tool("python"));
    py.arg("-c").arg(script).arg(dir.path()).arg(base()).arg(&c).arg(&email);
    let (ok, out) = run(py, Duration::from_secs(60));
    assert!(ok, "the generated client failed:\n{out}");
    let made: Value = serde_json::from_str(out.lines().find(|l| l.starts_with('{')).expect("the script's JSON line")).unwrap();

    // Checked through plain HTTP: the account exists and owns the document.
    let token = made["token"].as_str().unwrap();
    let me = call("GET", "/v1/auth/user", Some(token), None);
    assert_eq!((me.status, me.body["email"].as_str(), me.body["id"].as_str()), (200, Some(email.as_str()), made["user"].as_str()));
    let d = call("GET", &doc_path(&c, made["doc"].as_str().unwrap()), Some(token), None);
    assert_eq!(d.status, 200, "{}", d.body);
    assert_eq!(d.body["data"], json!({"title": "from the generated client", "n": 7}));
    assert_eq!(d.body["owner"], made["user"]);
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_breaking_its_schema() {
    let _one = fuzz_lock();
    let dir = tempdir();
    // A signed-in user's token on every request, so that the user routes run past the
    // token check. Routes that would end that session are left out (they would only turn
    // the rest of the run anonymous); they have tests of their own.
    let user = signup("schemathesis");
    // Email configured, as in production: without it the email flows answer 503
    // email_not_configured by design (docs/email.md), which is no fault to find. No SMTP
    // server: the mails wait in the outbox.
    admin()
        .batch_execute("update baas.settings set email_from = 'Test App <noreply@pgbaas.test>', app_url = 'testapp://auth'")
        .expect("configure email");
    let mut st = Command::new(tool("st"));
    st.current_dir(dir.path())
        .arg("run")
        .arg(format!("{}/v1/openapi.json", base()))
        .args(["--url", &base()])
        .args(["--header", &format!("Authorization: Bearer {}", user.access)])
        .args(["--checks", "not_a_server_error,response_schema_conformance,content_type_conformance,response_headers_conformance"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "5", "--seed", "19", "--no-shrink", "--workers", "1"])
        .args(["--request-timeout", "20", "--generation-database", "none", "--generation-with-security-parameters", "false"])
        .args(["--exclude-operation-id", "logout", "--exclude-operation-id", "delete_user"])
        // schemathesis has no serializer for tus's application/offset+octet-stream
        // ("Serialization not possible"); tus has tests of its own (files_tus.rs).
        .args(["--exclude-operation-id", "tus_patch"])
        .args(["--no-color", "--output-truncate", "false"])
        .env("SCHEMATHESIS_HOOKS", "")
        .env("HOME", dir.path());
    let (ok, out) = run(st, Duration::from_secs(300));
    assert!(ok, "schemathesis found problems:\n{out}");
    // The run reached the operations (not a schema it could not load): all it loaded
    // but the three left out above, and it loaded all of the document's but at most one
    // (schemathesis 4 skips the OPTIONS operation, tus_options).
    let count = |label: &str| -> String {
        out.lines().find_map(|l| l.trim().strip_prefix(label).map(str::trim).map(str::to_string)).unwrap_or_else(|| panic!("no {label}:\n{out}"))
    };
    let tested: usize = count("Tested: ").parse().unwrap();
    let selected = count("Selected: ");
    let (selected, total) = selected.split_once('/').map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap())).unwrap();
    let operations = document(dir.path()).0["paths"].as_object().unwrap().values().map(|i| i.as_object().unwrap().len()).sum::<usize>();
    assert_eq!((tested, selected + 3), (selected, total), "{out}");
    assert!(total + 1 >= operations && total <= operations, "{total} of {operations} operations loaded:\n{out}");
    eprintln!("{}", &out[out.find("SUMMARY").unwrap_or(0)..]);
}

/// Found by schemathesis: a URL longer than the http crate takes (65534 bytes; it sent a
/// `where` of 196 KB) closed the connection without an answer. Now a 400 in the house shape.
#[test]
fn a_url_over_64_kib_is_answered_400() {
    let url = format!("/v1/users?where={}", "a".repeat(70_000));
    let resp = raw(format!("GET {url} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes());
    assert_eq!(raw_status(&resp), 400, "{}", &resp[..resp.len().min(300)]);
    let body: Value = serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap_or("")).expect("a JSON body");
    assert_eq!(body["error"]["code"], "invalid_request");
    // Just under the limit, the route itself answers (its own bound on `where`).
    let url = format!("/v1/users?where={}", "a".repeat(60_000));
    let resp = raw(format!("GET {url} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes());
    assert_eq!(raw_status(&resp), 400);
    assert!(resp.contains("invalid_query"), "{}", &resp[..resp.len().min(300)]);
}

/// The same with a service token, over the routes only a service token may call
/// (collections, indexes, roles, account administration), which the user's run only
/// sees refused.
#[test]
fn schemathesis_finds_no_server_error_on_the_service_routes() {
    let _one = fuzz_lock();
    let dir = tempdir();
    let (doc, _) = document(dir.path());
    let mut ids = Vec::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            if op["security"] == json!([{"service_token": []}]) {
                ids.push(op["operationId"].as_str().unwrap().to_string());
            }
        }
    }
    assert!(ids.len() >= 15, "{ids:?}");
    let mut st = Command::new(tool("st"));
    st.current_dir(dir.path())
        .arg("run")
        .arg(format!("{}/v1/openapi.json", base()))
        .args(["--url", &base()])
        .args(["--header", &format!("Authorization: Bearer {}", service_token())])
        .args(["--checks", "not_a_server_error,response_schema_conformance,content_type_conformance,response_headers_conformance"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "3", "--seed", "19", "--no-shrink", "--workers", "1"])
        .args(["--request-timeout", "20", "--generation-database", "none", "--generation-with-security-parameters", "false"])
        .args(["--no-color", "--output-truncate", "false"])
        .env("HOME", dir.path());
    for id in &ids {
        st.args(["--include-operation-id", id]);
    }
    let (ok, out) = run(st, Duration::from_secs(240));
    assert!(ok, "schemathesis found problems:\n{out}");
    assert!(out.lines().any(|l| l.trim() == format!("Tested: {}", ids.len())), "{out}");
}

/// The runs above meet unknown collections and ids (404) and check only answers. Here,
/// anonymously (the `{}` security option) on a collection anyone may read, create in and
/// update, with a seeded document: real documents' answers must match their schemas, and
/// requests the document calls invalid must be refused (a document looser than the
/// server shows).
#[test]
fn schemathesis_on_an_open_collection_refuses_invalid_requests_and_answers_by_its_schema() {
    let _one = fuzz_lock();
    let dir = tempdir();
    let c = collection("openapi_open", json!({"create": ["public"], "default_acl": {"read": ["public"], "update": ["public"]}}));
    let id = create_doc(&c, None, json!({"title": "seed"}), None);
    let config = dir.path().join("schemathesis.toml");
    // A valid If-Match may name another version than the document's (412): that is
    // the state, not the schema, so 412 counts as accepting the request.
    std::fs::write(
        &config,
        format!(
            "[parameters]\n\"path.collection\" = \"{c}\"\n\"path.id\" = \"{id}\"\n\n[checks.positive_data_acceptance]\nexpected-statuses = [\"2xx\", \"3xx\", \"401\", \"403\", \"404\", \"409\", \"412\", \"429\"]\n"
        ),
    )
    .unwrap();
    let mut st = Command::new(tool("st"));
    st.current_dir(dir.path())
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{}/v1/openapi.json", base()))
        .args(["--url", &base()])
        // No positive_data_acceptance: what a valid request may name depends on the
        // database's state, which no schema holds (an ACL's `role:x` must exist: 400
        // unknown_principal; an If-Match must be the current version: 412).
        .args(["--checks", "not_a_server_error,response_schema_conformance,content_type_conformance,response_headers_conformance,negative_data_rejection"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "5", "--seed", "19", "--no-shrink", "--workers", "1"])
        .args(["--request-timeout", "20", "--generation-database", "none"])
        // The document routes; a list's `where`/`order` strings are checked by Postgres
        // (docs/query.md), which no schema can express: not listed here.
        .args(["--include-path-regex", r"^/v1/collections/\{collection\}/documents(/\{id\})?$"])
        .args(["--exclude-operation-id", "list_documents"])
        .args(["--no-color", "--output-truncate", "false"])
        .env("HOME", dir.path());
    let (ok, out) = run(st, Duration::from_secs(120));
    assert!(ok, "schemathesis found problems:\n{out}");
    assert!(out.lines().any(|l| l.trim() == "Tested: 5"), "{out}");
    // The seeded document is still there (anonymous callers may not delete it).
    assert_eq!(call("GET", &doc_path(&c, &id), None, None).status, 200);
}

/// Review (issue 19): the 400 for a head too large is read by a client that writes all
/// of its request before reading (no reset destroys it): a 2 MiB head, and a long URL
/// with a 1 MB body.
#[test]
fn a_too_large_head_is_answered_400_even_to_a_client_still_sending() {
    use std::io::{Read, Write};
    let send_all_then_read = |req: Vec<u8>| -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", env().proxy.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(&req).expect("the whole request is taken (read and discarded)");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    };
    let mut head = b"GET /v1/users HTTP/1.1\r\nHost: localhost\r\n".to_vec();
    for i in 0..2048 {
        head.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "a".repeat(1000)).as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    let resp = send_all_then_read(head);
    assert_eq!(raw_status(&resp), 400, "{}", &resp[..resp.len().min(300)]);
    assert!(resp.contains("invalid_request"), "{}", &resp[..resp.len().min(300)]);

    let mut req = format!("POST /v1/batch?x={} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n", "a".repeat(70_000)).into_bytes();
    req.extend(std::iter::repeat(b' ').take(1_000_000));
    let resp = send_all_then_read(req);
    assert_eq!(raw_status(&resp), 400, "{}", &resp[..resp.len().min(300)]);
    assert!(resp.contains("invalid_request"), "{}", &resp[..resp.len().min(300)]);
}
