-- pgbaas 0.13.0 -> 0.14.0, run by ALTER EXTENSION pgbaas UPDATE.
--
-- It turns a 0.13.0 database into exactly what CREATE EXTENSION makes at 0.14.0:
-- tests/tests/upgrade.rs installs 0.13.0 from its release commit, fills it, runs this,
-- checks the data through the proxy and compares the schema (pg_dump --binary-upgrade)
-- with a fresh install's. Every statement below is the final text of the file it names
-- (sql/CHANGES-0.14.0.md lists what changed and why). Older databases upgrade through
-- the earlier scripts first.
--
-- Once released, an upgrade script is never edited: a fix goes into the next version's.

-- ==================================================================== sql/parse.sql
-- (issue 21) Parse anonymous users: authData kept beside the accounts.
-- Parse's authData: the sign-in providers an account is linked to, by the provider's id
-- for it (0.14.0). Only `anonymous` is served (Parse.AnonymousUtils): its id, a random
-- UUID the SDK makes, is the credential, as in Parse Server.
create table baas.parse_auth_data (
    provider text not null check (provider in ('anonymous')),
    provider_id text not null check (length(provider_id) between 1 and 256 and provider_id !~ '[[:cntrl:]]'),
    user_id uuid not null references baas.users (id) on delete cascade,
    primary key (provider, provider_id)
);
create index parse_auth_data_user_id_idx on baas.parse_auth_data (user_id);
comment on table baas.parse_auth_data is 'Parse authData: the providers (anonymous) an account made through the Parse door is linked to (docs/parse.md)';
revoke all on baas.parse_auth_data from public;
alter table baas.parse_auth_data enable row level security;
select pg_catalog.pg_extension_config_dump('baas.parse_auth_data', '');

-- The Parse user now shows its authData.
create or replace function baas._parse_user_json(u baas.users) returns jsonb
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select (u.data - array['objectId', 'username', 'email', 'emailVerified', 'createdAt', 'updatedAt',
                           'sessionToken', 'authData', 'ACL'])
        || pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'objectId', u.id,
        'username', (select p.username from baas.parse_usernames p where p.user_id = u.id),
        'email', u.email,
        'emailVerified', case when u.email is not null then u.email_verified_at is not null end,
        'createdAt', baas._parse_date(u.created_at),
        'updatedAt', baas._parse_date(u.updated_at),
        'authData', (select pg_catalog.jsonb_object_agg(a.provider, pg_catalog.jsonb_build_object('id', a.provider_id))
                       from baas.parse_auth_data a where a.user_id = u.id)))
$$;

