//! Service configuration: compiled-in defaults, then a TOML file, then environment variables
//! (the environment wins).
//!
//! This is the only module that reads the process environment (`RUST_LOG` aside, which the
//! logging module hands to `EnvFilter`). Every problem in the configuration is collected and
//! reported at once, each naming its key and where the value came from, so an operator fixes a
//! broken deployment in one round trip instead of one error per restart.
//!
//! Environment variables are `WAYPOINT_<SECTION>__<KEY>` (for example
//! `WAYPOINT_DATABASE__URL`), map entries one level deeper
//! (`WAYPOINT_HUB__HEADERS__X_API_KEY`), plus the unprefixed `PORT` and `BACKFILL_CONCURRENCY`
//! kept from the existing Waypoint. An empty variable counts as unset, so compose files can
//! pass `X=${X:-}` through. Lists accept `a,b` or `[a, b]`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use figment::Figment;
use figment::Profile;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};
use serde::{Deserialize, Deserializer, Serialize};

/// Prefix of the environment variables that set configuration keys.
pub const ENV_PREFIX: &str = "WAYPOINT_";
/// Environment variable naming the TOML file when `--config` is not given.
pub const ENV_CONFIG_PATH: &str = "WAYPOINT_CONFIG";
/// Separates section, key and map entry in environment variable names; a double underscore
/// because single underscores occur inside key names.
const ENV_SEPARATOR: &str = "__";
/// Unprefixed variables of the existing Waypoint, and the key each one sets. A prefixed
/// variable for the same key wins over these.
const COMPAT_ENV: &[(&str, &str)] = &[
    ("PORT", "health.port"),
    ("BACKFILL_CONCURRENCY", "backfill.concurrency"),
];
/// Keys whose value is a map with names chosen by the operator rather than a fixed struct.
const OPEN_MAPS: &[&str] = &["hub.headers"];
/// What masked secrets print as.
const MASK: &str = "****";
/// Upper bound of extraction retries after type errors. Each retry replaces at least one bad
/// value by its default, so this only guards against a value that cannot be repaired.
const MAX_TYPE_REPAIRS: usize = 256;

// ---------------------------------------------------------------------------------------------
// Defaults. Each one says why it has that value.
// ---------------------------------------------------------------------------------------------

/// Local PostgreSQL with trust auth: what `docker compose up` and a developer laptop provide.
pub const DEFAULT_DATABASE_URL: &str = "postgresql://postgres@127.0.0.1:5432/waypoint";
/// Same as the existing Waypoint; enough for one consumer per stream type plus the APIs
/// without exhausting PostgreSQL's default `max_connections` of 100.
pub const DEFAULT_DATABASE_MAX_CONNECTIONS: u32 = 20;
/// Same as the existing Waypoint; a multi-row apply batch finishes in well under this, so
/// hitting it means a stuck statement or an exhausted pool.
pub const DEFAULT_DATABASE_TIMEOUT_SECONDS: u64 = 60;
/// Long enough for a database container started alongside Waypoint to accept connections.
pub const DEFAULT_DATABASE_CONNECT_RETRY_SECONDS: u64 = 60;
/// The raw `messages` table doubles the write volume; only operators who want it pay for it.
pub const DEFAULT_DATABASE_STORE_MESSAGES: bool = false;

/// Local Redis on its standard port.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Namespaces every key so several deployments can share one Redis.
pub const DEFAULT_REDIS_PREFIX: &str = "waypoint";
/// A healthy Redis answers in well under a millisecond; five seconds notices a hung server
/// without failing commands during a short stall (the client default of 500 ms is too tight).
pub const DEFAULT_REDIS_RESPONSE_TIMEOUT_MS: u64 = 5_000;
/// Long enough for a Redis container started alongside Waypoint to accept connections.
pub const DEFAULT_REDIS_CONNECT_RETRY_SECONDS: u64 = 60;

/// The public Farcaster Snapchain endpoint (TLS), as in the existing Waypoint.
pub const DEFAULT_HUB_URL: &str = "snapchain.farcaster.xyz:3383";
/// Snapchain's gRPC port, used when a hub URL without a scheme names no port.
pub const DEFAULT_HUB_GRPC_PORT: u16 = 3383;
/// Unary hub calls answer in milliseconds; 30 s leaves room for large pages on a busy node.
pub const DEFAULT_HUB_REQUEST_TIMEOUT_SECONDS: u64 = 30;
/// A TCP + TLS handshake that takes longer than this will not succeed.
pub const DEFAULT_HUB_CONNECT_TIMEOUT_SECONDS: u64 = 10;
/// Pages of 1000 messages with large embeds exceed tonic's 4 MiB default.
pub const DEFAULT_HUB_MAX_MESSAGE_SIZE_MIB: u32 = 64;
/// Verifying hashes and signatures keeps a compromised or buggy hub from writing forged data.
pub const DEFAULT_HUB_VERIFY_MESSAGES: bool = true;
/// BLOCK_CONFIRMED arrives about once a second per shard, so 30 s of silence means the
/// stream is dead even though the server sends no keepalive.
pub const DEFAULT_HUB_SUBSCRIBE_IDLE_TIMEOUT_SECONDS: u64 = 30;
/// First retry soon enough to hide a blip.
pub const DEFAULT_HUB_RETRY_INITIAL_MS: u64 = 250;
/// Cap so a recovered hub is noticed within half a minute.
pub const DEFAULT_HUB_RETRY_MAX_MS: u64 = 30_000;
/// A unary call that failed five times in a row is reported rather than retried forever.
pub const DEFAULT_HUB_RETRY_MAX_ATTEMPTS: u32 = 5;
/// Unary calls in flight at once, across the process: enough for 50 backfill jobs and the
/// live path, few enough that a hosted hub does not see a burst of hundreds.
pub const DEFAULT_HUB_MAX_CONCURRENT_REQUESTS: u32 = 64;
/// Unary calls per second across the process. A FID's backfill takes about 13 calls, so this
/// allows about 75 FIDs a second; a hub that answers RESOURCE_EXHAUSTED or UNAVAILABLE slows
/// the process down below it until it answers again (0: no ceiling).
pub const DEFAULT_HUB_MAX_REQUESTS_PER_SECOND: u32 = 1_000;

/// The consumer group name of the existing Waypoint deployments.
pub const DEFAULT_STREAM_GROUP: &str = "waypoint";
/// One pipelined XADD round trip per 500 entries keeps Redis round trips off the hot path.
pub const DEFAULT_STREAM_PUBLISH_BATCH_SIZE: usize = 500;
/// Bounds the latency a partly filled batch adds at low traffic.
pub const DEFAULT_STREAM_PUBLISH_FLUSH_MS: u64 = 50;
/// Most entries per XREADGROUP and per database batch. A read returns what is waiting, so
/// batches stay small (low latency) while the consumer keeps up and grow while it catches up,
/// where the per-batch cost (commit, statement setup, liveness recompute) dominates:
/// `waypoint bench stream` applied about 9k messages/s at 500 and 24k at 5,000 on 2 cores.
pub const DEFAULT_STREAM_CONSUMER_BATCH_SIZE: usize = 5000;
/// One consumer per stream type keeps up with mainnet; scale out with more processes first.
pub const DEFAULT_STREAM_CONSUMERS_PER_TYPE: u32 = 1;
/// Short enough that a consumer notices shutdown quickly, long enough to avoid busy polling.
pub const DEFAULT_STREAM_BLOCK_MS: u64 = 2_000;
/// A read that returns only a few entries waits this long for more before applying them:
/// every database batch has a fixed cost (a commit, statement setup), so a few milliseconds of
/// latency buy far fewer, larger batches when messages trickle in at thousands per second.
pub const DEFAULT_STREAM_CONSUMER_LINGER_MS: u64 = 25;
/// About 100–250 MB of Redis memory per busy stream: minutes of consumer outage at mainnet
/// rates before publishers slow down.
pub const DEFAULT_STREAM_MAX_BACKLOG: u64 = 500_000;
/// A consumer that holds an entry for a minute without acknowledging it is presumed dead;
/// a batch apply takes far less.
pub const DEFAULT_STREAM_CLAIM_IDLE_MS: u64 = 60_000;
/// Half the claim idle time, so an orphaned entry waits at most 1.5× the idle time.
pub const DEFAULT_STREAM_RECLAIM_INTERVAL_MS: u64 = 30_000;
/// An entry that failed five deliveries will not succeed on the sixth; dead-letter it so it
/// never blocks the stream.
pub const DEFAULT_STREAM_MAX_DELIVERIES: u32 = 5;
/// Batches a publisher may have queued before subscribers wait: each is one subscriber read
/// (up to 256 events), so this bounds a publisher's queue to a few thousand events.
pub const DEFAULT_STREAM_MAILBOX_CAPACITY: usize = 16;
/// Persisting cursors once a second bounds replay after a crash to about a second of events.
pub const DEFAULT_STREAM_CURSOR_FLUSH_MS: u64 = 1_000;

