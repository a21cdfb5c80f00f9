-- pgbaas's own housekeeping (issue 18, package E; sql/housekeeping.sql): what a run
-- removes and keeps, its answer, its retention setting, and who may run it.
begin;
select plan(29);

-- Who may run it: the proxy's login role and DBAs, no API role.
select is(pg_temp.sqlstate_as('baas_anon', 'select baas.housekeeping()'), '42501', 'baas_anon may not run housekeeping');
select is(pg_temp.sqlstate_as('baas_user', 'select baas.housekeeping()'), '42501', 'baas_user may not run housekeeping');
select is(pg_temp.sqlstate_as('baas_service', 'select baas.housekeeping()'), '42501', 'baas_service may not run housekeeping');
select is(pg_temp.sqlstate_as('baas_authenticator', 'select baas.housekeeping()'), 'ok', 'the proxy''s login role may');

-- Two accounts with a session each: one ended two days ago, one live.
select baas.signup('hk.old@example.test', 'long enough pw') -> 'user' ->> 'id' as old_uid \gset
select baas.signup('hk.live@example.test', 'long enough pw') -> 'user' ->> 'id' as live_uid \gset
update baas.sessions set expires_at = now() - interval '2 days' where user_id = :'old_uid';
-- Mailed tokens: one expired two days ago, one live.
insert into baas._auth_tokens (token_hash, kind, user_id, expires_at)
values (sha256('hk-old'), 'mfa', :'old_uid', now() - interval '2 days'),
       (sha256('hk-live'), 'mfa', :'live_uid', now() + interval '5 minutes');
-- Outbox: sent long ago, sent yesterday, pending long ago.
insert into baas.email_outbox (created_at, template, language, from_address, to_address, message_id, subject, status)
values (now() - interval '40 days', 'verify_email', 'en', 'a@example.test', 'b@example.test', '<hk1@example.test>', 's', 'sent'),
       (now() - interval '1 day', 'verify_email', 'en', 'a@example.test', 'b@example.test', '<hk2@example.test>', 's', 'sent'),
       (now() - interval '40 days', 'verify_email', 'en', 'a@example.test', 'b@example.test', '<hk3@example.test>', 's', 'pending');

select baas.housekeeping() as run \gset
select is((:'run'::jsonb ->> 'sessions')::int, 1, 'the ended session is counted');
select is((:'run'::jsonb ->> 'auth_tokens')::int, 1, 'the expired token is counted');
select is((:'run'::jsonb ->> 'email_outbox')::int, 1, 'the sent message past the 30-day default retention is counted');
select is((select array_agg(user_id::text order by user_id) from baas.sessions where user_id in (:'old_uid', :'live_uid')),
          array[:'live_uid'], 'the live session stays, the ended one went');
select is((select array_agg(token_hash) from baas._auth_tokens where token_hash in (sha256('hk-old'), sha256('hk-live'))),
          array[sha256('hk-live')], 'the live token stays');
select is((select array_agg(message_id order by message_id) from baas.email_outbox where message_id like '<hk%'),
          array['<hk2@example.test>', '<hk3@example.test>'], 'recent sent mail and pending mail stay');

-- The retention is a setting: null keeps everything, at least a day otherwise.
update baas.settings set email_outbox_retention = null;
update baas.email_outbox set created_at = now() - interval '400 days' where message_id = '<hk2@example.test>';
select is((baas.housekeeping() ->> 'email_outbox')::int, 0, 'no retention: the outbox is left alone');
select throws_ok($$ update baas.settings set email_outbox_retention = '1 hour' $$, '23514', null,
                 'a retention under a day is refused');
update baas.settings set email_outbox_retention = '1 day';
select is((baas.housekeeping() ->> 'email_outbox')::int, 1, 'a one-day retention takes the old sent message');

