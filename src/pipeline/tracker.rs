//! The cursor of one shard: which hub events are handed to publishers but not yet durable in
//! Redis, and so how far the durable cursor may move.
//!
//! A subscriber incarnation owns one tracker. Every event it hands over carries an [`Ack`]
//! pointing at that tracker, so a publisher confirms into the tracker of the incarnation that
//! sent the event even after the subscriber restarted (the new incarnation has its own tracker,
//! started from the durable cursor). Invariant: [`ShardTracker::safe_cursor`] never passes an
//! id that is handed over and unconfirmed, or held (a block whose completeness is not yet
//! proven, or a gap being repaired).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// See the module docs.
#[derive(Debug)]
pub struct ShardTracker {
    shard: u32,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The durable cursor this tracker started from.
    base: Option<u64>,
    /// Handed over or held, not yet confirmed.
    pending: BTreeSet<u64>,
    /// The highest id seen (handed over, held or passed).
    highest: Option<u64>,
}

impl ShardTracker {
    /// A tracker for `shard` starting at the durable cursor `base`.
    pub fn new(shard: u32, base: Option<u64>) -> Arc<ShardTracker> {
        Arc::new(ShardTracker {
            shard,
            state: Mutex::new(State {
                base,
                pending: BTreeSet::new(),
                highest: base,
            }),
        })
    }

    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// `id` is handed to a publisher (or held): the cursor stops before it until confirmed.
    pub fn hold(self: &Arc<Self>, id: u64) -> Ack {
        let mut state = self.lock();
        state.pending.insert(id);
        state.highest = state.highest.max(Some(id));
        Ack {
            tracker: Arc::clone(self),
            id,
        }
    }

    /// `id` needs nothing durable (filtered, or an event type not published): the cursor may
    /// pass it.
    pub fn pass(&self, id: u64) {
        let mut state = self.lock();
        state.highest = state.highest.max(Some(id));
    }

    fn confirm(&self, id: u64) {
        self.lock().pending.remove(&id);
    }

    /// The highest id such that every id at or below it is durable or needs nothing.
    pub fn safe_cursor(&self) -> Option<u64> {
        let state = self.lock();
        let candidate = match state.pending.first() {
            Some(&lowest) => lowest.checked_sub(1),
            None => state.highest,
        };
        candidate.max(state.base)
    }

    /// The highest id seen so far (where a reconnect resumes after).
    pub fn highest(&self) -> Option<u64> {
        self.lock().highest
    }

    /// Ids handed over or held and not yet confirmed.
    pub fn num_pending(&self) -> usize {
        self.lock().pending.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The promise to confirm one handed-over id once it is durable.
#[derive(Debug)]
#[must_use = "an Ack that is dropped unconfirmed holds the shard's cursor back forever"]
pub struct Ack {
    tracker: Arc<ShardTracker>,
    id: u64,
}

impl Ack {
    /// The event is durable in Redis.
    pub fn confirm(self) {
        self.tracker.confirm(self.id);
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn shard(&self) -> u32 {
        self.tracker.shard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_stops_before_the_oldest_unconfirmed_id() {
        let tracker = ShardTracker::new(1, Some(99));
        assert_eq!(tracker.safe_cursor(), Some(99));
        let a = tracker.hold(100);
        let b = tracker.hold(101);
        tracker.pass(102);
        assert_eq!(tracker.safe_cursor(), Some(99));
        b.confirm();
        assert_eq!(tracker.safe_cursor(), Some(99), "100 is still out");
        a.confirm();
        assert_eq!(tracker.safe_cursor(), Some(102));
        assert_eq!(tracker.highest(), Some(102));
    }

    #[test]
    fn a_held_block_keeps_later_confirmed_events_behind_it() {
        let tracker = ShardTracker::new(1, None);
        let block = tracker.hold(16_384);
        let event = tracker.hold(16_385);
        event.confirm();
        tracker.pass(16_386);
        assert_eq!(tracker.safe_cursor(), Some(16_383));
        block.confirm();
        assert_eq!(tracker.safe_cursor(), Some(16_386));
    }

    #[test]
    fn never_below_the_starting_cursor() {
        let tracker = ShardTracker::new(2, Some(500));
        let repaired = tracker.hold(0);
        assert_eq!(tracker.safe_cursor(), Some(500));
        repaired.confirm();
        assert_eq!(tracker.safe_cursor(), Some(500));
        let fresh = ShardTracker::new(2, None);
        assert_eq!(fresh.safe_cursor(), None);
    }
}
