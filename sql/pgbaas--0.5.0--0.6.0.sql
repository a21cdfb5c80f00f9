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

-- sql/files.sql (review of issue 15, second pass; sql/CHANGES-0.6.0.md says why).
-- Tables first: the functions below use the new column and table.
alter table baas._uploads add column client_ip text;
create table baas._blob_trash (
    blob_id uuid primary key references baas._blobs (id) on delete cascade,
    since timestamptz not null default now()
);
-- The sweep takes the oldest first, a batch at a time, without sorting the backlog.
create index blob_trash_since_idx on baas._blob_trash (since, blob_id);
revoke all on baas._blob_trash from public;
alter table baas._blob_trash enable row level security;
select pg_catalog.pg_extension_config_dump('baas._blob_trash', '');

-- One quota check (finding 12), telling only the payer what is left (finding 8).
create or replace function baas._quota_check(payer uuid, size bigint, old bigint, except_id uuid) returns void
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

create or replace function baas._upload_payer(u baas._uploads, out payer uuid, out old bigint)
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

drop function baas._raise_quota(bigint, bigint);

-- One-shot sessions (baas.upload_file) live in their transaction only (finding 2).
create or replace function baas._upload_get(upload_id uuid) returns baas._uploads
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

-- The open-session cap: anonymous callers per client address; one-shot sessions are
-- not counted (finding 2). A replace through the direct step answers as upload_create
-- (not found / forbidden), as before. New parameter `oneshot`: dropped and made anew.
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
revoke execute on function baas._client_net() from public;

create or replace function baas._uploads_drop_blob() returns trigger
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

