//! What Waypoint serves over HTTP: health, readiness, metrics and admin on the health port.
//!
//! ```text
//! api (one_for_one)    health :8080
//! ```

pub mod health;

use waypoint_actors::{ChildSpec, Mailbox, Strategy, SupervisorSpec};

use crate::runtime::Runtime;
use crate::supervision;

/// The `api` subtree: the servers of this process.
pub fn api_spec(runtime: &Runtime) -> SupervisorSpec {
    let health_runtime = runtime.clone();
    let health = ChildSpec::worker("health", Mailbox::new(4), move || {
        (
            health::HealthServer {
                runtime: health_runtime.clone(),
            },
            (),
        )
    });
    supervision::spec(runtime, Strategy::OneForOne, vec![health])
}
