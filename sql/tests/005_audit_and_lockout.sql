-- The audit trail and account lockout as a DBA meets them: every security event is a
-- row written in the same transaction, with who, when, from where and what; the two
-- questions from docs/security.md are one query each; repeated failed logins lock an
-- account, and a locked account answers exactly like a wrong password.
begin;
select plan(32);

-- As a signed-in user with a live session (claims carry the session id).
create function pg_temp.as_session(uid text, q text) returns text language plpgsql as $$
declare d text;
begin
    perform set_config('baas.claims', jsonb_build_object('sub', uid, 'role', 'baas_user', 'sid',
        (select s.id from baas.sessions s where s.user_id = uid::uuid and s.revoked_at is null
          order by s.created_at desc limit 1))::text, true);
    perform set_config('role', 'baas_user', true);
    execute q;
    reset role;
    return null;
exception when others then
    get stacked diagnostics d = pg_exception_detail;
    return sqlstate || ' ' || d;
end $$;

select set_config('baas.client_ip', '203.0.113.9', true);
select baas.signup('ann@audit.test', 'long enough pw') -> 'user' ->> 'id' as ann \gset
select baas.signup('bob@audit.test', 'long enough pw') -> 'user' ->> 'id' as bob \gset

select is((select count(*)::int from baas.audit_log where action = 'signup' and user_id = :'ann' and ip = '203.0.113.9'),
          1, 'signup is recorded with the account and the client address');

-- Failed logins: recorded with the email, an unknown email too.
select is(baas.login('ann@audit.test', 'wrong password') -> 'error' ->> 'code', 'invalid_credentials', 'wrong password');
select baas.login('nobody@audit.test', 'wrong password') is not null as ok \gset
select is((select array_agg(details ->> 'email' order by id) from baas.audit_log where action = 'login.failure'),
          array['ann@audit.test', 'nobody@audit.test'], 'failures are recorded for known and unknown emails');
-- The question from docs/security.md: which accounts saw failed logins from this IP?
select set_eq($$ select distinct coalesce(user_id::text, details ->> 'email') from baas.audit_log
                  where action in ('login.failure', 'login.locked') and ip = '203.0.113.9' $$,
              array[:'ann', 'nobody@audit.test'], 'which accounts saw failed logins from this IP: one query');

-- Lockout: three failures within the window lock the account (threshold lowered here).
update baas.settings set lockout_threshold = 3;
select baas.login('ann@audit.test', 'wrong password') is not null as ok \gset
select is(baas._account_locked(:'ann'), false, 'two failures: not locked yet');
select baas.login('ann@audit.test', 'wrong password') is not null as ok \gset
select is(baas._account_locked(:'ann'), true, 'the third failure within the window locks the account');
select is((select count(*)::int from baas.audit_log where action = 'account.locked' and user_id = :'ann'), 1, 'the lockout is recorded');
select is(baas.login('ann@audit.test', 'long enough pw'), baas.login('bob@audit.test', 'wrong password'),
          'a locked account answers the right password exactly like a wrong one');
select is((select count(*)::int from baas.audit_log where action = 'login.locked' and user_id = :'ann'), 1, 'the refused attempt is recorded as login.locked');
select ok(baas.login('bob@audit.test', 'long enough pw') ? 'access_token', 'other accounts are unaffected');
-- The lock ends after lockout_duration (moved into the past here), and the failures
-- before it no longer count.
update baas._lockouts set locked_until = clock_timestamp() where user_id = :'ann';
select ok(baas.login('ann@audit.test', 'long enough pw') ? 'access_token', 'after the lockout the right password works');
select baas.login('ann@audit.test', 'wrong password') is not null as ok \gset
select is(baas._account_locked(:'ann'), false, 'one failure after a success does not lock again');
-- DBAs can lift a lockout early.
select baas.login('ann@audit.test', 'wrong password') is not null as ok \gset
select baas.login('ann@audit.test', 'wrong password') is not null as ok \gset
select is(baas._account_locked(:'ann'), true, 'locked again after three more failures');
select is(baas.unlock_account(:'ann'), true, 'unlock_account lifts it');
select ok(baas.login('ann@audit.test', 'long enough pw') ? 'access_token', 'and the account signs in');
-- Guessing the current password through a password change counts the same.
select baas.signup('cat@audit.test', 'long enough pw') -> 'user' ->> 'id' as cat \gset
select pg_temp.as_session(:'cat', $$ select baas.update_user(password => 'a new long password', current_password => 'guess ' || g)
                                       from generate_series(1, 3) g $$) is null as ok \gset
