//! The team's own protected tables over HTTP (issue 17, docs/tables.md "Over HTTP"):
//! the JSON mapping of column types (json.rs) and the statements of the tables door
//! (compile.rs), plain Rust producing SQL text and parameters; the SQL faces
//! (extension/src/api/tables.rs, sql/tables.sql's http door) run them as the caller.
pub mod compile;
pub mod json;
