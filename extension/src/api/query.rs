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
        if compile::has_time(&self.filter) {
            return None;
        }
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
    paged: default!(bool, false),
) -> RawJsonb {
    let q = PageQuery::new(collection_id, name, filter, order, lim, off, after, fields);
    let sql = compile::page_sql(q.collection_id, &compile::select_doc_sql(q.has_fields), &q.where_sql, &q.keys);
    let page = Page::collect(&sql, &TYPES, &q.args(), q.room());
    let more = q.check(page.refused, page.docs.len(), paged);
    page.finish(paged, more)
}

/// The list route's page (`GET /v1/collections/{c}/documents`): the text of
/// `baas.list_documents(...)` (with `count`, its `count`), written as JSON text
/// without building jsonb (api/doc_text.rs): the same documents, pages and bytes.
#[allow(clippy::too_many_arguments)]
#[pg_extern(stable, parallel_unsafe, name = "_find_compiled_text")]
fn find_compiled_text(
    collection_id: Option<i32>,
    name: Option<&str>,
    filter: Option<Json>,
    order: Option<&str>,
    lim: Option<i32>,
    off: Option<i32>,
    after: Option<pgrx::Uuid>,
    fields: Option<Vec<String>>,
    with_count: default!(bool, false),
) -> RawText {
    let q = PageQuery::new(collection_id, name, filter, order, lim, off, after, fields);
    let sql = compile::page_sql(q.collection_id, &compile::select_columns_sql(q.has_fields), &q.where_sql, &q.keys);
    let page = TextPage::collect(&sql, &TYPES, &q.args(), q.room(), q.name);
    let more = q.check(page.refused, page.n, true);
    // After the page, as baas.list_documents counts: a page that fails costs no count.
    let count = with_count.then(|| count_filtered(q.collection_id, &q.filter));
    page.finish(more, count)
}

/// The page queries' parameters: $1 the filter's values, $2 the collection's name,
/// $3 the fields, $4 the limit, $5 the offset.
const TYPES: [pgrx::pg_sys::PgOid; 5] = [
    pgrx::pg_sys::PgOid::BuiltIn(pgrx::pg_sys::BuiltinOid::JSONBOID),
    pgrx::pg_sys::PgOid::BuiltIn(pgrx::pg_sys::BuiltinOid::TEXTOID),
    pgrx::pg_sys::PgOid::BuiltIn(pgrx::pg_sys::BuiltinOid::TEXTARRAYOID),
    pgrx::pg_sys::PgOid::BuiltIn(pgrx::pg_sys::BuiltinOid::INT4OID),
    pgrx::pg_sys::PgOid::BuiltIn(pgrx::pg_sys::BuiltinOid::INT4OID),
];

/// A page's query, checked and compiled: find_compiled's and find_compiled_text's
/// arguments (22023 invalid_query for bad ones).
struct PageQuery<'a> {
    collection_id: i32,
    name: &'a str,
    lim: i32,
    off: i32,
    fields: Option<Vec<String>>,
    has_fields: bool,
    keys: Vec<parse::SortKey>,
    where_sql: String,
    params: Vec<Value>,
    filter: Value,
}

const FIND: &str = "find";

