//! `baas._realtime_pull`: moves captured changes from the logical replication slot into
//! `baas.realtime_events` (sql/realtime.sql; docs/realtime.md, "Capture").
//!
//! Exactly once, although a slot's advance is not transactional: the slot is only ever
//! *peeked*; the end LSN of the last transaction appended is stored in
//! `baas._realtime_state` in the same transaction as the events, and the slot is
//! advanced to it at the start of the *next* pull. A pull that fails or is killed after
//! peeking leaves neither events nor a new LSN, so the next one reads the same
//! transactions again; a crash after a commit but before the slot's advance reached
//! disk makes the slot return transactions already appended, which are skipped by
//! their end LSN. A transaction is appended whole or not at all (the slot functions
//! stop only between transactions).

use super::realtime_worker;
use crate::realtime::pgoutput::{self, Txn};
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiResult};
use pgrx::PgSqlErrorCode;
use std::cell::Cell;
use std::time::{Duration, Instant};

/// pg_try_advisory_xact_lock key of the puller ("baasrt" 1); baas.realtime_disable()
/// takes it too.
pub(crate) const LOCK: i64 = 0x6261_6173_7274_0001;
const PUBLICATION: &str = "baas_realtime";
/// Retention runs at most this often (per backend; the proxies' leader loop calls from
/// one connection).
const PRUNE_EVERY: Duration = Duration::from_secs(1);