-- Audit entries and anonymous accounts are the team's policy, never housekeeping's.
update baas.settings set anonymous_sign_in = true;
select baas.sign_in_anonymously() -> 'user' ->> 'id' as anon_uid \gset
update baas.users set created_at = now() - interval '400 days' where id = :'anon_uid';
update baas.sessions set expires_at = now() + interval '1 day', created_at = now() - interval '400 days',
       last_used_at = now() - interval '400 days' where user_id = :'anon_uid';
insert into baas.audit_log (at, action, actor_role) values (now() - interval '400 days', 'hk.test', 'postgres');
select baas.housekeeping() as third_run \gset
select ok(exists (select from baas.users where id = :'anon_uid')
          and exists (select from baas.audit_log where action = 'hk.test'),
          'a long-idle anonymous account and a 400-day-old audit entry stay');

-- Two lockers of the run: it waits at most 5 s for a lock, and its single-flight lock
-- is in the two-int key space, apart from the bigint keys made from client input.
select ok((select 'lock_timeout=5s' = any (proconfig) from pg_proc where oid = 'baas.housekeeping()'::regprocedure),
          'a run waits at most 5 s for a lock');
select ok(pg_get_functiondef('baas.housekeeping()'::regprocedure) ~ 'pg_try_advisory_xact_lock\(\d+, \d+\)',
          'the single-flight lock is a two-int key');

-- An anonymous account keeps its newest session (its last activity, which
-- purge_anonymous_users measures); an older ended one goes.
select baas.sign_in_anonymously() -> 'user' ->> 'id' as anon2_uid \gset
update baas.users set created_at = now() - interval '400 days' where id = :'anon2_uid';
update baas.sessions set expires_at = now() - interval '2 days', last_used_at = now() - interval '3 days'
 where user_id = :'anon2_uid';
insert into baas.sessions (id, user_id, created_at, expires_at, last_used_at)
values (gen_random_uuid(), :'anon2_uid', now() - interval '20 days', now() - interval '2 days', now() - interval '10 days');
select baas.housekeeping() as anon_run \gset
select is((select array_agg(last_used_at::date) from baas.sessions where user_id = :'anon2_uid'),
          array[(now() - interval '3 days')::date], 'an anonymous account''s newest ended session stays, an older one goes');
select baas.purge_anonymous_users('7 days') as purged \gset
select ok(exists (select from baas.users where id = :'anon2_uid'),
          'so an anonymous account active 3 days ago is not purged as idle for 7');

-- Sign-in throttles: an old count goes, one still making someone wait stays; trusted
-- sources past login_trust_ttl go; remembered provider tokens past expiry go.
insert into baas._login_throttles (email, source, failures, last_failure_at, wait_until)
values ('hk.gone@example.test', '*', 3, now() - interval '400 days', null),
       ('hk.wait@example.test', '*', 30, now() - interval '400 days', now() + interval '1 hour');
insert into baas._trusted_sources (user_id, source, last_success_at)
values (:'live_uid', 'hk-old', now() - interval '400 days'), (:'live_uid', 'hk-new', now());
insert into baas._oidc_used_tokens (token_hash, expires_at)
values (sha256('hk-oidc-old'), now() - interval '1 minute'), (sha256('hk-oidc-new'), now() + interval '1 hour');
select baas.housekeeping() as hot_run \gset
select is((select array_agg(email) from baas._login_throttles where email like 'hk.%'),
          array['hk.wait@example.test'], 'a throttle still making someone wait stays, an old one goes');
select is((select array_agg(source) from baas._trusted_sources where user_id = :'live_uid' and source like 'hk-%'),
          array['hk-new'], 'a trusted source past login_trust_ttl goes, a fresh one stays');
select is((select array_agg(token_hash) from baas._oidc_used_tokens where token_hash in (sha256('hk-oidc-old'), sha256('hk-oidc-new'))),
          array[sha256('hk-oidc-new')], 'a remembered provider token past its expiry goes');
select is((:'hot_run'::jsonb ->> 'trusted_sources')::int, 1, 'and is counted');

