-- pgbaas 0.10.0 -> 0.11.0, run by ALTER EXTENSION pgbaas UPDATE.
--
-- It turns a 0.10.0 database into exactly what CREATE EXTENSION makes at 0.11.0:
-- tests/tests/upgrade.rs installs 0.10.0 from its release commit, fills it (files
-- included), runs this, checks the data through the proxy and compares the schema
-- (pg_dump --binary-upgrade) with a fresh install's. Every statement below is the final
-- text of the file it names (sql/CHANGES-0.11.0.md lists what changed and why). Older
-- databases upgrade through the earlier scripts first.
--
-- Once released, an upgrade script is never edited: a fix goes into the next version's.

-- ============================================================== sql/documents.sql
-- (issue 20: counts of a whole collection from read entries)
-- Read entries: for each document, one narrow row per principal that may read it by
-- its read rule: its owner as `user:<id>`, and each principal of acl_read. A user's
-- count of a whole collection ("how many may I read") is then an index-only scan of
-- the rows of that user's principals (baas.count), where the documents path filters
-- every document of the collection under row-level security (0.15-0.2 s per million).
-- Kept by the triggers below, in the same transaction; nobody but them and
-- baas.rebuild_index_entries writes it. The rows carry no copy of the ACL: a copy in
-- the key's index would cap a read list at the ~2.7 kB of a btree row (about 60 `user:`
-- principals, where the API allows 256), and cost the square of its length per change.
-- So the read policy (sql/permissions.sql) is "the row's principal is one of the
-- caller's", which gives exactly documents_read for entries kept in step: the caller's
-- only `user:` principal is `user:<uid>` (owner = uid), and any other is in acl_read.
-- baas.security_lints() checks the policies' text and the triggers (read_entries_unkept);
-- sql/tests/031_read_entries.sql checks the equality against the documents' policy.
create table baas.read_entries (
    collection_id integer not null,
    principal text not null,
    doc_id uuid not null,
    -- The count is an index-only scan of this key.
    primary key (collection_id, principal, doc_id)
) with (autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_vacuum_scale_factor = 0.02);
revoke all on baas.read_entries from public;
grant select on baas.read_entries to baas_anon, baas_user, baas_service;

-- Collections whose read entries are complete. Not part of a pg_dump, like
-- baas._index_entries_ready: after a restore counts take the documents path until
-- baas.rebuild_index_entries() runs. A collection is complete from its creation.
create table baas._read_entries_ready (
    collection_id integer primary key references baas.collections (id) on delete cascade
);
revoke all on baas._read_entries_ready from public;
alter table baas._read_entries_ready enable row level security;

-- Whether baas.count may count a collection from its read entries (baas.count runs as
-- the caller, and the ready list is not theirs to read). PL/pgSQL so that its plan is
-- kept (see baas._aal2_blocked).
create function baas._read_entries_ready(collection_id integer) returns boolean
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    return exists (select from baas._read_entries_ready r where r.collection_id = _read_entries_ready.collection_id);
end
$$;

-- The principals that may read a document by its read rule: its owner as
-- `user:<id>` (an ownerless one adds none) and each principal of acl_read. The one
-- definition of what read entries hold (the trigger below, rebuild_index_entries).
create function baas._readers(owner uuid, acl_read text[]) returns text[]
language sql immutable parallel safe
return case when owner is null then acl_read else acl_read || ('user:' || owner::text) end;

-- A document's read entries: one per principal of baas._readers, once each.
-- Updates reach it only when the owner or the read list changed (the WHEN of its
-- update trigger): a change of data alone costs no call.
create function baas._read_entries_sync() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if tg_op <> 'INSERT' then
        delete from baas.read_entries r
         where r.collection_id = old.collection_id and r.doc_id = old.id
           and r.principal = any (baas._readers(old.owner, old.acl_read));
    end if;
    if tg_op <> 'DELETE' then
        insert into baas.read_entries (collection_id, principal, doc_id)
        select distinct new.collection_id, p, new.id
          from unnest(baas._readers(new.owner, new.acl_read)) p;
    end if;
    return null;
end
$$;
create trigger documents_read_entries after insert or delete on baas.documents
    for each row execute function baas._read_entries_sync();
