//! `#[pg_extern]` faces: thin wrappers that convert types and raise errors. The flows
//! that touch tables (signup, login, refresh, ...) are SQL in sql/auth.sql and call
//! these for the parts that need Rust: hashing, signing, validation.
pub mod auth;
pub mod documents;
pub mod query;
