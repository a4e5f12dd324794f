//! The Redis Streams layer against a real Redis: publish/consume round trips, groups created
//! after publishing, pending re-reads, reclaiming and dead letters, trimming, cursors.

mod common;

use common::TestRedis;
use waypoint::streams::{NewEntry, ReadFrom, Redis, StreamType};

const GROUP: &str = "waypoint";

fn entries(range: std::ops::Range<u64>) -> Vec<NewEntry> {
    range
        .map(|i| NewEntry {
            raw: bytes::Bytes::from(format!("event-{i}").into_bytes()),
            shard: 1,
            event_id: 1000 + i,
            received_at_ms: 42,
        })
        .collect()
}

async fn setup() -> (TestRedis, Redis) {
    let test = TestRedis::new();
    let redis = Redis::connect(&test.config()).await.expect("redis");
    (test, redis)
}

#[tokio::test]
async fn a_group_created_after_publishing_reads_everything_in_order() {
    let (test, redis) = setup().await;
    let ids = redis
        .publish(StreamType::Casts, &entries(0..5))
        .await
        .unwrap();
    assert_eq!(ids.len(), 5);

    // The consumer starts after the producer: nothing is missed.
    redis.ensure_group(StreamType::Casts, GROUP).await.unwrap();
    redis.ensure_group(StreamType::Casts, GROUP).await.unwrap();
    let mut connection = redis.blocking_connection().await.unwrap();
    let read = redis
        .read_group(
            &mut connection,
            StreamType::Casts,
            GROUP,
            "c1",
            10,
            100,
            ReadFrom::New,
        )
        .await
        .unwrap();
    assert_eq!(read.len(), 5);
    for (i, entry) in read.iter().enumerate() {
        assert_eq!(entry.id, ids[i]);
        assert_eq!(entry.raw.as_deref(), Some(format!("event-{i}").as_bytes()));
        assert_eq!(entry.shard, Some(1));
        assert_eq!(entry.event_id, Some(1000 + i as u64));
        assert_eq!(entry.received_at_ms, Some(42));
    }
    test.cleanup().await;
}

#[tokio::test]
async fn consumers_of_one_group_split_entries_and_pending_survives_a_crash() {
    let (test, redis) = setup().await;
    redis
        .ensure_group(StreamType::Reactions, GROUP)
        .await
        .unwrap();
    redis
        .publish(StreamType::Reactions, &entries(0..10))
        .await
        .unwrap();
    let mut a = redis.blocking_connection().await.unwrap();
    let mut b = redis.blocking_connection().await.unwrap();
    let first = redis
        .read_group(
            &mut a,
            StreamType::Reactions,
            GROUP,
            "a",
            4,
            100,
            ReadFrom::New,
        )
        .await
        .unwrap();
    let second = redis
        .read_group(
            &mut b,
            StreamType::Reactions,
            GROUP,
            "b",
            100,
            100,
            ReadFrom::New,
        )
        .await
        .unwrap();
    assert_eq!(first.len(), 4);
    assert_eq!(second.len(), 6);
    assert!(first.iter().all(|x| second.iter().all(|y| x.id != y.id)));

    // "a" crashes before acknowledging; after its restart it re-reads its own pending entries.
    let again = redis
        .read_group(
            &mut a,
            StreamType::Reactions,
            GROUP,
            "a",
            100,
            0,
            ReadFrom::Pending,
        )
        .await
        .unwrap();
    assert_eq!(
        again.iter().map(|e| &e.id).collect::<Vec<_>>(),
        first.iter().map(|e| &e.id).collect::<Vec<_>>()
    );
    let ids: Vec<String> = again.iter().map(|e| e.id.clone()).collect();
    assert_eq!(
        redis.ack(StreamType::Reactions, GROUP, &ids).await.unwrap(),
        4
    );
    let none = redis
        .read_group(
            &mut a,
            StreamType::Reactions,
            GROUP,
            "a",
            100,
            0,
            ReadFrom::Pending,
        )
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(
        redis.pending(StreamType::Reactions, GROUP).await.unwrap(),
        6
    );
    assert_eq!(
        redis.backlog(StreamType::Reactions, GROUP).await.unwrap(),
        6
    );
    test.cleanup().await;
}

