//! Sign in with Apple, Google or any OpenID Connect provider (issue 16, package C):
//! the ID token checks. The flows (providers, identities, linking) are SQL in
//! sql/oidc.sql; the key sets are fetched by the proxy (proxy/src/oidc/).
pub mod verify;
