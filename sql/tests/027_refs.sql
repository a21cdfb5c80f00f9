-- References and expand (issue 18, package C; sql/refs.sql): write-time checks of
-- {"$ref": ...}, baas.expand / expand_page / referrers as the caller (baas.as_user),
-- null for what the caller may not read exactly as for what is missing, and the limits.
begin;
select plan(26);

select baas.create_collection('rf_authors');
select baas.create_collection('rf_posts');
select baas.create_collection('rf_comments');
select baas.signup('rf1@refs.test', 'long enough pw') -> 'user' ->> 'id' as u1 \gset
select baas.signup('rf2@refs.test', 'long enough pw') -> 'user' ->> 'id' as u2 \gset
update baas.users set profile_public = '{"name": "Ann"}', username = 'ann_rf' where id = :'u1';

select baas.create_document('rf_authors', '{"name": "Pub"}', '{"read": ["public"]}') ->> 'id' as a_pub \gset
select baas.create_document('rf_authors', '{"name": "Hidden"}', '{"read": []}') ->> 'id' as a_priv \gset
select '0190b0a4-6f1e-7c3a-8d2b-5e4f3a2b1c0d' as missing \gset
select baas.create_document('rf_posts', jsonb_build_object(
    'title', 'p1',
    'author', jsonb_build_object('$ref', jsonb_build_object('collection', 'rf_authors', 'id', :'a_pub')),
    'co', jsonb_build_array(
        jsonb_build_object('$ref', jsonb_build_object('collection', 'rf_authors', 'id', :'a_pub')),
        jsonb_build_object('$ref', jsonb_build_object('collection', 'rf_authors', 'id', :'a_priv')),
        jsonb_build_object('$ref', jsonb_build_object('collection', 'rf_authors', 'id', :'missing')),
        'not a reference'),
    'by', jsonb_build_object('$ref', jsonb_build_object('user', :'u1')),
    'by_anon', jsonb_build_object('$ref', jsonb_build_object('user', :'u2'))), '{"read": ["public"]}') ->> 'id' as p1 \gset
select baas.create_document('rf_posts', jsonb_build_object(
    'title', 'p2 hidden', 'author', jsonb_build_object('$ref', jsonb_build_object('collection', 'rf_authors', 'id', :'a_pub'))),
    '{"read": []}') ->> 'id' as p2 \gset
select baas.create_document('rf_comments', jsonb_build_object(
    'text', 'c1', 'post', jsonb_build_object('$ref', jsonb_build_object('collection', 'rf_posts', 'id', :'p1'))),
    '{"read": ["public"]}') ->> 'id' as c1 \gset

-------------------------------------------------------------------- writing
select is(pg_temp.detail_of($$select baas.create_document('rf_posts', '{"a": {"$ref": {"collection": "rf_authors"}}}')$$),
          '22023 invalid_reference', 'a $ref without an id is refused');
select is(pg_temp.detail_of($$select baas.create_document('rf_posts', '{"a": [{"$ref": {"user": "0190b0a4-6f1e-7c3a-8d2b-5e4f3a2b1c0d"}, "x": 1}]}')$$),
          '22023 invalid_reference', 'a reference object with another key beside $ref is refused, inside an array too');
select is(pg_temp.detail_of($$select baas.create_document('rf_posts', '{"a": {"b": {"$ref": {"file": "nope"}}}}')$$),
          '22023 invalid_reference', 'a file reference that is no uuid is refused, however deep');
select is(pg_temp.detail_of(format($$select baas.patch_document('rf_posts', %L, '{"x": {"$ref": "rf_authors"}}')$$, :'p1')),
          '22023 invalid_reference', 'a patch adding a malformed reference is refused');
select is(pg_temp.detail_of(format($$select baas.create_document('rf_posts', '{"a": {"$ref": {"collection": "nope", "id": %s}}}')$$, to_jsonb(:'missing'::text))),
          null, 'a dangling reference is allowed');
select baas.create_document('rf_posts', jsonb_build_object('u', jsonb_build_array(
    jsonb_build_object('$ref', jsonb_build_object('user', upper(:'u1')))))) ->> 'id' as upper_doc \gset
select is((select d.data from baas.documents d where d.id = :'upper_doc'::uuid) -> 'u' -> 0 -> '$ref' ->> 'user',
          :'u1', 'an upper-case id in a reference is stored lower-cased');

-------------------------------------------------------------------- expand as the caller
select is((select x from baas.as_user(null::uuid, format($$select baas.expand(baas.get_document('rf_posts', %L), '{author}')$$, :'p1')) x)
              -> 'data' -> 'author' -> 'data' ->> 'name',
          'Pub', 'expand replaces a reference by the readable document (GET shape)');
select is((select x from baas.as_user(null::uuid, format($$select baas.expand(baas.get_document('rf_posts', %L), '{co}')$$, :'p1')) x)
              -> 'data' -> 'co',
          jsonb_build_array((select x from baas.as_user(null::uuid, format($$select baas.get_document('rf_authors', %L)$$, :'a_pub')) x),
                            null, null, 'not a reference'),
          'an array: readable expanded; unreadable and missing both null; other elements kept');
select is((select baas.expand(baas.get_document('rf_posts', :'p1'), '{co}')) -> 'data' -> 'co' -> 1 -> 'data' ->> 'name',
          'Hidden', 'the DBA (who reads everything) sees the hidden one: the null was the policy''s');
