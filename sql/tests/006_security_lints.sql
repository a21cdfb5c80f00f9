-- Each security lint catches what it exists for (the test command also runs them all
-- against the fresh extension in 001), and a user role cannot hijack our SECURITY
-- DEFINER functions with temp objects named like ours.
begin;
select plan(25);

create function pg_temp.lints(l text) returns setof text language sql as
    $$ select object from baas.security_lints() where lint = l order by object $$;

-- 1. A table an API role can read without forced row-level security; a view.
create table baas.leaky (x int);
grant select on baas.leaky to baas_user;
select is(array(select pg_temp.lints('rls_not_forced')), array['baas.leaky'], 'rls_not_forced: a readable table without RLS');
alter table baas.leaky enable row level security;
select is(array(select pg_temp.lints('rls_not_forced')), array['baas.leaky'], 'rls_not_forced: RLS enabled but not forced');
alter table baas.leaky force row level security;
select is_empty($$ select pg_temp.lints('rls_not_forced') $$, 'forced RLS satisfies it');
create view baas.leaky_view as select 1 as x;
grant select on baas.leaky_view to baas_anon;
select is(array(select pg_temp.lints('rls_not_forced')), array['baas.leaky_view'], 'rls_not_forced: a readable view');

create table baas.leaky_column (x int, y int);
grant select (y) on baas.leaky_column to baas_service;
select ok('baas.leaky_column' in (select pg_temp.lints('rls_not_forced')), 'rls_not_forced: one column granted to the service role');
create table baas.leaky_write (x int);
grant insert on baas.leaky_write to baas_anon;
select ok('baas.leaky_write' in (select pg_temp.lints('rls_not_forced')), 'rls_not_forced: writable without RLS');
drop table baas.leaky_column, baas.leaky_write;

-- 2. SECURITY DEFINER without a fixed search_path.
create function baas.no_path() returns int language sql security definer as 'select 1';
revoke execute on function baas.no_path() from public;
select is(array(select pg_temp.lints('definer_search_path')), array['baas.no_path()'], 'definer_search_path');
alter function baas.no_path() set search_path = public, pg_temp;
select is(array(select pg_temp.lints('definer_search_path')), array['baas.no_path()'], 'definer_search_path: a schema users can create in');
alter function baas.no_path() set search_path = pg_catalog;
select is(array(select pg_temp.lints('definer_search_path')), array['baas.no_path()'], 'definer_search_path: pg_temp left out is searched first');
alter function baas.no_path() set search_path = pg_catalog, pg_temp;
select is_empty($$ select pg_temp.lints('definer_search_path') $$, 'pg_catalog, pg_temp satisfies it');

-- 3. Executable by PUBLIC (Postgres's default for a new function).
create function baas.open_to_all() returns int language sql as 'select 1';
select is(array(select pg_temp.lints('public_execute')), array['baas.open_to_all()'], 'public_execute');

-- 4. An internal function granted to an API role.
create function baas._helper() returns int language sql as 'select 1';
revoke execute on function baas._helper() from public;
grant execute on function baas._helper() to baas_user;
select is(array(select pg_temp.lints('internal_function_exposed')), array['baas._helper()'], 'internal_function_exposed');

-- 4b. A public name (no leading _) nobody documented: internal code that forgot its
--     prefix, or new surface that needs documenting.
create function baas.new_thing() returns int language sql as 'select 1';
revoke execute on function baas.new_thing() from public;
select is(array(select pg_temp.lints('undocumented_public_function')),
          array['baas.new_thing()', 'baas.no_path()', 'baas.open_to_all()'], 'undocumented_public_function');

-- 4c. The policies made from one rule must keep agreeing. A count that reads index
--     entries under a looser rule than the documents' would leak how many hidden
--     documents match.
alter policy index_entries_read on baas.index_entries using (true);
select is(array(select pg_temp.lints('policy_drift')), array['policy index_entries_read on baas.index_entries'],
          'policy_drift: the index entries'' read rule changed');
alter policy index_entries_read on baas.index_entries using (owner = (select baas.uid()) or acl_read && (select baas.principals()));
select is_empty($$ select pg_temp.lints('policy_drift') $$, 'the same text again satisfies it');
alter policy index_entries_read on baas.index_entries to baas_anon;
select is(array(select pg_temp.lints('policy_drift')), array['policy index_entries_read on baas.index_entries'],
          'policy_drift: the same rule for other roles');
alter policy index_entries_read on baas.index_entries to baas_anon, baas_user;
alter policy documents_delete on baas.documents using (owner = (select baas.uid()) or acl_read && (select baas.principals()));
select is(array(select pg_temp.lints('policy_drift')), array['policy documents_delete on baas.documents'],
          'policy_drift: readers could delete');
alter policy documents_delete on baas.documents using (owner = (select baas.uid()) or acl_delete && (select baas.principals()));
create policy peek on baas.index_entries for select to baas_user using (true);
select is(array(select pg_temp.lints('policy_drift')), array['policy peek on baas.index_entries'],
          'policy_drift: an extra permissive policy widens the table');
drop policy peek on baas.index_entries;
alter policy index_entries_service on baas.index_entries to baas_service, baas_user;
select is(array(select pg_temp.lints('policy_drift')), array['policy index_entries_service on baas.index_entries'],
          'policy_drift: the service bypass given to users');
alter policy index_entries_service on baas.index_entries to baas_service;

-- 5. A policy that decides a role from data its users can edit (their own account
--    data, which baas.update_user merges whatever they send).
create table public.reports (id int, secret text);
alter table public.reports enable row level security;
create policy admins_only on public.reports using (
    exists (select from baas.users u where u.id = baas.uid() and u.data ->> 'role' = 'admin'));
create policy editors on public.reports using ('role:editors' = any (baas.principals()));
select is(array(select pg_temp.lints('policy_reads_user_data')), array['policy admins_only on public.reports'],
          'policy_reads_user_data: baas.users.data decides; baas.principals() is fine');

-- Temp objects named like ours, made by an API role, change nothing in our
-- SECURITY DEFINER functions (their search_path is pg_catalog, pg_temp and every
-- table is qualified; Postgres never looks up functions or operators in pg_temp).
set local role baas_anon;
set local search_path = pg_temp, public;
create temp table users (id uuid, email text, password_hash text, data jsonb, created_at timestamptz, updated_at timestamptz);
create temp table sessions (id uuid, user_id uuid, created_at timestamptz, refreshed_at timestamptz,
                            expires_at timestamptz, revoked_at timestamptz, revoked_reason text);
create temp table settings (singleton boolean, issuer text);
create function pg_temp.lower(text) returns text language sql as $$ select 'hijacked@evil.test' $$;
create function pg_temp.now() returns timestamptz language sql as $$ select '2000-01-01'::timestamptz $$;
select set_config('baas.claims', '', true);
select baas.signup('Victim@Example.test', 'long enough pw') -> 'user' ->> 'email' as email \gset
select is(:'email'::text, 'victim@example.test', 'signup used the real lower() and wrote the real table');
select ok(baas.login('victim@example.test', 'long enough pw') ? 'access_token', 'login finds the account in baas.users');
select is((select count(*)::int from pg_temp.users), 0, 'the temp table was never touched');
select is((select count(*)::int from pg_temp.sessions), 0, 'nor the temp sessions');
reset role;
reset search_path;
select is((select count(*)::int from baas.sessions s join baas.users u on u.id = s.user_id
            where u.email = 'victim@example.test' and s.expires_at > '2001-01-01'), 2,
          'sessions are in baas.sessions, with expiry from the real now()');

select * from finish();
rollback;
