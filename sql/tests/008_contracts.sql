-- What HTTP clients are promised on top of the document functions: If-Match on ACL and
-- owner changes, the current version with every conflict, a next cursor on list pages,
-- and principals that must exist when an ACL is written.
begin;
select plan(29);

-- As a user: 'ok' or 'SQLSTATE detail hint' (hint: the current version of a conflict).
create function pg_temp.hint_as(uid text, q text) returns text language plpgsql as $$
declare d text; h text;
begin
    perform set_config('baas.claims', jsonb_build_object('sub', uid, 'role', 'baas_user')::text, true);
    perform set_config('role', 'baas_user', true);
    execute q;
    reset role;
    return 'ok';
exception when others then
    get stacked diagnostics d = pg_exception_detail, h = pg_exception_hint;
    return sqlstate || ' ' || coalesce(d, '') || ' ' || coalesce(h, '');
end $$;

select baas.signup('o@contract.test', 'long enough pw') -> 'user' ->> 'id' as o \gset
select baas.signup('p@contract.test', 'long enough pw') -> 'user' ->> 'id' as p \gset
select baas.create_collection('k') is not null as created \gset
select baas.create_role('crew');
select d ->> 'id' as doc from baas.as_user(:'o', $$ select baas.create_document('k', '{"n": 1}') $$) d \gset

-- 1. If-Match on ACL changes: a stale version is refused like a stale document write.
select is(pg_temp.hint_as(:'o', format('select baas.patch_document(''k'', %L, ''{"n": 2}'')', :'doc')), 'ok', 'a write moves the document to version 2');
select is(pg_temp.hint_as(:'o', format('select baas.set_acl(''k'', %L, ''{"read": ["public"]}'', 1)', :'doc')),
          '40001 version_conflict 2', 'set_acl with a stale version: version_conflict, current version in HINT');
select is((select version from baas.documents where id = :'doc'), 2::bigint,
          'the refused ACL change changed nothing');
select is(pg_temp.hint_as(:'o', format('select baas.set_acl(''k'', %L, ''{"read": ["public"]}'', 2)', :'doc')), 'ok', 'set_acl with the current version');
select is((select acl_read from baas.documents where id = :'doc'), array['public'], 'and the ACL changed');
select is(pg_temp.hint_as(:'o', format('select baas.set_acl(''k'', %L, ''{"read": []}'')', :'doc')), 'ok', 'set_acl without a version still works');
select is(pg_temp.hint_as(:'o', format('select baas.patch_document(''k'', %L, ''{}'', 1)', :'doc')),
          '40001 version_conflict 4', 'a stale document write also carries the current version');

-- 2. ...and on owner changes.
select is(pg_temp.hint_as(:'o', format('select baas.transfer(''k'', %L, %L, 3)', :'doc', :'p')),
          '40001 version_conflict 4', 'transfer with a stale version: version_conflict, current version in HINT');
select is((select owner::text from baas.documents where id = :'doc'), :'o', 'the refused transfer changed nothing');
select is(pg_temp.hint_as(:'o', format('select baas.transfer(''k'', %L, %L, 4)', :'doc', :'p')), 'ok', 'transfer with the current version');
select is((select owner::text from baas.documents where id = :'doc'), :'p', 'the document changed hands');
select is(pg_temp.hint_as(:'p', format('select baas.transfer(''k'', %L, %L)', :'doc', :'o')), 'ok', 'transfer without a version still works');
-- Called directly (API roles may execute it), the owner change cannot tell a document the
-- caller may not manage from an id that does not exist.
select id as kid from baas.collections where name = 'k' \gset
select is(pg_temp.hint_as(:'p', format('select baas._set_document_owner(%s, %L, %L, null)', :kid, :'doc', :'p')),
          'P0002 document_not_found ', 'another user''s document, asked directly: not found');
select is(pg_temp.hint_as(:'p', format('select baas._set_document_owner(%s, %L, %L, null)', :kid, baas.uuid7(), :'p')),
          'P0002 document_not_found ', 'a free id: the same answer');

