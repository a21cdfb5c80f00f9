//! The running sha256 of an upload. sha2 0.11 serialises its whole state (the eight
//! words, the block count and the partial block) through `SerializableState`, so an
//! upload hashed in pieces by different backends gives the one-shot digest.
use crate::error::BaasError;
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest, Sha256};

fn malformed() -> BaasError {
    BaasError::InvalidRequest("malformed sha256 state".into())
}

fn load(state: &[u8]) -> Result<Sha256, BaasError> {
    let s = SerializedState::<Sha256>::try_from(state).map_err(|_| malformed())?;
    Sha256::deserialize(&s).map_err(|_| malformed())
}

/// The state of an empty hash.
pub fn new() -> Vec<u8> {
    Sha256::new().serialize().to_vec()
}

/// The state after hashing `data` on from `state`.
pub fn update(state: &[u8], data: &[u8]) -> Result<Vec<u8>, BaasError> {
    let mut h = load(state)?;
    h.update(data);
    Ok(h.serialize().to_vec())
}

/// The digest of everything hashed into `state`.
pub fn finish(state: &[u8]) -> Result<Vec<u8>, BaasError> {
    Ok(load(state)?.finalize().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_anywhere_equals_one_shot() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for n in [0usize, 1, 55, 63, 64, 65, 130, 300] {
            let one = Sha256::digest(&data[..n]).to_vec();
            for cut in 0..=n {
                let s = update(&update(&new(), &data[..cut]).unwrap(), &data[cut..n]).unwrap();
                assert_eq!(finish(&s).unwrap(), one, "n={n} cut={cut}");
            }
        }
    }

    #[test]
    fn malformed_state_is_refused() {
        assert_eq!(update(b"short", b"x").unwrap_err().code(), "invalid_request");
        assert_eq!(finish(&[]).unwrap_err().code(), "invalid_request");
        let mut s = new();
        s.push(0);
        assert!(finish(&s).is_err());
    }
}
