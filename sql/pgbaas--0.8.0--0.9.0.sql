-- pgbaas 0.8.0 -> 0.9.0, run by ALTER EXTENSION pgbaas UPDATE.
--
-- It turns a 0.8.0 database into exactly what CREATE EXTENSION makes at 0.9.0:
-- tests/tests/upgrade.rs installs 0.8.0 from its release commit, fills it (files
-- included), runs this, checks the data through the proxy and compares the schema
-- (pg_dump --binary-upgrade) with a fresh install's. Every statement below is the final
-- text of the file it names (sql/CHANGES-0.9.0.md lists what changed and why). Older
-- databases upgrade through the earlier scripts first.
--
-- Once released, an upgrade script is never edited: a fix goes into the next version's.

-- ============================================================== sql/documents.sql
-- (package A: field operators)
-- baas._apply_operators as pgrx declares it (extension/src/api/documents.rs).
create function baas."_apply_operators"(
	"data" jsonb, /* JsonbText */
	"ops" jsonb, /* JsonbText */
	"at" timestamp with time zone /* TimestampWithTimeZone */
) RETURNS jsonb /* JsonbText */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'apply_operators_wrapper';

-- PUT and PATCH: replace `data`, merge-patch it (RFC 7386), or apply field operators
-- (docs/operators.md): a patch with a `$` key is an operator patch (all its keys must be
-- operators; baas._apply_operators refuses a mix with invalid_operator). The operators
-- run inside the UPDATE's SET expression, on the row the UPDATE has locked: concurrent
-- writers queue on the lock and each applies its operators to the previous one's result,
-- so none is lost, and there is no read-modify-write round trip. The guard trigger then
-- checks the result against the collection's JSON Schema as for any write.
create or replace function baas._write_document(collection text, id text, data jsonb, expected_version bigint, merge boolean)
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

comment on function baas.patch_document(text, text, jsonb, bigint) is
    'Apply an RFC 7386 merge patch, or field operators ($inc, $set, $unset, $push, $addToSet, $pull, $min, $max, $now; docs/operators.md), to data; with expected_version, 40001 version_conflict when stale';

-- ================================================================= sql/social.sql
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
create or replace function baas.get_profile(id uuid) returns jsonb
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
-- =================================================================== sql/refs.sql
-- pgbaas references: a document field may reference another document, a user or a file
-- ({"$ref": {...}}, docs/references.md); GET and lists expand them inline, each only if
-- the caller may read it, in the request's one statement (issue 18, package C).
--
-- Forms: {"$ref": {"collection": "<name>", "id": "<uuid>"}}, {"$ref": {"user": "<uuid>"}},
-- {"$ref": {"file": "<uuid>"}}; the files' own {"$file": "<uuid>"} (sql/files.sql) is a
-- file reference too. A field holds one reference or an array of them.
--
-- Expand runs as the caller (SECURITY INVOKER): a referenced document or file comes from
-- baas.documents under row-level security, a user through the same visibility rule as
-- baas.get_profile (sql/social.sql). What the caller may not read is null, exactly as
-- what does not exist.

-- Most references one response may expand (counted over every level).
alter table baas.settings add column max_expand_references integer not null default 1000
    check (max_expand_references between 0 and 100000);

------------------------------------------------------------------------ writing
-- Every object holding "$ref" in `data` must be a well-formed reference: 22023
-- invalid_reference otherwise. A reference to something missing is allowed. True when
-- some reference's id has upper-case letters (the trigger then lower-cases them, so
-- $refs and back-references, which compare the stored JSON, find it).
create function baas._check_references(data jsonb) returns boolean
language plpgsql immutable
as $$
declare
    o jsonb;
    r jsonb;
    keys text[];
    well_formed boolean;
    upper_case boolean := false;
    uuid_re constant text := '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';
begin
    for o in select x from pg_catalog.jsonb_path_query(data, 'strict $.** ? (@.type() == "object" && exists(@."$ref"))') x loop
        r := o -> '$ref';
        well_formed := false;
        if pg_catalog.jsonb_typeof(r) = 'object' and (select count(*) from pg_catalog.jsonb_object_keys(o)) = 1 then
            keys := array(select k from pg_catalog.jsonb_object_keys(r) k order by k);
            if keys = array['collection', 'id'] then
                well_formed := pg_catalog.jsonb_typeof(r -> 'collection') = 'string'
                    and (r ->> 'collection') ~ '^[a-z][a-z0-9_]{0,62}$'
                    and pg_catalog.jsonb_typeof(r -> 'id') = 'string' and (r ->> 'id') ~ uuid_re;
                upper_case := upper_case or (well_formed and (r ->> 'id') ~ '[A-F]');
            elsif keys = array['user'] or keys = array['file'] then
                well_formed := pg_catalog.jsonb_typeof(r -> keys[1]) = 'string' and (r ->> keys[1]) ~ uuid_re;
                upper_case := upper_case or (well_formed and (r ->> keys[1]) ~ '[A-F]');
            end if;
        end if;
        if not well_formed then
            raise exception using errcode = '22023', detail = 'invalid_reference', message = format(
                'a reference is {"$ref": {"collection": "<name>", "id": "<uuid>"}}, {"$ref": {"user": "<uuid>"}} or {"$ref": {"file": "<uuid>"}} and nothing else, not %s',
                left(o::text, 200));
        end if;
    end loop;
    return upper_case;
end
$$;

