-- pgbaas documents: collections of JSON documents with per-document ACLs, enforced by
-- row-level security. Every document function is SECURITY INVOKER: it runs as the
-- caller's role with the caller's claims, so the policies of sql/permissions.sql
-- decide what each caller may read, update and delete, for HTTP and SQL alike.
--
-- Layout (docs/storage.md): one table for all collections, keyed (collection_id, id).
-- A thousand small collections cost a thousand rows in baas.collections, not a
-- thousand tables with their own policies and catalog entries; a collection with
-- millions of documents is a contiguous range of the primary key and of the listing
-- index, and per-collection indexes are partial indexes on this table.

---------------------------------------------------------------------------- roles
-- Application roles for sharing ("role:editors"); not Postgres roles.
create table baas.roles (
    name text primary key check (name ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    created_at timestamptz not null default now()
);
create table baas.role_members (
    role text not null references baas.roles (name) on delete cascade,
    user_id uuid not null references baas.users (id) on delete cascade,
    primary key (role, user_id)
);
create index role_members_user_id_idx on baas.role_members (user_id);
-- `role` contains every member of `member_role`.
create table baas.role_roles (
    role text not null references baas.roles (name) on delete cascade,
    member_role text not null references baas.roles (name) on delete cascade,
    primary key (role, member_role),
    check (role <> member_role)
);
create index role_roles_member_role_idx on baas.role_roles (member_role);
revoke all on baas.roles, baas.role_members, baas.role_roles from public;
alter table baas.roles enable row level security;
alter table baas.role_members enable row level security;
alter table baas.role_roles enable row level security;
select pg_catalog.pg_extension_config_dump('baas.roles', '');
select pg_catalog.pg_extension_config_dump('baas.role_members', '');
select pg_catalog.pg_extension_config_dump('baas.role_roles', '');

------------------------------------------------------------ leakproof jsonb twins
-- Under row-level security Postgres evaluates the policies before any user condition
-- whose functions are not LEAKPROOF, so such a condition can never drive an index
-- scan. None of jsonb's operators is marked leakproof, although field access,
-- comparison and containment raise no errors and have no side effects whatever their
-- input (a leak needs one or the other). These are the same C functions under
-- LEAKPROOF declarations (called through one-line forwarders in our library,
-- extension/src/api/leakproof.rs, which Postgres finds faster than an internal
-- function of another name), with operators and operator classes over them, so that
-- filters compiled by baas._compile_query can use indexes made by baas.create_index.
-- Nothing in pg_catalog is altered.
create function baas._jfield(jsonb, text) returns jsonb
    language c immutable strict parallel safe leakproof as 'MODULE_PATHNAME', 'baas_jsonb_object_field';
create function baas._jsonb_lp_eq(jsonb, jsonb) returns boolean
    language c immutable strict parallel safe leakproof as 'MODULE_PATHNAME', 'baas_jsonb_eq';
create function baas._jsonb_lp_lt(jsonb, jsonb) returns boolean
    language c immutable strict parallel safe leakproof as 'MODULE_PATHNAME', 'baas_jsonb_lt';
create function baas._jsonb_lp_le(jsonb, jsonb) returns boolean
    language c immutable strict parallel safe leakproof as 'MODULE_PATHNAME', 'baas_jsonb_le';
create function baas._jsonb_lp_gt(jsonb, jsonb) returns boolean
    language c immutable strict parallel safe leakproof as 'MODULE_PATHNAME', 'baas_jsonb_gt';
create function baas._jsonb_lp_ge(jsonb, jsonb) returns boolean
    language c immutable strict parallel safe leakproof as 'MODULE_PATHNAME', 'baas_jsonb_ge';
create function baas._jsonb_lp_cmp(jsonb, jsonb) returns integer
    language c immutable strict parallel safe leakproof as 'MODULE_PATHNAME', 'baas_jsonb_cmp';
create function baas._jsonb_lp_contains(jsonb, jsonb) returns boolean
    language c immutable strict parallel safe leakproof as 'MODULE_PATHNAME', 'baas_jsonb_contains';

create operator baas.= (leftarg = jsonb, rightarg = jsonb, function = baas._jsonb_lp_eq,
    commutator = operator(baas.=), restrict = eqsel, join = eqjoinsel);
create operator baas.< (leftarg = jsonb, rightarg = jsonb, function = baas._jsonb_lp_lt,
    commutator = operator(baas.>), negator = operator(baas.>=), restrict = scalarltsel, join = scalarltjoinsel);
create operator baas.<= (leftarg = jsonb, rightarg = jsonb, function = baas._jsonb_lp_le,
    commutator = operator(baas.>=), negator = operator(baas.>), restrict = scalarlesel, join = scalarlejoinsel);
create operator baas.> (leftarg = jsonb, rightarg = jsonb, function = baas._jsonb_lp_gt,
    commutator = operator(baas.<), negator = operator(baas.<=), restrict = scalargtsel, join = scalargtjoinsel);
create operator baas.>= (leftarg = jsonb, rightarg = jsonb, function = baas._jsonb_lp_ge,
    commutator = operator(baas.<=), negator = operator(baas.<), restrict = scalargesel, join = scalargejoinsel);
create operator baas.@> (leftarg = jsonb, rightarg = jsonb, function = baas._jsonb_lp_contains,
    restrict = matchingsel, join = matchingjoinsel);

create operator class baas.jsonb_lp_ops for type jsonb using btree as
    operator 1 baas.<, operator 2 baas.<=, operator 3 baas.=, operator 4 baas.>=, operator 5 baas.>,
    function 1 baas._jsonb_lp_cmp(jsonb, jsonb);
create operator class baas.jsonb_path_lp_ops for type jsonb using gin as
    operator 7 baas.@>,
    function 1 btint4cmp(int4, int4),
    function 2 gin_extract_jsonb_path(jsonb, internal, internal),
    function 3 gin_extract_jsonb_query_path(jsonb, internal, int2, internal, internal, internal, internal),
    function 4 gin_consistent_jsonb_path(internal, int2, jsonb, int4, internal, internal, internal, internal),
    function 6 gin_triconsistent_jsonb_path(internal, int2, jsonb, int4, internal, internal, internal),
    storage int4;

------------------------------------------------------------------------ collections
create table baas.collections (
    id integer generated always as identity primary key,
    name text not null unique check (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    create_acl text[] not null default '{authenticated}',
    default_read text[] not null default '{}',
    default_update text[] not null default '{}',
    default_delete text[] not null default '{}',
    schema jsonb,
    created_at timestamptz not null default now(),
    -- Whether the collection's changes are captured for live feeds (sql/realtime.sql).
    realtime boolean not null default true
);
revoke all on baas.collections from public;
grant select on baas.collections to baas_anon, baas_user, baas_service;
select pg_catalog.pg_extension_config_dump('baas.collections', '');

create table baas.documents (
    collection_id integer not null references baas.collections (id) on delete cascade,
    id uuid not null,
    owner uuid references baas.users (id) on delete cascade,
    version bigint not null default 1,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    data jsonb not null check (jsonb_typeof(data) = 'object'),
    acl_read text[] not null default '{}',
    acl_update text[] not null default '{}',
    acl_delete text[] not null default '{}',
    primary key (collection_id, id)
);
-- Listing order (created_at, id) within a collection.
create index documents_list_idx on baas.documents (collection_id, created_at, id);
create index documents_owner_idx on baas.documents (owner);
revoke all on baas.documents from public;
grant select, insert, delete on baas.documents to baas_anon, baas_user, baas_service;
-- ids, collection and creation time never change; owner changes are stopped by the
-- guard trigger for everyone but the owner and privileged callers (baas.transfer()).
grant update (data, acl_read, acl_update, acl_delete, owner, version, updated_at)
    on baas.documents to baas_anon, baas_user, baas_service;
select pg_catalog.pg_extension_config_dump('baas.documents', '');

-- System fields are the system's: whatever a writer sends, id/collection/creation time
-- stay, version counts every change, timestamps come from the clock. Only the owner
-- (or a privileged caller) may change the ACL or hand the document to someone else:
-- the one check row-level security cannot express (a policy sees the new row or the
-- old one, never both), made with the predicate of sql/permissions.sql.
-- Data must satisfy the collection's schema, whoever writes it.
create function baas._documents_guard() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_schema jsonb;
    v_bucket boolean;
begin
    -- Loading a dump (pg_restore sets row_security off, which only superusers and
    -- BYPASSRLS roles can use here: sql/dump.sql): the rows keep their versions and times.
    if tg_op = 'INSERT' and pg_catalog.current_setting('row_security') = 'off' then
        return new;
    end if;
    if tg_op = 'INSERT' then
        new.version := 1;
        new.created_at := now();
        new.updated_at := new.created_at;
        select c.schema, c.bucket into v_schema, v_bucket from baas.collections c where c.id = new.collection_id;
        -- Files (sql/files.sql): every document of a bucket holds a blob, which only the
        -- caller's own finishing upload may attach; size, type and sha256 come from it.
        if new.blob_id is not null or v_bucket then
            if not v_bucket then
                raise exception using errcode = '22023', detail = 'invalid_request',
                    message = 'only documents of a bucket hold files';
            elsif new.blob_id is null then
                raise exception using errcode = '22023', detail = 'use_file_upload',
                    message = format('files in bucket %1$s are created by POST /v1/collections/%1$s/files or baas.upload_*',
                                     (select c.name from baas.collections c where c.id = new.collection_id));
            elsif not baas._may_attach_blob(new.blob_id, new.collection_id, new.id) then
                raise exception using errcode = '42501', detail = 'forbidden',
                    message = 'this blob is not yours to attach: files are attached by their upload';
            end if;
            new.file := baas._blob_file_json(new.blob_id, new.file ->> 'name');
        elsif new.file is not null then
            new.file := null;
        end if;
    else
        new.collection_id := old.collection_id;
        new.id := old.id;
        new.created_at := old.created_at;
        new.version := old.version + 1;
        new.updated_at := greatest(now(), old.updated_at);
        -- Who may hand the document over or change its ACL: baas._may_manage
        -- (sql/permissions.sql), asked only when one of them changes.
        if new.owner is distinct from old.owner and not baas._may_manage(old.owner, current_user) then
            raise exception using errcode = '42501', detail = 'forbidden',
                message = 'only the owner may transfer this document';
        end if;
        if (new.acl_read is distinct from old.acl_read or new.acl_update is distinct from old.acl_update
            or new.acl_delete is distinct from old.acl_delete) and not baas._may_manage(old.owner, current_user) then
            raise exception using errcode = '42501', detail = 'forbidden',
                message = 'only the owner may change this document''s ACL';
        end if;
        -- A file's blob changes only through its upload (the finishing session of the
        -- caller); its name may change (checked), its size/type/sha256 never by hand.
        if new.blob_id is distinct from old.blob_id then
            if new.blob_id is null then
                raise exception using errcode = '22023', detail = 'invalid_request',
                    message = 'a file''s blob cannot be removed: delete the file instead';
            elsif old.blob_id is null then
                raise exception using errcode = '22023', detail = 'invalid_request',
                    message = 'only documents of a bucket hold files';
            elsif not baas._may_attach_blob(new.blob_id, new.collection_id, new.id) then
                raise exception using errcode = '42501', detail = 'forbidden',
                    message = 'this blob is not yours to attach: files are attached by their upload';
            end if;
            new.file := baas._blob_file_json(new.blob_id, coalesce(new.file ->> 'name', old.file ->> 'name'));
        elsif new.file is distinct from old.file then
            new.file := case when old.blob_id is not null
                             then baas._blob_file_json(old.blob_id, coalesce(new.file ->> 'name', old.file ->> 'name')) end;
        end if;
        if new.data is not distinct from old.data then
            return new;
        end if;
        select c.schema into v_schema from baas.collections c where c.id = new.collection_id;
    end if;
    if v_schema is not null then
        perform baas._validate_document(v_schema, new.data);
    end if;
    return new;
end
$$;
create trigger documents_guard before insert or update on baas.documents
    for each row execute function baas._documents_guard();

------------------------------------------------------------------------ helpers
-- STABLE, not IMMUTABLE: jsonb_build_object is stable (timestamps), and the planner
-- inlines a SQL function only if its body is no more volatile than declared. Inlined,
-- it costs nothing; not inlined, every call was parsed and planned again (list and get
-- profiles, docs/benchmarks.md).
-- sql/files.sql replaces this and _collection_json once the file columns exist (a
-- file's document also shows `file`, a bucket its file options).
create function baas._document_json(d baas.documents, collection text) returns jsonb
language sql stable parallel safe
as $$
    select jsonb_build_object(
        'id', d.id, 'collection', collection, 'owner', d.owner, 'version', d.version,
        'created_at', d.created_at, 'updated_at', d.updated_at, 'data', d.data,
        'acl', jsonb_build_object('read', to_jsonb(d.acl_read), 'update', to_jsonb(d.acl_update),
                                  'delete', to_jsonb(d.acl_delete)))
$$;

create function baas._collection_json(c baas.collections) returns jsonb
language sql stable parallel safe
as $$
    select jsonb_build_object(
        'name', c.name, 'created_at', c.created_at,
        'options', jsonb_build_object(
            'create', to_jsonb(c.create_acl),
            'default_acl', jsonb_build_object('read', to_jsonb(c.default_read),
                'update', to_jsonb(c.default_update), 'delete', to_jsonb(c.default_delete)),
            'schema', c.schema, 'realtime', c.realtime))
$$;

-- The collection named `name`: 22023 invalid_collection_name / P0002 collection_not_found.
create function baas._collection_by_name(name text) returns baas.collections
language plpgsql stable
as $$
#variable_conflict use_column
declare
    c baas.collections;
begin
    perform baas._check_collection_name(_collection_by_name.name);
    select * into c from baas.collections where name = _collection_by_name.name;
    if not found then
        raise exception using errcode = 'P0002', detail = 'collection_not_found',
            message = format('collection %s does not exist', _collection_by_name.name);
    end if;
    return c;
end
$$;

create function baas._document_not_found(collection text, id text) returns void
language plpgsql volatile
as $$
begin
    raise exception using errcode = 'P0002', detail = 'document_not_found',
        message = format('document %s not found in %s', id, collection);
end
$$;

-- 40001 version_conflict, with the current version in HINT (decimal text): the proxy
-- answers 412 with it as the ETag, so a client can merge and retry without a GET.
create function baas._version_conflict(current_version bigint, expected_version bigint) returns void
language plpgsql volatile
as $$
begin
    raise exception using errcode = '40001', detail = 'version_conflict', hint = current_version::text,
        message = format('document is at version %s, not %s', current_version, expected_version);
end
$$;

-- Why did a write touch no row? Not visible: 404. Stale version: 412. Visible but not
-- writable: 403. Runs as the caller, so "visible" is the read policy's answer.
create function baas._explain_write_miss(c baas.collections, v_id uuid, id text, expected_version bigint, verb text)
returns void
language plpgsql stable
as $$
declare
    v_version bigint;
begin
    select d.version into v_version from baas.documents d where d.collection_id = c.id and d.id = v_id;
    if not found then
        perform baas._document_not_found(c.name, id);
    end if;
    if expected_version is not null and v_version <> expected_version then
        perform baas._version_conflict(v_version, expected_version);
    end if;
    raise exception using errcode = '42501', detail = 'forbidden',
        message = format('you may read this document but not %s it', verb);
end
$$;

------------------------------------------------------------------------ documents
create function baas.create_document(collection text, data jsonb, acl jsonb default null, id uuid default null)
returns jsonb
language plpgsql volatile
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    a jsonb;
    d baas.documents;
begin
    if data is null or jsonb_typeof(data) <> 'object' then
        raise exception using errcode = '22023', detail = 'invalid_data', message = 'data must be a JSON object';
    end if;
    -- The early, clear answer of the documents_create policy (sql/permissions.sql).
    if not baas._may_create(c.create_acl) then
        raise exception using errcode = '42501', detail = 'forbidden',
            message = format('you may not create documents in %s', c.name);
    end if;
    if acl is null then
        a := jsonb_build_object('read', to_jsonb(c.default_read), 'update', to_jsonb(c.default_update),
                                'delete', to_jsonb(c.default_delete));
    else
        a := baas._normalize_acl(acl);
        perform baas._check_new_principals(a);
    end if;
    d.collection_id := c.id;
    d.id := coalesce(create_document.id, baas.uuid7());
    d.owner := baas.uid();
    d.data := data;
    d.acl_read := array(select jsonb_array_elements_text(a -> 'read'));
    d.acl_update := array(select jsonb_array_elements_text(a -> 'update'));
    d.acl_delete := array(select jsonb_array_elements_text(a -> 'delete'));
    -- No RETURNING: it would need the new row to pass the read policy, and a
    -- write-only document (say, anonymous feedback) legitimately does not.
    insert into baas.documents (collection_id, id, owner, data, acl_read, acl_update, acl_delete)
    values (d.collection_id, d.id, d.owner, d.data, d.acl_read, d.acl_update, d.acl_delete)
    on conflict do nothing;
    if not found then
        raise exception using errcode = '23505', detail = 'document_exists',
            message = format('a document with id %s already exists in %s', create_document.id, c.name);
    end if;
    -- What the guard trigger set.
    d.version := 1;
    d.created_at := now();
    d.updated_at := d.created_at;
    return baas._document_json(d, c.name);
end
$$;
comment on function baas.create_document(text, jsonb, jsonb, uuid) is
    'Create a document owned by the caller; acl defaults to the collection''s default_acl';

create function baas.get_document(collection text, id text) returns jsonb
language plpgsql stable
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    d baas.documents;
begin
    select * into d from baas.documents t
     where t.collection_id = c.id and t.id = baas._parse_document_id(get_document.id);
    if not found then
        perform baas._document_not_found(c.name, get_document.id);
    end if;
    return baas._document_json(d, c.name);
end
$$;
comment on function baas.get_document(text, text) is 'One document, or P0002 document_not_found when it does not exist or the caller may not read it';

-- PUT and PATCH: replace `data`, merge-patch it (RFC 7386), or apply field operators
-- (docs/operators.md): a patch with a `$` key is an operator patch (all its keys must be
-- operators; baas._apply_operators refuses a mix with invalid_operator). The operators
-- run inside the UPDATE's SET expression, on the row the UPDATE has locked: concurrent
-- writers queue on the lock and each applies its operators to the previous one's result,
-- so none is lost, and there is no read-modify-write round trip. The guard trigger then
-- checks the result against the collection's JSON Schema as for any write.
create function baas._write_document(collection text, id text, data jsonb, expected_version bigint, merge boolean)
returns jsonb
language plpgsql volatile
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    v_id uuid := baas._parse_document_id(id);
    d baas.documents;
    operators boolean;
begin
    if data is null or jsonb_typeof(data) <> 'object' then
        raise exception using errcode = '22023', detail = 'invalid_data',
            message = case when merge then 'data must be a JSON object (a merge patch)' else 'data must be a JSON object' end;
    end if;
    operators := merge and exists (select from jsonb_object_keys(data) k where left(k, 1) = '$');
    update baas.documents t
       set data = case when operators then baas._apply_operators(t.data, _write_document.data, now())
                       when merge then baas.merge_patch(t.data, _write_document.data)
                       else _write_document.data end
     where t.collection_id = c.id and t.id = v_id
       and (expected_version is null or t.version = expected_version)
    returning * into d;
    if not found then
        perform baas._explain_write_miss(c, v_id, id, expected_version, 'update');
    end if;
    return baas._document_json(d, c.name);
end
$$;

create function baas.replace_document(collection text, id text, data jsonb, expected_version bigint default null)
returns jsonb
language plpgsql volatile
as $$ begin return baas._write_document(collection, id, data, expected_version, false); end $$;
comment on function baas.replace_document(text, text, jsonb, bigint) is
    'Replace data; with expected_version, 40001 version_conflict when stale';

create function baas.patch_document(collection text, id text, patch jsonb, expected_version bigint default null)
returns jsonb
language plpgsql volatile
as $$ begin return baas._write_document(collection, id, patch, expected_version, true); end $$;
comment on function baas.patch_document(text, text, jsonb, bigint) is
    'Apply an RFC 7386 merge patch, or field operators ($inc, $set, $unset, $push, $addToSet, $pull, $min, $max, $now; docs/operators.md), to data; with expected_version, 40001 version_conflict when stale';

create function baas.delete_document(collection text, id text, expected_version bigint default null)
returns void
language plpgsql volatile
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    v_id uuid := baas._parse_document_id(id);
begin
    delete from baas.documents t
     where t.collection_id = c.id and t.id = v_id
       and (expected_version is null or t.version = expected_version);
    if not found then
        perform baas._explain_write_miss(c, v_id, id, expected_version, 'delete');
    end if;
end
$$;
comment on function baas.delete_document(text, text, bigint) is 'Delete a document';

-- Queries. baas._compile_query (Rust) turns the filter and order into SQL text in which
-- every client value is a reference into one jsonb parameter ($1) and every field name
-- a quoted literal; baas._find_compiled (Rust) adds our own collection id and runs it as
-- the caller, so row-level security still decides what is visible. It keeps each
-- query text's plan per backend (extension/src/api/plans.rs): a list request is not
-- parsed and planned again every time. A page holds at most baas.max_response_bytes
-- of JSON: baas.find refuses a larger one (54000 response_too_large), list_documents
-- ends it early with a `next`.
create function baas._find_page(collection text, filter jsonb default '{}', "order" text default null,
                               lim integer default 100, off integer default 0,
                               after uuid default null, fields text[] default null)
returns jsonb
language plpgsql stable
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
begin
    return baas._find_compiled(c.id, c.name, filter, "order", lim, off, after, fields);
end
$$;
comment on function baas._find_page(text, jsonb, text, integer, integer, uuid, text[]) is
    'Documents of a collection the caller may read, as one jsonb array (baas.find as a value)';

create function baas.find(collection text, filter jsonb default '{}', "order" text default null,
                          lim integer default 100, off integer default 0,
                          after uuid default null, fields text[] default null)
returns setof jsonb
language sql stable
as $$
    select x from pg_catalog.jsonb_array_elements(
        baas._find_page(collection, filter, "order", lim, off, after, fields)) x
$$;
comment on function baas.find(text, jsonb, text, integer, integer, uuid, text[]) is
    'Documents of a collection the caller may read, filtered, ordered and paged (docs/query.md)';

create function baas.count(collection text, filter jsonb default '{}') returns bigint
language plpgsql stable
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
begin
    -- One field with a btree index: count_compiled counts its entries, an index-only
    -- scan under the same read rule (see baas.index_entries).
    return baas._count_compiled(c.id, filter);
end
$$;
comment on function baas.count(text, jsonb) is 'Number of documents of a collection the caller may read that match the filter';

-- The list route in one call: {"items": [...], "next": id or null, "count"?: n}.
-- A page holds at most baas.max_response_bytes of JSON: it may end before `lim`
-- documents, with `next` set; follow `next` until it is null (docs/api.md, "Paging").
create function baas.list_documents(collection text, filter jsonb default '{}', "order" text default null,
                                    lim integer default 100, off integer default 0,
                                    with_count boolean default false, after uuid default null,
                                    fields text[] default null)
returns jsonb
language plpgsql stable
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    v jsonb;
begin
    -- paged: a full page, or one cut short by the response budget, names its last
    -- id as `next` (the `after` of the next page); a shorter page is the last one.
    v := baas._find_compiled(c.id, c.name, filter, "order", lim, off, after, fields, paged => true);
    if with_count then
        v := v || jsonb_build_object('count', baas.count(collection, filter));
    end if;
    return v;
end
$$;

-- The list route's page (GET /v1/collections/{c}/documents without `expand`): the
-- text of baas.list_documents(...), written without building jsonb (issue 20,
-- extension/src/api/doc_text.rs); the same documents, pages and bytes.
create function baas._list_documents_text(collection text, filter jsonb, "order" text, lim integer, off integer,
                                          with_count boolean, after uuid, fields text[])
returns text
language plpgsql stable
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
begin
    return baas._find_compiled_text(c.id, c.name, filter, "order", lim, off, after, fields, with_count);
end
$$;

------------------------------------------------------------------------ ACLs, owner
create function baas._owned_document(c baas.collections, id text) returns baas.documents
language plpgsql stable
as $$
declare
    d baas.documents;
begin
    select * into d from baas.documents t where t.collection_id = c.id and t.id = baas._parse_document_id(_owned_document.id);
    if not found then
        perform baas._document_not_found(c.name, id);
    end if;
    if not baas._may_manage(d.owner, current_user) then
        raise exception using errcode = '42501', detail = 'forbidden',
            message = 'only the owner may manage this document''s ACL and owner';
    end if;
    return d;
end
$$;

create function baas.get_acl(collection text, id text) returns jsonb
language plpgsql stable
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    d baas.documents := baas._owned_document(c, id);
begin
    return baas._document_json(d, c.name) -> 'acl';
end
$$;

-- With `version` (If-Match), refused with 40001 version_conflict when the document
-- has moved on, exactly like the document writes.
create function baas.set_acl(collection text, id text, acl jsonb, version bigint default null) returns jsonb
language plpgsql volatile
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    d baas.documents := baas._owned_document(c, id);
    a jsonb := baas._normalize_acl(coalesce(acl, 'null'));
begin
    if set_acl.version is not null and d.version <> set_acl.version then
        perform baas._version_conflict(d.version, set_acl.version);
    end if;
    perform baas._check_new_principals(a, d.acl_read || d.acl_update || d.acl_delete);
    update baas.documents t set
        acl_read = array(select jsonb_array_elements_text(a -> 'read')),
        acl_update = array(select jsonb_array_elements_text(a -> 'update')),
        acl_delete = array(select jsonb_array_elements_text(a -> 'delete'))
     where t.collection_id = c.id and t.id = d.id
       and (set_acl.version is null or t.version = set_acl.version)
    returning * into d;
    if not found then
        -- Changed by a concurrent write since the version check, or the update policy
        -- let no row through although the caller owns it.
        perform baas._explain_write_miss(c, d.id, id, set_acl.version, 'update');
    end if;
    return baas._document_json(d, c.name) -> 'acl';
end
$$;
comment on function baas.set_acl(text, text, jsonb, bigint) is
    'Replace a document''s ACL (owner or service only); with version, 40001 version_conflict when stale';

create function baas._change_acl(collection text, id text, permission text, principal text, is_grant boolean)
returns jsonb
language plpgsql volatile
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    d baas.documents := baas._owned_document(c, id);
begin
    return baas.set_acl(collection, id,
        baas._acl_change(d.acl_read, d.acl_update, d.acl_delete, permission, principal, is_grant));
end
$$;

create function baas.grant(collection text, id text, permission text, principal text) returns jsonb
language sql volatile
as $$ select baas._change_acl(collection, id, permission, principal, true) $$;
comment on function baas.grant(text, text, text, text) is 'Add a principal to read, update or delete (update/delete imply read)';

create function baas.revoke(collection text, id text, permission text, principal text) returns jsonb
language sql volatile
as $$ select baas._change_acl(collection, id, permission, principal, false) $$;
comment on function baas.revoke(text, text, text, text) is 'Remove a principal from a permission (revoking read revokes all three)';

-- The owner change itself. SECURITY DEFINER because the previous owner usually cannot
-- read the document once it is handed over, and an UPDATE needs the new row to pass
-- the read policy. So it asks baas._may_manage itself, about the caller's role. With
-- `expected_version`, 40001 version_conflict when the document has moved on (checked
-- under the row lock).
create function baas._set_document_owner(collection_id integer, id uuid, new_owner uuid, expected_version bigint)
returns baas.documents
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_caller text := baas._caller_role();
    d baas.documents;
begin
    select * into d from baas.documents t
     where t.collection_id = _set_document_owner.collection_id and t.id = _set_document_owner.id
       for update;
    -- Running as the extension's owner: asked about the caller's role. A caller who may
    -- not manage the document gets the same answer as for a missing one, so that a
    -- direct SQL call cannot tell an unreadable id from a free one (baas.transfer has
    -- already answered 404 or 403 as the caller sees it before calling this).
    if not found or not baas._may_manage(d.owner, v_caller) then
        raise exception using errcode = 'P0002', detail = 'document_not_found', message = 'document not found';
    end if;
    if expected_version is not null and d.version <> expected_version then
        perform baas._version_conflict(d.version, expected_version);
    end if;
    if new_owner is null or not exists (select from baas.users u where u.id = new_owner) then
        raise exception using errcode = '22023', detail = 'invalid_request',
            message = 'new owner must be an existing user id';
    end if;
    update baas.documents t set owner = new_owner
     where t.collection_id = _set_document_owner.collection_id and t.id = _set_document_owner.id
    returning * into d;
    return d;
end
$$;

create function baas.transfer(collection text, id text, new_owner uuid, version bigint default null) returns jsonb
language plpgsql volatile
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    -- As the caller: 404 if they cannot see it, 403 if they do not own it.
    d baas.documents := baas._owned_document(c, id);
begin
    d := baas._set_document_owner(c.id, d.id, new_owner, version);
    return baas._document_json(d, c.name);
end
$$;
comment on function baas.transfer(text, text, uuid, bigint) is
    'Hand a document to another user (owner or service only); with version, 40001 version_conflict when stale';

------------------------------------------------------------------- administration
-- Collections and roles are managed by DBAs in SQL and by service tokens over HTTP.
create function baas.create_collection(name text, options jsonb default '{}') returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    o jsonb;
    c baas.collections;
    od record;
begin
    perform baas._check_collection_name(create_collection.name);
    o := baas._normalize_collection_options(options);
    perform baas._check_new_principals(jsonb_build_object('create', o -> 'create') || (o -> 'default_acl'));
    select * into od from baas._owner_delete_columns(o -> 'on_owner_delete');
    insert into baas.collections (name, create_acl, default_read, default_update, default_delete, schema, realtime,
                                  bucket, file_max_bytes, file_types, file_refs, require_aal2, on_owner_delete, owner_heir)
    values (create_collection.name,
            array(select jsonb_array_elements_text(o -> 'create')),
            array(select jsonb_array_elements_text(o -> 'default_acl' -> 'read')),
            array(select jsonb_array_elements_text(o -> 'default_acl' -> 'update')),
            array(select jsonb_array_elements_text(o -> 'default_acl' -> 'delete')),
            nullif(o -> 'schema', 'null'),
            (o ->> 'realtime')::boolean,
            (o ->> 'bucket')::boolean,
            (o ->> 'max_file_size')::bigint,
            case when jsonb_typeof(o -> 'file_types') = 'array'
                 then array(select jsonb_array_elements_text(o -> 'file_types')) end,
            o ->> 'file_refs',
            (o ->> 'require_aal2')::boolean, od.policy, od.heir)
    on conflict (name) do nothing
    returning * into c;
    if not found then
        raise exception using errcode = '23505', detail = 'collection_exists',
            message = format('collection %s already exists', create_collection.name);
    end if;
    -- Empty, so its read entries are complete (see baas.read_entries).
    insert into baas._read_entries_ready values (c.id);
    return baas._collection_json(c);
end
$$;
comment on function baas.create_collection(text, jsonb) is
    'Create a collection. options: create (principals), default_acl, schema (JSON Schema), realtime (live feed, default true), bucket (files), max_file_size, file_types, file_refs, require_aal2, on_owner_delete (delete, orphan or {transfer: user id})';

create function baas.drop_collection(name text) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    c baas.collections := baas._collection_by_name(drop_collection.name);
    i baas.indexes;
begin
    -- Before the collection, so that their audit entries can still name it.
    for i in delete from baas.indexes x where x.collection_id = c.id returning x.* loop
        perform baas._index_forget(i);
    end loop;
    delete from baas.collections where id = c.id;
end
$$;
comment on function baas.drop_collection(text) is 'Drop a collection and all its documents';

create function baas.collections() returns jsonb
language sql stable
as $$
    select coalesce(jsonb_agg(baas._collection_json(c) order by c.name), '[]') from baas.collections c
$$;

create function baas.get_collection(name text) returns jsonb
language sql stable
as $$ select baas._collection_json(baas._collection_by_name(name)) $$;

-- Indexes on document fields: partial indexes of baas.documents, one collection each,
-- on exactly the expression the query compiler emits, so filters and orderings on the
-- field can use them. btree: equality, number ranges, order. gin: $contains.
create table baas.indexes (
    id integer generated always as identity unique,
    collection_id integer not null references baas.collections (id) on delete cascade,
    path text not null,
    kind text not null check (kind in ('btree', 'gin')),
    name text not null unique,
    created_at timestamptz not null default now(),
    primary key (collection_id, path, kind),
    -- Builds run in a background worker (baas.create_index, docs/storage.md): 'building'
    -- until CREATE INDEX CONCURRENTLY and the counting entries are done, then 'ready';
    -- 'failed' keeps the reason in error (the worker drops the unfinished index).
    state text not null default 'ready' check (state in ('building', 'ready', 'failed')),
    error text,
    started_at timestamptz,
    finished_at timestamptz,
    worker_pid integer
);
revoke all on baas.indexes from public;
alter table baas.indexes enable row level security;
select pg_catalog.pg_extension_config_dump('baas.indexes', '');

-- Index entries: for each btree index, one narrow row per document of its collection
-- holding the indexed field's value and the document's read rule (owner, acl_read).
-- Postgres 15 cannot answer a query from an expression index alone, so counting the
-- readable documents that match "bucket = 7" visits a heap page per match; here the
-- same count is an index-only scan (baas.count). Kept by a trigger on baas.documents;
-- nobody but that trigger and baas.create_index writes it. Read under the same rule
-- as baas.documents: its policies are made from the same text as documents_read and
-- documents_service (sql/permissions.sql), and baas.security_lints() checks they agree.
create table baas.index_entries (
    index_id integer not null references baas.indexes (id) on delete cascade,
    doc_id uuid not null,
    value jsonb,            -- the field; null where the document lacks it
    owner uuid,
    acl_read text[] not null,
    primary key (index_id, doc_id)
) with (autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_vacuum_scale_factor = 0.02);
-- (field, read rule): a count is an index-only scan once vacuum has marked the pages
-- all-visible, which the autovacuum settings above keep doing as documents are written.
create index index_entries_value_idx on baas.index_entries (index_id, value baas.jsonb_lp_ops) include (owner, acl_read);
revoke all on baas.index_entries from public;
grant select on baas.index_entries to baas_anon, baas_user, baas_service;

-- The id of a collection's btree index on a path, or null (for baas.count, which runs
-- as the caller; the index list itself is for service tokens).
create function baas._btree_index_id(collection_id integer, path text) returns integer
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    -- Only an index whose entries are complete: see baas._index_entries_ready.
    return (select i.id from baas.indexes i join baas._index_entries_ready r on r.index_id = i.id
             where i.collection_id = _btree_index_id.collection_id and i.path = _btree_index_id.path and i.kind = 'btree');
end
$$;

-- Indexes whose entries are complete. Deliberately not part of a pg_dump (unlike
-- baas.indexes and the documents): after a restore no index is ready, so counts take
-- the documents path (correct, slower) until baas.rebuild_index_entries() runs.
create table baas._index_entries_ready (
    index_id integer primary key references baas.indexes (id) on delete cascade
);
revoke all on baas._index_entries_ready from public;
alter table baas._index_entries_ready enable row level security;

-- DBAs: rebuild every btree index's entries and every collection's read entries from
-- the documents (after a restore).
create function baas.rebuild_index_entries() returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    i record;
    n integer := 0;
begin
    -- Writes wait until the rebuild commits: a write's trigger racing the rebuild could
    -- otherwise delete entries the rebuild then writes again from the older row.
    lock table baas.documents in share mode;
    for i in select x.id, x.collection_id, x.path from baas.indexes x where x.kind = 'btree' and x.state = 'ready' loop
        delete from baas._index_entries_ready where index_id = i.id;
        delete from baas.index_entries where index_id = i.id;
        execute format('insert into baas.index_entries (index_id, doc_id, value, owner, acl_read)
                        select %s, d.id, %s, d.owner, d.acl_read
                          from baas.documents d where d.collection_id = %s and baas._entry_fits(d.acl_read)',
                       i.id, baas._index_expression(i.path), i.collection_id);
        if baas._index_entries_complete(i.id) then
            insert into baas._index_entries_ready values (i.id);
        end if;
        n := n + 1;
    end loop;
    -- Every collection's read entries (baas.read_entries), from the documents.
    delete from baas._read_entries_ready;
    delete from baas.read_entries;
    insert into baas.read_entries (collection_id, principal, doc_id)
    select d.collection_id, p, d.id
      from baas.documents d, unnest(baas._readers(d.owner, d.acl_read)) p
    on conflict do nothing;
    insert into baas._read_entries_ready select c.id from baas.collections c;
    analyze baas.index_entries, baas.read_entries;
    return n;
end
$$;
comment on function baas.rebuild_index_entries() is
    'DBAs: rebuild the counting entries of every btree index and every collection''s read entries (after pg_restore); returns how many indexes';

-- The value at a dotted path, object keys only: exactly what baas._index_expression's
-- chain of baas._jfield calls reads.
create function baas._jpath(v jsonb, path text) returns jsonb
language plpgsql immutable strict parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
    k text;
begin
    foreach k in array string_to_array(path, '.') loop
        v := baas._jfield(v, k);
        exit when v is null;
    end loop;
    return v;
end
$$;

-- Whether a document's read list fits in its index entries: a row of
-- index_entries_value_idx carries the field's value and the read list, a btree row
-- holds at most 2,704 bytes, and a read list of 256 `user:` principals (the API's
-- most) takes about 12 kB, so a document shared with more than ~50 users by id failed
-- its write (54000) in any collection with a btree index. A list of at most 1,536
-- bytes (about 33 `user:` principals, or many more roles) leaves the value 1.1 kB;
-- a longer one gets no entry, and its indexes stop serving counts (they come from the
-- documents, correctly) until baas.rebuild_index_entries() finds every list fitting.
create function baas._entry_fits(acl_read text[]) returns boolean
language sql immutable parallel safe
return pg_catalog.pg_column_size(acl_read) <= 1536;

-- Whether an index's entries can serve counts: every document of its collection has
-- its entry (and no entry is left over), and every read list fits. Asked by
-- _index_build_finish after it has marked the build ready (a writer whose list does
-- not fit waits on that row, see _index_entries_sync) and by rebuild_index_entries,
-- which holds writers off.
create function baas._index_entries_complete(index_id integer) returns boolean
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_collection integer := (select i.collection_id from baas.indexes i where i.id = _index_entries_complete.index_id);
begin
    return (select count(*) from baas.index_entries e where e.index_id = _index_entries_complete.index_id)
         = (select count(*) from baas.documents d where d.collection_id = v_collection)
       and not exists (select from baas.documents d
                        where d.collection_id = v_collection
                          and (not baas._entry_fits(d.acl_read)
                               or not exists (select from baas.index_entries e
                                               where e.index_id = _index_entries_complete.index_id and e.doc_id = d.id)));
end
$$;

create function baas._index_entries_sync() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    -- Most collections have no btree index: one probe of baas.indexes, and done.
    if not exists (select from baas.indexes i
                    where i.collection_id = case when tg_op = 'DELETE' then old.collection_id else new.collection_id end
                      and i.kind = 'btree' and i.state <> 'failed') then
        return null;
    end if;
    if tg_op = 'DELETE' then
        delete from baas.index_entries e using baas.indexes i
         where i.collection_id = old.collection_id and i.kind = 'btree' and e.index_id = i.id and e.doc_id = old.id;
        return null;
    end if;
    if tg_op = 'UPDATE' and new.data is not distinct from old.data and new.owner is not distinct from old.owner
       and new.acl_read is not distinct from old.acl_read then
        return null;
    end if;
    if not baas._entry_fits(new.acl_read) then
        -- A read list too long for an entry (baas._entry_fits): the collection's btree
        -- indexes stop serving counts and lose this document's older entry. FOR SHARE
        -- on their rows waits for a build's _index_build_finish that has marked one
        -- ready (and makes a later one wait for this write), so the finish's check
        -- sees this document, or this write sees the finish's mark.
        perform from baas.indexes i where i.collection_id = new.collection_id and i.kind = 'btree' for share;
        delete from baas._index_entries_ready r using baas.indexes i
         where r.index_id = i.id and i.collection_id = new.collection_id and i.kind = 'btree';
        delete from baas.index_entries e using baas.indexes i
         where e.index_id = i.id and e.doc_id = new.id and i.collection_id = new.collection_id and i.kind = 'btree';
        return null;
    end if;
    insert into baas.index_entries as e (index_id, doc_id, value, owner, acl_read)
    select i.id, new.id, baas._jpath(new.data, i.path), new.owner, new.acl_read
      from baas.indexes i where i.collection_id = new.collection_id and i.kind = 'btree' and i.state <> 'failed'
    on conflict (index_id, doc_id) do update
       set value = excluded.value, owner = excluded.owner, acl_read = excluded.acl_read;
    return null;
end
$$;
create trigger documents_index_entries after insert or update or delete on baas.documents
    for each row execute function baas._index_entries_sync();

-- Read entries: for each document, one narrow row per principal that may read it by
-- its read rule: its owner as `user:<id>`, and each principal of acl_read. A user's
-- count of a whole collection ("how many may I read") is then an index-only scan of
-- the rows of that user's principals (baas.count), where the documents path filters
-- every document of the collection under row-level security (0.15-0.2 s per million).
-- Kept by the triggers below, in the same transaction; nobody but them and
-- baas.rebuild_index_entries writes it. The rows carry no copy of the ACL: a copy in
-- the key's index would cap a read list at the ~2.7 kB of a btree row (about 60 `user:`
-- principals, where the API allows 256), and cost the square of its length per change.
-- So the read policy (sql/permissions.sql) is "the row's principal is one of the
-- caller's", which gives exactly documents_read for entries kept in step: the caller's
-- only `user:` principal is `user:<uid>` (owner = uid), and any other is in acl_read.
-- baas.security_lints() checks the policies' text and the triggers (read_entries_unkept);
-- sql/tests/031_read_entries.sql checks the equality against the documents' policy.
create table baas.read_entries (
    collection_id integer not null,
    principal text not null,
    doc_id uuid not null,
    -- The count is an index-only scan of this key.
    primary key (collection_id, principal, doc_id)
) with (autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_vacuum_scale_factor = 0.02);
revoke all on baas.read_entries from public;
grant select on baas.read_entries to baas_anon, baas_user, baas_service;

