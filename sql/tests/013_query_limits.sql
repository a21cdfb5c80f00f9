-- Issue 13: filters that cannot be used against a backend's memory or CPU, and one
-- normalisation of email addresses for sign-up and sign-in.
begin;
select plan(28);

select baas.signup('ql@limits.test', 'long enough pw') -> 'user' ->> 'id' as u \gset
select baas.create_collection('ql', '{"default_acl": {"read": ["authenticated"]}}') is not null as ok \gset
-- n is missing from every 7th document, null in every 11th.
insert into baas.documents (collection_id, id, owner, data, acl_read)
select c.id, baas.uuid7(), :'u',
       case when g % 7 = 0 then jsonb_build_object('k', g)
            when g % 11 = 0 then jsonb_build_object('n', null)
            else jsonb_build_object('n', g) end,
       '{authenticated}'
  from baas.collections c, generate_series(1, 5000) g where c.name = 'ql';
create function pg_temp.found(who uuid, f jsonb) returns int language sql as $$
    select count(*)::int from baas.as_user(who, format('select * from baas.find(%L, %L, lim => 1000)', 'ql', f)) $$;
create function pg_temp.counted(who uuid, f jsonb) returns int language sql as $$
    select (x #>> '{}')::int from baas.as_user(who, format('select baas.count(%L, %L)', 'ql', f)) x $$;

-- $in / $nin: one parameter whatever the list's length, same answers as before.
select is(baas._compile_query('{"n": {"$in": [1, 2]}}', null, null) ->> 'where',
          baas._compile_query(jsonb_build_object('n', jsonb_build_object('$in', (select jsonb_agg(g) from generate_series(1, 500) g))), null, null) ->> 'where',
          'the compiled text does not depend on the length of a $in list');
select is(jsonb_array_length(baas._compile_query(jsonb_build_object('n', jsonb_build_object('$nin', (select jsonb_agg(g) from generate_series(1, 500) g))), null, null) -> 'params'),
          1, 'a $nin list of 500 values is one parameter');
-- g in 1..500 with n present and not null: 500 - 71 (multiples of 7) - 39 (of 11 but not 77) = 390.
select is(pg_temp.found(:'u', jsonb_build_object('n', jsonb_build_object('$in', (select jsonb_agg(g) from generate_series(1, 500) g)))),
          390, '$in with 500 values finds each present value');
select is(pg_temp.counted(:'u', jsonb_build_object('n', jsonb_build_object('$in', (select jsonb_agg(g) from generate_series(1, 500) g)))),
          390, 'and counts them');
select is(pg_temp.found(:'u', '{"n": {"$in": [null, 7, 14, "3", 3.0]}}'), 390 + 1,
          '$in matches a present JSON null, numbers by value, never a string for a number or a missing field');
select is(pg_temp.counted(:'u', jsonb_build_object('n', jsonb_build_object('$nin', (select jsonb_agg(g) from generate_series(1, 500) g)))),
          5000 - 390, '$nin: missing fields and nulls match, listed values do not');
select is(pg_temp.found(:'u', '{"n": {"$in": []}}'), 0, '$in: [] matches nothing');
select is(pg_temp.counted(:'u', '{"n": {"$nin": []}}'), 5000, '$nin: [] matches everything');

-- Still an index condition under row-level security, for a signed-in user.
select lives_ok($$ select baas.create_index('ql', 'n', concurrently => false) $$, 'create_index');
analyze baas.documents;
select ok(exists (select from pg_temp.plan_as(:'u',
    format('select 1 from baas.documents d where d.collection_id = %s and %s',
           (select id from baas.collections where name = 'ql'), baas._compile_query('{"n": {"$in": [3, 5, 8]}}', null, null) ->> 'where'),
    baas._compile_query('{"n": {"$in": [3, 5, 8]}}', null, null) -> 'params') l where l like '%Index%documents_c%'),
    'a $in list is an index condition under RLS');
select ok(exists (select from pg_temp.plan_as(:'u',
    format('select count(*) from baas.index_entries e where e.index_id = %s and %s',
           baas._btree_index_id((select id from baas.collections where name = 'ql'), 'n'),
           baas._compile_query('{"n": {"$in": [3, 5, 8]}}', null, null) -> 'entry' ->> 'where'),
    baas._compile_query('{"n": {"$in": [3, 5, 8]}}', null, null) -> 'params') l where l like '%Index Only Scan using index_entries_value_idx%'),
    'and counts it from the index entries');

-- Complexity bounds: 54000 query_too_complex, before anything is compiled.
select is(pg_temp.detail_of(format('select baas._compile_query(%L, null, null)', (select jsonb_object_agg('f' || g, g) from generate_series(1, 101) g))),
          '54000 query_too_complex', '101 conditions are too many');
select is(pg_temp.detail_of(format('select baas.find(%L, %L)', 'ql', (select jsonb_object_agg('f' || g, g) from generate_series(1, 100) g))),
          null, '100 conditions are not');
select is(pg_temp.detail_of(format('select baas.count(%L, %L)', 'ql', jsonb_build_object('$or', (select jsonb_agg(jsonb_build_object('$not', jsonb_build_object('a', g))) from generate_series(1, 50) g)))),
          '54000 query_too_complex', '$or and $not count as nodes too');
select is(pg_temp.detail_of(format('select baas.find(%L, %L)', 'ql', jsonb_build_object('n', jsonb_build_object('$in', (select jsonb_agg(g) from generate_series(1, 501) g))))),
          '54000 query_too_complex', 'a list of 501 values is too long');
select is(pg_temp.detail_of(format('select baas.find(%L, %L, %L)', 'ql', '{}', (select string_agg('f' || g, ',') from generate_series(1, 9) g))),
          '54000 query_too_complex', 'nine order keys are too many');
select is(pg_temp.detail_of(format('select baas.find(%L, fields => %L)', 'ql', (select array_agg('f' || g) from generate_series(1, 65) g))),
          '54000 query_too_complex', '65 fields are too many');
select is(pg_temp.detail_of(format('select baas.find(%L, %L)', 'ql', repeat('{"$not": ', 40) || '{"a": 1}' || repeat('}', 40))),
          '22023 invalid_query', 'nesting deeper than 32 is still malformed');

-- One email normalisation: sign-up stores Unicode lower case; sign-in finds it
-- whichever case is typed (SQL lower() under the C ctype left "É" alone).
select is(baas.signup('ÉLODIE@Example.com', 'long enough pw') -> 'user' ->> 'email', 'élodie@example.com', 'sign-up lower-cases beyond ASCII');
select is(baas.login('élodie@example.com', 'long enough pw') -> 'user' ->> 'email', 'élodie@example.com', 'sign-in in lower case');
select is(baas.login('ÉLODIE@Example.com', 'long enough pw') -> 'user' ->> 'email', 'élodie@example.com', 'sign-in as typed at sign-up');
select is(baas.login(' Élodie@EXAMPLE.COM ', 'long enough pw') -> 'user' ->> 'email', 'élodie@example.com', 'sign-in in mixed case with spaces');
select is(baas._email_key('ÉLODIE@Example.com'), baas._normalize_email('élodie@EXAMPLE.com'), 'the lookup key is sign-up''s normalisation');
select is(baas.login('not an address', 'long enough pw') -> 'error' ->> 'code', 'invalid_credentials', 'a malformed address is a failed sign-in, not an error');
-- Unicode spellings (issue 16, item 10): the local part in NFC, the domain by IDNA to
-- punycode; so a decomposed "é", a Unicode domain and its punycode are one account.
select is(baas.signup(U&'jo\0308rg@BU\0308CHER.de', 'long enough pw') -> 'user' ->> 'email', U&'j\00f6rg@xn--bcher-kva.de',
          'sign-up stores the local part in NFC and the domain in punycode');
select is(baas.login(U&'J\00d6RG@b\00fccher.de', 'long enough pw') -> 'user' ->> 'email', U&'j\00f6rg@xn--bcher-kva.de',
          'sign-in with the composed spelling and the Unicode domain finds it');
select is(pg_temp.detail_of(format('select baas.signup(%L, %L)', U&'j\00f6rg@xn--bcher-kva.de', 'long enough pw')), '23505 email_taken',
          'the punycode spelling is the same account');
select is(pg_temp.detail_of(format('select baas.signup(%L, %L)', 'a@-bad-.example', 'long enough pw')), '22023 invalid_email',
          'a domain IDNA refuses is not an address');

select * from finish();
rollback;
