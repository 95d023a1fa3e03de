//! [`Replicator`]: the polling loop. Fetch after the committed cursor, then write the batch
//! and the cursor that follows it to local Kafka in one transaction; on any failure retry
//! with capped, jittered backoff, logging one line per change of state, never crashing.

use std::sync::Arc;
use std::time::Duration;

use shared::{Cursor, StartFrom};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use shared::kafka::Cluster;

use crate::ClientError;
use crate::api::{BatchSize, EventsApi, FetchError};
use crate::backoff::Backoff;
use crate::config::{Config, StartPosition};
use crate::destination::Destination;
use crate::feed::Feed;
use crate::lag::{Catchup, LogEnds, human, total};
use crate::metrics::ClientMetrics;
use crate::pipeline::{Step, WritePipeline};
use crate::sink::{HeldOpen, LocalKafka, SinkError, StateReadError};

/// Longest the client waits at start to learn whether local Kafka accepts its credentials.
const ACCESS_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a catching-up client logs its progress (and asks the server for its log end).
pub const PROGRESS_EVERY: Duration = Duration::from_secs(30);
/// How often the lag metrics are brought up to date.
const LAG_METRICS_EVERY: Duration = Duration::from_secs(1);

/// What the client is doing, for one log line per change.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Health {
    Starting,
    Replicating,
    ServerUnavailable(String),
    RateLimited(String),
    Rejected(String),
    LocalKafkaFailing(String),
}

/// Totals since start, for progress lines, tests and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Local Kafka is connected and the committed position read: fetching has begun.
    pub connected: bool,
    /// Events committed to local Kafka.
    pub events: u64,
    /// Answers (or failures) to requests for events.
    pub polls: u64,
    /// Requests the server refused over the key's rate limit (each waited out).
    pub rate_limited: u64,
    /// Requests the server could not serve, or that did not reach it (each retried).
    pub unavailable: u64,
}

/// The client: API in, local Kafka out, position committed with each batch.
#[derive(Debug)]
pub struct Replicator {
    api: EventsApi,
    /// Where batches come from: a stream, or long-polls.
    feed: Feed,
    /// Local Kafka, with the user's properties for it.
    local: Cluster,
    destination: Destination,
    state_topic: String,
    client_id: String,
    from: StartPosition,
    interval: Duration,
    /// What a request asks for when the client is not request-bound.
    base_size: BatchSize,
    /// What the next request asks for: [`BatchSize::paced`] while the key's budget paces a
    /// backlog.
    size: BatchSize,
    health: Health,
    progress: Progress,
    watchers: tokio::sync::watch::Sender<Progress>,
    backoff: Backoff,
    metrics: Arc<ClientMetrics>,
    /// The server's log end, as far as known.
    ends: LogEnds,
    /// A request for the log end, under way.
    probe: Option<tokio::task::JoinHandle<Result<Cursor, FetchError>>>,
}

impl Health {
    /// Its `replicator_client_state` label.
    fn label(&self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Replicating => "replicating",
            Self::ServerUnavailable(_) => "server_unavailable",
            Self::RateLimited(_) => "rate_limited",
            Self::Rejected(_) => "rejected",
            Self::LocalKafkaFailing(_) => "local_kafka_failing",
        }
    }
}

