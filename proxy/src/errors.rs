//! The one table from SQLSTATE to HTTP status, and the JSON error body.
//! Model: PostgREST's mapSQLtoHTTP. The extension puts a stable snake_case code in the
//! error's DETAIL; when it does not (a Postgres-raised error), the table's code is used.

use http::StatusCode;
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// Seconds for a Retry-After header (429).
    pub retry_after: Option<u64>,
    /// `ETag` of the reply: a 412's current version.
    pub etag: Option<String>,
    /// Postgres refused the call itself (42501 from a GRANT, not a policy's own
    /// error): the server words the message after the route's declared caller.
    pub grant_refused: bool,
    /// A user function's HINT and DETAIL (SQLSTATE PT4xx, or a plain RAISE answered as
    /// `raised` on the RPC routes): error.hint and error.detail of the body.
    pub hint: Option<String>,
    pub detail: Option<String>,
    /// A plain `RAISE EXCEPTION` (P0001): a 500 elsewhere, but on the RPC routes the
    /// function's own words, 400 `raised` (server.rs swaps this in).
    pub raised: Option<Box<ApiError>>,
    /// A batch's failing operation, 0-based (POST /v1/batch): error.operation.
    pub operation: Option<usize>,
    /// The SQLSTATE a database error came with (None for the proxy's own errors):
    /// replicas.rs runs a read again on the primary only for some of them.
    pub sqlstate: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.to_string(),
            message: message.into(),
            retry_after: None,
            etag: None,
            grant_refused: false,
            hint: None,
            detail: None,
            raised: None,
            operation: None,
            sqlstate: None,
        }
    }
    pub fn rate_limited(retry_after: u64) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", format!("too many requests; retry in {retry_after} s"));
        e.retry_after = Some(retry_after);
        e
    }
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn invalid_token(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_token", message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", message)
    }
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal error")
    }
    /// An error the proxy itself makes, its status from `status_for_code`.
    pub fn coded(code: &str, message: impl Into<String>) -> Self {
        Self::new(status_for_code(code).unwrap_or(StatusCode::BAD_REQUEST), code, message)
    }
    pub fn body(&self) -> Vec<u8> {
        let mut e = json!({"code": self.code, "message": self.message});
        if let Some(h) = &self.hint {
            e["hint"] = json!(h);
        }
        if let Some(d) = &self.detail {
            e["detail"] = json!(d);
        }
        if let Some(n) = self.operation {
            e["operation"] = json!(n);
        }
        json!({ "error": e }).to_string().into_bytes()
    }

    /// Map a database error. `anonymous` turns "permission denied" into 401: the
    /// caller should sign in, not give up. A `version_conflict`'s HINT is the
    /// document's current version: it becomes the reply's ETag.
    pub fn from_sqlstate(sqlstate: &str, message: &str, detail: Option<&str>, hint: Option<&str>, anonymous: bool) -> Self {
        if let Some(status) = raised_status(sqlstate) {
            return ApiError { sqlstate: Some(sqlstate.to_string()), ..Self::user_raised(status, message, detail, hint) };
        }
        let (status, default_code) = status_for(sqlstate, anonymous);
        let own_code = detail.filter(|d| is_code(d));
        let code = own_code.unwrap_or(default_code);
        let etag = hint
            .filter(|_| code == "version_conflict")
            .and_then(|h| h.trim().parse::<i64>().ok())
            .map(|v| format!("\"{v}\""));
        let status = status_for_code(code).unwrap_or(status);
        let shown = if status == StatusCode::INTERNAL_SERVER_ERROR {
            // Never show server internals to a client; the log has them.
            "internal error".to_string()
        } else if sqlstate == "42501" && anonymous && status == StatusCode::UNAUTHORIZED {
            // (A code with a status of its own, e.g. forbidden or anonymous_sign_in_disabled,
            // keeps its message: signing in would not help.)
            "this call needs a signed-in user: send Authorization: Bearer <access_token>".to_string()
        } else {
            message.to_string()
        };
        let grant_refused = sqlstate == "42501" && own_code.is_none();
        // A house code in its DETAIL (not_found, conflict ...) gives that code's status.
        let raised_status = own_code.and_then(house_status).unwrap_or(StatusCode::BAD_REQUEST);
        let raised = (sqlstate == "P0001").then(|| Box::new(Self::user_raised(raised_status, message, detail, hint)));
        let mut e = Self::new(status, code, shown);
        (e.etag, e.grant_refused, e.raised) = (etag, grant_refused, raised);
        e.sqlstate = Some(sqlstate.to_string());
        e
    }

    /// An error of `baas.batch` (issue 18, package B): a failing operation's message is
    /// `batch operation <n>: <its own message>`. The index moves to `operation` and the
    /// message becomes the operation's own, as its single request answers it. A 412's
    /// ETag is dropped: on the batch's reply it would name no document.
    pub fn batch_operation(mut self) -> Self {
        let split = self.message.strip_prefix(BATCH_OPERATION).and_then(|r| r.split_once(": "));
        if let Some((n, rest)) = split.and_then(|(n, rest)| Some((n.parse::<usize>().ok()?, rest))) {
            self.message = rest.to_string();
            self.operation = Some(n);
        }
        self.etag = None;
        self
    }

    /// An error a user's function chose (rpc, package A): its status, its DETAIL as the
    /// code when that is a snake_case code (else shown as error.detail beside a code of
    /// the status: `raised` for a plain RAISE's 400), its HINT as error.hint.
    fn user_raised(status: StatusCode, message: &str, detail: Option<&str>, hint: Option<&str>) -> Self {
        let own_code = detail.filter(|d| is_code(d));
        let code = own_code.map_or_else(|| default_code_for(status), str::to_string);
        let mut e = Self::new(status, &code, message);
        e.hint = hint.map(str::to_string);
        e.detail = detail.filter(|_| own_code.is_none()).map(str::to_string);
        e
    }
}

