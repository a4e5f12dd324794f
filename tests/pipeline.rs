//! The live pipeline end to end, in process: dev hub → subscribers → Redis Streams →
//! consumers → PostgreSQL, converging to the hub's state (`devhub --dump-state`) through
//! duplicates, cut streams, dropped events, poison messages, split roles and crashing actors.

mod common;

use std::time::Duration;

use common::harness::{self, devhub, small_hub, wait_converged};
use common::{TestDb, TestRedis};
use waypoint::cli::Role;
use waypoint::devhub::Faults;
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
async fn a_silent_stream_is_reconnected_and_what_it_missed_arrives() {
    let hub = devhub(small_hub(33)).await;
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = harness::env(
        &db,
        &redis,
        &hub.url(),
        &[("WAYPOINT_HUB__SUBSCRIBE_IDLE_TIMEOUT_SECONDS", "2".into())],
    );
    let service = Service::start(Role::Both, harness::config(&env), None)
        .await
        .unwrap();
    let pg = harness::pool(&db).await;
    wait_converged(&hub, &pg, CONVERGE).await;

    // The open streams go silent and pass over new blocks, BLOCK_CONFIRMED included, so no
    // count reveals a gap; and nothing is committed afterwards. Only the watchdog's new
    // subscription (from cursor + 1) can bring these messages.
    hub.set_faults(Faults {
        stall_live: true,
        ..Faults::default()
    });
    hub.append_live(30);
    tokio::time::sleep(Duration::from_millis(300)).await;
    hub.set_faults(Faults::default());
    wait_converged(&hub, &pg, CONVERGE).await;
    let rendered = service.runtime().metrics().render();
    assert!(
        rendered.lines().any(
            |line| line.starts_with("waypoint_hub_subscribe_reconnects_total")
                && line.contains("reason=\"idle\"")
                && !line.ends_with(" 0")
        ),
        "the watchdog reconnected:\n{rendered}"
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
    // The rows are committed before the panic, so convergence can be seen before the
    // supervisor has restarted the consumer (after its backoff): wait for the restart.
    let node = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let node = service
                .tree()
                .snapshot()
                .find("root/persist/consumer:casts:0")
                .cloned()
                .expect("casts consumer");
            if node.restarts > 0 {
                return node;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the panicking consumer is restarted");
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

#[tokio::test]
async fn publishers_wait_when_the_backlog_is_full_and_nothing_is_lost() {
    let hub = devhub(small_hub(81)).await;
    let (db, redis_test) = (TestDb::new().await, TestRedis::new());
    // Producer only, with a tiny backlog limit: the publishers must stop appending.
    let limit = 300u64;
    let env = harness::env(
        &db,
        &redis_test,
        &hub.url(),
        &[("WAYPOINT_STREAM__MAX_BACKLOG", limit.to_string())],
    );
    let config = harness::config(&env);
    let producer = Service::start(Role::Producer, config.clone(), None)
        .await
        .unwrap();
    let redis = Redis::connect(&config.redis).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut backlog_before = Vec::new();
    for kind in StreamType::ALL {
        backlog_before.push(redis.backlog(kind, &config.stream.group).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (kind, before) in StreamType::ALL.into_iter().zip(&backlog_before) {
        let now = redis.backlog(kind, &config.stream.group).await.unwrap();
        // A publisher appends at most one batch past the limit, then waits.
        let bound = limit + config.stream.publish_batch_size as u64 + 256;
        assert!(now <= bound, "{kind}: backlog {now} over {bound}");
        assert_eq!(now, *before, "{kind}: no growth while over the limit");
    }
    // Consumers arrive: the backlog drains, the publishers resume, the replica converges.
    let consumer_env = harness::env(&db, &redis_test, &hub.url(), &[]);
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
    redis_test.cleanup().await;
}

#[tokio::test]
async fn fids_labelled_spam_are_dropped() {
    let hub = devhub(small_hub(91)).await;
    let spam_fid = 7u64;
    let labels = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        labels.path(),
        format!(
            "{{\"provider\":1,\"type\":{{\"target\":\"fid\",\"fid\":{spam_fid}}},\"label_type\":\"spam\",\"label_value\":0,\"timestamp\":1}}\n\
             {{\"provider\":1,\"type\":{{\"target\":\"fid\",\"fid\":8}},\"label_type\":\"spam\",\"label_value\":2,\"timestamp\":1}}\n"
        ),
    )
    .unwrap();
    // A second list over HTTP, as the public label lists are published.
    let url_spam_fid = 9u64;
    let served = format!(
        "{{\"provider\":1,\"type\":{{\"target\":\"fid\",\"fid\":{url_spam_fid}}},\"label_type\":\"spam\",\"label_value\":0,\"timestamp\":1}}\n"
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/labels.jsonl", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/jsonl\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{served}",
                served.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = harness::env(
        &db,
        &redis,
        &hub.url(),
        &[(
            "WAYPOINT_SPAM__SOURCES",
            format!("{},{url}", labels.path().display()),
        )],
    );
    let service = Service::start(Role::Both, harness::config(&env), None)
        .await
        .unwrap();
    let pg = harness::pool(&db).await;
    // Everything except the spam fid's messages (its on-chain events and fname proofs stay).
    let mut expected = hub.dump_state();
    let kept = |fid: u64| fid != spam_fid && fid != url_spam_fid;
    expected.casts.retain(|row| kept(row.fid));
    expected.reactions.retain(|row| kept(row.fid));
    expected.links.retain(|row| kept(row.fid));
    expected.verifications.retain(|row| kept(row.fid));
    expected.user_data.retain(|row| kept(row.fid));
    let started = std::time::Instant::now();
    loop {
        let diff = expected.diff(&harness::replica(&pg).await, 5);
        if diff.is_empty() {
            break;
        }
        assert!(started.elapsed() < CONVERGE, "{diff:#?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rendered = service.runtime().metrics().render();
    assert!(
        rendered.lines().any(
            |line| line.starts_with("waypoint_spam_dropped_messages_total ")
                && !line.ends_with(" 0")
        ),
        "spam drops are counted"
    );
    server.abort();
    service.shutdown().await.unwrap();
    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis.cleanup().await;
}

#[tokio::test]
async fn a_cursor_older_than_the_hubs_retention_marks_the_shard_for_backfill() {
    let hub = devhub(small_hub(101)).await;
    let (db, redis_test) = (TestDb::new().await, TestRedis::new());
    let env = harness::env(&db, &redis_test, &hub.url(), &[]);
    let config = harness::config(&env);
    let service = Service::start(Role::Both, config.clone(), None)
        .await
        .unwrap();
    let pg = harness::pool(&db).await;
    wait_converged(&hub, &pg, CONVERGE).await;
    service.shutdown().await.unwrap();

    // While Waypoint is down the hub moves on and prunes its event log to the last 3 blocks.
    for _ in 0..10 {
        hub.append_live(10);
    }
    hub.set_faults(Faults {
        event_retention_blocks: Some(3),
        ..Faults::default()
    });
    let service = Service::start(
        Role::Both,
        harness::config(&harness::env(&db, &redis_test, &hub.url(), &[])),
        None,
    )
    .await
    .unwrap();
    let redis = Redis::connect(&config.redis).await.unwrap();
    tokio::time::timeout(CONVERGE, async {
        loop {
            let marked = redis.backfill_needed(1).await.unwrap().is_some()
                && redis.backfill_needed(2).await.unwrap().is_some();
            if marked {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("both shards are marked for backfill");
    let marker = redis.backfill_needed(1).await.unwrap().unwrap();
    assert!(
        marker["oldest_retained_event_id"].as_u64().unwrap() > marker["cursor"].as_u64().unwrap()
    );
    let shards = service.runtime().shards();
    assert!(shards[&1].backfill_needed.is_some(), "{shards:?}");
    let (ready, _) = waypoint::api::health::readiness(service.runtime()).await;
    assert!(
        ready["shards"]["1"]["backfill_needed"].is_string(),
        "{ready}"
    );
    // Streaming carries on from the oldest retained event: new messages still arrive.
    hub.set_faults(Faults::default());
    hub.append_live(10);
    let expected_new = hub.dump_state();
    tokio::time::timeout(CONVERGE, async {
        loop {
            let actual = harness::replica(&pg).await;
            let missing_live = expected_new
                .casts
                .iter()
                .filter(|row| row.live)
                .filter(|row| !actual.casts.contains(row))
                .count();
            // Only what happened during the pruned window may be missing (backfill's job).
            if missing_live < expected_new.casts.len() / 2 && actual.num_rows() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("streaming resumed");
    service.shutdown().await.unwrap();
    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis_test.cleanup().await;
}

#[tokio::test]
async fn acknowledged_entries_are_trimmed_from_the_streams() {
    let hub = devhub(small_hub(111)).await;
    let (db, redis_test) = (TestDb::new().await, TestRedis::new());
    let env = harness::env(&db, &redis_test, &hub.url(), &[]);
    let config = harness::config(&env);
    let service = Service::start(Role::Both, config.clone(), None)
        .await
        .unwrap();
    let pg = harness::pool(&db).await;
    wait_converged(&hub, &pg, CONVERGE).await;
    let redis = Redis::connect(&config.redis).await.unwrap();
    tokio::time::timeout(CONVERGE, async {
        loop {
            let mut connection = redis.connection();
            let length: u64 =
                redis::AsyncCommands::xlen(&mut connection, redis.stream_key(StreamType::Casts))
                    .await
                    .unwrap();
            if length == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the reclaimer trims what was acknowledged");
    service.shutdown().await.unwrap();
    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis_test.cleanup().await;
}

#[tokio::test]
async fn a_producer_per_shard_and_several_consumer_processes_share_the_work() {
    let hub = devhub(small_hub(111)).await;
    let (db, redis_test) = (TestDb::new().await, TestRedis::new());
    let env = |extra: &[(&str, String)]| harness::env(&db, &redis_test, &hub.url(), extra);
    let mut services = Vec::new();
    for shard in ["1", "2"] {
        let config = harness::config(&env(&[("WAYPOINT_HUB__SHARD_INDICES", shard.into())]));
        services.push(Service::start(Role::Producer, config, None).await.unwrap());
    }
    for _ in 0..2 {
        let config = harness::config(&env(&[("WAYPOINT_STREAM__CONSUMERS_PER_TYPE", "2".into())]));
        services.push(Service::start(Role::Consumer, config, None).await.unwrap());
    }
    let pg = harness::pool(&db).await;
    wait_converged(&hub, &pg, CONVERGE).await;
    for _ in 0..3 {
        hub.append_live(40);
    }
    wait_converged(&hub, &pg, CONVERGE).await;

    // Two processes with two consumers each, under distinct names, in one group per stream;
    // and nothing left unacknowledged.
    let redis = Redis::connect(&redis_test.config()).await.unwrap();
    let mut connection = redis.connection();
    let consumers: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(redis.stream_key(StreamType::Casts))
        .arg("waypoint")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(consumers.len(), 4, "{consumers:?}");
    tokio::time::timeout(CONVERGE, async {
        while redis.pending(StreamType::Casts, "waypoint").await.unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("every entry acknowledged");
    // Each producer keeps its own shard's cursor.
    for shard in [1, 2] {
        assert!(
            redis.load_cursor(shard).await.unwrap().is_some(),
            "cursor of shard {shard}"
        );
    }
    for service in services {
        service.shutdown().await.unwrap();
    }
    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis_test.cleanup().await;
}