select is((select x from baas.as_user(null::uuid, format($$select baas.expand(baas.get_document('rf_posts', %L), '{by,by_anon}')$$, :'p1')) x)
              -> 'data' -> 'by',
          jsonb_build_object('id', :'u1', 'username', 'ann_rf', 'profile', '{"name": "Ann"}'::jsonb),
          'a user reference: the profile as baas.get_profile shows it to the caller');
select is((select x from baas.as_user(null::uuid, format($$select baas.expand(baas.get_document('rf_posts', %L), '{by_anon}')$$, :'p1')) x)
              -> 'data' -> 'by_anon',
          'null'::jsonb, 'a user whose profile shows the caller nothing: null (get_profile says user_not_found)');
select is((select x from baas.as_user(null::uuid, format($$select baas.expand(baas.get_document('rf_comments', %L), '{post.author,post.co}')$$, :'c1')) x)
              -> 'data' -> 'post' -> 'data' -> 'author' -> 'data' ->> 'name',
          'Pub', 'a path of two levels expands inside the referenced document');
select is((select x from baas.as_user(null::uuid, format($$select baas.expand(baas.get_document('rf_posts', %L), null)$$, :'p1')) x)
              -> 'data' -> 'author' -> '$ref' ->> 'id',
          :'a_pub', 'no paths: the document unchanged');
select is((select x from baas.as_user(null::uuid, $$select baas.expand_page(baas.list_documents('rf_comments'), '{post.author}')$$) x)
              -> 'items' -> 0 -> 'data' -> 'post' -> 'data' -> 'author' -> 'data' ->> 'name',
          'Pub', 'expand_page expands every item of a list page');

-------------------------------------------------------------------- limits
select is(pg_temp.outcome_as(null, format($$select baas.expand(baas.get_document('rf_posts', %L), '{"a..b"}')$$, :'p1')),
          '22023 invalid_expand', 'an empty path segment: invalid_expand');
select is(pg_temp.outcome_as(null, format($$select baas.expand(baas.get_document('rf_posts', %L), '{a.b.c.d}')$$, :'p1')),
          '22023 expand_too_large', 'four levels: expand_too_large');
select is(pg_temp.outcome_as(null, format($$select baas.expand(baas.get_document('rf_posts', %L), '{a,b,c,d,e,f,g,h,i,j,k}')$$, :'p1')),
          '22023 expand_too_large', 'eleven paths: expand_too_large');
update baas.settings set max_expand_references = 2;
select is(pg_temp.outcome_as(null, format($$select baas.expand(baas.get_document('rf_posts', %L), '{co}')$$, :'p1')),
          '22023 expand_too_large', 'more references than max_expand_references: expand_too_large');
select is(pg_temp.outcome_as(null, format($$select baas.expand(baas.get_document('rf_posts', %L), '{author,by}')$$, :'p1')),
          'ok', 'as many as allowed: fine');
select is(pg_temp.outcome_as(null, format($$select baas.expand(baas.get_document('rf_comments', %L), '{post.author}')$$, :'c1')),
          'ok', 'two levels of one reference each: 1 + 1 references');
-- A document referencing itself 3 times: one level pastes 3 copies, two levels 3 x 3.
select baas.create_document('rf_posts', '{}', '{"read": ["public"]}') ->> 'id' as selfref \gset
select baas.patch_document('rf_posts', :'selfref', jsonb_build_object('x', jsonb_build_array(
    jsonb_build_object('$ref', jsonb_build_object('collection', 'rf_posts', 'id', :'selfref')),
    jsonb_build_object('$ref', jsonb_build_object('collection', 'rf_posts', 'id', :'selfref')),
    jsonb_build_object('$ref', jsonb_build_object('collection', 'rf_posts', 'id', :'selfref'))))) is not null as patched \gset
update baas.settings set max_expand_references = 11;
select is(pg_temp.outcome_as(null, format($$select baas.expand(baas.get_document('rf_posts', %L), '{x.x}')$$, :'selfref')),
          '22023 expand_too_large', 'each copy counts: 3 + 3 x 3 = 12 references, not 3 + 3 fetched');
update baas.settings set max_expand_references = 1000;
-- The bytes pasted count against baas.max_response_bytes, before anything is built.
select set_config('baas.max_response_bytes', '2048', true) is not null as small \gset
select is(pg_temp.outcome_as(null, format($$select baas.expand(baas.get_document('rf_posts', %L), '{x.x}')$$, :'selfref')),
          '54000 response_too_large', 'an expansion over baas.max_response_bytes: response_too_large');
select set_config('baas.max_response_bytes', '15728640', true) is not null as big \gset

-------------------------------------------------------------------- back-references
select is((select x from baas.as_user(null::uuid, format($$select baas.referrers('rf_authors', %L, 'rf_posts', 'author')$$, :'a_pub')) x)
              -> 'items',
          jsonb_build_array((select x from baas.as_user(null::uuid, format($$select baas.get_document('rf_posts', %L)$$, :'p1')) x)),
          'referrers lists only the referencing documents the caller may read');
select is(jsonb_array_length(baas.referrers('rf_authors', :'a_pub', 'rf_posts', 'co') -> 'items'), 1,
          'an array holding the reference counts');
select is(pg_temp.outcome_as(null, format($$select baas.referrers('rf_authors', %L, 'rf_posts', 'author')$$, :'a_priv')),
          'P0002 document_not_found', 'referrers of a document the caller may not read: 404 as GET');
select is((select count(*)::int from baas.security_lints()), 0, 'the security lints are clean');

select * from finish();
rollback;
