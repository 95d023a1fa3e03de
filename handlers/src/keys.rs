//! [`KeyStore`]: the API keys accepted now. Either fixed (`API_KEY`), or read from an AWS
//! Secrets Manager secret (`API_KEY_SECRET_ID`) or a file (`API_KEYS_FILE`) once at start
//! and again when older than `API_KEY_REFRESH_SECS`, so a rotated key works without a
//! restart. Keys are never logged.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::ApiKeys;
use crate::api_keys::ApiKeysError;
use shared::config::ConfigError;

use crate::config::KeyArgs;
use tokio::time::Instant;

/// Longest a Secrets Manager call may take.
const SECRET_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait before trying again after a failed refresh.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// Why the keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read secret {secret_id:?} from AWS Secrets Manager: {reason}")]
    Read { secret_id: String, reason: String },
    #[error("secret {secret_id:?} holds no usable API keys: {source}")]
    Keys {
        secret_id: String,
        source: ApiKeysError,
    },
    #[error("cannot read API_KEYS_FILE {}: {reason}", path.display())]
    ReadFile {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("API_KEYS_FILE {} holds no usable API keys: {source}", path.display())]
    FileKeys {
        path: std::path::PathBuf,
        source: ApiKeysError,
    },
}

/// Where the keys come from.
enum Source {
    Fixed,
    Reread {
        from: Reread,
        refresh: Duration,
        /// When the next re-read is due; held by the one request that re-reads, while the
        /// others use the keys they have.
        refreshing: tokio::sync::Mutex<Instant>,
    },
}

/// What the keys are read again from.
enum Reread {
    Secret {
        client: aws_sdk_secretsmanager::Client,
        secret_id: String,
    },
    File(std::path::PathBuf),
}

impl Reread {
    async fn read(&self) -> Result<ApiKeys, KeyStoreError> {
        match self {
            Self::Secret { client, secret_id } => read_secret(client, secret_id).await,
            Self::File(path) => read_file(path).await,
        }
    }

    /// What the log calls it.
    fn name(&self) -> String {
        match self {
            Self::Secret { secret_id, .. } => format!("secret {secret_id}"),
            Self::File(path) => format!("API_KEYS_FILE {}", path.display()),
        }
    }
}

struct Inner {
    current: RwLock<Arc<ApiKeys>>,
    source: Source,
}

/// The accepted API keys, shared by every request of a handler instance.
#[derive(Clone)]
pub struct KeyStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let from = match &self.inner.source {
            Source::Fixed => "API_KEY".to_owned(),
            Source::Reread { from, .. } => from.name(),
        };
        f.debug_struct("KeyStore")
            .field("from", &from)
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    /// Keys that never change.
    pub fn fixed(keys: ApiKeys) -> Self {
        Self {
            inner: Arc::new(Inner {
                current: RwLock::new(Arc::new(keys)),
                source: Source::Fixed,
            }),
        }
    }

    /// The keys the configuration names; a secret or a file is read now (a secret with
    /// the AWS SDK's standard configuration: `AWS_REGION`, `AWS_ENDPOINT_URL`, the
    /// credentials chain).
    pub async fn from_config(args: &KeyArgs) -> Result<Self, KeyStoreError> {
        if let Some(keys) = args.static_keys() {
            return Ok(Self::fixed(keys?));
        }
        let from = match &args.api_keys_file {
            Some(path) => Reread::File(path.clone()),
            None => {
                let timeouts = aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(SECRET_TIMEOUT)
                    .build();
                let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .timeout_config(timeouts)
                    .load()
                    .await;
                Reread::Secret {
                    client: aws_sdk_secretsmanager::Client::new(&sdk),
                    secret_id: args.api_key_secret_id.clone().unwrap_or_default(),
                }
            }
        };
        let keys = from.read().await?;
        tracing::info!(from = %from.name(), keys = keys.len(), "API keys read");
        let refresh = Duration::from_secs(args.api_key_refresh_secs);
        Ok(Self {
            inner: Arc::new(Inner {
                current: RwLock::new(Arc::new(keys)),
                source: Source::Reread {
                    from,
                    refresh,
                    refreshing: tokio::sync::Mutex::new(Instant::now() + refresh),
                },
            }),
        })
    }

    /// The keys accepted now, re-read first when they are due for a refresh (by one
    /// request; the others go on with the keys they have).
    pub async fn current(&self) -> Arc<ApiKeys> {
        if let Source::Reread {
            from,
            refresh,
            refreshing,
        } = &self.inner.source
            && let Ok(mut due) = refreshing.try_lock()
            && Instant::now() >= *due
        {
            match from.read().await {
                Ok(keys) => {
                    let changed = *self.snapshot() != keys;
                    *self
                        .inner
                        .current
                        .write()
                        .unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
                    if changed {
                        tracing::info!(from = %from.name(), "API keys changed");
                    }
                    *due = Instant::now() + *refresh;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "keeping the current API keys");
                    *due = Instant::now() + RETRY_AFTER_FAILURE.min(*refresh);
                }
            }
        }
        self.snapshot()
    }

    fn snapshot(&self) -> Arc<ApiKeys> {
        Arc::clone(
            &self
                .inner
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }
}

