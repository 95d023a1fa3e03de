//! [`DemoProducer`]: writes demo events into the source topic at a steady rate. Each value
//! is a UTF-8 JSON object with a unique integer `seq`, a timestamp and some payload, so
//! loss and duplicates can be counted from outside.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use shared::kafka::{Cluster, TokenContext, send_when_room};
use tokio_util::sync::CancellationToken;

/// Deliveries awaited at once before producing more.
const MAX_IN_FLIGHT: usize = 10_000;
/// Keys cycle over this many devices, so events spread over partitions by key.
const DEVICES: u64 = 16;

/// Payload characters in a default demo value.
const DEFAULT_PAYLOAD: usize = 64;

/// The value of demo event `seq`.
pub fn demo_value(seq: u64, timestamp_ms: i64) -> String {
    demo_value_sized(seq, timestamp_ms, DEFAULT_PAYLOAD)
}

/// The value of demo event `seq` with `payload` filler characters.
pub fn demo_value_sized(seq: u64, timestamp_ms: i64, payload: usize) -> String {
    format!(
        "{{\"seq\":{seq},\"ts\":{timestamp_ms},\"device\":\"device-{}\",\"temperature\":{:.1},\"payload\":\"{}\"}}",
        seq % DEVICES,
        18.0 + (seq % 70) as f64 / 10.0,
        payload_of(seq, payload)
    )
}

/// `len` hex digits of a sequence seeded by `seq`: a payload that compresses about as well
/// as real JSON does (some 2×), not the hundredfold of a repeated letter, so that a shaped
/// link's figures are not flattered by compression.
fn payload_of(seq: u64, len: usize) -> String {
    // xorshift64*: cheap, deterministic, and no two seqs alike.
    let mut state = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.push_str(&format!(
            "{:016x}",
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        ));
    }
    out.truncate(len);
    out
}

/// Produces demo events into one topic.
pub struct DemoProducer {
    producer: FutureProducer<TokenContext>,
    topic: String,
    rate: u64,
    total: Option<u64>,
    payload: usize,
    first_seq: u64,
    spread: Option<i32>,
}

impl std::fmt::Debug for DemoProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoProducer")
            .field("topic", &self.topic)
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl DemoProducer {
    /// `rate` events per second (0: as fast as possible); `total` events, or forever.
    pub fn new(
        brokers: &str,
        topic: &str,
        rate: u64,
        total: Option<u64>,
    ) -> Result<Self, KafkaError> {
        Self::to_cluster(
            &Cluster::new(brokers, Default::default()),
            topic,
            rate,
            total,
        )
    }

    /// The same, into a cluster reached with properties of its own (TLS, SASL, …).
    pub fn to_cluster(
        cluster: &Cluster,
        topic: &str,
        rate: u64,
        total: Option<u64>,
    ) -> Result<Self, KafkaError> {
        let producer = cluster
            .config(|c| {
                c.set("enable.idempotence", "true").set("linger.ms", "5");
            })
            .create_with_context(TokenContext::of(cluster))?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            rate,
            total,
            payload: DEFAULT_PAYLOAD,
            first_seq: 0,
            spread: None,
        })
    }

    /// Numbers the events from `seq` on (so several runs into one topic stay distinct).
    pub fn first_seq(mut self, seq: u64) -> Self {
        self.first_seq = seq;
        self
    }

    /// Puts event `seq` on partition `seq % partitions` (keys still cycle), so every
    /// partition gets the same share; by default the key picks the partition.
    pub fn spread_over(mut self, partitions: i32) -> Self {
        self.spread = Some(partitions.max(1));
        self
    }

    /// Values of about `bytes` bytes (the benchmark's realistic 1 KiB events).
    pub fn value_bytes(mut self, bytes: usize) -> Self {
        let frame = demo_value_sized(0, 0, 0).len() + 16;
        self.payload = bytes.saturating_sub(frame).max(1);
        self
    }

    /// Readies the producer before timed events go out; see [`warm_up`].
    pub async fn warm_up(&self) -> Result<(), KafkaError> {
        warm_up(&self.producer, &self.topic).await
    }

    /// Produces until `total` is reached or `shutdown`; returns how many were acknowledged.
    pub async fn run(self, shutdown: CancellationToken) -> u64 {
        let started = tokio::time::Instant::now();
        let mut in_flight = FuturesUnordered::new();
        let mut seq = self.first_seq;
        let mut acked = 0u64;
        while self.total.is_none_or(|t| seq - self.first_seq < t) && !shutdown.is_cancelled() {
            if self.rate > 0 {
                // When the schedule says event `seq` is due.
                let due = started
                    + Duration::from_secs_f64((seq - self.first_seq) as f64 / self.rate as f64);
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep_until(due) => {}
                }
            }
            let now = now_ms();
            let value = demo_value_sized(seq, now, self.payload);
            let key = format!("device-{}", seq % DEVICES);
            let seq_text = seq.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "source",
                    value: Some("kafka-replicator-emulator"),
                })
                .insert(Header {
                    key: "seq",
                    value: Some(seq_text.as_str()),
                });
            let mut record = FutureRecord::to(&self.topic)
                .key(&key)
                .payload(&value)
                .headers(headers)
                .timestamp(now);
            if let Some(partitions) = self.spread {
                let share = seq % u64::from(partitions.unsigned_abs());
                record = record.partition(i32::try_from(share).unwrap_or(0));
            }
            // rdkafka hands a refused record back in the error, as it is.
            #[allow(clippy::result_large_err)]
            let send = |r| self.producer.send_result(r);
            let delivery = match send_when_room(record, send).await {
                Ok(delivery) => delivery,
                Err((err, _)) => {
                    tracing::warn!(error = %err, seq, "demo producer refused an event; stopping");
                    break;
                }
            };
            in_flight.push(delivery);
            while in_flight.len() >= MAX_IN_FLIGHT {
                match in_flight.next().await {
                    Some(result) => acked += count_ack(result),
                    None => break,
                }
            }
            seq += 1;
        }
        while let Some(result) = in_flight.next().await {
            acked += count_ack(result);
        }
        let _ = self.producer.flush(Timeout::After(Duration::from_secs(5)));
        tracing::info!(events = acked, "demo producer finished");
        acked
    }
}

/// Sends `topic` one record that is not a demo event (no `seq`, so counting readers skip
/// it) and waits for it, so the producer has its id, metadata and connection.
pub async fn warm_up<C: rdkafka::ClientContext + 'static>(
    producer: &FutureProducer<C>,
    topic: &str,
) -> Result<(), KafkaError> {
    let record: FutureRecord<'_, str, str> = FutureRecord::to(topic)
        .key("warm-up")
        .payload("{\"warm_up\":true}");
    producer
        .send(record, Timeout::After(Duration::from_secs(30)))
        .await
        .map(drop)
        .map_err(|(err, _)| err)
}

fn count_ack(
    result: Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
) -> u64 {
    match result {
        Ok(Ok(_)) => 1,
        Ok(Err((err, _))) => {
            tracing::warn!(error = %err, "demo event not produced");
            0
        }
        Err(_) => 0,
    }
}

/// Milliseconds since the Unix epoch, as Kafka timestamps count.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_size_asked_and_differ_by_seq() {
        assert_eq!(payload_of(1, 900).len(), 900);
        assert_eq!(payload_of(1, 0), "");
        assert_ne!(payload_of(1, 64), payload_of(2, 64));
        assert_eq!(payload_of(7, 64), payload_of(7, 64));
        assert!(payload_of(3, 64).bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
