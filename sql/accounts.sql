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

------------------------------------------------------------------------ email flows (issue 16)
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

------------------------------------------------------------------------ multi-factor (issue 16)
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
    select case when baas._claim('role') = 'baas_user' then coalesce(baas._claim('aal'), 'aal1') end
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
-- PL/pgSQL, not SQL: a SQL function with SET (or SECURITY DEFINER) is never inlined
-- and was parsed and planned again in every statement, about 0.1 ms of every user's
-- get, list, create and patch (get by id 67 -> 42 us on a scratch cluster, psql loop
-- of baas.authenticate + baas.get_document); PL/pgSQL keeps its plans for the session.
create function baas._aal2_blocked() returns integer[]
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if baas.aal() = 'aal2' then
        return '{}';
    end if;
    return array(select c.id from baas.collections c where c.require_aal2 order by c.id);
end
$$;

create function baas._aal2_blocked_indexes() returns integer[]
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if baas.aal() = 'aal2' then
        return '{}';
    end if;
    return array(select i.id from baas.indexes i join baas.collections c on c.id = i.collection_id
                  where c.require_aal2 order by i.id);
end
$$;

create policy documents_aal on baas.documents as restrictive for all to baas_anon, baas_user
    using (collection_id <> all ((select baas._aal2_blocked())::integer[]))
    with check (collection_id <> all ((select baas._aal2_blocked())::integer[]));
create policy index_entries_aal on baas.index_entries as restrictive for select to baas_anon, baas_user
    using (index_id <> all ((select baas._aal2_blocked_indexes())::integer[]));
create policy read_entries_aal on baas.read_entries as restrictive for select to baas_anon, baas_user
    using (collection_id <> all ((select baas._aal2_blocked())::integer[]));

-- Collections as the API shows them (files.sql's, re-created after the columns it
-- reads): require_aal2 appears when it is set, on_owner_delete when documents outlive
-- their owner.
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

-- Service and DBAs: change a collection's account options: require_aal2 (bool) and
-- on_owner_delete ("delete", "orphan" or {"transfer": "<user id>"}).
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
