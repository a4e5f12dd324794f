//! `waypoint start`: connects to Redis (and PostgreSQL when consuming), applies migrations,
//! starts the supervision tree for the process's role, and runs until a signal.
//!
//! Signals: SIGTERM / SIGINT drain the whole tree within `supervisor.shutdown_grace_seconds`
//! (sources first, then sinks and workers, then servers; pools close last) and exit 0; a second
//! one exits at once. SIGHUP reloads the configuration file: a bad file is rejected with a log
//! line and the running configuration stays; otherwise the subtrees whose sections changed are
//! restarted with the new settings.
//!
//! The tree for each role is assembled in [`tree`] from the subtrees each part builds.

mod tree;

use std::process::ExitCode;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use waypoint_actors::TreeExit;

use crate::config::Config;
use crate::hub;
use crate::runtime::{Plan, Role, Runtime};
use crate::store::{self, Pg};
use crate::streams::Redis;
use crate::supervision;

/// Runs the service until a signal stops it or the tree fails.
pub async fn run(
    plan: Plan,
    config: Config,
    config_path: Option<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    let service = Service::start_plan(plan, config, config_path).await?;
    serve(service).await
}

/// Runs a started service until a signal stops it, a part asks it to exit, or the tree fails.
pub async fn serve(service: Service) -> anyhow::Result<ExitCode> {
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let code = loop {
        tokio::select! {
            _ = terminate.recv() => break drain(&service, "SIGTERM", &mut terminate, &mut interrupt).await,
            _ = interrupt.recv() => break drain(&service, "SIGINT", &mut terminate, &mut interrupt).await,
            _ = hangup.recv() => reload(&service.runtime).await,
            reason = service.runtime.exit_requested() => {
                tracing::info!(reason, "finishing");
                break drain(&service, "exit requested", &mut terminate, &mut interrupt).await;
            }
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
        Self::start_plan(Plan::for_role(role, None), config, config_path).await
    }

    /// Connects to what `plan` needs, migrates, and starts its tree.
    pub async fn start_plan(
        plan: Plan,
        mut config: Config,
        config_path: Option<std::path::PathBuf>,
    ) -> anyhow::Result<Service> {
        plan.apply_overrides(&mut config);
        let metrics = crate::metrics::install();
        crate::metrics::describe();

        let redis = Redis::connect(&config.redis)
            .await
            .context("cannot start without Redis")?;
        let pg = if plan.needs_database() {
            Some(connect_database(&config).await?)
        } else {
            None
        };
        let hub = if plan.needs_hub() {
            Some(hub::Client::new(hub::options_from_config(&config.hub)).context("hub client")?)
        } else {
            None
        };
        let name = plan.name;
        let runtime = Runtime::new(plan, config, config_path, pg, redis, metrics.clone());
        if let Some(hub) = hub {
            runtime.set_hub(hub);
        }
        let tree = waypoint_actors::start_tree(supervision::ROOT, tree::root_spec(&runtime))
            .await
            .context("the supervision tree did not start")?;
        runtime.set_tree(tree.clone());
        tracing::info!(role = name, "waypoint started");

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
        Ok(mut config) => {
            runtime.plan().apply_overrides(&mut config);
            config
        }
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
    let hub = if changed.contains(&"hub") && runtime.plan().needs_hub() {
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
    let pg = if changed.contains(&"database") && runtime.plan().needs_database() {
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
        match tree::affected_subtrees(section) {
            tree::Affected::Restart(affected) => {
                for subtree in affected {
                    if !subtrees.contains(subtree) {
                        subtrees.push(subtree);
                    }
                }
            }
            tree::Affected::NextStart => {
                tracing::warn!(section, "this section applies at the next start");
            }
            tree::Affected::ReadWhereUsed => {
                tracing::info!(
                    section,
                    "applies from now on (backfill.concurrency at the next start)"
                );
            }
            tree::Affected::Nothing => {}
        }
    }
    let Some(tree) = runtime.tree() else {
        crate::pipeline::reload_spam(runtime).await;
        return;
    };
    let present = tree.snapshot();
    // A restarted `spam` worker loads the lists as it starts; otherwise SIGHUP reloads them
    // here.
    if !(subtrees.contains(&supervision::SPAM) && present.find(supervision::SPAM).is_some()) {
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
