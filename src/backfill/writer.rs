//! `writer:<part>`: gathers the rows of one part of the data (casts, reactions, links, ...,
//! see `BatchPart`) that workers hand over, from many FIDs, into large transactions applied
//! with the shared CRDT rules, and answers each worker once its rows are committed. One
//! writer per part, as the live path has one consumer per stream type: the parts take
//! different advisory locks, so PostgreSQL applies them in parallel.
//!
//! Invariants:
//! - a worker hears "written" only after the transaction holding its rows committed, so a FID
//!   is reconciled (and its job marked done) only after all of its rows are durable;
//! - rows are written as soon as nothing else is waiting in the mailbox (what arrived while the
//!   last transaction ran goes into the next one: batches grow with the load, with no added
//!   latency when it is light), or once they hold `backfill.write_batch_size` rows;
//! - database errors that may pass are retried with backoff; past [`APPLY_DEADLINE`] the actor
//!   fails (its waiting workers see the failure and retry their FIDs later). A batch the
//!   database rejects is split: each worker's rows are applied alone, and only the ones that
//!   fail are answered with the error.

use std::time::{Duration, Instant};

use crate::store::rows::BatchPart;

use waypoint_actors::{Actor, ActorError, Context, RpcReplyPort};

use crate::metrics::{
    LABEL_STREAM, LABEL_TABLE, STORE_APPLY_BATCH_DURATION_SECONDS, STORE_ROWS_WRITTEN_TOTAL,
};
use crate::runtime::Runtime;
use crate::store::apply::{self, ApplyError};
use crate::store::rows::Batch;

/// How long a batch keeps retrying a failing database before the actor gives up.
const APPLY_DEADLINE: Duration = Duration::from_secs(60);
/// First pause between apply retries.
const RETRY_INITIAL: Duration = Duration::from_millis(100);
/// Longest pause between retries.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// What a worker learns about its rows: committed, or why not.
pub(crate) type WriteResult = Result<(), String>;

pub(crate) enum Msg {
    /// Rows of this writer's part to write.
    Write {
        batch: Box<Batch>,
        rows: usize,
        reply: RpcReplyPort<WriteResult>,
    },
}

pub(crate) struct State {
    pending: Vec<(Batch, RpcReplyPort<WriteResult>)>,
    pending_rows: usize,
    /// `backfill:<part>`, the label of the apply-duration histogram.
    label: String,
}

/// The writer of one part of the data.
pub(crate) struct Writer {
    pub runtime: Runtime,
    pub part: BatchPart,
}

impl Actor for Writer {
    type Msg = Msg;
    type State = State;
    type Args = ();

    async fn init(&self, _ctx: &Context<Msg>, _args: ()) -> Result<State, ActorError> {
        Ok(State {
            pending: Vec::new(),
            pending_rows: 0,
            label: format!("backfill:{}", self.part.as_str()),
        })
    }

    async fn handle(
        &self,
        ctx: &Context<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorError> {
        match msg {
            Msg::Write { batch, rows, reply } => {
                self.on_write(ctx, state, *batch, rows, reply).await
            }
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
        rows: usize,
        reply: RpcReplyPort<WriteResult>,
    ) -> Result<(), ActorError> {
        state.pending.push((batch, reply));
        state.pending_rows += rows;
        let batch_size = self.runtime.config().backfill.write_batch_size;
        // The mailbox counts the message being handled: at 1, nothing else is waiting.
        if state.pending_rows >= batch_size || ctx.mailbox().depth() <= 1 {
            return self.flush(ctx, state).await;
        }
        Ok(())
    }

    async fn flush(&self, ctx: &Context<Msg>, state: &mut State) -> Result<(), ActorError> {
        state.pending_rows = 0;
        let pending = std::mem::take(&mut state.pending);
        if pending.is_empty() {
            return Ok(());
        }
        let (batches, replies): (Vec<Batch>, Vec<RpcReplyPort<WriteResult>>) =
            pending.into_iter().unzip();
        if batches.len() == 1 {
            let batch = batches.into_iter().next().unwrap_or_default();
            let result = self.apply_with_retry(ctx, &state.label, &batch).await?;
            answer(replies, |_| result.clone());
            return Ok(());
        }
        // Combined without copying rows; on a rejection the shapes cut it back into the
        // workers' parts.
        let mut combined = Batch::default();
        let mut shapes = Vec::with_capacity(batches.len());
        for batch in batches {
            shapes.push(batch.shape());
            combined.extend(batch);
        }
        let label = state.label.clone();
        match self.apply_with_retry(ctx, &label, &combined).await? {
            Ok(()) => answer(replies, |_| Ok(())),
            Err(error) => {
                tracing::warn!(%error, parts = shapes.len(), part = self.part.as_str(), "backfill batch rejected, writing each worker's rows alone");
                let mut results = Vec::with_capacity(shapes.len());
                for shape in &shapes {
                    let part = combined.take_front(shape);
                    results.push(self.apply_with_retry(ctx, &label, &part).await?);
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
        label: &str,
        batch: &Batch,
    ) -> Result<WriteResult, ActorError> {
        let started = Instant::now();
        let mut delay = RETRY_INITIAL;
        loop {
            match self.apply_once(batch).await {
                Ok(()) => {
                    metrics::histogram!(STORE_APPLY_BATCH_DURATION_SECONDS, LABEL_STREAM => label.to_owned())
                        .record(started.elapsed().as_secs_f64());
                    return Ok(Ok(()));
                }
                Err(error) if error.is_retryable() => {
                    if started.elapsed() > APPLY_DEADLINE || ctx.is_stopping() {
                        return Err(
                            format!("writing a backfill batch kept failing: {error}").into()
                        );
                    }
                    tracing::warn!(%error, part = self.part.as_str(), "backfill write failed, retrying");
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
