-- Files (issue 15, sql/files.sql): every function's errors (SQLSTATE and detail code,
-- which the proxy maps to HTTP), the policies on the bytes (chunks unreadable without a
-- readable document, a blob id cannot be forged), baas.files through as_user, refs,
-- quotas, upload sessions, and the lints over the file tables.
begin;
-- An error's message as an application user (NULL: anonymous); null when none.
create function pg_temp.message_as(uid text, q text) returns text language plpgsql as $$
begin
    perform set_config('baas.claims', case when uid is null then '' else jsonb_build_object('sub', uid, 'role', 'baas_user')::text end, true);
    perform set_config('role', case when uid is null then 'baas_anon' else 'baas_user' end, true);
    execute q;
    reset role;
    perform set_config('baas.claims', '', true);
    return null;
exception when others then
    return sqlerrm;
end $$;
select plan(199);

select baas.signup('f1@files.test', 'long enough pw') -> 'user' ->> 'id' as u1 \gset
select baas.signup('f2@files.test', 'long enough pw') -> 'user' ->> 'id' as u2 \gset
select baas.create_collection('pics', '{"bucket": true, "max_file_size": 4000000, "file_types": ["image/*", "text/plain", "application/octet-stream"]}') -> 'options' as popts \gset
select baas.create_collection('docs', '{"bucket": true, "default_acl": {"read": ["authenticated"]}}') is not null as ok \gset
select baas.create_collection('notes', '{"file_refs": "restrict", "default_acl": {"read": ["authenticated"]}}') is not null as ok \gset
select baas.create_collection('loose', '{"default_acl": {"read": ["authenticated"]}}') is not null as ok \gset

-------------------------------------------------------------------- tables and options
select is(:'popts'::jsonb - 'create' - 'default_acl' - 'schema' - 'realtime',
          '{"bucket": true, "max_file_size": 4000000, "file_types": ["image/*", "text/plain", "application/octet-stream"], "file_refs": "allow"}',
          'a bucket''s options show its file options');
select is(baas.get_collection('loose') -> 'options' ? 'bucket', false, 'other collections'' JSON is unchanged');
select is(pg_temp.detail_of($$ select baas.create_collection('bad1', '{"bucket": 1}') $$), '22023 invalid_options', 'bucket must be a boolean');
select is(pg_temp.detail_of($$ select baas.create_collection('bad2', '{"file_types": ["png"]}') $$), '22023 invalid_options', 'file_types are content types');
select is(pg_temp.detail_of($$ select baas.create_collection('bad3', '{"max_file_size": -1}') $$), '22023 invalid_options', 'max_file_size >= 0');
select is(pg_temp.detail_of($$ select baas.create_collection('bad4', '{"file_refs": "never"}') $$), '22023 invalid_options', 'file_refs allow|restrict');
select col_type_is('baas', 'documents', 'blob_id', 'uuid', 'documents.blob_id');
select col_type_is('baas', 'documents', 'file', 'jsonb', 'documents.file');
select col_type_is('baas', '_file_chunks', 'data', 'bytea', 'chunks hold bytea');
select is((select attstorage::text from pg_attribute where attrelid = 'baas._file_chunks'::regclass and attname = 'data'), 'e',
          'chunk data is stored EXTERNAL (no pglz on media)');
select ok((select relrowsecurity and relforcerowsecurity from pg_class where oid = 'baas._file_chunks'::regclass), 'chunks: RLS forced');
select ok((select reloptions @> '{security_invoker=true}' from pg_class where oid = 'baas.files'::regclass), 'baas.files is security_invoker');
select is((select array_agg(c::regclass::text order by c::regclass::text) from pg_extension e, unnest(e.extconfig) c
            where e.extname = 'pgbaas' and c::regclass::text in ('baas._blobs', 'baas._file_chunks', 'baas._uploads',
                  'baas._file_refs', 'baas.file_quotas', 'baas._thumbnails', 'baas._blob_trash')),
          '{baas._blob_trash,baas._blobs,baas._file_chunks,baas._file_refs,baas._uploads,baas.file_quotas}', 'dumped: all file tables but the thumbnail cache');

-------------------------------------------------------------------- one-shot uploads
select x as f1 from baas.as_user(:'u1'::uuid, $$ select baas.upload_file('pics', 'a.txt', 'text/plain', 'hello files',
        '{"tag": 1}', null, '0190f5b4-0000-7000-8000-00000000f001') $$) x \gset
select is((:'f1'::jsonb) - 'created_at' - 'updated_at',
          jsonb_build_object('id', '0190f5b4-0000-7000-8000-00000000f001', 'collection', 'pics', 'name', 'a.txt', 'size', 11,
              'content_type', 'text/plain', 'sha256', encode(sha256('hello files'), 'hex'), 'owner', :'u1', 'version', 1,
              'data', '{"tag": 1}'::jsonb, 'acl', '{"read": [], "update": [], "delete": []}'::jsonb),
          'upload_file returns the file: size, sha256 of the bytes, type, owner, version');
select is((select string_agg(k.data, ''::bytea order by off) from baas._file_chunks k
            join baas.documents d on d.blob_id = k.blob_id where d.id = '0190f5b4-0000-7000-8000-00000000f001'),
          'hello files'::bytea, 'the bytes are in the chunks');
select is((select count(*)::int from baas._uploads), 0, 'no session is left');
select is((select baas.get_document('pics', '0190f5b4-0000-7000-8000-00000000f001') -> 'file' ->> 'sha256'),
          encode(sha256('hello files'), 'hex'), 'the document shows `file`');
select ok(not (baas.get_collection('loose') ? 'file'), 'documents without files are unchanged (no file key)');
select x as png from baas.as_user(:'u1'::uuid, $$ select baas.upload_file('pics', 'p.png', null,
        '\x89504e470d0a1a0a0000000d494844520000000100000001'::bytea, '{}', null, '0190f5b4-0000-7000-8000-00000000f002') $$) x \gset
select is(:'png'::jsonb ->> 'content_type', 'image/png', 'an undeclared type is sniffed from the bytes');
select x as empty from baas.as_user(:'u1'::uuid, $$ select baas.upload_file('pics', 'empty', null, ''::bytea) $$) x \gset
select is((:'empty'::jsonb ->> 'size', :'empty'::jsonb ->> 'content_type', :'empty'::jsonb ->> 'sha256')::text,
          format('(0,application/octet-stream,%s)', encode(sha256(''), 'hex')), 'an empty file: size 0, octet-stream');

