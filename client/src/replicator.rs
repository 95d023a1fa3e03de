//! [`Replicator`]: the polling loop. Fetch after the committed cursor, then write the batch
//! and the cursor that follows it to local Kafka in one transaction; on any failure retry
//! with capped, jittered backoff, logging one line per change of state, never crashing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use shared::config::{ClientConfig, StartPosition};
use shared::wire::BatchView;
use shared::{Cursor, StartFrom};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ClientError;
use crate::api::{BatchSize, EventsApi, FetchError};
use crate::backoff::Backoff;
use crate::destination::Destination;
use crate::sink::{LocalKafka, SinkError, Transaction};

/// How long a stopping client waits for the batch in flight.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

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
    pub events: u64,
    pub polls: u64,
    /// Requests the server refused over the key's rate limit (each waited out).
    pub rate_limited: u64,
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
    /// What a request asks for when the client is not request-bound.
    base_size: BatchSize,
    /// What the next request asks for: [`BatchSize::paced`] while the key's budget paces a
    /// backlog.
    size: BatchSize,
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
            config.compression,
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
            base_size: BatchSize::new(config.batch_limit),
            size: BatchSize::new(config.batch_limit),
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
    ) -> Result<Option<(Lanes, StartFrom)>, ClientError> {
        loop {
            let attempt = async {
                let sinks = LocalKafka::connect_lanes(
                    &self.brokers,
                    self.destination.clone(),
                    &self.state_topic,
                    &self.client_id,
                )
                .await?;
                // Read once both lanes are initialised: what either left open is settled.
                let cursor = sinks[0].load_cursor().await?;
                Ok::<_, SinkError>((Lanes { sinks, turn: 0 }, cursor))
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
        let Some((mut lanes, start)) = self.connect(&shutdown).await? else {
            return Ok(self.progress);
        };
        self.progress.connected = true;
        self.publish();
        let mut last_progress_log = Instant::now();
        let mut at = Position {
            place: Place::new(start),
            committing: None,
        };
        // A transaction kept open (on the current lane) while full batches keep coming.
        let mut open: Option<Transaction> = None;
        // The next batch, asked for while the previous one was being written.
        let mut ahead: Option<PendingFetch> = None;
        while !shutdown.is_cancelled() {
            let started = Instant::now();
            let fetch = ahead
                .take()
                .unwrap_or_else(|| self.fetch_from(&at.place.fetch, true));
            let long_polled = fetch.long_poll;
            let asked = fetch.asked;
            let fetched = tokio::select! {
                () = shutdown.cancelled() => break,
                r = fetch.answer => r,
            };
            self.progress.polls += 1;
            // An open transaction takes only more events: anything else closes it first, and
            // with nothing to write the commit in flight is seen through.
            let more = matches!(&fetched, Ok(b) if !b.is_empty());
            if !more {
                if let Some(txn) = open.take() {
                    match self.hand_over(txn, &mut lanes, &mut at, &shutdown).await? {
                        Step::Go => {}
                        Step::Retry => continue,
                        Step::Stop => break,
                    }
                }
                match self.settle(&mut lanes, &mut at, &shutdown).await? {
                    Step::Go => {}
                    Step::Retry => continue,
                    Step::Stop => break,
                }
            }
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
            let moved = !matches!(&at.place.fetch, StartFrom::Cursor(c) if *c == next);
            let fetched_at = Instant::now();
            if count > 0 || moved {
                // A full batch means a backlog: keep the transaction open for the next one
                // (bounded), so local Kafka works on this one meanwhile. That next fetch does
                // not long-poll: if the backlog ended here, the transaction commits at once
                // instead of a poll interval later.
                let keep_open = full
                    && open.as_ref().map_or(0, Transaction::events) + count
                        < MAX_TRANSACTION_EVENTS
                    && open
                        .as_ref()
                        .is_none_or(|txn| txn.age() < MAX_TRANSACTION_AGE);
                // The batch after this one is on its way while this one is written; a failed
                // write drops (aborts) it.
                let next_fetch = self.fetch_from(&StartFrom::Cursor(next.clone()), !keep_open);
                let txn = match lanes.current().append(open.take(), &batch, &next).await {
                    Ok(txn) => txn,
                    Err(err) => {
                        drop(next_fetch);
                        if !self.fail(err, &mut lanes, &mut at, &shutdown).await? {
                            break;
                        }
                        continue;
                    }
                };
                tracing::debug!(
                    events = count,
                    fetch_ms = fetched_at.duration_since(started).as_millis() as u64,
                    write_ms = fetched_at.elapsed().as_millis() as u64,
                    "batch handed to local Kafka"
                );
                at.place.wrote(&next, count);
                if keep_open {
                    open = Some(txn);
                    ahead = Some(next_fetch);
                    continue;
                }
                match self.hand_over(txn, &mut lanes, &mut at, &shutdown).await? {
                    // Should a commit before it fail, the client rewinds to what local
                    // Kafka holds and drops this fetch: nothing is ever skipped.
                    Step::Go => ahead = Some(next_fetch),
                    Step::Retry => continue,
                    Step::Stop => break,
                }
            } else {
                self.committed(0);
            }
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
            if count == 0 && long_polled {
                sleep(self.interval.saturating_sub(started.elapsed()), &shutdown).await;
            }
        }
        // Stopping: commit what is written, and see the commit in flight through (a hand-over
        // that did not go ahead leaves none).
        if let Some(txn) = open.take() {
            self.hand_over(txn, &mut lanes, &mut at, &shutdown).await?;
        }
        self.settle(&mut lanes, &mut at, &shutdown).await?;
        tracing::info!(events = self.progress.events, "client stopped");
        Ok(self.progress)
    }
}

/// What the loop does after a step that may have failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Go,
    /// A write or commit failed; the client went back to what local Kafka holds.
    Retry,
    Stop,
}

