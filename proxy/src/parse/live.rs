//! Parse LiveQuery (issue 21, docs/parse.md): Parse's LiveQuery WebSocket protocol at
//! the door's mount, spoken over pgbaas's own live feeds. A LiveQuery connection is a
//! realtime/ws.rs WebSocket in the Parse dialect: `connect`, `subscribe` and
//! `unsubscribe` become the feed's own (one subscription per `requestId`), and the hub's
//! frames are written as Parse's messages (`create`, `enter`, `update`, `leave`,
//! `delete`). Who sees what is decided exactly as for `/v1/realtime` (the hub's
//! principal index, the start-up SQL as the caller), with the session token resolved to
//! its user by Postgres (`baas._parse_authenticate`, as every REST request of the door).
//! This module only translates; it decides nothing.

use super::convert::{self, ParseError, INVALID_CLASS_NAME, INVALID_QUERY, INVALID_SESSION_TOKEN};
use crate::errors::ApiError;
use crate::realtime::{Frame, Subscribe};
use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Mutex;

/// Parse Server's LiveQuery error codes (its ParseLiveQueryServer).
pub const LQ_INTERNAL: i64 = 1;
pub const LQ_NOT_CONNECTED: i64 = 2;
pub const LQ_UNKNOWN_OP: i64 = 3;
pub const LQ_BAD_KEY: i64 = 4;

/// Whether a request under the mount opens a LiveQuery WebSocket (the SDKs connect to
/// the server URL with `ws://`/`wss://`); the handshake itself is checked by ws.rs.
pub fn is_upgrade(req: &pingora::http::RequestHeader) -> bool {
    req.method == http::Method::GET
        && req.headers.get_all(http::header::UPGRADE).iter().any(|v| v.to_str().is_ok_and(|t| t.split(',').any(|p| p.trim().eq_ignore_ascii_case("websocket"))))
}

/// A client message, checked.
#[derive(Debug)]
pub enum Msg {
    Connect { app_id: String, master_key: Option<String>, token: Option<String> },
    Subscribe { request_id: i64, class: String, req: Subscribe, ids: Option<Vec<String>>, token: Option<String> },
    Unsubscribe(i64),
}

/// An error to answer with.
#[derive(Debug)]
pub struct LiveError {
    pub request_id: Option<i64>,
    pub code: i64,
    pub message: String,
    /// Parse's hint to the client: try again on a new connection.
    pub reconnect: bool,
}

impl LiveError {
    pub fn new(request_id: Option<i64>, code: i64, message: impl Into<String>) -> LiveError {
        LiveError { request_id, code, message: message.into(), reconnect: false }
    }

    fn of(request_id: Option<i64>, e: ParseError) -> LiveError {
        LiveError::new(request_id, e.code, e.message)
    }

    /// `{"op":"error","clientId","requestId"?,"code","error","reconnect"}` as a frame.
    pub fn frame(&self, client: u64) -> Frame {
        let mut v = json!({"op": "error", "clientId": client, "code": self.code, "error": self.message, "reconnect": self.reconnect});
        if let Some(r) = self.request_id {
            v["requestId"] = json!(r);
        }
        own(v)
    }
}

/// A message in Parse's shape, written as it is (`render` passes it through).
pub fn own(v: Value) -> Frame {
    Frame { kind: "parse", sub: None, position: None, json: Bytes::from(v.to_string()) }
}

/// Fields each client message may carry. The SDKs send the keys they hold (an iOS
/// client its `clientKey`, the JavaScript one its `javascriptKey`): keys are not
/// secrets in Parse and the application id is what is checked.
const CONNECT_FIELDS: &[&str] = &["op", "applicationId", "clientKey", "javascriptKey", "restAPIKey", "windowsKey", "masterKey", "sessionToken", "installationId"];
const SUBSCRIBE_FIELDS: &[&str] = &["op", "requestId", "query", "sessionToken"];
const QUERY_FIELDS: &[&str] = &["className", "where", "keys", "fields", "watch"];

fn text(m: &Map<String, Value>, k: &str, rid: Option<i64>) -> Result<Option<String>, LiveError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(LiveError::new(rid, LQ_INTERNAL, format!("{k} must be a string"))),
    }
}

fn only(m: &Map<String, Value>, allowed: &[&str], what: &str, rid: Option<i64>) -> Result<(), LiveError> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(LiveError::new(rid, LQ_INTERNAL, format!("unknown field {k:?} in {what}; it takes: {}", allowed.join(", ")))),
        None => Ok(()),
    }
}

