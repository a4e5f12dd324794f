//! `waypoint devhub`: a local Snapchain node for tests, development and benchmarks.
//!
//! It builds a deterministic, realistic Farcaster history from a seed (signed messages,
//! on-chain events, fname proofs, with removes and overwrites), merges it through a store that
//! follows Snapchain's CRDT rules, logs the resulting events in blocks per shard, and serves
//! the whole HubService gRPC API over it with the node's semantics (see
//! `../shared/reference/snapchain-protocol.md` for the facts followed). Live messages can be
//! appended on a timer (`--live-rate`) or on demand (`DevHubHandle::append_live`), and faults
//! can be injected (see [`Faults`]).
//!
//! The store is the oracle: `dump_state` gives the [`ReplicaState`] a correct consumer of the
//! hub's history must end up with.
//!
//! Layout: `dataset` generates, `sign` hashes and signs, `store` merges and answers queries
//! (one store per data shard, as on the node), `log` keeps the per-shard event logs, `state`
//! ties them together, `server` is the gRPC service, `faults` lists what can go wrong.
//!
//! Choices where the reference is silent:
//! - Time. Message timestamps of the history are fixed (180 days ending 2025-06-01) so that a
//!   seed always gives the same hashes. History blocks are stamped one second apart, ending
//!   at build time, so GetInfo's `block_delay` looks like a node that is caught up. Live
//!   messages continue the history's clock one second per block (deterministic for tests) or,
//!   with `live_wall_clock` (the CLI), carry the current time.
//! - Blocks. Every shard's chain starts at block 1,000,000; history blocks hold 1 to 250
//!   items (3% are empty). A live round commits one block per shard, empty or not.
//! - Subscribe listens to the live broadcast before replaying, so it has no switchover gap
//!   (the node has one); the node's slow-subscriber behaviour (skip on lag) is kept.
//! - Fname proofs are mirrored to every shard, as the node's mempool routes them; hence
//!   GetUserNameProofsByFid answers one copy per shard and MERGE_USERNAME_PROOF appears on
//!   every shard.
//! - Cross-shard pages (GetEvents, by-parent, by-mention, by-target) use the node's JSON array
//!   of per-shard tokens, including its quirk: a shard whose entry is null starts over.
//! - Faults: a prune takes the oldest message of one of a fid's sets, a revoke any message
//!   (without a SIGNER REMOVE event); a MERGE_FAILURE re-submits a stored message
//!   (`bad_request.duplicate`). No ENS proofs, LEND_STORAGE or gasless keys are generated.

mod dataset;
mod faults;
mod log;
mod server;
mod sign;
mod state;
mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use waypoint_proto::FarcasterNetwork;
use waypoint_proto::hub_service_server::HubServiceServer;

pub use faults::Faults;
pub use state::BuildStats;

use crate::hub::ids;
use crate::replica::ReplicaState;
use dataset::DatasetOptions;
use log::{BROADCAST_CAPACITY, LogEntry};
use state::HubState;

/// Where the dev hub listens by default: the node's gRPC port, on loopback.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3383";

/// The node version the dev hub reports in GetInfo (the Snapchain release it follows).
pub const DEFAULT_VERSION: &str = "0.14.2";

/// Most data shards a node allows.
pub const MAX_SHARDS: u32 = 64;

/// How long shutdown waits for the server to close its connections before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Most distinct request headers remembered for `received_headers`.
const MAX_REMEMBERED_HEADERS: usize = 1000;

