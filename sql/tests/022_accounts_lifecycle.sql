-- Account lifecycle (issue 16, sql/accounts.sql "anonymous, sessions, suspension, owner
-- delete"): every function's SQLSTATE and detail code, who may call what, the principals
-- of full and anonymous accounts, and the owner delete policy.
begin;
select plan(36);

-- As an application user with the given claims (jsonb; NULL: anonymous): the query's
-- single value as text, or 'SQLSTATE detail'.
create function pg_temp.as_claims(claims jsonb, q text) returns text language plpgsql as $$
declare d text; v text;
begin
    perform set_config('baas.claims', coalesce(claims::text, ''), true);
    perform set_config('role', case when claims is null then 'baas_anon' else 'baas_user' end, true);
    execute q into v;
    reset role;
    perform set_config('baas.claims', '', true);
    return v;
exception when others then
    get stacked diagnostics d = pg_exception_detail;
    return sqlstate || ' ' || coalesce(d, '');
end $$;

select baas.signup('l1@life.test', 'long enough pw') as s1 \gset
select (:'s1'::jsonb) -> 'user' ->> 'id' as u1 \gset
select baas.signup('l2@life.test', 'long enough pw') -> 'user' ->> 'id' as u2 \gset
select id as sid1 from baas.sessions where user_id = :'u1' \gset
select jsonb_build_object('sub', :'u1', 'role', 'baas_user', 'sid', :'sid1') as c1 \gset

-------------------------------------------------------------------- anonymous accounts
select is(pg_temp.detail_of($$ select baas.sign_in_anonymously() $$), '42501 anonymous_sign_in_disabled', 'off by default');
update baas.settings set anonymous_sign_in = true;
select baas.sign_in_anonymously('{"k": 1}', 'dev-1') as a \gset
select (:'a'::jsonb) -> 'user' ->> 'id' as ua \gset
select is((:'a'::jsonb) -> 'user' -> 'is_anonymous', 'true'::jsonb, 'an anonymous account');
select is((select (email, password_hash, is_anonymous)::text from baas.users where id = :'ua'), '(,,t)', 'no email, no password');
select is((select (device_id, amr)::text from baas.sessions where user_id = :'ua'), '(dev-1,{anonymous})', 'its session');
select is(pg_temp.detail_of($$ select baas.sign_in_anonymously('[1]') $$), '22023 invalid_request', 'data must be an object');
select is(pg_temp.detail_of($$ select baas.sign_in_anonymously('{}', 'bad id!') $$), '22023 invalid_request', 'device_id checked');
select id as sida from baas.sessions where user_id = :'ua' \gset
select jsonb_build_object('sub', :'ua', 'role', 'baas_user', 'sid', :'sida', 'is_anonymous', true) as ca \gset

-- Principals and is_anonymous().
select is(pg_temp.as_claims(:'ca', 'select baas.principals()::text'), format('{public,authenticated,anonymous,user:%s}', :'ua'), 'anonymous principals');
select is(pg_temp.as_claims(:'c1', 'select baas.principals()::text'), format('{public,authenticated,registered,user:%s}', :'u1'), 'registered principals');
select is(pg_temp.as_claims(null, 'select baas.principals()::text'), '{public}', 'no token: public');
select is(pg_temp.as_claims(:'ca', 'select baas.is_anonymous()::text'), 'true', 'is_anonymous()');
select is(pg_temp.as_claims(:'c1', 'select baas.is_anonymous()::text'), 'false', 'a full account is not');
select is((select x ->> 2 from baas.as_user(:'ua'::uuid, 'select baas.principals()') x), 'anonymous', 'as_user takes anonymity from the row');
select is(baas._normalize_acl('{"read": ["registered", "anonymous"]}') -> 'read', '["anonymous", "registered"]', 'ACLs accept the two words');

-- Upgrade.
select is(pg_temp.as_claims(:'c1', $$ select baas.upgrade_account('x@life.test', 'long enough pw') $$), '42501 not_anonymous', 'a full account cannot upgrade');
select is(pg_temp.as_claims(:'ca', $$ select baas.upgrade_account('L1@life.test', 'long enough pw') $$), '23505 email_taken', 'taken');
select is(pg_temp.as_claims(:'ca', $$ select baas.upgrade_account('nope', 'long enough pw') $$), '22023 invalid_email', 'invalid');
select is(pg_temp.as_claims(:'ca', $$ select baas.upgrade_account('up@life.test', 'short') $$), '22023 weak_password', 'weak');
select is(pg_temp.as_claims(:'ca', $$ select baas.upgrade_account('up@life.test', 'long enough pw') -> 'user' ->> 'id' $$), :'ua', 'upgraded, same id');
select is((select (email, is_anonymous)::text from baas.users where id = :'ua'), '(up@life.test,f)', 'now a full account');

-- Purge.
select is(pg_temp.detail_of($$ select baas.purge_anonymous_users('59 minutes') $$), '22023 invalid_request', 'at least an hour');
select is(pg_temp.sqlstate_as('baas_user', $$ select baas.purge_anonymous_users('1 day') $$), '42501', 'users may not purge');

-------------------------------------------------------------------- sessions
select is(pg_temp.as_claims(:'c1', 'select jsonb_array_length(baas.list_sessions() -> ''items'')::text'), '1', 'one live session');
select is(pg_temp.as_claims(:'c1', 'select baas.list_sessions() #>> ''{items,0,current}'''), 'true', 'the current one');
select is(pg_temp.as_claims(:'c1', format('select baas.end_session(%L)', :'sida')), 'P0002 session_not_found', 'another user''s session');
select is(pg_temp.as_claims(null, 'select baas.list_sessions()'), '42501 ', 'anonymous callers may not list');
select is(pg_temp.detail_of(format('select baas.user_sessions(%L)', '00000000-0000-7000-8000-000000000000')), 'P0002 user_not_found', 'user_sessions of nobody');
select is(pg_temp.sqlstate_as('baas_user', format('select baas.sign_out_user(%L)', :'u2')), '42501', 'users may not sign others out');

-------------------------------------------------------------------- suspension
select is(baas.suspend_user(:'u1', 'spam') -> 'suspended', 'true'::jsonb, 'suspended');
select is((select revoked_reason from baas.sessions where id = :'sid1'), 'suspended', 'its sessions end');
select is(baas.login('l1@life.test', 'long enough pw') #>> '{error,code}', 'account_suspended', 'login refused');
select is(baas.reactivate_user(:'u1') -> 'suspended', 'false'::jsonb, 'reactivated');
select is(pg_temp.detail_of(format('select baas.suspend_user(%L, repeat(''x'', 501))', :'u1')), '22023 invalid_request', 'reason ≤ 500');

-------------------------------------------------------------------- owner delete
select baas.create_collection('life_orphan', '{"on_owner_delete": "orphan"}') is not null as ok \gset
select is(pg_temp.detail_of(format($$ select baas.set_collection_options('life_orphan', '{"on_owner_delete": {"transfer": "%s"}}') $$, '00000000-0000-7000-8000-000000000000')),
          '22023 invalid_options', 'the heir must exist');
select is(baas.set_collection_options('life_orphan', format('{"on_owner_delete": {"transfer": "%s"}}', :'u2')::jsonb) #>> '{options,on_owner_delete,transfer}', :'u2', 'heir set');

-- An heir deleted in the same statement as the owner, before it: the owner's documents
-- are orphaned (not handed to the account being deleted, which failed the DELETE).
select baas.signup('heir@life.test', 'long enough pw') -> 'user' ->> 'id' as uh \gset
select baas.signup('own@life.test', 'long enough pw') -> 'user' ->> 'id' as uo \gset
select baas.create_collection('life_heir', format('{"on_owner_delete": {"transfer": "%s"}}', :'uh')::jsonb) is not null as ok \gset
insert into baas.documents (collection_id, id, owner, data)
select c.id, '0190f5b4-0000-7000-8000-0000000016e1', :'uo', '{}' from baas.collections c where c.name = 'life_heir';
select is(pg_temp.detail_of(format('delete from baas.users where id in (%L, %L)', :'uh', :'uo')), null, 'heir and owner deleted at once');
select is((select coalesce(d.owner::text, 'orphan') from baas.documents d join baas.collections c on c.id = d.collection_id
            where c.name = 'life_heir' and d.id = '0190f5b4-0000-7000-8000-0000000016e1'), 'orphan', 'the document stays, owned by nobody');

select * from finish();
rollback;
