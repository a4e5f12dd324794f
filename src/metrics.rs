//! The single place where the service's Prometheus metrics are declared, plus the recorder
//! that the health server renders at `/metrics`.
//!
//! Names follow `waypoint_<noun>_<unit>[_total]`. Label values are bounded: shard numbers,
//! stream types, table names, gRPC method names and status codes, and fixed reason words —
//! never raw error text, FIDs or hashes. Code records a metric with the `metrics` macros and
//! the constants below, e.g.
//! `metrics::counter!(STREAM_PUBLISHED_ENTRIES_TOTAL, LABEL_STREAM => "casts").increment(n)`.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Label: data shard index (`"1"`, `"2"`).
pub const LABEL_SHARD: &str = "shard";
/// Label: stream (message) type, such as `casts` or `reactions`.
pub const LABEL_STREAM: &str = "stream";
/// Label: PostgreSQL table name.
pub const LABEL_TABLE: &str = "table";
/// Label: a fixed reason word (`decode`, `verification`, `max_deliveries`, `bad_hash`, ...).
pub const LABEL_REASON: &str = "reason";
/// Label: gRPC method name, such as `Subscribe` or `GetEvents`.
pub const LABEL_METHOD: &str = "method";
/// Label: gRPC status code name, such as `unavailable`.
pub const LABEL_CODE: &str = "code";
/// Label: the state of backfill jobs or FIDs (`queued`, `in_progress`, `failed`, ...).
pub const LABEL_STATE: &str = "state";

