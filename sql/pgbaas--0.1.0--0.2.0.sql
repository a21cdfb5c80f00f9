-- pgbaas 0.1.0 -> 0.2.0, run by ALTER EXTENSION pgbaas UPDATE.
--
-- It turns a 0.1.0 database into exactly what CREATE EXTENSION makes at 0.2.0:
-- tests/tests/upgrade.rs installs 0.1.0 from its release commit, fills it, runs this,
-- checks the data through the proxy and compares the schema (pg_dump --binary-upgrade)
-- with a fresh install's. Every statement below is the final text of the file it names
-- (sql/CHANGES-0.2.0.md lists what changed and why).
--
-- Once released, an upgrade script is never edited: a fix goes into the next version's.
--
-- A package upgrade replaces the library (pgbaas.so) before this runs: the C functions
-- keep their symbols in 0.2.0, so 0.1.0's SQL runs on the new library until this
-- script has run (the test checks every symbol 0.1.0 names).

-------------------------------------------------------------------- renamed: internal functions take a leading _
-- ALTER ... RENAME keeps each function's OID, so the operators and operator classes
-- over the leakproof jsonb functions, and the per-collection indexes built on
-- baas.jfield, keep working (the new compiled queries say baas._jfield: same function).

alter function baas.acl_change(text[], text[], text[], text, text, boolean) rename to _acl_change;
alter function baas.btree_index_id(integer, text) rename to _btree_index_id;
alter function baas.caller_role() rename to _caller_role;
alter function baas.change_acl(text, text, text, text, boolean) rename to _change_acl;
alter function baas.check_collection_name(text) rename to _check_collection_name;
alter function baas.check_fields(text[]) rename to _check_fields;
alter function baas.check_role_name(text) rename to _check_role_name;
alter function baas.collection_by_name(text) rename to _collection_by_name;
alter function baas.collection_json(baas.collections) rename to _collection_json;
alter function baas.compile_query(jsonb, text, jsonb, boolean) rename to _compile_query;
alter function baas.count_compiled(integer, jsonb) rename to _count_compiled;
alter function baas.document_json(baas.documents, text) rename to _document_json;
alter function baas.document_not_found(text, text) rename to _document_not_found;
alter function baas.explain_write_miss(baas.collections, uuid, text, bigint, text) rename to _explain_write_miss;
alter function baas.find_compiled(integer, text, jsonb, text, integer, integer, uuid, text[]) rename to _find_compiled;
alter function baas.find_page(text, jsonb, text, integer, integer, uuid, text[]) rename to _find_page;
alter function baas.index_expression(text) rename to _index_expression;
alter function baas.jfield(jsonb, text) rename to _jfield;
alter function baas.jsonb_lp_cmp(jsonb, jsonb) rename to _jsonb_lp_cmp;
alter function baas.jsonb_lp_contains(jsonb, jsonb) rename to _jsonb_lp_contains;
alter function baas.jsonb_lp_eq(jsonb, jsonb) rename to _jsonb_lp_eq;
alter function baas.jsonb_lp_ge(jsonb, jsonb) rename to _jsonb_lp_ge;
alter function baas.jsonb_lp_gt(jsonb, jsonb) rename to _jsonb_lp_gt;
alter function baas.jsonb_lp_le(jsonb, jsonb) rename to _jsonb_lp_le;
alter function baas.jsonb_lp_lt(jsonb, jsonb) rename to _jsonb_lp_lt;
alter function baas.normalize_acl(jsonb) rename to _normalize_acl;
alter function baas.normalize_collection_options(jsonb) rename to _normalize_collection_options;
alter function baas.normalize_principal(text) rename to _normalize_principal;
alter function baas.owned_document(baas.collections, text) rename to _owned_document;
alter function baas.parse_document_id(text) rename to _parse_document_id;
alter function baas.validate_document(jsonb, jsonb) rename to _validate_document;
alter function baas.write_document(text, text, jsonb, bigint, boolean) rename to _write_document;

