//! [`LocalKafka`]: writes each batch into the local Kafka in one transaction together with
//! the cursor that follows it (to a compacted state topic, as MirrorMaker 2 does since
//! KIP-618), so a reader with `read_committed` sees a batch exactly when the saved position
//! moved past it. A crash at any point leaves either both or neither. Key, value, headers
//! and timestamp are kept, on the source's partition number when the destination has it,
//! and every copy names its source topic, partition and offset in three more headers.
//! A client writes through two lanes, two transactional producers taking turns: once local
//! Kafka holds a transaction's records, the other lane writes the next batch while this one
//! commits, and the client commits them in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use shared::Cursor;
use shared::kafka::{Cluster, EofQuietContext, send_when_room, topic_partitions};
use shared::wire::{BatchView, RecordRef};

use crate::destination::Destination;
use crate::pipeline::Lane;
use crate::topics::LocalTopics;

/// Headers every copy carries, naming where it came from, so anyone can audit the copy.
pub const SOURCE_TOPIC_HEADER: &str = "kafka-replicator.source.topic";
pub const SOURCE_PARTITION_HEADER: &str = "kafka-replicator.source.partition";
pub const SOURCE_OFFSET_HEADER: &str = "kafka-replicator.source.offset";

/// Names, on the records a client writes only to abort them, the client that ends what it
/// left open (see [`crate::hanging`]); a `read_committed` reader never sees them.
pub const ABORTS_HELD_OPEN_HEADER: &str = "kafka-replicator.aborts-held-open";

/// The key of the records [`LocalKafka::abort_over`] writes: the client's, but never its
/// position's key (the client id), which the state topic's readers look for.
pub fn abort_record_key(client_id: &str) -> String {
    format!("{client_id}{ABORT_KEY_SUFFIX}")
}

/// Appended to the client id for the key of the records written only to abort them.
const ABORT_KEY_SUFFIX: &str = ".aborts-held-open";

/// Appended to the client id for the transactional id of the second lane.
pub const SECOND_LANE_SUFFIX: &str = ".lane2";

/// Most KiB of records one lane holds before local Kafka acknowledges them.
const QUEUE_MAX_KBYTES: usize = 4 * 1024;

/// How long a transaction may stay open before the broker aborts it.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one metadata or transaction-control call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a batch (or the start-up) did not go through.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create the local Kafka producer: {0}")]
    Create(KafkaError),
    #[error("local Kafka did not accept the transactional producer: {0}")]
    Init(KafkaError),
    #[error("cannot read the saved position from {topic}: {source}")]
    LoadState {
        topic: String,
        source: StateReadError,
    },
    #[error("the saved position in {topic} is not a valid cursor")]
    BadState { topic: String },
    #[error("local Kafka refused a record for {topic}: {source}")]
    Delivery { topic: String, source: KafkaError },
    #[error("the transaction did not commit: {0}")]
    Transaction(KafkaError),
    #[error("another client with the same CLIENT_ID took over; this one stops writing")]
    Fenced,
    /// The open transaction outlived `transaction.timeout.ms` (the machine slept, or the
    /// process was frozen): the broker aborted it and fenced this producer's epoch. Nothing
    /// of it was committed, so a new producer carries on from the saved position.
    #[error(
        "the transaction stayed open {open_secs} s, past transaction.timeout.ms (was the machine asleep?); local Kafka aborted it"
    )]
    TimedOut { open_secs: u64 },
}

impl SinkError {
    /// Whether the producer can no longer be used and must be built again.
    pub fn needs_new_producer(&self) -> bool {
        match self {
            Self::Transaction(err) | Self::Delivery { source: err, .. } => {
                matches!(err, KafkaError::Transaction(e) if e.is_fatal())
            }
            Self::Fenced | Self::TimedOut { .. } | Self::Init(_) => true,
            _ => false,
        }
    }
}

/// Local Kafka's acknowledgements of the open transaction's records, counted as the
/// producer's poll thread reports them: no allocation or task wake-up per record. Each
/// record carries its transaction's number, so late reports of an aborted one are ignored.
#[derive(Default)]
struct Deliveries {
    /// Number of the open transaction.
    current: AtomicUsize,
    /// Its records acknowledged so far.
    acknowledged: AtomicU64,
    /// The count the committer waits for (`u64::MAX` while nobody waits).
    awaited: AtomicU64,
    /// Its first refused record: the topic and why.
    refused: Mutex<Option<(String, KafkaError)>>,
    done: tokio::sync::Notify,
    tokens: shared::kafka::OAuthTokens,
    log: shared::kafka::KafkaLog,
}

