//! What the actors of one `waypoint start` process share: the current configuration, the
//! PostgreSQL and Redis clients, the metrics handle, the tree handle once it exists, the spam
//! filter, and process-wide health facts (shutting down, hub reachability, shards needing
//! backfill, backfill progress). It imports nothing from the parts that use it.
//!
//! Actors read the configuration and clients from here at every (re)start, so a SIGHUP reload
//! that swaps them takes effect when the affected subtrees restart.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::SystemTime;

use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use waypoint_actors::Tree;

use crate::config::Config;
use crate::hub;
use crate::spam::SpamFilter;
use crate::store::Pg;
use crate::streams::Redis;

/// The part of the pipeline a process runs (`waypoint start [both|producer|consumer]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Hub → Redis and Redis → PostgreSQL
    Both,
    /// Hub → Redis (subscribers, publishers, gap repair)
    Producer,
    /// Redis → PostgreSQL, plus the APIs
    Consumer,
}

impl Role {
    /// The name `/ready` and the logs use.
    pub fn name(self) -> &'static str {
        match self {
            Role::Both => "both",
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        }
    }
}

/// What one process runs: the parts of the tree its command asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Hub → Redis: subscribers, publishers, repair.
    pub produce: bool,
    /// Redis → PostgreSQL: consumers and the reclaimer.
    pub persist: bool,
    /// Backfill workers, and how they run.
    pub backfill: Option<BackfillPlan>,
    /// The read APIs this process serves (each also needs its `enabled` setting).
    pub serves: Servers,
    /// What `/ready` and the logs call this process (`both`, `consumer`, `backfill`, ...).
    pub name: &'static str,
}

/// The read APIs a process serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Servers {
    /// The REST API (`rest.enabled`).
    pub rest: bool,
    /// The MCP server (`mcp.enabled`).
    pub mcp: bool,
    /// `mcp serve --bind`: replaces `mcp.bind_address` and `mcp.port`, also after a reload.
    pub mcp_bind: Option<std::net::SocketAddr>,
}

impl Servers {
    pub fn any(self) -> bool {
        self.rest || self.mcp
    }
}

/// How a process runs its backfill workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillPlan {
    /// Jobs worked on at once (`--concurrency`, `BACKFILL_CONCURRENCY`, `backfill.concurrency`).
    pub concurrency: usize,
    /// Stop the process once the queue is empty and nothing ran for this long
    /// (`--exit-on-complete`, `--idle-timeout`).
    pub exit_when_idle: Option<std::time::Duration>,
    /// Queue every registered FID once per database (`start --backfill`).
    pub queue_everything_once: bool,
}

impl Plan {
    /// What `waypoint start <role>` runs, with backfill workers when asked.
    pub fn for_role(role: Role, backfill: Option<BackfillPlan>) -> Plan {
        Plan {
            produce: matches!(role, Role::Both | Role::Producer),
            persist: matches!(role, Role::Both | Role::Consumer),
            backfill,
            // The APIs come with the database side, as the product documents.
            serves: Servers {
                rest: matches!(role, Role::Both | Role::Consumer),
                mcp: matches!(role, Role::Both | Role::Consumer),
                mcp_bind: None,
            },
            name: role.name(),
        }
    }

    /// The MCP server alone (`waypoint mcp serve [--bind ADDR:PORT]`).
    pub fn mcp_only(bind: Option<std::net::SocketAddr>) -> Plan {
        Plan {
            produce: false,
            persist: false,
            backfill: None,
            serves: Servers {
                rest: false,
                mcp: true,
                mcp_bind: bind,
            },
            name: "mcp",
        }
    }

    /// Applies what the command line asked for over the configuration (at start and after
    /// each reload).
    pub fn apply_overrides(&self, config: &mut Config) {
        if let Some(bind) = self.serves.mcp_bind {
            config.mcp.bind_address = bind.ip();
            config.mcp.port = bind.port();
        }
    }

    /// Backfill workers alone (`waypoint backfill ...`).
    pub fn backfill_only(backfill: BackfillPlan) -> Plan {
        Plan {
            produce: false,
            persist: false,
            backfill: Some(backfill),
            serves: Servers::default(),
            name: "backfill",
        }
    }

    /// Whether the process writes to or reads from PostgreSQL.
    pub fn needs_database(&self) -> bool {
        self.persist || self.backfill.is_some() || self.serves.any()
    }

    /// Whether the process calls the hub.
    pub fn needs_hub(&self) -> bool {
        self.produce || self.backfill.is_some()
    }
}

