-- pgbaas 0.9.0 -> 0.10.0, run by ALTER EXTENSION pgbaas UPDATE.
--
-- It turns a 0.9.0 database into exactly what CREATE EXTENSION makes at 0.10.0:
-- tests/tests/upgrade.rs installs 0.9.0 from its release commit, fills it (files
-- included), runs this, checks the data through the proxy and compares the schema
-- (pg_dump --binary-upgrade) with a fresh install's. Every statement below is the final
-- text of the file it names (sql/CHANGES-0.10.0.md lists what changed and why). Older
-- databases upgrade through the earlier scripts first.
--
-- Once released, an upgrade script is never edited: a fix goes into the next version's.

-- ================================================================== sql/audit.sql
-- (package A: request ids)
alter table baas.audit_log add column request_id text;

create or replace function baas._audit(action text, user_id uuid default null, collection text default null,
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

-- ================================================================ sql/realtime.sql
-- (issue 19, observe: pgbaas_realtime_lag_seconds) The proxies' reads also return each
-- event's commit time. A new result column: drop and create (the grant is given again
-- in the grants section below).
drop function baas._realtime_read(bigint, integer);
create function baas._realtime_read(after bigint, max_events integer)
returns table ("position" bigint, xid xid8, kind text, collection text, body jsonb, committed_at timestamptz)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select e.position, e.xid, e.kind, e.collection, e.body, e.committed_at from baas.realtime_events e
     where e.position > after order by e.position limit greatest(max_events, 0)
$$;
revoke all on function baas._realtime_read(bigint, integer) from public;

-- ================================================================= sql/limits.sql
-- (package D: shared per-account limits)

-- One row per account key that is counting: the current fixed window's start and its
-- hits. The key is the proxy's account key (ratelimit::account_key, e.g.
-- 'email:ann@example.com@203.0.113.7'), stored as its sha256 so no address is kept in
-- the clear. Not user data: a dump need not keep it (a restore starts every count at 0).
create table baas._account_limits (
    key bytea primary key,
    window_start timestamptz not null,
    hits integer not null
);
revoke all on baas._account_limits from public;
alter table baas._account_limits enable row level security;
-- The sweep below finds expired rows by this index, not by reading the table.
create index on baas._account_limits (window_start);

-- Count one attempt for `account_key` in the fixed window of `window_secs` seconds it falls in
-- (60, the only length taken);
-- 0 while the window's count is at most `max_hits`, else the seconds until the window
-- ends (at least 1: the proxy's Retry-After). Called by the proxy as its own statement
-- before the request's transaction (proxy/src/server.rs), so a failed login still
-- counts: its rollback cannot undo this commit.
--
-- Bounded: a key's row is overwritten in place when its window passes, and every call
-- deletes at most two rows whose window ended two windows ago, so the table holds the
-- keys counting now plus a tail that shrinks at least as fast as keys arrive.
create function baas._account_limit_hit(account_key text, max_hits integer, window_secs integer) returns integer
    language plpgsql volatile security definer
    set search_path = pg_catalog, pg_temp
as $$
declare
    k bytea := pg_catalog.sha256(pg_catalog.convert_to(account_key, 'UTF8'));
    now_s double precision := extract(epoch from pg_catalog.clock_timestamp());
    w timestamptz;
    n integer;
begin
    -- One window length for every row: the sweep's cut-off (two windows back) is then
    -- right for every row, whoever wrote it.
    if max_hits is null or max_hits < 1 or window_secs is distinct from 60 then
        perform baas._raise('22023', 'invalid_request', 'max_hits must be positive and window_secs 60');
    end if;
    w := pg_catalog.to_timestamp(pg_catalog.floor(now_s / window_secs) * window_secs);
    insert into baas._account_limits as l (key, window_start, hits) values (k, w, 1)
    on conflict on constraint _account_limits_pkey do update
        set hits = case when l.window_start = excluded.window_start then l.hits + 1 else 1 end,
            window_start = excluded.window_start
    returning l.hits into n;
    delete from baas._account_limits
     where ctid = any (array(select ctid from baas._account_limits
                              where window_start < w - pg_catalog.make_interval(secs => 2 * window_secs)
                              limit 2 for update skip locked));
    if n <= max_hits then
        return 0;
    end if;
    return greatest(1, pg_catalog.ceil(extract(epoch from w)::float8 + window_secs - now_s)::integer);
end
$$;
revoke all on function baas._account_limit_hit(text, integer, integer) from public;

-- ================================================================== sql/lints.sql

-- ================================================================= sql/grants.sql
-- observability (issue 19): package A. (A fresh install revokes every function from
-- public at the top of grants.sql; a function the script adds must be revoked here.)
revoke execute on function baas._outbox_backlog(text) from public;
grant execute on function baas._outbox_backlog(text) to baas_authenticator;

-- shared limits (issue 19, sql/limits.sql): package D.
-- The proxy's login role counts per-account attempts (proxy/src/server.rs); no API role may.
grant execute on function baas._account_limit_hit(text, integer, integer) to baas_authenticator;

-- realtime lag (issue 19, sql/realtime.sql): the proxies' reads, made anew above.
grant execute on function baas._realtime_read(bigint, integer) to baas_authenticator;

-- Tell every proxy that the extension changed (see pgbaas--0.2.0--0.3.0.sql).
select pg_catalog.pg_notify('baas_extension', '0.10.0');
