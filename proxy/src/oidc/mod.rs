//! Sign in with Apple, Google or any OpenID Connect provider (issue 16, package C): the
//! proxy's only part is fetching each provider's public keys (JWKS) into Postgres
//! (`baas._oidc_put_jwks`), which verifies ID tokens itself (sql/oidc.sql). See
//! docs/oidc.md.
pub mod jwks;

pub use jwks::{JwksFetcher, OidcConfig};
