//! The capture worker ("pgbaas realtime capture"): one long-lived logical decoding
//! session per database, so that no WAL is decoded twice (docs/realtime.md, "Capture").
//!
//! `baas._realtime_pull` (api/realtime.rs) peeks the slot: each call builds a decoding
//! context and decodes again from the slot's restart LSN, about 20 ms per call at 2,400
//! creates/s, which put commit-to-client latency at p50 79 / p99 427 ms. This worker
//! keeps one `LogicalDecodingContext` (what PG 15's pg_logical_slot_get_changes_guts
//! builds per call, and a walsender keeps for its life), reads WAL as it is flushed,
//! and appends each committed transaction's events with the pull's own code
//! (`realtime::append`: secret prefix, gapless positions, byte cap, chunked inserts,
//! `_realtime_state.slot_lsn`, pg_notify) in its own transaction; only then does it
//! confirm the slot past them. Exactly once as with the pull: a crash between the
//! append's commit and the confirm replays transactions the state's slot LSN already
//! covers, and they are skipped.
//!
//! Why a worker in the extension rather than the replication protocol from the proxy:
//! the protocol needs a login role with REPLICATION, which also allows a base backup of
//! the whole cluster; `baas_authenticator` must not have it, so that way would need a
//! second, optional connection string and leave most users on the slow pull. The worker
//! runs as the extension's owner, who already owns the slot. Cost: one
//! `max_worker_processes` slot per database with feeds.
//!
//! Life: the pull launches it (after its transaction commits) when the slot exists and
//! nobody holds it; it takes the puller's advisory lock, session-level, and keeps it
//! with the slot, so it never takes the slot from under a peek; while it runs, pulls
//! wait for it to pass the WAL position of their call instead of peeking. It ends on
//! SIGTERM (shutdown, pg_terminate_backend), when `realtime_disable()` waits for the
//! lock, when the extension is dropped or the state names another slot (checked every
//! second), and on any ERROR (logged; the next pull launches a new one). The postmaster
//! never restarts it.
use super::realtime::{append, appends, flushable, LOCK, MAX_TXN_BYTES};
use crate::realtime::pgoutput::{Assembler, Txn};
use super::worker_launch::{launch_after_commit as launch, started_for, Worker};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use pgrx::pg_sys;
use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

/// Collected output between decoding and appending: past this many committed
/// transactions or bytes of events, they are appended before more WAL is decoded (the insert statements'
/// own bounds, realtime.rs CHUNK_*, split further).
const BATCH_TXNS: usize = 10_000;
const BATCH_BYTES: usize = 64 << 20;
/// Caught up: look for new WAL this often. 1 ms keeps the capture's share of latency
/// small; an idle wake-up is two reads of shared positions.
const POLL: Duration = Duration::from_millis(1);
/// How often the worker checks it is still wanted (extension present, same slot).
const CHECK_EVERY: Duration = Duration::from_secs(1);

thread_local! {
    /// The messages the output plugin writes, assembled into transactions. The worker is
    /// single-threaded; the callbacks below run inside LogicalDecodingProcessRecord.
    static OUT: RefCell<Option<Assembler>> = const { RefCell::new(None) };
    static OUT_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
    static LAUNCH_PENDING: Cell<bool> = const { Cell::new(false) };
}

/// baas.realtime_capture_worker: on (default) lets the pull launch the worker; off keeps
/// every database on the pull's peek (e.g. with no worker slot to spare).
pub static ENABLED: pgrx::GucSetting<bool> = pgrx::GucSetting::<bool>::new(true);

pub fn define_settings() {
    pgrx::GucRegistry::define_bool_guc(
        c"baas.realtime_capture_worker",
        c"Live-feed capture by a background worker with one long-lived decoding session.",
        c"Off: baas._realtime_pull peeks the slot itself on every call (slower; no worker process).",
        &ENABLED,
        pgrx::GucContext::Suset,
        pgrx::GucFlags::default(),
    );
}

