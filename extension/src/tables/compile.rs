//! The tables door's statements (docs/tables.md, "Over HTTP"): the query language
//! (`where`, `order`, `after`, `fields`; query/src/parse.rs) and row bodies compiled to
//! SQL over a protected table's real columns.
//!
//! Every client value is one element of ONE `text[]` bind parameter, `$1`, and reaches
//! its column as `($1[n])::<column type>` (json.rs's `input_expr`), so a comparison is
//! the column type's own operator and a btree index on the column can serve it. Table
//! and column names come only from the catalog (`baas._served_table`); a client's name
//! is only ever compared with them, and quoted. Operators come from the closed `Cond`.
//! The generated text refers to the table as `t`.

use crate::query::parse::{self, Cond, Filter, SortField};
use crate::tables::json::{self, ColType, Kind};
use serde::Deserialize;
use serde_json::{json, Value};

/// Why a request was refused: the code a client sees (docs/errors.md) and a message
/// naming the column or part at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

fn invalid_query(m: impl Into<String>) -> Refusal {
    Refusal { code: "invalid_query", message: m.into() }
}
fn invalid_value(m: impl Into<String>) -> Refusal {
    Refusal { code: "invalid_value", message: m.into() }
}
fn read_only(col: &Column) -> Refusal {
    invalid_value(format!("column {:?} is generated: it cannot be written", col.name))
}
fn row_not_found() -> Refusal {
    Refusal { code: "row_not_found", message: "row not found".into() }
}

impl From<pgbaas_query::QueryError> for Refusal {
    fn from(e: pgbaas_query::QueryError) -> Refusal {
        Refusal { code: e.code(), message: e.message }
    }
}

