//! The two Kafka clusters of a local run: librdkafka's in-process mock cluster (the default,
//! reachable from other processes while this one lives) or a real cluster by its bootstrap
//! address. Both can create topics and report their bootstrap servers.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, DefaultProducerContext, Producer};
use rdkafka::types::RDKafkaErrorCode;
use shared::kafka::{Cluster, KafkaProperties, TokenContext};

/// Id of the mock cluster's only broker.
const MOCK_BROKER_ID: i32 = 1;

/// `fetch.wait.max.ms` on the mock cluster; see [`KafkaCluster::fetch_wait_ms`].
const MOCK_FETCH_WAIT_MS: u32 = 5;

/// A Kafka cluster the emulator uses.
#[derive(Debug)]
pub enum KafkaCluster {
    /// An in-process mock cluster, alive as long as this value.
    Mock(MockKafka),
    /// A real cluster (Apache Kafka, MSK, …) at these bootstrap servers, with the user's
    /// properties for it.
    External(Cluster),
}

impl KafkaCluster {
    /// A new mock cluster, or the given brokers.
    pub fn mock_or(brokers: Option<&str>) -> Result<Self, KafkaError> {
        match brokers {
            Some(b) => Ok(Self::External(Cluster::new(b, KafkaProperties::default()))),
            None => MockKafka::start().map(Self::Mock),
        }
    }

    /// A real cluster reached with `properties` (TLS, SASL, …); a mock cluster takes none.
    pub fn with_properties(self, properties: KafkaProperties) -> Self {
        match self {
            Self::External(cluster) => Self::External(Cluster::new(cluster.brokers(), properties)),
            mock @ Self::Mock(_) => mock,
        }
    }

    /// Bootstrap servers for any Kafka client, in this process or another.
    pub fn bootstrap(&self) -> &str {
        match self {
            Self::Mock(m) => &m.bootstrap,
            Self::External(cluster) => cluster.brokers(),
        }
    }

    /// The cluster as a Kafka client reaches it.
    pub fn cluster(&self) -> Cluster {
        match self {
            Self::Mock(m) => Cluster::new(&m.bootstrap, KafkaProperties::default()),
            Self::External(cluster) => cluster.clone(),
        }
    }

    /// The `fetch.wait.max.ms` its consumers should use. The mock cluster holds an empty
    /// fetch this long even when data arrives meanwhile (real brokers answer at once), so
    /// there it is kept short: it bounds the latency it adds.
    pub fn fetch_wait_ms(&self) -> u32 {
        match self {
            Self::Mock(_) => MOCK_FETCH_WAIT_MS,
            Self::External(_) => consumer::config::DEFAULT_FETCH_WAIT_MS,
        }
    }

    /// Delays every answer of the mock cluster's broker by `delay`, as a busy or distant
    /// Kafka would. A real cluster is left as it is: it is refused.
    pub fn slow_down(&self, delay: Duration) -> Result<(), KafkaError> {
        match self {
            Self::Mock(m) => m.slow_down(delay),
            Self::External(_) => Err(KafkaError::MockCluster(RDKafkaErrorCode::InvalidArgument)),
        }
    }

    /// `mock` or `external`, for logs and test output.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Mock(_) => "librdkafka mock cluster",
            Self::External(_) => "external Kafka",
        }
    }

    /// Creates a topic; one that already exists is fine.
    pub async fn create_topic(&self, name: &str, partitions: i32) -> Result<(), KafkaError> {
        self.create_replicated_topic(name, partitions, 1).await
    }

    /// Creates topic `name` with `replicas` copies of each partition (a mock cluster keeps
    /// one).
    pub async fn create_replicated_topic(
        &self,
        name: &str,
        partitions: i32,
        replicas: i32,
    ) -> Result<(), KafkaError> {
        match self {
            Self::Mock(m) => m.create_topic(name, partitions),
            Self::External(cluster) => {
                let admin: AdminClient<TokenContext> = cluster
                    .config(|_| {})
                    .create_with_context(TokenContext::of(cluster))?;
                // An admin client's main queue, where librdkafka asks for tokens, is never
                // polled: it is handed its token here.
                cluster.tokens().prime(admin.inner()).map_err(|err| {
                    tracing::warn!(error = %err, "no OAUTHBEARER token for topic creation");
                    KafkaError::AdminOp(RDKafkaErrorCode::SaslAuthenticationFailed)
                })?;
                let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replicas));
                let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
                for result in admin.create_topics([&topic], &options).await? {
                    match result {
                        Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((_, code)) => return Err(KafkaError::AdminOp(code)),
                    }
                }
                Ok(())
            }
        }
    }
}

impl std::fmt::Debug for MockKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockKafka")
            .field("bootstrap", &self.bootstrap)
            .finish_non_exhaustive()
    }
}

/// librdkafka's mock cluster, owned through a producer handle that created it.
pub struct MockKafka {
    handle: BaseProducer,
    bootstrap: String,
}

impl MockKafka {
    /// Starts a one-broker mock cluster listening on loopback.
    pub fn start() -> Result<Self, KafkaError> {
        let handle: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .create()?;
        let bootstrap = cluster_of(&handle)?.bootstrap_servers();
        no_rebalance_delay(&handle);
        Ok(Self { handle, bootstrap })
    }

    fn create_topic(&self, name: &str, partitions: i32) -> Result<(), KafkaError> {
        cluster_of(&self.handle)?.create_topic(name, partitions, 1)
    }

    fn slow_down(&self, delay: Duration) -> Result<(), KafkaError> {
        cluster_of(&self.handle)?.broker_round_trip_time(MOCK_BROKER_ID, delay)
    }
}

/// The mock cluster `handle` created.
fn cluster_of(
    handle: &BaseProducer,
) -> Result<MockCluster<'_, DefaultProducerContext>, KafkaError> {
    handle
        .client()
        .mock_cluster()
        .ok_or(KafkaError::MockCluster(RDKafkaErrorCode::Fail))
}

/// The mock cluster makes every group join wait 3 s (as `group.initial.rebalance.delay.ms`
/// does on a real broker); the emulator has no use for that wait.
#[allow(unsafe_code)]
fn no_rebalance_delay(handle: &BaseProducer) {
    use rdkafka::bindings::{
        rd_kafka_handle_mock_cluster, rd_kafka_mock_group_initial_rebalance_delay_ms,
    };
    // SAFETY: `native_ptr` is the live handle that owns the mock cluster; the returned
    // cluster pointer is valid while that handle lives, which outlasts this call.
    unsafe {
        let cluster = rd_kafka_handle_mock_cluster(handle.client().native_ptr());
        if !cluster.is_null() {
            rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slowed_mock_answers_no_sooner_than_its_delay() {
        let cluster = KafkaCluster::mock_or(None).unwrap();
        let delay = Duration::from_millis(300);
        cluster.slow_down(delay).unwrap();
        let client: BaseProducer = shared::kafka::client_config(cluster.bootstrap())
            .create()
            .unwrap();
        let asked = std::time::Instant::now();
        client
            .client()
            .fetch_metadata(None, Duration::from_secs(10))
            .unwrap();
        assert!(
            asked.elapsed() >= delay,
            "answered in {:?}",
            asked.elapsed()
        );
    }

    #[test]
    fn a_real_cluster_is_not_slowed() {
        let cluster = KafkaCluster::mock_or(Some("127.0.0.1:9")).unwrap();
        assert!(cluster.slow_down(Duration::from_millis(1)).is_err());
    }
}