extern "C-unwind" {
    // replication/decode.h; not in pgrx's bindings.
    fn LogicalDecodingProcessRecord(ctx: *mut pg_sys::LogicalDecodingContext, record: *mut pg_sys::XLogReaderState);
    // access/xlogutils.h: pgrx's bindings wrap these in Rust functions; the reader
    // needs the C functions themselves as its callbacks.
    fn read_local_xlog_page(
        state: *mut pg_sys::XLogReaderState,
        target_page: pg_sys::XLogRecPtr,
        req_len: std::ffi::c_int,
        target_rec: pg_sys::XLogRecPtr,
        cur_page: *mut std::ffi::c_char,
    ) -> std::ffi::c_int;
    fn wal_segment_open(state: *mut pg_sys::XLogReaderState, next_seg: pg_sys::XLogSegNo, tli: *mut pg_sys::TimeLineID);
    fn wal_segment_close(state: *mut pg_sys::XLogReaderState);
}

/// Ask for a capture worker once this transaction commits (the pull calls this when the
/// slot exists and is not held). Once per transaction.
pub fn launch_after_commit() {
    // As the extension's owner (the slot's maker, the pull's definer), or, when that role
    // may not log in, as the bootstrap superuser (InvalidOid), like the index builds. A
    // refused launch is only logged, and the pull goes on peeking.
    static WORKER: Worker = Worker {
        name: "pgbaas realtime capture",
        function: "pgbaas_realtime_worker",
        refused: "pgbaas: no background worker slot for the live-feed capture; the pull decodes instead (see max_worker_processes)",
        owner_sql: "select r.oid from pg_catalog.pg_extension e join pg_catalog.pg_roles r on r.oid = e.extowner
                  where e.extname = 'pgbaas' and r.rolcanlogin",
    };
    launch(&WORKER, |v| LAUNCH_PENDING.with(|p| p.replace(v)));
}

/// LogicalOutputPluginWriterPrepareWrite: start a new message in ctx->out (as
/// logicalfuncs.c's LogicalOutputPrepareWrite does).
#[pg_guard]
unsafe extern "C-unwind" fn prepare_write(ctx: *mut pg_sys::LogicalDecodingContext, _lsn: pg_sys::XLogRecPtr, _xid: pg_sys::TransactionId, _last: bool) {
    unsafe { pg_sys::resetStringInfo((*ctx).out) };
}

/// LogicalOutputPluginWriterWrite: one pgoutput message is complete in ctx->out. Errors
/// are kept for the loop to raise (no unwinding through the output plugin's frames).
#[pg_guard]
unsafe extern "C-unwind" fn do_write(ctx: *mut pg_sys::LogicalDecodingContext, _lsn: pg_sys::XLogRecPtr, _xid: pg_sys::TransactionId, _last: bool) {
    let out = unsafe { &*(*ctx).out };
    let bytes: &[u8] = if out.len > 0 && !out.data.is_null() {
        unsafe { std::slice::from_raw_parts(out.data as *const u8, out.len as usize) }
    } else {
        &[]
    };
    OUT.with(|o| {
        if let Some(a) = o.borrow_mut().as_mut() {
            if let Err(e) = a.push(bytes) {
                OUT_ERROR.with(|x| {
                    x.borrow_mut().get_or_insert(e.to_string());
                });
            }
        }
    });
}

unsafe extern "C-unwind" fn release_slot(_code: std::ffi::c_int, _arg: pg_sys::Datum) {
    unsafe {
        if !pg_sys::MyReplicationSlot.is_null() {
            // As walsender.c's WalSndErrorCleanup: after an ERROR an LWLock may still be
            // held, and ReplicationSlotRelease takes ProcArrayLock (a self-deadlock
            // that would keep the slot and the lock, and hang realtime_disable()).
            pg_sys::LWLockReleaseAll();
            pg_sys::ConditionVariableCancelSleep();
            pg_sys::ReplicationSlotRelease();
        }
    }
}

/// What postgres.c's die() does: end at the next interrupt check (the decoding loop
/// checks every record and every wait).
unsafe extern "C-unwind" fn on_sigterm(_signal: i32) {
    unsafe {
        (&raw mut pg_sys::InterruptPending).write_volatile(1);
        (&raw mut pg_sys::ProcDiePending).write_volatile(1);
        pg_sys::SetLatch(pg_sys::MyLatch);
    }
}

