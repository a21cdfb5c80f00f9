-- Grants, loaded last. Functions are executable by PUBLIC by default in Postgres:
-- take that away first, then grant each door to the roles that need it.
revoke all on schema baas from public;
grant usage on schema baas to baas_anon, baas_user, baas_service, baas_authenticator;

revoke execute on all functions in schema baas from public;

grant execute on function
    baas.signup(text, text, jsonb),
    baas.login(text, text),
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

-- Documents: everything runs as the caller, so row-level security decides.
grant execute on function
    baas.principals(),
    baas.roles(),
    baas.uuid7(),
    baas.check_collection_name(text),
    baas.check_role_name(text),
    baas.normalize_principal(text),
    baas.normalize_acl(jsonb),
    baas.acl_change(text[], text[], text[], text, text, boolean),
    baas.normalize_collection_options(jsonb),
    baas.validate_document(jsonb, jsonb),
    baas.document_json(baas.documents, text),
    baas.collection_json(baas.collections),
    baas.collection_by_name(text),
    baas.parse_document_id(text),
    baas.document_not_found(text, text),
    baas.explain_write_miss(baas.collections, uuid, text, bigint, text),
    baas.owned_document(baas.collections, text),
    baas.change_acl(text, text, text, text, boolean),
    baas.caller_role(),
    baas.privileged_caller(),
    baas.set_document_owner(integer, uuid, uuid),
    baas.create_document(text, jsonb, jsonb, uuid),
    baas.get_document(text, text),
    baas.write_document(text, text, jsonb, bigint, boolean),
    baas.replace_document(text, text, jsonb, bigint),
    baas.patch_document(text, text, jsonb, bigint),
    baas.delete_document(text, text, bigint),
    baas.find(text, jsonb, text, integer, integer, uuid, text[]),
    baas.find_page(text, jsonb, text, integer, integer, uuid, text[]),
    baas.find_compiled(integer, text, jsonb, text, integer, integer, uuid, text[]),
    baas.count_compiled(integer, jsonb),
    baas.count(text, jsonb),
    baas.btree_index_id(integer, text),
    baas.list_documents(text, jsonb, text, integer, integer, boolean, uuid, text[]),
    baas.compile_query(jsonb, text, jsonb, boolean),
    baas.jfield(jsonb, text),
    baas.jsonb_lp_eq(jsonb, jsonb),
    baas.jsonb_lp_lt(jsonb, jsonb),
    baas.jsonb_lp_le(jsonb, jsonb),
    baas.jsonb_lp_gt(jsonb, jsonb),
    baas.jsonb_lp_ge(jsonb, jsonb),
    baas.jsonb_lp_cmp(jsonb, jsonb),
    baas.jsonb_lp_contains(jsonb, jsonb),
    baas.check_fields(text[]),
    baas.index_expression(text),
    baas.get_acl(text, text),
    baas.set_acl(text, text, jsonb),
    baas.grant(text, text, text, text),
    baas.revoke(text, text, text, text),
    baas.transfer(text, text, uuid)
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
    baas.create_index(text, text, text),
    baas.drop_index(text, text, text),
    baas.list_indexes(text),
    baas.collections(),
    baas.get_collection(text)
  to baas_service;

-- The proxy's login role: switch role per request, read the public keys.
grant execute on function
    baas.authenticate(jsonb),
    baas._session_active(uuid, uuid),
    baas._service_token_active(uuid),
    baas.jwks(),
    baas.auth_settings(),
    baas.claims()
  to baas_authenticator;

-- The proxy's sessions resolve unqualified names in pg_catalog only: nothing a
-- user could create elsewhere can shadow an operator in the SQL it sends.
alter role baas_authenticator set search_path = pg_catalog, pg_temp;

-- The first signing key, made at CREATE EXTENSION.
insert into baas._signing_keys (kid, secret, public_jwk)
select kid, secret, public_jwk from baas._generate_signing_key();
