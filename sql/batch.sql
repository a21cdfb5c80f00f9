-- pgbaas batches: several document operations that commit together or not at all
-- (POST /v1/batch, baas.batch; docs/batch.md). Every operation is the same SQL function
-- a single request calls, run as the caller in the request's one transaction (issue 18,
-- package B).

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
