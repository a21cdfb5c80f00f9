-- What a DBA sees: the roles, who may read what, and how SECURITY DEFINER functions
-- are locked down. Runs in a transaction that is rolled back.
begin;
select plan(20);


select has_role('baas_anon');
select has_role('baas_user');
select has_role('baas_service');
select has_role('baas_authenticator');
select ok((select rolcanlogin and not rolinherit from pg_roles where rolname = 'baas_authenticator'),
          'baas_authenticator can log in and inherits nothing');
select ok(not exists (select from pg_roles where rolname in ('baas_anon', 'baas_user', 'baas_service') and rolcanlogin),
          'API roles cannot log in directly');
select ok(pg_has_role('baas_authenticator', 'baas_anon', 'member')
      and pg_has_role('baas_authenticator', 'baas_user', 'member')
      and pg_has_role('baas_authenticator', 'baas_service', 'member'),
          'baas_authenticator may become each API role');

select is(pg_temp.sqlstate_as('baas_anon', 'select * from baas.users'), '42501', 'baas_anon cannot read baas.users');
select is(pg_temp.sqlstate_as('baas_user', 'select * from baas.users'), '42501', 'baas_user cannot read baas.users');
select is(pg_temp.sqlstate_as('baas_anon', 'select * from baas._signing_keys'), '42501', 'baas_anon cannot read the signing keys');
select is(pg_temp.sqlstate_as('baas_service', 'select secret from baas._signing_keys'), '42501', 'baas_service cannot read the signing keys');
select is(pg_temp.sqlstate_as('baas_authenticator', 'select * from baas._signing_keys'), '42501', 'the proxy''s role cannot read the signing keys');
select is(pg_temp.sqlstate_as('baas_anon', 'select * from baas.sessions'), '42501', 'baas_anon cannot read sessions');
select is(pg_temp.sqlstate_as('baas_anon', 'select * from baas.refresh_tokens'), '42501', 'baas_anon cannot read refresh tokens');
select is(pg_temp.sqlstate_as('baas_anon', 'select baas.rotate_signing_key()'), '42501', 'baas_anon cannot rotate keys');
select is(pg_temp.sqlstate_as('baas_anon', 'select baas._sign_jwt(''k'', ''\x00''::bytea, ''{}'')'), '42501', 'internal functions are not callable by API roles');

create temp view api_readable as
    select c.oid, c.relname::text as name, c.relkind, c.relrowsecurity, c.relforcerowsecurity
      from pg_class c
     where c.relnamespace = 'baas'::regnamespace and c.relkind in ('r', 'v', 'm', 'p', 'f')
       and (has_table_privilege('baas_anon', c.oid, 'select')
         or has_table_privilege('baas_user', c.oid, 'select')
         or has_table_privilege('baas_service', c.oid, 'select')
         or has_table_privilege('baas_authenticator', c.oid, 'select'));
-- index_entries and read_entries: the counting copies of documents' read rule (same
-- policies, forced).
-- Files (sql/files.sql): the bytes, blobs and thumbnails under the one file rule, the
-- security_invoker view baas.files, and the quotas (service only). Protected tables'
-- definitions and the security_invoker view baas.exposed (service only, sql/tables.sql).
select set_eq($$ select name from api_readable $$, array['collections', 'documents', 'index_entries', 'read_entries',
        '_file_chunks', '_blobs', '_thumbnails', 'files', 'file_quotas', 'protected_tables', 'exposed'],
    'API roles can select from collections, documents, index and read entries, the file tables and what is exposed only');
-- The security lints (sql/lints.sql; each is shown catching a violation in 006).
select is_empty('select * from baas.security_lints()', 'the security lints find nothing in a fresh extension');

select ok(not (baas.jwks()::text ~ '"d"'), 'baas.jwks() carries no private key material');

select is((select count(*)::int from baas._signing_keys where retired_at is null), 1,
          'CREATE EXTENSION made exactly one active signing key');

select * from finish();
rollback;
