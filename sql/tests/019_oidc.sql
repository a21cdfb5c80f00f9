-- OpenID Connect sign-in (issue 16, package C; sql/oidc.sql): the ID token checks
-- (baas._oidc_verify at a fixed time, with a token signed once by openssl, RS256),
-- key sets, provider configuration and presets, the sign-in's refusals, unlinking
-- rules, and who may call what. Full sign-ins with live tokens: tests/tests/oidc.rs.
begin;
select plan(70);

-- A key set and tokens made with `openssl genrsa 2048` and `openssl dgst -sha256 -sign`:
-- iss https://id.test, aud app, sub s-1, iat 1799999990, exp 1800000600,
-- email Pat@Mail.Test, email_verified "true" (a string, as Apple sends it), nonce n-1.
select '{"keys": [{"kty": "RSA", "kid": "t1", "use": "sig", "alg": "RS256", "n": "tz05nfnNGp52ZOITx_sQcvFDEfOvFMtqtrVnvi5fdD_ZogkCcVwNonps-Fsujjqh5LHltHso_yz3wDAyPEKA-MNqey_3H58zw_AcVkOzOyR2f0YnaqAvXdrtuNYj7CFIvwYcOZRwOqbXrUo1_17SsAV6Rys9NQZK3iU9jypIT0hF9FzaClfqtEVJKO0yGCe0BItNCClmtrDNgumom99E661EoipYJ6HZNXVEm7V6oSp08w86TR27SCEClnsyieGtrXabdpwk_y9PAVLxYLD0OVMtZl0Den8X6k3ed3-O5p7zbVjE7dQN0RuvIXwbxQfoCR_QJ41_vOOQIQG9OSy9ww", "e": "AQAB"}]}'::jsonb as jwks \gset
select 'eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InQxIn0.eyJpc3MiOiJodHRwczovL2lkLnRlc3QiLCJhdWQiOiJhcHAiLCJzdWIiOiJzLTEiLCJpYXQiOjE3OTk5OTk5OTAsImV4cCI6MTgwMDAwMDYwMCwiZW1haWwiOiJQYXRATWFpbC5UZXN0IiwiZW1haWxfdmVyaWZpZWQiOiJ0cnVlIiwibm9uY2UiOiJuLTEifQ.YBwQNNCDWtDUjjoMLSBmwJ9_e6eiIgF_69XH0dYtDZoru3pis8dvCDcBOz9cNFnt5MPnHyFeraGIV5ItFGx64-JEQTRl1bRv5IllmyuYATowtgGuSi7KLdmFDBQovcusnKTPzKcb_Wj6v7_IaijhAfc84yMVFWLM5zpdzOZTw5MiwDMdCNGhpD4oPU9F8wOYef9EDhz4RWzIsZDPD8IIb29fEPC4mWY3qaFXLd3ncnJyDi8_zHfPvANyHu1WeXjmvyZMHsVe8S73ImnRHRbRs_r8cjaceJTWK-z_YRjH91_oAzrht6cublhD4GrOTZJ81FKLKwnJRWL1pjabfcBLyw' as good \gset
select 'eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InQyIn0.eyJpc3MiOiJodHRwczovL2lkLnRlc3QiLCJhdWQiOiJhcHAiLCJzdWIiOiJzLTEiLCJpYXQiOjE3OTk5OTk5OTAsImV4cCI6MTgwMDAwMDYwMCwiZW1haWwiOiJQYXRATWFpbC5UZXN0IiwiZW1haWxfdmVyaWZpZWQiOiJ0cnVlIiwibm9uY2UiOiJuLTEifQ.oVwZfLtjbEgxP6D4By3fs_nwrgmxmU9a-uAMm7VtWkts5tarSngqT3WQBhMI4yKGDD-pdMv69R8gK_rnGSOkWk_DLrm-OhNbrAM49qeOKzWehx65x6Oexe9sIQkpltDHvurdNTqEdEjwC8X7KE7ucdPWjpntjUXm8WjotByBuwxmnGzxuwY3NzF17AXF20huEPvvCrzdAXd-f3G8WIcLfZmeDIobACUsoyv9Fv67jtbuC5inFqMKEFr_bWoWEDQw6XBzLjYDOH5ijgQIQ_Lj7HR1tVM85sApSaI0opPFuKCFwsCl8zgJ19MUzGcOQeut8n5FbOEizgI71pAHvKjuHQ' as otherkid \gset
select 'eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InQxIn0.eyJpc3MiOiJodHRwczovL2lkLnRlc3QiLCJhdWQiOlsiYXBwIiwib3RoZXIiXSwic3ViIjoicy0xIiwiaWF0IjoxNzk5OTk5OTkwLCJleHAiOjE4MDAwMDA2MDAsImVtYWlsIjoiUGF0QE1haWwuVGVzdCIsImVtYWlsX3ZlcmlmaWVkIjoidHJ1ZSIsIm5vbmNlIjoibi0xIn0.J55a4aJl3nN74veIUVSU-dKwzv_qBPbQmjbMPDtnovwCqZyFxEU7UJS4hgnTChLDlcgRhhlkp3Rx992mX1id0LcSDkrYdT2WVgjM8MpJOu6ITlp2uO7hzGKsoVXpwiYGamrHrKhqYHpGSFWIdDeRRiMyfNwEAZWMwOC8y-Rm08J7wZZBC2k4py722EhRgDGhUzbHbYfEDLnSh5xyis1f9rSKwQkA5h04x7jWrmdhlpb3RqQdYy6VOMpbfXC1kqHnYUA8zJasvJsKOtU-kog4rV6XTe_8-PJCegQt-AfgrIYSWS68uh5S4DDkWUQHnli7hoz86NasLa0AoSqHlaD81Q' as twoaud \gset
select 'eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InQxIn0.eyJpc3MiOiJodHRwczovL2lkLnRlc3QiLCJhdWQiOlsiYXBwIiwib3RoZXIiXSwic3ViIjoicy0xIiwiaWF0IjoxNzk5OTk5OTkwLCJleHAiOjE4MDAwMDA2MDAsImVtYWlsIjoiUGF0QE1haWwuVGVzdCIsImVtYWlsX3ZlcmlmaWVkIjoidHJ1ZSIsIm5vbmNlIjoibi0xIiwiYXpwIjoiYXBwIn0.reQ9wp68QwHKzrDYfenduREaB25YBeAnj1OD9Sdy9KrklbsbU36_DPkBKLKbSAxOxyWFjC2hJ8k7F6ntvrooHMDvc9JAVrGwkh2GwJ0n3LzBvcgisTzwCcN5D9BkokV5joAuUToZ7FjXQwY4po9eKTgZ0EqIL7QKvco11wv82x7zZaP2PpPDN7CDXwuQR0al7Bqmfv6MF-QkmnlbzD6CXlPT8BYe7sVTgnKflsQZwHL1ehv5zuOTWkQrVLrQkQ10RDQmPHTbVsRlI16jO_ZjqxyGC_o8MWM_XP3HPxT40P1JpoxT5wrJ89jOwgnqnFWkyYS7R5Lsc-9h2T1uxsmiww' as twoaud_azp \gset

