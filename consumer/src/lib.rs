//! The consumer pod: consumes the source topics (rdkafka) into a bounded per-partition
//! [`RecordBuffer`], reads older offsets straight from Kafka, and serves both to the
//! handlers on an internal socket. Source → buffer → internal server, each its own module.

pub mod buffer;
pub mod config;
pub mod kafka;
pub mod memory;
pub mod metrics;
pub mod reader;
pub mod server;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use shared::internal::ConsumerAddr;
use shared::kafka::Cluster;

use tokio_util::sync::CancellationToken;

pub use buffer::{BufferLimits, RecordBuffer, TopicPartition};
pub use config::Config;
pub use metrics::ConsumerMetrics;
pub use reader::EventReader;

/// How often the pod re-reads the source's metadata (and so notices it is reachable).
const METADATA_EVERY: Duration = Duration::from_secs(3);

/// Longest the pod waits at start to learn whether the source accepts its credentials.
const ACCESS_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the pod could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("cannot create the Kafka consumer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Config(#[from] shared::config::ConfigError),
    #[error(
        "the source Kafka refused the pod: {0}; check the credentials and certificates in KAFKA_PROPERTIES, KAFKA_PROPERTIES_FILE or --kafka-property"
    )]
    AccessRefused(shared::kafka::AccessRefused),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: ConsumerAddr,
        source: std::io::Error,
    },
    #[error("Unix sockets are not supported on this platform: {0}")]
    UnixUnsupported(ConsumerAddr),
    #[error("the pod's {task} ended ({reason}); the pod stops so that it is restarted")]
    TaskEnded { task: &'static str, reason: String },
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener),
}

