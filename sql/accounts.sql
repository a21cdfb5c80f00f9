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
