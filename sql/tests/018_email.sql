-- Email (issue 16, sql/email.sql): templates (rendering, language fallback, escaping,
-- the check on store), the outbox (queueing, claims, leases, retries with backoff,
-- permanent failures, giving up), who may call what, and the lints.
begin;
select plan(77);

-------------------------------------------------------------------- the Rust helpers
select is(baas._render_template('Hi {{ name }}, {{name}}!', '{"name": "Ann"}', false), 'Hi Ann, Ann!', 'placeholders filled, spaces optional');
select is(baas._render_template('[{{ missing }}]', '{}', false), '[]', 'a missing variable is empty');
select is(baas._render_template('{{ n }} min', '{"n": 60}', false), '60 min', 'numbers as JSON writes them');
select is(baas._render_template('<b>{{ v }}</b>', '{"v": "<script>&\"''"}', true), '<b>&lt;script&gt;&amp;&quot;&#39;</b>', 'HTML escapes values');
select is(baas._render_template('{{ v }}', '{"v": "<script>"}', false), '<script>', 'text keeps them raw');
select is(baas._render_template('{{ a }}', '{"a": "{{ b }}", "b": "x"}', false), '{{ b }}', 'a value is not a template');
select is(pg_temp.detail_of($$ select baas._check_template('Hi {{ name') $$), '22023 invalid_template', 'unclosed placeholder');
select is(pg_temp.detail_of($$ select baas._check_template('{{ Bad-Name }}') $$), '22023 invalid_template', 'bad name');
select is(pg_temp.detail_of($$ select baas._check_template('a }} b') $$), '22023 invalid_template', 'stray closing braces');
select is(pg_temp.detail_of($$ select baas._check_template('css { color: red }') $$), null, 'single braces are text');

-------------------------------------------------------------------- templates
select is((select count(*)::int from baas.email_templates where language = 'en'
            and name in ('verify_email', 'reset_password', 'magic_link', 'email_change', 'email_changed_notice', 'password_changed')),
          6, 'the six English templates are seeded');
select ok((select bool_and(text_body like '%{{ link }}%' and text_body like '%{{ code }}%') from baas.email_templates
            where name in ('verify_email', 'reset_password', 'magic_link', 'email_change')),
          'every secret-carrying template has the link and the code');
select is(pg_temp.detail_of($$ insert into baas.email_templates (name, language, subject, text_body) values ('x', 'en', 'S', 'Hi {{ name') $$),
          '22023 invalid_template', 'a broken text body is refused on insert');
select is(pg_temp.detail_of($$ update baas.email_templates set html_body = '<p>{{ x</p>' where name = 'magic_link' and language = 'en' $$),
          '22023 invalid_template', 'and on update, HTML too');
select throws_ok($$ insert into baas.email_templates (name, language, subject, text_body) values ('x', 'EN', 'S', 'b') $$, '23514', null, 'language tags are lower case');
select throws_ok($$ insert into baas.email_templates (name, language, subject, text_body) values ('x', 'en', E'a\nb', 'b') $$, '23514', null, 'a subject is one line');

insert into baas.email_templates (name, language, subject, text_body, html_body) values
    ('greet', 'en', 'Hello {{ name }}', 'Hello {{ name }} from {{ app_name }}', '<p>Hello {{ name }}</p>'),
    ('greet', 'pt', 'Olá {{ name }}', 'Olá {{ name }}', null),
    ('greet', 'de', 'Hallo {{ name }}', 'Hallo {{ name }}', null);
select is((select language_used from baas._render_email('greet', 'pt-br', '{"name": "Ana"}')), 'pt', 'pt-br falls back to pt');
select is((select subject from baas._render_email('greet', 'pt', '{"name": "Ana"}')), 'Olá Ana', 'exact language');
select is((select language_used from baas._render_email('greet', 'fr', '{}')), 'en', 'an unknown language gets the default');
update baas.settings set email_default_language = 'de';
select is((select language_used from baas._render_email('greet', 'fr', '{}')), 'de', 'the default language setting is used first');
update baas.settings set email_default_language = 'en';
select is((select text_body from baas._render_email('greet', 'en', '{"name": "Bo"}')), 'Hello Bo from pgbaas', 'app_name comes from the settings');
select is((select html_body from baas._render_email('greet', 'pt', '{}')), null, 'no HTML body, none rendered');
select is((select html_body from baas._render_email('greet', 'en', '{"name": "<i>"}')), '<p>Hello &lt;i&gt;</p>', 'HTML escaped');
select is(pg_temp.detail_of($$ select baas._render_email('nope', 'en', '{}') $$), '22023 invalid_template', 'unknown template');

