//! `#[pg_extern]` faces: thin wrappers that convert types and raise errors. The flows
//! that touch tables (signup, login, refresh, ...) are SQL in sql/auth.sql and call
//! these for the parts that need Rust: hashing, signing, validation.
pub mod auth;
pub mod doc_text;
pub mod documents;
pub mod email;
pub mod files;
pub mod leakproof;
pub mod oidc;
pub mod index_build;
pub mod plans;
pub mod query;
pub mod realtime;
pub mod tables;
pub mod realtime_worker;
pub mod rpc;
pub(crate) mod worker_launch;

/// A `jsonb` argument read without panicking. pgrx's own `JsonB` goes through
/// serde_json, which stops at 128 levels of nesting, and panics (an internal error,
/// XX000) when it does; this reports it as 54000 limit_exceeded instead.
pub struct Json(Result<serde_json::Value, String>);

impl Json {
    pub fn value(self, funcname: &'static str) -> serde_json::Value {
        use crate::error::{BaasError, OrRaise};
        self.0.map_err(BaasError::JsonTooDeep).or_raise(funcname)
    }
}

impl pgrx::FromDatum for Json {
    unsafe fn from_polymorphic_datum(datum: pgrx::pg_sys::Datum, is_null: bool, _: pgrx::pg_sys::Oid) -> Option<Json> {
        if is_null {
            return None;
        }
        unsafe {
            let varlena = datum.cast_mut_ptr();
            let detoasted = pgrx::pg_sys::pg_detoast_datum_packed(varlena);
            let text = pgrx::fcinfo::direct_function_call::<&core::ffi::CStr>(pgrx::pg_sys::jsonb_out, &[Some(detoasted.into())]);
            let parsed = match text {
                Some(cstr) => {
                    let v = cstr
                        .to_str()
                        .map_err(|e| e.to_string())
                        .and_then(|s| serde_json::from_str(s).map_err(|e| e.to_string()));
                    pgrx::pg_sys::pfree(cstr.as_ptr() as *mut core::ffi::c_void);
                    v
                }
                None => Err("jsonb_out returned nothing".to_string()),
            };
            if detoasted != varlena {
                pgrx::pg_sys::pfree(detoasted as *mut core::ffi::c_void);
            }
            Some(Json(parsed))
        }
    }
}

unsafe impl pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable for Json {
    const TYPE_IDENT: &'static str = <pgrx::JsonB as pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable>::TYPE_IDENT;
    const TYPE_ORIGIN: pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin =
        <pgrx::JsonB as pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable>::TYPE_ORIGIN;
    const ARGUMENT_SQL: Result<pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef, pgrx::pgrx_sql_entity_graph::metadata::ArgumentError> =
        <pgrx::JsonB as pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable>::ARGUMENT_SQL;
    const RETURN_SQL: Result<pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef, pgrx::pgrx_sql_entity_graph::metadata::ReturnsError> =
        <pgrx::JsonB as pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable>::RETURN_SQL;
}

unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for Json {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum().unwrap_or_else(|| panic!("argument {index} must not be null")) }
    }

    unsafe fn unbox_nullable_arg(arg: pgrx::callconv::Arg<'_, 'fcx>) -> pgrx::nullable::Nullable<Self> {
        unsafe { arg.unbox_arg_using_from_datum().into() }
    }
}
