-- pgbaas 0.2.0 -> 0.3.0, run by ALTER EXTENSION pgbaas UPDATE.
--
-- It turns a 0.2.0 database into exactly what CREATE EXTENSION makes at 0.3.0:
-- tests/tests/upgrade.rs installs 0.2.0 from its release commit, fills it, runs this,
-- checks the data through the proxy and compares the schema (pg_dump --binary-upgrade)
-- with a fresh install's. Every statement below is the final text of the file it names
-- (sql/CHANGES-0.3.0.md lists what changed and why). A 0.1.0 database upgrades through
-- pgbaas--0.1.0--0.2.0.sql first.
--
-- Once released, an upgrade script is never edited: a fix goes into the next version's.
--
-- A package upgrade replaces the library (pgbaas.so) before this runs: C functions keep
-- their symbols, so 0.2.0's SQL runs on the new library until this script has run (the
-- test checks every symbol 0.2.0 names).

-------------------------------------------------------------------- review: no existence oracle in _set_document_owner
create or replace function baas._set_document_owner(collection_id integer, id uuid, new_owner uuid, expected_version bigint)
returns baas.documents
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_caller text := baas._caller_role();
    d baas.documents;
begin
    select * into d from baas.documents t
     where t.collection_id = _set_document_owner.collection_id and t.id = _set_document_owner.id
       for update;
    -- Running as the extension's owner: asked about the caller's role. A caller who may
    -- not manage the document gets the same answer as for a missing one, so that a
    -- direct SQL call cannot tell an unreadable id from a free one (baas.transfer has
    -- already answered 404 or 403 as the caller sees it before calling this).
    if not found or not baas._may_manage(d.owner, v_caller) then
        raise exception using errcode = 'P0002', detail = 'document_not_found', message = 'document not found';
    end if;
    if expected_version is not null and d.version <> expected_version then
        perform baas._version_conflict(d.version, expected_version);
    end if;
    if new_owner is null or not exists (select from baas.users u where u.id = new_owner) then
        raise exception using errcode = '22023', detail = 'invalid_request',
            message = 'new owner must be an existing user id';
    end if;
    update baas.documents t set owner = new_owner
     where t.collection_id = _set_document_owner.collection_id and t.id = _set_document_owner.id
    returning * into d;
    return d;
end
$$;
-- ---------------------------------------------------------------- connections that heal
-- Tell every proxy that the extension changed: a proxy LISTENs on baas_extension and
-- retires the pooled connections opened before the update at their next checkout, so
-- no request runs on a backend that cached the old version's plans and functions.
-- Postgres delivers it when ALTER EXTENSION commits, so its place in the script does
-- not matter; every later upgrade script sends it too, with its own version.
select pg_catalog.pg_notify('baas_extension', '0.3.0');
-- Bounded responses (issue 13): a page of documents holds at most
-- baas.max_response_bytes of JSON (a setting of the library). _find_compiled takes
-- `paged`: list_documents asks for {"items", "next"} and gets a page that may end
-- early with its `next`; baas.find gets 54000 response_too_large instead.
drop function baas._find_compiled(integer, text, jsonb, text, integer, integer, uuid, text[]);
create function baas."_find_compiled"(
	"collection_id" INT, /* core::option::Option<i32> */
	"name" TEXT, /* core::option::Option<&str> */
	"filter" jsonb, /* core::option::Option<pgbaas::api::Json> */
	"order" TEXT, /* core::option::Option<&str> */
	"lim" INT, /* core::option::Option<i32> */
	"off" INT, /* core::option::Option<i32> */
	"after" uuid, /* core::option::Option<pgrx::datum::uuid::Uuid> */
	"fields" TEXT[], /* core::option::Option<alloc::vec::Vec<alloc::string::String>> */
	"paged" bool DEFAULT false /* bool */
) RETURNS jsonb /* pgbaas::api::query::RawJsonb */
STABLE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'find_compiled_wrapper';
revoke execute on function baas._find_compiled(integer, text, jsonb, text, integer, integer, uuid, text[], boolean) from public;
grant execute on function baas._find_compiled(integer, text, jsonb, text, integer, integer, uuid, text[], boolean)
  to baas_anon, baas_user, baas_service;
create or replace function baas.list_documents(collection text, filter jsonb default '{}', "order" text default null,
                                    lim integer default 100, off integer default 0,
                                    with_count boolean default false, after uuid default null,
                                    fields text[] default null)
