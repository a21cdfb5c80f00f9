-- pgbaas 0.12.0 -> 0.13.0, run by ALTER EXTENSION pgbaas UPDATE.
--
-- It turns a 0.12.0 database into exactly what CREATE EXTENSION makes at 0.13.0:
-- tests/tests/upgrade.rs installs 0.12.0 from its release commit, fills it, runs this,
-- checks the data through the proxy and compares the schema (pg_dump --binary-upgrade)
-- with a fresh install's. Every statement below is the final text of the file it names
-- (sql/CHANGES-0.13.0.md lists what changed and why). Older databases upgrade through
-- the earlier scripts first.
--
-- Once released, an upgrade script is never edited: a fix goes into the next version's.

-- ==================================================================== sql/auth.sql
-- (issue 21) baas.login's password check, throttling and sign-in moved into
-- baas._password_sign_in, which the Parse door's sign-in by username shares.
-- A password sign-in of account u (NULL: nobody has the name typed), throttled under
-- p_key (the name as typed, normalised): for baas.login (by email) and baas.parse_login
-- (by Parse username, sql/parse.sql). device_id: an identifier the app keeps for this
-- install (a hint, never a credential: it only lets a device that signed in before skip
-- waits other sources caused); refresh_token: a live refresh token of the account, which
-- does the same without being spent. Failures make their source wait (sql/audit.sql,
-- sign-in throttling): {"error": {"code": "too_many_attempts", "retry_after": seconds}}.
create function baas._password_sign_in(p_key text, u baas.users, p_password text, p_device_id text,
                                       p_refresh_token text) returns jsonb
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    v_session uuid;
    v_owner uuid;
    g record;
    v_rehash text;
begin
    -- One attempt per typed name at a time, known or not, so that concurrent guesses
    -- see each other's failures (a burst cannot slip past a throttle).
    perform pg_advisory_xact_lock(hashtextextended('baas.login:' || p_key, 0));
    -- Looked up whether the account exists or not (and then matched to the account), so
    -- that an unknown name is not answered sooner than a known one.
    if p_refresh_token is not null and length(p_refresh_token) <= 256 then
        select s.id, s.user_id into v_session, v_owner
          from baas.refresh_tokens t join baas.sessions s on s.id = t.session_id
         where t.token_hash = baas._hash_token(p_refresh_token) and t.used_at is null
           and s.revoked_at is null and s.expires_at > now();
        if v_owner is distinct from u.id then
            v_session := null;
        end if;
    end if;
    select * into g from baas._login_gate(p_key, u.id, p_device_id, v_session);
    if g.retry_after is not null then
        -- Answered before any password work, for known and unknown names alike: a
        -- waiting source learns nothing about the password or the account.
        return jsonb_build_object('error', jsonb_build_object(
            'code', 'too_many_attempts',
            'message', format('too many failed sign-ins; retry in %s s', g.retry_after),
            'retry_after', g.retry_after));
    end if;
    -- An unknown name verifies against a dummy hash: same work, same answer, so it
    -- cannot be told from a wrong password.
    if not baas._verify_password(p_password, u.password_hash) then
        -- Reported as a result, not raised: the failure must commit to count.
        perform baas._audit('login.failure', u.id,
            details => jsonb_build_object('email', p_key, 'source', g.source));
        perform baas._login_failed(p_key, u.id, g.source, g.trusted);
        return jsonb_build_object('error', jsonb_build_object(
            'code', 'invalid_credentials', 'message', 'invalid email or password'));
    end if;
    perform baas._login_succeeded(p_key, u.id, g.source, p_device_id);
    perform baas._audit('login', u.id);
    if baas._password_needs_rehash(u.password_hash) then
        -- Same password, new format: users_password_tokens leaves pending links alone
        -- for exactly this hash (fresh salt: no other change can name it beforehand).
        v_rehash := baas._hash_password(p_password);
        perform set_config('baas.password_rehash', v_rehash, true);
        update baas.users set password_hash = v_rehash where id = u.id;
        perform set_config('baas.password_rehash', '', true);
    end if;
    return baas._complete_sign_in(u, 'pwd', p_device_id);
