-- pgbaas backups: what pg_dump carries, and what makes a plain pg_restore give back
-- exactly the database that was dumped (tests/tests/upgrade.rs takes one through
-- pg_dump -Fc and pg_restore into a fresh cluster). docs/operations.md#backups.
--
-- Tables of an extension are not dumped, only CREATE EXTENSION is, unless the extension
-- registers them with pg_extension_config_dump: each table's call sits next to its
-- CREATE TABLE (schema.sql, auth.sql, documents.sql, audit.sql). Left out on purpose:
-- baas.index_entries, baas.read_entries and their ready marks, derived from the
-- documents and rebuilt after a restore by baas.rebuild_index_entries(); baas._account_limits
-- (limits.sql), per-minute counts that a restore starts again at 0.
--
-- A restore runs CREATE EXTENSION (which makes the settings row and a first signing
-- key), then loads the rows with every trigger enabled (pg_restore's --disable-triggers
-- applies to data-only restores alone). The triggers below, and the documents guard and
-- the role and key audit triggers, know a restore when they see one: see baas._restoring().

-- Sign-in throttles in force (short-lived, but a restore should not lift them) and the
-- sources trusted to sign in past them.
select pg_catalog.pg_extension_config_dump('baas._login_throttles', '');
select pg_catalog.pg_extension_config_dump('baas._trusted_sources', '');

-- Files (sql/files.sql): blobs, their bytes, unfinished uploads (a restored database
-- can resume them) and finished ones (HEAD still answers for them), references and quotas. Not baas._thumbnails: a cache, restored empty.
select pg_catalog.pg_extension_config_dump('baas._blobs', '');
select pg_catalog.pg_extension_config_dump('baas._file_chunks', '');
select pg_catalog.pg_extension_config_dump('baas._uploads', '');
select pg_catalog.pg_extension_config_dump('baas._uploads_finished', '');
-- Deleted files' bytes not yet swept: a restored database sweeps them (cleanup_blobs).
select pg_catalog.pg_extension_config_dump('baas._blob_trash', '');
select pg_catalog.pg_extension_config_dump('baas._file_refs', '');
select pg_catalog.pg_extension_config_dump('baas.file_quotas', '');

-- The identity sequences: without their positions, the first audit entry, collection or
-- index made after a restore would take an id already in use.
select pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('baas.audit_log', 'id')::regclass, '');
select pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('baas.collections', 'id')::regclass, '');
select pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('baas.indexes', 'id')::regclass, '');

-- True while a dump is being loaded: pg_restore and pg_dump's SQL scripts set
-- row_security = off, which only a role that bypasses row-level security can use on
-- pgbaas's tables (any other role's query fails instead), and the session's login role
-- is privileged (baas._is_privileged in sql/permissions.sql; for a login role that means
-- superuser or BYPASSRLS). Trigger functions that run as the extension's owner ask
-- this, so a caller of a SECURITY DEFINER function cannot pass for a restore by setting
-- row_security itself. (The documents guard runs as the caller and checks row_security
-- alone: only superusers and BYPASSRLS roles get that far with it off.)
create function baas._restoring() returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select pg_catalog.current_setting('row_security') = 'off' and baas._is_privileged(session_user)
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
