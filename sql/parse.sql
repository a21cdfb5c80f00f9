-- The Parse door (issue 21, docs/parse.md): what the Parse REST API needs of accounts that
-- pgbaas's own API has no word for. A Parse user has a username; a Parse session token
-- (`r:` and 32 random bytes) is opaque and long-lived. Both are kept beside pgbaas's own
-- accounts and sessions, never instead of them: a Parse session token names a row of
-- baas.sessions, so logout, a password change, suspension or an admin's revocation end it
-- at once, and every request it makes runs as that user under the same policies
-- (baas._parse_authenticate sets the claims and role baas.authenticate would). Objects, queries and
-- ACLs need nothing here: the proxy (proxy/src/parse/) maps them onto the document
-- functions, which run as the caller.

-- A Parse username per account (accounts made through /parse/users; others have none).
create table baas.parse_usernames (
    user_id uuid primary key references baas.users (id) on delete cascade,
    username text not null unique
        check (length(username) between 1 and 256 and username !~ '[[:cntrl:]]')
);
comment on table baas.parse_usernames is 'The Parse username of accounts made through the Parse door (docs/parse.md)';

-- Parse's authData: the sign-in providers an account is linked to, by the provider's id
-- for it (0.14.0). Only `anonymous` is served (Parse.AnonymousUtils): its id, a random
-- UUID the SDK makes, is the credential, as in Parse Server.
create table baas.parse_auth_data (
    provider text not null check (provider in ('anonymous')),
    provider_id text not null check (length(provider_id) between 1 and 256 and provider_id !~ '[[:cntrl:]]'),
    user_id uuid not null references baas.users (id) on delete cascade,
    primary key (provider, provider_id)
);
create index parse_auth_data_user_id_idx on baas.parse_auth_data (user_id);
comment on table baas.parse_auth_data is 'Parse authData: the providers (anonymous) an account made through the Parse door is linked to (docs/parse.md)';
revoke all on baas.parse_auth_data from public;
alter table baas.parse_auth_data enable row level security;
select pg_catalog.pg_extension_config_dump('baas.parse_auth_data', '');

-- Parse session tokens, as SHA-256 of the token; each belongs to one pgbaas session.
create table baas._parse_sessions (
    token_hash bytea primary key,
    session_id uuid not null references baas.sessions (id) on delete cascade,
    created_at timestamptz not null default now()
);
create index _parse_sessions_session_id_idx on baas._parse_sessions (session_id);

revoke all on baas.parse_usernames, baas._parse_sessions from public;
alter table baas.parse_usernames enable row level security;
alter table baas._parse_sessions enable row level security;
select pg_catalog.pg_extension_config_dump('baas.parse_usernames', '');
select pg_catalog.pg_extension_config_dump('baas._parse_sessions', '');

-- Parse's time format: UTC, milliseconds, `Z` ("2026-12-04T16:20:00.123Z").
create function baas._parse_date(t timestamptz) returns text
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
    select pg_catalog.to_char(t at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

-- A user as Parse shows it: the account's data fields, then what the account says
-- (objectId, username, email, emailVerified, createdAt, updatedAt) over them.
create function baas._parse_user_json(u baas.users) returns jsonb
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select (u.data - array['objectId', 'username', 'email', 'emailVerified', 'createdAt', 'updatedAt',
                           'sessionToken', 'authData', 'ACL'])
        || pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'objectId', u.id,
        'username', (select p.username from baas.parse_usernames p where p.user_id = u.id),
        'email', u.email,
        'emailVerified', case when u.email is not null then u.email_verified_at is not null end,
        'createdAt', baas._parse_date(u.created_at),
        'updatedAt', baas._parse_date(u.updated_at),
        'authData', (select pg_catalog.jsonb_object_agg(x.provider, pg_catalog.jsonb_build_object('id', x.id))
                       from (select a.provider, a.provider_id as id from baas.parse_auth_data a where a.user_id = u.id
                             union all
                             select i.provider, i.subject from baas.identities i where i.user_id = u.id) x)))
$$;

-- A new Parse session token for the session baas._new_session answered with (found from
-- its refresh token: the answer carries no session id). As Parse Server does, a sign-in
-- from an installation ends the user's earlier Parse sessions from that installation
-- (the session's device_id).
create function baas._parse_session_token(session jsonb) returns text
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    s baas.sessions;
    v_token text := 'r:' || baas._new_refresh_token();
begin
    select x.* into strict s from baas.refresh_tokens t join baas.sessions x on x.id = t.session_id
     where t.token_hash = baas._hash_token(session ->> 'refresh_token');
    insert into baas._parse_sessions (token_hash, session_id) values (baas._hash_token(v_token), s.id);
    if s.device_id is not null then
        update baas.sessions x set revoked_at = now(), revoked_reason = 'replaced'
         where x.user_id = s.user_id and x.device_id = s.device_id and x.id <> s.id and x.revoked_at is null
           and exists (select from baas._parse_sessions p where p.session_id = x.id);
    end if;
    return v_token;
end
$$;

-- An installation id as a session's device id (baas.login's rule), or NULL.
create function baas._parse_installation(installation_id text) returns text
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
    select case when installation_id ~ '^[A-Za-z0-9._:-]{1,128}$' then installation_id end
$$;

-- What a Parse account with a password must meet when it is made (parse_signup) or an
-- anonymous one becomes one (parse_upgrade_anonymous), checked before anything is
-- hashed or written: a password pgbaas takes, and email_verification as baas.signup
-- applies it (sql/accounts.sql): with `required` no session until the email is
-- verified, so an account without an email could never sign in; with a mail to send,
-- the mail settings.
create function baas._parse_password_rules(password text, email text) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_mode text := (select s.email_verification from baas.settings s);
begin
    if password is null or password = '' then
        perform baas._raise('22023', 'password_missing', 'password is required');
    end if;
    perform baas._check_password(password);
    if v_mode = 'required' and email is null then
        perform baas._raise('22023', 'email_missing', 'you must provide an email: this app signs in only with a verified email');
    end if;
    if v_mode <> 'off' and email is not null then
        perform baas._email_configured();
    end if;
end
$$;

