//! Plans kept per backend for the queries baas.find compiles.
//!
//! A filter compiles to SQL text whose client values are all parameters, so a
//! collection sees few distinct texts (one per filter shape and order). PL/pgSQL's
//! `EXECUTE` parses, analyses and plans that text on every call; on the list workload
//! that was a quarter of Postgres' CPU. Here each text is prepared once per backend
//! with SPI and kept; Postgres' plan cache re-plans it by itself when a table, index,
//! function or the caller's role changes (plans under row-level security depend on
//! the role), and picks custom or generic plans as for any prepared statement.
//!
//! The shapes are the client's choice, so the cache is bounded in bytes, measured: a
//! kept plan's size is what its memory contexts hold (the SPI plan, each plan source
//! with its analysed queries, and the generic plan once Postgres makes one), taken
//! again after every execution because the generic plan appears only from the sixth
//! and a re-plan replaces it. Past the budget, the least recently used plans go.
//! Counting entries (200 before issue 13) bounded nothing: one plan of a filter with
//! 6,000 listed values held ~8 MB. We call SPI directly rather than through pgrx's
//! `OwnedPreparedStatement` because that type does not give out its plan pointer, and
//! the pointer is what the sizes are read from.

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::panic::{CaughtError, ErrorReport};
use pgrx::pg_sys::{self, PgOid};
use pgrx::spi::Spi;
use pgrx::{PgList, PgLogLevel, PgTryBuilder};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Bytes of kept plans (and their texts) per backend. A list query's plan under
/// row-level security measures 30-60 KiB here, the worst filter the complexity bounds
/// allow (docs/query.md, "Limits") about 1.5 MiB; 8 MiB keeps well over a hundred
/// ordinary shapes and costs a pool of 16 connections at most 128 MiB.
pub const MAX_PLAN_BYTES: usize = 8 * 1024 * 1024;
/// Distinct texts kept per backend, whatever their size.
pub const MAX_PLANS: usize = 200;

/// A plan prepared with SPI and kept (SPI_keepplan) until dropped.
struct Kept(pg_sys::SPIPlanPtr);

impl Drop for Kept {
    fn drop(&mut self) {
        // SAFETY: a plan we prepared and kept, freed once (the Rc owns it).
        unsafe {
            pg_sys::SPI_freeplan(self.0);
        }
    }
}

struct Entry {
    plan: Rc<Kept>,
    bytes: usize,
    used: u64,
}

#[derive(Default)]
struct Cache {
    map: HashMap<String, Entry>,
    bytes: usize,
    clock: u64,
}

impl Cache {
    /// Drop least recently used plans until the cache is within both bounds.
    fn shrink(&mut self) {
        while self.bytes > MAX_PLAN_BYTES || self.map.len() > MAX_PLANS {
            // A linear scan: at most MAX_PLANS entries, and only when over a bound.
            let Some(oldest) = self.map.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone()) else { break };
            if let Some(e) = self.map.remove(&oldest) {
                self.bytes -= e.bytes;
            }
        }
    }
}

thread_local! {
    static PLANS: RefCell<Cache> = RefCell::new(Cache::default());
}

/// How many plans this backend keeps (for tests).
pub fn kept() -> usize {
    PLANS.with(|p| p.borrow().map.len())
}

/// Bytes the kept plans hold, as last measured (for tests).
pub fn kept_bytes() -> usize {
    PLANS.with(|p| p.borrow().bytes)
}

fn descends(mut ctx: pg_sys::MemoryContext, ancestor: pg_sys::MemoryContext) -> bool {
    while !ctx.is_null() {
        if ctx == ancestor {
            return true;
        }
        // SAFETY: a live memory context; parent is null at the top.
        ctx = unsafe { (*ctx).parent };
    }
    false
}

