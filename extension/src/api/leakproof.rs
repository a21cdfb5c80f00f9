//! The C entry points of the leakproof jsonb twins (sql/documents.sql): each hands its
//! call, arguments and all, to Postgres' own jsonb function.
//!
//! They used to be `language internal` functions naming those builtins. Postgres finds
//! an internal function that is not itself a builtin by a linear search of every
//! builtin's name (~3,000 strcmp calls), each time a query using it starts: 4% of
//! Postgres' CPU on the list benchmark. A `language c` function is looked up in a hash
//! table once per connection.
//!
//! The forwarding functions own nothing that needs dropping, so a Postgres error
//! raised inside the builtin may jump straight through them.

use pgrx::pg_sys;

macro_rules! twin {
    ($symbol:ident, $finfo:ident, $builtin:ident) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub unsafe extern "C-unwind" fn $symbol(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
            // SAFETY: Postgres calls this with a valid fcinfo for the declared
            // (jsonb, ...) signature, which is the builtin's own.
            unsafe { pg_sys::$builtin(fcinfo) }
        }
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static pg_sys::Pg_finfo_record {
            const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }
    };
}

twin!(baas_jsonb_object_field, pg_finfo_baas_jsonb_object_field, jsonb_object_field);
twin!(baas_jsonb_eq, pg_finfo_baas_jsonb_eq, jsonb_eq);
twin!(baas_jsonb_lt, pg_finfo_baas_jsonb_lt, jsonb_lt);
twin!(baas_jsonb_le, pg_finfo_baas_jsonb_le, jsonb_le);
twin!(baas_jsonb_gt, pg_finfo_baas_jsonb_gt, jsonb_gt);
twin!(baas_jsonb_ge, pg_finfo_baas_jsonb_ge, jsonb_ge);
twin!(baas_jsonb_cmp, pg_finfo_baas_jsonb_cmp, jsonb_cmp);
twin!(baas_jsonb_contains, pg_finfo_baas_jsonb_contains, jsonb_contains);