/// The status of one of our codes chosen by a user's plain RAISE (rpc, package A): its
/// own (status_for_code), else that of the SQLSTATE whose default code it is, `*_not_found`
/// 404. Only 4xx: a code of a 5xx stays the RAISE's 400.
fn house_status(code: &str) -> Option<StatusCode> {
    const STATES: &[&str] = &["23505", "28P01", "28000", "42501", "P0002", "40001", "25006", "42725"];
    let s = status_for_code(code)
        .or_else(|| STATES.iter().map(|s| status_for(s, false)).chain([status_for("42501", true)]).find(|(_, c)| *c == code).map(|(s, _)| s))
        .or_else(|| code.ends_with("_not_found").then_some(StatusCode::NOT_FOUND))?;
    s.is_client_error().then_some(s)
}

/// SQLSTATE PT400..PT499 (PostgREST's convention): that HTTP status.
fn raised_status(sqlstate: &str) -> Option<StatusCode> {
    let n: u16 = sqlstate.strip_prefix("PT")?.parse().ok()?;
    (sqlstate.len() == 5 && (400..=499).contains(&n)).then(|| StatusCode::from_u16(n).ok()).flatten()
}

/// The code of a user-raised status without one of its own: `raised` for 400, else its
/// reason phrase in snake_case (404 not_found, 409 conflict), or `client_error`.
fn default_code_for(status: StatusCode) -> String {
    if status == StatusCode::BAD_REQUEST {
        return "raised".into();
    }
    let Some(reason) = status.canonical_reason() else {
        return "client_error".into();
    };
    let mut out = String::new();
    for c in reason.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let out = out.trim_matches('_').to_string();
    if is_code(&out) { out } else { "client_error".into() }
}

/// How baas.batch (sql/batch.sql) begins the message of a failing operation's error.
const BATCH_OPERATION: &str = "batch operation ";

