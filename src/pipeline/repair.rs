//! `repair`: fills the gaps subscribers find, and notices cursors that fell out of the hub's
//! event retention.
//!
//! Snapchain drops events for slow subscribers without saying so. A subscriber compares each
//! block with its BLOCK_CONFIRMED counts and sends a [`Msg::Repair`] for blocks that do not add
//! up (or never arrived), holding the shard's cursor before them. This actor re-fetches those
//! blocks with `GetEvents`, hands every event to the publishers exactly as a subscriber would
//! (duplicates are harmless downstream), and only then releases the hold. A fetch that keeps
//! failing is retried later; the hold stays, so the cursor never passes an unfilled gap.
//!
//! A cursor older than the oldest event the hub still keeps means history was lost from the
//! stream: the shard is marked as needing a per-FID backfill (Redis marker, metric, `/ready`),
//! and streaming carries on from the oldest retained event.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use waypoint_actors::{Actor, ActorError, Context};
use waypoint_proto::HubEvent;

use std::collections::BTreeMap;

use super::publisher::{Publishers, hand_over};
use super::route::{Route, Skip, route};
use super::tracker::{Ack, ShardTracker};
use crate::hub::{self, ids};
use crate::metrics::{
    HUB_GAPS_REPAIRED_TOTAL, HUB_VERIFICATION_FAILURES_TOTAL, LABEL_REASON, LABEL_SHARD,
    LABEL_STREAM, SPAM_DROPPED_MESSAGES_TOTAL, STREAM_DEAD_LETTERED_ENTRIES_TOTAL,
};
use crate::runtime::Runtime;
use crate::streams::{NewEntry, StreamType};

/// Pause before retrying a repair whose fetch failed.
const RETRY_DELAY: Duration = Duration::from_secs(5);
/// Events per GetEvents page.
const PAGE_SIZE: u32 = 1000;

pub enum Msg {
    /// Re-fetch blocks `from_block..=to_block` of `shard`, then release `hold`.
    Repair {
        shard: u32,
        from_block: u64,
        to_block: u64,
        hold: Ack,
        tracker: Arc<ShardTracker>,
    },
    /// Check whether `cursor` is still within the hub's retention for `shard`.
    CheckRetention { shard: u32, cursor: u64 },
}

/// The repair actor of the producer subtree.
pub struct Repair {
    pub runtime: Runtime,
    pub publishers: Publishers,
}

impl Actor for Repair {
    type Msg = Msg;
    type State = hub::Client;
    type Args = ();

    async fn init(&self, _ctx: &Context<Msg>, _args: ()) -> Result<hub::Client, ActorError> {
        Ok(self.runtime.hub().ok_or("no hub client in this process")?)
    }

    async fn handle(
        &self,
        ctx: &Context<Msg>,
        msg: Msg,
        hub: &mut hub::Client,
    ) -> Result<(), ActorError> {
        match msg {
            Msg::Repair {
                shard,
                from_block,
                to_block,
                hold,
                tracker,
            } => {
                self.on_repair(ctx, hub, shard, from_block, to_block, hold, tracker)
                    .await
            }
            Msg::CheckRetention { shard, cursor } => {
                self.on_check_retention(hub, shard, cursor).await
            }
        }
    }
}

