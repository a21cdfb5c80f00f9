//! Parse geo queries (issue 21, docs/parse.md "Geo queries") on GeoPoint fields
//! (`{"__type": "GeoPoint", "latitude", "longitude"}` in a document's data) and Polygon
//! fields (`{"__type": "Polygon", "coordinates": [[lat, lng], ...]}`). Each condition
//! becomes the query language's `$within` (a box, a circle, a polygon) or `$covers`
//! (`polygonContains`), wherever it stands (`$or`, `$and`, LiveQuery): Postgres decides
//! them in SQL, the live feeds with the same code (query/src/geo.rs). `near` (sorted by
//! distance) is the one thing SQL does not order here: its candidates, at most
//! `MAX_CANDIDATES` objects the caller may read (row-level security decides, as for every
//! query), are sorted by distance here; more is refused (`102`) rather than answered in part.

use super::convert::{ParseError, INVALID_QUERY};
use super::{count_wanted, find_listed, page_args, Call, MAX_LIMIT};
use http::StatusCode;
use pgbaas_query::geo::{angle, EARTH_KM};
use serde_json::{json, Map, Value};

/// Most objects a `near` query may sort (one page of the list route).
const MAX_CANDIDATES: usize = MAX_LIMIT as usize;

fn bad(m: impl Into<String>) -> ParseError {
    ParseError::bad(INVALID_QUERY, m.into())
}

pub(super) const GEO_OPS: &[&str] = &["$nearSphere", "$near", "$maxDistance", "$maxDistanceInRadians", "$maxDistanceInKilometers", "$maxDistanceInMiles", "$within", "$geoWithin", "$geoIntersects"];

/// A point: a GeoPoint, or `[longitude, latitude]` (MongoDB's order, which Parse
/// Server reads arrays in), in range.
fn point(v: &Value) -> Result<(f64, f64), ParseError> {
    let (lat, lng) = match v {
        Value::Object(o) if o.get("__type").and_then(Value::as_str) == Some("GeoPoint") => (o.get("latitude").and_then(Value::as_f64), o.get("longitude").and_then(Value::as_f64)),
        Value::Array(a) if a.len() == 2 => (a[1].as_f64(), a[0].as_f64()),
        _ => (None, None),
    };
    match (lat, lng) {
        (Some(lat), Some(lng)) if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lng) => Ok((lat, lng)),
        _ => Err(bad("a geo query takes GeoPoints (latitude -90 to 90, longitude -180 to 180)")),
    }
}

fn radians_of(v: &Value, per_radian: f64) -> Result<f64, ParseError> {
    match v.as_f64() {
        Some(x) if x.is_finite() && x >= 0.0 => Ok(x / per_radian),
        _ => Err(bad("a distance is a number, 0 or more")),
    }
}

fn box_of(b: &[Value]) -> Result<Value, ParseError> {
    let ((s, w), (n, e)) = (point(&b[0])?, point(&b[1])?);
    if s > n {
        return Err(bad("$box takes the south-west corner, then the north-east one"));
    }
    Ok(json!({"box": [[s, w], [n, e]]}))
}

