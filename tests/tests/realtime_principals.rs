//! The live feeds compute a subscriber's principals in the proxy (proxy/src/realtime/
//! principals.rs: the role graph kept by `nest` events, each user's direct roles kept
//! by `member` events). They must equal what `baas.principals()` says in SQL, or events
//! would reach callers who may not read them (or miss ones who may). A differential
//! test on random role graphs and memberships, changed step by step the way the hub
//! changes its copy: after every step, for every user, both sides agree.

use pgbaas_proxy::principals::RoleGraph;
use pgbaas_testkit::Cluster;
use std::collections::{BTreeMap, BTreeSet};

/// xorshift64*: fixed seeds, so a failure is reproducible.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

fn sql_principals(db: &mut postgres::Client, user: &str) -> Vec<String> {
    let row = db
        .query_one("select x from baas.as_user($1::text::uuid, 'select baas.principals()') x", &[&user])
        .expect("baas.principals() as the user");
    let v: serde_json::Value = row.get(0);
    let mut p: Vec<String> = serde_json::from_value(v).expect("a text array");
    p.sort();
    p
}

#[test]
fn principals_equal_baas_principals_on_random_role_graphs() {
    let cluster = Cluster::temporary().expect("cluster");
    let mut db = cluster.connect("postgres", pgbaas_testkit::DB).expect("connect");
    let roles: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
    for r in &roles {
        db.execute("select baas.create_role($1)", &[r]).unwrap();
    }
    let users: Vec<String> = (0..6)
        .map(|i| {
            let row = db
                .query_one("select baas.create_user($1, 'long enough pw') ->> 'id'", &[&format!("rp{i}@example.test")])
                .unwrap();
            row.get(0)
        })
        .collect();
    // Half of them anonymous accounts (issue 16): `anonymous` instead of `registered`.
    let anonymous: BTreeSet<String> = users.iter().skip(3).cloned().collect();
    for u in &anonymous {
        db.execute("update baas.users set email = null, password_hash = null, is_anonymous = true where id = $1::text::uuid", &[u])
            .unwrap();
    }
    let mut graph = RoleGraph::default();
    let mut direct: BTreeMap<String, BTreeSet<String>> = users.iter().map(|u| (u.clone(), BTreeSet::new())).collect();
    let mut rng = Rng(0x5eed_7e41_0001);
    let (mut nested, mut checked_roles) = (0, 0);
    for step in 0..120 {
        let (a, b) = (roles[rng.below(roles.len())].clone(), roles[rng.below(roles.len())].clone());
        let u = users[rng.below(users.len())].clone();
        match rng.below(4) {
            // member_role a joins role b; a cycle (or a = b) is refused by SQL, and the
            // proxy never hears of it (no event).
            0 => {
                if db.execute("select baas.add_role_to_role($1, $2)", &[&b, &a]).is_ok() {
                    graph.set(&a, &b, true);
                    nested += 1;
                }
            }
            1 => {
                db.execute("select baas.remove_role_from_role($1, $2)", &[&b, &a]).unwrap();
                graph.set(&a, &b, false);
            }
            2 => {
                db.execute("select baas.add_role_member($1, $2::text::uuid)", &[&a, &u]).unwrap();
                direct.get_mut(&u).unwrap().insert(a.clone());
            }
            _ => {
                db.execute("select baas.remove_role_member($1, $2::text::uuid)", &[&a, &u]).unwrap();
                direct.get_mut(&u).unwrap().remove(&a);
            }
        }
        // The graph the hub loads at start agrees with the one kept by events.
        let edges: Vec<(String, String)> =
            db.query("select member_role, role from baas.role_roles", &[]).unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(RoleGraph::from_edges(edges.iter().map(|(a, b)| (a.as_str(), b.as_str()))), graph, "step {step}");
        for u in &users {
            let ours: Vec<String> =
                graph.principals(u, direct[u].iter().map(String::as_str), anonymous.contains(u)).iter().map(|p| p.to_string()).collect();
            let theirs = sql_principals(&mut db, u);
            assert_eq!(ours, theirs, "step {step}, user {u}");
            checked_roles += theirs.len() - 4;
        }
    }
    // Or the test proved little: nesting happened and users held (nested) roles.
    assert!(nested > 10, "only {nested} nesting edges were added");
    assert!(checked_roles > 200, "only {checked_roles} role principals were compared");
}
