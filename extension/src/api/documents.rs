//! `#[pg_extern]` faces for collections, ACLs and schemas. These are pure helpers, so
//! they are granted to the API roles: the document functions that call them run as the
//! caller (SECURITY INVOKER), which is what lets row-level security decide.

use crate::documents::{acl::Acl, names, options, schema};
use crate::error::OrRaise;
use pgrx::prelude::*;
use super::Json;
use pgrx::JsonB;

/// The name, or 22023 invalid_collection_name.
#[pg_extern(immutable, strict, parallel_safe, name = "_check_collection_name")]
fn check_collection_name(name: &str) -> String {
    names::collection(name).or_raise("_check_collection_name");
    name.to_string()
}

#[pg_extern(immutable, strict, parallel_safe, name = "_check_role_name")]
fn check_role_name(name: &str) -> String {
    names::role(name).or_raise("_check_role_name");
    name.to_string()
}

/// Canonical principal (`user:<uuid>` lower-cased), or 22023 invalid_acl.
#[pg_extern(immutable, strict, parallel_safe, name = "_normalize_principal")]
fn normalize_principal(principal: &str) -> String {
    crate::documents::acl::principal(principal).or_raise("_normalize_principal")
}

/// Canonical ACL object, or 22023 invalid_acl.
#[pg_extern(immutable, strict, parallel_safe, name = "_normalize_acl")]
fn normalize_acl(acl: Json) -> JsonB {
    JsonB(Acl::parse(&acl.value("_normalize_acl")).or_raise("_normalize_acl").to_json())
}

/// Grant (`grant` = true) or revoke one permission in ACL lists; returns the new ACL.
#[pg_extern(immutable, strict, parallel_safe, name = "_acl_change")]
fn acl_change(
    read: Vec<String>,
    update: Vec<String>,
    delete: Vec<String>,
    permission: &str,
    principal: &str,
    grant: bool,
) -> JsonB {
    let mut acl = Acl::from_lists(read, update, delete);
    acl.change(permission, principal, grant).or_raise("_acl_change");
    JsonB(acl.to_json())
}

/// Canonical collection options, or 22023 invalid_options / invalid_schema.
#[pg_extern(immutable, parallel_safe, name = "_normalize_collection_options")]
fn normalize_collection_options(options: Option<Json>) -> JsonB {
    let v = options.map(|o| o.value("_normalize_collection_options")).unwrap_or(serde_json::Value::Null);
    JsonB(options::parse(&v).or_raise("_normalize_collection_options").to_json())
}

/// set_bucket's options (bucket, max_file_size, file_types, file_refs): only the keys
/// given, canonical; 22023 invalid_options.
#[pg_extern(immutable, strict, parallel_safe, name = "_normalize_file_options")]
fn normalize_file_options(options: Json) -> JsonB {
    JsonB(options::parse_file_options(&options.value("_normalize_file_options")).or_raise("_normalize_file_options").given_json())
}

/// Check `data` against a JSON Schema: 23514 schema_violation naming the failing path.
#[pg_extern(immutable, strict, parallel_safe, name = "_validate_document")]
fn validate_document(schema: Json, data: Json) {
    schema::validate(&schema.value("_validate_document"), &data.value("_validate_document")).or_raise("_validate_document")
}

/// A document id from the client, or NULL when it is not a UUID: an id that cannot
/// exist is simply not found. (Rust, not a regex in SQL: ~20 us -> well under 1 us.)
#[pg_extern(immutable, strict, parallel_safe, name = "_parse_document_id")]
fn parse_document_id(id: &str) -> Option<pgrx::Uuid> {
    if id.len() > 45 {
        return None;
    }
    uuid::Uuid::try_parse(id).ok().map(|u| pgrx::Uuid::from_bytes(*u.as_bytes()))
}

/// A jsonb value as its text (`jsonb_out`), numbers with every digit: the field
/// operators' argument and result type (pgrx's `JsonB` goes through serde_json, whose
/// numbers are f64 or 64-bit integers here).
pub struct JsonbText(pub String);

