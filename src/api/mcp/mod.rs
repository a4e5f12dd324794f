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
//! The server runs as a task the actor owns, as the health server does: binding happens in
//! `init` (a port in use fails the start), the task's unexpected end crashes the actor (so it
//! is restarted), and a graceful stop closes the open sessions and lets in-flight requests
//! finish.

mod format;
mod params;
mod resources;
mod tools;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use waypoint_actors::{Actor, ActorError, Context};

use crate::config::McpConfig;
use crate::query::DataContext;
use crate::runtime::Runtime;
pub use tools::WaypointMcp;

/// How long a graceful stop waits for in-flight requests.
const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(5);

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

pub enum Msg {
    /// The server task ended on its own.
    ServerExited(String),
}

pub struct State {
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// The MCP server actor.
pub struct McpServer {
    pub runtime: Runtime,
    pub data: DataContext,
}

impl Actor for McpServer {
    type Msg = Msg;
    type State = State;
    type Args = ();

    async fn init(&self, ctx: &Context<Msg>, _args: ()) -> Result<State, ActorError> {
        let config = self.runtime.config();
        let addr = SocketAddr::new(config.mcp.bind_address, config.mcp.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|error| format!("mcp server cannot listen on {addr}: {error}"))?;
        tracing::info!(%addr, policy = self.data.policy().name(), "mcp server listening");
        let shutdown = CancellationToken::new();
        let app = router(self.data.clone(), &config.mcp, shutdown.child_token());
        let stop = shutdown.clone();
        let mailbox = ctx.mailbox().clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stop.clone().cancelled_owned())
                .await;
            if !stop.is_cancelled() {
                let reason = match served {
                    Ok(()) => "mcp server stopped unexpectedly".to_owned(),
                    Err(error) => format!("mcp server failed: {error}"),
                };
                let _ = mailbox.try_send(Msg::ServerExited(reason));
            }
        });
        Ok(State {
            shutdown,
            task: Some(task),
        })
    }

    async fn handle(
        &self,
        _ctx: &Context<Msg>,
        msg: Msg,
        _state: &mut State,
    ) -> Result<(), ActorError> {
        match msg {
            Msg::ServerExited(reason) => Err(reason.into()),
        }
    }

    async fn stopping(&self, _ctx: &Context<Msg>, state: &mut State) -> Result<(), ActorError> {
        state.shutdown.cancel();
        if let Some(task) = state.task.take()
            && tokio::time::timeout(SERVER_STOP_TIMEOUT, task)
                .await
                .is_err()
        {
            tracing::warn!("mcp server did not stop in time");
        }
        Ok(())
    }
}

impl Drop for State {
    // A crash or kill skips `stopping`; make sure the port is released for the next start.
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