create temp table fx as select :'jwks'::jsonb as jwks, :'good'::text as good, :'otherkid'::text as otherkid,
    :'twoaud'::text as twoaud, :'twoaud_azp'::text as twoaud_azp;

-- The message of a failed statement (NULL on success).
create function pg_temp.message_of(q text) returns text language plpgsql as $$
declare m text;
begin
    execute q;
    return null;
exception when others then
    get stacked diagnostics m = message_text;
    return m;
end $$;
create function pg_temp.hint_of(q text) returns text language plpgsql as $$
declare h text;
begin
    execute q;
    return null;
exception when others then
    get stacked diagnostics h = pg_exception_hint;
    return h;
end $$;
-- As an application user with the given claims (NULL: anonymous): the query's single
-- value as text, or 'SQLSTATE detail'.
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

-------------------------------------------------------------------- the Rust checks
select is(baas._oidc_verify((select good from fx), (select jwks from fx), '{https://id.test}', '{app}', 3600, 1800000000) ->> 'sub', 's-1',
          'a good token at its time: its claims');
select is(baas._oidc_verify((select good from fx), (select jwks from fx), '{https://id.test}', '{app}', 3600, 1800000000) ->> 'email_verified', 'true',
          'claims as signed (the string "true")');
select is(pg_temp.detail_of($$ select baas._oidc_verify((select good from fx), (select jwks from fx), '{https://other.test}', '{app}', 3600, 1800000000) $$),
          '28000 invalid_id_token', 'another issuer');
