//! [`WritePipeline`]: the state machine that guards exactly-once on the local side. It owns
//! the open transaction, the commit in flight, the two lanes and the positions, and moves
//! the position only when local Kafka holds a batch together with the cursor after it.
//! Local Kafka sits behind [`Lane`], so the machine is tested here with a fake.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use shared::wire::BatchView;
use shared::{Cursor, StartFrom};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::sink::SinkError;

/// How long a stopping client waits for the batch in flight.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);
/// Most events one local transaction takes while a backlog is copied.
const MAX_TRANSACTION_EVENTS: u64 = 20_000;
/// Longest one local transaction stays open while a backlog is copied.
const MAX_TRANSACTION_AGE: Duration = Duration::from_millis(250);

/// One transactional producer of local Kafka, as the pipeline uses it. Every method that
/// fails has aborted the transaction it was given.
pub trait Lane: Send + Sync + 'static {
    /// A transaction being filled.
    type Txn: Send + 'static;

    /// Adds `batch` to `open` (a new transaction when `None`), without waiting for local
    /// Kafka to acknowledge it.
    fn append(
        &self,
        open: Option<Self::Txn>,
        batch: &BatchView,
        next: &Cursor,
    ) -> impl Future<Output = Result<Self::Txn, SinkError>> + Send;

    /// Writes `next` beside the transaction's events and waits until local Kafka holds all
    /// of them, so the other lane may write after them.
    fn seal(
        &self,
        txn: &mut Self::Txn,
        next: &Cursor,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Commits a sealed transaction.
    fn commit(&self, txn: Self::Txn) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Aborts a transaction that must not commit, because the one before it failed.
    fn abort(&self, txn: Self::Txn) -> impl Future<Output = ()> + Send;
}

/// What a step of the pipeline came to.
#[derive(Debug)]
pub enum Step {
    /// Done; go on fetching from [`WritePipeline::fetch_from`].
    Go,
    /// A write or commit failed. Nothing is open any more, and the fetch position is back
    /// at what local Kafka holds. When [`SinkError::needs_new_producer`], the lanes must be
    /// built again ([`WritePipeline::restart`]).
    Failed(SinkError),
    /// Stopping, with a commit not seen through in [`SHUTDOWN_DRAIN`]: the broker aborts it
    /// and the next start fetches it again.
    Stop,
}

/// Where the client stands and what is under way in local Kafka.
///
/// Invariants:
/// - a transaction commits only after the one before it committed;
/// - the cursor committed with a transaction is the one after exactly its events;
/// - after a failure the next fetch starts from what local Kafka holds, so nothing fetched
///   is skipped and nothing committed is written twice.
#[derive(Debug)]
pub struct WritePipeline<L: Lane> {
    lanes: [Arc<L>; 2],
    /// The lane the next batch is written on.
    turn: usize,
    open: Option<Open<L::Txn>>,
    committing: Option<Committing>,
    /// The position the next fetch starts from.
    fetch: StartFrom,
    /// The position local Kafka holds.
    committed: StartFrom,
    /// Events of commits that completed since [`WritePipeline::take_committed`] last asked;
    /// `None` when none did.
    newly_committed: Option<u64>,
}

/// The open transaction, with the events in it and when it was begun.
#[derive(Debug)]
struct Open<T> {
    txn: T,
    events: u64,
    since: Instant,
}

/// A commit under way on its own task, with the position and events it makes durable.
#[derive(Debug)]
struct Committing {
    task: tokio::task::JoinHandle<Result<(), SinkError>>,
    cursor: Cursor,
    events: u64,
    started: Instant,
}

impl Committing {
    fn start<L: Lane>(lane: Arc<L>, txn: L::Txn, cursor: Cursor, events: u64) -> Self {
        Self {
            task: tokio::spawn(async move { lane.commit(txn).await }),
            cursor,
            events,
            started: Instant::now(),
        }
    }

    /// Its outcome; when stopping, waited for only [`SHUTDOWN_DRAIN`]. `None`: not finished
    /// in time.
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

impl<L: Lane> WritePipeline<L> {
    /// A pipeline over freshly connected `lanes`, at `start` (what local Kafka holds).
    pub fn new(lanes: [Arc<L>; 2], start: StartFrom) -> Self {
        Self {
            lanes,
            turn: 0,
            open: None,
            committing: None,
            fetch: start.clone(),
            committed: start,
            newly_committed: None,
        }
    }

