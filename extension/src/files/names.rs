//! File names: what a client may call a file. The name is only ever shown (the
//! `Content-Disposition` of a download, listings), never used as a path, but a name
//! that looks like one (`../x`, `a/b`) or hides characters is refused outright.
use crate::error::BaasError;
use unicode_normalization::UnicodeNormalization;

pub const MAX_BYTES: usize = 255;

/// The name in NFC, trimmed, or 22023 invalid_file_name.
pub fn check(name: &str) -> Result<String, BaasError> {
    let bad = |why: &str| BaasError::InvalidFileName(format!("invalid file name: {why}"));
    let n: String = name.trim().nfc().collect();
    if n.is_empty() {
        return Err(bad("empty"));
    }
    if n.len() > MAX_BYTES {
        return Err(bad("longer than 255 bytes"));
    }
    if n == "." || n == ".." {
        return Err(bad("`.` and `..` are not names"));
    }
    if n.contains('/') || n.contains('\\') {
        return Err(bad("it contains a path separator"));
    }
    if n.chars().any(|c| c.is_control() || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')) {
        return Err(bad("it contains control or direction characters"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert_eq!(check("  photo.jpg ").unwrap(), "photo.jpg");
        assert_eq!(check("re\u{301}sume\u{301} \"x\".pdf").unwrap(), "résumé \"x\".pdf");
        for bad in ["", "  ", ".", "..", "../x", "a/b", "a\\b", "a\0b", "a\nb", "x\u{202E}gpj.exe"] {
            assert_eq!(check(bad).unwrap_err().code(), "invalid_file_name", "{bad:?}");
        }
        assert!(check(&"a".repeat(255)).is_ok());
        assert!(check(&"a".repeat(256)).is_err());
        assert!(check(&"é".repeat(128)).is_err()); // 256 bytes
    }
}
