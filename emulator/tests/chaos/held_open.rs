//! A transaction of the client that local Kafka holds open for good, as a broker restarted
//! in the middle of a commit leaves one (seed 12644851521401370121 found it): the client
//! ends it itself, and every event is copied once.
//!
//! The open transaction is planted the way the broker leaves it: records of the producer id
//! of the client's second lane, on the state topic and a destination partition, that no
//! coordinator knows of. librdkafka never writes such records, so this test speaks the
//! Kafka protocol itself, to a broker with `transaction.partition.verification.enable=false`.
//! The second lane, because seed 15290961768226527320 met that case: the first lane's
//! abort, refused on the compacted state topic for want of a key, kept the second from
//! trying, and the client stalled.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::common;

const STATE_TOPIC: &str = "kafka-replicator-client-state";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_local_kafka_holds_open_for_good_is_ended_by_the_client_and_each_event_copied_once()
 {
    const TEST: &str = "a_transaction_local_kafka_holds_open_for_good_is_ended_by_the_client_and_each_event_copied_once";
    const N: u64 = 600;
    const PLANTED: i64 = 5;
    let _alone = crate::ONE_AT_A_TIME.lock().await;
    let Some((source, _)) = common::apache_kafka_only(TEST) else {
        return;
    };
    let kafka = crate::kafka_local();
    let local = kafka
        .start(
            &common::unique("held-open"),
            "transaction.partition.verification.enable=false",
        )
        .await
        .expect("a local broker");
    let mut config = common::config();
    config.source_brokers = Some(source);
    config.local_brokers = Some(local.clone());
    config.events = Some(N);
    // Slow enough that the first run stops part-way.
    config.rate = 100;
    config.run_client = false;
    let stack = common::start(config).await;
    let topic = stack.info.topic.clone();
    let client = common::client_config(&stack, 40);

    // A first run commits part of the stream.
    common::replicate_until(&client, 200).await;
    let cluster = shared::kafka::Cluster::new(&local, Default::default());
    let saved = client::sink::read_saved(
        &cluster,
        STATE_TOPIC,
        &client.client_id,
        Duration::from_secs(30),
    )
    .expect("read the saved position")
    .expect("a saved position");
    let committed = shared::Cursor::decode(&saved.cursor).expect("a cursor");
    let next = committed.get(&topic, 0).expect("partition 0 in the cursor");

    // The batch after it, and the position after that, left open under the client's own
    // producer id, on partition 0 and on the state topic.
    let mut open_position = committed.clone();
    open_position.set(&topic, 0, next + PLANTED);
    let address = local.split(',').next().expect("an address").to_owned();
    let client_id = client.client_id.clone();
    let second_lane = format!("{client_id}{}", client::sink::SECOND_LANE_SUFFIX);
    let (state_at, copies_at) = tokio::task::spawn_blocking(move || {
        let mut kafka = wire::Connection::open(&address);
        let (producer_id, epoch) = kafka.init_producer_id(&second_lane);
        let copies: Vec<wire::Record> = (next..next + PLANTED)
            .map(|offset| wire::Record {
                key: None,
                value: b"held open".to_vec(),
                headers: vec![
                    (
                        client::sink::SOURCE_TOPIC_HEADER,
                        topic.clone().into_bytes(),
                    ),
                    (client::sink::SOURCE_PARTITION_HEADER, b"0".to_vec()),
                    (
                        client::sink::SOURCE_OFFSET_HEADER,
                        offset.to_string().into_bytes(),
                    ),
                ],
            })
            .collect();
        let copies_at = kafka.produce(&second_lane, &topic, 0, producer_id, epoch, &copies);
        let position = wire::Record {
            key: Some(client_id.clone().into_bytes()),
            value: open_position.encode().into_bytes(),
            headers: vec![],
        };
        let state_at = kafka.produce(
            &second_lane,
            STATE_TOPIC,
            0,
            producer_id,
            epoch,
            &[position],
        );
        (state_at, copies_at)
    })
    .await
    .expect("planted");
    let topic = stack.info.topic.clone();
    eprintln!(
        "{TEST}: held open from offset {state_at} of the state topic, {copies_at} of {topic}[0]"
    );
    assert_eq!(
        stable_and_end(&local, STATE_TOPIC, 0),
        (state_at, state_at + 1),
        "the planted transaction holds the state topic open"
    );

    // The client starts on it, ends it, and copies the rest, the planted batch's events too.
    let replicator = client::Replicator::new(&client).expect("client");
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(replicator.run(stop.clone()));
    let copies = emulator::verify::read_topic(&local, &topic, N as usize, Duration::from_secs(300))
        .await
        .expect("read the copies");
    stop.cancel();
    run.await.expect("joined").expect("client stopped cleanly");
    let (stable, end) = stable_and_end(&local, STATE_TOPIC, 0);
    let (events_stable, events_end) = stable_and_end(&local, &topic, 0);
    let aborts = abort_records(&local, STATE_TOPIC, state_at, end);
    stack.stop().await;
    kafka.remove_all().await;

    assert!(
        copies
            .values()
            .flatten()
            .all(|r| r.value.as_deref() != Some(&b"held open"[..])),
        "the planted batch was aborted, never committed"
    );
    common::assert_exactly_once(TEST, &copies, N);
    assert_eq!(
        stable, end,
        "nothing of the state topic is held open any more"
    );
    assert_eq!(events_stable, events_end, "nor of {topic}[0]");
    // Each lane wrote its abort record to the compacted state topic, so each lane's own
    // abort, not a refused write, ended what it held.
    let key = client::sink::abort_record_key(&client.client_id);
    assert_eq!(
        aborts,
        vec![Some(key.clone().into_bytes()); 2],
        "one abort record of each lane, under {key}"
    );
}

