//! Stream operations: publish, consumer groups, acknowledgements, reclaiming stale entries,
//! dead letters and trimming. The key layout and entry fields are in docs/design.md.
//!
//! Invariants kept here:
//! - groups are created at `0`, never `$`, so a consumer that starts after the producer misses
//!   nothing;
//! - nothing is ever trimmed that a group has not acknowledged;
//! - moving an entry to the dead-letter stream and acknowledging it happen in one MULTI on keys
//!   that share a hash tag, so an entry is never both lost and acknowledged.

use std::collections::HashMap;

use redis::aio::MultiplexedConnection;
use redis::streams::{
    StreamClaimReply, StreamId, StreamInfoGroupsReply, StreamPendingCountReply, StreamRangeReply,
    StreamReadOptions, StreamReadReply,
};
use redis::{AsyncCommands, Value};

use super::{Redis, StreamType, StreamsError, UNKNOWN_BUCKET};

/// Field holding the raw HubEvent bytes.
const FIELD_EVENT: &str = "e";
/// Field holding the shard the event came from.
const FIELD_SHARD: &str = "s";
/// Field holding the hub event id.
const FIELD_EVENT_ID: &str = "i";
/// Field holding when the subscriber received the event (Unix ms), for lag.
const FIELD_RECEIVED_AT: &str = "t";
/// Longest error text kept for a pending entry or a dead letter.
const MAX_REASON_LEN: usize = 500;

/// An event to publish.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// HubEvent bytes as the hub sent them.
    pub raw: bytes::Bytes,
    pub shard: u32,
    pub event_id: u64,
    pub received_at_ms: u64,
}

/// An entry read from a stream. Fields that are missing or unparsable are `None`: the caller
/// dead-letters such an entry instead of failing the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Redis stream entry id (`ms-seq`).
    pub id: String,
    pub raw: Option<Vec<u8>>,
    pub shard: Option<u32>,
    pub event_id: Option<u64>,
    pub received_at_ms: Option<u64>,
    /// Times the entry was delivered, when known (reclaimed entries).
    pub deliveries: Option<u64>,
}

/// Which entries [`Redis::read_group`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// Entries never delivered to the group (`>`), waiting up to the block time.
    New,
    /// Entries never delivered to the group, without waiting.
    NewNoWait,
    /// This consumer's own delivered-but-unacknowledged entries (`0`), e.g. after a restart.
    Pending,
}

/// Stale entries taken over by [`Redis::claim_stale`].
#[derive(Debug, Default)]
pub struct Claimed {
    /// To process again.
    pub redeliver: Vec<Entry>,
    /// Delivered `max_deliveries` times already: to dead-letter.
    pub dead: Vec<Entry>,
}

/// An entry of a dead-letter stream.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub id: String,
    pub reason: String,
    /// The id the entry had in its stream (empty for events rejected before publishing).
    pub source_id: String,
    pub deliveries: u64,
    /// Unix ms.
    pub at_ms: u64,
    pub raw: Option<Vec<u8>>,
    pub shard: Option<u32>,
    pub event_id: Option<u64>,
}

impl Redis {
    /// `<prefix>:{<type>}:stream`.
    pub fn stream_key(&self, kind: StreamType) -> String {
        self.key(&[&format!("{{{}}}", kind.as_str()), "stream"])
    }

    /// `<prefix>:{<bucket>}:dlq` (`bucket` is a stream type name or `unknown`).
    pub fn dlq_key(&self, bucket: &str) -> String {
        self.key(&[&format!("{{{bucket}}}"), "dlq"])
    }

    /// `<prefix>:{<type>}:errors`: last apply error per pending entry.
    pub fn errors_key(&self, kind: StreamType) -> String {
        self.key(&[&format!("{{{}}}", kind.as_str()), "errors"])
    }