-- A batch per run: 1001 expired tokens, ended sessions, old mails and sealed successors
-- take two runs, 1000 then 1.
insert into baas._auth_tokens (token_hash, kind, expires_at)
select sha256(('hk-batch-' || i)::bytea), 'magic_link', now() - interval '2 days' from generate_series(1, 1001) i;
insert into baas.email_outbox (created_at, template, language, from_address, to_address, message_id, subject, status)
select now() - interval '40 days', 'verify_email', 'en', 'a@example.test', 'b@example.test', '<hk-batch-' || i || '@example.test>', 's', 'sent'
  from generate_series(1, 1001) i;
insert into baas.sessions (id, user_id, expires_at)
select gen_random_uuid(), :'live_uid', now() - interval '2 days' from generate_series(1, 1001);
insert into baas.refresh_tokens (token_hash, session_id, used_at, successor)
select sha256(('hk-sealed-' || i)::bytea), (select id from baas.sessions where user_id = :'live_uid' and expires_at > now() limit 1),
       now() - interval '1 hour', '\x00' from generate_series(1, 1001) i;
select baas.housekeeping() as batch_run \gset
select is(:'batch_run'::jsonb - 'uploads' - 'blob_rows' - 'login_throttles' - 'trusted_sources' - 'oidc_used_tokens' - 'webhook_events',
          '{"auth_tokens": 1000, "email_outbox": 1000, "sessions": 1000, "sealed_refresh_tokens": 1000}'::jsonb,
          'a run removes at most 1000 of each kind');
select is(baas.housekeeping() - 'uploads' - 'blob_rows' - 'login_throttles' - 'trusted_sources' - 'oidc_used_tokens' - 'webhook_events',
          '{"auth_tokens": 1, "email_outbox": 1, "sessions": 1, "sealed_refresh_tokens": 1}'::jsonb,
          'the next run takes the rest');
select is((select count(*) from baas.refresh_tokens where token_hash = sha256('hk-sealed-1'::bytea)), 1::bigint,
          'a sealed successor is dropped, not its refresh token');

-- A session's refresh tokens go before it, a batch at a time.
insert into baas.sessions (id, user_id, expires_at)
values ('00000000-0000-7000-8000-00000000beef', :'live_uid', now() - interval '2 days');
insert into baas.refresh_tokens (token_hash, session_id)
select sha256(('hk-rt-' || i)::bytea), '00000000-0000-7000-8000-00000000beef' from generate_series(1, 1500) i;
select is((baas.housekeeping() ->> 'sessions')::int, 0, 'a session with more refresh tokens than a batch waits for them');
select is(baas.housekeeping() ->> 'sessions', '1', 'then goes in the next run');

-- Webhook events (wired in at merge): delivered a day ago or dead a month ago go;
-- pending ones, fresh dead letters and recent deliveries stay.
select baas.create_collection('hk_hooked') is not null as hc \gset
select baas.create_webhook('hk', 'http://127.0.0.1:9/hook', collection => 'hk_hooked') is not null as hw \gset
insert into baas.webhook_events (webhook_id, type, key, payload, created_at, delivered_at, dead_at)
select w.id, 'document.created', v.key, '{}', now() - interval '60 days', v.delivered_at, v.dead_at
  from baas.webhooks w,
       (values ('old-delivered', now() - interval '2 days', null::timestamptz),
               ('new-delivered', now() - interval '1 hour', null),
               ('old-dead', null, now() - interval '31 days'),
               ('new-dead', null, now() - interval '2 days'),
               ('pending', null, null)) v(key, delivered_at, dead_at)
 where w.name = 'hk';
select is(baas.housekeeping() ->> 'webhook_events', '2', 'old delivered and long-dead webhook events go');
select is(array(select key from baas.webhook_events order by key), array['new-dead', 'new-delivered', 'pending'],
          'pending events, recent deliveries and fresh dead letters stay');

select * from finish();
rollback;
