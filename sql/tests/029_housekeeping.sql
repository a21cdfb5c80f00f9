-- pgbaas's own housekeeping (issue 18, package E; sql/housekeeping.sql): what a run
-- removes and keeps, its answer, its retention setting, and who may run it.
begin;
select plan(14);

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

select * from finish();
rollback;