create trigger documents_read_entries_update after update on baas.documents
    for each row when (old.owner is distinct from new.owner or old.acl_read is distinct from new.acl_read)
    execute function baas._read_entries_sync();

-- TRUNCATE skips row triggers: it empties the counting copies too (a DBA's truncate of
-- baas.documents would otherwise leave counts of documents that are gone).
create function baas._entries_truncate() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    truncate baas.read_entries, baas.index_entries;
    return null;
end
$$;
create trigger documents_truncate_entries after truncate on baas.documents
    for each statement execute function baas._entries_truncate();

create or replace function baas.create_collection(name text, options jsonb default '{}') returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    o jsonb;
    c baas.collections;
    od record;
begin
    perform baas._check_collection_name(create_collection.name);
    o := baas._normalize_collection_options(options);
    perform baas._check_new_principals(jsonb_build_object('create', o -> 'create') || (o -> 'default_acl'));
    select * into od from baas._owner_delete_columns(o -> 'on_owner_delete');
    insert into baas.collections (name, create_acl, default_read, default_update, default_delete, schema, realtime,
                                  bucket, file_max_bytes, file_types, file_refs, require_aal2, on_owner_delete, owner_heir)
    values (create_collection.name,
            array(select jsonb_array_elements_text(o -> 'create')),
            array(select jsonb_array_elements_text(o -> 'default_acl' -> 'read')),
            array(select jsonb_array_elements_text(o -> 'default_acl' -> 'update')),
            array(select jsonb_array_elements_text(o -> 'default_acl' -> 'delete')),
            nullif(o -> 'schema', 'null'),
            (o ->> 'realtime')::boolean,
            (o ->> 'bucket')::boolean,
            (o ->> 'max_file_size')::bigint,
            case when jsonb_typeof(o -> 'file_types') = 'array'
                 then array(select jsonb_array_elements_text(o -> 'file_types')) end,
            o ->> 'file_refs',
            (o ->> 'require_aal2')::boolean, od.policy, od.heir)
    on conflict (name) do nothing
    returning * into c;
    if not found then
        raise exception using errcode = '23505', detail = 'collection_exists',
            message = format('collection %s already exists', create_collection.name);
    end if;
    -- Empty, so its read entries are complete (see baas.read_entries).
    insert into baas._read_entries_ready values (c.id);
    return baas._collection_json(c);
end
$$;

-- (index entries: a read list too long for an index row no longer fails the write)
-- Whether a document's read list fits in its index entries: a row of
-- index_entries_value_idx carries the field's value and the read list, a btree row
-- holds at most 2,704 bytes, and a read list of 256 `user:` principals (the API's
-- most) takes about 12 kB, so a document shared with more than ~50 users by id failed
-- its write (54000) in any collection with a btree index. A list of at most 1,536
-- bytes (about 33 `user:` principals, or many more roles) leaves the value 1.1 kB;
-- a longer one gets no entry, and its indexes stop serving counts (they come from the
-- documents, correctly) until baas.rebuild_index_entries() finds every list fitting.
create function baas._entry_fits(acl_read text[]) returns boolean
language sql immutable parallel safe
return pg_catalog.pg_column_size(acl_read) <= 1536;

-- Whether an index's entries can serve counts: every document of its collection has
-- its entry (and no entry is left over), and every read list fits. Asked by
-- _index_build_finish after it has marked the build ready (a writer whose list does
-- not fit waits on that row, see _index_entries_sync) and by rebuild_index_entries,
-- which holds writers off.
create function baas._index_entries_complete(index_id integer) returns boolean
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_collection integer := (select i.collection_id from baas.indexes i where i.id = _index_entries_complete.index_id);
begin
    return (select count(*) from baas.index_entries e where e.index_id = _index_entries_complete.index_id)
         = (select count(*) from baas.documents d where d.collection_id = v_collection)
       and not exists (select from baas.documents d
                        where d.collection_id = v_collection
                          and (not baas._entry_fits(d.acl_read)
                               or not exists (select from baas.index_entries e
                                               where e.index_id = _index_entries_complete.index_id and e.doc_id = d.id)));