    /// Creates the group at the start of the stream (creating the stream too) unless it exists.
    pub async fn ensure_group(&self, kind: StreamType, group: &str) -> Result<(), StreamsError> {
        let mut connection = self.connection();
        let created: Result<(), redis::RedisError> = connection
            .xgroup_create_mkstream(self.stream_key(kind), group, "0")
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Appends `entries` in one pipelined round trip; returns their stream ids in order.
    pub async fn publish(
        &self,
        kind: StreamType,
        entries: &[NewEntry],
    ) -> Result<Vec<String>, StreamsError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.stream_key(kind);
        let mut pipe = redis::pipe();
        for entry in entries {
            pipe.cmd("XADD")
                .arg(&key)
                .arg("*")
                .arg(FIELD_EVENT)
                .arg(entry.raw.as_ref())
                .arg(FIELD_SHARD)
                .arg(entry.shard)
                .arg(FIELD_EVENT_ID)
                .arg(entry.event_id)
                .arg(FIELD_RECEIVED_AT)
                .arg(entry.received_at_ms);
        }
        let mut connection = self.connection();
        Ok(pipe.query_async(&mut connection).await?)
    }

    /// Reads up to `count` entries for `consumer` in `group`. With [`ReadFrom::New`] it blocks
    /// up to `block_ms` (use a dedicated connection without a response timeout).
    #[allow(clippy::too_many_arguments)]
    pub async fn read_group(
        &self,
        connection: &mut MultiplexedConnection,
        kind: StreamType,
        group: &str,
        consumer: &str,
        count: usize,
        block_ms: u64,
        from: ReadFrom,
    ) -> Result<Vec<Entry>, StreamsError> {
        let mut options = StreamReadOptions::default()
            .group(group, consumer)
            .count(count);
        let start = match from {
            ReadFrom::New => {
                options = options.block(block_ms as usize);
                ">"
            }
            ReadFrom::NewNoWait => ">",
            ReadFrom::Pending => "0",
        };
        let reply: Option<StreamReadReply> = connection
            .xread_options(&[self.stream_key(kind)], &[start], &options)
            .await?;
        Ok(reply
            .into_iter()
            .flat_map(|reply| reply.keys)
            .flat_map(|key| key.ids)
            .map(entry_from)
            .collect())
    }

