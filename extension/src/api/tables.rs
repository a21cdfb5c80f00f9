//! `#[pg_extern]` faces of the tables door (sql/tables.sql, "http door"): each turns a
//! table's catalog facts (`baas._served_table`) and a request into a statement, its
//! parameters (one text[]) and the checks that name a column whose value does not fit.
//! Pure: they read nothing; the SECURITY INVOKER functions of sql/tables.sql run the
//! statements as the caller, so grants and row-level security decide.

use super::Json;
use crate::tables::compile::{Refusal, Table};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::Value;

fn raise(r: Refusal, funcname: &'static str) -> ! {
    let state = match r.code {
        "row_not_found" => PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
        "query_too_complex" => PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        _ => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
    };
    ErrorReport::new(state, r.message, funcname).set_detail(r.code).report(pgrx::PgLogLevel::ERROR);
    unreachable!("ERROR-level reports do not return")
}

fn table(t: Json, f: &'static str) -> Table {
    match serde_json::from_value::<Table>(t.value(f)) {
        Ok(t) => t,
        // Only baas._served_table's output comes here.
        Err(e) => pgrx::error!("pgbaas: {f}: unreadable table facts: {e}"),
    }
}

fn done(r: Result<Value, Refusal>, f: &'static str) -> JsonB {
    match r {
        Ok(v) => JsonB(v),
        Err(e) => raise(e, f),
    }
}

/// A list page's statements: `{sql, count, cursor, paged, params, checks}`.
#[pg_extern(immutable, parallel_safe, name = "_table_list_sql")]
fn table_list_sql(t: Json, filter: Option<Json>, order: Option<&str>, fields: Option<Vec<String>>, after: Option<&str>) -> JsonB {
    const F: &str = "table_list";
    let t = table(t, F);
    let filter = filter.map(|f| f.value(F)).unwrap_or_else(|| Value::Object(Default::default()));
    done(t.list(&filter, order.unwrap_or(""), fields.as_deref(), after), F)
}

#[pg_extern(immutable, strict, parallel_safe, name = "_table_get_sql")]
fn table_get_sql(t: Json, key: &str) -> JsonB {
    const F: &str = "table_get";
    done(table(t, F).get(key), F)
}

#[pg_extern(immutable, parallel_safe, name = "_table_insert_sql")]
fn table_insert_sql(t: Json, row: Option<Json>) -> JsonB {
    const F: &str = "table_insert";
    let t = table(t, F);
    let row = row.map(|r| r.value(F)).unwrap_or(Value::Null);
    done(t.insert(&row), F)
}

#[pg_extern(immutable, parallel_safe, name = "_table_update_sql")]
fn table_update_sql(t: Json, key: &str, patch: Option<Json>) -> JsonB {
    const F: &str = "table_update";
    let t = table(t, F);
    let patch = patch.map(|r| r.value(F)).unwrap_or(Value::Null);
    done(t.update(key, &patch), F)
}

#[pg_extern(immutable, strict, parallel_safe, name = "_table_delete_sql")]
fn table_delete_sql(t: Json, key: &str) -> JsonB {
    const F: &str = "table_delete";
    done(table(t, F).delete(key), F)
}