-------------------------------------------------------------------- upload_create errors
select is(pg_temp.outcome_as(:'u1', $$ select baas.upload_create('nope', 'a', null, 1) $$), 'P0002 collection_not_found', 'unknown bucket: 404');
select is(pg_temp.outcome_as(:'u1', $$ select baas.upload_create('loose', 'a', null, 1) $$), '22023 not_a_bucket', 'not a bucket: 400');
select is(pg_temp.outcome_as(:'u1', $$ select baas.upload_create('pics', '../x', null, 1) $$), '22023 invalid_file_name', 'a path name: 400');
select is(pg_temp.outcome_as(:'u1', $$ select baas.upload_create('pics', 'a/b', null, 1) $$), '22023 invalid_file_name', 'a separator: 400');
select is(pg_temp.outcome_as(:'u1', $$ select baas.upload_create('pics', repeat('x', 256), null, 1) $$), '22023 invalid_file_name', '256 bytes: 400');
select is(pg_temp.outcome_as(:'u1', $$ select baas.upload_create('pics', E'a\\x01b', null, 1) $$), '22023 invalid_file_name', 'a control character: 400');
select is(pg_temp.outcome_as(:'u1', $$ select baas.upload_create('pics', 'a', null, 4000001) $$), '54000 file_too_large', 'over the bucket''s max: 413');
select is(pg_temp.outcome_as(:'u1', $$ select baas.upload_create('pics', 'a', 'application/pdf', 10) $$), '22023 unsupported_file_type', 'a type the bucket refuses: 415');
select is(pg_temp.outcome_as(:'u1', $$ select baas.upload_create('pics', 'a', 'not a type', 10) $$), '22023 invalid_request', 'a malformed type: 400');
select is(pg_temp.outcome_as(null, $$ select baas.upload_create('pics', 'a', null, 10) $$), '42501 forbidden', 'anonymous may not create here: 403');
select is(pg_temp.outcome_as(:'u1', $$ select baas.upload_create('pics', 'a', null, 10, '{}', '{"read": ["user:00000000-0000-0000-0000-000000000009"]}') $$),
          '22023 unknown_principal', 'an ACL naming nobody: 400');
select is(pg_temp.outcome_as(:'u1', $$ select baas.upload_create('pics', 'a', null, 10, '{}', '{"read": 7}') $$), '22023 invalid_acl', 'a malformed ACL: 400');
select is(pg_temp.outcome_as(:'u1', $$ select baas.upload_create('pics', 'a', null, 10, '[]') $$), '22023 invalid_data', 'data must be an object');
select is(pg_temp.outcome_as(:'u1', $$ select baas.upload_create('pics', 'a', null, 10, '{}', null, '0190f5b4-0000-7000-8000-00000000f001') $$),
          '23505 document_exists', 'an id in use: 409');
select is(pg_temp.outcome_as(:'u2', $$ select baas.upload_create('pics', 'a', null, 10, '{}', null, '0190f5b4-0000-7000-8000-00000000f001', null, true) $$),
          'P0002 file_not_found', 'replacing a file one cannot read: 404');
select is(pg_temp.outcome_as(:'u1', $$ select baas.upload_create('pics', 'a', null, 10, '{}', null, '0190f5b4-0000-7000-8000-00000000f001', 7, true) $$),
          '40001 version_conflict', 'replacing a stale version: 412');
select is(pg_temp.outcome_as(:'u1', $$ select baas.set_file_acl('0190f5b4-0000-7000-8000-00000000f001', jsonb_build_object('read', array['user:' || $$ || quote_literal(:'u2') || $$])) $$), 'ok',
          'the owner shares the file for reading');
select is(pg_temp.outcome_as(:'u2', $$ select baas.upload_create('pics', 'a', null, 10, '{}', null, '0190f5b4-0000-7000-8000-00000000f001', null, true) $$),
          '42501 forbidden', 'replacing a file one may only read: 403');
update baas.settings set file_quota_bytes = 100;
select is(pg_temp.outcome_as(:'u1', $$ select baas.upload_create('pics', 'a', null, 100) $$), '54000 quota_exceeded',
          'over the quota (11 + 24 bytes used of 100): 413');
insert into baas.file_quotas values (:'u1', 1000);
select is(pg_temp.outcome_as(:'u1', $$ select baas.upload_create('pics', 'a', null, 100) $$), 'ok', 'a per-user quota overrides the default');
update baas.settings set file_quota_bytes = null;
select is((select (files, bytes, quota)::text from baas.file_usage() where user_id = :'u1'), '(3,35,1000)', 'file_usage: files, bytes, quota per owner');
select is((select x from baas.as_user(:'u2'::uuid, format('select baas._quota_left(%L)', :'u1')) x), 'null'::jsonb,
          'nobody learns another user''s usage through the quota helper');
delete from baas.file_quotas;
-- A replace is paid by the file's owner (quota, lock, old size), whoever sends it.
select x ->> 'id' as shared from baas.as_user(:'u1'::uuid, $$ select baas.upload_file('docs', 's.txt', 'text/plain', 'shared', '{}',
        '{"read": ["authenticated"], "update": ["authenticated"]}') $$) x \gset
insert into baas.file_quotas values (:'u2', 0);
select is(pg_temp.outcome_as(:'u2', format($$ select baas.upload_file('docs', 's.txt', 'text/plain', repeat('y', 20)::bytea, '{}', null, %L, null, true) $$, :'shared')),
          'ok', 'a user with update rights replaces u1''s file: u1 (no quota) pays, not the replacer (quota 0)');
insert into baas.file_quotas select :'u1', bytes + 10 from baas.file_usage() where user_id = :'u1';
select is(pg_temp.outcome_as(:'u2', format($$ select baas.upload_file('docs', 's.txt', 'text/plain', repeat('z', 40)::bytea, '{}', null, %L, null, true) $$, :'shared')),
          '54000 quota_exceeded', 'and the owner''s quota (10 bytes left; 40 replacing 20) refuses it');
select is(pg_temp.message_as(:'u2', format($$ select baas.upload_file('docs', 's.txt', 'text/plain', repeat('z', 40)::bytea, '{}', null, %L, null, true) $$, :'shared')),
          'the file (40 bytes) exceeds the file owner''s remaining file quota', 'without telling the replacer what the owner has left');
select is(pg_temp.message_as(:'u1', format($$ select baas.upload_file('docs', 's.txt', 'text/plain', repeat('z', 40)::bytea, '{}', null, %L, null, true) $$, :'shared')),
          'the file (40 bytes) exceeds your remaining file quota (0 bytes)', 'the owner is told (the 100 bytes of an open session count)');
select count(*) as ok from (select baas.delete_file(:'shared')) x \gset
delete from baas.file_quotas;
-- Bytes in open sessions count against the quota (they are held for the TTL).
delete from baas._uploads where owner = :'u1';
insert into baas.file_quotas select :'u1', bytes + 100 from baas.file_usage() where user_id = :'u1';
select x ->> 'upload_id' as held from baas.as_user(:'u1'::uuid, $$ select baas.upload_create('pics', 'h1', null, 80) $$) x \gset
select is(pg_temp.outcome_as(:'u1', $$ select baas.upload_create('pics', 'h2', null, 80) $$), '54000 quota_exceeded',
          'a second session cannot reserve what an open one holds (80 + 80 of 100 left): 413');
