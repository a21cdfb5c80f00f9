//! pgbaas: a mobile backend inside PostgreSQL.
//!
//! Layout: `auth/` and `error.rs` are plain Rust covered by `cargo test`; `api/` holds
//! the `#[pg_extern]` faces; the tables and SQL-level flows live in `sql/`, every
//! row-level policy and permission predicate in `sql/permissions.sql`.
use pgrx::prelude::*;

pub mod api;
pub mod auth;
pub mod documents;
pub mod email;
pub mod error;
pub mod files;
pub mod oidc;
pub mod query;
pub mod realtime;
pub mod rpc;
pub mod tables;

::pgrx::pg_module_magic!();

/// The library's settings (GUCs), defined when a backend first loads it.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    api::query::define_settings();
    api::realtime::define_settings();
    api::realtime_worker::define_settings();
}

extension_sql_file!("../../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!(
    "../../sql/auth.sql",
    name = "auth",
    requires = [
        "schema",
        api::auth::normalize_email,
        api::auth::email_key,
        api::auth::check_password,
        api::auth::hash_password,
        api::auth::verify_password,
        api::auth::password_needs_rehash,
        api::auth::generate_signing_key,
        api::auth::sign_jwt,
        api::auth::new_refresh_token,
        api::auth::hash_token,
        api::auth::uuid7,
        api::auth::merge_patch,
        api::auth::claim,
    ]
);
extension_sql_file!(
    "../../sql/documents.sql",
    name = "documents",
    requires = [
        "auth",
        api::documents::check_collection_name,
        api::documents::check_role_name,
        api::documents::normalize_principal,
        api::documents::normalize_acl,
        api::documents::acl_change,
        api::documents::normalize_collection_options,
        api::documents::validate_document,
        api::documents::parse_document_id,
        api::query::compile_query,
        api::query::find_compiled,
        api::query::find_compiled_text,
        api::query::count_compiled,
        api::query::check_fields,
        api::query::index_expression,
        api::index_build::index_build_launch,
        // Field operators (issue 18, package A)
        api::documents::apply_operators,
    ]
);
// Files: buckets, blobs, chunks, uploads (issue 15).
extension_sql_file!(
    "../../sql/files.sql",
    name = "files",
    requires = [
        "documents",
        api::files::sha256_new,
        api::files::sha256_update,
        api::files::sha256_final,
        api::files::sniff_type,
        api::files::file_type,
        api::files::normalize_content_type,
        api::files::file_type_allowed,
        api::files::check_file_name,
        api::documents::normalize_file_options,
    ]
);
// Every policy and permission predicate, over the tables documents.sql and files.sql made.
extension_sql_file!("../../sql/permissions.sql", name = "permissions", requires = ["files"]);
extension_sql_file!("../../sql/audit.sql", name = "audit", requires = ["permissions"]);
// The lints run last but grants: they read what every other file made.
extension_sql_file!("../../sql/dump.sql", name = "dump", requires = ["audit"]);
// Live change feeds: capture triggers, the event log and the puller's SQL (issue 14).
extension_sql_file!("../../sql/realtime.sql", name = "realtime", requires = ["dump"]);
// Account lifecycle (issue 16): columns on earlier tables, so loaded last but grants.
extension_sql_file!(
    "../../sql/accounts.sql",
    name = "accounts",
    requires = [
        "realtime",
        // multi-factor (i16-a2)
        api::auth::totp_code,
        api::auth::totp_match,
        api::auth::totp_uri,
        api::auth::totp_secret,
        api::auth::new_recovery_codes,
    ]
);
// Email outbox and templates (issue 16, package B). After accounts.sql, whose 0.6.0
// settings column comes first in an upgraded database too (same column order).
extension_sql_file!(
    "../../sql/email.sql",
    name = "email",
    requires = ["accounts", api::email::render_template, api::email::check_template]
);
// Sign in with Apple, Google or any OpenID Connect provider (issue 16, package C).
extension_sql_file!(
    "../../sql/oidc.sql",
    name = "oidc",
    requires = ["email", api::oidc::oidc_verify, api::oidc::oidc_check_jwks]
);
// Social graph: follows and the followers: principal (issue 16, package D).
extension_sql_file!("../../sql/social.sql", name = "social", requires = ["oidc"]);
// The team's own schema behind the same door (issue 17): RPC, then protected tables.
extension_sql_file!("../../sql/rpc.sql", name = "rpc", requires = ["social", api::rpc::rpc_plan]);
extension_sql_file!(
    "../../sql/tables.sql",
    name = "tables",
    requires = [
        "rpc",
        api::tables::table_list_sql,
        api::tables::table_get_sql,
        api::tables::table_insert_sql,
        api::tables::table_update_sql,
        api::tables::table_delete_sql
    ]
);
// Data operations (issue 18): references and expand, batches, webhooks, housekeeping.
// (Field operators live in documents.sql, beside the PATCH they extend.)
extension_sql_file!("../../sql/refs.sql", name = "refs", requires = ["tables"]);
extension_sql_file!("../../sql/batch.sql", name = "batch", requires = ["refs"]);
extension_sql_file!("../../sql/webhooks.sql", name = "webhooks", requires = ["batch"]);
extension_sql_file!("../../sql/housekeeping.sql", name = "housekeeping", requires = ["webhooks"]);
// Operations (issue 19): per-account limits shared by every proxy (Postgres is the shared place).
extension_sql_file!("../../sql/limits.sql", name = "limits", requires = ["housekeeping"]);
// The Parse door (issue 21): usernames and session tokens beside pgbaas's own accounts.
extension_sql_file!("../../sql/parse.sql", name = "parse", requires = ["limits"]);
extension_sql_file!("../../sql/lints.sql", name = "lints", requires = ["parse"]);
extension_sql_file!("../../sql/grants.sql", name = "grants", finalize);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn signup_then_login_round_trip() {
        let out = Spi::get_one::<pgrx::JsonB>(
            "select baas.signup('Pg@Example.com', 'long enough pw')",
        )
        .unwrap()
        .unwrap()
        .0;
        assert_eq!(out["user"]["email"], "pg@example.com");
        assert_eq!(out["token_type"], "bearer");
        let login = Spi::get_one::<pgrx::JsonB>(
            "select baas.login('pg@example.com', 'long enough pw')",
        )
        .unwrap()
        .unwrap()
        .0;
        assert_eq!(login["user"]["id"], out["user"]["id"]);
        assert_ne!(login["refresh_token"], out["refresh_token"]);
    }

    #[pg_test]
    fn wrong_password_is_refused_and_recorded() {
        Spi::run("select baas.signup('w@example.com', 'long enough pw')").unwrap();
        // Answered, not raised, so that the failure's audit entry commits.
        let r = Spi::get_one::<pgrx::JsonB>("select baas.login('w@example.com', 'not the password')").unwrap().unwrap().0;
        assert_eq!(r["error"]["code"], "invalid_credentials");
        assert!(r.get("access_token").is_none());
        let n = Spi::get_one::<i64>("select count(*) from baas.audit_log where action = 'login.failure'").unwrap().unwrap();
        assert_eq!(n, 1);
    }

    #[pg_test]
    fn a_refresh_retried_within_the_interval_gets_the_same_pair() {
        let s = Spi::get_one::<pgrx::JsonB>("select baas.signup('retry@example.com', 'long enough pw')")
            .unwrap()
            .unwrap()
            .0;
        let rt = s["refresh_token"].as_str().unwrap().to_string();
        let refresh = |t: &str| {
            Spi::get_one_with_args::<pgrx::JsonB>("select baas.refresh($1)", &[t.to_string().into()]).unwrap().unwrap().0
        };
        let first = refresh(&rt);
        let next = first["refresh_token"].as_str().unwrap().to_string();
        // A retry (one transaction: within the interval) gets the same refresh token; the
        // successor's own retry is followed too, to the newest unspent token.
        let retry = refresh(&rt);
        assert_eq!(retry["refresh_token"], first["refresh_token"], "{retry}");
        assert!(retry.get("access_token").is_some());
        let second = refresh(&next);
        let again = refresh(&rt);
        assert_eq!(again["refresh_token"], second["refresh_token"], "{again}");
        assert_ne!(second["refresh_token"], first["refresh_token"]);
    }

    #[pg_test]
    fn refresh_reuse_revokes_the_session() {
        // Past the reuse interval (0: no retries), a spent token revokes its session.
        Spi::run("update baas.settings set refresh_reuse_interval = '0'").unwrap();
        let s = Spi::get_one::<pgrx::JsonB>("select baas.signup('r@example.com', 'long enough pw')")
            .unwrap()
            .unwrap()
            .0;
        let rt = s["refresh_token"].as_str().unwrap().to_string();
        let first = Spi::get_one_with_args::<pgrx::JsonB>("select baas.refresh($1)", &[rt.clone().into()])
            .unwrap()
            .unwrap()
            .0;
        assert!(first.get("access_token").is_some());
        let reused = Spi::get_one_with_args::<pgrx::JsonB>("select baas.refresh($1)", &[rt.into()])
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(reused["error"]["code"], "refresh_token_reused");
        // The rotated token of the same family no longer works either.
        let newer = first["refresh_token"].as_str().unwrap().to_string();
        let r = std::panic::catch_unwind(|| {
            Spi::run_with_args("select baas.refresh($1)", &[newer.into()])
        });
        assert!(r.is_err() || r.unwrap().is_err());
    }

    #[pg_test]
    fn jwks_has_public_keys_only_and_rotation_keeps_old_key() {
        let before = Spi::get_one::<pgrx::JsonB>("select baas.jwks()").unwrap().unwrap().0;
        assert_eq!(before["keys"].as_array().unwrap().len(), 1);
        assert!(before["keys"][0].get("d").is_none());
        Spi::run("select baas.rotate_signing_key()").unwrap();
        let after = Spi::get_one::<pgrx::JsonB>("select baas.jwks()").unwrap().unwrap().0;
        assert_eq!(after["keys"].as_array().unwrap().len(), 2);
    }
}

#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
