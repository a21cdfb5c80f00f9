//! Field operators for PATCH (docs/operators.md): `$inc`, `$set`, `$unset`, `$push`,
//! `$addToSet`, `$pull`, `$min`, `$max`, `$now` over dotted paths. Plain Rust over JSON
//! *text* (what `jsonb_out` prints), no database access; `baas._apply_operators`
//! (api/documents.rs) is its face and runs inside the UPDATE's SET expression, so the
//! row lock serialises concurrent writers.
//!
//! Numbers stay exact. The extension's serde_json has no `arbitrary_precision` (turning
//! it on would change `Value` equality and number handling across the whole workspace),
//! so this module keeps its own small JSON tree in which a number is its decimal text,
//! and does `$inc`/`$min`/`$max` in exact decimal arithmetic on those digits (`Dec`): an
//! integer of any length and any decimal fraction add exactly, the result's scale being
//! the larger of the two (Postgres `numeric` addition's rule: 1.50 + 1 = 2.50). Equality
//! of values (`$addToSet`, `$pull`) is jsonb's: numbers by value (1 == 1.0), objects
//! regardless of key order, arrays element by element.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

/// Deeper nesting than this is refused (54000 limit_exceeded): 128, serde_json's own
/// recursion limit, which merge_patch had before it came here and pgrx's other jsonb
/// functions have. Every walk below recurses once per level; 1000 levels overflowed a
/// 2 MiB test thread's stack in a debug build.
pub const MAX_DEPTH: usize = 128;

/// A number's text longer than this, or a number with more digits than this once its
/// exponent is written out, is refused (54000 limit_exceeded). The proxy already refuses
/// numbers beyond 1000 digits or an exponent beyond 1000 (docs/operators.md); this bound
/// holds for text that reaches SQL some other way, and keeps the arithmetic small.
pub const MAX_NUMBER_TEXT: usize = 4096;

/// `$each` (`$push`, `$addToSet`) and `$in` (`$pull`) take at most this many values
/// (22023 invalid_operator beyond).
pub const MAX_EACH: usize = 1000;

/// A result longer than this is refused (54000 limit_exceeded); jsonb's own limit is
/// 256 MB, and a result this size is no document anyone meant to write.
pub const MAX_OUTPUT: usize = 64 * 1024 * 1024;

/// How often (in steps: values read, elements compared) the interrupt check runs.
const TICK_EVERY: u32 = 4096;

/// Calls the caller's interrupt check (pgrx `check_for_interrupts!`, which raises the
/// query-cancel or statement-timeout error) every TICK_EVERY steps, so a long patch obeys
/// statement_timeout and pg_cancel_backend.
pub struct Interrupts<'c> {
    n: u32,
    check: &'c mut dyn FnMut(),
}

impl<'c> Interrupts<'c> {
    pub fn new(check: &'c mut dyn FnMut()) -> Self {
        Interrupts { n: 0, check }
    }
    #[inline]
    fn tick(&mut self) {
        self.n += 1;
        if self.n >= TICK_EVERY {
            self.n = 0;
            (self.check)();
        }
    }
}

/// A JSON value; numbers keep their text.
#[derive(Debug, Clone)]
pub enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(BTreeMap<String, J>),
}

#[derive(Debug, PartialEq, Eq)]
pub enum OpError {
    /// 22023 invalid_operator: the patch itself is wrong.
    Invalid(String),
    /// 22023 operator_type_mismatch: the document's value at a path has the wrong type.
    Mismatch(String),
    /// 54000 limit_exceeded: nesting deeper than MAX_DEPTH, or unreadable text.
    TooDeep(String),
}

impl OpError {
    pub fn code(&self) -> &'static str {
        match self {
            OpError::Invalid(_) => "invalid_operator",
            OpError::Mismatch(_) => "operator_type_mismatch",
            OpError::TooDeep(_) => "limit_exceeded",
        }
    }
    pub fn message(&self) -> &str {
        match self {
            OpError::Invalid(m) | OpError::Mismatch(m) | OpError::TooDeep(m) => m,
        }
    }
}

fn invalid<T>(m: impl Into<String>) -> Result<T, OpError> {
    Err(OpError::Invalid(m.into()))
}

fn mismatch<T>(m: impl Into<String>) -> Result<T, OpError> {
    Err(OpError::Mismatch(m.into()))
}