/// What the backfill of this process reports, for `/ready` and the logs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackfillStatus {
    /// Jobs are queued or in progress (in this process or another).
    pub running: bool,
    /// FIDs completed since the queue's books began (a FID queued again and completed again
    /// counts twice), including those the running jobs finished already.
    pub fids_done: u64,
    /// `fids_done` plus the FIDs queued, in progress or failed.
    pub fids_total: u64,
    /// FIDs whose jobs ended in the failed list.
    pub fids_failed: u64,
    pub jobs_queued: u64,
    pub jobs_in_progress: u64,
    pub jobs_failed: u64,
    /// Rates over the last minutes, from the queue's books (every worker process).
    pub fids_per_second: f64,
    pub messages_per_second: f64,
    /// Seconds until the FIDs queued now are done, at the current rate.
    pub eta_seconds: Option<u64>,
}

/// Cheap-to-clone handle on the shared state of a running service.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    plan: Plan,
    config_path: Option<std::path::PathBuf>,
    config: RwLock<Arc<Config>>,
    pg: RwLock<Option<Pg>>,
    redis: RwLock<Redis>,
    hub: RwLock<Option<hub::Client>>,
    metrics: PrometheusHandle,
    tree: OnceLock<Tree>,
    shutting_down: AtomicBool,
    hub_health: RwLock<HubHealth>,
    spam: Arc<SpamFilter>,
    instance: String,
    /// Test fault injection: stream types whose next consumer batch panics after it was
    /// applied and before it is acknowledged.
    injected_panics: std::sync::Mutex<Vec<crate::streams::StreamType>>,
    /// Hub-to-row lag of every applied entry, in milliseconds, when a benchmark asked for it.
    lag_samples: OnceLock<std::sync::Mutex<Vec<u32>>>,
    shards: RwLock<BTreeMap<u32, ShardHealth>>,
    backfill: RwLock<Option<BackfillStatus>>,
    /// Set when a part asks the process to finish (a backfill that ran out of work).
    exit: tokio::sync::watch::Sender<Option<String>>,
}

/// Last known reachability of the hub.
#[derive(Debug, Clone, Serialize)]
pub struct HubHealth {
    pub reachable: bool,
    pub checked_at: Option<SystemTime>,
    pub error: Option<String>,
    pub version: Option<String>,
}

/// What a subscriber reports about its shard.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShardHealth {
    /// Last hub event id whose effects are durable in Redis.
    pub cursor: Option<u64>,
    /// Set when the cursor fell behind the hub's retention; the backfill command consumes it.
    pub backfill_needed: Option<String>,
}