select matches(pg_temp.message_of($$ select baas._oidc_verify((select good from fx), (select jwks from fx), '{https://other.test}', '{app}', 3600, 1800000000) $$),
          'issuer \(iss', 'the message names the check');
select matches(pg_temp.message_of($$ select baas._oidc_verify((select good from fx), (select jwks from fx), '{https://id.test}', '{web}', 3600, 1800000000) $$),
          'audience \(aud\)', 'another audience');
select matches(pg_temp.message_of($$ select baas._oidc_verify((select twoaud from fx), (select jwks from fx), '{https://id.test}', '{app}', 3600, 1800000000) $$),
          'azp', 'several audiences without azp');
select is(baas._oidc_verify((select twoaud_azp from fx), (select jwks from fx), '{https://id.test}', '{app}', 3600, 1800000000) ->> 'azp', 'app',
          'several audiences with an accepted azp');
select matches(pg_temp.message_of($$ select baas._oidc_verify((select good from fx), (select jwks from fx), '{https://id.test}', '{app}', 3600, 1800000661) $$),
          'expired \(exp\)', 'expired (past the minute of leeway)');
select matches(pg_temp.message_of($$ select baas._oidc_verify((select good from fx), (select jwks from fx), '{https://id.test}', '{app}', 60, 1800000300) $$),
          'max_token_age', 'older than max_token_age');
select matches(pg_temp.message_of($$ select baas._oidc_verify((select good from fx), (select jwks from fx), '{https://id.test}', '{app}', 3600, 1799999000) $$),
          'future \(iat\)', 'issued in the future');
select is(pg_temp.detail_of($$ select baas._oidc_verify((select otherkid from fx), (select jwks from fx), '{https://id.test}', '{app}', 3600, 1800000000) $$),
          '55000 oidc_keys_stale', 'a kid the set lacks: stale keys');
select matches(pg_temp.message_of($$ select baas._oidc_verify(left((select good from fx), -3) || 'AAA', (select jwks from fx), '{https://id.test}', '{app}', 3600, 1800000000) $$),
          'signature', 'a changed signature');
select matches(pg_temp.message_of($$ select baas._oidc_verify('eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.', (select jwks from fx), '{https://id.test}', '{app}', 3600, 1800000000) $$),
          'alg "none"', 'alg none');
select is(pg_temp.detail_of($$ select baas._oidc_verify('garbage', (select jwks from fx), '{https://id.test}', '{app}', 3600, 1800000000) $$),
          '28000 invalid_id_token', 'not a JWT');
select is(jsonb_array_length(baas._oidc_check_jwks(jsonb_build_object('keys', ((select jwks from fx)::jsonb -> 'keys') || '[{"kty": "oct", "k": "c2VjcmV0"}]'::jsonb)) -> 'keys'), 1,
          'a key set keeps its usable signature keys only');
select is(pg_temp.detail_of($$ select baas._oidc_check_jwks('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}') $$), '22023 invalid_jwks', 'no usable key');
select is(pg_temp.detail_of($$ select baas._oidc_check_jwks('[]') $$), '22023 invalid_jwks', 'not a key set');