/// Command line of `waypoint devhub`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevHubArgs {
    /// Address to serve gRPC on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Number of fids (1..=N) in the dataset.
    #[arg(long, default_value_t = 1000)]
    pub fids: u64,
    /// Seed of the dataset: the same seed gives the same messages.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Number of data shards.
    #[arg(long, default_value_t = 2)]
    pub shards: u32,
    /// Average number of messages per fid in the history.
    #[arg(long, default_value_t = 100)]
    pub messages_per_fid: u32,
    /// New messages per second once serving (0: only empty blocks).
    #[arg(long, default_value_t = 0.0)]
    pub live_rate: f64,
    /// Time between blocks, per shard, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub block_time_ms: u64,
    /// A FID with a history of exactly N messages (repeatable): `--heavy-fid 7=200000`.
    #[arg(long, value_name = "FID=N", value_parser = parse_heavy_fid)]
    pub heavy_fid: Vec<(u64, u32)>,
    /// Write the expected replica state (pretty JSON) here after the build and on shutdown.
    #[arg(long)]
    pub dump_state: Option<PathBuf>,

    /// Close each Subscribe stream after this many events.
    #[arg(long, help_heading = "Fault injection")]
    pub cut_subscribe_after: Option<u64>,
    /// End cut streams cleanly instead of with an UNAVAILABLE status.
    #[arg(long, help_heading = "Fault injection")]
    pub cut_cleanly: bool,
    /// Fraction of live events each subscriber silently misses.
    #[arg(long, default_value_t = 0.0, help_heading = "Fault injection")]
    pub drop_rate: f64,
    /// Send no live events (blocks included) while keeping streams open.
    #[arg(long, help_heading = "Fault injection")]
    pub stall_live: bool,
    /// Fraction of events sent twice to a subscriber.
    #[arg(long, default_value_t = 0.0, help_heading = "Fault injection")]
    pub duplicate_rate: f64,
    /// Fraction of live messages sent with a hash that does not match their data.
    #[arg(long, default_value_t = 0.0, help_heading = "Fault injection")]
    pub bad_hash_rate: f64,
    /// Fraction of live messages sent with a signature that does not verify.
    #[arg(long, default_value_t = 0.0, help_heading = "Fault injection")]
    pub bad_signature_rate: f64,
    /// Fraction of live messages sent with data_bytes that are not a MessageData.
    #[arg(long, default_value_t = 0.0, help_heading = "Fault injection")]
    pub undecodable_rate: f64,
    /// Fraction of live steps that prune a stored message.
    #[arg(long, default_value_t = 0.0, help_heading = "Fault injection")]
    pub prune_rate: f64,
    /// Fraction of live steps that revoke a stored message.
    #[arg(long, default_value_t = 0.0, help_heading = "Fault injection")]
    pub revoke_rate: f64,
    /// Fraction of live steps that log a MERGE_FAILURE.
    #[arg(long, default_value_t = 0.0, help_heading = "Fault injection")]
    pub merge_failure_rate: f64,
    /// Fraction of live steps that merge a LINK_COMPACT_STATE.
    #[arg(long, default_value_t = 0.0, help_heading = "Fault injection")]
    pub compact_state_rate: f64,
    /// Keep only the newest N blocks of each shard's event log.
    #[arg(long, help_heading = "Fault injection")]
    pub event_retention_blocks: Option<u64>,
    /// Per-FID reads of these FIDs answer UNAVAILABLE.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "FID,...",
        help_heading = "Fault injection"
    )]
    pub unavailable_fids: Vec<u64>,
    /// Per-FID reads of these FIDs answer NOT_FOUND.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "FID,...",
        help_heading = "Fault injection"
    )]
    pub not_found_fids: Vec<u64>,
    /// Refuse requests beyond N per second with RESOURCE_EXHAUSTED (a hosted hub's limit).
    #[arg(long, value_name = "N", help_heading = "Fault injection")]
    pub rate_limit: Option<u32>,
}

impl DevHubArgs {
    /// The faults these flags ask for.
    pub fn faults(&self) -> Faults {
        Faults {
            cut_subscribe_after: self.cut_subscribe_after,
            cut_cleanly: self.cut_cleanly,
            drop_rate: self.drop_rate,
            stall_live: self.stall_live,
            duplicate_rate: self.duplicate_rate,
            bad_hash_rate: self.bad_hash_rate,
            bad_signature_rate: self.bad_signature_rate,
            undecodable_rate: self.undecodable_rate,
            prune_rate: self.prune_rate,
            revoke_rate: self.revoke_rate,
            merge_failure_rate: self.merge_failure_rate,
            compact_state_rate: self.compact_state_rate,
            event_retention_blocks: self.event_retention_blocks,
            unavailable_fids: self.unavailable_fids.clone(),
            not_found_fids: self.not_found_fids.clone(),
            rate_limit_per_second: self.rate_limit,
        }
    }