end
$$;

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
    if not baas._entry_fits(new.acl_read) then
        -- A read list too long for an entry (baas._entry_fits): the collection's btree
        -- indexes stop serving counts and lose this document's older entry. FOR SHARE
        -- on their rows waits for a build's _index_build_finish that has marked one
        -- ready (and makes a later one wait for this write), so the finish's check
        -- sees this document, or this write sees the finish's mark.
        perform from baas.indexes i where i.collection_id = new.collection_id and i.kind = 'btree' for share;
        delete from baas._index_entries_ready r using baas.indexes i
         where r.index_id = i.id and i.collection_id = new.collection_id and i.kind = 'btree';
        delete from baas.index_entries e using baas.indexes i
         where e.index_id = i.id and e.doc_id = new.id and i.collection_id = new.collection_id and i.kind = 'btree';
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

create or replace function baas._index_build_finish(index_id integer) returns boolean
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
        -- Ready for counts when every document has its entry (not when one's read list
        -- is too long for it: baas._entry_fits). No table lock: a writer of such a
        -- list takes FOR SHARE on this index's row (_index_entries_sync), which the
        -- update above holds until this commits, so it either committed before this
        -- check (which then sees it) or removes the mark after this commits.
        analyze baas.index_entries;
        if baas._index_entries_complete(i.id) then
            insert into baas._index_entries_ready values (i.id) on conflict do nothing;
        end if;
    end if;
    return true;
end
$$;

create or replace function baas._index_build_backfill(index_id integer, after uuid, batch integer) returns uuid
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
                                 select %s, d.id, d.value, d.owner, d.acl_read from d
                                  where baas._entry_fits(d.acl_read) on conflict do nothing)
                    select d.id from d order by d.id desc limit 1',
                   baas._index_expression(i.path), i.collection_id, i.id)
       into v_last using after, batch;
    return v_last;
end
$$;

create or replace function baas.create_index(collection text, path text, kind text default 'btree',
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
                        select %s, d.id, %s, d.owner, d.acl_read
                          from baas.documents d where d.collection_id = %s and baas._entry_fits(d.acl_read)',
                       i.id, v_expr, c.id);
    end if;
    perform baas._index_build_finish(i.id);
    select * into i from baas.indexes x where x.id = i.id;
    return baas._index_json(i);
end
$$;
create or replace function baas.rebuild_index_entries() returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    i record;
    n integer := 0;
begin
    -- Writes wait until the rebuild commits: a write's trigger racing the rebuild could
    -- otherwise delete entries the rebuild then writes again from the older row.
    lock table baas.documents in share mode;
    for i in select x.id, x.collection_id, x.path from baas.indexes x where x.kind = 'btree' and x.state = 'ready' loop
        delete from baas._index_entries_ready where index_id = i.id;
        delete from baas.index_entries where index_id = i.id;
        execute format('insert into baas.index_entries (index_id, doc_id, value, owner, acl_read)
                        select %s, d.id, %s, d.owner, d.acl_read
                          from baas.documents d where d.collection_id = %s and baas._entry_fits(d.acl_read)',
                       i.id, baas._index_expression(i.path), i.collection_id);
        if baas._index_entries_complete(i.id) then
            insert into baas._index_entries_ready values (i.id);
        end if;
        n := n + 1;
    end loop;
    -- Every collection's read entries (baas.read_entries), from the documents.
    delete from baas._read_entries_ready;
    delete from baas.read_entries;
    insert into baas.read_entries (collection_id, principal, doc_id)
    select d.collection_id, p, d.id
      from baas.documents d, unnest(baas._readers(d.owner, d.acl_read)) p
    on conflict do nothing;
    insert into baas._read_entries_ready select c.id from baas.collections c;
    analyze baas.index_entries, baas.read_entries;
    return n;
end
$$;
comment on function baas.rebuild_index_entries() is
    'DBAs: rebuild the counting entries of every btree index and every collection''s read entries (after pg_restore); returns how many indexes';

