//! The `waypoint` binary as operators run it: the health port (`/health`, `/ready`,
//! `/metrics`, the admin endpoints), signals (SIGTERM drains and exits 0, SIGHUP reloads the
//! file or rejects a bad one), refusing a bad configuration, and the `dlq` command.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::harness::{self, devhub, free_port, small_hub};
use common::http::{http, port_of, wait_for};
use common::process::Waypoint;
use common::{TestDb, TestRedis};
use serde_json::Value;
use waypoint::streams::{Redis, StreamType};

/// Checks the exposition format the way `promtool check metrics` would: every sample belongs
/// to a family announced with `# TYPE` before it, names and labels are well formed, values are
/// numbers, and no sample is repeated. Returns the samples by name.
fn check_prometheus(text: &str) -> BTreeMap<String, Vec<(String, f64)>> {
    let name_ok = |name: &str| {
        !name.is_empty()
            && name.chars().enumerate().all(|(i, c)| {
                c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for line in text.lines().filter(|line| !line.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(name_ok(name), "metric name {name:?}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "family {name} declared twice"
            );
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample: series value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other
                .parse()
                .unwrap_or_else(|_| panic!("value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("labels end with }");
                for pair in split_labels(labels) {
                    let (key, quoted) = pair.split_once('=').expect("label=value");
                    assert!(name_ok(key), "label name {key:?} in {line}");
                    assert!(
                        quoted.starts_with('"') && quoted.ends_with('"') && quoted.len() >= 2,
                        "label value quoted in {line}"
                    );
                }
                (name, labels.to_owned())
            }
            None => (series, String::new()),
        };
        assert!(name_ok(name), "metric name {name:?}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.contains_key(*base))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "{name} has no # TYPE before it");
        assert!(seen.insert(series.to_owned()), "{series} repeated");
        samples
            .entry(name.to_owned())
            .or_default()
            .push((labels, value));
    }
    samples
}

/// `promtool check metrics` on the exposition, where promtool is installed (Debian's
/// `prometheus` package); the check above stands in for it elsewhere.
fn promtool_check(metrics: &str) {
    use std::io::Write;
    let Ok(mut promtool) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool not installed: exposition checked by check_prometheus only");
        return;
    };
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("write to promtool");
    let output = promtool.wait_with_output().expect("promtool");
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Splits `a="x",b="y,z"` at the commas outside quotes.
fn split_labels(labels: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&labels[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < labels.len() {
        parts.push(&labels[start..]);
    }
    parts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_with_only_database_and_redis_serves_health_and_drains_on_sigterm() {
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    // Nothing listens at the hub's address.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let env = harness::env(
        &db,
        &redis,
        &nowhere,
        &[("WAYPOINT_LOGGING__FORMAT", "json".into())],
    );
    let port = port_of(&env);
    let logs = tempfile::tempdir().unwrap();
    let mut waypoint = Waypoint::start(&["start"], &env, &logs.path().join("waypoint.log"));

    let body = wait_for(port, "/health", 200).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "ok"
    );

    // Not ready: the hub is unreachable; the report says so and why.
    let body = wait_for(port, "/ready", 503).await;
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["checks"]["database"]["ok"], true, "{ready}");
    assert_eq!(ready["checks"]["redis"]["ok"], true, "{ready}");
    assert_eq!(ready["checks"]["hub"]["ok"], false, "{ready}");
    assert_eq!(ready["checks"]["producer"]["ok"], false, "{ready}");
    assert!(ready["checks"]["tree"]["ok"] == true, "{ready}");

    let (status, metrics) = http("GET", port, "/metrics", None).await.unwrap();
    assert_eq!(status, 200);
    let samples = check_prometheus(&metrics);
    promtool_check(&metrics);
    for name in [
        "waypoint_actor_mailbox_depth",
        "waypoint_actor_mailbox_capacity",
        "waypoint_actor_messages_total",
    ] {
        let series = samples
            .get(name)
            .unwrap_or_else(|| panic!("{name}:\n{metrics}"));
        assert!(
            series
                .iter()
                .any(|(labels, _)| labels.contains("actor=\"root/persist")),
            "{name} per actor: {series:?}"
        );
    }
    let capacity = &samples["waypoint_actor_mailbox_capacity"];
    assert!(capacity.iter().all(|(_, value)| *value >= 1.0));

    // Admin endpoints are off without a token.
    let (status, _) = http("GET", port, "/admin/tree", Some("anything"))
        .await
        .unwrap();
    assert_eq!(status, 404);

    waypoint.signal(libc::SIGTERM);
    let status = waypoint.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", waypoint.log());
    assert!(
        http("GET", port, "/health", None).await.is_none(),
        "port closed"
    );
    // WAYPOINT_LOGGING__FORMAT=json: one JSON object per line.
    let log = waypoint.log();
    assert!(log.lines().count() > 3, "{log}");
    for line in log.lines() {
        let record: Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        assert!(
            record["level"].is_string() && record["timestamp"].is_string(),
            "{line}"
        );
    }
    db.cleanup().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_with_a_hub_and_admin_endpoints_need_the_token() {
    let hub = devhub(small_hub(81)).await;
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = harness::env(
        &db,
        &redis,
        &hub.url(),
        &[("WAYPOINT_HEALTH__ADMIN_TOKEN", "s3cret".into())],
    );
    let port = port_of(&env);
    let logs = tempfile::tempdir().unwrap();
    let mut waypoint = Waypoint::start(&["start", "both"], &env, &logs.path().join("waypoint.log"));

    let body = wait_for(port, "/ready", 200).await;
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["checks"]["hub"]["ok"], true, "{ready}");
    assert_eq!(ready["checks"]["producer"]["shards"], 2, "{ready}");
    assert!(ready["shards"]["1"].is_object(), "{ready}");
    assert!(ready["shards"]["2"].is_object(), "{ready}");

    assert_eq!(http("GET", port, "/admin/tree", None).await.unwrap().0, 401);
    assert_eq!(
        http("GET", port, "/admin/tree", Some("wrong"))
            .await
            .unwrap()
            .0,
        403
    );
    let (status, tree) = http("GET", port, "/admin/tree", Some("s3cret"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{tree}");
    assert!(tree.contains("root/persist"), "{tree}");
    assert_eq!(
        http(
            "POST",
            port,
            "/admin/actors/root/persist/restart",
            Some("wrong")
        )
        .await
        .unwrap()
        .0,
        403
    );
    assert_eq!(
        http(
            "POST",
            port,
            "/admin/actors/root/nothing/restart",
            Some("s3cret")
        )
        .await
        .unwrap()
        .0,
        404
    );
    let (status, body) = http(
        "POST",
        port,
        "/admin/actors/root/persist/restart",
        Some("s3cret"),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let (_, metrics) = http("GET", port, "/metrics", None).await.unwrap();
    let samples = check_prometheus(&metrics);
    assert!(
        samples["waypoint_actor_restarts_total"]
            .iter()
            .any(|(labels, value)| labels.contains("actor=\"root/persist\"") && *value >= 1.0),
        "{:?}",
        samples["waypoint_actor_restarts_total"]
    );
    // Still whole and still applying after the restart.
    hub.append_live(20);
    let pg = harness::pool(&db).await;
    harness::wait_converged(&hub, &pg, Duration::from_secs(90)).await;

    waypoint.signal(libc::SIGINT);
    assert_eq!(
        waypoint.wait_exit(Duration::from_secs(30)).await.code(),
        Some(0)
    );
    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis.cleanup().await;
}

fn write_config(path: &Path, port: u16, extra: &str) {
    std::fs::write(
        path,
        format!("[health]\nbind_address = \"127.0.0.1\"\nport = {port}\n{extra}"),
    )
    .expect("write config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_changed_file_and_keeps_running_on_a_bad_one() {
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let mut env = harness::env(
        &db,
        &redis,
        &format!("http://127.0.0.1:{}", free_port()),
        &[],
    );
    env.retain(|(name, _)| !name.starts_with("WAYPOINT_HEALTH__"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("waypoint.toml");
    let (first, second) = (free_port(), free_port());
    write_config(&file, first, "");
    let path = file.display().to_string();
    let mut waypoint = Waypoint::start(
        &["start", "consumer", "--config", &path],
        &env,
        &dir.path().join("waypoint.log"),
    );
    wait_for(first, "/health", 200).await;

    // A new port: the API subtree restarts on it.
    write_config(&file, second, "");
    waypoint.signal(libc::SIGHUP);
    wait_for(second, "/health", 200).await;
    assert!(http("GET", first, "/health", None).await.is_none());
    waypoint.wait_log("configuration reloaded").await;

    // A bad file: rejected with a log line naming the key, the running configuration stays.
    write_config(&file, free_port(), "[stream]\nno_such_key = 1\n");
    waypoint.signal(libc::SIGHUP);
    waypoint.wait_log("configuration rejected").await;
    assert!(
        waypoint.log().contains("stream.no_such_key"),
        "{}",
        waypoint.log()
    );
    assert_eq!(http("GET", second, "/health", None).await.unwrap().0, 200);

    waypoint.signal(libc::SIGTERM);
    assert_eq!(
        waypoint.wait_exit(Duration::from_secs(30)).await.code(),
        Some(0)
    );
    db.cleanup().await;
    redis.cleanup().await;
}

#[tokio::test]
async fn a_bad_configuration_stops_start_with_every_problem_named() {
    let output = Command::new(env!("CARGO_BIN_EXE_waypoint"))
        .arg("start")
        .env_clear()
        .env("WAYPOINT_REST__PORT", "eighty")
        .env("WAYPOINT_STREAM__BATCH_SIZEE", "10")
        .output()
        .expect("run waypoint");
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rest.port"), "{stderr}");
    assert!(stderr.contains("WAYPOINT_STREAM__BATCH_SIZEE"), "{stderr}");
}

#[tokio::test]
async fn dlq_lists_and_replays_dead_letters() {
    let redis_test = TestRedis::new();
    let redis = Redis::connect(&redis_test.config()).await.unwrap();
    redis
        .dead_letter_rejected("casts", b"raw-event", 1, 42, "bad hash")
        .await
        .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_waypoint"))
            .args(args)
            .env_clear()
            .env("WAYPOINT_REDIS__URL", redis_test.url())
            .env("WAYPOINT_REDIS__PREFIX", redis_test.prefix())
            .output()
            .expect("run waypoint")
    };
    let listed = run(&["dlq", "list", "casts"]);
    assert_eq!(listed.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(stdout.contains("1 dead letter(s) in casts"), "{stdout}");
    assert!(stdout.contains("bad hash"), "{stdout}");

    let unknown = run(&["dlq", "list", "kasts"]);
    assert_ne!(unknown.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("kasts"));

    let replayed = run(&["dlq", "replay", "casts"]);
    assert_eq!(replayed.status.code(), Some(0));
    assert_eq!(redis.dlq_len("casts").await.unwrap(), 0);
    let mut connection = redis.connection();
    let length: u64 =
        redis::AsyncCommands::xlen(&mut connection, redis.stream_key(StreamType::Casts))
            .await
            .unwrap();
    assert_eq!(length, 1, "back on the casts stream");
    redis_test.cleanup().await;
}
