-- Issue 13: index builds run in a background worker. In one transaction the worker
-- never sees the queued build (it starts after commit), so this drives the steps it
-- runs (backfill, DDL, finish, failure, the next-job choice) by hand.
begin;
select plan(29);

select baas.signup('ib@builds.test', 'long enough pw') -> 'user' ->> 'id' as u \gset
select baas.create_collection('ib', '{"default_acl": {"read": ["authenticated"]}}') is not null as ok \gset
select id as cid from baas.collections where name = 'ib' \gset
insert into baas.documents (collection_id, id, owner, data, acl_read)
select :cid, baas.uuid7(), :'u', jsonb_build_object('n', g % 10), '{authenticated}' from generate_series(1, 12) g;

-- Queued: a row in state building, no index yet, no lock taken on baas.documents.
select is(baas.create_index('ib', 'n') ->> 'state', 'building', 'create_index queues a build');
select id as ix, name as ixname from baas.indexes where collection_id = :cid and path = 'n' \gset
select ok(to_regclass('baas.' || :'ixname') is null, 'no index is made in the request''s transaction');
select ok(not exists (select from pg_locks where locktype = 'relation' and relation = 'baas.documents'::regclass
                       and pid = pg_backend_pid() and mode = 'ShareLock'), 'and no SHARE lock holds other writes');
select is(baas.get_index('ib', 'n') ->> 'state', 'building', 'get_index shows the build');
select is(baas.list_indexes('ib') -> 0 ->> 'state', 'building', 'list_indexes shows it');
select is(pg_temp.detail_of($$ select baas.create_index('ib', 'n') $$), '23505 index_exists', 'a second build of the same index is refused');
select is(pg_temp.detail_of($$ select baas.get_index('ib', 'nothing') $$), 'P0002 index_not_found', 'get_index of a missing index');
select is(pg_temp.detail_of($$ select baas.create_index('ib', 'a..b') $$), '22023 invalid_query', 'a bad path is refused at once');
select is(baas._btree_index_id(:cid, 'n'), null, 'counts do not use entries of a build in progress');

-- New writes get entries from the trigger at once; the backfill adds the rest in batches
-- and keeps the trigger's.
insert into baas.documents (collection_id, id, owner, data, acl_read) values (:cid, baas.uuid7(), :'u', '{"n": 3}', '{authenticated}');
select is((select count(*)::int from baas.index_entries where index_id = :ix), 1, 'a write during the build has its entry');
select baas._index_build_backfill(:ix, null, 5) as after1 \gset
select is((select count(*)::int from baas.index_entries where index_id = :ix), 6, 'one batch of 5 (plus the trigger''s, kept)');
select baas._index_build_backfill(:ix, :'after1', 5) as after2 \gset
select baas._index_build_backfill(:ix, :'after2', 5) as after3 \gset
select is(baas._index_build_backfill(:ix, :'after3', 5), null, 'null when there is nothing left');
select is((select count(*)::int from baas.index_entries where index_id = :ix), 13, 'one entry per document');

select matches(baas._index_ddl(:ix, true), '^create index concurrently "?documents_c', 'the worker''s statement is CREATE INDEX CONCURRENTLY');
select lives_ok(format('%s', baas._index_ddl(:ix, false)), 'the same statement builds the index (here plainly)');
select ok(baas._index_build_finish(:ix), 'finish');
select is(baas.get_index('ib', 'n') ->> 'state', 'ready', 'then it is ready');
select ok(baas._btree_index_id(:cid, 'n') is not null, 'and counts use its entries');
select is(baas._index_ddl(:ix, true), null, 'a ready index is not built again');

-- A failed build: its reason is kept, its entries go, the trigger ignores it.
select (baas.create_index('ib', 'm') ->> 'name') as mname \gset
select id as mx from baas.indexes where name = :'mname' \gset
select baas._index_build_failed(:mx, 'index row size 9000 exceeds maximum');
select is(baas.get_index('ib', 'm') ->> 'error', 'index row size 9000 exceeds maximum', 'a failed build says why');
insert into baas.documents (collection_id, id, owner, data, acl_read) values (:cid, baas.uuid7(), :'u', '{"m": 3}', '{authenticated}');
select is((select count(*)::int from baas.index_entries where index_id = :mx), 0, 'a failed build gets no entries');
select is(baas.create_index('ib', 'm') ->> 'state', 'building', 'creating it again replaces the failed build');

-- The worker's next job: a build whose worker is gone is failed; unfinished indexes
-- without a live build are dropped first.
update baas.indexes set worker_pid = 2147483000 where name = :'mname';
select is(baas.get_index('ib', 'm') ->> 'state', 'failed', 'a build whose worker is gone shows as failed at once');
select is(baas._index_build_next(), null, 'the next job: none (the lost build is recorded as failed)');
select matches(baas.get_index('ib', 'm') ->> 'error', 'stopped before it finished', 'with the reason');
select format('create index %I on baas.documents ((data)) where collection_id = %s', 'documents_c' || :cid || '_btree_000000000000', :cid) \gexec
select is(baas._index_build_next(), jsonb_build_object('drop', 'documents_c' || :cid || '_btree_000000000000'), 'an index without its build is dropped first');

select is(baas.create_index('ib', 'k', concurrently => false) ->> 'state', 'ready', 'concurrently => false builds it in this transaction');
select baas.create_index('ib', 'z') is not null as ok \gset
select lives_ok($$ select baas.drop_index('ib', 'z') $$, 'a build in progress can be dropped (the worker drops what it made)');
select is(pg_temp.detail_of($$ select baas.get_index('ib', 'z') $$), 'P0002 index_not_found', 'and it is gone');

select * from finish();
rollback;
