-- Field operators' SQL face (issue 18, package A; sql/documents.sql, docs/operators.md):
-- baas._apply_operators on its own, and baas.patch_document with an operator patch as
-- the caller (baas.as_user), which is what PATCH over HTTP runs.
begin;
select plan(24);

-- The function alone: pure, exact, refusing with a code.
select is(baas._apply_operators('{"n": 123456789012345678901234567890}', '{"$inc": {"n": 1}}', now())::text,
          '{"n": 123456789012345678901234567891}', '$inc keeps every digit of a big integer');
select is(baas._apply_operators('{"n": 0.1}', '{"$inc": {"n": 0.2}}', now())::text,
          '{"n": 0.3}', '$inc of decimals is exact: 0.1 + 0.2 = 0.3');
select is(baas._apply_operators('{}', '{"$inc": {"a.b": 2}}', now()),
          '{"a": {"b": 2}}'::jsonb, 'a missing field counts as 0 and the objects on the way appear');
select is(baas._apply_operators('{"a": 1, "b": {"c": 2, "d": 3}}', '{"$set": {"a": [1]}, "$unset": ["b.c"]}', now()),
          '{"a": [1], "b": {"d": 3}}'::jsonb, '$set and $unset on nested paths');
select is(baas._apply_operators('{"t": [1, "x"]}', '{"$addToSet": {"t": {"$each": [1.0, "x", "y"]}}}', now()),
          '{"t": [1, "x", "y"]}'::jsonb, '$addToSet compares as jsonb does (1 = 1.0)');
select is(baas._apply_operators('{"t": [1, 2, 1, {"a": 1}]}', '{"$pull": {"t": {"$in": [1, {"a": 1}]}}}', now()),
          '{"t": [2]}'::jsonb, '$pull removes every equal element');
select is(baas._apply_operators('{"t": [1]}', '{"$push": {"t": 1}}', now()),
          '{"t": [1, 1]}'::jsonb, '$push appends even a value already there');
select is(baas._apply_operators('{"lo": 5, "hi": "b"}', '{"$min": {"lo": 3}, "$max": {"hi": "a", "new": 7}}', now()),
          '{"lo": 3, "hi": "b", "new": 7}'::jsonb, '$min and $max: numbers, strings, and a missing field is set');
select is(baas._apply_operators('{}', '{"$now": {"t": true}}', '2026-12-03 15:51:09.1234+00'),
          '{"t": "2026-12-03T15:51:09.1234+00:00"}'::jsonb, '$now writes the timestamp given, ISO 8601 in UTC');
set local timezone = 'Pacific/Auckland';
select is(((baas._apply_operators('{}', '{"$now": {"t": true}}', now()) ->> 't')::timestamptz = now()), true,
          '$now is the instant given, whatever the session time zone');
reset timezone;
select is(pg_temp.detail_of($$select baas._apply_operators('{"s": "x"}', '{"$inc": {"s": 1}}', now())$$),
          '22023 operator_type_mismatch', 'a wrong type: 22023 operator_type_mismatch');
select is(pg_temp.detail_of($$select baas._apply_operators('{}', '{"$inc": {"s": 1}, "s": 2}', now())$$),
          '22023 invalid_operator', 'a mix of operators and fields: 22023 invalid_operator');
select is(pg_temp.detail_of($$select baas._apply_operators('{}', '{"$rename": {"a": "b"}}', now())$$),
          '22023 invalid_operator', 'an unknown operator: invalid_operator');
select is(pg_temp.detail_of($$select baas._apply_operators('{}', '{"$set": {"a": 1}, "$inc": {"a.b": 1}}', now())$$),
          '22023 invalid_operator', 'a path and its prefix in one patch: invalid_operator');
select throws_ok($$select baas._apply_operators('{"a": 5}', '{"$set": {"a.b.c": 1}}', now())$$,
          '22023', '$set at "a.b.c": "a" is a number, not an object', 'the message names the path and the types');

-- Through patch_document as users, as HTTP runs it.
select baas.signup('a@ops.test', 'long enough pw') -> 'user' ->> 'id' as a \gset
select baas.signup('b@ops.test', 'long enough pw') -> 'user' ->> 'id' as b \gset
select baas.create_collection('ops_t', '{"schema": {"type": "object", "properties": {"n": {"type": "integer", "maximum": 3}}}}') is not null as created \gset
select (d ->> 'id') as doc from baas.as_user(:'a'::uuid,
    $$select baas.create_document('ops_t', '{"n": 1, "tags": ["x"]}')$$) d \gset
select set_config('t.doc', :'doc', false);

select is((select d -> 'data' from baas.as_user(:'a'::uuid, format(
              $$select baas.patch_document('ops_t', %L, '{"$inc": {"n": 1}, "$addToSet": {"tags": "y"}}')$$, :'doc')) d),
          '{"n": 2, "tags": ["x", "y"]}'::jsonb, 'the owner applies operators through baas.as_user');
select is((select (d ->> 'version')::int from baas.as_user(:'a'::uuid, format(
              $$select baas.patch_document('ops_t', %L, '{"$inc": {"n": 1}}', 2)$$, :'doc')) d),
          3, 'expected_version with an operator patch');
select is(pg_temp.outcome_as(:'a', format($$select baas.patch_document('ops_t', %L, '{"$inc": {"n": 1}}', 2)$$, :'doc')),
          '40001 version_conflict', 'a stale expected_version: version_conflict');
select is(pg_temp.outcome_as(:'a', format($$select baas.patch_document('ops_t', %L, '{"$inc": {"n": 1}}')$$, :'doc')),
          '23514 schema_violation', 'the collection''s JSON Schema judges the result');
select is(pg_temp.outcome_as(:'a', format($$select baas.patch_document('ops_t', %L, '{"$push": {"n": 1}}')$$, :'doc')),
          '22023 operator_type_mismatch', 'a wrong type through patch_document');
select is(pg_temp.outcome_as(:'a', format($$select baas.patch_document('ops_t', %L, '{"$inc": {"n": 1}, "x": 1}')$$, :'doc')),
          '22023 invalid_operator', 'a mixed patch through patch_document');
select is(pg_temp.outcome_as(:'b', format($$select baas.patch_document('ops_t', %L, '{"$inc": {"n": 1}}')$$, :'doc')),
          'P0002 document_not_found', 'a stranger cannot tell the document exists');
select is((select data from baas.documents where id = :'doc'::uuid), '{"n": 3, "tags": ["x", "y"]}'::jsonb,
          'the refused patches wrote nothing');
select is(pg_temp.outcome_as(:'a', format($$select baas.patch_document('ops_t', %L, '{"tags": null}')$$, :'doc')),
          'ok', 'a plain merge patch still works');

select * from finish();
rollback;
