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
-- A DBA's own views, functions or columns that depend on baas.settings would make the
-- drop below fail with a bare "cannot drop table" after half the update had run: they
-- are named up front instead, to be dropped before the update and made again after it.
-- Grants on baas.settings beyond the extension's own (none) do not carry over to the
-- new table: a warning prints the GRANT statements that restore them (re-issued after
-- the update they are the DBA's, so pg_dump keeps them).
do $$
declare
    v_deps text;
    v_grants text;
begin
    select string_agg(distinct coalesce(
               (select pg_catalog.pg_describe_object('pg_class'::regclass, r.ev_class, 0)
                  from pg_catalog.pg_rewrite r
                 where d.classid = 'pg_rewrite'::regclass and r.oid = d.objid),
               pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid)), ', ')
      into v_deps
      from pg_catalog.pg_depend d, pg_catalog.pg_type t
     where t.oid = 'baas.settings'::regtype and d.deptype = 'n'
       and ((d.refclassid = 'pg_class'::regclass and d.refobjid = 'baas.settings'::regclass)
            or (d.refclassid = 'pg_type'::regclass and d.refobjid in (t.oid, t.typarray)))
       -- The table's own parts go with it.
       and not (d.classid = 'pg_class'::regclass and d.objid = 'baas.settings'::regclass)
       and not exists (select from pg_catalog.pg_constraint c
                        where d.classid = 'pg_constraint'::regclass and c.oid = d.objid
                          and c.conrelid = 'baas.settings'::regclass)
       and not exists (select from pg_catalog.pg_trigger g
                        where d.classid = 'pg_trigger'::regclass and g.oid = d.objid
                          and g.tgrelid = 'baas.settings'::regclass)
       and not exists (select from pg_catalog.pg_attrdef a
                        where d.classid = 'pg_attrdef'::regclass and a.oid = d.objid
                          and a.adrelid = 'baas.settings'::regclass)
       and not exists (select from pg_catalog.pg_policy y
                        where d.classid = 'pg_policy'::regclass and y.oid = d.objid
                          and y.polrelid = 'baas.settings'::regclass);
    if v_deps is not null then
        raise exception using errcode = '2BP01',
            message = format('pgbaas 0.3.0 makes table baas.settings anew, and these depend on it: %s', v_deps),
            hint = 'Drop them, run ALTER EXTENSION pgbaas UPDATE, then create them again (see docs/operations.md).';
    end if;
    select string_agg(format('grant %s on baas.settings to %s%s;', a.privilege_type,
                             case when a.grantee = 0 then 'public' else quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) end,
                             case when a.is_grantable then ' with grant option' else '' end), ' ')
      into v_grants
      from pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
     where c.oid = 'baas.settings'::regclass and a.grantee <> c.relowner;
    if v_grants is not null then
        raise warning using
            message = 'pgbaas 0.3.0 makes table baas.settings anew: its grants do not carry over',
            hint = 'After the update, re-issue: ' || v_grants;
    end if;
end
$$;
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
    -- An unknown email (p_user null) runs the same lookups, under an id no account
    -- has, so that the answer takes as long as for a known one (a constant null would
    -- let the planner skip them).
    v_user uuid := coalesce(p_user, '00000000-0000-0000-0000-000000000000');
    v_pair boolean;
begin
    select * into strict s from baas.settings;
    source := v_addr;
    trusted := false;
    v_pair := exists (
        select from baas._trusted_sources t
         where t.user_id = v_user and t.source = 'device:' || coalesce(p_device, '') || '@' || v_addr
           and t.last_success_at > clock_timestamp() - s.login_trust_ttl);
    trusted := exists (
        select from baas._trusted_sources t
         where t.user_id = v_user and t.source = v_addr
           and t.last_success_at > clock_timestamp() - s.login_trust_ttl);
    if p_user is null then
        trusted := false;
    elsif p_session is not null then
        source := 'session:' || p_session;
        trusted := true;
    elsif p_device is not null and v_pair then
        source := 'device:' || p_device || '@' || v_addr;
        trusted := true;
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
          -- Rows another failed login holds are left to a later cleanup: waiting on
          -- them let two concurrent failures lock each other's rows in opposite
          -- orders (40P01), and the loser's failure went uncounted.
          limit 20 for update skip locked));
