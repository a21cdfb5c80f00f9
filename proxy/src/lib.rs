//! The proxy's Postgres client as a library: the binary uses it, and the tests in
//! tests/tests/pgwire.rs drive it directly against real and scripted servers.

pub mod pgconfig;
pub mod pgwire;