/// The two transactional producers the client takes turns with: one commits a transaction
/// while the other writes the next, and a transaction commits only after the one before.
struct Lanes {
    sinks: [Arc<LocalKafka>; 2],
    turn: usize,
}

impl Lanes {
    /// The lane the next batch is written on.
    fn current(&self) -> &Arc<LocalKafka> {
        &self.sinks[self.turn]
    }
}

/// A commit under way on its own task, with the position and events it makes durable.
struct Committing {
    task: tokio::task::JoinHandle<Result<(), SinkError>>,
    cursor: Cursor,
    events: u64,
    started: Instant,
}

impl Committing {
    fn start(sink: Arc<LocalKafka>, txn: Transaction, cursor: Cursor, events: u64) -> Self {
        Self {
            task: tokio::spawn(async move { sink.commit(txn).await }),
            cursor,
            events,
            started: Instant::now(),
        }
    }

    /// Its outcome; when stopping, waited for only [`SHUTDOWN_DRAIN`]. `None`: not finished
    /// in time, so the broker aborts it and the next start fetches it again.
    async fn outcome(&mut self, shutdown: &CancellationToken) -> Option<Result<(), SinkError>> {
        let Some(joined) = drained(&mut self.task, shutdown).await else {
            tracing::warn!(
                events = self.events,
                "stopping with a batch uncommitted; it will be fetched again"
            );
            return None;
        };
        Some(joined.unwrap_or(Err(SinkError::Transaction(KafkaError::Canceled))))
    }
}

/// `work`'s outcome; once `shutdown` is asked, waited for only [`SHUTDOWN_DRAIN`] more.
async fn drained<T>(work: impl Future<Output = T>, shutdown: &CancellationToken) -> Option<T> {
    tokio::pin!(work);
    tokio::select! {
        r = &mut work => Some(r),
        () = shutdown.cancelled() => tokio::time::timeout(SHUTDOWN_DRAIN, &mut work).await.ok(),
    }
}

/// The client's position and the commit in flight, which moves it on success.
struct Position {
    place: Place,
    committing: Option<Committing>,
}

/// Where the client stands: the position the next fetch starts from, and the position
/// local Kafka holds, with the events written since in a transaction still open.
#[derive(Debug)]
struct Place {
    fetch: StartFrom,
    committed: StartFrom,
    /// Events in the open transaction (not those of the commit in flight).
    uncommitted: u64,
}

impl Place {
    fn new(start: StartFrom) -> Self {
        Self {
            fetch: start.clone(),
            committed: start,
            uncommitted: 0,
        }
    }

    /// A batch of `events` ending before `next` is in the open transaction.
    fn wrote(&mut self, next: &Cursor, events: usize) {
        self.fetch = StartFrom::Cursor(next.clone());
        self.uncommitted += events as u64;
    }

    /// The open transaction goes to be committed: returns its events.
    fn hand_over(&mut self) -> u64 {
        std::mem::take(&mut self.uncommitted)
    }

    /// The open transaction failed: fetch again from what local Kafka holds.
    fn rewind(&mut self) {
        self.fetch = self.committed.clone();
        self.uncommitted = 0;
    }

    /// The cursor the open transaction ends with (one is only open after a batch, so the
    /// fetch position is a cursor).
    fn cursor(&self) -> Cursor {
        match &self.fetch {
            StartFrom::Cursor(c) => c.clone(),
            _ => Cursor::new(),
        }
    }
}

/// Most events one local transaction takes while a backlog is copied.
const MAX_TRANSACTION_EVENTS: usize = 20_000;
/// Longest one local transaction stays open while a backlog is copied.
const MAX_TRANSACTION_AGE: Duration = Duration::from_millis(250);

/// A fetch under way on its own task, so it runs while the loop writes a batch.
struct PendingFetch {
    answer: FetchTask,
    /// Whether the server may hold it for the poll interval (else it answers at once).
    long_poll: bool,
    /// What it asked for.
    asked: BatchSize,
}

/// A spawned fetch, aborted when dropped unfinished: nothing fetched after a failed write
/// is used.
struct FetchTask(tokio::task::JoinHandle<Result<BatchView, FetchError>>);

impl Drop for FetchTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Future for FetchTask {
    type Output = Result<BatchView, FetchError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.unwrap_or_else(|err| {
                Err(FetchError::Transient {
                    message: format!("the fetch stopped: {err}"),
                    retry_after: None,
                })
            })
        })
    }
}

