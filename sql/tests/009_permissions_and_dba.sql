-- One definition of a privileged caller, the public surface a DBA sees in \df, and the
-- DBA functions: clear errors for unknown ids, collection changes in the audit log,
-- as_user by email, accounts made without a session.
begin;
select plan(31);

-- The one definition, asked by the trigger, the ACL functions and transfer alike.
create role lint_bypass nologin bypassrls;
create role lint_member nologin;
grant baas_service to lint_member;
select ok(baas._is_privileged('baas_service'), 'the service role is privileged');
select ok(baas._is_privileged('postgres'), 'a superuser is privileged');
select ok(baas._is_privileged('lint_bypass'), 'a BYPASSRLS role is privileged (it bypasses the policies anyway)');
select ok(not baas._is_privileged('baas_user') and not baas._is_privileged('baas_anon'), 'API user roles are not');
select ok(not baas._is_privileged('lint_member'), 'a role that merely inherits baas_service is not');
select is((select count(*)::int from pg_proc p where p.pronamespace = 'baas'::regnamespace
            and p.prosrc ~ 'rolsuper|rolbypassrls'), 1, 'one function in baas decides what "privileged" means');

-- \df baas.* shows the documented public functions; internals carry a leading _.
select is_empty($$ select p.proname from pg_proc p where p.pronamespace = 'baas'::regnamespace
                    and p.proname in ('jsonb_lp_eq', 'explain_write_miss', 'check_fields', 'normalize_principal',
                                      'privileged_caller', 'owned_document', 'find_compiled', 'document_json') $$,
                'the internals named in issue 12 are out of the public surface');
select cmp_ok((select count(distinct proname)::int from pg_proc where pronamespace = 'baas'::regnamespace
                and proname not like '\_%'), '<=', 180, 'about sixty public names, the eighteen of files, three of email, twenty-nine of accounts, seven of OpenID Connect sign-in, eleven of social and fourteen of the team''s own schema (issue 17: expose, unexpose, rpc, raise, protect, unprotect, has_role, can_read, can_read_file; table_list, table_get, table_insert, table_update, table_delete), one of housekeeping (issue 18: housekeeping), three of references (issue 18 C: expand, expand_page, referrers), six of webhooks (issue 18 D: create_webhook, drop_webhook, set_webhook_active, replay_webhook_event, replay_dead_webhook_events, purge_webhook_events), one of batches (issue 18 B: batch), twenty-six of the Parse door (issue 21: parse_signup, parse_login, parse_me, parse_get_user, parse_update_user, parse_save_installation, parse_installations, parse_config, parse_set_config, parse_import_users, parse_login_anonymous, parse_upgrade_anonymous, parse_roles, parse_save_role, parse_delete_role, parse_find_users, parse_delete_user, parse_schemas, parse_create_class, parse_drop_class, parse_import_sessions, parse_login_auth_data, parse_set_auth_data, parse_scan_users, parse_sessions, parse_end_session), not ~150');
select is(pg_temp.sqlstate_as('baas_user', 'select baas._compile_query(''{}'', null, null)'), '42501',
          'an internal no public function needs as the caller is not executable by API roles');

-- DBA functions given unknown ids say so.
select is(pg_temp.detail_of($$ select baas.unlock_account('00000000-0000-0000-0000-000000000001') $$),
          'P0002 user_not_found', 'unlock_account of an unknown id: user_not_found');
select is(pg_temp.detail_of($$ select baas.revoke_service_token('00000000-0000-0000-0000-000000000001') $$),
          'P0002 service_token_not_found', 'revoke_service_token of an unknown id: service_token_not_found');
select baas.create_service_token('t9') ->> 'id' as svc \gset
select lives_ok(format('select baas.revoke_service_token(%L)', :'svc'), 'revoking a real token works');
select lives_ok(format('select baas.revoke_service_token(%L)', :'svc'), 'and again is no error');

