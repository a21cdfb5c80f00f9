//! `#[pg_extern]` faces for files (sql/files.sql): the running sha256 of an upload,
//! content sniffing and the file-name rule. Pure functions; the running-hash ones are
//! called by the SECURITY DEFINER upload functions only, the others are granted to the
//! API roles because invoker code (the documents guard, update_file) calls them.
use crate::error::OrRaise;
use crate::files::{hash, names, sniff};
use pgrx::prelude::*;

/// The serialised state of an empty sha256.
#[pg_extern(immutable, strict, parallel_safe, name = "_sha256_new")]
fn sha256_new() -> Vec<u8> {
    hash::new()
}

/// The state after hashing `data` on from `state` (22023 invalid_request when the
/// state is not one of ours).
#[pg_extern(immutable, strict, parallel_safe, name = "_sha256_update")]
fn sha256_update(state: &[u8], data: &[u8]) -> Vec<u8> {
    hash::update(state, data).or_raise("_sha256_update")
}

/// The digest (32 bytes) of everything hashed into `state`.
#[pg_extern(immutable, strict, parallel_safe, name = "_sha256_final")]
fn sha256_final(state: &[u8]) -> Vec<u8> {
    hash::finish(state).or_raise("_sha256_final")
}

/// The MIME type the first bytes of a file show (magic numbers), or NULL.
#[pg_extern(immutable, strict, parallel_safe, name = "_sniff_type")]
fn sniff_type(head: &[u8]) -> Option<String> {
    sniff::sniff(head).map(str::to_string)
}

/// The type to store for a file whose first bytes are `head`, declared as `declared`
/// (NULL: none): the rule of upload_finish. NULL when the declaration contradicts
/// the bytes (the caller raises content_type_mismatch).
#[pg_extern(immutable, parallel_safe, name = "_file_type")]
fn file_type(declared: Option<&str>, head: Option<&[u8]>) -> Option<String> {
    sniff::decide(declared, head.unwrap_or(&[])).ok()
}

/// A declared content type in canonical form (lower case, no parameters, aliases
/// mapped), NULL when empty; 22023 invalid_request when it is not `type/subtype`.
#[pg_extern(immutable, strict, parallel_safe, name = "_normalize_content_type")]
fn normalize_content_type(declared: &str) -> Option<String> {
    let t = sniff::normalize(declared)?;
    if !sniff::valid(&t) {
        crate::error::BaasError::InvalidRequest(format!("content type {declared:?} is not type/subtype")).raise("_normalize_content_type");
    }
    Some(t)
}

/// Whether `content_type` is allowed by a bucket's `file_types` (NULL list: any).
#[pg_extern(immutable, parallel_safe, name = "_file_type_allowed")]
fn file_type_allowed(content_type: &str, allowed: Option<Vec<String>>) -> bool {
    allowed.is_none_or(|l| sniff::allowed(content_type, &l))
}

/// The file name in NFC, trimmed; 22023 invalid_file_name when empty, longer than
/// 255 bytes, `.`/`..`, or holding a path separator or control character.
#[pg_extern(immutable, strict, parallel_safe, name = "_check_file_name")]
fn check_file_name(name: &str) -> String {
    names::check(name).or_raise("_check_file_name")
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;
    use sha2::{Digest, Sha256};

    #[pg_test]
    fn sha256_state_round_trip_in_sql() {
        let data: Vec<u8> = (0..130u32).map(|i| (i * 31 + 7) as u8).collect();
        let one = Sha256::digest(&data).to_vec();
        for cut in 0..=data.len() {
            let d = Spi::get_one_with_args::<Vec<u8>>(
                "select baas._sha256_final(baas._sha256_update(baas._sha256_update(baas._sha256_new(), $1), $2))",
                &[data[..cut].to_vec().into(), data[cut..].to_vec().into()],
            )
            .unwrap()
            .unwrap();
            assert_eq!(d, one, "split at {cut}");
        }
        // An ERROR inside SPI unwinds the test instead of coming back as Err: catch it in SQL.
        assert_eq!(sqlstate_of("select baas._sha256_final('\\x0102'::bytea)"), "22023", "a malformed state is refused");
    }

    #[pg_test]
    fn sniff_and_name_rules_in_sql() {
        let t = Spi::get_one::<String>("select baas._sniff_type('\\x89504e470d0a1a0a0000000d49484452'::bytea)").unwrap();
        assert_eq!(t.as_deref(), Some("image/png"));
        let none = Spi::get_one::<String>("select baas._sniff_type('\\x68656c6c6f'::bytea)").unwrap();
        assert_eq!(none, None);
        let mismatch = Spi::get_one::<String>("select baas._file_type('image/png', '\\xffd8ffe000104a464946'::bytea)").unwrap();
        assert_eq!(mismatch, None);
        let jpg = Spi::get_one::<String>("select baas._file_type('image/jpg', '\\xffd8ffe000104a464946'::bytea)").unwrap();
        assert_eq!(jpg.as_deref(), Some("image/jpeg"));
        let n = Spi::get_one::<String>("select baas._check_file_name('  a.txt ')").unwrap();
        assert_eq!(n.as_deref(), Some("a.txt"));
        for bad in ["../x", "a/b", "..", ""] {
            let q = format!("select baas._check_file_name('{}')", bad.replace('\'', "''"));
            assert_eq!(sqlstate_of(&q), "22023", "{bad:?}");
        }
    }

    /// The SQLSTATE `q` raises, or "ok".
    fn sqlstate_of(q: &str) -> String {
        Spi::run(
            "create or replace function pg_temp.sqlstate_of(q text) returns text language plpgsql as $f$
             begin execute q; return 'ok'; exception when others then return sqlstate; end $f$",
        )
        .unwrap();
        Spi::get_one_with_args::<String>("select pg_temp.sqlstate_of($1)", &[q.into()]).unwrap().unwrap_or_default()
    }
}