    /// Acknowledges entries and forgets their recorded errors.
    pub async fn ack(
        &self,
        kind: StreamType,
        group: &str,
        ids: &[String],
    ) -> Result<u64, StreamsError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        pipe.cmd("XACK")
            .arg(self.stream_key(kind))
            .arg(group)
            .arg(ids);
        pipe.cmd("HDEL")
            .arg(self.errors_key(kind))
            .arg(ids)
            .ignore();
        let mut connection = self.connection();
        let (acked,): (u64,) = pipe.query_async(&mut connection).await?;
        Ok(acked)
    }

    /// Remembers why an entry failed, for the dead-letter reason if it keeps failing.
    pub async fn record_error(
        &self,
        kind: StreamType,
        id: &str,
        error: &str,
    ) -> Result<(), StreamsError> {
        let mut connection = self.connection();
        let () = connection
            .hset(self.errors_key(kind), id, truncate(error))
            .await?;
        Ok(())
    }

    /// The error recorded for a pending entry, if any.
    pub async fn recorded_error(
        &self,
        kind: StreamType,
        id: &str,
    ) -> Result<Option<String>, StreamsError> {
        let mut connection = self.connection();
        Ok(connection.hget(self.errors_key(kind), id).await?)
    }

    /// Takes over entries pending longer than `min_idle_ms` (a crashed or stuck consumer's),
    /// at most `count`, splitting off those already delivered `max_deliveries` times.
    pub async fn claim_stale(
        &self,
        kind: StreamType,
        group: &str,
        claimer: &str,
        min_idle_ms: u64,
        count: usize,
        max_deliveries: u64,
    ) -> Result<Claimed, StreamsError> {
        let key = self.stream_key(kind);
        let mut connection = self.connection();
        let pending: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(&key)
            .arg(group)
            .arg("IDLE")
            .arg(min_idle_ms)
            .arg("-")
            .arg("+")
            .arg(count)
            .query_async(&mut connection)
            .await?;
        if pending.ids.is_empty() {
            return Ok(Claimed::default());
        }
        let deliveries: HashMap<&str, u64> = pending
            .ids
            .iter()
            .map(|entry| (entry.id.as_str(), entry.times_delivered as u64))
            .collect();
        let ids: Vec<&str> = pending.ids.iter().map(|entry| entry.id.as_str()).collect();
        let claimed: StreamClaimReply = redis::cmd("XCLAIM")
            .arg(&key)
            .arg(group)
            .arg(claimer)
            .arg(min_idle_ms)
            .arg(&ids)
            .query_async(&mut connection)
            .await?;
        let mut result = Claimed::default();
        let mut seen = std::collections::HashSet::new();
        for id in claimed.ids {
            let times = deliveries.get(id.id.as_str()).copied().unwrap_or(0);
            seen.insert(id.id.clone());
            let mut entry = entry_from(id);
            entry.deliveries = Some(times + 1);
            if times >= max_deliveries {
                result.dead.push(entry);
            } else {
                result.redeliver.push(entry);
            }
        }
        // Pending entries whose content was trimmed or deleted come back from XCLAIM as
        // nothing: acknowledge them, there is nothing left to process.
        let vanished: Vec<String> = ids
            .iter()
            .filter(|id| !seen.contains(**id))
            .map(|id| (*id).to_owned())
            .collect();
        if !vanished.is_empty() {
            tracing::warn!(stream = %kind, count = vanished.len(), "pending entries without content, acknowledging");
            self.ack(kind, group, &vanished).await?;
        }
        Ok(result)
    }

    /// Moves a stream entry to the dead-letter stream with its reason and acknowledges it,
    /// atomically.
    pub async fn dead_letter(
        &self,
        kind: StreamType,
        group: &str,
        entry: &Entry,
        reason: &str,
    ) -> Result<(), StreamsError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        dead_letter_command(&mut pipe, &self.dlq_key(kind.as_str()), entry, reason);
        pipe.cmd("XACK")
            .arg(self.stream_key(kind))
            .arg(group)
            .arg(&entry.id)
            .ignore();
        pipe.cmd("HDEL")
            .arg(self.errors_key(kind))
            .arg(&entry.id)
            .ignore();
        let mut connection = self.connection();
        let () = pipe.query_async(&mut connection).await?;
        Ok(())
    }

    /// Records an event the subscriber rejected before publishing (bad hash, bad signature,
    /// undecodable) in the dead-letter stream of `bucket` (a type name, or `unknown`).
    pub async fn dead_letter_rejected(
        &self,
        bucket: &str,
        raw: &[u8],
        shard: u32,
        event_id: u64,
        reason: &str,
    ) -> Result<(), StreamsError> {
        let entry = Entry {
            id: String::new(),
            raw: Some(raw.to_vec()),
            shard: Some(shard),
            event_id: Some(event_id),
            received_at_ms: None,
            deliveries: Some(0),
        };
        let mut pipe = redis::pipe();
        dead_letter_command(&mut pipe, &self.dlq_key(bucket), &entry, reason);
        let mut connection = self.connection();
        let () = pipe.query_async(&mut connection).await?;
        Ok(())
    }

    /// The oldest `count` dead letters of `bucket`.
    pub async fn dlq_list(
        &self,
        bucket: &str,
        count: usize,
    ) -> Result<Vec<DeadLetter>, StreamsError> {
        let mut connection = self.connection();
        let reply: StreamRangeReply = connection
            .xrange_count(self.dlq_key(bucket), "-", "+", count)
            .await?;
        Ok(reply.ids.into_iter().map(dead_letter_from).collect())
    }

    /// Number of dead letters in `bucket`.
    pub async fn dlq_len(&self, bucket: &str) -> Result<u64, StreamsError> {
        let mut connection = self.connection();
        Ok(connection.xlen(self.dlq_key(bucket)).await?)
    }

    /// Moves dead letters of `kind` back to its stream (all, or those with the given ids),
    /// each atomically; returns how many moved.
    pub async fn dlq_replay(
        &self,
        kind: StreamType,
        ids: Option<&[String]>,
        now_ms: u64,
    ) -> Result<usize, StreamsError> {
        let dlq = self.dlq_key(kind.as_str());
        let stream = self.stream_key(kind);
        let mut moved = 0;
        let mut after = "-".to_owned();
        loop {
            let mut connection = self.connection();
            let page: StreamRangeReply = connection.xrange_count(&dlq, &after, "+", 500).await?;
            let Some(last) = page.ids.last() else {
                break;
            };
            after = format!("({}", last.id);
            for letter in page.ids.into_iter().map(dead_letter_from) {
                if ids.is_some_and(|wanted| !wanted.contains(&letter.id)) {
                    continue;
                }
                let Some(raw) = letter.raw.as_deref() else {
                    tracing::warn!(id = %letter.id, "dead letter without event bytes, left in place");
                    continue;
                };
                let mut pipe = redis::pipe();
                pipe.atomic();
                pipe.cmd("XADD")
                    .arg(&stream)
                    .arg("*")
                    .arg(FIELD_EVENT)
                    .arg(raw)
                    .arg(FIELD_SHARD)
                    .arg(letter.shard.unwrap_or(0))
                    .arg(FIELD_EVENT_ID)
                    .arg(letter.event_id.unwrap_or(0))
                    .arg(FIELD_RECEIVED_AT)
                    .arg(now_ms)
                    .ignore();
                pipe.cmd("XDEL").arg(&dlq).arg(&letter.id).ignore();
                let () = pipe.query_async(&mut connection).await?;
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// Entries of `kind` that `group` has not acknowledged yet: undelivered plus pending.
    pub async fn backlog(&self, kind: StreamType, group: &str) -> Result<u64, StreamsError> {
        let key = self.stream_key(kind);
        let mut connection = self.connection();
        let groups: Result<StreamInfoGroupsReply, redis::RedisError> =
            connection.xinfo_groups(&key).await;
        let groups = match groups {
            Ok(groups) => groups,
            // No stream yet: nothing waits.
            Err(error) if error.code() == Some("ERR") => return Ok(0),
            Err(error) => return Err(error.into()),
        };
        match groups.groups.iter().find(|info| info.name == group) {
            Some(info) => match info.lag {
                Some(lag) => Ok((lag + info.pending) as u64),
                // Redis cannot tell the lag after deletions: count conservatively.
                None => Ok(connection.xlen(&key).await?),
            },
            None => Ok(connection.xlen(&key).await?),
        }
    }

    /// Entries delivered to `group` and not acknowledged.
    pub async fn pending(&self, kind: StreamType, group: &str) -> Result<u64, StreamsError> {
        let mut connection = self.connection();
        let groups: Result<StreamInfoGroupsReply, redis::RedisError> =
            connection.xinfo_groups(self.stream_key(kind)).await;
        match groups {
            Ok(groups) => Ok(groups
                .groups
                .iter()
                .find(|info| info.name == group)
                .map_or(0, |info| info.pending as u64)),
            Err(error) if error.code() == Some("ERR") => Ok(0),
            Err(error) => Err(error.into()),
        }
    }

    /// Removes entries every group has acknowledged; returns how many went. Never removes an
    /// entry a group has not acknowledged; with no group, removes nothing.
    pub async fn trim_acknowledged(&self, kind: StreamType) -> Result<u64, StreamsError> {
        let key = self.stream_key(kind);
        let mut connection = self.connection();
        let groups: StreamInfoGroupsReply = match connection.xinfo_groups(&key).await {
            Ok(groups) => groups,
            Err(error) if error.code() == Some("ERR") => return Ok(0),
            Err(error) => return Err(error.into()),
        };
        if groups.groups.is_empty() {
            return Ok(0);
        }
        let mut lowest: Option<EntryId> = None;
        for group in &groups.groups {
            let needed = if group.pending > 0 {
                let summary: Value = redis::cmd("XPENDING")
                    .arg(&key)
                    .arg(&group.name)
                    .query_async(&mut connection)
                    .await?;
                oldest_pending(&summary)
            } else {
                EntryId::parse(&group.last_delivered_id).map(EntryId::next)
            };
            // Unknown position: keep everything.
            let Some(needed) = needed else {
                return Ok(0);
            };
            lowest = Some(lowest.map_or(needed, |current| current.min(needed)));
        }
        let Some(lowest) = lowest else {
            return Ok(0);
        };
        let removed: u64 = redis::cmd("XTRIM")
            .arg(&key)
            .arg("MINID")
            .arg(lowest.to_string())
            .query_async(&mut connection)
            .await?;
        Ok(removed)
    }
}

fn dead_letter_command(pipe: &mut redis::Pipeline, dlq: &str, entry: &Entry, reason: &str) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0);
    let command = pipe
        .cmd("XADD")
        .arg(dlq)
        .arg("*")
        .arg("reason")
        .arg(truncate(reason))
        .arg("source_id")
        .arg(&entry.id)
        .arg("deliveries")
        .arg(entry.deliveries.unwrap_or(0))
        .arg("at")
        .arg(now_ms);
    if let Some(raw) = &entry.raw {
        command.arg(FIELD_EVENT).arg(raw.as_slice());
    }
    if let Some(shard) = entry.shard {
        command.arg(FIELD_SHARD).arg(shard);
    }
    if let Some(event_id) = entry.event_id {
        command.arg(FIELD_EVENT_ID).arg(event_id);
    }
    command.ignore();
}

