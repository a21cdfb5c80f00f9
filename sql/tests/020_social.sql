-- Social graph (issue 16, package D; sql/social.sql): follows and their SQLSTATE/detail
-- codes, the followers: principal (only for followees some ACL names), follow
-- approval, max_following, the ACL checks, who may call what, and the hub's loading.
begin;
select plan(37);

-- As an application user with the given claims (jsonb; NULL: anonymous): the query's
-- single value as text, or 'SQLSTATE detail'.
create function pg_temp.as_claims(claims jsonb, q text) returns text language plpgsql as $$
declare d text; v text;
begin
    perform set_config('baas.claims', coalesce(claims::text, ''), true);
    perform set_config('role', case when claims is null then 'baas_anon' else 'baas_user' end, true);
    execute q into v;
    reset role;
    perform set_config('baas.claims', '', true);
    return v;
exception when others then
    get stacked diagnostics d = pg_exception_detail;
    return sqlstate || ' ' || coalesce(d, '');
end $$;

select baas.signup('s1@social.test', 'long enough pw') -> 'user' ->> 'id' as u1 \gset
select baas.signup('s2@social.test', 'long enough pw') -> 'user' ->> 'id' as u2 \gset
select baas.signup('s3@social.test', 'long enough pw') -> 'user' ->> 'id' as u3 \gset
select jsonb_build_object('sub', :'u1', 'role', 'baas_user', 'sid', (select id from baas.sessions where user_id = :'u1')) as c1 \gset
select jsonb_build_object('sub', :'u2', 'role', 'baas_user', 'sid', (select id from baas.sessions where user_id = :'u2')) as c2 \gset
select jsonb_build_object('sub', :'u3', 'role', 'baas_user', 'sid', (select id from baas.sessions where user_id = :'u3')) as c3 \gset

-------------------------------------------------------------------- following
select is(pg_temp.as_claims(:'c1', format('select baas.follow(%L)::text', :'u2')), '{"status": "accepted"}', 'follow');
select is(pg_temp.as_claims(:'c1', format('select baas.follow(%L)::text', :'u2')), '{"status": "accepted"}', 'again: unchanged');
select is(pg_temp.as_claims(:'c1', format('select baas.follow(%L)::text', :'u1')), '22023 cannot_follow_self', 'not yourself');
select is(pg_temp.as_claims(:'c1', $$ select baas.follow('0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b')::text $$), 'P0002 user_not_found', 'unknown');
select is(pg_temp.as_claims(null, format('select baas.follow(%L)::text', :'u2')), '42501 ', 'no token: no grant');
select is(pg_temp.as_claims('{"sub": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "role": "baas_user"}', format('select baas.follow(%L)::text', :'u2')),
          '28000 not_authenticated', 'a token without a live session');
select is(pg_temp.as_claims(:'c1', format('select baas.unfollow(%L)::text', :'u3')), 'P0002 follow_not_found', 'unfollow of no follow');
select is(pg_temp.as_claims(:'c1', format('select baas.remove_follower(%L)::text', :'u3')), 'P0002 follow_not_found', 'remove of no follower');
select is(pg_temp.as_claims(:'c1', format('select baas.answer_follow_request(%L, true)::text', :'u3')), 'P0002 follow_not_found', 'answer of no request');

-- max_following counts pending follows too.
update baas.settings set max_following = 1;
select is(pg_temp.as_claims(:'c1', format('select baas.follow(%L)::text', :'u3')), '54000 following_limit', 'the limit');
update baas.settings set max_following = 5000;
select is(left(pg_temp.detail_of($$ update baas.settings set max_following = 0 $$), 5), '23514', 'max_following at least 1');

-------------------------------------------------------------------- principals
-- u1 follows u2, but no ACL names followers:u2 yet: nothing added.
select is(pg_temp.as_claims(:'c1', 'select baas.principals()::text'), format('{public,authenticated,registered,user:%s}', :'u1'), 'no audience, no principal');
select baas.create_collection('socialtap', '{"create": ["authenticated"]}');
select pg_temp.as_claims(:'c2', format($$ select baas.create_document('socialtap', '{"a": 1}', '{"read": ["followers:%s"]}')->>'id' $$, :'u2')) as d2 \gset
select is((select count(*)::int from baas._follow_audiences where user_id = :'u2'), 1, 'the ACL noted its audience');
select is(pg_temp.as_claims(:'c1', 'select baas.principals()::text'), format('{public,authenticated,registered,user:%s,followers:%s}', :'u1', :'u2'), 'followers: added');
select is(pg_temp.as_claims(:'c1', format('select baas.get_document(%L, %L) ->> %L', 'socialtap', :'d2', 'id')), :'d2', 'the follower reads it');
select is(pg_temp.as_claims(:'c3', format('select baas.get_document(%L, %L) ->> %L', 'socialtap', :'d2', 'id')), 'P0002 document_not_found', 'a stranger does not');
select is((select x ->> 4 from baas.as_user(:'u1'::uuid, 'select baas.principals()') x), format('followers:%s', :'u2'), 'as_user alike');