/// The keys of the records in `topic[0]` from `from` to `to`, aborted ones included, that
/// carry the client's abort header.
fn abort_records(brokers: &str, topic: &str, from: i64, to: i64) -> Vec<Option<Vec<u8>>> {
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "held-open-test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_uncommitted")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Offset(from))
        .expect("offset");
    consumer.assign(&tpl).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut keys = Vec::new();
    loop {
        let at = consumer
            .position()
            .expect("position")
            .find_partition(topic, 0)
            .map(|p| p.offset());
        if matches!(at, Some(rdkafka::Offset::Offset(at)) if at >= to) {
            return keys;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{topic}[0] read from {from} to {to} within a minute"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("a record");
            let aborts = m.headers().is_some_and(|h| {
                h.iter()
                    .any(|h| h.key == client::sink::ABORTS_HELD_OPEN_HEADER)
            });
            if aborts {
                keys.push(m.key().map(<[u8]>::to_vec));
            }
        }
    }
}

/// The last stable offset and the end of `topic[partition]`.
fn stable_and_end(brokers: &str, topic: &str, partition: i32) -> (i64, i64) {
    let watermark = |isolation: &str| {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("isolation.level", isolation)
            .create()
            .expect("consumer");
        consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(30))
            .expect("watermarks")
            .1
    };
    (watermark("read_committed"), watermark("read_uncommitted"))
}

/// The two Kafka requests the test sends itself (InitProducerId v1, Produce v7, with a
/// transactional record batch of magic 2), on a plaintext connection.
mod wire {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    /// One record of a batch.
    pub(super) struct Record {
        pub(super) key: Option<Vec<u8>>,
        pub(super) value: Vec<u8>,
        pub(super) headers: Vec<(&'static str, Vec<u8>)>,
    }

    pub(super) struct Connection {
        stream: TcpStream,
        correlation: i32,
    }

    /// Errors that a broker still loading, or a coordinator moving, answers with.
    const RETRIABLE: [i16; 4] = [14, 15, 16, 51];

    impl Connection {
        pub(super) fn open(address: &str) -> Self {
            let stream = TcpStream::connect(address).expect("connect to local Kafka");
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            Self {
                stream,
                correlation: 0,
            }
        }

        fn call(&mut self, api_key: i16, version: i16, body: &[u8]) -> Vec<u8> {
            self.correlation += 1;
            let mut message = Vec::new();
            message.extend(api_key.to_be_bytes());
            message.extend(version.to_be_bytes());
            message.extend(self.correlation.to_be_bytes());
            string(&mut message, "held-open-test");
            message.extend(body);
            self.stream
                .write_all(&(message.len() as i32).to_be_bytes())
                .and_then(|()| self.stream.write_all(&message))
                .expect("send");
            let mut length = [0; 4];
            self.stream.read_exact(&mut length).expect("answer length");
            let mut answer = vec![0; i32::from_be_bytes(length) as usize];
            self.stream.read_exact(&mut answer).expect("answer");
            assert_eq!(
                i32::from_be_bytes(answer[..4].try_into().expect("4 bytes")),
                self.correlation
            );
            answer.split_off(4)
        }