/// Read one client message.
pub fn read(text_msg: &str) -> Result<Msg, LiveError> {
    let v: Value = serde_json::from_str(text_msg).map_err(|e| LiveError::new(None, LQ_INTERNAL, format!("a message must be a JSON object: {e}")))?;
    let Value::Object(m) = v else {
        return Err(LiveError::new(None, LQ_INTERNAL, "a message must be a JSON object"));
    };
    // The request id, where there is one, names the subscription an error is about.
    let rid = m.get("requestId").and_then(Value::as_i64);
    let op = m.get("op").and_then(Value::as_str).ok_or_else(|| LiveError::new(rid, LQ_INTERNAL, "a message needs \"op\": connect, subscribe or unsubscribe"))?;
    let request_id = || match m.get("requestId") {
        Some(Value::Number(n)) if n.as_i64().is_some_and(|r| r > 0) => Ok(n.as_i64().unwrap_or(1)),
        _ => Err(LiveError::new(None, LQ_INTERNAL, format!("{op} needs \"requestId\": a positive whole number"))),
    };
    match op {
        "connect" => {
            only(&m, CONNECT_FIELDS, "connect", None)?;
            let app_id = text(&m, "applicationId", None)?.ok_or_else(|| LiveError::new(None, LQ_BAD_KEY, "Key in request is not valid"))?;
            Ok(Msg::Connect { app_id, master_key: text(&m, "masterKey", None)?, token: text(&m, "sessionToken", None)? })
        }
        "unsubscribe" => {
            only(&m, &["op", "requestId"], "unsubscribe", rid)?;
            Ok(Msg::Unsubscribe(request_id()?))
        }
        "subscribe" => {
            let rid = request_id()?;
            only(&m, SUBSCRIBE_FIELDS, "subscribe", Some(rid))?;
            let token = text(&m, "sessionToken", Some(rid))?;
            let Some(Value::Object(q)) = m.get("query") else {
                return Err(LiveError::new(Some(rid), LQ_INTERNAL, "subscribe needs \"query\": {\"className\", \"where\"}"));
            };
            only(q, QUERY_FIELDS, "query", Some(rid))?;
            let class = text(q, "className", Some(rid))?.ok_or_else(|| LiveError::new(Some(rid), INVALID_CLASS_NAME, "the query needs a className"))?;
            let collection = convert::collection_of(&class).map_err(|e| LiveError::of(Some(rid), e))?;
            let watch = watch_of(q.get("watch")).map_err(|m| LiveError::new(Some(rid), INVALID_QUERY, m))?;
            let mut where_ = match q.get("where") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(w)) => w.clone(),
                Some(_) => return Err(LiveError::new(Some(rid), INVALID_QUERY, "where must be a JSON object")),
            };
            let ids = match where_.remove("objectId") {
                None => None,
                Some(v) => Some(ids_of(&v).map_err(|m| LiveError::new(Some(rid), INVALID_QUERY, m))?),
            };
            let filter = convert::filter_of(&Value::Object(where_)).map_err(|e| LiveError::of(Some(rid), e))?;
            let fields = match q.get("keys").or_else(|| q.get("fields")) {
                None | Some(Value::Null) => None,
                Some(Value::Array(a)) => {
                    let names = a.iter().map(|k| k.as_str()).collect::<Option<Vec<_>>>();
                    let names = names.ok_or_else(|| LiveError::new(Some(rid), INVALID_QUERY, "keys must be an array of field names"))?;
                    Some(convert::fields_of(&names.join(",")))
                }
                Some(_) => return Err(LiveError::new(Some(rid), INVALID_QUERY, "keys must be an array of field names")),
            };
            let req = Subscribe { sub: rid.to_string(), collection, filter, fields, watch, snapshot: false, resume: None };
            Ok(Msg::Subscribe { request_id: rid, class, req, ids, token })
        }
        other => Err(LiveError::new(rid, LQ_UNKNOWN_OP, format!("Get unknown operation: {other:?} (pgbaas's LiveQuery takes connect, subscribe and unsubscribe)"))),
    }
}