    /// Carries on with lanes built again after [`Step::Failed`], from the position they
    /// read back from local Kafka.
    pub fn restart(&mut self, lanes: [Arc<L>; 2], start: StartFrom) {
        debug_assert!(self.open.is_none() && self.committing.is_none());
        *self = Self {
            newly_committed: self.newly_committed,
            ..Self::new(lanes, start)
        };
    }

    /// Where the next fetch starts: after everything written, committed or not.
    pub fn fetch_from(&self) -> &StartFrom {
        &self.fetch
    }

    /// What local Kafka holds.
    pub fn committed(&self) -> &StartFrom {
        &self.committed
    }

    /// Events of the commits that completed since the last call; `None` when none did.
    pub fn take_committed(&mut self) -> Option<u64> {
        self.newly_committed.take()
    }

    /// Whether a transaction is open (waiting for more batches) or committing: seen
    /// through by [`Self::close`] before the client waits for new events.
    pub fn has_pending(&self) -> bool {
        self.open.is_some() || self.committing.is_some()
    }

    /// Whether a batch of `events` may join the open transaction (or open one) and leave it
    /// open for the next: bounded in events and age, so a backlog commits often.
    pub fn may_keep_open(&self, events: usize) -> bool {
        self.open.as_ref().map_or(0, |open| open.events) + events as u64 <= MAX_TRANSACTION_EVENTS
            && self
                .open
                .as_ref()
                .is_none_or(|open| open.since.elapsed() < MAX_TRANSACTION_AGE)
    }

    /// Writes `batch`, which ends before `next`, into the open transaction. With
    /// `keep_open` the transaction stays open for the next batch; otherwise it goes to be
    /// committed once the commit before it succeeds.
    pub async fn write(
        &mut self,
        batch: &BatchView,
        next: &Cursor,
        keep_open: bool,
        shutdown: &CancellationToken,
    ) -> Step {
        let lane = Arc::clone(&self.lanes[self.turn]);
        let (open, events, since) = match self.open.take() {
            Some(open) => (Some(open.txn), open.events, open.since),
            None => (None, 0, Instant::now()),
        };
        let txn = match lane.append(open, batch, next).await {
            Ok(txn) => txn,
            Err(err) => return self.failed(err, shutdown).await,
        };
        self.fetch = StartFrom::Cursor(next.clone());
        let open = Open {
            txn,
            events: events + batch.len() as u64,
            since,
        };
        if keep_open {
            self.open = Some(open);
            return Step::Go;
        }
        self.hand_over(open, shutdown).await
    }

    /// Commits what is open and sees the commit in flight through: before anything but
    /// more events, and when stopping.
    pub async fn close(&mut self, shutdown: &CancellationToken) -> Step {
        if let Some(open) = self.open.take() {
            match self.hand_over(open, shutdown).await {
                Step::Go => {}
                other => return other,
            }
        }
        let Some(mut previous) = self.committing.take() else {
            return Step::Go;
        };
        match previous.outcome(shutdown).await {
            None => Step::Stop,
            Some(Ok(())) => {
                self.commit_done(&previous);
                Step::Go
            }
            Some(Err(err)) => self.rewind(err),
        }
    }

