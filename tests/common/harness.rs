//! The whole pipeline under test: a dev hub on an ephemeral port, a throwaway database and Redis
//! prefix, and the configuration a `waypoint start` needs to use them (timings shortened so
//! tests run in seconds).

use std::time::{Duration, Instant};

use waypoint::config::Config;
use waypoint::devhub::{DevHub, DevHubHandle, DevHubOptions};
use waypoint::replica::ReplicaState;
use waypoint::store::Pg;

use super::{TestDb, TestRedis};

/// Builds a dev hub (off the async threads: it signs every message) and serves it on an
/// ephemeral port.
pub async fn devhub(options: DevHubOptions) -> DevHubHandle {
    let hub = tokio::task::spawn_blocking(move || DevHub::build(options))
        .await
        .expect("build task")
        .expect("dev hub builds");
    hub.serve("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("dev hub serves")
}

/// Builds the same dev hub again and serves it on `addr`, as a node restarted on its address
/// would be (retrying while the old listener's port comes free).
pub async fn devhub_again(options: DevHubOptions, addr: std::net::SocketAddr) -> DevHubHandle {
    let started = Instant::now();
    loop {
        let build = options.clone();
        let hub = tokio::task::spawn_blocking(move || DevHub::build(build))
            .await
            .expect("build task")
            .expect("dev hub builds");
        match hub.serve(addr).await {
            Ok(handle) => return handle,
            Err(error) if started.elapsed() < Duration::from_secs(5) => {
                eprintln!("port not free yet: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("cannot serve on {addr} again: {error}"),
        }
    }
}

/// A small dataset: quick to build and to stream.
pub fn small_hub(seed: u64) -> DevHubOptions {
    DevHubOptions {
        num_fids: 40,
        seed,
        num_shards: 2,
        messages_per_fid: 30,
        ..DevHubOptions::default()
    }
}

/// A TCP port free right now on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// Environment settings for a test process: the test database, Redis prefix and hub, with
/// short timings. `extra` overrides or adds settings.
pub fn env(
    db: &TestDb,
    redis: &TestRedis,
    hub_url: &str,
    extra: &[(&str, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("WAYPOINT_DATABASE__URL", db.url().to_owned()),
        ("WAYPOINT_DATABASE__CONNECT_RETRY_SECONDS", "10".into()),
        ("WAYPOINT_REDIS__URL", redis.url().to_owned()),
        ("WAYPOINT_REDIS__PREFIX", redis.prefix().to_owned()),
        ("WAYPOINT_HUB__URL", hub_url.to_owned()),
        ("WAYPOINT_HUB__SUBSCRIBE_IDLE_TIMEOUT_SECONDS", "5".into()),
        ("WAYPOINT_HUB__RETRY_INITIAL_MS", "50".into()),
        ("WAYPOINT_HUB__RETRY_MAX_MS", "500".into()),
        ("WAYPOINT_STREAM__PUBLISH_FLUSH_MS", "20".into()),
        ("WAYPOINT_STREAM__BLOCK_MS", "200".into()),
        ("WAYPOINT_STREAM__CURSOR_FLUSH_MS", "100".into()),
        ("WAYPOINT_STREAM__CLAIM_IDLE_MS", "1500".into()),
        ("WAYPOINT_STREAM__RECLAIM_INTERVAL_MS", "300".into()),
        ("WAYPOINT_SUPERVISOR__BACKOFF_INITIAL_MS", "50".into()),
        ("WAYPOINT_SUPERVISOR__BACKOFF_MAX_MS", "1000".into()),
        ("WAYPOINT_SUPERVISOR__SHUTDOWN_GRACE_SECONDS", "15".into()),
        ("WAYPOINT_HEALTH__BIND_ADDRESS", "127.0.0.1".into()),
        ("WAYPOINT_HEALTH__PORT", free_port().to_string()),
        // Each process its own API ports, so tests run side by side.
        ("WAYPOINT_REST__BIND_ADDRESS", "127.0.0.1".into()),
        ("WAYPOINT_REST__PORT", free_port().to_string()),
        ("WAYPOINT_MCP__PORT", free_port().to_string()),
        ("WAYPOINT_QUERY__HUB_TIMEOUT_MS", "1000".into()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    for (name, value) in extra {
        env.retain(|(known, _)| known != name);
        env.push(((*name).to_owned(), value.clone()));
    }
    env
}

/// The configuration for `env`.
pub fn config(env: &[(String, String)]) -> Config {
    Config::load_from(None, env.iter().cloned())
        .unwrap_or_else(|errors| panic!("test config: {errors}"))
}

/// Reads the replica of the test database.
pub async fn replica(pg: &Pg) -> ReplicaState {
    let client = pg.get().await.expect("database");
    waypoint::store::state::read_replica(&**client)
        .await
        .expect("read replica")
}

/// Waits until the database holds exactly the hub's state (every table, live and removed
/// rows); panics with the differences after `timeout`.
pub async fn wait_converged(hub: &DevHubHandle, pg: &Pg, timeout: Duration) {
    let started = Instant::now();
    loop {
        let expected = hub.dump_state();
        let actual = replica(pg).await;
        let diff = expected.diff(&actual, 5);
        if diff.is_empty() {
            return;
        }
        if started.elapsed() > timeout {
            panic!(
                "no convergence after {timeout:?}: expected {} rows, have {}; differences: {diff:#?}",
                expected.num_rows(),
                actual.num_rows()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A connection pool to the test database (after the service created it).
pub async fn pool(db: &TestDb) -> Pg {
    Pg::connect(&db.config()).await.expect("test database")
}
