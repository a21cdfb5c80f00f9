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
begin
    if u.suspended_at is not null then
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

------------------------------------------------------------------------ import (issue 16)
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
        v_email := baas._email_key(r ->> 'email');
        if v_email is null then
            perform baas._raise('22023', 'invalid_email', format('row %s: %s is not a valid email address', n, left(r ->> 'email', 100)));
        end if;
        begin
            v_id := coalesce((r ->> 'id')::uuid, baas.uuid7());
            v_created := coalesce((r ->> 'created_at')::timestamptz, now());
        exception when invalid_text_representation or datetime_field_overflow or invalid_datetime_format then
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
