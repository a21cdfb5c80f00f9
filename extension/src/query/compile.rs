//! AST -> SQL. Every value the client sent travels in one jsonb bind parameter ($1,
//! an array) and is referenced as `($1 -> n)` (a `$in`/`$nin` list as one element); field names are quoted as SQL string
//! literals by `lit`; operators come from the closed `Cond` enum. Nothing else of the
//! request reaches the SQL text.
//!
//! The generated text refers to the documents table as `d`.

use crate::error::BaasError;
use crate::query::parse::{Cond, Filter, Path, SortField, SortKey, TextOp};
use serde_json::{json, Value};

/// A SQL string literal. Paths never contain backslashes or control characters (the
/// parser refuses them), so doubling quotes is complete quoting.
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `baas._jfield(baas._jfield(d.data, 'a'), 'b')`: field access through the leakproof
/// twin of `->` (so that under row-level security the condition may drive an index
/// scan), and exactly the expression `baas.create_index` indexes.
pub fn path_expr(p: &Path, table: &str) -> String {
    let mut s = format!("{table}data");
    for seg in &p.0 {
        s = format!("baas._jfield({s}, {})", lit(seg));
    }
    s
}

/// The leakproof twins of jsonb's comparison operators (sql/documents.sql).
const EQ: &str = "operator(baas.=)";

#[derive(Default)]
pub struct Params(pub Vec<Value>);

impl Params {
    fn push(&mut self, v: Value) -> String {
        self.0.push(v);
        format!("($1 -> {})", self.0.len() - 1)
    }
    fn push_text(&mut self, v: Value) -> String {
        self.0.push(v);
        format!("($1 ->> {})", self.0.len() - 1)
    }
    /// A whole list as ONE parameter (a jsonb array), unpacked into `jsonb[]` by an
    /// uncorrelated sub-select: the SQL text, and so the kept plan, is the same for 2
    /// values or 500, where one `($1 -> n)` per element made the text, the plan and
    /// the time to plan it grow with the list (0.27 s and ~8 MB per backend for 4,000
    /// values; issue 13). Postgres runs the sub-select once per execution as an
    /// initplan, and `x operator(baas.=) any($initplan)` is still an index condition:
    /// the parameter holds no column, and the operator is leakproof.
    fn push_list(&mut self, vs: &[Value]) -> String {
        let at = self.push(Value::Array(vs.to_vec()));
        format!("array(select jsonb_array_elements{at})")
    }
}

pub fn compile_filter(f: &Filter, params: &mut Params) -> String {
    compile_filter_on(f, params, &|p| path_expr(p, "d."))
}

