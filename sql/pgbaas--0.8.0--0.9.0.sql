-- pgbaas 0.8.0 -> 0.9.0, run by ALTER EXTENSION pgbaas UPDATE.
--
-- It turns a 0.8.0 database into exactly what CREATE EXTENSION makes at 0.9.0:
-- tests/tests/upgrade.rs installs 0.8.0 from its release commit, fills it (files
-- included), runs this, checks the data through the proxy and compares the schema
-- (pg_dump --binary-upgrade) with a fresh install's. Every statement below is the final
-- text of the file it names (sql/CHANGES-0.9.0.md lists what changed and why). Older
-- databases upgrade through the earlier scripts first.
--
-- Once released, an upgrade script is never edited: a fix goes into the next version's.

-- ============================================================== sql/documents.sql
-- (package A: field operators)

-- =================================================================== sql/refs.sql

-- ================================================================== sql/batch.sql
-- How many operations one batch may hold (HTTP and SQL alike).
alter table baas.settings add column max_batch_operations integer not null default 100
    check (max_batch_operations between 1 and 1000);

-- The settings are private: the cap, for callers of baas.batch.
create function baas._batch_max_operations() returns integer
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$ select s.max_batch_operations from baas.settings s $$;

-- Run `operations` in order, as the caller, in the caller's transaction: all of them or
-- none. Each is {"op": "create"|"replace"|"patch"|"delete"|"get", "collection", "id"?,
-- "data"?, "acl"?, "if_match"?} and calls the function its single request calls, so
-- row-level security, JSON Schema and versions decide exactly as they do there.
-- `if_match` is a version: a whole JSON number (not 3.0), or the ETag string a single
-- request's If-Match takes, read as proxy/src/routes/input.rs `if_match` reads the
-- header ("3", "+3", "\"3\"", "W/\"3\"", "*" for none; blanks around it ignored).
--
-- The answer is {"results": [{"status": 201|200|204, "document"?: {...}}, ...]}. A
-- malformed batch is 22023 invalid_batch before anything runs. A failing operation's
-- error is raised again with its SQLSTATE, DETAIL (code) and HINT, its message prefixed
-- by `batch operation <0-based index>: ` (the HTTP route moves the index to
-- error.operation); everything the batch did is rolled back with it. One exception
-- block (one subtransaction) serves the whole loop, not one per operation.
create function baas.batch(operations jsonb) returns jsonb
language plpgsql volatile
as $$
declare
    n integer;
    -- The settings row always exists; 100 (the default) should it ever not.
    v_max integer := coalesce(baas._batch_max_operations(), 100);
    op jsonb;
    v_op text;
    v_bad text;
    v_key text;
    v_im jsonb;
    v_text text;
    v_versions bigint[] := '{}';
    v_version bigint;
    v_results jsonb[] := '{}';
    v_at integer;
    v_state text;
    v_msg text;
    v_detail text;
    v_hint text;
    d jsonb;
