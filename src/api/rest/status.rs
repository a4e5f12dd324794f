//! `GET /api/v1/sync/status`: how far this replica is behind. Per shard the subscriber's cursor
//! and, when this process has a hub client, the hub's height and the lag in blocks; per stream
//! type the Redis backlog; the backfill's progress; the query layer's source policy and the
//! hub breaker's state. Without a service around (`runtime` None) it answers what the query
//! layer knows.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use redis::AsyncCommands;
use serde::Serialize;
use utoipa::ToSchema;

use super::App;
use super::error::ApiError;
use super::error::Errors;
use super::params::Args;
use crate::query::breaker::CircuitState;
use crate::runtime::{BackfillStatus, Runtime};
use crate::streams::StreamType;

/// Longest one Redis or hub call of the status may take: a status that hangs is no status.
const STATUS_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Bits of an event id below the block number (snapchain: `id = block << 14 | seq`).
const EVENT_SEQUENCE_BITS: u32 = 14;

/// The body of `sync/status` (not from a query source, so no `source`).
#[derive(Debug, Serialize, ToSchema)]
pub struct SyncStatusBody {
    pub data: SyncStatus,
}

/// How far the replica is behind.
#[derive(Debug, Serialize, ToSchema)]
pub struct SyncStatus {
    /// Where queries go and whether the hub is being avoided.
    pub query: QueryStatus,
    /// By shard number.
    pub shards: BTreeMap<String, ShardStatus>,
    /// By stream type; empty without a service around.
    pub streams: BTreeMap<String, StreamStatus>,
    /// The backfill's progress, where this process runs backfill workers.
    #[schema(value_type = Option<Object>)]
    pub backfill: Option<BackfillStatus>,
}

/// The query layer's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueryStatus {
    /// `hub-first`, `db-first`, `db-only` or `hub-only`.
    pub source_policy: String,
    /// The hub circuit breaker: `closed` (hub used), `open` (hub avoided) or `half_open`
    /// (one probe out).
    #[schema(value_type = String)]
    pub hub_circuit: CircuitState,
}

/// One shard's progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShardStatus {
    /// Last hub event id durable in Redis.
    pub cursor: Option<u64>,
    /// The block of that event.
    pub cursor_block: Option<u64>,
    /// The hub's latest block on this shard, when the hub could be asked.
    pub hub_height: Option<u64>,
    /// `hub_height - cursor_block`.
    pub lag_blocks: Option<u64>,
    /// Set when the cursor fell behind the hub's retention (a backfill is needed).
    pub backfill_needed: Option<String>,
}

/// One stream's backlog in Redis.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamStatus {
    /// Entries in the stream (XLEN).
    pub length: Option<u64>,
    /// Entries delivered to the consumer group and not acknowledged.
    pub pending: Option<u64>,
    /// Entries the consumer group has not acknowledged: undelivered plus pending.
    pub backlog: Option<u64>,
    /// Why a figure is missing.
    pub error: Option<String>,
}

/// Sync progress: shard cursors and lag, stream backlog, backfill, query sources.
#[utoipa::path(get, path = "/api/v1/sync/status", tag = "meta",
    responses((status = 200, description = "The replica's progress", body = SyncStatusBody), Errors))]
pub async fn sync_status(State(app): State<App>, args: Args) -> Result<Response, ApiError> {
    args.only(&[])?;
    let query = QueryStatus {
        source_policy: app.data.policy().name().to_owned(),
        hub_circuit: app.data.breaker().state(),
    };
    let status = match &app.runtime {
        Some(runtime) => SyncStatus {
            query,
            shards: shards(runtime).await,
            streams: streams(runtime).await,
            backfill: runtime.backfill_status(),
        },
        None => SyncStatus {
            query,
            shards: BTreeMap::new(),
            streams: BTreeMap::new(),
            backfill: None,
        },
    };
    Ok(axum::Json(SyncStatusBody { data: status }).into_response())
}

async fn shards(runtime: &Runtime) -> BTreeMap<String, ShardStatus> {
    let heights = hub_heights(runtime).await;
    runtime
        .shards()
        .into_iter()
        .map(|(shard, health)| {
            let cursor_block = health.cursor.map(|cursor| cursor >> EVENT_SEQUENCE_BITS);
            let hub_height = heights.get(&shard).copied();
            let lag_blocks = match (hub_height, cursor_block) {
                (Some(height), Some(block)) => Some(height.saturating_sub(block)),
                _ => None,
            };
            let status = ShardStatus {
                cursor: health.cursor,
                cursor_block,
                hub_height,
                lag_blocks,
                backfill_needed: health.backfill_needed,
            };
            (shard.to_string(), status)
        })
        .collect()
}

/// The hub's height per shard, when this process has a hub client and the hub answers.
async fn hub_heights(runtime: &Runtime) -> BTreeMap<u32, u64> {
    let Some(hub) = runtime.hub() else {
        return BTreeMap::new();
    };
    match tokio::time::timeout(STATUS_CALL_TIMEOUT, hub.info()).await {
        Ok(Ok(info)) => info
            .shard_infos
            .iter()
            .map(|shard| (shard.shard_id, shard.max_height))
            .collect(),
        Ok(Err(error)) => {
            tracing::debug!(%error, "no hub heights for sync status");
            BTreeMap::new()
        }
        Err(_) => {
            tracing::debug!("no hub heights for sync status: timed out");
            BTreeMap::new()
        }
    }
}

async fn streams(runtime: &Runtime) -> BTreeMap<String, StreamStatus> {
    let redis = runtime.redis();
    let group = runtime.config().stream.group.clone();
    let mut streams = BTreeMap::new();
    for kind in StreamType::ALL {
        let mut errors = Vec::new();
        let mut connection = redis.connection();
        let length = match within(connection.xlen::<_, u64>(redis.stream_key(kind))).await {
            Ok(length) => Some(length),
            Err(error) => {
                errors.push(format!("xlen: {error}"));
                None
            }
        };
        let pending = match within(redis.pending(kind, &group)).await {
            Ok(pending) => Some(pending),
            Err(error) => {
                errors.push(format!("pending: {error}"));
                None
            }
        };
        let backlog = match within(redis.backlog(kind, &group)).await {
            Ok(backlog) => Some(backlog),
            Err(error) => {
                errors.push(format!("backlog: {error}"));
                None
            }
        };
        let status = StreamStatus {
            length,
            pending,
            backlog,
            error: (!errors.is_empty()).then(|| errors.join("; ")),
        };
        streams.insert(kind.as_str().to_owned(), status);
    }
    streams
}

/// A Redis call under the status's deadline, its error as text.
async fn within<T, E: std::fmt::Display>(
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(STATUS_CALL_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {STATUS_CALL_TIMEOUT:?}")),
    }
}