impl Runtime {
    /// Shared state for a process running `plan`.
    pub fn new(
        plan: Plan,
        config: Config,
        config_path: Option<std::path::PathBuf>,
        pg: Option<Pg>,
        redis: Redis,
        metrics: PrometheusHandle,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                plan,
                config_path,
                config: RwLock::new(Arc::new(config)),
                pg: RwLock::new(pg),
                redis: RwLock::new(redis),
                hub: RwLock::new(None),
                metrics,
                tree: OnceLock::new(),
                shutting_down: AtomicBool::new(false),
                hub_health: RwLock::new(HubHealth {
                    reachable: false,
                    checked_at: None,
                    error: Some("not checked yet".into()),
                    version: None,
                }),
                shards: RwLock::new(BTreeMap::new()),
                backfill: RwLock::new(None),
                exit: tokio::sync::watch::Sender::new(None),
                spam: Arc::new(SpamFilter::default()),
                instance: instance_name(),
                injected_panics: std::sync::Mutex::new(Vec::new()),
                lag_samples: OnceLock::new(),
            }),
        }
    }

    /// What this process runs.
    pub fn plan(&self) -> &Plan {
        &self.inner.plan
    }

    /// Whether this process runs the hub → Redis side.
    pub fn produces(&self) -> bool {
        self.inner.plan.produce
    }

    /// Whether this process runs the Redis → PostgreSQL side.
    pub fn consumes(&self) -> bool {
        self.inner.plan.persist
    }

    /// Whether this process runs backfill workers.
    pub fn backfills(&self) -> bool {
        self.inner.plan.backfill.is_some()
    }

    /// The `--config` file, if one was given (SIGHUP reloads from it, else from
    /// `WAYPOINT_CONFIG`).
    pub fn config_path(&self) -> Option<&std::path::Path> {
        self.inner.config_path.as_deref()
    }

    /// The configuration in effect.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&read(&self.inner.config))
    }

    pub(crate) fn set_config(&self, config: Config) {
        *write(&self.inner.config) = Arc::new(config);
    }

    /// The PostgreSQL pool (absent in producer-only processes).
    pub fn pg(&self) -> Option<Pg> {
        read(&self.inner.pg).clone()
    }

    pub(crate) fn set_pg(&self, pg: Pg) {
        *write(&self.inner.pg) = Some(pg);
    }

    /// The Redis client.
    pub fn redis(&self) -> Redis {
        read(&self.inner.redis).clone()
    }

    pub(crate) fn set_redis(&self, redis: Redis) {
        *write(&self.inner.redis) = redis;
    }

    /// The hub client (producer processes).
    pub fn hub(&self) -> Option<hub::Client> {
        read(&self.inner.hub).clone()
    }

    pub(crate) fn set_hub(&self, hub: hub::Client) {
        *write(&self.inner.hub) = Some(hub);
    }

    /// The Prometheus exposition handle.
    pub fn metrics(&self) -> &PrometheusHandle {
        &self.inner.metrics
    }

    /// The supervision tree, once started.
    pub fn tree(&self) -> Option<&Tree> {
        self.inner.tree.get()
    }

    pub(crate) fn set_tree(&self, tree: Tree) {
        let _ = self.inner.tree.set(tree);
    }

    /// Whether a graceful shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    pub(crate) fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Last known hub reachability.
    pub fn hub_health(&self) -> HubHealth {
        read(&self.inner.hub_health).clone()
    }

    /// Records the outcome of a hub call made by anyone (discovery, subscribers, readiness).
    pub fn record_hub(&self, result: Result<Option<String>, String>) {
        let mut hub = write(&self.inner.hub_health);
        hub.checked_at = Some(SystemTime::now());
        match result {
            Ok(version) => {
                hub.reachable = true;
                hub.error = None;
                if version.is_some() {
                    hub.version = version;
                }
            }
            Err(error) => {
                hub.reachable = false;
                hub.error = Some(error);
            }
        }
    }

    /// The spam filter (empty, so off, until label lists are loaded).
    pub fn spam(&self) -> &Arc<SpamFilter> {
        &self.inner.spam
    }

    /// This process's name among consumers: `<host>-<pid>-<random>`, unique per process and
    /// stable across actor restarts (a restarted consumer finds its own pending entries).
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// Fault injection for tests: the next batch a consumer of `kind` applies makes it panic
    /// before acknowledging (so the batch is delivered again to the restarted actor).
    pub fn inject_consumer_panic(&self, kind: crate::streams::StreamType) {
        self.inner
            .injected_panics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(kind);
    }

    /// Takes an injected panic for `kind`, if one is pending.
    pub(crate) fn take_injected_panic(&self, kind: crate::streams::StreamType) -> bool {
        let mut pending = self
            .inner
            .injected_panics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match pending.iter().position(|pending| *pending == kind) {
            Some(index) => {
                pending.remove(index);
                true
            }
            None => false,
        }
    }

    /// Starts keeping every applied entry's lag (benchmarks; the histogram metric is always on).
    pub fn record_lag_samples(&self) {
        let _ = self
            .inner
            .lag_samples
            .set(std::sync::Mutex::new(Vec::new()));
    }

    /// Adds lag samples, when recording.
    pub(crate) fn add_lag_samples(&self, samples: impl IntoIterator<Item = u32>) {
        if let Some(store) = self.inner.lag_samples.get() {
            store
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .extend(samples);
        }
    }

    /// Takes the lag samples recorded so far (milliseconds).
    pub fn take_lag_samples(&self) -> Vec<u32> {
        self.inner
            .lag_samples
            .get()
            .map(|store| {
                std::mem::take(
                    &mut *store
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()),
                )
            })
            .unwrap_or_default()
    }

    /// Per-shard facts reported by subscribers and repair.
    pub fn shards(&self) -> BTreeMap<u32, ShardHealth> {
        read(&self.inner.shards).clone()
    }

    /// Updates what is known about a shard.
    pub fn update_shard(&self, shard: u32, update: impl FnOnce(&mut ShardHealth)) {
        update(write(&self.inner.shards).entry(shard).or_default());
    }

    /// Asks the process to drain and exit 0 (`backfill ... --exit-on-complete`).
    pub fn request_exit(&self, reason: &str) {
        self.inner.exit.send_if_modified(|exit| {
            if exit.is_some() {
                return false;
            }
            *exit = Some(reason.to_owned());
            true
        });
    }

    /// Resolves with the reason once a part asked the process to exit.
    pub async fn exit_requested(&self) -> String {
        let mut exit = self.inner.exit.subscribe();
        match exit.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            // The sender lives as long as the runtime.
            Err(_) => std::future::pending().await,
        }
    }

    /// The backfill's last report (None in processes without backfill workers).
    pub fn backfill_status(&self) -> Option<BackfillStatus> {
        read(&self.inner.backfill).clone()
    }

    /// Records the backfill's progress.
    pub fn set_backfill_status(&self, status: BackfillStatus) {
        *write(&self.inner.backfill) = Some(status);
    }
}

fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "waypoint".to_owned());
    let suffix: u32 = rand::random();
    format!("{host}-{}-{suffix:08x}", std::process::id())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
