-- pgbaas 0.2.0 -> 0.3.0, run by ALTER EXTENSION pgbaas UPDATE.
--
-- It turns a 0.2.0 database into exactly what CREATE EXTENSION makes at 0.3.0:
-- tests/tests/upgrade.rs installs 0.2.0 from its release commit, fills it, runs this,
-- checks the data through the proxy and compares the schema (pg_dump --binary-upgrade)
-- with a fresh install's. Every statement below is the final text of the file it names
-- (sql/CHANGES-0.3.0.md lists what changed and why). A 0.1.0 database upgrades through
-- pgbaas--0.1.0--0.2.0.sql first.
--
-- Once released, an upgrade script is never edited: a fix goes into the next version's.
--
-- A package upgrade replaces the library (pgbaas.so) before this runs: C functions keep
-- their symbols, so 0.2.0's SQL runs on the new library until this script has run (the
-- test checks every symbol 0.2.0 names).

-- ---------------------------------------------------------------------------------
-- Index builds that do not stop the world (issue 13): builds run in a background
-- worker with CREATE INDEX CONCURRENTLY; baas.indexes records their state. Existing
-- 0.2.0 indexes were built in their request, so they are 'ready' (the column default).
-- (The default is set after the update: ADD COLUMN … DEFAULT would keep 'ready' as the
-- column's "missing value", which a fresh install does not have.)
alter table baas.indexes
    add column state text check (state in ('building', 'ready', 'failed')),
    add column error text,
    add column started_at timestamptz,
    add column finished_at timestamptz,
    add column worker_pid integer;
update baas.indexes set state = 'ready';
alter table baas.indexes alter column state set default 'ready', alter column state set not null;

-- sql/documents.sql (pgrx: api::index_build::index_build_launch)
CREATE  FUNCTION baas."_index_build_launch"() RETURNS bool /* bool */
VOLATILE STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'index_build_launch_wrapper';

drop function baas.create_index(text, text, text);

create or replace function baas.drop_collection(name text) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    c baas.collections := baas._collection_by_name(drop_collection.name);
    i baas.indexes;
begin
    -- Before the collection, so that their audit entries can still name it.
    for i in delete from baas.indexes x where x.collection_id = c.id returning x.* loop
        perform baas._index_forget(i);
    end loop;
    delete from baas.collections where id = c.id;
end
$$;
comment on function baas.drop_collection(text) is 'Drop a collection and all its documents';

-- DBAs: rebuild every btree index's entries from the documents (after a restore).
create or replace function baas.rebuild_index_entries() returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    i record;
    n integer := 0;
begin
    for i in select x.id, x.collection_id, x.path from baas.indexes x where x.kind = 'btree' and x.state = 'ready' loop
        delete from baas._index_entries_ready where index_id = i.id;
        delete from baas.index_entries where index_id = i.id;
        execute format('insert into baas.index_entries (index_id, doc_id, value, owner, acl_read)
                        select %s, d.id, %s, d.owner, d.acl_read from baas.documents d where d.collection_id = %s',
                       i.id, baas._index_expression(i.path), i.collection_id);
        insert into baas._index_entries_ready values (i.id);
        n := n + 1;
    end loop;
    analyze baas.index_entries;
    return n;
end
$$;
comment on function baas.rebuild_index_entries() is
    'DBAs: rebuild the counting entries of every btree index (after pg_restore); returns how many indexes';

create or replace function baas._index_entries_sync() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    -- Most collections have no btree index: one probe of baas.indexes, and done.
    if not exists (select from baas.indexes i
                    where i.collection_id = case when tg_op = 'DELETE' then old.collection_id else new.collection_id end
                      and i.kind = 'btree' and i.state <> 'failed') then
        return null;
    end if;
    if tg_op = 'DELETE' then
        delete from baas.index_entries e using baas.indexes i
         where i.collection_id = old.collection_id and i.kind = 'btree' and e.index_id = i.id and e.doc_id = old.id;
        return null;
    end if;
    if tg_op = 'UPDATE' and new.data is not distinct from old.data and new.owner is not distinct from old.owner
       and new.acl_read is not distinct from old.acl_read then
        return null;
    end if;
    insert into baas.index_entries as e (index_id, doc_id, value, owner, acl_read)
    select i.id, new.id, baas._jpath(new.data, i.path), new.owner, new.acl_read
      from baas.indexes i where i.collection_id = new.collection_id and i.kind = 'btree' and i.state <> 'failed'
    on conflict (index_id, doc_id) do update
       set value = excluded.value, owner = excluded.owner, acl_read = excluded.acl_read;
    return null;
end
$$;

-- An index's row as the API shows it. A build whose worker is gone (pg_terminate_backend,
-- a crash, a restart) shows as failed at once; the next worker records it so and drops
-- the unfinished index (baas._index_build_next).
create function baas._index_json(i baas.indexes) returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select jsonb_build_object('collection', (select c.name from baas.collections c where c.id = i.collection_id),
                              'path', i.path, 'kind', i.kind, 'name', i.name,
                              'state', case when lost then 'failed' else i.state end,
                              'error', case when lost then format('the build stopped before it finished: its worker (pid %s) ended', i.worker_pid)
                                            else i.error end,
                              'created_at', i.created_at, 'started_at', i.started_at, 'finished_at', i.finished_at)
      from (select i.state = 'building' and i.worker_pid is not null
                   and not exists (select from pg_stat_activity a where a.pid = i.worker_pid) as lost) l