-------------------------------------------------------------------- queueing
select is(pg_temp.detail_of($$ select baas.send_email('a@mail.test', 'greet') $$), '55000 email_not_configured', 'no email_from: not configured');
select throws_ok($$ update baas.settings set email_from = 'not a mailbox' $$, '23514', null, 'email_from must be a mailbox');
select throws_ok($$ update baas.settings set email_from = 'Acme, Inc. <x@mail.test>' $$, '23514', null, 'a display name with a comma must be quoted (the proxy could not send it)');
select lives_ok($$ update baas.settings set email_from = '"Acme, Inc." <x@mail.test>' $$, 'a quoted display name');
select lives_ok($$ update baas.settings set email_from = 'Acme Inc. <x@mail.test>' $$, 'words and dots');
select lives_ok($$ update baas.settings set email_from = 'Jörg''s App <x@mail.test>' $$, 'non-ASCII letters and apostrophes');
select throws_ok($$ update baas.settings set app_url = 'javascript alert(1)' $$, '23514', null, 'app_url must be a URL');
update baas.settings set email_from = 'My App <noreply@mail.test>', app_url = 'myapp://auth', app_name = 'My App',
                         email_retry_base = '10 seconds', email_retry_max = '25 seconds', email_max_attempts = 3;
select is(pg_temp.detail_of($$ select baas.send_email('not an address', 'greet') $$), '22023 invalid_email', 'bad address');
select is(pg_temp.detail_of($$ select baas.send_email('a@mail.test', 'nope') $$), '22023 invalid_template', 'unknown template');
select is(pg_temp.detail_of($$ select baas.send_email('a@mail.test', 'greet', '[1]') $$), '22023 invalid_request', 'vars must be an object');
select is(pg_temp.detail_of($$ select baas.send_email('a@mail.test', 'greet', '{}', 'PT_BR') $$), '22023 invalid_request', 'bad language tag');

select baas.signup('known@mail.test', 'long enough pw') -> 'user' ->> 'id' as known \gset
select baas.send_email('Known@Mail.test', 'greet', '{"name": "K"}', 'pt-br') as m1 \gset
select baas.send_email('other@mail.test', 'greet', '{"name": "O"}') as m2 \gset
select baas.send_email('third@mail.test', 'greet', '{"name": "T"}') as m3 \gset
select is((select to_address from baas.email_outbox where id = :m1), 'known@mail.test', 'the address is normalised');
select is((select user_id::text from baas.email_outbox where id = :m1), :'known', 'and tied to its account');
select is((select language from baas.email_outbox where id = :m1), 'pt', 'the language used is stored');
select is((select from_address from baas.email_outbox where id = :m1), 'My App <noreply@mail.test>', 'from the settings');
select ok((select message_id ~ '^<[0-9a-f-]{36}@mail\.test>$' from baas.email_outbox where id = :m1), 'Message-ID on the sender''s domain');
select is((select status from baas.email_outbox where id = :m2), 'pending', 'queued as pending');
select is((select subject from baas.email_outbox where id = :m2), 'Hello O', 'rendered when queued');

-------------------------------------------------------------------- claims, leases, reports
-- Only the first three are due; claim two, then the third.
select is((select count(*)::int from baas._outbox_claim(2, 60)), 2, 'a claim takes at most max');
select is((select array_agg(id order by id) from baas._outbox_claim(10, 60)), array[:m3::bigint], 'the next claim skips leased ones');
select is((select count(*)::int from baas._outbox_claim(10, 60)), 0, 'nothing left to claim');
select is((select attempts from baas.email_outbox where id = :m1), 1, 'a claim counts the attempt');
select is((select status from baas.email_outbox where id = :m1), 'sending', 'and marks it sending');

select baas._outbox_sent(:m1, 2);
select is((select status from baas.email_outbox where id = :m1), 'sending', 'a report for another attempt changes nothing');
select baas._outbox_sent(:m1, 1);
select is((select status || ' ' || (text_body is null) || ' ' || (html_body is null) || ' ' || (sent_at is not null)
             from baas.email_outbox where id = :m1), 'sent true true true', 'sent: bodies cleared, time kept');

select baas._outbox_failed(:m2, 1, '421 4.7.0 try later', false);
select is((select status from baas.email_outbox where id = :m2), 'pending', 'a temporary failure is retried');
select ok((select next_attempt_at between now() + interval '9 seconds' and now() + interval '11 seconds'
             from baas.email_outbox where id = :m2), 'after email_retry_base (±10 %)');
select is((select last_error from baas.email_outbox where id = :m2), '421 4.7.0 try later', 'with its error');
update baas.email_outbox set next_attempt_at = now() where id = :m2;
select is((select attempt from baas._outbox_claim(10, 60)), 2, 'second attempt');
select baas._outbox_failed(:m2, 2, 'timeout', false);
select ok((select next_attempt_at between now() + interval '18 seconds' and now() + interval '22 seconds'
             from baas.email_outbox where id = :m2), 'the wait doubles');
