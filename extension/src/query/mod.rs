//! The document query language: filter JSON -> typed AST (the shared crate
//! `pgbaas-query`, query/src/parse.rs) -> SQL with bind parameters (compile.rs); the
//! shared crate's eval.rs is an independent in-memory evaluator of the same rules, used
//! to check the compiler (property tests) and by the proxy on live changes (issue 14).
pub mod compile;
pub use pgbaas_query::{eval, geo, parse};

#[cfg(test)]
mod fuzz;
#[cfg(any(test, feature = "pg_test"))]
mod rng;
#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;
