//! THE ROUTE TABLE: every HTTP route of the proxy, one entry each — method, path,
//! who may call it, its limits, its body shape, the one SQL statement it runs with
//! where each `$n` comes from, and how the answer becomes a reply. Routing, `Allow`,
//! body and query checks (input.rs), binding (plan.rs) and replies (server.rs) are all
//! read from here. Adding a route is one entry here plus its SQL function in `baas`.
//!
//! `auth` words errors only: Postgres decides who may call what (GRANTs, policies).

pub mod input;
pub mod plan;

use crate::ratelimit::Kind;
use crate::router::Arg::{Body, Field as F, IfMatch, IndexKind, List, Path};
use crate::router::FieldType::{Any, Data, Object, Text, Uuid};
use crate::router::ListArg as L;
use crate::router::{Answer, Arg, Auth, Doc, Field, FieldType, Limit, LimitKey, Need, ParamType, Query, Route, RouteKind, Seg, Shape};
use crate::files::FileOp;
use http::{Method, StatusCode};

const fn lit(s: &'static str) -> Seg {
    Seg::Lit(s)
}
const fn p(name: &'static str) -> Seg {
    Seg::Param(name, ParamType::Text)
}
const fn uuid(name: &'static str) -> Seg {
    Seg::Param(name, ParamType::Uuid)
}
const fn req(name: &'static str, ty: FieldType) -> Field {
    Field { name, ty, need: Need::Required }
}
const fn opt(name: &'static str, ty: FieldType) -> Field {
    Field { name, ty, need: Need::Optional }
}
/// At least one of the route's `one_of` fields must be sent.
const fn one_of(name: &'static str, ty: FieldType) -> Field {
    Field { name, ty, need: Need::OneOf }
}
/// A body of any field names (the RPC and table doors: argument or column names,
/// which Postgres checks); still a JSON object, passed whole with `Body`.
const ANY_FIELDS: &[Field] = &[Field { name: input::ANY_FIELD, ty: Any, need: Need::Optional }];
const fn per_ip(kind: Kind) -> Limit {
    Limit { kind, key: LimitKey::Ip, when: None }
}
/// Per account, keyed by a body field (ratelimit::account_key(prefix, value)).
const fn per_account(prefix: &'static str, field: &'static str) -> Limit {
    Limit { kind: Kind::Account, key: LimitKey::Body(prefix, field), when: None }
}
/// Per account and client address: what one client may try against one account.
const fn per_account_and_ip(prefix: &'static str, field: &'static str) -> Limit {
    Limit { kind: Kind::Account, key: LimitKey::BodyAndIp(prefix, field), when: None }
}

const fn r(name: &'static str, method: Method, path: &'static [Seg], auth: Auth) -> Route {
    // Every field written out: a struct update from a default would drop its Method.
    Route {
        name,
        method,
        path,
        auth,
        limits: &[],
        kind: RouteKind::Json,
        body: None,
        query: Query::None,
        sql: "",
        args: &[],
        answer: Answer { status: StatusCode::OK, shape: Shape::Json, no_store: false },
        oidc_retry: false,
        doc: Doc { summary: "", returns: "" },
        read: false,
    }
}

// Builders for the table's entries. They assign fields rather than use `..self`:
// Route holds a `Method`, whose destructor a const fn may not run.
impl Route {
    const fn sql(mut self, sql: &'static str, args: &'static [Arg]) -> Route {
        self.sql = sql;
        self.args = args;
        self
    }
    const fn body(mut self, fields: &'static [Field]) -> Route {
        self.body = Some(fields);
        self
    }
    const fn limits(mut self, limits: &'static [Limit]) -> Route {
        self.limits = limits;
        self
    }
    const fn query(mut self, query: Query) -> Route {
        self.query = query;
        self
    }
    const fn kind(mut self, kind: RouteKind) -> Route {
        self.kind = kind;
        self
    }
    const fn answer(mut self, status: StatusCode, shape: Shape) -> Route {
        self.answer.status = status;
        self.answer.shape = shape;
        self
    }
    /// An ID token route: a token naming a key Postgres lacks gets the provider's keys
    /// fetched again (at most once per oidc_refetch_floor_secs) and one more try.
    const fn oidc_retry(mut self) -> Route {
        self.oidc_retry = true;
        self
    }
    /// A read a replica may answer (issue 19, replicas): its SQL only reads.
    const fn read(mut self) -> Route {
        self.read = true;
        self
    }
    /// Replies carry tokens, account data or documents: never cached.
    const fn private(mut self) -> Route {
        self.answer.no_store = true;
        self
    }
    /// --- B describe (issue 19): the OpenAPI summary and success body schema (JSON
    /// Schema text, no stricter than the truth; openapi.rs).
    const fn doc(mut self, summary: &'static str, returns: &'static str) -> Route {
        self.doc = Doc { summary, returns };
        self
    }
}

const GET: Method = Method::GET;
const POST: Method = Method::POST;
const PUT: Method = Method::PUT;
const PATCH: Method = Method::PATCH;
const DELETE: Method = Method::DELETE;
const HEAD: Method = Method::HEAD;
const OPTIONS: Method = Method::OPTIONS;
const CREATED: StatusCode = StatusCode::CREATED;
const OK: StatusCode = StatusCode::OK;
const NO_CONTENT: StatusCode = StatusCode::NO_CONTENT;
use Auth::{Anyone, Service, User};

