//! Email normalisation. Deliberately modest: we do not try to implement RFC 5322, we
//! reject what is certainly not deliverable and store the address lower-cased so that
//! `Alice@Example.com` and `alice@example.com` are one account.
//!
//! This is the only normalisation of addresses: sign-up stores `normalize`'s result
//! (SQL `baas._normalize_email`) and every lookup by address goes through it too
//! (`baas._email_key`, NULL where this refuses). Lower-casing follows Unicode (Rust's
//! `to_lowercase`), so "ÉLODIE@Example.com" is "élodie@example.com"; SQL `lower()`
//! under the database's C ctype changes ASCII letters only, and a login through it
//! never found such an account (issue 13).

use crate::error::BaasError;

/// Longest address SMTP can carry (RFC 5321 path limit minus the angle brackets).
pub const MAX_EMAIL_LEN: usize = 254;

pub fn normalize(raw: &str) -> Result<String, BaasError> {
    let email = raw.trim();
    if email.is_empty() || email.len() > MAX_EMAIL_LEN {
        return Err(BaasError::InvalidEmail);
    }
    let (local, domain) = email.rsplit_once('@').ok_or(BaasError::InvalidEmail)?;
    if local.is_empty() || local.len() > 64 || domain.len() < 3 {
        return Err(BaasError::InvalidEmail);
    }
    if local.contains('@') {
        return Err(BaasError::InvalidEmail);
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(BaasError::InvalidEmail);
    }
    // The domain must have a dot, no empty labels, and only hostname characters.
    if !domain.contains('.')
        || domain.split('.').any(|l| l.is_empty())
        || !domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.')
    {
        return Err(BaasError::InvalidEmail);
    }
    Ok(email.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowercases_and_trims() {
        assert_eq!(normalize("  Alice@Example.COM ").unwrap(), "alice@example.com");
    }

    #[test]
    fn lowercases_beyond_ascii() {
        assert_eq!(normalize("ÉLODIE@Example.com").unwrap(), "élodie@example.com");
        assert_eq!(normalize("élodie@example.com").unwrap(), "élodie@example.com");
        assert_eq!(normalize("ΣΟΦΙΑ@ΠΑΡΑΔΕΙΓΜΑ.ΕΛ").unwrap(), normalize("σοφια@παραδειγμα.ελ").unwrap());
        assert_eq!(normalize("JÖRG@BÜCHER.DE").unwrap(), "jörg@bücher.de");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", "alice", "@example.com", "alice@", "alice@com", "a b@example.com",
            "alice@exa mple.com", "alice@example..com", "alice@@example.com",
            "alice\n@example.com", "alice@ex_ample.com", "alice@exam\tple.com",
        ] {
            assert_eq!(normalize(bad), Err(BaasError::InvalidEmail), "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(normalize(&long), Err(BaasError::InvalidEmail));
    }

    #[test]
    fn accepts_plus_and_unicode_domains() {
        assert!(normalize("a+tag@sub.example.org").is_ok());
        assert!(normalize("jörg@bücher.de").is_ok());
    }
}