-------------------------------------------------------------------- replaced by new signatures (created below)
drop function baas.privileged_caller();
drop function baas.set_acl(text, text, jsonb);
drop function baas.set_document_owner(integer, uuid, uuid);
drop function baas.transfer(text, text, uuid);

-------------------------------------------------------------------- sql/auth.sql (new and changed functions)
create or replace function baas._create_account(email text, password text, data jsonb, action text) returns baas.users
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    v_email text;
    u baas.users;
begin
    if _create_account.email is null or _create_account.password is null then
        perform baas._raise('22023', 'invalid_request', 'email and password are required');
    end if;
    if _create_account.data is not null and jsonb_typeof(_create_account.data) <> 'object' then
        perform baas._raise('22023', 'invalid_request', 'data must be a JSON object');
    end if;
    v_email := baas._normalize_email(_create_account.email);
    perform baas._check_password(_create_account.password);
    begin
        insert into baas.users (id, email, password_hash, data)
        values (baas.uuid7(), v_email, baas._hash_password(_create_account.password),
                coalesce(_create_account.data, '{}'))
        returning * into u;
    exception when unique_violation then
        perform baas._raise('23505', 'email_taken', 'an account with this email already exists');
    end;
    perform baas._audit(action, u.id, details => jsonb_build_object('email', u.email));
    return u;
end
$$;
create or replace function baas.signup(email text, password text, data jsonb default '{}') returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    return baas._new_session(baas._create_account(email, password, data, 'signup'));
end
$$;
create or replace function baas.create_user(email text, password text, data jsonb default '{}') returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    return baas._user_json(baas._create_account(email, password, data, 'user.create'));
end
$$;
comment on function baas.create_user(text, text, jsonb) is
    'DBAs: create an account without signing it in; returns {id, email, data, created_at, updated_at}';