/// What `baas._served_table` says about a table.
#[derive(Debug, Clone, Deserialize)]
pub struct Table {
    /// Schema-qualified, quoted.
    pub rel: String,
    pub name: String,
    /// Primary key columns, in key order (empty: no primary key).
    pub key: Vec<String>,
    /// The bigint column bumped on every update; None: the ETag is xmin.
    pub version: Option<String>,
    pub columns: Vec<Column>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Column {
    pub name: String,
    pub oid: u32,
    #[serde(default)]
    pub elem: u32,
    #[serde(rename = "type")]
    pub sql: String,
    #[serde(default)]
    pub not_null: bool,
    /// The type (an array's element type) has an equality operator: `$eq`, `$in`,
    /// `$contains` apply.
    #[serde(default = "yes")]
    pub eq: bool,
    /// The type has a default btree ordering: `$gt`.. and `order` apply.
    #[serde(default = "yes")]
    pub ord: bool,
    /// GENERATED ALWAYS (identity or stored expression): never written by a body.
    #[serde(default)]
    pub read_only: bool,
}

fn yes() -> bool {
    true
}

impl Column {
    pub fn ty(&self) -> ColType {
        ColType::new(self.oid, self.elem, self.sql.clone())
    }
}

/// A SQL identifier, always quoted.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A SQL string literal, right whatever standard_conforming_strings says.
pub fn lit(s: &str) -> String {
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// The values of a statement, and for each the check that it fits its column.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Params {
    pub values: Vec<Option<String>>,
    /// (column, SQL expression casting the value, what a failure means:
    /// "query" → 400 invalid_query, "value" → 400 invalid_value, "key" → 404,
    /// "after" → 400 invalid_query about `after`).
    pub checks: Vec<(String, String, &'static str)>,
}

impl Params {
    fn push(&mut self, v: Option<String>) -> String {
        self.values.push(v);
        format!("$1[{}]", self.values.len())
    }
    /// A value for `col`, cast to its type; `role` says what a bad value is.
    fn typed(&mut self, col: &Column, v: &Value, role: &'static str) -> Result<String, Refusal> {
        let text = json::input_text(v, &col.ty()).map_err(|m| {
            let m = format!("column {:?} {m}", col.name);
            match role {
                "key" => row_not_found(),
                "after" => invalid_query("after: not a key of this table"),
                "query" => invalid_query(m),
                _ => invalid_value(m),
            }
        })?;
        let p = self.push(text);
        let e = json::input_expr(&p, &col.ty());
        self.checks.push((col.name.clone(), e.clone(), role));
        Ok(e)
    }
    pub fn to_json(&self) -> Value {
        json!({
            "params": self.values,
            "checks": self.checks.iter().map(|(c, e, r)| json!({"column": c, "expr": e, "role": r})).collect::<Vec<_>>(),
        })
    }
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    fn query_column(&self, name: &str, at: &str) -> Result<&Column, Refusal> {
        self.column(name).ok_or_else(|| invalid_query(format!("{at}: table {:?} has no column {name:?}", self.name)))
    }

    /// The row as a JSON object: every column, or only `fields`.
    pub fn row_json(&self, fields: Option<&[String]>) -> String {
        let cols: Vec<&Column> = match fields {
            Some(f) => self.columns.iter().filter(|c| f.contains(&c.name)).collect(),
            None => self.columns.iter().collect(),
        };
        if cols.is_empty() {
            return "'{}'::jsonb".into();
        }
        // jsonb_build_object takes at most 100 arguments: 50 columns per call.
        let parts: Vec<String> = cols
            .chunks(50)
            .map(|chunk| {
                let pairs: Vec<String> = chunk
                    .iter()
                    .map(|c| format!("{}, {}", lit(&c.name), json::output_expr(&format!("t.{}", ident(&c.name)), &c.ty())))
                    .collect();
                format!("pg_catalog.jsonb_build_object({})", pairs.join(", "))
            })
            .collect();
        parts.join(" || ")
    }

    /// The ETag: the version column, else the row's xmin.
    pub fn etag_expr(&self) -> String {
        match &self.version {
            Some(v) => format!("(t.{})::bigint", ident(v)),
            None => "((t.xmin)::text)::bigint".into(),
        }
    }

    fn key_columns(&self) -> Result<Vec<&Column>, Refusal> {
        if self.key.is_empty() {
            return Err(Refusal {
                code: "row_not_found",
                message: format!("table {:?} has no primary key: its rows are only listed", self.name),
            });
        }
        Ok(self.key.iter().filter_map(|k| self.column(k)).collect())
    }

    /// The key's text, as a path and `next` give it: the one key column's JSON value
    /// as text (a string's own text), or for a composite key a JSON array of them.
    pub fn key_text(&self) -> Option<String> {
        let cols = self.key_columns().ok()?;
        let vals: Vec<String> = cols.iter().map(|c| json::output_expr(&format!("t.{}", ident(&c.name)), &c.ty())).collect();
        Some(match vals.as_slice() {
            [one] => format!("({one} #>> '{{}}')"),
            _ => format!("(pg_catalog.jsonb_build_array({}))::text", vals.join(", ")),
        })
    }

    /// `t.k = $n` for every key column: the row the key text names.
    pub fn key_condition(&self, key: &str, params: &mut Params) -> Result<String, Refusal> {
        self.key_condition_as(key, params, "key")
    }

    fn key_condition_as(&self, key: &str, params: &mut Params, role: &'static str) -> Result<String, Refusal> {
        let cols = self.key_columns()?;
        let values: Vec<Value> = if cols.len() == 1 {
            vec![Value::String(key.to_string())]
        } else {
            match serde_json::from_str::<Value>(key) {
                Ok(Value::Array(a)) if a.len() == cols.len() && a.iter().all(|v| !v.is_null()) => a,
                _ => return Err(row_not_found()),
            }
        };
        let mut conds = Vec::new();
        for (c, v) in cols.iter().zip(&values) {
            // A composite key's parts may be JSON numbers; they travel as their text.
            let e = params.typed(c, v, role)?;
            conds.push(format!("t.{} = {e}", ident(&c.name)));
        }
        Ok(conds.join(" and "))
    }

    /// The filter over typed columns.
    pub fn filter(&self, f: &Filter, params: &mut Params) -> Result<String, Refusal> {
        Ok(match f {
            Filter::And(fs) if fs.is_empty() => "true".into(),
            Filter::And(fs) => format!("({})", fs.iter().map(|f| self.filter(f, params)).collect::<Result<Vec<_>, _>>()?.join(" and ")),
            Filter::Or(fs) => format!("({})", fs.iter().map(|f| self.filter(f, params)).collect::<Result<Vec<_>, _>>()?.join(" or ")),
            Filter::Not(inner) => format!("(not coalesce({}, false))", self.filter(inner, params)?),
            Filter::Time(which, _) => {
                return Err(invalid_query(format!(
                    "where: ${} is a document time; a table's filter names its columns",
                    which.column()
                )))
            }
            Filter::Field(path, conds) => {
                let [name] = path.0.as_slice() else {
                    return Err(invalid_query(format!(
                        "where: {:?} is a nested path; table filters name columns",
                        path.dotted()
                    )));
                };
                let col = self.query_column(name, "where")?;
                let parts = conds.iter().map(|c| self.cond(col, c, params)).collect::<Result<Vec<_>, _>>()?;
                match parts.as_slice() {
                    [one] => one.clone(),
                    _ => format!("({})", parts.join(" and ")),
                }
            }
        })
    }

    fn cond(&self, col: &Column, c: &Cond, params: &mut Params) -> Result<String, Refusal> {
        let x = format!("t.{}", ident(&col.name));
        let ty = col.ty();
        let kind = ty.kind();
        let refuse = |op: &str| {
            invalid_query(format!("where: {op} does not apply to column {:?} ({})", col.name, col.sql))
        };
        // Types without an equality operator or a btree ordering (json, point, xml, ...,
        // or arrays of them) are refused by name; arrays and jsonb have equality but no
        // useful range order here.
        let comparable = kind != Kind::Json && col.eq;
        let ordered = comparable && col.ord && kind != Kind::Jsonb && !ty.is_array();
        let range = |op: &str, name: &str, v: &Value, params: &mut Params| -> Result<String, Refusal> {
            if !ordered {
                return Err(refuse(name));
            }
            Ok(format!("{x} {op} {}", params.typed(col, v, "query")?))
        };
        Ok(match c {
            Cond::Eq(Value::Null) => format!("({x} is null)"),
            Cond::Ne(Value::Null) => format!("({x} is not null)"),
            Cond::Eq(v) if comparable => format!("{x} = {}", params.typed(col, v, "query")?),
            Cond::Ne(v) if comparable => format!("{x} is distinct from {}", params.typed(col, v, "query")?),
            Cond::Eq(_) => return Err(refuse("$eq")),
            Cond::Ne(_) => return Err(refuse("$ne")),
            Cond::Gt(v) => range(">", "$gt", v, params)?,
            Cond::Gte(v) => range(">=", "$gte", v, params)?,
            Cond::Lt(v) => range("<", "$lt", v, params)?,
            Cond::Lte(v) => range("<=", "$lte", v, params)?,
            Cond::In(_) | Cond::Nin(_) if !comparable || ty.is_array() || kind == Kind::Jsonb => {
                return Err(refuse(if matches!(c, Cond::In(_)) { "$in" } else { "$nin" }))
            }
            Cond::In(vs) | Cond::Nin(vs) => {
                let nulls = vs.iter().any(Value::is_null);
                let values: Vec<&Value> = vs.iter().filter(|v| !v.is_null()).collect();
                let inside = if values.is_empty() {
                    "false".to_string()
                } else {
                    // The list as ONE value (a JSON array of texts), unpacked and cast.
                    let mut texts = Vec::with_capacity(values.len());
                    for v in &values {
                        match json::input_text(v, &ty) {
                            Ok(t) => texts.push(Value::from(t)),
                            Err(m) => return Err(invalid_query(format!("column {:?} {m}", col.name))),
                        }
                    }
                    let p = params.push(Some(Value::Array(texts).to_string()));
                    let each = json::input_expr("e", &ty);
                    let list = format!("array(select {each} from pg_catalog.jsonb_array_elements_text(({p})::jsonb) e)");
                    params.checks.push((col.name.clone(), list.clone(), "query"));
                    format!("{x} = any({list})")
                };
                let inside = if nulls { format!("({inside} or {x} is null)") } else { inside };
                if matches!(c, Cond::In(_)) {
                    inside
                } else {
                    format!("(not coalesce({inside}, false))")
                }
            }
            Cond::Exists(true) => format!("({x} is not null)"),
            Cond::Exists(false) => format!("({x} is null)"),
            Cond::Contains(_) if !comparable => return Err(refuse("$contains")),
            Cond::Contains(v) if ty.is_array() => {
                if v.is_array() || v.is_object() || v.is_null() {
                    return Err(invalid_query(format!("where: {:?}.$contains takes one element value", col.name)));
                }
                format!("{x} @> {}", params.typed(col, &Value::Array(vec![v.clone()]), "query")?)
            }
            Cond::Contains(v) if kind == Kind::Jsonb => {
                // As for documents: an array holding the element.
                let arr = Value::Array(vec![v.clone()]);
                format!("(pg_catalog.jsonb_typeof({x}) = 'array' and {x} @> {})", params.typed(col, &arr, "query")?)
            }
            Cond::Contains(_) => return Err(refuse("$contains")),
            Cond::Text { op, fold, needle } if kind == Kind::Text && !ty.is_array() => {
                let t = params.push(Some(needle.clone()));
                crate::query::compile::text_cond(&format!("({x})::text"), *op, *fold, &format!("({t})::text"))
            }
            Cond::Text { op, fold, .. } => return Err(refuse(op.name(*fold))),
            Cond::Regex { pattern, .. } if kind == Kind::Text && !ty.is_array() => {
                let t = params.push(Some(pattern.canonical.clone()));
                crate::query::compile::regex_cond(&format!("({x})::text"), &format!("({t})::text"))
            }
            Cond::Regex { fold, .. } => return Err(refuse(if *fold { "$iregex" } else { "$regex" })),
            Cond::Subset(vs) if kind == Kind::Jsonb && !ty.is_array() => {
                let t = params.push(Some(Value::Array(vs.clone()).to_string()));
                crate::query::compile::subset_cond(&x, &format!("array(select jsonb_array_elements(({t})::jsonb))"))
            }
            Cond::Subset(_) => return Err(refuse("$subset")),
            Cond::Within(shape) if kind == Kind::Jsonb && !ty.is_array() => {
                let t = params.push(Some(shape.canonical().to_string()));
                crate::query::compile::within_cond(&x, &format!("({t})::text"))
            }
            Cond::Within(_) => return Err(refuse("$within")),
            Cond::Covers((lat, lng)) if kind == Kind::Jsonb && !ty.is_array() => {
                let t = params.push(Some(json!([lat, lng]).to_string()));
                crate::query::compile::covers_cond(&x, &format!("({t})::text"))
            }
            Cond::Covers(_) => return Err(refuse("$covers")),
        })
    }

    /// `order`: column names (`-` descending), then the primary key's columns not named.
    fn order_keys(&self, order: &str) -> Result<Vec<(&Column, bool)>, Refusal> {
        let mut keys: Vec<(&Column, bool)> = Vec::new();
        for k in parse::parse_order(order)? {
            let name = match &k.field {
                SortField::Data(p) if p.0.len() == 1 => p.0[0].clone(),
                SortField::Data(p) => return Err(invalid_query(format!("order: {:?} is a nested path; order names columns", p.dotted()))),
                SortField::Id => "id".into(),
                SortField::CreatedAt => "created_at".into(),
                SortField::UpdatedAt => "updated_at".into(),
            };
            let col = self.query_column(&name, "order")?;
            if col.ty().kind() == Kind::Json || !col.ord {
                return Err(invalid_query(format!("order: column {name:?} ({}) has no order", col.sql)));
            }
            if !keys.iter().any(|(c, _)| c.name == col.name) {
                keys.push((col, k.descending));
            }
        }
        for k in &self.key {
            if let Some(col) = self.column(k) {
                if !keys.iter().any(|(c, _)| c.name == col.name) {
                    keys.push((col, false));
                }
            }
        }
        Ok(keys)
    }

    pub fn fields(&self, raw: &[String]) -> Result<Vec<String>, Refusal> {
        let names = parse::parse_fields(raw)?;
        for n in &names {
            self.query_column(n, "fields")?;
        }
        Ok(names)
    }

    /// One page: `select items, next, n` (`$2` limit, `$3` offset) and the count
    /// statement. `next` is an opaque cursor: base64url of a JSON array of the texts of
    /// the last row's order values (the primary key's columns last); `after` is one,
    /// and each of its values is compared as a bound parameter of its column's type, so
    /// a page does not depend on the cursor row still being there or unchanged.
    /// Without a primary key there is no cursor, and without `order` no ORDER BY.
    pub fn list(&self, filter: &Value, order: &str, fields: Option<&[String]>, after: Option<&str>) -> Result<Value, Refusal> {
        let f = parse::parse(filter)?;
        let fields = fields.map(|f| self.fields(f)).transpose()?;
        let keys = self.order_keys(order)?;
        let mut params = Params::default();
        let cond = self.filter(&f, &mut params)?;
        let order_sql = keys
            .iter()
            .map(|(c, d)| format!("t.{} {} nulls last", ident(&c.name), if *d { "desc" } else { "asc" }))
            .collect::<Vec<_>>()
            .join(", ");
        let (over, order_by) = if keys.is_empty() { (String::new(), String::new()) } else { (format!("order by {order_sql}"), format!(" order by {order_sql}")) };
        let count = format!("select pg_catalog.count(*) from {} t where {cond}", self.rel);
        let mut where_sql = cond;
        if let Some(after) = after {
            let bounds = self.cursor_bounds(after, &keys, &mut params)?;
            let pairs: Vec<(&Column, bool, String)> = keys.iter().zip(bounds).map(|((c, d), b)| (*c, *d, b)).collect();
            where_sql = format!("{where_sql} and {}", after_condition(&pairs));
        }
        let next = if self.key.is_empty() {
            "null::text".to_string()
        } else {
            let texts = keys.iter().map(|(c, _)| format!("(t.{})::text", ident(&c.name))).collect::<Vec<_>>().join(", ");
            format!(
                "pg_catalog.translate(pg_catalog.encode(pg_catalog.convert_to((pg_catalog.jsonb_build_array({texts}))::text, 'UTF8'), 'base64'), E'+/=\\n', '-_')"
            )
        };
        let sql = format!(
            "select coalesce(pg_catalog.jsonb_agg(s.j order by s.n), '[]'::jsonb), (pg_catalog.array_agg(s.k order by s.n desc))[1], pg_catalog.count(*)::integer \
             from (select {} as j, {next} as k, pg_catalog.row_number() over ({over}) as n \
             from {} t where {where_sql}{order_by} limit $2 offset $3) s",
            self.row_json(fields.as_deref()),
            self.rel,
        );
        let mut out = params.to_json();
        out["sql"] = json!(sql);
        out["count"] = json!(count);
        out["paged"] = json!(!self.key.is_empty());
        Ok(out)
    }

    /// The typed bounds an `after` cursor holds, one per order key.
    fn cursor_bounds(&self, after: &str, keys: &[(&Column, bool)], params: &mut Params) -> Result<Vec<String>, Refusal> {
        use base64::Engine as _;
        if self.key.is_empty() {
            return Err(invalid_query(format!("after: table {:?} has no primary key, so its listings have no cursor", self.name)));
        }
        let bad = || invalid_query("after: not a cursor of this listing (pass the `next` of the previous page, with the same order)");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(after.trim_end_matches('=')).map_err(|_| bad())?;
        let vals: Vec<Option<String>> = match serde_json::from_slice::<Value>(&raw) {
            Ok(Value::Array(a)) if a.len() == keys.len() => a
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(Some(s)),
                    Value::Null => Ok(None),
                    _ => Err(bad()),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(bad()),
        };
        Ok(keys
            .iter()
            .zip(vals)
            .map(|((c, _), v)| {
                // The column's own text form, cast back by the type's input function.
                let e = format!("({})::{}", params.push(v), c.sql);
                params.checks.push((c.name.clone(), e.clone(), "after"));
                e
            })
            .collect())
    }

    /// `select data, version` of the row the key names.
    pub fn get(&self, key: &str) -> Result<Value, Refusal> {
        let mut params = Params::default();
        let kc = self.key_condition(key, &mut params)?;
        let mut out = params.to_json();
        out["sql"] = json!(format!("select {}, {} from {} t where {kc}", self.row_json(None), self.etag_expr(), self.rel));
        Ok(out)
    }

    /// The body's columns and values, each cast to its column's type; and the
    /// generated (read-only) columns it names with their values, which an insert refuses
    /// and an update only compares with the row's.
    fn assignments(&self, row: &Value, params: &mut Params) -> Result<(Vec<(String, String)>, Vec<(&Column, String)>), Refusal> {
        let Value::Object(m) = row else {
            return Err(invalid_value(format!("a row must be a JSON object, found {}", parse::kind(row))));
        };
        let mut out = Vec::with_capacity(m.len());
        let mut fixed = Vec::new();
        for (k, v) in m {
            let col = self
                .column(k)
                .ok_or_else(|| invalid_value(format!("table {:?} has no column {k:?}", self.name)))?;
            let e = params.typed(col, v, "value")?;
            if col.read_only {
                if !col.eq || col.ty().kind() == Kind::Json {
                    return Err(read_only(col));
                }
                fixed.push((col, e));
            } else {
                out.push((ident(&col.name), e));
            }
        }
        Ok((out, fixed))
    }

    /// `insert ... returning data, version`.
    pub fn insert(&self, row: &Value) -> Result<Value, Refusal> {
        let mut params = Params::default();
        let (a, fixed) = self.assignments(row, &mut params)?;
        if let Some((col, _)) = fixed.first() {
            return Err(read_only(col));
        }
        let values = if a.is_empty() {
            "default values".to_string()
        } else {
            format!(
                "({}) values ({})",
                a.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>().join(", "),
                a.iter().map(|(_, e)| e.as_str()).collect::<Vec<_>>().join(", ")
            )
        };
        let mut out = params.to_json();
        out["sql"] = json!(format!(
            "insert into {} as t {values} returning {}, {}",
            self.rel,
            self.row_json(None),
            self.etag_expr()
        ));
        // For a caller who may insert but not read the row: RETURNING would apply the
        // read policy to the new row.
        out["blind"] = json!(format!("insert into {} as t {values}", self.rel));
        Ok(out)
    }

    /// `update ... returning data, version` (`$2`: the If-Match version or NULL), and
    /// the probe explaining a miss: `select version` of the row as the caller sees it.
    pub fn update(&self, key: &str, patch: &Value) -> Result<Value, Refusal> {
        let mut params = Params::default();
        let kc = self.key_condition(key, &mut params)?;
        let (a, fixed) = self.assignments(patch, &mut params)?;
        if a.is_empty() {
            return Err(match fixed.first() {
                Some((col, _)) => read_only(col),
                None => invalid_value("the patch names no column"),
            });
        }
        let set = a.iter().map(|(c, e)| format!("{c} = {e}")).collect::<Vec<_>>().join(", ");
        // Generated columns sent back as read are allowed when they equal the row's.
        let same = if fixed.is_empty() {
            "true".to_string()
        } else {
            fixed.iter().map(|(c, e)| format!("t.{} is not distinct from {e}", ident(&c.name))).collect::<Vec<_>>().join(" and ")
        };
        let mut out = params.to_json();
        out["sql"] = json!(format!(
            "update {} as t set {set} where {kc} and {same} and ($2::bigint is null or {} = $2) returning {}, {}",
            self.rel,
            self.etag_expr(),
            self.row_json(None),
            self.etag_expr()
        ));
        out["probe"] = json!(format!("select {}, {same} from {} t where {kc}", self.etag_expr(), self.rel));
        out["read_only"] = json!(fixed.iter().map(|(c, _)| c.name.clone()).collect::<Vec<_>>());
        Ok(out)
    }

    /// `delete ...` (`$2`: If-Match) and its probe.
    pub fn delete(&self, key: &str) -> Result<Value, Refusal> {
        let mut params = Params::default();
        let kc = self.key_condition(key, &mut params)?;
        let mut out = params.to_json();
        out["sql"] = json!(format!(
            "delete from {} as t where {kc} and ($2::bigint is null or {} = $2)",
            self.rel,
            self.etag_expr()
        ));
        out["probe"] = json!(format!("select {}, true from {} t where {kc}", self.etag_expr(), self.rel));
        Ok(out)
    }
}

/// Rows strictly after the cursor in the order `keys` (column, descending, the
/// cursor's typed value), NULLs last both ways. All keys NOT NULL and ascending: one row
/// comparison, which a btree index on those columns serves.
fn after_condition(keys: &[(&Column, bool, String)]) -> String {
    let x = |col: &Column| format!("t.{}", ident(&col.name));
    if keys.iter().all(|(col, d, _)| col.not_null && !d) {
        let left = keys.iter().map(|(col, _, _)| x(col)).collect::<Vec<_>>().join(", ");
        let right = keys.iter().map(|(_, _, c)| c.as_str()).collect::<Vec<_>>().join(", ");
        return format!("(({left}) > ({right}))");
    }
    let mut eqs: Vec<String> = Vec::new();
    let mut ors: Vec<String> = Vec::new();
    for (col, desc, cc) in keys {
        let xc = x(col);
        let op = if *desc { "<" } else { ">" };
        let after = if col.not_null {
            format!("{xc} {op} {cc}")
        } else {
            format!("({xc} {op} {cc} or ({xc} is null and {cc} is not null))")
        };
        let mut term = eqs.clone();
        term.push(after);
        ors.push(format!("({})", term.join(" and ")));
        eqs.push(format!("{xc} is not distinct from {cc}"));
    }
    format!("({})", ors.join(" or "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::json::oid;

    fn table() -> Table {
        serde_json::from_value(json!({
            "rel": "\"public\".\"orders\"", "name": "orders", "key": ["id"], "version": null,
            "columns": [
                {"name": "id", "oid": oid::INT8, "type": "bigint", "not_null": true},
                {"name": "price", "oid": oid::NUMERIC, "type": "numeric"},
                {"name": "at", "oid": oid::TIMESTAMPTZ, "type": "timestamp with time zone"},
                {"name": "tags", "oid": 1009, "elem": 25, "type": "text[]"},
                {"name": "meta", "oid": oid::JSON, "type": "json"},
                {"name": "we\"ird'", "oid": 25, "type": "text"}
            ]
        }))
        .unwrap()
    }

    fn cond(f: Value) -> Result<(String, Params), Refusal> {
        let mut p = Params::default();
        let s = table().filter(&parse::parse(&f)?, &mut p)?;
        Ok((s, p))
    }

    #[test]
    fn values_are_typed_parameters() {
        let (s, p) = cond(json!({"$and": [{"price": {"$gte": "10.50"}}, {"id": 7}]})).unwrap();
        assert_eq!(s, "(t.\"price\" >= ($1[1])::numeric and t.\"id\" = ($1[2])::bigint)");
        assert_eq!(p.values, vec![Some("10.50".into()), Some("7".into())]);
        assert_eq!(p.checks.len(), 2);
        let (s, p) = cond(json!({"we\"ird'": "x'); drop table t; --"})).unwrap();
        assert_eq!(s, "t.\"we\"\"ird'\" = ($1[1])::text");
        assert_eq!(p.values, vec![Some("x'); drop table t; --".into())]);
    }

    #[test]
    fn unknown_columns_and_operators_are_refused_by_name() {
        let e = cond(json!({"nope": 1})).unwrap_err();
        assert_eq!(e.code, "invalid_query");
        assert!(e.message.contains("no column \"nope\""), "{}", e.message);
        let e = cond(json!({"meta": 1})).unwrap_err();
        assert!(e.message.contains("$eq does not apply to column \"meta\""), "{}", e.message);
        assert!(cond(json!({"price": {"$contains": 1}})).is_err());
        assert!(cond(json!({"a.b": 1})).unwrap_err().message.contains("nested"));
        let e = cond(json!({"id": {"$eq": {"x": 1}}})).unwrap_err();
        assert!(e.message.contains("column \"id\""), "{}", e.message);
    }

    #[test]
    fn nulls_lists_and_arrays() {
        assert_eq!(cond(json!({"price": null})).unwrap().0, "(t.\"price\" is null)");
        let (s, p) = cond(json!({"id": {"$in": [1, 2, null]}})).unwrap();
        assert!(s.starts_with("(t.\"id\" = any(array(select (e)::bigint from pg_catalog.jsonb_array_elements_text(($1[1])::jsonb) e)) or t.\"id\" is null)"), "{s}");
        assert_eq!(p.values, vec![Some(r#"["1","2"]"#.into())]);
        let (s, _) = cond(json!({"tags": {"$contains": "red"}})).unwrap();
        assert!(s.starts_with("t.\"tags\" @> "), "{s}");
        assert_eq!(cond(json!({"id": {"$nin": []}})).unwrap().0, "(not coalesce(false, false))");
    }

    #[test]
    fn statements() {
        let t = table();
        let l = t.list(&json!({"id": {"$gt": 1}}), "-price", Some(&["price".into()]), Some("WyIxIiwiNSJd")).unwrap();
        let sql = l["sql"].as_str().unwrap();
        assert!(sql.contains("order by t.\"price\" desc nulls last, t.\"id\" asc nulls last limit $2 offset $3"), "{sql}");
        assert!(sql.contains("pg_catalog.jsonb_build_object('price', "), "{sql}");
        assert!(!sql.contains("'at'"), "fields keeps only the named columns: {sql}");
        assert_eq!(l["checks"][1]["role"], "after");
        assert!(t.list(&json!({}), "nope", None, None).unwrap_err().message.contains("order: table \"orders\" has no column \"nope\""));
        assert!(t.list(&json!({}), "", Some(&["x".into()]), None).unwrap_err().message.contains("fields"));
        let g = t.get("42").unwrap();
        assert!(g["sql"].as_str().unwrap().ends_with("where t.\"id\" = ($1[1])::bigint"));
        assert_eq!(g["checks"][0]["role"], "key");
        let i = t.insert(&json!({"price": "1.10", "tags": ["a"]})).unwrap();
        assert!(i["sql"].as_str().unwrap().starts_with("insert into \"public\".\"orders\" as t (\"price\", \"tags\") values (($1[1])::numeric, "));
        assert_eq!(t.insert(&json!({"zz": 1})).unwrap_err().code, "invalid_value");
        let mut g = t.clone();
        g.columns[0].read_only = true;
        assert!(g.insert(&json!({"id": 1})).unwrap_err().message.contains("generated"));
        assert!(g.update("1", &json!({"id": 2})).is_err());
        assert!(t.insert(&json!({})).unwrap()["sql"].as_str().unwrap().contains("default values"));
        let u = t.update("1", &json!({"price": "2"})).unwrap();
        assert!(u["sql"].as_str().unwrap().contains("($2::bigint is null or ((t.xmin)::text)::bigint = $2)"));
        assert!(t.update("1", &json!({})).is_err());
        assert!(t.delete("1").unwrap()["probe"].as_str().unwrap().starts_with("select ((t.xmin)::text)::bigint"));
    }

    #[test]
    fn keys() {
        let mut t = table();
        t.key = vec!["id".into(), "we\"ird'".into()];
        let mut p = Params::default();
        assert_eq!(
            t.key_condition(r#"[1,"a"]"#, &mut p).unwrap(),
            "t.\"id\" = ($1[1])::bigint and t.\"we\"\"ird'\" = ($1[2])::text"
        );
        assert_eq!(t.key_condition("1", &mut p).unwrap_err().code, "row_not_found");
        assert_eq!(t.key_condition("[1]", &mut p).unwrap_err().code, "row_not_found");
        t.key = vec![];
        assert_eq!(t.get("1").unwrap_err().code, "row_not_found");
    }

    #[test]
    fn keyset_after() {
        use base64::Engine as _;
        let t = table();
        let cur = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let c = cur(json!(["5"]));
        let l = t.list(&json!({}), "", None, Some(c.as_str())).unwrap();
        assert!(l["sql"].as_str().unwrap().contains("((t.\"id\") > (($1[1])::bigint))"), "{}", l["sql"]);
        assert_eq!(l["params"], json!(["5"]));
        let c = cur(json!([null, "5"]));
        let l = t.list(&json!({}), "price", None, Some(c.as_str())).unwrap();
        let a = l["sql"].as_str().unwrap();
        assert!(a.contains("t.\"price\" is null and ($1[1])::numeric is not null"), "{a}");
        assert!(a.contains("t.\"price\" is not distinct from ($1[1])::numeric"), "{a}");
        let (two, num) = (cur(json!(["1", "2"])), cur(json!([1])));
        for bad in ["5", "!!", two.as_str(), num.as_str()] {
            assert_eq!(t.list(&json!({}), "", None, Some(bad)).unwrap_err().code, "invalid_query", "{bad}");
        }
        let mut k = table();
        k.key.clear();
        let l = k.list(&json!({}), "", None, None).unwrap();
        assert!(!l["sql"].as_str().unwrap().contains("order by t."), "no key, no order: no ORDER BY: {}", l["sql"]);
        let c = cur(json!([]));
        assert!(k.list(&json!({}), "", None, Some(c.as_str())).is_err());
    }

    #[test]
    fn literals_survive_backslashes() {
        assert_eq!(lit("a'b"), "'a''b'");
        assert_eq!(lit("a\\b"), "E'a\\\\b'");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }
}