/// Same as the existing Waypoint (`BACKFILL_CONCURRENCY`): jobs worked on at once, each one
/// FID at a time, so 50 FIDs in flight keep a hub busy without flooding it.
pub const DEFAULT_BACKFILL_CONCURRENCY: usize = 50;
/// Same as the existing Waypoint's `--batch-size`: FIDs per queue job.
pub const DEFAULT_BACKFILL_BATCH_SIZE: usize = 50;
/// Page size Shuttle uses for the per-FID `GetAll*` reads.
pub const DEFAULT_BACKFILL_PAGE_SIZE: u32 = 500;
/// A running job's lease is renewed every third of this, however long the job takes, so it
/// only has to outlast a stalled worker's silence: two minutes before another worker takes
/// over a job whose worker vanished.
pub const DEFAULT_BACKFILL_VISIBILITY_TIMEOUT_SECONDS: u64 = 120;
/// A job that failed five times goes to the failed list for an operator to look at.
pub const DEFAULT_BACKFILL_MAX_ATTEMPTS: u32 = 5;
/// A failed job waits this long before its next attempt, doubling per attempt (capped at five
/// minutes): a hub or database outage of a minute or two does not use up the attempts.
pub const DEFAULT_BACKFILL_RETRY_DELAY_MS: u64 = 5_000;
/// Messages written per database transaction, gathered across the FIDs in flight: as on the
/// live path, the per-transaction cost (locks, commit, liveness recompute) dominates small
/// batches.
pub const DEFAULT_BACKFILL_WRITE_BATCH_SIZE: usize = 5_000;

/// The REST API is part of the product and on by default.
pub const DEFAULT_REST_ENABLED: bool = true;
/// Containers need to listen on every interface to be reachable.
pub const DEFAULT_BIND_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
/// Port of the REST API.
pub const DEFAULT_REST_PORT: u16 = 8081;
/// The MCP server is part of the product and on by default, as in the existing Waypoint.
pub const DEFAULT_MCP_ENABLED: bool = true;
/// Port of the existing Waypoint's MCP server.
pub const DEFAULT_MCP_PORT: u16 = 8000;
/// MCP gives an assistant the run of the data: loopback only unless the operator opens it.
pub const DEFAULT_MCP_BIND_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Requests per second per client address before 429 (with a burst of twice that).
pub const DEFAULT_REST_RATE_LIMIT_PER_SECOND: u32 = 100;
/// Longest a REST request may take before 503.
pub const DEFAULT_REST_REQUEST_TIMEOUT_SECONDS: u64 = 30;
/// A query-layer hub call gives up after this and the database answers: an API caller should
/// not wait the backfill's 30 s.
pub const DEFAULT_QUERY_HUB_TIMEOUT_MS: u64 = 2_000;
/// Hub failures in a row before queries stop asking it.
pub const DEFAULT_QUERY_BREAKER_FAILURES: u32 = 3;
/// How long the hub is left alone after the breaker opened, before a probe; doubled after
/// each failed probe up to the maximum.
pub const DEFAULT_QUERY_BREAKER_OPEN_SECONDS: u64 = 5;
pub const DEFAULT_QUERY_BREAKER_MAX_OPEN_SECONDS: u64 = 60;
/// Loopback names only, rmcp's own default: the Host check protects against DNS rebinding.
/// Add the public name when serving behind a proxy.
pub const DEFAULT_MCP_ALLOWED_HOSTS: &[&str] = &["localhost", "127.0.0.1", "::1"];
/// Port of the existing Waypoint's health server (`PORT`).
pub const DEFAULT_HEALTH_PORT: u16 = 8080;

/// Human-readable logs on a terminal; production sets `json`.
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Text;
/// Start-up, reconnects and failures, without per-message noise.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// The public label lists are republished about daily; hourly picks up changes soon enough.
pub const DEFAULT_SPAM_REFRESH_INTERVAL_SECONDS: u64 = 3_600;

/// With the backoff below, ten restarts take about 45 s: a child that keeps crashing for that
/// long escalates to its parent instead of looping quietly.
pub const DEFAULT_SUPERVISOR_MAX_RESTARTS: u32 = 10;
/// Window in which `max_restarts` is counted.
pub const DEFAULT_SUPERVISOR_PERIOD_SECONDS: u64 = 60;
/// First restart almost at once: most crashes are transient.
pub const DEFAULT_SUPERVISOR_BACKOFF_INITIAL_MS: u64 = 100;
/// Cap so a recovered dependency is picked up within ten seconds.
pub const DEFAULT_SUPERVISOR_BACKOFF_MAX_MS: u64 = 10_000;
/// Enough to flush publishers, finish consumer batches and persist cursors; below the 30 s
/// most orchestrators wait before SIGKILL when their own grace period is raised a little.
pub const DEFAULT_SUPERVISOR_SHUTDOWN_GRACE_SECONDS: u64 = 30;

// ---------------------------------------------------------------------------------------------
// The configuration tree.
// ---------------------------------------------------------------------------------------------

/// The whole service configuration. Every section has defaults, so an empty file is valid.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// PostgreSQL connection and pool.
    pub database: DatabaseConfig,
    /// Redis connection and key namespace.
    pub redis: RedisConfig,
    /// The Snapchain node to follow.
    pub hub: HubConfig,
    /// Redis Streams pipeline tuning.
    pub stream: StreamConfig,
    /// Per-FID backfill.
    pub backfill: BackfillConfig,
    /// REST API server.
    pub rest: RestConfig,
    /// MCP server.
    pub mcp: McpConfig,
    /// The read query layer behind REST and MCP.
    pub query: QueryConfig,
    /// Health, readiness, metrics and admin server.
    pub health: HealthConfig,
    /// Log output.
    pub logging: LoggingConfig,
    /// Spam label filter.
    pub spam: SpamConfig,
    /// Restart policy of the supervision tree.
    pub supervisor: SupervisorConfig,
}

/// `[database]`: PostgreSQL connection and pool.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Connection URL, `postgres://` or `postgresql://`; TLS is not supported in this build.
    pub url: String,
    /// Maximum number of pooled connections.
    pub max_connections: u32,
    /// Per-statement timeout and the longest wait for a pooled connection, in seconds.
    pub timeout_seconds: u64,
    /// How long start-up keeps retrying an unreachable database before giving up, in seconds
    /// (0: try once).
    pub connect_retry_seconds: u64,
    /// Also keep every raw message in the `messages` table.
    pub store_messages: bool,
}

/// `[redis]`: Redis connection and key namespace.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Connection URL: `redis://[user:password@]host[:port][/db]` or `unix:///path`;
    /// `rediss://` (TLS) is not supported in this build.
    pub url: String,
    /// Prefix of every key this service writes: `<prefix>:<part>:...`.
    pub prefix: String,
    /// Response timeout of non-blocking commands, in milliseconds. Blocking reads use their
    /// own connection without a timeout.
    pub response_timeout_ms: u64,
    /// How long start-up keeps retrying an unreachable Redis before giving up, in seconds
    /// (0: try once).
    pub connect_retry_seconds: u64,
}

/// `[hub]`: the Snapchain node to follow.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// gRPC endpoint: `host:port` or `https://host[:port]` use TLS, `http://host:port` is
    /// plaintext. Without a scheme or port, port 3383 is used.
    pub url: String,
    /// Extra gRPC metadata sent on every call, such as an API key. Names are lowercased and
    /// `_` becomes `-` (`WAYPOINT_HUB__HEADERS__X_API_KEY` sends `x-api-key`).
    pub headers: BTreeMap<String, String>,
    /// Data shards to follow (1 and up); empty follows every data shard the hub reports.
    #[serde(deserialize_with = "de_list")]
    pub shard_indices: Vec<u32>,
    /// Where a shard without a stored cursor starts: the oldest event the hub retains, or now.
    pub start_from: StartFrom,
    /// Deadline of each unary call, in seconds.
    pub request_timeout_seconds: u64,
    /// Deadline of establishing a connection, in seconds.
    pub connect_timeout_seconds: u64,
    /// Largest gRPC message accepted, in MiB.
    pub max_message_size_mib: u32,
    /// Check every message's hash and signature before it enters Redis.
    pub verify_messages: bool,
    /// A subscription that delivers nothing (not even BLOCK_CONFIRMED) for this long is
    /// reconnected, in seconds.
    pub subscribe_idle_timeout_seconds: u64,
    /// First delay between retries of a failed call or reconnect, in milliseconds.
    pub retry_initial_ms: u64,
    /// Largest delay between retries, in milliseconds.
    pub retry_max_ms: u64,
    /// Attempts of one unary call before its error is returned.
    pub retry_max_attempts: u32,
    /// Unary calls in flight at once, across the process.
    pub max_concurrent_requests: u32,
    /// Unary calls per second across the process (0: no ceiling). RESOURCE_EXHAUSTED or
    /// UNAVAILABLE answers lower the rate; it climbs back while the hub answers.
    pub max_requests_per_second: u32,
}

/// Where a shard without a stored cursor starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum StartFrom {
    /// Replay from the oldest event the hub still retains (`from_id` 0).
    Earliest,
    /// Only events from now on; older history comes from backfill.
    Latest,
}

