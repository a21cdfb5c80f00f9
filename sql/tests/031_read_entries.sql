-- Counting a whole collection from read entries (issue 20, item 1; sql/documents.sql,
-- baas.read_entries): a filterless baas.count as a user or anonymous caller reads the
-- entries of the caller's principals, and must give exactly the number of documents
-- the documents' read policy lets that caller see, through every change of ACL, owner,
-- role membership and existence; the plan is an index-only scan; after a restore (no
-- ready mark) the count comes from the documents until the entries are rebuilt.
begin;
select plan(44);

-- Five accounts and an anonymous one (principal `anonymous`); a and b in role crew, c
-- in role lead, and lead inside crew.
create temp table who (name text primary key, id uuid);
insert into who select n, (baas.signup(n || '@entries.test', 'long enough pw') -> 'user' ->> 'id')::uuid
  from unnest(array['a', 'b', 'c', 'd', 'e']) n;
update baas.settings set anonymous_sign_in = true;
insert into who select 'anon_account', (baas.sign_in_anonymously() -> 'user' ->> 'id')::uuid;
select baas.create_role('crew'), baas.create_role('lead');
select baas.add_role_member('crew', (select id from who where name = 'a'));
select baas.add_role_member('crew', (select id from who where name = 'b'));
select baas.add_role_member('lead', (select id from who where name = 'c'));
select baas.add_role_to_role('crew', 'lead');
select baas.create_collection('wc') is not null as ok \gset
select id as wc from baas.collections where name = 'wc' \gset

-- 600 documents: a random owner (or none) and a random read list over every kind of
-- principal, the owner's own name included now and then (one entry, not two).
select setseed(0.2012);
create temp table pool as
select array['public', 'authenticated', 'registered', 'anonymous', 'role:crew', 'role:lead',
             'user:' || (select id from who where name = 'a'), 'user:' || (select id from who where name = 'd'),
             'user:' || (select id from who where name = 'e')] as p;
create function pg_temp.random_acl() returns text[] language sql volatile as $$
    select coalesce(array_agg(x order by x), '{}') from unnest((select p from pool)) x where random() < 0.12 $$;
create function pg_temp.random_owner() returns uuid language sql volatile as $$
    select case when random() < 0.1 then null else (select id from who order by random() limit 1) end $$;
insert into baas.documents (collection_id, id, owner, data, acl_read)
select :wc, baas.uuid7(), o, jsonb_build_object('g', g), acl || case when o is not null and random() < 0.1 then array['user:' || o] else '{}' end
  from (select g, pg_temp.random_owner() o, pg_temp.random_acl() acl from generate_series(1, 600) g) s;

