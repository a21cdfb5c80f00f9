-- Protected tables (issue 17, sql/tables.sql): baas.protect puts a team's own table
-- under the documents' permission rule. The permission matrix is replayed on a
-- collection and on a protected table with the same ACLs, as each caller, and the
-- table must answer exactly as the documents do.
begin;
select plan(135);

-- The outcome of a statement as the current caller (role and claims already set, by
-- baas.as_user): the number of rows it touched, or its SQLSTATE and DETAIL. Always
-- rolled back, so that each cell of the matrix starts from the same rows.
create function pg_temp.rows(q text) returns text language plpgsql as $$
declare n bigint; d text;
begin
    begin
        execute q;
        get diagnostics n = row_count;
        raise exception using errcode = 'ZZ001', message = n::text;
    exception when sqlstate 'ZZ001' then
        return sqlerrm;
    end;
exception when others then
    get stacked diagnostics d = pg_exception_detail;
    return sqlstate || ' ' || coalesce(d, '');
end $$;
grant execute on function pg_temp.rows(text) to public;

-- The same, kept (for setting up rows as their users).
create function pg_temp.kept(q text) returns text language plpgsql as $$
declare n bigint;
begin
    execute q;
    get diagnostics n = row_count;
    return n::text;
end $$;
grant execute on function pg_temp.kept(text) to public;

-- As an application user (NULL: anonymous), through baas.as_user: the outcome of q,
-- rolled back (as) or kept (as_kept).
create function pg_temp.as(who uuid, q text) returns text language sql as $$
    select s #>> '{}' from baas.as_user(who, format('select pg_temp.rows(%L)', q)) s
$$;
create function pg_temp.as_kept(who uuid, q text) returns text language sql as $$
    select s #>> '{}' from baas.as_user(who, format('select pg_temp.kept(%L)', q)) s
$$;

-- People: the owner, a grantee named by user:, a member of a role (nested: junior is
-- in editors through juniors), a signed-in stranger, and (NULL) anonymous.
select (baas.create_user('owner@pt.test', 'long enough pw') ->> 'id')::uuid as o \gset
select (baas.create_user('grantee@pt.test', 'long enough pw') ->> 'id')::uuid as g \gset
select (baas.create_user('member@pt.test', 'long enough pw') ->> 'id')::uuid as m \gset
select (baas.create_user('stranger@pt.test', 'long enough pw') ->> 'id')::uuid as s \gset
select baas.create_role('editors'), baas.create_role('juniors');
select baas.add_role_to_role('editors', 'juniors'), baas.add_role_member('juniors', :'m');

-------------------------------------------------------------------- protect
create table public.pt_notes (
    id uuid primary key default gen_random_uuid(),
    owner_id uuid,
    acl jsonb,
    body text,
    version bigint not null default 0,
    n bigint generated always as identity
);
select is(baas.protect('public.pt_notes', owner => 'owner_id', acl => 'acl', version => 'version'),
          '{"table": "public.pt_notes", "owner": "owner_id", "acl": "acl", "tenant": null, "version": "version",
            "read": [], "create": ["authenticated"], "update": [], "delete": [], "tenant_prefix": null}'::jsonb,
          'protect returns the definition (create defaults to authenticated when there is an owner)');
select ok((select relrowsecurity and relforcerowsecurity from pg_class where oid = 'public.pt_notes'::regclass),
          'row-level security is on and forced');
select is(array(select polname::text from pg_policy where polrelid = 'public.pt_notes'::regclass order by 1),
          array['baas_create', 'baas_delete', 'baas_read', 'baas_service', 'baas_update'], 'the baas_ policies');
select is((select pg_get_expr(polqual, polrelid) from pg_policy where polrelid = 'public.pt_notes'::regclass and polname = 'baas_read'),
          baas._protected_rule(p, 'read'), 'each policy is the rule''s text as Postgres prints it')
  from baas.protected_tables p where p.rel = 'public.pt_notes'::regclass;
select is(array(select tgname::text from pg_trigger where tgrelid = 'public.pt_notes'::regclass and not tgisinternal order by 1),
          array['baas_audiences', 'baas_guard'], 'the baas_ triggers');
select ok(has_table_privilege('baas_user', 'public.pt_notes', 'select, insert, update, delete')
          and has_table_privilege('baas_anon', 'public.pt_notes', 'select')
          and has_sequence_privilege('baas_user', pg_get_serial_sequence('public.pt_notes', 'n'), 'usage'),
          'the API roles may use the table and its identity sequence: the policies decide which rows');

-- Owner filled, version counted, ACL kept canonical.
select is(pg_temp.as_kept(:'o', $$ insert into public.pt_notes (id, body, acl) values ('00000000-0000-0000-0000-0000000000a1', 'mine', '{"update": ["role:editors"]}') $$),
          '1', 'the owner inserts');
select is((select owner_id from public.pt_notes where id = '00000000-0000-0000-0000-0000000000a1'), :'o'::uuid, 'the owner is filled with the caller');
select is((select acl from public.pt_notes where id = '00000000-0000-0000-0000-0000000000a1'),
          '{"read": ["role:editors"], "update": ["role:editors"], "delete": []}'::jsonb, 'the ACL is normalised as a document''s');