/// A field's geo operators (`ops`: its whole condition object; the others in it are
/// not geo operators) as conditions of the query language on `field`.
pub(super) fn filter(field: &str, ops: &Map<String, Value>) -> Result<Vec<Value>, ParseError> {
    let mut out = Vec::new();
    let mut near: Option<(f64, f64)> = None;
    let mut max: Option<f64> = None;
    if ops.keys().filter(|k| k.starts_with("$maxDistance")).count() > 1 {
        return Err(bad("one $maxDistance… per condition"));
    }
    for (op, arg) in ops.iter().filter(|(k, _)| GEO_OPS.contains(&k.as_str())) {
        match op.as_str() {
            "$nearSphere" | "$near" => near = Some(point(arg)?),
            "$maxDistance" | "$maxDistanceInRadians" => max = Some(radians_of(arg, 1.0)?),
            // As the SDKs convert them (withinKilometers, withinMiles).
            "$maxDistanceInKilometers" => max = Some(radians_of(arg, EARTH_KM)?),
            "$maxDistanceInMiles" => max = Some(radians_of(arg, 3958.8)?),
            "$within" => match arg.get("$box").and_then(Value::as_array) {
                Some(b) if b.len() == 2 && arg.as_object().is_some_and(|o| o.len() == 1) => out.push(json!({field: {"$within": box_of(b)?}})),
                _ => return Err(bad("$within takes {\"$box\": [south-west, north-east]}")),
            },
            "$geoWithin" => {
                let o = arg.as_object().filter(|o| o.len() == 1).ok_or_else(|| bad("$geoWithin takes $box, $polygon or $centerSphere"))?;
                let shape = match (o.get("$box"), o.get("$polygon"), o.get("$centerSphere")) {
                    (Some(Value::Array(b)), _, _) if b.len() == 2 => box_of(b)?,
                    (_, Some(Value::Array(p)), _) if (3..=pgbaas_query::geo::MAX_VERTICES).contains(&p.len()) => {
                        let vs = p.iter().map(point).collect::<Result<Vec<_>, _>>()?;
                        json!({"polygon": vs.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>()})
                    }
                    // A Polygon object here: its coordinates read as Parse Server reads
                    // them in this place (its Postgres adapter and MongoDB transform
                    // alike), [longitude, latitude] like any array of points, although
                    // a Polygon field's own are [latitude, longitude].
                    (_, Some(Value::Object(p)), _) if p.get("__type").and_then(Value::as_str) == Some("Polygon") => {
                        let vs = match p.get("coordinates") {
                            Some(Value::Array(c)) if (3..=pgbaas_query::geo::MAX_VERTICES).contains(&c.len()) => c.iter().map(point).collect::<Result<Vec<_>, _>>()?,
                            _ => return Err(bad("a Polygon in $geoWithin has 3 to 1000 coordinates")),
                        };
                        json!({"polygon": vs.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>()})
                    }
                    // MongoDB's form: [[longitude, latitude] or a GeoPoint, radians].
                    (_, _, Some(Value::Array(c))) if c.len() == 2 => {
                        let (lat, lng) = point(&c[0])?;
                        json!({"circle": {"center": [lat, lng], "radians": radians_of(&c[1], 1.0)?}})
                    }
                    _ => return Err(bad("$geoWithin takes $box (2 points), $polygon (3 to 1000 points) or $centerSphere")),
                };
                out.push(json!({field: {"$within": shape}}));
            }
            "$geoIntersects" => match arg.get("$point") {
                Some(p) if arg.as_object().is_some_and(|o| o.len() == 1) => {
                    let (lat, lng) = point(p)?;
                    out.push(json!({field: {"$covers": [lat, lng]}}));
                }
                _ => return Err(bad("$geoIntersects takes {\"$point\": a GeoPoint}")),
            },
            _ => return Err(bad(format!("{op} is not served by pgbaas's Parse door (docs/parse.md, geo queries)"))),
        }
    }
    match (near, max) {
        // A circle; without $maxDistance every point (Parse Server's LiveQuery and
        // Postgres adapter alike match any object with a point).
        (Some((lat, lng)), r) => out.push(json!({field: {"$within": {"circle": {"center": [lat, lng], "radians": r.unwrap_or(std::f64::consts::PI)}}}})),
        (None, Some(_)) => return Err(bad("$maxDistance goes with $nearSphere")),
        (None, None) => {}
    }
    Ok(out)
}

/// The field and point of a `$nearSphere` at the top of `where` (the one that orders).
pub(super) fn near_of(where_: &Value) -> Result<Option<(String, (f64, f64))>, ParseError> {
    let Some(m) = where_.as_object() else { return Ok(None) };
    let mut found = None;
    for (k, v) in m {
        if let Some(p) = v.get("$nearSphere").or_else(|| v.get("$near")) {
            if found.is_some() {
                return Err(bad("one $nearSphere per query: it orders the answer"));
            }
            found = Some((k.clone(), point(p)?));
        }
    }
    Ok(found)
}