create or replace function baas.revoke_service_token(id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if not exists (select from baas.service_tokens t where t.id = revoke_service_token.id) then
        perform baas._raise('P0002', 'service_token_not_found', format('no service token with id %s', revoke_service_token.id));
    end if;
    -- Revoking a revoked token again changes nothing and is not an error.
    update baas.service_tokens t set revoked_at = now() where t.id = revoke_service_token.id and t.revoked_at is null;
    if found then
        perform baas._audit('service_token.revoke', details => jsonb_build_object('id', revoke_service_token.id));
    end if;
end
$$;
comment on function baas.revoke_service_token(uuid) is 'Revoke a service token at once; P0002 service_token_not_found for an unknown id';

-------------------------------------------------------------------- sql/documents.sql (new and changed functions)
create or replace function baas._documents_guard() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_schema jsonb;
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
        if new.data is not distinct from old.data then
            return new;
        end if;
    end if;
    select c.schema into v_schema from baas.collections c where c.id = new.collection_id;
    if v_schema is not null then
        perform baas._validate_document(v_schema, new.data);
    end if;
    return new;
end
$$;
create or replace function baas._collection_by_name(name text) returns baas.collections
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
create or replace function baas._version_conflict(current_version bigint, expected_version bigint) returns void
language plpgsql volatile
as $$
begin
    raise exception using errcode = '40001', detail = 'version_conflict', hint = current_version::text,
        message = format('document is at version %s, not %s', current_version, expected_version);
end
$$;
create or replace function baas._explain_write_miss(c baas.collections, v_id uuid, id text, expected_version bigint, verb text)
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
create or replace function baas.create_document(collection text, data jsonb, acl jsonb default null, id uuid default null)
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
create or replace function baas.get_document(collection text, id text) returns jsonb
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
create or replace function baas._write_document(collection text, id text, data jsonb, expected_version bigint, merge boolean)
returns jsonb
language plpgsql volatile
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    v_id uuid := baas._parse_document_id(id);
    d baas.documents;
begin
    if data is null or jsonb_typeof(data) <> 'object' then
        raise exception using errcode = '22023', detail = 'invalid_data',
            message = case when merge then 'data must be a JSON object (a merge patch)' else 'data must be a JSON object' end;
    end if;
    update baas.documents t
       set data = case when merge then baas.merge_patch(t.data, _write_document.data) else _write_document.data end
     where t.collection_id = c.id and t.id = v_id
       and (expected_version is null or t.version = expected_version)
    returning * into d;
    if not found then
        perform baas._explain_write_miss(c, v_id, id, expected_version, 'update');
    end if;
    return baas._document_json(d, c.name);
end
$$;
create or replace function baas.replace_document(collection text, id text, data jsonb, expected_version bigint default null)
returns jsonb
language plpgsql volatile
as $$ begin return baas._write_document(collection, id, data, expected_version, false); end $$;
create or replace function baas.patch_document(collection text, id text, patch jsonb, expected_version bigint default null)
returns jsonb
language plpgsql volatile
as $$ begin return baas._write_document(collection, id, patch, expected_version, true); end $$;
create or replace function baas.delete_document(collection text, id text, expected_version bigint default null)
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
create or replace function baas._find_page(collection text, filter jsonb default '{}', "order" text default null,
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
create or replace function baas.find(collection text, filter jsonb default '{}', "order" text default null,
                          lim integer default 100, off integer default 0,
                          after uuid default null, fields text[] default null)
returns setof jsonb
language sql stable
as $$
    select x from pg_catalog.jsonb_array_elements(
        baas._find_page(collection, filter, "order", lim, off, after, fields)) x
$$;
create or replace function baas.count(collection text, filter jsonb default '{}') returns bigint
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
create or replace function baas.list_documents(collection text, filter jsonb default '{}', "order" text default null,
                                    lim integer default 100, off integer default 0,
                                    with_count boolean default false, after uuid default null,
                                    fields text[] default null)
returns jsonb
language plpgsql stable
as $$
declare
    v jsonb;
begin
    v := baas._find_page(collection, filter, "order", lim, off, after, fields);
    -- A full page may have more after it: its last id is the `after` of the next page.
    -- A shorter page is the last one.
    v := jsonb_build_object('items', v, 'next',
        case when lim > 0 and jsonb_array_length(v) = lim then v -> -1 -> 'id' end);
    if with_count then
        v := v || jsonb_build_object('count', baas.count(collection, filter));
    end if;
    return v;
end
$$;
create or replace function baas._owned_document(c baas.collections, id text) returns baas.documents
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
create or replace function baas.get_acl(collection text, id text) returns jsonb
language plpgsql stable
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    d baas.documents := baas._owned_document(c, id);
begin
    return baas._document_json(d, c.name) -> 'acl';
end
$$;
create or replace function baas.set_acl(collection text, id text, acl jsonb, version bigint default null) returns jsonb
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
create or replace function baas._change_acl(collection text, id text, permission text, principal text, is_grant boolean)
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
create or replace function baas.grant(collection text, id text, permission text, principal text) returns jsonb
language sql volatile
as $$ select baas._change_acl(collection, id, permission, principal, true) $$;
create or replace function baas.revoke(collection text, id text, permission text, principal text) returns jsonb
language sql volatile
as $$ select baas._change_acl(collection, id, permission, principal, false) $$;
create or replace function baas._set_document_owner(collection_id integer, id uuid, new_owner uuid, expected_version bigint)
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
    if not found then
        raise exception using errcode = 'P0002', detail = 'document_not_found', message = 'document not found';
    end if;
    -- Running as the extension's owner: asked about the caller's role.
    if not baas._may_manage(d.owner, v_caller) then
        raise exception using errcode = '42501', detail = 'forbidden',
            message = 'only the owner may transfer this document';
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
create or replace function baas.transfer(collection text, id text, new_owner uuid, version bigint default null) returns jsonb
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
create or replace function baas.create_collection(name text, options jsonb default '{}') returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    o jsonb;
    c baas.collections;
begin
    perform baas._check_collection_name(create_collection.name);
    o := baas._normalize_collection_options(options);
    perform baas._check_new_principals(jsonb_build_object('create', o -> 'create') || (o -> 'default_acl'));
    insert into baas.collections (name, create_acl, default_read, default_update, default_delete, schema)
    values (create_collection.name,
            array(select jsonb_array_elements_text(o -> 'create')),
            array(select jsonb_array_elements_text(o -> 'default_acl' -> 'read')),
            array(select jsonb_array_elements_text(o -> 'default_acl' -> 'update')),
            array(select jsonb_array_elements_text(o -> 'default_acl' -> 'delete')),
            nullif(o -> 'schema', 'null'))
    on conflict (name) do nothing
    returning * into c;
    if not found then
        raise exception using errcode = '23505', detail = 'collection_exists',
            message = format('collection %s already exists', create_collection.name);
    end if;
    return baas._collection_json(c);
end
$$;
create or replace function baas.drop_collection(name text) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    c baas.collections := baas._collection_by_name(drop_collection.name);
    i record;
begin
    for i in select x.name from baas.indexes x where x.collection_id = c.id loop
        execute format('drop index if exists baas.%I', i.name);
    end loop;
    -- Before the collection, so that their audit entries can still name it.
    delete from baas.indexes x where x.collection_id = c.id;
    delete from baas.collections where id = c.id;
end
$$;
create or replace function baas.collections() returns jsonb
language sql stable
as $$
    select coalesce(jsonb_agg(baas._collection_json(c) order by c.name), '[]') from baas.collections c
$$;
create or replace function baas.get_collection(name text) returns jsonb
language sql stable
as $$ select baas._collection_json(baas._collection_by_name(name)) $$;
create or replace function baas._btree_index_id(collection_id integer, path text) returns integer
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    -- Only an index whose entries are complete: see baas._index_entries_ready.
    return (select i.id from baas.indexes i join baas._index_entries_ready r on r.index_id = i.id
             where i.collection_id = _btree_index_id.collection_id and i.path = _btree_index_id.path and i.kind = 'btree');
end
$$;
create or replace function baas.rebuild_index_entries() returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    i record;
    n integer := 0;
begin
    for i in select x.id, x.collection_id, x.path from baas.indexes x where x.kind = 'btree' loop
        delete from baas._index_entries_ready where index_id = i.id;
        delete from baas.index_entries where index_id = i.id;
        execute format('insert into baas.index_entries (index_id, doc_id, value, owner, acl_read)
                        select %s, d.id, %s, d.owner, d.acl_read from baas.documents d where d.collection_id = %s',
                       i.id, baas._index_expression(i.path), i.collection_id);
        insert into baas._index_entries_ready values (i.id);
        n := n + 1;
    end loop;
    analyze baas.index_entries;
    return n;
end
$$;
create or replace function baas._jpath(v jsonb, path text) returns jsonb
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
create or replace function baas.create_index(collection text, path text, kind text default 'btree') returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    v_expr text := baas._index_expression(path);
    v_name text := format('documents_c%s_%s_%s', c.id, kind, substr(md5(path), 1, 12));
    v_id integer;
begin
    if kind is null or kind not in ('btree', 'gin') then
        raise exception using errcode = '22023', detail = 'invalid_request', message = 'kind must be btree or gin';
    end if;
    if exists (select from baas.indexes i where i.name = v_name) then
        raise exception using errcode = '23505', detail = 'index_exists',
            message = format('%s already has a %s index on %s', c.name, kind, path);
    end if;
    -- v_expr is built by the compiler from a validated path with quoted keys; the
    -- collection id is ours. Nothing else is spliced.
    if kind = 'btree' then
        -- (field, created_at, id): an equality filter comes out already in the default
        -- listing order, so "cat = 42, first 20" stops after 20 index entries instead
        -- of walking the listing index (the planner ignores partial-index statistics and
        -- would otherwise guess; measured 27 ms -> see docs/query.md).
        execute format('create index %I on baas.documents (%s baas.jsonb_lp_ops, created_at, id) where collection_id = %s',
                       v_name, v_expr, c.id);
    else
        execute format('create index %I on baas.documents using gin (%s baas.jsonb_path_lp_ops) where collection_id = %s',
                       v_name, v_expr, c.id);
    end if;
    -- The planner ignores partial indexes' statistics; expression statistics give it
    -- the field's distribution, so "cat = 42" is estimated at its real handful of rows.
    if not exists (select from pg_statistic_ext x where x.stxnamespace = 'baas'::regnamespace
                   and x.stxname = 'documents_expr_' || substr(md5(path), 1, 12)) then
        -- With the type too: range filters check jsonb_typeof(field), and without
        -- statistics its default selectivity (0.5%) made a 100,000-row range look like
        -- one row, so the planner sorted all of them instead of walking the index.
        execute format('create statistics baas.%I on (%s), (jsonb_typeof(%s)) from baas.documents',
                       'documents_expr_' || substr(md5(path), 1, 12), v_expr, v_expr);
        analyze baas.documents;
    end if;
    insert into baas.indexes (collection_id, path, kind, name) values (c.id, create_index.path, kind, v_name)
    returning id into v_id;
    if kind = 'btree' then
        execute format('insert into baas.index_entries (index_id, doc_id, value, owner, acl_read)
                        select %s, d.id, %s, d.owner, d.acl_read from baas.documents d where d.collection_id = %s',
                       v_id, v_expr, c.id);
        insert into baas._index_entries_ready values (v_id);
        analyze baas.index_entries;
    end if;
    return jsonb_build_object('collection', c.name, 'path', path, 'kind', kind, 'name', v_name);
end
$$;
create or replace function baas.drop_index(collection text, path text, kind text default 'btree') returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
    v_name text;
begin
    delete from baas.indexes i where i.collection_id = c.id and i.path = drop_index.path and i.kind = drop_index.kind
    returning i.name into v_name;
    if v_name is null then
        raise exception using errcode = 'P0002', detail = 'index_not_found',
            message = format('%s has no %s index on %s', c.name, kind, path);
    end if;
    execute format('drop index if exists baas.%I', v_name);
end
$$;
create or replace function baas.list_indexes(collection text) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    c baas.collections := baas._collection_by_name(collection);
begin
    return (select coalesce(jsonb_agg(jsonb_build_object('path', i.path, 'kind', i.kind, 'name', i.name,
                                                         'created_at', i.created_at) order by i.path, i.kind), '[]')
              from baas.indexes i where i.collection_id = c.id);
end
$$;
create or replace function baas.create_role(name text) returns void
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
create or replace function baas._role_must_exist(name text) returns void
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
create or replace function baas.drop_role(name text) returns void
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
    delete from baas.roles r where r.name = drop_role.name;
end
$$;
create or replace function baas.as_user(who text, query text) returns setof jsonb
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

-------------------------------------------------------------------- sql/permissions.sql (new and changed functions)
create or replace function baas._is_privileged(r text) returns boolean
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
    return r = 'baas_service'
        or exists (select from pg_catalog.pg_roles x where x.rolname = r and (x.rolsuper or x.rolbypassrls));
end
$$;
create or replace function baas._may_manage(owner uuid, r text) returns boolean
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
    return (owner is not null and owner = baas.uid()) or baas._is_privileged(r);
end
$$;
create or replace function baas._may_create(create_acl text[]) returns boolean
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
    return create_acl && baas.principals() or baas._is_privileged(current_user::text);
end
$$;
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

-------------------------------------------------------------------- sql/audit.sql (new and changed functions)
create or replace function baas.unlock_account(user_id uuid) returns boolean
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
create or replace function baas._audit_roles() returns trigger
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
create or replace function baas._audit_collections() returns trigger
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
create or replace function baas._audit_keys() returns trigger
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

-------------------------------------------------------------------- sql/lints.sql (new and changed functions)
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
           '_collection_by_name', '_check_collection_name', '_document_json', '_parse_document_id',
           '_document_not_found', '_write_document', '_explain_write_miss', '_version_conflict',
           '_validate_document', '_normalize_acl', '_check_new_principals', '_acl_change', '_change_acl',
           '_owned_document', '_set_document_owner', '_may_create', '_may_manage', '_is_privileged',
           '_find_page', '_find_compiled', '_count_compiled', '_btree_index_id', '_jfield',
           '_jsonb_lp_eq', '_jsonb_lp_lt', '_jsonb_lp_le', '_jsonb_lp_gt', '_jsonb_lp_ge',
           '_jsonb_lp_cmp', '_jsonb_lp_contains'])
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
           'create_index', 'drop_index', 'list_indexes', 'rebuild_index_entries', 'restore_indexes',
           'create_role', 'drop_role', 'add_role_member', 'remove_role_member', 'add_role_to_role',
           'remove_role_from_role', 'list_roles',
           -- DBA tools
           'as_user', 'purge_audit_log', 'security_lints'])
    union all
    -- 4c. The document policies and the index entries' read policy are made from one
    --     rule (sql/permissions.sql): each must still say what documents_read says
    --     (with its own ACL column), for the same roles and command; the service
    --     policies must agree; no other policy may widen either table.
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
    select 'policy_drift', format('policy %I on %s', p.polname, p.polrelid::regclass),
           'the service policy must be `to baas_service using (true)`, as documents_service'
      from pg_policy p
     where p.polname in ('documents_service', 'index_entries_service')
       and p.polrelid in ('baas.documents'::regclass, 'baas.index_entries'::regclass)
       and (p.polroles::oid[] is distinct from array['baas_service'::regrole::oid]
            or pg_get_expr(p.polqual, p.polrelid) is distinct from 'true')
    union all
    select 'policy_drift', format('policy %I on %s', p.polname, p.polrelid::regclass),
           'a policy sql/permissions.sql does not define: it may widen what callers see or do'
      from pg_policy p
     where (p.polrelid = 'baas.documents'::regclass
            and p.polname not in ('documents_service', 'documents_read', 'documents_create',
                                  'documents_update', 'documents_delete'))
        or (p.polrelid = 'baas.index_entries'::regclass
            and p.polname not in ('index_entries_service', 'index_entries_read'))
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
$$;
comment on function baas.security_lints() is
    'Security lints (no rows = clean): unforced RLS on API-readable tables, SECURITY DEFINER without search_path, PUBLIC execute, exposed internal functions, undocumented public functions, policies that drifted from their one rule, policies reading user-editable data';

