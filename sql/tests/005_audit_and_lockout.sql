-- The audit trail and account lockout as a DBA meets them: every security event is a
-- row written in the same transaction, with who, when, from where and what; the two
-- questions from docs/security.md are one query each; repeated failed logins make their
-- source wait (growing delays), never the owner's own clients.
begin;
select plan(62);

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
                  where action = 'login.failure' and ip = '203.0.113.9' $$,
              array[:'ann', 'nobody@audit.test'], 'which accounts saw failed logins from this IP: one query');

-- Throttling, not lockout (settings changed here): a source may fail 3 times for an
-- account, then waits 60 s, 120 s, 240 s... (minutes, so that no check here depends on
-- how fast this machine is); untrusted sources together may fail 5 times before each
-- of them waits. Waits are ended by moving wait_until into the past.
update baas.settings set login_source_failures = 3, login_account_failures = 5, login_delay = '1 minute';
delete from baas._login_throttles;
create function pg_temp.expire(src text) returns void language sql as
    $$ update baas._login_throttles set wait_until = clock_timestamp() - interval '1 ms' where source = src $$;
create function pg_temp.code(r jsonb) returns text language sql as $$ select r -> 'error' ->> 'code' $$;

-- A source's address: IPv6 by /64 (like the proxy's limits), an IPv4 client on a
-- dual-stack socket by its IPv4 address.
select set_config('baas.client_ip', '2001:db8:1:2:aaaa::5', true);
select is(baas._login_address(), 'ip:2001:db8:1:2::/64', 'an IPv6 client counts by its /64');
select set_config('baas.client_ip', '::ffff:192.0.2.1', true);
select is(baas._login_address(), 'ip:192.0.2.1', 'a v4-mapped client counts as its IPv4 address');

-- Known and unknown emails get the same answers, step by step.
select set_config('baas.client_ip', '203.0.113.77', true);
create temp table answers as
    select g, baas.login('ann@audit.test', 'guess') as known, baas.login('nobody-else@audit.test', 'guess') as unknown
      from generate_series(1, 4) g;
select is(array(select pg_temp.code(known) from answers order by g),
          array['invalid_credentials', 'invalid_credentials', 'invalid_credentials', 'too_many_attempts'],
          'three wrong passwords are answered, the fourth attempt must wait');
select is((select count(*)::int from answers where known = unknown), 4, 'an unknown email gets exactly the same answers');
select is((select (known -> 'error' ->> 'retry_after')::int from answers where g = 4), 60, 'the first wait is 60 s');
delete from baas._login_throttles;

-- Ann signs in on her phone; then an attacker elsewhere guesses her password.
select set_config('baas.client_ip', '198.51.100.7', true);
select baas.login('ann@audit.test', 'long enough pw', device_id => 'ann-phone') as ann_session \gset
select ok(:'ann_session'::jsonb ? 'access_token', 'ann signs in on her phone');
select set_config('baas.client_ip', '203.0.113.66', true);
select is(array(select pg_temp.code(baas.login('ann@audit.test', 'guess ' || g)) from generate_series(1, 3) g),
          array['invalid_credentials', 'invalid_credentials', 'invalid_credentials'], 'the attacker''s free failures');
select is(pg_temp.code(baas.login('ann@audit.test', 'long enough pw')), 'too_many_attempts',
          'then the attacker waits, and even the right password is not tried');
select pg_temp.expire('ip:203.0.113.66');
select is(pg_temp.code(baas.login('ann@audit.test', 'guess 4')), 'invalid_credentials', 'after the wait, one more try');
select is((baas.login('ann@audit.test', 'guess') -> 'error' ->> 'retry_after')::int, 120, 'the next wait is 120 s');
select pg_temp.expire('ip:203.0.113.66');
select is(pg_temp.code(baas.login('ann@audit.test', 'guess 5')), 'invalid_credentials', 'and one more');
select is((baas.login('ann@audit.test', 'guess') -> 'error' ->> 'retry_after')::int, 240, 'the wait doubles: 240 s');
select is((select count(*)::int from baas.audit_log where action = 'login.throttle' and user_id = :'ann'
                                                     and details ->> 'source' = 'ip:203.0.113.66'), 3,
          'each wait imposed is recorded');
-- Five failures from untrusted sources: every untrusted source now waits...
select set_config('baas.client_ip', '192.0.2.50', true);
select is(pg_temp.code(baas.login('ann@audit.test', 'long enough pw')), 'too_many_attempts',
          'an unknown client waits for the account-wide count');
