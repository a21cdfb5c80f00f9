-- Multi-factor sign-in (issue 16, sql/accounts.sql "multi-factor"): the Rust TOTP
-- helpers against RFC 6238, enrolment, the ticket and its limits, recovery codes, aal2
-- rules for functions and require_aal2 collections, who may call what, the lints.
begin;
select plan(42);

-------------------------------------------------------------------- the Rust helpers
select is(baas._totp_code(convert_to('12345678901234567890', 'UTF8'), 'SHA1', 8, 59), '94287082', 'RFC 6238 SHA1 T=59');
select is(baas._totp_code(convert_to('12345678901234567890123456789012', 'UTF8'), 'SHA256', 8, 1111111109), '68084774', 'SHA256 T=1111111109');
select is(baas._totp_code(convert_to('1234567890123456789012345678901234567890123456789012345678901234', 'UTF8'), 'SHA512', 8, 20000000000), '47863826', 'SHA512 T=20000000000');
select is(pg_temp.detail_of($$ select baas._totp_code('\x00', 'MD5', 6, 0) $$), '22023 invalid_request', 'unknown algorithm');
select is(baas._totp_match(convert_to('12345678901234567890', 'UTF8'), '287082', 1, 0), 1::bigint, 'a code matches its step');
select is(baas._totp_match(convert_to('12345678901234567890', 'UTF8'), '287082', 3, 0), null, 'two steps away: no match');
select is(baas._totp_match(convert_to('12345678901234567890', 'UTF8'), '287082', 1, 1), null, 'a used step: no match');
select is(baas._totp_match(convert_to('12345678901234567890', 'UTF8'), 'x28708', 1, 0), null, 'malformed: no match, no error');
select is(baas._totp_uri(convert_to('12345678901234567890', 'UTF8'), 'pgbaas', 'a@b.c'),
          'otpauth://totp/pgbaas:a%40b.c?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=pgbaas&algorithm=SHA1&digits=6&period=30', 'uri');
select is(baas._recovery_code_hash('ab0cd-ef1gh'), baas._recovery_code_hash('AB0CD EF1GH'), 'case, dash and spaces do not matter');
select is(baas._recovery_code_hash('abocd-efigh'), baas._recovery_code_hash('AB0CD-EF1GH'), 'O and I read as 0 and 1');

-------------------------------------------------------------------- a user, a session
select ok((baas.signup('mfa-sql@example.com', 'correct horse battery') ->> 'access_token') is not null, 'signed up');
create temp table ctx as
    select u.id as uid, s.id as sid from baas.users u join baas.sessions s on s.user_id = u.id
     where u.email = 'mfa-sql@example.com';
grant select on ctx to public;
create function pg_temp.as_session(aal text) returns void language sql as $$
    select set_config('baas.claims', jsonb_build_object('sub', uid, 'role', 'baas_user', 'sid', sid, 'aal', aal)::text, true)
      from ctx;
    select set_config('role', 'baas_user', true);
$$;
create function pg_temp.code() returns text language sql as $$
    select baas._totp_code(f.secret, 'SHA1', 6, extract(epoch from clock_timestamp())::bigint)
      from baas._mfa_factors f join ctx on f.user_id = ctx.uid
$$;
create temp table enrolled (r jsonb);
create temp table verified (r jsonb);
create temp table c1 (code text);
grant all on enrolled, verified, c1 to public;

select pg_temp.as_session('aal1');
insert into enrolled select baas.mfa_enroll_totp('phone');
reset role;
select is((select r ->> 'status' from enrolled), 'unverified', 'enrolled unverified');
select is((select length(r ->> 'secret') from enrolled), 32, '20 bytes in base32');
select is((select baas.login('mfa-sql@example.com', 'correct horse battery') ? 'access_token'), true, 'unverified: sign-in gives tokens');

select pg_temp.as_session('aal1');
select is((select baas.mfa_verify_factor((select (r ->> 'id')::uuid from enrolled), '000000x') -> 'error' ->> 'code'), 'invalid_code', 'wrong code');
reset role;
insert into c1 select pg_temp.code();
select pg_temp.as_session('aal1');
insert into verified select baas.mfa_verify_factor((select (r ->> 'id')::uuid from enrolled), (select code from c1));
reset role;
select is((select jsonb_array_length(r -> 'recovery_codes') from verified), 10, 'ten recovery codes');
select is((select aal from baas.sessions where id = (select sid from ctx)), 2::smallint, 'the session is aal2');
select is((select amr from baas.sessions where id = (select sid from ctx)), '{pwd,otp}'::text[], 'amr gains otp');
select is((select count(*)::int from baas._mfa_recovery_codes where user_id = (select uid from ctx) and used_at is null), 10, 'stored');

