-- Email (issue 16): templates, and an outbox the proxy delivers over SMTP
-- (proxy/src/mail/, docs/email.md). A flow queues a message in its own transaction
-- (baas._enqueue_email): the mail leaves only if the event commits, and the proxy sends it
-- at least once, retrying with backoff. Loaded after accounts.sql: the settings columns
-- below then come after 0.6.0's, in a fresh install as in an upgraded database.

------------------------------------------------------------------------ settings
-- email_from: the From of every message (RFC 5322 mailbox, `addr@host` or
-- `Name <addr@host>`, the name made of words, dots and "quoted strings", so that
-- `"Acme, Inc." <addr@host>` passes and `Acme, Inc. <addr@host>`, which the proxy's
-- mail library refuses, does not); null: mail is not configured and nothing is queued.
-- app_name, app_url: what templates call the app and where their links point (https
-- or an app's own scheme, for deep links). A message that fails transiently is tried
-- again after email_retry_base, doubling up to email_retry_max (±10 %), at most
-- email_max_attempts times in all.
alter table baas.settings
    add column email_from text
        check (length(email_from) <= 320
               and (email_from ~ '^[^<>@\s]+@[^<>@\s]+$'
                    or email_from ~ '^((([-A-Za-z0-9!#$%&''*+/=?^_`{|}~]|[\u0080-\uffff])+|"([^"\\\r\n]|\\[^\r\n])*")( *(([-A-Za-z0-9!#$%&''*+/=?^_`{|}~]|[\u0080-\uffff])+|"([^"\\\r\n]|\\[^\r\n])*"|\.))* *)?<[^<>@\s]+@[^<>@\s]+>$')),
    add column app_name text not null default 'pgbaas'
        check (length(app_name) between 1 and 100 and app_name !~ '[\r\n]'),
    add column app_url text check (app_url ~ '^[a-z][a-z0-9+.-]*://[^#\s]+$' and length(app_url) <= 2000),
    add column email_default_language text not null default 'en'
        check (email_default_language ~ '^[a-z]{2,3}(-[a-z0-9]{2,8})*$'),
    add column email_retry_base interval not null default '30 seconds'
        check (email_retry_base between '1 second' and '1 hour'),
    add column email_retry_max interval not null default '1 hour'
        check (email_retry_max between '1 second' and '1 day'),
    add column email_max_attempts integer not null default 10
        check (email_max_attempts between 1 and 100);

------------------------------------------------------------------------ templates
-- One row per message kind and language; `{{ name }}` placeholders (baas._render_template).
-- Editable by DBAs; dumped with the database (a restore keeps edits).
create table baas.email_templates (
    name text not null check (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    language text not null check (language ~ '^[a-z]{2,3}(-[a-z0-9]{2,8})*$'),
    subject text not null check (length(subject) between 1 and 998 and subject !~ '[\r\n]'),
    text_body text not null check (octet_length(text_body) <= 102400),
    html_body text check (octet_length(html_body) <= 512000),
    updated_at timestamptz not null default now(),
    primary key (name, language)
);
revoke all on baas.email_templates from public;
alter table baas.email_templates enable row level security;
select pg_catalog.pg_extension_config_dump('baas.email_templates', '');

-- A template is checked when stored, so that rendering never fails on it; updated_at
-- follows edits. A restore loads the dumped rows over the ones CREATE EXTENSION seeded.
create function baas._email_template_check() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if tg_op = 'INSERT' and baas._restoring() then
        delete from baas.email_templates t where t.name = new.name and t.language = new.language;
        return new;
    end if;
    perform baas._check_template(new.subject);
    perform baas._check_template(new.text_body);
    if new.html_body is not null then
        perform baas._check_template(new.html_body);
    end if;
    if tg_op = 'UPDATE' then
        new.updated_at := now();
    end if;
    return new;
end
$$;
create trigger email_template_check before insert or update on baas.email_templates
    for each row execute function baas._email_template_check();

-- The messages account flows send, in English. Variables: app_name, app_url (from the
-- settings), link and code (every emailed secret has both), email, new_email,
-- expires_minutes.
insert into baas.email_templates (name, language, subject, text_body, html_body) values
('verify_email', 'en', 'Confirm your email address for {{ app_name }}',
 E'Hello,\n\nPlease confirm that {{ email }} is your email address by opening this link:\n\n{{ link }}\n\nOr enter this code in the app: {{ code }}\n\nThe link and the code expire in {{ expires_minutes }} minutes. If you did not sign up for {{ app_name }}, you can ignore this message.\n\n{{ app_name }}\n',
 E'<p>Hello,</p>\n<p>Please confirm that {{ email }} is your email address:</p>\n<p><a href="{{ link }}">Confirm my email address</a></p>\n<p>Or enter this code in the app: <strong>{{ code }}</strong></p>\n<p>The link and the code expire in {{ expires_minutes }} minutes. If you did not sign up for {{ app_name }}, you can ignore this message.</p>\n<p>{{ app_name }}</p>\n'),
('reset_password', 'en', 'Reset your {{ app_name }} password',
 E'Hello,\n\nSomeone asked to reset the password of the {{ app_name }} account {{ email }}. To choose a new password, open this link:\n\n{{ link }}\n\nOr enter this code in the app: {{ code }}\n\nThe link and the code expire in {{ expires_minutes }} minutes. If you did not ask for this, ignore this message: your password stays as it is.\n\n{{ app_name }}\n',
 E'<p>Hello,</p>\n<p>Someone asked to reset the password of the {{ app_name }} account {{ email }}.</p>\n<p><a href="{{ link }}">Choose a new password</a></p>\n<p>Or enter this code in the app: <strong>{{ code }}</strong></p>\n<p>The link and the code expire in {{ expires_minutes }} minutes. If you did not ask for this, ignore this message: your password stays as it is.</p>\n<p>{{ app_name }}</p>\n'),
('magic_link', 'en', 'Your {{ app_name }} sign-in link',
 E'Hello,\n\nOpen this link to sign in to {{ app_name }} as {{ email }}:\n\n{{ link }}\n\nOr enter this code in the app: {{ code }}\n\nThe link and the code work once and expire in {{ expires_minutes }} minutes. If you did not ask to sign in, you can ignore this message.\n\n{{ app_name }}\n',
 E'<p>Hello,</p>\n<p><a href="{{ link }}">Sign in to {{ app_name }}</a> as {{ email }}.</p>\n<p>Or enter this code in the app: <strong>{{ code }}</strong></p>\n<p>The link and the code work once and expire in {{ expires_minutes }} minutes. If you did not ask to sign in, you can ignore this message.</p>\n<p>{{ app_name }}</p>\n'),
('email_change', 'en', 'Confirm your new email address for {{ app_name }}',
 E'Hello,\n\nSomeone asked to change the email address of a {{ app_name }} account to {{ new_email }}. To confirm, open this link:\n\n{{ link }}\n\nOr enter this code in the app: {{ code }}\n\nThe link and the code expire in {{ expires_minutes }} minutes. If you did not ask for this, ignore this message: nothing changes.\n\n{{ app_name }}\n',
 E'<p>Hello,</p>\n<p>Someone asked to change the email address of a {{ app_name }} account to {{ new_email }}.</p>\n<p><a href="{{ link }}">Confirm my new email address</a></p>\n<p>Or enter this code in the app: <strong>{{ code }}</strong></p>\n<p>The link and the code expire in {{ expires_minutes }} minutes. If you did not ask for this, ignore this message: nothing changes.</p>\n<p>{{ app_name }}</p>\n'),
('email_changed_notice', 'en', 'The email address of your {{ app_name }} account changed',
 E'Hello,\n\nThe email address of your {{ app_name }} account was changed from {{ email }} to {{ new_email }}. Messages about the account now go to the new address.\n\nIf you did not make this change, contact the {{ app_name }} team at once.\n\n{{ app_name }}\n',
 E'<p>Hello,</p>\n<p>The email address of your {{ app_name }} account was changed from {{ email }} to {{ new_email }}. Messages about the account now go to the new address.</p>\n<p>If you did not make this change, contact the {{ app_name }} team at once.</p>\n<p>{{ app_name }}</p>\n'),
('password_changed', 'en', 'Your {{ app_name }} password was changed',
 E'Hello,\n\nThe password of the {{ app_name }} account {{ email }} was just changed, and every device signed in to it was signed out.\n\nIf you did not make this change, reset your password at once and contact the {{ app_name }} team.\n\n{{ app_name }}\n',
 E'<p>Hello,</p>\n<p>The password of the {{ app_name }} account {{ email }} was just changed, and every device signed in to it was signed out.</p>\n<p>If you did not make this change, reset your password at once and contact the {{ app_name }} team.</p>\n<p>{{ app_name }}</p>\n');

------------------------------------------------------------------------ outbox
-- Messages to send, rendered when queued. Not dumped: bodies hold live links and codes,
-- so pending mail is lost on a restore (docs/email.md). The proxy claims due messages
-- for a lease (status sending), then marks them sent (bodies cleared) or failed.
create table baas.email_outbox (
    id bigint generated always as identity primary key,
    created_at timestamptz not null default now(),
    template text not null,
    language text not null,
    from_address text not null,
    to_address text not null,
    user_id uuid references baas.users (id) on delete set null,
    -- '<uuid7@from-domain>': a message sent again after a lost acknowledgement keeps it,
    -- so receivers can drop the duplicate.
    message_id text not null unique,
    subject text not null,
    text_body text,
    html_body text,
    status text not null default 'pending' check (status in ('pending', 'sending', 'sent', 'failed')),
    attempts integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    claimed_until timestamptz,
    last_error text check (length(last_error) <= 2000),
    sent_at timestamptz
);
create index email_outbox_due_idx on baas.email_outbox (next_attempt_at, id) where status in ('pending', 'sending');
create index email_outbox_to_idx on baas.email_outbox (to_address, created_at);
revoke all on baas.email_outbox from public;
alter table baas.email_outbox enable row level security;

-- DBAs: messages that will not be sent (a permanent refusal, or email_max_attempts
-- used up), newest first. Send one again with baas.retry_email(id).
create view baas.email_failures as
    select o.id, o.created_at, o.template, o.to_address, o.attempts, o.last_error
      from baas.email_outbox o
     where o.status = 'failed'
     order by o.created_at desc, o.id desc;
comment on view baas.email_failures is
    'DBAs: outbox messages that failed for good (permanent SMTP refusal or too many attempts), with the last error';
revoke all on baas.email_failures from public;

------------------------------------------------------------------------ rendering
-- subject, text_body and html_body of template `template` in the best language
-- (language_used):
-- exactly `language`, else its primary subtag (pt-BR -> pt), else
-- email_default_language, else en. vars: a JSON object; app_name and app_url come from
-- the settings unless vars has them. 22023 invalid_template: no such template.
create function baas._render_email(template text, language text, vars jsonb)
returns table (subject text, text_body text, html_body text, language_used text)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    s baas.settings;
    t baas.email_templates;
    v jsonb;
begin
    select * into strict s from baas.settings;
    select * into t from baas.email_templates e
     where e.name = _render_email.template
       and e.language in (_render_email.language, split_part(_render_email.language, '-', 1),
                          s.email_default_language, 'en')
     order by case e.language
                  when _render_email.language then 0
                  when split_part(_render_email.language, '-', 1) then 1
                  when s.email_default_language then 2
                  else 3 end
     limit 1;
    if not found then
        perform baas._raise('22023', 'invalid_template', format('no email template named %L', _render_email.template));
    end if;
    v := jsonb_strip_nulls(jsonb_build_object('app_name', s.app_name, 'app_url', s.app_url))
         || case when jsonb_typeof(vars) = 'object' then vars else '{}'::jsonb end;
    return query select baas._render_template(t.subject, v, false),
                        baas._render_template(t.text_body, v, false),
                        case when t.html_body is not null then baas._render_template(t.html_body, v, true) end,
                        t.language;
end
$$;

-- Queue one message (account flows call this in their own transaction): render it,
-- store it, wake the proxies (NOTIFY baas_outbox, delivered at commit). Returns its id.
-- 55000 email_not_configured: settings.email_from is not set.
create function baas._enqueue_email(template text, to_address text, user_id uuid, language text, vars jsonb)
returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    s baas.settings;
    r record;
    v_id bigint;
    v_domain text;
begin
    select * into strict s from baas.settings;
    if s.email_from is null then
        perform baas._raise('55000', 'email_not_configured',
            'email is not configured: set baas.settings.email_from (docs/email.md)');
    end if;
    select * into r from baas._render_email(template, coalesce(language, s.email_default_language), vars);
    v_domain := coalesce(substring(s.email_from from '@([^<>@\s]+)>?\s*$'), 'pgbaas');
    insert into baas.email_outbox (template, language, from_address, to_address, user_id, message_id,
                                   subject, text_body, html_body)
    values (template, r.language_used, s.email_from, to_address, user_id,
            '<' || baas.uuid7() || '@' || v_domain || '>', r.subject, r.text_body, r.html_body)
    returning id into v_id;
    perform pg_notify('baas_outbox', '');
    return v_id;
end
$$;

-- Service tokens and DBAs: send template `template` to one address (normalised as
-- sign-up does). 22023 invalid_email, invalid_template (also: the rendered message
-- would exceed 4 MB), invalid_request (vars not an object, or over 64 KB of JSON);
-- 55000 email_not_configured.
create function baas.send_email(to_address text, template text, vars jsonb default '{}', language text default null)
returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_to text;
    v_user uuid;
begin
    if to_address is null or template is null then
        perform baas._raise('22023', 'invalid_request', 'to_address and template are required');
    end if;
    if vars is not null and jsonb_typeof(vars) <> 'object' then
        perform baas._raise('22023', 'invalid_request', 'vars must be a JSON object');
    end if;
    if octet_length(vars::text) > 65536 then
        perform baas._raise('22023', 'invalid_request', 'vars must be at most 64 KB of JSON');
    end if;
    if language is not null and language !~ '^[a-z]{2,3}(-[a-z0-9]{2,8})*$' then
        perform baas._raise('22023', 'invalid_request', 'language must be a tag such as en or pt-br (lower case)');
    end if;
    v_to := baas._normalize_email(to_address);
    select u.id into v_user from baas.users u where u.email = v_to;
    return baas._enqueue_email(template, v_to, v_user, language, coalesce(vars, '{}'));
end
$$;
comment on function baas.send_email(text, text, jsonb, text) is
    'Service/DBA: queue template `template` (baas.email_templates) to one address with these variables; returns the outbox id';

------------------------------------------------------------------------ the proxy's side
-- Claim up to `max` due messages for `lease_secs` (several proxies: SKIP LOCKED, and a
-- lease keeps the others off while one sends). Counts the attempt now, so that even a
-- message that kills its sender stops after email_max_attempts: such a message, its
-- lease lapsed with no attempt left, is failed here, and so is a pending one left with
-- no attempt after a DBA lowered email_max_attempts.
create function baas._outbox_claim(max integer, lease_secs integer)
returns table (id bigint, from_address text, to_address text, message_id text, subject text,
               text_body text, html_body text, attempt integer)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_max_attempts integer;
begin
    if max is null or max not between 1 and 1000 or lease_secs is null or lease_secs not between 1 and 86400 then
        perform baas._raise('22023', 'invalid_request', 'max must be 1..1000 and lease_secs 1..86400');
    end if;
    select s.email_max_attempts into strict v_max_attempts from baas.settings s;
    update baas.email_outbox o
       set status = 'failed', claimed_until = null,
           last_error = left(case when o.status = 'sending'
                                  then 'gave up after ' || o.attempts || ' attempts: the last one never reported back (sender stopped mid-send?)'
                                  else 'gave up after ' || o.attempts || ' attempts (email_max_attempts is now ' || v_max_attempts || ')'
                             end || coalesce('; before: ' || o.last_error, ''), 2000)
     where o.id in (select x.id from baas.email_outbox x
                     where (x.status = 'pending' or (x.status = 'sending' and x.claimed_until < now()))
                       and x.attempts >= v_max_attempts
                     order by x.next_attempt_at, x.id
                     limit 100
                       for update skip locked);
    return query
    update baas.email_outbox o
       set status = 'sending', attempts = o.attempts + 1,
           claimed_until = now() + make_interval(secs => lease_secs)
     where o.id in (select x.id from baas.email_outbox x
                     where x.status in ('pending', 'sending') and x.next_attempt_at <= now()
                       and (x.claimed_until is null or x.claimed_until < now())
                       and x.attempts < v_max_attempts
                     order by x.next_attempt_at, x.id
                     limit max
                       for update skip locked)
    returning o.id, o.from_address, o.to_address, o.message_id, o.subject, o.text_body, o.html_body, o.attempts;
end
$$;

-- The server accepted attempt `attempt` of message `id`: sent, bodies cleared. A
-- report for an attempt that is no longer the latest (its lease lapsed and another
-- claim followed) changes nothing.
create function baas._outbox_sent(id bigint, attempt integer) returns void
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    update baas.email_outbox o
       set status = 'sent', sent_at = now(), claimed_until = null, text_body = null, html_body = null
     where o.id = _outbox_sent.id and o.attempts = _outbox_sent.attempt and o.status = 'sending'
$$;

-- Attempt `attempt` of message `id` failed with `error`. Permanent (a 5xx, a message
-- that cannot be built) or out of attempts: failed, kept for baas.email_failures.
-- Otherwise pending again after email_retry_base * 2^(attempts-1), at most
-- email_retry_max, ±10 % so that retries of many messages spread out.
create function baas._outbox_failed(id bigint, attempt integer, error text, permanent boolean) returns void
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    update baas.email_outbox o
       set status = case when _outbox_failed.permanent or o.attempts >= s.email_max_attempts then 'failed' else 'pending' end,
           next_attempt_at = now() + least(s.email_retry_base * power(2, least(o.attempts - 1, 30)), s.email_retry_max)
                                     * (0.9 + 0.2 * random()),
           claimed_until = null,
           last_error = left(coalesce(_outbox_failed.error, 'unknown error'), 2000)
      from baas.settings s
     where o.id = _outbox_failed.id and o.attempts = _outbox_failed.attempt and o.status = 'sending'
$$;

------------------------------------------------------------------------ administration
-- Service tokens and DBAs: send a failed message again (its attempts start afresh).
-- P0002 email_not_found: no failed message with this id.
create function baas.retry_email(id bigint) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    update baas.email_outbox o
       set status = 'pending', attempts = 0, next_attempt_at = now(), claimed_until = null
     where o.id = retry_email.id and o.status = 'failed';
    if not found then
        perform baas._raise('P0002', 'email_not_found', format('no failed email with id %s', retry_email.id));
    end if;
    perform pg_notify('baas_outbox', '');
end
$$;
comment on function baas.retry_email(bigint) is
    'Service/DBA: queue a failed outbox message again, with a fresh count of attempts';

-- Service tokens and DBAs (or cron): delete sent and failed messages older than
-- `older_than` (at least 1 day); pending ones stay. Returns how many went.
create function baas.purge_email_outbox(older_than interval) returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    n bigint;
begin
    if older_than is null or older_than < interval '1 day' then
        perform baas._raise('22023', 'invalid_request', 'older_than must be at least 1 day');
    end if;
    delete from baas.email_outbox o
     where o.status in ('sent', 'failed') and o.created_at < now() - older_than;
    get diagnostics n = row_count;
    return n;
end
$$;
comment on function baas.purge_email_outbox(interval) is
    'Service/DBA: delete sent and failed outbox messages older than the interval (at least 1 day); returns how many';