-- POST /parse/users with authData {"anonymous": {"id"}} (Parse.AnonymousUtils.logIn):
-- the account linked to that id, signed in, or else a new anonymous account (as
-- baas.sign_in_anonymously makes: no email, no password; setting anonymous_sign_in)
-- with a random username, linked to it. A link left on an account that has since
-- become a full one (baas.upgrade_account) signs nobody in: it goes, and the id makes a
-- new account, as after a Parse sign-up. The Parse user with a new sessionToken and
-- `created`; a suspended account's {"error": {...}}.
create function baas.parse_login_anonymous(anonymous_id text, installation_id text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    u baas.users;
    v jsonb;
    v_found boolean;
    v_created boolean := false;
begin
    if not (select s.anonymous_sign_in from baas.settings s) then
        perform baas._raise('42501', 'anonymous_sign_in_disabled', 'anonymous sign-in is not enabled');
    end if;
    if anonymous_id is null or length(anonymous_id) not between 1 and 256 or anonymous_id ~ '[[:cntrl:]]' then
        perform baas._raise('22023', 'invalid_request', 'authData.anonymous.id must be 1 to 256 characters without control characters');
    end if;
    -- Two first sign-ins with one id make one account.
    perform pg_advisory_xact_lock(hashtextextended('baas.parse_auth_data:anonymous:' || anonymous_id, 0));
    -- The account locked against a concurrent sign-up, upgrade or suspension.
    select x.* into u from baas.parse_auth_data a join baas.users x on x.id = a.user_id
     where a.provider = 'anonymous' and a.provider_id = anonymous_id
       for update of x;
    v_found := found;
    if v_found and not u.is_anonymous then
        delete from baas.parse_auth_data a where a.provider = 'anonymous' and a.provider_id = anonymous_id;
        v_found := false;
    end if;
    if v_found then
        perform baas._audit('login', u.id, details => jsonb_build_object('method', 'anonymous', 'door', 'parse'));
    else
        insert into baas.users (id, email, password_hash, data, is_anonymous)
        values (baas.uuid7(), null, null, '{}', true)
        returning * into u;
        insert into baas.parse_usernames (user_id, username) values (u.id, replace(gen_random_uuid()::text, '-', ''));
        insert into baas.parse_auth_data (provider, provider_id, user_id) values ('anonymous', anonymous_id, u.id);
        perform baas._audit('signup.anonymous', u.id, details => jsonb_build_object('door', 'parse'));
        v_created := true;
    end if;
    v := baas._complete_sign_in(u, 'anonymous', baas._parse_installation(installation_id));
    if v ? 'error' then
        return v;
    end if;
    if v ? 'mfa_required' then
        return jsonb_build_object('error', jsonb_build_object('code', 'mfa_required',
            'message', 'this account signs in with a second factor, which the Parse door does not take; sign in through /v1/auth'));
    end if;
    return baas._parse_user_json(u) || jsonb_build_object('sessionToken', baas._parse_session_token(v), 'created', v_created);
end
$$;
comment on function baas.parse_login_anonymous(text, text) is
    'Parse door: sign in with anonymous authData, making the anonymous account on first use; the Parse user with a sessionToken and created, or {"error": {...}}';

-- (0.14.0) The sign-up rules shared with the anonymous user's sign-up.
-- What a Parse account with a password must meet when it is made (parse_signup) or an
-- anonymous one becomes one (parse_upgrade_anonymous), checked before anything is
-- hashed or written: a password pgbaas takes, and email_verification as baas.signup
-- applies it (sql/accounts.sql): with `required` no session until the email is
-- verified, so an account without an email could never sign in; with a mail to send,
-- the mail settings.
create function baas._parse_password_rules(password text, email text) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_mode text := (select s.email_verification from baas.settings s);
begin
    if password is null or password = '' then
        perform baas._raise('22023', 'password_missing', 'password is required');
    end if;
    perform baas._check_password(password);
    if v_mode = 'required' and email is null then
        perform baas._raise('22023', 'email_missing', 'you must provide an email: this app signs in only with a verified email');
    end if;
    if v_mode <> 'off' and email is not null then
        perform baas._email_configured();
    end if;
end
$$;

create or replace function baas.parse_signup(username text, password text, email text default null,
                                  data jsonb default '{}', installation_id text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    u baas.users;
    v_mode text := (select s.email_verification from baas.settings s);
begin
    if username is null or username = '' then
        perform baas._raise('22023', 'username_missing', 'bad or missing username');
    end if;
    if length(username) > 256 or username ~ '[[:cntrl:]]' then
        perform baas._raise('22023', 'username_invalid', 'a username is 1 to 256 characters without control characters');
    end if;
    if data is not null and jsonb_typeof(data) <> 'object' then
        perform baas._raise('22023', 'invalid_request', 'the user''s fields must be a JSON object');
    end if;
    perform baas._parse_password_rules(password, email);
    if exists (select from baas.parse_usernames p where p.username = parse_signup.username) then
        perform baas._raise('23505', 'username_taken', 'Account already exists for this username.');
    end if;
    begin
        insert into baas.users (id, email, password_hash, data)
        values (baas.uuid7(), case when email is not null then baas._normalize_email(email) end,
                baas._hash_password(password), coalesce(data, '{}'))
        returning * into u;
    exception when unique_violation then
        perform baas._raise('23505', 'email_taken', 'Account already exists for this email address.');
    end;
    begin
        insert into baas.parse_usernames (user_id, username) values (u.id, username);
    exception when unique_violation then
        perform baas._raise('23505', 'username_taken', 'Account already exists for this username.');
    end;
    perform baas._audit('signup', u.id, details => jsonb_build_object('email', u.email, 'door', 'parse'));
    if v_mode <> 'off' and u.email is not null then
        perform baas._email_token('verify_email', u.id, u.email, u.language, '{}', true, false);
        if v_mode = 'required' then
            -- As Parse Server with preventLoginWithUnverifiedEmail: the user, no session.
            return baas._parse_user_json(u);
        end if;
    end if;
    return baas._parse_user_json(u)
        || jsonb_build_object('sessionToken', baas._parse_session_token(
               baas._new_session(u, 1::smallint, '{pwd}', baas._parse_installation(installation_id))));
end
$$;

-- PUT /parse/users/{id} with a password from the signed-in anonymous account (the SDK's
-- signUp of an anonymous user): it becomes a full account with that username and
-- password (and email, if given), keeping its id, hence its objects, files and grants,
-- and its session (baas.upgrade_account's rule, a Parse username standing in for the
-- email). Without a username it keeps the one it has (the SDK sends only what changed).
-- Its anonymous authData goes; `patch` (the user's other fields) is applied as
-- baas.parse_update_user applies it, in the same transaction. What would be refused is
-- refused before the password is hashed.
create function baas.parse_upgrade_anonymous(username text, password text, email text default null,
                                             patch jsonb default '{}') returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    u baas.users;
    v_mode text := (select s.email_verification from baas.settings s);
begin
    perform baas._require_session();
    select x.* into u from baas.users x where x.id = baas.uid() for update;
    if not found then
        perform baas._raise('28000', 'invalid_token', 'the account of this token no longer exists');
    end if;
    if not u.is_anonymous then
        perform baas._raise('42501', 'not_anonymous', 'this account is not anonymous; its password changes through PATCH /v1/auth/user with the current one');
    end if;
    if username is not null and (username = '' or length(username) > 256 or username ~ '[[:cntrl:]]') then
        perform baas._raise('22023', 'username_invalid', 'a username is 1 to 256 characters without control characters');
    end if;
    if username is not null and exists (select from baas.parse_usernames p where p.username = parse_upgrade_anonymous.username and p.user_id <> u.id) then
        perform baas._raise('23505', 'username_taken', 'Account already exists for this username.');
    end if;
    if email is not null and exists (select from baas.users x where x.email = baas._normalize_email(email) and x.id <> u.id) then
        perform baas._raise('23505', 'email_taken', 'Account already exists for this email address.');
    end if;
    perform baas._parse_password_rules(password, email);
    begin
        update baas.users x
           set email = case when email is not null then baas._normalize_email(email) end,
               password_hash = baas._hash_password(password), is_anonymous = false, updated_at = now()
         where x.id = u.id
        returning * into u;
    exception when unique_violation then
        perform baas._raise('23505', 'email_taken', 'Account already exists for this email address.');
    end;
    delete from baas.parse_auth_data a where a.user_id = u.id and a.provider = 'anonymous';
    perform baas._audit('user.upgrade', u.id, details => jsonb_build_object('email', u.email, 'door', 'parse'));
    if v_mode <> 'off' and u.email is not null then
        perform baas._email_token('verify_email', u.id, u.email, u.language, '{}', true, false);
    end if;
    return baas.parse_update_user(u.id, username, patch);
end
$$;
comment on function baas.parse_upgrade_anonymous(text, text, text, jsonb) is
    'Parse door: the signed-in anonymous account becomes a full one with a username and password, keeping its id and session';

-- The importer keeps Parse's anonymous users anonymous, with their anonymous ids.
create or replace function baas.parse_import_users(users jsonb) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    r jsonb;
    n integer := 0;
    v_imported integer := 0;
    v_skipped integer := 0;
    v_id uuid;
    v_hash text;
    v_email text;
    v_anonymous text;
    v_created timestamptz;
begin
    if users is null or jsonb_typeof(users) <> 'array' then
        perform baas._raise('22023', 'invalid_request', 'users must be a JSON array');
    end if;
    for r in select x from jsonb_array_elements(users) x loop
        n := n + 1;
        if jsonb_typeof(r) <> 'object' or jsonb_typeof(r -> 'id') <> 'string' or jsonb_typeof(r -> 'username') <> 'string'
           or (r ? 'data' and jsonb_typeof(r -> 'data') <> 'object') then
            perform baas._raise('22023', 'invalid_request', format('row %s: id and username are strings, data an object', n));
        end if;
        begin
            v_id := (r ->> 'id')::uuid;
            v_created := coalesce((r ->> 'created_at')::timestamptz, now());
        exception when others then
            perform baas._raise('22023', 'invalid_request', format('row %s: id is a uuid and created_at a time', n));
        end;
        v_hash := null;
        if r ->> 'password_hash' is not null then
            begin
                v_hash := baas._import_hash(r ->> 'password_hash', null, null, null);
            exception when invalid_parameter_value then
                perform baas._raise('22023', 'invalid_hash', format('row %s: %s', n, sqlerrm));
            end;
        end if;
        v_email := case when r ->> 'email' is not null then baas._normalize_email(r ->> 'email') end;
        v_anonymous := r ->> 'anonymous_id';
        if r ? 'anonymous_id' and jsonb_typeof(r -> 'anonymous_id') not in ('string', 'null')
           or length(v_anonymous) not between 1 and 256 or v_anonymous ~ '[[:cntrl:]]' then
            perform baas._raise('22023', 'invalid_request', format('row %s: anonymous_id is 1 to 256 characters without control characters', n));
        end if;
        begin
            -- An anonymous Parse user (authData.anonymous, no email, no password) stays
            -- anonymous and signs in again with its id (baas.parse_login_anonymous); an
            -- anonymous_id on any other account is not linked.
            insert into baas.users (id, email, password_hash, data, created_at, updated_at, email_verified_at, is_anonymous)
            values (v_id, v_email, v_hash, coalesce(r -> 'data', '{}'), v_created,
                    coalesce((r ->> 'updated_at')::timestamptz, v_created),
                    case when (r -> 'email_verified') = 'true' then now() end,
                    v_anonymous is not null and v_email is null and v_hash is null);
            insert into baas.parse_usernames (user_id, username) values (v_id, r ->> 'username');
            if v_anonymous is not null and v_email is null and v_hash is null then
                insert into baas.parse_auth_data (provider, provider_id, user_id) values ('anonymous', v_anonymous, v_id);
            end if;
            v_imported := v_imported + 1;
        exception when unique_violation then
            if exists (select from baas.users u where u.id = v_id) then
                v_skipped := v_skipped + 1;
            else
                perform baas._raise('23505', 'email_taken',
                    format('row %s: another account has this email, username or anonymous id', n));
            end if;
        end;
    end loop;
    perform baas._audit('user.import', null, details => jsonb_build_object('imported', v_imported, 'skipped', v_skipped, 'door', 'parse'));
    return jsonb_build_object('imported', v_imported, 'skipped', v_skipped);
end
$$;

-- (0.14.0) Parse roles (_Role) as pgbaas roles.
-- Parse roles (/parse/classes/_Role) are pgbaas's roles (docs/parse.md): a role's
-- objectId and name are its pgbaas name, its `users` relation its direct members
-- (baas.role_members), its `roles` relation the roles whose members it contains
-- (baas.role_roles: Parse's "moderators.getRoles().add(administrators)" is
-- role_roles(moderators, administrators)). The service role sees every role with its
-- members; any other caller only the roles it holds (baas.principals(), nesting
-- included), with itself as the only member shown and only the child roles it also
-- holds: pgbaas shows no one who else holds a role.
create function baas.parse_roles() returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    with me as (select baas._parse_master() as master, baas.uid() as uid,
                       array(select pg_catalog.substr(p, 6) from pg_catalog.unnest(baas.principals()) p
                              where p like 'role:%') as held)
    select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'name', r.name,
               'createdAt', baas._parse_date(r.created_at),
               'users', array(select m.user_id from baas.role_members m
                               where m.role = r.name and (me.master or m.user_id = me.uid) order by m.user_id),
               'roles', array(select rr.member_role from baas.role_roles rr
                               where rr.role = r.name and (me.master or rr.member_role = any (me.held)) order by rr.member_role)
           ) order by r.created_at, r.name), '[]')
      from baas.roles r, me
     where me.master or r.name = any (me.held)