select is((select version from public.pt_notes where id = '00000000-0000-0000-0000-0000000000a1'), 1::bigint, 'the version starts at 1');
select is((select count(*)::int from baas.as_user(:'o', $$ select id from public.pt_notes $$)), 1, 'the owner reads it');
select is(pg_temp.as_kept(:'o', $$ update public.pt_notes set body = 'edited' $$), '1', 'the owner updates it');
select is((select version from public.pt_notes where id = '00000000-0000-0000-0000-0000000000a1'), 2::bigint, 'an update bumps the version');

-- Nobody but a privileged caller gives a row away, not even its owner; the ACL is the
-- owner's to change.
select is(pg_temp.as(:'o', format('update public.pt_notes set owner_id = %L', :'g')), '42501 forbidden',
          'the owner cannot give the row away');
select is(pg_temp.as(:'m', $$ update public.pt_notes set body = 'by an editor' $$), '1', 'an editor (nested role) may update');
select is(pg_temp.as(:'m', $$ update public.pt_notes set acl = '{"read": ["public"]}' $$), '42501 forbidden',
          'but not change the ACL');
select is(pg_temp.as(:'m', format('update public.pt_notes set owner_id = %L', :'m')), '42501 forbidden', 'nor take the row');
select is(pg_temp.as(:'o', $$ update public.pt_notes set acl = '{"read": ["role:nosuch"]}' $$), '22023 unknown_principal',
          'a new principal must exist');
select is(pg_temp.as(:'s', $$ insert into public.pt_notes (owner_id) values ('00000000-0000-0000-0000-000000000001') $$),
          '42501 ', 'a row for someone else cannot be inserted');
select is(pg_temp.as(null, $$ insert into public.pt_notes (body) values ('anon') $$), '42501 ', 'anonymous may not create');
set local role baas_service;
update public.pt_notes set owner_id = :'g' where id = '00000000-0000-0000-0000-0000000000a1';
reset role;
select is((select owner_id from public.pt_notes where id = '00000000-0000-0000-0000-0000000000a1'), :'g'::uuid,
          'the service role may hand a row over');

-- Protecting again replaces the policies; unprotect takes them, the triggers and the
-- grants away.
select is(baas.protect('public.pt_notes', owner => 'owner_id', "read" => '{public}') ->> 'read', '["public"]', 're-protect');
select is((select count(*)::int from pg_policy where polrelid = 'public.pt_notes'::regclass), 5, 'still five policies');
select is(array(select tgname::text from pg_trigger where tgrelid = 'public.pt_notes'::regclass and not tgisinternal), array['baas_guard'],
          'no ACL column: no audiences trigger');
select ok(baas.unprotect('public.pt_notes'), 'unprotect');
select ok(not has_table_privilege('baas_user', 'public.pt_notes', 'select')
          and not exists (select from pg_policy where polrelid = 'public.pt_notes'::regclass)
          and not exists (select from pg_trigger where tgrelid = 'public.pt_notes'::regclass and not tgisinternal)
          and not exists (select from baas.protected_tables where rel = 'public.pt_notes'::regclass)
          and (select relforcerowsecurity from pg_class where oid = 'public.pt_notes'::regclass),
          'policies, triggers, grants and definition gone; RLS stays forced');
select ok(not baas.unprotect('public.pt_notes'), 'unprotect again: false');
create table public.pt_gone (id int);
select baas.protect('public.pt_gone') is not null as made \gset
select 'public.pt_gone'::regclass::oid as gone \gset
drop table public.pt_gone;
select baas.protect('public.pt_notes', owner => 'owner_id') is not null as made \gset
select ok(not exists (select from baas.protected_tables where rel::oid = :gone), 'protect forgets the definitions of dropped tables');

-------------------------------------------------------------------- the matrix
-- The same seven ACLs on seven documents and on seven rows, all made by their owner.
select baas.create_collection('pt_matrix') is not null as made \gset
create table public.pt_matrix (id uuid primary key, owner_id uuid, acl jsonb, body text);
select baas.protect('public.pt_matrix', owner => 'owner_id', acl => 'acl') is not null as made \gset
create temp table pt_acls (k int primary key, acl jsonb);
insert into pt_acls values
    (1, '{}'),
    (2, format('{"read": ["user:%s"]}', :'g')::jsonb),
    (3, '{"read": ["role:editors"], "update": ["role:editors"]}'),
    (4, '{"read": ["authenticated"], "update": ["authenticated"], "delete": ["authenticated"]}'),
    (5, format('{"read": ["public"], "delete": ["user:%s"]}', :'g')::jsonb),
    (6, format('{"update": ["user:%s", "role:juniors"]}', :'g')::jsonb),
    (7, '{"read": ["registered"], "delete": ["role:editors"]}');
create function pg_temp.kid(k int) returns uuid language sql as $$ select format('00000000-0000-0000-0000-%s', lpad(k::text, 12, '0'))::uuid $$;
select count(*) from pt_acls a,
       baas.as_user(:'o', format('select baas.create_document(%L, %L, %L, %L)', 'pt_matrix', '{}', a.acl, pg_temp.kid(a.k)));
select count(*) from pt_acls a,
       pg_temp.as_kept(:'o', format('insert into public.pt_matrix (id, acl) values (%L, %L)', pg_temp.kid(a.k), a.acl));

