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
    #[error(
        "the secret is neither a bare key nor JSON {{\"api_key\":\"…\"}} or {{\"api_keys\":[\"…\"]}}"
    )]
    BadSecret,
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

    /// Parses a Secrets Manager secret string: a bare key, `{"api_key":"…"}` or
    /// `{"api_keys":["…","…"]}`.
    pub fn from_secret(secret: &str) -> Result<Self, ApiKeysError> {
        let secret = secret.trim();
        if !secret.starts_with('{') {
            return Self::from_keys([secret].into_iter().filter(|k| !k.is_empty()));
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Secret {
            api_key: Option<String>,
            api_keys: Option<Vec<String>>,
        }
        let parsed: Secret = serde_json::from_str(secret).map_err(|_| ApiKeysError::BadSecret)?;
        match (parsed.api_key, parsed.api_keys) {
            (Some(key), None) => Self::from_keys([key]),
            (None, Some(keys)) => Self::from_keys(keys),
            _ => Err(ApiKeysError::BadSecret),
        }
    }

    /// Which of the keys `candidate` is, as a short fingerprint (a hash prefix that names
    /// the key in rate-limit buckets without revealing it), or `None` if it is none of them.
    /// Every key is compared in full, in constant time.
    pub fn identify(&self, candidate: &str) -> Option<String> {
        self.verify(candidate).then(|| fingerprint(candidate))
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

/// The first 128 bits of a key's SHA-256, hex: names a key without revealing it.
pub fn fingerprint(key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
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
    fn secrets_come_in_three_shapes() {
        let key = "k0123456789abcdefghij";
        for text in [
            key.to_owned(),
            format!("  {key}\n"),
            format!(r#"{{"api_key":"{key}"}}"#),
            format!(r#"{{"api_keys":["{key}","other-0123456789abcdef"]}}"#),
        ] {
            let keys = ApiKeys::from_secret(&text).expect(&text);
            assert!(keys.verify(key), "{text}");
        }
        for bad in [
            "",
            "{}",
            r#"{"api_key":"k0123456789abcdefghij","api_keys":[]}"#,
            r#"{"key":"k0123456789abcdefghij"}"#,
            "{not json",
        ] {
            assert!(ApiKeys::from_secret(bad).is_err(), "{bad}");
        }
        assert_eq!(
            ApiKeys::from_secret(r#"{"api_keys":["short"]}"#),
            Err(ApiKeysError::TooShort)
        );
    }

    #[test]
    fn fingerprints_name_keys_without_showing_them() {
        let keys = ApiKeys::parse("secret-secret-secret").expect("valid");
        let id = keys.identify("secret-secret-secret").expect("valid key");
        assert_eq!(id.len(), 32);
        assert!(!id.contains("secret"));
        assert_eq!(id, fingerprint("secret-secret-secret"));
        assert_eq!(keys.identify("secret-secret-secreT"), None);
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