$$;
comment on function baas.parse_roles() is 'Parse door: the roles as _Role objects: every one for the service role, the caller''s own (members shown: only itself) for anyone else';

-- POST/PUT /parse/classes/_Role: make a role (is_new) or change its members and child
-- roles, in one transaction. Service role only (42501 forbidden): roles are made and
-- changed with the master key, or by a DBA in SQL (baas.create_role …), whose checks
-- (names, cycles) and audit apply.
create function baas.parse_save_role(name text, is_new boolean, add_users uuid[] default '{}', remove_users uuid[] default '{}',
                                     add_roles text[] default '{}', remove_roles text[] default '{}') returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    u uuid;
    r text;
begin
    if not baas._parse_master() then
        perform baas._raise('42501', 'forbidden', 'Roles are made and changed with the master key (or by a DBA in SQL).');
    end if;
    if is_new then
        perform baas.create_role(name);
    else
        perform baas._role_must_exist(name);
    end if;
    foreach u in array coalesce(add_users, '{}') loop
        perform baas.add_role_member(name, u);
    end loop;
    foreach u in array coalesce(remove_users, '{}') loop
        perform baas.remove_role_member(name, u);
    end loop;
    foreach r in array coalesce(add_roles, '{}') loop
        perform baas.add_role_to_role(name, r);
    end loop;
    foreach r in array coalesce(remove_roles, '{}') loop
        perform baas._role_must_exist(r);
        perform baas.remove_role_from_role(name, r);
    end loop;
    return (select pg_catalog.jsonb_build_object('objectId', x.name, 'createdAt', baas._parse_date(x.created_at))
              from baas.roles x where x.name = parse_save_role.name);
end
$$;
comment on function baas.parse_save_role(text, boolean, uuid[], uuid[], text[], text[]) is 'Parse door: make a role or change its members and child roles; service role only';

