//! Request -> plan: the route's `$n` bound to values taken from the path, the query,
//! the checked body and headers, as the table's `args` say. The plan holds no HTTP
//! type: db.rs runs it and knows nothing of where the values came from.

use crate::errors::ApiError;
use crate::router::{Arg, FieldType, ListArg, ParamType, Params, Query, Route, Seg};
use crate::routes::input::{self, ListParams};
use bytes::BytesMut;
use serde_json::Value;
use std::borrow::Cow;
use tokio_postgres::types::{IsNull, ToSql, Type};

/// Most `$n` of one route.
pub const MAX_ARGS: usize = 10;

/// One bound value. Each variant encodes as its own Rust type does (type-checked
/// against the statement's parameter type), so a wrong table entry is an error, never
/// a silently misread value.
#[derive(Debug, Default)]
pub enum Val<'a> {
    #[default]
    Null,
    Text(Cow<'a, str>),
    Json(&'a Value),
    OwnedJson(Value),
    Int(i32),
    BigInt(i64),
    Bool(bool),
    TextArray(Vec<String>),
}

impl Val<'_> {
    /// The value inside, encoded as its own type encodes; None for NULL.
    fn inner(&self) -> Option<&(dyn ToSql + Sync)> {
        match self {
            Val::Null => None,
            Val::Text(s) => Some(s),
            Val::Json(v) => Some(v),
            Val::OwnedJson(v) => Some(v),
            Val::Int(n) => Some(n),
            Val::BigInt(n) => Some(n),
            Val::Bool(b) => Some(b),
            Val::TextArray(a) => Some(a),
        }
    }
}

impl ToSql for Val<'_> {
    /// Checked too: which types a value accepts depends on its variant.
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.to_sql_checked(ty, out)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn to_sql_checked(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.inner().map_or(Ok(IsNull::Yes), |v| v.to_sql_checked(ty, out))
    }
}

/// A route with its arguments bound.
pub struct Plan<'a> {
    pub route: &'static Route,
    args: [Val<'a>; MAX_ARGS],
}

impl<'a> Plan<'a> {
    /// The arguments as the database layer takes them.
    pub fn args(&self) -> [&(dyn ToSql + Sync); MAX_ARGS] {
        self.args.each_ref().map(|v| v as &(dyn ToSql + Sync))
    }
    pub fn arg_count(&self) -> usize {
        self.route.args.len()
    }
}

/// What the client sent, as far as the plan needs it.
pub struct Request<'a> {
    pub params: Params<'a>,
    pub query: Option<&'a str>,
    pub if_match: Option<&'a str>,
    /// The checked body (input::parse_body), for routes that have one.
    pub body: Option<&'a Value>,
    /// The same body as sent (for Arg::RawBody).
    pub raw_body: Option<&'a str>,
}

fn field_is_text(route: &Route, name: &str) -> bool {
    route.body.unwrap_or(&[]).iter().any(|f| f.name == name && matches!(f.ty, FieldType::Text | FieldType::Uuid))
}

pub fn plan<'a>(route: &'static Route, req: &Request<'a>) -> Result<Plan<'a>, ApiError> {
    let mut list = None::<ListParams>;
    let mut kind = None;
    let mut query_args = None;
    match route.query {
        Query::None => input::no_query(req.query)?,
        Query::List => list = Some(input::list_params(req.query)?),
        Query::Page => list = Some(input::page_params(req.query)?),
        Query::IndexKind => kind = Some(input::index_kind(req.query)?),
        Query::Args => query_args = Some(input::query_args(req.query)?),
        Query::Rows => list = Some(input::rows_params(req.query)?),
        Query::Expand => list = Some(input::expand_params(req.query)?),
        Query::ListExpand => list = Some(input::list_expand_params(req.query)?),
        Query::Referrers => list = Some(input::referrers_params(req.query)?),
    }
    let mut args: [Val<'a>; MAX_ARGS] = Default::default();
    for (slot, arg) in args.iter_mut().zip(route.args) {
        *slot = match arg {
            Arg::Path(i) => Val::Text(path_param(route, &req.params, *i)?),
            Arg::Field(name) => match req.body.and_then(|b| b.get(*name)) {
                None | Some(Value::Null) => Val::Null,
                // Text only where the table says text: a string where any JSON may
                // come (an ACL) goes to a jsonb parameter as JSON.
                Some(Value::String(s)) if field_is_text(route, name) => Val::Text(Cow::Borrowed(s)),
                Some(v) => Val::Json(v),
            },
            Arg::Body => req.body.map_or(Val::Null, Val::Json),
            Arg::RawBody => req.raw_body.map_or(Val::Null, |b| Val::Text(Cow::Borrowed(b))),
            Arg::IfMatch => input::if_match(req.if_match)?.map_or(Val::Null, Val::BigInt),
            Arg::IndexKind => Val::Text(Cow::Borrowed(kind.unwrap_or("btree"))),
            Arg::QueryArgs => Val::OwnedJson(query_args.take().ok_or_else(ApiError::internal)?),
            Arg::List(which) => {
                let p = list.as_mut().ok_or_else(ApiError::internal)?;
                match which {
                    ListArg::Filter => Val::OwnedJson(std::mem::take(&mut p.filter)),
                    ListArg::Order => p.order.take().map_or(Val::Null, |s| Val::Text(Cow::Owned(s))),
                    ListArg::Limit => Val::Int(p.limit),
                    ListArg::Offset => Val::Int(p.offset),
                    ListArg::Count => Val::Bool(p.count),
                    ListArg::After => p.after.take().map_or(Val::Null, |s| Val::Text(Cow::Owned(s))),
                    ListArg::Fields => p.fields.take().map_or(Val::Null, Val::TextArray),
                    ListArg::Expand => p.expand.take().map_or(Val::Null, Val::TextArray),
                    ListArg::Collection => p.collection.take().map_or(Val::Null, |s| Val::Text(Cow::Owned(s))),
                    ListArg::Field => p.field.take().map_or(Val::Null, |s| Val::Text(Cow::Owned(s))),
                }
            }
        };
    }
    Ok(Plan { route, args })
}

/// The i-th path parameter, decoded and checked against its declared type.
fn path_param<'a>(route: &Route, params: &Params<'a>, i: usize) -> Result<Cow<'a, str>, ApiError> {
    let v = params.get(i)?;
    let mut decl = route.path.iter().filter_map(|s| match s {
        Seg::Param(name, ty) => Some((*name, *ty)),
        Seg::Lit(_) => None,
    });
    if let Some((name, ParamType::Uuid)) = decl.nth(i) {
        if !input::is_uuid(&v) {
            return Err(ApiError::bad_request("invalid_request", format!("{name} must be a uuid, got {v:?}")));
        }
    }
    Ok(v)
}
