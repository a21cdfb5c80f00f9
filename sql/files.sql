-- pgbaas files (issue 15, docs/files.md): a file is a document of a collection with
-- `bucket = true`, whose bytes live in baas._file_chunks (bytea rows of at most 1 MiB)
-- under one blob (baas._blobs). Its metadata, ACL, owner and version are the
-- document's: row-level security on the document decides every read, overwrite,
-- delete and ACL change, and the chunks are readable exactly when a readable document
-- holds their blob (sql/permissions.sql, "files"). Bytes and metadata are written in
-- one transaction, so there are no orphans and a pg_dump or a point-in-time restore
-- brings both back at the same instant.
--
-- An upload is a session (baas._uploads): created as the caller (upload_create, which
-- makes the early 403/404/413/415 answers), filled by appends (each checks the offset
-- and extends the running sha256, kept as sha2's serialised state), and finished by
-- upload_finish, which checks length, digest, type and size, then inserts or updates
-- the document as the caller: the policies and the documents guard decide. The guard
-- lets a blob be attached only by the finishing session of the same caller.

------------------------------------------------------------------------ tables
alter table baas.collections
    add column bucket boolean not null default false,
    -- null: the global cap (1 TiB; the proxy has its own, file_max_bytes)
    add column file_max_bytes bigint check (file_max_bytes between 0 and 1099511627776),
    -- null: any type; entries 'image/png' or 'image/*'
    add column file_types text[],
    -- Whether references from this collection's documents ({"$file": id}) keep their
    -- files from being deleted ('restrict') or not ('allow').
    add column file_refs text not null default 'allow' check (file_refs in ('allow', 'restrict'));

alter table baas.settings
    -- Unfinished uploads are removed this long after they were created.
    add column upload_ttl interval not null default '24 hours'
        check (upload_ttl between '1 minute' and '30 days'),
    -- Bytes of files a user may own (null: no quota); baas.file_quotas overrides it per user.
    add column file_quota_bytes bigint check (file_quota_bytes >= 0);

create table baas._blobs (
    id uuid primary key,
    size bigint not null default 0 check (size >= 0),
    sha256 bytea check (sha256 is null or length(sha256) = 32),  -- set at finish
    content_type text,                                            -- set at finish
    created_at timestamptz not null default now()
);

create table baas._file_chunks (
    blob_id uuid not null references baas._blobs (id) on delete cascade,
    off bigint not null check (off >= 0),  -- byte offset of data[0]
    data bytea not null check (length(data) between 1 and 1048576),
    primary key (blob_id, off)
);
-- Media is compressed already: no pglz attempt, and substring() reads only the
-- TOAST pieces it needs (ranges).
alter table baas._file_chunks alter column data set storage external;

create table baas._uploads (
    id uuid primary key,  -- also the tus capability: whoever knows it (and is its owner) may write
    owner uuid references baas.users (id) on delete cascade,  -- null: anonymous
    collection_id integer not null references baas.collections (id) on delete cascade,
    file_id uuid not null,  -- the document it creates or replaces
    replace boolean not null,
    expected_version bigint,
    blob_id uuid not null unique references baas._blobs (id),  -- deleted with the session unless attached
    length bigint check (length >= 0),  -- null: unknown (a chunked POST)
    "offset" bigint not null default 0,
    hash_state bytea not null,  -- sha2 0.11 serialised Sha256 of bytes [0, offset)
    patch_from bigint,  -- checkpoint of a checksummed tus PATCH
    patch_state bytea,
    lease uuid,  -- one writer at a time
    lease_until timestamptz,
    name text not null,
    content_type text,
    data jsonb not null default '{}',
    acl jsonb,
    sha256_expected bytea,
    finishing boolean not null default false,
    created_at timestamptz not null default now(),
    -- expires_at = created_at: a one-shot session (baas.upload_file), usable only in
    -- the transaction that made it.
    expires_at timestamptz not null,
    -- An anonymous session's client network (baas._client_net, from the address the
    -- proxy sets): the open-session cap counts anonymous sessions per network.
    client_ip text
);

-- Sessions that finished, remembered for a day (baas.cleanup_uploads forgets them): a
-- client whose last PATCH was stored but whose answer was lost asks HEAD, which then
-- answers Upload-Offset = Upload-Length and the file's id, so it does not send the file
-- again. One-shot sessions (baas.upload_file) have no id a client knows: not kept.
create table baas._uploads_finished (
    id uuid primary key,  -- the session's id
    owner uuid references baas.users (id) on delete cascade,  -- null: anonymous
    file_id uuid not null,
    length bigint not null,
    finished_at timestamptz not null default now()
);
create index uploads_finished_at_idx on baas._uploads_finished (finished_at);
revoke all on baas._uploads_finished from public;
create index uploads_expires_idx on baas._uploads (expires_at);

-- Thumbnails (proxy/src/files/thumb.rs), cached per blob: a new version is a new blob.
create table baas._thumbnails (
    source_blob uuid not null references baas._blobs (id) on delete cascade,
    width int not null,
    height int not null,
    fit text not null check (fit in ('contain', 'cover')),
    content_type text not null,
    data bytea not null,
    created_at timestamptz not null default now(),
    primary key (source_blob, width, height, fit)
);

-- Blobs no document holds any more (a file deleted or replaced), waiting for
-- baas.cleanup_blobs: their chunks are deleted
-- in batches by the proxy's cleanup service, never in the request's transaction (a
-- 5 GiB file is 5,120 chunk rows). Unreadable from the moment they land here: the
-- policies show a chunk only through a readable document holding its blob, and quotas
-- count only blobs that documents hold.
create table baas._blob_trash (
    blob_id uuid primary key references baas._blobs (id) on delete cascade,
    since timestamptz not null default now()
);
-- The sweep takes the oldest first, a batch at a time, without sorting the backlog.
create index blob_trash_since_idx on baas._blob_trash (since, blob_id);

create table baas.file_quotas (
    user_id uuid primary key references baas.users on delete cascade,
    bytes bigint not null check (bytes >= 0)
);
comment on table baas.file_quotas is 'Per-user file quota in bytes, overriding settings.file_quota_bytes';

alter table baas.documents
    add column blob_id uuid references baas._blobs (id),
    -- {name, size, content_type, sha256 (hex)}: set by the guard from the blob.
    add column file jsonb,
    add constraint documents_file_shape check ((blob_id is null) = (file is null));
create unique index documents_blob_key on baas.documents (blob_id) where blob_id is not null;
-- File ids are unique across buckets: /v1/files/{id} and {"$file": id} name no bucket.
create unique index documents_file_id_key on baas.documents (id) where blob_id is not null;

-- References from documents to files ({"$file": "<id>"} anywhere in data), kept by a
-- trigger; read by the delete rule (file_refs) and baas.unreferenced_files().
create table baas._file_refs (
    collection_id integer not null,
    document_id uuid not null,
    file_id uuid not null,
    primary key (collection_id, document_id, file_id),
    foreign key (collection_id, document_id) references baas.documents on delete cascade
);
create index file_refs_file_idx on baas._file_refs (file_id);

revoke all on baas._blobs, baas._file_chunks, baas._uploads, baas._thumbnails, baas._file_refs,
    baas.file_quotas, baas._blob_trash from public;
grant select on baas._file_chunks, baas._thumbnails, baas._blobs to baas_anon, baas_user, baas_service;
grant select, insert, update, delete on baas.file_quotas to baas_service;
-- Renaming a file (file.name) and attaching a new blob (replace) go through the guard.
grant update (blob_id, file) on baas.documents to baas_anon, baas_user, baas_service;

------------------------------------------------------------------------ helpers
-- Largest file when the bucket sets none.
create function baas._file_max_bytes() returns bigint
language sql immutable parallel safe
as $$ select 1099511627776::bigint $$;

-- A file as the API shows it.
create function baas._file_json(d baas.documents, collection text) returns jsonb
language sql stable parallel safe
as $$
    select jsonb_build_object(
        'id', d.id, 'collection', collection, 'name', d.file -> 'name', 'size', d.file -> 'size',
        'content_type', d.file -> 'content_type', 'sha256', d.file -> 'sha256', 'owner', d.owner,
        'acl', jsonb_build_object('read', to_jsonb(d.acl_read), 'update', to_jsonb(d.acl_update),
                                  'delete', to_jsonb(d.acl_delete)),
        'version', d.version, 'created_at', d.created_at, 'updated_at', d.updated_at, 'data', d.data)
