-- Grants, loaded last. Functions are executable by PUBLIC by default in Postgres:
-- take that away first, then grant each door to the roles that need it.
revoke all on schema baas from public;
grant usage on schema baas to baas_anon, baas_user, baas_service, baas_authenticator;

revoke execute on all functions in schema baas from public;

grant execute on function
    baas.signup(text, text, jsonb),
    baas.login(text, text, text, text),
    baas.refresh(text),
    baas.jwks(),
    baas.auth_settings(),
    baas.claims(),
    baas.uid(),
    baas.merge_patch(jsonb, jsonb)
  to baas_anon, baas_user, baas_service;

grant execute on function
    baas.logout(),
    baas.get_user(),
    baas.update_user(jsonb, text, text),
    baas.delete_user()
  to baas_user;

-- Documents: the public functions run as the caller, so row-level security decides.
grant execute on function
    baas.principals(),
    baas.roles(),
    baas.uuid7(),
    baas.create_document(text, jsonb, jsonb, uuid),
    baas.get_document(text, text),
    baas.replace_document(text, text, jsonb, bigint),
    baas.patch_document(text, text, jsonb, bigint),
    baas.delete_document(text, text, bigint),
    baas.find(text, jsonb, text, integer, integer, uuid, text[]),
    baas.count(text, jsonb),
    baas.list_documents(text, jsonb, text, integer, integer, boolean, uuid, text[]),
    baas.get_acl(text, text),
    baas.set_acl(text, text, jsonb, bigint),
    baas.grant(text, text, text, text),
    baas.revoke(text, text, text, text),
    baas.transfer(text, text, uuid, bigint)
  to baas_anon, baas_user, baas_service;

-- The internal functions those run as the caller (SECURITY INVOKER code, the guard
-- trigger, the leakproof operators of compiled queries), and nothing else internal:
-- baas.security_lints() reports any other `_` function an API role may execute.
grant execute on function
    baas._collection_by_name(text),
    baas._claim(text),
    baas._check_collection_name(text),
    baas._document_json(baas.documents, text),
    baas._parse_document_id(text),
    baas._document_not_found(text, text),
    baas._write_document(text, text, jsonb, bigint, boolean),
    baas._explain_write_miss(baas.collections, uuid, text, bigint, text),
    baas._version_conflict(bigint, bigint),
    baas._validate_document(jsonb, jsonb),
    baas._normalize_acl(jsonb),
    baas._check_new_principals(jsonb, text[]),
    baas._acl_change(text[], text[], text[], text, text, boolean),
    baas._change_acl(text, text, text, text, boolean),
    baas._owned_document(baas.collections, text),
    baas._set_document_owner(integer, uuid, uuid, bigint),
    baas._may_create(text[]),
    baas._may_manage(uuid, text),
    baas._is_privileged(text),
    baas._find_page(text, jsonb, text, integer, integer, uuid, text[]),
    baas._find_compiled(integer, text, jsonb, text, integer, integer, uuid, text[], boolean),
    baas._find_compiled_text(integer, text, jsonb, text, integer, integer, uuid, text[], boolean),
    baas._list_documents_text(text, jsonb, text, integer, integer, boolean, uuid, text[]),
    baas._count_compiled(integer, jsonb),
    baas._btree_index_id(integer, text),
    baas._read_entries_ready(integer),
    baas._jfield(jsonb, text),
    baas._geo_within(text, text, text),
    baas._geo_covers(text, text),
    baas._jsonb_lp_eq(jsonb, jsonb),
    baas._jsonb_lp_lt(jsonb, jsonb),
    baas._jsonb_lp_le(jsonb, jsonb),
    baas._jsonb_lp_gt(jsonb, jsonb),
    baas._jsonb_lp_ge(jsonb, jsonb),
    baas._jsonb_lp_cmp(jsonb, jsonb),
    baas._jsonb_lp_contains(jsonb, jsonb)
  to baas_anon, baas_user, baas_service;