unsafe extern "C-unwind" fn on_sighup(_signal: i32) {
    unsafe {
        (&raw mut pg_sys::ConfigReloadPending).write_volatile(1);
        pg_sys::SetLatch(pg_sys::MyLatch);
    }
}

/// The state the worker checks in each transaction.
struct Seen {
    slot_name: Option<String>,
    generation: i32,
    slot_lsn: i64,
    last_position: i64,
    prefix: String,
}

/// Read-only SPI only (`select`): pgrx 0.18.1's `Spi::get_one` runs its query as an
/// update, which takes a transaction id, and a commit with an id is a WAL record.
/// Checked in every iteration of the loop, that record was new WAL for the next
/// iteration to decode: an idle database's worker spun through ~630 empty
/// transactions a second (1,889 in 3 s; ~40% of a core, and ~55 million transaction
/// ids a day towards wraparound) until this read became a select (issue 20, found by
/// the benchmark's wait for an idle worker; tests/tests/realtime_capture.rs).
fn seen() -> Result<Option<Seen>, pgrx::spi::SpiError> {
    Spi::connect(|c| {
        let exists = c
            .select("select exists (select from pg_catalog.pg_extension where extname = 'pgbaas')", Some(1), &[])?
            .first()
            .get_one::<bool>()?;
        if exists != Some(true) {
            return Ok(None);
        }
        let t = c
            .select(
                "select s.slot_name::text, s.generation, (s.slot_lsn - '0/0')::bigint, s.last_position,
                        (select p.prefix from baas._realtime_secret p)
                   from baas._realtime_state s",
                Some(1),
                &[],
            )?
            .first();
        Ok(Some(Seen {
            slot_name: t.get::<String>(1)?,
            generation: t.get::<i32>(2)?.unwrap_or(0),
            slot_lsn: t.get::<i64>(3)?.unwrap_or(0),
            last_position: t.get::<i64>(4)?.unwrap_or(0),
            prefix: t.get::<String>(5)?.unwrap_or_default(),
        }))
    })
}

/// Run `f` in a transaction of its own, with a snapshot; an ERROR ends the worker.
fn transaction<R>(f: impl FnOnce() -> R) -> R {
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let r = f();
    unsafe {
        pg_sys::PopActiveSnapshot();
        pg_sys::CommitTransactionCommand();
    }
    r
}

/// The worker's entry point (bgw_function_name).
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pgbaas_realtime_worker(arg: pg_sys::Datum) {
    let (db, owner) = started_for(arg);
    unsafe {
        pg_sys::pqsignal(pg_sys::SIGTERM as i32, Some(on_sigterm));
        pg_sys::pqsignal(pg_sys::SIGHUP as i32, Some(on_sighup));
        pg_sys::BackgroundWorkerUnblockSignals();
    }
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(db), Some(owner));
    if let Err(e) = run() {
        pgrx::log!("pgbaas realtime capture: {e}; it ends (the next pull starts another)");
    }
}

/// The puller's advisory lock as the lock manager names it (SET_LOCKTAG_ADVISORY for an
/// int8 key), to ask whether anyone waits for it.
fn lock_tag() -> pg_sys::LOCKTAG {
    pg_sys::LOCKTAG {
        locktag_field1: u32::from(unsafe { pg_sys::MyDatabaseId }),
        locktag_field2: ((LOCK as u64) >> 32) as u32,
        locktag_field3: LOCK as u64 as u32,
        locktag_field4: 1,
        locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
        locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
    }
}