impl Replicator {
    /// Counts `events` as committed.
    fn committed(&mut self, events: u64) {
        self.progress.events += events;
        self.publish();
        self.set_health(Health::Replicating);
        self.backoff.reset();
    }

    /// Commits `txn` (written on the current lane) once the commit before it succeeded, and
    /// once local Kafka holds its records turns to the other lane for the next batch, so
    /// each partition's order is kept.
    async fn hand_over(
        &mut self,
        mut txn: Transaction,
        lanes: &mut Lanes,
        at: &mut Position,
        shutdown: &CancellationToken,
    ) -> Result<Step, ClientError> {
        if let Some(mut previous) = at.committing.take() {
            match previous.outcome(shutdown).await {
                None => return Ok(Step::Stop),
                Some(Ok(())) => self.commit_done(&previous, at),
                Some(Err(err)) => {
                    // Its batch and this one are fetched again.
                    lanes.current().abort(txn).await;
                    return self.recover(err, lanes, at, shutdown).await;
                }
            }
        }
        let events = at.place.hand_over();
        let cursor = at.place.cursor();
        match drained(lanes.current().seal(&mut txn, &cursor), shutdown).await {
            None => {
                tracing::warn!(
                    events,
                    "stopping with a batch uncommitted; it will be fetched again"
                );
                return Ok(Step::Stop);
            }
            Some(Ok(())) => {}
            Some(Err(err)) => return self.recover(err, lanes, at, shutdown).await,
        }
        at.committing = Some(Committing::start(
            Arc::clone(lanes.current()),
            txn,
            cursor,
            events,
        ));
        lanes.turn = 1 - lanes.turn;
        Ok(Step::Go)
    }

    /// Waits for the commit in flight, if any.
    async fn settle(
        &mut self,
        lanes: &mut Lanes,
        at: &mut Position,
        shutdown: &CancellationToken,
    ) -> Result<Step, ClientError> {
        let Some(mut previous) = at.committing.take() else {
            return Ok(Step::Go);
        };
        match previous.outcome(shutdown).await {
            None => Ok(Step::Stop),
            Some(Ok(())) => {
                self.commit_done(&previous, at);
                Ok(Step::Go)
            }
            Some(Err(err)) => self.recover(err, lanes, at, shutdown).await,
        }
    }

    /// A write failed (its transaction is aborted): sees the commit in flight through, then
    /// recovers. `false`: stopping.
    async fn fail(
        &mut self,
        err: SinkError,
        lanes: &mut Lanes,
        at: &mut Position,
        shutdown: &CancellationToken,
    ) -> Result<bool, ClientError> {
        let mut err = err;
        if let Some(mut previous) = at.committing.take() {
            match previous.outcome(shutdown).await {
                Some(Ok(())) => self.commit_done(&previous, at),
                // The worse of the two decides whether the producers are built again.
                Some(Err(earlier)) if earlier.needs_new_producer() => err = earlier,
                _ => {}
            }
        }
        Ok(self.recover(err, lanes, at, shutdown).await? == Step::Retry)
    }

    fn commit_done(&mut self, done: &Committing, at: &mut Position) {
        at.place.committed = StartFrom::Cursor(done.cursor.clone());
        tracing::debug!(
            events = done.events,
            commit_ms = done.started.elapsed().as_millis() as u64,
            "committed"
        );
        self.committed(done.events);
    }

    /// After a failed write or commit (nothing left open): goes back to the committed
    /// position, waits, and rebuilds the producers (re-reading the committed position) if
    /// they are gone.
    async fn recover(
        &mut self,
        err: SinkError,
        lanes: &mut Lanes,
        at: &mut Position,
        shutdown: &CancellationToken,
    ) -> Result<Step, ClientError> {
        if matches!(err, SinkError::Fenced) {
            return Err(SinkError::Fenced.into());
        }
        at.place.rewind();
        let rebuild = err.needs_new_producer();
        self.set_health(Health::LocalKafkaFailing(err.to_string()));
        let pause = self.backoff.next_delay();
        sleep(pause, shutdown).await;
        if rebuild {
            let Some((fresh, committed)) = self.connect(shutdown).await? else {
                return Ok(Step::Stop);
            };
            *lanes = fresh;
            at.place = Place::new(committed);
        }
        Ok(if shutdown.is_cancelled() {
            Step::Stop
        } else {
            Step::Retry
        })
    }

    /// Starts a fetch from `start`; `long_poll`: the server may wait for events up to the
    /// poll interval.
    fn fetch_from(&self, start: &StartFrom, long_poll: bool) -> PendingFetch {
        let wait = if long_poll {
            self.interval
        } else {
            Duration::ZERO
        };
        let (api, start, size) = (self.api.clone(), start.clone(), self.size);
        let task = FetchTask(tokio::spawn(
            async move { api.fetch(&start, size, wait).await },
        ));
        PendingFetch {
            answer: task,
            long_poll,
            asked: size,
        }
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

async fn sleep(pause: Duration, shutdown: &CancellationToken) {
    if pause.is_zero() {
        return;
    }
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(pause) => {}
    }
}