impl Deliveries {
    /// Starts counting for transaction `number`.
    fn reset(&self, number: usize) {
        self.current.store(number, Ordering::SeqCst);
        self.acknowledged.store(0, Ordering::SeqCst);
        self.awaited.store(u64::MAX, Ordering::SeqCst);
        *self.refused.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Waits until `sent` records are acknowledged, or one is refused.
    async fn all(&self, sent: u64) -> Result<(), SinkError> {
        loop {
            let done = self.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            self.awaited.store(sent, Ordering::SeqCst);
            if let Some((topic, source)) = self
                .refused
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            {
                return Err(SinkError::Delivery { topic, source });
            }
            if self.acknowledged.load(Ordering::SeqCst) >= sent {
                self.awaited.store(u64::MAX, Ordering::SeqCst);
                return Ok(());
            }
            done.await;
        }
    }
}

impl ClientContext for Deliveries {
    shared::answer_token_refresh!(tokens);
    shared::quiet_librdkafka_log!(log, "local Kafka producer");

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error("local Kafka producer", &error, reason);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, transaction: usize) {
        if transaction != self.current.load(Ordering::SeqCst) {
            return;
        }
        match result {
            Ok(_) => {
                let acknowledged = self.acknowledged.fetch_add(1, Ordering::SeqCst) + 1;
                if acknowledged >= self.awaited.load(Ordering::SeqCst) {
                    self.done.notify_one();
                }
            }
            Err((err, message)) => {
                self.refused
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert_with(|| (message.topic().to_owned(), err.clone()));
                self.done.notify_one();
            }
        }
    }
}

/// The local Kafka, as a transactional destination for replicated records.
pub struct LocalKafka {
    producer: ThreadedProducer<Deliveries>,
    /// Number of the last transaction begun.
    transactions: AtomicUsize,
    /// When the open transaction began, by the wall clock (it runs on while a laptop
    /// sleeps, unlike the monotonic one); `None` between transactions.
    began: std::sync::Mutex<Option<std::time::SystemTime>>,
    /// The producer's `transaction.timeout.ms`, the user's value if they set one.
    transaction_timeout: Duration,
    local: Cluster,
    destination: Destination,
    topics: Arc<LocalTopics>,
    state_topic: String,
    client_id: String,
}

impl std::fmt::Debug for LocalKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKafka")
            .field("brokers", &self.local.brokers())
            .field("destination", &self.destination)
            .field("state_topic", &self.state_topic)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// Runs a blocking librdkafka call off the async runtime.
async fn blocking<T: Send + 'static, E: From<KafkaError> + Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| KafkaError::Canceled)?
}