select x ->> 'upload_id' as nolen from baas.as_user(:'u1'::uuid, $$ select baas.upload_create('pics', 'h3', null, null) $$) x \gset
select is(pg_temp.outcome_as(:'u1', format('select baas._upload_append(%L, null, 0, decode(repeat(''61'', 30), ''hex''))', :'nolen')),
          '54000 quota_exceeded', 'an upload of unknown length is counted as it grows (80 held + 30 of 100): 413');
select is(pg_temp.outcome_as(:'u1', format('select baas.upload_abort(%L)', :'held')), 'ok', 'abort gives the reservation back');
select is(pg_temp.outcome_as(:'u1', format('select baas._upload_append(%L, null, 0, decode(repeat(''61'', 30), ''hex''))', :'nolen')),
          'ok', 'then the bytes fit');
select is(pg_temp.outcome_as(:'u1', format('select baas.upload_abort(%L)', :'nolen')), 'ok', 'abort');
delete from baas.file_quotas;
-- A bounded number of open sessions per user, and per bucket for anonymous callers.
select is(pg_temp.outcome_as(:'u2', $$ select count(*) from generate_series(1, 20) g, lateral baas.upload_create('pics', 'n' || g, null, 1) x $$),
          'ok', 'twenty open sessions');
select is(pg_temp.outcome_as(:'u2', $$ select baas.upload_create('pics', 'n21', null, 1) $$), '54000 too_many_uploads',
          'the twenty-first: 54000 too_many_uploads (429)');
select is(pg_temp.outcome_as(:'u1', $$ select baas.upload_create('pics', 'other', null, 1) $$), 'ok', 'another user is not affected');
select is(pg_temp.outcome_as(:'u2', $$ select baas.upload_file('pics', 'one-shot.txt', 'text/plain', 'x', '{}', null, '0190f5b4-0000-7000-8000-00000000f0a1') $$), 'ok',
          'a one-shot upload_file is not refused by the cap (its session ends with its transaction)');
select is((select count(*)::int from baas._uploads where owner = :'u2'), 20, 'and it held no session');
select count(*) as ok from (select baas.delete_file('0190f5b4-0000-7000-8000-00000000f0a1')) x \gset
select id as pics_id from baas.collections where name = 'pics' \gset
-- A one-shot session made directly cannot be used by any later transaction.
select x #>> '{}' as oneshot from baas.as_user(:'u2'::uuid, format($$ select (baas._upload_insert(%s, gen_random_uuid(), false, null, 1, 'x', null, '{}', null, null, true)).id $$, :'pics_id')) x \gset
select is((select created_at = expires_at from baas._uploads where id = :'oneshot'), true, 'a one-shot session expires as it is made');
update baas._uploads set created_at = created_at - interval '1 second', expires_at = expires_at - interval '1 second' where id = :'oneshot';
select is(pg_temp.outcome_as(:'u2', format('select baas._upload_append(%L, null, 0, ''a'')', :'oneshot')), 'P0002 upload_expired',
          'in a later transaction it is expired');
delete from baas._uploads where owner = :'u2' or name = 'other';
update baas.collections set create_acl = '{public}' where name = 'docs';
-- Anonymous callers: per client address (baas.client_ip, which the proxy sets), so one
-- of them cannot block every anonymous upload to a bucket.
select set_config('baas.client_ip', '198.51.100.1', true) is not null as ok \gset
select is(pg_temp.outcome_as(null, $$ select count(*) from generate_series(1, 20) g, lateral baas.upload_create('docs', 'a' || g, null, 1) x $$),
          'ok', 'anonymous: twenty open sessions from one address');
select is(pg_temp.outcome_as(null, $$ select baas.upload_create('docs', 'a21', null, 1) $$), '54000 too_many_uploads',
          'anonymous: the twenty-first from that address: 429');
select is(pg_temp.outcome_as(null, $$ select baas.upload_file('docs', 'small.txt', 'text/plain', 'small', '{}', null, '0190f5b4-0000-7000-8000-00000000f0a2') $$), 'ok',
          'anonymous: a one-shot upload from that address still works');
select count(*) as ok from (select baas.delete_file('0190f5b4-0000-7000-8000-00000000f0a2')) x \gset
select set_config('baas.client_ip', '198.51.100.2', true) is not null as ok \gset
select is(pg_temp.outcome_as(null, $$ select baas.upload_create('docs', 'b1', null, 1) $$), 'ok',
          'anonymous: another address is not affected');
select is((select count(*)::int from baas._uploads where owner is null and client_ip = '198.51.100.1'), 20, 'sessions keep their address');
delete from baas._uploads where owner is null;
-- IPv6: per /56, as the proxy's rate limits (one client holds a whole /64, often a /56).
select set_config('baas.client_ip', '2001:db8:1:200::1', true) is not null as ok \gset
select is(pg_temp.outcome_as(null, $$ select count(*) from generate_series(1, 20) g, lateral baas.upload_create('docs', 'v' || g, null, 1) x $$),
          'ok', 'anonymous IPv6: twenty open sessions');
select set_config('baas.client_ip', '2001:db8:1:2ff:ffff::9', true) is not null as ok \gset
select is(pg_temp.outcome_as(null, $$ select baas.upload_create('docs', 'v21', null, 1) $$), '54000 too_many_uploads',
          'anonymous IPv6: another address of the same /56 is the same client');
select set_config('baas.client_ip', '2001:db8:1:300::1', true) is not null as ok \gset
select is(pg_temp.outcome_as(null, $$ select baas.upload_create('docs', 'w1', null, 1) $$), 'ok', 'anonymous IPv6: the next /56 is another');
select is((select count(*)::int from generate_series(1, 21) g, lateral baas.upload_create('docs', 's' || g, null, 1) x), 21,
          'a privileged caller (a DBA, a service token) is not capped');
select set_config('baas.client_ip', '', true) is not null as ok \gset
delete from baas._uploads where owner is null;
-- No address (a call outside the proxy): per bucket.
select is(pg_temp.outcome_as(null, $$ select count(*) from generate_series(1, 20) g, lateral baas.upload_create('docs', 'n' || g, null, 1) x $$),
          'ok', 'anonymous: twenty open sessions in a bucket');
select is(pg_temp.outcome_as(null, $$ select baas.upload_create('docs', 'n21', null, 1) $$), '54000 too_many_uploads',
          'anonymous: the twenty-first in that bucket');
delete from baas._uploads where owner is null;
update baas.collections set create_acl = '{authenticated}' where name = 'docs';

-------------------------------------------------------------------- sessions
select x ->> 'upload_id' as up from baas.as_user(:'u1'::uuid, $$ select baas.upload_create('pics', 'big.bin', 'application/octet-stream', 2097160,
        '{}', null, '0190f5b4-0000-7000-8000-00000000f003') $$) x \gset
select is(pg_temp.outcome_as(:'u2', format('select baas._upload_append(%L, null, 0, ''\x00'')', :'up')), 'P0002 upload_not_found',
          'another user''s upload is not found');