async fn read_secret(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> Result<ApiKeys, KeyStoreError> {
    let output = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|err| KeyStoreError::Read {
            secret_id: secret_id.to_owned(),
            reason: shared::error::error_chain(&err),
        })?;
    let text = output.secret_string().ok_or_else(|| KeyStoreError::Read {
        secret_id: secret_id.to_owned(),
        reason: "the secret has no string value".into(),
    })?;
    ApiKeys::from_secret(text).map_err(|source| KeyStoreError::Keys {
        secret_id: secret_id.to_owned(),
        source,
    })
}

async fn read_file(path: &std::path::Path) -> Result<ApiKeys, KeyStoreError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|err| KeyStoreError::ReadFile {
            path: path.to_owned(),
            reason: err.to_string(),
        })?;
    ApiKeys::from_secret(&text).map_err(|source| KeyStoreError::FileKeys {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_keys_file_is_read_again_so_a_rotated_key_works_without_a_restart() {
        let old = "old-key-0123456789abcdef";
        let new = "new-key-0123456789abcdef";
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let write = |key: &str| {
            std::fs::write(
                file.path(),
                format!(r#"{{"api_keys":[{{"name":"laptop-7","key":"{key}"}}]}}"#),
            )
            .expect("write keys")
        };
        write(old);
        let store = KeyStore::from_config(&KeyArgs {
            api_keys_file: Some(file.path().to_owned()),
            api_key_refresh_secs: 1,
            ..KeyArgs::default()
        })
        .await
        .expect("keys read");
        assert!(store.current().await.verify(old));
        write(new);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !store.current().await.verify(new) {
            assert!(
                std::time::Instant::now() < deadline,
                "the new key was not read within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!store.current().await.verify(old), "the old key is gone");
        assert!(format!("{store:?}").contains("API_KEYS_FILE"));
    }

    #[tokio::test]
    async fn a_bad_keys_file_stops_the_start_naming_the_file_never_a_key() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(
            file.path(),
            r#"{"api_keys":[{"name":"a b","key":"secret-0123456789abcdef"}]}"#,
        )
        .expect("write");
        let err = KeyStore::from_config(&KeyArgs {
            api_keys_file: Some(file.path().to_owned()),
            ..KeyArgs::default()
        })
        .await
        .expect_err("a bad name");
        let text = err.to_string();
        assert!(
            text.contains("API_KEYS_FILE") && text.contains("\"a b\""),
            "{text}"
        );
        assert!(!text.contains("secret-0123456789abcdef"), "{text}");
    }
}
