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

-- The proxy's login role: switch role per request, read the public keys.
grant execute on function
    baas.authenticate(jsonb),
    baas._session_active(uuid, uuid),
    baas.jwks(),
    baas.auth_settings(),
    baas.claims()
  to baas_authenticator;

-- The first signing key, made at CREATE EXTENSION.
insert into baas._signing_keys (kid, secret, public_jwk)
select kid, secret, public_jwk from baas._generate_signing_key();
