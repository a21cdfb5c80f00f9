//! Failover (issue 19, F): a three-node Patroni cluster with etcd and synchronous
//! replication (tests/src/patroni.rs), and the real proxy given every node in one
//! database URL (`host=a,b,c port=... target_session_attrs=read-write`). The primary's
//! Patroni and Postgres are killed with SIGKILL under a write load from several
//! clients: the proxy finds the new primary by itself (no restart, no configuration
//! change), clients see 503 with Retry-After meanwhile (never a 500 or a dropped
//! request), every write that was acknowledged with 201 is on the new primary with its
//! content, and the proxy's own connections (key listener, live-feed capture) follow
//! to the new primary.

use pgbaas_testkit::patroni::{Patroni, WriteLoad};
use pgbaas_testkit::{Proxy, DB};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The bound the proxy must follow the new primary within, from the kill: Patroni's
/// ttl (10 s) for the leader key to expire, a loop or two to promote, and a generous
/// margin for a loaded machine. Not a speed figure: `pgbaas-bench --failover` measures.
const FOLLOW_WITHIN: Duration = Duration::from_secs(60);

#[test]
fn the_proxy_follows_a_new_primary_and_no_acknowledged_write_is_lost() {
    let cluster = Patroni::start(3).expect("start etcd and three Patroni nodes");
    let first = cluster.primary().expect("a primary");
    let tokens = cluster.writers(4).unwrap();
    let proxy = Proxy::start(&cluster.authenticator_url(), &["--pool-size", "8", "--pool-timeout-secs", "5"]).expect("start the proxy with every node");
    let load = WriteLoad::start(&proxy.base(), &tokens);

    // Writes flow through the first primary...
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.acked() < 100 {
        assert!(Instant::now() < deadline, "writes did not flow before the kill: {:?}", load.log.lock().unwrap().refused.last());
        std::thread::sleep(Duration::from_millis(50));
    }
    // ... until its machine dies.
    let resets = |i: usize| -> i64 {
        let mut db = cluster.connect(i, "postgres", DB).unwrap();
        db.query_one("select count(*) from baas.realtime_events where kind = 'reset'", &[]).unwrap().get(0)
    };
    let resets_before = resets(first);
    // Synchronous replication is in effect for the proxy's writes: a standby is the
    // synchronous one, and its role's commits wait for it (else "no acknowledged write
    // lost" below would hold only by luck on one machine).
    {
        let mut db = cluster.connect(first, "postgres", DB).unwrap();
        let sync: i64 = db.query_one("select count(*) from pg_stat_replication where sync_state in ('sync', 'quorum')", &[]).unwrap().get(0);
        let names: String = db.query_one("show synchronous_standby_names", &[]).unwrap().get(0);
        let commit: String = db
            .query_one(
                "select coalesce((select split_part(c, '=', 2) from pg_db_role_setting s, unnest(s.setconfig) c
                   where s.setrole = 'baas_authenticator'::regrole and c like 'synchronous_commit=%' limit 1),
                  current_setting('synchronous_commit'))",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(sync >= 1 && !names.is_empty(), "no synchronous standby before the kill (synchronous_standby_names {names:?})\n{}", cluster.logs());
        assert!(["on", "remote_write", "remote_apply"].contains(&commit.as_str()), "the proxy's commits do not wait for the standby: synchronous_commit = {commit}");
    }
    cluster.kill(first);
    let killed = Instant::now();
    let second = cluster.wait_primary(FOLLOW_WITHIN, Some(first)).expect("Patroni promotes a standby");

    // The proxy follows by itself: writes sent since are acknowledged again, and keep
    // being.
    let followed = loop {
        if let Some(t) = load.log.lock().unwrap().first_ack_after(killed) {
            break t;
        }
        if killed.elapsed() > FOLLOW_WITHIN {
            let l = load.log.lock().unwrap();
            panic!(
                "no write acknowledged within {FOLLOW_WITHIN:?} of the kill (new primary: node{second}); last refusals: {:?}\n{}",
                &l.refused[l.refused.len().saturating_sub(3)..],
                cluster.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_secs(2));
    let log = load.stop();
    let after = log.acked.iter().filter(|a| a.2 > followed).count();
    eprintln!(
        "failover: node{first} killed, node{second} promoted; first acknowledged write sent {:.1} s after the kill; {} writes acknowledged ({after} after), {} refused, {} unanswered",
        (followed - killed).as_secs_f64(),
        log.acked.len(),
        log.refused.len(),
        log.transport.len()
    );
    let mut messages = std::collections::BTreeMap::<String, usize>::new();
    for (_, _, body, _) in &log.refused {
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        *messages.entry(v["error"]["message"].as_str().unwrap_or(body).to_string()).or_default() += 1;
    }
    eprintln!("failover: refusals by message: {messages:?}");
    assert!(after >= 10, "writes kept failing after the first one succeeded on the new primary: {after} acknowledged since");

    // What clients saw meanwhile: 503 with Retry-After, never a 500 or a dropped request.
    assert!(log.transport.is_empty(), "requests the proxy did not answer: {:?}", &log.transport[..log.transport.len().min(3)]);
    for (status, retry, body, _) in &log.refused {
        assert_eq!(*status, 503, "a write during the failover got {status}: {body}");
        assert!(retry.is_some(), "a 503 without Retry-After: {body}");
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        assert!(v["error"]["code"].is_string(), "a 503 without an error code: {body}");
    }

    // Synchronous replication: every acknowledged write is on the new primary, whole.
    let lost = cluster.lost_writes(second, &log).unwrap();
    assert!(lost.is_empty(), "{} of {} acknowledged writes lost at the failover: {:?}", lost.len(), log.acked.len(), &lost[..lost.len().min(5)]);

    // The proxy's own connections followed too: the key listener and the live-feed
    // capture run on the new primary, the capture with a new slot and a `reset` event
    // that tells subscribers changes may be missing (docs/operations.md, "High
    // availability and failover").
    let mut db = cluster.connect(second, "postgres", DB).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let names: Vec<String> = db
            .query("select application_name from pg_stat_activity where datname = $1 and application_name like 'pgbaas-proxy (%'", &[&DB])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let slot = db.query_opt("select 1 from pg_replication_slots where slot_name like 'baas_rt_%'", &[]).unwrap().is_some()
            && resets(second) > resets_before;
        if names.iter().any(|n| n == "pgbaas-proxy (keys)") && names.iter().any(|n| n == "pgbaas-proxy (realtime)") && slot {
            break;
        }
        assert!(Instant::now() < deadline, "the proxy's background connections did not follow to the new primary: {names:?}, live-feed slot and reset: {slot}");
        std::thread::sleep(Duration::from_millis(250));
    }
}