#[tokio::test]
async fn stale_entries_are_redelivered_then_dead_lettered_with_their_error() {
    let (test, redis) = setup().await;
    redis.ensure_group(StreamType::Links, GROUP).await.unwrap();
    redis
        .publish(StreamType::Links, &entries(0..3))
        .await
        .unwrap();
    let mut connection = redis.blocking_connection().await.unwrap();
    let read = redis
        .read_group(
            &mut connection,
            StreamType::Links,
            GROUP,
            "dead-consumer",
            10,
            100,
            ReadFrom::New,
        )
        .await
        .unwrap();
    redis
        .record_error(StreamType::Links, &read[0].id, "apply failed: boom")
        .await
        .unwrap();

    // Delivered once so far: with max_deliveries 2 the first claim redelivers all three.
    let claimed = redis
        .claim_stale(StreamType::Links, GROUP, "reclaimer", 0, 100, 2)
        .await
        .unwrap();
    assert_eq!(claimed.redeliver.len(), 3);
    assert!(claimed.dead.is_empty());
    assert_eq!(
        claimed.redeliver[0].raw.as_deref(),
        Some(b"event-0".as_slice())
    );
    // The reclaimer processes two of them; the first keeps failing.
    let done: Vec<String> = claimed.redeliver[1..]
        .iter()
        .map(|e| e.id.clone())
        .collect();
    redis.ack(StreamType::Links, GROUP, &done).await.unwrap();

    let claimed = redis
        .claim_stale(StreamType::Links, GROUP, "reclaimer", 0, 100, 2)
        .await
        .unwrap();
    assert!(claimed.redeliver.is_empty());
    assert_eq!(claimed.dead.len(), 1);
    let dead = &claimed.dead[0];
    redis
        .dead_letter(StreamType::Links, GROUP, dead, "apply failed: boom")
        .await
        .unwrap();
    assert_eq!(redis.pending(StreamType::Links, GROUP).await.unwrap(), 0);

    let letters = redis.dlq_list("links", 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, "apply failed: boom");
    assert_eq!(letters[0].source_id, dead.id);
    assert_eq!(letters[0].raw.as_deref(), Some(b"event-0".as_slice()));
    assert_eq!(letters[0].event_id, Some(1000));

    // Replay puts it back on the stream, where the group sees it as new.
    assert_eq!(
        redis.dlq_replay(StreamType::Links, None, 7).await.unwrap(),
        1
    );
    assert_eq!(redis.dlq_len("links").await.unwrap(), 0);
    let replayed = redis
        .read_group(
            &mut connection,
            StreamType::Links,
            GROUP,
            "c",
            10,
            100,
            ReadFrom::New,
        )
        .await
        .unwrap();
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].raw.as_deref(), Some(b"event-0".as_slice()));
    assert_eq!(replayed[0].event_id, Some(1000));
    test.cleanup().await;
}

#[tokio::test]
async fn rejected_events_land_in_their_bucket() {
    let (test, redis) = setup().await;
    redis
        .dead_letter_rejected("unknown", b"\xff\xfe", 2, 99, "undecodable event")
        .await
        .unwrap();
    let letters = redis.dlq_list("unknown", 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, "undecodable event");
    assert_eq!(letters[0].shard, Some(2));
    assert_eq!(letters[0].raw.as_deref(), Some(b"\xff\xfe".as_slice()));
    test.cleanup().await;
}

