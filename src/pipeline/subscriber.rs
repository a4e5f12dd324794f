//! `subscriber:<shard>`: one Snapchain `Subscribe` stream per data shard. Reads raw events,
//! verifies and filters them, and hands each to the publisher of its stream type; checks every
//! block against its BLOCK_CONFIRMED counts and sends gaps to `repair`.
//!
//! Invariants:
//! - the durable cursor (Redis `cursor:<shard>`) only moves past an event once it is in Redis
//!   (see `tracker`); a BLOCK_CONFIRMED is held until its block is known complete, so the
//!   cursor never passes a gap and always rests at the end of a verified block;
//! - a new incarnation resumes at cursor + 1 (`from_id` is inclusive); a reconnect within an
//!   incarnation resumes after the last event seen; duplicates are harmless downstream;
//! - a stream silent for `hub.subscribe_idle_timeout_seconds` is reconnected (BLOCK_CONFIRMED
//!   arrives about every second, so silence means a dead connection);
//! - handing an event to a publisher waits while its mailbox is full: that is the backpressure
//!   that keeps memory flat when Redis or the consumers fall behind.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{FutureExt, StreamExt};
use waypoint_actors::{Actor, ActorError, Context, Mailbox};
use waypoint_proto::{BlockConfirmedBody, HubEvent, hub_event};

use super::publisher::{Publishers, hand_over};
use super::repair;
use super::route::{COUNTED, Route, SUBSCRIBED, Skip, route_all};
use super::tracker::{Ack, ShardTracker};
use crate::config::StartFrom;
use crate::hub::{self, ids};
use crate::metrics::{
    HUB_BLOCK_NUMBER, HUB_BLOCKS_CONFIRMED_TOTAL, HUB_CURSOR_EVENT_ID, HUB_EVENTS_RECEIVED_TOTAL,
    HUB_GAPS_FOUND_TOTAL, HUB_SUBSCRIBE_RECONNECTS_TOTAL, HUB_VERIFICATION_FAILURES_TOTAL,
    LABEL_REASON, LABEL_SHARD, LABEL_STREAM, SPAM_DROPPED_MESSAGES_TOTAL,
    STREAM_DEAD_LETTERED_ENTRIES_TOTAL,
};
use crate::runtime::Runtime;
use crate::streams::{NewEntry, StreamType, UNKNOWN_BUCKET};

/// Events taken from the stream per pull when they are already waiting (one verification
/// batch, off the runtime threads).
const PULL_BATCH: usize = 256;
/// First pause before reconnecting after an error.
const RECONNECT_INITIAL: Duration = Duration::from_millis(250);
/// Longest pause between reconnects.
const RECONNECT_MAX: Duration = Duration::from_secs(30);

pub enum Msg {
    /// (Re)open the subscription.
    Connect,
    /// Read the next events.
    Pull,
    /// Persist the cursor (timer).
    FlushCursor,
}

pub struct State {
    hub: hub::Client,
    tracker: Arc<ShardTracker>,
    stream: Option<hub::RawEventStream>,
    /// Where the next subscription starts (`None`: live events only).
    next_from: Option<u64>,
    reconnect_delay: Duration,
    /// The block being checked against its BLOCK_CONFIRMED.
    block: Option<BlockCheck>,
    /// The last BLOCK_CONFIRMED number seen.
    last_block: Option<u64>,
    flushed: Option<u64>,
    checked_retention: bool,
}

/// Accounting of one block: what its BLOCK_CONFIRMED announced and what arrived.
struct BlockCheck {
    number: u64,
    /// `None` when the block's BLOCK_CONFIRMED never arrived (its counts are unknown).
    expected: Option<BTreeMap<i32, u64>>,
    seen: HashSet<u64>,
    counts: BTreeMap<i32, u64>,
    /// Holds the cursor before this block until it is known complete.
    hold: Ack,
}

/// The subscriber of one shard.
pub struct Subscriber {
    pub shard: u32,
    pub runtime: Runtime,
    pub publishers: Publishers,
    pub repair: Mailbox<repair::Msg>,
}

impl Actor for Subscriber {
    type Msg = Msg;
    type State = State;
    type Args = ();

