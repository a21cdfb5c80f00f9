-- pgbaas 0.5.0 -> 0.6.0, run by ALTER EXTENSION pgbaas UPDATE.
--
-- It turns a 0.5.0 database into exactly what CREATE EXTENSION makes at 0.6.0:
-- tests/tests/upgrade.rs installs 0.5.0 from its release commit, fills it (files
-- included), runs this, checks the data through the proxy and compares the schema
-- (pg_dump --binary-upgrade) with a fresh install's. Every statement below is the final
-- text of the file it names (sql/CHANGES-0.6.0.md lists what changed and why). Older
-- databases upgrade through the earlier scripts first.
--
-- Once released, an upgrade script is never edited: a fix goes into the next version's.

-------------------------------------------------------------------- files (issue 15)
-- A direct call of baas._upload_insert replacing a file answers as upload_create does
-- (not found / forbidden) instead of opening a session refused only at finish
-- (sql/permissions.sql: baas._acl_allows, made from the policies' one rule text).
do $policies$
declare
    rule constant text := 'owner = (select baas.uid()) or %I && (select baas.principals())';
begin
    execute format('create function baas._acl_allows(owner uuid, acl text[]) returns boolean '
                   'language sql stable set search_path = pg_catalog, pg_temp '
                   'return coalesce(%s, false)', format(rule, 'acl'));
end
$policies$;
-- As sql/grants.sql does for a fresh install: no function is executable by PUBLIC.
revoke execute on function baas._acl_allows(uuid, text[]) from public;

-- sql/files.sql
-- The session row and its empty blob, owned by the caller. upload_create makes the
-- checks that need the caller's policies (may it read and update the file it
-- replaces); this step, which API roles can call directly, repeats every other one:
-- bucket, create permission, name, type list, size, session count and quota.
create or replace function baas._upload_insert(collection_id integer, file_id uuid, replace boolean, expected_version bigint,
                                    length bigint, name text, content_type text, data jsonb, acl jsonb, sha256 bytea)
returns baas._uploads
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    u baas._uploads;
    v_payer uuid;
    v_old bigint := 0;
    v_left bigint;
    v_open integer;
    v_read text[];
    v_update text[];
    v_privileged boolean := baas._is_privileged(baas._caller_role());
    c baas.collections;
begin
    u.id := gen_random_uuid();
    u.blob_id := gen_random_uuid();
    select * into c from baas.collections x where x.id = _upload_insert.collection_id;
    if not found or not c.bucket then
        raise exception using errcode = '22023', detail = 'not_a_bucket',
            message = format('collection %s does not hold files (it is not a bucket)', coalesce(c.name, '?'));
    end if;
    if file_id is null or replace is null then
        raise exception using errcode = '22023', detail = 'invalid_request', message = 'file_id and replace must not be null';
    end if;
    name := baas._check_file_name(coalesce(name, ''));
    if length is not null and length < 0 then
        raise exception using errcode = '22023', detail = 'invalid_request', message = 'length must not be negative';
    end if;
    if data is not null and jsonb_typeof(data) <> 'object' then
        raise exception using errcode = '22023', detail = 'invalid_data', message = 'data must be a JSON object';
    end if;
    if sha256 is not null and pg_catalog.length(sha256) <> 32 then
        raise exception using errcode = '22023', detail = 'invalid_request', message = 'sha256 must be 32 bytes';
    end if;
    content_type := baas._normalize_content_type(coalesce(content_type, ''));
    if content_type is not null and content_type <> 'application/octet-stream'
       and not baas._file_type_allowed(content_type, c.file_types) then
        raise exception using errcode = '22023', detail = 'unsupported_file_type',
            message = format('bucket %s does not take %s files', c.name, content_type);
    end if;
    if length > coalesce(c.file_max_bytes, baas._file_max_bytes()) then
        perform baas._raise_too_large(length, coalesce(c.file_max_bytes, baas._file_max_bytes()));
    end if;
    -- The caller's role, not this function's owner: as baas._may_create decides.
    if not replace and not (c.create_acl && baas.principals() or v_privileged) then
        raise exception using errcode = '42501', detail = 'forbidden',
            message = format('you may not create files in %s', c.name);
    end if;
    if acl is not null then
        acl := baas._normalize_acl(acl);
    end if;
    -- A bounded number of open sessions per user (per bucket for anonymous callers),
    -- counted under a lock so that concurrent creates cannot all pass.
    perform pg_advisory_xact_lock(hashtext('baas.uploads'),
                                  hashtext(coalesce(baas.uid()::text, 'anonymous:' || _upload_insert.collection_id)));
    select count(*) into v_open from baas._uploads x
     where x.owner is not distinct from baas.uid() and not x.finishing and x.expires_at > now()
       and (baas.uid() is not null or x.collection_id = _upload_insert.collection_id);
    if v_open >= baas._upload_max_open() then
        raise exception using errcode = '54000', detail = 'too_many_uploads',
            message = format('you have %s unfinished uploads; finish or abort one first (they expire after %s)',
                             v_open, (select s.upload_ttl from baas.settings s));
    end if;
    -- Whose quota pays: the file's owner for a replace (whoever sends the new version,
    -- with the old version's size given back), the caller for a new file. Serialised
    -- per owner with the finishes (_upload_seal).
    if replace then
        select d.owner, coalesce((d.file ->> 'size')::bigint, 0), d.acl_read, d.acl_update
          into v_payer, v_old, v_read, v_update
          from baas.documents d
         where d.id = _upload_insert.file_id and d.collection_id = _upload_insert.collection_id and d.blob_id is not null;
        -- As upload_create's reads under the caller's policies answer: a file the caller
        -- may not read is not found, one it may read but not update is forbidden. Without
        -- this a direct call opened a session (refused only at finish, and counted
        -- against the cap) and told which unreadable ids exist.
        if not found or not (v_privileged or baas._acl_allows(v_payer, v_read)) then
            raise exception using errcode = 'P0002', detail = 'file_not_found', message = format('file %s not found', file_id);
        end if;
        if not (v_privileged or baas._acl_allows(v_payer, v_update)) then
            raise exception using errcode = '42501', detail = 'forbidden',
                message = 'you may read this file but not overwrite it';
        end if;
    else
        v_payer := baas.uid();
    end if;
    if v_payer is not null then
        perform pg_advisory_xact_lock(hashtext('baas.quota'), hashtext(v_payer::text));
        v_left := baas._quota_of(v_payer);
        if v_left is not null then
            v_left := v_left - baas._upload_held(v_payer, null);
            if coalesce(length, 0) - coalesce(v_old, 0) > v_left then
                perform baas._raise_quota(coalesce(length, 0), v_left + coalesce(v_old, 0));
            end if;
        end if;
    end if;
    insert into baas._blobs (id) values (u.blob_id);
    insert into baas._uploads (id, owner, collection_id, file_id, replace, expected_version, blob_id, length,
                               hash_state, name, content_type, data, acl, sha256_expected, expires_at)
    values (u.id, baas.uid(), collection_id, file_id, replace, expected_version, u.blob_id, length,
            baas._sha256_new(), name, content_type, coalesce(data, '{}'), acl, sha256,
            now() + (select s.upload_ttl from baas.settings s))
    returning * into u;
    return u;
end
$$;

-- Tell every proxy that the extension changed (see pgbaas--0.2.0--0.3.0.sql).
select pg_catalog.pg_notify('baas_extension', '0.6.0');