impl<'a> PageQuery<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        collection_id: Option<i32>,
        name: Option<&'a str>,
        filter: Option<Json>,
        order: Option<&str>,
        lim: Option<i32>,
        off: Option<i32>,
        after: Option<pgrx::Uuid>,
        fields: Option<Vec<String>>,
    ) -> PageQuery<'a> {
        use pgrx::pg_sys::{PgOid, BuiltinOid};
        let (Some(collection_id), Some(name)) = (collection_id, name) else {
            BaasError::InvalidQuery("collection must not be null".into()).raise(FIND)
        };
        let Some(lim) = lim.filter(|l| (0..=1000).contains(l)) else {
            BaasError::InvalidQuery("limit must be between 0 and 1000".into()).raise(FIND)
        };
        let Some(off) = off.filter(|o| *o >= 0) else {
            BaasError::InvalidQuery("offset must be 0 or more".into()).raise(FIND)
        };
        let fields = fields.map(|f| parse::parse_fields(&f).or_raise(FIND));
        let filter = filter.map(|f| f.value(FIND)).unwrap_or_else(|| json!({}));
        let order = order.unwrap_or("");
        let q = Query::parse(&filter, order).or_raise(FIND);
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
                BaasError::InvalidQuery("after: no such document in this collection".into()).raise(FIND)
            };
            cursor = Some(cur);
        }
        let (where_sql, params) = q.condition(cursor.as_ref()).or_raise(FIND);
        PageQuery { collection_id, name, lim, off, has_fields: fields.is_some(), fields, keys: q.keys, where_sql, params, filter }
    }

    fn args(&self) -> [pgrx::datum::DatumWithOid<'_>; 5] {
        use pgrx::datum::DatumWithOid;
        let fields_arg = match &self.fields {
            Some(f) => DatumWithOid::from(f.clone()),
            None => DatumWithOid::null_oid(pgrx::pg_sys::TEXTARRAYOID),
        };
        [JsonB(Value::Array(self.params.clone())).into(), self.name.into(), fields_arg, self.lim.into(), self.off.into()]
    }

    /// Bytes of documents a page may hold.
    fn room(&self) -> usize {
        max_response_bytes().saturating_sub(REPLY_RESERVE)
    }

    /// After collecting: refuse a page that could not hold its first document (or,
    /// unpaged, any document), and say whether there may be more after it.
    fn check(&self, refused: Option<usize>, n: usize, paged: bool) -> bool {
        let budget = max_response_bytes();
        // One row per document, handed over as the executor makes it (for_each_slot):
        // the page stops at the first document that would take it past the budget, and
        // the documents after it are never read or built. Before issue 13 this was one
        // jsonb_agg over the whole page: limit 1000 of 1 MiB documents built ~1 GB.
        if let Some(size) = refused {
            if n == 0 {
                BaasError::ResponseTooLarge(format!(
                    "a document is {size} bytes as JSON, more than a response may hold ({budget} bytes, baas.max_response_bytes); \
                     ask for fewer of its fields with `fields`"
                ))
                .raise(FIND)
            }
            if !paged {
                BaasError::ResponseTooLarge(format!(
                    "these documents are more than a response may hold ({budget} bytes, baas.max_response_bytes); \
                     ask for fewer (limit) or fewer of their fields (fields), or page with baas.list_documents, which stops a page short and gives its `next`"
                ))
                .raise(FIND)
            }
        }
        // A page cut short, or full, may have more after it: its last id is the `after`
        // of the next page. A shorter page that was not cut is the last one.
        refused.is_some() || (self.lim > 0 && n == self.lim as usize)
    }
}

/// Bytes a list reply may add around its items: `{"next": "<uuid>", "items": ..., "count": <bigint>}`
/// is at most 80.
const REPLY_RESERVE: usize = 128;

/// baas.max_response_bytes: the most bytes one page of documents may take as JSON text.
/// The proxy sets it on each of its connections just under its own max_result_bytes
/// (proxy/src/pgwire.rs), so a page ends short here before the proxy would refuse it.
static MAX_RESPONSE_BYTES: pgrx::GucSetting<i32> = pgrx::GucSetting::<i32>::new(DEFAULT_MAX_RESPONSE_BYTES);
/// 15 MiB: what the proxy asks for with its default max_result_bytes (16 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: i32 = 15 << 20;

pub fn define_settings() {
    pgrx::GucRegistry::define_int_guc(
        c"baas.max_response_bytes",
        c"Most bytes one page of documents may take as JSON (baas.find, baas.list_documents, the list route).",
        c"A list page stops before the document that would take it past this and gives a next cursor; one document larger than it is refused (54000 response_too_large).",
        &MAX_RESPONSE_BYTES,
        1024,
        1 << 30,
        pgrx::GucContext::Userset,
        pgrx::GucFlags::UNIT_BYTE,
    );
}

fn max_response_bytes() -> usize {
    MAX_RESPONSE_BYTES.get().max(0) as usize
}

/// The documents of a page, as copies in a memory context of their own, and the text
/// size (jsonb_out) of the first one that did not fit, if any.
struct Page {
    docs: Vec<pgrx::pg_sys::Datum>,
    refused: Option<usize>,
    cx: pgrx::pg_sys::MemoryContext,
}

