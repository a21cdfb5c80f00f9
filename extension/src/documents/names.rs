//! Names that become part of API paths and principals. Checked here and again by the
//! tables' CHECK constraints.

use crate::error::BaasError;

fn valid(name: &str, extra: &[u8]) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || extra.contains(c))
}

pub fn collection(name: &str) -> Result<(), BaasError> {
    valid(name, b"").then_some(()).ok_or(BaasError::InvalidCollectionName)
}

pub fn role(name: &str) -> Result<(), BaasError> {
    valid(name, b".-").then_some(()).ok_or(BaasError::InvalidRoleName)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_names() {
        for ok in ["a", "todos", "user_profiles2", &"a".repeat(63)] {
            assert!(collection(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1abc", "_x", "Todos", "to-dos", "a b", "x;drop", "ü", &"a".repeat(64), "a.b"] {
            assert_eq!(collection(bad), Err(BaasError::InvalidCollectionName), "{bad}");
        }
    }

    #[test]
    fn role_names() {
        assert!(role("team.editors-1").is_ok());
        assert!(role("-x").is_err());
        assert!(role("Admins").is_err());
    }
}