-- Which of the seven `who` may read, update or delete, on one side: each statement run
-- as `who` through baas.as_user and rolled back. An error shows as -k.
create function pg_temp.allowed(who uuid, op text, side text) returns int[] language plpgsql as $$
declare
    r int[] := '{}';
    a record;
    q text;
    outcome text;
    rel text := case side when 'doc' then 'baas.documents' else 'public.pt_matrix' end;
    cond text := case side when 'doc' then format('collection_id = %s and ', (select id from baas.collections where name = 'pt_matrix')) else '' end;
    change text := case side when 'doc' then 'data = data || ''{"x": 1}''' else 'body = ''x''' end;
begin
    for a in select k from pt_acls order by k loop
        q := case op when 'read' then format('select from %s where %sid = %L', rel, cond, pg_temp.kid(a.k))
                     when 'update' then format('update %s set %s where %sid = %L', rel, change, cond, pg_temp.kid(a.k))
                     when 'delete' then format('delete from %s where %sid = %L', rel, cond, pg_temp.kid(a.k)) end;
        outcome := pg_temp.as(who, q);
        if outcome = '1' then r := r || a.k; elsif outcome <> '0' then r := r || -a.k; end if;
    end loop;
    return r;
end $$;
create temp table pt_callers (name text, who uuid);
insert into pt_callers values ('owner', :'o'), ('grantee', :'g'), ('member of a nested role', :'m'),
                              ('a signed-in stranger', :'s'), ('anonymous', null);
select is(pg_temp.allowed(c.who, op, 'table'), pg_temp.allowed(c.who, op, 'doc'), format('%s, %s: the table answers as the documents', c.name, op))
  from pt_callers c, unnest(array['read', 'update', 'delete']) op order by c.name, op;
-- And the answers are not trivial.
select is(pg_temp.allowed(:'o', 'delete', 'doc'), array[1, 2, 3, 4, 5, 6, 7], 'the owner may do everything');
select is(pg_temp.allowed(:'m', 'update', 'doc'), array[3, 4, 6], 'a member of a nested role: what the role was given, and authenticated');
select is(pg_temp.allowed(null, 'read', 'doc'), array[5], 'anonymous: what is public');
select is(pg_temp.allowed(:'s', 'read', 'table'), array[4, 5, 7], 'a stranger: authenticated, public, registered');
-- Creating: the collection's `create` list and the table's, as each caller.
select baas.create_collection('pt_matrix_ed', '{"create": ["role:editors"]}') is not null as made \gset
create table public.pt_matrix_ed (id uuid primary key default gen_random_uuid(), owner_id uuid);
select baas.protect('public.pt_matrix_ed', owner => 'owner_id') is not null as made \gset
select is(array(select pg_temp.as(c.who, $$ insert into public.pt_matrix_ed default values $$) = '1' from pt_callers c order by c.name),
          array(select pg_temp.as(c.who, $$ select baas.create_document('pt_matrix', '{}') $$) = '1' from pt_callers c order by c.name),
          'create (authenticated by default): the table answers as the documents');
select baas.protect('public.pt_matrix_ed', owner => 'owner_id', "create" => '{role:editors}') is not null as made \gset
select is(array(select pg_temp.as(c.who, $$ insert into public.pt_matrix_ed default values $$) = '1' from pt_callers c order by c.name),
          array(select pg_temp.as(c.who, $$ select baas.create_document('pt_matrix_ed', '{}') $$) = '1' from pt_callers c order by c.name),
          'create (role:editors): the table answers as the documents');
select is(array(select c.name from pt_callers c where pg_temp.as(c.who, $$ insert into public.pt_matrix_ed default values $$) = '1'),
          array['member of a nested role'], 'only the member creates');

-------------------------------------------------------------------- tenants
-- Tenants are application roles: a row of shop_1 is for members of role shop_1.
select baas.create_role('shop_1'), baas.create_role('shop_2');
select baas.add_role_member('shop_1', :'m'), baas.add_role_member('shop_2', :'g');
create table public.pt_orders (id int primary key, shop varchar(40) not null, owner_id uuid, total numeric);
select baas.protect('public.pt_orders', owner => 'owner_id', tenant => 'shop', "read" => '{authenticated}', "update" => '{authenticated}') is not null as made \gset
select is((select count(*)::int from pg_policy p, baas.protected_tables d
            where p.polrelid = 'public.pt_orders'::regclass and d.rel = p.polrelid
              and (p.polname = 'baas_read' and pg_get_expr(p.polqual, p.polrelid) = baas._protected_rule(d, 'read')
                   or p.polname = 'baas_update' and pg_get_expr(p.polwithcheck, p.polrelid) = baas._protected_rule(d, 'check')
                   or p.polname = 'baas_create' and pg_get_expr(p.polwithcheck, p.polrelid) = baas._protected_rule(d, 'create'))),
          3, 'a varchar tenant: the policies are the rule''s text');
insert into public.pt_orders values (1, 'shop_1', null, 10), (2, 'shop_2', null, 20);
select is(array(select baas.as_user(:'m', 'select id from public.pt_orders')::int), array[1], 'a member of shop_1 sees shop_1''s orders');
select is(array(select baas.as_user(:'g', 'select id from public.pt_orders')::int), array[2], 'a member of shop_2 sees shop_2''s');
select is(array(select baas.as_user(:'s', 'select id from public.pt_orders')::int), '{}'::int[], 'a member of neither sees none');
select is(pg_temp.as(:'m', $$ insert into public.pt_orders values (3, 'shop_2', null, 1) $$), '42501 ', 'no order in another shop');
select is(pg_temp.as(:'m', $$ insert into public.pt_orders values (3, 'shop_1', null, 1) $$), '1', 'one in its own shop');
select is(pg_temp.as(:'m', $$ update public.pt_orders set shop = 'shop_2' $$), '42501 ', 'no moving an order to another shop');
select is(pg_temp.as(:'m', $$ update public.pt_orders set total = 11 $$), '1', 'updating in its own shop');

