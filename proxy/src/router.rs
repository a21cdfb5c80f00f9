//! What a route is, and finding the route of a request. The routes themselves are one
//! table of these structs, `routes::ROUTES`: routing, 404/405 with `Allow`, body checks,
//! the SQL call and the reply are all read from it (PostgREST's request -> plan ->
//! query -> response split: routes/plan.rs makes the plan, db.rs runs it, server.rs
//! writes the reply). The OpenAPI document is derived from the same table (openapi.rs).
//!
//! Paths are matched segment by segment, exactly as sent (no dot-segment resolution,
//! no empty segments); path parameters are percent-decoded only after a match, without
//! form rules (`+` is a plus), and reach SQL as bind parameters only.

use crate::errors::ApiError;
use crate::ratelimit::Kind;
use http::{Method, StatusCode};
use std::borrow::Cow;

/// Longest route pattern, in segments; longer paths are 404 without a table scan.
pub const MAX_SEGMENTS: usize = 8;
/// Most path parameters of one route.
pub const MAX_PARAMS: usize = 4;

/// One route: everything the proxy knows about it.
#[derive(Debug)]
pub struct Route {
    /// Stable name (the OpenAPI operationId to be).
    pub name: &'static str,
    pub method: Method,
    pub path: &'static [Seg],
    /// Who Postgres lets call it (GRANTs and policies decide; this only words errors).
    pub auth: Auth,
    /// Limits besides the per-IP request limit every route counts against.
    pub limits: &'static [Limit],
    /// What the request carries and how it is answered.
    pub kind: RouteKind,
    /// The JSON body's top-level fields; None: no body is read.
    pub body: Option<&'static [Field]>,
    pub query: Query,
    /// The one SQL statement, with `$n` bound from `args` in order.
    pub sql: &'static str,
    pub args: &'static [Arg],
    pub answer: Answer,
    /// On 55000 oidc_keys_stale, fetch the keys of the body's `provider` again and run
    /// the statement once more (oidc/jwks.rs, `refresh_stale`).
    pub oidc_retry: bool,
    /// --- B describe (issue 19): what the OpenAPI document says of the route that the
    /// fields above cannot give (openapi.rs).
    pub doc: Doc,
    /// A read (issue 19, replicas): a GET of JSON whose SQL only reads, which a read
    /// replica in rotation may answer (proxy/src/replicas.rs). Never a streaming or
    /// file route, never one that writes (an audit entry, a token used up).
    pub read: bool,
}