    /// The hub these flags describe.
    pub fn options(&self) -> DevHubOptions {
        DevHubOptions {
            num_fids: self.fids,
            seed: self.seed,
            num_shards: self.shards,
            messages_per_fid: self.messages_per_fid,
            live_rate: self.live_rate,
            block_time: Some(Duration::from_millis(self.block_time_ms)),
            faults: self.faults(),
            live_wall_clock: true,
            heavy_fids: self.heavy_fid.clone(),
            ..DevHubOptions::default()
        }
    }
}

/// `FID=N` of `--heavy-fid`.
fn parse_heavy_fid(text: &str) -> Result<(u64, u32), String> {
    let (fid, messages) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not FID=N"))?;
    let fid: u64 = fid
        .trim()
        .parse()
        .map_err(|error| format!("fid {fid:?}: {error}"))?;
    let messages: u32 = messages
        .trim()
        .parse()
        .map_err(|error| format!("message count {messages:?}: {error}"))?;
    if fid == 0 {
        return Err("fid 0 does not exist: fids start at 1".into());
    }
    Ok((fid, messages))
}

/// What to build and how to run it.
#[derive(Debug, Clone)]
pub struct DevHubOptions {
    pub num_fids: u64,
    pub seed: u64,
    pub num_shards: u32,
    pub messages_per_fid: u32,
    /// New messages per second while serving (needs `block_time`).
    pub live_rate: f64,
    /// Commit a block on every shard this often while serving. None: blocks are committed only
    /// by `DevHubHandle::append_live`, which keeps event ids deterministic for tests.
    pub block_time: Option<Duration>,
    pub faults: Faults,
    /// Reported by GetInfo.
    pub version: String,
    /// Network of every message.
    pub network: FarcasterNetwork,
    /// Live messages carry the current time (realistic, for manual runs and benchmarks)
    /// instead of continuing the history's clock one second per block (the default: a seed
    /// and a sequence of `append_live` calls then give the same messages on every run).
    pub live_wall_clock: bool,
    /// FIDs with a history of exactly this many messages (before CRDT merges) instead of
    /// about `messages_per_fid`: accounts with a very large history.
    pub heavy_fids: Vec<(u64, u32)>,
}

impl Default for DevHubOptions {
    fn default() -> Self {
        DevHubOptions {
            num_fids: 1000,
            seed: 7,
            num_shards: 2,
            messages_per_fid: 100,
            live_rate: 0.0,
            block_time: None,
            faults: Faults::default(),
            version: DEFAULT_VERSION.to_string(),
            network: FarcasterNetwork::Mainnet,
            live_wall_clock: false,
            heavy_fids: Vec::new(),
        }
    }
}

impl DevHubOptions {
    fn validate(&self) -> Result<(), DevHubError> {
        let invalid =
            |field: &'static str, value: String, reason: &str| DevHubError::InvalidOption {
                field,
                value,
                reason: reason.to_string(),
            };
        if self.num_shards == 0 || self.num_shards > MAX_SHARDS {
            return Err(invalid(
                "shards",
                self.num_shards.to_string(),
                "must be between 1 and 64",
            ));
        }
        if self.num_fids > u64::from(u32::MAX) {
            return Err(invalid(
                "fids",
                self.num_fids.to_string(),
                "fids must fit in 32 bits",
            ));
        }
        if let Some((fid, _)) = self
            .heavy_fids
            .iter()
            .find(|(fid, _)| *fid == 0 || *fid > self.num_fids)
        {
            return Err(invalid(
                "heavy_fids",
                fid.to_string(),
                "must be one of the dataset's fids (1 to --fids)",
            ));
        }
        if !self.live_rate.is_finite() || self.live_rate < 0.0 {
            return Err(invalid(
                "live_rate",
                self.live_rate.to_string(),
                "must be a non-negative number",
            ));
        }
        if self.block_time.is_some_and(|time| time.is_zero()) {
            return Err(invalid(
                "block_time_ms",
                "0".to_string(),
                "must be positive",
            ));
        }
        if self.network == FarcasterNetwork::None {
            return Err(invalid(
                "network",
                "NONE".to_string(),
                "messages need a network",
            ));
        }
        self.faults
            .validate()
            .map_err(|reason| invalid("faults", format!("{:?}", self.faults), &reason))
    }
}

