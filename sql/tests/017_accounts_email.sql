-- Account email flows (issue 16, sql/accounts.sql "email flows"): what SQL callers see —
-- configuration, no enumeration, links and codes single use, expiring, superseded and
-- killed by wrong codes, who may call what, and the lints.
begin;
select plan(30);

create function pg_temp.last_mail(addr text, tpl text) returns text language sql as $$
    select text_body from baas.email_outbox where to_address = addr and template = tpl order by id desc limit 1
$$;
create function pg_temp.token_of(body text) returns text language sql as $$
    select substring(body from 'token=([A-Za-z0-9_-]{43})')
$$;
create function pg_temp.code_of(body text) returns text language sql as $$
    select substring(body from 'code in the app: ([0-9]{6})')
$$;

-------------------------------------------------------------------- configuration
select is(pg_temp.detail_of($$ select baas.request_password_reset('nobody@mail.test') $$), '55000 email_not_configured',
          'no email_from: not configured, even for an unknown address');
update baas.settings set email_from = 'App <noreply@mail.test>';
select is(pg_temp.detail_of($$ select baas.request_magic_link('nobody@mail.test') $$), '55000 email_not_configured',
          'no app_url: not configured either');
update baas.settings set app_url = 'myapp://auth?x=1', email_min_interval = '0';
select is(pg_temp.detail_of($$ select baas.request_password_reset('not an address') $$), '22023 invalid_email', 'a bad address');

-------------------------------------------------------------------- no enumeration
select baas.create_user('ann@mail.test', 'correct horse battery');
select baas.create_user('sus@mail.test', 'correct horse battery');
update baas.users set suspended_at = now() where email = 'sus@mail.test';
select is(baas.request_password_reset('nobody@mail.test'), '{}'::jsonb, 'unknown: {}');
select is(baas.request_password_reset('sus@mail.test'), '{}'::jsonb, 'suspended: {}');
select is(baas.request_password_reset('ANN@mail.test'), '{}'::jsonb, 'known: {}');
select is((select count(*)::int from baas.email_outbox where to_address in ('nobody@mail.test', 'sus@mail.test')), 0,
          'nothing queued for the unknown and the suspended address');
select is((select count(*)::int from baas._auth_tokens where email in ('nobody@mail.test', 'sus@mail.test')), 0, 'no token either');
select ok(pg_temp.last_mail('ann@mail.test', 'reset_password') ~ 'myapp://auth\?x=1&type=recovery&token=[A-Za-z0-9_-]{43}\s',
          'the link: app_url, & for its query, type and token');
select ok(pg_temp.code_of(pg_temp.last_mail('ann@mail.test', 'reset_password')) is not null, 'and a 6-digit code');
select is((select count(*)::int from baas._auth_tokens where email = 'ann@mail.test' and code_hash is not null
             and length(token_hash) = 32 and expires_at between now() + interval '59 minutes' and now() + interval '61 minutes'), 1,
          'one hashed token, expiring in email_link_ttl');

-------------------------------------------------------------------- reset: single use, superseded
create temp table t as select pg_temp.token_of(pg_temp.last_mail('ann@mail.test', 'reset_password')) as first;
select baas.request_password_reset('ann@mail.test');
alter table t add column second text;
update t set second = pg_temp.token_of(pg_temp.last_mail('ann@mail.test', 'reset_password'));
select is(baas.reset_password('a new passphrase', (select first from t)) -> 'error' ->> 'code', 'invalid_code', 'the older link is superseded');
select is(pg_temp.detail_of($$ select baas.reset_password('short', (select second from t)) $$), '22023 weak_password',
          'a weak password is refused');
select is(baas.reset_password('a new passphrase', (select second from t)), '{}'::jsonb, 'the newer link sets the password');
select is(baas.reset_password('another passphrase', (select second from t)) -> 'error' ->> 'code', 'invalid_code', 'once');
select ok(baas._verify_password('a new passphrase', (select password_hash from baas.users where email = 'ann@mail.test')), 'the password is the new one');
select is((select count(*)::int from baas.email_outbox where to_address = 'ann@mail.test' and template = 'password_changed'), 1,
          'password_changed is mailed');
select is(pg_temp.detail_of($$ select baas.reset_password('a new passphrase') $$), '22023 invalid_request', 'no token, no code');

-------------------------------------------------------------------- codes: wrong ones count, 5 kill
select baas.request_magic_link('ann@mail.test');
create temp table m as select pg_temp.token_of(b) as tok, pg_temp.code_of(b) as code
  from pg_temp.last_mail('ann@mail.test', 'magic_link') b;
select is(baas.verify('magic_link', null, 'ann@mail.test', case when code = '000000' then '000001' else '000000' end) -> 'error' ->> 'code',
          'invalid_code', 'a wrong code') from m;
select is((select attempts::int from baas._auth_tokens where kind = 'magic_link' and email = 'ann@mail.test' and used_at is null), 1,
          'is counted on the token');
select is(baas.verify('signup', (select tok from m)) -> 'error' ->> 'code', 'invalid_code', 'a magic link is no verification link');
update baas._auth_tokens set attempts = 4 where kind = 'magic_link' and email = 'ann@mail.test' and used_at is null;
select is(baas.verify('magic_link', null, 'ann@mail.test', case when code = '000000' then '000001' else '000000' end) -> 'error' ->> 'code',
          'invalid_code', 'the fifth wrong code') from m;
select is(baas.verify('magic_link', (select tok from m)) -> 'error' ->> 'code', 'invalid_code', 'killed the token: its link is dead too');

-------------------------------------------------------------------- expiry, types
select baas.request_magic_link('ann@mail.test');
update m set tok = pg_temp.token_of(pg_temp.last_mail('ann@mail.test', 'magic_link'));
update baas._auth_tokens set expires_at = now() - interval '1 second' where kind = 'magic_link' and used_at is null;
select is(baas.verify('magic_link', (select tok from m)) -> 'error' ->> 'code', 'code_expired', 'an expired link');
select is(pg_temp.detail_of($$ select baas.verify('recovery', 'x') $$), '22023 invalid_request', 'recovery is not verify''s');
select is(pg_temp.detail_of($$ select baas.verify('magic_link') $$), '22023 invalid_request', 'neither token nor code');

-------------------------------------------------------------------- who may call what
select is(pg_temp.outcome_as(null, $$ select baas.request_email_change('new@mail.test') $$), '42501 ',
          'email change: not for anonymous callers');
select is(pg_temp.sqlstate_as('baas_anon', $$ select baas._email_token('magic_link', null, 'x@mail.test', null, '{}', true) $$), '42501',
          'the token helpers are internal');
select is(pg_temp.outcome_as(null, $$ select baas.request_password_reset('nobody@mail.test') $$), 'ok', 'anyone may ask for a reset');
select is((select count(*)::int from baas.security_lints()), 0, 'security lints stay clean');

select * from finish();
rollback;
