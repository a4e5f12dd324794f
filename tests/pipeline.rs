//! The live pipeline end to end, in process: dev hub → subscribers → Redis Streams →
//! consumers → PostgreSQL, converging to the hub's state (`devhub --dump-state`) through
//! duplicates, cut streams, dropped events, poison messages, split roles and crashing actors.

mod common;

use std::time::Duration;

use common::harness::{self, devhub, small_hub, wait_converged};
use common::{TestDb, TestRedis};
use waypoint::cli::Role;
use waypoint::hub::devhub::Faults;
use waypoint::service::Service;
use waypoint::streams::{Redis, StreamType};

const CONVERGE: Duration = Duration::from_secs(90);

#[tokio::test]
async fn the_database_converges_to_the_hub_for_several_seeds() {
    for seed in [11u64, 12, 13] {
        let hub = devhub(small_hub(seed)).await;
        let (db, redis) = (TestDb::new().await, TestRedis::new());
        let env = harness::env(&db, &redis, &hub.url(), &[]);
        let service = Service::start(Role::Both, harness::config(&env), None)
            .await
            .unwrap();
        let pg = harness::pool(&db).await;
        wait_converged(&hub, &pg, CONVERGE).await;

        // Live blocks keep flowing in.
        for _ in 0..3 {
            hub.append_live(40);
        }
        wait_converged(&hub, &pg, CONVERGE).await;
        service.shutdown().await.unwrap();
        pg.close();
        hub.shutdown().await;
        db.cleanup().await;
        redis.cleanup().await;
    }
}

#[tokio::test]
async fn duplicated_events_and_cut_streams_still_converge() {
    let mut options = small_hub(21);
    options.faults = Faults {
        duplicate_rate: 0.3,
        cut_subscribe_after: Some(150),
        ..Faults::default()
    };
    let hub = devhub(options).await;
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = harness::env(&db, &redis, &hub.url(), &[]);
    let service = Service::start(Role::Both, harness::config(&env), None)
        .await
        .unwrap();
    let pg = harness::pool(&db).await;
    for _ in 0..5 {
        hub.append_live(30);
    }
    wait_converged(&hub, &pg, CONVERGE).await;
    service.shutdown().await.unwrap();
    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis.cleanup().await;
}

