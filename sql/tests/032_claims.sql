-- baas._claim(key) (issue 20, extension/src/api/auth.rs): the token claims behind
-- baas.uid(), baas.aal() and baas.is_anonymous(), parsed once per backend while the
-- setting's text stays the same. It must answer exactly what
-- `nullif(current_setting('baas.claims', true), '')::jsonb ->> key` answers, for every
-- claims text and key, however the setting changes between calls (the cache follows
-- the text), and fail alike where that fails.
begin;
select plan(9);

create temp table cases (n int primary key, claims text);
insert into cases values
  (1, '{"sub": "0191a000-0000-7000-8000-000000000001", "role": "baas_user", "aal": "aal2", "is_anonymous": true, "exp": 1.50, "amr": ["pwd", "totp"], "n": null}'),
  (2, '{"sub": "0191a000-0000-7000-8000-000000000002", "role": "baas_user"}'),
  (3, '{"role": "baas_service", "sid": "x"}'),
  (4, '{"role": "baas_user", "role": "baas_service"}'),
  (5, '[1, 2]'),
  (6, '"just a string"'),
  (7, ''),
  (8, '{"sub": "é\"\\😀", "role": "baas_user", "is_anonymous": "true", "aal": 2}'),
  (9, '{}');
create temp table keys (k text);
insert into keys values ('sub'), ('role'), ('aal'), ('is_anonymous'), ('exp'), ('amr'), ('n'), ('missing'), ('');

-- Every key of every claims text, one after another in one statement (so the setting
-- changes between calls of the same backend's cache).
create function pg_temp.disagreements() returns bigint language plpgsql as $$
declare c record; k record; bad bigint := 0;
begin
    for c in select * from cases order by n loop
        perform set_config('baas.claims', c.claims, true);
        for k in select * from keys loop
            if baas._claim(k.k) is distinct from nullif(current_setting('baas.claims', true), '')::jsonb ->> k.k then
                raise warning 'claims %: key % gives %, not %', c.n, k.k, baas._claim(k.k),
                    nullif(current_setting('baas.claims', true), '')::jsonb ->> k.k;
                bad := bad + 1;
            end if;
        end loop;
    end loop;
    return bad;
end $$;
select is(pg_temp.disagreements(), 0::bigint, '_claim agrees with ->> on every claims text and key');
select is(pg_temp.disagreements(), 0::bigint, 'and again with every text already seen once');

-- The functions the policies call, through the cache.
select set_config('baas.claims', (select claims from cases where n = 1), true);
select is(baas.uid(), '0191a000-0000-7000-8000-000000000001'::uuid, 'uid() reads sub');
select is(baas.aal() || '/' || baas.is_anonymous()::text, 'aal2/true', 'aal() and is_anonymous() read theirs');
select set_config('baas.claims', (select claims from cases where n = 2), true);
select is(baas.uid() || ' ' || baas.aal() || ' ' || baas.is_anonymous()::text,
          '0191a000-0000-7000-8000-000000000002 aal1 false', 'a new claims text is read, not the one before');
select set_config('baas.claims', (select claims from cases where n = 3), true);
select is(coalesce(baas.uid()::text, 'none') || ' ' || coalesce(baas.aal(), 'none'), 'none none', 'a service token has no user');
select set_config('baas.claims', '', true);
select is(coalesce(baas.uid()::text, 'none'), 'none', 'no claims, no user');

-- Not JSON: the same error as the cast, and no answer left over from before.
select set_config('baas.claims', (select claims from cases where n = 1), true);
select baas.uid();
select set_config('baas.claims', '{"sub": "0191a000-0000-7000-8000-000000000001", "role": "baas_user"', true);
select is(pg_temp.detail_of($$ select baas.uid() $$), '22P02 The input string ended unexpectedly.',
          'claims that are not JSON fail as the cast does');
select is(pg_temp.detail_of($$ select baas._claim('sub') $$),
          pg_temp.detail_of($$ select nullif(current_setting('baas.claims', true), '')::jsonb ->> 'sub' $$),
          'with the same error');

select * from finish();
rollback;