fn point_of(o: &Value, field: &str) -> Option<(f64, f64)> {
    let p = field.split('.').try_fold(o, |v, k| v.get(k))?;
    pgbaas_query::geo::point_of(p)
}

/// Objects nearest first: by the angle from `centre` to their point at `field` (those
/// without one last).
pub(super) fn sort_by_distance(objs: &mut [Value], field: &str, centre: (f64, f64)) {
    let d = |o: &Value| point_of(o, field).map_or(f64::INFINITY, |p| angle(centre, p));
    objs.sort_by(|a, b| d(a).total_cmp(&d(b)));
}

/// A query with `$nearSphere` at its top: its objects, nearest first.
pub(super) async fn find_near(c: &Call<'_>, class: &str, params: &Map<String, Value>, field: &str, centre: (f64, f64)) -> Result<(StatusCode, Value), ParseError> {
    if params.contains_key("order") {
        return Err(bad("$nearSphere orders by distance: no order with it"));
    }
    let Value::Object(mut where_) = super::where_of(params)? else { return Err(bad("where must be a JSON object")) };
    // Objects left out by id (notEqualTo/notContainedIn on objectId): taken away here,
    // among the candidates.
    let excluded = match super::excluded_ids(&Value::Object(where_.clone()))? {
        Some((_, Some(_))) => return Err(bad("near takes no objectId $gt")),
        Some((ids, None)) => {
            where_.remove("objectId");
            ids
        }
        None => Vec::new(),
    };
    // The same where lists the candidates: there $nearSphere is a condition only (a
    // circle with $maxDistance, else any point; `filter`).
    let mut params = params.clone();
    params.insert("where".into(), Value::Object(where_));
    let want_count = count_wanted(&params);
    let (limit, skip) = page_args(&params)?;
    // The candidates, their point alone; then the page read again as asked (keys,
    // excludeKeys, include), in the candidates' order.
    let root = field.split('.').next().unwrap_or(field).to_string();
    let mut candidates = params.clone();
    for k in ["skip", "count", "include", "excludeKeys"] {
        candidates.remove(k);
    }
    candidates.insert("limit".into(), json!(MAX_CANDIDATES));
    candidates.insert("keys".into(), Value::String(root));
    let (_, found) = find_listed(c, class, &candidates).await?;
    let mut objs = found["results"].as_array().cloned().unwrap_or_default();
    if objs.len() >= MAX_CANDIDATES {
        return Err(bad(format!("{MAX_CANDIDATES} or more objects match the near query: narrow it ($maxDistance, withinKilometers) or add conditions")));
    }
    objs.retain(|o| !o["objectId"].as_str().is_some_and(|i| excluded.iter().any(|x| x.eq_ignore_ascii_case(i))));
    sort_by_distance(&mut objs, field, centre);
    let count = objs.len();
    let ids: Vec<Value> = objs.iter().skip(skip as usize).take(limit as usize).map(|o| o["objectId"].clone()).collect();
    // The page read again as asked (keys, excludeKeys, include), nearest first.
    let page = super::read_page(c, &super::convert::collection_of(class)?, &ids, &params).await?;
    let mut out = json!({"results": page});
    if want_count {
        out["count"] = json!(count);
    }
    Ok((StatusCode::OK, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gp(lat: f64, lng: f64) -> Value {
        json!({"__type": "GeoPoint", "latitude": lat, "longitude": lng})
    }

    fn geo(ops: Value) -> Result<Vec<Value>, ParseError> {
        filter("loc", ops.as_object().unwrap())
    }

    #[test]
    fn parse_s_geo_forms_become_the_query_language_s() {
        assert_eq!(
            geo(json!({"$nearSphere": gp(10.0, 20.0), "$maxDistanceInKilometers": 6371.0})).unwrap(),
            vec![json!({"loc": {"$within": {"circle": {"center": [10.0, 20.0], "radians": 1.0}}}})]
        );
        assert_eq!(
            geo(json!({"$nearSphere": gp(10.0, 20.0)})).unwrap(),
            vec![json!({"loc": {"$within": {"circle": {"center": [10.0, 20.0], "radians": std::f64::consts::PI}}}})],
            "near alone: any point"
        );
        assert_eq!(
            geo(json!({"$within": {"$box": [gp(1.0, 170.0), gp(2.0, -170.0)]}})).unwrap(),
            vec![json!({"loc": {"$within": {"box": [[1.0, 170.0], [2.0, -170.0]]}}})]
        );
        // Arrays are [longitude, latitude], as Parse Server reads them; a Polygon's
        // coordinates [latitude, longitude].
        assert_eq!(
            geo(json!({"$geoWithin": {"$centerSphere": [[20.0, 10.0], 0.5]}})).unwrap(),
            vec![json!({"loc": {"$within": {"circle": {"center": [10.0, 20.0], "radians": 0.5}}}})]
        );
        assert_eq!(
            geo(json!({"$geoWithin": {"$polygon": [[0, 0], [10, 0], [10, 10]]}})).unwrap(),
            vec![json!({"loc": {"$within": {"polygon": [[0.0, 0.0], [0.0, 10.0], [10.0, 10.0]]}}})]
        );
        assert_eq!(
            geo(json!({"$geoWithin": {"$polygon": {"__type": "Polygon", "coordinates": [[0, 0], [10, 0], [10, 10]]}}})).unwrap(),
            vec![json!({"loc": {"$within": {"polygon": [[0.0, 0.0], [0.0, 10.0], [10.0, 10.0]]}}})],
            "[longitude, latitude], as Parse Server reads a Polygon there"
        );
        assert_eq!(geo(json!({"$geoIntersects": {"$point": gp(1.0, 2.0)}})).unwrap(), vec![json!({"loc": {"$covers": [1.0, 2.0]}})]);
        // Each becomes a filter the query language takes.
        for ops in [
            json!({"$nearSphere": gp(10.0, 20.0), "$maxDistance": 0.1}),
            json!({"$within": {"$box": [gp(1.0, 170.0), gp(2.0, -170.0)]}}),
            json!({"$geoWithin": {"$polygon": [gp(0.0, 0.0), gp(0.0, 10.0), gp(10.0, 10.0)]}}),
            json!({"$geoIntersects": {"$point": gp(1.0, 2.0)}}),
        ] {
            for f in geo(ops.clone()).unwrap() {
                pgbaas_query::parse::parse(&f).unwrap_or_else(|e| panic!("{ops}: {e}"));
            }
        }
        for ops in [
            json!({"$nearSphere": gp(91.0, 0.0)}),
            json!({"$geoWithin": {"$polygon": [[0, 0], [0, 91], [1, 1]]}}),
            json!({"$maxDistance": 1}),
            json!({"$geoIntersects": {"$box": [gp(0.0, 0.0), gp(1.0, 1.0)]}}),
            json!({"$within": {"$box": [gp(2.0, 0.0), gp(1.0, 1.0)]}}),
            json!({"$geoWithin": {"$polygon": [[0, 0], [1, 1]]}}),
            json!({"$geoWithin": {"$polygon": {"__type": "Polygon", "coordinates": [[0, 0], [1, 1]]}}}),
            json!({"$nearSphere": gp(0.0, 0.0), "$maxDistance": -1}),
            json!({"$nearSphere": gp(0.0, 0.0), "$maxDistance": 1, "$maxDistanceInKilometers": 1}),
        ] {
            assert_eq!(geo(ops.clone()).unwrap_err().code, INVALID_QUERY, "{ops}");
        }
    }

    #[test]
    fn only_a_top_level_near_orders() {
        assert_eq!(near_of(&json!({"loc": {"$nearSphere": gp(1.0, 2.0)}, "a": 1})).unwrap(), Some(("loc".to_string(), (1.0, 2.0))));
        assert_eq!(near_of(&json!({"$or": [{"loc": {"$nearSphere": gp(1.0, 2.0)}}]})).unwrap(), None);
        assert!(near_of(&json!({"a": {"$nearSphere": gp(1.0, 2.0)}, "b": {"$nearSphere": gp(1.0, 2.0)}})).is_err());
    }
}
