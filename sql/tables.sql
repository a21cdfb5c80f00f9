-- pgbaas protected tables: the team's own tables under pgbaas permissions (issue 17,
-- docs/tables.md). baas.protect installs forced row-level security policies made from
-- the same principals and rules as documents (sql/permissions.sql); protected tables in
-- exposed schemas (sql/rpc.sql) are served at /v1/tables/{table}.

------------------------------------------------------------------------ definitions
-- One row per protected table: the definition its policies are made from. The tables
-- door serves only tables listed here (and in an exposed schema); the lints compare
-- each table's policies with the ones its definition makes.
create table baas.protected_tables (
    rel regclass primary key,
    -- A uuid column: the row's owner, who may read, update and delete it.
    owner_column name,
    -- A jsonb column holding a document-shaped ACL {"read":[],"update":[],"delete":[]}.
    acl_column name,
    -- A column whose value names the row's tenant (see baas.protect).
    tenant_column name,
    -- A bigint column bumped on every update: the ETag / If-Match version; NULL: xmin.
    version_column name,
    -- Principals that may read / create / update / delete every row (tenant permitting).
    read_principals text[] not null default '{}',
    create_principals text[] not null default '{}',
    update_principals text[] not null default '{}',
    delete_principals text[] not null default '{}',
    protected_at timestamptz not null default now(),
    -- Tenants: a row whose tenant column holds v needs principal role:<prefix><v>
    -- (NULL: role:<v>), so that integer and uuid tenants name valid roles.
    tenant_prefix text
);
revoke all on baas.protected_tables from public;
alter table baas.protected_tables enable row level security;
alter table baas.protected_tables force row level security;
comment on table baas.protected_tables is
    'Tables under pgbaas permissions (baas.protect): the definition their row-level policies are made from';

-- The definitions are the DBA's configuration: a dump keeps them (the policies and
-- triggers they made belong to the tables and are dumped with them).
select pg_catalog.pg_extension_config_dump('baas.protected_tables', '');

-- The rule of sql/permissions.sql for one operation of a definition: the list of
-- principals that operation uses (create: `create`, check: none).
create function baas._protected_rule(def baas.protected_tables, op text) returns text
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select baas._protected_rule(def.rel, def.owner_column, def.acl_column, def.tenant_column,
                                case op when 'read' then def.read_principals when 'create' then def.create_principals
                                        when 'update' then def.update_principals when 'delete' then def.delete_principals
                                        else '{}' end,
                                op, def.tenant_prefix)
$$;

-- A definition as JSON: what baas.protect returns and baas.exposed shows.
create function baas._protected_json(def baas.protected_tables) returns jsonb
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select jsonb_build_object('table', def.rel::text, 'owner', def.owner_column, 'acl', def.acl_column,
                              'tenant', def.tenant_column, 'version', def.version_column,
                              'read', to_jsonb(def.read_principals), 'create', to_jsonb(def.create_principals),
                              'update', to_jsonb(def.update_principals), 'delete', to_jsonb(def.delete_principals),
                              'tenant_prefix', def.tenant_prefix)
$$;

------------------------------------------------------------------------ row guard
-- What row-level security cannot say (a policy sees the new row or the old one, never
-- both), as the documents guard says it for documents (sql/documents.sql), for every
-- protected table. Arguments: the owner, ACL and version columns ('' when none).
--   * insert: a NULL owner becomes the caller (baas.uid()); the version starts at 1.
--   * update: the owner changes only for a privileged caller (the service role, a
--     DBA): nobody gives a row away, or takes one; the ACL changes only for the row's
--     owner or a privileged caller (baas._may_manage); the version counts the change.
--   * the ACL is kept in the documents' canonical form (baas._normalize_acl: sorted,
--     read ⊇ update ∪ delete) and its new principals must exist.
-- Runs as the caller (the policies then check the row it returns), like the documents
-- guard. Loading a dump (row_security off: superusers and BYPASSRLS roles only) keeps
-- rows as they were.
create function baas._protected_guard() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    owner_col text := nullif(tg_argv[0], '');
    acl_col text := nullif(tg_argv[1], '');
    version_col text := nullif(tg_argv[2], '');
    n jsonb := to_jsonb(new);
    o jsonb;
    v_set jsonb := '{}';
    v_acl jsonb;
    v_old_acl jsonb;
begin
    if pg_catalog.current_setting('row_security') = 'off' then
        return new;
    end if;
    if tg_op = 'UPDATE' then
        o := to_jsonb(old);
    end if;
    if owner_col is not null then
        if tg_op = 'INSERT' then
            if jsonb_typeof(n -> owner_col) = 'null' then
                v_set := jsonb_build_object(owner_col, baas.uid());
            end if;
        elsif (n -> owner_col) is distinct from (o -> owner_col) and not baas._is_privileged(current_user::text) then
            raise exception using errcode = '42501', detail = 'forbidden',
                message = format('only the service role may give a row of %s to another owner', tg_relid::regclass);
        end if;
    end if;
    if acl_col is not null then
        v_acl := nullif(n -> acl_col, 'null');
        if tg_op = 'UPDATE' then
            v_old_acl := nullif(o -> acl_col, 'null');
            if v_acl is distinct from v_old_acl
               and not baas._may_manage(case when owner_col is not null then (o ->> owner_col)::uuid end, current_user::text) then
                raise exception using errcode = '42501', detail = 'forbidden',
                    message = format('only the owner may change the ACL of this row of %s', tg_relid::regclass);
            end if;
        end if;
        if v_acl is not null then
            v_acl := baas._normalize_acl(v_acl);
            perform baas._check_new_principals(v_acl, array(
                select x from jsonb_each(coalesce(v_old_acl, '{}')) e,
                              jsonb_array_elements_text(case when jsonb_typeof(e.value) = 'array' then e.value else '[]' end) x));
        end if;
        v_set := v_set || jsonb_build_object(acl_col, v_acl);
    end if;
    if version_col is not null then
        v_set := v_set || jsonb_build_object(version_col,
            case when tg_op = 'INSERT' then 1 else coalesce((o ->> version_col)::bigint, 0) + 1 end);
    end if;
    if v_set <> '{}' then
        new := jsonb_populate_record(new, v_set);
    end if;
    return new;
end
$$;

