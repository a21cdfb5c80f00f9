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

-- ================================================================= sql/limits.sql
-- (package D: shared per-account limits)

-- ================================================================== sql/lints.sql

-- ================================================================= sql/grants.sql
-- observability (issue 19): package A. (A fresh install revokes every function from
-- public at the top of grants.sql; a function the script adds must be revoked here.)
revoke execute on function baas._outbox_backlog(text) from public;
grant execute on function baas._outbox_backlog(text) to baas_authenticator;

-- Tell every proxy that the extension changed (see pgbaas--0.2.0--0.3.0.sql).
select pg_catalog.pg_notify('baas_extension', '0.10.0');