end
$$;

-- Sign in by email (baas._password_sign_in).
create or replace function baas.login(email text, password text, device_id text default null,
                           refresh_token text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    u baas.users;
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
    select * into u from baas.users where email = baas._email_key(login.email);
    return baas._password_sign_in(baas._email_for_audit(login.email), u, login.password,
                                  login.device_id, login.refresh_token);
end
$$;

-- =================================================================== sql/parse.sql
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
        'updatedAt', baas._parse_date(u.updated_at)))
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
    if password is null or password = '' then
        perform baas._raise('22023', 'password_missing', 'password is required');
    end if;
    if length(username) > 256 or username ~ '[[:cntrl:]]' then
        perform baas._raise('22023', 'username_invalid', 'a username is 1 to 256 characters without control characters');
    end if;
    if data is not null and jsonb_typeof(data) <> 'object' then
        perform baas._raise('22023', 'invalid_request', 'the user''s fields must be a JSON object');
    end if;
    perform baas._check_password(password);
    -- email_verification as baas.signup applies it (sql/accounts.sql): a mail to verify
    -- the address, and with `required` no session until it is verified, so an account
    -- without an email could never sign in.
    if v_mode = 'required' and email is null then
        perform baas._raise('22023', 'email_missing', 'you must provide an email: this app signs in only with a verified email');
    end if;
    if v_mode <> 'off' and email is not null then
        perform baas._email_configured();
    end if;
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

-- pgbaas-import parse (import/, docs/parse.md): Parse Server's users with their bcrypt
-- hashes (checked as baas.import_users checks them; replaced by argon2id at the first
-- sign-in) and usernames, under the ids the importer chose. A row already there (same id)
-- is skipped, so an import can run again and resume. DBAs and the service role only.
-- Rows: {id, username, email?, password_hash?, email_verified?, data?, created_at?, updated_at?}.
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
    v_created timestamptz;
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
        begin
            insert into baas.users (id, email, password_hash, data, created_at, updated_at, email_verified_at)
            values (v_id, v_email, v_hash, coalesce(r -> 'data', '{}'), v_created,
                    coalesce((r ->> 'updated_at')::timestamptz, v_created),
                    case when (r -> 'email_verified') = 'true' then now() end);
            insert into baas.parse_usernames (user_id, username) values (v_id, r ->> 'username');
            v_imported := v_imported + 1;
        exception when unique_violation then
            if exists (select from baas.users u where u.id = v_id) then
                v_skipped := v_skipped + 1;
            else
                perform baas._raise('23505', 'email_taken',
                    format('row %s: another account has this email or username', n));
            end if;
        end;
    end loop;
    perform baas._audit('user.import', null, details => jsonb_build_object('imported', v_imported, 'skipped', v_skipped, 'door', 'parse'));
    return jsonb_build_object('imported', v_imported, 'skipped', v_skipped);
end
$$;
comment on function baas.parse_import_users(jsonb) is
    'pgbaas-import parse: Parse users with their bcrypt hashes and usernames under given ids; a row whose id exists is skipped; {imported, skipped}';

