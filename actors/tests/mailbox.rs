//! Bounded mailboxes: backpressure, fail-fast sends, and senders of a crashed actor.

mod common;

use std::time::Duration;

use common::{Cmd, Log, instant_backoff, probe};
use waypoint_actors::{Intensity, SendError, Strategy, SupervisorSpec, TrySendError, start_tree};

fn one_child(child: waypoint_actors::ChildSpec) -> SupervisorSpec {
    SupervisorSpec {
        strategy: Strategy::OneForOne,
        intensity: Intensity::default(),
        backoff: instant_backoff(),
        children: vec![child],
    }
}

#[tokio::test]
async fn a_full_mailbox_makes_send_wait_and_try_send_fail() {
    let log = Log::default();
    let (a, a_box) = probe("a", &log, 2);
    let tree = start_tree("root", one_child(a)).await.unwrap();

    // One message being handled (slow) and one queued fill the capacity of 2.
    a_box
        .send(Cmd::Work(Duration::from_millis(300)))
        .await
        .unwrap();
    a_box.send(Cmd::Record("queued".into())).await.unwrap();
    assert_eq!(a_box.depth(), 2);
    assert!(matches!(
        a_box.try_send(Cmd::Record("rejected".into())),
        Err(TrySendError::Full(_))
    ));

    // send waits until the slow handler frees a slot.
    let started = tokio::time::Instant::now();
    a_box.send(Cmd::Record("waited".into())).await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200),
        "send returned after {waited:?}"
    );

    log.wait_until("both recorded", |entries| entries.len() == 3)
        .await;
    assert_eq!(log.with_prefix("msg:"), ["msg:a:queued", "msg:a:waited"]);
    tokio::time::timeout(Duration::from_secs(5), async {
        while a_box.depth() != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("depth returns to zero");
    tree.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn senders_waiting_on_a_crashed_actor_get_an_error_or_the_new_incarnation() {
    let log = Log::default();
    let (a, a_box) = probe("a", &log, 1);
    let tree = start_tree("root", one_child(a)).await.unwrap();

    // The actor works on a message that will panic after a while; the mailbox is full, so
    // these senders wait.
    a_box
        .send(Cmd::CrashAfter(Duration::from_millis(200)))
        .await
        .unwrap();
    assert_eq!(a_box.depth(), 1);
    let waiting: Vec<_> = (0..5)
        .map(|i| {
            let mailbox = a_box.clone();
            tokio::spawn(async move { mailbox.send(Cmd::Record(i.to_string())).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        waiting.iter().all(|sender| !sender.is_finished()),
        "senders wait while full"
    );
    for sender in waiting {
        let result = tokio::time::timeout(Duration::from_secs(5), sender)
            .await
            .expect("a waiting sender is never left hanging")
            .unwrap();
        // Either it was delivered to the restarted incarnation or it got its message back.
        if let Err(SendError::Closed(msg)) = result {
            assert!(matches!(msg, Cmd::Record(_)));
        }
    }
    log.wait_until("restarted", |entries| {
        entries.iter().filter(|e| *e == "start:a").count() == 2
    })
    .await;
    tokio::time::timeout(Duration::from_secs(5), async {
        while a_box.depth() != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the dead incarnation's slots were released");
    tree.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn an_unbound_or_stopped_mailbox_is_closed() {
    let mailbox = waypoint_actors::Mailbox::<Cmd>::new(4);
    assert!(!mailbox.is_alive());
    assert!(matches!(
        mailbox.send(Cmd::Record("x".into())).await,
        Err(SendError::Closed(_))
    ));
    assert!(matches!(
        mailbox.try_send(Cmd::Record("x".into())),
        Err(TrySendError::Closed(_))
    ));

    let log = Log::default();
    let (a, a_box) = probe("a", &log, 4);
    let tree = start_tree("root", one_child(a)).await.unwrap();
    assert!(a_box.is_alive());
    assert_eq!(a_box.path().as_deref(), Some("root/a"));
    tree.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(matches!(
        a_box.send(Cmd::Record("x".into())).await,
        Err(SendError::Closed(_))
    ));
}

#[tokio::test]
async fn call_times_out_and_reports_closed() {
    let log = Log::default();
    let (a, a_box) = probe("a", &log, 4);
    let tree = start_tree("root", one_child(a)).await.unwrap();
    a_box
        .send(Cmd::Work(Duration::from_millis(500)))
        .await
        .unwrap();
    let result = a_box.call(Cmd::Ping, Some(Duration::from_millis(50))).await;
    assert!(matches!(
        result,
        Err(waypoint_actors::CallError::Timeout(_))
    ));
    tree.shutdown(Duration::from_secs(5)).await.unwrap();
    let result = a_box.call(Cmd::Ping, Some(Duration::from_millis(50))).await;
    assert!(matches!(result, Err(waypoint_actors::CallError::Closed)));
}