-------------------------------------------------------------------- sql/dump.sql (new and changed functions)
create or replace function baas._restoring() returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select pg_catalog.current_setting('row_security') = 'off' and baas._is_privileged(session_user)
$$;
comment on function baas._restoring() is 'Whether this session is loading a dump (pg_restore): row_security off, as a superuser';
create or replace function baas._settings_restore() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if baas._restoring() then
        delete from baas.settings;
    end if;
    return new;
end
$$;
create or replace function baas.restore_indexes() returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    i record;
    n integer := 0;
begin
    for i in select x.id, c.name as collection, x.path, x.kind
               from baas.indexes x join baas.collections c on c.id = x.collection_id
              where not exists (select from pg_catalog.pg_class r
                                 where r.relnamespace = 'baas'::regnamespace and r.relname = x.name)
              order by x.id loop
        delete from baas.indexes where id = i.id;
        perform baas.create_index(i.collection, i.path, i.kind);
        n := n + 1;
    end loop;
    perform baas.rebuild_index_entries();
    return n;
end
$$;
comment on function baas.restore_indexes() is
    'DBAs: after pg_restore, make the collection indexes pg_dump leaves out and rebuild their counting entries; returns how many it made';

-------------------------------------------------------------------- sql/audit.sql: collection and index changes are audited
comment on table baas.audit_log is
    'Security events: sign-ups, logins and failures, logouts, password changes, deletions, refresh reuse, lockouts, role and ACL changes, collections and indexes created and dropped, key rotations';
