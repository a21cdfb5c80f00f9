-- Issue 14: the capture of live change feeds (sql/realtime.sql). Not in one
-- transaction like the other files: a replication slot can only be made by a
-- transaction that has written nothing, and a logical message is decoded only once its
-- transaction commits. So every statement commits, and the end cleans up (the feed's
-- slot dropped, the accounts and collection removed).
select plan(55);

select baas.signup('rt1@realtime.test', 'long enough pw') -> 'user' ->> 'id' as u1 \gset
select baas.signup('rt2@realtime.test', 'long enough pw') -> 'user' ->> 'id' as u2 \gset

-------------------------------------------------------------------- first pulls
select baas._realtime_pull() is not null as ok \gset
select is((select count(*)::int from pg_publication where pubname = 'baas_realtime'), 1, 'the first pull makes the (empty) publication');
select is((select count(*)::int from pg_publication_rel r join pg_publication p on p.oid = r.prpubid where p.pubname = 'baas_realtime'),
          0, 'with no tables in it');
select baas._realtime_pull() as p0 \gset
select is((select kind from baas.realtime_events where position = :p0), 'reset', 'the slot''s first pull appends a reset');
select is((select body from baas.realtime_events where position = :p0), '{"reason": "capture_reset"}'::jsonb, 'reason capture_reset');
select is((select last_reset from baas._realtime_window()), :p0::bigint, 'the window names it');
select is((select count(*)::int from pg_replication_slots where slot_name like 'baas_rt_%' and database = current_database()), 1,
          'one slot for this database');
select is(baas._realtime_pull(), :p0::bigint, 'a pull with nothing new returns the same position');

-------------------------------------------------------------------- documents
select baas.create_collection('rt_notes', '{"default_acl": {"read": ["authenticated"]}}') -> 'options' -> 'realtime' as rt \gset
select is(:'rt'::text, 'true', 'a new collection''s feed is on');
select is(pg_temp.outcome_as(:'u1', $$ select baas.create_document('rt_notes', '{"n": 1}', null, '0190f5b4-0000-7000-8000-000000000001') $$),
          'ok', 'a user creates a document');
select is(pg_temp.outcome_as(:'u1', $$ select baas.patch_document('rt_notes', '0190f5b4-0000-7000-8000-000000000001', '{"n": 2}') $$),
          'ok', 'patches it');
select is(pg_temp.outcome_as(:'u1', $$ select baas.set_acl('rt_notes', '0190f5b4-0000-7000-8000-000000000001', '{"read": ["public"]}') $$),
          'ok', 'changes its ACL');
select is(pg_temp.outcome_as(:'u1', $$ select baas.delete_document('rt_notes', '0190f5b4-0000-7000-8000-000000000001') $$),
          'ok', 'deletes it');
-- Rolled back: nothing.
begin;
select baas.create_document('rt_notes', '{"n": 99}') is not null as ok \gset
rollback;
select baas._realtime_pull() as p1 \gset
select is(:p1::bigint - :p0::bigint, 4::bigint, 'four committed changes, four events; the rolled-back one none');
select is((select array_agg(body ->> 'op' order by position) from baas.realtime_events where position > :p0),
          '{insert,update,update,delete}', 'in commit (and emission) order');
select is((select body from baas.realtime_events where position = :p0 + 1) - 'new',
          jsonb_build_object('id', '0190f5b4-0000-7000-8000-000000000001', 'op', 'insert', 'version', 1, 'old', null),
          'insert: id, op, version, old null');
select is((select (body -> 'new') - 'created_at'::text - 'updated_at'::text from baas.realtime_events where position = :p0 + 1),
          jsonb_build_object('id', '0190f5b4-0000-7000-8000-000000000001', 'collection', 'rt_notes', 'owner', :'u1', 'version', 1,
                             'data', '{"n": 1}'::jsonb, 'acl', '{"read": ["authenticated"], "update": [], "delete": []}'::jsonb),
          'insert: new is the document as GET shows it');
