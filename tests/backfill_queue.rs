//! The backfill queue's books against a real Redis: leases, attempts, the failed list, lost
//! leases, crashed workers and retention-marker claims, script by script.

mod common;

use std::time::Duration;

use common::TestRedis;
use waypoint::backfill::queue::{Attempts, FinishState, Finished, JobKind, Outcome, Queue};

const LEASE: Duration = Duration::from_secs(30);
const ATTEMPTS: Attempts = Attempts {
    max_attempts: 2,
    retry_delay: Duration::from_millis(1),
};

async fn queue(redis: &TestRedis) -> Queue {
    Queue::new(
        waypoint::streams::Redis::connect(&redis.config())
            .await
            .expect("redis"),
    )
}

fn done(fids: &[u64], messages: u64) -> Outcome {
    Outcome {
        done: fids.to_vec(),
        messages,
        ..Outcome::default()
    }
}

#[tokio::test]
async fn a_job_is_taken_once_finished_once_and_counted_once() {
    let redis = TestRedis::new();
    let queue = queue(&redis).await;
    let queued = queue
        .enqueue(JobKind::Full, &[3, 1, 2, 2], 2, false, None)
        .await
        .unwrap();
    assert_eq!(
        (queued.jobs, queued.fids),
        (2, 3),
        "a fid listed twice is queued once"
    );

    let first = queue.take("a", LEASE).await.unwrap().expect("a job");
    let second = queue.take("b", LEASE).await.unwrap().expect("another job");
    assert!(queue.take("c", LEASE).await.unwrap().is_none());
    assert_eq!(first.attempts, 1);
    assert_eq!(
        [first.fids.clone(), second.fids.clone()].concat().len(),
        3,
        "every fid in exactly one job"
    );

    // Only the lease holder finishes its job, and only once.
    assert_eq!(
        queue
            .finish(&first, "b", &done(&first.fids, 10), ATTEMPTS)
            .await
            .unwrap(),
        Finished::LeaseLost
    );
    let finished = queue
        .finish(&first, "a", &done(&first.fids, 10), ATTEMPTS)
        .await
        .unwrap();
    assert!(matches!(
        finished,
        Finished::Recorded {
            outcome: FinishState::Completed,
            ..
        }
    ));
    assert_eq!(
        queue
            .finish(&first, "a", &done(&first.fids, 10), ATTEMPTS)
            .await
            .unwrap(),
        Finished::LeaseLost
    );
    queue
        .finish(&second, "b", &done(&second.fids, 5), ATTEMPTS)
        .await
        .unwrap();
    let books = queue.books(10).await.unwrap();
    assert_eq!(
        (
            books.jobs_completed,
            books.fids_done,
            books.fids_pending,
            books.messages
        ),
        (2, 3, 0, 15)
    );
    assert!(books.is_idle());

    // Done fids are skipped unless forced; a queued fid is never queued again.
    let again = queue
        .enqueue(JobKind::Full, &[1, 2, 3], 10, false, None)
        .await
        .unwrap();
    assert_eq!((again.fids, again.already_done), (0, 3));
    let forced = queue
        .enqueue(JobKind::Full, &[1, 2, 3], 10, true, None)
        .await
        .unwrap();
    assert_eq!(forced.fids, 3);
    let twice = queue
        .enqueue(JobKind::Full, &[1], 10, true, None)
        .await
        .unwrap();
    assert_eq!((twice.fids, twice.already_pending), (0, 1));
    redis.cleanup().await;
}

#[tokio::test]
async fn failed_attempts_are_retried_then_go_to_the_failed_list_and_retry_failed_brings_them_back()
{
    let redis = TestRedis::new();
    let queue = queue(&redis).await;
    queue
        .enqueue(JobKind::Full, &[5, 6, 7], 10, false, None)
        .await
        .unwrap();
    let job = queue.take("w", LEASE).await.unwrap().unwrap();
    // 5 done, 6 to retry, 7 refused for good.
    let outcome = Outcome {
        done: vec![5],
        messages: 4,
        retry: vec![6],
        retry_error: "fid 6: hub unavailable".into(),
        dead: vec![7],
        dead_error: "fid 7: NotFound".into(),
        release: false,
    };
    // The job waits for its retry; the refused fid went to a failed job of its own.
    let finished = queue.finish(&job, "w", &outcome, ATTEMPTS).await.unwrap();
    assert!(matches!(
        finished,
        Finished::Recorded {
            outcome: FinishState::Retry,
            ..
        }
    ));
    let books = queue.books(10).await.unwrap();
    assert_eq!(
        (books.fids_done, books.fids_pending, books.fids_failed),
        (1, 1, 1)
    );
    assert_eq!(books.failed.len(), 1);
    assert_eq!(books.failed[0].fids, vec![7]);
    assert!(books.failed[0].error.contains("NotFound"));

    // The retry waits its delay, then fails a second time: out of attempts.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let retried = queue.take("w", LEASE).await.unwrap().expect("the retry");
    assert_eq!((retried.fids.clone(), retried.attempts), (vec![6], 2));
    let outcome = Outcome {
        retry: vec![6],
        retry_error: "fid 6: hub unavailable".into(),
        ..Outcome::default()
    };
    queue
        .finish(&retried, "w", &outcome, ATTEMPTS)
        .await
        .unwrap();
    let books = queue.books(10).await.unwrap();
    assert_eq!(
        (books.jobs_failed, books.fids_failed, books.fids_pending),
        (2, 2, 0)
    );
    assert!(books.is_idle());

    assert_eq!(queue.retry_failed().await.unwrap(), (2, 2));
    let books = queue.books(10).await.unwrap();
    assert_eq!(
        (books.jobs_queued, books.fids_failed, books.fids_pending),
        (2, 0, 2)
    );
    let job = queue.take("w", LEASE).await.unwrap().unwrap();
    assert_eq!(job.attempts, 1, "attempts start over");
    redis.cleanup().await;
}

