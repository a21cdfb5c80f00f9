//! One error enum for the extension. Each variant carries an explicit SQLSTATE and a
//! stable snake_case code; the code travels in the error's DETAIL field, which is where
//! the proxy (and a DBA reading psql output) finds it. See docs/errors.md.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BaasError {
    #[error("email address is not valid")]
    InvalidEmail,
    #[error("password must be at least {min} characters")]
    WeakPassword { min: usize },
    #[error("password must be at most {max} bytes")]
    PasswordTooLong { max: usize },
    #[error("{0}")]
    InvalidRequest(String),
    #[error("signing key is malformed")]
    BadSigningKey,
    #[error("collection name must be 1-63 characters of a-z, 0-9 and _, starting with a letter")]
    InvalidCollectionName,
    #[error("role name must be 1-63 characters of a-z, 0-9, _, . and -, starting with a letter")]
    InvalidRoleName,
    #[error("{0}")]
    InvalidAcl(String),
    #[error("{0}")]
    InvalidOptions(String),
    #[error("{0}")]
    InvalidSchema(String),
    #[error("{0}")]
    InvalidQuery(String),
    /// Past one of the query language's complexity bounds (docs/query.md, "Limits").
    #[error("{0}")]
    QueryTooComplex(String),
    #[error("document does not match the collection schema at {path}: {message}")]
    SchemaViolation { path: String, message: String },
    #[error("JSON argument is nested too deeply or unreadable: {0}")]
    JsonTooDeep(String),
    /// A page or a document larger than baas.max_response_bytes.
    #[error("{0}")]
    ResponseTooLarge(String),
    #[error("{0}")]
    InvalidFileName(String),
    /// An email template that cannot be filled (extension/src/email/template.rs).
    #[error("{0}")]
    InvalidTemplate(String),
    /// A password hash handed to baas.import_users that no verifier here can use.
    #[error("{0}")]
    InvalidHash(String),
    /// An OpenID Connect ID token that fails a check (oidc/verify.rs names which).
    #[error("{0}")]
    InvalidIdToken(String),
    /// An ID token signed by a key the provider's stored key set lacks: refetch, retry.
    #[error("{0}")]
    OidcKeysStale(String),
    /// A provider's key set (JWKS) that cannot be used.
    #[error("{0}")]
    InvalidJwks(String),
}

impl BaasError {
    /// The stable code an HTTP client sees in `{"error":{"code"}}`.
    pub fn code(&self) -> &'static str {
        match self {
            BaasError::InvalidEmail => "invalid_email",
            BaasError::WeakPassword { .. } => "weak_password",
            BaasError::PasswordTooLong { .. } => "password_too_long",
            BaasError::InvalidRequest(_) => "invalid_request",
            BaasError::BadSigningKey => "internal_error",
            BaasError::InvalidCollectionName => "invalid_collection_name",
            BaasError::InvalidRoleName => "invalid_role_name",
            BaasError::InvalidAcl(_) => "invalid_acl",
            BaasError::InvalidOptions(_) => "invalid_options",
            BaasError::InvalidSchema(_) => "invalid_schema",
            BaasError::SchemaViolation { .. } => "schema_violation",
            BaasError::InvalidQuery(_) => "invalid_query",
            BaasError::QueryTooComplex(_) => "query_too_complex",
            BaasError::JsonTooDeep(_) => "limit_exceeded",
            BaasError::ResponseTooLarge(_) => "response_too_large",
            BaasError::InvalidFileName(_) => "invalid_file_name",
            BaasError::InvalidTemplate(_) => "invalid_template",
            BaasError::InvalidHash(_) => "invalid_hash",
            BaasError::InvalidIdToken(_) => "invalid_id_token",
            BaasError::OidcKeysStale(_) => "oidc_keys_stale",
            BaasError::InvalidJwks(_) => "invalid_jwks",
        }
    }

    pub fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            BaasError::InvalidEmail
            | BaasError::WeakPassword { .. }
            | BaasError::InvalidRequest(_)
            | BaasError::InvalidCollectionName
            | BaasError::InvalidRoleName
            | BaasError::InvalidAcl(_)
            | BaasError::InvalidOptions(_)
            | BaasError::InvalidSchema(_)
            | BaasError::InvalidQuery(_)
            | BaasError::InvalidFileName(_)
            | BaasError::InvalidTemplate(_)
            | BaasError::InvalidHash(_)
            | BaasError::InvalidJwks(_) => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            BaasError::InvalidIdToken(_) => PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            BaasError::OidcKeysStale(_) => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            BaasError::SchemaViolation { .. } => PgSqlErrorCode::ERRCODE_CHECK_VIOLATION,
            BaasError::PasswordTooLong { .. } => {
                PgSqlErrorCode::ERRCODE_STRING_DATA_RIGHT_TRUNCATION
            }
            BaasError::BadSigningKey => PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
            BaasError::JsonTooDeep(_) | BaasError::QueryTooComplex(_) | BaasError::ResponseTooLarge(_) => {
                PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED
            }
        }
    }

    /// Raise as a Postgres ERROR; never returns.
    pub fn raise(self, funcname: &'static str) -> ! {
        ErrorReport::new(self.sqlstate(), self.to_string(), funcname)
            .set_detail(self.code())
            .report(pgrx::PgLogLevel::ERROR);
        unreachable!("ERROR-level reports do not return")
    }
}

/// The shared query crate's refusals keep their codes (invalid_query, query_too_complex).
impl From<pgbaas_query::QueryError> for BaasError {
    fn from(e: pgbaas_query::QueryError) -> BaasError {
        match e.kind {
            pgbaas_query::ErrorKind::InvalidQuery => BaasError::InvalidQuery(e.message),
            pgbaas_query::ErrorKind::TooComplex => BaasError::QueryTooComplex(e.message),
        }
    }
}

pub trait OrRaise<T> {
    fn or_raise(self, funcname: &'static str) -> T;
}

impl<T, E: Into<BaasError>> OrRaise<T> for Result<T, E> {
    fn or_raise(self, funcname: &'static str) -> T {
        match self {
            Ok(v) => v,
            Err(e) => e.into().raise(funcname),
        }
    }
}
