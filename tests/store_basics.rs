//! PostgreSQL pool and migrations, and the Redis connection, against the real servers.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{TestDb, TestRedis};
use redis::AsyncCommands;
use waypoint::config::{DatabaseConfig, RedisConfig};
use waypoint::store::{self, Pg, StoreError};
use waypoint::streams::{Redis, StreamsError};

#[tokio::test]
async fn migrations_apply_once() {
    let db = TestDb::new().await;
    let pg = Pg::connect(&db.config()).await.expect("connect");

    let first = store::migrate(&pg).await.expect("first migrate");
    assert_eq!(first, store::embedded_migrations());
    assert_eq!(first.first().map(String::as_str), Some("V1__init"));
    let second = store::migrate(&pg).await.expect("second migrate");
    assert!(second.is_empty(), "second run applied {second:?}");

    // The schema is there and usable through the pool.
    let client = pg.get().await.expect("pooled connection");
    client
        .execute(
            "INSERT INTO waypoint_meta (key, value) VALUES ('probe', 'ok')",
            &[],
        )
        .await
        .expect("insert");
    let value: String = client
        .query_one("SELECT value FROM waypoint_meta WHERE key = 'probe'", &[])
        .await
        .expect("select")
        .get(0);
    assert_eq!(value, "ok");
    drop(client);

    pg.close();
    db.cleanup().await;
}

#[tokio::test]
async fn concurrent_migrations_apply_each_migration_once() {
    let db = TestDb::new().await;
    let pg = Pg::connect(&db.config()).await.expect("connect");
    let (left, right) = tokio::join!(store::migrate(&pg), store::migrate(&pg));
    let mut applied = left.expect("left");
    applied.extend(right.expect("right"));
    assert_eq!(applied, store::embedded_migrations());
    pg.close();
    db.cleanup().await;
}

#[tokio::test]
async fn database_is_created_only_when_missing() {
    let db = TestDb::reserve();
    assert!(
        store::create_database_if_missing(&db.config())
            .await
            .expect("create")
    );
    assert!(
        !store::create_database_if_missing(&db.config())
            .await
            .expect("exists")
    );
    let pg = Pg::connect(&db.config())
        .await
        .expect("connect to the new database");
    pg.ping().await.expect("ping");
    pg.close();
    db.cleanup().await;
}

#[tokio::test]
async fn unreachable_database_fails_after_the_retry_window_with_a_clear_error() {
    let config = DatabaseConfig {
        url: "postgresql://postgres:hunter2@127.0.0.1:1/waypoint_nowhere".to_owned(),
        connect_retry_seconds: 1,
        ..DatabaseConfig::default()
    };
    let started = Instant::now();
    let error = Pg::connect(&config)
        .await
        .expect_err("nothing listens on port 1");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(1),
        "gave up after {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert!(matches!(error, StoreError::Unreachable { .. }), "{error:?}");
    assert!(error.is_retryable());
    let message = error.to_string();
    assert!(
        message.starts_with("database 127.0.0.1:1/waypoint_nowhere unreachable after 1s"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test]
async fn a_missing_database_fails_at_once_instead_of_waiting() {
    let db = TestDb::reserve();
    let config = DatabaseConfig {
        connect_retry_seconds: 60,
        ..db.config()
    };
    let started = Instant::now();
    let error = Pg::connect(&config)
        .await
        .expect_err("database does not exist");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!error.is_retryable(), "{error:?}");
    assert!(error.to_string().contains("does not exist"), "{error}");
}

#[tokio::test]
async fn migrate_command_creates_the_database_and_reports_what_ran() {
    let db = TestDb::reserve();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_waypoint"))
            .env_clear()
            .env("WAYPOINT_DATABASE__URL", db.url())
            .env("WAYPOINT_DATABASE__CONNECT_RETRY_SECONDS", "5")
            .arg("migrate")
            .output()
            .expect("run waypoint migrate")
    };
    let first = run();
    assert!(first.status.success(), "{first:?}");
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains("created database"), "{stdout}");
    assert!(stdout.contains("applied V1__init"), "{stdout}");
    assert!(stdout.contains("applied V2__schema"), "{stdout}");

    let second = run();
    assert!(second.status.success(), "{second:?}");
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(!stdout.contains("applied"), "{stdout}");
    assert!(
        stdout.contains("is up to date (V4__drop_superseded_indexes)"),
        "{stdout}"
    );
    db.cleanup().await;
}