returns jsonb
language plpgsql stable
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    v jsonb;
begin
    -- paged: a full page, or one cut short by the response budget, names its last
    -- id as `next` (the `after` of the next page); a shorter page is the last one.
    v := baas._find_compiled(c.id, c.name, filter, "order", lim, off, after, fields, paged => true);
    if with_count then
        v := v || jsonb_build_object('count', baas.count(collection, filter));
    end if;
    return v;
end
$$;
-- ===================================================================== issue 13: sign-in throttling (lockout)
-- The account lockout (baas._lockouts, lockout_* settings) gives way to throttling per
-- account and source (sql/audit.sql; sql/CHANGES-0.3.0.md).
drop function baas._note_login_failure(uuid);
drop function baas._account_locked(uuid);
alter extension pgbaas drop table baas._lockouts;
drop table baas._lockouts;

-- baas.settings: the lockout_* columns give way to login_* ones. Dropped columns would
-- stay behind as slots a fresh install lacks (pg_dump --binary-upgrade shows them), so
-- the table is made anew as sql/schema.sql makes it, with the token settings carried
-- over; the new login_* settings start at their defaults (the old ones counted a
-- different thing: failures of everyone, for a wall).
-- The old table's constraints step aside first, so that the new one's get the names a
-- fresh install gives them.
alter table baas.settings rename constraint settings_pkey to _settings_0_2_0_pkey;
alter table baas.settings rename constraint settings_singleton_check to _settings_0_2_0_singleton_check;
alter table baas.settings rename constraint settings_issuer_check to _settings_0_2_0_issuer_check;
alter table baas.settings rename constraint settings_audience_check to _settings_0_2_0_audience_check;
alter table baas.settings rename constraint settings_access_token_ttl_check to _settings_0_2_0_access_token_ttl_check;
alter table baas.settings rename constraint settings_refresh_token_ttl_check to _settings_0_2_0_refresh_token_ttl_check;
alter table baas.settings rename to _settings_0_2_0;
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
    login_trust_ttl interval not null default '30 days' check (login_trust_ttl between '0' and '365 days')
);
insert into baas.settings (singleton, issuer, audience, access_token_ttl, refresh_token_ttl)
select singleton, issuer, audience, access_token_ttl, refresh_token_ttl from baas._settings_0_2_0;
alter extension pgbaas drop table baas._settings_0_2_0;
drop table baas._settings_0_2_0;
comment on table baas.settings is 'pgbaas settings: token issuer, audience and lifetimes, sign-in throttling (one row)';
revoke all on baas.settings from public;
select pg_catalog.pg_extension_config_dump('baas.settings', '');
create trigger settings_restore before insert on baas.settings
    for each row execute function baas._settings_restore();

comment on table baas.audit_log is
    'Security events: sign-ups, logins and failures, logouts, password changes, deletions, refresh reuse, sign-in throttles, role and ACL changes, collections and indexes created and dropped, key rotations';

create table baas._login_throttles (
    email text not null,
    source text not null,
    failures integer not null,
    last_failure_at timestamptz not null,
    wait_until timestamptz,
    primary key (email, source)
);
create index login_throttles_last_failure_idx on baas._login_throttles (last_failure_at);
revoke all on baas._login_throttles from public;
alter table baas._login_throttles enable row level security;

create table baas._trusted_sources (
    user_id uuid not null references baas.users (id) on delete cascade,
    source text not null,
    last_success_at timestamptz not null,
    primary key (user_id, source)
);
revoke all on baas._trusted_sources from public;
alter table baas._trusted_sources enable row level security;

-- The address part of a source: IPv4 whole, IPv6 by its /64 (what one customer's
-- network is given, so rotating addresses within it gains nothing; the proxy's limits
-- count the same way), 'sql' without one. An IPv4 client seen on a dual-stack socket
-- (::ffff:a.b.c.d) is its IPv4 address, not one /64 shared by every IPv4 client.
create function baas._login_address() returns text
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select coalesce('ip:' || case when family(x.ip) = 6 and not x.ip <<= '::ffff:0.0.0.0/96'::inet
                                  then network(set_masklen(x.ip, 64))::text
                                  else replace(host(x.ip), '::ffff:', '') end, 'sql')
      from (select baas._client_ip() as ip) x
$$;

-- The wait after the n-th failure when free failures are allowed: none before, then
-- login_delay, doubling with each further failure up to login_delay_max.
create function baas._login_delay(n integer, free integer, s baas.settings) returns interval
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
    select case when n < free then null
                else least(s.login_delay * power(2, least(n - free, 30)), s.login_delay_max) end
$$;

