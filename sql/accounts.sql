-- Account lifecycle beyond sign-up and sign-in (issue 16). Loaded after every other
-- file but grants.sql: the columns it adds to earlier tables then come last in a fresh
-- install, in the same order as in a database upgraded from an earlier release.

------------------------------------------------------------------------ refresh retries
-- Two refreshes racing from one app (two tabs, a retry after a timeout) present the
-- same refresh token. Within refresh_reuse_interval of its first use a spent token gets
-- the pair that use made (a new access token, the same refresh token) instead of
-- revoking its session; after it, reuse still revokes (baas.refresh in sql/auth.sql).
-- 0 turns retries off.
alter table baas.settings add column refresh_reuse_interval interval not null default '10 seconds'
    check (refresh_reuse_interval between '0' and '5 minutes');
-- The refresh token a spent one was exchanged for, sealed with a key made from the spent
-- token (baas._refresh_seal): the table holds no refresh token a reader could use.
alter table baas.refresh_tokens add column successor bytea;