select is(pg_temp.outcome_as(null, format('select baas.upload_status(%L)', :'up')), 'P0002 upload_not_found', 'nor is it anonymous''');
select is(pg_temp.outcome_as(:'u1', format('select baas._upload_append(%L, null, 5, ''\x00'')', :'up')), '22023 offset_mismatch', 'a wrong offset: 409');
select is(pg_temp.detail_of(format('select baas._upload_append(%L, null, 0, ''\x'')', :'up')), '22023 invalid_request', 'nothing to append: 400');
select is(pg_temp.outcome_as(:'u1', format('select baas._upload_append(%L, null, 0, decode(repeat(''61'', 1048576 * 2), ''hex''))', :'up')),
          'ok', 'two MiB in one append (stored as two chunks)');
select is((select array_agg(length(k.data) order by k.off) from baas._file_chunks k join baas._uploads u on u.blob_id = k.blob_id where u.id = :'up'),
          '{1048576,1048576}', 'chunks hold at most 1 MiB');
select is(pg_temp.outcome_as(:'u1', format('select baas._upload_append(%L, null, 2097152, decode(repeat(''62'', 9), ''hex''))', :'up')),
          '54000 file_too_large', 'past the announced length: 413');
select is(pg_temp.outcome_as(:'u1', format('select baas.upload_finish(%L)', :'up')), '22023 length_mismatch', 'finishing short: 400');
select is(pg_temp.outcome_as(:'u1', format('select baas._upload_lease(%L, ''00000000-0000-0000-0000-0000000000a1'', true)', :'up')), 'ok', 'a lease');
select is(pg_temp.outcome_as(:'u1', format('select baas._upload_append(%L, ''00000000-0000-0000-0000-0000000000a2'', 2097152, ''\x62'')', :'up')),
          '40001 upload_locked', 'another writer is locked out: 423');
select is(pg_temp.outcome_as(:'u1', format('select baas._upload_append(%L, ''00000000-0000-0000-0000-0000000000a1'', 2097152, ''\x6262'')', :'up')),
          'ok', 'the lease holder appends');
select is((select x from baas.as_user(:'u1'::uuid, format('select baas._upload_rewind(%L, ''00000000-0000-0000-0000-0000000000a1'')', :'up')) x),
          '2097152'::jsonb, 'a rewind goes back to the checkpoint');
select is((select x -> 'offset' from baas.as_user(:'u1'::uuid, format('select baas.upload_status(%L)', :'up')) x), '2097152'::jsonb,
          'upload_status shows the offset');
select is(pg_temp.outcome_as(:'u1', format('select baas._upload_append(%L, null, 2097152, decode(repeat(''63'', 8), ''hex''))', :'up')),
          'ok', 'the rest');
select x as big from baas.as_user(:'u1'::uuid, format('select baas.upload_finish(%L)', :'up')) x \gset
select is(:'big'::jsonb ->> 'sha256', encode(sha256(decode(repeat('61', 2097152) || repeat('63', 8), 'hex')), 'hex'),
          'the running sha256 over appends, a rewind and a lease equals the one-shot digest');
select is((select (meta::jsonb ->> 'size', meta::jsonb ->> 'name', blob_id = (select d.blob_id from baas.documents d where d.id = '0190f5b4-0000-7000-8000-00000000f003'))::text
             from baas.file_get('0190f5b4-0000-7000-8000-00000000f003')), '(2097160,big.bin,t)',
          'file_get: the metadata and the blob id in one row');
select is(pg_temp.outcome_as(:'u1', $$ select baas.update_file('0190f5b4-0000-7000-8000-00000000f003', null, jsonb_build_object('big', repeat('x', 200000))) $$), 'ok',
          'a file with 200 KB of data');
select is((select (pg_catalog.length(meta) < 1000, meta::jsonb ? 'data', meta::jsonb ?& array['id', 'name', 'size', 'content_type', 'sha256', 'version', 'updated_at', 'acl'])::text
             from baas.file_get('0190f5b4-0000-7000-8000-00000000f003')), '(t,f,t)',
          'file_get''s metadata leaves data out (a download''s first row stays small) and keeps what the download reads');
select is(baas.file_meta('0190f5b4-0000-7000-8000-00000000f003') -> 'data' ->> 'big', repeat('x', 200000), 'file_meta keeps the whole file JSON');
select is((select data from baas.file_get('0190f5b4-0000-7000-8000-00000000f003', null, 1048570, 10)), decode('61616161616161616161', 'hex'),
          'file_get reads across a chunk boundary');
select blob_id as bigf from baas.documents where id = '0190f5b4-0000-7000-8000-00000000f003' \gset
select is((select data from baas.file_read(:'bigf', 2097150, 100)), decode('6161', 'hex'),
          'file_read stops at the end of the chunk that holds at (a short read, as read(2))');
select is((select data from baas.file_read(:'bigf', 2097152, 100)), decode(repeat('63', 8), 'hex'),
          'the next read starts in the next chunk and ends at the file''s end');
select is((select count(*)::int from baas.file_read(:'bigf', 2097160, 100)), 0, 'at the end: no row');
select is((select (pg_catalog.length(data), data = decode(repeat('61', 1048576), 'hex'))::text from baas.file_read(:'bigf', 1048576, 1048576)),
          '(1048576,t)', 'a whole chunk as stored');
select is((select data from baas.file_read(:'bigf', 1048570, 3)), decode('616161', 'hex'), 'at most max bytes');
-- Chunks stay aligned whatever the append sizes (a download reads one chunk per MiB):
-- 5 bytes, 1,048,000 more, then a checkpointed PATCH of 2 MiB that is rewound from
-- inside the chunk it topped up.
select x ->> 'upload_id' as up3 from baas.as_user(:'u1'::uuid, $$ select baas.upload_create('pics', 'odd.bin', 'application/octet-stream', 3145157) $$) x \gset
select is(pg_temp.outcome_as(:'u1', format('select baas._upload_append(%L, null, 0, decode(repeat(''01'', 5), ''hex''))', :'up3')), 'ok', 'five bytes');
select is(pg_temp.outcome_as(:'u1', format('select baas._upload_append(%L, null, 5, decode(repeat(''02'', 1048000), ''hex''))', :'up3')), 'ok', 'then 1,048,000');
select is(pg_temp.outcome_as(:'u1', format('select baas._upload_lease(%L, ''00000000-0000-0000-0000-0000000000b1'', true)', :'up3')), 'ok', 'a checkpoint');
select is(pg_temp.outcome_as(:'u1', format('select baas._upload_append(%L, ''00000000-0000-0000-0000-0000000000b1'', 1048005, decode(repeat(''03'', 2097152), ''hex''))', :'up3')),
          'ok', 'then 2 MiB');
select is((select array_agg(k.off || ':' || pg_catalog.length(k.data) order by k.off) from baas._file_chunks k join baas._uploads u on u.blob_id = k.blob_id where u.id = :'up3'),
          '{0:1048576,1048576:1048576,2097152:1048005}', 'every chunk but the last is a whole MiB at a MiB boundary');
