-- JSON nested past what the extension's Rust code reads (serde_json stops at 128
-- levels) is a client error, 54000 limit_exceeded, in every jsonb argument: never an
-- internal error (XX000). Found by fuzzing the filter parser (extension/src/query/fuzz.rs).
begin;
select plan(6);

create function pg_temp.deep(n int) returns jsonb language sql as
    $$ select (repeat('{"a":', n) || '1' || repeat('}', n))::jsonb $$;
select baas.create_collection('hostile', '{"schema": {"type": "object"}}') is not null as ok \gset

select is(pg_temp.detail_of($$ select baas._compile_query(pg_temp.deep(300), null, null) $$), '54000 limit_exceeded', 'filter');
select is(pg_temp.detail_of($$ select * from baas.find('hostile', pg_temp.deep(300)) $$), '54000 limit_exceeded', 'find');
select is(pg_temp.detail_of($$ select baas.merge_patch('{}', pg_temp.deep(300)) $$), '54000 limit_exceeded', 'merge patch');
select is(pg_temp.detail_of($$ select baas._normalize_acl(jsonb_build_object('read', pg_temp.deep(300))) $$), '54000 limit_exceeded', 'ACL');
select is(pg_temp.detail_of($$ select baas.create_collection('hostile2', jsonb_build_object('schema', pg_temp.deep(300))) $$), '54000 limit_exceeded', 'collection options');
select is(pg_temp.detail_of($$ select baas.create_document('hostile', jsonb_build_object('x', pg_temp.deep(300))) $$), '54000 limit_exceeded', 'a document checked against a schema');

select * from finish();
rollback;