-- Collections whose read entries are complete. Not part of a pg_dump, like
-- baas._index_entries_ready: after a restore counts take the documents path until
-- baas.rebuild_index_entries() runs. A collection is complete from its creation.
create table baas._read_entries_ready (
    collection_id integer primary key references baas.collections (id) on delete cascade
);
revoke all on baas._read_entries_ready from public;
alter table baas._read_entries_ready enable row level security;

-- Whether baas.count may count a collection from its read entries (baas.count runs as
-- the caller, and the ready list is not theirs to read). PL/pgSQL so that its plan is
-- kept (see baas._aal2_blocked).
create function baas._read_entries_ready(collection_id integer) returns boolean
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    return exists (select from baas._read_entries_ready r where r.collection_id = _read_entries_ready.collection_id);
end
$$;

-- The principals that may read a document by its read rule: its owner as
-- `user:<id>` (an ownerless one adds none) and each principal of acl_read. The one
-- definition of what read entries hold (the trigger below, rebuild_index_entries).
create function baas._readers(owner uuid, acl_read text[]) returns text[]
language sql immutable parallel safe
return case when owner is null then acl_read else acl_read || ('user:' || owner::text) end;

-- A document's read entries: one per principal of baas._readers, once each.
-- Updates reach it only when the owner or the read list changed (the WHEN of its
-- update trigger): a change of data alone costs no call.
create function baas._read_entries_sync() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if tg_op <> 'INSERT' then
        delete from baas.read_entries r
         where r.collection_id = old.collection_id and r.doc_id = old.id
           and r.principal = any (baas._readers(old.owner, old.acl_read));
    end if;
    if tg_op <> 'DELETE' then
        insert into baas.read_entries (collection_id, principal, doc_id)
        select distinct new.collection_id, p, new.id
          from unnest(baas._readers(new.owner, new.acl_read)) p;
    end if;
    return null;