select is((select x from baas.as_user(:'u1'::uuid, format('select baas._upload_rewind(%L, ''00000000-0000-0000-0000-0000000000b1'')', :'up3')) x),
          '1048005'::jsonb, 'the rewind goes back inside the first chunk');
select is((select array_agg(k.off || ':' || pg_catalog.length(k.data) order by k.off) from baas._file_chunks k join baas._uploads u on u.blob_id = k.blob_id where u.id = :'up3'),
          '{0:1048005}', 'the topped-up chunk keeps only what it held before the PATCH');
select is(pg_temp.outcome_as(:'u1', format('select baas._upload_append(%L, null, 1048005, decode(repeat(''04'', 2097152), ''hex''))', :'up3')), 'ok', 'the rest again');
select is((select encode(sha256(string_agg(k.data, ''::bytea order by k.off)), 'hex') from baas._file_chunks k join baas._uploads u on u.blob_id = k.blob_id where u.id = :'up3'),
          encode(sha256(decode(repeat('01', 5) || repeat('02', 1048000) || repeat('04', 2097152), 'hex')), 'hex'),
          'the chunks hold the bytes in order, the rewound ones gone');
select x ->> 'upload_id' as up2 from baas.as_user(:'u1'::uuid, $$ select baas.upload_create('pics', 'x.png', 'image/png', 4, '{}', null, null, null, false,
        sha256('nope')) $$) x \gset
select is(pg_temp.outcome_as(:'u1', format('select baas._upload_append(%L, null, 0, ''abcd''::bytea)', :'up2')), 'ok', 'four bytes');
select is(pg_temp.outcome_as(:'u1', format('select baas.upload_finish(%L)', :'up2')), '22023 digest_mismatch', 'an announced sha256 that differs: 400');
update baas._uploads set sha256_expected = null where id = :'up2';
select is(pg_temp.outcome_as(:'u1', format('select baas.upload_finish(%L)', :'up2')), '22023 content_type_mismatch', 'image/png that is not: 415');
select is(pg_temp.outcome_as(:'u1', format('select baas.upload_abort(%L)', :'up2')), 'ok', 'abort');
select ok(baas.cleanup_blobs(1000) > 0, 'the files deleted and replaced above: cleanup_blobs sweeps their bytes');
select is((select count(*)::int from baas._blobs b where not exists (select from baas.documents d where d.blob_id = b.id)
             and not exists (select from baas._uploads u where u.blob_id = b.id)), 0,
          'an aborted upload leaves no blob, no chunk');
select is(pg_temp.outcome_as(:'u1', format('select baas.upload_abort(%L)', :'up2')), 'P0002 upload_not_found', 'aborting twice: 404');
-- drop_role scrubs the ACL an unfinished upload will give its file: a role made later
-- under the same name gets nothing from it.
select baas.create_role('fx7') is null as ok \gset
select x ->> 'upload_id' as up7 from baas.as_user(:'u1'::uuid, $$ select baas.upload_create('pics', 'r7.txt', 'text/plain', 2, '{}',
        '{"read": ["role:fx7", "authenticated"]}', '0190f5b4-0000-7000-8000-00000000f0a7') $$) x \gset
select baas.drop_role('fx7') is null as ok \gset
select is((select acl from baas._uploads where id = :'up7'), '{"read": ["authenticated"], "update": [], "delete": []}'::jsonb,
          'drop_role removes the role from unfinished uploads'' ACLs');
select baas.create_role('fx7') is null as ok \gset
select count(*) as ok from baas.as_user(:'u1'::uuid, format('select baas._upload_append(%L, null, 0, ''r7'')', :'up7')) \gset
select x -> 'acl' as acl7 from baas.as_user(:'u1'::uuid, format('select baas.upload_finish(%L)', :'up7')) x \gset
select is(:'acl7'::jsonb, '{"read": ["authenticated"], "update": [], "delete": []}'::jsonb,
          'the finished file does not name the new role of the old name');
select count(*) as ok from (select baas.delete_file('0190f5b4-0000-7000-8000-00000000f0a7')) x \gset
select baas.drop_role('fx7') is null as ok \gset
select x ->> 'upload_id' as up3 from baas.as_user(:'u1'::uuid, $$ select baas.upload_create('pics', 'y', null, 1) $$) x \gset
update baas._uploads set expires_at = now() - interval '1 second' where id = :'up3';
select is(pg_temp.outcome_as(:'u1', format('select baas._upload_append(%L, null, 0, ''a'')', :'up3')), 'P0002 upload_expired', 'an expired upload: 410');
select is(baas.cleanup_uploads(), 1, 'cleanup_uploads removes it');
select is((select count(*)::int from baas._uploads where id = :'up3'), 0, 'and it is gone');
-- The internal steps API roles can reach do not skip the checks of the public ones.
select id as loose_id from baas.collections where name = 'loose' \gset
select id as pics_id from baas.collections where name = 'pics' \gset
select is(pg_temp.outcome_as(:'u1', format($$ select baas._upload_insert(%s, gen_random_uuid(), false, null, 1, 'x', null, '{}', null, null, false) $$, :'loose_id')),
          '22023 not_a_bucket', '_upload_insert called directly: not a bucket');
select is(pg_temp.outcome_as(null, format($$ select baas._upload_insert(%s, gen_random_uuid(), false, null, 1, 'x', null, '{}', null, null, false) $$, :'pics_id')),
          '42501 forbidden', '_upload_insert called directly: no create right');
select is(pg_temp.outcome_as(:'u1', format($$ select baas._upload_insert(%s, gen_random_uuid(), false, null, 1, '../x', null, '{}', null, null, false) $$, :'pics_id')),
          '22023 invalid_file_name', '_upload_insert called directly: the name rule');
select is(pg_temp.outcome_as(:'u1', format($$ select baas._upload_insert(%s, gen_random_uuid(), false, null, 1, 'x', 'application/pdf', '{}', null, null, false) $$, :'pics_id')),
          '22023 unsupported_file_type', '_upload_insert called directly: the bucket''s types');
select is(pg_temp.outcome_as(:'u1', format($$ select baas._upload_insert(%s, gen_random_uuid(), false, null, 5000000, 'x', null, '{}', null, null, false) $$, :'pics_id')),
          '54000 file_too_large', '_upload_insert called directly: the bucket''s size');
-- A replace through the direct step answers as upload_create: an unreadable file is not
-- found, a readable one the caller may not update is forbidden, and neither opens a session.
select x ->> 'id' as ro from baas.as_user(:'u1'::uuid, $$ select baas.upload_file('pics', 'ro.txt', 'text/plain', 'read only', '{}',
        '{"read": ["authenticated"]}') $$) x \gset
select count(*) as u2_before from baas._uploads where owner = :'u2' \gset
select is(pg_temp.outcome_as(:'u2', format($$ select baas._upload_insert(%s, %L, true, null, 1, 'x', null, '{}', null, null, false) $$, :'pics_id', :'ro')),
          '42501 forbidden', '_upload_insert called directly: a replace of a file the caller may read but not update');