-- A tenant column of integers: with a prefix, shop 42's rows are for role shop-42.
select baas.create_role('shop-42');
select baas.add_role_member('shop-42', :'m');
create table public.pt_shops (id int primary key, shop int not null);
select is(baas.protect('public.pt_shops', tenant => 'shop', tenant_prefix => 'shop-', "read" => '{authenticated}') ->> 'tenant_prefix',
          'shop-', 'protect takes a tenant prefix');
insert into public.pt_shops values (1, 42), (2, 43);
select is(array(select baas.as_user(c.who, 'select coalesce(array_agg(id order by id), ''{}'') from public.pt_shops')::text from pt_callers c order by c.name),
          array['[]', '[]', '[]', '[1]', '[]'], 'tenant_prefix: a member of shop-42 sees shop 42''s rows, nobody else any');

-------------------------------------------------------------------- rows already there
create table public.pt_old (id int primary key, acl jsonb);
insert into public.pt_old values (1, '{"update": ["role:editors"]}'), (2, null), (3, format('{"read": ["followers:%s"]}', :'g')::jsonb);
select ok(not exists (select from baas._follow_audiences where user_id = :'g'), '(the grantee is no audience yet)');
select baas.protect('public.pt_old', acl => 'acl') is not null as made \gset
select is(array(select acl from public.pt_old order by id),
          array['{"read": ["role:editors"], "update": ["role:editors"], "delete": []}'::jsonb, null,
                format('{"read": ["followers:%s"], "update": [], "delete": []}', :'g')::jsonb],
          'protect makes the ACLs of the rows already there canonical');
select ok(exists (select from baas._follow_audiences where user_id = :'g'), 'and notes their followers: principals');
create table public.pt_old_bad (id int primary key, acl jsonb);
insert into public.pt_old_bad values (1, '{}'), (7, '{"read": ["everyone"]}');
select is(pg_temp.detail_of($$ select baas.protect('public.pt_old_bad', acl => 'acl') $$), '22023 invalid_acl', 'a row with an invalid ACL stops protect');
select throws_like($$ select baas.protect('public.pt_old_bad', acl => 'acl') $$,
                   'protect: the ACL of row 7 of public.pt_old_bad is not valid%', 'naming the row');
update public.pt_old_bad set acl = '{"read": ["role:nosuch"]}' where id = 7;
select is(pg_temp.detail_of($$ select baas.protect('public.pt_old_bad', acl => 'acl') $$), '22023 invalid_acl', 'and one naming a role that does not exist');

-------------------------------------------------------------------- table-wide lists
-- No owner column: the lists alone decide (create defaults to nobody without an owner).
create table public.pt_board (id int primary key, note text);
select is(baas.protect('public.pt_board', "read" => '{public}', "delete" => '{role:editors}') -> 'create', '[]', 'no owner: nobody creates by default');
insert into public.pt_board values (1, 'hello');
select is(array(select pg_temp.as(c.who, 'select from public.pt_board') || '/' || pg_temp.as(c.who, 'update public.pt_board set note = null')
                       || '/' || pg_temp.as(c.who, 'delete from public.pt_board') || '/' || pg_temp.as(c.who, 'insert into public.pt_board values (2)')
                  from pt_callers c order by c.name),
          array['1/0/0/42501 ', '1/0/0/42501 ', '1/0/0/42501 ', '1/0/1/42501 ', '1/0/0/42501 '],
          'read by everyone (public), deleted by editors only, updated and created by nobody');

-------------------------------------------------------------------- followers
-- An ACL naming followers:<owner> reaches the owner's followers, as in a document's.
select pg_temp.as_kept(:'o', format('insert into public.pt_matrix (id, acl) values (%L, %L)', pg_temp.kid(50),
                                    format('{"read": ["followers:%s"]}', :'o'))) as made \gset
select ok(exists (select from baas._follow_audiences where user_id = :'o'), 'the owner is noted as an audience');
insert into baas.follows (follower, followee, status, accepted_at) values (:'g', :'o', 'accepted', now());
select is(array(select baas.as_user(c.who, format('select count(*) from public.pt_matrix where id = %L', pg_temp.kid(50)))::int
                  from pt_callers c order by c.name),
          array[0, 0, 1, 0, 1], 'a follower (the grantee) reads it; a stranger, anonymous and a member do not');

-- Table-wide lists may name followers:<id> too.
create table public.pt_fans (id int primary key);
insert into public.pt_fans values (1);
select ok(not exists (select from baas._follow_audiences where user_id = :'s'), '(the stranger is no audience yet)');
select baas.protect('public.pt_fans', "read" => array[format('followers:%s', :'s')]) is not null as made \gset
select ok(exists (select from baas._follow_audiences where user_id = :'s'), 'a table-wide followers: principal notes the account');
insert into baas.follows (follower, followee, status, accepted_at) values (:'m', :'s', 'accepted', now());
select is(array(select baas.as_user(c.who, 'select count(*) from public.pt_fans')::int from pt_callers c order by c.name),
          array[0, 0, 0, 1, 0], 'the stranger''s follower (the member) reads the table; nobody else');