/// `[stream]`: Redis Streams pipeline tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Consumer group name.
    pub group: String,
    /// Entries per pipelined XADD batch.
    pub publish_batch_size: usize,
    /// Longest a partly filled publish batch waits, in milliseconds.
    pub publish_flush_ms: u64,
    /// Entries read per XREADGROUP and applied per database batch.
    pub consumer_batch_size: usize,
    /// Consumers per stream type in this process.
    pub consumers_per_type: u32,
    /// XREADGROUP BLOCK time, in milliseconds.
    pub block_ms: u64,
    /// When a read returns a small batch, wait this long (milliseconds) for more entries
    /// before applying it (0: apply at once).
    pub consumer_linger_ms: u64,
    /// Entries per stream beyond which publishers slow down until consumers catch up.
    pub max_backlog: u64,
    /// A pending entry idle for this long is claimed from its consumer, in milliseconds.
    pub claim_idle_ms: u64,
    /// How often the reclaimer looks for idle pending entries, in milliseconds.
    pub reclaim_interval_ms: u64,
    /// Deliveries of one entry before it moves to the dead-letter stream.
    pub max_deliveries: u32,
    /// Batches a publisher may have queued (each one subscriber read, up to 256 events)
    /// before subscribers wait: the backpressure bound between the hub and Redis.
    pub mailbox_capacity: usize,
    /// How often shard cursors are persisted, in milliseconds.
    pub cursor_flush_ms: u64,
}

/// `[backfill]`: per-FID backfill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackfillConfig {
    /// Jobs a backfill process works on at once, one FID at a time each
    /// (`BACKFILL_CONCURRENCY`, `--concurrency`).
    pub concurrency: usize,
    /// FIDs per queue job.
    pub batch_size: usize,
    /// Page size of the per-FID hub reads.
    pub page_size: u32,
    /// A job whose worker stopped renewing its lease for this long returns to the queue, in
    /// seconds (running jobs renew it every third of this).
    pub visibility_timeout_seconds: u64,
    /// Attempts of one job before it moves to the failed list.
    pub max_attempts: u32,
    /// Pause before a failed job's next attempt, in milliseconds; doubles per attempt, at
    /// most five minutes.
    pub retry_delay_ms: u64,
    /// Messages per database transaction, gathered across the FIDs in flight.
    pub write_batch_size: usize,
}

/// `[rest]`: REST API server.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestConfig {
    /// Serve the REST API.
    pub enabled: bool,
    /// Address to listen on.
    pub bind_address: IpAddr,
    /// Port to listen on.
    pub port: u16,
    /// When set, every `/api/v1` request needs `Authorization: Bearer <token>`.
    pub auth_token: Option<String>,
    /// Requests per second per client address (0 = no limit); over it, 429 with Retry-After.
    pub rate_limit_per_second: u32,
    /// Origins allowed by CORS (`*` for any); empty sends no CORS headers.
    #[serde(deserialize_with = "de_list")]
    pub cors_origins: Vec<String>,
    /// Compress responses (gzip) when the client accepts it.
    pub compression: bool,
    /// Longest a request may take before 503.
    pub request_timeout_seconds: u64,
}

/// Where queries go (`query.source`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourcePolicy {
    /// The hub; the database when the hub fails or its breaker is open.
    #[default]
    HubFirst,
    /// The database; the hub when the database fails.
    DbFirst,
    DbOnly,
    HubOnly,
}

impl SourcePolicy {
    pub fn name(self) -> &'static str {
        match self {
            SourcePolicy::HubFirst => "hub-first",
            SourcePolicy::DbFirst => "db-first",
            SourcePolicy::DbOnly => "db-only",
            SourcePolicy::HubOnly => "hub-only",
        }
    }
}

/// `[query]`: where the read APIs get their answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// `hub-first` (the hub; the database when the hub fails), `db-first`, `db-only` or
    /// `hub-only`.
    pub source: SourcePolicy,
    /// Deadline of one query-layer hub call.
    pub hub_timeout_ms: u64,
    /// Hub failures in a row before the circuit opens.
    pub breaker_failures: u32,
    /// Seconds the circuit stays open before the first probe.
    pub breaker_open_seconds: u64,
    /// Longest the circuit stays open between probes.
    pub breaker_max_open_seconds: u64,
}

/// `[mcp]`: MCP server (Streamable HTTP at `/mcp`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// Serve MCP.
    pub enabled: bool,
    /// Address to listen on.
    pub bind_address: IpAddr,
    /// Port to listen on.
    pub port: u16,
    /// Host header values accepted (DNS-rebinding protection); empty disables the check,
    /// which is only safe behind a proxy that checks Host itself.
    #[serde(deserialize_with = "de_list")]
    pub allowed_hosts: Vec<String>,
}

/// `[health]`: health, readiness, metrics and admin server.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Address to listen on.
    pub bind_address: IpAddr,
    /// Port to listen on (`PORT`).
    pub port: u16,
    /// Bearer token for `/admin`; the admin endpoints are disabled when absent.
    pub admin_token: Option<String>,
}

/// `[logging]`: log output (always stderr).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// Filter in `RUST_LOG` syntax (`info`, `waypoint=debug,info`); `RUST_LOG` wins when set.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[spam]`: spam label filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpamConfig {
    /// Label files (JSONL) as file paths or `http(s)://` URLs; empty disables the filter.
    #[serde(deserialize_with = "de_list")]
    pub sources: Vec<String>,
    /// How often the sources are reloaded, in seconds (also on SIGHUP).
    pub refresh_interval_seconds: u64,
}

/// `[supervisor]`: restart policy of the supervision tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorConfig {
    /// Restarts allowed within `period_seconds` before a supervisor gives up and fails to its
    /// parent.
    pub max_restarts: u32,
    /// Window in which restarts are counted, in seconds.
    pub period_seconds: u64,
    /// First delay before restarting a crashed child, in milliseconds.
    pub backoff_initial_ms: u64,
    /// Largest delay before restarting a crashed child, in milliseconds.
    pub backoff_max_ms: u64,
    /// Time allowed for a graceful shutdown before remaining work is abandoned, in seconds.
    pub shutdown_grace_seconds: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_DATABASE_URL.to_owned(),
            max_connections: DEFAULT_DATABASE_MAX_CONNECTIONS,
            timeout_seconds: DEFAULT_DATABASE_TIMEOUT_SECONDS,
            connect_retry_seconds: DEFAULT_DATABASE_CONNECT_RETRY_SECONDS,
            store_messages: DEFAULT_DATABASE_STORE_MESSAGES,
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_REDIS_URL.to_owned(),
            prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            response_timeout_ms: DEFAULT_REDIS_RESPONSE_TIMEOUT_MS,
            connect_retry_seconds: DEFAULT_REDIS_CONNECT_RETRY_SECONDS,
        }
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_HUB_URL.to_owned(),
            headers: BTreeMap::new(),
            shard_indices: Vec::new(),
            start_from: StartFrom::Earliest,
            request_timeout_seconds: DEFAULT_HUB_REQUEST_TIMEOUT_SECONDS,
            connect_timeout_seconds: DEFAULT_HUB_CONNECT_TIMEOUT_SECONDS,
            max_message_size_mib: DEFAULT_HUB_MAX_MESSAGE_SIZE_MIB,
            verify_messages: DEFAULT_HUB_VERIFY_MESSAGES,
            subscribe_idle_timeout_seconds: DEFAULT_HUB_SUBSCRIBE_IDLE_TIMEOUT_SECONDS,
            retry_initial_ms: DEFAULT_HUB_RETRY_INITIAL_MS,
            retry_max_ms: DEFAULT_HUB_RETRY_MAX_MS,
            retry_max_attempts: DEFAULT_HUB_RETRY_MAX_ATTEMPTS,
            max_concurrent_requests: DEFAULT_HUB_MAX_CONCURRENT_REQUESTS,
            max_requests_per_second: DEFAULT_HUB_MAX_REQUESTS_PER_SECOND,
        }
    }
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            group: DEFAULT_STREAM_GROUP.to_owned(),
            publish_batch_size: DEFAULT_STREAM_PUBLISH_BATCH_SIZE,
            publish_flush_ms: DEFAULT_STREAM_PUBLISH_FLUSH_MS,
            consumer_batch_size: DEFAULT_STREAM_CONSUMER_BATCH_SIZE,
            consumers_per_type: DEFAULT_STREAM_CONSUMERS_PER_TYPE,
            block_ms: DEFAULT_STREAM_BLOCK_MS,
            consumer_linger_ms: DEFAULT_STREAM_CONSUMER_LINGER_MS,
            max_backlog: DEFAULT_STREAM_MAX_BACKLOG,
            claim_idle_ms: DEFAULT_STREAM_CLAIM_IDLE_MS,
            reclaim_interval_ms: DEFAULT_STREAM_RECLAIM_INTERVAL_MS,
            max_deliveries: DEFAULT_STREAM_MAX_DELIVERIES,
            mailbox_capacity: DEFAULT_STREAM_MAILBOX_CAPACITY,
            cursor_flush_ms: DEFAULT_STREAM_CURSOR_FLUSH_MS,
        }
    }
}

impl Default for BackfillConfig {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_BACKFILL_CONCURRENCY,
            batch_size: DEFAULT_BACKFILL_BATCH_SIZE,
            page_size: DEFAULT_BACKFILL_PAGE_SIZE,
            visibility_timeout_seconds: DEFAULT_BACKFILL_VISIBILITY_TIMEOUT_SECONDS,
            max_attempts: DEFAULT_BACKFILL_MAX_ATTEMPTS,
            retry_delay_ms: DEFAULT_BACKFILL_RETRY_DELAY_MS,
            write_batch_size: DEFAULT_BACKFILL_WRITE_BATCH_SIZE,
        }
    }
}