/// Errors of the dev hub.
#[derive(Debug, thiserror::Error)]
pub enum DevHubError {
    #[error("invalid dev hub option {field} = {value}: {reason}")]
    InvalidOption {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot write the state dump to {path}: {source}")]
    Dump {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl DevHubError {
    /// A port in use may free up; bad options and unwritable paths stay bad.
    pub fn is_retryable(&self) -> bool {
        matches!(self, DevHubError::Bind { .. })
    }
}

/// State shared by the gRPC service, the live task and the handle.
pub(crate) struct Shared {
    state: RwLock<HubState>,
    faults: RwLock<Faults>,
    pub(crate) senders: Vec<broadcast::Sender<Arc<LogEntry>>>,
    headers: Mutex<Vec<(String, String)>>,
    pub(crate) num_shards: u32,
    pub(crate) version: String,
    pub(crate) peer_id: String,
    pub(crate) seed: u64,
    /// Ends every Subscribe stream at shutdown (graceful shutdown waits for open streams).
    pub(crate) cancel: CancellationToken,
    pub(crate) next_subscriber: AtomicU64,
    /// Requests admitted in the current second, for `rate_limit_per_second`.
    rate_window: Mutex<(Instant, u32)>,
    /// Requests refused by the rate limit.
    rate_limited: AtomicU64,
}

impl Shared {
    pub(crate) fn read_state(&self) -> RwLockReadGuard<'_, HubState> {
        // A panic while holding the lock leaves the state as consistent as the step that
        // panicked; serving it is better than failing every call.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, HubState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn faults(&self) -> Faults {
        self.faults
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_faults(&self, faults: Faults) {
        let retention = faults.event_retention_blocks;
        *self.faults.write().unwrap_or_else(PoisonError::into_inner) = faults;
        self.write_state().apply_retention(retention);
    }

    /// Generates `num_messages` live steps and commits a block on every shard.
    fn append_live(&self, num_messages: usize) {
        let faults = self.faults();
        let mut state = self.write_state();
        for _ in 0..num_messages {
            state.live_step(&faults);
        }
        state.commit_round(ids::farcaster_now(), faults.event_retention_blocks);
    }

    /// Admits a request, or refuses it with RESOURCE_EXHAUSTED over the injected rate limit.
    fn admit(&self) -> Result<(), tonic::Status> {
        let Some(limit) = self.faults().rate_limit_per_second else {
            return Ok(());
        };
        let mut window = self
            .rate_window
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if now.duration_since(window.0) >= Duration::from_secs(1) {
            *window = (now, 0);
        }
        if window.1 >= limit {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Err(tonic::Status::resource_exhausted(format!(
                "rate limit of {limit} requests per second exceeded"
            )));
        }
        window.1 += 1;
        Ok(())
    }

    fn remember_headers(&self, metadata: &tonic::metadata::MetadataMap) {
        let mut headers = self.headers.lock().unwrap_or_else(PoisonError::into_inner);
        for pair in metadata.iter() {
            let tonic::metadata::KeyAndValueRef::Ascii(key, value) = pair else {
                continue;
            };
            let Ok(value) = value.to_str() else {
                continue;
            };
            let entry = (key.as_str().to_string(), value.to_string());
            if headers.len() < MAX_REMEMBERED_HEADERS && !headers.contains(&entry) {
                headers.push(entry);
            }
        }
    }

    fn dump_state(&self) -> ReplicaState {
        self.read_state().dump()
    }
}

/// A built hub, not yet serving.
pub struct DevHub {
    shared: Arc<Shared>,
    options: DevHubOptions,
    stats: BuildStats,
    build_time: Duration,
}

impl DevHub {
    /// Generates the dataset and merges it. CPU-bound (signing runs on every core): call it
    /// from `spawn_blocking` inside an async context if the build is large.
    pub fn build(options: DevHubOptions) -> Result<DevHub, DevHubError> {
        options.validate()?;
        let started = Instant::now();
        let senders: Vec<broadcast::Sender<Arc<LogEntry>>> = (0..options.num_shards)
            .map(|_| broadcast::channel(BROADCAST_CAPACITY).0)
            .collect();
        let dataset_options = DatasetOptions {
            seed: options.seed,
            num_fids: options.num_fids,
            num_shards: options.num_shards,
            messages_per_fid: options.messages_per_fid,
            network: options.network,
            wall_clock: options.live_wall_clock,
            heavy_fids: options.heavy_fids.clone(),
        };
        let (mut state, stats) = HubState::build(dataset_options, &senders, ids::farcaster_now());
        state.apply_retention(options.faults.event_retention_blocks);
        let shared = Arc::new(Shared {
            state: RwLock::new(state),
            faults: RwLock::new(options.faults.clone()),
            senders,
            headers: Mutex::new(Vec::new()),
            num_shards: options.num_shards,
            version: options.version.clone(),
            peer_id: format!("12D3KooWDevHub{:016x}", options.seed),
            seed: options.seed,
            cancel: CancellationToken::new(),
            next_subscriber: AtomicU64::new(0),
            rate_window: Mutex::new((Instant::now(), 0)),
            rate_limited: AtomicU64::new(0),
        });
        Ok(DevHub {
            shared,
            options,
            stats,
            build_time: started.elapsed(),
        })
    }

    /// Figures of the build.
    pub fn stats(&self) -> &BuildStats {
        &self.stats
    }

    /// How long the build took.
    pub fn build_time(&self) -> Duration {
        self.build_time
    }

    /// The replica a correct consumer of the history must hold.
    pub fn dump_state(&self) -> ReplicaState {
        self.shared.dump_state()
    }

    /// Serves gRPC on `listen` (port 0 picks a free port) until `DevHubHandle::shutdown`.
    pub async fn serve(self, listen: SocketAddr) -> Result<DevHubHandle, DevHubError> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| DevHubError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| DevHubError::Bind {
            addr: listen,
            source,
        })?;
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let recorder = self.shared.clone();
        let service = HubServiceServer::with_interceptor(
            server::HubServer::new(self.shared.clone()),
            move |request: tonic::Request<()>| {
                recorder.remember_headers(request.metadata());
                recorder.admit()?;
                Ok(request)
            },
        );
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = shutdown_rx.await;
                }),
        );
        let live = self.options.block_time.map(|block_time| {
            tokio::spawn(live_loop(
                self.shared.clone(),
                self.options.live_rate,
                block_time,
            ))
        });
        let state = self.shared.read_state();
        let last_ids: Vec<u64> = state.logs.iter().map(log::ShardLog::last_id).collect();
        drop(state);
        tracing::info!(
            %addr,
            fids = self.options.num_fids,
            shards = self.options.num_shards,
            seed = self.options.seed,
            messages = self.stats.num_messages,
            stored_messages = self.stats.num_stored_messages,
            onchain_events = self.stats.num_onchain_events,
            events = self.stats.num_events,
            blocks = self.stats.num_blocks,
            build_ms = self.build_time.as_millis() as u64,
            ?last_ids,
            "devhub listening"
        );
        Ok(DevHubHandle {
            shared: self.shared,
            addr,
            shutdown_tx: Some(shutdown_tx),
            server,
            live,
        })
    }
}