-- Where a sign-in attempt stands: the source it counts under, whether that source is
-- trusted for the account, and the seconds it must still wait (null: it may try now).
-- p_session: a live session of the account the caller holds (refresh token or token).
create function baas._login_gate(p_email text, p_user uuid, p_device text, p_session uuid,
                                 out source text, out trusted boolean, out retry_after integer)
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    s baas.settings;
    v_addr text := baas._login_address();
    v_until timestamptz;
begin
    select * into strict s from baas.settings;
    source := v_addr;
    trusted := false;
    if p_user is not null then
        if p_session is not null then
            source := 'session:' || p_session;
            trusted := true;
        elsif p_device is not null and exists (
                select from baas._trusted_sources t
                 where t.user_id = p_user and t.source = 'device:' || p_device
                   and t.last_success_at > clock_timestamp() - s.login_trust_ttl) then
            source := 'device:' || p_device;
            trusted := true;
        else
            trusted := exists (
                select from baas._trusted_sources t
                 where t.user_id = p_user and t.source = v_addr
                   and t.last_success_at > clock_timestamp() - s.login_trust_ttl);
        end if;
    end if;
    select max(t.wait_until) into v_until from baas._login_throttles t
     where t.email = p_email and (t.source = _login_gate.source or (t.source = '*' and not trusted))
       and t.wait_until > clock_timestamp();
    retry_after := ceil(extract(epoch from v_until - clock_timestamp()))::integer;
end
$$;

-- After a failed attempt: count it for its source (and, from an untrusted source, for
-- the account), and make the source wait once it has used its free failures.
create function baas._login_failed(p_email text, p_user uuid, p_source text, p_trusted boolean) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    s baas.settings;
    k text;
    n integer;
    v_wait interval;
begin
    select * into strict s from baas.settings;
    foreach k in array case when p_trusted then array[p_source] else array[p_source, '*'] end loop
        insert into baas._login_throttles as t (email, source, failures, last_failure_at)
        values (p_email, k, 1, clock_timestamp())
        on conflict (email, source) do update set
            failures = case when t.last_failure_at > clock_timestamp() - s.login_failure_window
                            then t.failures + 1 else 1 end,
            last_failure_at = clock_timestamp()
        returning t.failures into n;
        v_wait := baas._login_delay(n, case when k = '*' then s.login_account_failures
                                            else s.login_source_failures end, s);
        if v_wait is not null then
            update baas._login_throttles t set wait_until = clock_timestamp() + v_wait
             where t.email = p_email and t.source = k;
            perform baas._audit('login.throttle', p_user, details => jsonb_build_object(
                'email', p_email, 'source', k, 'failures', n, 'wait', extract(epoch from v_wait)));
        end if;
    end loop;
    -- Forget what no longer counts, a few rows per failure: the table then holds only
    -- live counts, whatever emails an attacker makes up.
    delete from baas._login_throttles t
     where t.ctid = any (array(
         select x.ctid from baas._login_throttles x
          where x.last_failure_at < clock_timestamp() - s.login_failure_window
            and (x.wait_until is null or x.wait_until < clock_timestamp())
          limit 20));
end
$$;

-- After a successful sign-in: its source starts afresh, and its address and device
-- become trusted for the account.
create function baas._login_succeeded(p_email text, p_user uuid, p_source text, p_device text) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    s baas.settings;
    v_addr text := baas._login_address();
begin
    select * into strict s from baas.settings;
    delete from baas._login_throttles t where t.email = p_email and t.source = p_source;
    delete from baas._trusted_sources t
     where t.user_id = p_user and t.last_success_at < clock_timestamp() - s.login_trust_ttl;
    -- 'sql' is every caller without an address: never trusted as a whole.
    insert into baas._trusted_sources as t (user_id, source, last_success_at)
    select p_user, x.source, clock_timestamp()
      from unnest(array[nullif(v_addr, 'sql'), 'device:' || p_device]) as x(source)
     where x.source is not null
    on conflict (user_id, source) do update set last_success_at = excluded.last_success_at;
end
$$;

-- DBAs: the sign-in throttles that still count, newest first. retry_after: seconds the
-- source must still wait (null: none). Lift them with baas.unlock_account(user_id).
create view baas.login_throttles as
    select t.email, t.source, t.failures, t.last_failure_at, t.wait_until,
           case when t.wait_until > clock_timestamp()
                then ceil(extract(epoch from t.wait_until - clock_timestamp()))::integer end as retry_after
      from baas._login_throttles t, baas.settings s
     where t.last_failure_at > clock_timestamp() - s.login_failure_window
        or t.wait_until > clock_timestamp()
     order by t.last_failure_at desc;
comment on view baas.login_throttles is
    'DBAs: failed sign-ins per typed email and source, and how long each source must still wait';
revoke all on baas.login_throttles from public;

