//! The actor metrics: mailbox depth and capacity, messages handled, failures and restarts,
//! labelled by tree path. This binary installs a global recorder, so it holds one test.

mod common;

use std::time::Duration;

use common::{Cmd, Log, instant_backoff, probe};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use waypoint_actors::{Intensity, Strategy, SupervisorSpec, metrics as names, start_tree};

/// The value of `name{actor=...}` in one snapshot. The debugging recorder's snapshots reset
/// what they read (counters report the increase since the last snapshot), so each check point
/// takes a single snapshot and reads everything it needs from it.
fn value(snapshot: &[(String, String, f64)], name: &str, actor: &str) -> Option<f64> {
    snapshot
        .iter()
        .find(|(n, a, _)| n == name && a == actor)
        .map(|(_, _, value)| *value)
}

fn take(snapshotter: &Snapshotter) -> Vec<(String, String, f64)> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let actor = key
                .key()
                .labels()
                .find(|label| label.key() == "actor")?
                .value()
                .to_owned();
            let value = match value {
                DebugValue::Counter(count) => count as f64,
                DebugValue::Gauge(gauge) => gauge.into_inner(),
                DebugValue::Histogram(_) => return None,
            };
            Some((key.key().name().to_owned(), actor, value))
        })
        .collect()
}

#[tokio::test]
async fn depth_capacity_messages_failures_and_restarts_are_exported() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("first recorder in this binary");
    names::describe();

    let log = Log::default();
    let (a, a_box) = probe("a", &log, 4);
    let tree = start_tree(
        "metrics",
        SupervisorSpec {
            strategy: Strategy::OneForOne,
            intensity: Intensity::default(),
            backoff: instant_backoff(),
            children: vec![a],
        },
    )
    .await
    .unwrap();
    let first = take(&snapshotter);
    assert_eq!(
        value(&first, names::MAILBOX_CAPACITY, "metrics/a"),
        Some(4.0)
    );

    // A slow message plus two queued ones: depth 3 while it works.
    a_box
        .send(Cmd::Work(Duration::from_millis(300)))
        .await
        .unwrap();
    a_box.send(Cmd::Record("1".into())).await.unwrap();
    a_box.send(Cmd::Record("2".into())).await.unwrap();
    let busy = take(&snapshotter);
    assert_eq!(value(&busy, names::MAILBOX_DEPTH, "metrics/a"), Some(3.0));
    log.wait_until("handled", |entries| entries.len() == 3)
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let idle = take(&snapshotter);
    assert_eq!(value(&idle, names::MAILBOX_DEPTH, "metrics/a"), Some(0.0));
    assert_eq!(value(&idle, names::MESSAGES_TOTAL, "metrics/a"), Some(3.0));

    a_box.send(Cmd::Panic).await.unwrap();
    log.wait_until("restarted", |entries| entries.len() == 4)
        .await;
    a_box.send(Cmd::Fail).await.unwrap();
    log.wait_until("restarted again", |entries| entries.len() == 5)
        .await;
    let after = take(&snapshotter);
    assert_eq!(value(&after, names::FAILURES_TOTAL, "metrics/a"), Some(2.0));
    assert_eq!(value(&after, names::RESTARTS_TOTAL, "metrics/a"), Some(2.0));
    tree.shutdown(Duration::from_secs(5)).await.unwrap();
}