select is((select count(*)::int from baas.audit_log where action = 'password.change.failure' and user_id = :'cat'), 3,
          'wrong current passwords are recorded');
select is(baas._account_locked(:'cat'), true, 'and lock the account like failed logins');
select is(baas.login('cat@audit.test', 'long enough pw') -> 'error' ->> 'code', 'invalid_credentials', 'so login is refused too');
update baas.settings set lockout_threshold = 10;
-- Something that is not an address, typed into the email field, is kept only as a hash.
select baas.login('my secret password', 'x') is not null as ok \gset
select ok((select details ->> 'email' from baas.audit_log where action = 'login.failure' order by id desc limit 1) like 'sha256:%',
          'a password typed as the email is not stored');

-- Refresh reuse, logout, password change, deletion.
select baas.login('bob@audit.test', 'long enough pw') as bob_session \gset
select baas.refresh(:'bob_session'::jsonb ->> 'refresh_token') is not null as ok \gset
select baas.refresh(:'bob_session'::jsonb ->> 'refresh_token') -> 'error' ->> 'code' as reuse \gset
select is((select count(*)::int from baas.audit_log where action = 'refresh.reuse' and user_id = :'bob'), 1, 'refresh token reuse is recorded (and commits)');
select is(pg_temp.as_session(:'ann', $$ select baas.update_user(password => 'a new long password', current_password => 'long enough pw') $$),
          null, 'ann changes her password');
select is((select count(*)::int from baas.audit_log where action = 'password.change' and user_id = :'ann' and actor = :'ann'), 1, 'the password change is recorded, with ann as the actor');

-- Role membership and document ACLs, by whoever changes them.
select baas.create_role('editors') is null as ok \gset
select baas.add_role_member('editors', :'bob') is null as ok \gset
select is((select details ->> 'role' from baas.audit_log where action = 'role.member.add' and user_id = :'bob'), 'editors', 'role membership changes are recorded');
select baas.create_collection('notes') is not null as ok \gset
select baas.as_user(:'ann', $$ select baas.create_document('notes', '{"t": 1}') ->> 'id' $$) #>> '{}' as doc \gset
select baas.as_user(:'ann', format($$ select baas.grant('notes', %L, 'update', 'user:%s') $$, :'doc', :'bob')) is not null as ok \gset
select baas.as_user(:'ann', format($$ select baas.transfer('notes', %L, %L) $$, :'doc', :'bob')) is not null as ok \gset
-- The other question from docs/security.md: who changed the permissions of document X?
select results_eq(format($$ select action, actor::text, details -> 'after' -> 'update' from baas.audit_log
                             where document_id = %L and action in ('document.acl', 'document.transfer') order by id $$, :'doc'),
                  format($$ values ('document.acl', %L, %L::jsonb), ('document.transfer', %L, null::jsonb) $$,
                         :'ann', jsonb_build_array('user:' || :'bob'), :'ann'),
                  'who changed the permissions of document X: one query');
select is((select details ->> 'to' from baas.audit_log where action = 'document.transfer' and document_id = :'doc'), :'bob', 'a transfer records the new owner');

-- Key rotation and account deletion.
select baas.rotate_signing_key() as kid \gset
select is((select count(*)::int from baas.audit_log where action = 'key.create' and details ->> 'kid' = :'kid'), 1, 'key rotation is recorded');
select baas.login('bob@audit.test', 'long enough pw') is not null as ok \gset
select is(pg_temp.as_session(:'bob', 'select baas.delete_user()'), null, 'bob deletes his account');
select is((select actor::text from baas.audit_log where action = 'user.delete' and user_id = :'bob'), :'bob', 'the deletion is recorded, with its actor');

-- Append-only: no API role can read or write it; nobody can update or delete rows.
select is(pg_temp.sqlstate_as('baas_user', 'select * from baas.audit_log'), '42501', 'API roles cannot read the audit log');
select is(pg_temp.sqlstate_as('baas_service', $$ insert into baas.audit_log (action, actor_role) values ('forged', 'x') $$), '42501', 'API roles cannot write it');
select is(pg_temp.detail_of('update baas.audit_log set action = $$x$$'), '42501 forbidden', 'not even the owner can update it');
select is(pg_temp.detail_of('delete from baas.audit_log'), '42501 forbidden', 'or delete from it, except through purge_audit_log');

select * from finish();
rollback;