thread_local! {
    static LAST_PRUNE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// (LSN, last position) as this backend last left an idle slot: every transaction
    /// that committed before the LSN was decoded and none had anything to append, and
    /// the log ended at that position. While no WAL has been written since, nothing can
    /// have changed (an append writes WAL), so an idle call answers from here without a
    /// statement: the proxies call every ~2 ms.
    static IDLE_AT: Cell<Option<(i64, i64)>> = const { Cell::new(None) };
    static LAST_LAUNCH: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Every slot function call decodes again from the slot's restart LSN, which moves
/// only past a "running transactions" WAL record: the background writer logs one
/// every 15 s, so a busy database made each pull re-decode up to 15 s of WAL (measured:
/// 55 ms per pull at 2,400 creates/s, and writers 28-55% slower for the CPU it took).
/// When the restart LSN lags this far, a pull that has WAL to read logs one itself
/// (what PG 16's pg_log_standby_snapshot() does) before it peeks: the peek decodes it
/// (a candidate restart point), the next pull's advance applies it, so each pull
/// re-decodes about one pull's WAL. No time floor: with the former 1 MiB / 100 ms,
/// 2,000 subscribers at 500 changes/s saw p50 52.6 / p99 360 ms (docs/benchmarks.md).
const RESTART_LAG: i64 = 64 << 10;

/// baas.realtime_max_transaction_bytes: a transaction whose events take more is not
/// appended; one `reset` naming its size stands for it (a cascade deleting an account's
/// documents emits each one's whole old document, and gigabytes appended at once could
/// pass Postgres's 1 GB allocation limit and stop the capture for good).
pub(crate) static MAX_TXN_BYTES: pgrx::GucSetting<i32> = pgrx::GucSetting::<i32>::new(256 << 20);
/// Events go into the log in statements of at most this many events and bytes: one
/// array parameter must stay far below the 1 GB allocation limit.
const CHUNK_EVENTS: usize = 10_000;
const CHUNK_BYTES: usize = 64 << 20;

pub fn define_settings() {
    pgrx::GucRegistry::define_int_guc(
        c"baas.realtime_max_transaction_bytes",
        c"Most bytes of live-feed events one transaction may add to baas.realtime_events.",
        c"A larger transaction's events are replaced by one reset event (reason capture_reset) naming its size; subscribers reload.",
        &MAX_TXN_BYTES,
        1024,
        i32::MAX,
        pgrx::GucContext::Suset,
        pgrx::GucFlags::UNIT_BYTE,
    );
}

struct State {
    slot_name: Option<String>,
    generation: i32,
    slot_lsn: i64,
    last_position: i64,
    has_publication: bool,
    confirmed: Option<i64>,
    lost: bool,
    insert: i64,
    dboid: i64,
    restart: i64,
    /// The capture worker (realtime_worker.rs) holding the slot, if one does.
    worker_pid: Option<i32>,
    /// The messages' prefix, with its secret (baas._realtime_secret).
    prefix: String,
}

/// The last position of the log after appending what the slot holds (at most about
/// `max_changes` messages, whole transactions), or NULL when another caller is pulling.
#[pg_extern(security_definer, volatile, name = "_realtime_pull")]
#[search_path(pg_catalog, pg_temp)]
fn realtime_pull(max_changes: default!(i32, 10000)) -> Option<i64> {
    let max = max_changes.clamp(1, 1_000_000);
    let r: SpiResult<Option<i64>> = Spi::connect_mut(|c| pull(c, max));
    match r {
        Ok(v) => v,
        Err(e) => pgrx::error!("baas._realtime_pull: {e}"),
    }
}

fn pull(c: &mut SpiClient<'_>, max: i32) -> SpiResult<Option<i64>> {
    // A separate statement before anything is read: a state read in the same statement
    // would come from a snapshot taken before the previous holder committed.
    // Direct calls rather than statements for the idle case (docs/realtime.md, figures).
    let try_lock = || unsafe {
        pgrx::direct_function_call::<bool>(pg_sys::pg_try_advisory_xact_lock_int8, &[LOCK.into_datum()]) == Some(true)
    };
    if !try_lock() {
        // The capture worker holds the lock for its life (realtime_worker.rs): wait for
        // it as a peek would have read. Else another pull is working, or a worker is
        // between taking the lock and the slot: try again for a while, then NULL.
        let started = Instant::now();
        loop {
            if let Some(last) = wait_if_worker(c)? {
                return Ok(Some(last));
            }
            if started.elapsed() >= LOCKED_OUT {
                return Ok(None);
            }
            nap(1);
            if try_lock() {
                break;
            }
        }
    }
    if unsafe { pg_sys::wal_level } >= pg_sys::WalLevel::WAL_LEVEL_LOGICAL as i32 {
        let insert = unsafe { pg_sys::GetXLogInsertRecPtr() } as i64;
        // Once a second while the worker is wanted, the whole way: an idle database's
        // pulls would otherwise never reach the launch (seen: a worker switched on
        // started only with the next write, seconds later).
        let launch_due = realtime_worker::ENABLED.get() && LAST_LAUNCH.get().is_none_or(|t| t.elapsed() >= LAUNCH_EVERY);
        if let Some((lsn, last)) = IDLE_AT.get() {
            if insert <= lsn && !launch_due {
                prune_if_due(c, last)?;
                return Ok(Some(last));
            }
        }
    }
    // Read-only SPI statements run on the active snapshot, taken before the lock was
    // ours (the previous holder's commit is not in it): take a new one. (Read-only, not
    // `update`: pgrx's `update` assigns a transaction id, and a slot can only be made by
    // a transaction without one.)
    unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
    let r = pull_locked(c, max);
    unsafe { pg_sys::PopActiveSnapshot() };
    r
}

/// The insert position as a position XLogFlush can reach. Right after a page boundary
/// pg_current_wal_insert_lsn() points past the new page's header, which is not written
/// until a record goes there: flushing to it failed with XX000 "xlog flush request ...
/// is not satisfied --- flushed only to" the boundary (seen in concurrent_pullers_never_double).
/// Headers: 24 bytes on a page (SizeOfXLogShortPHD), 40 at a segment's start
/// (SizeOfXLogLongPHD), on 64-bit builds.
pub(crate) fn flushable(insert: u64, segment: u64) -> u64 {
    const SHORT_PHD: u64 = 24;
    const LONG_PHD: u64 = 40;
    if segment > 0 && insert % segment == LONG_PHD {
        insert - LONG_PHD
    } else if insert % pg_sys::XLOG_BLCKSZ as u64 == SHORT_PHD {
        insert - SHORT_PHD
    } else {
        insert
    }
}

/// Sleep `ms` milliseconds on this backend's latch (woken early by a signal), then
/// take any interrupt (a cancel or terminate ends the wait loops).
pub(crate) fn nap(ms: i64) {
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            ms as std::ffi::c_long,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    pgrx::check_for_interrupts!();
}

fn pull_locked(c: &mut SpiClient<'_>, max: i32) -> SpiResult<Option<i64>> {
    if unsafe { pg_sys::wal_level } < pg_sys::WalLevel::WAL_LEVEL_LOGICAL as i32 {
        let wal_level = c.select("select current_setting('wal_level')", Some(1), &[])?.first().get_one::<String>()?;
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "live change feeds need wal_level = logical (it is {}): set it in postgresql.conf and restart Postgres",
                wal_level.unwrap_or_default()
            ),
            "docs/realtime.md"
        );
    }
    let st = state(c)?;
    if !st.has_publication {
        // The slot must be made after the publication has committed: pgoutput looks the
        // publication up as of each decoded change, and errors out for changes older
        // than it. The next call makes the slot.
        c.update(&format!("create publication {PUBLICATION}"), None, &[])?;
        return Ok(Some(st.last_position));
    }
    let mut slot_lsn = st.slot_lsn;
    let mut generation = st.generation;
    // The end of the running-xacts record logged below, if one is: flushed with the
    // rest, so that this pull's peek decodes it.
    let mut snapshot_end: i64 = 0;
    let (slot, new_slot) = match (&st.slot_name, st.confirmed) {
        (Some(name), Some(_)) if !st.lost && st.worker_pid.is_some() => {
            return wait_for_worker(c, name, st.insert).map(Some);
        }
        (Some(name), Some(confirmed)) if !st.lost => {
            if realtime_worker::ENABLED.get() && LAST_LAUNCH.get().is_none_or(|t| t.elapsed() >= LAUNCH_EVERY) {
                // The slot is nobody's: ask for the capture worker (it starts after this
                // transaction, under the same lock), and peek this once.
                LAST_LAUNCH.set(Some(Instant::now()));
                realtime_worker::launch_after_commit();
            }
            // Not when idle: the record is WAL, which the next call would read.
            if confirmed - st.restart > RESTART_LAG && (confirmed < slot_lsn || st.insert > confirmed) {
                snapshot_end = unsafe { pg_sys::LogStandbySnapshot() } as i64;
            }
            if confirmed < slot_lsn {
                // The state naming slot_lsn may have committed with synchronous_commit
                // off and not be on disk yet; the advance saves the slot at once. Flush
                // first, so a crash can never keep the slot past events it then loses.
                unsafe { pg_sys::XLogFlush(flushable(st.insert as u64, pg_sys::wal_segment_size as u64)) };
                c.select(
                    "select pg_replication_slot_advance($1, '0/0'::pg_lsn + $2::numeric)",
                    None,
                    &[name.as_str().into(), slot_lsn.into()],
                )?;
            } else if st.insert <= confirmed {
                // Nothing written since the slot's position.
                IDLE_AT.set(Some((confirmed, st.last_position)));
                prune_if_due(c, st.last_position)?;
                return Ok(Some(st.last_position));
            }
            (name.clone(), false)
        }
        _ => {
            // First use, or the slot was dropped or invalidated (max_slot_wal_keep_size):
            // events may be missing, which the reset appended below says. Slots of ours
            // that the state does not name are left over from pulls that made one and
            // then failed: dropped first. Before any write of this transaction, which
            // slot creation requires.
            let prefix = format!("baas_rt_{}_", st.dboid);
            c.select(
                "select pg_drop_replication_slot(slot_name) from pg_replication_slots
                  where database = current_database() and starts_with(slot_name::text, $1) and not active",
                None,
                &[prefix.as_str().into()],
            )?;
            generation += 1;
            let name = format!("{prefix}{generation}");
            let lsn = c
                .select(
                    "select (lsn - '0/0')::bigint from pg_create_logical_replication_slot($1, 'pgoutput')",
                    Some(1),
                    &[name.as_str().into()],
                )?
                .first()
                .get_one::<i64>()?
                .unwrap_or(0);
            slot_lsn = lsn;
            (name, true)
        }
    };
    // The slot functions decode flushed WAL only. With synchronous_commit off, commits
    // wait up to wal_writer_delay (200 ms) for a flush; flush them now instead (a no-op
    // when every commit flushes its own). XLogFlush also waits for insertions before
    // `flush` still being copied, so every record before it is decoded below.
    let flush = (flushable(st.insert as u64, unsafe { pg_sys::wal_segment_size } as u64) as i64).max(snapshot_end);
    unsafe { pg_sys::XLogFlush(flush as u64) };
    let mut rows: Vec<Vec<u8>> = Vec::new();
    let table = c.select(
        "select data from pg_logical_slot_peek_binary_changes($1, null, $2,
            'proto_version', '1', 'publication_names', 'baas_realtime', 'messages', 'true')",
        None,
        &[slot.as_str().into(), max.into()],
    )?;
    for row in table {
        if let Some(d) = row.get::<Vec<u8>>(1)? {
            rows.push(d);
        }
    }
    let complete = rows.len() < max as usize; // else the peek may have stopped early
    if st.prefix.is_empty() {
        // Without the secret every message would be a possible forgery.
        ereport!(ERROR, PgSqlErrorCode::ERRCODE_DATA_CORRUPTED, "baas._realtime_pull: baas._realtime_secret holds no prefix");
    }
    let mut skipped = Vec::new();
    let cap = MAX_TXN_BYTES.get().max(0) as usize;
    #[allow(unreachable_code)] // ereport!(ERROR) does not return
    let txns = match pgoutput::transactions(rows.iter().map(|r| &r[..]), &st.prefix, cap, &mut skipped) {
        Ok(t) => t,
        Err(e) => {
            ereport!(ERROR, PgSqlErrorCode::ERRCODE_DATA_CORRUPTED, format!("baas._realtime_pull: {e}"));
            unreachable!()
        }
    };
    drop(rows); // the events own their text
    for s in &skipped {
        pgrx::warning!("baas._realtime_pull skipped a message that is not an event: {s}");
    }
    // Appended by an earlier pull whose slot advance did not survive (a crash).
    let txns: Vec<Txn> = txns.into_iter().filter(|t| t.end_lsn as i64 > slot_lsn).collect();
    let last_end = txns.last().map(|t| t.end_lsn as i64);
    // Where the next pull may start: after the last transaction read, or, when the peek
    // read to the end of the WAL, the flush position taken before it (everything that
    // committed before it was read), so an idle database stops being re-read.
    let reached = match (complete, last_end) {
        (true, Some(e)) => e.max(flush),
        (true, None) => flush,
        (false, Some(e)) => e,
        (false, None) => slot_lsn,
    };
    if !appends(&txns) && !new_slot {
        // Nothing to append, so nothing can be lost by moving the slot at once (and no
        // write, which would itself be WAL for the next call to read).
        if reached > slot_lsn.max(st.confirmed.unwrap_or(0)) {
            c.select(
                "select pg_replication_slot_advance($1, '0/0'::pg_lsn + $2::numeric)",
                None,
                &[slot.as_str().into(), reached.into()],
            )?;
        }
        if complete {
            IDLE_AT.set(Some((reached, st.last_position)));
        }
        prune_if_due(c, st.last_position)?;
        return Ok(Some(st.last_position));
    }
    append(c, &slot, generation, new_slot, st.last_position, txns, reached).map(Some)
}