-- ============================================================ sql/permissions.sql
-- Read entries (sql/documents.sql): one row per document and principal that may read
-- it by the ACL rule below, counted by baas.count over a whole collection. A row is
-- the caller's when its principal is one of the caller's: for entries kept in step
-- with the documents, a document has such a row exactly when documents_read lets the
-- caller read it (the owner's row is `user:<owner>`, and the caller's one `user:`
-- principal is `user:<uid>`; every other row is a principal of acl_read). The
-- equality is tested against the documents' policy (sql/tests/031_read_entries.sql)
-- and baas.security_lints() checks this text (policy_drift). All for the service role.
alter table baas.read_entries enable row level security;
alter table baas.read_entries force row level security;
create policy read_entries_service on baas.read_entries for select to baas_service using (true);
create policy read_entries_read on baas.read_entries for select to baas_anon, baas_user
    using (principal = any ((select baas.principals())::text[]));

-- =============================================================== sql/accounts.sql
-- (the aal2 rule's blocked lists, in PL/pgSQL: plans kept)
create or replace function baas._aal2_blocked() returns integer[]
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if baas.aal() = 'aal2' then
        return '{}';
    end if;
    return array(select c.id from baas.collections c where c.require_aal2 order by c.id);
end
$$;

create or replace function baas._aal2_blocked_indexes() returns integer[]
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if baas.aal() = 'aal2' then
        return '{}';
    end if;
    return array(select i.id from baas.indexes i join baas.collections c on c.id = i.collection_id
                  where c.require_aal2 order by i.id);
end
$$;

create policy read_entries_aal on baas.read_entries as restrictive for select to baas_anon, baas_user
    using (collection_id <> all ((select baas._aal2_blocked())::integer[]));

-- ================================================================== sql/lints.sql
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
       -- A security_invoker view (baas.files) reads its tables as the caller: their
       -- policies apply.
       and not (c.relkind = 'v' and exists (select from unnest(c.reloptions) o
                                              where lower(o) in ('security_invoker=true', 'security_invoker=on', 'security_invoker=1')))
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
           '_find_page', '_find_compiled', '_count_compiled', '_btree_index_id', '_read_entries_ready', '_jfield',
           '_jsonb_lp_eq', '_jsonb_lp_lt', '_jsonb_lp_le', '_jsonb_lp_gt', '_jsonb_lp_ge',
           '_jsonb_lp_cmp', '_jsonb_lp_contains',
           -- files (sql/files.sql, sql/grants.sql)
           '_upload_append', '_upload_lease', '_upload_rewind', '_upload_release', '_file_json', '_file_row',
           '_explain_file_miss', '_blob_piece', '_file_max_bytes', '_raise_too_large',
           '_quota_left', '_upload_open', '_upload_insert', '_upload_seal', '_upload_done', '_may_attach_blob',
           '_blob_file_json', '_file_link_sign', '_check_file_name',
           '_normalize_content_type', '_file_type_allowed',
           -- multi-factor (sql/accounts.sql): the aal2 policies
           '_aal2_blocked', '_aal2_blocked_indexes',
           -- rpc (sql/rpc.sql)
           '_exposed_schemas', '_rpc_plan',
           -- (rpc above, protected tables below: one line each, kept apart for merges)
           -- tables (sql/tables.sql)
           -- tables over HTTP (package C)
           '_served_table', '_table_check', '_table_explain_miss', '_table_list_sql', '_table_get_sql',
           '_table_insert_sql', '_table_update_sql', '_table_delete_sql',
           '_table_exact_numbers',
           '_apply_operators', -- field operators (issue 18, package A)
           -- references (issue 18, package C)
           '_check_references', '_expand_tree', '_ref_key', '_ref_value', '_ref_profiles', '_max_expand_references', '_expand_level',
           '_lower_references', '_max_response_bytes', '_expand_checked',
           '_batch_max_operations', -- batches (issue 18, sql/batch.sql)
           '_protected_table_stub'])
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
           -- files
           'upload_create', 'upload_status', 'upload_finish', 'upload_abort', 'upload_file', 'file_get',
           'file_read', 'file_meta', 'update_file', 'delete_file', 'set_file_acl', 'get_file_acl', 'file_link',
           'thumbnail_get', 'thumbnail_put', 'cleanup_uploads', 'cleanup_blobs', 'unreferenced_files', 'file_usage', 'set_bucket',
           -- live change feeds
           'set_realtime', 'realtime_position', 'realtime_status', 'realtime_disable',
           -- email (sql/email.sql)
           'send_email', 'retry_email', 'purge_email_outbox',
           -- accounts: email flows (sql/accounts.sql)
           'request_verification', 'request_password_reset', 'request_magic_link', 'verify',
           'reset_password', 'request_email_change',
           -- multi-factor (sql/accounts.sql)
           'mfa_enroll_totp', 'mfa_verify_factor', 'mfa_challenge', 'mfa_unenroll', 'mfa_recovery_codes',
           'mfa_status', 'admin_reset_mfa', 'aal', 'require_aal2', 'set_collection_options',
           -- accounts: anonymous, sessions, suspension (sql/accounts.sql)
           'sign_in_anonymously', 'upgrade_account', 'purge_anonymous_users', 'list_sessions',
           'end_session', 'end_other_sessions', 'user_sessions', 'sign_out_user', 'suspend_user',
           'reactivate_user', 'is_anonymous',
           -- accounts: import (sql/accounts.sql)
           'import_users',
           -- oidc (sql/oidc.sql)
           'set_oidc_provider', 'drop_oidc_provider', 'oidc_providers', 'oidc_sign_in', 'link_identity',
           'unlink_identity', 'identities',
           -- social (sql/social.sql)
           'follow', 'unfollow', 'remove_follower', 'answer_follow_request', 'follow_requests',
           'followers', 'following', 'update_profile', 'get_profile', 'lookup_user',
           'find_users',
           -- rpc (sql/rpc.sql)
           'expose_schema', 'unexpose_schema', 'rpc', 'raise',
           -- (rpc above, protected tables below: one line each, kept apart for merges)
           -- tables (sql/tables.sql)
           'protect', 'unprotect', 'has_role', 'can_read', 'can_read_file',
           -- tables over HTTP (package C)
           'table_list', 'table_get', 'table_insert', 'table_update', 'table_delete',
           'create_webhook', 'drop_webhook', 'set_webhook_active', 'replay_webhook_event', 'replay_dead_webhook_events', 'purge_webhook_events', -- webhooks (sql/webhooks.sql)
           'batch', -- batches (issue 18, sql/batch.sql)
           -- DBA tools
           'as_user', 'purge_audit_log', 'security_lints',
           -- housekeeping (sql/housekeeping.sql)
           'housekeeping',
           -- references (sql/refs.sql)
           'expand', 'expand_page', 'referrers'])
    union all
    -- 4c. The document policies and the index entries' read policy are made from one
    --     rule (sql/permissions.sql): each must still say what documents_read says
    --     (with its own ACL column), for the same roles and command; the read entries'
    --     policy keeps its one text (the caller's principals; equal to documents_read
    --     for entries kept in step, see 4c''); the service policies must agree; no other
    --     policy may widen any of these tables.
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
    select 'policy_drift', 'policy read_entries_read on baas.read_entries',
           case when p.oid is null then 'missing: sql/permissions.sql creates it'
                else format('not the read entries'' rule (principal = any (caller''s principals)): %s', pg_get_expr(p.polqual, p.polrelid)) end
      from (select 1) one
      left join pg_policy p on p.polname = 'read_entries_read' and p.polrelid = 'baas.read_entries'::regclass
      left join pg_policy r on r.polname = 'documents_read' and r.polrelid = 'baas.documents'::regclass
     where p.oid is null
        or pg_get_expr(p.polqual, p.polrelid) is distinct from '(principal = ANY (( SELECT baas.principals() AS principals)::text[]))'
        or p.polroles::oid[] is distinct from r.polroles::oid[]
        or p.polcmd::text <> 'r' or p.polpermissive is distinct from r.polpermissive
    union all
    -- 4c''. The read entries are kept by baas.documents' triggers: without them (dropped,
    --      or disabled) counts of whole collections would drift from the documents.
    select 'read_entries_unkept', format('trigger %I on baas.documents', v.tgname),
           case when t.oid is null then 'missing: sql/documents.sql creates it'
                else 'disabled (or replica-only): whole-collection counts no longer follow the documents' end
      from (values ('documents_read_entries'), ('documents_read_entries_update'), ('documents_truncate_entries')) v(tgname)
      left join pg_trigger t on t.tgrelid = 'baas.documents'::regclass and t.tgname = v.tgname
     where t.oid is null or t.tgenabled not in ('O', 'A')
    union all
    select 'policy_drift', format('policy %I on %s', p.polname, p.polrelid::regclass),
           'the service policy must be `to baas_service using (true)`, as documents_service'
      from pg_policy p
     where p.polname in ('documents_service', 'index_entries_service', 'read_entries_service')
       and p.polrelid in ('baas.documents'::regclass, 'baas.index_entries'::regclass, 'baas.read_entries'::regclass)
       and (p.polroles::oid[] is distinct from array['baas_service'::regrole::oid]
            or pg_get_expr(p.polqual, p.polrelid) is distinct from 'true')
    union all
    select 'policy_drift', format('policy %I on %s', p.polname, p.polrelid::regclass),
           'a policy sql/permissions.sql does not define: it may widen what callers see or do'
      from pg_policy p
     where (p.polrelid = 'baas.documents'::regclass
            and p.polname not in ('documents_service', 'documents_read', 'documents_create',
                                  'documents_update', 'documents_delete', 'documents_aal'))
        or (p.polrelid = 'baas.index_entries'::regclass
            and p.polname not in ('index_entries_service', 'index_entries_read', 'index_entries_aal'))
        or (p.polrelid = 'baas.read_entries'::regclass
            and p.polname not in ('read_entries_service', 'read_entries_read', 'read_entries_aal'))
    union all
    -- 4c'. The aal2 rule (sql/accounts.sql, multi-factor): restrictive, for the two API
    --      roles that obey ACLs, with exactly its text (a permissive or loosened copy
    --      would let aal1 callers into require_aal2 collections).
    select 'policy_drift', format('policy %I on %s', v.polname, v.rel),
           case when p.oid is null then 'missing: sql/accounts.sql creates it'
                else format('not the restrictive aal2 rule: %s', pg_get_expr(p.polqual, p.polrelid)) end
      from (values ('documents_aal', 'baas.documents', '*',
                    '(collection_id <> ALL (( SELECT baas._aal2_blocked() AS _aal2_blocked)::integer[]))'),
                   ('index_entries_aal', 'baas.index_entries', 'r',
                    '(index_id <> ALL (( SELECT baas._aal2_blocked_indexes() AS _aal2_blocked_indexes)::integer[]))'),
                   ('read_entries_aal', 'baas.read_entries', 'r',
                    '(collection_id <> ALL (( SELECT baas._aal2_blocked() AS _aal2_blocked)::integer[]))')) v(polname, rel, cmd, qual)
      left join pg_policy p on p.polname = v.polname and p.polrelid = v.rel::regclass
     where p.oid is null or p.polpermissive or p.polcmd::text <> v.cmd
        or pg_get_expr(p.polqual, p.polrelid) is distinct from v.qual
        or (v.cmd = '*' and pg_get_expr(p.polwithcheck, p.polrelid) is distinct from v.qual)
        or (v.cmd <> '*' and p.polwithcheck is not null)
        or (select array_agg(x order by x) from unnest(p.polroles::oid[]) x)
           is distinct from (select array_agg(x order by x)
                               from unnest(array['baas_anon'::regrole::oid, 'baas_user'::regrole::oid]) x)
    union all
    -- 4d. Files (sql/permissions.sql, "files"): a chunk, a blob and a thumbnail are
    --     readable exactly when a readable document holds the blob. Each read policy
    --     must keep that text, for baas_anon and baas_user; the service policies are
    --     `using (true)` for baas_service; no other policy may widen these tables.
    select 'file_policy_drift', format('policy %I on %s', v.polname, v.rel),
           case when p.oid is null then 'missing: sql/permissions.sql creates it'
                else format('not the one file rule: %s', pg_get_expr(p.polqual, p.polrelid)) end
      from (values ('file_chunks_read', 'baas._file_chunks', '_file_chunks.blob_id', false),
                   ('blobs_read', 'baas._blobs', '_blobs.id', false),
                   ('thumbnails_read', 'baas._thumbnails', '_thumbnails.source_blob', false),
                   ('file_chunks_service', 'baas._file_chunks', null, true),
                   ('blobs_service', 'baas._blobs', null, true),
                   ('thumbnails_service', 'baas._thumbnails', null, true)) v(polname, rel, col, service)
      left join pg_policy p on p.polname = v.polname and p.polrelid = v.rel::regclass
     where p.oid is null
        or p.polcmd::text <> 'r' or not p.polpermissive or p.polwithcheck is not null
        or (v.service and (pg_get_expr(p.polqual, p.polrelid) is distinct from 'true'
                           or p.polroles::oid[] is distinct from array['baas_service'::regrole::oid]))
        or (not v.service and (
               pg_get_expr(p.polqual, p.polrelid) is distinct from
                   format(E'(EXISTS ( SELECT\n   FROM baas.documents d\n  WHERE (d.blob_id = %s)))', v.col)
               or (select array_agg(x order by x) from unnest(p.polroles::oid[]) x)
                  is distinct from (select array_agg(x order by x)
                                      from unnest(array['baas_anon'::regrole::oid, 'baas_user'::regrole::oid]) x)))
    union all
    select 'file_policy_drift', format('policy %I on %s', p.polname, p.polrelid::regclass),
           'a policy sql/permissions.sql does not define: it may widen who reads file bytes'
      from pg_policy p
     where p.polrelid in ('baas._file_chunks'::regclass, 'baas._blobs'::regclass, 'baas._thumbnails'::regclass,
                          'baas._uploads'::regclass, 'baas._file_refs'::regclass, 'baas._blob_trash'::regclass)
       and p.polname not in ('file_chunks_read', 'file_chunks_service', 'blobs_read', 'blobs_service',
                             'thumbnails_read', 'thumbnails_service')
    union all
    -- 4e. The file tables are written by the extension's SECURITY DEFINER functions
    --     only: no API role may write them (nor read the sessions and references).
    select 'file_table_grant', format('%s to %s', t.rel, r.rolname),
           format('%s may %s it: only SECURITY DEFINER functions may', r.rolname, lower(x.priv))
      from (values ('baas._blobs'), ('baas._file_chunks'), ('baas._uploads'), ('baas._thumbnails'),
                   ('baas._file_refs'), ('baas._blob_trash')) t(rel)
      cross join (values ('baas_anon'), ('baas_user'), ('baas_service')) r(rolname)
      cross join (values ('INSERT'), ('UPDATE'), ('DELETE'), ('TRUNCATE'), ('SELECT')) x(priv)
     where (x.priv in ('INSERT', 'UPDATE', 'SELECT')
            and has_any_column_privilege(r.rolname, t.rel::regclass, x.priv)
            and (x.priv <> 'SELECT' or t.rel in ('baas._uploads', 'baas._file_refs', 'baas._blob_trash')))
        or (x.priv in ('DELETE', 'TRUNCATE') and has_table_privilege(r.rolname, t.rel::regclass, x.priv))
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
    union all
    -- 6. The RPC door (sql/rpc.sql): functions served over HTTP.
    select * from baas._rpc_lints()
    union all
    -- 7. Protected tables (sql/tables.sql): policies made from their definitions.
    select * from baas._table_lints()