-------------------------------------------------------------------- providers
select is(pg_temp.detail_of($$ select baas.set_oidc_provider('apple', '{"preset": "apple"}') $$), '22023 invalid_options', 'client_ids are required');
select is(baas.set_oidc_provider('apple', '{"preset": "apple", "client_ids": ["com.example.app"]}')
          - 'created_at', jsonb_build_object(
            'name', 'apple', 'issuers', '["https://appleid.apple.com"]'::jsonb, 'client_ids', '["com.example.app"]'::jsonb,
            'jwks_url', 'https://appleid.apple.com/auth/keys', 'nonce', 'required', 'nonce_hash', 'sha256',
            'max_token_age_secs', 3600, 'enabled', true, 'keys', null), 'the Apple preset');
select is(baas.set_oidc_provider('google', '{"preset": "google", "client_ids": "123.apps.googleusercontent.com", "nonce": "optional"}') -> 'issuers',
          '["https://accounts.google.com", "accounts.google.com"]', 'the Google preset: both issuer spellings');
select is(baas.set_oidc_provider('apple', '{"enabled": false}') -> 'client_ids', '["com.example.app"]',
          'a change keeps what it does not name');
select is(pg_temp.detail_of($$ select baas.set_oidc_provider('Bad Name', '{"preset": "apple", "client_ids": ["x"]}') $$), '22023 invalid_options', 'provider names');
select is(pg_temp.detail_of($$ select baas.set_oidc_provider('x', '{"preset": "okta", "client_ids": ["x"]}') $$), '22023 invalid_options', 'unknown preset');
select is(pg_temp.detail_of($$ select baas.set_oidc_provider('x', '{"issuers": ["https://i"], "client_ids": ["x"], "jwks_url": "http://example.com/k"}') $$),
          '22023 invalid_options', 'http only to this host');
select is(pg_temp.detail_of($$ select baas.set_oidc_provider('x', '{"issuers": ["https://i"], "client_ids": ["x"], "jwks_url": "https://i/k", "colour": 1}') $$),
          '22023 invalid_options', 'unknown option');
select is(pg_temp.detail_of($$ select baas.set_oidc_provider('x', '{"issuers": ["https://i"], "client_ids": [], "jwks_url": "https://i/k"}') $$),
          '22023 invalid_options', 'empty client_ids');
select is(pg_temp.detail_of($$ select baas.set_oidc_provider('x', '{"issuers": ["https://i"], "client_ids": ["x"], "jwks_url": "https://i/k", "max_token_age_secs": 5}') $$),
          '22023 invalid_options', 'max_token_age_secs 60 .. 86400');
select is(baas.set_oidc_provider('idp', jsonb_build_object('issuers', '["https://id.test"]'::jsonb, 'client_ids', '["app"]'::jsonb,
          'jwks_url', 'http://127.0.0.1:9/jwks', 'max_token_age_secs', 600)) ->> 'max_token_age_secs', '600', 'a custom provider');
select is((select array_agg(provider order by provider) from baas._oidc_jwks_targets()), '{google,idp}', 'key targets: the enabled providers');
select is((select count(*)::int from baas._oidc_jwks_targets() where expires_at is null), 2, 'no keys yet');

-------------------------------------------------------------------- keys
select is(pg_temp.detail_of($$ select baas._oidc_put_jwks('idp', 'http://127.0.0.1:9/jwks', '{"keys": []}', 300) $$), '22023 invalid_jwks', 'an unusable set is not stored');
select lives_ok($$ select baas._oidc_put_jwks('idp', 'http://127.0.0.1:9/jwks', (select jwks from fx), 10) $$, 'keys stored');
select ok((select expires_at between now() + interval '299 seconds' and now() + interval '301 seconds' from baas._oidc_jwks where provider = 'idp'),
          'max_age is clamped to at least 5 minutes');
