//! Index builds off the request path (issue 13): `baas.create_index` records a build
//! (`baas.indexes.state = 'building'`) and asks for this worker after its transaction
//! commits; the worker backfills the counting entries in short transactions, runs
//! `CREATE INDEX CONCURRENTLY` as a top-level statement, and marks the index ready or
//! failed. See docs/storage.md ("Index builds").
//!
//! Why a background worker: CREATE INDEX CONCURRENTLY cannot run inside a function or a
//! transaction block (PreventInTransactionBlock), so neither the request's transaction
//! nor SPI can run it; a worker owns its transactions. A dynamic worker needs no
//! `shared_preload_libraries`.
use super::worker_launch::{launch_after_commit, started_for, Worker};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use pgrx::pg_sys;
use std::cell::Cell;
use std::ffi::CString;

/// Session advisory lock key held by the one worker that drains the queue: builds on
/// the one table baas.documents conflict with each other anyway (CIC takes SHARE UPDATE
/// EXCLUSIVE), and a second CIC waiting for that lock would hold a snapshot the first
/// one waits out. ('pgbx' as an integer.)
const BUILD_LOCK: i64 = 0x7067_6278;

/// Documents per backfill transaction: short enough that a batch holds its row locks
/// (FOR KEY SHARE, which only deletes wait for) for a fraction of a second.
const BATCH: i32 = 5000;

thread_local! {
    static LAUNCH_PENDING: Cell<bool> = const { Cell::new(false) };
}

/// Start the build worker once this transaction commits (never before: the worker
/// must see the queued row). Returns false when a launch is already pending.
/// Called by baas.create_index and baas.run_index_builds.
#[pg_extern(volatile, name = "_index_build_launch")]
fn index_build_launch() -> bool {
    // The worker connects as the owner of baas.documents (CIC needs the table's owner),
    // or, when that role may not log in (a worker's connection is refused then, at every
    // start), as the bootstrap superuser (InvalidOid). A refused launch leaves the build
    // queued for the next launch or baas.run_index_builds(); a build whose worker was
    // killed shows as failed at once (baas._index_json), and the next launch cleans it up.
    static WORKER: Worker = Worker {
        name: "pgbaas index build",
        function: "pgbaas_index_worker",
        refused: "pgbaas: no background worker slot for an index build; it stays queued (see max_worker_processes)",
        owner_sql: "select r.oid from pg_catalog.pg_class c join pg_catalog.pg_roles r on r.oid = c.relowner
                  where c.oid = 'baas.documents'::regclass and r.rolcanlogin",
    };
    launch_after_commit(&WORKER, |v| LAUNCH_PENDING.with(|p| p.replace(v)))
}

/// The worker's entry point (bgw_function_name).
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pgbaas_index_worker(arg: pg_sys::Datum) {
    let (db, owner) = started_for(arg);
    unsafe {
        // SIGTERM (pg_terminate_backend, shutdown) ends the worker at the next interrupt
        // check, like a normal backend, instead of bgworker_die's exit from the handler.
        pg_sys::pqsignal(pg_sys::SIGTERM as i32, Some(on_sigterm));
        pg_sys::BackgroundWorkerUnblockSignals();
    }
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(db), Some(owner));
    // Not bounded by a request's statement timeout: a build takes as long as it takes.
    // Every step below reports errors instead of raising them, so that the worker ends
    // cleanly (a log line) rather than with an error, e.g. when the extension was
    // dropped while a build waited.
    if let Err(e) = in_transaction(|| Spi::run("set statement_timeout = 0; set lock_timeout = 0")) {
        pgrx::log!("pgbaas index build: {e}");
        return;
    }
    loop {
        let locked = in_transaction(|| Spi::get_one::<bool>(&format!("select pg_try_advisory_lock({BUILD_LOCK})")));
        if locked != Ok(Some(true)) {
            return; // another worker drains the queue, and rechecks it before it ends
        }
        loop {
            let job = match in_transaction(|| Spi::get_one::<pgrx::JsonB>("select baas._index_build_next()")) {
                Ok(Some(job)) => job,
                Ok(None) => break,
                Err(e) => {
                    pgrx::log!("pgbaas index build: {e}");
                    return;
                }
            };
            let job = job.0;
            if let Some(name) = job.get("drop").and_then(|v| v.as_str()) {
                let name = name.to_string();
                if let Err(e) = top_level(&format!("drop index concurrently if exists baas.{}", quote_ident(&name))) {
                    pgrx::warning!("pgbaas: could not drop the unfinished index {name}: {e}");
                    break; // try again on the next launch rather than loop on it
                }
                continue;
            }
            let (Some(id), Some(name)) = (job.get("id").and_then(|v| v.as_i64()), job.get("name").and_then(|v| v.as_str()))
            else {
                break;
            };
            build(id as i32, name);
        }
        let _ = in_transaction(|| Spi::run(&format!("select pg_advisory_unlock({BUILD_LOCK})")));
        // A build queued while this worker held the lock had its own worker turned away:
        // look once more now that the lock is free.
        if in_transaction(|| Spi::get_one::<bool>("select baas._index_build_waiting()")) != Ok(Some(true)) {
            return;
        }
    }
}