fn entry_from(id: StreamId) -> Entry {
    let mut map = id.map;
    Entry {
        raw: take_bytes(&mut map, FIELD_EVENT),
        shard: take_number(&mut map, FIELD_SHARD),
        event_id: take_number(&mut map, FIELD_EVENT_ID),
        received_at_ms: take_number(&mut map, FIELD_RECEIVED_AT),
        deliveries: id.delivered_count.map(|count| count as u64),
        id: id.id,
    }
}

fn dead_letter_from(id: StreamId) -> DeadLetter {
    let mut map = id.map;
    let text = |map: &mut HashMap<String, Value>, field: &str| {
        take_bytes(map, field)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    };
    DeadLetter {
        reason: text(&mut map, "reason"),
        source_id: text(&mut map, "source_id"),
        deliveries: take_number(&mut map, "deliveries").unwrap_or(0),
        at_ms: take_number(&mut map, "at").unwrap_or(0),
        raw: take_bytes(&mut map, FIELD_EVENT),
        shard: take_number(&mut map, FIELD_SHARD),
        event_id: take_number(&mut map, FIELD_EVENT_ID),
        id: id.id,
    }
}

fn take_bytes(map: &mut HashMap<String, Value>, field: &str) -> Option<Vec<u8>> {
    match map.remove(field)? {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        _ => None,
    }
}