-- Administration: service tokens (and DBAs, who own everything).
grant execute on function
    baas.create_collection(text, jsonb),
    baas.drop_collection(text),
    baas.create_role(text),
    baas.drop_role(text),
    baas.add_role_member(text, uuid),
    baas.remove_role_member(text, uuid),
    baas.add_role_to_role(text, text),
    baas.remove_role_from_role(text, text),
    baas.list_roles(),
    baas.create_index(text, text, text, boolean),
    baas.drop_index(text, text, text),
    baas.get_index(text, text, text),
    baas.list_indexes(text),
    baas.collections(),
    baas.get_collection(text),
    baas.set_realtime(text, boolean),
    baas._collection_json(baas.collections)
  to baas_service;

-- Files (sql/files.sql): the public functions run as the caller (row-level security
-- decides); the upload session steps are SECURITY DEFINER and check the session's owner.
grant execute on function
    baas.upload_create(text, text, text, bigint, jsonb, jsonb, uuid, bigint, boolean, bytea),
    baas._upload_append(uuid, uuid, bigint, bytea),
    baas._upload_lease(uuid, uuid, boolean),
    baas._upload_rewind(uuid, uuid),
    baas._upload_release(uuid, uuid),
    baas.upload_status(uuid),
    baas.upload_finish(uuid),
    baas.upload_abort(uuid),
    baas.upload_file(text, text, text, bytea, jsonb, jsonb, uuid, bigint, boolean),
    baas.file_get(uuid, bigint, bigint, integer),
    baas.file_read(uuid, bigint, integer),
    baas.file_meta(uuid),
    baas.update_file(uuid, text, jsonb, bigint),
    baas.delete_file(uuid, bigint),
    baas.set_file_acl(uuid, jsonb, bigint),
    baas.get_file_acl(uuid),
    baas.file_link(uuid, integer),
    baas.thumbnail_get(uuid, integer, integer, text)
  to baas_anon, baas_user, baas_service;

