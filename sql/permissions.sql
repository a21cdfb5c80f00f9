-- pgbaas permissions: every row-level policy, every permission predicate and the one
-- definition of a privileged caller. Loaded after sql/documents.sql (the tables);
-- read it top to bottom to know who may do what to a document.
--
-- The model:
--   * A caller acts as a set of principals (baas.principals()): `public`; a signed-in
--     user also `authenticated`, `registered` (a full account) or `anonymous` (an
--     anonymous account, sql/accounts.sql), `user:<id>` and `role:<name>` for each
--     application role it is in, nested roles included.
--   * A document has an owner (the user who created it, or NULL) and three ACL lists:
--     acl_read, acl_update, acl_delete. The owner may do everything; anyone else may
--     read, update or delete when one of their principals is in that list.
--   * Privileged callers (baas._is_privileged) bypass ACLs: the service role and
--     roles that bypass row-level security (superusers: DBAs, and the extension's own
--     SECURITY DEFINER steps). Nobody else does.
--   * Only the owner or a privileged caller may change a document's ACL or owner
--     (baas._may_manage).
--   * Creating a document needs a principal in its collection's `create` list.
--
-- Where each is decided: reads, updates and deletes by the row-level policies below
-- (forced, so the tables' owner obeys them too); creation by the documents_create
-- policy, with baas._may_create as its early, clearer answer in create_document; ACL
-- and owner changes by the guard trigger of sql/documents.sql and by
-- baas._owned_document / baas._set_document_owner, all through baas._may_manage,
-- because a policy sees either the old row or the new one, never both. Table and
-- function privileges (which roles may touch what at all) are in sql/grants.sql.

------------------------------------------------------------------------ who calls
-- The caller's application roles, nested roles included. Policies call it as
-- (select baas.roles()): once per statement. PL/pgSQL rather than SQL because a
-- non-inlinable SQL function is re-planned on every call, and PL/pgSQL keeps its plans
-- for the session (measured: create_document 666 -> see docs/storage.md).
create function baas.roles() returns text[]
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := baas.uid();
    v_roles text[];
begin
    if v_uid is null then
        return '{}';
    end if;
    with recursive r(name) as (
        select m.role from baas.role_members m where m.user_id = v_uid
        union
        select rr.role from baas.role_roles rr join r on rr.member_role = r.name
    )
    select coalesce(array_agg(name order by name), '{}') into v_roles from r;
    return v_roles;
end
$$;
comment on function baas.roles() is 'Application roles of the signed-in user, nested roles included';

-- Is the caller signed in with an anonymous account (baas.sign_in_anonymously, not
-- yet upgraded)? From the token's is_anonymous claim; false without a user token and
-- for tokens issued before 0.7.0 (which only full accounts had).
create function baas.is_anonymous() returns boolean
language sql stable parallel safe
as $$
    select coalesce(baas._claim('role') = 'baas_user' and baas._claim('is_anonymous') = 'true', false)
$$;
comment on function baas.is_anonymous() is 'True when the caller is signed in with an anonymous account';

-- Every principal the caller acts as: public; for a signed-in user also
-- authenticated, registered (a full account) or anonymous (an anonymous one),
-- user:<id> and role:<name> for each role.
-- Security definer to read the caller's own memberships directly: every row-level
-- policy evaluates it once per statement, so the common case (a user in no role) is
-- one uid() and one index probe, without going through baas.roles().
create function baas.principals() returns text[]
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := baas.uid();
    v_base text[];
begin
    if v_uid is null then
        return array['public'];
    end if;
    v_base := array['public', 'authenticated',
                    case when baas.is_anonymous() then 'anonymous' else 'registered' end,
                    'user:' || v_uid::text];
    if not exists (select from baas.role_members m where m.user_id = v_uid) then
        return v_base;
    end if;
    return v_base || array(select 'role:' || r from unnest(baas.roles()) r);
end
$$;
comment on function baas.principals() is 'ACL principals of the current caller';

-- The one definition of a privileged caller: the Postgres role `r` bypasses document
-- ACLs. The service role (by its policies below) and roles that bypass row-level
-- security (superusers, BYPASSRLS). Listed positively, so a custom role that merely
-- inherits baas_user or baas_service gets no more than that role's policies give.
-- Its fixed search_path keeps its cached plan valid whoever calls it: with the path
-- changing from call to call, Postgres re-planned it on every call, a sixth of a
-- create's CPU (docs/benchmarks.md).
create function baas._is_privileged(r text) returns boolean
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
    return r = 'baas_service'
        or exists (select from pg_catalog.pg_roles x where x.rolname = r and (x.rolsuper or x.rolbypassrls));
end
$$;

-- The role the caller had before any SECURITY DEFINER switch: SET ROLE state, or the
-- login role when none is set. For checks made inside SECURITY DEFINER functions,
-- where current_user is the extension's owner.
create function baas._caller_role() returns text
language sql stable
as $$
    select case when current_setting('role') = 'none' then session_user::text
                else current_setting('role') end
$$;

------------------------------------------------------------------------ predicates
-- May the caller (Postgres role `r`, with the current claims) change the ACL or the
-- owner of a document owned by `owner`? Its owner, or a privileged caller. Anonymous
-- callers own nothing, and nobody owns an ownerless document.
create function baas._may_manage(owner uuid, r text) returns boolean
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
    -- coalesce: for an anonymous caller baas.uid() is null, and `owner = null` is null,
    -- not false; `not null` let every `if not _may_manage(...)` check through.
    return coalesce(owner is not null and owner = baas.uid(), false) or baas._is_privileged(r);
end
$$;

-- May the caller create documents in a collection whose `create` list is create_acl?
-- The documents_create policy below decides; create_document asks this first to
-- answer 403 with a message instead of Postgres's policy-violation text.
create function baas._may_create(create_acl text[]) returns boolean
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
    return create_acl && baas.principals() or baas._is_privileged(current_user::text);
end
$$;

-- Principals must name something that exists when they are written into an ACL (a
-- document's or a collection's): `user:<id>` an account, `role:<name>` a role.
-- Otherwise a typo shares with nobody, silently. 22023 unknown_principal names it.
-- Only principals not already in `existing` are checked, so an ACL that still names
-- a deleted account can be edited (account ids are never reused, so such an entry
-- grants nothing); a dropped role is removed from every ACL by baas.drop_role, so a
-- role created later under the same name starts with no access. SECURITY DEFINER to
-- read accounts and roles; it tells only whether a name the caller typed exists.
create function baas._check_new_principals(acl jsonb, existing text[] default '{}') returns void
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    p text;
begin
    for p in select distinct x from jsonb_each(acl) e, jsonb_array_elements_text(
                 case when jsonb_typeof(e.value) = 'array' then e.value else '[]' end) x
              where not x = any(coalesce(existing, '{}')) loop
        if p like 'user:%' and not exists (select from baas.users u where u.id::text = substr(p, 6)) then
            raise exception using errcode = '22023', detail = 'unknown_principal',
                message = format('unknown principal %s: no such user', p);
        elsif p like 'role:%' and not exists (select from baas.roles r where r.name = substr(p, 6)) then
            raise exception using errcode = '22023', detail = 'unknown_principal',
                message = format('unknown principal %s: no such role', p);
        end if;
    end loop;
end
$$;

------------------------------------------------------------------------ policies
-- Collections: their names and options are readable by every API role; only
-- SECURITY DEFINER administration functions change them.
alter table baas.collections enable row level security;
alter table baas.collections force row level security;
create policy collections_visible on baas.collections for select using (true);

-- Documents. Forced: the table's owner obeys the policies too (a superuser still
-- bypasses them, which is what _is_privileged says).
alter table baas.documents enable row level security;
alter table baas.documents force row level security;

