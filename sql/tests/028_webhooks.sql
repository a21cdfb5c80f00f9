-- Webhooks' SQL side (issue 18, package D; sql/webhooks.sql): registration, capture in
-- the writer's transaction, the claim's ordering per key, backoff, dead letters,
-- replay, purge, and that all of it is the DBA's (and the proxy's) alone.
begin;
select plan(53);

select baas.create_collection('hooked', '{"create": ["public"], "default_acl": {"read": ["public"], "update": ["public"], "delete": ["public"]}}') is not null as c \gset
select baas.create_collection('quiet', '{"create": ["public"]}') is not null as q \gset
update baas.settings set webhook_retry_base = '1 second', webhook_retry_max = '2 seconds';

-- Registration.
select baas.create_webhook('orders', 'http://127.0.0.1:9/hook', collection => 'hooked') as wh \gset
select ok((:'wh'::jsonb ->> 'secret') ~ '^whsec_[A-Za-z0-9+/]{43}=$', 'a generated secret: whsec_ and the base64 of 32 bytes');
select is(length(decode(substr(:'wh'::jsonb ->> 'secret', 7), 'base64')), 32, 'which decodes');
select is(:'wh'::jsonb -> 'events', '["insert", "update", "delete"]'::jsonb, 'every operation by default');
select is(pg_temp.detail_of($$ select baas.create_webhook('orders', 'http://x/', collection => 'hooked') $$), '23505 webhook_exists', 'names are unique');
select is(pg_temp.detail_of($$ select baas.create_webhook('w2', 'ftp://x/', collection => 'hooked') $$), '22023 invalid_request', 'http(s) URLs only');
select is(pg_temp.detail_of($$ select baas.create_webhook('w2', 'http://x/') $$), '22023 invalid_request', 'a collection or a table is needed');
select is(pg_temp.detail_of($$ select baas.create_webhook('w2', 'http://x/', collection => 'nope') $$), 'P0002 collection_not_found', 'an unknown collection');
select is(pg_temp.detail_of($$ select baas.create_webhook('w2', 'http://x/', collection => 'hooked', events => '{insert,upsert}') $$), '22023 invalid_request', 'unknown events');
select is(pg_temp.detail_of($$ select baas.create_webhook('w2', 'http://x/', collection => 'hooked', secret => 'whsec_c2hvcnQ=') $$), '22023 invalid_request', 'a secret too short');
select is(pg_temp.detail_of($$ select baas.create_webhook('w2', 'http://x/', collection => 'hooked', secret => 'whsec_!!!') $$), '22023 invalid_request', 'a secret that is not base64');
select is(pg_temp.detail_of($$ select baas.create_webhook('w2', 'http://x/', collection => 'hooked', secret => 'whsec_' || repeat('A', 42) || 'B=') $$),
          '22023 invalid_request', 'a secret in non-canonical base64 (stray trailing bits the proxy would refuse)');
select is(baas.create_webhook('creds', 'https://u:pw@example.test/h?token=t', collection => 'quiet', events => '{delete}') ->> 'name', 'creds', 'a URL with credentials');
select is((select details ->> 'url' from baas.audit_log where action = 'webhook.create' and details ->> 'webhook' = 'creds'),
          'https://example.test/h', 'is audited without its credentials and query');
