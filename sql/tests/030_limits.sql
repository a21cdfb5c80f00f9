-- Per-account limits shared by every proxy (issue 19, package D; sql/limits.sql): the
-- count, its window, who may call it, and what it keeps.
begin;
select plan(12);

-- Who may count: the proxy's login role only.
select is(pg_temp.sqlstate_as('baas_anon', $$select baas._account_limit_hit('k', 3, 60)$$), '42501', 'baas_anon may not count');
select is(pg_temp.sqlstate_as('baas_user', $$select baas._account_limit_hit('k', 3, 60)$$), '42501', 'baas_user may not count');
select is(pg_temp.sqlstate_as('baas_service', $$select baas._account_limit_hit('k', 3, 60)$$), '42501', 'baas_service may not count');
select is(pg_temp.sqlstate_as('baas_authenticator', $$select baas._account_limit_hit('pgtap:sql', 3, 60)$$), 'ok', 'the proxy''s login role may');

-- One window length (60 s) for every row: others are refused.
select throws_ok($$select baas._account_limit_hit('pgtap:x', 3, 86400)$$, '22023', null, 'a window other than 60 s is refused');
-- The sweep's rows are found by an index, not a scan of the table.
select is((select count(*)::int from pg_indexes where schemaname = 'baas' and tablename = '_account_limits'
            and indexdef like '%(window_start)'), 1, 'window_start is indexed');

-- Three attempts in a window pass, the fourth waits for the window's end (started
-- clear of a minute's end, so no window boundary falls inside the test).
select pg_sleep(case when extract(second from clock_timestamp()) > 50 then 61 - extract(second from clock_timestamp()) else 0 end);
select is(array[baas._account_limit_hit('pgtap:ann', 3, 60), baas._account_limit_hit('pgtap:ann', 3, 60),
                baas._account_limit_hit('pgtap:ann', 3, 60)], array[0, 0, 0], 'three attempts pass');
select cmp_ok(baas._account_limit_hit('pgtap:ann', 3, 60), '>', 0, 'the fourth is refused with seconds to wait');
select is(baas._account_limit_hit('pgtap:bob', 3, 60), 0, 'another key counts apart');

-- The key is kept hashed, never in the clear.
select is((select count(*)::int from baas._account_limits where key = sha256(convert_to('pgtap:ann', 'UTF8')) and hits = 4), 1,
          'one row for the key, under its sha256');

-- A window that passed is overwritten in place; expired rows are swept by later calls.
update baas._account_limits set window_start = window_start - interval '3 days' where key = sha256(convert_to('pgtap:ann', 'UTF8'));
select is(baas._account_limit_hit('pgtap:ann', 3, 60), 0, 'a new window starts at 0');
update baas._account_limits set window_start = window_start - interval '3 days' where key = sha256(convert_to('pgtap:bob', 'UTF8'));
select baas._account_limit_hit('pgtap:carl', 3, 60) as carl \gset
select is((select count(*)::int from baas._account_limits where key = sha256(convert_to('pgtap:bob', 'UTF8'))), 0,
          'an expired row is swept by another key''s call');

select * from finish();
rollback;