select is(pg_temp.detail_of($$ select baas._oidc_put_jwks('nope', 'http://127.0.0.1:9/jwks', (select jwks from fx), 300) $$), 'P0002 provider_not_found', 'unknown provider');
select is((baas.oidc_providers() -> 'items' -> 2 -> 'keys' ->> 'count'), '1', 'oidc_providers() shows the keys held');
select baas.set_oidc_provider('idp', '{"jwks_url": "http://127.0.0.1:10/jwks"}') \gset
select is((select count(*)::int from baas._oidc_jwks where provider = 'idp'), 0, 'a new jwks_url drops the keys fetched from the old one');
select lives_ok($$ select baas._oidc_put_jwks('idp', 'http://127.0.0.1:9/jwks', (select jwks from fx), 3600) $$, 'a late fetch of the old url');
select is((select count(*)::int from baas._oidc_jwks where provider = 'idp'), 0, 'stores nothing: keys only from the current jwks_url');
select baas._oidc_put_jwks('idp', 'http://127.0.0.1:10/jwks', (select jwks from fx), 3600) \gset

-------------------------------------------------------------------- sign-in refusals
select is(pg_temp.detail_of($$ select baas.oidc_sign_in('nope', 'x') $$), 'P0002 provider_not_found', 'unknown provider');
select is(pg_temp.detail_of($$ select baas.oidc_sign_in('apple', 'x', 'n') $$), 'P0002 provider_not_found', 'a disabled provider is unknown');
select is(pg_temp.detail_of($$ select baas.oidc_sign_in('idp', 'x') $$), '28000 invalid_id_token', 'a malformed token');
select is(pg_temp.detail_of($$ select baas.oidc_sign_in('idp', null) $$), '22023 invalid_request', 'no token');
select is(pg_temp.detail_of($$ select baas.oidc_sign_in('idp', (select good from fx), 'n-1', 'bad device!') $$), '22023 invalid_request', 'device_id checked');
-- The fixed token's times (January 2027) are not now's.
select matches(pg_temp.message_of($$ select baas.oidc_sign_in('idp', (select good from fx), 'n-1') $$), 'expired|future', 'checked at the database''s time');
select is(pg_temp.detail_of($$ select baas.oidc_sign_in('idp', (select otherkid from fx), 'n-1') $$), '55000 oidc_keys_stale', 'unknown kid: stale keys');
select is(pg_temp.hint_of($$ select baas.oidc_sign_in('idp', (select otherkid from fx), 'n-1') $$), 'idp', 'whose HINT names the provider (the proxy refetches)');
select is(pg_temp.detail_of($$ select baas.oidc_sign_in('google', (select good from fx)) $$), '55000 oidc_keys_stale', 'no keys fetched yet: stale');
select is((select count(*)::int from baas.identities), 0, 'no identity was made');

-------------------------------------------------------------------- identities
select baas.signup('pw@oidc.test', 'long enough pw') -> 'user' ->> 'id' as u1 \gset
select id as sid1 from baas.sessions where user_id = :'u1' \gset
insert into baas.users (id, email, data) values (baas.uuid7(), null, '{}') returning id as u2 \gset
insert into baas.sessions (id, user_id, expires_at) values (baas.uuid7(), :'u2', now() + interval '1 day') returning id as sid2 \gset
insert into baas.identities (id, user_id, provider, subject) values
    (baas.uuid7(), :'u1', 'idp', 'a'), (baas.uuid7(), :'u2', 'idp', 'b'), (baas.uuid7(), :'u2', 'google', 'c');
select id as i1 from baas.identities where subject = 'a' \gset
select id as ib from baas.identities where subject = 'b' \gset
select id as ic from baas.identities where subject = 'c' \gset
select jsonb_build_object('sub', :'u1', 'role', 'baas_user', 'sid', :'sid1') as c1 \gset
select jsonb_build_object('sub', :'u2', 'role', 'baas_user', 'sid', :'sid2') as c2 \gset
select is(pg_temp.as_claims(:'c1', $$ select jsonb_array_length(baas.identities() -> 'items')::text $$), '1', 'a user lists its identities');
select is(pg_temp.as_claims(:'c1', format($$ select baas.unlink_identity(%L)::text $$, :'ib')), 'P0002 identity_not_found', 'not another''s');
select is(pg_temp.as_claims(:'c2', format($$ select baas.unlink_identity(%L)::text $$, :'ib')), '', 'one of two identities unlinked');
select is(pg_temp.as_claims(:'c2', format($$ select baas.unlink_identity(%L)::text $$, :'ic')), '55000 last_sign_in_method',
          'not the last way in of an account without password or email');
