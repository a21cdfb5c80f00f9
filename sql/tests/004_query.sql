-- The query language as a DBA meets it: errors with SQLSTATE and code, filters
-- through the SQL door, and indexes the planner uses under row-level security.
begin;
select plan(36);


select baas.signup('q@query.test', 'long enough pw') -> 'user' ->> 'id' as u \gset
select baas.create_collection('qt', '{"default_acl": {"read": ["authenticated"]}}') is not null as ok \gset
insert into baas.documents (collection_id, id, owner, data, acl_read)
select c.id, baas.uuid7(), :'u', jsonb_build_object('n', g, 'even', g % 2 = 0, 'tags', jsonb_build_array('t' || (g % 10))), '{authenticated}'
  from baas.collections c, generate_series(1, 5000) g where c.name = 'qt';

select is(pg_temp.detail_of($$ select * from baas.find('qt', '{"n": {"$regexp": "x"}}') $$), '22023 invalid_query', 'unknown operator');
select is(pg_temp.detail_of($$ select * from baas.find('qt', '{"n": {"$regex": "(x)\\1"}}') $$), '22023 invalid_query', 'a back-reference in a pattern');
select is(pg_temp.detail_of($$ select * from baas.find('qt', '[]') $$), '22023 invalid_query', 'filter must be an object');
select is(pg_temp.detail_of($$ select * from baas.find('qt', '{}', 'n,,x') $$), '22023 invalid_query', 'bad order');
select is(pg_temp.detail_of($$ select * from baas.find('qt', lim => 5000) $$), '22023 invalid_query', 'limit over 1000');