-- The count through baas.count, and the truth: the documents the caller's policies show.
create function pg_temp.wcount(uid uuid) returns int language sql as $$
    select (x #>> '{}')::int from baas.as_user(uid, $q$ select baas.count('wc') $q$) x $$;
create function pg_temp.truth(uid uuid) returns int language sql as $$
    select count(*)::int from baas.as_user(uid, format('select d.id from baas.documents d where d.collection_id = %s',
                                                       (select id from baas.collections where name = 'wc'))) $$;
create function pg_temp.all_agree() returns text language sql as $$
    select coalesce(string_agg(format('%s: count %s, policy %s', coalesce(w.name, 'anonymous'), pg_temp.wcount(w.id), pg_temp.truth(w.id)), '; ')
                    filter (where pg_temp.wcount(w.id) <> pg_temp.truth(w.id)), 'agree')
      from (select name, id from who union all select null, null) w $$;

select is(pg_temp.all_agree(), 'agree', 'every user and anonymous: the count is what the read policy shows');
select ok((select count(distinct pg_temp.truth(id)) from who) >= 4, 'and the users see different numbers (the test can tell them apart)');
select is((select count(*)::int from baas.read_entries where collection_id = :wc),
          (select count(*)::int from (select distinct d.id, p from baas.documents d, unnest(d.acl_read || ('user:' || d.owner::text)) p
                                       where d.collection_id = :wc and p is not null) x),
          'one entry per document and reading principal, the owner named once');

-- The user's count reads the entries' key alone (index-only), not the documents. (In
-- this one transaction the visibility map is empty, so the planner would pick a bitmap
-- scan; vacuumed, as in the benchmark, it picks the index-only scan by itself.)
set local enable_seqscan = off;
set local enable_bitmapscan = off;
select ok(exists (select from pg_temp.plan_as((select id::text from who where name = 'a'),
    format('select count(distinct r.doc_id) from baas.read_entries r where r.collection_id = %s and r.principal = any ((select baas.principals())::text[])', :wc),
    'null') l where l like '%Index Only Scan using read_entries_pkey%'),
    'the count is an index-only scan of the read entries');
reset enable_seqscan;
reset enable_bitmapscan;

-- Changes of every kind, as the DBA and through the API: ACLs rewritten, documents
-- handed over, grants and revokes, deletes, new documents, data-only patches.
update baas.documents set acl_read = pg_temp.random_acl() where collection_id = :wc and random() < 0.2;
update baas.documents set owner = pg_temp.random_owner() where collection_id = :wc and random() < 0.1;
delete from baas.documents where collection_id = :wc and random() < 0.1;
insert into baas.documents (collection_id, id, owner, data, acl_read)
select :wc, baas.uuid7(), pg_temp.random_owner(), jsonb_build_object('g', g), pg_temp.random_acl() from generate_series(601, 700) g;
update baas.documents set data = data || '{"seen": true}' where collection_id = :wc and random() < 0.3;
select baas.as_user((select id from who where name = 'd'), format($$ select baas.grant('wc', %L, 'read', 'role:lead') $$,
    (select id from baas.documents where collection_id = :wc and owner = (select id from who where name = 'd')
        and not 'role:lead' = any (acl_read) order by id limit 1))) is not null as ok \gset
select baas.as_user((select id from who where name = 'd'), format($$ select baas.revoke('wc', %L, 'read', 'authenticated') $$,
    (select id from baas.documents where collection_id = :wc and owner = (select id from who where name = 'd')
        and 'authenticated' = any (acl_read) order by id limit 1))) is not null as ok \gset
select baas.as_user((select id from who where name = 'e'), format($$ select baas.transfer('wc', %L, %L) $$,
    (select id from baas.documents where collection_id = :wc and owner = (select id from who where name = 'e') order by id limit 1),
    (select id from who where name = 'b'))) is not null as ok \gset
select baas.as_user((select id from who where name = 'b'), format($$ select baas.delete_document('wc', %L) $$,
    (select id from baas.documents where collection_id = :wc and owner = (select id from who where name = 'b') order by id limit 1))) is not null as ok \gset
select is(pg_temp.all_agree(), 'agree', 'after rewrites, transfers, deletes, inserts, patches, a grant and a revoke');

-- Role membership is the caller's principals, not the entries: it shows at once.
select baas.remove_role_member('crew', (select id from who where name = 'b'));
select baas.remove_role_from_role('crew', 'lead');
select is(pg_temp.all_agree(), 'agree', 'after b leaves crew and lead leaves crew');

-- A deleted owner's documents go with it (on delete cascade), are orphaned or are
-- handed to an heir, by the collection's on_owner_delete.
delete from baas.users where id = (select id from who where name = 'e');
delete from who where name = 'e';
select is(pg_temp.all_agree(), 'agree', 'after an account and its documents are deleted');
select baas.set_collection_options('wc', '{"on_owner_delete": "orphan"}') is not null as ok \gset
delete from baas.users where id = (select id from who where name = 'anon_account');
delete from who where name = 'anon_account';
select is(pg_temp.all_agree(), 'agree', 'after an account''s documents are orphaned');
select baas.set_collection_options('wc', format('{"on_owner_delete": {"transfer": "%s"}}', (select id from who where name = 'a'))::jsonb) is not null as ok \gset
delete from baas.users where id = (select id from who where name = 'c');
delete from who where name = 'c';
select is(pg_temp.all_agree(), 'agree', 'after an account''s documents are handed to an heir');

-- A read list of 256 user principals (the API's most) is one narrow row each.
insert into baas.documents (collection_id, id, owner, data, acl_read)
select :wc, baas.uuid7(), (select id from who where name = 'b'), '{"big_acl": true}',
       array(select 'user:' || gen_random_uuid() from generate_series(1, 255)) || ('user:' || (select id from who where name = 'd'));
select is(pg_temp.all_agree(), 'agree', 'a document with 256 readers is written and counted');
select is((select count(*)::int from baas.read_entries r where r.collection_id = :wc
             and not exists (select from baas.documents d where d.id = r.doc_id)), 0, 'no entry outlives its document');

-- The service role and the DBA count everything.
select is(baas.count('wc')::int, (select count(*)::int from baas.documents where collection_id = :wc),
          'the DBA counts every document');
create function pg_temp.count_as_service() returns int language plpgsql as $$
declare n int;
begin
    perform set_config('baas.claims', '{"role": "baas_service"}', true);
    set local role baas_service;
    n := baas.count('wc');
    reset role;
    return n;
end $$;
select is(pg_temp.count_as_service(), (select count(*)::int from baas.documents where collection_id = :wc), 'the service role counts every document');
-- A custom role that inherits baas_service sees every document (documents_service), and counts them all.
create role pgtap_custom_service;
grant baas_service to pgtap_custom_service;
create function pg_temp.count_as_custom_service() returns int language plpgsql as $$
declare n int;
begin
    perform set_config('baas.claims', '{"role": "baas_service"}', true);
    set local role pgtap_custom_service;
    n := baas.count('wc');
    reset role;
    return n;
end $$;
select is(pg_temp.count_as_custom_service(), (select count(*)::int from baas.documents where collection_id = :wc), 'a custom service role counts every document');
-- A filtered count and a list's count=true agree with the same truth.
select is((select (x #>> '{}')::int from baas.as_user((select id from who where name = 'a'), $q$ select baas.list_documents('wc', lim => 0, with_count => true) -> 'count' $q$) x),
          pg_temp.truth((select id from who where name = 'a')), 'a list''s count=true without a filter');

-- Nobody but the extension writes the entries, and nobody reads another's.
select is(pg_temp.sqlstate_as('baas_user', format($$ insert into baas.read_entries values (%s, 'public', gen_random_uuid()) $$, :wc)), '42501', 'users cannot write read entries');
select is(pg_temp.sqlstate_as('baas_service', $$ delete from baas.read_entries $$), '42501', 'nor can the service role');
select is((select count(*)::int from baas.as_user(null, format('select r.doc_id from baas.read_entries r where r.collection_id = %s', :wc))),
          (select count(*)::int from baas.read_entries r where r.collection_id = :wc and r.principal = 'public'),
          'anonymous reads only the entries naming public');

-- require_aal2: an aal1 session counts nothing, as it reads nothing.
select baas.set_collection_options('wc', '{"require_aal2": true}') is not null as ok \gset
select is(pg_temp.wcount((select id from who where name = 'a')), 0, 'an aal1 caller counts nothing in a require_aal2 collection');
select is(pg_temp.all_agree(), 'agree', 'and still agrees with the policy for everyone');
select baas.set_collection_options('wc', '{"require_aal2": false}') is not null as ok \gset

-- After a restore no collection is marked ready (the marks are not dumped): counts come
-- from the documents, right, until a DBA rebuilds the entries, which gives the same rows.
create temp table kept as select * from baas.read_entries;
delete from baas._read_entries_ready;
delete from baas.read_entries;
select is(pg_temp.all_agree(), 'agree', 'without ready entries the count comes from the documents');
select lives_ok($$ select baas.rebuild_index_entries() $$, 'rebuild_index_entries');
select ok(baas._read_entries_ready(:wc), 'the collection is ready again');
select set_eq('select * from baas.read_entries', 'select * from kept', 'the rebuild makes the rows the trigger made');
select is(pg_temp.all_agree(), 'agree', 'and counts agree again');

-- The count does read the entries: take one of a's away (as the DBA, the mark kept)
-- and a's count drops by one, while the documents' policy still shows the document.
create temp table taken as
select r.* from baas.read_entries r join baas.documents d on d.id = r.doc_id
 where r.collection_id = :wc and r.principal = 'user:' || (select id from who where name = 'a')
   and d.owner = (select id from who where name = 'a') and d.acl_read = '{}' limit 1;
delete from baas.read_entries r using taken t where (r.collection_id, r.principal, r.doc_id) = (t.collection_id, t.principal, t.doc_id);
select is(pg_temp.wcount((select id from who where name = 'a')), pg_temp.truth((select id from who where name = 'a')) - 1,
          'a filterless count is answered from the read entries');
insert into baas.read_entries select * from taken;
select is(pg_temp.all_agree(), 'agree', 'and with the entry back, counts agree');

-- A new collection is ready at once; dropping one takes its entries and mark along.
select baas.create_collection('wc2') is not null as ok \gset
select ok(baas._read_entries_ready((select id from baas.collections where name = 'wc2')), 'a new collection is ready from its creation');
select baas.drop_collection('wc');
select is((select count(*)::int from baas.read_entries where collection_id = :wc)
        + (select count(*)::int from baas._read_entries_ready where collection_id = :wc), 0, 'drop_collection leaves no entry and no mark');

-- Index entries (the counting copy of a btree index, which carries the read list) and
-- long read lists: a document read by 256 users by id is written anyway, and the
-- index counts through the documents until a rebuild finds every entry fitting again.
select baas.create_collection('wi') is not null as ok \gset
select id as wi from baas.collections where name = 'wi' \gset
insert into baas.documents (collection_id, id, owner, data, acl_read)
select :wi, baas.uuid7(), (select id from who where name = 'b'), jsonb_build_object('n', g % 5),
       case when g % 3 = 0 then array['user:' || (select id from who where name = 'a')] else '{}' end
  from generate_series(1, 60) g;
select lives_ok($$ select baas.create_index('wi', 'n', concurrently => false) $$, 'a btree index on wi');
select ok(baas._btree_index_id(:wi, 'n') is not null, 'its entries serve counts');
create function pg_temp.wi_agree(f text) returns boolean language sql as $$
    select (x #>> '{}')::int = (select count(*)::int from baas.as_user((select id from who where name = 'a'),
                                  format('select d.id from baas.documents d where d.collection_id = %s and d.data @> %L',
                                         (select id from baas.collections where name = 'wi'), f)))
      from baas.as_user((select id from who where name = 'a'), format('select baas.count(%L, %L)', 'wi', f)) x $$;
select lives_ok(format($$ insert into baas.documents (collection_id, id, owner, data, acl_read)
    select %s, baas.uuid7(), %L, '{"n": 1}', array(select 'user:' || gen_random_uuid() from generate_series(1, 255)) || 'user:%s'::text $$,
    :wi, (select id from who where name = 'b'), (select id from who where name = 'a')),
    'a document read by 256 users is written in a collection with a btree index');
select ok(baas._btree_index_id(:wi, 'n') is null, 'the index stops serving counts');
select ok(pg_temp.wi_agree('{"n": 1}'), 'and the count, from the documents, is still what a may read');
select lives_ok($$ select baas.rebuild_index_entries() $$, 'a rebuild while the long list is there');
select ok(baas._btree_index_id(:wi, 'n') is null, 'does not make the index serve counts');
select lives_ok($$ select baas.create_index('wi', 'other', concurrently => false) $$, 'nor does building another index');
select ok(baas._btree_index_id(:wi, 'other') is null, 'its entries lack that document, so it does not serve counts either');
update baas.documents set acl_read = array['user:' || (select id from who where name = 'a')] where collection_id = :wi and cardinality(acl_read) = 256;
select lives_ok($$ select baas.rebuild_index_entries() $$, 'with the list shortened, a rebuild');
select ok(baas._btree_index_id(:wi, 'n') is not null and pg_temp.wi_agree('{"n": 1}'), 'makes the index serve counts again, and they agree');

-- The read policy keeps its one text, and the triggers that keep the entries stay on.
select is_empty('select * from baas.security_lints()', 'the security lints find nothing');
alter table baas.documents disable trigger documents_read_entries_update;
select ok(exists (select from baas.security_lints() l where l.lint = 'read_entries_unkept' and l.object like '%documents_read_entries_update%'),
          'a disabled read-entries trigger is reported');
alter table baas.documents enable trigger documents_read_entries_update;
alter policy read_entries_read on baas.read_entries using (true);
select ok(exists (select from baas.security_lints() l where l.lint = 'policy_drift' and l.object like '%read_entries_read%'),
          'a loosened read-entries policy is reported as policy_drift');

-- TRUNCATE (a DBA's) empties the counting copies with the documents.
truncate baas.documents cascade;
select is((select count(*)::int from baas.read_entries) + (select count(*)::int from baas.index_entries), 0,
          'truncating the documents empties the read entries and the index entries');

select * from finish();
rollback;
