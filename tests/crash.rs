//! Crash safety of the real binary: `waypoint start` killed with SIGKILL at random moments and
//! started again, Redis killed and restarted under it, the hub restarted or cutting its
//! streams — after each run of faults, the database must equal the hub's state exactly.
//!
//! The moments are random; the seed is printed, and `WAYPOINT_TEST_CRASH_SEED=<seed>` replays
//! a run.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::harness::{self, devhub, devhub_again, free_port, small_hub, wait_converged};
use common::process::Waypoint;
use common::{TestDb, TestRedis};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use waypoint::devhub::Faults;

const CONVERGE: Duration = Duration::from_secs(120);

/// The random source of one test, with its seed printed for a replay.
fn rng(test: &str) -> StdRng {
    let seed = std::env::var("WAYPOINT_TEST_CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("{test}: WAYPOINT_TEST_CRASH_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_moments_and_restarted_the_database_still_matches_the_hub() {
    let mut rng = rng("sigkill");
    let mut options = small_hub(71);
    options.num_fids = 60;
    options.faults = Faults {
        cut_subscribe_after: Some(250),
        duplicate_rate: 0.05,
        ..Faults::default()
    };
    let hub = devhub(options).await;
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = harness::env(&db, &redis, &hub.url(), &[]);
    let logs = tempfile::tempdir().expect("temp dir");
    let log = logs.path().join("waypoint.log");

    for _ in 0..6 {
        let mut waypoint = Waypoint::start(&["start"], &env, &log);
        // Kill it anywhere: during migrations, start-up, replay, live blocks, or a drain-free
        // moment between them.
        let life = Duration::from_millis(rng.random_range(100..3000));
        let started = Instant::now();
        while started.elapsed() < life {
            if rng.random_bool(0.3) {
                hub.append_live(rng.random_range(1..40));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        waypoint.assert_running();
        waypoint.kill();
    }

    let mut waypoint = Waypoint::start(&["start"], &env, &log);
    hub.append_live(25);
    let pg = harness::pool(&db).await;
    wait_converged(&hub, &pg, CONVERGE).await;
    waypoint.assert_running();
    let status = waypoint.terminate(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "a drain after SIGTERM exits 0");

    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_restarted_mid_stream_is_picked_up_again() {
    let mut rng = rng("hub restart");
    let mut options = small_hub(73);
    options.num_fids = 80;
    let mut hub = devhub(options.clone()).await;
    let addr = hub.addr();
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = harness::env(&db, &redis, &hub.url(), &[]);
    let logs = tempfile::tempdir().expect("temp dir");
    let log = logs.path().join("waypoint.log");
    let mut waypoint = Waypoint::start(&["start"], &env, &log);

    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..1500))).await;
        hub.shutdown().await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..1500))).await;
        // The same node comes back: same history, same event ids.
        hub = devhub_again(options.clone(), addr).await;
    }

    let pg = harness::pool(&db).await;
    wait_converged(&hub, &pg, CONVERGE).await;
    waypoint.assert_running();
    let status = waypoint.terminate(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "a drain after SIGTERM exits 0");

    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis.cleanup().await;
}

/// A Redis server of the test's own, persisting every write (AOF, fsync always) in a temporary
/// directory, so it can be killed and started again with its data.
struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
    server: Option<Child>,
}

impl PrivateRedis {
    fn start() -> PrivateRedis {
        let mut redis = PrivateRedis {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            server: None,
        };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let server = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/services.sh installs it)");
        self.server = Some(server);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "private redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_run_loses_nothing() {
    let mut rng = rng("redis restart");
    let mut options = small_hub(72);
    options.faults = Faults {
        cut_subscribe_after: Some(300),
        ..Faults::default()
    };
    let hub = devhub(options).await;
    let db = TestDb::new().await;
    let mut redis = PrivateRedis::start();
    let env = harness::env(
        &db,
        &TestRedis::new(),
        &hub.url(),
        &[("WAYPOINT_REDIS__URL", redis.url())],
    );
    let logs = tempfile::tempdir().expect("temp dir");
    let log = logs.path().join("waypoint.log");
    let mut waypoint = Waypoint::start(&["start"], &env, &log);

    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..2000))).await;
        redis.kill();
        // Events keep arriving at the hub while Redis is away.
        hub.append_live(rng.random_range(5..40));
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..1500))).await;
        redis.restart();
        hub.append_live(rng.random_range(5..40));
    }

    let pg = harness::pool(&db).await;
    wait_converged(&hub, &pg, CONVERGE).await;
    waypoint.assert_running();
    let status = waypoint.terminate(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "a drain after SIGTERM exits 0");
    // The outages really happened under the running service.
    let output = waypoint.log();
    assert!(output.contains("Connection refused"), "{output}");

    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
}
