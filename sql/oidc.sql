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
create function baas.oidc_sign_in(provider text, id_token text, nonce text default null,
                                  device_id text default null) returns jsonb
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    select baas._oidc_sign_in(provider, id_token, nonce, device_id, null)
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
create function baas.link_identity(provider text, id_token text, nonce text default null) returns jsonb
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    select baas._link_identity(provider, id_token, nonce, null)
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