/// A worker that cannot start (no free worker slot) is asked for again at most this
/// often; meanwhile the pull peeks.
const LAUNCH_EVERY: Duration = Duration::from_secs(1);
/// How long a pull that finds the lock taken, and no worker holding the slot, tries again.
const LOCKED_OUT: Duration = Duration::from_millis(200);
/// How long a pull waits for the capture worker to pass its call's WAL position.
const WORKER_WAIT: Duration = Duration::from_secs(10);

/// Not holding the puller's lock: when the capture worker holds the slot, wait for it
/// (wait_for_worker); else NULL (another pull is working).
fn wait_if_worker(c: &mut SpiClient<'_>) -> SpiResult<Option<i64>> {
    if unsafe { pg_sys::wal_level } < pg_sys::WalLevel::WAL_LEVEL_LOGICAL as i32 {
        return Ok(None);
    }
    let insert = unsafe { pg_sys::GetXLogInsertRecPtr() } as i64;
    if let Some((lsn, last)) = IDLE_AT.get() {
        if insert <= lsn {
            return Ok(Some(last));
        }
    }
    unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
    let r = (|| {
        let st = state(c)?;
        match (&st.slot_name, st.worker_pid) {
            (Some(name), Some(_)) if !st.lost => wait_for_worker(c, name, st.insert).map(Some),
            _ => Ok(None),
        }
    })();
    unsafe { pg_sys::PopActiveSnapshot() };
    r
}

