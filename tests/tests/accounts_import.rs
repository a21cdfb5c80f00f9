//! End to end: accounts imported with the password hashes other backends made
//! (tests/fixtures/imported-hashes.md) sign in with their old passwords through the
//! real proxy; the first sign-in replaces the hash with argon2id; an import is all or
//! nothing and names its bad row; only a service token (or a DBA) may import.

mod common;
use common::*;
use serde_json::{json, Value};

const FIREBASE: (&str, &str) = (
    "jxspr8Ki0RYycVU8zykbdLGjFQ3McFUH0uiiTvC8pVMXAn210wjLNmdZJzxUECKbm0QsEmYUSDzZvpjeJ9WmXA==",
    "Bw==",
);

fn firebase_options() -> Value {
    json!({"firebase": {"signer_key": FIREBASE.0, "salt_separator": FIREBASE.1, "rounds": 8, "mem_cost": 14}})
}

fn import(token: Option<&str>, users: Value, options: Value) -> Resp {
    post("/v1/admin/users/import", token, json!({"users": users, "options": options}))
}

fn stored_hash(email: &str) -> String {
    admin().query_one("select password_hash from baas.users where email = $1", &[&email]).unwrap().get(0)
}

fn msg(r: &Resp) -> String {
    r.body["error"]["message"].as_str().unwrap_or("").to_string()
}

fn login(email: &str, password: &str) -> Resp {
    post("/v1/auth/login", None, json!({"email": email, "password": password}))
}

/// Each reference hash: import, wrong password refused, right one signs in, the hash is
/// now argon2id, and the password still works after the upgrade.
#[test]
fn each_foreign_hash_signs_in_once_and_becomes_argon2id() {
    let svc = service_token();
    let cases: Vec<(&str, &str, Value)> = vec![
        ("U*U", "crypt_blowfish", json!({"password_hash": "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"})),
        ("htpasswd secret 1", "htpasswd", json!({"password_hash": "$2y$10$sNuBFiZwY23yRnoK9SWQIe4o6bGPVm5MGjNFo9WhzpmLLi92DsRFC"})),
        ("pyca bcrypt secret 2", "pyca2b", json!({"password_hash": "$2b$10$PvaEq6X4MXrmlXhNF3CIp.hQunNSlCw9Ok.GOsQYKvT6w7wcpiLp."})),
        ("pyca bcrypt secret 3", "pyca2a", json!({"password_hash": "$2a$10$/bWcbq9EssNxkYqDMfjDCeN.ISfeDarOepKrUus2Ol.VVLjCioPFG", "hash_algorithm": "bcrypt"})),
        // phc-winner-argon2's README: `echo -n password | ./argon2 somesalt -t 2 -m 16 -p 4 -l 24`.
        ("password", "argon2-reference", json!({"password_hash": "$argon2i$v=19$m=65536,t=2,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG"})),
        ("pocketbase secret 4", "pocketbase", json!({"password_hash": "$2a$10$G3Vrg80K3cSZS0EYg6xeOu5dxxk/633ntd59Txq.4BJqcXBAc9Wf6"})),
        ("user1password", "firebase", json!({
            "password_hash": "lSrfV15cpx95/sZS2W9c9Kp6i/LVgQNDNC/qzrCnh1SAyZvqmZqAjTdn3aoItz+VHjoZilo78198JAdRuid5lQ==",
            "salt": "42xEC+ixf3L2lw==", "hash_algorithm": "firebase_scrypt"})),
    ];
    let mut rows = Vec::new();
    let mut emails = Vec::new();
    for (_, tag, extra) in &cases {
        let e = email(&format!("import-{tag}")).to_lowercase();
        let mut row = json!({"email": e, "data": {"from": tag}, "email_verified": true});
        for (k, v) in extra.as_object().unwrap() {
            row[k] = v.clone();
        }
        rows.push(row);
        emails.push(e);
    }
    let r = import(Some(&svc), Value::Array(rows), firebase_options());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, json!({"imported": cases.len(), "skipped": 0}));

    for ((password, tag, _), e) in cases.iter().zip(&emails) {
        let before = stored_hash(e);
        assert!(!before.starts_with("$argon2id$"), "{tag}: {before}");
        let wrong = login(e, &format!("{password}x"));
        assert_eq!((wrong.status, wrong.code()), (401, "invalid_credentials"), "{tag}: {}", wrong.body);
        assert_eq!(stored_hash(e), before, "{tag}: a failed sign-in changes nothing");

        // A link mailed before the first sign-in (here an email change) survives the
        // rehash: the password did not change, only its format.
        admin()
            .execute(
                "insert into baas._auth_tokens (token_hash, kind, user_id, email, expires_at)
                 select sha256(convert_to($1, 'UTF8')), 'email_change', id, 'new-' || email, now() + interval '1 hour'
                   from baas.users where email = $1",
                &[e],
            )
            .unwrap();
        let ok = login(e, password);
        assert_eq!(ok.status, 200, "{tag}: {}", ok.body);
        let pending: bool = admin()
            .query_one("select used_at is null from baas._auth_tokens where token_hash = sha256(convert_to($1, 'UTF8'))", &[e])
            .unwrap()
            .get(0);
        assert!(pending, "{tag}: the first sign-in's rehash spent a pending link");
        assert_eq!(ok.body["user"]["data"], json!({"from": tag}));
        assert_eq!(ok.body["user"]["email_verified"], true, "{tag}");
        let after = stored_hash(e);
        assert!(after.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{tag}: upgraded on first sign-in: {after}");

        let again = login(e, password);
        assert_eq!(again.status, 200, "{tag}: the password works after the upgrade: {}", again.body);
        assert_eq!(stored_hash(e), after, "{tag}: rehashed once");
        let wrong = login(e, &format!("{password}x"));
        assert_eq!(wrong.status, 401, "{tag}");
    }
}