impl J {
    pub fn type_name(&self) -> &'static str {
        match self {
            J::Null => "null",
            J::Bool(_) => "boolean",
            J::Num(_) => "number",
            J::Str(_) => "string",
            J::Arr(_) => "array",
            J::Obj(_) => "object",
        }
    }

    /// The value's canonical text, for jsonb equality by hashing: numbers by value
    /// (`1`, `1.0` and `1e0` all print `1`), objects with sorted keys (the tree keeps
    /// them sorted), arrays in order. Two values are jsonb-equal exactly when their keys
    /// are equal, so `$addToSet`/`$pull` test membership in a hash set: O(N+M).
    fn canonical(&self, int: &mut Interrupts) -> Result<String, OpError> {
        let mut out = String::new();
        self.write_canonical(&mut out, int)?;
        Ok(out)
    }

    fn write_canonical(&self, out: &mut String, int: &mut Interrupts) -> Result<(), OpError> {
        int.tick();
        match self {
            J::Num(n) => out.push_str(&Dec::parse(n)?.canonical_text()),
            J::Arr(a) => {
                out.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write_canonical(out, int)?;
                }
                out.push(']');
            }
            J::Obj(o) => {
                out.push('{');
                for (i, (k, v)) in o.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(k, out);
                    out.push(':');
                    v.write_canonical(out, int)?;
                }
                out.push('}');
            }
            other => other.write(out),
        }
        Ok(())
    }

    /// Compact JSON text.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Num(n) => out.push_str(n),
            J::Str(s) => write_str(s, out),
            J::Arr(a) => {
                out.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            J::Obj(o) => {
                out.push('{');
                for (i, (k, v)) in o.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(k, out);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

fn write_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------- parsing

/// Parse JSON text (RFC 8259), keeping every number's text.
pub fn parse(text: &str) -> Result<J, OpError> {
    parse_with(text, &mut Interrupts::new(&mut || ()))
}

fn parse_with(text: &str, int: &mut Interrupts) -> Result<J, OpError> {
    let mut p = Parser { b: text.as_bytes(), s: text, i: 0, int };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    if p.i != p.b.len() {
        return Err(p.err("trailing characters"));
    }
    Ok(v)
}

struct Parser<'a, 'i, 'c> {
    b: &'a [u8],
    s: &'a str,
    i: usize,
    int: &'i mut Interrupts<'c>,
}

impl Parser<'_, '_, '_> {
    fn err(&self, what: &str) -> OpError {
        OpError::TooDeep(format!("unreadable JSON at byte {}: {what}", self.i))
    }

    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), OpError> {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected {:?}", c as char)))
        }
    }

    fn lit(&mut self, word: &str, v: J) -> Result<J, OpError> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(self.err("unknown literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<J, OpError> {
        if depth > MAX_DEPTH {
            return Err(OpError::TooDeep(format!("JSON nested more than {MAX_DEPTH} levels deep")));
        }
        self.int.tick();
        match self.b.get(self.i) {
            Some(b'n') => self.lit("null", J::Null),
            Some(b't') => self.lit("true", J::Bool(true)),
            Some(b'f') => self.lit("false", J::Bool(false)),
            Some(b'"') => Ok(J::Str(self.string()?)),
            Some(b'[') => {
                self.i += 1;
                let mut a = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(J::Arr(a));
                }
                loop {
                    self.ws();
                    a.push(self.value(depth + 1)?);
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(J::Arr(a));
                        }
                        _ => return Err(self.err("expected ',' or ']'")),
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut o = BTreeMap::new();
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(J::Obj(o));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    let v = self.value(depth + 1)?;
                    // The last of duplicate keys wins, as in jsonb.
                    o.insert(k, v);
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(J::Obj(o));
                        }
                        _ => return Err(self.err("expected ',' or '}'")),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.i;
                if self.b[self.i] == b'-' {
                    self.i += 1;
                }
                let digits = |p: &mut Self| {
                    let s = p.i;
                    while p.i < p.b.len() && p.b[p.i].is_ascii_digit() {
                        p.i += 1;
                    }
                    p.i > s
                };
                if !digits(self) {
                    return Err(self.err("bad number"));
                }
                if self.b.get(self.i) == Some(&b'.') {
                    self.i += 1;
                    if !digits(self) {
                        return Err(self.err("bad number"));
                    }
                }
                if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
                    self.i += 1;
                    if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                        self.i += 1;
                    }
                    if !digits(self) {
                        return Err(self.err("bad number"));
                    }
                }
                if self.i - start > MAX_NUMBER_TEXT {
                    return Err(OpError::TooDeep(format!("a number longer than {MAX_NUMBER_TEXT} characters")));
                }
                Ok(J::Num(self.s[start..self.i].to_string()))
            }
            _ => Err(self.err("expected a value")),
        }
    }

    fn hex4(&mut self) -> Result<u32, OpError> {
        let h = self.s.get(self.i..self.i + 4).ok_or_else(|| self.err("short \\u escape"))?;
        let v = u32::from_str_radix(h, 16).map_err(|_| self.err("bad \\u escape"))?;
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, OpError> {
        self.eat(b'"')?;
        let mut out = String::new();
        loop {
            let start = self.i;
            while self.i < self.b.len() && self.b[self.i] != b'"' && self.b[self.i] != b'\\' {
                self.i += 1;
            }
            out.push_str(&self.s[start..self.i]);
            match self.b.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = *self.b.get(self.i).ok_or_else(|| self.err("unfinished escape"))?;
                    self.i += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&hi) && self.s[self.i..].starts_with("\\u") {
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.err("bad surrogate pair"));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            out.push(char::from_u32(cp).ok_or_else(|| self.err("bad \\u escape"))?);
                        }
                        _ => return Err(self.err("bad escape")),
                    }
                }
                _ => return Err(self.err("unfinished string")),
            }
        }
    }
}

// ---------------------------------------------------------------- exact decimals

/// An exact decimal: `-`? digits, `scale` of them after the point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dec {
    neg: bool,
    /// Most significant first, no leading zeros; empty is zero.
    digits: Vec<u8>,
    scale: usize,
}

/// Exponents beyond this are refused (jsonb prints numbers without exponents, so only a
/// hand-made text could carry one).
const MAX_EXPONENT: i64 = MAX_NUMBER_TEXT as i64;