/// A route's words and answer schema in the OpenAPI document (openapi.rs); the rest of
/// its description is derived from the route itself. Empty: the default.
#[derive(Debug, Clone, Copy)]
pub struct Doc {
    /// One line; empty: made from the name.
    pub summary: &'static str,
    /// The success body's JSON Schema as JSON text; empty: any JSON (no stricter than
    /// the truth: the SQL function's JSON is the body).
    pub returns: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg {
    Lit(&'static str),
    /// A parameter segment: its name (for messages and docs) and type.
    Param(&'static str, ParamType),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    Text,
    /// Checked before SQL: a malformed one is 400 naming the parameter.
    Uuid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anonymous callers too (anonymous rights are Postgres's to decide).
    Anyone,
    /// A user's access token.
    User,
    /// A service token.
    Service,
}

/// A rate limit: which bucket kind, and the key it counts under.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub kind: Kind,
    pub key: LimitKey,
    /// Only when this body field is present (a password change).
    pub when: Option<&'static str>,
}

#[derive(Debug, Clone, Copy)]
pub enum LimitKey {
    /// The client's address (ratelimit::ip_key). Checked before the token and body.
    Ip,
    /// `ratelimit::account_key(prefix, <string body field>)`.
    Body(&'static str, &'static str),
    /// The same, per client address too: sign-ins, so that an attacker spending an
    /// account's attempts cannot spend its owner's (issue 13; Postgres throttles the
    /// account as a whole, and exempts the owner's known clients).
    BodyAndIp(&'static str, &'static str),
    /// `ratelimit::account_key(prefix, <the token's sub>)`.
    Subject(&'static str),
    /// The client's address, one more token per element of this body array beyond the
    /// first (the request itself took one): a batch costs what its operations would
    /// (ratelimit::Limiter::check_batch).
    IpPerItem(&'static str),
}

/// How a route talks: JSON in and out now. Raw uploads/downloads, SSE, WebSocket
/// upgrades and Parse shapes are kinds later issues add; the server writes replies
/// with write_response_header/write_response_body, so a kind may stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// The SQL call's JSON is the reply.
    Json,
    /// `/healthz`: the request pool's state.
    Health,
    /// The signing keys' JWKS, from the proxy's cache.
    Jwks,
    /// `GET /v1/realtime`: a WebSocket upgrade, then live change feeds (realtime/ws.rs).
    WebSocket,
    /// `GET /v1/collections/{c}/events`: one feed as Server-Sent Events (realtime/sse.rs).
    Sse,
    /// Uploads, downloads and tus (files/): the body or the answer streams, a piece at
    /// a time, through calls of their own (files/sql.rs); no `sql` here.
    File(crate::files::FileOp),
    /// --- B describe (issue 19): `GET /v1/openapi.json`, the document made at start-up
    /// from this table (openapi.rs); no database work.
    OpenApi,
}

/// A top-level body field. Fields not declared are refused, naming the field.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub ty: FieldType,
    pub need: Need,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Required,
    Optional,
    /// Optional, but at least one of the route's `OneOf` fields must be sent.
    OneOf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Text,
    Uuid,
    Object,
    /// Document data: an object; a wrong type is `invalid_data`.
    Data,
    /// Any JSON; SQL checks it (an ACL).
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// No query parameters: any is refused.
    None,
    /// where, order, limit, offset, count, after, fields.
    List,
    /// `kind=btree|gin` (dropping an index).
    IndexKind,
    /// `limit` (1..1000, default 50) and `after` (an id): a plain page (followers).
    Page,
    /// Any names: the query parameters as a JSON object of strings (a repeated name an
    /// array), for `Arg::QueryArgs` (GET /v1/rpc/{function}).
    Args,
    /// The list parameters of `List`, with `after` a table row's key (any text, not an
    /// id): the tables door (sql/tables.sql).
    Rows,
    /// `expand` only: a document GET (docs/references.md).
    Expand,
    /// The list parameters of `List` and `expand`: the documents list route.
    ListExpand,
    /// `collection` and `field` (required), `limit` (1..1000, default 100), `after` (an
    /// id) and `expand`: a document's back-references.
    Referrers,
}

/// Where a `$n` of the route's SQL comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// The n-th path parameter, decoded.
    Path(usize),
    /// A body field (NULL when absent), typed as declared.
    Field(&'static str),
    /// The whole body, as jsonb.
    Body,
    /// `If-Match` as a version (NULL when absent or `*`).
    IfMatch,
    List(ListArg),
    IndexKind,
    /// The query parameters as a JSON object (`Query::Args`).
    QueryArgs,
    /// The whole body as the client sent it (text; checked to be a JSON object), so that
    /// numbers keep every digit (the RPC door: `$n::text::jsonb`).
    RawBody,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListArg {
    Filter,
    Order,
    Limit,
    Offset,
    Count,
    After,
    Fields,
    /// `expand` as a text[] of paths (NULL when absent).
    Expand,
    /// `collection` of `Query::Referrers`.
    Collection,
    /// `field` of `Query::Referrers`.
    Field,
}

#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub status: StatusCode,
    pub shape: Shape,
    /// Tokens, account data and documents: `Cache-Control: no-store`.
    pub no_store: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The first column is the JSON body.
    Json,
    /// The JSON body and, second column, its version: the `ETag`.
    Document,
    /// Nothing: 204.
    Void,
    /// Columns 2 and 3 are `error.code` and `error.message` of a JSON result that is a
    /// failure (returned, not raised, so its audit entry and throttle count commit):
    /// then 401 with them; the message is the fallback. An optional column 4 is
    /// `error.retry_after`: when set, 429 with that Retry-After (a sign-in throttle).
    ErrorResult(&'static str),
    /// The RPC door: column 2 true -> 204, else 200 with column 1 (the function's JSON).
    Rpc,
    /// A batch (POST /v1/batch): as Json; a failing operation's error carries its
    /// index as error.operation (ApiError::batch_operation).
    Batch,
}

/// The raw (still percent-encoded) path parameters of a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params<'a> {
    raw: [&'a str; MAX_PARAMS],
    len: usize,
}

impl<'a> Params<'a> {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }
    /// The i-th parameter, percent-decoded (no form rules); not UTF-8 -> 400.
    pub fn get(&self, i: usize) -> Result<Cow<'a, str>, ApiError> {
        decode_path(self.raw[i])
    }
}

/// A path segment, percent-decoded with no form rules: `+` stays a plus.
pub fn decode_path(s: &str) -> Result<Cow<'_, str>, ApiError> {
    let d = percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map_err(|_| ApiError::bad_request("invalid_request", "the path is not valid percent-encoded UTF-8"))?;
    if d.contains('\0') {
        // Postgres text cannot hold NUL: refused here rather than with its own wording.
        return Err(ApiError::bad_request("invalid_request", "the path may not contain %00 (NUL)"));
    }
    Ok(d)
}

#[derive(Debug)]
pub enum Match<'a> {
    Found(&'static Route, Params<'a>),
    /// The path exists with other methods: the `Allow` value.
    WrongMethod(String),
    NotFound,
}

