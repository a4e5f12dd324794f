//! Backfill end to end, against real PostgreSQL and Redis and the dev hub: the queue's books,
//! worker processes (killed mid-job too), failing and refused FIDs, stale rows corrected,
//! live streaming and backfill together (retention marker included), a FID with a very large
//! history in bounded memory, the one-shot commands, spam, a rate-limited hub, and bad input.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::time::{Duration, Instant};

use common::harness::{self, devhub, free_port, replica};
use common::http::{http, wait_for};
use common::process::Waypoint;
use common::{TestDb, TestRedis};
use waypoint::backfill::{Books, Queue};
use waypoint::devhub::{DevHubHandle, DevHubOptions, Faults};
use waypoint::replica::ReplicaState;
use waypoint::store::Pg;

/// Longest any backfill in these tests may take.
const FINISH: Duration = Duration::from_secs(180);

fn hub_options(seed: u64, num_fids: u64, messages_per_fid: u32) -> DevHubOptions {
    DevHubOptions {
        num_fids,
        seed,
        num_shards: 2,
        messages_per_fid,
        ..DevHubOptions::default()
    }
}

/// The test environment with backfill timings shortened (quick retries, three attempts).
fn backfill_env(
    db: &TestDb,
    redis: &TestRedis,
    hub: &DevHubHandle,
    extra: &[(&str, String)],
) -> Vec<(String, String)> {
    let mut settings = vec![
        ("WAYPOINT_BACKFILL__RETRY_DELAY_MS", "100".to_owned()),
        ("WAYPOINT_BACKFILL__MAX_ATTEMPTS", "3".to_owned()),
        ("WAYPOINT_BACKFILL__CONCURRENCY", "4".to_owned()),
        ("WAYPOINT_BACKFILL__BATCH_SIZE", "10".to_owned()),
        ("WAYPOINT_HUB__RETRY_MAX_ATTEMPTS", "2".to_owned()),
    ];
    settings.extend(extra.iter().map(|(name, value)| (*name, value.clone())));
    harness::env(db, redis, &hub.url(), &settings)
}

/// The same environment with a health port of its own (several processes at once).
fn with_own_port(env: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.retain(|(name, _)| name != "WAYPOINT_HEALTH__PORT");
    env.push(("WAYPOINT_HEALTH__PORT".into(), free_port().to_string()));
    env
}

/// Runs `waypoint <args>` to completion.
async fn command(args: &[&str], env: &[(String, String)]) -> Output {
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    let env = env.to_vec();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_waypoint"))
            .args(&args)
            .env_clear()
            .env("RUST_LOG", "warn")
            .envs(env)
            .output()
            .expect("run waypoint")
    })
    .await
    .expect("command task")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `backfill fid queue <args>`, which must succeed; returns its stdout.
async fn queue_fids(args: &[&str], env: &[(String, String)]) -> String {
    let mut all = vec!["backfill", "fid", "queue"];
    all.extend_from_slice(args);
    let output = command(&all, env).await;
    assert!(
        output.status.success(),
        "queue {args:?} failed: {}",
        stderr(&output)
    );
    stdout(&output)
}

/// A worker process that exits once the queue stayed empty for a second.
fn worker(env: &[(String, String)], log: &std::path::Path, extra: &[&str]) -> Waypoint {
    let mut args = vec![
        "backfill",
        "fid",
        "worker",
        "--exit-on-complete",
        "--idle-timeout",
        "1",
    ];
    args.extend_from_slice(extra);
    Waypoint::start(&args, env, log)
}

async fn finishes(mut worker: Waypoint) -> String {
    let status = worker.wait_exit(FINISH).await;
    assert_eq!(status.code(), Some(0), "worker log:\n{}", worker.log());
    worker.log()
}

async fn books(redis: &TestRedis) -> Books {
    let client = waypoint::streams::Redis::connect(&redis.config())
        .await
        .expect("redis");
    Queue::new(client).books(100).await.expect("books")
}

/// The live set of a replica, and its removed rows.
fn split(state: &ReplicaState) -> (ReplicaState, ReplicaState) {
    let live = state.live_only();
    let mut removed = ReplicaState {
        casts: state.casts.iter().filter(|r| !r.live).cloned().collect(),
        reactions: state
            .reactions
            .iter()
            .filter(|r| !r.live)
            .cloned()
            .collect(),
        links: state.links.iter().filter(|r| !r.live).cloned().collect(),
        verifications: state
            .verifications
            .iter()
            .filter(|r| !r.live)
            .cloned()
            .collect(),
        user_data: state
            .user_data
            .iter()
            .filter(|r| !r.live)
            .cloned()
            .collect(),
        username_proofs: state
            .username_proofs
            .iter()
            .filter(|r| !r.live)
            .cloned()
            .collect(),
        onchain_events: Vec::new(),
    };
    removed.sort();
    (live, removed)
}