impl Page {
    /// Run the page's query, keeping documents while the array of them, as JSON text,
    /// stays within `room` bytes, and while their JSON values, each charged
    /// `VALUE_BYTES`, stay within `room` too (the first document is judged on its text
    /// alone, so that every page moves on). Memory: the documents kept plus the one
    /// being measured, and `finish`'s building of the reply, which unpacks every value
    /// of every document (see `VALUE_BYTES`).
    fn collect(sql: &str, types: &[pgrx::pg_sys::PgOid], args: &[pgrx::datum::DatumWithOid<'_>], room: usize) -> Page {
        use pgrx::pg_sys;
        // SAFETY: a child of the function's context, deleted in `finish` (or with its
        // parent if an error ends the call).
        let cx = unsafe {
            pg_sys::AllocSetContextCreateExtended(
                pg_sys::CurrentMemoryContext,
                c"pgbaas page".as_ptr(),
                pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
            )
        };
        let mut docs = Vec::new();
        let mut refused = None;
        let mut budget = Budget::new(room);
        plans::for_each_datum(sql, types, args, &mut |d| {
            let (size, values) = text_size(d);
            if !budget.admit(size, values, docs.len()) {
                refused = Some(size);
                return false;
            }
            // SAFETY: a jsonb datum of the current row, copied into our context.
            docs.push(unsafe {
                let old = pg_sys::MemoryContextSwitchTo(cx);
                // Always a fresh copy (detoasted if it was not yet).
                let copy = pg_sys::pg_detoast_datum_copy(d.cast_mut_ptr());
                pg_sys::MemoryContextSwitchTo(old);
                pg_sys::Datum::from(copy)
            });
            true
        });
        Page { docs, refused, cx }
    }

    /// The page as a jsonb array, or with `paged` as `{"items": [...], "next": id or
    /// null}`, `next` being the last document's id when `more`.
    fn finish(self, paged: bool, more: bool) -> RawJsonb {
        use pgrx::pg_sys::{self, BuiltinOid, PgOid};
        // SAFETY: the datums are jsonb varlenas in `cx`; construct_array copies them
        // into one array in the current context, after which `cx` can go.
        let array = unsafe {
            let mut docs = self.docs;
            let a = pg_sys::construct_array(
                docs.as_mut_ptr(),
                docs.len() as i32,
                pg_sys::JSONBOID,
                -1,
                false,
                pg_sys::TYPALIGN_INT as std::ffi::c_char,
            );
            pg_sys::MemoryContextDelete(self.cx);
            pg_sys::Datum::from(a)
        };
        // SAFETY: `array` is a jsonb[] datum just built.
        let array = unsafe { pgrx::datum::DatumWithOid::new(array, pg_sys::JSONBARRAYOID) };
        let d = if paged {
            plans::first_datum(
                "select pg_catalog.jsonb_build_object('items', $1, 'next', case when $2 then $1[pg_catalog.array_length($1, 1)] -> 'id' end)",
                &[PgOid::BuiltIn(BuiltinOid::JSONBARRAYOID), PgOid::BuiltIn(BuiltinOid::BOOLOID)],
                &[array, more.into()],
                false,
            )
        } else {
            plans::first_datum("select pg_catalog.to_jsonb($1)", &[PgOid::BuiltIn(BuiltinOid::JSONBARRAYOID)], &[array], false)
        };
        match d {
            Some(d) => RawJsonb(d),
            None => pgrx::error!("pgbaas: find built no page"),
        }
    }
}

/// The list route's page as JSON text (find_compiled_text): the documents written one
/// after another into one buffer, under the same budget as `Page` (so the same
/// documents make a page), then wrapped as `{"next": …, "count": …, "items": [...]}`,
/// the keys in jsonb's order, as `baas.list_documents(...)::text` prints it.
struct TextPage {
    docs: pgrx::pg_sys::StringInfo,
    n: usize,
    last_id: [u8; 36],
    refused: Option<usize>,
}

impl TextPage {
    fn collect(sql: &str, types: &[pgrx::pg_sys::PgOid], args: &[pgrx::datum::DatumWithOid<'_>], room: usize, collection: &str) -> TextPage {
        use pgrx::pg_sys;
        // SAFETY: palloc'd in the function's context, which outlives the query (the
        // rows are appended by repalloc, which keeps a chunk's context).
        let (docs, name) = unsafe {
            let docs = pg_sys::makeStringInfo();
            let name = pg_sys::makeStringInfo();
            let c = std::ffi::CString::new(collection).unwrap_or_default();
            super::doc_text::append_json_string(name, &c);
            (docs, name)
        };
        // SAFETY: `name` is a live StringInfo holding `len` bytes.
        let name = unsafe { std::slice::from_raw_parts((*name).data as *const u8, (*name).len as usize) }.to_vec();
        let mut page = TextPage { docs, n: 0, last_id: [0; 36], refused: None };
        let mut budget = Budget::new(room);
        plans::for_each_slot(sql, types, args, &mut |slot| {
            // SAFETY: `docs` is live; its first `len` bytes are the page so far.
            unsafe {
                let before = (*docs).len;
                if page.n > 0 {
                    pgrx::pg_sys::appendBinaryStringInfo(docs, c", ".as_ptr(), 2);
                }
                let start = (*docs).len;
                let id = super::doc_text::append_document(docs, slot, &name);
                let text = std::slice::from_raw_parts(((*docs).data as *const u8).add(start as usize), ((*docs).len - start) as usize);
                let (size, values) = count_values(text);
                if !budget.admit(size, values, page.n) {
                    // Not this one: the page ends before it.
                    (*docs).len = before;
                    *(*docs).data.add(before as usize) = 0;
                    page.refused = Some(size);
                    return false;
                }
                page.n += 1;
                page.last_id = id;
            }
            true
        });
        page
    }

    fn finish(self, more: bool, count: Option<i64>) -> RawText {
        use pgrx::pg_sys;
        // SAFETY: `out` is a fresh StringInfo whose first VARHDRSZ bytes become the
        // text's header once its length is known; its buffer is palloc'd (maxaligned),
        // so it is a valid varlena. `docs` is live.
        unsafe {
            let out = pg_sys::makeStringInfo();
            // Room for the whole reply at once (the page and at most ~100 bytes around it).
            pg_sys::enlargeStringInfo(out, (*self.docs).len + 128);
            let add = |b: &[u8]| pg_sys::appendBinaryStringInfo(out, b.as_ptr().cast(), b.len() as i32);
            add(&[0u8; pg_sys::VARHDRSZ]);
            add(b"{\"next\": ");
            if more && self.n > 0 {
                add(b"\"");
                add(&self.last_id);
                add(b"\"");
            } else {
                add(b"null");
            }
            if let Some(c) = count {
                add(b", \"count\": ");
                add(c.to_string().as_bytes());
            }
            add(b", \"items\": [");
            pg_sys::appendBinaryStringInfo(out, (*self.docs).data, (*self.docs).len);
            add(b"]}");
            pg_sys::pfree((*self.docs).data.cast());
            let v = (*out).data as *mut pg_sys::varlena;
            pgrx::varlena::set_varsize_4b(v, (*out).len);
            RawText(pg_sys::Datum::from(v))
        }
    }
}

/// A text value returned as the datum we built.
pub struct RawText(pub pgrx::pg_sys::Datum);

unsafe impl pgrx::callconv::BoxRet for RawText {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut pgrx::callconv::FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        unsafe { fcinfo.return_raw_datum(self.0) }
    }
}

unsafe impl pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable for RawText {
    const TYPE_IDENT: &'static str = <String as pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable>::TYPE_IDENT;
    const TYPE_ORIGIN: pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin =
        <String as pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable>::TYPE_ORIGIN;
    const ARGUMENT_SQL: Result<pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef, pgrx::pgrx_sql_entity_graph::metadata::ArgumentError> =
        <String as pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable>::ARGUMENT_SQL;
    const RETURN_SQL: Result<pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef, pgrx::pgrx_sql_entity_graph::metadata::ReturnsError> =
        <String as pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable>::RETURN_SQL;
}

/// A page's budget, the one rule of both pages (`Page`, `TextPage`): documents are
/// kept while the array of them, as JSON text, stays within `room` bytes, and while
/// their JSON values, each charged `VALUE_BYTES`, stay within `room` too; the first
/// document is judged on its text alone, so that every page moves on.
struct Budget {
    room: usize,
    /// "[" and "]", and ", " between documents: jsonb_out's array.
    used: usize,
    weight: usize,
}

impl Budget {
    fn new(room: usize) -> Budget {
        Budget { room, used: 2, weight: 0 }
    }

