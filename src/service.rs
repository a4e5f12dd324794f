//! `waypoint start`: connects to Redis (and PostgreSQL when consuming), applies migrations,
//! starts the supervision tree for the process's role, and runs until a signal.
//!
//! Signals: SIGTERM / SIGINT drain the whole tree within `supervisor.shutdown_grace_seconds`
//! (sources first, then sinks and workers, then servers; pools close last) and exit 0; a second
//! one exits at once. SIGHUP reloads the configuration file: a bad file is rejected with a log
//! line and the running configuration stays; otherwise the subtrees whose sections changed are
//! restarted with the new settings.
//!
//! The tree (see docs/design.md):
//! ```text
//! root (one_for_one)
//! ├─ api (one_for_one)       health
//! ├─ persist (one_for_one)   consumer:<type>:<n>, reclaimer         consumer, both
//! └─ produce (rest_for_one)  publisher:<type>, repair, subscriber:<shard>   producer, both
//! ```
//! `produce` is added once the hub's shards are known (from `hub.shard_indices`, or GetInfo,
//! retried with backoff while the hub is unreachable; `/ready` reports it meanwhile).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use waypoint_actors::{Backoff, ChildSpec, Intensity, Mailbox, Strategy, SupervisorSpec, TreeExit};

use crate::api::health::HealthServer;
use crate::cli::Role;
use crate::config::Config;
use crate::hub;
use crate::runtime::Runtime;
use crate::store::{self, Pg};
use crate::streams::Redis;

/// Paths of the subtrees, for restarts.
pub const ROOT: &str = "root";
pub const API: &str = "root/api";
pub const PERSIST: &str = "root/persist";
pub const PRODUCE: &str = "root/produce";

/// Runs the service until a signal stops it or the tree fails.
pub async fn run(
    role: Role,
    config: Config,
    config_path: Option<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    let service = Service::start(role, config, config_path).await?;
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let code = loop {
        tokio::select! {
            _ = terminate.recv() => break drain(&service, "SIGTERM", &mut terminate, &mut interrupt).await,
            _ = interrupt.recv() => break drain(&service, "SIGINT", &mut terminate, &mut interrupt).await,
            _ = hangup.recv() => reload(&service.runtime).await,
            exit = service.tree.wait() => {
                match exit {
                    TreeExit::Failed(reason) => tracing::error!(%reason, "supervision tree failed, exiting"),
                    TreeExit::Stopped => tracing::error!("supervision tree stopped unexpectedly, exiting"),
                }
                break ExitCode::FAILURE;
            }
        }
    };
    service.close();
    Ok(code)
}

/// A started service: its shared state and tree.
pub struct Service {
    runtime: Runtime,
    tree: waypoint_actors::Tree,
    upkeep_stop: tokio_util::sync::CancellationToken,
}

impl Service {
    /// Connects, migrates, starts the tree for `role` (and, for producers, the shard discovery
    /// that adds the producer subtree).
    pub async fn start(
        role: Role,
        config: Config,
        config_path: Option<std::path::PathBuf>,
    ) -> anyhow::Result<Service> {
        let metrics = crate::metrics::install();
        crate::metrics::describe();

        let redis = Redis::connect(&config.redis)
            .await
            .context("cannot start without Redis")?;
        let pg = if matches!(role, Role::Both | Role::Consumer) {
            Some(connect_database(&config).await?)
        } else {
            None
        };
        let hub = if matches!(role, Role::Both | Role::Producer) {
            Some(hub::Client::new(hub::options_from_config(&config.hub)).context("hub client")?)
        } else {
            None
        };
        let runtime = Runtime::new(role, config, config_path, pg, redis, metrics.clone());
        if let Some(hub) = hub {
            runtime.set_hub(hub);
        }
        let tree = waypoint_actors::start_tree(ROOT, root_spec(&runtime))
            .await
            .context("the supervision tree did not start")?;
        runtime.set_tree(tree.clone());
        tracing::info!(role = ?role, "waypoint started");

        let upkeep_stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(crate::metrics::run_upkeep(
            metrics,
            crate::metrics::UPKEEP_INTERVAL,
            upkeep_stop.clone().cancelled_owned(),
        ));
        if runtime.produces() {
            tokio::spawn(crate::pipeline::start_producer(runtime.clone()));
        }
        Ok(Service {
            runtime,
            tree,
            upkeep_stop,
        })
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn tree(&self) -> &waypoint_actors::Tree {
        &self.tree
    }

    /// Graceful shutdown within the configured grace period (what SIGTERM does).
    pub async fn shutdown(self) -> Result<(), waypoint_actors::TreeError> {
        let grace = self.runtime.config().supervisor.shutdown_grace();
        self.runtime.begin_shutdown();
        let result = self.tree.shutdown(grace).await;
        self.close();
        result
    }

    fn close(&self) {
        self.upkeep_stop.cancel();
        if let Some(pg) = self.runtime.pg() {
            pg.close();
        }
    }
}

/// Creates the database when missing, connects with retries, and applies migrations.
async fn connect_database(config: &Config) -> anyhow::Result<Pg> {
    if store::create_database_if_missing(&config.database).await? {
        tracing::info!("created the database");
    }
    let pg = Pg::connect(&config.database)
        .await
        .context("cannot start without PostgreSQL")?;
    let applied = store::migrate(&pg).await.context("applying migrations")?;
    for name in &applied {
        tracing::info!(migration = %name, "applied migration");
    }
    Ok(pg)
}

/// The tree of this process, without `produce` (added once the shards are known).
fn root_spec(runtime: &Runtime) -> SupervisorSpec {
    let mut children = vec![ChildSpec::supervisor(
        "api",
        supervisor_spec(runtime, Strategy::OneForOne, vec![health_child(runtime)]),
    )];
    if runtime.consumes() {
        children.push(ChildSpec::supervisor(
            "persist",
            crate::pipeline::persist_spec(runtime),
        ));
    }
    supervisor_spec(runtime, Strategy::OneForOne, children)
}

fn health_child(runtime: &Runtime) -> ChildSpec {
    let runtime = runtime.clone();
    ChildSpec::worker("health", Mailbox::new(4), move || {
        (
            HealthServer {
                runtime: runtime.clone(),
            },
            (),
        )
    })
}

/// A supervisor spec with the configured intensity and backoff.
pub fn supervisor_spec(
    runtime: &Runtime,
    strategy: Strategy,
    children: Vec<ChildSpec>,
) -> SupervisorSpec {
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
            jitter: 0.2,
        },
        children,
    }
}