-- An ACL naming `followers:<id>` notes that account (sql/social.sql), as the documents'
-- audiences trigger does: baas.principals() then gives its followers the principal.
create function baas._protected_audiences() returns trigger
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if baas._restoring() then
        return null;
    end if;
    perform baas._note_audiences(array(
        select x from jsonb_each(coalesce(nullif(to_jsonb(new) -> tg_argv[0], 'null'), '{}')) e,
                      jsonb_array_elements_text(case when jsonb_typeof(e.value) = 'array' then e.value else '[]' end) x));
    return null;
end
$$;

------------------------------------------------------------------------ protect
-- The policies, triggers and grants baas.protect makes, dropped (its own only: the
-- baas_ names); the table's other policies stay. The triggers are on the table and
-- on its inheritance children (see baas._protected_guarded; a partition's are
-- Postgres's clones of the table's and go with them).
create function baas._protected_drop(tbl regclass) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
set client_min_messages = warning
as $$
declare
    p text;
    g regclass;
begin
    foreach p in array array['baas_service', 'baas_read', 'baas_create', 'baas_update', 'baas_delete'] loop
        execute format('drop policy if exists %I on %s', p, tbl);
    end loop;
    for g in select baas._protected_guarded(tbl) loop
        execute format('drop trigger if exists baas_guard on %s', g);
        execute format('drop trigger if exists baas_audiences on %s', g);
    end loop;
end
$$;

-- The sequences of a table's serial and identity columns: inserting as an API role
-- needs USAGE on them.
create function baas._protected_sequences(tbl regclass) returns setof text
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select s from pg_catalog.pg_attribute a, pg_catalog.pg_get_serial_sequence(tbl::text, a.attname) s
     where a.attrelid = tbl and a.attnum > 0 and not a.attisdropped and s is not null
$$;

-- A table's descendants: its partitions and inheritance children, at every depth.
-- Queried through the table they obey its policies; queried directly, their own.
create function baas._protected_descendants(tbl regclass) returns setof regclass
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    with recursive d(rel) as (
        select i.inhrelid from pg_catalog.pg_inherits i where i.inhparent = tbl
        union
        select i.inhrelid from pg_catalog.pg_inherits i join d on i.inhparent = d.rel)
    select d.rel::regclass from d
$$;

-- The tables whose rows the guard triggers of protected table `tbl` must watch: the
-- table and its inheritance children that are not protected themselves (a row trigger
-- fires on the table that holds the row, even when the statement names the parent).
-- Partitions are left out: Postgres clones a partitioned table's row triggers onto
-- them (the lint checks the clones).
create function baas._protected_guarded(tbl regclass) returns setof regclass
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select tbl
    union all
    select k from baas._protected_descendants(tbl) k
     where not (select c.relispartition from pg_catalog.pg_class c where c.oid = k)
       and not exists (select from baas.protected_tables p where p.rel = k)
$$;

-- Put a table under pgbaas permissions (docs/tables.md). DBA only: SECURITY INVOKER,
-- so Postgres's own checks decide (the table's owner or a superuser may change its
-- policies; only they can write baas.protected_tables), and not granted to anyone.
-- Validates the columns and principals, records the definition, forces row-level
-- security and (re)makes the baas_ policies from the rule of sql/permissions.sql, the
-- guard triggers and the API roles' grants. Protecting again replaces them.
--   * Existing rows' ACLs are brought to the canonical form (their principals must
--     exist): a row whose ACL is not valid stops it (22023 invalid_acl, naming it).
--   * A permissive policy it did not make, for an API role or PUBLIC, would widen the
--     rule: 22023 foreign_policy (drop it, or make it AS RESTRICTIVE).
--   * Partitions and inheritance children (not protected themselves) lose the API
--     roles' privileges and get forced row-level security with no policies: they are
--     reached through the table only.
create function baas.protect(tbl regclass, owner name default null, acl name default null,
                             tenant name default null, "read" text[] default null,
                             "create" text[] default null, "update" text[] default null,
                             "delete" text[] default null, version name default null,
                             tenant_prefix text default null) returns jsonb
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    c record;
    v record;
    col record;
    lists jsonb;
    creators jsonb;
    def baas.protected_tables;
    seq text;
    child regclass;
    msg text;
    code text;
    row_oid oid;
    row_key text;
    row_name text;
    row_label text;
    row_acl jsonb;
    norm jsonb;
