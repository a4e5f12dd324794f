//! Per-shard cursors (the last hub event id whose effects are durable in Redis) and the
//! markers of shards whose cursor fell out of the hub's retention.

use redis::AsyncCommands;

use super::{Redis, StreamsError};

/// Stores ARGV[1] in KEYS[1] unless the stored number is larger: a cursor never moves back,
/// whatever order concurrent writers land in. Compared as decimal strings (length first) so
/// ids beyond 2^53 stay exact.
const STORE_IF_HIGHER: &str = r"
local current = redis.call('GET', KEYS[1])
local new = ARGV[1]
if current and (#current > #new or (#current == #new and current >= new)) then
  return 0
end
redis.call('SET', KEYS[1], new)
return 1
";

impl Redis {
    /// `<prefix>:cursor:<shard>`.
    pub fn cursor_key(&self, shard: u32) -> String {
        self.key(&["cursor", &shard.to_string()])
    }

    /// `<prefix>:backfill:needed:<shard>`.
    pub fn backfill_needed_key(&self, shard: u32) -> String {
        self.key(&["backfill", "needed", &shard.to_string()])
    }

    /// The stored cursor of `shard`, if any.
    pub async fn load_cursor(&self, shard: u32) -> Result<Option<u64>, StreamsError> {
        let mut connection = self.connection();
        let stored: Option<String> = connection.get(self.cursor_key(shard)).await?;
        Ok(stored.and_then(|text| text.parse().ok()))
    }

    /// Stores `id` as the cursor of `shard` unless a higher one is stored; returns whether it
    /// moved.
    pub async fn store_cursor(&self, shard: u32, id: u64) -> Result<bool, StreamsError> {
        let mut connection = self.connection();
        let moved: i64 = redis::Script::new(STORE_IF_HIGHER)
            .key(self.cursor_key(shard))
            .arg(id.to_string())
            .invoke_async(&mut connection)
            .await?;
        Ok(moved == 1)
    }

    /// Records that `shard` needs a per-FID backfill (its cursor fell behind the hub's
    /// retention); `details` says what was lost.
    pub async fn mark_backfill_needed(
        &self,
        shard: u32,
        details: &serde_json::Value,
    ) -> Result<(), StreamsError> {
        let mut connection = self.connection();
        let () = connection
            .set(self.backfill_needed_key(shard), details.to_string())
            .await?;
        Ok(())
    }

    /// The backfill marker of `shard`, if set.
    pub async fn backfill_needed(
        &self,
        shard: u32,
    ) -> Result<Option<serde_json::Value>, StreamsError> {
        let mut connection = self.connection();
        let stored: Option<String> = connection.get(self.backfill_needed_key(shard)).await?;
        Ok(stored.and_then(|text| serde_json::from_str(&text).ok()))
    }
}
