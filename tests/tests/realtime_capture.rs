//! Live change feeds, the capture (issue 14, docs/realtime.md "Capture"), on a real
//! cluster with several connections: positions follow commit order (not transaction id
//! order), only committed work is captured, and the puller appends every committed
//! change exactly once even when its own transaction dies, when two of them race, and
//! across a restart; the capture worker appends without pulls, exactly once across its
//! own death, and ends when the feed is disabled or the extension dropped.
use pgbaas_testkit::{Cluster, DB};
use std::collections::BTreeSet;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

fn setup(db: &mut postgres::Client, collection: &str) {
    db.batch_execute(&format!("select baas.create_collection('{collection}')")).unwrap();
    // The first pull makes the publication, the second the slot (and a reset event).
    pull(db);
    pull(db);
}

/// This session's pulls peek the slot themselves and never launch the capture worker:
/// for the tests of the pull's own crash safety.
fn peek_only(db: &mut postgres::Client) {
    db.batch_execute("set baas.realtime_capture_worker = off").unwrap();
}

fn worker_pid(db: &mut postgres::Client) -> Option<i32> {
    db.query_opt("select pid from pg_stat_activity where backend_type = 'pgbaas realtime capture'", &[]).unwrap().map(|r| r.get(0))
}

/// Pull (as the proxies do, every 100 ms) until a capture worker holds the slot.
fn start_worker(db: &mut postgres::Client) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        pull(db);
        let held: bool = db
            .query_one(
                "select exists (select from pg_replication_slots r join pg_stat_activity a on a.pid = r.active_pid
                                 where a.backend_type = 'pgbaas realtime capture')",
                &[],
            )
            .unwrap()
            .get(0);
        if held {
            return;
        }
        assert!(Instant::now() < deadline, "no capture worker holds the slot");
        thread::sleep(Duration::from_millis(100));
    }
}

/// Wait (up to 20 s) for the capture worker to run (Some) or be gone (None).
fn wait_worker(db: &mut postgres::Client, running: bool) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pid = worker_pid(db);
        if pid.is_some() == running {
            return pid;
        }
        assert!(Instant::now() < deadline, "the capture worker is still {}", if running { "not running" } else { "running" });
        thread::sleep(Duration::from_millis(20));
    }
}

fn pull(db: &mut postgres::Client) -> i64 {
    db.query_one("select baas._realtime_pull()", &[]).unwrap().get::<_, Option<i64>>(0).expect("not locked")
}

/// Pull until a pull appends nothing more.
fn drain(db: &mut postgres::Client) -> i64 {
    let mut last = pull(db);
    loop {
        let next = pull(db);
        if next == last {
            return last;
        }
        last = next;
    }
}

fn insert(db: &mut impl postgres::GenericClient, collection: &str, n: i64) {
    db.execute(
        "insert into baas.documents (collection_id, id, data)
         select c.id, baas.uuid7(), jsonb_build_object('n', $2::bigint, 'xid', pg_current_xact_id()::text)
           from baas.collections c where c.name = $1",
        &[&collection, &n],
    )
    .unwrap();
}