-- v with the ids of its (checked) references lower-cased, however deep.
create function baas._lower_references(v jsonb) returns jsonb
language sql immutable parallel safe
as $$
    select case pg_catalog.jsonb_typeof(v)
        when 'object' then
            case when pg_catalog.jsonb_typeof(v -> '$ref') = 'object' then
                pg_catalog.jsonb_build_object('$ref', (
                    select pg_catalog.jsonb_object_agg(e.key, case when e.key = 'collection' then e.value
                                                                   else pg_catalog.to_jsonb(lower(e.value #>> '{}')) end)
                      from pg_catalog.jsonb_each(v -> '$ref') e))
            else coalesce((select pg_catalog.jsonb_object_agg(e.key, baas._lower_references(e.value))
                             from pg_catalog.jsonb_each(v) e), '{}') end
        when 'array' then
            coalesce((select pg_catalog.jsonb_agg(baas._lower_references(e.x) order by e.i)
                        from pg_catalog.jsonb_array_elements(v) with ordinality e(x, i)), '[]')
        else v end
$$;

create function baas._references_check() returns trigger
language plpgsql
as $$
begin
    if baas._check_references(new.data) then
        new.data := baas._lower_references(new.data);
    end if;
    return new;
end
$$;
-- Only documents that mention "$ref" pay for more than the WHEN test (as the files'
-- "$file" trigger does); an update pays the text search only when data changed. That
-- search reads the whole document's text: a write of a large document costs one more
-- pass over it.
create trigger documents_references_insert before insert on baas.documents
    for each row when (new.data::text like '%"$ref":%') execute function baas._references_check();
create trigger documents_references_update before update of data on baas.documents
    for each row when (new.data is distinct from old.data and new.data::text like '%"$ref":%')
    execute function baas._references_check();

------------------------------------------------------------------------ expanding
-- The expand paths as a tree: {"author": {}, "comments": {"author": {}}}. 22023
-- invalid_expand for a bad path, expand_too_large for more than 10 paths or 3 levels.
create function baas._expand_tree(paths text[]) returns jsonb
language plpgsql immutable
as $$
declare
    p text;
    segs text[];
    t jsonb := '{}';
begin
    if pg_catalog.cardinality(paths) > 10 then
        raise exception using errcode = '22023', detail = 'expand_too_large', message = format('expand takes at most 10 paths, got %s', pg_catalog.cardinality(paths));
    end if;
    foreach p in array paths loop
        if p is null or p !~ '^[A-Za-z0-9_$-]{1,128}(\.[A-Za-z0-9_$-]{1,128})*$' then
            raise exception using errcode = '22023', detail = 'invalid_expand', message = format(
                'expand takes field names separated by dots (letters, digits, _, $, -), e.g. author,comments.author; not %s',
                coalesce(pg_catalog.quote_literal(left(p, 200)), 'null'));
        end if;
        segs := pg_catalog.string_to_array(p, '.');
        if pg_catalog.cardinality(segs) > 3 then
            raise exception using errcode = '22023', detail = 'expand_too_large', message = format('expand goes at most 3 levels deep, not %s (%s)', pg_catalog.cardinality(segs), left(p, 200));
        end if;
        for i in 1 .. pg_catalog.cardinality(segs) loop
            if t #> segs[1:i] is null then
                t := pg_catalog.jsonb_set(t, segs[1:i], '{}');
            end if;
        end loop;
    end loop;
    return t;
end
$$;

-- True, or the error _expand_tree raises for these paths: the routes test it before
-- reading the page, so a bad or too deep expand does not run the list first.
create function baas._expand_checked(paths text[]) returns boolean
language sql immutable
as $$ select paths is null or pg_catalog.cardinality(paths) = 0 or baas._expand_tree(paths) is not null $$;

-- Is v a reference object? Its key: "c:<collection>:<id>", "u:<id>" or "f:<id>", or null.
create function baas._ref_key(v jsonb) returns text
language sql immutable parallel safe
as $$
    select case
        when pg_catalog.jsonb_typeof(v) <> 'object' then null
        when pg_catalog.jsonb_typeof(v -> '$ref') = 'object' then
            case when v -> '$ref' ? 'collection' then 'c:' || (v -> '$ref' ->> 'collection') || ':' || lower(v -> '$ref' ->> 'id')
                 when v -> '$ref' ? 'user' then 'u:' || lower(v -> '$ref' ->> 'user')
                 when v -> '$ref' ? 'file' then 'f:' || lower(v -> '$ref' ->> 'file') end
        when pg_catalog.jsonb_typeof(v -> '$file') = 'string' then 'f:' || lower(v ->> '$file')
    end
$$;

-- Users' profiles as the caller may see them ({id, username, profile}): the rule of
-- baas.get_profile (sql/social.sql, the same baas._profile_shown), for many ids at once; an account that
-- get_profile answers user_not_found for has no row.
create function baas._ref_profiles(ids uuid[]) returns table (id uuid, profile jsonb)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select t.id, jsonb_build_object('id', t.id, 'username', t.username, 'profile', v.p)
      from baas.users t
     cross join lateral (select baas._visible_profile(t, baas.uid()) p) v
     where t.id = any (ids) and baas._profile_shown(t, v.p, baas._graph_visible(t, baas.uid()), baas.uid())
$$;

create function baas._max_expand_references() returns integer
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$ select s.max_expand_references from baas.settings s $$;

-- What a reference becomes: the value expanded below it (subtree), else the value
-- itself, else null (missing or not readable: the same null). Anything else stays.
create function baas._ref_value(v jsonb, subtree jsonb, found_refs jsonb, expanded jsonb) returns jsonb
language sql immutable parallel safe
as $$
    select case when baas._ref_key(v) is null then v
                else coalesce(expanded -> (baas._ref_key(v) || ' ' || subtree::text), found_refs -> baas._ref_key(v), 'null') end
$$;

-- baas.max_response_bytes: the most bytes of JSON one response may hold (the proxy sets
-- it on its connections; sql/documents.sql's pages keep to it too). Shown with a unit
-- ("15MB") once the library has defined it; 15 MiB, its default, when unset.
create function baas._max_response_bytes() returns bigint
language sql stable
as $$
    select coalesce(m[1]::bigint * case m[2] when 'kB' then 1024 when 'MB' then 1048576 when 'GB' then 1073741824
                                             when 'TB' then 1099511627776 else 1 end,
                    15728640)
      from (select pg_catalog.regexp_match(coalesce(pg_catalog.current_setting('baas.max_response_bytes', true), ''),
                                           '^\s*(\d{1,15})\s*(B|kB|MB|GB|TB)?\s*$') m) s
$$;

-- One level: nodes is an array of [document JSON, tree, key, copies]; each document's
-- data fields named by its tree are expanded (and, below them, the tree's subtrees).
-- `copies` (1 when absent) is how many times the document will appear in the response.
-- Every reference of the level is fetched by one set-based query, as the caller.
-- Limits, checked before anything is built: each reference costs its parent's copies
-- against `budget` (max_expand_references: a value pasted n times counts n times), and
-- each value found its text size times its copies against `bytes` (what is left of
-- baas.max_response_bytes): over either, 22023 expand_too_large / 54000
-- response_too_large. Returns the documents in order, and what is left of both.
create function baas._expand_level(nodes jsonb, budget integer, bytes bigint,
                                   out docs jsonb, out left_over integer, out bytes_left bigint)
language plpgsql stable
as $$
declare
    uuid_re constant text := '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
    n bigint;
    size bigint;
    found_refs jsonb;
    children jsonb;
    expanded jsonb;
    sub record;
begin
    -- Every reference at this level, each as many times as its document appears.
    select coalesce(sum(coalesce((d.x ->> 3)::bigint, 1)), 0) into n
      from pg_catalog.jsonb_array_elements(nodes) with ordinality d(x, i)
     cross join pg_catalog.jsonb_object_keys(d.x -> 1) f
     cross join lateral (select case when pg_catalog.jsonb_typeof(d.x -> 0 -> 'data' -> f) = 'array'
                                     then d.x -> 0 -> 'data' -> f else pg_catalog.jsonb_build_array(d.x -> 0 -> 'data' -> f) end a) v
     cross join pg_catalog.jsonb_array_elements(v.a) e
     where baas._ref_key(e) is not null;
    if n > budget then
        raise exception using errcode = '22023', detail = 'expand_too_large', message = format(
            'this expand reaches more than %s references, counting each time a document appears in the response (baas.settings.max_expand_references); expand fewer paths or page with a smaller limit',
            baas._max_expand_references());
    end if;
    left_over := budget - n;
    bytes_left := bytes;
    if n = 0 then
        docs := (select coalesce(pg_catalog.jsonb_agg(d.x -> 0 order by d.i), '[]') from pg_catalog.jsonb_array_elements(nodes) with ordinality d(x, i));
        return;
    end if;
    -- The referenced values the caller may read, by key: one query for the level.
    with refs as (
        select distinct baas._ref_key(e) k
          from pg_catalog.jsonb_array_elements(nodes) d(x)
         cross join pg_catalog.jsonb_object_keys(d.x -> 1) f
         cross join lateral (select case when pg_catalog.jsonb_typeof(d.x -> 0 -> 'data' -> f) = 'array'
                                         then d.x -> 0 -> 'data' -> f else pg_catalog.jsonb_build_array(d.x -> 0 -> 'data' -> f) end a) v
         cross join pg_catalog.jsonb_array_elements(v.a) e
    ), parsed as (
        select k, split_part(k, ':', 1) kind,
               case when k like 'c:%' then split_part(k, ':', 2) end coll,
               case when k like 'c:%' then split_part(k, ':', 3) else split_part(k, ':', 2) end rid
          from refs where k is not null
    ), ok as (
        select k, kind, coll, rid::uuid rid from parsed where rid ~ uuid_re
    )
    select coalesce(pg_catalog.jsonb_object_agg(x.k, x.v), '{}') into found_refs from (
        select 'c:' || c.name || ':' || d.id k, baas._document_json(d, c.name) v
          from ok join baas.collections c on c.name = ok.coll
          join baas.documents d on d.collection_id = c.id and d.id = ok.rid
         where ok.kind = 'c'
        union all
        select 'f:' || d.id, baas._file_json(d, c.name)
          from ok join baas.documents d on d.id = ok.rid and d.blob_id is not null
          join baas.collections c on c.id = d.collection_id
         where ok.kind = 'f'
        union all
        select 'u:' || p.id, p.profile
          from baas._ref_profiles(array(select ok.rid from ok where ok.kind = 'u')) p
    ) x;
    -- The bytes the found values will take, pasted where they are referenced.
    select coalesce(sum(coalesce((d.x ->> 3)::bigint, 1) * pg_catalog.octet_length((found_refs -> baas._ref_key(e))::text)), 0)
      into size
      from pg_catalog.jsonb_array_elements(nodes) d(x)
     cross join pg_catalog.jsonb_object_keys(d.x -> 1) f
     cross join lateral (select case when pg_catalog.jsonb_typeof(d.x -> 0 -> 'data' -> f) = 'array'
                                     then d.x -> 0 -> 'data' -> f else pg_catalog.jsonb_build_array(d.x -> 0 -> 'data' -> f) end a) v
     cross join pg_catalog.jsonb_array_elements(v.a) e
     where found_refs ? baas._ref_key(e);
    if size > bytes_left then
        raise exception using errcode = '54000', detail = 'response_too_large', message = format(
            'the expanded response would be more than %s bytes (baas.max_response_bytes): the referenced documents are large or appear many times; expand fewer paths or page with a smaller limit',
            baas._max_response_bytes());
    end if;
    bytes_left := bytes_left - size;
    -- The next level: each distinct (referenced document, subtree) once, as
    -- [document, subtree, key, copies].
    select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(found_refs -> s.k, s.t, s.k, s.copies) order by s.k, s.t::text), '[]')
      into children
      from (select baas._ref_key(e) k, d.x -> 1 -> f t, sum(coalesce((d.x ->> 3)::bigint, 1)) copies
              from pg_catalog.jsonb_array_elements(nodes) d(x)
             cross join pg_catalog.jsonb_object_keys(d.x -> 1) f
             cross join lateral (select case when pg_catalog.jsonb_typeof(d.x -> 0 -> 'data' -> f) = 'array'
                                             then d.x -> 0 -> 'data' -> f else pg_catalog.jsonb_build_array(d.x -> 0 -> 'data' -> f) end a) v
             cross join pg_catalog.jsonb_array_elements(v.a) e
             where d.x -> 1 -> f <> '{}' and pg_catalog.jsonb_typeof(found_refs -> baas._ref_key(e) -> 'data') = 'object'
             group by 1, 2) s;
    expanded := '{}';
    if pg_catalog.jsonb_array_length(children) > 0 then
        select l.docs, l.left_over, l.bytes_left into sub from baas._expand_level(children, left_over, bytes_left) l;
        left_over := sub.left_over;
        bytes_left := sub.bytes_left;
        -- The expanded children by "<key> <subtree>".
        select coalesce(pg_catalog.jsonb_object_agg((ch.x ->> 2) || ' ' || (ch.x -> 1)::text, r.x), '{}')
          into expanded
          from pg_catalog.jsonb_array_elements(children) with ordinality ch(x, i)
          join pg_catalog.jsonb_array_elements(sub.docs) with ordinality r(x, i) on r.i = ch.i;
    end if;
    -- Put the values in place of the references.
    select coalesce(pg_catalog.jsonb_agg(
               case when pg_catalog.jsonb_typeof(d.x -> 0 -> 'data') = 'object' then
                   pg_catalog.jsonb_set(d.x -> 0, '{data}', (d.x -> 0 -> 'data') || coalesce((
                       select pg_catalog.jsonb_object_agg(f, case
                           when pg_catalog.jsonb_typeof(d.x -> 0 -> 'data' -> f) = 'array' then (
                               select pg_catalog.jsonb_agg(baas._ref_value(e, d.x -> 1 -> f, found_refs, expanded) order by j)
                                 from pg_catalog.jsonb_array_elements(d.x -> 0 -> 'data' -> f) with ordinality a(e, j))
                           else baas._ref_value(d.x -> 0 -> 'data' -> f, d.x -> 1 -> f, found_refs, expanded) end)
                         from pg_catalog.jsonb_object_keys(d.x -> 1) f
                        where d.x -> 0 -> 'data' ? f), '{}'))
               else d.x -> 0 end order by d.i), '[]')
      into docs
      from pg_catalog.jsonb_array_elements(nodes) with ordinality d(x, i);
end
$$;

-- A document (the GET shape) with the references at `paths` of its data replaced by
-- what they reference, as the caller may read it (docs/references.md).
create function baas.expand(document jsonb, paths text[]) returns jsonb
language plpgsql stable
as $$
declare
    t jsonb;
begin
    if document is null or paths is null or pg_catalog.cardinality(paths) = 0 then
        return document;
    end if;
    t := baas._expand_tree(paths);
    return (select l.docs -> 0 from baas._expand_level(pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_array(document, t)),
                                                       baas._max_expand_references(),
                                                       baas._max_response_bytes() - pg_catalog.octet_length(document::text)) l);
end
$$;
comment on function baas.expand(jsonb, text[]) is
    'A document with its references at the given paths expanded inline (null where missing or not readable by you)';

-- A list page ({"items": [...], ...}) with every item expanded as baas.expand does;
-- its references are fetched together, one query per level.
create function baas.expand_page(page jsonb, paths text[]) returns jsonb
language plpgsql stable
as $$
declare
    t jsonb;
begin
    if page is null or paths is null or pg_catalog.cardinality(paths) = 0
       or pg_catalog.jsonb_typeof(page -> 'items') is distinct from 'array' then
        return page;
    end if;
    t := baas._expand_tree(paths);
    return pg_catalog.jsonb_set(page, '{items}', (
        select l.docs from baas._expand_level(
            (select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(x, t) order by i), '[]')
               from pg_catalog.jsonb_array_elements(page -> 'items') with ordinality e(x, i)),
            baas._max_expand_references(),
            baas._max_response_bytes() - pg_catalog.octet_length(page::text)) l));