/// Counter {shard}: hub events received on the subscription.
pub const HUB_EVENTS_RECEIVED_TOTAL: &str = "waypoint_hub_events_received_total";
/// Gauge {shard}: the cursor, the id of the last hub event durable in Redis.
pub const HUB_CURSOR_EVENT_ID: &str = "waypoint_hub_cursor_event_id";
/// Counter {shard, reason}: subscriptions dropped and made again (`idle` when the watchdog
/// found the stream silent; `ended`, `failed`, `subscribe_failed`, `invalid_event`).
pub const HUB_SUBSCRIBE_RECONNECTS_TOTAL: &str = "waypoint_hub_subscribe_reconnects_total";
/// Counter {shard}: blocks confirmed (BLOCK_CONFIRMED events).
pub const HUB_BLOCKS_CONFIRMED_TOTAL: &str = "waypoint_hub_blocks_confirmed_total";
/// Gauge {shard}: number of the latest confirmed block.
pub const HUB_BLOCK_NUMBER: &str = "waypoint_hub_block_number";
/// Counter {shard}: gaps found (blocks whose event counts did not match what arrived).
pub const HUB_GAPS_FOUND_TOTAL: &str = "waypoint_hub_gaps_found_total";
/// Counter {shard}: gaps repaired by re-fetching their events.
pub const HUB_GAPS_REPAIRED_TOTAL: &str = "waypoint_hub_gaps_repaired_total";
/// Gauge {shard}: 1 when the shard's cursor fell out of the hub's retention and a backfill is
/// needed.
pub const HUB_BACKFILL_NEEDED: &str = "waypoint_hub_backfill_needed";
/// Counter {method, code}: failed hub requests.
pub const HUB_REQUEST_ERRORS_TOTAL: &str = "waypoint_hub_request_errors_total";
/// Gauge: unary hub requests per second allowed now (lowered while the hub pushes back; 0: no
/// limit).
pub const HUB_REQUEST_RATE_LIMIT: &str = "waypoint_hub_request_rate_limit";
/// Counter: times the request rate was lowered because the hub pushed back.
pub const HUB_REQUEST_SLOWDOWNS_TOTAL: &str = "waypoint_hub_request_slowdowns_total";
/// Counter {reason}: messages rejected by hash or signature verification.
pub const HUB_VERIFICATION_FAILURES_TOTAL: &str = "waypoint_hub_verification_failures_total";
/// Counter: messages dropped because their FID is labelled spam.
pub const SPAM_DROPPED_MESSAGES_TOTAL: &str = "waypoint_spam_dropped_messages_total";
/// Gauge: FIDs currently labelled spam.
pub const SPAM_LABELLED_FIDS: &str = "waypoint_spam_labelled_fids";
/// Counter {stream}: entries added to a Redis stream.
pub const STREAM_PUBLISHED_ENTRIES_TOTAL: &str = "waypoint_stream_published_entries_total";
/// Counter {stream}: entries applied and acknowledged by consumers.
pub const STREAM_CONSUMED_ENTRIES_TOTAL: &str = "waypoint_stream_consumed_entries_total";
/// Gauge {stream}: entries delivered to a consumer and not yet acknowledged.
pub const STREAM_PENDING_ENTRIES: &str = "waypoint_stream_pending_entries";
/// Gauge {stream}: entries not yet delivered to the consumer group.
pub const STREAM_LAG_ENTRIES: &str = "waypoint_stream_lag_entries";
/// Counter {stream, reason}: entries moved to the dead-letter stream.
pub const STREAM_DEAD_LETTERED_ENTRIES_TOTAL: &str = "waypoint_stream_dead_lettered_entries_total";
/// Histogram {stream}: time from the subscriber receiving an event to its batch being applied.
pub const STREAM_APPLY_LAG_SECONDS: &str = "waypoint_stream_apply_lag_seconds";
/// Counter {table}: rows inserted or updated.
pub const STORE_ROWS_WRITTEN_TOTAL: &str = "waypoint_store_rows_written_total";
/// Counter {table}: `ANALYZE` runs after the table grew (see `store::analyze`).
pub const STORE_ANALYZE_RUNS_TOTAL: &str = "waypoint_store_analyze_runs_total";
/// Histogram {stream}: time to apply one batch to PostgreSQL.
pub const STORE_APPLY_BATCH_DURATION_SECONDS: &str = "waypoint_store_apply_batch_duration_seconds";
/// Gauge {state}: backfill jobs in the queue's books (`queued`, `delayed`, `in_progress`,
/// `failed`, `completed`), over every worker process.
pub const BACKFILL_JOBS: &str = "waypoint_backfill_jobs";
/// Gauge {state}: FIDs in the queue's books (`done`, `pending`, `failed`).
pub const BACKFILL_FIDS: &str = "waypoint_backfill_fids";
/// Counter: backfill jobs this process completed.
pub const BACKFILL_JOBS_COMPLETED_TOTAL: &str = "waypoint_backfill_jobs_completed_total";
/// Counter: failed attempts of backfill jobs in this process that were queued again.
pub const BACKFILL_JOB_RETRIES_TOTAL: &str = "waypoint_backfill_job_retries_total";
/// Counter: backfill jobs (or the FIDs left of them) moved to the failed list by this process.
pub const BACKFILL_JOBS_FAILED_TOTAL: &str = "waypoint_backfill_jobs_failed_total";
/// Counter: FIDs backfilled by this process.
pub const BACKFILL_FIDS_TOTAL: &str = "waypoint_backfill_fids_total";
/// Counter: messages fetched and written by this process's backfill.
pub const BACKFILL_MESSAGES_TOTAL: &str = "waypoint_backfill_messages_total";
/// Counter {table}: live rows the backfill took out because the hub no longer holds them.
pub const BACKFILL_ROWS_REMOVED_TOTAL: &str = "waypoint_backfill_rows_removed_total";
/// Histogram: time to backfill one FID.
pub const BACKFILL_FID_DURATION_SECONDS: &str = "waypoint_backfill_fid_duration_seconds";
/// Gauge: 1 when the last PostgreSQL check succeeded, else 0.
pub const DATABASE_UP: &str = "waypoint_database_up";
/// Gauge: 1 when the last Redis check succeeded, else 0.
pub const REDIS_UP: &str = "waypoint_redis_up";
/// Label: a query-layer query (`casts_by_fid`, ...).
pub const LABEL_QUERY: &str = "query";
/// Label: which source answered (`hub`, `database`).
pub const LABEL_SOURCE: &str = "source";
/// Counter {query, source}: read queries answered, by the source that answered.
pub const QUERY_ANSWERS_TOTAL: &str = "waypoint_query_answers_total";
/// Counter {query}: read queries no source could answer.
pub const QUERY_UNAVAILABLE_TOTAL: &str = "waypoint_query_unavailable_total";
/// Counter {query, source}: a source failed and the next one was asked.
pub const QUERY_FALLBACKS_TOTAL: &str = "waypoint_query_fallbacks_total";
/// Gauge: 1 while the hub's circuit breaker is open (queries go to the database).
pub const QUERY_HUB_CIRCUIT_OPEN: &str = "waypoint_query_hub_circuit_open";
/// Counter {route, status}: REST API requests.
pub const API_REQUESTS_TOTAL: &str = "waypoint_api_requests_total";
/// Histogram {route}: REST API request latency.
pub const API_REQUEST_DURATION_SECONDS: &str = "waypoint_api_request_duration_seconds";
/// Counter {tool, outcome}: MCP tool calls.
pub const MCP_TOOL_CALLS_TOTAL: &str = "waypoint_mcp_tool_calls_total";
/// Histogram {tool}: MCP tool call latency.
pub const MCP_TOOL_DURATION_SECONDS: &str = "waypoint_mcp_tool_duration_seconds";

