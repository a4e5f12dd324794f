//! A circuit breaker in front of the hub: after `failure_threshold` failures in a row the hub
//! is left alone for `open_for` (requests go to the other source at once instead of each
//! waiting for a timeout); then one request probes it (half-open). A probe that succeeds closes
//! the circuit, one that fails opens it again for twice as long, up to `max_open_for`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics::QUERY_HUB_CIRCUIT_OPEN;

#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    failure_threshold: u32,
    open_for: Duration,
    max_open_for: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
        wait: Duration,
    },
    /// One probe is out; it started at `since`.
    HalfOpen {
        since: Instant,
        wait: Duration,
    },
}

/// What the breaker says about the hub, for `/ready` and `sync/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl Breaker {
    pub fn new(failure_threshold: u32, open_for: Duration, max_open_for: Duration) -> Breaker {
        metrics::gauge!(QUERY_HUB_CIRCUIT_OPEN).set(0.0);
        Breaker {
            state: Mutex::new(State::Closed { failures: 0 }),
            failure_threshold: failure_threshold.max(1),
            open_for,
            max_open_for: max_open_for.max(open_for),
        }
    }

    pub fn state(&self) -> CircuitState {
        match *self.lock() {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Leave to call the hub now, or None while the circuit is open (or its probe is out).
    pub fn permit(&self) -> Option<Permit<'_>> {
        let now = Instant::now();
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Some(Permit {
                breaker: self,
                probe: false,
                settled: false,
            }),
            State::Open { until, wait } if now >= until => {
                *state = State::HalfOpen { since: now, wait };
                Some(Permit {
                    breaker: self,
                    probe: true,
                    settled: false,
                })
            }
            // A probe that never reported (its request was dropped) does not hold the circuit
            // half-open for ever.
            State::HalfOpen { since, wait } if now.duration_since(since) >= wait => {
                *state = State::HalfOpen { since: now, wait };
                Some(Permit {
                    breaker: self,
                    probe: true,
                    settled: false,
                })
            }
            State::Open { .. } | State::HalfOpen { .. } => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn settle(&self, probe: bool, outcome: Outcome) {
        let now = Instant::now();
        let mut state = self.lock();
        let before = *state;
        *state = match (outcome, before) {
            (Outcome::Succeeded, _) => State::Closed { failures: 0 },
            (Outcome::Failed, State::HalfOpen { wait, .. }) if probe => {
                let wait = (wait * 2).min(self.max_open_for);
                State::Open {
                    until: now + wait,
                    wait,
                }
            }
            (Outcome::Failed, State::Closed { failures }) => {
                if failures + 1 >= self.failure_threshold {
                    State::Open {
                        until: now + self.open_for,
                        wait: self.open_for,
                    }
                } else {
                    State::Closed {
                        failures: failures + 1,
                    }
                }
            }
            // A probe that neither succeeded nor failed lets the next request probe.
            (Outcome::Neutral, State::HalfOpen { wait, .. }) if probe => {
                State::Open { until: now, wait }
            }
            (_, other) => other,
        };
        let opened = matches!(*state, State::Open { .. });
        let was_open = matches!(before, State::Open { .. } | State::HalfOpen { .. });
        if opened && !matches!(before, State::Open { .. }) && outcome == Outcome::Failed {
            let wait = match *state {
                State::Open { wait, .. } => wait,
                _ => self.open_for,
            };
            tracing::warn!(
                retry_in_seconds = wait.as_secs_f64(),
                "hub queries failing: answering from the database until a probe succeeds"
            );
            metrics::gauge!(QUERY_HUB_CIRCUIT_OPEN).set(1.0);
        } else if was_open && matches!(*state, State::Closed { .. }) {
            tracing::info!("hub answers queries again");
            metrics::gauge!(QUERY_HUB_CIRCUIT_OPEN).set(0.0);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed,
    Neutral,
}

/// Leave for one hub call; report how it went (dropping it unreported counts as neutral).
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    settled: bool,
}

impl Permit<'_> {
    pub fn succeeded(mut self) {
        self.settled = true;
        self.breaker.settle(self.probe, Outcome::Succeeded);
    }

    pub fn failed(mut self) {
        self.settled = true;
        self.breaker.settle(self.probe, Outcome::Failed);
    }

    /// Neither: the hub was not really asked (the cursor belonged to the other source).
    pub fn neutral(mut self) {
        self.settled = true;
        self.breaker.settle(self.probe, Outcome::Neutral);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.settle(self.probe, Outcome::Neutral);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_the_interval() {
        let breaker = Breaker::new(3, Duration::from_millis(50), Duration::from_secs(1));
        breaker.permit().expect("closed").failed();
        breaker.permit().expect("closed").succeeded();
        for _ in 0..3 {
            breaker.permit().expect("closed").failed();
        }
        assert_eq!(breaker.state(), CircuitState::Open);
        assert!(breaker.permit().is_none(), "open: no call");
        std::thread::sleep(Duration::from_millis(60));
        let probe = breaker.permit().expect("half-open probe");
        assert!(breaker.permit().is_none(), "only one probe at a time");
        probe.failed();
        assert_eq!(breaker.state(), CircuitState::Open);
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            breaker.permit().is_none(),
            "the wait doubled after a failed probe"
        );
        std::thread::sleep(Duration::from_millis(60));
        breaker.permit().expect("second probe").succeeded();
        assert_eq!(breaker.state(), CircuitState::Closed);
        breaker.permit().expect("closed again").succeeded();
    }

    #[test]
    fn a_dropped_probe_lets_the_next_request_probe() {
        let breaker = Breaker::new(1, Duration::from_millis(10), Duration::from_secs(1));
        breaker.permit().expect("closed").failed();
        std::thread::sleep(Duration::from_millis(15));
        drop(breaker.permit().expect("probe"));
        assert!(breaker.permit().is_some(), "a dropped probe hands over");
    }
}