drop function baas._upload_insert(integer, uuid, boolean, bigint, bigint, text, text, jsonb, jsonb, bytea);
create or replace function baas._upload_insert(collection_id integer, file_id uuid, replace boolean, expected_version bigint,
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

-------------------------------------------------------------------- refresh retries (issue 16, item 9)
-- sql/accounts.sql
------------------------------------------------------------------------ refresh retries
-- Two refreshes racing from one app (two tabs, a retry after a timeout) present the
-- same refresh token. Within refresh_reuse_interval of its first use a spent token gets
-- the pair that use made (a new access token, the same refresh token) instead of
-- revoking its session; after it, reuse still revokes (baas.refresh in sql/auth.sql).
-- 0 turns retries off.
alter table baas.settings add column refresh_reuse_interval interval not null default '10 seconds'
    check (refresh_reuse_interval between '0' and '5 minutes');
-- The refresh token a spent one was exchanged for, sealed with a key made from the spent
-- token (baas._refresh_seal): the table holds no refresh token a reader could use.
alter table baas.refresh_tokens add column successor bytea;

-- sql/auth.sql
-- A token pair for session p_sid: a new refresh token of its family and an access token.
create or replace function baas._token_response(u baas.users, p_sid uuid) returns jsonb
language plpgsql volatile
as $$
declare
    v_refresh text := baas._new_refresh_token();
begin
    insert into baas.refresh_tokens (token_hash, session_id)
    values (baas._hash_token(v_refresh), p_sid);
    return baas._token_json(u, p_sid, v_refresh);
end
$$;

-- The answer carrying refresh token p_refresh (already stored) and a new access token.
create function baas._token_json(u baas.users, p_sid uuid, p_refresh text) returns jsonb
language plpgsql volatile
as $$
begin
    return pg_catalog.jsonb_build_object(
        'user', baas._user_json(u),
        'access_token', baas._access_token(u.id, p_sid, u.email),
        'token_type', 'bearer',
        'expires_in', (select extract(epoch from access_token_ttl)::int from baas.settings),
        'refresh_token', p_refresh);
end
$$;

-- A refresh token's successor is kept sealed with a key made from the spent token, which
-- the table does not hold (only its SHA-256): only whoever presents the spent token can
-- open it. XOR of the token's 32 bytes with SHA-256 of a label and the spent token, so
-- the same function seals and opens; null for anything that is not one of our tokens.
create function baas._refresh_mask(spent text, bytes bytea) returns bytea
language plpgsql immutable strict
set search_path = pg_catalog, pg_temp
as $$
declare
    k bytea := sha256(convert_to('pgbaas refresh successor:' || spent, 'UTF8'));
    b bytea := bytes;
begin
    if length(b) <> 32 then
        return null;
    end if;
    for i in 0..31 loop
        b := set_byte(b, i, get_byte(b, i) # get_byte(k, i));
    end loop;
    return b;
end
$$;

create function baas._refresh_seal(spent text, successor text) returns bytea
language sql immutable strict
set search_path = pg_catalog, pg_temp
as $$
    select baas._refresh_mask(spent, decode(translate(successor, '-_', '+/') || '=', 'base64'))
     where successor ~ '^[A-Za-z0-9_-]{43}$'
$$;

create function baas._refresh_open(spent text, sealed bytea) returns text
language sql immutable strict
set search_path = pg_catalog, pg_temp
as $$
    select rtrim(translate(encode(baas._refresh_mask(spent, sealed), 'base64'), '+/', '-_'), '=')
$$;

create or replace function baas.refresh(refresh_token text) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    t baas.refresh_tokens;
    n baas.refresh_tokens;
    s baas.sessions;
    u baas.users;
    v_next text;
    v_retry boolean;
    v_window interval;
begin
    if refresh.refresh_token is null or length(refresh.refresh_token) > 256 then
        perform baas._raise('28000', 'invalid_refresh_token', 'refresh token is not valid');
    end if;
    select * into t from baas.refresh_tokens
     where token_hash = baas._hash_token(refresh.refresh_token)
       for update;
    if not found then
        perform baas._raise('28000', 'invalid_refresh_token', 'refresh token is not valid');
    end if;
    select * into s from baas.sessions where id = t.session_id for update;
    if s.revoked_at is not null or s.expires_at <= now() then
        perform baas._raise('28000', 'invalid_refresh_token', 'refresh token is not valid');
    end if;
    if t.used_at is not null then
        -- A retry within refresh_reuse_interval of the token's first use (two tabs, a
        -- retry after a timeout): the pair that use made, i.e. the same refresh token
        -- and a new access token. Successors spent within the interval too are followed
        -- to the newest unspent one (16 at most: more inside the interval is no retry).
        -- Wall-clock time on both sides, not now(): a caller's transaction may have
        -- begun before the token was spent, and would then count as within forever.
        select x.refresh_reuse_interval into v_window from baas.settings x;
        v_next := refresh.refresh_token;
        n := t;
        v_retry := false;
        for i in 1..16 loop
            exit when n.successor is null or v_window <= interval '0' or clock_timestamp() - n.used_at > v_window;
            v_next := baas._refresh_open(v_next, n.successor);
            select * into n from baas.refresh_tokens x
             where x.token_hash = baas._hash_token(v_next) and x.session_id = s.id;
            exit when not found;
            if n.used_at is null then
                v_retry := true;
                exit;
            end if;
        end loop;
        if v_retry then
            perform baas._audit('refresh.retry', s.user_id, details => jsonb_build_object('session', s.id));
            select * into strict u from baas.users where id = s.user_id;
            return baas._token_json(u, s.id, v_next);
        end if;
        -- A spent token came back: someone holds a copy. End the whole family. This
        -- must commit, so it is reported as a result, not raised (raising would roll
        -- the revocation back).
        update baas.sessions set revoked_at = now(), revoked_reason = 'refresh_token_reuse'
         where id = s.id;
        raise warning 'pgbaas: refresh token reuse detected; session % revoked', s.id;
        perform baas._audit('refresh.reuse', s.user_id, details => jsonb_build_object('session', s.id));
        return jsonb_build_object('error', jsonb_build_object(
            'code', 'refresh_token_reused',
            'message', 'this refresh token was already used; its session has been revoked'));
    end if;
    v_next := baas._new_refresh_token();
    insert into baas.refresh_tokens (token_hash, session_id) values (baas._hash_token(v_next), s.id);
    update baas.refresh_tokens
       set used_at = clock_timestamp(), successor = baas._refresh_seal(refresh.refresh_token, v_next)
     where token_hash = t.token_hash;
    -- A successor is kept only as long as a retry may ask for it (the interval is at
    -- most 5 minutes): after that an old spent token, leaked, opens nothing.
    update baas.refresh_tokens set successor = null
     where session_id = s.id and successor is not null and used_at < clock_timestamp() - interval '5 minutes';
    update baas.sessions set refreshed_at = now() where id = s.id;
    select * into strict u from baas.users where id = s.user_id;
    return baas._token_json(u, s.id, v_next);
end
$$;
comment on function baas.refresh(text) is
    'Rotate a refresh token: a new pair; within refresh_reuse_interval of its first use a spent token gets the pair that use made; later it revokes its session and returns {"error": {"code": "refresh_token_reused"}}';

create or replace function baas.purge_sessions() returns bigint
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    with gone as (
        delete from baas.sessions
         where expires_at < now() - interval '1 day'
            or revoked_at < now() - interval '1 day'
        returning 1),
    -- Sealed successors past the longest refresh_reuse_interval (baas.refresh drops
    -- them too, per session, when it next runs).
    unsealed as (
        update baas.refresh_tokens set successor = null
         where successor is not null and used_at < clock_timestamp() - interval '5 minutes')
    select count(*) from gone
$$;
comment on function baas.purge_sessions() is 'Delete sessions that expired or were revoked more than a day ago, and drop refresh tokens'' sealed successors past the reuse interval';
-- As sql/grants.sql does for a fresh install: no function is executable by PUBLIC.
revoke execute on function baas._token_json(baas.users, uuid, text), baas._refresh_mask(text, bytea),
    baas._refresh_seal(text, text), baas._refresh_open(text, bytea) from public;

-------------------------------------------------------------------- live feeds: one role trigger function
-- sql/realtime.sql: the two role trigger functions, which differed only in kind and
-- column names, become one; the triggers keep their names.
drop trigger role_members_realtime on baas.role_members;
drop trigger role_roles_realtime on baas.role_roles;
drop function baas._realtime_role_member();
drop function baas._realtime_role_role();
-- A role membership (baas.role_members: kind "member", body `user`) or a role nesting
-- (baas.role_roles: kind "nest", body `member_role`) added or removed; an update is a
-- remove and an add. One function for both tables: the row is read as JSON, so the
-- column that differs is picked by name.
create function baas._realtime_role_change() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_prefix text;
    v_member boolean := tg_table_name = 'role_members';
    v_kind text := case when v_member then 'member' else 'nest' end;
    v_key text := case when v_member then 'user' else 'member_role' end;
    v_column text := case when v_member then 'user_id' else 'member_role' end;
begin
    if current_setting('wal_level') <> 'logical'
       or (current_setting('row_security') = 'off' and baas._restoring()) then
        return null;
    end if;
    select p.prefix into v_prefix from baas._realtime_secret p;
    if tg_op in ('DELETE', 'UPDATE') then
        perform pg_logical_emit_message(true, v_prefix, jsonb_build_object('kind', v_kind, 'collection', null, 'body',
            jsonb_build_object(v_key, to_jsonb(old) -> v_column, 'role', old.role, 'op', 'remove'))::text);
    end if;
    if tg_op in ('INSERT', 'UPDATE') then
        perform pg_logical_emit_message(true, v_prefix, jsonb_build_object('kind', v_kind, 'collection', null, 'body',
            jsonb_build_object(v_key, to_jsonb(new) -> v_column, 'role', new.role, 'op', 'add'))::text);
    end if;
    return null;
end
$$;
create trigger role_members_realtime after insert or update or delete on baas.role_members
    for each row execute function baas._realtime_role_change();
create trigger role_roles_realtime after insert or update or delete on baas.role_roles
    for each row execute function baas._realtime_role_change();
revoke execute on function baas._realtime_role_change() from public;

-------------------------------------------------------------------- email spellings (issue 16, item 10)
-- The library (the pgbaas-email crate behind baas._normalize_email and _email_key) now
-- keeps one spelling of an address: the local part in Unicode NFC, the domain by IDNA
-- in punycode. Stored addresses are rewritten to it. Two accounts whose addresses
-- become one stop the update, named, for a DBA to rename or remove one of them first.
do $email$
declare
    v_clash text;
begin
    select string_agg(x.accounts, '; ') into v_clash
      from (select string_agg(format('%s (id %s)', u.email, u.id), ' and ' order by u.id) as accounts
              from baas.users u
             where baas._email_key(u.email) is not null
             group by baas._email_key(u.email)
            having count(*) > 1) x;
    if v_clash is not null then
        raise exception using errcode = '23505',
            message = 'pgbaas 0.6.0 keeps one spelling of each email address, and these accounts would share one: ' || v_clash,
            hint = 'change the email of one account of each pair (update baas.users), then run ALTER EXTENSION pgbaas UPDATE again';
    end if;
    update baas.users u set email = baas._email_key(u.email)
     where baas._email_key(u.email) is not null and u.email <> baas._email_key(u.email);
end
$email$;

create or replace function baas._upload_open(collection text, name text, content_type text, length bigint, data jsonb, acl jsonb,
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

create or replace function baas.upload_create(collection text, name text, content_type text, length bigint,
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
    -- Pieces of at most 1 MiB (what a chunk holds).
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

create or replace function baas._upload_seal(upload_id uuid) returns baas._uploads
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

create or replace function baas.upload_file(collection text, name text, content_type text, bytes bytea,
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

revoke execute on function
    baas._quota_check(uuid, bigint, bigint, uuid),
    baas._upload_payer(baas._uploads),
    baas._upload_insert(integer, uuid, boolean, bigint, bigint, text, text, jsonb, jsonb, bytea, boolean),
    baas._upload_open(text, text, text, bigint, jsonb, jsonb, uuid, bigint, boolean, bytea, boolean)
  from public;
grant execute on function
    baas._upload_open(text, text, text, bigint, jsonb, jsonb, uuid, bigint, boolean, bytea, boolean),
    baas._upload_insert(integer, uuid, boolean, bigint, bigint, text, text, jsonb, jsonb, bytea, boolean)
  to baas_anon, baas_user, baas_service;

-- A deleted or replaced file's bytes (and an ended upload's) go to baas._blob_trash
-- and are swept in batches by baas.cleanup_blobs from the proxy's cleanup service,
-- not deleted in the request's transaction (finding 3). file_read reads only blobs a
-- document holds.
create or replace function baas._documents_files() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    insert into baas._blob_trash (blob_id) values (old.blob_id) on conflict do nothing;
    return null;
end
$$;

create or replace function baas.cleanup_blobs(max integer default 64) returns integer
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

create or replace function baas.file_read(blob_id uuid, at bigint, max integer) returns table (data bytea)
language plpgsql stable
as $$
begin
    -- A blob a document holds and the caller may read (the policies decide): not one
    -- waiting in baas._blob_trash, even for the service role.
    if not exists (select from baas.documents d where d.blob_id = file_read.blob_id) then
        return;
    end if;
    return query select baas._blob_piece(file_read.blob_id, coalesce(file_read.at, 0), coalesce(file_read.max, 1048576));
end
$$;

revoke execute on function baas.cleanup_blobs(integer) from public;
grant execute on function baas.cleanup_blobs(integer) to baas_authenticator;

-- 409 file_referenced names neither the referencing document nor its collection (finding 8).
create or replace function baas._file_delete_check() returns trigger
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

-- _file_link_sign makes file_link's checks itself; thumbnails are stored by the proxy's
-- login role alone (finding 6).
create or replace function baas._file_link_sign(fid uuid, ver bigint, ttl integer) returns jsonb
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
        'sid', v_claims -> 'sid', 'fid', fid, 'ver', ver, 'iat', v_now, 'exp', v_now + ttl));
    return jsonb_build_object('url', format('/v1/files/%s?sig=%s', fid, v_token), 'token', v_token,
                              'expires_at', to_timestamp(v_now + ttl));
end
$$;

drop function baas._thumbnail_insert(uuid, integer, integer, text, text, bytea);
create or replace function baas.thumbnail_put(blob_id uuid, width int, height int, fit text, content_type text, data bytea)
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
revoke execute on function baas.thumbnail_put(uuid, integer, integer, text, text, bytea) from baas_anon, baas_user, baas_service;
grant execute on function baas.thumbnail_put(uuid, integer, integer, text, text, bytea) to baas_authenticator;

-- sql/documents.sql: drop_role scrubs the role from unfinished uploads' ACLs (finding 7).
create or replace function baas.drop_role(name text) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    p text := 'role:' || name;
begin
    perform baas._role_must_exist(name);
    -- The role leaves every ACL it was in, so that a role created later under the same
    -- name starts with no access (documents it was in change version, audited).
    update baas.documents d set acl_read = array_remove(d.acl_read, p), acl_update = array_remove(d.acl_update, p),
                                acl_delete = array_remove(d.acl_delete, p)
     where p = any(d.acl_read) or p = any(d.acl_update) or p = any(d.acl_delete);
    update baas.collections c set create_acl = array_remove(c.create_acl, p),
           default_read = array_remove(c.default_read, p), default_update = array_remove(c.default_update, p),
           default_delete = array_remove(c.default_delete, p)
     where p = any(c.create_acl || c.default_read || c.default_update || c.default_delete);
    -- And the ACLs unfinished uploads will give their files (sql/files.sql): applied at
    -- the finish, they would grant a later role of the same name.
    update baas._uploads x set acl = (select jsonb_object_agg(e.key, e.value - p) from jsonb_each(x.acl) e)
     where x.acl is not null and exists (select from jsonb_each(x.acl) e where e.value ? p);
    delete from baas.roles r where r.name = drop_role.name;
end
$$;

-- sql/lints.sql: the exposed-internal list and the file tables follow the changes above.
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
           '_find_page', '_find_compiled', '_count_compiled', '_btree_index_id', '_jfield',
           '_jsonb_lp_eq', '_jsonb_lp_lt', '_jsonb_lp_le', '_jsonb_lp_gt', '_jsonb_lp_ge',
           '_jsonb_lp_cmp', '_jsonb_lp_contains',
           -- files (sql/files.sql, sql/grants.sql)
           '_upload_append', '_upload_lease', '_upload_rewind', '_upload_release', '_file_json', '_file_row',
           '_explain_file_miss', '_blob_piece', '_file_max_bytes', '_raise_too_large',
           '_quota_left', '_upload_open', '_upload_insert', '_upload_seal', '_upload_done', '_may_attach_blob',
           '_blob_file_json', '_file_link_sign', '_check_file_name',
           '_normalize_content_type', '_file_type_allowed'])
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
$$;
comment on function baas.security_lints() is
    'Security lints (no rows = clean): unforced RLS on API-readable tables, SECURITY DEFINER without search_path, PUBLIC execute, exposed internal functions, undocumented public functions, policies that drifted from their one rule (documents and files), write grants on file tables, policies reading user-editable data';

-- Tell every proxy that the extension changed (see pgbaas--0.2.0--0.3.0.sql).
select pg_catalog.pg_notify('baas_extension', '0.6.0');