-- Collection and index changes are audited, from the API functions or plain SQL.
select baas.create_collection('audited', '{"default_acl": {"read": ["authenticated"]}}') is not null as c \gset
select baas.create_index('audited', 'n') is not null as i \gset
select baas.drop_index('audited', 'n');
select baas.create_index('audited', 'm', 'gin') is not null as i2 \gset
select baas.drop_collection('audited');
select is(array(select action from baas.audit_log where collection = 'audited' order by id),
          array['collection.create', 'index.create', 'index.drop', 'index.create', 'index.drop', 'collection.drop'],
          'create/drop of collections and indexes are in the audit log (indexes go with their collection)');
select is((select details - 'collection_id' from baas.audit_log where action = 'index.create' and collection = 'audited' order by id limit 1),
          '{"kind": "btree", "path": "n"}'::jsonb, 'an index entry names path and kind');
select is((select details -> 'default_acl' -> 'read' from baas.audit_log where action = 'collection.create' and collection = 'audited'),
          '["authenticated"]'::jsonb, 'a collection entry records its ACL options');
select is((select actor_role from baas.audit_log where action = 'collection.drop' and collection = 'audited'),
          'postgres', 'and who did it');

-- baas.create_user: an account without a session or tokens.
select baas.create_user('Dba.Made@Example.test', 'long enough pw', '{"team": 7}') as made \gset
select is(:'made'::jsonb ->> 'email', 'dba.made@example.test', 'create_user returns the account');
select ok(not (:'made'::jsonb ? 'access_token') and not (:'made'::jsonb ? 'refresh_token'), 'and no tokens');
select is((select count(*)::int from baas.sessions where user_id = (:'made'::jsonb ->> 'id')::uuid), 0, 'no session was opened');
select is((select action from baas.audit_log where user_id = (:'made'::jsonb ->> 'id')::uuid), 'user.create', 'audited as user.create');
select ok(baas.login('dba.made@example.test', 'long enough pw') ? 'access_token', 'the account signs in');
select is(pg_temp.sqlstate_as('baas_anon', 'select baas.create_user(''x@y.test'', ''long enough pw'')'), '42501',
          'create_user is for DBAs only');

-- The Parse door's master-key functions (0.16.0) answer the other API roles nothing.
select is(pg_temp.sqlstate_as('baas_user', 'select baas.parse_scan_users(''{}'')'), '42501',
          'parse_scan_users is the master key''s (the service role''s) only');
select is(pg_temp.sqlstate_as('baas_anon', 'select baas.parse_sessions()'), '42501',
          'parse_sessions too');
select is(pg_temp.sqlstate_as('baas_user', 'select baas.parse_end_session(''00000000-0000-0000-0000-000000000001'')'), '42501',
          'and parse_end_session');
select is(pg_temp.sqlstate_as('baas_service', 'select baas.parse_scan_users(''{"n": 1}'')'), 'ok',
          'while the service role scans');

-- baas.as_user names a user by email too; the uuid form and NULL keep working.
select baas.create_collection('seen') is not null as s \gset
select baas.as_user('dba.made@example.test', $$ select baas.create_document('seen', '{"mine": true}') $$) is not null as d \gset
select is((select count(*)::int from baas.as_user(' DBA.made@example.test', 'select * from baas.find(''seen'')')), 1,
          'as_user by email sees that user''s document');
select is((select count(*)::int from baas.as_user((:'made'::jsonb ->> 'id')::uuid, 'select * from baas.find(''seen'')')), 1,
          'the uuid form sees the same');
select is((select count(*)::int from baas.as_user(null, 'select * from baas.find(''seen'')')), 0, 'NULL is anonymous');
select is(pg_temp.detail_of($$ select baas.as_user('nobody@example.test', 'select 1') $$), 'P0002 user_not_found',
          'an email that is no account''s: user_not_found');

select * from finish();
rollback;
