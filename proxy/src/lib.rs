//! The proxy's Postgres client as a library: the binary uses it, and the tests in
//! tests/tests/pgwire.rs drive it directly against real and scripted servers.

pub mod pgconfig;
pub mod pgwire;
/// A caller's principals as the live feeds compute them; a library module too so that
/// tests/tests/realtime_principals.rs can compare it with `baas.principals()`.
#[path = "realtime/principals.rs"]
pub mod principals;
