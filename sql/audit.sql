-- pgbaas audit trail and sign-in throttling.
--
-- baas.audit_log is written in the same transaction as the change it records, by
-- SECURITY DEFINER code only: API roles cannot read, write, update or delete it. It
-- records who (the signed-in user and the Postgres role), when, from which client
-- address (set by the proxy for each request as baas.client_ip), and what.

create table baas.audit_log (
    id bigint generated always as identity primary key,
    at timestamptz not null default clock_timestamp(),
    action text not null,
    actor uuid,                 -- the signed-in user who acted; null: anonymous, service, DBA
    actor_role text not null,   -- the Postgres role that acted (baas_anon, baas_user, baas_service, a DBA)
    ip inet,                    -- the client's address as the proxy saw it; null from SQL
    user_id uuid,               -- the account the event concerns
    collection text,
    document_id uuid,
    details jsonb not null default '{}',
    request_id text             -- the proxy's X-Request-Id of the request that wrote it; null from SQL
);
comment on table baas.audit_log is
    'Security events: sign-ups, logins and failures, logouts, password changes, deletions, refresh reuse, sign-in throttles, role and ACL changes, collections and indexes created and dropped, key rotations';
create index audit_log_user_idx on baas.audit_log (user_id, action, at) where user_id is not null;
create index audit_log_document_idx on baas.audit_log (document_id, at) where document_id is not null;
create index audit_log_ip_idx on baas.audit_log (ip, at) where ip is not null;
revoke all on baas.audit_log from public;
alter table baas.audit_log enable row level security;
select pg_catalog.pg_extension_config_dump('baas.audit_log', '');

-- Append-only: no UPDATE ever; DELETE only through baas.purge_audit_log().
create function baas._audit_log_append_only() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if tg_op = 'DELETE' and pg_catalog.current_setting('baas.audit_purge', true) = 'on' then
        return old;
    end if;
    raise exception using errcode = '42501', detail = 'forbidden',
        message = 'baas.audit_log is append-only (baas.purge_audit_log removes old entries)';
end
$$;
create trigger audit_log_append_only before update or delete on baas.audit_log
    for each row execute function baas._audit_log_append_only();
create trigger audit_log_no_truncate before truncate on baas.audit_log
    for each statement execute function baas._audit_log_append_only();

-- The client address the proxy set for this request, or null (never an error).
create function baas._client_ip() returns inet
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v text := nullif(pg_catalog.current_setting('baas.client_ip', true), '');
begin
    if v is null then
        return null;
    end if;
    return v::inet;
exception when others then
    return null;
end
$$;

create function baas._audit(action text, user_id uuid default null, collection text default null,
                            document_id uuid default null, details jsonb default '{}') returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    insert into baas.audit_log (action, actor, actor_role, ip, user_id, collection, document_id, details, request_id)
    values (_audit.action, baas.uid(),
            -- Inside SECURITY DEFINER, current_user is the owner; the caller's role is
            -- the one SET (by baas.authenticate) or the login role.
            coalesce(nullif(pg_catalog.current_setting('role'), 'none'), session_user::text),
            baas._client_ip(), _audit.user_id, _audit.collection, _audit.document_id,
            coalesce(_audit.details, '{}'),
            -- The proxy's request id (db::AUTHENTICATE, issue 19): joins the entry to
            -- the proxy's log line.
            nullif(pg_catalog.current_setting('baas.request_id', true), ''));
end
$$;

create function baas.purge_audit_log(older_than interval) returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    n bigint;
begin
    if older_than is null or older_than < interval '1 day' then
        perform baas._raise('22023', 'invalid_request', 'older_than must be at least 1 day');
    end if;
    perform pg_catalog.set_config('baas.audit_purge', 'on', true);
    delete from baas.audit_log where at < now() - older_than;
    get diagnostics n = row_count;
    perform pg_catalog.set_config('baas.audit_purge', '', true);
    perform baas._audit('audit.purge', details => jsonb_build_object('older_than', older_than::text, 'deleted', n));
    return n;
end
$$;
comment on function baas.purge_audit_log(interval) is 'DBAs: delete audit entries older than the interval (at least 1 day); the purge itself is recorded';