    /// Whether a document of `size` bytes of text and `values` JSON values fits after
    /// the `kept` ones; if it does, it is counted.
    fn admit(&mut self, size: usize, values: usize, kept: usize) -> bool {
        let add = size + if kept == 0 { 0 } else { 2 };
        let heavier = self.weight.saturating_add(values.saturating_mul(VALUE_BYTES));
        if self.used + add > self.room || (kept > 0 && heavier > self.room) {
            return false;
        }
        self.used += add;
        self.weight = heavier;
        true
    }
}

/// What one JSON value (scalar, array, object or key) is charged against the page's
/// budget for the memory of building the reply: `finish` turns the page into one
/// jsonb, and Postgres unpacks every value of every document into an in-memory tree
/// to do it. Text alone did not bound that: a page of 3 MB of text like `[1,1,…]`
/// (1.5 million values) grew a backend by 90 MB (review of issue 13), ~60 bytes per
/// value; the number-dense test in tests/tests/bounded.rs measures it.
const VALUE_BYTES: usize = 64;

/// A jsonb value's size as JSON text (what the proxy sends), and how many JSON values
/// it holds: measured by printing it, because no cheaper figure bounds the size (a
/// number such as 1e1000 is a few bytes in jsonb and a thousand as text).
fn text_size(d: pgrx::pg_sys::Datum) -> (usize, usize) {
    // SAFETY: a non-null jsonb datum; jsonb_out returns a palloc'd C string, freed here.
    unsafe {
        let text = pgrx::fcinfo::direct_function_call::<&core::ffi::CStr>(pgrx::pg_sys::jsonb_out, &[Some(d)]);
        match text {
            Some(t) => {
                let n = count_values(t.to_bytes());
                pgrx::pg_sys::pfree(t.as_ptr() as *mut core::ffi::c_void);
                n
            }
            None => (0, 0),
        }
    }
}

/// (bytes, values) of JSON text as jsonb_out writes it: every value but the first
/// follows a `,`, a `:` (an object's value; its key is counted by the `,` or `{`
/// before it), a `[` or a `{` outside strings.
fn count_values(text: &[u8]) -> (usize, usize) {
    let mut values = 1usize;
    let (mut in_string, mut escaped) = (false, false);
    for &b in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else {
            match b {
                b'"' => in_string = true,
                b',' | b':' | b'[' | b'{' => values += 1,
                _ => {}
            }
        }
    }
    (text.len(), values)
}

