//! Geo conditions (`$within`, `$covers`; docs/query.md, "Geo conditions"): one
//! implementation of the shapes, run by the evaluator on live changes and by Postgres
//! (the extension's `baas._geo_within` and `baas._geo_covers` call these functions), so
//! a list and a subscription with the same filter agree by construction.
//!
//! A point is an object with numbers `latitude` (-90 to 90) and `longitude` (-180 to
//! 180): Parse's GeoPoint, or any document's own. An area is an object with
//! `coordinates`, at least three `[latitude, longitude]` pairs in range: Parse's
//! Polygon. Anything else is neither, and matches no geo condition.

use crate::QueryError;
use serde_json::{json, Value};

/// Most vertices of a polygon in a filter (a filter is at most 16 KiB anyway).
pub const MAX_VERTICES: usize = 1000;
/// The Earth's mean radius, in km: `km` in a filter is radians times this.
pub const EARTH_KM: f64 = 6371.0;

#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// south, west, north, east (degrees, edges included); west > east crosses the
    /// antimeridian.
    Box(f64, f64, f64, f64),
    /// Centre (latitude, longitude) and angular radius in radians (edge included).
    Circle(f64, f64, f64),
    /// Vertices (latitude, longitude), as a plane polygon on those two numbers (Parse's
    /// `withinPolygon`); its edges are inside.
    Polygon(Vec<(f64, f64)>),
}

fn bad(m: String) -> QueryError {
    QueryError::invalid(m)
}

/// `[latitude, longitude]` in range.
fn pair(field: &str, op: &str, v: &Value) -> Result<(f64, f64), QueryError> {
    match v.as_array().map(Vec::as_slice) {
        Some([lat, lng]) => match (lat.as_f64(), lng.as_f64()) {
            (Some(lat), Some(lng)) if in_range((lat, lng)) => Ok((lat, lng)),
            _ => Err(bad(format!("{field}.{op}: a point is [latitude, longitude], latitude -90 to 90, longitude -180 to 180"))),
        },
        _ => Err(bad(format!("{field}.{op}: a point is [latitude, longitude], latitude -90 to 90, longitude -180 to 180"))),
    }
}

fn in_range(p: (f64, f64)) -> bool {
    (-90.0..=90.0).contains(&p.0) && (-180.0..=180.0).contains(&p.1)
}

impl Shape {
    /// The operand of `$within`: `{"box": [[south, west], [north, east]]}`,
    /// `{"circle": {"center": [lat, lng], "km": n}}` (or `"radians": r`), or
    /// `{"polygon": [[lat, lng], ...]}` (3 to 1000 vertices).
    pub fn parse(field: &str, v: &Value) -> Result<Shape, QueryError> {
        let op = "$within";
        let usage = || bad(format!("{field}.$within takes one of {{\"box\": [[south, west], [north, east]]}}, {{\"circle\": {{\"center\": [latitude, longitude], \"km\": n}}}}, {{\"polygon\": [[latitude, longitude], ...]}}"));
        let Some(m) = v.as_object().filter(|m| m.len() == 1) else { return Err(usage()) };
        match (m.get("box"), m.get("circle"), m.get("polygon")) {
            (Some(Value::Array(b)), None, None) if b.len() == 2 => {
                let ((s, w), (n, e)) = (pair(field, op, &b[0])?, pair(field, op, &b[1])?);
                if s > n {
                    return Err(bad(format!("{field}.$within: a box is its south-west corner, then its north-east one")));
                }
                Ok(Shape::Box(s, w, n, e))
            }
            (None, Some(Value::Object(c)), None) => {
                let center = c.get("center").ok_or_else(usage).and_then(|p| pair(field, op, p))?;
                let radius = match (c.len(), c.get("km"), c.get("radians")) {
                    (2, Some(km), None) => km.as_f64().map(|x| x / EARTH_KM),
                    (2, None, Some(r)) => r.as_f64(),
                    _ => return Err(usage()),
                };
                match radius {
                    Some(r) if r.is_finite() && r >= 0.0 => Ok(Shape::Circle(center.0, center.1, r)),
                    _ => Err(bad(format!("{field}.$within: a circle's radius is a number, 0 or more"))),
                }
            }
            (None, None, Some(Value::Array(p))) if (3..=MAX_VERTICES).contains(&p.len()) => {
                Ok(Shape::Polygon(p.iter().map(|v| pair(field, op, v)).collect::<Result<_, _>>()?))
            }
            (None, None, Some(_)) => Err(bad(format!("{field}.$within: a polygon has 3 to {MAX_VERTICES} vertices"))),
            _ => Err(usage()),
        }
    }