/// Waits, briefly, until librdkafka has retired the delivery reports already awaited.
///
/// `commit_transaction` flushes first, and rust-rdkafka's flush polls for up to 100 ms
/// whenever the queue is not yet empty. A report already counted by [`Deliveries`] stays in
/// flight for a few microseconds, until the producer's poll thread drops it; the flush
/// then sleeps a whole 100 ms for an event that never comes, about once a second.
fn settle(producer: &ThreadedProducer<Deliveries>) {
    let deadline = std::time::Instant::now() + SETTLE_AT_MOST;
    while producer.in_flight_count() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// Longest the first connection to local Kafka is waited for before the transactional
/// init takes over.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest [`settle`] waits before leaving the rest to the flush.
const SETTLE_AT_MOST: Duration = Duration::from_millis(50);

/// A local Kafka transaction being filled: batches handed to the producer, their
/// acknowledgements awaited at commit.
pub struct Transaction {
    number: usize,
    /// Records handed to the producer in it.
    sent: u64,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl LocalKafka {
    /// Connects both lanes of client `client_id` (transactional ids `client_id` and
    /// `client_id` + [`SECOND_LANE_SUFFIX`]), fencing any earlier instance and aborting what
    /// it left open.
    pub async fn connect_lanes(
        local: &Cluster,
        destination: Destination,
        state_topic: &str,
        client_id: &str,
    ) -> Result<[Arc<Self>; 2], SinkError> {
        let topics = Arc::new(LocalTopics::new(local).map_err(SinkError::Create)?);
        // Created in the background: a cluster that cannot create topics through the admin
        // API (or is slow to) must not hold up the start; the first write auto-creates it.
        let (admin, name) = (Arc::clone(&topics), state_topic.to_owned());
        tokio::spawn(async move { admin.ensure_state_topic(&name).await });
        let second = format!("{client_id}{SECOND_LANE_SUFFIX}");
        let (first, second) = tokio::try_join!(
            Self::connect(
                local,
                destination.clone(),
                Arc::clone(&topics),
                state_topic,
                client_id,
                client_id,
            ),
            Self::connect(local, destination, topics, state_topic, client_id, &second,),
        )?;
        Ok([Arc::new(first), Arc::new(second)])
    }

    /// Connects one lane as `transactional_id`, fencing any earlier instance with that id
    /// and aborting what it left open.
    async fn connect(
        local: &Cluster,
        destination: Destination,
        topics: Arc<LocalTopics>,
        state_topic: &str,
        client_id: &str,
        transactional_id: &str,
    ) -> Result<Self, SinkError> {
        let config = local.config(|c| {
            c.set("transactional.id", transactional_id)
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set(
                    "transaction.timeout.ms",
                    TRANSACTION_TIMEOUT.as_millis().to_string(),
                )
                .set(
                    "message.timeout.ms",
                    TRANSACTION_TIMEOUT.as_millis().to_string(),
                )
                // Every batch is awaited before its commit, so lingering only adds latency;
                // records enqueued while a request is in flight still go out together.
                .set("linger.ms", "1")
                .set("compression.type", "lz4")
                // Bounds what a lane holds unacknowledged (librdkafka's default is 1 GiB): when
                // local Kafka lags, the client waits instead of growing.
                .set("queue.buffering.max.kbytes", QUEUE_MAX_KBYTES.to_string())
                // Records go into requests by reference, not copied into them once more: with
                // acknowledgements lagging, that copy of everything in flight was a quarter of
                // the client's heap.
                .set("message.copy.max.bytes", "0");
        });
        let transaction_timeout = config
            .get("transaction.timeout.ms")
            .and_then(|ms| ms.parse().ok())
            .map_or(TRANSACTION_TIMEOUT, Duration::from_millis);
        let producer: ThreadedProducer<Deliveries> = config
            .create_with_context(Deliveries {
                tokens: local.tokens().clone(),
                log: local.log().clone(),
                ..Deliveries::default()
            })
            .map_err(SinkError::Create)?;
        let p = producer.clone();
        blocking(move || {
            // The coordinator is looked up through a connected broker; asked before any is
            // connected, librdkafka tries again only after 500 ms. Connect first: if this
            // fails, the init below reports why.
            let _ = p.client().fetch_metadata(None, CONNECT_TIMEOUT);
            p.init_transactions(CALL_TIMEOUT)
        })
        .await
        .map_err(SinkError::Init)?;
        Ok(Self {
            producer,
            transactions: AtomicUsize::new(0),
            began: std::sync::Mutex::default(),
            transaction_timeout,
            local: local.clone(),
            destination,
            topics,
            state_topic: state_topic.to_owned(),
            client_id: client_id.to_owned(),
        })
    }

    /// The local Kafka cluster.
    pub(crate) fn cluster(&self) -> &Cluster {
        &self.local
    }

    /// The naming rule of the destination topics.
    pub(crate) fn destination(&self) -> &Destination {
        &self.destination
    }

    /// The client id (the state topic's key).
    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Writes one record to each of `partitions` in a transaction and aborts it, once local
    /// Kafka holds them all: the abort markers close whatever range this lane's producer
    /// left open on those partitions (the broker ends a producer's open range at its next
    /// marker). A `read_committed` reader sees none of it. Each record has a key (a
    /// compacted topic, the state topic first, refuses a record without one), and not the
    /// client id, so it is never taken for a position of the client.
    pub(crate) async fn abort_over(&self, partitions: &[(String, i32)]) -> Result<(), SinkError> {
        let key = abort_record_key(&self.client_id);
        let mut txn = self.begin()?;
        for (topic, partition) in partitions {
            let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
                key: ABORTS_HELD_OPEN_HEADER,
                value: Some(self.client_id.as_bytes()),
            });
            let record: BaseRecord<'_, [u8], [u8], usize> =
                BaseRecord::with_opaque_to(topic, txn.number)
                    .key(key.as_bytes())
                    .payload(&[][..])
                    .partition(*partition)
                    .headers(headers);
            if let Err(err) = self.enqueue(record, &mut txn).await {
                return Err(self.abandon(err).await);
            }
        }
        if let Err(err) = self.producer.context().all(txn.sent).await {
            return Err(self.abandon(err).await);
        }
        let p = self.producer.clone();
        let result = blocking(move || p.abort_transaction(CALL_TIMEOUT))
            .await
            .map_err(|e| self.classify(e));
        self.ended();
        result
    }

    /// The last committed position of this client, or `None` for a new client.
    pub async fn load_cursor(&self) -> Result<Option<Cursor>, SinkError> {
        let (local, topic, key) = (
            self.local.clone(),
            self.state_topic.clone(),
            self.client_id.clone(),
        );
        let latest = blocking(move || read_saved(&local, &topic, &key, CALL_TIMEOUT))
            .await
            .map_err(|source| SinkError::LoadState {
                topic: self.state_topic.clone(),
                source,
            })?;
        latest
            .map(|saved| {
                Cursor::decode(&saved.cursor).map_err(|_| SinkError::BadState {
                    topic: self.state_topic.clone(),
                })
            })
            .transpose()
    }

    /// Destination topic and partition count for each source topic in `records`, creating
    /// missing destinations with the partition count the cursor shows for the source.
    async fn plan<'a>(
        &self,
        records: impl Iterator<Item = RecordRef<'a>>,
        next: &Cursor,
    ) -> HashMap<&'a str, (String, i32)> {
        let mut plan: HashMap<&'a str, (String, i32)> = HashMap::new();
        let mut needed = None;
        for record in records {
            if plan.contains_key(record.topic) {
                continue;
            }
            let topic = self.destination.topic_for(record.topic);
            let wanted = *needed
                .get_or_insert_with(|| self.destination.partitions_needed(next))
                .get(&topic)
                .unwrap_or(&(record.partition + 1));
            let partitions = self.topics.partitions(&topic, wanted).await;
            plan.insert(record.topic, (topic, partitions));
        }
        plan
    }

    fn begin(&self) -> Result<Transaction, SinkError> {
        let number = self.transactions.fetch_add(1, Ordering::SeqCst) + 1;
        self.producer.context().reset(number);
        self.producer
            .begin_transaction()
            .map_err(|e| self.classify(e))?;
        *self
            .began
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(std::time::SystemTime::now());
        Ok(Transaction { number, sent: 0 })
    }

    /// Aborts the open transaction unless `err` means the producer itself is gone; returns
    /// the error to act on.
    async fn abandon(&self, err: SinkError) -> SinkError {
        if err.needs_new_producer() {
            return err;
        }
        let p = self.producer.clone();
        match blocking(move || p.abort_transaction(CALL_TIMEOUT)).await {
            Ok(()) => err,
            Err(abort) => {
                tracing::warn!(error = %abort, "aborting the failed transaction failed too");
                self.classify(abort)
            }
        }
    }

    fn classify(&self, err: KafkaError) -> SinkError {
        match &err {
            KafkaError::Transaction(e)
                if e.code() == RDKafkaErrorCode::Fenced
                    || e.code() == RDKafkaErrorCode::ProducerFenced =>
            {
                fence_cause(self.open_for(), self.transaction_timeout)
            }
            _ => SinkError::Transaction(err),
        }
    }

    /// No transaction is open any more.
    fn ended(&self) {
        *self
            .began
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// How long the open transaction has been open, by the wall clock.
    fn open_for(&self) -> Option<Duration> {
        let began = *self
            .began
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        began.and_then(|b| b.elapsed().ok())
    }

    async fn produce_all(
        &self,
        batch: &BatchView,
        next: &Cursor,
        txn: &mut Transaction,
    ) -> Result<(), SinkError> {
        let plan = self.plan(batch.records(), next).await;
        let (mut partition_text, mut offset_text) = (itoa::Buffer::new(), itoa::Buffer::new());
        for record in batch.records() {
            let (topic, partitions) = &plan[record.topic];
            let partitions = *partitions;
            let mut headers = OwnedHeaders::new_with_capacity(record.header_count() + 3);
            for (key, value) in record.headers() {
                headers = shared::kafka::add_header(headers, key, value);
            }
            headers = headers
                .insert(Header {
                    key: SOURCE_TOPIC_HEADER,
                    value: Some(record.topic),
                })
                .insert(Header {
                    key: SOURCE_PARTITION_HEADER,
                    value: Some(partition_text.format(record.partition).as_bytes()),
                })
                .insert(Header {
                    key: SOURCE_OFFSET_HEADER,
                    value: Some(offset_text.format(record.offset).as_bytes()),
                });
            let mut out: BaseRecord<'_, [u8], [u8], usize> =
                BaseRecord::with_opaque_to(topic, txn.number).headers(headers);
            if let Some(key) = record.key {
                out = out.key(key);
            }
            if let Some(value) = record.value {
                out = out.payload(value);
            }
            if let Some(ts) = record.timestamp {
                out = out.timestamp(ts);
            }
            // Same partition as the source when the destination has it; else by key.
            if record.partition < partitions {
                out = out.partition(record.partition);
            }
            self.enqueue(out, txn).await?;
        }
        Ok(())
    }

    /// Enqueues one record of `txn` in order, waiting while the local queue is full; its
    /// acknowledgement is counted by [`Deliveries`].
    async fn enqueue<'a>(
        &self,
        out: BaseRecord<'a, [u8], [u8], usize>,
        txn: &mut Transaction,
    ) -> Result<(), SinkError> {
        // rdkafka hands a refused record back in the error, as it is.
        #[allow(clippy::result_large_err)]
        let send = |r| self.producer.send(r);
        match send_when_room(out, send).await {
            Ok(()) => {
                txn.sent += 1;
                Ok(())
            }
            Err((source, back)) => Err(SinkError::Delivery {
                topic: back.topic.to_owned(),
                source,
            }),
        }
    }
}