impl Dec {
    pub fn parse(s: &str) -> Result<Dec, OpError> {
        let bad = || OpError::Invalid(format!("{s:?} is not a number"));
        let (neg, rest) = match s.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, s),
        };
        let (mant, exp) = match rest.find(['e', 'E']) {
            Some(p) => (&rest[..p], rest[p + 1..].parse::<i64>().map_err(|_| bad())?),
            None => (rest, 0),
        };
        if !(-MAX_EXPONENT..=MAX_EXPONENT).contains(&exp) {
            return Err(OpError::TooDeep(format!("a number with an exponent beyond ±{MAX_EXPONENT}")));
        }
        let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let mut digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
        let mut scale = frac.len() as i64 - exp;
        if scale < 0 {
            digits.extend(std::iter::repeat_n(0, (-scale) as usize));
            scale = 0;
        }
        let mut d = Dec { neg, digits, scale: scale as usize };
        d.trim();
        if d.digits.len() > MAX_NUMBER_TEXT || d.scale > MAX_NUMBER_TEXT {
            return Err(OpError::TooDeep(format!("a number with more than {MAX_NUMBER_TEXT} digits")));
        }
        Ok(d)
    }

    /// The value's shortest text: no trailing zeros after the point (`1.50` → `1.5`,
    /// `1.0` → `1`, `-0.0` → `0`), so equal values print alike.
    pub fn canonical_text(&self) -> String {
        let mut d = self.clone();
        while d.scale > 0 && d.digits.last() == Some(&0) {
            d.digits.pop();
            d.scale -= 1;
        }
        if d.digits.iter().all(|&x| x == 0) {
            return "0".into();
        }
        d.to_text()
    }

    fn trim(&mut self) {
        let nz = self.digits.iter().position(|&d| d != 0).unwrap_or(self.digits.len());
        self.digits.drain(..nz);
        if self.digits.is_empty() {
            self.neg = false;
        }
    }

    fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// The magnitude's digits at `scale` (>= self.scale).
    fn scaled(&self, scale: usize) -> Vec<u8> {
        let mut v = self.digits.clone();
        v.extend(std::iter::repeat_n(0, scale - self.scale));
        v
    }

    pub fn add(&self, other: &Dec) -> Dec {
        let scale = self.scale.max(other.scale);
        let (a, b) = (self.scaled(scale), other.scaled(scale));
        let mut r = if self.neg == other.neg {
            Dec { neg: self.neg, digits: mag_add(&a, &b), scale }
        } else {
            match mag_cmp(&a, &b) {
                Ordering::Less => Dec { neg: other.neg, digits: mag_sub(&b, &a), scale },
                _ => Dec { neg: self.neg, digits: mag_sub(&a, &b), scale },
            }
        };
        r.trim();
        r
    }

    pub fn cmp(&self, other: &Dec) -> Ordering {
        match (self.neg && !self.is_zero(), other.neg && !other.is_zero()) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (neg, _) => {
                let scale = self.scale.max(other.scale);
                let o = mag_cmp(&self.scaled(scale), &other.scaled(scale));
                if neg { o.reverse() } else { o }
            }
        }
    }

    /// Postgres numeric's text: no exponent, `scale` digits after the point.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        if self.neg && !self.is_zero() {
            s.push('-');
        }
        let mut ds: Vec<u8> = self.digits.clone();
        if ds.len() <= self.scale {
            let mut pad = vec![0; self.scale + 1 - ds.len()];
            pad.extend(ds);
            ds = pad;
        }
        let int_len = ds.len() - self.scale;
        for (i, d) in ds.iter().enumerate() {
            if i == int_len {
                s.push('.');
            }
            s.push((b'0' + d) as char);
        }
        s
    }
}

fn mag_cmp(a: &[u8], b: &[u8]) -> Ordering {
    // Equal scales; strip leading zeros for the length comparison.
    let a = &a[a.iter().position(|&d| d != 0).unwrap_or(a.len())..];
    let b = &b[b.iter().position(|&d| d != 0).unwrap_or(b.len())..];
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn mag_add(a: &[u8], b: &[u8]) -> Vec<u8> {
    let n = a.len().max(b.len());
    let mut out = Vec::with_capacity(n + 1);
    let mut carry = 0u8;
    for i in 0..n {
        let x = if i < a.len() { a[a.len() - 1 - i] } else { 0 };
        let y = if i < b.len() { b[b.len() - 1 - i] } else { 0 };
        let s = x + y + carry;
        out.push(s % 10);
        carry = s / 10;
    }
    if carry > 0 {
        out.push(carry);
    }
    out.reverse();
    out
}

/// a - b for a >= b.
fn mag_sub(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len());
    let mut borrow = 0i8;
    for i in 0..a.len() {
        let x = a[a.len() - 1 - i] as i8;
        let y = if i < b.len() { b[b.len() - 1 - i] as i8 } else { 0 };
        let mut d = x - y - borrow;
        borrow = 0;
        if d < 0 {
            d += 10;
            borrow = 1;
        }
        out.push(d as u8);
    }
    out.reverse();
    out
}

// ---------------------------------------------------------------- timestamps

