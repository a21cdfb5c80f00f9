-- pgbaas housekeeping: the cleanup pgbaas needs (ended sessions, spent tokens, unfinished
-- uploads, delivered outbox rows) in one function the proxy runs periodically, so that
-- nothing depends on pg_cron; pg_cron remains the way to schedule the team's own jobs
-- (docs/schedules.md; issue 18, package E).

-- How long sent and failed outbox messages are kept (null: kept until a DBA runs
-- baas.purge_email_outbox); pending ones always stay.
alter table baas.settings add column email_outbox_retention interval default '30 days'
    check (email_outbox_retention between '1 day' and '3650 days');

-- What lets a run find its batch without reading a whole table (partial where the
-- garbage is a small part of a busy table).
create index sessions_expires_at_idx on baas.sessions (expires_at);
create index sessions_revoked_at_idx on baas.sessions (revoked_at) where revoked_at is not null;
create index refresh_tokens_sealed_idx on baas.refresh_tokens (used_at) where successor is not null;
create index auth_tokens_expires_at_idx on baas._auth_tokens (expires_at);
create index trusted_sources_last_success_idx on baas._trusted_sources (last_success_at);
create index email_outbox_done_idx on baas.email_outbox (created_at) where status in ('sent', 'failed');

-- One run: what pgbaas itself leaves behind that no request will ever read again. Each
-- kind removes at most a batch per run (`limit … for update skip locked`: the rest goes
-- in the next runs, and a row a request holds is left for later), so a run is one short
-- transaction whatever the backlog. Cold rows first, the rows requests also lock
-- (refresh tokens' seals, sign-in throttles, trusted sources) last, so a run holds their
-- locks only for its final moments; uploads last of all, in small batches (the proxy's
-- upload sweep runs the same two functions: sql/files.sql). baas.purge_sessions and
-- baas.purge_email_outbox stay for manual use (they take everything at once).
-- Never touches audit entries or anonymous accounts: those are the team's policy
-- (docs/schedules.md); an anonymous account keeps its newest session, the evidence of
-- its last activity that baas.purge_anonymous_users measures. One run at a time across
-- proxies and pg_cron: a run that finds another one going answers {"skipped": true} at
-- once. A run waits at most lock_timeout for a lock (then fails; the next one retries).
create function baas.housekeeping() returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '5s'
as $$
declare
    batch constant integer := 1000;
    cutoff constant timestamptz := now() - interval '1 day';
    s baas.settings;
    r jsonb := '{}';
    n bigint;
begin
    -- The two-int form: its key space is apart from the one-bigint keys that
    -- hashtextextended('baas.login:' || email) and the like make from client input, so
    -- no request can take this lock. 1650549107 = 'baas', 26731 = 'hk' (ASCII).
    if not pg_catalog.pg_try_advisory_xact_lock(1650549107, 26731) then
        return jsonb_build_object('skipped', true);
    end if;
    select * into strict s from baas.settings;

    -- Sent and failed mail past email_outbox_retention (the rule of
    -- baas.purge_email_outbox in sql/email.sql); pending mail always stays.
    if s.email_outbox_retention is null then
        n := 0;
    else
        delete from baas.email_outbox o
         where o.id in (
             select x.id from baas.email_outbox x
              where x.status in ('sent', 'failed') and x.created_at < now() - s.email_outbox_retention
              limit batch for update skip locked);
        get diagnostics n = row_count;
    end if;
    r := r || jsonb_build_object('email_outbox', n);

    -- Identity-provider tokens remembered against replay, past their expiry
    -- (sql/oidc.sql forgets them too, at the next sign-in).
    delete from baas._oidc_used_tokens t
     where t.ctid = any (array(
         select x.ctid from baas._oidc_used_tokens x where x.expires_at < now()
          limit batch for update skip locked));
    get diagnostics n = row_count;
    r := r || jsonb_build_object('oidc_used_tokens', n);

    -- Mailed links and codes and MFA tickets: single use and expiring; a day after
    -- they expired nothing answers "expired" from them any more, used or not.
    delete from baas._auth_tokens t
     where t.ctid = any (array(
         select x.ctid from baas._auth_tokens x
          where x.expires_at < cutoff
          limit batch for update skip locked));
    get diagnostics n = row_count;
    r := r || jsonb_build_object('auth_tokens', n);

    -- Sessions that ended over a day ago (the rule of baas.purge_sessions in
    -- sql/auth.sql): first a batch of their refresh tokens, then those of them left with
    -- none, so the cascade has nothing to do. An anonymous account's newest session
    -- stays (its last_used_at is how baas.purge_anonymous_users knows it was active).
    delete from baas.refresh_tokens t
     where t.ctid = any (array(
         select x.ctid from baas.sessions e join baas.refresh_tokens x on x.session_id = e.id
          where e.expires_at < cutoff or e.revoked_at < cutoff
          limit batch for update of x skip locked));
    delete from baas.sessions t
     where t.ctid = any (array(
         select e.ctid from baas.sessions e
          where (e.expires_at < cutoff or e.revoked_at < cutoff)
            and not exists (select from baas.refresh_tokens x where x.session_id = e.id)
            and (not exists (select from baas.users u where u.id = e.user_id and u.is_anonymous)
                 or exists (select from baas.sessions o
                             where o.user_id = e.user_id
                               and (coalesce(o.last_used_at, '-infinity'), o.id)
                                   > (coalesce(e.last_used_at, '-infinity'), e.id)))
          limit batch for update skip locked));
    get diagnostics n = row_count;
    r := r || jsonb_build_object('sessions', n);

    -- Sealed successors past the longest refresh_reuse_interval (baas.refresh drops them
    -- too, per session, when it next runs).
    update baas.refresh_tokens t set successor = null
     where t.ctid = any (array(
         select x.ctid from baas.refresh_tokens x
          where x.successor is not null and x.used_at < clock_timestamp() - interval '5 minutes'
          limit batch for update skip locked));
    get diagnostics n = row_count;
    r := r || jsonb_build_object('sealed_refresh_tokens', n);

    -- Failed-sign-in counts past login_failure_window and not making anyone wait
    -- (sql/audit.sql forgets 20 of them per failed sign-in; the same rule).
    delete from baas._login_throttles t
     where t.ctid = any (array(
         select x.ctid from baas._login_throttles x
          where x.last_failure_at < clock_timestamp() - s.login_failure_window
            and (x.wait_until is null or x.wait_until < clock_timestamp())
          limit batch for update skip locked));
    get diagnostics n = row_count;
    r := r || jsonb_build_object('login_throttles', n);

    -- Trusted sign-in sources past login_trust_ttl (sql/audit.sql forgets them per
    -- account at its next sign-in; accounts that never sign in again kept them).
    delete from baas._trusted_sources t
     where t.ctid = any (array(
         select x.ctid from baas._trusted_sources x
          where x.last_success_at < clock_timestamp() - s.login_trust_ttl
          limit batch for update skip locked));
    get diagnostics n = row_count;
    r := r || jsonb_build_object('trusted_sources', n);

    -- Unfinished uploads past their expiry (their bytes go to the trash) and finished
    -- ones remembered for a day, then up to 16 chunk rows (16 MiB) of the bytes of
    -- deleted or replaced files (sql/files.sql). Small batches: where the proxy runs
    -- its upload sweep (--upload-cleanup-secs) that does the bulk; this keeps a database
    -- without one clean, slowly.
    r := r || jsonb_build_object('uploads', baas.cleanup_uploads(100),
                                 'blob_rows', baas.cleanup_blobs(16));

    -- Webhook events (sql/webhooks.sql) delivered more than a day ago, or dead more
    -- than 30 days ago (baas.webhook_dead_letters keeps them for replay until then);
    -- pending ones always stay. baas.purge_webhook_events stays for manual use.
    delete from baas.webhook_events e
     where e.id in (
         select x.id from baas.webhook_events x
          where (x.delivered_at is not null or x.dead_at is not null)
            and coalesce(x.delivered_at, x.dead_at) < now() - interval '1 day'
            and (x.dead_at is null or x.dead_at < now() - interval '30 days')
          limit batch for update skip locked);
    get diagnostics n = row_count;
    r := r || jsonb_build_object('webhook_events', n);
    return r;
end
$$;
comment on function baas.housekeeping() is
    'Proxy/DBAs: remove what pgbaas leaves behind (ended sessions, expired tokens and uploads, old outbox rows), a batch of each per run; answers the counts per kind, or {"skipped": true} while another run holds the lock';