-- DELETE /parse/classes/_Role/{name}: baas.drop_role (the role leaves every ACL). Service role only.
create function baas.parse_delete_role(name text) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if not baas._parse_master() then
        perform baas._raise('42501', 'forbidden', 'Roles are deleted with the master key (or by a DBA in SQL).');
    end if;
    perform baas.drop_role(name);
end
$$;
comment on function baas.parse_delete_role(text) is 'Parse door: delete a role (baas.drop_role); service role only';

-- (0.14.0) Parse _User queries and the master key's user deletion.
-- GET /parse/classes/_User (/users): accounts as Parse users. The service role reads
-- any: those named by ids, usernames or emails (each list optional, null being no
-- condition; with none, every account), at most `lim` after `off` in creation order
-- (users_created_at_idx), and with want_count `count`, how many match in all. Anyone
-- else reads only its own account (if the lists name it): pgbaas shows no account to
-- another (Parse Server's users are private by default too, its enforcePrivateUsers).
-- The door checks the rest of a query's `where`.
create function baas.parse_find_users(ids uuid[] default null, usernames text[] default null, emails text[] default null,
                                      lim integer default 100, off integer default 0, want_count boolean default false) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    v_emails text[] := array(select lower(e) from unnest(emails) e);
    v_cand uuid[];
begin
    if baas._parse_master() and ids is null and usernames is null and emails is null then
        -- Every account, a page at a time (users_created_at_idx).
        return jsonb_build_object(
            'count', case when want_count then (select count(*) from baas.users) end,
            'results', coalesce((select jsonb_agg(baas._parse_user_json(x.u) order by (x.u).created_at, (x.u).id)
                                   from (select u from baas.users u order by u.created_at, u.id
                                          limit least(greatest(lim, 0), 1000) offset greatest(off, 0)) x), '[]'));
    end if;
    -- The candidates, by one list's index (anyone else: itself); then every list holds.
    v_cand := case when not baas._parse_master() then array[baas.uid()]
                   when ids is not null then ids
                   when usernames is not null then array(select n.user_id from baas.parse_usernames n where n.username = any (usernames))
                   else array(select u.id from baas.users u where u.email = any (v_emails)) end;
    return (with m as (select u from baas.users u
                        where u.id = any (v_cand)
                          and (ids is null or u.id = any (ids))
                          and (usernames is null or exists (select from baas.parse_usernames n
                                                             where n.user_id = u.id and n.username = any (usernames)))
                          and (emails is null or u.email = any (v_emails)))
            select jsonb_build_object('count', case when want_count then (select count(*) from m) end,
                'results', coalesce((select jsonb_agg(baas._parse_user_json(x.u) order by (x.u).created_at, (x.u).id)
                                       from (select m.u from m order by (m.u).created_at, (m.u).id
                                              limit least(greatest(lim, 0), 1000) offset greatest(off, 0)) x), '[]')));
end
$$;
comment on function baas.parse_find_users(uuid[], text[], text[], integer, integer, boolean) is 'Parse door: accounts as Parse users: any (by ids, usernames, emails) for the service role, the caller''s own for anyone else; {count, results}';
-- (0.14.0) The master key's list of every account pages in creation order.
create index users_created_at_idx on baas.users (created_at, id);

-- DELETE /parse/users/{id} with the master key: the account goes as pgbaas deletes one
-- (its sessions with it, its documents as their collections' on_owner_delete says).
-- Service role only; P0002 user_not_found.
create function baas.parse_delete_user(id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if not baas._parse_master() then
        perform baas._raise('42501', 'forbidden', 'Another user''s account is deleted with the master key.');
    end if;
    perform baas._user_for_admin(id);
    delete from baas.users u where u.id = parse_delete_user.id;
end
$$;
comment on function baas.parse_delete_user(uuid) is 'Parse door: delete an account with the master key; service role only';

-- (0.14.0) Parse schemas (/schemas).
-- Parse schemas (/parse/schemas, Parse.Schema, the Parse Dashboard): each collection
-- that is not a file bucket is a class (its name as the collection's). pgbaas keeps no
-- field types, so a class's fields are its system fields and those its 100 newest
-- documents hold, typed by their values (a pointer's class as the door names classes).
-- Its class-level permissions say who may create (the collection's `create`: public is
-- *, authenticated requiresAuthentication, a user its id, a role role:name; registered
-- and anonymous keep pgbaas's names, having no Parse word); find, get, count, update,
-- delete and addField are every caller's, each object's ACL deciding, as in Parse.
-- A class name as the door shows it: a collection's (lower case), a system class's
-- (_User, _Role …) as it is.
create function baas._parse_class_name(class_name text) returns text
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
    select case when class_name like '\_%' then class_name else pg_catalog.lower(class_name) end
$$;

create function baas._parse_schema_json(c baas.collections) returns jsonb
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select pg_catalog.jsonb_build_object(
        'className', c.name,
        'fields', '{"objectId": {"type": "String"}, "createdAt": {"type": "Date"},
                    "updatedAt": {"type": "Date"}, "ACL": {"type": "ACL"}}'::jsonb
            || coalesce((select pg_catalog.jsonb_object_agg(f.key, f.type) from (
                   select distinct on (e.key) e.key,
                          case pg_catalog.jsonb_typeof(e.value)
                              when 'string' then '{"type": "String"}'::jsonb
                              when 'number' then '{"type": "Number"}'::jsonb
                              when 'boolean' then '{"type": "Boolean"}'::jsonb
                              when 'array' then '{"type": "Array"}'::jsonb
                              else case e.value ->> '__type'
                                  when 'Date' then '{"type": "Date"}'::jsonb
                                  when 'File' then '{"type": "File"}'::jsonb
                                  when 'GeoPoint' then '{"type": "GeoPoint"}'::jsonb
                                  when 'Bytes' then '{"type": "Bytes"}'::jsonb
                                  when 'Polygon' then '{"type": "Polygon"}'::jsonb
                                  when 'Pointer' then pg_catalog.jsonb_build_object('type', 'Pointer', 'targetClass', baas._parse_class_name(e.value ->> 'className'))
                                  when 'Relation' then pg_catalog.jsonb_build_object('type', 'Relation', 'targetClass', baas._parse_class_name(e.value ->> 'className'))
                                  else '{"type": "Object"}'::jsonb end
                          end as type
                     from (select d.id, d.created_at, d.data from baas.documents d where d.collection_id = c.id
                            order by d.created_at desc, d.id desc limit 100) d,
                          pg_catalog.jsonb_each(d.data) e
                    where pg_catalog.jsonb_typeof(e.value) <> 'null'
                      and e.key not in ('objectId', 'createdAt', 'updatedAt', 'ACL')
                    order by e.key, d.created_at desc, d.id desc) f), '{}'),
        'classLevelPermissions', pg_catalog.jsonb_build_object(
            'find', '{"*": true}'::jsonb, 'count', '{"*": true}'::jsonb, 'get', '{"*": true}'::jsonb,
            'update', '{"*": true}'::jsonb, 'delete', '{"*": true}'::jsonb, 'addField', '{"*": true}'::jsonb,
            'protectedFields', '{"*": []}'::jsonb,
            'create', coalesce((select pg_catalog.jsonb_object_agg(x.k, true) from (
                select case when p = 'public' then '*' when p = 'authenticated' then 'requiresAuthentication'
                            when p like 'user:%' then pg_catalog.substr(p, 6) else p end as k
                  from pg_catalog.unnest(c.create_acl) p) x), '{}')))
$$;

-- GET /parse/schemas[/{class}]: the classes (all, or the one of that collection name).
-- Service role only.
create function baas.parse_schemas(class_name text default null) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if not baas._parse_master() then
        perform baas._raise('42501', 'forbidden', 'unauthorized: master key is required');
    end if;
    return coalesce((select jsonb_agg(baas._parse_schema_json(c) order by c.name) from baas.collections c
                      where not c.bucket and (class_name is null or c.name = class_name)), '[]');
end
$$;
comment on function baas.parse_schemas(text) is 'Parse door: collections as Parse class schemas (fields from their newest documents); service role only';

-- POST /parse/schemas/{class}: a collection with `create` as given (Parse's default
-- class-level permissions let anyone create: ['public']). Service role only.
create function baas.parse_create_class(class_name text, creators text[] default array['public']) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if not baas._parse_master() then
        perform baas._raise('42501', 'forbidden', 'unauthorized: master key is required');
    end if;
    perform baas.create_collection(class_name, jsonb_build_object('create', to_jsonb(coalesce(creators, '{}'))));
    return (select baas._parse_schema_json(c) from baas.collections c where c.name = class_name);
end
$$;
comment on function baas.parse_create_class(text, text[]) is 'Parse door: create a class (a collection, create permission as given); service role only';

-- DELETE /parse/schemas/{class}: drop an empty class's collection, as Parse Server drops
-- only empty classes (55000 class_not_empty otherwise; P0002 collection_not_found).
-- Service role only.
create function baas.parse_drop_class(class_name text) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    c baas.collections;
begin
    if not baas._parse_master() then
        perform baas._raise('42501', 'forbidden', 'unauthorized: master key is required');
    end if;
    c := baas._collection_by_name(class_name);
    if c.bucket then
        perform baas._raise('P0002', 'collection_not_found', format('%s is a file bucket, not a class', class_name));
    end if;
    -- Locked first: a document being written into it (which holds a key share of the
    -- row) is committed before the check sees the class empty, or waits for the drop.
    perform from baas.collections x where x.id = c.id for update;
    if exists (select from baas.documents d where d.collection_id = c.id) then
        perform baas._raise('55000', 'class_not_empty', format('Class %s is not empty, cannot drop schema.', class_name));
    end if;
    perform baas.drop_collection(class_name);
end
$$;
comment on function baas.parse_drop_class(text) is 'Parse door: drop an empty class''s collection; service role only';

-- (0.14.0) The importer's sessions.
-- pgbaas-import parse --sessions: Parse Server's live revocable sessions, so that the
-- app's signed-in users stay signed in. Rows {user_id, token, expires_at?,
-- installation_id?}: each a pgbaas session of that user, live until its Parse expiry but
-- at most refresh_token_ttl from now (as a sign-in now), on that installation (its
-- device), with that token (kept as its SHA-256, as the door's own). Only what a
-- password sign-in would give now: no session for an account that is suspended, has a
-- second factor (a sign-in would ask for it), or is unverified while
-- email_verification is `required`. A token is imported once ever
-- (baas._parse_imported_tokens keeps its hash): a session that ended in pgbaas, and was
-- purged since, never comes back from a later run. Each is audited (session.import).
-- Skipped: those, expired ones, unknown users, tokens not 8 to 256 characters. DBAs only.
create table baas._parse_imported_tokens (
    token_hash bytea primary key,
    imported_at timestamptz not null default now()
);
revoke all on baas._parse_imported_tokens from public;
alter table baas._parse_imported_tokens enable row level security;
select pg_catalog.pg_extension_config_dump('baas._parse_imported_tokens', '');

create function baas.parse_import_sessions(sessions jsonb) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    r jsonb;
    n integer := 0;
    v_imported integer := 0;
    v_skipped integer := 0;
    v_user baas.users;
    v_expires timestamptz;
    v_sid uuid;
    v_hash bytea;
begin
    if sessions is null or jsonb_typeof(sessions) <> 'array' then
        perform baas._raise('22023', 'invalid_request', 'sessions must be a JSON array');
    end if;
    for r in select x from jsonb_array_elements(sessions) x loop
        n := n + 1;
        if jsonb_typeof(r) <> 'object' or jsonb_typeof(r -> 'token') <> 'string' or jsonb_typeof(r -> 'user_id') <> 'string' then
            perform baas._raise('22023', 'invalid_request', format('row %s: user_id and token are strings', n));
        end if;
        begin
            v_expires := least(coalesce((r ->> 'expires_at')::timestamptz, 'infinity'),
                               now() + (select s.refresh_token_ttl from baas.settings s));
            select * into v_user from baas.users u where u.id = (r ->> 'user_id')::uuid for key share;
        exception when others then
            perform baas._raise('22023', 'invalid_request', format('row %s: user_id is a uuid and expires_at a time', n));
        end;
        v_hash := baas._hash_token(r ->> 'token');
        if length(r ->> 'token') not between 8 and 256 or v_expires <= now() or v_user.id is null
           or v_user.suspended_at is not null
           or exists (select from baas._mfa_factors f where f.user_id = v_user.id and f.status = 'verified')
           or (v_user.email_verified_at is null and not v_user.is_anonymous
               and (select s.email_verification from baas.settings s) = 'required')
           or exists (select from baas._parse_imported_tokens t where t.token_hash = v_hash)
           or exists (select from baas._parse_sessions p where p.token_hash = v_hash) then
            v_skipped := v_skipped + 1;
            continue;
        end if;
        v_sid := baas.uuid7();
        insert into baas.sessions (id, user_id, expires_at, device_id)
        values (v_sid, v_user.id, v_expires, baas._parse_installation(r ->> 'installation_id'));
        insert into baas._parse_sessions (token_hash, session_id) values (v_hash, v_sid);
        insert into baas._parse_imported_tokens (token_hash) values (v_hash);
        perform baas._audit('session.import', v_user.id, details => jsonb_build_object('session', v_sid, 'from', 'parse'));
        v_imported := v_imported + 1;
    end loop;
    return jsonb_build_object('imported', v_imported, 'skipped', v_skipped);
end
$$;
comment on function baas.parse_import_sessions(jsonb) is 'pgbaas-import: Parse Server''s live sessions as pgbaas sessions with their tokens, once per token, only for accounts a password sign-in would admit without a second factor; {imported, skipped}';

-- ==================================================================== sql/lints.sql
-- The eleven new public functions join the documented list.
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
       -- A security_invoker view (baas.files) reads its tables as the caller: their
       -- policies apply.
       and not (c.relkind = 'v' and exists (select from unnest(c.reloptions) o
                                              where lower(o) in ('security_invoker=true', 'security_invoker=on', 'security_invoker=1')))
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
           '_collection_by_name', '_claim', '_check_collection_name', '_document_json', '_parse_document_id',
           '_document_not_found', '_write_document', '_explain_write_miss', '_version_conflict',
           '_validate_document', '_normalize_acl', '_check_new_principals', '_acl_change', '_change_acl',
           '_owned_document', '_set_document_owner', '_may_create', '_may_manage', '_is_privileged',
           '_find_page', '_find_compiled', '_find_compiled_text', '_list_documents_text', '_count_compiled', '_btree_index_id', '_read_entries_ready', '_jfield',
           '_jsonb_lp_eq', '_jsonb_lp_lt', '_jsonb_lp_le', '_jsonb_lp_gt', '_jsonb_lp_ge',
           '_jsonb_lp_cmp', '_jsonb_lp_contains',
           -- files (sql/files.sql, sql/grants.sql)
           '_upload_append', '_upload_lease', '_upload_rewind', '_upload_release', '_file_json', '_file_row',
           '_explain_file_miss', '_blob_piece', '_file_max_bytes', '_raise_too_large',
           '_quota_left', '_upload_open', '_upload_insert', '_upload_seal', '_upload_done', '_may_attach_blob',
           '_blob_file_json', '_file_link_sign', '_check_file_name',
           '_normalize_content_type', '_file_type_allowed',
           -- multi-factor (sql/accounts.sql): the aal2 policies
           '_aal2_blocked', '_aal2_blocked_indexes',
           -- rpc (sql/rpc.sql)
           '_exposed_schemas', '_rpc_plan',
           -- (rpc above, protected tables below: one line each, kept apart for merges)
           -- tables (sql/tables.sql)
           -- tables over HTTP (package C)
           '_served_table', '_table_check', '_table_explain_miss', '_table_list_sql', '_table_get_sql',
           '_table_insert_sql', '_table_update_sql', '_table_delete_sql',
           '_table_exact_numbers',
           '_apply_operators', -- field operators (issue 18, package A)
           -- references (issue 18, package C)
           '_check_references', '_expand_tree', '_ref_key', '_ref_value', '_ref_profiles', '_max_expand_references', '_expand_level',
           '_lower_references', '_max_response_bytes', '_expand_checked',
           '_batch_max_operations', -- batches (issue 18, sql/batch.sql)
           '_protected_table_stub'])
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
           -- files
           'upload_create', 'upload_status', 'upload_finish', 'upload_abort', 'upload_file', 'file_get',
           'file_read', 'file_meta', 'update_file', 'delete_file', 'set_file_acl', 'get_file_acl', 'file_link',
           'thumbnail_get', 'thumbnail_put', 'cleanup_uploads', 'cleanup_blobs', 'unreferenced_files', 'file_usage', 'set_bucket',
           -- live change feeds
           'set_realtime', 'realtime_position', 'realtime_status', 'realtime_disable',
           -- email (sql/email.sql)
           'send_email', 'retry_email', 'purge_email_outbox',
           -- accounts: email flows (sql/accounts.sql)
           'request_verification', 'request_password_reset', 'request_magic_link', 'verify',
           'reset_password', 'request_email_change',
           -- multi-factor (sql/accounts.sql)
           'mfa_enroll_totp', 'mfa_verify_factor', 'mfa_challenge', 'mfa_unenroll', 'mfa_recovery_codes',
           'mfa_status', 'admin_reset_mfa', 'aal', 'require_aal2', 'set_collection_options',
           -- accounts: anonymous, sessions, suspension (sql/accounts.sql)
           'sign_in_anonymously', 'upgrade_account', 'purge_anonymous_users', 'list_sessions',
           'end_session', 'end_other_sessions', 'user_sessions', 'sign_out_user', 'suspend_user',
           'reactivate_user', 'is_anonymous',
           -- accounts: import (sql/accounts.sql)
           'import_users',
           -- oidc (sql/oidc.sql)
           'set_oidc_provider', 'drop_oidc_provider', 'oidc_providers', 'oidc_sign_in', 'link_identity',
           'unlink_identity', 'identities',
           -- social (sql/social.sql)
           'follow', 'unfollow', 'remove_follower', 'answer_follow_request', 'follow_requests',
           'followers', 'following', 'update_profile', 'get_profile', 'lookup_user',
           'find_users',
           -- rpc (sql/rpc.sql)
           'expose_schema', 'unexpose_schema', 'rpc', 'raise',
           -- (rpc above, protected tables below: one line each, kept apart for merges)
           -- tables (sql/tables.sql)
           'protect', 'unprotect', 'has_role', 'can_read', 'can_read_file',
           -- tables over HTTP (package C)
           'table_list', 'table_get', 'table_insert', 'table_update', 'table_delete',
           'create_webhook', 'drop_webhook', 'set_webhook_active', 'replay_webhook_event', 'replay_dead_webhook_events', 'purge_webhook_events', -- webhooks (sql/webhooks.sql)
           'batch', -- batches (issue 18, sql/batch.sql)
           -- DBA tools
           'as_user', 'purge_audit_log', 'security_lints',
           -- housekeeping (sql/housekeeping.sql)
           'housekeeping',
           -- references (sql/refs.sql)
           'expand', 'expand_page', 'referrers',
           -- the Parse door (sql/parse.sql)
           'parse_signup', 'parse_login', 'parse_me', 'parse_get_user', 'parse_update_user',
           'parse_save_installation', 'parse_installations', 'parse_config', 'parse_set_config',
           'parse_import_users', 'parse_login_anonymous', 'parse_upgrade_anonymous',
           'parse_roles', 'parse_save_role', 'parse_delete_role', 'parse_find_users', 'parse_delete_user',
           'parse_schemas', 'parse_create_class', 'parse_drop_class', 'parse_import_sessions'])
    union all
    -- 4c. The document policies and the index entries' read policy are made from one
    --     rule (sql/permissions.sql): each must still say what documents_read says
    --     (with its own ACL column), for the same roles and command; the read entries'
    --     policy keeps its one text (the caller's principals; equal to documents_read
    --     for entries kept in step, see 4c''); the service policies must agree; no other
    --     policy may widen any of these tables.
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
    select 'policy_drift', 'policy read_entries_read on baas.read_entries',
           case when p.oid is null then 'missing: sql/permissions.sql creates it'
                else format('not the read entries'' rule (principal = any (caller''s principals)): %s', pg_get_expr(p.polqual, p.polrelid)) end
      from (select 1) one
      left join pg_policy p on p.polname = 'read_entries_read' and p.polrelid = 'baas.read_entries'::regclass
      left join pg_policy r on r.polname = 'documents_read' and r.polrelid = 'baas.documents'::regclass
     where p.oid is null
        or pg_get_expr(p.polqual, p.polrelid) is distinct from '(principal = ANY (( SELECT baas.principals() AS principals)::text[]))'
        or p.polroles::oid[] is distinct from r.polroles::oid[]
        or p.polcmd::text <> 'r' or p.polpermissive is distinct from r.polpermissive
    union all
    -- 4c''. The read entries are kept by baas.documents' triggers: without them (dropped,
    --      or disabled) counts of whole collections would drift from the documents.
    select 'read_entries_unkept', format('trigger %I on baas.documents', v.tgname),
           case when t.oid is null then 'missing: sql/documents.sql creates it'
                else 'disabled (or replica-only): whole-collection counts no longer follow the documents' end
      from (values ('documents_read_entries'), ('documents_read_entries_update'), ('documents_truncate_entries')) v(tgname)
      left join pg_trigger t on t.tgrelid = 'baas.documents'::regclass and t.tgname = v.tgname
     where t.oid is null or t.tgenabled not in ('O', 'A')
    union all
    select 'policy_drift', format('policy %I on %s', p.polname, p.polrelid::regclass),
           'the service policy must be `to baas_service using (true)`, as documents_service'
      from pg_policy p
     where p.polname in ('documents_service', 'index_entries_service', 'read_entries_service')
       and p.polrelid in ('baas.documents'::regclass, 'baas.index_entries'::regclass, 'baas.read_entries'::regclass)
       and (p.polroles::oid[] is distinct from array['baas_service'::regrole::oid]
            or pg_get_expr(p.polqual, p.polrelid) is distinct from 'true')
    union all
    select 'policy_drift', format('policy %I on %s', p.polname, p.polrelid::regclass),
           'a policy sql/permissions.sql does not define: it may widen what callers see or do'
      from pg_policy p
     where (p.polrelid = 'baas.documents'::regclass
            and p.polname not in ('documents_service', 'documents_read', 'documents_create',
                                  'documents_update', 'documents_delete', 'documents_aal'))
        or (p.polrelid = 'baas.index_entries'::regclass
            and p.polname not in ('index_entries_service', 'index_entries_read', 'index_entries_aal'))
        or (p.polrelid = 'baas.read_entries'::regclass
            and p.polname not in ('read_entries_service', 'read_entries_read', 'read_entries_aal'))
    union all
    -- 4c'. The aal2 rule (sql/accounts.sql, multi-factor): restrictive, for the two API
    --      roles that obey ACLs, with exactly its text (a permissive or loosened copy
    --      would let aal1 callers into require_aal2 collections).
    select 'policy_drift', format('policy %I on %s', v.polname, v.rel),
           case when p.oid is null then 'missing: sql/accounts.sql creates it'
                else format('not the restrictive aal2 rule: %s', pg_get_expr(p.polqual, p.polrelid)) end
      from (values ('documents_aal', 'baas.documents', '*',
                    '(collection_id <> ALL (( SELECT baas._aal2_blocked() AS _aal2_blocked)::integer[]))'),
                   ('index_entries_aal', 'baas.index_entries', 'r',
                    '(index_id <> ALL (( SELECT baas._aal2_blocked_indexes() AS _aal2_blocked_indexes)::integer[]))'),
                   ('read_entries_aal', 'baas.read_entries', 'r',
                    '(collection_id <> ALL (( SELECT baas._aal2_blocked() AS _aal2_blocked)::integer[]))')) v(polname, rel, cmd, qual)
      left join pg_policy p on p.polname = v.polname and p.polrelid = v.rel::regclass
     where p.oid is null or p.polpermissive or p.polcmd::text <> v.cmd
        or pg_get_expr(p.polqual, p.polrelid) is distinct from v.qual
        or (v.cmd = '*' and pg_get_expr(p.polwithcheck, p.polrelid) is distinct from v.qual)
        or (v.cmd <> '*' and p.polwithcheck is not null)
        or (select array_agg(x order by x) from unnest(p.polroles::oid[]) x)
           is distinct from (select array_agg(x order by x)
                               from unnest(array['baas_anon'::regrole::oid, 'baas_user'::regrole::oid]) x)
    union all
    -- 4d. Files (sql/permissions.sql, "files"): a chunk, a blob and a thumbnail are
    --     readable exactly when a readable document holds the blob. Each read policy
    --     must keep that text, for baas_anon and baas_user; the service policies are
    --     `using (true)` for baas_service; no other policy may widen these tables.
    select 'file_policy_drift', format('policy %I on %s', v.polname, v.rel),
           case when p.oid is null then 'missing: sql/permissions.sql creates it'
                else format('not the one file rule: %s', pg_get_expr(p.polqual, p.polrelid)) end
      from (values ('file_chunks_read', 'baas._file_chunks', '_file_chunks.blob_id', false),
                   ('blobs_read', 'baas._blobs', '_blobs.id', false),
                   ('thumbnails_read', 'baas._thumbnails', '_thumbnails.source_blob', false),
                   ('file_chunks_service', 'baas._file_chunks', null, true),
                   ('blobs_service', 'baas._blobs', null, true),
                   ('thumbnails_service', 'baas._thumbnails', null, true)) v(polname, rel, col, service)
      left join pg_policy p on p.polname = v.polname and p.polrelid = v.rel::regclass
     where p.oid is null
        or p.polcmd::text <> 'r' or not p.polpermissive or p.polwithcheck is not null
        or (v.service and (pg_get_expr(p.polqual, p.polrelid) is distinct from 'true'
                           or p.polroles::oid[] is distinct from array['baas_service'::regrole::oid]))
        or (not v.service and (
               pg_get_expr(p.polqual, p.polrelid) is distinct from
                   format(E'(EXISTS ( SELECT\n   FROM baas.documents d\n  WHERE (d.blob_id = %s)))', v.col)
               or (select array_agg(x order by x) from unnest(p.polroles::oid[]) x)
                  is distinct from (select array_agg(x order by x)
                                      from unnest(array['baas_anon'::regrole::oid, 'baas_user'::regrole::oid]) x)))
    union all
    select 'file_policy_drift', format('policy %I on %s', p.polname, p.polrelid::regclass),
           'a policy sql/permissions.sql does not define: it may widen who reads file bytes'
      from pg_policy p
     where p.polrelid in ('baas._file_chunks'::regclass, 'baas._blobs'::regclass, 'baas._thumbnails'::regclass,
                          'baas._uploads'::regclass, 'baas._file_refs'::regclass, 'baas._blob_trash'::regclass)
       and p.polname not in ('file_chunks_read', 'file_chunks_service', 'blobs_read', 'blobs_service',
                             'thumbnails_read', 'thumbnails_service')
    union all
    -- 4e. The file tables are written by the extension's SECURITY DEFINER functions
    --     only: no API role may write them (nor read the sessions and references).
    select 'file_table_grant', format('%s to %s', t.rel, r.rolname),
           format('%s may %s it: only SECURITY DEFINER functions may', r.rolname, lower(x.priv))
      from (values ('baas._blobs'), ('baas._file_chunks'), ('baas._uploads'), ('baas._thumbnails'),
                   ('baas._file_refs'), ('baas._blob_trash')) t(rel)
      cross join (values ('baas_anon'), ('baas_user'), ('baas_service')) r(rolname)
      cross join (values ('INSERT'), ('UPDATE'), ('DELETE'), ('TRUNCATE'), ('SELECT')) x(priv)
     where (x.priv in ('INSERT', 'UPDATE', 'SELECT')
            and has_any_column_privilege(r.rolname, t.rel::regclass, x.priv)
            and (x.priv <> 'SELECT' or t.rel in ('baas._uploads', 'baas._file_refs', 'baas._blob_trash')))
        or (x.priv in ('DELETE', 'TRUNCATE') and has_table_privilege(r.rolname, t.rel::regclass, x.priv))
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
    union all
    -- 6. The RPC door (sql/rpc.sql): functions served over HTTP.
    select * from baas._rpc_lints()
    union all
    -- 7. Protected tables (sql/tables.sql): policies made from their definitions.
    select * from baas._table_lints()