end
$$;

-- After a successful sign-in: its source starts afresh, and its address and its
-- (device, address) pair become trusted for the account. An account keeps its 20
-- newest trusted sources: each new device id adds one, and ids are the app's to pick.
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
      from unnest(array[nullif(v_addr, 'sql'), 'device:' || p_device || '@' || v_addr]) as x(source)
     where x.source is not null
    on conflict (user_id, source) do update set last_success_at = excluded.last_success_at;
    delete from baas._trusted_sources t
     where t.user_id = p_user
       and t.source not in (select x.source from baas._trusted_sources x where x.user_id = p_user
                             order by x.last_success_at desc, x.source limit 20);
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
-- Sign in. device_id: an identifier the app keeps for this install (a hint, never a
-- credential: it only lets a device that signed in before skip waits other sources
-- caused); refresh_token: a live refresh token of the account, which does the same
-- without being spent. Failures make their source wait (sql/audit.sql, sign-in
-- throttling): {"error": {"code": "too_many_attempts", "retry_after": seconds}}.
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
    v_owner uuid;
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
    -- Looked up whether the email exists or not (and then matched to the account), so
    -- that an unknown email is not answered sooner than a known one.
    if login.refresh_token is not null and length(login.refresh_token) <= 256 then
        select s.id, s.user_id into v_session, v_owner
          from baas.refresh_tokens t join baas.sessions s on s.id = t.session_id
         where t.token_hash = baas._hash_token(login.refresh_token) and t.used_at is null
           and s.revoked_at is null and s.expires_at > now();
        if v_owner is distinct from u.id then
            v_session := null;
        end if;
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

-- ---------------------------------------------------------------------------------
-- Index builds that do not stop the world (issue 13): builds run in a background
-- worker with CREATE INDEX CONCURRENTLY; baas.indexes records their state. Existing
-- 0.2.0 indexes were built in their request, so they are 'ready' (the column default).
-- (The default is set after the update: ADD COLUMN … DEFAULT would keep 'ready' as the
-- column's "missing value", which a fresh install does not have.)
alter table baas.indexes
    add column state text check (state in ('building', 'ready', 'failed')),
    add column error text,
    add column started_at timestamptz,
    add column finished_at timestamptz,
    add column worker_pid integer;
update baas.indexes set state = 'ready';
alter table baas.indexes alter column state set default 'ready', alter column state set not null;

-- sql/documents.sql (pgrx: api::index_build::index_build_launch)
CREATE  FUNCTION baas."_index_build_launch"() RETURNS bool /* bool */
VOLATILE STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'index_build_launch_wrapper';

drop function baas.create_index(text, text, text);

create or replace function baas.drop_collection(name text) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    c baas.collections := baas._collection_by_name(drop_collection.name);
    i baas.indexes;
begin
    -- Before the collection, so that their audit entries can still name it.
    for i in delete from baas.indexes x where x.collection_id = c.id returning x.* loop
        perform baas._index_forget(i);
    end loop;
    delete from baas.collections where id = c.id;
end
$$;
comment on function baas.drop_collection(text) is 'Drop a collection and all its documents';

-- DBAs: rebuild every btree index's entries from the documents (after a restore).
create or replace function baas.rebuild_index_entries() returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    i record;
    n integer := 0;
begin
    for i in select x.id, x.collection_id, x.path from baas.indexes x where x.kind = 'btree' and x.state = 'ready' loop
        delete from baas._index_entries_ready where index_id = i.id;
        delete from baas.index_entries where index_id = i.id;
        execute format('insert into baas.index_entries (index_id, doc_id, value, owner, acl_read)
                        select %s, d.id, %s, d.owner, d.acl_read from baas.documents d where d.collection_id = %s',
                       i.id, baas._index_expression(i.path), i.collection_id);
        insert into baas._index_entries_ready values (i.id);
        n := n + 1;
    end loop;
    analyze baas.index_entries;
    return n;
end
$$;
comment on function baas.rebuild_index_entries() is
    'DBAs: rebuild the counting entries of every btree index (after pg_restore); returns how many indexes';

create or replace function baas._index_entries_sync() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    -- Most collections have no btree index: one probe of baas.indexes, and done.
    if not exists (select from baas.indexes i
                    where i.collection_id = case when tg_op = 'DELETE' then old.collection_id else new.collection_id end
                      and i.kind = 'btree' and i.state <> 'failed') then
        return null;
    end if;
    if tg_op = 'DELETE' then
        delete from baas.index_entries e using baas.indexes i
         where i.collection_id = old.collection_id and i.kind = 'btree' and e.index_id = i.id and e.doc_id = old.id;
        return null;
    end if;
    if tg_op = 'UPDATE' and new.data is not distinct from old.data and new.owner is not distinct from old.owner
       and new.acl_read is not distinct from old.acl_read then
        return null;
    end if;
    insert into baas.index_entries as e (index_id, doc_id, value, owner, acl_read)
    select i.id, new.id, baas._jpath(new.data, i.path), new.owner, new.acl_read
      from baas.indexes i where i.collection_id = new.collection_id and i.kind = 'btree' and i.state <> 'failed'
    on conflict (index_id, doc_id) do update
       set value = excluded.value, owner = excluded.owner, acl_read = excluded.acl_read;
    return null;
end
$$;

-- An index's row as the API shows it. A build whose worker is gone (pg_terminate_backend,
-- a crash, a restart) shows as failed at once; the next worker records it so and drops
-- the unfinished index (baas._index_build_next).
create function baas._index_json(i baas.indexes) returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select jsonb_build_object('collection', (select c.name from baas.collections c where c.id = i.collection_id),
                              'path', i.path, 'kind', i.kind, 'name', i.name,
                              'state', case when lost then 'failed' else i.state end,
                              'error', case when lost then format('the build stopped before it finished: its worker (pid %s) ended', i.worker_pid)
                                            else i.error end,
                              'created_at', i.created_at, 'started_at', i.started_at, 'finished_at', i.finished_at)
      from (select i.state = 'building' and i.worker_pid is not null
                   and not exists (select from pg_stat_activity a where a.pid = i.worker_pid) as lost) l
