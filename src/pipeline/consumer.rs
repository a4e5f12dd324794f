//! `consumer:<type>:<n>`: reads its stream through the consumer group in batches, applies each
//! batch to PostgreSQL with the shared apply rules, then acknowledges it.
//!
//! Invariants:
//! - an entry is acknowledged only after its effects are committed (at-least-once delivery,
//!   and the apply rules are idempotent and order-independent, so the state is exactly-once);
//! - a new incarnation first re-reads its own pending entries (the consumer name is stable for
//!   the process), so a batch interrupted by a crash is applied again, not lost;
//! - an entry that cannot be decoded goes to the dead-letter stream at once; one that fails to
//!   apply is left pending with its error recorded, and the reclaimer redelivers it until
//!   `stream.max_deliveries`, then dead-letters it — it never blocks the stream;
//! - database errors that may pass (connection, serialization, deadlock) are retried with
//!   backoff; past `APPLY_DEADLINE` the actor fails and is restarted.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use waypoint_actors::{Actor, ActorError, Context};
use waypoint_proto::HubEvent;

use crate::hub;
use crate::metrics::{
    LABEL_REASON, LABEL_STREAM, LABEL_TABLE, STORE_APPLY_BATCH_DURATION_SECONDS,
    STORE_ROWS_WRITTEN_TOTAL, STREAM_APPLY_LAG_SECONDS, STREAM_CONSUMED_ENTRIES_TOTAL,
    STREAM_DEAD_LETTERED_ENTRIES_TOTAL,
};
use crate::runtime::Runtime;
use crate::store::apply::{self, ApplyOptions, EventInput};
use crate::streams::{Entry, ReadFrom, StreamType};

/// How long a batch keeps retrying a failing database before the actor gives up.
const APPLY_DEADLINE: Duration = Duration::from_secs(60);
/// First pause between apply retries.
const RETRY_INITIAL: Duration = Duration::from_millis(100);
/// Longest pause between retries.
const RETRY_MAX: Duration = Duration::from_secs(5);

pub enum Msg {
    /// Read and apply the next batch.
    Poll,
    /// Entries the reclaimer took over from a stuck or dead consumer.
    Reclaimed { entries: Vec<Entry> },
}

pub struct State {
    connection: Option<MultiplexedConnection>,
    /// Still re-reading this consumer's pending entries.
    recovering: bool,
    name: String,
    retry_delay: Duration,
}

/// One consumer of one stream type.
pub struct Consumer {
    pub kind: StreamType,
    pub index: u32,
    pub runtime: Runtime,
}

impl Actor for Consumer {
    type Msg = Msg;
    type State = State;
    type Args = ();

    async fn init(&self, ctx: &Context<Msg>, _args: ()) -> Result<State, ActorError> {
        let group = self.runtime.config().stream.group.clone();
        self.runtime.redis().ensure_group(self.kind, &group).await?;
        let _ = ctx.send_self(Msg::Poll);
        Ok(State {
            connection: None,
            recovering: true,
            name: format!("{}:{}:{}", self.runtime.instance(), self.kind, self.index),
            retry_delay: RETRY_INITIAL,
        })
    }