/// Bytes Postgres holds for a kept plan: the SPI plan's context, every plan source's
/// context (its analysed queries are a child context) and the generic plan, each
/// counted once whichever of them are nested in another.
fn plan_bytes(plan: pg_sys::SPIPlanPtr) -> usize {
    // SAFETY: `plan` is a live kept plan: the _SPI_plan struct is allocated in its own
    // context, and its plan sources and their generic plans are live while it is.
    unsafe {
        let top = pg_sys::GetMemoryChunkContext(plan.cast());
        let mut n = pg_sys::MemoryContextMemAllocated(top, true);
        let sources = PgList::<pg_sys::CachedPlanSource>::from_pg(pg_sys::SPI_plan_get_plan_sources(plan));
        for ps in sources.iter_ptr() {
            let ctx = (*ps).context;
            if !descends(ctx, top) {
                n += pg_sys::MemoryContextMemAllocated(ctx, true);
            }
            let gplan = (*ps).gplan;
            if !gplan.is_null() && !descends((*gplan).context, top) && !descends((*gplan).context, ctx) {
                n += pg_sys::MemoryContextMemAllocated((*gplan).context, true);
            }
        }
        n
    }
}

fn plan(sql: &str, types: &[PgOid]) -> Rc<Kept> {
    let hit = PLANS.with(|p| {
        let mut c = p.borrow_mut();
        c.clock += 1;
        let now = c.clock;
        c.map.get_mut(sql).map(|e| {
            e.used = now;
            e.plan.clone()
        })
    });
    if let Some(p) = hit {
        return p;
    }
    // Only our own compiler writes this text, and it never contains NUL (paths refuse
    // control characters): failing here is a bug.
    let Ok(text) = std::ffi::CString::new(sql) else { pgrx::error!("pgbaas: a compiled query contains NUL") };
    let mut oids: Vec<pg_sys::Oid> = types.iter().map(|t| t.value()).collect();
    // SAFETY: inside Spi::connect; the text and types outlive the call, and SPI copies
    // both. Postgres raises its own errors (a parse error would be our bug).
    let raw = unsafe { pg_sys::SPI_prepare(text.as_ptr(), oids.len() as i32, oids.as_mut_ptr()) };
    if raw.is_null() {
        // SAFETY: SPI_result is set by the failed call.
        pgrx::error!("pgbaas: could not prepare a compiled query (SPI code {})", unsafe { pg_sys::SPI_result });
    }
    // SAFETY: a fresh, unsaved plan.
    unsafe {
        pg_sys::SPI_keepplan(raw);
    }
    let kept = Rc::new(Kept(raw));
    let bytes = plan_bytes(raw) + sql.len();
    PLANS.with(|p| {
        let mut c = p.borrow_mut();
        let used = c.clock;
        c.bytes += bytes;
        if let Some(old) = c.map.insert(sql.to_string(), Entry { plan: kept.clone(), bytes, used }) {
            // A nested call prepared the same text meanwhile.
            c.bytes -= old.bytes;
        }
    });
    kept
}

/// Take the plan's size again (Postgres may have made or replaced its generic plan)
/// and shrink the cache to its bounds. The plan just run may go too, when it alone is
/// over budget; the caller's Rc keeps it until the caller is done.
fn remeasure(sql: &str, kept: &Rc<Kept>) {
    let bytes = plan_bytes(kept.0) + sql.len();
    PLANS.with(|p| {
        let mut c = p.borrow_mut();
        let c = &mut *c;
        if let Some(e) = c.map.get_mut(sql).filter(|e| Rc::ptr_eq(&e.plan, kept)) {
            c.bytes = c.bytes - e.bytes + bytes;
            e.bytes = bytes;
        }
        c.shrink();
    });
}