select is(pg_temp.outcome_as(null, format($$ select baas._upload_insert(%s, %L, true, null, 1, 'x', null, '{}', null, null, false) $$, :'pics_id', :'ro')),
          'P0002 file_not_found', '_upload_insert called directly: a replace of a file the caller may not read is not found');
select is((select count(*) from baas._uploads where owner = :'u2'), :'u2_before'::bigint, 'and neither opened a session');
select is(pg_temp.outcome_as(:'u1', format($$ select baas._upload_insert(%s, %L, true, null, 1, 'x', null, '{}', null, null, false) $$, :'pics_id', :'ro')),
          'ok', 'the owner still may');
delete from baas._uploads where owner = :'u1' and file_id = :'ro';
select count(*) as ok from (select baas.delete_file(:'ro')) x \gset
select x ->> 'upload_id' as sealed from baas.as_user(:'u1'::uuid, $$ select baas.upload_create('pics', 'sealed.txt', 'text/plain', 1) $$) x \gset
select count(*) as ok from baas.as_user(:'u1'::uuid, format('select baas._upload_append(%L, null, 0, ''a'')', :'sealed')) \gset
select is(pg_temp.outcome_as(:'u1', format('select baas._upload_seal(%L)', :'sealed')), 'ok', 'a direct _upload_seal leaves a session finishing');
select is(baas.cleanup_uploads(), 1, 'cleanup_uploads removes a session left finishing (outside a finish it is an orphan)');
select is((select count(*)::int from baas._blobs b where not exists (select from baas.documents d where d.blob_id = b.id)
             and not exists (select from baas._uploads u where u.blob_id = b.id)
             and not exists (select from baas._blob_trash t where t.blob_id = b.id)), 0, 'with its blob');

-------------------------------------------------------------------- the guard and the policies
select is(pg_temp.outcome_as(:'u1', $$ select baas.create_document('pics', '{}') $$), '22023 use_file_upload', 'a bucket takes files only');
select is(pg_temp.outcome_as(:'u2', $$ select baas.upload_file('pics', 'mine.txt', 'text/plain', 'u2 bytes', '{}', null, '0190f5b4-0000-7000-8000-00000000f004') $$),
          'ok', 'u2 uploads a file of their own');
select is(pg_temp.outcome_as(:'u2', format($$ update baas.documents set blob_id = (select blob_id from baas.documents where id = '0190f5b4-0000-7000-8000-00000000f002')
                                               where id = '0190f5b4-0000-7000-8000-00000000f004' $$)),
          '22023 invalid_request', 'a file''s blob cannot be set to null (u2 cannot even see u1''s blob id)');
select is(pg_temp.detail_of($$ set local role baas_user; select set_config('baas.claims', '{"role":"baas_user","sub":"$$ || :'u2' || $$"}', true);
                               update baas.documents set blob_id = '$$ || (select blob_id from baas.documents where id = '0190f5b4-0000-7000-8000-00000000f002') || $$'
                                where id = '0190f5b4-0000-7000-8000-00000000f004' $$),
          '42501 forbidden', 'a blob id cannot be forged: attaching another''s blob is refused');
reset role;
select set_config('baas.claims', '', true) is not null as ok \gset
select is(pg_temp.outcome_as(:'u2', $$ update baas.documents set file = '{"name": "renamed.txt", "size": 1, "sha256": "00"}' where id = '0190f5b4-0000-7000-8000-00000000f004' $$),
          'ok', 'renaming through file.name');
select is((select file - 'name' from baas.documents where id = '0190f5b4-0000-7000-8000-00000000f004'),
          jsonb_build_object('size', 8, 'content_type', 'text/plain', 'sha256', encode(sha256('u2 bytes'), 'hex')),
          'size and sha256 stay the blob''s whatever the writer sends');
select is((select x from baas.as_user(:'u2'::uuid, $$ select count(*) from baas._file_chunks $$) x), '2'::jsonb,
          'u2 reads the chunks of files u2 may read (own, and a.txt shared) only');
select is((select x from baas.as_user(null::uuid, $$ select count(*) from baas._blobs $$) x), '0'::jsonb, 'anonymous reads no blob');
select is(array(select x ->> 'name' from baas.as_user(:'u2'::uuid, 'select * from baas.files order by name') x),
          '{a.txt,renamed.txt}', 'as_user sees exactly the files the user may read');
select is(array(select x ->> 'name' from baas.as_user(:'u1'::uuid, 'select * from baas.files order by name') x),
          '{a.txt,big.bin,empty,p.png}', 'and the owner sees theirs');
select is(pg_temp.outcome_as(:'u2', $$ select baas.file_meta('0190f5b4-0000-7000-8000-00000000f002') $$), 'P0002 file_not_found', 'file_meta of an unreadable file: 404');
select is(pg_temp.outcome_as(:'u2', $$ select * from baas.file_get('0190f5b4-0000-7000-8000-00000000f002') $$), 'P0002 file_not_found', 'file_get: 404');
select is((select count(*)::int from baas.as_user(:'u2'::uuid, format('select * from baas.file_read(%L, 0, 10)',
            (select blob_id from baas.documents where id = '0190f5b4-0000-7000-8000-00000000f002')))), 0, 'file_read of an unreadable blob: no row');
select is(pg_temp.outcome_as(:'u1', $$ select * from baas.file_get('0190f5b4-0000-7000-8000-00000000f001', 9) $$), 'P0002 file_not_found',
          'file_get of another version: 404');

-------------------------------------------------------------------- changing files
select is(pg_temp.outcome_as(:'u2', $$ select baas.update_file('0190f5b4-0000-7000-8000-00000000f001', 'b.txt') $$), '42501 forbidden', 'update_file without update: 403');
select is(pg_temp.outcome_as(:'u1', $$ select baas.update_file('0190f5b4-0000-7000-8000-00000000f001', '..') $$), '22023 invalid_file_name', 'a bad new name: 400');
select is(pg_temp.outcome_as(:'u1', $$ select baas.update_file('0190f5b4-0000-7000-8000-00000000f001', 'b.txt', null, 9) $$), '40001 version_conflict', 'stale: 412');
select is((select x ->> 'name' from baas.as_user(:'u1'::uuid, $$ select baas.update_file('0190f5b4-0000-7000-8000-00000000f001', ' b.txt ', '{"t": 2}') $$) x),
          'b.txt', 'rename and new data');
select is(pg_temp.outcome_as(:'u2', $$ select baas.delete_file('0190f5b4-0000-7000-8000-00000000f001') $$), '42501 forbidden', 'delete_file without delete: 403');
select is(pg_temp.outcome_as(:'u1', $$ select baas.set_file_acl('0190f5b4-0000-7000-8000-00000000f002', '{"read": 1}') $$), '22023 invalid_acl', 'set_file_acl checks the ACL');
-- Replace: the old blob goes, with its chunks.
select blob_id as oldblob from baas.documents where id = '0190f5b4-0000-7000-8000-00000000f001' \gset
select is((select x ->> 'version' from baas.as_user(:'u1'::uuid, $$ select baas.upload_file('pics', 'c.txt', 'text/plain', 'new bytes', '{}', null,
            '0190f5b4-0000-7000-8000-00000000f001', 3, true) $$) x), '4', 'a new version');
