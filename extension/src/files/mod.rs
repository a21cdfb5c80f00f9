//! Files (issue 15): the parts of the file path that need Rust. Plain functions,
//! covered by `cargo test`; their `#[pg_extern]` faces are in api/files.rs.
//!
//! * `hash`: the running sha256 of an upload, kept between appends as sha2's
//!   serialised state (`baas._uploads.hash_state`), so the digest is of the bytes
//!   actually stored and survives a proxy restart.
//! * `sniff`: the content type read from the first bytes (magic numbers, `infer`).
//! * `names`: the file-name rule (NFC, trimmed, no path separators or controls).
pub mod hash;
pub mod names;
pub mod sniff;
