//! API keys: the set of keys valid at once (several during a rotation), their names and
//! the topics each may read, and their constant-time verification. Keys are never
//! printed: `Debug` shows only how many.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use shared::api::FetchRequest;
use shared::{ApiError, ErrorCode, StartFrom};
use subtle::ConstantTimeEq;

/// The API keys accepted now.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeys {
    keys: Vec<Entry>,
}

/// One accepted key, with its name and the topics it may read when it has them.
#[derive(Clone, PartialEq, Eq)]
struct Entry {
    key: Vec<u8>,
    name: Option<String>,
    topics: Option<Arc<[String]>>,
}

/// Who a valid key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's fingerprint: its rate-limit bucket.
    pub fingerprint: String,
    /// The key's name; for a key given without one, `key-` and the start of its
    /// fingerprint. It labels the key's metrics; the key itself never appears.
    pub name: String,
    /// The topics it may read; `None`: every topic carried.
    pub topics: Option<Arc<[String]>>,
}

/// Why a key list or secret is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeysError {
    #[error("no API key given")]
    Empty,
    #[error("an API key is shorter than {MIN_KEY_LEN} characters")]
    TooShort,
    #[error(
        "the secret is neither a bare key nor JSON {{\"api_key\":\"…\"}}, {{\"api_keys\":[\"…\"]}} or {{\"api_keys\":[{{\"name\":\"laptop-7\",\"key\":\"…\",\"topics\":[\"orders\"]}}]}}"
    )]
    BadSecret,
    #[error(
        "key name {0:?} is not usable: give 1 to 64 letters, digits, '.', '_' or '-', e.g. laptop-7"
    )]
    BadName(String),
    #[error("key name {0:?} is given twice; each key needs a name of its own")]
    DuplicateName(String),
    #[error(
        "key {0:?} has an empty \"topics\" list: name the topics it reads, or leave \"topics\" out for all"
    )]
    NoTopics(String),
}

/// Fewest characters a key may have (a generated key has 43).
pub const MIN_KEY_LEN: usize = 16;
/// Most characters of a key's name.
const MAX_NAME_LEN: usize = 64;

/// A key as a secret or `API_KEYS_FILE` lists it: bare, or named with its topics.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Listed {
    Bare(String),
    Named(Named),
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Named {
    name: String,
    key: String,
    #[serde(default)]
    topics: Option<Vec<String>>,
}

impl ApiKeys {
    /// A comma-separated list, as `API_KEY` holds it.
    pub fn parse(list: &str) -> Result<Self, ApiKeysError> {
        Self::from_keys(list.split(',').map(str::trim).filter(|k| !k.is_empty()))
    }

