//! [`ClientMetrics`]: what the client tells Prometheus at `METRICS_ADDR` (events copied,
//! lag per partition, the last commit, its state), and the small HTTP listener that
//! serves them at `/metrics`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus::{Gauge, IntCounter, IntGaugeVec, Registry};
use tokio_util::sync::CancellationToken;

use crate::lag::PartitionLag;

const UNIQUE: &str = "each client metric is registered once";

/// The states `replicator_client_state{state}` takes, one of them 1 at a time.
pub const STATES: &[&str] = &[
    "starting",
    "replicating",
    "server_unavailable",
    "rate_limited",
    "rejected",
    "local_kafka_failing",
];

/// The client's metrics, in a registry of their own.
#[derive(Debug, Clone)]
pub struct ClientMetrics {
    registry: Registry,
    events: IntCounter,
    lag: IntGaugeVec,
    last_commit: Gauge,
    state: IntGaugeVec,
    pace: Gauge,
}

impl Default for ClientMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let metrics = Self {
            events: prometheus::register_int_counter_with_registry!(
                "replicator_client_events_total",
                "Events committed to local Kafka since the client started",
                registry
            )
            .expect(UNIQUE),
            lag: prometheus::register_int_gauge_vec_with_registry!(
                "replicator_client_lag_events",
                "Events of the source partition not yet committed to local Kafka",
                &["topic", "partition"],
                registry
            )
            .expect(UNIQUE),
            last_commit: prometheus::register_gauge_with_registry!(
                "replicator_client_last_commit_timestamp_seconds",
                "When the client last committed a batch (or confirmed it was at the log end), Unix seconds",
                registry
            )
            .expect(UNIQUE),
            state: prometheus::register_int_gauge_vec_with_registry!(
                "replicator_client_state",
                "1 for what the client is doing now",
                &["state"],
                registry
            )
            .expect(UNIQUE),
            pace: prometheus::register_gauge_with_registry!(
                "replicator_client_events_per_second",
                "Events committed per second over the last progress interval",
                registry
            )
            .expect(UNIQUE),
            registry,
        };
        metrics.set_state("starting");
        metrics
    }

    /// Counts `events` committed now.
    pub fn committed(&self, events: u64) {
        self.events.inc_by(events);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_commit.set(now.as_secs_f64());
    }

    /// The lag of every partition.
    pub fn lag(&self, partitions: &[PartitionLag]) {
        let mut partition = itoa::Buffer::new();
        for p in partitions {
            self.lag
                .with_label_values(&[p.topic.as_str(), partition.format(p.partition)])
                .set(i64::try_from(p.lag).unwrap_or(i64::MAX));
        }
    }

    /// The pace of the last progress interval.
    pub fn pace(&self, events_per_sec: f64) {
        self.pace.set(events_per_sec);
    }

    /// Sets `state` (one of [`STATES`]) and clears the others.
    pub fn set_state(&self, state: &str) {
        for s in STATES {
            self.state
                .with_label_values(&[s])
                .set(i64::from(*s == state));
        }
    }

    /// The Prometheus text of all of them.
    pub fn render(&self) -> String {
        shared::metrics::render(&self.registry)
    }

    /// Serves [`Self::render`] at `http://{addr}/metrics` until `shutdown`; bound before it
    /// returns, so a taken address is reported at start.
    pub async fn serve(
        self: Arc<Self>,
        addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        tracing::info!(addr = %bound, "serving the client's metrics at /metrics");
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    () = shutdown.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(conn) => conn,
                        Err(err) => {
                            tracing::warn!(error = %err, "metrics listener: accept failed");
                            continue;
                        }
                    },
                };
                let metrics = Arc::clone(&self);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: Request<hyper::body::Incoming>| {
                            let metrics = Arc::clone(&metrics);
                            async move { Ok::<_, Infallible>(metrics.answer(&request)) }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok((bound, task))
    }

    fn answer<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        let (status, content_type, body) = match (request.method(), request.uri().path()) {
            (&hyper::Method::GET, "/metrics") => (
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.render(),
            ),
            (&hyper::Method::GET, _) => (
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "the client serves only /metrics\n".to_owned(),
            ),
            _ => (
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                "GET /metrics only\n".to_owned(),
            ),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(content_type),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_carry_the_contracts_names_and_one_state_at_a_time() {
        let metrics = ClientMetrics::new();
        metrics.committed(120);
        metrics.lag(&[PartitionLag {
            topic: "orders".into(),
            partition: 3,
            committed: Some(10),
            log_end: 15,
            lag: 5,
        }]);
        metrics.set_state("replicating");
        let text = metrics.render();
        assert!(
            text.contains("replicator_client_events_total 120"),
            "{text}"
        );
        assert!(
            text.contains(r#"replicator_client_lag_events{partition="3",topic="orders"} 5"#),
            "{text}"
        );
        assert!(
            text.contains(r#"replicator_client_state{state="replicating"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"replicator_client_state{state="starting"} 0"#),
            "{text}"
        );
        let last = text
            .lines()
            .find_map(|l| l.strip_prefix("replicator_client_last_commit_timestamp_seconds "))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("a last commit time");
        assert!(last > 1.7e9, "{last}");
    }

    #[tokio::test]
    async fn metrics_are_served_at_their_address_until_shutdown() {
        let metrics = Arc::new(ClientMetrics::new());
        metrics.committed(7);
        let shutdown = CancellationToken::new();
        let (addr, task) = Arc::clone(&metrics)
            .serve("127.0.0.1:0".parse().expect("addr"), shutdown.clone())
            .await
            .expect("bound");
        let get = |path: &str| {
            let url = format!("http://{addr}{path}");
            async move { reqwest::get(url).await.expect("answer") }
        };
        let answer = get("/metrics").await;
        assert_eq!(answer.status(), 200);
        assert!(
            answer
                .text()
                .await
                .expect("text")
                .contains("replicator_client_events_total 7")
        );
        assert_eq!(get("/other").await.status(), 404);
        shutdown.cancel();
        task.await.expect("stopped");
        assert!(
            reqwest::get(format!("http://{addr}/metrics"))
                .await
                .is_err(),
            "still served"
        );
    }
}
