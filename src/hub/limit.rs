//! How much load one process puts on the hub: a ceiling on unary calls in flight and an
//! adaptive ceiling on calls per second, shared by every clone of a [`Client`](super::Client).
//!
//! The rate follows the hub's answers (additive increase, multiplicative decrease): an answer
//! that says the hub is overloaded (RESOURCE_EXHAUSTED, UNAVAILABLE, a dropped connection)
//! halves the allowed rate, at most once per [`DECREASE_INTERVAL`] so a burst of failures of
//! calls that were already in flight counts once; every [`INCREASE_INTERVAL`] with answers
//! coming back raises it by [`INCREASE_SHARE`] of itself, until it is back at the ceiling. The
//! increase is small on purpose: a hub that refused at 60 requests/s is not probed at 160 a
//! second later. Without a configured ceiling the rate is unlimited until the hub first pushes
//! back, then starts from half of what the process was doing, and the limit is lifted again
//! once it is well above what the process asks for.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::metrics::{HUB_REQUEST_RATE_LIMIT, HUB_REQUEST_SLOWDOWNS_TOTAL};

/// The allowed rate never drops below this, so a recovering hub is still probed.
const MIN_RATE: f64 = 1.0;
/// At most one decrease per interval: longer than a call takes, so the calls in flight when
/// the hub first pushed back count once.
const DECREASE_INTERVAL: Duration = Duration::from_millis(500);
/// At most one increase per interval.
const INCREASE_INTERVAL: Duration = Duration::from_millis(500);
/// Each increase adds this share of the current rate (at least one request per second): from
/// half the hub's limit back to it in about seven seconds.
const INCREASE_SHARE: f64 = 0.05;
/// Calls that may go out back to back: a tenth of a second's worth.
const BURST_SECONDS: f64 = 0.1;
/// Without a configured ceiling, once the rate climbed this far above what the process asks
/// for, the limit is lifted again.
const UNLIMITED_HEADROOM: f64 = 4.0;

/// The limits of one client (and its clones).
pub(crate) struct Limiter {
    in_flight: Semaphore,
    ceiling: Option<f64>,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    /// Calls per second allowed now; infinite while unlimited.
    rate: f64,
    tokens: f64,
    refilled_at: Instant,
    /// The last change of the rate (None: never changed).
    changed_at: Option<Instant>,
    /// Calls admitted in the current and the previous second, to know the demand.
    window_start: Instant,
    window_calls: u64,
    previous_window_calls: u64,
}

impl Limiter {
    /// At most `max_in_flight` calls at once and `ceiling` calls per second (None: no rate
    /// ceiling until the hub pushes back).
    pub(crate) fn new(max_in_flight: usize, ceiling: Option<f64>) -> Limiter {
        let now = Instant::now();
        let rate = ceiling.unwrap_or(f64::INFINITY);
        report(rate);
        Limiter {
            in_flight: Semaphore::new(max_in_flight.max(1)),
            ceiling,
            bucket: Mutex::new(Bucket {
                rate,
                tokens: burst(rate),
                refilled_at: now,
                changed_at: None,
                window_start: now,
                window_calls: 0,
                previous_window_calls: 0,
            }),
        }
    }

    /// Waits for the rate to allow one more call, then for a slot. The permit is the slot;
    /// drop it when the answer is in. (The token first: a caller waiting for its turn does not
    /// hold a slot that a call ready to go could use.)
    pub(crate) async fn acquire(&self) -> SemaphorePermit<'_> {
        loop {
            let wait = self.with_bucket(|bucket| bucket.take(Instant::now()));
            match wait {
                None => break,
                Some(wait) => tokio::time::sleep(wait).await,
            }
        }
        // The semaphore is never closed.
        loop {
            if let Ok(permit) = self.in_flight.acquire().await {
                return permit;
            }
        }
    }

    /// The hub pushed back: lower the rate.
    pub(crate) fn overloaded(&self) {
        let lowered = self.with_bucket(|bucket| bucket.decrease(Instant::now()));
        if let Some(rate) = lowered {
            metrics::counter!(HUB_REQUEST_SLOWDOWNS_TOTAL).increment(1);
            tracing::warn!(requests_per_second = rate, "hub overloaded, slowing down");
            report(rate);
        }
    }

    /// The hub answered: let the rate climb back.
    pub(crate) fn answered(&self) {
        let ceiling = self.ceiling;
        let raised = self.with_bucket(|bucket| bucket.increase(Instant::now(), ceiling));
        if let Some(rate) = raised {
            if rate.is_infinite() || Some(rate) == ceiling {
                tracing::info!("hub answering again, request rate back to its ceiling");
            }
            report(rate);
        }
    }

    /// The rate allowed now (infinite when unlimited).
    #[cfg(test)]
    fn rate(&self) -> f64 {
        self.with_bucket(|bucket| bucket.rate)
    }

    fn with_bucket<T>(&self, f: impl FnOnce(&mut Bucket) -> T) -> T {
        let mut bucket = self
            .bucket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut bucket)
    }
}