/// The `n` of every captured insert into `collection`, in position order.
fn captured(db: &mut postgres::Client, collection: &str) -> Vec<i64> {
    db.query(
        "select (body -> 'new' -> 'data' ->> 'n')::bigint from baas.realtime_events
          where kind = 'doc' and collection = $1 and body ->> 'op' = 'insert' order by position",
        &[&collection],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Every captured insert carries its writer's 64-bit transaction id (the hub's snapshot
/// checks compare it with pg_current_snapshot()). 0.4.0 logged the xid of a writer that
/// began after the pull's statement started exactly 2^32 low.
fn xids_are_the_writers(db: &mut postgres::Client) {
    let wrong: Vec<(String, String)> = db
        .query(
            "select xid::text, body -> 'new' -> 'data' ->> 'xid' from baas.realtime_events
              where kind = 'doc' and body ->> 'op' = 'insert' and xid::text <> body -> 'new' -> 'data' ->> 'xid'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(wrong.is_empty(), "events logged with another transaction id than their writer's (logged, writer): {wrong:?}");
}

fn positions_are_gapless(db: &mut postgres::Client) {
    let (n, lo, hi): (i64, Option<i64>, Option<i64>) = {
        let r = db.query_one("select count(*), min(position), max(position) from baas.realtime_events", &[]).unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(Some(n), hi.zip(lo).map(|(h, l)| h - l + 1), "positions are 1..n without holes or repeats");
}

#[test]
fn positions_follow_commit_order_not_transaction_ids() {
    let cluster = Cluster::temporary().unwrap();
    let mut db = cluster.connect("postgres", DB).unwrap();
    setup(&mut db, "order");
    let mut a = cluster.connect("postgres", DB).unwrap();
    let mut b = cluster.connect("postgres", DB).unwrap();
    let mut ta = a.transaction().unwrap();
    insert(&mut ta, "order", 1); // A takes its transaction id first...
    let mut tb = b.transaction().unwrap();
    insert(&mut tb, "order", 2);
    tb.commit().unwrap(); // ...but B commits first.
    ta.commit().unwrap();
    drain(&mut db);
    assert_eq!(captured(&mut db, "order"), vec![2, 1], "B's change comes first: it committed first");
    let xids: Vec<String> = db
        .query("select xid::text from baas.realtime_events where kind = 'doc' order by position", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let xids: Vec<u64> = xids.iter().map(|x| x.parse().unwrap()).collect();
    assert!(xids[0] > xids[1], "and the event carries the writer's own transaction id: {xids:?}");
    positions_are_gapless(&mut db);
}

#[test]
fn rolled_back_work_is_not_captured() {
    let cluster = Cluster::temporary().unwrap();
    let mut db = cluster.connect("postgres", DB).unwrap();
    setup(&mut db, "rb");
    let mut t = db.transaction().unwrap();
    insert(&mut t, "rb", 1);
    t.rollback().unwrap();
    let mut t = db.transaction().unwrap();
    insert(&mut t, "rb", 2);
    t.batch_execute("savepoint s").unwrap();
    insert(&mut t, "rb", 3);
    t.batch_execute("rollback to savepoint s").unwrap();
    insert(&mut t, "rb", 4);
    t.commit().unwrap();
    drain(&mut db);
    assert_eq!(captured(&mut db, "rb"), vec![2, 4], "neither the rolled-back transaction nor the rolled-back savepoint");
}

#[test]
fn a_pull_that_dies_loses_and_doubles_nothing() {
    let cluster = Cluster::temporary().unwrap();
    let mut db = cluster.connect("postgres", DB).unwrap();
    peek_only(&mut db);
    setup(&mut db, "die");
    for n in 1..=5 {
        insert(&mut db, "die", n);
    }
    // A pull whose transaction rolls back after it read the slot and appended.
    let mut t = db.transaction().unwrap();
    let p: Option<i64> = t.query_one("select baas._realtime_pull()", &[]).unwrap().get(0);
    assert!(p.is_some());
    t.rollback().unwrap();
    for n in 6..=8 {
        insert(&mut db, "die", n);
    }
    // A pull killed in the middle of its transaction (the backend terminated).
    let mut victim = cluster.connect("postgres", DB).unwrap();
    peek_only(&mut victim);
    let pid: i32 = victim.query_one("select pg_backend_pid()", &[]).unwrap().get(0);
    victim.batch_execute("begin; select baas._realtime_pull();").unwrap();
    // With a timeout it waits until the backend is gone and its advisory lock released:
    // without one, the next pull could still find the lock held (a flaky NULL).
    db.execute("select pg_terminate_backend($1, 10000)", &[&pid]).unwrap();
    assert!(victim.batch_execute("commit").is_err(), "the victim's session is gone");
    // A pull that fails after the peek: an error raised in its transaction.
    let mut t = db.transaction().unwrap();
    t.query_one("select baas._realtime_pull()", &[]).unwrap();
    assert!(t.batch_execute("select 1 / 0").is_err());
    drop(t);
    for n in 9..=10 {
        insert(&mut db, "die", n);
    }
    drain(&mut db);
    assert_eq!(captured(&mut db, "die"), (1..=10).collect::<Vec<_>>(), "every change once, in order");
    positions_are_gapless(&mut db);
}

#[test]
fn concurrent_pullers_never_double() {
    let cluster = Cluster::temporary().unwrap();
    let mut db = cluster.connect("postgres", DB).unwrap();
    peek_only(&mut db);
    setup(&mut db, "race");
    let deadline = Instant::now() + Duration::from_secs(60);
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let mut c = cluster.connect("postgres", DB).unwrap();
            thread::spawn(move || {
                for i in 0..200 {
                    insert(&mut c, "race", w * 1000 + i);
                }
            })
        })
        .collect();
    let pullers: Vec<_> = (0..2)
        .map(|_| {
            let mut c = cluster.connect("postgres", DB).unwrap();
            peek_only(&mut c);
            thread::spawn(move || {
                let mut appended_while_locked_out = 0;
                while Instant::now() < deadline {
                    let r: Option<i64> = c.query_one("select baas._realtime_pull(7)", &[]).unwrap().get(0);
                    if r.is_none() {
                        appended_while_locked_out += 1;
                    }
                    let n: i64 = c.query_one("select count(*) from baas.realtime_events where kind = 'doc'", &[]).unwrap().get(0);
                    if n >= 400 {
                        break;
                    }
                }
                appended_while_locked_out
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    for p in pullers {
        p.join().unwrap();
    }
    drain(&mut db);
    let got = captured(&mut db, "race");
    assert_eq!(got.len(), 400, "every insert once");
    let distinct: BTreeSet<i64> = got.iter().copied().collect();
    assert_eq!(distinct.len(), 400, "no insert twice");
    // Each writer's own inserts commit in order, so they appear in order.
    for w in 0..2 {
        let mine: Vec<i64> = got.iter().copied().filter(|n| n / 1000 == w).collect();
        assert_eq!(mine, (0..200).map(|i| w * 1000 + i).collect::<Vec<_>>());
    }
    xids_are_the_writers(&mut db);
    positions_are_gapless(&mut db);
}

#[test]
fn events_survive_a_restart_and_capture_goes_on() {
    let dir = std::env::temp_dir().join(format!("pgbaas-realtime-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = pgbaas_testkit::free_port();
    let cluster = Cluster::open(&dir, port, false).unwrap();
    let mut db = cluster.connect("postgres", DB).unwrap();
    setup(&mut db, "restart");
    for n in 1..=3 {
        insert(&mut db, "restart", n);
    }
    drain(&mut db);
    // Appended, but the slot not yet advanced past them (the next pull does that).
    for n in 4..=5 {
        insert(&mut db, "restart", n);
    }
    pull(&mut db);
    insert(&mut db, "restart", 6); // committed, not yet pulled
    drop(db);
    cluster.stop().unwrap();
    drop(cluster);
    let cluster = Cluster::open(&dir, port, false).unwrap();
    let mut db = cluster.connect("postgres", DB).unwrap();
    insert(&mut db, "restart", 7);
    drain(&mut db);
    assert_eq!(captured(&mut db, "restart"), (1..=7).collect::<Vec<_>>(), "kept, and nothing lost or doubled across the restart");
    // A crash (immediate shutdown: no checkpoint, so the slot comes back from its last
    // saved position, behind what was appended).
    for n in 8..=9 {
        insert(&mut db, "restart", n);
    }
    pull(&mut db);
    pull(&mut db); // advances the slot past 8 and 9, in memory only
    insert(&mut db, "restart", 10);
    pull(&mut db);
    drop(db);
    let pid: i32 = std::fs::read_to_string(dir.join("data/postmaster.pid")).unwrap().lines().next().unwrap().trim().parse().unwrap();
    assert!(Command::new("kill").args(["-QUIT", &pid.to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.is_running() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    drop(cluster);
    let cluster = Cluster::open(&dir, port, false).unwrap();
    let mut db = cluster.connect("postgres", DB).unwrap();
    insert(&mut db, "restart", 11);
    drain(&mut db);
    assert_eq!(captured(&mut db, "restart"), (1..=11).collect::<Vec<_>>(), "nothing lost or doubled across a crash");
    let resets: i64 = db.query_one("select count(*) from baas.realtime_events where kind = 'reset'", &[]).unwrap().get(0);
    assert_eq!(resets, 1, "the slot survived: no second reset");
    positions_are_gapless(&mut db);
    drop(db);
    cluster.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_logical_wal_the_pull_names_the_setting_and_writers_go_on() {
    let dir = std::env::temp_dir().join(format!("pgbaas-realtime-replica-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = pgbaas_testkit::free_port();
    let cluster = Cluster::open(&dir, port, false).unwrap();
    cluster.stop().unwrap();
    drop(cluster);
    // The later line wins: a server as installed by default.
    let conf = dir.join("data/postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\nwal_level = replica\n");
    std::fs::write(&conf, text).unwrap();
    let cluster = Cluster::open(&dir, port, false).unwrap();
    let mut db = cluster.connect("postgres", DB).unwrap();
    db.batch_execute("select baas.create_collection('plain')").unwrap();
    insert(&mut db, "plain", 1);
    let err = db.query_one("select baas._realtime_pull()", &[]).unwrap_err();
    let err = err.as_db_error().expect("a database error");
    assert_eq!(err.code().code(), "55000");
    assert!(err.message().contains("wal_level = logical"), "{}", err.message());
    let status: serde_json::Value = db.query_one("select baas.realtime_status()", &[]).unwrap().get(0);
    assert_eq!(status["wal_level_ok"], false);
    drop(db);
    cluster.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// An idle database's capture worker takes no transaction ids and writes no WAL: its
/// checks in each 1 ms round are reads. Its check of the extension once took an id
/// (pgrx's `Spi::get_one` runs as an update), and the commit record was new WAL for
/// the next round to decode: ~300 empty transactions a second, 40% of a core, forever.
#[test]
fn an_idle_capture_worker_takes_no_transaction_ids() {
    // Autovacuum's ANALYZE of the fresh catalogs takes ids of its own.
    let cluster = Cluster::temporary_with_settings(true, "autovacuum = off").unwrap();
    let mut db = cluster.connect("postgres", DB).unwrap();
    setup(&mut db, "idle");
    start_worker(&mut db);
    let pid = worker_pid(&mut db).expect("a capture worker");
    thread::sleep(Duration::from_secs(1));
    // Each of these two reads takes one id itself.
    let xid = |db: &mut postgres::Client| -> i64 { db.query_one("select pg_current_xact_id()::text::bigint", &[]).unwrap().get(0) };
    let lsn = |db: &mut postgres::Client| -> i64 { db.query_one("select (pg_current_wal_insert_lsn() - '0/0')::bigint", &[]).unwrap().get(0) };
    let cpu = || -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let f: Vec<f64> = stat.rsplit_once(')').unwrap().1.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        // utime + stime in clock ticks (fields 14 and 15; state, the 3rd, is not a number).
        f[10] + f[11]
    };
    let (before, wal_before, cpu_before) = (xid(&mut db), lsn(&mut db), cpu());
    thread::sleep(Duration::from_secs(3));
    let (after, wal_after, cpu_after) = (xid(&mut db), lsn(&mut db), cpu());
    assert!(after - before < 10, "{} transaction ids in 3 s of an idle database", after - before);
    // The two reads' own commit records and little else (a spin wrote ~150 kB).
    assert!(wal_after - wal_before < 16384, "{} bytes of WAL in 3 s of an idle database", wal_after - wal_before);
    // Ticks are 10 ms: under 0.3 s of CPU in 3 s (a spin took ~1.2 s).
    assert!(cpu_after - cpu_before < 30.0, "the idle worker used {} ticks of CPU in 3 s", cpu_after - cpu_before);
    assert_eq!(worker_pid(&mut db), Some(pid), "the same worker ran all along");
    // And it still captures.
    insert(&mut db, "idle", 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while captured(&mut db, "idle").is_empty() {
        assert!(Instant::now() < deadline, "the idle worker captured nothing");
        thread::sleep(Duration::from_millis(50));
    }
}

/// pg_logical_emit_message is executable by PUBLIC: a role that can run SQL emits
/// messages under the prefixes it can guess. None becomes an event; the triggers' own
/// (under the owner-only secret) still do.
#[test]
fn a_plain_role_cannot_forge_events() {
    let cluster = Cluster::temporary().unwrap();
    let mut db = cluster.connect("postgres", DB).unwrap();
    setup(&mut db, "forge");
    db.batch_execute("create role mallory; grant baas_user to mallory; set role mallory").unwrap();
    let err = db.query("select prefix from baas._realtime_secret", &[]).unwrap_err();
    assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("42501"), "the secret is not readable: {err}");
    let forged = r#"{"kind":"doc","collection":"forge","body":{"id":"00000000-0000-0000-0000-000000000001","op":"insert","version":1,"old":null,"new":{"data":{"n":666}}}}"#;
    for prefix in ["baas", "baas:", "baas:0", "baas_rt"] {
        db.query_one("select pg_logical_emit_message(true, $1::text, $2::text)::text", &[&prefix, &forged]).unwrap();
    }
    db.batch_execute("reset role").unwrap();
    insert(&mut db, "forge", 1);
    drain(&mut db);
    assert_eq!(captured(&mut db, "forge"), vec![1], "only the real insert is an event");
    positions_are_gapless(&mut db);
}

/// A lagging capture appends a backlog larger than realtime_retention_bytes: retention
/// counts from the append, never deletes what the pull itself appended (no proxy read
/// it yet), and later prunes from the oldest end down to the bound, keeping the running
/// byte total exact.
#[test]
fn a_backlog_past_the_byte_bound_is_appended_whole_and_pruned_later() {
    let cluster = Cluster::temporary().unwrap();
    let mut db = cluster.connect("postgres", DB).unwrap();
    setup(&mut db, "backlog");
    db.batch_execute("update baas.settings set realtime_retention_bytes = 1048576").unwrap();
    // 400 events of about 4 KiB: 1.6 MiB, all committed before the pull.
    db.execute(
        "insert into baas.documents (collection_id, id, data)
         select c.id, baas.uuid7(), jsonb_build_object('n', g, 'pad', repeat('x', 4000))
           from baas.collections c, generate_series(1, 400) g where c.name = 'backlog'",
        &[],
    )
    .unwrap();
    // A new session: its first pull also runs retention.
    let mut puller = cluster.connect("postgres", DB).unwrap();
    let last = drain(&mut puller);
    assert_eq!(captured(&mut db, "backlog"), (1..=400).collect::<Vec<i64>>(), "the whole backlog is kept");
    // Later: the events are older than the 10 s kept whatever the bound.
    db.batch_execute("update baas.realtime_events set appended_at = appended_at - interval '1 minute'").unwrap();
    let deleted: i64 = db.query_one("select baas._realtime_prune($1)", &[&last]).unwrap().get(0);
    assert!(deleted > 0, "pruned");
    let (retained, sum, newest): (i64, i64, i64) = {
        let r = db
            .query_one(
                "select s.retained_bytes, (select sum(bytes)::bigint from baas.realtime_events),
                        (select max(position) from baas.realtime_events)
                   from baas._realtime_state s",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(retained, sum, "the running total is the table's");
    assert!(retained <= 1048576 && retained > 1048576 - 8192, "down to the bound, not past it: {retained}");
    assert_eq!(newest, last, "the newest events stay");
    positions_are_gapless(&mut db);
    // Never past keep_after, however far over the bound.
    db.batch_execute("update baas.settings set realtime_retention_bytes = 1048576; update baas._realtime_state set retained_bytes = 1099511627776").unwrap();
    let oldest: i64 = db.query_one("select min(position) from baas.realtime_events", &[]).unwrap().get(0);
    db.query_one("select baas._realtime_prune($1)", &[&(oldest + 9)]).unwrap();
    let after: i64 = db.query_one("select min(position) from baas.realtime_events", &[]).unwrap().get(0);
    assert_eq!(after, oldest + 10, "deleted up to keep_after and no further");
}

/// A transaction past baas.realtime_max_transaction_bytes becomes one reset naming its
/// size; the capture goes on after it. A large one under the cap is appended whole, in
/// several statements (positions stay gapless).
#[test]
fn a_transaction_past_the_cap_becomes_one_reset() {
    let cluster = Cluster::temporary().unwrap();
    let mut db = cluster.connect("postgres", DB).unwrap();
    setup(&mut db, "huge");
    // 12,000 small events in one transaction: more than one insert statement's chunk.
    db.execute(
        "insert into baas.documents (collection_id, id, data)
         select c.id, baas.uuid7(), jsonb_build_object('n', g) from baas.collections c, generate_series(1, 12000) g
          where c.name = 'huge'",
        &[],
    )
    .unwrap();
    drain(&mut db);
    assert_eq!(captured(&mut db, "huge"), (1..=12000).collect::<Vec<i64>>());
    positions_are_gapless(&mut db);
    // For the capture worker too: a server setting, which it reads on reload.
    db.batch_execute("alter system set baas.realtime_max_transaction_bytes = '64kB'").unwrap();
    db.batch_execute("select pg_reload_conf()").unwrap();
    thread::sleep(Duration::from_secs(1));
    db.execute(
        "insert into baas.documents (collection_id, id, data)
         select c.id, baas.uuid7(), jsonb_build_object('n', 100000 + g, 'pad', repeat('y', 1000))
           from baas.collections c, generate_series(1, 100) g where c.name = 'huge'",
        &[],
    )
    .unwrap();
    insert(&mut db, "huge", 200001);
    let last = drain(&mut db);
    let got = captured(&mut db, "huge");
    assert!(got.iter().all(|n| *n <= 12000 || *n == 200001), "none of the capped transaction's events");
    assert_eq!(got.last(), Some(&200001), "the next transaction is captured");
    let r = db
        .query_one(
            "select e.position, e.body, w.last_reset from baas.realtime_events e, baas._realtime_window() w
              where e.kind = 'reset' order by e.position desc limit 1",
            &[],
        )
        .unwrap();
    let (pos, body, last_reset): (i64, serde_json::Value, i64) = (r.get(0), r.get(1), r.get(2));
    assert_eq!(body["reason"], "capture_reset");
    assert_eq!(body["skipped_events"], 100);
    assert!(body["skipped_bytes"].as_i64().unwrap() > 100_000, "{body}");
    assert_eq!(last_reset, pos, "resuming before it is not exact");
    assert_eq!(pos, last - 1, "the reset stands where the transaction would have");
    positions_are_gapless(&mut db);
}

#[test]
fn the_capture_worker_appends_without_pulls_and_stops_when_disabled() {
    let cluster = Cluster::temporary().unwrap();
    let mut db = cluster.connect("postgres", DB).unwrap();
    setup(&mut db, "live");
    assert_eq!(worker_pid(&mut db), None, "making the slot launches nothing");
    start_worker(&mut db); // the slot is nobody's: a pull asks for the worker
    for n in 1..=20 {
        insert(&mut db, "live", n);
    }
    // No pull from here: the worker appends (and notifies) on its own.
    let deadline = Instant::now() + Duration::from_secs(20);
    while captured(&mut db, "live").len() < 20 {
        assert!(Instant::now() < deadline, "the worker appended {:?} of 1..=20", captured(&mut db, "live"));
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(captured(&mut db, "live"), (1..=20).collect::<Vec<_>>());
    // A pull while the worker runs returns once the worker passed the call's WAL: what
    // committed before it is in the log, as after a peek.
    insert(&mut db, "live", 21);
    let last = pull(&mut db);
    assert_eq!(captured(&mut db, "live"), (1..=21).collect::<Vec<_>>());
    let max: i64 = db.query_one("select max(position) from baas.realtime_events", &[]).unwrap().get(0);
    assert_eq!(last, max, "the pull returns the log's last position");
    let active: bool = db.query_one("select active from pg_replication_slots where slot_name like 'baas_rt_%'", &[]).unwrap().get(0);
    assert!(active, "the worker holds the slot");
    // realtime_disable() waits for the puller's lock, which the worker gives up.
    let dropped: bool = db.query_one("select baas.realtime_disable()", &[]).unwrap().get(0);
    assert!(dropped, "the slot is dropped although the worker held it");
    wait_worker(&mut db, false);
    insert(&mut db, "live", 22); // not captured: no slot
    // The next pulls make the publication and slot again, with a reset, and a worker.
    pull(&mut db);
    pull(&mut db);
    start_worker(&mut db);
    insert(&mut db, "live", 23);
    drain(&mut db);
    assert_eq!(captured(&mut db, "live"), (1..=21).chain([23]).collect::<Vec<_>>());
    let resets: i64 = db.query_one("select count(*) from baas.realtime_events where kind = 'reset'", &[]).unwrap().get(0);
    assert_eq!(resets, 2, "the first slot's reset and the new one's");
    positions_are_gapless(&mut db);
    // Dropping the extension ends the worker (it checks every second).
    for sql in ["select baas.realtime_disable()", "select baas._realtime_pull()", "select baas._realtime_pull()"] {
        db.batch_execute(sql).unwrap(); // one transaction each: a slot is made by one without writes
    }
    wait_worker(&mut db, false);
    start_worker(&mut db);
    db.batch_execute("drop extension pgbaas cascade").unwrap();
    wait_worker(&mut db, false);
}

#[test]
fn killing_the_capture_worker_under_load_loses_and_doubles_nothing() {
    let cluster = Cluster::temporary().unwrap();
    let mut db = cluster.connect("postgres", DB).unwrap();
    setup(&mut db, "kill");
    start_worker(&mut db);
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let mut c = cluster.connect("postgres", DB).unwrap();
            thread::spawn(move || {
                for i in 0..300 {
                    let mut t = c.transaction().unwrap();
                    insert(&mut t, "kill", w * 1000 + i);
                    if i % 3 == 0 {
                        insert(&mut t, "kill", w * 1000 + 500 + i); // two events in one transaction
                    }
                    t.commit().unwrap();
                }
            })
        })
        .collect();
    // Kill the worker again and again while the writers write; a pull starts the next.
    let mut kills = 0;
    while writers.iter().any(|w| !w.is_finished()) || kills < 3 {
        if let Some(pid) = worker_pid(&mut db) {
            db.execute("select pg_terminate_backend($1, 10000)", &[&pid]).unwrap();
            kills += 1;
        }
        thread::sleep(Duration::from_millis(30));
        pull(&mut db);
        thread::sleep(Duration::from_millis(30));
    }
    for w in writers {
        w.join().unwrap();
    }
    drain(&mut db);
    let got = captured(&mut db, "kill");
    let distinct: BTreeSet<i64> = got.iter().copied().collect();
    assert_eq!(distinct.len(), got.len(), "no insert twice");
    assert_eq!(got.len(), 2 * 400, "every insert once");
    for w in 0..2 {
        let mine: Vec<i64> = got.iter().copied().filter(|n| n / 1000 == w).collect();
        let expect: Vec<i64> = (0..300).flat_map(|i| if i % 3 == 0 { vec![w * 1000 + i, w * 1000 + 500 + i] } else { vec![w * 1000 + i] }).collect();
        assert_eq!(mine, expect, "each writer's transactions in commit order, whole");
    }
    xids_are_the_writers(&mut db);
    positions_are_gapless(&mut db);
}