-- 3. List pages: next is the last id of a full page, null on a short one.
select count(*) as made from baas.as_user(:'o', $$ select baas.create_document('k', jsonb_build_object('i', i)) from generate_series(1, 4) i $$) \gset
select baas.list_documents('k', lim => 2) as page1 \gset
select is(:'page1'::jsonb ->> 'next', :'page1'::jsonb -> 'items' -> 1 ->> 'id', 'a full page: next is its last id');
select baas.list_documents('k', lim => 2, after => (:'page1'::jsonb ->> 'next')::uuid) as page2 \gset
select is(jsonb_array_length(:'page2'::jsonb -> 'items'), 2, 'after => next gives the next page');
select ok(not (:'page2'::jsonb -> 'items') @> jsonb_build_array(:'page1'::jsonb -> 'items' -> 1)
          and (:'page1'::jsonb -> 'items') @> jsonb_build_array(:'page1'::jsonb -> 'items' -> 1), 'without repeating the last item');
select baas.list_documents('k', lim => 2, after => (:'page2'::jsonb ->> 'next')::uuid) as page3 \gset
select is(jsonb_array_length(:'page3'::jsonb -> 'items'), 1, 'the last page has the one document left');
select ok((:'page3'::jsonb ? 'next') and :'page3'::jsonb -> 'next' = 'null', 'and next is null: the end');
select is((select x -> 'next' from baas.as_user(:'p', $$ select baas.list_documents('k', lim => 10) $$) x), 'null'::jsonb,
          'a user seeing fewer than a page gets next null');
select baas.as_user(:'p', $$ select baas.create_document('k', '{"n": 9}') $$) is not null as made \gset
select is((select jsonb_array_length(x -> 'items') from baas.as_user(:'p', $$ select baas.list_documents('k', '{"n": {"$exists": true}}', lim => 5) $$) x), 1,
          'pages follow the filter and the policies (p sees only its own document)');

-- 4. Principals must exist when written.
select is(pg_temp.hint_as(:'o', format('select baas.grant(''k'', d ->> ''id'', ''read'', %L) from baas.find(''k'', lim => 1) d', 'user:' || gen_random_uuid())),
          '22023 unknown_principal ', 'grant to an unknown user: unknown_principal');
select is(pg_temp.hint_as(:'o', 'select baas.create_document(''k'', ''{}'', ''{"read": ["role:nope"]}'')'),
          '22023 unknown_principal ', 'an ACL naming an unknown role is refused');
select is(pg_temp.hint_as(:'o', format('select baas.create_document(''k'', ''{}'', %L)', jsonb_build_object('read', jsonb_build_array('role:crew', 'user:' || :'p')))),
          'ok', 'existing roles and users are accepted');
select throws_ok($$ select baas.create_collection('k2', '{"default_acl": {"read": ["role:nope"]}}') $$, '22023',
                 'unknown principal role:nope: no such role', 'collection options are checked too, naming the principal');
select is(pg_temp.detail_of($$ select baas.create_collection('k3', '{"create": ["user:00000000-0000-0000-0000-000000000000"]}') $$),
          '22023 unknown_principal', 'a collection''s create list too');

-- A deleted account stays in ACLs that named it (ids are never reused), and those
-- ACLs can still be edited; a dropped role leaves every ACL, so a new role of the
-- same name starts with no access.
select baas.signup('gone@contract.test', 'long enough pw') -> 'user' ->> 'id' as gone \gset
select d ->> 'id' as shared from baas.as_user(:'o', format('select baas.create_document(''k'', ''{}'', %L)',
    jsonb_build_object('read', jsonb_build_array('user:' || :'gone', 'role:crew')))) d \gset
delete from baas.users where id = :'gone';
select is(pg_temp.hint_as(:'o', format('select baas.grant(''k'', %L, ''read'', ''authenticated'')', :'shared')), 'ok',
          'an ACL still naming a deleted account can be edited');
select baas.drop_role('crew');
select ok(not exists (select from baas.documents where 'role:crew' = any(acl_read || acl_update || acl_delete)),
          'a dropped role is in no document ACL any more');
select baas.create_role('crew');
select is((select array_agg(x order by x) from baas.documents, unnest(acl_read) x where id = :'shared'),
          array['authenticated', 'user:' || :'gone'], 'so the new crew does not inherit the old one''s shares');

select * from finish();
rollback;