-------------------------------------------------------------------- helpers
select is(array(select baas.as_user(c.who, $$ select baas.has_role('editors') $$)::boolean from pt_callers c order by c.name),
          array[false, false, false, true, false], 'has_role(editors): only the member, through juniors');
select is(baas.as_user(:'m', $$ select baas.has_role('shop_1') and not baas.has_role('shop_2') and not baas.has_role('nosuch') $$)::boolean,
          true, 'has_role: the caller''s roles only');
select is(array(select baas.as_user(c.who, format('select baas.can_read(%L, %L)', 'pt_matrix', pg_temp.kid(3)))::boolean
                  from pt_callers c order by c.name),
          array[false, false, false, true, true], 'can_read: the member and the owner (a signed-in stranger, anonymous, grantee: no)');
select is(baas.as_user(:'o', format('select baas.can_read(%L, %L) or baas.can_read(%L, %L) or baas.can_read(%L, %L)',
                                    'nosuch', pg_temp.kid(3), 'pt_matrix', 'not-an-id', 'pt_matrix', pg_temp.kid(99)))::boolean,
          false, 'can_read: an unknown collection, a malformed id, a missing document: false');
select baas.create_collection('pt_files', '{"bucket": true}') is not null as made \gset
select x ->> 'id' as file from baas.as_user(:'o', $$ select baas.upload_file('pt_files', 'a.txt', 'text/plain', 'hi',
        '{}', '{"read": ["role:editors"]}') $$) x \gset
select is(array(select baas.as_user(c.who, format('select baas.can_read_file(%L)', :'file'))::boolean from pt_callers c order by c.name),
          array[false, false, false, true, true], 'can_read_file: as the file''s ACL says');
select is(baas.as_user(:'o', format('select baas.can_read_file(%L)', pg_temp.kid(3)))::boolean, false, 'can_read_file: a document is not a file');
-- Inside the team's own policy: members of the order's shop, or whoever may read the
-- order's document.
create table public.pt_team (id int primary key, shop text, doc uuid);
alter table public.pt_team enable row level security;
alter table public.pt_team force row level security;
grant select on public.pt_team to baas_anon, baas_user;
create policy members on public.pt_team for select to baas_anon, baas_user
    using (baas.has_role(shop) or baas.can_read('pt_matrix', doc::text));
insert into public.pt_team values (1, 'shop_2', pg_temp.kid(3)), (2, 'shop_9', pg_temp.kid(4)),
                                  (3, 'shop_1', pg_temp.kid(1)), (4, 'shop_2', pg_temp.kid(1));
select is(array(select array(select baas.as_user(c.who, 'select id from public.pt_team order by id')::int)::text
                  from pt_callers c order by c.name),
          array['{2}', '{}', '{1,2,4}', '{1,2,3}', '{1,2,3,4}'], 'a team policy made of has_role and can_read answers per caller');

-------------------------------------------------------------------- lints
create function pg_temp.lints(l text) returns setof text language sql as
    $$ select object || ': ' || detail from baas.security_lints() where lint = l order by 1 $$;
select is_empty($$ select * from baas.security_lints() $$, 'protected tables, as protect made them: no lint');
alter table public.pt_matrix no force row level security;
select is(array(select pg_temp.lints('protected_table_drift')), array['public.pt_matrix: row-level security is not forced: protect the table again'],
          'protected_table_drift: RLS not forced');
alter table public.pt_matrix disable row level security;
select is(array(select pg_temp.lints('protected_table_drift')), array['public.pt_matrix: row-level security is off: protect the table again'],
          'protected_table_drift: RLS off');
alter table public.pt_matrix enable row level security, force row level security;
alter policy baas_read on public.pt_matrix using (true);
select is(array(select pg_temp.lints('protected_table_drift')), array['policy baas_read on public.pt_matrix: not what its definition makes (true / -): protect the table again'],
          'protected_table_drift: a loosened policy');
drop policy baas_delete on public.pt_matrix;
create policy extra on public.pt_matrix for select to baas_user using (true);
create policy narrowing on public.pt_matrix as restrictive for select to baas_user using (true);
create policy other_role on public.pt_matrix for select to pg_monitor using (true);
select is(array(select pg_temp.lints('protected_table_drift')),
          array['policy baas_delete on public.pt_matrix: missing: baas.protect makes it (protect the table again)',
                'policy baas_read on public.pt_matrix: not what its definition makes (true / -): protect the table again',
                'policy extra on public.pt_matrix: a permissive policy baas.protect did not make, for an API role: it widens the table''s rule (make it restrictive, or drop it)'],
          'protected_table_drift: a missing policy and a widening one (restrictive ones and other roles'' are fine)');
select is(pg_temp.detail_of($$ select baas.protect('public.pt_matrix', owner => 'owner_id', acl => 'acl') $$), '22023 foreign_policy',
          'protect refuses while a permissive policy of someone else''s applies to an API role');
create policy to_all on public.pt_matrix for select using (true);
drop policy extra on public.pt_matrix;
select is(pg_temp.detail_of($$ select baas.protect('public.pt_matrix', owner => 'owner_id', acl => 'acl') $$), '22023 foreign_policy',
          'and one for PUBLIC');
