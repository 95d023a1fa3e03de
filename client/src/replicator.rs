//! [`Replicator`]: the polling loop. Fetch after the committed cursor, then write the batch
//! and the cursor that follows it to local Kafka in one transaction; on any failure retry
//! with capped, jittered backoff, logging one line per change of state, never crashing.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use shared::api::EventsResponse;
use shared::config::{ClientConfig, StartPosition};
use shared::{Cursor, Record, StartFrom};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ClientError;
use crate::api::{EventsApi, FetchError};
use crate::backoff::Backoff;
use crate::destination::Destination;
use crate::sink::{LocalKafka, SinkError};

/// How long a stopping client waits for the batch in flight.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

/// What the client is doing, for one log line per change.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Health {
    Starting,
    Replicating,
    ServerUnavailable(String),
    Rejected(String),
    LocalKafkaFailing(String),
}

/// Totals since start, for progress lines, tests and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Local Kafka is connected and the committed position read: fetching has begun.
    pub connected: bool,
    pub events: u64,
    pub polls: u64,
}

/// The client: API in, local Kafka out, position committed with each batch.
#[derive(Debug)]
pub struct Replicator {
    api: EventsApi,
    brokers: String,
    destination: Destination,
    state_topic: String,
    client_id: String,
    from: StartPosition,
    interval: Duration,
    limit: u32,
    health: Health,
    progress: Progress,
    watchers: tokio::sync::watch::Sender<Progress>,
    backoff: Backoff,
}