#[tokio::test]
async fn trimming_never_removes_what_a_group_still_needs() {
    let (test, redis) = setup().await;
    redis
        .ensure_group(StreamType::UserData, "fast")
        .await
        .unwrap();
    redis
        .ensure_group(StreamType::UserData, "slow")
        .await
        .unwrap();
    let ids = redis
        .publish(StreamType::UserData, &entries(0..10))
        .await
        .unwrap();
    let mut connection = redis.blocking_connection().await.unwrap();

    // Nothing acknowledged: nothing goes.
    assert_eq!(
        redis.trim_acknowledged(StreamType::UserData).await.unwrap(),
        0
    );

    // "fast" reads and acknowledges all; "slow" reads 6, acknowledges 3 (entries 0..3).
    let fast = redis
        .read_group(
            &mut connection,
            StreamType::UserData,
            "fast",
            "f",
            100,
            100,
            ReadFrom::New,
        )
        .await
        .unwrap();
    let fast_ids: Vec<String> = fast.iter().map(|e| e.id.clone()).collect();
    redis
        .ack(StreamType::UserData, "fast", &fast_ids)
        .await
        .unwrap();
    let slow = redis
        .read_group(
            &mut connection,
            StreamType::UserData,
            "slow",
            "s",
            6,
            100,
            ReadFrom::New,
        )
        .await
        .unwrap();
    let slow_acked: Vec<String> = slow[..3].iter().map(|e| e.id.clone()).collect();
    redis
        .ack(StreamType::UserData, "slow", &slow_acked)
        .await
        .unwrap();

    let removed = redis.trim_acknowledged(StreamType::UserData).await.unwrap();
    assert_eq!(removed, 3, "only entries both groups acknowledged");
    // "slow" can still read its pending entries and the undelivered ones.
    let pending = redis
        .read_group(
            &mut connection,
            StreamType::UserData,
            "slow",
            "s",
            100,
            0,
            ReadFrom::Pending,
        )
        .await
        .unwrap();
    assert_eq!(pending.len(), 3);
    assert!(pending.iter().all(|e| e.raw.is_some()));
    assert_eq!(pending[0].id, ids[3]);
    let rest = redis
        .read_group(
            &mut connection,
            StreamType::UserData,
            "slow",
            "s",
            100,
            100,
            ReadFrom::New,
        )
        .await
        .unwrap();
    assert_eq!(rest.len(), 4);
    let all: Vec<String> = pending.iter().chain(&rest).map(|e| e.id.clone()).collect();
    redis.ack(StreamType::UserData, "slow", &all).await.unwrap();
    assert_eq!(
        redis.trim_acknowledged(StreamType::UserData).await.unwrap(),
        7
    );
    test.cleanup().await;
}

#[tokio::test]
async fn cursors_never_move_backwards() {
    let (test, redis) = setup().await;
    assert_eq!(redis.load_cursor(1).await.unwrap(), None);
    assert!(redis.store_cursor(1, 500).await.unwrap());
    assert!(!redis.store_cursor(1, 499).await.unwrap());
    assert!(redis.store_cursor(1, 1_000_000_000_000).await.unwrap());
    assert!(!redis.store_cursor(1, 999_999_999_999).await.unwrap());
    assert_eq!(redis.load_cursor(1).await.unwrap(), Some(1_000_000_000_000));
    assert_eq!(redis.load_cursor(2).await.unwrap(), None);

    let details = serde_json::json!({"cursor": 5, "oldest_retained": 900});
    redis.mark_backfill_needed(2, &details).await.unwrap();
    assert_eq!(redis.backfill_needed(2).await.unwrap(), Some(details));
    test.cleanup().await;
}

#[tokio::test]
async fn a_blocking_read_waits_its_block_time_without_timing_out() {
    let (test, redis) = setup().await;
    redis.ensure_group(StreamType::Casts, GROUP).await.unwrap();
    let mut connection = redis.blocking_connection().await.unwrap();
    let started = std::time::Instant::now();
    let read = redis
        .read_group(
            &mut connection,
            StreamType::Casts,
            GROUP,
            "c",
            10,
            1500,
            ReadFrom::New,
        )
        .await
        .unwrap();
    assert!(read.is_empty());
    assert!(started.elapsed() >= std::time::Duration::from_millis(1400));
    test.cleanup().await;
}

#[tokio::test]
async fn entries_without_event_bytes_come_back_dead_letterable() {
    let (test, redis) = setup().await;
    redis.ensure_group(StreamType::Casts, GROUP).await.unwrap();
    let mut connection = redis.connection();
    let _: String = redis::cmd("XADD")
        .arg(redis.stream_key(StreamType::Casts))
        .arg("*")
        .arg("junk")
        .arg("1")
        .query_async(&mut connection)
        .await
        .unwrap();
    let mut blocking = redis.blocking_connection().await.unwrap();
    let read = redis
        .read_group(
            &mut blocking,
            StreamType::Casts,
            GROUP,
            "c",
            10,
            100,
            ReadFrom::New,
        )
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    assert!(read[0].raw.is_none());
    redis
        .dead_letter(
            StreamType::Casts,
            GROUP,
            &read[0],
            "entry without event bytes",
        )
        .await
        .unwrap();
    assert_eq!(redis.pending(StreamType::Casts, GROUP).await.unwrap(), 0);
    assert_eq!(redis.dlq_len("casts").await.unwrap(), 1);
    test.cleanup().await;
}
