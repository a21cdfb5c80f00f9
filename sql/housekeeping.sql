-- pgbaas housekeeping: the cleanup pgbaas needs (ended sessions, spent tokens, unfinished
-- uploads, delivered outbox rows) in one function the proxy runs periodically, so that
-- nothing depends on pg_cron; pg_cron remains the way to schedule the team's own jobs
-- (docs/schedules.md; issue 18, package E).

-- How long sent and failed outbox messages are kept (null: kept until a DBA runs
-- baas.purge_email_outbox); pending ones always stay.
alter table baas.settings add column email_outbox_retention interval default '30 days'
    check (email_outbox_retention between '1 day' and '3650 days');

-- One run: what pgbaas itself leaves behind that no request will ever read again,
-- each kind through the function that already owns its rule where one exists. Each
-- kind removes at most a batch per run (the rest goes in the next runs), so a run is
-- one short transaction whatever the backlog; the two older purges (sessions, outbox)
-- take what they find. Never touches audit entries or anonymous accounts: those are
-- the team's policy (docs/schedules.md). One run at a time across proxies and pg_cron:
-- a run that finds another one going answers {"skipped": true} at once.
create function baas.housekeeping() returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    batch constant integer := 1000;
    s baas.settings;
    r jsonb := '{}';
    n bigint;
begin
    if not pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('baas.housekeeping')) then
        return jsonb_build_object('skipped', true);
    end if;
    select * into strict s from baas.settings;

    -- Sessions that ended over a day ago, with their refresh tokens (sql/auth.sql).
    r := r || jsonb_build_object('sessions', baas.purge_sessions());

    -- Mailed links and codes and MFA tickets: single use and expiring; a day after
    -- they expired nothing answers "expired" from them any more, used or not.
    delete from baas._auth_tokens t
     where t.ctid = any (array(
         select x.ctid from baas._auth_tokens x
          where x.expires_at < now() - interval '1 day'
          limit batch for update skip locked));
    get diagnostics n = row_count;
    r := r || jsonb_build_object('auth_tokens', n);

    -- Identity-provider tokens remembered against replay, past their expiry
    -- (sql/oidc.sql forgets them too, at the next sign-in).
    delete from baas._oidc_used_tokens t
     where t.ctid = any (array(
         select x.ctid from baas._oidc_used_tokens x where x.expires_at < now()
          limit batch for update skip locked));
    get diagnostics n = row_count;
    r := r || jsonb_build_object('oidc_used_tokens', n);

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
    -- ones remembered for a day, then the bytes of deleted or replaced files
    -- (sql/files.sql; the proxy's upload sweep runs the same two functions).
    r := r || jsonb_build_object('uploads', baas.cleanup_uploads(batch),
                                 'blob_rows', baas.cleanup_blobs(batch / 8));

    -- Sent and failed mail past email_outbox_retention (sql/email.sql).
    r := r || jsonb_build_object('email_outbox',
        case when s.email_outbox_retention is null then 0
             else baas.purge_email_outbox(s.email_outbox_retention) end);

    -- webhook events: wired at merge
    return r;
end
$$;
comment on function baas.housekeeping() is
    'Proxy/DBAs: remove what pgbaas leaves behind (ended sessions, expired tokens and uploads, old outbox rows), a batch of each per run; answers the counts per kind, or {"skipped": true} while another run holds the lock';