    /// These keys, with no names and every topic.
    pub fn from_keys<I, S>(keys: I) -> Result<Self, ApiKeysError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::from_entries(
            keys.into_iter()
                .map(|k| Listed::Bare(k.as_ref().to_owned()))
                .collect(),
        )
    }

    /// The keys of a secret (or `API_KEYS_FILE`): a bare key, `{"api_key":"…"}`, or
    /// `{"api_keys":[…]}` whose entries are bare keys or `{"name","key","topics"}`.
    pub fn from_secret(secret: &str) -> Result<Self, ApiKeysError> {
        let secret = secret.trim();
        if !secret.starts_with('{') {
            return Self::from_keys([secret].into_iter().filter(|k| !k.is_empty()));
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Secret {
            api_key: Option<String>,
            api_keys: Option<Vec<Listed>>,
        }
        let parsed: Secret = serde_json::from_str(secret).map_err(|_| ApiKeysError::BadSecret)?;
        match (parsed.api_key, parsed.api_keys) {
            (Some(key), None) => Self::from_keys([key]),
            (None, Some(keys)) => Self::from_entries(keys),
            _ => Err(ApiKeysError::BadSecret),
        }
    }

    fn from_entries(listed: Vec<Listed>) -> Result<Self, ApiKeysError> {
        let mut keys = Vec::with_capacity(listed.len());
        for entry in listed {
            let entry = match entry {
                Listed::Bare(key) => Entry {
                    key: key.into_bytes(),
                    name: None,
                    topics: None,
                },
                Listed::Named(named) => {
                    let valid_name = (1..=MAX_NAME_LEN).contains(&named.name.len())
                        && named
                            .name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
                    if !valid_name {
                        return Err(ApiKeysError::BadName(named.name));
                    }
                    let topics = match named.topics {
                        Some(topics) => {
                            let topics: Vec<String> = topics
                                .iter()
                                .map(|t| t.trim().to_owned())
                                .filter(|t| !t.is_empty())
                                .collect();
                            if topics.is_empty() {
                                return Err(ApiKeysError::NoTopics(named.name));
                            }
                            Some(Arc::from(topics))
                        }
                        None => None,
                    };
                    Entry {
                        key: named.key.into_bytes(),
                        name: Some(named.name),
                        topics,
                    }
                }
            };
            if let Some(name) = &entry.name
                && keys.iter().any(|k: &Entry| k.name.as_ref() == Some(name))
            {
                return Err(ApiKeysError::DuplicateName(name.clone()));
            }
            keys.push(entry);
        }
        if keys.is_empty() {
            return Err(ApiKeysError::Empty);
        }
        if keys.iter().any(|k| k.key.len() < MIN_KEY_LEN) {
            return Err(ApiKeysError::TooShort);
        }
        Ok(Self { keys })
    }

    /// Who `candidate` is, when it is one of the keys. Every key is compared in constant
    /// time, so the answer takes as long whichever key (if any) matches.
    pub fn identify(&self, candidate: &str) -> Option<Caller> {
        let bytes = candidate.as_bytes();
        let mut found = None;
        for entry in &self.keys {
            if bool::from(entry.key.as_slice().ct_eq(bytes)) {
                found = Some(entry);
            }
        }
        let entry = found?;
        let fingerprint = fingerprint(candidate);
        Some(Caller {
            name: entry
                .name
                .clone()
                .unwrap_or_else(|| format!("key-{}", &fingerprint[..8])),
            fingerprint,
            topics: entry.topics.clone(),
        })
    }

    /// Whether `candidate` is one of the keys.
    pub fn verify(&self, candidate: &str) -> bool {
        self.identify(candidate).is_some()
    }

    /// How many keys are accepted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl Caller {
    /// Holds `request` to the topics this key may read: a `topic` filter or a cursor
    /// naming another is `403 forbidden_topic`; no filter reads only the key's topics. The
    /// request also carries the key's name, for the pods' per-key metrics.
    pub fn scope(&self, request: &mut FetchRequest) -> Result<(), ApiError> {
        request.key_name = Some(self.name.clone());
        let Some(allowed) = &self.topics else {
            return Ok(());
        };
        let may_read = |topic: &str| allowed.iter().any(|a| a == topic);
        let forbidden = |topic: &str, where_: &str| {
            ApiError::new(
                ErrorCode::ForbiddenTopic,
                format!(
                    "this key may not read topic {topic:?} ({where_}); it reads {}",
                    allowed.join(",")
                ),
            )
        };
        if let Some(topic) = request.topics.iter().find(|t| !may_read(t)) {
            return Err(forbidden(topic, "named in topic"));
        }
        if let Ok(StartFrom::Cursor(cursor)) = request.start()
            && let Some(topic) = cursor.topics().find(|t| !may_read(t))
        {
            return Err(forbidden(topic, "named in the cursor"));
        }
        if request.topics.is_empty() {
            request.topics = allowed.to_vec();
        }
        Ok(())
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
        let caller = keys.identify("secret-secret-secret").expect("valid key");
        assert_eq!(caller.fingerprint.len(), 32);
        assert!(!caller.fingerprint.contains("secret"));
        assert_eq!(caller.fingerprint, fingerprint("secret-secret-secret"));
        // A key without a name is named by its fingerprint, never by itself.
        assert_eq!(caller.name, format!("key-{}", &caller.fingerprint[..8]));
        assert_eq!(caller.topics, None);
        assert_eq!(keys.identify("secret-secret-secreT"), None);
    }

    const SCOPED: &str = r#"{"api_keys":[
        {"name":"laptop-7","key":"laptop-7-key-0123456789","topics":["orders","payments"]},
        {"name":"ops","key":"ops-key-0123456789abcd"},
        "bare-key-0123456789abcdef"
    ]}"#;

    #[test]
    fn named_keys_carry_their_name_and_topics() {
        let keys = ApiKeys::from_secret(SCOPED).expect("valid");
        assert_eq!(keys.len(), 3);
        let laptop = keys.identify("laptop-7-key-0123456789").expect("valid");
        assert_eq!(laptop.name, "laptop-7");
        assert_eq!(
            laptop.topics.as_deref(),
            Some(&["orders".to_owned(), "payments".to_owned()][..])
        );
        let ops = keys.identify("ops-key-0123456789abcd").expect("valid");
        assert_eq!((ops.name.as_str(), ops.topics), ("ops", None));
        assert!(keys.verify("bare-key-0123456789abcdef"));
    }

    #[test]
    fn bad_names_duplicates_and_empty_topic_lists_are_refused_by_name() {
        let entry = |name: &str, key: &str, topics: &str| {
            format!(r#"{{"name":"{name}","key":"{key}"{topics}}}"#)
        };
        let secret = |entries: &[String]| format!(r#"{{"api_keys":[{}]}}"#, entries.join(","));
        let key_a = "key-a-0123456789abcdef";
        let key_b = "key-b-0123456789abcdef";
        assert_eq!(
            ApiKeys::from_secret(&secret(&[entry("has space", key_a, "")])),
            Err(ApiKeysError::BadName("has space".into()))
        );
        assert_eq!(
            ApiKeys::from_secret(&secret(&[entry("a", key_a, ""), entry("a", key_b, "")])),
            Err(ApiKeysError::DuplicateName("a".into()))
        );
        let err =
            ApiKeys::from_secret(&secret(&[entry("a", key_a, r#","topics":[]"#)])).unwrap_err();
        assert_eq!(err, ApiKeysError::NoTopics("a".into()));
        assert!(!err.to_string().contains(key_a), "the key never appears");
        assert!(
            ApiKeys::from_secret(&secret(&[entry("a", key_a, r#","topic":["x"]"#)])).is_err(),
            "an unknown field is refused"
        );
    }

    fn fetch(query: shared::api::EventsQuery) -> FetchRequest {
        query.validate().expect("valid query")
    }

    #[test]
    fn a_scoped_key_reads_only_its_topics() {
        let keys = ApiKeys::from_secret(SCOPED).expect("valid");
        let laptop = keys.identify("laptop-7-key-0123456789").unwrap();
        // No filter: its topics.
        let mut request = fetch(Default::default());
        laptop.scope(&mut request).expect("allowed");
        assert_eq!(request.topics, ["orders", "payments"]);
        // A filter within them stays as asked.
        let mut request = fetch(shared::api::EventsQuery {
            topic: Some("payments".into()),
            ..Default::default()
        });
        laptop.scope(&mut request).expect("allowed");
        assert_eq!(request.topics, ["payments"]);
        // Another topic, by filter or by cursor: 403 forbidden_topic.
        let mut request = fetch(shared::api::EventsQuery {
            topic: Some("orders,audit".into()),
            ..Default::default()
        });
        let err = laptop.scope(&mut request).unwrap_err();
        assert_eq!(
            (err.code, err.code.status()),
            (ErrorCode::ForbiddenTopic, 403)
        );
        assert!(err.message.contains("\"audit\""), "{}", err.message);
        let mut cursor = shared::Cursor::new();
        cursor.set("orders", 0, 5);
        cursor.set("audit", 0, 9);
        let mut request = fetch(shared::api::EventsQuery {
            cursor: Some(cursor.encode()),
            ..Default::default()
        });
        let err = laptop.scope(&mut request).unwrap_err();
        assert_eq!(err.code, ErrorCode::ForbiddenTopic);
        assert!(err.message.contains("cursor"), "{}", err.message);
        // A key with no topics reads everything, as asked.
        let ops = keys.identify("ops-key-0123456789abcd").unwrap();
        let mut request = fetch(shared::api::EventsQuery {
            cursor: Some(cursor.encode()),
            ..Default::default()
        });
        ops.scope(&mut request).expect("allowed");
        assert!(request.topics.is_empty());
        assert_eq!(
            request.key_name.as_deref(),
            Some("ops"),
            "the name goes with it"
        );
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