fn take_number<T: std::str::FromStr>(map: &mut HashMap<String, Value>, field: &str) -> Option<T> {
    match map.remove(field)? {
        Value::BulkString(bytes) => std::str::from_utf8(&bytes).ok()?.parse().ok(),
        Value::SimpleString(text) => text.parse().ok(),
        Value::Int(number) => number.to_string().parse().ok(),
        _ => None,
    }
}

fn truncate(text: &str) -> &str {
    if text.len() <= MAX_REASON_LEN {
        return text;
    }
    let mut end = MAX_REASON_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A stream entry id, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct EntryId {
    ms: u64,
    seq: u64,
}

impl EntryId {
    fn parse(text: &str) -> Option<EntryId> {
        let (ms, seq) = text.split_once('-')?;
        Some(EntryId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The smallest id after this one.
    fn next(self) -> EntryId {
        match self.seq.checked_add(1) {
            Some(seq) => EntryId { ms: self.ms, seq },
            None => EntryId {
                ms: self.ms + 1,
                seq: 0,
            },
        }
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The smallest pending id from an `XPENDING key group` summary (`[count, first, last, ...]`).
fn oldest_pending(summary: &Value) -> Option<EntryId> {
    let Value::Array(items) = summary else {
        return None;
    };
    match items.get(1)? {
        Value::BulkString(bytes) => EntryId::parse(std::str::from_utf8(bytes).ok()?),
        Value::SimpleString(text) => EntryId::parse(text),
        _ => None,
    }
}

/// The dead-letter bucket of `kind`, or the one for undecodable events.
pub fn bucket(kind: Option<StreamType>) -> &'static str {
    kind.map_or(UNKNOWN_BUCKET, StreamType::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_order_and_step() {
        let a = EntryId::parse("5-3").unwrap();
        assert!(a < EntryId::parse("5-4").unwrap());
        assert!(a < EntryId::parse("6-0").unwrap());
        assert_eq!(a.next().to_string(), "5-4");
        assert_eq!(
            EntryId {
                ms: 1,
                seq: u64::MAX
            }
            .next()
            .to_string(),
            "2-0"
        );
        assert!(EntryId::parse("x").is_none());
    }

    #[test]
    fn reasons_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(400);
        let cut = truncate(&long);
        assert!(cut.len() <= MAX_REASON_LEN);
        assert!(long.starts_with(cut));
    }

    #[test]
    fn entries_with_missing_fields_are_kept_with_none() {
        let entry = entry_from(StreamId {
            id: "1-1".into(),
            map: [("s".to_owned(), Value::BulkString(b"x".to_vec()))].into(),
            milliseconds_elapsed_from_delivery: None,
            delivered_count: None,
        });
        assert_eq!(entry.raw, None);
        assert_eq!(entry.shard, None);
        assert_eq!(entry.id, "1-1");
    }
}