#[test]
fn an_import_is_all_or_nothing_and_names_the_bad_row() {
    let svc = service_token();
    let a = email("import-all-a").to_lowercase();
    let b = email("import-all-b").to_lowercase();
    let bad = |row: Value| {
        let r = import(Some(&svc), json!([{"email": a}, {"email": b}, row]), json!({}));
        assert_eq!(r.status, 400, "{}", r.body);
        let n: i64 = admin()
            .query_one("select count(*) from baas.users where email in ($1, $2)", &[&a, &b])
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "rows before the bad one are not kept: {}", r.body);
        r
    };
    let r = bad(json!({"email": email("import-md5"), "password_hash": "5f4dcc3b5aa765d61d8327deb882cf99"}));
    assert_eq!(r.code(), "invalid_hash");
    assert!(msg(&r).starts_with("row 3: "), "{}", r.body);
    let r = bad(json!({"email": email("import-fb"), "password_hash": "AAAA", "salt": "AAAA", "hash_algorithm": "firebase_scrypt"}));
    assert_eq!(r.code(), "invalid_hash");
    assert!(msg(&r).contains("options.firebase"), "{}", r.body);
    let r = bad(json!({"email": "not an address"}));
    assert_eq!(r.code(), "invalid_email");
    assert!(msg(&r).starts_with("row 3: "), "{}", r.body);
    let r = bad(json!({"email": email("import-x"), "password": "plain"}));
    assert_eq!(r.code(), "invalid_request");
    assert!(msg(&r).contains("unknown field password"), "{}", r.body);
    let r = bad(json!({"email": email("import-bc"), "password_hash": "$2a$99$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"}));
    assert_eq!(r.code(), "invalid_hash");
    // Hashes whose first check would hold a backend for hours (bcrypt cost 31: about a
    // day of CPU; argon2 asking for 4 TiB) are refused here, not met at sign-in.
    let r = bad(json!({"email": email("import-bc31"), "password_hash": "$2a$31$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"}));
    assert_eq!(r.code(), "invalid_hash");
    assert!(msg(&r).starts_with("row 3: ") && msg(&r).contains("cost 04-14"), "{}", r.body);
    let r = bad(json!({"email": email("import-a2big"), "password_hash": "$argon2i$v=19$m=4294967295,t=2,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG"}));
    assert_eq!(r.code(), "invalid_hash");
    assert!(msg(&r).contains("m=65536"), "{}", r.body);
    // 60 bytes with "é" where the cost goes: a 400, not a 500.
    let odd = format!("$2a$1\u{e9}{}", "CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW");
    assert_eq!(odd.len(), 60);
    let r = bad(json!({"email": email("import-utf8"), "password_hash": odd}));
    assert_eq!(r.code(), "invalid_hash", "{}", r.body);
    // Addresses sign-up refuses are refused here too (not kept as typed).
    for addr in ["a@@example.com", "alice@com", "@"] {
        let r = bad(json!({"email": addr}));
        assert_eq!(r.code(), "invalid_email", "{addr}: {}", r.body);
    }
    let r = import(Some(&svc), json!({"email": a}), json!({}));
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "not an array: {}", r.body);
    let r = import(Some(&svc), json!([]), json!({"on_conflict": "merge"}));
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{}", r.body);
}

#[test]
fn conflicts_fail_the_import_or_are_skipped_as_asked() {
    let svc = service_token();
    let existing = signup("import-existing");
    let fresh = email("import-fresh").to_lowercase();
    let rows = json!([{"email": fresh}, {"email": existing.email.to_uppercase(), "password_hash": "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"}]);
    let r = import(Some(&svc), rows.clone(), json!({}));
    assert_eq!((r.status, r.code()), (409, "email_taken"), "{}", r.body);
    assert!(msg(&r).starts_with("row 2: "), "{}", r.body);
    let n: i64 = admin().query_one("select count(*) from baas.users where email = $1", &[&fresh]).unwrap().get(0);
    assert_eq!(n, 0);

    let r = import(Some(&svc), rows, json!({"on_conflict": "skip"}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, json!({"imported": 1, "skipped": 1}));
    // The existing account keeps its own password; the skipped row changed nothing.
    assert_eq!(login(&existing.email, PASSWORD).status, 200);
    assert_eq!(login(&existing.email, "U*U").status, 401);
    // An imported account without a hash exists but cannot sign in with a password.
    assert_eq!(login(&fresh, "anything at all").status, 401);
}

#[test]
fn only_a_service_token_imports() {
    let u = signup("import-user");
    let e = email("import-denied");
    let rows = json!([{"email": e}]);
    let anon = import(None, rows.clone(), json!({}));
    assert_eq!(anon.status, 401, "{}", anon.body);
    let user = import(Some(&u.access), rows, json!({}));
    assert_eq!(user.status, 403, "{}", user.body);
    let n: i64 = admin().query_one("select count(*) from baas.users where email = lower($1)", &[&e]).unwrap().get(0);
    assert_eq!(n, 0);
    // And from SQL, the API roles cannot call it at all.
    let mut db = admin();
    db.batch_execute("begin; set local role baas_user").unwrap();
    let err = db.query_one("select baas.import_users('[]')", &[]).unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
}
