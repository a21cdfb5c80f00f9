//! Download headers that keep a file from acting on the API's origin (pure,
//! unit-tested; docs/security.md "files"): only passive types are inline, everything
//! else is an attachment; every file is under a sandboxing CSP and nosniff.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// RFC 5987 attr-char: ALPHA / DIGIT / "!#$&+-.^_`|~"; everything else is %-encoded.
const ATTR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// Types a browser may show in place: images, audio and video it decodes itself, PDF
/// (its own viewer) and plain text. HTML, SVG, XML, JavaScript... are attachments.
const INLINE: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/avif",
    "audio/mpeg",
    "audio/ogg",
    "audio/wav",
    "audio/webm",
    "audio/aac",
    "audio/flac",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "application/pdf",
    "text/plain",
];

/// The media type without parameters, lower case.
pub fn essence(ct: &str) -> String {
    ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

pub fn inline_allowed(ct: &str) -> bool {
    INLINE.contains(&essence(ct).as_str())
}

/// The Content-Type sent: the stored type; text/plain always as UTF-8 (a stored
/// charset could otherwise make a browser read it as something else).
pub fn content_type(ct: &str) -> String {
    match essence(ct).as_str() {
        "text/plain" => "text/plain; charset=utf-8".to_string(),
        "" => "application/octet-stream".to_string(),
        _ => ct.to_string(),
    }
}

/// `inline` or `attachment`, with an ASCII `filename` (quotes and backslashes escaped,
/// anything else not printable ASCII as `_`) and the exact name as RFC 5987 `filename*`.
pub fn content_disposition(name: &str, inline: bool) -> String {
    let mut ascii = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                ascii.push('\\');
                ascii.push(c);
            }
            ' '..='~' => ascii.push(c),
            _ => ascii.push('_'),
        }
    }
    let kind = if inline { "inline" } else { "attachment" };
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{}", utf8_percent_encode(name, ATTR))
}

/// Every file is sandboxed (no script, no form, no same-origin) except PDF, which
/// Chrome's viewer refuses to show sandboxed: it gets `default-src 'none'`.
pub fn csp(ct: &str) -> &'static str {
    if essence(ct) == "application/pdf" {
        "default-src 'none'"
    } else {
        "sandbox; default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'"
    }
}

/// Caches must revalidate every time (so a revocation holds at once); shared caches
/// may keep only a file whose ACL lets `public` read it.
pub fn cache_control(public: bool) -> &'static str {
    if public {
        "public, no-cache"
    } else {
        "private, no-cache"
    }
}

/// If-None-Match against our ETag: weak comparison (RFC 9110 §13.1.2), `*` matches
/// any existing file, a list matches if any member does.
pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let ours = etag.trim_start_matches("W/");
    if_none_match.split(',').map(str::trim).any(|t| t == "*" || t.trim_start_matches("W/") == ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_utf8_names_survive() {
        assert_eq!(
            content_disposition("résumé \"x\".pdf", true),
            "inline; filename=\"r_sum_ \\\"x\\\".pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22x%22.pdf"
        );
        assert_eq!(content_disposition("a\\b;c\r\n.txt", false), "attachment; filename=\"a\\\\b;c__.txt\"; filename*=UTF-8''a%5Cb%3Bc%0D%0A.txt");
        assert_eq!(content_disposition("plain-name_1.png", true), "inline; filename=\"plain-name_1.png\"; filename*=UTF-8''plain-name_1.png");
    }

    #[test]
    fn only_passive_types_are_inline() {
        for ct in ["image/png", "IMAGE/JPEG", "video/mp4", "application/pdf", "text/plain; charset=latin1", "audio/flac"] {
            assert!(inline_allowed(ct), "{ct}");
        }
        for ct in ["text/html", "image/svg+xml", "application/xml", "text/javascript", "application/octet-stream", "text/xml", ""] {
            assert!(!inline_allowed(ct), "{ct}");
        }
        assert_eq!(content_type("text/plain; charset=latin1"), "text/plain; charset=utf-8");
        assert_eq!(content_type("image/png"), "image/png");
    }

    #[test]
    fn every_file_is_sandboxed_but_pdf() {
        assert!(csp("text/html").starts_with("sandbox;"));
        assert!(csp("image/png").starts_with("sandbox;"));
        assert_eq!(csp("application/pdf"), "default-src 'none'");
        assert_eq!(cache_control(true), "public, no-cache");
        assert_eq!(cache_control(false), "private, no-cache");
    }

    #[test]
    fn if_none_match_is_a_weak_comparison() {
        let tag = "\"abc\"";
        assert!(etag_matches("\"abc\"", tag));
        assert!(etag_matches("W/\"abc\"", tag));
        assert!(etag_matches("\"x\", \"abc\"", tag));
        assert!(etag_matches("*", tag));
        assert!(!etag_matches("\"abcd\"", tag));
        assert!(!etag_matches("abc", tag));
    }
}