/// The database's live set equals the hub's, and every row it holds as removed is removed on
/// the hub too (a replica that did not see a message before it went cannot have its row).
fn assert_live_sets_equal(expected: &ReplicaState, actual: &ReplicaState) {
    let (expected_live, expected_removed) = split(expected);
    let (actual_live, actual_removed) = split(actual);
    let diff = expected_live.diff(&actual_live, 5);
    assert!(
        diff.is_empty(),
        "live sets differ ({} rows expected, {} held): {diff:#?}",
        expected_live.num_rows(),
        actual_live.num_rows()
    );
    // Read from the database's side: rows it holds as removed that are not removed rows of
    // the hub.
    let unexpected = actual_removed.diff(&expected_removed, 5);
    let unexpected: Vec<&String> = unexpected
        .iter()
        .filter(|line| line.contains("missing or different"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "removed rows the hub does not have as removed: {unexpected:#?}"
    );
}

/// Waits until the live sets agree.
async fn wait_live_sets_equal(hub: &DevHubHandle, pg: &Pg, timeout: Duration) {
    let started = Instant::now();
    loop {
        let (expected, actual) = (hub.dump_state(), replica(pg).await);
        let (expected_live, _) = split(&expected);
        let (actual_live, _) = split(&actual);
        if expected_live.diff(&actual_live, 1).is_empty() || started.elapsed() > timeout {
            assert_live_sets_equal(&expected, &actual);
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every cast's root is the top of its reply chain as the database holds it (the apply
/// rules' definition: the highest stored ancestor's parent when that parent is missing).
async fn assert_roots_follow_the_chains(pg: &Pg) {
    let client = pg.get().await.expect("database");
    let rows = client
        .query(
            "SELECT hash, parent_hash, parent_url, root_parent_hash, root_parent_url FROM casts",
            &[],
        )
        .await
        .expect("casts");
    type Cast = (Option<Vec<u8>>, Option<String>);
    let casts: BTreeMap<Vec<u8>, Cast> = rows
        .iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2))))
        .collect();
    let mut checked_replies = 0;
    for row in &rows {
        let hash: Vec<u8> = row.get(0);
        let (parent_hash, parent_url) = &casts[&hash];
        let expected = match parent_hash {
            None => (None, parent_url.clone()),
            Some(parent) if !casts.contains_key(parent) => (Some(parent.clone()), None),
            Some(parent) => {
                checked_replies += 1;
                // Walk up to the highest stored ancestor.
                let mut top = parent.clone();
                let mut steps = 0;
                while let Some(Some(up)) = casts.get(&top).map(|(p, _)| p.clone()) {
                    if !casts.contains_key(&up) || steps > 1000 {
                        return assert_root(row, (Some(up), None), &hash);
                    }
                    top = up;
                    steps += 1;
                }
                (Some(top.clone()), casts[&top].1.clone())
            }
        };
        assert_root(row, expected, &hash);
    }
    assert!(
        checked_replies > 0,
        "the dataset has replies to stored casts"
    );

    fn assert_root(
        row: &tokio_postgres::Row,
        expected: (Option<Vec<u8>>, Option<String>),
        hash: &[u8],
    ) {
        let actual: (Option<Vec<u8>>, Option<String>) = (row.get(3), row.get(4));
        assert_eq!(
            actual,
            expected,
            "root of cast {} (parent {:?})",
            hex::encode(hash),
            row.get::<_, Option<Vec<u8>>>(1).map(hex::encode)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_fid_hub_backfilled_by_two_worker_processes_equals_the_hub() {
    let hub = devhub(hub_options(91, 300, 20)).await;
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = backfill_env(&db, &redis, &hub, &[]);
    let queued = queue_fids(&[], &env).await;
    assert!(queued.contains("queued 30 jobs: 300 fids"), "{queued}");

    let logs = tempfile::tempdir().expect("temp dir");
    let first = worker(&with_own_port(&env), &logs.path().join("a.log"), &[]);
    let second = worker(&with_own_port(&env), &logs.path().join("b.log"), &[]);
    finishes(first).await;
    finishes(second).await;

    let pg = harness::pool(&db).await;
    // An empty database backfilled: exactly what the hub holds now, every table.
    let expected = hub.dump_state().live_only();
    let actual = replica(&pg).await;
    let diff = expected.diff(&actual, 5);
    assert!(diff.is_empty(), "{diff:#?}");
    assert!(expected.casts.len() > 1000 && !expected.onchain_events.is_empty());
    assert_roots_follow_the_chains(&pg).await;

    let books = books(&redis).await;
    assert!(books.is_idle(), "{books:?}");
    assert_eq!(
        (books.jobs_completed, books.fids_done, books.fids_failed),
        (30, 300, 0),
        "each job completed once: {books:?}"
    );
    assert_eq!(books.fids_done_full, 300);

    // Queued again: every fid is done already; --force queues them again.
    let again = queue_fids(&[], &env).await;
    assert!(
        again.contains("queued 0 jobs: 0 fids (skipped: 300 already done"),
        "{again}"
    );
    let forced = queue_fids(&["--force", "--batch-size", "100"], &env).await;
    assert!(forced.contains("queued 3 jobs: 300 fids"), "{forced}");

    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_roots_come_out_right_whatever_order_fids_are_processed_in() {
    let hub = devhub(hub_options(92, 120, 30)).await;
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = backfill_env(&db, &redis, &hub, &[]);
    // Newest fids first, one fid per job, one job at a time: replies before their parents.
    let reversed: Vec<String> = (1..=120).rev().map(|fid| fid.to_string()).collect();
    let mut fids = reversed.join(",");
    queue_fids(&["--fids", &fids, "--batch-size", "1"], &env).await;
    let logs = tempfile::tempdir().expect("temp dir");
    finishes(worker(
        &env,
        &logs.path().join("w.log"),
        &["--concurrency", "1"],
    ))
    .await;
    let pg = harness::pool(&db).await;
    assert_roots_follow_the_chains(&pg).await;
    let diff = hub.dump_state().live_only().diff(&replica(&pg).await, 5);
    assert!(diff.is_empty(), "{diff:#?}");

    // And in a shuffled order into a second database.
    let other_db = TestDb::new().await;
    let other_redis = TestRedis::new();
    let other_env = backfill_env(&other_db, &other_redis, &hub, &[]);
    let mut shuffled: Vec<u64> = (1..=120).collect();
    shuffled.sort_by_key(|fid| (fid * 7919) % 127);
    fids = shuffled
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    queue_fids(&["--fids", &fids, "--batch-size", "7"], &other_env).await;
    finishes(worker(&other_env, &logs.path().join("x.log"), &[])).await;
    let other_pg = harness::pool(&other_db).await;
    assert_roots_follow_the_chains(&other_pg).await;
    assert_eq!(replica(&pg).await, replica(&other_pg).await);

    for pg in [pg, other_pg] {
        pg.close();
    }
    hub.shutdown().await;
    db.cleanup().await;
    other_db.cleanup().await;
    redis.cleanup().await;
    other_redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_loses_nothing_and_no_job_completes_twice() {
    // One big job that takes a while: 60 fids with long histories, one fid at a time.
    let hub = devhub(hub_options(93, 60, 300)).await;
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = backfill_env(
        &db,
        &redis,
        &hub,
        &[("WAYPOINT_BACKFILL__VISIBILITY_TIMEOUT_SECONDS", "3".into())],
    );
    queue_fids(&["--batch-size", "60"], &env).await;
    let logs = tempfile::tempdir().expect("temp dir");
    let log = logs.path().join("killed.log");
    let mut killed = Waypoint::start(
        &["backfill", "fid", "worker", "--concurrency", "1"],
        &with_own_port(&env),
        &log,
    );
    // Kill it once it has done part of the job.
    killed.wait_log("backfill workers started").await;
    let pg = harness::pool(&db).await;
    let started = Instant::now();
    loop {
        killed.assert_running();
        if replica(&pg).await.casts.len() > 500 {
            break;
        }
        assert!(started.elapsed() < FINISH, "the worker never got going");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held = books(&redis).await;
    assert_eq!(held.jobs_in_progress, 1, "{held:?}");
    killed.kill();

    // A second worker takes the job once its lease ran out.
    let rescuer = worker(
        &with_own_port(&env),
        &logs.path().join("rescuer.log"),
        &["--concurrency", "2"],
    );
    let log = finishes(rescuer).await;
    assert!(
        log.contains("backfill lease expired"),
        "the job came back through its lease: {log}"
    );
    let diff = hub.dump_state().live_only().diff(&replica(&pg).await, 5);
    assert!(diff.is_empty(), "{diff:#?}");
    let books = books(&redis).await;
    assert_eq!(
        (books.jobs_completed, books.fids_done, books.jobs_failed),
        (1, 60, 0),
        "one job, completed once, each fid counted once: {books:?}"
    );

    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fid_that_keeps_failing_ends_in_the_failed_list_and_retry_failed_requeues_it() {
    let mut options = hub_options(94, 40, 20);
    options.faults = Faults {
        unavailable_fids: vec![13],
        ..Faults::default()
    };
    let hub = devhub(options).await;
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = backfill_env(&db, &redis, &hub, &[]);
    queue_fids(&[], &env).await;
    let logs = tempfile::tempdir().expect("temp dir");
    finishes(worker(&env, &logs.path().join("w.log"), &[])).await;

    let held = books(&redis).await;
    assert_eq!((held.fids_done, held.fids_failed), (39, 1), "{held:?}");
    let [failed] = held.failed.as_slice() else {
        panic!("one failed job: {held:?}");
    };
    assert_eq!(failed.fids, vec![13]);
    assert_eq!(failed.attempts, 3, "max_attempts is 3 here");
    assert!(
        failed.error.contains("fid 13") && failed.error.contains("Unavailable"),
        "{failed:?}"
    );
    let inspect = command(&["backfill", "fid", "inspect"], &env).await;
    let text = stdout(&inspect);
    assert!(
        text.contains("1 failed") && text.contains("fids 13 after 3 attempts"),
        "{text}"
    );
    let json = command(&["backfill", "fid", "inspect", "--json"], &env).await;
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("inspect --json");
    assert_eq!(json["jobs_failed"], 1);
    assert_eq!(json["failed"][0]["fids"][0], 13);

    // Every other fid is there.
    let pg = harness::pool(&db).await;
    let mut expected = hub.dump_state().live_only();
    let actual = replica(&pg).await;
    let without_13 = |state: &mut ReplicaState| {
        state.casts.retain(|row| row.fid != 13);
        state.reactions.retain(|row| row.fid != 13);
        state.links.retain(|row| row.fid != 13);
        state.verifications.retain(|row| row.fid != 13);
        state.user_data.retain(|row| row.fid != 13);
        state.username_proofs.retain(|row| row.fid != 13);
        state.onchain_events.retain(|row| row.fid != 13);
    };
    without_13(&mut expected);
    assert!(expected.diff(&actual, 5).is_empty());

    // The hub recovers; retry-failed queues it again and it completes.
    hub.set_faults(Faults::default());
    let retried = command(&["backfill", "fid", "retry-failed"], &env).await;
    assert!(
        stdout(&retried).contains("queued 1 failed jobs again (1 fids)"),
        "{}",
        stdout(&retried)
    );
    finishes(worker(&env, &logs.path().join("w2.log"), &[])).await;
    let diff = hub.dump_state().live_only().diff(&replica(&pg).await, 5);
    assert!(diff.is_empty(), "{diff:#?}");
    let books = books(&redis).await;
    assert_eq!((books.fids_done, books.fids_failed), (40, 0), "{books:?}");

    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_rows_are_taken_out_and_the_database_equals_the_hub_again() {
    let hub = devhub(hub_options(95, 40, 40)).await;
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = backfill_env(&db, &redis, &hub, &[]);
    // The live path fills the database (removed rows included).
    let service =
        waypoint::service::Service::start(waypoint::cli::Role::Both, harness::config(&env), None)
            .await
            .expect("start");
    let pg = harness::pool(&db).await;
    harness::wait_converged(&hub, &pg, FINISH).await;
    service.shutdown().await.expect("drain");

    // While nobody listens, the hub prunes, revokes and compacts.
    hub.set_faults(Faults {
        prune_rate: 0.4,
        revoke_rate: 0.3,
        compact_state_rate: 0.3,
        ..Faults::default()
    });
    for _ in 0..10 {
        hub.append_live(20);
    }
    let stale = hub.dump_state().diff(&replica(&pg).await, 1000);
    assert!(stale.len() > 50, "the hub moved on: {}", stale.len());

    // A backfill corrects it: every table, live and removed rows, as if it had listened.
    queue_fids(&[], &env).await;
    let logs = tempfile::tempdir().expect("temp dir");
    let log = finishes(worker(&env, &logs.path().join("w.log"), &[])).await;
    assert!(
        log.contains("rows the hub no longer holds leave the live set"),
        "{log}"
    );
    let diff = hub.dump_state().diff(&replica(&pg).await, 5);
    assert!(diff.is_empty(), "{diff:#?}");

    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis.cleanup().await;
}

/// follow → unfollow → refollow, with the refollow written by the live path while the
/// backfill's fetch of the fid is under way: the live follow must survive.
#[tokio::test]
async fn a_row_written_during_the_fetch_survives_the_reconciliation() {
    use waypoint::store::reconcile::{self, AnswerSet, HubAnswer};
    let db = TestDb::new().await;
    let pg = harness::pool(&db).await;
    waypoint::store::migrate(&pg).await.expect("migrate");
    let key = ed25519_dalek::SigningKey::from_bytes(&[5u8; 32]);
    let link = |kind: waypoint_proto::MessageType, timestamp: u32| {
        waypoint::hub::verify::sign_message(
            waypoint_proto::MessageData {
                r#type: kind as i32,
                fid: 5,
                timestamp,
                network: waypoint_proto::FarcasterNetwork::Mainnet as i32,
                body: Some(waypoint_proto::message_data::Body::LinkBody(
                    waypoint_proto::LinkBody {
                        r#type: "follow".into(),
                        display_timestamp: None,
                        target: Some(waypoint_proto::link_body::Target::TargetFid(9)),
                    },
                )),
            },
            &key,
        )
    };
    let follow = link(waypoint_proto::MessageType::LinkAdd, 100);
    let unfollow = link(waypoint_proto::MessageType::LinkRemove, 200);
    let refollow = link(waypoint_proto::MessageType::LinkAdd, 300);
    let options = waypoint::store::apply::ApplyOptions::default();
    let mut client = pg.get().await.expect("database");

    // Before: the follow is live.
    waypoint::store::apply::apply_messages(&mut client, std::slice::from_ref(&follow), &options)
        .await
        .expect("follow");
    // The fetch begins, and the hub's answer holds only the unfollow.
    let since = reconcile::fetch_started(&**client).await.expect("since");
    let mut answer = HubAnswer::new(5, since);
    answer.saw_messages([unfollow.hash.as_slice()]);
    answer.completed(AnswerSet::Links);
    // Meanwhile the live path writes the refollow (newer than the answer).
    tokio::time::sleep(Duration::from_millis(5)).await;
    waypoint::store::apply::apply_messages(&mut client, std::slice::from_ref(&refollow), &options)
        .await
        .expect("refollow");
    // The backfill writes what it fetched, then reconciles.
    waypoint::store::apply::apply_messages(&mut client, std::slice::from_ref(&unfollow), &options)
        .await
        .expect("unfollow");
    let gone = reconcile::gone_rows(&client, &answer).await.expect("gone");
    assert!(
        gone.is_empty(),
        "nothing is proved gone: the follow is removed by the unfollow, the refollow is newer than the fetch: {:?}",
        gone.by_table
    );

    // A follow the hub no longer has, untouched since before the fetch, is taken out.
    let stale = link(waypoint_proto::MessageType::LinkAdd, 50);
    let mut stale_data = stale.data.clone().expect("data");
    if let Some(waypoint_proto::message_data::Body::LinkBody(body)) = stale_data.body.as_mut() {
        body.target = Some(waypoint_proto::link_body::Target::TargetFid(77));
    }
    let stale = waypoint::hub::verify::sign_message(stale_data, &key);
    waypoint::store::apply::apply_messages(&mut client, std::slice::from_ref(&stale), &options)
        .await
        .expect("stale follow");
    let since = reconcile::fetch_started(&**client).await.expect("since");
    let mut answer = HubAnswer::new(5, since);
    answer.saw_messages([unfollow.hash.as_slice(), refollow.hash.as_slice()]);
    answer.completed(AnswerSet::Links);
    let gone = reconcile::gone_rows(&client, &answer).await.expect("gone");
    assert_eq!(gone.by_table.get("links"), Some(&1), "{:?}", gone.by_table);
    waypoint::store::apply::apply_batch(&mut client, &gone.batch)
        .await
        .expect("apply gone");
    let live: Vec<(i64, bool)> = client
        .query(
            "SELECT target_fid, deleted_at IS NULL FROM links ORDER BY \"timestamp\"",
            &[],
        )
        .await
        .expect("links")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        live,
        vec![(77, false), (9, false), (9, true)],
        "stale follow out, first follow out (unfollowed), refollow live"
    );
    drop(client);
    pg.close();
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_backfill_on_an_empty_database_queues_every_fid_once_and_converges_with_the_stream() {
    let hub = devhub(hub_options(96, 80, 30)).await;
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = backfill_env(&db, &redis, &hub, &[]);
    let logs = tempfile::tempdir().expect("temp dir");
    let log = logs.path().join("start.log");
    let mut waypoint = Waypoint::start(&["start", "--backfill"], &env, &log);
    waypoint
        .wait_log("queued every registered fid for backfill")
        .await;
    // Both paths write while the hub keeps changing.
    hub.set_faults(Faults {
        prune_rate: 0.1,
        revoke_rate: 0.1,
        ..Faults::default()
    });
    for _ in 0..10 {
        hub.append_live(20);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pg = harness::pool(&db).await;
    // The backfill finishes (the live path alone may already have filled the database: the
    // dev hub retains every event).
    let started = Instant::now();
    while !(books(&redis).await.fids_done >= 80 && books(&redis).await.is_idle()) {
        waypoint.assert_running();
        assert!(started.elapsed() < FINISH, "the backfill did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_live_sets_equal(&hub, &pg, FINISH).await;
    // /ready says how far the backfill is.
    let port = common::http::port_of(&env);
    let ready = wait_for(port, "/ready", 200).await;
    let ready: serde_json::Value = serde_json::from_str(&ready).expect("ready json");
    assert_eq!(ready["backfill"]["fids_total"], 80, "{ready}");
    assert_eq!(
        waypoint.terminate(Duration::from_secs(30)).await.code(),
        Some(0)
    );

    // A second start does not queue everything again.
    let mut again = Waypoint::start(&["start", "--backfill"], &env, &log);
    again
        .wait_log("every fid was queued for backfill once for this database already")
        .await;
    assert_eq!(
        again.terminate(Duration::from_secs(30)).await.code(),
        Some(0)
    );
    let held = books(&redis).await;
    assert_eq!(
        held.fids_done, 80,
        "each fid queued and done once: {held:?}"
    );

    // Redis forgets everything (a restart without persistence): the next start notices the
    // books are gone and queues every fid again.
    waypoint::streams::Redis::connect(&redis.config())
        .await
        .expect("redis")
        .delete_prefix()
        .await
        .expect("flush the prefix");
    let mut after_loss = Waypoint::start(&["start", "--backfill"], &env, &log);
    after_loss.wait_log("lost its books").await;
    let started = Instant::now();
    while books(&redis).await.fids_done < 80 {
        after_loss.assert_running();
        assert!(
            started.elapsed() < FINISH,
            "the fids were not backfilled again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        after_loss.terminate(Duration::from_secs(30)).await.code(),
        Some(0)
    );
    wait_live_sets_equal(&hub, &pg, FINISH).await;

    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_marker_is_worked_off_by_a_running_backfill_and_cleared() {
    let mut options = hub_options(97, 60, 20);
    options.faults.event_retention_blocks = Some(30);
    let hub = devhub(options).await;
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = backfill_env(&db, &redis, &hub, &[]);
    let logs = tempfile::tempdir().expect("temp dir");
    let log = logs.path().join("stream.log");

    // The stream gets a cursor, then stops; the hub moves on past its retention.
    let mut stream = Waypoint::start(&["start"], &env, &log);
    let pg = harness::pool(&db).await;
    let redis_client = waypoint::streams::Redis::connect(&redis.config())
        .await
        .expect("redis");
    let started = Instant::now();
    while redis_client.load_cursor(1).await.expect("cursor").is_none() {
        assert!(started.elapsed() < FINISH, "no cursor");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        stream.terminate(Duration::from_secs(30)).await.code(),
        Some(0)
    );
    for _ in 0..40 {
        hub.append_live(5);
    }

    // Streaming again finds the gap and leaves the marker; a backfill worker works it off.
    let mut stream = Waypoint::start(&["start"], &env, &log);
    let started = Instant::now();
    while redis_client
        .backfill_needed(1)
        .await
        .expect("marker")
        .is_none()
    {
        stream.assert_running();
        assert!(started.elapsed() < FINISH, "no retention marker");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let backfill = Waypoint::start(
        &["backfill", "fid", "worker"],
        &with_own_port(&env),
        &logs.path().join("worker.log"),
    );
    let started = Instant::now();
    while redis_client
        .backfill_needed(1)
        .await
        .expect("marker")
        .is_some()
    {
        assert!(
            started.elapsed() < FINISH,
            "marker never cleared:\n{}",
            backfill.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(backfill.log().contains("its fids are queued for backfill"));
    assert!(backfill.log().contains("its retention marker is cleared"));
    wait_live_sets_equal(&hub, &pg, FINISH).await;
    // The streaming process stops reporting the shard as needing a backfill.
    let port = common::http::port_of(&env);
    let ready = wait_for(port, "/ready", 200).await;
    assert!(
        !ready.contains("older than the oldest retained event"),
        "{ready}"
    );
    let mut backfill = backfill;
    assert_eq!(
        backfill.terminate(Duration::from_secs(30)).await.code(),
        Some(0)
    );
    assert_eq!(
        stream.terminate(Duration::from_secs(30)).await.code(),
        Some(0)
    );

    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fid_with_200000_messages_is_backfilled_in_bounded_memory() {
    let mut options = hub_options(98, 3, 10);
    options.heavy_fids = vec![(2, 200_000)];
    let built = Instant::now();
    let hub = devhub(options).await;
    eprintln!("dev hub built in {:?}", built.elapsed());
    let backfill_started = Instant::now();
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = backfill_env(&db, &redis, &hub, &[]);
    queue_fids(&["--fids", "2"], &env).await;
    let logs = tempfile::tempdir().expect("temp dir");
    let log = finishes(worker(
        &env,
        &logs.path().join("w.log"),
        &["--concurrency", "1"],
    ))
    .await;
    let figure = |name: &str| -> f64 {
        log.lines()
            .find_map(|line| {
                let (_, rest) = line.split_once(&format!("{name}="))?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .unwrap_or_else(|| panic!("no {name} in the log:\n{log}"))
    };
    let (start, peak) = (figure("rss_mib"), figure("peak_rss_mib"));
    eprintln!(
        "backfilled in {:?}: rss at start {start} MiB, peak {peak} MiB",
        backfill_started.elapsed()
    );
    assert!(
        peak - start < 128.0,
        "peak rss grew by {} MiB",
        peak - start
    );

    let pg = harness::pool(&db).await;
    let expected = hub.dump_state().live_only();
    let actual = replica(&pg).await;
    let heavy = |state: &ReplicaState| {
        state.casts.iter().filter(|r| r.fid == 2).count()
            + state.reactions.iter().filter(|r| r.fid == 2).count()
            + state.links.iter().filter(|r| r.fid == 2).count()
    };
    // Of the 200,000 messages, removes and superseded adds leave fewer live rows; the hub
    // holds (and the backfill wrote) every message still in its store.
    assert!(heavy(&expected) > 80_000, "{}", heavy(&expected));
    let written = books(&redis).await.messages;
    assert!(written > 100_000, "messages written: {written}");
    assert_eq!(heavy(&actual), heavy(&expected));
    let mut expected_fid_2 = expected.clone();
    let only_2 = |state: &mut ReplicaState| {
        state.casts.retain(|row| row.fid == 2);
        state.reactions.retain(|row| row.fid == 2);
        state.links.retain(|row| row.fid == 2);
        state.verifications.retain(|row| row.fid == 2);
        state.user_data.retain(|row| row.fid == 2);
        state.onchain_events.retain(|row| row.fid == 2);
        state.username_proofs.retain(|row| row.fid == 2);
    };
    only_2(&mut expected_fid_2);
    let mut actual_fid_2 = actual;
    only_2(&mut actual_fid_2);
    let diff = expected_fid_2.diff(&actual_fid_2, 5);
    assert!(diff.is_empty(), "{diff:#?}");

    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_data_and_onchain_events_commands_write_only_what_they_name() {
    let hub = devhub(hub_options(99, 30, 20)).await;
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = backfill_env(&db, &redis, &hub, &[]);
    let profiles = command(&["backfill", "fid", "user-data", "--max-fid", "5"], &env).await;
    assert!(profiles.status.success(), "{}", stderr(&profiles));
    let pg = harness::pool(&db).await;
    let actual = replica(&pg).await;
    let expected = hub.dump_state().live_only();
    let fids_of = |rows: &[waypoint::replica::UserDataRow]| -> BTreeSet<u64> {
        rows.iter().map(|row| row.fid).collect()
    };
    assert_eq!(fids_of(&actual.user_data), (1..=5).collect());
    let expected_profiles: Vec<_> = expected
        .user_data
        .iter()
        .filter(|row| row.fid <= 5)
        .cloned()
        .collect();
    assert_eq!(actual.user_data, expected_profiles);
    assert!(actual.casts.is_empty() && actual.onchain_events.is_empty());
    assert!(actual.username_proofs.iter().all(|proof| proof.fid <= 5));
    assert!(!actual.username_proofs.is_empty());

    let onchain = command(
        &[
            "backfill",
            "onchain-events",
            "--fid",
            "3",
            "--event-type",
            "id_register",
        ],
        &env,
    )
    .await;
    assert!(onchain.status.success(), "{}", stderr(&onchain));
    let actual = replica(&pg).await;
    let expected_events: Vec<_> = expected
        .onchain_events
        .iter()
        .filter(|row| row.fid == 3 && row.event_type == 3)
        .cloned()
        .collect();
    assert!(!expected_events.is_empty());
    assert_eq!(actual.onchain_events, expected_events);

    let all = command(&["backfill", "onchain-events", "--all"], &env).await;
    assert!(all.status.success(), "{}", stderr(&all));
    assert_eq!(replica(&pg).await.onchain_events, expected.onchain_events);

    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spam_fids_get_their_onchain_events_and_no_messages() {
    let hub = devhub(hub_options(100, 20, 20)).await;
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let labels = tempfile::NamedTempFile::new().expect("labels");
    std::fs::write(
        labels.path(),
        r#"{"provider":1,"type":{"target":"fid","fid":4},"label_type":"spam","label_value":0,"timestamp":1}"#,
    )
    .expect("write labels");
    let env = backfill_env(
        &db,
        &redis,
        &hub,
        &[(
            "WAYPOINT_SPAM__SOURCES",
            labels.path().display().to_string(),
        )],
    );
    queue_fids(&[], &env).await;
    let logs = tempfile::tempdir().expect("temp dir");
    finishes(worker(&env, &logs.path().join("w.log"), &[])).await;
    let pg = harness::pool(&db).await;
    let actual = replica(&pg).await;
    let expected = hub.dump_state().live_only();
    assert!(actual.casts.iter().all(|row| row.fid != 4));
    assert!(actual.user_data.iter().all(|row| row.fid != 4));
    assert!(actual.links.iter().all(|row| row.fid != 4));
    let events = |state: &ReplicaState| state.onchain_events.iter().filter(|r| r.fid == 4).count();
    assert!(events(&expected) > 0);
    assert_eq!(events(&actual), events(&expected));
    assert!(
        actual.casts.iter().any(|row| row.fid == 5),
        "other fids are written"
    );

    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_hub_slows_the_workers_down_and_the_backfill_still_completes() {
    let mut options = hub_options(101, 60, 15);
    options.faults.rate_limit_per_second = Some(60);
    let hub = devhub(options).await;
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = backfill_env(
        &db,
        &redis,
        &hub,
        &[
            ("WAYPOINT_BACKFILL__CONCURRENCY", "8".into()),
            ("WAYPOINT_BACKFILL__MAX_ATTEMPTS", "5".into()),
            ("WAYPOINT_HUB__RETRY_MAX_ATTEMPTS", "8".into()),
            ("WAYPOINT_HUB__RETRY_MAX_MS", "2000".into()),
        ],
    );
    queue_fids(&[], &env).await;
    let logs = tempfile::tempdir().expect("temp dir");
    let log = finishes(worker(&env, &logs.path().join("w.log"), &[])).await;
    assert!(
        hub.rate_limited_requests() > 0,
        "the hub refused some requests"
    );
    assert!(log.contains("hub overloaded, slowing down"), "{log}");
    let pg = harness::pool(&db).await;
    let diff = hub.dump_state().live_only().diff(&replica(&pg).await, 5);
    assert!(diff.is_empty(), "{diff:#?}");
    let books = books(&redis).await;
    assert_eq!((books.fids_done, books.fids_failed), (60, 0), "{books:?}");

    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_named_and_nothing_is_queued_twice() {
    let mut options = hub_options(102, 12, 10);
    options.faults.not_found_fids = vec![7];
    let hub = devhub(options).await;
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = backfill_env(&db, &redis, &hub, &[]);

    for (args, named) in [
        (vec!["--fids", "0"], "fid 0 does not exist"),
        (vec!["--fids", "1,abc"], "\"abc\" is not a fid"),
        (vec!["--fids", "99999999999"], "beyond the largest fid"),
        (vec!["--max-fid", "0"], "fid 0 does not exist"),
        (vec!["--batch-size", "0"], "--batch-size"),
    ] {
        let mut all = vec!["backfill", "fid", "queue"];
        all.extend(args.iter().copied());
        let output = command(&all, &env).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&output).contains(named),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    assert_eq!(
        books(&redis).await.fids_pending,
        0,
        "nothing queued by bad input"
    );

    let output = command(&["backfill", "fid", "queue", "--fids", "5,5,3,500"], &env).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("queued 1 jobs: 2 fids"),
        "{}",
        stdout(&output)
    );
    assert!(stderr(&output).contains("fid 500 is not registered on the hub"));
    assert!(stderr(&output).contains("more than once"));
    let again = queue_fids(&["--fids", "3"], &env).await;
    assert!(
        again.contains("queued 0 jobs: 0 fids") && again.contains("1 already queued"),
        "{again}"
    );

    // GetFids lists fid 7, but the hub answers NOT_FOUND for its reads: it fails at once
    // (no retries) with the hub's words, and the rest proceeds.
    queue_fids(&["--max-fid", "10"], &env).await;
    let logs = tempfile::tempdir().expect("temp dir");
    finishes(worker(&env, &logs.path().join("w.log"), &[])).await;
    let books = books(&redis).await;
    assert_eq!((books.fids_done, books.fids_failed), (9, 1), "{books:?}");
    let failed = &books.failed[0];
    assert_eq!(failed.fids, vec![7]);
    assert_eq!(failed.attempts, 1, "a refusal is not retried");
    assert!(failed.error.contains("NotFound"), "{failed:?}");

    // A start that cannot backfill says so.
    let producer = command(&["start", "producer", "--backfill"], &env).await;
    assert_eq!(producer.status.code(), Some(2));
    assert!(stderr(&producer).contains("backfill writes to PostgreSQL"));

    hub.shutdown().await;
    db.cleanup().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_workers_are_supervised_actors_with_metrics() {
    let hub = devhub(hub_options(103, 10, 10)).await;
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = backfill_env(
        &db,
        &redis,
        &hub,
        &[("WAYPOINT_HEALTH__ADMIN_TOKEN", "secret".into())],
    );
    let logs = tempfile::tempdir().expect("temp dir");
    let mut worker = Waypoint::start(
        &["backfill", "fid", "worker", "--concurrency", "3"],
        &env,
        &logs.path().join("w.log"),
    );
    let port = common::http::port_of(&env);
    wait_for(port, "/health", 200).await;
    let (status, _) = http(
        "POST",
        port,
        "/admin/actors/root/backfill/worker:1/restart",
        Some("secret"),
    )
    .await
    .expect("restart");
    assert_eq!(status, 200);
    let metrics = wait_for(port, "/metrics", 200).await;
    for actor in [
        "writer:casts",
        "writer:gone",
        "coordinator",
        "worker:0",
        "worker:2",
    ] {
        assert!(
            metrics.contains(&format!(
                "waypoint_actor_mailbox_capacity{{actor=\"root/backfill/{actor}\"}}"
            )),
            "{actor}: {metrics}"
        );
    }
    assert!(
        metrics.contains("waypoint_actor_restarts_total{actor=\"root/backfill/worker:1\"} 1"),
        "{metrics}"
    );
    queue_fids(&[], &env).await;
    let started = Instant::now();
    while books(&redis).await.fids_done < 10 {
        worker.assert_running();
        assert!(started.elapsed() < FINISH);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = wait_for(port, "/metrics", 200).await;
    assert!(
        metrics.contains("waypoint_backfill_fids_total 10"),
        "{metrics}"
    );
    assert!(metrics.contains("waypoint_backfill_fid_duration_seconds_count 10"));
    let ready = wait_for(port, "/ready", 200).await;
    assert!(ready.contains("\"backfill\""), "{ready}");
    assert_eq!(
        worker.terminate(Duration::from_secs(30)).await.code(),
        Some(0)
    );

    hub.shutdown().await;
    db.cleanup().await;
    redis.cleanup().await;
}
