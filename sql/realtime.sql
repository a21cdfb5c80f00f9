-- pgbaas live change feeds, the capture (issue 14; docs/realtime.md "Capture").
--
-- Writers' triggers put each change into the WAL as a transactional logical message
-- (pg_logical_emit_message(true, 'baas:<secret>', json)): it is decoded only if and when its
-- transaction commits, in commit order, so there is no ordering to reconstruct and
-- nothing for a rolled-back transaction. The writer pays a WAL record, no table write,
-- no lock and no NOTIFY (a NOTIFY takes a database-wide lock at commit, serialising
-- every writer). With wal_level below logical the triggers emit nothing.
--
-- One puller at a time, baas._realtime_pull() (extension/src/api/realtime.rs), reads the
-- messages from a logical replication slot with the built-in pgoutput plugin over the
-- empty publication baas_realtime (so only our messages are decoded: no REPLICA
-- IDENTITY, nothing of the tables' rows) and appends them to baas.realtime_events
-- with a position, strictly increasing in commit order. Every proxy reads from there
-- (baas._realtime_read) when baas_realtime is notified.

----------------------------------------------------------------------- the event log
create table baas.realtime_events (
    position bigint primary key,
    -- The writer's transaction (a snapshot taken before it committed does not see it:
    -- a snapshot-then-stream subscription skips the events its snapshot already holds).
    xid xid8 not null,
    committed_at timestamptz not null,
    kind text not null check (kind in ('doc', 'member', 'nest', 'collection', 'reset')),
    collection text,
    body jsonb not null,
    -- Size of the captured message: what realtime_retention_bytes counts.
    bytes integer not null,
    -- When the puller appended it (its transaction's start): what realtime_retention
    -- counts, never the writer's commit time, which after a lagging capture is older than
    -- events no proxy has read yet.
    appended_at timestamptz not null default now()
);
-- Retention's age cut and its "keep the last seconds" bound (baas._realtime_prune).
create index realtime_events_appended on baas.realtime_events (appended_at, position);
revoke all on baas.realtime_events from public;
alter table baas.realtime_events enable row level security;

-- The puller's own bookkeeping, one row, changed only in the puller's transaction, so
-- that it always agrees with baas.realtime_events:
--   slot_name       the slot in use (baas_rt_<database oid>_<generation>); NULL: none yet
--   slot_lsn        end LSN of the last transaction appended (or a later point the
--                   puller knows holds nothing more): where the slot is advanced to at the
--                   start of the next pull (docs/realtime.md, "exactly once")
--   last_position   the last position given; last_reset the last reset event's (0: none)
--   retained_bytes  sum of realtime_events.bytes
create table baas._realtime_state (
    singleton boolean primary key default true check (singleton),
    slot_name text,
    generation integer not null default 0,
    slot_lsn pg_lsn not null default '0/0',
    last_position bigint not null default 0,
    last_reset bigint not null default 0,
    retained_bytes bigint not null default 0,
    last_append timestamptz
);
insert into baas._realtime_state default values;
revoke all on baas._realtime_state from public;
alter table baas._realtime_state enable row level security;
-- Dumped so that positions continue after a restore: a client's resume position from
-- before must never name a different event afterwards. The restored row replaces the
-- one CREATE EXTENSION made, without its slot: the first pull makes a new slot and
-- appends a reset, which every resume from before it gets.
select pg_catalog.pg_extension_config_dump('baas._realtime_state', '');
create function baas._realtime_state_restore() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if baas._restoring() then
        delete from baas._realtime_state;
        new.slot_name := null;
    end if;
    return new;
end
$$;
create trigger realtime_state_restore before insert on baas._realtime_state
    for each row execute function baas._realtime_state_restore();

-------------------------------------------------------------------------- capture
-- The messages' prefix, 'baas:' and a random secret made at CREATE EXTENSION, readable
-- by the extension's owner only. pg_logical_emit_message is executable by PUBLIC, so any
-- role able to run SQL can emit a message under any prefix it knows: the puller takes
-- only this one (extension/src/realtime/pgoutput.rs), so a forged message is skipped.
-- Not dumped: a restored database has its own from its CREATE EXTENSION.
create table baas._realtime_secret (
    singleton boolean primary key default true check (singleton),
    prefix text not null default 'baas:' || replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', '')
);
insert into baas._realtime_secret default values;
revoke all on baas._realtime_secret from public;
alter table baas._realtime_secret enable row level security;

-- The triggers run as the extension's owner (SECURITY DEFINER, fixed search_path): the
-- only ones that read the prefix's secret.
-- Nothing is emitted while a dump is loaded (the restored rows are not changes) or
-- when wal_level is below logical (no slot could read it).

-- One message each: {"kind", "collection", "body"}; the puller stores the three as
-- they come.
create function baas._realtime_document() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_name text;
    v_on boolean;
    v_prefix text;
begin
    if current_setting('wal_level') <> 'logical'
       or (current_setting('row_security') = 'off' and baas._restoring()) then
        return null;
    end if;
    -- A dropped collection's row is gone before the cascade deletes its documents: they
    -- emit nothing (the collection's trigger below emits one "dropped" event instead).
    select c.name, c.realtime, (select p.prefix from baas._realtime_secret p) into v_name, v_on, v_prefix
      from baas.collections c
     where c.id = case when tg_op = 'DELETE' then old.collection_id else new.collection_id end;
    if not found or not v_on then
        return null;
    end if;
    perform pg_logical_emit_message(true, v_prefix, jsonb_build_object('kind', 'doc', 'collection', v_name, 'body', jsonb_build_object(
        'id', case when tg_op = 'DELETE' then old.id else new.id end,
        'op', lower(tg_op),
        'version', case when tg_op = 'DELETE' then old.version else new.version end,
        'old', case when tg_op <> 'INSERT' then baas._document_json(old, v_name) end,
        'new', case when tg_op <> 'DELETE' then baas._document_json(new, v_name) end))::text);
    return null;
end
$$;
create trigger documents_realtime after insert or update or delete on baas.documents
    for each row execute function baas._realtime_document();

-- A role membership (baas.role_members: kind "member", body `user`) or a role nesting
-- (baas.role_roles: kind "nest", body `member_role`) added or removed; an update is a
-- remove and an add. One function for both tables: the row is read as JSON, so the
-- column that differs is picked by name.
create function baas._realtime_role_change() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_prefix text;
    v_member boolean := tg_table_name = 'role_members';
    v_kind text := case when v_member then 'member' else 'nest' end;
    v_key text := case when v_member then 'user' else 'member_role' end;
    v_column text := case when v_member then 'user_id' else 'member_role' end;
begin
    if current_setting('wal_level') <> 'logical'
       or (current_setting('row_security') = 'off' and baas._restoring()) then
        return null;
    end if;
    select p.prefix into v_prefix from baas._realtime_secret p;
    if tg_op in ('DELETE', 'UPDATE') then
        perform pg_logical_emit_message(true, v_prefix, jsonb_build_object('kind', v_kind, 'collection', null, 'body',
            jsonb_build_object(v_key, to_jsonb(old) -> v_column, 'role', old.role, 'op', 'remove'))::text);
    end if;
    if tg_op in ('INSERT', 'UPDATE') then
        perform pg_logical_emit_message(true, v_prefix, jsonb_build_object('kind', v_kind, 'collection', null, 'body',
            jsonb_build_object(v_key, to_jsonb(new) -> v_column, 'role', new.role, 'op', 'add'))::text);
    end if;
    return null;
end
$$;
create trigger role_members_realtime after insert or update or delete on baas.role_members
    for each row execute function baas._realtime_role_change();
create trigger role_roles_realtime after insert or update or delete on baas.role_roles
    for each row execute function baas._realtime_role_change();

-- A feed switched on or off, a collection dropped.
create function baas._realtime_collection() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_prefix text;
begin
    if current_setting('wal_level') <> 'logical'
       or (current_setting('row_security') = 'off' and baas._restoring()) then
        return null;
    end if;
    select p.prefix into v_prefix from baas._realtime_secret p;
    if tg_op = 'DELETE' then
        perform pg_logical_emit_message(true, v_prefix, jsonb_build_object('kind', 'collection', 'collection', old.name, 'body',
            jsonb_build_object('collection', old.name, 'dropped', true))::text);
    elsif old.realtime is distinct from new.realtime then
        perform pg_logical_emit_message(true, v_prefix, jsonb_build_object('kind', 'collection', 'collection', new.name, 'body',
            jsonb_build_object('collection', new.name, 'realtime', new.realtime))::text);
    end if;
    return null;
end
$$;
create trigger collections_realtime after update or delete on baas.collections
    for each row execute function baas._realtime_collection();

-- Service tokens and DBAs: switch a collection's feed. Off, its changes are not
-- captured and its subscriptions end (feed_disabled); on again, new changes are.
create function baas.set_realtime(collection text, enabled boolean) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
begin
    if enabled is null then
        raise exception using errcode = '22023', detail = 'invalid_request', message = 'enabled must be true or false';
    end if;
    update baas.collections x set realtime = enabled where x.id = c.id and x.realtime is distinct from enabled;
    select * into c from baas.collections x where x.id = c.id;
    return baas._collection_json(c);
end
$$;
comment on function baas.set_realtime(text, boolean) is
    'Switch a collection''s live feed on or off (service tokens, DBAs); returns the collection';

---------------------------------------------------------------------- the puller's
-- Retention, run by the puller at most once a second, after its appends: delete the
-- oldest events, a prefix of the log, appended (appended_at, not the writer's commit
-- time) longer than realtime_retention ago, or past realtime_retention_bytes. Never an
-- event after keep_after (the calling pull's own appends) nor one appended in the last
-- 10 seconds, whatever the byte bound: a proxy reads within milliseconds of the notify,
-- so it has read them first. Deletes from the oldest end in chunks of 5,000 positions,
-- at most 8 chunks a call (so a call's work is bounded, and a backlog goes over a few
-- seconds); the byte total is the state row's running one, never a scan of the table.
-- Returns how many it deleted. Cheap when there is nothing to do (two index probes).
create function baas._realtime_prune(keep_after bigint) returns bigint
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    s baas.settings;
    st baas._realtime_state;
    v_first bigint;
    v_oldest timestamptz;
    v_limit bigint;
    v_age_cut bigint;
    v_excess bigint;
    v_end bigint;
    v_cut bigint;
    v_bcut bigint;
    v_n bigint := 0;
    v_d bigint;
    v_bytes bigint;
    v_total bigint := 0;
    v_rounds integer := 0;
begin
    select * into s from baas.settings;
    select * into st from baas._realtime_state;
    select e.position, e.appended_at into v_first, v_oldest from baas.realtime_events e order by e.position limit 1;
    if v_first is null or (v_oldest >= now() - s.realtime_retention and st.retained_bytes <= s.realtime_retention_bytes) then
        return 0;
    end if;
    -- The newest event that may go.
    select e.position - 1 into v_limit from baas.realtime_events e
     where e.appended_at >= now() - interval '10 seconds' order by e.appended_at, e.position limit 1;
    v_limit := least(coalesce(v_limit, st.last_position), keep_after);
    -- Everything before the first young enough event is old (append times follow
    -- positions: one puller at a time, give or take clock steps).
    select e.position - 1 into v_age_cut from baas.realtime_events e
     where e.appended_at >= now() - s.realtime_retention order by e.appended_at, e.position limit 1;
    v_age_cut := coalesce(v_age_cut, st.last_position);
    v_excess := st.retained_bytes - s.realtime_retention_bytes;
    while v_rounds < 8 and v_first <= v_limit loop
        v_end := least(v_first + 4999, v_limit);
        v_cut := least(v_age_cut, v_end);
        if v_excess > 0 then
            -- The first position whose deletion (with all before it) brings the total
            -- within the bound; the whole chunk when it is not enough.
            select x.position into v_bcut
              from (select e.position, sum(e.bytes) over (order by e.position) as acc
                      from baas.realtime_events e where e.position between v_first and v_end) x
             where x.acc >= v_excess order by x.position limit 1;
            v_cut := greatest(v_cut, coalesce(v_bcut, v_end));
        end if;
        exit when v_cut < v_first;
        with d as (delete from baas.realtime_events e where e.position between v_first and v_cut returning e.bytes)
        select count(*), coalesce(sum(d.bytes), 0) into v_d, v_bytes from d;
        v_n := v_n + v_d;
        v_total := v_total + v_bytes;
        v_excess := v_excess - v_bytes;
        v_first := v_cut + 1;
        v_rounds := v_rounds + 1;
    end loop;
    if v_n > 0 then
        update baas._realtime_state set retained_bytes = greatest(retained_bytes - v_total, 0);
    end if;
    return v_n;
end
$$;

-- The proxies' reads (baas_authenticator only): events after `after`, in order, with
-- their writers' commit time (the proxy's pgbaas_realtime_lag_seconds).
create function baas._realtime_read(after bigint, max_events integer)
returns table ("position" bigint, xid xid8, kind text, collection text, body jsonb, committed_at timestamptz)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select e.position, e.xid, e.kind, e.collection, e.body, e.committed_at from baas.realtime_events e
     where e.position > after order by e.position limit greatest(max_events, 0)
$$;

-- Resuming after position p is exact iff last_reset <= p <= last and p >= oldest - 1
-- (docs/realtime.md). oldest is last + 1 when nothing is retained.
create function baas._realtime_window()
returns table (oldest bigint, last bigint, last_reset bigint)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select coalesce((select e.position from baas.realtime_events e order by e.position limit 1), s.last_position + 1),
           s.last_position, s.last_reset
      from baas._realtime_state s
$$;

-- The last position in the caller's snapshot (every API role: it reveals a number).
create function baas.realtime_position() returns bigint
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$ select coalesce((select s.last_position from baas._realtime_state s), 0) $$;
comment on function baas.realtime_position() is 'The last live-feed position visible in this snapshot';

-- Direct memberships of some users, and the whole role nesting: the proxies' principal
-- sets (baas_authenticator only).
create function baas._realtime_role_members(users uuid[]) returns table (user_id uuid, role text)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$ select m.user_id, m.role from baas.role_members m where m.user_id = any(users) $$;

create function baas._realtime_role_nesting() returns table (member_role text, role text)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$ select r.member_role, r.role from baas.role_roles r $$;

----------------------------------------------------------------------------- DBAs
-- What the capture holds and costs, as one JSON object.
create function baas.realtime_status() returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    st baas._realtime_state;
    s baas.settings;
    r record;
    v_keep text := current_setting('max_slot_wal_keep_size');
    v_warnings text[] := '{}';
    v_oldest bigint;
    v_count bigint;
begin
    select * into st from baas._realtime_state;
    select * into s from baas.settings;
    select * into r from pg_replication_slots x where x.slot_name = st.slot_name;
    select e.position into v_oldest from baas.realtime_events e order by e.position limit 1;
    select count(*) into v_count from baas.realtime_events;
    if current_setting('wal_level') <> 'logical' then
        v_warnings := v_warnings || 'wal_level is not logical: nothing is captured (set it and restart)'::text;
    end if;
    if v_keep = '-1' then
        v_warnings := v_warnings || 'max_slot_wal_keep_size is -1: a slot nobody reads keeps WAL without bound'::text;
    end if;
    if r.slot_name is not null and r.wal_status in ('extended', 'unreserved', 'lost') then
        v_warnings := v_warnings || format('the slot''s WAL is %s: it is falling behind (lost means a reset)', r.wal_status);
    end if;
    return jsonb_build_object(
        'wal_level', current_setting('wal_level'),
        'wal_level_ok', current_setting('wal_level') = 'logical',
        'slot', case when r.slot_name is null then null else jsonb_build_object(
            'name', r.slot_name, 'active', r.active, 'wal_status', r.wal_status,
            'restart_lsn', r.restart_lsn::text, 'confirmed_flush_lsn', r.confirmed_flush_lsn::text,
            'retained_wal_bytes', pg_wal_lsn_diff(pg_current_wal_lsn(), r.restart_lsn)::bigint,
            'lag_bytes', pg_wal_lsn_diff(pg_current_wal_lsn(), r.confirmed_flush_lsn)::bigint) end,
        'max_slot_wal_keep_size', v_keep,
        'events', v_count,
        'oldest_position', coalesce(v_oldest, st.last_position + 1),
        'last_position', st.last_position,
        'last_reset', st.last_reset,
        'retained_bytes', st.retained_bytes,
        'retention', s.realtime_retention::text,
        'retention_bytes', s.realtime_retention_bytes,
        'last_append', st.last_append,
        'feeds_off', coalesce((select jsonb_agg(c.name order by c.name) from baas.collections c where not c.realtime), '[]'),
        'warnings', to_jsonb(v_warnings));
end
$$;
comment on function baas.realtime_status() is 'DBAs: the live-feed capture: slot, retained WAL, lag, events, retention';

-- Stop capturing into a slot: drop it (and the publication), releasing the WAL it held.
-- Writers keep emitting (cheap) while wal_level is logical; the next pull makes a new
-- slot and appends a reset (events between are lost, and clients are told so).
create function baas.realtime_disable() returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_dropped boolean := false;
    v_slot text;
begin
    -- The puller's lock: never drop a slot under a pull.
    perform pg_advisory_xact_lock(7089054436927209473);
    for v_slot in select x.slot_name from pg_replication_slots x
                   where x.database = current_database()
                     and starts_with(x.slot_name::text, 'baas_rt_' || (select d.oid from pg_database d where d.datname = current_database()) || '_') loop
        perform pg_drop_replication_slot(v_slot);
        v_dropped := true;
    end loop;
    drop publication if exists baas_realtime;
    update baas._realtime_state set slot_name = null;
    return v_dropped;
end
$$;
comment on function baas.realtime_disable() is
    'DBAs: drop the live-feed slot and publication (frees retained WAL); the next pull recreates them and appends a reset';