-- ACL checks: followers of an existing account only, canonical form.
select is(baas._normalize_acl(format('{"read": ["followers:%s"]}', upper(:'u2'))::jsonb) -> 'read' ->> 0, format('followers:%s', :'u2'), 'normalised');
select is(pg_temp.detail_of($$ select baas._check_new_principals('{"read": ["followers:0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"]}') $$),
          '22023 unknown_principal', 'unknown account');

-------------------------------------------------------------------- approval
select is(pg_temp.as_claims(:'c3', $$ select baas.update_profile(follow_approval => true) -> 'user' ->> 'follow_approval' $$), 'true', 'approval on');
select is(pg_temp.as_claims(:'c2', format('select baas.follow(%L)::text', :'u3')), '{"status": "pending"}', 'pending');
select is(pg_temp.as_claims(:'c3', 'select baas.follow_requests() #>> ''{items,0,id}'''), :'u2', 'listed');
select is(pg_temp.as_claims(:'c3', format('select baas.answer_follow_request(%L, true)::text', :'u2')), '', 'accepted');
select is((select status from baas.follows where follower = :'u2' and followee = :'u3'), 'accepted', 'stored');

-------------------------------------------------------------------- profiles and lookup
select is(pg_temp.as_claims(:'c2', $$ select baas.update_profile(username => 'Two_2', profile => '{"public": {"a": 1}, "users": {"b": 2}, "followers": {"c": 3}}') #>> '{user,username}' $$),
          'two_2', 'username, lower case');
select is(pg_temp.as_claims(:'c3', $$ select baas.update_profile(username => 'two_2')::text $$), '23505 username_taken', 'taken');
select is(pg_temp.as_claims(:'c3', $$ select baas.update_profile(username => 'x')::text $$), '22023 invalid_username', 'too short');
-- u1 follows u2 (accepted), u3 does not; no token sees the public tier.
select is((select baas._visible_profile(u, :'u1') from baas.users u where u.id = :'u2')::text, '{"a": 1, "b": 2, "c": 3}', 'a follower sees every tier');
select is(pg_temp.as_claims(null, format('select baas.get_profile(%L) ->> %L', :'u2', 'profile')), '{"a": 1}', 'no token: public');
select is(pg_temp.as_claims(:'c1', $$ select baas.lookup_user(email => 's2@social.test', username => 'two_2')::text $$), '22023 invalid_request', 'exactly one');

-------------------------------------------------------------------- realtime
-- The hub loads follows with role memberships, as followers:<followee> entries.
select is((select array_agg(m.role order by m.role)::text from baas._realtime_role_members(array[:'u1'::uuid]) m),
          format('{followers:%s}', :'u2'), 'the hub''s load');
select is(pg_temp.sqlstate_as('baas_authenticator', format('select * from baas._realtime_role_members(array[%L::uuid])', :'u1')), 'ok', 'the authenticator may load them');
select is(pg_temp.sqlstate_as('baas_user', $$ select baas._note_audiences('{}') $$), '42501', 'internal helper not granted');

-------------------------------------------------------------------- review fixes
-- By email only an address its owner verified (else anyone could sign up with it).
select is(pg_temp.as_claims(:'c1', $$ select baas.lookup_user(email => 's2@social.test')::text $$), 'P0002 user_not_found', 'unverified address: not found by email');
update baas.users set email_verified_at = now() where id = :'u2';
select is(pg_temp.as_claims(:'c1', $$ select baas.lookup_user(email => 's2@social.test') ->> 'id' $$), :'u2', 'verified: found by email');
-- A removed follower that follows again waits for approval, though u2 needs none.
select is(pg_temp.as_claims(:'c2', format('select baas.remove_follower(%L)::text', :'u1')), '', 'removed');
select is(pg_temp.as_claims(:'c1', format('select baas.follow(%L)::text', :'u2')), '{"status": "pending"}', 'a removed follower waits');

select * from finish();
rollback;
