//! Supervisor semantics: restarts by strategy and restart type, intensity and escalation,
//! backoff, ordered shutdown, snapshots and manual restarts.

mod common;

use std::time::Duration;

use common::{Cmd, Log, instant_backoff, probe};
use waypoint_actors::{
    Backoff, ChildSpec, Intensity, NodeStatus, Restart, Strategy, SupervisorSpec, TreeExit,
    start_tree,
};

fn spec(strategy: Strategy, children: Vec<ChildSpec>) -> SupervisorSpec {
    SupervisorSpec {
        strategy,
        intensity: Intensity {
            max_restarts: 10,
            period: Duration::from_secs(60),
        },
        backoff: instant_backoff(),
        children,
    }
}

#[tokio::test]
async fn a_panicking_child_is_restarted_in_its_place() {
    let log = Log::default();
    let (a, _a_box) = probe("a", &log, 8);
    let (b, b_box) = probe("b", &log, 8);
    let (c, _c_box) = probe("c", &log, 8);
    let tree = start_tree("root", spec(Strategy::OneForOne, vec![a, b, c]))
        .await
        .unwrap();
    assert_eq!(log.entries(), ["start:a", "start:b", "start:c"]);

    b_box.send(Cmd::Panic).await.unwrap();
    log.wait_until("b restarted", |entries| entries.len() == 4)
        .await;
    assert_eq!(
        log.entries()[3],
        "start:b",
        "only b restarts under one_for_one"
    );

    // The new incarnation answers through the same mailbox.
    let pong = b_box
        .call(Cmd::Ping, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(pong, "pong:b");

    let snapshot = tree.snapshot();
    let names: Vec<&str> = snapshot.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["a", "b", "c"],
        "b keeps its place in the start order"
    );
    let b_node = snapshot.find("root/b").unwrap();
    assert_eq!(b_node.restarts, 1);
    assert_eq!(b_node.status, NodeStatus::Running);
    assert!(
        b_node
            .last_failure
            .as_deref()
            .unwrap()
            .contains("told to panic"),
        "{:?}",
        b_node.last_failure
    );

    log.clear();
    tree.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(log.entries(), ["stop:c", "stop:b", "stop:a"]);
    assert_eq!(tree.wait().await, TreeExit::Stopped);
}

