-- Documents as a DBA sees them: policies present and forced, evaluated once per
-- statement, and the permission matrix through the SQL door (baas.as_user).
begin;
select plan(41);

select ok((select relrowsecurity and relforcerowsecurity from pg_class where oid = 'baas.documents'::regclass),
          'row-level security is enabled and forced on baas.documents');
select set_eq($$ select polname::text from pg_policy where polrelid = 'baas.documents'::regclass $$,
    array['documents_service', 'documents_read', 'documents_create', 'documents_update', 'documents_delete', 'documents_aal'],
    'documents have one policy per verb plus the service bypass and the restrictive aal2 rule');
select is((select count(*)::int from pg_policy p, unnest(p.polroles) r
            where p.polrelid = 'baas.documents'::regclass and r = 'baas_service'::regrole), 1,
          'only one policy mentions baas_service: the bypass');

-- Three users: a owns everything; b gets grants; c is a stranger. Roles: b in team,
-- org contains team.
select baas.signup('a@matrix.test', 'long enough pw') -> 'user' ->> 'id' as a \gset
select baas.signup('b@matrix.test', 'long enough pw') -> 'user' ->> 'id' as b \gset
select baas.signup('c@matrix.test', 'long enough pw') -> 'user' ->> 'id' as c \gset
select baas.create_collection('m') is not null as created \gset
select baas.create_role('team'), baas.create_role('org');
select baas.add_role_member('team', :'b');
select baas.add_role_to_role('org', 'team');

create temp table cases (name text primary key, id uuid);
grant select on cases to baas_user, baas_anon;
create function pg_temp.mk(name text, acl jsonb) returns void language plpgsql as $$
begin
    insert into cases values (name,
        (select (d ->> 'id')::uuid from baas.as_user(current_setting('t.a')::uuid,
            format('select baas.create_document(%L, %L::jsonb, %L::jsonb)', 'm', '{}', acl)) d));
end $$;
select set_config('t.a', :'a', false);
select pg_temp.mk('private', '{}');
select pg_temp.mk('read_b', jsonb_build_object('read', jsonb_build_array('user:' || :'b')));
select pg_temp.mk('update_b', jsonb_build_object('update', jsonb_build_array('user:' || :'b')));
select pg_temp.mk('role_read', '{"read": ["role:team"]}');
select pg_temp.mk('nested_read', '{"read": ["role:org"]}');
select pg_temp.mk('authenticated', '{"read": ["authenticated"]}');
select pg_temp.mk('public', '{"read": ["public"]}');

-- What each caller's find() returns, as case names.
create function pg_temp.sees(uid text) returns text[] language sql as $$
    select coalesce(array_agg(c.name order by c.name), '{}')
      from baas.as_user(uid::uuid, 'select * from baas.find(''m'', lim => 1000)') d
      join cases c on c.id = (d ->> 'id')::uuid
