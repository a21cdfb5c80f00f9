-- The auth functions as a DBA calls them from psql: results, SQLSTATEs and the stable
-- error codes in DETAIL.
begin;
select plan(22);


select lives_ok($$ select baas.signup('DBA@Example.com', 'long enough pw', '{"plan": "pro"}') $$, 'signup from SQL');
select is((select email from baas.users where email = 'dba@example.com'), 'dba@example.com', 'email is stored lower-cased');
select is((select data->>'plan' from baas.users where email = 'dba@example.com'), 'pro', 'signup data is stored');
select is((select count(*)::int from baas.sessions s join baas.users u on u.id = s.user_id where u.email = 'dba@example.com'), 1,
          'signup opens one session');

select is(pg_temp.detail_of($$ select baas.signup('dba@example.com', 'long enough pw') $$), '23505 email_taken', 'duplicate email');
select is(pg_temp.detail_of($$ select baas.signup('not-an-email', 'long enough pw') $$), '22023 invalid_email', 'invalid email');
select is(pg_temp.detail_of($$ select baas.signup('x@example.com', 'short') $$), '22023 weak_password', 'short password');
select is(pg_temp.detail_of(format('select baas.signup(%L, %L)', 'x@example.com', repeat('p', 1025))), '22001 password_too_long', 'long password');
select is(pg_temp.detail_of($$ select baas.signup('x@example.com', 'long enough pw', '[1]') $$), '22023 invalid_request', 'data must be an object');
select is(pg_temp.detail_of($$ select baas.signup(null, 'long enough pw') $$), '22023 invalid_request', 'email is required');

-- Failed logins are answers, not errors, so that the failure (audit, throttle count) commits.
select is(baas.login('dba@example.com', 'wrong password'), '{"error": {"code": "invalid_credentials", "message": "invalid email or password"}}', 'wrong password');
select is(baas.login('nobody@example.com', 'wrong password'), baas.login('dba@example.com', 'wrong password'), 'unknown email: same answer');
select is(baas.login('DBA@example.com ', 'long enough pw') -> 'user' ->> 'email', 'dba@example.com', 'login ignores case and spaces in the email');

select is(pg_temp.detail_of($$ select baas.refresh('not a token') $$), '28000 invalid_refresh_token', 'unknown refresh token');
select is(pg_temp.detail_of($$ select baas.logout() $$), '28000 not_authenticated', 'logout needs claims');

-- A migrated bcrypt account signs in and is re-hashed to argon2id.
insert into baas.users (id, email, password_hash)
values (baas.uuid7(), 'legacy@example.com', '$2b$04$e5AxvQ1t5pp9NDeE58j7CuHv.CeDCKj7tElMfTB17zkKPTyvqbXfy');
select is(baas.login('legacy@example.com', 'hunter22') -> 'user' ->> 'email', 'legacy@example.com', 'a bcrypt hash verifies');
select ok((select password_hash like '$argon2id$%' from baas.users where email = 'legacy@example.com'), 'and is upgraded to argon2id on login');

-- Rotation: one new active key, the old one retired but still published.
select lives_ok($$ select baas.rotate_signing_key() $$, 'rotate from SQL');
select is(jsonb_array_length(baas.jwks() -> 'keys'), 2, 'old and new key are both in the JWKS');

-- A service token keeps its key published for as long as the token lives.
select (baas.create_service_token('jwks-test', '30 days') ->> 'id') as svc \gset
select baas.rotate_signing_key() is not null as rotated \gset
-- Pretend all of this happened two days ago: key lifetimes and the token's creation alike.
update baas._signing_keys set created_at = created_at - interval '2 days', retired_at = retired_at - interval '2 days'
 where retired_at is not null;
update baas.service_tokens set created_at = created_at - interval '2 days';
select is(jsonb_array_length(baas.jwks() -> 'keys'), 2, 'a retired key that signed a live service token stays in the JWKS');
select baas.revoke_service_token(:'svc');
select is(jsonb_array_length(baas.jwks() -> 'keys'), 1, 'once the token is revoked the old keys drop out');
select is(pg_temp.detail_of($$ select baas.create_service_token('x', '0 seconds') $$), '22023 invalid_request', 'a service token needs a lifetime');

select * from finish();
rollback;
