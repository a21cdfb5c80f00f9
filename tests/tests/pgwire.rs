//! The proxy's wire client (proxy/src/pgwire.rs, pgconfig.rs), driven directly:
//! against a real Postgres with SCRAM, MD5, a clear-text password line and TLS (a CA
//! and a server certificate made by openssl here), and against a scripted fake server
//! (tests/src/fakepg.rs) for what a real one will not do on demand. The last tests
//! start the real proxy binary over TLS and with URLs it must refuse.

mod common;
use pgbaas_proxy::pgconfig::{connect_client, PgConfig};
use pgbaas_proxy::pgwire::{abandon, Conn, PgError};
use pgbaas_testkit::fakepg::{self, FakePg};
use pgbaas_testkit::{free_port, Cluster, Proxy, DB};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

struct Tls {
    cluster: Cluster,
    /// The CA that signed the server's certificate (for "localhost" only).
    ca: PathBuf,
    /// Another CA, which signed nothing the server has.
    other_ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// One cluster for this file: TLS on (a certificate for "localhost" signed by a CA of
/// our own), and pg_hba lines that ask `md5user` for an MD5 hash and `pwuser` for the
/// password in clear, from any address, encrypted or not.
fn tls() -> &'static Tls {
    static T: OnceLock<Tls> = OnceLock::new();
    sync(|| T.get_or_init(|| {
        let cluster = Cluster::temporary().expect("cluster");
        let certs = cluster.dir.join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        for ca in ["ca", "other"] {
            openssl(&certs, &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                "-subj", &format!("/CN=pgbaas test {ca}"), "-keyout", &format!("{ca}.key"), "-out", &format!("{ca}.crt")]);
        }
        openssl(&certs, &["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost",
            "-keyout", "server.key", "-out", "server.csr"]);
        std::fs::write(certs.join("ext"), "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n").unwrap();
        openssl(&certs, &["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", "ext", "-out", "server.crt"]);
        // The server reads its key as its own OS user, mode 0600.
        let data = cluster.data();
        let owner = std::fs::metadata(&data).unwrap();
        for f in ["server.crt", "server.key"] {
            let to = data.join(f);
            std::fs::copy(certs.join(f), &to).unwrap();
            std::os::unix::fs::chown(&to, Some(std::os::unix::fs::MetadataExt::uid(&owner)), Some(std::os::unix::fs::MetadataExt::gid(&owner))).unwrap();
            std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        }
        let hba_path = data.join("pg_hba.conf");
        let hba = std::fs::read_to_string(&hba_path).unwrap();
        let ours = "host all md5user 127.0.0.1/32 md5\nhost all pwuser 127.0.0.1/32 password\n";
        std::fs::write(&hba_path, hba.replacen("local all all trust\n", &format!("local all all trust\n{ours}"), 1)).unwrap();
        let mut admin = cluster.connect("postgres", DB).unwrap();
        admin
            .batch_execute(
                "set password_encryption = 'md5'; create role md5user login password 'md5secret';
                 reset password_encryption; create role pwuser login password 'pwsecret';",
            )
            .unwrap();
        // Each alone: a multi-statement string is one transaction, which ALTER SYSTEM refuses.
        admin.batch_execute("alter system set ssl = on").unwrap();
        admin.batch_execute("select pg_reload_conf()").unwrap();
        // The reload is taken by new sessions shortly after.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let on: String = cluster.connect("postgres", DB).unwrap().query_one("show ssl", &[]).unwrap().get(0);
            if on == "on" {
                break;
            }
            assert!(Instant::now() < deadline, "ssl did not turn on");
            std::thread::sleep(Duration::from_millis(100));
        }
        Tls { cluster, ca: certs.join("ca.crt"), other_ca: certs.join("other.crt") }
    }))
}