select is((select x from baas.as_user(:'u1'::uuid, format('select count(*) from baas._file_chunks where blob_id = %L', :'oldblob')) x),
          '0'::jsonb, 'the old version''s bytes are unreadable at once');
select is((select count(*)::int from baas._blob_trash where blob_id = :'oldblob'), 1, 'and wait in the trash for cleanup_blobs');
select ok(baas.cleanup_blobs() >= 2, 'cleanup_blobs sweeps the trash');
select is((select count(*)::int from baas._blobs where id = :'oldblob') + (select count(*)::int from baas._file_chunks where blob_id = :'oldblob'),
          0, 'the old version''s chunk and blob are gone');

-------------------------------------------------------------------- references
select is(pg_temp.outcome_as(:'u1', $$ select baas.create_document('notes', '{"att": {"$file": "0190f5b4-0000-7000-8000-00000000f002"}}') $$), 'ok',
          'a note references a file');
select is(pg_temp.outcome_as(:'u1', $$ select baas.create_document('notes', '{"att": {"$file": 12}}') $$), '22023 invalid_file_ref', 'a non-id ref: 400');
select is(pg_temp.outcome_as(:'u1', $$ select baas.delete_file('0190f5b4-0000-7000-8000-00000000f002') $$), '23503 file_referenced',
          'a restrict reference by the owner blocks the delete: 409');
select is(pg_temp.message_as(:'u1', $$ select baas.delete_file('0190f5b4-0000-7000-8000-00000000f002') $$),
          'file 0190f5b4-0000-7000-8000-00000000f002 is referenced by a document of a collection whose references keep files (file_refs "restrict"); remove the reference first',
          'the message names neither the referencing document nor its collection');
select is(pg_temp.outcome_as(:'u2', $$ select baas.create_document('notes', '{"x": [{"$file": "0190f5b4-0000-7000-8000-00000000f004"}]}') $$), 'ok',
          'u2''s note refers to u2''s file');
select is(array(select name from baas.unreferenced_files() order by name), '{big.bin,c.txt,empty}', 'unreferenced_files');
-- A service (ownerless) document in a restrict collection blocks too (the contract's
-- "ownerless/service documents"), whoever owns the file.
select baas.create_document('notes', '{"svc": {"$file": "0190f5b4-0000-7000-8000-00000000f004"}}') ->> 'id' as svcnote \gset
select is(pg_temp.outcome_as(:'u2', $$ select baas.delete_file('0190f5b4-0000-7000-8000-00000000f004') $$), '23503 file_referenced',
          'a reference from an ownerless (service) document of a restrict collection blocks the delete: 409');
select count(*) as ok from (select baas.delete_document('notes', :'svcnote')) x \gset
select blob_id as bigblob from baas.documents where id = '0190f5b4-0000-7000-8000-00000000f003' \gset
select bytes as u1_bytes from baas.file_usage() where user_id = :'u1' \gset
select is(pg_temp.outcome_as(:'u1', $$ select baas.delete_file('0190f5b4-0000-7000-8000-00000000f003', 2) $$), 'ok', 'an unreferenced file is deleted');
-- Its bytes are not deleted in the deleting transaction (a large file would run out
-- of statement time): the blob goes to the trash, unreadable and off the quota at once.
select is((select count(*)::int from baas._file_chunks where blob_id = :'bigblob'), 3, 'deleting a file leaves its chunks to the sweep');
select is((select count(*)::int from baas._blob_trash where blob_id = :'bigblob'), 1, 'its blob waits in baas._blob_trash');
select is((select x from baas.as_user(:'u1'::uuid, format('select count(*) from baas._file_chunks where blob_id = %L', :'bigblob')) x),
          '0'::jsonb, 'its chunks are unreadable at once, even for its owner');
select is((select count(*)::int from baas.file_read(:'bigblob', 0, 10)), 0, 'file_read gives nothing of it, even to a DBA');
select is((select bytes from baas.file_usage() where user_id = :'u1'), :'u1_bytes'::bigint - 2097160, 'its bytes leave the owner''s usage (and quota) at once');
select is(baas.cleanup_blobs(2), 2, 'cleanup_blobs deletes at most max rows per call');
select is((select count(*)::int from baas._file_chunks where blob_id = :'bigblob'), 1, 'in batches');
select is(baas.cleanup_blobs(), 2, 'the next call the last chunk and the blob');
select is((select count(*)::int from baas._blobs where id = :'bigblob') + (select count(*)::int from baas._blob_trash), 0,
          'then the blob and the trash are gone');
select is(baas.cleanup_blobs(), 0, 'and nothing is left to sweep');
-- A trashed blob a document holds again (a DBA restored a deleted row with triggers
-- off, as a data-only restore may) leaves the trash with its bytes, instead of losing them to the sweep.
select x ->> 'id' as keep1 from baas.as_user(:'u1'::uuid, $$ select baas.upload_file('pics', 'k1.txt', 'text/plain', 'first bytes') $$) x \gset
select x ->> 'id' as keep2 from baas.as_user(:'u1'::uuid, $$ select baas.upload_file('pics', 'k2.txt', 'text/plain', 'other bytes') $$) x \gset
select blob_id as keepblob from baas.documents where id = :'keep1' \gset
select count(*) as ok from (select baas.delete_file(:'keep1')) x \gset
set local session_replication_role = replica;
update baas.documents set blob_id = :'keepblob' where id = :'keep2';
reset session_replication_role;
select ok(baas.cleanup_blobs() >= 0, 'the sweep runs');
select is((select count(*)::int from baas._blob_trash where blob_id = :'keepblob'), 0, 'the held blob left the trash');
select is((select string_agg(k.data, ''::bytea order by k.off) from baas._file_chunks k where k.blob_id = :'keepblob'),
          'first bytes'::bytea, 'with its bytes');
select count(*) as ok from (select baas.delete_file(:'keep2')) x \gset
select ok(baas.cleanup_blobs() >= 0, 'swept');

-------------------------------------------------------------------- links, thumbnails, DBAs
select is(pg_temp.outcome_as(:'u1', $$ select baas.file_link('0190f5b4-0000-7000-8000-00000000f002', 0) $$), '22023 invalid_request', 'a link of 0 s: 400');
select is(pg_temp.outcome_as(null, $$ select baas.file_link('0190f5b4-0000-7000-8000-00000000f002') $$), '42501 not_authenticated', 'anonymous links: 401');
select is(pg_temp.outcome_as(:'u2', $$ select baas.file_link('0190f5b4-0000-7000-8000-00000000f002') $$), 'P0002 file_not_found', 'a link to an unreadable file: 404');
select is(pg_temp.outcome_as(:'u2', format('select baas._file_link_sign(%L, 1, 60)', '0190f5b4-0000-7000-8000-00000000f002')),
          'P0002 file_not_found', '_file_link_sign called directly: no link to a file the caller may not read');
