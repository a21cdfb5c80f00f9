//! The README's run command (after its build step): `pgbaas-dev run` creates the
//! embedded cluster, serves HTTP, stops both on SIGTERM, and reuses the data next time.
//! Also: the proxy refuses bad configuration at start-up.

use pgbaas_testkit::{free_port, http_status, proxy_bin};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn wait_for(mut f: impl FnMut() -> bool, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn post(port: u16, path: &str, body: &str) -> u16 {
    let r = ureq::post(&format!("http://127.0.0.1:{port}{path}"))
        .set("Content-Type", "application/json")
        .send_string(body);
    match r {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn run_serves_stops_cleanly_on_sigterm_and_keeps_data() {
    let dir = std::env::temp_dir().join(format!("pgbaas-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (http, pg) = (free_port(), free_port());
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_pgbaas-dev"))
            .arg("run")
            .env("PGBAAS_DATA_DIR", &dir)
            .env("PGBAAS_HTTP_PORT", http.to_string())
            .env("PGBAAS_PG_PORT", pg.to_string())
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let stop = |mut child: std::process::Child| {
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let mut status = None;
        assert!(wait_for(|| { status = child.try_wait().unwrap(); status.is_some() }, 30), "run did not stop on SIGTERM");
        assert!(status.unwrap().success(), "exit status {status:?}");
        // Both the proxy and Postgres are gone: their ports are free again.
        assert!(std::net::TcpListener::bind(("127.0.0.1", http)).is_ok(), "proxy still listening");
        assert!(std::net::TcpStream::connect(("127.0.0.1", pg)).is_err(), "postgres still listening");
    };

    let child = start();
    assert!(wait_for(|| http_status(http, "/healthz") == Some(200), 120), "run never became healthy");
    let body = r#"{"email":"runner@example.com","password":"long enough pw"}"#;
    assert_eq!(post(http, "/v1/auth/signup", body), 201);
    // Superuser postgres connects over loopback without a password.
    let mut c = postgres::Client::connect(&format!("postgres://postgres@127.0.0.1:{pg}/pgbaas"), postgres::NoTls).unwrap();
    let n: i64 = c.query_one("select count(*) from baas.users", &[]).unwrap().get(0);
    assert_eq!(n, 1);
    drop(c);
    stop(child);

    // Second run: same data, the account still signs in.
    let child = start();
    assert!(wait_for(|| http_status(http, "/healthz") == Some(200), 60));
    assert_eq!(post(http, "/v1/auth/login", body), 200);
    assert_eq!(post(http, "/v1/auth/signup", body), 409);
    stop(child);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn proxy_refuses_bad_configuration() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(proxy_bin());
        c.args(args).env_remove("DATABASE_URL");
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let url = "postgres://baas_authenticator@127.0.0.1:1/pgbaas";
    let (code, err) = run(&["--database-url", url, "--body-limit", "5"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("body_limit"), "{err}");
    let (code, err) = run(&[], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("database_url is required"), "{err}");
    let (code, err) = run(&["--database-url", url, "--listen", "not-an-address"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("listen"), "{err}");
    // A config file with an unknown key, and flags beating env beating file.
    let f = std::env::temp_dir().join(format!("pgbaas-conf-{}.toml", std::process::id()));
    std::fs::write(&f, "listen = \"127.0.0.1:1\"\nbodylimit = 3\n").unwrap();
    let (code, err) = run(&["--config", f.to_str().unwrap(), "--database-url", url], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("bodylimit"), "{err}");
    std::fs::write(&f, "body_limit = 5\n").unwrap();
    let (code, err) = run(&["--config", f.to_str().unwrap()], &[("DATABASE_URL", url), ("PGBAAS_BODY_LIMIT", "7")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("got 7"), "env must win over the file: {err}");
    let _ = std::fs::remove_file(&f);
}
