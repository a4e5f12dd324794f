//! Farcaster time, hub event ids and fid → shard routing: the small arithmetic of the
//! Snapchain protocol, shared by the client, the pipeline and the dev hub.

use sha2::{Digest, Sha256};

/// The Farcaster epoch, 2021-01-01T00:00:00Z, in Unix seconds. `MessageData.timestamp`,
/// `HubEvent.timestamp` and the `FidTimestampRequest` bounds count seconds from here.
pub const FARCASTER_EPOCH_UNIX_SECONDS: u64 = 1_609_459_200;

/// Bits of an event id that hold the sequence number within its block.
pub const EVENT_SEQ_BITS: u32 = 14;

/// Largest sequence number in a block (16,383 events after BLOCK_CONFIRMED at seq 0).
pub const MAX_EVENT_SEQ: u64 = (1 << EVENT_SEQ_BITS) - 1;

/// Converts Farcaster seconds to Unix seconds.
pub fn farcaster_to_unix(farcaster_seconds: u64) -> u64 {
    farcaster_seconds.saturating_add(FARCASTER_EPOCH_UNIX_SECONDS)
}

/// Converts Unix seconds to Farcaster seconds (0 for times before the epoch).
pub fn unix_to_farcaster(unix_seconds: u64) -> u64 {
    unix_seconds.saturating_sub(FARCASTER_EPOCH_UNIX_SECONDS)
}

/// The current time in Farcaster seconds.
pub fn farcaster_now() -> u64 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    unix_to_farcaster(unix)
}

/// Builds an event id from a block number and the event's sequence number in that block.
pub fn event_id(block: u64, seq: u64) -> u64 {
    (block << EVENT_SEQ_BITS) | (seq & MAX_EVENT_SEQ)
}

/// The block number an event id belongs to.
pub fn event_block(id: u64) -> u64 {
    id >> EVENT_SEQ_BITS
}

/// The sequence number of an event id within its block (0 is BLOCK_CONFIRMED).
pub fn event_seq(id: u64) -> u64 {
    id & MAX_EVENT_SEQ
}

/// The first event id of a block (its BLOCK_CONFIRMED).
pub fn block_start_id(block: u64) -> u64 {
    event_id(block, 0)
}

/// The data shard (1..=num_shards) that stores a fid: the first four bytes of
/// SHA-256 over the fid as a 4-byte big-endian integer, modulo the shard count, plus one.
/// Returns `None` when `num_shards` is 0 or the fid does not fit the node's u32 fid type.
pub fn shard_for_fid(fid: u64, num_shards: u32) -> Option<u32> {
    if num_shards == 0 {
        return None;
    }
    let fid = u32::try_from(fid).ok()?;
    let digest = Sha256::digest(fid.to_be_bytes());
    let head = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    Some(head % num_shards + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_split_into_block_and_seq() {
        let id = event_id(123_456, 7);
        assert_eq!(id, (123_456 << 14) | 7);
        assert_eq!(event_block(id), 123_456);
        assert_eq!(event_seq(id), 7);
        assert_eq!(event_seq(block_start_id(9)), 0);
        assert_eq!(event_block(block_start_id(9)), 9);
    }

    #[test]
    fn farcaster_time_round_trips() {
        assert_eq!(farcaster_to_unix(0), 1_609_459_200);
        assert_eq!(unix_to_farcaster(1_609_459_200 + 42), 42);
        assert_eq!(unix_to_farcaster(5), 0);
        assert!(farcaster_now() > 150_000_000);
    }

    #[test]
    fn fid_routing_matches_snapchain() {
        // Values checked against the node's own routing tests.
        assert_eq!(shard_for_fid(1234, 2), Some(1));
        assert_eq!(shard_for_fid(20270, 2), Some(2));
        assert_eq!(shard_for_fid(211_428, 2), Some(1));
        assert_eq!(shard_for_fid(1, 2), Some(1));
        assert_eq!(shard_for_fid(2, 2), Some(2));
        assert_eq!(shard_for_fid(3, 2), Some(1));
        assert_eq!(shard_for_fid(1, 0), None);
        assert_eq!(shard_for_fid(u64::from(u32::MAX) + 1, 2), None);
    }
}