drop policy to_all on public.pt_matrix;
create policy narrowing_all on public.pt_matrix as restrictive for select using (true);
select baas.protect('public.pt_matrix', owner => 'owner_id', acl => 'acl') is not null as made \gset
drop policy narrowing_all on public.pt_matrix;
select is_empty($$ select pg_temp.lints('protected_table_drift') $$, 'protecting again repairs it');
alter policy baas_update on public.pt_matrix to baas_user;
select is(array(select pg_temp.lints('protected_table_drift')),
          array['policy baas_update on public.pt_matrix: not what its definition makes (((owner_id = ( SELECT baas.uid() AS uid)) OR ((acl -> ''update''::text) ?| ( SELECT baas.principals() AS principals))) / true): protect the table again'],
          'protected_table_drift: a policy for other roles');
select baas.protect('public.pt_matrix', owner => 'owner_id', acl => 'acl') is not null as made \gset
alter table public.pt_matrix disable trigger baas_guard;
grant truncate on public.pt_matrix to baas_user;
select is(array(select pg_temp.lints('protected_table_drift')),
          array['public.pt_matrix to baas_user: baas_user may truncate it, which row-level security does not govern: revoke it',
                'trigger baas_guard on public.pt_matrix: disabled: owners could lose their rows (enable it, or protect the table again)'],
          'protected_table_drift: a disabled guard, a TRUNCATE grant');
revoke truncate on public.pt_matrix from baas_user;
alter table public.pt_matrix enable trigger baas_guard;
select is_empty($$ select pg_temp.lints('protected_table_drift') $$, 'clean again');
-- A guard that never fires: enabled for replication only, or turned into an AFTER
-- trigger, or limited to a column or a WHEN clause.
alter table public.pt_matrix enable replica trigger baas_guard;
alter table public.pt_matrix enable replica trigger baas_audiences;
select is(array(select pg_temp.lints('protected_table_drift')),
          array['trigger baas_audiences on public.pt_matrix: disabled: owners could lose their rows (enable it, or protect the table again)',
                'trigger baas_guard on public.pt_matrix: disabled: owners could lose their rows (enable it, or protect the table again)'],
          'protected_table_drift: guard triggers that fire only for replication');
select is(pg_temp.as(:'m', format('update public.pt_matrix set owner_id = %L where id = %L', :'m', pg_temp.kid(3))), '1',
          '(which is why: without its guard an ACL grantee takes the row)');
alter table public.pt_matrix enable always trigger baas_guard, enable trigger baas_audiences;
select is_empty($$ select pg_temp.lints('protected_table_drift') $$, 'enabled always: fine');
drop trigger baas_guard on public.pt_matrix;
create trigger baas_guard after insert or update on public.pt_matrix for each row execute function baas._protected_guard('owner_id', 'acl', '');
select is(array(select pg_temp.lints('protected_table_drift')),
          array['trigger baas_guard on public.pt_matrix: not what its definition makes: protect the table again'], 'protected_table_drift: an AFTER guard');
drop trigger baas_guard on public.pt_matrix;
create trigger baas_guard before insert or update of body on public.pt_matrix for each row execute function baas._protected_guard('owner_id', 'acl', '');
select is(array(select pg_temp.lints('protected_table_drift')),
          array['trigger baas_guard on public.pt_matrix: not what its definition makes: protect the table again'], 'protected_table_drift: a guard for one column');
drop trigger baas_guard on public.pt_matrix;
create trigger baas_guard before insert or update on public.pt_matrix for each row when (false) execute function baas._protected_guard('owner_id', 'acl', '');
select is(array(select pg_temp.lints('protected_table_drift')),
          array['trigger baas_guard on public.pt_matrix: not what its definition makes: protect the table again'], 'protected_table_drift: a guard with a WHEN clause');
drop trigger baas_audiences on public.pt_matrix;
create trigger baas_audiences after insert or update of acl on public.pt_matrix for each row when (false) execute function baas._protected_audiences('acl');
select is(array(select pg_temp.lints('protected_table_drift')),
          array['trigger baas_audiences on public.pt_matrix: not what its definition makes: protect the table again',
                'trigger baas_guard on public.pt_matrix: not what its definition makes: protect the table again'],
          'protected_table_drift: an audiences trigger with another WHEN clause');
select baas.protect('public.pt_matrix', owner => 'owner_id', acl => 'acl') is not null as made \gset
select is_empty($$ select pg_temp.lints('protected_table_drift') $$, 'protect remakes them');
-- Column names Postgres keeps as bytes that are not ASCII, or with a backslash.
create table public."pt_ünï" ("propriétaire" uuid, "a\cl" jsonb, "vér" bigint);
select baas.protect('public."pt_ünï"', owner => 'propriétaire', acl => 'a\cl', version => 'vér') is not null as made \gset
select is_empty($$ select pg_temp.lints('protected_table_drift') $$, 'protected_table_drift: no false alarm for non-ASCII and backslash names');

