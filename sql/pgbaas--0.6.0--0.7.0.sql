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


-- Tell every proxy that the extension changed (see pgbaas--0.2.0--0.3.0.sql).
select pg_catalog.pg_notify('baas_extension', '0.7.0');
