//! The consumer pod's metrics, registered once in the pod's own registry and served to the
//! handlers' `/metrics` over the internal socket.

use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

/// Every metric the consumer pod emits.
#[derive(Debug, Clone)]
pub struct ConsumerMetrics {
    pub registry: Registry,
    /// `kafka_events_consumed_total{topic}`: records taken from the source into the buffer.
    pub events_consumed: IntCounterVec,
    /// `kafka_errors_total{component,kind}`: Kafka client errors seen by the pod.
    pub kafka_errors: IntCounterVec,
    /// `consumer_buffer_events`: records held now.
    pub buffer_events: IntGauge,
    /// `consumer_buffer_bytes`: bytes held now.
    pub buffer_bytes: IntGauge,
    /// `consumer_buffer_evicted_total`: records dropped from memory (still in Kafka).
    pub buffer_evicted: IntCounter,
    /// `consumer_catchup_reads_total`: reads served from Kafka because the buffer no longer
    /// (or not yet) held the offsets asked for.
    pub catchup_reads: IntCounter,
    /// `consumer_catchup_reads_resumed_total`: of those, reads that went on where the same
    /// reader's last read of the partition ended, from what it had fetched ahead.
    pub catchup_reads_resumed: IntCounter,
    /// `consumer_catchup_events_total`: records those reads put in answers.
    pub catchup_events: IntCounter,
    /// `consumer_gaps_total`: offset runs reported as gone from the source.
    pub gaps: IntCounter,
    /// `consumer_buffer_max_events` / `consumer_buffer_max_bytes`: the buffer's bounds, so
    /// dashboards can show how full it is.
    pub buffer_max_events: IntGauge,
    pub buffer_max_bytes: IntGauge,
    /// `kafka_consumer_lag{topic,partition}`: records in the source not yet consumed by the
    /// pod (from librdkafka's statistics, every few seconds).
    pub consumer_lag: IntGaugeVec,
    /// `rate_limit_buckets`: callers (IPs and keys) with a live rate-limit window.
    pub rate_limit_buckets: IntGauge,
    /// `consumer_fetches_refused_total{bound}`: fetches answered `503` because the pod was
    /// at a bound (`fetches`: concurrent fetches, `catchup_reads`: concurrent Kafka reads).
    pub fetches_refused: IntCounterVec,
    /// `consumer_fetches_cut_short_total`: fetches answered with what they had when their
    /// time budget ran out, before every partition was read.
    pub fetches_cut_short: IntCounter,
    /// `consumer_fetches_in_flight`: fetches (long-polls included) being served now.
    pub fetches_in_flight: IntGauge,
    /// `replicator_client_last_poll_seconds{key}`: when each API key (by its name) last
    /// asked this pod for events, Unix seconds.
    pub client_last_poll: GaugeVec,
    /// `replicator_client_lag_events{key,topic,partition}`: the end of each partition as
    /// this pod consumed it, less the position the key last presented there.
    pub client_lag: IntGaugeVec,
}

/// Every metric name is fixed here, once per registry: a clash is a bug.
const UNIQUE: &str = "metric names are unique within a component";