begin
    if tbl is null then
        perform baas._raise('22023', 'invalid_request', 'protect: the table is required');
    end if;
    select k.relkind, k.relispartition, n.nspname into c
      from pg_catalog.pg_class k join pg_catalog.pg_namespace n on n.oid = k.relnamespace where k.oid = tbl;
    if not found then
        perform baas._raise('42P01', 'table_not_found', format('no table with oid %s', tbl::oid));
    elsif c.nspname in ('baas', 'information_schema') or c.nspname like 'pg\_%' then
        perform baas._raise('22023', 'system_table',
            format('%s is in schema %I, which holds Postgres''s or pgbaas''s own tables: protect your own tables', tbl, c.nspname));
    elsif c.relkind not in ('r', 'p') then
        perform baas._raise('22023', 'not_a_table',
            format('%s is not a table (a view, materialized view, foreign table or sequence): protect a table', tbl));
    elsif c.relispartition then
        perform baas._raise('22023', 'not_a_table',
            format('%s is a partition of %s: protect the partitioned table', tbl,
                   (select i.inhparent::regclass from pg_catalog.pg_inherits i where i.inhrelid = tbl)));
    end if;
    for v in select * from (values ('owner', protect.owner, 'uuid'::regtype), ('acl', protect.acl, 'jsonb'::regtype),
                                   ('tenant', protect.tenant, null), ('version', protect.version, 'bigint'::regtype)) x(what, col, want)
              where x.col is not null loop
        select a.atttypid::regtype as typ, a.attgenerated into col from pg_catalog.pg_attribute a
         where a.attrelid = tbl and a.attname = v.col and a.attnum > 0 and not a.attisdropped;
        if not found then
            perform baas._raise('42703', 'column_not_found', format('%s has no column %I (the %s column)', tbl, v.col, v.what));
        elsif v.want is not null and col.typ <> v.want then
            perform baas._raise('42804', 'wrong_column_type',
                format('the %s column %I of %s is %s: it must be %s', v.what, v.col, tbl, col.typ, v.want));
        elsif v.what <> 'tenant' and col.attgenerated <> '' then
            perform baas._raise('42804', 'wrong_column_type',
                format('the %s column %I of %s is generated: pgbaas sets it', v.what, v.col, tbl));
        end if;
    end loop;
    if protect.tenant_prefix is not null then
        if protect.tenant is null then
            perform baas._raise('22023', 'invalid_request', 'protect: tenant_prefix needs a tenant column');
        elsif protect.tenant_prefix !~ '^[a-z][a-z0-9_.-]{0,61}$' then
            perform baas._raise('22023', 'invalid_request',
                format('protect: tenant_prefix %L must start a role name: a lowercase letter, then lowercase letters, digits, _ . or -',
                       protect.tenant_prefix));
        end if;
    end if;
    -- Principals as in a document's ACL, each list checked on its own (an error names
    -- it), each naming an account or role that exists.
    for v in select * from (values ('read', protect."read"), ('create', protect."create"),
                                   ('update', protect."update"), ('delete', protect."delete")) x(what, list)
              where x.list is not null loop
        begin
            perform baas._check_new_principals(baas._normalize_acl(jsonb_build_object('read', to_jsonb(v.list))));
        exception when sqlstate '22023' then
            get stacked diagnostics msg = message_text, code = pg_exception_detail;
            perform baas._raise('22023', code, format('protect: the %s list: %s', v.what, regexp_replace(msg, '^acl\.read ', '')));
        end;
    end loop;
    -- Canonical, read ⊇ update ∪ delete: whoever may change a row may see it.
    lists := baas._normalize_acl(jsonb_build_object('read', coalesce(to_jsonb(protect."read"), '[]'),
                                                    'update', coalesce(to_jsonb(protect."update"), '[]'),
                                                    'delete', coalesce(to_jsonb(protect."delete"), '[]')));
    creators := baas._normalize_acl(jsonb_build_object('read', coalesce(to_jsonb(protect."create"),
        case when protect.owner is not null then '["authenticated"]'::jsonb else '[]' end))) -> 'read';

    -- Definitions of tables dropped since: their oids could name another table one day.
    delete from baas.protected_tables p where not exists (select from pg_catalog.pg_class k where k.oid = p.rel);

    insert into baas.protected_tables as p (rel, owner_column, acl_column, tenant_column, version_column,
                                            read_principals, create_principals, update_principals, delete_principals,
                                            tenant_prefix)
    values (tbl, protect.owner, protect.acl, protect.tenant, protect.version,
            array(select jsonb_array_elements_text(lists -> 'read')), array(select jsonb_array_elements_text(creators)),
            array(select jsonb_array_elements_text(lists -> 'update')), array(select jsonb_array_elements_text(lists -> 'delete')),
            protect.tenant_prefix)
    on conflict on constraint protected_tables_pkey do update
       set owner_column = excluded.owner_column, acl_column = excluded.acl_column,
           tenant_column = excluded.tenant_column, version_column = excluded.version_column,
           read_principals = excluded.read_principals, create_principals = excluded.create_principals,
           update_principals = excluded.update_principals, delete_principals = excluded.delete_principals,
           tenant_prefix = excluded.tenant_prefix, protected_at = now()
    returning * into def;

    perform baas._protected_drop(tbl);
    select p.polname into msg from pg_catalog.pg_policy p
     where p.polrelid = tbl and p.polpermissive
       and exists (select from unnest(p.polroles::oid[]) x, (values ('baas_anon'), ('baas_user'), ('baas_service')) r(rolname)
                    where x = 0 or pg_catalog.pg_has_role(r.rolname, x, 'MEMBER'))
     order by 1 limit 1;
    if found then
        perform baas._raise('22023', 'foreign_policy',
            format('policy %I on %s is permissive and applies to an API role: it would widen the rule (drop it, or make it AS RESTRICTIVE), then protect the table',
                   msg, tbl));
    end if;

    -- The rows already there: their ACLs canonical (the owner's own policies read them
    -- as documents' are read), their principals existing, their followers: noted. The
    -- table's owner reads and writes them without the policies (row-level security
    -- unforced for the while; the guard trigger is gone until below).
    execute format('alter table %s no force row level security', tbl);
    if def.acl_column is not null then
        select coalesce('(' || string_agg(format('%I', a.attname), ', ' order by k.n) || ')::text', 'ctid::text')
          into row_label
          from pg_catalog.pg_index i, unnest(i.indkey) with ordinality k(attnum, n), pg_catalog.pg_attribute a
         where i.indrelid = tbl and i.indisprimary and a.attrelid = tbl and a.attnum = k.attnum;
        for row_oid, row_key, row_name, row_acl in execute format(
                'select tableoid, ctid::text, %s, %I from %s where %I is not null',
                row_label, def.acl_column, tbl, def.acl_column) loop
            begin
                norm := baas._normalize_acl(row_acl);
                perform baas._check_new_principals(norm);
            exception when sqlstate '22023' then
                get stacked diagnostics msg = message_text;
                perform baas._raise('22023', 'invalid_acl',
                    format('protect: the ACL of row %s of %s is not valid (%s): correct it, then protect the table',
                           row_name, row_oid::regclass, msg));
            end;
            if norm is distinct from row_acl then
                execute format('update %s set %I = $1 where tableoid = $2 and ctid = $3::tid', tbl, def.acl_column)
                  using norm, row_oid, row_key;
            end if;
        end loop;
        -- Qualified names only: the table's own columns (an `x`, an `e`) must not stand in.
        execute format('select baas._note_audiences(array(select distinct p.principal from %s t, pg_catalog.jsonb_each(t.%I) e, '
                       'pg_catalog.jsonb_array_elements_text(case when pg_catalog.jsonb_typeof(e.value) = ''array'' then e.value else ''[]'' end) p(principal) '
                       'where p.principal like ''followers:%%''))', tbl, def.acl_column);
    end if;
    -- The table-wide lists' followers: principals, as a collection's create list's.
    perform baas._note_audiences(def.read_principals || def.create_principals || def.update_principals || def.delete_principals);

    execute format('alter table %s enable row level security', tbl);
    execute format('alter table %s force row level security', tbl);
    execute format('create policy baas_service on %s to baas_service using (true) with check (true)', tbl);
    execute format('create policy baas_read on %s for select to baas_anon, baas_user using (%s)',
                   tbl, baas._protected_rule(def, 'read'));
    execute format('create policy baas_create on %s for insert to baas_anon, baas_user with check (%s)',
                   tbl, baas._protected_rule(def, 'create'));
    execute format('create policy baas_update on %s for update to baas_anon, baas_user using (%s) with check (%s)',
                   tbl, baas._protected_rule(def, 'update'), baas._protected_rule(def, 'check'));
    execute format('create policy baas_delete on %s for delete to baas_anon, baas_user using (%s)',
                   tbl, baas._protected_rule(def, 'delete'));
    for child in select baas._protected_guarded(tbl) loop
        execute format('create trigger baas_guard before insert or update on %s for each row '
                       'execute function baas._protected_guard(%L, %L, %L)',
                       child, coalesce(def.owner_column, ''), coalesce(def.acl_column, ''), coalesce(def.version_column, ''));
        if def.acl_column is not null then
            execute format('create trigger baas_audiences after insert or update of %I on %s for each row '
                           'when (new.%I::text like ''%%followers:%%'') execute function baas._protected_audiences(%L)',
                           def.acl_column, child, def.acl_column, def.acl_column);
        end if;
    end loop;
    execute format('grant select, insert, update, delete on %s to baas_anon, baas_user, baas_service', tbl);
    for seq in select baas._protected_sequences(tbl) loop
        execute format('grant usage on sequence %s to baas_anon, baas_user, baas_service', seq);
    end loop;
    -- Its partitions and inheritance children: through the table only.
    for child in select d from baas._protected_descendants(tbl) d
                  where not exists (select from baas.protected_tables p where p.rel = d) loop
        execute format('revoke all on %s from baas_anon, baas_user, baas_service', child);
        execute format('alter table %s enable row level security', child);
        execute format('alter table %s force row level security', child);
    end loop;
    return baas._protected_json(def);