impl Default for RestConfig {
    fn default() -> Self {
        Self {
            enabled: DEFAULT_REST_ENABLED,
            bind_address: DEFAULT_BIND_ADDRESS,
            port: DEFAULT_REST_PORT,
            auth_token: None,
            rate_limit_per_second: DEFAULT_REST_RATE_LIMIT_PER_SECOND,
            cors_origins: Vec::new(),
            compression: true,
            request_timeout_seconds: DEFAULT_REST_REQUEST_TIMEOUT_SECONDS,
        }
    }
}

impl fmt::Debug for RestConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestConfig")
            .field("enabled", &self.enabled)
            .field("bind_address", &self.bind_address)
            .field("port", &self.port)
            .field("auth_token", &self.auth_token.as_ref().map(|_| MASK))
            .field("rate_limit_per_second", &self.rate_limit_per_second)
            .field("cors_origins", &self.cors_origins)
            .field("compression", &self.compression)
            .field("request_timeout_seconds", &self.request_timeout_seconds)
            .finish()
    }
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            source: SourcePolicy::default(),
            hub_timeout_ms: DEFAULT_QUERY_HUB_TIMEOUT_MS,
            breaker_failures: DEFAULT_QUERY_BREAKER_FAILURES,
            breaker_open_seconds: DEFAULT_QUERY_BREAKER_OPEN_SECONDS,
            breaker_max_open_seconds: DEFAULT_QUERY_BREAKER_MAX_OPEN_SECONDS,
        }
    }
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            enabled: DEFAULT_MCP_ENABLED,
            bind_address: DEFAULT_MCP_BIND_ADDRESS,
            port: DEFAULT_MCP_PORT,
            allowed_hosts: DEFAULT_MCP_ALLOWED_HOSTS
                .iter()
                .map(|host| (*host).to_owned())
                .collect(),
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            bind_address: DEFAULT_BIND_ADDRESS,
            port: DEFAULT_HEALTH_PORT,
            admin_token: None,
        }
    }
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            format: DEFAULT_LOG_FORMAT,
            level: DEFAULT_LOG_LEVEL.to_owned(),
        }
    }
}

impl Default for SpamConfig {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            refresh_interval_seconds: DEFAULT_SPAM_REFRESH_INTERVAL_SECONDS,
        }
    }
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            max_restarts: DEFAULT_SUPERVISOR_MAX_RESTARTS,
            period_seconds: DEFAULT_SUPERVISOR_PERIOD_SECONDS,
            backoff_initial_ms: DEFAULT_SUPERVISOR_BACKOFF_INITIAL_MS,
            backoff_max_ms: DEFAULT_SUPERVISOR_BACKOFF_MAX_MS,
            shutdown_grace_seconds: DEFAULT_SUPERVISOR_SHUTDOWN_GRACE_SECONDS,
        }
    }
}

// Debug impls that would print secrets are written by hand: configs end up in logs.

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &mask_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("timeout_seconds", &self.timeout_seconds)
            .field("connect_retry_seconds", &self.connect_retry_seconds)
            .field("store_messages", &self.store_messages)
            .finish()
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &mask_url(&self.url))
            .field("prefix", &self.prefix)
            .field("response_timeout_ms", &self.response_timeout_ms)
            .field("connect_retry_seconds", &self.connect_retry_seconds)
            .finish()
    }
}

impl fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: BTreeMap<&str, &str> = self
            .headers
            .keys()
            .map(|name| (name.as_str(), MASK))
            .collect();
        f.debug_struct("HubConfig")
            .field("url", &self.url)
            .field("headers", &headers)
            .field("shard_indices", &self.shard_indices)
            .field("start_from", &self.start_from)
            .field("request_timeout_seconds", &self.request_timeout_seconds)
            .field("connect_timeout_seconds", &self.connect_timeout_seconds)
            .field("max_message_size_mib", &self.max_message_size_mib)
            .field("verify_messages", &self.verify_messages)
            .field(
                "subscribe_idle_timeout_seconds",
                &self.subscribe_idle_timeout_seconds,
            )
            .field("retry_initial_ms", &self.retry_initial_ms)
            .field("retry_max_ms", &self.retry_max_ms)
            .field("retry_max_attempts", &self.retry_max_attempts)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("max_requests_per_second", &self.max_requests_per_second)
            .finish()
    }
}

impl fmt::Debug for HealthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthConfig")
            .field("bind_address", &self.bind_address)
            .field("port", &self.port)
            .field("admin_token", &self.admin_token.as_ref().map(|_| MASK))
            .finish()
    }
}

impl StartFrom {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Earliest => "earliest",
            Self::Latest => "latest",
        }
    }
}

impl FromStr for StartFrom {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "earliest" => Ok(Self::Earliest),
            "latest" => Ok(Self::Latest),
            other => Err(format!(
                "unknown value {other:?}: expected \"earliest\" or \"latest\""
            )),
        }
    }
}

impl TryFrom<String> for StartFrom {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl LogFormat {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown value {other:?}: expected \"text\" or \"json\""
            )),
        }
    }
}

impl TryFrom<String> for LogFormat {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

/// Deserializes a list given either as a sequence or as one comma-separated string
/// (`"1,2"`, convenient in environment variables), or as a single scalar.
fn de_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + FromStr,
    T::Err: fmt::Display,
{
    struct ListVisitor<T>(std::marker::PhantomData<T>);

    impl<T> ListVisitor<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        fn parse<E: serde::de::Error>(text: &str) -> Result<Vec<T>, E> {
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| {
                    item.parse::<T>()
                        .map_err(|error| E::custom(format!("invalid list item {item:?}: {error}")))
                })
                .collect()
        }
    }

    impl<'de, T> serde::de::Visitor<'de> for ListVisitor<T>
    where
        T: Deserialize<'de> + FromStr,
        T::Err: fmt::Display,
    {
        type Value = Vec<T>;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a list or a comma-separated string")
        }

        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
            Self::parse(value)
        }

        fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Self::Value, E> {
            Self::parse(&value.to_string())
        }

        fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Self::Value, E> {
            Self::parse(&value.to_string())
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            Ok(items)
        }
    }

    deserializer.deserialize_any(ListVisitor(std::marker::PhantomData))
}

// ---------------------------------------------------------------------------------------------
// Derived values other modules use.
// ---------------------------------------------------------------------------------------------

/// The hub endpoint resolved from `hub.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubEndpoint {
    /// `http(s)://host:port`, ready for a tonic `Endpoint`.
    pub uri: String,
    /// Whether the connection uses TLS.
    pub tls: bool,
    /// Host name or address (IPv6 in brackets), also the TLS server name.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl HubConfig {
    /// Resolves `url`: no scheme or `https://` → TLS, `http://` → plaintext.
    pub fn endpoint(&self) -> Result<HubEndpoint, String> {
        let raw = self.url.trim();
        if raw.is_empty() {
            return Err("must not be empty".to_owned());
        }
        let (parsed, tls, explicit_scheme) = if raw.contains("://") {
            let parsed = url::Url::parse(raw).map_err(|error| format!("{raw:?}: {error}"))?;
            let tls = match parsed.scheme() {
                "https" => true,
                "http" => false,
                other => {
                    return Err(format!(
                        "{raw:?}: unsupported scheme {other:?}, expected http or https"
                    ));
                }
            };
            (parsed, tls, true)
        } else {
            let parsed = url::Url::parse(&format!("https://{raw}"))
                .map_err(|error| format!("{raw:?}: {error}"))?;
            (parsed, true, false)
        };
        let host = parsed
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| format!("{raw:?}: no host"))?
            .to_owned();
        if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
            return Err(format!("{raw:?}: a hub URL has no path or query"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(format!(
                "{}: credentials go in hub.headers, not in the URL",
                mask_url(raw)
            ));
        }
        let port = match (parsed.port(), explicit_scheme) {
            (Some(port), _) => port,
            (None, true) => parsed
                .port_or_known_default()
                .unwrap_or(DEFAULT_HUB_GRPC_PORT),
            (None, false) => DEFAULT_HUB_GRPC_PORT,
        };
        let scheme = if tls { "https" } else { "http" };
        Ok(HubEndpoint {
            uri: format!("{scheme}://{host}:{port}"),
            tls,
            host,
            port,
        })
    }

    /// The ceiling of requests per second, if there is one.
    pub fn request_rate_ceiling(&self) -> Option<f64> {
        (self.max_requests_per_second > 0).then(|| f64::from(self.max_requests_per_second))
    }

    /// Deadline of each unary call.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
    }

    /// Deadline of establishing a connection.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_seconds)
    }

    /// Largest gRPC message accepted, in bytes.
    pub fn max_message_size_bytes(&self) -> usize {
        usize::try_from(self.max_message_size_mib)
            .unwrap_or(usize::MAX)
            .saturating_mul(1024 * 1024)
    }

    /// Silence after which a subscription is reconnected.
    pub fn subscribe_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.subscribe_idle_timeout_seconds)
    }
}