impl Bucket {
    /// Takes a token, or says how long to wait for one.
    fn take(&mut self, now: Instant) -> Option<Duration> {
        self.count(now);
        if self.rate.is_infinite() {
            self.window_calls += 1;
            return None;
        }
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(burst(self.rate));
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.window_calls += 1;
            None
        } else {
            Some(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    fn count(&mut self, now: Instant) {
        let age = now.saturating_duration_since(self.window_start);
        if age >= Duration::from_secs(1) {
            self.previous_window_calls = if age >= Duration::from_secs(2) {
                0
            } else {
                self.window_calls
            };
            self.window_calls = 0;
            self.window_start = now;
        }
    }

    /// Calls per second the process has been asking for.
    fn demand(&self) -> f64 {
        self.previous_window_calls.max(self.window_calls) as f64
    }

    fn changed_within(&self, now: Instant, interval: Duration) -> bool {
        self.changed_at
            .is_some_and(|at| now.saturating_duration_since(at) < interval)
    }

    fn decrease(&mut self, now: Instant) -> Option<f64> {
        if self.changed_within(now, DECREASE_INTERVAL) && self.rate.is_finite() {
            return None;
        }
        let current = if self.rate.is_finite() {
            self.rate
        } else {
            self.demand().max(MIN_RATE * 2.0)
        };
        self.rate = (current / 2.0).max(MIN_RATE);
        self.tokens = self.tokens.min(burst(self.rate));
        self.changed_at = Some(now);
        Some(self.rate)
    }

    fn increase(&mut self, now: Instant, ceiling: Option<f64>) -> Option<f64> {
        if self.rate.is_infinite()
            || Some(self.rate) == ceiling
            || self.changed_within(now, INCREASE_INTERVAL)
        {
            return None;
        }
        self.changed_at = Some(now);
        let raised = self.rate + (self.rate * INCREASE_SHARE).max(MIN_RATE);
        self.rate = match ceiling {
            Some(ceiling) => raised.min(ceiling),
            None if self.rate > UNLIMITED_HEADROOM * self.demand().max(MIN_RATE) => f64::INFINITY,
            None => raised,
        };
        Some(self.rate)
    }
}

fn burst(rate: f64) -> f64 {
    if rate.is_infinite() {
        0.0
    } else {
        (rate * BURST_SECONDS).max(1.0)
    }
}

fn report(rate: f64) {
    // 0 on the gauge: no rate limit in force.
    metrics::gauge!(HUB_REQUEST_RATE_LIMIT).set(if rate.is_finite() { rate } else { 0.0 });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls admitted within `within` to eight callers whose calls take a millisecond.
    async fn admitted(limiter: &std::sync::Arc<Limiter>, within: Duration) -> u64 {
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (limiter, count) = (limiter.clone(), count.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let _permit = limiter.acquire().await;
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // The call itself.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }));
        }
        tokio::time::sleep(within).await;
        for task in tasks {
            task.abort();
        }
        count.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_ceiling_holds() {
        let limiter = std::sync::Arc::new(Limiter::new(64, Some(100.0)));
        let calls = admitted(&limiter, Duration::from_secs(10)).await;
        // 100/s for 10 s, plus the initial burst of a tenth of a second.
        assert!((1000..=1012).contains(&calls), "{calls}");
    }

    #[tokio::test(start_paused = true)]
    async fn calls_in_flight_are_bounded() {
        let limiter = Limiter::new(2, None);
        let first = limiter.acquire().await;
        let _second = limiter.acquire().await;
        let third = tokio::time::timeout(Duration::from_secs(1), limiter.acquire()).await;
        assert!(third.is_err(), "a third call waits while two are in flight");
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(1), limiter.acquire()).await;
        assert!(third.is_ok(), "a finished call frees its slot");
    }

    #[tokio::test(start_paused = true)]
    async fn pushback_halves_the_rate_once_per_interval_and_answers_bring_it_back() {
        let limiter = Limiter::new(64, Some(200.0));
        limiter.overloaded();
        // Failures of calls that were in flight together count once.
        limiter.overloaded();
        assert_eq!(limiter.rate(), 100.0);
        tokio::time::sleep(DECREASE_INTERVAL).await;
        limiter.overloaded();
        assert_eq!(limiter.rate(), 50.0);
        // Answers raise it by a twentieth per interval (twice in one interval counts once),
        // up to the ceiling and no further.
        let mut steps = 0;
        let mut last = limiter.rate();
        while limiter.rate() < 200.0 {
            tokio::time::sleep(INCREASE_INTERVAL).await;
            limiter.answered();
            limiter.answered();
            steps += 1;
            assert!(limiter.rate() > last, "each interval raises the rate");
            assert!(limiter.rate() <= last * 1.06, "by a small step");
            last = limiter.rate();
            assert!(steps <= 40, "the rate never recovered: {}", limiter.rate());
        }
        assert_eq!(steps, 29, "50 → 200 at 5% an interval");
        limiter.answered();
        tokio::time::sleep(INCREASE_INTERVAL).await;
        limiter.answered();
        assert_eq!(limiter.rate(), 200.0);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_ceiling_pushback_starts_from_the_demand_and_the_limit_is_lifted_later() {
        let limiter = std::sync::Arc::new(Limiter::new(64, None));
        assert!(limiter.rate().is_infinite());
        // Demand: callers spinning; mark the demand over a second, then push back.
        let _ = admitted(&limiter, Duration::from_millis(1500)).await;
        limiter.overloaded();
        let lowered = limiter.rate();
        assert!(lowered.is_finite() && lowered >= MIN_RATE, "{lowered}");
        let calls = admitted(&limiter, Duration::from_secs(4)).await;
        assert!(
            (calls as f64) <= lowered * 4.0 + burst(lowered) + 1.0,
            "{calls} calls in 4 s at {lowered}/s"
        );
        // With nobody calling, answers lift the limit again.
        let mut steps = 0;
        while limiter.rate().is_finite() {
            tokio::time::sleep(Duration::from_secs(2)).await;
            limiter.answered();
            steps += 1;
            assert!(steps < 100, "limit never lifted: {}", limiter.rate());
        }
    }
}