/// A timestamptz (microseconds since 2000-01-01 00:00:00 UTC) as ISO 8601 in UTC, the
/// way Postgres's to_jsonb prints it with TimeZone UTC: `2026-12-03T15:51:09.123456+00:00`
/// (the fraction without trailing zeros, none when whole).
pub fn iso_timestamp(micros: i64) -> String {
    if micros == i64::MAX {
        return "infinity".into();
    }
    if micros == i64::MIN {
        return "-infinity".into();
    }
    const DAY: i64 = 86_400_000_000;
    let days = micros.div_euclid(DAY);
    let rem = micros.rem_euclid(DAY);
    // Days since 1970-01-01, then Howard Hinnant's civil_from_days.
    let z = days + 10_957 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    let secs = rem / 1_000_000;
    let frac = rem % 1_000_000;
    let mut s = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if frac != 0 {
        let f = format!("{frac:06}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s.push_str("+00:00");
    s
}

// ---------------------------------------------------------------- operators

pub const OPERATORS: &[&str] = &["$inc", "$set", "$unset", "$push", "$addToSet", "$pull", "$min", "$max", "$now"];

#[derive(Debug)]
enum Op {
    Inc(Dec),
    Set(J),
    Unset,
    Push(Vec<J>),
    AddToSet(Vec<J>),
    Pull(Vec<J>),
    Min(J),
    Max(J),
    Now,
}

struct Change {
    op: &'static str,
    path: Vec<String>,
    dotted: String,
    what: Op,
}

fn parse_path(op: &str, raw: &str) -> Result<Vec<String>, OpError> {
    pgbaas_query::parse::Path::parse(raw)
        .map(|p| p.0)
        .map_err(|e| OpError::Invalid(format!("{op}: {}", e.message)))
}

/// `{"$each": [...]}` → its values; any other value → itself alone.
fn each(op: &str, dotted: &str, modifier: &str, arg: J) -> Result<Vec<J>, OpError> {
    match arg {
        J::Obj(o) if o.contains_key(modifier) => {
            if o.len() != 1 {
                return invalid(format!("{op} at {dotted:?}: {modifier} must be the only key of its object"));
            }
            match o.into_iter().next() {
                Some((_, J::Arr(a))) if a.len() > MAX_EACH => invalid(format!(
                    "{op} at {dotted:?}: {modifier} takes at most {MAX_EACH} values, got {}",
                    a.len()
                )),
                Some((_, J::Arr(a))) => Ok(a),
                Some((_, v)) => invalid(format!("{op} at {dotted:?}: {modifier} takes an array, got {}", v.type_name())),
                None => invalid(format!("{op} at {dotted:?}: {modifier} is missing")),
            }
        }
        v => Ok(vec![v]),
    }
}

fn parse_changes(ops: J) -> Result<Vec<Change>, OpError> {
    let J::Obj(ops) = ops else {
        return invalid(format!("an operator patch must be a JSON object, got {}", ops.type_name()));
    };
    if let Some(k) = ops.keys().find(|k| !k.starts_with('$')) {
        return invalid(format!(
            "a patch cannot mix operators and fields ({k:?}): send either operators ($inc, $set, ...) or a merge patch"
        ));
    }
    let mut changes = Vec::new();
    for (name, arg) in ops {
        let Some(&op) = OPERATORS.iter().find(|o| **o == name) else {
            return invalid(format!("unknown operator {name:?}; known: {}", OPERATORS.join(", ")));
        };
        // $unset also takes an array of paths.
        let entries: Vec<(String, J)> = match (op, arg) {
            ("$unset", J::Arr(paths)) => paths
                .into_iter()
                .map(|p| match p {
                    J::Str(s) => Ok((s, J::Bool(true))),
                    other => invalid(format!("$unset takes paths as strings, got {}", other.type_name())),
                })
                .collect::<Result<_, _>>()?,
            (_, J::Obj(o)) => o.into_iter().collect(),
            (_, other) => {
                let hint = if op == "$unset" { "an object of {path: true} or an array of paths" } else { "an object of {path: value}" };
                return invalid(format!("{op} takes {hint}, got {}", other.type_name()));
            }
        };
        for (raw, arg) in entries {
            let path = parse_path(op, &raw)?;
            let what = match op {
                "$inc" => match &arg {
                    J::Num(n) => Op::Inc(Dec::parse(n)?),
                    v => return invalid(format!("$inc at {raw:?} takes a number, got {}", v.type_name())),
                },
                "$set" => Op::Set(arg),
                "$unset" | "$now" => {
                    if !matches!(arg, J::Bool(true)) {
                        return invalid(format!("{op} at {raw:?} takes true, got {}", arg.to_text()));
                    }
                    if op == "$now" { Op::Now } else { Op::Unset }
                }
                "$push" => Op::Push(each(op, &raw, "$each", arg)?),
                "$addToSet" => Op::AddToSet(each(op, &raw, "$each", arg)?),
                "$pull" => Op::Pull(each(op, &raw, "$in", arg)?),
                "$min" | "$max" => {
                    if !matches!(arg, J::Num(_) | J::Str(_)) {
                        return invalid(format!("{op} at {raw:?} takes a number or a string, got {}", arg.type_name()));
                    }
                    if op == "$min" { Op::Min(arg) } else { Op::Max(arg) }
                }
                _ => unreachable!("every name of OPERATORS is matched"),
            };
            changes.push(Change { op, path, dotted: raw, what });
        }
    }
    // The same path, or a path and a prefix of it, twice: which wins would be a guess.
    let mut order: Vec<usize> = (0..changes.len()).collect();
    order.sort_by(|&a, &b| changes[a].path.cmp(&changes[b].path));
    for w in order.windows(2) {
        let (a, b) = (&changes[w[0]], &changes[w[1]]);
        if b.path.starts_with(&a.path) {
            return invalid(if a.path == b.path {
                format!("{:?} appears twice in the patch ({} and {})", a.dotted, a.op, b.op)
            } else {
                format!("{:?} ({}) and {:?} ({}) overlap: change a field or what is inside it, not both", a.dotted, a.op, b.dotted, b.op)
            });
        }
    }
    Ok(changes)
}

/// The parent object of `path`'s last segment, creating missing objects on the way when
/// `create`; None when a parent is missing and not created.
fn parent<'a>(doc: &'a mut J, c: &Change, create: bool) -> Result<Option<&'a mut BTreeMap<String, J>>, OpError> {
    let mut cur = doc;
    for (i, seg) in c.path[..c.path.len() - 1].iter().enumerate() {
        let J::Obj(o) = cur else {
            return mismatch(type_on_way(c, i, cur));
        };
        if !o.contains_key(seg) {
            if !create {
                return Ok(None);
            }
            o.insert(seg.clone(), J::Obj(BTreeMap::new()));
        }
        cur = o.get_mut(seg).expect("present: checked or inserted just above");
    }
    match cur {
        J::Obj(o) => Ok(Some(o)),
        other => mismatch(type_on_way(c, c.path.len() - 1, other)),
    }
}

/// `{op} at "a.b.c": "a.b" is a number, not an object`; `upto` segments lead to `v`.
fn type_on_way(c: &Change, upto: usize, v: &J) -> String {
    let at = if upto == 0 { "the document".to_string() } else { format!("{:?}", c.path[..upto].join(".")) };
    format!("{} at {:?}: {at} is {} {}, not an object", c.op, c.dotted, article(v.type_name()), v.type_name())
}

fn article(t: &str) -> &'static str {
    if t.starts_with(['a', 'o']) { "an" } else { "a" }
}