/// How many documents of a collection the caller may read match the filter: what
/// baas.count returns, with plans kept per backend like find_compiled. A filter that
/// reads one field with a ready btree index counts baas.index_entries, and no filter at
/// all counts baas.read_entries (index-only scans under the same read policy); any other
/// counts the documents.
#[pg_extern(stable, parallel_unsafe, name = "_count_compiled")]
fn count_compiled(collection_id: Option<i32>, filter: Option<Json>) -> i64 {
    const F: &str = "count";
    let Some(collection_id) = collection_id else {
        BaasError::InvalidQuery("collection must not be null".into()).raise(F)
    };
    let filter = filter.map(|f| f.value(F)).unwrap_or_else(|| json!({}));
    count_filtered(collection_id, &filter)
}

/// count_compiled's count (also the list page's `count`, after the page).
fn count_filtered(collection_id: i32, filter: &Value) -> i64 {
    const F: &str = "count";
    use pgrx::pg_sys::{BuiltinOid, PgOid};
    let q = Query::parse(filter, "").or_raise(F);
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
        // The whole collection: for a user or anonymous caller, the documents whose read
        // entries name one of the caller's principals, counted from the entries' key
        // alone (row-level security on the entries, documents_read's rule, decides which
        // rows count). The service role and DBAs read everything: for them, and before
        // the entries are rebuilt after a restore, the documents are counted.
        // Members of baas_service (custom service roles) are not `_is_privileged` but
        // see every row by documents_service, so they count the documents too.
        _ if where_sql == "true" && params.is_empty() && read_entries_installed() => format!(
            "select case when baas._is_privileged(current_user::text) or pg_has_role(current_user, 'baas_service', 'USAGE')
                              or not baas._read_entries_ready({collection_id})
                         then (select count(*) from baas.documents d where d.collection_id = {collection_id})
                         else (select count(distinct r.doc_id) from baas.read_entries r
                                where r.collection_id = {collection_id} and r.principal = any ((select baas.principals())::text[])) end"
        ),
        _ => format!("select count(*) from baas.documents d where d.collection_id = {collection_id} and {where_sql}"),
    };
    let d = plans::first_datum(&sql, &[PgOid::BuiltIn(BuiltinOid::JSONBOID)], &[JsonB(Value::Array(params)).into()], true);
    // SAFETY: count(*) is a bigint, by value, never null.
    d.and_then(|d| unsafe { <i64 as pgrx::FromDatum>::from_datum(d, false) }).unwrap_or(0)
}