$$;
comment on function baas.security_lints() is
    'Security lints (no rows = clean): unforced RLS on API-readable tables, SECURITY DEFINER without search_path, PUBLIC execute, exposed internal functions, undocumented public functions, policies that drifted from their one rule (documents and files), missing or disabled read-entry triggers, write grants on file tables, policies reading user-editable data, the RPC door and protected tables (rpc_lints, table_lints)';

-- ================================================================= sql/grants.sql
revoke execute on function baas._read_entries_ready(integer), baas._read_entries_sync(), baas._entries_truncate(),
    baas._entry_fits(text[]), baas._index_entries_complete(integer), baas._readers(uuid, text[]) from public;
grant execute on function baas._read_entries_ready(integer) to baas_anon, baas_user, baas_service;

-- The read entries of the documents already stored; every collection is then complete.
insert into baas.read_entries (collection_id, principal, doc_id)
select d.collection_id, p, d.id
  from baas.documents d, unnest(baas._readers(d.owner, d.acl_read)) p
on conflict do nothing;
insert into baas._read_entries_ready select c.id from baas.collections c;
analyze baas.read_entries;

-- Tell every proxy that the extension changed (see pgbaas--0.2.0--0.3.0.sql).
select pg_catalog.pg_notify('baas_extension', '0.11.0');
