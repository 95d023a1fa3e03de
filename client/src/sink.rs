//! [`LocalKafka`]: produces events into the local Kafka with an idempotent producer
//! (`acks=all`), keeping key, value, headers and timestamp, on the source's partition
//! number when the destination has it. A batch counts as delivered only when every record
//! in it is acknowledged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::try_join_all;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use shared::Record;

/// Why a batch was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create the local Kafka producer: {0}")]
    Create(KafkaError),
    #[error("local Kafka refused a record for {topic}: {source}")]
    Delivery { topic: String, source: KafkaError },
}

/// The local Kafka, as a destination for replicated records.
pub struct LocalKafka {
    producer: FutureProducer,
    topic: Option<String>,
    partition_counts: Mutex<HashMap<String, i32>>,
}

impl std::fmt::Debug for LocalKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKafka")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl LocalKafka {
    /// A producer to `brokers`; `topic` renames every destination, else the source topic
    /// name is kept.
    pub fn new(brokers: &str, topic: Option<String>) -> Result<Self, SinkError> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Retry inside librdkafka for as long as it takes: with idempotence the broker
            // drops the retries' duplicates and order is kept, so a down local Kafka only
            // pauses the client.
            .set("message.timeout.ms", "0")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .create()
            .map_err(SinkError::Create)?;
        Ok(Self {
            producer,
            topic,
            partition_counts: Mutex::default(),
        })
    }

    fn destination<'a>(&'a self, record: &'a Record) -> &'a str {
        self.topic.as_deref().unwrap_or(&record.topic)
    }

    /// Partitions of a destination topic, looked up once (0 if it does not exist yet).
    async fn partition_count(&self, topic: &str) -> i32 {
        if let Some(n) = self
            .partition_counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(topic)
        {
            return *n;
        }
        let client = self.producer.clone();
        let name = topic.to_owned();
        let count = tokio::task::spawn_blocking(move || {
            client
                .client()
                .fetch_metadata(Some(&name), Duration::from_secs(10))
                .ok()
                .and_then(|m| {
                    m.topics()
                        .iter()
                        .find(|t| t.name() == name && t.error().is_none())
                        .map(|t| t.partitions().len() as i32)
                })
                .unwrap_or(0)
        })
        .await
        .unwrap_or(0);
        if count > 0 {
            self.partition_counts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(topic.to_owned(), count);
        }
        count
    }

    /// Produces every record and waits until all are acknowledged by local Kafka.
    pub async fn deliver(&self, records: &[Record]) -> Result<(), SinkError> {
        let mut pending = Vec::with_capacity(records.len());
        for record in records {
            let topic = self.destination(record);
            let partitions = self.partition_count(topic).await;
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for h in &record.headers {
                headers = headers.insert(Header {
                    key: &h.key,
                    value: h.value.as_deref(),
                });
            }
            let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
            if let Some(key) = record.key.as_deref() {
                out = out.key(key);
            }
            if let Some(value) = record.value.as_deref() {
                out = out.payload(value);
            }
            if let Some(ts) = record.timestamp {
                out = out.timestamp(ts);
            }
            // Same partition as the source when the destination has it; else by key.
            if record.partition < partitions {
                out = out.partition(record.partition);
            }
            // Enqueue in order; a full local queue only means waiting for it to drain.
            let delivery = loop {
                match self.producer.send_result(out) {
                    Ok(delivery) => break delivery,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        out = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((source, _)) => {
                        return Err(SinkError::Delivery {
                            topic: topic.to_owned(),
                            source,
                        });
                    }
                }
            };
            let topic = topic.to_owned();
            pending.push(async move {
                match delivery.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((source, _))) => Err(SinkError::Delivery { topic, source }),
                    Err(_) => Err(SinkError::Delivery {
                        topic,
                        source: KafkaError::Canceled,
                    }),
                }
            });
        }
        try_join_all(pending).await.map(drop)
    }

    /// Waits up to `timeout` for anything still in flight.
    pub fn flush(&self, timeout: Duration) {
        if let Err(err) = self.producer.flush(Timeout::After(timeout)) {
            tracing::warn!(error = %err, "local Kafka flush incomplete");
        }
    }
}