$$;

-- ================================================================== sql/grants.sql
revoke execute on function
    baas._parse_password_rules(text, text),
    baas.parse_login_anonymous(text, text),
    baas.parse_upgrade_anonymous(text, text, text, jsonb),
    baas.parse_roles(),
    baas.parse_save_role(text, boolean, uuid[], uuid[], text[], text[]),
    baas.parse_delete_role(text),
    baas.parse_find_users(uuid[], text[], text[], integer, integer, boolean),
    baas.parse_delete_user(uuid),
    baas._parse_schema_json(baas.collections),
    baas._parse_class_name(text),
    baas.parse_schemas(text),
    baas.parse_create_class(text, text[]),
    baas.parse_drop_class(text),
    baas.parse_import_sessions(jsonb)
  from public;
grant execute on function baas.parse_login_anonymous(text, text) to baas_anon, baas_user, baas_service;
grant execute on function baas.parse_upgrade_anonymous(text, text, text, jsonb) to baas_user;
grant execute on function
    baas.parse_roles(),
    baas.parse_save_role(text, boolean, uuid[], uuid[], text[], text[]),
    baas.parse_delete_role(text),
    baas.parse_find_users(uuid[], text[], text[], integer, integer, boolean),
    baas.parse_delete_user(uuid),
    baas.parse_schemas(text),
    baas.parse_create_class(text, text[]),
    baas.parse_drop_class(text)
  to baas_anon, baas_user, baas_service;

-- Tell every proxy that the extension changed (see pgbaas--0.2.0--0.3.0.sql).
select pg_catalog.pg_notify('baas_extension', '0.14.0');
