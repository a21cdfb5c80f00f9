//! Schedules with pg_cron (issue 18, package E; docs/schedules.md): a real cluster that
//! preloads pg_cron (Debian's postgresql-15-cron, installed by tests/scripts/install-deps.sh)
//! runs jobs a DBA scheduled — the team's own policy (expire anonymous accounts) and
//! pgbaas's housekeeping in place of the proxy's — and cron.job_run_details shows them
//! succeed. pg_cron's granularity is a minute: the test waits at most 75 s.

use pgbaas_testkit::{pg_bindir, Cluster, DB};
use std::process::Command;
use std::time::{Duration, Instant};

/// pg_cron must be installed: a machine without it fails here, pointing at the fix,
/// rather than skipping what this file is for.
fn require_pg_cron() {
    let pg_config = pg_bindir().join("pg_config");
    let out = Command::new(&pg_config).arg("--pkglibdir").output().expect("run pg_config --pkglibdir");
    let libdir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let so = std::path::Path::new(&libdir).join("pg_cron.so");
    assert!(
        so.exists(),
        "pg_cron is not installed ({} is missing): run tests/scripts/install-deps.sh (it installs postgresql-15-cron)",
        so.display()
    );
}

fn cluster() -> Cluster {
    require_pg_cron();
    // Jobs run in background workers (no connection, so no password, to the server).
    Cluster::temporary_with_settings(
        true,
        &format!(
            "shared_preload_libraries = 'pg_cron'\ncron.database_name = '{DB}'\ncron.use_background_workers = on\nmax_worker_processes = 32"
        ),
    )
    .expect("start a Postgres cluster that preloads pg_cron")
}

#[test]
fn pg_cron_runs_the_teams_jobs_and_housekeeping() {
    let c = cluster();
    let mut db = c.connect("postgres", DB).unwrap();
    db.batch_execute("create extension pg_cron").unwrap();

    // Two anonymous accounts: one idle for two hours, one just made.
    db.batch_execute("update baas.settings set anonymous_sign_in = true").unwrap();
    let idle: String = db.query_one("select baas.sign_in_anonymously() -> 'user' ->> 'id'", &[]).unwrap().get(0);
    let fresh: String = db.query_one("select baas.sign_in_anonymously() -> 'user' ->> 'id'", &[]).unwrap().get(0);
    db.execute(
        "update baas.users set created_at = now() - interval '2 hours' where id = $1::text::uuid",
        &[&idle],
    )
    .unwrap();
    db.execute(
        "update baas.sessions set created_at = now() - interval '2 hours', last_used_at = now() - interval '2 hours'
          where user_id = $1::text::uuid",
        &[&idle],
    )
    .unwrap();
    // A session that ended two days ago: housekeeping's.
    let ended: String = db.query_one("select baas.signup('cron-ended@example.test', 'long enough pw') -> 'user' ->> 'id'", &[]).unwrap().get(0);
    db.execute("update baas.sessions set expires_at = now() - interval '2 days' where user_id = $1::text::uuid", &[&ended]).unwrap();

    // As docs/schedules.md shows: every minute here, for the test.
    let purge: i64 = db
        .query_one("select cron.schedule('purge-anonymous', '* * * * *', $$select baas.purge_anonymous_users('1 hour')$$)", &[])
        .unwrap()
        .get(0);
    let hk: i64 = db
        .query_one("select cron.schedule('pgbaas-housekeeping', '* * * * *', $$select baas.housekeeping()$$)", &[])
        .unwrap()
        .get(0);

    let deadline = Instant::now() + Duration::from_secs(75);
    loop {
        let ok: i64 = db
            .query_one(
                "select count(distinct jobid) from cron.job_run_details where jobid = any($1) and status = 'succeeded'",
                &[&vec![purge, hk]],
            )
            .unwrap()
            .get(0);
        if ok == 2 {
            break;
        }
        if Instant::now() > deadline {
            let runs: Vec<String> = db
                .query("select format('%s %s %s', jobid, status, return_message) from cron.job_run_details", &[])
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            panic!("both jobs did not succeed within 75 s; runs: {runs:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    let exists = |db: &mut postgres::Client, sql: &str, id: &str| -> bool { db.query_one(sql, &[&id]).unwrap().get(0) };
    assert!(!exists(&mut db, "select exists (select from baas.users where id = $1::text::uuid)", &idle), "the idle anonymous account is gone");
    assert!(exists(&mut db, "select exists (select from baas.users where id = $1::text::uuid)", &fresh), "the fresh one stays");
    assert!(
        !exists(&mut db, "select exists (select from baas.sessions where user_id = $1::text::uuid)", &ended),
        "pg_cron's housekeeping removed the ended session"
    );
    let command: String = db
        .query_one("select command from cron.job_run_details where jobid = $1 and status = 'succeeded' limit 1", &[&purge])
        .unwrap()
        .get(0);
    assert_eq!(command, "select baas.purge_anonymous_users('1 hour')", "cron.job_run_details shows what ran");

    // Unscheduling stops it.
    db.batch_execute("select cron.unschedule('purge-anonymous'); select cron.unschedule('pgbaas-housekeeping')").unwrap();
    let left: i64 = db.query_one("select count(*) from cron.job", &[]).unwrap().get(0);
    assert_eq!(left, 0);
}