$$;

-- Documents as the API shows them: a file's document carries `file`; any other
-- document's JSON is what it was before files existed.
create or replace function baas._document_json(d baas.documents, collection text) returns jsonb
language sql stable parallel safe
as $$
    select jsonb_build_object(
        'id', d.id, 'collection', collection, 'owner', d.owner, 'version', d.version,
        'created_at', d.created_at, 'updated_at', d.updated_at, 'data', d.data,
        'acl', jsonb_build_object('read', to_jsonb(d.acl_read), 'update', to_jsonb(d.acl_update),
                                  'delete', to_jsonb(d.acl_delete)))
        || case when d.file is not null then jsonb_build_object('file', d.file) else '{}'::jsonb end
$$;

-- Collections as the API shows them: a bucket, or a collection whose references
-- restrict deletes, shows its file options; others are unchanged.
create or replace function baas._collection_json(c baas.collections) returns jsonb
language sql stable parallel safe
as $$
    select jsonb_build_object(
        'name', c.name, 'created_at', c.created_at,
        'options', jsonb_build_object(
            'create', to_jsonb(c.create_acl),
            'default_acl', jsonb_build_object('read', to_jsonb(c.default_read),
                'update', to_jsonb(c.default_update), 'delete', to_jsonb(c.default_delete)),
            'schema', c.schema, 'realtime', c.realtime)
            || case when c.bucket or c.file_refs <> 'allow' then jsonb_build_object(
                   'bucket', c.bucket, 'max_file_size', c.file_max_bytes, 'file_types', to_jsonb(c.file_types),
                   'file_refs', c.file_refs) else '{}'::jsonb end)
$$;

-- The visible file `id` and its collection's name, as the caller; P0002 file_not_found
-- when there is none the caller may read, or `version` is given and differs.
create function baas._file_row(id uuid, version bigint default null, out d baas.documents, out collection text)
language plpgsql stable
as $$
begin
    select t.* into d from baas.documents t where t.id = _file_row.id and t.blob_id is not null;
    if not found or (version is not null and d.version <> version) then
        raise exception using errcode = 'P0002', detail = 'file_not_found',
            message = format('file %s not found', _file_row.id);
    end if;
    select c.name into collection from baas.collections c where c.id = d.collection_id;
end
$$;

-- Why did a write to file `id` touch no row? As _explain_write_miss, for files.
create function baas._explain_file_miss(id uuid, expected_version bigint, verb text) returns void
language plpgsql stable
as $$
declare
    v_version bigint;
begin
    select t.version into v_version from baas.documents t where t.id = _explain_file_miss.id and t.blob_id is not null;
    if not found then
        raise exception using errcode = 'P0002', detail = 'file_not_found', message = format('file %s not found', id);
    end if;
    if expected_version is not null and v_version <> expected_version then
        perform baas._version_conflict(v_version, expected_version);
    end if;
    raise exception using errcode = '42501', detail = 'forbidden',
        message = format('you may read this file but not %s it', verb);
end
$$;

-- Bytes of files `owner` may still add: null when no quota applies. Internal to the
-- SECURITY DEFINER upload steps (not granted): they decide whose quota pays.
create function baas._quota_of(owner uuid) returns bigint
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_quota bigint;
begin
    if owner is null then
        return null;
    end if;
    select q.bytes into v_quota from baas.file_quotas q where q.user_id = owner;
    if not found then
        select s.file_quota_bytes into v_quota from baas.settings s;
    end if;
    if v_quota is null then
        return null;
    end if;
    return v_quota - coalesce((select sum(b.size) from baas.documents d join baas._blobs b on b.id = d.blob_id
                                where d.owner = _quota_of.owner and d.blob_id is not null), 0);
end
$$;

-- The same, asked by a caller: about their own files only.
create function baas._quota_left(owner uuid) returns bigint
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    -- Asked about the caller's own files, or by privileged callers about anyone's:
    -- nobody learns another's usage.
    if owner is null or (owner is distinct from baas.uid() and not baas._is_privileged(baas._caller_role())) then
        return null;
    end if;
    return baas._quota_of(owner);
end
$$;

-- The one quota check of the upload steps (create, an append of unknown length, the
-- finish): 54000 quota_exceeded unless `payer`'s quota (none: no check) holds `size`
-- bytes, the `old` version's bytes given back and the bytes held by its open sessions
-- (but session `except_id`) taken. Serialised per payer: two uploads cannot both pass
-- on the same remaining quota. Only the payer is told what is left: a granted updater
-- replacing someone's file does not learn the owner's usage.
create function baas._quota_check(payer uuid, size bigint, old bigint, except_id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_left bigint;
begin
    if payer is null then
        return;
    end if;
    perform pg_advisory_xact_lock(hashtext('baas.quota'), hashtext(payer::text));
    v_left := baas._quota_of(payer);
    if v_left is null then
        return;
    end if;
    v_left := v_left - baas._upload_held(payer, except_id) + coalesce(old, 0);
    if coalesce(size, 0) > v_left then
        raise exception using errcode = '54000', detail = 'quota_exceeded',
            message = case when payer = baas.uid()
                           then format('the file (%s bytes) exceeds your remaining file quota (%s bytes)', size, greatest(v_left, 0))
                           else format('the file (%s bytes) exceeds the file owner''s remaining file quota', size) end;
    end if;
end
$$;

-- Who pays for session `u`'s bytes: the file's owner for a replace (whoever sends the
-- new version), with the old version's size given back; the session's owner for a
-- new file.
create function baas._upload_payer(u baas._uploads, out payer uuid, out old bigint)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    old := 0;
    if u.replace then
        select d.owner, coalesce((d.file ->> 'size')::bigint, 0) into payer, old
          from baas.documents d where d.collection_id = u.collection_id and d.id = u.file_id and d.blob_id is not null;
    else
        payer := u.owner;
    end if;
end
$$;

create function baas._raise_too_large(size bigint, max bigint) returns void
language plpgsql volatile
as $$
begin
    raise exception using errcode = '54000', detail = 'file_too_large',
        message = format('the file (%s bytes) is larger than this bucket allows (%s bytes)', size, max);
end
$$;

------------------------------------------------------------------- upload sessions
-- The session `upload_id` for the caller (its owner, or a privileged caller), locked;
-- P0002 upload_not_found when absent or someone else's, P0002 upload_expired past
-- its expiry. Internal to the SECURITY DEFINER upload functions.
create function baas._upload_get(upload_id uuid) returns baas._uploads
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    u baas._uploads;
begin
    select * into u from baas._uploads x where x.id = upload_id for update;
    if not found or u.finishing
       or (u.owner is distinct from baas.uid() and not baas._is_privileged(baas._caller_role())) then
        raise exception using errcode = 'P0002', detail = 'upload_not_found', message = 'upload not found';
    end if;
    -- A one-shot session (expires_at = created_at) lives in its creating transaction only.
    if u.expires_at <= now() and not (u.expires_at = u.created_at and u.created_at = now()) then
        raise exception using errcode = 'P0002', detail = 'upload_expired',
            message = format('this upload expired at %s', u.expires_at);
    end if;
    return u;
end
$$;

-- Bytes held by the open sessions (not finishing, not expired) paid by `payer` (its
-- new files, and replaces of its files), but session `except_id`: an upload's bytes
-- count against the quota from its first byte, not only once finished, so that
-- sessions left open for their whole TTL cannot hold more than the quota. A known
-- length counts whole (reserved at create); an unknown one by what it holds.
create function baas._upload_held(payer uuid, except_id uuid) returns bigint
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select coalesce(sum(coalesce(x.length, x."offset")), 0)::bigint
      from baas._uploads x
      left join baas.documents d on x.replace and d.collection_id = x.collection_id and d.id = x.file_id
     where not x.finishing and x.expires_at > now() and x.id is distinct from except_id
       and case when x.replace then d.owner = payer else x.owner = payer end
$$;

-- The client's network, for counting anonymous callers' sessions: an IPv4 address, an
-- IPv6 /56 (as the proxy's rate limits key them: one customer is commonly given a /56,
-- so the 2^64 addresses of a /64 are one client), from baas.client_ip, which the proxy
-- sets per request; null without one.
create function baas._client_net() returns text
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v text := nullif(current_setting('baas.client_ip', true), '');
    a inet;
begin
    if v is null then
        return null;
    end if;
    begin
        a := v::inet;
    exception when invalid_text_representation then
        return v;
    end;
    if family(a) = 6 then
        return network(set_masklen(a, 56))::text;
    end if;
    return host(a);
end
$$;

-- Open sessions one caller may hold at once (a user; anonymous callers per client
-- address, or per bucket when the address is unknown): beyond it, 54000
-- too_many_uploads (HTTP 429). One-shot sessions (baas.upload_file) do not count.
create function baas._upload_max_open() returns integer
language sql immutable
as $$ select 20 $$;

-- The session row and its empty blob, owned by the caller. upload_create makes the
-- checks that need the caller's policies (may it read and update the file it
-- replaces); this step, which API roles can call directly, repeats every other one:
-- bucket, create permission, name, type list, size, session count and quota.
-- `oneshot`: a session for baas.upload_file, finished in the same transaction; it is
-- not held against the open-session cap, and expires as it is made (expires_at =
-- created_at), so no later transaction can use it.
create function baas._upload_insert(collection_id integer, file_id uuid, replace boolean, expected_version bigint,
                                    length bigint, name text, content_type text, data jsonb, acl jsonb, sha256 bytea,
                                    oneshot boolean)