    /// Seals `open` on the current lane once the commit before it succeeded, starts its
    /// commit, and turns to the other lane for the next batch, so each partition's order
    /// is kept.
    async fn hand_over(&mut self, mut open: Open<L::Txn>, shutdown: &CancellationToken) -> Step {
        let lane = Arc::clone(&self.lanes[self.turn]);
        if let Some(mut previous) = self.committing.take() {
            match previous.outcome(shutdown).await {
                None => return Step::Stop,
                Some(Ok(())) => self.commit_done(&previous),
                Some(Err(err)) => {
                    // Its batch and this one are fetched again.
                    lane.abort(open.txn).await;
                    return self.rewind(err);
                }
            }
        }
        let StartFrom::Cursor(cursor) = self.fetch.clone() else {
            unreachable!("a transaction is open only after a batch, which ends at a cursor");
        };
        match drained(lane.seal(&mut open.txn, &cursor), shutdown).await {
            None => {
                tracing::warn!(
                    events = open.events,
                    "stopping with a batch uncommitted; it will be fetched again"
                );
                // Ended now, not left open until the broker's transaction timeout: a
                // read_committed reader of these topics would wait for it meanwhile.
                if tokio::time::timeout(SHUTDOWN_DRAIN, lane.abort(open.txn))
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        "local Kafka did not abort the open transaction in time; it aborts it when this client starts again, or at transaction.timeout.ms"
                    );
                }
                return Step::Stop;
            }
            Some(Ok(())) => {}
            Some(Err(err)) => return self.rewind(err),
        }
        self.committing = Some(Committing::start(lane, open.txn, cursor, open.events));
        self.turn = 1 - self.turn;
        Step::Go
    }

    /// A write failed (its transaction is aborted): sees the commit in flight through, then
    /// rewinds.
    async fn failed(&mut self, err: SinkError, shutdown: &CancellationToken) -> Step {
        let mut err = err;
        if let Some(mut previous) = self.committing.take() {
            match previous.outcome(shutdown).await {
                Some(Ok(())) => self.commit_done(&previous),
                // The worse of the two decides whether the producers are built again.
                Some(Err(earlier)) if earlier.needs_new_producer() => err = earlier,
                _ => {}
            }
        }
        self.rewind(err)
    }

    /// Nothing is open or in flight any more: fetch again from what local Kafka holds.
    fn rewind(&mut self, err: SinkError) -> Step {
        debug_assert!(self.open.is_none() && self.committing.is_none());
        self.fetch = self.committed.clone();
        Step::Failed(err)
    }

    fn commit_done(&mut self, done: &Committing) {
        self.committed = StartFrom::Cursor(done.cursor.clone());
        *self.newly_committed.get_or_insert(0) += done.events;
        tracing::debug!(
            events = done.events,
            commit_ms = done.started.elapsed().as_millis() as u64,
            "committed"
        );
    }
}

#[cfg(test)]
mod tests {
    //! The pipeline over a fake local Kafka that keeps what a real one would (records and
    //! the saved cursor, made durable at commit) and notes every broken invariant.

    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use shared::Record;

    use super::*;

    /// (topic, partition, offset) of a record.
    type Id = (String, i32, i64);

    #[derive(Debug, Default)]
    struct Durable {
        records: Vec<Id>,
        cursor: Option<Cursor>,
        committing: bool,
        commits: usize,
        violations: Vec<String>,
        /// Faults to inject, drawn per call: each of append, seal and commit fails with
        /// this probability (0 to 1000 per mille), fatally one time in four.
        fail_per_mille: u32,
        rng: Option<StdRng>,
        /// When set, the next call of this name fails once.
        fail_next: Option<(&'static str, bool)>,
        /// Transactions aborted.
        aborts: usize,
    }

    impl Durable {
        fn fault(&mut self, call: &'static str) -> Option<SinkError> {
            let fatal = match self.fail_next.take() {
                Some((name, fatal)) if name == call => fatal,
                other => {
                    self.fail_next = other;
                    let rng = self.rng.as_mut()?;
                    if rng.random_range(0..1000) >= self.fail_per_mille {
                        return None;
                    }
                    rng.random_range(0..4) == 0
                }
            };
            Some(if fatal {
                SinkError::Init(KafkaError::Canceled)
            } else {
                SinkError::Transaction(KafkaError::Canceled)
            })
        }
    }

    #[derive(Debug)]
    struct FakeLane {
        kafka: Arc<Mutex<Durable>>,
        commit_delay: Duration,
        /// How long a seal waits for local Kafka's acknowledgements.
        seal_delay: Duration,
    }

    #[derive(Debug)]
    struct FakeTxn {
        records: Vec<Id>,
        sealed: Option<Cursor>,
    }

    impl Lane for FakeLane {
        type Txn = FakeTxn;

        async fn append(
            &self,
            open: Option<FakeTxn>,
            batch: &BatchView,
            _next: &Cursor,
        ) -> Result<FakeTxn, SinkError> {
            if let Some(err) = self.kafka.lock().unwrap().fault("append") {
                return Err(err);
            }
            let mut txn = open.unwrap_or(FakeTxn {
                records: Vec::new(),
                sealed: None,
            });
            assert!(txn.sealed.is_none(), "appended to a sealed transaction");
            txn.records.extend(
                batch
                    .records()
                    .map(|r| (r.topic.to_owned(), r.partition, r.offset)),
            );
            Ok(txn)
        }

        async fn seal(&self, txn: &mut FakeTxn, next: &Cursor) -> Result<(), SinkError> {
            tokio::time::sleep(self.seal_delay).await;
            if let Some(err) = self.kafka.lock().unwrap().fault("seal") {
                return Err(err);
            }
            txn.sealed = Some(next.clone());
            Ok(())
        }

