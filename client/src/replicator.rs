//! [`Replicator`]: the polling loop. Fetch after the saved cursor, deliver the batch to
//! local Kafka, and only then save the new cursor; on any failure retry with capped,
//! jittered backoff, logging one line per change of state, never crashing.

use std::time::Duration;

use shared::config::{ClientConfig, StartPosition};
use shared::{Cursor, Record, StartFrom};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ClientError;
use crate::api::{EventsApi, FetchError};
use crate::backoff::Backoff;
use crate::sink::LocalKafka;
use crate::store::CursorStore;

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

/// Totals since start, for progress lines and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub events: u64,
    pub polls: u64,
}

/// The client: API in, local Kafka out, cursor on disk.
#[derive(Debug)]
pub struct Replicator {
    api: EventsApi,
    sink: LocalKafka,
    store: CursorStore,
    from: StartPosition,
    interval: Duration,
    limit: u32,
    health: Health,
    progress: Progress,
}

impl Replicator {
    /// Builds the client from validated configuration.
    pub fn new(config: &ClientConfig) -> Result<Self, ClientError> {
        let api = EventsApi::new(
            config.server_url.as_deref().unwrap_or_default(),
            &config.api_prefix,
            config.api_key.as_deref().unwrap_or_default(),
        )
        .map_err(ClientError::Http)?;
        let sink = LocalKafka::new(
            config.kafka_brokers.as_deref().unwrap_or_default(),
            config.kafka_topic.clone(),
        )?;
        Ok(Self {
            api,
            sink,
            store: CursorStore::new(&config.state_file),
            from: config.from,
            interval: Duration::from_millis(config.interval_ms),
            limit: config.batch_limit,
            health: Health::Starting,
            progress: Progress::default(),
        })
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
            Health::Rejected(why) => {
                tracing::error!(reason = %why, "server refused the request; retrying with backoff until fixed")
            }
            Health::LocalKafkaFailing(why) => {
                tracing::warn!(reason = %why, "local Kafka not accepting; retrying the batch")
            }
        }
        self.health = health;
    }

    /// Runs until `shutdown`; returns the totals.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<Progress, ClientError> {
        let mut position = match self.store.load()? {
            Some(cursor) => {
                tracing::info!(state_file = %self.store.path().display(), "resuming from saved position");
                StartFrom::Cursor(cursor)
            }
            None => {
                tracing::info!(from = ?self.from, "no saved position; starting from {:?}", self.from);
                match self.from {
                    StartPosition::Earliest => StartFrom::Earliest,
                    StartPosition::Latest => StartFrom::Latest,
                }
            }
        };
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        let mut last_progress_log = Instant::now();
        while !shutdown.is_cancelled() {
            let started = Instant::now();
            let fetched = tokio::select! {
                () = shutdown.cancelled() => break,
                r = self.api.fetch(&position, self.limit, self.interval) => r,
            };
            self.progress.polls += 1;
            let pause = match fetched {
                Ok(batch) => {
                    for gap in &batch.gaps {
                        tracing::warn!(topic = %gap.topic, partition = gap.partition, from = gap.from, to = gap.to,
                            "source no longer holds these offsets (retention); skipped");
                    }
                    let next =
                        Cursor::decode(&batch.next_cursor).map_err(ClientError::BadCursor)?;
                    let count = batch.events.len();
                    let records: Vec<Record> = batch
                        .events
                        .into_iter()
                        .map(shared::Event::into_record)
                        .collect::<Result<_, _>>()?;
                    if !records.is_empty() {
                        let delivered = {
                            let deliver = self.sink.deliver(&records);
                            tokio::pin!(deliver);
                            tokio::select! {
                            r = &mut deliver => r,
                            // Stopping: finish the batch in flight so its cursor can be
                            // saved, unless local Kafka cannot take it in time.
                            () = shutdown.cancelled() => match tokio::time::timeout(SHUTDOWN_DRAIN, &mut deliver).await {
                                Ok(r) => r,
                                Err(_) => {
                                    tracing::warn!(events = count, "stopping with a batch unacknowledged; it will be fetched again");
                                    break;
                                }
                            },
                            }
                        };
                        if let Err(err) = delivered {
                            self.set_health(Health::LocalKafkaFailing(err.to_string()));
                            self.sleep(backoff.next_delay(), &shutdown).await;
                            continue;
                        }
                    }
                    // Every event before `next` is acknowledged by local Kafka: save it.
                    self.store.save(&next)?;
                    position = StartFrom::Cursor(next);
                    self.progress.events += count as u64;
                    self.set_health(Health::Replicating);
                    backoff.reset();
                    if last_progress_log.elapsed() >= Duration::from_secs(30) && count > 0 {
                        tracing::info!(
                            events = self.progress.events,
                            polls = self.progress.polls,
                            "progress"
                        );
                        last_progress_log = Instant::now();
                    }
                    // A full batch means more is waiting: fetch again at once.
                    if count >= self.limit as usize {
                        Duration::ZERO
                    } else {
                        self.interval.saturating_sub(started.elapsed())
                    }
                }
                Err(FetchError::Transient {
                    message,
                    retry_after,
                }) => {
                    self.set_health(Health::ServerUnavailable(message));
                    retry_after
                        .unwrap_or_else(|| backoff.next_delay())
                        .max(backoff.next_delay())
                }
                Err(err @ FetchError::Rejected { .. }) => {
                    self.set_health(Health::Rejected(err.to_string()));
                    backoff.next_delay()
                }
            };
            self.sleep(pause, &shutdown).await;
        }
        self.sink.flush(Duration::from_secs(10));
        tracing::info!(events = self.progress.events, "client stopped");
        Ok(self.progress)
    }

    async fn sleep(&self, pause: Duration, shutdown: &CancellationToken) {
        if pause.is_zero() {
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
}