select is((select details ->> 'source' from baas.audit_log where action = 'login.throttle' and user_id = :'ann'
            order by id desc limit 1), '*', 'the account-wide wait is recorded');
-- ...but not ann's own clients.
select set_config('baas.client_ip', '198.51.100.7', true);
select ok(baas.login('ann@audit.test', 'long enough pw') ? 'access_token', 'ann signs in at once from her own address');
select ok(baas.login('ann@audit.test', 'long enough pw', device_id => 'ann-phone') ? 'access_token',
          'and from her phone there (that device at that address signed in before)');
-- A device id vouches only at the address it signed in from: an id travels in every
-- request, and whoever learns it must not pass for the phone elsewhere.
select set_config('baas.client_ip', '100.64.0.9', true);
select is(pg_temp.code(baas.login('ann@audit.test', 'long enough pw', device_id => 'ann-phone')), 'too_many_attempts',
          'her phone''s id on another network waits like any new client');
select ok(baas.login('ann@audit.test', 'long enough pw', device_id => 'ann-phone',
                     refresh_token => :'ann_session'::jsonb ->> 'refresh_token') ? 'access_token',
          'with its refresh token it signs in at once (and that pair is now known)');
-- (That success made 100.64.0.9 one of ann's addresses too.) A stranger's made-up id:
select set_config('baas.client_ip', '100.64.0.10', true);
select is(pg_temp.code(baas.login('ann@audit.test', 'long enough pw', device_id => 'made-up')), 'too_many_attempts',
          'a device id that never signed in changes nothing');
select ok(baas.login('ann@audit.test', 'long enough pw', refresh_token => :'ann_session'::jsonb ->> 'refresh_token') ? 'access_token',
          'a live refresh token of the account is a known client too');
select is(pg_temp.detail_of($$ select baas.login('ann@audit.test', 'x', device_id => 'not ok!') $$), '22023 invalid_request',
          'a malformed device id is refused');
-- The DBA sees the throttles and lifts them.
select is((select count(*)::int from baas.login_throttles where email = 'ann@audit.test' and retry_after > 0), 2,
          'the DBA view shows the attacker''s wait and the account-wide one');
select is(baas.unlock_account(:'ann'), true, 'unlock_account lifts them');
select is((select count(*)::int from baas.login_throttles where email = 'ann@audit.test'), 0, 'and forgets the failures');
select is((select count(*)::int from baas.audit_log where action = 'account.unlocked' and user_id = :'ann'), 1, 'the lift is recorded');
select set_config('baas.client_ip', '192.0.2.50', true);
select ok(baas.login('ann@audit.test', 'long enough pw') ? 'access_token', 'any client signs in again');
select is(baas.unlock_account(:'ann'), false, 'nothing left to lift');
-- Someone who learned the phone's id guesses with it from elsewhere: the failures count
-- under their address and account-wide, and never make the phone wait at its address.
select set_config('baas.client_ip', '203.0.113.200', true);
select is(array(select pg_temp.code(baas.login('ann@audit.test', 'guess ' || g, device_id => 'ann-phone'))
                  from generate_series(1, 4) g),
          array['invalid_credentials', 'invalid_credentials', 'invalid_credentials', 'too_many_attempts'],
          'guesses with a stolen device id wait like any stranger''s');
select is((select array_agg(source || '=' || failures order by source collate "C") from baas._login_throttles
            where email = 'ann@audit.test'), array['*=3', 'ip:203.0.113.200=3'],
          'they count under the guesser''s address and account-wide');
select set_config('baas.client_ip', '198.51.100.7', true);
select ok(baas.login('ann@audit.test', 'long enough pw', device_id => 'ann-phone') ? 'access_token',
          'the phone at its own address signs in at once');
-- An unknown email does the same lookups as a known one before its answer (refresh
-- token, trusted device and address), so the time it takes tells nothing.
create temp table scans as select relname, coalesce(seq_scan, 0) + coalesce(idx_scan, 0) as n
    from pg_stat_xact_user_tables where schemaname = 'baas' and relname in ('refresh_tokens', '_trusted_sources');
select baas.login('nobody-3@audit.test', 'guess', device_id => 'ann-phone',
                  refresh_token => :'ann_session'::jsonb ->> 'refresh_token') is not null as ok \gset
select is((select array_agg(x.relname::text || '+' || (coalesce(x.seq_scan, 0) + coalesce(x.idx_scan, 0) - coalesce(b.n, 0) > 0)::text
                            order by x.relname collate "C")
             from pg_stat_xact_user_tables x left join scans b using (relname)
            where x.schemaname = 'baas' and x.relname in ('refresh_tokens', '_trusted_sources')),
          array['_trusted_sources+true', 'refresh_tokens+true'], 'an unknown email looks up the same tables');
-- Made-up device ids each add a trusted source on success: an account keeps its 20 newest.
insert into baas._trusted_sources (user_id, source, last_success_at)
    select :'ann', 'device:old-' || g || '@ip:198.51.100.7', clock_timestamp() - interval '1 hour'
      from generate_series(1, 25) g;
select ok(baas.login('ann@audit.test', 'long enough pw', device_id => 'new-one') ? 'access_token', 'ann signs in on a new device');
select is((select count(*)::int from baas._trusted_sources where user_id = :'ann'), 20, 'an account keeps 20 trusted sources');
select ok(exists (select from baas._trusted_sources where user_id = :'ann' and source = 'device:new-one@ip:198.51.100.7'),
          'the newest among them');
-- Guessing the current password through a password change counts under the session.
select set_config('baas.client_ip', '203.0.113.9', true);
select baas.signup('cat@audit.test', 'long enough pw') -> 'user' ->> 'id' as cat \gset
select pg_temp.as_session(:'cat', $$ select baas.update_user(password => 'a new long password', current_password => 'guess ' || g)
                                       from generate_series(1, 3) g $$) is null as ok \gset
select is((select count(*)::int from baas.audit_log where action = 'password.change.failure' and user_id = :'cat'), 3,
          'wrong current passwords are recorded');
select is((select count(*)::int from baas.login_throttles where email = 'cat@audit.test' and source like 'session:%' and retry_after > 0), 1,
          'and make that session wait');
select ok(baas.login('cat@audit.test', 'long enough pw') ? 'access_token', 'while signing in elsewhere is not held back');
update baas.settings set login_source_failures = 5, login_account_failures = 20, login_delay = '1 second';
-- Something that is not an address, typed into the email field, is kept only as a hash.
select baas.login('my secret password', 'x') is not null as ok \gset
select ok((select details ->> 'email' from baas.audit_log where action = 'login.failure' order by id desc limit 1) like 'sha256:%',
          'a password typed as the email is not stored');

-- Refresh reuse, logout, password change, deletion.
select baas.login('bob@audit.test', 'long enough pw') as bob_session \gset
select baas.refresh(:'bob_session'::jsonb ->> 'refresh_token') as bob_next \gset
-- Within refresh_reuse_interval (this is one transaction: no time passes) a retry gets
-- the pair the first use made, and is recorded as such.
select is(baas.refresh(:'bob_session'::jsonb ->> 'refresh_token') ->> 'refresh_token', :'bob_next'::jsonb ->> 'refresh_token',
          'a retry within the reuse interval gets the same refresh token');
select is((select count(*)::int from baas.audit_log where action = 'refresh.retry' and user_id = :'bob'), 1, 'the retry is recorded');
select successor as bob_sealed from baas.refresh_tokens where token_hash = baas._hash_token(:'bob_session'::jsonb ->> 'refresh_token') \gset
select is(length(:'bob_sealed'::bytea), 32, 'the spent token keeps its successor in 32 bytes');
select isnt(:'bob_sealed'::bytea, decode(translate(:'bob_next'::jsonb ->> 'refresh_token', '-_', '+/') || '=', 'base64'),
            'sealed: not the successor''s own bytes');
select is(baas._refresh_open(:'bob_session'::jsonb ->> 'refresh_token', :'bob_sealed'::bytea), :'bob_next'::jsonb ->> 'refresh_token',
          'the spent token opens it');
select isnt(baas._refresh_open(:'bob_next'::jsonb ->> 'refresh_token', :'bob_sealed'::bytea), :'bob_next'::jsonb ->> 'refresh_token',
            'another token does not');
update baas.settings set refresh_reuse_interval = '0';
select baas.refresh(:'bob_session'::jsonb ->> 'refresh_token') -> 'error' ->> 'code' as reuse \gset
update baas.settings set refresh_reuse_interval = default;
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