/// A consumer pod whose internal socket is bound; [`ConsumerPod::run`] starts consuming.
pub struct ConsumerPod {
    config: Config,
    /// The source Kafka with the user's properties, read and checked once, at bind.
    source: Cluster,
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
    pub async fn bind(config: Config) -> Result<Self, ConsumerError> {
        // Wrong credentials or certificates stop the start; a source not up yet does not.
        let properties = config.source.kafka_properties()?;
        let source = Cluster::new(config.source.brokers(), properties);
        let checked = source.clone();
        tokio::task::spawn_blocking(move || {
            shared::kafka::check_access(&checked, ACCESS_CHECK_TIMEOUT)
        })
        .await
        .unwrap_or(Ok(()))
        .map_err(ConsumerError::AccessRefused)?;
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
            source,
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
        let properties = self.source.properties();
        if !properties.is_empty() {
            tracing::info!(properties = %properties, "source Kafka properties");
        }
        let kafka_reader = Arc::new(kafka::KafkaReader::new(
            &self.source,
            &source.group_id,
            Arc::clone(&status),
        ));
        let kafka_source = kafka::KafkaSource::new(
            source,
            &self.source,
            Arc::clone(&buffer),
            Arc::clone(&status),
            metrics.clone(),
            Arc::clone(&kafka_reader),
        )?;
        let bounds = &self.config.bounds;
        let reader = Arc::new(EventReader::new(
            Arc::clone(&buffer),
            Arc::clone(&kafka_reader),
            topics.clone(),
            metrics.clone(),
            reader::ReadBounds {
                catchup_reads: bounds.max_catchup_reads as usize,
                read_budget: Duration::from_millis(bounds.fetch_read_budget_ms),
            },
            shutdown.clone(),
        ));
        if self.config.internal_token.is_none() && !self.local_addr.is_local() {
            tracing::warn!(addr = %self.local_addr, "INTERNAL_TOKEN is not set: whoever reaches this address reads every event; set it here and on the handlers");
        }
        let state = server::PodState {
            reader,
            buffer,
            status,
            metrics,
            limiter: Arc::new(shared::ratelimit::RateLimiter::new()),
            fetches: Arc::new(tokio::sync::Semaphore::new(
                bounds.max_concurrent_fetches as usize,
            )),
            internal_token: self.config.internal_token.clone().map(Arc::from),
        };
        let app = server::router(state);

        tracing::info!(addr = %self.local_addr, topics = ?topics, "consumer pod serving");
        let mut tasks = Tasks::new(shutdown.clone());
        tasks.spawn(
            "metadata watcher",
            kafka_reader.watch(topics, METADATA_EVERY, shutdown.clone()),
        );
        tasks.spawn("source consumer", kafka_source.run(shutdown.clone()));
        let stop = shutdown.clone();
        match self.listener {
            Listener::Tcp(l) => tasks.spawn_fallible("internal server", async move {
                axum::serve(shared::listen::no_delay(l), app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }),
            #[cfg(unix)]
            Listener::Unix(l) => tasks.spawn_fallible("internal server", async move {
                axum::serve(l, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }),
        }
        let outcome = tasks.supervise().await;
        #[cfg(unix)]
        if let ConsumerAddr::Unix(path) = &self.local_addr {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!("consumer pod stopped");
        outcome
    }
}

/// The pod's long-running tasks. Each runs until `shutdown`; one that ends before it, by a
/// panic, an error or at all, stops the others and makes the pod fail, so that the process
/// exits non-zero and its orchestrator restarts it instead of it sitting half-alive.
struct Tasks {
    set: tokio::task::JoinSet<Result<(), String>>,
    names: std::collections::HashMap<tokio::task::Id, &'static str>,
    shutdown: CancellationToken,
}

impl Tasks {
    fn new(shutdown: CancellationToken) -> Self {
        Self {
            set: tokio::task::JoinSet::new(),
            names: std::collections::HashMap::new(),
            shutdown,
        }
    }

    fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let handle = self.set.spawn(async move {
            task.await;
            Ok(())
        });
        self.names.insert(handle.id(), name);
    }

    fn spawn_fallible<E: std::fmt::Display>(
        &mut self,
        name: &'static str,
        task: impl Future<Output = Result<(), E>> + Send + 'static,
    ) {
        let handle = self
            .set
            .spawn(async move { task.await.map_err(|e| e.to_string()) });
        self.names.insert(handle.id(), name);
    }

    /// Waits for every task; the first that ended unasked is the pod's error.
    async fn supervise(mut self) -> Result<(), ConsumerError> {
        let mut failure = None;
        while let Some(joined) = self.set.join_next_with_id().await {
            let (id, outcome) = match joined {
                Ok((id, outcome)) => (id, outcome),
                Err(err) => (err.id(), Err(failure_text(err))),
            };
            let task = self.names.get(&id).copied().unwrap_or("task");
            let unasked = !self.shutdown.is_cancelled();
            if failure.is_none() && (unasked || outcome.is_err()) {
                let reason = outcome.err().unwrap_or_else(|| "it returned".to_owned());
                tracing::error!(task, reason = %reason, "a task of the consumer pod ended; stopping the pod");
                failure = Some(ConsumerError::TaskEnded { task, reason });
            }
            self.shutdown.cancel();
        }
        failure.map_or(Ok(()), Err)
    }
}

/// What a task that did not return said: its panic message, if it had one.
fn failure_text(err: tokio::task::JoinError) -> String {
    if !err.is_panic() {
        return err.to_string();
    }
    let panic = err.into_panic();
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned());
    format!("panicked: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_stops_the_others_and_fails_the_pod() {
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::new(shutdown.clone());
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen, token) = (Arc::clone(&stopped), shutdown.clone());
        tasks.spawn("steady", async move {
            token.cancelled().await;
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        tasks.spawn("source consumer", async {
            panic!("header key is not UTF-8");
        });
        let outcome = tokio::time::timeout(Duration::from_secs(10), tasks.supervise())
            .await
            .expect("supervise returns once every task ended");
        match outcome {
            Err(ConsumerError::TaskEnded { task, reason }) => {
                assert_eq!(task, "source consumer");
                assert!(reason.contains("header key is not UTF-8"), "{reason}");
            }
            other => panic!("expected the pod to fail, got {other:?}"),
        }
        assert!(
            stopped.load(std::sync::atomic::Ordering::SeqCst),
            "the others were stopped"
        );
    }

    #[tokio::test]
    async fn a_task_that_returns_unasked_fails_the_pod_too() {
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::new(shutdown.clone());
        tasks.spawn("metadata watcher", async {});
        assert!(matches!(
            tasks.supervise().await,
            Err(ConsumerError::TaskEnded {
                task: "metadata watcher",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn a_stop_asked_for_is_not_a_failure() {
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::new(shutdown.clone());
        let token = shutdown.clone();
        tasks.spawn("source consumer", async move { token.cancelled().await });
        let server_token = shutdown.clone();
        tasks.spawn_fallible("internal server", async move {
            server_token.cancelled().await;
            Ok::<(), std::io::Error>(())
        });
        shutdown.cancel();
        assert!(tasks.supervise().await.is_ok());
    }
}
