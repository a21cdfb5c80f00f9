-- Issue 13, bounded responses: a page of documents holds at most
-- baas.max_response_bytes of JSON. list_documents ends a page early with `next`,
-- following `next` yields every document once, and one document over the budget (or
-- a baas.find page over it) is 54000 response_too_large naming the setting.
begin;
select plan(14);

-- Set before the library is loaded in this session: the value is kept when it loads.
set local baas.max_response_bytes = '64kB';
select baas.signup('big@bounded.test', 'long enough pw') -> 'user' ->> 'id' as u \gset
select baas.create_collection('big', '{}') is not null as ok \gset
-- 30 documents of ~10 KB of JSON each: 300 KB in all, a page of 64 kB holds 6.
insert into baas.documents (collection_id, id, owner, data)
select c.id, baas.uuid7(), :'u', jsonb_build_object('n', g, 's', repeat('x', 10000))
  from baas.collections c, generate_series(1, 30) g where c.name = 'big';

select is(current_setting('baas.max_response_bytes'), '64kB', 'the setting is the library''s, in bytes');
select baas.list_documents('big', lim => 1000) as p1 \gset
select is(jsonb_array_length(:'p1'::jsonb -> 'items'), 6, 'limit 1000 of 10 KB documents: a page of 6 under 64 kB');
select ok(octet_length(:'p1'::jsonb::text) <= 65536, 'the whole reply is within the budget');
select is(:'p1'::jsonb -> 'next', :'p1'::jsonb -> 'items' -> 5 -> 'id', 'a page cut short names its last id as next');

-- Follow next until it is null: every document exactly once, in order.
create function pg_temp.all_pages(lim int, f text[] default null) returns int[] language plpgsql as $$
declare
    v jsonb;
    after uuid;
    ns int[] := '{}';
    pages int := 0;
begin
    loop
        v := baas.list_documents('big', lim => lim, after => after, fields => f);
        ns := ns || array(select (x -> 'data' ->> 'n')::int from jsonb_array_elements(v -> 'items') x);
        pages := pages + 1;
        exit when v -> 'next' = 'null' or pages > 100;
        after := (v ->> 'next')::uuid;
    end loop;
    return ns;
end $$;
select is(pg_temp.all_pages(1000), array(select generate_series(1, 30)), 'following next yields every document once');
select is(pg_temp.all_pages(4), array(select generate_series(1, 30)), 'and so with pages full by limit');
select is(jsonb_array_length(baas.list_documents('big', lim => 3) -> 'items'), 3, 'a limit under the budget is honoured');
select is(baas.list_documents('big', lim => 3, off => 28) -> 'next', 'null', 'a short page that was not cut is the last: next is null');

-- One document over the budget: a clear error, and `fields` is the way out.
set local baas.max_response_bytes = 8192;
select is(pg_temp.detail_of($$ select baas.list_documents('big') $$), '54000 response_too_large', 'one document over the budget is refused');
select throws_like($$ select baas.list_documents('big') $$, '%more than a response may hold (8192 bytes, baas.max_response_bytes)%fields%',
                   'naming the limit and the way out');
select is(pg_temp.all_pages(1000, '{n}'), array(select generate_series(1, 30)), 'with fields the documents fit');

-- baas.find returns a set: a page over the budget is refused rather than cut.
set local baas.max_response_bytes = '64kB';
select is(pg_temp.detail_of($$ select count(*) from baas.find('big', lim => 7) $$), '54000 response_too_large', 'find: 7 documents are over 64 kB');
select is((select count(*)::int from baas.find('big', lim => 6)), 6, 'find: 6 are not');
select throws_ok($$ set baas.max_response_bytes = 100 $$, '22023', null, 'under 1 kB is not a budget');

select * from finish();
rollback;