thread_local! {
    /// This backend has seen baas.read_entries (SQL 0.11.0). Only `true` is kept.
    static READ_ENTRIES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the database's SQL has the read entries. Between installing this library and
/// `ALTER EXTENSION pgbaas UPDATE` it does not (docs/operations.md: the new library
/// serves the old SQL meanwhile), and a count naming them would fail to prepare; such a
/// count takes the documents path, and asks again next time.
fn read_entries_installed() -> bool {
    use pgrx::pg_sys::PgOid;
    if READ_ENTRIES.with(|c| c.get()) {
        return true;
    }
    let types: [PgOid; 0] = [];
    let found = plans::first_datum("select to_regprocedure('baas._read_entries_ready(integer)') is not null", &types, &[], true)
        // SAFETY: a boolean, by value, never null.
        .and_then(|d| unsafe { <bool as pgrx::FromDatum>::from_datum(d, false) })
        .unwrap_or(false);
    if found {
        READ_ENTRIES.with(|c| c.set(true));
    }
    found
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

/// `$within` (query/src/geo.rs, `compile::within_cond`): the point whose latitude and
/// longitude Postgres writes as `lat` and `lng` lies in the shape (`Shape::canonical`
/// text). The same code as the evaluator's, on the same doubles; never raises.
#[pg_extern(immutable, strict, parallel_safe, name = "_geo_within")]
fn geo_within(lat: &str, lng: &str, shape: &str) -> bool {
    let num = |t: &str| serde_json::from_str::<Value>(t).ok().and_then(|v| v.as_f64());
    let (Some(lat), Some(lng)) = (num(lat), num(lng)) else { return false };
    with_shape(shape, |s| s.holds((lat, lng)))
}

/// `$covers` (`compile::covers_cond`): the area whose `coordinates` are this jsonb text
/// holds the point (`[latitude, longitude]` text).
#[pg_extern(immutable, strict, parallel_safe, name = "_geo_covers")]
fn geo_covers(coordinates: &str, point: &str) -> bool {
    let Ok(c) = serde_json::from_str::<Value>(coordinates) else { return false };
    let Some(p) = serde_json::from_str::<Value>(point).ok().and_then(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?))) else { return false };
    crate::query::geo::covers(&json!({"coordinates": c}), p)
}

/// Shapes kept read, by their text: a query calls `_geo_within` once per row and
/// condition with the same texts, and reading a 1,000-vertex polygon costs far more than
/// comparing its text (lengths first, then bytes: no hashing of 16 KiB per row). A
/// 16 KiB filter holds at most ~100 shapes (the node bound); past 128 the list starts
/// again, for another query's.
const SHAPES_KEPT: usize = 128;

thread_local! {
    static SHAPES: std::cell::RefCell<Vec<(String, Option<crate::query::geo::Shape>)>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn with_shape(text: &str, f: impl FnOnce(&crate::query::geo::Shape) -> bool) -> bool {
    SHAPES.with(|cell| {
        let mut kept = cell.borrow_mut();
        let at = match kept.iter().position(|(t, _)| t.len() == text.len() && t == text) {
            Some(i) => i,
            None => {
                if kept.len() >= SHAPES_KEPT {
                    kept.clear();
                }
                kept.push((text.to_string(), crate::query::geo::Shape::from_canonical(text)));
                kept.len() - 1
            }
        };
        kept[at].1.as_ref().is_some_and(f)
    })
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

#[cfg(test)]
mod value_count_tests {
    use super::count_values;

    #[test]
    fn values_are_counted_outside_strings_only() {
        assert_eq!(count_values(b"1"), (1, 1));
        // the object, "a", 1, "b", the array, 2, 3
        assert_eq!(count_values(br#"{"a": 1, "b": [2, 3]}"#).1, 7);
        // Separators inside strings, and escaped quotes, are not values.
        assert_eq!(count_values(br#"{"k,:[{": "x\",:[{y"}"#).1, 3);
        // A number-dense array: one value per element, plus the array.
        let dense = format!("[{}]", vec!["1"; 1000].join(", "));
        assert_eq!(count_values(dense.as_bytes()).1, 1001);
    }
}
