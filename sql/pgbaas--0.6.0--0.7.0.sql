-- pgbaas 0.6.0 -> 0.7.0, run by ALTER EXTENSION pgbaas UPDATE.
--
-- It turns a 0.6.0 database into exactly what CREATE EXTENSION makes at 0.7.0:
-- tests/tests/upgrade.rs installs 0.6.0 from its release commit, fills it (files
-- included), runs this, checks the data through the proxy and compares the schema
-- (pg_dump --binary-upgrade) with a fresh install's. Every statement below is the final
-- text of the file it names (sql/CHANGES-0.7.0.md lists what changed and why). Older
-- databases upgrade through the earlier scripts first.
--
-- Once released, an upgrade script is never edited: a fix goes into the next version's.

-------------------------------------------------------------------- files (issue 15)
-- Downloads: baas.file_read is one inlined SQL statement that returns a chunk (or part
-- of one) as stored, a short read like read(2), instead of a PL/pgSQL function that
-- assembled every 1 MiB piece with string_agg through a tuplestore (sql/files.sql).
-- A piece of a blob the caller may read, as read(2) gives one: at most `max` bytes from
-- `at`, and no further than the end of the chunk that holds `at` (a reader loops). No
-- row when the blob is gone or unreadable (a new version, a delete, a revoked grant:
-- the download ends) or `at` is at or past its end. One plain SQL statement, inlined
-- into the caller's query (no PL/pgSQL, no tuplestore, no string_agg): a whole chunk is
-- returned as stored, a part of one through substring(), which reads only the TOAST
-- pieces it needs (docs/benchmarks.md "Files" has the figures).
create or replace function baas.file_read(blob_id uuid, at bigint, max integer) returns table (data bytea)
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


-- tus: a finished session is remembered for a day, so that HEAD answers a client whose
-- last PATCH's answer was lost with Upload-Offset = Upload-Length (sql/files.sql,
-- sql/dump.sql).
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
select pg_catalog.pg_extension_config_dump('baas._uploads_finished', '');

-- Remove a finished session (its blob now belongs to the document); remember it in
-- baas._uploads_finished unless it was a one-shot session.
create or replace function baas._upload_done(upload_id uuid) returns void
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

create or replace function baas.upload_status(upload_id uuid) returns jsonb
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

create or replace function baas.cleanup_uploads(max integer default 100) returns integer
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



-- Chunks stay aligned whatever the PATCH sizes (every chunk but the last a whole MiB at
-- a MiB boundary): an append tops up the last chunk first, a rewind truncates the chunk
-- it topped up, so a download reads one chunk per MiB (sql/files.sql).
-- Append `data` at byte `at` (= the session's offset). Returns the new offset.
create or replace function baas._upload_append(upload_id uuid, lease uuid, at bigint, data bytea) returns bigint
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
create or replace function baas._upload_lease(upload_id uuid, lease uuid, checkpoint boolean) returns jsonb
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
create or replace function baas._upload_rewind(upload_id uuid, lease uuid) returns bigint
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


-- Tell every proxy that the extension changed (see pgbaas--0.2.0--0.3.0.sql).
select pg_catalog.pg_notify('baas_extension', '0.7.0');