/// The distinct data paths a filter reads, dotted, in first-use order.
pub fn filter_paths(f: &Filter) -> Vec<String> {
    fn walk(f: &Filter, out: &mut Vec<String>) {
        match f {
            Filter::And(fs) | Filter::Or(fs) => fs.iter().for_each(|f| walk(f, out)),
            Filter::Not(inner) => walk(inner, out),
            Filter::Time(..) => {}
            Filter::Field(p, _) => {
                let d = p.dotted();
                if !out.contains(&d) {
                    out.push(d);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(f, &mut out);
    out
}

/// Whether the filter has a `$created_at`/`$updated_at` condition (columns of `d`,
/// which baas.index_entries does not have).
pub fn has_time(f: &Filter) -> bool {
    match f {
        Filter::And(fs) | Filter::Or(fs) => fs.iter().any(has_time),
        Filter::Not(inner) => has_time(inner),
        Filter::Time(..) => true,
        Filter::Field(..) => false,
    }
}

/// The filter with each field read through `field(path)`: `d.data` paths for the
/// documents table, or `e.value` for a filter on one path answered from
/// baas.index_entries (same conditions, same parameters).
pub fn compile_filter_on(f: &Filter, params: &mut Params, field: &dyn Fn(&Path) -> String) -> String {
    match f {
        Filter::And(fs) if fs.is_empty() => "true".into(),
        Filter::And(fs) => format!("({})", fs.iter().map(|f| compile_filter_on(f, params, field)).collect::<Vec<_>>().join(" and ")),
        Filter::Or(fs) => format!("({})", fs.iter().map(|f| compile_filter_on(f, params, field)).collect::<Vec<_>>().join(" or ")),
        // Leaves are NULL (unknown) where a field is missing; NOT must see that as false.
        Filter::Not(inner) => format!("(not coalesce({}, false))", compile_filter_on(inner, params, field)),
        // The column against the instant made exactly from its microseconds (no text for
        // Postgres to parse); a btree index on the column can serve it. Seconds and the
        // remaining microseconds apart: `bigint * interval` goes through float8, which
        // rounds beyond 2^53 microseconds (before 1685 or after 2255).
        Filter::Time(which, conds) => {
            let parts: Vec<String> = conds
                .iter()
                .map(|c| {
                    let at = params.push_text(json!(c.micros));
                    format!(
                        "d.{} {} ('epoch'::timestamptz + (({at})::bigint / 1000000) * interval '1 second' + (({at})::bigint % 1000000) * interval '1 microsecond')",
                        which.column(),
                        c.op.sql()
                    )
                })
                .collect();
            match parts.as_slice() {
                [one] => one.clone(),
                _ => format!("({})", parts.join(" and ")),
            }
        }
        Filter::Field(path, conds) => {
            let x = field(path);
            // Conjuncts of all conditions; several range conditions on one field share
            // one type check (each extra check would multiply the planner's row
            // estimate by its selectivity).
            let mut parts: Vec<String> = Vec::new();
            for c in conds {
                for p in compile_cond(&x, c, params) {
                    if !parts.contains(&p) {
                        parts.push(p);
                    }
                }
            }
            match parts.as_slice() {
                [one] => one.clone(),
                _ => format!("({})", parts.join(" and ")),
            }
        }
    }
}

/// The conjuncts that together express `c`.
fn compile_cond(x: &str, c: &Cond, params: &mut Params) -> Vec<String> {
    let range = |op: &str, v: &Value, params: &mut Params| match v {
        Value::Number(_) => vec![
            format!("jsonb_typeof({x}) = 'number'"),
            format!("{x} operator(baas.{op}) {}", params.push(v.clone())),
        ],
        // Strings compare by code point whatever the database's collation.
        _ => vec![
            format!("jsonb_typeof({x}) = 'string'"),
            format!("({x} #>> '{{}}') collate \"C\" {op} {} collate \"C\"", params.push_text(v.clone())),
        ],
    };
    match c {
        Cond::Eq(v) => vec![format!("{x} {EQ} {}", params.push(v.clone()))],
        Cond::Ne(v) => vec![format!("{x} is distinct from {}", params.push(v.clone()))],
        Cond::Gt(v) => range(">", v, params),
        Cond::Gte(v) => range(">=", v, params),
        Cond::Lt(v) => range("<", v, params),
        Cond::Lte(v) => range("<=", v, params),
        Cond::In(vs) if vs.is_empty() => vec!["false".into()],
        Cond::In(vs) => vec![format!("{x} {EQ} any({})", params.push_list(vs))],
        Cond::Nin(vs) if vs.is_empty() => vec!["true".into()],
        Cond::Nin(vs) => vec![format!("(not coalesce({x} {EQ} any({}), false))", params.push_list(vs))],
        Cond::Exists(true) => vec![format!("({x} is not null)")],
        Cond::Exists(false) => vec![format!("({x} is null)")],
        Cond::Contains(v) if !v.is_object() && !v.is_array() => {
            // Containment of a one-element array is element equality for scalars, and
            // a GIN jsonb_path_ops index can answer it.
            vec![format!("jsonb_typeof({x}) = 'array'"), format!("{x} operator(baas.@>) {}", params.push(json!([v])))]
        }
        Cond::Contains(v) => vec![
            format!("jsonb_typeof({x}) = 'array'"),
            format!("exists (select from jsonb_array_elements({x}) e where e {EQ} {})", params.push(v.clone())),
        ],
        // One CASE, so that the elements are read only of an array (a conjunct order is
        // the planner's to choose).
        Cond::Subset(vs) => vec![subset_cond(x, &params.push_list(vs))],
        Cond::Text { op, fold, needle } => {
            let t = params.push_text(Value::String(needle.clone()));
            vec![format!("jsonb_typeof({x}) = 'string'"), text_cond(&format!("({x} #>> '{{}}')"), *op, *fold, &t)]
        }
        Cond::Regex { pattern, .. } => {
            let t = params.push_text(Value::String(pattern.canonical.clone()));
            vec![format!("jsonb_typeof({x}) = 'string'"), regex_cond(&format!("({x} #>> '{{}}')"), &t)]
        }
        Cond::Within(shape) => vec![within_cond(x, &params.push_text(Value::String(shape.canonical().to_string())))],
        Cond::Covers((lat, lng)) => vec![covers_cond(x, &params.push_text(Value::String(json!([lat, lng]).to_string())))],
    }
}

/// The jsonb `x` is an array each of whose elements equals one of `list` (a `jsonb[]`
/// expression): `$subset`. Shared by documents and protected tables' jsonb columns.
pub fn subset_cond(x: &str, list: &str) -> String {
    format!("(case when jsonb_typeof({x}) = 'array' then not exists (select from jsonb_array_elements({x}) e where not coalesce(e {EQ} any({list}), false)) else false end)")
}

/// The jsonb `x` is a point (an object with numbers `latitude` and `longitude`) that the
/// shape `t` holds (text: `Shape::canonical`). The numbers reach Rust as the text
/// Postgres writes them, which Rust reads as the evaluator does (query/src/geo.rs).
/// Shared by documents and protected tables' jsonb columns.
pub fn within_cond(x: &str, t: &str) -> String {
    let (lat, lng) = (format!("baas._jfield({x}, 'latitude')"), format!("baas._jfield({x}, 'longitude')"));
    format!("(jsonb_typeof({lat}) = 'number' and jsonb_typeof({lng}) = 'number' and baas._geo_within({lat} #>> '{{}}', {lng} #>> '{{}}', {t}))")
}

/// The jsonb `x` is an area (an object whose `coordinates` are `[latitude, longitude]`
/// pairs) holding the point `t` (text: `[latitude, longitude]`).
pub fn covers_cond(x: &str, t: &str) -> String {
    let c = format!("baas._jfield({x}, 'coordinates')");
    format!("(jsonb_typeof({c}) = 'array' and baas._geo_covers({c}::text, {t}))")
}

/// `s` holds a match of the canonical pattern `t` (query/src/pattern.rs: its text leaves
/// the ARE no locale-dependent choice, case folding included, so plain `~`). Under "C",
/// as `text_cond`: a nondeterministic collation refuses regular expressions.
/// A text longer than MAX_TEXT_CHARS characters never matches (bounding what a pattern
/// costs, there too).
pub fn regex_cond(s: &str, t: &str) -> String {
    let max = pgbaas_query::pattern::MAX_TEXT_CHARS;
    format!("(pg_catalog.char_length({s}) <= {max} and ({s} collate \"C\") ~ ({t} collate \"C\"))")
}

/// `s` starts with, ends with or holds `t` (two text expressions), byte for byte, or
/// with ASCII letters folded: `lower()` under the "C" collation folds A-Z and nothing
/// else (Postgres's str_tolower), as Rust's `to_ascii_lowercase` does in the evaluator.
/// Everything under "C": a protected table's column may have a nondeterministic
/// collation, under which `starts_with` matches ignoring case and `strpos` refuses to run.
/// Shared by documents and protected tables.
pub fn text_cond(s: &str, op: TextOp, fold: bool, t: &str) -> String {
    let (s, t) = if fold {
        (format!("lower({s} collate \"C\")"), format!("lower({t} collate \"C\")"))
    } else {
        (format!("({s} collate \"C\")"), format!("({t} collate \"C\")"))
    };
    match op {
        TextOp::Prefix => format!("starts_with({s}, {t})"),
        TextOp::Substring => format!("(strpos({s}, {t}) > 0)"),
        // The last char_length(t) characters are t, compared byte for byte.
        TextOp::Suffix => format!("(right({s}, char_length({t})) collate \"C\" = {t})"),
    }
}

/// The sort keys, then the tie-breakers `created_at` (unless a key is) and `id`, both
/// in the direction of the first key; default `created_at, id`. An order naming `id`
/// is already total.
///
/// In the first key's direction, because that is the order of the indexes: a field's
/// btree index is on `(field, created_at, id)` and the listing index on
/// `(collection_id, created_at, id)`, so `order=score` reads the first forwards and
/// `order=-score` or `-created_at` reads them backwards, with nothing left to sort.
/// Until issue 20 ties were broken by `id` ascending whatever the direction, which
/// left an incremental sort over every run of equal values: 6 s for `-created_at`
/// over a million documents written in one transaction (a single run), 0.8 ms now.
pub fn effective_order(keys: &[SortKey]) -> Vec<SortKey> {
    let mut k: Vec<SortKey> = if keys.is_empty() {
        vec![SortKey { field: SortField::CreatedAt, descending: false }]
    } else {
        keys.to_vec()
    };
    let descending = k[0].descending;
    if !k.iter().any(|x| x.field == SortField::Id) {
        if !k.iter().any(|x| x.field == SortField::CreatedAt) {
            k.push(SortKey { field: SortField::CreatedAt, descending });
        }
        k.push(SortKey { field: SortField::Id, descending });
    }
    k
}

fn key_expr(k: &SortKey) -> String {
    match &k.field {
        SortField::Data(p) => path_expr(p, "d."),
        SortField::CreatedAt => "d.created_at".into(),
        SortField::UpdatedAt => "d.updated_at".into(),
        SortField::Id => "d.id".into(),
    }
}

pub fn order_sql(keys: &[SortKey]) -> String {
    order_list(&effective_order(keys))
}

fn order_list(keys: &[SortKey]) -> String {
    keys.iter()
        .map(|k| match (&k.field, k.descending) {
            // Data fields sort by the leakproof btree class, so its indexes can serve the order.
            (SortField::Data(_), false) => format!("{} using operator(baas.<) nulls last", key_expr(k)),
            (SortField::Data(_), true) => format!("{} using operator(baas.>) nulls last", key_expr(k)),
            // System fields are never null: plain `desc` (nulls first, which never
            // applies) is what a backward scan of the listing index gives; `desc nulls
            // last` made the planner sort the whole collection for `order=-created_at`.
            (_, true) => format!("{} desc", key_expr(k)),
            (_, false) => format!("{} asc", key_expr(k)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One page of documents (what baas.find and the list route run): the documents of
/// collection `collection_id` matching `where_sql`, in the order of `keys`, as `doc`,
/// `limit $4 offset $5` (the parameters of api/query.rs's find_compiled).
///
/// An order that starts with a descending data field is two ordered parts, the
/// documents that have the field and then those without it. A btree index on the
/// field (`field, created_at, id`) read backwards gives `field desc nulls first`, and
/// the documented order puts missing fields last in both directions; asked for in one
/// piece, the planner sorted every matching document (the whole collection without a
/// filter) to find the first 20. The first part is ordered `nulls first`, which never
/// applies there, so it is the index read backwards; each part stops after `$4 + $5`
/// rows, and the outer limit takes the page. The parts are appended in the order
/// written: SPI plans without CURSOR_OPT_PARALLEL_OK, so there is no parallel append
/// to reorder them, and the property test in query/pg_tests.rs checks every order.
/// The longest compiled filter a descending page is split for (page_sql): a few
/// dozen conditions; what apps send is far shorter.
pub const SPLIT_MAX_WHERE_BYTES: usize = 4096;

pub fn page_sql(collection_id: i32, select: &str, where_sql: &str, keys: &[SortKey]) -> String {
    let base = format!("select {select} from baas.documents d where d.collection_id = {collection_id} and ({where_sql})");
    let order = effective_order(keys);
    match order.first() {
        // The filter is planned once per part: a long one (up to ~25 ms to plan and
        // ~4.5 MB kept for the largest allowed, docs/query.md "Limits") would double
        // past the kept-plan budget and be planned again on every call. Those stay one
        // statement, sorted: the same order, only not read from an index.
        Some(SortKey { field: SortField::Data(p), descending: true }) if where_sql.len() <= SPLIT_MAX_WHERE_BYTES => {
            let x = path_expr(p, "d.");
            let rest = order_list(&order[1..]);
            format!(
                "select s.* from (({base} and {x} is not null order by {x} using operator(baas.>) nulls first, {rest} limit $4::bigint + $5) \
                 union all ({base} and {x} is null order by {rest} limit $4::bigint + $5)) s limit $4 offset $5"
            )
        }
        _ => format!("{base} order by {} limit $4 offset $5", order_list(&order)),
    }
}

/// SELECT list that captures a document's sort-key values as a jsonb array: each
/// entry `[]` when the field is missing, `[value]` when present.
pub fn cursor_sql(keys: &[SortKey]) -> String {
    let items: Vec<String> = effective_order(keys)
        .iter()
        .map(|k| {
            let e = key_expr(k);
            format!("case when {e} is null then '[]'::jsonb else jsonb_build_array({e}) end")
        })
        .collect();
    format!("jsonb_build_array({})", items.join(", "))
}

/// Rows strictly after the cursor in this order (keyset paging).
pub fn after_sql(keys: &[SortKey], cursor: &Value, params: &mut Params) -> Result<String, BaasError> {
    let keys = effective_order(keys);
    let cur = cursor.as_array().filter(|c| c.len() == keys.len()).ok_or_else(|| BaasError::InvalidQuery("after: cursor does not match the order".into()))?;
    let typed = |k: &SortKey, p: String| match k.field {
        SortField::CreatedAt | SortField::UpdatedAt => format!("({p} ->> 0)::timestamptz"),
        SortField::Id => format!("({p} ->> 0)::uuid"),
        SortField::Data(_) => format!("({p} -> 0)"),
    };
    // `created_at, id` either way (the default, `-created_at`): a row comparison, which
    // the (collection_id, created_at, id) index serves forwards or backwards.
    if keys.len() == 2 && keys[0].field == SortField::CreatedAt && keys[1].field == SortField::Id && keys[0].descending == keys[1].descending {
        let c0 = typed(&keys[0], params.push(cur[0].clone()));
        let c1 = typed(&keys[1], params.push(cur[1].clone()));
        let op = if keys[0].descending { "<" } else { ">" };
        return Ok(format!("((d.created_at, d.id) {op} ({c0}, {c1}))"));
    }
    let mut eqs: Vec<String> = Vec::new();
    let mut ors: Vec<String> = Vec::new();
    for (k, c) in keys.iter().zip(cur) {
        let x = key_expr(k);
        let present = c.as_array().map(|a| !a.is_empty()).unwrap_or(false);
        let (after, equal) = if present {
            let v = typed(k, params.push(c.clone()));
            let data = matches!(k.field, SortField::Data(_));
            let op = match (data, k.descending) {
                (true, true) => "operator(baas.<)",
                (true, false) => "operator(baas.>)",
                (false, true) => "<",
                (false, false) => ">",
            };
            let eq = if data { EQ } else { "=" };
            (format!("({x} {op} {v} or {x} is null)"), format!("{x} {eq} {v}"))
        } else {
            // Missing values sort last: nothing is after them but other missing ones.
            ("false".to_string(), format!("{x} is null"))
        };
        let mut term = eqs.clone();
        term.push(after);
        ors.push(format!("({})", term.join(" and ")));
        eqs.push(equal);
    }
    Ok(format!("({})", ors.join(" or ")))
}

/// The SELECT list: the document, or with `fields` only those top-level data keys.
pub fn select_sql(has_fields: bool) -> String {
    if has_fields {
        format!("jsonb_set(baas._document_json(d, $2), '{{data}}', {FIELDS_SQL})")
    } else {
        "baas._document_json(d, $2)".into()
    }
}

/// `select_sql` named as `page_sql` selects it.
pub fn select_doc_sql(has_fields: bool) -> String {
    format!("{} as doc", select_sql(has_fields))
}

/// `data` cut down to the fields named by `$3`.
const FIELDS_SQL: &str = "(select coalesce(jsonb_object_agg(e.key, e.value), '{}'::jsonb) from jsonb_each(d.data) e where e.key = any($3))";

/// The columns api/doc_text.rs writes a document's JSON text from, in its order: what
/// `select_sql` builds as jsonb, unbuilt (the list route's page, issue 20).
pub fn select_columns_sql(has_fields: bool) -> String {
    let data = if has_fields { FIELDS_SQL } else { "d.data" };
    format!("d.id, d.owner, d.version, d.created_at, d.updated_at, {data}, d.acl_read, d.acl_update, d.acl_delete, d.file")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::parse::{parse, parse_order};

    fn sql(f: Value) -> (String, Vec<Value>) {
        let mut p = Params::default();
        let s = compile_filter(&parse(&f).unwrap(), &mut p);
        (s, p.0)
    }

    #[test]
    fn values_are_parameters_and_names_are_quoted() {
        let (s, p) = sql(json!({"o'brien": "x'; drop table baas.users; --"}));
        assert_eq!(s, "baas._jfield(d.data, 'o''brien') operator(baas.=) ($1 -> 0)");
        assert_eq!(p, vec![json!("x'; drop table baas.users; --")]);
        let (s, _) = sql(json!({"a.b": {"$gt": 1, "$lte": "z"}}));
        assert!(s.contains("baas._jfield(baas._jfield(d.data, 'a'), 'b')"), "{s}");
        assert!(!s.contains("'z'"), "values never appear in SQL: {s}");
    }

    #[test]
    fn negation_is_two_valued() {
        let (s, _) = sql(json!({"$not": {"a": 1}}));
        assert_eq!(s, "(not coalesce(baas._jfield(d.data, 'a') operator(baas.=) ($1 -> 0), false))");
        assert_eq!(sql(json!({"a": {"$in": []}})).0, "false");
        let (s, p) = sql(json!({"a": {"$nin": [1, "x", null]}}));
        assert_eq!(
            s,
            "(not coalesce(baas._jfield(d.data, 'a') operator(baas.=) any(array(select jsonb_array_elements($1 -> 0))), false))"
        );
        assert_eq!(p, vec![json!([1, "x", null])]);
        assert_eq!(sql(json!({"a": {"$nin": []}})).0, "true");
        assert_eq!(sql(json!({})).0, "true");
    }

    #[test]
    fn a_list_is_one_parameter_whatever_its_length() {
        let (two, p2) = sql(json!({"a": {"$in": [1, 2]}, "b": 3}));
        let (many, pn) = sql(json!({"a": {"$in": (0..500).collect::<Vec<_>>()}, "b": 3}));
        assert_eq!(two, many, "the text (the plan cache's key) does not depend on the list");
        assert_eq!((p2.len(), pn.len()), (2, 2));
        assert_eq!(pn[0].as_array().map(Vec::len), Some(500));
    }

    #[test]
    fn order_appends_id_and_puts_missing_last() {
        let k = parse_order("score,-created_at").unwrap();
        assert_eq!(
            order_sql(&k),
            "baas._jfield(d.data, 'score') using operator(baas.<) nulls last, d.created_at desc, d.id asc"
        );
        // Ties: creation time, then id, in the first key's direction (the indexes' order).
        assert_eq!(
            order_sql(&parse_order("-score").unwrap()),
            "baas._jfield(d.data, 'score') using operator(baas.>) nulls last, d.created_at desc, d.id desc"
        );
        assert_eq!(order_sql(&parse_order("-created_at").unwrap()), "d.created_at desc, d.id desc");
        assert_eq!(order_sql(&parse_order("n,id").unwrap()), "baas._jfield(d.data, 'n') using operator(baas.<) nulls last, d.id asc");
        let d = after_sql(&parse_order("-created_at").unwrap(), &json!([["2026-01-01T00:00:00+00:00"], ["0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"]]), &mut Params::default()).unwrap();
        assert!(d.starts_with("((d.created_at, d.id) < "), "{d}");
        assert_eq!(order_sql(&[]), "d.created_at asc, d.id asc");
        let mut p = Params::default();
        let a = after_sql(&[], &json!([["2026-01-01T00:00:00+00:00"], ["0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"]]), &mut p).unwrap();
        assert!(a.starts_with("((d.created_at, d.id) > "), "{a}");
        assert!(after_sql(&[], &json!([1]), &mut p).is_err());
    }

    #[test]
    fn a_descending_data_field_first_is_two_parts_that_have_it_and_lack_it() {
        let k = parse_order("-score,title").unwrap();
        let s = page_sql(7, &select_doc_sql(false), "true", &k);
        let x = "baas._jfield(d.data, 'score')";
        assert!(s.contains(&format!("and {x} is not null order by {x} using operator(baas.>) nulls first, baas._jfield(d.data, 'title') using operator(baas.<) nulls last, d.created_at desc, d.id desc limit $4::bigint + $5)")), "{s}");
        assert!(s.contains(&format!("union all (select baas._document_json(d, $2) as doc from baas.documents d where d.collection_id = 7 and (true) and {x} is null order by baas._jfield(d.data, 'title')")), "{s}");
        assert!(s.ends_with(") s limit $4 offset $5"), "{s}");
        // A filter too long to plan twice: one sorted statement.
        let long = format!("({})", vec!["true"; SPLIT_MAX_WHERE_BYTES / 8].join(" and "));
        assert!(!page_sql(7, &select_doc_sql(false), &long, &k).contains("union all"));
        // Ascending, or a descending system field: one ordered statement.
        for o in ["score,-title", "-created_at", ""] {
            let s = page_sql(7, &select_doc_sql(true), "true", &parse_order(o).unwrap());
            assert!(!s.contains("union all") && s.ends_with(&format!("order by {} limit $4 offset $5", order_sql(&parse_order(o).unwrap()))), "{o}: {s}");
        }
    }
}