-- =================================================================== sql/lints.sql
-- The Parse door's public functions join the documented list.
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
           '_collection_by_name', '_claim', '_check_collection_name', '_document_json', '_parse_document_id',
           '_document_not_found', '_write_document', '_explain_write_miss', '_version_conflict',
           '_validate_document', '_normalize_acl', '_check_new_principals', '_acl_change', '_change_acl',
           '_owned_document', '_set_document_owner', '_may_create', '_may_manage', '_is_privileged',
           '_find_page', '_find_compiled', '_find_compiled_text', '_list_documents_text', '_count_compiled', '_btree_index_id', '_read_entries_ready', '_jfield',
           '_jsonb_lp_eq', '_jsonb_lp_lt', '_jsonb_lp_le', '_jsonb_lp_gt', '_jsonb_lp_ge',
           '_jsonb_lp_cmp', '_jsonb_lp_contains',
           -- files (sql/files.sql, sql/grants.sql)
           '_upload_append', '_upload_lease', '_upload_rewind', '_upload_release', '_file_json', '_file_row',
           '_explain_file_miss', '_blob_piece', '_file_max_bytes', '_raise_too_large',
           '_quota_left', '_upload_open', '_upload_insert', '_upload_seal', '_upload_done', '_may_attach_blob',
           '_blob_file_json', '_file_link_sign', '_check_file_name',
           '_normalize_content_type', '_file_type_allowed',
           -- multi-factor (sql/accounts.sql): the aal2 policies
           '_aal2_blocked', '_aal2_blocked_indexes',
           -- rpc (sql/rpc.sql)
           '_exposed_schemas', '_rpc_plan',
           -- (rpc above, protected tables below: one line each, kept apart for merges)
           -- tables (sql/tables.sql)
           -- tables over HTTP (package C)
           '_served_table', '_table_check', '_table_explain_miss', '_table_list_sql', '_table_get_sql',
           '_table_insert_sql', '_table_update_sql', '_table_delete_sql',
           '_table_exact_numbers',
           '_apply_operators', -- field operators (issue 18, package A)
           -- references (issue 18, package C)
           '_check_references', '_expand_tree', '_ref_key', '_ref_value', '_ref_profiles', '_max_expand_references', '_expand_level',
           '_lower_references', '_max_response_bytes', '_expand_checked',
           '_batch_max_operations', -- batches (issue 18, sql/batch.sql)
           '_protected_table_stub'])
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
           -- rpc (sql/rpc.sql)
           'expose_schema', 'unexpose_schema', 'rpc', 'raise',
           -- (rpc above, protected tables below: one line each, kept apart for merges)
           -- tables (sql/tables.sql)
           'protect', 'unprotect', 'has_role', 'can_read', 'can_read_file',
           -- tables over HTTP (package C)
           'table_list', 'table_get', 'table_insert', 'table_update', 'table_delete',
           'create_webhook', 'drop_webhook', 'set_webhook_active', 'replay_webhook_event', 'replay_dead_webhook_events', 'purge_webhook_events', -- webhooks (sql/webhooks.sql)
           'batch', -- batches (issue 18, sql/batch.sql)
           -- DBA tools
           'as_user', 'purge_audit_log', 'security_lints',
           -- housekeeping (sql/housekeeping.sql)
           'housekeeping',
           -- references (sql/refs.sql)
           'expand', 'expand_page', 'referrers',
           -- the Parse door (sql/parse.sql)
           'parse_signup', 'parse_login', 'parse_me', 'parse_get_user', 'parse_update_user',
           'parse_save_installation', 'parse_installations', 'parse_config', 'parse_set_config',
           'parse_import_users'])
    union all
    -- 4c. The document policies and the index entries' read policy are made from one
    --     rule (sql/permissions.sql): each must still say what documents_read says
    --     (with its own ACL column), for the same roles and command; the read entries'
    --     policy keeps its one text (the caller's principals; equal to documents_read
    --     for entries kept in step, see 4c''); the service policies must agree; no other
    --     policy may widen any of these tables.
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
    select 'policy_drift', 'policy read_entries_read on baas.read_entries',
           case when p.oid is null then 'missing: sql/permissions.sql creates it'
                else format('not the read entries'' rule (principal = any (caller''s principals)): %s', pg_get_expr(p.polqual, p.polrelid)) end
      from (select 1) one
      left join pg_policy p on p.polname = 'read_entries_read' and p.polrelid = 'baas.read_entries'::regclass
      left join pg_policy r on r.polname = 'documents_read' and r.polrelid = 'baas.documents'::regclass
     where p.oid is null
        or pg_get_expr(p.polqual, p.polrelid) is distinct from '(principal = ANY (( SELECT baas.principals() AS principals)::text[]))'
        or p.polroles::oid[] is distinct from r.polroles::oid[]
        or p.polcmd::text <> 'r' or p.polpermissive is distinct from r.polpermissive
    union all
    -- 4c''. The read entries are kept by baas.documents' triggers: without them (dropped,
    --      or disabled) counts of whole collections would drift from the documents.
    select 'read_entries_unkept', format('trigger %I on baas.documents', v.tgname),
           case when t.oid is null then 'missing: sql/documents.sql creates it'
                else 'disabled (or replica-only): whole-collection counts no longer follow the documents' end
      from (values ('documents_read_entries'), ('documents_read_entries_update'), ('documents_truncate_entries')) v(tgname)
      left join pg_trigger t on t.tgrelid = 'baas.documents'::regclass and t.tgname = v.tgname
     where t.oid is null or t.tgenabled not in ('O', 'A')
    union all
    select 'policy_drift', format('policy %I on %s', p.polname, p.polrelid::regclass),
           'the service policy must be `to baas_service using (true)`, as documents_service'
      from pg_policy p
     where p.polname in ('documents_service', 'index_entries_service', 'read_entries_service')
       and p.polrelid in ('baas.documents'::regclass, 'baas.index_entries'::regclass, 'baas.read_entries'::regclass)
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
        or (p.polrelid = 'baas.read_entries'::regclass
            and p.polname not in ('read_entries_service', 'read_entries_read', 'read_entries_aal'))
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
                    '(index_id <> ALL (( SELECT baas._aal2_blocked_indexes() AS _aal2_blocked_indexes)::integer[]))'),
                   ('read_entries_aal', 'baas.read_entries', 'r',
                    '(collection_id <> ALL (( SELECT baas._aal2_blocked() AS _aal2_blocked)::integer[]))')) v(polname, rel, cmd, qual)
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
    union all
    -- 6. The RPC door (sql/rpc.sql): functions served over HTTP.
    select * from baas._rpc_lints()
    union all
    -- 7. Protected tables (sql/tables.sql): policies made from their definitions.
    select * from baas._table_lints()
