-- pgbaas schema: roles and tables. Loaded first (bootstrap) by CREATE EXTENSION.
--
-- API roles. Roles are cluster-wide while the extension is per database, so a second
-- database that creates the extension finds them already there.
do $roles$
begin
    if not exists (select from pg_catalog.pg_roles where rolname = 'baas_anon') then
        create role baas_anon nologin noinherit;
    end if;
    if not exists (select from pg_catalog.pg_roles where rolname = 'baas_user') then
        create role baas_user nologin noinherit;
    end if;
    if not exists (select from pg_catalog.pg_roles where rolname = 'baas_service') then
        create role baas_service nologin noinherit;
    end if;
    if not exists (select from pg_catalog.pg_roles where rolname = 'baas_authenticator') then
        -- The proxy's login role. NOINHERIT: it holds no privileges of its own beyond
        -- calling baas.authenticate(), which switches to one of the three roles above.
        create role baas_authenticator login noinherit;
    end if;
end
$roles$;

grant baas_anon, baas_user, baas_service to baas_authenticator;

-- Settings, one row. A DBA changes them with plain UPDATE.
create table baas.settings (
    singleton boolean primary key default true check (singleton),
    issuer text not null default 'pgbaas' check (length(issuer) between 1 and 200),
    audience text not null default 'pgbaas' check (length(audience) between 1 and 200),
    access_token_ttl interval not null default '15 minutes'
        check (access_token_ttl between '10 seconds' and '24 hours'),
    refresh_token_ttl interval not null default '30 days'
        check (refresh_token_ttl between '1 minute' and '365 days'),
    -- Sign-in throttling (sql/audit.sql, docs/security.md): growing waits per account
    -- and source instead of a lockout anyone could impose on an owner. After
    -- login_source_failures failures for an account a source waits login_delay before
    -- its next attempt, doubling with each further failure up to login_delay_max; after
    -- login_account_failures failures from untrusted sources together, every untrusted
    -- source waits the same way. A count starts afresh after login_failure_window without a failure; a successful
    -- sign-in makes its address and device trusted for login_trust_ttl.
    login_source_failures integer not null default 5 check (login_source_failures between 1 and 1000),
    login_account_failures integer not null default 20 check (login_account_failures between 1 and 100000),
    login_delay interval not null default '1 second' check (login_delay between '1 second' and '1 hour'),
    login_delay_max interval not null default '15 minutes' check (login_delay_max between '1 second' and '1 day'),
    login_failure_window interval not null default '1 hour'
        check (login_failure_window between '1 minute' and '7 days'),
    login_trust_ttl interval not null default '30 days' check (login_trust_ttl between '0' and '365 days'),
    -- Live change feeds (sql/realtime.sql, docs/realtime.md): the puller deletes captured
    -- events older than realtime_retention, and the oldest ones beyond
    -- realtime_retention_bytes of messages; a client resuming from before the window gets
    -- a reset instead of the events.
    realtime_retention interval not null default '24 hours'
        check (realtime_retention between '1 minute' and '365 days'),
    realtime_retention_bytes bigint not null default 1073741824
        check (realtime_retention_bytes between 1048576 and 1099511627776)
);
insert into baas.settings default values;
comment on table baas.settings is 'pgbaas settings: token issuer, audience and lifetimes, sign-in throttling (one row)';

create table baas.users (
    id uuid primary key,
    email text not null,
    password_hash text not null,
    data jsonb not null default '{}' check (jsonb_typeof(data) = 'object'),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint users_email_key unique (email),
    constraint users_email_lowercase check (email = lower(email))
);
comment on table baas.users is 'pgbaas accounts; passwords are argon2id (or imported bcrypt) hashes';

-- A session is one sign-in: the family of refresh tokens rotated from it and every
-- access token that carries its id (claim "sid"). Revoking it ends all of them at once.
create table baas.sessions (
    id uuid primary key,
    user_id uuid not null references baas.users (id) on delete cascade,
    created_at timestamptz not null default now(),
    refreshed_at timestamptz,
    expires_at timestamptz not null,
    revoked_at timestamptz,
    revoked_reason text
);
create index sessions_user_id_idx on baas.sessions (user_id);

-- Refresh tokens are stored as SHA-256 of the opaque token; a row with used_at set is
-- spent, and presenting it again revokes its session (after refresh_reuse_interval:
-- baas.refresh in sql/auth.sql).
create table baas.refresh_tokens (
    token_hash bytea primary key,
    session_id uuid not null references baas.sessions (id) on delete cascade,
    created_at timestamptz not null default now(),
    used_at timestamptz
);
create index refresh_tokens_session_id_idx on baas.refresh_tokens (session_id);

-- Private signing keys. Only the extension's owner can read this table; the public
-- halves are served by baas.jwks().
create table baas._signing_keys (
    kid text primary key,
    alg text not null default 'EdDSA' check (alg = 'EdDSA'),
    secret bytea not null,
    public_jwk jsonb not null,
    created_at timestamptz not null default clock_timestamp(),
    retired_at timestamptz
);

-- Nobody but the owner touches these tables directly: API roles go through functions.
revoke all on baas.settings, baas.users, baas.sessions, baas.refresh_tokens, baas._signing_keys from public;

-- Row-level security as a second wall: no policies, so any role other than the owner
-- that is granted a privilege here by mistake still sees no rows. Not FORCEd: the
-- SECURITY DEFINER functions run as the owner, which may not be a superuser on managed
-- Postgres services.
alter table baas.users enable row level security;
alter table baas.sessions enable row level security;
alter table baas.refresh_tokens enable row level security;
alter table baas._signing_keys enable row level security;

-- pg_dump of a database with the extension must carry the accounts and keys too.
select pg_catalog.pg_extension_config_dump('baas.settings', '');
select pg_catalog.pg_extension_config_dump('baas.users', '');
select pg_catalog.pg_extension_config_dump('baas.sessions', '');
select pg_catalog.pg_extension_config_dump('baas.refresh_tokens', '');
select pg_catalog.pg_extension_config_dump('baas._signing_keys', '');
