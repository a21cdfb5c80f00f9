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

-- =============================================================== sql/webhooks.sql
-- BEGIN sql/webhooks.sql (package D: webhooks; the file's text below its header)
------------------------------------------------------------------------ settings
-- A failed delivery is tried again after webhook_retry_base * 2^(attempts-1), at most
-- webhook_retry_max, ±10 % (each webhook says how many attempts in all: max_attempts).
alter table baas.settings
    add column webhook_retry_base interval not null default '10 seconds'
        check (webhook_retry_base between '1 second' and '1 hour'),
    add column webhook_retry_max interval not null default '1 hour'
        check (webhook_retry_max between '1 second' and '1 day');

------------------------------------------------------------------------ tables
-- One row per endpoint: a collection's documents (collection_id) or a table's rows
-- ("table"), the operations it wants, its signing secret (kept in clear: the proxy
-- signs with it; the table is the DBA's alone). Dumped.
create table baas.webhooks (
    id integer generated always as identity primary key,
    name text not null unique check (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    url text not null check (url ~ '^https?://[^\s/?#]+[^\s]*$' and length(url) <= 2000),
    secret text not null check (secret ~ '^whsec_[A-Za-z0-9+/]+={0,2}$' and length(secret) <= 200),
    collection_id integer references baas.collections (id) on delete cascade,
    "table" regclass,
    events text[] not null default '{insert,update,delete}'
        check (events <> '{}' and events <@ '{insert,update,delete}'),
    max_attempts integer not null default 10 check (max_attempts between 1 and 100),
    active boolean not null default true,
    created_at timestamptz not null default now(),
    check ((collection_id is null) <> ("table" is null))
);
create index webhooks_collection_idx on baas.webhooks (collection_id) where collection_id is not null;
revoke all on baas.webhooks from public;
alter table baas.webhooks enable row level security;
select pg_catalog.pg_extension_config_dump('baas.webhooks', '');
-- With its identity's position (sql/dump.sql): a restored database must not reuse an id.
select pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('baas.webhooks', 'id')::regclass, '');

-- The outbox: one row per event and webhook, written in the change's transaction.
-- key: the document's id or the row's primary key (JSON text; a change of the key files
-- the event under the new key); events of one
-- (webhook, key) go out one at a time, oldest first. Undelivered rows are dumped
-- (pending and dead ones: a restore keeps them), delivered ones are not.
create table baas.webhook_events (
    id bigint generated always as identity primary key,
    webhook_id integer not null references baas.webhooks (id) on delete cascade,
    -- The webhook-id header (msg_<uuid>), the same on every attempt; unique across
    -- databases, unlike id (a restored copy counts on from the same number).
    message_id uuid not null default baas.uuid7(),
    type text not null,
    key text not null,
    payload jsonb not null,
    created_at timestamptz not null default now(),
    attempts integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    claimed_until timestamptz,
    last_status integer,
    last_error text check (length(last_error) <= 2000),
    delivered_at timestamptz,
    dead_at timestamptz
);
-- The claim looks, per active webhook, for due events (due_idx) and counts those in
-- flight (claimed_idx, only claimed rows): cheap when nothing is due, whatever the backlog.
create index webhook_events_due_idx on baas.webhook_events (webhook_id, next_attempt_at, id)
    where delivered_at is null and dead_at is null;
create index webhook_events_claimed_idx on baas.webhook_events (webhook_id, claimed_until)
    where claimed_until is not null and delivered_at is null and dead_at is null;
create index webhook_events_key_idx on baas.webhook_events (webhook_id, key, id)
    where delivered_at is null and dead_at is null;
create index webhook_events_done_idx on baas.webhook_events ((coalesce(delivered_at, dead_at)))
    where delivered_at is not null or dead_at is not null;
revoke all on baas.webhook_events from public;
alter table baas.webhook_events enable row level security;
select pg_catalog.pg_extension_config_dump('baas.webhook_events', 'where delivered_at is null');
select pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('baas.webhook_events', 'id')::regclass, '');

-- DBAs: events that will not be delivered (max_attempts used up), newest first. Send
-- them again with baas.replay_webhook_event(id) or baas.replay_dead_webhook_events(name).
create view baas.webhook_dead_letters as
    select e.id, w.name as webhook, e.type, e.key, e.payload, e.created_at, e.attempts,
           e.last_status, e.last_error, e.dead_at
      from baas.webhook_events e
      join baas.webhooks w on w.id = e.webhook_id
     where e.dead_at is not null
     order by e.dead_at desc, e.id desc;
comment on view baas.webhook_dead_letters is
    'DBAs: webhook events given up after max_attempts failed deliveries, with the last HTTP status and error';
revoke all on baas.webhook_dead_letters from public;

------------------------------------------------------------------------ capture
-- The event's common part: {"type", "timestamp", "data"}.
create function baas._webhook_payload(type text, data jsonb) returns jsonb
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select jsonb_build_object('type', type,
                              'timestamp', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                              'data', data)
$$;

-- Documents: one trigger for every collection. With no webhook on the document's
-- collection it costs one probe of webhooks_collection_idx (an empty index when there
-- are no webhooks). Nothing is captured while a dump is loaded. No pg_notify here: a
-- notification takes a cluster-wide lock at commit, which would serialise every
-- webhooked writer; the proxies poll (--webhook-poll-secs, 1 s by default) instead.
create function baas._webhook_document() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_collection integer := case when tg_op = 'DELETE' then old.collection_id else new.collection_id end;
    v_op text := lower(tg_op);
    v_name text;
    v_type text;
    v_data jsonb;
    w record;
begin
    -- FOR KEY SHARE (the lock the outbox's foreign key takes anyway): a drop_webhook
    -- under way makes this wait, then skip the dropped webhook, instead of failing the
    -- user's write with a foreign-key violation.
    for w in select h.id from baas.webhooks h
              where h.collection_id = v_collection and h.active and v_op = any (h.events)
              order by h.id
                for key share of h
    loop
        if v_data is null then
            if baas._restoring() then
                return null;
            end if;
            select c.name into v_name from baas.collections c where c.id = v_collection;
            v_type := 'document.' || case tg_op when 'INSERT' then 'created' when 'UPDATE' then 'updated' else 'deleted' end;
            v_data := jsonb_build_object(
                'collection', v_name,
                'id', case when tg_op = 'DELETE' then old.id else new.id end,
                'document', case when tg_op <> 'DELETE' then baas._document_json(new, v_name) end,
                'previous', case when tg_op <> 'INSERT' then baas._document_json(old, v_name) end);
            v_data := baas._webhook_payload(v_type, v_data);
        end if;
        insert into baas.webhook_events (webhook_id, type, key, payload)
        values (w.id, v_type, (case when tg_op = 'DELETE' then old.id else new.id end)::text, v_data);
    end loop;
    return null;
end
$$;
create trigger documents_webhooks after insert or update or delete on baas.documents
    for each row execute function baas._webhook_document();

-- Tables: create_webhook installs `baas_webhook_<id>` on the table, with the webhook's
-- id and the primary key's columns as arguments.
create function baas._webhook_row() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_id integer := tg_argv[0]::integer;
    v_row jsonb := case when tg_op = 'DELETE' then to_jsonb(old) else to_jsonb(new) end;
    v_key jsonb := '{}';
    v_type text;
    i integer;
begin
    perform from baas.webhooks h where h.id = v_id and h.active for key share of h;
    if not found or baas._restoring() then
        return null;
    end if;
    for i in 1 .. tg_nargs - 1 loop
        v_key := v_key || jsonb_build_object(tg_argv[i], v_row -> tg_argv[i]);
    end loop;
    v_type := 'row.' || case tg_op when 'INSERT' then 'inserted' when 'UPDATE' then 'updated' else 'deleted' end;
    insert into baas.webhook_events (webhook_id, type, key, payload)
    values (v_id, v_type, v_key::text, baas._webhook_payload(v_type, jsonb_build_object(
        'table', tg_table_schema || '.' || tg_table_name,
        'key', v_key,
        'row', case when tg_op <> 'DELETE' then to_jsonb(new) end,
        'previous', case when tg_op <> 'INSERT' then to_jsonb(old) end)));
    return null;
end
$$;

------------------------------------------------------------------------ administration
-- DBAs: register a webhook for a collection's documents or a table's rows (exactly one
-- of the two) and the operations in `events`. secret: `whsec_` + base64 of 24 to 64
-- bytes; generated (32 random bytes) when null. Returns the webhook with its secret.
-- 22023 invalid_request (bad name, url, events, secret, max_attempts; a table without a
-- primary key); P0002 collection_not_found; 23505 webhook_exists.
create function baas.create_webhook(name text, url text, collection text default null,
                                    "table" regclass default null,
                                    events text[] default '{insert,update,delete}',
                                    secret text default null, max_attempts integer default 10)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_coll integer;
    v_secret text := create_webhook.secret;
    v_pk text[];
    v_events text[];
    w baas.webhooks;
begin
    if name is null or name !~ '^[a-z][a-z0-9_]{0,62}$' then
        perform baas._raise('22023', 'invalid_request', 'name must be 1 to 63 of a-z, 0-9 and _, starting with a letter');
    end if;
    if url is null or url !~ '^https?://[^\s/?#]+[^\s]*$' or length(url) > 2000 then
        perform baas._raise('22023', 'invalid_request', 'url must be an http:// or https:// URL (at most 2000 characters)');
    end if;
    if (collection is null) = ("table" is null) then
        perform baas._raise('22023', 'invalid_request', 'name exactly one of collection and "table"');
    end if;
    if events is null or events = '{}' or not events <@ '{insert,update,delete}' then
        perform baas._raise('22023', 'invalid_request', 'events must be a non-empty subset of {insert,update,delete}');
    end if;
    -- Each once, in the order given ('{insert,insert}' would make a bad trigger).
    v_events := array(select e from unnest(events) with ordinality u(e, n) group by e order by min(n));
    if max_attempts is null or max_attempts not between 1 and 100 then
        perform baas._raise('22023', 'invalid_request', 'max_attempts must be 1..100');
    end if;
    if v_secret is null then
        v_secret := 'whsec_' || encode(sha256(convert_to(baas._new_refresh_token(), 'UTF8')), 'base64');
    else
        begin
            -- Canonical base64 only (what encode gives back: no stray trailing bits), as
            -- the proxy decodes it strictly.
            if v_secret !~ '^whsec_[A-Za-z0-9+/]+={0,2}$' or length(decode(substr(v_secret, 7), 'base64')) not between 24 and 64
               or replace(encode(decode(substr(v_secret, 7), 'base64'), 'base64'), E'\n', '') <> substr(v_secret, 7) then
                raise exception using errcode = '22023';
            end if;
        exception when others then
            perform baas._raise('22023', 'invalid_request', 'secret must be whsec_ followed by the base64 of 24 to 64 bytes');
        end;
    end if;
    if exists (select 1 from baas.webhooks h where h.name = create_webhook.name) then
        perform baas._raise('23505', 'webhook_exists', format('a webhook named %s exists', create_webhook.name));
    end if;
    if collection is not null then
        v_coll := (baas._collection_by_name(collection)).id;
    else
        if (select c.relkind from pg_class c where c.oid = "table") not in ('r', 'p') then
            perform baas._raise('22023', 'invalid_request', format('%s is not a table', "table"));
        end if;
        -- Not pgbaas's own tables (baas.webhook_events would capture itself without end;
        -- baas.users holds password hashes) nor the system's.
        if (select n.nspname from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = "table")
           in ('baas', 'pg_catalog', 'information_schema', 'pg_toast') then
            perform baas._raise('22023', 'invalid_request', format('%s belongs to pgbaas or the system: no webhooks on it', "table"));
        end if;
        select array_agg(a.attname::text order by k.n) into v_pk
          from pg_index i
          cross join lateral unnest(i.indkey) with ordinality k(attnum, n)
          join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
         where i.indrelid = "table" and i.indisprimary;
        if v_pk is null then
            perform baas._raise('22023', 'invalid_request', format('table %s has no primary key (events are ordered per key)', "table"));
        end if;
    end if;
    insert into baas.webhooks (name, url, secret, collection_id, "table", events, max_attempts)
    values (name, url, v_secret, v_coll, "table", v_events, max_attempts)
    returning * into w;
    if "table" is not null then
        execute format('create trigger %I after %s on %s for each row execute function baas._webhook_row(%s)',
                       'baas_webhook_' || w.id,
                       array_to_string(array(select upper(e) from unnest(v_events) e order by e), ' or '),
                       "table",
                       array_to_string(array[quote_literal(w.id::text)] || array(select quote_literal(c) from unnest(v_pk) c), ', '));
    end if;
    -- The URL without credentials or query (either may hold a secret).
    perform baas._audit('webhook.create', collection => collection, details => jsonb_build_object(
        'webhook', name, 'url', regexp_replace(regexp_replace(url, '^(https?://)[^/?#]*@', '\1'), '[?#].*$', ''),
        'table', "table"::text));
    return baas._webhook_json(w) || jsonb_build_object('secret', v_secret);
end
$$;
comment on function baas.create_webhook(text, text, text, regclass, text[], text, integer) is
    'DBA: register a webhook for a collection''s documents or a table''s rows; returns it with its signing secret';

-- A webhook as DBAs see it (without its secret).
create function baas._webhook_json(w baas.webhooks) returns jsonb
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select jsonb_build_object('id', w.id, 'name', w.name, 'url', w.url,
        'collection', (select c.name from baas.collections c where c.id = w.collection_id),
        -- null once the table is dropped (a bare OID is no name)
        'table', (select c.oid::regclass::text from pg_class c where c.oid = w."table"), 'events', to_jsonb(w.events), 'max_attempts', w.max_attempts,
        'active', w.active, 'created_at', w.created_at)
$$;

create function baas._webhook_by_name(name text) returns baas.webhooks
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
    w baas.webhooks;
begin
    select * into w from baas.webhooks h where h.name = _webhook_by_name.name;
    if not found then
        perform baas._raise('P0002', 'webhook_not_found', format('no webhook named %s', coalesce(_webhook_by_name.name, 'null')));
    end if;
    return w;
end
$$;

-- DBAs: remove a webhook, its trigger (for a table whose table still exists) and its
-- events, delivered or not. P0002 webhook_not_found.
-- Concurrent writers: the trigger goes first (its table's lock waits for the table's
-- writers, and later ones find no trigger), then the row is deleted; a document writer's
-- capture reads webhooks FOR KEY SHARE, so it either holds the row (and the delete waits
-- for its commit, the cascade then takes its event) or waits for the delete and skips
-- the webhook. Either way the user's write succeeds; it never meets a foreign-key error.
-- Locking the row before the trigger could deadlock with a table writer.
create function baas.drop_webhook(name text) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    w baas.webhooks := baas._webhook_by_name(name);
    v_table text;
begin
    if w."table" is not null then
        select c.oid::regclass::text into v_table from pg_class c where c.oid = w."table";
        if v_table is not null then
            execute format('drop trigger if exists %I on %s', 'baas_webhook_' || w.id, v_table);
        end if;
    end if;
    delete from baas.webhooks h where h.id = w.id;
    perform baas._audit('webhook.drop', details => jsonb_build_object('webhook', w.name));
end
$$;
comment on function baas.drop_webhook(text) is 'DBA: remove a webhook and its pending events';

-- DBAs: pause (false) or resume (true) a webhook. A paused one captures nothing and
-- delivers nothing; events captured before wait for it to resume. P0002 webhook_not_found.
create function baas.set_webhook_active(name text, active boolean) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    w baas.webhooks := baas._webhook_by_name(name);
begin
    if active is null then
        perform baas._raise('22023', 'invalid_request', 'active must be true or false');
    end if;
    update baas.webhooks h set active = set_webhook_active.active where h.id = w.id returning * into w;
    perform baas._audit('webhook.' || case when active then 'resume' else 'pause' end,
                        details => jsonb_build_object('webhook', w.name));
    perform pg_notify('baas_webhooks', '');
    return baas._webhook_json(w);
end
$$;
comment on function baas.set_webhook_active(text, boolean) is 'DBA: pause (false) or resume (true) a webhook';

-- DBAs: deliver a dead event again, with a fresh count of attempts.
-- P0002 webhook_event_not_found: no dead event with this id.
create function baas.replay_webhook_event(id bigint) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    update baas.webhook_events e
       set dead_at = null, attempts = 0, next_attempt_at = now(), claimed_until = null
     where e.id = replay_webhook_event.id and e.dead_at is not null;
    if not found then
        perform baas._raise('P0002', 'webhook_event_not_found', format('no dead webhook event with id %s', coalesce(replay_webhook_event.id::text, 'null')));
    end if;
    perform pg_notify('baas_webhooks', '');
end
$$;
comment on function baas.replay_webhook_event(bigint) is 'DBA: deliver a dead-lettered webhook event again';

-- DBAs: every dead event of webhook `name` again, oldest first. Returns how many.
-- P0002 webhook_not_found.
create function baas.replay_dead_webhook_events(name text) returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    w baas.webhooks := baas._webhook_by_name(name);
    n bigint;
begin
    update baas.webhook_events e
       set dead_at = null, attempts = 0, next_attempt_at = now(), claimed_until = null
     where e.webhook_id = w.id and e.dead_at is not null;
    get diagnostics n = row_count;
    perform pg_notify('baas_webhooks', '');
    return n;
end
$$;
comment on function baas.replay_dead_webhook_events(text) is 'DBA: deliver every dead-lettered event of a webhook again; returns how many';

-- DBAs and housekeeping: delete events delivered or dead more than `older_than` ago
-- (at least 1 hour); pending ones stay. Returns how many went.
create function baas.purge_webhook_events(older_than interval) returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    n bigint;
begin
    if older_than is null or older_than < interval '1 hour' then
        perform baas._raise('22023', 'invalid_request', 'older_than must be at least 1 hour');
    end if;
    delete from baas.webhook_events e
     where (e.delivered_at is not null or e.dead_at is not null)
       and coalesce(e.delivered_at, e.dead_at) < now() - older_than;
    get diagnostics n = row_count;
    return n;
end
$$;
comment on function baas.purge_webhook_events(interval) is
    'DBA/housekeeping: delete webhook events delivered or dead longer ago than the interval (at least 1 hour); returns how many';

------------------------------------------------------------------------ the proxy's side
-- Claim up to `max` due events for `lease_secs`, at most `per_webhook` in flight per
-- webhook counted over the whole cluster (every proxy's deliveries), so that one slow
-- endpoint cannot take every delivery slot, and only the oldest undelivered event of
-- each (webhook, key): the next one waits until it is delivered or dead, so delivery is
-- in order per document across any number of proxies. The attempt counts now; an event
-- whose lease lapsed with no attempt left is dead here. Returns each event's
-- webhook-id (msg_<message_id>), the same on every attempt.
-- Cost: per active webhook one count of its claimed rows (claimed_idx) and one ordered
-- walk of its due rows (due_idx) that stops after its share: nothing is rescanned per
-- event, and a poll that finds nothing due is a few index probes.
create function baas._webhook_claim(max integer, lease_secs integer, per_webhook integer)
returns table (id bigint, webhook_id integer, url text, secret text, body text, attempt integer, msg_id text)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if max is null or max not between 1 and 1000 or lease_secs is null or lease_secs not between 1 and 86400
       or per_webhook is null or per_webhook not between 1 and 1000 then
        perform baas._raise('22023', 'invalid_request', 'max and per_webhook must be 1..1000 and lease_secs 1..86400');
    end if;
    update baas.webhook_events e
       set dead_at = now(), claimed_until = null,
           last_error = left('gave up after ' || e.attempts || ' attempts: the last one never reported back'
                             || coalesce('; before: ' || e.last_error, ''), 2000)
      from baas.webhooks w
     where w.id = e.webhook_id
       and e.id in (select x.id from baas.webhook_events x join baas.webhooks h on h.id = x.webhook_id
                     where x.claimed_until is not null and x.delivered_at is null and x.dead_at is null
                       and x.claimed_until < now() and x.attempts >= h.max_attempts
                     limit 100
                       for update of x skip locked);
    return query
    with busy as (
        select f.webhook_id, count(*)::integer as n
          from baas.webhook_events f
         where f.claimed_until is not null and f.delivered_at is null and f.dead_at is null
           and f.claimed_until >= now()
         group by f.webhook_id
    ), picked as (
        select c.id
          from baas.webhooks h
          left join busy b on b.webhook_id = h.id
         cross join lateral (
               select x.id, x.next_attempt_at
                 from baas.webhook_events x
                where x.webhook_id = h.id and x.delivered_at is null and x.dead_at is null
                  and x.next_attempt_at <= now()
                  and (x.claimed_until is null or x.claimed_until < now())
                  and not exists (select 1 from baas.webhook_events p
                                   where p.webhook_id = x.webhook_id and p.key = x.key and p.id < x.id
                                     and p.delivered_at is null and p.dead_at is null)
                order by x.next_attempt_at, x.id
                limit greatest(per_webhook - coalesce(b.n, 0), 0)
                  for update of x skip locked) c
         where h.active and coalesce(b.n, 0) < per_webhook
         order by c.next_attempt_at, c.id
         limit max
    )
    update baas.webhook_events e
       set attempts = e.attempts + 1, claimed_until = now() + make_interval(secs => lease_secs)
      from picked k, baas.webhooks w
     where e.id = k.id and w.id = e.webhook_id
    returning e.id, e.webhook_id, w.url, w.secret, e.payload::text, e.attempts, 'msg_' || e.message_id::text;
end
$$;

-- Attempt `attempt` of event `id` got a 2xx (`status`): delivered. A report for an
-- attempt that is no longer the latest changes nothing.
create function baas._webhook_delivered(id bigint, attempt integer, status integer) returns void
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    update baas.webhook_events e
       set delivered_at = now(), claimed_until = null, last_status = _webhook_delivered.status, last_error = null
     where e.id = _webhook_delivered.id and e.attempts = _webhook_delivered.attempt
       and e.delivered_at is null and e.dead_at is null
$$;

-- Attempt `attempt` of event `id` failed: `status` is the HTTP status (null: no
-- answer), `error` what went wrong. Dead after the webhook's max_attempts; else due
-- again after webhook_retry_base * 2^(attempts-1), at most webhook_retry_max, ±10 %.
create function baas._webhook_failed(id bigint, attempt integer, status integer, error text) returns void
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    update baas.webhook_events e
       set dead_at = case when e.attempts >= w.max_attempts then now() end,
           next_attempt_at = now() + least(s.webhook_retry_base * power(2, least(e.attempts - 1, 30)), s.webhook_retry_max)
                                     * (0.9 + 0.2 * random()),
           claimed_until = null,
           last_status = _webhook_failed.status,
           last_error = left(coalesce(_webhook_failed.error, 'unknown error'), 2000)
      from baas.webhooks w, baas.settings s
     where w.id = e.webhook_id and e.id = _webhook_failed.id and e.attempts = _webhook_failed.attempt
       and e.delivered_at is null and e.dead_at is null
$$;
-- END sql/webhooks.sql

-- =========================================================== sql/housekeeping.sql

-- ================================================================== sql/lints.sql
-- (package D: the six webhook functions in the 4b list)
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
           'create_webhook', 'drop_webhook', 'set_webhook_active', 'replay_webhook_event', 'replay_dead_webhook_events', 'purge_webhook_events', -- webhooks (sql/webhooks.sql)
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
-- webhooks (package D): a fresh install revokes every function from PUBLIC first.
revoke execute on function
    baas._webhook_payload(text, jsonb),
    baas._webhook_document(),
    baas._webhook_row(),
    baas.create_webhook(text, text, text, regclass, text[], text, integer),
    baas._webhook_json(baas.webhooks),
    baas._webhook_by_name(text),
    baas.drop_webhook(text),
    baas.set_webhook_active(text, boolean),
    baas.replay_webhook_event(bigint),
    baas.replay_dead_webhook_events(text),
    baas.purge_webhook_events(interval),
    baas._webhook_claim(integer, integer, integer),
    baas._webhook_delivered(bigint, integer, integer),
    baas._webhook_failed(bigint, integer, integer, text)
  from public;
grant execute on function
    baas._webhook_claim(integer, integer, integer),
    baas._webhook_delivered(bigint, integer, integer),
    baas._webhook_failed(bigint, integer, integer, text)
  to baas_authenticator;

-- Tell every proxy that the extension changed (see pgbaas--0.2.0--0.3.0.sql).
select pg_catalog.pg_notify('baas_extension', '0.9.0');
