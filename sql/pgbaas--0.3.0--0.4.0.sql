-- pgbaas 0.3.0 -> 0.4.0, run by ALTER EXTENSION pgbaas UPDATE.
--
-- It turns a 0.3.0 database into exactly what CREATE EXTENSION makes at 0.4.0:
-- tests/tests/upgrade.rs installs 0.3.0 from its release commit, fills it, runs this,
-- checks the data through the proxy and compares the schema (pg_dump --binary-upgrade)
-- with a fresh install's. Every statement below is the final text of the file it names
-- (sql/CHANGES-0.4.0.md lists what changed and why). Older databases upgrade through
-- the earlier scripts first.
--
-- Once released, an upgrade script is never edited: a fix goes into the next version's.

-------------------------------------------------------------------- live change feeds (issue 14)
-- Settings and the per-collection feed switch: new columns at the end, as in
-- sql/schema.sql and sql/documents.sql (a DBA's view on baas.settings stays valid).
-- Added without a default, filled, then given it: ADD COLUMN with a default would keep
-- that value as the column's "missing value" (pg_attribute.attmissingval) for the old
-- rows, which a fresh install's table does not have.
alter table baas.settings add column realtime_retention interval, add column realtime_retention_bytes bigint;
update baas.settings set realtime_retention = '24 hours', realtime_retention_bytes = 1073741824;
alter table baas.settings
    alter column realtime_retention set default '24 hours',
    alter column realtime_retention set not null,
    add constraint settings_realtime_retention_check check (realtime_retention between '1 minute' and '365 days'),
    alter column realtime_retention_bytes set default 1073741824,
    alter column realtime_retention_bytes set not null,
    add constraint settings_realtime_retention_bytes_check
        check (realtime_retention_bytes between 1048576 and 1099511627776);
alter table baas.collections add column realtime boolean;
update baas.collections set realtime = true;
alter table baas.collections alter column realtime set default true, alter column realtime set not null;

-- sql/documents.sql: the collection JSON shows options.realtime; create_collection takes it.
create or replace function baas._collection_json(c baas.collections) returns jsonb
language sql stable parallel safe
as $$
    select jsonb_build_object(
        'name', c.name, 'created_at', c.created_at,
        'options', jsonb_build_object(
            'create', to_jsonb(c.create_acl),
            'default_acl', jsonb_build_object('read', to_jsonb(c.default_read),
                'update', to_jsonb(c.default_update), 'delete', to_jsonb(c.default_delete)),
            'schema', c.schema, 'realtime', c.realtime))
$$;

create or replace function baas.create_collection(name text, options jsonb default '{}') returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    o jsonb;
    c baas.collections;
begin
    perform baas._check_collection_name(create_collection.name);
    o := baas._normalize_collection_options(options);
    perform baas._check_new_principals(jsonb_build_object('create', o -> 'create') || (o -> 'default_acl'));
    insert into baas.collections (name, create_acl, default_read, default_update, default_delete, schema, realtime)
    values (create_collection.name,
            array(select jsonb_array_elements_text(o -> 'create')),
            array(select jsonb_array_elements_text(o -> 'default_acl' -> 'read')),
            array(select jsonb_array_elements_text(o -> 'default_acl' -> 'update')),
            array(select jsonb_array_elements_text(o -> 'default_acl' -> 'delete')),
            nullif(o -> 'schema', 'null'),
            (o ->> 'realtime')::boolean)
    on conflict (name) do nothing
    returning * into c;
    if not found then
        raise exception using errcode = '23505', detail = 'collection_exists',
            message = format('collection %s already exists', create_collection.name);
    end if;
    return baas._collection_json(c);
end
$$;
comment on function baas.create_collection(text, jsonb) is
    'Create a collection. options: create (principals), default_acl, schema (JSON Schema), realtime (live feed, default true)';

-- The puller (extension/src/api/realtime.rs), as pgrx declares it.
create function baas."_realtime_pull"(
	"max_changes" INT DEFAULT 10000 /* i32 */
) RETURNS bigint /* Option < i64 > */
STRICT VOLATILE SECURITY DEFINER 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'realtime_pull_wrapper';

-- sql/realtime.sql, whole.
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

create function baas._realtime_role_member() returns trigger
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
    if tg_op in ('DELETE', 'UPDATE') then
        perform pg_logical_emit_message(true, v_prefix, jsonb_build_object('kind', 'member', 'collection', null, 'body',
            jsonb_build_object('user', old.user_id, 'role', old.role, 'op', 'remove'))::text);
    end if;
    if tg_op in ('INSERT', 'UPDATE') then
        perform pg_logical_emit_message(true, v_prefix, jsonb_build_object('kind', 'member', 'collection', null, 'body',
            jsonb_build_object('user', new.user_id, 'role', new.role, 'op', 'add'))::text);
    end if;
    return null;
end
$$;
create trigger role_members_realtime after insert or update or delete on baas.role_members
    for each row execute function baas._realtime_role_member();

create function baas._realtime_role_role() returns trigger
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
    if tg_op in ('DELETE', 'UPDATE') then
        perform pg_logical_emit_message(true, v_prefix, jsonb_build_object('kind', 'nest', 'collection', null, 'body',
            jsonb_build_object('member_role', old.member_role, 'role', old.role, 'op', 'remove'))::text);
    end if;
    if tg_op in ('INSERT', 'UPDATE') then
        perform pg_logical_emit_message(true, v_prefix, jsonb_build_object('kind', 'nest', 'collection', null, 'body',
            jsonb_build_object('member_role', new.member_role, 'role', new.role, 'op', 'add'))::text);
    end if;
    return null;
end
$$;
create trigger role_roles_realtime after insert or update or delete on baas.role_roles
    for each row execute function baas._realtime_role_role();

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

-- The proxies' reads (baas_authenticator only): events after `after`, in order.
create function baas._realtime_read(after bigint, max_events integer)
returns table ("position" bigint, xid xid8, kind text, collection text, body jsonb)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select e.position, e.xid, e.kind, e.collection, e.body from baas.realtime_events e
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

-- sql/lints.sql: the new public functions are documented (docs/sql.md).
create or replace function baas.security_lints()
returns table (lint text, object text, detail text)
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    -- 1. A relation in schema baas that an API role can read or write, even one
    --    column of, must have row-level security, forced (so its owner obeys the
    --    policies too). Views cannot.
    select 'rls_not_forced', c.oid::regclass::text,
           case when c.relkind in ('v', 'm') then 'a view an API role can use bypasses row-level security'
                when not c.relrowsecurity then 'usable by an API role without row-level security'
                else 'usable by an API role; row-level security is not forced' end
      from pg_class c
     where c.relnamespace = 'baas'::regnamespace
       and c.relkind in ('r', 'p', 'v', 'm', 'f')
       and exists (select from (values ('baas_anon'), ('baas_user'), ('baas_service')) r(rolname)
                    where has_any_column_privilege(r.rolname, c.oid, 'SELECT, INSERT, UPDATE')
                       or has_table_privilege(r.rolname, c.oid, 'DELETE'))
       and not (c.relkind in ('r', 'p') and c.relrowsecurity and c.relforcerowsecurity)
    union all
    -- 2. SECURITY DEFINER functions pin a safe search_path: only pg_catalog, baas and
    --    pg_temp, with pg_temp last (left out, Postgres searches it first), or a
    --    caller's objects could stand in for ours...
    select 'definer_search_path', p.oid::regprocedure::text,
           case when sp.path is null then 'SECURITY DEFINER without a fixed search_path'
                else 'SECURITY DEFINER with an unsafe search_path: ' || array_to_string(sp.path, ', ') end
      from pg_proc p
      left join lateral (
          select string_to_array(replace(replace(substr(cfg, length('search_path=') + 1), ' ', ''), '"', ''), ',') as path
            from unnest(p.proconfig) cfg where cfg like 'search_path=%') sp on true
     where p.pronamespace = 'baas'::regnamespace and p.prosecdef
       and (sp.path is null
            or not sp.path <@ array['pg_catalog', 'baas', 'pg_temp']
            or sp.path[array_length(sp.path, 1)] is distinct from 'pg_temp')
    union all
    -- 3. ...and no function of ours is executable by PUBLIC: each is granted to the
    --    roles that need it (sql/grants.sql).
    select 'public_execute', p.oid::regprocedure::text,
           case when p.prosecdef then 'SECURITY DEFINER function executable by PUBLIC' else 'executable by PUBLIC' end
      from pg_proc p
     where p.pronamespace = 'baas'::regnamespace
       and exists (select from aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                    where a.grantee = 0 and a.privilege_type = 'EXECUTE')
    union all
    -- 4. Internal functions (name starting with _) are for the extension's own code.
    --    API roles may execute only those that public functions run as the caller
    --    (sql/grants.sql lists the same): anything else internal is reported.
    select 'internal_function_exposed', p.oid::regprocedure::text,
           'executable by ' || string_agg(r.rolname, ', ' order by r.rolname)
      from pg_proc p
      cross join (values ('baas_anon'), ('baas_user'), ('baas_service')) r(rolname)
     where p.pronamespace = 'baas'::regnamespace and p.proname like '\_%'
       and has_function_privilege(r.rolname, p.oid, 'execute')
       and not (p.proname = any (array[
           '_collection_by_name', '_check_collection_name', '_document_json', '_parse_document_id',
           '_document_not_found', '_write_document', '_explain_write_miss', '_version_conflict',
           '_validate_document', '_normalize_acl', '_check_new_principals', '_acl_change', '_change_acl',
           '_owned_document', '_set_document_owner', '_may_create', '_may_manage', '_is_privileged',
           '_find_page', '_find_compiled', '_count_compiled', '_btree_index_id', '_jfield',
           '_jsonb_lp_eq', '_jsonb_lp_lt', '_jsonb_lp_le', '_jsonb_lp_gt', '_jsonb_lp_ge',
           '_jsonb_lp_cmp', '_jsonb_lp_contains'])
            or (p.proname = '_collection_json' and r.rolname = 'baas_service'))
     group by p.oid
    union all
    -- 4b. Every function without a leading _ is public: documented in docs/sql.md, and
    --     named here. Anything else in schema baas is either internal (rename it with
    --     a leading _) or new public surface that needs documenting.
    select 'undocumented_public_function', p.oid::regprocedure::text,
           'public name (no leading _) not in the documented list of docs/sql.md'
      from pg_proc p
     where p.pronamespace = 'baas'::regnamespace and p.proname not like '\_%'
       and not p.proname = any (array[
           -- accounts and tokens
           'signup', 'login', 'refresh', 'logout', 'get_user', 'update_user', 'delete_user', 'create_user',
           'claims', 'uid', 'jwks', 'auth_settings', 'authenticate', 'rotate_signing_key', 'purge_sessions',
           'create_service_token', 'revoke_service_token', 'unlock_account', 'merge_patch', 'uuid7',
           -- documents, queries, ACLs
           'create_document', 'get_document', 'replace_document', 'patch_document', 'delete_document',
           'find', 'count', 'list_documents', 'get_acl', 'set_acl', 'grant', 'revoke', 'transfer',
           'roles', 'principals',
           -- administration
           'create_collection', 'drop_collection', 'collections', 'get_collection',
           'create_index', 'drop_index', 'list_indexes', 'get_index', 'rebuild_index_entries', 'restore_indexes',
           'run_index_builds',
           'create_role', 'drop_role', 'add_role_member', 'remove_role_member', 'add_role_to_role',
           'remove_role_from_role', 'list_roles',
           -- live change feeds
           'set_realtime', 'realtime_position', 'realtime_status', 'realtime_disable',
           -- DBA tools
           'as_user', 'purge_audit_log', 'security_lints'])
    union all
    -- 4c. The document policies and the index entries' read policy are made from one
    --     rule (sql/permissions.sql): each must still say what documents_read says
    --     (with its own ACL column), for the same roles and command; the service
    --     policies must agree; no other policy may widen either table.
    select 'policy_drift', format('policy %I on %s', v.polname, v.rel),
           case when p.oid is null then 'missing: sql/permissions.sql creates it'
                else format('does not agree with documents_read: %s', pg_get_expr(p.polqual, p.polrelid)) end
      from (values ('documents_update', 'baas.documents', 'acl_update', 'w'),
                   ('documents_delete', 'baas.documents', 'acl_delete', 'd'),
                   ('index_entries_read', 'baas.index_entries', 'acl_read', 'r')) v(polname, rel, col, cmd)
      cross join (select * from pg_policy x
                   where x.polname = 'documents_read' and x.polrelid = 'baas.documents'::regclass) r
      left join pg_policy p on p.polname = v.polname and p.polrelid = v.rel::regclass
     where p.oid is null
        or pg_get_expr(p.polqual, p.polrelid) is distinct from replace(pg_get_expr(r.polqual, r.polrelid), 'acl_read', v.col)
        or p.polroles::oid[] is distinct from r.polroles::oid[]
        or p.polcmd::text <> v.cmd or p.polpermissive is distinct from r.polpermissive
    union all
    select 'policy_drift', format('policy %I on %s', p.polname, p.polrelid::regclass),
           'the service policy must be `to baas_service using (true)`, as documents_service'
      from pg_policy p
     where p.polname in ('documents_service', 'index_entries_service')
       and p.polrelid in ('baas.documents'::regclass, 'baas.index_entries'::regclass)
       and (p.polroles::oid[] is distinct from array['baas_service'::regrole::oid]
            or pg_get_expr(p.polqual, p.polrelid) is distinct from 'true')
    union all
    select 'policy_drift', format('policy %I on %s', p.polname, p.polrelid::regclass),
           'a policy sql/permissions.sql does not define: it may widen what callers see or do'
      from pg_policy p
     where (p.polrelid = 'baas.documents'::regclass
            and p.polname not in ('documents_service', 'documents_read', 'documents_create',
                                  'documents_update', 'documents_delete'))
        or (p.polrelid = 'baas.index_entries'::regclass
            and p.polname not in ('index_entries_service', 'index_entries_read'))
    union all
    -- 5. A policy must not decide on data its users can edit: an account's own data
    --    (baas.users.data, changed by baas.update_user), document data, or functions
    --    that return them. Roles come from baas.roles() / baas.principals().
    select distinct 'policy_reads_user_data',
           format('policy %I on %s', pol.polname, pol.polrelid::regclass),
           format('reads %s, which its users can change', coalesce(
               (select format('%s.%I', a.attrelid::regclass, a.attname) from pg_attribute a
                 where a.attrelid = d.refobjid and a.attnum = d.refobjsubid),
               d.refobjid::regprocedure::text))
      from pg_policy pol
      join pg_depend d on d.classid = 'pg_policy'::regclass and d.objid = pol.oid
     where (d.refclassid = 'pg_class'::regclass
            and (d.refobjid, d.refobjsubid) in (
                select a.attrelid, a.attnum from pg_attribute a
                 where (a.attrelid, a.attname) in (('baas.users'::regclass, 'data'), ('baas.documents'::regclass, 'data'))))
        or (d.refclassid = 'pg_proc'::regclass
            and d.refobjid in ('baas.get_user()'::regprocedure, 'baas.get_document(text, text)'::regprocedure,
                               'baas.find(text, jsonb, text, integer, integer, uuid, text[])'::regprocedure))
$$;

-- sql/grants.sql: nothing new for PUBLIC (a no-op for the older functions), then the
-- new grants in the order grants.sql makes them.
revoke execute on all functions in schema baas from public;
grant execute on function baas.set_realtime(text, boolean) to baas_service;
grant execute on function baas.realtime_position() to baas_anon, baas_user, baas_service;
grant execute on function
    baas._realtime_pull(integer),
    baas._realtime_read(bigint, integer),
    baas._realtime_window(),
    baas._realtime_role_members(uuid[]),
    baas._realtime_role_nesting(),
    baas.realtime_position()
  to baas_authenticator;

-- Tell every proxy that the extension changed (see pgbaas--0.2.0--0.3.0.sql).
select pg_catalog.pg_notify('baas_extension', '0.4.0');