end
$$;
create trigger documents_read_entries after insert or delete on baas.documents
    for each row execute function baas._read_entries_sync();
create trigger documents_read_entries_update after update on baas.documents
    for each row when (old.owner is distinct from new.owner or old.acl_read is distinct from new.acl_read)
    execute function baas._read_entries_sync();

-- TRUNCATE skips row triggers: it empties the counting copies too (a DBA's truncate of
-- baas.documents would otherwise leave counts of documents that are gone).
create function baas._entries_truncate() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    truncate baas.read_entries, baas.index_entries;
    return null;
end
$$;
create trigger documents_truncate_entries after truncate on baas.documents
    for each statement execute function baas._entries_truncate();

-- An index's row as the API shows it. A build whose worker is gone (pg_terminate_backend,
-- a crash, a restart) shows as failed at once; the next worker records it so and drops
-- the unfinished index (baas._index_build_next).
-- `i` was read with the caller's snapshot, which may predate the worker's last commit
-- (ready, or failed with its reason) while pg_stat_activity, read after it, no longer
-- lists the worker that then ended: that build is not lost. So a row that looks lost is
-- read again with a snapshot newer than the pg_stat_activity read (volatile: a new
-- snapshot per statement in READ COMMITTED); the worker commits its row before it ends.
create function baas._index_json(i baas.indexes) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    lost boolean := i.state = 'building' and i.worker_pid is not null
                    and not exists (select from pg_stat_activity a where a.pid = i.worker_pid);
    fresh baas.indexes;