-- The service role bypasses ACLs, and nothing else does.
create policy documents_service on baas.documents to baas_service
    using (true) with check (true);

-- Create: as yourself, in a collection whose `create` option names you.
create policy documents_create on baas.documents for insert to baas_anon, baas_user
    with check (
        owner is not distinct from (select baas.uid())
        and exists (select from baas.collections c
                     where c.id = collection_id and c.create_acl && (select baas.principals())));

-- Index entries (sql/documents.sql): each btree index's copy of a document's read
-- rule (owner, acl_read), counted by baas.count. Read under exactly the rule of
-- documents_read; the service role sees them all, as it sees all documents.
alter table baas.index_entries enable row level security;
alter table baas.index_entries force row level security;
create policy index_entries_service on baas.index_entries for select to baas_service using (true);
-- Read entries (sql/documents.sql): one row per document and principal that may read
-- it by the ACL rule below, counted by baas.count over a whole collection. A row is
-- the caller's when its principal is one of the caller's: for entries kept in step
-- with the documents, a document has such a row exactly when documents_read lets the
-- caller read it (the owner's row is `user:<owner>`, and the caller's one `user:`
-- principal is `user:<uid>`; every other row is a principal of acl_read). The
-- equality is tested against the documents' policy (sql/tests/031_read_entries.sql)
-- and baas.security_lints() checks this text (policy_drift). All for the service role.
alter table baas.read_entries enable row level security;
alter table baas.read_entries force row level security;
create policy read_entries_service on baas.read_entries for select to baas_service using (true);
create policy read_entries_read on baas.read_entries for select to baas_anon, baas_user
    using (principal = any ((select baas.principals())::text[]));