impl DatabaseConfig {
    /// Parses `url` into a driver configuration.
    pub fn pg_config(&self) -> Result<tokio_postgres::Config, String> {
        let scheme = self.url.split("://").next().unwrap_or_default();
        if !self.url.contains("://") || !matches!(scheme, "postgres" | "postgresql") {
            return Err(format!(
                "{}: expected a postgres:// or postgresql:// URL",
                mask_url(&self.url)
            ));
        }
        let config = tokio_postgres::Config::from_str(&self.url)
            .map_err(|error| format!("{}: {error}", mask_url(&self.url)))?;
        if config.get_hosts().is_empty() {
            return Err(format!("{}: no host", mask_url(&self.url)));
        }
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(format!(
                "{}: sslmode=require is not supported, this build has no TLS for PostgreSQL",
                mask_url(&self.url)
            ));
        }
        Ok(config)
    }

    /// Per-statement timeout and pool wait timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }

    /// How long start-up retries an unreachable database.
    pub fn connect_retry(&self) -> Duration {
        Duration::from_secs(self.connect_retry_seconds)
    }
}

impl RedisConfig {
    /// Checks `url` and opens a (not yet connected) client for it.
    pub fn client(&self) -> Result<redis::Client, String> {
        let parsed = url::Url::parse(&self.url)
            .map_err(|error| format!("{}: {error}", mask_url(&self.url)))?;
        match parsed.scheme() {
            "redis" | "redis+unix" | "unix" => {}
            "rediss" => {
                return Err(format!(
                    "{}: rediss:// (TLS) is not supported, this build has no TLS for Redis",
                    mask_url(&self.url)
                ));
            }
            other => {
                return Err(format!(
                    "{}: unsupported scheme {other:?}, expected redis://",
                    mask_url(&self.url)
                ));
            }
        }
        redis::Client::open(self.url.as_str())
            .map_err(|error| format!("{}: {error}", mask_url(&self.url)))
    }

    /// Response timeout of non-blocking commands.
    pub fn response_timeout(&self) -> Duration {
        Duration::from_millis(self.response_timeout_ms)
    }

    /// How long start-up retries an unreachable Redis.
    pub fn connect_retry(&self) -> Duration {
        Duration::from_secs(self.connect_retry_seconds)
    }
}

impl SupervisorConfig {
    /// Time allowed for a graceful shutdown.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}

/// Replaces the password of a URL (user info or a `password` query parameter) by `****`.
/// Text that is not a URL is returned unchanged.
pub fn mask_url(raw: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(raw) else {
        return raw.to_owned();
    };
    if parsed.password().is_some() {
        // Only fails for URLs that cannot have credentials, which then have no password.
        let _ = parsed.set_password(Some(MASK));
    }
    if parsed
        .query_pairs()
        .any(|(name, _)| name.eq_ignore_ascii_case("password"))
    {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if name.eq_ignore_ascii_case("password") {
                    MASK.to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

// ---------------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------------

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    /// The compiled-in default.
    Default,
    /// The TOML file at this path.
    File(PathBuf),
    /// This environment variable.
    Env(String),
}

impl fmt::Display for ValueSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Env(name) => write!(f, "env {name}"),
        }
    }
}

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key (`hub.request_timeout_seconds`), or `None` for a problem with a whole
    /// source (an unreadable file).
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
    /// Where the offending value came from.
    pub source: ValueSource,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{key}: {} (from {})", self.message, self.source),
            None => write!(f, "{} (from {})", self.message, self.source),
        }
    }
}

/// Every problem found while loading the configuration; displays one line per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The problems, in the order found: sources, unknown keys, types, values.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

// ---------------------------------------------------------------------------------------------
// Loading.
// ---------------------------------------------------------------------------------------------

