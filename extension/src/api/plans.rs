//! Plans kept per backend for the queries baas.find compiles.
//!
//! A filter compiles to SQL text whose client values are all parameters, so a
//! collection sees few distinct texts (one per filter shape and order). PL/pgSQL's
//! `EXECUTE` parses, analyses and plans that text on every call; on the list workload
//! that was a quarter of Postgres' CPU. Here each text is prepared once per backend
//! with SPI and kept; Postgres' plan cache re-plans it by itself when a table, index,
//! function or the caller's role changes (plans under row-level security depend on
//! the role), and picks custom or generic plans as for any prepared statement.

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::panic::{CaughtError, ErrorReport};
use pgrx::{PgLogLevel, PgTryBuilder};
use pgrx::pg_sys::{self, PgOid};
use pgrx::spi::{OwnedPreparedStatement, Spi, SpiClient};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Distinct query texts kept per backend. Past it the cache starts over: a client
/// inventing filter shapes costs itself planning time, never unbounded memory.
pub const MAX_PLANS: usize = 200;

thread_local! {
    static PLANS: RefCell<HashMap<String, Rc<OwnedPreparedStatement>>> = RefCell::new(HashMap::new());
}

/// How many plans this backend keeps (for tests).
pub fn kept() -> usize {
    PLANS.with(|p| p.borrow().len())
}

fn plan(client: &SpiClient<'_>, sql: &str, types: &[PgOid]) -> Rc<OwnedPreparedStatement> {
    if let Some(p) = PLANS.with(|p| p.borrow().get(sql).cloned()) {
        return p;
    }
    let prepared = match client.prepare(sql, types) {
        Ok(p) => Rc::new(p.keep()),
        // Only our own compiler writes this text: failing to prepare it is a bug.
        Err(e) => pgrx::error!("pgbaas: could not prepare a compiled query: {e}"),
    };
    PLANS.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() >= MAX_PLANS {
            p.clear();
        }
        p.insert(sql.to_string(), prepared.clone());
    });
    prepared
}

/// Run `sql` with a plan kept for its text, read-only in the caller's snapshot and as
/// the caller, and return the first column of its first row, or None for no row or
/// NULL. A variable-length value (jsonb, text) is copied into the caller's memory;
/// `by_value` says the column is a by-value type (integer, bigint) instead.
pub fn first_datum(sql: &str, types: &[PgOid], args: &[DatumWithOid<'_>], by_value: bool) -> Option<pg_sys::Datum> {
    Spi::connect(|client| {
        // The Rc keeps the plan alive even if a nested call clears the cache meanwhile.
        let stmt = plan(client, sql, types);
        let table = PgTryBuilder::new(|| client.select(&*stmt, Some(1), args))
            .catch_others(|e| match e {
                // An error Postgres raised while running the query (a statement timeout,
                // a policy's cast): raise it again as it was. Passed through as caught,
                // pgrx would append a Rust backtrace to its DETAIL whenever
                // RUST_BACKTRACE is set, burying the error code the proxy reads there.
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
            })
            .execute();
        let table = match table {
            Ok(t) => t,
            Err(e) => pgrx::error!("pgbaas: compiled query failed: {e}"),
        };
        if table.is_empty() {
            return None;
        }
        match table.first().get_datum_by_ordinal(1) {
            // SAFETY: a varlena datum of the current row; SPI_datumTransfer copies it
            // into the memory context that was current before Spi::connect.
            Ok(Some(d)) if by_value => Some(d),
            Ok(Some(d)) => Some(unsafe { pg_sys::SPI_datumTransfer(d, false, -1) }),
            Ok(None) => None,
            Err(e) => pgrx::error!("pgbaas: compiled query result: {e}"),
        }
    })
}