/// The capture worker holds the slot: wait until it has confirmed the slot past the WAL
/// inserted before this call (it confirms only after its append committed), so that,
/// as with a peek, every change committed before the call is in the log on return.
/// Returns the log's last position. Gives up after WORKER_WAIT, or when the slot is let go.
fn wait_for_worker(c: &mut SpiClient<'_>, slot: &str, insert: i64) -> SpiResult<i64> {
    let target = flushable(insert as u64, unsafe { pg_sys::wal_segment_size } as u64) as i64;
    unsafe { pg_sys::XLogFlush(target as u64) };
    let started = Instant::now();
    let mut caught_up = false;
    while started.elapsed() < WORKER_WAIT {
        let (confirmed, pid) = c
            .select(
                "select (confirmed_flush_lsn - '0/0')::bigint, active_pid from pg_catalog.pg_replication_slots
                  where slot_name = $1 and database = current_database()",
                Some(1),
                &[slot.into()],
            )?
            .first()
            .get_two::<i64, i32>()?;
        if confirmed.unwrap_or(0) >= target {
            caught_up = true;
            break;
        }
        if pid.is_none() {
            break;
        }
        nap(1);
    }
    // The worker's appends committed after this call's snapshot.
    unsafe {
        pg_sys::PopActiveSnapshot();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let last = c.select("select last_position from baas._realtime_state", Some(1), &[])?.first().get_one::<i64>()?.unwrap_or(0);
    if caught_up {
        IDLE_AT.set(Some((target, last)));
    }
    // Retention is the worker's (it holds the lock).
    Ok(last)
}

/// Whether `txns` have anything to append (an event, or a reset for a dropped one).
pub(crate) fn appends(txns: &[Txn]) -> bool {
    txns.iter().any(|t| !t.events.is_empty() || t.dropped.is_some())
}

/// Append `txns` (committed transactions, in commit order, none at or before the
/// recorded slot LSN) after position `first`, with a reset first when the slot is
/// `new_slot`, and record `reached` as the slot LSN in the same transaction: the code
/// the pull and the capture worker (realtime_worker.rs) share. Returns the last position.
pub(crate) fn append(
    c: &mut SpiClient<'_>,
    slot: &str,
    generation: i32,
    new_slot: bool,
    first: i64,
    txns: Vec<Txn>,
    reached: i64,
) -> SpiResult<i64> {
    let n_events: usize = txns.iter().map(|t| t.events.len()).sum();
    // The epoch of the decoded 32-bit xids comes from the xid counter now, after the
    // decoding: every decoded transaction took its xid before this read. 0.4.0 used
    // pg_current_snapshot()'s xmax, which SPI took from the statement's start snapshot,
    // older than transactions decoded later in the call: their xids were logged 2^32
    // low (the hub still reads such values right, hub.rs `Snap::full`).
    let next_full = unsafe { pg_sys::ReadNextFullTransactionId() }.value;
    let mut xids: Vec<String> = Vec::with_capacity(n_events + 1);
    let mut times: Vec<i64> = Vec::with_capacity(n_events + 1);
    let mut kinds: Vec<String> = Vec::with_capacity(n_events + 1);
    let mut collections: Vec<Option<String>> = Vec::with_capacity(n_events + 1);
    let mut bodies: Vec<String> = Vec::with_capacity(n_events + 1);
    let mut sizes: Vec<i32> = Vec::with_capacity(n_events + 1);
    let mut bytes: i64 = 0;
    let mut last_reset: i64 = 0;
    if new_slot {
        let (xid, now) = c
            .select(
                "select pg_current_xact_id()::text, ((extract(epoch from now()) - 946684800) * 1000000)::bigint",
                Some(1),
                &[],
            )?
            .first()
            .get_two::<String, i64>()?;
        let body = r#"{"reason": "capture_reset"}"#;
        xids.push(xid.unwrap_or_default());
        times.push(now.unwrap_or(0));
        kinds.push("reset".into());
        collections.push(None);
        bodies.push(body.into());
        sizes.push(body.len() as i32);
        bytes += body.len() as i64;
        last_reset = first + kinds.len() as i64;
    }
    let cap = MAX_TXN_BYTES.get().max(0) as usize;
    // By value: each body is moved, never held twice.
    for t in txns {
        let xid = pgoutput::full_xid(t.xid, next_full).to_string();
        if let Some((size, count)) = t.dropped {
            let body = serde_json::json!({
                "reason": "capture_reset",
                "skipped_bytes": size,
                "skipped_events": count,
                "detail": "a transaction's changes exceeded baas.realtime_max_transaction_bytes",
            })
            .to_string();
            pgrx::warning!(
                "baas._realtime_pull: a transaction of {count} events and {size} bytes (more than baas.realtime_max_transaction_bytes, {cap}) is appended as one reset"
            );
            xids.push(xid);
            times.push(t.commit_ts);
            kinds.push("reset".into());
            collections.push(None);
            sizes.push(body.len() as i32);
            bytes += body.len() as i64;
            bodies.push(body);
            last_reset = first + kinds.len() as i64;
            continue;
        }
        for e in t.events {
            xids.push(xid.clone());
            times.push(t.commit_ts);
            sizes.push(i32::try_from(e.bytes).unwrap_or(i32::MAX));
            bytes += e.bytes as i64;
            kinds.push(e.kind);
            collections.push(e.collection);
            bodies.push(e.body);
        }
    }
    let last = first + kinds.len() as i64;
    // In bounded statements (CHUNK_EVENTS, CHUNK_BYTES), in order.
    let mut start = 0;
    while start < kinds.len() {
        let mut end = start;
        let mut chunk_bytes = 0usize;
        while end < kinds.len() && end - start < CHUNK_EVENTS && (end == start || chunk_bytes + bodies[end].len() <= CHUNK_BYTES) {
            chunk_bytes += bodies[end].len();
            end += 1;
        }
        c.update(
            "insert into baas.realtime_events (position, xid, committed_at, kind, collection, body, bytes)
             select $1 + u.o, u.x::xid8, timestamptz '2000-01-01 00:00:00+00' + u.t * interval '1 microsecond',
                    u.k, u.c, u.b::jsonb, u.n
               from unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::integer[])
                    with ordinality as u(x, t, k, c, b, n, o)",
            None,
            &[
                (first + start as i64).into(),
                xids[start..end].to_vec().into(),
                times[start..end].to_vec().into(),
                kinds[start..end].to_vec().into(),
                collections[start..end].to_vec().into(),
                bodies[start..end].to_vec().into(),
                sizes[start..end].to_vec().into(),
            ],
        )?;
        start = end;
    }
    let reset_at = last_reset;
    c.update(
        "update baas._realtime_state
            set slot_name = $1, generation = $2, slot_lsn = '0/0'::pg_lsn + $3::numeric, last_position = $4,
                last_reset = greatest(last_reset, $5), retained_bytes = retained_bytes + $6, last_append = now()",
        None,
        &[slot.into(), generation.into(), reached.into(), last.into(), reset_at.into(), bytes.into()],
    )?;
    c.update("select pg_notify('baas_realtime', $1)", None, &[last.to_string().into()])?;
    prune_if_due(c, first)?;
    Ok(last)
}