returns baas._uploads
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    u baas._uploads;
    v_payer uuid;
    v_old bigint := 0;
    v_open integer;
    v_read text[];
    v_update text[];
    v_privileged boolean := baas._is_privileged(baas._caller_role());
    v_ip text := case when baas.uid() is null then baas._client_net() end;
    c baas.collections;
begin
    u.id := gen_random_uuid();
    u.blob_id := gen_random_uuid();
    select * into c from baas.collections x where x.id = _upload_insert.collection_id;
    if not found or not c.bucket then
        raise exception using errcode = '22023', detail = 'not_a_bucket',
            message = format('collection %s does not hold files (it is not a bucket)', coalesce(c.name, '?'));
    end if;
    if file_id is null or replace is null or oneshot is null then
        raise exception using errcode = '22023', detail = 'invalid_request',
            message = 'file_id, replace and oneshot must not be null';
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
    -- A bounded number of open sessions per user, per client network for anonymous
    -- callers (an IPv4 address, an IPv6 /56: baas._client_net; per bucket when the proxy
    -- set no address), counted under a lock so that concurrent creates cannot all pass:
    -- one anonymous client cannot block the others. Privileged callers (service tokens,
    -- whose uid is null too) are not capped.
    if not oneshot and not v_privileged then
        perform pg_advisory_xact_lock(hashtext('baas.uploads'), hashtext(coalesce(baas.uid()::text,
            'anonymous:' || coalesce('ip:' || v_ip, 'bucket:' || _upload_insert.collection_id))));
        select count(*) into v_open from baas._uploads x
         where x.owner is not distinct from baas.uid() and not x.finishing and x.expires_at > now()
           and (baas.uid() is not null
                or (v_ip is not null and x.client_ip = v_ip)
                or (v_ip is null and x.client_ip is null and x.collection_id = _upload_insert.collection_id));
        if v_open >= baas._upload_max_open() then
            raise exception using errcode = '54000', detail = 'too_many_uploads',
                message = format('you have %s unfinished uploads; finish or abort one first (they expire after %s)',
                                 v_open, (select s.upload_ttl from baas.settings s));
        end if;
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
    perform baas._quota_check(v_payer, coalesce(length, 0), v_old, null);
    insert into baas._blobs (id) values (u.blob_id);
    insert into baas._uploads (id, owner, collection_id, file_id, replace, expected_version, blob_id, length,
                               hash_state, name, content_type, data, acl, sha256_expected, expires_at, client_ip)
    values (u.id, baas.uid(), collection_id, file_id, replace, expected_version, u.blob_id, length,
            baas._sha256_new(), name, content_type, coalesce(data, '{}'), acl, sha256,
            now() + case when oneshot then interval '0' else (select s.upload_ttl from baas.settings s) end, v_ip)
    returning * into u;
    return u;
end
$$;

-- upload_create's work, as the caller; `oneshot` for baas.upload_file (see
-- _upload_insert). Returns the session.
create function baas._upload_open(collection text, name text, content_type text, length bigint, data jsonb, acl jsonb,
                                  file_id uuid, expected_version bigint, replace boolean, sha256 bytea, oneshot boolean)
returns baas._uploads
language plpgsql volatile
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    v_name text;
    v_type text;
    v_id uuid := _upload_open.file_id;
    v_old bigint := 0;
    d baas.documents;
    a jsonb;