end
$$;
comment on function baas.protect(regclass, name, name, name, text[], text[], text[], text[], name, text) is
    'Put a table under pgbaas permissions: owner (uuid), acl (jsonb), tenant and version (bigint) columns, read/create/update/delete principals, a tenant role prefix; forced RLS policies from sql/permissions.sql''s rule';

-- Take a table out from under pgbaas permissions: its baas_ policies and triggers, the
-- API roles' grants (on the table and its sequences) and its definition go; row-level
-- security stays on and forced, so without policies of the team's own only privileged
-- roles see its rows. False when it was not protected.
create function baas.unprotect(tbl regclass) returns boolean
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    seq text;
begin
    if not exists (select from baas.protected_tables p where p.rel = tbl) then
        return false;
    end if;
    perform baas._protected_drop(tbl);
    execute format('revoke select, insert, update, delete on %s from baas_anon, baas_user, baas_service', tbl);
    for seq in select baas._protected_sequences(tbl) loop
        execute format('revoke usage on sequence %s from baas_anon, baas_user, baas_service', seq);
    end loop;
    delete from baas.protected_tables p where p.rel = tbl;
    return true;
end
$$;
comment on function baas.unprotect(regclass) is
    'Take a table out from under pgbaas permissions: drops its baas_ policies and triggers and the API roles'' grants; true when it was protected';

------------------------------------------------------------------------ helpers
-- For the team's own policies and functions (docs/tables.md, "Helpers"). Each answers
-- for the caller, as the caller: SECURITY INVOKER, so inside a policy or a function it
-- is the current role with the current claims that asks, through the same policies as
-- every other door. STABLE: a policy may call them once per row or, written as
-- (select baas.has_role('x')), once per statement.

-- Is the caller in application role `name`, directly or through nested roles?
create function baas.has_role(name text) returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select coalesce(has_role.name = any (baas.roles()), false)
$$;
comment on function baas.has_role(text) is 'Whether the caller is in this application role, nested roles included';

-- May the caller read document `id` of `collection`? Asked of the documents' own read
-- policy: false for an unknown collection, a malformed id or a document the caller
-- may not see, alike.
create function baas.can_read(collection text, id text) returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select exists (select from baas.documents d
                    where d.collection_id = (select c.id from baas.collections c where c.name = can_read.collection)
                      and d.id = baas._parse_document_id(can_read.id))
$$;
comment on function baas.can_read(text, text) is 'Whether the caller may read this document (its collection''s policies decide)';

-- May the caller read file `id` (its metadata and bytes)? A file is a document of a
-- bucket, read under the same policy.
create function baas.can_read_file(id uuid) returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select exists (select from baas.documents d where d.id = can_read_file.id and d.blob_id is not null)
$$;
comment on function baas.can_read_file(uuid) is 'Whether the caller may read this file';

------------------------------------------------------------------------ what is exposed
-- What the doors serve, to whom (docs/tables.md, "What is exposed"): the functions of
-- the exposed schemas (sql/rpc.sql; names starting with _ are never served) and the
-- protected tables in them, with the API roles that may call or read each (EXECUTE or
-- SELECT, and USAGE on the schema: which tokens may reach it at all; a table's
-- policies still decide which rows) and, for a table, its definition. Only the first
-- exposed schema's entries of a name: the one the doors resolve it to. For DBAs and
-- service tokens; as the caller (security_invoker), so it shows what Postgres says.
create view baas.exposed with (security_invoker = true) as
    select kind, schema, name, signature, http, roles, security_definer, policy
      from (select x.*, min(x.pos) over (partition by x.kind, x.name) as first_pos
              from (select 'function'::text as kind, n.nspname::text as schema, p.proname::text as name,
                           format('%I.%I(%s)', n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid)) as signature,
                           case when p.provolatile in ('s', 'i') then 'GET, POST /v1/rpc/' else 'POST /v1/rpc/' end || p.proname as http,
                           array(select r from unnest(array['baas_anon', 'baas_user', 'baas_service']) r
                                  where pg_catalog.has_function_privilege(r, p.oid, 'EXECUTE')
                                    and pg_catalog.has_schema_privilege(r, n.oid, 'USAGE')) as roles,
                           p.prosecdef as security_definer,
                           null::text as policy,
                           pg_catalog.array_position(baas._exposed_schemas(), n.oid) as pos
                      from pg_catalog.pg_proc p
                      join pg_catalog.pg_namespace n on n.oid = p.pronamespace
                     where n.oid = any (baas._exposed_schemas()) and p.prokind = 'f' and p.proname not like '\_%'
                    union all
                    select 'table', n.nspname, c.relname,
                           format('%I.%I', n.nspname, c.relname),
                           format('GET, POST /v1/tables/%1$s; GET, PATCH, DELETE /v1/tables/%1$s/{key}', c.relname),
                           array(select r from unnest(array['baas_anon', 'baas_user', 'baas_service']) r
                                  where pg_catalog.has_table_privilege(r, c.oid, 'SELECT')
                                    and pg_catalog.has_schema_privilege(r, n.oid, 'USAGE')),
                           false,
                           jsonb_build_object('owner', d.owner_column, 'acl', d.acl_column, 'tenant', d.tenant_column,
                                              'version', d.version_column, 'read', to_jsonb(d.read_principals),
                                              'create', to_jsonb(d.create_principals), 'update', to_jsonb(d.update_principals),
                                              'delete', to_jsonb(d.delete_principals), 'tenant_prefix', d.tenant_prefix)::text,
                           pg_catalog.array_position(baas._exposed_schemas(), n.oid)
                      from baas.protected_tables d
                      join pg_catalog.pg_class c on c.oid = d.rel
                      join pg_catalog.pg_namespace n on n.oid = c.relnamespace
                     where n.oid = any (baas._exposed_schemas())) x) y
     -- The doors look a name up in the exposed schemas in order: a later schema's
     -- function or table of the same name is shadowed, never served.
     where y.pos = y.first_pos;