$$;

-- The CREATE INDEX statement of an index (null once it is no longer being built, for
-- the worker). v_expr is built by the compiler from a validated path with quoted keys;
-- the collection id is ours. Nothing else is spliced.
create function baas._index_ddl(index_id integer, concurrent boolean) returns text
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    i baas.indexes;
    v_expr text;
begin
    select * into i from baas.indexes x where x.id = _index_ddl.index_id;
    if not found or (concurrent and i.state <> 'building') then
        return null;
    end if;
    v_expr := baas._index_expression(i.path);
    if i.kind = 'btree' then
        -- (field, created_at, id): an equality filter comes out already in the default
        -- listing order, so "cat = 42, first 20" stops after 20 index entries instead
        -- of walking the listing index (the planner ignores partial-index statistics and
        -- would otherwise guess; measured 27 ms -> see docs/query.md).
        return format('create index %s %I on baas.documents (%s baas.jsonb_lp_ops, created_at, id) where collection_id = %s',
                      case when concurrent then 'concurrently' else '' end, i.name, v_expr, i.collection_id);
    end if;
    return format('create index %s %I on baas.documents using gin (%s baas.jsonb_path_lp_ops) where collection_id = %s',
                  case when concurrent then 'concurrently' else '' end, i.name, v_expr, i.collection_id);
end
$$;

-- Planner statistics for an indexed field, then the index is ready: its counting
-- entries complete (btree). Run by create_index (synchronous) and the build worker.
create function baas._index_build_finish(index_id integer) returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    i baas.indexes;
    v_expr text;
begin
    -- No row lock yet: writes to the collection check their entries' foreign key with
    -- FOR KEY SHARE on this row, and a FOR UPDATE held through the ANALYZE below made
    -- them wait seconds (measured: 4.5 s in tests/tests/index_builds.rs).
    select * into i from baas.indexes x where x.id = _index_build_finish.index_id and x.state = 'building';
    if not found then
        return false; -- dropped or failed meanwhile
    end if;
    v_expr := baas._index_expression(i.path);
    -- The planner ignores partial indexes' statistics; expression statistics give it
    -- the field's distribution, so "cat = 42" is estimated at its real handful of rows.
    if not exists (select from pg_statistic_ext x where x.stxnamespace = 'baas'::regnamespace
                   and x.stxname = 'documents_expr_' || substr(md5(i.path), 1, 12)) then
        -- With the type too: range filters check jsonb_typeof(field), and without
        -- statistics its default selectivity (0.5%) made a 100,000-row range look like
        -- one row, so the planner sorted all of them instead of walking the index.
        execute format('create statistics baas.%I on (%s), (jsonb_typeof(%s)) from baas.documents',
                       'documents_expr_' || substr(md5(i.path), 1, 12), v_expr, v_expr);
        analyze baas.documents;
    end if;
    update baas.indexes x set state = 'ready', error = null, finished_at = now(), worker_pid = null
     where x.id = i.id and x.state = 'building';
    if not found then
        return false;
    end if;
    if i.kind = 'btree' then
        insert into baas._index_entries_ready values (i.id) on conflict do nothing;
        analyze baas.index_entries;
    end if;
    return true;
end
$$;

-- The build worker: record a failed build and drop its counting entries (the worker
-- then drops the unfinished index).
create function baas._index_build_failed(index_id integer, reason text) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    update baas.indexes x set state = 'failed', error = reason, finished_at = now(), worker_pid = null
     where x.id = _index_build_failed.index_id and x.state = 'building';
    delete from baas._index_entries_ready r where r.index_id = _index_build_failed.index_id;
    delete from baas.index_entries e where e.index_id = _index_build_failed.index_id;
end
$$;