begin
    if lost then
        select * into fresh from baas.indexes x where x.id = i.id;
        if not found then
            lost := false; -- dropped meanwhile: show what the caller read
        elsif fresh.state is distinct from 'building' or fresh.worker_pid is distinct from i.worker_pid then
            i := fresh;
            lost := false;
        end if;
    end if;
    return jsonb_build_object('collection', (select c.name from baas.collections c where c.id = i.collection_id),
                              'path', i.path, 'kind', i.kind, 'name', i.name,
                              'state', case when lost then 'failed' else i.state end,
                              'error', case when lost then format('the build stopped before it finished: its worker (pid %s) ended', i.worker_pid)
                                            else i.error end,
                              'created_at', i.created_at, 'started_at', i.started_at, 'finished_at', i.finished_at);
end
$$;

-- The CREATE INDEX statement of an index (null once it is no longer being built, for
-- the worker). v_expr is built by the compiler from a validated path with quoted keys;
-- the collection id is ours. Nothing else is spliced.
create function baas._index_ddl(index_id integer, concurrent boolean) returns text
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    i baas.indexes;
    v_expr text;
begin
    select * into i from baas.indexes x where x.id = _index_ddl.index_id;
    if not found or (concurrent and i.state <> 'building') then
        return null;
    end if;
    v_expr := baas._index_expression(i.path);
    if i.kind = 'btree' then
        -- (field, created_at, id): an equality filter comes out already in the default
        -- listing order, so "cat = 42, first 20" stops after 20 index entries instead
        -- of walking the listing index (the planner ignores partial-index statistics and
        -- would otherwise guess; measured 27 ms -> see docs/query.md).
        return format('create index %s %I on baas.documents (%s baas.jsonb_lp_ops, created_at, id) where collection_id = %s',
                      case when concurrent then 'concurrently' else '' end, i.name, v_expr, i.collection_id);
    end if;
    return format('create index %s %I on baas.documents using gin (%s baas.jsonb_path_lp_ops) where collection_id = %s',
                  case when concurrent then 'concurrently' else '' end, i.name, v_expr, i.collection_id);
