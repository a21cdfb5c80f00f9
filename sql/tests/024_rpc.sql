-- The RPC door's SQL face (issue 17, package A; sql/rpc.sql): baas.rpc as the caller,
-- baas.raise, and the security_definer_rpc lint with its deliberate mark.
begin;
select plan(14);

create schema rpc_t;
grant usage on schema rpc_t to baas_anon, baas_user, baas_service;
select baas.expose_schema('rpc_t');
create function rpc_t.add(a integer, b integer default 1) returns integer language sql immutable as 'select a + b';
create function rpc_t.owner_only() returns integer language sql stable as 'select 1';
revoke execute on function rpc_t.owner_only() from public;
create function rpc_t.boom() returns void language plpgsql as $$begin perform baas.raise(409, 'seat_taken', 'taken', 'pick another'); end$$;

select is((select body from baas.as_user(null::uuid, 'select * from baas.rpc(''add'', ''{"a": 2}'')') x(body)),
          '{"body": "3", "is_void": false}'::jsonb, 'baas.rpc through as_user: named arguments and a default');
select is(pg_temp.outcome_as(null, 'select baas.rpc(''owner_only'', ''{}'')'), 'P0002 function_not_found',
          'no EXECUTE: function_not_found');
select is(pg_temp.outcome_as(null, 'select baas.rpc(''add'', ''{"z": 1}'')'), '22023 invalid_arguments',
          'an unknown argument: invalid_arguments');
select is(pg_temp.detail_of('select baas.rpc(''boom'', ''{}'')'), 'PT409 seat_taken', 'baas.raise: PT<status> and the code');
select is(pg_temp.detail_of('select baas.raise(500, ''x'', ''y'')'), '22023 invalid_request', 'baas.raise refuses a status outside 400-499');
select is(pg_temp.detail_of('select baas.raise(404, ''gone'', ''no hint'')'), 'PT404 gone', 'baas.raise without a hint');
select is(pg_temp.detail_of('select baas.raise(404, null, ''y'')'), '22023 invalid_request', 'baas.raise needs a code');
select is((select body from baas.rpc('add', '{"a": 1}', true)), '2', 'GET of an IMMUTABLE function answers');
create function rpc_t.write() returns integer language sql volatile as 'select 1';
select is(pg_temp.detail_of('select baas.rpc(''write'', ''{}'', true)'), '0A000 method_not_allowed', 'GET of a VOLATILE one');

-- The lint: a SECURITY DEFINER function in an exposed schema that an API role may run.
create function rpc_t.elevated() returns integer language sql stable security definer as 'select 1';
select is((select count(*)::int from baas.security_lints() where lint = 'security_definer_rpc' and object = 'rpc_t.elevated()'), 1,
          'security_definer_rpc flags it');
select is((select count(*)::int from baas.security_lints() where lint = 'rpc_definer_search_path' and object = 'rpc_t.elevated()'), 1,
          'and its missing search_path');
alter function rpc_t.elevated() set baas.rpc_definer = 'deliberate';
alter function rpc_t.elevated() set search_path = pg_catalog, pg_temp;
select is((select count(*)::int from baas.security_lints() where object = 'rpc_t.elevated()'), 0,
          'marked deliberate with a fixed search_path: silent');
create function rpc_t.hidden_definer() returns integer language sql stable security definer as 'select 1';
revoke execute on function rpc_t.hidden_definer() from public;
select is((select count(*)::int from baas.security_lints() where object = 'rpc_t.hidden_definer()'), 0,
          'a definer function no API role may execute is not flagged');
select is((select count(*)::int from baas.security_lints() where object like 'rpc_t.%'
           or (lint in ('security_definer_rpc', 'rpc_definer_search_path'))), 0, 'nothing else in the exposed schema');

select * from finish();
rollback;