$$;

-- The CREATE INDEX statement of an index (null once it is no longer being built, for
-- the worker). v_expr is built by the compiler from a validated path with quoted keys;
-- the collection id is ours. Nothing else is spliced.
create function baas._index_ddl(index_id integer, concurrent boolean) returns text
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    i baas.indexes;
    v_expr text;
begin
    select * into i from baas.indexes x where x.id = _index_ddl.index_id;
    if not found or (concurrent and i.state <> 'building') then
        return null;
    end if;
    v_expr := baas._index_expression(i.path);
    if i.kind = 'btree' then
        -- (field, created_at, id): an equality filter comes out already in the default
        -- listing order, so "cat = 42, first 20" stops after 20 index entries instead
        -- of walking the listing index (the planner ignores partial-index statistics and
        -- would otherwise guess; measured 27 ms -> see docs/query.md).
        return format('create index %s %I on baas.documents (%s baas.jsonb_lp_ops, created_at, id) where collection_id = %s',
                      case when concurrent then 'concurrently' else '' end, i.name, v_expr, i.collection_id);
    end if;
    return format('create index %s %I on baas.documents using gin (%s baas.jsonb_path_lp_ops) where collection_id = %s',
                  case when concurrent then 'concurrently' else '' end, i.name, v_expr, i.collection_id);
end
$$;

-- Planner statistics for an indexed field, then the index is ready: its counting
-- entries complete (btree). Run by create_index (synchronous) and the build worker.
create function baas._index_build_finish(index_id integer) returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    i baas.indexes;
    v_expr text;