end
$$;

-- Planner statistics for an indexed field, then the index is ready: its counting
-- entries complete (btree). Run by create_index (synchronous) and the build worker.
create function baas._index_build_finish(index_id integer) returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    i baas.indexes;
    v_expr text;
begin
    -- No row lock yet: writes to the collection check their entries' foreign key with
    -- FOR KEY SHARE on this row, and a FOR UPDATE held through the ANALYZE below made
    -- them wait seconds (measured: 4.5 s in tests/tests/index_builds.rs).
    select * into i from baas.indexes x where x.id = _index_build_finish.index_id and x.state = 'building';
    if not found then
        return false; -- dropped or failed meanwhile
    end if;
    v_expr := baas._index_expression(i.path);
    -- The planner ignores partial indexes' statistics; expression statistics give it
    -- the field's distribution, so "cat = 42" is estimated at its real handful of rows.
    if not exists (select from pg_statistic_ext x where x.stxnamespace = 'baas'::regnamespace
                   and x.stxname = 'documents_expr_' || substr(md5(i.path), 1, 12)) then
        -- With the type too: range filters check jsonb_typeof(field), and without
        -- statistics its default selectivity (0.5%) made a 100,000-row range look like
        -- one row, so the planner sorted all of them instead of walking the index.
        execute format('create statistics baas.%I on (%s), (jsonb_typeof(%s)) from baas.documents',
                       'documents_expr_' || substr(md5(i.path), 1, 12), v_expr, v_expr);
        analyze baas.documents;
    end if;
    update baas.indexes x set state = 'ready', error = null, finished_at = now(), worker_pid = null
     where x.id = i.id and x.state = 'building';
    if not found then
        return false;
    end if;
    if i.kind = 'btree' then
        -- Ready for counts when every document has its entry (not when one's read list
        -- is too long for it: baas._entry_fits). No table lock: a writer of such a
        -- list takes FOR SHARE on this index's row (_index_entries_sync), which the
        -- update above holds until this commits, so it either committed before this
        -- check (which then sees it) or removes the mark after this commits.
        analyze baas.index_entries;
        if baas._index_entries_complete(i.id) then
            insert into baas._index_entries_ready values (i.id) on conflict do nothing;
        end if;
    end if;
    return true;