begin
    if operations is null or jsonb_typeof(operations) <> 'array' then
        raise exception using errcode = '22023', detail = 'invalid_batch', message = 'operations must be a JSON array of operations';
    end if;
    n := jsonb_array_length(operations);
    if n = 0 then
        raise exception using errcode = '22023', detail = 'invalid_batch', message = 'operations is empty: send at least one operation';
    end if;
    if n > v_max then
        raise exception using errcode = '22023', detail = 'invalid_batch', message =
            format('a batch holds at most %s operations (baas.settings.max_batch_operations); this one has %s', v_max, n);
    end if;
    -- The shape of every operation first: a malformed batch runs nothing.
    for k in 0 .. n - 1 loop
        op := operations -> k;
        v_bad := null;
        v_version := null;
        if jsonb_typeof(op) <> 'object' then
            v_bad := 'an operation must be a JSON object';
        else
            v_op := op ->> 'op';
            select x into v_key from jsonb_object_keys(op) x
             where x not in ('op', 'collection', 'id', 'data', 'acl', 'if_match') limit 1;
            if v_key is not null then
                v_bad := format('unknown field %s; an operation takes op, collection, id, data, acl and if_match', to_jsonb(v_key));
            elsif jsonb_typeof(op -> 'op') is distinct from 'string'
                  or v_op not in ('create', 'replace', 'patch', 'delete', 'get') then
                v_bad := format('op must be one of create, replace, patch, delete, get (got %s)', coalesce((op -> 'op')::text, 'nothing'));
            elsif jsonb_typeof(op -> 'collection') is distinct from 'string' then
                v_bad := 'collection is required (a collection name)';
            elsif v_op <> 'create' and jsonb_typeof(op -> 'id') is distinct from 'string' then
                v_bad := format('id is required for %s (a document id)', v_op);
            elsif v_op = 'create' and jsonb_typeof(op -> 'id') not in ('string', 'null') then
                v_bad := 'id must be a uuid';
            elsif v_op = 'create' and jsonb_typeof(op -> 'id') = 'string'
                  and op ->> 'id' !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
                v_bad := format('id must be a uuid, got %s', op -> 'id');
            elsif v_op in ('create', 'replace', 'patch') and coalesce(jsonb_typeof(op -> 'data'), 'null') = 'null' then
                v_bad := format('data is required for %s (a JSON object)', v_op);
            elsif v_op in ('delete', 'get') and op ? 'data' then
                v_bad := format('%s takes no data', v_op);
            elsif v_op <> 'create' and op ? 'acl' then
                v_bad := format('%s takes no acl (set it with PUT .../acl or baas.set_acl)', v_op);
            elsif v_op in ('create', 'get') and coalesce(jsonb_typeof(op -> 'if_match'), 'null') <> 'null' then
                v_bad := format('%s takes no if_match', v_op);
            else
                v_im := op -> 'if_match';
                if jsonb_typeof(v_im) = 'number' then
                    -- Digits only: 3.0 is refused as If-Match: 3.0 is (3e0 arrives as 3).
                    if v_im::text ~ '^[0-9]{1,19}$' and v_im::numeric between 1 and 9223372036854775807 then
                        v_version := v_im::numeric::bigint;
                    else
                        v_bad := 'if_match must be a document version: a whole number from 1, or the ETag string, e.g. "\"3\""';
                    end if;
                elsif jsonb_typeof(v_im) = 'string' then
                    -- As the single routes read If-Match (Rust's str::trim, then `*` is
                    -- none, W/ and quotes optional, then i64 parsing: an optional +, any
                    -- digits, a value from 1 to 2^63-1).
                    v_text := btrim(v_im #>> '{}', E' \t\n\v\f\r\u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000');
                    if v_text <> '*' then
                        if v_text like 'W/%' then
                            v_text := substr(v_text, 3);
                        end if;
                        if length(v_text) >= 2 and v_text like '"%"' then
                            v_text := substr(v_text, 2, length(v_text) - 2);
                        end if;
                        if v_text ~ '^\+?[0-9]+$' then
                            v_text := ltrim(ltrim(v_text, '+'), '0');
                        end if;
                        if v_text ~ '^[0-9]{1,19}$' and v_text::numeric <= 9223372036854775807 then
                            v_version := v_text::bigint;
                        else
                            v_bad := format('if_match must be a document version, e.g. 3 or "\"3\"" (got %s)', v_im);
                        end if;
                    end if;
                elsif v_im is not null and jsonb_typeof(v_im) <> 'null' then
                    v_bad := 'if_match must be a document version: a number, or the ETag string, e.g. "\"3\""';
                end if;
            end if;
        end if;
        if v_bad is not null then
            raise exception using errcode = '22023', detail = 'invalid_batch', message = format('batch operation %s: %s', k, v_bad);
        end if;
        v_versions := v_versions || v_version;
    end loop;
    -- One subtransaction for the whole loop: on an error every operation's work is
    -- undone, and v_at (a variable, not rolled back) names the one that failed.
    begin
        for k in 0 .. n - 1 loop
            v_at := k;
            op := operations -> k;
            v_op := op ->> 'op';
            case v_op
            when 'create' then
                d := baas.create_document(op ->> 'collection', op -> 'data',
                                          nullif(op -> 'acl', 'null'::jsonb), (op ->> 'id')::uuid);
                v_results := v_results || jsonb_build_object('status', 201, 'document', d);
            when 'replace' then
                d := baas.replace_document(op ->> 'collection', op ->> 'id', op -> 'data', v_versions[k + 1]);
                v_results := v_results || jsonb_build_object('status', 200, 'document', d);
            when 'patch' then
                d := baas.patch_document(op ->> 'collection', op ->> 'id', op -> 'data', v_versions[k + 1]);
                v_results := v_results || jsonb_build_object('status', 200, 'document', d);
            when 'delete' then
                perform baas.delete_document(op ->> 'collection', op ->> 'id', v_versions[k + 1]);
                v_results := v_results || jsonb_build_object('status', 204);
            else
                d := baas.get_document(op ->> 'collection', op ->> 'id');
                v_results := v_results || jsonb_build_object('status', 200, 'document', d);
            end case;
        end loop;
    exception when others then
        get stacked diagnostics v_state = returned_sqlstate, v_msg = message_text,
                                v_detail = pg_exception_detail, v_hint = pg_exception_hint;
        v_msg := format('batch operation %s: %s', v_at, v_msg);
        -- RAISE takes no NULL option: only the fields the error had.
        if v_detail <> '' and v_hint <> '' then
            raise exception using errcode = v_state, message = v_msg, detail = v_detail, hint = v_hint;
        elsif v_detail <> '' then
            raise exception using errcode = v_state, message = v_msg, detail = v_detail;
        elsif v_hint <> '' then
            raise exception using errcode = v_state, message = v_msg, hint = v_hint;
        else
            raise exception using errcode = v_state, message = v_msg;
        end if;
    end;
    return jsonb_build_object('results', to_jsonb(v_results));
end
$$;
comment on function baas.batch(jsonb) is
    'Run document operations (create, replace, patch, delete, get) as the caller, all or none; a failure names its 0-based operation';

-- =============================================================== sql/webhooks.sql

-- =========================================================== sql/housekeeping.sql

-- ================================================================== sql/lints.sql
-- batches (package B): baas.batch and baas._batch_max_operations join the allow lists.
create or replace function baas.security_lints()
returns table (lint text, object text, detail text)
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    -- 1. A relation in schema baas that an API role can read or write, even one
    --    column of, must have row-level security, forced (so its owner obeys the
    --    policies too). Views cannot.
    select 'rls_not_forced', c.oid::regclass::text,
           case when c.relkind in ('v', 'm') then 'a view an API role can use bypasses row-level security'
                when not c.relrowsecurity then 'usable by an API role without row-level security'
                else 'usable by an API role; row-level security is not forced' end
      from pg_class c
     where c.relnamespace = 'baas'::regnamespace
       and c.relkind in ('r', 'p', 'v', 'm', 'f')
       and exists (select from (values ('baas_anon'), ('baas_user'), ('baas_service')) r(rolname)
                    where has_any_column_privilege(r.rolname, c.oid, 'SELECT, INSERT, UPDATE')
                       or has_table_privilege(r.rolname, c.oid, 'DELETE'))
       and not (c.relkind in ('r', 'p') and c.relrowsecurity and c.relforcerowsecurity)
       -- A security_invoker view (baas.files) reads its tables as the caller: their
       -- policies apply.
       and not (c.relkind = 'v' and exists (select from unnest(c.reloptions) o
                                              where lower(o) in ('security_invoker=true', 'security_invoker=on', 'security_invoker=1')))
    union all
    -- 2. SECURITY DEFINER functions pin a safe search_path: only pg_catalog, baas and
    --    pg_temp, with pg_temp last (left out, Postgres searches it first), or a
    --    caller's objects could stand in for ours...
    select 'definer_search_path', p.oid::regprocedure::text,
           case when sp.path is null then 'SECURITY DEFINER without a fixed search_path'
                else 'SECURITY DEFINER with an unsafe search_path: ' || array_to_string(sp.path, ', ') end
      from pg_proc p
      left join lateral (
          select string_to_array(replace(replace(substr(cfg, length('search_path=') + 1), ' ', ''), '"', ''), ',') as path
            from unnest(p.proconfig) cfg where cfg like 'search_path=%') sp on true
     where p.pronamespace = 'baas'::regnamespace and p.prosecdef
       and (sp.path is null
            or not sp.path <@ array['pg_catalog', 'baas', 'pg_temp']
            or sp.path[array_length(sp.path, 1)] is distinct from 'pg_temp')
    union all
    -- 3. ...and no function of ours is executable by PUBLIC: each is granted to the
    --    roles that need it (sql/grants.sql).
    select 'public_execute', p.oid::regprocedure::text,
           case when p.prosecdef then 'SECURITY DEFINER function executable by PUBLIC' else 'executable by PUBLIC' end
      from pg_proc p
     where p.pronamespace = 'baas'::regnamespace
       and exists (select from aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                    where a.grantee = 0 and a.privilege_type = 'EXECUTE')
    union all
    -- 4. Internal functions (name starting with _) are for the extension's own code.
    --    API roles may execute only those that public functions run as the caller
    --    (sql/grants.sql lists the same): anything else internal is reported.
    select 'internal_function_exposed', p.oid::regprocedure::text,
           'executable by ' || string_agg(r.rolname, ', ' order by r.rolname)
      from pg_proc p
      cross join (values ('baas_anon'), ('baas_user'), ('baas_service')) r(rolname)
     where p.pronamespace = 'baas'::regnamespace and p.proname like '\_%'
       and has_function_privilege(r.rolname, p.oid, 'execute')
       and not (p.proname = any (array[
           '_collection_by_name', '_check_collection_name', '_document_json', '_parse_document_id',
           '_document_not_found', '_write_document', '_explain_write_miss', '_version_conflict',
           '_validate_document', '_normalize_acl', '_check_new_principals', '_acl_change', '_change_acl',
           '_owned_document', '_set_document_owner', '_may_create', '_may_manage', '_is_privileged',
           '_find_page', '_find_compiled', '_count_compiled', '_btree_index_id', '_jfield',
           '_jsonb_lp_eq', '_jsonb_lp_lt', '_jsonb_lp_le', '_jsonb_lp_gt', '_jsonb_lp_ge',
           '_jsonb_lp_cmp', '_jsonb_lp_contains',
           -- files (sql/files.sql, sql/grants.sql)
           '_upload_append', '_upload_lease', '_upload_rewind', '_upload_release', '_file_json', '_file_row',
           '_explain_file_miss', '_blob_piece', '_file_max_bytes', '_raise_too_large',
           '_quota_left', '_upload_open', '_upload_insert', '_upload_seal', '_upload_done', '_may_attach_blob',
           '_blob_file_json', '_file_link_sign', '_check_file_name',
           '_normalize_content_type', '_file_type_allowed',
           -- multi-factor (sql/accounts.sql): the aal2 policies
           '_aal2_blocked', '_aal2_blocked_indexes',
           -- rpc (sql/rpc.sql)
           '_exposed_schemas', '_rpc_plan',
           -- (rpc above, protected tables below: one line each, kept apart for merges)
           -- tables (sql/tables.sql)
           -- tables over HTTP (package C)
           '_served_table', '_table_check', '_table_explain_miss', '_table_list_sql', '_table_get_sql',
           '_table_insert_sql', '_table_update_sql', '_table_delete_sql',
           '_table_exact_numbers',
           '_batch_max_operations', -- batches (issue 18, sql/batch.sql)
           '_protected_table_stub'])
            or (p.proname = '_collection_json' and r.rolname = 'baas_service'))
     group by p.oid
    union all
    -- 4b. Every function without a leading _ is public: documented in docs/sql.md, and
    --     named here. Anything else in schema baas is either internal (rename it with
    --     a leading _) or new public surface that needs documenting.
    select 'undocumented_public_function', p.oid::regprocedure::text,
           'public name (no leading _) not in the documented list of docs/sql.md'
      from pg_proc p
     where p.pronamespace = 'baas'::regnamespace and p.proname not like '\_%'
       and not p.proname = any (array[
           -- accounts and tokens
           'signup', 'login', 'refresh', 'logout', 'get_user', 'update_user', 'delete_user', 'create_user',
           'claims', 'uid', 'jwks', 'auth_settings', 'authenticate', 'rotate_signing_key', 'purge_sessions',
           'create_service_token', 'revoke_service_token', 'unlock_account', 'merge_patch', 'uuid7',
           -- documents, queries, ACLs
           'create_document', 'get_document', 'replace_document', 'patch_document', 'delete_document',
           'find', 'count', 'list_documents', 'get_acl', 'set_acl', 'grant', 'revoke', 'transfer',
           'roles', 'principals',
           -- administration
           'create_collection', 'drop_collection', 'collections', 'get_collection',
           'create_index', 'drop_index', 'list_indexes', 'get_index', 'rebuild_index_entries', 'restore_indexes',
           'run_index_builds',
           'create_role', 'drop_role', 'add_role_member', 'remove_role_member', 'add_role_to_role',
           'remove_role_from_role', 'list_roles',
           -- files
           'upload_create', 'upload_status', 'upload_finish', 'upload_abort', 'upload_file', 'file_get',
           'file_read', 'file_meta', 'update_file', 'delete_file', 'set_file_acl', 'get_file_acl', 'file_link',
           'thumbnail_get', 'thumbnail_put', 'cleanup_uploads', 'cleanup_blobs', 'unreferenced_files', 'file_usage', 'set_bucket',
           -- live change feeds
           'set_realtime', 'realtime_position', 'realtime_status', 'realtime_disable',
           -- email (sql/email.sql)
           'send_email', 'retry_email', 'purge_email_outbox',
           -- accounts: email flows (sql/accounts.sql)
           'request_verification', 'request_password_reset', 'request_magic_link', 'verify',
           'reset_password', 'request_email_change',
           -- multi-factor (sql/accounts.sql)
           'mfa_enroll_totp', 'mfa_verify_factor', 'mfa_challenge', 'mfa_unenroll', 'mfa_recovery_codes',
           'mfa_status', 'admin_reset_mfa', 'aal', 'require_aal2', 'set_collection_options',
           -- accounts: anonymous, sessions, suspension (sql/accounts.sql)
           'sign_in_anonymously', 'upgrade_account', 'purge_anonymous_users', 'list_sessions',
           'end_session', 'end_other_sessions', 'user_sessions', 'sign_out_user', 'suspend_user',
           'reactivate_user', 'is_anonymous',
           -- accounts: import (sql/accounts.sql)
           'import_users',
           -- oidc (sql/oidc.sql)
           'set_oidc_provider', 'drop_oidc_provider', 'oidc_providers', 'oidc_sign_in', 'link_identity',
           'unlink_identity', 'identities',
           -- social (sql/social.sql)
           'follow', 'unfollow', 'remove_follower', 'answer_follow_request', 'follow_requests',
           'followers', 'following', 'update_profile', 'get_profile', 'lookup_user',
           'find_users',
           -- rpc (sql/rpc.sql)
           'expose_schema', 'unexpose_schema', 'rpc', 'raise',
           -- (rpc above, protected tables below: one line each, kept apart for merges)
           -- tables (sql/tables.sql)
           'protect', 'unprotect', 'has_role', 'can_read', 'can_read_file',
           -- tables over HTTP (package C)
           'table_list', 'table_get', 'table_insert', 'table_update', 'table_delete',
           'batch', -- batches (issue 18, sql/batch.sql)
           -- DBA tools
           'as_user', 'purge_audit_log', 'security_lints'])
    union all
    -- 4c. The document policies and the index entries' read policy are made from one
    --     rule (sql/permissions.sql): each must still say what documents_read says
    --     (with its own ACL column), for the same roles and command; the service
    --     policies must agree; no other policy may widen either table.
    select 'policy_drift', format('policy %I on %s', v.polname, v.rel),
           case when p.oid is null then 'missing: sql/permissions.sql creates it'
                else format('does not agree with documents_read: %s', pg_get_expr(p.polqual, p.polrelid)) end
      from (values ('documents_update', 'baas.documents', 'acl_update', 'w'),
                   ('documents_delete', 'baas.documents', 'acl_delete', 'd'),
                   ('index_entries_read', 'baas.index_entries', 'acl_read', 'r')) v(polname, rel, col, cmd)
      cross join (select * from pg_policy x
                   where x.polname = 'documents_read' and x.polrelid = 'baas.documents'::regclass) r
      left join pg_policy p on p.polname = v.polname and p.polrelid = v.rel::regclass
     where p.oid is null
        or pg_get_expr(p.polqual, p.polrelid) is distinct from replace(pg_get_expr(r.polqual, r.polrelid), 'acl_read', v.col)
        or p.polroles::oid[] is distinct from r.polroles::oid[]
        or p.polcmd::text <> v.cmd or p.polpermissive is distinct from r.polpermissive
    union all
    select 'policy_drift', format('policy %I on %s', p.polname, p.polrelid::regclass),
           'the service policy must be `to baas_service using (true)`, as documents_service'
      from pg_policy p
     where p.polname in ('documents_service', 'index_entries_service')
       and p.polrelid in ('baas.documents'::regclass, 'baas.index_entries'::regclass)
       and (p.polroles::oid[] is distinct from array['baas_service'::regrole::oid]
            or pg_get_expr(p.polqual, p.polrelid) is distinct from 'true')
    union all
    select 'policy_drift', format('policy %I on %s', p.polname, p.polrelid::regclass),
           'a policy sql/permissions.sql does not define: it may widen what callers see or do'
      from pg_policy p
     where (p.polrelid = 'baas.documents'::regclass
            and p.polname not in ('documents_service', 'documents_read', 'documents_create',
                                  'documents_update', 'documents_delete', 'documents_aal'))
        or (p.polrelid = 'baas.index_entries'::regclass
            and p.polname not in ('index_entries_service', 'index_entries_read', 'index_entries_aal'))
    union all
    -- 4c'. The aal2 rule (sql/accounts.sql, multi-factor): restrictive, for the two API
    --      roles that obey ACLs, with exactly its text (a permissive or loosened copy
    --      would let aal1 callers into require_aal2 collections).
    select 'policy_drift', format('policy %I on %s', v.polname, v.rel),
           case when p.oid is null then 'missing: sql/accounts.sql creates it'
                else format('not the restrictive aal2 rule: %s', pg_get_expr(p.polqual, p.polrelid)) end
      from (values ('documents_aal', 'baas.documents', '*',
                    '(collection_id <> ALL (( SELECT baas._aal2_blocked() AS _aal2_blocked)::integer[]))'),
                   ('index_entries_aal', 'baas.index_entries', 'r',
                    '(index_id <> ALL (( SELECT baas._aal2_blocked_indexes() AS _aal2_blocked_indexes)::integer[]))')) v(polname, rel, cmd, qual)
      left join pg_policy p on p.polname = v.polname and p.polrelid = v.rel::regclass
     where p.oid is null or p.polpermissive or p.polcmd::text <> v.cmd
        or pg_get_expr(p.polqual, p.polrelid) is distinct from v.qual
        or (v.cmd = '*' and pg_get_expr(p.polwithcheck, p.polrelid) is distinct from v.qual)
        or (v.cmd <> '*' and p.polwithcheck is not null)
        or (select array_agg(x order by x) from unnest(p.polroles::oid[]) x)
           is distinct from (select array_agg(x order by x)
                               from unnest(array['baas_anon'::regrole::oid, 'baas_user'::regrole::oid]) x)
    union all
    -- 4d. Files (sql/permissions.sql, "files"): a chunk, a blob and a thumbnail are
    --     readable exactly when a readable document holds the blob. Each read policy
    --     must keep that text, for baas_anon and baas_user; the service policies are
    --     `using (true)` for baas_service; no other policy may widen these tables.
    select 'file_policy_drift', format('policy %I on %s', v.polname, v.rel),
           case when p.oid is null then 'missing: sql/permissions.sql creates it'
                else format('not the one file rule: %s', pg_get_expr(p.polqual, p.polrelid)) end
      from (values ('file_chunks_read', 'baas._file_chunks', '_file_chunks.blob_id', false),
                   ('blobs_read', 'baas._blobs', '_blobs.id', false),
                   ('thumbnails_read', 'baas._thumbnails', '_thumbnails.source_blob', false),
                   ('file_chunks_service', 'baas._file_chunks', null, true),
                   ('blobs_service', 'baas._blobs', null, true),
                   ('thumbnails_service', 'baas._thumbnails', null, true)) v(polname, rel, col, service)
      left join pg_policy p on p.polname = v.polname and p.polrelid = v.rel::regclass
     where p.oid is null
        or p.polcmd::text <> 'r' or not p.polpermissive or p.polwithcheck is not null
        or (v.service and (pg_get_expr(p.polqual, p.polrelid) is distinct from 'true'
                           or p.polroles::oid[] is distinct from array['baas_service'::regrole::oid]))
        or (not v.service and (
               pg_get_expr(p.polqual, p.polrelid) is distinct from
                   format(E'(EXISTS ( SELECT\n   FROM baas.documents d\n  WHERE (d.blob_id = %s)))', v.col)
               or (select array_agg(x order by x) from unnest(p.polroles::oid[]) x)
                  is distinct from (select array_agg(x order by x)
                                      from unnest(array['baas_anon'::regrole::oid, 'baas_user'::regrole::oid]) x)))
    union all
    select 'file_policy_drift', format('policy %I on %s', p.polname, p.polrelid::regclass),
           'a policy sql/permissions.sql does not define: it may widen who reads file bytes'
      from pg_policy p
     where p.polrelid in ('baas._file_chunks'::regclass, 'baas._blobs'::regclass, 'baas._thumbnails'::regclass,
                          'baas._uploads'::regclass, 'baas._file_refs'::regclass, 'baas._blob_trash'::regclass)
       and p.polname not in ('file_chunks_read', 'file_chunks_service', 'blobs_read', 'blobs_service',
                             'thumbnails_read', 'thumbnails_service')
    union all
    -- 4e. The file tables are written by the extension's SECURITY DEFINER functions
    --     only: no API role may write them (nor read the sessions and references).
    select 'file_table_grant', format('%s to %s', t.rel, r.rolname),
           format('%s may %s it: only SECURITY DEFINER functions may', r.rolname, lower(x.priv))
      from (values ('baas._blobs'), ('baas._file_chunks'), ('baas._uploads'), ('baas._thumbnails'),
                   ('baas._file_refs'), ('baas._blob_trash')) t(rel)
      cross join (values ('baas_anon'), ('baas_user'), ('baas_service')) r(rolname)
      cross join (values ('INSERT'), ('UPDATE'), ('DELETE'), ('TRUNCATE'), ('SELECT')) x(priv)
     where (x.priv in ('INSERT', 'UPDATE', 'SELECT')
            and has_any_column_privilege(r.rolname, t.rel::regclass, x.priv)
            and (x.priv <> 'SELECT' or t.rel in ('baas._uploads', 'baas._file_refs', 'baas._blob_trash')))
        or (x.priv in ('DELETE', 'TRUNCATE') and has_table_privilege(r.rolname, t.rel::regclass, x.priv))
    union all
    -- 5. A policy must not decide on data its users can edit: an account's own data
    --    (baas.users.data, changed by baas.update_user), document data, or functions
    --    that return them. Roles come from baas.roles() / baas.principals().
    select distinct 'policy_reads_user_data',
           format('policy %I on %s', pol.polname, pol.polrelid::regclass),
           format('reads %s, which its users can change', coalesce(
               (select format('%s.%I', a.attrelid::regclass, a.attname) from pg_attribute a
                 where a.attrelid = d.refobjid and a.attnum = d.refobjsubid),
               d.refobjid::regprocedure::text))
      from pg_policy pol
      join pg_depend d on d.classid = 'pg_policy'::regclass and d.objid = pol.oid
     where (d.refclassid = 'pg_class'::regclass
            and (d.refobjid, d.refobjsubid) in (
                select a.attrelid, a.attnum from pg_attribute a
                 where (a.attrelid, a.attname) in (('baas.users'::regclass, 'data'), ('baas.documents'::regclass, 'data'))))
        or (d.refclassid = 'pg_proc'::regclass
            and d.refobjid in ('baas.get_user()'::regprocedure, 'baas.get_document(text, text)'::regprocedure,
                               'baas.find(text, jsonb, text, integer, integer, uuid, text[])'::regprocedure))
    union all
    -- 6. The RPC door (sql/rpc.sql): functions served over HTTP.
    select * from baas._rpc_lints()
    union all
    -- 7. Protected tables (sql/tables.sql): policies made from their definitions.
    select * from baas._table_lints()
$$;
comment on function baas.security_lints() is
    'Security lints (no rows = clean): unforced RLS on API-readable tables, SECURITY DEFINER without search_path, PUBLIC execute, exposed internal functions, undocumented public functions, policies that drifted from their one rule (documents and files), write grants on file tables, policies reading user-editable data, the RPC door and protected tables (rpc_lints, table_lints)';

-- ================================================================= sql/grants.sql
-- batches (issue 18, sql/batch.sql): package B. A fresh install revokes every function
-- from PUBLIC before granting.
revoke execute on function
    baas._batch_max_operations(),
    baas.batch(jsonb)
  from public;
grant execute on function
    baas._batch_max_operations(),
    baas.batch(jsonb)
  to baas_anon, baas_user, baas_service;

-- Tell every proxy that the extension changed (see pgbaas--0.2.0--0.3.0.sql).
select pg_catalog.pg_notify('baas_extension', '0.9.0');