        async fn commit(&self, txn: FakeTxn) -> Result<(), SinkError> {
            {
                let mut kafka = self.kafka.lock().unwrap();
                if kafka.committing {
                    kafka
                        .violations
                        .push("a commit began before the one before it ended".into());
                }
                kafka.committing = true;
            }
            tokio::time::sleep(self.commit_delay).await;
            let mut kafka = self.kafka.lock().unwrap();
            kafka.committing = false;
            if let Some(err) = kafka.fault("commit") {
                return Err(err);
            }
            let Some(cursor) = txn.sealed else {
                kafka.violations.push("committed unsealed".into());
                return Ok(());
            };
            let mut expected = kafka.cursor.clone().unwrap_or_default();
            for (topic, partition, offset) in &txn.records {
                expected.set(topic, *partition, offset + 1);
            }
            if cursor != expected {
                let commit = kafka.commits;
                kafka.violations.push(format!(
                    "commit {commit} saved {cursor:?}, its events end at {expected:?}"
                ));
            }
            kafka.records.extend(txn.records);
            kafka.cursor = Some(cursor);
            kafka.commits += 1;
            Ok(())
        }

        async fn abort(&self, _txn: FakeTxn) {
            self.kafka.lock().unwrap().aborts += 1;
        }
    }

    /// A local Kafka behind two fake lanes, and the source it copies.
    struct Fixture {
        kafka: Arc<Mutex<Durable>>,
        source: Vec<Record>,
        commit_delay: Duration,
        seal_delay: Duration,
    }

    impl Fixture {
        fn new(events: usize, commit_delay: Duration) -> Self {
            // Three partitions, interleaved as a fetch answers them.
            let source = (0..events)
                .map(|i| Record {
                    topic: "orders".into(),
                    partition: (i % 3) as i32,
                    offset: (i / 3) as i64,
                    timestamp: None,
                    key: None,
                    value: Some(i.to_string().into_bytes()),
                    headers: Vec::new(),
                })
                .collect();
            Self {
                kafka: Arc::default(),
                source,
                commit_delay,
                seal_delay: Duration::ZERO,
            }
        }

        fn lanes(&self) -> [Arc<FakeLane>; 2] {
            [(); 2].map(|()| {
                Arc::new(FakeLane {
                    kafka: Arc::clone(&self.kafka),
                    commit_delay: self.commit_delay,
                    seal_delay: self.seal_delay,
                })
            })
        }

        /// What the server answers from `from`: up to `limit` records after it, and the
        /// cursor after them.
        fn fetch(&self, from: &StartFrom, limit: usize) -> (BatchView, Cursor) {
            let mut next = match from {
                StartFrom::Cursor(cursor) => cursor.clone(),
                _ => Cursor::new(),
            };
            let records: Vec<&Record> = self
                .source
                .iter()
                .filter(|r| r.offset >= next.get(&r.topic, r.partition).unwrap_or(0))
                .take(limit)
                .collect();
            for r in &records {
                next.set(&r.topic, r.partition, r.offset + 1);
            }
            let body = shared::wire::encode(records.into_iter(), &next.encode(), &[]).unwrap();
            (BatchView::parse(body.into()).unwrap(), next)
        }

        /// Copies from where `pipeline` stands to the end without faults, commits, and
        /// checks the copy.
        async fn copy_the_rest(&self, pipeline: &mut WritePipeline<FakeLane>) {
            let shutdown = CancellationToken::new();
            while pipeline.fetch_from() != &StartFrom::Cursor(self.end()) {
                let (batch, next) = self.fetch(pipeline.fetch_from(), 10);
                go(pipeline.write(&batch, &next, false, &shutdown).await);
            }
            go(pipeline.close(&shutdown).await);
            self.assert_exactly_once();
        }

        fn end(&self) -> Cursor {
            self.fetch(&StartFrom::Earliest, usize::MAX).1
        }

        /// Every record once, in the order fetched, and nothing broken on the way.
        fn assert_exactly_once(&self) {
            let kafka = self.kafka.lock().unwrap();
            assert_eq!(kafka.violations, Vec::<String>::new());
            let expected: Vec<Id> = self
                .source
                .iter()
                .map(|r| (r.topic.clone(), r.partition, r.offset))
                .collect();
            let mut per_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
            for (_, partition, offset) in &kafka.records {
                per_partition.entry(*partition).or_default().push(*offset);
            }
            for (partition, offsets) in &per_partition {
                let want: Vec<i64> = (0..offsets.len() as i64).collect();
                assert_eq!(offsets, &want, "partition {partition}: in order, once each");
            }
            assert_eq!(kafka.records.len(), expected.len(), "every record copied");
            assert_eq!(
                kafka.cursor,
                Some(self.end()),
                "the saved cursor is at the end"
            );
        }
    }