fn wrong_type(c: &Change, found: &J, needs: &str) -> OpError {
    OpError::Mismatch(format!(
        "{} at {:?}: the field is {} {}, {} needs {needs}",
        c.op,
        c.dotted,
        article(found.type_name()),
        found.type_name(),
        c.op
    ))
}

/// The canonical texts of `vs` (see J::canonical).
fn keys(vs: &[J], int: &mut Interrupts) -> Result<HashSet<String>, OpError> {
    vs.iter().map(|v| v.canonical(int)).collect()
}

/// Appends each of `vs` whose value is not among `have` (or already appended).
fn add_to_set(into: &mut Vec<J>, vs: &[J], int: &mut Interrupts) -> Result<(), OpError> {
    let mut have = keys(into, int)?;
    for v in vs {
        if have.insert(v.canonical(int)?) {
            into.push(v.clone());
        }
    }
    Ok(())
}

fn apply_one(doc: &mut J, c: Change, at: i64, int: &mut Interrupts) -> Result<(), OpError> {
    let last = c.path.last().expect("a path has at least one segment").clone();
    if let Op::Unset = c.what {
        if let Some(p) = parent(doc, &c, false)? {
            p.remove(&last);
        }
        return Ok(());
    }
    if let Op::Pull(_) = c.what {
        let Some(p) = parent(doc, &c, false)? else { return Ok(()) };
        let Some(field) = p.get_mut(&last) else { return Ok(()) };
        let J::Arr(items) = field else {
            return Err(wrong_type(&c, field, "an array"));
        };
        let Op::Pull(values) = &c.what else { unreachable!() };
        let gone = keys(values, int)?;
        let mut kept = Vec::with_capacity(items.len());
        for x in std::mem::take(items) {
            if !gone.contains(&x.canonical(int)?) {
                kept.push(x);
            }
        }
        *items = kept;
        return Ok(());
    }
    let p = parent(doc, &c, true)?.expect("created");
    let field = p.get_mut(&last);
    let new = match (&c.what, field) {
        (Op::Set(v), _) => v.clone(),
        (Op::Now, _) => J::Str(iso_timestamp(at)),
        (Op::Inc(d), None) => J::Num(d.to_text()),
        (Op::Inc(d), Some(J::Num(n))) => {
            let sum = Dec::parse(n)?.add(d).to_text();
            if sum.len() > MAX_NUMBER_TEXT {
                return Err(OpError::TooDeep(format!("$inc at {:?}: the result has more than {MAX_NUMBER_TEXT} digits", c.dotted)));
            }
            J::Num(sum)
        }
        (Op::Inc(_), Some(f)) => return Err(wrong_type(&c, f, "a number")),
        (Op::Push(vs), None) => J::Arr(vs.clone()),
        (Op::AddToSet(vs), None) => {
            let mut a: Vec<J> = Vec::new();
            add_to_set(&mut a, vs, int)?;
            J::Arr(a)
        }
        (Op::Push(vs), Some(J::Arr(a))) => {
            a.extend(vs.iter().cloned());
            return Ok(());
        }
        (Op::AddToSet(vs), Some(J::Arr(a))) => {
            add_to_set(a, vs, int)?;
            return Ok(());
        }
        (Op::Push(_) | Op::AddToSet(_), Some(f)) => return Err(wrong_type(&c, f, "an array")),
        (Op::Min(v) | Op::Max(v), None) => v.clone(),
        (Op::Min(v) | Op::Max(v), Some(f)) => {
            let ord = match (&*f, v) {
                (J::Num(a), J::Num(b)) => Dec::parse(b)?.cmp(&Dec::parse(a)?),
                (J::Str(a), J::Str(b)) => b.as_str().cmp(a.as_str()),
                (f, v) => {
                    return mismatch(format!(
                        "{} at {:?}: the field is {} {}, the value is {} {}",
                        c.op,
                        c.dotted,
                        article(f.type_name()),
                        f.type_name(),
                        article(v.type_name()),
                        v.type_name()
                    ));
                }
            };
            let replace = match c.what {
                Op::Min(_) => ord == Ordering::Less,
                _ => ord == Ordering::Greater,
            };
            if !replace {
                return Ok(());
            }
            v.clone()
        }
        (Op::Unset | Op::Pull(_), _) => unreachable!("handled above"),
    };
    p.insert(last, new);
    Ok(())
}

/// Apply an operator patch to a document, both as JSON text; `at` is the transaction's
/// timestamp (microseconds since 2000-01-01 UTC) for `$now`. The result as JSON text.
/// `check` is called every few thousand steps (see Interrupts).
pub fn apply(data: &str, ops: &str, at: i64, check: &mut dyn FnMut()) -> Result<String, OpError> {
    let int = &mut Interrupts::new(check);
    let changes = parse_changes(parse_with(ops, int)?)?;
    let mut doc = parse_with(data, int)?;
    if !matches!(doc, J::Obj(_)) {
        return mismatch(format!("operators apply to a JSON object; the document is {}", doc.type_name()));
    }
    for c in changes {
        int.tick();
        apply_one(&mut doc, c, at, int)?;
    }
    output(doc)
}

fn output(doc: J) -> Result<String, OpError> {
    let text = doc.to_text();
    if text.len() > MAX_OUTPUT {
        return Err(OpError::TooDeep(format!("the result would be larger than {} MB", MAX_OUTPUT >> 20)));
    }
    Ok(text)
}

/// RFC 7386 JSON merge patch of `target` by `patch`, both JSON text, over this module's
/// tree, so every number keeps its digits (baas.merge_patch; serde_json here would round
/// every number of the document to an f64).
pub fn merge_patch(target: &str, patch: &str, check: &mut dyn FnMut()) -> Result<String, OpError> {
    let int = &mut Interrupts::new(check);
    let patch = parse_with(patch, int)?;
    if !matches!(patch, J::Obj(_)) {
        return output(patch);
    }
    let mut doc = parse_with(target, int)?;
    merge(&mut doc, patch, int);
    output(doc)
}