    async fn init(&self, ctx: &Context<Msg>, _args: ()) -> Result<State, ActorError> {
        let hub = self.runtime.hub().ok_or("no hub client in this process")?;
        let cursor = self.runtime.redis().load_cursor(self.shard).await?;
        let config = self.runtime.config();
        let next_from = match (cursor, config.hub.start_from) {
            (Some(cursor), _) => Some(cursor + 1),
            (None, StartFrom::Earliest) => Some(0),
            (None, StartFrom::Latest) => None,
        };
        tracing::info!(
            shard = self.shard,
            ?cursor,
            ?next_from,
            "subscriber starting"
        );
        self.runtime
            .update_shard(self.shard, |shard| shard.cursor = cursor);
        let _ = ctx.send_self(Msg::Connect);
        ctx.send_self_after(
            Duration::from_millis(config.stream.cursor_flush_ms),
            Msg::FlushCursor,
        );
        Ok(State {
            hub,
            tracker: ShardTracker::new(self.shard, cursor),
            stream: None,
            next_from,
            reconnect_delay: RECONNECT_INITIAL,
            block: None,
            last_block: None,
            flushed: cursor,
            checked_retention: cursor.is_none(),
        })
    }

    async fn handle(
        &self,
        ctx: &Context<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorError> {
        match msg {
            Msg::Connect => self.on_connect(ctx, state).await,
            Msg::Pull => self.on_pull(ctx, state).await,
            Msg::FlushCursor => self.on_flush_cursor(ctx, state).await,
        }
    }

    async fn stopping(&self, _ctx: &Context<Msg>, state: &mut State) -> Result<(), ActorError> {
        state.stream = None;
        self.flush_cursor(state).await
    }
}

impl Subscriber {
    async fn on_connect(&self, ctx: &Context<Msg>, state: &mut State) -> Result<(), ActorError> {
        if !state.checked_retention {
            state.checked_retention = true;
            if let Some(cursor) = state.tracker.highest() {
                let _ = self.repair.try_send(repair::Msg::CheckRetention {
                    shard: self.shard,
                    cursor,
                });
            }
        }
        match state
            .hub
            .subscribe_raw(self.shard, state.next_from, &SUBSCRIBED)
            .await
        {
            Ok(stream) => {
                tracing::info!(shard = self.shard, from = ?state.next_from, "subscribed");
                state.stream = Some(stream);
                let _ = ctx.send_self(Msg::Pull);
            }
            Err(error) => self.reconnect_later(
                ctx,
                state,
                "subscribe_failed",
                &format!("subscribe failed: {error}"),
            ),
        }
        Ok(())
    }

    /// Drops the subscription and subscribes again after the backoff delay; `reason` is the
    /// metric label, `why` the detail for logs and `/ready`.
    fn reconnect_later(
        &self,
        ctx: &Context<Msg>,
        state: &mut State,
        reason: &'static str,
        why: &str,
    ) {
        self.count_reconnect(reason);
        self.runtime.record_hub(Err(why.to_owned()));
        tracing::warn!(
            shard = self.shard,
            reason = why,
            delay_ms = state.reconnect_delay.as_millis() as u64,
            "reconnecting"
        );
        state.stream = None;
        ctx.send_self_after(state.reconnect_delay, Msg::Connect);
        state.reconnect_delay = (state.reconnect_delay * 2).min(RECONNECT_MAX);
    }

    fn count_reconnect(&self, reason: &'static str) {
        metrics::counter!(HUB_SUBSCRIBE_RECONNECTS_TOTAL, LABEL_SHARD => self.shard.to_string(), LABEL_REASON => reason)
            .increment(1);
    }

    async fn on_pull(&self, ctx: &Context<Msg>, state: &mut State) -> Result<(), ActorError> {
        let Some(stream) = state.stream.as_mut() else {
            return Ok(());
        };
        let idle = self.runtime.config().hub.subscribe_idle_timeout();
        let next = tokio::select! {
            next = tokio::time::timeout(idle, stream.next()) => next,
            () = ctx.stop_requested() => return Ok(()),
        };
        let first = match next {
            Err(_) => {
                tracing::warn!(
                    shard = self.shard,
                    idle_s = idle.as_secs(),
                    "subscription silent, reconnecting"
                );
                self.count_reconnect("idle");
                state.stream = None;
                let _ = ctx.send_self(Msg::Connect);
                return Ok(());
            }
            Ok(None) => {
                self.reconnect_later(ctx, state, "ended", "subscription ended by the hub");
                return Ok(());
            }
            Ok(Some(Err(error))) => {
                self.reconnect_later(
                    ctx,
                    state,
                    "failed",
                    &format!("subscription failed: {error}"),
                );
                return Ok(());
            }
            Ok(Some(Ok(raw))) => raw,
        };
        let mut batch = vec![first];
        let mut ended: Option<String> = None;
        while batch.len() < PULL_BATCH {
            match stream.next().now_or_never() {
                Some(Some(Ok(raw))) => batch.push(raw),
                Some(Some(Err(error))) => {
                    ended = Some(format!("subscription failed: {error}"));
                    break;
                }
                Some(None) => {
                    ended = Some("subscription ended by the hub".into());
                    break;
                }
                None => break,
            }
        }
        state.reconnect_delay = RECONNECT_INITIAL;
        self.runtime.record_hub(Ok(None));
        self.process(state, batch).await?;
        match ended {
            Some(why) => self.reconnect_later(ctx, state, "invalid_event", &why),
            None => {
                let _ = ctx.send_self(Msg::Pull);
            }
        }
        Ok(())
    }

