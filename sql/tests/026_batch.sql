-- Batches' SQL face (issue 18, package B; sql/batch.sql): baas.batch as the caller
-- through baas.as_user, all or none, the failing operation named, invalid_batch, the
-- if_match forms, and the max_batch_operations setting.
begin;
select plan(34);

-- As a user (NULL: anonymous): 'ok' or 'SQLSTATE detail | message'.
create function pg_temp.batch_as(uid text, ops jsonb) returns text language plpgsql as $$
declare d text; m text;
begin
    perform baas.as_user(uid::uuid, format('select baas.batch(%L::jsonb)', ops));
    return 'ok';
exception when others then
    get stacked diagnostics d = pg_exception_detail, m = message_text;
    return sqlstate || ' ' || coalesce(d, '') || ' | ' || m;
end $$;
-- The answer of a batch as a user.
create function pg_temp.run_as(uid text, ops jsonb) returns jsonb language sql as $$
    select x from baas.as_user(uid::uuid, format('select baas.batch(%L::jsonb)', ops)) x
$$;

select baas.signup('a@batch.test', 'long enough pw') -> 'user' ->> 'id' as a \gset
select baas.signup('b@batch.test', 'long enough pw') -> 'user' ->> 'id' as b \gset
select baas.create_collection('bt') is not null as made \gset
select (d ->> 'id') as adoc from baas.as_user(:'a'::uuid,
    'select baas.create_document(''bt'', ''{"n": 1}'')') d \gset
select (d ->> 'id') as bdoc from baas.as_user(:'b'::uuid,
    'select baas.create_document(''bt'', ''{"secret": true}'')') d \gset
select (d ->> 'id') as bshared from baas.as_user(:'b'::uuid,
    format('select baas.create_document(''bt'', ''{"n": 0}'', %L::jsonb)', jsonb_build_object('read', jsonb_build_array('user:' || :'a')))) d \gset

-- Results in order, each operation the single request's function.
select is((select jsonb_path_query_array(r, '$.results[*].status')
             from pg_temp.run_as(:'a', jsonb_build_array(
                 jsonb_build_object('op', 'create', 'collection', 'bt', 'data', '{"k": "x"}'::jsonb, 'id', '01900000-0000-7000-8000-00000000b001'),
                 jsonb_build_object('op', 'patch', 'collection', 'bt', 'id', :'adoc', 'data', '{"n": 2}'::jsonb, 'if_match', 1),
                 jsonb_build_object('op', 'get', 'collection', 'bt', 'id', '01900000-0000-7000-8000-00000000b001'),
                 jsonb_build_object('op', 'replace', 'collection', 'bt', 'id', '01900000-0000-7000-8000-00000000b001', 'data', '{"k": "y"}'::jsonb, 'if_match', '"1"'),
                 jsonb_build_object('op', 'delete', 'collection', 'bt', 'id', '01900000-0000-7000-8000-00000000b001', 'if_match', 'W/"2"'))) r),
          '[201, 200, 200, 200, 204]', 'create, patch, get, replace, delete: their statuses in order');
select is((select d -> 'data' from baas.as_user(:'a'::uuid, format('select baas.get_document(''bt'', %L)', :'adoc')) d),
          '{"n": 2}', 'the batch committed with its statement');
select is((select count(*)::int from baas.documents where id = '01900000-0000-7000-8000-00000000b001'), 0,
          'the document it created and deleted is gone');
select is((select r -> 'results' -> 1 -> 'document' -> 'data'
             from pg_temp.run_as(:'a', jsonb_build_array(
                 jsonb_build_object('op', 'patch', 'collection', 'bt', 'id', :'adoc', 'data', '{"m": 1}'::jsonb),
                 jsonb_build_object('op', 'get', 'collection', 'bt', 'id', :'adoc'))) r),
          '{"m": 1, "n": 2}', 'a get sees the batch''s earlier writes');
select is((select r -> 'results' -> 0 -> 'document' -> 'data' -> 'big'
             from pg_temp.run_as(:'a', '[{"op": "create", "collection": "bt", "data": {"big": 123456789012345678901234567890.000000000000000001}}]') r)::text,
          '123456789012345678901234567890.000000000000000001', 'numbers keep every digit');

