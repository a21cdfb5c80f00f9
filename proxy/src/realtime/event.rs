//! Capture events as the hub uses them: each row of `baas._realtime_read` parsed once
//! (serde) into a compact struct, shared (`Arc`) by every subscription it concerns.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::sync::Arc;

use super::principals::FOLLOWERS;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
}

/// One version of a document (the `old` or `new` of a `doc` event).
#[derive(Debug)]
pub struct Version {
    /// Who may read it: `user:<owner>` and the ACL's read principals.
    pub readers: Box<[Arc<str>]>,
    /// Its `data`, for filters and `fields`.
    pub data: Value,
    /// The whole document as GET shows it, serialised once.
    pub json: Box<str>,
    /// Its creation and update times, for `$created_at`/`$updated_at` filters.
    pub times: Option<pgbaas_query::eval::Times>,
}

#[derive(Debug)]
pub struct DocChange {
    pub id: Box<str>,
    pub op: Op,
    pub version: i64,
    pub old: Option<Version>,
    pub new: Option<Version>,
}

#[derive(Debug)]
pub enum Body {
    Doc(DocChange),
    /// `user` gained (`add`) or lost role `role` directly.
    Member { user: Box<str>, role: Box<str>, add: bool },
    /// `member_role` became (or stopped being) a member of `role`.
    Nest { member_role: Box<str>, role: Box<str>, add: bool },
    /// A collection's feed switched (`realtime`) or the collection dropped.
    Collection { realtime: bool, dropped: bool },
    /// The capture was reset: events may be missing before this one.
    Reset,
    /// A kind this proxy does not know (a newer extension): passed over.
    Other,
}

#[derive(Debug)]
pub struct Event {
    pub position: u64,
    /// The writer's transaction (xid8), for snapshot visibility.
    pub xid: u64,
    pub collection: Option<Box<str>>,
    pub body: Body,
}

#[derive(Deserialize)]
struct RawDoc<'a> {
    id: String,
    op: String,
    version: i64,
    #[serde(borrow)]
    old: Option<&'a RawValue>,
    #[serde(borrow)]
    new: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct DocShape {
    owner: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    acl: Acl,
}

#[derive(Deserialize, Default)]
struct Acl {
    #[serde(default)]
    read: Vec<String>,
}

#[derive(Deserialize)]
struct RawMember {
    user: String,
    role: String,
    op: String,
}

#[derive(Deserialize)]
struct RawFollow {
    follower: String,
    followee: String,
    op: String,
}

#[derive(Deserialize)]
struct RawNest {
    member_role: String,
    role: String,
    op: String,
}

#[derive(Deserialize)]
struct RawCollection {
    #[serde(default)]
    realtime: Option<bool>,
    #[serde(default)]
    dropped: bool,
}

fn version(raw: Option<&RawValue>) -> Result<Option<Version>, String> {
    let Some(raw) = raw else { return Ok(None) };
    if raw.get() == "null" {
        return Ok(None);
    }
    let d: DocShape = serde_json::from_str(raw.get()).map_err(|e| format!("document: {e}"))?;
    let mut readers: Vec<Arc<str>> = Vec::with_capacity(d.acl.read.len() + 1);
    if let Some(o) = d.owner {
        readers.push(format!("user:{o}").into());
    }
    for r in d.acl.read {
        if !readers.iter().any(|x| **x == *r) {
            readers.push(r.into());
        }
    }
    let times = pgbaas_query::eval::Times::from_text(d.created_at.as_deref(), d.updated_at.as_deref());
    Ok(Some(Version { readers: readers.into_boxed_slice(), data: d.data, json: raw.get().into(), times }))
}

fn add(op: &str) -> Result<bool, String> {
    match op {
        "add" => Ok(true),
        "remove" => Ok(false),
        o => Err(format!("unknown op {o:?}")),
    }
}