impl Lane for LocalKafka {
    type Txn = Transaction;

    /// Adds a batch to `open` (a new transaction when `None`) and hands it to the producer
    /// without waiting for local Kafka: the acknowledgements are awaited at
    /// [`Lane::seal`], so the next batch can be fetched and written meanwhile. On
    /// failure the transaction is aborted.
    async fn append(
        &self,
        open: Option<Transaction>,
        batch: &BatchView,
        next: &Cursor,
    ) -> Result<Transaction, SinkError> {
        let mut txn = match open {
            Some(txn) => txn,
            None => self.begin()?,
        };
        if let Err(err) = self.produce_all(batch, next, &mut txn).await {
            return Err(self.abandon(err).await);
        }
        Ok(txn)
    }

    /// Writes `next` (the cursor after the last batch) to the state topic and waits until
    /// local Kafka holds every record of `txn`, so another lane may write after them; on
    /// failure aborts it.
    async fn seal(&self, txn: &mut Transaction, next: &Cursor) -> Result<(), SinkError> {
        let cursor = next.encode();
        let state: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(&self.state_topic, txn.number)
                .key(self.client_id.as_bytes())
                .payload(cursor.as_bytes())
                .partition(0);
        let written = match self.enqueue(state, txn).await {
            Ok(()) => self.producer.context().all(txn.sent).await,
            Err(err) => Err(err),
        };
        match written {
            Ok(()) => Ok(()),
            Err(err) => Err(self.abandon(err).await),
        }
    }