/// Batch apply times range from a millisecond (a few rows) to seconds (a stalled database).
const APPLY_BATCH_BUCKETS_SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A FID's backfill: milliseconds for a new account, minutes for one with 100,000s of messages.
const FID_DURATION_BUCKETS_SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Hub-to-row lag: milliseconds when keeping up, seconds to minutes while catching up.
const APPLY_LAG_BUCKETS_SECONDS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// API answers: a fraction of a millisecond from a warm database, up to the hub's deadline.
const API_LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process and declares every metric; later calls
/// return the same handle. If another recorder was installed first (a test harness), the
/// returned handle renders an empty registry and a warning is logged.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            // Non-empty constant buckets cannot fail; fall back to summaries if it ever did.
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(STORE_APPLY_BATCH_DURATION_SECONDS.to_owned()),
                    APPLY_BATCH_BUCKETS_SECONDS,
                )
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full(STREAM_APPLY_LAG_SECONDS.to_owned()),
                        APPLY_LAG_BUCKETS_SECONDS,
                    )
                })
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full(BACKFILL_FID_DURATION_SECONDS.to_owned()),
                        FID_DURATION_BUCKETS_SECONDS,
                    )
                })
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full(API_REQUEST_DURATION_SECONDS.to_owned()),
                        API_LATENCY_BUCKETS_SECONDS,
                    )
                })
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full(MCP_TOOL_DURATION_SECONDS.to_owned()),
                        API_LATENCY_BUCKETS_SECONDS,
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => describe(),
                Err(error) => tracing::warn!(%error, "a metrics recorder is already installed"),
            }
            handle
        })
        .clone()
}

