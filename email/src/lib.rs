//! Email address normalisation, the only one in pgbaas: sign-up stores `normalize`'s
//! result (SQL `baas._normalize_email`), every lookup by address goes through it
//! (`baas._email_key`, NULL where it refuses), and the proxy keys its per-account rate
//! limits by it. Deliberately modest: it does not implement RFC 5322; it refuses what is
//! certainly not deliverable and makes every spelling of one address the same text:
//! - the local part in Unicode NFC, lower-cased by Unicode's rules (Rust's
//!   `to_lowercase`: "ÉLODIE" is "élodie"; SQL `lower()` under the database's C ctype
//!   changes ASCII letters only, and a login through it never found such an account);
//! - the domain by UTS 46 (IDNA) to ASCII, with punycode where needed: "BÜCHER.de",
//!   "bücher.de" and "xn--bcher-kva.de" are one domain, and full-width dots and
//!   letters map to their ASCII forms.

use unicode_normalization::UnicodeNormalization;

/// Longest address SMTP can carry (RFC 5321 path limit minus the angle brackets).
pub const MAX_EMAIL_LEN: usize = 254;

/// The address cannot be an email address (the extension answers 22023 invalid_email).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidEmail;

impl std::fmt::Display for InvalidEmail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a valid email address")
    }
}

impl std::error::Error for InvalidEmail {}

pub fn normalize(raw: &str) -> Result<String, InvalidEmail> {
    let email = raw.trim();
    // Bounded before any Unicode work, whatever the client sent.
    if email.is_empty() || email.len() > 4 * MAX_EMAIL_LEN {
        return Err(InvalidEmail);
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InvalidEmail);
    }
    let (local, domain) = email.rsplit_once('@').ok_or(InvalidEmail)?;
    if local.is_empty() || local.contains('@') {
        return Err(InvalidEmail);
    }
    // NFC again after lower-casing: a capital with no precomposed form (J + U+030C)
    // lower-cases to a pair NFC composes (U+01F0); without it one address had two
    // spellings, and normalize was not idempotent.
    let local: String = local.nfc().collect::<String>().to_lowercase().nfc().collect();
    // STD3 rules (letters, digits, hyphens), hyphen placement and DNS lengths checked.
    let domain = idna::domain_to_ascii_strict(domain).map_err(|_| InvalidEmail)?;
    if local.len() > 64 || domain.len() < 3 || !domain.contains('.') || domain.split('.').any(|l| l.is_empty()) {
        return Err(InvalidEmail);
    }
    let out = format!("{local}@{domain}");
    if out.len() > MAX_EMAIL_LEN {
        return Err(InvalidEmail);
    }
    Ok(out)
}

