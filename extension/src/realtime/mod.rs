//! Live change feeds, the capture side (issue 14, docs/realtime.md "Capture"): writers'
//! triggers emit transactional logical messages (sql/realtime.sql); `baas._realtime_pull`
//! (api/realtime.rs) reads them from a logical replication slot through the built-in
//! `pgoutput` plugin and appends them to `baas.realtime_events` in commit order. This
//! module is the plain part: reading pgoutput's binary messages and grouping them into
//! transactions, with no Postgres in the loop, so that it is tested by `cargo test`.
pub mod pgoutput;
