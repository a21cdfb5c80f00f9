//! The SQL face of the RPC door (extension/src/rpc/): `baas._rpc_plan(name, args,
//! via_get)`, whose call `baas.rpc` (sql/rpc.sql) runs with PL/pgSQL's EXECUTE, so that
//! errors the function raises keep their SQLSTATE (PT409 through pgrx would be XX000).
//! SECURITY INVOKER: the catalog is read and the function called as the caller, so
//! EXECUTE, USAGE and row-level security decide.
use super::Json;
use crate::rpc::{self, Proc, RpcError};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use serde_json::Value;

const FUNC: &str = "rpc";


/// The functions named `$1` in the exposed schemas, in exposed-schema order, as JSON
/// (rpc::Proc), each with whether the caller may use its schema and execute it: those it
/// may not still decide which schema serves the name, and count for ambiguity.
const CANDIDATES: &str = "
select coalesce(pg_catalog.jsonb_agg(x.f order by x.ord, x.oid), '[]')::text from (
  select s.ord, p.oid, pg_catalog.jsonb_build_object(
    'schema', n.nspname::text, 'name', p.proname::text, 'volatility', p.provolatile::text,
    'retset', p.proretset, 'ndefaults', p.pronargdefaults, 'variadic', p.provariadic <> 0,
    'executable', pg_catalog.has_schema_privilege(s.nsp, 'USAGE')
                  and pg_catalog.has_function_privilege(p.oid, 'EXECUTE'),
    'ret', (select pg_catalog.jsonb_build_object('oid', t.oid::int8, 'sql', pg_catalog.format_type(t.oid, -1),
                                      'typtype', t.typtype::text, 'category', t.typcategory::text,
                                      'base', (case when t.typtype = 'd' then coalesce((select b.typbasetype from pg_catalog.pg_type b where b.oid = t.typbasetype and b.typtype = 'd'), t.typbasetype) else 0 end)::int8)
              from pg_catalog.pg_type t where t.oid = p.prorettype),
    'args', coalesce((
        select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                 'name', coalesce(p.proargnames[a.i], ''), 'mode', coalesce(p.proargmodes[a.i]::text, 'i'),
                 'oid', a.t::int8, 'sql', pg_catalog.format_type(a.t, -1), 'typtype', t.typtype::text,
                 'category', t.typcategory::text, 'elem_json', t.typelem in (114, 3802),
                 'base', (case when t.typtype = 'd' then coalesce((select b.typbasetype from pg_catalog.pg_type b where b.oid = t.typbasetype and b.typtype = 'd'), t.typbasetype) else 0 end)::int8) order by a.i)
          from pg_catalog.unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) with ordinality a(t, i)
          join pg_catalog.pg_type t on t.oid = a.t), '[]'),
    'columns', coalesce((
        select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('name', c.attname::text, 'oid', c.atttypid::int8,
                                    'base', (case when ct.typtype = 'd' then coalesce((select b.typbasetype from pg_catalog.pg_type b where b.oid = ct.typbasetype and b.typtype = 'd'), ct.typbasetype) else 0 end)::int8) order by c.attnum)
          from pg_catalog.pg_type t join pg_catalog.pg_attribute c on c.attrelid = t.typrelid
          join pg_catalog.pg_type ct on ct.oid = c.atttypid
         where t.oid = p.prorettype and t.typtype = 'c' and c.attnum > 0 and not c.attisdropped), '[]')
  ) as f
  from pg_catalog.unnest(baas._exposed_schemas()) with ordinality s(nsp, ord)
  join pg_catalog.pg_namespace n on n.oid = s.nsp
  join pg_catalog.pg_proc p on p.pronamespace = s.nsp
  where p.proname = $1::name and p.prokind = 'f'
) x";

fn raise(state: PgSqlErrorCode, code: &str, message: String) -> ! {
    ErrorReport::new(state, message, FUNC).set_detail(code).report(PgLogLevel::ERROR);
    unreachable!("ERROR-level reports do not return")
}

/// The call of the exposed function `name` with the named arguments `args` (a JSON
/// object) as a text array: [1] the SQL (`$1` the array of values), [2] `true` for a void
/// function, [3..] the values as text. `via_get`: an HTTP GET (the values are strings;
/// the function must be STABLE or IMMUTABLE). docs/rpc.md.
#[pg_extern(stable, name = "_rpc_plan")]
fn rpc_plan(name: Option<&str>, args: Option<Json>, via_get: Option<bool>) -> Vec<Option<String>> {
    let (name, via_get) = (name.unwrap_or(""), via_get.unwrap_or(false));
    let args = match args.map(|a| a.value(FUNC)) {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "invalid_arguments",
            "the arguments must be a JSON object of named arguments".into(),
        ),
    };
    if !rpc::servable_name(name) {
        let e = rpc::plan(name, &args, via_get, &[]).unwrap_err();
        fail(e);
    }
    // A read-only SPI select, not Spi::get_one_with_args: pgrx runs that as an update,
    // which first assigns the transaction an id (GetCurrentTransactionId), so that every
    // call, GETs included, took an xid on the primary and failed on a standby (XX000).
    let found: Option<String> = Spi::connect(|c| c.select(CANDIDATES, Some(1), &[name.into()])?.first().get_one()).unwrap_or_else(|e| {
        raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "internal_error", format!("rpc catalog query: {e}"))
    });
    let procs: Vec<Proc> = serde_json::from_str(found.as_deref().unwrap_or("[]")).unwrap_or_else(|e| {
        raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "internal_error", format!("rpc catalog facts: {e}"))
    });
    let call = rpc::plan(name, &args, via_get, &procs).unwrap_or_else(|e| fail(e));
    let mut out = vec![Some(call.sql), Some(call.is_void.to_string())];
    out.extend(call.params);
    out
}

fn fail(e: RpcError) -> ! {
    match e {
        RpcError::NotFound(m) => raise(PgSqlErrorCode::ERRCODE_NO_DATA_FOUND, "function_not_found", m),
        RpcError::InvalidArguments(m) => raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "invalid_arguments", m),
        RpcError::Ambiguous(m) => raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "ambiguous_function", m),
        RpcError::MethodNotAllowed(m) => raise(PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED, "method_not_allowed", m),
    }
}