fn run() -> Result<(), String> {
    if !ENABLED.get() {
        return Ok(()); // switched off after a pull asked for this worker
    }
    // The puller's lock, session-level, for the worker's life: pulls (which only try it)
    // then wait for this worker instead of peeking, and realtime_disable(), which waits
    // for it, is seen waiting (LockHasWaiters below) and makes the worker let go.
    // Waited for, not tried: pulls back to back (each holding it while it peeks) left a
    // worker that tried every 10 ms for a second without it, launch after launch (seen
    // at 500 changes/s). While this worker waits, the pulls' tries fail (a waiter
    // conflicts), so the pull in progress is the last before it. Another worker holding
    // the lock sees this one waiting and hands over.
    let start = transaction(|| -> Result<Option<Seen>, String> {
        unsafe { pgrx::direct_function_call::<()>(pg_sys::pg_advisory_lock_int8, &[LOCK.into_datum()]) };
        // Read after the lock: the previous holder's commit is not in the first snapshot.
        unsafe {
            pg_sys::PopActiveSnapshot();
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        }
        let s = seen().map_err(|e| e.to_string())?;
        let Some(s) = s else { return Ok(None) };
        let Some(name) = s.slot_name.as_deref() else { return Ok(None) };
        let usable = Spi::connect(|c| {
            c.select(
                "select active_pid is null and coalesce(wal_status <> 'lost', true) from pg_catalog.pg_replication_slots
                  where slot_name = $1 and database = current_database()",
                Some(1),
                &[name.into()],
            )?
            .first()
            .get_one::<bool>()
        })
        .map_err(|e: pgrx::spi::SpiError| e.to_string())?;
        if usable != Some(true) {
            return Ok(None); // dropped, lost (the pull makes a new one) or held
        }
        let cname = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
        unsafe {
            pg_sys::ReplicationSlotAcquire(cname.as_ptr(), true);
            // Registered after Postgres's own exit callbacks, so run before them: the slot
            // is let go before the advisory lock, and a realtime_disable() that waited for
            // the lock finds the slot free (else its drop failed with 55006, seen).
            pg_sys::before_shmem_exit(Some(release_slot), pg_sys::Datum::from(0));
        }
        Ok(Some(s))
    })?;
    let Some(start) = start else { return Ok(()) };
    let slot = start.slot_name.clone().unwrap_or_default();
    if !start.prefix.starts_with(crate::realtime::pgoutput::PREFIX_START) {
        return Err("baas._realtime_secret holds no prefix".into());
    }
    let cap = MAX_TXN_BYTES.get().max(0) as usize;
    OUT.with(|o| *o.borrow_mut() = Some(Assembler::new(&start.prefix, cap)));

    // The decoding context lives as long as the worker: its memory under
    // TopMemoryContext, never a transaction's. Made, and used, inside transactions, as
    // pg_logical_slot_get_changes does (outside one, Postgres would mark this process
    // as a walsender-like decoder whose xmin VACUUM ignores, which its appends'
    // snapshots must not be).
    let ctx = transaction(|| unsafe {
        pg_sys::CheckLogicalDecodingRequirements();
        let old = pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext);
        let mut options: *mut pg_sys::List = std::ptr::null_mut();
        for (k, v) in [(c"proto_version", c"1"), (c"publication_names", c"baas_realtime"), (c"messages", c"true")] {
            let value = pg_sys::makeString(pg_sys::pstrdup(v.as_ptr()));
            let def = pg_sys::makeDefElem(pg_sys::pstrdup(k.as_ptr()), value.cast(), -1);
            options = pg_sys::lappend(options, def.cast());
        }
        let mut routine = pg_sys::XLogReaderRoutine {
            page_read: Some(read_local_xlog_page),
            segment_open: Some(wal_segment_open),
            segment_close: Some(wal_segment_close),
        };
        // InvalidXLogRecPtr: go on from the slot's confirmed position.
        let ctx = pg_sys::CreateDecodingContext(0, options, false, &mut routine, Some(prepare_write), Some(do_write), None);
        pg_sys::MemoryContextSwitchTo(old);
        // From the restart LSN, so that transactions committed after the confirmed
        // position are whole in the reorder buffer.
        pg_sys::XLogBeginRead((*ctx).reader, (*pg_sys::MyReplicationSlot).data.restart_lsn);
        pg_sys::InvalidateSystemCaches();
        ctx
    });
    pgrx::log!("pgbaas realtime capture: decoding slot {slot}");
    let mut confirmed: u64 = unsafe { (*pg_sys::MyReplicationSlot).data.confirmed_flush };
    let mut last_check = Instant::now();
    let tag = lock_tag();
    loop {
        pgrx::check_for_interrupts!();
        if unsafe { pg_sys::LockHasWaiters(&tag, pg_sys::ExclusiveLock as i32, true) } {
            // realtime_disable() waits for the lock to drop the slot: the process's exit
            // releases both.
            pgrx::log!("pgbaas realtime capture: the puller's lock is wanted (realtime_disable() or a newer worker); it ends");
            return Ok(());
        }
        if unsafe { (&raw const pg_sys::ConfigReloadPending).read_volatile() } != 0 {
            unsafe {
                (&raw mut pg_sys::ConfigReloadPending).write_volatile(0);
                pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP);
            }
            if !ENABLED.get() {
                return Ok(()); // switched off: the pulls peek again
            }
            let cap = MAX_TXN_BYTES.get().max(0) as usize;
            OUT.with(|o| o.borrow_mut().as_mut().map(|a| a.set_cap(cap)));
        }
        // Decode what is flushed up to the insert position, flushing it first: with
        // synchronous_commit off, commits would otherwise wait up to wal_writer_delay
        // (200 ms) to become readable. Reading to the insert position, a record boundary,
        // never waits inside read_local_xlog_page for a record's flushed tail.
        let target = unsafe {
            let insert = pg_sys::GetXLogInsertRecPtr();
            let t = flushable(insert, pg_sys::wal_segment_size as u64);
            if t > pg_sys::GetFlushRecPtr(std::ptr::null_mut()) {
                pg_sys::XLogFlush(t);
            }
            t
        };
        let behind = unsafe { (*(*ctx).reader).EndRecPtr } < target;
        let due = last_check.elapsed() >= CHECK_EVERY;
        if behind || due {
            // One transaction: decode a batch, then append it (the pull's order too).
            // A failure is raised as an ERROR: it rolls back whatever was appended and
            // ends the worker (the next pull starts another, which reads it again).
            let (keep, last_end, end, open) = transaction(|| {
                let r = (|| -> Result<_, String> {
                    let txns = if behind { decode(ctx, target)? } else { Vec::new() };
                    let end = unsafe { (*(*ctx).reader).EndRecPtr };
                    let open = OUT.with(|o| o.borrow().as_ref().is_some_and(|a| a.in_transaction()));
                    let last_end = txns.last().map(|t| t.end_lsn);
                    let keep = store(&slot, txns, end as i64, due)?;
                    Ok((keep, last_end, end, open))
                })();
                match r {
                    Ok(v) => v,
                    Err(e) => pgrx::error!("pgbaas realtime capture: {e}"),
                }
            });
            if due {
                last_check = Instant::now();
                // Written at the next checkpoint, so that a clean restart goes on from
                // about here (a crash may go back; the stored slot LSN skips the rest).
                unsafe { pg_sys::ReplicationSlotMarkDirty() };
            }
            if let Keep::Stop = keep {
                return Ok(());
            }
            // Only now that the append committed, and is on disk: with synchronous_commit
            // off the commit may still be in WAL buffers, and the confirm may save the
            // slot at once (when a restart candidate is pending): a crash then would keep
            // the slot past events it lost.
            unsafe {
                if pg_sys::XactLastCommitEnd > pg_sys::GetFlushRecPtr(std::ptr::null_mut()) {
                    pg_sys::XLogFlush(pg_sys::XactLastCommitEnd);
                }
            }
            if let Some(e) = last_end {
                confirm(&mut confirmed, e);
            }
            if !open {
                // Everything decoded up to `end` is appended (or had nothing for us).
                confirm(&mut confirmed, end);
            }
        }
        let caught_up = unsafe { (*(*ctx).reader).EndRecPtr } >= target;
        if caught_up {
            unsafe {
                pg_sys::WaitLatch(
                    pg_sys::MyLatch,
                    (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                    POLL.as_millis() as std::ffi::c_long,
                    pg_sys::PG_WAIT_EXTENSION,
                );
                pg_sys::ResetLatch(pg_sys::MyLatch);
            }
        }
    }
}