begin
    -- No row lock yet: writes to the collection check their entries' foreign key with
    -- FOR KEY SHARE on this row, and a FOR UPDATE held through the ANALYZE below made
    -- them wait seconds (measured: 4.5 s in tests/tests/index_builds.rs).
    select * into i from baas.indexes x where x.id = _index_build_finish.index_id and x.state = 'building';
    if not found then
        return false; -- dropped or failed meanwhile
    end if;
    v_expr := baas._index_expression(i.path);
    -- The planner ignores partial indexes' statistics; expression statistics give it
    -- the field's distribution, so "cat = 42" is estimated at its real handful of rows.
    if not exists (select from pg_statistic_ext x where x.stxnamespace = 'baas'::regnamespace
                   and x.stxname = 'documents_expr_' || substr(md5(i.path), 1, 12)) then
        -- With the type too: range filters check jsonb_typeof(field), and without
        -- statistics its default selectivity (0.5%) made a 100,000-row range look like
        -- one row, so the planner sorted all of them instead of walking the index.
        execute format('create statistics baas.%I on (%s), (jsonb_typeof(%s)) from baas.documents',
                       'documents_expr_' || substr(md5(i.path), 1, 12), v_expr, v_expr);
        analyze baas.documents;
    end if;
    update baas.indexes x set state = 'ready', error = null, finished_at = now(), worker_pid = null
     where x.id = i.id and x.state = 'building';
    if not found then
        return false;
    end if;
    if i.kind = 'btree' then
        insert into baas._index_entries_ready values (i.id) on conflict do nothing;
        analyze baas.index_entries;
    end if;
    return true;
end
$$;

-- The build worker: record a failed build and drop its counting entries (the worker
-- then drops the unfinished index).
create function baas._index_build_failed(index_id integer, reason text) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    update baas.indexes x set state = 'failed', error = reason, finished_at = now(), worker_pid = null
     where x.id = _index_build_failed.index_id and x.state = 'building';
    delete from baas._index_entries_ready r where r.index_id = _index_build_failed.index_id;
    delete from baas.index_entries e where e.index_id = _index_build_failed.index_id;
end
$$;

-- The build worker, one batch of a btree index's counting entries: the documents after
-- `after` (by id), locked FOR KEY SHARE so that a delete racing the batch waits and its
-- trigger then removes the entry (no orphan); entries the trigger already wrote for new
-- writes are fresher and kept (on conflict do nothing). Returns the last id done, or
-- null when there are no more (or the build was dropped).
create function baas._index_build_backfill(index_id integer, after uuid, batch integer) returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    i baas.indexes;
    v_last uuid;
begin
    select * into i from baas.indexes x where x.id = _index_build_backfill.index_id and x.state = 'building';
    if not found or i.kind <> 'btree' then
        return null;
    end if;
    execute format('with d as (select d.id, %s as value, d.owner, d.acl_read from baas.documents d
                                where d.collection_id = %s and d.id > coalesce($1, ''00000000-0000-0000-0000-000000000000''::uuid)
                                order by d.id limit $2 for key share),
                         ins as (insert into baas.index_entries (index_id, doc_id, value, owner, acl_read)
                                 select %s, d.id, d.value, d.owner, d.acl_read from d on conflict do nothing)
                    select d.id from d order by d.id desc limit 1',
                   baas._index_expression(i.path), i.collection_id, i.id)
       into v_last using after, batch;
    return v_last;
end
$$;

-- The build worker's next job, claimed for it, or null. Only the worker holding the
-- build lock calls it, so a build still marked with another pid lost its worker
-- (pg_terminate_backend, a crash, a restart): it is recorded as failed. Unfinished
-- indexes (invalid, or left by a failed or dropped build) come first as {"drop": name}.
create function baas._index_build_next() returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    i baas.indexes;
    v_drop text;
begin
    for i in update baas.indexes x
                set state = 'failed', finished_at = now(), worker_pid = null,
                    error = format('the build stopped before it finished: its worker (pid %s) ended', x.worker_pid)
              where x.state = 'building' and x.worker_pid is not null and x.worker_pid <> pg_backend_pid()
          returning x.* loop
        delete from baas._index_entries_ready r where r.index_id = i.id;
        delete from baas.index_entries e where e.index_id = i.id;
    end loop;
    select c.relname into v_drop
      from pg_index ix join pg_class c on c.oid = ix.indexrelid
     where ix.indrelid = 'baas.documents'::regclass
       and c.relname ~ '^documents_c[0-9]+_(btree|gin)_[0-9a-f]{12}$'
       and (not ix.indisvalid
            or not exists (select from baas.indexes x where x.name = c.relname and x.state <> 'failed'))
     limit 1;
    if v_drop is not null then
        return jsonb_build_object('drop', v_drop);
    end if;
    select * into i from baas.indexes x where x.state = 'building' and x.worker_pid is null
     order by x.id limit 1 for no key update skip locked;
    if not found then
        return null;
    end if;
    update baas.indexes x set worker_pid = pg_backend_pid(), started_at = now() where x.id = i.id;
    return jsonb_build_object('id', i.id, 'name', i.name);
