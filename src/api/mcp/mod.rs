//! The MCP actor: owns the Model Context Protocol server (`mcp.bind_address:mcp.port`,
//! default 127.0.0.1:8000), Streamable HTTP at `/mcp`, for AI assistants.
//!
//! ```text
//! POST/GET/DELETE /mcp ── rmcp StreamableHttpService ── WaypointMcp (one per session)
//!                          Host allow-list (mcp.allowed_hosts)   └─ DataContext (hub / PostgreSQL)
//! ```
//!
//! The surface is the existing Waypoint's (`tools`: 24 tools plus `search_casts` and
//! `get_following_feed`; `resources`: the `waypoint://` templates; the `waypoint_prompt`
//! prompt), in its JSON shapes (`format`), with its argument names and defaults (`params`).
//!
//! The server runs as a task the actor owns, as every server here does (`api::server`); a
//! graceful stop also closes the open sessions.

mod format;
mod params;
mod resources;
mod tools;

use std::net::SocketAddr;
use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;
use waypoint_actors::{Actor, ActorError, Context};

use crate::api::server::{Msg, Served};
use crate::config::McpConfig;
use crate::query::DataContext;
use crate::runtime::Runtime;
pub use tools::WaypointMcp;

/// The MCP routes (`/mcp`), with the Host allow-list of `config` (empty: no check). Open
/// sessions live until the client ends them or they idle out.
pub fn service(data: DataContext, config: &McpConfig) -> axum::Router {
    router(data, config, CancellationToken::new())
}

/// The MCP routes; cancelling `shutdown` ends every open session and stream.
fn router(data: DataContext, config: &McpConfig, shutdown: CancellationToken) -> axum::Router {
    let handler = WaypointMcp::new(data);
    let server_config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(config.allowed_hosts.iter().cloned())
        .with_cancellation_token(shutdown);
    let mcp = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(LocalSessionManager::default()),
        server_config,
    );
    axum::Router::new().nest_service("/mcp", mcp)
}

/// The MCP server actor.
pub struct McpServer {
    pub runtime: Runtime,
    pub data: DataContext,
}

impl Actor for McpServer {
    type Msg = Msg;
    type State = Served;
    type Args = ();

    async fn init(&self, ctx: &Context<Msg>, _args: ()) -> Result<Served, ActorError> {
        let config = self.runtime.config();
        let addr = SocketAddr::new(config.mcp.bind_address, config.mcp.port);
        tracing::info!(policy = self.data.policy().name(), "mcp queries");
        Served::start(ctx, "mcp", addr, |shutdown| {
            router(self.data.clone(), &config.mcp, shutdown)
        })
        .await
    }

    async fn handle(
        &self,
        _ctx: &Context<Msg>,
        msg: Msg,
        _state: &mut Served,
    ) -> Result<(), ActorError> {
        msg.into_crash()
    }

    async fn stopping(&self, _ctx: &Context<Msg>, state: &mut Served) -> Result<(), ActorError> {
        state.stop().await;
        Ok(())
    }
}
