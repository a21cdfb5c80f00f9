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

-------------------------------------------------------------------- accounts (issue 16, package A)
-- sql/accounts.sql, account lifecycle: new columns (before email's, as in a fresh
-- install), the token and factor tables, the one sign-in funnel.
-- Issue 16 (docs/design/issue-16-accounts.md, package A): anonymous accounts, verified
-- email, suspension, multi-factor sign-in, sessions a user can list, what happens to a
-- deleted owner's documents. The columns come first, in the order an upgraded database
-- gets them (sql/pgbaas--0.6.0--0.7.0.sql adds them in this order too).

-- An anonymous account has neither email nor password (sign_in_anonymously); an account
-- made from a sign-in provider may have no password.
alter table baas.users alter column email drop not null;
alter table baas.users alter column password_hash drop not null;
alter table baas.users
    add column is_anonymous boolean not null default false,
    add column email_verified_at timestamptz,
    add column suspended_at timestamptz,
    add column suspended_reason text check (length(suspended_reason) <= 500),
    add column language text check (language ~ '^[a-z]{2,3}(-[a-z0-9]{2,8})*$'),
    add constraint users_anonymous check (not is_anonymous or (email is null and password_hash is null));

-- What a session is worth (aal 2 after a second factor), how it began (amr, RFC 8176
-- words), and what its owner sees in a list of their sessions.
alter table baas.sessions
    add column aal smallint not null default 1 check (aal in (1, 2)),
    add column amr text[] not null default '{pwd}',
    add column user_agent text check (length(user_agent) <= 256),
    add column ip inet,
    add column device_id text,
    add column last_used_at timestamptz;

alter table baas.settings
    -- off: nothing is mailed at sign-up (as before 0.7.0); flag: a verification mail is
    -- sent and users carry email_verified; required: no password sign-in before it.
    add column email_verification text not null default 'off'
        check (email_verification in ('off', 'flag', 'required')),
    add column anonymous_sign_in boolean not null default false,
    add column magic_link_signup boolean not null default false,
    add column email_link_ttl interval not null default '1 hour'
        check (email_link_ttl between '1 minute' and '1 day'),
    add column email_verify_ttl interval not null default '24 hours'
        check (email_verify_ttl between '1 hour' and '30 days'),
    add column email_min_interval interval not null default '60 seconds'
        check (email_min_interval between '0' and '1 hour'),
    add column email_max_per_hour integer not null default 5
        check (email_max_per_hour between 1 and 100),
    add column mfa_issuer text check (length(mfa_issuer) between 1 and 100);

alter table baas.collections
    add column on_owner_delete text not null default 'delete'
        check (on_owner_delete in ('delete', 'orphan', 'transfer')),
    add column owner_heir uuid references baas.users (id) on delete set null,
    add column require_aal2 boolean not null default false;

-- Secrets mailed to a user (links and codes) and multi-factor tickets: only their SHA-256
-- is kept; each is single use, expiring, and allows 5 wrong codes. Not dumped: a restore
-- must not bring old links back to life.
create table baas._auth_tokens (
    token_hash bytea primary key check (length(token_hash) = 32),
    kind text not null
        check (kind in ('verify_email', 'reset_password', 'magic_link', 'email_change', 'mfa')),
    user_id uuid references baas.users (id) on delete cascade,   -- null: magic-link sign-up
    email text,                                                   -- where it went
    code_hash bytea,                                              -- sha256(kind:email:code)
    data jsonb not null default '{}',
    attempts smallint not null default 0,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    used_at timestamptz
);
create index auth_tokens_user_idx on baas._auth_tokens (user_id, kind);
create index auth_tokens_code_idx on baas._auth_tokens (email, kind) where used_at is null;
revoke all on baas._auth_tokens from public;
alter table baas._auth_tokens enable row level security;

-- Time-based one-time password factors (RFC 6238) and single-use recovery codes.
create table baas._mfa_factors (
    id uuid primary key,
    user_id uuid not null references baas.users (id) on delete cascade,
    kind text not null default 'totp' check (kind = 'totp'),
    secret bytea not null check (length(secret) = 20),
    status text not null check (status in ('unverified', 'verified')),
    friendly_name text check (length(friendly_name) between 1 and 100),
    last_used_step bigint not null default 0,
    created_at timestamptz not null default now(),
    verified_at timestamptz
);
create unique index mfa_one_totp on baas._mfa_factors (user_id) where status = 'verified';
create index mfa_factors_user_idx on baas._mfa_factors (user_id);
revoke all on baas._mfa_factors from public;
alter table baas._mfa_factors enable row level security;
select pg_catalog.pg_extension_config_dump('baas._mfa_factors', '');

create table baas._mfa_recovery_codes (
    user_id uuid not null references baas.users (id) on delete cascade,
    code_hash bytea not null,
    used_at timestamptz,
    primary key (user_id, code_hash)
);
revoke all on baas._mfa_recovery_codes from public;
alter table baas._mfa_recovery_codes enable row level security;
select pg_catalog.pg_extension_config_dump('baas._mfa_recovery_codes', '');

