//! The one place that shows the whole supervision tree of a process, per role. Each subtree
//! is built by its own part (`api`, `pipeline`); this file only decides which run where and
//! in what order.
//!
//! ```text
//! root (one_for_one)
//! ├─ api (one_for_one)             health :8080                           every process
//! │                                rest :8081, mcp :8000                  consumer, both
//! ├─ spam                          label lists, loaded before any reader   producer, both, backfill
//! ├─ persist (one_for_one)         consumer:<type>:<n>, reclaimer          consumer, both
//! ├─ backfill (one_for_one)        writer:<part>, coordinator, worker:<n>  start --backfill, backfill ...
//! └─ produce (rest_for_one)        added once the hub's shards are known   producer, both
//!    ├─ publisher:<type>
//!    └─ ingest (one_for_one)       repair, subscriber:<shard>
//! ```
//! Children start in this order and stop in reverse: sources stop first, the API last
//! (docs/design.md).

use waypoint_actors::{ChildSpec, Strategy, SupervisorSpec};

use crate::runtime::Runtime;
use crate::supervision::{self, API, BACKFILL, PERSIST, PRODUCE, SPAM};
use crate::{api, backfill, pipeline};

/// The tree of this process at start, without `produce` (added once the shards are known,
/// see [`pipeline::start_producer`]).
pub fn root_spec(runtime: &Runtime) -> SupervisorSpec {
    let mut children = vec![ChildSpec::supervisor(
        supervision::child_name(API),
        api::api_spec(runtime),
    )];
    if runtime.produces() || runtime.backfills() {
        children.push(pipeline::spam_child(runtime));
    }
    if runtime.consumes() {
        children.push(ChildSpec::supervisor(
            supervision::child_name(PERSIST),
            pipeline::persist_spec(runtime),
        ));
    }
    if let Some(plan) = &runtime.plan().backfill {
        children.push(backfill::backfill_child(runtime, plan));
    }
    supervision::spec(runtime, Strategy::OneForOne, children)
}

/// The subtrees to restart when a configuration section changes (SIGHUP), and the sections
/// that only apply at the next start.
pub fn affected_subtrees(section: &str) -> Affected {
    match section {
        "database" => Affected::Restart(&[PERSIST, API]),
        "redis" => Affected::Restart(&[PERSIST, PRODUCE, BACKFILL]),
        "stream" => Affected::Restart(&[PERSIST, PRODUCE]),
        "hub" => Affected::Restart(&[PRODUCE, API]),
        "spam" => Affected::Restart(&[SPAM]),
        "health" | "rest" | "mcp" | "query" => Affected::Restart(&[API]),
        "logging" | "supervisor" => Affected::NextStart,
        // Read where used, so they apply at once; the number of workers at the next start.
        "backfill" => Affected::ReadWhereUsed,
        _ => Affected::Nothing,
    }
}

/// What a changed section asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affected {
    /// Restart these subtrees (those present in this process).
    Restart(&'static [&'static str]),
    /// The section is read only at start.
    NextStart,
    /// The section is read at each use: it applies without a restart.
    ReadWhereUsed,
    /// Nothing depends on it.
    Nothing,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_map_to_the_subtrees_that_read_them() {
        assert_eq!(affected_subtrees("spam"), Affected::Restart(&[SPAM]));
        assert_eq!(
            affected_subtrees("stream"),
            Affected::Restart(&[PERSIST, PRODUCE])
        );
        assert_eq!(
            affected_subtrees("redis"),
            Affected::Restart(&[PERSIST, PRODUCE, BACKFILL])
        );
        assert_eq!(affected_subtrees("backfill"), Affected::ReadWhereUsed);
        assert_eq!(affected_subtrees("logging"), Affected::NextStart);
        assert_eq!(affected_subtrees("unknown"), Affected::Nothing);
    }
}