-- All or none: a failure undoes the earlier operations and names its index.
select is(pg_temp.batch_as(:'a', jsonb_build_array(
              jsonb_build_object('op', 'patch', 'collection', 'bt', 'id', :'adoc', 'data', '{"n": 99}'::jsonb),
              jsonb_build_object('op', 'create', 'collection', 'bt', 'data', '{}'::jsonb),
              jsonb_build_object('op', 'delete', 'collection', 'bt', 'id', '01900000-0000-7000-8000-0000000000ff'))),
          format('P0002 document_not_found | batch operation 2: document %s not found in bt', '01900000-0000-7000-8000-0000000000ff'),
          'a missing document: P0002 document_not_found, operation 2');
select is((select d -> 'data' -> 'n' from baas.as_user(:'a'::uuid, format('select baas.get_document(''bt'', %L)', :'adoc')) d),
          '2', 'the patch before it was rolled back');
select is((select count(*)::int from baas.documents where collection_id = (select id from baas.collections where name = 'bt')),
          4, 'and the create too');
select is(pg_temp.batch_as(:'a', jsonb_build_array(
              jsonb_build_object('op', 'create', 'collection', 'bt', 'data', '{}'::jsonb),
              jsonb_build_object('op', 'patch', 'collection', 'bt', 'id', :'bdoc', 'data', '{"x": 1}'::jsonb))),
          format('P0002 document_not_found | batch operation 1: document %s not found in bt', :'bdoc'),
          'a document the caller may not read answers as a missing one');
select is(pg_temp.batch_as(:'a', jsonb_build_array(
              jsonb_build_object('op', 'get', 'collection', 'bt', 'id', :'bdoc'))),
          format('P0002 document_not_found | batch operation 0: document %s not found in bt', :'bdoc'),
          'and so does a get of it');
select is(pg_temp.batch_as(:'a', jsonb_build_array(
              jsonb_build_object('op', 'create', 'collection', 'bt', 'data', '{}'::jsonb),
              jsonb_build_object('op', 'patch', 'collection', 'bt', 'id', :'bshared', 'data', '{"n": 5}'::jsonb))),
          '42501 forbidden | batch operation 1: you may read this document but not update it',
          'readable but not writable: 42501 forbidden, as the single request');
select is(pg_temp.batch_as(:'a', jsonb_build_array(
              jsonb_build_object('op', 'patch', 'collection', 'bt', 'id', :'adoc', 'data', '{"n": 5}'::jsonb, 'if_match', 1))),
          '40001 version_conflict | batch operation 0: document is at version 3, not 1', 'a stale if_match: 40001 version_conflict');
select is(pg_temp.batch_as(:'a', jsonb_build_array(
              jsonb_build_object('op', 'create', 'collection', 'nope', 'data', '{}'::jsonb))),
          'P0002 collection_not_found | batch operation 0: collection nope does not exist', 'a missing collection');
select is(pg_temp.batch_as(:'a', jsonb_build_array(
              jsonb_build_object('op', 'create', 'collection', 'bt', 'data', '[1]'::jsonb))),
          '22023 invalid_data | batch operation 0: data must be a JSON object', 'data that is not an object: invalid_data');
select is(pg_temp.batch_as(null, jsonb_build_array(
              jsonb_build_object('op', 'get', 'collection', 'bt', 'id', :'adoc'))),
          format('P0002 document_not_found | batch operation 0: document %s not found in bt', :'adoc'),
          'anonymous callers too: as the caller');

-- invalid_batch: nothing runs.
select is(pg_temp.batch_as(:'a', '{"op": "get"}'), '22023 invalid_batch | operations must be a JSON array of operations', 'not an array');
select is(pg_temp.batch_as(:'a', '[]'), '22023 invalid_batch | operations is empty: send at least one operation', 'empty');
select is(pg_temp.batch_as(:'a', jsonb_build_array(
              jsonb_build_object('op', 'patch', 'collection', 'bt', 'id', :'adoc', 'data', '{"n": 7}'::jsonb),
              jsonb_build_object('op', 'upsert', 'collection', 'bt'))),
          '22023 invalid_batch | batch operation 1: op must be one of create, replace, patch, delete, get (got "upsert")', 'an unknown op');
select is((select d -> 'data' -> 'n' from baas.as_user(:'a'::uuid, format('select baas.get_document(''bt'', %L)', :'adoc')) d),
          '2', 'a malformed batch ran nothing');