/// Run `sql` with a plan kept for its text, in the caller's snapshot and as the caller,
/// and return the first column of its first row, or None for no row or NULL. A
/// variable-length value (jsonb, text) is copied into the caller's memory; `by_value`
/// says the column is a by-value type (integer, bigint) instead.
pub fn first_datum(sql: &str, types: &[PgOid], args: &[DatumWithOid<'_>], by_value: bool) -> Option<pg_sys::Datum> {
    Spi::connect(|_client| {
        // The Rc keeps the plan alive even if a nested call evicts it meanwhile.
        let stmt = plan(sql, types);
        let mut values: Vec<pg_sys::Datum> = Vec::with_capacity(args.len());
        let mut nulls: Vec<std::ffi::c_char> = Vec::with_capacity(args.len());
        for a in args {
            match a.datum() {
                Some(d) => {
                    values.push(d.sans_lifetime());
                    nulls.push(b' ' as std::ffi::c_char);
                }
                None => {
                    values.push(pg_sys::Datum::from(0usize));
                    nulls.push(b'n' as std::ffi::c_char);
                }
            }
        }
        // Read-only (the caller's snapshot) unless this transaction has written, as
        // pgrx's own select does: then a new snapshot shows the caller's writes.
        // SAFETY: reads the current transaction's state.
        let read_only = unsafe { pg_sys::GetCurrentTransactionIdIfAny() } == pg_sys::InvalidTransactionId;
        let (plan_ptr, values_ptr, nulls_ptr) = (stmt.0, values.as_mut_ptr(), nulls.as_ptr());
        let status = PgTryBuilder::new(|| unsafe {
            // SAFETY: a live kept plan (`stmt` holds it) with as many parameters as
            // `types` (our callers pass matching `types` and `args`); the arrays
            // outlive the call.
            pg_sys::SPI_tuptable = std::ptr::null_mut();
            pg_sys::SPI_execute_plan(plan_ptr, values_ptr, nulls_ptr, read_only, 1)
        })
        .catch_others(rethrow)
        .execute();
        remeasure(sql, &stmt);
        if status != pg_sys::SPI_OK_SELECT as i32 {
            pgrx::error!("pgbaas: compiled query failed (SPI code {status})");
        }
        // SAFETY: a SELECT just ran through SPI: SPI_tuptable holds its rows until
        // Spi::connect ends (SPI_finish); column 1 exists (every compiled query
        // selects one column).
        unsafe {
            let table = pg_sys::SPI_tuptable;
            if table.is_null() || pg_sys::SPI_processed == 0 {
                return None;
            }
            let mut isnull = false;
            let d = pg_sys::SPI_getbinval(*(*table).vals, (*table).tupdesc, 1, &mut isnull);
            if isnull {
                None
            } else if by_value {
                Some(d)
            } else {
                // Copied into the memory context that was current before Spi::connect.
                Some(pg_sys::SPI_datumTransfer(d, false, -1))
            }
        }
    })
}

/// A DestReceiver that hands each row to a Rust closure as the executor produces it
/// (`base` first, so a `*mut DestReceiver` is a `*mut Each`).
#[repr(C)]
struct Each<'a> {
    base: pg_sys::DestReceiver,
    row: &'a mut dyn FnMut(*mut pg_sys::TupleTableSlot) -> bool,
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn each_receive(slot: *mut pg_sys::TupleTableSlot, dest: *mut pg_sys::DestReceiver) -> bool {
    // SAFETY: `dest` is the `Each` for_each_slot passed, alive for the whole query;
    // the slot holds a row of the query.
    unsafe {
        let each = &mut *(dest as *mut Each);
        (each.row)(slot)
    }
}

// Nothing to do at a query's start and end (no pg_guard: they cannot fail).
unsafe extern "C-unwind" fn each_startup(_dest: *mut pg_sys::DestReceiver, _op: std::ffi::c_int, _desc: pg_sys::TupleDesc) {}

unsafe extern "C-unwind" fn each_nothing(_dest: *mut pg_sys::DestReceiver) {}

/// Run `sql` with a plan kept for its text, like `first_datum`, and hand each row's
/// first non-null column to `row` while the executor produces the rows; `row` returns
/// false to stop the query there, and the rows after it are never computed. The datum
/// lives only until `row` returns: copy what must outlast it (into `keep`, a memory
/// context that outlives the query; `row` gets no context switch of its own).
pub fn for_each_datum(sql: &str, types: &[PgOid], args: &[DatumWithOid<'_>], row: &mut dyn FnMut(pg_sys::Datum) -> bool) {
    for_each_slot(sql, types, args, &mut |slot| {
        let mut isnull = false;
        // SAFETY: the slot holds a row of the query, whose first column exists.
        let d = unsafe { pg_sys::slot_getattr(slot, 1, &mut isnull) };
        isnull || row(d)
    })
}

/// `for_each_datum` with the whole row: `row` reads the columns it needs from the
/// slot (`slot_getattr`), valid only until it returns.
pub fn for_each_slot(sql: &str, types: &[PgOid], args: &[DatumWithOid<'_>], row: &mut dyn FnMut(*mut pg_sys::TupleTableSlot) -> bool) {
    Spi::connect(|_client| {
        let stmt = plan(sql, types);
        // SAFETY: makeParamList allocates in the SPI procedure context, which lives
        // until Spi::connect ends; it has room for `args.len()` parameters.
        let params = unsafe {
            let p = pg_sys::makeParamList(args.len() as i32);
            let slots = (*p).params.as_mut_slice(args.len());
            for (slot, (a, t)) in slots.iter_mut().zip(args.iter().zip(types)) {
                let d = a.datum().map(|d| d.sans_lifetime());
                slot.isnull = d.is_none();
                slot.value = d.unwrap_or(pg_sys::Datum::from(0usize));
                slot.pflags = pg_sys::PARAM_FLAG_CONST as u16;
                slot.ptype = t.value();
            }
            p
        };
        let mut each = Each {
            base: pg_sys::DestReceiver {
                receiveSlot: Some(each_receive),
                rStartup: Some(each_startup),
                rShutdown: Some(each_nothing),
                rDestroy: Some(each_nothing),
                // Neither DestNone (SPI would report no SELECT) nor DestSPI (SPI would
                // look for its own tuple table); plpgsql's RETURN QUERY passes its
                // tuplestore receiver the same way.
                mydest: pg_sys::CommandDest::DestTuplestore,
            },
            row,
        };
        // SAFETY: reads the current transaction's state.
        let read_only = unsafe { pg_sys::GetCurrentTransactionIdIfAny() } == pg_sys::InvalidTransactionId;
        let options = pg_sys::SPIExecuteOptions {
            params,
            read_only,
            dest: &mut each.base,
            ..Default::default()
        };
        let (plan_ptr, options_ptr) = (stmt.0, &options as *const pg_sys::SPIExecuteOptions);
        let status = PgTryBuilder::new(|| unsafe {
            // SAFETY: a live kept plan with as many parameters as `types`; `options`,
            // its parameters and the receiver outlive the call.
            pg_sys::SPI_execute_plan_extended(plan_ptr, options_ptr)
        })
        .catch_others(rethrow)
        .execute();
        remeasure(sql, &stmt);
        if status != pg_sys::SPI_OK_SELECT as i32 {
            pgrx::error!("pgbaas: compiled query failed (SPI code {status})");
        }
    })
}

/// An error Postgres raised while running a query (a statement timeout, a policy's
/// cast), raised again as it was. Passed through as caught, pgrx would append a Rust
/// backtrace to its DETAIL whenever RUST_BACKTRACE is set, burying the error code the
/// proxy reads there.
pub(crate) fn rethrow<T>(e: CaughtError) -> T {
    match e {
        CaughtError::PostgresError(r) => {
            let mut again = ErrorReport::new(r.sql_error_code(), r.message().to_string(), "find");
            if let Some(d) = r.detail() {
                again = again.set_detail(d);
            }
            if let Some(h) = r.hint() {
                again = again.set_hint(h);
            }
            again.report(PgLogLevel::ERROR);
            unreachable!("an ERROR does not return")
        }
        other => other.rethrow(),
    }
}