select is(pg_temp.as_claims(:'c1', format($$ select baas.unlink_identity(%L)::text $$, :'i1')), '', 'an account with a password may drop its only identity');
-- An address is a way in only while mail can be sent (reset, magic link).
insert into baas.users (id, email, email_verified_at, data) values (baas.uuid7(), 'only-mail@oidc.test', now(), '{}') returning id as u3 \gset
insert into baas.sessions (id, user_id, expires_at) values (baas.uuid7(), :'u3', now() + interval '1 day') returning id as sid3 \gset
insert into baas.identities (id, user_id, provider, subject) values (baas.uuid7(), :'u3', 'google', 'd') returning id as id3 \gset
select jsonb_build_object('sub', :'u3', 'role', 'baas_user', 'sid', :'sid3') as c3 \gset
update baas.settings set email_from = null;
select is(pg_temp.as_claims(:'c3', format($$ select baas.unlink_identity(%L)::text $$, :'id3')), '55000 last_sign_in_method',
          'email not configured: the address is no way in');
update baas.settings set email_from = 'baas@oidc.test', app_url = 'https://app.oidc.test';
select is(pg_temp.as_claims(:'c3', format($$ select baas.unlink_identity(%L)::text $$, :'id3')), '',
          'email configured: the address is a way in, the identity may go');
-- A provider accounts sign in with keeps its issuers and keys' address (identities are
-- (provider, sub)); its other options may change.
select is(pg_temp.detail_of($$ select baas.set_oidc_provider('google', '{"issuers": ["https://evil.test"]}') $$), '23503 provider_in_use',
          'issuers of a provider in use stay');
select is(pg_temp.detail_of($$ select baas.set_oidc_provider('google', '{"jwks_url": "https://evil.test/keys"}') $$), '23503 provider_in_use',
          'its jwks_url stays');
select is(baas.set_oidc_provider('google', '{"client_ids": ["web-2"], "preset": "google"}') -> 'client_ids', '["web-2"]'::jsonb,
          'its client_ids may change (and the preset be applied again)');
select is(pg_temp.detail_of($$ select baas.drop_oidc_provider('google') $$), '23503 provider_in_use', 'a provider accounts sign in with stays');
select is(pg_temp.detail_of($$ select baas.drop_oidc_provider('nope') $$), 'P0002 provider_not_found', 'drop: unknown');
select is(pg_temp.detail_of($$ select baas.drop_oidc_provider('apple') $$), null, 'an unused provider is dropped');
select is(pg_temp.as_claims(null, $$ select baas.link_identity('idp', 'x')::text $$), '42501 ', 'linking needs a signed-in user');

-------------------------------------------------------------------- who may call what
select is(pg_temp.sqlstate_as('baas_anon', $$ select baas.oidc_sign_in('nope', 'x') $$), 'P0002', 'anyone may try a sign-in');
select is(pg_temp.sqlstate_as('baas_user', $$ select baas.set_oidc_provider('x', '{}') $$), '42501', 'users configure no provider');
select is(pg_temp.sqlstate_as('baas_service', $$ select baas.oidc_providers() $$), 'ok', 'service tokens list providers');
select is(pg_temp.sqlstate_as('baas_user', $$ select baas._oidc_put_jwks('idp', 'http://127.0.0.1:10/jwks', '{}', 300) $$), '42501', 'only the proxy stores keys');
select is(pg_temp.sqlstate_as('baas_authenticator', $$ select count(*) from baas._oidc_jwks_targets() $$), 'ok', 'the proxy reads the targets');
select is(pg_temp.sqlstate_as('baas_user', $$ select count(*) from baas.identities $$), '42501', 'the identities table is private');
select is(pg_temp.sqlstate_as('baas_service', $$ select count(*) from baas._oidc_used_tokens $$), '42501', 'so are the used tokens');
select is((select count(*)::int from baas.security_lints()), 0, 'no security lint');

select * from finish();
rollback;