create trigger collections_audit after insert or delete on baas.collections
    for each row execute function baas._audit_collections();
create trigger indexes_audit after insert or delete on baas.indexes
    for each row execute function baas._audit_collections();

-------------------------------------------------------------------- sql/dump.sql: what pg_dump carries, restores
select pg_catalog.pg_extension_config_dump('baas._lockouts', '');
select pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('baas.audit_log', 'id')::regclass, '');
select pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('baas.collections', 'id')::regclass, '');
select pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('baas.indexes', 'id')::regclass, '');
create trigger settings_restore before insert on baas.settings
    for each row execute function baas._settings_restore();

-------------------------------------------------------------------- sql/grants.sql
-- From scratch, as a fresh install has them: no function executable by PUBLIC or an
-- API role, then the grants of sql/grants.sql (0.1.0 granted some internal functions
-- that 0.2.0 does not).
revoke execute on all functions in schema baas from public, baas_anon, baas_user, baas_service, baas_authenticator;

grant execute on function
    baas.signup(text, text, jsonb),
    baas.login(text, text),
    baas.refresh(text),
    baas.jwks(),
    baas.auth_settings(),
    baas.claims(),
    baas.uid(),
    baas.merge_patch(jsonb, jsonb)
  to baas_anon, baas_user, baas_service;