/// The blocking `postgres` client and test kit from inside the async tests (which run
/// on a multi-threaded runtime for this).
fn sync<T>(f: impl FnOnce() -> T) -> T {
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

fn cfg(url: &str) -> PgConfig {
    PgConfig::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// `key=value` URL to the test cluster as `user`, plus `extra`.
fn url(user: &str, password: &str, extra: &str) -> String {
    format!("host=127.0.0.1 port={} user={user} password={password} dbname={DB} {extra}", tls().cluster.port)
}

async fn one(c: &mut Conn, sql: &str) -> Option<String> {
    let row = c.run(&[(sql, &[])], 0).await.expect(sql).expect("a row");
    row.into_iter().next().flatten()
}

/// Whether this connection's own session is encrypted, as the server sees it.
async fn encrypted(c: &mut Conn) -> bool {
    one(c, "select ssl::text from pg_stat_ssl where pid = pg_backend_pid()").await.as_deref() == Some("true")
}

fn err_text(r: Result<Conn, PgError>) -> String {
    match r {
        Ok(_) => panic!("connected where it must be refused"),
        Err(e) => e.to_string(),
    }
}

fn authenticator_password() -> String {
    let url = sync(|| tls().cluster.authenticator_url().unwrap());
    url.split("baas_authenticator:").nth(1).unwrap().split('@').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_works_over_plain_tcp_and_over_tls() {
    let pw = authenticator_password();
    let mut c = Conn::connect(&cfg(&url("baas_authenticator", &pw, "sslmode=disable")), WAIT).await.unwrap();
    assert_eq!(one(&mut c, "select current_user::text").await.as_deref(), Some("baas_authenticator"));
    assert!(!encrypted(&mut c).await);
    // prefer (the default) takes TLS when the server offers it.
    let mut c = Conn::connect(&cfg(&url("baas_authenticator", &pw, "")), WAIT).await.unwrap();
    assert!(encrypted(&mut c).await);
    let e = err_text(Conn::connect(&cfg(&url("baas_authenticator", "wrong", "sslmode=disable")), WAIT).await);
    assert!(e.contains("28P01"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_and_clear_text_passwords_are_sent_only_over_tls() {
    for (user, pw, what) in [("md5user", "md5secret", "MD5"), ("pwuser", "pwsecret", "in clear")] {
        for mode in ["disable", "prefer"] {
            // prefer against a server with TLS is encrypted: allowed.
            let r = Conn::connect(&cfg(&url(user, pw, &format!("sslmode={mode}"))), WAIT).await;
            if mode == "prefer" {
                assert!(encrypted(&mut r.unwrap()).await);
                continue;
            }
            let e = err_text(r);
            assert!(e.contains(what) && e.contains("unencrypted") && e.contains("sslmode=require") && e.contains("scram-sha-256"), "{e}");
        }
        let mut c = Conn::connect(&cfg(&url(user, pw, "sslmode=require")), WAIT).await.unwrap();
        assert_eq!(one(&mut c, "select current_user::text").await.as_deref(), Some(user));
        assert!(encrypted(&mut c).await);
    }
    // The proxy's tokio-postgres connections (key loads, LISTEN) follow the same rule.
    let e = connect_client(&cfg(&url("md5user", "md5secret", "sslmode=disable")), WAIT).await.err().expect("refused").0;
    assert!(e.contains("MD5") && e.contains("sslmode=require"), "{e}");
    let (client, conn) = connect_client(&cfg(&url("md5user", "md5secret", "sslmode=require")), WAIT).await.unwrap();
    tokio::spawn(conn);
    let row = client.query_one("select ssl from pg_stat_ssl where pid = pg_backend_pid()", &[]).await.unwrap();
    assert!(row.get::<_, bool>(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_the_certificate_and_the_host_name() {
    let t = tls();
    let pw = authenticator_password();
    let ca = t.ca.display().to_string();
    let at = |host: &str, extra: &str| {
        format!("host={host} port={} user=baas_authenticator password={pw} dbname={DB} {extra}", t.cluster.port)
    };
    let mut c = Conn::connect(&cfg(&at("localhost", &format!("sslmode=verify-full sslrootcert={ca}"))), WAIT).await.unwrap();
    assert!(encrypted(&mut c).await);
    // The certificate names localhost, not 127.0.0.1.
    let e = err_text(Conn::connect(&cfg(&at("127.0.0.1", &format!("sslmode=verify-full sslrootcert={ca}"))), WAIT).await);
    assert!(e.contains("verify-full") && e.to_lowercase().contains("certificate"), "{e}");
    // hostaddr connects, host names the certificate.
    let mut c = Conn::connect(&cfg(&at("localhost", &format!("hostaddr=127.0.0.1 sslmode=verify-full sslrootcert={ca}"))), WAIT).await.unwrap();
    assert!(encrypted(&mut c).await);
    // verify-ca checks the chain only.
    Conn::connect(&cfg(&at("127.0.0.1", &format!("sslmode=verify-ca sslrootcert={ca}"))), WAIT).await.unwrap();
    // A CA that did not sign the server's certificate.
    let other = t.other_ca.display().to_string();
    for mode in ["verify-ca", "verify-full", "require"] {
        let e = err_text(Conn::connect(&cfg(&at("localhost", &format!("sslmode={mode} sslrootcert={other}"))), WAIT).await);
        assert!(e.to_lowercase().contains("certificate"), "{mode}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_are_tried_in_order_and_hostaddr_alone_works() {
    let t = tls();
    let pw = authenticator_password();
    let down = free_port();
    let u = format!("host=127.0.0.1,127.0.0.1 port={down},{} user=baas_authenticator password={pw} dbname={DB} sslmode=disable", t.cluster.port);
    let mut c = Conn::connect(&cfg(&u), WAIT).await.unwrap();
    assert_eq!(one(&mut c, "select current_database()::text").await.as_deref(), Some(DB));
    let u = format!("postgres://baas_authenticator:{pw}@127.0.0.1:{down},127.0.0.1:{}/{DB}?sslmode=disable", t.cluster.port);
    Conn::connect(&cfg(&u), WAIT).await.unwrap();
    // Every host down: the error names each.
    let e = err_text(Conn::connect(&cfg(&format!("host=127.0.0.1,127.0.0.1 port={down},{down} user=u sslmode=disable")), WAIT).await);
    assert_eq!(e.matches(&format!("127.0.0.1:{down}")).count(), 2, "{e}");
    let u = format!("hostaddr=127.0.0.1 port={} user=baas_authenticator password={pw} dbname={DB} sslmode=disable", t.cluster.port);
    Conn::connect(&cfg(&u), WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_session_attrs_read_write_skips_read_only_servers() {
    let pw = authenticator_password();
    // libpq counts a primary with default_transaction_read_only = on as read-only.
    let ro = url("baas_authenticator", &pw, "sslmode=disable target_session_attrs=read-write options='-c default_transaction_read_only=on'");
    let e = err_text(Conn::connect(&cfg(&ro), WAIT).await);
    assert!(e.contains("read-only"), "{e}");
    // The same server without target_session_attrs is accepted read-only.
    Conn::connect(&cfg(&url("baas_authenticator", &pw, "sslmode=disable options='-c default_transaction_read_only=on'")), WAIT).await.unwrap();
    // A standby first (scripted: it reports in_hot_standby = on), the primary second.
    let standby = FakePg::start(|c| {
        c.startup()?;
        let mut out = fakepg::auth(0, b"");
        out.extend(fakepg::parameter_status("in_hot_standby", "on"));
        out.extend(fakepg::parameter_status("default_transaction_read_only", "off"));
        out.extend(fakepg::ready());
        c.send(&out)?;
        c.read().map(|_| ())
    });
    let u = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=baas_authenticator password={pw} dbname={DB} sslmode=disable target_session_attrs=read-write",
        standby.port,
        tls().cluster.port
    );
    let mut c = Conn::connect(&cfg(&u), WAIT).await.unwrap();
    assert_eq!(one(&mut c, "select pg_is_in_recovery()::text").await.as_deref(), Some("false"));
}

fn active(name: &str) -> Vec<String> {
    sync(|| {
        let mut admin = tls().cluster.connect("postgres", DB).unwrap();
        admin
            .query("select coalesce(state, '') from pg_stat_activity where application_name = $1", &[&name])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_request_is_cancelled_on_the_server() {
    let pw = authenticator_password();
    let name = format!("pgwire-cancel-{}", std::process::id());
    let mut c = Box::new(Conn::connect(&cfg(&url("baas_authenticator", &pw, &format!("sslmode=disable application_name={name}"))), WAIT).await.unwrap());
    let r = tokio::time::timeout(Duration::from_millis(500), c.run(&[("select pg_sleep(60)", &[])], 0)).await;
    assert!(r.is_err(), "pg_sleep(60) cannot have finished");
    assert_eq!(active(&name), ["active"]);
    abandon(c);
    // Without the CancelRequest the backend would sleep on for a minute (or at least the
    // 10 s an abandoned connection waits before it is closed). The 5 s bound is generous
    // for a loaded machine; a cancel takes milliseconds.
    let deadline = Instant::now() + Duration::from_secs(5);
    while active(&name).iter().any(|s| s == "active") {
        assert!(Instant::now() < deadline, "the abandoned statement still runs: {:?}", active(&name));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_the_bound_is_refused_and_cancelled() {
    let pw = authenticator_password();
    let name = format!("pgwire-large-{}", std::process::id());
    let c = cfg(&url("baas_authenticator", &pw, &format!("sslmode=disable application_name={name}")));
    let mut conn = Conn::connect_limited(&c, WAIT, 64 * 1024).await.unwrap();
    assert_eq!(one(&mut conn, "select repeat('x', 60000)").await.map(|s| s.len()), Some(60000));
    // Rows that add up past the bound, one at a time: a slow stream is stopped too.
    match conn.run(&[("select repeat('x', 1000) from generate_series(1, 1000000)", &[])], 0).await {
        Err(PgError::Db { code, detail, message, .. }) => {
            assert_eq!((code.as_str(), detail.as_deref()), ("54000", Some("response_too_large")));
            assert!(message.contains("max_result_bytes"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Still held (as the pool holds a connection until it next recycles it), its
    // backend is gone all the same: cancelled, and its socket closed at once.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !active(&name).is_empty() {
        assert!(Instant::now() < deadline, "the refused statement's backend is still there: {:?}", active(&name));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!conn.is_usable(), "a connection with answers unread is retired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_claiming_a_gigabyte_is_refused_before_it_is_buffered() {
    let fake = FakePg::start(|c| {
        c.accept()?;
        c.answer_prepare()?;
        c.until_sync()?;
        let mut out = fakepg::msg(b'2', b"");
        // DataRow header: 1 GiB announced, a few bytes sent, the connection kept open.
        out.extend([b'D']);
        out.extend((1u32 << 30).to_be_bytes());
        out.extend([0, 1, 0x3f, 0xff, 0xff, 0xf0, b'x', b'x']);
        c.send(&out)?;
        std::thread::sleep(Duration::from_secs(30));
        Ok(())
    });
    let mut conn = Conn::connect(&cfg(&format!("host=127.0.0.1 port={} user=u sslmode=disable", fake.port)), WAIT).await.unwrap();
    match conn.run(&[("select big", &[])], 0).await {
        Err(PgError::Db { code, detail, .. }) => assert_eq!((code.as_str(), detail.as_deref()), ("54000", Some("response_too_large"))),
        other => panic!("{other:?}"),
    }
    assert!(!conn.is_usable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_scram_server_signature_is_refused() {
    use base64::Engine;
    for skip_signature in [false, true] {
        let fake = FakePg::start(move |c| {
            let b64 = base64::engine::general_purpose::STANDARD;
            c.startup()?;
            c.send(&fakepg::auth(10, b"SCRAM-SHA-256\0\0"))?;
            let (_, body) = c.read()?;
            let text = String::from_utf8_lossy(&body).into_owned();
            let nonce = text.split("r=").nth(1).unwrap_or("").to_string();
            let first = format!("r={nonce}serverpart,s={},i=4096", b64.encode(b"saltsaltsalt"));
            c.send(&fakepg::auth(11, first.as_bytes()))?;
            c.read()?;
            if skip_signature {
                c.send(&fakepg::auth(0, b""))?;
            } else {
                // A server that does not know the password cannot sign: any other bytes.
                c.send(&fakepg::auth(12, format!("v={}", b64.encode([7u8; 32])).as_bytes()))?;
            }
            c.send(&fakepg::auth(0, b""))?;
            c.send(&fakepg::ready())
        });
        let e = err_text(Conn::connect(&cfg(&format!("host=127.0.0.1 port={} user=u password=p sslmode=disable", fake.port)), WAIT).await);
        assert!(e.contains("SCRAM") || e.contains("signature"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_message_fails_cleanly_and_the_next_one_works() {
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    let fake = FakePg::start(move |c| {
        let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
        c.accept()?;
        c.answer_prepare()?;
        c.until_sync()?;
        let mut out = fakepg::msg(b'2', b"");
        let row = fakepg::data_row(&[b"hello"]);
        if first {
            out.extend(&row[..row.len() - 3]);
            return c.send(&out); // and the connection closes
        }
        out.extend(row);
        out.extend(fakepg::command_complete("SELECT 1"));
        out.extend(fakepg::ready());
        c.send(&out)?;
        c.read().map(|_| ())
    });
    let c = cfg(&format!("host=127.0.0.1 port={} user=u sslmode=disable", fake.port));
    let mut conn = Conn::connect(&c, WAIT).await.unwrap();
    match conn.run(&[("select x", &[])], 0).await {
        Err(PgError::Conn(m)) => assert!(m.contains("closed"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(!conn.is_usable(), "a cut connection is not pooled again");
    let mut conn = Conn::connect(&c, WAIT).await.unwrap();
    assert_eq!(one(&mut conn, "select x").await.as_deref(), Some("hello"));
    assert!(conn.is_usable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_falls_back_only_when_the_server_says_no_tls() {
    let fake = FakePg::start(|c| {
        c.accept()?;
        c.read().map(|_| ())
    });
    let at = |mode: &str| cfg(&format!("host=127.0.0.1 port={} user=u sslmode={mode}", fake.port));
    Conn::connect(&at("prefer"), WAIT).await.unwrap();
    let e = err_text(Conn::connect(&at("require"), WAIT).await);
    assert!(e.contains("does not accept TLS") && e.contains("sslmode=require"), "{e}");
}

#[test]
fn the_proxy_runs_over_verify_full_and_refuses_urls_it_cannot_honour() {
    let t = tls();
    let url = t.cluster.authenticator_url().unwrap().replace("@127.0.0.1:", "@localhost:");
    let name = format!("pgwire-proxy-{}", std::process::id());
    let full = format!("{url}?sslmode=verify-full&sslrootcert={}&application_name={name}", t.ca.display());
    let p = Proxy::start(&full, &["--pool-size", "2"]).expect("the proxy starts over verify-full");
    let signup = ureq::post(&format!("{}/v1/auth/signup", p.base()))
        .set("Content-Type", "application/json")
        .send_string(&format!(r#"{{"email": "tls-{}@example.com", "password": "correct horse battery"}}"#, std::process::id()));
    assert_eq!(signup.map(|r| r.status()).unwrap_or_else(|e| panic!("{e}")), 201);
    // Every connection of the proxy (requests, keys, LISTEN) is encrypted.
    let mut admin = t.cluster.connect("postgres", DB).unwrap();
    let rows = admin
        .query(
            "select a.application_name, s.ssl from pg_stat_activity a join pg_stat_ssl s using (pid) where a.application_name like $1",
            &[&format!("{name}%")],
        )
        .unwrap();
    assert!(rows.len() >= 2, "requests' and keys' connections: {}", rows.len());
    for r in &rows {
        assert!(r.get::<_, bool>(1), "{} is not encrypted", r.get::<_, String>(0));
    }
    drop(p);
    // Refused at start, with the setting named, instead of failing every request.
    for (bad, why) in [("sslmode=verify-full", "sslrootcert"), ("sslmode=allow", "sslmode"), ("load_balance_hosts=random", "load_balance_hosts")] {
        let out = Command::new(pgbaas_testkit::proxy_bin())
            .args(["--listen", &format!("127.0.0.1:{}", free_port()), "--database-url", &format!("{url}?{bad}")])
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn a_result_over_max_result_bytes_is_a_clear_error_and_the_pool_goes_on() {
    use serde_json::json;
    let e = common::env();
    let p = Proxy::start(&e.cluster.authenticator_url().unwrap(), &["--pool-size", "1", "--max-result-bytes", "65536"]).unwrap();
    let u = common::signup("large");
    let c = common::collection("large", json!({}));
    let big = "x".repeat(30_000);
    let id = common::create_doc(&c, Some(&u.access), json!({"big": big}), None);
    for _ in 0..2 {
        common::create_doc(&c, Some(&u.access), json!({"big": big}), None);
    }
    // One document over the proxy's bound: the proxy refuses the row it announces.
    let huge = common::create_doc(&c, Some(&u.access), json!({"big": "y".repeat(70_000)}), None);
    let one = common::request_at(&p.base(), "GET", &common::doc_path(&c, &huge), Some(&u.access), &[], None);
    assert_eq!((one.status, one.code()), (400, "response_too_large"), "{:.300}", one.body.to_string());
    assert!(one.body["error"]["message"].as_str().unwrap_or("").contains("max_result_bytes"), "{:.300}", one.body.to_string());
    // The one connection was retired; the next request gets a new one. A list of the
    // 30 KB documents is ended in Postgres under the proxy's bound (15/16 of it),
    // with next, rather than refused.
    let list = common::request_at(&p.base(), "GET", &format!("{}?order=big", common::docs_path(&c)), Some(&u.access), &[], None);
    assert_eq!(list.status, 200, "{:.300}", list.body.to_string());
    assert_eq!(list.body["items"].as_array().map(Vec::len), Some(2), "{:.300}", list.body.to_string());
    assert!(list.body["next"].is_string(), "{:.300}", list.body.to_string());
    let one = common::request_at(&p.base(), "GET", &common::doc_path(&c, &id), Some(&u.access), &[], None);
    assert_eq!(one.status, 200, "{:.300}", one.body.to_string());
    assert_eq!(one.body["data"]["big"].as_str().map(str::len), Some(30_000));
}

/// A backend that can no longer run the extension (its library replaced under it,
/// tests/tests/heal.rs) answers every call with the same error: the connection says so
/// and is not reused; an ordinary error leaves it in the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_can_no_longer_run_the_extension_retires_its_connection() {
    let error = |code: &str, message: &str| {
        let mut body = format!("SERROR\0C{code}\0M{message}\0").into_bytes();
        body.push(0);
        let mut out = fakepg::msg(b'E', &body);
        out.extend(fakepg::ready());
        out
    };
    let fake = FakePg::start(move |c| {
        c.accept()?;
        c.answer_prepare()?;
        c.until_sync()?;
        c.send(&error("23505", "duplicate key value violates unique constraint"))?;
        c.until_sync()?;
        c.send(&error("XX000", "unrecognized function API version: 1650549107"))?;
        std::thread::sleep(Duration::from_secs(5));
        Ok(())
    });
    let mut conn = Conn::connect(&cfg(&format!("host=127.0.0.1 port={} user=u sslmode=disable", fake.port)), WAIT).await.unwrap();
    let r = conn.run(&[("select f()", &[])], 0).await;
    assert!(matches!(&r, Err(PgError::Db { code, .. }) if code == "23505"), "{r:?}");
    assert!(!conn.is_stale() && conn.is_usable(), "an ordinary error keeps the connection");
    let r = conn.run(&[("select f()", &[])], 0).await;
    assert!(matches!(&r, Err(PgError::Db { code, .. }) if code == "XX000"), "{r:?}");
    assert!(conn.is_stale(), "the request may run again on another connection");
    assert!(!conn.is_usable(), "never back into the pool");
}