    async fn handle(
        &self,
        ctx: &Context<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorError> {
        match msg {
            Msg::Poll => self.on_poll(ctx, state).await,
            Msg::Reclaimed { entries } => self.process(ctx, entries).await,
        }
    }
}

impl Consumer {
    async fn on_poll(&self, ctx: &Context<Msg>, state: &mut State) -> Result<(), ActorError> {
        let config = self.runtime.config();
        let redis = self.runtime.redis();
        if state.connection.is_none() {
            match redis.blocking_connection().await {
                Ok(connection) => state.connection = Some(connection),
                Err(error) => return self.retry_poll(ctx, state, &error.to_string()),
            }
        }
        let Some(connection) = state.connection.as_mut() else {
            return Ok(());
        };
        let from = if state.recovering {
            ReadFrom::Pending
        } else {
            ReadFrom::New
        };
        let read = tokio::select! {
            read = redis.read_group(
                connection,
                self.kind,
                &config.stream.group,
                &state.name,
                config.stream.consumer_batch_size,
                config.stream.block_ms,
                from,
            ) => read,
            // Stopping: abandon the blocking read. Anything it delivered stays pending under
            // this consumer's name and is re-read first by the next incarnation.
            () = ctx.stop_requested() => {
                state.connection = None;
                return Ok(());
            }
        };
        let mut entries = match read {
            Ok(entries) => entries,
            Err(error) => {
                // A dedicated connection does not reconnect by itself.
                state.connection = None;
                return self.retry_poll(ctx, state, &error.to_string());
            }
        };
        // A small batch: give the stream a moment to fill up (see consumer_linger_ms).
        let batch_size = config.stream.consumer_batch_size;
        if from == ReadFrom::New
            && !entries.is_empty()
            && entries.len() < batch_size / 4
            && config.stream.consumer_linger_ms > 0
            && !ctx.is_stopping()
        {
            tokio::time::sleep(Duration::from_millis(config.stream.consumer_linger_ms)).await;
            let more = redis
                .read_group(
                    connection,
                    self.kind,
                    &config.stream.group,
                    &state.name,
                    batch_size - entries.len(),
                    0,
                    ReadFrom::NewNoWait,
                )
                .await;
            match more {
                Ok(more) => entries.extend(more),
                Err(error) => {
                    // What was read stays pending under this name: apply it, then reconnect.
                    tracing::warn!(stream = %self.kind, %error, "second read failed");
                    state.connection = None;
                }
            }
        }
        state.retry_delay = RETRY_INITIAL;
        if state.recovering && entries.is_empty() {
            state.recovering = false;
        } else if !entries.is_empty() {
            self.process(ctx, entries).await?;
        }
        let _ = ctx.send_self(Msg::Poll);
        Ok(())
    }

    fn retry_poll(
        &self,
        ctx: &Context<Msg>,
        state: &mut State,
        error: &str,
    ) -> Result<(), ActorError> {
        tracing::warn!(stream = %self.kind, error, delay_ms = state.retry_delay.as_millis() as u64, "read failed, retrying");
        ctx.send_self_after(state.retry_delay, Msg::Poll);
        state.retry_delay = (state.retry_delay * 2).min(RETRY_MAX);
        Ok(())
    }

    /// Applies a batch of entries and acknowledges what was applied.
    async fn process(&self, ctx: &Context<Msg>, entries: Vec<Entry>) -> Result<(), ActorError> {
        let config = self.runtime.config();
        let redis = self.runtime.redis();
        let group = config.stream.group.clone();

        let mut decoded: Vec<(Entry, HubEvent)> = Vec::with_capacity(entries.len());
        for entry in entries {
            let reason = match entry.raw.as_deref() {
                None => "entry without event bytes".to_owned(),
                Some(raw) => match hub::decode_event(raw) {
                    Ok(event) => {
                        decoded.push((entry, event));
                        continue;
                    }
                    Err(error) => format!("undecodable event: {error}"),
                },
            };
            tracing::warn!(stream = %self.kind, id = %entry.id, reason, "dead-lettering entry");
            redis
                .dead_letter(self.kind, &group, &entry, &reason)
                .await?;
            metrics::counter!(STREAM_DEAD_LETTERED_ENTRIES_TOTAL, LABEL_STREAM => self.kind.as_str(), LABEL_REASON => "undecodable")
                .increment(1);
        }
        if decoded.is_empty() {
            return Ok(());
        }

        let options = ApplyOptions {
            store_messages: config.database.store_messages,
        };
        let applied = self.apply_with_retry(ctx, &decoded, &options).await?;
        let failed = match applied {
            Ok(()) => Vec::new(),
            // A batch the database rejects for a reason retrying will not fix: find the
            // culprit(s) one entry at a time; the rest go through.
            Err(error) => {
                tracing::warn!(stream = %self.kind, %error, entries = decoded.len(), "batch rejected, applying entries one by one");
                self.isolate(ctx, &decoded, &options).await?
            }
        };
        if self.runtime.take_injected_panic(self.kind) {
            panic!(
                "injected consumer panic after applying a batch of {}",
                decoded.len()
            );
        }
        let mut acked = Vec::with_capacity(decoded.len());
        for (index, (entry, _)) in decoded.iter().enumerate() {
            if let Some((_, error)) = failed.iter().find(|(failed, _)| *failed == index) {
                redis.record_error(self.kind, &entry.id, error).await?;
            } else {
                acked.push(entry.id.clone());
            }
        }
        redis.ack(self.kind, &group, &acked).await?;
        metrics::counter!(STREAM_CONSUMED_ENTRIES_TOTAL, LABEL_STREAM => self.kind.as_str())
            .increment(acked.len() as u64);
        let now = now_ms();
        let lags: Vec<u32> = decoded
            .iter()
            .filter_map(|(entry, _)| entry.received_at_ms)
            .map(|received| now.saturating_sub(received).min(u64::from(u32::MAX)) as u32)
            .collect();
        let histogram =
            metrics::histogram!(STREAM_APPLY_LAG_SECONDS, LABEL_STREAM => self.kind.as_str());
        for lag in &lags {
            histogram.record(f64::from(*lag) / 1000.0);
        }
        self.runtime.add_lag_samples(lags);
        Ok(())
    }