/// The key of an address that `normalize` refuses but an earlier release accepted and
/// stored (trimmed and lower-cased: a domain label like `ab--cd` or `-x`), so that such
/// an account can still sign in. Only for finding an existing account: sign-up refuses
/// the address. None for what never was an address (no `@`, too long).
pub fn legacy_key(raw: &str) -> Option<String> {
    let email = raw.trim();
    if email.len() > MAX_EMAIL_LEN || !email.contains('@') || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    Some(email.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    const BAD: Result<String, InvalidEmail> = Err(InvalidEmail);

    #[test]
    fn lowercases_and_trims() {
        assert_eq!(normalize("  Alice@Example.COM ").unwrap(), "alice@example.com");
    }

    #[test]
    fn lowercases_beyond_ascii() {
        assert_eq!(normalize("ÉLODIE@Example.com").unwrap(), "élodie@example.com");
        assert_eq!(normalize("élodie@example.com").unwrap(), "élodie@example.com");
        assert_eq!(normalize("ΣΟΦΙΑ@ΠΑΡΑΔΕΙΓΜΑ.ΕΛ").unwrap(), normalize("σοφια@παραδειγμα.ελ").unwrap());
        assert_eq!(normalize("JÖRG@BÜCHER.DE").unwrap(), "jörg@xn--bcher-kva.de");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", "alice", "@example.com", "alice@", "alice@com", "a b@example.com",
            "alice@exa mple.com", "alice@example..com", "alice@@example.com",
            "alice\n@example.com", "alice@ex_ample.com", "alice@exam\tple.com",
        ] {
            assert_eq!(normalize(bad), BAD, "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(normalize(&long), BAD);
    }

    #[test]
    fn accepts_plus_and_unicode_domains() {
        assert!(normalize("a+tag@sub.example.org").is_ok());
        assert!(normalize("jörg@bücher.de").is_ok());
    }

    #[test]
    fn one_address_in_every_spelling() {
        // NFD (e + combining acute) and NFC local parts; Unicode, upper-case and punycode
        // domains; a full-width dot (U+FF0E) in the domain.
        let forms = [
            "e\u{301}lodie@bu\u{308}cher.de",
            "\u{e9}lodie@b\u{fc}cher.de",
            "\u{c9}LODIE@B\u{dc}CHER.DE",
            "\u{e9}lodie@xn--bcher-kva.de",
            "\u{e9}lodie@b\u{fc}cher\u{ff0e}de",
        ];
        for f in forms {
            assert_eq!(normalize(f).as_deref(), Ok("\u{e9}lodie@xn--bcher-kva.de"), "{f:?}");
        }
        // IDNA maps invisible characters away: a zero-width space hides no second account.
        assert_eq!(normalize("a@exa\u{200b}mple.com").as_deref(), Ok("a@example.com"));
    }

    #[test]
    fn the_spelling_is_canonical_and_idempotent() {
        assert_eq!(normalize("J\u{30c}@example.com"), normalize("\u{1f0}@example.com"));
        // Every letter up to U+3000, alone and followed by each combining mark of
        // U+0300..U+036F: normalising is idempotent and blind to decomposition.
        let marks: Vec<char> = ('\u{300}'..='\u{36f}').collect();
        for c in ('\u{41}'..='\u{3000}').filter(|c| c.is_alphabetic()) {
            for m in std::iter::once(None).chain(marks.iter().map(Some)) {
                let mut local = String::from(c);
                if let Some(m) = m {
                    local.push(*m);
                }
                let Ok(once) = normalize(&format!("{local}@example.com")) else { continue };
                assert_eq!(normalize(&once).as_ref(), Ok(&once), "idempotent for {local:?}");
                let nfd: String = format!("{local}@example.com").nfd().collect();
                assert_eq!(normalize(&nfd).as_ref(), Ok(&once), "NFD of {local:?}");
                let upper: String = once.to_uppercase();
                if let Ok(u) = normalize(&upper) {
                    // Upper-casing is not always reversible (ß, final sigma); when it is
                    // a different address, it must still be a canonical one.
                    assert_eq!(normalize(&u).as_ref(), Ok(&u), "idempotent for {upper:?}");
                }
            }
        }
    }

    /// A lookup key for an address stored before this normalisation, which it refuses
    /// (`ab--cd.com`): see `legacy_key`.
    #[test]
    fn a_legacy_address_keeps_a_lookup_key() {
        assert_eq!(normalize("Bob@AB--CD.com"), BAD);
        assert_eq!(legacy_key(" Bob@AB--CD.com ").as_deref(), Some("bob@ab--cd.com"));
        assert_eq!(legacy_key("nobody"), None);
        assert_eq!(legacy_key(&"a".repeat(300)), None);
    }

    #[test]
    fn refuses_what_no_domain_can_be() {
        for bad in ["a@-example.com", "a@example-.com", "a@xn--a.com", "a@ex%ample.com"] {
            assert_eq!(normalize(bad), BAD, "{bad:?}");
        }
        let label = format!("a@{}.com", "b".repeat(64));
        assert_eq!(normalize(&label), BAD, "a label of 64 letters");
        assert_eq!(normalize(&"\u{e9}".repeat(2000)), BAD, "a long input is refused before any work");
    }
}