impl Repair {
    #[allow(clippy::too_many_arguments)]
    async fn on_repair(
        &self,
        ctx: &Context<Msg>,
        hub: &hub::Client,
        shard: u32,
        from_block: u64,
        to_block: u64,
        hold: Ack,
        tracker: Arc<ShardTracker>,
    ) -> Result<(), ActorError> {
        let start = ids::block_start_id(from_block);
        let stop = ids::block_start_id(to_block + 1);
        let events = match hub.events(shard, start, Some(stop), PAGE_SIZE).await {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(shard, from_block, to_block, %error, "gap re-fetch failed, retrying later");
                if !ctx.is_stopping() {
                    // Keep the hold: the cursor waits for this gap.
                    let retry = Msg::Repair {
                        shard,
                        from_block,
                        to_block,
                        hold,
                        tracker,
                    };
                    ctx.send_self_after(RETRY_DELAY, retry);
                }
                return Ok(());
            }
        };
        let count = events.len();
        let mut outgoing: BTreeMap<StreamType, Vec<(NewEntry, Ack)>> = BTreeMap::new();
        for event in events {
            self.route_refetched(shard, &tracker, event, &mut outgoing)
                .await?;
        }
        hand_over(&self.publishers, outgoing).await?;
        hold.confirm();
        metrics::counter!(HUB_GAPS_REPAIRED_TOTAL, LABEL_SHARD => shard.to_string()).increment(1);
        tracing::info!(shard, from_block, to_block, events = count, "gap repaired");
        Ok(())
    }

    /// Routes one re-fetched event like a subscriber would.
    async fn route_refetched(
        &self,
        shard: u32,
        tracker: &Arc<ShardTracker>,
        event: HubEvent,
        outgoing: &mut BTreeMap<StreamType, Vec<(NewEntry, Ack)>>,
    ) -> Result<(), ActorError> {
        let verify = self.runtime.config().hub.verify_messages;
        match route(&event, verify, self.runtime.spam()) {
            Route::Publish(kind) => {
                let ack = tracker.hold(event.id);
                let entry = NewEntry {
                    raw: event.encode_to_vec().into(),
                    shard,
                    event_id: event.id,
                    received_at_ms: now_ms(),
                };
                outgoing.entry(kind).or_default().push((entry, ack));
            }
            Route::Reject {
                bucket,
                label,
                reason,
            } => {
                metrics::counter!(HUB_VERIFICATION_FAILURES_TOTAL, LABEL_REASON => label)
                    .increment(1);
                metrics::counter!(STREAM_DEAD_LETTERED_ENTRIES_TOTAL, LABEL_STREAM => bucket.to_owned(), LABEL_REASON => label)
                    .increment(1);
                self.runtime
                    .redis()
                    .dead_letter_rejected(bucket, &event.encode_to_vec(), shard, event.id, &reason)
                    .await?;
            }
            Route::Skip(Skip::Spam) => {
                metrics::counter!(SPAM_DROPPED_MESSAGES_TOTAL).increment(1);
            }
            Route::Skip(Skip::NotStored) | Route::BlockConfirmed => {}
        }
        Ok(())
    }

    async fn on_check_retention(
        &self,
        hub: &hub::Client,
        shard: u32,
        cursor: u64,
    ) -> Result<(), ActorError> {
        let oldest = match hub.oldest_event_id(shard).await {
            Ok(oldest) => oldest,
            Err(error) => {
                tracing::warn!(shard, %error, "cannot read the hub's oldest retained event");
                return Ok(());
            }
        };
        let Some(oldest) = oldest else {
            return Ok(());
        };
        if cursor.saturating_add(1) >= oldest {
            return Ok(());
        }
        let details = serde_json::json!({
            "shard": shard,
            "cursor": cursor,
            "oldest_retained_event_id": oldest,
            "missing_blocks": [ids::event_block(cursor + 1), ids::event_block(oldest)],
            "detected_at_ms": now_ms(),
        });
        tracing::error!(
            shard,
            cursor,
            oldest,
            "cursor is older than the hub's retention: events were lost from the stream, run a backfill for this shard"
        );
        self.runtime
            .redis()
            .mark_backfill_needed(shard, &details)
            .await?;
        metrics::gauge!(crate::metrics::HUB_BACKFILL_NEEDED, LABEL_SHARD => shard.to_string())
            .set(1.0);
        self.runtime.update_shard(shard, |health| {
            health.backfill_needed = Some(format!(
                "cursor {cursor} is older than the oldest retained event {oldest}"
            ));
        });
        Ok(())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}