#[tokio::test]
async fn one_for_all_restarts_every_sibling_in_order() {
    let log = Log::default();
    let (a, _a) = probe("a", &log, 8);
    let (b, b_box) = probe("b", &log, 8);
    let (c, _c) = probe("c", &log, 8);
    let tree = start_tree("root", spec(Strategy::OneForAll, vec![a, b, c]))
        .await
        .unwrap();
    log.clear();

    b_box.send(Cmd::Fail).await.unwrap();
    log.wait_until("all restarted", |entries| {
        entries.iter().filter(|e| e.starts_with("start:")).count() == 3
    })
    .await;
    // The others stop in reverse order (b is already dead), then all start in order.
    assert_eq!(
        log.entries(),
        ["stop:c", "stop:a", "start:a", "start:b", "start:c"]
    );
    for name in ["a", "b", "c"] {
        assert_eq!(
            tree.snapshot()
                .find(&format!("root/{name}"))
                .unwrap()
                .restarts,
            1
        );
    }
    tree.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn rest_for_one_restarts_the_child_and_those_after_it() {
    let log = Log::default();
    let (a, _a) = probe("a", &log, 8);
    let (b, b_box) = probe("b", &log, 8);
    let (c, _c) = probe("c", &log, 8);
    let (d, _d) = probe("d", &log, 8);
    let tree = start_tree("root", spec(Strategy::RestForOne, vec![a, b, c, d]))
        .await
        .unwrap();
    log.clear();

    b_box.send(Cmd::Panic).await.unwrap();
    log.wait_until("b, c, d restarted", |entries| {
        entries.iter().filter(|e| e.starts_with("start:")).count() == 3
    })
    .await;
    assert_eq!(
        log.entries(),
        ["stop:d", "stop:c", "start:b", "start:c", "start:d"]
    );
    let snapshot = tree.snapshot();
    assert_eq!(snapshot.find("root/a").unwrap().restarts, 0);
    assert_eq!(snapshot.find("root/d").unwrap().restarts, 1);
    tree.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn restart_types_decide_what_comes_back() {
    let log = Log::default();
    let (permanent, permanent_box) = probe("permanent", &log, 8);
    let (transient, transient_box) = probe("transient", &log, 8);
    let (transient2, transient2_box) = probe("transient2", &log, 8);
    let (temporary, temporary_box) = probe("temporary", &log, 8);
    let tree = start_tree(
        "root",
        spec(
            Strategy::OneForOne,
            vec![
                permanent,
                transient.restart(Restart::Transient),
                transient2.restart(Restart::Transient),
                temporary.restart(Restart::Temporary),
            ],
        ),
    )
    .await
    .unwrap();
    log.clear();

    // A normal exit: permanent comes back, transient does not.
    permanent_box.send(Cmd::Exit).await.unwrap();
    transient_box.send(Cmd::Exit).await.unwrap();
    // A failure: transient comes back, temporary does not.
    transient2_box.send(Cmd::Panic).await.unwrap();
    temporary_box.send(Cmd::Panic).await.unwrap();

    log.wait_until("permanent and transient2 restarted", |entries| {
        entries.contains(&"start:permanent".to_owned())
            && entries.contains(&"start:transient2".to_owned())
    })
    .await;
    // Let any wrong restart happen before checking it did not.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let starts = log.with_prefix("start:");
    assert!(
        !starts.contains(&"start:transient".to_owned()),
        "{starts:?}"
    );
    assert!(
        !starts.contains(&"start:temporary".to_owned()),
        "{starts:?}"
    );
    assert!(!transient_box.is_alive());
    assert!(!temporary_box.is_alive());

    let snapshot = tree.snapshot();
    assert_eq!(
        snapshot.find("root/transient").unwrap().status,
        NodeStatus::Stopped
    );
    assert_eq!(
        snapshot.find("root/temporary").unwrap().status,
        NodeStatus::Failed
    );
    tree.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn intensity_exceeded_escalates_to_the_parent() {
    let log = Log::default();
    let (a, _a) = probe("a", &log, 8);
    let (b, b_box) = probe("b", &log, 8);
    let inner = SupervisorSpec {
        strategy: Strategy::OneForOne,
        intensity: Intensity {
            max_restarts: 2,
            period: Duration::from_secs(60),
        },
        backoff: instant_backoff(),
        children: vec![a, b],
    };
    let (sibling, _sibling_box) = probe("sibling", &log, 8);
    let tree = start_tree(
        "root",
        spec(
            Strategy::OneForOne,
            vec![ChildSpec::supervisor("inner", inner), sibling],
        ),
    )
    .await
    .unwrap();
    log.clear();

    // Two failures are absorbed by the inner supervisor...
    for round in 1..=2 {
        b_box.send(Cmd::Panic).await.unwrap();
        log.wait_until("b restarted", |entries| {
            entries.iter().filter(|e| *e == "start:b").count() == round
        })
        .await;
    }
    assert_eq!(tree.snapshot().find("root/inner").unwrap().restarts, 0);
    log.clear();

    // ...the third exceeds its intensity: it stops its children in reverse order and fails,
    // and the root restarts it (which starts a and b again, in order).
    b_box.send(Cmd::Panic).await.unwrap();
    log.wait_until("inner restarted", |entries| {
        entries.iter().filter(|e| e.starts_with("start:")).count() == 2
    })
    .await;
    assert_eq!(log.entries(), ["stop:a", "start:a", "start:b"]);
    let snapshot = tree.snapshot();
    let inner = snapshot.find("root/inner").unwrap();
    assert_eq!(inner.restarts, 1);
    assert!(
        inner
            .last_failure
            .as_deref()
            .unwrap()
            .contains("restart intensity exceeded"),
        "{:?}",
        inner.last_failure
    );
    assert_eq!(snapshot.find("root/sibling").unwrap().restarts, 0);
    tree.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_root_exceeding_its_intensity_ends_the_tree_as_failed() {
    let log = Log::default();
    let (a, a_box) = probe("a", &log, 8);
    let tree = start_tree(
        "root",
        SupervisorSpec {
            strategy: Strategy::OneForOne,
            intensity: Intensity {
                max_restarts: 1,
                period: Duration::from_secs(60),
            },
            backoff: instant_backoff(),
            children: vec![a],
        },
    )
    .await
    .unwrap();
    a_box.send(Cmd::Panic).await.unwrap();
    log.wait_until("a restarted", |entries| entries.len() == 2)
        .await;
    a_box.send(Cmd::Panic).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), tree.wait())
        .await
        .expect("tree ends");
    match exit {
        TreeExit::Failed(reason) => assert!(reason.contains("restart intensity"), "{reason}"),
        other => panic!("expected failure, got {other:?}"),
    }
    assert!(!tree.is_running());
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_between_restarts() {
    let log = Log::default();
    let (a, a_box) = probe("a", &log, 8);
    let tree = start_tree(
        "root",
        SupervisorSpec {
            strategy: Strategy::OneForOne,
            intensity: Intensity {
                max_restarts: 10,
                period: Duration::from_secs(3600),
            },
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
                jitter: 0.0,
            },
            children: vec![a],
        },
    )
    .await
    .unwrap();

    let mut delays = Vec::new();
    for round in 1..=4 {
        let crashed_at = tokio::time::Instant::now();
        a_box.send(Cmd::Panic).await.unwrap();
        log.wait_until("restart", |entries| entries.len() == round + 1)
            .await;
        delays.push(crashed_at.elapsed());
    }
    // 1 s, 2 s, 4 s, 8 s (paused time advances exactly; the polling adds at most 5 ms).
    for (delay, expected) in delays.iter().zip([1u64, 2, 4, 8]) {
        let expected = Duration::from_secs(expected);
        assert!(
            *delay >= expected && *delay < expected + Duration::from_millis(50),
            "delays {delays:?}"
        );
    }
    tree.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn shutdown_drains_queued_messages_and_stops_in_reverse_order() {
    let log = Log::default();
    let (a, a_box) = probe("a", &log, 64);
    let (b, b_box) = probe("b", &log, 64);
    let inner = spec(Strategy::OneForOne, vec![b]);
    let tree = start_tree(
        "root",
        spec(
            Strategy::OneForOne,
            vec![a, ChildSpec::supervisor("inner", inner)],
        ),
    )
    .await
    .unwrap();
    log.clear();

    // Queue work behind a slow message, then shut down at once.
    a_box
        .send(Cmd::Work(Duration::from_millis(100)))
        .await
        .unwrap();
    b_box
        .send(Cmd::Work(Duration::from_millis(100)))
        .await
        .unwrap();
    for i in 0..20 {
        a_box.send(Cmd::Record(i.to_string())).await.unwrap();
        b_box.send(Cmd::Record(i.to_string())).await.unwrap();
    }
    tree.shutdown(Duration::from_secs(10)).await.unwrap();

    let entries = log.entries();
    assert_eq!(log.with_prefix("msg:a:").len(), 20, "{entries:?}");
    assert_eq!(log.with_prefix("msg:b:").len(), 20, "{entries:?}");
    // inner (and its child b) started last, so it stops first.
    let stop_b = entries.iter().position(|e| e == "stop:b").unwrap();
    let stop_a = entries.iter().position(|e| e == "stop:a").unwrap();
    assert!(stop_b < stop_a, "{entries:?}");
    // Nothing is accepted after the drain.
    assert!(a_box.send(Cmd::Record("late".into())).await.is_err());
    assert_eq!(tree.wait().await, TreeExit::Stopped);
}

#[tokio::test]
async fn a_worker_that_ignores_its_drain_is_killed_after_its_timeout() {
    let log = Log::default();
    let (a, a_box) = probe("a", &log, 8);
    let tree = start_tree(
        "root",
        spec(
            Strategy::OneForOne,
            vec![a.shutdown(Duration::from_millis(100))],
        ),
    )
    .await
    .unwrap();
    a_box
        .send(Cmd::Work(Duration::from_secs(3600)))
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        tree.shutdown(Duration::from_secs(10)),
    )
    .await
    .expect("shutdown does not wait for the stuck handler")
    .unwrap();
    assert!(!a_box.is_alive());
}

#[tokio::test]
async fn manual_restart_of_a_subtree() {
    let log = Log::default();
    let (a, _a) = probe("a", &log, 8);
    let (b, _b) = probe("b", &log, 8);
    let (c, _c) = probe("c", &log, 8);
    let inner = spec(Strategy::OneForOne, vec![b, c]);
    let tree = start_tree(
        "root",
        spec(
            Strategy::OneForOne,
            vec![a, ChildSpec::supervisor("inner", inner)],
        ),
    )
    .await
    .unwrap();
    log.clear();

    tree.restart("root/inner").await.unwrap();
    assert_eq!(
        log.entries(),
        ["stop:c", "stop:b", "start:b", "start:c"],
        "the subtree stops in reverse order and starts in order"
    );
    assert_eq!(tree.snapshot().find("root/inner").unwrap().restarts, 1);
    assert_eq!(tree.snapshot().find("root/a").unwrap().restarts, 0);

    assert!(matches!(
        tree.restart("root/nope").await,
        Err(waypoint_actors::TreeError::NotFound(_))
    ));
    tree.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_child_that_fails_to_start_fails_the_tree_start() {
    struct Broken;
    impl waypoint_actors::Actor for Broken {
        type Msg = ();
        type State = ();
        type Args = ();
        async fn init(
            &self,
            _: &waypoint_actors::Context<()>,
            _: (),
        ) -> Result<(), waypoint_actors::ActorError> {
            Err("cannot start".into())
        }
        async fn handle(
            &self,
            _: &waypoint_actors::Context<()>,
            _: (),
            _: &mut (),
        ) -> Result<(), waypoint_actors::ActorError> {
            Ok(())
        }
    }
    let log = Log::default();
    let (a, a_box) = probe("a", &log, 8);
    let broken = ChildSpec::worker("broken", waypoint_actors::Mailbox::new(1), || (Broken, ()));
    let result = start_tree("root", spec(Strategy::OneForOne, vec![a, broken])).await;
    let error = result.err().expect("start fails").to_string();
    assert!(error.contains("root/broken"), "{error}");
    assert!(error.contains("cannot start"), "{error}");
    // The child started before it was stopped again.
    assert_eq!(log.entries(), ["start:a", "stop:a"]);
    assert!(!a_box.is_alive());
}

#[tokio::test]
async fn children_added_later_start_last_and_stop_first() {
    let log = Log::default();
    let (a, _a) = probe("a", &log, 8);
    let tree = start_tree("root", spec(Strategy::OneForOne, vec![a]))
        .await
        .unwrap();
    let (late, late_box) = probe("late", &log, 8);
    tree.start_child("root", late).await.unwrap();
    assert_eq!(
        late_box
            .call(Cmd::Ping, Some(Duration::from_secs(5)))
            .await
            .unwrap(),
        "pong:late"
    );
    let (duplicate, _) = probe("late", &log, 8);
    assert!(matches!(
        tree.start_child("root", duplicate).await,
        Err(waypoint_actors::TreeError::InvalidChild(_))
    ));
    let names: Vec<String> = tree
        .snapshot()
        .children
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(names, ["a", "late"]);
    log.clear();
    tree.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(log.entries(), ["stop:late", "stop:a"]);
}

#[tokio::test]
async fn a_blocked_handler_hears_the_stop_request_and_returns_early() {
    use waypoint_actors::{Actor, ActorError, Context, Mailbox};
    struct Sleeper(Log);
    impl Actor for Sleeper {
        type Msg = ();
        type State = ();
        type Args = ();
        async fn init(&self, ctx: &Context<()>, _: ()) -> Result<(), ActorError> {
            let _ = ctx.send_self(());
            Ok(())
        }
        async fn handle(&self, ctx: &Context<()>, _: (), _: &mut ()) -> Result<(), ActorError> {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(3600)) => self.0.push("slept"),
                () = ctx.stop_requested() => self.0.push("interrupted"),
            }
            Ok(())
        }
    }
    let log = Log::default();
    let sleeper_log = log.clone();
    let child = ChildSpec::worker("sleeper", Mailbox::new(1), move || {
        (Sleeper(sleeper_log.clone()), ())
    })
    .shutdown(Duration::from_secs(60));
    let tree = start_tree("root", spec(Strategy::OneForOne, vec![child]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    tree.shutdown(Duration::from_secs(60)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(log.entries(), ["interrupted"]);
}