impl Config {
    /// Loads defaults, then the TOML file (`path`, else `WAYPOINT_CONFIG`), then the process
    /// environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigErrors> {
        let env = std::env::vars_os().filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            Some((name, value.to_string_lossy().into_owned()))
        });
        Self::load_from(path, env)
    }

    /// Like [`Config::load`], with the environment given as name/value pairs instead of read
    /// from the process (for tests and SIGHUP reloads that must not race with `set_var`).
    pub fn load_from<I, K, V>(path: Option<&Path>, env: I) -> Result<Config, ConfigErrors>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let env: Vec<(String, String)> = env
            .into_iter()
            .map(|(name, value)| (name.into(), value.into()))
            .collect();
        let mut errors = Vec::new();
        let defaults = default_dict();

        let path = path.map(Path::to_path_buf).or_else(|| {
            env.iter()
                .find(|(name, value)| name == ENV_CONFIG_PATH && !value.trim().is_empty())
                .map(|(_, value)| PathBuf::from(value.trim()))
        });
        let mut file_dict = Dict::new();
        if let Some(path) = &path {
            file_dict = read_file(path, &mut errors);
            drop_unknown_keys(&mut file_dict, &defaults, "", &mut |key| {
                errors.push(ConfigError {
                    key: Some(key.to_owned()),
                    message: "unknown key".to_owned(),
                    source: ValueSource::File(path.clone()),
                })
            });
        }
        let (env_dict, env_names) = env_layer(&env, &defaults, &mut errors);
        let sources = Sources {
            file: path.map(|path| (path, file_dict.clone())),
            env: env_names,
        };

        let merged = Figment::from(Serialized::defaults(&defaults))
            .merge(Serialized::defaults(&file_dict))
            .merge(Serialized::defaults(&env_dict));
        let merged = match figment::Provider::data(&merged) {
            Ok(mut profiles) => profiles.remove(&Profile::Default).unwrap_or_default(),
            Err(error) => {
                // Merging plain dictionaries cannot fail; report it rather than panic.
                errors.push(ConfigError {
                    key: None,
                    message: format!("cannot merge configuration sources: {error}"),
                    source: ValueSource::Default,
                });
                return Err(ConfigErrors(errors));
            }
        };

        let Some(mut config) = extract(merged, &defaults, &sources, &mut errors) else {
            return Err(ConfigErrors(errors));
        };
        config.finish(&sources, &mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// The effective configuration as TOML, with passwords in URLs (database, Redis, spam
    /// sources), hub header values and the admin token replaced by `****`.
    pub fn masked(&self) -> toml::Value {
        // Every field is a string, number, bool, list or map: serializing to TOML cannot fail.
        toml::Value::try_from(self.masked_copy())
            .unwrap_or_else(|error| toml::Value::String(format!("unprintable: {error}")))
    }

    /// A copy with every secret replaced by `****`.
    fn masked_copy(&self) -> Config {
        let mut masked = self.clone();
        masked.database.url = mask_url(&masked.database.url);
        masked.redis.url = mask_url(&masked.redis.url);
        for source in &mut masked.spam.sources {
            *source = mask_url(source);
        }
        for value in masked.hub.headers.values_mut() {
            *value = MASK.to_owned();
        }
        if masked.health.admin_token.is_some() {
            masked.health.admin_token = Some(MASK.to_owned());
        }
        if masked.rest.auth_token.is_some() {
            masked.rest.auth_token = Some(MASK.to_owned());
        }
        masked
    }

    /// Names of the sections whose settings differ between `self` and `other`, in declaration
    /// order; a reload restarts only the subtrees that depend on them.
    pub fn diff_sections(&self, other: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut check = |name: &'static str, differs: bool| {
            if differs {
                changed.push(name);
            }
        };
        check("database", self.database != other.database);
        check("redis", self.redis != other.redis);
        check("hub", self.hub != other.hub);
        check("stream", self.stream != other.stream);
        check("backfill", self.backfill != other.backfill);
        check("rest", self.rest != other.rest);
        check("mcp", self.mcp != other.mcp);
        check("query", self.query != other.query);
        check("health", self.health != other.health);
        check("logging", self.logging != other.logging);
        check("spam", self.spam != other.spam);
        check("supervisor", self.supervisor != other.supervisor);
        changed
    }

    /// Normalizes header names, then checks every value, collecting all problems.
    fn finish(&mut self, sources: &Sources, errors: &mut Vec<ConfigError>) {
        let mut check = Check { sources, errors };
        self.hub.headers = normalize_headers(&self.hub.headers, &mut check);
        self.validate(&mut check);
    }

    fn validate(&self, check: &mut Check<'_>) {
        let database = &self.database;
        if let Err(message) = database.pg_config() {
            check.fail("database.url", message);
        }
        check.at_least_one("database.max_connections", database.max_connections);
        check.at_least_one("database.timeout_seconds", database.timeout_seconds);

        let redis = &self.redis;
        if let Err(message) = redis.client() {
            check.fail("redis.url", message);
        }
        check.name("redis.prefix", &redis.prefix);
        if redis.prefix.ends_with(':') {
            check.fail(
                "redis.prefix",
                format!("{:?} must not end with ':' (it is added)", redis.prefix),
            );
        }
        check.at_least_one("redis.response_timeout_ms", redis.response_timeout_ms);

        let hub = &self.hub;
        if let Err(message) = hub.endpoint() {
            check.fail("hub.url", message);
        }
        let mut seen = BTreeSet::new();
        for &shard in &hub.shard_indices {
            if !(1..=64).contains(&shard) {
                check.fail(
                    "hub.shard_indices",
                    format!(
                        "invalid shard {shard}: data shards are 1 to 64 (0 is the block shard)"
                    ),
                );
            } else if !seen.insert(shard) {
                check.fail(
                    "hub.shard_indices",
                    format!("shard {shard} is listed twice"),
                );
            }
        }
        check.at_least_one("hub.request_timeout_seconds", hub.request_timeout_seconds);
        check.at_least_one("hub.connect_timeout_seconds", hub.connect_timeout_seconds);
        check.at_least_one("hub.max_message_size_mib", hub.max_message_size_mib);
        check.at_least_one(
            "hub.subscribe_idle_timeout_seconds",
            hub.subscribe_idle_timeout_seconds,
        );
        check.at_least_one("hub.retry_initial_ms", hub.retry_initial_ms);
        check.at_least_one("hub.retry_max_attempts", hub.retry_max_attempts);
        check.at_least_one("hub.max_concurrent_requests", hub.max_concurrent_requests);
        if hub.retry_max_ms < hub.retry_initial_ms {
            check.fail(
                "hub.retry_max_ms",
                format!(
                    "{} is below hub.retry_initial_ms ({})",
                    hub.retry_max_ms, hub.retry_initial_ms
                ),
            );
        }

        let stream = &self.stream;
        check.name("stream.group", &stream.group);
        check.at_least_one("stream.publish_batch_size", stream.publish_batch_size);
        check.at_least_one("stream.publish_flush_ms", stream.publish_flush_ms);
        check.at_least_one("stream.consumer_batch_size", stream.consumer_batch_size);
        check.at_least_one("stream.consumers_per_type", stream.consumers_per_type);
        check.at_least_one("stream.block_ms", stream.block_ms);
        check.at_least_one("stream.max_backlog", stream.max_backlog);
        check.at_least_one("stream.claim_idle_ms", stream.claim_idle_ms);
        check.at_least_one("stream.reclaim_interval_ms", stream.reclaim_interval_ms);
        check.at_least_one("stream.max_deliveries", stream.max_deliveries);
        check.at_least_one("stream.mailbox_capacity", stream.mailbox_capacity);
        check.at_least_one("stream.cursor_flush_ms", stream.cursor_flush_ms);

        let backfill = &self.backfill;
        check.at_least_one("backfill.concurrency", backfill.concurrency);
        check.at_least_one("backfill.batch_size", backfill.batch_size);
        check.at_least_one("backfill.page_size", backfill.page_size);
        check.at_least_one(
            "backfill.visibility_timeout_seconds",
            backfill.visibility_timeout_seconds,
        );
        check.at_least_one("backfill.max_attempts", backfill.max_attempts);
        check.at_least_one("backfill.retry_delay_ms", backfill.retry_delay_ms);
        check.at_least_one("backfill.write_batch_size", backfill.write_batch_size);

        check.port("rest.port", self.rest.port);
        check.port("mcp.port", self.mcp.port);
        if let Some(token) = &self.rest.auth_token
            && token.trim().is_empty()
        {
            check.fail(
                "rest.auth_token",
                "must not be blank (leave it unset to serve without authentication)",
            );
        }
        for origin in &self.rest.cors_origins {
            if origin != "*" && http::HeaderValue::from_str(origin).is_err()
                || origin != "*"
                    && !(origin.starts_with("http://") || origin.starts_with("https://"))
            {
                check.fail(
                    "rest.cors_origins",
                    format!("{origin:?} is not an origin (scheme://host[:port]) or *"),
                );
            }
        }
        check.at_least_one(
            "rest.request_timeout_seconds",
            self.rest.request_timeout_seconds,
        );
        check.at_least_one("query.hub_timeout_ms", self.query.hub_timeout_ms);
        check.at_least_one("query.breaker_failures", self.query.breaker_failures);
        check.at_least_one(
            "query.breaker_open_seconds",
            self.query.breaker_open_seconds,
        );
        if self.query.breaker_max_open_seconds < self.query.breaker_open_seconds {
            check.fail(
                "query.breaker_max_open_seconds",
                "must be at least query.breaker_open_seconds",
            );
        }
        check.port("health.port", self.health.port);
        self.check_listeners(check);
        for host in &self.mcp.allowed_hosts {
            if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
                check.fail(
                    "mcp.allowed_hosts",
                    format!("{host:?} is not a host name (no scheme, path or spaces)"),
                );
            }
        }
        if let Some(token) = &self.health.admin_token
            && token.trim().is_empty()
        {
            check.fail(
                "health.admin_token",
                "must not be blank (leave it unset to disable the admin endpoints)",
            );
        }

        if let Err(error) = tracing_subscriber::EnvFilter::builder().parse(&self.logging.level) {
            check.fail(
                "logging.level",
                format!("invalid filter {:?}: {error}", self.logging.level),
            );
        }

        for source in &self.spam.sources {
            if let Err(message) = check_spam_source(source) {
                check.fail("spam.sources", message);
            }
        }
        check.at_least_one(
            "spam.refresh_interval_seconds",
            self.spam.refresh_interval_seconds,
        );

        let supervisor = &self.supervisor;
        check.at_least_one("supervisor.period_seconds", supervisor.period_seconds);
        check.at_least_one(
            "supervisor.backoff_initial_ms",
            supervisor.backoff_initial_ms,
        );
        check.at_least_one(
            "supervisor.shutdown_grace_seconds",
            supervisor.shutdown_grace_seconds,
        );
        if supervisor.backoff_max_ms < supervisor.backoff_initial_ms {
            check.fail(
                "supervisor.backoff_max_ms",
                format!(
                    "{} is below supervisor.backoff_initial_ms ({})",
                    supervisor.backoff_max_ms, supervisor.backoff_initial_ms
                ),
            );
        }
    }

    /// Two enabled servers cannot listen on the same port of overlapping addresses.
    fn check_listeners(&self, check: &mut Check<'_>) {
        let mut listeners = vec![("health.port", self.health.bind_address, self.health.port)];
        if self.rest.enabled {
            listeners.push(("rest.port", self.rest.bind_address, self.rest.port));
        }
        if self.mcp.enabled {
            listeners.push(("mcp.port", self.mcp.bind_address, self.mcp.port));
        }
        for (index, (key, address, port)) in listeners.iter().enumerate() {
            for (other_key, other_address, other_port) in &listeners[..index] {
                let overlap = address == other_address
                    || address.is_unspecified()
                    || other_address.is_unspecified();
                if port == other_port && *port != 0 && overlap {
                    check.fail(key, format!("port {port} is already used by {other_key}"));
                }
            }
        }
    }
}

impl fmt::Display for Config {
    /// The masked effective configuration as TOML, keys in declaration order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match toml::to_string_pretty(&self.masked_copy()) {
            Ok(text) => f.write_str(&text),
            Err(error) => write!(f, "# unprintable configuration: {error}"),
        }
    }
}

/// A spam label source is a path or an `http(s)://` URL.
fn check_spam_source(source: &str) -> Result<(), String> {
    if source.trim().is_empty() {
        return Err("empty source".to_owned());
    }
    if source.contains("://") {
        let shown = mask_url(source);
        let parsed = url::Url::parse(source).map_err(|error| format!("{shown:?}: {error}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "{shown:?}: unsupported scheme {:?}, expected a file path or an http(s) URL",
                parsed.scheme()
            ));
        }
    }
    Ok(())
}

/// Lowercases header names and turns `_` into `-`; checks names and values gRPC accepts.
fn normalize_headers(
    headers: &BTreeMap<String, String>,
    check: &mut Check<'_>,
) -> BTreeMap<String, String> {
    let mut normalized: BTreeMap<String, String> = BTreeMap::new();
    for (original, value) in headers {
        let key = format!("hub.headers.{original}");
        let name = original.to_ascii_lowercase().replace('_', "-");
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid_name {
            check.fail(
                &key,
                format!("invalid header name {name:?}: use letters, digits, '-' and '.'"),
            );
            continue;
        }
        if name.ends_with("-bin")
            || name.starts_with("grpc-")
            || RESERVED_HEADERS.contains(&name.as_str())
        {
            check.fail(
                &key,
                format!("header {name:?} is reserved or binary and cannot be set here"),
            );
            continue;
        }
        if !value
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
        {
            // The value is a secret: say what is wrong, not what it is.
            check.fail(
                &key,
                "header value must be printable ASCII (no line breaks or non-ASCII characters)",
            );
            continue;
        }
        if normalized.insert(name.clone(), value.clone()).is_some() {
            check.fail(&key, format!("header {name:?} is given twice"));
        }
    }
    normalized
}

/// HTTP/2 and gRPC headers that tonic sets itself.
const RESERVED_HEADERS: &[&str] = &["content-type", "te", "user-agent", "host", "connection"];

/// Collects validation problems with the source of each key.
struct Check<'a> {
    sources: &'a Sources,
    errors: &'a mut Vec<ConfigError>,
}

impl Check<'_> {
    fn fail(&mut self, key: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            key: Some(key.to_owned()),
            message: message.into(),
            source: self.sources.of(key),
        });
    }

    fn at_least_one<N: PartialEq + Default>(&mut self, key: &str, value: N) {
        if value == N::default() {
            self.fail(key, "invalid value 0: must be at least 1");
        }
    }

    fn port(&mut self, key: &str, port: u16) {
        if port == 0 {
            self.fail(key, "invalid value 0: a port must be 1-65535");
        }
    }

    /// A Redis name part: not empty, no whitespace.
    fn name(&mut self, key: &str, value: &str) {
        if value.is_empty() {
            self.fail(key, "must not be empty");
        } else if value.contains(char::is_whitespace) {
            self.fail(key, format!("{value:?} must not contain whitespace"));
        }
    }
}