-- The ACL rule, written once: the owner, or anyone whose principals meet the list.
-- documents_read, documents_update, documents_delete and index_entries_read are all
-- made from this one text (acl_read always contains everyone named in acl_update and
-- acl_delete: see baas._normalize_acl), and baas.security_lints() reports
-- `policy_drift` if any of them is later changed so that they no longer agree.
-- (select ...) makes baas.uid() and baas.principals() InitPlans, evaluated once per
-- statement; the comparison keeps owner and acl_read usable by the index-only count.
do $policies$
declare
    rule constant text := 'owner = (select baas.uid()) or %I && (select baas.principals())';
begin
    execute format('create policy documents_read on baas.documents for select to baas_anon, baas_user using (%s)',
                   format(rule, 'acl_read'));
    execute format('create policy documents_update on baas.documents for update to baas_anon, baas_user using (%s) with check (true)',
                   format(rule, 'acl_update'));
    execute format('create policy documents_delete on baas.documents for delete to baas_anon, baas_user using (%s)',
                   format(rule, 'acl_delete'));
    execute format('create policy index_entries_read on baas.index_entries for select to baas_anon, baas_user using (%s)',
                   format(rule, 'acl_read'));
    -- The same rule as a function, made from the same text so that it cannot drift, for
    -- the SECURITY DEFINER steps that must answer as the caller's policies would (the
    -- replace in baas._upload_insert, which API roles can call directly). It leaves out
    -- the service case (documents_service): callers add baas._is_privileged.
    execute format('create function baas._acl_allows(owner uuid, acl text[]) returns boolean '
                   'language sql stable set search_path = pg_catalog, pg_temp '
                   'return coalesce(%s, false)', format(rule, 'acl'));
end
$policies$;

------------------------------------------------------------------------ files
-- A file is a document (sql/files.sql): its metadata is read, overwritten, deleted and
-- shared under the document policies above. Its bytes (chunks), its blob row and its
-- cached thumbnails are readable exactly when the caller may read a document holding
-- that blob: the subquery runs under documents_read as the caller. Nobody but the
-- extension's SECURITY DEFINER functions writes them. baas.security_lints() reports
-- `file_policy_drift` if these texts change.
alter table baas._file_chunks enable row level security;
alter table baas._file_chunks force row level security;
alter table baas._blobs enable row level security;
alter table baas._blobs force row level security;
alter table baas._thumbnails enable row level security;
alter table baas._thumbnails force row level security;
create policy file_chunks_service on baas._file_chunks for select to baas_service using (true);
create policy file_chunks_read on baas._file_chunks for select to baas_anon, baas_user
    using (exists (select from baas.documents d where d.blob_id = _file_chunks.blob_id));
create policy blobs_service on baas._blobs for select to baas_service using (true);
create policy blobs_read on baas._blobs for select to baas_anon, baas_user
    using (exists (select from baas.documents d where d.blob_id = _blobs.id));
create policy thumbnails_service on baas._thumbnails for select to baas_service using (true);
create policy thumbnails_read on baas._thumbnails for select to baas_anon, baas_user
    using (exists (select from baas.documents d where d.blob_id = _thumbnails.source_blob));
