//! Which part of a file a GET answers with (RFC 9110 §14): pure, unit-tested.
//!
//! Syntax is http-range-header's; the decisions are ours:
//! - one range (`a-b`, open `a-`, suffix `-n`) is served as 206;
//! - several ranges are answered with the whole file, 200 (§14.2 lets a server ignore
//!   Range; S3 does the same), so no multipart/byteranges body is ever built;
//! - a header that is not valid syntax (or a reversed `b-a`) is ignored: 200 whole;
//! - a range starting at or past the end, a suffix `-0`, or any range of an empty file
//!   is unsatisfiable: 416 with `Content-Range: bytes */N`;
//! - `If-Range` with a strong ETag equal to ours keeps the Range; anything else (a
//!   weak tag, junk, and any HTTP-date) turns it into a whole-file answer. Dates are
//!   not honoured: Last-Modified has whole seconds while a file's versions may change
//!   several times within one, so a date equal to Last-Modified cannot prove the
//!   client's partial copy is of this version, and a 206 could splice two versions
//!   (RFC 9110 §13.1.5 lets a server send the whole file instead). The ETag is the
//!   sha256 of the bytes: a match is exact.

use http_range_header::{EndPosition, RangeUnsatisfiableError, StartPosition};
use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    Whole,
    /// First and last byte offsets, inclusive.
    Partial(u64, u64),
    Unsatisfiable,
}

/// `etag` is the quoted strong ETag we send (`"<sha256 hex>"`); `last_modified` the
/// Last-Modified we send (whole seconds), not used: an If-Range date never keeps the
/// Range (see the module's comment).
pub fn decide(range: Option<&str>, if_range: Option<&str>, etag: &str, last_modified: Option<SystemTime>, size: u64) -> RangeAnswer {
    let _ = last_modified;
    let Some(range) = range else {
        return RangeAnswer::Whole;
    };
    if let Some(v) = if_range {
        if !if_range_holds(v.trim(), etag) {
            return RangeAnswer::Whole;
        }
    }
    let parsed = match http_range_header::parse_range_header(range.trim()) {
        Ok(p) => p,
        // `bytes=-0` is well-formed (RFC 9110 §14.1.1: a suffix of length 0) and
        // unsatisfiable; other parse failures are not a valid Range: ignored.
        Err(RangeUnsatisfiableError::ZeroSuffix) if range.trim().strip_prefix("bytes=").is_some_and(|r| !r.contains(',')) => {
            return RangeAnswer::Unsatisfiable;
        }
        Err(_) => return RangeAnswer::Whole,
    };
    if parsed.ranges.len() != 1 {
        return RangeAnswer::Whole;
    }
    let r = parsed.ranges[0];
    match (r.start, r.end) {
        (StartPosition::Index(a), EndPosition::Index(b)) if b < a => RangeAnswer::Whole,
        _ if size == 0 => RangeAnswer::Unsatisfiable,
        (StartPosition::Index(a), _) if a >= size => RangeAnswer::Unsatisfiable,
        (StartPosition::Index(a), EndPosition::Index(b)) => RangeAnswer::Partial(a, b.min(size - 1)),
        (StartPosition::Index(a), EndPosition::LastByte) => RangeAnswer::Partial(a, size - 1),
        (StartPosition::FromLast(0), _) => RangeAnswer::Unsatisfiable,
        (StartPosition::FromLast(n), _) => RangeAnswer::Partial(size - n.min(size), size - 1),
    }
}

/// Only a strong ETag equal to ours (a weak tag never matches; a date never does:
/// whole seconds cannot tell two versions of one second apart).
fn if_range_holds(v: &str, etag: &str) -> bool {
    v.starts_with('"') && v == etag
}

#[cfg(test)]
mod tests {
    use super::RangeAnswer::*;
    use super::*;

    const TAG: &str = "\"abc\"";

    fn d(r: &str, size: u64) -> RangeAnswer {
        decide(Some(r), None, TAG, None, size)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(d("bytes=0-0", 10), Partial(0, 0));
        assert_eq!(d("bytes=9-9", 10), Partial(9, 9), "the last byte");
        assert_eq!(d("bytes=1048575-1048576", 3 << 20), Partial(1048575, 1048576), "across a piece boundary");
        assert_eq!(d("bytes=2-100", 10), Partial(2, 9), "an end past the file is clipped");
        assert_eq!(d("bytes=5-", 10), Partial(5, 9), "open");
        assert_eq!(d("bytes=-3", 10), Partial(7, 9), "suffix");
        assert_eq!(d("bytes=-30", 10), Partial(0, 9), "a suffix longer than the file is the file");
        assert_eq!(decide(None, None, TAG, None, 10), Whole);
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(d("bytes=10-", 10), Unsatisfiable, "starts at the end");
        assert_eq!(d("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(d("bytes=-0", 10), Unsatisfiable, "an empty suffix");
        assert_eq!(d("bytes=0-0", 0), Unsatisfiable, "an empty file has no byte 0");
        assert_eq!(d("bytes=-5", 0), Unsatisfiable);
    }

    #[test]
    fn multi_range_and_junk_are_the_whole_file() {
        assert_eq!(d("bytes=0-1,5-9", 10), Whole);
        assert_eq!(d("bytes=0-1, 5-9", 10), Whole);
        assert_eq!(d("bytes=0-5,3-9", 10), Whole, "overlapping");
        for junk in ["items=0-1", "bytes=a-b", "bytes=", "bytes=5-3", "bytes=--1", "bytes= 0-1", "0-1", ""] {
            assert_eq!(d(junk, 10), Whole, "{junk:?} is ignored");
        }
    }

    #[test]
    fn if_range_keeps_or_drops_the_range() {
        let lm = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let with = |ir: &str| decide(Some("bytes=0-0"), Some(ir), TAG, Some(lm), 10);
        assert_eq!(with("\"abc\""), Partial(0, 0), "matching strong ETag");
        assert_eq!(with("\"other\""), Whole, "another version");
        assert_eq!(with("W/\"abc\""), Whole, "weak tags never match");
        // A date equal to Last-Modified may be of another version written in the same
        // second: the whole file, never a splice of two versions.
        assert_eq!(with("Wed, 21 Oct 2015 07:28:00 GMT"), Whole, "an exact date is not trusted");
        assert_eq!(with("Wed, 21 Oct 2015 07:28:01 GMT"), Whole);
        assert_eq!(with("junk"), Whole);
        assert_eq!(decide(Some("bytes=0-0"), Some("Wed, 21 Oct 2015 07:28:00 GMT"), TAG, None, 10), Whole);
    }
}