grant execute on function
    baas.logout(),
    baas.get_user(),
    baas.update_user(jsonb, text, text),
    baas.delete_user()
  to baas_user;

grant execute on function
    baas.principals(),
    baas.roles(),
    baas.uuid7(),
    baas.create_document(text, jsonb, jsonb, uuid),
    baas.get_document(text, text),
    baas.replace_document(text, text, jsonb, bigint),
    baas.patch_document(text, text, jsonb, bigint),
    baas.delete_document(text, text, bigint),
    baas.find(text, jsonb, text, integer, integer, uuid, text[]),
    baas.count(text, jsonb),
    baas.list_documents(text, jsonb, text, integer, integer, boolean, uuid, text[]),
    baas.get_acl(text, text),
    baas.set_acl(text, text, jsonb, bigint),
    baas.grant(text, text, text, text),
    baas.revoke(text, text, text, text),
    baas.transfer(text, text, uuid, bigint)
  to baas_anon, baas_user, baas_service;

grant execute on function
    baas._collection_by_name(text),
    baas._check_collection_name(text),
    baas._document_json(baas.documents, text),
    baas._parse_document_id(text),
    baas._document_not_found(text, text),
    baas._write_document(text, text, jsonb, bigint, boolean),
    baas._explain_write_miss(baas.collections, uuid, text, bigint, text),
    baas._version_conflict(bigint, bigint),
    baas._validate_document(jsonb, jsonb),
    baas._normalize_acl(jsonb),
    baas._check_new_principals(jsonb, text[]),
    baas._acl_change(text[], text[], text[], text, text, boolean),
    baas._change_acl(text, text, text, text, boolean),
    baas._owned_document(baas.collections, text),
    baas._set_document_owner(integer, uuid, uuid, bigint),
    baas._may_create(text[]),
    baas._may_manage(uuid, text),
    baas._is_privileged(text),
    baas._find_page(text, jsonb, text, integer, integer, uuid, text[]),
    baas._find_compiled(integer, text, jsonb, text, integer, integer, uuid, text[]),
    baas._count_compiled(integer, jsonb),
    baas._btree_index_id(integer, text),
    baas._jfield(jsonb, text),
    baas._jsonb_lp_eq(jsonb, jsonb),
    baas._jsonb_lp_lt(jsonb, jsonb),
    baas._jsonb_lp_le(jsonb, jsonb),
    baas._jsonb_lp_gt(jsonb, jsonb),
    baas._jsonb_lp_ge(jsonb, jsonb),
    baas._jsonb_lp_cmp(jsonb, jsonb),
    baas._jsonb_lp_contains(jsonb, jsonb)
  to baas_anon, baas_user, baas_service;