-- What a failed login records of the address typed: the address when it looks like
-- one, else only its hash (people type passwords into the email field).
create function baas._email_for_audit(email text) returns text
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
    -- The address as sign-up and sign-in normalise it (baas._email_key), else a hash.
    select coalesce(baas._email_key(email),
                    'sha256:' || encode(sha256(convert_to(coalesce(email, ''), 'UTF8')), 'hex'))
$$;

------------------------------------------------------------------------ sign-in throttling
-- Failed sign-ins make the source that failed wait, with growing delays, instead of
-- locking the account (a lockout lets anyone keep any owner out; docs/security.md).
-- Counted per typed email (baas._email_for_audit, so an unknown email counts exactly
-- like a known one) and per source:
--   'ip:<address>'     the client address the proxy saw (IPv6 by /64, like its limits),
--                      or 'sql' for a caller without one;
--   'device:<id>@<address>'  a device id the app keeps, at the address it signed in to
--                      the account from: the pair, not the id alone, because an id
--                      travels in every request and anyone who learns it could
--                      otherwise make the owner's device wait, and skip the
--                      account-wide count, from anywhere. An unknown pair counts under
--                      its address (so making up ids gains nothing) and account-wide;
--   'session:<id>'     a caller holding a live refresh token (login) or session
--                      (password change) of the account;
--   '*'                the account as a whole: failures from untrusted sources only.
-- A source is trusted for an account when it holds a live refresh token of it, or when
-- its (device, address) pair or address signed in to it within login_trust_ttl.
-- Trusted sources wait only for their own failures, never for the account-wide count.
-- An account keeps at most 20 trusted sources, its newest (baas._login_succeeded).
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
create function baas.unlock_account(user_id uuid) returns boolean
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

