//! Parse geo queries (issue 21, docs/parse.md "Geo queries") on GeoPoint fields
//! (`{"__type": "GeoPoint", "latitude", "longitude"}` in a document's data).
//! `withinGeoBox` (`$within: {$box}`) is two ranges on the point's latitude and
//! longitude: ordinary conditions of the query language, in SQL, paged as any query.
//! A circle (`$geoWithin: {$centerSphere}`, `$nearSphere` with `$maxDistance`), a polygon
//! (`$geoWithin: {$polygon}`) and `near` (sorted by distance) are their bounding box in
//! SQL, then the exact shape and the order here, over at most `MAX_CANDIDATES` objects
//! the caller may read (row-level security decides, as for every query); more in the box
//! is refused (`102`) rather than answered in part.

use super::convert::{ParseError, INVALID_QUERY};
use super::{count_wanted, find, find_by_ids, page_args, Call, MAX_LIMIT};
use http::StatusCode;
use serde_json::{json, Map, Value};

/// Most objects a shape's bounding box may hold (one page of the list route).
const MAX_CANDIDATES: usize = MAX_LIMIT as usize;

#[derive(Debug, Clone, PartialEq)]
enum Shape {
    /// south, west, north, east (degrees); west > east crosses the antimeridian.
    Box(f64, f64, f64, f64),
    /// Centre (lat, lng) and angular radius (radians).
    Circle(f64, f64, f64),
    /// Vertices (lat, lng).
    Polygon(Vec<(f64, f64)>),
}

#[derive(Debug, Clone, PartialEq)]
struct Geo {
    field: String,
    shape: Option<Shape>,
    /// `$nearSphere`: sorted by distance from it.
    near: Option<(f64, f64)>,
}

fn bad(m: impl Into<String>) -> ParseError {
    ParseError::bad(INVALID_QUERY, m.into())
}

const GEO_OPS: &[&str] = &["$nearSphere", "$near", "$maxDistance", "$maxDistanceInRadians", "$maxDistanceInKilometers", "$maxDistanceInMiles", "$within", "$geoWithin", "$geoIntersects"];

/// Whether a query's `where` has a geo condition (at its top level or anywhere).
pub(super) fn has_geo(where_: &Value) -> bool {
    match where_ {
        Value::Object(m) => m.iter().any(|(k, v)| GEO_OPS.contains(&k.as_str()) || has_geo(v)),
        Value::Array(a) => a.iter().any(has_geo),
        _ => false,
    }
}

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

/// The one geo condition of `where`, taken out of it.
fn take(where_: &mut Map<String, Value>) -> Result<Geo, ParseError> {
    let keys: Vec<String> = where_.iter().filter(|(_, v)| v.as_object().is_some_and(|o| o.keys().any(|k| GEO_OPS.contains(&k.as_str())))).map(|(k, _)| k.clone()).collect();
    let [field] = keys.as_slice() else {
        return Err(bad("pgbaas's Parse door serves one geo condition per query, at its top level (not inside $or, $and or $nor)"));
    };
    if has_geo(&Value::Object(where_.iter().filter(|(k, _)| *k != field).map(|(k, v)| (k.clone(), v.clone())).collect())) {
        return Err(bad("pgbaas's Parse door serves one geo condition per query, at its top level (not inside $or, $and or $nor)"));
    }
    let Some(Value::Object(ops)) = where_.remove(field.as_str()) else { return Err(bad("a geo condition is an object")) };
    let mut g = Geo { field: field.clone(), shape: None, near: None };
    let mut max: Option<f64> = None;
    for (op, arg) in &ops {
        match op.as_str() {
            "$nearSphere" | "$near" => g.near = Some(point(arg)?),
            "$maxDistance" | "$maxDistanceInRadians" => max = Some(radians_of(arg, 1.0)?),
            // As the SDKs convert them (withinKilometers, withinMiles).
            "$maxDistanceInKilometers" => max = Some(radians_of(arg, 6371.0)?),
            "$maxDistanceInMiles" => max = Some(radians_of(arg, 3958.8)?),
            "$within" => match arg.get("$box").and_then(Value::as_array) {
                Some(b) if b.len() == 2 => {
                    let ((s, w), (n, e)) = (point(&b[0])?, point(&b[1])?);
                    if s > n {
                        return Err(bad("$box takes the south-west corner, then the north-east one"));
                    }
                    g.shape = Some(Shape::Box(s, w, n, e));
                }
                _ => return Err(bad("$within takes {\"$box\": [south-west, north-east]}")),
            },
            "$geoWithin" => {
                let o = arg.as_object().filter(|o| o.len() == 1).ok_or_else(|| bad("$geoWithin takes $box, $polygon or $centerSphere"))?;
                g.shape = Some(match (o.get("$box"), o.get("$polygon"), o.get("$centerSphere")) {
                    (Some(Value::Array(b)), _, _) if b.len() == 2 => {
                        let ((s, w), (n, e)) = (point(&b[0])?, point(&b[1])?);
                        if s > n {
                            return Err(bad("$box takes the south-west corner, then the north-east one"));
                        }
                        Shape::Box(s, w, n, e)
                    }
                    (_, Some(Value::Array(p)), _) if (3..=1000).contains(&p.len()) => Shape::Polygon(p.iter().map(point).collect::<Result<_, _>>()?),
                    // MongoDB's form: [[longitude, latitude] or a GeoPoint, radians].
                    (_, _, Some(Value::Array(c))) if c.len() == 2 => {
                        let (lat, lng) = point(&c[0])?;
                        Shape::Circle(lat, lng, radians_of(&c[1], 1.0)?)
                    }
                    _ => return Err(bad("$geoWithin takes $box (2 points), $polygon (3 to 1000 points) or $centerSphere")),
                });
            }
            _ => return Err(bad(format!("{op} is not served by pgbaas's Parse door (docs/parse.md, geo queries)"))),
        }
    }
    match (g.near, max, &g.shape) {
        (Some((lat, lng)), Some(r), None) => g.shape = Some(Shape::Circle(lat, lng, r)),
        (None, Some(_), _) => return Err(bad("$maxDistance goes with $nearSphere")),
        (Some(_), Some(_), Some(_)) => return Err(bad("$nearSphere with $maxDistance is a circle: no other shape with it")),
        _ => {}
    }
    if g.near.is_none() && g.shape.is_none() {
        return Err(bad("a geo condition needs $nearSphere, $within or $geoWithin"));
    }
    Ok(g)
}