    /// Decodes, routes (verification in a blocking task) and hands over a batch of raw events.
    async fn process(&self, state: &mut State, batch: Vec<bytes::Bytes>) -> Result<(), ActorError> {
        let verify = self.runtime.config().hub.verify_messages;
        let spam = Arc::clone(self.runtime.spam());
        let routed = tokio::task::spawn_blocking(move || {
            let events = batch.iter().map(|raw| hub::decode_event(raw)).collect();
            batch
                .into_iter()
                .zip(route_all(events, verify, &spam))
                .collect::<Vec<_>>()
        })
        .await?;
        let received_at_ms = now_ms();
        metrics::counter!(HUB_EVENTS_RECEIVED_TOTAL, LABEL_SHARD => self.shard.to_string())
            .increment(routed.len() as u64);
        let mut outgoing: BTreeMap<StreamType, Vec<(NewEntry, Ack)>> = BTreeMap::new();
        for (raw, decoded) in routed {
            let (event, route) = match decoded {
                Ok(decoded) => decoded,
                Err(error) => {
                    self.dead_letter(
                        &raw,
                        0,
                        UNKNOWN_BUCKET,
                        "undecodable_event",
                        &error.to_string(),
                    )
                    .await?;
                    continue;
                }
            };
            state.next_from = Some(event.id + 1);
            match route {
                Route::BlockConfirmed => self.on_block_confirmed(state, &event).await?,
                Route::Publish(kind) => {
                    self.note(state, &event).await?;
                    let ack = state.tracker.hold(event.id);
                    let entry = NewEntry {
                        raw,
                        shard: self.shard,
                        event_id: event.id,
                        received_at_ms,
                    };
                    outgoing.entry(kind).or_default().push((entry, ack));
                }
                Route::Skip(skip) => {
                    self.note(state, &event).await?;
                    if skip == Skip::Spam {
                        metrics::counter!(SPAM_DROPPED_MESSAGES_TOTAL).increment(1);
                    }
                    state.tracker.pass(event.id);
                }
                Route::Reject {
                    bucket,
                    label,
                    reason,
                } => {
                    self.note(state, &event).await?;
                    self.dead_letter(&raw, event.id, bucket, label, &reason)
                        .await?;
                    state.tracker.pass(event.id);
                }
            }
        }
        hand_over(&self.publishers, outgoing).await
    }

    async fn dead_letter(
        &self,
        raw: &[u8],
        event_id: u64,
        bucket: &str,
        label: &'static str,
        reason: &str,
    ) -> Result<(), ActorError> {
        tracing::warn!(
            shard = self.shard,
            event_id,
            bucket,
            reason,
            "event rejected"
        );
        metrics::counter!(HUB_VERIFICATION_FAILURES_TOTAL, LABEL_REASON => label).increment(1);
        metrics::counter!(STREAM_DEAD_LETTERED_ENTRIES_TOTAL, LABEL_STREAM => bucket.to_owned(), LABEL_REASON => label)
            .increment(1);
        self.runtime
            .redis()
            .dead_letter_rejected(bucket, raw, self.shard, event_id, reason)
            .await?;
        Ok(())
    }

