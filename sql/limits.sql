-- Per-account limits shared by every proxy (issue 19, package D): login, sign-up,
-- refresh and password change counted in Postgres, so N proxies allow the rate of one.
-- Loaded after sql/housekeeping.sql, before sql/lints.sql.

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
