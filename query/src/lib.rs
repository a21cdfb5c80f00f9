//! The document query language (docs/query.md), shared by the extension and the proxy:
//! filter JSON -> typed AST (`parse`), and an in-memory evaluator of the same rules
//! (`eval`). The extension compiles the AST to SQL (extension/src/query/compile.rs) and
//! its property tests compare that SQL with `eval` on random filters and documents; the
//! proxy runs `eval` on live changes (issue 14), so a subscription's filter and a list's
//! `where` agree by construction and by test.

pub mod eval;
pub mod geo;
pub mod parse;
pub mod pattern;

/// Why input was refused: the stable code (`invalid_query` or `query_too_complex`,
/// docs/errors.md) and a message naming the part at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct QueryError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidQuery,
    /// Past one of the language's complexity bounds (docs/query.md, "Limits").
    TooComplex,
}

impl QueryError {
    pub fn invalid(m: impl Into<String>) -> QueryError {
        QueryError { kind: ErrorKind::InvalidQuery, message: m.into() }
    }
    pub fn too_complex(m: impl Into<String>) -> QueryError {
        QueryError { kind: ErrorKind::TooComplex, message: m.into() }
    }
    /// The code an HTTP client sees in `{"error":{"code"}}`.
    pub fn code(&self) -> &'static str {
        match self.kind {
            ErrorKind::InvalidQuery => "invalid_query",
            ErrorKind::TooComplex => "query_too_complex",
        }
    }
}