-- Partitions and inheritance children: reached through their table only.
create table public.pt_tree (id int, k int, owner_id uuid) partition by list (k);
create table public.pt_leaf partition of public.pt_tree for values in (1);
create table public.pt_kid (extra text) inherits (public.pt_board);
grant select on public.pt_leaf, public.pt_kid to baas_anon, baas_user;
insert into public.pt_leaf values (1, 1, :'o');
insert into public.pt_kid values (9, 'kid', 'x');
select baas.protect('public.pt_tree', owner => 'owner_id') is not null as made \gset
select baas.protect('public.pt_board', "read" => '{role:editors}', "delete" => '{role:editors}') is not null as made \gset
select is(array(select pg_temp.as(:'s', q) from unnest(array['select from public.pt_leaf', 'select from public.pt_kid',
                                                            'select from public.pt_tree', 'select from public.pt_board']) q),
          array['42501 ', '42501 ', '0', '0'], 'protect closes partitions and inheritance children to the API roles: their rows only through the table');
select ok((select bool_and(relrowsecurity and relforcerowsecurity) from pg_class where oid in ('public.pt_leaf'::regclass, 'public.pt_kid'::regclass)),
          'and forces row-level security on them');
select is(pg_temp.as(:'o', 'select from public.pt_tree'), '1', 'the owner reads the partition''s row through the table');
grant select on public.pt_leaf to baas_user;
grant delete on public.pt_kid to baas_anon;
select is(array(select pg_temp.lints('protected_table_drift')),
          array['public.pt_kid to baas_anon: baas_anon may use public.pt_kid, a partition or inheritance child of protected table public.pt_board, directly: revoke it (protect public.pt_board again)',
                'public.pt_leaf to baas_user: baas_user may use public.pt_leaf, a partition or inheritance child of protected table public.pt_tree, directly: revoke it (protect public.pt_tree again)'],
          'protected_table_drift: an API role''s privilege on a partition or child');
select baas.protect('public.pt_tree', owner => 'owner_id') is not null as made \gset
select baas.protect('public.pt_board', "read" => '{role:editors}', "delete" => '{role:editors}') is not null as made \gset
select is_empty($$ select pg_temp.lints('protected_table_drift') $$, 'protecting again closes them');
-- A row trigger fires on the table that holds the row: an inheritance child gets the
-- guard triggers too (a partition, Postgres's clones of its table's).
create table public.pt_base (id int primary key, owner_id uuid, acl jsonb);
create table public.pt_base_kid () inherits (public.pt_base);
insert into public.pt_base_kid values (1, :'o', '{"update": ["role:editors"]}');
select baas.protect('public.pt_base', owner => 'owner_id', acl => 'acl') is not null as made \gset
select is(pg_temp.as(:'m', format('update public.pt_base set owner_id = %L', :'m')), '42501 forbidden',
          'a child''s row, updated through the table, keeps its owner');
select is(pg_temp.as(:'m', 'update public.pt_base set id = 2'), '1', '(the editor may update it)');
alter table public.pt_base_kid disable trigger baas_guard;
alter table public.pt_leaf enable replica trigger baas_guard;
select is(array(select pg_temp.lints('protected_table_drift')),
          array['trigger baas_guard on public.pt_base_kid: disabled: owners could lose their rows (enable it, or protect the table again)',
                'trigger baas_guard on public.pt_leaf: disabled: owners could lose their rows (enable it, or protect the table again)'],
          'protected_table_drift: the guards of an inheritance child and of a partition');
select baas.protect('public.pt_base', owner => 'owner_id', acl => 'acl') is not null as made \gset
select baas.protect('public.pt_tree', owner => 'owner_id') is not null as made \gset
select is_empty($$ select pg_temp.lints('protected_table_drift') $$, 'protect remakes them');

create schema pt_api;
create table pt_api.open (id int);
create table pt_api.quiet (id int);
create table pt_api.guarded (id int, owner_id uuid);
grant select on pt_api.open to baas_anon;
select baas.protect('pt_api.guarded', owner => 'owner_id') is not null as made \gset
select is_empty($$ select pg_temp.lints('unprotected_table_exposed') $$, 'unprotected_table_exposed: silent while the schema is not exposed');
select baas.expose_schema('pt_api');
select is(array(select pg_temp.lints('unprotected_table_exposed')),
          array['pt_api.open: in exposed schema pt_api, usable by baas_anon, and not protected: protect it (baas.protect) or revoke the grants'],
          'unprotected_table_exposed: a granted table in an exposed schema (not the ungranted one, not the protected one)');
revoke select on pt_api.open from baas_anon;
create view pt_api.invoker with (security_invoker = true) as select * from pt_api.guarded;
create view pt_api.definer as select * from pt_api.guarded;
grant select on pt_api.invoker, pt_api.definer to baas_user;
select is(array(select pg_temp.lints('unprotected_table_exposed')),
          array['pt_api.definer: in exposed schema pt_api, usable by baas_user, and not protected: protect it (baas.protect) or revoke the grants'],
          'unprotected_table_exposed: a view that reads as its owner (not a security_invoker one)');
drop view pt_api.invoker, pt_api.definer;
select is_empty($$ select pg_temp.lints('unprotected_table_exposed') $$, 'and silent once its grants are gone');
create table pt_api.parted (id int, k int) partition by list (k);
create table pt_api.parted_1 partition of pt_api.parted for values in (1);
grant select on pt_api.parted_1 to baas_user;
select is(array(select pg_temp.lints('unprotected_table_exposed')),
          array['pt_api.parted_1: in exposed schema pt_api, usable by baas_user, and not protected: a partition of pt_api.parted, whose policies apply only through it: revoke the grants (and protect pt_api.parted)'],
          'unprotected_table_exposed: a partition is not to be protected: its table is');
drop table pt_api.parted;

