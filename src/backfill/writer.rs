//! `writer`: gathers the rows that workers hand over (pages of many FIDs, their on-chain
//! events and proofs, the rows their answers prove gone) into large transactions, applied with
//! the shared CRDT rules, and answers each worker once its rows are committed.
//!
//! Invariants:
//! - a worker hears "written" only after the transaction holding its rows committed, so a FID
//!   is reconciled (and its job marked done) only after all of its rows are durable;
//! - a batch is written when it holds `backfill.write_batch_size` messages, when every worker
//!   is waiting on it (nobody else will add to it), or after [`LINGER`];
//! - database errors that may pass are retried with backoff; past [`APPLY_DEADLINE`] the actor
//!   fails (its waiting workers see the failure and retry their FIDs later). A batch the
//!   database rejects is split: each worker's rows are applied alone, and only the ones that
//!   fail are answered with the error.

use std::time::{Duration, Instant};

use waypoint_actors::{Actor, ActorError, Context, RpcReplyPort};

use crate::metrics::{
    LABEL_STREAM, LABEL_TABLE, STORE_APPLY_BATCH_DURATION_SECONDS, STORE_ROWS_WRITTEN_TOTAL,
};
use crate::runtime::Runtime;
use crate::store::apply::{self, ApplyError};
use crate::store::rows::Batch;

/// How long a partly filled batch waits for more rows.
const LINGER: Duration = Duration::from_millis(20);
/// How long a batch keeps retrying a failing database before the actor gives up.
const APPLY_DEADLINE: Duration = Duration::from_secs(60);
/// First pause between apply retries.
const RETRY_INITIAL: Duration = Duration::from_millis(100);
/// Longest pause between retries.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// The `stream` label of the apply-duration histogram for backfill batches.
const METRIC_LABEL: &str = "backfill";

/// What a worker learns about its rows: committed, or why not.
pub(crate) type WriteResult = Result<(), String>;

pub(crate) enum Msg {
    /// Rows to write; `messages` counts the messages among them (for the batch size).
    Write {
        batch: Box<Batch>,
        messages: u64,
        reply: RpcReplyPort<WriteResult>,
    },
    /// The linger time of the gathering batch `generation` is over.
    Flush { generation: u64 },
}

pub(crate) struct State {
    pending: Vec<(Batch, RpcReplyPort<WriteResult>)>,
    pending_messages: u64,
    /// Counts batches, so a stale linger timer does not flush the next one early.
    generation: u64,
    timer_set: bool,
}

/// The writer of the backfill subtree.
pub(crate) struct Writer {
    pub runtime: Runtime,
    /// Workers that may be waiting on the writer at once.
    pub num_workers: usize,
}

impl Actor for Writer {
    type Msg = Msg;
    type State = State;
    type Args = ();

    async fn init(&self, _ctx: &Context<Msg>, _args: ()) -> Result<State, ActorError> {
        Ok(State {
            pending: Vec::new(),
            pending_messages: 0,
            generation: 0,
            timer_set: false,
        })
    }

    async fn handle(
        &self,
        ctx: &Context<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorError> {
        match msg {
            Msg::Write {
                batch,
                messages,
                reply,
            } => self.on_write(ctx, state, *batch, messages, reply).await,
            Msg::Flush { generation } => self.on_flush(ctx, state, generation).await,
        }
    }

    /// Commits what workers handed over before the subtree stops.
    async fn stopping(&self, ctx: &Context<Msg>, state: &mut State) -> Result<(), ActorError> {
        self.flush(ctx, state).await
    }
}

impl Writer {
    async fn on_write(
        &self,
        ctx: &Context<Msg>,
        state: &mut State,
        batch: Batch,
        messages: u64,
        reply: RpcReplyPort<WriteResult>,
    ) -> Result<(), ActorError> {
        state.pending.push((batch, reply));
        state.pending_messages += messages;
        let batch_size = self.runtime.config().backfill.write_batch_size as u64;
        if state.pending_messages >= batch_size || state.pending.len() >= self.num_workers {
            return self.flush(ctx, state).await;
        }
        if !state.timer_set {
            state.timer_set = true;
            ctx.send_self_after(
                LINGER,
                Msg::Flush {
                    generation: state.generation,
                },
            );
        }
        Ok(())
    }

