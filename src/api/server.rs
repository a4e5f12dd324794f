//! What the three HTTP server actors (health, REST, MCP) share: each owns one axum server,
//! running as a task.
//!
//! - Binding happens in the actor's `init`, so a port in use fails the start (and the tree's
//!   restart policy takes over).
//! - The task's unexpected end is sent to the actor as [`Msg::ServerExited`]; the actor
//!   returns it as its error, so it crashes and is restarted.
//! - A graceful stop ([`Served::stop`]) lets in-flight requests finish for up to
//!   [`SERVER_STOP_TIMEOUT`]; a crash or kill skips `stopping`, and dropping [`Served`] still
//!   releases the port for the next start.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use waypoint_actors::{ActorError, Context};

/// How long a graceful stop waits for in-flight requests.
pub const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The message of every server actor.
pub enum Msg {
    /// The server task ended on its own.
    ServerExited(String),
}

impl Msg {
    /// The actor's answer to its message: a server that ended on its own is a crash.
    pub fn into_crash(self) -> Result<(), ActorError> {
        match self {
            Msg::ServerExited(reason) => Err(reason.into()),
        }
    }
}

/// A running server: the state of its actor.
pub struct Served {
    name: &'static str,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Served {
    /// Binds `addr` and serves the app `app` builds on it (with each connection's peer address
    /// available to handlers) until the server stops. `app` gets the token cancelled when the
    /// server stops, for what must end with it (open sessions, streams). `name` names the
    /// server in logs and errors.
    pub async fn start(
        ctx: &Context<Msg>,
        name: &'static str,
        addr: SocketAddr,
        app: impl FnOnce(CancellationToken) -> axum::Router,
    ) -> Result<Served, ActorError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|error| format!("{name} server cannot listen on {addr}: {error}"))?;
        tracing::info!(%addr, "{name} server listening");
        let shutdown = CancellationToken::new();
        let app = app(shutdown.child_token());
        let stop = shutdown.clone();
        let mailbox = ctx.mailbox().clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .await;
            if !stop.is_cancelled() {
                let reason = match served {
                    Ok(()) => format!("{name} server stopped unexpectedly"),
                    Err(error) => format!("{name} server failed: {error}"),
                };
                let _ = mailbox.try_send(Msg::ServerExited(reason));
            }
        });
        Ok(Served {
            name,
            shutdown,
            task: Some(task),
        })
    }

    /// Stops accepting connections and waits for in-flight requests, at most
    /// [`SERVER_STOP_TIMEOUT`].
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take()
            && tokio::time::timeout(SERVER_STOP_TIMEOUT, task)
                .await
                .is_err()
        {
            tracing::warn!("{} server did not stop in time", self.name);
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