fn state(c: &SpiClient<'_>) -> SpiResult<State> {
    let t = c
        .select(
            "select s.slot_name, s.generation, (s.slot_lsn - '0/0')::bigint, s.last_position,
                    exists (select from pg_publication p where p.pubname = 'baas_realtime'),
                    (r.confirmed_flush_lsn - '0/0')::bigint, coalesce(r.wal_status = 'lost', false),
                    (pg_current_wal_insert_lsn() - '0/0')::bigint,
                    (select d.oid::bigint from pg_database d where d.datname = current_database()),
                    (r.restart_lsn - '0/0')::bigint,
                    (select p.prefix from baas._realtime_secret p),
                    case when r.active_pid is not null then
                        (select a.pid from pg_stat_get_activity(r.active_pid) a where a.backend_type = 'pgbaas realtime capture')
                    end
               from baas._realtime_state s
               left join pg_replication_slots r on r.slot_name = s.slot_name and r.database = current_database()",
            Some(1),
            &[],
        )?
        .first();
    Ok(State {
        slot_name: t.get::<String>(1)?,
        generation: t.get::<i32>(2)?.unwrap_or(0),
        slot_lsn: t.get::<i64>(3)?.unwrap_or(0),
        last_position: t.get::<i64>(4)?.unwrap_or(0),
        has_publication: t.get::<bool>(5)?.unwrap_or(false),
        confirmed: t.get::<i64>(6)?,
        lost: t.get::<bool>(7)?.unwrap_or(false),
        insert: t.get::<i64>(8)?.unwrap_or(0),
        dboid: t.get::<i64>(9)?.unwrap_or(0),
        restart: t.get::<i64>(10)?.unwrap_or(0),
        prefix: t.get::<String>(11)?.filter(|p| p.starts_with(pgoutput::PREFIX_START)).unwrap_or_default(),
        worker_pid: t.get::<i32>(12)?,
    })
}

/// Retention (baas._realtime_prune), at most once a second; never an event after
/// `keep_after` (what this call appended).
fn prune_if_due(c: &mut SpiClient<'_>, keep_after: i64) -> SpiResult<()> {
    let due = LAST_PRUNE.with(|l| l.get().is_none_or(|t| t.elapsed() >= PRUNE_EVERY));
    if due {
        LAST_PRUNE.with(|l| l.set(Some(Instant::now())));
        // Read-only from here: the function writes (and takes a transaction id) only
        // when it has something to delete.
        c.select("select baas._realtime_prune($1)", None, &[keep_after.into()])?;
    }
    Ok(())
}

#[cfg(test)]
mod flush_tests {
    use super::flushable;

    #[test]
    fn an_insert_position_past_a_fresh_page_header_flushes_to_the_boundary() {
        let seg = 16 << 20;
        assert_eq!(flushable(0x1B2C018, seg), 0x1B2C000, "past a page's short header");
        assert_eq!(flushable(0x2000028, seg), 0x2000000, "past a segment's long header");
        assert_eq!(flushable(0x1B2C020, seg), 0x1B2C020, "inside a page: unchanged");
    }
}
