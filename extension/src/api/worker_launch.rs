//! Launching the extension's dynamic background workers (index builds, the live-feed
//! capture) once the calling transaction commits.

use pgrx::bgworkers::{BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::{pg_sys, register_xact_callback, PgXactCallbackEvent};
use std::cell::Cell;
use std::time::{Duration, Instant};

thread_local! {
    static REFUSAL_LOGGED: Cell<Option<Instant>> = const { Cell::new(None) };
}

pub(crate) struct Worker {
    /// Its bgw_name and bgw_type (pg_stat_activity.backend_type).
    pub name: &'static str,
    /// The library's exported entry point.
    pub function: &'static str,
    /// Logged when no worker slot is free.
    pub refused: &'static str,
    /// One row, one column: the role the worker connects as. No row (the role may not
    /// log in: a worker's connection would be refused at every start) is the bootstrap
    /// superuser (InvalidOid).
    pub owner_sql: &'static str,
}

/// Ask for `w` once this transaction commits, connected to this database as the role
/// `w.owner_sql` names. `pending` swaps the caller's per-transaction flag and returns
/// its old value: a second ask in one transaction does nothing and returns false.
pub(crate) fn launch_after_commit(w: &'static Worker, pending: fn(bool) -> bool) -> bool {
    if pending(true) {
        return false;
    }
    let owner = pgrx::Spi::get_one::<pg_sys::Oid>(w.owner_sql).ok().flatten().unwrap_or(pg_sys::InvalidOid);
    let db = unsafe { pg_sys::MyDatabaseId };
    register_xact_callback(PgXactCallbackEvent::Commit, move || {
        pending(false);
        // After commit: anything raised here would be a PANIC, so a refused launch (no
        // free worker slot) is only logged.
        let started = BackgroundWorkerBuilder::new(w.name)
            .set_type(w.name)
            .set_library("pgbaas")
            .set_function(w.function)
            .set_argument(Some(pg_sys::Datum::from(db)))
            .set_extra(&u32::from(owner).to_string())
            .enable_spi_access()
            .set_start_time(BgWorkerStartTime::RecoveryFinished)
            // Never restarted by the postmaster: a worker that cannot connect (its
            // database dropped) would be restarted forever. The callers launch again.
            .set_restart_time(None)
            .load_dynamic();
        // At most once a minute per backend: the proxies' pull asks again every
        // second while no slot is free.
        if started.is_err() && REFUSAL_LOGGED.with(|t| t.get().is_none_or(|at| at.elapsed() >= Duration::from_secs(60))) {
            REFUSAL_LOGGED.with(|t| t.set(Some(Instant::now())));
            pgrx::log!("{}", w.refused);
        }
    });
    register_xact_callback(PgXactCallbackEvent::Abort, move || {
        pending(false);
    });
    // PREPARE TRANSACTION ends the transaction without Commit or Abort callbacks.
    register_xact_callback(PgXactCallbackEvent::Prepare, move || {
        pending(false);
    });
    true
}

/// In the worker: the database and the role `launch_after_commit` started it for.
pub(crate) fn started_for(arg: pg_sys::Datum) -> (pg_sys::Oid, pg_sys::Oid) {
    use pgrx::FromDatum;
    let db = unsafe { pg_sys::Oid::from_datum(arg, false) }.unwrap_or(pg_sys::InvalidOid);
    let owner: u32 = pgrx::bgworkers::BackgroundWorker::get_extra().parse().unwrap_or(0);
    (db, pg_sys::Oid::from(owner))
}