grant execute on function
    baas.create_collection(text, jsonb),
    baas.drop_collection(text),
    baas.create_role(text),
    baas.drop_role(text),
    baas.add_role_member(text, uuid),
    baas.remove_role_member(text, uuid),
    baas.add_role_to_role(text, text),
    baas.remove_role_from_role(text, text),
    baas.list_roles(),
    baas.create_index(text, text, text),
    baas.drop_index(text, text, text),
    baas.list_indexes(text),
    baas.collections(),
    baas.get_collection(text),
    baas._collection_json(baas.collections)
  to baas_service;

grant execute on function
    baas.authenticate(jsonb),
    baas._session_active(uuid, uuid),
    baas._service_token_active(uuid),
    baas.jwks(),
    baas.auth_settings(),
    baas.claims()
  to baas_authenticator;

-------------------------------------------------------------------- one email normalisation (issue 13)
-- Sign-in, the audit log and as_user find accounts by sign-up's own normalisation
-- (Rust's Unicode lower case) instead of SQL lower(), which under the C ctype left
-- non-ASCII capitals alone, so such accounts could never sign in.
create function baas."_email_key"(
	"email" TEXT /* &str */
) RETURNS TEXT /* core::option::Option<alloc::string::String> */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'email_key_wrapper';
revoke execute on function baas._email_key(text) from public;

create or replace function baas.login(email text, password text) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    u baas.users;
    v_locked boolean;
    v_ok boolean;
begin
    if login.email is null or login.password is null then
        perform baas._raise('22023', 'invalid_request', 'email and password are required');
    end if;
    if octet_length(login.password) > 1024 then
        perform baas._raise('22001', 'password_too_long', 'password must be at most 1024 bytes');
    end if;
    select * into u from baas.users where email = baas._email_key(login.email);
    if u.id is not null then
        -- One attempt per account at a time, so that concurrent guesses see each
        -- other's failures (a burst cannot slip past the lockout threshold).
        perform pg_advisory_xact_lock(hashtextextended('baas.login:' || u.id::text, 0));
    end if;
    v_locked := u.id is not null and baas._account_locked(u.id);
    -- An unknown email verifies against a dummy hash, and a locked account is verified
    -- all the same: same work, same answer, so neither can be told from a wrong password.
    v_ok := baas._verify_password(login.password, u.password_hash);
    if v_locked or not v_ok then
        -- Reported as a result, not raised: the failure must commit to count.
        perform baas._audit(case when v_locked then 'login.locked' else 'login.failure' end, u.id,
            details => jsonb_build_object('email', baas._email_for_audit(login.email)));
        if not v_locked and u.id is not null then
            perform baas._note_login_failure(u.id);
        end if;
        return jsonb_build_object('error', jsonb_build_object(
            'code', 'invalid_credentials', 'message', 'invalid email or password'));
    end if;
    perform baas._audit('login', u.id);
    if baas._password_needs_rehash(u.password_hash) then
        update baas.users set password_hash = baas._hash_password(login.password)
         where id = u.id;
    end if;
    return baas._new_session(u);
end
$$;

create or replace function baas._email_for_audit(email text) returns text
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
    -- The address as sign-up and sign-in normalise it (baas._email_key), else a hash.
    select coalesce(baas._email_key(email),
                    'sha256:' || encode(sha256(convert_to(coalesce(email, ''), 'UTF8')), 'hex'))
$$;