-- The build worker, one batch of a btree index's counting entries: the documents after
-- `after` (by id), locked FOR KEY SHARE so that a delete racing the batch waits and its
-- trigger then removes the entry (no orphan); entries the trigger already wrote for new
-- writes are fresher and kept (on conflict do nothing). Returns the last id done, or
-- null when there are no more (or the build was dropped).
create function baas._index_build_backfill(index_id integer, after uuid, batch integer) returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    i baas.indexes;
    v_last uuid;
begin
    select * into i from baas.indexes x where x.id = _index_build_backfill.index_id and x.state = 'building';
    if not found or i.kind <> 'btree' then
        return null;
    end if;
    execute format('with d as (select d.id, %s as value, d.owner, d.acl_read from baas.documents d
                                where d.collection_id = %s and d.id > coalesce($1, ''00000000-0000-0000-0000-000000000000''::uuid)
                                order by d.id limit $2 for key share),
                         ins as (insert into baas.index_entries (index_id, doc_id, value, owner, acl_read)
                                 select %s, d.id, d.value, d.owner, d.acl_read from d on conflict do nothing)
                    select d.id from d order by d.id desc limit 1',
                   baas._index_expression(i.path), i.collection_id, i.id)
       into v_last using after, batch;
    return v_last;
end
$$;

-- The build worker's next job, claimed for it, or null. Only the worker holding the
-- build lock calls it, so a build still marked with another pid lost its worker
-- (pg_terminate_backend, a crash, a restart): it is recorded as failed. Unfinished
-- indexes (invalid, or left by a failed or dropped build) come first as {"drop": name}.
create function baas._index_build_next() returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    i baas.indexes;
    v_drop text;
begin
    for i in update baas.indexes x
                set state = 'failed', finished_at = now(), worker_pid = null,
                    error = format('the build stopped before it finished: its worker (pid %s) ended', x.worker_pid)
              where x.state = 'building' and x.worker_pid is not null and x.worker_pid <> pg_backend_pid()
          returning x.* loop
        delete from baas._index_entries_ready r where r.index_id = i.id;
        delete from baas.index_entries e where e.index_id = i.id;
    end loop;
    select c.relname into v_drop
      from pg_index ix join pg_class c on c.oid = ix.indexrelid
     where ix.indrelid = 'baas.documents'::regclass
       and c.relname ~ '^documents_c[0-9]+_(btree|gin)_[0-9a-f]{12}$'
       and (not ix.indisvalid
            or not exists (select from baas.indexes x where x.name = c.relname and x.state <> 'failed'))
     limit 1;
    if v_drop is not null then
        return jsonb_build_object('drop', v_drop);
    end if;
    select * into i from baas.indexes x where x.state = 'building' and x.worker_pid is null
     order by x.id limit 1 for no key update skip locked;
    if not found then
        return null;
    end if;
    update baas.indexes x set worker_pid = pg_backend_pid(), started_at = now() where x.id = i.id;
    return jsonb_build_object('id', i.id, 'name', i.name);
end
$$;

-- Whether a build waits for a worker.
create function baas._index_build_waiting() returns boolean
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$ select exists (select from baas.indexes x where x.state = 'building' and x.worker_pid is null) $$;

create function baas.create_index(collection text, path text, kind text default 'btree',
                                  concurrently boolean default true) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    v_expr text := baas._index_expression(path); -- checks the path (22023 invalid_query)
    v_name text := format('documents_c%s_%s_%s', c.id, kind, substr(md5(path), 1, 12));
    i baas.indexes;
begin
    if kind is null or kind not in ('btree', 'gin') then
        raise exception using errcode = '22023', detail = 'invalid_request', message = 'kind must be btree or gin';
    end if;
    if exists (select from baas.indexes x where x.name = v_name and x.state <> 'failed') then
        raise exception using errcode = '23505', detail = 'index_exists',
            message = format('%s already has a %s index on %s', c.name, kind, path);
    end if;
    -- A failed build is replaced by the new one (its reason goes with it).
    delete from baas.indexes x where x.name = v_name;
    if coalesce(create_index.concurrently, true) then
        -- Recorded as building: the trigger keeps the counting entries of new writes from
        -- now on, and the worker, started after this commits, does the rest (no lock on
        -- baas.documents here, no statement timeout on the build).
        insert into baas.indexes (collection_id, path, kind, name, state)
        values (c.id, create_index.path, kind, v_name, 'building') returning * into i;
        perform baas._index_build_launch();
        return baas._index_json(i);
    end if;
    -- In this transaction (migrations, tests): a plain CREATE INDEX, which holds writes
    -- to every collection until this transaction ends.
    execute format('drop index if exists baas.%I', v_name); -- a failed build's leftover
    insert into baas.indexes (collection_id, path, kind, name, state, started_at)
    values (c.id, create_index.path, kind, v_name, 'building', now()) returning * into i;
    execute baas._index_ddl(i.id, false);
    if kind = 'btree' then
        execute format('insert into baas.index_entries (index_id, doc_id, value, owner, acl_read)
                        select %s, d.id, %s, d.owner, d.acl_read from baas.documents d where d.collection_id = %s',
                       i.id, v_expr, c.id);
    end if;
    perform baas._index_build_finish(i.id);
    select * into i from baas.indexes x where x.id = i.id;
    return baas._index_json(i);