end
$$;
comment on function baas.expand_page(jsonb, text[]) is
    'A list page with each item''s references at the given paths expanded inline, as baas.expand does';

------------------------------------------------------------------------ back-references
-- The documents of from_collection whose `field` (a dot path) holds a reference to the
-- document `id` of `collection`, or an array containing one: a page as list_documents
-- gives, of what the caller may read. The referenced document must be readable too
-- (404 document_not_found otherwise, as GET answers).
create function baas.referrers(collection text, id text, from_collection text, field text,
                               lim integer default 100, after uuid default null)
returns jsonb
language plpgsql stable
as $$
declare
    d jsonb := baas.get_document(collection, id);
    r jsonb := pg_catalog.jsonb_build_object('collection', d ->> 'collection', 'id', d ->> 'id');
begin
    if field is null or field = '' then
        raise exception using errcode = '22023', detail = 'invalid_query', message = 'field names the field that holds the references, e.g. field=post';
    end if;
    -- The query language's $refs: the field is the reference or an array holding it.
    return baas.list_documents(from_collection,
        pg_catalog.jsonb_build_object(field, pg_catalog.jsonb_build_object('$refs', r)), null, lim, 0, false, after, null);
end
$$;
comment on function baas.referrers(text, text, text, text, integer, uuid) is
    'Documents of from_collection you may read whose field references the given document (back-references)';

-- ================================================================== sql/batch.sql
-- How many operations one batch may hold (HTTP and SQL alike).
alter table baas.settings add column max_batch_operations integer not null default 100
    check (max_batch_operations between 1 and 1000);

-- The settings are private: the cap, for callers of baas.batch.
create function baas._batch_max_operations() returns integer
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$ select s.max_batch_operations from baas.settings s $$;

-- Run `operations` in order, as the caller, in the caller's transaction: all of them or
-- none. Each is {"op": "create"|"replace"|"patch"|"delete"|"get", "collection", "id"?,
-- "data"?, "acl"?, "if_match"?} and calls the function its single request calls, so
-- row-level security, JSON Schema and versions decide exactly as they do there.
-- `if_match` is a version: a whole JSON number (not 3.0), or the ETag string a single
-- request's If-Match takes, read as proxy/src/routes/input.rs `if_match` reads the
-- header ("3", "+3", "\"3\"", "W/\"3\"", "*" for none; blanks around it ignored).
--
-- The answer is {"results": [{"status": 201|200|204, "document"?: {...}}, ...]}. A
-- malformed batch is 22023 invalid_batch before anything runs. A failing operation's
-- error is raised again with its SQLSTATE, DETAIL (code) and HINT, its message prefixed
-- by `batch operation <0-based index>: ` (the HTTP route moves the index to
-- error.operation); everything the batch did is rolled back with it. One exception
-- block (one subtransaction) serves the whole loop, not one per operation.
create function baas.batch(operations jsonb) returns jsonb
language plpgsql volatile
as $$
declare
    n integer;
    -- The settings row always exists; 100 (the default) should it ever not.
    v_max integer := coalesce(baas._batch_max_operations(), 100);
    op jsonb;
    v_op text;
    v_bad text;
    v_key text;
    v_im jsonb;
    v_text text;
    v_versions bigint[] := '{}';
    v_version bigint;
    v_results jsonb[] := '{}';
    v_at integer;
    v_state text;
    v_msg text;
    v_detail text;
    v_hint text;
    d jsonb;