-- What those run as the caller (and the documents guard, for a file's document).
grant execute on function
    baas._file_json(baas.documents, text),
    baas._file_row(uuid, bigint),
    baas._explain_file_miss(uuid, bigint, text),
    baas._blob_piece(uuid, bigint, integer),
    baas._file_max_bytes(),
    baas._raise_too_large(bigint, bigint),
    baas._quota_left(uuid),
    baas._upload_open(text, text, text, bigint, jsonb, jsonb, uuid, bigint, boolean, bytea, boolean),
    baas._upload_insert(integer, uuid, boolean, bigint, bigint, text, text, jsonb, jsonb, bytea, boolean),
    baas._upload_seal(uuid),
    baas._upload_done(uuid),
    baas._may_attach_blob(uuid, integer, uuid),
    baas._blob_file_json(uuid, text),
    baas._file_link_sign(uuid, bigint, integer),
    baas._check_file_name(text),
    baas._normalize_content_type(text),
    baas._file_type_allowed(text, text[])
  to baas_anon, baas_user, baas_service;

-- File administration: service tokens (and DBAs). The proxy's login role removes
-- expired uploads (proxy/src/files/cleanup.rs).
grant execute on function
    baas.set_bucket(text, jsonb),
    baas.file_usage(),
    baas.unreferenced_files()
  to baas_service;
grant execute on function baas.cleanup_uploads(integer), baas.cleanup_blobs(integer) to baas_authenticator;
-- Thumbnails are stored by the proxy alone, as its login role: every reader is served
-- them, so no API role may store one (sql/files.sql, baas.thumbnail_put).
grant execute on function baas.thumbnail_put(uuid, integer, integer, text, text, bytea) to baas_authenticator;

-- Live change feeds: a position reveals only a number (every API role); the log, the
-- pull and the principal lookups are the proxy's login role's alone (sql/realtime.sql).
grant execute on function baas.realtime_position() to baas_anon, baas_user, baas_service;

-- Email (sql/email.sql): service tokens (and DBAs) queue, retry and purge mail; the
-- proxy's login role claims due messages and reports how each attempt went. Rendering
-- and queueing are internal (the account flows, SECURITY DEFINER, call them).
grant execute on function
    baas.send_email(text, text, jsonb, text),
    baas.retry_email(bigint),
    baas.purge_email_outbox(interval)
  to baas_service;
grant execute on function
    baas._outbox_claim(integer, integer),
    baas._outbox_sent(bigint, integer),
    baas._outbox_failed(bigint, integer, text, boolean)
  to baas_authenticator;

-- accounts: email flows (sql/accounts.sql): anyone may ask for a mail or redeem one
-- (the answers do not tell whether an address has an account); an email change needs
-- a signed-in user. The token helpers are internal.
grant execute on function
    baas.request_verification(text, text),
    baas.request_password_reset(text, text),
    baas.request_magic_link(text, text),
    baas.verify(text, text, text, text, text),
    baas.reset_password(text, text, text, text)
  to baas_anon, baas_user, baas_service;
grant execute on function baas.request_email_change(text, text) to baas_user;
-- accounts: multi-factor (sql/accounts.sql). The second sign-in step is for anyone
-- holding a ticket; the factor functions for signed-in users; the reset for service
-- tokens (and DBAs). baas.aal() and baas.require_aal2() are for policies and functions.
grant execute on function
    baas.mfa_challenge(text, text, text),
    baas.aal(),
    baas.require_aal2()
  to baas_anon, baas_user, baas_service;
grant execute on function
    baas.mfa_enroll_totp(text),
    baas.mfa_verify_factor(uuid, text),
    baas.mfa_unenroll(uuid),
    baas.mfa_recovery_codes(),
    baas.mfa_status()
  to baas_user;
grant execute on function baas.admin_reset_mfa(uuid), baas.set_collection_options(text, jsonb) to baas_service;
-- The aal2 policies run them as the caller.
grant execute on function baas._aal2_blocked(), baas._aal2_blocked_indexes() to baas_anon, baas_user;
-- accounts: anonymous, sessions, suspension, owner delete
-- (sql/accounts.sql): anyone may try an anonymous sign-in (the setting decides), a
-- signed-in user manages its own sessions and upgrades an anonymous account; service
-- tokens (and DBAs) suspend, list and sign out accounts and purge anonymous ones.
grant execute on function
    baas.sign_in_anonymously(jsonb, text),
    baas.is_anonymous()
  to baas_anon, baas_user, baas_service;
grant execute on function
    baas.upgrade_account(text, text),
    baas.list_sessions(),
    baas.end_session(uuid),
    baas.end_other_sessions()
  to baas_user;
grant execute on function
    baas.suspend_user(uuid, text),
    baas.reactivate_user(uuid),
    baas.user_sessions(uuid),
    baas.sign_out_user(uuid),
    baas.purge_anonymous_users(interval)
  to baas_service;
-- accounts: import (sql/accounts.sql): service tokens and DBAs import accounts.
grant execute on function baas.import_users(jsonb, jsonb) to baas_service;

-- The proxy's login role: switch role per request, read the public keys.
grant execute on function
    baas.authenticate(jsonb),
    baas._session_active(uuid, uuid),
    baas._service_token_active(uuid),
    baas.jwks(),
    baas.auth_settings(),
    baas.claims(),
    baas._realtime_pull(integer),
    baas._realtime_read(bigint, integer),
    baas._realtime_window(),
    baas._realtime_role_members(uuid[]),
    baas._realtime_role_nesting(),
    baas.realtime_position()
  to baas_authenticator;

-- The proxy's sessions resolve unqualified names in pg_catalog only: nothing a
-- user could create elsewhere can shadow an operator in the SQL it sends.
alter role baas_authenticator set search_path = pg_catalog, pg_temp;

-- The first signing key, made at CREATE EXTENSION.
insert into baas._signing_keys (kid, secret, public_jwk)
select kid, secret, public_jwk from baas._generate_signing_key();

-- oidc (issue 16, package C): anyone may sign in with a provider's ID token; a signed-in
-- user links, lists and unlinks identities; service tokens (and DBAs) configure
-- providers; the proxy's login role fetches their keys (proxy/src/oidc/).
grant execute on function baas.oidc_sign_in(text, text, text, text) to baas_anon, baas_user, baas_service;
grant execute on function
    baas.link_identity(text, text, text),
    baas.unlink_identity(uuid),
    baas.identities()
  to baas_user;
grant execute on function
    baas.set_oidc_provider(text, jsonb),
    baas.drop_oidc_provider(text),
    baas.oidc_providers()
  to baas_service;
grant execute on function
    baas._oidc_jwks_targets(),
    baas._oidc_put_jwks(text, text, jsonb, integer)
  to baas_authenticator;

-- social (issue 16, package D): following, profiles and look-ups need a full account
-- (the functions check); lists and profiles are for anyone the account's settings let
-- see them.
grant execute on function
    baas.follow(uuid),
    baas.unfollow(uuid),
    baas.remove_follower(uuid),
    baas.answer_follow_request(uuid, boolean),
    baas.follow_requests(),
    baas.update_profile(text, jsonb, text, text, boolean, text),
    baas.lookup_user(text, text)
  to baas_user;
grant execute on function
    baas.followers(uuid, integer, uuid),
    baas.following(uuid, integer, uuid),
    baas.get_profile(uuid),
    baas.find_users(jsonb, text, integer, integer, uuid, text[])
  to baas_anon, baas_user, baas_service;

-- rpc (issue 17, sql/rpc.sql): the door runs as the caller; the exposed schemas are
-- read through baas._exposed_schemas. Exposing a schema is the DBA's (no grant).
grant execute on function
    baas._exposed_schemas(),
    baas._rpc_plan(text, jsonb, boolean),
    baas.rpc(text, jsonb, boolean),
    baas.raise(integer, text, text, text)
  to baas_anon, baas_user, baas_service;

-- tables (issue 17, sql/tables.sql): protected tables, served as the caller.
-- Package B: baas.protect and baas.unprotect are the DBA's (not granted); the helpers
-- answer for any caller, as the caller; service tokens may read what is exposed.
grant execute on function
    baas.has_role(text),
    baas.can_read(text, text),
    baas.can_read_file(uuid)
  to baas_anon, baas_user, baas_service;
grant select on baas.exposed, baas.protected_tables to baas_service;
-- tables over HTTP (package C): the door functions run as the caller; the compiler
-- faces are pure; _served_table reads the definitions for them.
grant execute on function
    baas._served_table(text),
    baas._table_check(jsonb),
    baas._table_exact_numbers(jsonb, jsonb),
    baas._table_explain_miss(jsonb, text[], bigint, text),
    baas._table_list_sql(jsonb, jsonb, text, text[], text),
    baas._table_get_sql(jsonb, text),
    baas._table_insert_sql(jsonb, jsonb),
    baas._table_update_sql(jsonb, text, jsonb),
    baas._table_delete_sql(jsonb, text),
    baas.table_list(text, jsonb, text, integer, integer, boolean, text, text[]),
    baas.table_get(text, text),
    baas.table_insert(text, jsonb),
    baas.table_update(text, text, jsonb, bigint),
    baas.table_delete(text, text, bigint)
  to baas_anon, baas_user, baas_service;

-- field operators (issue 18, sql/documents.sql): package A. PATCH runs as the caller
-- and applies them in its UPDATE; pure (no table access).
grant execute on function baas._apply_operators(jsonb, jsonb, timestamptz)
  to baas_anon, baas_user, baas_service;

-- references (issue 18, sql/refs.sql): package C.
-- expand and referrers run as the caller (row-level security decides what each
-- reference shows); their helpers are executed as the caller too. _ref_profiles and
-- _max_expand_references are SECURITY DEFINER: a profile through get_profile's rule,
-- and one setting.
grant execute on function
    baas._check_references(jsonb),
    baas._lower_references(jsonb),
    baas._expand_tree(text[]),
    baas._expand_checked(text[]),
    baas._ref_key(jsonb),
    baas._ref_value(jsonb, jsonb, jsonb, jsonb),
    baas._ref_profiles(uuid[]),
    baas._max_expand_references(),
    baas._max_response_bytes(),
    baas._expand_level(jsonb, integer, bigint),
    baas.expand(jsonb, text[]),
    baas.expand_page(jsonb, text[]),
    baas.referrers(text, text, text, text, integer, uuid)
  to baas_anon, baas_user, baas_service;

-- batches (issue 18, sql/batch.sql): package B.
-- baas.batch runs as the caller (each operation is the single request's function);
-- _batch_max_operations reads the cap from the private settings for it.
grant execute on function
    baas._batch_max_operations(),
    baas.batch(jsonb)
  to baas_anon, baas_user, baas_service;

-- webhooks (issue 18, sql/webhooks.sql): package D. DBA-only administration.
-- create_webhook, drop_webhook, set_webhook_active, the replays, purge_webhook_events
-- and the webhook_dead_letters view are the DBA's (not granted); the proxy's login role
-- claims due events and reports how each delivery went.
grant execute on function
    baas._webhook_claim(integer, integer, integer),
    baas._webhook_delivered(bigint, integer, integer),
    baas._webhook_failed(bigint, integer, integer, text)
  to baas_authenticator;

-- housekeeping (issue 18, sql/housekeeping.sql): package E.
-- The proxy's login role runs it every --housekeeping-secs (proxy/src/housekeeping.rs);
-- DBAs (and their pg_cron jobs) may run it too. No API role may.
grant execute on function baas.housekeeping() to baas_authenticator;

-- observability (issue 19, sql/audit.sql request ids): package A.
-- The workers' backlog counts for /metrics (proxy/src/observe.rs).
grant execute on function baas._outbox_backlog(text) to baas_authenticator;

-- shared limits (issue 19, sql/limits.sql): package D.
-- The proxy's login role counts per-account attempts (proxy/src/server.rs); no API role may.
grant execute on function baas._account_limit_hit(text, integer, integer) to baas_authenticator;

-- The Parse door (issue 21, sql/parse.sql): sign-up and sign-in by username for any
-- caller, the signed-in user for users; the proxy's login role authenticates Parse
-- session tokens (and the master key it checked) in place of baas.authenticate.
grant execute on function
    baas.parse_signup(text, text, text, jsonb, text),
    baas.parse_login(text, text, text),
    baas.parse_login_anonymous(text, text),
    baas.parse_login_auth_data(text, jsonb, text)
  to baas_anon, baas_user, baas_service;
grant execute on function baas.parse_me(), baas.parse_upgrade_anonymous(text, text, text, jsonb),
    baas.parse_set_auth_data(uuid, jsonb) to baas_user;
grant execute on function
    baas.parse_get_user(uuid),
    baas.parse_update_user(uuid, text, jsonb),
    baas.parse_save_installation(uuid, jsonb),
    baas.parse_installations(uuid, integer, integer),
    baas.parse_config(),
    baas.parse_set_config(jsonb, jsonb),
    baas.parse_roles(),
    baas.parse_save_role(text, boolean, uuid[], uuid[], text[], text[]),
    baas.parse_delete_role(text),
    baas.parse_find_users(uuid[], text[], text[], integer, integer, boolean),
    baas.parse_delete_user(uuid),
    baas.parse_scan_users(jsonb, integer, integer, boolean),
    baas.parse_sessions(uuid[], uuid[]),
    baas.parse_end_session(uuid),
    baas.parse_schemas(text),
    baas.parse_create_class(text, text[]),
    baas.parse_drop_class(text)
  to baas_anon, baas_user, baas_service;
grant execute on function baas._parse_authenticate(text, boolean), baas._parse_session_claims(text)
  to baas_authenticator;
-- parse_import_users: DBAs only since 0.15.0 (it links sign-in identities to accounts).