impl ConsumerMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let metrics = Self {
            events_consumed: prometheus::register_int_counter_vec_with_registry!(
                "kafka_events_consumed_total",
                "Records consumed from the source Kafka into the buffer",
                &["topic"],
                registry
            )
            .expect(UNIQUE),
            kafka_errors: prometheus::register_int_counter_vec_with_registry!(
                "kafka_errors_total",
                "Kafka client errors",
                &["component", "kind"],
                registry
            )
            .expect(UNIQUE),
            buffer_events: prometheus::register_int_gauge_with_registry!(
                "consumer_buffer_events",
                "Records held in the buffer",
                registry
            )
            .expect(UNIQUE),
            buffer_bytes: prometheus::register_int_gauge_with_registry!(
                "consumer_buffer_bytes",
                "Bytes held in the buffer",
                registry
            )
            .expect(UNIQUE),
            buffer_evicted: prometheus::register_int_counter_with_registry!(
                "consumer_buffer_evicted_total",
                "Records evicted from the buffer (still in Kafka)",
                registry
            )
            .expect(UNIQUE),
            catchup_reads: prometheus::register_int_counter_with_registry!(
                "consumer_catchup_reads_total",
                "Partition reads served from Kafka, not the buffer",
                registry
            )
            .expect(UNIQUE),
            catchup_reads_resumed: prometheus::register_int_counter_with_registry!(
                "consumer_catchup_reads_resumed_total",
                "Reads from Kafka that went on where the same reader's last read ended",
                registry
            )
            .expect(UNIQUE),
            catchup_events: prometheus::register_int_counter_with_registry!(
                "consumer_catchup_events_total",
                "Records read from Kafka, not the buffer, into answers",
                registry
            )
            .expect(UNIQUE),
            gaps: prometheus::register_int_counter_with_registry!(
                "consumer_gaps_total",
                "Offset runs reported as no longer in the source",
                registry
            )
            .expect(UNIQUE),
            buffer_max_events: prometheus::register_int_gauge_with_registry!(
                "consumer_buffer_max_events",
                "Most records the buffer holds",
                registry
            )
            .expect(UNIQUE),
            buffer_max_bytes: prometheus::register_int_gauge_with_registry!(
                "consumer_buffer_max_bytes",
                "Most bytes the buffer holds",
                registry
            )
            .expect(UNIQUE),
            consumer_lag: prometheus::register_int_gauge_vec_with_registry!(
                "kafka_consumer_lag",
                "Records in the source partition not yet consumed by the pod",
                &["topic", "partition"],
                registry
            )
            .expect(UNIQUE),
            rate_limit_buckets: prometheus::register_int_gauge_with_registry!(
                "rate_limit_buckets",
                "Callers (client IPs and API keys) with a live rate-limit window",
                registry
            )
            .expect(UNIQUE),
            fetches_refused: prometheus::register_int_counter_vec_with_registry!(
                "consumer_fetches_refused_total",
                "Fetches answered 503 because the pod was at a bound",
                &["bound"],
                registry
            )
            .expect(UNIQUE),
            fetches_cut_short: prometheus::register_int_counter_with_registry!(
                "consumer_fetches_cut_short_total",
                "Fetches answered with what they had when their time budget ran out",
                registry
            )
            .expect(UNIQUE),
            fetches_in_flight: prometheus::register_int_gauge_with_registry!(
                "consumer_fetches_in_flight",
                "Fetches (long-polls included) being served now",
                registry
            )
            .expect(UNIQUE),
            client_last_poll: prometheus::register_gauge_vec_with_registry!(
                "replicator_client_last_poll_seconds",
                "When each API key (by name) last asked for events, Unix seconds",
                &["key"],
                registry
            )
            .expect(UNIQUE),
            client_lag: prometheus::register_int_gauge_vec_with_registry!(
                "replicator_client_lag_events",
                "Events of the partition past the position each API key (by name) last presented",
                &["key", "topic", "partition"],
                registry
            )
            .expect(UNIQUE),
            registry,
        };
        // Exported at zero from the start, so dashboards and alerts see the series.
        for kind in ["consume", "client"] {
            metrics.kafka_errors.with_label_values(&["consumer", kind]);
        }
        for bound in ["fetches", "catchup_reads"] {
            metrics.fetches_refused.with_label_values(&[bound]);
        }
        metrics
    }

    /// Counts one Kafka error of the given kind.
    pub fn kafka_error(&self, kind: &str) {
        self.kafka_errors
            .with_label_values(&["consumer", kind])
            .inc();
    }
}

impl Default for ConsumerMetrics {
    fn default() -> Self {
        Self::new()
    }
}