/// The angle between two points, in radians (haversine).
fn angle(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (p1, p2) = (a.0.to_radians(), b.0.to_radians());
    let (dp, dl) = (p2 - p1, (b.1 - a.1).to_radians());
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * h.sqrt().min(1.0).asin()
}

/// Whether a point is inside a polygon (even-odd rule on latitude/longitude, as a
/// planar polygon: Parse's `withinPolygon`).
fn in_polygon(p: (f64, f64), poly: &[(f64, f64)]) -> bool {
    let mut inside = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let ((yi, xi), (yj, xj)) = (poly[i], poly[j]);
        if (yi > p.0) != (yj > p.0) && p.1 < (xj - xi) * (p.0 - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

impl Shape {
    fn holds(&self, p: (f64, f64)) -> bool {
        match self {
            Shape::Box(s, w, n, e) => p.0 >= *s && p.0 <= *n && if w <= e { p.1 >= *w && p.1 <= *e } else { p.1 >= *w || p.1 <= *e },
            Shape::Circle(lat, lng, r) => angle((*lat, *lng), p) <= *r,
            Shape::Polygon(v) => in_polygon(p, v),
        }
    }

    /// The box that holds the shape: (south, west, north, east), west > east across the
    /// antimeridian; None: the whole sphere.
    fn bounds(&self) -> Option<(f64, f64, f64, f64)> {
        match self {
            Shape::Box(s, w, n, e) => Some((*s, *w, *n, *e)),
            Shape::Polygon(v) => {
                let f = |g: fn(f64, f64) -> f64, init: f64, sel: fn(&(f64, f64)) -> f64| v.iter().map(sel).fold(init, g);
                Some((f(f64::min, 90.0, |p| p.0), f(f64::min, 180.0, |p| p.1), f(f64::max, -90.0, |p| p.0), f(f64::max, -180.0, |p| p.1)))
            }
            Shape::Circle(lat, lng, r) => {
                let rd = r.to_degrees();
                let (s, n) = (lat - rd, lat + rd);
                if *r >= std::f64::consts::PI || s <= -90.0 || n >= 90.0 {
                    // A pole inside: every longitude.
                    return (*r < std::f64::consts::PI).then_some((s.max(-90.0), -180.0, n.min(90.0), 180.0));
                }
                // Widest longitude reach at this radius (a small margin against rounding).
                let dl = (r.sin() / lat.to_radians().cos()).min(1.0).asin().to_degrees() + 1e-9;
                let (w, e) = (lng - dl, lng + dl);
                Some(if dl >= 180.0 {
                    (s, -180.0, n, 180.0)
                } else {
                    let wrap = |x: f64| if x < -180.0 { x + 360.0 } else if x > 180.0 { x - 360.0 } else { x };
                    (s - 1e-9, wrap(w), n + 1e-9, wrap(e))
                })
            }
        }
    }
}

/// The box as conditions on the field's latitude and longitude (Parse `where` form).
fn box_where(field: &str, b: Option<(f64, f64, f64, f64)>) -> Value {
    let (lat, lng) = (format!("{field}.latitude"), format!("{field}.longitude"));
    let Some((s, w, n, e)) = b else {
        return json!({lat: {"$gte": -90, "$lte": 90}, lng: {"$gte": -180, "$lte": 180}});
    };
    let lat_range = json!({"$gte": s, "$lte": n});
    if w <= e {
        json!({lat: lat_range, lng: {"$gte": w, "$lte": e}})
    } else {
        json!({lat: lat_range, "$or": [{lng.clone(): {"$gte": w}}, {lng: {"$lte": e}}]})
    }
}

fn point_of(o: &Value, field: &str) -> Option<(f64, f64)> {
    let p = field.split('.').try_fold(o, |v, k| v.get(k))?;
    Some((p.get("latitude")?.as_f64()?, p.get("longitude")?.as_f64()?))
}

/// A query with a geo condition.
pub(super) async fn find_geo(c: &Call<'_>, class: &str, params: &Map<String, Value>) -> Result<(StatusCode, Value), ParseError> {
    let Value::Object(mut where_) = super::where_of(params)? else { return Err(bad("where must be a JSON object")) };
    let g = take(&mut where_)?;
    let bounds = g.shape.as_ref().and_then(Shape::bounds);
    let want_count = count_wanted(params);
    // The box joins the query's other conditions in its `$and` (objectId stays at the
    // top, where the list route reads it).
    let mut narrowed = where_.clone();
    let b = box_where(&g.field, bounds);
    match narrowed.get_mut("$and") {
        Some(Value::Array(all)) => all.push(b),
        Some(_) => return Err(bad("$and must be an array")),
        None => {
            narrowed.insert("$and".into(), json!([b]));
        }
    }
    let mut params = params.clone();
    params.insert("where".into(), Value::Object(narrowed));
    // A box alone is exact in SQL: the query goes as any other.
    if g.near.is_none() && matches!(g.shape, Some(Shape::Box(..))) {
        return find(c, class, &params).await;
    }
    if g.near.is_some() && params.contains_key("order") {
        return Err(bad("$nearSphere orders by distance: no order with it"));
    }
    let (limit, skip) = page_args(&params)?;
    // The candidates in the box, their point alone; then the page read again as asked
    // (keys, excludeKeys, include), in the candidates' order.
    let root = g.field.split('.').next().unwrap_or(&g.field).to_string();
    let mut candidates = params.clone();
    for k in ["skip", "count", "include", "excludeKeys"] {
        candidates.remove(k);
    }
    candidates.insert("limit".into(), json!(MAX_CANDIDATES));
    candidates.insert("keys".into(), Value::String(root));
    let (_, found) = find(c, class, &candidates).await?;
    let mut objs = found["results"].as_array().cloned().unwrap_or_default();
    if objs.len() >= MAX_CANDIDATES {
        return Err(bad(format!("{MAX_CANDIDATES} or more objects lie in the geo query's area: narrow it ($maxDistance, a smaller box) or add conditions")));
    }
    objs.retain(|o| point_of(o, &g.field).is_some_and(|p| g.shape.as_ref().is_none_or(|s| s.holds(p))));
    if let Some(centre) = g.near {
        let d = |o: &Value| point_of(o, &g.field).map_or(f64::INFINITY, |p| angle(centre, p));
        objs.sort_by(|a, b| d(a).total_cmp(&d(b)));
    }
    let count = objs.len();
    let ids: Vec<Value> = objs.iter().skip(skip as usize).take(limit as usize).map(|o| o["objectId"].clone()).collect();
    let mut page = Vec::new();
    if !ids.is_empty() {
        let mut read = Map::new();
        for k in ["keys", "excludeKeys", "include"] {
            if let Some(v) = params.get(k) {
                read.insert(k.into(), v.clone());
            }
        }
        read.insert("limit".into(), json!(ids.len()));
        let collection = super::convert::collection_of(class)?;
        let (_, got) = find_by_ids(c, &collection, &json!({"$in": ids}), &json!({}), &read).await?;
        let mut by_id: Map<String, Value> = Map::new();
        for o in got["results"].as_array().into_iter().flatten() {
            if let Some(id) = o["objectId"].as_str() {
                by_id.insert(id.to_string(), o.clone());
            }
        }
        // (One that went between the two reads is left out.)
        page = ids.iter().filter_map(|id| id.as_str().and_then(|i| by_id.remove(i))).collect();
    }
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

    fn geo(w: Value) -> Result<Geo, ParseError> {
        take(&mut w.as_object().unwrap().clone())
    }

    #[test]
    fn parse_s_geo_forms_become_shapes() {
        let g = geo(json!({"loc": {"$nearSphere": gp(10.0, 20.0), "$maxDistanceInKilometers": 6371.0}, "tag": "x"})).unwrap();
        assert_eq!((g.field.as_str(), g.near, g.shape), ("loc", Some((10.0, 20.0)), Some(Shape::Circle(10.0, 20.0, 1.0))));
        let g = geo(json!({"loc": {"$within": {"$box": [gp(1.0, 170.0), gp(2.0, -170.0)]}}})).unwrap();
        assert_eq!(g.shape, Some(Shape::Box(1.0, 170.0, 2.0, -170.0)));
        let g = geo(json!({"loc": {"$geoWithin": {"$centerSphere": [[20.0, 10.0], 0.5]}}})).unwrap();
        assert_eq!(g.shape, Some(Shape::Circle(10.0, 20.0, 0.5)));
        // Arrays are [longitude, latitude], as Parse Server reads them.
        let g = geo(json!({"loc": {"$geoWithin": {"$polygon": [[0, 0], [10, 0], [10, 10]]}}})).unwrap();
        assert_eq!(g.shape, Some(Shape::Polygon(vec![(0.0, 0.0), (0.0, 10.0), (10.0, 10.0)])));
        let g = geo(json!({"loc": {"$geoWithin": {"$centerSphere": [gp(10.0, 20.0), 0.5]}}})).unwrap();
        assert_eq!(g.shape, Some(Shape::Circle(10.0, 20.0, 0.5)));
        for w in [
            json!({"loc": {"$nearSphere": gp(91.0, 0.0)}}),
            json!({"loc": {"$geoWithin": {"$polygon": [[0, 0], [0, 91], [1, 1]]}}}),
            json!({"loc": {"$maxDistance": 1}}),
            json!({"loc": {"$geoIntersects": {"$point": gp(0.0, 0.0)}}}),
            json!({"$or": [{"loc": {"$nearSphere": gp(0.0, 0.0)}}]}),
            json!({"a": {"$nearSphere": gp(0.0, 0.0)}, "b": {"$nearSphere": gp(0.0, 0.0)}}),
            json!({"loc": {"$within": {"$box": [gp(2.0, 0.0), gp(1.0, 1.0)]}}}),
            json!({"loc": {"$geoWithin": {"$polygon": [[0, 0], [1, 1]]}}}),
            json!({"loc": {"$nearSphere": gp(0.0, 0.0), "$maxDistance": -1}}),
        ] {
            assert_eq!(geo(w.clone()).unwrap_err().code, INVALID_QUERY, "{w}");
        }
    }

    #[test]
    fn shapes_hold_what_they_should_and_their_boxes_hold_them() {
        let paris = (48.8566, 2.3522);
        let london = (51.5072, -0.1276);
        // About 344 km apart.
        let km = angle(paris, london) * 6371.0;
        assert!((340.0..348.0).contains(&km), "{km}");
        let c = Shape::Circle(paris.0, paris.1, 350.0 / 6371.0);
        assert!(c.holds(london) && !Shape::Circle(paris.0, paris.1, 300.0 / 6371.0).holds(london));
        let b = Shape::Box(1.0, 170.0, 2.0, -170.0);
        assert!(b.holds((1.5, 179.0)) && b.holds((1.5, -179.0)) && !b.holds((1.5, 0.0)));
        let tri = Shape::Polygon(vec![(0.0, 0.0), (0.0, 10.0), (10.0, 10.0)]);
        assert!(tri.holds((1.0, 5.0)) && !tri.holds((5.0, 1.0)));
        // Every point a circle holds lies in its box, near the antimeridian and poles too.
        let mut r = 12345u64;
        let mut next = || {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            (r % 1_000_000) as f64 / 1_000_000.0
        };
        for _ in 0..2000 {
            let (lat, lng, rad) = (next() * 180.0 - 90.0, next() * 360.0 - 180.0, next() * 0.5);
            let circle = Shape::Circle(lat, lng, rad);
            let p = (next() * 180.0 - 90.0, next() * 360.0 - 180.0);
            if circle.holds(p) {
                match circle.bounds() {
                    None => {}
                    Some((s, w, n, e)) => assert!(Shape::Box(s, w, n, e).holds(p), "{circle:?} holds {p:?} outside its box {:?}", (s, w, n, e)),
                }
            }
        }
    }
}
