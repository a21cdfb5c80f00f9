//! Access control lists: `{"read": [...], "update": [...], "delete": [...]}` of
//! principals `user:<uuid>`, `followers:<uuid>` (the accepted followers of an account:
//! sql/social.sql), `role:<name>`, `authenticated`, `registered`, `anonymous`, `public`.
//!
//! Canonical form: each list sorted and without duplicates, UUIDs lower-case and
//! hyphenated, and `read` ⊇ `update` ∪ `delete` (whoever may change or delete a
//! document may see it; otherwise "404 when you may not read" could not hold for a
//! caller allowed to update).

use crate::documents::names;
use crate::error::BaasError;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

pub const PERMISSIONS: [&str; 3] = ["read", "update", "delete"];
/// More principals than this per list is almost certainly a mistake (use a role).
pub const MAX_PRINCIPALS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Acl {
    pub read: BTreeSet<String>,
    pub update: BTreeSet<String>,
    pub delete: BTreeSet<String>,
}

pub fn principal(p: &str) -> Result<String, BaasError> {
    let bad = || BaasError::InvalidAcl(format!("{p:?} is not a principal: use \"user:<uuid>\", \"followers:<uuid>\", \"role:<name>\", \"authenticated\", \"registered\", \"anonymous\" or \"public\""));
    match p {
        "public" | "authenticated" | "registered" | "anonymous" => Ok(p.to_string()),
        _ => {
            let user = p.strip_prefix("user:").map(|id| ("user:", id));
            if let Some((kind, id)) = user.or_else(|| p.strip_prefix("followers:").map(|id| ("followers:", id))) {
                // Hyphenated form only: what the API returns is what the ACL holds.
                if id.len() != 36 {
                    return Err(bad());
                }
                let u = uuid::Uuid::parse_str(id).map_err(|_| bad())?;
                Ok(format!("{kind}{}", u.hyphenated()))
            } else if let Some(r) = p.strip_prefix("role:") {
                names::role(r).map_err(|_| bad())?;
                Ok(p.to_string())
            } else {
                Err(bad())
            }
        }
    }
}

fn list(v: Option<&Value>, perm: &str) -> Result<BTreeSet<String>, BaasError> {
    match v {
        None | Some(Value::Null) => Ok(BTreeSet::new()),
        Some(Value::Array(items)) => {
            if items.len() > MAX_PRINCIPALS {
                return Err(BaasError::InvalidAcl(format!("acl.{perm} has more than {MAX_PRINCIPALS} principals")));
            }
            items
                .iter()
                .map(|i| match i {
                    Value::String(s) => principal(s),
                    other => Err(BaasError::InvalidAcl(format!("acl.{perm} must list strings, found {other}"))),
                })
                .collect()
        }
        Some(_) => Err(BaasError::InvalidAcl(format!("acl.{perm} must be an array of principals"))),
    }
}

impl Acl {
    pub fn parse(v: &Value) -> Result<Acl, BaasError> {
        let Value::Object(m) = v else {
            return Err(BaasError::InvalidAcl("acl must be an object like {\"read\": [...], \"update\": [...], \"delete\": [...]}".into()));
        };
        if let Some(k) = m.keys().find(|k| !PERMISSIONS.contains(&k.as_str())) {
            return Err(BaasError::InvalidAcl(format!("acl has unknown permission {k:?}; permissions are read, update, delete")));
        }
        let mut acl = Acl {
            read: list(m.get("read"), "read")?,
            update: list(m.get("update"), "update")?,
            delete: list(m.get("delete"), "delete")?,
        };
        acl.normalize();
        Ok(acl)
    }

    fn normalize(&mut self) {
        let extra: Vec<String> = self.update.union(&self.delete).cloned().collect();
        self.read.extend(extra);
    }

    pub fn to_json(&self) -> Value {
        json!({"read": self.read, "update": self.update, "delete": self.delete})
    }

    /// Add (`grant`) or remove a principal, keeping the canonical form: granting update
    /// or delete also grants read; revoking read also revokes update and delete.
    pub fn change(&mut self, permission: &str, principal_raw: &str, grant: bool) -> Result<(), BaasError> {
        let p = principal(principal_raw)?;
        let set = match permission {
            "read" => &mut self.read,
            "update" => &mut self.update,
            "delete" => &mut self.delete,
            other => return Err(BaasError::InvalidAcl(format!("{other:?} is not a permission: read, update or delete"))),
        };
        if grant {
            set.insert(p);
            self.normalize();
        } else {
            set.remove(&p);
            if permission == "read" {
                self.update.remove(&p);
                self.delete.remove(&p);
            }
        }
        Ok(())
    }

    pub fn from_lists(read: Vec<String>, update: Vec<String>, delete: Vec<String>) -> Acl {
        Acl { read: read.into_iter().collect(), update: update.into_iter().collect(), delete: delete.into_iter().collect() }
    }
}

pub fn empty_map() -> Map<String, Value> {
    Map::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_canonicalises() {
        let a = Acl::parse(&json!({
            "read": ["public", "public"],
            "update": ["user:0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B", "role:editors"],
        }))
        .unwrap();
        assert_eq!(
            a.to_json(),
            json!({
                "read": ["public", "role:editors", "user:0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"],
                "update": ["role:editors", "user:0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"],
                "delete": [],
            })
        );
        assert_eq!(Acl::parse(&json!({})).unwrap(), Acl::default());
        // Full accounts and anonymous accounts (issue 16) can be named apart.
        let a = Acl::parse(&json!({"read": ["registered", "anonymous"]})).unwrap();
        assert_eq!(a.to_json()["read"], json!(["anonymous", "registered"]));
        // An account's followers (sql/social.sql), canonical like user:.
        let a = Acl::parse(&json!({"read": ["followers:0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B"]})).unwrap();
        assert_eq!(a.to_json()["read"], json!(["followers:0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"]));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            json!([]),
            json!({"write": []}),
            json!({"read": "public"}),
            json!({"read": [1]}),
            json!({"read": ["everyone"]}),
            json!({"read": ["Registered"]}),
            json!({"read": ["user:not-a-uuid"]}),
            json!({"read": ["followers:not-a-uuid"]}),
            json!({"read": ["followers:"]}),
            json!({"read": ["Followers:0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"]}),
            json!({"read": ["user:0190a1b2c3d47e5f8a9b0c1d2e3f4a5b"]}),
            json!({"read": ["role:"]}),
            json!({"read": ["role:Bad Name"]}),
            json!({"read": ["user:'; drop table baas.users; --"]}),
        ] {
            let e = Acl::parse(&bad).unwrap_err();
            assert_eq!(e.code(), "invalid_acl", "{bad}");
        }
        let many: Vec<String> = (0..300).map(|i| format!("role:r{i}")).collect();
        assert!(Acl::parse(&json!({"read": many})).is_err());
    }

    #[test]
    fn grant_and_revoke_keep_read_a_superset() {
        let mut a = Acl::default();
        a.change("delete", "authenticated", true).unwrap();
        assert!(a.read.contains("authenticated"));
        a.change("read", "authenticated", false).unwrap();
        assert!(a.delete.is_empty() && a.read.is_empty());
        assert!(a.change("own", "public", true).is_err());
        assert!(a.change("read", "nobody", true).is_err());
    }
}
