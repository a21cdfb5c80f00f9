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

-- Tell every proxy that the extension changed (see pgbaas--0.2.0--0.3.0.sql).
select pg_catalog.pg_notify('baas_extension', '0.7.0');