-------------------------------------------------------------------- what is exposed
create function pt_api.ping(who text default 'you') returns text language sql stable as $$ select 'hi ' || who $$;
create function pt_api.write_it(n int) returns void language sql as $$ select $$;
create function pt_api._hidden() returns int language sql as $$ select 1 $$;
revoke execute on function pt_api.write_it(int) from public;
grant execute on function pt_api.write_it(int) to baas_user;
grant usage on schema pt_api to baas_anon, baas_user, baas_service;
select is(array(select row(kind, name, signature, http, roles, security_definer)::text from baas.exposed order by kind, name),
          array['(function,ping,"pt_api.ping(who text)","GET, POST /v1/rpc/ping","{baas_anon,baas_user,baas_service}",f)',
                '(function,write_it,"pt_api.write_it(n integer)","POST /v1/rpc/write_it",{baas_user},f)',
                '(table,guarded,pt_api.guarded,"GET, POST /v1/tables/guarded; GET, PATCH, DELETE /v1/tables/guarded/{key}","{baas_anon,baas_user,baas_service}",f)'],
          'baas.exposed: the functions (not _ ones) and protected tables of exposed schemas, and who may use each');
select is((select policy::jsonb from baas.exposed where name = 'guarded'),
          '{"owner": "owner_id", "acl": null, "tenant": null, "version": null, "read": [], "create": ["authenticated"], "update": [], "delete": [], "tenant_prefix": null}'::jsonb,
          'a table''s row shows its definition');
create schema pt_api2;
create function pt_api2.ping() returns text language sql stable as $$ select 'shadowed' $$;
create function pt_api2.pong() returns text language sql stable as $$ select 'pong' $$;
create table pt_api2.guarded (id int, owner_id uuid);
select baas.protect('pt_api2.guarded', owner => 'owner_id') is not null as made \gset
select baas.expose_schema('pt_api2');
select is(array(select kind || ' ' || schema || '.' || name from baas.exposed order by kind, name),
          array['function pt_api.ping', 'function pt_api2.pong', 'function pt_api.write_it', 'table pt_api.guarded'],
          'baas.exposed: a later exposed schema''s function or table of a name already served is shadowed, not listed');
select is(pg_temp.sqlstate_as('baas_service', 'select count(*) from baas.exposed'), 'ok', 'service tokens may read it');
select is(pg_temp.sqlstate_as('baas_user', 'select count(*) from baas.exposed'), '42501', 'users may not');

-------------------------------------------------------------------- validation
create table public.pt_bad (id int primary key, who text, doc json, v integer, gen uuid generated always as (null::uuid) stored);
create view public.pt_view as select 1 as x;
create table public.pt_parted (id int, k int) partition by list (k);
create table public.pt_part1 partition of public.pt_parted for values in (1);
select is(pg_temp.detail_of($$ select baas.protect('public.pt_bad', owner => 'nobody') $$), '42703 column_not_found', 'an unknown column');
select is(pg_temp.detail_of($$ select baas.protect('public.pt_bad', owner => 'who') $$), '42804 wrong_column_type', 'owner must be uuid');
select is(pg_temp.detail_of($$ select baas.protect('public.pt_bad', acl => 'doc') $$), '42804 wrong_column_type', 'acl must be jsonb');
select is(pg_temp.detail_of($$ select baas.protect('public.pt_bad', version => 'v') $$), '42804 wrong_column_type', 'version must be bigint');
select is(pg_temp.detail_of($$ select baas.protect('public.pt_bad', owner => 'gen') $$), '42804 wrong_column_type', 'a generated owner');
select is(pg_temp.detail_of($$ select baas.protect('public.pt_bad', "read" => '{role:nosuch}') $$), '22023 unknown_principal', 'an unknown role');
select is(pg_temp.detail_of($$ select baas.protect('public.pt_bad', "create" => '{everyone}') $$), '22023 invalid_acl', 'not a principal');
select throws_like($$ select baas.protect('public.pt_bad', "read" => '{public}', "create" => '{everyone}') $$,
                   'protect: the create list: "everyone" is not a principal%', 'the error names the list (create) at fault');
select throws_like($$ select baas.protect('public.pt_bad', "delete" => '{role:nosuch}') $$,
                   'protect: the delete list: unknown principal role:nosuch%', 'and for an unknown principal');
select is(pg_temp.detail_of($$ select baas.protect('public.pt_bad', tenant_prefix => 'x-') $$), '22023 invalid_request', 'a tenant prefix needs a tenant');
select is(pg_temp.detail_of($$ select baas.protect('public.pt_bad', tenant => 'who', tenant_prefix => 'X!') $$), '22023 invalid_request',
          'a tenant prefix starts a role name');
select is(pg_temp.detail_of($$ select baas.protect('public.pt_view') $$), '22023 not_a_table', 'a view');
select is(pg_temp.detail_of($$ select baas.protect('public.pt_part1') $$), '22023 not_a_table', 'a partition');
select is(pg_temp.detail_of($$ select baas.protect('baas.documents') $$), '22023 system_table', 'pgbaas''s own table');
select is(pg_temp.detail_of($$ select baas.protect('pg_catalog.pg_class') $$), '22023 system_table', 'a catalog');
select is(pg_temp.sqlstate_as('baas_service', $$ select baas.protect('public.pt_bad') $$), '42501', 'protect is the DBA''s');

select * from finish();
rollback;