end
$$;

-- Whether a build waits for a worker.
create function baas._index_build_waiting() returns boolean
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$ select exists (select from baas.indexes x where x.state = 'building' and x.worker_pid is null) $$;

create function baas.create_index(collection text, path text, kind text default 'btree',
                                  concurrently boolean default true) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    v_expr text := baas._index_expression(path); -- checks the path (22023 invalid_query)
    v_name text := format('documents_c%s_%s_%s', c.id, kind, substr(md5(path), 1, 12));
    i baas.indexes;
begin
    if kind is null or kind not in ('btree', 'gin') then
        raise exception using errcode = '22023', detail = 'invalid_request', message = 'kind must be btree or gin';
    end if;
    if exists (select from baas.indexes x where x.name = v_name and x.state <> 'failed') then
        raise exception using errcode = '23505', detail = 'index_exists',
            message = format('%s already has a %s index on %s', c.name, kind, path);
    end if;
    -- A failed build is replaced by the new one (its reason goes with it).
    delete from baas.indexes x where x.name = v_name;
    if coalesce(create_index.concurrently, true) then
        -- Recorded as building: the trigger keeps the counting entries of new writes from
        -- now on, and the worker, started after this commits, does the rest (no lock on
        -- baas.documents here, no statement timeout on the build).
        insert into baas.indexes (collection_id, path, kind, name, state)
        values (c.id, create_index.path, kind, v_name, 'building') returning * into i;
        perform baas._index_build_launch();
        return baas._index_json(i);
    end if;
    -- In this transaction (migrations, tests): a plain CREATE INDEX, which holds writes
    -- to every collection until this transaction ends.
    execute format('drop index if exists baas.%I', v_name); -- a failed build's leftover
    insert into baas.indexes (collection_id, path, kind, name, state, started_at)
    values (c.id, create_index.path, kind, v_name, 'building', now()) returning * into i;
    execute baas._index_ddl(i.id, false);
    if kind = 'btree' then
        execute format('insert into baas.index_entries (index_id, doc_id, value, owner, acl_read)
                        select %s, d.id, %s, d.owner, d.acl_read from baas.documents d where d.collection_id = %s',
                       i.id, v_expr, c.id);
    end if;
    perform baas._index_build_finish(i.id);
    select * into i from baas.indexes x where x.id = i.id;
    return baas._index_json(i);
end
$$;
comment on function baas.create_index(text, text, text, boolean) is
    'Index a data field of one collection (btree: equality, ranges, order; gin: $contains). By default built in the background (state building, then ready or failed: see list_indexes/get_index); concurrently => false builds it in this transaction';

create function baas.get_index(collection text, path text, kind text default 'btree') returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    i baas.indexes;
begin
    select * into i from baas.indexes x where x.collection_id = c.id and x.path = get_index.path and x.kind = get_index.kind;
    if not found then
        raise exception using errcode = 'P0002', detail = 'index_not_found',
            message = format('%s has no %s index on %s', c.name, kind, path);
    end if;
    return baas._index_json(i);
end
$$;
comment on function baas.get_index(text, text, text) is 'An index and the state of its build (building, ready, failed with error)';

create or replace function baas.drop_index(collection text, path text, kind text default 'btree') returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    i baas.indexes;
begin
    delete from baas.indexes x where x.collection_id = c.id and x.path = drop_index.path and x.kind = drop_index.kind
    returning * into i;
    if not found then
        raise exception using errcode = 'P0002', detail = 'index_not_found',
            message = format('%s has no %s index on %s', c.name, kind, path);
    end if;
    perform baas._index_forget(i);
end
$$;

-- The index of a deleted baas.indexes row. A ready one is dropped here (a plain DROP
-- INDEX: a brief exclusive lock). A build in progress is cancelled, and the worker drops
-- its unfinished index concurrently: a plain DROP would wait for the build while every
-- write waited behind it.
create function baas._index_forget(i baas.indexes) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if i.state = 'ready' then
        execute format('drop index if exists baas.%I', i.name);
        return;
    end if;
    if i.worker_pid is not null then
        perform pg_cancel_backend(i.worker_pid);
    end if;
    perform baas._index_build_launch();