begin
    if operations is null or jsonb_typeof(operations) <> 'array' then
        raise exception using errcode = '22023', detail = 'invalid_batch', message = 'operations must be a JSON array of operations';
    end if;
    n := jsonb_array_length(operations);
    if n = 0 then
        raise exception using errcode = '22023', detail = 'invalid_batch', message = 'operations is empty: send at least one operation';
    end if;
    if n > v_max then
        raise exception using errcode = '22023', detail = 'invalid_batch', message =
            format('a batch holds at most %s operations (baas.settings.max_batch_operations); this one has %s', v_max, n);
    end if;
    -- The shape of every operation first: a malformed batch runs nothing.
    for k in 0 .. n - 1 loop
        op := operations -> k;
        v_bad := null;
        v_version := null;
        if jsonb_typeof(op) <> 'object' then
            v_bad := 'an operation must be a JSON object';
        else
            v_op := op ->> 'op';
            select x into v_key from jsonb_object_keys(op) x
             where x not in ('op', 'collection', 'id', 'data', 'acl', 'if_match') limit 1;
            if v_key is not null then
                v_bad := format('unknown field %s; an operation takes op, collection, id, data, acl and if_match', to_jsonb(v_key));
            elsif jsonb_typeof(op -> 'op') is distinct from 'string'
                  or v_op not in ('create', 'replace', 'patch', 'delete', 'get') then
                v_bad := format('op must be one of create, replace, patch, delete, get (got %s)', coalesce((op -> 'op')::text, 'nothing'));
            elsif jsonb_typeof(op -> 'collection') is distinct from 'string' then
                v_bad := 'collection is required (a collection name)';
            elsif v_op <> 'create' and jsonb_typeof(op -> 'id') is distinct from 'string' then
                v_bad := format('id is required for %s (a document id)', v_op);
            elsif v_op = 'create' and jsonb_typeof(op -> 'id') not in ('string', 'null') then
                v_bad := 'id must be a uuid';
            elsif v_op = 'create' and jsonb_typeof(op -> 'id') = 'string'
                  and op ->> 'id' !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
                v_bad := format('id must be a uuid, got %s', op -> 'id');
            elsif v_op in ('create', 'replace', 'patch') and coalesce(jsonb_typeof(op -> 'data'), 'null') = 'null' then
                v_bad := format('data is required for %s (a JSON object)', v_op);
            elsif v_op in ('delete', 'get') and op ? 'data' then
                v_bad := format('%s takes no data', v_op);
            elsif v_op <> 'create' and op ? 'acl' then
                v_bad := format('%s takes no acl (set it with PUT .../acl or baas.set_acl)', v_op);
            elsif v_op in ('create', 'get') and coalesce(jsonb_typeof(op -> 'if_match'), 'null') <> 'null' then
                v_bad := format('%s takes no if_match', v_op);
            else
                v_im := op -> 'if_match';
                if jsonb_typeof(v_im) = 'number' then
                    -- Digits only: 3.0 is refused as If-Match: 3.0 is (3e0 arrives as 3).
                    if v_im::text ~ '^[0-9]{1,19}$' and v_im::numeric between 1 and 9223372036854775807 then
                        v_version := v_im::numeric::bigint;
                    else
                        v_bad := 'if_match must be a document version: a whole number from 1, or the ETag string, e.g. "\"3\""';
                    end if;
                elsif jsonb_typeof(v_im) = 'string' then
                    -- As the single routes read If-Match (Rust's str::trim, then `*` is
                    -- none, W/ and quotes optional, then i64 parsing: an optional +, any
                    -- digits, a value from 1 to 2^63-1).
                    v_text := btrim(v_im #>> '{}', E' \t\n\v\f\r\u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000');
                    if v_text <> '*' then
                        if v_text like 'W/%' then
                            v_text := substr(v_text, 3);
                        end if;
                        if length(v_text) >= 2 and v_text like '"%"' then
                            v_text := substr(v_text, 2, length(v_text) - 2);
                        end if;
                        if v_text ~ '^\+?[0-9]+$' then
                            v_text := ltrim(ltrim(v_text, '+'), '0');
                        end if;
                        if v_text ~ '^[0-9]{1,19}$' and v_text::numeric <= 9223372036854775807 then
                            v_version := v_text::bigint;
                        else
                            v_bad := format('if_match must be a document version, e.g. 3 or "\"3\"" (got %s)', v_im);
                        end if;
                    end if;
                elsif v_im is not null and jsonb_typeof(v_im) <> 'null' then
                    v_bad := 'if_match must be a document version: a number, or the ETag string, e.g. "\"3\""';
                end if;
            end if;
        end if;
        if v_bad is not null then
            raise exception using errcode = '22023', detail = 'invalid_batch', message = format('batch operation %s: %s', k, v_bad);
        end if;
        v_versions := v_versions || v_version;
    end loop;
    -- One subtransaction for the whole loop: on an error every operation's work is
    -- undone, and v_at (a variable, not rolled back) names the one that failed.
    begin
        for k in 0 .. n - 1 loop
            v_at := k;
            op := operations -> k;
            v_op := op ->> 'op';
            case v_op
            when 'create' then
                d := baas.create_document(op ->> 'collection', op -> 'data',
                                          nullif(op -> 'acl', 'null'::jsonb), (op ->> 'id')::uuid);
                v_results := v_results || jsonb_build_object('status', 201, 'document', d);
            when 'replace' then
                d := baas.replace_document(op ->> 'collection', op ->> 'id', op -> 'data', v_versions[k + 1]);
                v_results := v_results || jsonb_build_object('status', 200, 'document', d);
            when 'patch' then
                d := baas.patch_document(op ->> 'collection', op ->> 'id', op -> 'data', v_versions[k + 1]);
                v_results := v_results || jsonb_build_object('status', 200, 'document', d);
            when 'delete' then
                perform baas.delete_document(op ->> 'collection', op ->> 'id', v_versions[k + 1]);
                v_results := v_results || jsonb_build_object('status', 204);
            else
                d := baas.get_document(op ->> 'collection', op ->> 'id');
                v_results := v_results || jsonb_build_object('status', 200, 'document', d);
            end case;
        end loop;
    exception when others then
        get stacked diagnostics v_state = returned_sqlstate, v_msg = message_text,
                                v_detail = pg_exception_detail, v_hint = pg_exception_hint;
        v_msg := format('batch operation %s: %s', v_at, v_msg);
        -- RAISE takes no NULL option: only the fields the error had.
        if v_detail <> '' and v_hint <> '' then
            raise exception using errcode = v_state, message = v_msg, detail = v_detail, hint = v_hint;
        elsif v_detail <> '' then
            raise exception using errcode = v_state, message = v_msg, detail = v_detail;
        elsif v_hint <> '' then
            raise exception using errcode = v_state, message = v_msg, hint = v_hint;
        else
            raise exception using errcode = v_state, message = v_msg;
        end if;
    end;
    return jsonb_build_object('results', to_jsonb(v_results));
end
$$;
comment on function baas.batch(jsonb) is
    'Run document operations (create, replace, patch, delete, get) as the caller, all or none; a failure names its 0-based operation';

-- =============================================================== sql/webhooks.sql
-- BEGIN sql/webhooks.sql (package D: webhooks; the file's text below its header)
------------------------------------------------------------------------ settings
-- A failed delivery is tried again after webhook_retry_base * 2^(attempts-1), at most
-- webhook_retry_max, ±10 % (each webhook says how many attempts in all: max_attempts).
alter table baas.settings
    add column webhook_retry_base interval not null default '10 seconds'
        check (webhook_retry_base between '1 second' and '1 hour'),
    add column webhook_retry_max interval not null default '1 hour'
        check (webhook_retry_max between '1 second' and '1 day');

------------------------------------------------------------------------ tables
-- One row per endpoint: a collection's documents (collection_id) or a table's rows
-- ("table"), the operations it wants, its signing secret (kept in clear: the proxy
-- signs with it; the table is the DBA's alone). Dumped.
create table baas.webhooks (
    id integer generated always as identity primary key,
    name text not null unique check (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    url text not null check (url ~ '^https?://[^\s/?#]+[^\s]*$' and length(url) <= 2000),
    secret text not null check (secret ~ '^whsec_[A-Za-z0-9+/]+={0,2}$' and length(secret) <= 200),
    collection_id integer references baas.collections (id) on delete cascade,
    "table" regclass,
    events text[] not null default '{insert,update,delete}'
        check (events <> '{}' and events <@ '{insert,update,delete}'),
    max_attempts integer not null default 10 check (max_attempts between 1 and 100),
    active boolean not null default true,
    created_at timestamptz not null default now(),
    check ((collection_id is null) <> ("table" is null))
);
create index webhooks_collection_idx on baas.webhooks (collection_id) where collection_id is not null;
revoke all on baas.webhooks from public;
alter table baas.webhooks enable row level security;
select pg_catalog.pg_extension_config_dump('baas.webhooks', '');
-- With its identity's position (sql/dump.sql): a restored database must not reuse an id.
select pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('baas.webhooks', 'id')::regclass, '');

-- The outbox: one row per event and webhook, written in the change's transaction.
-- key: the document's id or the row's primary key (JSON text; a change of the key files
-- the event under the new key); events of one
-- (webhook, key) go out one at a time, oldest first. Undelivered rows are dumped
-- (pending and dead ones: a restore keeps them), delivered ones are not.
create table baas.webhook_events (
    id bigint generated always as identity primary key,
    webhook_id integer not null references baas.webhooks (id) on delete cascade,
    -- The webhook-id header (msg_<uuid>), the same on every attempt; unique across
    -- databases, unlike id (a restored copy counts on from the same number).
    message_id uuid not null default baas.uuid7(),
    type text not null,
    key text not null,
    payload jsonb not null,
    created_at timestamptz not null default now(),
    attempts integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    claimed_until timestamptz,
    last_status integer,
    last_error text check (length(last_error) <= 2000),
    delivered_at timestamptz,
    dead_at timestamptz
);
-- The claim looks, per active webhook, for due events (due_idx) and counts those in
-- flight (claimed_idx, only claimed rows): cheap when nothing is due, whatever the backlog.
create index webhook_events_due_idx on baas.webhook_events (webhook_id, next_attempt_at, id)
    where delivered_at is null and dead_at is null;
create index webhook_events_claimed_idx on baas.webhook_events (webhook_id, claimed_until)
    where claimed_until is not null and delivered_at is null and dead_at is null;
create index webhook_events_key_idx on baas.webhook_events (webhook_id, key, id)
    where delivered_at is null and dead_at is null;
create index webhook_events_done_idx on baas.webhook_events ((coalesce(delivered_at, dead_at)))
    where delivered_at is not null or dead_at is not null;
revoke all on baas.webhook_events from public;
alter table baas.webhook_events enable row level security;
select pg_catalog.pg_extension_config_dump('baas.webhook_events', 'where delivered_at is null');
select pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('baas.webhook_events', 'id')::regclass, '');

-- DBAs: events that will not be delivered (max_attempts used up), newest first. Send
-- them again with baas.replay_webhook_event(id) or baas.replay_dead_webhook_events(name).
create view baas.webhook_dead_letters as
    select e.id, w.name as webhook, e.type, e.key, e.payload, e.created_at, e.attempts,
           e.last_status, e.last_error, e.dead_at
      from baas.webhook_events e
      join baas.webhooks w on w.id = e.webhook_id
     where e.dead_at is not null
     order by e.dead_at desc, e.id desc;
comment on view baas.webhook_dead_letters is
    'DBAs: webhook events given up after max_attempts failed deliveries, with the last HTTP status and error';
revoke all on baas.webhook_dead_letters from public;

------------------------------------------------------------------------ capture
-- The event's common part: {"type", "timestamp", "data"}.
create function baas._webhook_payload(type text, data jsonb) returns jsonb
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select jsonb_build_object('type', type,
                              'timestamp', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                              'data', data)
$$;

-- Documents: one trigger for every collection. With no webhook on the document's
-- collection it costs one probe of webhooks_collection_idx (an empty index when there
-- are no webhooks). Nothing is captured while a dump is loaded. No pg_notify here: a
-- notification takes a cluster-wide lock at commit, which would serialise every
-- webhooked writer; the proxies poll (--webhook-poll-secs, 1 s by default) instead.
create function baas._webhook_document() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_collection integer := case when tg_op = 'DELETE' then old.collection_id else new.collection_id end;
    v_op text := lower(tg_op);
    v_name text;
    v_type text;
    v_data jsonb;
    w record;
begin
    -- FOR KEY SHARE (the lock the outbox's foreign key takes anyway): a drop_webhook
    -- under way makes this wait, then skip the dropped webhook, instead of failing the
    -- user's write with a foreign-key violation.
    for w in select h.id from baas.webhooks h
              where h.collection_id = v_collection and h.active and v_op = any (h.events)
              order by h.id
                for key share of h
    loop
        if v_data is null then
            if baas._restoring() then
                return null;
            end if;
            select c.name into v_name from baas.collections c where c.id = v_collection;
            v_type := 'document.' || case tg_op when 'INSERT' then 'created' when 'UPDATE' then 'updated' else 'deleted' end;
            v_data := jsonb_build_object(
                'collection', v_name,
                'id', case when tg_op = 'DELETE' then old.id else new.id end,
                'document', case when tg_op <> 'DELETE' then baas._document_json(new, v_name) end,
                'previous', case when tg_op <> 'INSERT' then baas._document_json(old, v_name) end);
            v_data := baas._webhook_payload(v_type, v_data);
        end if;
        insert into baas.webhook_events (webhook_id, type, key, payload)
        values (w.id, v_type, (case when tg_op = 'DELETE' then old.id else new.id end)::text, v_data);
    end loop;
    return null;
end
$$;
create trigger documents_webhooks after insert or update or delete on baas.documents
    for each row execute function baas._webhook_document();

-- Tables: create_webhook installs `baas_webhook_<id>` on the table, with the webhook's
-- id and the primary key's columns as arguments.
create function baas._webhook_row() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_id integer := tg_argv[0]::integer;
    v_row jsonb := case when tg_op = 'DELETE' then to_jsonb(old) else to_jsonb(new) end;
    v_key jsonb := '{}';
    v_type text;
    i integer;
begin
    perform from baas.webhooks h where h.id = v_id and h.active for key share of h;
    if not found or baas._restoring() then
        return null;
    end if;
    for i in 1 .. tg_nargs - 1 loop
        v_key := v_key || jsonb_build_object(tg_argv[i], v_row -> tg_argv[i]);
    end loop;
    v_type := 'row.' || case tg_op when 'INSERT' then 'inserted' when 'UPDATE' then 'updated' else 'deleted' end;
    insert into baas.webhook_events (webhook_id, type, key, payload)
    values (v_id, v_type, v_key::text, baas._webhook_payload(v_type, jsonb_build_object(
        'table', tg_table_schema || '.' || tg_table_name,
        'key', v_key,
        'row', case when tg_op <> 'DELETE' then to_jsonb(new) end,
        'previous', case when tg_op <> 'INSERT' then to_jsonb(old) end)));
    return null;
end
$$;

------------------------------------------------------------------------ administration
-- DBAs: register a webhook for a collection's documents or a table's rows (exactly one
-- of the two) and the operations in `events`. secret: `whsec_` + base64 of 24 to 64
-- bytes; generated (32 random bytes) when null. Returns the webhook with its secret.
-- 22023 invalid_request (bad name, url, events, secret, max_attempts; a table without a
-- primary key); P0002 collection_not_found; 23505 webhook_exists.
create function baas.create_webhook(name text, url text, collection text default null,
                                    "table" regclass default null,
                                    events text[] default '{insert,update,delete}',
                                    secret text default null, max_attempts integer default 10)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_coll integer;
    v_secret text := create_webhook.secret;
    v_pk text[];
    v_events text[];
    w baas.webhooks;
begin
    if name is null or name !~ '^[a-z][a-z0-9_]{0,62}$' then
        perform baas._raise('22023', 'invalid_request', 'name must be 1 to 63 of a-z, 0-9 and _, starting with a letter');
    end if;
    if url is null or url !~ '^https?://[^\s/?#]+[^\s]*$' or length(url) > 2000 then
        perform baas._raise('22023', 'invalid_request', 'url must be an http:// or https:// URL (at most 2000 characters)');
    end if;
    if (collection is null) = ("table" is null) then
        perform baas._raise('22023', 'invalid_request', 'name exactly one of collection and "table"');
    end if;
    if events is null or events = '{}' or not events <@ '{insert,update,delete}' then
        perform baas._raise('22023', 'invalid_request', 'events must be a non-empty subset of {insert,update,delete}');
    end if;
    -- Each once, in the order given ('{insert,insert}' would make a bad trigger).
    v_events := array(select e from unnest(events) with ordinality u(e, n) group by e order by min(n));
    if max_attempts is null or max_attempts not between 1 and 100 then
        perform baas._raise('22023', 'invalid_request', 'max_attempts must be 1..100');
    end if;
    if v_secret is null then
        v_secret := 'whsec_' || encode(sha256(convert_to(baas._new_refresh_token(), 'UTF8')), 'base64');
    else
        begin
            -- Canonical base64 only (what encode gives back: no stray trailing bits), as
            -- the proxy decodes it strictly.
            if v_secret !~ '^whsec_[A-Za-z0-9+/]+={0,2}$' or length(decode(substr(v_secret, 7), 'base64')) not between 24 and 64
               or replace(encode(decode(substr(v_secret, 7), 'base64'), 'base64'), E'\n', '') <> substr(v_secret, 7) then
                raise exception using errcode = '22023';
            end if;
        exception when others then
            perform baas._raise('22023', 'invalid_request', 'secret must be whsec_ followed by the base64 of 24 to 64 bytes');
        end;
    end if;
    if exists (select 1 from baas.webhooks h where h.name = create_webhook.name) then
        perform baas._raise('23505', 'webhook_exists', format('a webhook named %s exists', create_webhook.name));
    end if;
    if collection is not null then
        v_coll := (baas._collection_by_name(collection)).id;
    else
        if (select c.relkind from pg_class c where c.oid = "table") not in ('r', 'p') then
            perform baas._raise('22023', 'invalid_request', format('%s is not a table', "table"));
        end if;
        -- Not pgbaas's own tables (baas.webhook_events would capture itself without end;
        -- baas.users holds password hashes) nor the system's.
        if (select n.nspname from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = "table")
           in ('baas', 'pg_catalog', 'information_schema', 'pg_toast') then
            perform baas._raise('22023', 'invalid_request', format('%s belongs to pgbaas or the system: no webhooks on it', "table"));
        end if;
        select array_agg(a.attname::text order by k.n) into v_pk
          from pg_index i
          cross join lateral unnest(i.indkey) with ordinality k(attnum, n)
          join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
         where i.indrelid = "table" and i.indisprimary;
        if v_pk is null then
            perform baas._raise('22023', 'invalid_request', format('table %s has no primary key (events are ordered per key)', "table"));
        end if;
    end if;
    insert into baas.webhooks (name, url, secret, collection_id, "table", events, max_attempts)
    values (name, url, v_secret, v_coll, "table", v_events, max_attempts)
    returning * into w;
    if "table" is not null then
        execute format('create trigger %I after %s on %s for each row execute function baas._webhook_row(%s)',
                       'baas_webhook_' || w.id,
                       array_to_string(array(select upper(e) from unnest(v_events) e order by e), ' or '),
                       "table",
                       array_to_string(array[quote_literal(w.id::text)] || array(select quote_literal(c) from unnest(v_pk) c), ', '));
    end if;
    -- The URL without credentials or query (either may hold a secret).
    perform baas._audit('webhook.create', collection => collection, details => jsonb_build_object(
        'webhook', name, 'url', regexp_replace(regexp_replace(url, '^(https?://)[^/?#]*@', '\1'), '[?#].*$', ''),
        'table', "table"::text));
    return baas._webhook_json(w) || jsonb_build_object('secret', v_secret);
end
$$;
comment on function baas.create_webhook(text, text, text, regclass, text[], text, integer) is
    'DBA: register a webhook for a collection''s documents or a table''s rows; returns it with its signing secret';

-- A webhook as DBAs see it (without its secret).
create function baas._webhook_json(w baas.webhooks) returns jsonb
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select jsonb_build_object('id', w.id, 'name', w.name, 'url', w.url,
        'collection', (select c.name from baas.collections c where c.id = w.collection_id),
        -- null once the table is dropped (a bare OID is no name)
        'table', (select c.oid::regclass::text from pg_class c where c.oid = w."table"), 'events', to_jsonb(w.events), 'max_attempts', w.max_attempts,
        'active', w.active, 'created_at', w.created_at)
$$;

create function baas._webhook_by_name(name text) returns baas.webhooks
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
    w baas.webhooks;
begin
    select * into w from baas.webhooks h where h.name = _webhook_by_name.name;
    if not found then
        perform baas._raise('P0002', 'webhook_not_found', format('no webhook named %s', coalesce(_webhook_by_name.name, 'null')));
    end if;
    return w;
end
$$;

-- DBAs: remove a webhook, its trigger (for a table whose table still exists) and its
-- events, delivered or not. P0002 webhook_not_found.
-- Concurrent writers: the trigger goes first (its table's lock waits for the table's
-- writers, and later ones find no trigger), then the row is deleted; a document writer's
-- capture reads webhooks FOR KEY SHARE, so it either holds the row (and the delete waits
-- for its commit, the cascade then takes its event) or waits for the delete and skips
-- the webhook. Either way the user's write succeeds; it never meets a foreign-key error.
-- Locking the row before the trigger could deadlock with a table writer.
create function baas.drop_webhook(name text) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    w baas.webhooks := baas._webhook_by_name(name);
    v_table text;
begin
    if w."table" is not null then
        select c.oid::regclass::text into v_table from pg_class c where c.oid = w."table";
        if v_table is not null then
            execute format('drop trigger if exists %I on %s', 'baas_webhook_' || w.id, v_table);
        end if;
    end if;
    delete from baas.webhooks h where h.id = w.id;
    perform baas._audit('webhook.drop', details => jsonb_build_object('webhook', w.name));
end
$$;
comment on function baas.drop_webhook(text) is 'DBA: remove a webhook and its pending events';

-- DBAs: pause (false) or resume (true) a webhook. A paused one captures nothing and
-- delivers nothing; events captured before wait for it to resume. P0002 webhook_not_found.
create function baas.set_webhook_active(name text, active boolean) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    w baas.webhooks := baas._webhook_by_name(name);
begin
    if active is null then
        perform baas._raise('22023', 'invalid_request', 'active must be true or false');
    end if;
    update baas.webhooks h set active = set_webhook_active.active where h.id = w.id returning * into w;
    perform baas._audit('webhook.' || case when active then 'resume' else 'pause' end,
                        details => jsonb_build_object('webhook', w.name));
    perform pg_notify('baas_webhooks', '');
    return baas._webhook_json(w);
end
$$;
comment on function baas.set_webhook_active(text, boolean) is 'DBA: pause (false) or resume (true) a webhook';

-- DBAs: deliver a dead event again, with a fresh count of attempts.
-- P0002 webhook_event_not_found: no dead event with this id.
create function baas.replay_webhook_event(id bigint) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    update baas.webhook_events e
       set dead_at = null, attempts = 0, next_attempt_at = now(), claimed_until = null
     where e.id = replay_webhook_event.id and e.dead_at is not null;
    if not found then
        perform baas._raise('P0002', 'webhook_event_not_found', format('no dead webhook event with id %s', coalesce(replay_webhook_event.id::text, 'null')));
    end if;
    perform pg_notify('baas_webhooks', '');
end
$$;
comment on function baas.replay_webhook_event(bigint) is 'DBA: deliver a dead-lettered webhook event again';

-- DBAs: every dead event of webhook `name` again, oldest first. Returns how many.
-- P0002 webhook_not_found.
create function baas.replay_dead_webhook_events(name text) returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    w baas.webhooks := baas._webhook_by_name(name);
    n bigint;
begin
    update baas.webhook_events e
       set dead_at = null, attempts = 0, next_attempt_at = now(), claimed_until = null
     where e.webhook_id = w.id and e.dead_at is not null;
    get diagnostics n = row_count;
    perform pg_notify('baas_webhooks', '');
    return n;
end
$$;
comment on function baas.replay_dead_webhook_events(text) is 'DBA: deliver every dead-lettered event of a webhook again; returns how many';

-- DBAs and housekeeping: delete events delivered or dead more than `older_than` ago
-- (at least 1 hour); pending ones stay. Returns how many went.
create function baas.purge_webhook_events(older_than interval) returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    n bigint;
begin
    if older_than is null or older_than < interval '1 hour' then
        perform baas._raise('22023', 'invalid_request', 'older_than must be at least 1 hour');
    end if;
    delete from baas.webhook_events e
     where (e.delivered_at is not null or e.dead_at is not null)
       and coalesce(e.delivered_at, e.dead_at) < now() - older_than;
    get diagnostics n = row_count;
    return n;
end
$$;
comment on function baas.purge_webhook_events(interval) is
    'DBA/housekeeping: delete webhook events delivered or dead longer ago than the interval (at least 1 hour); returns how many';

------------------------------------------------------------------------ the proxy's side
-- Claim up to `max` due events for `lease_secs`, at most `per_webhook` in flight per
-- webhook counted over the whole cluster (every proxy's deliveries), so that one slow
-- endpoint cannot take every delivery slot, and only the oldest undelivered event of
-- each (webhook, key): the next one waits until it is delivered or dead, so delivery is
-- in order per document across any number of proxies. The attempt counts now; an event
-- whose lease lapsed with no attempt left is dead here. Returns each event's
-- webhook-id (msg_<message_id>), the same on every attempt.
-- Cost: per active webhook one count of its claimed rows (claimed_idx) and one ordered
-- walk of its due rows (due_idx) that stops after its share: nothing is rescanned per
-- event, and a poll that finds nothing due is a few index probes.
create function baas._webhook_claim(max integer, lease_secs integer, per_webhook integer)
returns table (id bigint, webhook_id integer, url text, secret text, body text, attempt integer, msg_id text)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if max is null or max not between 1 and 1000 or lease_secs is null or lease_secs not between 1 and 86400
       or per_webhook is null or per_webhook not between 1 and 1000 then
        perform baas._raise('22023', 'invalid_request', 'max and per_webhook must be 1..1000 and lease_secs 1..86400');
    end if;
    update baas.webhook_events e
       set dead_at = now(), claimed_until = null,
           last_error = left('gave up after ' || e.attempts || ' attempts: the last one never reported back'
                             || coalesce('; before: ' || e.last_error, ''), 2000)
      from baas.webhooks w
     where w.id = e.webhook_id
       and e.id in (select x.id from baas.webhook_events x join baas.webhooks h on h.id = x.webhook_id
                     where x.claimed_until is not null and x.delivered_at is null and x.dead_at is null
                       and x.claimed_until < now() and x.attempts >= h.max_attempts
                     limit 100
                       for update of x skip locked);
    return query
    with busy as (
        select f.webhook_id, count(*)::integer as n
          from baas.webhook_events f
         where f.claimed_until is not null and f.delivered_at is null and f.dead_at is null
           and f.claimed_until >= now()
         group by f.webhook_id
    ), picked as (
        select c.id
          from baas.webhooks h
          left join busy b on b.webhook_id = h.id
         cross join lateral (
               select x.id, x.next_attempt_at
                 from baas.webhook_events x
                where x.webhook_id = h.id and x.delivered_at is null and x.dead_at is null
                  and x.next_attempt_at <= now()
                  and (x.claimed_until is null or x.claimed_until < now())
                  and not exists (select 1 from baas.webhook_events p
                                   where p.webhook_id = x.webhook_id and p.key = x.key and p.id < x.id
                                     and p.delivered_at is null and p.dead_at is null)
                order by x.next_attempt_at, x.id
                limit greatest(per_webhook - coalesce(b.n, 0), 0)
                  for update of x skip locked) c
         where h.active and coalesce(b.n, 0) < per_webhook
         order by c.next_attempt_at, c.id
         limit max
    )
    update baas.webhook_events e
       set attempts = e.attempts + 1, claimed_until = now() + make_interval(secs => lease_secs)
      from picked k, baas.webhooks w
     where e.id = k.id and w.id = e.webhook_id
    returning e.id, e.webhook_id, w.url, w.secret, e.payload::text, e.attempts, 'msg_' || e.message_id::text;
end
$$;

-- Attempt `attempt` of event `id` got a 2xx (`status`): delivered. A report for an
-- attempt that is no longer the latest changes nothing.
create function baas._webhook_delivered(id bigint, attempt integer, status integer) returns void
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    update baas.webhook_events e
       set delivered_at = now(), claimed_until = null, last_status = _webhook_delivered.status, last_error = null
     where e.id = _webhook_delivered.id and e.attempts = _webhook_delivered.attempt
       and e.delivered_at is null and e.dead_at is null
$$;

-- Attempt `attempt` of event `id` failed: `status` is the HTTP status (null: no
-- answer), `error` what went wrong. Dead after the webhook's max_attempts; else due
-- again after webhook_retry_base * 2^(attempts-1), at most webhook_retry_max, ±10 %.
create function baas._webhook_failed(id bigint, attempt integer, status integer, error text) returns void
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    update baas.webhook_events e
       set dead_at = case when e.attempts >= w.max_attempts then now() end,
           next_attempt_at = now() + least(s.webhook_retry_base * power(2, least(e.attempts - 1, 30)), s.webhook_retry_max)
                                     * (0.9 + 0.2 * random()),
           claimed_until = null,
           last_status = _webhook_failed.status,
           last_error = left(coalesce(_webhook_failed.error, 'unknown error'), 2000)
      from baas.webhooks w, baas.settings s
     where w.id = e.webhook_id and e.id = _webhook_failed.id and e.attempts = _webhook_failed.attempt
       and e.delivered_at is null and e.dead_at is null
$$;
-- END sql/webhooks.sql

-- =========================================================== sql/housekeeping.sql

-- How long sent and failed outbox messages are kept (null: kept until a DBA runs
-- baas.purge_email_outbox); pending ones always stay.
alter table baas.settings add column email_outbox_retention interval default '30 days'
    check (email_outbox_retention between '1 day' and '3650 days');

-- What lets a run find its batch without reading a whole table (partial where the
-- garbage is a small part of a busy table).
create index sessions_expires_at_idx on baas.sessions (expires_at);
create index sessions_revoked_at_idx on baas.sessions (revoked_at) where revoked_at is not null;
create index refresh_tokens_sealed_idx on baas.refresh_tokens (used_at) where successor is not null;
create index auth_tokens_expires_at_idx on baas._auth_tokens (expires_at);
create index trusted_sources_last_success_idx on baas._trusted_sources (last_success_at);
create index email_outbox_done_idx on baas.email_outbox (created_at) where status in ('sent', 'failed');

-- One run: what pgbaas itself leaves behind that no request will ever read again. Each
-- kind removes at most a batch per run (`limit … for update skip locked`: the rest goes
-- in the next runs, and a row a request holds is left for later), so a run is one short
-- transaction whatever the backlog. Cold rows first, the rows requests also lock
-- (refresh tokens' seals, sign-in throttles, trusted sources) last, so a run holds their
-- locks only for its final moments; uploads last of all, in small batches (the proxy's
-- upload sweep runs the same two functions: sql/files.sql). baas.purge_sessions and
-- baas.purge_email_outbox stay for manual use (they take everything at once).
-- Never touches audit entries or anonymous accounts: those are the team's policy
-- (docs/schedules.md); an anonymous account keeps its newest session, the evidence of
-- its last activity that baas.purge_anonymous_users measures. One run at a time across
-- proxies and pg_cron: a run that finds another one going answers {"skipped": true} at
-- once. A run waits at most lock_timeout for a lock (then fails; the next one retries).
create function baas.housekeeping() returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '5s'
as $$
declare
    batch constant integer := 1000;
    cutoff constant timestamptz := now() - interval '1 day';
    s baas.settings;
    r jsonb := '{}';
    n bigint;
begin
    -- The two-int form: its key space is apart from the one-bigint keys that
    -- hashtextextended('baas.login:' || email) and the like make from client input, so
    -- no request can take this lock. 1650549107 = 'baas', 26731 = 'hk' (ASCII).
    if not pg_catalog.pg_try_advisory_xact_lock(1650549107, 26731) then
        return jsonb_build_object('skipped', true);
    end if;
    select * into strict s from baas.settings;

    -- Sent and failed mail past email_outbox_retention (the rule of
    -- baas.purge_email_outbox in sql/email.sql); pending mail always stays.
    if s.email_outbox_retention is null then
        n := 0;
    else
        delete from baas.email_outbox o
         where o.id in (
             select x.id from baas.email_outbox x
              where x.status in ('sent', 'failed') and x.created_at < now() - s.email_outbox_retention
              limit batch for update skip locked);
        get diagnostics n = row_count;
    end if;
    r := r || jsonb_build_object('email_outbox', n);

    -- Identity-provider tokens remembered against replay, past their expiry
    -- (sql/oidc.sql forgets them too, at the next sign-in).
    delete from baas._oidc_used_tokens t
     where t.ctid = any (array(
         select x.ctid from baas._oidc_used_tokens x where x.expires_at < now()
          limit batch for update skip locked));
    get diagnostics n = row_count;
    r := r || jsonb_build_object('oidc_used_tokens', n);

    -- Mailed links and codes and MFA tickets: single use and expiring; a day after
    -- they expired nothing answers "expired" from them any more, used or not.
    delete from baas._auth_tokens t
     where t.ctid = any (array(
         select x.ctid from baas._auth_tokens x
          where x.expires_at < cutoff
          limit batch for update skip locked));
    get diagnostics n = row_count;
    r := r || jsonb_build_object('auth_tokens', n);

    -- Sessions that ended over a day ago (the rule of baas.purge_sessions in
    -- sql/auth.sql): first a batch of their refresh tokens, then those of them left with
    -- none, so the cascade has nothing to do. An anonymous account's newest session
    -- stays (its last_used_at is how baas.purge_anonymous_users knows it was active).
    delete from baas.refresh_tokens t
     where t.ctid = any (array(
         select x.ctid from baas.sessions e join baas.refresh_tokens x on x.session_id = e.id
          where e.expires_at < cutoff or e.revoked_at < cutoff
          limit batch for update of x skip locked));
    delete from baas.sessions t
     where t.ctid = any (array(
         select e.ctid from baas.sessions e
          where (e.expires_at < cutoff or e.revoked_at < cutoff)
            and not exists (select from baas.refresh_tokens x where x.session_id = e.id)
            and (not exists (select from baas.users u where u.id = e.user_id and u.is_anonymous)
                 or exists (select from baas.sessions o
                             where o.user_id = e.user_id
                               and (coalesce(o.last_used_at, '-infinity'), o.id)
                                   > (coalesce(e.last_used_at, '-infinity'), e.id)))
          limit batch for update skip locked));
    get diagnostics n = row_count;
    r := r || jsonb_build_object('sessions', n);

    -- Sealed successors past the longest refresh_reuse_interval (baas.refresh drops them
    -- too, per session, when it next runs).
    update baas.refresh_tokens t set successor = null
     where t.ctid = any (array(
         select x.ctid from baas.refresh_tokens x
          where x.successor is not null and x.used_at < clock_timestamp() - interval '5 minutes'
          limit batch for update skip locked));
    get diagnostics n = row_count;
    r := r || jsonb_build_object('sealed_refresh_tokens', n);

    -- Failed-sign-in counts past login_failure_window and not making anyone wait
    -- (sql/audit.sql forgets 20 of them per failed sign-in; the same rule).
    delete from baas._login_throttles t
     where t.ctid = any (array(
         select x.ctid from baas._login_throttles x
          where x.last_failure_at < clock_timestamp() - s.login_failure_window
            and (x.wait_until is null or x.wait_until < clock_timestamp())
          limit batch for update skip locked));
    get diagnostics n = row_count;
    r := r || jsonb_build_object('login_throttles', n);

    -- Trusted sign-in sources past login_trust_ttl (sql/audit.sql forgets them per
    -- account at its next sign-in; accounts that never sign in again kept them).
    delete from baas._trusted_sources t
     where t.ctid = any (array(
         select x.ctid from baas._trusted_sources x
          where x.last_success_at < clock_timestamp() - s.login_trust_ttl
          limit batch for update skip locked));
    get diagnostics n = row_count;
    r := r || jsonb_build_object('trusted_sources', n);

    -- Unfinished uploads past their expiry (their bytes go to the trash) and finished
    -- ones remembered for a day, then up to 16 chunk rows (16 MiB) of the bytes of
    -- deleted or replaced files (sql/files.sql). Small batches: where the proxy runs
    -- its upload sweep (--upload-cleanup-secs) that does the bulk; this keeps a database
    -- without one clean, slowly.
    r := r || jsonb_build_object('uploads', baas.cleanup_uploads(100),
                                 'blob_rows', baas.cleanup_blobs(16));

    -- Webhook events (sql/webhooks.sql) delivered more than a day ago, or dead more
    -- than 30 days ago (baas.webhook_dead_letters keeps them for replay until then);
    -- pending ones always stay. baas.purge_webhook_events stays for manual use.
    delete from baas.webhook_events e
     where e.id in (
         select x.id from baas.webhook_events x
          where (x.delivered_at is not null or x.dead_at is not null)
            and coalesce(x.delivered_at, x.dead_at) < now() - interval '1 day'
            and (x.dead_at is null or x.dead_at < now() - interval '30 days')
          limit batch for update skip locked);
    get diagnostics n = row_count;
    r := r || jsonb_build_object('webhook_events', n);
    return r;
end
$$;
comment on function baas.housekeeping() is
    'Proxy/DBAs: remove what pgbaas leaves behind (ended sessions, expired tokens and uploads, old outbox rows), a batch of each per run; answers the counts per kind, or {"skipped": true} while another run holds the lock';

-- ================================================================== sql/lints.sql
-- (package A: _apply_operators on the 4a allow list)
-- (package D: the six webhook functions in the 4b list)
-- batches (package B): baas.batch and baas._batch_max_operations join the allow lists.
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
           '_collection_by_name', '_check_collection_name', '_document_json', '_parse_document_id',
           '_document_not_found', '_write_document', '_explain_write_miss', '_version_conflict',
           '_validate_document', '_normalize_acl', '_check_new_principals', '_acl_change', '_change_acl',
           '_owned_document', '_set_document_owner', '_may_create', '_may_manage', '_is_privileged',
           '_find_page', '_find_compiled', '_count_compiled', '_btree_index_id', '_jfield',
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
           'expand', 'expand_page', 'referrers'])
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
                                  'documents_update', 'documents_delete', 'documents_aal'))
        or (p.polrelid = 'baas.index_entries'::regclass
            and p.polname not in ('index_entries_service', 'index_entries_read', 'index_entries_aal'))
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
                    '(index_id <> ALL (( SELECT baas._aal2_blocked_indexes() AS _aal2_blocked_indexes)::integer[]))')) v(polname, rel, cmd, qual)
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
comment on function baas.security_lints() is
    'Security lints (no rows = clean): unforced RLS on API-readable tables, SECURITY DEFINER without search_path, PUBLIC execute, exposed internal functions, undocumented public functions, policies that drifted from their one rule (documents and files), write grants on file tables, policies reading user-editable data, the RPC door and protected tables (rpc_lints, table_lints)';


