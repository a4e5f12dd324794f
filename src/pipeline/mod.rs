//! The pipeline actors and the subtrees they form (work in progress: wired in issue 4).

use waypoint_actors::{Strategy, SupervisorSpec};

use crate::runtime::Runtime;

/// The consumer subtree.
pub fn persist_spec(runtime: &Runtime) -> SupervisorSpec {
    crate::service::supervisor_spec(runtime, Strategy::OneForOne, Vec::new())
}

/// Discovers the hub's shards and adds the producer subtree.
pub async fn start_producer(_runtime: Runtime) {}

/// Re-reads the spam label sources.
pub async fn reload_spam(_runtime: &Runtime) {}
