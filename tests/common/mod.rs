//! Helpers shared by the integration tests: a throwaway PostgreSQL database and a throwaway
//! Redis key prefix per test, on the real servers (127.0.0.1:5432 user postgres, and
//! 127.0.0.1:6379), overridable with `WAYPOINT_TEST_DATABASE_URL` / `WAYPOINT_TEST_REDIS_URL`.
//!
//! Call `cleanup().await` at the end of a test; `Drop` also cleans up (best effort, on a
//! separate thread) when a test panics before reaching it.

#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use waypoint::config::{DatabaseConfig, RedisConfig};

/// Server used when `WAYPOINT_TEST_DATABASE_URL` is not set (any database on it works; the
/// test databases are created next to it).
pub const DEFAULT_TEST_DATABASE_URL: &str = "postgresql://postgres@127.0.0.1:5432/postgres";
/// Server used when `WAYPOINT_TEST_REDIS_URL` is not set.
pub const DEFAULT_TEST_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Test start-up should not wait a minute for a server that is not there.
const TEST_CONNECT_RETRY_SECONDS: u64 = 5;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique across concurrent tests and test processes.
pub fn unique_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{nanos}_{count}", std::process::id())
}

/// Runs a cleanup future to completion on a thread of its own, so it works from `Drop`
/// whether or not a Tokio runtime is running on the current thread.
fn run_detached<F, Fut>(make: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let joined = std::thread::spawn(move || {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(make()),
            Err(error) => eprintln!("test cleanup: no runtime: {error}"),
        }
    })
    .join();
    if joined.is_err() {
        eprintln!("test cleanup panicked");
    }
}

/// A uniquely named database, dropped (`WITH (FORCE)`) on cleanup.
pub struct TestDb {
    name: String,
    url: String,
    server_url: String,
    cleaned: bool,
}

impl TestDb {
    /// Creates a fresh, empty database.
    pub async fn new() -> TestDb {
        let db = Self::reserve();
        let created = waypoint::store::create_database_if_missing(&db.config())
            .await
            .expect("create test database");
        assert!(created, "test database {} already existed", db.name);
        db
    }

    /// Picks a unique database name without creating the database (for tests of creation);
    /// cleanup still drops it if it exists by then.
    pub fn reserve() -> TestDb {
        let server_url = std::env::var("WAYPOINT_TEST_DATABASE_URL")
            .unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_owned());
        let name = unique_name("waypoint_test");
        let mut url = url::Url::parse(&server_url).expect("WAYPOINT_TEST_DATABASE_URL is a URL");
        url.set_path(&format!("/{name}"));
        TestDb {
            name,
            url: url.to_string(),
            server_url,
            cleaned: false,
        }
    }

    /// URL of the test database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Name of the test database.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A database configuration pointing at the test database, with a short start-up retry.
    pub fn config(&self) -> DatabaseConfig {
        DatabaseConfig {
            url: self.url.clone(),
            connect_retry_seconds: TEST_CONNECT_RETRY_SECONDS,
            ..DatabaseConfig::default()
        }
    }

    /// Drops the database, disconnecting whoever still uses it.
    pub async fn cleanup(mut self) {
        self.cleaned = true;
        drop_database(self.server_url.clone(), self.name.clone()).await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if !self.cleaned {
            let (server_url, name) = (self.server_url.clone(), self.name.clone());
            run_detached(move || drop_database(server_url, name));
        }
    }
}

async fn drop_database(server_url: String, name: String) {
    let result = async {
        let (client, connection) =
            tokio_postgres::connect(&server_url, tokio_postgres::NoTls).await?;
        let connection = tokio::spawn(connection);
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
            .await?;
        drop(client);
        let _ = connection.await;
        Ok::<_, tokio_postgres::Error>(())
    }
    .await;
    if let Err(error) = result {
        eprintln!("test cleanup: cannot drop database {name}: {error}");
    }
}

/// A unique Redis key prefix; every `<prefix>:*` key is deleted on cleanup.
pub struct TestRedis {
    url: String,
    prefix: String,
    cleaned: bool,
}

impl TestRedis {
    /// Picks a unique prefix on the test Redis server.
    pub fn new() -> TestRedis {
        let url = std::env::var("WAYPOINT_TEST_REDIS_URL")
            .unwrap_or_else(|_| DEFAULT_TEST_REDIS_URL.to_owned());
        TestRedis {
            url,
            prefix: unique_name("waypoint-test"),
            cleaned: false,
        }
    }

    /// URL of the test Redis server.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The unique key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A Redis configuration with the test URL and prefix, with a short start-up retry.
    pub fn config(&self) -> RedisConfig {
        RedisConfig {
            url: self.url.clone(),
            prefix: self.prefix.clone(),
            connect_retry_seconds: TEST_CONNECT_RETRY_SECONDS,
            ..RedisConfig::default()
        }
    }

    /// Deletes every key under the prefix.
    pub async fn cleanup(mut self) {
        self.cleaned = true;
        delete_prefix(self.url.clone(), self.prefix.clone()).await;
    }
}

impl Default for TestRedis {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if !self.cleaned {
            let (url, prefix) = (self.url.clone(), self.prefix.clone());
            run_detached(move || delete_prefix(url, prefix));
        }
    }
}

async fn delete_prefix(url: String, prefix: String) {
    let result = async {
        let client = redis::Client::open(url.as_str())?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}:*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut connection)
                .await?;
            if !keys.is_empty() {
                redis::cmd("DEL")
                    .arg(&keys)
                    .query_async::<()>(&mut connection)
                    .await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok::<_, redis::RedisError>(())
    }
    .await;
    if let Err(error) = result {
        eprintln!("test cleanup: cannot delete keys {prefix}:*: {error}");
    }
}
pub mod harness;
pub mod http;
pub mod process;
pub mod proxy;