/// Where each key's value came from, for error messages.
struct Sources {
    /// The TOML file and its keys (unknown ones removed).
    file: Option<(PathBuf, Dict)>,
    /// Dotted key → the environment variable that set it.
    env: BTreeMap<String, String>,
}

impl Sources {
    fn of(&self, key: &str) -> ValueSource {
        if let Some(name) = self.env.get(key) {
            return ValueSource::Env(name.clone());
        }
        if let Some((path, dict)) = &self.file
            && dict_contains(dict, key)
        {
            return ValueSource::File(path.clone());
        }
        ValueSource::Default
    }
}

impl Sources {
    /// Like [`Sources::of`] for a value that failed to deserialize, so it was given somewhere:
    /// a list item or map entry is attributed to the key that holds it.
    fn of_value(&self, path: &[String]) -> ValueSource {
        (1..=path.len())
            .rev()
            .map(|len| self.of(&path[..len].join(".")))
            .find(|source| *source != ValueSource::Default)
            .unwrap_or(ValueSource::Default)
    }
}

fn dict_contains(dict: &Dict, key: &str) -> bool {
    let mut parts = key.split('.');
    let Some(first) = parts.next() else {
        return false;
    };
    let mut current = dict.get(first);
    for part in parts {
        current = match current {
            Some(Value::Dict(_, inner)) => inner.get(part),
            _ => None,
        };
    }
    current.is_some()
}

/// The defaults as a figment dictionary: the reference for known keys and value types.
fn default_dict() -> Dict {
    match Value::serialize(Config::default()) {
        Ok(Value::Dict(_, dict)) => dict,
        // The defaults are plain data; anything else is a programming error caught by tests.
        _ => Dict::new(),
    }
}

/// Reads and parses the TOML file; problems are recorded and yield an empty layer so that the
/// environment is still checked.
fn read_file(path: &Path, errors: &mut Vec<ConfigError>) -> Dict {
    let source = ValueSource::File(path.to_path_buf());
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            errors.push(ConfigError {
                key: None,
                message: format!("cannot read configuration file: {error}"),
                source,
            });
            return Dict::new();
        }
    };
    match figment::Provider::data(&Toml::string(&text)) {
        Ok(mut profiles) => profiles.remove(&Profile::Default).unwrap_or_default(),
        Err(error) => {
            errors.push(ConfigError {
                key: None,
                message: format!("invalid TOML: {}", error.kind),
                source,
            });
            Dict::new()
        }
    }
}

/// Removes keys that are not part of the configuration, reporting each one.
fn drop_unknown_keys(dict: &mut Dict, defaults: &Dict, prefix: &str, report: &mut dyn FnMut(&str)) {
    if OPEN_MAPS.contains(&prefix) {
        return;
    }
    dict.retain(|name, value| {
        let key = join_key(prefix, name);
        match (defaults.get(name), value) {
            (None, _) => {
                report(&key);
                false
            }
            (Some(Value::Dict(_, known)), Value::Dict(_, inner)) => {
                drop_unknown_keys(inner, known, &key, report);
                true
            }
            // A type mismatch is reported by extraction, with the expected type.
            (Some(_), _) => true,
        }
    });
}

fn join_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Builds the environment layer and remembers which variable set each key.
fn env_layer(
    env: &[(String, String)],
    defaults: &Dict,
    errors: &mut Vec<ConfigError>,
) -> (Dict, BTreeMap<String, String>) {
    let mut entries: Vec<(Vec<String>, &str, &str)> = Vec::new();
    // Compatibility variables first, so that a prefixed variable for the same key wins.
    for (variable, key) in COMPAT_ENV {
        if let Some((name, value)) = env.iter().find(|(name, _)| name == variable) {
            entries.push((key.split('.').map(str::to_owned).collect(), name, value));
        }
    }
    let mut prefixed: Vec<&(String, String)> = env
        .iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX) && name != ENV_CONFIG_PATH)
        .collect();
    prefixed.sort();
    for (name, value) in prefixed {
        let rest = &name[ENV_PREFIX.len()..];
        if !rest.contains(ENV_SEPARATOR) {
            report_single_underscore(name, rest, defaults, errors);
            continue;
        }
        let path: Vec<String> = rest
            .split(ENV_SEPARATOR)
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            errors.push(ConfigError {
                key: None,
                message: format!(
                    "{name}: empty name part, expected {ENV_PREFIX}<SECTION>{ENV_SEPARATOR}<KEY>"
                ),
                source: ValueSource::Env(name.clone()),
            });
            continue;
        }
        entries.push((path, name, value));
    }

    let mut dict = Dict::new();
    let mut names = BTreeMap::new();
    for (path, name, value) in entries {
        let key = path.join(".");
        let kind = match key_kind(defaults, &path) {
            Ok(kind) => kind,
            Err(message) => {
                errors.push(ConfigError {
                    key: Some(key),
                    message: message.to_owned(),
                    source: ValueSource::Env(name.to_owned()),
                });
                continue;
            }
        };
        if value.trim().is_empty() {
            continue;
        }
        insert_path(&mut dict, &path, kind.parse(value));
        names.insert(key, name.to_owned());
    }
    (dict, names)
}

/// `WAYPOINT_DATABASE_URL` is a likely typo of `WAYPOINT_DATABASE__URL`; other
/// `WAYPOINT_*` variables without a separator are not configuration and are ignored.
fn report_single_underscore(
    name: &str,
    rest: &str,
    defaults: &Dict,
    errors: &mut Vec<ConfigError>,
) {
    let lower = rest.to_ascii_lowercase();
    let section = defaults
        .keys()
        .find(|section| lower.starts_with(&format!("{section}_")));
    if let Some(section) = section {
        let key = &rest[section.len() + 1..];
        errors.push(ConfigError {
            key: None,
            message: format!(
                "{name} is not read: sections and keys are separated by a double underscore \
                 (did you mean {ENV_PREFIX}{}{ENV_SEPARATOR}{key}?)",
                section.to_ascii_uppercase()
            ),
            source: ValueSource::Env(name.to_owned()),
        });
    }
}

/// How an environment value for a key is turned into a configuration value.
enum EnvKind {
    /// Kept as text (strings, enums, addresses, map entries, optional strings).
    Text,
    /// A list: `[a, b]` is parsed, anything else is kept as text and split on commas.
    List,
    /// Numbers and booleans, parsed.
    Scalar,
}

impl EnvKind {
    fn parse(&self, raw: &str) -> Value {
        match self {
            Self::Text => Value::from(raw.to_owned()),
            Self::List if raw.trim_start().starts_with('[') => {
                Value::from_str(raw).unwrap_or_else(|never| match never {})
            }
            Self::List => Value::from(raw.to_owned()),
            Self::Scalar => Value::from_str(raw.trim()).unwrap_or_else(|never| match never {}),
        }
    }
}

/// The kind of a known key, or why one variable cannot set it.
fn key_kind(defaults: &Dict, path: &[String]) -> Result<EnvKind, &'static str> {
    const UNKNOWN: &str = "unknown key";
    let (last, parents) = path.split_last().ok_or(UNKNOWN)?;
    let mut dict = defaults;
    let mut prefix = String::new();
    for part in parents {
        prefix = join_key(&prefix, part);
        match dict.get(part.as_str()) {
            Some(Value::Dict(_, inner)) => dict = inner,
            _ => return Err(UNKNOWN),
        }
        if OPEN_MAPS.contains(&prefix.as_str()) {
            // Open maps take plain string values, one level deep.
            return if parents.last() == Some(part) {
                Ok(EnvKind::Text)
            } else {
                Err(UNKNOWN)
            };
        }
    }
    match dict.get(last.as_str()) {
        Some(Value::String(..) | Value::Char(..) | Value::Empty(..)) => Ok(EnvKind::Text),
        Some(Value::Array(..)) => Ok(EnvKind::List),
        Some(Value::Num(..) | Value::Bool(..)) => Ok(EnvKind::Scalar),
        Some(Value::Dict(..)) => Err("is a table: set its entries one by one (<TABLE>__<KEY>)"),
        None => Err(UNKNOWN),
    }
}

fn insert_path(dict: &mut Dict, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = dict;
    for part in parents {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| Value::from(Dict::new()));
        if !matches!(entry, Value::Dict(..)) {
            *entry = Value::from(Dict::new());
        }
        let Value::Dict(_, inner) = entry else {
            return;
        };
        current = inner;
    }
    current.insert(last.clone(), value);
}

/// Deserializes the merged values; each type error is recorded and its key put back to the
/// default (or removed, inside an open map) until extraction succeeds.
fn extract(
    mut merged: Dict,
    defaults: &Dict,
    sources: &Sources,
    errors: &mut Vec<ConfigError>,
) -> Option<Config> {
    for _ in 0..MAX_TYPE_REPAIRS {
        let value = Value::from(merged.clone());
        let error = match value.deserialize::<Config>() {
            Ok(config) => return Some(config),
            Err(error) => error,
        };
        let mut repaired = false;
        for error in error {
            let key = error.path.join(".");
            errors.push(ConfigError {
                key: (!key.is_empty()).then(|| key.clone()),
                message: error.kind.to_string(),
                source: sources.of_value(&error.path),
            });
            repaired |= repair(&mut merged, defaults, &error.path);
        }
        if !repaired {
            return None;
        }
    }
    None
}