const USER: &[Seg] = &[lit("v1"), lit("auth"), lit("user")];
const IDENTITIES: &[Seg] = &[lit("v1"), lit("auth"), lit("identities")];
const COLLECTIONS: &[Seg] = &[lit("v1"), lit("collections")];
const COLLECTION: &[Seg] = &[lit("v1"), lit("collections"), p("collection")];
const DOCS: &[Seg] = &[lit("v1"), lit("collections"), p("collection"), lit("documents")];
const DOC: &[Seg] = &[lit("v1"), lit("collections"), p("collection"), lit("documents"), p("id")];
const ACL: &[Seg] = &[lit("v1"), lit("collections"), p("collection"), lit("documents"), p("id"), lit("acl")];
const REFERRERS: &[Seg] = &[lit("v1"), lit("collections"), p("collection"), lit("documents"), p("id"), lit("referrers")];
const OWNER: &[Seg] = &[lit("v1"), lit("collections"), p("collection"), lit("documents"), p("id"), lit("owner")];
const INDEXES: &[Seg] = &[lit("v1"), lit("collections"), p("collection"), lit("indexes")];
const INDEX: &[Seg] = &[lit("v1"), lit("collections"), p("collection"), lit("indexes"), p("path")];
const ROLES: &[Seg] = &[lit("v1"), lit("roles")];
const ROLE: &[Seg] = &[lit("v1"), lit("roles"), p("role")];
const MEMBER: &[Seg] = &[lit("v1"), lit("roles"), p("role"), lit("members"), uuid("user")];
const SUBROLE: &[Seg] = &[lit("v1"), lit("roles"), p("role"), lit("roles"), p("member")];
const FILES: &[Seg] = &[lit("v1"), lit("collections"), p("collection"), lit("files")];
const FILE: &[Seg] = &[lit("v1"), lit("files"), uuid("id")];
const FILE_META: &[Seg] = &[lit("v1"), lit("files"), uuid("id"), lit("meta")];
const FILE_ACL: &[Seg] = &[lit("v1"), lit("files"), uuid("id"), lit("acl")];
const FILE_LINK: &[Seg] = &[lit("v1"), lit("files"), uuid("id"), lit("link")];
const UPLOADS: &[Seg] = &[lit("v1"), lit("uploads")];
const UPLOAD: &[Seg] = &[lit("v1"), lit("uploads"), p("upload")];
const MFA: &[Seg] = &[lit("v1"), lit("auth"), lit("mfa")];
const MFA_TOTP: &[Seg] = &[lit("v1"), lit("auth"), lit("mfa"), lit("totp")];
const MFA_TOTP_ONE: &[Seg] = &[lit("v1"), lit("auth"), lit("mfa"), lit("totp"), uuid("id")];
const MFA_TOTP_VERIFY: &[Seg] = &[lit("v1"), lit("auth"), lit("mfa"), lit("totp"), uuid("id"), lit("verify")];
const SESSIONS: &[Seg] = &[lit("v1"), lit("auth"), lit("sessions")];
const SESSION: &[Seg] = &[lit("v1"), lit("auth"), lit("sessions"), uuid("id")];
const SUSPENSION: &[Seg] = &[lit("v1"), lit("admin"), lit("users"), uuid("id"), lit("suspension")];
const ADMIN_SESSIONS: &[Seg] = &[lit("v1"), lit("admin"), lit("users"), uuid("id"), lit("sessions")];
const FOLLOW: &[Seg] = &[lit("v1"), lit("users"), uuid("id"), lit("follow")];
const FOLLOWERS: &[Seg] = &[lit("v1"), lit("users"), uuid("id"), lit("followers")];
const FOLLOWING: &[Seg] = &[lit("v1"), lit("users"), uuid("id"), lit("following")];
const FOLLOW_REQUESTS: &[Seg] = &[lit("v1"), lit("auth"), lit("follow-requests")];
const FOLLOW_REQUEST: &[Seg] = &[lit("v1"), lit("auth"), lit("follow-requests"), uuid("id")];
const MY_FOLLOWER: &[Seg] = &[lit("v1"), lit("auth"), lit("followers"), uuid("id")];
const RPC: &[Seg] = &[lit("v1"), lit("rpc"), p("function")];
const PROFILE: &[Seg] = &[lit("v1"), lit("auth"), lit("user"), lit("profile")];
const USER_PROFILE: &[Seg] = &[lit("v1"), lit("users"), uuid("id")];
const ROWS: &[Seg] = &[lit("v1"), lit("tables"), p("table")];
const ROW: &[Seg] = &[lit("v1"), lit("tables"), p("table"), p("key")];

/// Document routes select the document and its version (the ETag).
const DOC_WRITE: &[Arg] = &[Path(0), Path(1), F("data"), IfMatch];
/// device_id and refresh_token only exempt a client that signed in before from waits
/// that other clients' failures caused (sql/audit.sql, sign-in throttling).
const LOGIN_FIELDS: &[Field] = &[req("email", Text), req("password", Text), opt("device_id", Text), opt("refresh_token", Text)];

/// The email flows' requests: an address, and the language of the mail.
const EMAIL_REQUEST: &[Field] = &[req("email", Text), opt("language", Text)];

// --- B describe (issue 19): success bodies' JSON Schemas for the OpenAPI document
// (openapi.rs). Only what always holds: properties are typed, few are required, and
// every object takes further properties.
/// Sign-up, sign-in, refresh: a session (or, for an account with a second factor, its
/// `mfa_token` ticket), so nothing is required.
const SIGNED_IN: &str = r#"{"type":"object","properties":{"user":{"type":"object"},"access_token":{"type":"string"},"token_type":{"type":"string"},"expires_in":{"type":"integer"},"refresh_token":{"type":"string"},"mfa_required":{"type":"boolean"},"mfa_token":{"type":"string"}}}"#;
/// A document (docs/api.md, "Collections and documents").
const DOCUMENT: &str = r#"{"type":"object","required":["id","version","data"],"properties":{"id":{"type":"string","format":"uuid"},"collection":{"type":"string"},"owner":{"type":["string","null"]},"version":{"type":"integer"},"created_at":{"type":"string"},"updated_at":{"type":"string"},"data":{"type":"object"},"acl":{"type":"object"}}}"#;
/// A list: `items`, and for pages `next` (and `count` when asked).
const ITEMS: &str = r#"{"type":"object","required":["items"],"properties":{"items":{"type":"array"},"next":{"type":["string","null"]},"count":{"type":"integer"}}}"#;
/// The account (GET /v1/auth/user).
const ACCOUNT: &str = r#"{"type":"object","properties":{"id":{"type":"string","format":"uuid"},"email":{"type":["string","null"]},"data":{"type":"object"}}}"#;