impl Replicator {
    /// Builds the client from validated configuration; nothing is contacted yet.
    pub fn new(config: &ClientConfig) -> Result<Self, ClientError> {
        let api = EventsApi::new(
            config.server_url.as_deref().unwrap_or_default(),
            &config.api_prefix,
            config.api_key.as_deref().unwrap_or_default(),
        )
        .map_err(ClientError::Http)?;
        Ok(Self {
            api,
            brokers: config.kafka_brokers.clone().unwrap_or_default(),
            destination: Destination::from_config(config),
            state_topic: config.state_topic.clone(),
            client_id: config.client_id.clone(),
            from: config.from,
            interval: Duration::from_millis(config.interval_ms),
            limit: config.batch_limit,
            health: Health::Starting,
            progress: Progress::default(),
            watchers: tokio::sync::watch::Sender::new(Progress::default()),
            backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(30)),
        })
    }

    /// Follows [`Progress`] as the client runs.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<Progress> {
        self.watchers.subscribe()
    }

    fn publish(&self) {
        self.watchers.send_replace(self.progress);
    }

    fn set_health(&mut self, health: Health) {
        if health == self.health {
            return;
        }
        match &health {
            Health::Starting => {}
            Health::Replicating => tracing::info!(events = self.progress.events, "replicating"),
            Health::ServerUnavailable(why) => {
                tracing::warn!(reason = %why, "server unavailable; retrying with backoff")
            }
            Health::Rejected(why) => tracing::error!(
                reason = %why,
                "server refused the request; retrying with backoff until fixed"
            ),
            Health::LocalKafkaFailing(why) => {
                tracing::warn!(reason = %why, "local Kafka not accepting; retrying")
            }
        }
        self.health = health;
    }

    /// Connects to local Kafka and reads the committed position, retrying until it works
    /// or `shutdown`.
    async fn connect(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<Option<(LocalKafka, StartFrom)>, ClientError> {
        loop {
            let attempt = async {
                let sink = LocalKafka::connect(
                    &self.brokers,
                    self.destination.clone(),
                    &self.state_topic,
                    &self.client_id,
                )
                .await?;
                let cursor = sink.load_cursor().await?;
                Ok::<_, SinkError>((sink, cursor))
            };
            let result = tokio::select! {
                () = shutdown.cancelled() => return Ok(None),
                r = attempt => r,
            };
            match result {
                Ok((sink, Some(cursor))) => {
                    tracing::info!(state_topic = %self.state_topic, client_id = %self.client_id, "resuming from the committed position");
                    return Ok(Some((sink, StartFrom::Cursor(cursor))));
                }
                Ok((sink, None)) => {
                    tracing::info!(from = ?self.from, "no committed position; starting from {:?}", self.from);
                    let start = match self.from {
                        StartPosition::Earliest => StartFrom::Earliest,
                        StartPosition::Latest => StartFrom::Latest,
                    };
                    return Ok(Some((sink, start)));
                }
                Err(err @ SinkError::BadState { .. }) => return Err(err.into()),
                Err(err) => {
                    self.set_health(Health::LocalKafkaFailing(err.to_string()));
                    let pause = self.backoff.next_delay();
                    sleep(pause, shutdown).await;
                }
            }
        }
    }

    /// Runs until `shutdown`; returns the totals.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<Progress, ClientError> {
        let Some((mut sink, mut position)) = self.connect(&shutdown).await? else {
            return Ok(self.progress);
        };
        self.progress.connected = true;
        self.publish();
        let mut last_progress_log = Instant::now();
        // The next batch, asked for while the previous one was being written.
        let mut ahead: Option<PendingFetch> = None;
        while !shutdown.is_cancelled() {
            let started = Instant::now();
            let fetch = ahead.take().unwrap_or_else(|| self.fetch_from(&position));
            let fetched = tokio::select! {
                () = shutdown.cancelled() => break,
                r = fetch => r,
            };
            self.progress.polls += 1;
            let batch = match fetched {
                Ok(batch) => batch,
                Err(FetchError::Transient {
                    message,
                    retry_after,
                }) => {
                    self.set_health(Health::ServerUnavailable(message));
                    let pause = retry_after
                        .unwrap_or_default()
                        .max(self.backoff.next_delay());
                    sleep(pause, &shutdown).await;
                    continue;
                }
                Err(err @ FetchError::Rejected { .. }) => {
                    self.set_health(Health::Rejected(err.to_string()));
                    let pause = self.backoff.next_delay();
                    sleep(pause, &shutdown).await;
                    continue;
                }
            };
            for gap in &batch.gaps {
                tracing::warn!(topic = %gap.topic, partition = gap.partition, from = gap.from, to = gap.to,
                    "source no longer holds these offsets (retention); skipped");
            }
            let next = Cursor::decode(&batch.next_cursor).map_err(ClientError::BadCursor)?;
            let count = batch.events.len();
            let records: Vec<Record> = batch
                .events
                .into_iter()
                .map(shared::Event::into_record)
                .collect::<Result<_, _>>()?;
            let moved = !matches!(&position, StartFrom::Cursor(c) if *c == next);
            let fetched_at = Instant::now();
            if count > 0 || moved {
                // The batch after this one is fetched while this one is written; it is used
                // only once this one committed, so a failed write never skips anything.
                let mut next_fetch = self.fetch_from(&StartFrom::Cursor(next.clone()));
                let mut fetched_ahead = None;
                let delivered = {
                    let deliver = sink.deliver(&records, &next);
                    tokio::pin!(deliver);
                    loop {
                        tokio::select! {
                            r = &mut deliver => break Some(r),
                            r = &mut next_fetch, if fetched_ahead.is_none() => fetched_ahead = Some(r),
                            // Stopping: finish the transaction in flight unless local Kafka
                            // cannot take it in time; an unfinished one is aborted by the
                            // broker and fetched again on the next start.
                            () = shutdown.cancelled() => break tokio::time::timeout(SHUTDOWN_DRAIN, &mut deliver).await.ok(),
                        }
                    }
                };
                match delivered {
                    None => {
                        tracing::warn!(
                            events = count,
                            "stopping with a batch uncommitted; it will be fetched again"
                        );
                        break;
                    }
                    Some(Ok(())) => {
                        ahead = Some(match fetched_ahead {
                            Some(answer) => Box::pin(std::future::ready(answer)),
                            None => next_fetch,
                        });
                    }
                    Some(Err(SinkError::Fenced)) => return Err(SinkError::Fenced.into()),
                    Some(Err(err)) => {
                        let rebuild = err.needs_new_producer();
                        self.set_health(Health::LocalKafkaFailing(err.to_string()));
                        let pause = self.backoff.next_delay();
                        sleep(pause, &shutdown).await;
                        if rebuild {
                            drop(sink);
                            let Some((fresh, committed)) = self.connect(&shutdown).await? else {
                                break;
                            };
                            sink = fresh;
                            position = committed;
                        }
                        continue;
                    }
                }
            }
            tracing::debug!(
                events = count,
                fetch_ms = fetched_at.duration_since(started).as_millis() as u64,
                deliver_ms = fetched_at.elapsed().as_millis() as u64,
                "batch"
            );
            position = StartFrom::Cursor(next);
            self.progress.events += count as u64;
            self.publish();
            self.set_health(Health::Replicating);
            self.backoff.reset();
            if last_progress_log.elapsed() >= Duration::from_secs(30) && count > 0 {
                tracing::info!(
                    events = self.progress.events,
                    polls = self.progress.polls,
                    "progress"
                );
                last_progress_log = Instant::now();
            }
            // Events mean more may follow: fetch again at once (the next long-poll waits on
            // the server). An empty answer came after the server waited; only if it answered
            // sooner than the interval does the client make up the difference.
            if count == 0 {
                sleep(self.interval.saturating_sub(started.elapsed()), &shutdown).await;
            }
        }
        tracing::info!(events = self.progress.events, "client stopped");
        Ok(self.progress)
    }
}

/// A fetch that owns what it needs, so it can run while the loop writes a batch.
type PendingFetch = Pin<Box<dyn Future<Output = Result<EventsResponse, FetchError>> + Send>>;

impl Replicator {
    fn fetch_from(&self, start: &StartFrom) -> PendingFetch {
        let (api, start, limit, wait) =
            (self.api.clone(), start.clone(), self.limit, self.interval);
        Box::pin(async move { api.fetch(&start, limit, wait).await })
    }
}

async fn sleep(pause: Duration, shutdown: &CancellationToken) {
    if pause.is_zero() {
        return;
    }
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(pause) => {}
    }
}