end
$$;

-- The build worker: record a failed build and drop its counting entries (the worker
-- then drops the unfinished index).
create function baas._index_build_failed(index_id integer, reason text) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    update baas.indexes x set state = 'failed', error = reason, finished_at = now(), worker_pid = null
     where x.id = _index_build_failed.index_id and x.state = 'building';
    delete from baas._index_entries_ready r where r.index_id = _index_build_failed.index_id;
    delete from baas.index_entries e where e.index_id = _index_build_failed.index_id;
end
$$;

-- The build worker, one batch of a btree index's counting entries: the documents after
-- `after` (by id), locked FOR KEY SHARE so that a delete racing the batch waits and its
-- trigger then removes the entry (no orphan); entries the trigger already wrote for new
-- writes are fresher and kept (on conflict do nothing). Returns the last id done, or
-- null when there are no more (or the build was dropped).
create function baas._index_build_backfill(index_id integer, after uuid, batch integer) returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    i baas.indexes;
    v_last uuid;
begin
    select * into i from baas.indexes x where x.id = _index_build_backfill.index_id and x.state = 'building';
    if not found or i.kind <> 'btree' then
        return null;
    end if;
    execute format('with d as (select d.id, %s as value, d.owner, d.acl_read from baas.documents d
                                where d.collection_id = %s and d.id > coalesce($1, ''00000000-0000-0000-0000-000000000000''::uuid)
                                order by d.id limit $2 for key share),
                         ins as (insert into baas.index_entries (index_id, doc_id, value, owner, acl_read)
                                 select %s, d.id, d.value, d.owner, d.acl_read from d
                                  where baas._entry_fits(d.acl_read) on conflict do nothing)
                    select d.id from d order by d.id desc limit 1',
                   baas._index_expression(i.path), i.collection_id, i.id)
       into v_last using after, batch;
    return v_last;