/// `query.watch(...)` (the SDK sends the names as an array): the feed's `watch`, the
/// object's own fields whose change sends a `create` or `update`. `updatedAt` changes
/// with every save, so watching it is watching everything; `createdAt`, `objectId` and
/// `ACL` are refused rather than answered differently from Parse Server.
fn watch_of(v: Option<&Value>) -> Result<Option<Vec<String>>, String> {
    let bad = || format!("query.watch takes 1 to {} names of the object's fields", crate::realtime::ws::MAX_WATCH);
    let names: Vec<String> = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) if a.is_empty() => return Ok(None),
        Some(Value::Array(a)) if a.len() <= crate::realtime::ws::MAX_WATCH => {
            a.iter().map(|x| x.as_str().filter(|s| !s.is_empty() && !s.contains('.')).map(str::to_string)).collect::<Option<_>>().ok_or_else(bad)?
        }
        Some(_) => return Err(bad()),
    };
    if names.iter().any(|n| n == "updatedAt") {
        return Ok(None);
    }
    if let Some(n) = names.iter().find(|n| ["createdAt", "objectId", "ACL"].contains(&n.as_str())) {
        return Err(format!("query.watch on {n} is not supported by pgbaas's LiveQuery (docs/parse.md): watch the object's own fields"));
    }
    Ok(Some(names))
}

/// An objectId condition (`equalTo`, `containedIn`) as the ids it admits. pgbaas's feed
/// filters address data, not the id column; since an object's id never changes, the
/// condition is applied to the hub's events here, which is the same set. An id that is
/// no pgbaas id names no object.
fn ids_of(v: &Value) -> Result<Vec<String>, String> {
    let one = |x: &Value| -> Result<Option<String>, String> {
        match x {
            Value::String(s) => Ok(convert::object_id(s).ok()),
            _ => Err("objectId is compared with a string".to_string()),
        }
    };
    let list: Vec<Option<String>> = match v {
        Value::String(_) => vec![one(v)?],
        Value::Object(o) if o.len() == 1 => match (o.get("$eq"), o.get("$in").or_else(|| o.get("$containedIn"))) {
            (Some(x), _) => vec![one(x)?],
            (_, Some(Value::Array(a))) => a.iter().map(one).collect::<Result<_, _>>()?,
            _ => return Err("a LiveQuery on objectId takes equalTo or containedIn".into()),
        },
        _ => return Err("a LiveQuery on objectId takes equalTo or containedIn".into()),
    };
    Ok(list.into_iter().flatten().collect())
}

/// One subscription as the client named it.
struct Sub {
    class: String,
    ids: Option<Vec<String>>,
}

/// A LiveQuery connection's state: whether it said `connect`, its session token, and
/// its subscriptions' classes (by the hub's subscription name, the request id).
#[derive(Default)]
pub struct Live {
    pub connected: bool,
    pub token: Option<String>,
    pub master: bool,
    /// Session checks in a row that got no answer (realtime/ws.rs `recheck`).
    pub recheck_failures: u32,
    /// Read while frames are written, changed while messages are read (one task: the
    /// lock is never contended; it makes the connection's state Sync).
    subs: Mutex<HashMap<String, Sub>>,
}