/// Find `method path` in `table`. No allocation unless the answer is 405.
pub fn route<'a>(table: &'static [Route], method: &Method, path: &'a str) -> Match<'a> {
    let Some(rest) = path.strip_prefix('/') else {
        return Match::NotFound;
    };
    let mut segs = [""; MAX_SEGMENTS];
    let mut n = 0;
    for s in rest.split('/') {
        if s.is_empty() || n == MAX_SEGMENTS {
            return Match::NotFound;
        }
        segs[n] = s;
        n += 1;
    }
    let segs = &segs[..n];
    let mut path_known = false;
    for r in table {
        if !shape_matches(table, r.path, segs) {
            continue;
        }
        if r.method == *method {
            let mut p = Params { raw: [""; MAX_PARAMS], len: 0 };
            for (pat, s) in r.path.iter().zip(segs) {
                if let Seg::Param(..) = pat {
                    p.raw[p.len] = s;
                    p.len += 1;
                }
            }
            return Match::Found(r, p);
        }
        path_known = true;
    }
    if path_known {
        Match::WrongMethod(allow(table, segs))
    } else {
        Match::NotFound
    }
}

fn shape_matches(table: &[Route], pattern: &[Seg], segs: &[&str]) -> bool {
    pattern.len() == segs.len()
        && pattern.iter().zip(segs).enumerate().all(|(i, (p, s))| match p {
            Seg::Lit(l) => l == s,
            // A uuid parameter does not take a word that another route of this length
            // has as a literal there: `/v1/users/lookup` is its own path beside
            // `/v1/users/{id}`. Any other value reaches the route, whose check names it.
            Seg::Param(_, ParamType::Uuid) => {
                !table.iter().any(|o| o.path.len() == segs.len() && matches!(o.path[i], Seg::Lit(l) if l == *s))
            }
            Seg::Param(..) => true,
        })
}

/// The `Allow` value of a path: the methods of the table's routes it matches, in
/// table order.
fn allow(table: &[Route], segs: &[&str]) -> String {
    let mut out = String::new();
    for r in table.iter().filter(|r| shape_matches(table, r.path, segs)) {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(r.method.as_str());
    }
    out
}

/// A route's path pattern as text, e.g. `/v1/collections/{collection}/documents`.
pub fn pattern(r: &Route) -> String {
    r.path
        .iter()
        .map(|s| match s {
            Seg::Lit(l) => format!("/{l}"),
            Seg::Param(name, _) => format!("/{{{name}}}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::ROUTES;

    fn found(m: Method, p: &str) -> Option<(&'static str, Vec<String>)> {
        match route(ROUTES, &m, p) {
            Match::Found(r, ps) => Some((r.name, (0..ps.len()).map(|i| ps.get(i).unwrap().into_owned()).collect())),
            _ => None,
        }
    }

    fn allow_of(m: Method, p: &str) -> Option<String> {
        match route(ROUTES, &m, p) {
            Match::WrongMethod(a) => Some(a),
            _ => None,
        }
    }

    #[test]
    fn routes() {
        assert_eq!(found(Method::POST, "/v1/auth/signup").unwrap().0, "signup");
        assert_eq!(found(Method::DELETE, "/v1/auth/user").unwrap().0, "delete_user");
        assert_eq!(allow_of(Method::GET, "/v1/auth/signup").as_deref(), Some("POST"));
        assert_eq!(allow_of(Method::PUT, "/v1/auth/user").as_deref(), Some("GET, PATCH, DELETE"));
        for p in ["/v1/auth/signup/", "/v1/../healthz", "", "//healthz", "/a/b/c/d/e/f/g/h/i/j"] {
            assert!(matches!(route(ROUTES, &Method::GET, p), Match::NotFound), "{p}");
        }
    }

    #[test]
    fn document_routes_carry_their_parameters_decoded() {
        assert_eq!(
            found(Method::PATCH, "/v1/collections/todos/documents/abc"),
            Some(("patch_document", vec!["todos".into(), "abc".into()]))
        );
        assert_eq!(
            found(Method::DELETE, "/v1/collections/t/indexes/a+b%2Fc%20d"),
            Some(("drop_index", vec!["t".into(), "a+b/c d".into()])),
            "a path segment has no form rules: + is a plus"
        );
        assert_eq!(allow_of(Method::POST, "/v1/collections/t/documents/x").as_deref(), Some("GET, PUT, PATCH, DELETE"));
        let Match::Found(_, p) = route(ROUTES, &Method::GET, "/v1/collections/%FF/documents") else { panic!() };
        assert_eq!(p.get(0).unwrap_err().status, StatusCode::BAD_REQUEST);
    }
}