    fn go(step: Step) {
        assert!(matches!(step, Step::Go), "expected Go, got {step:?}");
    }

    #[tokio::test]
    async fn a_commit_begins_only_after_the_one_before_it_and_lanes_take_turns() {
        let fixture = Fixture::new(60, Duration::from_millis(20));
        let mut pipeline = WritePipeline::new(fixture.lanes(), StartFrom::Earliest);
        let shutdown = CancellationToken::new();
        for _ in 0..6 {
            let (batch, next) = fixture.fetch(pipeline.fetch_from(), 10);
            let turn = pipeline.turn;
            go(pipeline.write(&batch, &next, false, &shutdown).await);
            assert_eq!(
                pipeline.turn,
                1 - turn,
                "the next batch goes to the other lane"
            );
            // The batch after this one is written while this one commits.
            assert!(pipeline.committing.is_some());
        }
        go(pipeline.close(&shutdown).await);
        assert_eq!(pipeline.take_committed(), Some(60));
        assert_eq!(pipeline.take_committed(), None);
        assert_eq!(fixture.kafka.lock().unwrap().commits, 6);
        fixture.assert_exactly_once();
    }

    #[tokio::test]
    async fn a_transaction_kept_open_saves_the_cursor_after_all_its_batches() {
        let fixture = Fixture::new(30, Duration::ZERO);
        let mut pipeline = WritePipeline::new(fixture.lanes(), StartFrom::Earliest);
        let shutdown = CancellationToken::new();
        for keep_open in [true, true, false] {
            let (batch, next) = fixture.fetch(pipeline.fetch_from(), 10);
            go(pipeline.write(&batch, &next, keep_open, &shutdown).await);
            assert_eq!(pipeline.fetch_from(), &StartFrom::Cursor(next));
        }
        assert_eq!(
            pipeline.committed(),
            &StartFrom::Earliest,
            "not committed yet"
        );
        go(pipeline.close(&shutdown).await);
        assert_eq!(fixture.kafka.lock().unwrap().commits, 1, "one transaction");
        assert_eq!(pipeline.committed(), &StartFrom::Cursor(fixture.end()));
        fixture.assert_exactly_once();
    }

    #[tokio::test]
    async fn stopping_while_local_kafka_does_not_acknowledge_aborts_the_open_transaction() {
        let mut fixture = Fixture::new(20, Duration::ZERO);
        // Local Kafka stopped acknowledging: the seal would wait an hour.
        fixture.seal_delay = Duration::from_secs(3600);
        let mut pipeline = WritePipeline::new(fixture.lanes(), StartFrom::Earliest);
        let shutdown = CancellationToken::new();
        let (batch, next) = fixture.fetch(pipeline.fetch_from(), 10);
        go(pipeline.write(&batch, &next, true, &shutdown).await);
        shutdown.cancel();
        let began = tokio::time::Instant::now();
        assert!(matches!(pipeline.close(&shutdown).await, Step::Stop));
        assert!(
            began.elapsed() <= SHUTDOWN_DRAIN * 2,
            "{:?}",
            began.elapsed()
        );
        let kafka = fixture.kafka.lock().unwrap();
        assert_eq!(
            (kafka.aborts, kafka.commits),
            (1, 0),
            "aborted, not left open"
        );
        assert_eq!(pipeline.committed(), &StartFrom::Earliest);
    }

