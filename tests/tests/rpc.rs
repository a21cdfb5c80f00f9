//! The RPC door end to end (issue 17, package A; docs/rpc.md): the team's own functions
//! in an exposed schema called over HTTP as the caller — every result shape, argument
//! mapping and its errors, who may call, writes under row-level security, errors the
//! function chooses, timeouts, functions created and dropped while the proxy runs, and
//! hostile names. Real cluster, real proxy, real HTTP.

mod common;
use common::*;
use serde_json::{json, Value};
use std::sync::OnceLock;

/// The schema `api` (exposed) and `hidden` (not), once per binary.
fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        admin()
            .batch_execute(
                r#"
create schema api;
create schema hidden;
grant usage on schema api, hidden to baas_anon, baas_user, baas_service;
select baas.expose_schema('api');
create function hidden.nope() returns integer language sql immutable as 'select 1';
create function api.add(a integer, b integer default 10) returns integer language sql immutable as 'select a + b';
create function api.hello(name text) returns text language sql stable as $$select 'hello ' || name$$;
create function api.nothing() returns void language sql as 'select';
create function api.twice(x numeric) returns numeric language sql immutable as 'select x * 2';
create function api.pair(a integer, out x integer, out y text) language sql immutable as 'select a, a::text';
create function api.series(n integer) returns table (i integer, label text, raw bytea)
    language sql stable as $$select g, 'n' || g, convert_to('x' || g, 'UTF8') from generate_series(1, n) g$$;
create function api.nums(n integer) returns setof integer language sql stable as 'select generate_series(1, n)';
create function api.echo(jsonb) returns jsonb language sql immutable as 'select $1';
create function api.doc(j json) returns json language sql immutable as 'select j';
create function api.total(variadic xs integer[]) returns integer language sql immutable as 'select sum(x)::integer from unnest(xs) x';
create function api.tags(t text[]) returns integer language sql immutable as 'select cardinality(t)';
create type api.point2 as (x integer, y integer);
create function api.manhattan(p api.point2) returns integer language sql immutable as 'select abs(p.x) + abs(p.y)';
create function api.origin(empty boolean) returns api.point2 language sql immutable
    as 'select case when empty then null else row(0, 0)::api.point2 end';
create function api.over(a integer) returns text language sql immutable as $$select 'integer'$$;
create function api.over(a text) returns text language sql immutable as $$select 'text'$$;
create function api.pick(a integer) returns text language sql immutable as $$select 'by a'$$;
create function api.pick(b text) returns text language sql immutable as $$select 'by b'$$;
create function api.whoami() returns text language sql stable as $$select coalesce(baas.uid()::text, 'anonymous')$$;
create function api.members_only() returns text language sql stable as $$select 'welcome'$$;
revoke execute on function api.members_only() from public;
grant execute on function api.members_only() to baas_user;
create function api._internal() returns integer language sql immutable as 'select 42';
create function api.bump() returns integer language sql volatile as 'select 1';
create function api.xid_if_assigned() returns text language sql stable as 'select pg_current_xact_id_if_assigned()::text';

create table api.notes (id bigserial primary key, owner uuid not null, body text not null);
alter table api.notes enable row level security;
alter table api.notes force row level security;
create policy notes_own on api.notes using (owner = baas.uid()) with check (owner = baas.uid());
grant select, insert on api.notes to baas_user;
grant usage on sequence api.notes_id_seq to baas_user;
create function api.add_note(body text, owner uuid default null) returns bigint language sql volatile
    as $$insert into api.notes (owner, body) values (coalesce(add_note.owner, baas.uid()), add_note.body) returning id$$;
create function api.my_notes() returns setof api.notes language sql stable as 'select * from api.notes order by id';

create function api.book(seat integer) returns text language plpgsql volatile as $$
begin
    if seat = 13 then
        raise exception 'seat % is taken', seat using errcode = 'PT409', detail = 'seat_taken', hint = 'pick another';
    end if;
    return 'booked';
end $$;
create function api.teapot() returns void language plpgsql as $$begin perform baas.raise(418, 'teapot', 'I am a teapot', 'try coffee'); end$$;
create function api.gone() returns void language plpgsql as $$begin raise exception 'it left' using errcode = 'PT410', detail = 'Left at noon.'; end$$;
create function api.plain() returns void language plpgsql as $$begin raise exception 'out of stock' using hint = 'come back tomorrow'; end$$;
create function api.bad_status() returns void language plpgsql as $$begin perform baas.raise(500, 'oops', 'not a client error'); end$$;
create function api.slow(secs float8) returns void language sql volatile as 'select pg_sleep(secs)';

-- Review findings (issue 17): each below failed before its fix.
create function api.check_stable(ok boolean) returns void language plpgsql stable as
    $$begin if not ok then perform baas.raise(409, 'checked', 'a stable void function ran'); end if; end$$;
create function api.check_immutable() returns void language plpgsql immutable as
    $$begin raise exception 'an immutable void function ran' using errcode = 'PT422', detail = 'checked'; end$$;
create function api.exact(x numeric) returns numeric language sql immutable as 'select x';
create function api.json_text(j json) returns text language sql immutable as 'select j::text';
create function api.len_char(code char) returns integer language sql immutable as 'select octet_length(code)';
create function api.len_bit(b bit) returns integer language sql immutable as 'select length(b)';
create function api.unnamed_out(a integer, out integer, out text) language sql immutable as 'select a, a::text';
create function api.points() returns table (p api.point2) language sql stable
    as 'select row(g, -g)::api.point2 from generate_series(1, 2) g';
create function api.amb(a integer) returns text language sql immutable as $$select 'one'$$;
create function api.amb(a integer, b integer default 1) returns text language sql immutable as $$select 'two'$$;
revoke execute on function api.amb(integer, integer) from public;
create function api.find_it() returns void language plpgsql as
    $$begin raise exception 'no such thing' using detail = 'not_found'; end$$;
create table api.counter (n integer);
grant select, insert on api.counter to baas_anon;
create function api.count_one() returns integer language sql volatile as 'insert into api.counter values (1) returning n';
create function api.sneaky() returns integer language plpgsql stable as 'begin return api.count_one(); end';
create function api.decimals(n integer) returns numeric[] language sql immutable
    as $$select array['1.50', '123456789012345678901234.5']::numeric[]$$;
create function api.blobs() returns bytea[] language sql immutable as $$select array['\x0102'::bytea, null]$$;
create domain api.money2 as numeric(20, 2);
create function api.price() returns api.money2 language sql immutable as 'select 12345678901234567.10';
create schema api2;
grant usage on schema api2 to baas_anon, baas_user, baas_service;
select baas.expose_schema('api2');
create function api.shadow() returns text language sql stable as $$select 'api'$$;
revoke execute on function api.shadow() from public;
grant execute on function api.shadow() to baas_user;
create function api2.shadow() returns text language sql stable as $$select 'api2'$$;
create function api."wé""i'rd=>f"("ä""'=>b" integer) returns integer language sql immutable as 'select $1 * 2';
"#,
            )
            .expect("set up the api schema");
    });
}

