//! Everything the components need from librdkafka beyond rust-rdkafka itself, in one place:
//! the client configuration every client starts from, a context that keeps end-of-partition
//! out of the logs, sending through a full queue, reading partitions from metadata,
//! records as the bytes Kafka holds ([`records`]) and OAUTHBEARER tokens ([`oauth`]).

pub mod log;
#[cfg(feature = "msk-iam")]
pub mod msk_iam;
pub mod oauth;
pub mod properties;
pub mod records;

use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;

use crate::quiet_librdkafka_log;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;

pub use log::KafkaLog;
pub use oauth::OAuthTokens;
pub use properties::{Guard, KafkaProperties, KafkaPropertyArgs, LocalKafkaPropertyArgs};
pub use records::{add_header, headers_of, record_of};

/// The configuration every Kafka client of the product starts from: the bootstrap servers.
/// A cluster reached with the user's [`KafkaProperties`] is configured through
/// [`Cluster::config`] instead, which puts them on last.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config
}

/// A Kafka cluster as the product reaches it: its bootstrap servers, the user's properties
/// for it, and the OAUTHBEARER tokens its clients are given when those ask for them.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    brokers: String,
    properties: KafkaProperties,
    tokens: OAuthTokens,
    /// What its clients complain of, said once a minute per kind however many clients
    /// say it.
    log: KafkaLog,
}

impl Cluster {
    /// The cluster at `brokers` reached with `properties`; MSK IAM starts loading AWS
    /// credentials here.
    pub fn new(brokers: &str, properties: KafkaProperties) -> Self {
        Self {
            brokers: brokers.to_owned(),
            tokens: OAuthTokens::for_properties(&properties, brokers),
            properties,
            log: KafkaLog::default(),
        }
    }

    /// The user's properties.
    pub fn properties(&self) -> &KafkaProperties {
        &self.properties
    }

    /// Where its clients' OAUTHBEARER tokens come from.
    pub fn tokens(&self) -> &OAuthTokens {
        &self.tokens
    }

    /// Its clients' log.
    pub fn log(&self) -> &KafkaLog {
        &self.log
    }

    /// A consumer of this cluster with `settings` (what the product sets, under the user's
    /// properties) and `context`, handed its first OAUTHBEARER token when the cluster uses
    /// them: a consumer asks for metadata before it is ever polled, where the token would
    /// otherwise come.
    pub fn consumer<C: ConsumerContext>(
        &self,
        settings: impl FnOnce(&mut ClientConfig),
        context: C,
    ) -> Result<BaseConsumer<C>, KafkaError> {
        let consumer: BaseConsumer<C> = self.config(settings).create_with_context(context)?;
        if let Err(err) = self.tokens.prime(consumer.client()) {
            tracing::warn!(error = %err, brokers = %self.brokers, "no OAUTHBEARER token for a new consumer");
        }
        Ok(consumer)
    }

    /// The bootstrap servers.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// A client configuration for this cluster: the bootstrap servers, then what `product`
    /// sets, then the user's properties over it (those the product must decide are refused
    /// at start, see [`Guard`]).
    pub fn config(&self, product: impl FnOnce(&mut ClientConfig)) -> ClientConfig {
        let mut config = client_config(&self.brokers);
        product(&mut config);
        self.properties.apply(&mut config);
        config
    }
}

/// A cluster refused the product's credentials or certificates: what librdkafka said,
/// naming the broker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AccessRefused(pub String);

/// The OAUTHBEARER refresh callback of a context holding `$tokens`, as every context of the
/// product has it: librdkafka asks on the client's main queue, served when it is polled.
#[macro_export]
macro_rules! answer_token_refresh {
    ($tokens:ident) => {
        const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

        fn generate_oauth_token(
            &self,
            oauthbearer_config: Option<&str>,
        ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
            self.$tokens.generate(oauthbearer_config)
        }
    };
}

/// The context of a client with no callbacks of its own (a producer, an admin client): it
/// answers token refreshes and logs through its cluster's [`KafkaLog`].
#[derive(Debug, Clone, Default)]
pub struct TokenContext {
    pub tokens: OAuthTokens,
    pub log: KafkaLog,
}

impl TokenContext {
    pub fn of(cluster: &Cluster) -> Self {
        Self {
            tokens: cluster.tokens.clone(),
            log: cluster.log.clone(),
        }
    }
}

impl ClientContext for TokenContext {
    answer_token_refresh!(tokens);
    quiet_librdkafka_log!(log, "Kafka client");

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error("Kafka client", &error, reason);
    }
}

impl ConsumerContext for TokenContext {}

impl rdkafka::producer::ProducerContext for TokenContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, (): ()) {}
}

/// Notes the first refused authentication or TLS handshake.
#[derive(Default)]
struct AccessContext {
    refused: std::sync::Mutex<Option<String>>,
    tokens: OAuthTokens,
    log: KafkaLog,
}