-- POST /parse/users: a new account with a username (and, if given, an email), signed
-- in. `data` is the user object's other fields. {"error": {...}} never: refusals raise
-- (nothing was counted that must commit).
create function baas.parse_signup(username text, password text, email text default null,
                                  data jsonb default '{}', installation_id text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    u baas.users;
    v_mode text := (select s.email_verification from baas.settings s);
begin
    if username is null or username = '' then
        perform baas._raise('22023', 'username_missing', 'bad or missing username');
    end if;
    if length(username) > 256 or username ~ '[[:cntrl:]]' then
        perform baas._raise('22023', 'username_invalid', 'a username is 1 to 256 characters without control characters');
    end if;
    if data is not null and jsonb_typeof(data) <> 'object' then
        perform baas._raise('22023', 'invalid_request', 'the user''s fields must be a JSON object');
    end if;
    perform baas._parse_password_rules(password, email);
    if exists (select from baas.parse_usernames p where p.username = parse_signup.username) then
        perform baas._raise('23505', 'username_taken', 'Account already exists for this username.');
    end if;
    begin
        insert into baas.users (id, email, password_hash, data)
        values (baas.uuid7(), case when email is not null then baas._normalize_email(email) end,
                baas._hash_password(password), coalesce(data, '{}'))
        returning * into u;
    exception when unique_violation then
        perform baas._raise('23505', 'email_taken', 'Account already exists for this email address.');
    end;
    begin
        insert into baas.parse_usernames (user_id, username) values (u.id, username);
    exception when unique_violation then
        perform baas._raise('23505', 'username_taken', 'Account already exists for this username.');
    end;
    perform baas._audit('signup', u.id, details => jsonb_build_object('email', u.email, 'door', 'parse'));
    if v_mode <> 'off' and u.email is not null then
        perform baas._email_token('verify_email', u.id, u.email, u.language, '{}', true, false);
        if v_mode = 'required' then
            -- As Parse Server with preventLoginWithUnverifiedEmail: the user, no session.
            return baas._parse_user_json(u);
        end if;
    end if;
    return baas._parse_user_json(u)
        || jsonb_build_object('sessionToken', baas._parse_session_token(
               baas._new_session(u, 1::smallint, '{pwd}', baas._parse_installation(installation_id))));
end
$$;
comment on function baas.parse_signup(text, text, text, jsonb, text) is
    'Parse door: create an account with a username and sign it in; the Parse user with its sessionToken';

-- POST/GET /parse/login: sign in by username, under the same throttling, password
-- checks and sign-in rules as baas.login (baas._password_sign_in). Refusals are
-- answered {"error": {...}} so that a counted failure commits.
create function baas.parse_login(username text, password text, installation_id text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    u baas.users;
    v jsonb;
begin
    if username is null or username = '' then
        perform baas._raise('22023', 'username_missing', 'username/email is required.');
    end if;
    if password is null or password = '' then
        perform baas._raise('22023', 'password_missing', 'password is required.');
    end if;
    if octet_length(password) > 1024 then
        perform baas._raise('22001', 'password_too_long', 'password must be at most 1024 bytes');
    end if;
    select x.* into u from baas.parse_usernames p join baas.users x on x.id = p.user_id
     where p.username = parse_login.username;
    -- The throttle and audit key: the username when it is one, else its hash (people
    -- type passwords into the username field; baas._email_for_audit does the same).
    v := baas._password_sign_in(
        case when u.id is not null then 'parse:' || username
             else 'parse:sha256:' || encode(sha256(convert_to(username, 'UTF8')), 'hex') end,
        u, password, baas._parse_installation(installation_id), null);
    if v ? 'error' then
        return v;
    end if;
    if v ? 'mfa_required' then
        return jsonb_build_object('error', jsonb_build_object('code', 'mfa_required',
            'message', 'this account signs in with a second factor, which the Parse door does not take; sign in through /v1/auth'));
    end if;
    select x.* into u from baas.users x where x.id = u.id;
    return baas._parse_user_json(u) || jsonb_build_object('sessionToken', baas._parse_session_token(v));
end
$$;
comment on function baas.parse_login(text, text, text) is
    'Parse door: sign in by username; the Parse user with a new sessionToken, or {"error": {...}}';

-- POST /parse/users with authData {"anonymous": {"id"}} (Parse.AnonymousUtils.logIn):
-- the account linked to that id, signed in, or else a new anonymous account (as
-- baas.sign_in_anonymously makes: no email, no password; setting anonymous_sign_in)
-- with a random username, linked to it. A link left on an account that has since
-- become a full one (baas.upgrade_account) signs nobody in: it goes, and the id makes a
-- new account, as after a Parse sign-up. The Parse user with a new sessionToken and
-- `created`; a suspended account's {"error": {...}}.
create function baas.parse_login_anonymous(anonymous_id text, installation_id text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    u baas.users;
    v jsonb;
    v_found boolean;
    v_created boolean := false;
begin
    if not (select s.anonymous_sign_in from baas.settings s) then
        perform baas._raise('42501', 'anonymous_sign_in_disabled', 'anonymous sign-in is not enabled');
    end if;
    if anonymous_id is null or length(anonymous_id) not between 1 and 256 or anonymous_id ~ '[[:cntrl:]]' then
        perform baas._raise('22023', 'invalid_request', 'authData.anonymous.id must be 1 to 256 characters without control characters');
    end if;
    -- Two first sign-ins with one id make one account.
    perform pg_advisory_xact_lock(hashtextextended('baas.parse_auth_data:anonymous:' || anonymous_id, 0));
    -- The account locked against a concurrent sign-up, upgrade or suspension.
    select x.* into u from baas.parse_auth_data a join baas.users x on x.id = a.user_id
     where a.provider = 'anonymous' and a.provider_id = anonymous_id
       for update of x;
    v_found := found;
    if v_found and not u.is_anonymous then
        delete from baas.parse_auth_data a where a.provider = 'anonymous' and a.provider_id = anonymous_id;
        v_found := false;
    end if;
    if v_found then
        perform baas._audit('login', u.id, details => jsonb_build_object('method', 'anonymous', 'door', 'parse'));
    else
        insert into baas.users (id, email, password_hash, data, is_anonymous)
        values (baas.uuid7(), null, null, '{}', true)
        returning * into u;
        insert into baas.parse_usernames (user_id, username) values (u.id, replace(gen_random_uuid()::text, '-', ''));
        insert into baas.parse_auth_data (provider, provider_id, user_id) values ('anonymous', anonymous_id, u.id);
        perform baas._audit('signup.anonymous', u.id, details => jsonb_build_object('door', 'parse'));
        v_created := true;
    end if;
    v := baas._complete_sign_in(u, 'anonymous', baas._parse_installation(installation_id));
    if v ? 'error' then
        return v;
    end if;
    if v ? 'mfa_required' then
        return jsonb_build_object('error', jsonb_build_object('code', 'mfa_required',
            'message', 'this account signs in with a second factor, which the Parse door does not take; sign in through /v1/auth'));
    end if;
    return baas._parse_user_json(u) || jsonb_build_object('sessionToken', baas._parse_session_token(v), 'created', v_created);
end
$$;
comment on function baas.parse_login_anonymous(text, text) is
    'Parse door: sign in with anonymous authData, making the anonymous account on first use; the Parse user with a sessionToken and created, or {"error": {...}}';

-- A Parse authData entry of an OpenID Connect provider, `{"id", "id_token"}` (Google's
-- form) or `{"id", "token"}` (Apple's), and an optional `nonce`, as {id, token, nonce}.
create function baas._parse_oidc_auth(provider text, auth jsonb) returns jsonb
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_token jsonb := coalesce(auth -> 'id_token', auth -> 'token');
begin
    if pg_catalog.jsonb_typeof(auth) is distinct from 'object' or pg_catalog.jsonb_typeof(auth -> 'id') is distinct from 'string'
       or pg_catalog.jsonb_typeof(v_token) is distinct from 'string'
       or (auth ? 'nonce' and pg_catalog.jsonb_typeof(auth -> 'nonce') is distinct from 'string') then
        perform baas._raise('22023', 'invalid_request',
            format('authData.%s needs its id and its ID token (id_token or token), strings', provider));
    end if;
    return pg_catalog.jsonb_build_object('id', auth -> 'id', 'token', v_token, 'nonce', auth -> 'nonce');
end
$$;

-- POST /parse/users with authData of an OpenID Connect provider configured in pgbaas
-- (`Parse.User.logInWith('apple', ...)`, sql/oidc.sql: Apple, Google or any issuer):
-- baas.oidc_sign_in's account, rules and checks, the token's `sub` being the authData's
-- id. A new account gets a random username, as in Parse Server. The Parse user with a
-- new sessionToken and `created`; a suspended account's {"error": {...}}.
create function baas.parse_login_auth_data(provider text, auth jsonb, installation_id text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    a jsonb;
    u baas.users;
    v jsonb;
    v_created boolean;
begin
    -- A provider pgbaas lacks is that (P0002), whatever its entry holds.
    perform baas._oidc_provider(provider);
    a := baas._parse_oidc_auth(provider, auth);
    v := baas._oidc_sign_in(provider, a ->> 'token', a ->> 'nonce', baas._parse_installation(installation_id), a ->> 'id');
    if v ? 'error' then
        return v;
    end if;
    if v ? 'mfa_required' then
        return jsonb_build_object('error', jsonb_build_object('code', 'mfa_required',
            'message', 'this account signs in with a second factor, which the Parse door does not take; sign in through /v1/auth'));
    end if;
    select x.* into strict u from baas.users x where x.id = (v -> 'user' ->> 'id')::uuid;
    -- Made by this sign-in (this transaction's time), or found.
    v_created := u.created_at = now();
    if not exists (select from baas.parse_usernames p where p.user_id = u.id) and v_created then
        insert into baas.parse_usernames (user_id, username) values (u.id, replace(gen_random_uuid()::text, '-', ''));
    end if;
    return baas._parse_user_json(u) || jsonb_build_object('sessionToken', baas._parse_session_token(v), 'created', v_created);
end
$$;
comment on function baas.parse_login_auth_data(text, jsonb, text) is
    'Parse door: sign in (or up) with authData of an OpenID Connect provider; the Parse user with a sessionToken and created, or {"error": {...}}';

-- PUT /parse/users/{id} with authData, by the signed-in user itself (`linkWith`,
-- `_unlinkFrom`): each provider's entry links its identity (baas.link_identity's rules:
-- the second factor, an identity of another account refused; the token's `sub` being
-- the entry's id), `null` unlinks it (baas.unlink_identity's: not the last way in).
-- An entry naming what is linked already (the SDKs send back what they hold) and
-- `{"anonymous": null}` change nothing here (the SDK's signUp sends it; the upgrade
-- drops the anonymous link). An account that stops being anonymous loses its anonymous
-- authData, as in Parse Server.
create function baas.parse_set_auth_data(id uuid, auth_data jsonb) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    k text;
    v jsonb;
    a jsonb;
    v_identity uuid;
begin
    perform baas._require_session();
    if id is distinct from baas.uid() then
        perform baas._raise('42501', 'not_own_user', format('Cannot modify user %s.', id));
    end if;
    if pg_catalog.jsonb_typeof(auth_data) is distinct from 'object' then
        perform baas._raise('22023', 'invalid_request', 'authData must be an object');
    end if;
    -- Links first, then unlinks (so that {"apple": null, "google": {...}} may move an
    -- account's only way in from one provider to another).
    for k, v in select e.key, e.value from pg_catalog.jsonb_each(auth_data) e order by e.value = 'null'::jsonb, e.key loop
        -- The SDKs send the whole authData back: an entry naming what is linked already
        -- (its id, no token) changes nothing.
        if v <> 'null'::jsonb and (
               exists (select from baas.identities i where i.user_id = baas.uid() and i.provider = k and i.subject = v ->> 'id')
            or exists (select from baas.parse_auth_data x where x.user_id = baas.uid() and x.provider = k and x.provider_id = v ->> 'id')) then
            continue;
        end if;
        if k = 'anonymous' then
            if v <> 'null'::jsonb then
                perform baas._raise('22023', 'invalid_request', 'an account links an anonymous id only by signing in with it');
            end if;
            continue;
        end if;
        if v <> 'null'::jsonb then
            perform baas._oidc_provider(k);
            a := baas._parse_oidc_auth(k, v);
            perform baas._link_identity(k, a ->> 'token', a ->> 'nonce', a ->> 'id');
        end if;
        -- Parse's authData holds one entry per provider: a new one replaces the old
        -- (whose sign-in ends with it), null removes it.
        for v_identity in select i.id from baas.identities i
                           where i.user_id = baas.uid() and i.provider = k and i.subject is distinct from v ->> 'id' loop
            perform baas.unlink_identity(v_identity);
        end loop;
    end loop;
    delete from baas.parse_auth_data x
     where x.user_id = baas.uid() and x.provider = 'anonymous'
       and not (select u.is_anonymous from baas.users u where u.id = baas.uid());
end
$$;
comment on function baas.parse_set_auth_data(uuid, jsonb) is
    'Parse door: the signed-in user links (an entry) or unlinks (null) OpenID Connect providers by authData';

-- PUT /parse/users/{id} with a password from the signed-in anonymous account (the SDK's
-- signUp of an anonymous user): it becomes a full account with that username and
-- password (and email, if given), keeping its id, hence its objects, files and grants,
-- and its session (baas.upgrade_account's rule, a Parse username standing in for the
-- email). Without a username it keeps the one it has (the SDK sends only what changed).
-- Its anonymous authData goes; `patch` (the user's other fields) is applied as
-- baas.parse_update_user applies it, in the same transaction. What would be refused is
-- refused before the password is hashed.
create function baas.parse_upgrade_anonymous(username text, password text, email text default null,
                                             patch jsonb default '{}') returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    u baas.users;
    v_mode text := (select s.email_verification from baas.settings s);
begin
    perform baas._require_session();
    select x.* into u from baas.users x where x.id = baas.uid() for update;
    if not found then
        perform baas._raise('28000', 'invalid_token', 'the account of this token no longer exists');
    end if;
    if not u.is_anonymous then
        perform baas._raise('42501', 'not_anonymous', 'this account is not anonymous; its password changes through PATCH /v1/auth/user with the current one');
    end if;
    if username is not null and (username = '' or length(username) > 256 or username ~ '[[:cntrl:]]') then
        perform baas._raise('22023', 'username_invalid', 'a username is 1 to 256 characters without control characters');
    end if;
    if username is not null and exists (select from baas.parse_usernames p where p.username = parse_upgrade_anonymous.username and p.user_id <> u.id) then
        perform baas._raise('23505', 'username_taken', 'Account already exists for this username.');
    end if;
    if email is not null and exists (select from baas.users x where x.email = baas._normalize_email(email) and x.id <> u.id) then
        perform baas._raise('23505', 'email_taken', 'Account already exists for this email address.');
    end if;
    perform baas._parse_password_rules(password, email);
    begin
        update baas.users x
           set email = case when email is not null then baas._normalize_email(email) end,
               password_hash = baas._hash_password(password), is_anonymous = false, updated_at = now()
         where x.id = u.id
        returning * into u;
    exception when unique_violation then
        perform baas._raise('23505', 'email_taken', 'Account already exists for this email address.');
    end;
    delete from baas.parse_auth_data a where a.user_id = u.id and a.provider = 'anonymous';
    perform baas._audit('user.upgrade', u.id, details => jsonb_build_object('email', u.email, 'door', 'parse'));
    if v_mode <> 'off' and u.email is not null then
        perform baas._email_token('verify_email', u.id, u.email, u.language, '{}', true, false);
    end if;
    return baas.parse_update_user(u.id, username, patch);
end
$$;
comment on function baas.parse_upgrade_anonymous(text, text, text, jsonb) is
    'Parse door: the signed-in anonymous account becomes a full one with a username and password, keeping its id and session';

-- GET /parse/users/me: the signed-in user.
create function baas.parse_me() returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_sid uuid := baas._require_session();
    u baas.users;
begin
    select * into strict u from baas.users where id = baas.uid();
    return baas._parse_user_json(u);
end
$$;
comment on function baas.parse_me() is 'Parse door: the signed-in user as a Parse user';

-- The claims of a live Parse session token, as baas.authenticate takes them, or NULL.
create function baas._parse_session_claims(session_token text) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    return (select pg_catalog.jsonb_build_object(
                'sub', u.id, 'role', 'baas_user', 'sid', s.id, 'email', u.email,
                'is_anonymous', u.is_anonymous, 'aal', 'aal' || s.aal, 'amr', pg_catalog.to_jsonb(s.amr))
              from baas._parse_sessions p
              join baas.sessions s on s.id = p.session_id
              join baas.users u on u.id = s.user_id
             where p.token_hash = baas._hash_token(session_token)
               and s.revoked_at is null and s.expires_at > pg_catalog.now());
end
$$;

-- The Parse door's first statement of every request, in place of baas.authenticate:
-- master (the proxy checked X-Parse-Master-Key) runs as the service role; a session
-- token as its user, or 28000 invalid_session_token; neither as baas_anon. Only the
-- proxy's role may call it.
create function baas._parse_authenticate(session_token text, master boolean) returns void
language plpgsql volatile
as $$
declare
    v_claims jsonb;
begin
    if master then
        perform pg_catalog.set_config('baas.claims', '{"role": "baas_service", "parse": "master"}', true);
        perform pg_catalog.set_config('role', 'baas_service', true);
        return;
    end if;
    if session_token is null then
        perform baas.authenticate(null);
        return;
    end if;
    v_claims := baas._parse_session_claims(session_token);
    if v_claims is null then
        raise exception using errcode = '28000', detail = 'invalid_session_token', message = 'Invalid session token';
    end if;
    -- baas.authenticate's two settings for a user, without its session check:
    -- _parse_session_claims found the claims through a live session, in this statement.
    perform pg_catalog.set_config('baas.claims', v_claims::text, true);
    perform pg_catalog.set_config('role', 'baas_user', true);
end
$$;
comment on function baas._parse_authenticate(text, boolean) is
    'Parse door entry point (proxy only): a session token''s user, the master key''s service role, or anonymous';

-- Whether the caller runs as the service role (the master key or a service token):
-- Parse's master key may read and change any user and installation. The `role` setting,
-- not the claims: it keeps its value inside SECURITY DEFINER functions (where
-- current_user does not), and only becomes baas_service through baas.authenticate (a
-- live service token) or baas._parse_authenticate (the master key the proxy checked).
-- (SQL run inside a request, such as a team's RPC function, could SET ROLE to it, since
-- the proxy's login role is a member; that holds for every privilege, not just this one.)
create function baas._parse_master() returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select pg_catalog.current_setting('role') = 'baas_service'
$$;

-- GET /parse/users/{id}: the signed-in user's own object, or any with the master key;
-- P0002 not_found for anyone else's (pgbaas does not show one user's account to another:
-- profiles are the social API's, docs/social.md).
create function baas.parse_get_user(id uuid) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    u baas.users;
begin
    if not baas._parse_master() then
        perform baas._require_session();
        if id is distinct from baas.uid() then
            perform baas._raise('P0002', 'not_found', 'Object not found.');
        end if;
    end if;
    select * into u from baas.users x where x.id = parse_get_user.id;
    if not found then
        perform baas._raise('P0002', 'not_found', 'Object not found.');
    end if;
    return baas._parse_user_json(u);
end
$$;
comment on function baas.parse_get_user(uuid) is
    'Parse door: a user as a Parse user: the caller''s own, or any for the service role';

-- GET /parse/classes/_User (/users): accounts as Parse users. The service role reads
-- any: those named by ids, usernames or emails (each list optional, null being no
-- condition; with none, every account), at most `lim` after `off` in creation order
-- (users_created_at_idx), and with want_count `count`, how many match in all. Anyone
-- else reads only its own account (if the lists name it): pgbaas shows no account to
-- another (Parse Server's users are private by default too, its enforcePrivateUsers).
-- The door checks the rest of a query's `where`.
create function baas.parse_find_users(ids uuid[] default null, usernames text[] default null, emails text[] default null,
                                      lim integer default 100, off integer default 0, want_count boolean default false) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    v_emails text[] := array(select lower(e) from unnest(emails) e);
    v_cand uuid[];
begin
    if baas._parse_master() and ids is null and usernames is null and emails is null then
        -- Every account, a page at a time (users_created_at_idx).
        return jsonb_build_object(
            'count', case when want_count then (select count(*) from baas.users) end,
            'results', coalesce((select jsonb_agg(baas._parse_user_json(x.u) order by (x.u).created_at, (x.u).id)
                                   from (select u from baas.users u order by u.created_at, u.id
                                          limit least(greatest(lim, 0), 1000) offset greatest(off, 0)) x), '[]'));
    end if;
    -- The candidates, by one list's index (anyone else: itself); then every list holds.
    v_cand := case when not baas._parse_master() then array[baas.uid()]
                   when ids is not null then ids
                   when usernames is not null then array(select n.user_id from baas.parse_usernames n where n.username = any (usernames))
                   else array(select u.id from baas.users u where u.email = any (v_emails)) end;
    return (with m as (select u from baas.users u
                        where u.id = any (v_cand)
                          and (ids is null or u.id = any (ids))
                          and (usernames is null or exists (select from baas.parse_usernames n
                                                             where n.user_id = u.id and n.username = any (usernames)))
                          and (emails is null or u.email = any (v_emails)))
            select jsonb_build_object('count', case when want_count then (select count(*) from m) end,
                'results', coalesce((select jsonb_agg(baas._parse_user_json(x.u) order by (x.u).created_at, (x.u).id)
                                       from (select m.u from m order by (m.u).created_at, (m.u).id
                                              limit least(greatest(lim, 0), 1000) offset greatest(off, 0)) x), '[]')));
end
$$;
comment on function baas.parse_find_users(uuid[], text[], text[], integer, integer, boolean) is 'Parse door: accounts as Parse users: any (by ids, usernames, emails) for the service role, the caller''s own for anyone else; {count, results}';
-- (0.16.0) The master key's _User query on the accounts' own fields: the query language
-- over each account's data and times (`filter`, the door's conversion of `where`, which
-- names no field the Parse user shows from elsewhere: username, email …), a page in
-- creation order. A scan of every account, as Parse Server's own. Service role only.
create function baas.parse_scan_users(filter jsonb, lim integer default 100, off integer default 0,
                                      want_count boolean default false) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    q jsonb;
    v_results jsonb;
    v_count bigint;
begin
    if not baas._parse_master() then
        perform baas._raise('42501', 'forbidden', 'Users are searched by their fields with the master key.');
    end if;
    -- The compiled text reads d.data, d.created_at and d.updated_at: an account has them.
    q := baas._compile_query(coalesce(filter, '{}'), null, null, false);
    execute format(
        'select coalesce((select jsonb_agg(baas._parse_user_json(x.u) order by (x.u).created_at, (x.u).id)'
        '                   from (select d as u from baas.users d where %s order by d.created_at, d.id limit $2 offset $3) x), ''[]''),'
        '       case when $4 then (select count(*) from baas.users d where %s) end',
        q ->> 'where', q ->> 'where')
      into v_results, v_count
     using q -> 'params', least(greatest(lim, 0), 1001), greatest(off, 0), want_count;
    return jsonb_build_object('count', v_count, 'results', v_results);
end
$$;
comment on function baas.parse_scan_users(jsonb, integer, integer, boolean) is 'Parse door: the master key''s _User query on the accounts'' data and times (the query language), a page in creation order; service role only';

-- (0.16.0) The master key's _Session queries: the live sessions of any account, those of
-- `user_ids` and with `ids` (null: no condition), newest first, at most 1,001 (the door
-- refuses more than it pages); each as baas.list_sessions shows one, with `user_id`.
-- Service role only.
create function baas.parse_sessions(user_ids uuid[] default null, ids uuid[] default null) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if not baas._parse_master() then
        perform baas._raise('42501', 'forbidden', 'Any user''s sessions are listed with the master key.');
    end if;
    return jsonb_build_object('items', coalesce((
        select jsonb_agg(baas._session_json(x.s, null) || jsonb_build_object('user_id', (x.s).user_id)
                         order by (x.s).created_at desc, (x.s).id desc)
          from (select s from baas.sessions s
                 where s.revoked_at is null and s.expires_at > now()
                   and (user_ids is null or s.user_id = any (user_ids))
                   and (ids is null or s.id = any (ids))
                 order by s.created_at desc, s.id desc
                 limit 1001) x), '[]'));
end
$$;
comment on function baas.parse_sessions(uuid[], uuid[]) is 'Parse door: the master key''s _Session queries, live sessions of any account (by account, by id), newest first, at most 1001; service role only';

-- (0.16.0) DELETE /parse/sessions/{id} with the master key: ends any account's live
-- session, audited as an administrator's sign-out. Service role only; P0002
-- session_not_found for an unknown or ended one.
create function baas.parse_end_session(id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_user uuid;
begin
    if not baas._parse_master() then
        perform baas._raise('42501', 'forbidden', 'Another user''s session is ended with the master key.');
    end if;
    update baas.sessions s set revoked_at = now(), revoked_reason = 'signed_out_by_admin'
     where s.id = parse_end_session.id and s.revoked_at is null and s.expires_at > now()
    returning s.user_id into v_user;
    if not found then
        perform baas._raise('P0002', 'session_not_found', 'no live session has this id');
    end if;
    perform baas._audit('user.sign_out', v_user, details => jsonb_build_object('sessions', 1, 'session', parse_end_session.id));
end
$$;
comment on function baas.parse_end_session(uuid) is 'Parse door: the master key ends any account''s live session; service role only; P0002 session_not_found';

-- (0.14.0) The master key's list of every account pages in creation order.
create index users_created_at_idx on baas.users (created_at, id);

-- DELETE /parse/users/{id} with the master key: the account goes as pgbaas deletes one
-- (its sessions with it, its documents as their collections' on_owner_delete says).
-- Service role only; P0002 user_not_found.
create function baas.parse_delete_user(id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if not baas._parse_master() then
        perform baas._raise('42501', 'forbidden', 'Another user''s account is deleted with the master key.');
    end if;
    perform baas._user_for_admin(id);
    delete from baas.users u where u.id = parse_delete_user.id;
end
$$;
comment on function baas.parse_delete_user(uuid) is 'Parse door: delete an account with the master key; service role only';

-- PUT /parse/users/{id}: the signed-in user's own fields, as an operator patch on the
-- account's data (docs/operators.md), and its username; with the master key any user's.
-- The email and the password are changed through pgbaas's own flows (a verification
-- mail; the current password), never here.
create function baas.parse_update_user(id uuid, username text default null, patch jsonb default '{}')
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    u baas.users;
begin
    if not baas._parse_master() then
        perform baas._require_session();
        if id is distinct from baas.uid() then
            perform baas._raise('42501', 'not_own_user', format('Cannot modify user %s.', id));
        end if;
    end if;
    if patch is null or jsonb_typeof(patch) <> 'object'
       or exists (select from jsonb_object_keys(patch) k where left(k, 1) <> '$') then
        perform baas._raise('22023', 'invalid_request', 'the user''s fields must be an operator patch');
    end if;
    update baas.users x set data = baas._apply_operators(x.data, patch, now()), updated_at = now()
     where x.id = parse_update_user.id
    returning * into u;
    if not found then
        perform baas._raise('P0002', 'not_found', 'Object not found.');
    end if;
    if username is not null then
        if username = '' or length(username) > 256 or username ~ '[[:cntrl:]]' then
            perform baas._raise('22023', 'username_invalid', 'a username is 1 to 256 characters without control characters');
        end if;
        begin
            insert into baas.parse_usernames as p (user_id, username) values (u.id, username)
            on conflict (user_id) do update set username = excluded.username;
        exception when unique_violation then
            perform baas._raise('23505', 'username_taken', 'Account already exists for this username.');
        end;
    end if;
    return baas._parse_user_json(u);
end
$$;
comment on function baas.parse_update_user(uuid, text, jsonb) is
    'Parse door: change the caller''s own user fields (an operator patch of its data) and username; any user''s for the service role';

-- Installations (Parse's _Installation): the app installs that push notifications will
-- reach (the push work to come). Any client saves its own installation, found by its
-- installationId (or objectId); only the service role reads them, as in Parse Server.
create table baas.parse_installations (
    id uuid primary key,
    installation_id text not null unique check (installation_id ~ '^[A-Za-z0-9._:-]{1,128}$'),
    device_type text not null check (device_type ~ '^[a-z0-9_]{1,32}$'),
    device_token text check (length(device_token) <= 4096),
    channels text[] not null default '{}',
    user_id uuid references baas.users (id) on delete set null,
    data jsonb not null default '{}' check (jsonb_typeof(data) = 'object'),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
revoke all on baas.parse_installations from public;
alter table baas.parse_installations enable row level security;
select pg_catalog.pg_extension_config_dump('baas.parse_installations', '');

create function baas._parse_installation_json(i baas.parse_installations) returns jsonb
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select i.data || pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'objectId', i.id, 'installationId', i.installation_id, 'deviceType', i.device_type,
        'deviceToken', i.device_token, 'channels', pg_catalog.to_jsonb(i.channels),
        'user', case when i.user_id is not null then pg_catalog.jsonb_build_object(
                    '__type', 'Pointer', 'className', '_User', 'objectId', i.user_id) end,
        'createdAt', baas._parse_date(i.created_at), 'updatedAt', baas._parse_date(i.updated_at)))
$$;

-- POST /parse/installations and PUT /parse/installations/{id}: create or update the
-- installation `fields` name (by installationId; or by objectId `id`). A signed-in
-- caller's installation is linked to its user; an installation linked to a user is
-- changed only by that user (or the master key), so nobody who learns an
-- installationId can move someone else's pushes to their own device.
-- `channels` takes a list or Parse's Add, AddUnique and Remove. {"created", "installation"}.
create function baas.parse_save_installation(id uuid, fields jsonb) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    i baas.parse_installations;
    v_new boolean := false;
    v_iid text;
    v_data jsonb;
    v_channels text[];
    v_op text;
    k text;
begin
    if fields is null or jsonb_typeof(fields) <> 'object' then
        perform baas._raise('22023', 'invalid_request', 'an installation is a JSON object');
    end if;
    foreach k in array array['installationId', 'deviceType', 'deviceToken'] loop
        if fields ? k and jsonb_typeof(fields -> k) not in ('string', 'null') then
            perform baas._raise('22023', 'invalid_request', format('%s must be a string', k));
        end if;
    end loop;
    v_iid := fields ->> 'installationId';
    v_op := fields -> 'channels' ->> '__op';
    if fields ? 'channels' and not (jsonb_typeof(fields -> 'channels') = 'array'
        or (v_op in ('Add', 'AddUnique', 'Remove') and jsonb_typeof(fields -> 'channels' -> 'objects') = 'array'))
       or exists (select from jsonb_array_elements(case when v_op is null then fields -> 'channels' else fields -> 'channels' -> 'objects' end) c
                   where jsonb_typeof(c) <> 'string') then
        perform baas._raise('22023', 'invalid_request', 'channels must be an array of strings, or Add, AddUnique or Remove of one');
    end if;
    v_data := fields - array['objectId', 'installationId', 'deviceType', 'deviceToken', 'channels', 'user',
                             'createdAt', 'updatedAt', 'ACL'];
    if exists (select from jsonb_each(v_data) e
                where e.key !~ '^[A-Za-z][A-Za-z0-9_]{0,127}$' or (jsonb_typeof(e.value) = 'object' and e.value ? '__op')) then
        perform baas._raise('22023', 'invalid_request', 'installation fields are Parse field names with plain values');
    end if;
    if id is not null then
        select * into i from baas.parse_installations x where x.id = parse_save_installation.id for update;
        if not found then
            perform baas._raise('P0002', 'not_found', 'Object not found.');
        end if;
        if v_iid is not null and v_iid <> i.installation_id then
            perform baas._raise('22023', 'installation_id_changed', 'installationId may not be changed');
        end if;
    elsif v_iid is not null then
        select * into i from baas.parse_installations x where x.installation_id = v_iid for update;
    end if;
    if i.id is null then
        if v_iid is null or (fields ->> 'deviceType') is null then
            perform baas._raise('22023', 'installation_incomplete', 'at least one ID field (deviceToken, installationId) and deviceType must be specified in this operation');
        end if;
        v_channels := case when v_op is null then array(select jsonb_array_elements_text(fields -> 'channels'))
                           when v_op in ('Add', 'AddUnique') then array(select distinct jsonb_array_elements_text(fields -> 'channels' -> 'objects'))
                           else '{}' end;
        begin
            insert into baas.parse_installations (id, installation_id, device_type, device_token, channels, user_id, data)
            values (baas.uuid7(), v_iid, fields ->> 'deviceType', fields ->> 'deviceToken', coalesce(v_channels, '{}'), baas.uid(), v_data)
            on conflict (installation_id) do nothing
            returning * into i;
        exception when check_violation then
            perform baas._raise('22023', 'invalid_request', 'installationId is 1 to 128 of A-Z a-z 0-9 . _ : - and deviceType a short lower-case name (ios, android, web …)');
        end;
        if i.id is not null then
            return jsonb_build_object('created', true, 'installation', baas._parse_installation_json(i));
        end if;
        -- Saved at the same moment by another request: update that one.
        select * into strict i from baas.parse_installations x where x.installation_id = v_iid for update;
    end if;
    if i.user_id is not null and i.user_id is distinct from baas.uid() and not baas._parse_master() then
        perform baas._raise('P0002', 'not_found', 'Object not found.');
    end if;
    v_channels := case when not fields ? 'channels' then i.channels
                       when v_op is null then array(select jsonb_array_elements_text(fields -> 'channels'))
                       when v_op = 'Add' then i.channels || array(select jsonb_array_elements_text(fields -> 'channels' -> 'objects'))
                       when v_op = 'AddUnique' then i.channels || array(select c from jsonb_array_elements_text(fields -> 'channels' -> 'objects') c
                                                                         where not c = any (i.channels))
                       else array(select c from unnest(i.channels) c
                                   where not c = any (array(select jsonb_array_elements_text(fields -> 'channels' -> 'objects')))) end;
    begin
        update baas.parse_installations x set
            device_type = coalesce(fields ->> 'deviceType', x.device_type),
            device_token = case when fields ? 'deviceToken' then fields ->> 'deviceToken' else x.device_token end,
            channels = coalesce(v_channels, '{}'),
            user_id = coalesce(baas.uid(), x.user_id),
            data = x.data || v_data,
            updated_at = now()
         where x.id = i.id
        returning * into i;
    exception when check_violation then
        perform baas._raise('22023', 'invalid_request', 'deviceType is a short lower-case name (ios, android, web …) and deviceToken at most 4096 characters');
    end;
    return jsonb_build_object('created', v_new, 'installation', baas._parse_installation_json(i));
end
$$;
comment on function baas.parse_save_installation(uuid, jsonb) is
    'Parse door: create or update an app installation (by installationId or objectId); {created, installation}';

-- GET /parse/installations[/{id}] (service role only, as in Parse Server): one page.
create function baas.parse_installations(id uuid default null, lim integer default 100, off integer default 0) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
begin
    if not baas._parse_master() then
        perform baas._raise('42501', 'forbidden', 'Clients aren''t allowed to perform the find operation on the installation collection.');
    end if;
    return coalesce((select jsonb_agg(baas._parse_installation_json(p) order by p.created_at, p.id)
                       from (select * from baas.parse_installations i where id is null or i.id = parse_installations.id
                              order by i.created_at, i.id limit least(greatest(lim, 0), 1000) offset greatest(off, 0)) p), '[]');
end
$$;
comment on function baas.parse_installations(uuid, integer, integer) is 'Parse door: the installations (a page, or one by objectId); service role only';

-- Parse Config (GET/PUT /parse/config): app parameters clients read; those marked
-- master_only only the service role sees. DBAs may also edit the table directly.
create table baas.parse_config (
    key text primary key check (length(key) between 1 and 256),
    value jsonb not null,
    master_only boolean not null default false,
    updated_at timestamptz not null default now()
);
revoke all on baas.parse_config from public;
alter table baas.parse_config enable row level security;
select pg_catalog.pg_extension_config_dump('baas.parse_config', '');

create function baas.parse_config() returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select pg_catalog.jsonb_build_object(
        'params', coalesce((select pg_catalog.jsonb_object_agg(c.key, c.value) from baas.parse_config c
                             where not c.master_only or baas._parse_master()), '{}'))
        || case when baas._parse_master() then pg_catalog.jsonb_build_object(
               'masterKeyOnly', coalesce((select pg_catalog.jsonb_object_agg(c.key, true) from baas.parse_config c
                                           where c.master_only), '{}')) else '{}' end
$$;
comment on function baas.parse_config() is 'Parse door: the app''s config parameters: {params} (and masterKeyOnly for the service role)';

-- PUT /parse/config: set parameters (a null value removes one); master_only names the
-- ones only the service role sees. Service role only.
create function baas.parse_set_config(params jsonb, master_only jsonb default '{}') returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
begin
    if not baas._parse_master() then
        perform baas._raise('42501', 'forbidden', 'Parse Config is changed with the master key.');
    end if;
    if params is null or jsonb_typeof(params) <> 'object' or jsonb_typeof(coalesce(master_only, '{}')) <> 'object' then
        perform baas._raise('22023', 'invalid_request', 'params and masterKeyOnly must be JSON objects');
    end if;
    delete from baas.parse_config c using jsonb_each(params) p where c.key = p.key and p.value = 'null';
    insert into baas.parse_config as c (key, value, master_only)
    select p.key, p.value, coalesce((master_only ->> p.key)::boolean, false)
      from jsonb_each(params) p where p.value <> 'null'
    -- A parameter keeps its master_only unless masterKeyOnly names it: changing a secret's
    -- value must not publish it.
    on conflict (key) do update set value = excluded.value,
        master_only = coalesce((parse_set_config.master_only ->> c.key)::boolean, c.master_only), updated_at = now();
    return jsonb_build_object('result', true);
exception when check_violation or invalid_text_representation then
    perform baas._raise('22023', 'invalid_request', 'a parameter name is 1 to 256 characters and masterKeyOnly values are true or false');
end
$$;
comment on function baas.parse_set_config(jsonb, jsonb) is 'Parse door: set Parse Config parameters (null removes one); service role only';

-- Parse schemas (/parse/schemas, Parse.Schema, the Parse Dashboard): each collection
-- that is not a file bucket is a class (its name as the collection's). pgbaas keeps no
-- field types, so a class's fields are its system fields and those its 100 newest
-- documents hold, typed by their values (a pointer's class as the door names classes).
-- Its class-level permissions say who may create (the collection's `create`: public is
-- *, authenticated requiresAuthentication, a user its id, a role role:name; registered
-- and anonymous keep pgbaas's names, having no Parse word); find, get, count, update,
-- delete and addField are every caller's, each object's ACL deciding, as in Parse.
-- A class name as the door shows it: a collection's (lower case), a system class's
-- (_User, _Role …) as it is.
create function baas._parse_class_name(class_name text) returns text
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
    select case when class_name like '\_%' then class_name else pg_catalog.lower(class_name) end
$$;

create function baas._parse_schema_json(c baas.collections) returns jsonb
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select pg_catalog.jsonb_build_object(
        'className', c.name,
        'fields', '{"objectId": {"type": "String"}, "createdAt": {"type": "Date"},
                    "updatedAt": {"type": "Date"}, "ACL": {"type": "ACL"}}'::jsonb
            || coalesce((select pg_catalog.jsonb_object_agg(f.key, f.type) from (
                   select distinct on (e.key) e.key,
                          case pg_catalog.jsonb_typeof(e.value)
                              when 'string' then '{"type": "String"}'::jsonb
                              when 'number' then '{"type": "Number"}'::jsonb
                              when 'boolean' then '{"type": "Boolean"}'::jsonb
                              when 'array' then '{"type": "Array"}'::jsonb
                              else case e.value ->> '__type'
                                  when 'Date' then '{"type": "Date"}'::jsonb
                                  when 'File' then '{"type": "File"}'::jsonb
                                  when 'GeoPoint' then '{"type": "GeoPoint"}'::jsonb
                                  when 'Bytes' then '{"type": "Bytes"}'::jsonb
                                  when 'Polygon' then '{"type": "Polygon"}'::jsonb
                                  when 'Pointer' then pg_catalog.jsonb_build_object('type', 'Pointer', 'targetClass', baas._parse_class_name(e.value ->> 'className'))
                                  when 'Relation' then pg_catalog.jsonb_build_object('type', 'Relation', 'targetClass', baas._parse_class_name(e.value ->> 'className'))
                                  else '{"type": "Object"}'::jsonb end
                          end as type
                     from (select d.id, d.created_at, d.data from baas.documents d where d.collection_id = c.id
                            order by d.created_at desc, d.id desc limit 100) d,
                          pg_catalog.jsonb_each(d.data) e
                    where pg_catalog.jsonb_typeof(e.value) <> 'null'
                      and e.key not in ('objectId', 'createdAt', 'updatedAt', 'ACL')
                    order by e.key, d.created_at desc, d.id desc) f), '{}'),
        'classLevelPermissions', pg_catalog.jsonb_build_object(
            'find', '{"*": true}'::jsonb, 'count', '{"*": true}'::jsonb, 'get', '{"*": true}'::jsonb,
            'update', '{"*": true}'::jsonb, 'delete', '{"*": true}'::jsonb, 'addField', '{"*": true}'::jsonb,
            'protectedFields', '{"*": []}'::jsonb,
            'create', coalesce((select pg_catalog.jsonb_object_agg(x.k, true) from (
                select case when p = 'public' then '*' when p = 'authenticated' then 'requiresAuthentication'
                            when p like 'user:%' then pg_catalog.substr(p, 6) else p end as k
                  from pg_catalog.unnest(c.create_acl) p) x), '{}')))
$$;

-- GET /parse/schemas[/{class}]: the classes (all, or the one of that collection name).
-- Service role only.
create function baas.parse_schemas(class_name text default null) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if not baas._parse_master() then
        perform baas._raise('42501', 'forbidden', 'unauthorized: master key is required');
    end if;
    return coalesce((select jsonb_agg(baas._parse_schema_json(c) order by c.name) from baas.collections c
                      where not c.bucket and (class_name is null or c.name = class_name)), '[]');
end
$$;
comment on function baas.parse_schemas(text) is 'Parse door: collections as Parse class schemas (fields from their newest documents); service role only';

-- POST /parse/schemas/{class}: a collection with `create` as given (Parse's default
-- class-level permissions let anyone create: ['public']). Service role only.
create function baas.parse_create_class(class_name text, creators text[] default array['public']) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if not baas._parse_master() then
        perform baas._raise('42501', 'forbidden', 'unauthorized: master key is required');
    end if;
    perform baas.create_collection(class_name, jsonb_build_object('create', to_jsonb(coalesce(creators, '{}'))));
    return (select baas._parse_schema_json(c) from baas.collections c where c.name = class_name);
end
$$;
comment on function baas.parse_create_class(text, text[]) is 'Parse door: create a class (a collection, create permission as given); service role only';

-- DELETE /parse/schemas/{class}: drop an empty class's collection, as Parse Server drops
-- only empty classes (55000 class_not_empty otherwise; P0002 collection_not_found).
-- Service role only.
create function baas.parse_drop_class(class_name text) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    c baas.collections;
begin
    if not baas._parse_master() then
        perform baas._raise('42501', 'forbidden', 'unauthorized: master key is required');
    end if;
    c := baas._collection_by_name(class_name);
    if c.bucket then
        perform baas._raise('P0002', 'collection_not_found', format('%s is a file bucket, not a class', class_name));
    end if;
    -- Locked first: a document being written into it (which holds a key share of the
    -- row) is committed before the check sees the class empty, or waits for the drop.
    perform from baas.collections x where x.id = c.id for update;
    if exists (select from baas.documents d where d.collection_id = c.id) then
        perform baas._raise('55000', 'class_not_empty', format('Class %s is not empty, cannot drop schema.', class_name));
    end if;
    perform baas.drop_collection(class_name);
end
$$;
comment on function baas.parse_drop_class(text) is 'Parse door: drop an empty class''s collection; service role only';

-- Parse roles (/parse/classes/_Role) are pgbaas's roles (docs/parse.md): a role's
-- objectId and name are its pgbaas name, its `users` relation its direct members
-- (baas.role_members), its `roles` relation the roles whose members it contains
-- (baas.role_roles: Parse's "moderators.getRoles().add(administrators)" is
-- role_roles(moderators, administrators)). The service role sees every role with its
-- members; any other caller only the roles it holds (baas.principals(), nesting
-- included), with itself as the only member shown and only the child roles it also
-- holds: pgbaas shows no one who else holds a role.
create function baas.parse_roles() returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    with me as (select baas._parse_master() as master, baas.uid() as uid,
                       array(select pg_catalog.substr(p, 6) from pg_catalog.unnest(baas.principals()) p
                              where p like 'role:%') as held)
    select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'name', r.name,
               'createdAt', baas._parse_date(r.created_at),
               'users', array(select m.user_id from baas.role_members m
                               where m.role = r.name and (me.master or m.user_id = me.uid) order by m.user_id),
               'roles', array(select rr.member_role from baas.role_roles rr
                               where rr.role = r.name and (me.master or rr.member_role = any (me.held)) order by rr.member_role)
           ) order by r.created_at, r.name), '[]')
      from baas.roles r, me
     where me.master or r.name = any (me.held)
$$;
comment on function baas.parse_roles() is 'Parse door: the roles as _Role objects: every one for the service role, the caller''s own (members shown: only itself) for anyone else';

-- POST/PUT /parse/classes/_Role: make a role (is_new) or change its members and child
-- roles, in one transaction. Service role only (42501 forbidden): roles are made and
-- changed with the master key, or by a DBA in SQL (baas.create_role …), whose checks
-- (names, cycles) and audit apply.
create function baas.parse_save_role(name text, is_new boolean, add_users uuid[] default '{}', remove_users uuid[] default '{}',
                                     add_roles text[] default '{}', remove_roles text[] default '{}') returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    u uuid;
    r text;
begin
    if not baas._parse_master() then
        perform baas._raise('42501', 'forbidden', 'Roles are made and changed with the master key (or by a DBA in SQL).');
    end if;
    if is_new then
        perform baas.create_role(name);
    else
        perform baas._role_must_exist(name);
    end if;
    foreach u in array coalesce(add_users, '{}') loop
        perform baas.add_role_member(name, u);
    end loop;
    foreach u in array coalesce(remove_users, '{}') loop
        perform baas.remove_role_member(name, u);
    end loop;
    foreach r in array coalesce(add_roles, '{}') loop
        perform baas.add_role_to_role(name, r);
    end loop;
    foreach r in array coalesce(remove_roles, '{}') loop
        perform baas._role_must_exist(r);
        perform baas.remove_role_from_role(name, r);
    end loop;
    return (select pg_catalog.jsonb_build_object('objectId', x.name, 'createdAt', baas._parse_date(x.created_at))
              from baas.roles x where x.name = parse_save_role.name);
end
$$;
comment on function baas.parse_save_role(text, boolean, uuid[], uuid[], text[], text[]) is 'Parse door: make a role or change its members and child roles; service role only';

-- DELETE /parse/classes/_Role/{name}: baas.drop_role (the role leaves every ACL). Service role only.
create function baas.parse_delete_role(name text) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if not baas._parse_master() then
        perform baas._raise('42501', 'forbidden', 'Roles are deleted with the master key (or by a DBA in SQL).');
    end if;
    perform baas.drop_role(name);
end
$$;
comment on function baas.parse_delete_role(text) is 'Parse door: delete a role (baas.drop_role); service role only';

-- pgbaas-import parse --sessions: Parse Server's live revocable sessions, so that the
-- app's signed-in users stay signed in. Rows {user_id, token, expires_at?,
-- installation_id?}: each a pgbaas session of that user, live until its Parse expiry but
-- at most refresh_token_ttl from now (as a sign-in now), on that installation (its
-- device), with that token (kept as its SHA-256, as the door's own). Only what a
-- password sign-in would give now: no session for an account that is suspended, has a
-- second factor (a sign-in would ask for it), or is unverified while
-- email_verification is `required`. A token is imported once ever
-- (baas._parse_imported_tokens keeps its hash): a session that ended in pgbaas, and was
-- purged since, never comes back from a later run. Each is audited (session.import).
-- Skipped: those, expired ones, unknown users, tokens not 8 to 256 characters. DBAs only.
create table baas._parse_imported_tokens (
    token_hash bytea primary key,
    imported_at timestamptz not null default now()
);
revoke all on baas._parse_imported_tokens from public;
alter table baas._parse_imported_tokens enable row level security;
select pg_catalog.pg_extension_config_dump('baas._parse_imported_tokens', '');

create function baas.parse_import_sessions(sessions jsonb) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    r jsonb;
    n integer := 0;
    v_imported integer := 0;
    v_skipped integer := 0;
    v_user baas.users;
    v_expires timestamptz;
    v_sid uuid;
    v_hash bytea;
begin
    if sessions is null or jsonb_typeof(sessions) <> 'array' then
        perform baas._raise('22023', 'invalid_request', 'sessions must be a JSON array');
    end if;
    for r in select x from jsonb_array_elements(sessions) x loop
        n := n + 1;
        if jsonb_typeof(r) <> 'object' or jsonb_typeof(r -> 'token') <> 'string' or jsonb_typeof(r -> 'user_id') <> 'string' then
            perform baas._raise('22023', 'invalid_request', format('row %s: user_id and token are strings', n));
        end if;
        begin
            v_expires := least(coalesce((r ->> 'expires_at')::timestamptz, 'infinity'),
                               now() + (select s.refresh_token_ttl from baas.settings s));
            select * into v_user from baas.users u where u.id = (r ->> 'user_id')::uuid for key share;
        exception when others then
            perform baas._raise('22023', 'invalid_request', format('row %s: user_id is a uuid and expires_at a time', n));
        end;
        v_hash := baas._hash_token(r ->> 'token');
        if length(r ->> 'token') not between 8 and 256 or v_expires <= now() or v_user.id is null
           or v_user.suspended_at is not null
           or exists (select from baas._mfa_factors f where f.user_id = v_user.id and f.status = 'verified')
           or (v_user.email_verified_at is null and not v_user.is_anonymous
               and (select s.email_verification from baas.settings s) = 'required')
           or exists (select from baas._parse_imported_tokens t where t.token_hash = v_hash)
           or exists (select from baas._parse_sessions p where p.token_hash = v_hash) then
            v_skipped := v_skipped + 1;
            continue;
        end if;
        v_sid := baas.uuid7();
        insert into baas.sessions (id, user_id, expires_at, device_id)
        values (v_sid, v_user.id, v_expires, baas._parse_installation(r ->> 'installation_id'));
        insert into baas._parse_sessions (token_hash, session_id) values (v_hash, v_sid);
        insert into baas._parse_imported_tokens (token_hash) values (v_hash);
        perform baas._audit('session.import', v_user.id, details => jsonb_build_object('session', v_sid, 'from', 'parse'));
        v_imported := v_imported + 1;
    end loop;
    return jsonb_build_object('imported', v_imported, 'skipped', v_skipped);
end
$$;
comment on function baas.parse_import_sessions(jsonb) is 'pgbaas-import: Parse Server''s live sessions as pgbaas sessions with their tokens, once per token, only for accounts a password sign-in would admit without a second factor; {imported, skipped}';

-- pgbaas-import parse (import/, docs/parse.md): Parse Server's users with their bcrypt
-- hashes (checked as baas.import_users checks them; replaced by argon2id at the first
-- sign-in) and usernames, under the ids the importer chose. A row already there (same id)
-- is skipped, so an import can run again and resume. DBAs only (0.15.0: the service role
-- could otherwise link a sign-in identity to any account).
-- Rows: {id, username, email?, password_hash?, email_verified?, data?, created_at?, updated_at?,
-- anonymous_id?, identities?}: with anonymous_id and neither email nor hash, an anonymous
-- account linked to that id (baas.parse_auth_data); identities [{provider, subject}].
create function baas.parse_import_users(users jsonb) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    r jsonb;
    n integer := 0;
    v_imported integer := 0;
    v_skipped integer := 0;
    v_id uuid;
    v_hash text;
    v_email text;
    v_anonymous text;
    v_created timestamptz;
    i jsonb;
    v_owner uuid;
    v_new boolean;
    v_linked integer := 0;
    v_no_provider integer := 0;
    v_taken integer := 0;
begin
    if users is null or jsonb_typeof(users) <> 'array' then
        perform baas._raise('22023', 'invalid_request', 'users must be a JSON array');
    end if;
    for r in select x from jsonb_array_elements(users) x loop
        n := n + 1;
        if jsonb_typeof(r) <> 'object' or jsonb_typeof(r -> 'id') <> 'string' or jsonb_typeof(r -> 'username') <> 'string'
           or (r ? 'data' and jsonb_typeof(r -> 'data') <> 'object') then
            perform baas._raise('22023', 'invalid_request', format('row %s: id and username are strings, data an object', n));
        end if;
        v_new := false;
        if r ? 'identities' and jsonb_typeof(r -> 'identities') <> 'array' then
            perform baas._raise('22023', 'invalid_request', format('row %s: identities is an array', n));
        end if;
        begin
            v_id := (r ->> 'id')::uuid;
            v_created := coalesce((r ->> 'created_at')::timestamptz, now());
        exception when others then
            perform baas._raise('22023', 'invalid_request', format('row %s: id is a uuid and created_at a time', n));
        end;
        v_hash := null;
        if r ->> 'password_hash' is not null then
            begin
                v_hash := baas._import_hash(r ->> 'password_hash', null, null, null);
            exception when invalid_parameter_value then
                perform baas._raise('22023', 'invalid_hash', format('row %s: %s', n, sqlerrm));
            end;
        end if;
        v_email := case when r ->> 'email' is not null then baas._normalize_email(r ->> 'email') end;
        v_anonymous := r ->> 'anonymous_id';
        if r ? 'anonymous_id' and jsonb_typeof(r -> 'anonymous_id') not in ('string', 'null')
           or length(v_anonymous) not between 1 and 256 or v_anonymous ~ '[[:cntrl:]]' then
            perform baas._raise('22023', 'invalid_request', format('row %s: anonymous_id is 1 to 256 characters without control characters', n));
        end if;
        begin
            -- An anonymous Parse user (authData.anonymous, no email, no password) stays
            -- anonymous and signs in again with its id (baas.parse_login_anonymous); an
            -- anonymous_id on any other account is not linked.
            -- (0.15.0) An account with a sign-in identity is a full one.
            if jsonb_array_length(coalesce(r -> 'identities', '[]')) > 0 then
                v_anonymous := null;
            end if;
            insert into baas.users (id, email, password_hash, data, created_at, updated_at, email_verified_at, is_anonymous)
            values (v_id, v_email, v_hash, coalesce(r -> 'data', '{}'), v_created,
                    coalesce((r ->> 'updated_at')::timestamptz, v_created),
                    case when (r -> 'email_verified') = 'true' then now() end,
                    v_anonymous is not null and v_email is null and v_hash is null);
            insert into baas.parse_usernames (user_id, username) values (v_id, r ->> 'username');
            v_new := true;
            if v_anonymous is not null and v_email is null and v_hash is null then
                insert into baas.parse_auth_data (provider, provider_id, user_id) values ('anonymous', v_anonymous, v_id);
            end if;
            v_imported := v_imported + 1;
        exception when unique_violation then
            if exists (select from baas.users u where u.id = v_id) then
                v_skipped := v_skipped + 1;
            else
                perform baas._raise('23505', 'email_taken',
                    format('row %s: another account has this email, username or anonymous id', n));
            end if;
        end;
        -- (0.15.0) Its identities at sign-in providers (Parse's authData of Apple, Google,
        -- ...), linked when pgbaas has a provider of that name, for an account this call
        -- made only (a later run never adds a way into an account, nor brings back one
        -- its user unlinked), never taken from another account; each audited.
        for i in select x from jsonb_array_elements(coalesce(r -> 'identities', '[]')) x loop
            if jsonb_typeof(i -> 'provider') is distinct from 'string' or jsonb_typeof(i -> 'subject') is distinct from 'string'
               or length(i ->> 'subject') not between 1 and 255 then
                perform baas._raise('22023', 'invalid_request',
                    format('row %s: identities are {provider, subject}, a subject of 1 to 255 characters', n));
            end if;
            if not v_new then
                continue;
            end if;
            if not exists (select from baas.oidc_providers p where p.name = i ->> 'provider') then
                v_no_provider := v_no_provider + 1;
                continue;
            end if;
            select x.user_id into v_owner from baas.identities x where x.provider = i ->> 'provider' and x.subject = i ->> 'subject';
            if not found then
                insert into baas.identities (id, user_id, provider, subject) values (baas.uuid7(), v_id, i ->> 'provider', i ->> 'subject')
                on conflict (provider, subject) do nothing;
                if found then
                    v_linked := v_linked + 1;
                    perform baas._audit('identity.link', v_id, details => jsonb_build_object('provider', i ->> 'provider', 'by', 'import'));
                else
                    v_taken := v_taken + 1;
                end if;
            elsif v_owner <> v_id then
                v_taken := v_taken + 1;
            end if;
        end loop;
    end loop;
    perform baas._audit('user.import', null, details => jsonb_build_object('imported', v_imported, 'skipped', v_skipped, 'door', 'parse',
                                                                          'identities', v_linked));
    return jsonb_build_object('imported', v_imported, 'skipped', v_skipped,
                              'identities', jsonb_build_object('linked', v_linked, 'no_provider', v_no_provider, 'taken', v_taken));
end
$$;
comment on function baas.parse_import_users(jsonb) is
    'pgbaas-import parse: Parse users with their bcrypt hashes and usernames under given ids; a row whose id exists is skipped; {imported, skipped}';
