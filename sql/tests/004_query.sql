-- The query language as a DBA meets it: errors with SQLSTATE and code, filters
-- through the SQL door, and indexes the planner uses under row-level security.
begin;
select plan(10);


select baas.signup('q@query.test', 'long enough pw') -> 'user' ->> 'id' as u \gset
select baas.create_collection('qt', '{"default_acl": {"read": ["authenticated"]}}') is not null as ok \gset
insert into baas.documents (collection_id, id, owner, data, acl_read)
select c.id, baas.uuid7(), :'u', jsonb_build_object('n', g, 'even', g % 2 = 0, 'tags', jsonb_build_array('t' || (g % 10))), '{authenticated}'
  from baas.collections c, generate_series(1, 5000) g where c.name = 'qt';

select is(pg_temp.detail_of($$ select * from baas.find('qt', '{"n": {"$regex": "x"}}') $$), '22023 invalid_query', 'unknown operator');
select is(pg_temp.detail_of($$ select * from baas.find('qt', '[]') $$), '22023 invalid_query', 'filter must be an object');
select is(pg_temp.detail_of($$ select * from baas.find('qt', '{}', 'n,,x') $$), '22023 invalid_query', 'bad order');
select is(pg_temp.detail_of($$ select * from baas.find('qt', lim => 5000) $$), '22023 invalid_query', 'limit over 1000');

select is((select count(*)::int from baas.as_user(:'u', $$ select * from baas.find('qt', '{"n": {"$gt": 4990}}') $$)), 10, 'a range filter as the user');
select is((select (x #>> '{}')::int from baas.as_user(:'u', $$ select baas.count('qt', '{"even": true, "tags": {"$contains": "t4"}}') $$) x), 500, 'count with two conditions');
select is((select count(*)::int from baas.as_user(null, $$ select * from baas.find('qt', '{"n": 1}') $$)), 0, 'anonymous sees nothing: the policy still decides');

select lives_ok($$ select baas.create_index('qt', 'n') $$, 'create_index');
select ok(exists (select from pg_indexes where tablename = 'documents' and indexdef like '%jfield(data, ''n''::text) baas.jsonb_lp_ops%WHERE (collection_id = %'),
          'a partial btree index on the leakproof field expression');

-- The plan a signed-in user gets for an equality filter uses it.
create temp table plan_lines (line text);
grant insert on plan_lines to baas_user;
select set_config('t.sql', format('explain select 1 from baas.documents d where d.collection_id = %s and %s',
    (select id from baas.collections where name = 'qt'), baas.compile_query('{"n": 77}', null, null) ->> 'where'), false);
select set_config('t.params', (baas.compile_query('{"n": 77}', null, null) -> 'params')::text, false);
set local role baas_user;
select set_config('baas.claims', jsonb_build_object('sub', :'u', 'role', 'baas_user')::text, true);
do $$ declare l text; begin
    for l in execute current_setting('t.sql') using current_setting('t.params')::jsonb loop
        insert into plan_lines values (l);
    end loop;
end $$;
reset role;
select ok(exists (select from plan_lines where line like '%Index%documents_c%'), 'the equality filter is an index scan under RLS');

select * from finish();
rollback;
