-- pgbaas social graph (issue 16, package D; docs/social.md): users follow users, a
-- followee's `followers:<id>` ACL principal reaches those who follow it (accepted), and
-- each account says who may see its graph and whether a follow needs its approval.
--
-- Permissions stay where they are decided: baas.principals() (replaced below, the text
-- of sql/permissions.sql plus the followers) gives a caller `followers:<x>` for every
-- accepted followee x that some ACL names; the row-level policies of
-- sql/permissions.sql are unchanged. The live feed's hub (proxy/src/realtime) applies
-- the same rule from `follow` events (sql/realtime.sql's capture, trigger below).

------------------------------------------------------------------------ columns
-- username: an optional unique handle (lower case, 3..30 of a-z 0-9 _ .), shown with
-- the profile and found by baas.lookup_user. The profile is three JSON objects, shown by
-- tier (baas._visible_profile): profile_public to anyone, profile_users to signed-in
-- full accounts, profile_followers to accepted followers (and the account itself);
-- users.data stays the account's own. findable: who may find the account by exact email
-- or username (self: nobody else, followers, users).
-- Who may list an account's followers and followees (baas._graph_visible): only the
-- account (self), its accepted followers, any signed-in full account (users), anyone
-- (public). follow_approval: a new follow stays pending until the account accepts it.
alter table baas.users
    add column username text unique check (username ~ '^[a-z0-9_][a-z0-9_.]{2,29}$'),
    add column profile_public jsonb not null default '{}' check (jsonb_typeof(profile_public) = 'object'),
    add column profile_users jsonb not null default '{}' check (jsonb_typeof(profile_users) = 'object'),
    add column profile_followers jsonb not null default '{}' check (jsonb_typeof(profile_followers) = 'object'),
    add column findable text not null default 'users' check (findable in ('self', 'followers', 'users')),
    add column graph_visibility text not null default 'self'
        check (graph_visibility in ('self', 'followers', 'users', 'public')),
    add column follow_approval boolean not null default false;

-- How many accounts one account may follow (pending included). principals() grows by
-- one entry per followee named in some ACL, and a policy's `acl && principals` costs
-- |acl|·|principals| per row: the bound keeps that cost bounded.
alter table baas.settings add column max_following integer not null default 5000
    check (max_following between 1 and 1000000);

------------------------------------------------------------------------ tables
-- follower follows followee; `pending` until the followee accepts (follow_approval).
create table baas.follows (
    follower uuid not null references baas.users (id) on delete cascade,
    followee uuid not null references baas.users (id) on delete cascade,
    status text not null check (status in ('pending', 'accepted')),
    created_at timestamptz not null default now(),
    accepted_at timestamptz,
    primary key (follower, followee),
    check (follower <> followee)
);
create index follows_followee_idx on baas.follows (followee, status, created_at, follower);
create index follows_following_idx on baas.follows (follower, status, created_at, followee);
revoke all on baas.follows from public;
alter table baas.follows enable row level security;
select pg_catalog.pg_extension_config_dump('baas.follows', '');

-- Accounts whose `followers:<id>` some ACL names (or named once): principals() adds
-- followers:<x> only for followees listed here, so following accounts nobody shares
-- with through followers costs nothing per statement. Insert-only, written in the
-- writer's transaction by the triggers below: a superset of what ACLs name.
create table baas._follow_audiences (
    user_id uuid primary key references baas.users (id) on delete cascade
);
revoke all on baas._follow_audiences from public;
alter table baas._follow_audiences enable row level security;
select pg_catalog.pg_extension_config_dump('baas._follow_audiences', '');

-- Followers an account removed (baas.remove_follower) or whose request it declined: a
-- new follow by one of them waits for the account's approval (pending), whatever its
-- follow_approval, until the account accepts it (baas.answer_follow_request).
create table baas._follow_removals (
    owner uuid not null references baas.users (id) on delete cascade,
    follower uuid not null references baas.users (id) on delete cascade,
    primary key (owner, follower)
);
revoke all on baas._follow_removals from public;
alter table baas._follow_removals enable row level security;
select pg_catalog.pg_extension_config_dump('baas._follow_removals', '');

------------------------------------------------------------------------ audiences
-- Note the accounts of the `followers:<uuid>` principals among `principals` (ACL
-- lists). Malformed entries and unknown accounts are passed over: ACLs written through
-- the API are checked (normalize_acl, _check_new_principals) before they get here.
create function baas._note_audiences(principals text[]) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    insert into baas._follow_audiences (user_id)
    select distinct u.id
      from unnest(principals) p
      join baas.users u on p ~ '^followers:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                       and u.id = substr(p, 11)::uuid
    on conflict do nothing;
end
$$;

-- A document (or file) written with a followers: principal in an ACL, or a
-- collection whose `create` list names one. Not while a dump loads: the audiences
-- table is dumped too.
create function baas._acl_audiences() returns trigger
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if baas._restoring() then
        return null;
    end if;
    if tg_table_name = 'collections' then
        perform baas._note_audiences(new.create_acl);
    else
        perform baas._note_audiences(new.acl_read || new.acl_update || new.acl_delete);
    end if;
    return null;
end
$$;
create trigger documents_audiences after insert or update of acl_read, acl_update, acl_delete on baas.documents
    for each row
    when (pg_catalog.array_to_string(new.acl_read || new.acl_update || new.acl_delete, ' ') like '%followers:%')
    execute function baas._acl_audiences();
create trigger collections_audiences after insert or update of create_acl on baas.collections
    for each row
    when (pg_catalog.array_to_string(new.create_acl, ' ') like '%followers:%')
    execute function baas._acl_audiences();

------------------------------------------------------------------------ principals
-- sql/permissions.sql's baas.principals(), plus `followers:<x>` for each account x the
-- caller follows (accepted) that some ACL names (baas._follow_audiences). One index
-- probe when the caller follows nobody.
create or replace function baas.principals() returns text[]
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := baas.uid();
    v_base text[];
    v_followers text[];
begin
    if v_uid is null then
        return array['public'];
    end if;
    v_base := array['public', 'authenticated',
                    case when baas.is_anonymous() then 'anonymous' else 'registered' end,
                    'user:' || v_uid::text];
    if exists (select from baas.role_members m where m.user_id = v_uid) then
        v_base := v_base || array(select 'role:' || r from unnest(baas.roles()) r);
    end if;
    v_followers := array(select 'followers:' || f.followee::text
                           from baas.follows f join baas._follow_audiences a on a.user_id = f.followee
                          where f.follower = v_uid and f.status = 'accepted'
                          order by f.followee);
    if cardinality(v_followers) > 0 then
        v_base := v_base || v_followers;
    end if;
    return v_base;
end
$$;
comment on function baas.principals() is 'ACL principals of the current caller';

-- sql/permissions.sql's check, plus `followers:<uuid>`: the account must exist.
create or replace function baas._check_new_principals(acl jsonb, existing text[] default '{}') returns void
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    p text;
begin
    for p in select distinct x from jsonb_each(acl) e, jsonb_array_elements_text(
                 case when jsonb_typeof(e.value) = 'array' then e.value else '[]' end) x
              where not x = any(coalesce(existing, '{}')) loop
        if p like 'user:%' and not (p ~ '^user:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                                    and exists (select from baas.users u where u.id = substr(p, 6)::uuid)) then
            raise exception using errcode = '22023', detail = 'unknown_principal',
                message = format('unknown principal %s: no such user', p);
        elsif p like 'followers:%' and not (p ~ '^followers:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                                            and exists (select from baas.users u where u.id = substr(p, 11)::uuid)) then
            raise exception using errcode = '22023', detail = 'unknown_principal',
                message = format('unknown principal %s: no such user', p);
        elsif p like 'role:%' and not exists (select from baas.roles r where r.name = substr(p, 6)) then
            raise exception using errcode = '22023', detail = 'unknown_principal',
                message = format('unknown principal %s: no such role', p);
        end if;
    end loop;
end
$$;

------------------------------------------------------------------------ tiers
-- May `viewer` (a user id, NULL: no token) list the followers and followees of `u`?
-- By u's graph_visibility: self, followers (accepted), users (any full account), public.
-- Anonymous and suspended accounts show nothing. The viewer's own kind comes from the
-- account row, so baas.as_user answers as HTTP does.
create function baas._graph_visible(u baas.users, viewer uuid) returns boolean
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if u.id is null or u.is_anonymous or u.suspended_at is not null then
        return false;
    end if;
    if u.graph_visibility = 'public' or viewer = u.id then
        return true;
    end if;
    if viewer is null then
        return false;
    end if;
    if u.graph_visibility = 'users' then
        return exists (select from baas.users v where v.id = viewer and not v.is_anonymous);
    end if;
    return u.graph_visibility = 'followers'
       and exists (select from baas.follows f where f.follower = viewer and f.followee = u.id and f.status = 'accepted');
end
$$;

-- Is `viewer` a signed-in full account (not anonymous)?
create function baas._registered(viewer uuid) returns boolean
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$ select viewer is not null and exists (select from baas.users v where v.id = viewer and not v.is_anonymous) $$;

-- Does `viewer` follow `u` (accepted), or is it `u`?
create function baas._follows_or_is(u uuid, viewer uuid) returns boolean
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$ select viewer is not null and (viewer = u or exists (
          select from baas.follows f where f.follower = viewer and f.followee = u and f.status = 'accepted')) $$;

-- The part of u's profile `viewer` sees, tiers merged public < users < followers (a
-- key of a higher tier wins): '{}' for anonymous and suspended accounts.
create function baas._visible_profile(u baas.users, viewer uuid) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v jsonb;
begin
    if u.id is null or u.is_anonymous or u.suspended_at is not null then
        return '{}';
    end if;
    v := u.profile_public;
    if u.profile_users <> '{}' and baas._registered(viewer) then
        v := v || u.profile_users;
    end if;
    if u.profile_followers <> '{}' and baas._follows_or_is(u.id, viewer) then
        v := v || u.profile_followers;
    end if;
    return v;
end
$$;

-- May `viewer` find u by its exact email or username (baas.lookup_user)?
create function baas._findable(u baas.users, viewer uuid) returns boolean
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if u.id is null or u.is_anonymous or u.suspended_at is not null or viewer is null then
        return false;
    end if;
    return viewer = u.id
        or (u.findable = 'users' and baas._registered(viewer))
        or (u.findable = 'followers' and baas._follows_or_is(u.id, viewer));
end
$$;

------------------------------------------------------------------------ following
-- The signed-in caller, who must hold a full account (anonymous accounts neither
-- follow nor are followed).
create function baas._social_caller(what text) returns baas.users
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    me baas.users;
begin
    perform baas._require_session();
    select * into me from baas.users u where u.id = baas.uid();
    if not found then
        perform baas._raise('28000', 'invalid_token', 'the account of this token no longer exists');
    end if;
    if me.is_anonymous then
        perform baas._raise('42501', 'anonymous_not_allowed',
            format('an anonymous account cannot %s; sign up first', what));
    end if;
    return me;
end
$$;

-- Follow an account: {status: "accepted"}, or "pending" when it approves its followers
-- itself. Following again answers the current status and changes nothing.
create function baas.follow(user_id uuid) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    me baas.users := baas._social_caller('follow anyone');
    t baas.users;
    v_status text;
    v_max integer;
begin
    if user_id is null then
        perform baas._raise('22023', 'invalid_request', 'a user id is required');
    end if;
    if user_id = me.id then
        perform baas._raise('22023', 'cannot_follow_self', 'an account cannot follow itself');
    end if;
    -- For share: a concurrent update_profile (follow_approval) waits, or is seen.
    select * into t from baas.users u where u.id = user_id for share;
    if not found or t.is_anonymous or t.suspended_at is not null then
        perform baas._raise('P0002', 'user_not_found', 'no such user');
    end if;
    -- One follow at a time per follower: the limit's count holds.
    perform pg_advisory_xact_lock(hashtextextended('baas.follow:' || me.id::text, 0));
    select f.status into v_status from baas.follows f where f.follower = me.id and f.followee = user_id;
    if found then
        return jsonb_build_object('status', v_status);
    end if;
    select s.max_following into v_max from baas.settings s;
    if (select count(*) from baas.follows f where f.follower = me.id) >= v_max then
        perform baas._raise('54000', 'following_limit',
            format('an account may follow at most %s accounts (setting max_following)', v_max));
    end if;
    -- A follower the account removed (or declined) asks again, approval or not.
    v_status := case when t.follow_approval
                       or exists (select from baas._follow_removals r where r.owner = user_id and r.follower = me.id)
                     then 'pending' else 'accepted' end;
    insert into baas.follows (follower, followee, status, accepted_at)
    values (me.id, user_id, v_status, case when v_status = 'accepted' then now() end);
    return jsonb_build_object('status', v_status);
end
$$;
comment on function baas.follow(uuid) is
    'Follow an account: {status: accepted|pending}; idempotent';

-- Stop following an account (or withdraw a pending request).
create function baas.unfollow(user_id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    me baas.users := baas._social_caller('follow anyone');
begin
    delete from baas.follows f where f.follower = me.id and f.followee = user_id;
    if not found then
        perform baas._raise('P0002', 'follow_not_found', 'you do not follow this account');
    end if;
end
$$;
comment on function baas.unfollow(uuid) is 'Stop following an account, or withdraw a follow request';

-- The caller stops being followed by `user_id` (accepted or pending).
create function baas.remove_follower(user_id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    me baas.users := baas._social_caller('have followers');
begin
    delete from baas.follows f where f.follower = user_id and f.followee = me.id;
    if not found then
        perform baas._raise('P0002', 'follow_not_found', 'this account does not follow you');
    end if;
    -- The removal sticks: a new follow by this account waits for approval.
    insert into baas._follow_removals (owner, follower) values (me.id, user_id) on conflict do nothing;
end
$$;
comment on function baas.remove_follower(uuid) is 'Remove one of your followers (or decline its request); its next follow waits for your approval';

-- Accept or decline a pending follow request of `user_id`.
create function baas.answer_follow_request(user_id uuid, accept boolean) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    me baas.users := baas._social_caller('have followers');
begin
    if accept then
        update baas.follows f set status = 'accepted', accepted_at = now()
         where f.follower = user_id and f.followee = me.id and f.status = 'pending';
    else
        delete from baas.follows f where f.follower = user_id and f.followee = me.id and f.status = 'pending';
    end if;
    if not found then
        perform baas._raise('P0002', 'follow_not_found', 'this account has no pending request to follow you');
    end if;
    -- Accepting forgives an earlier removal; declining is one (the next follow waits).
    if accept then
        delete from baas._follow_removals r where r.owner = me.id and r.follower = user_id;
    else
        insert into baas._follow_removals (owner, follower) values (me.id, user_id) on conflict do nothing;
    end if;
end
$$;
comment on function baas.answer_follow_request(uuid, boolean) is 'Accept (true) or decline (false) a follow request';

-- The caller's pending follow requests, oldest first.
create function baas.follow_requests() returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    me baas.users := baas._social_caller('have followers');
begin
    return jsonb_build_object('items', coalesce((
        select jsonb_agg(jsonb_build_object('id', f.follower, 'username', u.username, 'created_at', f.created_at) order by f.created_at, f.follower)
          from baas.follows f join baas.users u on u.id = f.follower
         where f.followee = me.id and f.status = 'pending' and u.suspended_at is null), '[]'));
end
$$;
comment on function baas.follow_requests() is 'Your pending follow requests: {items: [{id, username, created_at}]}';

-- One page of an account's accepted followers (`followers`) or followees, by the time
-- the follow began, then id; `after` is the last id of the previous page.
create function baas._follow_page(user_id uuid, followers boolean, lim integer, after uuid) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    t baas.users;
    v_at timestamptz;
    v_items jsonb;
    v_n integer;
begin
    select * into t from baas.users u where u.id = user_id;
    if not found or not baas._graph_visible(t, baas.uid()) then
        perform baas._raise('P0002', 'user_not_found', 'no such user, or its followers and followees are not visible to you');
    end if;
    if lim is null or lim not between 1 and 1000 then
        perform baas._raise('22023', 'invalid_query', 'limit must be a whole number from 1 to 1000');
    end if;
    if after is not null then
        select f.created_at into v_at from baas.follows f
         where f.status = 'accepted'
           and (case when followers then f.followee = user_id and f.follower = after
                     else f.follower = user_id and f.followee = after end);
        if not found then
            perform baas._raise('22023', 'invalid_query', 'after must be the id of an account on the previous page');
        end if;
    end if;
    select coalesce(jsonb_agg(x.item order by x.at, x.id), '[]'), count(*) into v_items, v_n from (
        select case when followers then f.follower else f.followee end as id, f.created_at as at,
               jsonb_build_object('id', case when followers then f.follower else f.followee end,
                                  'username', o.username,
                                  'since', coalesce(f.accepted_at, f.created_at)) as item
          from baas.follows f
          join baas.users o on o.id = case when followers then f.follower else f.followee end
         where f.status = 'accepted' and o.suspended_at is null
           and (case when followers then f.followee = user_id else f.follower = user_id end)
           and (v_at is null or (f.created_at, case when followers then f.follower else f.followee end) > (v_at, after))
         order by f.created_at, 1
         limit lim + 1) x;
    if v_n > lim then
        v_items := v_items - lim;
        return jsonb_build_object('items', v_items, 'next', v_items -> (lim - 1) -> 'id');
    end if;
    return jsonb_build_object('items', v_items);
end
$$;

create function baas.followers(user_id uuid, "limit" integer default 50, after uuid default null) returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
return baas._follow_page(user_id, true, "limit", after);
comment on function baas.followers(uuid, integer, uuid) is
    'An account''s accepted followers, if its graph_visibility lets you see them: {items: [{id, username, since}], next?}';

create function baas.following(user_id uuid, "limit" integer default 50, after uuid default null) returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
return baas._follow_page(user_id, false, "limit", after);
comment on function baas.following(uuid, integer, uuid) is
    'The accounts an account follows (accepted), if its graph_visibility lets you see them: {items: [{id, username, since}], next?}';

------------------------------------------------------------------------ profile
-- The caller's profile and social settings; each argument left NULL is kept. profile is
-- {public?, users?, followers?}, each an object merged into its tier as a JSON merge
-- patch (RFC 7396: null removes a key). Returns {user}.
create function baas.update_profile(username text default null, profile jsonb default null,
                                    findable text default null, graph_visibility text default null,
                                    follow_approval boolean default null, language text default null)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    me baas.users := baas._social_caller('have a profile');
    v_username text := lower(update_profile.username);
    v_profile jsonb := update_profile.profile;
    v_findable text := update_profile.findable;
    v_graph text := update_profile.graph_visibility;
    v_approval boolean := update_profile.follow_approval;
    v_language text := lower(update_profile.language);
    k text;
    v_pub jsonb := me.profile_public;
    v_usr jsonb := me.profile_users;
    v_fol jsonb := me.profile_followers;
begin
    if v_username is not null and v_username !~ '^[a-z0-9_][a-z0-9_.]{2,29}$' then
        perform baas._raise('22023', 'invalid_username',
            'a username is 3 to 30 characters: letters, digits, _ and . (not first)');
    end if;
    if v_findable is not null and v_findable not in ('self', 'followers', 'users') then
        perform baas._raise('22023', 'invalid_request', 'findable must be self, followers or users');
    end if;
    if v_graph is not null and v_graph not in ('self', 'followers', 'users', 'public') then
        perform baas._raise('22023', 'invalid_request', 'graph_visibility must be self, followers, users or public');
    end if;
    if v_language is not null and v_language !~ '^[a-z]{2,3}(-[a-z0-9]{2,8})*$' then
        perform baas._raise('22023', 'invalid_request', 'language must be a language tag such as en or pt-br');
    end if;
    if v_profile is not null then
        if jsonb_typeof(v_profile) <> 'object' then
            perform baas._raise('22023', 'invalid_request', 'profile must be an object {public?, users?, followers?}');
        end if;
        for k in select jsonb_object_keys(v_profile) loop
            if k not in ('public', 'users', 'followers') then
                perform baas._raise('22023', 'invalid_request',
                    format('profile has unknown tier %s; tiers are public, users, followers', to_jsonb(k)));
            end if;
            if jsonb_typeof(v_profile -> k) <> 'object' then
                perform baas._raise('22023', 'invalid_request', format('profile.%s must be an object', k));
            end if;
        end loop;
        v_pub := baas.merge_patch(v_pub, coalesce(v_profile -> 'public', '{}'));
        v_usr := baas.merge_patch(v_usr, coalesce(v_profile -> 'users', '{}'));
        v_fol := baas.merge_patch(v_fol, coalesce(v_profile -> 'followers', '{}'));
        if pg_column_size(v_pub) + pg_column_size(v_usr) + pg_column_size(v_fol) > 65536 then
            perform baas._raise('54000', 'profile_too_large', 'a profile holds at most 64 KiB');
        end if;
    end if;
    if v_username is not null and exists (select from baas.users u where u.username = v_username and u.id <> me.id) then
        perform baas._raise('23505', 'username_taken', 'this username is taken');
    end if;
    begin
        update baas.users u
           set username = coalesce(v_username, u.username),
               profile_public = v_pub, profile_users = v_usr, profile_followers = v_fol,
               findable = coalesce(v_findable, u.findable),
               graph_visibility = coalesce(v_graph, u.graph_visibility),
               follow_approval = coalesce(v_approval, u.follow_approval),
               language = coalesce(v_language, u.language),
               updated_at = now()
         where u.id = me.id
        returning * into me;
    exception when unique_violation then
        perform baas._raise('23505', 'username_taken', 'this username is taken');
    end;
    -- Turning approval off accepts the requests waiting for it, but not those of
    -- followers the account removed or declined (baas._follow_removals).
    if v_approval is false then
        update baas.follows f set status = 'accepted', accepted_at = now()
         where f.followee = me.id and f.status = 'pending'
           and not exists (select from baas._follow_removals r where r.owner = me.id and r.follower = f.follower);
    end if;
    return jsonb_build_object('user', baas._user_json(me));
end
$$;
comment on function baas.update_profile(text, jsonb, text, text, boolean, text) is
    'Change your username, profile tiers, findable, graph_visibility, follow_approval, language; returns {user}';

-- Does an account show itself to the viewer (baas.get_profile answers it, rather than
-- user_not_found)? Given its profile as the viewer sees it and whether its graph is
-- visible to the viewer; shared with references' expand (sql/refs.sql).
create function baas._profile_shown(t baas.users, visible_profile jsonb, graph_visible boolean, viewer uuid) returns boolean
language sql immutable
as $$
    select t.id is not null and not t.is_anonymous and t.suspended_at is null
       and (graph_visible or visible_profile <> '{}' or coalesce(viewer = t.id, false))
$$;

-- One account's profile as the caller may see it: {id, username, profile} and, when its
-- graph_visibility allows, follower and followee counts. 404 user_not_found for an
-- unknown, anonymous or suspended account, and for one that shows the caller nothing
-- (an empty profile for this viewer and a graph it may not see), unless the caller is
-- the account itself.
create function baas.get_profile(id uuid) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
    v_viewer uuid := baas.uid();
    t baas.users;
    v_profile jsonb;
    v_graph boolean;
    v jsonb;
begin
    select * into t from baas.users u where u.id = id;
    v_profile := baas._visible_profile(t, v_viewer);
    v_graph := baas._graph_visible(t, v_viewer);
    if not baas._profile_shown(t, v_profile, v_graph, v_viewer) then
        perform baas._raise('P0002', 'user_not_found', 'no such user');
    end if;
    v := jsonb_build_object('id', t.id, 'username', t.username, 'profile', v_profile);
    if v_graph then
        v := v || jsonb_build_object(
            'followers', (select count(*) from baas.follows f join baas.users o on o.id = f.follower
                           where f.followee = t.id and f.status = 'accepted' and o.suspended_at is null),
            'following', (select count(*) from baas.follows f join baas.users o on o.id = f.followee
                           where f.follower = t.id and f.status = 'accepted' and o.suspended_at is null));
    end if;
    return v;
end
$$;
comment on function baas.get_profile(uuid) is
    'An account''s profile as you may see it: {id, username, profile, followers?, following?}';

-- Find an account by its exact email or username, if its `findable` lets the caller:
-- {id, username, profile}. By email only an account that verified its address (else
-- anyone could sign up with someone's address and be found as them). Unknown,
-- unverified and unfindable answer the same 404 after the same work (one probe).
-- Signed-in full accounts only; audited [user.lookup].
create function baas.lookup_user(email text default null, username text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    me baas.users := baas._social_caller('look accounts up');
    v_email text := lookup_user.email;
    v_username text := lookup_user.username;
    t baas.users;
begin
    if (v_email is null) = (v_username is null) then
        perform baas._raise('22023', 'invalid_request', 'give exactly one of email and username');
    end if;
    if v_email is not null then
        select * into t from baas.users u where u.email = baas._email_key(v_email) and u.email_verified_at is not null;
    else
        select * into t from baas.users u where u.username = lower(v_username);
    end if;
    perform baas._audit('user.lookup', me.id, details => jsonb_build_object(
        'by', case when v_email is not null then 'email' else 'username' end, 'found', baas._findable(t, me.id)));
    if not baas._findable(t, me.id) then
        perform baas._raise('P0002', 'user_not_found', 'no account can be found by this address or name');
    end if;
    return jsonb_build_object('id', t.id, 'username', t.username, 'profile', baas._visible_profile(t, me.id));
end
$$;
comment on function baas.lookup_user(text, text) is
    'Find an account by exact email or username (if its findable allows): {id, username, profile}';

-- The directory: accounts whose profile the caller may see some of, filtered and
-- ordered with the query language over the visible profile (`data`), `id` and
-- `created_at` (baas._compile_query, as baas.find): a field the caller may not see is
-- not there to match. Not `updated_at` (it would tell when hidden data changed: order
-- by it is refused, and it is null inside). offset at most 10000. {items: [{id, username, profile}], next?}; `next` (the last id)
-- when the page is full. Accounts showing the caller nothing are not listed.
create function baas.find_users(filter jsonb default '{}', "order" text default null,
                                "limit" integer default 50, "offset" integer default 0,
                                after uuid default null, fields text[] default null)
returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_viewer uuid := baas.uid();
    v_from constant text := '(select u.id, u.created_at, null::timestamptz as updated_at, u.username, baas._visible_profile(u, $2) as data '
                            'from baas.users u where not u.is_anonymous and u.suspended_at is null) d where d.data <> ''{}''';
    q jsonb;
    v_cursor jsonb;
    v_items jsonb;
    v_n integer;
begin
    if "limit" is null or "limit" not between 0 and 1000 then
        perform baas._raise('22023', 'invalid_query', 'limit must be between 0 and 1000');
    end if;
    if "offset" is null or "offset" not between 0 and 10000 then
        perform baas._raise('22023', 'invalid_query', 'offset must be between 0 and 10000; page on with after');
    end if;
    if fields is not null and exists (select from unnest(fields) f where f is null or f = '') then
        perform baas._raise('22023', 'invalid_query', 'fields must be field names');
    end if;
    if exists (select from unnest(string_to_array("order", ',')) k where btrim(k) ~ '^[-+]?updated_at$') then
        perform baas._raise('22023', 'invalid_query', 'the directory cannot be ordered by updated_at');
    end if;
    q := baas._compile_query(coalesce(filter, '{}'), "order", null, false);
    if after is not null then
        execute format('select %s from %s and d.id = $3', q ->> 'cursor', v_from)
           into v_cursor using q -> 'params', v_viewer, after;
        if v_cursor is null then
            perform baas._raise('22023', 'invalid_query', 'after: no such account in this directory');
        end if;
        q := baas._compile_query(coalesce(filter, '{}'), "order", v_cursor, false);
    end if;
    execute format(
        'select coalesce(jsonb_agg(x.item order by x.n), ''[]''), count(*) from ('
        '  select row_number() over (order by %s) as n, jsonb_build_object(''id'', d.id, ''username'', d.username, ''profile'', '
        '         case when $3::text[] is null then d.data else (select coalesce(jsonb_object_agg(e.key, e.value), ''{}'') '
        '              from jsonb_each(d.data) e where e.key = any($3)) end) as item'
        '    from %s and %s order by %s limit $4 offset $5) x',
        q ->> 'order', v_from, q ->> 'where', q ->> 'order')
      into v_items, v_n using q -> 'params', v_viewer, fields, "limit", "offset";
    if "limit" > 0 and v_n = "limit" then
        return jsonb_build_object('items', v_items, 'next', v_items -> ("limit" - 1) -> 'id');
    end if;
    return jsonb_build_object('items', v_items);
end
$$;
comment on function baas.find_users(jsonb, text, integer, integer, uuid, text[]) is
    'The directory: accounts by what of their profile you may see, with the query language: {items: [{id, username, profile}], next?}';

-- The user as the API shows it: sql/accounts.sql's, with the social settings.
create or replace function baas._user_json(u baas.users) returns jsonb
language sql stable parallel safe
as $$
    select pg_catalog.jsonb_build_object(
        'id', u.id, 'email', u.email, 'data', u.data,
        'is_anonymous', u.is_anonymous, 'email_verified', u.email_verified_at is not null,
        'username', u.username,
        'profile', pg_catalog.jsonb_build_object('public', u.profile_public, 'users', u.profile_users,
                                                 'followers', u.profile_followers),
        'findable', u.findable, 'graph_visibility', u.graph_visibility, 'follow_approval', u.follow_approval,
        'created_at', u.created_at, 'updated_at', u.updated_at)
$$;

------------------------------------------------------------------------ realtime
-- Follow events for the live feed's hub (proxy/src/realtime): a follow that becomes or
-- stops being accepted changes the follower's principals (followers:<followee>).
alter table baas.realtime_events drop constraint realtime_events_kind_check;
alter table baas.realtime_events add constraint realtime_events_kind_check
    check (kind in ('doc', 'member', 'nest', 'collection', 'reset', 'follow'));

create function baas._realtime_follow() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_prefix text;
    v_was boolean := tg_op in ('UPDATE', 'DELETE') and old.status = 'accepted';
    v_is boolean := tg_op in ('INSERT', 'UPDATE') and new.status = 'accepted';
begin
    if current_setting('wal_level') <> 'logical'
       or (current_setting('row_security') = 'off' and baas._restoring())
       or v_was = v_is then
        return null;
    end if;
    select p.prefix into v_prefix from baas._realtime_secret p;
    perform pg_logical_emit_message(true, v_prefix, jsonb_build_object('kind', 'follow', 'collection', null, 'body',
        jsonb_build_object('follower', case when v_is then new.follower else old.follower end,
                           'followee', case when v_is then new.followee else old.followee end,
                           'op', case when v_is then 'add' else 'remove' end))::text);
    return null;
end
$$;
create trigger follows_realtime after insert or update or delete on baas.follows
    for each row execute function baas._realtime_follow();

-- sql/realtime.sql's, plus each accepted follow as a membership of `followers:<followee>`:
-- the hub treats a follow like a direct role that is its own principal.
create or replace function baas._realtime_role_members(users uuid[]) returns table (user_id uuid, role text)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select m.user_id, m.role from baas.role_members m where m.user_id = any(users)
    union all
    select f.follower, 'followers:' || f.followee::text from baas.follows f
     where f.follower = any(users) and f.status = 'accepted'
$$;
