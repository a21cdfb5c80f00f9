//! A document's JSON text written straight from its columns, for the list route's
//! page (issue 20, "cheaper lists").
//!
//! `baas._document_json(d, collection)` builds a jsonb object (eight keys, an `acl`
//! object, three arrays), the page printed it to measure it, unpacked every document
//! again to build the page's jsonb, and the route printed that. Per document that was
//! most of a list's cost in Postgres: 20 documents' pages spent ~5 µs a document
//! building and printing jsonb against ~0.3 µs for printing `data` alone (pgbench on
//! the benchmark's data, docs/benchmarks.md). Here each document is printed once, into
//! the page's buffer, with Postgres' own printers for each part (`JsonbToCString` for
//! `data` and `file`, `JsonEncodeDateTime` for times, `escape_json` for strings), in
//! the order and spacing `jsonb_out` gives — so the text is byte for byte what
//! `baas._document_json(d, collection)::text` is, which `list_text_is_list_documents_text`
//! (query/pg_tests.rs) checks page by page against `baas.list_documents(...)::text` over
//! random and awkward documents.

use pgrx::pg_sys;
use std::ffi::CStr;

/// The columns `compile::select_columns_sql` selects, 1-based.
const ID: i32 = 1;
const OWNER: i32 = 2;
const VERSION: i32 = 3;
const CREATED_AT: i32 = 4;
const UPDATED_AT: i32 = 5;
const DATA: i32 = 6;
const ACL_READ: i32 = 7;
const ACL_UPDATE: i32 = 8;
const ACL_DELETE: i32 = 9;
const FILE: i32 = 10;

fn append(out: pg_sys::StringInfo, s: &[u8]) {
    // SAFETY: a live StringInfo; appendBinaryStringInfo copies `s`.
    unsafe { pg_sys::appendBinaryStringInfo(out, s.as_ptr().cast(), s.len() as i32) }
}

/// Append `s` as a JSON string, as jsonb_out writes it (escape_json, with its quotes).
pub fn append_json_string(out: pg_sys::StringInfo, s: &CStr) {
    // SAFETY: a live StringInfo and a NUL-terminated string.
    unsafe { pg_sys::escape_json(out, s.as_ptr()) }
}

fn column(slot: *mut pg_sys::TupleTableSlot, n: i32) -> Option<pg_sys::Datum> {
    let mut isnull = false;
    // SAFETY: the slot holds a row of the page query, which has every column above.
    let d = unsafe { pg_sys::slot_getattr(slot, n, &mut isnull) };
    (!isnull).then_some(d)
}

/// A uuid as its text, as uuid_out writes it (lower-case hex, hyphenated).
pub fn uuid_text(d: pg_sys::Datum) -> [u8; 36] {
    // SAFETY: a uuid datum points at its 16 bytes.
    let b: &[u8; 16] = unsafe { &*(d.cast_mut_ptr::<u8>() as *const [u8; 16]) };
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [0u8; 36];
    let mut i = 0;
    for (k, byte) in b.iter().enumerate() {
        if matches!(k, 4 | 6 | 8 | 10) {
            t[i] = b'-';
            i += 1;
        }
        t[i] = HEX[(byte >> 4) as usize];
        t[i + 1] = HEX[(byte & 15) as usize];
        i += 2;
    }
    t
}

fn append_uuid(out: pg_sys::StringInfo, d: Option<pg_sys::Datum>) {
    match d {
        Some(d) => {
            append(out, b"\"");
            append(out, &uuid_text(d));
            append(out, b"\"");
        }
        None => append(out, b"null"),
    }
}

fn append_time(out: pg_sys::StringInfo, d: pg_sys::Datum) {
    let mut buf = [0 as std::ffi::c_char; pg_sys::MAXDATELEN as usize + 1];
    // SAFETY: a timestamptz datum, and a buffer of MAXDATELEN + 1 bytes as
    // JsonEncodeDateTime asks; it writes a NUL-terminated string there (to_jsonb's
    // text for a timestamptz, in the session's time zone).
    unsafe {
        pg_sys::JsonEncodeDateTime(buf.as_mut_ptr(), d, pg_sys::TIMESTAMPTZOID, std::ptr::null());
        append_json_string(out, CStr::from_ptr(buf.as_ptr()));
    }
}

fn append_jsonb(out: pg_sys::StringInfo, d: pg_sys::Datum) {
    // SAFETY: a jsonb datum; pg_detoast_datum gives it with a 4-byte header (a copy if
    // it was toasted or short), whose root container follows the header.
    // JsonbToCString appends to `out`.
    unsafe {
        let p = pg_sys::pg_detoast_datum(d.cast_mut_ptr());
        let root = (p as *mut u8).add(pg_sys::VARHDRSZ) as *mut pg_sys::JsonbContainer;
        pg_sys::JsonbToCString(out, root, pgrx::varlena::varsize_any(p) as i32);
        if p != d.cast_mut_ptr() {
            pg_sys::pfree(p.cast());
        }
    }
}