#[tokio::test]
async fn leases_run_out_and_crashed_workers_give_their_jobs_back() {
    let redis = TestRedis::new();
    let queue = queue(&redis).await;
    queue
        .enqueue(JobKind::Full, &[1], 10, false, None)
        .await
        .unwrap();
    queue
        .enqueue(JobKind::Full, &[2], 10, false, None)
        .await
        .unwrap();
    let short = queue
        .take("dead", Duration::from_millis(50))
        .await
        .unwrap()
        .unwrap();
    let held = queue.take("alive", LEASE).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(queue.renew(&held, "alive", LEASE).await.unwrap());
    let returned = queue.return_expired(5).await.unwrap();
    assert_eq!(returned.len(), 1, "only the lease that ran out");
    assert_eq!(
        (
            returned[0].id,
            returned[0].owner.as_str(),
            returned[0].failed
        ),
        (short.id, "dead", false)
    );
    // Once returned, the late worker's lease is lost: it can neither renew nor finish.
    assert!(!queue.renew(&short, "dead", LEASE).await.unwrap());
    // The late worker cannot finish it; a new one takes it again.
    assert_eq!(
        queue
            .finish(&short, "dead", &done(&[1], 1), ATTEMPTS)
            .await
            .unwrap(),
        Finished::LeaseLost
    );
    let again = queue.take("new", LEASE).await.unwrap().unwrap();
    assert_eq!((again.id, again.attempts), (short.id, 2));

    // A restarted worker gives back what it held, at once.
    let given_back = queue.return_owned("alive", 5).await.unwrap();
    assert_eq!(given_back.len(), 1);
    assert_eq!(
        queue.take("alive", LEASE).await.unwrap().unwrap().id,
        held.id
    );

    // A stopping worker releases its job without using up an attempt.
    let job = queue.take("new", LEASE).await.unwrap();
    assert!(job.is_none(), "both jobs are leased");
    let release = Outcome {
        retry: again.fids.clone(),
        release: true,
        ..Outcome::default()
    };
    let finished = queue
        .finish(&again, "new", &release, ATTEMPTS)
        .await
        .unwrap();
    assert!(matches!(
        finished,
        Finished::Recorded {
            outcome: FinishState::Released,
            ..
        }
    ));
    assert_eq!(queue.take("x", LEASE).await.unwrap().unwrap().attempts, 2);
    redis.cleanup().await;
}

#[tokio::test]
async fn a_marker_counts_only_the_jobs_of_its_current_claim_and_finished_failures() {
    let redis = TestRedis::new();
    let queue = queue(&redis).await;
    let first = queue.claim_marker(1, "v1").await.unwrap().expect("claimed");
    assert_eq!(
        queue.claim_marker(1, "v1").await.unwrap(),
        None,
        "claimed once"
    );
    queue
        .enqueue(JobKind::Full, &[1, 2], 1, true, Some((1, first)))
        .await
        .unwrap();
    queue.marker_queued(1, false).await.unwrap();
    assert_eq!(queue.marker_work(1).await.unwrap().unwrap().outstanding, 2);
    let old_job = queue.take("w", LEASE).await.unwrap().unwrap();

    // The shard falls behind again: a new claim; the old claim's job no longer counts.
    let second = queue
        .claim_marker(1, "v2")
        .await
        .unwrap()
        .expect("a new claim");
    assert_ne!(first, second);
    queue
        .enqueue(JobKind::Full, &[3], 1, true, Some((1, second)))
        .await
        .unwrap();
    queue
        .finish(&old_job, "w", &done(&old_job.fids, 1), ATTEMPTS)
        .await
        .unwrap();
    let work = queue.marker_work(1).await.unwrap().unwrap();
    assert_eq!((work.value.as_str(), work.outstanding), ("v2", 1));

    // Drain the old claim's other job, then fail the new claim's one for good: finished.
    let old_other = queue.take("w", LEASE).await.unwrap().unwrap();
    queue
        .finish(&old_other, "w", &done(&old_other.fids, 1), ATTEMPTS)
        .await
        .unwrap();
    let job = queue.take("w", LEASE).await.unwrap().unwrap();
    assert_eq!(job.marker, Some(1));
    let refused = Outcome {
        dead: job.fids.clone(),
        dead_error: "NotFound".into(),
        ..Outcome::default()
    };
    let finished = queue.finish(&job, "w", &refused, ATTEMPTS).await.unwrap();
    assert_eq!(
        finished,
        Finished::Recorded {
            outcome: FinishState::Failed,
            marker: Some((1, 0))
        }
    );
    let work = queue.marker_work(1).await.unwrap().unwrap();
    assert_eq!((work.outstanding, work.failed), (0, 1));
    // retry-failed counts it in again.
    queue.retry_failed().await.unwrap();
    assert_eq!(queue.marker_work(1).await.unwrap().unwrap().outstanding, 1);
    // A cleared marker is gone, and a late job of it leaves no trace.
    queue.clear_marker(1, "v2").await.unwrap();
    assert!(queue.marker_work(1).await.unwrap().is_none());
    let job = queue.take("w", LEASE).await.unwrap().unwrap();
    queue
        .finish(&job, "w", &done(&job.fids, 1), ATTEMPTS)
        .await
        .unwrap();
    assert!(queue.marker_work(1).await.unwrap().is_none());
    redis.cleanup().await;
}