    /// Commits `txn`, [sealed](Self::seal) before; on failure aborts it.
    async fn commit(&self, _txn: Transaction) -> Result<(), SinkError> {
        let p = self.producer.clone();
        let result = blocking(move || {
            settle(&p);
            p.commit_transaction(CALL_TIMEOUT)
        })
        .await
        .map_err(|e| self.classify(e));
        let result = match result {
            Ok(()) => Ok(()),
            Err(err) => Err(self.abandon(err).await),
        };
        self.ended();
        result
    }

    /// Aborts `txn`, written but not committed, because the transaction before it failed.
    async fn abort(&self, _txn: Transaction) {
        self.ended();
        let p = self.producer.clone();
        if let Err(err) = blocking(move || p.abort_transaction(CALL_TIMEOUT)).await {
            tracing::warn!(error = %err, "aborting a transaction after the one before it failed, failed too");
        }
    }
}

/// Why local Kafka fenced this producer: its own transaction, open `open_for`, outlived
/// `timeout` (the broker aborted it and bumped the epoch), or another client with the same
/// transactional id started.
fn fence_cause(open_for: Option<Duration>, timeout: Duration) -> SinkError {
    match open_for {
        Some(open) if open >= timeout => SinkError::TimedOut {
            open_secs: open.as_secs(),
        },
        _ => SinkError::Fenced,
    }
}