end
$$;

-- The build worker's next job, claimed for it, or null. Only the worker holding the
-- build lock calls it, so a build still marked with another pid lost its worker
-- (pg_terminate_backend, a crash, a restart): it is recorded as failed. Unfinished
-- indexes (invalid, or left by a failed or dropped build) come first as {"drop": name}.
create function baas._index_build_next() returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    i baas.indexes;
    v_drop text;
begin
    for i in update baas.indexes x
                set state = 'failed', finished_at = now(), worker_pid = null,
                    error = format('the build stopped before it finished: its worker (pid %s) ended', x.worker_pid)
              where x.state = 'building' and x.worker_pid is not null and x.worker_pid <> pg_backend_pid()
          returning x.* loop
        delete from baas._index_entries_ready r where r.index_id = i.id;
        delete from baas.index_entries e where e.index_id = i.id;
    end loop;
    select c.relname into v_drop
      from pg_index ix join pg_class c on c.oid = ix.indexrelid
     where ix.indrelid = 'baas.documents'::regclass
       and c.relname ~ '^documents_c[0-9]+_(btree|gin)_[0-9a-f]{12}$'
       and (not ix.indisvalid
            or not exists (select from baas.indexes x where x.name = c.relname and x.state <> 'failed'))
     limit 1;
    if v_drop is not null then
        return jsonb_build_object('drop', v_drop);
    end if;
    select * into i from baas.indexes x where x.state = 'building' and x.worker_pid is null
     order by x.id limit 1 for no key update skip locked;
    if not found then
        return null;
    end if;
    update baas.indexes x set worker_pid = pg_backend_pid(), started_at = now() where x.id = i.id;
    return jsonb_build_object('id', i.id, 'name', i.name);
end
$$;

-- Whether a build waits for a worker.
create function baas._index_build_waiting() returns boolean
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$ select exists (select from baas.indexes x where x.state = 'building' and x.worker_pid is null) $$;

create function baas.create_index(collection text, path text, kind text default 'btree',
                                  concurrently boolean default true) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    v_expr text := baas._index_expression(path); -- checks the path (22023 invalid_query)
    v_name text := format('documents_c%s_%s_%s', c.id, kind, substr(md5(path), 1, 12));
    i baas.indexes;
begin
    if kind is null or kind not in ('btree', 'gin') then
        raise exception using errcode = '22023', detail = 'invalid_request', message = 'kind must be btree or gin';
    end if;
    if exists (select from baas.indexes x where x.name = v_name and x.state <> 'failed') then
        raise exception using errcode = '23505', detail = 'index_exists',
            message = format('%s already has a %s index on %s', c.name, kind, path);
    end if;
    -- A failed build is replaced by the new one (its reason goes with it).
    delete from baas.indexes x where x.name = v_name;
    if coalesce(create_index.concurrently, true) then
        -- Recorded as building: the trigger keeps the counting entries of new writes from
        -- now on, and the worker, started after this commits, does the rest (no lock on
        -- baas.documents here, no statement timeout on the build).
        insert into baas.indexes (collection_id, path, kind, name, state)
        values (c.id, create_index.path, kind, v_name, 'building') returning * into i;
        perform baas._index_build_launch();
        return baas._index_json(i);
    end if;
    -- In this transaction (migrations, tests): a plain CREATE INDEX, which holds writes
    -- to every collection until this transaction ends.
    execute format('drop index if exists baas.%I', v_name); -- a failed build's leftover
    insert into baas.indexes (collection_id, path, kind, name, state, started_at)
    values (c.id, create_index.path, kind, v_name, 'building', now()) returning * into i;
    execute baas._index_ddl(i.id, false);
    if kind = 'btree' then
        execute format('insert into baas.index_entries (index_id, doc_id, value, owner, acl_read)
                        select %s, d.id, %s, d.owner, d.acl_read
                          from baas.documents d where d.collection_id = %s and baas._entry_fits(d.acl_read)',
                       i.id, v_expr, c.id);
    end if;
    perform baas._index_build_finish(i.id);
    select * into i from baas.indexes x where x.id = i.id;
    return baas._index_json(i);
end
$$;
comment on function baas.create_index(text, text, text, boolean) is
    'Index a data field of one collection (btree: equality, ranges, order; gin: $contains). By default built in the background (state building, then ready or failed: see list_indexes/get_index); concurrently => false builds it in this transaction';

create function baas.get_index(collection text, path text, kind text default 'btree') returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    i baas.indexes;
begin
    select * into i from baas.indexes x where x.collection_id = c.id and x.path = get_index.path and x.kind = get_index.kind;
    if not found then
        raise exception using errcode = 'P0002', detail = 'index_not_found',
            message = format('%s has no %s index on %s', c.name, kind, path);
    end if;
    return baas._index_json(i);