impl Replicator {
    /// Builds the client from validated configuration; nothing is contacted yet.
    pub fn new(config: &Config) -> Result<Self, ClientError> {
        let api = config.events_api().map_err(ClientError::Http)?;
        Ok(Self {
            feed: Feed::new(
                api.clone(),
                config.stream,
                Duration::from_millis(config.interval_ms),
            ),
            api,
            local: config.local_kafka()?,
            destination: Destination::from_config(config),
            state_topic: config.state_topic.clone(),
            client_id: config.client_id.clone(),
            from: config.from,
            interval: Duration::from_millis(config.interval_ms),
            base_size: BatchSize::new(config.batch_limit),
            size: BatchSize::new(config.batch_limit),
            health: Health::Starting,
            progress: Progress::default(),
            watchers: tokio::sync::watch::Sender::new(Progress::default()),
            backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(30)),
            metrics: Arc::new(ClientMetrics::new()),
            ends: LogEnds::default(),
            probe: None,
        })
    }

    /// The client's metrics, for `METRICS_ADDR`.
    pub fn metrics(&self) -> Arc<ClientMetrics> {
        Arc::clone(&self.metrics)
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
        self.metrics.set_state(health.label());
        match &health {
            Health::Starting => {}
            Health::Replicating => tracing::info!(events = self.progress.events, "replicating"),
            Health::ServerUnavailable(why) => {
                tracing::warn!(reason = %why, "server unavailable; retrying with backoff")
            }
            Health::RateLimited(why) => tracing::warn!(
                reason = %why,
                "the server refused a request over the API key's rate limit (does another process use this key?); waiting as its Retry-After says"
            ),
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
    ) -> Result<Option<([Arc<LocalKafka>; 2], StartFrom)>, ClientError> {
        loop {
            let attempt = async {
                let sinks = LocalKafka::connect_lanes(
                    &self.local,
                    self.destination.clone(),
                    &self.state_topic,
                    &self.client_id,
                )
                .await?;
                // Read once both lanes are initialised: what either left open is settled.
                let cursor = match sinks[0].load_cursor().await {
                    Err(SinkError::LoadState {
                        topic,
                        source: StateReadError::HeldOpen(held),
                    }) => end_held_open(&sinks, held, topic).await?,
                    read => read?,
                };
                Ok::<_, SinkError>((sinks, cursor))
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
        // Wrong credentials or certificates stop the start; a local Kafka not up yet does not.
        let local = self.local.clone();
        tokio::task::spawn_blocking(move || {
            shared::kafka::check_access(&local, ACCESS_CHECK_TIMEOUT)
        })
        .await
        .unwrap_or(Ok(()))
        .map_err(ClientError::AccessRefused)?;
        let Some((lanes, start)) = self.connect(&shutdown).await? else {
            return Ok(self.progress);
        };
        self.progress.connected = true;
        self.publish();
        let mut report = Report::new(Instant::now(), self.progress.events);
        let mut lag_updated = Instant::now();
        self.probe_log_end();
        let mut pipeline = WritePipeline::new(lanes, start);
        while !shutdown.is_cancelled() {
            let started = Instant::now();
            let from = pipeline.fetch_from().clone();
            let crate::feed::Fetched {
                answer: fetched,
                long_polled,
                asked,
                more,
            } = tokio::select! {
                () = shutdown.cancelled() => break,
                r = self.feed.next(&from, self.size, pipeline.has_pending()) => r,
            };
            self.progress.polls += 1;
            self.publish();
            // An open transaction takes only more events: anything else closes it first, and
            // with nothing to write the commit in flight is seen through.
            if !matches!(&fetched, Ok(b) if !b.is_empty()) {
                let step = pipeline.close(&shutdown).await;
                match self.after(step, &mut pipeline, &shutdown).await? {
                    Flow::Go => {}
                    Flow::Retry => continue,
                    Flow::Stop => break,
                }
            }
            let batch = match fetched {
                Ok(batch) => batch,
                Err(FetchError::Transient {
                    message,
                    retry_after,
                }) => {
                    self.progress.unavailable += 1;
                    self.publish();
                    self.set_health(Health::ServerUnavailable(message));
                    let pause = retry_after
                        .unwrap_or_default()
                        .max(self.backoff.next_delay());
                    sleep(pause, &shutdown).await;
                    continue;
                }
                // The API's pacer holds the next request back for its Retry-After.
                Err(FetchError::RateLimited { message, .. }) => {
                    self.progress.rate_limited += 1;
                    self.publish();
                    self.set_health(Health::RateLimited(message));
                    continue;
                }
                Err(err @ FetchError::Rejected { .. }) => {
                    self.set_health(Health::Rejected(err.to_string()));
                    let pause = self.backoff.next_delay();
                    sleep(pause, &shutdown).await;
                    continue;
                }
            };
            for gap in batch.gaps() {
                tracing::warn!(topic = %gap.topic, partition = gap.partition, from = gap.from, to = gap.to,
                    "source no longer holds these offsets (retention); skipped");
            }
            let next = Cursor::decode(batch.next_cursor()).map_err(ClientError::BadCursor)?;
            let count = batch.len();
            let full = asked.filled_by(count, batch.body_len());
            self.resize(full);
            // An answer that did not fill its request read to the end of every partition.
            if !full {
                self.ends.learn(&next);
            }
            let moved = !matches!(pipeline.fetch_from(), StartFrom::Cursor(c) if *c == next);
            if count > 0 || moved {
                // A full batch means a backlog: keep the transaction open for the next one
                // (bounded), so local Kafka works on this one meanwhile. That next fetch does
                // not long-poll: if the backlog ended here, the transaction commits at once
                // instead of a poll interval later.
                // So does a stream that has sent the next batch already.
                let keep_open = (full || more) && pipeline.may_keep_open(count);
                // The batch after this one is on its way while this one is written (the
                // stream sends it, or a poll is asked for now); should the write, or a
                // commit before it, fail, the client rewinds to what local Kafka holds and
                // the feed starts again from there: nothing is ever skipped.
                self.feed
                    .prefetch(&StartFrom::Cursor(next.clone()), self.size, !keep_open);
                let fetched_at = Instant::now();
                let step = pipeline.write(&batch, &next, keep_open, &shutdown).await;
                tracing::debug!(
                    events = count,
                    fetch_ms = fetched_at.duration_since(started).as_millis() as u64,
                    write_ms = fetched_at.elapsed().as_millis() as u64,
                    "batch handed to local Kafka"
                );
                match self.after(step, &mut pipeline, &shutdown).await? {
                    Flow::Go => {}
                    Flow::Retry => continue,
                    Flow::Stop => break,
                }
            } else {
                self.committed(0);
            }
            self.learn_log_end().await;
            // At the end of the log (an answer that did not fill), the lag is shown at
            // once; while catching up, once a second.
            if !full || lag_updated.elapsed() >= LAG_METRICS_EVERY {
                self.update_lag(&pipeline);
                lag_updated = Instant::now();
            }
            if report.due() {
                let lag = self.update_lag(&pipeline);
                report.log(self.progress.events, lag, &self.metrics);
                if full {
                    self.probe_log_end();
                }
            }
            // Events mean more may follow: fetch again at once (the next long-poll waits on
            // the server). An empty answer came after the server waited; only if it answered
            // sooner than the interval does the client make up the difference.
            if count == 0 && long_polled {
                sleep(self.interval.saturating_sub(started.elapsed()), &shutdown).await;
            }
        }
        // Stopping: commit what is written, and see the commit in flight through.
        let step = pipeline.close(&shutdown).await;
        if let Step::Failed(SinkError::Fenced) = step {
            return Err(SinkError::Fenced.into());
        }
        if let Some(events) = pipeline.take_committed() {
            self.committed(events);
        }
        tracing::info!(events = self.progress.events, "client stopped");
        Ok(self.progress)
    }
}

/// What the loop does after a step of the write pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Go,
    /// A write or commit failed; the client went back to what local Kafka holds.
    Retry,
    Stop,
}

impl Replicator {
    /// Counts `events` as committed.
    fn committed(&mut self, events: u64) {
        if events > 0 {
            self.metrics.committed(events);
        }
        self.progress.events += events;
        self.publish();
        self.set_health(Health::Replicating);
        self.backoff.reset();
    }

    /// Counts what the pipeline committed and, after a failure (the pipeline is back at
    /// what local Kafka holds), waits and rebuilds the producers, re-reading the committed
    /// position, if they are gone.
    async fn after(
        &mut self,
        step: Step,
        pipeline: &mut WritePipeline<LocalKafka>,
        shutdown: &CancellationToken,
    ) -> Result<Flow, ClientError> {
        if let Some(events) = pipeline.take_committed() {
            self.committed(events);
        }
        let err = match step {
            Step::Go => return Ok(Flow::Go),
            Step::Stop => return Ok(Flow::Stop),
            Step::Failed(SinkError::Fenced) => return Err(SinkError::Fenced.into()),
            Step::Failed(err) => err,
        };
        let rebuild = err.needs_new_producer();
        self.set_health(Health::LocalKafkaFailing(err.to_string()));
        let pause = self.backoff.next_delay();
        sleep(pause, shutdown).await;
        if rebuild {
            let Some((lanes, committed)) = self.connect(shutdown).await? else {
                return Ok(Flow::Stop);
            };
            pipeline.restart(lanes, committed);
        }
        Ok(if shutdown.is_cancelled() {
            Flow::Stop
        } else {
            Flow::Retry
        })
    }

    /// Asks the server for its log end in the background, unless already asking.
    fn probe_log_end(&mut self) {
        if self.probe.is_some() {
            return;
        }
        let api = self.api.clone();
        self.probe = Some(tokio::spawn(async move { api.log_end().await }));
    }

    /// Takes in the log end a finished probe learnt.
    async fn learn_log_end(&mut self) {
        if !self.probe.as_ref().is_some_and(|p| p.is_finished()) {
            return;
        }
        let Some(probe) = self.probe.take() else {
            return;
        };
        match probe.await {
            Ok(Ok(ends)) => self.ends.learn(&ends),
            Ok(Err(err)) => tracing::debug!(error = %err, "could not learn the log end"),
            Err(_) => {}
        }
    }

    /// The lag behind the known log end, total, into the metrics; `None` while unknown.
    fn update_lag(&self, pipeline: &WritePipeline<LocalKafka>) -> Option<u64> {
        let StartFrom::Cursor(committed) = pipeline.committed() else {
            return None;
        };
        if !self.ends.is_known() {
            return None;
        }
        let partitions = self.ends.lag(committed);
        self.metrics.lag(&partitions);
        Some(total(&partitions))
    }

    /// Sizes the next request: while a backlog fills answers and the key's budget holds
    /// requests back, requests are what is scarce, so each asks for as much as
    /// [`BatchSize::paced`] and catch-up is bound by bytes, not by requests; once answers
    /// stop filling, back to the configured size.
    fn resize(&mut self, full: bool) {
        let size = match (full, self.api.is_paced()) {
            (true, true) => BatchSize::paced(),
            (true, false) => self.size,
            (false, _) => self.base_size,
        };
        if size != self.size {
            tracing::debug!(limit = size.events, max_bytes = size.bytes, "batch size");
            self.size = size;
        }
    }
}

/// The progress line a client logs every [`PROGRESS_EVERY`] while events move or it lags.
#[derive(Debug)]
struct Report {
    since: Instant,
    events_then: u64,
}

/// What one progress line says.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProgressLine {
    events: u64,
    events_per_sec: f64,
    /// `None` while the server's log end is not known.
    lag: Option<u64>,
    /// `None` when it cannot be told: lag unknown, or no progress.
    eta: Option<Duration>,
}