/// Commits a block on every shard each `block_time`, with about `rate` messages per second.
async fn live_loop(shared: Arc<Shared>, rate: f64, block_time: Duration) {
    let mut interval = tokio::time::interval(block_time);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the history's last block was just committed.
    interval.tick().await;
    let mut owed = 0.0f64;
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = interval.tick() => {}
        }
        owed += rate * block_time.as_secs_f64();
        let num_messages = owed.floor();
        owed -= num_messages;
        let worker = shared.clone();
        // Signing and merging are CPU work: keep them off the async workers.
        let committed =
            tokio::task::spawn_blocking(move || worker.append_live(num_messages as usize)).await;
        if let Err(error) = committed {
            tracing::error!(%error, "devhub live block failed");
            return;
        }
    }
}

/// A serving hub.
pub struct DevHubHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown_tx: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    live: Option<JoinHandle<()>>,
}

impl DevHubHandle {
    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL a gRPC client connects to, e.g. "http://127.0.0.1:3383".
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the faults in force (stream faults apply to open streams from their next
    /// event). Rates outside 0..=1 are clamped.
    pub fn set_faults(&self, faults: Faults) {
        let faults = clamp_rates(faults);
        if let Err(reason) = faults.validate() {
            tracing::warn!(reason, "devhub faults adjusted");
        }
        self.shared.set_faults(faults);
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// The replica a correct consumer of everything committed so far must hold.
    pub fn dump_state(&self) -> ReplicaState {
        self.shared.dump_state()
    }

    /// Generates `num_messages` live steps (deterministic for a seed and call sequence) and
    /// commits them now as one block per shard (empty blocks on shards that got nothing).
    pub fn append_live(&self, num_messages: usize) {
        self.shared.append_live(num_messages);
    }

    /// The newest event id of a data shard (0 for an unknown shard).
    pub fn last_event_id(&self, shard: u32) -> u64 {
        self.shared
            .read_state()
            .log(shard)
            .map_or(0, log::ShardLog::last_id)
    }

    /// The oldest event id a data shard still retains.
    pub fn oldest_event_id(&self, shard: u32) -> Option<u64> {
        self.shared
            .read_state()
            .log(shard)
            .and_then(log::ShardLog::oldest_id)
    }

    /// Number of data shards.
    pub fn num_shards(&self) -> u32 {
        self.shared.num_shards
    }

    /// Requests refused with RESOURCE_EXHAUSTED by the injected rate limit so far.
    pub fn rate_limited_requests(&self) -> u64 {
        self.shared.rate_limited.load(Ordering::Relaxed)
    }

    /// The distinct request metadata (ASCII headers) the server has seen, first seen first.
    pub fn received_headers(&self) -> Vec<(String, String)> {
        self.shared
            .headers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops serving: ends open Subscribe streams (clients see UNAVAILABLE), stops the live
    /// timer, and closes the listener so the port can be reused.
    pub async fn shutdown(mut self) {
        self.shared.cancel.cancel();
        if let Some(live) = self.live.take() {
            live.abort();
            let _ = live.await;
        }
        if let Some(shutdown_tx) = self.shutdown_tx.take() {
            let _ = shutdown_tx.send(());
        }
        let abort = self.server.abort_handle();
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "devhub server ended with an error"),
            Ok(Err(error)) => tracing::warn!(%error, "devhub server task failed"),
            Err(_) => {
                tracing::warn!(
                    "devhub connections still open after the grace period, dropping them"
                );
                abort.abort();
                let _ = (&mut self.server).await;
            }
        }
        tracing::info!(addr = %self.addr, "devhub stopped");
    }
}

impl Drop for DevHubHandle {
    /// A handle dropped without `shutdown` still stops the hub (without waiting for it).
    fn drop(&mut self) {
        self.shared.cancel.cancel();
        if let Some(live) = self.live.take() {
            live.abort();
        }
        if let Some(shutdown_tx) = self.shutdown_tx.take() {
            let _ = shutdown_tx.send(());
        }
    }
}

fn clamp_rates(mut faults: Faults) -> Faults {
    for rate in [
        &mut faults.drop_rate,
        &mut faults.duplicate_rate,
        &mut faults.bad_hash_rate,
        &mut faults.bad_signature_rate,
        &mut faults.undecodable_rate,
        &mut faults.prune_rate,
        &mut faults.revoke_rate,
        &mut faults.merge_failure_rate,
        &mut faults.compact_state_rate,
    ] {
        *rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
    }
    faults
}

/// Writes a replica state as pretty JSON (through a temporary file, so readers never see half
/// a dump).
pub fn write_dump(path: &Path, state: &ReplicaState) -> Result<(), DevHubError> {
    let dump_error = |source| DevHubError::Dump {
        path: path.to_path_buf(),
        source,
    };
    let json = serde_json::to_vec_pretty(state).map_err(|error| dump_error(error.into()))?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, json).map_err(dump_error)?;
    std::fs::rename(&temporary, path).map_err(dump_error)
}

/// `waypoint devhub`: builds the hub, writes the dump if asked, serves until `shutdown`
/// resolves, then writes the final dump.
pub async fn run(args: DevHubArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let options = args.options();
    let hub = tokio::task::spawn_blocking(move || DevHub::build(options)).await??;
    if let Some(path) = &args.dump_state {
        write_dump(path, &hub.dump_state())?;
        tracing::info!(path = %path.display(), "devhub state written");
    }
    let handle = hub.serve(args.listen).await?;
    shutdown.await;
    let shared = handle.shared.clone();
    handle.shutdown().await;
    if let Some(path) = &args.dump_state {
        write_dump(path, &shared.dump_state())?;
        tracing::info!(path = %path.display(), "devhub final state written");
    }
    Ok(())
}