-- DBAs: lift every throttle of an account at once (its sources and the account-wide one).
create or replace function baas.unlock_account(user_id uuid) returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    v_email text := (select u.email from baas.users u where u.id = unlock_account.user_id);
    n integer;
begin
    if v_email is null then
        perform baas._raise('P0002', 'user_not_found', format('no account with id %s', unlock_account.user_id));
    end if;
    with gone as (
        delete from baas._login_throttles t where t.email = v_email returning t.wait_until)
    select count(*) filter (where wait_until > clock_timestamp()) into n from gone;
    if n > 0 then
        perform baas._audit('account.unlocked', unlock_account.user_id, details => jsonb_build_object('throttles', n));
        return true;
    end if;
    return false;
end
$$;
comment on function baas.unlock_account(uuid) is
    'DBAs: lift every sign-in throttle of an account now (and forget its failures); true if one was making a source wait, false if not; P0002 user_not_found for an unknown id';

select pg_catalog.pg_extension_config_dump('baas._login_throttles', '');
select pg_catalog.pg_extension_config_dump('baas._trusted_sources', '');

drop function baas.login(text, text);
create function baas.login(email text, password text, device_id text default null,
                           refresh_token text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    u baas.users;
    v_key text;
    v_session uuid;
    g record;
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
    v_key := baas._email_for_audit(login.email);
    select * into u from baas.users where email = baas._email_key(login.email);
    -- One attempt per typed email at a time, known or not, so that concurrent guesses
    -- see each other's failures (a burst cannot slip past a throttle).
    perform pg_advisory_xact_lock(hashtextextended('baas.login:' || v_key, 0));
    if u.id is not null and login.refresh_token is not null and length(login.refresh_token) <= 256 then
        select s.id into v_session
          from baas.refresh_tokens t join baas.sessions s on s.id = t.session_id
         where t.token_hash = baas._hash_token(login.refresh_token) and t.used_at is null
           and s.user_id = u.id and s.revoked_at is null and s.expires_at > now();
    end if;
    select * into g from baas._login_gate(v_key, u.id, login.device_id, v_session);
    if g.retry_after is not null then
        -- Answered before any password work, for known and unknown emails alike: a
        -- waiting source learns nothing about the password or the account.
        return jsonb_build_object('error', jsonb_build_object(
            'code', 'too_many_attempts',
            'message', format('too many failed sign-ins; retry in %s s', g.retry_after),
            'retry_after', g.retry_after));
    end if;
    -- An unknown email verifies against a dummy hash: same work, same answer, so it
    -- cannot be told from a wrong password.
    if not baas._verify_password(login.password, u.password_hash) then
        -- Reported as a result, not raised: the failure must commit to count.
        perform baas._audit('login.failure', u.id,
            details => jsonb_build_object('email', v_key, 'source', g.source));
        perform baas._login_failed(v_key, u.id, g.source, g.trusted);
        return jsonb_build_object('error', jsonb_build_object(
            'code', 'invalid_credentials', 'message', 'invalid email or password'));
    end if;
    perform baas._login_succeeded(v_key, u.id, g.source, login.device_id);
    perform baas._audit('login', u.id);
    if baas._password_needs_rehash(u.password_hash) then
        update baas.users set password_hash = baas._hash_password(login.password)
         where id = u.id;
    end if;
    return baas._new_session(u);
end
$$;
comment on function baas.login(text, text, text, text) is
    'Sign in with email and password (optionally a device id and a refresh token that exempt a known client from others'' failures); {"error": {"code": "invalid_credentials"}} for unknown email and wrong password alike, {"error": {"code": "too_many_attempts", "retry_after": s}} while this source must wait';

create or replace function baas.update_user(data jsonb default null, password text default null,
                                 current_password text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    u baas.users;
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
        update baas.sessions set revoked_at = now(), revoked_reason = 'password_change'
         where user_id = u.id and revoked_at is null;
        perform baas._audit('password.change', u.id);
        return baas._new_session(u);
    end if;
    return jsonb_build_object('user', baas._user_json(u));
end
$$;
comment on function baas.update_user(jsonb, text, text) is
    'Merge-patch the signed-in user''s data and/or change the password (which ends every session and returns new tokens)';

revoke execute on function
    baas._login_address(), baas._login_delay(integer, integer, baas.settings),
    baas._login_gate(text, uuid, text, uuid), baas._login_failed(text, uuid, text, boolean),
    baas._login_succeeded(text, uuid, text, text), baas.login(text, text, text, text)
  from public;
grant execute on function baas.login(text, text, text, text) to baas_anon, baas_user, baas_service;