impl Report {
    fn new(now: Instant, events: u64) -> Self {
        Self {
            since: now,
            events_then: events,
        }
    }

    fn due(&self) -> bool {
        self.since.elapsed() >= PROGRESS_EVERY
    }

    /// The pace since the last line, the lag and when it will be made up, and starts the
    /// next interval; `None` when nothing moved and nothing is behind.
    fn take(&mut self, events: u64, lag: Option<u64>) -> (f64, Option<ProgressLine>) {
        let copied = events.saturating_sub(self.events_then);
        let pace = Catchup::measured(copied, self.since.elapsed());
        *self = Self::new(Instant::now(), events);
        let events_per_sec = pace.map_or(0.0, |p| p.events_per_sec);
        if copied == 0 && lag.is_none_or(|l| l == 0) {
            return (events_per_sec, None);
        }
        let line = ProgressLine {
            events,
            events_per_sec,
            lag,
            eta: pace.zip(lag).and_then(|(pace, lag)| pace.eta(lag)),
        };
        (events_per_sec, Some(line))
    }

    /// Logs the line [`Self::take`] makes, and the pace into the metrics.
    fn log(&mut self, events: u64, lag: Option<u64>, metrics: &ClientMetrics) {
        let (events_per_sec, line) = self.take(events, lag);
        metrics.pace(events_per_sec);
        let Some(line) = line else {
            return;
        };
        let lag = line
            .lag
            .map_or_else(|| "unknown".to_owned(), |l| l.to_string());
        let eta = line.eta.map_or_else(|| "unknown".to_owned(), human);
        tracing::info!(
            events = line.events,
            events_per_sec = format_args!("{:.0}", line.events_per_sec),
            lag = %lag,
            eta = %eta,
            "progress"
        );
    }
}