------------------------------------------------------------------------ triggers
-- Changes recorded wherever they come from (API functions or a DBA's own SQL).

create function baas._audit_document_access() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_coll text := (select x.name from baas.collections x where x.id = new.collection_id);
begin
    if new.owner is distinct from old.owner then
        perform baas._audit('document.transfer', collection => v_coll, document_id => new.id,
            details => jsonb_build_object('from', old.owner, 'to', new.owner));
    end if;
    if new.acl_read is distinct from old.acl_read or new.acl_update is distinct from old.acl_update
       or new.acl_delete is distinct from old.acl_delete then
        perform baas._audit('document.acl', collection => v_coll, document_id => new.id,
            details => jsonb_build_object(
                'before', jsonb_build_object('read', old.acl_read, 'update', old.acl_update, 'delete', old.acl_delete),
                'after', jsonb_build_object('read', new.acl_read, 'update', new.acl_update, 'delete', new.acl_delete)));
    end if;
    return null;
end
$$;
create trigger documents_audit_access after update of owner, acl_read, acl_update, acl_delete on baas.documents
    for each row
    when (new.owner is distinct from old.owner or new.acl_read is distinct from old.acl_read
          or new.acl_update is distinct from old.acl_update or new.acl_delete is distinct from old.acl_delete)
    execute function baas._audit_document_access();

create function baas._audit_roles() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    -- A restore loads roles, not changes to them (sql/dump.sql).
    if baas._restoring() then
        return null;
    end if;
    if tg_table_name = 'roles' then
        perform baas._audit(case tg_op when 'INSERT' then 'role.create' else 'role.drop' end,
            details => jsonb_build_object('role', coalesce(new.name, old.name)));
    elsif tg_table_name = 'role_members' then
        perform baas._audit(case tg_op when 'INSERT' then 'role.member.add' else 'role.member.remove' end,
            coalesce(new.user_id, old.user_id), details => jsonb_build_object('role', coalesce(new.role, old.role)));
    else
        perform baas._audit(case tg_op when 'INSERT' then 'role.nest.add' else 'role.nest.remove' end,
            details => jsonb_build_object('role', coalesce(new.role, old.role),
                                          'member_role', coalesce(new.member_role, old.member_role)));
    end if;
    return null;
end
$$;
create trigger roles_audit after insert or delete on baas.roles
    for each row execute function baas._audit_roles();
create trigger role_members_audit after insert or delete on baas.role_members
    for each row execute function baas._audit_roles();
create trigger role_roles_audit after insert or delete on baas.role_roles
    for each row execute function baas._audit_roles();

-- Collections and their indexes, created and dropped (by the API functions or by a
-- DBA's own SQL). baas.drop_collection drops the indexes first, so their entries name
-- the collection; a DBA's plain DELETE of a collection records them with its id only.
create function baas._audit_collections() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    -- A restore loads collections and indexes, not changes to them (sql/dump.sql).
    if baas._restoring() then
        return null;
    end if;
    if tg_table_name = 'collections' then
        perform baas._audit(case tg_op when 'INSERT' then 'collection.create' else 'collection.drop' end,
            collection => coalesce(new.name, old.name),
            details => case when tg_op = 'INSERT' then jsonb_build_object(
                'create', new.create_acl,
                'default_acl', jsonb_build_object('read', new.default_read, 'update', new.default_update,
                                                  'delete', new.default_delete),
                'schema', new.schema is not null) else '{}' end);
    else
        perform baas._audit(case tg_op when 'INSERT' then 'index.create' else 'index.drop' end,
            collection => (select c.name from baas.collections c
                            where c.id = coalesce(new.collection_id, old.collection_id)),
            details => jsonb_build_object('path', coalesce(new.path, old.path), 'kind', coalesce(new.kind, old.kind),
                                          'collection_id', coalesce(new.collection_id, old.collection_id)));
    end if;
    return null;
end
$$;
create trigger collections_audit after insert or delete on baas.collections
    for each row execute function baas._audit_collections();
create trigger indexes_audit after insert or delete on baas.indexes
    for each row execute function baas._audit_collections();

-- With what the owner delete policy did to the account's documents (sql/accounts.sql,
-- _users_owner_delete): {orphaned, transferred}.
create function baas._audit_users() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_key text := 'baas.owner_delete_' || replace(old.id::text, '-', '');
    v_moved jsonb := nullif(pg_catalog.current_setting(v_key, true), '')::jsonb;
begin
    perform baas._audit('user.delete', old.id, details => jsonb_build_object('email', old.email)
        || coalesce(v_moved, '{"orphaned": 0, "transferred": 0}'));
    if v_moved is not null then
        perform pg_catalog.set_config(v_key, '', true);
    end if;
    return null;
end
$$;
create trigger users_audit_delete after delete on baas.users
    for each row execute function baas._audit_users();

create function baas._audit_keys() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    -- A restore loads keys (and its CREATE EXTENSION makes one): not events (sql/dump.sql).
    if baas._restoring() then
        return null;
    end if;
    perform baas._audit('key.create', details => jsonb_build_object('kid', new.kid));
    return null;
end
$$;
create trigger signing_keys_audit after insert on baas._signing_keys
    for each row execute function baas._audit_keys();

------------------------------------------------------------------------ sessions
-- A session that ends (logout, password change, refresh reuse, deleted account) is
-- announced on channel baas_sessions, so that proxies refuse its tokens without a
-- database round trip. Postgres still checks the session on every request; this only
-- spares the connection.
create function baas._announce_session_end() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if tg_op = 'DELETE' then
        if old.revoked_at is null and old.expires_at > now() then
            perform pg_notify('baas_sessions', old.id::text);
        end if;
    else
        perform pg_notify('baas_sessions', new.id::text);
    end if;
    return null;
end
$$;
create trigger sessions_announce_revoke after update of revoked_at on baas.sessions
    for each row when (old.revoked_at is null and new.revoked_at is not null)
    execute function baas._announce_session_end();
create trigger sessions_announce_delete after delete on baas.sessions
    for each row execute function baas._announce_session_end();

-- (issue 19, observe) Rows waiting in an outbox, `mail` or `webhooks`, for the proxy's
-- pgbaas_outbox_backlog gauge: each worker asks at most every 10 s. Both counts walk a
-- partial index of the undelivered rows only. plpgsql: the outboxes' tables are made
-- by later files.
create function baas._outbox_backlog(outbox text) returns bigint
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if outbox = 'mail' then
        return (select count(*) from baas.email_outbox o where o.status in ('pending', 'sending'));
    elsif outbox = 'webhooks' then
        return (select count(*) from baas.webhook_events e where e.delivered_at is null and e.dead_at is null);
    end if;
    return null;
end
$$;
