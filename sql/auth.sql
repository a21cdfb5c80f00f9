-- pgbaas authentication: the SQL functions behind /v1/auth/*. Every function that
-- touches the private tables is SECURITY DEFINER with a fixed search_path and names
-- every object with its schema. Errors carry an explicit SQLSTATE and, in DETAIL, the
-- stable code an HTTP client sees (docs/errors.md).

-- The verified JWT claims of the current request ('{}' when anonymous).
-- claims() and uid() are single expressions without FROM so the planner inlines them:
-- called from PL/pgSQL as non-inlined SQL functions they are re-planned on every call
-- (measured: ~370 us per baas.uid() call that way, ~1 us inlined).
create function baas.claims() returns jsonb
language sql stable parallel safe
as $$
    select coalesce(nullif(pg_catalog.current_setting('baas.claims', true), '')::jsonb, '{}'::jsonb)
$$;
comment on function baas.claims() is 'Verified token claims of the current request, or {} when anonymous';

-- The signed-in user's id, or NULL. Policies should call it as (select baas.uid()) so
-- it is evaluated once per statement. baas._claim(key) is `claims() ->> key` with the
-- parsed claims kept per backend (extension/src/api/auth.rs): the policies' uid(),
-- aal() and is_anonymous() parsed the token's JSON ~8 times per statement.
create function baas.uid() returns uuid
language sql stable parallel safe
as $$
    select case when baas._claim('role') = 'baas_user' then baas._claim('sub')::uuid end
$$;
comment on function baas.uid() is 'The signed-in user''s id, or NULL when anonymous';

create function baas._user_json(u baas.users) returns jsonb
language sql stable parallel safe
as $$
    select pg_catalog.jsonb_build_object(
        'id', u.id, 'email', u.email, 'data', u.data,
        'created_at', u.created_at, 'updated_at', u.updated_at)
$$;

create function baas._raise(sqlstate text, code text, message text) returns void
language plpgsql volatile
as $$
begin
    raise exception using errcode = sqlstate, message = message, detail = code;
end
$$;

-- True while the session exists, is not revoked and has not expired. Runs on every
-- request: PL/pgSQL, because a SECURITY DEFINER SQL function is parsed and planned
-- again on every call (that was a fifth of all CPU under load; docs/benchmarks.md),
-- while PL/pgSQL keeps its plan for the session.
create function baas._session_active(sid uuid, uid uuid) returns boolean
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    return exists (
        select from baas.sessions s
        where s.id = sid and s.user_id = uid
          and s.revoked_at is null and s.expires_at > pg_catalog.now());
end
$$;

create table baas.service_tokens (
    id uuid primary key,
    name text not null check (length(name) between 1 and 200),
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    revoked_at timestamptz
);
revoke all on baas.service_tokens from public;
alter table baas.service_tokens enable row level security;
select pg_catalog.pg_extension_config_dump('baas.service_tokens', '');

create function baas._service_token_active(sid uuid) returns boolean
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    return exists (
        select from baas.service_tokens t
        where t.id = sid and t.revoked_at is null and t.expires_at > pg_catalog.now());
end
$$;

-- Called by the proxy (as baas_authenticator) at the start of every request's
-- transaction: checks that the token's session is still alive (so logout takes effect
-- on the very next request) and switches to the token's role for the rest of the
-- transaction. NULL claims mean an anonymous caller. Deliberately SECURITY INVOKER and
-- without a SET clause: set_config(..., true) must outlive this call.
create function baas.authenticate(claims jsonb) returns void
language plpgsql volatile
as $$
declare
    v_role text := claims ->> 'role';
begin
    if claims is null then
        perform pg_catalog.set_config('baas.claims', '', true);
        perform pg_catalog.set_config('role', 'baas_anon', true);
        return;
    end if;
    if v_role = 'baas_user' then
        if not baas._session_active((claims ->> 'sid')::uuid, (claims ->> 'sub')::uuid) then
            raise exception using errcode = '28000', detail = 'invalid_token',
                message = 'the session of this token has ended';
        end if;
    elsif v_role = 'baas_service' then
        if not baas._service_token_active((claims ->> 'sid')::uuid) then
            raise exception using errcode = '28000', detail = 'invalid_token',
                message = 'this service token has been revoked';
        end if;
    else
        raise exception using errcode = '28000', detail = 'invalid_token',
            message = 'token role is not accepted';
    end if;
    perform pg_catalog.set_config('baas.claims', claims::text, true);
    perform pg_catalog.set_config('role', v_role, true);
end
$$;
comment on function baas.authenticate(jsonb) is
    'Proxy entry point: check the session of verified claims and switch role for this transaction';

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

-- A token pair for session p_sid: a new refresh token of its family and an access token.
create function baas._token_response(u baas.users, p_sid uuid) returns jsonb
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
        'access_token', baas._access_token(u, (select x from baas.sessions x where x.id = p_sid)),
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

-- A new account (validated email and password, argon2id hash), recorded in the audit
-- log as `action`. For baas.signup and baas.create_user.
create function baas._create_account(email text, password text, data jsonb, action text) returns baas.users
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    v_email text;
    u baas.users;
begin
    if _create_account.email is null or _create_account.password is null then
        perform baas._raise('22023', 'invalid_request', 'email and password are required');
    end if;
    if _create_account.data is not null and jsonb_typeof(_create_account.data) <> 'object' then
        perform baas._raise('22023', 'invalid_request', 'data must be a JSON object');
    end if;
    v_email := baas._normalize_email(_create_account.email);
    perform baas._check_password(_create_account.password);
    begin
        insert into baas.users (id, email, password_hash, data)
        values (baas.uuid7(), v_email, baas._hash_password(_create_account.password),
                coalesce(_create_account.data, '{}'))
        returning * into u;
    exception when unique_violation then
        perform baas._raise('23505', 'email_taken', 'an account with this email already exists');
    end;
    perform baas._audit(action, u.id, details => jsonb_build_object('email', u.email));
    return u;
end
$$;

create function baas.signup(email text, password text, data jsonb default '{}') returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    return baas._new_session(baas._create_account(email, password, data, 'signup'), 1::smallint, '{pwd}', null);
end
$$;
comment on function baas.signup(text, text, jsonb) is
    'Create an account and sign it in: {user, access_token, token_type, expires_in, refresh_token}';

-- For DBAs: an account without a session (baas.signup, the app's call, also signs it
-- in and returns live tokens). Not granted to any API role.
create function baas.create_user(email text, password text, data jsonb default '{}') returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    return baas._user_json(baas._create_account(email, password, data, 'user.create'));
end
$$;
comment on function baas.create_user(text, text, jsonb) is
    'DBAs: create an account without signing it in; returns {id, email, data, created_at, updated_at}';

-- Sign in. device_id: an identifier the app keeps for this install (a hint, never a
-- credential: it only lets a device that signed in before skip waits other sources
-- caused); refresh_token: a live refresh token of the account, which does the same
-- without being spent. Failures make their source wait (sql/audit.sql, sign-in
-- throttling): {"error": {"code": "too_many_attempts", "retry_after": seconds}}.
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
create function baas.login(email text, password text, device_id text default null,
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
comment on function baas.login(text, text, text, text) is
    'Sign in with email and password (optionally a device id and a refresh token that exempt a known client from others'' failures); {"error": {"code": "invalid_credentials"}} for unknown email and wrong password alike, {"error": {"code": "too_many_attempts", "retry_after": s}} while this source must wait';

create function baas.refresh(refresh_token text) returns jsonb
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

-- The caller's session id from the verified claims, or 28000 when there is none.
create function baas._require_session() returns uuid
language plpgsql stable
as $$
declare
    v_sid uuid := (baas.claims() ->> 'sid')::uuid;
begin
    if v_sid is null or baas.uid() is null then
        perform baas._raise('28000', 'not_authenticated', 'this call needs a signed-in user');
    end if;
    -- Checked again here, not only in baas.authenticate(): a role that reaches these
    -- functions from SQL without the proxy must still hold a live session.
    if not baas._session_active(v_sid, baas.uid()) then
        perform baas._raise('28000', 'invalid_token', 'the session of this token has ended');
    end if;
    return v_sid;
end
$$;

create function baas.logout() returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_sid uuid := baas._require_session();
begin
    update baas.sessions set revoked_at = now(), revoked_reason = 'logout'
     where id = v_sid and revoked_at is null;
    perform baas._audit('logout', baas.uid(), details => jsonb_build_object('session', v_sid));
end
$$;
comment on function baas.logout() is 'End the current session: its access and refresh tokens stop working at once';

create function baas.get_user() returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    u baas.users;
begin
    perform baas._require_session();
    select * into u from baas.users where id = baas.uid();
    if not found then
        perform baas._raise('28000', 'invalid_token', 'the account of this token no longer exists');
    end if;
    return baas._user_json(u);
end
$$;
comment on function baas.get_user() is 'The signed-in user: {id, email, data, created_at, updated_at}';

create function baas.update_user(data jsonb default null, password text default null,
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

create function baas.delete_user() returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    perform baas._require_session();
    delete from baas.users where id = baas.uid();
end
$$;
comment on function baas.delete_user() is 'Delete the signed-in account and every session of it';

-- Public keys that verify tokens: the active key plus retired keys whose tokens may
-- still be unexpired.
create function baas.jwks() returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select jsonb_build_object('keys',
        coalesce(jsonb_agg(k.public_jwk order by k.created_at desc), '[]'::jsonb))
      from baas._signing_keys k, baas.settings s
     where k.retired_at is null
        or k.retired_at > now() - s.access_token_ttl - interval '1 minute'
        -- a live service token signed while this key was active
        or exists (select from baas.service_tokens t
                    where t.revoked_at is null and t.expires_at > now()
                      and t.created_at >= k.created_at and t.created_at < k.retired_at)
$$;
comment on function baas.jwks() is 'JSON Web Key Set of the public keys that verify pgbaas access tokens';

create function baas.auth_settings() returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select jsonb_build_object('issuer', issuer, 'audience', audience,
        'access_token_ttl', extract(epoch from access_token_ttl)::int)
      from baas.settings
$$;
comment on function baas.auth_settings() is 'Token issuer, audience and lifetime, for verifiers';

-- New signing key; the old one keeps verifying until tokens it signed have expired.
create function baas.rotate_signing_key() returns text
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_kid text;
begin
    update baas._signing_keys set retired_at = clock_timestamp() where retired_at is null;
    insert into baas._signing_keys (kid, secret, public_jwk)
    select kid, secret, public_jwk from baas._generate_signing_key()
    returning kid into v_kid;
    perform pg_notify('baas_keys', v_kid);
    return v_kid;
end
$$;
comment on function baas.rotate_signing_key() is 'Start signing with a new key; returns its kid';

-- Housekeeping for a scheduler (pg_cron or the like): drop sessions that ended over a
-- day ago, with their spent refresh tokens.
create function baas.purge_sessions() returns bigint
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

-- Service tokens: for server-side code and admin tools. They act as baas_service, the
-- one role that bypasses document ACLs; only a DBA can mint or revoke them.
create function baas.create_service_token(name text, ttl interval default '1 hour') returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    v_id uuid := baas.uuid7();
    s baas.settings;
    k record;
    v_now bigint := extract(epoch from now())::bigint;
begin
    if ttl is null or ttl <= interval '0' or ttl > interval '366 days' then
        perform baas._raise('22023', 'invalid_request', 'ttl must be between 1 second and 366 days');
    end if;
    select * into strict s from baas.settings;
    select kid, secret into k from baas._signing_keys where retired_at is null order by created_at desc limit 1;
    if not found then
        perform baas._raise('55000', 'no_signing_key', 'pgbaas has no active signing key; run select baas.rotate_signing_key()');
    end if;
    -- clock_timestamp(), like the keys' created_at/retired_at, so that baas.jwks() can
    -- tell which key signed it even within one transaction.
    insert into baas.service_tokens (id, name, created_at, expires_at)
    values (v_id, create_service_token.name, clock_timestamp(), now() + ttl);
    perform baas._audit('service_token.create', details => jsonb_build_object('id', v_id, 'name', create_service_token.name, 'ttl', ttl::text));
    return jsonb_build_object(
        'id', v_id,
        'token', baas._sign_jwt(k.kid, k.secret, jsonb_build_object(
            'iss', s.issuer, 'aud', s.audience, 'sub', 'service:' || create_service_token.name,
            'role', 'baas_service', 'sid', v_id, 'iat', v_now,
            'exp', v_now + extract(epoch from ttl)::bigint)),
        'expires_at', now() + ttl);
end
$$;
comment on function baas.create_service_token(text, interval) is
    'Mint a baas_service token (bypasses document ACLs): {id, token, expires_at}';

create function baas.revoke_service_token(id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if not exists (select from baas.service_tokens t where t.id = revoke_service_token.id) then
        perform baas._raise('P0002', 'service_token_not_found', format('no service token with id %s', revoke_service_token.id));
    end if;
    -- Revoking a revoked token again changes nothing and is not an error.
    update baas.service_tokens t set revoked_at = now() where t.id = revoke_service_token.id and t.revoked_at is null;
    if found then
        perform baas._audit('service_token.revoke', details => jsonb_build_object('id', revoke_service_token.id));
    end if;
end
$$;
comment on function baas.revoke_service_token(uuid) is 'Revoke a service token at once; P0002 service_token_not_found for an unknown id';