select is(pg_temp.batch_as(:'a', '[{"op": "get", "id": "x"}]'), '22023 invalid_batch | batch operation 0: collection is required (a collection name)', 'no collection');
select is(pg_temp.batch_as(:'a', '[{"op": "get", "collection": "bt"}, {"op": "delete", "collection": "bt"}]'),
          '22023 invalid_batch | batch operation 0: id is required for get (a document id)', 'no id');
select is(pg_temp.batch_as(:'a', '[{"op": "create", "collection": "bt"}]'), '22023 invalid_batch | batch operation 0: data is required for create (a JSON object)', 'no data');
select is(pg_temp.batch_as(:'a', '[{"op": "create", "collection": "bt", "data": {}, "color": 1}]'),
          '22023 invalid_batch | batch operation 0: unknown field "color"; an operation takes op, collection, id, data, acl and if_match', 'an unknown field');
select is(pg_temp.batch_as(:'a', '[{"op": "delete", "collection": "bt", "id": "x", "if_match": "banana"}]'),
          '22023 invalid_batch | batch operation 0: if_match must be a document version, e.g. 3 or "\"3\"" (got "banana")', 'a bad if_match');
select is(pg_temp.batch_as(:'a', '[{"op": "delete", "collection": "bt", "id": "x", "if_match": 1.5}]'),
          '22023 invalid_batch | batch operation 0: if_match must be a document version: a whole number from 1, or the ETag string, e.g. "\"3\""', 'a fractional if_match');
select is(pg_temp.batch_as(:'a', '[1]'), '22023 invalid_batch | batch operation 0: an operation must be a JSON object', 'an operation that is not an object');
select is(pg_temp.batch_as(:'a', jsonb_build_array(
              jsonb_build_object('op', 'patch', 'collection', 'bt', 'id', :'adoc', 'data', '{}'::jsonb, 'if_match', '*'))),
          'ok', 'if_match "*": no precondition, as If-Match: *');

-- if_match strings are read as the single routes read If-Match (input.rs if_match):
-- blanks around, W/, quotes, a +, leading zeros; each of these means version 999.
select is((select array_agg(f order by f) from unnest(array[' "999" ', '+999', '"+999"', 'W/"0999"',
                  '0000000000000000000999', E'\t999\u00a0']) f
            where pg_temp.batch_as(:'a', jsonb_build_array(jsonb_build_object('op', 'patch', 'collection', 'bt',
                      'id', :'adoc', 'data', '{}'::jsonb, 'if_match', f))) !~ '^40001 version_conflict \| .*, not 999$'),
          null, 'if_match forms the If-Match header takes');
select is((select array_agg(f::text order by f::text) from unnest(array['"3.0"', '"3e0"', '"\" 3\""', '"9223372036854775808"',
                  '"-1"', '"0"', '"+"', '"W/*"', '3.0', '10000000000000000000', '0']::jsonb[]) f
            where pg_temp.batch_as(:'a', jsonb_build_array(jsonb_build_object('op', 'patch', 'collection', 'bt',
                      'id', :'adoc', 'data', '{}'::jsonb, 'if_match', f))) !~ '^22023 invalid_batch \| batch operation 0: if_match must be'),
          null, 'if_match forms the If-Match header refuses: fractions, exponents, blanks inside quotes, over 2^63-1, below 1');
select matches(pg_temp.batch_as(:'a', jsonb_build_array(jsonb_build_object('op', 'patch', 'collection', 'bt',
                   'id', :'adoc', 'data', '{}'::jsonb, 'if_match', 9223372036854775807))),
          '^40001 version_conflict \| .*, not 9223372036854775807$', 'the largest version as a JSON number');

-- The cap: baas.settings.max_batch_operations (1..1000, default 100).
select is((select max_batch_operations from baas.settings), 100, 'max_batch_operations defaults to 100');
update baas.settings set max_batch_operations = 2;
select is(pg_temp.batch_as(:'a', '[{"op": "get", "collection": "bt", "id": "x"}, {"op": "get", "collection": "bt", "id": "x"}, {"op": "get", "collection": "bt", "id": "x"}]'),
          '22023 invalid_batch | a batch holds at most 2 operations (baas.settings.max_batch_operations); this one has 3', 'too many operations');
select throws_ok('update baas.settings set max_batch_operations = 1001', '23514', null, 'at most 1000');

select is((select count(*)::int from baas.security_lints() where object like '%batch%'), 0, 'no lint about batches');

select * from finish();
rollback;