end
$$;

create or replace function baas.list_indexes(collection text) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
begin
    return (select coalesce(jsonb_agg(baas._index_json(i) order by i.path, i.kind), '[]')
              from baas.indexes i where i.collection_id = c.id);
end
$$;

-- DBAs: start the build worker for builds still waiting (none was free when they were
-- queued, or the server restarted) and clean up interrupted ones; returns how many wait.
create function baas.run_index_builds() returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    perform baas._index_build_launch();
    return (select count(*) from baas.indexes x where x.state = 'building')::integer;
end
$$;
comment on function baas.run_index_builds() is
    'DBAs: start the index build worker for waiting builds, record interrupted ones as failed; returns how many are building';

-- sql/dump.sql
create or replace function baas.restore_indexes() returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    i record;
    n integer := 0;
begin
    for i in select x.id, c.name as collection, x.path, x.kind
               from baas.indexes x join baas.collections c on c.id = x.collection_id
              where x.state <> 'failed'
                and not exists (select from pg_catalog.pg_class r
                                 where r.relnamespace = 'baas'::regnamespace and r.relname = x.name)
              order by x.id loop
        delete from baas.indexes where id = i.id;
        -- In this transaction: run once after a restore, before the service takes writes.
        perform baas.create_index(i.collection, i.path, i.kind, concurrently => false);
        n := n + 1;
    end loop;
    perform baas.rebuild_index_entries();
    return n;
end
$$;
comment on function baas.restore_indexes() is
    'DBAs: after pg_restore, make the collection indexes pg_dump leaves out and rebuild their counting entries; returns how many it made';

-- sql/lints.sql: the new public functions are known doors
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
           '_collection_by_name', '_check_collection_name', '_document_json', '_parse_document_id',
           '_document_not_found', '_write_document', '_explain_write_miss', '_version_conflict',
           '_validate_document', '_normalize_acl', '_check_new_principals', '_acl_change', '_change_acl',
           '_owned_document', '_set_document_owner', '_may_create', '_may_manage', '_is_privileged',
           '_find_page', '_find_compiled', '_count_compiled', '_btree_index_id', '_jfield',
           '_jsonb_lp_eq', '_jsonb_lp_lt', '_jsonb_lp_le', '_jsonb_lp_gt', '_jsonb_lp_ge',
           '_jsonb_lp_cmp', '_jsonb_lp_contains'])
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
           -- DBA tools
           'as_user', 'purge_audit_log', 'security_lints'])
    union all
    -- 4c. The document policies and the index entries' read policy are made from one
    --     rule (sql/permissions.sql): each must still say what documents_read says
    --     (with its own ACL column), for the same roles and command; the service
    --     policies must agree; no other policy may widen either table.
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
    select 'policy_drift', format('policy %I on %s', p.polname, p.polrelid::regclass),
           'the service policy must be `to baas_service using (true)`, as documents_service'
      from pg_policy p
     where p.polname in ('documents_service', 'index_entries_service')
       and p.polrelid in ('baas.documents'::regclass, 'baas.index_entries'::regclass)
       and (p.polroles::oid[] is distinct from array['baas_service'::regrole::oid]
            or pg_get_expr(p.polqual, p.polrelid) is distinct from 'true')
    union all
    select 'policy_drift', format('policy %I on %s', p.polname, p.polrelid::regclass),
           'a policy sql/permissions.sql does not define: it may widen what callers see or do'
      from pg_policy p
     where (p.polrelid = 'baas.documents'::regclass
            and p.polname not in ('documents_service', 'documents_read', 'documents_create',
                                  'documents_update', 'documents_delete'))
        or (p.polrelid = 'baas.index_entries'::regclass
            and p.polname not in ('index_entries_service', 'index_entries_read'))
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
$$;
comment on function baas.security_lints() is
    'Security lints (no rows = clean): unforced RLS on API-readable tables, SECURITY DEFINER without search_path, PUBLIC execute, exposed internal functions, undocumented public functions, policies that drifted from their one rule, policies reading user-editable data';

-- sql/grants.sql
revoke execute on all functions in schema baas from public;
grant execute on function
    baas.create_index(text, text, text, boolean),
    baas.get_index(text, text, text)
  to baas_service;
