//! Email normalisation: the rules live in the `pgbaas-email` crate (email/src/lib.rs),
//! shared with the proxy's per-account rate limits; here they answer in the extension's
//! error type (22023 invalid_email).

use crate::error::BaasError;

pub fn normalize(raw: &str) -> Result<String, BaasError> {
    pgbaas_email::normalize(raw).map_err(|_| BaasError::InvalidEmail)
}
