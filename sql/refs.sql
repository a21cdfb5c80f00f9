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
