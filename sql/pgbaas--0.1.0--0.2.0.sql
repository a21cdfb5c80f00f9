-- pgbaas 0.1.0 -> 0.2.0, run by ALTER EXTENSION pgbaas UPDATE.
--
-- Hand-written: it turns a 0.1.0 database into exactly what CREATE EXTENSION makes at
-- 0.2.0 (tests/tests/upgrade.rs installs 0.1.0 from its release commit, fills it,
-- updates, and compares the schema with a fresh install's). Once released, an upgrade
-- script is never edited: a fix goes into the next version's script.
--
-- A package upgrade replaces the library (pgbaas.so) before this runs; the C functions
-- that 0.1.0's SQL names are all still in 0.2.0's library (the test checks).

-------------------------------------------------------------------- backups (sql/dump.sql)
-- Account lockouts in force (short-lived, but a restore should not lift them).
select pg_catalog.pg_extension_config_dump('baas._lockouts', '');

-- The identity sequences: without their positions, the first audit entry, collection or
-- index made after a restore would take an id already in use.
select pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('baas.audit_log', 'id')::regclass, '');
select pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('baas.collections', 'id')::regclass, '');
select pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('baas.indexes', 'id')::regclass, '');

-- True while a dump is being loaded: pg_restore and pg_dump's SQL scripts set
-- row_security = off, which only a role that bypasses row-level security can use on
-- pgbaas's tables (any other role's query fails instead), and the session's login role
-- is such a role. Trigger functions that run as the extension's owner ask this, so a
-- caller of a SECURITY DEFINER function cannot pass for a restore by setting
-- row_security itself. (The documents guard runs as the caller and checks
-- row_security alone: only superusers and BYPASSRLS roles get that far with it off.)
create function baas._restoring() returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select pg_catalog.current_setting('row_security') = 'off'
       and exists (select from pg_catalog.pg_roles r
                    where r.rolname = session_user and (r.rolsuper or r.rolbypassrls))
$$;
comment on function baas._restoring() is 'Whether this session is loading a dump (pg_restore): row_security off, as a superuser';

-- The settings row of the dump replaces the one CREATE EXTENSION made (a duplicate
-- key would otherwise lose the dumped settings).
create function baas._settings_restore() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if baas._restoring() then
        delete from baas.settings;
    end if;
    return new;
end
$$;
create trigger settings_restore before insert on baas.settings
    for each row execute function baas._settings_restore();

-- DBAs, once after pg_restore. pg_dump writes an extension's tables as CREATE EXTENSION
-- plus their rows: indexes made on them later go with their definition and are left
-- out, so the per-collection indexes of baas.create_index (and their statistics) are
-- missing after a restore while baas.indexes still lists them. This makes each missing
-- one again with baas.create_index (new ids), then rebuilds the counting entries
-- (baas.rebuild_index_entries). Returns how many indexes it made.
create function baas.restore_indexes() returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    i record;
    n integer := 0;
begin
    for i in select x.id, c.name as collection, x.path, x.kind
               from baas.indexes x join baas.collections c on c.id = x.collection_id
              where not exists (select from pg_catalog.pg_class r
                                 where r.relnamespace = 'baas'::regnamespace and r.relname = x.name)
              order by x.id loop
        delete from baas.indexes where id = i.id;
        perform baas.create_index(i.collection, i.path, i.kind);
        n := n + 1;
    end loop;
    perform baas.rebuild_index_entries();
    return n;
end
$$;
comment on function baas.restore_indexes() is
    'DBAs: after pg_restore, make the collection indexes pg_dump leaves out and rebuild their counting entries; returns how many it made';

-- New functions are nobody's but the owner's (sql/grants.sql revokes PUBLIC's execute
-- from every function of a fresh install).
revoke execute on function baas._restoring(), baas._settings_restore(), baas.restore_indexes() from public;

-------------------------------------------------------------------- restores keep rows as dumped
-- sql/documents.sql: the documents guard keeps versions and times while a dump loads.
create or replace function baas._documents_guard() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_schema jsonb;
    v_privileged boolean := baas.privileged_caller();
begin
    -- Loading a dump (pg_restore sets row_security off, which only superusers and
    -- BYPASSRLS roles can use here: sql/dump.sql): the rows keep their versions and times.
    if tg_op = 'INSERT' and pg_catalog.current_setting('row_security') = 'off' then
        return new;
    end if;
    if tg_op = 'INSERT' then
        new.version := 1;
        new.created_at := now();
        new.updated_at := new.created_at;
    else
        new.collection_id := old.collection_id;
        new.id := old.id;
        new.created_at := old.created_at;
        new.version := old.version + 1;
        new.updated_at := greatest(now(), old.updated_at);
        -- Anonymous callers own nothing, and nobody owns an ownerless document.
        if not v_privileged and (old.owner is null or old.owner is distinct from baas.uid()) then
            if new.owner is distinct from old.owner then
                raise exception using errcode = '42501', detail = 'forbidden',
                    message = 'only the owner may transfer this document';
            end if;
            if new.acl_read is distinct from old.acl_read or new.acl_update is distinct from old.acl_update
               or new.acl_delete is distinct from old.acl_delete then
                raise exception using errcode = '42501', detail = 'forbidden',
                    message = 'only the owner may change this document''s ACL';
            end if;
        end if;
        if new.data is not distinct from old.data then
            return new;
        end if;
    end if;
    select c.schema into v_schema from baas.collections c where c.id = new.collection_id;
    if v_schema is not null then
        perform baas.validate_document(v_schema, new.data);
    end if;
    return new;
end
$$;

-- sql/audit.sql: loading roles and keys from a dump records no events.
create or replace function baas._audit_roles() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    -- A restore loads roles, not changes to them (sql/dump.sql).
    if baas._restoring() then
        return null;
    end if;
    if tg_table_name = 'roles' then
        perform baas._audit(case tg_op when 'INSERT' then 'role.create' else 'role.drop' end,
            details => jsonb_build_object('role', coalesce(new.name, old.name)));
    elsif tg_table_name = 'role_members' then
        perform baas._audit(case tg_op when 'INSERT' then 'role.member.add' else 'role.member.remove' end,
            coalesce(new.user_id, old.user_id), details => jsonb_build_object('role', coalesce(new.role, old.role)));
    else
        perform baas._audit(case tg_op when 'INSERT' then 'role.nest.add' else 'role.nest.remove' end,
            details => jsonb_build_object('role', coalesce(new.role, old.role),
                                          'member_role', coalesce(new.member_role, old.member_role)));
    end if;
    return null;
end
$$;

create or replace function baas._audit_keys() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    -- A restore loads keys (and its CREATE EXTENSION makes one): not events (sql/dump.sql).
    if baas._restoring() then
        return null;
    end if;
    perform baas._audit('key.create', details => jsonb_build_object('kid', new.kid));
    return null;
end
$$;