/// Declares every service metric with its unit and help text.
pub fn describe() {
    describe_counter!(
        HUB_EVENTS_RECEIVED_TOTAL,
        Unit::Count,
        "Hub events received on the subscription, per shard"
    );
    describe_gauge!(
        HUB_CURSOR_EVENT_ID,
        "Id of the last hub event whose effects are durable in Redis, per shard"
    );
    describe_counter!(
        HUB_BLOCKS_CONFIRMED_TOTAL,
        Unit::Count,
        "Blocks confirmed by the hub (BLOCK_CONFIRMED events), per shard"
    );
    describe_gauge!(
        HUB_BLOCK_NUMBER,
        "Number of the latest confirmed block, per shard"
    );
    describe_counter!(
        HUB_GAPS_FOUND_TOTAL,
        Unit::Count,
        "Blocks whose announced event counts did not match the events received, per shard"
    );
    describe_counter!(
        HUB_GAPS_REPAIRED_TOTAL,
        Unit::Count,
        "Gaps filled by re-fetching their events, per shard"
    );
    describe_gauge!(
        HUB_BACKFILL_NEEDED,
        "1 when the shard's cursor fell behind the hub's event retention (run a backfill), per shard"
    );
    describe_counter!(
        HUB_REQUEST_ERRORS_TOTAL,
        Unit::Count,
        "Failed hub requests, per gRPC method and status code"
    );
    describe_counter!(
        HUB_VERIFICATION_FAILURES_TOTAL,
        Unit::Count,
        "Messages rejected by hash or signature verification, per reason"
    );
    describe_counter!(
        SPAM_DROPPED_MESSAGES_TOTAL,
        Unit::Count,
        "Messages dropped because their FID is labelled spam"
    );
    describe_gauge!(
        SPAM_LABELLED_FIDS,
        Unit::Count,
        "FIDs currently labelled spam by the configured label lists"
    );
    describe_counter!(
        STREAM_PUBLISHED_ENTRIES_TOTAL,
        Unit::Count,
        "Entries added to Redis streams, per stream"
    );
    describe_counter!(
        STREAM_CONSUMED_ENTRIES_TOTAL,
        Unit::Count,
        "Entries applied to PostgreSQL and acknowledged, per stream"
    );
    describe_gauge!(
        STREAM_PENDING_ENTRIES,
        Unit::Count,
        "Entries delivered to a consumer and not yet acknowledged, per stream"
    );
    describe_gauge!(
        STREAM_LAG_ENTRIES,
        Unit::Count,
        "Entries not yet delivered to the consumer group, per stream"
    );
    describe_counter!(
        STREAM_DEAD_LETTERED_ENTRIES_TOTAL,
        Unit::Count,
        "Entries moved to the dead-letter stream, per stream and reason"
    );
    describe_histogram!(
        STREAM_APPLY_LAG_SECONDS,
        Unit::Seconds,
        "Time from receiving a hub event to applying it to PostgreSQL, per stream"
    );
    describe_counter!(
        STORE_ROWS_WRITTEN_TOTAL,
        Unit::Count,
        "Rows inserted or updated in PostgreSQL, per table"
    );
    describe_counter!(
        HUB_SUBSCRIBE_RECONNECTS_TOTAL,
        Unit::Count,
        "Subscriptions made again, per shard and reason (idle: the watchdog found the stream silent)"
    );
    describe_counter!(
        STORE_ANALYZE_RUNS_TOTAL,
        Unit::Count,
        "Planner statistics refreshed after a table grew, per table"
    );
    describe_histogram!(
        STORE_APPLY_BATCH_DURATION_SECONDS,
        Unit::Seconds,
        "Time to apply one batch of entries to PostgreSQL, per stream"
    );
    describe_gauge!(
        DATABASE_UP,
        "1 when the last PostgreSQL check succeeded, else 0"
    );
    describe_gauge!(REDIS_UP, "1 when the last Redis check succeeded, else 0");
    describe_gauge!(
        HUB_REQUEST_RATE_LIMIT,
        "Unary hub requests per second allowed now, lowered while the hub pushes back (0: no limit)"
    );
    describe_counter!(
        HUB_REQUEST_SLOWDOWNS_TOTAL,
        Unit::Count,
        "Times the hub request rate was lowered because the hub answered RESOURCE_EXHAUSTED or UNAVAILABLE"
    );
    describe_gauge!(
        BACKFILL_JOBS,
        Unit::Count,
        "Backfill jobs in the queue's books, per state (queued, delayed, in_progress, failed, completed)"
    );
    describe_gauge!(
        BACKFILL_FIDS,
        Unit::Count,
        "FIDs in the backfill queue's books, per state (done, pending, failed)"
    );
    describe_counter!(
        BACKFILL_JOBS_COMPLETED_TOTAL,
        Unit::Count,
        "Backfill jobs completed by this process"
    );
    describe_counter!(
        BACKFILL_JOB_RETRIES_TOTAL,
        Unit::Count,
        "Failed backfill job attempts queued again by this process"
    );
    describe_counter!(
        BACKFILL_JOBS_FAILED_TOTAL,
        Unit::Count,
        "Backfill jobs moved to the failed list by this process"
    );
    describe_counter!(
        BACKFILL_FIDS_TOTAL,
        Unit::Count,
        "FIDs backfilled by this process"
    );
    describe_counter!(
        BACKFILL_MESSAGES_TOTAL,
        Unit::Count,
        "Messages fetched from the hub and written by this process's backfill"
    );
    describe_counter!(
        BACKFILL_ROWS_REMOVED_TOTAL,
        Unit::Count,
        "Live rows taken out by the backfill because the hub no longer holds them, per table"
    );
    describe_histogram!(
        BACKFILL_FID_DURATION_SECONDS,
        Unit::Seconds,
        "Time to backfill one FID"
    );
    describe_counter!(
        QUERY_ANSWERS_TOTAL,
        Unit::Count,
        "Read queries answered, per query and the source that answered"
    );
    describe_counter!(
        QUERY_UNAVAILABLE_TOTAL,
        Unit::Count,
        "Read queries no source could answer, per query"
    );
    describe_counter!(
        QUERY_FALLBACKS_TOTAL,
        Unit::Count,
        "Read queries whose first source failed, per query and failed source"
    );
    describe_gauge!(
        QUERY_HUB_CIRCUIT_OPEN,
        Unit::Count,
        "1 while the hub's circuit breaker is open and queries go to the database"
    );
    describe_counter!(
        API_REQUESTS_TOTAL,
        Unit::Count,
        "REST API requests, per route and status"
    );
    describe_histogram!(
        API_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "REST API request latency, per route"
    );
    describe_counter!(
        MCP_TOOL_CALLS_TOTAL,
        Unit::Count,
        "MCP tool calls, per tool and outcome (ok, not_found, invalid, unavailable)"
    );
    describe_histogram!(
        MCP_TOOL_DURATION_SECONDS,
        Unit::Seconds,
        "MCP tool call latency, per tool"
    );
    // Actor metrics (mailbox depth, capacity, handled, failures, restarts) are declared by the
    // supervision runtime.
    waypoint_actors::metrics::describe();
}

