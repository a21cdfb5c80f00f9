//! --- B describe (issue 19): the OpenAPI 3.1 document of the HTTP API, made once at
//! start-up from the route table (`routes::ROUTES`) and served at `GET /v1/openapi.json`.
//! Nothing here lists routes: every operation, parameter, body schema, error and auth
//! scheme is read from a table entry. What the table cannot say (a summary, a success
//! body's schema) is the entry's `doc`; without it, a summary is made from the name and
//! the body is "any JSON" (never stricter than the truth).

use crate::files::FileOp;
use crate::router::{self, Arg, Auth, Field, FieldType, Need, ParamType, Query, Route, RouteKind, Seg, Shape};
use crate::routes::{input, ROUTES};
use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

/// The document as served (JSON text), made on first use; main.rs makes it at start-up.
pub fn document() -> Bytes {
    static DOC: OnceLock<Bytes> = OnceLock::new();
    DOC.get_or_init(|| Bytes::from(build(ROUTES).to_string())).clone()
}

/// The document of `table`.
pub fn build(table: &[Route]) -> Value {
    let mut paths = Map::new();
    for r in table {
        let item = paths.entry(router::pattern(r)).or_insert_with(|| json!({}));
        item[r.method.as_str().to_ascii_lowercase()] = operation(r);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "pgbaas",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The pgbaas HTTP API, generated from the proxy's route table. Postgres decides \
                            every permission; errors are {\"error\": {\"code\", \"message\"}} (docs/errors.md).",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Error": error_schema(false),
                "BatchError": error_schema(true),
                "Health": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {
                        "status": {"type": "string"},
                        "database": {"type": "string"},
                        "error": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}},
                        "pool": {"type": "object"},
                    },
                },
            },
            "securitySchemes": {
                "user_token": {
                    "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                    "description": "A user's access token, from sign-up, login, refresh or another sign-in route.",
                },
                "service_token": {
                    "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                    "description": "A service token (role baas_service), made in SQL with baas.create_service_token: \
                                    the operator's own backends; bypasses document ACLs.",
                },
                "access_token_query": {
                    "type": "apiKey", "in": "query", "name": "access_token",
                    "description": "A user's access token in the URL, for the live feeds only \
                                    (browsers cannot set headers on EventSource and WebSocket).",
                },
            },
        },
    })
}

fn error_schema(batch: bool) -> Value {
    let mut props = json!({
        "code": {"type": "string", "description": "Stable snake_case code (docs/errors.md)."},
        "message": {"type": "string", "description": "For a human; may change."},
        "hint": {"type": "string", "description": "A user function's HINT (RPC)."},
        "detail": {"type": "string", "description": "A user function's DETAIL when it is not a code (RPC)."},
    });
    if batch {
        props["operation"] = json!({"type": "integer", "minimum": 0, "description": "The failing operation's index, 0-based."});
    }
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": props}},
    })
}

fn operation(r: &Route) -> Value {
    let mut op = json!({
        "operationId": r.name,
        "summary": summary(r),
        "description": description(r),
        "tags": [tag(r)],
        "responses": responses(r),
        "security": security(r),
    });
    let params = parameters(r);
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    if let Some(body) = request_body(r) {
        op["requestBody"] = body;
    }
    op
}

fn summary(r: &Route) -> String {
    if !r.doc.summary.is_empty() {
        return r.doc.summary.to_string();
    }
    let words = r.name.replace('_', " ");
    let mut c = words.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// The caller and the route's own limits, in words.
fn description(r: &Route) -> String {
    let caller = match (r.kind, r.auth) {
        (RouteKind::Health | RouteKind::Jwks | RouteKind::OpenApi, _) => "Anyone; no token is read.",
        (_, Auth::Anyone) => "Anyone, signed in or not: Postgres decides what each caller may do (GRANTs, row-level security).",
        (_, Auth::User) => "A signed-in user (access token).",
        (_, Auth::Service) => "A service token only.",
    };
    let mut d = caller.to_string();
    if !r.limits.is_empty() {
        d.push_str(" Rate limited besides the per-address request limit (429 rate_limited with Retry-After).");
    }
    d
}

/// The path's first word after `v1`: auth, collections, files, ...
fn tag(r: &Route) -> &'static str {
    match r.kind {
        RouteKind::Health | RouteKind::Jwks | RouteKind::OpenApi => "meta",
        _ => match r.path {
            [Seg::Lit("v1"), Seg::Lit(t), ..] => t,
            _ => "meta",
        },
    }
}

