//! The event log of one data shard: events grouped in blocks, as Snapchain commits them.
//!
//! Every block starts with BLOCK_CONFIRMED at sequence 0 (empty blocks included), followed by
//! the block's other events in commit order; ids are `ids::event_id(block, seq)` and are per
//! shard. Events are kept encoded (a HubEvent costs several times its encoding in memory), and
//! every committed event is also sent on the shard's broadcast channel for live subscribers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use tokio::sync::broadcast;
use waypoint_proto::{BlockConfirmedBody, HubEvent, HubEventType, hub_event};

use crate::hub::ids;

/// Capacity of a shard's live broadcast, as on the node: a subscriber that falls further
/// behind skips events.
pub(crate) const BROADCAST_CAPACITY: usize = 10_000;

/// Most events a block can hold after its BLOCK_CONFIRMED (14 bits of sequence).
pub(crate) const MAX_EVENTS_PER_BLOCK: usize = ids::MAX_EVENT_SEQ as usize;

/// Prefix byte of event keys in the node's database; page tokens carry it, like the node's.
const EVENT_KEY_PREFIX: u8 = 9;

/// One committed event.
#[derive(Debug, Clone)]
pub(crate) struct LogEntry {
    pub id: u64,
    pub event_type: i32,
    /// The encoded HubEvent.
    pub bytes: Bytes,
}

impl LogEntry {
    pub(crate) fn decode(&self) -> HubEvent {
        // The log only holds events it encoded itself.
        HubEvent::decode(self.bytes.as_ref()).unwrap_or_default()
    }
}

/// A page of events.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventsPage {
    pub entries: Vec<Arc<LogEntry>>,
    pub next_page_token: Option<Vec<u8>>,
}

/// The event log of a shard.
pub(crate) struct ShardLog {
    shard: u32,
    entries: VecDeque<Arc<LogEntry>>,
    /// Events merged since the last commit, waiting for the next block.
    pending: Vec<HubEvent>,
    next_block: u64,
    last_block_timestamp: u64,
    last_block_hash: [u8; 32],
    sender: broadcast::Sender<Arc<LogEntry>>,
}

/// Encodes an event key as the node does: prefix byte and big-endian id.
pub(crate) fn event_token(id: u64) -> Vec<u8> {
    let mut token = Vec::with_capacity(9);
    token.push(EVENT_KEY_PREFIX);
    token.extend_from_slice(&id.to_be_bytes());
    token
}

/// Appends `HubEvent.timestamp` (field 15, varint) to an encoded event.
fn append_timestamp(bytes: &mut Vec<u8>, timestamp: u64) {
    if timestamp == 0 {
        return;
    }
    const TIMESTAMP_TAG: u8 = 15 << 3;
    bytes.push(TIMESTAMP_TAG);
    prost::encoding::encode_varint(timestamp, bytes);
}

/// Decodes an event key; None when it is not one.
pub(crate) fn id_of_token(token: &[u8]) -> Option<u64> {
    let (prefix, id) = token.split_first()?;
    if *prefix != EVENT_KEY_PREFIX {
        return None;
    }
    Some(u64::from_be_bytes(<[u8; 8]>::try_from(id).ok()?))
}

impl ShardLog {
    pub(crate) fn new(
        shard: u32,
        first_block: u64,
        sender: broadcast::Sender<Arc<LogEntry>>,
    ) -> ShardLog {
        ShardLog {
            shard,
            entries: VecDeque::new(),
            pending: Vec::new(),
            next_block: first_block,
            last_block_timestamp: 0,
            last_block_hash: [0; 32],
            sender,
        }
    }

    /// Queues an event for the next block.
    pub(crate) fn push(&mut self, event_type: HubEventType, body: hub_event::Body) {
        self.pending.push(HubEvent {
            r#type: event_type as i32,
            id: 0,
            body: Some(body),
            block_number: 0,
            shard_index: self.shard,
            timestamp: 0,
        });
    }

    /// Number of events waiting for the next block.
    pub(crate) fn num_pending(&self) -> usize {
        self.pending.len()
    }

