//! The document query language: filter JSON -> typed AST (parse.rs) -> SQL with bind
//! parameters (compile.rs); eval.rs is an independent in-memory evaluator of the same
//! rules, used to check the compiler (property tests).
pub mod compile;
pub mod eval;
pub mod parse;

#[cfg(test)]
mod fuzz;
#[cfg(any(test, feature = "pg_test"))]
mod rng;
#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;