-------------------------------------------------------------------- the ticket
create temp table t1 as select baas.login('mfa-sql@example.com', 'correct horse battery') as r;
select is((select r ->> 'mfa_required' from t1), 'true', 'sign-in answers a ticket');
select ok((select not (r ? 'access_token') from t1), 'and no tokens');
select is((select baas.mfa_challenge(r ->> 'mfa_token', '12345') -> 'error' ->> 'code' from t1), 'invalid_code', 'a wrong code');
select is((select attempts from baas._auth_tokens where kind = 'mfa' and user_id = (select uid from ctx)), 1::smallint, 'counted on the ticket');
select is((select (baas.mfa_challenge(r ->> 'mfa_token', (select r -> 'recovery_codes' ->> 0 from verified))) -> 'user' ->> 'email' from t1),
          'mfa-sql@example.com', 'a recovery code signs in');
select is((select count(*)::int from baas.sessions where user_id = (select uid from ctx) and aal = 2), 2, 'an aal2 session');
select is((select baas.mfa_challenge(r ->> 'mfa_token', (select r -> 'recovery_codes' ->> 1 from verified)) -> 'error' ->> 'code' from t1),
          'invalid_code', 'a ticket is single use');
create temp table t2 as select baas.login('mfa-sql@example.com', 'correct horse battery') as r;
select is((select baas.mfa_challenge(r ->> 'mfa_token', (select r -> 'recovery_codes' ->> 0 from verified)) -> 'error' ->> 'code' from t2),
          'invalid_code', 'a recovery code works once');
update baas._auth_tokens set expires_at = now() - interval '1 second' where kind = 'mfa' and used_at is null;
select is((select baas.mfa_challenge(r ->> 'mfa_token', (select r -> 'recovery_codes' ->> 2 from verified)) -> 'error' ->> 'code' from t2),
          'invalid_code', 'an expired ticket');

-------------------------------------------------------------------- aal2
select is(pg_temp.outcome_as((select uid::text from ctx), $$ select baas.require_aal2() $$), '42501 aal2_required', 'a token without aal is aal1');
select pg_temp.as_session('aal1');
select is(pg_temp.detail_of($$ select baas.mfa_recovery_codes() $$), '42501 aal2_required', 'new codes need aal2');
select is(pg_temp.detail_of($$ select baas.mfa_unenroll((select (r ->> 'id')::uuid from enrolled)) $$), '42501 aal2_required', 'unenrol needs aal2');
select is(baas.aal(), 'aal1', 'aal() from the claims');
reset role;
select pg_temp.as_session('aal2');
select is(baas.aal(), 'aal2', 'aal2 claims');
select is(pg_temp.detail_of($$ select baas.require_aal2() $$), null, 'aal2 passes');
reset role;

select baas.create_collection('mfa_secrets', '{"create": ["authenticated"], "default_acl": {"read": ["public"]}, "require_aal2": true}');
select is(baas.get_collection('mfa_secrets') -> 'options' ->> 'require_aal2', 'true', 'the option shows');
insert into baas.documents (collection_id, id, owner, data, acl_read)
    select c.id, baas.uuid7(), null, '{"x": 1}', '{public}' from baas.collections c where c.name = 'mfa_secrets';
select pg_temp.as_session('aal1');
select is((select count(*)::int from baas.documents d join baas.collections c on c.id = d.collection_id where c.name = 'mfa_secrets'), 0, 'aal1 sees nothing');
reset role;
select pg_temp.as_session('aal2');
select is((select count(*)::int from baas.documents d join baas.collections c on c.id = d.collection_id where c.name = 'mfa_secrets'), 1, 'aal2 sees it');
reset role;
select is((select count(*)::int from baas.as_user((select uid from ctx), $$ select d.id from baas.documents d join baas.collections c on c.id = d.collection_id where c.name = 'mfa_secrets' $$)),
          0, 'as_user runs as aal1');
select is(baas.set_collection_options('mfa_secrets', '{"require_aal2": false}') -> 'options' ->> 'require_aal2', null, 'switched off');
select is(pg_temp.detail_of($$ select baas.set_collection_options('mfa_secrets', '{"require_aal2": 1}') $$), '22023 invalid_options', 'a bool');

select is((select count(*)::int from baas.security_lints()), 0, 'security lints stay clean');

select * from finish();
rollback;