/// A text[] as to_jsonb writes it: nested arrays per dimension, strings escaped,
/// NULL elements as null.
fn append_text_array(out: pg_sys::StringInfo, d: pg_sys::Datum) {
    // SAFETY: a text[] datum, detoasted; deconstruct_array gives its elements and
    // null flags (palloc'd, freed below) in row-major order.
    unsafe {
        let a = pg_sys::pg_detoast_datum(d.cast_mut_ptr()) as *mut pg_sys::ArrayType;
        let ndim = (*a).ndim as usize;
        if ndim == 0 {
            append(out, b"[]");
            if a as *mut pg_sys::varlena != d.cast_mut_ptr() {
                pg_sys::pfree(a.cast());
            }
            return;
        }
        let dims = std::slice::from_raw_parts((a as *const u8).add(std::mem::size_of::<pg_sys::ArrayType>()) as *const i32, ndim);
        let (mut elems, mut nulls, mut n) = (std::ptr::null_mut(), std::ptr::null_mut(), 0);
        pg_sys::deconstruct_array(a, pg_sys::TEXTOID, -1, false, pg_sys::TYPALIGN_INT as std::ffi::c_char, &mut elems, &mut nulls, &mut n);
        let elems = std::slice::from_raw_parts(elems, n as usize);
        let nulls = std::slice::from_raw_parts(nulls, n as usize);
        let mut next = 0usize;
        write_dim(out, dims, elems, nulls, &mut next);
        pg_sys::pfree(elems.as_ptr() as *mut std::ffi::c_void);
        pg_sys::pfree(nulls.as_ptr() as *mut std::ffi::c_void);
        if a as *mut pg_sys::varlena != d.cast_mut_ptr() {
            pg_sys::pfree(a.cast());
        }
    }
}

/// One dimension of an array (to_jsonb's array_dim_to_jsonb): `[a, b]`, or the
/// arrays of the next dimension.
fn write_dim(out: pg_sys::StringInfo, dims: &[i32], elems: &[pg_sys::Datum], nulls: &[bool], next: &mut usize) {
    append(out, b"[");
    for i in 0..dims[0] {
        if i > 0 {
            append(out, b", ");
        }
        if dims.len() > 1 {
            write_dim(out, &dims[1..], elems, nulls, next);
            continue;
        }
        let k = *next;
        *next += 1;
        if nulls[k] {
            append(out, b"null");
        } else {
            // SAFETY: a text element of the array; text_to_cstring pallocs a copy.
            unsafe {
                let s = pg_sys::text_to_cstring(elems[k].cast_mut_ptr());
                append_json_string(out, CStr::from_ptr(s));
                pg_sys::pfree(s.cast());
            }
        }
    }
    append(out, b"]");
}

/// Append the document in `slot` (the columns of `compile::select_columns_sql`) as
/// `baas._document_json(d, collection)::text` prints it; `collection` is the
/// collection's name already written as a JSON string. Returns the id's text.
pub fn append_document(out: pg_sys::StringInfo, slot: *mut pg_sys::TupleTableSlot, collection: &[u8]) -> [u8; 36] {
    let id = column(slot, ID).map(uuid_text).unwrap_or([b'0'; 36]);
    // jsonb keeps an object's keys shortest first, then bytewise: id, acl, data,
    // file, owner, version, collection, created_at, updated_at; and acl's read,
    // delete, update.
    append(out, b"{\"id\": \"");
    append(out, &id);
    append(out, b"\", \"acl\": {\"read\": ");
    for (n, key) in [(ACL_READ, &b""[..]), (ACL_DELETE, b", \"delete\": "), (ACL_UPDATE, b", \"update\": ")] {
        append(out, key);
        match column(slot, n) {
            Some(d) => append_text_array(out, d),
            None => append(out, b"null"),
        }
    }
    append(out, b"}, \"data\": ");
    match column(slot, DATA) {
        Some(d) => append_jsonb(out, d),
        None => append(out, b"null"),
    }
    // _document_json adds `file` only for a document that has one.
    if let Some(f) = column(slot, FILE) {
        append(out, b", \"file\": ");
        append_jsonb(out, f);
    }
    append(out, b", \"owner\": ");
    append_uuid(out, column(slot, OWNER));
    append(out, b", \"version\": ");
    match column(slot, VERSION) {
        Some(v) => append(out, (v.value() as i64).to_string().as_bytes()),
        None => append(out, b"null"),
    }
    append(out, b", \"collection\": ");
    append(out, collection);
    for (n, key) in [(CREATED_AT, &b", \"created_at\": "[..]), (UPDATED_AT, b", \"updated_at\": ")] {
        append(out, key);
        match column(slot, n) {
            Some(d) => append_time(out, d),
            None => append(out, b"null"),
        }
    }
    append(out, b"}");
    id
}