    #[tokio::test]
    async fn a_failed_write_rewinds_to_what_local_kafka_holds() {
        let fixture = Fixture::new(30, Duration::ZERO);
        let mut pipeline = WritePipeline::new(fixture.lanes(), StartFrom::Earliest);
        let shutdown = CancellationToken::new();
        let (batch, first) = fixture.fetch(pipeline.fetch_from(), 10);
        go(pipeline.write(&batch, &first, false, &shutdown).await);
        let (batch, second) = fixture.fetch(pipeline.fetch_from(), 10);
        go(pipeline.write(&batch, &second, true, &shutdown).await);
        fixture.kafka.lock().unwrap().fail_next = Some(("append", false));
        let (batch, third) = fixture.fetch(pipeline.fetch_from(), 10);
        let step = pipeline.write(&batch, &third, false, &shutdown).await;
        assert!(
            matches!(step, Step::Failed(SinkError::Transaction(_))),
            "{step:?}"
        );
        // The first batch committed; the second, open with the third, is gone with it.
        assert_eq!(pipeline.fetch_from(), &StartFrom::Cursor(first.clone()));
        assert_eq!(pipeline.committed(), &StartFrom::Cursor(first));
        assert_eq!(pipeline.take_committed(), Some(10));
        fixture.copy_the_rest(&mut pipeline).await;
    }

    #[tokio::test]
    async fn a_failed_commit_drops_the_batch_written_after_it() {
        let fixture = Fixture::new(20, Duration::from_millis(10));
        let mut pipeline = WritePipeline::new(fixture.lanes(), StartFrom::Earliest);
        let shutdown = CancellationToken::new();
        fixture.kafka.lock().unwrap().fail_next = Some(("commit", false));
        let (batch, next) = fixture.fetch(pipeline.fetch_from(), 10);
        go(pipeline.write(&batch, &next, false, &shutdown).await);
        let (batch, next) = fixture.fetch(pipeline.fetch_from(), 10);
        let step = pipeline.write(&batch, &next, false, &shutdown).await;
        assert!(matches!(step, Step::Failed(_)), "{step:?}");
        assert_eq!(pipeline.fetch_from(), &StartFrom::Earliest);
        assert_eq!(pipeline.take_committed(), None);
        assert!(fixture.kafka.lock().unwrap().records.is_empty());
        fixture.copy_the_rest(&mut pipeline).await;
    }

    #[tokio::test]
    async fn stopping_sees_the_commit_in_flight_through() {
        let fixture = Fixture::new(10, Duration::from_millis(50));
        let mut pipeline = WritePipeline::new(fixture.lanes(), StartFrom::Earliest);
        let shutdown = CancellationToken::new();
        let (batch, next) = fixture.fetch(pipeline.fetch_from(), 10);
        go(pipeline.write(&batch, &next, true, &shutdown).await);
        shutdown.cancel();
        go(pipeline.close(&shutdown).await);
        assert_eq!(pipeline.take_committed(), Some(10));
        fixture.assert_exactly_once();
    }

    /// Random batch sizes, random keep-open choices, and faults at any call, transient or
    /// fatal (lanes built again): every record lands once, in order, with its cursor.
    #[tokio::test]
    async fn nothing_is_skipped_or_repeated_under_random_faults() {
        let mut failures = 0;
        for seed in 0..40 {
            let fixture = Fixture::new(600, Duration::from_micros(200));
            {
                let mut kafka = fixture.kafka.lock().unwrap();
                kafka.rng = Some(StdRng::seed_from_u64(seed));
                kafka.fail_per_mille = 60;
            }
            let mut rng = StdRng::seed_from_u64(seed + 1000);
            let mut pipeline = WritePipeline::new(fixture.lanes(), StartFrom::Earliest);
            let shutdown = CancellationToken::new();
            let mut committed = 0;
            let end = StartFrom::Cursor(fixture.end());
            for round in 0.. {
                assert!(round < 100_000, "seed {seed}: no progress");
                let step = if pipeline.fetch_from() == &end {
                    if pipeline.committed() == &end && pipeline.committing.is_none() {
                        break;
                    }
                    pipeline.close(&shutdown).await
                } else {
                    let (batch, next) =
                        fixture.fetch(pipeline.fetch_from(), rng.random_range(1..=40));
                    let keep_open = rng.random_bool(0.4) && pipeline.may_keep_open(batch.len());
                    pipeline.write(&batch, &next, keep_open, &shutdown).await
                };
                committed += pipeline.take_committed().unwrap_or(0);
                match step {
                    Step::Go => {}
                    Step::Failed(err) => {
                        failures += 1;
                        if err.needs_new_producer() {
                            let start = pipeline.committed().clone();
                            pipeline.restart(fixture.lanes(), start);
                        }
                    }
                    Step::Stop => panic!("seed {seed}: stopped without being asked"),
                }
            }
            assert_eq!(committed, 600, "seed {seed}: every event counted once");
            fixture.assert_exactly_once();
        }
        assert!(
            failures >= 40,
            "the schedules injected only {failures} faults"
        );
    }
}