fn security(r: &Route) -> Value {
    let realtime = matches!(r.kind, RouteKind::WebSocket | RouteKind::Sse);
    let mut s = match (r.kind, r.auth) {
        (RouteKind::Health | RouteKind::Jwks | RouteKind::OpenApi, _) => vec![],
        (_, Auth::Anyone) => vec![json!({}), json!({"user_token": []}), json!({"service_token": []})],
        (_, Auth::User) => vec![json!({"user_token": []})],
        (_, Auth::Service) => vec![json!({"service_token": []})],
    };
    if realtime {
        s.push(json!({"access_token_query": []}));
    }
    Value::Array(s)
}

fn query_param(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description})
}

fn header_param(name: &str, required: bool, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "header", "required": required, "schema": schema, "description": description})
}

fn uuid_schema() -> Value {
    json!({"type": "string", "format": "uuid"})
}

fn int_schema(min: i64, max: Option<i64>, default: i64) -> Value {
    let mut s = json!({"type": "integer", "minimum": min, "default": default});
    if let Some(m) = max {
        s["maximum"] = json!(m);
    }
    s
}

/// The list parameters (`Query::List`, `Rows`, `ListExpand`): `after` an id, or for
/// tables a row's key.
fn list_params(after_is_id: bool) -> Vec<Value> {
    vec![
        query_param("where", json!({"type": "string", "maxLength": input::MAX_WHERE_BYTES}), "A JSON filter (docs/query.md), URL-encoded."),
        query_param("order", json!({"type": "string"}), "Comma-separated fields, `-` for descending."),
        query_param("limit", int_schema(0, Some(1000), 100), "Most items in the page."),
        query_param("offset", int_schema(0, Some(i32::MAX as i64), 0), "Items to skip."),
        query_param("count", json!({"type": "boolean", "default": false}), "Add the number of matching items."),
        if after_is_id {
            query_param("after", uuid_schema(), "The `next` of the previous page.")
        } else {
            query_param("after", json!({"type": "string", "maxLength": input::MAX_ROW_KEY_BYTES}), "The last row's key (the previous page's `next`).")
        },
        query_param("fields", json!({"type": "string"}), "Comma-separated top-level fields to return."),
    ]
}

fn expand_param() -> Value {
    // baas._expand_tree's rule: at most 10 paths of at most 3 names (refs.sql).
    let name = "[A-Za-z0-9_$-]{1,128}";
    let path = format!("{name}(\\.{name}){{0,2}}");
    // Given, it names at least one path: `expand=` is refused (invalid_expand).
    let pattern = format!("^{path}(,{path}){{0,9}}$");
    query_param("expand", json!({"type": "string", "maxLength": input::MAX_EXPAND_BYTES, "pattern": pattern}), "Comma-separated reference paths to expand (docs/references.md).")
}

