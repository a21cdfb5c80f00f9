//! The hub with its real SQL: the capture loops and a subscriber's start-up transaction,
//! snapshot, live events and a resume, against a throwaway cluster with the installed
//! extension. It needs Postgres and the release extension installed
//! (tests/scripts/build.sh), so tier 1 skips it (#[ignore]) and the test command runs it
//! after build.sh, in tier 4 (tests/scripts/test-all.sh):
//!
//!   cargo test --release -p pgbaas-proxy realtime::hub::db_tests -- --ignored
//!
//! What only it checks (the e2e files cover the rest through the proxy): a snapshot with
//! a filter and `fields` for an anonymous caller, a resume from after the log's end is a
//! `reset` retention, that the start-up's documents are read in the start snapshot
//! (`start_up` refuses otherwise, so a snapshot subscribe that succeeds here shows it),
//! and the read back of events at or before S that the snapshot did not see (`LATE`).

use super::*;
use crate::realtime::capture::Capture;
use crate::realtime::Caller;
use pingora::services::background::BackgroundService;
use serde_json::json;
use std::time::Instant;

fn frames(conn: &Conn) -> Vec<Value> {
    conn.outbox.drain().into_iter().map(|f| serde_json::from_slice(&f.json).unwrap()).collect()
}

/// Frames until `n` have come (or 10 s passed).
async fn wait_frames(conn: &Conn, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    while got.len() < n && Instant::now() < until {
        got.extend(frames(conn));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    got
}

/// A document of `u`'s, public or not; its id.
fn create(admin: &mut postgres::Client, u: &str, n: i64, public: bool) -> String {
    let acl = if public { json!({"read": ["public"]}) } else { json!({"read": []}) };
    let q = format!("select baas.create_document('rt', '{}'::jsonb, '{}'::jsonb) ->> 'id'", json!({"n": n, "x": "hidden"}), acl);
    let row = admin.query_one("select x #>> '{}' from baas.as_user($1::text::uuid, $2) x", &[&u, &q]).unwrap();
    row.get(0)
}

#[test]
#[ignore]
fn start_up_snapshot_live_and_resume_against_a_database() {
    let cluster = pgbaas_testkit::Cluster::temporary().expect("cluster");
    let url = cluster.authenticator_url().expect("authenticator");
    let mut admin = cluster.connect("postgres", pgbaas_testkit::DB).expect("superuser");
    admin.batch_execute("select baas.create_collection('rt')").unwrap();
    let u: String = admin.query_one("select baas.create_user('rt@example.test', 'long enough pw') ->> 'id'", &[]).unwrap().get(0);
    let _d1 = create(&mut admin, &u, 1, true);
    let d2 = create(&mut admin, &u, 2, true);
    let _d3 = create(&mut admin, &u, 3, false);
    // The first pull creates the slot and logs a capture reset (position 1); the
    // documents above came before it and are not in the log.
    for _ in 0..100 {
        admin.batch_execute("select baas._realtime_pull()").unwrap();
        let p: i64 = admin.query_one("select baas.realtime_position()", &[]).unwrap().get(0);
        if p >= 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let admin = std::sync::Mutex::new(Some(admin));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let pool = db::make_request_pool(&url, 4, Duration::from_secs(5), 16 << 20).unwrap();
        let timeouts = db::Timeouts { statement: "5000ms".into(), anon_statement: "1000ms".into(), answer: Duration::from_secs(20) };
        let hub = Arc::new(Hub::new(HubConfig::default(), Some(SqlAccess { pool, timeouts: Arc::new(timeouts) })));
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let capture = Arc::new(Capture { database_url: url.clone(), hub: hub.clone() });
        let c2 = capture.clone();
        tokio::spawn(async move { c2.start(shutdown).await });

        let anon = || Conn::new(Caller::new(None, "127.0.0.1".into(), "127.0.0.1".into()), 1 << 20);
        let a = anon();
        let sub = |resume: Option<u64>, snapshot: bool| Subscribe {
            sub: "s".into(),
            collection: "rt".into(),
            filter: json!({"n": {"$gte": 2}}),
            fields: Some(vec!["n".into()]),
            watch: None,
            snapshot,
            resume,
        };
        // The capture may still be creating its slot: retry a 503 for a while.
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            match hub.subscribe(&a, sub(None, true)).await {
                Ok(()) => break,
                Err(e) if e.code == "realtime_unavailable" && Instant::now() < until => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(e) => panic!("subscribe: {e:?}"),
            }
        }
        let first = frames(&a);
        assert_eq!(first.len(), 2, "{first:?}");
        assert_eq!(first[0]["type"], "snapshot");
        assert_eq!(first[0]["document"]["id"], d2.as_str());
        assert_eq!(first[0]["document"]["data"], json!({"n": 2}), "fields applied");
        assert_eq!(first[1]["type"], "subscribed");
        let s: u64 = first[1]["position"].as_str().unwrap().parse().unwrap();

        // Live: an insert that matches, one that is private, an update that leaves.
        let u2 = u.clone();
        let d2c = d2.clone();
        let mut admin = admin.lock().unwrap().take().unwrap();
        let admin = tokio::task::spawn_blocking(move || {
            let (u, d2) = (u2, d2c);
            let d4 = create(&mut admin, &u, 5, true);
            let _d5 = create(&mut admin, &u, 6, false);
            let q = format!("select baas.replace_document('rt', '{d2}', '{{\"n\": 0}}'::jsonb)");
            admin.query_one("select x from baas.as_user($1::text::uuid, $2) x", &[&u, &q]).unwrap();
            (admin, d4)
        })
        .await
        .unwrap();
        let live = wait_frames(&a, 2).await;
        let kinds: Vec<&str> = live.iter().map(|f| f["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["insert", "leave"], "{live:?}");
        assert_eq!(live[0]["document"]["data"], json!({"n": 5}));
        assert_eq!(live[1]["id"], d2.as_str());

        let (mut admin, d4) = admin;

        // A snapshot that held d4's insert as running, when the hub's recent events no
        // longer hold it: the start-up reads it back from the log, from the positions the
        // hub remembered for its xid, or from before the reader's start.
        let (mut admin, pos, logged) = tokio::task::spawn_blocking(move || {
            let row = admin
                .query_one("select position, xid::text from baas.realtime_events where body ->> 'id' = $1 order by position limit 1", &[&d4])
                .unwrap();
            let (pos, logged): (i64, String) = (row.get(0), row.get(1));
            (admin, pos, logged)
        })
        .await
        .unwrap();
        let logged: u64 = logged.parse().unwrap();
        let x = if logged > u64::MAX - (1 << 32) { logged.wrapping_add(1 << 32) } else { logged };
        let held = Start { position: hub.position(), snap: Snap::parse(&format!("{x}:{}:{x}", x + 1)).unwrap(), roles: vec![], nesting: vec![] };
        let saw = Start { snap: Snap::parse(&format!("{}:{}:", x + 1, x + 1)).unwrap(), ..held.clone() };
        {
            let mut st = hub.lock();
            st.recent.ring.clear();
            st.recent.evicted.insert(x, (pos as u64, pos as u64));
        }
        let late = hub.late_events(&held, "rt", None).await.unwrap();
        assert_eq!(late.iter().map(|e| e.position).collect::<Vec<_>>(), [pos as u64], "read back by its remembered positions");
        assert!(hub.late_events(&saw, "rt", None).await.unwrap().is_empty(), "a snapshot that saw it: nothing");
        {
            let mut st = hub.lock();
            st.recent.evicted.clear();
            st.recent.before_start = Some((pos as u64 + 1, vec![x].into()));
        }
        let late = hub.late_events(&held, "rt", None).await.unwrap();
        assert_eq!(late.iter().map(|e| e.position).collect::<Vec<_>>(), [pos as u64], "read back from before the reader's start");

        // A resume after the snapshot's position replays exactly those two.
        let b = anon();
        hub.subscribe(&b, sub(Some(s), false)).await.unwrap();
        let replay = wait_frames(&b, 3).await;
        assert_eq!(replay[0], json!({"type": "subscribed", "sub": "s", "position": s.to_string()}));
        assert_eq!(&replay[1..], &live[..], "the same events, the same positions");
        // Resuming from before the log's first event is exact too; from the future is not.
        let c = anon();
        hub.subscribe(&c, sub(Some(s + 1000), false)).await.unwrap();
        let r = frames(&c);
        assert_eq!(r[1]["type"], "reset", "{r:?}");
        assert_eq!(r[1]["reason"], "retention");

        // Errors before anything is sent.
        let e = hub.subscribe(&anon(), Subscribe { collection: "nope".into(), ..sub(None, false) }).await.unwrap_err();
        assert_eq!((e.status.as_u16(), e.code.as_str()), (404, "not_found"));
        tokio::task::spawn_blocking(move || admin.batch_execute("select baas.set_realtime('rt', false)").unwrap()).await.unwrap();
        let off = wait_frames(&a, 1).await;
        assert_eq!(off[0]["error"]["code"], "feed_disabled", "{off:?}");
        let e = hub.subscribe(&anon(), sub(None, false)).await.unwrap_err();
        assert_eq!((e.status.as_u16(), e.code.as_str()), (403, "feed_disabled"));
    });
}