impl pgrx::FromDatum for JsonbText {
    unsafe fn from_polymorphic_datum(datum: pgrx::pg_sys::Datum, is_null: bool, _: pgrx::pg_sys::Oid) -> Option<JsonbText> {
        if is_null {
            return None;
        }
        unsafe {
            let varlena = datum.cast_mut_ptr();
            let detoasted = pgrx::pg_sys::pg_detoast_datum_packed(varlena);
            let text = pgrx::fcinfo::direct_function_call::<&core::ffi::CStr>(pgrx::pg_sys::jsonb_out, &[Some(detoasted.into())]);
            let s = match text {
                Some(cstr) => {
                    let s = cstr.to_string_lossy().into_owned();
                    pgrx::pg_sys::pfree(cstr.as_ptr() as *mut core::ffi::c_void);
                    s
                }
                None => String::new(),
            };
            if detoasted != varlena {
                pgrx::pg_sys::pfree(detoasted as *mut core::ffi::c_void);
            }
            Some(JsonbText(s))
        }
    }
}

impl pgrx::IntoDatum for JsonbText {
    fn into_datum(self) -> Option<pgrx::pg_sys::Datum> {
        // Text this module wrote: valid JSON without NUL (a NUL in a string is escaped).
        let c = std::ffi::CString::new(self.0).ok()?;
        unsafe { pgrx::fcinfo::direct_function_call_as_datum(pgrx::pg_sys::jsonb_in, &[Some(c.as_ptr().into())]) }
    }
    fn type_oid() -> pgrx::pg_sys::Oid {
        pgrx::pg_sys::JSONBOID
    }
}

unsafe impl pgrx::callconv::BoxRet for JsonbText {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut pgrx::callconv::FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        match pgrx::IntoDatum::into_datum(self) {
            Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
            None => fcinfo.return_null(),
        }
    }
}

unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for JsonbText {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum().unwrap_or_else(|| panic!("argument {index} must not be null")) }
    }

    unsafe fn unbox_nullable_arg(arg: pgrx::callconv::Arg<'_, 'fcx>) -> pgrx::nullable::Nullable<Self> {
        unsafe { arg.unbox_arg_using_from_datum().into() }
    }
}

unsafe impl pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable for JsonbText {
    const TYPE_IDENT: &'static str = <JsonB as pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable>::TYPE_IDENT;
    const TYPE_ORIGIN: pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin =
        <JsonB as pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable>::TYPE_ORIGIN;
    const ARGUMENT_SQL: Result<pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef, pgrx::pgrx_sql_entity_graph::metadata::ArgumentError> =
        <JsonB as pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable>::ARGUMENT_SQL;
    const RETURN_SQL: Result<pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef, pgrx::pgrx_sql_entity_graph::metadata::ReturnsError> =
        <JsonB as pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable>::RETURN_SQL;
}

/// Apply a field-operator patch (docs/operators.md) to a document's data; `at` is what
/// `$now` writes (the caller passes now()). 22023 invalid_operator for a wrong patch,
/// 22023 operator_type_mismatch when the document's value at a path has the wrong type
/// (both naming the path), 54000 limit_exceeded past 1000 levels of nesting.
#[pg_extern(immutable, strict, parallel_safe, name = "_apply_operators")]
fn apply_operators(data: JsonbText, ops: JsonbText, at: TimestampWithTimeZone) -> JsonbText {
    let micros: i64 = at.into_inner();
    ops_result(crate::documents::ops::apply(&data.0, &ops.0, micros, &mut || {
        pgrx::check_for_interrupts!();
    }), "_apply_operators")
}

/// An ops.rs result as the function's value, or its error raised with the code as DETAIL.
pub fn ops_result(r: Result<String, crate::documents::ops::OpError>, function: &'static str) -> JsonbText {
    match r {
        Ok(text) => JsonbText(text),
        Err(e) => {
            let state = match e {
                crate::documents::ops::OpError::TooDeep(_) => PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                _ => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            };
            pgrx::pg_sys::panic::ErrorReport::new(state, e.message().to_string(), function)
                .set_detail(e.code())
                .report(pgrx::PgLogLevel::ERROR);
            unreachable!("ERROR-level reports do not return")
        }
    }
}