comment on view baas.exposed is
    'What the HTTP doors serve: functions and protected tables of the exposed schemas, the API roles that may call or read each, and a table''s definition';
-- Service tokens read the definitions through it (DBAs bypass row-level security).
create policy protected_tables_service on baas.protected_tables for select to baas_service using (true);

------------------------------------------------------------------------ lints
-- The protected tables' security lints, one branch of baas.security_lints() (sql/lints.sql).
--   protected_table_drift: a protected table whose row-level security is off or not
--     forced; one of its baas_ policies missing, or not what its definition makes now
--     (text, command, roles, permissive); or a permissive policy baas.protect did not
--     make that applies to an API role (it would widen the rule; restrictive ones only
--     narrow it).
--     Its guard trigger missing, disabled or changed; an API role granted TRUNCATE,
--     TRIGGER or REFERENCES on it (row-level security does not govern those).
--   unprotected_table_exposed: a table (or a view that is not security_invoker) in an
--     exposed schema that an API role may read or write, that is not protected: its
--     rows are not under pgbaas's rule.
create function baas._table_lints()
returns table (lint text, object text, detail text)
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
    return query
    select 'protected_table_drift'::text, d.rel::text,
           case when not c.relrowsecurity then 'row-level security is off: protect the table again'
                else 'row-level security is not forced: protect the table again' end
      from baas.protected_tables d
      join pg_class c on c.oid = d.rel
     where not (c.relrowsecurity and c.relforcerowsecurity)
    union all
    select 'protected_table_drift', format('policy %I on %s', e.polname, d.rel),
           case when p.oid is null then 'missing: baas.protect makes it (protect the table again)'
                else format('not what its definition makes (%s / %s): protect the table again',
                            coalesce(pg_get_expr(p.polqual, p.polrelid), '-'),
                            coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '-')) end
      from baas.protected_tables d
      join pg_class c on c.oid = d.rel
      cross join lateral (values
          ('baas_read', 'r', false, baas._protected_rule(d, 'read'), null::text),
          ('baas_create', 'a', false, null, baas._protected_rule(d, 'create')),
          ('baas_update', 'w', false, baas._protected_rule(d, 'update'), baas._protected_rule(d, 'check')),
          ('baas_delete', 'd', false, baas._protected_rule(d, 'delete'), null),
          ('baas_service', '*', true, 'true', 'true')) e(polname, cmd, service, qual, wcheck)
      left join pg_policy p on p.polrelid = d.rel and p.polname = e.polname
     where p.oid is null or not p.polpermissive or p.polcmd::text <> e.cmd
        or pg_get_expr(p.polqual, p.polrelid) is distinct from e.qual
        or pg_get_expr(p.polwithcheck, p.polrelid) is distinct from e.wcheck
        or (select array_agg(x order by x) from unnest(p.polroles::oid[]) x)
           is distinct from (select array_agg(x order by x) from unnest(
               case when e.service then array['baas_service'::regrole::oid]
                    else array['baas_anon'::regrole::oid, 'baas_user'::regrole::oid] end) x)
    union all
    select 'protected_table_drift', format('policy %I on %s', p.polname, d.rel),
           'a permissive policy baas.protect did not make, for an API role: it widens the table''s rule (make it restrictive, or drop it)'
      from baas.protected_tables d
      join pg_policy p on p.polrelid = d.rel
     where p.polpermissive
       and p.polname not in ('baas_read', 'baas_create', 'baas_update', 'baas_delete', 'baas_service')
       and exists (select from unnest(p.polroles::oid[]) x, (values ('baas_anon'), ('baas_user'), ('baas_service')) r(rolname)
                    where x = 0 or pg_has_role(r.rolname, x, 'MEMBER'))
    union all
    -- The guard triggers say what the policies cannot (no giving rows away, the ACL
    -- the owner's, followers noted): present, firing (enabled in origin or always mode:
    -- not 'D', nor 'R', which fires only for replication), row-level, before insert or
    -- update for the guard (after insert or update of the ACL column for the audiences
    -- trigger), with no column list or WHEN clause of anyone else's, the function and
    -- arguments protect gave. tgtype bits (Postgres's trigger.h): ROW 1, BEFORE 2,
    -- INSERT 4, DELETE 8, UPDATE 16. Arguments compared as bytes, as Postgres keeps them.
    -- On the table, its inheritance children and its partitions (cloned triggers).
    select 'protected_table_drift', format('trigger %s on %s', e.tgname, g.rel),
           case when t.oid is null then 'missing: baas.protect makes it (protect the table again)'
                when t.tgenabled not in ('O', 'A') then 'disabled: owners could lose their rows (enable it, or protect the table again)'
                else 'not what its definition makes: protect the table again' end
      from baas.protected_tables d
      join pg_class c on c.oid = d.rel
      cross join lateral (select d.rel as rel
                          union all
                          select k from baas._protected_descendants(d.rel) k
                           where not exists (select from baas.protected_tables p where p.rel = k)) g
      cross join lateral (
          select 'baas_guard'::name as tgname, 'baas._protected_guard()'::regprocedure::oid as fn,
                 (1 | 2 | 4 | 16)::int2 as tgtype, '{}'::int2[] as attrs, false as has_when,
                 convert_to(coalesce(d.owner_column, ''), getdatabaseencoding()) || '\x00'::bytea
                 || convert_to(coalesce(d.acl_column, ''), getdatabaseencoding()) || '\x00'::bytea
                 || convert_to(coalesce(d.version_column, ''), getdatabaseencoding()) || '\x00'::bytea as args
          union all
          select 'baas_audiences', 'baas._protected_audiences()'::regprocedure::oid, (1 | 4 | 16)::int2,
                 array(select a.attnum from pg_attribute a where a.attrelid = g.rel and a.attname = d.acl_column),
                 true, convert_to(d.acl_column, getdatabaseencoding()) || '\x00'::bytea
           where d.acl_column is not null) e
      left join pg_trigger t on t.tgrelid = g.rel and t.tgname = e.tgname
     where t.oid is null or t.tgenabled not in ('O', 'A') or t.tgfoid <> e.fn or t.tgtype <> e.tgtype
        or array(select unnest(t.tgattr::int2[])) <> e.attrs or (t.tgqual is not null) <> e.has_when
        or t.tgargs is distinct from e.args
        or (e.has_when and pg_get_triggerdef(t.oid) not like
            '% WHEN (((new.' || replace(replace(replace(quote_ident(d.acl_column), '\', '\\'), '%', '\%'), '_', '\_')
            || ')::text ~~ ''\%followers:\%''::text)) EXECUTE %')
    union all
    -- Privileges row-level security does not govern: TRUNCATE empties the table
    -- whatever the policies say; TRIGGER and REFERENCES are the DBA's.
    select 'protected_table_drift', format('%s to %s', d.rel, r.rolname),
           format('%s may %s it, which row-level security does not govern: revoke it', r.rolname, lower(x.priv))
      from baas.protected_tables d
      join pg_class c on c.oid = d.rel
      cross join (values ('baas_anon'), ('baas_user'), ('baas_service')) r(rolname)
      cross join (values ('TRUNCATE'), ('TRIGGER'), ('REFERENCES')) x(priv)
     where has_table_privilege(r.rolname, d.rel, x.priv)
    union all
    -- A partition or inheritance child of a protected table is reached through it, under
    -- its policies; an API role's privilege on the child itself would pass them by.
    select 'protected_table_drift', format('%s to %s', k.rel, r.rolname),
           format('%s may use %s, a partition or inheritance child of protected table %s, directly: revoke it (protect %s again)',
                  r.rolname, k.rel, d.rel, d.rel)
      from baas.protected_tables d
      join pg_class c on c.oid = d.rel
      cross join lateral baas._protected_descendants(d.rel) k(rel)
      cross join (values ('baas_anon'), ('baas_user'), ('baas_service')) r(rolname)
     where not exists (select from baas.protected_tables p where p.rel = k.rel)
       and (has_any_column_privilege(r.rolname, k.rel, 'SELECT, INSERT, UPDATE, REFERENCES')
            or has_table_privilege(r.rolname, k.rel, 'DELETE, TRUNCATE, TRIGGER'))
    union all
    select 'unprotected_table_exposed', c.oid::regclass::text,
           case when c.relispartition
                then format('in exposed schema %I, usable by %s, and not protected: a partition of %s, whose policies apply only through it: revoke the grants (and protect %s)',
                            n.nspname, array_to_string(a.roles, ', '), pg_partition_root(c.oid), pg_partition_root(c.oid))
                when exists (select from pg_inherits i where i.inhparent = c.oid)
                then format('in exposed schema %I, usable by %s, and not protected: protect it (baas.protect, which also closes its partitions and children) or revoke the grants',
                            n.nspname, array_to_string(a.roles, ', '))
                else format('in exposed schema %I, usable by %s, and not protected: protect it (baas.protect) or revoke the grants',
                            n.nspname, array_to_string(a.roles, ', ')) end
      from pg_class c
      join pg_namespace n on n.oid = c.relnamespace
      cross join lateral (select array(select r from unnest(array['baas_anon', 'baas_user', 'baas_service']) r
                                        where has_any_column_privilege(r, c.oid, 'SELECT, INSERT, UPDATE')
                                           or has_table_privilege(r, c.oid, 'DELETE')) as roles) a
     where c.relnamespace = any (baas._exposed_schemas())
       and c.relkind in ('r', 'p', 'v', 'm', 'f')
       and cardinality(a.roles) > 0
       -- A security_invoker view reads its tables as the caller: their policies apply.
       and not (c.relkind = 'v' and exists (select from unnest(c.reloptions) o
                                              where lower(o) in ('security_invoker=true', 'security_invoker=on', 'security_invoker=1')))
       and not exists (select from baas.protected_tables d where d.rel = c.oid)
       -- A descendant of a protected table: protected_table_drift says it.
       and not exists (select from baas.protected_tables d where c.oid in (select baas._protected_descendants(d.rel)));
end
$$;

------------------------------------------------------------------------ http door (package C)
-- Protected tables over HTTP (docs/tables.md, "Over HTTP"): /v1/tables/{table}. Each
-- door function is SECURITY INVOKER: it looks the table up through
-- baas._served_table (the only definer here; it reads the definitions and the
-- catalog), has the Rust compiler (extension/src/api/tables.rs) build the statement
-- from those catalog facts -- quoted names, every client value one element of one text[]
-- bind parameter cast to its column's type -- and runs it as the caller, so grants and
-- the table's row-level policies decide what is seen and written.

-- A served table's facts: {rel, name, key, version, columns: [{name, oid, elem, type,
-- not_null, read_only, eq, ord}]}. Served: a table of that name in the first exposed
-- schema holding a table of that name, listed in baas.protected_tables; anything else
-- is 404 table_not_found (an unprotected table is never served, even when a later
-- exposed schema has a protected one of that name). A protected table whose row-level
-- security was turned off (or is not forced) is not served either: 503
-- table_unprotected. `type` is format_type(oid, -1), so char(n) is bpchar and the
-- column's own typmod applies on assignment; read_only: GENERATED ALWAYS; eq / ord:
-- the type (an array's element type, a domain's base type) has an equality operator /
-- a default btree ordering, as the parser finds them (its own opclass, or one of a type
-- it is implicitly binary-coercible to; enums and ranges).
create function baas._served_table(name text) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v jsonb;
    secured boolean;
begin
    select case when p.rel is not null then pg_catalog.jsonb_build_object(
               'rel', pg_catalog.format('%I.%I', n.nspname, c.relname),
               'name', c.relname,
               'key', coalesce((select pg_catalog.jsonb_agg(a.attname order by k.i)
                                  from pg_catalog.pg_index x
                                 cross join lateral pg_catalog.unnest(x.indkey::int2[]) with ordinality k(attnum, i)
                                  join pg_catalog.pg_attribute a on a.attrelid = c.oid and a.attnum = k.attnum
                                 where x.indrelid = c.oid and x.indisprimary), '[]'::jsonb),
               'version', p.version_column,
               'columns', (select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                                      'name', a.attname,
                                      'oid', bt.oid::bigint,
                                      'elem', case when bt.typcategory = 'A' then bt.typelem::bigint else 0 end,
                                      'type', pg_catalog.format_type(a.atttypid, -1),
                                      'not_null', a.attnotnull,
                                      'read_only', a.attidentity = 'a' or a.attgenerated <> '',
                                      'eq', ops.eq,
                                      'ord', ops.ord) order by a.attnum)
                             from pg_catalog.pg_attribute a
                             join pg_catalog.pg_type ty on ty.oid = a.atttypid
                             join pg_catalog.pg_type bt on bt.oid = case when ty.typtype = 'd' then ty.typbasetype else ty.oid end
                             join pg_catalog.pg_type et0 on et0.oid = case when bt.typcategory = 'A' then bt.typelem else bt.oid end
                             join pg_catalog.pg_type et on et.oid = case when et0.typtype = 'd' then et0.typbasetype else et0.oid end
                             cross join lateral (
                                 select et.typtype in ('e', 'r', 'm') or pg_catalog.bool_or(m.amname = 'btree') is true as ord,
                                        et.typtype in ('e', 'r', 'm') or pg_catalog.count(m.amname) > 0 as eq
                                   from pg_catalog.pg_opclass o
                                   join pg_catalog.pg_am m on m.oid = o.opcmethod and m.amname in ('btree', 'hash')
                                  where o.opcdefault
                                    and (o.opcintype = et.oid
                                         or exists (select from pg_catalog.pg_cast k
                                                     where k.castsource = et.oid and k.casttarget = o.opcintype
                                                       and k.castmethod = 'b' and k.castcontext = 'i'))) ops
                            where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped))
           end,
           c.relrowsecurity and c.relforcerowsecurity
      into v, secured
      from pg_catalog.unnest(baas._exposed_schemas()) with ordinality s(nsp, pos)
      join pg_catalog.pg_class c on c.relnamespace = s.nsp and c.relname = _served_table.name and c.relkind in ('r', 'p')
      join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      left join baas.protected_tables p on p.rel = c.oid
     order by s.pos
     limit 1;
    if v is null then
        raise exception using errcode = 'P0002', detail = 'table_not_found', message = 'table not found';
    end if;
    if not secured then
        raise exception using errcode = '55000', detail = 'table_unprotected',
            message = pg_catalog.format('table %s is protected but its row-level security is off (or not forced): not served until baas.protect is run again', v ->> 'name');
    end if;
    return v;
