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

-- Tell every proxy that the extension changed (see pgbaas--0.2.0--0.3.0.sql).
select pg_catalog.pg_notify('baas_extension', '0.6.0');
