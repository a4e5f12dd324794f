//! What the actors of one `waypoint start` process share: the current configuration, the
//! PostgreSQL and Redis clients, the metrics handle, the tree handle once it exists, and
//! process-wide health facts (shutting down, hub reachability, shards needing backfill).
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

use crate::cli::Role;
use crate::config::Config;
use crate::hub;
use crate::pipeline::spam::SpamFilter;
use crate::store::Pg;
use crate::streams::Redis;

/// Cheap-to-clone handle on the shared state of a running service.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    role: Role,
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
    /// Shared state for a process running `role`.
    pub fn new(
        role: Role,
        config: Config,
        config_path: Option<std::path::PathBuf>,
        pg: Option<Pg>,
        redis: Redis,
        metrics: PrometheusHandle,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                role,
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
                spam: Arc::new(SpamFilter::default()),
                instance: instance_name(),
                injected_panics: std::sync::Mutex::new(Vec::new()),
                lag_samples: OnceLock::new(),
            }),
        }
    }

    pub fn role(&self) -> Role {
        self.inner.role
    }

    /// Whether this process runs the hub → Redis side.
    pub fn produces(&self) -> bool {
        matches!(self.inner.role, Role::Both | Role::Producer)
    }

    /// Whether this process runs the Redis → PostgreSQL side.
    pub fn consumes(&self) -> bool {
        matches!(self.inner.role, Role::Both | Role::Consumer)
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