fn rpc(name: &str, token: Option<&str>, args: Value) -> Resp {
    setup();
    call("POST", &format!("/v1/rpc/{name}"), token, Some(&args.to_string()))
}

fn rpc_get(name_and_query: &str, token: Option<&str>) -> Resp {
    setup();
    call("GET", &format!("/v1/rpc/{name_and_query}"), token, None)
}

#[test]
fn every_result_shape() {
    let add = rpc("add", None, json!({"a": 1, "b": 2}));
    assert_eq!((add.status, add.body.clone()), (200, json!(3)), "scalar");
    assert_eq!(rpc("add", None, json!({"a": 1})).body, json!(11), "default");
    assert_eq!(rpc("hello", None, json!({"name": "ann"})).body, json!("hello ann"));
    let v = rpc("nothing", None, json!({}));
    assert_eq!((v.status, v.body.clone()), (204, Value::Null), "void");
    assert_eq!(rpc("twice", None, json!({"x": "1.10"})).body, json!("2.20"), "numeric as an exact string");
    assert_eq!(rpc("pair", None, json!({"a": 7})).body, json!({"x": 7, "y": "7"}), "one row (OUT parameters)");
    assert_eq!(rpc("origin", None, json!({"empty": false})).body, json!({"x": 0, "y": 0}), "a composite");
    let n = rpc("origin", None, json!({"empty": true}));
    assert_eq!((n.status, n.body.clone()), (200, Value::Null), "a NULL composite is null");
    assert_eq!(
        rpc("series", None, json!({"n": 2})).body,
        json!([{"i": 1, "label": "n1", "raw": "eDE="}, {"i": 2, "label": "n2", "raw": "eDI="}]),
        "a set of rows; bytea as base64"
    );
    assert_eq!(rpc("series", None, json!({"n": 0})).body, json!([]), "an empty set");
    assert_eq!(rpc("nums", None, json!({"n": 3})).body, json!([1, 2, 3]), "a set of scalars");
    assert_eq!(
        rpc("echo", None, json!({"any": [1, {"b": null}], "s": "x"})).body,
        json!({"any": [1, {"b": null}], "s": "x"}),
        "one unnamed jsonb parameter takes the whole object"
    );
    let raw = request_at(&base(), "POST", "/v1/rpc/doc", None, &[], Some(r#"{"j": {"z": 1, "a": [true]}}"#));
    assert_eq!((raw.status, raw.body.clone()), (200, json!({"z": 1, "a": [true]})), "json passes through");
    assert_eq!(rpc("total", None, json!({"xs": [1, 2, 3]})).body, json!(6), "variadic");
    assert_eq!(rpc("tags", None, json!({"t": ["a", "b\"c", "d\\e"]})).body, json!(3), "arrays");
    assert_eq!(rpc("manhattan", None, json!({"p": {"x": -2, "y": 3}})).body, json!(5), "objects to composites");
    assert_eq!(rpc("pick", None, json!({"b": "x"})).body, json!("by b"), "overloads told apart by names");
    assert_eq!(rpc("pick", None, json!({"a": 1})).body, json!("by a"));
}

#[test]
fn get_takes_query_parameters_for_stable_functions_only() {
    let r = rpc_get("add?a=2&b=5", None);
    assert_eq!((r.status, r.body.clone()), (200, json!(7)));
    assert_eq!(rpc_get("hello?name=a+b%26c", None).body, json!("hello a b&c"));
    assert_eq!(rpc_get("nums?n=2", None).body, json!([1, 2]));
    let r = rpc_get("add?a=1&a=2", None);
    assert_eq!((r.status, r.code()), (400, "invalid_arguments"), "{}", r.body);
    let r = rpc_get("bump", None);
    assert_eq!((r.status, r.code()), (405, "method_not_allowed"), "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("POST"), "{}", r.body);
    assert_eq!(rpc("bump", None, json!({})).body, json!(1), "POST calls it");
    let r = call("PUT", "/v1/rpc/add", None, Some("{}"));
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST, GET"));
}

/// Resolving and calling a function reads the catalog only: a call that writes nothing
/// takes no transaction id (each one would age the database toward wraparound
/// vacuums), and so a read-only standby can serve it (replicas.rs).
#[test]
fn a_call_that_writes_nothing_takes_no_transaction_id() {
    setup();
    let u = signup("rpc_xid");
    let r = rpc_get("xid_if_assigned", Some(&u.access));
    assert_eq!((r.status, r.body.clone()), (200, Value::Null), "GET: no xid");
    let r = rpc("xid_if_assigned", Some(&u.access), json!({}));
    assert_eq!((r.status, r.body.clone()), (200, Value::Null), "POST of a function that writes nothing: no xid");
}

#[test]
fn argument_mapping_errors_are_400s_that_say_what_is_wrong() {
    let r = rpc("add", None, json!({"a": 1, "c": 2}));
    assert_eq!((r.status, r.code()), (400, "invalid_arguments"), "{}", r.body);
    let m = r.body["error"]["message"].as_str().unwrap();
    assert!(m.contains("\"c\"") && m.contains("add(a integer, b integer default)"), "unknown, and what it takes: {m}");
    let r = rpc("add", None, json!({"b": 1}));
    assert_eq!((r.status, r.code()), (400, "invalid_arguments"), "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("\"a\" is missing"), "{}", r.body);
    let r = rpc("add", None, json!({"a": "one"}));
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "a bad value is Postgres's 22P02: {}", r.body);
    let r = rpc("add", None, json!({"a": 2147483648i64}));
    assert_eq!(r.status, 400, "{}", r.body);
    let r = rpc("over", None, json!({"a": 1}));
    assert_eq!((r.status, r.code()), (400, "ambiguous_function"), "{}", r.body);
    let m = r.body["error"]["message"].as_str().unwrap();
    assert!(m.contains("over(a integer)") && m.contains("over(a text)"), "{m}");
    let r = call("POST", "/v1/rpc/add", None, Some("[1, 2]"));
    assert_eq!((r.status, r.code()), (400, "invalid_json"), "{}", r.body);
    let r = rpc("manhattan", None, json!({"p": {"x": "left"}}));
    assert_eq!(r.status, 400, "{}", r.body);
}

#[test]
fn who_may_call_is_postgres_s_grant() {
    let u = signup("rpc_who");
    let anon = rpc("members_only", None, json!({}));
    assert_eq!((anon.status, anon.code()), (404, "function_not_found"), "no EXECUTE: 404 as if missing: {}", anon.body);
    let missing = rpc("no_such_function", None, json!({}));
    assert_eq!((missing.status, missing.code()), (404, "function_not_found"));
    assert_eq!(anon.body["error"]["message"].as_str().unwrap().replace("members_only", "no_such_function"), missing.body["error"]["message"].as_str().unwrap(),
               "existence is not revealed");
    let r = rpc("members_only", Some(&u.access), json!({}));
    assert_eq!((r.status, r.body.clone()), (200, json!("welcome")));
    assert_eq!(rpc("whoami", Some(&u.access), json!({})).body, json!(u.id), "baas.uid() is the caller");
    assert_eq!(rpc("whoami", None, json!({})).body, json!("anonymous"));
    // Not reachable: internal names, schemas not exposed, Postgres's own functions.
    for name in ["_internal", "nope", "version", "pg_sleep", "expose_schema", "rpc"] {
        let r = rpc(name, Some(&service_token()), json!({}));
        assert_eq!((r.status, r.code()), (404, "function_not_found"), "{name}: {}", r.body);
    }
}

#[test]
fn a_function_writes_under_row_level_security_as_the_caller() {
    let a = signup("rpc_rls_a");
    let b = signup("rpc_rls_b");
    let r = rpc("add_note", Some(&a.access), json!({"body": "mine"}));
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.body.as_i64().unwrap();
    let r = rpc("add_note", Some(&b.access), json!({"body": "forged", "owner": a.id}));
    assert_eq!((r.status, r.code()), (403, "forbidden"), "another user's row is refused by the policy: {}", r.body);
    let r = rpc("add_note", None, json!({"body": "anon"}));
    assert_eq!(r.status, 401, "anonymous has no INSERT grant: {}", r.body);
    let mine = rpc("my_notes", Some(&a.access), json!({})).body;
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine[0]["id"], json!(id));
    assert_eq!(mine[0]["owner"], json!(a.id));
    assert_eq!(rpc("my_notes", Some(&b.access), json!({})).body, json!([]), "b sees none of a's");
    // baas.as_user answers exactly as HTTP does.
    let q = "select * from baas.rpc('my_notes', '{}')";
    let row: Value = admin().query_one("select x from baas.as_user($1::text::uuid, $2) x", &[&a.id, &q]).unwrap().get(0);
    assert_eq!(row["is_void"], json!(false));
    let body: Value = serde_json::from_str(row["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, mine);
}

#[test]
fn errors_a_function_raises_choose_status_and_code() {
    let r = rpc("book", None, json!({"seat": 13}));
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body, json!({"error": {"code": "seat_taken", "message": "seat 13 is taken", "hint": "pick another"}}));
    assert_eq!(rpc("book", None, json!({"seat": 12})).body, json!("booked"));
    let r = rpc("teapot", None, json!({}));
    assert_eq!(r.status, 418, "{}", r.body);
    assert_eq!(r.body, json!({"error": {"code": "teapot", "message": "I am a teapot", "hint": "try coffee"}}));
    let r = rpc("gone", None, json!({}));
    assert_eq!(r.status, 410, "{}", r.body);
    assert_eq!(r.body, json!({"error": {"code": "gone", "message": "it left", "detail": "Left at noon."}}), "a default code per status");
    let r = rpc("plain", None, json!({}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body, json!({"error": {"code": "raised", "message": "out of stock", "hint": "come back tomorrow"}}));
    let r = rpc("bad_status", None, json!({}));
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "baas.raise refuses a status outside 400-499: {}", r.body);
}

/// The request's statement timeout stops a function (anonymous callers: 1 s by
/// default). A `set statement_timeout` on the function itself does not: Postgres arms
/// the timer when the statement starts (docs/rpc.md).
#[test]
fn a_statement_timeout_is_503_query_timeout() {
    setup();
    let r = request_at(&base(), "POST", "/v1/rpc/slow", None, &[], Some(r#"{"secs": 30}"#));
    assert_eq!((r.status, r.code()), (503, "query_timeout"), "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("anonymous"), "{}", r.body);
    let u = signup("rpc_slow");
    let r = rpc("slow", Some(&u.access), json!({"secs": 0.01}));
    assert_eq!(r.status, 204, "{}", r.body);
}

#[test]
fn functions_created_and_dropped_while_running_follow_at_once() {
    setup();
    let r = rpc("fresh", None, json!({}));
    assert_eq!(r.status, 404);
    admin().batch_execute("create function api.fresh() returns text language sql stable as $$select 'new'$$").unwrap();
    let r = rpc("fresh", None, json!({}));
    assert_eq!((r.status, r.body.clone()), (200, json!("new")), "callable at once");
    admin().batch_execute("drop function api.fresh()").unwrap();
    let r = rpc("fresh", None, json!({}));
    assert_eq!((r.status, r.code()), (404, "function_not_found"), "gone at once");
    // A schema exposed later serves its functions; unexposed, it stops.
    admin().batch_execute("select baas.expose_schema('hidden')").unwrap();
    assert_eq!(rpc("nope", None, json!({})).body, json!(1));
    admin().batch_execute("select baas.unexpose_schema('hidden')").unwrap();
    assert_eq!(rpc("nope", None, json!({})).status, 404);
}

#[test]
fn hostile_names_are_404_or_400_never_500() {
    setup();
    let names = [
        "x); drop table api.notes; --",
        "add\"; select 1; --",
        "a'b",
        "..",
        "add%00",
        "%2E%2E%2Fadd",
        "h%C3%A9llo",
        "%E2%80%AEadd",
        &"a".repeat(100),
        "ADD",
        "add%20",
        "pg_catalog.version",
        "api.add",
    ];
    for n in names {
        let r = call("POST", &format!("/v1/rpc/{n}"), None, Some("{}"));
        assert!(r.status == 404 || r.status == 400, "{n}: {} {}", r.status, r.body);
        let r = call("GET", &format!("/v1/rpc/{n}?x=1"), None, None);
        assert!(r.status == 404 || r.status == 400, "{n}: {} {}", r.status, r.body);
    }
    for key in ["x); drop table api.notes; --", "a\"b", "a'b", "..", "\u{202e}a", "é", ""] {
        let r = rpc("add", None, json!({"a": 1, key: 2}));
        assert_eq!((r.status, r.code()), (400, "invalid_arguments"), "{key:?}: {}", r.body);
        let r = call("GET", &format!("/v1/rpc/add?a=1&{}=2", enc(key)), None, None);
        assert_eq!(r.status, 400, "{key:?}: {}", r.body);
    }
    for value in ["1); drop table api.notes; --", "'", "\\", "\"", "{", "😀"] {
        let r = rpc("hello", None, json!({"name": value}));
        assert_eq!(r.body, json!(format!("hello {value}")), "values are data");
        let r = rpc("add", None, json!({"a": value}));
        assert_eq!(r.status, 400, "{value:?}: {}", r.body);
    }
    let n: i64 = admin().query_one("select count(*) from pg_catalog.pg_class where oid = 'api.notes'::regclass", &[]).unwrap().get(0);
    assert_eq!(n, 1, "the table is still there");
}

/// A STABLE or IMMUTABLE void function is called (an unread result was optimised away).
#[test]
fn stable_and_immutable_void_functions_run() {
    assert_eq!(rpc("check_stable", None, json!({"ok": true})).status, 204);
    let r = rpc("check_stable", None, json!({"ok": false}));
    assert_eq!((r.status, r.code()), (409, "checked"), "{}", r.body);
    let r = rpc_get("check_stable?ok=false", None);
    assert_eq!((r.status, r.code()), (409, "checked"), "GET too: {}", r.body);
    let r = rpc("check_immutable", None, json!({}));
    assert_eq!((r.status, r.code()), (422, "checked"), "{}", r.body);
}

/// Numbers keep every digit on the way in; json arguments pass through exactly.
#[test]
fn numbers_keep_their_digits() {
    setup();
    let r = request_at(&base(), "POST", "/v1/rpc/exact", None, &[], Some(r#"{"x": 1234567890123456789012345}"#));
    assert_eq!((r.status, r.body.clone()), (200, json!("1234567890123456789012345")));
    let r = request_at(&base(), "POST", "/v1/rpc/exact", None, &[], Some(r#"{"x": 0.1000000000000000000000000001}"#));
    assert_eq!(r.body, json!("0.1000000000000000000000000001"));
    let r = request_at(&base(), "POST", "/v1/rpc/json_text", None, &[], Some(r#"{"j": 1.00000000000000000001}"#));
    assert_eq!((r.status, r.body.clone()), (200, json!("1.00000000000000000001")));
    let r = request_at(&base(), "POST", "/v1/rpc/json_text", None, &[], Some(r#"{"j": {"n": 123456789012345678901}}"#));
    assert_eq!(r.body, json!("{\"n\": 123456789012345678901}"));
    // Results: numeric arrays and domains over numeric are exact strings too; bytea[] base64.
    assert_eq!(rpc("decimals", None, json!({"n": 1})).body, json!(["1.50", "123456789012345678901234.5"]));
    assert_eq!(rpc("blobs", None, json!({})).body, json!(["AQI=", null]));
    assert_eq!(rpc("price", None, json!({})).body, json!("12345678901234567.10"));
}

/// `character` and `bit` parameters take values of any length (no silent char(1)).
#[test]
fn character_and_bit_parameters_are_not_truncated() {
    assert_eq!(rpc("len_char", None, json!({"code": "abc"})).body, json!(3));
    assert_eq!(rpc_get("len_char?code=abcd", None).body, json!(4));
    let r = rpc("len_bit", None, json!({"b": "1011"}));
    assert_eq!((r.status, r.body.clone()), (200, json!(4)));
}

#[test]
fn unnamed_out_parameters_and_a_table_of_one_composite_column() {
    let r = rpc("unnamed_out", None, json!({"a": 5}));
    assert_eq!((r.status, r.body.clone()), (200, json!({"column1": 5, "column2": "5"})));
    let r = rpc("points", None, json!({}));
    assert_eq!((r.status, r.body.clone()), (200, json!([{"p": {"x": 1, "y": -1}}, {"p": {"x": 2, "y": -2}}])));
}

/// An overload the caller cannot execute still makes Postgres's choice ambiguous: 400,
/// never 500.
#[test]
fn a_hidden_overload_makes_the_call_ambiguous_not_a_500() {
    let r = rpc("amb", None, json!({"a": 1}));
    assert_eq!((r.status, r.code()), (400, "ambiguous_function"), "{}", r.body);
    assert!(!r.body["error"]["message"].as_str().unwrap().contains("b integer"), "the hidden one is not named: {}", r.body);
}

#[test]
fn get_takes_one_value_for_an_array_or_variadic_parameter() {
    assert_eq!(rpc_get("tags?t=x", None).body, json!(1));
    assert_eq!(rpc_get("tags?t=x&t=y", None).body, json!(2));
    let r = rpc_get("total?xs=5", None);
    assert_eq!((r.status, r.body.clone()), (200, json!(5)));
}

#[test]
fn a_plain_raise_with_a_house_code_gets_its_status() {
    let r = rpc("find_it", None, json!({}));
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.body, json!({"error": {"code": "not_found", "message": "no such thing"}}));
}

/// GET runs in a read-only transaction: a STABLE function that calls a writer is refused.
#[test]
fn get_is_read_only() {
    setup();
    let count = || -> i64 { admin().query_one("select count(*) from api.counter", &[]).unwrap().get(0) };
    let before = count();
    let r = rpc_get("sneaky", None);
    assert_eq!((r.status, r.code()), (405, "read_only"), "{}", r.body);
    assert_eq!(count(), before, "nothing written");
    let r = rpc("sneaky", None, json!({}));
    assert_eq!((r.status, r.body.clone()), (200, json!(1)), "POST may write");
    assert_eq!(count(), before + 1);
}

/// The first exposed schema that has a function of the name decides, for every caller.
#[test]
fn a_name_is_one_function_for_every_caller() {
    let u = signup("rpc_shadow");
    let r = rpc("shadow", Some(&u.access), json!({}));
    assert_eq!((r.status, r.body.clone()), (200, json!("api")));
    let r = rpc("shadow", None, json!({}));
    assert_eq!((r.status, r.code()), (404, "function_not_found"), "no fall-through to api2.shadow: {}", r.body);
}

/// A name the DBA chose with quotes, `=>` and non-ASCII letters is called like any other.
#[test]
fn names_with_quotes_arrows_and_unicode_are_called() {
    setup();
    let name = "wé\"i'rd=>f";
    let r = call("POST", &format!("/v1/rpc/{}", enc(name)), None, Some(&json!({"ä\"'=>b": 21}).to_string()));
    assert_eq!((r.status, r.body.clone()), (200, json!(42)));
    let r = call("GET", &format!("/v1/rpc/{}?{}=4", enc(name), enc("ä\"'=>b")), None, None);
    assert_eq!((r.status, r.body.clone()), (200, json!(8)));
    let r = call("POST", &format!("/v1/rpc/{}", enc(name)), None, Some(r#"{"ä": 1}"#));
    assert_eq!((r.status, r.code()), (400, "invalid_arguments"), "{}", r.body);
}