$$;
select is(pg_temp.sees(:'a'), array['authenticated', 'nested_read', 'private', 'public', 'read_b', 'role_read', 'update_b'], 'owner sees all');
select is(pg_temp.sees(:'b'), array['authenticated', 'nested_read', 'public', 'read_b', 'role_read', 'update_b'], 'b: grants, roles, nested roles');
select is(pg_temp.sees(:'c'), array['authenticated', 'public'], 'a stranger: authenticated and public');
select is(pg_temp.sees(null), array['public'], 'anonymous: public only');
select is((select (x #>> '{}')::int from baas.as_user(:'c', 'select baas.count(''m'')') x), 2, 'counts obey the policies');

create function pg_temp.id_of(name text) returns text language sql as $$ select id::text from cases where cases.name = id_of.name $$;

select is(pg_temp.outcome_as(:'b', format('select baas.patch_document(''m'', %L, ''{"x":1}'')', pg_temp.id_of('update_b'))), 'ok', 'b may update update_b');
select is(pg_temp.outcome_as(:'b', format('select baas.patch_document(''m'', %L, ''{"x":1}'')', pg_temp.id_of('read_b'))), '42501 forbidden', 'b may read but not update read_b');
select is(pg_temp.outcome_as(:'c', format('select baas.patch_document(''m'', %L, ''{"x":1}'')', pg_temp.id_of('read_b'))), 'P0002 document_not_found', 'c cannot tell read_b exists');
select is(pg_temp.outcome_as(:'b', format('select baas.delete_document(''m'', %L)', pg_temp.id_of('update_b'))), '42501 forbidden', 'b may not delete update_b');
select is(pg_temp.outcome_as(null, format('select baas.delete_document(''m'', %L)', pg_temp.id_of('public'))), '42501 forbidden', 'anon reads public, cannot delete');
-- An anonymous caller with update rights may change the data, never the ACL or owner
-- (baas._may_manage was null for anonymous callers, and `if not null` let them through).
select pg_temp.mk('public_update', '{"read": ["public"], "update": ["public"]}');
select is(pg_temp.outcome_as(null, format('select baas.set_acl(''m'', %L, ''{"read": ["public"], "update": ["public"], "delete": ["public"]}'')', pg_temp.id_of('public_update'))),
          '42501 forbidden', 'anon with update rights cannot change the ACL');
select ok(pg_temp.outcome_as(null, format('update baas.documents set acl_delete = ''{public}'' where id = %L', pg_temp.id_of('public_update'))) like '42501%',
          'nor through the table (the guard, or no column privilege)');
select is(pg_temp.outcome_as(null, format('select baas.get_acl(''m'', %L)', pg_temp.id_of('public'))),
          '42501 forbidden', 'anon cannot read an ACL either');
select lives_ok(format('select * from baas.as_user(%L::uuid, %L)', current_setting('t.a'),
                       format('select baas.delete_document(''m'', %L)', pg_temp.id_of('public_update'))), 'the owner deletes it again');
delete from cases where name = 'public_update';
select is(pg_temp.outcome_as(:'b', format('select baas.set_acl(''m'', %L, ''{}'')', pg_temp.id_of('update_b'))), '42501 forbidden', 'a grantee cannot change the ACL');
select is(pg_temp.outcome_as(:'b', format('select baas.transfer(''m'', %L, %L)', pg_temp.id_of('update_b'), :'b')), '42501 forbidden', 'a grantee cannot take the document');
select is(pg_temp.outcome_as(null, 'select baas.create_document(''m'', ''{}'')'), '42501 forbidden', 'anon may not create by default');
select is(pg_temp.outcome_as(:'c', 'select baas.create_collection(''x'')'), '42501 ', 'users cannot create collections');
select is(pg_temp.outcome_as(:'c', format('select baas.patch_document(''m'', %L, ''{}'', 1)', pg_temp.id_of('public'))), '42501 forbidden', 'current version of a readable doc without update right: forbidden');
select is(pg_temp.outcome_as(:'b', format('select baas.patch_document(''m'', %L, ''{}'', 99)', pg_temp.id_of('update_b'))), '40001 version_conflict', 'stale version');

-- grant/revoke, one principal at a time.
select is(pg_temp.outcome_as(:'a', format('select baas.grant(''m'', %L, ''delete'', %L)', pg_temp.id_of('private'), 'user:' || :'c')), 'ok', 'the owner grants delete');
select ok('private' = any(pg_temp.sees(:'c')), 'delete implies read: c now sees it');
select is(pg_temp.outcome_as(:'a', format('select baas.revoke(''m'', %L, ''read'', %L)', pg_temp.id_of('private'), 'user:' || :'c')), 'ok', 'the owner revokes read');
select ok(not 'private' = any(pg_temp.sees(:'c')), 'revoking read revokes everything: c no longer sees it');
select is(pg_temp.outcome_as(:'a', format('select baas.grant(''m'', %L, ''write'', ''public'')', pg_temp.id_of('private'))), '22023 invalid_acl', 'unknown permission');

-- Membership changes apply to the next statement.
select baas.remove_role_member('team', :'b');
select is(pg_temp.sees(:'b'), array['authenticated', 'public', 'read_b', 'update_b'], 'leaving a role drops its documents at once');


-- Direct table access by API roles is still fenced by the policies.
select is((select count(*)::int from baas.as_user(null, 'select * from baas.documents')), 1, 'anon reading the table sees the public row only');
select is((select count(*)::int from baas.as_user(:'c', 'select * from baas.documents')), 2, 'c reading the table sees 2 rows');
select is(pg_temp.outcome_as(:'c', format('update baas.documents set owner = %L', :'c')), 'ok', 'an UPDATE of invisible rows does nothing...');
select is((select count(*)::int from baas.documents where owner = :'c'::uuid), 0, '...and changed no owner');
select is(pg_temp.outcome_as(:'b', format('update baas.documents set acl_read = ''{public}'' where id = %L', pg_temp.id_of('update_b'))),
          '42501 forbidden', 'the guard trigger stops a grantee editing the ACL directly');
select is(pg_temp.outcome_as(null, 'select * from baas.users'), '42501 ', 'anon cannot read users');
select is(pg_temp.outcome_as(null, 'select * from baas.role_members'), '42501 ', 'anon cannot read role memberships');
select is_empty($$
    select c.relname from pg_class c
     where c.relnamespace = 'baas'::regnamespace and c.relkind in ('v', 'm')
       and has_table_privilege('baas_anon', c.oid, 'select')
       and not coalesce(c.reloptions @> '{security_invoker=true}', false)
$$, 'no view in baas that bypasses row-level security is readable by baas_anon (baas.files is security_invoker)');

-- Policies evaluate baas.uid()/baas.principals() once per statement: an InitPlan.
set local role baas_user;
select set_config('baas.claims', jsonb_build_object('sub', :'b', 'role', 'baas_user')::text, true);
create temp table plan_lines (line text);
reset role;
grant insert on plan_lines to baas_user;
set local role baas_user;
do $$ declare l text; begin
    for l in execute 'explain select * from baas.documents where collection_id = 1' loop
        insert into plan_lines values (l);
    end loop;
end $$;
reset role;
select ok(exists (select from plan_lines where line like '%InitPlan%'), 'the read policy runs as an InitPlan');
select ok(not exists (select from plan_lines where line ~ 'Filter: .*baas\.(uid|principals)\('),
          'no per-row call of baas.uid() or baas.principals()');

-- Schemas bind every writer, the service role and DBAs included.
select baas.create_collection('typed', '{"schema": {"type": "object", "required": ["title"]}}') is not null as t \gset
select throws_ok($$ insert into baas.documents (collection_id, id, data) select id, baas.uuid7(), '{}' from baas.collections where name = 'typed' $$,
    '23514', null, 'a superuser insert is checked against the schema too');
select is(pg_temp.outcome_as(:'a', 'select baas.create_document(''typed'', ''{"title": 1}'')'), 'ok', 'a valid document is accepted');

select * from finish();
rollback;