#[tokio::test]
async fn gaps_from_silently_dropped_events_are_repaired() {
    let hub = devhub(small_hub(31)).await;
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = harness::env(&db, &redis, &hub.url(), &[]);
    let service = Service::start(Role::Both, harness::config(&env), None)
        .await
        .unwrap();
    let pg = harness::pool(&db).await;
    wait_converged(&hub, &pg, CONVERGE).await;

    // Like a node with a slow client: live events silently skipped, the stream stays open.
    hub.set_faults(Faults {
        drop_rate: 0.3,
        ..Faults::default()
    });
    for _ in 0..8 {
        hub.append_live(40);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The next block's BLOCK_CONFIRMED reveals the last gaps.
    hub.set_faults(Faults::default());
    hub.append_live(1);
    wait_converged(&hub, &pg, CONVERGE).await;
    let rendered = service.runtime().metrics().render();
    assert!(
        rendered
            .lines()
            .any(|line| line.starts_with("waypoint_hub_gaps_repaired_total")
                && !line.ends_with(" 0")),
        "gaps were found and repaired"
    );
    service.shutdown().await.unwrap();
    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis.cleanup().await;
}

#[tokio::test]
async fn poison_messages_end_in_the_dead_letter_stream_without_blocking() {
    let hub = devhub(small_hub(41)).await;
    let (db, redis_test) = (TestDb::new().await, TestRedis::new());
    let env = harness::env(&db, &redis_test, &hub.url(), &[]);
    let config = harness::config(&env);
    let service = Service::start(Role::Both, config.clone(), None)
        .await
        .unwrap();
    let pg = harness::pool(&db).await;
    wait_converged(&hub, &pg, CONVERGE).await;

    for faults in [
        Faults {
            bad_hash_rate: 1.0,
            ..Faults::default()
        },
        Faults {
            bad_signature_rate: 1.0,
            ..Faults::default()
        },
        Faults {
            undecodable_rate: 1.0,
            ..Faults::default()
        },
    ] {
        hub.set_faults(faults);
        hub.append_live(3);
    }
    hub.set_faults(Faults::default());
    hub.append_live(20);
    // Good messages after the poison ones still arrive: nothing blocks.
    wait_converged(&hub, &pg, CONVERGE).await;

    let redis = Redis::connect(&config.redis).await.unwrap();
    let mut reasons = Vec::new();
    for bucket in StreamType::ALL
        .iter()
        .map(|kind| kind.as_str())
        .chain(["unknown"])
    {
        for letter in redis.dlq_list(bucket, 100).await.unwrap() {
            assert!(letter.raw.is_some(), "the event bytes are kept");
            reasons.push(letter.reason);
        }
    }
    let count = |needle: &str| {
        reasons
            .iter()
            .filter(|reason| reason.contains(needle))
            .count()
    };
    assert_eq!(count("hash does not match"), 3, "{reasons:#?}");
    assert_eq!(count("signature does not verify"), 3, "{reasons:#?}");
    assert_eq!(count("does not decode"), 3, "{reasons:#?}");
    service.shutdown().await.unwrap();
    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis_test.cleanup().await;
}

#[tokio::test]
async fn a_producer_running_before_any_consumer_loses_nothing() {
    let hub = devhub(small_hub(51)).await;
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = harness::env(&db, &redis, &hub.url(), &[]);
    let producer = Service::start(Role::Producer, harness::config(&env), None)
        .await
        .unwrap();
    // Wait until the producer has everything in Redis: both cursors past the history.
    let client = Redis::connect(&harness::config(&env).redis).await.unwrap();
    let history_end: Vec<u64> = (1..=2).map(|shard| hub.last_event_id(shard)).collect();
    tokio::time::timeout(CONVERGE, async {
        loop {
            let mut done = true;
            for (shard, end) in (1..=2).zip(&history_end) {
                // The last block stays held until the next BLOCK_CONFIRMED: compare blocks.
                let cursor = client.load_cursor(shard).await.unwrap().unwrap_or(0);
                done &= cursor >> 14 >= (end >> 14) - 1;
            }
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the producer published the history");
    hub.append_live(20);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Now a consumer process starts: the groups were created at 0, so it reads everything.
    let consumer_env = harness::env(&db, &redis, &hub.url(), &[]);
    let consumer = Service::start(Role::Consumer, harness::config(&consumer_env), None)
        .await
        .unwrap();
    let pg = harness::pool(&db).await;
    wait_converged(&hub, &pg, CONVERGE).await;
    consumer.shutdown().await.unwrap();
    producer.shutdown().await.unwrap();
    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis.cleanup().await;
}

#[tokio::test]
async fn consumers_converge_on_shuffled_and_duplicated_streams() {
    let hub = devhub(small_hub(61)).await;
    let (db, redis_test) = (TestDb::new().await, TestRedis::new());
    let env = harness::env(&db, &redis_test, &hub.url(), &[]);
    let config = harness::config(&env);
    let producer = Service::start(Role::Producer, config.clone(), None)
        .await
        .unwrap();
    let redis = Redis::connect(&config.redis).await.unwrap();
    let total_events: u64 = {
        // Wait for the publishers to go quiet.
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut now = 0;
            for kind in StreamType::ALL {
                now += redis.backlog(kind, &config.stream.group).await.unwrap();
            }
            if now == last && now > 0 {
                break now;
            }
            last = now;
        }
    };
    producer.shutdown().await.unwrap();
    assert!(total_events > 500);

    // Rewrite every stream shuffled, with a third of its entries twice.
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(61);
    let mut connection = redis.connection();
    for kind in StreamType::ALL {
        let key = redis.stream_key(kind);
        let entries: Vec<redis::streams::StreamId> = {
            let reply: redis::streams::StreamRangeReply =
                redis::AsyncCommands::xrange_all(&mut connection, &key)
                    .await
                    .unwrap();
            reply.ids
        };
        let mut payloads: Vec<Vec<u8>> = entries
            .iter()
            .filter_map(|entry| match entry.map.get("e") {
                Some(redis::Value::BulkString(bytes)) => Some(bytes.clone()),
                _ => None,
            })
            .collect();
        let duplicates: Vec<Vec<u8>> = payloads
            .iter()
            .filter(|_| rng.random_bool(0.33))
            .cloned()
            .collect();
        payloads.extend(duplicates);
        payloads.shuffle(&mut rng);
        let () = redis::AsyncCommands::del(&mut connection, &key)
            .await
            .unwrap();
        redis
            .ensure_group(kind, &config.stream.group)
            .await
            .unwrap();
        let entries: Vec<waypoint::streams::NewEntry> = payloads
            .into_iter()
            .map(|raw| waypoint::streams::NewEntry {
                raw: raw.into(),
                shard: 0,
                event_id: 0,
                received_at_ms: 0,
            })
            .collect();
        for chunk in entries.chunks(500) {
            redis.publish(kind, chunk).await.unwrap();
        }
    }

    let consumer_env = harness::env(&db, &redis_test, &hub.url(), &[]);
    let consumer = Service::start(Role::Consumer, harness::config(&consumer_env), None)
        .await
        .unwrap();
    let pg = harness::pool(&db).await;
    wait_converged(&hub, &pg, CONVERGE).await;
    consumer.shutdown().await.unwrap();
    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis_test.cleanup().await;
}

#[tokio::test]
async fn a_consumer_that_panics_on_a_batch_is_restarted_and_the_batch_applied() {
    let hub = devhub(small_hub(71)).await;
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = harness::env(&db, &redis, &hub.url(), &[]);
    let service = Service::start(Role::Both, harness::config(&env), None)
        .await
        .unwrap();
    let pg = harness::pool(&db).await;
    wait_converged(&hub, &pg, CONVERGE).await;

    service.runtime().inject_consumer_panic(StreamType::Casts);
    // Live casts and more: the casts consumer panics after applying the next batch, before
    // acknowledging it; its restarted incarnation reads the batch again from its pending list.
    for _ in 0..3 {
        hub.append_live(40);
    }
    wait_converged(&hub, &pg, CONVERGE).await;
    let node = service
        .tree()
        .snapshot()
        .find("root/persist/consumer:casts:0")
        .cloned()
        .expect("casts consumer");
    assert_eq!(node.restarts, 1);
    assert!(
        node.last_failure
            .unwrap_or_default()
            .contains("injected consumer panic")
    );
    let rendered = service.runtime().metrics().render();
    assert!(
        rendered.lines().any(|line| line
            .starts_with("waypoint_actor_restarts_total{actor=\"root/persist/consumer:casts:0\"}")),
        "restarts are exported"
    );
    // Nothing left unacknowledged.
    let redis_client = Redis::connect(&harness::config(&env).redis).await.unwrap();
    tokio::time::timeout(CONVERGE, async {
        while redis_client
            .pending(StreamType::Casts, "waypoint")
            .await
            .unwrap()
            > 0
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the batch was acknowledged after the restart");
    service.shutdown().await.unwrap();
    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis.cleanup().await;
}