fn parameters(r: &Route) -> Vec<Value> {
    let mut out = Vec::new();
    for s in r.path {
        if let Seg::Param(name, ty) = s {
            let schema = match ty {
                ParamType::Uuid => uuid_schema(),
                ParamType::Text => json!({"type": "string", "minLength": 1}),
            };
            out.push(json!({"name": name, "in": "path", "required": true, "schema": schema}));
        }
    }
    match r.query {
        Query::None => {}
        Query::List => out.extend(list_params(true)),
        Query::Rows => out.extend(list_params(false)),
        Query::ListExpand => {
            out.extend(list_params(true));
            out.push(expand_param());
        }
        Query::Expand => out.push(expand_param()),
        Query::IndexKind => out.push(query_param("kind", json!({"type": "string", "enum": ["btree", "gin"], "default": "btree"}), "The index's kind.")),
        Query::Page => {
            out.push(query_param("limit", int_schema(1, Some(1000), 50), "Most items in the page."));
            out.push(query_param("after", uuid_schema(), "The `next` of the previous page."));
        }
        Query::Referrers => {
            let mut c = query_param("collection", json!({"type": "string"}), "The referencing collection.");
            c["required"] = json!(true);
            let mut f = query_param("field", json!({"type": "string"}), "The field holding the references.");
            f["required"] = json!(true);
            out.extend([c, f]);
            out.push(query_param("limit", int_schema(1, Some(1000), 100), "Most items in the page."));
            out.push(query_param("after", uuid_schema(), "The `next` of the previous page."));
            out.push(expand_param());
        }
        Query::Args => out.push(json!({
            "name": "args", "in": "query", "required": false, "style": "form", "explode": true,
            "schema": {"type": "object", "additionalProperties": {"type": "string"}},
            "description": "The function's arguments by name, each a string (a repeated name: an array).",
        })),
    }
    match r.kind {
        RouteKind::File(FileOp::Download) => {
            out.push(query_param("thumb", json!({"type": "string"}), "A thumbnail's size, WxH (images)."));
            out.push(query_param("fit", json!({"type": "string"}), "How a thumbnail fits its size (with thumb)."));
            out.push(query_param("download", json!({"type": "string", "enum": ["1", "0", "true", "false"]}), "1: always an attachment."));
            out.push(query_param("sig", json!({"type": "string"}), "A signed link's signature (POST /v1/files/{id}/link)."));
            out.push(header_param("Range", false, json!({"type": "string"}), "One byte range."));
            out.push(header_param("If-None-Match", false, json!({"type": "string"}), "ETags the client holds: 304 when one matches."));
            out.push(header_param("If-Range", false, json!({"type": "string"}), "The ETag the Range is for; otherwise the whole file (200)."));
        }
        RouteKind::File(FileOp::Upload | FileOp::Replace) => {
            out.push(query_param("name", json!({"type": "string"}), "The file's name (a raw body; else Content-Disposition)."));
            out.push(header_param("Content-Disposition", false, json!({"type": "string"}), "A raw body's file name, `attachment; filename=\"...\"` (when `name` is not given)."));
        }
        RouteKind::File(op @ (FileOp::TusCreate | FileOp::TusHead | FileOp::TusPatch | FileOp::TusDelete)) => {
            out.push(header_param("Tus-Resumable", true, json!({"type": "string", "enum": ["1.0.0"]}), "tus 1.0."));
            match op {
                FileOp::TusCreate => {
                    out.push(header_param("Upload-Length", true, json!({"type": "integer", "minimum": 0}), "The whole file's size (required: Upload-Defer-Length is refused, 400)."));
                    out.push(header_param("Upload-Metadata", false, json!({"type": "string"}), "tus metadata: name, type, collection, data, acl."));
                }
                FileOp::TusPatch => {
                    out.push(header_param("Upload-Offset", true, json!({"type": "integer", "minimum": 0}), "Where this piece starts."));
                    out.push(header_param("Upload-Checksum", false, json!({"type": "string"}), "tus checksum extension: `<algorithm> <base64 digest>` of this piece (460 checksum_mismatch)."));
                }
                _ => {}
            }
        }
        RouteKind::Sse => {
            out.push(query_param("where", json!({"type": "string", "maxLength": input::MAX_WHERE_BYTES}), "A JSON filter (docs/query.md)."));
            out.push(query_param("fields", json!({"type": "string"}), "Comma-separated top-level fields."));
            out.push(query_param("snapshot", json!({"type": "boolean"}), "Send the matching documents first."));
            out.push(query_param("last_event_id", json!({"type": "string", "pattern": "^[0-9]+$"}), "Resume after this position."));
            out.push(header_param("Last-Event-ID", false, json!({"type": "string", "pattern": "^[0-9]+$"}), "Resume after this position (EventSource sends it)."));
        }
        _ => {}
    }
    // (issue 19, observe) a client's request id is kept (1-128 of [A-Za-z0-9._:/+=-]),
    // anything else replaced, never refused: no pattern here.
    out.push(header_param("X-Request-Id", false, json!({"type": "string"}), "The request's id, echoed in the answer's X-Request-Id and the logs (1-128 characters of A-Za-z0-9._:/+=-; another value is replaced by a new id)."));
    // (issue 19, replicas) a read waits for (or goes to the primary for) a write it must see.
    if r.kind == RouteKind::Json && r.read {
        out.push(header_param("Pgbaas-Commit-Lsn", false, json!({"type": "string"}), "A write's Pgbaas-Commit-Lsn: the read sees that write (read replicas). Also read from cookie pgbaas_lsn. Ignored without replicas; with them, one not of the form X/Y (hex) is 400."));
    }
    if r.args.contains(&Arg::IfMatch) {
        out.push(header_param("If-Match", false, json!({"type": "string", "pattern": IF_MATCH_PATTERN}), "The version the change is for, e.g. \"3\" (412 version_conflict when it is not current)."));
    }
    if r.kind == RouteKind::File(FileOp::Replace) {
        out.push(header_param("If-Match", false, json!({"type": "string"}), "The version the change is for (412 when it is not current)."));
    }
    out
}