impl Event {
    /// One row of `baas._realtime_read` (body as JSON text).
    pub fn parse(position: u64, xid: u64, kind: &str, collection: Option<&str>, body: &str) -> Result<Event, String> {
        let body = match kind {
            "doc" => {
                let r: RawDoc = serde_json::from_str(body).map_err(|e| format!("doc event: {e}"))?;
                let op = match r.op.as_str() {
                    "insert" => Op::Insert,
                    "update" => Op::Update,
                    "delete" => Op::Delete,
                    o => return Err(format!("doc event: unknown op {o:?}")),
                };
                Body::Doc(DocChange { id: r.id.into(), op, version: r.version, old: version(r.old)?, new: version(r.new)? })
            }
            "member" => {
                let r: RawMember = serde_json::from_str(body).map_err(|e| format!("member event: {e}"))?;
                Body::Member { user: r.user.into(), role: r.role.into(), add: add(&r.op)? }
            }
            // A follow accepted (`add`) or ended: the follower gains or loses principal
            // `followers:<followee>`, which the hub keeps as a direct "role" that is its
            // own principal (principals.rs), so role bookkeeping applies unchanged.
            "follow" => {
                let r: RawFollow = serde_json::from_str(body).map_err(|e| format!("follow event: {e}"))?;
                Body::Member { user: r.follower.into(), role: format!("{FOLLOWERS}{}", r.followee).into(), add: add(&r.op)? }
            }
            "nest" => {
                let r: RawNest = serde_json::from_str(body).map_err(|e| format!("nest event: {e}"))?;
                Body::Nest { member_role: r.member_role.into(), role: r.role.into(), add: add(&r.op)? }
            }
            "collection" => {
                let r: RawCollection = serde_json::from_str(body).map_err(|e| format!("collection event: {e}"))?;
                Body::Collection { realtime: r.realtime.unwrap_or(!r.dropped), dropped: r.dropped }
            }
            "reset" => Body::Reset,
            _ => Body::Other,
        };
        Ok(Event { position, xid, collection: collection.map(Into::into), body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_doc_event_is_read_once_into_readers_data_and_its_text() {
        let body = r#"{"id":"d1","op":"update","version":2,
            "old":{"id":"d1","owner":"u1","version":1,"data":{"a":1},"acl":{"read":["role:r","user:u1"],"update":[],"delete":[]}},
            "new":{"id":"d1","owner":"u1","version":2,"data":{"a":2},"acl":{"read":[],"update":[],"delete":[]}}}"#;
        let e = Event::parse(7, 100, "doc", Some("c"), body).unwrap();
        let Body::Doc(d) = e.body else { panic!() };
        assert_eq!((d.op, d.version), (Op::Update, 2));
        let old = d.old.unwrap();
        assert_eq!(old.readers.iter().map(|r| &**r).collect::<Vec<_>>(), ["user:u1", "role:r"], "owner once");
        assert_eq!(old.data, serde_json::json!({"a": 1}));
        assert!(old.json.contains("\"version\":1"));
        let insert = Event::parse(8, 101, "doc", Some("c"), r#"{"id":"d2","op":"insert","version":1,"old":null,"new":{"owner":null,"data":{},"acl":{"read":["public"]}}}"#).unwrap();
        let Body::Doc(d) = insert.body else { panic!() };
        assert!(d.old.is_none());
        assert_eq!(&*d.new.unwrap().readers, [Arc::<str>::from("public")]);
    }

    /// A document's times reach the hub's filters: `$created_at`/`$updated_at` judge a
    /// change as the list's SQL judges the row.
    #[test]
    fn a_doc_event_carries_its_times_to_time_filters() {
        let body = r#"{"id":"d1","op":"insert","version":1,"old":null,
            "new":{"owner":"u1","created_at":"2026-12-04T11:00:00.123456+01:00","updated_at":"2026-12-04T10:00:01+00:00","data":{"a":1},"acl":{"read":["public"]}}}"#;
        let Body::Doc(d) = Event::parse(7, 100, "doc", Some("c"), body).unwrap().body else { panic!() };
        let principals: Vec<Arc<str>> = vec!["public".into()];
        let f = |w: serde_json::Value| pgbaas_query::parse::parse(&w).unwrap();
        let hears = |w: serde_json::Value| crate::realtime::hub::decide(&d, Some(&f(w)), false, &principals).is_some();
        assert!(hears(serde_json::json!({"$created_at": "2026-12-04T10:00:00.123456Z", "a": 1})));
        assert!(!hears(serde_json::json!({"$created_at": {"$gt": "2026-12-04T10:00:00.123456Z"}})));
        assert!(hears(serde_json::json!({"$updated_at": {"$gte": "2026-12-04T10:00:01Z", "$lt": "2026-12-04T10:00:01.000001Z"}})));
    }

    #[test]
    fn other_kinds_and_bad_bodies() {
        assert!(matches!(Event::parse(1, 1, "member", None, r#"{"user":"u","role":"r","op":"add"}"#).unwrap().body, Body::Member { add: true, .. }));
        assert!(matches!(Event::parse(1, 1, "nest", None, r#"{"member_role":"a","role":"b","op":"remove"}"#).unwrap().body, Body::Nest { add: false, .. }));
        assert!(matches!(Event::parse(1, 1, "collection", Some("c"), r#"{"collection":"c","dropped":true}"#).unwrap().body, Body::Collection { dropped: true, realtime: false }));
        assert!(matches!(Event::parse(1, 1, "collection", Some("c"), r#"{"collection":"c","realtime":false}"#).unwrap().body, Body::Collection { dropped: false, realtime: false }));
        let f = Event::parse(1, 1, "follow", None, r#"{"follower":"a","followee":"b","op":"add"}"#).unwrap();
        assert!(matches!(f.body, Body::Member { ref user, ref role, add: true } if &**user == "a" && &**role == "followers:b"));
        assert!(matches!(Event::parse(1, 1, "follow", None, r#"{"follower":"a","followee":"b","op":"remove"}"#).unwrap().body, Body::Member { add: false, .. }));
        assert!(Event::parse(1, 1, "follow", None, r#"{"follower":"a","op":"add"}"#).is_err());
        assert!(matches!(Event::parse(1, 1, "future", None, "{}").unwrap().body, Body::Other));
        assert!(Event::parse(1, 1, "doc", Some("c"), r#"{"id":"x","op":"upsert","version":1}"#).is_err());
        assert!(Event::parse(1, 1, "member", None, "[]").is_err());
    }
}