update baas.email_outbox set next_attempt_at = now() where id = :m2;
select is((select attempt from baas._outbox_claim(10, 60)), 3, 'third attempt');
select baas._outbox_failed(:m2, 3, 'timeout again', false);
select is((select status from baas.email_outbox where id = :m2), 'failed', 'email_max_attempts used up: failed');

select baas._outbox_failed(:m3, 1, '550 5.1.1 no such user', true);
select is((select status || ' ' || attempts from baas.email_outbox where id = :m3), 'failed 1', 'a permanent failure fails at once');
select is((select array_agg(id order by id) from baas.email_failures), array[:m2::bigint, :m3::bigint], 'both listed in email_failures');
select is((select text_body from baas.email_outbox where id = :m3), 'Hello T from My App', 'a failed message keeps its body for a retry');

-- A sender that died mid-send: its lease lapses, and with no attempt left the message fails.
select baas.send_email('dies@mail.test', 'greet') as m4 \gset
update baas.email_outbox set status = 'sending', attempts = 3, claimed_until = now() - interval '1 second' where id = :m4;
select is((select count(*)::int from baas._outbox_claim(10, 60) where id = :m4), 0, 'not claimed again');
select alike((select status || ': ' || last_error from baas.email_outbox where id = :m4), 'failed: gave up after 3 attempts%', 'failed, saying why');
select baas.send_email('lapsed@mail.test', 'greet') as m5 \gset
update baas.email_outbox set status = 'sending', attempts = 1, claimed_until = now() - interval '1 second' where id = :m5;
select is((select attempt from baas._outbox_claim(10, 60) where id = :m5), 2, 'a lapsed lease with attempts left is claimed again');
-- A DBA lowered email_max_attempts (to 3 here) below a pending message's attempts.
select baas.send_email('lowered@mail.test', 'greet') as m6 \gset
update baas.email_outbox set attempts = 4 where id = :m6;
select is((select count(*)::int from baas._outbox_claim(10, 60) where id = :m6), 0, 'a pending message with no attempt left is not claimed');
select alike((select status || ': ' || last_error from baas.email_outbox where id = :m6), 'failed: gave up after 4 attempts (email_max_attempts is now 3)%', 'but failed, saying why');

-------------------------------------------------------------------- administration
select baas.retry_email(:m3);
select is((select status || ' ' || attempts from baas.email_outbox where id = :m3), 'pending 0', 'retry_email queues it afresh');
select is(pg_temp.detail_of(format('select baas.retry_email(%s)', :m1)), 'P0002 email_not_found', 'only failed messages');
select is(pg_temp.detail_of($$ select baas.purge_email_outbox('1 hour') $$), '22023 invalid_request', 'purge keeps at least a day');
update baas.email_outbox set created_at = now() - interval '3 days' where id in (:m1, :m2, :m3);
select is(baas.purge_email_outbox('2 days'), 2::bigint, 'purge deletes old sent and failed messages, not pending ones');

select is(pg_temp.detail_of($$ select baas.send_email('big@mail.test', 'greet', jsonb_build_object('name', repeat('x', 70000))) $$),
          '22023 invalid_request', 'vars over 64 KB are refused');
insert into baas.email_templates (name, language, subject, text_body) values ('echo', 'en', 'Echo', repeat('{{ v }}', 100));
select is(pg_temp.detail_of($$ select baas.send_email('big@mail.test', 'echo', jsonb_build_object('v', repeat('x', 60000))) $$),
          '22023 invalid_template', 'a rendered message over 4 MB is refused, not an internal error');

-------------------------------------------------------------------- who may call what
select is(pg_temp.sqlstate_as('baas_service', $$ select baas.send_email('svc@mail.test', 'greet') $$), 'ok', 'service may send');
select is(pg_temp.sqlstate_as('baas_user', $$ select baas.send_email('u@mail.test', 'greet') $$), '42501', 'users may not');
select is(pg_temp.sqlstate_as('baas_anon', $$ select * from baas.email_outbox $$), '42501', 'the outbox is not readable by API roles');
select is(pg_temp.sqlstate_as('baas_service', $$ select * from baas._outbox_claim(1, 60) $$), '42501', 'only the proxy claims');
select is(pg_temp.sqlstate_as('baas_authenticator', $$ select * from baas._outbox_claim(1, 60) $$), 'ok', 'the proxy does');
select is(pg_temp.sqlstate_as('baas_service', $$ select * from baas._enqueue_email('greet', 'x@mail.test', null, null, '{}') $$), '42501', 'queueing directly is internal');
select is((select count(*)::int from baas.security_lints()), 0, 'security lints stay clean');

select * from finish();
rollback;
