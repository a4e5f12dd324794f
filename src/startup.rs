//! Start-up connection retries shared by the PostgreSQL and Redis clients: a dependency that
//! starts alongside Waypoint (compose, Kubernetes) gets a window to come up.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// First pause between connection attempts.
const INITIAL_DELAY: Duration = Duration::from_millis(250);
/// Longest pause between connection attempts.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Why [`retry_connect`] stopped without a connection.
#[derive(Debug)]
pub(crate) enum RetryFailure<E> {
    /// An error that waiting cannot fix (bad credentials, a missing database).
    Permanent(E),
    /// The window elapsed; the last attempt's error.
    GaveUp {
        last_error: E,
        attempts: u32,
        waited: Duration,
    },
}

/// Runs `attempt` until it succeeds, fails with an error `is_retryable` rejects, or
/// `window` has elapsed (the last attempt happens at the deadline). Each failure is logged
/// with the pause before the next attempt.
pub(crate) async fn retry_connect<T, E, F, Fut>(
    service: &'static str,
    target: &str,
    window: Duration,
    is_retryable: impl Fn(&E) -> bool,
    mut attempt: F,
) -> Result<T, RetryFailure<E>>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let deadline = started + window;
    let mut delay = INITIAL_DELAY;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let error = match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if !is_retryable(&error) => return Err(RetryFailure::Permanent(error)),
            Err(error) => error,
        };
        let now = Instant::now();
        if now >= deadline {
            tracing::error!(service, server = %target, attempts, %error, "unreachable, giving up");
            return Err(RetryFailure::GaveUp {
                last_error: error,
                attempts,
                waited: now - started,
            });
        }
        let pause = delay.min(deadline - now);
        tracing::warn!(
            service,
            server = %target,
            attempt = attempts,
            %error,
            retry_in_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
            "not reachable yet"
        );
        tokio::time::sleep(pause).await;
        delay = (delay * 2).min(MAX_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stops_at_once_on_a_permanent_error() {
        let mut attempts = 0;
        let result: Result<(), _> = retry_connect(
            "test",
            "h:1",
            Duration::from_secs(60),
            |_: &&str| false,
            || {
                attempts += 1;
                async { Err("bad") }
            },
        )
        .await;
        assert!(matches!(result, Err(RetryFailure::Permanent("bad"))));
        assert_eq!(attempts, 1);
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline() {
        let started = Instant::now();
        let result: Result<(), _> = retry_connect(
            "test",
            "h:1",
            Duration::from_millis(600),
            |_: &&str| true,
            || async { Err("down") },
        )
        .await;
        // Attempts at 0, 250 and 600 ms (the last pause is cut to the deadline).
        assert!(matches!(
            result,
            Err(RetryFailure::GaveUp {
                last_error: "down",
                attempts: 3,
                ..
            })
        ));
        assert!(started.elapsed() >= Duration::from_millis(600));
    }
}
