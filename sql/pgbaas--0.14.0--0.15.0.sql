-- pgbaas 0.14.0 -> 0.15.0, run by ALTER EXTENSION pgbaas UPDATE.
--
-- It turns a 0.14.0 database into exactly what CREATE EXTENSION makes at 0.15.0:
-- tests/tests/upgrade.rs installs 0.14.0 from its release commit, fills it, runs this,
-- checks the data through the proxy and compares the schema (pg_dump --binary-upgrade)
-- with a fresh install's. Every statement below is the final text of the file it names
-- (sql/CHANGES-0.15.0.md lists what changed and why). Older databases upgrade through
-- the earlier scripts first.
--
-- Once released, an upgrade script is never edited: a fix goes into the next version's.

-- ===================================================================== sql/oidc.sql
-- (issue 21) The bodies of oidc_sign_in and link_identity become internal functions
-- that can also check the token's subject (Parse's authData id); the public ones call
-- them with none.

-- The subject a door expects the token to name (Parse's authData carries the provider's
-- id for the user beside its token), checked once the token is verified (0.15.0).
create function baas._oidc_check_subject(claims jsonb, subject text) returns void
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
begin
    if subject is not null and claims ->> 'sub' is distinct from subject then
        perform baas._raise('28000', 'invalid_id_token', 'the ID token names another subject (sub) than the id sent with it');
    end if;
end
$$;

-- Sign in (or up) with a verified token, as baas.oidc_sign_in; `subject`, when given,
-- must be the token's `sub` (0.15.0: the body of oidc_sign_in, which calls it).
create function baas._oidc_sign_in(provider text, id_token text, nonce text, device_id text,
                                   subject text) returns jsonb
language plpgsql volatile
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
    if _oidc_sign_in.device_id is not null and _oidc_sign_in.device_id !~ '^[A-Za-z0-9._:-]{1,128}$' then
        perform baas._raise('22023', 'invalid_request',
            'device_id must be 1 to 128 characters from A-Z, a-z, 0-9 and . _ : -');
    end if;
    p := baas._oidc_provider(_oidc_sign_in.provider);
    c := baas._oidc_claims(p, _oidc_sign_in.id_token, _oidc_sign_in.nonce);
    perform baas._oidc_check_subject(c, _oidc_sign_in.subject);
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
    return baas._complete_sign_in(u, 'oidc', _oidc_sign_in.device_id);
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
create or replace function baas.oidc_sign_in(provider text, id_token text, nonce text default null,
                                  device_id text default null) returns jsonb
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    select baas._oidc_sign_in(provider, id_token, nonce, device_id, null)
$$;
comment on function baas.oidc_sign_in(text, text, text, text) is
    'Sign in (or up) with an OpenID Connect ID token (Apple, Google, ...): tokens, or an MFA ticket; 409 identity_link_required when an account holds the address unproven';

-- Link a verified token's identity, as baas.link_identity; `subject`, when given, must
-- be the token's `sub` (0.15.0: the body of link_identity, which calls it).
create function baas._link_identity(provider text, id_token text, nonce text, subject text) returns jsonb
language plpgsql volatile
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
    p := baas._oidc_provider(_link_identity.provider);
    c := baas._oidc_claims(p, _link_identity.id_token, _link_identity.nonce);
    perform baas._oidc_check_subject(c, _link_identity.subject);
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

-- Signed in: add a provider's identity to this account. An anonymous account becomes a
-- full one (same id; the provider's verified address when no account has it): a new
-- token pair comes back, as from baas.upgrade_account. Otherwise {identity, user}.
create or replace function baas.link_identity(provider text, id_token text, nonce text default null) returns jsonb
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    select baas._link_identity(provider, id_token, nonce, null)
$$;
comment on function baas.link_identity(text, text, text) is
    'Signed in: add an OpenID Connect identity to this account (an anonymous one becomes a full account: new token pair)';


-- ==================================================================== sql/parse.sql
-- (issue 21) authData of OpenID Connect providers: sign in, link, unlink, and shown.

-- A user as Parse shows it: the account's data fields, then what the account says
-- (objectId, username, email, emailVerified, createdAt, updatedAt) over them.
create or replace function baas._parse_user_json(u baas.users) returns jsonb
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

-- pgbaas-import parse (import/, docs/parse.md): Parse Server's users with their bcrypt
-- hashes (checked as baas.import_users checks them; replaced by argon2id at the first
-- sign-in) and usernames, under the ids the importer chose. A row already there (same id)
-- is skipped, so an import can run again and resume. DBAs only (0.15.0: the service role
-- could otherwise link a sign-in identity to any account).
-- Rows: {id, username, email?, password_hash?, email_verified?, data?, created_at?, updated_at?,
-- anonymous_id?, identities?}: with anonymous_id and neither email nor hash, an anonymous
-- account linked to that id (baas.parse_auth_data); identities [{provider, subject}].
create or replace function baas.parse_import_users(users jsonb) returns jsonb
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


-- ==================================================================== sql/lints.sql

-- Security lints: what must never be true of a database running pgbaas. The test
-- command runs them against a freshly created extension (sql/tests/001) and proves
-- each one catches a violation (sql/tests/006). DBAs can run them after their own
-- changes: select * from baas.security_lints();  -- no rows means clean.
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
           'parse_import_users', 'parse_login_anonymous', 'parse_upgrade_anonymous',
           'parse_roles', 'parse_save_role', 'parse_delete_role', 'parse_find_users', 'parse_delete_user',
           'parse_schemas', 'parse_create_class', 'parse_drop_class', 'parse_import_sessions',
           'parse_login_auth_data', 'parse_set_auth_data'])
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
comment on function baas.security_lints() is
    'Security lints (no rows = clean): unforced RLS on API-readable tables, SECURITY DEFINER without search_path, PUBLIC execute, exposed internal functions, undocumented public functions, policies that drifted from their one rule (documents and files), missing or disabled read-entry triggers, write grants on file tables, policies reading user-editable data, the RPC door and protected tables (rpc_lints, table_lints)';


-- =================================================================== sql/grants.sql
revoke execute on function
    baas._oidc_check_subject(jsonb, text),
    baas._oidc_sign_in(text, text, text, text, text),
    baas._link_identity(text, text, text, text),
    baas._parse_oidc_auth(text, jsonb),
    baas.parse_login_auth_data(text, jsonb, text),
    baas.parse_set_auth_data(uuid, jsonb)
  from public;
grant execute on function baas.parse_login_auth_data(text, jsonb, text) to baas_anon, baas_user, baas_service;
grant execute on function baas.parse_set_auth_data(uuid, jsonb) to baas_user;
-- parse_import_users links sign-in identities now: DBAs only.
revoke execute on function baas.parse_import_users(jsonb) from baas_service;

-- Tell every proxy that the extension changed (see pgbaas--0.2.0--0.3.0.sql).
select pg_catalog.pg_notify('baas_extension', '0.15.0');