/// Graceful shutdown: the whole tree within the grace period; a second signal exits at once.
async fn drain(
    service: &Service,
    signal: &str,
    terminate: &mut tokio::signal::unix::Signal,
    interrupt: &mut tokio::signal::unix::Signal,
) -> ExitCode {
    let grace = service.runtime.config().supervisor.shutdown_grace();
    tracing::info!(signal, grace_seconds = grace.as_secs(), "draining");
    service.runtime.begin_shutdown();
    tokio::select! {
        result = service.tree.shutdown(grace) => match result {
            Ok(()) => {
                tracing::info!("drained, exiting");
                ExitCode::SUCCESS
            }
            Err(error) => {
                tracing::warn!(%error, "drain incomplete; unacknowledged work will be redelivered");
                ExitCode::SUCCESS
            }
        },
        _ = terminate.recv() => second_signal(),
        _ = interrupt.recv() => second_signal(),
    }
}

fn second_signal() -> ExitCode {
    tracing::warn!("second signal during drain, exiting now");
    ExitCode::from(130)
}

/// Reloads the configuration file (SIGHUP) and restarts the subtrees it affects.
async fn reload(runtime: &Runtime) {
    let path = runtime.config_path().map(std::path::Path::to_path_buf);
    tracing::info!(path = ?path, "reloading configuration");
    let new = match Config::load(path.as_deref()) {
        Ok(config) => config,
        Err(errors) => {
            tracing::error!(problems = %errors, "configuration rejected, keeping the running one");
            return;
        }
    };
    let old = runtime.config();
    let changed = old.diff_sections(&new);
    if changed.is_empty() {
        tracing::info!("configuration unchanged");
        crate::pipeline::reload_spam(runtime).await;
        return;
    }
    // New clients first: if they cannot connect, nothing changes.
    let redis = if changed.contains(&"redis") {
        match Redis::connect(&new.redis).await {
            Ok(redis) => Some(redis),
            Err(error) => {
                tracing::error!(%error, "new redis settings do not work, keeping the running configuration");
                return;
            }
        }
    } else {
        None
    };
    let hub = if changed.contains(&"hub") && runtime.produces() {
        match hub::Client::new(hub::options_from_config(&new.hub)) {
            Ok(hub) => Some(hub),
            Err(error) => {
                tracing::error!(%error, "new hub settings do not work, keeping the running configuration");
                return;
            }
        }
    } else {
        None
    };
    let pg = if changed.contains(&"database") && runtime.consumes() {
        match connect_database(&new).await {
            Ok(pg) => Some(pg),
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "new database settings do not work, keeping the running configuration");
                return;
            }
        }
    } else {
        None
    };
    runtime.set_config(new);
    if let Some(redis) = redis {
        runtime.set_redis(redis);
    }
    if let Some(hub) = hub {
        runtime.set_hub(hub);
    }
    if let Some(pg) = pg {
        if let Some(old_pg) = runtime.pg() {
            old_pg.close();
        }
        runtime.set_pg(pg);
    }

    let mut subtrees: Vec<&str> = Vec::new();
    for section in &changed {
        let affected: &[&str] = match *section {
            "database" => &[PERSIST],
            "redis" | "stream" => &[PERSIST, PRODUCE],
            "hub" | "spam" => &[PRODUCE],
            "health" | "rest" | "mcp" => &[API],
            _ => &[],
        };
        for subtree in affected {
            if !subtrees.contains(subtree) {
                subtrees.push(subtree);
            }
        }
        if matches!(*section, "logging" | "supervisor" | "backfill") {
            tracing::warn!(section, "this section applies at the next start");
        }
    }
    let Some(tree) = runtime.tree() else {
        crate::pipeline::reload_spam(runtime).await;
        return;
    };
    let present = tree.snapshot();
    // A restarted `produce` loads the spam lists as its `spam` worker starts; otherwise
    // SIGHUP reloads them here.
    if !(subtrees.contains(&PRODUCE) && present.find(PRODUCE).is_some()) {
        crate::pipeline::reload_spam(runtime).await;
    }
    for subtree in subtrees {
        if present.find(subtree).is_none() {
            continue;
        }
        match tree.restart(subtree).await {
            Ok(()) => tracing::info!(subtree, "restarted with the new configuration"),
            Err(error) => tracing::error!(subtree, %error, "restart after reload failed"),
        }
    }
    tracing::info!(sections = ?changed, "configuration reloaded");
}