-- Upload sessions, references and deleted files' blobs: SECURITY DEFINER functions
-- only (no policies).
alter table baas._uploads enable row level security;
alter table baas._file_refs enable row level security;
alter table baas._blob_trash enable row level security;
-- Quotas: the service role manages them (DBAs bypass).
alter table baas.file_quotas enable row level security;
alter table baas.file_quotas force row level security;
create policy file_quotas_service on baas.file_quotas to baas_service using (true) with check (true);

------------------------------------------------------------------------ protected tables
-- The team's own tables under the same rule (baas.protect, sql/tables.sql): a row is
-- readable by its owner (the owner column), by principals in its ACL column's `read`
-- list and by principals in the table's `read` list; update and delete likewise with
-- their lists; creating needs the caller as the owner (the guard trigger fills it when
-- NULL) and a principal in `create`. A tenant column ANDs every rule with "the caller
-- holds role:<prefix><tenant>" (tenants are application roles; the prefix, '' by
-- default, lets an integer or uuid tenant name one), on the new row of an update
-- too, so a row cannot be moved into a tenant the caller is not in. The service role
-- bypasses, as for documents (its policy is made by baas.protect).
--
-- This is the text of the policy expression of one operation (read, create, update,
-- delete; `check`: the WITH CHECK of update) of table `rel`'s definition, written in
-- the form Postgres prints it back (pg_get_expr), so that baas.protect creates the
-- policies from it and the protected_table_drift lint compares each policy with it,
-- text with text. Identifiers are quoted (%I), principals a quoted literal of an array
-- that baas.protect has validated and sorted.
create function baas._protected_rule(rel regclass, owner_column name, acl_column name, tenant_column name,
                                     principals text[], op text, tenant_prefix text default null) returns text
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
    mine constant text := '( SELECT baas.principals() AS principals)';
    terms text[] := '{}';
    listed text;
    tenant_text text;
    r text;
begin
    if cardinality(principals) > 0 then
        listed := format('(%s::text[] && %s)', quote_literal(principals::text), mine);
    end if;
    if op in ('read', 'update', 'delete') then
        if owner_column is not null then
            terms := terms || format('(%I = ( SELECT baas.uid() AS uid))', owner_column);
        end if;
        if acl_column is not null then
            terms := terms || format('((%I -> %L::text) ?| %s)', acl_column, op, mine);
        end if;
        if listed is not null then
            terms := terms || listed;
        end if;
        r := case cardinality(terms) when 0 then 'false' when 1 then terms[1]
                  else '(' || array_to_string(terms, ' OR ') || ')' end;
    elsif op = 'create' then
        -- An AND of the owner test, the list and (below) the tenant: Postgres keeps
        -- nested ANDs as one, and prints them so.
        if listed is null then
            return 'false';
        end if;
        if owner_column is not null then
            terms := terms || format('(NOT (%I IS DISTINCT FROM ( SELECT baas.uid() AS uid)))', owner_column);
        end if;
        terms := terms || listed;
    elsif op = 'check' then
        r := 'true';
    else
        raise exception using errcode = '22023', detail = 'invalid_request',
            message = format('%s is not an operation: read, create, update, delete or check', op);
    end if;
    if tenant_column is not null and r is distinct from 'false' then
        -- A text column is used as is; any other type through its text form.
        select case when a.atttypid = 'text'::regtype then format('%I', a.attname)
                    else format('(%I)::text', a.attname) end
          into tenant_text
          from pg_catalog.pg_attribute a
         where a.attrelid = rel and a.attname = tenant_column and a.attnum > 0 and not a.attisdropped;
        -- baas.protect allows only role-name characters in the prefix: quote_literal
        -- then writes it as Postgres prints it.
        tenant_text := format('(ARRAY[(%s::text || %s)] && %s)', quote_literal('role:' || coalesce(tenant_prefix, '')),
                              coalesce(tenant_text, format('%I', tenant_column)), mine);
        if op = 'create' then
            terms := terms || tenant_text;
        else
            r := case when r = 'true' then tenant_text else format('(%s AND %s)', r, tenant_text) end;
        end if;
    end if;
    if op = 'create' then
        r := case cardinality(terms) when 1 then terms[1] else '(' || array_to_string(terms, ' AND ') || ')' end;
    end if;
    return r;
end
$$;
