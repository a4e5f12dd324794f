//! `publisher:<type>`: batches hub events of one stream type and appends them to its Redis
//! stream, then confirms them to their shard trackers.
//!
//! Invariants:
//! - an event is confirmed (the shard cursor may pass it) only after the XADD carrying it
//!   succeeded;
//! - a partial batch is flushed after `stream.publish_flush_ms` even when nothing else arrives;
//! - while the stream's backlog (entries its group has not acknowledged) is above
//!   `stream.max_backlog`, the publisher waits instead of appending: its mailbox fills, and the
//!   subscribers feeding it slow down (memory stays flat);
//! - Redis errors are retried with backoff for `PUBLISH_DEADLINE`; past it the actor fails and
//!   the producer subtree restarts from the durable cursors (nothing confirmed is lost, nothing
//!   unconfirmed was counted).

use std::time::{Duration, Instant};

use std::collections::BTreeMap;
use std::sync::Arc;

use waypoint_actors::{Actor, ActorError, Context, Mailbox};

use super::tracker::Ack;
use crate::metrics::{LABEL_STREAM, STREAM_PUBLISHED_ENTRIES_TOTAL};
use crate::runtime::Runtime;
use crate::streams::{NewEntry, StreamType};

/// How long a batch keeps retrying Redis before the actor gives up and restarts.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(30);
/// First pause between publish retries.
const RETRY_INITIAL: Duration = Duration::from_millis(100);
/// Longest pause between publish retries.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long a backlog reading is trusted before asking Redis again.
const BACKLOG_MAX_AGE: Duration = Duration::from_millis(500);
/// Pause between backlog checks while over the limit.
const BACKLOG_POLL: Duration = Duration::from_millis(200);

/// The publishers' mailboxes by stream type.
pub type Publishers = Arc<BTreeMap<StreamType, Mailbox<Msg>>>;

pub enum Msg {
    /// Append these events (each ack confirms its event once durable). A subscriber hands
    /// over what one read gave it, so the mailbox counts batches, not events.
    Publish { entries: Vec<(NewEntry, Ack)> },
    /// The flush timer of a partial batch fired.
    Flush,
}

pub struct State {
    entries: Vec<NewEntry>,
    acks: Vec<Ack>,
    flush_scheduled: bool,
    backlog: Option<(u64, Instant)>,
}

/// The publisher of one stream type.
pub struct Publisher {
    pub kind: StreamType,
    pub runtime: Runtime,
}

impl Actor for Publisher {
    type Msg = Msg;
    type State = State;
    type Args = ();

    async fn init(&self, _ctx: &Context<Msg>, _args: ()) -> Result<State, ActorError> {
        let group = self.runtime.config().stream.group.clone();
        // The group exists from the first entry on, so trimming always has a position to
        // respect and consumers that start later read from the beginning.
        self.runtime.redis().ensure_group(self.kind, &group).await?;
        Ok(State {
            entries: Vec::new(),
            acks: Vec::new(),
            flush_scheduled: false,
            backlog: None,
        })
    }

    async fn handle(
        &self,
        ctx: &Context<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorError> {
        match msg {
            Msg::Publish { entries } => self.on_publish(ctx, state, entries).await,
            Msg::Flush => self.on_flush(ctx, state).await,
        }
    }

    async fn stopping(&self, ctx: &Context<Msg>, state: &mut State) -> Result<(), ActorError> {
        // The drain handed us every queued event; make the last partial batch durable.
        self.flush(ctx, state).await
    }
}

impl Publisher {
    async fn on_publish(
        &self,
        ctx: &Context<Msg>,
        state: &mut State,
        entries: Vec<(NewEntry, Ack)>,
    ) -> Result<(), ActorError> {
        for (entry, ack) in entries {
            state.entries.push(entry);
            state.acks.push(ack);
        }
        let config = self.runtime.config();
        if state.entries.len() >= config.stream.publish_batch_size {
            self.flush(ctx, state).await
        } else {
            if !state.flush_scheduled {
                state.flush_scheduled = true;
                ctx.send_self_after(
                    Duration::from_millis(config.stream.publish_flush_ms),
                    Msg::Flush,
                );
            }
            Ok(())
        }
    }

    async fn on_flush(&self, ctx: &Context<Msg>, state: &mut State) -> Result<(), ActorError> {
        state.flush_scheduled = false;
        self.flush(ctx, state).await
    }

    async fn flush(&self, ctx: &Context<Msg>, state: &mut State) -> Result<(), ActorError> {
        if state.entries.is_empty() {
            return Ok(());
        }
        self.wait_for_room(ctx, state).await?;
        let redis = self.runtime.redis();
        let started = Instant::now();
        let mut delay = RETRY_INITIAL;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match redis.publish(self.kind, &state.entries).await {
                Ok(_) => break,
                Err(error) if error.is_retryable() && started.elapsed() < PUBLISH_DEADLINE => {
                    tracing::warn!(%error, stream = %self.kind, attempt, "xadd failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
                Err(error) => {
                    return Err(format!(
                        "publishing {} entries to {} failed after {attempt} attempts: {error}",
                        state.entries.len(),
                        self.kind
                    )
                    .into());
                }
            }
        }
        let published = state.entries.len() as u64;
        state.entries.clear();
        for ack in state.acks.drain(..) {
            ack.confirm();
        }
        if let Some((backlog, _)) = state.backlog.as_mut() {
            *backlog += published;
        }
        metrics::counter!(STREAM_PUBLISHED_ENTRIES_TOTAL, LABEL_STREAM => self.kind.as_str())
            .increment(published);
        Ok(())
    }

    /// Waits while the stream holds more unacknowledged entries than `stream.max_backlog`.
    async fn wait_for_room(&self, ctx: &Context<Msg>, state: &mut State) -> Result<(), ActorError> {
        let config = self.runtime.config();
        let limit = config.stream.max_backlog;
        let mut waiting_since: Option<Instant> = None;
        loop {
            let fresh = state
                .backlog
                .is_some_and(|(_, checked)| checked.elapsed() < BACKLOG_MAX_AGE);
            if !fresh {
                let backlog = self
                    .runtime
                    .redis()
                    .backlog(self.kind, &config.stream.group)
                    .await?;
                state.backlog = Some((backlog, Instant::now()));
            }
            let backlog = state.backlog.map_or(0, |(backlog, _)| backlog);
            // While draining, publish anyway: the batch is already in memory and consumers
            // will take it later; waiting would only get it killed.
            if backlog <= limit || ctx.is_stopping() {
                if let Some(since) = waiting_since {
                    tracing::info!(stream = %self.kind, waited_ms = since.elapsed().as_millis() as u64, "backlog below limit, publishing again");
                }
                return Ok(());
            }
            if waiting_since.is_none() {
                tracing::warn!(stream = %self.kind, backlog, limit, "stream backlog over limit, slowing down");
                waiting_since = Some(Instant::now());
            }
            tokio::time::sleep(BACKLOG_POLL).await;
            state.backlog = None;
        }
    }
}
/// Hands each publisher its share of a batch; waits while a publisher's mailbox is full
/// (backpressure).
pub(super) async fn hand_over(
    publishers: &Publishers,
    outgoing: BTreeMap<StreamType, Vec<(NewEntry, Ack)>>,
) -> Result<(), ActorError> {
    for (kind, entries) in outgoing {
        let Some(publisher) = publishers.get(&kind) else {
            return Err(format!("no publisher for stream {kind}").into());
        };
        publisher
            .send(Msg::Publish { entries })
            .await
            .map_err(|_| format!("publisher:{kind} is not running"))?;
    }
    Ok(())
}