select is((select (body -> 'old' -> 'data', body -> 'new' -> 'data', body -> 'version')::text from baas.realtime_events where position = :p0 + 2),
          '("{""n"": 1}","{""n"": 2}",2)', 'update: old and new versions');
select is((select (body -> 'old' -> 'acl' -> 'read', body -> 'new' -> 'acl' -> 'read')::text from baas.realtime_events where position = :p0 + 3),
          '("[""authenticated""]","[""public""]")', 'an ACL change is an update with both ACLs');
select is((select (body -> 'new', body -> 'old' -> 'version', body -> 'version')::text from baas.realtime_events where position = :p0 + 4),
          '(null,3,3)', 'delete: new null, old the last version');
select is((select array_agg(distinct collection) from baas.realtime_events where position > :p0), '{rt_notes}', 'collection column');
select ok((select bool_and(committed_at <= now() and committed_at > now() - interval '1 minute' and bytes > 0)
             from baas.realtime_events where position > :p0), 'commit time and size of each');
select is((select count(distinct xid)::int from baas.realtime_events where position > :p0), 4,
          'each event carries its writer''s transaction (four here)');

-------------------------------------------------------------------- feed switch
select is(baas.set_realtime('rt_notes', false) -> 'options' -> 'realtime', 'false'::jsonb, 'set_realtime switches the feed off');
select is(pg_temp.outcome_as(:'u1', $$ select baas.create_document('rt_notes', '{"n": 5}') $$), 'ok', 'a write while it is off');
select baas.set_realtime('rt_notes', true) is not null as ok \gset
select baas._realtime_pull() as p2 \gset
select is((select array_agg(body order by position) from baas.realtime_events where position > :p1),
          array['{"collection": "rt_notes", "realtime": false}', '{"collection": "rt_notes", "realtime": true}']::jsonb[],
          'off, then on: two collection events and nothing of the write between');
select is((select baas.create_collection('rt_quiet', '{"realtime": false}') -> 'options' -> 'realtime'), 'false'::jsonb,
          'create_collection takes realtime: false');
select is(pg_temp.detail_of($$ select baas.create_collection('rt_bad', '{"realtime": 1}') $$), '22023 invalid_options',
          'realtime must be a boolean');
select is(baas.realtime_status() -> 'feeds_off', '["rt_quiet"]'::jsonb, 'realtime_status lists feeds that are off');

-------------------------------------------------------------------- roles
select baas.create_role('rt_eds') is null as ok \gset
select baas.create_role('rt_chiefs') is null as ok \gset
select baas.add_role_member('rt_eds', :'u2') is null as ok \gset
select baas.add_role_to_role('rt_chiefs', 'rt_eds') is null as ok \gset
select baas.drop_role('rt_eds') is null as ok \gset
select baas._realtime_pull() as p3 \gset
select is((select array_agg(kind || ' ' || body::text order by position) from baas.realtime_events where position in (:p2 + 1, :p2 + 2)),
          array['member ' || jsonb_build_object('op', 'add', 'role', 'rt_eds', 'user', :'u2')::text,
                'nest {"op": "add", "role": "rt_chiefs", "member_role": "rt_eds"}'],
          'a membership and a nesting added');
select is((select array_agg(kind || ' ' || body::text order by kind) from baas.realtime_events where position > :p2 + 2),
          array['member ' || jsonb_build_object('op', 'remove', 'role', 'rt_eds', 'user', :'u2')::text,
                'nest {"op": "remove", "role": "rt_chiefs", "member_role": "rt_eds"}'],
          'and both removed by the role''s drop (in cascade)');

