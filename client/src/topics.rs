//! [`LocalTopics`]: the topics of the local Kafka. Looks up how many partitions a
//! destination has and creates a missing one with the count it needs (the state topic
//! compacted, with one partition). A cluster that cannot create topics through the admin
//! API falls back to auto-creation on first write, with a warning.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use shared::kafka::{Cluster, OAuthTokens, TokenContext, topic_partitions};

/// How long one metadata lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the cluster may take to create a topic (and show it in its metadata).
const CREATE_TIMEOUT: Duration = Duration::from_secs(10);

/// What is known of one destination topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    Partitions(i32),
    /// Creating it failed; it is left to auto-creation and looked up again later.
    NotCreatable,
}

/// The local Kafka's topics, as far as the client needs them.
pub struct LocalTopics {
    admin: AdminClient<TokenContext>,
    /// A consumer handle for lookups: it never asks the broker to auto-create a topic.
    probe: Arc<BaseConsumer<TokenContext>>,
    tokens: OAuthTokens,
    known: Mutex<HashMap<String, Known>>,
}

impl std::fmt::Debug for LocalTopics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTopics").finish_non_exhaustive()
    }
}

impl LocalTopics {
    pub fn new(local: &Cluster) -> Result<Self, KafkaError> {
        let admin = local
            .config(|_| {})
            .create_with_context(TokenContext::of(local))?;
        let probe = local
            .config(|c| {
                c.set("allow.auto.create.topics", "false");
            })
            .create_with_context(TokenContext::of(local))?;
        Ok(Self {
            admin,
            probe: Arc::new(probe),
            tokens: local.tokens().clone(),
            known: Mutex::default(),
        })
    }

    /// The partition count of `topic`, `None` if the cluster does not have it.
    async fn lookup(&self, topic: &str) -> Result<Option<i32>, KafkaError> {
        let probe = Arc::clone(&self.probe);
        let name = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            // Serves a pending OAUTHBEARER token refresh (the probe has no group, so its
            // queue holds no records).
            probe.poll(Duration::ZERO);
            let metadata = probe.fetch_metadata(Some(&name), LOOKUP_TIMEOUT)?;
            let partitions = topic_partitions(&metadata, &name);
            Ok((!partitions.is_empty()).then_some(partitions.len() as i32))
        })
        .await
        .map_err(|_| KafkaError::Canceled)?
    }

    /// Partitions of destination `topic`, creating it with `wanted` partitions when it is
    /// missing. 0 means not known (the topic is left to auto-creation): place by key.
    pub async fn partitions(&self, topic: &str, wanted: i32) -> i32 {
        let known = self
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
            .copied();
        if let Some(Known::Partitions(n)) = known {
            return n;
        }
        let found = match self.lookup(topic).await {
            Ok(Some(n)) => Known::Partitions(n),
            Ok(None) if known.is_none() => {
                let new = NewTopic::new(topic, wanted.max(1), TopicReplication::Fixed(-1));
                match self.create(topic, &new).await {
                    Ok(n) => {
                        tracing::info!(
                            topic,
                            partitions = n,
                            "created the destination topic with the source's partition count"
                        );
                        Known::Partitions(n)
                    }
                    Err(why) => {
                        tracing::warn!(topic, reason = %why,
                            "destination topic not created; local Kafka will auto-create it and copies go by key");
                        Known::NotCreatable
                    }
                }
            }
            Ok(None) => Known::NotCreatable,
            Err(err) => {
                tracing::warn!(topic, error = %err, "cannot look up the destination topic");
                return 0;
            }
        };
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.to_owned(), found);
        match found {
            Known::Partitions(n) => n,
            Known::NotCreatable => 0,
        }
    }

    /// Creates the client's compacted single-partition state topic if it is missing.
    pub async fn ensure_state_topic(&self, topic: &str) {
        if matches!(self.lookup(topic).await, Ok(Some(_))) {
            return;
        }
        let new =
            NewTopic::new(topic, 1, TopicReplication::Fixed(-1)).set("cleanup.policy", "compact");
        match self.create(topic, &new).await {
            Ok(_) => tracing::info!(topic, "created the client's state topic"),
            Err(why) => tracing::warn!(topic, reason = %why,
                "state topic not created; relying on auto-creation"),
        }
    }

    /// Creates `new` (an existing topic counts as created) and waits until the cluster's
    /// metadata shows it; returns its partition count.
    async fn create(&self, topic: &str, new: &NewTopic<'_>) -> Result<i32, String> {
        let options = AdminOptions::new()
            .operation_timeout(Some(CREATE_TIMEOUT))
            .request_timeout(Some(CREATE_TIMEOUT));
        // An admin client's main queue is never polled, so its token is handed over here.
        self.tokens
            .prime(self.admin.inner())
            .map_err(|err| err.to_string())?;
        let created =
            tokio::time::timeout(CREATE_TIMEOUT, self.admin.create_topics([new], &options))
                .await
                .map_err(|_| format!("no answer within {CREATE_TIMEOUT:?}"))?
                .map_err(|e| e.to_string())?;
        for result in created {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(code.to_string()),
            }
        }
        let deadline = tokio::time::Instant::now() + CREATE_TIMEOUT;
        loop {
            match self.lookup(topic).await {
                Ok(Some(n)) => return Ok(n),
                _ if tokio::time::Instant::now() >= deadline => {
                    return Err("created, but not shown in the metadata in time".into());
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}