    /// Applies the batch, retrying errors that may pass. The outer error ends the actor; the
    /// inner one is a rejection of the batch's content.
    async fn apply_with_retry(
        &self,
        ctx: &Context<Msg>,
        batch: &[(Entry, HubEvent)],
        options: &ApplyOptions,
    ) -> Result<Result<(), String>, ActorError> {
        let started = Instant::now();
        let mut delay = RETRY_INITIAL;
        loop {
            let result = self.apply_once(batch, options).await;
            match result {
                Ok(()) => {
                    metrics::histogram!(STORE_APPLY_BATCH_DURATION_SECONDS, LABEL_STREAM => self.kind.as_str())
                        .record(started.elapsed().as_secs_f64());
                    return Ok(Ok(()));
                }
                Err(error) if error.is_retryable() => {
                    if started.elapsed() > APPLY_DEADLINE || ctx.is_stopping() {
                        return Err(format!(
                            "applying a batch of {} kept failing: {error}",
                            batch.len()
                        )
                        .into());
                    }
                    tracing::warn!(stream = %self.kind, %error, "apply failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
                Err(error) => return Ok(Err(error.to_string())),
            }
        }
    }

    async fn apply_once(
        &self,
        batch: &[(Entry, HubEvent)],
        options: &ApplyOptions,
    ) -> Result<(), apply::ApplyError> {
        let pg = self
            .runtime
            .pg()
            .ok_or_else(|| apply::ApplyError::unavailable("no database in this process"))?;
        let mut client = pg
            .get()
            .await
            .map_err(|error| apply::ApplyError::unavailable(&error.to_string()))?;
        let inputs: Vec<EventInput<'_>> = batch
            .iter()
            .map(|(entry, event)| EventInput {
                event,
                raw: entry.raw.as_deref(),
            })
            .collect();
        let applied = apply::apply_events(&mut client, &inputs, options).await?;
        for (table, rows) in &applied.rows_written {
            metrics::counter!(STORE_ROWS_WRITTEN_TOTAL, LABEL_TABLE => *table).increment(*rows);
            pg.note_written(table, *rows);
        }
        Ok(())
    }

    /// Applies entries one at a time; returns the indexes that failed with their errors.
    async fn isolate(
        &self,
        ctx: &Context<Msg>,
        batch: &[(Entry, HubEvent)],
        options: &ApplyOptions,
    ) -> Result<Vec<(usize, String)>, ActorError> {
        let mut failed = Vec::new();
        for (index, item) in batch.iter().enumerate() {
            if let Err(error) = self
                .apply_with_retry(ctx, std::slice::from_ref(item), options)
                .await?
            {
                tracing::warn!(stream = %self.kind, id = %item.0.id, error, "entry rejected by the database");
                failed.push((index, error));
            }
        }
        Ok(failed)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}
