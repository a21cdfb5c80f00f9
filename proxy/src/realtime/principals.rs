//! A caller's principals, computed in the proxy as `baas.principals()` computes them in
//! SQL (sql/permissions.sql): `public`; for a user also `authenticated`, `registered`
//! (a full account) or `anonymous` (an anonymous account: the token's is_anonymous
//! claim), `user:<id>` and `role:<R>` for every role reachable from the user's direct roles over nesting
//! (`baas.role_roles`: member_role is a member of role). The hub keeps the nesting
//! graph (loaded at start, kept by `nest` events) and each subscribed user's direct
//! roles (loaded at subscribe, kept by `member` events).
//!
//! Follows (sql/social.sql) ride on the same bookkeeping: an accepted follow of account
//! X is a direct entry `followers:<X>` (loaded by `baas._realtime_role_members`, kept by
//! `follow` events, which event.rs reads as memberships). Such an entry is its own
//! principal and nests in nothing. SQL adds `followers:<X>` only for accounts some ACL
//! names (baas._follow_audiences); adding it for every followee grants the same reads.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// The prefix of a follow's entry among a user's direct roles (role names hold no `:`).
pub const FOLLOWERS: &str = "followers:";

/// A caller's principals, sorted, shared by all of one user's subscriptions.
pub type Principals = Arc<[Arc<str>]>;

/// Role nesting: for each role, the roles it is a direct member of.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleGraph {
    parents: HashMap<Box<str>, HashSet<Box<str>>>,
}

impl RoleGraph {
    pub fn from_edges<'a>(edges: impl IntoIterator<Item = (&'a str, &'a str)>) -> RoleGraph {
        let mut g = RoleGraph::default();
        for (member, role) in edges {
            g.set(member, role, true);
        }
        g
    }

    /// `member_role` is (`add`) or is no longer a member of `role`.
    pub fn set(&mut self, member_role: &str, role: &str, add: bool) {
        if add {
            self.parents.entry(member_role.into()).or_default().insert(role.into());
        } else if let Some(ps) = self.parents.get_mut(member_role) {
            ps.remove(role);
            if ps.is_empty() {
                self.parents.remove(member_role);
            }
        }
    }

    /// The closure of `direct` over nesting (the recursive union of baas.roles(); a
    /// cycle ends where it meets a role already found).
    pub fn closure<'a>(&self, direct: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut todo: Vec<&str> = direct.into_iter().collect();
        while let Some(r) = todo.pop() {
            if seen.insert(r.to_string()) {
                if let Some(ps) = self.parents.get(r) {
                    todo.extend(ps.iter().map(|p| &**p));
                }
            }
        }
        seen
    }

    /// The principals of user `user` whose direct roles are `direct`; `anonymous`: an
    /// anonymous account's (`anonymous` instead of `registered`).
    pub fn principals<'a>(&self, user: &str, direct: impl IntoIterator<Item = &'a str>, anonymous: bool) -> Principals {
        let kind = if anonymous { "anonymous" } else { "registered" };
        let mut p: Vec<Arc<str>> = vec!["public".into(), "authenticated".into(), kind.into(), format!("user:{user}").into()];
        let (follows, roles): (Vec<&str>, Vec<&str>) = direct.into_iter().partition(|r| r.starts_with(FOLLOWERS));
        p.extend(self.closure(roles).into_iter().map(|r| Arc::from(format!("role:{r}"))));
        p.extend(follows.into_iter().map(Arc::from));
        p.sort();
        p.into()
    }
}

/// An anonymous caller's principals.
pub fn anonymous() -> Principals {
    Arc::from(vec![Arc::<str>::from("public")])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &Principals) -> Vec<&str> {
        p.iter().map(|x| &**x).collect()
    }

    #[test]
    fn closure_follows_nesting_and_stops_at_cycles() {
        let mut g = RoleGraph::from_edges([("a", "b"), ("b", "c"), ("c", "a"), ("x", "y")]);
        assert_eq!(names(&g.principals("u", ["a"], false)), ["authenticated", "public", "registered", "role:a", "role:b", "role:c", "user:u"]);
        assert_eq!(names(&g.principals("u", [], false)), ["authenticated", "public", "registered", "user:u"]);
        assert_eq!(names(&g.principals("u", [], true)), ["anonymous", "authenticated", "public", "user:u"]);
        g.set("b", "c", false);
        assert_eq!(g.closure(["a"]).into_iter().collect::<Vec<_>>(), ["a", "b"]);
        g.set("b", "c", true);
        g.set("x", "y", false);
        assert_eq!(g, RoleGraph::from_edges([("a", "b"), ("b", "c"), ("c", "a")]), "a removed last edge leaves no empty entry");
        assert_eq!(names(&anonymous()), ["public"]);
        // A follow is its own principal, never nested, never a role.
        let g = RoleGraph::from_edges([("a", "b")]);
        assert_eq!(
            names(&g.principals("u", ["a", "followers:x"], false)),
            ["authenticated", "followers:x", "public", "registered", "role:a", "role:b", "user:u"]
        );
    }
}
