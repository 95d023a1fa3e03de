//! API keys: the set of keys valid at once (several during a rotation) and their
//! constant-time verification. Keys are never printed: `Debug` shows only how many.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use subtle::ConstantTimeEq;

/// The API keys accepted now.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeys {
    keys: Vec<Vec<u8>>,
}

/// Why a key list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeysError {
    #[error("no API key given")]
    Empty,
    #[error("an API key is shorter than {MIN_KEY_LEN} characters")]
    TooShort,
}

/// Shortest key accepted; generated keys are 43 characters.
pub const MIN_KEY_LEN: usize = 16;

impl ApiKeys {
    /// Parses `API_KEY`: one key, or several separated by commas.
    pub fn parse(list: &str) -> Result<Self, ApiKeysError> {
        Self::from_keys(list.split(',').map(str::trim).filter(|k| !k.is_empty()))
    }

    /// Accepts these keys.
    pub fn from_keys<I, S>(keys: I) -> Result<Self, ApiKeysError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let keys: Vec<Vec<u8>> = keys
            .into_iter()
            .map(|k| k.as_ref().as_bytes().to_vec())
            .collect();
        if keys.is_empty() {
            return Err(ApiKeysError::Empty);
        }
        if keys.iter().any(|k| k.len() < MIN_KEY_LEN) {
            return Err(ApiKeysError::TooShort);
        }
        Ok(Self { keys })
    }

    /// Whether `candidate` is one of the keys. Every key is compared in full, in constant
    /// time, so timing tells neither which key matched nor how much of one did.
    pub fn verify(&self, candidate: &str) -> bool {
        let candidate = candidate.as_bytes();
        self.keys.iter().fold(0u8, |found, key| {
            found | key.as_slice().ct_eq(candidate).unwrap_u8()
        }) == 1
    }

    /// How many keys are accepted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: an empty set cannot be built.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeys({} key(s), redacted)", self.keys.len())
    }
}

/// A new random 256-bit key, base64url (43 characters).
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_each_key_of_a_rotation() {
        let keys = ApiKeys::parse("old-key-0123456789, new-key-0123456789").expect("valid");
        assert_eq!(keys.len(), 2);
        assert!(keys.verify("old-key-0123456789"));
        assert!(keys.verify("new-key-0123456789"));
        assert!(!keys.verify("new-key-012345678"));
        assert!(!keys.verify(""));
        assert!(!keys.verify("old-key-0123456789, new-key-0123456789"));
    }

    #[test]
    fn refuses_empty_and_short_lists() {
        assert_eq!(ApiKeys::parse(" , "), Err(ApiKeysError::Empty));
        assert_eq!(ApiKeys::parse("short"), Err(ApiKeysError::TooShort));
    }

    #[test]
    fn never_shows_keys() {
        let keys = ApiKeys::parse("secret-secret-secret").expect("valid");
        assert!(!format!("{keys:?}").contains("secret"));
    }

    #[test]
    fn generated_keys_are_256_bit_and_distinct() {
        let (a, b) = (generate_key(), generate_key());
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).expect("base64url").len(), 32);
    }
}