fn is_code(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Codes whose status is more specific than their SQLSTATE's.
pub fn status_for_code(code: &str) -> Option<StatusCode> {
    match code {
        "version_conflict" => Some(StatusCode::PRECONDITION_FAILED),
        "schema_violation" => Some(StatusCode::UNPROCESSABLE_ENTITY),
        // Signed in or not, this caller may see the thing but not do this to it.
        "forbidden" => Some(StatusCode::FORBIDDEN),
        // Files (docs/files.md): limits, types, upload sessions, tus, thumbnails.
        "file_too_large" | "quota_exceeded" | "payload_too_large" => Some(StatusCode::PAYLOAD_TOO_LARGE),
        "unsupported_file_type" | "content_type_mismatch" | "thumbnail_unsupported" | "upload_body_required" => {
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        }
        "upload_expired" => Some(StatusCode::GONE),
        "offset_mismatch" => Some(StatusCode::CONFLICT),
        "upload_locked" => Some(StatusCode::LOCKED),
        "checksum_mismatch" => StatusCode::from_u16(460).ok(),
        "image_too_large" | "invalid_image" => Some(StatusCode::UNPROCESSABLE_ENTITY),
        "range_not_satisfiable" => Some(StatusCode::RANGE_NOT_SATISFIABLE),
        "too_many_transfers" | "too_many_uploads" => Some(StatusCode::TOO_MANY_REQUESTS),
        "thumbnails_busy" => Some(StatusCode::SERVICE_UNAVAILABLE),
        "invalid_link" => Some(StatusCode::UNAUTHORIZED),
        "tus_version" => Some(StatusCode::PRECONDITION_FAILED),
        "request_timeout" => Some(StatusCode::REQUEST_TIMEOUT),
        "not_implemented" => Some(StatusCode::NOT_IMPLEMENTED),
        // Accounts: email flows (sql/accounts.sql).
        "email_not_configured" => Some(StatusCode::SERVICE_UNAVAILABLE),
        "anonymous_not_allowed" | "aal2_required" => Some(StatusCode::FORBIDDEN),
        "invalid_code" | "code_expired" => Some(StatusCode::UNAUTHORIZED),
        // accounts: multi-factor (sql/accounts.sql); aal2_required is above.
        "factor_exists" => Some(StatusCode::CONFLICT),
        // Accounts: anonymous, sessions, suspension (sql/accounts.sql).
        "anonymous_sign_in_disabled" => Some(StatusCode::FORBIDDEN),
        "not_anonymous" => Some(StatusCode::CONFLICT),
        // oidc (issue 16, package C; sql/oidc.sql). oidc_keys_stale never reaches a
        // client of the oidc routes (server.rs refetches, then says invalid_id_token).
        "invalid_id_token" | "id_token_reused" => Some(StatusCode::UNAUTHORIZED),
        "identity_link_required" | "identity_taken" | "last_sign_in_method" | "provider_in_use" => Some(StatusCode::CONFLICT),
        // rpc (issue 17, package A; sql/rpc.sql, extension/src/rpc/).
        "function_not_found" => Some(StatusCode::NOT_FOUND),
        "invalid_arguments" | "ambiguous_function" => Some(StatusCode::BAD_REQUEST),
        "method_not_allowed" => Some(StatusCode::METHOD_NOT_ALLOWED),
        // tables over HTTP (issue 17, package C): a protected table whose row-level
        // security was turned off is not served until it is protected again.
        "table_unprotected" => Some(StatusCode::SERVICE_UNAVAILABLE),
        _ => None,
    }
}

/// SQLSTATE -> (HTTP status, default code).
pub fn status_for(sqlstate: &str, anonymous: bool) -> (StatusCode, &'static str) {
    use StatusCode as S;
    match sqlstate {
        "23505" => (S::CONFLICT, "conflict"),
        "23503" => (S::CONFLICT, "conflict"),
        "28P01" => (S::UNAUTHORIZED, "invalid_credentials"),
        "28000" => (S::UNAUTHORIZED, "invalid_token"),
        "42501" if anonymous => (S::UNAUTHORIZED, "not_authenticated"),
        "42501" => (S::FORBIDDEN, "forbidden"),
        "P0002" => (S::NOT_FOUND, "not_found"),
        "40001" | "40P01" => (S::CONFLICT, "serialization_failure"),
        "57014" => (S::SERVICE_UNAVAILABLE, "query_timeout"),
        "55000" => (S::SERVICE_UNAVAILABLE, "service_unavailable"),
        "25006" => (S::METHOD_NOT_ALLOWED, "read_only"),
        // Postgres could not choose among a function's overloads (the RPC door checks
        // first; this is the backstop).
        "42725" => (S::BAD_REQUEST, "ambiguous_function"),
        // A regular expression Postgres would not compile ("too complex"): the query
        // language's `$regex` (query/src/pattern.rs refuses what is known to be).
        "2201B" => (S::BAD_REQUEST, "query_too_complex"),
        // Program limits a client's input can hit, e.g. a value too large for the
        // btree index on its field (54000).
        s if s.starts_with("54") => (S::BAD_REQUEST, "limit_exceeded"),
        s if s.starts_with("22") || s == "23502" || s == "23514" => (S::BAD_REQUEST, "invalid_request"),
        s if s.starts_with("08") || s.starts_with("53") || s.starts_with("57P") => {
            (S::SERVICE_UNAVAILABLE, "database_unavailable")
        }
        _ => (S::INTERNAL_SERVER_ERROR, "internal_error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_code_wins_when_well_formed() {
        let e = ApiError::from_sqlstate("22023", "password too short", Some("weak_password"), None, true);
        assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "weak_password"));
        let e = ApiError::from_sqlstate("22023", "bad", Some("Key (x)=(1) is bad"), None, true);
        assert_eq!(e.code, "invalid_request");
        // A regular expression Postgres would not compile is the query's fault, said so.
        let e = ApiError::from_sqlstate("2201B", "invalid regular expression: regular expression is too complex", None, None, false);
        assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "query_too_complex"));
    }

    #[test]
    fn permission_denied_depends_on_sign_in() {
        assert_eq!(status_for("42501", true).0, StatusCode::UNAUTHORIZED);
        assert_eq!(status_for("42501", false).0, StatusCode::FORBIDDEN);
    }

    #[test]
    fn unknown_states_are_500_without_internals() {
        let e = ApiError::from_sqlstate("XX000", "secret internals", None, None, false);
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.message, "internal error");
        let body: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(body["error"]["code"], "internal_error");
    }

    #[test]
    fn codes_refine_statuses() {
        let e = ApiError::from_sqlstate("40001", "stale", Some("version_conflict"), Some("7"), false);
        assert_eq!((e.status, e.etag.as_deref()), (StatusCode::PRECONDITION_FAILED, Some("\"7\"")));
        let e = ApiError::from_sqlstate("40001", "stale", Some("serialization_failure"), Some("7"), false);
        assert_eq!(e.etag, None, "only a version conflict's hint is a version");
        let e = ApiError::from_sqlstate("23514", "bad", Some("schema_violation"), None, false);
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        let e = ApiError::from_sqlstate("42501", "no", Some("forbidden"), None, true);
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        let e = ApiError::from_sqlstate("P0002", "no", Some("document_not_found"), None, true);
        assert_eq!((e.status, e.code.as_str()), (StatusCode::NOT_FOUND, "document_not_found"));
    }

    #[test]
    fn file_codes_have_their_statuses() {
        for (code, status) in [
            ("file_too_large", 413),
            ("quota_exceeded", 413),
            ("unsupported_file_type", 415),
            ("content_type_mismatch", 415),
            ("thumbnail_unsupported", 415),
            ("upload_expired", 410),
            ("offset_mismatch", 409),
            ("upload_locked", 423),
            ("checksum_mismatch", 460),
            ("image_too_large", 422),
            ("invalid_image", 422),
            ("range_not_satisfiable", 416),
            ("too_many_transfers", 429),
            ("too_many_uploads", 429),
            ("thumbnails_busy", 503),
            ("invalid_link", 401),
            ("tus_version", 412),
            ("upload_body_required", 415),
            ("request_timeout", 408),
        ] {
            assert_eq!(ApiError::coded(code, "x").status.as_u16(), status, "{code}");
        }
        let e = ApiError::from_sqlstate("54000", "too big", Some("file_too_large"), None, false);
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        let e = ApiError::from_sqlstate("22023", "offset", Some("offset_mismatch"), Some("5"), false);
        assert_eq!(e.status, StatusCode::CONFLICT);
    }

    #[test]
    fn user_raised_errors_choose_their_status_and_code() {
        let e = ApiError::from_sqlstate("PT409", "seat taken", Some("seat_taken"), Some("pick another"), false);
        assert_eq!((e.status, e.code.as_str(), e.hint.as_deref(), e.detail.as_deref()), (StatusCode::CONFLICT, "seat_taken", Some("pick another"), None));
        let body: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(body, serde_json::json!({"error": {"code": "seat_taken", "message": "seat taken", "hint": "pick another"}}));
        // A code of ours with a status of its own does not override the chosen status.
        let e = ApiError::from_sqlstate("PT418", "no", Some("forbidden"), None, true);
        assert_eq!((e.status.as_u16(), e.code.as_str()), (418, "forbidden"));
        let e = ApiError::from_sqlstate("PT404", "gone", Some("Not a code."), None, false);
        assert_eq!((e.status.as_u16(), e.code.as_str(), e.detail.as_deref()), (404, "not_found", Some("Not a code.")));
        for s in ["PT500", "PT399", "PT4x1", "PT40"] {
            assert_eq!(ApiError::from_sqlstate(s, "m", None, None, false).status, StatusCode::INTERNAL_SERVER_ERROR, "{s}");
        }
        // A plain RAISE is a 500 unless the route is the RPC door's.
        let e = ApiError::from_sqlstate("P0001", "out of stock", None, Some("later"), false);
        assert_eq!((e.status, e.message.as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "internal error"));
        assert_eq!(e.body(), ApiError::internal().body(), "existing replies unchanged");
        let r = e.raised.unwrap();
        assert_eq!((r.status, r.code.as_str(), r.message.as_str(), r.hint.as_deref()), (StatusCode::BAD_REQUEST, "raised", "out of stock", Some("later")));
        // A house code in the DETAIL of a plain RAISE gives that code's status.
        for (code, status) in [("not_found", 404), ("note_not_found", 404), ("conflict", 409), ("forbidden", 403), ("version_conflict", 412), ("seat_taken", 400), ("thumbnails_busy", 400)] {
            let r = ApiError::from_sqlstate("P0001", "m", Some(code), None, false).raised.unwrap();
            assert_eq!((r.status.as_u16(), r.code.as_str()), (status, code), "{code}");
        }
    }

    #[test]
    fn a_batch_error_names_its_operation() {
        let e = ApiError::from_sqlstate("40001", "batch operation 3: document is at version 2, not 1", Some("version_conflict"), Some("2"), false)
            .batch_operation();
        assert_eq!((e.status, e.code.as_str(), e.message.as_str(), e.operation, e.etag.as_deref()), (StatusCode::PRECONDITION_FAILED, "version_conflict", "document is at version 2, not 1", Some(3), None));
        let body: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(body, json!({"error": {"code": "version_conflict", "message": "document is at version 2, not 1", "operation": 3}}));
        // A whole-batch error (no operation) and anything else keep their words.
        for m in ["operations is empty: send at least one operation", "batch operation x: y", "batch operation 2 no colon"] {
            let e = ApiError::from_sqlstate("22023", m, Some("invalid_batch"), None, false).batch_operation();
            assert_eq!((e.message.as_str(), e.operation), (m, None));
        }
        assert_eq!(ApiError::internal().body(), br#"{"error":{"code":"internal_error","message":"internal error"}}"#.to_vec(), "other errors unchanged");
    }

    #[test]
    fn duplicate_is_409_and_credentials_401() {
        assert_eq!(status_for("23505", false).0, StatusCode::CONFLICT);
        assert_eq!(status_for("28P01", true).0, StatusCode::UNAUTHORIZED);
        assert_eq!(status_for("22P02", true).0, StatusCode::BAD_REQUEST);
        assert_eq!(status_for("54000", false), (StatusCode::BAD_REQUEST, "limit_exceeded"));
    }
}
