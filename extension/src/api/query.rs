//! `#[pg_extern]` faces of the query language. They only produce SQL text and
//! parameters; baas.find()/baas.count() run it as the caller.

use crate::error::{BaasError, OrRaise};
use super::plans;
use crate::query::{compile, parse};
use pgrx::prelude::*;
use super::Json;
use pgrx::JsonB;
use serde_json::{json, Value};

/// A filter and order parsed once per call. Compiled, they are SQL fragments over `d`
/// (a `baas.documents` row) in which every client value is a reference into the
/// jsonb parameter `$1`.
struct Query {
    filter: parse::Filter,
    keys: Vec<parse::SortKey>,
}

impl Query {
    fn parse(filter: &Value, order: &str) -> Result<Query, BaasError> {
        Ok(Query { filter: parse::parse(filter)?, keys: parse::parse_order(order)? })
    }

    /// The filter's condition and parameters; with `cursor` (the sort keys selected
    /// by `cursor_sql` for the `after` document), only rows after it.
    fn condition(&self, cursor: Option<&Value>) -> Result<(String, Vec<Value>), BaasError> {
        let mut params = compile::Params::default();
        let mut sql = compile::compile_filter(&self.filter, &mut params);
        if let Some(c) = cursor {
            let after = compile::after_sql(&self.keys, c, &mut params)?;
            sql = format!("{sql} and {after}");
        }
        Ok((sql, params.0))
    }

    /// A filter that reads exactly one field can be counted from baas.index_entries
    /// when that field has a btree index: its path, and the same filter over
    /// `e.value`, when it takes the same `params` as `condition(None)`.
    fn entry(&self, params: &[Value]) -> Option<(String, String)> {
        let paths = compile::filter_paths(&self.filter);
        let [one] = paths.as_slice() else { return None };
        let mut on_entries = compile::Params::default();
        let w = compile::compile_filter_on(&self.filter, &mut on_entries, &|_| "e.value".to_string());
        (on_entries.0 == params).then(|| (one.clone(), w))
    }
}

/// Compile a filter and order into
/// `{"where": sql, "order": sql, "cursor": sql, "select": sql, "params": [...]}`.
/// With `cursor` (the array `cursor` SQL selected for the `after` document), `where`
/// also keeps only rows after it. 22023 invalid_query names what is wrong.
#[pg_extern(immutable, parallel_safe, name = "_compile_query")]
fn compile_query(filter: Option<Json>, order: Option<&str>, cursor: Option<Json>, has_fields: default!(bool, false)) -> JsonB {
    const F: &str = "_compile_query";
    let filter = filter.map(|f| f.value(F)).unwrap_or_else(|| json!({}));
    let cursor = cursor.map(|c| c.value(F));
    let q = Query::parse(&filter, order.unwrap_or("")).or_raise(F);
    let (where_sql, params) = q.condition(cursor.as_ref()).or_raise(F);
    let entry = if cursor.is_none() { q.entry(&params) } else { None };
    JsonB(json!({
        "entry": entry.map(|(path, w)| json!({"path": path, "where": w})),
        "where": where_sql,
        "order": compile::order_sql(&q.keys),
        "cursor": compile::cursor_sql(&q.keys),
        "select": compile::select_sql(has_fields),
        "params": Value::Array(params),
    }))
}

/// One page of a collection's documents as a jsonb array: what baas.find returns, with
/// the compiled query's plan kept per backend (see api/plans.rs). Runs as the caller,
/// so row-level security decides what is visible; `collection_id` and `name` come from
/// baas._collection_by_name (see baas._find_page); a caller naming another collection's
/// id sees what it could read there through baas.find anyway.
#[allow(clippy::too_many_arguments)]
#[pg_extern(stable, parallel_unsafe, name = "_find_compiled")]
fn find_compiled(
    collection_id: Option<i32>,
    name: Option<&str>,
    filter: Option<Json>,
    order: Option<&str>,
    lim: Option<i32>,
    off: Option<i32>,
    after: Option<pgrx::Uuid>,
    fields: Option<Vec<String>>,
) -> RawJsonb {
    const F: &str = "find";
    use pgrx::datum::DatumWithOid;
    use pgrx::pg_sys::{PgOid, BuiltinOid};
    let (Some(collection_id), Some(name)) = (collection_id, name) else {
        BaasError::InvalidQuery("collection must not be null".into()).raise(F)
    };
    let Some(lim) = lim.filter(|l| (0..=1000).contains(l)) else {
        BaasError::InvalidQuery("limit must be between 0 and 1000".into()).raise(F)
    };
    let Some(off) = off.filter(|o| *o >= 0) else {
        BaasError::InvalidQuery("offset must be 0 or more".into()).raise(F)
    };
    let fields = fields.map(|f| parse::parse_fields(&f).or_raise(F));
    let filter = filter.map(|f| f.value(F)).unwrap_or_else(|| json!({}));
    let order = order.unwrap_or("");
    let q = Query::parse(&filter, order).or_raise(F);
    let mut cursor = None;
    if let Some(after) = after {
        // The cursor document's sort keys, read as the caller: a document you cannot
        // see cannot be a cursor.
        let sql = format!(
            "select {} from baas.documents d where d.collection_id = {collection_id} and d.id = $1",
            compile::cursor_sql(&q.keys)
        );
        let found = plans::first_datum(&sql, &[PgOid::BuiltIn(BuiltinOid::UUIDOID)], &[after.into()], false);
        // SAFETY: the query's only column is jsonb (cursor_sql builds an array).
        let cur = found.and_then(|d| unsafe { <JsonB as pgrx::FromDatum>::from_datum(d, false) });
        let Some(JsonB(cur)) = cur else {
            BaasError::InvalidQuery("after: no such document in this collection".into()).raise(F)
        };
        cursor = Some(cur);
    }
    let (where_sql, params) = q.condition(cursor.as_ref()).or_raise(F);
    let sql = format!(
        "select coalesce(jsonb_agg(x.doc), '[]'::jsonb) from (select {} as doc from baas.documents d \
         where d.collection_id = {collection_id} and {} order by {} limit $4 offset $5) x",
        compile::select_sql(fields.is_some()),
        where_sql,
        compile::order_sql(&q.keys)
    );
    let types = [
        PgOid::BuiltIn(BuiltinOid::JSONBOID),
        PgOid::BuiltIn(BuiltinOid::TEXTOID),
        PgOid::BuiltIn(BuiltinOid::TEXTARRAYOID),
        PgOid::BuiltIn(BuiltinOid::INT4OID),
        PgOid::BuiltIn(BuiltinOid::INT4OID),
    ];
    let fields_arg = match fields {
        Some(f) => DatumWithOid::from(f),
        None => DatumWithOid::null_oid(pgrx::pg_sys::TEXTARRAYOID),
    };
    let args = [JsonB(Value::Array(params)).into(), name.into(), fields_arg, lim.into(), off.into()];
    match plans::first_datum(&sql, &types, &args, false) {
        Some(d) => RawJsonb(d),
        // An aggregate always returns one row, and coalesce makes it non-null.
        None => pgrx::error!("pgbaas: find returned no row"),
    }
}