#[tokio::test]
async fn redis_keys_carry_the_prefix() {
    let test_redis = TestRedis::new();
    let redis = Redis::connect(&test_redis.config()).await.expect("connect");
    let key = redis.key(&["probe", "{casts}"]);
    assert_eq!(key, format!("{}:probe:{{casts}}", test_redis.prefix()));

    let mut connection = redis.connection();
    let () = connection.set(&key, "value").await.expect("set");
    let value: String = connection.get(&key).await.expect("get");
    assert_eq!(value, "value");
    redis.ping().await.expect("ping");

    // Cleanup removes exactly the prefixed keys.
    let prefix = test_redis.prefix().to_owned();
    test_redis.cleanup().await;
    let remaining: Vec<String> = connection.keys(format!("{prefix}:*")).await.expect("keys");
    assert!(remaining.is_empty(), "{remaining:?}");
}

#[tokio::test]
async fn the_shared_connection_recovers_after_the_server_drops_it() {
    let test_redis = TestRedis::new();
    let redis = Redis::connect(&test_redis.config()).await.expect("connect");
    let mut connection = redis.connection();
    let key = redis.key(&["survives"]);
    let () = connection.set(&key, "1").await.expect("set");
    let before: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut connection)
        .await
        .expect("client id");

    // What a Redis restart does to our socket, limited to our own connection so that other
    // tests on the same server are not disturbed.
    let killer = redis::Client::open(test_redis.url()).expect("client");
    let mut killer = killer
        .get_multiplexed_async_connection()
        .await
        .expect("killer connection");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(before)
        .query_async(&mut killer)
        .await
        .expect("client kill");
    assert_eq!(killed, 1);

    // The command that meets the dead socket may fail (retryably); the next one succeeds on
    // a new connection.
    let mut value = None;
    for _ in 0..2 {
        match connection.get::<_, String>(&key).await {
            Ok(found) => {
                value = Some(found);
                break;
            }
            Err(error) => {
                let error = StreamsError::from(error);
                assert!(error.is_retryable(), "{error:?}");
            }
        }
    }
    assert_eq!(value.as_deref(), Some("1"));
    let after: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut connection)
        .await
        .expect("client id");
    assert_ne!(before, after, "a new connection was made");
    test_redis.cleanup().await;
}

#[tokio::test]
async fn blocking_reads_use_a_connection_without_a_response_timeout() {
    let test_redis = TestRedis::new();
    let config = RedisConfig {
        response_timeout_ms: 200,
        ..test_redis.config()
    };
    let redis = Redis::connect(&config).await.expect("connect");
    let stream = redis.key(&["empty-stream"]);

    let read = |mut connection: redis::aio::MultiplexedConnection| {
        let stream = stream.clone();
        async move {
            redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(1_000)
                .arg("STREAMS")
                .arg(&stream)
                .arg("$")
                .query_async::<Option<redis::Value>>(&mut connection)
                .await
        }
    };
    let started = Instant::now();
    let result = read(
        redis
            .blocking_connection()
            .await
            .expect("blocking connection"),
    )
    .await;
    assert!(matches!(result, Ok(None)), "{result:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));

    // The same read on the shared connection trips its 200 ms response timeout.
    let error = redis::cmd("XREAD")
        .arg("BLOCK")
        .arg(1_000)
        .arg("STREAMS")
        .arg(&stream)
        .arg("$")
        .query_async::<Option<redis::Value>>(&mut redis.connection())
        .await
        .expect_err("response timeout");
    assert!(StreamsError::from(error).is_retryable());
    test_redis.cleanup().await;
}

#[tokio::test]
async fn unreachable_redis_fails_after_the_retry_window_with_a_clear_error() {
    let config = RedisConfig {
        url: "redis://:hunter2@127.0.0.1:1/3".to_owned(),
        connect_retry_seconds: 1,
        ..RedisConfig::default()
    };
    let started = Instant::now();
    let error = Redis::connect(&config)
        .await
        .expect_err("nothing listens on port 1");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(
        matches!(error, StreamsError::Unreachable { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with("redis 127.0.0.1:1/3 unreachable after 1s"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test]
async fn the_statistics_refresh_names_columns_that_exist() {
    let db = TestDb::new().await;
    let pg = Pg::connect(&db.config()).await.expect("connect");
    store::migrate(&pg).await.expect("migrate");
    let client = pg.get().await.expect("pooled connection");
    let tables: Vec<String> = client
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE 'refinery%'",
            &[],
        )
        .await
        .expect("tables")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(tables.len() >= 10, "{tables:?}");
    for table in &tables {
        let statement = store::analyze_statement(table).expect("a plain table name");
        client
            .batch_execute(&statement)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
    assert_eq!(store::analyze_statement("casts; drop table casts"), None);
    drop(client);
    pg.close();
    db.cleanup().await;
}