/// Puts the value at `path` back to its default: the deepest known key on the path is reset,
/// and an entry of an open map is removed. Returns whether anything changed.
fn repair(merged: &mut Dict, defaults: &Dict, path: &[String]) -> bool {
    let mut known = 0;
    let mut dict = defaults;
    let mut default_value = None;
    for part in path {
        match dict.get(part.as_str()) {
            Some(value) => {
                known += 1;
                default_value = Some(value);
                match value {
                    Value::Dict(_, inner) => dict = inner,
                    _ => break,
                }
            }
            None => break,
        }
    }
    let prefix = path[..known].join(".");
    if known < path.len() && OPEN_MAPS.contains(&prefix.as_str()) {
        return remove_path(merged, &path[..=known]);
    }
    match default_value {
        Some(value) if known > 0 => {
            let target = &path[..known];
            if lookup(merged, target) == Some(value) {
                return false;
            }
            insert_path(merged, target, value.clone());
            true
        }
        _ => false,
    }
}

fn lookup<'a>(dict: &'a Dict, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut current = dict.get(first.as_str())?;
    for part in rest {
        match current {
            Value::Dict(_, inner) => current = inner.get(part.as_str())?,
            _ => return None,
        }
    }
    Some(current)
}

fn remove_path(dict: &mut Dict, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut current = dict;
    for part in parents {
        match current.get_mut(part.as_str()) {
            Some(Value::Dict(_, inner)) => current = inner,
            _ => return false,
        }
    }
    current.remove(last.as_str()).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let file = toml.map(|text| {
            let file = tempfile::Builder::new()
                .suffix(".toml")
                .tempfile()
                .expect("temp file");
            std::fs::write(file.path(), text).expect("write temp file");
            file
        });
        Config::load_from(file.as_ref().map(|file| file.path()), env.iter().copied())
    }

    fn messages(errors: &ConfigErrors) -> Vec<String> {
        errors.errors().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(load(None, &[]).expect("defaults load"), Config::default());
    }

    #[test]
    fn hub_endpoint_schemes() {
        let endpoint = |url: &str| {
            HubConfig {
                url: url.to_owned(),
                ..HubConfig::default()
            }
            .endpoint()
        };
        let bare = endpoint("snapchain.farcaster.xyz:3383").expect("bare host:port");
        assert_eq!(bare.uri, "https://snapchain.farcaster.xyz:3383");
        assert!(bare.tls);
        let plain = endpoint("http://127.0.0.1:3383").expect("http");
        assert_eq!((plain.tls, plain.port), (false, 3383));
        assert_eq!(endpoint("https://hub.example").expect("https").port, 443);
        assert_eq!(endpoint("hub.example").expect("bare host").port, 3383);
        assert_eq!(
            endpoint("http://[::1]:9").expect("ipv6").uri,
            "http://[::1]:9"
        );
        assert!(endpoint("ftp://hub.example").is_err());
        assert!(endpoint("https://hub.example/path").is_err());
        assert!(endpoint("").is_err());
    }

    #[test]
    fn shard_indices_accept_lists_and_comma_strings() {
        for raw in ["1,2", "[1, 2]", " 1 , 2 "] {
            let config = load(None, &[("WAYPOINT_HUB__SHARD_INDICES", raw)]).expect(raw);
            assert_eq!(config.hub.shard_indices, vec![1, 2], "{raw}");
        }
        let config = load(Some("[hub]\nshard_indices = [2]\n"), &[]).expect("toml list");
        assert_eq!(config.hub.shard_indices, vec![2]);
        let errors = load(None, &[("WAYPOINT_HUB__SHARD_INDICES", "1,x")]).expect_err("bad item");
        assert!(messages(&errors)[0].starts_with("hub.shard_indices: invalid list item \"x\""));
        let errors = load(Some("[hub]\nshard_indices = [1, \"x\"]\n"), &[]).expect_err("item");
        let message = messages(&errors).remove(0);
        assert!(
            message.starts_with("hub.shard_indices.1: invalid type"),
            "{message}"
        );
        assert!(message.ends_with(".toml)"), "{message}");
    }

    #[test]
    fn string_lists_accept_both_spellings() {
        for raw in [
            "localhost,hub.example",
            "[localhost, hub.example]",
            "[\"localhost\", \"hub.example\"]",
        ] {
            let config = load(None, &[("WAYPOINT_MCP__ALLOWED_HOSTS", raw)]).expect(raw);
            assert_eq!(
                config.mcp.allowed_hosts,
                ["localhost", "hub.example"],
                "{raw}"
            );
        }
    }

    #[test]
    fn a_table_cannot_be_set_from_one_variable() {
        let errors = load(None, &[("WAYPOINT_HUB__HEADERS", "x")]).expect_err("table");
        assert_eq!(
            messages(&errors),
            [
                "hub.headers: is a table: set its entries one by one (<TABLE>__<KEY>) \
              (from env WAYPOINT_HUB__HEADERS)"
            ]
        );
    }

    #[test]
    fn numeric_text_stays_text() {
        let config = load(
            None,
            &[
                ("WAYPOINT_HEALTH__ADMIN_TOKEN", "12345"),
                ("WAYPOINT_REDIS__PREFIX", "42"),
            ],
        )
        .expect("numeric strings");
        assert_eq!(config.health.admin_token.as_deref(), Some("12345"));
        assert_eq!(config.redis.prefix, "42");
    }

    #[test]
    fn empty_env_value_is_unset() {
        let config = load(Some("[health]\nport = 9000\n"), &[("PORT", "")]).expect("load");
        assert_eq!(config.health.port, 9000);
    }

    #[test]
    fn prefixed_variable_beats_compat_variable() {
        let config =
            load(None, &[("PORT", "9001"), ("WAYPOINT_HEALTH__PORT", "9002")]).expect("load");
        assert_eq!(config.health.port, 9002);
    }

    #[test]
    fn single_underscore_typo_is_reported_and_other_variables_ignored() {
        let errors = load(
            None,
            &[
                ("WAYPOINT_DATABASE_URL", "postgresql://x@y/z"),
                ("WAYPOINT_TEST_DATABASE_URL", "ignored"),
                ("WAYPOINT_CONFIG", ""),
            ],
        )
        .expect_err("typo");
        let messages = messages(&errors);
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(messages[0].contains("did you mean WAYPOINT_DATABASE__URL?"));
    }

    #[test]
    fn enum_values_are_checked_by_name() {
        let errors = load(None, &[("WAYPOINT_HUB__START_FROM", "1")]).expect_err("number");
        assert!(messages(&errors)[0].contains("expected \"earliest\" or \"latest\""));
        let config = load(None, &[("WAYPOINT_HUB__START_FROM", "latest")]).expect("latest");
        assert_eq!(config.hub.start_from, StartFrom::Latest);
    }

    #[test]
    fn headers_with_a_wrong_type_are_reported_and_removed() {
        let errors = load(Some("[hub.headers]\nx-a = 1\nx-b = 2\n"), &[]).expect_err("ints");
        let messages = messages(&errors);
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0].starts_with("hub.headers.x-a: invalid type"));
    }

    #[test]
    fn masking_keeps_non_secrets() {
        assert_eq!(
            mask_url("postgresql://user:secret@db:5432/w?password=x&application_name=a"),
            "postgresql://user:****@db:5432/w?password=****&application_name=a"
        );
        assert_eq!(mask_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(mask_url("not a url"), "not a url");
    }

    #[test]
    fn debug_does_not_print_secrets() {
        let mut config = Config::default();
        config.database.url = "postgresql://u:hunter2@h/d".to_owned();
        config.redis.url = "redis://:hunter2@h".to_owned();
        config
            .hub
            .headers
            .insert("x-api-key".to_owned(), "hunter2".to_owned());
        config.health.admin_token = Some("hunter2".to_owned());
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn listeners_on_the_same_port_conflict() {
        let errors = load(None, &[("WAYPOINT_REST__PORT", "8080")]).expect_err("conflict");
        assert_eq!(
            messages(&errors),
            vec![
                "rest.port: port 8080 is already used by health.port (from env WAYPOINT_REST__PORT)"
            ]
        );
        load(
            None,
            &[
                ("WAYPOINT_REST__PORT", "8080"),
                ("WAYPOINT_REST__ENABLED", "false"),
            ],
        )
        .expect("disabled server does not conflict");
    }

    #[test]
    fn masked_toml_omits_an_absent_token() {
        let text = Config::default().to_string();
        assert!(!text.contains("admin_token"), "{text}");
        let mut config = Config::default();
        config.health.admin_token = Some("hunter2".to_owned());
        assert!(config.to_string().contains("admin_token = \"****\""));
    }

    #[test]
    fn diff_names_changed_sections() {
        let old = Config::default();
        let mut new = old.clone();
        new.spam.refresh_interval_seconds += 1;
        new.hub.verify_messages = false;
        assert_eq!(old.diff_sections(&new), vec!["hub", "spam"]);
        assert!(old.diff_sections(&old).is_empty());
    }
}