select is(pg_temp.outcome_as(null, format('select baas._file_link_sign(%L, 1, 60)', '0190f5b4-0000-7000-8000-00000000f001')),
          '42501 not_authenticated', '_file_link_sign called directly: anonymous callers get no link');
select is(pg_temp.outcome_as(:'u1', format('select baas._file_link_sign(%L, 7, 60)', '0190f5b4-0000-7000-8000-00000000f002')),
          'P0002 file_not_found', '_file_link_sign called directly: only for the file''s current version');
select is(pg_temp.outcome_as(:'u1', format('select baas._file_link_sign(%L, 1, 60)', '0190f5b4-0000-7000-8000-00000000f002')),
          'ok', '_file_link_sign: the owner may');
select x as link from baas.as_user(:'u1'::uuid, $$ select baas.file_link('0190f5b4-0000-7000-8000-00000000f002', 60) $$) x \gset
select is((select convert_from(decode(rpad(translate(p, '-_', '+/'), (length(p) + 3) / 4 * 4, '='), 'base64'), 'utf8')::jsonb
             - 'iat' - 'exp' - 'iss'
             from split_part(:'link'::jsonb ->> 'token', '.', 2) p),
          jsonb_build_object('aud', 'pgbaas:file', 'sub', :'u1', 'role', 'baas_user', 'sid', null,
                             'is_anonymous', false, 'aal', 'aal1', 'fid', '0190f5b4-0000-7000-8000-00000000f002', 'ver', 1),
          'a link''s token: audience <audience>:file, bound to the user (its anonymity and assurance level), the file and its version');
select is((select (p::jsonb -> 'exp')::bigint - (p::jsonb -> 'iat')::bigint
             from convert_from(decode(rpad(translate(split_part(:'link'::jsonb ->> 'token', '.', 2), '-_', '+/'),
                  (length(split_part(:'link'::jsonb ->> 'token', '.', 2)) + 3) / 4 * 4, '='), 'base64'), 'utf8') p),
          60::bigint, 'expiring after the ttl asked');
select is(:'link'::jsonb ->> 'url', '/v1/files/0190f5b4-0000-7000-8000-00000000f002?sig=' || (:'link'::jsonb ->> 'token'), 'and its url');
-- Thumbnails: every reader is served what is stored, so only the proxy's login role
-- may store one (the proxy's own output); no API role can, not even the owner.
select is(pg_temp.outcome_as(:'u1', format('select baas.thumbnail_put(%L, 10, 8, ''cover'', ''image/png'', ''\x89504e470d0a1a0a0000000d49484452'')',
            (select blob_id from baas.documents where id = '0190f5b4-0000-7000-8000-00000000f002'))), '42501 ',
          'an API role cannot store a thumbnail every reader is served (not even the owner)');
select is(pg_temp.sqlstate_as('baas_service', format('select baas.thumbnail_put(%L, 10, 8, ''cover'', ''image/png'', ''\x89504e470d0a1a0a0000000d49484452'')',
            (select blob_id from baas.documents where id = '0190f5b4-0000-7000-8000-00000000f002'))), '42501', 'nor the service role');
select is((select count(*)::int from pg_proc where proname = '_thumbnail_insert'), 0, 'and no definer step stores one for them');
select is(pg_temp.detail_of(format($$ set local role baas_authenticator; select baas.thumbnail_put(%L, 10, 8, 'cover', 'text/html', '<script>x</script>') $$,
            (select blob_id from baas.documents where id = '0190f5b4-0000-7000-8000-00000000f001'))), '22023 invalid_request',
          'the proxy''s role: never HTML');
select is(pg_temp.detail_of(format($$ set local role baas_authenticator; select baas.thumbnail_put(%L, 10, 8, 'cover', 'image/jpeg', '\x89504e470d0a1a0a0000000d49484452') $$,
            (select blob_id from baas.documents where id = '0190f5b4-0000-7000-8000-00000000f001'))), '22023 invalid_request',
          'nor bytes that are not what the declared image type says (PNG bytes declared JPEG)');
select is(pg_temp.detail_of($$ set local role baas_authenticator; select baas.thumbnail_put(gen_random_uuid(), 10, 8, 'cover', 'image/png', '\x89504e470d0a1a0a0000000d49484452') $$),
          'P0002 file_not_found', 'nor of a blob no file holds');
select is(pg_temp.detail_of(format($$ set local role baas_authenticator; select baas.thumbnail_put(%L, 10, 8, 'cover', 'image/png', '\x89504e470d0a1a0a0000000d49484452'); reset role $$,
            (select blob_id from baas.documents where id = '0190f5b4-0000-7000-8000-00000000f002'))), null, 'the proxy''s login role stores a thumbnail');
select is((select x ->> 'data' from baas.as_user(:'u1'::uuid, $$ select * from baas.thumbnail_get('0190f5b4-0000-7000-8000-00000000f002', 10, 8, 'cover') $$) x),
          '\x89504e470d0a1a0a0000000d49484452', 'thumbnail_get returns it');
select is((select (x ->> 'meta')::jsonb -> 'thumbnail' from baas.as_user(:'u1'::uuid, $$ select * from baas.thumbnail_get('0190f5b4-0000-7000-8000-00000000f002', 10, 8, 'cover') $$) x),
          '{"content_type": "image/png", "width": 10, "height": 8, "fit": "cover"}', 'with the file''s metadata and the thumbnail''s');
select is((select count(*)::int from baas.as_user(:'u1'::uuid, $$ select * from baas.thumbnail_get('0190f5b4-0000-7000-8000-00000000f002', 10, 8, 'contain') $$)),
          0, 'another size or fit: not cached');
select is(pg_temp.detail_of($$ select baas.set_bucket('pics', '{"realtime": false}') $$), '22023 invalid_options', 'set_bucket takes file options only');
select is(pg_temp.detail_of($$ select baas.set_bucket('pics', '{"bucket": false}') $$), '22023 invalid_options', 'a bucket with files stays one');
select is(baas.set_bucket('pics', '{"file_refs": "restrict"}') -> 'options' ->> 'file_refs', 'restrict', 'set_bucket changes an option');
select is_empty($$ select * from baas.security_lints() $$, 'the lints are clean with files');
drop policy file_chunks_read on baas._file_chunks;
create policy file_chunks_read on baas._file_chunks for select to baas_anon, baas_user using (true);
grant insert on baas._blobs to baas_user;
select is(array(select lint || ' ' || object from baas.security_lints() where lint like 'file%' order by 1),
          '{"file_policy_drift policy file_chunks_read on baas._file_chunks","file_table_grant baas._blobs to baas_user"}',
          'file_policy_drift and file_table_grant catch a widened chunk policy and a write grant');

select * from finish();
rollback;