end
$$;
comment on function baas.create_index(text, text, text, boolean) is
    'Index a data field of one collection (btree: equality, ranges, order; gin: $contains). By default built in the background (state building, then ready or failed: see list_indexes/get_index); concurrently => false builds it in this transaction';

create function baas.get_index(collection text, path text, kind text default 'btree') returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    i baas.indexes;
begin
    select * into i from baas.indexes x where x.collection_id = c.id and x.path = get_index.path and x.kind = get_index.kind;
    if not found then
        raise exception using errcode = 'P0002', detail = 'index_not_found',
            message = format('%s has no %s index on %s', c.name, kind, path);
    end if;
    return baas._index_json(i);
end
$$;
comment on function baas.get_index(text, text, text) is 'An index and the state of its build (building, ready, failed with error)';

create or replace function baas.drop_index(collection text, path text, kind text default 'btree') returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    i baas.indexes;
begin
    delete from baas.indexes x where x.collection_id = c.id and x.path = drop_index.path and x.kind = drop_index.kind
    returning * into i;
    if not found then
        raise exception using errcode = 'P0002', detail = 'index_not_found',
            message = format('%s has no %s index on %s', c.name, kind, path);
    end if;
    perform baas._index_forget(i);
end
$$;

-- The index of a deleted baas.indexes row. A ready one is dropped here (a plain DROP
-- INDEX: a brief exclusive lock). A build in progress is cancelled, and the worker drops
-- its unfinished index concurrently: a plain DROP would wait for the build while every
-- write waited behind it.
create function baas._index_forget(i baas.indexes) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if i.state = 'ready' then
        execute format('drop index if exists baas.%I', i.name);
        return;
    end if;
    if i.worker_pid is not null then
        perform pg_cancel_backend(i.worker_pid);
    end if;
    perform baas._index_build_launch();
end
$$;

create or replace function baas.list_indexes(collection text) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
begin
    return (select coalesce(jsonb_agg(baas._index_json(i) order by i.path, i.kind), '[]')
              from baas.indexes i where i.collection_id = c.id);
end
$$;

-- DBAs: start the build worker for builds still waiting (none was free when they were
-- queued, or the server restarted) and clean up interrupted ones; returns how many wait.
create function baas.run_index_builds() returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    perform baas._index_build_launch();
    return (select count(*) from baas.indexes x where x.state = 'building')::integer;
end
$$;
comment on function baas.run_index_builds() is
    'DBAs: start the index build worker for waiting builds, record interrupted ones as failed; returns how many are building';

-- sql/dump.sql
create or replace function baas.restore_indexes() returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    i record;
    n integer := 0;
begin
    for i in select x.id, c.name as collection, x.path, x.kind
               from baas.indexes x join baas.collections c on c.id = x.collection_id
              where x.state <> 'failed'
                and not exists (select from pg_catalog.pg_class r
                                 where r.relnamespace = 'baas'::regnamespace and r.relname = x.name)
              order by x.id loop
        delete from baas.indexes where id = i.id;
        -- In this transaction: run once after a restore, before the service takes writes.
        perform baas.create_index(i.collection, i.path, i.kind, concurrently => false);
        n := n + 1;
    end loop;
    perform baas.rebuild_index_entries();
    return n;
end
$$;
comment on function baas.restore_indexes() is
    'DBAs: after pg_restore, make the collection indexes pg_dump leaves out and rebuild their counting entries; returns how many it made';

-- sql/lints.sql: the new public functions are known doors
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
comment on function baas.security_lints() is
    'Security lints (no rows = clean): unforced RLS on API-readable tables, SECURITY DEFINER without search_path, PUBLIC execute, exposed internal functions, undocumented public functions, policies that drifted from their one rule, policies reading user-editable data';

-- sql/grants.sql
revoke execute on all functions in schema baas from public;
grant execute on function
    baas.create_index(text, text, text, boolean),
    baas.get_index(text, text, text)
  to baas_service;