select is((select count(*)::int from baas.as_user(:'u', $$ select * from baas.find('qt', '{"n": {"$gt": 4990}}') $$)), 10, 'a range filter as the user');
select is((select (x #>> '{}')::int from baas.as_user(:'u', $$ select baas.count('qt', '{"even": true, "tags": {"$contains": "t4"}}') $$) x), 500, 'count with two conditions');
select is((select count(*)::int from baas.as_user(null, $$ select * from baas.find('qt', '{"n": 1}') $$)), 0, 'anonymous sees nothing: the policy still decides');

select lives_ok($$ select baas.create_index('qt', 'n', concurrently => false) $$, 'create_index in this transaction');
select ok(exists (select from pg_indexes where tablename = 'documents' and indexdef like '%jfield(data, ''n''::text) baas.jsonb_lp_ops%WHERE (collection_id = %'),
          'a partial btree index on the leakproof field expression');

-- The plan a signed-in user gets for an equality filter uses it.
select ok(exists (select from pg_temp.plan_as(:'u',
    format('select 1 from baas.documents d where d.collection_id = %s and %s',
           (select id from baas.collections where name = 'qt'), baas._compile_query('{"n": 77}', null, null) ->> 'where'),
    baas._compile_query('{"n": 77}', null, null) -> 'params') l where l like '%Index%documents_c%'),
    'the equality filter is an index scan under RLS');

-- Counts from index entries: with a btree index, a one-field count reads
-- baas.index_entries, and must see exactly what the documents' read policy lets
-- the caller see, through every change of data, ACL, owner and existence.
select baas.signup('v@query.test', 'long enough pw') -> 'user' ->> 'id' as v \gset
select baas.create_collection('qc') is not null as ok \gset
insert into baas.documents (collection_id, id, owner, data, acl_read)
select c.id, baas.uuid7(), case when g <= 100 then :'u'::uuid else :'v'::uuid end,
       jsonb_build_object('bucket', g % 10), case when g > 100 and g % 20 = 3 then array['user:' || :'u'] else '{}' end
  from baas.collections c, generate_series(1, 200) g where c.name = 'qc';
select lives_ok($$ select baas.create_index('qc', 'bucket', concurrently => false) $$, 'create_index fills the entries of existing documents');
create function pg_temp.cnt(who uuid, f text) returns int language sql as $$
    select (x #>> '{}')::int from baas.as_user(who, format('select baas.count(%L, %L)', 'qc', f)) x $$;
create function pg_temp.found(who uuid, f text) returns int language sql as $$
    select count(*)::int from baas.as_user(who, format('select * from baas.find(%L, %L, lim => 1000)', 'qc', f)) $$;
-- u owns 10 of bucket 3 and may read v's 5 with g % 20 = 3; v sees its own 10.
select is(pg_temp.cnt(:'u', '{"bucket": 3}'), 15, 'count: own documents plus those shared by ACL');
select is(pg_temp.cnt(:'v', '{"bucket": 3}'), 10, 'count: another user sees only its own');
select is(pg_temp.cnt(null, '{"bucket": 3}'), 0, 'count: anonymous sees none');
select is(pg_temp.cnt(:'u', '{"bucket": {"$ne": 3}}'), pg_temp.found(:'u', '{"bucket": {"$ne": 3}}'), 'count $ne agrees with find');
-- v revokes u's read on one shared document, transfers another to u, deletes a third;
-- u moves one of its own to bucket 3.
select baas.as_user(:'v', format($$ select baas.revoke('qc', %L, 'read', 'user:%s') $$,
    (select id from baas.documents where owner = :'v' and acl_read <> '{}' order by id limit 1), :'u')) is not null as ok \gset
select baas.as_user(:'v', format($$ select baas.transfer('qc', %L, %L) $$,
    (select id from baas.documents where owner = :'v' and data = '{"bucket": 3}' and acl_read = '{}' order by id limit 1), :'u')) is not null as ok \gset
select baas.as_user(:'v', format($$ select baas.delete_document('qc', %L) $$,
    (select id from baas.documents where owner = :'v' and acl_read <> '{}' order by id desc limit 1))) is not null as ok \gset
select baas.as_user(:'u', format($$ select baas.patch_document('qc', %L, '{"bucket": 3}') $$,
    (select id from baas.documents where owner = :'u' and data = '{"bucket": 4}' order by id limit 1))) is not null as ok \gset
select is(pg_temp.cnt(:'u', '{"bucket": 3}'), 15 - 1 + 1 - 1 + 1, 'count follows revoke, transfer, delete and patch');
select is(pg_temp.cnt(:'u', '{"bucket": 3}'), pg_temp.found(:'u', '{"bucket": 3}'), 'and agrees with find');
select is(pg_temp.cnt(:'v', '{"bucket": 3}'), 10 - 1 - 1, 'the previous owner no longer counts what it gave away or deleted');

-- The count is an index-only scan of the entries for a signed-in user.
set local enable_seqscan = off;
select ok(exists (select from pg_temp.plan_as(:'u',
    format('select count(*) from baas.index_entries e where e.index_id = %s and %s',
           baas._btree_index_id((select id from baas.collections where name = 'qc'), 'bucket'),
           baas._compile_query('{"bucket": 3}', null, null) -> 'entry' ->> 'where'),
    baas._compile_query('{"bucket": 3}', null, null) -> 'params') l where l like '%Index Only Scan using index_entries_value_idx%'),
    'the count is an index-only scan');
reset enable_seqscan;
select is(pg_temp.sqlstate_as('baas_user', $$ insert into baas.index_entries values (1, gen_random_uuid(), '3', null, '{public}') $$), '42501', 'users cannot write index entries');
-- After a restore (entries not dumped, so no index is marked ready) counts stay right
-- through the documents, until a DBA rebuilds the entries.
delete from baas._index_entries_ready;
delete from baas.index_entries;
select is(pg_temp.cnt(:'u', '{"bucket": 3}'), 15, 'without ready entries the count comes from the documents');
select is(baas.rebuild_index_entries(), 2, 'rebuild_index_entries rebuilds every btree index');
select is(pg_temp.cnt(:'u', '{"bucket": 3}'), 15, 'and counts from entries agree again');
select ok(baas._btree_index_id((select id from baas.collections where name = 'qc'), 'bucket') is not null, 'the index is ready again');
select baas._btree_index_id((select id from baas.collections where name = 'qc'), 'bucket') as qc_index \gset
select lives_ok($$ select baas.drop_index('qc', 'bucket') $$, 'drop_index');
select is((select count(*)::int from baas.index_entries where index_id = :qc_index), 0, 'dropping the index drops its entries');
select is(pg_temp.cnt(:'u', '{"bucket": 3}'), 15, 'without the index the count is the same');

-- Kept plans: baas.find keeps each compiled query's plan per backend. The same query
-- text in one session, first as the DBA (row-level security does not apply), then as
-- each kind of caller, must still show each caller exactly what it may read: bucket 5
-- holds 20 documents, 10 of u and 10 of v, none shared.
select is((select count(*)::int from baas.find('qc', '{"bucket": 5}', lim => 1000)), 20, 'kept plan: the DBA sees all 20');
select is(pg_temp.found(:'u', '{"bucket": 5}'), 10, 'kept plan: then u sees only its 10');
select is(pg_temp.found(:'v', '{"bucket": 5}'), 10, 'kept plan: then v only its 10');
select is((select count(*)::int from baas.as_user(:'u', $$ select * from baas.find('qc', '{"bucket": 5}', lim => 1000) x where x ->> 'owner' <> baas.uid()::text $$)), 0,
          'kept plan: and none of them is another user''s');
select is(pg_temp.found(null, '{"bucket": 5}'), 0, 'kept plan: anonymous sees none');
select is((select count(*)::int from baas.find('qc', '{"bucket": 5}', lim => 1000)), 20, 'kept plan: the DBA again sees all 20');
-- A grant made after the plan was kept is seen at once.
select baas.as_user(:'v', format($$ select baas.grant('qc', %L, 'read', 'user:%s') $$,
    (select id from baas.documents where owner = :'v' and data = '{"bucket": 5}' order by id limit 1), :'u')) is not null as ok \gset
select is(pg_temp.found(:'u', '{"bucket": 5}'), 11, 'kept plan: a new grant shows at once');

-- An error Postgres raises while a kept plan runs reaches the caller as raised: here a
-- row policy's uid() cast fails on a malformed subject claim (22P02, no detail).
create function pg_temp.find_error() returns text language plpgsql as $$
declare d text;
begin
    perform set_config('baas.claims', '{"role": "baas_user", "sub": "not-a-uuid"}', true);
    perform set_config('role', 'baas_user', true);
    perform baas.find('qc', '{"bucket": 5}');
    return 'no error';
exception when others then
    get stacked diagnostics d = pg_exception_detail;
    return sqlstate || ':' || coalesce(d, '');
end $$;
select is(pg_temp.find_error(), '22P02:', 'an error inside a kept plan keeps its SQLSTATE and detail');

select * from finish();
rollback;