/// What the state topic holds for one client: its newest committed position, and an
/// earlier one to measure its pace by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The newest committed cursor (encoded).
    pub cursor: String,
    /// When it was committed (the record's timestamp, ms since the epoch).
    pub at_ms: Option<i64>,
    /// The oldest position committed at most [`PACE_WINDOW`] before it, and when.
    pub earlier: Option<(String, i64)>,
}

/// Why the saved position could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateReadError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    HeldOpen(#[from] HeldOpen),
}

/// A `read_committed` read stayed at `stable`, short of what was written, past every
/// transaction timeout: a transaction local Kafka never ends. A broker restarted in the
/// middle of a commit can complete it without writing its markers (it skips partitions
/// whose leader it does not know yet); only an abort ends it. The aborted batch and its
/// position go together, so the client copies that batch again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a transaction stays open in {topic} from offset {stable} (written up to {written}) past every transaction timeout: local Kafka lost its commit marker, as a broker restarted mid-commit can; list such transactions with `kafka-transactions.sh --bootstrap-server <local brokers> find-hanging --broker-id <id>` and end each with `kafka-transactions.sh --bootstrap-server <local brokers> abort --topic <topic> --partition <p> --start-offset <offset>`; the client then copies the aborted batch again"
)]
pub struct HeldOpen {
    pub topic: String,
    pub stable: i64,
    pub written: i64,
    /// This client's newest position below `stable` (encoded), committed.
    pub committed: Option<String>,
}

/// How far back [`Saved::earlier`] reaches.
pub const PACE_WINDOW: Duration = Duration::from_secs(60);

/// The newest committed position under `key` in the single-partition state topic (with
/// an earlier one), `None` when it has none; `lookup` bounds each metadata call.
pub fn read_saved(
    local: &Cluster,
    topic: &str,
    key: &str,
    lookup: Duration,
) -> Result<Option<Saved>, StateReadError> {
    let consumer = partition_reader(local, "read_committed", "local Kafka state reader")?;
    let metadata = consumer.fetch_metadata(Some(topic), lookup)?;
    if topic_partitions(&metadata, topic).is_empty() {
        return Ok(None);
    }
    let (low, _) = consumer.fetch_watermarks(topic, 0, lookup)?;
    // Everything written before now must be read, committed or aborted: another client's
    // transaction still open on the shared state topic holds back what a read_committed
    // reader sees (its last stable offset), and a position read from below it would be an
    // old one of this client, copied again.
    let written = log_end(local, topic)?;
    if written <= low {
        return Ok(None);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(low))?;
    consumer.assign(&tpl)?;
    // Up to another client's transaction timeout, so its open transaction ends meanwhile.
    let deadline = std::time::Instant::now() + CALL_TIMEOUT + TRANSACTION_TIMEOUT;
    // This client's positions of the last PACE_WINDOW, oldest first.
    let mut recent: std::collections::VecDeque<(String, Option<i64>)> = Default::default();
    let window = PACE_WINDOW.as_millis() as i64;
    // Where the read last rested at the last stable offset, short of what was written.
    let mut stable_at: Option<i64> = None;
    loop {
        let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) else {
            return Err(match stable_at {
                Some(stable) => HeldOpen {
                    topic: topic.to_owned(),
                    stable,
                    written,
                    committed: recent.back().map(|(cursor, _)| cursor.clone()),
                }
                .into(),
                None => KafkaError::MessageConsumption(RDKafkaErrorCode::RequestTimedOut).into(),
            });
        };
        match consumer.poll(left.min(Duration::from_millis(200))) {
            Some(Ok(m)) => {
                stable_at = None;
                if m.key() != Some(key.as_bytes()) {
                    continue;
                }
                let Some(payload) = m.payload() else {
                    continue;
                };
                let at = m.timestamp().to_millis();
                if let Some(now) = at {
                    while recent
                        .front()
                        .is_some_and(|(_, t)| t.is_none_or(|t| t < now - window))
                    {
                        recent.pop_front();
                    }
                }
                recent.push_back((String::from_utf8_lossy(payload).into_owned(), at));
            }
            // At the last stable offset, or nothing new yet: done once the position has
            // passed all that was written; else the stable offset moves on as open
            // transactions end, and the read with it.
            Some(Err(KafkaError::PartitionEOF(_))) | None => {
                let position = consumer
                    .position()?
                    .find_partition(topic, 0)
                    .map(|p| p.offset());
                match position {
                    Some(Offset::Offset(at)) if at >= written => return Ok(saved(recent)),
                    Some(Offset::Offset(at)) => stable_at = Some(at),
                    _ => {}
                }
            }
            Some(Err(err)) => return Err(err.into()),
        }
    }
}

