//! The README's "A first session" runs as written, top to bottom, against the README's
//! run command (`pgbaas-dev run`, what `make run` starts): its `sh` blocks as one bash
//! script (`curl -f` fails on any HTTP error the text does not expect), its `sql` blocks
//! through psql as the DBA. Only the ports are changed, to free ones.

use pgbaas_testkit::{free_port, http_status, workspace_root};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The fenced blocks of one README section, in order: (language, text).
fn section_blocks(readme: &str, heading: &str) -> Vec<(String, String)> {
    let start = readme.find(heading).unwrap_or_else(|| panic!("README has no {heading:?}"));
    let rest = &readme[start + heading.len()..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if let Some(lang) = line.strip_prefix("```") {
            let mut text = String::new();
            for l in lines.by_ref() {
                if l.starts_with("```") {
                    break;
                }
                text.push_str(l);
                text.push('\n');
            }
            blocks.push((lang.trim().to_string(), text));
        }
    }
    blocks
}

#[test]
fn readme_first_session_runs_as_written() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let blocks = section_blocks(&readme, "## A first session");
    assert!(blocks.iter().filter(|(l, _)| l == "sh").count() >= 2, "the section lost its shell examples");
    assert!(blocks.iter().any(|(l, _)| l == "sql"), "the section lost its SQL example");

    let dir = std::env::temp_dir().join(format!("pgbaas-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (http, pg) = (free_port(), free_port());
    let mut run = Command::new(env!("CARGO_BIN_EXE_pgbaas-dev"))
        .arg("run")
        .env("PGBAAS_DATA_DIR", &dir)
        .env("PGBAAS_HTTP_PORT", http.to_string())
        .env("PGBAAS_PG_PORT", pg.to_string())
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while http_status(http, "/healthz") != Some(200) {
        assert!(Instant::now() < deadline, "pgbaas-dev run never became healthy");
        std::thread::sleep(Duration::from_millis(200));
    }

    // One script: shell blocks verbatim, SQL blocks fed to psql; the README's ports
    // replaced by this run's.
    let mut script = String::from("set -euo pipefail\n");
    for (lang, text) in &blocks {
        match lang.as_str() {
            "sh" => script.push_str(text),
            "sql" => {
                script.push_str("psql -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 54329 -U postgres pgbaas <<'README_SQL'\n");
                script.push_str(text);
                script.push_str("README_SQL\n");
            }
            other => panic!("unexpected block language {other:?} in the first session"),
        }
    }
    let script = script.replace("localhost:8080", &format!("127.0.0.1:{http}")).replace("-p 54329", &format!("-p {pg}"));
    let out = Command::new("bash").arg("-c").arg(&script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();

    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    let _ = run.wait();
    let _ = std::fs::remove_dir_all(&dir);

    assert!(out.status.success(), "the README session failed ({}):\n{stdout}\n{stderr}", out.status);
    // What the text promises along the way.
    assert!(stdout.contains("\"email\":\"ada@example.com\"") || stdout.contains("\"email\": \"ada@example.com\""), "{stdout}");
    assert!(stdout.contains("hello"), "the created note is listed: {stdout}");
    assert!(stdout.contains("\"notes\""), "the service token lists the collection: {stdout}");
    assert!(stdout.contains("grace@example.com"), "the DBA sees the account made in SQL: {stdout}");
    // The token is refused right after logout.
    // (curl prints bodies without a newline, so the status ends the line it is on.)
    assert!(stdout.contains("401\n"), "the token must be refused after logout: {stdout}");
}