fn merge(target: &mut J, patch: J, int: &mut Interrupts) {
    int.tick();
    let J::Obj(patch) = patch else {
        *target = patch;
        return;
    };
    if !matches!(target, J::Obj(_)) {
        *target = J::Obj(BTreeMap::new());
    }
    let J::Obj(map) = target else { unreachable!("made an object just above") };
    for (k, v) in patch {
        if let J::Null = v {
            map.remove(&k);
        } else {
            merge(map.entry(k).or_insert(J::Null), v, int);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn run(data: Value, ops: Value) -> Result<Value, OpError> {
        apply(&data.to_string(), &ops.to_string(), 0, &mut || ()).map(|t| serde_json::from_str(&t).unwrap())
    }

    fn text(data: &str, ops: &str) -> Result<String, OpError> {
        apply(data, ops, 0, &mut || ())
    }

    fn code(r: Result<Value, OpError>) -> &'static str {
        r.expect_err("should fail").code()
    }

    #[test]
    fn inc_is_exact() {
        assert_eq!(text(r#"{"n":123456789012345678901234567890}"#, r#"{"$inc":{"n":1}}"#).unwrap(), r#"{"n":123456789012345678901234567891}"#);
        assert_eq!(text(r#"{"n":0.1}"#, r#"{"$inc":{"n":0.2}}"#).unwrap(), r#"{"n":0.3}"#);
        assert_eq!(text(r#"{"n":1.50}"#, r#"{"$inc":{"n":1}}"#).unwrap(), r#"{"n":2.50}"#);
        assert_eq!(text(r#"{"n":5}"#, r#"{"$inc":{"n":-7.25}}"#).unwrap(), r#"{"n":-2.25}"#);
        assert_eq!(text(r#"{"n":-5}"#, r#"{"$inc":{"n":5}}"#).unwrap(), r#"{"n":0}"#);
        assert_eq!(text(r#"{"n":-0.5}"#, r#"{"$inc":{"n":-0.75}}"#).unwrap(), r#"{"n":-1.25}"#);
        assert_eq!(text(r#"{"n":999}"#, r#"{"$inc":{"n":1}}"#).unwrap(), r#"{"n":1000}"#);
        assert_eq!(text(r#"{"n":-1000}"#, r#"{"$inc":{"n":1}}"#).unwrap(), r#"{"n":-999}"#);
        assert_eq!(text(r#"{"n":0.001}"#, r#"{"$inc":{"n":-0.01}}"#).unwrap(), r#"{"n":-0.009}"#);
        assert_eq!(text(r#"{"n":1e3}"#, r#"{"$inc":{"n":1}}"#).unwrap(), r#"{"n":1001}"#);
        // A missing field counts as 0, and intermediate objects appear.
        assert_eq!(run(json!({}), json!({"$inc": {"a.b.c": 2}})).unwrap(), json!({"a": {"b": {"c": 2}}}));
    }

    #[test]
    fn dec_compare_and_text() {
        let d = |s| Dec::parse(s).unwrap();
        assert_eq!(d("1").cmp(&d("1.000")), Ordering::Equal);
        assert_eq!(d("-0").cmp(&d("0.0")), Ordering::Equal);
        assert_eq!(d("-2").cmp(&d("-10")), Ordering::Greater);
        assert_eq!(d("0.1").cmp(&d("0.09")), Ordering::Greater);
        assert_eq!(d("100000000000000000000001").cmp(&d("100000000000000000000000.5")), Ordering::Greater);
        assert_eq!(d("-0.50").to_text(), "-0.50");
        assert_eq!(d("0.05").to_text(), "0.05");
        assert_eq!(d("-0.0").to_text(), "0.0");
        assert_eq!(d("12e-3").to_text(), "0.012");
        assert!(Dec::parse("1e9999999").is_err());
        assert!(Dec::parse("abc").is_err());
    }

    #[test]
    fn set_unset_now() {
        assert_eq!(run(json!({"a": 1}), json!({"$set": {"b.c": [1, {"x": null}]}})).unwrap(), json!({"a": 1, "b": {"c": [1, {"x": null}]}}));
        assert_eq!(run(json!({"a": {"b": 1, "c": 2}}), json!({"$unset": {"a.b": true}})).unwrap(), json!({"a": {"c": 2}}));
        assert_eq!(run(json!({"a": 1, "b": 2}), json!({"$unset": ["a", "zz.y"]})).unwrap(), json!({"b": 2}));
        assert_eq!(code(run(json!({}), json!({"$unset": {"a": false}}))), "invalid_operator");
        assert_eq!(code(run(json!({}), json!({"$unset": [1]}))), "invalid_operator");
        assert_eq!(run(json!({}), json!({"$now": {"t": true}})).unwrap(), json!({"t": "2000-01-01T00:00:00+00:00"}));
        assert_eq!(code(run(json!({}), json!({"$now": {"t": 1}}))), "invalid_operator");
    }

    #[test]
    fn timestamps() {
        assert_eq!(iso_timestamp(0), "2000-01-01T00:00:00+00:00");
        // 2026-12-03 15:51:09.1234 UTC
        let days = 9833; // 2000-01-01 .. 2026-12-03
        let us = days * 86_400_000_000i64 + ((15 * 3600 + 51 * 60 + 9) * 1_000_000) + 123_400;
        assert_eq!(iso_timestamp(us), "2026-12-03T15:51:09.1234+00:00");
        assert_eq!(iso_timestamp(-1), "1999-12-31T23:59:59.999999+00:00");
        assert_eq!(iso_timestamp(59 * 86_400_000_000), "2000-02-29T00:00:00+00:00");
    }

    #[test]
    fn arrays() {
        assert_eq!(run(json!({"t": [1]}), json!({"$push": {"t": 1}})).unwrap(), json!({"t": [1, 1]}));
        assert_eq!(run(json!({}), json!({"$push": {"t": {"$each": [1, 2]}}})).unwrap(), json!({"t": [1, 2]}));
        assert_eq!(run(json!({"t": [1, "a"]}), json!({"$addToSet": {"t": {"$each": [1.0, "a", "b", "b"]}}})).unwrap(), json!({"t": [1, "a", "b"]}));
        assert_eq!(text(r#"{"t":[1.0]}"#, r#"{"$addToSet":{"t":1}}"#).unwrap(), r#"{"t":[1.0]}"#);
        assert_eq!(run(json!({}), json!({"$addToSet": {"t": {"$each": [{"a": 1, "b": 2}, {"b": 2, "a": 1}]}}})).unwrap(), json!({"t": [{"a": 1, "b": 2}]}));
        assert_eq!(run(json!({"t": [1, 2, 1.0, [1], {"a": 1}]}), json!({"$pull": {"t": 1}})).unwrap(), json!({"t": [2, [1], {"a": 1}]}));
        assert_eq!(run(json!({"t": [1, 2, 3, {"a": 1}]}), json!({"$pull": {"t": {"$in": [3, {"a": 1.00}]}}})).unwrap(), json!({"t": [1, 2]}));
        assert_eq!(run(json!({}), json!({"$pull": {"t": 1}})).unwrap(), json!({}));
        assert_eq!(code(run(json!({}), json!({"$push": {"t": {"$each": 1}}}))), "invalid_operator");
        assert_eq!(code(run(json!({}), json!({"$push": {"t": {"$each": [1], "x": 1}}}))), "invalid_operator");
    }

    #[test]
    fn min_max() {
        assert_eq!(run(json!({"n": 5}), json!({"$min": {"n": 3}})).unwrap(), json!({"n": 3}));
        assert_eq!(run(json!({"n": 5}), json!({"$min": {"n": 7}})).unwrap(), json!({"n": 5}));
        assert_eq!(run(json!({"n": 5}), json!({"$max": {"n": 7}})).unwrap(), json!({"n": 7}));
        assert_eq!(run(json!({}), json!({"$max": {"n": 7}})).unwrap(), json!({"n": 7}));
        assert_eq!(run(json!({"s": "b"}), json!({"$max": {"s": "a"}, "$min": {"t": "z"}})).unwrap(), json!({"s": "b", "t": "z"}));
        assert_eq!(text(r#"{"n":123456789012345678901234567890}"#, r#"{"$max":{"n":123456789012345678901234567891}}"#).unwrap(), r#"{"n":123456789012345678901234567891}"#);
        assert_eq!(code(run(json!({"n": "5"}), json!({"$min": {"n": 3}}))), "operator_type_mismatch");
        assert_eq!(code(run(json!({}), json!({"$min": {"n": true}}))), "invalid_operator");
    }

    #[test]
    fn type_mismatches_name_path_and_types() {
        let e = run(json!({"a": {"n": "x"}}), json!({"$inc": {"a.n": 1}})).unwrap_err();
        assert_eq!(e, OpError::Mismatch(r#"$inc at "a.n": the field is a string, $inc needs a number"#.into()));
        let e = run(json!({"a": 5}), json!({"$set": {"a.b.c": 1}})).unwrap_err();
        assert_eq!(e, OpError::Mismatch(r#"$set at "a.b.c": "a" is a number, not an object"#.into()));
        for (d, o) in [
            (json!({"t": 1}), json!({"$push": {"t": 1}})),
            (json!({"t": {}}), json!({"$addToSet": {"t": 1}})),
            (json!({"t": "s"}), json!({"$pull": {"t": 1}})),
            (json!({"t": null}), json!({"$inc": {"t": 1}})),
            (json!({"t": [1]}), json!({"$max": {"t": 1}})),
            (json!({"t": [1]}), json!({"$unset": {"t.x": true}})),
            (json!({"t": [1]}), json!({"$now": {"t.x": true}})),
        ] {
            assert_eq!(code(run(d, o)), "operator_type_mismatch");
        }
    }

    #[test]
    fn invalid_patches() {
        for o in [
            json!({"$inc": {"n": 1}, "name": "x"}),
            json!({"$frobnicate": {"n": 1}}),
            json!({"$inc": {"n": "1"}}),
            json!({"$inc": [1]}),
            json!({"$inc": {"": 1}}),
            json!({"$inc": {"a..b": 1}}),
            json!({"$set": {"a": 1}, "$inc": {"a": 1}}),
            json!({"$set": {"a": 1}, "$unset": ["a.b"]}),
            json!({"$set": {"a.b": 1, "a": 2}}),
        ] {
            assert_eq!(code(run(json!({}), o.clone())), "invalid_operator", "{o}");
        }
        // Siblings are fine.
        assert_eq!(run(json!({}), json!({"$set": {"a.b": 1}, "$inc": {"a.c": 1, "ab": 1}})).unwrap(), json!({"a": {"b": 1, "c": 1}, "ab": 1}));
    }

    #[test]
    fn each_and_in_are_capped() {
        let many: Vec<Value> = (0..=MAX_EACH as i64).map(Value::from).collect();
        for o in [json!({"$addToSet": {"t": {"$each": many}}}), json!({"$push": {"t": {"$each": many}}}), json!({"$pull": {"t": {"$in": many}}})] {
            let e = run(json!({}), o).unwrap_err();
            assert_eq!(e.code(), "invalid_operator");
            assert!(e.message().contains("at most 1000 values"), "{}", e.message());
        }
        let ok: Vec<Value> = (0..MAX_EACH as i64).map(Value::from).collect();
        assert_eq!(run(json!({}), json!({"$addToSet": {"t": {"$each": ok.clone()}}})).unwrap(), json!({"t": ok}));
    }

    #[test]
    fn set_membership_is_by_value() {
        // Hashing canonical texts: 1, 1.0, 1.00, 10e-1 are one value; keys in any order.
        assert_eq!(text(r#"{"t":[1.00,{"b":[2.50],"a":0}]}"#, r#"{"$addToSet":{"t":{"$each":[10e-1,1,{"a":-0.0,"b":[2.5]},2]}}}"#).unwrap(), r#"{"t":[1.00,{"a":0,"b":[2.50]},2]}"#);
        assert_eq!(text(r#"{"t":[0.10,0.1,1,"1",[1]]}"#, r#"{"$pull":{"t":{"$in":[0.1000,[1.0]]}}}"#).unwrap(), r#"{"t":[1,"1"]}"#);
        let d = |s| Dec::parse(s).unwrap().canonical_text();
        assert_eq!((d("1.50"), d("-0.00"), d("100"), d("1e2"), d("0.0100")), ("1.5".into(), "0".into(), "100".into(), "100".into(), "0.01".into()));
    }

    #[test]
    fn long_work_checks_for_interrupts() {
        let big = json!({"t": {"$each": (0..MAX_EACH as i64).collect::<Vec<_>>()}});
        let doc = json!({"t": (0..20_000).collect::<Vec<i64>>()});
        let mut calls = 0;
        apply(&doc.to_string(), &json!({"$addToSet": big}).to_string(), 0, &mut || calls += 1).unwrap();
        assert!(calls >= 5, "{calls}");
        // The check may end the work (Postgres's raises an ERROR, a longjmp; here a panic).
        let r = std::panic::catch_unwind(|| apply(&doc.to_string(), r#"{"$pull":{"t":1}}"#, 0, &mut || panic!("canceled")));
        assert!(r.is_err());
    }

    #[test]
    fn number_bounds() {
        for n in ["1e-5000", "1e5000", "1e9999999"] {
            assert_eq!(text(r#"{"n":1}"#, &format!(r#"{{"$inc":{{"n":{n}}}}}"#)).unwrap_err().code(), "limit_exceeded", "{n}");
        }
        let long = "1".repeat(MAX_NUMBER_TEXT + 1);
        assert_eq!(text(&format!(r#"{{"n":{long}}}"#), r#"{"$set":{"m":1}}"#).unwrap_err().code(), "limit_exceeded");
        let near = "9".repeat(MAX_NUMBER_TEXT);
        assert_eq!(text(&format!(r#"{{"n":{near}}}"#), r#"{"$inc":{"n":1}}"#).unwrap_err().code(), "limit_exceeded");
        // 310 digits: beyond f64, within the bounds.
        let big = format!("1{}", "0".repeat(309));
        assert_eq!(text(&format!(r#"{{"n":{big}}}"#), r#"{"$inc":{"n":1}}"#).unwrap(), format!(r#"{{"n":1{}1}}"#, "0".repeat(308)));
    }

    #[test]
    fn merge_patch_keeps_every_digit() {
        let m = |t: &str, p: &str| merge_patch(t, p, &mut || ()).unwrap();
        assert_eq!(m(r#"{"n":123456789012345678901234567891,"p":0.10,"a":{"x":1,"y":2}}"#, r#"{"title":"x","a":{"x":null,"z":1e400}}"#),
            r#"{"a":{"y":2,"z":1e400},"n":123456789012345678901234567891,"p":0.10,"title":"x"}"#);
        // RFC 7386 appendix A.
        for (t, p, want) in [
            (r#"{"a":"b"}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
            (r#"{"a":"b"}"#, r#"{"b":"c"}"#, r#"{"a":"b","b":"c"}"#),
            (r#"{"a":"b"}"#, r#"{"a":null}"#, r#"{}"#),
            (r#"{"a":"b","b":"c"}"#, r#"{"a":null}"#, r#"{"b":"c"}"#),
            (r#"{"a":["b"]}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
            (r#"{"a":"c"}"#, r#"{"a":["b"]}"#, r#"{"a":["b"]}"#),
            (r#"{"a":{"b":"c"}}"#, r#"{"a":{"b":"d","c":null}}"#, r#"{"a":{"b":"d"}}"#),
            (r#"{"a":[{"b":"c"}]}"#, r#"{"a":[1]}"#, r#"{"a":[1]}"#),
            (r#"["a","b"]"#, r#"["c","d"]"#, r#"["c","d"]"#),
            (r#"{"a":"b"}"#, r#"["c"]"#, r#"["c"]"#),
            (r#"{"a":"foo"}"#, "null", "null"),
            (r#"{"a":"foo"}"#, r#""bar""#, r#""bar""#),
            (r#"{"e":null}"#, r#"{"a":1}"#, r#"{"a":1,"e":null}"#),
            (r#"[1,2]"#, r#"{"a":"b","c":null}"#, r#"{"a":"b"}"#),
            (r#"{}"#, r#"{"a":{"bb":{"ccc":null}}}"#, r#"{"a":{"bb":{}}}"#),
        ] {
            assert_eq!(m(t, p), want, "{t} + {p}");
        }
    }

    #[test]
    fn text_round_trip() {
        let s = r#"{"a":"q\"\\\n\u0001é😀","b":[true,false,null,-0.5e+2,{}],"c":{}}"#;
        let v = parse(s).unwrap();
        let back: Value = serde_json::from_str(&v.to_text()).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(s).unwrap());
        assert_eq!(parse(r#""\ud83d\ude00""#).unwrap().to_text(), "\"😀\"");
        assert!(parse("[1,").is_err());
        assert!(parse("01x").is_err());
        let deep = "[".repeat(MAX_DEPTH + 2) + &"]".repeat(MAX_DEPTH + 2);
        assert_eq!(parse(&deep).unwrap_err().code(), "limit_exceeded");
    }
}