/// Ends a transaction of this client that local Kafka holds open for good (`held`, read
/// from `topic`), when [`crate::hanging::check`] finds that safe, and reads the position
/// again; else returns `held` for the operator.
async fn end_held_open(
    lanes: &[Arc<LocalKafka>; 2],
    held: HeldOpen,
    topic: String,
) -> Result<Option<Cursor>, SinkError> {
    match crate::hanging::end(lanes, &held).await {
        Ok(ended) => {
            tracing::warn!(
                held = %held,
                partitions = ?ended.partitions,
                "local Kafka held a transaction of this client open for good; the client aborted it through its own transactional ids and copies the batch it held again"
            );
            lanes[0].load_cursor().await
        }
        Err(why) => {
            tracing::error!(
                held = %held,
                why = %why,
                "local Kafka holds a transaction open for good, and the client cannot end it safely itself"
            );
            Err(SinkError::LoadState {
                topic,
                source: held.into(),
            })
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_line_gives_the_pace_the_lag_and_when_it_is_made_up() {
        let start = Instant::now()
            .checked_sub(Duration::from_secs(30))
            .expect("a clock 30 s old");
        let mut report = Report::new(start, 1000);
        let (pace, line) = report.take(4000, Some(1500));
        let line = line.expect("events moved");
        assert!((pace - 100.0).abs() < 1.0, "{pace}");
        assert_eq!((line.events, line.lag), (4000, Some(1500)));
        let eta = line.eta.expect("an ETA").as_secs_f64();
        assert!((14.0..=15.1).contains(&eta), "{eta}");
        assert!(!report.due(), "the next interval starts now");

        // Nothing moved and nothing behind: no line.
        let mut report = Report::new(start, 4000);
        assert_eq!(report.take(4000, Some(0)).1, None);
        // Behind but stalled: a line, with no ETA.
        let mut report = Report::new(start, 4000);
        let line = report.take(4000, Some(10)).1.expect("behind");
        assert_eq!((line.lag, line.eta), (Some(10), None));
        // The log end not known yet: the lag and ETA are unknown.
        let mut report = Report::new(start, 0);
        let line = report.take(300, None).1.expect("events moved");
        assert_eq!((line.lag, line.eta), (None, None));
    }
}