-------------------------------------------------------------------- dropped collection
select is(pg_temp.outcome_as(:'u1', $$ select baas.create_document('rt_notes', '{"n": 6}') $$), 'ok', 'one more document');
select baas.drop_collection('rt_notes') is null as ok \gset
select baas._realtime_pull() as p4 \gset
select is((select array_agg(kind || ' ' || body::text order by position) from baas.realtime_events where position > :p3 + 1),
          array['collection {"dropped": true, "collection": "rt_notes"}'],
          'dropping a collection is one dropped event, no per-document deletes');

-------------------------------------------------------------------- reads, window, position
select is((select array_agg(position order by position) from baas._realtime_read(:p0, 2)), array[:p0 + 1, :p0 + 2]::bigint[],
          '_realtime_read: after a position, at most n, in order');
select is((select (oldest, last)::text from baas._realtime_window()), format('(1,%s)', :p4), '_realtime_window: oldest and last');
select is(baas.realtime_position(), :p4::bigint, 'realtime_position: the last one');
select is(pg_temp.outcome_as(null, 'select baas.realtime_position()'), 'ok', 'which anonymous callers may ask');

-------------------------------------------------------------------- who may do what
select is(pg_temp.sqlstate_as(r, 'select count(*) from baas.realtime_events'), '42501', r || ' cannot read the event log')
  from unnest(array['baas_anon', 'baas_user', 'baas_service']) r;
select is(pg_temp.sqlstate_as(r, 'select baas._realtime_read(0, 1)'), '42501', r || ' cannot call _realtime_read')
  from unnest(array['baas_anon', 'baas_user', 'baas_service']) r;
select is(pg_temp.sqlstate_as(r, 'select baas._realtime_pull()'), '42501', r || ' cannot call _realtime_pull')
  from unnest(array['baas_anon', 'baas_user', 'baas_service']) r;
select is(pg_temp.sqlstate_as('baas_service', 'select baas.realtime_status()'), '42501', 'realtime_status is for DBAs');
select is(pg_temp.sqlstate_as('baas_authenticator', 'select baas._realtime_window()'), 'ok', 'the proxy''s role reads the window');

-------------------------------------------------------------------- retention
-- Age counts from the append (a lagging capture never prunes what it just appended).
update baas.realtime_events set appended_at = now() - interval '2 days' where position <= :p1;
select cmp_ok(baas._realtime_prune(:p4), '=', :p1::bigint, 'retention deletes the events past realtime_retention');
select is((select oldest from baas._realtime_window()), :p1::bigint + 1, 'and the window starts after them');
update baas.settings set realtime_retention_bytes = 1048576;
update baas._realtime_state set retained_bytes = retained_bytes + 1048576;
select cmp_ok(baas._realtime_prune(:p4), '=', 0::bigint, 'the last 10 seconds of appends stay, whatever the byte bound');
update baas.realtime_events set appended_at = now() - interval '1 minute';
select cmp_ok(baas._realtime_prune(:p4), '>', 0::bigint, 'over realtime_retention_bytes, the oldest go');
update baas.settings set realtime_retention_bytes = default;

-------------------------------------------------------------------- disable
select ok(baas.realtime_disable(), 'realtime_disable drops the slot');
select is((select count(*)::int from pg_replication_slots where slot_name like 'baas_rt_%' and database = current_database()), 0,
          'no slot left holding WAL');
select baas._realtime_pull() is not null as ok \gset
select baas._realtime_pull() as p5 \gset
select is((select (kind, body ->> 'reason')::text from baas.realtime_events where position = :p5), '(reset,capture_reset)',
          'the next pulls make a new slot and append a reset');
select is((select last_reset from baas._realtime_window()), :p5::bigint, 'which resumes from before cannot pass');

-- Clean up for the files after this one.
select baas.realtime_disable() as ok \gset
select baas.drop_collection('rt_quiet') is null as ok \gset
delete from baas.users where email like '%@realtime.test';
delete from baas.realtime_events;
update baas._realtime_state set last_position = 0, last_reset = 0, retained_bytes = 0, slot_lsn = '0/0';
select * from finish();