end
$$;

-- A row body with each JSON number (at the top, or in an array) for a column that is
-- not json/jsonb turned into a string of its exact digits, so that numbers reach the
-- compiler (whose JSON numbers are binary floats) without rounding.
create function baas._table_exact_numbers(t jsonb, body jsonb) returns jsonb
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
    select case when pg_catalog.jsonb_typeof(body) is distinct from 'object' then body else
      coalesce((select pg_catalog.jsonb_object_agg(e.key,
                  case when exists (select from pg_catalog.jsonb_array_elements(t -> 'columns') c
                                     where c ->> 'name' = e.key and (c ->> 'elem')::bigint = 0
                                       and (c ->> 'oid')::bigint in (114, 3802))
                         then e.value
                       when pg_catalog.jsonb_typeof(e.value) = 'number' then pg_catalog.to_jsonb(e.value #>> '{}')
                       when pg_catalog.jsonb_typeof(e.value) = 'array' then
                         coalesce((select pg_catalog.jsonb_agg(case when pg_catalog.jsonb_typeof(x.v) = 'number'
                                                                    then pg_catalog.to_jsonb(x.v #>> '{}') else x.v end order by x.i)
                                     from pg_catalog.jsonb_array_elements(e.value) with ordinality x(v, i)), '[]'::jsonb)
                       else e.value end)
                  from pg_catalog.jsonb_each(body) e), '{}'::jsonb)
    end
$$;

-- Cast every value of a compiled statement to its column's type before it runs, so a
-- value that does not fit is refused naming its column: 400 invalid_query (a filter,
-- or `after`), 400 invalid_value (a row), 404 row_not_found (a key nothing can have).
create function baas._table_check(q jsonb) returns void
language plpgsql stable
as $$
declare
    c jsonb;
    p text[] := array(select pg_catalog.jsonb_array_elements_text(q -> 'params'));
begin
    if pg_catalog.jsonb_array_length(q -> 'checks') = 0 then
        return;
    end if;
    begin
        execute 'select ' || (select pg_catalog.string_agg(x ->> 'expr', ', ') from pg_catalog.jsonb_array_elements(q -> 'checks') x)
            using p;
    exception when data_exception or check_violation or not_null_violation then
        for c in select x from pg_catalog.jsonb_array_elements(q -> 'checks') x loop
            begin
                execute 'select ' || (c ->> 'expr') using p;
            exception when data_exception or check_violation or not_null_violation then
                if c ->> 'role' = 'key' then
                    raise exception using errcode = 'P0002', detail = 'row_not_found', message = 'row not found';
                end if;
                if c ->> 'role' = 'after' then
                    raise exception using errcode = '22023', detail = 'invalid_query',
                        message = pg_catalog.format('after: not a key of this table (%s)', sqlerrm);
                end if;
                raise exception using errcode = '22023',
                    detail = case when c ->> 'role' = 'query' then 'invalid_query' else 'invalid_value' end,
                    message = pg_catalog.format('column %s: %s', c ->> 'column', sqlerrm);
            end;
        end loop;
        raise;
    end;
end
$$;

-- Why did an update or delete touch no row? Not visible: 404. Stale If-Match: 412 with
-- the current version (HINT, the reply's ETag). Visible but not writable: 403.
create function baas._table_explain_miss(q jsonb, p text[], if_match bigint, verb text) returns void
language plpgsql stable
as $$
declare
    v bigint;
    same boolean;
    n bigint;
begin
    execute q ->> 'probe' into v, same using p;
    -- (EXECUTE does not set FOUND.)
    get diagnostics n = row_count;
    if n = 0 then
        raise exception using errcode = 'P0002', detail = 'row_not_found', message = 'row not found';
    end if;
    if not same then
        raise exception using errcode = '22023', detail = 'invalid_value',
            message = pg_catalog.format('generated column(s) %s cannot be written: send the row''s own value or leave them out',
                                        (select pg_catalog.string_agg(pg_catalog.quote_ident(x), ', ') from pg_catalog.jsonb_array_elements_text(q -> 'read_only') x));
    end if;
    if if_match is not null and v is distinct from if_match then
        raise exception using errcode = '40001', detail = 'version_conflict', hint = v::text,
            message = pg_catalog.format('row is at version %s, not %s', v, if_match);
    end if;
    raise exception using errcode = '42501', detail = 'forbidden',
        message = pg_catalog.format('you may read this row but not %s it', verb);
end
$$;

-- GET /v1/tables/{table}: {"items": [...], "next": cursor or null, "count"?: n}. `next`
-- is an opaque cursor (the last row's order values and key) when the page is full:
-- pass it as `after`, with the same order, for the next page.
create function baas.table_list(tbl text, filter jsonb default '{}', "order" text default null,
                                lim integer default 100, off integer default 0,
                                with_count boolean default false, after text default null,
                                fields text[] default null)
returns jsonb
language plpgsql stable
as $$
declare
    t jsonb := baas._served_table(tbl);
    q jsonb;
    p text[];
    v_items jsonb;
    v_last text;
    v_n bigint;
    r jsonb;
begin
    if lim is null or lim < 0 or lim > 1000 then
        raise exception using errcode = '22023', detail = 'invalid_query', message = 'limit must be between 0 and 1000';
    end if;
    if off is null or off < 0 then
        raise exception using errcode = '22023', detail = 'invalid_query', message = 'offset must be 0 or more';
    end if;
    q := baas._table_list_sql(t, coalesce(filter, '{}'), "order", fields, after);
    perform baas._table_check(q);
    p := array(select pg_catalog.jsonb_array_elements_text(q -> 'params'));
    begin
        execute q ->> 'sql' into v_items, v_last, v_n using p, lim, off;
    exception when undefined_function or indeterminate_datatype then
        -- A backstop: _served_table's eq/ord facts refuse such columns first.
        raise exception using errcode = '22023', detail = 'invalid_query',
            message = pg_catalog.format('a column''s type has no operator for this query: %s', sqlerrm);
    end;
    r := pg_catalog.jsonb_build_object('items', v_items,
        'next', case when lim > 0 and v_n = lim and (q ->> 'paged')::boolean then v_last end);
    if with_count then
        execute q ->> 'count' into v_n using p;
        r := r || pg_catalog.jsonb_build_object('count', v_n);
    end if;
    return r;
end
$$;
comment on function baas.table_list(text, jsonb, text, integer, integer, boolean, text, text[]) is
    'Rows of a served protected table the caller may read, filtered, ordered and paged on typed columns (docs/tables.md)';

-- GET /v1/tables/{table}/{key}: the row and its version (the ETag).
create function baas.table_get(tbl text, key text, out data jsonb, out version bigint)
language plpgsql stable
as $$
declare
    q jsonb := baas._table_get_sql(baas._served_table(tbl), key);
begin
    if q is null then
        raise exception using errcode = 'P0002', detail = 'row_not_found', message = 'row not found';
    end if;
    perform baas._table_check(q);
    execute q ->> 'sql' into data, version using array(select pg_catalog.jsonb_array_elements_text(q -> 'params'));
    if data is null then
        raise exception using errcode = 'P0002', detail = 'row_not_found', message = 'row not found';
    end if;
end
$$;
comment on function baas.table_get(text, text) is 'A row of a served protected table by primary key, and its version (docs/tables.md)';

-- POST /v1/tables/{table}: the row as stored (defaults and triggers applied). A caller
-- who may insert but not read the new row (a write-only table) gets {} and no version:
-- the row is inserted without RETURNING, which would apply the read policy to it.
create function baas.table_insert(tbl text, body jsonb, out data jsonb, out version bigint)
language plpgsql volatile
as $$
declare
    t jsonb := baas._served_table(tbl);
    q jsonb;
    p text[];
begin
    q := baas._table_insert_sql(t, baas._table_exact_numbers(t, body));
    perform baas._table_check(q);
    p := array(select pg_catalog.jsonb_array_elements_text(q -> 'params'));
    begin
        execute q ->> 'sql' into data, version using p;
    exception when insufficient_privilege then
        execute q ->> 'blind' using p;
        data := '{}';
        version := null;
    end;
end
$$;
comment on function baas.table_insert(text, jsonb) is 'Insert a row into a served protected table; returns it as stored (docs/tables.md)';

-- PATCH /v1/tables/{table}/{key}: set the columns the patch names; with if_match, 412
-- version_conflict when the row has moved on.
create function baas.table_update(tbl text, key text, patch jsonb, if_match bigint default null,
                                  out data jsonb, out version bigint)
language plpgsql volatile
as $$
declare
    t jsonb := baas._served_table(tbl);
    q jsonb := baas._table_update_sql(t, key, baas._table_exact_numbers(t, patch));
    p text[];
begin
    if q is null then
        raise exception using errcode = 'P0002', detail = 'row_not_found', message = 'row not found';
    end if;
    perform baas._table_check(q);
    p := array(select pg_catalog.jsonb_array_elements_text(q -> 'params'));
    execute q ->> 'sql' into data, version using p, if_match;
    if data is null then
        perform baas._table_explain_miss(q, p, if_match, 'update');
    end if;
end
$$;
comment on function baas.table_update(text, text, jsonb, bigint) is
    'Update columns of a row of a served protected table; with if_match, 40001 version_conflict when stale (docs/tables.md)';

-- DELETE /v1/tables/{table}/{key}.
create function baas.table_delete(tbl text, key text, if_match bigint default null) returns void
language plpgsql volatile
as $$
declare
    q jsonb := baas._table_delete_sql(baas._served_table(tbl), key);
    p text[];
    n bigint;
begin
    if q is null then
        raise exception using errcode = 'P0002', detail = 'row_not_found', message = 'row not found';
    end if;
    perform baas._table_check(q);
    p := array(select pg_catalog.jsonb_array_elements_text(q -> 'params'));
    execute q ->> 'sql' using p, if_match;
    get diagnostics n = row_count;
    if n = 0 then
        perform baas._table_explain_miss(q, p, if_match, 'delete');
    end if;
end
$$;
comment on function baas.table_delete(text, text, bigint) is
    'Delete a row of a served protected table; with if_match, 40001 version_conflict when stale (docs/tables.md)';
