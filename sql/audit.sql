-- pgbaas audit trail and account lockout.
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
    details jsonb not null default '{}'
);
comment on table baas.audit_log is
    'Security events: sign-ups, logins and failures, logouts, password changes, deletions, refresh reuse, lockouts, role and ACL changes, collections and indexes created and dropped, key rotations';
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
    insert into baas.audit_log (action, actor, actor_role, ip, user_id, collection, document_id, details)
    values (_audit.action, baas.uid(),
            -- Inside SECURITY DEFINER, current_user is the owner; the caller's role is
            -- the one SET (by baas.authenticate) or the login role.
            coalesce(nullif(pg_catalog.current_setting('role'), 'none'), session_user::text),
            baas._client_ip(), _audit.user_id, _audit.collection, _audit.document_id,
            coalesce(_audit.details, '{}'));
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

------------------------------------------------------------------------ lockout
-- An account with lockout_threshold failed logins within lockout_window (counted since
-- its last successful login and its last lockout) is locked for lockout_duration.
-- While locked, every login answers exactly like a wrong password, after the same
-- password-hashing work.
create table baas._lockouts (
    user_id uuid primary key references baas.users (id) on delete cascade,
    locked_until timestamptz not null
);
revoke all on baas._lockouts from public;
alter table baas._lockouts enable row level security;

create function baas._account_locked(p_user uuid) returns boolean
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
    -- clock_timestamp(), like the audit log's times: a lockout lifted or begun earlier in
    -- the same transaction counts.
    return exists (select from baas._lockouts l where l.user_id = p_user and l.locked_until > clock_timestamp());
end
$$;

-- After a failed login of p_user: lock the account if this failure reached the threshold.
create function baas._note_login_failure(p_user uuid) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    s baas.settings;
    v_since timestamptz;
    n integer;
begin
    select * into strict s from baas.settings;
    select greatest(clock_timestamp() - s.lockout_window,
                    (select max(a.at) from baas.audit_log a where a.user_id = p_user and a.action = 'login'),
                    (select l.locked_until from baas._lockouts l where l.user_id = p_user))
      into v_since;
    select count(*) into n from baas.audit_log a
     where a.user_id = p_user and a.action in ('login.failure', 'password.change.failure') and a.at > v_since;
    if n >= s.lockout_threshold then
        insert into baas._lockouts (user_id, locked_until) values (p_user, clock_timestamp() + s.lockout_duration)
        on conflict (user_id) do update set locked_until = excluded.locked_until;
        perform baas._audit('account.locked', p_user,
            details => jsonb_build_object('failures', n, 'until', clock_timestamp() + s.lockout_duration));
    end if;
end
$$;

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

-- DBAs: lift a lockout early.
create function baas.unlock_account(user_id uuid) returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
begin
    if not exists (select from baas.users u where u.id = unlock_account.user_id) then
        perform baas._raise('P0002', 'user_not_found', format('no account with id %s', unlock_account.user_id));
    end if;
    delete from baas._lockouts l where l.user_id = unlock_account.user_id and l.locked_until > clock_timestamp();
    if found then
        -- Failures before now no longer count towards the next lockout.
        insert into baas._lockouts (user_id, locked_until) values (unlock_account.user_id, clock_timestamp())
        on conflict (user_id) do update set locked_until = excluded.locked_until;
        perform baas._audit('account.unlocked', unlock_account.user_id);
        return true;
    end if;
    return false;
end
$$;
comment on function baas.unlock_account(uuid) is 'DBAs: lift an account''s login lockout now; true if it was locked, false if not; P0002 user_not_found for an unknown id';

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

create function baas._audit_users() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    perform baas._audit('user.delete', old.id, details => jsonb_build_object('email', old.email));
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
