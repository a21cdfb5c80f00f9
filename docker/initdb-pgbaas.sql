create extension if not exists pgbaas;
-- The proxy logs in as baas_authenticator; the compose file passes the same password.
\getenv authenticator_password BAAS_AUTHENTICATOR_PASSWORD
alter role baas_authenticator password :'authenticator_password';
