//! SQL regression tier: every sql/tests/*.sql file is a pgTAP script run by psql
//! against a fresh cluster with the extension. A file passes when psql succeeds, every
//! planned test ran, and none said "not ok".

use pgbaas_testkit::{pg_bindir, workspace_root, Cluster, DB};
use std::process::Command;

#[test]
fn sql_regression_files_pass() {
    let cluster = Cluster::temporary().expect("cluster");
    let mut admin = cluster.connect("postgres", DB).unwrap();
    admin
        .batch_execute("create extension if not exists pgtap")
        .expect("pgTAP is needed for the SQL tests (Debian: postgresql-15-pgtap)");
    let mut files: Vec<_> = std::fs::read_dir(workspace_root().join("sql/tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    // Shared helper functions, loaded into each file's session first.
    let helpers = workspace_root().join("sql/tests/helpers.psql");
    assert!(!files.is_empty(), "no SQL test files found");
    let mut failures = Vec::new();
    let mut total = 0;
    for f in &files {
        let out = Command::new(pg_bindir().join("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(cluster.url("postgres", DB))
            .arg("-f")
            .arg(&helpers)
            .arg("-f")
            .arg(f)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let planned: usize = stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("1..").and_then(|n| n.parse().ok()))
            .unwrap_or(0);
        let ok = stdout.lines().filter(|l| l.trim_start().starts_with("ok ")).count();
        let not_ok: Vec<&str> = stdout.lines().filter(|l| l.trim_start().starts_with("not ok")).collect();
        let name = f.file_name().unwrap().to_string_lossy();
        println!("{name}: {ok}/{planned} ok");
        total += ok;
        if !out.status.success() || planned == 0 || ok != planned || !not_ok.is_empty() {
            failures.push(format!("{name}: psql {}, {ok}/{planned} ok\n{stdout}\n{stderr}", out.status));
        }
    }
    assert!(failures.is_empty(), "SQL regression failures:\n{}", failures.join("\n"));
    println!("{total} SQL assertions passed in {} files", files.len());
}