    /// The form the SQL function reads back (`from_canonical`): numbers as JSON writes
    /// them, which read back to the same doubles.
    pub fn canonical(&self) -> Value {
        match self {
            Shape::Box(s, w, n, e) => json!({"box": [s, w, n, e]}),
            Shape::Circle(lat, lng, r) => json!({"circle": [lat, lng, r]}),
            Shape::Polygon(v) => json!({"polygon": v.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>()}),
        }
    }

    pub fn from_canonical(text: &str) -> Option<Shape> {
        let v: Value = serde_json::from_str(text).ok()?;
        let nums = |v: &Value| -> Option<Vec<f64>> { v.as_array()?.iter().map(Value::as_f64).collect() };
        if let Some(b) = v.get("box").and_then(nums) {
            let [s, w, n, e] = b.as_slice() else { return None };
            return Some(Shape::Box(*s, *w, *n, *e));
        }
        if let Some(c) = v.get("circle").and_then(nums) {
            let [lat, lng, r] = c.as_slice() else { return None };
            return Some(Shape::Circle(*lat, *lng, *r));
        }
        let p = v.get("polygon")?.as_array()?;
        let vs = p.iter().map(|x| match nums(x)?.as_slice() {
            [a, b] => Some((*a, *b)),
            _ => None,
        });
        let vs: Vec<(f64, f64)> = vs.collect::<Option<_>>()?;
        (vs.len() >= 3).then_some(Shape::Polygon(vs))
    }

    /// Whether the shape holds the point (a point out of range: never).
    pub fn holds(&self, p: (f64, f64)) -> bool {
        if !in_range(p) {
            return false;
        }
        match self {
            Shape::Box(s, w, n, e) => p.0 >= *s && p.0 <= *n && if w <= e { p.1 >= *w && p.1 <= *e } else { p.1 >= *w || p.1 <= *e },
            Shape::Circle(lat, lng, r) => angle((*lat, *lng), p) <= *r,
            Shape::Polygon(v) => in_polygon(p, v),
        }
    }
}

/// The operand of `$covers`: a point `[latitude, longitude]`.
pub fn parse_point(field: &str, v: &Value) -> Result<(f64, f64), QueryError> {
    pair(field, "$covers", v)
}

/// The angle between two points, in radians (haversine), with libm's functions (the
/// same bits wherever it runs; Cargo.toml says why).
pub fn angle(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (p1, p2) = (a.0.to_radians(), b.0.to_radians());
    let (dp, dl) = (p2 - p1, (b.1 - a.1).to_radians());
    let (sp, sl) = (libm::sin(dp / 2.0), libm::sin(dl / 2.0));
    let h = sp * sp + libm::cos(p1) * libm::cos(p2) * (sl * sl);
    2.0 * libm::asin(libm::sqrt(h).min(1.0))
}

