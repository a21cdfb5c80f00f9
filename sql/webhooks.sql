-- pgbaas webhooks: a DBA registers an HTTP endpoint for a collection's or a table's
-- changes; the change's transaction writes the event to an outbox, the proxy delivers it
-- signed (Standard Webhooks), with retries, in order per document, and dead-letters it
-- after too many failures (docs/webhooks.md; issue 18, package D).

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