/// A version as input::if_match reads it: `"3"`, `3`, `W/"3"`, or `*`.
const IF_MATCH_PATTERN: &str = "^(\\*|(W/)?(\"0*[1-9][0-9]{0,17}\"|0*[1-9][0-9]{0,17}))$";

/// A WAL position as replicas::parse_lsn reads it.
const LSN_PATTERN: &str = "^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$";

fn field_schema(f: &Field) -> Value {
    if f.name == "acl" && matches!(f.ty, FieldType::Object | FieldType::Any) {
        // An ACL (docs/api.md, Permissions): principals per permission.
        let principals = json!({"type": "array", "items": {"type": "string",
            "pattern": "^(public|authenticated|registered|anonymous|user:[0-9a-fA-F-]{36}|role:[a-z_][a-z0-9_]{0,62})$"}});
        return json!({"type": "object", "additionalProperties": false,
                      "properties": {"read": principals, "update": principals, "delete": principals}});
    }
    match f.ty {
        FieldType::Text => json!({"type": "string"}),
        FieldType::Uuid => uuid_schema(),
        FieldType::Object => json!({"type": "object"}),
        FieldType::Data => json!({"type": "object", "description": "Document data."}),
        FieldType::Any => json!({}),
    }
}

/// The JSON body's schema from the route's fields: required ones required, `OneOf`
/// ones "at least one of", undeclared names refused (except the open bodies of the RPC
/// and table doors).
fn body_schema(fields: &[Field]) -> Value {
    if fields.iter().any(|f| f.name == input::ANY_FIELD) {
        return json!({"type": "object", "additionalProperties": true,
                      "description": "Any names: the function's arguments or the table's columns, which Postgres checks."});
    }
    // A null is read as an absent field (input::parse_body): optional fields may be
    // null; a required one may not, nor may null count as the one of a `OneOf` group.
    let mut props = Map::new();
    for f in fields {
        let mut schema = field_schema(f);
        // `get`, not indexing: `schema["type"]` on a schema without a type would insert
        // `"type": null`, which schemathesis cannot load.
        match (f.need, schema.get("type").cloned()) {
            (Need::Optional | Need::OneOf, Some(Value::String(t))) => schema["type"] = json!([t, "null"]),
            (Need::Required, None) => schema["not"] = json!({"type": "null"}),
            _ => {}
        }
        props.insert(f.name.to_string(), schema);
    }
    let required: Vec<&str> = fields.iter().filter(|f| f.need == Need::Required).map(|f| f.name).collect();
    let mut s = json!({"type": "object", "properties": props, "additionalProperties": false});
    if !required.is_empty() {
        s["required"] = json!(required);
    }
    let one_of: Vec<Value> = fields.iter().filter(|f| f.need == Need::OneOf).map(|f| json!({"required": [f.name], "properties": {f.name: {"not": {"type": "null"}}}})).collect();
    if !one_of.is_empty() {
        s["anyOf"] = Value::Array(one_of);
    }
    s
}