/// A consumer of local Kafka for partitions it assigns itself, reading at `isolation`
/// (`read_committed` or `read_uncommitted`) and saying when it reaches a partition's end;
/// `role` names it in the log.
pub(crate) fn partition_reader(
    local: &Cluster,
    isolation: &str,
    role: &'static str,
) -> Result<BaseConsumer<EofQuietContext>, KafkaError> {
    local.consumer(
        |c| {
            c.set("group.id", "kafka-replicator-client-state")
                .set("enable.auto.commit", "false")
                .set("isolation.level", isolation)
                .set("enable.partition.eof", "true");
        },
        EofQuietContext::of(role, local),
    )
}

/// The newest of `recent` (oldest first), with the oldest as the earlier one.
fn saved(mut recent: std::collections::VecDeque<(String, Option<i64>)>) -> Option<Saved> {
    let (cursor, at_ms) = recent.pop_back()?;
    let earlier = recent
        .pop_front()
        .and_then(|(cursor, at)| at.map(|at| (cursor, at)));
    Some(Saved {
        cursor,
        at_ms,
        earlier,
    })
}

/// The end of the state topic's partition counting records of transactions still open (a
/// read_uncommitted reader's high watermark).
fn log_end(local: &Cluster, topic: &str) -> Result<i64, KafkaError> {
    let probe = partition_reader(local, "read_uncommitted", "local Kafka state reader")?;
    Ok(probe.fetch_watermarks(topic, 0, CALL_TIMEOUT)?.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_held_open_for_good_is_named_with_where_it_starts_and_how_to_end_it() {
        let err = StateReadError::from(HeldOpen {
            topic: "kafka-replicator-client-state".into(),
            stable: 10_168,
            written: 10_170,
            committed: None,
        });
        let text = err.to_string();
        assert!(
            text.starts_with(
                "a transaction stays open in kafka-replicator-client-state from offset 10168 (written up to 10170)"
            ),
            "{text}"
        );
        assert!(
            text.contains("find-hanging") && text.contains("abort --topic"),
            "{text}"
        );
        assert!(!text.contains('\n'), "one line: {text}");
    }

    #[test]
    fn a_fence_after_an_overlong_transaction_is_the_brokers_abort_not_another_client() {
        let timeout = Duration::from_secs(60);
        assert!(matches!(
            fence_cause(Some(Duration::from_secs(3600)), timeout),
            SinkError::TimedOut { open_secs: 3600 }
        ));
        assert!(matches!(
            fence_cause(Some(timeout), timeout),
            SinkError::TimedOut { .. }
        ));
        assert!(matches!(
            fence_cause(Some(Duration::from_secs(2)), timeout),
            SinkError::Fenced
        ));
        assert!(matches!(fence_cause(None, timeout), SinkError::Fenced));
        // A timed-out transaction is recovered with a new producer; a real fence stops.
        assert!(SinkError::TimedOut { open_secs: 61 }.needs_new_producer());
    }
}