    async fn on_flush(
        &self,
        ctx: &Context<Msg>,
        state: &mut State,
        generation: u64,
    ) -> Result<(), ActorError> {
        if generation != state.generation {
            return Ok(());
        }
        self.flush(ctx, state).await
    }

    async fn flush(&self, ctx: &Context<Msg>, state: &mut State) -> Result<(), ActorError> {
        state.generation += 1;
        state.timer_set = false;
        state.pending_messages = 0;
        let pending = std::mem::take(&mut state.pending);
        if pending.is_empty() {
            return Ok(());
        }
        let (batches, replies): (Vec<Batch>, Vec<RpcReplyPort<WriteResult>>) =
            pending.into_iter().unzip();
        if batches.len() == 1 {
            let batch = batches.into_iter().next().unwrap_or_default();
            let result = self.apply_with_retry(ctx, batch).await?;
            answer(replies, |_| result.clone());
            return Ok(());
        }
        let mut combined = Batch::default();
        let mut parts = Vec::with_capacity(batches.len());
        for batch in batches {
            // Kept for the split, should the database reject the combined batch.
            parts.push(batch.clone());
            combined.extend(batch);
        }
        match self.apply_with_retry(ctx, combined).await? {
            Ok(()) => answer(replies, |_| Ok(())),
            Err(error) => {
                tracing::warn!(%error, parts = parts.len(), "backfill batch rejected, writing each worker's rows alone");
                let mut results = Vec::with_capacity(parts.len());
                for part in parts {
                    results.push(self.apply_with_retry(ctx, part).await?);
                }
                answer(replies, |index| results[index].clone());
            }
        }
        Ok(())
    }

    /// Applies a batch, retrying errors that may pass. The outer error ends the actor; the
    /// inner one is the database's rejection of the rows.
    async fn apply_with_retry(
        &self,
        ctx: &Context<Msg>,
        batch: Batch,
    ) -> Result<WriteResult, ActorError> {
        let started = Instant::now();
        let mut delay = RETRY_INITIAL;
        loop {
            match self.apply_once(&batch).await {
                Ok(()) => {
                    metrics::histogram!(STORE_APPLY_BATCH_DURATION_SECONDS, LABEL_STREAM => METRIC_LABEL)
                        .record(started.elapsed().as_secs_f64());
                    return Ok(Ok(()));
                }
                Err(error) if error.is_retryable() => {
                    if started.elapsed() > APPLY_DEADLINE || ctx.is_stopping() {
                        return Err(
                            format!("writing a backfill batch kept failing: {error}").into()
                        );
                    }
                    tracing::warn!(%error, "backfill write failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
                Err(error) => return Ok(Err(error.to_string())),
            }
        }
    }

    async fn apply_once(&self, batch: &Batch) -> Result<(), ApplyError> {
        let pg = self
            .runtime
            .pg()
            .ok_or_else(|| ApplyError::unavailable("no database in this process"))?;
        let mut client = pg
            .get()
            .await
            .map_err(|error| ApplyError::unavailable(&error.to_string()))?;
        let applied = apply::apply_batch(&mut client, batch).await?;
        for (table, rows) in &applied.rows_written {
            metrics::counter!(STORE_ROWS_WRITTEN_TOTAL, LABEL_TABLE => *table).increment(*rows);
            pg.note_written(table, *rows);
        }
        Ok(())
    }
}

fn answer(replies: Vec<RpcReplyPort<WriteResult>>, result: impl Fn(usize) -> WriteResult) {
    for (index, reply) in replies.into_iter().enumerate() {
        // A worker that stopped waiting is gone; its rows are committed anyway.
        let _ = reply.send(result(index));
    }
}