/// Whether a point is inside a plane polygon on (latitude, longitude): on an edge, or
/// inside by the even-odd rule.
pub fn in_polygon(p: (f64, f64), poly: &[(f64, f64)]) -> bool {
    let mut inside = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let ((yi, xi), (yj, xj)) = (poly[i], poly[j]);
        // On the edge from j to i: collinear and between its ends.
        let cross = (xj - xi) * (p.0 - yi) - (yj - yi) * (p.1 - xi);
        if cross == 0.0 && p.0 >= yi.min(yj) && p.0 <= yi.max(yj) && p.1 >= xi.min(xj) && p.1 <= xi.max(xj) {
            return true;
        }
        if (yi > p.0) != (yj > p.0) && p.1 < (xj - xi) * (p.0 - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// A point as data holds it: an object with `latitude` and `longitude` numbers.
pub fn point_of(v: &Value) -> Option<(f64, f64)> {
    Some((v.get("latitude")?.as_f64()?, v.get("longitude")?.as_f64()?))
}

/// An area as data holds it: an object whose `coordinates` are 3 or more
/// `[latitude, longitude]` pairs, all in range.
pub fn area_of(v: &Value) -> Option<Vec<(f64, f64)>> {
    coordinates(v.get("coordinates")?)
}

/// `[[latitude, longitude], ...]`: 3 or more pairs, all in range.
pub fn coordinates(v: &Value) -> Option<Vec<(f64, f64)>> {
    let vs = v.as_array()?;
    if vs.len() < 3 {
        return None;
    }
    vs.iter()
        .map(|x| match x.as_array().map(Vec::as_slice) {
            Some([a, b]) => Some((a.as_f64()?, b.as_f64()?)).filter(|p| in_range(*p)),
            _ => None,
        })
        .collect()
}

/// `$within` on data: the value is a point the shape holds.
pub fn within(v: &Value, shape: &Shape) -> bool {
    point_of(v).is_some_and(|p| shape.holds(p))
}

/// `$covers` on data: the value is an area holding the point.
pub fn covers(v: &Value, p: (f64, f64)) -> bool {
    area_of(v).is_some_and(|a| in_range(p) && in_polygon(p, &a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_read_as_written_and_back() {
        let s = Shape::parse("loc", &json!({"circle": {"center": [10, 20], "km": 6371}})).unwrap();
        assert_eq!(s, Shape::Circle(10.0, 20.0, 1.0));
        assert_eq!(Shape::from_canonical(&s.canonical().to_string()), Some(s));
        let s = Shape::parse("loc", &json!({"box": [[1, 170], [2, -170]]})).unwrap();
        assert_eq!(s, Shape::Box(1.0, 170.0, 2.0, -170.0));
        let p = Shape::parse("loc", &json!({"polygon": [[0, 0], [0, 10.1], [10.000000000000002, 10]]})).unwrap();
        assert_eq!(Shape::from_canonical(&p.canonical().to_string()), Some(p));
        for bad in [
            json!({"box": [[2, 0], [1, 1]]}),
            json!({"box": [[0, 0]]}),
            json!({"circle": {"center": [0, 0]}}),
            json!({"circle": {"center": [0, 0], "km": -1}}),
            json!({"circle": {"center": [0, 0], "km": 1, "radians": 1}}),
            json!({"circle": {"center": [91, 0], "km": 1}}),
            json!({"polygon": [[0, 0], [1, 1]]}),
            json!({"polygon": [[0, 0], [1, 1], [1, 181]]}),
            json!({"box": [[0, 0], [1, 1]], "circle": {"center": [0, 0], "km": 1}}),
            json!([1, 2]),
        ] {
            assert!(Shape::parse("loc", &bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shapes_hold_what_they_should() {
        let paris = (48.8566, 2.3522);
        let london = (51.5072, -0.1276);
        let km = angle(paris, london) * EARTH_KM;
        assert!((340.0..348.0).contains(&km), "{km}");
        assert!(Shape::Circle(paris.0, paris.1, 350.0 / EARTH_KM).holds(london));
        assert!(!Shape::Circle(paris.0, paris.1, 300.0 / EARTH_KM).holds(london));
        let b = Shape::Box(1.0, 170.0, 2.0, -170.0);
        assert!(b.holds((1.5, 179.0)) && b.holds((1.5, -179.0)) && !b.holds((1.5, 0.0)) && b.holds((1.0, 170.0)));
        let tri = Shape::Polygon(vec![(0.0, 0.0), (0.0, 10.0), (10.0, 10.0)]);
        assert!(tri.holds((1.0, 5.0)) && !tri.holds((5.0, 1.0)));
        assert!(tri.holds((0.0, 5.0)) && tri.holds((5.0, 5.0)) && tri.holds((10.0, 10.0)), "edges and vertices are inside");
        assert!(!tri.holds((0.0, 11.0)));
        // Data: GeoPoints and Polygons; anything else is neither.
        assert!(within(&json!({"__type": "GeoPoint", "latitude": 1, "longitude": 5}), &tri));
        assert!(!within(&json!({"latitude": "1", "longitude": 5}), &tri));
        assert!(!within(&json!({"latitude": 91, "longitude": 5}), &Shape::Circle(0.0, 0.0, 4.0)));
        let area = json!({"__type": "Polygon", "coordinates": [[0, 0], [0, 10], [10, 10]]});
        assert!(covers(&area, (1.0, 5.0)) && !covers(&area, (5.0, 1.0)));
        assert!(!covers(&json!({"coordinates": [[0, 0], [0, 10]]}), (0.0, 5.0)));
        assert!(!covers(&json!({"coordinates": [[0, 0], [0, 10], [10, 200]]}), (0.0, 5.0)));
    }
}