/// Decode WAL up to `target` (or until a batch is full) and take the transactions that
/// committed in it. Inside a transaction.
fn decode(ctx: *mut pg_sys::LogicalDecodingContext, target: u64) -> Result<Vec<Txn>, String> {
    // Catalog entries the last append (or anything since) loaded under normal snapshots
    // must not serve decoding under historic ones: a table altered meanwhile would be
    // decoded with its new tuple descriptor. As pg_logical_slot_get_changes does before
    // it decodes.
    unsafe { pg_sys::InvalidateSystemCaches() };
    let mut decoded = false;
    loop {
        let end = unsafe { (*(*ctx).reader).EndRecPtr };
        if end >= target {
            break;
        }
        let full = OUT.with(|o| o.borrow().as_ref().is_some_and(|a| a.done.len() >= BATCH_TXNS || a.done_bytes >= BATCH_BYTES));
        if full {
            break;
        }
        unsafe {
            // In the decoding context's memory, as a walsender reads: the reader allocates
            // its decode buffer on first use in the current context, which here would be
            // this transaction's, freed at its commit and then read by the next record
            // (a segfault, seen).
            let old = pg_sys::MemoryContextSwitchTo((*ctx).context);
            let mut errm: *mut std::ffi::c_char = std::ptr::null_mut();
            let record = pg_sys::XLogReadRecord((*ctx).reader, &mut errm);
            if !errm.is_null() {
                pg_sys::MemoryContextSwitchTo(old);
                let m = std::ffi::CStr::from_ptr(errm).to_string_lossy().into_owned();
                return Err(format!("could not read WAL for logical decoding: {m}"));
            }
            if !record.is_null() {
                pg_sys::ffi::pg_guard_ffi_boundary(|| LogicalDecodingProcessRecord(ctx, (*ctx).reader));
                decoded = true;
            }
            pg_sys::MemoryContextSwitchTo(old);
        }
        if let Some(e) = OUT_ERROR.with(|x| x.borrow_mut().take()) {
            return Err(e);
        }
        pgrx::check_for_interrupts!();
    }
    if decoded {
        // Catalog entries read under the decoder's historic snapshots must not serve the
        // append (or anything after it): pg_logical_slot_get_changes does the same.
        unsafe { pg_sys::InvalidateSystemCaches() };
    }
    let (txns, skipped) = OUT.with(|o| {
        let mut o = o.borrow_mut();
        match o.as_mut() {
            Some(a) => (a.take(), std::mem::take(&mut a.skipped)),
            None => (Vec::new(), Vec::new()),
        }
    });
    for s in &skipped {
        pgrx::warning!("pgbaas realtime capture skipped a message that is not an event: {s}");
    }
    Ok(txns)
}

