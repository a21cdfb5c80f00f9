-- pgbaas 0.2.0 -> 0.3.0, run by ALTER EXTENSION pgbaas UPDATE.
--
-- It turns a 0.2.0 database into exactly what CREATE EXTENSION makes at 0.3.0:
-- tests/tests/upgrade.rs installs 0.2.0 from its release commit, fills it, runs this,
-- checks the data through the proxy and compares the schema (pg_dump --binary-upgrade)
-- with a fresh install's. Every statement below is the final text of the file it names
-- (sql/CHANGES-0.3.0.md lists what changed and why). A 0.1.0 database upgrades through
-- pgbaas--0.1.0--0.2.0.sql first.
--
-- Once released, an upgrade script is never edited: a fix goes into the next version's.
--
-- A package upgrade replaces the library (pgbaas.so) before this runs: C functions keep
-- their symbols, so 0.2.0's SQL runs on the new library until this script has run (the
-- test checks every symbol 0.2.0 names).

-------------------------------------------------------------------- review: no existence oracle in _set_document_owner
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
-- ---------------------------------------------------------------- connections that heal
-- Tell every proxy that the extension changed: a proxy LISTENs on baas_extension and
-- retires the pooled connections opened before the update at their next checkout, so
-- no request runs on a backend that cached the old version's plans and functions.
-- Postgres delivers it when ALTER EXTENSION commits, so its place in the script does
-- not matter; every later upgrade script sends it too, with its own version.
select pg_catalog.pg_notify('baas_extension', '0.3.0');
-- Bounded responses (issue 13): a page of documents holds at most
-- baas.max_response_bytes of JSON (a setting of the library). _find_compiled takes
-- `paged`: list_documents asks for {"items", "next"} and gets a page that may end
-- early with its `next`; baas.find gets 54000 response_too_large instead.
drop function baas._find_compiled(integer, text, jsonb, text, integer, integer, uuid, text[]);
create function baas."_find_compiled"(
	"collection_id" INT, /* core::option::Option<i32> */
	"name" TEXT, /* core::option::Option<&str> */
	"filter" jsonb, /* core::option::Option<pgbaas::api::Json> */
	"order" TEXT, /* core::option::Option<&str> */
	"lim" INT, /* core::option::Option<i32> */
	"off" INT, /* core::option::Option<i32> */
	"after" uuid, /* core::option::Option<pgrx::datum::uuid::Uuid> */
	"fields" TEXT[], /* core::option::Option<alloc::vec::Vec<alloc::string::String>> */
	"paged" bool DEFAULT false /* bool */
) RETURNS jsonb /* pgbaas::api::query::RawJsonb */
STABLE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'find_compiled_wrapper';
revoke execute on function baas._find_compiled(integer, text, jsonb, text, integer, integer, uuid, text[], boolean) from public;
grant execute on function baas._find_compiled(integer, text, jsonb, text, integer, integer, uuid, text[], boolean)
  to baas_anon, baas_user, baas_service;
create or replace function baas.list_documents(collection text, filter jsonb default '{}', "order" text default null,
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