begin
    if not c.bucket then
        raise exception using errcode = '22023', detail = 'not_a_bucket',
            message = format('collection %s does not hold files (it is not a bucket)', c.name);
    end if;
    v_name := baas._check_file_name(coalesce(name, ''));
    if length is not null and length < 0 then
        raise exception using errcode = '22023', detail = 'invalid_request', message = 'length must not be negative';
    end if;
    if data is null or jsonb_typeof(data) <> 'object' then
        raise exception using errcode = '22023', detail = 'invalid_data', message = 'data must be a JSON object';
    end if;
    if sha256 is not null and pg_catalog.length(sha256) <> 32 then
        raise exception using errcode = '22023', detail = 'invalid_request', message = 'sha256 must be 32 bytes';
    end if;
    v_type := baas._normalize_content_type(coalesce(content_type, ''));
    if v_type is not null and v_type <> 'application/octet-stream'
       and not baas._file_type_allowed(v_type, c.file_types) then
        raise exception using errcode = '22023', detail = 'unsupported_file_type',
            message = format('bucket %s does not take %s files', c.name, v_type);
    end if;
    if length > coalesce(c.file_max_bytes, baas._file_max_bytes()) then
        perform baas._raise_too_large(length, coalesce(c.file_max_bytes, baas._file_max_bytes()));
    end if;
    if replace then
        if v_id is null then
            raise exception using errcode = '22023', detail = 'invalid_request', message = 'replace needs file_id';
        end if;
        select * into d from baas.documents t where t.id = v_id and t.blob_id is not null and t.collection_id = c.id;
        if not found then
            raise exception using errcode = 'P0002', detail = 'file_not_found', message = format('file %s not found', v_id);
        end if;
        if expected_version is not null and d.version <> expected_version then
            perform baas._version_conflict(d.version, expected_version);
        end if;
        -- FOR UPDATE passes the update policy too: a row the caller may read but not
        -- update is filtered out here.
        perform from baas.documents t where t.collection_id = c.id and t.id = v_id for no key update;
        if not found then
            raise exception using errcode = '42501', detail = 'forbidden',
                message = 'you may read this file but not overwrite it';
        end if;
        if acl is not null and not baas._may_manage(d.owner, current_user) then
            raise exception using errcode = '42501', detail = 'forbidden', message = 'only the owner may change this file''s ACL';
        end if;
        v_old := (d.file ->> 'size')::bigint;
    else
        if not baas._may_create(c.create_acl) then
            raise exception using errcode = '42501', detail = 'forbidden',
                message = format('you may not create files in %s', c.name);
        end if;
        if v_id is null then
            v_id := baas.uuid7();
        elsif exists (select from baas.documents t where t.id = v_id and t.collection_id = c.id) then
            raise exception using errcode = '23505', detail = 'document_exists',
                message = format('a file with id %s already exists in %s', v_id, c.name);
        end if;
    end if;
    if acl is not null then
        a := baas._normalize_acl(acl);
        perform baas._check_new_principals(a, case when replace then d.acl_read || d.acl_update || d.acl_delete else '{}' end);
    end if;
    -- The quota (the file owner's for a replace) and the session cap are checked by
    -- _upload_insert.
    return baas._upload_insert(c.id, v_id, coalesce(replace, false), expected_version, length, v_name, v_type,
                               data, a, sha256, coalesce(oneshot, false));
end
$$;

create function baas.upload_create(collection text, name text, content_type text, length bigint,
                                   data jsonb default '{}', acl jsonb default null, file_id uuid default null,
                                   expected_version bigint default null, replace boolean default false,
                                   sha256 bytea default null)
returns jsonb
language plpgsql volatile
as $$
declare
    u baas._uploads := baas._upload_open(collection, name, content_type, length, data, acl, file_id, expected_version,
                                         replace, sha256, false);
begin
    return jsonb_build_object('upload_id', u.id, 'file_id', u.file_id, 'offset', u."offset", 'length', u.length,
                              'expires_at', u.expires_at);
end
$$;
comment on function baas.upload_create(text, text, text, bigint, jsonb, jsonb, uuid, bigint, boolean, bytea) is
    'Start an upload into a bucket (or, with replace, of a new version of file_id); returns {upload_id, file_id, offset, length, expires_at}';

-- Append `data` at byte `at` (= the session's offset). Returns the new offset.
create function baas._upload_append(upload_id uuid, lease uuid, at bigint, data bytea) returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    u baas._uploads := baas._upload_get(upload_id);
    v_max bigint;
    v_len bigint := coalesce(pg_catalog.length(data), 0);
    i bigint := 0;
    n bigint;
    v_payer uuid;
    v_old bigint := 0;
begin
    if u.lease is not null and u.lease_until > now() and u.lease is distinct from _upload_append.lease then
        raise exception using errcode = '40001', detail = 'upload_locked',
            message = 'another request is writing this upload';
    end if;
    if at is distinct from u."offset" then
        raise exception using errcode = '22023', detail = 'offset_mismatch', hint = u."offset"::text,
            message = format('this upload is at offset %s, not %s', u."offset", at);
    end if;
    if v_len = 0 then
        raise exception using errcode = '22023', detail = 'invalid_request', message = 'nothing to append';
    end if;
    if u.length is not null and at + v_len > u.length then
        raise exception using errcode = '54000', detail = 'file_too_large',
            message = format('the upload is %s bytes long; %s bytes at %s go past its end', u.length, v_len, at);
    end if;
    select coalesce(c.file_max_bytes, baas._file_max_bytes()) into v_max from baas.collections c where c.id = u.collection_id;
    if at + v_len > v_max then
        perform baas._raise_too_large(at + v_len, v_max);
    end if;
    -- An upload of unknown length reserved nothing at create: its bytes count as they
    -- come, with the payer's files and other open sessions.
    if u.length is null then
        select p.payer, p.old into v_payer, v_old from baas._upload_payer(u) p;
        perform baas._quota_check(v_payer, at + v_len, v_old, u.id);
    end if;
    -- Chunks stay aligned, whatever the PATCH sizes: every chunk but the last starts at a
    -- multiple of 1 MiB and holds 1 MiB, so a download reads one chunk per MiB
    -- (baas.file_read) and tiny PATCHes cannot leave a file that costs a round trip per
    -- few bytes to read. An append at an unaligned offset first tops up the last chunk
    -- to the next MiB (at most 1 MiB rewritten per append); a session written before
    -- 0.7.0 may end in an unaligned chunk: then the top-up is a chunk of its own.
    if at % 1048576 <> 0 then
        n := least(1048576 - at % 1048576, v_len);
        update baas._file_chunks k set data = k.data || substring(_upload_append.data from 1 for n::int)
         where k.blob_id = u.blob_id and k.off = at - at % 1048576 and k.off + pg_catalog.length(k.data) = at;
        if not found then
            insert into baas._file_chunks (blob_id, off, data)
            values (u.blob_id, at, substring(_upload_append.data from 1 for n::int));
        end if;
        i := n;
    end if;
    -- Then pieces of at most 1 MiB (what a chunk holds), from a MiB boundary.
    while i < v_len loop
        n := least(1048576, v_len - i);
        insert into baas._file_chunks (blob_id, off, data)
        values (u.blob_id, at + i, substring(data from (i + 1)::int for n::int));
        i := i + n;
    end loop;
    update baas._uploads x set "offset" = at + v_len, hash_state = baas._sha256_update(x.hash_state, _upload_append.data),
           lease_until = case when x.lease is not null and x.lease = _upload_append.lease
                              then greatest(x.lease_until, now() + interval '60 seconds') else x.lease_until end
     where x.id = u.id;
    return at + v_len;
end
$$;

-- Take (or renew) the write lease for 60 seconds. With `checkpoint`, remember the
-- offset and hash state, so that a failed checksummed PATCH can be rewound. A lapsed
-- lease that left a checkpoint is rewound first (its PATCH never ended).
create function baas._upload_lease(upload_id uuid, lease uuid, checkpoint boolean) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    u baas._uploads := baas._upload_get(upload_id);
begin
    if lease is null then
        raise exception using errcode = '22023', detail = 'invalid_request', message = 'lease must not be null';
    end if;
    if u.lease is not null and u.lease_until > now() and u.lease <> _upload_lease.lease then
        raise exception using errcode = '40001', detail = 'upload_locked',
            message = 'another request is writing this upload';
    end if;
    if u.patch_from is not null and u.lease is distinct from _upload_lease.lease then
        delete from baas._file_chunks k where k.blob_id = u.blob_id and k.off >= u.patch_from;
        -- A chunk the PATCH topped up (aligned chunks, _upload_append) keeps what it held.
        update baas._file_chunks k set data = substring(k.data from 1 for (u.patch_from - k.off)::int)
         where k.blob_id = u.blob_id and k.off < u.patch_from and k.off + pg_catalog.length(k.data) > u.patch_from;
        u."offset" := u.patch_from;
        u.hash_state := u.patch_state;
    end if;
    update baas._uploads x set lease = _upload_lease.lease, lease_until = now() + interval '60 seconds',
           "offset" = u."offset", hash_state = u.hash_state,
           patch_from = case when checkpoint then u."offset" end,
           patch_state = case when checkpoint then u.hash_state end
     where x.id = u.id;
    return jsonb_build_object('offset', u."offset", 'length', u.length, 'expires_at', u.expires_at);
end
$$;

-- Undo the appends of the checksummed PATCH holding `lease` (bytes from its
-- checkpoint on), and release the lease. Returns the offset.
create function baas._upload_rewind(upload_id uuid, lease uuid) returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    u baas._uploads := baas._upload_get(upload_id);
begin
    if u.lease is distinct from _upload_rewind.lease and u.lease_until > now() then
        raise exception using errcode = '40001', detail = 'upload_locked',
            message = 'another request is writing this upload';
    end if;
    if u.patch_from is not null then
        delete from baas._file_chunks k where k.blob_id = u.blob_id and k.off >= u.patch_from;
        -- A chunk the PATCH topped up (aligned chunks, _upload_append) keeps what it held.
        update baas._file_chunks k set data = substring(k.data from 1 for (u.patch_from - k.off)::int)
         where k.blob_id = u.blob_id and k.off < u.patch_from and k.off + pg_catalog.length(k.data) > u.patch_from;
        u."offset" := u.patch_from;
        u.hash_state := u.patch_state;
    end if;
    update baas._uploads x set "offset" = u."offset", hash_state = u.hash_state, patch_from = null,
           patch_state = null, lease = null, lease_until = null
     where x.id = u.id;
    return u."offset";
end
$$;

-- Release the lease after a PATCH that ended well (its checkpoint is dropped).
create function baas._upload_release(upload_id uuid, lease uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    update baas._uploads x set lease = null, lease_until = null, patch_from = null, patch_state = null
     where x.id = upload_id and x.lease = _upload_release.lease
       and (x.owner is not distinct from baas.uid() or baas._is_privileged(baas._caller_role()));
end
$$;

create function baas.upload_status(upload_id uuid) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    u baas._uploads;
    r jsonb;
begin
    select * into u from baas._uploads x where x.id = upload_id;
    if not found then
        -- Finished (within the last day): every byte is in, the file exists.
        select jsonb_build_object('offset', f.length, 'length', f.length, 'file_id', f.file_id, 'finished', true) into r
          from baas._uploads_finished f
         where f.id = upload_id and f.finished_at > now() - interval '1 day'
           and (f.owner is not distinct from baas.uid() or baas._is_privileged(baas._caller_role()));
        if r is not null then
            return r;
        end if;
        raise exception using errcode = 'P0002', detail = 'upload_not_found', message = 'upload not found';
    end if;
    if u.finishing or (u.owner is distinct from baas.uid() and not baas._is_privileged(baas._caller_role())) then
        raise exception using errcode = 'P0002', detail = 'upload_not_found', message = 'upload not found';
    end if;
    if u.expires_at <= now() then
        raise exception using errcode = 'P0002', detail = 'upload_expired',
            message = format('this upload expired at %s', u.expires_at);
    end if;
    return jsonb_build_object('offset', u."offset", 'length', u.length, 'expires_at', u.expires_at,
        'file_id', u.file_id,
        'metadata', jsonb_build_object('collection', (select c.name from baas.collections c where c.id = u.collection_id),
            'name', u.name, 'content_type', u.content_type, 'data', u.data, 'acl', u.acl,
            'replace', u.replace, 'expected_version', u.expected_version,
            'sha256', encode(u.sha256_expected, 'hex')));
end
$$;
comment on function baas.upload_status(uuid) is 'An upload of the caller: unfinished {offset, length, expires_at, file_id, metadata}, or finished within a day {offset, length, file_id, finished: true}';

-- The blob side of upload_finish, as the extension's owner: length, digest, type
-- rule, the bucket's list and size cap, the quota (serialised per owner), then the
-- blob's size/sha256/type. Marks the session finishing, which is what lets the guard
-- attach its blob to the caller's document. Returns the session.
create function baas._upload_seal(upload_id uuid) returns baas._uploads
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    u baas._uploads := baas._upload_get(upload_id);
    c baas.collections;
    v_digest bytea;
    v_head bytea;
    v_type text;
    v_old bigint := 0;
    v_payer uuid;
begin
    select * into c from baas.collections x where x.id = u.collection_id;
    if u.length is not null and u."offset" <> u.length then
        raise exception using errcode = '22023', detail = 'length_mismatch',
            message = format('the upload has %s of its %s bytes', u."offset", u.length);
    end if;
    v_digest := baas._sha256_final(u.hash_state);
    if u.sha256_expected is not null and u.sha256_expected <> v_digest then
        raise exception using errcode = '22023', detail = 'digest_mismatch',
            message = format('the bytes received have sha256 %s, not the %s announced',
                             encode(v_digest, 'hex'), encode(u.sha256_expected, 'hex'));
    end if;
    select coalesce(string_agg(substring(k.data from 1 for 8192), ''::bytea order by k.off), ''::bytea) into v_head
      from baas._file_chunks k where k.blob_id = u.blob_id and k.off < 8192;
    v_type := baas._file_type(u.content_type, substring(v_head from 1 for 8192));
    if v_type is null then
        raise exception using errcode = '22023', detail = 'content_type_mismatch',
            message = format('the bytes are %s, not %s', coalesce(baas._sniff_type(v_head), 'of another type'), u.content_type);
    end if;
    if not baas._file_type_allowed(v_type, c.file_types) then
        raise exception using errcode = '22023', detail = 'unsupported_file_type',
            message = format('bucket %s does not take %s files', c.name, v_type);
    end if;
    if u."offset" > coalesce(c.file_max_bytes, baas._file_max_bytes()) then
        perform baas._raise_too_large(u."offset", coalesce(c.file_max_bytes, baas._file_max_bytes()));
    end if;
    select p.payer, p.old into v_payer, v_old from baas._upload_payer(u) p;
    perform baas._quota_check(v_payer, u."offset", v_old, u.id);
    update baas._blobs b set size = u."offset", sha256 = v_digest, content_type = v_type where b.id = u.blob_id;
    -- lease_until = this transaction's start: _may_attach_blob lets the blob be
    -- attached in this transaction only (upload_finish's), never by a later one.
    update baas._uploads x set finishing = true, lease = null, lease_until = now() where x.id = u.id returning * into u;
    return u;
end
$$;

-- Remove a finished session (its blob now belongs to the document); remember it in
-- baas._uploads_finished unless it was a one-shot session.
create function baas._upload_done(upload_id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    with done as (
        delete from baas._uploads x where x.id = upload_id and x.finishing
           and (x.owner is not distinct from baas.uid() or baas._is_privileged(baas._caller_role()))
        returning x.*)
    insert into baas._uploads_finished (id, owner, file_id, length)
    select d.id, d.owner, d.file_id, d."offset" from done d where d.expires_at > d.created_at;
end
$$;

create function baas.upload_finish(upload_id uuid) returns jsonb
language plpgsql volatile
as $$
declare
    u baas._uploads := baas._upload_seal(upload_id);
    c baas.collections;
    d baas.documents;
    a jsonb;
begin
    select * into c from baas.collections x where x.id = u.collection_id;
    if not u.replace then
        if not baas._may_create(c.create_acl) then
            raise exception using errcode = '42501', detail = 'forbidden',
                message = format('you may not create files in %s', c.name);
        end if;
        a := coalesce(u.acl, jsonb_build_object('read', to_jsonb(c.default_read), 'update', to_jsonb(c.default_update),
                                                'delete', to_jsonb(c.default_delete)));
        d.collection_id := c.id;
        d.id := u.file_id;
        d.owner := u.owner;
        d.data := u.data;
        d.acl_read := array(select jsonb_array_elements_text(a -> 'read'));
        d.acl_update := array(select jsonb_array_elements_text(a -> 'update'));
        d.acl_delete := array(select jsonb_array_elements_text(a -> 'delete'));
        d.blob_id := u.blob_id;
        -- As the caller: documents_create decides, the guard attaches the blob.
        insert into baas.documents (collection_id, id, owner, data, acl_read, acl_update, acl_delete, blob_id, file)
        values (d.collection_id, d.id, d.owner, d.data, d.acl_read, d.acl_update, d.acl_delete, d.blob_id,
                jsonb_build_object('name', u.name))
        on conflict do nothing;
        if not found then
            raise exception using errcode = '23505', detail = 'document_exists',
                message = format('a file with id %s already exists', u.file_id);
        end if;
        d.version := 1;
        d.created_at := now();
        d.updated_at := d.created_at;
        d.file := baas._blob_file_json(u.blob_id, u.name);
    else
        a := u.acl;
        update baas.documents t set blob_id = u.blob_id, file = jsonb_build_object('name', u.name),
               data = case when u.data = '{}' then t.data else u.data end,
               acl_read = case when a is null then t.acl_read else array(select jsonb_array_elements_text(a -> 'read')) end,
               acl_update = case when a is null then t.acl_update else array(select jsonb_array_elements_text(a -> 'update')) end,
               acl_delete = case when a is null then t.acl_delete else array(select jsonb_array_elements_text(a -> 'delete')) end
         where t.collection_id = c.id and t.id = u.file_id and t.blob_id is not null
           and (u.expected_version is null or t.version = u.expected_version)
        returning * into d;
        if not found then
            perform baas._explain_file_miss(u.file_id, u.expected_version, 'overwrite');
        end if;
    end if;
    perform baas._upload_done(u.id);
    return baas._file_json(d, c.name);
end
$$;
comment on function baas.upload_finish(uuid) is
    'Finish an upload: check length, sha256, type and size, then create (or replace) the file as the caller';

-- Drop an upload and everything it stored.
create function baas.upload_abort(upload_id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    delete from baas._uploads x where x.id = upload_id and not x.finishing
       and (x.owner is not distinct from baas.uid() or baas._is_privileged(baas._caller_role()));
    if not found then
        raise exception using errcode = 'P0002', detail = 'upload_not_found', message = 'upload not found';
    end if;
end
$$;
comment on function baas.upload_abort(uuid) is 'Abandon an upload: its session and bytes are removed';

-- A session's blob goes with it unless a document holds it (abort, expiry, the
-- collection or the owner dropped): to baas._blob_trash, in O(1) whatever the upload's
-- size, as a deleted file's (baas.cleanup_blobs deletes the bytes in batches).
create function baas._uploads_drop_blob() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    insert into baas._blob_trash (blob_id)
    select old.blob_id where not exists (select from baas.documents d where d.blob_id = old.blob_id)
    on conflict do nothing;
    return null;
end
$$;
create trigger uploads_drop_blob after delete on baas._uploads
    for each row execute function baas._uploads_drop_blob();

-- The whole upload in one call (bodies with a known length, up to a few MiB).
create function baas.upload_file(collection text, name text, content_type text, bytes bytea,
                                 data jsonb default '{}', acl jsonb default null, file_id uuid default null,
                                 expected_version bigint default null, replace boolean default false)
returns jsonb
language plpgsql volatile
as $$
declare
    u baas._uploads;
begin
    if bytes is null then
        raise exception using errcode = '22023', detail = 'invalid_request', message = 'bytes must not be null';
    end if;
    -- A one-shot session: it ends in this transaction, so it does not count against
    -- the caller's open-session cap (nor can a cap full of others' sessions refuse it).
    u := baas._upload_open(collection, name, content_type, pg_catalog.length(bytes), data, acl, file_id,
                           expected_version, replace, null, true);
    if pg_catalog.length(bytes) > 0 then
        perform baas._upload_append(u.id, null, 0, bytes);
    end if;
    return baas.upload_finish(u.id);
end
$$;
comment on function baas.upload_file(text, text, text, bytea, jsonb, jsonb, uuid, bigint, boolean) is
    'Upload a whole file in one call; returns the file';

-- Expired sessions, oldest first, at most `max`; safe to run from several proxies.
-- Also sessions left `finishing`: a finish seals and removes its session in one
-- transaction (holding the row lock, so SKIP LOCKED passes it by), so a committed
-- finishing session is an orphan (a direct _upload_seal call) and its bytes go.
create function baas.cleanup_uploads(max integer default 100) returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    n integer;
begin
    with gone as (
        delete from baas._uploads x where x.id in (
            select y.id from baas._uploads y where y.expires_at <= now() or y.finishing
             order by y.finishing desc, y.expires_at limit greatest(coalesce(max, 100), 0) for update skip locked)
        returning 1)
    select count(*) into n from gone;
    delete from baas._uploads_finished f where f.id in (
        select g.id from baas._uploads_finished g where g.finished_at <= now() - interval '1 day'
         order by g.finished_at limit greatest(coalesce(max, 100), 0) for update skip locked);
    return n;
end
$$;
comment on function baas.cleanup_uploads(integer) is 'Remove up to max expired uploads and their bytes; returns how many';

-- Delete the bytes of blobs in baas._blob_trash: at most `max` chunk rows per call (one
-- short transaction each, whatever the files' sizes), oldest first, a blob's row (and
-- its thumbnails) once its last chunk is gone. Returns the rows removed (chunks and
-- blobs): call again while it returns `max`. Safe to run from several proxies (SKIP
-- LOCKED); the proxy's cleanup service runs it after cleanup_uploads.
create function baas.cleanup_blobs(max integer default 64) returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_left integer := greatest(coalesce(max, 64), 0);
    v_blob uuid;
    n integer;
begin
    for v_blob in select t.blob_id from baas._blob_trash t order by t.since, t.blob_id
                   limit greatest(coalesce(max, 64), 0) for update skip locked loop
        exit when v_left = 0;
        -- Locked, so that no document or session can take the blob while its bytes go;
        -- one that holds it again (a DBA restored a deleted row) takes it out of the
        -- trash instead.
        perform from baas._blobs b where b.id = v_blob for update;
        if exists (select from baas.documents d where d.blob_id = v_blob)
           or exists (select from baas._uploads u where u.blob_id = v_blob) then
            delete from baas._blob_trash t where t.blob_id = v_blob;
            continue;
        end if;
        delete from baas._file_chunks k
         where k.blob_id = v_blob
           and k.off in (select x.off from baas._file_chunks x where x.blob_id = v_blob order by x.off limit v_left);
        get diagnostics n = row_count;
        v_left := v_left - n;
        exit when v_left = 0;
        -- Its chunks are all gone: the blob, its thumbnails and its trash row.
        delete from baas._blobs b where b.id = v_blob;
        v_left := v_left - 1;
    end loop;
    return greatest(coalesce(max, 64), 0) - v_left;
end
$$;
comment on function baas.cleanup_blobs(integer) is
    'Delete up to max chunk rows of deleted files'' bytes (and the blobs emptied); returns the rows removed';

------------------------------------------------------------------------ the guard
-- May the caller attach blob `blob_id` to document (collection_id, id)? Only the
-- finishing session of that blob, targeting that document, owned by the caller (or
-- the caller is privileged). So a blob_id cannot be forged or reused.
create function baas._may_attach_blob(blob_id uuid, collection_id integer, id uuid) returns boolean
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    return exists (select from baas._uploads u
                    where u.blob_id = _may_attach_blob.blob_id and u.finishing and u.lease_until = now()
                      and u.collection_id = _may_attach_blob.collection_id and u.file_id = _may_attach_blob.id
                      and (u.owner is not distinct from baas.uid() or baas._is_privileged(baas._caller_role())));
end
$$;

-- A document's `file`: the blob's size, type and sha256, with the name checked.
create function baas._blob_file_json(blob_id uuid, name text) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    b baas._blobs;
begin
    select * into strict b from baas._blobs x where x.id = blob_id;
    return jsonb_build_object('name', baas._check_file_name(coalesce(name, '')), 'size', b.size,
                              'content_type', b.content_type, 'sha256', encode(b.sha256, 'hex'));
end
$$;

-- After a file's blob is replaced, or its document deleted: the old blob goes to
-- baas._blob_trash, in O(1) whatever the file's size. Its chunks and thumbnails are
-- unreadable at once (no document holds the blob), its bytes leave the owner's quota at
-- once, and baas.cleanup_blobs deletes them in batches afterwards.
create function baas._documents_files() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    insert into baas._blob_trash (blob_id) values (old.blob_id) on conflict do nothing;
    return null;
end
$$;
create trigger documents_files_delete after delete on baas.documents
    for each row when (old.blob_id is not null) execute function baas._documents_files();
create trigger documents_files_update after update of blob_id on baas.documents
    for each row when (old.blob_id is not null and new.blob_id is distinct from old.blob_id)
    execute function baas._documents_files();

-- Before a file is deleted: refused (23503 file_referenced) while a document of a
-- `file_refs = restrict` collection with the file's owner, or with no owner (a service
-- document), references it. References from other users never block (anyone who can
-- read a file could pin it otherwise).
-- Deletes cascading from a dropped collection or account are not stopped.
create function baas._file_delete_check() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if pg_trigger_depth() > 1 or baas._restoring() then
        return old;
    end if;
    -- The message names neither the document nor its collection: the deleter may be
    -- unable to read them.
    if exists (select from baas._file_refs f
                 join baas.documents rd on rd.collection_id = f.collection_id and rd.id = f.document_id
                 join baas.collections rc on rc.id = f.collection_id
                where f.file_id = old.id and rc.file_refs = 'restrict' and (rd.owner is null or rd.owner = old.owner)
                  and (f.collection_id, f.document_id) <> (old.collection_id, old.id)) then
        raise exception using errcode = '23503', detail = 'file_referenced',
            message = format('file %s is referenced by a document of a collection whose references keep files (file_refs "restrict"); remove the reference first', old.id);
    end if;
    return old;
end
$$;
create trigger documents_file_delete_check before delete on baas.documents
    for each row when (old.blob_id is not null) execute function baas._file_delete_check();

-- References {"$file": "<id>"} anywhere in a document's data, kept in baas._file_refs.
-- Dangling references are allowed (the file need not exist or be readable).
create function baas._file_refs_sync() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v jsonb;
    v_ids uuid[] := '{}';
    v_id uuid;
begin
    -- A restore loads the references with the documents (sql/dump.sql).
    if baas._restoring() then
        return null;
    end if;
    if tg_op = 'UPDATE' then
        delete from baas._file_refs f where f.collection_id = old.collection_id and f.document_id = old.id;
    end if;
    for v in select x from jsonb_path_query(new.data, 'strict $.**."$file"') x loop
        v_id := case when jsonb_typeof(v) = 'string' then baas._parse_document_id(v #>> '{}') end;
        if v_id is null then
            raise exception using errcode = '22023', detail = 'invalid_file_ref',
                message = format('a "$file" reference must be a file id (a UUID string), not %s', left(v::text, 100));
        end if;
        v_ids := v_ids || v_id;
    end loop;
    insert into baas._file_refs (collection_id, document_id, file_id)
    select new.collection_id, new.id, x from unnest(v_ids) x on conflict do nothing;
    return null;
end
$$;
-- Only documents that mention "$file" (or did) pay for more than the WHEN test.
create trigger documents_file_refs_insert after insert on baas.documents
    for each row when (new.data::text like '%"$file":%') execute function baas._file_refs_sync();
create trigger documents_file_refs_update after update of data on baas.documents
    for each row when (new.data is distinct from old.data
                       and (new.data::text like '%"$file":%' or old.data::text like '%"$file":%'))
    execute function baas._file_refs_sync();

------------------------------------------------------------------------ reading
-- A file's metadata and its bytes [at, at+max) in one round trip: (meta: the file
-- JSON without `data`, as text, blob_id: to pin later pieces to this version, data).
-- As the caller. `data` is left out so that the first row stays within the proxy's
-- per-call result bound whatever a file's data holds (file_meta has it all).
create function baas.file_get(id uuid, version bigint default null, at bigint default 0, max integer default 1048576)
returns table (meta text, blob_id uuid, data bytea)
language plpgsql stable
as $$
declare
    r record := baas._file_row(id, version);
begin
    return query select (baas._file_json(r.d, r.collection) - 'data')::text, (r.d).blob_id,
                        baas._blob_piece((r.d).blob_id, coalesce(file_get.at, 0), coalesce(file_get.max, 1048576));
end
$$;
comment on function baas.file_get(uuid, bigint, bigint, integer) is
    'A file the caller may read: its metadata (JSON text, without data), blob id and bytes [at, at+max)';

-- Bytes [at, at+max) of a blob, from the chunks the caller may read (as the caller).
create function baas._blob_piece(p_blob uuid, p_at bigint, p_max integer) returns bytea
language sql stable
as $$
    select coalesce(string_agg(
               substring(k.data from (greatest(p_at, k.off) - k.off + 1)::int
                         for (least(p_at + p_max, k.off + pg_catalog.length(k.data)) - greatest(p_at, k.off))::int),
               ''::bytea order by k.off), ''::bytea)
      from baas._file_chunks k
     where k.blob_id = p_blob and k.off < p_at + p_max and k.off > p_at - 1048576
       and k.off + pg_catalog.length(k.data) > p_at and p_max > 0 and p_at >= 0
$$;

-- A piece of a blob the caller may read, as read(2) gives one: at most `max` bytes from
-- `at`, and no further than the end of the chunk that holds `at` (a reader loops). No
-- row when the blob is gone or unreadable (a new version, a delete, a revoked grant:
-- the download ends) or `at` is at or past its end. One plain SQL statement, inlined
-- into the caller's query (no PL/pgSQL, no tuplestore, no string_agg): a whole chunk is
-- returned as stored, a part of one through substring(), which reads only the TOAST
-- pieces it needs (docs/benchmarks.md "Files" has the figures).
create function baas.file_read(blob_id uuid, at bigint, max integer) returns table (data bytea)
language sql stable
as $$
    select case when k.off = file_read.at and pg_catalog.length(k.data) <= file_read.max then k.data
                else substring(k.data from (file_read.at - k.off + 1)::integer
                               for least(file_read.max::bigint, k.off + pg_catalog.length(k.data) - file_read.at)::integer) end
      from baas._file_chunks k
     where k.blob_id = file_read.blob_id and k.off <= file_read.at and k.off > file_read.at - 1048576
       and k.off + pg_catalog.length(k.data) > file_read.at and file_read.max > 0
       -- A blob a document holds and the caller may read (the policies decide): not one
       -- waiting in baas._blob_trash, even for the service role.
       and exists (select from baas.documents d where d.blob_id = file_read.blob_id)
$$;
comment on function baas.file_read(uuid, bigint, integer) is
    'At most max bytes of a blob the caller may read, from at to no further than the end of the chunk holding at; no row when it is gone, unreadable or at is past its end';

create function baas.file_meta(id uuid) returns jsonb
language plpgsql stable
as $$
declare
    r record := baas._file_row(id);
begin
    return baas._file_json(r.d, r.collection);
end
$$;
comment on function baas.file_meta(uuid) is 'A file''s metadata';

------------------------------------------------------------------------ changing
create function baas.update_file(id uuid, name text default null, data jsonb default null, version bigint default null)
returns jsonb
language plpgsql volatile
as $$
declare
    r record := baas._file_row(id);
    d baas.documents;
begin
    if data is not null and jsonb_typeof(data) <> 'object' then
        raise exception using errcode = '22023', detail = 'invalid_data', message = 'data must be a JSON object';
    end if;
    update baas.documents t
       set file = case when update_file.name is null then t.file
                       else jsonb_set(t.file, '{name}', to_jsonb(baas._check_file_name(update_file.name))) end,
           data = coalesce(update_file.data, t.data)
     where t.collection_id = (r.d).collection_id and t.id = update_file.id and t.blob_id is not null
       and (update_file.version is null or t.version = update_file.version)
    returning * into d;
    if not found then
        perform baas._explain_file_miss(update_file.id, update_file.version, 'update');
    end if;
    return baas._file_json(d, r.collection);
end
$$;
comment on function baas.update_file(uuid, text, jsonb, bigint) is 'Rename a file and/or replace its data; with version, 40001 version_conflict when stale';

create function baas.delete_file(id uuid, version bigint default null) returns void
language plpgsql volatile
as $$
declare
    r record := baas._file_row(id);
begin
    delete from baas.documents t
     where t.collection_id = (r.d).collection_id and t.id = delete_file.id and t.blob_id is not null
       and (delete_file.version is null or t.version = delete_file.version);
    if not found then
        perform baas._explain_file_miss(delete_file.id, delete_file.version, 'delete');
    end if;
end
$$;
comment on function baas.delete_file(uuid, bigint) is 'Delete a file and its bytes';

create function baas.set_file_acl(id uuid, acl jsonb, version bigint default null) returns jsonb
language plpgsql volatile
as $$
declare
    r record := baas._file_row(id);
begin
    return baas.set_acl(r.collection, id::text, acl, version);
end
$$;
comment on function baas.set_file_acl(uuid, jsonb, bigint) is 'Replace a file''s ACL (owner or service only), as baas.set_acl';

create function baas.get_file_acl(id uuid) returns jsonb
language plpgsql stable
as $$
declare
    r record := baas._file_row(id);
begin
    return baas.get_acl(r.collection, id::text);
end
$$;
comment on function baas.get_file_acl(uuid) is 'A file''s ACL (owner or service only), as baas.get_acl';

------------------------------------------------------------------------ links
-- Sign a download link's token with the active key: audience `<audience>:file`, bound
-- to the caller's session, the file and its version. API roles can call it directly,
-- so it makes file_link's checks itself (signed in; the file, at that version, one the
-- caller may read: as documents_read decides, through baas._acl_allows). The link
-- carries the caller's is_anonymous claim, so that it reads with the caller's principals.
create function baas._file_link_sign(fid uuid, ver bigint, ttl integer) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    s baas.settings;
    k record;
    d record;
    v_claims jsonb := baas.claims();
    v_now bigint := extract(epoch from now())::bigint;
    v_token text;
begin
    if ttl is null or ttl not between 1 and 300 then
        raise exception using errcode = '22023', detail = 'invalid_request', message = 'ttl must be 1 to 300 seconds';
    end if;
    if baas.uid() is null and coalesce(v_claims ->> 'role', '') <> 'baas_service' then
        raise exception using errcode = '42501', detail = 'not_authenticated', message = 'sign in to make a link';
    end if;
    select t.owner, t.acl_read, t.version into d from baas.documents t where t.id = fid and t.blob_id is not null;
    if not found or d.version is distinct from ver
       or not (baas._is_privileged(baas._caller_role()) or baas._acl_allows(d.owner, d.acl_read)) then
        raise exception using errcode = 'P0002', detail = 'file_not_found', message = format('file %s not found', fid);
    end if;
    select * into strict s from baas.settings;
    select x.kid, x.secret into k from baas._signing_keys x where x.retired_at is null order by x.created_at desc limit 1;
    if not found then
        raise exception using errcode = '55000', detail = 'no_signing_key',
            message = 'pgbaas has no active signing key; run select baas.rotate_signing_key()';
    end if;
    v_token := baas._sign_jwt(k.kid, k.secret, jsonb_build_object(
        'iss', s.issuer, 'aud', s.audience || ':file', 'sub', v_claims -> 'sub', 'role', v_claims -> 'role',
        'sid', v_claims -> 'sid', 'is_anonymous', v_claims -> 'is_anonymous',
        'fid', fid, 'ver', ver, 'iat', v_now, 'exp', v_now + ttl)
        -- the session's assurance level, when its token has one (require_aal2 buckets)
        || jsonb_strip_nulls(jsonb_build_object('aal', v_claims -> 'aal')));
    return jsonb_build_object('url', format('/v1/files/%s?sig=%s', fid, v_token), 'token', v_token,
                              'expires_at', to_timestamp(v_now + ttl));
end
$$;

create function baas.file_link(id uuid, ttl integer default 300) returns jsonb
language plpgsql volatile
as $$
declare
    r record;
begin
    if ttl is null or ttl < 1 or ttl > 300 then
        raise exception using errcode = '22023', detail = 'invalid_request', message = 'ttl must be 1 to 300 seconds';
    end if;
    if baas.uid() is null and coalesce(baas.claims() ->> 'role', '') <> 'baas_service' then
        raise exception using errcode = '42501', detail = 'not_authenticated', message = 'sign in to make a link';
    end if;
    r := baas._file_row(id);
    return baas._file_link_sign(id, (r.d).version, ttl);
end
$$;
comment on function baas.file_link(uuid, integer) is
    'A signed download link for a file (at most 300 s), bound to the caller, the file and its version';

------------------------------------------------------------------------ thumbnails
-- A cached thumbnail of a readable file: (meta: the file JSON with `thumbnail`
-- {content_type, width, height, fit}, data); no row when none is cached.
create function baas.thumbnail_get(id uuid, width int, height int, fit text)
returns table (meta text, data bytea)
language plpgsql stable
as $$
declare
    r record := baas._file_row(id);
begin
    return query
        select (baas._file_json(r.d, r.collection) || jsonb_build_object('thumbnail', jsonb_build_object(
                    'content_type', t.content_type, 'width', t.width, 'height', t.height, 'fit', t.fit)))::text,
               t.data
          from baas._thumbnails t
         where t.source_blob = (r.d).blob_id and t.width = thumbnail_get.width and t.height = thumbnail_get.height
           and t.fit = thumbnail_get.fit;
end
$$;
comment on function baas.thumbnail_get(uuid, integer, integer, text) is 'A cached thumbnail of a file the caller may read (no row: not cached)';

-- Store a thumbnail the proxy made (proxy/src/files/thumb_hook.rs). Every reader of
-- the file is served what is stored here, so only the proxy's own output may be: this
-- is granted to the proxy's login role alone, which calls it (as itself, no role
-- switch) after reading the source as the caller under the files' RLS; no API role
-- can store a thumbnail. Only JPEG or PNG whose bytes are what the type says (the
-- extension's sniffer), and only of a file's blob, never of an unfinished upload.
create function baas.thumbnail_put(blob_id uuid, width int, height int, fit text, content_type text, data bytea)
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if width is null or height is null or width not between 1 and 1024 or height not between 1 and 1024
       or fit is null or fit not in ('contain', 'cover') or content_type is null or data is null then
        raise exception using errcode = '22023', detail = 'invalid_request',
            message = 'a thumbnail is 1-1024 x 1-1024, fit contain or cover, with a type and bytes';
    end if;
    if content_type not in ('image/jpeg', 'image/png')
       or baas._sniff_type(substring(data from 1 for 64)) is distinct from content_type then
        raise exception using errcode = '22023', detail = 'invalid_request',
            message = 'a thumbnail is image/jpeg or image/png, and its bytes must be of that type';
    end if;
    if not exists (select from baas.documents d where d.blob_id = thumbnail_put.blob_id) then
        raise exception using errcode = 'P0002', detail = 'file_not_found', message = 'file not found';
    end if;
    insert into baas._thumbnails (source_blob, width, height, fit, content_type, data)
    values (thumbnail_put.blob_id, width, height, fit, content_type, data)
    on conflict do nothing;
end
$$;
comment on function baas.thumbnail_put(uuid, integer, integer, text, text, bytea) is
    'The proxy''s login role only: cache a thumbnail it made of a file''s blob';

------------------------------------------------------------------------ DBAs
-- Files as rows, under the caller's policies: `select * from baas.files` and
-- baas.as_user(u, 'select * from baas.files') show what HTTP shows.
create view baas.files with (security_invoker = true) as
    select d.id, c.name as collection, d.file ->> 'name' as name, (d.file ->> 'size')::bigint as size,
           d.file ->> 'content_type' as content_type, d.file ->> 'sha256' as sha256, d.owner,
           jsonb_build_object('read', to_jsonb(d.acl_read), 'update', to_jsonb(d.acl_update),
                              'delete', to_jsonb(d.acl_delete)) as acl,
           d.version, d.created_at, d.updated_at, d.data
      from baas.documents d join baas.collections c on c.id = d.collection_id
     where d.blob_id is not null;
revoke all on baas.files from public;
grant select on baas.files to baas_anon, baas_user, baas_service;
comment on view baas.files is 'Files the caller may read (security_invoker: row-level security of documents applies)';

create function baas.unreferenced_files() returns setof baas.files
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select f.* from baas.files f
     where not exists (select from baas._file_refs r where r.file_id = f.id)
     order by f.created_at, f.id
$$;
comment on function baas.unreferenced_files() is 'DBAs and service: files no document references with {"$file": id}';

create function baas.file_usage() returns table (user_id uuid, files bigint, bytes bigint, quota bigint)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select d.owner, count(*), coalesce(sum(b.size), 0)::bigint,
           coalesce((select q.bytes from baas.file_quotas q where q.user_id = d.owner),
                    case when d.owner is not null then (select s.file_quota_bytes from baas.settings s) end)
      from baas.documents d join baas._blobs b on b.id = d.blob_id
     where d.blob_id is not null
     group by d.owner
     order by 3 desc, 1
$$;
comment on function baas.file_usage() is 'DBAs and service: files and bytes per owner, with the quota that applies';

-- Change a collection's file options (bucket, max_file_size, file_types, file_refs).
-- `bucket` changes only on an empty collection: every document of a bucket is a file.
create function baas.set_bucket(collection text, options jsonb) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    o jsonb := baas._normalize_file_options(options);
begin
    if o ? 'bucket' and (o ->> 'bucket')::boolean is distinct from c.bucket
       and exists (select from baas.documents d where d.collection_id = c.id) then
        raise exception using errcode = '22023', detail = 'invalid_options',
            message = format('collection %s has documents: bucket can change only while it is empty', c.name);
    end if;
    update baas.collections x set
        bucket = case when o ? 'bucket' then (o ->> 'bucket')::boolean else x.bucket end,
        file_max_bytes = case when o ? 'max_file_size' then (o ->> 'max_file_size')::bigint else x.file_max_bytes end,
        file_types = case when o ? 'file_types' then
                              case when jsonb_typeof(o -> 'file_types') = 'array'
                                   then array(select jsonb_array_elements_text(o -> 'file_types')) end
                          else x.file_types end,
        file_refs = case when o ? 'file_refs' then o ->> 'file_refs' else x.file_refs end
     where x.id = c.id
    returning * into c;
    return baas._collection_json(c);
end
$$;
comment on function baas.set_bucket(text, jsonb) is
    'Change a collection''s file options: bucket (only while empty), max_file_size, file_types, file_refs';