-- The user as the API shows it. Re-created here (auth.sql's comes before these columns).
create or replace function baas._user_json(u baas.users) returns jsonb
language sql stable parallel safe
as $$
    select pg_catalog.jsonb_build_object(
        'id', u.id, 'email', u.email, 'data', u.data,
        'is_anonymous', u.is_anonymous, 'email_verified', u.email_verified_at is not null,
        'created_at', u.created_at, 'updated_at', u.updated_at)
$$;

-- The one way into a session for every sign-in method (password, emailed link or code,
-- identity provider, anonymous): refuses a suspended account, applies
-- email_verification = 'required' to password sign-ins, and turns the sign-in of an
-- account with a verified second factor into a five-minute ticket for baas.mfa_challenge
-- instead of tokens. method: an RFC 8176 amr word ('pwd', 'email', 'oidc', 'anonymous').
-- Refusals are answered {"error": {...}}, not raised, so that what the caller did before
-- (a counted attempt, a spent token) commits.
create function baas._complete_sign_in(u baas.users, method text, device_id text) returns jsonb
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_ticket text;
    v_factors jsonb;
    v_suspended timestamptz;
begin
    -- The row as it is now, locked against baas.suspend_user until this transaction
    -- ends: the caller read u earlier (before waiting for its turn and hashing a
    -- password), and a suspension committed since must not be missed, nor one that
    -- begins now miss the session made here.
    select x.suspended_at into v_suspended from baas.users x where x.id = u.id for key share;
    if u.suspended_at is not null or v_suspended is not null then
        perform baas._audit('login.suspended', u.id, details => jsonb_build_object('method', method));
        return jsonb_build_object('error', jsonb_build_object(
            'code', 'account_suspended', 'message', 'this account is suspended'));
    end if;
    if method = 'pwd' and u.email_verified_at is null and not u.is_anonymous
       and (select s.email_verification from baas.settings s) = 'required' then
        return jsonb_build_object('error', jsonb_build_object(
            'code', 'email_not_verified',
            'message', 'this account''s email address is not verified yet; follow the link that was mailed to it'));
    end if;
    select jsonb_agg(jsonb_build_object('id', f.id, 'type', f.kind, 'friendly_name', f.friendly_name))
      into v_factors
      from baas._mfa_factors f where f.user_id = u.id and f.status = 'verified';
    if v_factors is not null then
        v_ticket := baas._new_refresh_token();
        insert into baas._auth_tokens (token_hash, kind, user_id, data, expires_at)
        values (baas._hash_token(v_ticket), 'mfa', u.id,
                jsonb_build_object('method', method, 'device_id', device_id),
                now() + interval '5 minutes');
        return jsonb_build_object('mfa_required', true, 'mfa_token', v_ticket,
                                  'factors', v_factors, 'expires_in', 300);
    end if;
    return baas._new_session(u, 1::smallint, array[method], device_id);
end
$$;

-- sql/auth.sql: tokens say what their session is worth (aal, amr, is_anonymous); sessions
-- record how they began; every sign-in goes through baas._complete_sign_in.
drop function baas._access_token(uuid, uuid, text);
drop function baas._new_session(baas.users);
-- An access token for user u in session s. Besides who and which session, it says what
-- the session is worth: aal ('aal1', or 'aal2' after a second factor), amr (how it
-- began, RFC 8176 words) and is_anonymous, for policies and for the app.
create function baas._access_token(u baas.users, s baas.sessions) returns text
language plpgsql stable
as $$
declare
    st baas.settings;
    k record;
    v_now bigint := extract(epoch from pg_catalog.now())::bigint;
begin
    select * into strict st from baas.settings;
    select kid, secret into k from baas._signing_keys
     where retired_at is null order by created_at desc limit 1;
    if not found then
        perform baas._raise('55000', 'no_signing_key',
            'pgbaas has no active signing key; run select baas.rotate_signing_key()');
    end if;
    return baas._sign_jwt(k.kid, k.secret, pg_catalog.jsonb_build_object(
        'iss', st.issuer,
        'aud', st.audience,
        'sub', u.id,
        'role', 'baas_user',
        'sid', s.id,
        'email', u.email,
        'is_anonymous', u.is_anonymous,
        'aal', 'aal' || s.aal,
        'amr', pg_catalog.to_jsonb(s.amr),
        'iat', v_now,
        'exp', v_now + extract(epoch from st.access_token_ttl)::bigint));
end
$$;

-- A new session for u and its first token pair. Every sign-in reaches it through
-- baas._complete_sign_in (sql/accounts.sql), which decides whether u may have one.
-- The user agent and address are what the proxy set for this request (shown to the
-- user in baas.list_sessions).
create function baas._new_session(u baas.users, aal smallint, amr text[], device_id text) returns jsonb
language plpgsql volatile
as $$
declare
    v_sid uuid := baas.uuid7();
begin
    insert into baas.sessions (id, user_id, expires_at, aal, amr, user_agent, ip, device_id, last_used_at)
    select v_sid, u.id, pg_catalog.now() + s.refresh_token_ttl, _new_session.aal, _new_session.amr,
           pg_catalog.left(nullif(pg_catalog.current_setting('baas.user_agent', true), ''), 256),
           baas._client_ip(), _new_session.device_id, pg_catalog.now()
      from baas.settings s;
    return baas._token_response(u, v_sid);
end
$$;

-- The answer carrying refresh token p_refresh (already stored) and a new access token.
create or replace function baas._token_json(u baas.users, p_sid uuid, p_refresh text) returns jsonb
language plpgsql volatile
as $$
begin
    return pg_catalog.jsonb_build_object(
        'user', baas._user_json(u),
        'access_token', baas._access_token(u, (select x from baas.sessions x where x.id = p_sid)),
        'token_type', 'bearer',
        'expires_in', (select extract(epoch from access_token_ttl)::int from baas.settings),
        'refresh_token', p_refresh);
end
$$;

create or replace function baas.signup(email text, password text, data jsonb default '{}') returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    return baas._new_session(baas._create_account(email, password, data, 'signup'), 1::smallint, '{pwd}', null);
end
$$;
comment on function baas.signup(text, text, jsonb) is
    'Create an account and sign it in: {user, access_token, token_type, expires_in, refresh_token}';

-- Sign in. device_id: an identifier the app keeps for this install (a hint, never a
-- credential: it only lets a device that signed in before skip waits other sources
-- caused); refresh_token: a live refresh token of the account, which does the same
-- without being spent. Failures make their source wait (sql/audit.sql, sign-in
-- throttling): {"error": {"code": "too_many_attempts", "retry_after": seconds}}.
create or replace function baas.login(email text, password text, device_id text default null,
                           refresh_token text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    u baas.users;
    v_key text;
    v_session uuid;
    v_owner uuid;
    g record;
    v_rehash text;
begin
    if login.email is null or login.password is null then
        perform baas._raise('22023', 'invalid_request', 'email and password are required');
    end if;
    if octet_length(login.password) > 1024 then
        perform baas._raise('22001', 'password_too_long', 'password must be at most 1024 bytes');
    end if;
    if login.device_id is not null and login.device_id !~ '^[A-Za-z0-9._:-]{1,128}$' then
        perform baas._raise('22023', 'invalid_request',
            'device_id must be 1 to 128 characters from A-Z, a-z, 0-9 and . _ : -');
    end if;
    v_key := baas._email_for_audit(login.email);
    select * into u from baas.users where email = baas._email_key(login.email);
    -- One attempt per typed email at a time, known or not, so that concurrent guesses
    -- see each other's failures (a burst cannot slip past a throttle).
    perform pg_advisory_xact_lock(hashtextextended('baas.login:' || v_key, 0));
    -- Looked up whether the email exists or not (and then matched to the account), so
    -- that an unknown email is not answered sooner than a known one.
    if login.refresh_token is not null and length(login.refresh_token) <= 256 then
        select s.id, s.user_id into v_session, v_owner
          from baas.refresh_tokens t join baas.sessions s on s.id = t.session_id
         where t.token_hash = baas._hash_token(login.refresh_token) and t.used_at is null
           and s.revoked_at is null and s.expires_at > now();
        if v_owner is distinct from u.id then
            v_session := null;
        end if;
    end if;
    select * into g from baas._login_gate(v_key, u.id, login.device_id, v_session);
    if g.retry_after is not null then
        -- Answered before any password work, for known and unknown emails alike: a
        -- waiting source learns nothing about the password or the account.
        return jsonb_build_object('error', jsonb_build_object(
            'code', 'too_many_attempts',
            'message', format('too many failed sign-ins; retry in %s s', g.retry_after),
            'retry_after', g.retry_after));
    end if;
    -- An unknown email verifies against a dummy hash: same work, same answer, so it
    -- cannot be told from a wrong password.
    if not baas._verify_password(login.password, u.password_hash) then
        -- Reported as a result, not raised: the failure must commit to count.
        perform baas._audit('login.failure', u.id,
            details => jsonb_build_object('email', v_key, 'source', g.source));
        perform baas._login_failed(v_key, u.id, g.source, g.trusted);
        return jsonb_build_object('error', jsonb_build_object(
            'code', 'invalid_credentials', 'message', 'invalid email or password'));
    end if;
    perform baas._login_succeeded(v_key, u.id, g.source, login.device_id);
    perform baas._audit('login', u.id);
    if baas._password_needs_rehash(u.password_hash) then
        -- Same password, new format: users_password_tokens leaves pending links alone
        -- for exactly this hash (fresh salt: no other change can name it beforehand).
        v_rehash := baas._hash_password(login.password);
        perform set_config('baas.password_rehash', v_rehash, true);
        update baas.users set password_hash = v_rehash where id = u.id;
        perform set_config('baas.password_rehash', '', true);
    end if;
    return baas._complete_sign_in(u, 'pwd', login.device_id);
end
$$;
comment on function baas.login(text, text, text, text) is
    'Sign in with email and password (optionally a device id and a refresh token that exempt a known client from others'' failures); {"error": {"code": "invalid_credentials"}} for unknown email and wrong password alike, {"error": {"code": "too_many_attempts", "retry_after": s}} while this source must wait';

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
    update baas.sessions set refreshed_at = now(), last_used_at = now() where id = s.id;
    select * into strict u from baas.users where id = s.user_id;
    return baas._token_json(u, s.id, v_next);
end
$$;
comment on function baas.refresh(text) is
    'Rotate a refresh token: a new pair; within refresh_reuse_interval of its first use a spent token gets the pair that use made; later it revokes its session and returns {"error": {"code": "refresh_token_reused"}}';

create or replace function baas.update_user(data jsonb default null, password text default null,
                                 current_password text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    u baas.users;
    cur baas.sessions;
    v_sid uuid;
    g record;
begin
    perform baas._require_session();
    select * into u from baas.users where id = baas.uid() for update;
    if not found then
        perform baas._raise('28000', 'invalid_token', 'the account of this token no longer exists');
    end if;
    if update_user.data is not null then
        if jsonb_typeof(update_user.data) <> 'object' then
            perform baas._raise('22023', 'invalid_request', 'data must be a JSON object');
        end if;
        u.data := baas.merge_patch(u.data, update_user.data);
    end if;
    if update_user.password is not null then
        if update_user.current_password is null then
            perform baas._raise('22023', 'current_password_required',
                'changing the password needs current_password');
        end if;
        -- Guessing the current password counts like a failed login, under this
        -- session as its source (so a stolen access token is slowed down, while the
        -- account's owner elsewhere is not): answered, not raised, so that it commits.
        v_sid := (baas.claims() ->> 'sid')::uuid;
        perform pg_advisory_xact_lock(hashtextextended('baas.login:' || u.email, 0));
        select * into g from baas._login_gate(u.email, u.id, null, v_sid);
        if g.retry_after is not null then
            return jsonb_build_object('error', jsonb_build_object(
                'code', 'too_many_attempts',
                'message', format('too many failed attempts; retry in %s s', g.retry_after),
                'retry_after', g.retry_after));
        end if;
        if octet_length(update_user.current_password) > 1024
           or not baas._verify_password(update_user.current_password, u.password_hash) then
            perform baas._audit('password.change.failure', u.id, details => jsonb_build_object('source', g.source));
            perform baas._login_failed(u.email, u.id, g.source, g.trusted);
            return jsonb_build_object('error', jsonb_build_object(
                'code', 'invalid_credentials', 'message', 'current password is wrong'));
        end if;
        perform baas._check_password(update_user.password);
        u.password_hash := baas._hash_password(update_user.password);
    end if;
    update baas.users set data = u.data, password_hash = u.password_hash, updated_at = now()
     where id = u.id
    returning * into u;
    if update_user.password is not null then
        -- A new password ends every session of the account, this one included, and
        -- signs the caller in again.
        -- The new session is worth what this one was (a second factor stays proven).
        select * into cur from baas.sessions where id = (baas.claims() ->> 'sid')::uuid;
        update baas.sessions set revoked_at = now(), revoked_reason = 'password_change'
         where user_id = u.id and revoked_at is null;
        perform baas._audit('password.change', u.id);
        return baas._new_session(u, cur.aal, cur.amr, cur.device_id);
    end if;
    return jsonb_build_object('user', baas._user_json(u));
end
$$;
comment on function baas.update_user(jsonb, text, text) is
    'Merge-patch the signed-in user''s data and/or change the password (which ends every session and returns new tokens)';

-- sql/grants.sql: no PUBLIC execute on the new internal functions.
revoke execute on function
    baas._access_token(baas.users, baas.sessions),
    baas._new_session(baas.users, smallint, text[], text),
    baas._complete_sign_in(baas.users, text, text)
  from public;

-------------------------------------------------------------------- accounts: email flows
-- Verification, password reset, magic links and email change (docs/accounts.md). Each
-- mail carries a link (app_url?type=<type>&token=<token>, the token 32 random bytes in
-- base64url) and a 6-digit code for typing into the app; baas._auth_tokens keeps only
-- sha256(token) and sha256(kind:address:code). A token is single use, expires
-- (email_link_ttl for resets and magic links, email_verify_ttl for verification and
-- email change), dies after 5 wrong codes, and supersedes the user's older ones of its
-- kind. The request functions answer '{}' whatever the address: an unknown one costs
-- the same work (a token hashed, the message rendered) and writes nothing.

-- 55000 email_not_configured unless mail can be sent and its links point somewhere.
create function baas._email_configured() returns void
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if exists (select from baas.settings s where s.email_from is null or s.app_url is null) then
        perform baas._raise('55000', 'email_not_configured',
            'email is not configured: set baas.settings.email_from and app_url (docs/email.md)');
    end if;
end
$$;

-- Six random decimal digits (from 48 bits of a fresh 256-bit secret: the bias of the
-- modulo is below 2^-28).
create function baas._new_email_code() returns text
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    return lpad(((('x' || encode(substring(sha256(convert_to(baas._new_refresh_token(), 'UTF8')) from 1 for 6), 'hex'))::bit(48)::bigint
                  % 1000000)::text), 6, '0');
end
$$;

-- What is kept of a code: bound to its kind and address, so a code is worth nothing
-- for another flow or another account.
create function baas._email_code_hash(kind text, email text, code text) returns bytea
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
    select sha256(convert_to(kind || ':' || coalesce(email, '') || ':' || coalesce(code, ''), 'UTF8'))
$$;

-- Mail a new token of `kind` for user p_user (null: a magic-link sign-up) to p_email,
-- superseding the older ones. p_send false: the same work, nothing written (an unknown
-- address). A per-address cooldown (email_min_interval per kind of message) and hourly
-- cap (email_max_per_hour over every account message) suppress the mail silently
-- [email.suppressed]. vars: the template's extra variables.
create function baas._email_token(kind text, p_user uuid, p_email text, p_language text, vars jsonb,
                                  p_send boolean, p_throttle boolean default true) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    s baas.settings;
    v_token text := baas._new_refresh_token();
    v_code text := baas._new_email_code();
    v_ttl interval;
    v_type text;
    v_vars jsonb;
    v_last timestamptz;
    v_count integer;
begin
    select * into strict s from baas.settings;
    v_ttl := case when kind in ('reset_password', 'magic_link') then s.email_link_ttl else s.email_verify_ttl end;
    v_type := case kind when 'verify_email' then 'signup' when 'reset_password' then 'recovery' else kind end;
    v_vars := coalesce(vars, '{}') || jsonb_build_object(
        'link', s.app_url || case when strpos(s.app_url, '?') > 0 then '&' else '?' end
                || 'type=' || v_type || '&token=' || v_token,
        'code', v_code,
        'email', coalesce(vars ->> 'email', p_email),
        'expires_minutes', (extract(epoch from v_ttl) / 60)::integer);
    -- One request per address at a time, so that the cap holds under concurrency.
    perform pg_advisory_xact_lock(hashtextextended('baas.email:' || coalesce(p_email, ''), 0));
    select max(o.created_at) filter (where o.template = kind), count(*)
      into v_last, v_count
      from baas.email_outbox o
     where o.to_address = p_email and o.created_at > now() - interval '1 hour'
       and o.template in ('verify_email', 'reset_password', 'magic_link', 'email_change');
    if not p_send then
        -- An unknown address: hash and render as for a known one, keep nothing.
        perform baas._hash_token(v_token), baas._email_code_hash(kind, p_email, v_code);
        perform 1 from baas._render_email(kind, coalesce(p_language, s.email_default_language), v_vars);
        return;
    end if;
    if p_throttle and (v_last > now() - s.email_min_interval or v_count >= s.email_max_per_hour) then
        perform baas._audit('email.suppressed', p_user, details => jsonb_build_object(
            'kind', kind, 'email', p_email,
            'reason', case when v_count >= s.email_max_per_hour then 'hourly_cap' else 'cooldown' end));
        return;
    end if;
    update baas._auth_tokens t set used_at = now()
     where t.kind = _email_token.kind and t.used_at is null
       and (t.user_id = p_user or (p_user is null and t.user_id is null and t.email = p_email));
    insert into baas._auth_tokens (token_hash, kind, user_id, email, code_hash, expires_at)
    values (baas._hash_token(v_token), kind, p_user, p_email,
            baas._email_code_hash(kind, p_email, v_code), now() + v_ttl);
    perform baas._enqueue_email(kind, p_email, p_user, p_language, v_vars);
    perform baas._audit('email.' || kind, p_user, details => jsonb_build_object('email', p_email));
end
$$;

-- The live token of `kind` that a link (p_token) or an address and code name, for
-- update. Answers (t, null) or (null, an {"error"} to return): invalid_code for unknown,
-- spent or another kind's token or a wrong code (a wrong code counts; the 5th kills the
-- token), code_expired once expired, too_many_attempts while the address's source
-- must wait (codes are guessed like passwords: the sign-in throttle counts them).
create function baas._take_email_token(kind text, p_token text, p_email text, p_code text,
                                       out t baas._auth_tokens, out err jsonb)
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_email text;
    v_key text;
    g record;
    v_invalid jsonb := jsonb_build_object('error', jsonb_build_object(
        'code', 'invalid_code', 'message', 'this link or code is not valid; ask for a new one'));
begin
    if p_token is not null then
        if length(p_token) > 256 then
            err := v_invalid;
            return;
        end if;
        select * into t from baas._auth_tokens x where x.token_hash = baas._hash_token(p_token) for update;
        if t.token_hash is null or t.kind <> _take_email_token.kind or t.used_at is not null then
            t := null;
            err := v_invalid;
            return;
        end if;
    elsif p_email is not null and p_code is not null then
        v_key := baas._email_for_audit(p_email);
        v_email := baas._email_key(p_email);
        perform pg_advisory_xact_lock(hashtextextended('baas.login:' || v_key, 0));
        select * into g from baas._login_gate(v_key, null, null, null);
        if g.retry_after is not null then
            err := jsonb_build_object('error', jsonb_build_object(
                'code', 'too_many_attempts',
                'message', format('too many wrong codes; retry in %s s', g.retry_after),
                'retry_after', g.retry_after));
            return;
        end if;
        select * into t from baas._auth_tokens x
         where x.email = v_email and x.kind = _take_email_token.kind and x.used_at is null
         order by x.created_at desc limit 1
           for update;
        if t.token_hash is null or t.code_hash is distinct from baas._email_code_hash(kind, v_email, p_code) then
            if t.token_hash is not null and t.expires_at > now() then
                update baas._auth_tokens x
                   set attempts = x.attempts + 1,
                       used_at = case when x.attempts + 1 >= 5 then now() end
                 where x.token_hash = t.token_hash;
            end if;
            perform baas._audit('email.code.failure', t.user_id,
                details => jsonb_build_object('kind', kind, 'email', v_key));
            perform baas._login_failed(v_key, t.user_id, g.source, false);
            t := null;
            err := v_invalid;
            return;
        end if;
    else
        perform baas._raise('22023', 'invalid_request', 'send token, or email and code');
    end if;
    if t.expires_at <= now() then
        t := null;
        err := jsonb_build_object('error', jsonb_build_object(
            'code', 'code_expired', 'message', 'this link or code has expired; ask for a new one'));
        return;
    end if;
    update baas._auth_tokens x set used_at = now() where x.token_hash = t.token_hash;
end
$$;

-- Tokens of these kinds that user p_user still holds stop working.
create function baas._consume_email_tokens(p_user uuid, kinds text[]) returns void
language sql volatile
set search_path = pg_catalog, pg_temp
as $$
    update baas._auth_tokens t set used_at = now()
     where t.user_id = p_user and t.kind = any (kinds) and t.used_at is null
$$;

-- A new password (a reset, a change, an administrator's) ends the reset and magic
-- links mailed before it, and a pending email change: the reset that locks out
-- whoever held a stolen session must not leave them a link to move the account to
-- their address.
create function baas._password_tokens_consumed() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    -- Not when login replaces an old-format hash by argon2id: the password is the same.
    if current_setting('baas.password_rehash', true) = new.password_hash then
        return null;
    end if;
    perform baas._consume_email_tokens(new.id, array['reset_password', 'magic_link', 'email_change']);
    return null;
end
$$;
create trigger users_password_tokens after update of password_hash on baas.users
    for each row when (old.password_hash is distinct from new.password_hash)
    execute function baas._password_tokens_consumed();

create function baas.request_verification(email text, language text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    v_email text;
    u baas.users;
begin
    perform baas._email_configured();
    v_email := baas._normalize_email(request_verification.email);
    select * into u from baas.users where email = v_email;
    perform baas._email_token('verify_email', u.id, v_email, coalesce(request_verification.language, u.language),
        '{}', u.id is not null and u.suspended_at is null and u.email_verified_at is null);
    return '{}';
end
$$;
comment on function baas.request_verification(text, text) is
    'Mail a new verification link and code to an unverified account; answers {} whatever the address';

create function baas.request_password_reset(email text, language text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    v_email text;
    u baas.users;
begin
    perform baas._email_configured();
    v_email := baas._normalize_email(request_password_reset.email);
    select * into u from baas.users where email = v_email;
    perform baas._email_token('reset_password', u.id, v_email, coalesce(request_password_reset.language, u.language),
        '{}', u.id is not null and u.suspended_at is null);
    return '{}';
end
$$;
comment on function baas.request_password_reset(text, text) is
    'Mail a password reset link and code (baas.reset_password); answers {} whatever the address';

create function baas.request_magic_link(email text, language text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    v_email text;
    u baas.users;
    v_signup boolean;
begin
    perform baas._email_configured();
    v_email := baas._normalize_email(request_magic_link.email);
    select * into u from baas.users where email = v_email;
    select s.magic_link_signup into v_signup from baas.settings s;
    perform baas._email_token('magic_link', u.id, v_email, coalesce(request_magic_link.language, u.language),
        '{}', (u.id is not null and u.suspended_at is null) or (u.id is null and v_signup));
    return '{}';
end
$$;
comment on function baas.request_magic_link(text, text) is
    'Mail a sign-in link and code (with magic_link_signup, also to an address without an account); answers {} whatever the address';

-- Follow a mailed link or enter its code: type 'signup' (verification) and 'magic_link'
-- sign in (through baas._complete_sign_in: suspension and second factors apply);
-- 'email_change' switches the account to the new address and answers {user}.
create function baas.verify(type text, token text default null, email text default null,
                            code text default null, device_id text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    v_kind text;
    r record;
    u baas.users;
    v_old text;
begin
    v_kind := case verify.type when 'signup' then 'verify_email' when 'magic_link' then 'magic_link'
                               when 'email_change' then 'email_change' end;
    if v_kind is null then
        perform baas._raise('22023', 'invalid_request', 'type must be signup, magic_link or email_change');
    end if;
    if verify.device_id is not null and verify.device_id !~ '^[A-Za-z0-9._:-]{1,128}$' then
        perform baas._raise('22023', 'invalid_request',
            'device_id must be 1 to 128 characters from A-Z, a-z, 0-9 and . _ : -');
    end if;
    select * into r from baas._take_email_token(v_kind, verify.token, verify.email, verify.code);
    if r.err is not null then
        return r.err;
    end if;
    if (r.t).user_id is not null then
        select * into u from baas.users where id = (r.t).user_id for update;
        -- Mailed to an address the account no longer has (for email_change: the
        -- account must still be there).
        if v_kind <> 'email_change' and u.email is distinct from (r.t).email then
            return jsonb_build_object('error', jsonb_build_object(
                'code', 'invalid_code', 'message', 'this link or code is not valid; ask for a new one'));
        end if;
        -- A suspended account moves to no other address (signing in, the funnel
        -- refuses it).
        if v_kind = 'email_change' and u.suspended_at is not null then
            return jsonb_build_object('error', jsonb_build_object(
                'code', 'invalid_code', 'message', 'this link or code is not valid; ask for a new one'));
        end if;
    end if;
    if v_kind = 'email_change' then
        if exists (select from baas.users x where x.email = (r.t).email and x.id <> u.id) then
            perform baas._raise('23505', 'email_taken', 'an account with this email already exists');
        end if;
        v_old := u.email;
        begin
            update baas.users set email = (r.t).email, email_verified_at = now(), updated_at = now()
             where id = u.id returning * into u;
        exception when unique_violation then
            -- Taken by a transaction still open at the check above.
            perform baas._raise('23505', 'email_taken', 'an account with this email already exists');
        end;
        -- Links mailed to the old address stop working.
        perform baas._consume_email_tokens(u.id, array['verify_email', 'reset_password', 'magic_link', 'email_change']);
        perform baas._audit('email.change', u.id, details => jsonb_build_object('from', v_old, 'to', u.email));
        if v_old is not null then
            perform baas._enqueue_email('email_changed_notice', v_old, u.id, u.language,
                jsonb_build_object('email', v_old, 'new_email', u.email));
        end if;
        return jsonb_build_object('user', baas._user_json(u));
    end if;
    if u.id is null then
        -- A magic-link sign-up: the account is made now, its address proven.
        select * into u from baas.users x where x.email = (r.t).email for update;
        if not found then
            begin
                insert into baas.users (id, email, email_verified_at, data)
                values (baas.uuid7(), (r.t).email, now(), '{}')
                returning * into u;
            exception when unique_violation then
                -- A sign-up of the address still open at the lookup above.
                perform baas._raise('23505', 'email_taken', 'an account with this email already exists');
            end;
            perform baas._audit('signup.magic_link', u.id, details => jsonb_build_object('email', u.email));
        end if;
    end if;
    if u.email_verified_at is null then
        update baas.users set email_verified_at = now() where id = u.id returning * into u;
        perform baas._audit('email.verify', u.id);
    end if;
    perform baas._consume_email_tokens(u.id, array[v_kind]);
    return baas._complete_sign_in(u, 'email', verify.device_id);
end
$$;
comment on function baas.verify(text, text, text, text, text) is
    'Redeem a mailed link (token) or code (email and code): signup and magic_link sign in, email_change answers {user}; {"error": {"code": "invalid_code" | "code_expired"}} otherwise';

-- Set a new password with a mailed reset link or code. Every session ends, the
-- account's reset and magic links die, a password_changed notice is mailed; the caller
-- is not signed in (it signs in with the new password, second factor included).
-- Answers {} or {"error": {...}} (attempts must commit).
create function baas.reset_password(password text, token text default null, email text default null,
                                    code text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    r record;
    u baas.users;
begin
    if reset_password.password is null then
        perform baas._raise('22023', 'invalid_request', 'password is required');
    end if;
    if reset_password.token is null and (reset_password.email is null or reset_password.code is null) then
        perform baas._raise('22023', 'invalid_request', 'send token, or email and code');
    end if;
    perform baas._check_password(reset_password.password);
    select * into r from baas._take_email_token('reset_password', reset_password.token,
                                                reset_password.email, reset_password.code);
    if r.err is not null then
        return r.err;
    end if;
    select * into u from baas.users where id = (r.t).user_id for update;
    if u.id is null or u.suspended_at is not null or u.email is distinct from (r.t).email then
        return jsonb_build_object('error', jsonb_build_object(
            'code', 'invalid_code', 'message', 'this link or code is not valid; ask for a new one'));
    end if;
    -- The mail was opened: the address is the user's.
    update baas.users set password_hash = baas._hash_password(reset_password.password),
                          email_verified_at = coalesce(email_verified_at, now()), updated_at = now()
     where id = u.id returning * into u;
    update baas.sessions set revoked_at = now(), revoked_reason = 'password_reset'
     where user_id = u.id and revoked_at is null;
    perform baas._consume_email_tokens(u.id, array['reset_password', 'magic_link']);
    perform baas._audit('password.reset', u.id);
    perform baas._enqueue_email('password_changed', u.email, u.id, u.language,
        jsonb_build_object('email', u.email));
    return '{}';
end
$$;
comment on function baas.reset_password(text, text, text, text) is
    'Set a new password with a mailed reset token or code: ends every session, does not sign in; {} or {"error": {"code": "invalid_code" | "code_expired"}}';

-- Signed in: mail a link and code to a new address; the address changes when it is
-- followed (baas.verify type email_change), and the old one is told.
create function baas.request_email_change(new_email text, language text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    u baas.users;
    v_new text;
begin
    perform baas._require_session();
    select * into u from baas.users where id = baas.uid();
    if not found then
        perform baas._raise('28000', 'invalid_token', 'the account of this token no longer exists');
    end if;
    if u.is_anonymous then
        perform baas._raise('42501', 'anonymous_not_allowed', 'an anonymous account has no email to change; upgrade it first');
    end if;
    if coalesce(baas.claims() ->> 'aal', 'aal1') <> 'aal2'
       and exists (select from baas._mfa_factors f where f.user_id = u.id and f.status = 'verified') then
        perform baas._raise('42501', 'aal2_required', 'changing the email address needs a session signed in with the second factor');
    end if;
    perform baas._email_configured();
    if request_email_change.new_email is null then
        perform baas._raise('22023', 'invalid_request', 'email is required');
    end if;
    v_new := baas._normalize_email(request_email_change.new_email);
    if v_new = u.email then
        perform baas._raise('22023', 'invalid_request', 'this is already the account''s address');
    end if;
    if exists (select from baas.users x where x.email = v_new) then
        perform baas._raise('23505', 'email_taken', 'an account with this email already exists');
    end if;
    perform baas._email_token('email_change', u.id, v_new, coalesce(request_email_change.language, u.language),
        jsonb_build_object('email', u.email, 'new_email', v_new), true);
    return '{}';
end
$$;
comment on function baas.request_email_change(text, text) is
    'Signed in: mail a confirmation link and code to a new address (baas.verify type email_change); answers {}';

-- Sign-up mails a verification link when email_verification is flag or required; with
-- required it signs nothing in: {user, verification_required: true}.
create or replace function baas.signup(email text, password text, data jsonb default '{}') returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_mode text := (select s.email_verification from baas.settings s);
    u baas.users;
begin
    if v_mode <> 'off' then
        perform baas._email_configured();
    end if;
    u := baas._create_account(email, password, data, 'signup');
    if v_mode = 'off' then
        return baas._new_session(u, 1::smallint, '{pwd}', null);
    end if;
    perform baas._email_token('verify_email', u.id, u.email, u.language, '{}', true, false);
    if v_mode = 'required' then
        return jsonb_build_object('user', baas._user_json(u), 'verification_required', true);
    end if;
    return baas._new_session(u, 1::smallint, '{pwd}', null);
end
$$;
comment on function baas.signup(text, text, jsonb) is
    'Create an account and sign it in: {user, access_token, token_type, expires_in, refresh_token}; with email_verification required {user, verification_required: true} and a verification mail';

-- sql/grants.sql: no PUBLIC execute on the new functions; the doors to the API roles.
revoke execute on function
    baas._email_configured(),
    baas._new_email_code(),
    baas._email_code_hash(text, text, text),
    baas._email_token(text, uuid, text, text, jsonb, boolean, boolean),
    baas._take_email_token(text, text, text, text),
    baas._consume_email_tokens(uuid, text[]),
    baas._password_tokens_consumed(),
    baas.request_verification(text, text),
    baas.request_password_reset(text, text),
    baas.request_magic_link(text, text),
    baas.verify(text, text, text, text, text),
    baas.reset_password(text, text, text, text),
    baas.request_email_change(text, text)
  from public;
grant execute on function
    baas.request_verification(text, text),
    baas.request_password_reset(text, text),
    baas.request_magic_link(text, text),
    baas.verify(text, text, text, text, text),
    baas.reset_password(text, text, text, text)
  to baas_anon, baas_user, baas_service;
grant execute on function baas.request_email_change(text, text) to baas_user;

-------------------------------------------------------------------- accounts: multi-factor
-- The library's TOTP and recovery-code functions (extension/src/api/auth.rs), as pgrx
-- declares them.
create function baas."_totp_code"(
	"secret" bytea, /* & [u8] */
	"algorithm" TEXT, /* & str */
	"digits" INT, /* i32 */
	"unix" bigint /* i64 */
) RETURNS TEXT /* String */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'totp_code_wrapper';

create function baas."_totp_match"(
	"secret" bytea, /* & [u8] */
	"code" TEXT, /* & str */
	"now_step" bigint, /* i64 */
	"after_step" bigint /* i64 */
) RETURNS bigint /* Option < i64 > */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'totp_match_wrapper';

create function baas."_totp_uri"(
	"secret" bytea, /* & [u8] */
	"issuer" TEXT, /* & str */
	"account" TEXT /* & str */
) RETURNS TEXT /* String */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'totp_uri_wrapper';

create function baas."_totp_secret"() RETURNS bytea /* Vec < u8 > */
STRICT VOLATILE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'totp_secret_wrapper';

create function baas."_new_recovery_codes"() RETURNS TEXT[] /* Vec < String > */
STRICT VOLATILE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'new_recovery_codes_wrapper';

-- sql/accounts.sql, section "multi-factor", whole.
-- Time-based one-time passwords (RFC 6238, any authenticator app) as a second factor,
-- and ten single-use recovery codes (docs/mfa.md). A user with a verified factor signs
-- in in two steps: every sign-in method ends in baas._complete_sign_in, which answers a
-- five-minute ticket instead of tokens; baas.mfa_challenge exchanges the ticket and a
-- code for an aal2 session. The secret is kept as is (20 bytes): the server must compute
-- the codes, so it is a database-level secret like the signing keys (docs/security.md).
-- Codes are accepted for the steps now-1..now+1 later than the factor's last used step,
-- so a code works once. Wrong codes are counted per ticket (5) and, like passwords, per
-- source under the key 'mfa:<user id>' (baas._login_gate, sql/audit.sql).

-- The factor as the API shows it (never the secret).
create function baas._mfa_factor_json(f baas._mfa_factors) returns jsonb
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select jsonb_build_object('id', f.id, 'type', f.kind, 'status', f.status,
                              'friendly_name', f.friendly_name, 'created_at', f.created_at,
                              'verified_at', f.verified_at)
$$;

-- How a recovery code is stored: SHA-256 of the code in upper case without '-' or
-- spaces, with the letters Crockford's base32 reads as digits (O, I, L) read so.
create function baas._recovery_code_hash(code text) returns bytea
language sql immutable strict
set search_path = pg_catalog, pg_temp
as $$
    select sha256(convert_to(translate(upper(regexp_replace(code, '[\s-]', '', 'g')), 'OIL', '011'), 'UTF8'))
$$;

-- Ten new recovery codes for user u, replacing all earlier ones; only their hashes are kept.
create function baas._mfa_new_codes(u uuid) returns text[]
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_codes text[] := baas._new_recovery_codes();
begin
    delete from baas._mfa_recovery_codes r where r.user_id = u;
    insert into baas._mfa_recovery_codes (user_id, code_hash)
    select u, baas._recovery_code_hash(c) from unnest(v_codes) c
    on conflict do nothing;
    return v_codes;
end
$$;

-- The current 30-second step (wall clock: a long transaction must not see old codes).
create function baas._totp_step() returns bigint
language sql volatile
set search_path = pg_catalog, pg_temp
as $$ select floor(extract(epoch from clock_timestamp()) / 30)::bigint $$;

create function baas._mfa_error(code text, message text, retry_after integer default null) returns jsonb
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
    select jsonb_build_object('error', jsonb_strip_nulls(jsonb_build_object(
        'code', code, 'message', message, 'retry_after', retry_after)))
$$;

-- The assurance level of the caller's token: 'aal2' after a second factor, 'aal1' for
-- any other user token, null without one. For policies and functions; policies call it
-- as (select baas.aal()) so that it is evaluated once per statement.
create function baas.aal() returns text
language sql stable parallel safe
as $$
    select case when nullif(pg_catalog.current_setting('baas.claims', true), '')::jsonb ->> 'role' = 'baas_user'
                then coalesce(nullif(pg_catalog.current_setting('baas.claims', true), '')::jsonb ->> 'aal', 'aal1') end
$$;
comment on function baas.aal() is
    'Assurance level of the caller''s token: aal2 after a second factor, aal1 for other user tokens, null without a user';

-- For functions that need a session signed in with a second factor: 42501
-- aal2_required unless the caller's token says aal2. Service tokens, and a DBA's own
-- session without claims, pass (they are not users signing in).
create function baas.require_aal2() returns void
language plpgsql stable
as $$
declare
    v_claims jsonb := baas.claims();
begin
    if baas.aal() is distinct from 'aal2'
       and v_claims ->> 'role' is distinct from 'baas_service'
       and (v_claims <> '{}'::jsonb or current_user in ('baas_anon', 'baas_user', 'baas_service', 'baas_authenticator')) then
        -- Raised here, not through baas._raise: this runs as the caller.
        raise exception using errcode = '42501', detail = 'aal2_required',
            message = 'this needs a session signed in with a second factor (aal2)';
    end if;
end
$$;
comment on function baas.require_aal2() is
    'Raise 42501 aal2_required unless the caller''s token is aal2 (service tokens and DBAs pass); for functions and checks';

-- Start enrolling a TOTP factor: a new secret, as base32 and as an otpauth:// URI for a
-- QR code. The factor is unverified (it does not count at sign-in) until
-- baas.mfa_verify_factor sees a code from it; an earlier unverified one is replaced.
create function baas.mfa_enroll_totp(friendly_name text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    v_sid uuid := baas._require_session();
    u baas.users;
    st baas.settings;
    f baas._mfa_factors;
    v_uri text;
begin
    select * into strict u from baas.users x where x.id = baas.uid() for update;
    if u.is_anonymous then
        perform baas._raise('42501', 'anonymous_not_allowed',
            'an anonymous account cannot enrol a second factor; sign up first');
    end if;
    if mfa_enroll_totp.friendly_name is not null
       and length(mfa_enroll_totp.friendly_name) not between 1 and 100 then
        perform baas._raise('22023', 'invalid_request', 'friendly_name must be 1 to 100 characters');
    end if;
    if exists (select from baas._mfa_factors x where x.user_id = u.id and x.status = 'verified') then
        perform baas._raise('23505', 'factor_exists',
            'this account already has a verified authenticator; remove it first');
    end if;
    delete from baas._mfa_factors x where x.user_id = u.id and x.status = 'unverified';
    insert into baas._mfa_factors (id, user_id, secret, status, friendly_name)
    values (baas.uuid7(), u.id, baas._totp_secret(), 'unverified', mfa_enroll_totp.friendly_name)
    returning * into f;
    select * into strict st from baas.settings;
    v_uri := baas._totp_uri(f.secret, coalesce(st.mfa_issuer, st.issuer), coalesce(u.email, u.id::text));
    perform baas._audit('mfa.enroll', u.id, details => jsonb_build_object('factor', f.id));
    return jsonb_build_object('id', f.id, 'type', f.kind, 'status', f.status,
                              'friendly_name', f.friendly_name,
                              'secret', substring(v_uri from 'secret=([A-Z2-7]+)'), 'uri', v_uri);
end
$$;
comment on function baas.mfa_enroll_totp(text) is
    'Start enrolling an authenticator app: {id, secret (base32), uri (otpauth://), status: "unverified"}';

-- Verify a code of one of the caller's factors. An unverified factor becomes verified
-- and gets ten recovery codes (shown once); either way the current session becomes aal2
-- (amr gains 'otp') and a new token pair is returned: older refresh tokens of the
-- session, issued at aal1, stop working. Wrong codes count like sign-in failures of the
-- session ({"error": {"code": "invalid_code"}}, then too_many_attempts).
create function baas.mfa_verify_factor(factor_id uuid, code text) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    v_sid uuid := baas._require_session();
    v_uid uuid := baas.uid();
    v_key text := 'mfa:' || baas.uid();
    f baas._mfa_factors;
    u baas.users;
    g record;
    v_step bigint;
    v_codes text[];
begin
    if mfa_verify_factor.code is null or mfa_verify_factor.factor_id is null then
        perform baas._raise('22023', 'invalid_request', 'factor id and code are required');
    end if;
    select * into f from baas._mfa_factors x
     where x.id = mfa_verify_factor.factor_id and x.user_id = v_uid for update;
    if not found then
        perform baas._raise('P0002', 'factor_not_found', 'no such factor on this account');
    end if;
    select * into g from baas._login_gate(v_key, v_uid, null, v_sid);
    if g.retry_after is not null then
        return baas._mfa_error('too_many_attempts',
            format('too many wrong codes; retry in %s s', g.retry_after), g.retry_after);
    end if;
    v_step := baas._totp_match(f.secret, left(mfa_verify_factor.code, 64), baas._totp_step(), f.last_used_step);
    if v_step is null then
        perform baas._audit('mfa.failure', v_uid, details => jsonb_build_object('factor', f.id, 'source', g.source));
        perform baas._login_failed(v_key, v_uid, g.source, g.trusted);
        return baas._mfa_error('invalid_code', 'the code is wrong, expired or already used');
    end if;
    perform baas._login_succeeded(v_key, v_uid, g.source, null);
    if f.status = 'unverified' then
        begin
            update baas._mfa_factors x set status = 'verified', verified_at = now(), last_used_step = v_step
             where x.id = f.id returning * into f;
        exception when unique_violation then
            perform baas._raise('23505', 'factor_exists', 'this account already has a verified authenticator');
        end;
        v_codes := baas._mfa_new_codes(v_uid);
        perform baas._audit('mfa.verify', v_uid, details => jsonb_build_object('factor', f.id));
    else
        update baas._mfa_factors x set last_used_step = v_step where x.id = f.id returning * into f;
        perform baas._audit('mfa.step_up', v_uid, details => jsonb_build_object('factor', f.id, 'session', v_sid));
    end if;
    update baas.sessions s set aal = 2,
           amr = case when 'otp' = any (s.amr) then s.amr else s.amr || 'otp'::text end,
           last_used_at = now()
     where s.id = v_sid;
    delete from baas.refresh_tokens t where t.session_id = v_sid and t.used_at is null;
    select * into strict u from baas.users x where x.id = v_uid;
    return jsonb_build_object('factor', baas._mfa_factor_json(f))
        || case when v_codes is not null then jsonb_build_object('recovery_codes', to_jsonb(v_codes)) else '{}'::jsonb end
        || baas._token_response(u, v_sid);
end
$$;
comment on function baas.mfa_verify_factor(uuid, text) is
    'Verify a TOTP code: the factor becomes verified (first time: + 10 recovery codes), the session aal2, and a new token pair is returned';

-- The second step of signing in: the ticket baas._complete_sign_in answered, and a
-- TOTP code (six digits) or a recovery code. Answers an aal2 session; refusals are
-- results, so that counts commit: invalid_code (ticket unknown, used, expired or out of
-- its 5 attempts; code wrong or already used), too_many_attempts with retry_after.
create function baas.mfa_challenge(mfa_token text, code text, device_id text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    t baas._auth_tokens;
    f baas._mfa_factors;
    u baas.users;
    g record;
    v_key text;
    v_device text;
    v_step bigint;
    v_used text;
begin
    if mfa_challenge.mfa_token is null or mfa_challenge.code is null then
        perform baas._raise('22023', 'invalid_request', 'mfa_token and code are required');
    end if;
    if mfa_challenge.device_id is not null and mfa_challenge.device_id !~ '^[A-Za-z0-9._:-]{1,128}$' then
        perform baas._raise('22023', 'invalid_request',
            'device_id must be 1 to 128 characters from A-Z, a-z, 0-9 and . _ : -');
    end if;
    if length(mfa_challenge.mfa_token) <= 256 then
        select * into t from baas._auth_tokens x
         where x.token_hash = baas._hash_token(mfa_challenge.mfa_token) and x.kind = 'mfa'
           for update;
    end if;
    if t.token_hash is null or t.used_at is not null or t.expires_at <= clock_timestamp() or t.attempts >= 5 then
        return baas._mfa_error('invalid_code',
            'this sign-in ticket is unknown, used, expired or out of attempts; sign in again');
    end if;
    v_key := 'mfa:' || t.user_id;
    v_device := coalesce(mfa_challenge.device_id, t.data ->> 'device_id');
    select * into g from baas._login_gate(v_key, t.user_id, v_device, null);
    if g.retry_after is not null then
        return baas._mfa_error('too_many_attempts',
            format('too many wrong codes; retry in %s s', g.retry_after), g.retry_after);
    end if;
    select * into f from baas._mfa_factors x
     where x.user_id = t.user_id and x.status = 'verified' for update;
    if found and length(mfa_challenge.code) <= 64 then
        if replace(mfa_challenge.code, ' ', '') ~ '^[0-9]{6}$' then
            v_step := baas._totp_match(f.secret, mfa_challenge.code, baas._totp_step(), f.last_used_step);
            if v_step is not null then
                update baas._mfa_factors x set last_used_step = v_step where x.id = f.id;
                v_used := 'totp';
            end if;
        else
            update baas._mfa_recovery_codes r set used_at = now()
             where r.user_id = t.user_id and r.code_hash = baas._recovery_code_hash(mfa_challenge.code)
               and r.used_at is null;
            if found then
                v_used := 'recovery_code';
            end if;
        end if;
    end if;
    if v_used is null then
        update baas._auth_tokens x set attempts = x.attempts + 1 where x.token_hash = t.token_hash;
        perform baas._audit('mfa.failure', t.user_id, details => jsonb_build_object('source', g.source));
        perform baas._login_failed(v_key, t.user_id, g.source, g.trusted);
        return baas._mfa_error('invalid_code', 'the code is wrong, expired or already used');
    end if;
    update baas._auth_tokens x set used_at = now() where x.token_hash = t.token_hash;
    perform baas._login_succeeded(v_key, t.user_id, g.source, v_device);
    select * into strict u from baas.users x where x.id = t.user_id;
    if u.suspended_at is not null then
        return baas._mfa_error('account_suspended', 'this account is suspended');
    end if;
    perform baas._audit('mfa.challenge', u.id, details => jsonb_build_object('with', v_used));
    return baas._new_session(u, 2::smallint, array[coalesce(t.data ->> 'method', 'pwd'), 'otp'], v_device);
end
$$;
comment on function baas.mfa_challenge(text, text, text) is
    'Second sign-in step: the mfa_token a sign-in answered and a TOTP or recovery code give an aal2 session; {"error": {"code": "invalid_code" | "too_many_attempts"}}';

-- Remove a factor. A verified one needs an aal2 session (a stolen password alone must
-- not remove the second factor); its recovery codes and pending tickets go with it.
create function baas.mfa_unenroll(factor_id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    v_sid uuid := baas._require_session();
    f baas._mfa_factors;
begin
    select * into f from baas._mfa_factors x
     where x.id = mfa_unenroll.factor_id and x.user_id = baas.uid() for update;
    if not found then
        perform baas._raise('P0002', 'factor_not_found', 'no such factor on this account');
    end if;
    if f.status = 'verified' then
        perform baas.require_aal2();
        delete from baas._mfa_recovery_codes r where r.user_id = f.user_id;
        delete from baas._auth_tokens x where x.user_id = f.user_id and x.kind = 'mfa';
    end if;
    delete from baas._mfa_factors x where x.id = f.id;
    perform baas._audit('mfa.unenroll', f.user_id, details => jsonb_build_object('factor', f.id, 'status', f.status));
end
$$;
comment on function baas.mfa_unenroll(uuid) is 'Remove one of your factors (a verified one needs an aal2 session)';

-- Ten new recovery codes, replacing the old ones (aal2 only).
create function baas.mfa_recovery_codes() returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_sid uuid := baas._require_session();
begin
    perform baas.require_aal2();
    perform from baas.users x where x.id = baas.uid() for update;
    if not exists (select from baas._mfa_factors f where f.user_id = baas.uid() and f.status = 'verified') then
        perform baas._raise('P0002', 'factor_not_found', 'this account has no verified factor');
    end if;
    perform baas._audit('mfa.recovery_codes', baas.uid());
    return jsonb_build_object('recovery_codes', to_jsonb(baas._mfa_new_codes(baas.uid())));
end
$$;
comment on function baas.mfa_recovery_codes() is 'Ten new recovery codes replacing the old ones (needs an aal2 session)';

-- The caller's factors and how many unused recovery codes are left.
create function baas.mfa_status() returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_sid uuid := baas._require_session();
begin
    return jsonb_build_object(
        'factors', coalesce((select jsonb_agg(baas._mfa_factor_json(f) order by f.created_at)
                               from baas._mfa_factors f where f.user_id = baas.uid()), '[]'::jsonb),
        'recovery_codes_left', (select count(*) from baas._mfa_recovery_codes r
                                 where r.user_id = baas.uid() and r.used_at is null));
end
$$;
comment on function baas.mfa_status() is 'Your factors {id, type, status, friendly_name, created_at, verified_at} and recovery_codes_left';

-- Service and DBAs: remove every factor of a user who lost them (their next sign-in is
-- one step again), with their recovery codes and pending sign-in tickets.
create function baas.admin_reset_mfa(user_id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    n integer;
begin
    perform from baas.users x where x.id = admin_reset_mfa.user_id for update;
    if not found then
        perform baas._raise('P0002', 'user_not_found', 'no such user');
    end if;
    delete from baas._mfa_factors f where f.user_id = admin_reset_mfa.user_id;
    get diagnostics n = row_count;
    delete from baas._mfa_recovery_codes r where r.user_id = admin_reset_mfa.user_id;
    delete from baas._auth_tokens x where x.user_id = admin_reset_mfa.user_id and x.kind = 'mfa';
    perform baas._audit('mfa.reset', admin_reset_mfa.user_id, details => jsonb_build_object('factors', n));
end
$$;
comment on function baas.admin_reset_mfa(uuid) is 'Service and DBAs: remove all second factors and recovery codes of a user';

-- Collections that only aal2 sessions may use (option require_aal2): one restrictive
-- policy per table, for the API roles that obey ACLs (the service role is not a user
-- signing in). The blocked ids are an InitPlan, computed once per statement: '{}' for an
-- aal2 caller, so the per-row cost is one comparison with an empty array. File chunks,
-- blobs and thumbnails follow their documents (their policies ask baas.documents).
-- baas.security_lints() reports `policy_drift` if these texts change.
create function baas._aal2_blocked() returns integer[]
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select case when baas.aal() = 'aal2' then '{}'::integer[]
                else array(select c.id from baas.collections c where c.require_aal2 order by c.id) end
$$;

create function baas._aal2_blocked_indexes() returns integer[]
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select case when baas.aal() = 'aal2' then '{}'::integer[]
                else array(select i.id from baas.indexes i join baas.collections c on c.id = i.collection_id
                            where c.require_aal2 order by i.id) end
$$;

create policy documents_aal on baas.documents as restrictive for all to baas_anon, baas_user
    using (collection_id <> all ((select baas._aal2_blocked())::integer[]))
    with check (collection_id <> all ((select baas._aal2_blocked())::integer[]));
create policy index_entries_aal on baas.index_entries as restrictive for select to baas_anon, baas_user
    using (index_id <> all ((select baas._aal2_blocked_indexes())::integer[]));

-- Collections as the API shows them: require_aal2 appears when it is set.
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
                   'file_refs', c.file_refs) else '{}'::jsonb end
            || case when c.require_aal2 then jsonb_build_object('require_aal2', true) else '{}'::jsonb end
            || case when c.on_owner_delete = 'orphan' then '{"on_owner_delete": "orphan"}'::jsonb
                    when c.on_owner_delete = 'transfer' then jsonb_build_object('on_owner_delete',
                        case when c.owner_heir is null then to_jsonb('orphan'::text)
                             else jsonb_build_object('transfer', c.owner_heir) end)
                    else '{}'::jsonb end)
$$;

-- Service and DBAs: change a collection's account options. Here require_aal2 (bool).
create function baas.set_collection_options(name text, options jsonb) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    c baas.collections := baas._collection_by_name(set_collection_options.name);
    k text;
    o record;
begin
    if set_collection_options.options is null or jsonb_typeof(set_collection_options.options) <> 'object' then
        perform baas._raise('22023', 'invalid_options', 'options must be a JSON object');
    end if;
    for k in select jsonb_object_keys(set_collection_options.options) loop
        if k not in ('require_aal2', 'on_owner_delete') then
            perform baas._raise('22023', 'invalid_options',
                format('unknown option %s; set_collection_options takes require_aal2 and on_owner_delete', to_jsonb(k)));
        end if;
    end loop;
    if set_collection_options.options ? 'require_aal2' then
        if jsonb_typeof(set_collection_options.options -> 'require_aal2') <> 'boolean' then
            perform baas._raise('22023', 'invalid_options', 'require_aal2 must be true or false');
        end if;
        if (set_collection_options.options ->> 'require_aal2')::boolean and not c.require_aal2 and c.realtime then
            -- Live subscriptions of aal1 callers must not outlive the switch: turning
            -- the feed off and on in this transaction ends every subscription of the
            -- collection (feed_disabled, sql/realtime.sql); aal2 clients re-subscribe,
            -- aal1 ones are refused (aal2_required).
            update baas.collections x set realtime = false where x.id = c.id;
            update baas.collections x set realtime = true where x.id = c.id;
        end if;
        update baas.collections x set require_aal2 = (set_collection_options.options ->> 'require_aal2')::boolean
         where x.id = c.id returning * into c;
    end if;
    if set_collection_options.options ? 'on_owner_delete' then
        select * into o from baas._owner_delete_columns(
            baas._normalize_collection_options(jsonb_build_object('on_owner_delete', set_collection_options.options -> 'on_owner_delete'))
                -> 'on_owner_delete');
        update baas.collections x set on_owner_delete = o.policy, owner_heir = o.heir
         where x.id = c.id
        returning * into c;
    end if;
    perform baas._audit('collection.options', collection => c.name, details => set_collection_options.options);
    return baas._collection_json(c);
end
$$;
comment on function baas.set_collection_options(text, jsonb) is
    'Service and DBAs: change a collection''s options require_aal2 (only aal2 sessions see its documents) and on_owner_delete ("delete", "orphan" or {"transfer": "<user id>"}); returns the collection';

-- sql/documents.sql: create_collection takes require_aal2.
create or replace function baas.create_collection(name text, options jsonb default '{}') returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    o jsonb;
    c baas.collections;
    od record;
begin
    perform baas._check_collection_name(create_collection.name);
    o := baas._normalize_collection_options(options);
    perform baas._check_new_principals(jsonb_build_object('create', o -> 'create') || (o -> 'default_acl'));
    select * into od from baas._owner_delete_columns(o -> 'on_owner_delete');
    insert into baas.collections (name, create_acl, default_read, default_update, default_delete, schema, realtime,
                                  bucket, file_max_bytes, file_types, file_refs, require_aal2, on_owner_delete, owner_heir)
    values (create_collection.name,
            array(select jsonb_array_elements_text(o -> 'create')),
            array(select jsonb_array_elements_text(o -> 'default_acl' -> 'read')),
            array(select jsonb_array_elements_text(o -> 'default_acl' -> 'update')),
            array(select jsonb_array_elements_text(o -> 'default_acl' -> 'delete')),
            nullif(o -> 'schema', 'null'),
            (o ->> 'realtime')::boolean,
            (o ->> 'bucket')::boolean,
            (o ->> 'max_file_size')::bigint,
            case when jsonb_typeof(o -> 'file_types') = 'array'
                 then array(select jsonb_array_elements_text(o -> 'file_types')) end,
            o ->> 'file_refs',
            (o ->> 'require_aal2')::boolean, od.policy, od.heir)
    on conflict (name) do nothing
    returning * into c;
    if not found then
        raise exception using errcode = '23505', detail = 'collection_exists',
            message = format('collection %s already exists', create_collection.name);
    end if;
    return baas._collection_json(c);
end
$$;
comment on function baas.create_collection(text, jsonb) is
    'Create a collection. options: create (principals), default_acl, schema (JSON Schema), realtime (live feed, default true), bucket (files), max_file_size, file_types, file_refs, require_aal2, on_owner_delete (delete, orphan or {transfer: user id})';

-- sql/files.sql: a download link carries its session's aal, so that an aal2 session's
-- link of a require_aal2 bucket's file downloads it (it runs as the link's claims).
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
        'sid', v_claims -> 'sid', 'is_anonymous', v_claims -> 'is_anonymous',
        'fid', fid, 'ver', ver, 'iat', v_now, 'exp', v_now + ttl)
        -- the session's assurance level, when its token has one (require_aal2 buckets)
        || jsonb_strip_nulls(jsonb_build_object('aal', v_claims -> 'aal')));
    return jsonb_build_object('url', format('/v1/files/%s?sig=%s', fid, v_token), 'token', v_token,
                              'expires_at', to_timestamp(v_now + ttl));
end
$$;

-- sql/grants.sql, section "accounts: multi-factor"; no PUBLIC execute on the new functions.
revoke execute on function
    baas._totp_code(bytea, text, integer, bigint),
    baas._totp_match(bytea, text, bigint, bigint),
    baas._totp_uri(bytea, text, text),
    baas._totp_secret(),
    baas._new_recovery_codes(),
    baas._mfa_factor_json(baas._mfa_factors),
    baas._recovery_code_hash(text),
    baas._mfa_new_codes(uuid),
    baas._totp_step(),
    baas._mfa_error(text, text, integer),
    baas.aal(),
    baas.require_aal2(),
    baas.mfa_enroll_totp(text),
    baas.mfa_verify_factor(uuid, text),
    baas.mfa_challenge(text, text, text),
    baas.mfa_unenroll(uuid),
    baas.mfa_recovery_codes(),
    baas.mfa_status(),
    baas.admin_reset_mfa(uuid),
    baas._aal2_blocked(),
    baas._aal2_blocked_indexes(),
    baas.set_collection_options(text, jsonb)
  from public;

-- accounts: multi-factor (sql/accounts.sql). The second sign-in step is for anyone
-- holding a ticket; the factor functions for signed-in users; the reset for service
-- tokens (and DBAs). baas.aal() and baas.require_aal2() are for policies and functions.
grant execute on function
    baas.mfa_challenge(text, text, text),
    baas.aal(),
    baas.require_aal2()
  to baas_anon, baas_user, baas_service;
grant execute on function
    baas.mfa_enroll_totp(text),
    baas.mfa_verify_factor(uuid, text),
    baas.mfa_unenroll(uuid),
    baas.mfa_recovery_codes(),
    baas.mfa_status()
  to baas_user;
grant execute on function baas.admin_reset_mfa(uuid), baas.set_collection_options(text, jsonb) to baas_service;
-- The aal2 policies run them as the caller.
grant execute on function baas._aal2_blocked(), baas._aal2_blocked_indexes() to baas_anon, baas_user;

-------------------------------------------------------------------- accounts: anonymous, sessions, suspension, owner delete
-- A user's sessions as the API shows them: where and how each began, when it was last
-- refreshed, what it is worth. `current` marks the caller's own session.
create function baas._session_json(s baas.sessions, current_sid uuid) returns jsonb
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select jsonb_build_object(
        'id', s.id, 'created_at', s.created_at, 'last_used_at', s.last_used_at,
        'user_agent', s.user_agent, 'ip', host(s.ip), 'device_id', s.device_id,
        'aal', 'aal' || s.aal, 'current', s.id is not distinct from current_sid)
$$;

-- The live sessions (neither revoked nor expired) of account `uid`, newest first.
create function baas._live_sessions(uid uuid, current_sid uuid) returns jsonb
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select jsonb_build_object('items', coalesce(jsonb_agg(baas._session_json(s, current_sid)
                                                          order by s.created_at desc, s.id desc), '[]'))
      from baas.sessions s
     where s.user_id = uid and s.revoked_at is null and s.expires_at > now()
$$;

-- An account as administrators see it: the API's user object and its suspension.
create function baas._admin_user_json(u baas.users) returns jsonb
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select baas._user_json(u) || jsonb_build_object(
        'suspended', u.suspended_at is not null,
        'suspended_at', u.suspended_at, 'suspended_reason', u.suspended_reason)
$$;

-- The account `id`, locked, or P0002 user_not_found.
create function baas._user_for_admin(id uuid) returns baas.users
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    u baas.users;
begin
    select * into u from baas.users x where x.id = _user_for_admin.id for update;
    if not found then
        perform baas._raise('P0002', 'user_not_found', format('no user with id %s', _user_for_admin.id));
    end if;
    return u;
end
$$;

-- The signed-in user's live sessions.
create function baas.list_sessions() returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_sid uuid := baas._require_session();
begin
    return baas._live_sessions(baas.uid(), v_sid);
end
$$;
comment on function baas.list_sessions() is
    'The signed-in user''s live sessions: {items: [{id, created_at, last_used_at, user_agent, ip, device_id, aal, current}]}';

-- End one of the caller's own live sessions (another device's, or this one).
create function baas.end_session(id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_sid uuid := baas._require_session();
begin
    update baas.sessions s set revoked_at = now(), revoked_reason = 'ended_by_user'
     where s.id = end_session.id and s.user_id = baas.uid()
       and s.revoked_at is null and s.expires_at > now();
    if not found then
        -- Others' sessions and ended ones alike: nothing about them is told.
        perform baas._raise('P0002', 'session_not_found', 'no live session of yours has this id');
    end if;
    perform baas._audit('session.end', baas.uid(),
        details => jsonb_build_object('session', end_session.id, 'current', end_session.id = v_sid));
end
$$;
comment on function baas.end_session(uuid) is
    'End one live session of the signed-in user; P0002 session_not_found for another user''s or an ended one';

-- Sign out everywhere else: every live session of the caller but this one.
create function baas.end_other_sessions() returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_sid uuid := baas._require_session();
    n integer;
begin
    update baas.sessions s set revoked_at = now(), revoked_reason = 'ended_by_user'
     where s.user_id = baas.uid() and s.id <> v_sid and s.revoked_at is null;
    get diagnostics n = row_count;
    perform baas._audit('session.end_others', baas.uid(), details => jsonb_build_object('count', n));
    return n;
end
$$;
comment on function baas.end_other_sessions() is
    'End every session of the signed-in user except the current one; returns how many ended';

-- Administrators: an account's live sessions, and signing it out everywhere.
create function baas.user_sessions(user_id uuid) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if not exists (select from baas.users u where u.id = user_sessions.user_id) then
        perform baas._raise('P0002', 'user_not_found', format('no user with id %s', user_sessions.user_id));
    end if;
    return baas._live_sessions(user_sessions.user_id, null);
end
$$;
comment on function baas.user_sessions(uuid) is
    'Service/DBAs: the live sessions of an account, {items: [...]} as list_sessions; P0002 user_not_found';

create function baas.sign_out_user(user_id uuid) returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    u baas.users := baas._user_for_admin(sign_out_user.user_id);
    n integer;
begin
    update baas.sessions s set revoked_at = now(), revoked_reason = 'signed_out_by_admin'
     where s.user_id = u.id and s.revoked_at is null;
    get diagnostics n = row_count;
    perform baas._audit('user.sign_out', u.id, details => jsonb_build_object('sessions', n));
    return n;
end
$$;
comment on function baas.sign_out_user(uuid) is
    'Service/DBAs: end every session of an account at once; returns how many ended; P0002 user_not_found';

-- Suspension: the account keeps its data but cannot sign in (baas._complete_sign_in
-- answers account_suspended) and every session ends now, which the session trigger
-- announces so that proxies refuse cached tokens and close the account's streams.
-- Mailed links and codes and MFA tickets of the account are spent too.
create function baas.suspend_user(user_id uuid, reason text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    u baas.users := baas._user_for_admin(suspend_user.user_id);
    n integer;
begin
    if length(reason) > 500 then
        perform baas._raise('22023', 'invalid_request', 'reason must be at most 500 characters');
    end if;
    update baas.users x set suspended_at = coalesce(x.suspended_at, now()), suspended_reason = reason,
                            updated_at = now()
     where x.id = u.id
    returning * into u;
    update baas.sessions s set revoked_at = now(), revoked_reason = 'suspended'
     where s.user_id = u.id and s.revoked_at is null;
    get diagnostics n = row_count;
    update baas._auth_tokens t set used_at = now() where t.user_id = u.id and t.used_at is null;
    perform baas._audit('user.suspend', u.id, details => jsonb_build_object('reason', reason, 'sessions', n));
    return baas._admin_user_json(u);
end
$$;
comment on function baas.suspend_user(uuid, text) is
    'Service/DBAs: suspend an account (sign-ins refused with account_suspended, every session ended); returns the account with its suspension';

create function baas.reactivate_user(user_id uuid) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    u baas.users := baas._user_for_admin(reactivate_user.user_id);
begin
    update baas.users x set suspended_at = null, suspended_reason = null, updated_at = now()
     where x.id = u.id
    returning * into u;
    perform baas._audit('user.reactivate', u.id);
    return baas._admin_user_json(u);
end
$$;
comment on function baas.reactivate_user(uuid) is
    'Service/DBAs: lift an account''s suspension (its old sessions stay ended; it may sign in again)';

-- Anonymous accounts (setting anonymous_sign_in, off by default): an account without
-- email or password, so that an app works before its user signs up. Its principals are
-- `authenticated` and `anonymous` (not `registered`), and baas.upgrade_account turns
-- it into a full account keeping its id, hence its documents, files and grants.
create function baas.sign_in_anonymously(data jsonb default '{}', device_id text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    u baas.users;
begin
    if not (select s.anonymous_sign_in from baas.settings s) then
        perform baas._raise('42501', 'anonymous_sign_in_disabled', 'anonymous sign-in is not enabled');
    end if;
    if sign_in_anonymously.data is not null and jsonb_typeof(sign_in_anonymously.data) <> 'object' then
        perform baas._raise('22023', 'invalid_request', 'data must be a JSON object');
    end if;
    if sign_in_anonymously.device_id is not null and sign_in_anonymously.device_id !~ '^[A-Za-z0-9._:-]{1,128}$' then
        perform baas._raise('22023', 'invalid_request',
            'device_id must be 1 to 128 characters from A-Z, a-z, 0-9 and . _ : -');
    end if;
    insert into baas.users (id, email, password_hash, data, is_anonymous)
    values (baas.uuid7(), null, null, coalesce(sign_in_anonymously.data, '{}'), true)
    returning * into u;
    perform baas._audit('signup.anonymous', u.id);
    return baas._complete_sign_in(u, 'anonymous', sign_in_anonymously.device_id);
end
$$;
comment on function baas.sign_in_anonymously(jsonb, text) is
    'Create an anonymous account and sign it in (setting anonymous_sign_in): tokens with user.is_anonymous true';

-- An anonymous account becomes a full one: same id (documents, files, grants to
-- user:<id> stay), an email and a password. The session goes on; its refresh tokens
-- are spent and a new pair, whose access token says is_anonymous false, is returned.
create function baas.upgrade_account(email text, password text) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    v_sid uuid := baas._require_session();
    v_email text;
    u baas.users;
begin
    select * into u from baas.users where id = baas.uid() for update;
    if not found then
        perform baas._raise('28000', 'invalid_token', 'the account of this token no longer exists');
    end if;
    if not u.is_anonymous then
        perform baas._raise('42501', 'not_anonymous', 'this account is not anonymous; it already has a sign-in');
    end if;
    if upgrade_account.email is null or upgrade_account.password is null then
        perform baas._raise('22023', 'invalid_request', 'email and password are required');
    end if;
    v_email := baas._normalize_email(upgrade_account.email);
    perform baas._check_password(upgrade_account.password);
    begin
        update baas.users
           set email = v_email, password_hash = baas._hash_password(upgrade_account.password),
               is_anonymous = false, updated_at = now()
         where id = u.id
        returning * into u;
    exception when unique_violation then
        perform baas._raise('23505', 'email_taken', 'an account with this email already exists');
    end;
    update baas.refresh_tokens set used_at = clock_timestamp()
     where session_id = v_sid and used_at is null;
    update baas.sessions set refreshed_at = now(), last_used_at = now() where id = v_sid;
    perform baas._audit('user.upgrade', u.id, details => jsonb_build_object('email', u.email));
    return baas._token_response(u, v_sid);
end
$$;
comment on function baas.upgrade_account(text, text) is
    'Give the signed-in anonymous account an email and password, keeping its id and session: a new token pair';

-- Housekeeping for a scheduler: delete anonymous accounts inactive for `older_than`
-- (at least an hour). Activity: the latest sign-in or refresh of any of its sessions,
-- or its creation. Their documents follow their collections' on_owner_delete.
create function baas.purge_anonymous_users(older_than interval) returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    n bigint;
begin
    if older_than is null or older_than < interval '1 hour' then
        perform baas._raise('22023', 'invalid_request', 'older_than must be at least 1 hour');
    end if;
    with gone as (
        delete from baas.users u
         where u.is_anonymous
           and greatest(u.created_at, (select max(s.last_used_at) from baas.sessions s where s.user_id = u.id))
               < now() - older_than
        returning 1)
    select count(*) into n from gone;
    perform baas._audit('user.purge_anonymous', details => jsonb_build_object(
        'count', n, 'older_than', older_than::text));
    return n;
end
$$;
comment on function baas.purge_anonymous_users(interval) is
    'Service/DBAs: delete anonymous accounts with no sign-in or refresh for older_than (at least 1 hour); returns how many';

-- sql/permissions.sql: principals `registered` / `anonymous`.
-- Is the caller signed in with an anonymous account (baas.sign_in_anonymously, not
-- yet upgraded)? From the token's is_anonymous claim; false without a user token and
-- for tokens issued before 0.7.0 (which only full accounts had).
create function baas.is_anonymous() returns boolean
language sql stable parallel safe
as $$
    select coalesce(nullif(pg_catalog.current_setting('baas.claims', true), '')::jsonb ->> 'role' = 'baas_user'
                    and nullif(pg_catalog.current_setting('baas.claims', true), '')::jsonb ->> 'is_anonymous' = 'true',
                    false)
$$;
comment on function baas.is_anonymous() is 'True when the caller is signed in with an anonymous account';

-- Every principal the caller acts as: public; for a signed-in user also
-- authenticated, registered (a full account) or anonymous (an anonymous one),
-- user:<id> and role:<name> for each role.
-- Security definer to read the caller's own memberships directly: every row-level
-- policy evaluates it once per statement, so the common case (a user in no role) is
-- one uid() and one index probe, without going through baas.roles().
create or replace function baas.principals() returns text[]
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := baas.uid();
    v_base text[];
begin
    if v_uid is null then
        return array['public'];
    end if;
    v_base := array['public', 'authenticated',
                    case when baas.is_anonymous() then 'anonymous' else 'registered' end,
                    'user:' || v_uid::text];
    if not exists (select from baas.role_members m where m.user_id = v_uid) then
        return v_base;
    end if;
    return v_base || array(select 'role:' || r from unnest(baas.roles()) r);
end
$$;

-- sql/documents.sql: as_user's claims say whether the account is anonymous.
-- See what a user sees: run `query` as that user (NULL: as an anonymous caller), with
-- the same role and claims the proxy would set, and return its rows as JSON. DBAs only.
create or replace function baas.as_user(user_id uuid, query text) returns setof jsonb
language plpgsql volatile
as $$
declare
    v_prev_role text := current_setting('role');
    v_prev_claims text := current_setting('baas.claims', true);
begin
    if user_id is null then
        perform set_config('baas.claims', '', true);
        perform set_config('role', 'baas_anon', true);
    else
        -- As the account's own token would say: anonymous or not, aal1.
        perform set_config('baas.claims',
            jsonb_build_object('sub', user_id, 'role', 'baas_user', 'sid', null, 'aal', 'aal1',
                'is_anonymous', coalesce((select u.is_anonymous from baas.users u where u.id = user_id), false))::text,
            true);
        perform set_config('role', 'baas_user', true);
    end if;
    -- A one-column query returns that column's value; wider rows return objects.
    return query execute format(
        'select case when (select count(*) from jsonb_object_keys(j)) = 1
                     then (select value from jsonb_each(j)) else j end
           from (select to_jsonb(q) as j from (%s) q) s', query);
    perform set_config('role', v_prev_role, true);
    perform set_config('baas.claims', coalesce(v_prev_claims, ''), true);
end
$$;
comment on function baas.as_user(uuid, text) is
    'Run a query as the given user (NULL: anonymous) under the same policies as HTTP; rows as jsonb';

-- Owner delete policy (collections.on_owner_delete, owner_heir): what happens to a
-- deleted account's documents in each collection. `delete` (the default): they go
-- with it (the documents.owner foreign key cascades); `orphan`: they stay, owned by
-- nobody, under their ACLs; `transfer`: they go to the heir, or are orphaned if the
-- heir is gone (owner_heir is set null when the heir's account is deleted) or is the
-- deleted account itself.

-- The columns for an on_owner_delete option as options.rs canonicalised it; the heir
-- must be an account (22023 invalid_options).
create function baas._owner_delete_columns(v jsonb, out policy text, out heir uuid)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if v is null or jsonb_typeof(v) = 'null' then
        policy := 'delete';
    elsif jsonb_typeof(v) = 'string' then
        policy := v #>> '{}';
    else
        policy := 'transfer';
        heir := (v ->> 'transfer')::uuid;
        if not exists (select from baas.users u where u.id = heir) then
            perform baas._raise('22023', 'invalid_options',
                format('on_owner_delete: no user with id %s to transfer documents to', heir));
        end if;
    end if;
end
$$;



-- Before an account's row goes (and the foreign key cascade deletes its documents):
-- re-own its documents in orphan and transfer collections. The counts are kept for the
-- user.delete audit entry (sql/audit.sql, _audit_users), per account, for this
-- transaction. SECURITY DEFINER: the documents guard lets the extension change owners.
create function baas._users_owner_delete() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    n_orphaned bigint;
    n_transferred bigint;
begin
    if baas._restoring() then
        return old;
    end if;
    with moved as (
        update baas.documents d
           set owner = case when c.on_owner_delete = 'transfer' and c.owner_heir is distinct from old.id
                                 -- An heir deleted earlier by the same statement (a purge, a
                                 -- DBA's multi-row delete) still stands in owner_heir until
                                 -- the statement ends: orphaned, as for a gone heir.
                                 and exists (select from baas.users h where h.id = c.owner_heir)
                            then c.owner_heir end
          from baas.collections c
         where d.owner = old.id and c.id = d.collection_id and c.on_owner_delete in ('orphan', 'transfer')
        returning d.owner)
    select count(*) filter (where owner is null), count(*) filter (where owner is not null)
      into n_orphaned, n_transferred
      from moved;
    -- Only when something moved: a purge of many accounts in collections that delete
    -- makes no settings at all.
    if n_orphaned + n_transferred > 0 then
        perform set_config('baas.owner_delete_' || replace(old.id::text, '-', ''),
            jsonb_build_object('orphaned', n_orphaned, 'transferred', n_transferred)::text, true);
    end if;
    return old;
end
$$;
create trigger users_owner_delete before delete on baas.users
    for each row execute function baas._users_owner_delete();


-- sql/audit.sql: user.delete records what the owner delete policy did.
-- With what the owner delete policy did to the account's documents (sql/accounts.sql,
-- _users_owner_delete): {orphaned, transferred}.
create or replace function baas._audit_users() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_key text := 'baas.owner_delete_' || replace(old.id::text, '-', '');
    v_moved jsonb := nullif(pg_catalog.current_setting(v_key, true), '')::jsonb;
begin
    perform baas._audit('user.delete', old.id, details => jsonb_build_object('email', old.email)
        || coalesce(v_moved, '{"orphaned": 0, "transferred": 0}'));
    if v_moved is not null then
        perform pg_catalog.set_config(v_key, '', true);
    end if;
    return null;
end
$$;
-- sql/grants.sql, accounts: anonymous, sessions, suspension, owner delete.
revoke execute on function
    baas._session_json(baas.sessions, uuid),
    baas._live_sessions(uuid, uuid),
    baas._admin_user_json(baas.users),
    baas._user_for_admin(uuid),
    baas.list_sessions(),
    baas.end_session(uuid),
    baas.end_other_sessions(),
    baas.user_sessions(uuid),
    baas.sign_out_user(uuid),
    baas.suspend_user(uuid, text),
    baas.reactivate_user(uuid),
    baas.sign_in_anonymously(jsonb, text),
    baas.upgrade_account(text, text),
    baas.purge_anonymous_users(interval),
    baas.is_anonymous(),
    baas._owner_delete_columns(jsonb),
    baas.set_collection_options(text, jsonb),
    baas._users_owner_delete()
  from public;
grant execute on function
    baas.sign_in_anonymously(jsonb, text),
    baas.is_anonymous()
  to baas_anon, baas_user, baas_service;
grant execute on function
    baas.upgrade_account(text, text),
    baas.list_sessions(),
    baas.end_session(uuid),
    baas.end_other_sessions()
  to baas_user;
grant execute on function
    baas.suspend_user(uuid, text),
    baas.reactivate_user(uuid),
    baas.user_sessions(uuid),
    baas.sign_out_user(uuid),
    baas.purge_anonymous_users(interval),
    baas.set_collection_options(text, jsonb)
  to baas_service;

-- (files.sql) Signed download links carry the signer's is_anonymous claim.
-- Sign a download link's token with the active key: audience `<audience>:file`, bound
-- to the caller's session, the file and its version. API roles can call it directly,
-- so it makes file_link's checks itself (signed in; the file, at that version, one the
-- caller may read: as documents_read decides, through baas._acl_allows). The link
-- carries the caller's is_anonymous claim, so that it reads with the caller's principals.
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
        'sid', v_claims -> 'sid', 'is_anonymous', v_claims -> 'is_anonymous',
        'fid', fid, 'ver', ver, 'iat', v_now, 'exp', v_now + ttl)
        -- the session's assurance level, when its token has one (require_aal2 buckets)
        || jsonb_strip_nulls(jsonb_build_object('aal', v_claims -> 'aal')));
    return jsonb_build_object('url', format('/v1/files/%s?sig=%s', fid, v_token), 'token', v_token,
                              'expires_at', to_timestamp(v_now + ttl));
end
$$;

-------------------------------------------------------------------- accounts: import
-- The library's new function (extension/src/api/auth.rs), as pgrx declares it.
create function baas."_import_hash"(
	"hash" TEXT, /* Option < & str > */
	"algorithm" TEXT, /* Option < & str > */
	"salt" TEXT, /* Option < & str > */
	"firebase" jsonb /* Option < pgrx :: JsonB > */
) RETURNS TEXT /* Option < String > */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'import_hash_wrapper';

-- sql/accounts.sql, section "import".
-- Accounts brought over from another backend with their password hashes (bcrypt from
-- Parse Server, Supabase and PocketBase; Firebase's scrypt; argon2): each hash is checked
-- at import (baas._import_hash, extension/src/auth/import.rs), verified at the first
-- sign-in and replaced there by argon2id (baas.login). All rows or none: an error names
-- its row (counted from 1). Service and DBAs only; docs/accounts-import.md.
create function baas.import_users(users jsonb, options jsonb default '{}') returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    v_opts jsonb := coalesce(options, '{}');
    v_conflict text;
    v_firebase jsonb;
    r jsonb;
    n integer := 0;
    v_imported integer := 0;
    v_skipped integer := 0;
    v_id uuid;
    v_email text;
    v_hash text;
    v_created timestamptz;
    v_key text;
begin
    if users is null or jsonb_typeof(users) <> 'array' then
        perform baas._raise('22023', 'invalid_request', 'users must be a JSON array of user objects');
    end if;
    if jsonb_array_length(users) > 10000 then
        perform baas._raise('22023', 'invalid_request',
            format('at most 10000 users per call (%s given): import in batches', jsonb_array_length(users)));
    end if;
    if jsonb_typeof(v_opts) <> 'object' then
        perform baas._raise('22023', 'invalid_request', 'options must be a JSON object');
    end if;
    select k into v_key from jsonb_object_keys(v_opts) k where k not in ('on_conflict', 'firebase') limit 1;
    if v_key is not null then
        perform baas._raise('22023', 'invalid_request', format('unknown option %s (on_conflict, firebase)', v_key));
    end if;
    v_conflict := coalesce(v_opts ->> 'on_conflict', 'error');
    if v_conflict not in ('error', 'skip') then
        perform baas._raise('22023', 'invalid_request', 'on_conflict must be error or skip');
    end if;
    v_firebase := v_opts -> 'firebase';
    if v_firebase is not null and jsonb_typeof(v_firebase) <> 'object' then
        perform baas._raise('22023', 'invalid_request',
            'options.firebase must be {signer_key, salt_separator, rounds, mem_cost}');
    end if;
    for r in select x from jsonb_array_elements(users) x loop
        n := n + 1;
        if jsonb_typeof(r) <> 'object' then
            perform baas._raise('22023', 'invalid_request', format('row %s: not a JSON object', n));
        end if;
        select k into v_key from jsonb_object_keys(r) k
         where k not in ('id', 'email', 'email_verified', 'password_hash', 'hash_algorithm', 'salt', 'data', 'created_at')
         limit 1;
        if v_key is not null then
            perform baas._raise('22023', 'invalid_request', format(
                'row %s: unknown field %s (id, email, email_verified, password_hash, hash_algorithm, salt, data, created_at)', n, v_key));
        end if;
        if jsonb_typeof(r -> 'email') is distinct from 'string' then
            perform baas._raise('22023', 'invalid_request', format('row %s: email (a string) is required', n));
        end if;
        begin
            -- As at sign-up (not _email_key, whose fallback keeps what earlier releases stored).
            v_email := baas._normalize_email(r ->> 'email');
            v_id := coalesce((r ->> 'id')::uuid, baas.uuid7());
            v_created := coalesce((r ->> 'created_at')::timestamptz, now());
        exception
            when invalid_parameter_value then
                perform baas._raise('22023', 'invalid_email', format('row %s: %s is not a valid email address', n, left(r ->> 'email', 100)));
            when invalid_text_representation or datetime_field_overflow or invalid_datetime_format then
                perform baas._raise('22023', 'invalid_request', format('row %s: id must be a uuid and created_at a timestamp', n));
        end;
        if r ? 'data' and jsonb_typeof(r -> 'data') <> 'object' then
            perform baas._raise('22023', 'invalid_request', format('row %s: data must be a JSON object', n));
        end if;
        if r ? 'email_verified' and jsonb_typeof(r -> 'email_verified') <> 'boolean' then
            perform baas._raise('22023', 'invalid_request', format('row %s: email_verified must be true or false', n));
        end if;
        if (r ? 'password_hash' and jsonb_typeof(r -> 'password_hash') not in ('string', 'null'))
           or (r ? 'hash_algorithm' and jsonb_typeof(r -> 'hash_algorithm') not in ('string', 'null'))
           or (r ? 'salt' and jsonb_typeof(r -> 'salt') not in ('string', 'null')) then
            perform baas._raise('22023', 'invalid_request', format('row %s: password_hash, hash_algorithm and salt are strings', n));
        end if;
        v_hash := null;
        if r ->> 'password_hash' is not null then
            begin
                v_hash := baas._import_hash(r ->> 'password_hash', r ->> 'hash_algorithm', r ->> 'salt', v_firebase);
            exception when invalid_parameter_value then
                perform baas._raise('22023', 'invalid_hash', format('row %s: %s', n, sqlerrm));
            end;
        end if;
        begin
            insert into baas.users (id, email, password_hash, data, created_at, updated_at, email_verified_at)
            values (v_id, v_email, v_hash, coalesce(r -> 'data', '{}'), v_created, v_created,
                    case when (r -> 'email_verified') = 'true' then now() end);
            v_imported := v_imported + 1;
        exception when unique_violation then
            if v_conflict = 'skip' then
                v_skipped := v_skipped + 1;
            else
                perform baas._raise('23505', 'email_taken',
                    format('row %s: an account with this email or id already exists', n));
            end if;
        end;
    end loop;
    perform baas._audit('user.import', null, details => jsonb_build_object('imported', v_imported, 'skipped', v_skipped));
    return jsonb_build_object('imported', v_imported, 'skipped', v_skipped);
end
$$;
comment on function baas.import_users(jsonb, jsonb) is
    'Service/DBAs: import accounts with their password hashes (bcrypt, argon2, Firebase scrypt with options.firebase), all or none; {imported, skipped}';

-- sql/grants.sql, accounts: import.
revoke execute on function baas._import_hash(text, text, text, jsonb), baas.import_users(jsonb, jsonb) from public;
grant execute on function baas.import_users(jsonb, jsonb) to baas_service;

-------------------------------------------------------------------- email (issue 16, package B)
-- The library's new functions (extension/src/api/email.rs), as pgrx declares them.
create function baas."_render_template"(
	"template" TEXT, /* &str */
	"vars" jsonb, /* Json */
	"html" bool /* bool */
) RETURNS TEXT /* String */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'render_template_wrapper';

create function baas."_check_template"(
	"template" TEXT /* &str */
) RETURNS void
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'check_template_wrapper';

-- sql/email.sql, whole.
-- Email (issue 16): templates, and an outbox the proxy delivers over SMTP
-- (proxy/src/mail/, docs/email.md). A flow queues a message in its own transaction
-- (baas._enqueue_email): the mail leaves only if the event commits, and the proxy sends it
-- at least once, retrying with backoff. Loaded after accounts.sql: the settings columns
-- below then come after 0.6.0's, in a fresh install as in an upgraded database.

------------------------------------------------------------------------ settings
-- email_from: the From of every message (RFC 5322 mailbox, `addr@host` or
-- `Name <addr@host>`, the name made of words, dots and "quoted strings", so that
-- `"Acme, Inc." <addr@host>` passes and `Acme, Inc. <addr@host>`, which the proxy's
-- mail library refuses, does not); null: mail is not configured and nothing is queued.
-- app_name, app_url: what templates call the app and where their links point (https
-- or an app's own scheme, for deep links). A message that fails transiently is tried
-- again after email_retry_base, doubling up to email_retry_max (±10 %), at most
-- email_max_attempts times in all.
alter table baas.settings
    add column email_from text
        check (length(email_from) <= 320
               and (email_from ~ '^[^<>@\s]+@[^<>@\s]+$'
                    or email_from ~ '^((([-A-Za-z0-9!#$%&''*+/=?^_`{|}~]|[\u0080-\uffff])+|"([^"\\\r\n]|\\[^\r\n])*")( *(([-A-Za-z0-9!#$%&''*+/=?^_`{|}~]|[\u0080-\uffff])+|"([^"\\\r\n]|\\[^\r\n])*"|\.))* *)?<[^<>@\s]+@[^<>@\s]+>$')),
    add column app_name text not null default 'pgbaas'
        check (length(app_name) between 1 and 100 and app_name !~ '[\r\n]'),
    add column app_url text check (app_url ~ '^[a-z][a-z0-9+.-]*://[^#\s]+$' and length(app_url) <= 2000),
    add column email_default_language text not null default 'en'
        check (email_default_language ~ '^[a-z]{2,3}(-[a-z0-9]{2,8})*$'),
    add column email_retry_base interval not null default '30 seconds'
        check (email_retry_base between '1 second' and '1 hour'),
    add column email_retry_max interval not null default '1 hour'
        check (email_retry_max between '1 second' and '1 day'),
    add column email_max_attempts integer not null default 10
        check (email_max_attempts between 1 and 100);

------------------------------------------------------------------------ templates
-- One row per message kind and language; `{{ name }}` placeholders (baas._render_template).
-- Editable by DBAs; dumped with the database (a restore keeps edits).
create table baas.email_templates (
    name text not null check (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    language text not null check (language ~ '^[a-z]{2,3}(-[a-z0-9]{2,8})*$'),
    subject text not null check (length(subject) between 1 and 998 and subject !~ '[\r\n]'),
    text_body text not null check (octet_length(text_body) <= 102400),
    html_body text check (octet_length(html_body) <= 512000),
    updated_at timestamptz not null default now(),
    primary key (name, language)
);
revoke all on baas.email_templates from public;
alter table baas.email_templates enable row level security;
select pg_catalog.pg_extension_config_dump('baas.email_templates', '');

-- A template is checked when stored, so that rendering never fails on it; updated_at
-- follows edits. A restore loads the dumped rows over the ones CREATE EXTENSION seeded.
create function baas._email_template_check() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if tg_op = 'INSERT' and baas._restoring() then
        delete from baas.email_templates t where t.name = new.name and t.language = new.language;
        return new;
    end if;
    perform baas._check_template(new.subject);
    perform baas._check_template(new.text_body);
    if new.html_body is not null then
        perform baas._check_template(new.html_body);
    end if;
    if tg_op = 'UPDATE' then
        new.updated_at := now();
    end if;
    return new;
end
$$;
create trigger email_template_check before insert or update on baas.email_templates
    for each row execute function baas._email_template_check();

-- The messages account flows send, in English. Variables: app_name, app_url (from the
-- settings), link and code (every emailed secret has both), email, new_email,
-- expires_minutes.
insert into baas.email_templates (name, language, subject, text_body, html_body) values
('verify_email', 'en', 'Confirm your email address for {{ app_name }}',
 E'Hello,\n\nPlease confirm that {{ email }} is your email address by opening this link:\n\n{{ link }}\n\nOr enter this code in the app: {{ code }}\n\nThe link and the code expire in {{ expires_minutes }} minutes. If you did not sign up for {{ app_name }}, you can ignore this message.\n\n{{ app_name }}\n',
 E'<p>Hello,</p>\n<p>Please confirm that {{ email }} is your email address:</p>\n<p><a href="{{ link }}">Confirm my email address</a></p>\n<p>Or enter this code in the app: <strong>{{ code }}</strong></p>\n<p>The link and the code expire in {{ expires_minutes }} minutes. If you did not sign up for {{ app_name }}, you can ignore this message.</p>\n<p>{{ app_name }}</p>\n'),
('reset_password', 'en', 'Reset your {{ app_name }} password',
 E'Hello,\n\nSomeone asked to reset the password of the {{ app_name }} account {{ email }}. To choose a new password, open this link:\n\n{{ link }}\n\nOr enter this code in the app: {{ code }}\n\nThe link and the code expire in {{ expires_minutes }} minutes. If you did not ask for this, ignore this message: your password stays as it is.\n\n{{ app_name }}\n',
 E'<p>Hello,</p>\n<p>Someone asked to reset the password of the {{ app_name }} account {{ email }}.</p>\n<p><a href="{{ link }}">Choose a new password</a></p>\n<p>Or enter this code in the app: <strong>{{ code }}</strong></p>\n<p>The link and the code expire in {{ expires_minutes }} minutes. If you did not ask for this, ignore this message: your password stays as it is.</p>\n<p>{{ app_name }}</p>\n'),
('magic_link', 'en', 'Your {{ app_name }} sign-in link',
 E'Hello,\n\nOpen this link to sign in to {{ app_name }} as {{ email }}:\n\n{{ link }}\n\nOr enter this code in the app: {{ code }}\n\nThe link and the code work once and expire in {{ expires_minutes }} minutes. If you did not ask to sign in, you can ignore this message.\n\n{{ app_name }}\n',
 E'<p>Hello,</p>\n<p><a href="{{ link }}">Sign in to {{ app_name }}</a> as {{ email }}.</p>\n<p>Or enter this code in the app: <strong>{{ code }}</strong></p>\n<p>The link and the code work once and expire in {{ expires_minutes }} minutes. If you did not ask to sign in, you can ignore this message.</p>\n<p>{{ app_name }}</p>\n'),
('email_change', 'en', 'Confirm your new email address for {{ app_name }}',
 E'Hello,\n\nSomeone asked to change the email address of a {{ app_name }} account to {{ new_email }}. To confirm, open this link:\n\n{{ link }}\n\nOr enter this code in the app: {{ code }}\n\nThe link and the code expire in {{ expires_minutes }} minutes. If you did not ask for this, ignore this message: nothing changes.\n\n{{ app_name }}\n',
 E'<p>Hello,</p>\n<p>Someone asked to change the email address of a {{ app_name }} account to {{ new_email }}.</p>\n<p><a href="{{ link }}">Confirm my new email address</a></p>\n<p>Or enter this code in the app: <strong>{{ code }}</strong></p>\n<p>The link and the code expire in {{ expires_minutes }} minutes. If you did not ask for this, ignore this message: nothing changes.</p>\n<p>{{ app_name }}</p>\n'),
('email_changed_notice', 'en', 'The email address of your {{ app_name }} account changed',
 E'Hello,\n\nThe email address of your {{ app_name }} account was changed from {{ email }} to {{ new_email }}. Messages about the account now go to the new address.\n\nIf you did not make this change, contact the {{ app_name }} team at once.\n\n{{ app_name }}\n',
 E'<p>Hello,</p>\n<p>The email address of your {{ app_name }} account was changed from {{ email }} to {{ new_email }}. Messages about the account now go to the new address.</p>\n<p>If you did not make this change, contact the {{ app_name }} team at once.</p>\n<p>{{ app_name }}</p>\n'),
('password_changed', 'en', 'Your {{ app_name }} password was changed',
 E'Hello,\n\nThe password of the {{ app_name }} account {{ email }} was just changed, and every device signed in to it was signed out.\n\nIf you did not make this change, reset your password at once and contact the {{ app_name }} team.\n\n{{ app_name }}\n',
 E'<p>Hello,</p>\n<p>The password of the {{ app_name }} account {{ email }} was just changed, and every device signed in to it was signed out.</p>\n<p>If you did not make this change, reset your password at once and contact the {{ app_name }} team.</p>\n<p>{{ app_name }}</p>\n');

------------------------------------------------------------------------ outbox
-- Messages to send, rendered when queued. Not dumped: bodies hold live links and codes,
-- so pending mail is lost on a restore (docs/email.md). The proxy claims due messages
-- for a lease (status sending), then marks them sent (bodies cleared) or failed.
create table baas.email_outbox (
    id bigint generated always as identity primary key,
    created_at timestamptz not null default now(),
    template text not null,
    language text not null,
    from_address text not null,
    to_address text not null,
    user_id uuid references baas.users (id) on delete set null,
    -- '<uuid7@from-domain>': a message sent again after a lost acknowledgement keeps it,
    -- so receivers can drop the duplicate.
    message_id text not null unique,
    subject text not null,
    text_body text,
    html_body text,
    status text not null default 'pending' check (status in ('pending', 'sending', 'sent', 'failed')),
    attempts integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    claimed_until timestamptz,
    last_error text check (length(last_error) <= 2000),
    sent_at timestamptz
);
create index email_outbox_due_idx on baas.email_outbox (next_attempt_at, id) where status in ('pending', 'sending');
create index email_outbox_to_idx on baas.email_outbox (to_address, created_at);
revoke all on baas.email_outbox from public;
alter table baas.email_outbox enable row level security;

-- DBAs: messages that will not be sent (a permanent refusal, or email_max_attempts
-- used up), newest first. Send one again with baas.retry_email(id).
create view baas.email_failures as
    select o.id, o.created_at, o.template, o.to_address, o.attempts, o.last_error
      from baas.email_outbox o
     where o.status = 'failed'
     order by o.created_at desc, o.id desc;
comment on view baas.email_failures is
    'DBAs: outbox messages that failed for good (permanent SMTP refusal or too many attempts), with the last error';
revoke all on baas.email_failures from public;

------------------------------------------------------------------------ rendering
-- subject, text_body and html_body of template `template` in the best language
-- (language_used):
-- exactly `language`, else its primary subtag (pt-BR -> pt), else
-- email_default_language, else en. vars: a JSON object; app_name and app_url come from
-- the settings unless vars has them. 22023 invalid_template: no such template.
create function baas._render_email(template text, language text, vars jsonb)
returns table (subject text, text_body text, html_body text, language_used text)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    s baas.settings;
    t baas.email_templates;
    v jsonb;
begin
    select * into strict s from baas.settings;
    select * into t from baas.email_templates e
     where e.name = _render_email.template
       and e.language in (_render_email.language, split_part(_render_email.language, '-', 1),
                          s.email_default_language, 'en')
     order by case e.language
                  when _render_email.language then 0
                  when split_part(_render_email.language, '-', 1) then 1
                  when s.email_default_language then 2
                  else 3 end
     limit 1;
    if not found then
        perform baas._raise('22023', 'invalid_template', format('no email template named %L', _render_email.template));
    end if;
    v := jsonb_strip_nulls(jsonb_build_object('app_name', s.app_name, 'app_url', s.app_url))
         || case when jsonb_typeof(vars) = 'object' then vars else '{}'::jsonb end;
    return query select baas._render_template(t.subject, v, false),
                        baas._render_template(t.text_body, v, false),
                        case when t.html_body is not null then baas._render_template(t.html_body, v, true) end,
                        t.language;
end
$$;

-- Queue one message (account flows call this in their own transaction): render it,
-- store it, wake the proxies (NOTIFY baas_outbox, delivered at commit). Returns its id.
-- 55000 email_not_configured: settings.email_from is not set.
create function baas._enqueue_email(template text, to_address text, user_id uuid, language text, vars jsonb)
returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    s baas.settings;
    r record;
    v_id bigint;
    v_domain text;
begin
    select * into strict s from baas.settings;
    if s.email_from is null then
        perform baas._raise('55000', 'email_not_configured',
            'email is not configured: set baas.settings.email_from (docs/email.md)');
    end if;
    select * into r from baas._render_email(template, coalesce(language, s.email_default_language), vars);
    v_domain := coalesce(substring(s.email_from from '@([^<>@\s]+)>?\s*$'), 'pgbaas');
    insert into baas.email_outbox (template, language, from_address, to_address, user_id, message_id,
                                   subject, text_body, html_body)
    values (template, r.language_used, s.email_from, to_address, user_id,
            '<' || baas.uuid7() || '@' || v_domain || '>', r.subject, r.text_body, r.html_body)
    returning id into v_id;
    perform pg_notify('baas_outbox', '');
    return v_id;
end
$$;

-- Service tokens and DBAs: send template `template` to one address (normalised as
-- sign-up does). 22023 invalid_email, invalid_template (also: the rendered message
-- would exceed 4 MB), invalid_request (vars not an object, or over 64 KB of JSON);
-- 55000 email_not_configured.
create function baas.send_email(to_address text, template text, vars jsonb default '{}', language text default null)
returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_to text;
    v_user uuid;
begin
    if to_address is null or template is null then
        perform baas._raise('22023', 'invalid_request', 'to_address and template are required');
    end if;
    if vars is not null and jsonb_typeof(vars) <> 'object' then
        perform baas._raise('22023', 'invalid_request', 'vars must be a JSON object');
    end if;
    if octet_length(vars::text) > 65536 then
        perform baas._raise('22023', 'invalid_request', 'vars must be at most 64 KB of JSON');
    end if;
    if language is not null and language !~ '^[a-z]{2,3}(-[a-z0-9]{2,8})*$' then
        perform baas._raise('22023', 'invalid_request', 'language must be a tag such as en or pt-br (lower case)');
    end if;
    v_to := baas._normalize_email(to_address);
    select u.id into v_user from baas.users u where u.email = v_to;
    return baas._enqueue_email(template, v_to, v_user, language, coalesce(vars, '{}'));
end
$$;
comment on function baas.send_email(text, text, jsonb, text) is
    'Service/DBA: queue template `template` (baas.email_templates) to one address with these variables; returns the outbox id';

------------------------------------------------------------------------ the proxy's side
-- Claim up to `max` due messages for `lease_secs` (several proxies: SKIP LOCKED, and a
-- lease keeps the others off while one sends). Counts the attempt now, so that even a
-- message that kills its sender stops after email_max_attempts: such a message, its
-- lease lapsed with no attempt left, is failed here, and so is a pending one left with
-- no attempt after a DBA lowered email_max_attempts.
create function baas._outbox_claim(max integer, lease_secs integer)
returns table (id bigint, from_address text, to_address text, message_id text, subject text,
               text_body text, html_body text, attempt integer)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_max_attempts integer;
begin
    if max is null or max not between 1 and 1000 or lease_secs is null or lease_secs not between 1 and 86400 then
        perform baas._raise('22023', 'invalid_request', 'max must be 1..1000 and lease_secs 1..86400');
    end if;
    select s.email_max_attempts into strict v_max_attempts from baas.settings s;
    update baas.email_outbox o
       set status = 'failed', claimed_until = null,
           last_error = left(case when o.status = 'sending'
                                  then 'gave up after ' || o.attempts || ' attempts: the last one never reported back (sender stopped mid-send?)'
                                  else 'gave up after ' || o.attempts || ' attempts (email_max_attempts is now ' || v_max_attempts || ')'
                             end || coalesce('; before: ' || o.last_error, ''), 2000)
     where o.id in (select x.id from baas.email_outbox x
                     where (x.status = 'pending' or (x.status = 'sending' and x.claimed_until < now()))
                       and x.attempts >= v_max_attempts
                     order by x.next_attempt_at, x.id
                     limit 100
                       for update skip locked);
    return query
    update baas.email_outbox o
       set status = 'sending', attempts = o.attempts + 1,
           claimed_until = now() + make_interval(secs => lease_secs)
     where o.id in (select x.id from baas.email_outbox x
                     where x.status in ('pending', 'sending') and x.next_attempt_at <= now()
                       and (x.claimed_until is null or x.claimed_until < now())
                       and x.attempts < v_max_attempts
                     order by x.next_attempt_at, x.id
                     limit max
                       for update skip locked)
    returning o.id, o.from_address, o.to_address, o.message_id, o.subject, o.text_body, o.html_body, o.attempts;
end
$$;

-- The server accepted attempt `attempt` of message `id`: sent, bodies cleared. A
-- report for an attempt that is no longer the latest (its lease lapsed and another
-- claim followed) changes nothing.
create function baas._outbox_sent(id bigint, attempt integer) returns void
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    update baas.email_outbox o
       set status = 'sent', sent_at = now(), claimed_until = null, text_body = null, html_body = null
     where o.id = _outbox_sent.id and o.attempts = _outbox_sent.attempt and o.status = 'sending'
$$;

-- Attempt `attempt` of message `id` failed with `error`. Permanent (a 5xx, a message
-- that cannot be built) or out of attempts: failed, kept for baas.email_failures.
-- Otherwise pending again after email_retry_base * 2^(attempts-1), at most
-- email_retry_max, ±10 % so that retries of many messages spread out.
create function baas._outbox_failed(id bigint, attempt integer, error text, permanent boolean) returns void
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    update baas.email_outbox o
       set status = case when _outbox_failed.permanent or o.attempts >= s.email_max_attempts then 'failed' else 'pending' end,
           next_attempt_at = now() + least(s.email_retry_base * power(2, least(o.attempts - 1, 30)), s.email_retry_max)
                                     * (0.9 + 0.2 * random()),
           claimed_until = null,
           last_error = left(coalesce(_outbox_failed.error, 'unknown error'), 2000)
      from baas.settings s
     where o.id = _outbox_failed.id and o.attempts = _outbox_failed.attempt and o.status = 'sending'
$$;

------------------------------------------------------------------------ administration
-- Service tokens and DBAs: send a failed message again (its attempts start afresh).
-- P0002 email_not_found: no failed message with this id.
create function baas.retry_email(id bigint) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    update baas.email_outbox o
       set status = 'pending', attempts = 0, next_attempt_at = now(), claimed_until = null
     where o.id = retry_email.id and o.status = 'failed';
    if not found then
        perform baas._raise('P0002', 'email_not_found', format('no failed email with id %s', retry_email.id));
    end if;
    perform pg_notify('baas_outbox', '');
end
$$;
comment on function baas.retry_email(bigint) is
    'Service/DBA: queue a failed outbox message again, with a fresh count of attempts';

-- Service tokens and DBAs (or cron): delete sent and failed messages older than
-- `older_than` (at least 1 day); pending ones stay. Returns how many went.
create function baas.purge_email_outbox(older_than interval) returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    n bigint;
begin
    if older_than is null or older_than < interval '1 day' then
        perform baas._raise('22023', 'invalid_request', 'older_than must be at least 1 day');
    end if;
    delete from baas.email_outbox o
     where o.status in ('sent', 'failed') and o.created_at < now() - older_than;
    get diagnostics n = row_count;
    return n;
end
$$;
comment on function baas.purge_email_outbox(interval) is
    'Service/DBA: delete sent and failed outbox messages older than the interval (at least 1 day); returns how many';

-- sql/lints.sql: the email functions are documented public surface.
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
           '_normalize_content_type', '_file_type_allowed',
           -- multi-factor (sql/accounts.sql): the aal2 policies
           '_aal2_blocked', '_aal2_blocked_indexes'])
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
           -- email (sql/email.sql)
           'send_email', 'retry_email', 'purge_email_outbox',
           -- accounts: email flows (sql/accounts.sql)
           'request_verification', 'request_password_reset', 'request_magic_link', 'verify',
           'reset_password', 'request_email_change',
           -- multi-factor (sql/accounts.sql)
           'mfa_enroll_totp', 'mfa_verify_factor', 'mfa_challenge', 'mfa_unenroll', 'mfa_recovery_codes',
           'mfa_status', 'admin_reset_mfa', 'aal', 'require_aal2', 'set_collection_options',
           -- accounts: anonymous, sessions, suspension (sql/accounts.sql)
           'sign_in_anonymously', 'upgrade_account', 'purge_anonymous_users', 'list_sessions',
           'end_session', 'end_other_sessions', 'user_sessions', 'sign_out_user', 'suspend_user',
           'reactivate_user', 'is_anonymous',
           -- accounts: import (sql/accounts.sql)
           'import_users',
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
                                  'documents_update', 'documents_delete', 'documents_aal'))
        or (p.polrelid = 'baas.index_entries'::regclass
            and p.polname not in ('index_entries_service', 'index_entries_read', 'index_entries_aal'))
    union all
    -- 4c'. The aal2 rule (sql/accounts.sql, multi-factor): restrictive, for the two API
    --      roles that obey ACLs, with exactly its text (a permissive or loosened copy
    --      would let aal1 callers into require_aal2 collections).
    select 'policy_drift', format('policy %I on %s', v.polname, v.rel),
           case when p.oid is null then 'missing: sql/accounts.sql creates it'
                else format('not the restrictive aal2 rule: %s', pg_get_expr(p.polqual, p.polrelid)) end
      from (values ('documents_aal', 'baas.documents', '*',
                    '(collection_id <> ALL (( SELECT baas._aal2_blocked() AS _aal2_blocked)::integer[]))'),
                   ('index_entries_aal', 'baas.index_entries', 'r',
                    '(index_id <> ALL (( SELECT baas._aal2_blocked_indexes() AS _aal2_blocked_indexes)::integer[]))')) v(polname, rel, cmd, qual)
      left join pg_policy p on p.polname = v.polname and p.polrelid = v.rel::regclass
     where p.oid is null or p.polpermissive or p.polcmd::text <> v.cmd
        or pg_get_expr(p.polqual, p.polrelid) is distinct from v.qual
        or (v.cmd = '*' and pg_get_expr(p.polwithcheck, p.polrelid) is distinct from v.qual)
        or (v.cmd <> '*' and p.polwithcheck is not null)
        or (select array_agg(x order by x) from unnest(p.polroles::oid[]) x)
           is distinct from (select array_agg(x order by x)
                               from unnest(array['baas_anon'::regrole::oid, 'baas_user'::regrole::oid]) x)
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

-- sql/grants.sql, email section; no PUBLIC execute on the new functions.
revoke execute on function
    baas._render_template(text, jsonb, boolean),
    baas._check_template(text),
    baas._email_template_check(),
    baas._render_email(text, text, jsonb),
    baas._enqueue_email(text, text, uuid, text, jsonb),
    baas.send_email(text, text, jsonb, text),
    baas._outbox_claim(integer, integer),
    baas._outbox_sent(bigint, integer),
    baas._outbox_failed(bigint, integer, text, boolean),
    baas.retry_email(bigint),
    baas.purge_email_outbox(interval)
  from public;
grant execute on function
    baas.send_email(text, text, jsonb, text),
    baas.retry_email(bigint),
    baas.purge_email_outbox(interval)
  to baas_service;
grant execute on function
    baas._outbox_claim(integer, integer),
    baas._outbox_sent(bigint, integer),
    baas._outbox_failed(bigint, integer, text, boolean)
  to baas_authenticator;

-------------------------------------------------------------------- oidc (issue 16, package C)
-- sql/oidc.sql and the Rust functions it uses (extension/src/api/oidc.rs), as a fresh
-- install makes them; then grants.sql's oidc block.
create function baas."_oidc_check_jwks"(
	"jwks" jsonb /* Json */
) RETURNS jsonb /* JsonB */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'oidc_check_jwks_wrapper';

create function baas."_oidc_verify"(
	"id_token" TEXT, /* & str */
	"jwks" jsonb, /* Json */
	"issuers" TEXT[], /* Vec < Option < String > > */
	"client_ids" TEXT[], /* Vec < Option < String > > */
	"max_age" INT, /* i32 */
	"now" bigint /* i64 */
) RETURNS jsonb /* JsonB */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'oidc_verify_wrapper';

-- Sign in with Apple, Google or any OpenID Connect provider (issue 16, package C;
-- docs/oidc.md). The app signs its user in at the provider (its SDK), receives an ID
-- token and sends it here; Postgres verifies it (baas._oidc_verify, Rust: signature,
-- iss, aud/azp, exp, iat, nbf, sub) against the provider's keys, which the proxy fetches
-- into baas._oidc_jwks (proxy/src/oidc/). Providers are configured in SQL only.

------------------------------------------------------------------------ tables
-- verified: a provider's verified email signs into the account holding that address
-- when the account's address is verified too; never: an identity only ever signs into
-- the account it was linked to or made.
alter table baas.settings add column oidc_link_by_email text not null default 'verified'
    check (oidc_link_by_email in ('verified', 'never'));

create table baas.oidc_providers (
    name text primary key check (name ~ '^[a-z][a-z0-9_-]{0,31}$'),
    issuers text[] not null check (cardinality(issuers) between 1 and 4 and array_position(issuers, null) is null),
    client_ids text[] not null check (cardinality(client_ids) between 1 and 50 and array_position(client_ids, null) is null),
    jwks_url text not null check (length(jwks_url) <= 2048 and (jwks_url ~ '^https://[^\s/?#]+'
        or jwks_url ~ '^http://(127\.0\.0\.1|\[::1\]|localhost)(:\d+)?/')),
    nonce text not null default 'required' check (nonce in ('required', 'optional')),
    nonce_hash text not null default 'none' check (nonce_hash in ('none', 'sha256')),
    max_token_age interval not null default '1 hour' check (max_token_age between '1 minute' and '1 day'),
    enabled boolean not null default true,
    created_at timestamptz not null default now());
revoke all on baas.oidc_providers from public;
alter table baas.oidc_providers enable row level security;
select pg_catalog.pg_extension_config_dump('baas.oidc_providers', '');

-- The provider's public keys as the proxy last fetched them (only the usable signature
-- keys, baas._oidc_check_jwks). Not dumped: fetched again after a restore.
create table baas._oidc_jwks (
    provider text primary key references baas.oidc_providers on delete cascade,
    jwks jsonb not null,
    fetched_at timestamptz not null,
    expires_at timestamptz not null);
revoke all on baas._oidc_jwks from public;
alter table baas._oidc_jwks enable row level security;

-- Who an account is at a provider: (provider, sub) signs into user_id.
create table baas.identities (
    id uuid primary key,
    user_id uuid not null references baas.users (id) on delete cascade,
    -- Dropping a provider that accounts sign in with is refused (baas.drop_oidc_provider).
    provider text not null references baas.oidc_providers (name),
    subject text not null check (length(subject) between 1 and 255),
    email text check (length(email) <= 320),
    email_verified boolean not null default false,
    claims jsonb not null default '{}',
    created_at timestamptz not null default now(),
    last_sign_in_at timestamptz,
    unique (provider, subject));
create index identities_user_idx on baas.identities (user_id);
revoke all on baas.identities from public;
alter table baas.identities enable row level security;
select pg_catalog.pg_extension_config_dump('baas.identities', '');

-- ID tokens already used (sha256), kept until they expire: each signs in once.
create table baas._oidc_used_tokens (
    token_hash bytea primary key,
    expires_at timestamptz not null);
create index oidc_used_tokens_expiry_idx on baas._oidc_used_tokens (expires_at);
revoke all on baas._oidc_used_tokens from public;
alter table baas._oidc_used_tokens enable row level security;

------------------------------------------------------------------------ providers
create function baas._oidc_provider_json(p baas.oidc_providers) returns jsonb
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select jsonb_build_object(
        'name', p.name, 'issuers', to_jsonb(p.issuers), 'client_ids', to_jsonb(p.client_ids),
        'jwks_url', p.jwks_url, 'nonce', p.nonce, 'nonce_hash', p.nonce_hash,
        'max_token_age_secs', extract(epoch from p.max_token_age)::integer,
        'enabled', p.enabled, 'created_at', p.created_at,
        'keys', (select jsonb_build_object('count', jsonb_array_length(k.jwks -> 'keys'),
                                           'fetched_at', k.fetched_at, 'expires_at', k.expires_at)
                   from baas._oidc_jwks k where k.provider = p.name))
$$;

-- A text[] from a JSON array of non-empty strings, or 22023 invalid_options naming the key.
create function baas._oidc_text_array(v jsonb, what text) returns text[]
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
begin
    if jsonb_typeof(v) = 'string' then
        v := jsonb_build_array(v);
    end if;
    if jsonb_typeof(v) <> 'array' or jsonb_array_length(v) = 0
       or exists (select from jsonb_array_elements(v) e
                   where jsonb_typeof(e) <> 'string' or length(e #>> '{}') not between 1 and 1024) then
        perform baas._raise('22023', 'invalid_options', format('%s must be a non-empty array of non-empty strings', what));
    end if;
    return array(select e from jsonb_array_elements_text(v) e);
end
$$;

-- Add or change a provider. options: {preset?: "apple" | "google", issuers?, client_ids,
-- jwks_url?, nonce?: "required" | "optional", nonce_hash?: "none" | "sha256",
-- max_token_age_secs?, enabled?}. A preset fills issuers, jwks_url (and Apple's hashed
-- nonce); given keys win. Changing an existing provider keeps the keys not given.
create function baas.set_oidc_provider(name text, options jsonb) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    o jsonb := options;
    p baas.oidc_providers;
    v_old baas.oidc_providers;
    v_key text;
    v_age numeric;
begin
    if set_oidc_provider.name is null or set_oidc_provider.name !~ '^[a-z][a-z0-9_-]{0,31}$' then
        perform baas._raise('22023', 'invalid_options',
            'a provider name is 1 to 32 characters of a-z, 0-9, _ and -, starting with a letter');
    end if;
    if o is null or jsonb_typeof(o) <> 'object' then
        perform baas._raise('22023', 'invalid_options', 'options must be a JSON object');
    end if;
    select k into v_key from jsonb_object_keys(o) k
     where k not in ('preset', 'issuers', 'client_ids', 'jwks_url', 'nonce', 'nonce_hash', 'max_token_age_secs', 'enabled')
     limit 1;
    if v_key is not null then
        perform baas._raise('22023', 'invalid_options', format('unknown option %s', v_key));
    end if;
    select * into v_old from baas.oidc_providers x where x.name = set_oidc_provider.name for update;
    if found then
        p := v_old;
    else
        p.name := set_oidc_provider.name;
        p.nonce := 'required';
        p.nonce_hash := 'none';
        p.max_token_age := interval '1 hour';
        p.enabled := true;
        p.created_at := now();
    end if;
    case o ->> 'preset'
        when 'apple' then
            p.issuers := '{https://appleid.apple.com}';
            p.jwks_url := 'https://appleid.apple.com/auth/keys';
            p.nonce_hash := 'sha256';
        when 'google' then
            p.issuers := '{https://accounts.google.com,accounts.google.com}';
            p.jwks_url := 'https://www.googleapis.com/oauth2/v3/certs';
            p.nonce_hash := 'none';
        else
            if o ? 'preset' then
                perform baas._raise('22023', 'invalid_options', 'preset must be "apple" or "google"');
            end if;
    end case;
    if o ? 'issuers' then
        p.issuers := baas._oidc_text_array(o -> 'issuers', 'issuers');
    end if;
    if o ? 'client_ids' then
        p.client_ids := baas._oidc_text_array(o -> 'client_ids', 'client_ids');
    end if;
    if o ? 'jwks_url' then
        if jsonb_typeof(o -> 'jwks_url') <> 'string' then
            perform baas._raise('22023', 'invalid_options', 'jwks_url must be a string');
        end if;
        p.jwks_url := o ->> 'jwks_url';
    end if;
    if o ? 'nonce' then
        if coalesce(o ->> 'nonce', '') not in ('required', 'optional') or jsonb_typeof(o -> 'nonce') <> 'string' then
            perform baas._raise('22023', 'invalid_options', 'nonce must be "required" or "optional"');
        end if;
        p.nonce := o ->> 'nonce';
    end if;
    if o ? 'nonce_hash' then
        if coalesce(o ->> 'nonce_hash', '') not in ('none', 'sha256') or jsonb_typeof(o -> 'nonce_hash') <> 'string' then
            perform baas._raise('22023', 'invalid_options', 'nonce_hash must be "none" or "sha256"');
        end if;
        p.nonce_hash := o ->> 'nonce_hash';
    end if;
    if o ? 'max_token_age_secs' then
        if jsonb_typeof(o -> 'max_token_age_secs') <> 'number' then
            perform baas._raise('22023', 'invalid_options', 'max_token_age_secs must be a number of seconds, 60 to 86400');
        end if;
        v_age := (o ->> 'max_token_age_secs')::numeric;
        if v_age <> trunc(v_age) or v_age not between 60 and 86400 then
            perform baas._raise('22023', 'invalid_options', 'max_token_age_secs must be a number of seconds, 60 to 86400');
        end if;
        p.max_token_age := make_interval(secs => v_age);
    end if;
    if o ? 'enabled' then
        if jsonb_typeof(o -> 'enabled') <> 'boolean' then
            perform baas._raise('22023', 'invalid_options', 'enabled must be true or false');
        end if;
        p.enabled := (o -> 'enabled')::boolean;
    end if;
    if p.issuers is null then
        perform baas._raise('22023', 'invalid_options', 'issuers are required (or a preset)');
    end if;
    if p.client_ids is null then
        perform baas._raise('22023', 'invalid_options', 'client_ids are required: the app''s client ids (Apple: the bundle or services id; Google: the OAuth client ids)');
    end if;
    if p.jwks_url is null then
        perform baas._raise('22023', 'invalid_options', 'jwks_url is required (or a preset)');
    end if;
    if cardinality(p.issuers) > 4 or cardinality(p.client_ids) > 50 then
        perform baas._raise('22023', 'invalid_options', 'at most 4 issuers and 50 client_ids');
    end if;
    if length(p.jwks_url) > 2048 or not (p.jwks_url ~ '^https://[^\s/?#]+'
        or p.jwks_url ~ '^http://(127\.0\.0\.1|\[::1\]|localhost)(:\d+)?/') then
        perform baas._raise('22023', 'invalid_options', 'jwks_url must be an https URL (http only to this host: 127.0.0.1, [::1], localhost)');
    end if;
    -- Identities are (provider, sub): a sub is only the same person under the same
    -- issuer and keys, so these stay while any account signs in with the provider.
    if (v_old.issuers is distinct from p.issuers or v_old.jwks_url is distinct from p.jwks_url)
       and exists (select from baas.identities i where i.provider = p.name) then
        perform baas._raise('23503', 'provider_in_use',
            'accounts sign in with this provider: its issuers and jwks_url cannot change; add a new provider instead');
    end if;
    insert into baas.oidc_providers as x (name, issuers, client_ids, jwks_url, nonce, nonce_hash, max_token_age, enabled, created_at)
    values (p.name, p.issuers, p.client_ids, p.jwks_url, p.nonce, p.nonce_hash, p.max_token_age, p.enabled, p.created_at)
    on conflict on constraint oidc_providers_pkey do update
       set issuers = excluded.issuers, client_ids = excluded.client_ids, jwks_url = excluded.jwks_url,
           nonce = excluded.nonce, nonce_hash = excluded.nonce_hash, max_token_age = excluded.max_token_age,
           enabled = excluded.enabled
    returning * into p;
    -- Keys fetched from another address are not this provider's.
    if v_old.jwks_url is distinct from p.jwks_url then
        delete from baas._oidc_jwks k where k.provider = p.name;
    end if;
    perform baas._audit('oidc.provider.set', details => baas._oidc_provider_json(p) - 'keys');
    return baas._oidc_provider_json(p);
end
$$;
comment on function baas.set_oidc_provider(text, jsonb) is
    'Service/DBA: add or change an OpenID Connect provider (presets apple, google): {name, issuers, client_ids, jwks_url, nonce, nonce_hash, max_token_age_secs, enabled, keys}';

create function baas.drop_oidc_provider(name text) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    perform from baas.oidc_providers x where x.name = drop_oidc_provider.name for update;
    if not found then
        perform baas._raise('P0002', 'provider_not_found', 'no sign-in provider has this name');
    end if;
    if exists (select from baas.identities i where i.provider = drop_oidc_provider.name) then
        perform baas._raise('23503', 'provider_in_use',
            'accounts sign in with this provider; disable it (enabled: false) or unlink their identities first');
    end if;
    delete from baas.oidc_providers x where x.name = drop_oidc_provider.name;
    perform baas._audit('oidc.provider.drop', details => jsonb_build_object('name', drop_oidc_provider.name));
end
$$;
comment on function baas.drop_oidc_provider(text) is
    'Service/DBA: remove an OpenID Connect provider no identity uses (else 409 provider_in_use)';

create function baas.oidc_providers() returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select jsonb_build_object('items', coalesce(jsonb_agg(baas._oidc_provider_json(p) order by p.name), '[]'))
      from baas.oidc_providers p
$$;
comment on function baas.oidc_providers() is
    'Service/DBA: the OpenID Connect providers, {items: [...]}, with when their keys were fetched';

------------------------------------------------------------------------ keys (the proxy's side)
-- Enabled providers and when their stored keys expire (null: none yet).
create function baas._oidc_jwks_targets()
returns table (provider text, jwks_url text, expires_at timestamptz)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select p.name, p.jwks_url, k.expires_at
      from baas.oidc_providers p left join baas._oidc_jwks k on k.provider = p.name
     where p.enabled
     order by p.name
$$;

-- Store a provider's key set as fetched from url (its usable keys), for max_age seconds
-- (the proxy's Cache-Control reading, clamped here too to 5 minutes .. 1 day). Keys
-- from a url that is no longer the provider's jwks_url (a slow fetch that began before
-- set_oidc_provider changed it) are not stored.
create function baas._oidc_put_jwks(provider text, url text, jwks jsonb, max_age integer) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_keys jsonb := baas._oidc_check_jwks(jwks);
    v_url text;
begin
    select p.jwks_url into v_url from baas.oidc_providers p where p.name = _oidc_put_jwks.provider for share;
    if not found then
        perform baas._raise('P0002', 'provider_not_found', 'no sign-in provider has this name');
    end if;
    if v_url is distinct from _oidc_put_jwks.url then
        return;
    end if;
    insert into baas._oidc_jwks as k (provider, jwks, fetched_at, expires_at)
    values (_oidc_put_jwks.provider, v_keys, now(),
            now() + make_interval(secs => least(greatest(coalesce(max_age, 3600), 300), 86400)))
    on conflict on constraint _oidc_jwks_pkey do update
       set jwks = excluded.jwks, fetched_at = excluded.fetched_at, expires_at = excluded.expires_at;
end
$$;

------------------------------------------------------------------------ sign-in
-- A JSON boolean, or Apple's "true"/"false" strings; anything else is false.
create function baas._oidc_bool(v jsonb) returns boolean
language sql immutable
as $$
    select coalesce(v = 'true'::jsonb or v = '"true"'::jsonb, false)
$$;

-- The verified claims of id_token for provider p (enabled), its nonce checked and the
-- token spent: 28000 invalid_id_token naming the failed check, 28000 id_token_reused,
-- 55000 oidc_keys_stale with HINT the provider's name (the proxy fetches its keys
-- again and retries once).
create function baas._oidc_claims(p baas.oidc_providers, id_token text, nonce text) returns jsonb
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_claims jsonb;
    v_jwks jsonb;
    v_msg text;
    v_state text;
    v_nonce text;
    v_expected text;
begin
    if id_token is null or id_token = '' then
        perform baas._raise('22023', 'invalid_request', 'provider and id_token are required');
    end if;
    select k.jwks into v_jwks from baas._oidc_jwks k where k.provider = p.name;
    begin
        v_claims := baas._oidc_verify(id_token, coalesce(v_jwks, '{"keys": []}'), p.issuers, p.client_ids,
                                      extract(epoch from p.max_token_age)::integer,
                                      extract(epoch from now())::bigint);
    exception when object_not_in_prerequisite_state then
        get stacked diagnostics v_msg = message_text;
        raise exception using errcode = '55000', message = v_msg, detail = 'oidc_keys_stale', hint = p.name;
    end;
    -- The nonce: the app's, binding the token to its sign-in request (replay from
    -- elsewhere). Apple carries its SHA-256 in lower-case hex.
    if jsonb_typeof(v_claims -> 'nonce') not in ('string') then
        perform baas._raise('28000', 'invalid_id_token', 'the ID token''s nonce is not a string (nonce)');
    end if;
    v_nonce := v_claims ->> 'nonce';
    if _oidc_claims.nonce is not null then
        v_expected := case p.nonce_hash
            when 'sha256' then encode(sha256(convert_to(_oidc_claims.nonce, 'UTF8')), 'hex')
            else _oidc_claims.nonce end;
    end if;
    if p.nonce = 'required' and v_expected is null then
        perform baas._raise('28000', 'invalid_id_token', 'this provider needs the nonce the app signed in with (nonce)');
    end if;
    if p.nonce = 'required' and v_nonce is null then
        perform baas._raise('28000', 'invalid_id_token', 'the ID token carries no nonce (nonce)');
    end if;
    if (v_nonce is not null or v_expected is not null) and v_nonce is distinct from v_expected then
        perform baas._raise('28000', 'invalid_id_token', 'the nonce does not match the ID token''s (nonce)');
    end if;
    -- Single use. The signed part (header.payload) is what is recorded: an ECDSA
    -- signature (r, s) also verifies as (r, n - s), so the whole token is not unique.
    -- Kept while _oidc_verify could still accept it (its iat is at most max_token_age
    -- old, plus the leeway), and until it expires (exp plus the leeway, at most a day
    -- past its iat, the largest max_token_age) should max_token_age be raised later.
    delete from baas._oidc_used_tokens u where u.expires_at < now();
    insert into baas._oidc_used_tokens (token_hash, expires_at)
    values (sha256(convert_to(split_part(id_token, '.', 1) || '.' || split_part(id_token, '.', 2), 'UTF8')),
            greatest(now() + p.max_token_age + interval '2 minutes',
                     to_timestamp(least((v_claims ->> 'exp')::numeric + 60,
                                        (v_claims ->> 'iat')::numeric + 86460)::double precision)))
    on conflict do nothing;
    if not found then
        perform baas._raise('28000', 'id_token_reused', 'this ID token was used already; sign in at the provider again');
    end if;
    return v_claims;
end
$$;

-- A provider's enabled row, or P0002 provider_not_found.
create function baas._oidc_provider(name text) returns baas.oidc_providers
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
    p baas.oidc_providers;
begin
    select * into p from baas.oidc_providers x where x.name = _oidc_provider.name and x.enabled;
    if not found then
        perform baas._raise('P0002', 'provider_not_found', 'no enabled sign-in provider has this name');
    end if;
    return p;
end
$$;

-- The identity row a verified token describes (not stored).
create function baas._oidc_identity(p text, claims jsonb, user_id uuid) returns baas.identities
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    i baas.identities;
begin
    i.id := baas.uuid7();
    i.user_id := user_id;
    i.provider := p;
    i.subject := claims ->> 'sub';
    -- Stored only as sign-up would store it (not _email_key, whose fallback keeps what
    -- earlier releases stored); an address sign-up refuses is no address.
    if jsonb_typeof(claims -> 'email') = 'string' then
        begin
            i.email := baas._normalize_email(claims ->> 'email');
        exception when invalid_parameter_value then
            i.email := null;
        end;
    end if;
    i.email_verified := i.email is not null and baas._oidc_bool(claims -> 'email_verified');
    -- What an app may want later, nothing else (tokens, nonces stay out).
    i.claims := jsonb_strip_nulls(jsonb_build_object(
        'name', claims -> 'name', 'given_name', claims -> 'given_name', 'family_name', claims -> 'family_name',
        'picture', claims -> 'picture', 'locale', claims -> 'locale',
        'is_private_email', case when claims ? 'is_private_email' then to_jsonb(baas._oidc_bool(claims -> 'is_private_email')) end));
    if length(i.claims::text) > 4096 then
        i.claims := '{}';
    end if;
    i.created_at := now();
    i.last_sign_in_at := now();
    return i;
end
$$;

-- Sign in with a provider's ID token. The identity (provider, sub) known: its account.
-- Else, with oidc_link_by_email = 'verified', a provider-verified email of an account
-- whose address is verified: that account gains the identity, unless it has a second
-- factor or already an identity at this provider. An account holding a provider-verified
-- address otherwise: 409 identity_link_required (sign in to it, then link: a provider
-- address alone never takes over an account). No account, or an address the provider
-- did not verify (never looked up, never stored): a new account, with the address only
-- if the provider verified it. Then baas._complete_sign_in (suspension, MFA).
create function baas.oidc_sign_in(provider text, id_token text, nonce text default null,
                                  device_id text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    p baas.oidc_providers;
    c jsonb;
    i baas.identities;
    u baas.users;
    v_link text := (select s.oidc_link_by_email from baas.settings s);
begin
    if oidc_sign_in.device_id is not null and oidc_sign_in.device_id !~ '^[A-Za-z0-9._:-]{1,128}$' then
        perform baas._raise('22023', 'invalid_request',
            'device_id must be 1 to 128 characters from A-Z, a-z, 0-9 and . _ : -');
    end if;
    p := baas._oidc_provider(oidc_sign_in.provider);
    c := baas._oidc_claims(p, oidc_sign_in.id_token, oidc_sign_in.nonce);
    i := baas._oidc_identity(p.name, c, null);
    select x.user_id into i.user_id from baas.identities x
     where x.provider = p.name and x.subject = i.subject;
    if found then
        update baas.identities x set email = i.email, email_verified = i.email_verified, claims = i.claims,
                                     last_sign_in_at = now()
         where x.provider = p.name and x.subject = i.subject;
        select * into u from baas.users x where x.id = i.user_id;
    else
        if i.email_verified then
            select * into u from baas.users x where x.email = baas._email_key(c ->> 'email') for update;
        end if;
        if u.id is not null then
            if not (v_link = 'verified' and u.email_verified_at is not null) then
                perform baas._raise('23505', 'identity_link_required',
                    'an account with this email address exists; sign in to it and link this provider there (if you cannot, reset its password by email: that ends its sessions)');
            end if;
            -- Joining adds a way in: not past a second factor, nor as a second identity
            -- at the same provider.
            if exists (select from baas._mfa_factors f where f.user_id = u.id and f.status = 'verified')
               or exists (select from baas.identities x where x.user_id = u.id and x.provider = p.name) then
                perform baas._raise('23505', 'identity_link_required',
                    'an account with this email address exists; sign in to it and link this provider there');
            end if;
            if u.suspended_at is null then
                i.user_id := u.id;
                insert into baas.identities (id, user_id, provider, subject, email, email_verified, claims, created_at, last_sign_in_at)
                values (i.id, i.user_id, i.provider, i.subject, i.email, i.email_verified, i.claims, i.created_at, i.last_sign_in_at);
                perform baas._audit('identity.link', u.id, details => jsonb_build_object('provider', p.name, 'by', 'email'));
            end if;
        else
            begin
                insert into baas.users (id, email, email_verified_at, data)
                values (baas.uuid7(), case when i.email_verified then i.email end,
                        case when i.email_verified then now() end, '{}')
                returning * into u;
            exception when unique_violation then
                -- An account of this address made since the lookup above.
                perform baas._raise('23505', 'identity_link_required',
                    'an account with this email address exists; sign in to it and link this provider there (if you cannot, reset its password by email: that ends its sessions)');
            end;
            i.user_id := u.id;
            begin
                insert into baas.identities (id, user_id, provider, subject, email, email_verified, claims, created_at, last_sign_in_at)
                values (i.id, i.user_id, i.provider, i.subject, i.email, i.email_verified, i.claims, i.created_at, i.last_sign_in_at);
            exception when unique_violation then
                perform baas._raise('23505', 'identity_taken', 'this identity signed in at the same moment elsewhere; try again');
            end;
            perform baas._audit('signup.oidc', u.id, details => jsonb_build_object('provider', p.name, 'email', u.email));
        end if;
    end if;
    perform baas._audit('login.oidc', u.id, details => jsonb_build_object('provider', p.name));
    return baas._complete_sign_in(u, 'oidc', oidc_sign_in.device_id);
end
$$;
comment on function baas.oidc_sign_in(text, text, text, text) is
    'Sign in (or up) with an OpenID Connect ID token (Apple, Google, ...): tokens, or an MFA ticket; 409 identity_link_required when an account holds the address unproven';

------------------------------------------------------------------------ linking
create function baas._identity_json(i baas.identities) returns jsonb
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select jsonb_build_object('id', i.id, 'provider', i.provider, 'email', i.email,
                              'email_verified', i.email_verified, 'created_at', i.created_at,
                              'last_sign_in_at', i.last_sign_in_at)
$$;

-- Signed in: add a provider's identity to this account. An anonymous account becomes a
-- full one (same id; the provider's verified address when no account has it): a new
-- token pair comes back, as from baas.upgrade_account. Otherwise {identity, user}.
create function baas.link_identity(provider text, id_token text, nonce text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    v_sid uuid := baas._require_session();
    p baas.oidc_providers;
    c jsonb;
    i baas.identities;
    u baas.users;
    v_owner uuid;
begin
    select * into u from baas.users x where x.id = baas.uid() for update;
    if not found then
        perform baas._raise('28000', 'invalid_token', 'the account of this token no longer exists');
    end if;
    if coalesce(baas.claims() ->> 'aal', 'aal1') <> 'aal2'
       and exists (select from baas._mfa_factors f where f.user_id = u.id and f.status = 'verified') then
        perform baas._raise('42501', 'aal2_required', 'linking a sign-in provider needs a session signed in with the second factor');
    end if;
    p := baas._oidc_provider(link_identity.provider);
    c := baas._oidc_claims(p, link_identity.id_token, link_identity.nonce);
    i := baas._oidc_identity(p.name, c, u.id);
    select x.user_id into v_owner from baas.identities x where x.provider = p.name and x.subject = i.subject;
    if v_owner is not null and v_owner <> u.id then
        perform baas._raise('23505', 'identity_taken', 'this identity signs in to another account');
    end if;
    if v_owner is null then
        insert into baas.identities (id, user_id, provider, subject, email, email_verified, claims, created_at, last_sign_in_at)
        values (i.id, i.user_id, i.provider, i.subject, i.email, i.email_verified, i.claims, i.created_at, i.last_sign_in_at);
        perform baas._audit('identity.link', u.id, details => jsonb_build_object('provider', p.name, 'by', 'session'));
    else
        update baas.identities x set email = i.email, email_verified = i.email_verified, claims = i.claims
         where x.provider = p.name and x.subject = i.subject
        returning * into i;
    end if;
    if not u.is_anonymous then
        return jsonb_build_object('identity', baas._identity_json(i), 'user', baas._user_json(u));
    end if;
    update baas.users x
       set is_anonymous = false, updated_at = now(),
           email = case when i.email_verified and not exists (select from baas.users y where y.email = i.email)
                        then i.email end,
           email_verified_at = case when i.email_verified and not exists (select from baas.users y where y.email = i.email)
                                    then now() end
     where x.id = u.id
    returning * into u;
    update baas.refresh_tokens set used_at = clock_timestamp() where session_id = v_sid and used_at is null;
    update baas.sessions set refreshed_at = now(), last_used_at = now() where id = v_sid;
    perform baas._audit('user.upgrade', u.id, details => jsonb_build_object('provider', p.name, 'email', u.email));
    return baas._token_response(u, v_sid) || jsonb_build_object('identity', baas._identity_json(i));
end
$$;
comment on function baas.link_identity(text, text, text) is
    'Signed in: add an OpenID Connect identity to this account (an anonymous one becomes a full account: new token pair)';

create function baas.unlink_identity(id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    u baas.users;
    i baas.identities;
begin
    perform baas._require_session();
    select * into u from baas.users x where x.id = baas.uid() for update;
    select * into i from baas.identities x where x.id = unlink_identity.id and x.user_id = u.id;
    if not found then
        perform baas._raise('P0002', 'identity_not_found', 'this account has no identity with this id');
    end if;
    -- The address is a way in only while mail can be sent (a reset or magic link):
    -- as baas._email_configured decides.
    if u.password_hash is null
       and (u.email is null or exists (select from baas.settings s where s.email_from is null or s.app_url is null))
       and not exists (select from baas.identities x where x.user_id = u.id and x.id <> i.id) then
        perform baas._raise('55000', 'last_sign_in_method',
            'this identity is the account''s only way to sign in; set a password or link another provider first');
    end if;
    delete from baas.identities x where x.id = i.id;
    perform baas._audit('identity.unlink', u.id, details => jsonb_build_object('provider', i.provider));
end
$$;
comment on function baas.unlink_identity(uuid) is
    'Signed in: remove one of this account''s provider identities (409 last_sign_in_method when it is the only way in)';

create function baas.identities() returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select jsonb_build_object('items', coalesce(jsonb_agg(baas._identity_json(i) order by i.created_at, i.id), '[]'))
      from baas.identities i
     where i.user_id = baas.uid()
$$;
comment on function baas.identities() is
    'Signed in: this account''s provider identities, {items: [{id, provider, email, email_verified, created_at, last_sign_in_at}]}';

-- sql/grants.sql, oidc section; no PUBLIC execute on the new functions.
revoke execute on function
    baas._oidc_verify(text, jsonb, text[], text[], integer, bigint),
    baas._oidc_check_jwks(jsonb),
    baas._oidc_provider_json(baas.oidc_providers),
    baas._oidc_text_array(jsonb, text),
    baas.set_oidc_provider(text, jsonb),
    baas.drop_oidc_provider(text),
    baas.oidc_providers(),
    baas._oidc_jwks_targets(),
    baas._oidc_put_jwks(text, text, jsonb, integer),
    baas._oidc_bool(jsonb),
    baas._oidc_claims(baas.oidc_providers, text, text),
    baas._oidc_provider(text),
    baas._oidc_identity(text, jsonb, uuid),
    baas.oidc_sign_in(text, text, text, text),
    baas._identity_json(baas.identities),
    baas.link_identity(text, text, text),
    baas.unlink_identity(uuid),
    baas.identities()
  from public;
-- oidc (issue 16, package C): anyone may sign in with a provider's ID token; a signed-in
-- user links, lists and unlinks identities; service tokens (and DBAs) configure
-- providers; the proxy's login role fetches their keys (proxy/src/oidc/).
grant execute on function baas.oidc_sign_in(text, text, text, text) to baas_anon, baas_user, baas_service;
grant execute on function
    baas.link_identity(text, text, text),
    baas.unlink_identity(uuid),
    baas.identities()
  to baas_user;
grant execute on function
    baas.set_oidc_provider(text, jsonb),
    baas.drop_oidc_provider(text),
    baas.oidc_providers()
  to baas_service;
grant execute on function
    baas._oidc_jwks_targets(),
    baas._oidc_put_jwks(text, text, jsonb, integer)
  to baas_authenticator;

-- sql/lints.sql: the oidc functions are documented public surface.
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
           '_normalize_content_type', '_file_type_allowed',
           -- multi-factor (sql/accounts.sql): the aal2 policies
           '_aal2_blocked', '_aal2_blocked_indexes'])
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
           -- email (sql/email.sql)
           'send_email', 'retry_email', 'purge_email_outbox',
           -- accounts: email flows (sql/accounts.sql)
           'request_verification', 'request_password_reset', 'request_magic_link', 'verify',
           'reset_password', 'request_email_change',
           -- multi-factor (sql/accounts.sql)
           'mfa_enroll_totp', 'mfa_verify_factor', 'mfa_challenge', 'mfa_unenroll', 'mfa_recovery_codes',
           'mfa_status', 'admin_reset_mfa', 'aal', 'require_aal2', 'set_collection_options',
           -- accounts: anonymous, sessions, suspension (sql/accounts.sql)
           'sign_in_anonymously', 'upgrade_account', 'purge_anonymous_users', 'list_sessions',
           'end_session', 'end_other_sessions', 'user_sessions', 'sign_out_user', 'suspend_user',
           'reactivate_user', 'is_anonymous',
           -- accounts: import (sql/accounts.sql)
           'import_users',
           -- oidc (sql/oidc.sql)
           'set_oidc_provider', 'drop_oidc_provider', 'oidc_providers', 'oidc_sign_in', 'link_identity',
           'unlink_identity', 'identities',
           -- social (sql/social.sql)
           'follow', 'unfollow', 'remove_follower', 'answer_follow_request', 'follow_requests',
           'followers', 'following', 'update_profile', 'get_profile', 'lookup_user',
           'find_users',
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
                                  'documents_update', 'documents_delete', 'documents_aal'))
        or (p.polrelid = 'baas.index_entries'::regclass
            and p.polname not in ('index_entries_service', 'index_entries_read', 'index_entries_aal'))
    union all
    -- 4c'. The aal2 rule (sql/accounts.sql, multi-factor): restrictive, for the two API
    --      roles that obey ACLs, with exactly its text (a permissive or loosened copy
    --      would let aal1 callers into require_aal2 collections).
    select 'policy_drift', format('policy %I on %s', v.polname, v.rel),
           case when p.oid is null then 'missing: sql/accounts.sql creates it'
                else format('not the restrictive aal2 rule: %s', pg_get_expr(p.polqual, p.polrelid)) end
      from (values ('documents_aal', 'baas.documents', '*',
                    '(collection_id <> ALL (( SELECT baas._aal2_blocked() AS _aal2_blocked)::integer[]))'),
                   ('index_entries_aal', 'baas.index_entries', 'r',
                    '(index_id <> ALL (( SELECT baas._aal2_blocked_indexes() AS _aal2_blocked_indexes)::integer[]))')) v(polname, rel, cmd, qual)
      left join pg_policy p on p.polname = v.polname and p.polrelid = v.rel::regclass
     where p.oid is null or p.polpermissive or p.polcmd::text <> v.cmd
        or pg_get_expr(p.polqual, p.polrelid) is distinct from v.qual
        or (v.cmd = '*' and pg_get_expr(p.polwithcheck, p.polrelid) is distinct from v.qual)
        or (v.cmd <> '*' and p.polwithcheck is not null)
        or (select array_agg(x order by x) from unnest(p.polroles::oid[]) x)
           is distinct from (select array_agg(x order by x)
                               from unnest(array['baas_anon'::regrole::oid, 'baas_user'::regrole::oid]) x)
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

-------------------------------------------------------------------- social (issue 16, package D)
-- pgbaas social graph (issue 16, package D; docs/social.md): users follow users, a
-- followee's `followers:<id>` ACL principal reaches those who follow it (accepted), and
-- each account says who may see its graph and whether a follow needs its approval.
--
-- Permissions stay where they are decided: baas.principals() (replaced below, the text
-- of sql/permissions.sql plus the followers) gives a caller `followers:<x>` for every
-- accepted followee x that some ACL names; the row-level policies of
-- sql/permissions.sql are unchanged. The live feed's hub (proxy/src/realtime) applies
-- the same rule from `follow` events (sql/realtime.sql's capture, trigger below).

------------------------------------------------------------------------ columns
-- username: an optional unique handle (lower case, 3..30 of a-z 0-9 _ .), shown with
-- the profile and found by baas.lookup_user. The profile is three JSON objects, shown by
-- tier (baas._visible_profile): profile_public to anyone, profile_users to signed-in
-- full accounts, profile_followers to accepted followers (and the account itself);
-- users.data stays the account's own. findable: who may find the account by exact email
-- or username (self: nobody else, followers, users).
-- Who may list an account's followers and followees (baas._graph_visible): only the
-- account (self), its accepted followers, any signed-in full account (users), anyone
-- (public). follow_approval: a new follow stays pending until the account accepts it.
alter table baas.users
    add column username text unique check (username ~ '^[a-z0-9_][a-z0-9_.]{2,29}$'),
    add column profile_public jsonb not null default '{}' check (jsonb_typeof(profile_public) = 'object'),
    add column profile_users jsonb not null default '{}' check (jsonb_typeof(profile_users) = 'object'),
    add column profile_followers jsonb not null default '{}' check (jsonb_typeof(profile_followers) = 'object'),
    add column findable text not null default 'users' check (findable in ('self', 'followers', 'users')),
    add column graph_visibility text not null default 'self'
        check (graph_visibility in ('self', 'followers', 'users', 'public')),
    add column follow_approval boolean not null default false;

-- How many accounts one account may follow (pending included). principals() grows by
-- one entry per followee named in some ACL, and a policy's `acl && principals` costs
-- |acl|·|principals| per row: the bound keeps that cost bounded.
alter table baas.settings add column max_following integer not null default 5000
    check (max_following between 1 and 1000000);

------------------------------------------------------------------------ tables
-- follower follows followee; `pending` until the followee accepts (follow_approval).
create table baas.follows (
    follower uuid not null references baas.users (id) on delete cascade,
    followee uuid not null references baas.users (id) on delete cascade,
    status text not null check (status in ('pending', 'accepted')),
    created_at timestamptz not null default now(),
    accepted_at timestamptz,
    primary key (follower, followee),
    check (follower <> followee)
);
create index follows_followee_idx on baas.follows (followee, status, created_at, follower);
create index follows_following_idx on baas.follows (follower, status, created_at, followee);
revoke all on baas.follows from public;
alter table baas.follows enable row level security;
select pg_catalog.pg_extension_config_dump('baas.follows', '');

-- Accounts whose `followers:<id>` some ACL names (or named once): principals() adds
-- followers:<x> only for followees listed here, so following accounts nobody shares
-- with through followers costs nothing per statement. Insert-only, written in the
-- writer's transaction by the triggers below: a superset of what ACLs name.
create table baas._follow_audiences (
    user_id uuid primary key references baas.users (id) on delete cascade
);
revoke all on baas._follow_audiences from public;
alter table baas._follow_audiences enable row level security;
select pg_catalog.pg_extension_config_dump('baas._follow_audiences', '');

-- Followers an account removed (baas.remove_follower) or whose request it declined: a
-- new follow by one of them waits for the account's approval (pending), whatever its
-- follow_approval, until the account accepts it (baas.answer_follow_request).
create table baas._follow_removals (
    owner uuid not null references baas.users (id) on delete cascade,
    follower uuid not null references baas.users (id) on delete cascade,
    primary key (owner, follower)
);
revoke all on baas._follow_removals from public;
alter table baas._follow_removals enable row level security;
select pg_catalog.pg_extension_config_dump('baas._follow_removals', '');

------------------------------------------------------------------------ audiences
-- Note the accounts of the `followers:<uuid>` principals among `principals` (ACL
-- lists). Malformed entries and unknown accounts are passed over: ACLs written through
-- the API are checked (normalize_acl, _check_new_principals) before they get here.
create function baas._note_audiences(principals text[]) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    insert into baas._follow_audiences (user_id)
    select distinct u.id
      from unnest(principals) p
      join baas.users u on p ~ '^followers:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                       and u.id = substr(p, 11)::uuid
    on conflict do nothing;
end
$$;

-- A document (or file) written with a followers: principal in an ACL, or a
-- collection whose `create` list names one. Not while a dump loads: the audiences
-- table is dumped too.
create function baas._acl_audiences() returns trigger
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if baas._restoring() then
        return null;
    end if;
    if tg_table_name = 'collections' then
        perform baas._note_audiences(new.create_acl);
    else
        perform baas._note_audiences(new.acl_read || new.acl_update || new.acl_delete);
    end if;
    return null;
end
$$;
create trigger documents_audiences after insert or update of acl_read, acl_update, acl_delete on baas.documents
    for each row
    when (pg_catalog.array_to_string(new.acl_read || new.acl_update || new.acl_delete, ' ') like '%followers:%')
    execute function baas._acl_audiences();
create trigger collections_audiences after insert or update of create_acl on baas.collections
    for each row
    when (pg_catalog.array_to_string(new.create_acl, ' ') like '%followers:%')
    execute function baas._acl_audiences();

------------------------------------------------------------------------ principals
-- sql/permissions.sql's baas.principals(), plus `followers:<x>` for each account x the
-- caller follows (accepted) that some ACL names (baas._follow_audiences). One index
-- probe when the caller follows nobody.
create or replace function baas.principals() returns text[]
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := baas.uid();
    v_base text[];
    v_followers text[];
begin
    if v_uid is null then
        return array['public'];
    end if;
    v_base := array['public', 'authenticated',
                    case when baas.is_anonymous() then 'anonymous' else 'registered' end,
                    'user:' || v_uid::text];
    if exists (select from baas.role_members m where m.user_id = v_uid) then
        v_base := v_base || array(select 'role:' || r from unnest(baas.roles()) r);
    end if;
    v_followers := array(select 'followers:' || f.followee::text
                           from baas.follows f join baas._follow_audiences a on a.user_id = f.followee
                          where f.follower = v_uid and f.status = 'accepted'
                          order by f.followee);
    if cardinality(v_followers) > 0 then
        v_base := v_base || v_followers;
    end if;
    return v_base;
end
$$;
comment on function baas.principals() is 'ACL principals of the current caller';

-- sql/permissions.sql's check, plus `followers:<uuid>`: the account must exist.
create or replace function baas._check_new_principals(acl jsonb, existing text[] default '{}') returns void
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    p text;
begin
    for p in select distinct x from jsonb_each(acl) e, jsonb_array_elements_text(
                 case when jsonb_typeof(e.value) = 'array' then e.value else '[]' end) x
              where not x = any(coalesce(existing, '{}')) loop
        if p like 'user:%' and not (p ~ '^user:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                                    and exists (select from baas.users u where u.id = substr(p, 6)::uuid)) then
            raise exception using errcode = '22023', detail = 'unknown_principal',
                message = format('unknown principal %s: no such user', p);
        elsif p like 'followers:%' and not (p ~ '^followers:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                                            and exists (select from baas.users u where u.id = substr(p, 11)::uuid)) then
            raise exception using errcode = '22023', detail = 'unknown_principal',
                message = format('unknown principal %s: no such user', p);
        elsif p like 'role:%' and not exists (select from baas.roles r where r.name = substr(p, 6)) then
            raise exception using errcode = '22023', detail = 'unknown_principal',
                message = format('unknown principal %s: no such role', p);
        end if;
    end loop;
end
$$;

------------------------------------------------------------------------ tiers
-- May `viewer` (a user id, NULL: no token) list the followers and followees of `u`?
-- By u's graph_visibility: self, followers (accepted), users (any full account), public.
-- Anonymous and suspended accounts show nothing. The viewer's own kind comes from the
-- account row, so baas.as_user answers as HTTP does.
create function baas._graph_visible(u baas.users, viewer uuid) returns boolean
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if u.id is null or u.is_anonymous or u.suspended_at is not null then
        return false;
    end if;
    if u.graph_visibility = 'public' or viewer = u.id then
        return true;
    end if;
    if viewer is null then
        return false;
    end if;
    if u.graph_visibility = 'users' then
        return exists (select from baas.users v where v.id = viewer and not v.is_anonymous);
    end if;
    return u.graph_visibility = 'followers'
       and exists (select from baas.follows f where f.follower = viewer and f.followee = u.id and f.status = 'accepted');
end
$$;

-- Is `viewer` a signed-in full account (not anonymous)?
create function baas._registered(viewer uuid) returns boolean
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$ select viewer is not null and exists (select from baas.users v where v.id = viewer and not v.is_anonymous) $$;

-- Does `viewer` follow `u` (accepted), or is it `u`?
create function baas._follows_or_is(u uuid, viewer uuid) returns boolean
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$ select viewer is not null and (viewer = u or exists (
          select from baas.follows f where f.follower = viewer and f.followee = u and f.status = 'accepted')) $$;

-- The part of u's profile `viewer` sees, tiers merged public < users < followers (a
-- key of a higher tier wins): '{}' for anonymous and suspended accounts.
create function baas._visible_profile(u baas.users, viewer uuid) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v jsonb;
begin
    if u.id is null or u.is_anonymous or u.suspended_at is not null then
        return '{}';
    end if;
    v := u.profile_public;
    if u.profile_users <> '{}' and baas._registered(viewer) then
        v := v || u.profile_users;
    end if;
    if u.profile_followers <> '{}' and baas._follows_or_is(u.id, viewer) then
        v := v || u.profile_followers;
    end if;
    return v;
end
$$;

-- May `viewer` find u by its exact email or username (baas.lookup_user)?
create function baas._findable(u baas.users, viewer uuid) returns boolean
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if u.id is null or u.is_anonymous or u.suspended_at is not null or viewer is null then
        return false;
    end if;
    return viewer = u.id
        or (u.findable = 'users' and baas._registered(viewer))
        or (u.findable = 'followers' and baas._follows_or_is(u.id, viewer));
end
$$;

------------------------------------------------------------------------ following
-- The signed-in caller, who must hold a full account (anonymous accounts neither
-- follow nor are followed).
create function baas._social_caller(what text) returns baas.users
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    me baas.users;
begin
    perform baas._require_session();
    select * into me from baas.users u where u.id = baas.uid();
    if not found then
        perform baas._raise('28000', 'invalid_token', 'the account of this token no longer exists');
    end if;
    if me.is_anonymous then
        perform baas._raise('42501', 'anonymous_not_allowed',
            format('an anonymous account cannot %s; sign up first', what));
    end if;
    return me;
end
$$;

-- Follow an account: {status: "accepted"}, or "pending" when it approves its followers
-- itself. Following again answers the current status and changes nothing.
create function baas.follow(user_id uuid) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    me baas.users := baas._social_caller('follow anyone');
    t baas.users;
    v_status text;
    v_max integer;
begin
    if user_id is null then
        perform baas._raise('22023', 'invalid_request', 'a user id is required');
    end if;
    if user_id = me.id then
        perform baas._raise('22023', 'cannot_follow_self', 'an account cannot follow itself');
    end if;
    -- For share: a concurrent update_profile (follow_approval) waits, or is seen.
    select * into t from baas.users u where u.id = user_id for share;
    if not found or t.is_anonymous or t.suspended_at is not null then
        perform baas._raise('P0002', 'user_not_found', 'no such user');
    end if;
    -- One follow at a time per follower: the limit's count holds.
    perform pg_advisory_xact_lock(hashtextextended('baas.follow:' || me.id::text, 0));
    select f.status into v_status from baas.follows f where f.follower = me.id and f.followee = user_id;
    if found then
        return jsonb_build_object('status', v_status);
    end if;
    select s.max_following into v_max from baas.settings s;
    if (select count(*) from baas.follows f where f.follower = me.id) >= v_max then
        perform baas._raise('54000', 'following_limit',
            format('an account may follow at most %s accounts (setting max_following)', v_max));
    end if;
    -- A follower the account removed (or declined) asks again, approval or not.
    v_status := case when t.follow_approval
                       or exists (select from baas._follow_removals r where r.owner = user_id and r.follower = me.id)
                     then 'pending' else 'accepted' end;
    insert into baas.follows (follower, followee, status, accepted_at)
    values (me.id, user_id, v_status, case when v_status = 'accepted' then now() end);
    return jsonb_build_object('status', v_status);
end
$$;
comment on function baas.follow(uuid) is
    'Follow an account: {status: accepted|pending}; idempotent';

-- Stop following an account (or withdraw a pending request).
create function baas.unfollow(user_id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    me baas.users := baas._social_caller('follow anyone');
begin
    delete from baas.follows f where f.follower = me.id and f.followee = user_id;
    if not found then
        perform baas._raise('P0002', 'follow_not_found', 'you do not follow this account');
    end if;
end
$$;
comment on function baas.unfollow(uuid) is 'Stop following an account, or withdraw a follow request';

-- The caller stops being followed by `user_id` (accepted or pending).
create function baas.remove_follower(user_id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    me baas.users := baas._social_caller('have followers');
begin
    delete from baas.follows f where f.follower = user_id and f.followee = me.id;
    if not found then
        perform baas._raise('P0002', 'follow_not_found', 'this account does not follow you');
    end if;
    -- The removal sticks: a new follow by this account waits for approval.
    insert into baas._follow_removals (owner, follower) values (me.id, user_id) on conflict do nothing;
end
$$;
comment on function baas.remove_follower(uuid) is 'Remove one of your followers (or decline its request); its next follow waits for your approval';

-- Accept or decline a pending follow request of `user_id`.
create function baas.answer_follow_request(user_id uuid, accept boolean) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    me baas.users := baas._social_caller('have followers');
begin
    if accept then
        update baas.follows f set status = 'accepted', accepted_at = now()
         where f.follower = user_id and f.followee = me.id and f.status = 'pending';
    else
        delete from baas.follows f where f.follower = user_id and f.followee = me.id and f.status = 'pending';
    end if;
    if not found then
        perform baas._raise('P0002', 'follow_not_found', 'this account has no pending request to follow you');
    end if;
    -- Accepting forgives an earlier removal; declining is one (the next follow waits).
    if accept then
        delete from baas._follow_removals r where r.owner = me.id and r.follower = user_id;
    else
        insert into baas._follow_removals (owner, follower) values (me.id, user_id) on conflict do nothing;
    end if;
end
$$;
comment on function baas.answer_follow_request(uuid, boolean) is 'Accept (true) or decline (false) a follow request';

-- The caller's pending follow requests, oldest first.
create function baas.follow_requests() returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    me baas.users := baas._social_caller('have followers');
begin
    return jsonb_build_object('items', coalesce((
        select jsonb_agg(jsonb_build_object('id', f.follower, 'username', u.username, 'created_at', f.created_at) order by f.created_at, f.follower)
          from baas.follows f join baas.users u on u.id = f.follower
         where f.followee = me.id and f.status = 'pending' and u.suspended_at is null), '[]'));
end
$$;
comment on function baas.follow_requests() is 'Your pending follow requests: {items: [{id, username, created_at}]}';

-- One page of an account's accepted followers (`followers`) or followees, by the time
-- the follow began, then id; `after` is the last id of the previous page.
create function baas._follow_page(user_id uuid, followers boolean, lim integer, after uuid) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    t baas.users;
    v_at timestamptz;
    v_items jsonb;
    v_n integer;
begin
    select * into t from baas.users u where u.id = user_id;
    if not found or not baas._graph_visible(t, baas.uid()) then
        perform baas._raise('P0002', 'user_not_found', 'no such user, or its followers and followees are not visible to you');
    end if;
    if lim is null or lim not between 1 and 1000 then
        perform baas._raise('22023', 'invalid_query', 'limit must be a whole number from 1 to 1000');
    end if;
    if after is not null then
        select f.created_at into v_at from baas.follows f
         where f.status = 'accepted'
           and (case when followers then f.followee = user_id and f.follower = after
                     else f.follower = user_id and f.followee = after end);
        if not found then
            perform baas._raise('22023', 'invalid_query', 'after must be the id of an account on the previous page');
        end if;
    end if;
    select coalesce(jsonb_agg(x.item order by x.at, x.id), '[]'), count(*) into v_items, v_n from (
        select case when followers then f.follower else f.followee end as id, f.created_at as at,
               jsonb_build_object('id', case when followers then f.follower else f.followee end,
                                  'username', o.username,
                                  'since', coalesce(f.accepted_at, f.created_at)) as item
          from baas.follows f
          join baas.users o on o.id = case when followers then f.follower else f.followee end
         where f.status = 'accepted' and o.suspended_at is null
           and (case when followers then f.followee = user_id else f.follower = user_id end)
           and (v_at is null or (f.created_at, case when followers then f.follower else f.followee end) > (v_at, after))
         order by f.created_at, 1
         limit lim + 1) x;
    if v_n > lim then
        v_items := v_items - lim;
        return jsonb_build_object('items', v_items, 'next', v_items -> (lim - 1) -> 'id');
    end if;
    return jsonb_build_object('items', v_items);
end
$$;

create function baas.followers(user_id uuid, "limit" integer default 50, after uuid default null) returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
return baas._follow_page(user_id, true, "limit", after);
comment on function baas.followers(uuid, integer, uuid) is
    'An account''s accepted followers, if its graph_visibility lets you see them: {items: [{id, username, since}], next?}';

create function baas.following(user_id uuid, "limit" integer default 50, after uuid default null) returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
return baas._follow_page(user_id, false, "limit", after);
comment on function baas.following(uuid, integer, uuid) is
    'The accounts an account follows (accepted), if its graph_visibility lets you see them: {items: [{id, username, since}], next?}';

------------------------------------------------------------------------ profile
-- The caller's profile and social settings; each argument left NULL is kept. profile is
-- {public?, users?, followers?}, each an object merged into its tier as a JSON merge
-- patch (RFC 7396: null removes a key). Returns {user}.
create function baas.update_profile(username text default null, profile jsonb default null,
                                    findable text default null, graph_visibility text default null,
                                    follow_approval boolean default null, language text default null)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    me baas.users := baas._social_caller('have a profile');
    v_username text := lower(update_profile.username);
    v_profile jsonb := update_profile.profile;
    v_findable text := update_profile.findable;
    v_graph text := update_profile.graph_visibility;
    v_approval boolean := update_profile.follow_approval;
    v_language text := lower(update_profile.language);
    k text;
    v_pub jsonb := me.profile_public;
    v_usr jsonb := me.profile_users;
    v_fol jsonb := me.profile_followers;
begin
    if v_username is not null and v_username !~ '^[a-z0-9_][a-z0-9_.]{2,29}$' then
        perform baas._raise('22023', 'invalid_username',
            'a username is 3 to 30 characters: letters, digits, _ and . (not first)');
    end if;
    if v_findable is not null and v_findable not in ('self', 'followers', 'users') then
        perform baas._raise('22023', 'invalid_request', 'findable must be self, followers or users');
    end if;
    if v_graph is not null and v_graph not in ('self', 'followers', 'users', 'public') then
        perform baas._raise('22023', 'invalid_request', 'graph_visibility must be self, followers, users or public');
    end if;
    if v_language is not null and v_language !~ '^[a-z]{2,3}(-[a-z0-9]{2,8})*$' then
        perform baas._raise('22023', 'invalid_request', 'language must be a language tag such as en or pt-br');
    end if;
    if v_profile is not null then
        if jsonb_typeof(v_profile) <> 'object' then
            perform baas._raise('22023', 'invalid_request', 'profile must be an object {public?, users?, followers?}');
        end if;
        for k in select jsonb_object_keys(v_profile) loop
            if k not in ('public', 'users', 'followers') then
                perform baas._raise('22023', 'invalid_request',
                    format('profile has unknown tier %s; tiers are public, users, followers', to_jsonb(k)));
            end if;
            if jsonb_typeof(v_profile -> k) <> 'object' then
                perform baas._raise('22023', 'invalid_request', format('profile.%s must be an object', k));
            end if;
        end loop;
        v_pub := baas.merge_patch(v_pub, coalesce(v_profile -> 'public', '{}'));
        v_usr := baas.merge_patch(v_usr, coalesce(v_profile -> 'users', '{}'));
        v_fol := baas.merge_patch(v_fol, coalesce(v_profile -> 'followers', '{}'));
        if pg_column_size(v_pub) + pg_column_size(v_usr) + pg_column_size(v_fol) > 65536 then
            perform baas._raise('54000', 'profile_too_large', 'a profile holds at most 64 KiB');
        end if;
    end if;
    if v_username is not null and exists (select from baas.users u where u.username = v_username and u.id <> me.id) then
        perform baas._raise('23505', 'username_taken', 'this username is taken');
    end if;
    begin
        update baas.users u
           set username = coalesce(v_username, u.username),
               profile_public = v_pub, profile_users = v_usr, profile_followers = v_fol,
               findable = coalesce(v_findable, u.findable),
               graph_visibility = coalesce(v_graph, u.graph_visibility),
               follow_approval = coalesce(v_approval, u.follow_approval),
               language = coalesce(v_language, u.language),
               updated_at = now()
         where u.id = me.id
        returning * into me;
    exception when unique_violation then
        perform baas._raise('23505', 'username_taken', 'this username is taken');
    end;
    -- Turning approval off accepts the requests waiting for it, but not those of
    -- followers the account removed or declined (baas._follow_removals).
    if v_approval is false then
        update baas.follows f set status = 'accepted', accepted_at = now()
         where f.followee = me.id and f.status = 'pending'
           and not exists (select from baas._follow_removals r where r.owner = me.id and r.follower = f.follower);
    end if;
    return jsonb_build_object('user', baas._user_json(me));
end
$$;
comment on function baas.update_profile(text, jsonb, text, text, boolean, text) is
    'Change your username, profile tiers, findable, graph_visibility, follow_approval, language; returns {user}';

-- One account's profile as the caller may see it: {id, username, profile} and, when its
-- graph_visibility allows, follower and followee counts. 404 user_not_found for an
-- unknown, anonymous or suspended account, and for one that shows the caller nothing
-- (an empty profile for this viewer and a graph it may not see), unless the caller is
-- the account itself.
create function baas.get_profile(id uuid) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    v_viewer uuid := baas.uid();
    t baas.users;
    v_profile jsonb;
    v_graph boolean;
    v jsonb;
begin
    select * into t from baas.users u where u.id = id;
    v_profile := baas._visible_profile(t, v_viewer);
    v_graph := baas._graph_visible(t, v_viewer);
    if t.id is null or t.is_anonymous or t.suspended_at is not null
       or not (v_graph or v_profile <> '{}' or coalesce(v_viewer = t.id, false)) then
        perform baas._raise('P0002', 'user_not_found', 'no such user');
    end if;
    v := jsonb_build_object('id', t.id, 'username', t.username, 'profile', v_profile);
    if v_graph then
        v := v || jsonb_build_object(
            'followers', (select count(*) from baas.follows f join baas.users o on o.id = f.follower
                           where f.followee = t.id and f.status = 'accepted' and o.suspended_at is null),
            'following', (select count(*) from baas.follows f join baas.users o on o.id = f.followee
                           where f.follower = t.id and f.status = 'accepted' and o.suspended_at is null));
    end if;
    return v;
end
$$;
comment on function baas.get_profile(uuid) is
    'An account''s profile as you may see it: {id, username, profile, followers?, following?}';

-- Find an account by its exact email or username, if its `findable` lets the caller:
-- {id, username, profile}. By email only an account that verified its address (else
-- anyone could sign up with someone's address and be found as them). Unknown,
-- unverified and unfindable answer the same 404 after the same work (one probe).
-- Signed-in full accounts only; audited [user.lookup].
create function baas.lookup_user(email text default null, username text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    me baas.users := baas._social_caller('look accounts up');
    v_email text := lookup_user.email;
    v_username text := lookup_user.username;
    t baas.users;
begin
    if (v_email is null) = (v_username is null) then
        perform baas._raise('22023', 'invalid_request', 'give exactly one of email and username');
    end if;
    if v_email is not null then
        select * into t from baas.users u where u.email = baas._email_key(v_email) and u.email_verified_at is not null;
    else
        select * into t from baas.users u where u.username = lower(v_username);
    end if;
    perform baas._audit('user.lookup', me.id, details => jsonb_build_object(
        'by', case when v_email is not null then 'email' else 'username' end, 'found', baas._findable(t, me.id)));
    if not baas._findable(t, me.id) then
        perform baas._raise('P0002', 'user_not_found', 'no account can be found by this address or name');
    end if;
    return jsonb_build_object('id', t.id, 'username', t.username, 'profile', baas._visible_profile(t, me.id));
end
$$;
comment on function baas.lookup_user(text, text) is
    'Find an account by exact email or username (if its findable allows): {id, username, profile}';

-- The directory: accounts whose profile the caller may see some of, filtered and
-- ordered with the query language over the visible profile (`data`), `id` and
-- `created_at` (baas._compile_query, as baas.find): a field the caller may not see is
-- not there to match. Not `updated_at` (it would tell when hidden data changed: order
-- by it is refused, and it is null inside). offset at most 10000. {items: [{id, username, profile}], next?}; `next` (the last id)
-- when the page is full. Accounts showing the caller nothing are not listed.
create function baas.find_users(filter jsonb default '{}', "order" text default null,
                                "limit" integer default 50, "offset" integer default 0,
                                after uuid default null, fields text[] default null)
returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_viewer uuid := baas.uid();
    v_from constant text := '(select u.id, u.created_at, null::timestamptz as updated_at, u.username, baas._visible_profile(u, $2) as data '
                            'from baas.users u where not u.is_anonymous and u.suspended_at is null) d where d.data <> ''{}''';
    q jsonb;
    v_cursor jsonb;
    v_items jsonb;
    v_n integer;
begin
    if "limit" is null or "limit" not between 0 and 1000 then
        perform baas._raise('22023', 'invalid_query', 'limit must be between 0 and 1000');
    end if;
    if "offset" is null or "offset" not between 0 and 10000 then
        perform baas._raise('22023', 'invalid_query', 'offset must be between 0 and 10000; page on with after');
    end if;
    if fields is not null and exists (select from unnest(fields) f where f is null or f = '') then
        perform baas._raise('22023', 'invalid_query', 'fields must be field names');
    end if;
    if exists (select from unnest(string_to_array("order", ',')) k where btrim(k) ~ '^[-+]?updated_at$') then
        perform baas._raise('22023', 'invalid_query', 'the directory cannot be ordered by updated_at');
    end if;
    q := baas._compile_query(coalesce(filter, '{}'), "order", null, false);
    if after is not null then
        execute format('select %s from %s and d.id = $3', q ->> 'cursor', v_from)
           into v_cursor using q -> 'params', v_viewer, after;
        if v_cursor is null then
            perform baas._raise('22023', 'invalid_query', 'after: no such account in this directory');
        end if;
        q := baas._compile_query(coalesce(filter, '{}'), "order", v_cursor, false);
    end if;
    execute format(
        'select coalesce(jsonb_agg(x.item order by x.n), ''[]''), count(*) from ('
        '  select row_number() over (order by %s) as n, jsonb_build_object(''id'', d.id, ''username'', d.username, ''profile'', '
        '         case when $3::text[] is null then d.data else (select coalesce(jsonb_object_agg(e.key, e.value), ''{}'') '
        '              from jsonb_each(d.data) e where e.key = any($3)) end) as item'
        '    from %s and %s order by %s limit $4 offset $5) x',
        q ->> 'order', v_from, q ->> 'where', q ->> 'order')
      into v_items, v_n using q -> 'params', v_viewer, fields, "limit", "offset";
    if "limit" > 0 and v_n = "limit" then
        return jsonb_build_object('items', v_items, 'next', v_items -> ("limit" - 1) -> 'id');
    end if;
    return jsonb_build_object('items', v_items);
end
$$;
comment on function baas.find_users(jsonb, text, integer, integer, uuid, text[]) is
    'The directory: accounts by what of their profile you may see, with the query language: {items: [{id, username, profile}], next?}';

-- The user as the API shows it: sql/accounts.sql's, with the social settings.
create or replace function baas._user_json(u baas.users) returns jsonb
language sql stable parallel safe
as $$
    select pg_catalog.jsonb_build_object(
        'id', u.id, 'email', u.email, 'data', u.data,
        'is_anonymous', u.is_anonymous, 'email_verified', u.email_verified_at is not null,
        'username', u.username,
        'profile', pg_catalog.jsonb_build_object('public', u.profile_public, 'users', u.profile_users,
                                                 'followers', u.profile_followers),
        'findable', u.findable, 'graph_visibility', u.graph_visibility, 'follow_approval', u.follow_approval,
        'created_at', u.created_at, 'updated_at', u.updated_at)
$$;

------------------------------------------------------------------------ realtime
-- Follow events for the live feed's hub (proxy/src/realtime): a follow that becomes or
-- stops being accepted changes the follower's principals (followers:<followee>).
alter table baas.realtime_events drop constraint realtime_events_kind_check;
alter table baas.realtime_events add constraint realtime_events_kind_check
    check (kind in ('doc', 'member', 'nest', 'collection', 'reset', 'follow'));

create function baas._realtime_follow() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_prefix text;
    v_was boolean := tg_op in ('UPDATE', 'DELETE') and old.status = 'accepted';
    v_is boolean := tg_op in ('INSERT', 'UPDATE') and new.status = 'accepted';
begin
    if current_setting('wal_level') <> 'logical'
       or (current_setting('row_security') = 'off' and baas._restoring())
       or v_was = v_is then
        return null;
    end if;
    select p.prefix into v_prefix from baas._realtime_secret p;
    perform pg_logical_emit_message(true, v_prefix, jsonb_build_object('kind', 'follow', 'collection', null, 'body',
        jsonb_build_object('follower', case when v_is then new.follower else old.follower end,
                           'followee', case when v_is then new.followee else old.followee end,
                           'op', case when v_is then 'add' else 'remove' end))::text);
    return null;
end
$$;
create trigger follows_realtime after insert or update or delete on baas.follows
    for each row execute function baas._realtime_follow();

-- sql/realtime.sql's, plus each accepted follow as a membership of `followers:<followee>`:
-- the hub treats a follow like a direct role that is its own principal.
create or replace function baas._realtime_role_members(users uuid[]) returns table (user_id uuid, role text)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select m.user_id, m.role from baas.role_members m where m.user_id = any(users)
    union all
    select f.follower, 'followers:' || f.followee::text from baas.follows f
     where f.follower = any(users) and f.status = 'accepted'
$$;

-- sql/grants.sql, social section; no PUBLIC execute on the new functions.
revoke execute on function
    baas._note_audiences(text[]),
    baas._acl_audiences(),
    baas._graph_visible(baas.users, uuid),
    baas._registered(uuid),
    baas._follows_or_is(uuid, uuid),
    baas._visible_profile(baas.users, uuid),
    baas._findable(baas.users, uuid),
    baas._social_caller(text),
    baas.follow(uuid),
    baas.unfollow(uuid),
    baas.remove_follower(uuid),
    baas.answer_follow_request(uuid, boolean),
    baas.follow_requests(),
    baas._follow_page(uuid, boolean, integer, uuid),
    baas.followers(uuid, integer, uuid),
    baas.following(uuid, integer, uuid),
    baas.update_profile(text, jsonb, text, text, boolean, text),
    baas.get_profile(uuid),
    baas.lookup_user(text, text),
    baas.find_users(jsonb, text, integer, integer, uuid, text[]),
    baas._realtime_follow()
  from public;
-- social (issue 16, package D): following, profiles and look-ups need a full account
-- (the functions check); lists and profiles are for anyone the account's settings let
-- see them.
grant execute on function
    baas.follow(uuid),
    baas.unfollow(uuid),
    baas.remove_follower(uuid),
    baas.answer_follow_request(uuid, boolean),
    baas.follow_requests(),
    baas.update_profile(text, jsonb, text, text, boolean, text),
    baas.lookup_user(text, text)
  to baas_user;
grant execute on function
    baas.followers(uuid, integer, uuid),
    baas.following(uuid, integer, uuid),
    baas.get_profile(uuid),
    baas.find_users(jsonb, text, integer, integer, uuid, text[])
  to baas_anon, baas_user, baas_service;

-- Tell every proxy that the extension changed (see pgbaas--0.2.0--0.3.0.sql).
select pg_catalog.pg_notify('baas_extension', '0.7.0');