pub static ROUTES: &[Route] = &[
    r("health", GET, &[lit("healthz")], Anyone).kind(RouteKind::Health),
    r("jwks", GET, &[lit(".well-known"), lit("jwks.json")], Anyone).kind(RouteKind::Jwks),
    // --- accounts (sql/auth.sql)
    r("signup", POST, &[lit("v1"), lit("auth"), lit("signup")], Anyone)
        .body(&[req("email", Text), req("password", Text), opt("data", Object)])
        .limits(&[per_ip(Kind::Signup), per_account("signup", "email")])
        .sql("select x::text from baas.signup($1, $2, coalesce($3::jsonb, '{}')) x", &[F("email"), F("password"), F("data")])
        .answer(CREATED, Shape::Json).private().doc("Create an account and sign in", SIGNED_IN),
    r("login", POST, &[lit("v1"), lit("auth"), lit("login")], Anyone)
        .body(LOGIN_FIELDS)
        // Per account *and* address: a per-account limit alone would let anyone spend
        // the owner's attempts (Postgres throttles the account as a whole, sparing the
        // owner's known clients).
        .limits(&[per_ip(Kind::Auth), per_account_and_ip("email", "email")])
        .sql(
            "select x::text, x -> 'error' ->> 'code', x -> 'error' ->> 'message', x -> 'error' ->> 'retry_after' \
             from baas.login($1, $2, $3, $4) x",
            &[F("email"), F("password"), F("device_id"), F("refresh_token")],
        )
        .answer(OK, Shape::ErrorResult("invalid email or password")).private().doc("Sign in with email and password", SIGNED_IN),
    r("refresh", POST, &[lit("v1"), lit("auth"), lit("refresh")], Anyone)
        .body(&[req("refresh_token", Text)])
        // Per session family too: a stolen refresh token replayed in a loop is slowed
        // down before it reaches the database.
        .limits(&[per_ip(Kind::Auth), per_account("refresh", "refresh_token")])
        .sql("select x::text, x -> 'error' ->> 'code', x -> 'error' ->> 'message' from baas.refresh($1) x", &[F("refresh_token")])
        .answer(OK, Shape::ErrorResult("refresh token is not valid")).private().doc("Trade a refresh token for a new session", SIGNED_IN),
    r("logout", POST, &[lit("v1"), lit("auth"), lit("logout")], User)
        .sql("select baas.logout()", &[]).answer(NO_CONTENT, Shape::Void).doc("End this session", ""),
    r("get_user", GET, USER, User).sql("select x::text from baas.get_user() x", &[]).private().doc("The signed-in account", ACCOUNT).read(),
    r("update_user", PATCH, USER, User)
        .body(&[one_of("data", Object), one_of("password", Text), opt("current_password", Text)])
        // Password changes check the current password: limited like logins.
        .limits(&[
            Limit { kind: Kind::Auth, key: LimitKey::Ip, when: Some("password") },
            Limit { kind: Kind::Account, key: LimitKey::Subject("user"), when: Some("password") },
        ])
        .sql(
            "select x::text, x -> 'error' ->> 'code', x -> 'error' ->> 'message', x -> 'error' ->> 'retry_after' \
             from baas.update_user($1, $2, $3) x",
            &[F("data"), F("password"), F("current_password")],
        )
        .answer(OK, Shape::ErrorResult("current password is wrong")).private(),
    r("delete_user", DELETE, USER, User).sql("select baas.delete_user()", &[]).answer(NO_CONTENT, Shape::Void).doc("Delete the signed-in account", ""),
    // --- accounts: email flows (sql/accounts.sql)
    // The request routes answer 202 {} whatever the address (no enumeration); verify
    // and recover/confirm return invalid_code / code_expired as results (401), so that
    // a wrong code's count commits.
    r("verify", POST, &[lit("v1"), lit("auth"), lit("verify")], Anyone)
        .body(&[req("type", Text), opt("token", Text), opt("email", Text), opt("code", Text), opt("device_id", Text)])
        .limits(&[per_ip(Kind::Auth), per_account("verify", "email")])
        .sql(
            "select x::text, x -> 'error' ->> 'code', x -> 'error' ->> 'message', x -> 'error' ->> 'retry_after' \
             from baas.verify($1, $2, $3, $4, $5) x",
            &[F("type"), F("token"), F("email"), F("code"), F("device_id")],
        )
        .answer(OK, Shape::ErrorResult("this link or code is not valid")).private(),
    r("resend_verification", POST, &[lit("v1"), lit("auth"), lit("verify"), lit("resend")], Anyone)
        .body(EMAIL_REQUEST)
        .limits(&[per_ip(Kind::Auth), per_account("resend_verification", "email")])
        .sql("select x::text from baas.request_verification($1, $2) x", &[F("email"), F("language")])
        .answer(StatusCode::ACCEPTED, Shape::Json),
    r("recover", POST, &[lit("v1"), lit("auth"), lit("recover")], Anyone)
        .body(EMAIL_REQUEST)
        .limits(&[per_ip(Kind::Auth), per_account("recover", "email")])
        .sql("select x::text from baas.request_password_reset($1, $2) x", &[F("email"), F("language")])
        .answer(StatusCode::ACCEPTED, Shape::Json),
    r("magic_link", POST, &[lit("v1"), lit("auth"), lit("magic-link")], Anyone)
        .body(EMAIL_REQUEST)
        .limits(&[per_ip(Kind::Auth), per_account("magic_link", "email")])
        .sql("select x::text from baas.request_magic_link($1, $2) x", &[F("email"), F("language")])
        .answer(StatusCode::ACCEPTED, Shape::Json),
    // 204 on success: a reset does not sign in.
    r("reset_password", POST, &[lit("v1"), lit("auth"), lit("recover"), lit("confirm")], Anyone)
        .body(&[req("password", Text), opt("token", Text), opt("email", Text), opt("code", Text)])
        .limits(&[per_ip(Kind::Auth), per_account("reset_password", "email")])
        .sql(
            "select x::text, x -> 'error' ->> 'code', x -> 'error' ->> 'message', x -> 'error' ->> 'retry_after' \
             from baas.reset_password($1, $2, $3, $4) x",
            &[F("password"), F("token"), F("email"), F("code")],
        )
        .answer(NO_CONTENT, Shape::ErrorResult("this link or code is not valid")).private(),
    r("email_change", POST, &[lit("v1"), lit("auth"), lit("email-change")], User)
        .body(EMAIL_REQUEST)
        .limits(&[per_ip(Kind::Auth), Limit { kind: Kind::Account, key: LimitKey::Subject("email_change"), when: None }])
        .sql("select x::text from baas.request_email_change($1, $2) x", &[F("email"), F("language")])
        .answer(StatusCode::ACCEPTED, Shape::Json),
    // --- accounts: multi-factor (sql/accounts.sql)
    // The second sign-in step: limited like logins, and per ticket (Postgres counts 5
    // wrong codes per ticket and throttles each source under the account).
    r("mfa_verify", POST, &[lit("v1"), lit("auth"), lit("mfa"), lit("verify")], Anyone)
        .body(&[req("mfa_token", Text), req("code", Text), opt("device_id", Text)])
        .limits(&[per_ip(Kind::Auth), per_account("mfa", "mfa_token")])
        .sql(
            "select x::text, x -> 'error' ->> 'code', x -> 'error' ->> 'message', x -> 'error' ->> 'retry_after' \
             from baas.mfa_challenge($1, $2, $3) x",
            &[F("mfa_token"), F("code"), F("device_id")],
        )
        .answer(OK, Shape::ErrorResult("the code is wrong")).private(),
    r("mfa_status", GET, MFA, User).sql("select x::text from baas.mfa_status() x", &[]).private().read(),
    r("mfa_enroll", POST, MFA_TOTP, User)
        .body(&[opt("friendly_name", Text)])
        .sql("select x::text from baas.mfa_enroll_totp($1) x", &[F("friendly_name")])
        .answer(CREATED, Shape::Json).private(),
    r("mfa_confirm", POST, MFA_TOTP_VERIFY, User)
        .body(&[req("code", Text)])
        .limits(&[per_ip(Kind::Auth), Limit { kind: Kind::Account, key: LimitKey::Subject("mfa_confirm"), when: None }])
        .sql(
            "select x::text, x -> 'error' ->> 'code', x -> 'error' ->> 'message', x -> 'error' ->> 'retry_after' \
             from baas.mfa_verify_factor($1::text::uuid, $2) x",
            &[Path(0), F("code")],
        )
        .answer(OK, Shape::ErrorResult("the code is wrong")).private(),
    r("mfa_unenroll", DELETE, MFA_TOTP_ONE, User)
        .sql("select baas.mfa_unenroll($1::text::uuid)", &[Path(0)]).answer(NO_CONTENT, Shape::Void),
    r("mfa_codes", POST, &[lit("v1"), lit("auth"), lit("mfa"), lit("recovery-codes")], User)
        .sql("select x::text from baas.mfa_recovery_codes() x", &[]).private(),
    r("mfa_reset", DELETE, &[lit("v1"), lit("admin"), lit("users"), uuid("id"), lit("mfa")], Service)
        .sql("select baas.admin_reset_mfa($1::text::uuid)", &[Path(0)]).answer(NO_CONTENT, Shape::Void),
    // --- accounts: anonymous, sessions, suspension, owner delete (sql/accounts.sql)
    // 403 anonymous_sign_in_disabled unless the setting allows it.
    r("anonymous", POST, &[lit("v1"), lit("auth"), lit("anonymous")], Anyone)
        .body(&[opt("data", Object), opt("device_id", Text)])
        .limits(&[per_ip(Kind::Signup)])
        .sql("select x::text from baas.sign_in_anonymously(coalesce($1::jsonb, '{}'), $2) x", &[F("data"), F("device_id")])
        .answer(CREATED, Shape::Json).private(),
    r("upgrade", POST, &[lit("v1"), lit("auth"), lit("upgrade")], User)
        .body(&[req("email", Text), req("password", Text)])
        .limits(&[per_ip(Kind::Auth), Limit { kind: Kind::Account, key: LimitKey::Subject("upgrade"), when: None }])
        .sql("select x::text from baas.upgrade_account($1, $2) x", &[F("email"), F("password")])
        .private(),
    r("list_sessions", GET, SESSIONS, User).sql("select x::text from baas.list_sessions() x", &[]).private().read(),
    r("end_other_sessions", DELETE, SESSIONS, User)
        .sql("select baas.end_other_sessions()", &[]).answer(NO_CONTENT, Shape::Void),
    r("end_session", DELETE, SESSION, User)
        .sql("select baas.end_session($1::text::uuid)", &[Path(0)]).answer(NO_CONTENT, Shape::Void),
    r("suspend", PUT, SUSPENSION, Service)
        .body(&[opt("reason", Text)])
        .sql("select x::text from baas.suspend_user($1::text::uuid, $2) x", &[Path(0), F("reason")])
        .private(),
    r("reactivate", DELETE, SUSPENSION, Service)
        .sql("select x::text from baas.reactivate_user($1::text::uuid) x", &[Path(0)]).private(),
    r("user_sessions", GET, ADMIN_SESSIONS, Service)
        .sql("select x::text from baas.user_sessions($1::text::uuid) x", &[Path(0)]).private().read(),
    r("sign_out_user", DELETE, ADMIN_SESSIONS, Service)
        .sql("select baas.sign_out_user($1::text::uuid)", &[Path(0)]).answer(NO_CONTENT, Shape::Void),
    // Options of an existing collection (on_owner_delete).
    r("set_collection_options", PATCH, COLLECTION, Service)
        .body(&[req("options", Object)])
        .sql("select x::text from baas.set_collection_options($1, $2::jsonb) x", &[Path(0), F("options")]),
    // --- accounts: import (sql/accounts.sql; baas_service only). Up to body_limit per
    // request; larger exports go through SQL.
    r("import_users", POST, &[lit("v1"), lit("admin"), lit("users"), lit("import")], Service)
        .body(&[req("users", Any), opt("options", Object)])
        .sql("select x::text from baas.import_users($1::jsonb, coalesce($2::jsonb, '{}')) x", &[F("users"), F("options")])
        .private(),
    // --- oidc (sql/oidc.sql)
    // Sign in with an OpenID Connect ID token (Apple, Google, ...). Postgres verifies
    // it; a token naming a key it lacks has the provider's keys fetched again (.oidc_retry).
    r("oidc", POST, &[lit("v1"), lit("auth"), lit("oidc")], Anyone)
        .body(&[req("provider", Text), req("id_token", Text), opt("nonce", Text), opt("device_id", Text)])
        .limits(&[per_ip(Kind::Auth)])
        .sql(
            "select x::text, x -> 'error' ->> 'code', x -> 'error' ->> 'message', x -> 'error' ->> 'retry_after' \
             from baas.oidc_sign_in($1, $2, $3, $4) x",
            &[F("provider"), F("id_token"), F("nonce"), F("device_id")],
        )
        .answer(OK, Shape::ErrorResult("the ID token was refused")).oidc_retry().private(),
    r("link_identity", POST, IDENTITIES, User)
        .body(&[req("provider", Text), req("id_token", Text), opt("nonce", Text)])
        .limits(&[per_ip(Kind::Auth)])
        .sql("select x::text from baas.link_identity($1, $2, $3) x", &[F("provider"), F("id_token"), F("nonce")])
        .oidc_retry().private(),
    r("list_identities", GET, IDENTITIES, User).sql("select x::text from baas.identities() x", &[]).private().read(),
    r("unlink_identity", DELETE, &[lit("v1"), lit("auth"), lit("identities"), uuid("id")], User)
        .sql("select baas.unlink_identity($1::text::uuid)", &[Path(0)]).answer(NO_CONTENT, Shape::Void),

    // --- social (sql/social.sql): follows, follow requests, followers lists, social
    // settings. Who may follow or list is decided in SQL (a full account; graph_visibility).
    r("follow", PUT, FOLLOW, User)
        .sql("select x::text from baas.follow($1::text::uuid) x", &[Path(0)]).private(),
    r("unfollow", DELETE, FOLLOW, User)
        .sql("select baas.unfollow($1::text::uuid)", &[Path(0)]).answer(NO_CONTENT, Shape::Void),
    r("followers", GET, FOLLOWERS, Anyone)
        .query(Query::Page)
        .sql("select x::text from baas.followers($1::text::uuid, $2, $3::text::uuid) x", &[Path(0), List(L::Limit), List(L::After)])
        .private().read(),
    r("following", GET, FOLLOWING, Anyone)
        .query(Query::Page)
        .sql("select x::text from baas.following($1::text::uuid, $2, $3::text::uuid) x", &[Path(0), List(L::Limit), List(L::After)])
        .private().read(),
    r("follow_requests", GET, FOLLOW_REQUESTS, User).sql("select x::text from baas.follow_requests() x", &[]).private().read(),
    r("accept_follow", PUT, FOLLOW_REQUEST, User)
        .sql("select baas.answer_follow_request($1::text::uuid, true)", &[Path(0)]).answer(NO_CONTENT, Shape::Void),
    r("decline_follow", DELETE, FOLLOW_REQUEST, User)
        .sql("select baas.answer_follow_request($1::text::uuid, false)", &[Path(0)]).answer(NO_CONTENT, Shape::Void),
    r("remove_follower", DELETE, MY_FOLLOWER, User)
        .sql("select baas.remove_follower($1::text::uuid)", &[Path(0)]).answer(NO_CONTENT, Shape::Void),
    r("update_profile", PATCH, PROFILE, User)
        .body(&[
            one_of("username", Text),
            one_of("profile", Object),
            one_of("findable", Text),
            one_of("graph_visibility", Text),
            one_of("follow_approval", Any),
            one_of("language", Text),
        ])
        .sql(
            "select x::text from baas.update_profile($1, $2::jsonb, $3, $4, ($5::jsonb)::boolean, $6) x",
            &[F("username"), F("profile"), F("findable"), F("graph_visibility"), F("follow_approval"), F("language")],
        )
        .private(),
    // The directory: the query language over the profile tiers the caller may see. A scan
    // of the accounts per page, open to anyone: per client IP as sign-ins are.
    r("find_users", GET, &[lit("v1"), lit("users")], Anyone)
        .query(Query::List)
        .limits(&[per_ip(Kind::Auth)])
        .sql(
            "select x::text from baas.find_users($1, $2, $3, $4, $5::text::uuid, $6) x",
            &[List(L::Filter), List(L::Order), List(L::Limit), List(L::Offset), List(L::After), List(L::Fields)],
        )
        .private().read(),
    r("get_profile", GET, USER_PROFILE, Anyone).sql("select x::text from baas.get_profile($1::text::uuid) x", &[Path(0)]).private().read(),
    // By exact email or username, in the body (no address in URLs or logs); per account.
    r("lookup_user", POST, &[lit("v1"), lit("users"), lit("lookup")], User)
        .body(&[one_of("email", Text), one_of("username", Text)])
        .limits(&[Limit { kind: Kind::Account, key: LimitKey::Subject("lookup"), when: None }])
        .sql("select x::text from baas.lookup_user($1, $2) x", &[F("email"), F("username")])
        .private(),
    // --- rpc (sql/rpc.sql): the exposed schemas' functions, called as the caller
    // (EXECUTE, USAGE and row-level security decide; baas.rpc resolves the name and
    // maps the arguments). GET only for STABLE/IMMUTABLE functions (405 otherwise), in a
    // read-only transaction: the set_config argument is evaluated before the call.
    r("rpc", POST, RPC, Anyone)
        .body(ANY_FIELDS)
        .sql("select coalesce(x.body, ''), x.is_void::text from baas.rpc($1, $2::text::jsonb, false) x", &[Path(0), Arg::RawBody])
        .answer(OK, Shape::Rpc).private(),
    r("rpc_get", GET, RPC, Anyone)
        .query(Query::Args)
        .sql(
            "select coalesce(x.body, ''), x.is_void::text \
             from baas.rpc($1, $2::jsonb, pg_catalog.set_config('transaction_read_only', 'on', true) = 'on') x",
            &[Path(0), Arg::QueryArgs],
        )
        // A read for replicas (issue 19): over GET only STABLE and IMMUTABLE functions
        // are called, in a read-only transaction. One a standby still cannot run
        // (txid_current: XX000) is run again on the primary (replicas.rs).
        .answer(OK, Shape::Rpc).private().read(),
    // --- collections (sql/documents.sql; baas_service only)
    r("list_collections", GET, COLLECTIONS, Service).sql("select jsonb_build_object('items', baas.collections())::text", &[]).doc("List collections", ITEMS).read(),
    r("create_collection", POST, COLLECTIONS, Service)
        .body(&[req("name", Text), opt("options", Object)])
        .sql("select x::text from baas.create_collection($1, coalesce($2::jsonb, '{}')) x", &[F("name"), F("options")])
        .answer(CREATED, Shape::Json),
    r("get_collection", GET, COLLECTION, Service).sql("select x::text from baas.get_collection($1) x", &[Path(0)]).read(),
    r("drop_collection", DELETE, COLLECTION, Service)
        .sql("select baas.drop_collection($1)", &[Path(0)]).answer(NO_CONTENT, Shape::Void),
    // --- documents
    // `expand` (docs/references.md): baas.expand_page around the list, in the same one
    // statement. _expand_checked refuses bad paths first (CASE tests it before the list
    // is read). Without `expand`, the page's text as baas._list_documents_text writes
    // it: the text of list_documents, without building jsonb (issue 20).
    r("list_documents", GET, DOCS, Anyone)
        .query(Query::ListExpand)
        .sql(
            "select case when baas._expand_checked($9) is not true then null \
                         when coalesce(pg_catalog.cardinality($9), 0) = 0 then baas._list_documents_text($1, $2, $3, $4, $5, $6, $7::text::uuid, $8) \
                         else baas.expand_page(baas.list_documents($1, $2, $3, $4, $5, $6, $7::text::uuid, $8), $9)::text end",
            &[Path(0), List(L::Filter), List(L::Order), List(L::Limit), List(L::Offset), List(L::Count), List(L::After), List(L::Fields), List(L::Expand)],
        )
        .private().doc("List documents", ITEMS).read(),
    r("create_document", POST, DOCS, Anyone)
        .body(&[req("data", Data), opt("acl", Any), opt("id", Uuid)])
        .sql("select x::text, x ->> 'version' from baas.create_document($1, $2, $3, $4::text::uuid) x", &[Path(0), F("data"), F("acl"), F("id")])
        .answer(CREATED, Shape::Document).private().doc("Create a document", DOCUMENT),
    r("get_document", GET, DOC, Anyone)
        .query(Query::Expand)
        .sql("select x::text, x ->> 'version' from baas.expand(baas.get_document($1, $2), $3) x", &[Path(0), Path(1), List(L::Expand)])
        .answer(OK, Shape::Document).private().doc("Read a document", DOCUMENT).read(),
    r("replace_document", PUT, DOC, Anyone)
        .body(&[req("data", Data)])
        .sql("select x::text, x ->> 'version' from baas.replace_document($1, $2, $3, $4) x", DOC_WRITE)
        .answer(OK, Shape::Document).private().doc("Replace a document's data", DOCUMENT),
    // --- field operators (issue 18): the patch is a merge patch or operators
    // (docs/operators.md). The body as sent (Arg::RawBody) so `$inc` and the rest see
    // every digit of a number; `data` is checked above as before.
    r("patch_document", PATCH, DOC, Anyone)
        .body(&[req("data", Data)])
        .sql("select x::text, x ->> 'version' from baas.patch_document($1, $2, $3::text::jsonb -> 'data', $4) x", &[Path(0), Path(1), Arg::RawBody, IfMatch])
        .answer(OK, Shape::Document).private().doc("Patch a document's data (merge patch or operators)", DOCUMENT),
    r("delete_document", DELETE, DOC, Anyone)
        .sql("select baas.delete_document($1, $2, $3)", &[Path(0), Path(1), IfMatch]).answer(NO_CONTENT, Shape::Void),
    r("get_acl", GET, ACL, Anyone).sql("select x::text from baas.get_acl($1, $2) x", &[Path(0), Path(1)]).private().read(),
    // The ACL's lists are checked by baas.normalize_acl (invalid_acl names the problem).
    r("set_acl", PUT, ACL, Anyone)
        .body(&[opt("read", Any), opt("update", Any), opt("delete", Any)])
        .sql("select x::text from baas.set_acl($1, $2, $3, $4) x", &[Path(0), Path(1), Body, IfMatch])
        .private(),
    r("set_owner", PUT, OWNER, Anyone)
        .body(&[req("owner", Uuid)])
        .sql("select x::text, x ->> 'version' from baas.transfer($1, $2, $3::text::uuid, $4) x", &[Path(0), Path(1), F("owner"), IfMatch])
        .answer(OK, Shape::Document).private(),
    // --- references (issue 18): back-references, the documents of another collection
    // whose `field` references this one (sql/refs.sql, docs/references.md).
    r("referrers", GET, REFERRERS, Anyone)
        .query(Query::Referrers)
        .sql(
            "select case when baas._expand_checked($7) then baas.expand_page(baas.referrers($1, $2, $3, $4, $5, $6::text::uuid), $7) end::text",
            &[Path(0), Path(1), List(L::Collection), List(L::Field), List(L::Limit), List(L::After), List(L::Expand)],
        )
        .private().read(),
    // --- tables (sql/tables.sql): protected tables in exposed schemas (docs/tables.md,
    // "Over HTTP"). Bodies are open (column names, which Postgres checks); the key is the
    // primary key's value as text; the ETag is the version column or xmin.
    r("list_rows", GET, ROWS, Anyone)
        .query(Query::Rows)
        .sql(
            "select x::text from baas.table_list($1, $2, $3, $4, $5, $6, $7, $8) x",
            &[Path(0), List(L::Filter), List(L::Order), List(L::Limit), List(L::Offset), List(L::Count), List(L::After), List(L::Fields)],
        )
        .private().read(),
    r("insert_row", POST, ROWS, Anyone)
        .body(ANY_FIELDS)
        // The body as sent (Arg::RawBody): Postgres reads its numbers, every digit kept.
        .sql("select x.data::text, x.version::text from baas.table_insert($1, $2::text::jsonb) x", &[Path(0), Arg::RawBody])
        .answer(CREATED, Shape::Document).private(),
    r("get_row", GET, ROW, Anyone)
        .sql("select x.data::text, x.version::text from baas.table_get($1, $2) x", &[Path(0), Path(1)])
        .answer(OK, Shape::Document).private().read(),
    r("update_row", PATCH, ROW, Anyone)
        .body(ANY_FIELDS)
        .sql("select x.data::text, x.version::text from baas.table_update($1, $2, $3::text::jsonb, $4) x", &[Path(0), Path(1), Arg::RawBody, IfMatch])
        .answer(OK, Shape::Document).private(),
    r("delete_row", DELETE, ROW, Anyone)
        .sql("select baas.table_delete($1, $2, $3)", &[Path(0), Path(1), IfMatch]).answer(NO_CONTENT, Shape::Void),
    // --- batch (issue 18): document operations, all or none, as the caller (sql/batch.sql,
    // docs/batch.md). The body as sent (Arg::RawBody): numbers keep every digit. Each
    // operation beyond the first costs one more request of the client's rate limit.
    r("batch", POST, &[lit("v1"), lit("batch")], Anyone)
        .body(&[opt("operations", Any)])
        .limits(&[Limit { kind: Kind::Request, key: LimitKey::IpPerItem("operations"), when: None }])
        .sql("select x::text from baas.batch(($1::text::jsonb) -> 'operations') x", &[Arg::RawBody])
        .answer(OK, Shape::Batch).private(),
    // --- live change feeds (docs/realtime-protocol.md): the transports run them, no SQL
    // here; the token may also come as ?access_token= (browsers cannot set headers on
    // EventSource and WebSocket).
    r("realtime", GET, &[lit("v1"), lit("realtime")], Anyone).kind(RouteKind::WebSocket),
    r("collection_events", GET, &[lit("v1"), lit("collections"), p("collection"), lit("events")], Anyone).kind(RouteKind::Sse),
    // --- files (docs/files.md): uploads and downloads stream (files/); the rest is JSON.
    r("upload_file", POST, FILES, Anyone).kind(RouteKind::File(FileOp::Upload)),
    r("download_file", GET, FILE, Anyone).kind(RouteKind::File(FileOp::Download)),
    r("head_file", HEAD, FILE, Anyone).kind(RouteKind::File(FileOp::Download)),
    r("replace_file", PUT, FILE, Anyone).kind(RouteKind::File(FileOp::Replace)),
    r("delete_file", DELETE, FILE, Anyone)
        .sql("select baas.delete_file($1::text::uuid, $2)", &[Path(0), IfMatch]).answer(NO_CONTENT, Shape::Void),
    r("get_file_meta", GET, FILE_META, Anyone)
        .sql("select x::text, x ->> 'version' from baas.file_meta($1::text::uuid) x", &[Path(0)])
        .answer(OK, Shape::Document).private().read(),
    r("update_file_meta", PATCH, FILE_META, Anyone)
        .body(&[one_of("name", Text), one_of("data", Data)])
        .sql("select x::text, x ->> 'version' from baas.update_file($1::text::uuid, $2, $3, $4) x", &[Path(0), F("name"), F("data"), IfMatch])
        .answer(OK, Shape::Document).private(),
    r("get_file_acl", GET, FILE_ACL, Anyone)
        .sql("select x::text from baas.get_file_acl($1::text::uuid) x", &[Path(0)]).private().read(),
    r("set_file_acl", PUT, FILE_ACL, Anyone)
        .body(&[opt("read", Any), opt("update", Any), opt("delete", Any)])
        .sql("select x::text from baas.set_file_acl($1::text::uuid, $2, $3) x", &[Path(0), Body, IfMatch])
        .private(),
    r("file_link", POST, FILE_LINK, User)
        .body(&[opt("ttl", Any)])
        .sql("select x::text from baas.file_link($1::text::uuid, coalesce(($2::jsonb)::integer, 300)) x", &[Path(0), F("ttl")])
        .private(),
    // tus 1.0 resumable uploads (files/tus.rs).
    r("tus_options", OPTIONS, UPLOADS, Anyone).kind(RouteKind::File(FileOp::TusOptions)),
    r("tus_create", POST, UPLOADS, Anyone).kind(RouteKind::File(FileOp::TusCreate)),
    r("tus_head", HEAD, UPLOAD, Anyone).kind(RouteKind::File(FileOp::TusHead)),
    r("tus_patch", PATCH, UPLOAD, Anyone).kind(RouteKind::File(FileOp::TusPatch)),
    r("tus_delete", DELETE, UPLOAD, Anyone).kind(RouteKind::File(FileOp::TusDelete)),
    // --- indexes (baas_service only)
    r("list_indexes", GET, INDEXES, Service).sql("select jsonb_build_object('items', baas.list_indexes($1))::text", &[Path(0)]).doc("List a collection's indexes", ITEMS),
    // (issue 19, replicas) not reads for replicas: an index's state comes from the
    // primary's pg_stat_activity (is its build still running).
    // 202: the index is built in the background (state "building"); GET on the index
    // answers its state until "ready" or "failed" (docs/api.md).
    r("create_index", POST, INDEXES, Service)
        .body(&[req("path", Text), opt("kind", Text)])
        .sql("select x::text from baas.create_index($1, $2, coalesce($3, 'btree')) x", &[Path(0), F("path"), F("kind")])
        .answer(StatusCode::ACCEPTED, Shape::Json),
    r("get_index", GET, INDEX, Service)
        .query(Query::IndexKind)
        .sql("select x::text from baas.get_index($1, $2, $3) x", &[Path(0), Path(1), IndexKind]),
    r("drop_index", DELETE, INDEX, Service)
        .query(Query::IndexKind)
        .sql("select baas.drop_index($1, $2, $3)", &[Path(0), Path(1), IndexKind]).answer(NO_CONTENT, Shape::Void),
    // --- roles (baas_service only)
    r("list_roles", GET, ROLES, Service).sql("select jsonb_build_object('items', baas.list_roles())::text", &[]).doc("List roles", ITEMS).read(),
    r("create_role", POST, ROLES, Service)
        .body(&[req("name", Text)])
        .sql("select jsonb_build_object('name', $1::text)::text from baas.create_role($1) x", &[F("name")])
        .answer(CREATED, Shape::Json),
    r("drop_role", DELETE, ROLE, Service).sql("select baas.drop_role($1)", &[Path(0)]).answer(NO_CONTENT, Shape::Void),
    r("add_role_member", PUT, MEMBER, Service)
        .sql("select baas.add_role_member($1, $2::text::uuid)", &[Path(0), Path(1)]).answer(NO_CONTENT, Shape::Void),
    r("remove_role_member", DELETE, MEMBER, Service)
        .sql("select baas.remove_role_member($1, $2::text::uuid)", &[Path(0), Path(1)]).answer(NO_CONTENT, Shape::Void),
    r("add_role_to_role", PUT, SUBROLE, Service)
        .sql("select baas.add_role_to_role($1, $2)", &[Path(0), Path(1)]).answer(NO_CONTENT, Shape::Void),
    r("remove_role_from_role", DELETE, SUBROLE, Service)
        .sql("select baas.remove_role_from_role($1, $2)", &[Path(0), Path(1)]).answer(NO_CONTENT, Shape::Void),
    // --- B describe (issue 19): this table as an OpenAPI 3.1 document (openapi.rs).
    r("openapi", GET, &[lit("v1"), lit("openapi.json")], Anyone)
        .kind(RouteKind::OpenApi)
        .doc("This API as an OpenAPI 3.1 document", r#"{"type":"object","required":["openapi","paths"]}"#),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::pattern;

    /// Reads a replica may answer (issue 19, replicas): JSON GETs only, never a
    /// stream, a file or a route whose method says it writes.
    #[test]
    fn only_json_gets_are_reads() {
        for r in ROUTES.iter().filter(|r| r.read) {
            assert!(r.method == GET || r.method == HEAD, "{}: a read is a GET", r.name);
            assert_eq!(r.kind, RouteKind::Json, "{}: a read answers JSON", r.name);
            assert!(!r.sql.is_empty(), "{}", r.name);
        }
        let reads: Vec<_> = ROUTES.iter().filter(|r| r.read).map(|r| r.name).collect();
        // GET /v1/rpc calls only STABLE and IMMUTABLE functions, read-only: a read.
        for name in ["get_document", "list_documents", "list_rows", "get_row", "get_profile", "rpc_get"] {
            assert!(reads.contains(&name), "{name} is a read");
        }
        for name in ["rpc", "create_document", "download_file", "collection_events", "realtime", "batch", "login"] {
            assert!(!reads.contains(&name), "{name} is not a read");
        }
    }

    /// The table is consistent: every `$n` has an arg, every arg a source, names and
    /// method+path pairs are unique.
    #[test]
    fn the_table_is_consistent() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(seen.insert(r.name), "{} twice", r.name);
            assert!(seen.insert(Box::leak(format!("{} {}", r.method, pattern(r)).into_boxed_str())), "{} {} twice", r.method, pattern(r));
            let params = r.path.iter().filter(|s| matches!(s, Seg::Param(..))).count();
            if r.kind != RouteKind::Json {
                continue;
            }
            for n in 1..=r.args.len() {
                assert!(r.sql.contains(&format!("${n}")), "{}: ${n} unused", r.name);
            }
            assert!(!r.sql.contains(&format!("${}", r.args.len() + 1)), "{}: more $n than args", r.name);
            for a in r.args {
                match a {
                    Arg::Path(i) => assert!(*i < params, "{}: path parameter {i}", r.name),
                    Arg::Field(f) => assert!(r.body.unwrap_or(&[]).iter().any(|x| x.name == *f), "{}: field {f}", r.name),
                    Arg::Body | Arg::RawBody => assert!(r.body.is_some(), "{}", r.name),
                    Arg::List(_) => assert!(matches!(r.query, Query::List | Query::Page | Query::Rows | Query::Expand | Query::ListExpand | Query::Referrers), "{}", r.name),
                    Arg::IndexKind => assert_eq!(r.query, Query::IndexKind, "{}", r.name),
                    Arg::QueryArgs => assert_eq!(r.query, Query::Args, "{}", r.name),
                    Arg::IfMatch => {}
                }
            }
            for l in r.limits {
                if let LimitKey::Body(_, f) | LimitKey::BodyAndIp(_, f) | LimitKey::IpPerItem(f) = l.key {
                    assert!(r.body.unwrap_or(&[]).iter().any(|x| x.name == f), "{}: limit field {f}", r.name);
                }
            }
            // An ErrorResult route may answer 204 when the result is no error.
            let void = r.answer.shape == Shape::Void;
            let empty = void || matches!(r.answer.shape, Shape::ErrorResult(_));
            assert!(!void || r.answer.status == StatusCode::NO_CONTENT, "{}: void needs 204", r.name);
            assert!(empty || r.answer.status != StatusCode::NO_CONTENT, "{}: 204 needs void", r.name);
        }
    }
}
