//! The content type of a file from its first bytes (magic numbers, the `infer` crate),
//! and the declared-type rule of upload_finish (contract §3): a type the bytes reveal
//! wins over a vague declaration and must agree with a precise one; a declaration of a
//! detectable kind (images, PDF, archives, audio, video) that the bytes do not show is
//! refused, so `image/png` cannot carry HTML.

/// How many leading bytes the finish reads to sniff.
pub const HEAD: usize = 8192;

/// The MIME type the bytes show, if `infer` knows them.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    infer::get(head).map(|t| t.mime_type())
}

/// A declared type in canonical form: lower case, parameters dropped, known aliases
/// mapped (image/jpg -> image/jpeg). None when empty.
pub fn normalize(declared: &str) -> Option<String> {
    let t = declared.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if t.is_empty() {
        return None;
    }
    Some(
        match t.as_str() {
            "image/jpg" | "image/pjpeg" => "image/jpeg",
            "image/x-png" => "image/png",
            "audio/mp3" | "audio/x-mpeg" => "audio/mpeg",
            "audio/x-wav" | "audio/wave" => "audio/wav",
            "application/x-pdf" => "application/pdf",
            "application/x-zip-compressed" => "application/zip",
            other => other,
        }
        .to_string(),
    )
}

/// Whether a declared type is of a kind the bytes would show if it were true.
pub fn detectable(t: &str) -> bool {
    t.starts_with("image/") && t != "image/svg+xml"
        || t.starts_with("audio/")
        || t.starts_with("video/")
        || matches!(t, "application/pdf" | "application/zip" | "application/gzip" | "application/x-7z-compressed"
            | "application/x-rar-compressed" | "application/vnd.rar" | "application/x-tar")
}

/// Whether a type is well formed: `type/subtype` of token characters.
pub fn valid(t: &str) -> bool {
    let tok = |s: &str| !s.is_empty() && s.len() <= 127 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b));
    match t.split_once('/') {
        Some((a, b)) => tok(a) && tok(b),
        None => false,
    }
}

/// The stored type, or Err(code): `content_type_mismatch` when the declaration
/// contradicts the bytes.
pub fn decide(declared: Option<&str>, head: &[u8]) -> Result<String, &'static str> {
    let declared = declared.and_then(normalize);
    let declared = declared.as_deref().filter(|d| *d != "application/octet-stream");
    match (sniff(head), declared) {
        // infer's text matchers (HTML, XML, shell scripts) guess from a prefix: a
        // text declaration stands, a declaration of a binary kind does not.
        (Some(d), Some(x)) if d.starts_with("text/") => {
            if detectable(x) { Err("content_type_mismatch") } else { Ok(x.to_string()) }
        }
        (Some(d), None) => Ok(d.to_string()),
        // A zip-based format declared precisely while the bytes only show a zip: the
        // declaration says more.
        (Some("application/zip"), Some(x)) if zip_based(x) => Ok(x.to_string()),
        (Some(d), Some(x)) if same(d, x) => Ok(d.to_string()),
        (Some(_), Some(_)) => Err("content_type_mismatch"),
        (None, Some(x)) if detectable(x) => Err("content_type_mismatch"),
        (None, Some(x)) => Ok(x.to_string()),
        (None, None) => Ok("application/octet-stream".to_string()),
    }
}

/// Formats stored in a zip container: infer names some of them, and may see others as
/// plain zip; either way the declaration is the same bytes.
fn zip_based(t: &str) -> bool {
    t.starts_with("application/vnd.openxmlformats-officedocument.")
        || t.starts_with("application/vnd.oasis.opendocument.")
        || matches!(t, "application/epub+zip" | "application/java-archive" | "application/vnd.android.package-archive"
            | "application/x-xpinstall")
}

/// infer's names and common declared names of the same formats.
fn same(sniffed: &str, declared: &str) -> bool {
    sniffed == declared
        || (declared == "application/zip" && zip_based(sniffed))
        || (sniffed == "application/zip" && zip_based(declared))
        || matches!((sniffed, declared),
            ("audio/x-wav", "audio/wav") | ("audio/x-flac", "audio/flac") | ("audio/x-aac", "audio/aac")
            | ("audio/aac", "audio/x-aac") | ("video/quicktime", "video/mp4") | ("audio/x-m4a", "audio/mp4")
            | ("audio/m4a", "audio/mp4") | ("video/x-m4v", "video/mp4"))
}

/// Whether `t` is allowed by a bucket's list (`image/png` or `image/*`).
pub fn allowed(t: &str, list: &[String]) -> bool {
    list.iter().any(|e| e == t || e.strip_suffix("/*").is_some_and(|p| t.split('/').next() == Some(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    const JPEG: &[u8] = b"\xff\xd8\xff\xe0\0\x10JFIF\0";

    #[test]
    fn rules() {
        assert_eq!(decide(Some("image/png"), PNG), Ok("image/png".into()));
        assert_eq!(decide(None, PNG), Ok("image/png".into()));
        assert_eq!(decide(Some("application/octet-stream"), JPEG), Ok("image/jpeg".into()));
        assert_eq!(decide(Some("image/jpg"), JPEG), Ok("image/jpeg".into()));
        assert_eq!(decide(Some("IMAGE/JPEG; q=1"), JPEG), Ok("image/jpeg".into()));
        assert_eq!(decide(Some("image/png"), JPEG), Err("content_type_mismatch"));
        assert_eq!(decide(Some("text/html"), PNG), Err("content_type_mismatch"));
        assert_eq!(decide(Some("image/png"), b"<html><script>"), Err("content_type_mismatch"));
        assert_eq!(decide(Some("application/pdf"), b"hello"), Err("content_type_mismatch"));
        assert_eq!(decide(Some("text/plain"), b"hello"), Ok("text/plain".into()));
        assert_eq!(decide(Some("text/plain"), b"<html><body>"), Ok("text/plain".into()));
        assert_eq!(decide(None, b"<html><body>"), Ok("text/html".into()));
        assert_eq!(decide(Some("image/svg+xml"), b"<svg/>"), Ok("image/svg+xml".into()));
        assert_eq!(decide(None, b""), Ok("application/octet-stream".into()));
        assert_eq!(decide(Some(""), b"x"), Ok("application/octet-stream".into()));
        let zip = b"PK\x03\x04\x14\0\0\0\0\0";
        assert_eq!(decide(Some("application/zip"), zip), Ok("application/zip".into()));
        let docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
        assert_eq!(decide(Some(docx), zip), Ok(docx.into()));
        assert_eq!(decide(Some("image/png"), zip), Err("content_type_mismatch"));
    }

    #[test]
    fn allow_lists() {
        let l = vec!["image/*".to_string(), "application/pdf".to_string()];
        assert!(allowed("image/png", &l));
        assert!(allowed("application/pdf", &l));
        assert!(!allowed("text/html", &l));
        assert!(!allowed("imagex/png", &l));
        assert!(valid("image/png") && valid("application/vnd.api+json"));
        assert!(!valid("image") && !valid("a/b/c") && !valid("a b/c"));
    }
}
