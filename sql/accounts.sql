-- Account lifecycle beyond sign-up and sign-in (issue 16). Loaded after every other
-- file but grants.sql: the columns it adds to earlier tables then come last in a fresh
-- install, in the same order as in a database upgraded from an earlier release.

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

------------------------------------------------------------------------ account lifecycle
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

------------------------------------------------------------------------ anonymous, sessions, suspension, owner delete (issue 16)
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

-- Collections as the API shows them (files.sql's, re-created after the columns it
-- reads): a collection whose deleted owners' documents stay shows on_owner_delete.
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
            || case when c.on_owner_delete = 'orphan' then '{"on_owner_delete": "orphan"}'::jsonb
                    when c.on_owner_delete = 'transfer' then jsonb_build_object('on_owner_delete',
                        case when c.owner_heir is null then to_jsonb('orphan'::text)
                             else jsonb_build_object('transfer', c.owner_heir) end)
                    else '{}'::jsonb end)
$$;

-- Change options of an existing collection: on_owner_delete. Service tokens and DBAs.
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
    if options is null or jsonb_typeof(options) <> 'object' then
        perform baas._raise('22023', 'invalid_options', 'options must be a JSON object');
    end if;
    for k in select jsonb_object_keys(options) loop
        if k <> 'on_owner_delete' then
            perform baas._raise('22023', 'invalid_options',
                format('unknown option %s; set_collection_options takes on_owner_delete', to_jsonb(k)));
        end if;
    end loop;
    if options ? 'on_owner_delete' then
        select * into o from baas._owner_delete_columns(
            baas._normalize_collection_options(jsonb_build_object('on_owner_delete', options -> 'on_owner_delete'))
                -> 'on_owner_delete');
        update baas.collections x set on_owner_delete = o.policy, owner_heir = o.heir
         where x.id = c.id
        returning * into c;
    end if;
    perform baas._audit('collection.options', collection => c.name, details => options);
    return baas._collection_json(c);
end
$$;
comment on function baas.set_collection_options(text, jsonb) is
    'Service/DBAs: change a collection''s options (on_owner_delete: "delete", "orphan" or {"transfer": "<user id>"}); returns the collection';

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