select is(baas.create_webhook('mine', 'https://example.test/h', collection => 'hooked', events => '{delete}',
                              secret => 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw') ->> 'secret',
          'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'a secret of one''s own is kept');

-- Capture: in the writer's transaction, as any API role, only for named collections.
select baas.create_user('hook.writer@example.test', 'long enough pw') ->> 'id' as u \gset
select is(pg_temp.outcome_as(null, $$ select baas.create_document('hooked', '{"n": 1}', null, '00000000-0000-7000-8000-000000000001') $$), 'ok', 'an anonymous writer creates');
select is(pg_temp.outcome_as(null, $$ select baas.patch_document('hooked', '00000000-0000-7000-8000-000000000001', '{"n": 2}') $$), 'ok', 'updates');
select is(pg_temp.outcome_as(null, $$ select baas.create_document('quiet', '{"n": 1}') $$), 'ok', 'and writes elsewhere');
select is(array(select type from baas.webhook_events order by id), array['document.created', 'document.updated'],
          'one event per change of the named collection, none for the other; the delete-only webhook saw nothing');
select is((select payload #> '{data,document,data}' from baas.webhook_events where type = 'document.updated'), '{"n": 2}'::jsonb,
          'the payload holds the document');
select is((select payload #> '{data,previous,data}' from baas.webhook_events where type = 'document.updated'), '{"n": 1}'::jsonb,
          'and what it was');
select is((select payload -> 'data' ->> 'collection' from baas.webhook_events limit 1), 'hooked', 'and the collection');
select is(pg_temp.outcome_as(null, $$ select baas.delete_document('hooked', '00000000-0000-7000-8000-000000000001') $$), 'ok', 'a delete');
select is((select count(*)::int from baas.webhook_events where type = 'document.deleted'), 2, 'reaches both webhooks');

-- The claim: one event per (webhook, key) at a time, oldest first.
select is((select array_agg(body::jsonb ->> 'type' order by id) from baas._webhook_claim(10, 60, 10)),
          array['document.created', 'document.deleted'], 'the first claim: the oldest event of each webhook and document');
select is((select count(*)::int from baas._webhook_claim(10, 60, 10)), 0, 'the next ones wait for them');
select baas._webhook_delivered(e.id, e.attempts, 204) from baas.webhook_events e where e.type = 'document.created';
select is((select body::jsonb ->> 'type' from baas._webhook_claim(10, 60, 10)), 'document.updated', 'delivered: the next one of that document is due');
select baas._webhook_failed(e.id, e.attempts, 500, 'HTTP 500') from baas.webhook_events e where e.type = 'document.updated';
select ok((select next_attempt_at > now() and last_status = 500 and dead_at is null from baas.webhook_events where type = 'document.updated'),
          'a failure: due again later, its status kept');
select is((select count(*)::int from baas._webhook_claim(10, 60, 10) c where c.body::jsonb ->> 'type' = 'document.deleted'), 0,
          'and the delete of the same document waits behind it');

-- Dead letters and replay.
update baas.webhooks set max_attempts = 1 where name = 'orders';
update baas.webhook_events set next_attempt_at = now() where type = 'document.updated';
select baas._webhook_failed(c.id, c.attempt, 503, 'HTTP 503') from baas._webhook_claim(10, 60, 10) c where c.body::jsonb ->> 'type' = 'document.updated';
select is((select webhook || ' ' || type || ' ' || last_status from baas.webhook_dead_letters), 'orders document.updated 503',
          'out of attempts: in baas.webhook_dead_letters');
select is((select body::jsonb ->> 'type' from baas._webhook_claim(10, 60, 10) where webhook_id = (select id from baas.webhooks where name = 'orders')),
          'document.deleted', 'a dead event no longer holds back the next one');
select lives_ok($$ select baas.replay_webhook_event((select id from baas.webhook_dead_letters)) $$, 'replay_webhook_event');
select is((select count(*)::int from baas.webhook_dead_letters), 0, 'takes it out of the dead letters');
select is(pg_temp.detail_of('select baas.replay_webhook_event(-1)'), 'P0002 webhook_event_not_found', 'an unknown event');
select is(baas.replay_dead_webhook_events('orders'), 0::bigint, 'replay_dead_webhook_events counts what it replays');

-- Purge: rows delivered or dead long enough ago only.
update baas.webhook_events set created_at = now() - interval '2 days';
update baas.webhook_events set delivered_at = now() - interval '2 days' where delivered_at is not null;
update baas.webhook_events set dead_at = now(), last_error = 'fresh'
 where type = 'document.deleted' and webhook_id = (select id from baas.webhooks where name = 'mine');
select is(baas.purge_webhook_events('1 day'), 1::bigint, 'purge_webhook_events removes the event delivered 2 days ago, keeps pending ones');
select is((select last_error from baas.webhook_dead_letters), 'fresh', 'and an event created long ago but dead only now');

-- A lapsed lease (a proxy that never reported back): claimed again with the same
-- webhook-id; with no attempt left, dead.
update baas.webhooks set active = false where name in ('orders', 'mine');
select baas.create_webhook('lapse', 'http://127.0.0.1:9/l', collection => 'quiet', max_attempts => 2) is not null as l \gset
select is(pg_temp.outcome_as(null, $$ select baas.create_document('quiet', '{"n": 2}') $$), 'ok', 'a write for a webhook with 2 attempts');
create temp table c1 as select * from baas._webhook_claim(10, 60, 10);
select is((select msg_id ~ '^msg_[0-9a-f-]{36}$' and attempt = 1 from c1), true, 'claimed once: attempt 1, webhook-id msg_<uuid>');
update baas.webhook_events set claimed_until = now() - interval '1 second' where webhook_id = (select id from baas.webhooks where name = 'lapse');
select is((select msg_id || ' ' || attempt from baas._webhook_claim(10, 60, 10)), (select msg_id || ' 2' from c1),
          'its lease lapsed: claimed again, the same webhook-id, the next attempt');
update baas.webhook_events set claimed_until = now() - interval '1 second' where webhook_id = (select id from baas.webhooks where name = 'lapse');
select is((select count(*)::int from baas._webhook_claim(10, 60, 10)), 0, 'lapsed again at max_attempts: not claimed again');
select ok((select dead_at is not null and last_error like 'gave up after 2 attempts%' from baas.webhook_events
            where webhook_id = (select id from baas.webhooks where name = 'lapse')), 'but dead');
select is(pg_temp.detail_of($$ select baas.purge_webhook_events('1 minute') $$), '22023 invalid_request', 'at least an hour');

-- Tables: a trigger of the webhook's own.
create table public.hook_items (a integer, b text, v integer, primary key (a, b));
select baas.create_webhook('items', 'http://127.0.0.1:9/items', "table" => 'public.hook_items', events => '{insert,update}') is not null as t \gset
insert into public.hook_items values (1, 'x', 1);
update public.hook_items set v = 2;
delete from public.hook_items;
select is(array(select payload - 'timestamp' from baas.webhook_events where type like 'row.%' order by id),
          array['{"type": "row.inserted", "data": {"table": "public.hook_items", "key": {"a": 1, "b": "x"}, "row": {"a": 1, "b": "x", "v": 1}, "previous": null}}'::jsonb,
                '{"type": "row.updated", "data": {"table": "public.hook_items", "key": {"a": 1, "b": "x"}, "row": {"a": 1, "b": "x", "v": 2}, "previous": {"a": 1, "b": "x", "v": 1}}}'::jsonb],
          'table events: the key, the row and what it was; no delete (not asked for)');
select baas.drop_webhook('items');
insert into public.hook_items values (2, 'y', 1);
select is((select count(*)::int from baas.webhook_events where type like 'row.%'), 0, 'drop_webhook: its trigger and events are gone');
select is(pg_temp.detail_of($$ select baas.drop_webhook('items') $$), 'P0002 webhook_not_found', 'dropping it again');
select is(pg_temp.detail_of($$ select baas.create_webhook('own', 'http://x/', "table" => 'baas.webhook_events') $$), '22023 invalid_request',
          'no webhook on pgbaas''s own tables');
select is(pg_temp.detail_of($$ select baas.create_webhook('own', 'http://x/', "table" => 'baas.users') $$), '22023 invalid_request', 'such as baas.users');
select is(baas.create_webhook('twice', 'http://x/', "table" => 'public.hook_items', events => '{update,insert,update}') -> 'events',
          '["update", "insert"]'::jsonb, 'an event named twice counts once');
update public.hook_items set v = 3;
select is((select count(*)::int from baas.webhook_events where type = 'row.updated'), 1, 'and is captured once');
select ok((select payload #>> '{data,key}' = (select key from baas.webhook_events where type = 'row.updated') from baas.webhook_events where type = 'row.updated'),
          'the event is filed under its key');
drop table public.hook_items;
select is(baas.set_webhook_active('twice', false) -> 'table', 'null'::jsonb, 'its table dropped: no table name (not an OID)');
select lives_ok($$ select baas.drop_webhook('twice') $$, 'drop_webhook after its table was dropped');

-- All of it is the DBA's.
select is(array[pg_temp.sqlstate_as('baas_service', $$ select baas.create_webhook('x', 'http://x/', collection => 'hooked') $$),
                pg_temp.sqlstate_as('baas_service', 'select * from baas.webhooks'),
                pg_temp.sqlstate_as('baas_user', 'select * from baas.webhook_events'),
                pg_temp.sqlstate_as('baas_service', 'select * from baas.webhook_dead_letters'),
                pg_temp.sqlstate_as('baas_service', $$ select baas.purge_webhook_events('1 day') $$),
                pg_temp.sqlstate_as('baas_service', 'select * from baas._webhook_claim(1, 60, 1)'),
                pg_temp.sqlstate_as('baas_anon', $$ select baas.set_webhook_active('orders', false) $$)],
          array['42501', '42501', '42501', '42501', '42501', '42501', '42501'], 'API roles can neither manage nor read webhooks');

select * from finish();
rollback;