    /// Commits the pending events as one or more blocks (more only when they exceed a block's
    /// capacity) at `timestamp` (Farcaster seconds; never earlier than the previous block).
    /// Returns the committed entries, BLOCK_CONFIRMED first.
    pub(crate) fn commit(&mut self, timestamp: u64) -> Vec<Arc<LogEntry>> {
        let mut committed = Vec::new();
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            committed.extend(self.commit_block(Vec::new(), timestamp));
        } else {
            let mut pending = pending.into_iter().peekable();
            while pending.peek().is_some() {
                let block: Vec<HubEvent> = pending.by_ref().take(MAX_EVENTS_PER_BLOCK).collect();
                committed.extend(self.commit_block(block, timestamp));
            }
        }
        committed
    }

    fn commit_block(&mut self, events: Vec<HubEvent>, timestamp: u64) -> Vec<Arc<LogEntry>> {
        let block_number = self.next_block;
        self.next_block += 1;
        let timestamp = timestamp.max(self.last_block_timestamp);
        self.last_block_timestamp = timestamp;

        // Events are encoded without their timestamp, which is appended as a last field (a
        // valid protobuf encoding): the block hash covers those bytes, so a dataset's blocks
        // hash the same on every run, and each event is encoded once.
        let total_events = events.len() as u64 + 1;
        let mut counts: BTreeMap<i32, u64> = BTreeMap::new();
        counts.insert(HubEventType::BlockConfirmed as i32, 1);
        let mut encoded: Vec<(u64, i32, Vec<u8>)> = Vec::with_capacity(events.len() + 1);
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.last_block_hash);
        hasher.update(&self.shard.to_be_bytes());
        hasher.update(&block_number.to_be_bytes());
        for (index, mut event) in events.into_iter().enumerate() {
            *counts.entry(event.r#type).or_default() += 1;
            event.id = ids::event_id(block_number, index as u64 + 1);
            event.block_number = block_number;
            event.shard_index = self.shard;
            event.timestamp = 0;
            let bytes = event.encode_to_vec();
            hasher.update(&bytes);
            encoded.push((event.id, event.r#type, bytes));
        }
        let block_hash = *hasher.finalize().as_bytes();
        self.last_block_hash = block_hash;

        let confirmed = HubEvent {
            r#type: HubEventType::BlockConfirmed as i32,
            id: ids::event_id(block_number, 0),
            body: Some(hub_event::Body::BlockConfirmedBody(BlockConfirmedBody {
                block_number,
                shard_index: self.shard,
                timestamp,
                block_hash: block_hash.to_vec(),
                total_events,
                event_counts_by_type: counts.into_iter().collect(),
                max_block_event_seqnum: total_events - 1,
            })),
            block_number,
            shard_index: self.shard,
            timestamp: 0,
        };
        encoded.insert(
            0,
            (confirmed.id, confirmed.r#type, confirmed.encode_to_vec()),
        );

        let mut committed = Vec::with_capacity(encoded.len());
        for (id, event_type, mut bytes) in encoded {
            append_timestamp(&mut bytes, timestamp);
            let entry = Arc::new(LogEntry {
                id,
                event_type,
                bytes: Bytes::from(bytes),
            });
            self.entries.push_back(entry.clone());
            // No receivers is fine: nobody is subscribed.
            let _ = self.sender.send(entry.clone());
            committed.push(entry);
        }
        committed
    }

    /// The data shard of this log.
    pub(crate) fn shard(&self) -> u32 {
        self.shard
    }

    /// The last committed event id (0 before the first block).
    pub(crate) fn last_id(&self) -> u64 {
        self.entries.back().map_or(0, |entry| entry.id)
    }

    /// The oldest retained event id.
    pub(crate) fn oldest_id(&self) -> Option<u64> {
        self.entries.front().map(|entry| entry.id)
    }

    /// The block the next commit will get.
    pub(crate) fn next_block(&self) -> u64 {
        self.next_block
    }

    /// Timestamp of the last committed block.
    pub(crate) fn last_block_timestamp(&self) -> u64 {
        self.last_block_timestamp
    }

    /// Number of retained events.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Drops the events of every block but the newest `blocks` ones.
    pub(crate) fn retain_blocks(&mut self, blocks: u64) {
        let Some(last) = self.entries.back() else {
            return;
        };
        let last_block = ids::event_block(last.id);
        let oldest_kept = last_block.saturating_sub(blocks.saturating_sub(1));
        let keep_from = ids::block_start_id(oldest_kept);
        let cut = self.entries.partition_point(|entry| entry.id < keep_from);
        self.entries.drain(..cut);
    }

    /// The event with this id.
    pub(crate) fn get(&self, id: u64) -> Option<&Arc<LogEntry>> {
        let index = self.entries.partition_point(|entry| entry.id < id);
        self.entries.get(index).filter(|entry| entry.id == id)
    }

    /// Events with `start <= id < stop`, after (or, reversed, before) the token's id; at most
    /// `page_size` of them, with a token whenever the page filled up.
    pub(crate) fn page(
        &self,
        start: u64,
        stop: Option<u64>,
        after: Option<u64>,
        page_size: usize,
        reverse: bool,
    ) -> EventsPage {
        let stop = stop.unwrap_or(u64::MAX);
        let (low, high) = match (after, reverse) {
            (Some(token), false) => (start.max(token.saturating_add(1)), stop),
            (Some(token), true) => (start, stop.min(token)),
            (None, _) => (start, stop),
        };
        let mut page = EventsPage::default();
        if low >= high {
            return page;
        }
        let from = self.entries.partition_point(|entry| entry.id < low);
        let to = self.entries.partition_point(|entry| entry.id < high);
        let selected = self.entries.range(from..to);
        let iter: Box<dyn Iterator<Item = &Arc<LogEntry>>> = if reverse {
            Box::new(selected.rev())
        } else {
            Box::new(selected)
        };
        for entry in iter {
            page.entries.push(entry.clone());
            if page.entries.len() >= page_size {
                page.next_page_token = Some(event_token(entry.id));
                break;
            }
        }
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use waypoint_proto::{MergeFailureBody, Message};

    fn failure() -> hub_event::Body {
        hub_event::Body::MergeFailure(MergeFailureBody {
            message: Some(Message::default()),
            code: "x".into(),
            reason: "y".into(),
        })
    }

    fn log() -> ShardLog {
        let (sender, _) = broadcast::channel(16);
        ShardLog::new(1, 100, sender)
    }

    #[test]
    fn blocks_start_with_confirmed_counts() {
        let mut log = log();
        log.push(HubEventType::MergeFailure, failure());
        log.push(HubEventType::MergeFailure, failure());
        let committed = log.commit(5);
        assert_eq!(committed.len(), 3);
        let confirmed = committed[0].decode();
        assert_eq!(confirmed.id, ids::event_id(100, 0));
        assert_eq!(confirmed.block_number, 100);
        assert_eq!(confirmed.timestamp, 5);
        let Some(hub_event::Body::BlockConfirmedBody(body)) = confirmed.body else {
            panic!("not a block confirmed");
        };
        assert_eq!(body.total_events, 3);
        assert_eq!(body.max_block_event_seqnum, 2);
        assert_eq!(body.event_counts_by_type.get(&11), Some(&1));
        assert_eq!(body.event_counts_by_type.get(&10), Some(&2));
        assert_eq!(committed[2].id, ids::event_id(100, 2));
        // An empty block still has its BLOCK_CONFIRMED.
        let empty = log.commit(4);
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0].id, ids::event_id(101, 0));
        assert_eq!(empty[0].decode().timestamp, 5, "block time never goes back");
    }

    #[test]
    fn pages_and_retention() {
        let mut log = log();
        for _ in 0..3 {
            log.push(HubEventType::MergeFailure, failure());
            log.commit(1);
        }
        assert_eq!(log.len(), 6);
        let page = log.page(0, None, None, 4, false);
        assert_eq!(page.entries.len(), 4);
        let token = page.next_page_token.as_deref().and_then(id_of_token);
        let rest = log.page(0, None, token, 4, false);
        assert_eq!(rest.entries.len(), 2);
        assert!(rest.next_page_token.is_none());
        let bounded = log.page(
            ids::event_id(101, 0),
            Some(ids::event_id(102, 0)),
            None,
            10,
            false,
        );
        assert_eq!(bounded.entries.len(), 2);
        assert!(log.get(ids::event_id(101, 1)).is_some());
        log.retain_blocks(1);
        assert_eq!(log.oldest_id(), Some(ids::event_id(102, 0)));
        assert!(log.get(ids::event_id(101, 1)).is_none());
    }
}
