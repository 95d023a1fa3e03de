//! [`KeyStore`]: the API keys accepted now. Either fixed (`API_KEY`) or read from an AWS
//! Secrets Manager secret (`API_KEY_SECRET_ID`) once at start and again when older than
//! `API_KEY_REFRESH_SECS`, so a rotated key works without a restart. Keys are never logged.

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
}

/// Where the keys come from.
enum Source {
    Fixed,
    Secret {
        client: aws_sdk_secretsmanager::Client,
        secret_id: String,
        refresh: Duration,
        /// Held by the one request that refreshes; the others use the keys they have.
        refreshing: tokio::sync::Mutex<Instant>,
    },
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
            Source::Secret { secret_id, .. } => format!("secret {secret_id}"),
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

    /// The keys the configuration names; a secret is read now, with the AWS SDK's standard
    /// configuration (`AWS_REGION`, `AWS_ENDPOINT_URL`, the credentials chain).
    pub async fn from_config(args: &KeyArgs) -> Result<Self, KeyStoreError> {
        if let Some(keys) = args.static_keys() {
            return Ok(Self::fixed(keys?));
        }
        let secret_id = args.api_key_secret_id.clone().unwrap_or_default();
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .operation_timeout(SECRET_TIMEOUT)
            .build();
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(timeouts)
            .load()
            .await;
        let client = aws_sdk_secretsmanager::Client::new(&sdk);
        let keys = read_secret(&client, &secret_id).await?;
        tracing::info!(secret_id = %secret_id, keys = keys.len(), "API keys read from AWS Secrets Manager");
        let refresh = Duration::from_secs(args.api_key_refresh_secs);
        Ok(Self {
            inner: Arc::new(Inner {
                current: RwLock::new(Arc::new(keys)),
                source: Source::Secret {
                    client,
                    secret_id,
                    refresh,
                    refreshing: tokio::sync::Mutex::new(Instant::now() + refresh),
                },
            }),
        })
    }

    /// The keys accepted now, re-read first when they are due for a refresh (by one
    /// request; the others go on with the keys they have).
    pub async fn current(&self) -> Arc<ApiKeys> {
        if let Source::Secret {
            client,
            secret_id,
            refresh,
            refreshing,
        } = &self.inner.source
            && let Ok(mut due) = refreshing.try_lock()
            && Instant::now() >= *due
        {
            match read_secret(client, secret_id).await {
                Ok(keys) => {
                    let changed = *self.snapshot() != keys;
                    *self
                        .inner
                        .current
                        .write()
                        .unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
                    if changed {
                        tracing::info!(secret_id = %secret_id, "API keys changed in AWS Secrets Manager");
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
