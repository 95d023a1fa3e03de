//! The consumer pod: consumes the source topics (rdkafka) into a bounded per-partition
//! [`RecordBuffer`], reads older offsets straight from Kafka, and serves both to the
//! handlers on an internal socket. Source → buffer → internal server, each its own module.

pub mod buffer;
pub mod kafka;
pub mod metrics;
pub mod reader;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use shared::config::{ConsumerAddr, ConsumerConfig};
use tokio_util::sync::CancellationToken;

pub use buffer::{BufferLimits, RecordBuffer, TopicPartition};
pub use metrics::ConsumerMetrics;
pub use reader::EventReader;

/// How often the pod re-reads the source's metadata (and so notices it is reachable).
const METADATA_EVERY: Duration = Duration::from_secs(3);

/// Why the pod could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("cannot create the Kafka consumer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: ConsumerAddr,
        source: std::io::Error,
    },
    #[error("Unix sockets are not supported on this platform: {0}")]
    UnixUnsupported(ConsumerAddr),
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener),
}

/// A consumer pod whose internal socket is bound; [`ConsumerPod::run`] starts consuming.
pub struct ConsumerPod {
    config: ConsumerConfig,
    listener: Listener,
    local_addr: ConsumerAddr,
}

impl std::fmt::Debug for ConsumerPod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerPod")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl ConsumerPod {
    /// Binds the internal socket (port 0 picks a free port).
    pub async fn bind(config: ConsumerConfig) -> Result<Self, ConsumerError> {
        let addr = config.consumer_addr.clone();
        let bind_err = |source| ConsumerError::Bind {
            addr: addr.clone(),
            source,
        };
        let (listener, local_addr) = match &addr {
            ConsumerAddr::Tcp(host_port) => {
                let l = tokio::net::TcpListener::bind(host_port.as_str())
                    .await
                    .map_err(bind_err)?;
                let local = l.local_addr().map_err(bind_err)?;
                (Listener::Tcp(l), ConsumerAddr::Tcp(local.to_string()))
            }
            #[cfg(unix)]
            ConsumerAddr::Unix(path) => {
                // A socket file left by a previous run would make bind fail.
                if path.exists() {
                    let _ = std::fs::remove_file(path);
                }
                let l = tokio::net::UnixListener::bind(path).map_err(bind_err)?;
                (Listener::Unix(l), addr.clone())
            }
            #[cfg(not(unix))]
            ConsumerAddr::Unix(_) => return Err(ConsumerError::UnixUnsupported(addr)),
        };
        Ok(Self {
            config,
            listener,
            local_addr,
        })
    }

    /// The address the handlers reach this pod at.
    pub fn local_addr(&self) -> &ConsumerAddr {
        &self.local_addr
    }

    /// Consumes and serves until `shutdown`, then commits and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ConsumerError> {
        let source = &self.config.source;
        let topics = source.topics();
        let metrics = ConsumerMetrics::new();
        let limits = BufferLimits {
            max_events: self.config.buffer.buffer_max_events,
            max_bytes: self.config.buffer.buffer_max_bytes,
        };
        metrics
            .buffer_max_events
            .set(i64::try_from(self.config.buffer.buffer_max_events).unwrap_or(i64::MAX));
        metrics
            .buffer_max_bytes
            .set(i64::try_from(self.config.buffer.buffer_max_bytes).unwrap_or(i64::MAX));
        let buffer = Arc::new(RecordBuffer::new(limits, metrics.clone()));
        let status = Arc::new(kafka::SourceStatus::default());
        let kafka_reader = Arc::new(kafka::KafkaReader::new(
            source.brokers(),
            &source.group_id,
            Arc::clone(&status),
        ));
        let kafka_source = kafka::KafkaSource::new(
            source,
            Arc::clone(&buffer),
            Arc::clone(&status),
            metrics.clone(),
        )?;
        let reader = Arc::new(EventReader::new(
            Arc::clone(&buffer),
            Arc::clone(&kafka_reader),
            topics.clone(),
            metrics.clone(),
        ));
        let state = server::PodState {
            reader,
            buffer,
            status,
            metrics,
            limiter: Arc::new(shared::ratelimit::RateLimiter::new()),
        };
        let app = server::router(state);

        tracing::info!(addr = %self.local_addr, topics = ?topics, "consumer pod serving");
        let watcher = tokio::spawn(kafka_reader.watch(topics, METADATA_EVERY, shutdown.clone()));
        let consuming = tokio::spawn(kafka_source.run(shutdown.clone()));
        let stop = shutdown.clone();
        let served = match self.listener {
            Listener::Tcp(l) => {
                axum::serve(shared::listen::no_delay(l), app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }
            #[cfg(unix)]
            Listener::Unix(l) => {
                axum::serve(l, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }
        };
        if let Err(err) = served {
            tracing::error!(error = %err, "internal server failed");
        }
        shutdown.cancel();
        let _ = tokio::join!(watcher, consuming);
        #[cfg(unix)]
        if let ConsumerAddr::Unix(path) = &self.local_addr {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!("consumer pod stopped");
        Ok(())
    }
}