-- ================================================================= sql/grants.sql
-- field operators (issue 18, package A): revoked from PUBLIC as a fresh install does.
revoke execute on function baas._apply_operators(jsonb, jsonb, timestamptz) from public;
grant execute on function baas._apply_operators(jsonb, jsonb, timestamptz)
  to baas_anon, baas_user, baas_service;


-- housekeeping (issue 18, sql/housekeeping.sql): package E.
revoke execute on function baas.housekeeping() from public;
grant execute on function baas.housekeeping() to baas_authenticator;

revoke execute on function
    baas._profile_shown(baas.users, jsonb, boolean, uuid),
    baas._check_references(jsonb),
    baas._lower_references(jsonb),
    baas._references_check(),
    baas._expand_tree(text[]),
    baas._expand_checked(text[]),
    baas._ref_key(jsonb),
    baas._ref_value(jsonb, jsonb, jsonb, jsonb),
    baas._ref_profiles(uuid[]),
    baas._max_expand_references(),
    baas._max_response_bytes(),
    baas._expand_level(jsonb, integer, bigint),
    baas.expand(jsonb, text[]),
    baas.expand_page(jsonb, text[]),
    baas.referrers(text, text, text, text, integer, uuid)
  from public;
-- references (issue 18, sql/refs.sql): package C.
-- expand and referrers run as the caller (row-level security decides what each
-- reference shows); their helpers are executed as the caller too. _ref_profiles and
-- _max_expand_references are SECURITY DEFINER: a profile through get_profile's rule,
-- and one setting.
grant execute on function
    baas._check_references(jsonb),
    baas._lower_references(jsonb),
    baas._expand_tree(text[]),
    baas._expand_checked(text[]),
    baas._ref_key(jsonb),
    baas._ref_value(jsonb, jsonb, jsonb, jsonb),
    baas._ref_profiles(uuid[]),
    baas._max_expand_references(),
    baas._max_response_bytes(),
    baas._expand_level(jsonb, integer, bigint),
    baas.expand(jsonb, text[]),
    baas.expand_page(jsonb, text[]),
    baas.referrers(text, text, text, text, integer, uuid)
  to baas_anon, baas_user, baas_service;