/// How many documents of a collection the caller may read match the filter: what
/// baas.count returns, with plans kept per backend like find_compiled. A filter that
/// reads one field with a ready btree index counts baas.index_entries (an index-only
/// scan under the same read policy); any other counts the documents.
#[pg_extern(stable, parallel_unsafe, name = "_count_compiled")]
fn count_compiled(collection_id: Option<i32>, filter: Option<Json>) -> i64 {
    const F: &str = "count";
    use pgrx::pg_sys::{BuiltinOid, PgOid};
    let Some(collection_id) = collection_id else {
        BaasError::InvalidQuery("collection must not be null".into()).raise(F)
    };
    let filter = filter.map(|f| f.value(F)).unwrap_or_else(|| json!({}));
    let q = Query::parse(&filter, "").or_raise(F);
    let (where_sql, params) = q.condition(None).or_raise(F);
    let entry = q.entry(&params);
    let index = entry.as_ref().and_then(|(path, _)| {
        let types = [PgOid::BuiltIn(BuiltinOid::INT4OID), PgOid::BuiltIn(BuiltinOid::TEXTOID)];
        let d = plans::first_datum("select baas._btree_index_id($1, $2)", &types, &[collection_id.into(), path.as_str().into()], true)?;
        // SAFETY: btree_index_id returns integer.
        unsafe { <i32 as pgrx::FromDatum>::from_datum(d, false) }
    });
    let sql = match (index, entry) {
        (Some(index), Some((_, w))) => format!("select count(*) from baas.index_entries e where e.index_id = {index} and {w}"),
        _ => format!("select count(*) from baas.documents d where d.collection_id = {collection_id} and {where_sql}"),
    };
    let d = plans::first_datum(&sql, &[PgOid::BuiltIn(BuiltinOid::JSONBOID)], &[JsonB(Value::Array(params)).into()], true);
    // SAFETY: count(*) is a bigint, by value, never null.
    d.and_then(|d| unsafe { <i64 as pgrx::FromDatum>::from_datum(d, false) }).unwrap_or(0)
}

/// A jsonb value returned as the datum Postgres produced: no round trip through
/// serde_json (pgrx's `JsonB` would print, parse, print and parse it again).
pub struct RawJsonb(pgrx::pg_sys::Datum);

unsafe impl pgrx::callconv::BoxRet for RawJsonb {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut pgrx::callconv::FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        unsafe { fcinfo.return_raw_datum(self.0) }
    }
}

unsafe impl pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable for RawJsonb {
    const TYPE_IDENT: &'static str = <JsonB as pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable>::TYPE_IDENT;
    const TYPE_ORIGIN: pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin =
        <JsonB as pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable>::TYPE_ORIGIN;
    const ARGUMENT_SQL: Result<pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef, pgrx::pgrx_sql_entity_graph::metadata::ArgumentError> =
        <JsonB as pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable>::ARGUMENT_SQL;
    const RETURN_SQL: Result<pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef, pgrx::pgrx_sql_entity_graph::metadata::ReturnsError> =
        <JsonB as pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable>::RETURN_SQL;
}

/// Validate `fields` names (22023 invalid_query); returns them trimmed.
#[pg_extern(immutable, strict, parallel_safe, name = "_check_fields")]
fn check_fields(fields: Vec<String>) -> Vec<String> {
    parse::parse_fields(&fields).or_raise("_check_fields")
}

/// The indexable SQL expression for a data path, e.g. `(data -> 'a' -> 'b')`.
#[pg_extern(immutable, strict, parallel_safe, name = "_index_expression")]
fn index_expression(path: &str) -> String {
    let p = parse::Path::parse(path).or_raise("_index_expression");
    compile::path_expr(&p, "")
}
