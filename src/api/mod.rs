//! What Waypoint serves over HTTP: health, readiness, metrics and admin on the health port;
//! the REST API and the MCP server over the query layer (`crate::query`).
//!
//! ```text
//! api (one_for_one)    health :8080    every process
//!                      rest   :8081    consumer, both (rest.enabled)
//!                      mcp    :8000    consumer, both, mcp serve (mcp.enabled)
//! ```
//!
//! Each server builds its own query layer ([`data_context`]) when it starts, so a restart
//! after a configuration reload picks up the new `[query]`, `[hub]` and `[database]`.

pub mod health;
pub mod mcp;
pub mod rest;
mod server;

use std::time::Duration;

use waypoint_actors::{ChildSpec, Mailbox, Strategy, SupervisorSpec};

use crate::query::{Breaker, DataContext, db::DbReader, hub::HubReader};
use crate::runtime::Runtime;
use crate::supervision;

/// The `api` subtree: the servers of this process.
pub fn api_spec(runtime: &Runtime) -> SupervisorSpec {
    let health_runtime = runtime.clone();
    let mut children = vec![ChildSpec::worker("health", Mailbox::new(4), move || {
        (
            health::HealthServer {
                runtime: health_runtime.clone(),
            },
            (),
        )
    })];
    let config = runtime.config();
    let serves = runtime.plan().serves;
    if serves.rest && config.rest.enabled {
        let rest_runtime = runtime.clone();
        children.push(ChildSpec::worker("rest", Mailbox::new(4), move || {
            (
                rest::RestServer {
                    data: data_context(&rest_runtime),
                    runtime: rest_runtime.clone(),
                },
                (),
            )
        }));
    }
    if serves.mcp && config.mcp.enabled {
        let mcp_runtime = runtime.clone();
        children.push(ChildSpec::worker("mcp", Mailbox::new(4), move || {
            (
                mcp::McpServer {
                    data: data_context(&mcp_runtime),
                    runtime: mcp_runtime.clone(),
                },
                (),
            )
        }));
    }
    supervision::spec(runtime, Strategy::OneForOne, children)
}

/// The query layer over this process's sources: the hub (its own client, with the query
/// deadline) unless `query.source` is `db-only`, and the database pool when the process has
/// one.
pub fn data_context(runtime: &Runtime) -> DataContext {
    let config = runtime.config();
    let query = &config.query;
    let hub = if query.source == crate::query::SourcePolicy::DbOnly {
        None
    } else {
        match HubReader::new(&config.hub, query) {
            Ok(reader) => Some(reader),
            Err(error) => {
                tracing::error!(%error, "queries cannot use the hub");
                None
            }
        }
    };
    let db = if query.source == crate::query::SourcePolicy::HubOnly {
        None
    } else {
        runtime.pg().map(|pg| DbReader { pg })
    };
    let breaker = Breaker::new(
        query.breaker_failures,
        Duration::from_secs(query.breaker_open_seconds),
        Duration::from_secs(query.breaker_max_open_seconds),
    );
    DataContext::new(query.source, hub, db, breaker)
}