        /// The producer id and epoch of `transactional_id`, as its coordinator hands them out.
        pub(super) fn init_producer_id(&mut self, transactional_id: &str) -> (i64, i16) {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let mut body = Vec::new();
                string(&mut body, transactional_id);
                body.extend(60_000i32.to_be_bytes());
                let answer = self.call(22, 1, &body);
                let error = i16::from_be_bytes(answer[4..6].try_into().expect("2 bytes"));
                if RETRIABLE.contains(&error) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                assert_eq!(error, 0, "InitProducerId error code");
                let id = i64::from_be_bytes(answer[6..14].try_into().expect("8 bytes"));
                let epoch = i16::from_be_bytes(answer[14..16].try_into().expect("2 bytes"));
                return (id, epoch);
            }
        }

        /// Writes `records` to `topic[partition]` as one transactional batch of
        /// `producer_id`, sequence 0; returns the offset of its first record.
        pub(super) fn produce(
            &mut self,
            transactional_id: &str,
            topic: &str,
            partition: i32,
            producer_id: i64,
            epoch: i16,
            records: &[Record],
        ) -> i64 {
            let batch = batch(producer_id, epoch, records);
            let mut body = Vec::new();
            string(&mut body, transactional_id);
            body.extend((-1i16).to_be_bytes());
            body.extend(30_000i32.to_be_bytes());
            body.extend(1i32.to_be_bytes());
            string(&mut body, topic);
            body.extend(1i32.to_be_bytes());
            body.extend(partition.to_be_bytes());
            body.extend((batch.len() as i32).to_be_bytes());
            body.extend(batch);
            let answer = self.call(0, 7, &body);
            // responses[1]: name, partitions[1]: index, error_code, base_offset, …
            let name_length = i16::from_be_bytes(answer[4..6].try_into().expect("2 bytes"));
            let at = 6 + name_length as usize + 4;
            let error = i16::from_be_bytes(answer[at + 4..at + 6].try_into().expect("2 bytes"));
            assert_eq!(error, 0, "Produce error code for {topic}[{partition}]");
            i64::from_be_bytes(answer[at + 6..at + 14].try_into().expect("8 bytes"))
        }
    }

    fn string(out: &mut Vec<u8>, text: &str) {
        out.extend((text.len() as i16).to_be_bytes());
        out.extend(text.as_bytes());
    }

    fn varint(out: &mut Vec<u8>, value: i64) {
        let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
        while zigzag >= 0x80 {
            out.push(zigzag as u8 | 0x80);
            zigzag >>= 7;
        }
        out.push(zigzag as u8);
    }

    fn bytes(out: &mut Vec<u8>, data: Option<&[u8]>) {
        match data {
            Some(data) => {
                varint(out, data.len() as i64);
                out.extend(data);
            }
            None => varint(out, -1),
        }
    }

    /// A record batch of magic 2, transactional, uncompressed.
    fn batch(producer_id: i64, epoch: i16, records: &[Record]) -> Vec<u8> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64;
        let mut after_crc = Vec::new();
        after_crc.extend(0x10i16.to_be_bytes()); // attributes: transactional
        after_crc.extend((records.len() as i32 - 1).to_be_bytes());
        after_crc.extend(now.to_be_bytes());
        after_crc.extend(now.to_be_bytes());
        after_crc.extend(producer_id.to_be_bytes());
        after_crc.extend(epoch.to_be_bytes());
        after_crc.extend(0i32.to_be_bytes()); // base sequence
        after_crc.extend((records.len() as i32).to_be_bytes());
        for (delta, record) in records.iter().enumerate() {
            let mut body = vec![0]; // attributes
            varint(&mut body, 0); // timestamp delta
            varint(&mut body, delta as i64);
            bytes(&mut body, record.key.as_deref());
            bytes(&mut body, Some(&record.value));
            varint(&mut body, record.headers.len() as i64);
            for (key, value) in &record.headers {
                bytes(&mut body, Some(key.as_bytes()));
                bytes(&mut body, Some(value));
            }
            varint(&mut after_crc, body.len() as i64);
            after_crc.extend(body);
        }
        let mut batch = Vec::new();
        batch.extend(0i64.to_be_bytes()); // base offset
        batch.extend((4 + 1 + 4 + after_crc.len() as i32).to_be_bytes());
        batch.extend((-1i32).to_be_bytes()); // partition leader epoch
        batch.push(2); // magic
        batch.extend(crc32c(&after_crc).to_be_bytes());
        batch.extend(after_crc);
        batch
    }

    /// CRC-32C (Castagnoli), which record batches carry.
    fn crc32c(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }
}
