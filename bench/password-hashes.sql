-- The cost of one password check per stored-hash kind (issue 16, imported accounts):
-- argon2id (what pgbaas writes), bcrypt cost 10 (Parse Server, Supabase, PocketBase
-- exports) and Firebase's scrypt (rounds 8, mem_cost 14). Imported hashes are replaced by
-- argon2id at the first successful sign-in, so their cost is paid once per account.
--   psql -X -q -d <a database with pgbaas> -f bench/password-hashes.sql
-- Prints one line per kind: milliseconds per check (median of 5). Compare within one run.
\set ON_ERROR_STOP on
create temporary table pgbaas_bench_hashes (kind text, hash text, password text);
insert into pgbaas_bench_hashes values
  ('argon2id (pgbaas)', baas._hash_password('correct horse battery'), 'correct horse battery'),
  -- tests/fixtures/imported-hashes.md: PocketBase's fixture, bcrypt cost 10.
  ('bcrypt cost 10', '$2a$10$G3Vrg80K3cSZS0EYg6xeOu5dxxk/633ntd59Txq.4BJqcXBAc9Wf6', 'pocketbase secret 4'),
  -- Firebase's own example (github.com/firebase/scrypt README).
  ('firebase scrypt r8 m14', baas._import_hash(
      'lSrfV15cpx95/sZS2W9c9Kp6i/LVgQNDNC/qzrCnh1SAyZvqmZqAjTdn3aoItz+VHjoZilo78198JAdRuid5lQ==',
      'firebase_scrypt', '42xEC+ixf3L2lw==',
      '{"signer_key": "jxspr8Ki0RYycVU8zykbdLGjFQ3McFUH0uiiTvC8pVMXAn210wjLNmdZJzxUECKbm0QsEmYUSDzZvpjeJ9WmXA==",
        "salt_separator": "Bw==", "rounds": 8, "mem_cost": 14}'),
   'user1password');
do $$
declare
    r record;
    t0 timestamptz;
    ms double precision[];
    ok boolean;
begin
    for r in select * from pgbaas_bench_hashes loop
        ms := '{}';
        for i in 1..5 loop
            t0 := clock_timestamp();
            ok := baas._verify_password(r.password, r.hash);
            ms := ms || (extract(epoch from clock_timestamp() - t0) * 1000);
            if not ok then
                raise exception 'the % check failed', r.kind;
            end if;
        end loop;
        raise notice '%: % ms per check (median of 5)', rpad(r.kind, 24),
            round((select percentile_cont(0.5) within group (order by x) from unnest(ms) x)::numeric, 1);
    end loop;
end
$$;
