//! Everything that talks to the source Kafka: [`KafkaSource`] consumes every partition of
//! the topics by assignment into the [`RecordBuffer`], storing an offset only once its
//! record is buffered, so any number of pods each hold them all;
//! [`KafkaReader`] reads metadata, watermarks and any retained offset range directly
//! (assign + seek), for reads the buffer cannot serve.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::config::SourceArgs;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use shared::Record;
use shared::kafka::record_of;
use shared::kafka::{Cluster, EofQuietContext, KafkaLog, OAuthTokens, topic_partitions};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::buffer::{RecordBuffer, TopicPartition};
use crate::metrics::ConsumerMetrics;
use crate::reader::Room;

/// How long one metadata, watermark or catch-up call to Kafka may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);
/// Catch-up consumers kept open for reuse; also the most catch-up reads at once.
const READER_POOL: usize = 4;
/// Most KiB librdkafka fetches ahead of the buffer (and, so, the most one fetch brings). At
/// 8 MiB the pod measured the same speed and some 5 MB more memory during a catch-up.
const PREFETCH_MAX_KBYTES: usize = 2 * 1024;

/// Settings every Kafka client of the pod shares.
fn pod_settings(config: &mut ClientConfig) -> &mut ClientConfig {
    config
        .set("isolation.level", "read_committed")
        .set("socket.keepalive.enable", "true")
        .set("reconnect.backoff.max.ms", "5000")
}

/// Whether the source answers and the pod holds partitions: what `/ready` reports.
#[derive(Debug, Default)]
pub struct SourceStatus {
    assigned: AtomicUsize,
    reachable: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl SourceStatus {
    pub fn assigned_partitions(&self) -> usize {
        self.assigned.load(Ordering::Relaxed)
    }

    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_reachable(&self, result: Result<(), String>) {
        let was = self.reachable.swap(result.is_ok(), Ordering::Relaxed);
        match (&result, was) {
            (Ok(()), false) => tracing::info!("source Kafka reachable"),
            (Err(err), true) => tracing::warn!(error = %err, "source Kafka unreachable; retrying"),
            _ => {}
        }
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = result.err();
    }
}

/// What the reader consumers are, for the log; end-of-partition is how a read learns it is
/// done.
const READER_ROLE: &str = "source Kafka reader";

/// The source consumer's callbacks: count errors, publish each partition's lag.
struct SourceContext {
    metrics: ConsumerMetrics,
    tokens: OAuthTokens,
    log: KafkaLog,
}

impl ClientContext for SourceContext {
    shared::answer_token_refresh!(tokens);
    shared::quiet_librdkafka_log!(log, "source Kafka consumer");