/// What postgres.c's die() does: ask for the process to end at the next interrupt check.
unsafe extern "C-unwind" fn on_sigterm(_signal: i32) {
    unsafe {
        (&raw mut pg_sys::InterruptPending).write_volatile(1);
        (&raw mut pg_sys::ProcDiePending).write_volatile(1);
        pg_sys::SetLatch(pg_sys::MyLatch);
    }
}

/// One build: backfill, CIC, finish; any error marks it failed and drops what it made.
fn build(id: i32, name: &str) {
    let steps = || -> Result<(), String> {
        // A leftover of an earlier attempt under the same name (an invalid index, or a
        // dropped index's) would make CIC fail or, with IF NOT EXISTS, be taken as done.
        top_level(&format!("drop index concurrently if exists baas.{}", quote_ident(name)))?;
        let mut after: Option<pgrx::Uuid> = None;
        loop {
            let next = in_transaction(|| {
                Spi::get_one_with_args::<pgrx::Uuid>(
                    "select baas._index_build_backfill($1, $2, $3)",
                    &[id.into(), after.into(), BATCH.into()],
                )
            })?;
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let ddl = in_transaction(|| Spi::get_one_with_args::<String>("select baas._index_ddl($1, true)", &[id.into()]))?;
        let Some(ddl) = ddl else { return Ok(()) }; // dropped meanwhile
        top_level(&ddl)?;
        let done = in_transaction(|| Spi::get_one_with_args::<bool>("select baas._index_build_finish($1)", &[id.into()]))?;
        if done != Some(true) {
            // Dropped (or cancelled) while it was being built.
            top_level(&format!("drop index concurrently if exists baas.{}", quote_ident(name)))?;
        }
        Ok(())
    };
    pgrx::log!("pgbaas index build: building {name}");
    if let Err(reason) = steps() {
        pgrx::log!("pgbaas index build: {name} failed: {reason}");
        if let Err(e) = in_transaction(|| {
            Spi::run_with_args("select baas._index_build_failed($1, $2)", &[id.into(), reason.as_str().into()])
        }) {
            // The build then shows as failed by its ended worker (baas._index_json).
            pgrx::warning!("pgbaas: could not record the failed build of {name}: {e}");
        }
        if let Err(e) = top_level(&format!("drop index concurrently if exists baas.{}", quote_ident(name))) {
            pgrx::warning!("pgbaas: could not drop the failed index {name}: {e}");
        }
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Run `f` in its own transaction; an error (a Postgres ERROR included) rolls it back
/// and comes back as its message.
fn in_transaction<R>(f: impl FnOnce() -> Result<R, pgrx::spi::SpiError>) -> Result<R, String> {
    guarded(|| unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        let r = f();
        pg_sys::PopActiveSnapshot();
        match r {
            Ok(v) => {
                pg_sys::CommitTransactionCommand();
                Ok(v)
            }
            Err(e) => {
                pg_sys::AbortCurrentTransaction();
                Err(e.to_string())
            }
        }
    })
}

/// Run one utility statement the way a client's simple query runs it, at top level, so
/// that CREATE/DROP INDEX CONCURRENTLY may commit and start transactions of their own
/// (as pg_cron's worker does). The parse tree and text live in a memory context of their
/// own: the statement's own commits free the transaction's memory under it.
fn top_level(sql: &str) -> Result<(), String> {
    // Deleted below on success and on error alike (an error leaves it current no more:
    // `guarded` switches to TopMemoryContext).
    let cx = unsafe {
        pg_sys::AllocSetContextCreateInternal(
            pg_sys::TopMemoryContext,
            c"pgbaas index build".as_ptr(),
            pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
        )
    };
    let r = guarded(|| unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        let old = pg_sys::MemoryContextSwitchTo(cx);
        let text = CString::new(sql).unwrap_or_default();
        let text = pg_sys::pstrdup(text.as_ptr());
        pgrx::pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, text);
        let raw = pg_sys::pg_parse_query(text);
        let stmts: Vec<*mut pg_sys::RawStmt> = pgrx::PgList::<pg_sys::RawStmt>::from_pg(raw).iter_ptr().collect();
        for rs in stmts {
            let ps = pg_sys::palloc0(std::mem::size_of::<pg_sys::PlannedStmt>()) as *mut pg_sys::PlannedStmt;
            (*ps).type_ = pg_sys::NodeTag::T_PlannedStmt;
            (*ps).commandType = pg_sys::CmdType::CMD_UTILITY;
            (*ps).canSetTag = true;
            (*ps).utilityStmt = (*rs).stmt;
            (*ps).stmt_location = (*rs).stmt_location;
            (*ps).stmt_len = (*rs).stmt_len;
            pg_sys::ProcessUtility(
                ps,
                text,
                false,
                pg_sys::ProcessUtilityContext::PROCESS_UTILITY_TOPLEVEL,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                pg_sys::None_Receiver,
                std::ptr::null_mut(),
            );
        }
        // Not back to `old`: CREATE/DROP INDEX CONCURRENTLY commit the transaction they
        // started in, and Postgres 15 deletes its TopTransactionContext (where `old`
        // pointed) at that commit: allocating in it afterwards would use freed memory
        // that a later context may take over. The transaction open now has its own.
        let _ = old;
        pg_sys::MemoryContextSwitchTo(pg_sys::TopTransactionContext);
        // DefineIndex(concurrent) pops the snapshot it was given; a plain DROP leaves it.
        if pg_sys::ActiveSnapshotSet() {
            pg_sys::PopActiveSnapshot();
        }
        pg_sys::CommitTransactionCommand();
        pgrx::pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_IDLE, std::ptr::null());
        Ok(())
    });
    unsafe { pg_sys::MemoryContextDelete(cx) };
    r
}

/// Catch a Postgres ERROR (or a panic) raised by `f`, roll back whatever transaction it
/// left open, and return the error's message: the worker records it as the failure's
/// reason instead of dying with it.
fn guarded<R>(f: impl FnOnce() -> Result<R, String>) -> Result<R, String> {
    let f = std::panic::AssertUnwindSafe(f);
    PgTryBuilder::new(move || {
        let f = f;
        (f.0)()
    })
        .catch_others(|e| {
            let msg = match &e {
                pg_sys::panic::CaughtError::PostgresError(r)
                | pg_sys::panic::CaughtError::ErrorReport(r)
                | pg_sys::panic::CaughtError::RustPanic { ereport: r, .. } => r.message().to_string(),
            };
            unsafe {
                pg_sys::AbortCurrentTransaction();
                pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext);
            }
            Err(msg)
        })
        .execute()
}