impl Live {
    pub fn has(&self, request_id: i64) -> bool {
        self.subs.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&request_id.to_string())
    }

    pub fn add(&self, request_id: i64, class: String, ids: Option<Vec<String>>) {
        self.subs.lock().unwrap_or_else(|e| e.into_inner()).insert(request_id.to_string(), Sub { class, ids });
    }

    /// A hub frame as Parse's message; None: nothing for a Parse client (a `reset`, a
    /// `pong`), or an event for an object outside the subscription's objectId condition.
    pub fn render(&self, client: u64, f: &Frame) -> Option<String> {
        if f.kind == "parse" {
            return std::str::from_utf8(&f.json).ok().map(str::to_string);
        }
        // As the REST door reads documents: numbers beyond a double, deep nesting.
        let v: Value = convert::from_db_text(std::str::from_utf8(&f.json).ok()?).ok()?;
        let sub = v.get("sub").and_then(Value::as_str);
        let request_id = sub.map(|s| s.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::String(s.to_string())));
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        let op = match f.kind {
            "insert" => "create",
            "update" | "delete" | "enter" | "leave" => f.kind,
            "subscribed" => return Some(json!({"op": "subscribed", "clientId": client, "requestId": request_id}).to_string()),
            "unsubscribed" => {
                subs.remove(sub?);
                return Some(json!({"op": "unsubscribed", "clientId": client, "requestId": request_id}).to_string());
            }
            "error" => {
                // A subscribe that failed is not a subscription.
                if let Some(s) = sub {
                    subs.remove(s);
                }
                let code = v.pointer("/error/code").and_then(Value::as_str).unwrap_or("");
                let message = v.pointer("/error/message").and_then(Value::as_str).unwrap_or("").to_string();
                let parse_code = match code {
                    // A class without its collection.
                    "not_found" => INVALID_CLASS_NAME,
                    "not_subscribed" => LQ_NOT_CONNECTED,
                    _ => ParseError::from_api(&ApiError::new(StatusCode::BAD_REQUEST, code, message.clone())).code,
                };
                let mut out = json!({"op": "error", "clientId": client, "code": parse_code, "error": message, "reconnect": false});
                if let Some(r) = request_id {
                    out["requestId"] = r;
                }
                return Some(out.to_string());
            }
            "closing" => {
                let reason = v.get("reason").and_then(Value::as_str).unwrap_or("");
                let (code, message, reconnect) = match reason {
                    "session_ended" | "token_expired" => (INVALID_SESSION_TOKEN, "Invalid session token: the session has ended".to_string(), false),
                    _ => (LQ_INTERNAL, format!("the server is closing this connection ({reason}); connect again"), true),
                };
                return Some(json!({"op": "error", "clientId": client, "code": code, "error": message, "reconnect": reconnect}).to_string());
            }
            // `reset` (re-read: access changed), `pong`, `authenticated`, `snapshot`.
            _ => return None,
        };
        let entry = subs.get(sub?)?;
        let id = v.pointer("/document/id").or_else(|| v.get("id")).and_then(Value::as_str)?;
        if entry.ids.as_ref().is_some_and(|ids| !ids.iter().any(|i| i == id)) {
            return None;
        }
        let mut object = match v.get("document") {
            Some(doc) => convert::object_from_doc(doc),
            // `leave` names only the object.
            None => json!({"objectId": id}),
        };
        object["className"] = Value::String(entry.class.clone());
        Some(json!({"op": op, "clientId": client, "requestId": request_id, "object": object}).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realtime::transport;

    const ID: &str = "0190f4d2-8a1b-7c3d-9e4f-000000000001";

    fn frame(kind: &'static str, v: Value) -> Frame {
        Frame { kind, sub: v.get("sub").and_then(Value::as_str).map(std::sync::Arc::from), position: Some(7), json: Bytes::from(v.to_string()) }
    }

    #[test]
    fn watch_is_the_feed_s_watch() {
        let m = read(r#"{"op":"subscribe","requestId":3,"query":{"className":"A","watch":["score","name"]}}"#).unwrap();
        let Msg::Subscribe { req, .. } = m else { panic!("{m:?}") };
        assert_eq!(req.watch, Some(vec!["score".to_string(), "name".into()]));
        let m = read(r#"{"op":"subscribe","requestId":3,"query":{"className":"A","watch":["score","updatedAt"]}}"#).unwrap();
        let Msg::Subscribe { req, .. } = m else { panic!("{m:?}") };
        assert_eq!(req.watch, None, "updatedAt changes with every save");
    }

    #[test]
    fn subscribes_become_feed_subscriptions() {
        let m = read(r#"{"op":"subscribe","requestId":3,"query":{"className":"GameScore","where":{"score":{"$gt":10},"objectId":{"$in":["0190F4D2-8A1B-7C3D-9E4F-000000000001","nope"]}},"keys":["score","name.first"]},"sessionToken":"r:abc"}"#).unwrap();
        let Msg::Subscribe { request_id, class, req, ids, token } = m else { panic!("{m:?}") };
        assert_eq!((request_id, class.as_str(), token.as_deref()), (3, "GameScore", Some("r:abc")));
        assert_eq!(req.collection, "gamescore");
        assert_eq!(req.sub, "3");
        assert_eq!(req.filter, json!({"score": {"$gt": 10}}));
        assert_eq!(req.fields, Some(vec!["score".to_string(), "name".to_string()]));
        assert_eq!(ids, Some(vec![ID.to_string()]), "ids in lower case; one that is no uuid names nothing");
    }

    #[test]
    fn bad_messages_say_what_is_wrong_with_their_request_id() {
        let e = |t: &str| read(t).unwrap_err();
        assert_eq!(e("[1]").code, LQ_INTERNAL);
        let x = e(r#"{"op":"query","requestId":2}"#);
        assert_eq!((x.code, x.request_id), (LQ_UNKNOWN_OP, Some(2)));
        let x = e(r#"{"op":"subscribe","requestId":4,"query":{"className":"a-b"}}"#);
        assert_eq!((x.code, x.request_id), (INVALID_CLASS_NAME, Some(4)));
        let x = e(r#"{"op":"subscribe","requestId":5,"query":{"className":"A","where":{"x":{"$regexx":1}}}}"#);
        assert_eq!(x.code, INVALID_QUERY);
        assert!(x.message.contains("$regexx"), "{}", x.message);
        let x = e(r#"{"op":"subscribe","requestId":6,"query":{"className":"A","watch":["createdAt"]}}"#);
        assert!(x.message.contains("watch"), "{}", x.message);
        let x = e(r#"{"op":"subscribe","requestId":6,"query":{"className":"A","watch":"x"}}"#);
        assert!(x.message.contains("watch"), "{}", x.message);
        assert_eq!(e(r#"{"op":"subscribe","requestId":0,"query":{"className":"A"}}"#).code, LQ_INTERNAL);
        assert!(e(r#"{"op":"connect","applicationId":"a","extra":1}"#).message.contains("extra"));
        assert_eq!(e(r#"{"op":"connect"}"#).code, LQ_BAD_KEY);
    }

    #[test]
    fn hub_frames_are_written_as_parse_events() {
        let live = Live::default();
        live.add(3, "GameScore".into(), None);
        let doc = json!({"id": ID, "owner": null, "data": {"score": 12}, "acl": {"read": ["public"]}, "created_at": "2026-12-04T16:20:00.123456+00:00", "updated_at": "2026-12-04T16:20:01+00:00", "version": 1});
        let out: Value = serde_json::from_str(&live.render(9, &frame("insert", json!({"type": "insert", "sub": "3", "position": "7", "document": doc}))).unwrap()).unwrap();
        assert_eq!(
            out,
            json!({"op": "create", "clientId": 9, "requestId": 3, "object": {"score": 12, "objectId": ID, "createdAt": "2026-12-04T16:20:00.123Z", "updatedAt": "2026-12-04T16:20:01.000Z", "ACL": {"*": {"read": true}}, "className": "GameScore"}})
        );
        let out: Value = serde_json::from_str(&live.render(9, &frame("leave", json!({"type": "leave", "sub": "3", "position": "8", "id": ID}))).unwrap()).unwrap();
        assert_eq!(out, json!({"op": "leave", "clientId": 9, "requestId": 3, "object": {"objectId": ID, "className": "GameScore"}}));
        assert!(live.render(9, &frame("reset", json!({"type": "reset", "sub": "3", "reason": "access_changed"}))).is_none());
        let sub: Value = serde_json::from_str(&live.render(9, &frame("subscribed", json!({"type": "subscribed", "sub": "3", "position": "7"}))).unwrap()).unwrap();
        assert_eq!(sub, json!({"op": "subscribed", "clientId": 9, "requestId": 3}));
    }

    #[test]
    fn an_objectid_condition_keeps_only_its_objects_events() {
        let live = Live::default();
        live.add(1, "A".into(), Some(vec![ID.to_string()]));
        let other = "0190f4d2-8a1b-7c3d-9e4f-000000000002";
        let ev = |id: &str| frame("update", json!({"type": "update", "sub": "1", "position": "7", "document": {"id": id, "data": {}}}));
        assert!(live.render(1, &ev(ID)).is_some());
        assert!(live.render(1, &ev(other)).is_none());
    }

    #[test]
    fn errors_end_the_subscription_they_name_and_carry_parse_codes() {
        let live = Live::default();
        live.add(2, "A".into(), None);
        let e = transport::error(Some("2"), &ApiError::new(StatusCode::NOT_FOUND, "not_found", "no collection \"a\""));
        let out: Value = serde_json::from_str(&live.render(5, &e).unwrap()).unwrap();
        assert_eq!(out, json!({"op": "error", "clientId": 5, "requestId": 2, "code": INVALID_CLASS_NAME, "error": "no collection \"a\"", "reconnect": false}));
        assert!(!live.has(2));
        let closing = transport::own("closing", json!({"type": "closing", "reason": "session_ended", "positions": {}}));
        let out: Value = serde_json::from_str(&live.render(5, &closing).unwrap()).unwrap();
        assert_eq!((out["code"].as_i64(), out["reconnect"].as_bool()), (Some(INVALID_SESSION_TOKEN), Some(false)));
    }
}