impl ClientContext for AccessContext {
    answer_token_refresh!(tokens);
    quiet_librdkafka_log!(log, "access check");

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        let refused = matches!(
            code,
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)
        )
            // A TLS alert from the broker (a client certificate missing or refused)
            // arrives as a transport failure carrying OpenSSL's words.
            || reason.contains("SSL handshake failed")
            || reason.contains("SSL routines");
        if refused {
            self.refused
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get_or_insert_with(|| reason.to_owned());
        }
    }
}

impl ConsumerContext for AccessContext {}

/// Connects to `cluster` for at most `timeout` (blocking): a refused authentication or TLS
/// handshake, or a token that cannot be made, is an [`AccessRefused`] naming the broker (or
/// what is missing) and why. A cluster that does not answer in time is not an error: it may
/// come up later, and every client retries.
pub fn check_access(cluster: &Cluster, timeout: Duration) -> Result<(), AccessRefused> {
    cluster
        .tokens
        .ready(timeout)
        .map_err(|err| AccessRefused(err.to_string()))?;
    let config = cluster.config(|c| {
        c.set("group.id", "kafka-replicator-access-check");
    });
    let context = AccessContext {
        tokens: cluster.tokens.clone(),
        log: cluster.log.clone(),
        ..AccessContext::default()
    };
    // A configuration librdkafka refuses is reported where the real clients are made.
    let Ok(consumer) = config.create_with_context::<_, BaseConsumer<AccessContext>>(context) else {
        return Ok(());
    };
    cluster
        .tokens
        .prime(consumer.client())
        .map_err(|err| AccessRefused(err.to_string()))?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let answered = consumer
            .fetch_metadata(None, Duration::from_millis(250))
            .is_ok();
        // Serves the error callbacks.
        let _ = consumer.poll(Duration::from_millis(50));
        if let Some(reason) = consumer
            .context()
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            return Err(AccessRefused(reason));
        }
        if answered || std::time::Instant::now() >= deadline {
            return Ok(());
        }
    }
}

/// The callbacks of a consumer that reads to the end of its partitions: reaching the end is
/// how it knows it is done (rdkafka reports it to the context's error log too), not an
/// error; everything else is a warning naming `role`.
#[derive(Debug, Clone)]
pub struct EofQuietContext {
    /// What the client is, for the log: "source Kafka reader", "local Kafka state reader".
    pub role: &'static str,
    pub tokens: OAuthTokens,
    pub log: KafkaLog,
}

impl EofQuietContext {
    /// The context of a `role` consumer of `cluster`.
    pub fn of(role: &'static str, cluster: &Cluster) -> Self {
        Self {
            role,
            tokens: cluster.tokens.clone(),
            log: cluster.log.clone(),
        }
    }
}

impl ClientContext for EofQuietContext {
    answer_token_refresh!(tokens);

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.log.log(self.role, level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if !is_partition_eof(&error) {
            self.log.error(self.role, &error, reason);
        }
    }
}

impl ConsumerContext for EofQuietContext {}

/// Whether `error` only says a consumer reached the end of a partition.
pub fn is_partition_eof(error: &KafkaError) -> bool {
    matches!(error, KafkaError::PartitionEOF(_))
        || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF)
}

/// Whether a send was refused only because the producer's local queue is full.
pub fn is_queue_full(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
    )
}

/// How long a send waits for room in a full queue before it tries again; librdkafka sends
/// in the background meanwhile.
pub const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(1);

/// Sends `record` with `send` (a producer's `send` or `send_result`), and while librdkafka's
/// queue is full waits [`QUEUE_FULL_PAUSE`] and sends it again. Any other refusal is
/// returned with the record.
pub async fn send_when_room<R, T>(
    mut record: R,
    mut send: impl FnMut(R) -> Result<T, (KafkaError, R)>,
) -> Result<T, (KafkaError, R)> {
    loop {
        match send(record) {
            Err((error, back)) if is_queue_full(&error) => {
                record = back;
                tokio::time::sleep(QUEUE_FULL_PAUSE).await;
            }
            other => return other,
        }
    }
}

/// The partitions `metadata` lists for `topic`; none when the cluster does not have it (or
/// answered with an error for it).
pub fn topic_partitions(metadata: &Metadata, topic: &str) -> Vec<i32> {
    metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_is_waited_out_and_other_refusals_returned() {
        let mut attempts = 0;
        let sent = send_when_room("record", |r| {
            attempts += 1;
            if attempts < 3 {
                Err((
                    KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    r,
                ))
            } else {
                Ok(attempts)
            }
        })
        .await;
        assert_eq!(sent, Ok(3));
        let refused = send_when_room("record", |r| {
            Err::<(), _>((
                KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
                r,
            ))
        })
        .await;
        assert!(matches!(refused, Err((_, "record"))));
    }
}