$$;

-- ================================================================== sql/grants.sql
revoke execute on function
    baas._password_sign_in(text, baas.users, text, text, text),
    baas._parse_date(timestamptz),
    baas._parse_user_json(baas.users),
    baas._parse_session_token(jsonb),
    baas._parse_installation(text),
    baas.parse_signup(text, text, text, jsonb, text),
    baas.parse_login(text, text, text),
    baas.parse_me(),
    baas._parse_session_claims(text),
    baas._parse_authenticate(text, boolean),
    baas._parse_master(),
    baas.parse_get_user(uuid),
    baas.parse_update_user(uuid, text, jsonb),
    baas._parse_installation_json(baas.parse_installations),
    baas.parse_save_installation(uuid, jsonb),
    baas.parse_installations(uuid, integer, integer),
    baas.parse_config(),
    baas.parse_set_config(jsonb, jsonb),
    baas.parse_import_users(jsonb)
  from public;
-- The Parse door (issue 21, sql/parse.sql): sign-up and sign-in by username for any
-- caller, the signed-in user for users; the proxy's login role authenticates Parse
-- session tokens (and the master key it checked) in place of baas.authenticate.
grant execute on function
    baas.parse_signup(text, text, text, jsonb, text),
    baas.parse_login(text, text, text)
  to baas_anon, baas_user, baas_service;
grant execute on function baas.parse_me() to baas_user;
grant execute on function
    baas.parse_get_user(uuid),
    baas.parse_update_user(uuid, text, jsonb),
    baas.parse_save_installation(uuid, jsonb),
    baas.parse_installations(uuid, integer, integer),
    baas.parse_config(),
    baas.parse_set_config(jsonb, jsonb)
  to baas_anon, baas_user, baas_service;
grant execute on function baas._parse_authenticate(text, boolean), baas._parse_session_claims(text)
  to baas_authenticator;
grant execute on function baas.parse_import_users(jsonb) to baas_service;

-- Tell every proxy that the extension changed (see pgbaas--0.2.0--0.3.0.sql).
select pg_catalog.pg_notify('baas_extension', '0.13.0');