    fn error(&self, error: KafkaError, reason: &str) {
        // Every error is counted; the log says each kind once a minute.
        self.metrics
            .kafka_error(&shared::kafka::log::kind_of(&error));
        self.log.error("source Kafka consumer", &error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                // -1 is librdkafka's internal "unassigned" partition; lag -1 is unknown.
                if *partition >= 0 && p.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[topic.as_str(), &partition.to_string()])
                        .set(p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for SourceContext {}

/// How often the source consumer looks for partitions it does not hold yet (a topic
/// created after the pod started, partitions added); the reader's metadata says which.
const ASSIGN_EVERY: Duration = Duration::from_secs(1);

/// The pod's consumer of the source topics. It takes every partition by assignment, never
/// as a group member sharing them out: each pod holds all of them, so any pod serves any
/// cursor. Its group (`KAFKA_GROUP_ID`) only keeps the committed offsets, where a restarted
/// pod goes on from and where Kafka's tools read its lag.
pub struct KafkaSource {
    consumer: ClosedApart,
    buffer: Arc<RecordBuffer>,
    status: Arc<SourceStatus>,
    metrics: ConsumerMetrics,
    /// Where the partitions come from: the reader's metadata, refreshed on its own task.
    partitions: Arc<KafkaReader>,
    topics: Vec<String>,
    assigned: std::collections::BTreeSet<TopicPartition>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource").finish_non_exhaustive()
    }
}

impl KafkaSource {
    pub fn new(
        source: &SourceArgs,
        cluster: &Cluster,
        buffer: Arc<RecordBuffer>,
        status: Arc<SourceStatus>,
        metrics: ConsumerMetrics,
        partitions: Arc<KafkaReader>,
    ) -> Result<Self, KafkaError> {
        let context = SourceContext {
            metrics: metrics.clone(),
            tokens: cluster.tokens().clone(),
            log: cluster.log().clone(),
        };
        let config = cluster.config(|config| {
            pod_settings(config)
                .set("group.id", &source.group_id)
                .set("fetch.wait.max.ms", source.fetch_wait_ms.to_string())
                .set("enable.auto.commit", "true")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest")
                .set("enable.partition.eof", "false")
                .set("statistics.interval.ms", "5000")
                // What librdkafka fetches ahead of the buffer: its default (64 MiB) would sit on
                // top of BUFFER_MAX_BYTES while the pod catches up.
                .set(
                    "queued.max.messages.kbytes",
                    PREFETCH_MAX_KBYTES.to_string(),
                )
                // Fetch again as soon as the buffer took some (the default waits a second).
                .set("fetch.queue.backoff.ms", "5");
        });
        let consumer: StreamConsumer<SourceContext> = config.create_with_context(context)?;
        Ok(Self {
            consumer: ClosedApart(Some(consumer)),
            buffer,
            status,
            metrics,
            partitions,
            topics: source.topics(),
            assigned: std::collections::BTreeSet::new(),
        })
    }

    /// Takes the partitions of the topics that metadata lists and this consumer does not
    /// hold yet, each from its group's committed offset (else the earliest).
    fn assign_new(&mut self) {
        let new: Vec<TopicPartition> = self
            .partitions
            .partitions(&self.topics)
            .into_iter()
            .filter(|tp| !self.assigned.contains(tp))
            .collect();
        if new.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for tp in &new {
            // No offset: librdkafka starts from the committed one, else auto.offset.reset.
            tpl.add_partition(&tp.topic, tp.partition);
        }
        if let Err(err) = self.consumer.incremental_assign(&tpl) {
            self.metrics.kafka_error("assign");
            tracing::warn!(error = %err, partitions = new.len(), "partitions not assigned; retrying");
            return;
        }
        for tp in new {
            self.buffer.assign(tp.clone());
            self.assigned.insert(tp);
        }
        self.status
            .assigned
            .store(self.assigned.len(), Ordering::Relaxed);
        tracing::info!(
            partitions = self.assigned.len(),
            added = tpl.count(),
            "partitions assigned"
        );
    }

    /// Consumes until `shutdown`, then commits what was stored.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut failing = false;
        let mut assign = tokio::time::interval(ASSIGN_EVERY);
        assign.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => break,
                _ = assign.tick() => {
                    self.assign_new();
                    continue;
                }
                message = self.consumer.recv() => message,
            };
            match message {
                Ok(message) => {
                    if failing {
                        tracing::info!("consuming again");
                        failing = false;
                    }
                    let record = record_of(&message);
                    self.metrics
                        .events_consumed
                        .with_label_values(&[record.topic.as_str()])
                        .inc();
                    self.buffer.push_batch([record]);
                    // The record is in the buffer (or in Kafka for catch-up), so its offset
                    // may now be committed.
                    if let Err(err) = self.consumer.store_offset_from_message(&message) {
                        self.metrics.kafka_error("store_offset");
                        tracing::debug!(error = %err, "offset not stored");
                    }
                }
                Err(err) => {
                    self.metrics.kafka_error("consume");
                    if !failing {
                        tracing::warn!(error = %err, "consume failed; retrying");
                        failing = true;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        if let Err(err) = self
            .consumer
            .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        {
            tracing::debug!(error = %err, "final commit skipped");
        }
        // Given back before the close, so the close has no assignment to wait on.
        let mut assigned = TopicPartitionList::new();
        for tp in &self.assigned {
            assigned.add_partition(&tp.topic, tp.partition);
        }
        if let Err(err) = self.consumer.incremental_unassign(&assigned) {
            tracing::debug!(error = %err, "partitions not unassigned before the close");
        }
        tracing::info!("source consumer stopped");
    }
}

/// The source consumer, closed on a thread of its own when dropped, whether the pod stops
/// or its task is cancelled: librdkafka's close waits on the broker (the group's final
/// commit, the assignment given back), which must never hold a runtime thread.
struct ClosedApart(Option<StreamConsumer<SourceContext>>);

impl std::ops::Deref for ClosedApart {
    type Target = StreamConsumer<SourceContext>;

    fn deref(&self) -> &Self::Target {
        self.0
            .as_ref()
            .expect("the consumer is there until dropped")
    }
}

impl Drop for ClosedApart {
    fn drop(&mut self) {
        if let Some(consumer) = self.0.take() {
            let closing = std::thread::Builder::new()
                .name("source-consumer-close".into())
                .spawn(move || drop(consumer));
            if let Err(err) = closing {
                tracing::warn!(error = %err, "no thread to close the source consumer on; closing it here");
            }
        }
    }
}

/// Offsets `from..=to` of a partition that the source no longer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub from: i64,
    pub to: i64,
}

/// What a direct read of one partition returned.
#[derive(Debug)]
pub struct RangeRead {
    pub records: Vec<Record>,
    /// The offset to read next.
    pub next: i64,
    /// Offsets before the log start, skipped.
    pub missing: Option<Missing>,
    /// The answer's room, less what these records took.
    pub room: Room,
    /// It went on where the same reader's last read ended.
    pub resumed: bool,
}

impl RangeRead {
    fn empty(next: i64, missing: Option<Missing>, room: Room) -> Self {
        Self {
            records: Vec::new(),
            next,
            missing,
            room,
            resumed: false,
        }
    }
}

/// Reads metadata, watermarks and offset ranges from the source, outside the group.
///
/// A catch-up reads a partition in steps, one per request of the same cursor. A reader
/// whose read ended with more of the partition to come stays assigned where it ended (a
/// [`Session`]), so the next step goes on from what librdkafka already fetched ahead
/// instead of assigning, seeking and fetching that partition again.
pub struct KafkaReader {
    cluster: Cluster,
    /// The readers' group id (they are assigned partitions, never members).
    group: String,
    /// Readers with no assignment, for metadata and new reads.
    pool: Arc<Mutex<Vec<Reader>>>,
    /// Readers left where their last read ended, oldest first.
    sessions: Mutex<Vec<Session>>,
    permits: Semaphore,
    partitions: RwLock<BTreeMap<String, i32>>,
    cluster_id: RwLock<Option<String>>,
    status: Arc<SourceStatus>,
}

type Reader = BaseConsumer<EofQuietContext>;

/// Readers kept assigned where a read ended; beyond this the oldest is released. Each holds
/// at most [`READ_AHEAD_KBYTES`] fetched ahead (and one fetch in flight).
const MAX_SESSIONS: usize = 8;
/// What one reader fetches ahead of what it was asked for. 1 MiB caught up no faster and
/// held some 8 MB more across the sessions of a six-partition catch-up.
const READ_AHEAD_KBYTES: usize = 512;
/// A session unused for this long is released, and what it fetched ahead with it.
const SESSION_IDLE: Duration = Duration::from_secs(30);

/// A reader assigned to one partition, where its last read ended.
struct Session {
    reader: Reader,
    tp: TopicPartition,
    /// Where the next read must start to go on with this reader.
    next: i64,
    /// A record polled that the last answer had no room for: the first of the next read.
    held: Option<Record>,
    parked: Instant,
}

/// How a read left its reader.
enum After {
    /// With more of the partition to come: kept assigned for the next read.
    Park { held: Option<Record> },
    /// At the end of what it may read: unassigned.
    Release,
}

impl std::fmt::Debug for KafkaReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaReader")
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl KafkaReader {
    pub fn new(cluster: &Cluster, group_id: &str, status: Arc<SourceStatus>) -> Self {
        Self {
            cluster: cluster.clone(),
            group: format!("{group_id}-reader"),
            pool: Arc::default(),
            sessions: Mutex::default(),
            permits: Semaphore::new(READER_POOL),
            partitions: RwLock::default(),
            cluster_id: RwLock::default(),
            status,
        }
    }

    fn new_reader(&self) -> Result<Reader, KafkaError> {
        self.cluster.consumer(
            |config| {
                pod_settings(config)
                    .set("group.id", &self.group)
                    .set("enable.auto.commit", "false")
                    .set("enable.auto.offset.store", "false")
                    // Offsets deleted between the watermark query and the fetch must
                    // surface as an error (and so as a gap), never as a silent jump to
                    // the new log start.
                    .set("auto.offset.reset", "error")
                    .set("enable.partition.eof", "true")
                    .set("fetch.wait.max.ms", "50")
                    // Read-ahead for the next step of a catch-up, bounded: librdkafka's
                    // defaults (64 MiB, 100,000 records) would fetch far more than a
                    // session serves before it is released.
                    .set("queued.max.messages.kbytes", READ_AHEAD_KBYTES.to_string())
                    .set("queued.min.messages", "1000")
                    // Fetch again as soon as a read took some: at the read-ahead bound
                    // librdkafka's default waits a second, and a catch-up with it.
                    .set("fetch.queue.backoff.ms", "5")
                    .set("fetch.max.bytes", (READ_AHEAD_KBYTES * 1024).to_string())
                    // librdkafka wants fetch.max.bytes >= message.max.bytes. A consumer sends
                    // no message that large, and a record batch larger than the fetch still
                    // comes whole, so this bounds nothing else.
                    .set("message.max.bytes", (READ_AHEAD_KBYTES * 1024).to_string())
                    .set(
                        "max.partition.fetch.bytes",
                        (READ_AHEAD_KBYTES * 1024).to_string(),
                    );
            },
            EofQuietContext::of(READER_ROLE, &self.cluster),
        )
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, Vec<Reader>> {
        self.pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, Vec<Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One of the [`READER_POOL`] reads or metadata calls under way at once.
    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, KafkaError> {
        self.permits
            .acquire()
            .await
            .map_err(|_| KafkaError::Canceled)
    }

    /// Runs `work` on a pooled (unassigned) consumer on the blocking thread pool.
    async fn with_consumer<T, F>(&self, work: F) -> Result<T, KafkaError>
    where
        T: Send + 'static,
        F: FnOnce(&Reader) -> Result<T, KafkaError> + Send + 'static,
    {
        let _permit = self.permit().await?;
        let pooled = self.lock_pool().pop();
        let consumer = match pooled {
            Some(c) => c,
            None => self.new_reader()?,
        };
        // Token refreshes wait in the queue between reads; without tokens nothing does.
        let refreshes = self.cluster.tokens().in_use();
        let (consumer, result) = tokio::task::spawn_blocking(move || {
            if refreshes {
                serve_events(&consumer);
            }
            let result = work(&consumer);
            (consumer, result)
        })
        .await
        .map_err(|_| KafkaError::Canceled)?;
        self.lock_pool().push(consumer);
        result
    }

    /// The session that goes on at `from` in `tp`, if one is parked there.
    fn resume(&self, tp: &TopicPartition, from: i64) -> Option<Session> {
        let mut sessions = self.lock_sessions();
        let at = sessions
            .iter()
            .position(|s| s.tp == *tp && s.next == from)?;
        Some(sessions.remove(at))
    }

    /// A reader for a new read: an unassigned one, else a new one while sessions have room,
    /// else the oldest session's (its assignment is replaced).
    fn reader_for_new_read(&self) -> Result<Reader, KafkaError> {
        if let Some(reader) = self.lock_pool().pop() {
            return Ok(reader);
        }
        let oldest = {
            let mut sessions = self.lock_sessions();
            (sessions.len() >= MAX_SESSIONS).then(|| sessions.remove(0))
        };
        match oldest {
            Some(session) => Ok(session.reader),
            None => self.new_reader(),
        }
    }

    /// Keeps `session` for the next read; the oldest beyond [`MAX_SESSIONS`] is released.
    fn park(&self, session: Session) {
        let evicted = {
            let mut sessions = self.lock_sessions();
            sessions.push(session);
            let over = sessions.len().saturating_sub(MAX_SESSIONS);
            sessions.drain(..over).collect::<Vec<_>>()
        };
        self.release(evicted);
    }

    /// Unassigns these sessions' readers (off the runtime) and returns them to the pool.
    fn release(&self, sessions: Vec<Session>) {
        if sessions.is_empty() {
            return;
        }
        let pool = Arc::clone(&self.pool);
        tokio::task::spawn_blocking(move || {
            for session in sessions {
                match session.reader.unassign() {
                    Ok(()) => pool
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(session.reader),
                    // A reader that cannot unassign is closed; a new one takes its place.
                    Err(err) => tracing::debug!(error = %err, "reader closed"),
                }
            }
        });
    }

    /// Releases the sessions no read went on with for [`SESSION_IDLE`].
    fn release_idle_sessions(&self) {
        let idle = {
            let mut sessions = self.lock_sessions();
            let (idle, live) = std::mem::take(&mut *sessions)
                .into_iter()
                .partition(|s| s.parked.elapsed() >= SESSION_IDLE);
            *sessions = live;
            idle
        };
        self.release(idle);
    }
    /// Re-reads how many partitions each topic has; records whether the source answered.
    pub async fn refresh(&self, topics: &[String]) -> Result<(), KafkaError> {
        let topics_owned = topics.to_vec();
        let result = self
            .with_consumer(move |c| {
                let cluster = c.client().fetch_cluster_id(KAFKA_TIMEOUT);
                let mut counts = BTreeMap::new();
                for topic in &topics_owned {
                    let metadata = c.fetch_metadata(Some(topic), KAFKA_TIMEOUT)?;
                    let count = topic_partitions(&metadata, topic).len() as i32;
                    counts.insert(topic.clone(), count);
                }
                Ok((cluster, counts))
            })
            .await;
        match result {
            Ok((cluster, counts)) => {
                if cluster.is_some() {
                    *self
                        .cluster_id
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = cluster;
                }
                let missing: Vec<&String> = counts
                    .iter()
                    .filter(|(_, n)| **n == 0)
                    .map(|(t, _)| t)
                    .collect();
                let verdict = if missing.is_empty() {
                    Ok(())
                } else {
                    Err(format!("source topics not found: {missing:?}"))
                };
                self.status.set_reachable(verdict);
                *self
                    .partitions
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = counts;
                Ok(())
            }
            Err(err) => {
                self.status.set_reachable(Err(err.to_string()));
                Err(err)
            }
        }
    }

    /// Refreshes metadata every `every` until `shutdown`.
    pub async fn watch(
        self: Arc<Self>,
        topics: Vec<String>,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        loop {
            let _ = self.refresh(&topics).await;
            self.serve_idle_readers();
            self.release_idle_sessions();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Serves what librdkafka queued for the readers no request is using, so an idle
    /// reader's OAUTHBEARER token is renewed before it expires.
    fn serve_idle_readers(&self) {
        if !self.cluster.tokens().in_use() {
            return;
        }
        for consumer in self.lock_pool().iter() {
            serve_events(consumer);
        }
    }

    /// The source cluster's id, once metadata has been read.
    pub fn cluster_id(&self) -> Option<String> {
        self.cluster_id
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Every partition of these topics, as last seen in metadata.
    pub fn partitions(&self, topics: &[String]) -> Vec<TopicPartition> {
        let counts = self
            .partitions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        topics
            .iter()
            .flat_map(|t| {
                (0..counts.get(t).copied().unwrap_or(0))
                    .map(move |p| TopicPartition::new(t.as_str(), p))
            })
            .collect()
    }

    /// `(low, high)` watermarks of each partition.
    pub async fn watermarks(
        &self,
        tps: Vec<TopicPartition>,
    ) -> Result<Vec<(TopicPartition, i64, i64)>, KafkaError> {
        self.with_consumer(move |c| {
            tps.into_iter()
                .map(|tp| {
                    let (low, high) = c.fetch_watermarks(&tp.topic, tp.partition, KAFKA_TIMEOUT)?;
                    Ok((tp, low, high))
                })
                .collect()
        })
        .await
    }

    /// Up to `max` records of a partition from `from` that fit in `room`, stopping before
    /// `stop` (the log end when `None`) and, with what it has, at `deadline` (else after
    /// [`KAFKA_TIMEOUT`]). Offsets before the log start are skipped and reported as missing.
    /// Goes on with the session parked at `from` when there is one.
    pub async fn read_range(
        &self,
        tp: TopicPartition,
        from: i64,
        max: usize,
        stop: Option<i64>,
        room: Room,
        deadline: Option<Instant>,
    ) -> Result<RangeRead, KafkaError> {
        let _permit = self.permit().await?;
        let (reader, resumed) = match self.resume(&tp, from) {
            Some(session) => (session.reader, Some(session.held)),
            None => (self.reader_for_new_read()?, None),
        };
        let step = ReadStep {
            from,
            max,
            stop,
            deadline,
        };
        let read_tp = tp.clone();
        // A reader that failed, left assigned or not, is dropped in the closure, so closed
        // here (closing blocks); a new one takes its place.
        let (reader, read, after) = tokio::task::spawn_blocking(move || {
            step.run(&reader, &read_tp, room, resumed)
                .map(|(read, after)| (reader, read, after))
        })
        .await
        .map_err(|_| KafkaError::Canceled)??;
        match after {
            After::Park { held } => self.park(Session {
                reader,
                tp,
                next: read.next,
                held,
                parked: Instant::now(),
            }),
            After::Release => self.lock_pool().push(reader),
        }
        Ok(read)
    }
}

/// One read of a partition ([`KafkaReader::read_range`]).
struct ReadStep {
    from: i64,
    max: usize,
    stop: Option<i64>,
    deadline: Option<Instant>,
}

impl ReadStep {
    /// Reads with `c`: assigned at `from` afresh, or, when `resumed` (with the record the
    /// last read held back), going on where it stands.
    fn run(
        self,
        c: &Reader,
        tp: &TopicPartition,
        mut room: Room,
        resumed: Option<Option<Record>>,
    ) -> Result<(RangeRead, After), KafkaError> {
        let went_on = resumed.is_some();
        let mut missing = None;
        let mut from = self.from;
        let stop;
        let mut pending = None;
        match resumed {
            Some(held) => {
                // The log end is where the reader meets end-of-partition.
                stop = self.stop.unwrap_or(i64::MAX);
                pending = held;
            }
            None => {
                let (low, high) = c.fetch_watermarks(&tp.topic, tp.partition, KAFKA_TIMEOUT)?;
                missing = (from < low).then(|| Missing { from, to: low - 1 });
                from = from.max(low);
                stop = self.stop.map_or(high, |s| s.min(high));
                if from >= stop || self.max == 0 {
                    c.unassign()?;
                    return Ok((RangeRead::empty(from, missing, room), After::Release));
                }
                assign_at(c, tp, from)?;
            }
        }
        let timeout = Instant::now() + KAFKA_TIMEOUT;
        let deadline = self.deadline.map_or(timeout, |d| d.min(timeout));
        let mut records = Vec::new();
        let mut next = from;
        let after = loop {
            if records.len() >= self.max {
                break After::Park {
                    held: pending.take(),
                };
            }
            if next >= stop {
                break After::Release;
            }
            let record = match pending.take() {
                Some(record) => record,
                None => {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        break After::Park { held: None };
                    };
                    match c.poll(left) {
                        None => break After::Park { held: None },
                        Some(Err(KafkaError::PartitionEOF(_))) => {
                            // At the readable end (the last stable offset for
                            // read_committed): skip past any transaction markers, never
                            // past unread records.
                            next = fetch_position(c, tp).map_or(next, |p| p.clamp(next, stop));
                            break After::Release;
                        }
                        Some(Err(KafkaError::MessageConsumption(
                            RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange,
                        ))) => {
                            // The source deleted offsets after the watermarks were read. With
                            // records in hand, return them: the next read finds the gap. Else
                            // report the newly deleted offsets too and read on from the new
                            // start.
                            if !records.is_empty() {
                                break After::Release;
                            }
                            let (low, _) =
                                c.fetch_watermarks(&tp.topic, tp.partition, KAFKA_TIMEOUT)?;
                            // Never past `stop`: what follows it is served from the buffer.
                            let resume = low.min(stop);
                            if resume <= next {
                                break After::Release;
                            }
                            missing = Some(Missing {
                                from: missing.as_ref().map_or(next, |m| m.from),
                                to: resume - 1,
                            });
                            next = resume;
                            if next < stop {
                                assign_at(c, tp, next)?;
                            }
                            continue;
                        }
                        Some(Err(err)) => {
                            c.unassign()?;
                            return Err(err);
                        }
                        Some(Ok(m)) if m.topic() != tp.topic || m.partition() != tp.partition => {
                            continue;
                        }
                        Some(Ok(m)) if m.offset() < next => continue,
                        Some(Ok(m)) => record_of(&m),
                    }
                }
            };
            if record.offset >= stop {
                next = stop;
                break After::Release;
            }
            if !room.take(&record) {
                break After::Park { held: Some(record) };
            }
            next = record.offset + 1;
            records.push(record);
        };
        if let After::Release = after {
            c.unassign()?;
        }
        Ok((
            RangeRead {
                records,
                next,
                missing,
                room,
                resumed: went_on,
            },
            after,
        ))
    }
}

fn assign_at(c: &Reader, tp: &TopicPartition, offset: i64) -> Result<(), KafkaError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(offset))?;
    c.assign(&tpl)
}

/// Serves what librdkafka queued for a reader between reads (a token refresh, errors). A
/// reader holds no assignment between reads, so nothing it polls here is a record.
fn serve_events(consumer: &Reader) {
    // Bounded: what is queued now, not what keeps arriving.
    for _ in 0..64 {
        match consumer.poll(Duration::ZERO) {
            None => return,
            Some(Ok(m)) => {
                tracing::debug!(
                    topic = m.topic(),
                    offset = m.offset(),
                    "stray record dropped"
                );
            }
            Some(Err(_)) => {}
        }
    }
}

fn fetch_position(consumer: &Reader, tp: &TopicPartition) -> Option<i64> {
    let positions = consumer.position().ok()?;
    match positions.find_partition(&tp.topic, tp.partition)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}