fn confirm(confirmed: &mut u64, lsn: u64) {
    if lsn > *confirmed {
        unsafe { pg_sys::LogicalConfirmReceivedLocation(lsn) };
        *confirmed = lsn;
    }
}

enum Keep {
    Go,
    Stop,
}

/// In a transaction: check the worker is still wanted, and append `txns` (those after
/// the recorded slot LSN) with the pull's code. `end` is where decoding stands.
fn store(slot: &str, txns: Vec<Txn>, end: i64, prune: bool) -> Result<Keep, String> {
    let s = seen().map_err(|e| e.to_string())?;
    let Some(s) = s else { return Ok(Keep::Stop) }; // the extension was dropped
    if s.slot_name.as_deref() != Some(slot) {
        return Ok(Keep::Stop); // a new slot (e.g. restored state)
    }
    let txns: Vec<Txn> = txns.into_iter().filter(|t| t.end_lsn as i64 > s.slot_lsn).collect();
    if !appends(&txns) {
        if prune {
            // Retention, as the pull does at most once a second (it holds the lock).
            // A select (see seen()): with nothing to prune it writes nothing and takes
            // no transaction id; the deletes inside take one when there is work.
            Spi::connect(|c| c.select("select baas._realtime_prune($1)", Some(1), &[s.last_position.into()]).map(|_| ()))
                .map_err(|e| e.to_string())?;
        }
        return Ok(Keep::Go);
    }
    let reached = txns.last().map(|t| t.end_lsn as i64).unwrap_or(end).max(s.slot_lsn);
    // append() prunes at most once a second too.
    Spi::connect_mut(|c| append(c, slot, s.generation, false, s.last_position, txns, reached))
    .map_err(|e| e.to_string())?;
    Ok(Keep::Go)
}