end
$$;
comment on function baas.get_index(text, text, text) is 'An index and the state of its build (building, ready, failed with error)';

create function baas.drop_index(collection text, path text, kind text default 'btree') returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    i baas.indexes;
begin
    delete from baas.indexes x where x.collection_id = c.id and x.path = drop_index.path and x.kind = drop_index.kind
    returning * into i;
    if not found then
        raise exception using errcode = 'P0002', detail = 'index_not_found',
            message = format('%s has no %s index on %s', c.name, kind, path);
    end if;
    perform baas._index_forget(i);
end
$$;

-- The index of a deleted baas.indexes row. A ready one is dropped here (a plain DROP
-- INDEX: a brief exclusive lock). A build in progress is cancelled, and the worker drops
-- its unfinished index concurrently: a plain DROP would wait for the build while every
-- write waited behind it.
create function baas._index_forget(i baas.indexes) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if i.state = 'ready' then
        execute format('drop index if exists baas.%I', i.name);
        return;
    end if;
    if i.worker_pid is not null then
        perform pg_cancel_backend(i.worker_pid);
    end if;
    perform baas._index_build_launch();
end
$$;

create function baas.list_indexes(collection text) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
begin
    return (select coalesce(jsonb_agg(baas._index_json(i) order by i.path, i.kind), '[]')
              from baas.indexes i where i.collection_id = c.id);
end
$$;

-- DBAs: start the build worker for builds still waiting (none was free when they were
-- queued, or the server restarted) and clean up interrupted ones; returns how many wait.
create function baas.run_index_builds() returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    perform baas._index_build_launch();
    return (select count(*) from baas.indexes x where x.state = 'building')::integer;
end
$$;
comment on function baas.run_index_builds() is
    'DBAs: start the index build worker for waiting builds, record interrupted ones as failed; returns how many are building';

create function baas.create_role(name text) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
begin
    insert into baas.roles (name) values (baas._check_role_name(create_role.name)) on conflict do nothing;
    if not found then
        raise exception using errcode = '23505', detail = 'role_exists',
            message = format('role %s already exists', create_role.name);
    end if;
end
$$;

create function baas._role_must_exist(name text) returns void
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
    if not exists (select from baas.roles r where r.name = baas._check_role_name(_role_must_exist.name)) then
        raise exception using errcode = 'P0002', detail = 'role_not_found',
            message = format('role %s does not exist', _role_must_exist.name);
    end if;
end
$$;

create function baas.drop_role(name text) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    p text := 'role:' || name;
begin
    perform baas._role_must_exist(name);
    -- The role leaves every ACL it was in, so that a role created later under the same
    -- name starts with no access (documents it was in change version, audited).
    update baas.documents d set acl_read = array_remove(d.acl_read, p), acl_update = array_remove(d.acl_update, p),
                                acl_delete = array_remove(d.acl_delete, p)
     where p = any(d.acl_read) or p = any(d.acl_update) or p = any(d.acl_delete);
    update baas.collections c set create_acl = array_remove(c.create_acl, p),
           default_read = array_remove(c.default_read, p), default_update = array_remove(c.default_update, p),
           default_delete = array_remove(c.default_delete, p)
     where p = any(c.create_acl || c.default_read || c.default_update || c.default_delete);
    -- And the ACLs unfinished uploads will give their files (sql/files.sql): applied at
    -- the finish, they would grant a later role of the same name.
    update baas._uploads x set acl = (select jsonb_object_agg(e.key, e.value - p) from jsonb_each(x.acl) e)
     where x.acl is not null and exists (select from jsonb_each(x.acl) e where e.value ? p);
    delete from baas.roles r where r.name = drop_role.name;
end
$$;

create function baas.add_role_member(role text, user_id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    perform baas._role_must_exist(role);
    if user_id is null or not exists (select from baas.users u where u.id = add_role_member.user_id) then
        raise exception using errcode = 'P0002', detail = 'user_not_found', message = 'no such user';
    end if;
    insert into baas.role_members (role, user_id) values (add_role_member.role, add_role_member.user_id)
    on conflict do nothing;
end
$$;

create function baas.remove_role_member(role text, user_id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    perform baas._role_must_exist(role);
    delete from baas.role_members m where m.role = remove_role_member.role and m.user_id = remove_role_member.user_id;
end
$$;

-- `role` gains every member of `member_role`. A cycle would make membership
-- meaningless, so it is refused.
create function baas.add_role_to_role(role text, member_role text) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    perform baas._role_must_exist(role);
    perform baas._role_must_exist(member_role);
    -- Serialise changes to the role graph so two concurrent edits cannot close a cycle.
    lock table baas.role_roles in share row exclusive mode;
    if role = member_role or exists (
        with recursive up(name) as (
            select rr.role from baas.role_roles rr where rr.member_role = add_role_to_role.role
            union
            select rr.role from baas.role_roles rr join up on rr.member_role = up.name)
        select from up where name = add_role_to_role.member_role) then
        raise exception using errcode = '22023', detail = 'role_cycle',
            message = format('%s already contains %s: adding it would make a cycle', member_role, role);
    end if;
    insert into baas.role_roles (role, member_role) values (add_role_to_role.role, add_role_to_role.member_role)
    on conflict do nothing;
end
$$;

create function baas.remove_role_from_role(role text, member_role text) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    perform baas._role_must_exist(role);
    delete from baas.role_roles rr where rr.role = remove_role_from_role.role
       and rr.member_role = remove_role_from_role.member_role;
end
$$;

create function baas.list_roles() returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select coalesce(jsonb_agg(jsonb_build_object(
        'name', r.name,
        'members', (select coalesce(jsonb_agg(m.user_id order by m.user_id), '[]') from baas.role_members m where m.role = r.name),
        'roles', (select coalesce(jsonb_agg(rr.member_role order by rr.member_role), '[]') from baas.role_roles rr where rr.role = r.name)
    ) order by r.name), '[]')
    from baas.roles r
$$;

-- See what a user sees: run `query` as that user (NULL: as an anonymous caller), with
-- the same role and claims the proxy would set, and return its rows as JSON. DBAs only.
create function baas.as_user(user_id uuid, query text) returns setof jsonb
language plpgsql volatile
as $$
declare
    v_prev_role text := current_setting('role');
    v_prev_claims text := current_setting('baas.claims', true);
begin
    if user_id is null then
        perform set_config('baas.claims', '', true);
        perform set_config('role', 'baas_anon', true);
    else
        -- As the account's own token would say: anonymous or not, aal1.
        perform set_config('baas.claims',
            jsonb_build_object('sub', user_id, 'role', 'baas_user', 'sid', null, 'aal', 'aal1',
                'is_anonymous', coalesce((select u.is_anonymous from baas.users u where u.id = user_id), false))::text,
            true);
        perform set_config('role', 'baas_user', true);
    end if;
    -- A one-column query returns that column's value; wider rows return objects.
    return query execute format(
        'select case when (select count(*) from jsonb_object_keys(j)) = 1
                     then (select value from jsonb_each(j)) else j end
           from (select to_jsonb(q) as j from (%s) q) s', query);
    perform set_config('role', v_prev_role, true);
    perform set_config('baas.claims', coalesce(v_prev_claims, ''), true);
end
$$;
comment on function baas.as_user(uuid, text) is
    'Run a query as the given user (NULL: anonymous) under the same policies as HTTP; rows as jsonb';

-- The same, naming the user by id or by email (NULL: anonymous). An email that is no
-- account's is P0002 user_not_found rather than a view as nobody.
create function baas.as_user(who text, query text) returns setof jsonb
language plpgsql volatile
as $$
declare
    v_id uuid;
begin
    if who is null then
        return query select * from baas.as_user(null::uuid, query);
        return;
    end if;
    v_id := baas._parse_document_id(btrim(who));
    if v_id is null then
        select u.id into v_id from baas.users u where u.email = baas._email_key(who);
        if not found then
            perform baas._raise('P0002', 'user_not_found', format('no account with email %s', who));
        end if;
    end if;
    return query select * from baas.as_user(v_id, query);
end
$$;
comment on function baas.as_user(text, text) is
    'Run a query as the user with this id or email (NULL: anonymous) under the same policies as HTTP; rows as jsonb';