-- webhooks (package D): a fresh install revokes every function from PUBLIC first.
revoke execute on function
    baas._webhook_payload(text, jsonb),
    baas._webhook_document(),
    baas._webhook_row(),
    baas.create_webhook(text, text, text, regclass, text[], text, integer),
    baas._webhook_json(baas.webhooks),
    baas._webhook_by_name(text),
    baas.drop_webhook(text),
    baas.set_webhook_active(text, boolean),
    baas.replay_webhook_event(bigint),
    baas.replay_dead_webhook_events(text),
    baas.purge_webhook_events(interval),
    baas._webhook_claim(integer, integer, integer),
    baas._webhook_delivered(bigint, integer, integer),
    baas._webhook_failed(bigint, integer, integer, text)
  from public;
grant execute on function
    baas._webhook_claim(integer, integer, integer),
    baas._webhook_delivered(bigint, integer, integer),
    baas._webhook_failed(bigint, integer, integer, text)
  to baas_authenticator;

-- batches (issue 18, sql/batch.sql): package B. A fresh install revokes every function
-- from PUBLIC before granting.
revoke execute on function
    baas._batch_max_operations(),
    baas.batch(jsonb)
  from public;
grant execute on function
    baas._batch_max_operations(),
    baas.batch(jsonb)
  to baas_anon, baas_user, baas_service;

-- Tell every proxy that the extension changed (see pgbaas--0.2.0--0.3.0.sql).
select pg_catalog.pg_notify('baas_extension', '0.9.0');