    /// Counts an event against the block it belongs to.
    async fn note(&self, state: &mut State, event: &HubEvent) -> Result<(), ActorError> {
        let block = ids::event_block(event.id);
        let current = state.block.as_ref().map(|check| check.number);
        match (current, state.block.take()) {
            (Some(number), Some(check)) if number == block => state.block = Some(check),
            (Some(number), Some(check)) if block > number => {
                // This block's BLOCK_CONFIRMED never arrived: close the previous block and
                // track this one with unknown counts (it will be re-fetched).
                self.finish_block(state, check).await?;
                state.block = Some(BlockCheck {
                    number: block,
                    expected: None,
                    seen: HashSet::new(),
                    counts: BTreeMap::new(),
                    hold: state.tracker.hold(ids::block_start_id(block)),
                });
                state.last_block = Some(block);
            }
            // Before any BLOCK_CONFIRMED (joined mid-block) or from an older block: nothing
            // to check it against.
            (_, check) => {
                state.block = check;
                return Ok(());
            }
        }
        if let Some(check) = state.block.as_mut()
            && check.seen.insert(event.id)
        {
            *check.counts.entry(event.r#type).or_default() += 1;
        }
        Ok(())
    }

    async fn on_block_confirmed(
        &self,
        state: &mut State,
        event: &HubEvent,
    ) -> Result<(), ActorError> {
        let Some(hub_event::Body::BlockConfirmedBody(body)) = &event.body else {
            state.tracker.pass(event.id);
            return Ok(());
        };
        let shard_label = self.shard.to_string();
        metrics::counter!(HUB_BLOCKS_CONFIRMED_TOTAL, LABEL_SHARD => shard_label.clone())
            .increment(1);
        metrics::gauge!(HUB_BLOCK_NUMBER, LABEL_SHARD => shard_label).set(body.block_number as f64);
        let number = ids::event_block(event.id);
        if state.last_block.is_some_and(|last| number <= last) {
            // A duplicate, or an older block seen again: already accounted for.
            state.tracker.pass(event.id);
            return Ok(());
        }
        if let Some(check) = state.block.take() {
            self.finish_block(state, check).await?;
        }
        // Whole blocks that never showed up.
        if let Some(last) = state.last_block
            && number > last + 1
        {
            let hold = state.tracker.hold(ids::block_start_id(last + 1));
            self.request_repair(Arc::clone(&state.tracker), last + 1, number - 1, hold)
                .await?;
        }
        state.last_block = Some(number);
        state.block = Some(BlockCheck {
            number,
            expected: Some(expected_counts(body)),
            seen: HashSet::new(),
            counts: BTreeMap::new(),
            hold: state.tracker.hold(event.id),
        });
        Ok(())
    }

    /// A block is over: release it if complete, else have it re-fetched.
    async fn finish_block(&self, state: &mut State, check: BlockCheck) -> Result<(), ActorError> {
        let complete = check.expected.as_ref().is_some_and(|expected| {
            COUNTED.iter().all(|kind| {
                let kind = *kind as i32;
                expected.get(&kind).copied().unwrap_or(0)
                    == check.counts.get(&kind).copied().unwrap_or(0)
            })
        });
        if complete {
            check.hold.confirm();
            return Ok(());
        }
        tracing::warn!(
            shard = self.shard,
            block = check.number,
            expected = ?check.expected,
            received = ?check.counts,
            "gap found, re-fetching the block"
        );
        self.request_repair(
            Arc::clone(&state.tracker),
            check.number,
            check.number,
            check.hold,
        )
        .await
    }

    async fn request_repair(
        &self,
        tracker: Arc<ShardTracker>,
        from_block: u64,
        to_block: u64,
        hold: Ack,
    ) -> Result<(), ActorError> {
        metrics::counter!(HUB_GAPS_FOUND_TOTAL, LABEL_SHARD => self.shard.to_string()).increment(1);
        self.repair
            .send(repair::Msg::Repair {
                shard: self.shard,
                from_block,
                to_block,
                hold,
                tracker,
            })
            .await
            .map_err(|_| "repair is not running".into())
    }

    async fn on_flush_cursor(
        &self,
        ctx: &Context<Msg>,
        state: &mut State,
    ) -> Result<(), ActorError> {
        if let Err(error) = self.flush_cursor(state).await {
            tracing::warn!(shard = self.shard, %error, "cursor not saved, will retry");
        }
        ctx.send_self_after(
            Duration::from_millis(self.runtime.config().stream.cursor_flush_ms),
            Msg::FlushCursor,
        );
        Ok(())
    }

    async fn flush_cursor(&self, state: &mut State) -> Result<(), ActorError> {
        let Some(cursor) = state.tracker.safe_cursor() else {
            return Ok(());
        };
        if state.flushed.is_some_and(|flushed| flushed >= cursor) {
            return Ok(());
        }
        self.runtime
            .redis()
            .store_cursor(self.shard, cursor)
            .await?;
        state.flushed = Some(cursor);
        metrics::gauge!(HUB_CURSOR_EVENT_ID, LABEL_SHARD => self.shard.to_string())
            .set(cursor as f64);
        self.runtime
            .update_shard(self.shard, |shard| shard.cursor = Some(cursor));
        Ok(())
    }
}

/// The announced counts of the event types a subscriber receives.
fn expected_counts(body: &BlockConfirmedBody) -> BTreeMap<i32, u64> {
    COUNTED
        .iter()
        .map(|kind| {
            let kind = *kind as i32;
            (
                kind,
                body.event_counts_by_type.get(&kind).copied().unwrap_or(0),
            )
        })
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}