/// How often [`run_upkeep`] should run: the exporter needs it to drain histogram buffers
/// when it does not serve HTTP itself.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Runs the recorder's upkeep every `every` until `shutdown` completes.
pub async fn run_upkeep(
    handle: PrometheusHandle,
    every: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = interval.tick() => handle.run_upkeep(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_is_idempotent_and_renders_declared_metrics() {
        let first = install();
        let second = install();
        metrics::counter!(STREAM_PUBLISHED_ENTRIES_TOTAL, LABEL_STREAM => "casts").increment(3);
        metrics::histogram!(STORE_APPLY_BATCH_DURATION_SECONDS, LABEL_STREAM => "casts")
            .record(0.02);
        let rendered = second.render();
        assert_eq!(rendered, first.render());
        assert!(rendered.contains(
            "# HELP waypoint_stream_published_entries_total Entries added to Redis streams"
        ));
        assert!(rendered.contains("waypoint_stream_published_entries_total{stream=\"casts\"} 3"));
        assert!(rendered.contains(
            "waypoint_store_apply_batch_duration_seconds_bucket{stream=\"casts\",le=\"0.025\"} 1"
        ));
    }

    #[test]
    fn names_follow_the_convention() {
        for name in [
            HUB_EVENTS_RECEIVED_TOTAL,
            HUB_CURSOR_EVENT_ID,
            HUB_BLOCKS_CONFIRMED_TOTAL,
            HUB_BLOCK_NUMBER,
            HUB_SUBSCRIBE_RECONNECTS_TOTAL,
            HUB_GAPS_FOUND_TOTAL,
            HUB_GAPS_REPAIRED_TOTAL,
            HUB_BACKFILL_NEEDED,
            HUB_REQUEST_ERRORS_TOTAL,
            HUB_VERIFICATION_FAILURES_TOTAL,
            SPAM_DROPPED_MESSAGES_TOTAL,
            STREAM_PUBLISHED_ENTRIES_TOTAL,
            STREAM_CONSUMED_ENTRIES_TOTAL,
            STREAM_PENDING_ENTRIES,
            STREAM_LAG_ENTRIES,
            STREAM_DEAD_LETTERED_ENTRIES_TOTAL,
            STORE_ROWS_WRITTEN_TOTAL,
            STORE_ANALYZE_RUNS_TOTAL,
            STORE_APPLY_BATCH_DURATION_SECONDS,
            DATABASE_UP,
            REDIS_UP,
            HUB_REQUEST_RATE_LIMIT,
            HUB_REQUEST_SLOWDOWNS_TOTAL,
            BACKFILL_JOBS,
            BACKFILL_FIDS,
            BACKFILL_JOBS_COMPLETED_TOTAL,
            BACKFILL_JOB_RETRIES_TOTAL,
            BACKFILL_JOBS_FAILED_TOTAL,
            BACKFILL_FIDS_TOTAL,
            BACKFILL_MESSAGES_TOTAL,
            BACKFILL_ROWS_REMOVED_TOTAL,
            BACKFILL_FID_DURATION_SECONDS,
        ] {
            assert!(name.starts_with("waypoint_"), "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
        }
    }
}