fn request_body(r: &Route) -> Option<Value> {
    let bytes = |ct: &str| json!({ct: {"schema": {"type": "string", "contentMediaType": ct}}});
    match r.kind {
        RouteKind::Json => r.body.map(|fields| json!({"required": true, "content": {"application/json": {"schema": body_schema(fields)}}})),
        RouteKind::File(FileOp::Upload | FileOp::Replace) => {
            let mut content = bytes("application/octet-stream");
            content["multipart/form-data"] = json!({"schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "contentMediaType": "application/octet-stream"},
                    "data": {"type": "string", "description": "A JSON object: the file's data."},
                    "acl": {"type": "string", "description": "A JSON ACL."},
                    "id": {"type": "string", "format": "uuid"},
                },
            }});
            Some(json!({"required": true, "description": "The file's bytes, raw (Content-Type is the file's type) or as multipart/form-data.", "content": content}))
        }
        RouteKind::File(FileOp::TusPatch) => Some(json!({"required": true, "content": bytes("application/offset+octet-stream")})),
        _ => None,
    }
}

fn reason(status: u16) -> String {
    StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error").to_string()
}

fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}})
}

/// The success answers and the errors the route can give, each error in the house
/// shape (batch's with `operation`).
fn responses(r: &Route) -> Value {
    let mut out = Map::new();
    let mut ok = |status: u16, description: &str, content: Option<Value>, headers: Option<Value>| {
        let mut v = json!({"description": description});
        if let Some(c) = content {
            v["content"] = c;
        }
        if let Some(h) = headers {
            v["headers"] = h;
        }
        out.insert(status.to_string(), v);
    };
    let returns: Value = if r.doc.returns.is_empty() { json!({}) } else { serde_json::from_str(r.doc.returns).expect("a route's doc.returns is JSON") };
    let etag = json!({"ETag": {"description": "The document's version, for If-Match.", "schema": {"type": "string"}}});
    match r.kind {
        RouteKind::Json => {
            let status = r.answer.status.as_u16();
            match r.answer.shape {
                Shape::Void => ok(status, "Done; no body.", None, None),
                Shape::Document => ok(status, "The document.", Some(json_content(returns)), Some(etag)),
                Shape::ErrorResult(_) if status == 204 => ok(status, "Done; no body.", None, None),
                Shape::Rpc => {
                    ok(200, "The function's result as JSON.", Some(json_content(returns)), None);
                    ok(204, "The function returns void.", None, None);
                }
                _ => ok(status, reason(status).as_str(), Some(json_content(returns)), None),
            }
        }
        RouteKind::Health => {
            ok(200, "The database answers.", Some(json_content(json!({"$ref": "#/components/schemas/Health"}))), None);
            ok(503, "The database does not answer.", Some(json_content(json!({"$ref": "#/components/schemas/Health"}))), None);
        }
        RouteKind::Jwks => ok(200, "The public signing keys (JWKS).", Some(json_content(json!({"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array"}}}))), None),
        RouteKind::OpenApi => ok(200, "This document.", Some(json_content(returns)), None),
        RouteKind::WebSocket => ok(101, "Switching Protocols: a WebSocket of live change feeds (docs/realtime-protocol.md).", None, None),
        RouteKind::Sse => ok(200, "A stream of Server-Sent Events (docs/realtime-protocol.md).", Some(json!({"text/event-stream": {"schema": {"type": "string"}}})), None),
        RouteKind::File(op) => match op {
            FileOp::Download if r.method == http::Method::HEAD => {
                ok(200, "The file's headers, no body.", None, Some(etag));
                ok(206, "A range's headers, no body.", None, Some(content_range(true)));
                ok(304, "Not modified.", None, None);
            }
            FileOp::Download => {
                ok(200, "The file's bytes, its Content-Type as stored.", Some(json!({"*/*": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}})), Some(etag));
                ok(206, "The requested range.", Some(json!({"*/*": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}})), Some(content_range(true)));
                ok(304, "Not modified.", None, None);
            }
            FileOp::Upload => ok(201, "The stored file's metadata.", Some(json_content(json!({"type": "object"}))), None),
            FileOp::Replace => ok(200, "The file's metadata.", Some(json_content(json!({"type": "object"}))), None),
            FileOp::TusOptions => ok(204, "The tus versions and extensions supported (headers).", None, None),
            FileOp::TusCreate => ok(201, "An upload; its URL in Location.", None, Some(json!({"Location": {"schema": {"type": "string"}}}))),
            FileOp::TusHead => ok(200, "The upload's offset (Upload-Offset).", None, Some(upload_offset())),
            FileOp::TusPatch => ok(204, "The piece is stored (Upload-Offset: the new offset).", None, Some(upload_offset())),
            FileOp::TusDelete => ok(204, "The upload is ended.", None, None),
        },
    }
    let error = if r.answer.shape == Shape::Batch && r.kind == RouteKind::Json { "BatchError" } else { "Error" };
    for status in error_statuses(r) {
        let mut v = json!({"description": reason(status), "content": json_content(json!({"$ref": format!("#/components/schemas/{error}")}))});
        if status == 429 || status == 503 {
            v["headers"] = json!({"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}});
        }
        if status == 416 {
            v["headers"] = content_range(false);
        }
        out.entry(status.to_string()).or_insert(v);
    }
    // (issue 19, observe) every answer carries X-Request-Id; (replicas) a write's 2xx
    // Pgbaas-Commit-Lsn when read replicas are configured. Neither is `required`: a
    // head refused before routing (400) has no id.
    let commit_lsn = r.kind == RouteKind::Json && !r.read;
    for (status, v) in out.iter_mut() {
        let Some(v) = v.as_object_mut() else { continue };
        let headers = v.entry("headers").or_insert_with(|| json!({}));
        headers["X-Request-Id"] = json!({"description": "The request's id (the client's X-Request-Id when valid).", "schema": {"type": "string"}});
        if commit_lsn && status.starts_with('2') {
            headers["Pgbaas-Commit-Lsn"] = json!({"description": "With read replicas: the primary's WAL position after this write; send it (header or cookie pgbaas_lsn) on a read that must see the write.", "schema": {"type": "string", "pattern": LSN_PATTERN}});
        }
    }
    out.insert(
        "default".into(),
        json!({"description": "Any other error, in the same shape (docs/errors.md).", "content": json_content(json!({"$ref": format!("#/components/schemas/{error}")}))}),
    );
    Value::Object(out)
}

fn upload_offset() -> Value {
    json!({"Upload-Offset": {"required": true, "description": "The upload's offset.", "schema": {"type": "integer", "minimum": 0}}})
}

/// `bytes a-b/n` on a 206 (`required`), `bytes */n` on a 416.
fn content_range(partial: bool) -> Value {
    let pattern = if partial { "^bytes [0-9]+-[0-9]+/[0-9]+$" } else { "^bytes \\*/[0-9]+$" };
    json!({"Content-Range": {"required": partial, "description": "The range sent, or the file's size.", "schema": {"type": "string", "pattern": pattern}}})
}

/// The 4xx and 5xx a route can give, from what it reads and does.
fn error_statuses(r: &Route) -> Vec<u16> {
    match r.kind {
        // The document is served after the per-address request limit (server.rs).
        RouteKind::OpenApi => return vec![429],
        RouteKind::Health | RouteKind::Jwks => return vec![],
        _ => {}
    }
    let mut s = vec![400, 401, 403, 404, 429, 503];
    let body = r.body.is_some() || matches!(r.kind, RouteKind::File(FileOp::Upload | FileOp::Replace | FileOp::TusPatch));
    if body {
        s.extend([408, 413, 415, 422]);
    }
    if r.method != http::Method::GET && r.method != http::Method::HEAD {
        s.push(409);
    }
    if r.args.contains(&Arg::IfMatch) || matches!(r.kind, RouteKind::File(_)) {
        s.push(412);
    }
    if matches!(r.answer.shape, Shape::Rpc) {
        s.push(405);
    }
    match r.kind {
        RouteKind::WebSocket => s.push(426),
        RouteKind::File(FileOp::Download) => s.push(416),
        RouteKind::File(FileOp::TusPatch | FileOp::TusHead | FileOp::TusDelete) => s.extend([410, 423, 460]),
        _ => {}
    }
    s.sort_unstable();
    s.dedup();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route of the table is in the document, once, at its path and method, with
    /// its name as operationId and its path parameters typed.
    #[test]
    fn every_route_is_described() {
        let doc: Value = serde_json::from_slice(&document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut ids = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (_, op) in item.as_object().unwrap() {
                ids.push(op["operationId"].as_str().unwrap().to_string());
                assert!(!path.is_empty());
            }
        }
        assert_eq!(ids.len(), ROUTES.len(), "one operation per route");
        for r in ROUTES {
            let op = &doc["paths"][router::pattern(r)][r.method.as_str().to_ascii_lowercase()];
            assert_eq!(op["operationId"], r.name, "{} {}", r.method, router::pattern(r));
            for s in r.path {
                if let Seg::Param(name, ty) = s {
                    let p = op["parameters"].as_array().unwrap().iter().find(|p| p["name"] == *name && p["in"] == "path").unwrap();
                    assert_eq!(p["required"], true);
                    assert_eq!(p["schema"]["format"] == "uuid", *ty == ParamType::Uuid, "{}: {name}", r.name);
                }
            }
            assert!(op["responses"]["default"]["content"]["application/json"].is_object(), "{}", r.name);
        }
    }

    #[test]
    fn bodies_and_errors_follow_the_table() {
        let doc: Value = serde_json::from_slice(&document()).unwrap();
        let signup = &doc["paths"]["/v1/auth/signup"]["post"];
        let schema = &signup["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(schema["required"], json!(["email", "password"]));
        assert_eq!(schema["properties"]["data"]["type"], json!(["object", "null"]), "null is read as absent");
        assert_eq!(schema["properties"]["email"]["type"], "string");
        assert_eq!(schema["additionalProperties"], false);
        assert!(signup["responses"]["201"].is_object() && signup["responses"]["429"].is_object());
        assert_eq!(signup["security"][0], json!({}), "anyone may sign up");
        let batch = &doc["paths"]["/v1/batch"]["post"];
        assert_eq!(batch["responses"]["400"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/BatchError");
        assert_eq!(doc["components"]["schemas"]["BatchError"]["properties"]["error"]["properties"]["operation"]["type"], "integer");
        let profile = &doc["paths"]["/v1/auth/user/profile"]["patch"]["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(profile["anyOf"].as_array().unwrap().len(), 6, "at least one of the settings");
        assert_eq!(doc["paths"]["/v1/collections"]["get"]["security"], json!([{"service_token": []}]));
        assert_eq!(doc["paths"]["/v1/auth/user"]["get"]["security"], json!([{"user_token": []}]));
        assert!(doc["paths"]["/v1/realtime"]["get"]["responses"]["101"].is_object());
        assert!(doc["paths"]["/v1/collections/{collection}/events"]["get"]["responses"]["200"]["content"]["text/event-stream"].is_object());
        assert!(doc["paths"]["/v1/collections/{collection}/documents/{id}"]["put"]["responses"]["412"].is_object());
        assert!(doc["paths"]["/v1/collections/{collection}/documents/{id}"]["get"]["responses"]["200"]["headers"]["ETag"].is_object());
        // Served after the per-address request limit.
        assert!(doc["paths"]["/v1/openapi.json"]["get"]["responses"]["429"].is_object());
        let tus = &doc["paths"]["/v1/uploads"]["post"]["parameters"];
        assert!(tus.as_array().unwrap().iter().any(|p| p["name"] == "Upload-Length" && p["required"] == true));
    }

    /// The list parameters documented are the ones the parser knows (input.rs), and
    /// their bounds are the parser's (`offset` is an i32).
    #[test]
    fn list_parameters_are_the_parsers() {
        let doc: Value = serde_json::from_slice(&document()).unwrap();
        let mut seen = 0;
        for r in ROUTES.iter().filter(|r| r.query == Query::List) {
            let op = &doc["paths"][router::pattern(r)][r.method.as_str().to_ascii_lowercase()];
            let params = op["parameters"].as_array().unwrap();
            let mut names: Vec<&str> = params.iter().filter(|p| p["in"] == "query").map(|p| p["name"].as_str().unwrap()).collect();
            let mut known = input::LIST_PARAMS.to_vec();
            names.sort_unstable();
            known.sort_unstable();
            assert_eq!(names, known, "{}", r.name);
            let offset = params.iter().find(|p| p["name"] == "offset").unwrap();
            assert_eq!(offset["schema"]["maximum"], i32::MAX);
            seen += 1;
        }
        assert!(seen > 0);
    }
}
