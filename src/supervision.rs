//! What every subtree is built from: the tree's paths and supervisor specs with the configured
//! restart policy. It sits below every part that builds a subtree (`pipeline`, `backfill`,
//! `api`) and imports none of them; `service::tree` assembles the subtrees for a role.

use std::time::Duration;

use waypoint_actors::{Backoff, ChildSpec, Intensity, Strategy, SupervisorSpec};

use crate::runtime::Runtime;

/// Paths of the root and its subtrees, for restarts, readiness and `/admin`.
pub const ROOT: &str = "root";
pub const API: &str = "root/api";
pub const SPAM: &str = "root/spam";
pub const PERSIST: &str = "root/persist";
pub const PRODUCE: &str = "root/produce";
pub const BACKFILL: &str = "root/backfill";

/// Share of a restart delay drawn at random, so siblings that crashed together do not restart
/// in lockstep.
const BACKOFF_JITTER: f64 = 0.2;

/// A supervisor spec with the configured intensity and backoff (`[supervisor]`).
pub fn spec(runtime: &Runtime, strategy: Strategy, children: Vec<ChildSpec>) -> SupervisorSpec {
    let config = runtime.config();
    let supervisor = &config.supervisor;
    SupervisorSpec {
        strategy,
        intensity: Intensity {
            max_restarts: supervisor.max_restarts,
            period: Duration::from_secs(supervisor.period_seconds),
        },
        backoff: Backoff {
            initial: Duration::from_millis(supervisor.backoff_initial_ms),
            max: Duration::from_millis(supervisor.backoff_max_ms),
            jitter: BACKOFF_JITTER,
        },
        children,
    }
}

/// The last part of a subtree path: the child name its parent knows it by.
pub fn child_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_names_are_the_last_path_part() {
        assert_eq!(child_name(PRODUCE), "produce");
        assert_eq!(child_name(BACKFILL), "backfill");
        assert_eq!(child_name(ROOT), "root");
    }
}
